//! The vision encoder, projector and packing on a Vulkan device: the weights uploaded once,
//! each image (or video) then one pass on a session of the device, its rows read back. With
//! no device set, [`VisionEncoder::embed_image`] and [`VisionEncoder::embed_video`] run on the
//! CPU.

use super::encoder::TowerOn;
use super::{VisionEncoder, VisionError};
use crate::backend::vulkan::Vulkan;

/// The part of a vision encoder a Vulkan device runs: all of it.
pub(crate) struct Offload {
    /// The device (each image runs a session of it).
    pub(crate) device: Vulkan,
    /// The encoder's and projector's weights there.
    pub(crate) tower: TowerOn<'static, Vulkan>,
}

impl VisionEncoder<'_> {
    /// Moves the encoder, the projector and the packing of their rows to `device`, uploading
    /// the weights (counted in the device's memory budget). On an error (out of device memory,
    /// weights the shaders do not take) nothing moves and the encoder stays on the CPU.
    pub fn offload(&mut self, device: Vulkan) -> Result<(), VisionError> {
        let tower = self.upload(&device)?;
        self.device = Some(Offload { device, tower });
        Ok(())
    }

    /// The device the encoder runs on, None for the CPU.
    pub fn device(&self) -> Option<&Vulkan> {
        self.device.as_ref().map(|o| &o.device)
    }
}
