//! A ViT image encoder (CLIP or SigLIP) and LLaVA's projector. One forward function reads top
//! to bottom: patches -> embeddings -> encoder layers -> selected features -> projector,
//! written once over [`VisionOps`]: the weights stay in the file for the CPU, or are uploaded
//! once to a device ([`VisionEncoder::upload`]).

use std::path::{Path, PathBuf};

use super::anyres::AnyresConfig;
use super::error::VisionError;
use crate::backend::vision::{Embeddings, RowRun, VisionOps};
use crate::backend::{Backend, Cpu, Heads};
use crate::gguf::keys::{clip, general, tensors};
use crate::gguf::GgufFile;
use crate::kernels::MAX_HEAD_DIM;
use crate::meta_error::{FileKind, MetaError};
use crate::ops::Matrix;
use crate::threadpool::ThreadPool;

/// The MLP activation of the encoder layers.
pub use crate::backend::vision::Activation;

/// Shape and behaviour of the encoder and projector.
#[derive(Clone, Debug, PartialEq)]
pub struct VisionConfig {
    /// Side of the square input tile in pixels.
    pub image_size: usize,
    /// Side of a patch in pixels.
    pub patch_size: usize,
    /// Hidden size.
    pub n_embd: usize,
    /// MLP inner size.
    pub n_ff: usize,
    /// Attention heads.
    pub n_head: usize,
    /// Encoder layers to run: the selected feature layer's depth (hidden state k is the output
    /// of layer k; 0 is the embeddings).
    pub n_layer_run: usize,
    /// LayerNorm epsilon.
    pub eps: f32,
    /// MLP activation.
    pub act: Activation,
    /// Whether the selected features drop the class token (LLaVA's "default" strategy).
    pub drop_cls: bool,
    /// Per-channel mean and std for normalisation.
    pub mean: [f32; 3],
    /// Per-channel std.
    pub std: [f32; 3],
}

/// Widest encoder accepted (released towers are at most 1664 wide).
pub const MAX_EMBD: usize = 1 << 16;

/// Largest tile side in pixels accepted (released towers take at most 896).
pub const MAX_IMAGE_SIZE: usize = 1 << 14;

/// Most encoder layers an original tower may have had (released towers have at most 48).
pub const MAX_LAYERS: usize = 1 << 12;

/// Most tiles one anyres pinpoint may hold (released models use at most 6 x 6); each is a
/// full encoder pass, so a damaged pinpoint list could otherwise ask for thousands.
pub const MAX_TILES_PER_PINPOINT: usize = 64;

/// The number of `v.blk.N` encoder blocks in `f` when N runs from 0 without gaps, else what
/// the file holds, for a message.
fn stored_blocks(f: &GgufFile) -> Result<usize, String> {
    let mut present = std::collections::BTreeSet::new();
    for t in f.tensors() {
        let index = t
            .name
            .strip_prefix(tensors::V_BLK_PREFIX)
            .and_then(|r| r.split_once('.'))
            .and_then(|(i, _)| i.parse::<usize>().ok());
        present.extend(index);
    }
    match (present.first(), present.last()) {
        _ if present.iter().copied().eq(0..present.len()) => Ok(present.len()),
        (Some(lo), Some(hi)) => Err(format!(
            "v.blk.N tensors for {} values of N from {lo} to {hi}, with gaps",
            present.len()
        )),
        _ => Ok(0),
    }
}

/// Our own mmproj keys (kept under this path for callers that named it here).
pub use crate::gguf::keys::llava_edge as keys;

