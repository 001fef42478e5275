//! The reference processors' pixel pipelines: resize, crop or pad, rescale, normalise.
//! Output tiles are planar `[3, size, size]` f32, as the encoder takes them.

use super::load::RgbImage;
use super::resize::{resize_planes, Filter};

/// Per-channel normalisation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalize {
    /// Channel means (of values in [0, 1]).
    pub mean: [f32; 3],
    /// Channel standard deviations.
    pub std: [f32; 3],
}

/// Planar f32 channels of an image, values 0..=255.
#[derive(Clone, Debug, PartialEq)]
pub struct Planes {
    /// Width.
    pub width: usize,
    /// Height.
    pub height: usize,
    /// `3 * height * width` values.
    pub data: Vec<f32>,
}

impl Planes {
    /// The image's channels as planes.
    pub fn from_rgb(img: &RgbImage) -> Planes {
        let n = img.width * img.height;
        let mut data = vec![0f32; 3 * n];
        for (i, px) in img.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                data[c * n + i] = f32::from(px[c]);
            }
        }
        Planes {
            width: img.width,
            height: img.height,
            data,
        }
    }

    /// Resized to `w x h` with 8-bit rounding between and after the passes, as the reference
    /// processors do on 8-bit images.
    pub fn resize(&self, w: usize, h: usize, filter: Filter) -> Planes {
        let data = resize_planes(&self.data, 3, self.height, self.width, h, w, filter, true);
        Planes {
            width: w,
            height: h,
            data,
        }
    }

    /// The `w x h` window at (`left`, `top`); parts outside the image are `fill`.
    pub fn crop(&self, left: isize, top: isize, w: usize, h: usize, fill: [f32; 3]) -> Planes {
        let mut data = vec![0f32; 3 * w * h];
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    let (sx, sy) = (left + x as isize, top + y as isize);
                    let inside = sx >= 0
                        && sy >= 0
                        && (sx as usize) < self.width
                        && (sy as usize) < self.height;
                    data[(c * h + y) * w + x] = if inside {
                        self.data[(c * self.height + sy as usize) * self.width + sx as usize]
                    } else {
                        fill[c]
                    };
                }
            }
        }
        Planes {
            width: w,
            height: h,
            data,
        }
    }

    /// Rescaled to [0, 1] and normalised.
    pub fn normalize(&self, n: &Normalize) -> Vec<f32> {
        let plane = self.width * self.height;
        let mut out = self.data.clone();
        for (c, p) in out.chunks_exact_mut(plane).enumerate() {
            for v in p.iter_mut() {
                *v = (*v / 255.0 - n.mean[c]) / n.std[c];
            }
        }
        out
    }
}

/// Python's `round` (half to even), which torchvision's centre crop uses for its offsets.
fn round_half_even(x: f64) -> isize {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        (r - x.signum()) as isize
    } else {
        r as isize
    }
}

/// CLIP's processor: shortest edge to `size` (bicubic, the long edge scaled and truncated),
/// centre crop `size x size`, normalise.
pub fn clip_tile(img: &RgbImage, size: usize, norm: &Normalize) -> Vec<f32> {
    let p = Planes::from_rgb(img);
    let (w, h) = (p.width, p.height);
    let (nw, nh) = if w <= h {
        (size, (size as f64 * h as f64 / w as f64) as usize)
    } else {
        ((size as f64 * w as f64 / h as f64) as usize, size)
    };
    let r = p.resize(nw, nh, Filter::Bicubic);
    let left = round_half_even((nw as f64 - size as f64) / 2.0);
    let top = round_half_even((nh as f64 - size as f64) / 2.0);
    r.crop(left, top, size, size, [0.0; 3]).normalize(norm)
}

/// SigLIP's processor (and LLaVA-NeXT's base image): resize to `size x size` ignoring the
/// aspect ratio, normalise.
pub fn squash_tile(img: &RgbImage, size: usize, norm: &Normalize) -> Vec<f32> {
    Planes::from_rgb(img)
        .resize(size, size, Filter::Bicubic)
        .normalize(norm)
}

/// LLaVA-1.5's `image_aspect_ratio = pad`, and OneVision's one tile per image when a prompt
/// has several: pad to a square with the mean colour (`int(mean * 255)`), centred, then resize.
pub fn pad_square_tile(img: &RgbImage, size: usize, norm: &Normalize) -> Vec<f32> {
    let p = Planes::from_rgb(img);
    let side = p.width.max(p.height);
    let fill = norm.mean.map(|m| (m * 255.0).trunc());
    let left = -(((side - p.width) / 2) as isize);
    let top = -(((side - p.height) / 2) as isize);
    let sq = p.crop(left, top, side, side, fill);
    let r = sq.resize(size, size, Filter::Bicubic);
    r.normalize(norm)
}

/// LLaVA-NeXT / OneVision tiles of an image: the whole image squashed to one `tile`-sized
/// tile first, then the image fitted (aspect kept) into `best_hw` at `resized_hw`, centred on
/// black, cut into `tile`-sized tiles row-major. All normalised.
pub fn anyres_tiles(
    img: &RgbImage,
    tile: usize,
    best_hw: (usize, usize),
    resized_hw: (usize, usize),
    norm: &Normalize,
) -> Vec<Vec<f32>> {
    let p = Planes::from_rgb(img);
    let mut out = vec![p.resize(tile, tile, Filter::Bicubic).normalize(norm)];
    let fitted = p.resize(resized_hw.1, resized_hw.0, Filter::Bicubic);
    let left = ((best_hw.1 - resized_hw.1) / 2) as isize;
    let top = ((best_hw.0 - resized_hw.0) / 2) as isize;
    let canvas = fitted.crop(-left, -top, best_hw.1, best_hw.0, [0.0; 3]);
    for ty in 0..best_hw.0 / tile {
        for tx in 0..best_hw.1 / tile {
            let t = canvas.crop(
                (tx * tile) as isize,
                (ty * tile) as isize,
                tile,
                tile,
                [0.0; 3],
            );
            out.push(t.normalize(norm));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_square_centres_the_image_on_the_mean_colour() {
        // A 4x2 white image padded to 4x4, then "resized" to its own size: rows 0 and 3 are
        // the mean colour (normalising to ~0), rows 1-2 white.
        let img = RgbImage {
            width: 4,
            height: 2,
            data: vec![255; 4 * 2 * 3],
        };
        let norm = Normalize {
            mean: [0.5, 0.25, 0.75],
            std: [0.5, 0.5, 0.5],
        };
        let t = pad_square_tile(&img, 4, &norm);
        assert_eq!(t.len(), 3 * 16);
        for c in 0..3 {
            for y in 0..4 {
                let v = t[c * 16 + y * 4];
                if y == 0 || y == 3 {
                    // (trunc(mean * 255) / 255 - mean) / std: within one level of 0.
                    assert!(
                        v.abs() < 1.0 / 255.0 / 0.5 + 1e-6,
                        "pad row {y} ch {c}: {v}"
                    );
                } else {
                    assert!(
                        (v - (1.0 - norm.mean[c]) / 0.5).abs() < 1e-5,
                        "image row {y} ch {c}: {v}"
                    );
                }
            }
        }
    }

    #[test]
    fn python_rounding_of_crop_offsets() {
        assert_eq!(round_half_even(28.5), 28);
        assert_eq!(round_half_even(29.5), 30);
        assert_eq!(round_half_even(3.2), 3);
        assert_eq!(round_half_even(0.0), 0);
    }
}
