//! The key/value cache: every past position's keys and values, per layer, in F16 (the default,
//! as llama.cpp) or F32 (exact, for checking against the reference). Each layer's store lives
//! on the device that runs the layer.

use crate::backend::cpu::CpuKv;
use crate::backend::{Backend, BackendError, Cpu};

/// Element type of the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvType {
    /// Half the memory; rounding error about 5e-4 relative per stored value.
    F16,
    /// Exact.
    F32,
}

/// Keys and values of up to `n_ctx` positions for each layer.
pub struct KvCache {
    n_ctx: usize,
    width: usize,
    ty: KvType,
    len: usize,
    /// The stores of the layers the CPU runs, first layer first.
    cpu: Vec<CpuKv>,
    /// The stores of the layers a Vulkan device runs, made on first use.
    #[cfg(feature = "vulkan")]
    vulkan: Vec<<crate::backend::vulkan::Vulkan as Backend>::Kv>,
}

impl KvCache {
    /// A cache of `n_ctx` positions of `width` (= kv heads x head dim) values for each of
    /// `n_layer` layers run on the CPU.
    pub fn new(n_layer: usize, n_ctx: usize, width: usize, ty: KvType) -> KvCache {
        KvCache {
            n_ctx,
            width,
            ty,
            len: 0,
            cpu: (0..n_layer).map(|_| CpuKv::new(n_ctx, width, ty)).collect(),
            #[cfg(feature = "vulkan")]
            vulkan: Vec::new(),
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

    /// The element type asked for.
    pub fn kv_type(&self) -> KvType {
        self.ty
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

    /// The stores of backend `B`'s first `n_layer` layers, made on `b` where missing.
    pub(crate) fn stores<B: KvHome>(
        &mut self,
        b: &B,
        n_layer: usize,
    ) -> Result<&mut [B::Kv], BackendError> {
        let (n_ctx, width, ty) = (self.n_ctx, self.width, self.ty);
        let stores = B::home(self);
        while stores.len() < n_layer {
            stores.push(b.new_kv(n_ctx, width, ty)?);
        }
        Ok(&mut stores[..n_layer])
    }
}

/// Where a backend's layer stores sit in a [`KvCache`].
pub(crate) trait KvHome: Backend {
    /// The backend's stores in `c`.
    fn home(c: &mut KvCache) -> &mut Vec<Self::Kv>;
}

impl KvHome for Cpu<'_> {
    fn home(c: &mut KvCache) -> &mut Vec<CpuKv> {
        &mut c.cpu
    }
}

#[cfg(feature = "vulkan")]
impl KvHome for crate::backend::vulkan::Vulkan {
    fn home(c: &mut KvCache) -> &mut Vec<Self::Kv> {
        &mut c.vulkan
    }
}
