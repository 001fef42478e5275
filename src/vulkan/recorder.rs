//! One command buffer that batches dispatches (and copies), each followed by a barrier so the
//! next sees its writes, submitted once and waited for.

use std::marker::PhantomData;
use std::sync::Arc;

use ash::vk;

use super::buffer::Buffer;
use super::device::Vulkan;
use super::error::{api, VulkanError};
use super::pipeline::Pipeline;
use super::shaders::Shader;

/// Descriptor sets per pool; a recorder adds pools as its dispatches need them.
const SETS_PER_POOL: u32 = 256;
/// Storage-buffer bindings per set, at most (the attention shader's four).
const MAX_BINDINGS: u32 = 4;
/// Timestamps per query pool when profiling; a recorder adds pools as it needs them.
const STAMPS_PER_POOL: u32 = 512;

/// The profile's timestamps: one at the start, then one after each dispatch or copy (at the
/// bottom of the pipe, after its barrier: the previous op has finished), so consecutive stamps
/// bracket one op.
struct Timing {
    /// Nanoseconds per tick.
    period: f32,
    pools: Vec<vk::QueryPool>,
    /// Stamps written into the last pool.
    used: u32,
    /// What ran between stamp i and i + 1.
    labels: Vec<String>,
    /// A pool could not be made: this recorder's profile is dropped, its work is not.
    failed: bool,
}

/// Records work for the device. Dropped without [`Recorder::submit`], it discards the work.
/// The buffers it records work on are borrowed for `'a`, so none can be freed or written from
/// the host while the device may still use them:
///
/// ```compile_fail
/// # use llava_edge::vulkan::{Vulkan, VulkanError};
/// # fn f(vk: &Vulkan) -> Result<(), VulkanError> {
/// let mut rec = vk.recorder()?;
/// {
///     let x = vk.upload_f32(&[1.0], "x")?;
///     rec.add(&x, &x, 1)?;
/// } // x would be freed before the work runs: refused at compile time
/// rec.submit()
/// # }
/// ```
pub struct Recorder<'a> {
    vk: Vulkan,
    command_pool: vk::CommandPool,
    cmd: vk::CommandBuffer,
    pools: Vec<vk::DescriptorPool>,
    sets_left: u32,
    /// Pipelines used, kept alive until the work is done.
    used: Vec<Arc<Pipeline>>,
    dispatches: usize,
    timing: Option<Timing>,
    _buffers: PhantomData<&'a Buffer>,
}

impl Vulkan {
    /// A recorder for a batch of work.
    pub fn recorder<'a>(&self) -> Result<Recorder<'a>, VulkanError> {
        let d = &self.ctx.device;
        // Each recorder has its own command pool: a pool must not be used from two threads at
        // once, and recorders may record on several.
        // SAFETY: the pool and buffer are this recorder's own; the buffer is begun before use
        // and both are freed on every error path and in Drop.
        let (command_pool, cmd) = unsafe {
            let pool = d
                .create_command_pool(
                    &vk::CommandPoolCreateInfo::default()
                        .queue_family_index(self.ctx.family)
                        .flags(vk::CommandPoolCreateFlags::TRANSIENT),
                    None,
                )
                .map_err(api("vkCreateCommandPool"))?;
            let begun = d
                .allocate_command_buffers(
                    &vk::CommandBufferAllocateInfo::default()
                        .command_pool(pool)
                        .level(vk::CommandBufferLevel::PRIMARY)
                        .command_buffer_count(1),
                )
                .map_err(api("vkAllocateCommandBuffers"))
                .and_then(|cmds| {
                    d.begin_command_buffer(
                        cmds[0],
                        &vk::CommandBufferBeginInfo::default()
                            .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT),
                    )
                    .map_err(api("vkBeginCommandBuffer"))
                    .map(|_| cmds[0])
                });
            match begun {
                Ok(cmd) => (pool, cmd),
                Err(e) => {
                    // Destroying the pool frees its buffers.
                    d.destroy_command_pool(pool, None);
                    return Err(e);
                }
            }
        };
        Ok(Recorder {
            vk: self.clone(),
            command_pool,
            cmd,
            pools: Vec::new(),
            sets_left: 0,
            used: Vec::new(),
            dispatches: 0,
            timing: super::profile::enabled()
                .then_some(self.ctx.info.timestamp_period)
                .flatten()
                .map(|period| Timing {
                    period,
                    pools: Vec::new(),
                    used: STAMPS_PER_POOL,
                    labels: Vec::new(),
                    failed: false,
                }),
            _buffers: PhantomData,
        })
    }
}

