//! The one error type of the Vulkan backend.

use ash::vk;

/// Why a Vulkan operation could not be done. Each says what to do about it; none is a panic.
#[derive(Debug, thiserror::Error)]
pub enum VulkanError {
    /// The Vulkan loader library is missing or unusable (no driver installed).
    #[error(
        "the Vulkan loader (libvulkan) could not be opened: {reason}; install a Vulkan driver \
         (Debian: libvulkan1 and mesa-vulkan-drivers, or the GPU vendor's) or run on the CPU"
    )]
    Loader {
        /// The loader's own message.
        reason: String,
    },
    /// The loader works but no device offers Vulkan 1.1 compute.
    #[error(
        "no Vulkan 1.1 device with a compute queue was found ({seen} device(s) seen); \
         install a Vulkan driver (Debian: mesa-vulkan-drivers) or run on the CPU"
    )]
    NoDevice {
        /// How many physical devices the loader listed.
        seen: usize,
    },
    /// A device index that is not in the list.
    #[error("Vulkan device {index} does not exist ({count} device(s) present)")]
    DeviceIndex {
        /// The index asked for.
        index: usize,
        /// How many devices there are.
        count: usize,
    },
    /// A Vulkan call failed.
    #[error("Vulkan {call} failed: {result}")]
    Api {
        /// The entry point.
        call: &'static str,
        /// What it returned.
        result: vk::Result,
    },
    /// The device ran out of memory for an allocation.
    #[error(
        "out of Vulkan device memory allocating {bytes} bytes for {what}; \
         offload fewer layers or use a smaller model"
    )]
    OutOfMemory {
        /// The allocation's size.
        bytes: u64,
        /// What it was for.
        what: &'static str,
    },
    /// No memory type with the properties a buffer needs.
    #[error("the Vulkan device has no memory type for {what}")]
    NoMemoryType {
        /// What the memory was for.
        what: &'static str,
    },
    /// A buffer larger than the device lets one shader binding address.
    #[error(
        "a {bytes}-byte buffer for {what} exceeds the device's largest storage buffer \
         ({max} bytes)"
    )]
    TooLarge {
        /// The size asked for.
        bytes: u64,
        /// The device's maxStorageBufferRange.
        max: u64,
        /// What it was for.
        what: &'static str,
    },
    /// Embedded SPIR-V that is not SPIR-V (a corrupted build).
    #[error(
        "shader {name} is not valid SPIR-V ({len} bytes); rebuild with scripts/build-spirv.sh"
    )]
    BadSpirv {
        /// The shader.
        name: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// Arguments an op cannot take: lengths that do not match the shape, a type without a
    /// shader, a dimension past a shader's limit.
    #[error("Vulkan {op}: {detail}")]
    Invalid {
        /// The op.
        op: &'static str,
        /// What is wrong, with the values.
        detail: String,
    },
}

/// Wraps a failed call's result as [`VulkanError::Api`] naming the call.
pub(crate) fn api(call: &'static str) -> impl Fn(vk::Result) -> VulkanError {
    move |result| VulkanError::Api { call, result }
}
