//! Device buffers: weights uploaded once, activations and caches that stay on the device,
//! results read back. On devices whose device-local memory the host can map (integrated GPUs,
//! lavapipe) uploads and reads are plain copies; elsewhere they go through a staging buffer.

use std::ptr::NonNull;
use std::sync::Arc;

use ash::vk;

use super::device::{Context, Vulkan};
use super::error::{api, VulkanError};

/// A storage buffer on the device.
pub struct Buffer {
    pub(crate) ctx: Arc<Context>,
    pub(crate) buffer: vk::Buffer,
    memory: vk::DeviceMemory,
    size: u64,
    /// The persistent host mapping, where the memory is host-visible and coherent.
    mapped: Option<NonNull<u8>>,
}

// SAFETY: the mapping belongs to this buffer alone and is only touched through its methods
// (writes take &mut self); the Vulkan handles are plain ids usable from any thread.
unsafe impl Send for Buffer {}
// SAFETY: &self methods only read through the mapping.
unsafe impl Sync for Buffer {}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: the buffer and memory were created by this context's device; recorders wait
        // for their work before returning, so no GPU work still uses them.
        unsafe {
            if self.mapped.is_some() {
                self.ctx.device.unmap_memory(self.memory);
            }
            self.ctx.device.destroy_buffer(self.buffer, None);
            self.ctx.device.free_memory(self.memory, None);
        }
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buffer({} bytes)", self.size)
    }
}

/// Where a buffer's memory should be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Device,
    Staging,
}

fn memory_type(
    ctx: &Context,
    bits: u32,
    want: vk::MemoryPropertyFlags,
) -> Option<(u32, vk::MemoryPropertyFlags)> {
    let m = &ctx.memory;
    (0..m.memory_type_count).find_map(|i| {
        let flags = m.memory_types[i as usize].property_flags;
        (bits & (1 << i) != 0 && flags.contains(want)).then_some((i, flags))
    })
}

fn create(
    ctx: &Arc<Context>,
    size: u64,
    place: Place,
    what: &'static str,
) -> Result<Buffer, VulkanError> {
    let max = ctx.info.max_storage_buffer_range;
    if place == Place::Device && size > max {
        return Err(VulkanError::TooLarge {
            bytes: size,
            max,
            what,
        });
    }
    // Vulkan forbids empty buffers; a 4-byte one stands in for an empty tensor.
    let alloc = size.max(4).next_multiple_of(4);
    let usage = vk::BufferUsageFlags::STORAGE_BUFFER
        | vk::BufferUsageFlags::TRANSFER_SRC
        | vk::BufferUsageFlags::TRANSFER_DST;
    let host = vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
    // SAFETY: creation with valid create infos; every error path frees what it made.
    unsafe {
        let d = &ctx.device;
        let buffer = d
            .create_buffer(
                &vk::BufferCreateInfo::default().size(alloc).usage(usage),
                None,
            )
            .map_err(api("vkCreateBuffer"))?;
        let req = d.get_buffer_memory_requirements(buffer);
        let choice = match place {
            // Device-local and mappable first (no staging copies), then device-local.
            Place::Device => memory_type(
                ctx,
                req.memory_type_bits,
                vk::MemoryPropertyFlags::DEVICE_LOCAL | host,
            )
            .or_else(|| {
                memory_type(
                    ctx,
                    req.memory_type_bits,
                    vk::MemoryPropertyFlags::DEVICE_LOCAL,
                )
            })
            .or_else(|| memory_type(ctx, req.memory_type_bits, vk::MemoryPropertyFlags::empty())),
            Place::Staging => memory_type(
                ctx,
                req.memory_type_bits,
                host | vk::MemoryPropertyFlags::HOST_CACHED,
            )
            .or_else(|| memory_type(ctx, req.memory_type_bits, host)),
        };
        let Some((type_index, flags)) = choice else {
            d.destroy_buffer(buffer, None);
            return Err(VulkanError::NoMemoryType { what });
        };
        let memory = match d.allocate_memory(
            &vk::MemoryAllocateInfo::default()
                .allocation_size(req.size)
                .memory_type_index(type_index),
            None,
        ) {
            Ok(m) => m,
            Err(e) => {
                d.destroy_buffer(buffer, None);
                return Err(match e {
                    vk::Result::ERROR_OUT_OF_DEVICE_MEMORY
                    | vk::Result::ERROR_OUT_OF_HOST_MEMORY => {
                        VulkanError::OutOfMemory { bytes: size, what }
                    }
                    e => api("vkAllocateMemory")(e),
                });
            }
        };
        let fail = |e| {
            d.destroy_buffer(buffer, None);
            d.free_memory(memory, None);
            e
        };
        d.bind_buffer_memory(buffer, memory, 0)
            .map_err(|e| fail(api("vkBindBufferMemory")(e)))?;
        let mapped = if flags.contains(host) {
            let p = d
                .map_memory(memory, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty())
                .map_err(|e| fail(api("vkMapMemory")(e)))?;
            NonNull::new(p.cast::<u8>())
        } else {
            None
        };
        Ok(Buffer {
            ctx: ctx.clone(),
            buffer,
            memory,
            size,
            mapped,
        })
    }
}