impl<'a> Recorder<'a> {
    /// Dispatches done so far.
    pub fn dispatches(&self) -> usize {
        self.dispatches
    }

    /// When profiling, writes the stamp that closes the op just recorded (`label`), and the
    /// opening stamp first if this is the first op.
    fn stamp(&mut self, label: impl FnOnce() -> String) {
        let first = match &self.timing {
            Some(t) if !t.failed => t.pools.is_empty(),
            _ => return,
        };
        let done =
            (if first { self.write_stamp() } else { Ok(()) }).and_then(|_| self.write_stamp());
        if let Some(t) = &mut self.timing {
            match done {
                Ok(()) => t.labels.push(label()),
                Err(_) => t.failed = true,
            }
        }
    }

    fn write_stamp(&mut self) -> Result<(), VulkanError> {
        let Some(t) = &mut self.timing else {
            return Ok(());
        };
        let d = &self.vk.ctx.device;
        // SAFETY: the pools are this recorder's own, reset in the command buffer before their
        // first stamp, and destroyed in Drop after the work is done or discarded.
        unsafe {
            if t.used == STAMPS_PER_POOL {
                let pool = d
                    .create_query_pool(
                        &vk::QueryPoolCreateInfo::default()
                            .query_type(vk::QueryType::TIMESTAMP)
                            .query_count(STAMPS_PER_POOL),
                        None,
                    )
                    .map_err(api("vkCreateQueryPool"))?;
                t.pools.push(pool);
                t.used = 0;
                d.cmd_reset_query_pool(self.cmd, pool, 0, STAMPS_PER_POOL);
            }
            let pool = *t.pools.last().expect("a pool was just made");
            d.cmd_write_timestamp(
                self.cmd,
                vk::PipelineStageFlags::BOTTOM_OF_PIPE,
                pool,
                t.used,
            );
        }
        t.used += 1;
        Ok(())
    }

    /// After the work ran: each op's device time into the process's profile.
    fn gather(&mut self) -> Result<(), VulkanError> {
        let Some(t) = self.timing.as_ref().filter(|t| !t.failed) else {
            return Ok(());
        };
        let d = &self.vk.ctx.device;
        let mut stamps = Vec::with_capacity(t.labels.len() + 1);
        for (i, &pool) in t.pools.iter().enumerate() {
            let n = if i + 1 == t.pools.len() {
                t.used
            } else {
                STAMPS_PER_POOL
            };
            let mut part = vec![0u64; n as usize];
            // SAFETY: the fence was waited on, so every stamp written is available.
            unsafe {
                d.get_query_pool_results(
                    pool,
                    0,
                    &mut part,
                    vk::QueryResultFlags::TYPE_64 | vk::QueryResultFlags::WAIT,
                )
            }
            .map_err(api("vkGetQueryPoolResults"))?;
            stamps.extend(part);
        }
        for (label, w) in t.labels.iter().zip(stamps.windows(2)) {
            let ticks = w[1].wrapping_sub(w[0]);
            super::profile::add(label, ticks as f64 * f64::from(t.period) * 1e-9);
        }
        Ok(())
    }

