//! A Vulkan device as a [`Backend`]: weights uploaded once into device buffers, activations
//! and key/value stores on the device. Ops are queued as commands holding their buffers
//! (`Arc`s, so nothing is freed while queued); a read-back records the queue into one command
//! buffer, submits it and waits, so a whole forward pass is one submit.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Backend, BackendError, Heads};
use crate::dtype::GgmlType;
use crate::gguf::Layout;
use crate::ops::rope::RopeStyle;
use crate::ops::Matrix;
use crate::quant::interleave::deinterleave8;
use crate::text::KvType;
use crate::vulkan::{
    self as vk, q8_scratch_bytes, rope_tables, AttentionShape, Buffer, Mask, Recorder, Shader,
    VulkanError, MUL_MAT_Q8_TYPES, MUL_MAT_TYPES,
};

/// Activations on the device: `len` f32 values.
pub struct VkBuf {
    buf: Arc<Buffer>,
    len: usize,
}

impl VkBuf {
    /// The device buffer.
    pub fn buffer(&self) -> &Arc<Buffer> {
        &self.buf
    }

    /// Values it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A weight matrix on the device, in ggml's row layout: one buffer, or blocks of rows in
/// several where it is larger than the device lets one binding address.
pub struct VkWeight {
    /// Each block's buffer, first row and row count.
    blocks: Vec<(Arc<Buffer>, usize, usize)>,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    _charges: Vec<Charge>,
}

impl VkWeight {
    /// Its type, rows and columns.
    pub fn shape(&self) -> (GgmlType, usize, usize) {
        (self.ty, self.rows, self.cols)
    }
}

/// Matrices sharing an input; each its own product (the shaders take one matrix).
pub struct VkGroup {
    parts: Vec<VkWeight>,
}

/// An f32 vector on the device.
pub struct VkVector {
    buf: Arc<Buffer>,
    len: usize,
    _charge: Charge,
}

impl VkVector {
    /// The device buffer.
    pub fn buffer(&self) -> &Arc<Buffer> {
        &self.buf
    }

