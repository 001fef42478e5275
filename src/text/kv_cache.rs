//! The key/value cache: every past position's keys and values, per layer, in F16 (the default,
//! as llama.cpp) or F32 (exact, for checking against the reference).

use half::f16;

use crate::kernels::KvRef;

/// Element type of the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvType {
    /// Half the memory; rounding error about 5e-4 relative per stored value.
    F16,
    /// Exact.
    F32,
}

enum Store {
    F16(Vec<f16>),
    F32(Vec<f32>),
}

/// Keys and values of up to `n_ctx` positions for each layer.
pub struct KvCache {
    n_ctx: usize,
    width: usize,
    k: Vec<Store>,
    v: Vec<Store>,
    len: usize,
}

impl KvCache {
    /// A cache of `n_ctx` positions of `width` (= kv heads x head dim) values per layer.
    pub fn new(n_layer: usize, n_ctx: usize, width: usize, ty: KvType) -> KvCache {
        let make = || match ty {
            KvType::F16 => Store::F16(vec![f16::ZERO; n_ctx * width]),
            KvType::F32 => Store::F32(vec![0.0; n_ctx * width]),
        };
        KvCache {
            n_ctx,
            width,
            k: (0..n_layer).map(|_| make()).collect(),
            v: (0..n_layer).map(|_| make()).collect(),
            len: 0,
        }
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Capacity in positions.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Forgets every position (a new conversation).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Forgets every position from `len` on (taking back a turn); later stores overwrite them.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Marks `n` more positions as filled (after every layer stored them).
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Stores rows of keys and values for layer `l` starting at position `pos`.
    pub(crate) fn store(&mut self, l: usize, pos: usize, k: &[f32], v: &[f32]) {
        let at = pos * self.width;
        for (store, src) in [(&mut self.k[l], k), (&mut self.v[l], v)] {
            match store {
                Store::F16(d) => {
                    for (o, x) in d[at..at + src.len()].iter_mut().zip(src) {
                        *o = f16::from_f32(*x);
                    }
                }
                Store::F32(d) => d[at..at + src.len()].copy_from_slice(src),
            }
        }
    }

    /// The first `n` positions of layer `l`'s keys and values, in place.
    pub(crate) fn view(&self, l: usize, n: usize) -> (KvRef<'_>, KvRef<'_>) {
        let end = n * self.width;
        (view(&self.k[l], end), view(&self.v[l], end))
    }
}

fn view(store: &Store, end: usize) -> KvRef<'_> {
    match store {
        Store::F16(d) => KvRef::F16(bytemuck::cast_slice(&d[..end])),
        Store::F32(d) => KvRef::F32(&d[..end]),
    }
}
