//! The embedded SPIR-V (the variants of kernels/vulkan/variants.txt, compiled by build.rs
//! with glslc where present, else the committed kernels/vulkan/spv written by
//! scripts/build-spirv.sh) and, for each op, which variant a device gets.

use super::error::VulkanError;
use super::info::DeviceInfo;
use crate::dtype::GgmlType;

macro_rules! spv {
    ($name:literal) => {
        // build.rs: compiled from kernels/vulkan at build time, or the committed spv/ copy.
        include_bytes!(concat!(env!("OUT_DIR"), "/spv/", $name, ".spv"))
    };
}
pub(super) use spv;

/// The weight types `Shader::MulMatQ8` has a variant for.
pub const MUL_MAT_Q8_TYPES: [GgmlType; 8] = [
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// Invocations per workgroup of the row-reducing shaders (matrix products, norms, softmax):
/// a power of two within every device's guaranteed 128.
pub(crate) const MUL_MAT_WG: u32 = 32;
/// Invocations per workgroup of the other shaders.
pub(crate) const WG: u32 = 64;
/// Tokens per workgroup of `mul_mat` (its `TILE`).
pub(crate) const MUL_MAT_TILE: u32 = 8;

/// One compiled shader variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    /// Weight matrix times f32 activations, by weight type.
    MulMat(GgmlType),
    /// f32 activations to int8 blocks for [`Shader::MulMatQ8`].
    QuantizeQ8,
    /// Quantized weights times int8-quantized activations (integer dot products).
    MulMatQ8(GgmlType),
    /// RMSNorm.
    RmsNorm,
    /// LayerNorm.
    LayerNorm,
    /// RoPE, adjacent pairs (`false`) or NeoX halves (`true`).
    Rope(bool),
    /// `silu(x) * y`.
    SiluMul,
    /// Exact GELU.
    GeluErf,
    /// GELU's tanh approximation.
    GeluTanh,
    /// `x * sigmoid(1.702 x)`.
    GeluQuick,
    /// `x + y`.
    Add,
    /// Row softmax.
    Softmax,
    /// Attention over an F16 cache.
    Attention,
    /// Attention over f32 keys and values: the text model's exact cache and the vision
    /// encoder's uncached keys.
    AttentionKvF32,
    /// Bilinear resize of a feature grid.
    Bilinear,
    /// f32 values into F16 storage.
    F32ToF16,
    /// The vision encoder's own shaders (`vision_ops.rs`).
    Vision(super::vision_ops::VisionShader),
}

/// The weight types `Shader::MulMat` has a variant for.
pub const MUL_MAT_TYPES: [GgmlType; 10] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// What building one variant needs: its code, interface and specialization.
pub(super) struct Variant {
    pub(super) name: &'static str,
    pub(super) spirv: &'static [u8],
    pub(super) bindings: u32,
    pub(super) push_bytes: u32,
    pub(super) spec: Vec<(u32, u32)>,
}