impl VisionConfig {
    /// Reads the configuration from an mmproj file's keys.
    pub fn from_gguf(f: &GgufFile) -> Result<VisionConfig, VisionError> {
        let bad = |problem: String| -> VisionError {
            MetaError::BadConfig {
                path: f.path().to_path_buf(),
                problem,
            }
            .into()
        };
        let arch = f.get_str(general::ARCHITECTURE)?;
        if arch != clip::ARCH {
            return Err(bad(format!(
                "general.architecture is '{arch}', an mmproj file says 'clip'"
            )));
        }
        let out_of_range = |k: &str, v: &dyn std::fmt::Display, expected: String| -> VisionError {
            bad_value(f.path(), k, v, expected)
        };
        // Checked against a range before it becomes a usize, so products of two cannot overflow.
        let int = |k: &str, lo: usize, hi: usize| -> Result<usize, VisionError> {
            let v = f.get_u64(k)?;
            if v < lo as u64 || v > hi as u64 {
                return Err(out_of_range(
                    k,
                    &v,
                    format!("must be between {lo} and {hi}"),
                ));
            }
            Ok(v as usize)
        };
        let n_stored = int(clip::BLOCK_COUNT, 0, usize::MAX)?;
        match stored_blocks(f) {
            Ok(n) if n == n_stored => {}
            found => {
                return Err(out_of_range(
                    clip::BLOCK_COUNT,
                    &n_stored,
                    format!(
                        "must count the file's encoder blocks: it holds {}",
                        found.map_or_else(|what| what, |n| n.to_string())
                    ),
                ))
            }
        }
        let n_orig = match f.get(keys::N_LAYER_ORIG) {
            Some(_) => int(keys::N_LAYER_ORIG, n_stored, MAX_LAYERS)?,
            None => n_stored,
        };
        // llama.cpp's convention: the file holds exactly the layers to run.
        let n_layer_run = match f.get(keys::FEATURE_LAYER) {
            None => n_stored,
            Some(v) => {
                let k = v
                    .as_i64()
                    .ok_or_else(|| bad(format!("{} is not an integer", keys::FEATURE_LAYER)))?;
                let k = if k < 0 {
                    (n_orig as i64 + 1).saturating_add(k)
                } else {
                    k
                };
                if k < 0 || k as u64 > n_stored as u64 {
                    return Err(bad(format!(
                        "feature layer {k} needs {k} encoder layers, the file stores {n_stored}"
                    )));
                }
                k as usize
            }
        };
        let act = match f.get(keys::ACTIVATION).and_then(|v| v.as_str()) {
            Some("quick_gelu") => Activation::QuickGelu,
            Some("gelu_pytorch_tanh") => Activation::GeluTanh,
            Some("gelu") => Activation::GeluErf,
            Some(other) => return Err(bad(format!("unknown activation '{other}'"))),
            // llama.cpp: use_gelu means GELU (its tanh form), otherwise quick_gelu.
            None if f.get(clip::USE_GELU).and_then(|v| v.as_bool()) == Some(true) => {
                Activation::GeluTanh
            }
            None => Activation::QuickGelu,
        };
        let drop_cls = match f.get(keys::SELECT_STRATEGY).and_then(|v| v.as_str()) {
            Some("full") => false,
            Some("default") | None => true,
            Some(other) => return Err(bad(format!("unknown select strategy '{other}'"))),
        };
        let triple = |k: &str| -> Result<[f32; 3], VisionError> {
            let v = f.get_array(k)?.to_f64_vec().filter(|v| v.len() == 3);
            let v = v.ok_or_else(|| bad(format!("{k} must hold 3 floats")))?;
            Ok([v[0] as f32, v[1] as f32, v[2] as f32])
        };
        let image_size = int(clip::IMAGE_SIZE, 1, MAX_IMAGE_SIZE)?;
        let n_embd = int(clip::EMBEDDING_LENGTH, 1, MAX_EMBD)?;
        let cfg = VisionConfig {
            image_size,
            patch_size: int(clip::PATCH_SIZE, 1, image_size)?,
            n_embd,
            n_ff: int(clip::FEED_FORWARD_LENGTH, 1, usize::MAX)?,
            n_head: int(clip::HEAD_COUNT, 1, n_embd)?,
            n_layer_run,
            eps: f.get_f64(clip::LAYER_NORM_EPS)? as f32,
            act,
            drop_cls,
            mean: triple(clip::IMAGE_MEAN)?,
            std: triple(clip::IMAGE_STD)?,
        };
        cfg.check(f.path())?;
        Ok(cfg)
    }

