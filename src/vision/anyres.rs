//! LLaVA-NeXT "anyres" and OneVision "anyres_max": choosing a tile grid for an image, and
//! packing the tiles' projected features back into one sequence (unpadding, OneVision's
//! bilinear shrink, the `image_newline` column), exactly as transformers does.

use super::error::VisionError;
use crate::backend::vision::{RowRun, VisionOps};
use crate::backend::{BackendError, Cpu};
use crate::gguf::keys::{clip, llava_edge, tensors};
use crate::meta_error::MetaError;
use crate::threadpool::ThreadPool;

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

pub use crate::backend::vision::bilinear_grid;

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
) -> Result<Packed, BackendError> {
    // Moving rows needs no threads.
    let pool = ThreadPool::new(1);
    let mut cpu = Cpu::new(&pool);
    let (features, grid_hw) = pack_anyres_on(
        &mut cpu,
        &tiles.to_vec(),
        d,
        grid_hw,
        orig_hw,
        &newline.to_vec(),
        spec,
    )?;
    Ok(Packed { features, grid_hw })
}

/// [`pack_anyres`] on `be`, the tiles and the newline row there: the packed rows, left on
/// the device, and the final grid (rows, columns) before the newline column.
pub fn pack_anyres_on<B: VisionOps>(
    be: &mut B,
    tiles: &B::Buf,
    d: usize,
    grid_hw: (usize, usize),
    orig_hw: (usize, usize),
    newline: &B::Vector,
    spec: PackSpec,
) -> Result<(B::Buf, (usize, usize)), BackendError> {
    let p = spec.p;
    let (gh, gw) = grid_hw;
    // The grid [gh*p, gw*p] of patches, tiles row-major and patches row-major within each;
    // only its unpadded window is kept, gathered row by row from the tiles.
    let (rows, cols) = unpadded_window(orig_hw, gh * p, gw * p);
    let (uh, uw) = (rows.len(), cols.len());
    let mut runs = Vec::new();
    for (i, y) in rows.enumerate() {
        let mut x = cols.start;
        while x < cols.end {
            let n = (p - x % p).min(cols.end - x);
            let tile = 1 + (y / p) * gw + x / p;
            runs.push(RowRun {
                src: tile * p * p + (y % p) * p + x % p,
                dst: i * uw + x - cols.start,
                n,
            });
            x += n;
        }
    }
    let mut cur = be.alloc(uh * uw * d)?;
    be.copy_rows(tiles, &mut cur, d, &runs)?;
    let (mut fh, mut fw) = (uh, uw);
    if let Some(max) = spec.max_tiles {
        let ratio = ((uh * uw) as f64 / (max * p * p) as f64).sqrt();
        if ratio > 1.1 {
            (fh, fw) = (
                (uh as f64 / ratio).floor() as usize,
                (uw as f64 / ratio).floor() as usize,
            );
            let mut small = be.alloc(fh * fw * d)?;
            be.bilinear(&cur, 0, (uh, uw), d, &mut small, 0, (fh, fw))?;
            cur = small;
        }
    }
    // The base tile, then each grid row followed by the newline.
    let base = p * p;
    let mut out = be.alloc((base + fh * (fw + 1)) * d)?;
    let whole = RowRun {
        src: 0,
        dst: 0,
        n: base,
    };
    be.copy_rows(tiles, &mut out, d, &[whole])?;
    let grid_rows: Vec<RowRun> = (0..fh)
        .map(|y| RowRun {
            src: y * fw,
            dst: base + y * (fw + 1),
            n: fw,
        })
        .collect();
    be.copy_rows(&cur, &mut out, d, &grid_rows)?;
    let ends: Vec<usize> = (0..fh).map(|y| base + y * (fw + 1) + fw).collect();
    be.fill_rows(newline, &mut out, &ends)?;
    Ok((out, (fh, fw)))
}

/// OneVision video: each frame's `p x p` projected grid pooled bilinearly to `ceil(p/2)`
/// square, frames concatenated, then one `newline` row after the last frame.
pub fn pack_video(
    frames: &[f32],
    n_frames: usize,
    p: usize,
    d: usize,
    newline: &[f32],
) -> Result<Vec<f32>, BackendError> {
    let pool = ThreadPool::new(1);
    let mut cpu = Cpu::new(&pool);
    let n_frames = n_frames.min(frames.len() / (p * p * d).max(1));
    pack_video_on(
        &mut cpu,
        &frames.to_vec(),
        n_frames,
        p,
        d,
        &newline.to_vec(),
    )
}

/// [`pack_video`] on `be`, the frames and the newline row there; the rows are left there.
pub fn pack_video_on<B: VisionOps>(
    be: &mut B,
    frames: &B::Buf,
    n_frames: usize,
    p: usize,
    d: usize,
    newline: &B::Vector,
) -> Result<B::Buf, BackendError> {
    let q = p.div_ceil(2);
    let mut out = be.alloc((n_frames * q * q + 1) * d)?;
    for f in 0..n_frames {
        be.bilinear(frames, f * p * p, (p, p), d, &mut out, f * q * q, (q, q))?;
    }
    be.fill_rows(newline, &mut out, &[n_frames * q * q])?;
    Ok(out)
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
