//! The decoder forward pass. One function reads top to bottom, embedding to logits; shapes
//! are in the comments (`n` tokens in the batch, `d` = n_embd).

use super::config::{Arch, TextConfig};
use super::error::TextError;
use super::kv_cache::KvCache;
use crate::gguf::keys::{general, llm, tensors};
use crate::gguf::GgufFile;
use crate::kernels::Visible;
use crate::meta_error::{FileKind, MetaError};
use crate::ops::attention::attend_rows;
use crate::ops::matrix::matmul_stacked;
use crate::ops::norm::rms_norm_rows;
use crate::ops::rope::{rope_table, rope_with};
use crate::ops::{add_assign, silu_mul, Matrix};
use crate::threadpool::ThreadPool;

struct Layer<'a> {
    attn_norm: Vec<f32>,
    wq: Matrix<'a>,
    wk: Matrix<'a>,
    wv: Matrix<'a>,
    wo: Matrix<'a>,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    gate: Matrix<'a>,
    up: Matrix<'a>,
    down: Matrix<'a>,
    /// Q, K, V (and gate, up) as one matrix where the file allows: one product instead of three.
    qkv: Option<Matrix<'a>>,
    gate_up: Option<Matrix<'a>>,
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

/// A text model whose weights are views into the memory-mapped GGUF file.
pub struct TextModel<'a> {
    /// The model's hyperparameters.
    pub config: TextConfig,
    token_embd: Matrix<'a>,
    output: Matrix<'a>,
    output_norm: Vec<f32>,
    layers: Vec<Layer<'a>>,
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
            layers.push(Layer {
                qkv: Matrix::stacked(f.bytes(), &[wq, wk, wv]),
                gate_up: Matrix::stacked(f.bytes(), &[gate, up]),
                attn_norm: vector(f, &n("attn_norm.weight"), d)?,
                wq,
                wk,
                wv,
                wo: mat(&n("attn_output.weight"), q_dim, d)?,
                bq: bias("attn_q.bias", q_dim)?,
                bk: bias("attn_k.bias", kv_dim)?,
                bv: bias("attn_v.bias", kv_dim)?,
                ffn_norm: vector(f, &n("ffn_norm.weight"), d)?,
                gate,
                up,
                down: mat(&n("ffn_down.weight"), c.n_ff, d)?,
            });
        }
        Ok(TextModel {
            output_norm: vector(f, tensors::OUTPUT_NORM, d)?,
            config: c,
            token_embd,
            output,
            layers,
        })
    }

    /// A KV cache sized for this model; `n_ctx` must be one the caller knows is small (tests,
    /// measured runs). A context from a user goes through [`TextModel::try_new_cache`].
    pub fn new_cache(&self, n_ctx: usize, ty: super::KvType) -> KvCache {
        let c = &self.config;
        KvCache::new(c.n_layer, n_ctx, c.n_head_kv * c.head_dim, ty)
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
            Some(b) if limit.is_none_or(|l| b <= l) => Ok(self.new_cache(n_ctx, ty)),
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
        mut x: Vec<f32>,
        cache: &mut KvCache,
        which: Option<Logits>,
        pool: &ThreadPool,
    ) -> Result<Vec<f32>, TextError> {
        let c = &self.config;
        let (d, hd, th) = (c.n_embd, c.head_dim, pool);
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
        let (q_dim, kv_dim) = (c.n_head * hd, c.n_head_kv * hd);
        // The rotation angles depend only on the position: once per token for all layers.
        let angles: Vec<_> = (0..n)
            .map(|t| rope_table(c.rope_dim, past + t, c.rope_theta))
            .collect();
        self.run_layers(&mut x, n, th, |l, q, k, v, attn| {
            for (t, table) in angles.iter().enumerate() {
                rope_with(
                    &mut q[t * q_dim..(t + 1) * q_dim],
                    hd,
                    table,
                    c.rope_style(),
                );
                rope_with(
                    &mut k[t * kv_dim..(t + 1) * kv_dim],
                    hd,
                    table,
                    c.rope_style(),
                );
            }
            cache.store(l, past, k, v);
            let (kc, vc) = cache.view(l, past + n);
            // Token t sees positions 0..=past+t.
            attend_rows(
                th,
                q,
                kc,
                vc,
                n,
                past + n,
                Visible::Causal { first: past },
                c.n_head,
                c.n_head_kv,
                hd,
                attn,
            );
        });
        cache.advance(n);

        let rows = match which {
            None => return Ok(Vec::new()),
            Some(Logits::Last) => &mut x[(n - 1) * d..],
            Some(Logits::All) => &mut x[..],
        };
        rms_norm_rows(th, rows, &self.output_norm, c.rms_eps);
        let m = rows.len() / d;
        let mut logits = vec![0f32; m * c.n_vocab];
        self.output.matmul(rows, m, &mut logits, th);
        Ok(logits)
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
        let (d, hd, th) = (c.n_embd, c.head_dim, pool);
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
        let (q_dim, kv_dim) = (c.n_head * hd, c.n_head_kv * hd);
        let angles: Vec<_> = caches
            .iter()
            .map(|k| rope_table(c.rope_dim, k.len(), c.rope_theta))
            .collect();
        self.run_layers(&mut x, n, th, |l, q, k, v, attn| {
            for (i, (cache, table)) in caches.iter_mut().zip(&angles).enumerate() {
                let (qi, ki) = (i * q_dim..(i + 1) * q_dim, i * kv_dim..(i + 1) * kv_dim);
                rope_with(&mut q[qi.clone()], hd, table, c.rope_style());
                rope_with(&mut k[ki.clone()], hd, table, c.rope_style());
                let past = cache.len();
                cache.store(l, past, &k[ki.clone()], &v[ki]);
                let (kc, vc) = cache.view(l, past + 1);
                attend_rows(
                    th,
                    &q[qi.clone()],
                    kc,
                    vc,
                    1,
                    past + 1,
                    Visible::Causal { first: past },
                    c.n_head,
                    c.n_head_kv,
                    hd,
                    &mut attn[qi],
                );
            }
        });
        for cache in caches.iter_mut() {
            cache.advance(1);
        }
        rms_norm_rows(th, &mut x, &self.output_norm, c.rms_eps);
        let mut logits = vec![0f32; n * c.n_vocab];
        self.output.matmul(&x, n, &mut logits, th);
        Ok(logits)
    }

    /// The decoder layers over the `n` rows of `x` (`[n, d]`), in place. `attend(l, q, k, v,
    /// attn)` is layer `l`'s position-dependent step: rotate `q` and `k`, store `k` and `v` in
    /// the cache(s), attend into `attn`; everything else is the same for one sequence or many.
    fn run_layers(
        &self,
        x: &mut [f32],
        n: usize,
        th: &ThreadPool,
        mut attend: impl FnMut(usize, &mut [f32], &mut [f32], &[f32], &mut [f32]),
    ) {
        let c = &self.config;
        let (d, hd) = (c.n_embd, c.head_dim);
        let (q_dim, kv_dim) = (c.n_head * hd, c.n_head_kv * hd);
        let mut h = vec![0f32; n * d];
        let (mut q, mut k, mut v) = (
            vec![0f32; n * q_dim],
            vec![0f32; n * kv_dim],
            vec![0f32; n * kv_dim],
        );
        let mut attn = vec![0f32; n * q_dim];
        let mut stacked = Vec::new();
        let (mut gate, mut up) = (vec![0f32; n * c.n_ff], vec![0f32; n * c.n_ff]);

        for (l, w) in self.layers.iter().enumerate() {
            // Attention block: h = norm(x); q,k,v = W h (+ b); rotate, store, attend.
            h.copy_from_slice(x);
            rms_norm_rows(th, &mut h, &w.attn_norm, c.rms_eps);
            matmul_stacked(
                w.qkv.as_ref(),
                &[&w.wq, &w.wk, &w.wv],
                &h,
                n,
                &mut [&mut q, &mut k, &mut v],
                th,
                &mut stacked,
            );
            for (buf, b, width) in [
                (&mut q, &w.bq, q_dim),
                (&mut k, &w.bk, kv_dim),
                (&mut v, &w.bv, kv_dim),
            ] {
                if let Some(b) = b {
                    for row in buf.chunks_exact_mut(width) {
                        add_assign(row, b);
                    }
                }
            }
            attend(l, &mut q, &mut k, &v, &mut attn);
            w.wo.matmul(&attn, n, &mut h, th);
            add_assign(x, &h);

            // Feed-forward block: x += down(silu(gate(norm(x))) * up(norm(x))).
            h.copy_from_slice(x);
            rms_norm_rows(th, &mut h, &w.ffn_norm, c.rms_eps);
            matmul_stacked(
                w.gate_up.as_ref(),
                &[&w.gate, &w.up],
                &h,
                n,
                &mut [&mut gate, &mut up],
                th,
                &mut stacked,
            );
            silu_mul(&mut gate, &up, th);
            w.down.matmul(&gate, n, &mut h, th);
            add_assign(x, &h);
        }
    }
}
