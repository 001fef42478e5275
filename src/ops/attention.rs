//! Scaled dot-product attention over a key/value cache, with grouped-query heads.

use crate::kernels::{self, FloatIsa, HeadRows, KvRef, Visible};
use crate::threadpool::{Disjoint, ThreadPool};

/// Attention for one query token: `q` holds `n_head` heads of `head_dim`; `k` and `v` hold
/// `n_kv` positions of `n_kv_head` heads each (`n_kv * n_kv_head * head_dim`). Query head h
/// reads key/value head `h / (n_head / n_kv_head)`. The softmax is computed online in one
/// pass (running max and sum), so no score row is stored. Result into `out` (like `q`).
#[allow(clippy::too_many_arguments)]
pub fn attend(
    q: &[f32],
    k: KvRef<'_>,
    v: KvRef<'_>,
    n_kv: usize,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    out: &mut [f32],
) {
    let group = n_head / n_kv_head;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let stride = n_kv_head * head_dim;
    let isa = kernels::Cpu::get().isa();
    for h in 0..n_head {
        let at = (h / group) * head_dim;
        kernels::attend_head(
            isa,
            &q[h * head_dim..(h + 1) * head_dim],
            k.skip(at),
            v.skip(at),
            n_kv,
            stride,
            scale,
            &mut out[h * head_dim..(h + 1) * head_dim],
        );
    }
}

/// [`attend`] for `n_rows` query rows (each `n_head * head_dim` wide in `q` and `out`) against
/// `n_kv` positions, split over the pool's threads as (head, block of rows) tasks handed out on
/// demand (under a causal mask the last rows cost the most).
#[allow(clippy::too_many_arguments)]
pub fn attend_rows(
    pool: &ThreadPool,
    q: &[f32],
    k: KvRef<'_>,
    v: KvRef<'_>,
    n_rows: usize,
    n_kv: usize,
    visible: Visible,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    out: &mut [f32],
) {
    let w = n_head * head_dim;
    assert_eq!(q.len(), n_rows * w, "attend_rows: query length");
    assert_eq!(out.len(), n_rows * w, "attend_rows: output length");
    if n_rows == 0 {
        return;
    }
    let heads = Heads {
        q,
        k,
        v,
        n_kv,
        n_head,
        n_kv_head,
        head_dim,
        group: n_head / n_kv_head,
        scale: 1.0 / (head_dim as f32).sqrt(),
        isa: kernels::Cpu::get().float(),
    };
    if n_rows == 1 && heads.group > 1 {
        heads.decode_grouped(pool, visible, out);
    } else {
        heads.row_blocks(pool, n_rows, visible, out);
    }
}

/// The operands of [`attend_rows`] that every task shares.
struct Heads<'a> {
    q: &'a [f32],
    k: KvRef<'a>,
    v: KvRef<'a>,
    n_kv: usize,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    /// Query heads a key/value head.
    group: usize,
    scale: f32,
    isa: FloatIsa,
}

impl Heads<'_> {
    /// Elements from one position's keys to the next.
    fn stride(&self) -> usize {
        self.n_kv_head * self.head_dim
    }

    /// Decode with grouped heads: the query heads of one key/value head are rows of one call
    /// (q_stride head_dim), so its keys and values are read once for the group, as a tile,
    /// instead of once per query head by the one-row kernel. Groups are split only as far as
    /// the threads need tasks.
    fn decode_grouped(&self, pool: &ThreadPool, visible: Visible, out: &mut [f32]) {
        let (group, hd, q) = (self.group, self.head_dim, self.q);
        let seen = match visible {
            Visible::All => self.n_kv,
            Visible::Causal { first } => first + 1,
        };
        assert!(seen <= self.n_kv, "attend_rows: causal row past the keys");
        let splits = pool.threads().div_ceil(self.n_kv_head).clamp(1, group);
        let per = group.div_ceil(splits);
        let base = Disjoint::new(out);
        pool.for_chunks(self.n_kv_head * splits, 1, &|tasks| {
            with_attention_scratch(|scratch| {
                for task in tasks {
                    let (g, part) = (task / splits, task % splits);
                    let h0 = g * group + part * per;
                    let nq = per.min((g + 1) * group - h0);
                    if nq == 0 {
                        continue;
                    }
                    let first = h0 * hd;
                    // SAFETY: `out` holds n_head * hd values; this task alone writes heads
                    // h0..h0 + nq (tasks are disjoint), and the pool joins before returning.
                    let o =
                        unsafe { std::slice::from_raw_parts_mut(base.get().add(first), nq * hd) };
                    let rows = HeadRows {
                        nq,
                        hd,
                        q: &q[first..first + nq * hd],
                        q_stride: hd,
                        k: self.k.skip(g * hd),
                        v: self.v.skip(g * hd),
                        stride: self.stride(),
                        n_kv: seen,
                        visible: Visible::All,
                        scale: self.scale,
                    };
                    kernels::attend_head_rows(self.isa, &rows, o, hd, scratch);
                }
            })
        });
    }

    /// Every head of `n_rows` query rows, as (head, block of rows) tasks.
    fn row_blocks(&self, pool: &ThreadPool, n_rows: usize, visible: Visible, out: &mut [f32]) {
        let (hd, w) = (self.head_dim, self.n_head * self.head_dim);
        // Query rows a task: each task packs (transposes, converts) every key and value its
        // rows see, so larger tasks pack less often. Under a causal mask 128 leaves dozens of
        // tasks of unequal cost to share out (a 512-token prompt: 4 blocks x 14 heads); without
        // one (a ViT tile) every row costs the same, so blocks only need to make four tasks a
        // thread (CLIP-L's 577 rows x 16 heads run as 16 whole heads on two threads, each head
        // packed once).
        let rows_per_task = match visible {
            Visible::Causal { .. } => 128,
            Visible::All => {
                let blocks = (4 * pool.threads()).div_ceil(self.n_head.max(1)).max(1);
                // Whole tiles of eight rows (the AVX-512 tile; two of the AVX2 and NEON ones).
                n_rows.div_ceil(blocks).next_multiple_of(8)
            }
        };
        let blocks = n_rows.div_ceil(rows_per_task);
        let base = Disjoint::new(out);
        pool.for_chunks(self.n_head * blocks, 1, &|tasks| {
            with_attention_scratch(|scratch| {
                for task in tasks {
                    let (h, r0) = (task / blocks, task % blocks * rows_per_task);
                    let nq = rows_per_task.min(n_rows - r0);
                    let at = (h / self.group) * hd;
                    let first = r0 * w + h * hd;
                    let vis = match visible {
                        Visible::All => Visible::All,
                        Visible::Causal { first } => Visible::Causal { first: first + r0 },
                    };
                    let rows = HeadRows {
                        nq,
                        hd,
                        q: &self.q[first..],
                        q_stride: w,
                        k: self.k.skip(at),
                        v: self.v.skip(at),
                        stride: self.stride(),
                        n_kv: self.n_kv,
                        visible: vis,
                        scale: self.scale,
                    };
                    let o = base.get().wrapping_add(first);
                    // SAFETY: `out` holds n_rows * w values, so head h's columns of rows
                    // r0..r0 + nq (at first + i * w + j, j < hd) lie in it; this task alone
                    // writes them (tasks are disjoint), and the pool joins before `out`'s
                    // borrow ends.
                    unsafe { kernels::attend_head_rows_to(self.isa, &rows, o, w, scratch) };
                }
            })
        });
    }
}

