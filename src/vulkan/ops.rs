//! The ops, as recorder methods: each checks its buffers against the shape it is given (a
//! typed error, never an out-of-bounds shader) and records one dispatch.

use super::buffer::Buffer;
use super::error::VulkanError;
use super::recorder::Recorder;
use super::shaders::{Shader, MUL_MAT_TILE, WG};
use crate::dtype::GgmlType;
use crate::ops::rope::rope_table;

/// Workgroups along x that every device accepts (the Vulkan minimum of
/// maxComputeWorkGroupCount); larger grids fold into y.
const MAX_X: u32 = 65_535;

/// An element-wise activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU (`x * Phi(x)`).
    GeluErf,
    /// GELU's tanh approximation.
    GeluTanh,
    /// CLIP's `quick_gelu`.
    GeluQuick,
}

/// Which keys each query row sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mask {
    /// Every key (the vision encoder).
    None,
    /// Row r sees keys `0..=first + r` (text: `first` is the row's position before the batch).
    Causal {
        /// The first row's position.
        first: usize,
    },
}

/// The shape of an attention call: `n_rows` query rows of `n_head` heads against `n_kv`
/// cached positions of `n_kv_head` heads, all `head_dim` wide.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    /// Query rows (tokens).
    pub n_rows: usize,
    /// Cached key/value positions.
    pub n_kv: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (divides `n_head`).
    pub n_kv_head: usize,
    /// Values per head (even, at most 256).
    pub head_dim: usize,
    /// Which keys each row sees.
    pub mask: Mask,
}

pub(super) fn u32_of(op: &'static str, what: &str, v: usize) -> Result<u32, VulkanError> {
    u32::try_from(v).map_err(|_| VulkanError::Invalid {
        op,
        detail: format!("{what} = {v} is past the shaders' 32-bit indexing"),
    })
}

pub(super) fn need(
    op: &'static str,
    what: &str,
    b: &Buffer,
    bytes: u64,
) -> Result<(), VulkanError> {
    if b.size() < bytes {
        return Err(VulkanError::Invalid {
            op,
            detail: format!("{what} holds {} bytes, the shape needs {bytes}", b.size()),
        });
    }
    // Shaders index 32-bit words (or f32 values) with 32-bit integers.
    u32_of(op, what, (bytes / 4) as usize).map(|_| ())
}

/// Checks that `x` holds `n_rows` rows of `width` f32 values; both as the shaders' u32s.
pub(super) fn rows_of(
    op: &'static str,
    what: &str,
    x: &Buffer,
    width: usize,
    n_rows: usize,
) -> Result<(u32, u32), VulkanError> {
    need(op, what, x, (width * n_rows * 4) as u64)?;
    Ok((u32_of(op, "width", width)?, u32_of(op, "rows", n_rows)?))
}

/// Output columns `y_col..y_col + rows` must lie within rows of `y_width` values.
fn out_block(
    op: &'static str,
    rows: usize,
    y_col: usize,
    y_width: usize,
) -> Result<(), VulkanError> {
    if y_col + rows > y_width {
        return Err(VulkanError::Invalid {
            op,
            detail: format!("{rows} output rows from column {y_col} past rows of {y_width}"),
        });
    }
    u32_of(op, "output width", y_width).map(|_| ())
}

/// A product's shape: `rows x cols` weights, `n_tok` tokens, output columns from `y_col` in
/// rows of `y_width`; `step` values make one step of the shader's row loop (1 for the float
/// shaders, a 32-value block for the integer ones).
#[derive(Clone, Copy)]
struct ProductShape {
    rows: usize,
    cols: usize,
    n_tok: usize,
    y_col: usize,
    y_width: usize,
    step: u32,
}

/// A grid of `n` workgroups folded to fit x.
pub(super) fn fold(n: u32) -> [u32; 3] {
    let x = n.clamp(1, MAX_X);
    [x, n.div_ceil(x), 1]
}

