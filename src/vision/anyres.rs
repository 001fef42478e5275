//! LLaVA-NeXT "anyres" and OneVision "anyres_max": choosing a tile grid for an image, and
//! packing the tiles' projected features back into one sequence (unpadding, OneVision's
//! bilinear shrink, the `image_newline` column), exactly as transformers does.

use super::error::VisionError;
use crate::gguf::keys::{clip, llava_edge, tensors};
use crate::meta_error::MetaError;

/// A tile grid chosen for an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TilePlan {
    /// The chosen pinpoint (height, width) in pixels.
    pub best_hw: (usize, usize),
    /// Tiles down and across.
    pub grid_hw: (usize, usize),
    /// Size the image is resized to inside the pinpoint (aspect kept), before centred padding.
    pub resized_hw: (usize, usize),
}

/// transformers' `select_best_resolution`: the pinpoint (h, w) that keeps the most of the
/// image's resolution, then wastes the least; the first such in list order.
pub fn select_best_resolution(
    orig_hw: (usize, usize),
    pinpoints: &[(usize, usize)],
) -> Option<(usize, usize)> {
    let (h, w) = (orig_hw.0 as f64, orig_hw.1 as f64);
    let mut best = None;
    let (mut best_eff, mut best_waste) = (0u64, u64::MAX);
    for &(ph, pw) in pinpoints {
        let s = (pw as f64 / w).min(ph as f64 / h);
        let (dw, dh) = ((w * s) as u64, (h * s) as u64);
        let eff = (dw * dh).min(orig_hw.0 as u64 * orig_hw.1 as u64);
        let waste = (ph * pw) as u64 - eff;
        if eff > best_eff || (eff == best_eff && waste < best_waste) {
            best = Some((ph, pw));
            best_eff = eff;
            best_waste = waste;
        }
    }
    best
}

/// Size of an `orig_hw` image fitted inside `target_hw` with its aspect kept (the fitted side
/// is rounded up, as transformers' `get_patch_output_size` does).
pub fn fit_within(orig_hw: (usize, usize), target_hw: (usize, usize)) -> (usize, usize) {
    let (oh, ow) = (orig_hw.0 as f64, orig_hw.1 as f64);
    let (th, tw) = target_hw;
    let (sw, sh) = (tw as f64 / ow, th as f64 / oh);
    if sw < sh {
        (((oh * sw).ceil() as usize).min(th), tw)
    } else {
        (th, ((ow * sh).ceil() as usize).min(tw))
    }
}

/// The tile plan for an image of `orig_hw` with square tiles of `tile` pixels.
pub fn plan_tiles(
    orig_hw: (usize, usize),
    pinpoints: &[(usize, usize)],
    tile: usize,
) -> Option<TilePlan> {
    let best = select_best_resolution(orig_hw, pinpoints)?;
    Some(TilePlan {
        best_hw: best,
        grid_hw: (best.0 / tile, best.1 / tile),
        resized_hw: fit_within(orig_hw, best),
    })
}

/// Rows and columns of the `ch x cw` feature grid that hold image rather than padding:
/// transformers' `unpad_image` (with its rounding to 7 decimals).
pub fn unpadded_window(
    orig_hw: (usize, usize),
    ch: usize,
    cw: usize,
) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    let (h, w) = (orig_hw.0 as f64, orig_hw.1 as f64);
    let round7 = |x: f64| ((x * 1e7).round() / 1e7) as usize;
    if w / h > cw as f64 / ch as f64 {
        let new_h = round7(h * (cw as f64 / w));
        let pad = (ch - new_h.min(ch)) / 2;
        (pad..ch - pad, 0..cw)
    } else {
        let new_w = round7(w * (ch as f64 / h));
        let pad = (cw - new_w.min(cw)) / 2;
        (0..ch, pad..cw - pad)
    }
}

