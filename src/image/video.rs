//! Video input as frames: a directory of images, an animated GIF, or any video file that an
//! installed `ffmpeg` can read; sampled uniformly down to a frame budget.

use std::path::{Path, PathBuf};

use image::AnimationDecoder;

use super::load::{load_image, ImageError, RgbImage, MAX_PIXELS};

/// Why a video could not be read.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    /// A frame could not be decoded.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The path does not exist.
    #[error("{0}: no such file or directory (a video is a directory of frames, an animated GIF, or a video file)")]
    Missing(PathBuf),
    /// The input has no frames.
    #[error("{0}: no frames (a directory of images, an animated GIF, or a video file)")]
    Empty(PathBuf),
    /// A video file needs ffmpeg, which is not installed or failed.
    #[error("{path}: {problem}")]
    Ffmpeg { path: PathBuf, problem: String },
}

/// Indices of `k` frames spread evenly over `n` (first and last included), as the LLaVA-
/// OneVision video recipe samples them (`linspace(0, n-1, k)` truncated).
pub fn uniform_indices(n: usize, k: usize) -> Vec<usize> {
    if k == 0 || n == 0 {
        return Vec::new();
    }
    if k >= n {
        return (0..n).collect();
    }
    if k == 1 {
        return vec![0];
    }
    (0..k)
        .map(|i| (i as f64 * (n - 1) as f64 / (k - 1) as f64) as usize)
        .collect()
}

fn is_image_file(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("png" | "jpg" | "jpeg" | "webp" | "bmp")
    )
}

/// The frames of `path`, at most `max_frames` of them, sampled uniformly.
pub fn load_frames(path: &Path, max_frames: usize) -> Result<Vec<RgbImage>, VideoError> {
    if !path.exists() {
        return Err(VideoError::Missing(path.to_path_buf()));
    }
    let frames: Vec<RgbImage> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|source| ImageError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_image_file(p))
            .collect();
        files.sort();
        let pick = uniform_indices(files.len(), max_frames);
        return pick
            .into_iter()
            .map(|i| load_image(&files[i]).map_err(VideoError::from))
            .collect::<Result<Vec<_>, _>>()
            .and_then(|f| {
                if f.is_empty() {
                    Err(VideoError::Empty(path.to_path_buf()))
                } else {
                    Ok(f)
                }
            });
    } else if path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("gif"))
    {
        gif_frames(path)?
    } else {
        return ffmpeg_frames(path, max_frames);
    };
    let pick = uniform_indices(frames.len(), max_frames);
    let out: Vec<RgbImage> = pick.into_iter().map(|i| frames[i].clone()).collect();
    if out.is_empty() {
        return Err(VideoError::Empty(path.to_path_buf()));
    }
    Ok(out)
}

fn gif_frames(path: &Path) -> Result<Vec<RgbImage>, VideoError> {
    let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let dec = image::codecs::gif::GifDecoder::new(std::io::Cursor::new(bytes)).map_err(|e| {
        ImageError::Decode {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }
    })?;
    let mut out = Vec::new();
    let mut pixels = 0u64;
    for frame in dec.into_frames() {
        let frame = frame.map_err(|e| ImageError::Decode {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        let rgb = image::DynamicImage::ImageRgba8(frame.into_buffer()).to_rgb8();
        pixels += u64::from(rgb.width()) * u64::from(rgb.height());
        if pixels > 4 * MAX_PIXELS {
            return Err(ImageError::TooLarge {
                path: path.to_path_buf(),
                width: rgb.width(),
                height: rgb.height(),
            }
            .into());
        }
        out.push(RgbImage {
            width: rgb.width() as usize,
            height: rgb.height() as usize,
            data: rgb.into_raw(),
        });
    }
    Ok(out)
}

fn ffmpeg_frames(path: &Path, max_frames: usize) -> Result<Vec<RgbImage>, VideoError> {
    let fail = |problem: String| VideoError::Ffmpeg {
        path: path.to_path_buf(),
        problem,
    };
    let dir = std::env::temp_dir().join(format!("llava-edge-frames-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
    let status = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-i"])
        .arg(path)
        .args(["-vsync", "0"])
        .arg(dir.join("f%06d.png"))
        .status();
    let result = match status {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(fail(
            "reading video files needs ffmpeg, which is not installed (install it, or pass a directory of frames or a GIF)".into(),
        )),
        Err(e) => Err(fail(format!("could not run ffmpeg: {e}"))),
        Ok(s) if !s.success() => Err(fail(format!("ffmpeg failed ({s})"))),
        Ok(_) => load_frames(&dir, max_frames),
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_sampling_spans_the_clip() {
        assert_eq!(uniform_indices(10, 4), vec![0, 3, 6, 9]);
        assert_eq!(uniform_indices(3, 8), vec![0, 1, 2]);
        assert_eq!(uniform_indices(5, 1), vec![0]);
        assert!(uniform_indices(0, 4).is_empty());
    }

    #[test]
    fn missing_inputs_and_missing_ffmpeg_are_clear() {
        for missing in [
            "/nonexistent/clip.mp4",
            "/nonexistent/clip.gif",
            "/nonexistent/frames",
        ] {
            let e = load_frames(Path::new(missing), 8).unwrap_err().to_string();
            assert!(e.contains(missing), "{e}");
            assert!(e.contains("no such file or directory"), "{e}");
            assert!(!e.contains("entity not found"), "{e}");
        }
        let dir = std::env::temp_dir().join(format!("le-empty-frames-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = load_frames(&dir, 8).unwrap_err();
        assert!(matches!(e, VideoError::Empty(_)), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
