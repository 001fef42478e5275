//! The vision ops on the Vulkan backend: each queued onto the backend's pending work like the
//! text ops, holding its buffers until the submit.

use std::sync::Arc;

use super::{Activation, Embeddings, RowRun, VisionOps};
use crate::backend::vulkan::{VkBuf, VkVector, VkWeight, Vulkan};
use crate::backend::{Backend, BackendError, Heads};
use crate::dtype::GgmlType;
use crate::gguf::Layout;
use crate::vulkan::{self as vk, AttentionShape, Buffer, Mask, PatchShape, Recorder, VulkanError};

/// The embedding weights on the device: the patch kernel as stored, and one table of the
/// bias, the class token and the position embeddings.
pub struct VkEmbedding {
    w: Arc<Buffer>,
    ty: GgmlType,
    table: Arc<Buffer>,
    shape: PatchShape,
}

/// One queued vision op.
pub(in crate::backend) enum VisionCmd {
    PatchEmbed {
        w: Arc<Buffer>,
        ty: GgmlType,
        pixels: Arc<Buffer>,
        table: Arc<Buffer>,
        out: Arc<Buffer>,
        shape: PatchShape,
    },
    LayerNorm {
        x: Arc<Buffer>,
        w: Arc<Buffer>,
        b: Arc<Buffer>,
        width: usize,
        n_rows: usize,
        eps: f32,
    },
    ResidualLayerNorm {
        x: Arc<Buffer>,
        h: Arc<Buffer>,
        add: bool,
        w: Arc<Buffer>,
        b: Arc<Buffer>,
        width: usize,
        n_rows: usize,
        eps: f32,
    },
    Attention {
        q: Arc<Buffer>,
        k: Arc<Buffer>,
        v: Arc<Buffer>,
        out: Arc<Buffer>,
        shape: AttentionShape,
    },
    Activation {
        act: vk::Activation,
        x: Arc<Buffer>,
        n: usize,
    },
    Copy {
        src: Arc<Buffer>,
        src_at: u64,
        dst: Arc<Buffer>,
        dst_at: u64,
        bytes: u64,
    },
    Bilinear {
        x: Arc<Buffer>,
        hw: (usize, usize),
        d: usize,
        out: Arc<Buffer>,
        out_hw: (usize, usize),
    },
}

impl VisionCmd {
    pub(in crate::backend) fn record<'r>(
        &'r self,
        rec: &mut Recorder<'r>,
    ) -> Result<(), VulkanError> {
        match self {
            VisionCmd::PatchEmbed {
                w,
                ty,
                pixels,
                table,
                out,
                shape,
            } => rec.patch_embed(w, *ty, pixels, table, out, *shape),
            VisionCmd::LayerNorm {
                x,
                w,
                b,
                width,
                n_rows,
                eps,
            } => rec.layer_norm(x, w, b, *width, *n_rows, *eps),
            VisionCmd::ResidualLayerNorm {
                x,
                h,
                add,
                w,
                b,
                width,
                n_rows,
                eps,
            } => rec.residual_layer_norm(x, h, *add, w, b, *width, *n_rows, *eps),
            VisionCmd::Attention {
                q,
                k,
                v,
                out,
                shape,
            } => rec.attention_f32(q, k, v, out, *shape),
            VisionCmd::Activation { act, x, n } => rec.activation(*act, x, *n),
            VisionCmd::Copy {
                src,
                src_at,
                dst,
                dst_at,
                bytes,
            } => {
                rec.copy(src, *src_at, dst, *dst_at, *bytes);
                Ok(())
            }
            VisionCmd::Bilinear {
                x,
                hw,
                d,
                out,
                out_hw,
            } => rec.bilinear(x, hw.0, hw.1, *d, out, out_hw.0, out_hw.1),
        }
    }
}

/// Queues a copy of `r.n` rows of `width` values.
fn queue_rows(be: &mut Vulkan, src: &Arc<Buffer>, dst: &Arc<Buffer>, width: usize, r: RowRun) {
    let row = (width * 4) as u64;
    if r.n == 0 {
        return;
    }
    be.queue_vision(VisionCmd::Copy {
        src: src.clone(),
        src_at: r.src as u64 * row,
        dst: dst.clone(),
        dst_at: r.dst as u64 * row,
        bytes: r.n as u64 * row,
    });
}

