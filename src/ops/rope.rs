//! Rotary position embeddings, in ggml's two layouts.

/// Which dimensions are rotated together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (2i, 2i+1): llama.cpp's LLaMA layout, whose converter permutes the
    /// Q/K rows of Hugging Face checkpoints into it.
    Normal,
    /// Halves (i, i + d/2): GPT-NeoX / Hugging Face `rotate_half`, used as-is for Qwen2.
    Neox,
}

/// The rotation angles' cosines and sines for one position: `rot_dim / 2` of each, computed once
/// and shared by every head and layer (they depend only on the position).
#[derive(Clone, Debug, PartialEq)]
pub struct RopeTable {
    /// `cos(pos * inv_freq_i)`.
    pub cos: Vec<f32>,
    /// `sin(pos * inv_freq_i)`.
    pub sin: Vec<f32>,
}

/// The [`RopeTable`] of position `pos`.
pub fn rope_table(rot_dim: usize, pos: usize, theta: f32) -> RopeTable {
    let (sin, cos) = (0..rot_dim / 2)
        .map(|i| {
            // Same expression as transformers' inv_freq (computed in f32 there too).
            let inv_freq = 1.0 / theta.powf((2 * i) as f32 / rot_dim as f32);
            (pos as f32 * inv_freq).sin_cos()
        })
        .unzip();
    RopeTable { cos, sin }
}

/// Rotates each `head_dim`-wide head of `x` (one token's heads, back to back) by the angles of
/// `table` ([`rope_table`] of the token's position), in the C kernel. Only the first
/// `2 * table.cos.len()` dimensions of a head rotate.
pub fn rope_with(x: &mut [f32], head_dim: usize, table: &RopeTable, style: RopeStyle) {
    crate::kernels::rotate_heads(
        crate::kernels::Cpu::get().isa(),
        x,
        head_dim,
        &table.cos,
        &table.sin,
        style == RopeStyle::Neox,
    );
}

/// Rotates each `head_dim`-wide head of `x` (one token's heads, back to back) for position
/// `pos`. Only the first `rot_dim` dimensions of a head rotate.
pub fn rope(
    x: &mut [f32],
    head_dim: usize,
    rot_dim: usize,
    pos: usize,
    theta: f32,
    style: RopeStyle,
) {
    rope_with(x, head_dim, &rope_table(rot_dim, pos, theta), style);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_norm_and_position_zero_is_identity() {
        let orig: Vec<f32> = (0..16).map(|i| (i as f32 * 0.37).sin()).collect();
        for style in [RopeStyle::Normal, RopeStyle::Neox] {
            let mut x = orig.clone();
            rope(&mut x, 8, 8, 0, 10000.0, style);
            assert_eq!(x, orig);
            rope(&mut x, 8, 8, 17, 10000.0, style);
            let n0: f32 = orig.iter().map(|v| v * v).sum();
            let n1: f32 = x.iter().map(|v| v * v).sum();
            assert!((n0 - n1).abs() < 1e-4);
            assert_ne!(x, orig);
        }
    }

    #[test]
    fn normal_style_on_permuted_equals_neox_on_original() {
        // llama.cpp's converter permutes each head's rows so that HF's halves become pairs.
        let d = 8;
        let orig: Vec<f32> = (0..d).map(|i| i as f32 + 1.0).collect();
        let perm: Vec<f32> = (0..d).map(|j| orig[(j % 2) * d / 2 + j / 2]).collect();
        let (mut a, mut b) = (orig.clone(), perm.clone());
        rope(&mut a, d, d, 5, 10000.0, RopeStyle::Neox);
        rope(&mut b, d, d, 5, 10000.0, RopeStyle::Normal);
        for j in 0..d {
            assert!((b[j] - a[(j % 2) * d / 2 + j / 2]).abs() < 1e-5);
        }
    }
}