    /// Checks the settings against each other and against what the kernels take; names the
    /// mmproj key of the first that fails.
    pub fn check(&self, path: &Path) -> Result<(), VisionError> {
        let fail = |key: &str, value: &dyn std::fmt::Display, expected: String| {
            Err(bad_value(path, key, value, expected))
        };
        // The patch convolution has stride = kernel, so a tile side that is not a multiple of
        // the patch (SigLIP-so400m: 384 / 14) just drops the last pixels: 27 x 27 patches.
        if !(1..=MAX_IMAGE_SIZE).contains(&self.image_size) {
            return fail(
                clip::IMAGE_SIZE,
                &self.image_size,
                format!("must be between 1 and {MAX_IMAGE_SIZE}"),
            );
        }
        if !(1..=self.image_size).contains(&self.patch_size) {
            return fail(
                clip::PATCH_SIZE,
                &self.patch_size,
                format!("must be between 1 and the image size {}", self.image_size),
            );
        }
        if !(1..=MAX_EMBD).contains(&self.n_embd) {
            return fail(
                clip::EMBEDDING_LENGTH,
                &self.n_embd,
                format!("must be between 1 and {MAX_EMBD}"),
            );
        }
        if self.n_head == 0 || !self.n_embd.is_multiple_of(self.n_head) {
            return fail(
                clip::HEAD_COUNT,
                &self.n_head,
                format!("must divide embedding_length {}", self.n_embd),
            );
        }
        if self.n_embd / self.n_head > MAX_HEAD_DIM {
            return fail(
                clip::HEAD_COUNT,
                &self.n_head,
                format!(
                    "gives heads of {} values; the attention kernels take at most {MAX_HEAD_DIM}",
                    self.n_embd / self.n_head
                ),
            );
        }
        if self.n_ff == 0 {
            return fail(
                clip::FEED_FORWARD_LENGTH,
                &self.n_ff,
                "must be positive".into(),
            );
        }
        if !(self.eps > 0.0 && self.eps < 1.0) {
            return fail(
                clip::LAYER_NORM_EPS,
                &self.eps,
                "must be a small positive number (below 1)".into(),
            );
        }
        if !self.mean.iter().all(|m| m.is_finite()) {
            return fail(
                clip::IMAGE_MEAN,
                &format!("{:?}", self.mean),
                "must be finite".into(),
            );
        }
        if !self.std.iter().all(|s| s.is_finite() && *s > 0.0) {
            return fail(
                clip::IMAGE_STD,
                &format!("{:?}", self.std),
                "must be finite and positive (pixels are divided by it)".into(),
            );
        }
        Ok(())
    }

    /// Patches along one side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

/// One encoder layer's weights as matrices `W` and vectors `V` of one device.
struct Layer<W, V> {
    ln1: (V, V),
    q: (W, V),
    k: (W, V),
    v: (W, V),
    o: (W, V),
    ln2: (V, V),
    up: (W, V),
    down: (W, V),
}

/// The encoder's and projector's weights on one device: matrices `W`, vectors `V` and the
/// embedding weights `E` of that device ([`TowerOn`] names them for a backend).
pub struct Tower<W, V, E> {
    embedding: E,
    pre_ln: Option<(V, V)>,
    layers: Vec<Layer<W, V>>,
    /// `mm.0` and, for the two-layer MLP projector, `mm.2`.
    proj: Vec<(W, V)>,
    /// The anyres `image_newline` row, where the model has one.
    pub(super) newline: Option<V>,
}

/// The weights of a tower on backend `B`, borrowing the file for `'w` where `B` reads them
/// in place.
pub type TowerOn<'w, B> =
    Tower<<B as Backend>::Weight<'w>, <B as Backend>::Vector, <B as VisionOps>::Embedding<'w>>;

/// The encoder and projector, weights read in place from the mmproj file.
pub struct VisionEncoder<'a> {
    /// The encoder's settings.
    pub config: VisionConfig,
    /// The weights as the CPU reads them: views into the file.
    tower: Tower<Matrix<'a>, Vec<f32>, Embeddings<'a>>,
    /// The device running [`VisionEncoder::embed_image`] and [`VisionEncoder::embed_video`]
    /// ([`VisionEncoder::offload`]), None for the CPU.
    #[cfg(feature = "vulkan")]
    pub(super) device: Option<super::offload::Offload>,
    /// Output width of the projector (the text model's hidden size).
    pub n_out: usize,
    /// LLaVA-NeXT / OneVision tiling, when the file has pinpoints.
    pub anyres: Option<AnyresConfig>,
    /// Pad images to a square with the mean colour instead of centre-cropping (the original
    /// LLaVA-1.5 recipe, `image_aspect_ratio = pad`; llava-hf's processors crop).
    pub pad_square: bool,
    /// The mmproj file, for messages.
    pub path: PathBuf,
}

