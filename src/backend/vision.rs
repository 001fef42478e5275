//! The ops the vision side adds to [`Backend`]: the encoder's embeddings, biased products,
//! LayerNorm with its residual, full attention, the MLP activations, and the row moves and
//! bilinear resize that pack anyres tiles and OneVision video. The encoder, the projector and
//! the packing are written once over [`VisionOps`] (`vision::encoder`, `vision::anyres`); the
//! CPU's implementation calls the `ops::` functions they called before the seam.

#[cfg(feature = "vulkan")]
pub mod vulkan;

use super::cpu::Cpu;
use super::{Backend, BackendError, Heads};
use crate::kernels::{KvRef, Visible};
use crate::ops::activation::{gelu_erf, gelu_tanh, quick_gelu};
use crate::ops::attention::attend_rows;
use crate::ops::matrix::matmul_bias_sharing_input;
use crate::ops::norm::{layer_norm_rows, residual_layer_norm_rows};
use crate::ops::{add_assign, Matrix};

/// An element-wise activation of the vision encoder and projector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)` (CLIP).
    QuickGelu,
    /// GELU, tanh approximation (SigLIP).
    GeluTanh,
    /// GELU, exact (the projector's).
    GeluErf,
}

/// The embedding weights of a ViT as the file holds them: the patch kernel (`n_embd` rows of
/// `3 * patch * patch`), its bias, the class token and the position embeddings (`n_pos` rows).
#[derive(Clone, Debug)]
pub struct Embeddings<'w> {
    /// The patch convolution as a matrix.
    pub patch: Matrix<'w>,
    /// The patch convolution's bias.
    pub bias: Option<Vec<f32>>,
    /// The class token (CLIP), none for SigLIP.
    pub class: Option<Vec<f32>>,
    /// Position embeddings, one row per output row.
    pub pos: Vec<f32>,
    /// Side of the square tile in pixels.
    pub image_size: usize,
    /// Side of a patch in pixels.
    pub patch_size: usize,
}

impl Embeddings<'_> {
    /// Patches along a side (the convolution's stride is its kernel, so a remainder of pixels
    /// is dropped).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Rows of the embeddings: patches, and the class token first where there is one.
    pub fn n_rows(&self) -> usize {
        self.grid() * self.grid() + usize::from(self.class.is_some())
    }
}

/// `n` rows from row `src` of one buffer to row `dst` of another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowRun {
    /// First source row.
    pub src: usize,
    /// First destination row.
    pub dst: usize,
    /// Rows.
    pub n: usize,
}

/// What the vision encoder, the projector and the packing of their rows need from a device,
/// on top of [`Backend`]'s buffers, matrices and vectors.
pub trait VisionOps: Backend {
    /// The embedding weights on the device.
    type Embedding<'w>;

