//! The seam between the forward passes and the device they run on. A pass is written once,
//! generic over [`Backend`]; a device implements it: [`Cpu`] over the `ops::` functions (the
//! types are the CPU's own, `Vec<f32>` and `Matrix` views, so monomorphized code costs
//! nothing), [`Vulkan`](vulkan::Vulkan) over device buffers, its ops recorded into one command
//! buffer and submitted when a result is read back.
//!
//! Adding an op: a method here (shapes in its doc), the CPU's in `cpu.rs` calling `ops::`, the
//! device's in its file recording the shader; then the forward pass calls it.

pub mod cpu;
pub mod vision;
#[cfg(feature = "vulkan")]
pub mod vulkan;

use std::ops::Range;

pub use cpu::Cpu;

use crate::ops::rope::RopeStyle;
use crate::ops::Matrix;
use crate::text::KvType;

/// Why a backend could not run an op or hold a buffer. The CPU never fails; a device can run
/// out of memory or lack a variant.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The Vulkan device failed or refused.
    #[cfg(feature = "vulkan")]
    #[error(transparent)]
    Vulkan(#[from] crate::vulkan::VulkanError),
    /// Something this device has no kernel for.
    #[error("{device} cannot {what}")]
    Unsupported {
        /// The device.
        device: &'static str,
        /// What it cannot do, and what to do instead.
        what: String,
    },
}

/// Attention's heads: `n_head` query heads over `n_head_kv` key/value heads, `head_dim` wide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heads {
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (divides `n_head`).
    pub n_head_kv: usize,
    /// Values per head.
    pub head_dim: usize,
}

impl Heads {
    /// Values in a row of queries.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Values in a row of keys (or values).
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}

/// A device the forward passes run on. Buffers hold rows of f32 values; every op says the
/// width of its rows or takes it from the weights. Ops may run later than they are called (a
/// device records them); [`Backend::read`] returns only after everything before it has run.
pub trait Backend {
    /// Activations: `n` rows of f32 values on the device.
    type Buf;
    /// A weight matrix uploaded once.
    type Weight<'w>;
    /// Matrices applied to the same input (Q, K, V; gate, up), one product where the device
    /// can.
    type Group<'w>;
    /// An f32 vector uploaded once (norm weights, biases).
    type Vector;
    /// One layer's keys and values for up to `n_ctx` positions.
    type Kv;
    /// The rotation angles of a batch's positions, made once for every layer.
    type Rope;

    /// The device's weight matrix for `m` (a view into the model file).
    fn upload_matrix<'w>(&self, m: &Matrix<'w>) -> Result<Self::Weight<'w>, BackendError>;
    /// The device's group for `parts`; `stacked` is them as one matrix where the file has
    /// them back to back.
    fn upload_group<'w>(
        &self,
        parts: &[Matrix<'w>],
        stacked: Option<Matrix<'w>>,
    ) -> Result<Self::Group<'w>, BackendError>;
    /// The device's copy of `v`.
    fn upload_vector(&self, v: &[f32]) -> Result<Self::Vector, BackendError>;
    /// Whether [`Backend::attend`] takes `heads`; checked once at load, so a model the device
    /// cannot run is refused there rather than at its first token.
    fn check_heads(&self, heads: Heads) -> Result<(), BackendError>;
    /// A key/value store of `n_ctx` positions of `width` values.
    fn new_kv(&self, n_ctx: usize, width: usize, ty: KvType) -> Result<Self::Kv, BackendError>;

    /// `x` on the device.
    fn upload(&mut self, x: Vec<f32>) -> Result<Self::Buf, BackendError>;
    /// A buffer of `len` values (contents unspecified).
    fn alloc(&mut self, len: usize) -> Result<Self::Buf, BackendError>;
    /// `x` back on the host, after all work so far has run.
    fn read(&mut self, x: Self::Buf) -> Result<Vec<f32>, BackendError>;
    /// The rotation tables of `positions` (one per row), `rot_dim` dimensions, base `theta`.
    fn rope_tables(
        &mut self,
        positions: &[usize],
        rot_dim: usize,
        theta: f32,
    ) -> Result<Self::Rope, BackendError>;

    /// `dst = src` (same length).
    fn copy(&mut self, src: &Self::Buf, dst: &mut Self::Buf) -> Result<(), BackendError>;
    /// RMSNorm of each row of `x` (rows of `w`'s length) times `w`, in place.
    fn rms_norm(
        &mut self,
        x: &mut Self::Buf,
        w: &Self::Vector,
        eps: f32,
    ) -> Result<(), BackendError>;
    /// `out[t] = W x[t]` for the `n` rows of `x`.
    fn matmul(
        &mut self,
        w: &Self::Weight<'_>,
        x: &Self::Buf,
        n: usize,
        out: &mut Self::Buf,
    ) -> Result<(), BackendError>;
    /// `outs[i][t] = W_i x[t]` for each matrix of the group.
    fn matmul_group(
        &mut self,
        g: &Self::Group<'_>,
        x: &Self::Buf,
        n: usize,
        outs: &mut [&mut Self::Buf],
    ) -> Result<(), BackendError>;
    /// Adds `b` to each row of `x` (rows of `b`'s length).
    fn add_bias(&mut self, x: &mut Self::Buf, b: &Self::Vector) -> Result<(), BackendError>;
    /// Rotates each `head_dim`-wide head of row `t` of `x` by table `t` of `r`, in place.
    fn rope(
        &mut self,
        x: &mut Self::Buf,
        r: &Self::Rope,
        head_dim: usize,
        style: RopeStyle,
    ) -> Result<(), BackendError>;
    /// Stores rows `rows` of `k` and `v` in `kv` at positions `past..`, then attends rows
    /// `rows` of `q` causally over positions `0..=past + r` into the same rows of `out`.
    #[allow(clippy::too_many_arguments)]
    fn attend(
        &mut self,
        kv: &mut Self::Kv,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        rows: Range<usize>,
        past: usize,
        heads: Heads,
        out: &mut Self::Buf,
    ) -> Result<(), BackendError>;
    /// `gate = silu(gate) * up`.
    fn silu_mul(&mut self, gate: &mut Self::Buf, up: &Self::Buf) -> Result<(), BackendError>;
    /// `x += y`.
    fn add(&mut self, x: &mut Self::Buf, y: &Self::Buf) -> Result<(), BackendError>;
    /// The logits of rows `rows` of `x` (rows of `norm`'s length): RMSNorm with `norm` (in
    /// place), then `w`; read back, `[rows.len(), w.rows]`.
    fn logits(
        &mut self,
        x: &mut Self::Buf,
        rows: Range<usize>,
        norm: &Self::Vector,
        eps: f32,
        w: &Self::Weight<'_>,
    ) -> Result<Vec<f32>, BackendError>;
}