    /// Values it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One layer's keys and values on the device, F16 or f32.
pub struct VkKv {
    k: Arc<Buffer>,
    v: Arc<Buffer>,
    width: usize,
    f32: bool,
    _charges: [Charge; 2],
}

/// A batch's rotation tables on the device ([`rope_tables`]), `rot_dim` values a row.
pub struct VkRope {
    table: Arc<Buffer>,
    rot_dim: usize,
}

/// One queued op, holding what it uses.
enum Cmd {
    MulMat {
        w: Arc<Buffer>,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        x: Arc<Buffer>,
        n: usize,
        y: Arc<Buffer>,
        /// The output columns `y_col..y_col + rows` of rows of `y_width`.
        y_col: usize,
        y_width: usize,
        /// The int8 activations of the integer product, quantized by a [`Cmd::Quantize`]
        /// before it; None: the float product.
        scratch: Option<Arc<Buffer>>,
    },
    Quantize {
        x: Arc<Buffer>,
        cols: usize,
        n: usize,
        scratch: Arc<Buffer>,
    },
    RmsNorm {
        x: Arc<Buffer>,
        w: Arc<Buffer>,
        width: usize,
        n_rows: usize,
        eps: f32,
    },
    Rope {
        x: Arc<Buffer>,
        table: Arc<Buffer>,
        head_dim: usize,
        rot_dim: usize,
        n_head: usize,
        n_tok: usize,
        neox: bool,
    },
    Store {
        src: Arc<Buffer>,
        row: usize,
        cache: Arc<Buffer>,
        pos: usize,
        width: usize,
        n_tok: usize,
    },
    Attention {
        q: Arc<Buffer>,
        k: Arc<Buffer>,
        v: Arc<Buffer>,
        out: Arc<Buffer>,
        shape: AttentionShape,
        row: usize,
        f32_cache: bool,
    },
    SiluMul {
        x: Arc<Buffer>,
        y: Arc<Buffer>,
        n: usize,
    },
    Add {
        x: Arc<Buffer>,
        y: Arc<Buffer>,
        n: usize,
    },
    AddBias {
        x: Arc<Buffer>,
        b: Arc<Buffer>,
        width: usize,
        n_rows: usize,
    },
    Copy {
        src: Arc<Buffer>,
        src_at: u64,
        dst: Arc<Buffer>,
        dst_at: u64,
        bytes: u64,
    },
    /// The vision encoder's ops (`backend/vision/vulkan.rs`).
    Vision(super::vision::vulkan::VisionCmd),
    /// Any shader, its arguments checked by the caller ([`Vulkan::dispatch`]).
    Dispatch {
        shader: Shader,
        buffers: Vec<Arc<Buffer>>,
        push: Vec<u8>,
        groups: [u32; 3],
    },
}

impl Cmd {
    fn record<'r>(&'r self, rec: &mut Recorder<'r>) -> Result<(), VulkanError> {
        match self {
            Cmd::MulMat {
                w,
                ty,
                rows,
                cols,
                x,
                n,
                y,
                y_col,
                y_width,
                scratch,
            } => match scratch {
                Some(s) => {
                    rec.mul_mat_q8_quantized_into(w, *ty, *rows, *cols, s, *n, y, *y_col, *y_width)
                }
                None => rec.mul_mat_into(w, *ty, *rows, *cols, x, *n, y, *y_col, *y_width),
            },
            Cmd::Quantize {
                x,
                cols,
                n,
                scratch,
            } => rec.quantize_q8(x, *cols, *n, scratch),
            Cmd::RmsNorm {
                x,
                w,
                width,
                n_rows,
                eps,
            } => rec.rms_norm(x, w, *width, *n_rows, *eps),
            Cmd::Rope {
                x,
                table,
                head_dim,
                rot_dim,
                n_head,
                n_tok,
                neox,
            } => rec.rope(x, table, *head_dim, *rot_dim, *n_head, *n_tok, *neox),
            Cmd::Store {
                src,
                row,
                cache,
                pos,
                width,
                n_tok,
            } => rec.cache_append_from(src, *row, cache, *pos, *width, *n_tok),
            Cmd::Attention {
                q,
                k,
                v,
                out,
                shape,
                row,
                f32_cache,
            } => rec.attention_cached(q, k, v, out, *shape, *row, *f32_cache),
            Cmd::SiluMul { x, y, n } => rec.silu_mul(x, y, *n),
            Cmd::Add { x, y, n } => rec.add(x, y, *n),
            Cmd::AddBias {
                x,
                b,
                width,
                n_rows,
            } => rec.add_bias(x, b, *width, *n_rows),
            Cmd::Copy {
                src,
                src_at,
                dst,
                dst_at,
                bytes,
            } => {
                // vkCmdCopyBuffer does not check its region: out of range is undefined.
                if src_at + bytes > src.size() || dst_at + bytes > dst.size() {
                    return Err(VulkanError::Invalid {
                        op: "copy",
                        detail: format!(
                            "{bytes} bytes from offset {src_at} of {} into offset {dst_at} of {}",
                            src.size(),
                            dst.size()
                        ),
                    });
                }
                rec.copy(src, *src_at, dst, *dst_at, *bytes);
                Ok(())
            }
            Cmd::Vision(c) => c.record(rec),
            Cmd::Dispatch {
                shader,
                buffers,
                push,
                groups,
            } => {
                let refs: Vec<&Buffer> = buffers.iter().map(|b| &**b).collect();
                rec.dispatch(*shader, &refs, push, *groups)
            }
        }
    }
}

/// Bytes of device memory this backend's buffers hold, and the most they may.
struct Budget {
    used: AtomicU64,
    limit: u64,
}

/// Bytes counted against a budget while this lives (a layer that did not fit gives its
/// partial upload's bytes back).
struct Charge {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A Vulkan device running forward passes. [`Vulkan::session`] gives each pass its own queue
/// of work on the same device and weights.
pub struct Vulkan {
    vk: vk::Vulkan,
    budget: Arc<Budget>,
    pending: Vec<Cmd>,
    /// The int8 activations of integer products (every op waits for the one before, so one
    /// buffer serves them all); grown as needed.
    scratch: Option<Arc<Buffer>>,
    /// Activation buffers kept between passes (allocating device memory is slow on a GPU);
    /// one whose only holder is this list is free.
    spare: Arc<Mutex<Vec<Arc<Buffer>>>>,
    /// The most bytes of one weight buffer; larger matrices go in blocks of rows.
    max_weight_bytes: u64,
}

/// Activation buffers kept for reuse, at most; more are freed after their pass.
const SPARE_BUFFERS: usize = 48;

impl Vulkan {
    /// The backend on `vk`, its weights and stores limited to `budget` bytes of device memory
    /// (None: what the device reports as device-local).
    pub fn new(vk: vk::Vulkan, budget: Option<u64>) -> Vulkan {
        let limit = budget.unwrap_or(vk.info().device_local_bytes);
        Vulkan {
            budget: Arc::new(Budget {
                used: AtomicU64::new(0),
                limit,
            }),
            pending: Vec::new(),
            scratch: None,
            spare: Arc::default(),
            max_weight_bytes: vk.info().max_storage_buffer_range,
            vk,
        }
    }