/// Widest projector output accepted: the text model's hidden size, which is at most 16384 in
/// released decoders.
pub const MAX_PROJ_WIDTH: usize = 1 << 16;

/// A [`MetaError::BadValue`] naming the mmproj key.
fn bad_value(
    path: &Path,
    key: &str,
    value: &dyn std::fmt::Display,
    expected: String,
) -> VisionError {
    MetaError::BadValue {
        path: path.to_path_buf(),
        kind: FileKind::Mmproj,
        key: key.to_string(),
        value: value.to_string(),
        expected,
    }
    .into()
}

/// Pinpoints must be whole tiles, and not so many that one image is thousands of encoder
/// passes; the tile cap must be one a grid can reach.
fn check_anyres(path: &Path, a: &AnyresConfig, tile: usize) -> Result<(), VisionError> {
    let fail = |key: &str, value: String, expected: String| bad_value(path, key, &value, expected);
    for &(h, w) in &a.pinpoints {
        let tiles = (h / tile).saturating_mul(w / tile);
        if !h.is_multiple_of(tile) || !w.is_multiple_of(tile) || tiles > MAX_TILES_PER_PINPOINT {
            return Err(fail(
                clip::IMAGE_GRID_PINPOINTS,
                format!("({h}, {w})"),
                format!(
                    "each side must be a multiple of the {tile}-pixel tile, at most \
                     {MAX_TILES_PER_PINPOINT} tiles in all"
                ),
            ));
        }
    }
    if let Some(m) = a.max_tiles.filter(|&m| m > MAX_TILES_PER_PINPOINT) {
        return Err(fail(
            keys::ANYRES_MAX,
            m.to_string(),
            format!("must be between 1 and {MAX_TILES_PER_PINPOINT}"),
        ));
    }
    Ok(())
}

fn all_rows(m: &Matrix) -> Vec<f32> {
    let mut out = vec![0f32; m.rows * m.cols];
    for (r, row) in out.chunks_exact_mut(m.cols).enumerate() {
        m.row_f32(r, row);
    }
    out
}

impl<'a> VisionEncoder<'a> {
    /// Reads the configuration and weights of the mmproj file `f`.
    pub fn load(f: &'a GgufFile) -> Result<Self, VisionError> {
        Self::with_config(f, VisionConfig::from_gguf(f)?)
    }

