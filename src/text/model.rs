//! The decoder forward pass. One function reads top to bottom, embedding to logits; shapes
//! are in the comments (`n` tokens in the batch, `d` = n_embd). The pass is generic over the
//! [`Backend`] that runs it: the CPU, or a device holding some of the layers.

use super::config::{Arch, TextConfig};
use super::error::TextError;
use super::kv_cache::{KvCache, KvHome};
use crate::backend::cpu::CpuGroup;
use crate::backend::{Backend, BackendError, Cpu, Heads};
use crate::gguf::keys::{general, llm, tensors};
use crate::gguf::GgufFile;
use crate::meta_error::{FileKind, MetaError};
use crate::ops::Matrix;
use crate::threadpool::ThreadPool;

/// One decoder layer's weights, as a backend holds them (`V` vectors, `M` matrices, `G`
/// groups of matrices sharing an input).
pub(crate) struct LayerWeights<V, M, G> {
    attn_norm: V,
    /// Q, K, V: one product where the device can.
    qkv: G,
    /// Q, K, V biases (Qwen2; LLaMA files may have them).
    biases: [Option<V>; 3],
    wo: M,
    ffn_norm: V,
    /// Gate, up.
    gate_up: G,
    down: M,
}

/// A layer's weights on backend `B`.
pub(crate) type Layer<'w, B> =
    LayerWeights<<B as Backend>::Vector, <B as Backend>::Weight<'w>, <B as Backend>::Group<'w>>;

/// `w` (the file's views, the CPU's layer) on backend `b`.
#[cfg(feature = "vulkan")]
pub(super) fn upload_layer<'w, B: Backend>(
    b: &B,
    w: &Layer<'w, Cpu<'static>>,
) -> Result<Layer<'w, B>, BackendError> {
    let bias = |v: &Option<Vec<f32>>| v.as_deref().map(|v| b.upload_vector(v)).transpose();
    Ok(LayerWeights {
        attn_norm: b.upload_vector(&w.attn_norm)?,
        qkv: b.upload_group(&w.qkv.parts, w.qkv.stacked)?,
        biases: [
            bias(&w.biases[0])?,
            bias(&w.biases[1])?,
            bias(&w.biases[2])?,
        ],
        wo: b.upload_matrix(&w.wo)?,
        ffn_norm: b.upload_vector(&w.ffn_norm)?,
        gate_up: b.upload_group(&w.gate_up.parts, w.gate_up.stacked)?,
        down: b.upload_matrix(&w.down)?,
    })
}

/// Rows a forward pass runs at once (llama.cpp's default `n_ubatch`): longer inputs go through
/// in batches of this many.
pub const UBATCH: usize = 512;

/// Which rows of logits a forward pass returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's (scoring, tests).
    All,
}

/// Where a text model's layers run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The device's name, when one holds layers.
    pub device: Option<String>,
    /// Layers on the device (the last ones).
    pub device_layers: usize,
    /// Whether the output norm and matrix are on the device.
    pub output_on_device: bool,
    /// Bytes of device memory its weights and key/value stores take so far.
    pub device_bytes: u64,
    /// Why fewer layers (or not the output) went to the device than were asked for.
    pub held_back: Option<String>,
}

/// A text model whose weights are views into the memory-mapped GGUF file.
pub struct TextModel<'a> {
    /// The model's hyperparameters.
    pub config: TextConfig,
    token_embd: Matrix<'a>,
    output: Matrix<'a>,
    output_norm: Vec<f32>,
    /// Every layer as the file holds it (the CPU runs those no device holds).
    pub(super) layers: Vec<Layer<'a, Cpu<'static>>>,
    /// The last layers on a Vulkan device, if any.
    #[cfg(feature = "vulkan")]
    pub(super) device: Option<super::offload::Offload>,
    /// The file the model was loaded from, for errors that name it.
    path: std::path::PathBuf,
}

fn vector(f: &GgufFile, name: &str, len: usize) -> Result<Vec<f32>, TextError> {
    let t = f.tensor(name)?;
    let m = Matrix::new(t, len, 1).map_err(|source| MetaError::Tensor {
        path: f.path().to_path_buf(),
        source,
    })?;
    let mut out = vec![0f32; len];
    m.row_f32(0, &mut out);
    Ok(out)
}

