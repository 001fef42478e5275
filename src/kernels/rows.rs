//! Kernels over one row of activations at a time: RMSNorm, LayerNorm, rotary embeddings and the
//! gated activations.

use super::{dispatch, Isa, IsaKind};
use crate::ffi;

/// An activation of the C kernel: sigmoid-gated, `x * sigmoid(z(x))`, or the exact GELU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// SiLU, `z = x`.
    Silu,
    /// CLIP's quick_gelu, `z = 1.702 x`.
    QuickGelu,
    /// GELU's tanh approximation, `z = 2 sqrt(2/pi) (x + 0.044715 x^3)`.
    GeluTanh,
    /// The exact GELU, `x * Phi(x)` (no `mul`).
    GeluErf,
}

/// `x = x * sigmoid(z(x))`, times `mul` elementwise when given (SwiGLU), with `isa`.
pub fn activation_with(isa: Isa, gate: Gate, x: &mut [f32], mul: Option<&[f32]>) {
    if let Some(m) = mul {
        assert_eq!(m.len(), x.len(), "activation: lengths");
    }
    let kind = match gate {
        Gate::Silu => ffi::LE_ACT_SILU,
        Gate::QuickGelu => ffi::LE_ACT_QUICK_GELU,
        Gate::GeluTanh => ffi::LE_ACT_GELU_TANH,
        Gate::GeluErf => {
            assert!(mul.is_none(), "activation: the exact GELU takes no mul");
            ffi::LE_ACT_GELU_ERF
        }
    } as i32;
    let (p, m, n) = (
        x.as_mut_ptr(),
        mul.map_or(std::ptr::null(), |m| m.as_ptr()),
        x.len() as i32,
    );
    // SAFETY: `x` and `mul` (when given) hold n values (asserted); a SIMD `isa` only if detected.
    unsafe {
        dispatch!(isa.kind(), (kind, p, m, n) {
            "x86_64" IsaKind::Avx2 => ffi::le_activation_avx2,
            "aarch64" IsaKind::Neon | IsaKind::NeonDotprod => ffi::le_activation_neon,
            _ => ffi::le_activation_scalar,
        })
    }
}

/// RMSNorm of one row `x` in place with gains `w` (same length), with `isa`.
pub fn rms_norm_with(isa: Isa, x: &mut [f32], w: &[f32], eps: f32) {
    assert_eq!(x.len(), w.len(), "rms_norm: lengths");
    let (p, g, n) = (x.as_mut_ptr(), w.as_ptr(), x.len() as i32);
    // SAFETY: both slices hold n values (asserted); a SIMD `isa` exists only where detected.
    unsafe {
        dispatch!(isa.kind(), (p, g, n, eps) {
            "x86_64" IsaKind::Avx2 => ffi::le_rms_norm_avx2,
            "aarch64" IsaKind::Neon | IsaKind::NeonDotprod => ffi::le_rms_norm_neon,
            _ => ffi::le_rms_norm_scalar,
        })
    }
}

/// LayerNorm of one row `x` in place with gains `w` and biases `b` (same length), with `isa`.
pub fn layer_norm_with(isa: Isa, x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    assert!(
        x.len() == w.len() && x.len() == b.len(),
        "layer_norm: lengths"
    );
    let (p, g, c, n) = (x.as_mut_ptr(), w.as_ptr(), b.as_ptr(), x.len() as i32);
    // SAFETY: the three slices hold n values (asserted); a SIMD `isa` only if detected.
    unsafe {
        dispatch!(isa.kind(), (p, g, c, n, eps) {
            "x86_64" IsaKind::Avx2 => ffi::le_layer_norm_avx2,
            "aarch64" IsaKind::Neon | IsaKind::NeonDotprod => ffi::le_layer_norm_neon,
            _ => ffi::le_layer_norm_scalar,
        })
    }
}

/// Rotates each `head_dim`-wide head of `x` by the angles with cosines `cos` and sines `sin`
/// (`cos.len()` pairs of dimensions; NeoX halves or adjacent pairs), with `isa`. The rotary
/// embedding's arithmetic only: `ops::rope` makes the tables from a position.
pub fn rotate_heads(
    isa: Isa,
    x: &mut [f32],
    head_dim: usize,
    cos: &[f32],
    sin: &[f32],
    neox: bool,
) {
    assert_eq!(cos.len(), sin.len(), "rope: table lengths");
    assert!(
        head_dim > 0 && 2 * cos.len() <= head_dim && x.len().is_multiple_of(head_dim),
        "rope: shapes"
    );
    let (hd, nh, half) = (
        head_dim as i32,
        (x.len() / head_dim) as i32,
        cos.len() as i32,
    );
    let (p, c, s, nx) = (x.as_mut_ptr(), cos.as_ptr(), sin.as_ptr(), i32::from(neox));
    // SAFETY: x holds nh heads of hd values, the tables half values, 2 half <= hd (asserted); a
    // SIMD `isa` exists only where detected.
    unsafe {
        dispatch!(isa.kind(), (p, hd, nh, c, s, half, nx) {
            "x86_64" IsaKind::Avx2 => ffi::le_rope_avx2,
            "aarch64" IsaKind::Neon | IsaKind::NeonDotprod => ffi::le_rope_neon,
            _ => ffi::le_rope_scalar,
        })
    }
}
