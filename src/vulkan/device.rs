//! Opening Vulkan: the loader (at run time), the instance, the choice of physical device and
//! what it offers, the logical device with its compute queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ash::vk;

use super::error::{api, VulkanError};
use super::info::{DeviceInfo, DeviceKind};
use super::pipeline::Pipeline;
use super::shaders::Shader;

/// The objects every buffer, pipeline and recorder needs; shared behind an `Arc` so buffers
/// can outlive the handle they were made from and are freed before the device.
pub(crate) struct Context {
    // Kept so the loader stays open while the instance lives.
    _entry: ash::Entry,
    pub(crate) instance: ash::Instance,
    pub(crate) device: ash::Device,
    pub(crate) queue: vk::Queue,
    pub(crate) memory: vk::PhysicalDeviceMemoryProperties,
    pub(crate) info: DeviceInfo,
    /// The queue family recorders' command pools are made for.
    pub(crate) family: u32,
    /// The queue is externally synchronised: one recorder submits at a time.
    pub(crate) submit: Mutex<()>,
    pub(crate) pipelines: Mutex<HashMap<Shader, Arc<Pipeline>>>,
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: every buffer and recorder holds an Arc<Context>, so none is alive here; the
        // device is idled before its children are destroyed, the instance last.
        unsafe {
            let _ = self.device.device_wait_idle();
            for p in self
                .pipelines
                .get_mut()
                .map(|m| m.drain())
                .into_iter()
                .flatten()
            {
                p.1.destroy(&self.device);
            }
            self.device.destroy_device(None);
            self.instance.destroy_instance(None);
        }
    }
}

/// A Vulkan device ready for compute: the handle the backend's buffers, pipelines and
/// recorders come from. Cheap to clone (shared).
#[derive(Clone)]
pub struct Vulkan {
    pub(crate) ctx: Arc<Context>,
}

impl std::fmt::Debug for Vulkan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vulkan")
            .field("device", &self.ctx.info.name)
            .finish()
    }
}

fn kind_of(t: vk::PhysicalDeviceType) -> DeviceKind {
    match t {
        vk::PhysicalDeviceType::DISCRETE_GPU => DeviceKind::Discrete,
        vk::PhysicalDeviceType::INTEGRATED_GPU => DeviceKind::Integrated,
        vk::PhysicalDeviceType::VIRTUAL_GPU => DeviceKind::Virtual,
        vk::PhysicalDeviceType::CPU => DeviceKind::Cpu,
        _ => DeviceKind::Other,
    }
}

/// The first queue family that can run compute.
fn compute_family(instance: &ash::Instance, pd: vk::PhysicalDevice) -> Option<u32> {
    // SAFETY: pd came from this instance's enumeration.
    let families = unsafe { instance.get_physical_device_queue_family_properties(pd) };
    families
        .iter()
        .position(|f| f.queue_flags.contains(vk::QueueFlags::COMPUTE) && f.queue_count > 0)
        .map(|i| i as u32)
}

