//! Compute pipelines from SPIR-V: one descriptor set of storage buffers, push constants, and
//! specialization constants (workgroup size and the like) fixed at creation.

use ash::vk;

use super::error::{api, VulkanError};

/// A compute pipeline and the layouts its dispatches bind against.
pub(crate) struct Pipeline {
    pub(crate) pipeline: vk::Pipeline,
    pub(crate) layout: vk::PipelineLayout,
    pub(crate) set_layout: vk::DescriptorSetLayout,
    /// Storage buffers the shader binds, at bindings 0..n.
    pub(crate) bindings: u32,
    /// Bytes of push constants.
    pub(crate) push_bytes: u32,
}

impl Pipeline {
    /// Builds the pipeline of `spirv` (bytes, little-endian words) with `bindings` storage
    /// buffers, `push_bytes` of push constants and the given specialization constants (id,
    /// value).
    pub(crate) fn new(
        device: &ash::Device,
        name: &'static str,
        spirv: &[u8],
        bindings: u32,
        push_bytes: u32,
        spec: &[(u32, u32)],
    ) -> Result<Pipeline, VulkanError> {
        if !spirv.len().is_multiple_of(4)
            || spirv.len() < 20
            || spirv[..4] != 0x0723_0203u32.to_le_bytes()
        {
            return Err(VulkanError::BadSpirv {
                name,
                len: spirv.len(),
            });
        }
        let words: Vec<u32> = spirv
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let binding_list: Vec<_> = (0..bindings)
            .map(|b| {
                vk::DescriptorSetLayoutBinding::default()
                    .binding(b)
                    .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                    .descriptor_count(1)
                    .stage_flags(vk::ShaderStageFlags::COMPUTE)
            })
            .collect();
        let entries: Vec<_> = spec
            .iter()
            .enumerate()
            .map(|(i, &(id, _))| vk::SpecializationMapEntry {
                constant_id: id,
                offset: 4 * i as u32,
                size: 4,
            })
            .collect();
        let values: Vec<u8> = spec.iter().flat_map(|&(_, v)| v.to_le_bytes()).collect();
        // SAFETY: create infos reference locals that outlive the calls; every error path
        // destroys what was made before it.
        unsafe {
            let module = device
                .create_shader_module(&vk::ShaderModuleCreateInfo::default().code(&words), None)
                .map_err(api("vkCreateShaderModule"))?;
            let set_layout = match device.create_descriptor_set_layout(
                &vk::DescriptorSetLayoutCreateInfo::default().bindings(&binding_list),
                None,
            ) {
                Ok(l) => l,
                Err(e) => {
                    device.destroy_shader_module(module, None);
                    return Err(api("vkCreateDescriptorSetLayout")(e));
                }
            };
            let ranges = [vk::PushConstantRange::default()
                .stage_flags(vk::ShaderStageFlags::COMPUTE)
                .size(push_bytes)];
            let set_layouts = [set_layout];
            let mut layout_info = vk::PipelineLayoutCreateInfo::default().set_layouts(&set_layouts);
            if push_bytes > 0 {
                layout_info = layout_info.push_constant_ranges(&ranges);
            }
            let layout = match device.create_pipeline_layout(&layout_info, None) {
                Ok(l) => l,
                Err(e) => {
                    device.destroy_descriptor_set_layout(set_layout, None);
                    device.destroy_shader_module(module, None);
                    return Err(api("vkCreatePipelineLayout")(e));
                }
            };
            let spec_info = vk::SpecializationInfo::default()
                .map_entries(&entries)
                .data(&values);
            let stage = vk::PipelineShaderStageCreateInfo::default()
                .stage(vk::ShaderStageFlags::COMPUTE)
                .module(module)
                .name(c"main")
                .specialization_info(&spec_info);
            let created = device.create_compute_pipelines(
                vk::PipelineCache::null(),
                &[vk::ComputePipelineCreateInfo::default()
                    .stage(stage)
                    .layout(layout)],
                None,
            );
            device.destroy_shader_module(module, None);
            match created {
                Ok(p) => Ok(Pipeline {
                    pipeline: p[0],
                    layout,
                    set_layout,
                    bindings,
                    push_bytes,
                }),
                Err((_, e)) => {
                    device.destroy_pipeline_layout(layout, None);
                    device.destroy_descriptor_set_layout(set_layout, None);
                    Err(api("vkCreateComputePipelines")(e))
                }
            }
        }
    }

    /// Destroys the pipeline and its layouts.
    ///
    /// # Safety
    /// No recorded work may still use it, and it is not used afterwards.
    pub(crate) unsafe fn destroy(&self, device: &ash::Device) {
        // SAFETY: the caller guarantees nothing uses these any more.
        unsafe {
            device.destroy_pipeline(self.pipeline, None);
            device.destroy_pipeline_layout(self.layout, None);
            device.destroy_descriptor_set_layout(self.set_layout, None);
        }
    }
}