impl Shader {
    /// The variant for this device. Every baseline variant reads packed bytes from 32-bit words
    /// and computes in f32 or i32, so it needs none of the optional features (fp16 arithmetic,
    /// int8, 8/16-bit storage, integer dot products) and runs on any Vulkan 1.1 device (V3D,
    /// older GPUs); where `info` reports a feature a variant uses, that variant is chosen.
    pub(super) fn variant(self, info: &DeviceInfo) -> Result<Variant, VulkanError> {
        let wg = |n| vec![(0, n)];
        let (name, spirv, bindings, push_bytes, spec): (_, &'static [u8], _, _, _) = match self {
            Shader::MulMat(ty) => {
                let (name, spirv): (_, &'static [u8]) = match ty {
                    GgmlType::F32 => ("mul_mat_f32", spv!("mul_mat_f32")),
                    GgmlType::F16 => ("mul_mat_f16", spv!("mul_mat_f16")),
                    GgmlType::Q4_0 => ("mul_mat_q4_0", spv!("mul_mat_q4_0")),
                    GgmlType::Q4_1 => ("mul_mat_q4_1", spv!("mul_mat_q4_1")),
                    GgmlType::Q5_0 => ("mul_mat_q5_0", spv!("mul_mat_q5_0")),
                    GgmlType::Q5_1 => ("mul_mat_q5_1", spv!("mul_mat_q5_1")),
                    GgmlType::Q8_0 => ("mul_mat_q8_0", spv!("mul_mat_q8_0")),
                    GgmlType::Q4_K => ("mul_mat_q4_k", spv!("mul_mat_q4_k")),
                    GgmlType::Q5_K => ("mul_mat_q5_k", spv!("mul_mat_q5_k")),
                    GgmlType::Q6_K => ("mul_mat_q6_k", spv!("mul_mat_q6_k")),
                    ty => {
                        return Err(VulkanError::Invalid {
                            op: "mul_mat",
                            detail: format!("no shader for {ty} weights"),
                        })
                    }
                };
                (name, spirv, 3, 36, wg(MUL_MAT_WG))
            }
            Shader::QuantizeQ8 => ("quantize_q8", spv!("quantize_q8"), 2, 8, wg(WG)),
            Shader::MulMatQ8(ty) => {
                // The packed integer dot product where the device has it.
                let (name, spirv): (_, &'static [u8]) = match (ty, info.integer_dot_product) {
                    (GgmlType::Q8_0, true) => ("mul_mat_q8_q8_0_dot", spv!("mul_mat_q8_q8_0_dot")),
                    (GgmlType::Q8_0, false) => ("mul_mat_q8_q8_0", spv!("mul_mat_q8_q8_0")),
                    (GgmlType::Q4_0, true) => ("mul_mat_q8_q4_0_dot", spv!("mul_mat_q8_q4_0_dot")),
                    (GgmlType::Q4_0, false) => ("mul_mat_q8_q4_0", spv!("mul_mat_q8_q4_0")),
                    (GgmlType::Q4_1, true) => ("mul_mat_q8_q4_1_dot", spv!("mul_mat_q8_q4_1_dot")),
                    (GgmlType::Q4_1, false) => ("mul_mat_q8_q4_1", spv!("mul_mat_q8_q4_1")),
                    (GgmlType::Q5_0, true) => ("mul_mat_q8_q5_0_dot", spv!("mul_mat_q8_q5_0_dot")),
                    (GgmlType::Q5_0, false) => ("mul_mat_q8_q5_0", spv!("mul_mat_q8_q5_0")),
                    (GgmlType::Q5_1, true) => ("mul_mat_q8_q5_1_dot", spv!("mul_mat_q8_q5_1_dot")),
                    (GgmlType::Q5_1, false) => ("mul_mat_q8_q5_1", spv!("mul_mat_q8_q5_1")),
                    (GgmlType::Q4_K, true) => ("mul_mat_q8_q4_k_dot", spv!("mul_mat_q8_q4_k_dot")),
                    (GgmlType::Q4_K, false) => ("mul_mat_q8_q4_k", spv!("mul_mat_q8_q4_k")),
                    (GgmlType::Q5_K, true) => ("mul_mat_q8_q5_k_dot", spv!("mul_mat_q8_q5_k_dot")),
                    (GgmlType::Q5_K, false) => ("mul_mat_q8_q5_k", spv!("mul_mat_q8_q5_k")),
                    (GgmlType::Q6_K, true) => ("mul_mat_q8_q6_k_dot", spv!("mul_mat_q8_q6_k_dot")),
                    (GgmlType::Q6_K, false) => ("mul_mat_q8_q6_k", spv!("mul_mat_q8_q6_k")),
                    (ty, _) => {
                        return Err(VulkanError::Invalid {
                            op: "mul_mat_q8",
                            detail: format!("no integer shader for {ty} weights"),
                        })
                    }
                };
                (name, spirv, 3, 36, wg(MUL_MAT_WG))
            }
            Shader::RmsNorm => ("rms_norm", spv!("rms_norm"), 3, 20, wg(WG)),
            Shader::LayerNorm => ("layer_norm", spv!("layer_norm"), 3, 20, wg(WG)),
            Shader::Rope(false) => ("rope_normal", spv!("rope_normal"), 2, 24, wg(WG)),
            Shader::Rope(true) => ("rope_neox", spv!("rope_neox"), 2, 24, wg(WG)),
            Shader::SiluMul => ("silu_mul", spv!("silu_mul"), 2, 16, wg(WG)),
            Shader::GeluErf => ("gelu_erf", spv!("gelu_erf"), 2, 16, wg(WG)),
            Shader::GeluTanh => ("gelu_tanh", spv!("gelu_tanh"), 2, 16, wg(WG)),
            Shader::GeluQuick => ("gelu_quick", spv!("gelu_quick"), 2, 16, wg(WG)),
            Shader::Add => ("add", spv!("add"), 2, 16, wg(WG)),
            Shader::Softmax => ("softmax", spv!("softmax"), 1, 16, wg(WG)),
            Shader::Bilinear => ("bilinear", spv!("bilinear"), 2, 28, wg(WG)),
            Shader::F32ToF16 => ("f32_to_f16", spv!("f32_to_f16"), 2, 12, wg(WG)),
            // Fixed 64-wide workgroups (the shader sizes its per-invocation arrays by it).
            Shader::Attention => ("attention", spv!("attention"), 4, 52, vec![]),
            Shader::AttentionKvF32 => ("attention_kv_f32", spv!("attention_kv_f32"), 4, 52, vec![]),
            Shader::Vision(v) => return v.variant(),
        };
        Ok(Variant {
            name,
            spirv,
            bindings,
            push_bytes,
            spec,
        })
    }
}
