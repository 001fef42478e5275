//! Decoding an image file into RGB, honouring EXIF orientation, within limits.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageReader, Limits};

/// Largest image accepted, in pixels (about 64 MP: bigger than any camera photo a user would
/// send, far smaller than a bomb's claimed size).
pub const MAX_PIXELS: u64 = 64 * 1024 * 1024;
/// Largest side accepted, in pixels.
pub const MAX_SIDE: u32 = 16384;

/// Why an image could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not an image format we decode (JPEG, PNG, WebP, BMP, GIF).
    #[error("{path}: not a supported image (JPEG, PNG, WebP, BMP or GIF): {detail}")]
    UnknownFormat { path: PathBuf, detail: String },
    /// The header claims a size over the limits.
    #[error("{path}: image is {width}x{height}; at most {MAX_SIDE} pixels a side and {MAX_PIXELS} pixels in all are accepted")]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
    },
    /// A side of zero pixels.
    #[error("{path}: image has no pixels ({width}x{height})")]
    Empty {
        path: PathBuf,
        width: u32,
        height: u32,
    },
    /// The data is corrupt or truncated.
    #[error("{path}: cannot decode: {detail}")]
    Decode { path: PathBuf, detail: String },
}

/// An 8-bit RGB image, row-major, 3 bytes a pixel.
#[derive(Clone, Debug, PartialEq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height * width * 3` bytes.
    pub data: Vec<u8>,
}

/// Loads `path` as RGB.
pub fn load_image(path: &Path) -> Result<RgbImage, ImageError> {
    let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    load_image_bytes(&bytes, path)
}

/// Decodes an image held in memory; `label` names it in errors.
pub fn load_image_bytes(bytes: &[u8], label: &Path) -> Result<RgbImage, ImageError> {
    let path = || label.to_path_buf();
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|source| ImageError::Io {
            path: path(),
            source,
        })?;
    if reader.format().is_none() {
        return Err(ImageError::UnknownFormat {
            path: path(),
            detail: format!("first bytes {:02x?}", &bytes[..bytes.len().min(8)]),
        });
    }
    let mut decoder = reader.into_decoder().map_err(|e| ImageError::Decode {
        path: path(),
        detail: e.to_string(),
    })?;
    // Check the claimed size before any pixel buffer is allocated.
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(ImageError::Empty {
            path: path(),
            width,
            height,
        });
    }
    if width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(ImageError::TooLarge {
            path: path(),
            width,
            height,
        });
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_PIXELS * 8);
    decoder.set_limits(limits).map_err(|e| ImageError::Decode {
        path: path(),
        detail: e.to_string(),
    })?;
    let orientation = decoder.orientation().ok();
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| ImageError::Decode {
        path: path(),
        detail: e.to_string(),
    })?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    let rgb = img.to_rgb8();
    Ok(RgbImage {
        width: rgb.width() as usize,
        height: rgb.height() as usize,
        data: rgb.into_raw(),
    })
}