impl VisionOps for Vulkan {
    type Embedding<'w> = VkEmbedding;

    fn upload_embedding<'w>(&self, e: &Embeddings<'w>) -> Result<VkEmbedding, BackendError> {
        let d = e.patch.rows;
        let ty = e.patch.ty;
        if !matches!(ty, GgmlType::F32 | GgmlType::F16) || e.patch.layout != Layout::Rows {
            return Err(BackendError::Unsupported {
                device: "Vulkan",
                what: format!(
                    "embed patches with a {ty} kernel (tensor '{}'; F32 and F16 have a shader); \
                     run the vision encoder on the CPU",
                    e.patch.name
                ),
            });
        }
        let mut table = Vec::with_capacity((2 + e.n_rows()) * d);
        table.extend_from_slice(e.bias.as_deref().unwrap_or(&vec![0.0; d]));
        table.extend_from_slice(e.class.as_deref().unwrap_or(&vec![0.0; d]));
        table.extend_from_slice(&e.pos);
        Ok(VkEmbedding {
            w: self.upload_kept(e.patch.data, "the patch kernel")?,
            ty,
            table: self.upload_kept(bytemuck::cast_slice(&table), "the embedding table")?,
            shape: PatchShape {
                image_size: e.image_size,
                patch_size: e.patch_size,
                n_embd: d,
                class_token: e.class.is_some(),
            },
        })
    }

    fn embed(&mut self, e: &VkEmbedding, pixels: &[f32]) -> Result<VkBuf, BackendError> {
        let px = self.upload(pixels.to_vec())?;
        let out = self.alloc(e.shape.n_rows() * e.shape.n_embd)?;
        self.queue_vision(VisionCmd::PatchEmbed {
            w: e.w.clone(),
            ty: e.ty,
            pixels: px.buffer().clone(),
            table: e.table.clone(),
            out: out.buffer().clone(),
            shape: e.shape,
        });
        Ok(out)
    }

    fn matmul_bias(
        &mut self,
        w: &VkWeight,
        b: &VkVector,
        x: &VkBuf,
        n: usize,
        out: &mut VkBuf,
    ) -> Result<(), BackendError> {
        self.matmul(w, x, n, out)?;
        self.add_bias(out, b)
    }

    fn matmul_bias_shared(
        &mut self,
        ws: &[&VkWeight],
        bs: &[&VkVector],
        x: &VkBuf,
        n: usize,
        outs: &mut [&mut VkBuf],
    ) -> Result<(), BackendError> {
        for ((w, b), out) in ws.iter().zip(bs).zip(outs.iter_mut()) {
            self.matmul_bias(w, b, x, n, out)?;
        }
        Ok(())
    }

    fn layer_norm(
        &mut self,
        x: &mut VkBuf,
        w: &VkVector,
        b: &VkVector,
        eps: f32,
    ) -> Result<(), BackendError> {
        self.queue_vision(VisionCmd::LayerNorm {
            x: x.buffer().clone(),
            w: w.buffer().clone(),
            b: b.buffer().clone(),
            width: w.len(),
            n_rows: x.len() / w.len().max(1),
            eps,
        });
        Ok(())
    }

    fn residual_layer_norm(
        &mut self,
        x: &mut VkBuf,
        h: &mut VkBuf,
        add: bool,
        w: &VkVector,
        b: &VkVector,
        eps: f32,
    ) -> Result<(), BackendError> {
        self.queue_vision(VisionCmd::ResidualLayerNorm {
            x: x.buffer().clone(),
            h: h.buffer().clone(),
            add,
            w: w.buffer().clone(),
            b: b.buffer().clone(),
            width: w.len(),
            n_rows: x.len() / w.len().max(1),
            eps,
        });
        Ok(())
    }

    fn attend_all(
        &mut self,
        q: &VkBuf,
        k: &VkBuf,
        v: &VkBuf,
        n: usize,
        heads: Heads,
        out: &mut VkBuf,
    ) -> Result<(), BackendError> {
        self.queue_vision(VisionCmd::Attention {
            q: q.buffer().clone(),
            k: k.buffer().clone(),
            v: v.buffer().clone(),
            out: out.buffer().clone(),
            shape: AttentionShape {
                n_rows: n,
                n_kv: n,
                n_head: heads.n_head,
                n_kv_head: heads.n_head_kv,
                head_dim: heads.head_dim,
                mask: Mask::None,
            },
        });
        Ok(())
    }

    fn activation(&mut self, act: Activation, x: &mut VkBuf) -> Result<(), BackendError> {
        let act = match act {
            Activation::QuickGelu => vk::Activation::GeluQuick,
            Activation::GeluTanh => vk::Activation::GeluTanh,
            Activation::GeluErf => vk::Activation::GeluErf,
        };
        self.queue_vision(VisionCmd::Activation {
            act,
            x: x.buffer().clone(),
            n: x.len(),
        });
        Ok(())
    }

    fn copy_rows(
        &mut self,
        src: &VkBuf,
        dst: &mut VkBuf,
        width: usize,
        runs: &[RowRun],
    ) -> Result<(), BackendError> {
        for &r in runs {
            check_run(src.len(), dst.len(), width, r)?;
            queue_rows(self, src.buffer(), dst.buffer(), width, r);
        }
        Ok(())
    }

    fn fill_rows(
        &mut self,
        v: &VkVector,
        dst: &mut VkBuf,
        rows: &[usize],
    ) -> Result<(), BackendError> {
        for &row in rows {
            let r = RowRun {
                src: 0,
                dst: row,
                n: 1,
            };
            check_run(v.len(), dst.len(), v.len(), r)?;
            queue_rows(self, v.buffer(), dst.buffer(), v.len(), r);
        }
        Ok(())
    }

    fn bilinear(
        &mut self,
        src: &VkBuf,
        src_row: usize,
        hw: (usize, usize),
        d: usize,
        dst: &mut VkBuf,
        dst_row: usize,
        out_hw: (usize, usize),
    ) -> Result<(), BackendError> {
        let (n_in, n_out) = (hw.0 * hw.1, out_hw.0 * out_hw.1);
        let whole_in = RowRun {
            src: src_row,
            dst: 0,
            n: n_in,
        };
        let whole_out = RowRun {
            src: 0,
            dst: dst_row,
            n: n_out,
        };
        check_run(src.len(), n_in * d, d, whole_in)?;
        check_run(n_out * d, dst.len(), d, whole_out)?;
        // The shader reads and writes whole buffers from their start: a grid elsewhere is
        // copied out first, a result elsewhere copied in after.
        let x = if src_row == 0 {
            src.buffer().clone()
        } else {
            let t = self.alloc(n_in * d)?.buffer().clone();
            queue_rows(self, src.buffer(), &t, d, whole_in);
            t
        };
        let out = if dst_row == 0 {
            dst.buffer().clone()
        } else {
            self.alloc(n_out * d)?.buffer().clone()
        };
        self.queue_vision(VisionCmd::Bilinear {
            x,
            hw,
            d,
            out: out.clone(),
            out_hw,
        });
        if dst_row != 0 {
            queue_rows(self, &out, dst.buffer(), d, whole_out);
        }
        Ok(())
    }
}

/// Refuses a run past either buffer (a copy is not bounds-checked by the device).
fn check_run(src_len: usize, dst_len: usize, width: usize, r: RowRun) -> Result<(), BackendError> {
    let fits = |first: usize, len: usize| (first + r.n) * width <= len;
    if fits(r.src, src_len) && fits(r.dst, dst_len) {
        return Ok(());
    }
    Err(VulkanError::Invalid {
        op: "copy_rows",
        detail: format!(
            "rows {}..{} of {width} values into rows {}..{}: past a buffer of {src_len} or \
             {dst_len} values",
            r.src,
            r.src + r.n,
            r.dst,
            r.dst + r.n
        ),
    }
    .into())
}
