//! Images: decoding with limits (a decompression bomb or a truncated file is an error, not an
//! allocation failure), and the resampling and normalisation the reference processors do.

pub mod load;
pub mod preprocess;
pub mod resize;
pub mod video;

pub use load::{load_image, load_image_bytes, ImageError, RgbImage, MAX_PIXELS};