/// Reads the device's properties and optional features.
fn describe(instance: &ash::Instance, pd: vk::PhysicalDevice) -> DeviceInfo {
    // SAFETY: pd came from this instance's enumeration; the chained structs outlive the calls
    // and only structs of versions the device reports are chained.
    unsafe {
        let props = instance.get_physical_device_properties(pd);
        let api_version = props.api_version;
        let name = props
            .device_name_as_c_str()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unnamed Vulkan device".into());
        let memory = instance.get_physical_device_memory_properties(pd);
        let device_local_bytes = memory.memory_heaps[..memory.memory_heap_count as usize]
            .iter()
            .filter(|h| h.flags.contains(vk::MemoryHeapFlags::DEVICE_LOCAL))
            .map(|h| h.size)
            .sum();

        let mut subgroup = vk::PhysicalDeviceSubgroupProperties::default();
        let mut props2 = vk::PhysicalDeviceProperties2::default().push_next(&mut subgroup);
        instance.get_physical_device_properties2(pd, &mut props2);

        let (mut f11, mut f12) = (
            vk::PhysicalDeviceVulkan11Features::default(),
            vk::PhysicalDeviceVulkan12Features::default(),
        );
        let mut dot = vk::PhysicalDeviceShaderIntegerDotProductFeatures::default();
        let v12 = api_version >= vk::API_VERSION_1_2;
        let v13 = api_version >= vk::API_VERSION_1_3;
        let mut feats = vk::PhysicalDeviceFeatures2::default();
        if v12 {
            feats = feats.push_next(&mut f11).push_next(&mut f12);
        }
        if v13 {
            feats = feats.push_next(&mut dot);
        }
        instance.get_physical_device_features2(pd, &mut feats);
        let limits = props.limits;
        DeviceInfo {
            name,
            kind: kind_of(props.device_type),
            api_version,
            device_local_bytes,
            shader_float16: f12.shader_float16 == vk::TRUE,
            shader_int8: f12.shader_int8 == vk::TRUE,
            storage_8bit: f12.storage_buffer8_bit_access == vk::TRUE,
            storage_16bit: f11.storage_buffer16_bit_access == vk::TRUE,
            integer_dot_product: dot.shader_integer_dot_product == vk::TRUE,
            subgroup_size: subgroup.subgroup_size,
            max_storage_buffer_range: limits.max_storage_buffer_range as u64,
            max_workgroup_invocations: limits.max_compute_work_group_invocations,
            max_workgroup_count: limits.max_compute_work_group_count,
            timestamp_period: (limits.timestamp_compute_and_graphics == vk::TRUE)
                .then_some(limits.timestamp_period),
        }
    }
}

impl Vulkan {
    /// Opens the best device: discrete GPU, then integrated, virtual, CPU (lavapipe). `index`
    /// picks one of [`Vulkan::devices`] instead.
    pub fn new(index: Option<usize>) -> Result<Vulkan, VulkanError> {
        Vulkan::open(index, true)
    }

    /// [`Vulkan::new`], with `optional: false` treating the device as if it lacked every
    /// optional feature (fp16, int8, 8/16-bit storage, integer dot products), so the baseline
    /// variants run: how a GPU without them (V3D, older parts) is tested anywhere.
    pub fn open(index: Option<usize>, optional: bool) -> Result<Vulkan, VulkanError> {
        // SAFETY: loading the loader runs its initialisers; it is the system's Vulkan loader,
        // found by the platform's usual library search.
        let entry = unsafe { ash::Entry::load() }.map_err(|e| VulkanError::Loader {
            reason: e.to_string(),
        })?;
        let instance = create_instance(&entry)?;
        // A clone: `entry` (the loaded library) must outlive the instance, which is destroyed
        // here when opening fails (dropping the last Entry first unloads the loader under it).
        match open(entry.clone(), instance.clone(), index, optional) {
            Ok(v) => Ok(v),
            Err(e) => {
                // SAFETY: nothing was created from the instance that is still alive (open
                // destroys what it made before failing), and the loader is still loaded.
                unsafe { instance.destroy_instance(None) };
                drop(entry);
                Err(e)
            }
        }
    }

    /// Every Vulkan device present with its description (in the loader's order, the indices
    /// [`Vulkan::new`] takes); empty when there is no loader.
    pub fn devices() -> Result<Vec<DeviceInfo>, VulkanError> {
        // SAFETY: as in `new`.
        let entry = unsafe { ash::Entry::load() }.map_err(|e| VulkanError::Loader {
            reason: e.to_string(),
        })?;
        let instance = create_instance(&entry)?;
        // SAFETY: the instance is destroyed after its last use here.
        let out = unsafe {
            let pds = instance.enumerate_physical_devices();
            let out = pds.map(|pds| pds.iter().map(|&pd| describe(&instance, pd)).collect());
            instance.destroy_instance(None);
            out
        };
        out.map_err(api("vkEnumeratePhysicalDevices"))
    }

    /// The chosen device's description.
    pub fn info(&self) -> &DeviceInfo {
        &self.ctx.info
    }
}