pub(super) fn words(fields: &[u32]) -> Vec<u8> {
    fields.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Bytes of the scratch [`Recorder::mul_mat_q8`] quantizes `n_tok` tokens of `cols` values
/// into: per 32 values, an f32 scale and 32 int8.
pub fn q8_scratch_bytes(cols: usize, n_tok: usize) -> u64 {
    (n_tok * cols / 32 * 36) as u64
}

/// The cos/sin tables [`Recorder::rope`] reads for tokens at `positions`: per token, the
/// `rot_dim / 2` cosines then the sines, computed as the CPU computes them
/// ([`crate::ops::rope::rope_table`]).
pub fn rope_tables(positions: &[usize], rot_dim: usize, theta: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(positions.len() * rot_dim);
    for &pos in positions {
        let t = rope_table(rot_dim, pos, theta);
        out.extend_from_slice(&t.cos);
        out.extend_from_slice(&t.sin);
    }
    out
}

impl<'a> Recorder<'a> {
    /// `y[t][r] = sum_k w[r][k] x[t][k]` for `n_tok` tokens: `w` holds `rows` rows of `cols`
    /// values of type `ty` (GGUF layout), `x` is `n_tok x cols` f32, `y` is `n_tok x rows` f32.
    #[allow(clippy::too_many_arguments)]
    pub fn mul_mat(
        &mut self,
        w: &'a Buffer,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        x: &'a Buffer,
        n_tok: usize,
        y: &'a Buffer,
    ) -> Result<(), VulkanError> {
        self.mul_mat_into(w, ty, rows, cols, x, n_tok, y, 0, rows)
    }

    /// [`Recorder::mul_mat`] into columns `y_col..y_col + rows` of `y`, whose token rows are
    /// `y_width` values: one row block of a matrix held in several buffers.
    #[allow(clippy::too_many_arguments)]
    pub fn mul_mat_into(
        &mut self,
        w: &'a Buffer,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        x: &'a Buffer,
        n_tok: usize,
        y: &'a Buffer,
        y_col: usize,
        y_width: usize,
    ) -> Result<(), VulkanError> {
        const OP: &str = "mul_mat";
        // The shader works in 32-value chunks (a K-quant super-block is eight of them); F32 and
        // F16 rows may end in a part chunk.
        let float = matches!(ty, GgmlType::F32 | GgmlType::F16);
        if !cols.is_multiple_of(ty.block_size()) || !(float || cols.is_multiple_of(32)) {
            return Err(VulkanError::Invalid {
                op: OP,
                detail: format!("{cols} columns are not whole 32-value chunks of {ty} blocks"),
            });
        }
        need(OP, "the input buffer", x, (n_tok * cols * 4) as u64)?;
        let shape = ProductShape {
            rows,
            cols,
            n_tok,
            y_col,
            y_width,
            step: 1,
        };
        self.product(OP, Shader::MulMat(ty), w, ty, x, y, shape)
    }

    /// [`Recorder::mul_mat`] of quantized weights ([`super::MUL_MAT_Q8_TYPES`]) with the
    /// activations first quantized to int8 blocks of 32 (an f32 scale each) in `scratch`
    /// ([`q8_scratch_bytes`]), then exact integer dot products per block, as the CPU's
    /// quantized products do. Uses the device's packed integer dot product where it has one.
    #[allow(clippy::too_many_arguments)]
    pub fn mul_mat_q8(
        &mut self,
        w: &'a Buffer,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        x: &'a Buffer,
        n_tok: usize,
        scratch: &'a Buffer,
        y: &'a Buffer,
    ) -> Result<(), VulkanError> {
        self.quantize_q8(x, cols, n_tok, scratch)?;
        self.mul_mat_q8_quantized(w, ty, rows, cols, scratch, n_tok, y)
    }

    /// The first half of [`Recorder::mul_mat_q8`]: the `n_tok x cols` f32 values of `x` as
    /// int8 blocks of 32 in `scratch`, which several products of the same input can share.
    pub fn quantize_q8(
        &mut self,
        x: &'a Buffer,
        cols: usize,
        n_tok: usize,
        scratch: &'a Buffer,
    ) -> Result<(), VulkanError> {
        const OP: &str = "quantize_q8";
        if !cols.is_multiple_of(32) {
            return Err(VulkanError::Invalid {
                op: OP,
                detail: format!("{cols} columns are not whole 32-value blocks"),
            });
        }
        need(OP, "the input buffer", x, (n_tok * cols * 4) as u64)?;
        need(
            OP,
            "the scratch buffer",
            scratch,
            q8_scratch_bytes(cols, n_tok),
        )?;
        let blocks = u32_of(OP, "blocks", n_tok * cols / 32)?;
        self.dispatch(
            Shader::QuantizeQ8,
            &[x, scratch],
            &words(&[blocks, 0]),
            fold(blocks.div_ceil(WG)),
        )
    }

    /// The second half of [`Recorder::mul_mat_q8`]: the products of `w` with `n_tok` tokens
    /// already quantized in `scratch` by [`Recorder::quantize_q8`].
    #[allow(clippy::too_many_arguments)]
    pub fn mul_mat_q8_quantized(
        &mut self,
        w: &'a Buffer,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        scratch: &'a Buffer,
        n_tok: usize,
        y: &'a Buffer,
    ) -> Result<(), VulkanError> {
        self.mul_mat_q8_quantized_into(w, ty, rows, cols, scratch, n_tok, y, 0, rows)
    }

    /// [`Recorder::mul_mat_q8_quantized`] into columns `y_col..y_col + rows` of `y`, whose
    /// token rows are `y_width` values (see [`Recorder::mul_mat_into`]).
    #[allow(clippy::too_many_arguments)]
    pub fn mul_mat_q8_quantized_into(
        &mut self,
        w: &'a Buffer,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        scratch: &'a Buffer,
        n_tok: usize,
        y: &'a Buffer,
        y_col: usize,
        y_width: usize,
    ) -> Result<(), VulkanError> {
        const OP: &str = "mul_mat_q8";
        if !super::MUL_MAT_Q8_TYPES.contains(&ty) {
            return Err(VulkanError::Invalid {
                op: OP,
                detail: format!("no integer shader for {ty} weights"),
            });
        }
        if !cols.is_multiple_of(ty.block_size()) || !cols.is_multiple_of(32) {
            return Err(VulkanError::Invalid {
                op: OP,
                detail: format!("{cols} columns are not whole {ty} blocks"),
            });
        }
        need(
            OP,
            "the scratch buffer",
            scratch,
            q8_scratch_bytes(cols, n_tok),
        )?;
        let shape = ProductShape {
            rows,
            cols,
            n_tok,
            y_col,
            y_width,
            step: 32,
        };
        self.product(OP, Shader::MulMatQ8(ty), w, ty, scratch, y, shape)
    }

    /// What the float and integer products share once their input is checked: the weight and
    /// output checks, the push constants and one workgroup per weight row by tiles of tokens.
    #[allow(clippy::too_many_arguments)]
    fn product(
        &mut self,
        op: &'static str,
        shader: Shader,
        w: &'a Buffer,
        ty: GgmlType,
        input: &'a Buffer,
        y: &'a Buffer,
        s: ProductShape,
    ) -> Result<(), VulkanError> {
        out_block(op, s.rows, s.y_col, s.y_width)?;
        let row_bytes = s.cols / ty.block_size() * ty.type_size();
        need(op, "the weight buffer", w, (s.rows * row_bytes) as u64)?;
        need(op, "the output buffer", y, (s.n_tok * s.y_width * 4) as u64)?;
        let (rows32, cols32, n32) = (
            u32_of(op, "rows", s.rows)?,
            u32_of(op, "cols", s.cols)?,
            u32_of(op, "tokens", s.n_tok)?,
        );
        let push = words(&[
            rows32,
            cols32,
            n32,
            0,
            row_bytes as u32,
            0,
            cols32 / s.step,
            s.y_col as u32,
            s.y_width as u32,
        ]);
        let mut groups = fold(rows32);
        groups[2] = n32.div_ceil(MUL_MAT_TILE);
        self.dispatch(shader, &[w, input, y], &push, groups)
    }

    /// RMSNorm of `n_rows` rows of `width` in `x`, in place, with weight `w` (`width` f32).
    pub fn rms_norm(
        &mut self,
        x: &'a Buffer,
        w: &'a Buffer,
        width: usize,
        n_rows: usize,
        eps: f32,
    ) -> Result<(), VulkanError> {
        self.norm(Shader::RmsNorm, x, w, w, width, n_rows, eps)
    }

    /// LayerNorm of `n_rows` rows of `width` in `x`, in place, with weight `w` and bias `b`.
    #[allow(clippy::too_many_arguments)]
    pub fn layer_norm(
        &mut self,
        x: &'a Buffer,
        w: &'a Buffer,
        b: &'a Buffer,
        width: usize,
        n_rows: usize,
        eps: f32,
    ) -> Result<(), VulkanError> {
        need("layer_norm", "the bias", b, (width * 4) as u64)?;
        self.norm(Shader::LayerNorm, x, w, b, width, n_rows, eps)
    }

    #[allow(clippy::too_many_arguments)]
    fn norm(
        &mut self,
        shader: Shader,
        x: &'a Buffer,
        w: &'a Buffer,
        b: &'a Buffer,
        width: usize,
        n_rows: usize,
        eps: f32,
    ) -> Result<(), VulkanError> {
        const OP: &str = "norm";
        let (w32, n32) = rows_of(OP, "the rows", x, width, n_rows)?;
        need(OP, "the weight", w, (width * 4) as u64)?;
        let push = words(&[w32, n32, 0, w32, eps.to_bits()]);
        self.dispatch(shader, &[x, w, b], &push, fold(n32))
    }

    /// Rotates the first `rot_dim` dimensions of each of the `n_head` heads (`head_dim` wide,
    /// back to back) of `n_tok` tokens in `x`, in place; `table` holds [`rope_tables`] of the
    /// tokens' positions. `neox`: halves (GPT-NeoX, Qwen2) instead of adjacent pairs.
    #[allow(clippy::too_many_arguments)]
    pub fn rope(
        &mut self,
        x: &'a Buffer,
        table: &'a Buffer,
        head_dim: usize,
        rot_dim: usize,
        n_head: usize,
        n_tok: usize,
        neox: bool,
    ) -> Result<(), VulkanError> {
        const OP: &str = "rope";
        if rot_dim > head_dim || !rot_dim.is_multiple_of(2) {
            return Err(VulkanError::Invalid {
                op: OP,
                detail: format!(
                    "rotating {rot_dim} of {head_dim} dimensions (must be even and fit)"
                ),
            });
        }
        need(OP, "the heads", x, (n_tok * n_head * head_dim * 4) as u64)?;
        need(OP, "the table", table, (n_tok * rot_dim * 4) as u64)?;
        let invocations = u32_of(OP, "rotated pairs", n_tok * n_head * rot_dim / 2)?;
        let stride = (n_head * head_dim) as u32;
        let push = words(&[
            head_dim as u32,
            (rot_dim / 2) as u32,
            n_head as u32,
            n_tok as u32,
            0,
            stride,
        ]);
        self.dispatch(
            Shader::Rope(neox),
            &[x, table],
            &push,
            fold(invocations.div_ceil(WG)),
        )
    }

    /// `shader` over `n` values of `x`, reading `y[i % period]` where it reads `y`.
    fn eltwise(
        &mut self,
        shader: Shader,
        x: &'a Buffer,
        y: &'a Buffer,
        n: usize,
        period: usize,
    ) -> Result<(), VulkanError> {
        const OP: &str = "eltwise";
        need(OP, "x", x, (n * 4) as u64)?;
        if shader == Shader::SiluMul || shader == Shader::Add {
            if period == 0 || !n.is_multiple_of(period) {
                return Err(VulkanError::Invalid {
                    op: OP,
                    detail: format!("{n} values are not whole rows of {period}"),
                });
            }
            need(OP, "y", y, (period * 4) as u64)?;
        }
        let n32 = u32_of(OP, "values", n)?;
        let push = words(&[n32, 0, 0, period.max(1) as u32]);
        self.dispatch(shader, &[x, y], &push, fold(n32.div_ceil(WG)))
    }

    /// Appends `n_tok` rows of `width` f32 values from `src` to the F16 `cache` at position
    /// `pos` (rows of `width` halves): the key/value cache's write.
    pub fn cache_append(
        &mut self,
        src: &'a Buffer,
        cache: &'a Buffer,
        pos: usize,
        width: usize,
        n_tok: usize,
    ) -> Result<(), VulkanError> {
        self.cache_append_from(src, 0, cache, pos, width, n_tok)
    }

    /// [`Recorder::cache_append`] of the rows of `src` from row `src_row` on (a server's
    /// batch holds one row per sequence, each for its own cache).
    pub fn cache_append_from(
        &mut self,
        src: &'a Buffer,
        src_row: usize,
        cache: &'a Buffer,
        pos: usize,
        width: usize,
        n_tok: usize,
    ) -> Result<(), VulkanError> {
        const OP: &str = "cache_append";
        if !width.is_multiple_of(2) {
            return Err(VulkanError::Invalid {
                op: OP,
                detail: format!("rows of {width} values (the F16 cache takes even widths)"),
            });
        }
        need(
            OP,
            "the source",
            src,
            ((src_row + n_tok) * width * 4) as u64,
        )?;
        need(OP, "the cache", cache, ((pos + n_tok) * width * 2) as u64)?;
        let pairs = u32_of(OP, "values", n_tok * width / 2)?;
        let dst = u32_of(OP, "cache offset", pos * width)?;
        let from = u32_of(OP, "source offset", src_row * width)?;
        self.dispatch(
            Shader::F32ToF16,
            &[src, cache],
            &words(&[pairs, from, dst]),
            fold(pairs.div_ceil(WG)),
        )
    }

    /// Adds the `bias` row (`width` values) to each of the `n_rows` rows of `x`.
    pub fn add_bias(
        &mut self,
        x: &'a Buffer,
        bias: &'a Buffer,
        width: usize,
        n_rows: usize,
    ) -> Result<(), VulkanError> {
        self.eltwise(Shader::Add, x, bias, width * n_rows, width)
    }

    /// Bilinear resize of the `[h, w, d]` grid in `x` to `[oh, ow, d]` in `out` (PyTorch's
    /// `interpolate`, `align_corners=False`): OneVision's shrink of large grids and its video
    /// frames' pooling.
    #[allow(clippy::too_many_arguments)]
    pub fn bilinear(
        &mut self,
        x: &'a Buffer,
        h: usize,
        w: usize,
        d: usize,
        out: &'a Buffer,
        oh: usize,
        ow: usize,
    ) -> Result<(), VulkanError> {
        const OP: &str = "bilinear";
        if h == 0 || w == 0 || oh == 0 || ow == 0 {
            return Err(VulkanError::Invalid {
                op: OP,
                detail: format!("an empty grid ({h}x{w} to {oh}x{ow})"),
            });
        }
        need(OP, "the grid", x, (h * w * d * 4) as u64)?;
        need(OP, "the output", out, (oh * ow * d * 4) as u64)?;
        let n = u32_of(OP, "output values", oh * ow * d)?;
        let (sy, sx) = (h as f32 / oh as f32, w as f32 / ow as f32);
        let push = words(&[
            h as u32,
            w as u32,
            d as u32,
            oh as u32,
            ow as u32,
            sy.to_bits(),
            sx.to_bits(),
        ]);
        self.dispatch(Shader::Bilinear, &[x, out], &push, fold(n.div_ceil(WG)))
    }

    /// `x = silu(x) * y` over `n` values (SwiGLU).
    pub fn silu_mul(&mut self, x: &'a Buffer, y: &'a Buffer, n: usize) -> Result<(), VulkanError> {
        self.eltwise(Shader::SiluMul, x, y, n, n)
    }

    /// `x += y` over `n` values.
    pub fn add(&mut self, x: &'a Buffer, y: &'a Buffer, n: usize) -> Result<(), VulkanError> {
        self.eltwise(Shader::Add, x, y, n, n)
    }

    /// An activation over `n` values of `x`, in place.
    pub fn activation(
        &mut self,
        act: Activation,
        x: &'a Buffer,
        n: usize,
    ) -> Result<(), VulkanError> {
        let shader = match act {
            Activation::GeluErf => Shader::GeluErf,
            Activation::GeluTanh => Shader::GeluTanh,
            Activation::GeluQuick => Shader::GeluQuick,
        };
        // The shader binds a second buffer it does not read: x stands in.
        self.eltwise(shader, x, x, n, n)
    }

    /// Softmax of `n_rows` rows of `width` in `x`, in place.
    pub fn softmax(
        &mut self,
        x: &'a Buffer,
        width: usize,
        n_rows: usize,
    ) -> Result<(), VulkanError> {
        const OP: &str = "softmax";
        let (w32, n32) = rows_of(OP, "the rows", x, width, n_rows)?;
        self.dispatch(
            Shader::Softmax,
            &[x],
            &words(&[w32, n32, 0, w32]),
            fold(n32),
        )
    }

    /// Attention of the `n_rows x (n_head * head_dim)` f32 queries `q` over the F16 caches `k`
    /// and `v` (`n_kv x n_kv_head x head_dim` half bits each), scale `1/sqrt(head_dim)`,
    /// into `out` (like `q`).
    pub fn attention(
        &mut self,
        q: &'a Buffer,
        k: &'a Buffer,
        v: &'a Buffer,
        out: &'a Buffer,
        s: AttentionShape,
    ) -> Result<(), VulkanError> {
        self.attention_at(q, k, v, out, s, 0)
    }

    /// [`Recorder::attention`] of the query rows from `row` on, into the same rows of `out`.
    pub fn attention_at(
        &mut self,
        q: &'a Buffer,
        k: &'a Buffer,
        v: &'a Buffer,
        out: &'a Buffer,
        s: AttentionShape,
        row: usize,
    ) -> Result<(), VulkanError> {
        self.attention_cached(q, k, v, out, s, row, false)
    }

    /// [`Recorder::attention_at`] over a cache of F16 keys and values, or with `f32_cache` of
    /// f32 ones (the exact cache, `KV_F32` variant).
    #[allow(clippy::too_many_arguments)]
    pub fn attention_cached(
        &mut self,
        q: &'a Buffer,
        k: &'a Buffer,
        v: &'a Buffer,
        out: &'a Buffer,
        s: AttentionShape,
        row: usize,
        f32_cache: bool,
    ) -> Result<(), VulkanError> {
        self.attention_as("attention", q, k, v, out, s, row, f32_cache)
    }

    /// [`Recorder::attention_cached`], its errors naming `op`: the text's attention over a
    /// cache and the vision encoder's over f32 keys share the shaders' checks and constants.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention_as(
        &mut self,
        op: &'static str,
        q: &'a Buffer,
        k: &'a Buffer,
        v: &'a Buffer,
        out: &'a Buffer,
        s: AttentionShape,
        row: usize,
        f32_cache: bool,
    ) -> Result<(), VulkanError> {
        if s.head_dim == 0 || s.head_dim > 256 || !s.head_dim.is_multiple_of(2) {
            return Err(VulkanError::Invalid {
                op,
                detail: format!(
                    "head_dim {} (the shader takes even widths up to 256)",
                    s.head_dim
                ),
            });
        }
        if s.n_kv_head == 0 || !s.n_head.is_multiple_of(s.n_kv_head) {
            return Err(VulkanError::Invalid {
                op,
                detail: format!(
                    "{} query heads are not groups of {} key/value heads",
                    s.n_head, s.n_kv_head
                ),
            });
        }
        let first = match s.mask {
            Mask::None => 0,
            Mask::Causal { first } => first,
        };
        if s.n_kv == 0 || (matches!(s.mask, Mask::Causal { .. }) && first + s.n_rows > s.n_kv) {
            return Err(VulkanError::Invalid {
                op,
                detail: format!(
                    "{} rows from position {first} against {} cached keys",
                    s.n_rows, s.n_kv
                ),
            });
        }
        let w = s.n_head * s.head_dim;
        need(op, "the queries", q, ((row + s.n_rows) * w * 4) as u64)?;
        need(op, "the output", out, ((row + s.n_rows) * w * 4) as u64)?;
        let at = u32_of(op, "query offset", row * w)?;
        let elem = if f32_cache { 4 } else { 2 };
        let kv_bytes = (s.n_kv * s.n_kv_head * s.head_dim * elem) as u64;
        need(op, "the keys", k, kv_bytes)?;
        need(op, "the values", v, kv_bytes)?;
        let rows = u32_of(op, "rows", s.n_rows)?;
        let push = words(&[
            rows,
            u32_of(op, "keys", s.n_kv)?,
            s.n_head as u32,
            s.n_kv_head as u32,
            s.head_dim as u32,
            at,
            w as u32,
            at,
            0,
            (s.n_kv_head * s.head_dim) as u32,
            matches!(s.mask, Mask::Causal { .. }) as u32,
            u32_of(op, "first", first)?,
            (1.0 / (s.head_dim as f32).sqrt()).to_bits(),
        ]);
        let shader = if f32_cache {
            Shader::AttentionKvF32
        } else {
            Shader::Attention
        };
        self.dispatch(shader, &[q, k, v, out], &push, [s.n_head as u32, rows, 1])
    }
}