/// Bilinear resize of a `[h, w, d]` feature grid to `[oh, ow, d]` (PyTorch's `interpolate`,
/// `align_corners=False`, no antialiasing).
pub fn bilinear_grid(x: &[f32], h: usize, w: usize, d: usize, oh: usize, ow: usize) -> Vec<f32> {
    // PyTorch's CPU kernel arithmetic, in f32 and in its order, so results match bit for bit.
    let src = |o: usize, n_in: usize, n_out: usize| -> (usize, usize, f32, f32) {
        let scale = n_in as f32 / n_out as f32;
        let s = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
        let i0 = (s as usize).min(n_in - 1);
        let i1 = if i0 < n_in - 1 { i0 + 1 } else { i0 };
        let l1 = s - i0 as f32;
        (i0, i1, 1.0 - l1, l1)
    };
    let mut out = vec![0f32; oh * ow * d];
    for y in 0..oh {
        let (y0, y1, h0, h1) = src(y, h, oh);
        for xx in 0..ow {
            let (x0, x1, w0, w1) = src(xx, w, ow);
            let o = &mut out[(y * ow + xx) * d..(y * ow + xx + 1) * d];
            for (k, v) in o.iter_mut().enumerate() {
                let at = |yy: usize, xi: usize| x[(yy * w + xi) * d + k];
                *v = h0 * (w0 * at(y0, x0) + w1 * at(y0, x1))
                    + h1 * (w0 * at(y1, x0) + w1 * at(y1, x1));
            }
        }
    }
    out
}

/// How the tiles of one image are packed into its sequence of features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackSpec {
    /// Patches along a tile's side.
    pub p: usize,
    /// OneVision's `anyres_max_N` (None for LLaVA-NeXT).
    pub max_tiles: Option<usize>,
}

/// Result of packing: the feature rows and the grid they came from.
pub struct Packed {
    /// `[n_tokens, d]`.
    pub features: Vec<f32>,
    /// Final grid (rows, columns) before the newline column.
    pub grid_hw: (usize, usize),
}

/// Packs projected tile features `[1 + gh*gw, p*p, d]` (base tile first, then tiles row-major)
/// of an image of `orig_hw` into the sequence the language model reads: the base tile's rows,
/// then the unpadded (and, for OneVision, shrunk) grid with `newline` after each row.
pub fn pack_anyres(
    tiles: &[f32],
    d: usize,
    grid_hw: (usize, usize),
    orig_hw: (usize, usize),
    newline: &[f32],
    spec: PackSpec,
) -> Packed {
    let p = spec.p;
    let (gh, gw) = grid_hw;
    let (ch, cw) = (gh * p, gw * p);
    let tile_len = p * p * d;
    // Grid [ch, cw, d] from tiles row-major, patches row-major within each.
    let mut grid = vec![0f32; ch * cw * d];
    for ty in 0..gh {
        for tx in 0..gw {
            let t = &tiles[(1 + ty * gw + tx) * tile_len..(2 + ty * gw + tx) * tile_len];
            for py in 0..p {
                let dst = ((ty * p + py) * cw + tx * p) * d;
                grid[dst..dst + p * d].copy_from_slice(&t[py * p * d..(py + 1) * p * d]);
            }
        }
    }
    let (rows, cols) = unpadded_window(orig_hw, ch, cw);
    let (mut uh, mut uw) = (rows.len(), cols.len());
    let mut cur = Vec::with_capacity(uh * uw * d);
    for y in rows {
        cur.extend_from_slice(&grid[(y * cw + cols.start) * d..(y * cw + cols.end) * d]);
    }
    if let Some(max) = spec.max_tiles {
        let ratio = ((uh * uw) as f64 / (max * p * p) as f64).sqrt();
        if ratio > 1.1 {
            let (nh, nw) = (
                (uh as f64 / ratio).floor() as usize,
                (uw as f64 / ratio).floor() as usize,
            );
            cur = bilinear_grid(&cur, uh, uw, d, nh, nw);
            (uh, uw) = (nh, nw);
        }
    }
    let mut features = Vec::with_capacity((p * p + uh * (uw + 1)) * d);
    features.extend_from_slice(&tiles[..tile_len]);
    for y in 0..uh {
        features.extend_from_slice(&cur[y * uw * d..(y + 1) * uw * d]);
        features.extend_from_slice(newline);
    }
    Packed {
        features,
        grid_hw: (uh, uw),
    }
}

