//! The Vulkan compute backend: device buffers, pipelines built from the SPIR-V of
//! `kernels/vulkan/*.comp`, and the ops the forward passes use, recorded into one command
//! buffer per batch of work.
//!
//! The Vulkan loader is opened at run time (ash's `loaded`), so building needs no SDK and a
//! machine without Vulkan gets [`VulkanError::Loader`] or [`VulkanError::NoDevice`] (callers
//! fall back to the CPU). Every baseline shader reads packed GGUF blocks from 32-bit words and
//! computes in f32 or exact integers, so it runs on any Vulkan 1.1 device (lavapipe, V3D,
//! Jetson, desktop GPUs) without assuming a subgroup size; [`DeviceInfo`] reports the optional
//! features, and the variants that use them (the packed integer dot product) are chosen from it.
//!
//! ```no_run
//! # fn main() -> Result<(), llava_edge::vulkan::VulkanError> {
//! use llava_edge::vulkan::Vulkan;
//! let vk = Vulkan::new(None)?;
//! let x = vk.upload_f32(&[1.0, 2.0, 3.0], "x")?;
//! let y = vk.upload_f32(&[0.5, 0.5, 0.5], "y")?;
//! let mut rec = vk.recorder()?;
//! rec.add(&x, &y, 3)?;
//! rec.submit()?;
//! assert_eq!(x.read_f32()?, [1.5, 2.5, 3.5]);
//! # Ok(()) }
//! ```

mod buffer;
mod device;
mod error;
mod info;
mod ops;
mod pipeline;
pub mod profile;
mod recorder;
mod shaders;
mod vision_ops;

pub use buffer::Buffer;
pub use device::Vulkan;
pub use error::VulkanError;
pub use info::{DeviceInfo, DeviceKind};
pub use ops::{q8_scratch_bytes, rope_tables, Activation, AttentionShape, Mask};
pub use recorder::Recorder;
pub use shaders::{Shader, MUL_MAT_Q8_TYPES, MUL_MAT_TYPES};
pub use vision_ops::{PatchShape, VisionShader};