    /// Builds the encoder from `f` with an explicit `config`.
    pub fn with_config(f: &'a GgufFile, config: VisionConfig) -> Result<Self, VisionError> {
        config.check(f.path())?;
        let bad = |problem: String| -> VisionError {
            MetaError::BadConfig {
                path: f.path().to_path_buf(),
                problem,
            }
            .into()
        };
        let stored = stored_blocks(f).map_err(|what| bad(format!("the file holds {what}")))?;
        if config.n_layer_run > stored {
            return Err(bad(format!(
                "{} encoder layers to run, the file stores {stored}",
                config.n_layer_run
            )));
        }
        let op = |source| MetaError::Tensor {
            path: f.path().to_path_buf(),
            source,
        };
        let c = &config;
        let d = c.n_embd;
        let mat = |name: &str, cols: usize, rows: usize| -> Result<Matrix<'a>, VisionError> {
            Ok(Matrix::new(f.tensor(name)?, cols, rows).map_err(op)?)
        };
        let vec_of = |name: &str, len: usize| -> Result<Vec<f32>, VisionError> {
            Ok(all_rows(&mat(name, len, 1)?))
        };
        let opt_vec = |name: &str, len: usize| -> Result<Option<Vec<f32>>, VisionError> {
            match f.tensor_info(name) {
                Some(_) => vec_of(name, len).map(Some),
                None => Ok(None),
            }
        };
        let lin =
            |base: &str, cols: usize, rows: usize| -> Result<(Matrix<'a>, Vec<f32>), VisionError> {
                Ok((
                    mat(&format!("{base}.weight"), cols, rows)?,
                    vec_of(&format!("{base}.bias"), rows)?,
                ))
            };
        let norm = |base: &str| -> Result<(Vec<f32>, Vec<f32>), VisionError> {
            Ok((
                vec_of(&format!("{base}.weight"), d)?,
                vec_of(&format!("{base}.bias"), d)?,
            ))
        };
        let patch = Matrix::flattened(f.tensor(tensors::V_PATCH_EMBD)?, d).map_err(op)?;
        if patch.cols != 3 * c.patch_size * c.patch_size {
            return Err(bad(format!(
                "v.patch_embd.weight has rows of {}, patch size {} needs 3 x {1} x {1}",
                patch.cols, c.patch_size
            )));
        }
        let class = opt_vec(tensors::V_CLASS_EMBD, d)?;
        let n_pos = c.grid() * c.grid() + usize::from(class.is_some());
        let pos = all_rows(&mat(tensors::V_POSITION_EMBD, d, n_pos)?);
        let pre_ln = match f.tensor_info(&format!("{}.weight", tensors::V_PRE_LN)) {
            Some(_) => Some(norm(tensors::V_PRE_LN)?),
            None => None,
        };
        let mut layers = Vec::with_capacity(c.n_layer_run);
        for i in 0..c.n_layer_run {
            let b = |s: &str| tensors::v_blk(i, s);
            layers.push(Layer {
                ln1: norm(&b("ln1"))?,
                q: lin(&b("attn_q"), d, d)?,
                k: lin(&b("attn_k"), d, d)?,
                v: lin(&b("attn_v"), d, d)?,
                o: lin(&b("attn_out"), d, d)?,
                ln2: norm(&b("ln2"))?,
                up: lin(&b("ffn_up"), d, c.n_ff)?,
                down: lin(&b("ffn_down"), c.n_ff, d)?,
            });
        }
        let (mm0_name, mm2_name) = (tensors::mm(0), tensors::mm(2));
        let mm0 = f
            .tensor_info(&format!("{mm0_name}.weight"))
            .ok_or_else(|| crate::gguf::GgufError::MissingTensor {
                path: f.path().to_path_buf(),
                tensor: format!("{mm0_name}.weight"),
            })?;
        let width = |t: &crate::gguf::TensorInfo| -> Result<usize, VisionError> {
            match t.dims.get(1).copied() {
                Some(w) if (1..=MAX_PROJ_WIDTH as u64).contains(&w) => Ok(w as usize),
                w => Err(bad(format!(
                    "{} has {} rows; a projector gives 1 to {MAX_PROJ_WIDTH} values a row",
                    t.name,
                    w.unwrap_or(1)
                ))),
            }
        };
        let hidden = width(mm0)?;
        let mut proj = vec![lin(&mm0_name, d, hidden)?];
        let mut n_out = hidden;
        if let Some(mm2) = f.tensor_info(&format!("{mm2_name}.weight")) {
            n_out = width(mm2)?;
            proj.push(lin(&mm2_name, hidden, n_out)?);
        }
        let anyres = AnyresConfig::from_gguf(f, n_out)?;
        if let Some(a) = &anyres {
            check_anyres(f.path(), a, c.image_size)?;
        }
        let embedding = Embeddings {
            patch,
            bias: opt_vec(tensors::V_PATCH_EMBD_BIAS, d)?,
            class,
            pos,
            image_size: c.image_size,
            patch_size: c.patch_size,
        };
        Ok(VisionEncoder {
            path: f.path().to_path_buf(),
            tower: Tower {
                embedding,
                pre_ln,
                layers,
                proj,
                newline: anyres.as_ref().map(|a| a.newline.clone()),
            },
            anyres,
            pad_square: false,
            n_out,
            config,
            #[cfg(feature = "vulkan")]
            device: None,
        })
    }

    /// Runs the encoder's and projector's F16 products in bfloat16 pairs from now on
    /// (see [`Matrix::bf16_products`]). Returns false, and changes nothing, when this CPU has no
    /// bfloat16 dot instruction: emulating it would be slower than the F16 path.
    pub fn use_bf16_products(&mut self) -> bool {
        if crate::kernels::Cpu::get().bf16().is_none() {
            return false;
        }
        let t = &mut self.tower;
        let mut all: Vec<&mut Matrix<'a>> = vec![&mut t.embedding.patch];
        for l in &mut t.layers {
            all.extend([
                &mut l.q.0,
                &mut l.k.0,
                &mut l.v.0,
                &mut l.o.0,
                &mut l.up.0,
                &mut l.down.0,
            ]);
        }
        all.extend(t.proj.iter_mut().map(|p| &mut p.0));
        for m in all {
            m.bf16_products = true;
        }
        true
    }

    /// The weights uploaded to `be`, once: for [`VisionEncoder::features_on`],
    /// [`VisionEncoder::project_on`] and [`VisionEncoder::embed_image_on`] there.
    pub fn upload<B: VisionOps>(&self, be: &B) -> Result<TowerOn<'a, B>, VisionError> {
        let t = &self.tower;
        let vec = |v: &Vec<f32>| be.upload_vector(v);
        let pair =
            |(a, b): &(Vec<f32>, Vec<f32>)| -> Result<_, VisionError> { Ok((vec(a)?, vec(b)?)) };
        let lin = |(m, b): &(Matrix<'a>, Vec<f32>)| -> Result<_, VisionError> {
            Ok((be.upload_matrix(m)?, vec(b)?))
        };
        let mut layers = Vec::with_capacity(t.layers.len());
        for l in &t.layers {
            layers.push(Layer {
                ln1: pair(&l.ln1)?,
                q: lin(&l.q)?,
                k: lin(&l.k)?,
                v: lin(&l.v)?,
                o: lin(&l.o)?,
                ln2: pair(&l.ln2)?,
                up: lin(&l.up)?,
                down: lin(&l.down)?,
            });
        }
        Ok(Tower {
            embedding: be.upload_embedding(&t.embedding)?,
            pre_ln: t.pre_ln.as_ref().map(pair).transpose()?,
            layers,
            proj: t.proj.iter().map(lin).collect::<Result<_, _>>()?,
            newline: t.newline.as_ref().map(vec).transpose()?,
        })
    }

    /// Rows of [`VisionEncoder::features`]: one per patch, and the class token's unless the
    /// selection drops it.
    pub fn feature_rows(&self) -> usize {
        let c = &self.config;
        let cls = self.has_class_token() && !c.drop_cls;
        c.grid() * c.grid() + usize::from(cls)
    }

    /// Selected encoder features `[tokens, n_embd]` of one tile, on the CPU: `pixels` is
    /// `[3, size, size]`, already normalised.
    pub fn features(&self, pixels: &[f32], pool: &ThreadPool) -> Result<Vec<f32>, VisionError> {
        let mut cpu = Cpu::new(pool);
        let x = self.features_on(&mut cpu, &self.tower, pixels)?;
        Ok(cpu.read(x)?)
    }

    /// [`VisionEncoder::features`] on `be` with the weights `t` uploaded there, left on the
    /// device ([`VisionEncoder::feature_rows`] rows).
    pub fn features_on<B: VisionOps>(
        &self,
        be: &mut B,
        t: &TowerOn<'_, B>,
        pixels: &[f32],
    ) -> Result<B::Buf, VisionError> {
        let c = &self.config;
        let s = c.image_size;
        if pixels.len() != 3 * s * s {
            return Err(VisionError::BadPixels {
                got: pixels.len(),
                size: s,
            });
        }
        // Embeddings [n, d]: class token first (CLIP), then patches; plus positions.
        let mut x = be.embed(&t.embedding, pixels)?;
        let (d, cls) = (c.n_embd, usize::from(self.has_class_token()));
        let n = c.grid() * c.grid() + cls;
        if let Some((w, b)) = &t.pre_ln {
            be.layer_norm(&mut x, w, b, c.eps)?;
        }

        let (mut h, mut q, mut k, mut v) = (
            be.alloc(n * d)?,
            be.alloc(n * d)?,
            be.alloc(n * d)?,
            be.alloc(n * d)?,
        );
        let mut attn = be.alloc(n * d)?;
        let mut ff = be.alloc(n * c.n_ff)?;
        let heads = Heads {
            n_head: c.n_head,
            n_head_kv: c.n_head,
            head_dim: d / c.n_head,
        };
        for (i, l) in t.layers.iter().enumerate() {
            // x += attn(ln1(x)), every token attending to every token; from the second layer on
            // h still holds the last layer's MLP output, which joins x first.
            be.residual_layer_norm(&mut x, &mut h, i > 0, &l.ln1.0, &l.ln1.1, c.eps)?;
            be.matmul_bias_shared(
                &[&l.q.0, &l.k.0, &l.v.0],
                &[&l.q.1, &l.k.1, &l.v.1],
                &h,
                n,
                &mut [&mut q, &mut k, &mut v],
            )?;
            be.attend_all(&q, &k, &v, n, heads, &mut attn)?;
            be.matmul_bias(&l.o.0, &l.o.1, &attn, n, &mut h)?;
            // x += down(act(up(ln2(x)))).
            be.residual_layer_norm(&mut x, &mut h, true, &l.ln2.0, &l.ln2.1, c.eps)?;
            be.matmul_bias(&l.up.0, &l.up.1, &h, n, &mut ff)?;
            be.activation(c.act, &mut ff)?;
            be.matmul_bias(&l.down.0, &l.down.1, &ff, n, &mut h)?;
        }
        if !t.layers.is_empty() {
            be.add(&mut x, &h)?;
        }
        if c.drop_cls && cls == 1 {
            let mut patches = be.alloc((n - 1) * d)?;
            let all = RowRun {
                src: 1,
                dst: 0,
                n: n - 1,
            };
            be.copy_rows(&x, &mut patches, d, &[all])?;
            x = patches;
        }
        Ok(x)
    }

    /// Refuses a text model whose embedding width is not this projector's output: rows of
    /// another width would be cut into more, narrower tokens (a 3584-wide OneVision-7B mmproj
    /// read by a 896-wide 0.5B model as four times the tokens). `model` names the text file.
    pub fn check_text_width(&self, n_embd: usize, model: &Path) -> Result<(), VisionError> {
        if self.n_out == n_embd {
            return Ok(());
        }
        Err(VisionError::WidthMismatch {
            mmproj: self.path.clone(),
            n_out: self.n_out,
            model: model.to_path_buf(),
            n_embd,
        })
    }

    /// Whether the encoder has a class token (CLIP) rather than none (SigLIP).
    pub fn has_class_token(&self) -> bool {
        self.tower.embedding.class.is_some()
    }

    /// Projects features `[tokens, n_embd]` into the text model's space `[tokens, n_out]`, on
    /// the CPU: a linear layer, or linear -> exact GELU -> linear.
    pub fn project(&self, feats: &[f32], pool: &ThreadPool) -> Result<Vec<f32>, VisionError> {
        let mut cpu = Cpu::new(pool);
        let n = feats.len() / self.config.n_embd;
        let x = self.project_on(&mut cpu, &self.tower, feats.to_vec(), n)?;
        Ok(cpu.read(x)?)
    }

    /// [`VisionEncoder::project`] of the `n` feature rows `feats` on `be`, left there.
    pub fn project_on<B: VisionOps>(
        &self,
        be: &mut B,
        t: &TowerOn<'_, B>,
        feats: B::Buf,
        n: usize,
    ) -> Result<B::Buf, VisionError> {
        let mut x = feats;
        let widths = self.proj_widths();
        for (i, ((m, b), &rows)) in t.proj.iter().zip(&widths).enumerate() {
            if i > 0 {
                be.activation(Activation::GeluErf, &mut x)?;
            }
            let mut out = be.alloc(n * rows)?;
            be.matmul_bias(m, b, &x, n, &mut out)?;
            x = out;
        }
        Ok(x)
    }

    /// Output widths of the projector's layers.
    fn proj_widths(&self) -> Vec<usize> {
        self.tower.proj.iter().map(|(m, _)| m.rows).collect()
    }

    /// The CPU's tower (the file's own weights).
    pub(super) fn cpu_tower(&self) -> &Tower<Matrix<'a>, Vec<f32>, Embeddings<'a>> {
        &self.tower
    }
}