    /// The device's copy of `e`.
    fn upload_embedding<'w>(&self, e: &Embeddings<'w>)
        -> Result<Self::Embedding<'w>, BackendError>;
    /// The embeddings `[n_rows, n_embd]` of one tile of normalised pixels `[3, s, s]`: the
    /// class token, then each patch's product with the kernel plus the bias, each row plus its
    /// position embedding.
    fn embed(&mut self, e: &Self::Embedding<'_>, pixels: &[f32])
        -> Result<Self::Buf, BackendError>;
    /// `out[t] = W x[t] + b` for the `n` rows of `x`.
    fn matmul_bias(
        &mut self,
        w: &Self::Weight<'_>,
        b: &Self::Vector,
        x: &Self::Buf,
        n: usize,
        out: &mut Self::Buf,
    ) -> Result<(), BackendError>;
    /// `outs[i][t] = W_i x[t] + b_i`: products sharing their input (a vision layer's Q, K, V).
    fn matmul_bias_shared(
        &mut self,
        ws: &[&Self::Weight<'_>],
        bs: &[&Self::Vector],
        x: &Self::Buf,
        n: usize,
        outs: &mut [&mut Self::Buf],
    ) -> Result<(), BackendError>;
    /// LayerNorm of each row of `x` (rows of `w`'s length) with weight `w` and bias `b`.
    fn layer_norm(
        &mut self,
        x: &mut Self::Buf,
        w: &Self::Vector,
        b: &Self::Vector,
        eps: f32,
    ) -> Result<(), BackendError>;
    /// The pre-norm step: `x += h` when `add`, then `h = LayerNorm(x)`.
    #[allow(clippy::too_many_arguments)]
    fn residual_layer_norm(
        &mut self,
        x: &mut Self::Buf,
        h: &mut Self::Buf,
        add: bool,
        w: &Self::Vector,
        b: &Self::Vector,
        eps: f32,
    ) -> Result<(), BackendError>;
    /// Attention of the `n` rows of `q` over the `n` rows of `k` and `v`, every row seeing
    /// every key, scale `1/sqrt(head_dim)`, into `out`.
    fn attend_all(
        &mut self,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        n: usize,
        heads: Heads,
        out: &mut Self::Buf,
    ) -> Result<(), BackendError>;
    /// `act` on every value of `x`, in place.
    fn activation(&mut self, act: Activation, x: &mut Self::Buf) -> Result<(), BackendError>;
    /// Row runs of `width` values from `src` to `dst`.
    fn copy_rows(
        &mut self,
        src: &Self::Buf,
        dst: &mut Self::Buf,
        width: usize,
        runs: &[RowRun],
    ) -> Result<(), BackendError>;
    /// `v` into each of `rows` of `dst` (rows of `v`'s length): the image_newline rows.
    fn fill_rows(
        &mut self,
        v: &Self::Vector,
        dst: &mut Self::Buf,
        rows: &[usize],
    ) -> Result<(), BackendError>;
    /// Bilinear resize (PyTorch's `interpolate`, `align_corners=False`) of the `[h, w, d]`
    /// grid at row `src_row` of `src` to `[oh, ow, d]` at row `dst_row` of `dst`.
    #[allow(clippy::too_many_arguments)]
    fn bilinear(
        &mut self,
        src: &Self::Buf,
        src_row: usize,
        hw: (usize, usize),
        d: usize,
        dst: &mut Self::Buf,
        dst_row: usize,
        out_hw: (usize, usize),
    ) -> Result<(), BackendError>;
}

impl VisionOps for Cpu<'_> {
    type Embedding<'w> = Embeddings<'w>;

    fn upload_embedding<'w>(&self, e: &Embeddings<'w>) -> Result<Embeddings<'w>, BackendError> {
        Ok(e.clone())
    }

    fn embed(&mut self, e: &Embeddings<'_>, pixels: &[f32]) -> Result<Vec<f32>, BackendError> {
        let (s, p, g, d) = (e.image_size, e.patch_size, e.grid(), e.patch.rows);
        // Patches [g*g, 3*p*p], each in (channel, row, column) order like the conv kernel.
        let mut patches = vec![0f32; g * g * 3 * p * p];
        for (i, patch) in patches.chunks_exact_mut(3 * p * p).enumerate() {
            let (py, px) = (i / g, i % g);
            for ch in 0..3 {
                for y in 0..p {
                    let src = ch * s * s + (py * p + y) * s + px * p;
                    patch[(ch * p + y) * p..(ch * p + y + 1) * p]
                        .copy_from_slice(&pixels[src..src + p]);
                }
            }
        }
        let cls = usize::from(e.class.is_some());
        let mut x = vec![0f32; e.n_rows() * d];
        if let Some(class) = &e.class {
            x[..d].copy_from_slice(class);
        }
        match &e.bias {
            Some(b) => e
                .patch
                .matmul_bias(&patches, g * g, &mut x[cls * d..], b, self.pool),
            None => e
                .patch
                .matmul(&patches, g * g, &mut x[cls * d..], self.pool),
        }
        add_assign(&mut x, &e.pos);
        Ok(x)
    }

    fn matmul_bias(
        &mut self,
        w: &Matrix<'_>,
        b: &Vec<f32>,
        x: &Vec<f32>,
        n: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), BackendError> {
        w.matmul_bias(x, n, out, b, self.pool);
        Ok(())
    }

    fn matmul_bias_shared(
        &mut self,
        ws: &[&Matrix<'_>],
        bs: &[&Vec<f32>],
        x: &Vec<f32>,
        n: usize,
        outs: &mut [&mut Vec<f32>],
    ) -> Result<(), BackendError> {
        let bs: Vec<&[f32]> = bs.iter().map(|b| b.as_slice()).collect();
        let mut outs: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
        matmul_bias_sharing_input(ws, &bs, x, n, &mut outs, self.pool);
        Ok(())
    }

    fn layer_norm(
        &mut self,
        x: &mut Vec<f32>,
        w: &Vec<f32>,
        b: &Vec<f32>,
        eps: f32,
    ) -> Result<(), BackendError> {
        layer_norm_rows(self.pool, x, w, b, eps);
        Ok(())
    }

    fn residual_layer_norm(
        &mut self,
        x: &mut Vec<f32>,
        h: &mut Vec<f32>,
        add: bool,
        w: &Vec<f32>,
        b: &Vec<f32>,
        eps: f32,
    ) -> Result<(), BackendError> {
        residual_layer_norm_rows(self.pool, x, h, add, w, b, eps);
        Ok(())
    }

    fn attend_all(
        &mut self,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        n: usize,
        heads: Heads,
        out: &mut Vec<f32>,
    ) -> Result<(), BackendError> {
        attend_rows(
            self.pool,
            q,
            KvRef::F32(k),
            KvRef::F32(v),
            n,
            n,
            Visible::All,
            heads.n_head,
            heads.n_head_kv,
            heads.head_dim,
            out,
        );
        Ok(())
    }

    fn activation(&mut self, act: Activation, x: &mut Vec<f32>) -> Result<(), BackendError> {
        match act {
            Activation::QuickGelu => quick_gelu(x, self.pool),
            Activation::GeluTanh => gelu_tanh(x, self.pool),
            Activation::GeluErf => gelu_erf(x, self.pool),
        }
        Ok(())
    }

    fn copy_rows(
        &mut self,
        src: &Vec<f32>,
        dst: &mut Vec<f32>,
        width: usize,
        runs: &[RowRun],
    ) -> Result<(), BackendError> {
        for r in runs {
            dst[r.dst * width..(r.dst + r.n) * width]
                .copy_from_slice(&src[r.src * width..(r.src + r.n) * width]);
        }
        Ok(())
    }

    fn fill_rows(
        &mut self,
        v: &Vec<f32>,
        dst: &mut Vec<f32>,
        rows: &[usize],
    ) -> Result<(), BackendError> {
        let d = v.len();
        for &r in rows {
            dst[r * d..(r + 1) * d].copy_from_slice(v);
        }
        Ok(())
    }

    fn bilinear(
        &mut self,
        src: &Vec<f32>,
        src_row: usize,
        (h, w): (usize, usize),
        d: usize,
        dst: &mut Vec<f32>,
        dst_row: usize,
        (oh, ow): (usize, usize),
    ) -> Result<(), BackendError> {
        let out = bilinear_grid(&src[src_row * d..(src_row + h * w) * d], h, w, d, oh, ow);
        dst[dst_row * d..(dst_row + oh * ow) * d].copy_from_slice(&out);
        Ok(())
    }
}