impl Vulkan {
    /// A device buffer of `bytes` (contents undefined until written), for `what` (named in
    /// errors).
    pub fn buffer(&self, bytes: u64, what: &'static str) -> Result<Buffer, VulkanError> {
        create(&self.ctx, bytes, Place::Device, what)
    }

    /// A device buffer holding `data` (weights: uploaded once).
    pub fn upload(&self, data: &[u8], what: &'static str) -> Result<Buffer, VulkanError> {
        let mut b = self.buffer(data.len() as u64, what)?;
        b.write(0, data)?;
        Ok(b)
    }

    /// [`Vulkan::upload`] of f32 values.
    pub fn upload_f32(&self, data: &[f32], what: &'static str) -> Result<Buffer, VulkanError> {
        self.upload(bytemuck::cast_slice(data), what)
    }

    /// Runs a one-off transfer command and waits for it.
    fn copy(
        &self,
        src: &Buffer,
        src_at: u64,
        dst: &Buffer,
        dst_at: u64,
        len: u64,
    ) -> Result<(), VulkanError> {
        let mut rec = self.recorder()?;
        rec.copy(src, src_at, dst, dst_at, len);
        rec.submit()
    }
}

impl Buffer {
    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn check(&self, offset: u64, len: usize, op: &'static str) -> Result<(), VulkanError> {
        if offset
            .checked_add(len as u64)
            .is_none_or(|end| end > self.size)
        {
            return Err(VulkanError::Invalid {
                op,
                detail: format!(
                    "{len} bytes at offset {offset} do not fit a {}-byte buffer",
                    self.size
                ),
            });
        }
        Ok(())
    }

    /// Copies `data` into the buffer at byte `offset`. Waits for nothing: call it only while no
    /// recorded work uses the buffer (recorders wait for their work on submit).
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), VulkanError> {
        self.check(offset, data.len(), "buffer write")?;
        if data.is_empty() {
            return Ok(());
        }
        if let Some(p) = self.mapped {
            // SAFETY: the mapping covers `size` bytes and the range was checked; &mut self
            // excludes other host access and no GPU work is in flight (contract above).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    data.as_ptr(),
                    p.as_ptr().add(offset as usize),
                    data.len(),
                )
            };
            return Ok(());
        }
        let vk = Vulkan {
            ctx: self.ctx.clone(),
        };
        let mut staging = create(
            &self.ctx,
            data.len() as u64,
            Place::Staging,
            "a staging upload",
        )?;
        staging.write(0, data)?;
        vk.copy(&staging, 0, self, offset, data.len() as u64)
    }

    /// Reads `out.len()` bytes from byte `offset`.
    pub fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), VulkanError> {
        self.check(offset, out.len(), "buffer read")?;
        if out.is_empty() {
            return Ok(());
        }
        if let Some(p) = self.mapped {
            // SAFETY: as in `write`; recorders have waited for their work, and the memory is
            // coherent, so the device's writes are visible.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    p.as_ptr().add(offset as usize),
                    out.as_mut_ptr(),
                    out.len(),
                )
            };
            return Ok(());
        }
        let vk = Vulkan {
            ctx: self.ctx.clone(),
        };
        let staging = create(
            &self.ctx,
            out.len() as u64,
            Place::Staging,
            "a staging read-back",
        )?;
        vk.copy(self, offset, &staging, 0, out.len() as u64)?;
        staging.read(0, out)
    }

    /// The whole buffer as f32 values.
    pub fn read_f32(&self) -> Result<Vec<f32>, VulkanError> {
        let mut out = vec![0f32; (self.size / 4) as usize];
        self.read(0, bytemuck::cast_slice_mut(&mut out))?;
        Ok(out)
    }

    /// Writes f32 values at value index `at`.
    pub fn write_f32(&mut self, at: usize, data: &[f32]) -> Result<(), VulkanError> {
        self.write(at as u64 * 4, bytemuck::cast_slice(data))
    }
}
