//! The streaming reference: a kernel that only copies memory, timed like
//! the frame kernels, so their GB/s can be read as a share of what the
//! device's memory allows (the design notes, kept outside this repository, quote ~2 TB/s for an H100).

use super::GpuBackend;
use crate::error::{Error, Result};

/// The copy kernel.
pub const STREAM_WGSL: &str = include_str!("../../shaders/stream.wgsl");

/// Threads per workgroup and workgroups per dispatch row (keep in sync with
/// shaders/stream.wgsl).
const STREAM_GROUP: u64 = 256;
const STREAM_ROW: u64 = 4096;

/// One run of [`GpuBackend::stream_copy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamCopy {
    /// Nanoseconds the passes took together.
    pub ns: u64,
    /// Bytes one pass copied: those asked for, rounded down to 16 and
    /// capped at what one binding holds.
    pub bytes: u64,
    /// Whether `ns` is from GPU timestamps (else the host clock around
    /// the submission).
    pub timed: bool,
}

impl GpuBackend {
    /// Copies `bytes` (rounded down to 16, capped at what one binding
    /// holds) from one device buffer to another with a compute kernel,
    /// `passes` times back to back in one submission, and returns how long
    /// the passes took together by GPU timestamps, or on the host clock
    /// around the submission where the adapter has none, and how many bytes
    /// one pass copied. Both buffers are counted by the ledger while they
    /// live.
    ///
    /// Many passes at once keep the GPU busy: one short pass per submission
    /// leaves it idle between them, and an idle GPU lowers its clock (an
    /// H100 went from 1980 to 345 MHz within a second).
    ///
    /// # Errors
    /// [`Error::Budget`] when the ledger refuses the buffers, or [`Error::Gpu`].
    pub fn stream_copy(&self, bytes: u64, passes: u32) -> Result<StreamCopy> {
        let asked = bytes;
        let bytes = bytes.min(self.binding_ceiling) / 16 * 16;
        if bytes == 0 {
            return Err(Error::invalid("stream size", asked, "at least 16 bytes"));
        }
        if passes == 0 {
            return Err(Error::invalid("stream passes", passes, "at least one"));
        }
        use wgpu::BufferUsages as U;
        let src = self.buffer("stream source", bytes, U::STORAGE)?;
        let dst = self.buffer("stream destination", bytes, U::STORAGE)?;
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("stream.wgsl"),
            source: wgpu::ShaderSource::Wgsl(STREAM_WGSL.into()),
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("stream"),
            layout: None,
            module: &module,
            entry_point: Some("stream"),
            compilation_options: Default::default(),
            cache: None,
        });
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("stream"),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: src.buffer.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: dst.buffer.as_entire_binding() },
            ],
        });
        // Its two queries, their resolve buffer and its readback, counted
        // as a slot's timer is, whether or not the adapter has timestamps.
        let _timer_bytes = self.ledger.reserve(3 * 16, "stream timer")?;
        let timer = self.timestamps.then(|| {
            let set = self.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("stream timer"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            });
            let make = |label, usage| {
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: 16,
                    usage,
                    mapped_at_creation: false,
                })
            };
            (
                set,
                make("stream resolve", U::QUERY_RESOLVE | U::COPY_SRC),
                make("stream read", U::MAP_READ | U::COPY_DST),
            )
        });
        let groups = (bytes / 16).div_ceil(STREAM_GROUP);
        let (gx, gy) = (groups.min(STREAM_ROW) as u32, groups.div_ceil(STREAM_ROW) as u32);
        let poll = |what| super::poll(&self.device, what);
        // One untimed pass first, submitted and finished on its own, so the
        // timed one reads and writes memory the GPU has touched, as the
        // frame kernels' reused buffers are (and a host clock times it alone).
        let mut warm = self.device.create_command_encoder(&Default::default());
        {
            let desc = wgpu::ComputePassDescriptor { label: Some("warm"), timestamp_writes: None };
            let mut pass = warm.begin_compute_pass(&desc);
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(gx, gy, 1);
        }
        self.queue.submit([warm.finish()]);
        poll(wgpu::PollType::wait_indefinitely())?;
        let mut encoder = self.device.create_command_encoder(&Default::default());
        // The first pass writes the start, the last the end: what is timed
        // is every pass and the barriers between them, as frames in a row.
        for i in 0..passes {
            let timestamp_writes = super::pass_timestamps(
                timer.as_ref().map(|t| &t.0),
                (i == 0).then_some(0),
                (i + 1 == passes).then_some(1),
            );
            let mut pass =
                encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("stream"), timestamp_writes });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(gx, gy, 1);
        }
        if let Some((set, resolve, read)) = &timer {
            encoder.resolve_query_set(set, 0..2, resolve, 0);
            encoder.copy_buffer_to_buffer(resolve, 0, read, 0, 16);
        }
        let started = std::time::Instant::now();
        self.queue.submit([encoder.finish()]);
        poll(wgpu::PollType::wait_indefinitely())?;
        let host = started.elapsed().as_nanos() as u64;
        self.check_error()?;
        let Some((_, _, read)) = timer else { return Ok(StreamCopy { ns: host, bytes, timed: false }) };
        let rx = super::staging::request_map(&read, wgpu::MapMode::Read);
        poll(wgpu::PollType::wait_indefinitely())?;
        rx.recv()
            .map_err(|_| Error::Gpu("timer map never completed".into()))?
            .map_err(|e| Error::Gpu(format!("timer map failed: {e}")))?;
        let [a, b]: [u64; 2] = {
            let view = read.get_mapped_range(..).map_err(|e| Error::Gpu(format!("timer read: {e}")))?;
            bytemuck::pod_read_unaligned(&view)
        };
        read.unmap();
        let ns = (b.saturating_sub(a) as f64 * self.queue.get_timestamp_period() as f64) as u64;
        Ok(StreamCopy { ns, bytes, timed: true })
    }
}