/// Bilinear resize of a `[h, w, d]` feature grid to `[oh, ow, d]` (PyTorch's `interpolate`,
/// `align_corners=False`, no antialiasing).
pub fn bilinear_grid(x: &[f32], h: usize, w: usize, d: usize, oh: usize, ow: usize) -> Vec<f32> {
    // PyTorch's CPU kernel arithmetic, in f32 and in its order, so results match bit for bit.
    let src = |o: usize, n_in: usize, n_out: usize| -> (usize, usize, f32, f32) {
        let scale = n_in as f32 / n_out as f32;
        let s = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
        let i0 = (s as usize).min(n_in - 1);
        let i1 = if i0 < n_in - 1 { i0 + 1 } else { i0 };
        let l1 = s - i0 as f32;
        (i0, i1, 1.0 - l1, l1)
    };
    let mut out = vec![0f32; oh * ow * d];
    for y in 0..oh {
        let (y0, y1, h0, h1) = src(y, h, oh);
        for xx in 0..ow {
            let (x0, x1, w0, w1) = src(xx, w, ow);
            let o = &mut out[(y * ow + xx) * d..(y * ow + xx + 1) * d];
            for (k, v) in o.iter_mut().enumerate() {
                let at = |yy: usize, xi: usize| x[(yy * w + xi) * d + k];
                *v = h0 * (w0 * at(y0, x0) + w1 * at(y0, x1))
                    + h1 * (w0 * at(y1, x0) + w1 * at(y1, x1));
            }
        }
    }
    out
}
