//! The vision encoder's own ops, as recorder methods beside the shared ones in `ops.rs`: the
//! embeddings from pixels (patch products, class token, positions), the pre-norm step with its
//! residual, and full attention over f32 keys and values. Each checks its buffers against the
//! shape it is given and records one dispatch.

use super::buffer::Buffer;
use super::error::VulkanError;
use super::ops::{fold, need, rows_of, u32_of, words, AttentionShape};
use super::recorder::Recorder;
use super::shaders::{spv, Shader, Variant, WG};
use crate::dtype::GgmlType;

/// The vision encoder's shader variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VisionShader {
    /// Embeddings from pixels, by patch-kernel type (F32 or F16).
    PatchEmbed(GgmlType),
    /// `x += h`, then `h = LayerNorm(x)`.
    ResidualLayerNorm,
}

impl VisionShader {
    /// The variant of this shader (all baseline: f32 arithmetic, 32-bit storage).
    pub(super) fn variant(self) -> Result<Variant, VulkanError> {
        let wg = vec![(0, WG)];
        let (name, spirv, bindings, push_bytes, spec): (_, &'static [u8], _, _, _) = match self {
            VisionShader::PatchEmbed(GgmlType::F32) => {
                ("patch_embed_f32", spv!("patch_embed_f32"), 4, 24, wg)
            }
            VisionShader::PatchEmbed(GgmlType::F16) => {
                ("patch_embed_f16", spv!("patch_embed_f16"), 4, 24, wg)
            }
            VisionShader::PatchEmbed(ty) => {
                return Err(VulkanError::Invalid {
                    op: "patch_embed",
                    detail: format!("no shader for a {ty} patch kernel (F32 and F16 have one)"),
                })
            }
            VisionShader::ResidualLayerNorm => (
                "residual_layer_norm",
                spv!("residual_layer_norm"),
                4,
                16,
                wg,
            ),
        };
        Ok(Variant {
            name,
            spirv,
            bindings,
            push_bytes,
            spec,
        })
    }
}

/// The shape of [`Recorder::patch_embed`].
#[derive(Clone, Copy, Debug)]
pub struct PatchShape {
    /// Side of the square image in pixels.
    pub image_size: usize,
    /// Side of a patch in pixels.
    pub patch_size: usize,
    /// Hidden size: weight rows, values per output row.
    pub n_embd: usize,
    /// Whether row 0 is a class token.
    pub class_token: bool,
}

impl PatchShape {
    /// Patches along a side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Output rows: the patches and the class token.
    pub fn n_rows(&self) -> usize {
        self.grid() * self.grid() + usize::from(self.class_token)
    }
}

fn invalid(op: &'static str, detail: String) -> VulkanError {
    VulkanError::Invalid { op, detail }
}

impl<'a> Recorder<'a> {
    /// The embeddings `[n_rows, n_embd]` of one tile into `out`: `pixels` is `[3, s, s]`
    /// normalised, `w` the patch kernel (`n_embd` rows of `3 * p * p` values of type `ty`, F32
    /// or F16), `table` holds the patch bias (`n_embd`), the class token (`n_embd`, zeros
    /// without one) and the position embeddings (`n_rows x n_embd`), back to back.
    #[allow(clippy::too_many_arguments)]
    pub fn patch_embed(
        &mut self,
        w: &'a Buffer,
        ty: GgmlType,
        pixels: &'a Buffer,
        table: &'a Buffer,
        out: &'a Buffer,
        s: PatchShape,
    ) -> Result<(), VulkanError> {
        const OP: &str = "patch_embed";
        let (size, p, d) = (s.image_size, s.patch_size, s.n_embd);
        if p == 0 || p > size || d == 0 {
            return Err(invalid(
                OP,
                format!("patches of {p} pixels in a {size}-pixel image, {d} wide"),
            ));
        }
        let cols = 3 * p * p;
        let row_bytes = match ty {
            GgmlType::F32 => 4 * cols,
            GgmlType::F16 => 2 * cols,
            ty => {
                return Err(invalid(
                    OP,
                    format!("a {ty} patch kernel (F32 or F16 only)"),
                ))
            }
        };
        let n = s.n_rows();
        need(OP, "the patch kernel", w, (d * row_bytes) as u64)?;
        need(OP, "the pixels", pixels, (3 * size * size * 4) as u64)?;
        need(
            OP,
            "the bias, class and position table",
            table,
            ((2 + n) * d * 4) as u64,
        )?;
        need(OP, "the output", out, (n * d * 4) as u64)?;
        let values = u32_of(OP, "output values", n * d)?;
        let push = words(&[
            d as u32,
            p as u32,
            size as u32,
            s.grid() as u32,
            u32::from(s.class_token),
            u32_of(OP, "weight row bytes", row_bytes)?,
        ]);
        self.dispatch(
            Shader::Vision(VisionShader::PatchEmbed(ty)),
            &[w, pixels, table, out],
            &push,
            fold(values.div_ceil(WG)),
        )
    }

    /// The pre-norm step of `n_rows` rows of `width` in place: `x += h` when `add`, then
    /// `h = LayerNorm(x)` with weight `w` and bias `b`.
    #[allow(clippy::too_many_arguments)]
    pub fn residual_layer_norm(
        &mut self,
        x: &'a Buffer,
        h: &'a Buffer,
        add: bool,
        w: &'a Buffer,
        b: &'a Buffer,
        width: usize,
        n_rows: usize,
        eps: f32,
    ) -> Result<(), VulkanError> {
        const OP: &str = "residual_layer_norm";
        let (w32, n32) = rows_of(OP, "the residual rows", x, width, n_rows)?;
        need(OP, "the hidden rows", h, (width * n_rows * 4) as u64)?;
        need(OP, "the weight", w, (width * 4) as u64)?;
        need(OP, "the bias", b, (width * 4) as u64)?;
        let push = words(&[w32, n32, u32::from(add), eps.to_bits()]);
        self.dispatch(
            Shader::Vision(VisionShader::ResidualLayerNorm),
            &[x, h, w, b],
            &push,
            fold(n32),
        )
    }

    /// Attention of the `n_rows x (n_head * head_dim)` queries `q` over the f32 keys `k` and
    /// values `v` (`n_kv x (n_kv_head * head_dim)` each), every key visible, scale
    /// `1/sqrt(head_dim)`, into `out` (like `q`): the vision encoder's, whose keys are never
    /// cached. `s.mask` must be [`super::Mask::None`].
    pub fn attention_f32(
        &mut self,
        q: &'a Buffer,
        k: &'a Buffer,
        v: &'a Buffer,
        out: &'a Buffer,
        s: AttentionShape,
    ) -> Result<(), VulkanError> {
        const OP: &str = "attention_f32";
        if s.mask != super::Mask::None || s.n_kv == 0 {
            return Err(invalid(
                OP,
                format!(
                    "{:?} over {} keys (full attention over at least one key only)",
                    s.mask, s.n_kv
                ),
            ));
        }
        // The text's attention with every key visible and an f32 cache is this one.
        self.attention_as(OP, q, k, v, out, s, 0, true)
    }
}