    /// This backend with weight matrices larger than `bytes` (and than the device's own
    /// limit) held in blocks of rows: how the blocking is tested on any device.
    pub fn with_max_weight_buffer(mut self, bytes: u64) -> Vulkan {
        self.max_weight_bytes = bytes.min(self.max_weight_bytes);
        self
    }

    /// Another queue of work on the same device, weights and budget.
    pub fn session(&self) -> Vulkan {
        Vulkan {
            vk: self.vk.clone(),
            budget: self.budget.clone(),
            pending: Vec::new(),
            scratch: None,
            spare: self.spare.clone(),
            max_weight_bytes: self.max_weight_bytes,
        }
    }

    /// The device.
    pub fn device(&self) -> &vk::Vulkan {
        &self.vk
    }

    /// Queues `shader` over `groups` workgroups with `buffers` bound in order and `push`
    /// constants: for ops outside the text passes' (the vision encoder's), whose caller has
    /// checked the shapes.
    pub fn dispatch(
        &mut self,
        shader: Shader,
        buffers: &[&Arc<Buffer>],
        push: Vec<u8>,
        groups: [u32; 3],
    ) {
        self.pending.push(Cmd::Dispatch {
            shader,
            buffers: buffers.iter().map(|b| (*b).clone()).collect(),
            push,
            groups,
        });
    }

    /// Queues one of the vision encoder's ops.
    pub(super) fn queue_vision(&mut self, c: super::vision::vulkan::VisionCmd) {
        self.pending.push(Cmd::Vision(c));
    }

    /// A device buffer of `bytes` kept with the weights (counted against the budget).
    pub fn upload_kept(
        &self,
        data: &[u8],
        what: &'static str,
    ) -> Result<Arc<Buffer>, BackendError> {
        let (b, charge) = self.upload_bytes(data, what)?;
        // Counted for as long as the device is used: the caller keeps it with the model.
        std::mem::forget(charge);
        Ok(b)
    }

    /// Bytes of weights and key/value stores uploaded so far.
    pub fn memory_used(&self) -> u64 {
        self.budget.used.load(Ordering::Relaxed)
    }

    /// A buffer of `bytes` for something kept (weights, stores), counted against the budget.
    fn kept(&self, bytes: u64, what: &'static str) -> Result<(Buffer, Charge), BackendError> {
        let used = self.budget.used.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let charge = Charge {
            budget: self.budget.clone(),
            bytes,
        };
        if used > self.budget.limit {
            return Err(VulkanError::OutOfMemory { bytes, what }.into());
        }
        Ok((self.vk.buffer(bytes, what)?, charge))
    }

    fn upload_bytes(
        &self,
        data: &[u8],
        what: &'static str,
    ) -> Result<(Arc<Buffer>, Charge), BackendError> {
        let (mut b, charge) = self.kept(data.len() as u64, what)?;
        b.write(0, data)?;
        Ok((Arc::new(b), charge))
    }

    /// Records and runs everything queued, then waits for it.
    fn flush(&mut self) -> Result<(), BackendError> {
        let cmds = std::mem::take(&mut self.pending);
        if cmds.is_empty() {
            return Ok(());
        }
        let mut rec = self.vk.recorder()?;
        for c in &cmds {
            c.record(&mut rec)?;
        }
        rec.submit()?;
        Ok(())
    }

