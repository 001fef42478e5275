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

/// The rotation angles' cosines and sines for one position: `rot_dim / 2` pairs, computed once
/// and shared by every head and layer (they depend only on the position).
pub fn rope_table(rot_dim: usize, pos: usize, theta: f32) -> Vec<(f32, f32)> {
    (0..rot_dim / 2)
        .map(|i| {
            // Same expression as transformers' inv_freq (computed in f32 there too).
            let inv_freq = 1.0 / theta.powf((2 * i) as f32 / rot_dim as f32);
            let angle = pos as f32 * inv_freq;
            let (sin, cos) = angle.sin_cos();
            (cos, sin)
        })
        .collect()
}

/// Rotates each `head_dim`-wide head of `x` (one token's heads, back to back) by the angles of
/// `table` ([`rope_table`] of the token's position). Only the first `2 * table.len()`
/// dimensions of a head rotate.
pub fn rope_with(x: &mut [f32], head_dim: usize, table: &[(f32, f32)], style: RopeStyle) {
    let half = table.len();
    for head in x.chunks_exact_mut(head_dim) {
        for (i, &(cos, sin)) in table.iter().enumerate() {
            let (a, b) = match style {
                RopeStyle::Normal => (2 * i, 2 * i + 1),
                RopeStyle::Neox => (i, i + half),
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * cos - x1 * sin;
            head[b] = x0 * sin + x1 * cos;
        }
    }
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