thread_local! {
    static ATTENTION_SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's packed key/value scratch, kept between calls so that no call pays
/// for zeroing one (megabytes a task at a cache of thousands of positions).
fn with_attention_scratch<R>(f: impl FnOnce(&mut Vec<f32>) -> R) -> R {
    ATTENTION_SCRATCH.with(|cell| f(&mut cell.borrow_mut()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouped_decode_rows_equal_one_head_at_a_time() {
        // One query row, grouped heads: attend_rows runs each key/value head's query heads as
        // one call (split over threads); attend runs the one-row kernel per head.
        let f = |i: usize| ((i * 7919) % 97) as f32 / 30.0 - 1.5;
        for (n_head, n_kv_head, hd) in [(14, 2, 64), (8, 2, 20), (6, 3, 72), (4, 4, 8)] {
            for n_kv in [1, 5, 33, 700] {
                let q: Vec<f32> = (0..n_head * hd).map(|i| f(i + 3)).collect();
                let kv_len = n_kv * n_kv_head * hd;
                let k: Vec<u16> = (0..kv_len)
                    .map(|i| half::f16::from_f32(f(i + 11)).to_bits())
                    .collect();
                let v: Vec<u16> = (0..kv_len)
                    .map(|i| half::f16::from_f32(f(i + 23)).to_bits())
                    .collect();
                let mut want = vec![0f32; n_head * hd];
                let (kr, vr) = (KvRef::F16(&k), KvRef::F16(&v));
                attend(&q, kr, vr, n_kv, n_head, n_kv_head, hd, &mut want);
                for threads in [1, 2, 3, 5] {
                    let pool = crate::threadpool::ThreadPool::new(threads);
                    for vis in [Visible::All, Visible::Causal { first: n_kv - 1 }] {
                        let mut got = vec![f32::NAN; n_head * hd];
                        attend_rows(
                            &pool, &q, kr, vr, 1, n_kv, vis, n_head, n_kv_head, hd, &mut got,
                        );
                        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                            assert!(
                                (g - w).abs() < 1e-5,
                                "heads {n_head}/{n_kv_head} hd {hd} n_kv {n_kv} threads \
                                 {threads}: {i}: {g} vs {w}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn matches_two_pass_softmax_with_gqa() {
        let (n_head, n_kv_head, hd, n_kv) = (4, 2, 4, 5);
        let f = |i: usize| ((i * 7919) % 97) as f32 / 30.0 - 1.5;
        let q: Vec<f32> = (0..n_head * hd).map(f).collect();
        let k: Vec<f32> = (0..n_kv * n_kv_head * hd).map(|i| f(i + 11)).collect();
        let v: Vec<f32> = (0..n_kv * n_kv_head * hd).map(|i| f(i + 23)).collect();
        let mut out = vec![0f32; n_head * hd];
        attend(
            &q,
            KvRef::F32(&k),
            KvRef::F32(&v),
            n_kv,
            n_head,
            n_kv_head,
            hd,
            &mut out,
        );
        for h in 0..n_head {
            let kvh = h / 2;
            let scores: Vec<f64> = (0..n_kv)
                .map(|p| {
                    (0..hd)
                        .map(|d| {
                            f64::from(q[h * hd + d]) * f64::from(k[(p * n_kv_head + kvh) * hd + d])
                        })
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for d in 0..hd {
                let want: f64 = (0..n_kv)
                    .map(|p| e[p] / z * f64::from(v[(p * n_kv_head + kvh) * hd + d]))
                    .sum();
                assert!((f64::from(out[h * hd + d]) - want).abs() < 1e-5);
            }
        }
    }
}
