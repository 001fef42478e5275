//! An image to the rows the language model reads: preprocessing for the model's kind (CLIP
//! crop, SigLIP squash, or anyres tiles), the tower and projector per tile, then packing; on
//! the CPU or, with the weights uploaded there, on any [`VisionOps`] device.

use super::anyres::{pack_anyres_on, pack_video_on, plan_tiles, PackSpec};
use super::encoder::TowerOn;
use super::{VisionEncoder, VisionError};
use crate::backend::vision::{RowRun, VisionOps};
use crate::backend::Cpu;
use crate::image::preprocess::{anyres_tiles, clip_tile, pad_square_tile, squash_tile, Normalize};
use crate::image::RgbImage;
use crate::meta_error::MetaError;
use crate::threadpool::ThreadPool;

impl<'a> VisionEncoder<'a> {
    /// Embeddings `[tokens, n_out]` of `img`, on the device the encoder was offloaded to, else
    /// on the CPU (`pool`'s threads). With `base_only` (several images in one
    /// OneVision prompt) only one whole-image tile is used, then the newline row, as the
    /// reference processor does: the image padded to a square with the mean colour (not
    /// squashed, which distorts a wide or tall image), then resized.
    pub fn embed_image(
        &self,
        img: &RgbImage,
        base_only: bool,
        pool: &ThreadPool,
    ) -> Result<Vec<f32>, VisionError> {
        #[cfg(feature = "vulkan")]
        if let Some(o) = &self.device {
            return self.embed_image_on(&mut o.device.session(), &o.tower, img, base_only);
        }
        self.embed_image_on(&mut Cpu::new(pool), self.cpu_tower(), img, base_only)
    }

    /// [`VisionEncoder::embed_image`] on `be`, with the weights `t` uploaded there
    /// ([`VisionEncoder::upload`]); the rows are read back.
    pub fn embed_image_on<B: VisionOps>(
        &self,
        be: &mut B,
        t: &TowerOn<'_, B>,
        img: &RgbImage,
        base_only: bool,
    ) -> Result<Vec<f32>, VisionError> {
        let c = &self.config;
        let norm = Normalize {
            mean: c.mean,
            std: c.std,
        };
        let n = self.feature_rows();
        let Some(ar) = &self.anyres else {
            let px = if self.pad_square {
                pad_square_tile(img, c.image_size, &norm)
            } else if self.has_class_token() {
                clip_tile(img, c.image_size, &norm)
            } else {
                squash_tile(img, c.image_size, &norm)
            };
            let rows = {
                let f = self.features_on(be, t, &px)?;
                self.project_on(be, t, f, n)?
            };
            return Ok(be.read(rows)?);
        };
        if base_only {
            let px = pad_square_tile(img, c.image_size, &norm);
            let rows = {
                let f = self.features_on(be, t, &px)?;
                self.project_on(be, t, f, n)?
            };
            let mut out = be.read(rows)?;
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
        let pixels = anyres_tiles(img, c.image_size, plan.best_hw, plan.resized_hw, &norm);
        let tiles = self.project_tiles(be, t, &pixels)?;
        let newline = self.newline::<B>(t)?;
        let spec = PackSpec {
            p: c.grid(),
            max_tiles: ar.max_tiles,
        };
        let (rows, _) = pack_anyres_on(
            be,
            &tiles,
            self.n_out,
            plan.grid_hw,
            (img.height, img.width),
            newline,
            spec,
        )?;
        Ok(be.read(rows)?)
    }

    /// Embeddings of a video's frames as LLaVA-OneVision reads them: each frame squashed to one
    /// tile, through the tower and projector, its patch grid pooled 2x2 bilinearly, frames in
    /// order, then one newline row; on the encoder's device, else on the CPU.
    pub fn embed_video(
        &self,
        frames: &[RgbImage],
        pool: &ThreadPool,
    ) -> Result<Vec<f32>, VisionError> {
        #[cfg(feature = "vulkan")]
        if let Some(o) = &self.device {
            return self.embed_video_on(&mut o.device.session(), &o.tower, frames);
        }
        self.embed_video_on(&mut Cpu::new(pool), self.cpu_tower(), frames)
    }

    /// [`VisionEncoder::embed_video`] on `be`, with the weights `t` uploaded there.
    pub fn embed_video_on<B: VisionOps>(
        &self,
        be: &mut B,
        t: &TowerOn<'_, B>,
        frames: &[RgbImage],
    ) -> Result<Vec<f32>, VisionError> {
        let c = &self.config;
        self.anyres
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
        let pixels: Vec<Vec<f32>> = frames
            .iter()
            .map(|f| squash_tile(f, c.image_size, &norm))
            .collect();
        let tiles = self.project_tiles(be, t, &pixels)?;
        let rows = pack_video_on(
            be,
            &tiles,
            frames.len(),
            c.grid(),
            self.n_out,
            self.newline::<B>(t)?,
        )?;
        Ok(be.read(rows)?)
    }

    /// The projected rows of each tile of `pixels`, one after another, on `be`.
    fn project_tiles<B: VisionOps>(
        &self,
        be: &mut B,
        t: &TowerOn<'_, B>,
        pixels: &[Vec<f32>],
    ) -> Result<B::Buf, VisionError> {
        let n = self.feature_rows();
        let mut all = be.alloc(pixels.len() * n * self.n_out)?;
        for (i, px) in pixels.iter().enumerate() {
            let f = self.features_on(be, t, px)?;
            let rows = self.project_on(be, t, f, n)?;
            let run = RowRun {
                src: 0,
                dst: i * n,
                n,
            };
            be.copy_rows(&rows, &mut all, self.n_out, &[run])?;
        }
        Ok(all)
    }

    /// The newline row of `t`, which a model with anyres settings has.
    fn newline<'t, B: VisionOps>(
        &self,
        t: &'t TowerOn<'_, B>,
    ) -> Result<&'t B::Vector, VisionError> {
        t.newline.as_ref().ok_or_else(|| {
            MetaError::BadConfig {
                path: self.path.clone(),
                problem: "anyres settings but no image_newline row".into(),
            }
            .into()
        })
    }
}
