//! What the chosen device is and offers: the facts the shaders' variants are picked from.

use ash::vk;

/// What kind of device it is, best first when choosing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeviceKind {
    /// A GPU with its own memory.
    Discrete,
    /// A GPU sharing the CPU's memory (Jetson, Raspberry Pi 5, laptops).
    Integrated,
    /// A virtualised GPU.
    Virtual,
    /// The CPU itself (Mesa's lavapipe).
    Cpu,
    /// Anything else.
    Other,
}

/// The chosen device: its name and the limits and optional features the shaders' variants
/// depend on.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    /// The driver's name for it, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)".
    pub name: String,
    /// Discrete, integrated, CPU...
    pub kind: DeviceKind,
    /// The Vulkan version it supports (`vk::api_version_major` etc. decode it).
    pub api_version: u32,
    /// Bytes in its device-local memory heaps.
    pub device_local_bytes: u64,
    /// Arithmetic on 16-bit floats in shaders.
    pub shader_float16: bool,
    /// Arithmetic on 8-bit integers in shaders.
    pub shader_int8: bool,
    /// 8-bit values in storage buffers.
    pub storage_8bit: bool,
    /// 16-bit values in storage buffers.
    pub storage_16bit: bool,
    /// Packed integer dot products (VK_KHR_shader_integer_dot_product / Vulkan 1.3).
    pub integer_dot_product: bool,
    /// The subgroup size (shaders do not depend on it; reported for tuning).
    pub subgroup_size: u32,
    /// The largest storage buffer one binding can address.
    pub max_storage_buffer_range: u64,
    /// The most invocations in one workgroup.
    pub max_workgroup_invocations: u32,
    /// The most workgroups along each dimension of a dispatch.
    pub max_workgroup_count: [u32; 3],
    /// Nanoseconds per timestamp tick, where compute queues can write timestamps (the
    /// per-shader profile needs them).
    pub timestamp_period: Option<f32>,
}

impl std::fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({:?}, Vulkan {}.{}, {} MiB device-local, subgroup {}, fp16 {}, int8 {}, \
             8/16-bit storage {}/{}, integer dot {})",
            self.name,
            self.kind,
            vk::api_version_major(self.api_version),
            vk::api_version_minor(self.api_version),
            self.device_local_bytes >> 20,
            self.subgroup_size,
            self.shader_float16,
            self.shader_int8,
            self.storage_8bit,
            self.storage_16bit,
            self.integer_dot_product
        )
    }
}