fn create_instance(entry: &ash::Entry) -> Result<ash::Instance, VulkanError> {
    // SAFETY: plain queries and creation with structs that outlive the call.
    unsafe {
        let loader = entry
            .try_enumerate_instance_version()
            .map_err(api("vkEnumerateInstanceVersion"))?
            .unwrap_or(vk::API_VERSION_1_0);
        if loader < vk::API_VERSION_1_1 {
            return Err(VulkanError::NoDevice { seen: 0 });
        }
        let app = vk::ApplicationInfo::default()
            .application_name(c"llava-edge")
            .engine_name(c"llava-edge")
            .api_version(loader.min(vk::API_VERSION_1_3));
        let info = vk::InstanceCreateInfo::default().application_info(&app);
        entry.create_instance(&info, None).map_err(|e| match e {
            // The loader found no driver (no ICD installed).
            vk::Result::ERROR_INCOMPATIBLE_DRIVER => VulkanError::NoDevice { seen: 0 },
            e => api("vkCreateInstance")(e),
        })
    }
}

fn open(
    entry: ash::Entry,
    instance: ash::Instance,
    index: Option<usize>,
    optional: bool,
) -> Result<Vulkan, VulkanError> {
    // SAFETY: the physical devices come from this instance; created objects are destroyed on
    // every error path below before returning.
    unsafe {
        let pds = instance
            .enumerate_physical_devices()
            .map_err(api("vkEnumeratePhysicalDevices"))?;
        let usable = |pd: vk::PhysicalDevice| {
            instance.get_physical_device_properties(pd).api_version >= vk::API_VERSION_1_1
                && compute_family(&instance, pd).is_some()
        };
        let pd = match index {
            Some(i) => {
                let pd = *pds.get(i).ok_or(VulkanError::DeviceIndex {
                    index: i,
                    count: pds.len(),
                })?;
                if !usable(pd) {
                    return Err(VulkanError::NoDevice { seen: pds.len() });
                }
                pd
            }
            None => pds
                .iter()
                .copied()
                .filter(|&pd| usable(pd))
                .min_by_key(|&pd| kind_of(instance.get_physical_device_properties(pd).device_type))
                .ok_or(VulkanError::NoDevice { seen: pds.len() })?,
        };
        let mut info = describe(&instance, pd);
        if !optional {
            info.shader_float16 = false;
            info.shader_int8 = false;
            info.storage_8bit = false;
            info.storage_16bit = false;
            info.integer_dot_product = false;
        }
        let family = compute_family(&instance, pd).expect("usable devices have one");

        // Enable the optional features the device has, for the variants that use them.
        let mut f11 = vk::PhysicalDeviceVulkan11Features::default()
            .storage_buffer16_bit_access(info.storage_16bit);
        let mut f12 = vk::PhysicalDeviceVulkan12Features::default()
            .shader_float16(info.shader_float16)
            .shader_int8(info.shader_int8)
            .storage_buffer8_bit_access(info.storage_8bit);
        let mut dot = vk::PhysicalDeviceShaderIntegerDotProductFeatures::default()
            .shader_integer_dot_product(info.integer_dot_product);
        let priorities = [1.0f32];
        let queues = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(family)
            .queue_priorities(&priorities)];
        let mut create = vk::DeviceCreateInfo::default().queue_create_infos(&queues);
        if info.api_version >= vk::API_VERSION_1_2 {
            create = create.push_next(&mut f11).push_next(&mut f12);
        }
        if info.api_version >= vk::API_VERSION_1_3 {
            create = create.push_next(&mut dot);
        }
        let device = instance
            .create_device(pd, &create, None)
            .map_err(api("vkCreateDevice"))?;
        let queue = device.get_device_queue(family, 0);
        let memory = instance.get_physical_device_memory_properties(pd);
        Ok(Vulkan {
            ctx: Arc::new(Context {
                _entry: entry,
                instance,
                device,
                queue,
                memory,
                info,
                family,
                submit: Mutex::new(()),
                pipelines: Mutex::new(HashMap::new()),
            }),
        })
    }
}

impl Vulkan {
    /// The pipeline of `shader`, built on first use and kept.
    pub(crate) fn pipeline(&self, shader: Shader) -> Result<Arc<Pipeline>, VulkanError> {
        let mut cache = self.ctx.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cache.get(&shader) {
            return Ok(p.clone());
        }
        let v = shader.variant(&self.ctx.info)?;
        let p = Arc::new(Pipeline::new(
            &self.ctx.device,
            v.name,
            v.spirv,
            v.bindings,
            v.push_bytes,
            &v.spec,
        )?);
        cache.insert(shader, p.clone());
        Ok(p)
    }
}