    fn descriptor_set(
        &mut self,
        layout: vk::DescriptorSetLayout,
    ) -> Result<vk::DescriptorSet, VulkanError> {
        let d = &self.vk.ctx.device;
        // SAFETY: pools are this recorder's own and destroyed only after its work is done.
        unsafe {
            if self.sets_left == 0 {
                let sizes = [vk::DescriptorPoolSize {
                    ty: vk::DescriptorType::STORAGE_BUFFER,
                    descriptor_count: SETS_PER_POOL * MAX_BINDINGS,
                }];
                let pool = d
                    .create_descriptor_pool(
                        &vk::DescriptorPoolCreateInfo::default()
                            .max_sets(SETS_PER_POOL)
                            .pool_sizes(&sizes),
                        None,
                    )
                    .map_err(api("vkCreateDescriptorPool"))?;
                self.pools.push(pool);
                self.sets_left = SETS_PER_POOL;
            }
            self.sets_left -= 1;
            let layouts = [layout];
            Ok(d.allocate_descriptor_sets(
                &vk::DescriptorSetAllocateInfo::default()
                    .descriptor_pool(*self.pools.last().expect("a pool was just made"))
                    .set_layouts(&layouts),
            )
            .map_err(api("vkAllocateDescriptorSets"))?[0])
        }
    }

