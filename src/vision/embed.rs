//! An image to the rows the language model reads: preprocessing for the model's kind (CLIP
//! crop, SigLIP squash, or anyres tiles), the tower and projector per tile, then packing.

use super::anyres::{pack_anyres, plan_tiles, PackSpec};
use super::{VisionEncoder, VisionError};
use crate::image::preprocess::{anyres_tiles, clip_tile, pad_square_tile, squash_tile, Normalize};
use crate::image::RgbImage;
use crate::meta_error::MetaError;
use crate::threadpool::ThreadPool;

impl VisionEncoder<'_> {
    /// Embeddings `[tokens, n_out]` of `img`. With `base_only` (several images in one
    /// OneVision prompt) only one whole-image tile is used, then the newline row, as the
    /// reference processor does: the image padded to a square with the mean colour (not
    /// squashed, which distorts a wide or tall image), then resized.
    pub fn embed_image(
        &self,
        img: &RgbImage,
        base_only: bool,
        pool: &ThreadPool,
    ) -> Result<Vec<f32>, VisionError> {
        let c = &self.config;
        let norm = Normalize {
            mean: c.mean,
            std: c.std,
        };
        let project = |px: &[f32]| -> Result<Vec<f32>, VisionError> {
            Ok(self.project(&self.features(px, pool)?, pool))
        };
        let Some(ar) = &self.anyres else {
            return if self.pad_square {
                project(&pad_square_tile(img, c.image_size, &norm))
            } else if self.has_class_token() {
                project(&clip_tile(img, c.image_size, &norm))
            } else {
                project(&squash_tile(img, c.image_size, &norm))
            };
        };
        if base_only {
            let mut out = project(&pad_square_tile(img, c.image_size, &norm))?;
            out.extend_from_slice(&ar.newline);
            return Ok(out);
        }
        // A non-empty pinpoint list was checked at load, so a plan always exists.
        let plan =
            plan_tiles((img.height, img.width), &ar.pinpoints, c.image_size).ok_or_else(|| {
                VisionError::from(MetaError::BadConfig {
                    path: self.path.clone(),
                    problem: "no pinpoints".into(),
                })
            })?;
        let mut tiles = Vec::new();
        for t in anyres_tiles(img, c.image_size, plan.best_hw, plan.resized_hw, &norm) {
            tiles.extend(project(&t)?);
        }
        let spec = PackSpec {
            p: c.grid(),
            max_tiles: ar.max_tiles,
        };
        Ok(pack_anyres(
            &tiles,
            self.n_out,
            plan.grid_hw,
            (img.height, img.width),
            &ar.newline,
            spec,
        )
        .features)
    }
}

impl VisionEncoder<'_> {
    /// Embeddings of a video's frames as LLaVA-OneVision reads them: each frame squashed to one
    /// tile, through the tower and projector, its patch grid pooled 2x2 bilinearly, frames in
    /// order, then one newline row.
    pub fn embed_video(
        &self,
        frames: &[RgbImage],
        pool: &ThreadPool,
    ) -> Result<Vec<f32>, VisionError> {
        let c = &self.config;
        let ar = self
            .anyres
            .as_ref()
            .filter(|a| a.max_tiles.is_some())
            .ok_or_else(|| MetaError::BadConfig {
                path: self.path.clone(),
                problem: "this model does not take video (LLaVA-OneVision does)".into(),
            })?;
        let norm = Normalize {
            mean: c.mean,
            std: c.std,
        };
        let mut tiles = Vec::new();
        for f in frames {
            let px = squash_tile(f, c.image_size, &norm);
            tiles.extend(self.project(&self.features(&px, pool)?, pool));
        }
        Ok(super::anyres::pack_video(
            &tiles,
            frames.len(),
            c.grid(),
            self.n_out,
            &ar.newline,
        ))
    }
}