    fn scratch(&mut self, bytes: u64) -> Result<Arc<Buffer>, BackendError> {
        match &self.scratch {
            Some(s) if s.size() >= bytes => Ok(s.clone()),
            _ => {
                let s = Arc::new(self.vk.buffer(bytes, "int8 activations")?);
                self.scratch = Some(s.clone());
                Ok(s)
            }
        }
    }

    /// Queues `y = W x`; `quantized`: whether `x` already sits quantized in the scratch (a
    /// group's earlier product put it there), updated.
    fn queue_matmul(
        &mut self,
        w: &VkWeight,
        x: &VkBuf,
        n: usize,
        y: &VkBuf,
        quantized: &mut bool,
    ) -> Result<(), BackendError> {
        // The CPU's quantized products quantize the activations to int8 blocks too.
        let scratch = if MUL_MAT_Q8_TYPES.contains(&w.ty) {
            let s = self.scratch(q8_scratch_bytes(w.cols, n))?;
            if !*quantized {
                self.pending.push(Cmd::Quantize {
                    x: x.buf.clone(),
                    cols: w.cols,
                    n,
                    scratch: s.clone(),
                });
                *quantized = true;
            }
            Some(s)
        } else {
            None
        };
        for (buf, first, rows) in &w.blocks {
            self.pending.push(Cmd::MulMat {
                w: buf.clone(),
                ty: w.ty,
                rows: *rows,
                cols: w.cols,
                x: x.buf.clone(),
                n,
                y: y.buf.clone(),
                y_col: *first,
                y_width: w.rows,
                scratch: scratch.clone(),
            });
        }
        Ok(())
    }
}

/// `m`'s bytes in ggml's row order (interleaved groups of eight rows put back).
fn plain_rows<'m>(m: &Matrix<'m>) -> std::borrow::Cow<'m, [u8]> {
    if m.layout != Layout::Interleaved8 {
        return std::borrow::Cow::Borrowed(m.data);
    }
    let rb = m.cols / m.ty.block_size() * m.ty.type_size();
    let mut out = m.data.to_vec();
    for g in 0..m.rows / 8 {
        let at = g * 8 * rb..(g + 1) * 8 * rb;
        deinterleave8(m.ty, &m.data[at.clone()], m.cols, &mut out[at]);
    }
    std::borrow::Cow::Owned(out)
}

impl Backend for Vulkan {
    type Buf = VkBuf;
    type Weight<'w> = VkWeight;
    type Group<'w> = VkGroup;
    type Vector = VkVector;
    type Kv = VkKv;
    type Rope = VkRope;