/// OneVision video: each frame's `p x p` projected grid pooled bilinearly to `ceil(p/2)`
/// square, frames concatenated, then one `newline` row after the last frame.
pub fn pack_video(
    frames: &[f32],
    n_frames: usize,
    p: usize,
    d: usize,
    newline: &[f32],
) -> Vec<f32> {
    let q = p.div_ceil(2);
    let mut out = Vec::with_capacity((n_frames * q * q + 1) * d);
    for f in frames.chunks_exact(p * p * d).take(n_frames) {
        out.extend(bilinear_grid(f, p, p, d, q, q));
    }
    out.extend_from_slice(newline);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_identity_and_constant() {
        let x: Vec<f32> = (0..4 * 6 * 2).map(|i| i as f32).collect();
        assert_eq!(bilinear_grid(&x, 4, 6, 2, 4, 6), x);
        let c = vec![3.0f32; 5 * 5];
        assert!(bilinear_grid(&c, 5, 5, 1, 3, 3).iter().all(|&v| v == 3.0));
    }
}

/// The anyres settings of an mmproj file.
#[derive(Clone, Debug, PartialEq)]
pub struct AnyresConfig {
    /// Candidate resolutions (height, width).
    pub pinpoints: Vec<(usize, usize)>,
    /// OneVision's tile cap (`anyres_max_N`), None for LLaVA-NeXT.
    pub max_tiles: Option<usize>,
    /// The `image_newline` row appended after each row of features.
    pub newline: Vec<f32>,
}

impl AnyresConfig {
    /// Reads `clip.vision.image_grid_pinpoints` (flattened pairs in the Hugging Face config's
    /// (height, width) order, as llama.cpp's converter writes them), the newline tensor and our
    /// tile-cap key. None when the file has no pinpoints (LLaVA, LLaVA-1.5).
    pub fn from_gguf(
        f: &crate::gguf::GgufFile,
        n_embd_out: usize,
    ) -> Result<Option<AnyresConfig>, VisionError> {
        let bad = |problem: String| -> VisionError {
            MetaError::BadConfig {
                path: f.path().to_path_buf(),
                problem,
            }
            .into()
        };
        let Some(v) = f.get(clip::IMAGE_GRID_PINPOINTS) else {
            return Ok(None);
        };
        let flat = v
            .as_array()
            .and_then(|a| a.to_i64_vec())
            .filter(|a| {
                !a.is_empty() && a.len() % 2 == 0 && a.iter().all(|&x| x > 0 && x < 1 << 16)
            })
            .ok_or_else(|| {
                bad("clip.vision.image_grid_pinpoints must be pairs of positive integers".into())
            })?;
        let pinpoints = flat
            .chunks(2)
            .map(|p| (p[0] as usize, p[1] as usize))
            .collect();
        let max_tiles = match f.get(llava_edge::ANYRES_MAX) {
            Some(v) => Some(
                v.as_u64()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| bad("anyres tile cap must be positive".into()))?
                    as usize,
            ),
            None => None,
        };
        let name = [tensors::IMAGE_NEWLINE, tensors::V_IMAGE_NEWLINE]
            .into_iter()
            .find(|n| f.tensor_info(n).is_some())
            .ok_or_else(|| bad("anyres pinpoints but no image_newline tensor".into()))?;
        let m = crate::ops::Matrix::new(f.tensor(name)?, n_embd_out, 1).map_err(|source| {
            MetaError::Tensor {
                path: f.path().to_path_buf(),
                source,
            }
        })?;
        let mut newline = vec![0f32; n_embd_out];
        m.row_f32(0, &mut newline);
        Ok(Some(AnyresConfig {
            pinpoints,
            max_tiles,
            newline,
        }))
    }
}