/// Rearranges the text model's Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K weight matrices in
/// `f` for the decode kernels (eight rows interleaved, in the file's private pages; llama.cpp
/// repacks at load for the same reason). The
/// token embedding is left as it is unless it doubles as the output matrix, since a lookup
/// touches only a few of its rows. Returns how many tensors were rearranged.
pub fn interleave_weights(f: &mut GgufFile, pool: &ThreadPool) -> Result<usize, TextError> {
    const MATRICES: [&str; 7] = [
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
    ];
    let tied = f.tensor_info(tensors::OUTPUT).is_none();
    let wanted = |name: &str| {
        if name == tensors::OUTPUT || (tied && name == tensors::TOKEN_EMBD) {
            return true;
        }
        let Some(rest) = name.strip_prefix(tensors::BLK_PREFIX) else {
            return false;
        };
        let Some((layer, tail)) = rest.split_once('.') else {
            return false;
        };
        layer.parse::<u32>().is_ok()
            && tail
                .strip_suffix(".weight")
                .is_some_and(|m| MATRICES.contains(&m))
    };
    let interleavable = |t: &crate::gguf::TensorInfo| {
        crate::quant::interleave::interleaved8_block_bytes(t.ty).is_some() && wanted(&t.name)
    };
    let work = f.tensors_mut(interleavable)?;
    let done = std::sync::atomic::AtomicUsize::new(0);
    let queue = std::sync::Mutex::new(work);
    pool.for_chunks(queue.lock().map_or(0, |q| q.len()), 1, &|_| {
        let item = queue.lock().ok().and_then(|mut q| q.pop());
        if let Some((info, data)) = item {
            crate::gguf::prefault(data);
            if crate::quant::interleave::interleave(info, data) {
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    Ok(done.into_inner())
}

/// Bytes of physical memory, where the system says.
fn physical_memory() -> Option<u64> {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no preconditions.
        let (pages, size) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if pages > 0 && size > 0 {
            return (pages as u64).checked_mul(size as u64);
        }
    }
    None
}

/// `block_count` must be the number of `blk.N` blocks the file holds: fewer would silently run
/// a truncated model, more would fail only after allocating for blocks that are not there.
fn check_block_count(f: &GgufFile, n_layer: usize) -> Result<(), TextError> {
    let mut present = std::collections::BTreeSet::new();
    for t in f.tensors() {
        let index = t
            .name
            .strip_prefix(tensors::BLK_PREFIX)
            .and_then(|r| r.split_once('.'))
            .and_then(|(i, _)| i.parse::<usize>().ok());
        present.extend(index);
    }
    let contiguous = present.iter().copied().eq(0..present.len());
    if present.len() != n_layer || !contiguous {
        let key = llm::key(f.get_str(general::ARCHITECTURE)?, llm::BLOCK_COUNT);
        return Err(MetaError::BadValue {
            path: f.path().to_path_buf(),
            kind: FileKind::Model,
            key,
            value: n_layer.to_string(),
            expected: match (present.first(), present.last()) {
                (Some(lo), Some(hi)) => format!(
                    "must count the file's blocks: it holds blk.N tensors for {} values of N, \
                     from {lo} to {hi}",
                    present.len()
                ),
                _ => "must count the file's blocks: it holds no blk.N tensors".into(),
            },
        }
        .into());
    }
    Ok(())
}

impl<'a> TextModel<'a> {
    /// Checks every tensor's presence, shape and type, and builds the model.
    pub fn load(f: &'a GgufFile) -> Result<TextModel<'a>, TextError> {
        let c = TextConfig::from_gguf(f)?;
        check_block_count(f, c.n_layer)?;
        let op = |source| MetaError::Tensor {
            path: f.path().to_path_buf(),
            source,
        };
        let mat = |name: &str, cols: usize, rows: usize| -> Result<Matrix<'a>, TextError> {
            Ok(Matrix::new(f.tensor(name)?, cols, rows).map_err(op)?)
        };
        let (d, q_dim, kv_dim) = (c.n_embd, c.n_head * c.head_dim, c.n_head_kv * c.head_dim);
        let token_embd = mat(tensors::TOKEN_EMBD, d, c.n_vocab)?;
        // No output matrix means the embedding is tied (Qwen2-0.5B, OneVision).
        let output = match f.tensor_info(tensors::OUTPUT) {
            Some(_) => mat(tensors::OUTPUT, d, c.n_vocab)?,
            None => token_embd,
        };
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let n = |s: &str| tensors::blk(i, s);
            let bias = |s: &str, len| -> Result<Option<Vec<f32>>, TextError> {
                match c.arch {
                    Arch::Qwen2 => Ok(Some(vector(f, &n(s), len)?)),
                    Arch::Llama if f.tensor_info(&n(s)).is_some() => {
                        Ok(Some(vector(f, &n(s), len)?))
                    }
                    Arch::Llama => Ok(None),
                }
            };
            let (wq, wk, wv) = (
                mat(&n("attn_q.weight"), d, q_dim)?,
                mat(&n("attn_k.weight"), d, kv_dim)?,
                mat(&n("attn_v.weight"), d, kv_dim)?,
            );
            let (gate, up) = (
                mat(&n("ffn_gate.weight"), d, c.n_ff)?,
                mat(&n("ffn_up.weight"), d, c.n_ff)?,
            );
            layers.push(LayerWeights {
                attn_norm: vector(f, &n("attn_norm.weight"), d)?,
                qkv: CpuGroup {
                    stacked: Matrix::stacked(f.bytes(), &[wq, wk, wv]),
                    parts: vec![wq, wk, wv],
                },
                biases: [
                    bias("attn_q.bias", q_dim)?,
                    bias("attn_k.bias", kv_dim)?,
                    bias("attn_v.bias", kv_dim)?,
                ],
                wo: mat(&n("attn_output.weight"), q_dim, d)?,
                ffn_norm: vector(f, &n("ffn_norm.weight"), d)?,
                gate_up: CpuGroup {
                    stacked: Matrix::stacked(f.bytes(), &[gate, up]),
                    parts: vec![gate, up],
                },
                down: mat(&n("ffn_down.weight"), c.n_ff, d)?,
            });
        }
        Ok(TextModel {
            output_norm: vector(f, tensors::OUTPUT_NORM, d)?,
            config: c,
            token_embd,
            output,
            layers,
            #[cfg(feature = "vulkan")]
            device: None,
            path: f.path().to_path_buf(),
        })
    }

    /// The file the model was loaded from.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The output norm and matrix.
    #[cfg(feature = "vulkan")]
    pub(super) fn output_weights(&self) -> (&[f32], &Matrix<'a>) {
        (&self.output_norm, &self.output)
    }

    /// Where the layers run.
    pub fn placement(&self) -> Placement {
        #[cfg(feature = "vulkan")]
        if let Some(o) = &self.device {
            return Placement {
                device: Some(o.device.device().info().name.clone()),
                device_layers: o.layers.len(),
                output_on_device: o.output.is_some(),
                device_bytes: o.device.memory_used(),
                held_back: o.held_back.clone(),
            };
        }
        Placement {
            device: None,
            device_layers: 0,
            output_on_device: false,
            device_bytes: 0,
            held_back: None,
        }
    }

    /// How many of the first layers the CPU runs (the rest are on a device).
    fn cpu_layers(&self) -> usize {
        #[cfg(feature = "vulkan")]
        if let Some(o) = &self.device {
            return self.layers.len() - o.layers.len();
        }
        self.layers.len()
    }

    /// A KV cache sized for this model; `n_ctx` must be one the caller knows is small (tests,
    /// measured runs). A context from a user goes through [`TextModel::try_new_cache`].
    pub fn new_cache(&self, n_ctx: usize, ty: super::KvType) -> KvCache {
        let c = &self.config;
        KvCache::new(self.cpu_layers(), n_ctx, c.n_head_kv * c.head_dim, ty)
    }

    /// [`TextModel::new_cache`], refused when the cache would not fit in this machine's
    /// physical memory: allocating it anyway ends in the OOM killer or an abort, not an error.
    pub fn try_new_cache(&self, n_ctx: usize, ty: super::KvType) -> Result<KvCache, TextError> {
        let c = &self.config;
        let width = c.n_head_kv * c.head_dim;
        let elem = match ty {
            super::KvType::F16 => 2u64,
            super::KvType::F32 => 4,
        };
        let need = [c.n_layer as u64, 2, n_ctx as u64, width as u64, elem]
            .into_iter()
            .try_fold(1u64, u64::checked_mul)
            .filter(|&b| usize::try_from(b).is_ok());
        let limit = physical_memory();
        match need {
            Some(b) if limit.is_none_or(|l| b <= l) => {
                #[allow(unused_mut)]
                let mut cache = self.new_cache(n_ctx, ty);
                // The device's stores now, so a context the device cannot hold fails here.
                #[cfg(feature = "vulkan")]
                if let Some(o) = &self.device {
                    cache.stores(&o.device, o.layers.len())?;
                }
                Ok(cache)
            }
            _ => Err(TextError::CacheTooLarge {
                n_ctx,
                n_layer: c.n_layer,
                width,
                need_mib: need.map_or(u64::MAX, |b| b >> 20),
                limit_mib: limit.map_or(usize::MAX as u64, |l| l) >> 20,
            }),
        }
    }

    /// Token embeddings `[n, d]` for `ids`.
    pub fn embed(&self, ids: &[u32]) -> Result<Vec<f32>, TextError> {
        let d = self.config.n_embd;
        let mut out = vec![0f32; ids.len() * d];
        for (row, &id) in out.chunks_exact_mut(d).zip(ids) {
            if id as usize >= self.config.n_vocab {
                return Err(TextError::BadToken {
                    id,
                    n_vocab: self.config.n_vocab,
                });
            }
            self.token_embd.row_f32(id as usize, row);
        }
        Ok(out)
    }

    /// Runs `n` input rows (`x`: `[n, d]`, token embeddings or image features) at the positions
    /// after what `cache` holds, stores their keys/values, and returns logits
    /// (`[n_vocab]` for [`Logits::Last`], `[n, n_vocab]` for [`Logits::All`]).
    ///
    /// Long inputs run in batches of [`UBATCH`] rows, one after another (each attends to the
    /// cache the ones before it filled), so the activations of one batch bound the memory: a
    /// OneVision image's 3000 rows at once held 150 MB more than llama.cpp's 512-row ubatches.
    pub fn forward(
        &self,
        x: Vec<f32>,
        cache: &mut KvCache,
        which: Logits,
        pool: &ThreadPool,
    ) -> Result<Vec<f32>, TextError> {
        let d = self.config.n_embd;
        let n = x.len() / d;
        assert_eq!(x.len(), n * d, "forward input is not whole rows of {d}");
        // Checked for the whole input first, so a refusal stores nothing.
        if cache.len() + n > cache.n_ctx() {
            return Err(TextError::ContextFull {
                needed: cache.len() + n,
                n_ctx: cache.n_ctx(),
            });
        }
        if n <= UBATCH {
            return self.forward_batch(x, cache, Some(which), pool);
        }
        let mut logits = Vec::new();
        let batches = n.div_ceil(UBATCH);
        for (i, rows) in x.chunks(UBATCH * d).enumerate() {
            // Earlier batches' logits are wanted only for Logits::All: for Last they skip the
            // output product (a read of the whole vocabulary matrix).
            let want = match which {
                Logits::All => Some(Logits::All),
                Logits::Last => (i + 1 == batches).then_some(Logits::Last),
            };
            logits.extend(self.forward_batch(rows.to_vec(), cache, want, pool)?);
        }
        Ok(logits)
    }

    /// [`TextModel::forward`] on one batch, all rows at once; no logits for `which` None.
    fn forward_batch(
        &self,
        x: Vec<f32>,
        cache: &mut KvCache,
        which: Option<Logits>,
        pool: &ThreadPool,
    ) -> Result<Vec<f32>, TextError> {
        let c = &self.config;
        let d = c.n_embd;
        let n = x.len() / d;
        if n == 0 {
            return Ok(Vec::new());
        }
        let past = cache.len();
        if past + n > cache.n_ctx() {
            return Err(TextError::ContextFull {
                needed: past + n,
                n_ctx: cache.n_ctx(),
            });
        }
        let rows = which.map(|w| match w {
            Logits::Last => n - 1..n,
            Logits::All => 0..n,
        });
        // Row t sits at position past + t.
        let positions: Vec<usize> = (past..past + n).collect();
        // The first layers on the CPU, the rest on the device (x crosses once).
        let mut cpu = Cpu::new(pool);
        let mut x = x;
        let split = self.cpu_layers();
        let kv = cache.stores(&cpu, split)?;
        self.sequence(&mut cpu, &self.layers[..split], kv, &mut x, &positions)?;
        #[cfg(feature = "vulkan")]
        if let Some(dev) = &self.device {
            let mut gpu = dev.device.session();
            let kv = cache.stores(&gpu, dev.layers.len())?;
            let mut xd = gpu.upload(x)?;
            self.sequence(&mut gpu, &dev.layers, kv, &mut xd, &positions)?;
            if let (Some(rows), Some((norm, output))) = (rows.clone(), &dev.output) {
                let logits = gpu.logits(&mut xd, rows, norm, c.rms_eps, output)?;
                cache.advance(n);
                return Ok(logits);
            }
            x = gpu.read(xd)?;
        }
        cache.advance(n);
        let Some(rows) = rows else {
            return Ok(Vec::new());
        };
        Ok(cpu.logits(&mut x, rows, &self.output_norm, c.rms_eps, &self.output)?)
    }

    /// One decode step of several independent sequences (a server's continuous batching): row
    /// `i` of `x` (`[n, d]`, one token embedding per sequence) runs at the position after what
    /// `caches[i]` holds. The weight products take all rows at once, so each matrix is read
    /// once for every sequence instead of once per sequence; rotation, the cache store and
    /// attention are per sequence, against its own cache. Returns `[n, n_vocab]` logits. The
    /// layers are [`TextModel::forward_batch`]'s; only the attention step differs.
    pub fn forward_slots(
        &self,
        mut x: Vec<f32>,
        caches: &mut [&mut KvCache],
        pool: &ThreadPool,
    ) -> Result<Vec<f32>, TextError> {
        let c = &self.config;
        let d = c.n_embd;
        let n = caches.len();
        assert_eq!(
            x.len(),
            n * d,
            "forward_slots takes one row of {d} per cache"
        );
        if n == 0 {
            return Ok(Vec::new());
        }
        // Checked for every sequence first, so a refusal stores nothing anywhere.
        if let Some(full) = caches.iter().find(|k| k.len() + 1 > k.n_ctx()) {
            return Err(TextError::ContextFull {
                needed: full.len() + 1,
                n_ctx: full.n_ctx(),
            });
        }
        let mut cpu = Cpu::new(pool);
        let split = self.cpu_layers();
        self.slots(&mut cpu, &self.layers[..split], caches, &mut x)?;
        #[cfg(feature = "vulkan")]
        if let Some(dev) = &self.device {
            let mut gpu = dev.device.session();
            let mut xd = gpu.upload(x)?;
            self.slots(&mut gpu, &dev.layers, caches, &mut xd)?;
            let logits = match &dev.output {
                Some((norm, output)) => gpu.logits(&mut xd, 0..n, norm, c.rms_eps, output)?,
                None => {
                    x = gpu.read(xd)?;
                    cpu.logits(&mut x, 0..n, &self.output_norm, c.rms_eps, &self.output)?
                }
            };
            for cache in caches.iter_mut() {
                cache.advance(1);
            }
            return Ok(logits);
        }
        for cache in caches.iter_mut() {
            cache.advance(1);
        }
        Ok(cpu.logits(&mut x, 0..n, &self.output_norm, c.rms_eps, &self.output)?)
    }

    /// The attention heads.
    pub(super) fn heads(&self) -> Heads {
        let c = &self.config;
        Heads {
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            head_dim: c.head_dim,
        }
    }

    /// `layers` over the rows of `x`, one sequence at `positions` (consecutive), its keys and
    /// values stored in `kv` (one store per layer).
    fn sequence<B: Backend>(
        &self,
        b: &mut B,
        layers: &[Layer<'_, B>],
        kv: &mut [B::Kv],
        x: &mut B::Buf,
        positions: &[usize],
    ) -> Result<(), BackendError> {
        let c = &self.config;
        let (n, past, heads) = (positions.len(), positions[0], self.heads());
        let angles = b.rope_tables(positions, c.rope_dim, c.rope_theta)?;
        self.run_layers(b, layers, x, n, &angles, |b, l, q, k, v, out| {
            b.attend(&mut kv[l], q, k, v, 0..n, past, heads, out)
        })
    }

    /// `layers` over the rows of `x`, row `i` the next token of the sequence in `caches[i]`;
    /// the layers' stores are `B`'s in each cache.
    fn slots<B: KvHome>(
        &self,
        b: &mut B,
        layers: &[Layer<'_, B>],
        caches: &mut [&mut KvCache],
        x: &mut B::Buf,
    ) -> Result<(), BackendError> {
        let c = &self.config;
        let heads = self.heads();
        let positions: Vec<usize> = caches.iter().map(|k| k.len()).collect();
        for cache in caches.iter_mut() {
            cache.stores(b, layers.len())?;
        }
        let angles = b.rope_tables(&positions, c.rope_dim, c.rope_theta)?;
        self.run_layers(b, layers, x, caches.len(), &angles, |b, l, q, k, v, out| {
            for (i, cache) in caches.iter_mut().enumerate() {
                let past = cache.len();
                let kv = &mut cache.stores(b, l + 1)?[l];
                b.attend(kv, q, k, v, i..i + 1, past, heads, out)?;
            }
            Ok(())
        })
    }

    /// The decoder `layers` over the `n` rows of `x` (`[n, d]`), in place, their rotations
    /// from `angles` (one table per row). `attend(b, l, q, k, v, attn)` is layer `l`'s
    /// position-dependent step: store `k` and `v` in the cache(s), attend into `attn`;
    /// everything else is the same for one sequence or many.
    fn run_layers<B: Backend>(
        &self,
        b: &mut B,
        layers: &[Layer<'_, B>],
        x: &mut B::Buf,
        n: usize,
        angles: &B::Rope,
        mut attend: impl FnMut(
            &mut B,
            usize,
            &B::Buf,
            &B::Buf,
            &B::Buf,
            &mut B::Buf,
        ) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        if layers.is_empty() {
            // Every layer is on another device: no activations to allocate here.
            return Ok(());
        }
        let c = &self.config;
        let (d, hd, style) = (c.n_embd, c.head_dim, c.rope_style());
        let heads = self.heads();
        let (q_dim, kv_dim) = (heads.q_dim(), heads.kv_dim());
        let mut h = b.alloc(n * d)?;
        let (mut q, mut k, mut v) = (
            b.alloc(n * q_dim)?,
            b.alloc(n * kv_dim)?,
            b.alloc(n * kv_dim)?,
        );
        let mut attn = b.alloc(n * q_dim)?;
        let (mut gate, mut up) = (b.alloc(n * c.n_ff)?, b.alloc(n * c.n_ff)?);

        for (l, w) in layers.iter().enumerate() {
            // Attention block: h = norm(x); q,k,v = W h (+ b); rotate, store, attend.
            b.copy(x, &mut h)?;
            b.rms_norm(&mut h, &w.attn_norm, c.rms_eps)?;
            b.matmul_group(&w.qkv, &h, n, &mut [&mut q, &mut k, &mut v])?;
            for (buf, bias) in [&mut q, &mut k, &mut v].into_iter().zip(&w.biases) {
                if let Some(bias) = bias {
                    b.add_bias(buf, bias)?;
                }
            }
            b.rope(&mut q, angles, hd, style)?;
            b.rope(&mut k, angles, hd, style)?;
            attend(b, l, &q, &k, &v, &mut attn)?;
            b.matmul(&w.wo, &attn, n, &mut h)?;
            b.add(x, &h)?;

            // Feed-forward block: x += down(silu(gate(norm(x))) * up(norm(x))).
            b.copy(x, &mut h)?;
            b.rms_norm(&mut h, &w.ffn_norm, c.rms_eps)?;
            b.matmul_group(&w.gate_up, &h, n, &mut [&mut gate, &mut up])?;
            b.silu_mul(&mut gate, &up)?;
            b.matmul(&w.down, &gate, n, &mut h)?;
            b.add(x, &h)?;
        }
        Ok(())
    }
}