    /// Records `shader` over `groups` workgroups with `buffers` at bindings 0.. and `push`
    /// (bytes, the shader's push-constant block), then a barrier: later work sees its writes.
    pub fn dispatch(
        &mut self,
        shader: Shader,
        buffers: &[&'a Buffer],
        push: &[u8],
        groups: [u32; 3],
    ) -> Result<(), VulkanError> {
        let p = self.vk.pipeline(shader)?;
        let max = self.vk.ctx.info.max_workgroup_count;
        if buffers.len() != p.bindings as usize || push.len() != p.push_bytes as usize {
            return Err(VulkanError::Invalid {
                op: "dispatch",
                detail: format!(
                    "{shader:?} takes {} buffers and {} push bytes, got {} and {}",
                    p.bindings,
                    p.push_bytes,
                    buffers.len(),
                    push.len()
                ),
            });
        }
        if (0..3).any(|i| groups[i] > max[i]) {
            return Err(VulkanError::Invalid {
                op: "dispatch",
                detail: format!("{shader:?}: {groups:?} workgroups exceed the device's {max:?}"),
            });
        }
        if groups.contains(&0) {
            return Ok(());
        }
        let set = self.descriptor_set(p.set_layout)?;
        let infos: Vec<[vk::DescriptorBufferInfo; 1]> = buffers
            .iter()
            .map(|b| {
                [vk::DescriptorBufferInfo {
                    buffer: b.buffer,
                    offset: 0,
                    range: vk::WHOLE_SIZE,
                }]
            })
            .collect();
        let writes: Vec<_> = infos
            .iter()
            .enumerate()
            .map(|(i, info)| {
                vk::WriteDescriptorSet::default()
                    .dst_set(set)
                    .dst_binding(i as u32)
                    .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                    .buffer_info(info)
            })
            .collect();
        let d = &self.vk.ctx.device;
        // SAFETY: the set, pipeline and buffers are alive until the work completes: the
        // recorder keeps the pipeline and its pools, the buffers are borrowed for 'a, and
        // submit waits for the work (an unsubmitted recording never runs).
        unsafe {
            d.update_descriptor_sets(&writes, &[]);
            d.cmd_bind_pipeline(self.cmd, vk::PipelineBindPoint::COMPUTE, p.pipeline);
            d.cmd_bind_descriptor_sets(
                self.cmd,
                vk::PipelineBindPoint::COMPUTE,
                p.layout,
                0,
                &[set],
                &[],
            );
            if !push.is_empty() {
                d.cmd_push_constants(self.cmd, p.layout, vk::ShaderStageFlags::COMPUTE, 0, push);
            }
            d.cmd_dispatch(self.cmd, groups[0], groups[1], groups[2]);
            self.barrier();
        }
        self.used.push(p);
        self.dispatches += 1;
        self.stamp(|| format!("{shader:?}"));
        Ok(())
    }

    /// Records a copy of `len` bytes between buffers, then a barrier.
    pub fn copy(&mut self, src: &'a Buffer, src_at: u64, dst: &'a Buffer, dst_at: u64, len: u64) {
        let region = vk::BufferCopy {
            src_offset: src_at,
            dst_offset: dst_at,
            size: len,
        };
        // SAFETY: both buffers are borrowed for 'a, past the work (as in `dispatch`).
        unsafe {
            self.vk
                .ctx
                .device
                .cmd_copy_buffer(self.cmd, src.buffer, dst.buffer, &[region]);
            self.barrier();
        }
        self.stamp(|| "copy".to_string());
    }

    /// Makes every earlier shader or transfer write visible to every later read or write.
    unsafe fn barrier(&self) {
        let all = vk::AccessFlags::SHADER_READ
            | vk::AccessFlags::SHADER_WRITE
            | vk::AccessFlags::TRANSFER_READ
            | vk::AccessFlags::TRANSFER_WRITE;
        let stages = vk::PipelineStageFlags::COMPUTE_SHADER | vk::PipelineStageFlags::TRANSFER;
        let barrier = vk::MemoryBarrier::default()
            .src_access_mask(all)
            .dst_access_mask(all);
        // The host reads mapped memory after the fence: make the writes visible to it too.
        let host = vk::MemoryBarrier::default()
            .src_access_mask(all)
            .dst_access_mask(vk::AccessFlags::HOST_READ);
        // SAFETY: the command buffer is recording (caller's context).
        unsafe {
            self.vk.ctx.device.cmd_pipeline_barrier(
                self.cmd,
                stages,
                stages | vk::PipelineStageFlags::HOST,
                vk::DependencyFlags::empty(),
                &[barrier, host],
                &[],
                &[],
            );
        }
    }

    /// Submits the recorded work and waits for it to finish.
    pub fn submit(mut self) -> Result<(), VulkanError> {
        let ctx = self.vk.ctx.clone();
        let d = &ctx.device;
        let _queue = ctx.submit.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the command buffer was begun by this recorder; the queue is used under the
        // submit mutex; the fence is waited on before anything used is released.
        unsafe {
            d.end_command_buffer(self.cmd)
                .map_err(api("vkEndCommandBuffer"))?;
            let fence = d
                .create_fence(&vk::FenceCreateInfo::default(), None)
                .map_err(api("vkCreateFence"))?;
            let cmds = [self.cmd];
            let submit = [vk::SubmitInfo::default().command_buffers(&cmds)];
            let done = d
                .queue_submit(ctx.queue, &submit, fence)
                .map_err(api("vkQueueSubmit"))
                .and_then(|_| {
                    d.wait_for_fences(&[fence], true, u64::MAX)
                        .map_err(api("vkWaitForFences"))
                });
            d.destroy_fence(fence, None);
            if let Err(e) = done {
                // The work may still be pending: idle the device before Drop frees its objects.
                let _ = d.device_wait_idle();
                return Err(e);
            }
        }
        self.used.clear();
        self.gather()
    }
}

impl Drop for Recorder<'_> {
    fn drop(&mut self) {
        let ctx = &self.vk.ctx;
        // SAFETY: either submit waited for the work, or it was never submitted; the pools and
        // command buffer are this recorder's own (destroying the command pool frees it).
        unsafe {
            for p in self.pools.drain(..) {
                ctx.device.destroy_descriptor_pool(p, None);
            }
            for p in self.timing.iter_mut().flat_map(|t| t.pools.drain(..)) {
                ctx.device.destroy_query_pool(p, None);
            }
            ctx.device.destroy_command_pool(self.command_pool, None);
        }
    }
}