    fn upload_matrix<'w>(&self, m: &Matrix<'w>) -> Result<VkWeight, BackendError> {
        if !MUL_MAT_TYPES.contains(&m.ty) {
            return Err(BackendError::Unsupported {
                device: "Vulkan",
                what: format!(
                    "multiply {} weights (tensor '{}'); convert the model to a supported type or \
                     run on the CPU",
                    m.ty, m.name
                ),
            });
        }
        // The product shaders walk a row in 32-value chunks (F32 and F16 rows may end in a
        // part chunk).
        if !m.cols.is_multiple_of(32) && !matches!(m.ty, GgmlType::F32 | GgmlType::F16) {
            return Err(BackendError::Unsupported {
                device: "Vulkan",
                what: format!(
                    "multiply tensor '{}': rows of {} values are not whole 32-value chunks; run \
                     this model on the CPU",
                    m.name, m.cols
                ),
            });
        }
        let bytes = plain_rows(m);
        let row_bytes = bytes.len() / m.rows.max(1);
        // Rows per buffer: as many as one binding can address (4 GiB on most GPUs, 128 MiB on
        // lavapipe and some mobile parts).
        let per = (self.max_weight_bytes as usize / row_bytes.max(1)).max(1);
        let (mut blocks, mut charges) = (Vec::new(), Vec::new());
        for first in (0..m.rows).step_by(per) {
            let rows = per.min(m.rows - first);
            let part = &bytes[first * row_bytes..(first + rows) * row_bytes];
            let (buf, charge) = self.upload_bytes(part, "weights")?;
            blocks.push((buf, first, rows));
            charges.push(charge);
        }
        Ok(VkWeight {
            blocks,
            _charges: charges,
            ty: m.ty,
            rows: m.rows,
            cols: m.cols,
        })
    }

    fn upload_group<'w>(
        &self,
        parts: &[Matrix<'w>],
        _stacked: Option<Matrix<'w>>,
    ) -> Result<VkGroup, BackendError> {
        Ok(VkGroup {
            parts: parts
                .iter()
                .map(|m| self.upload_matrix(m))
                .collect::<Result<_, _>>()?,
        })
    }

    fn upload_vector(&self, v: &[f32]) -> Result<VkVector, BackendError> {
        let (buf, charge) = self.upload_bytes(bytemuck::cast_slice(v), "norm weights or biases")?;
        Ok(VkVector {
            buf,
            _charge: charge,
            len: v.len(),
        })
    }

    fn check_heads(&self, heads: Heads) -> Result<(), BackendError> {
        if heads.head_dim > 256 || !heads.head_dim.is_multiple_of(2) {
            return Err(BackendError::Unsupported {
                device: "Vulkan",
                what: format!(
                    "attend over heads of {} values (its attention takes even widths up to \
                     256); run this model on the CPU",
                    heads.head_dim
                ),
            });
        }
        Ok(())
    }

    fn new_kv(&self, n_ctx: usize, width: usize, ty: KvType) -> Result<VkKv, BackendError> {
        let f32 = ty == KvType::F32;
        let bytes = (n_ctx * width * if f32 { 4 } else { 2 }) as u64;
        let (k, kc) = self.kept(bytes, "the key cache")?;
        let (v, vc) = self.kept(bytes, "the value cache")?;
        Ok(VkKv {
            k: Arc::new(k),
            v: Arc::new(v),
            _charges: [kc, vc],
            width,
            f32,
        })
    }

    fn upload(&mut self, x: Vec<f32>) -> Result<VkBuf, BackendError> {
        let mut b = self.vk.buffer(x.len() as u64 * 4, "activations")?;
        b.write_f32(0, &x)?;
        Ok(VkBuf {
            buf: Arc::new(b),
            len: x.len(),
        })
    }

    fn alloc(&mut self, len: usize) -> Result<VkBuf, BackendError> {
        let bytes = len as u64 * 4;
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        // Taken (cloned) under the lock, so two passes never get the same free buffer.
        let free = spare
            .iter()
            .filter(|b| Arc::strong_count(b) == 1 && b.size() >= bytes)
            .min_by_key(|b| b.size());
        if let Some(b) = free {
            return Ok(VkBuf {
                buf: b.clone(),
                len,
            });
        }
        let buf = Arc::new(self.vk.buffer(bytes, "activations")?);
        if spare.len() < SPARE_BUFFERS {
            spare.push(buf.clone());
        }
        Ok(VkBuf { buf, len })
    }

    fn read(&mut self, x: VkBuf) -> Result<Vec<f32>, BackendError> {
        self.flush()?;
        let mut out = vec![0f32; x.len];
        x.buf.read(0, bytemuck::cast_slice_mut(&mut out))?;
        Ok(out)
    }

    fn rope_tables(
        &mut self,
        positions: &[usize],
        rot_dim: usize,
        theta: f32,
    ) -> Result<VkRope, BackendError> {
        let t = rope_tables(positions, rot_dim, theta);
        let mut b = self.vk.buffer(t.len() as u64 * 4, "rotation tables")?;
        b.write_f32(0, &t)?;
        Ok(VkRope {
            table: Arc::new(b),
            rot_dim,
        })
    }

    fn copy(&mut self, src: &VkBuf, dst: &mut VkBuf) -> Result<(), BackendError> {
        self.pending.push(Cmd::Copy {
            src: src.buf.clone(),
            src_at: 0,
            dst: dst.buf.clone(),
            dst_at: 0,
            bytes: src.len.min(dst.len) as u64 * 4,
        });
        Ok(())
    }

    fn rms_norm(&mut self, x: &mut VkBuf, w: &VkVector, eps: f32) -> Result<(), BackendError> {
        self.pending.push(Cmd::RmsNorm {
            x: x.buf.clone(),
            w: w.buf.clone(),
            width: w.len,
            n_rows: x.len / w.len.max(1),
            eps,
        });
        Ok(())
    }

    fn matmul(
        &mut self,
        w: &VkWeight,
        x: &VkBuf,
        n: usize,
        out: &mut VkBuf,
    ) -> Result<(), BackendError> {
        self.queue_matmul(w, x, n, out, &mut false)
    }

    fn matmul_group(
        &mut self,
        g: &VkGroup,
        x: &VkBuf,
        n: usize,
        outs: &mut [&mut VkBuf],
    ) -> Result<(), BackendError> {
        // One quantization of the input for all the group's integer products.
        let mut quantized = false;
        for (w, out) in g.parts.iter().zip(outs.iter()) {
            self.queue_matmul(w, x, n, out, &mut quantized)?;
        }
        Ok(())
    }

    fn add_bias(&mut self, x: &mut VkBuf, b: &VkVector) -> Result<(), BackendError> {
        self.pending.push(Cmd::AddBias {
            x: x.buf.clone(),
            b: b.buf.clone(),
            width: b.len,
            n_rows: x.len / b.len.max(1),
        });
        Ok(())
    }

    fn rope(
        &mut self,
        x: &mut VkBuf,
        r: &VkRope,
        head_dim: usize,
        style: RopeStyle,
    ) -> Result<(), BackendError> {
        let n_tok = (r.table.size() / 4) as usize / r.rot_dim.max(1);
        let n_head = x.len / n_tok.max(1) / head_dim.max(1);
        self.pending.push(Cmd::Rope {
            x: x.buf.clone(),
            table: r.table.clone(),
            head_dim,
            rot_dim: r.rot_dim,
            n_head,
            n_tok,
            neox: style == RopeStyle::Neox,
        });
        Ok(())
    }

    fn attend(
        &mut self,
        kv: &mut VkKv,
        q: &VkBuf,
        k: &VkBuf,
        v: &VkBuf,
        rows: Range<usize>,
        past: usize,
        heads: Heads,
        out: &mut VkBuf,
    ) -> Result<(), BackendError> {
        let n = rows.len();
        for (src, cache) in [(k, &kv.k), (v, &kv.v)] {
            self.pending.push(if kv.f32 {
                let w = (kv.width * 4) as u64;
                Cmd::Copy {
                    src: src.buf.clone(),
                    src_at: rows.start as u64 * w,
                    dst: cache.clone(),
                    dst_at: past as u64 * w,
                    bytes: n as u64 * w,
                }
            } else {
                Cmd::Store {
                    src: src.buf.clone(),
                    row: rows.start,
                    cache: cache.clone(),
                    pos: past,
                    width: kv.width,
                    n_tok: n,
                }
            });
        }
        self.pending.push(Cmd::Attention {
            q: q.buf.clone(),
            k: kv.k.clone(),
            v: kv.v.clone(),
            out: out.buf.clone(),
            shape: AttentionShape {
                n_rows: n,
                n_kv: past + n,
                n_head: heads.n_head,
                n_kv_head: heads.n_head_kv,
                head_dim: heads.head_dim,
                mask: Mask::Causal { first: past },
            },
            row: rows.start,
            f32_cache: kv.f32,
        });
        Ok(())
    }

    fn silu_mul(&mut self, gate: &mut VkBuf, up: &VkBuf) -> Result<(), BackendError> {
        self.pending.push(Cmd::SiluMul {
            x: gate.buf.clone(),
            y: up.buf.clone(),
            n: gate.len,
        });
        Ok(())
    }

    fn add(&mut self, x: &mut VkBuf, y: &VkBuf) -> Result<(), BackendError> {
        self.pending.push(Cmd::Add {
            x: x.buf.clone(),
            y: y.buf.clone(),
            n: x.len,
        });
        Ok(())
    }

    fn logits(
        &mut self,
        x: &mut VkBuf,
        rows: Range<usize>,
        norm: &VkVector,
        eps: f32,
        w: &VkWeight,
    ) -> Result<Vec<f32>, BackendError> {
        let (d, m) = (norm.len, rows.len());
        let mut part = self.alloc(m * d)?;
        self.pending.push(Cmd::Copy {
            src: x.buf.clone(),
            src_at: (rows.start * d * 4) as u64,
            dst: part.buf.clone(),
            dst_at: 0,
            bytes: (m * d * 4) as u64,
        });
        self.rms_norm(&mut part, norm, eps)?;
        let out = self.alloc(m * w.rows)?;
        self.queue_matmul(w, &part, m, &out, &mut false)?;
        self.read(out)
    }
}
