//! The wgpu backend: device, kernels, and banded frame processing.
//!
//! A frame is processed in bands of rows so that no binding exceeds the
//! adapter's `max_storage_buffer_binding_size` (128 MiB on many adapters;
//! an 8K frame in f32 RGBA is 531 MB). Each band is loaded with a halo of
//! `sum of blur radii` rows on every side that is not a frame edge, so its
//! stored rows are exactly what a whole-frame pass would give. Frames that
//! fit are one band with no halo.
//!
//! Per band: the packed rows go host → mapped staging buffer → `packed`
//! (never `queue.write_buffer`, measured 3x slower for frame-sized data),
//! then one compute pass runs the kernels, which write their results back
//! into `packed` from row 0, and that is copied to a mapped readback buffer.
//! A plan without blur is one kernel (`color`); a blur is two, horizontal
//! reading the packed pixels and vertical writing them, with the color
//! stages fused in: per 8K RGBA8 frame that is about 40 bytes of memory
//! traffic per pixel instead of the 100 a separate load/store would cost.

mod adapter;
mod kernels;

pub use adapter::{AdapterSummary, choose, instance, list_adapters};
pub use kernels::{BLUR_WGSL, COLOR_WGSL, COMMON_WGSL, Kernels, Params, shader_sources};

use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::io::{HostFrame, PixelFormat};
use crate::ops::{Affine, Plan};

/// Bytes of f32 RGBA per pixel in the scratch buffers.
const SCRATCH_BPP: u64 = 16;

/// Bytes per pixel that bound a band's rows: the f32 scratch when the plan
/// blurs, else only the packed pixels.
fn band_bpp(plan: &Plan, format: PixelFormat) -> u64 {
    if plan.passes.is_empty() { format.bytes_per_pixel() as u64 } else { SCRATCH_BPP }
}

/// How to open the GPU backend.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Only adapters whose name contains this (case-insensitive).
    pub adapter: Option<String>,
    /// Refuse software rasterizers (the `auto` rule). By default, false.
    pub hardware_only: bool,
    /// Pretend the binding limit is this small, to exercise banding in
    /// tests. By default, the adapter's own limit.
    pub max_binding_override: Option<u64>,
}

/// A device with compiled kernels, ready to process frames.
pub struct GpuBackend {
    device: wgpu::Device,
    queue: wgpu::Queue,
    kernels: Kernels,
    summary: AdapterSummary,
    why: String,
    binding_limit: u64,
    max_buffer: u64,
    timestamps: bool,
    buffers: Option<BandBuffers>,
    error: Arc<Mutex<Option<String>>>,
}

/// The buffers of one band shape, kept while frames keep that shape.
struct BandBuffers {
    key: (u32, PixelFormat, u32, bool),
    /// Packed rows in and out (STORAGE | COPY_SRC | COPY_DST).
    packed: wgpu::Buffer,
    /// f32 intermediates, only for plans that blur.
    scratch: Option<[wgpu::Buffer; 2]>,
    upload: wgpu::Buffer,
    readback: wgpu::Buffer,
    timer: Option<Timer>,
    bytes: u64,
}

struct Timer {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    read: wgpu::Buffer,
}

/// The band layout of a frame under a binding limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Banding {
    /// Output rows per band.
    pub band_rows: u32,
    /// Context rows each side.
    pub halo: u32,
    /// Rows the scratch buffers hold (band + both halos, at most the frame).
    pub scratch_rows: u32,
}

impl Banding {
    /// Lays out a `width x height` frame for `plan` when one binding may
    /// hold at most `limit` bytes.
    ///
    /// # Errors
    /// [`Error::Gpu`] when not even one row plus the blur halo fits.
    pub fn new(width: u32, height: u32, format: PixelFormat, plan: &Plan, limit: u64) -> Result<Self> {
        let row = width as u64 * band_bpp(plan, format);
        // Dispatch height is capped at 65535 workgroups of WORKGROUP.1 rows.
        let max_rows = (limit / row).min(65535 * kernels::WORKGROUP.1 as u64) as u32;
        if max_rows >= height {
            return Ok(Banding { band_rows: height, halo: 0, scratch_rows: height });
        }
        let halo = plan.halo();
        if max_rows <= 2 * halo {
            return Err(Error::Gpu(format!(
                "blur radius total {halo} px needs {} rows of {width}-px context, more than the {} rows a {} MiB binding holds",
                2 * halo + 1,
                max_rows,
                limit >> 20
            )));
        }
        let band_rows = max_rows - 2 * halo;
        Ok(Banding { band_rows, halo, scratch_rows: (band_rows + 2 * halo).min(height) })
    }
}

impl GpuBackend {
    /// Opens the best adapter that matches `options`.
    ///
    /// # Errors
    /// [`Error::Gpu`] when no adapter qualifies or the device cannot be created.
    pub fn new(options: &GpuOptions) -> Result<Self> {
        let instance = instance();
        let (adapter, summary, why) =
            choose(list_adapters(&instance), options.adapter.as_deref(), options.hardware_only)?;
        let mut features = wgpu::Features::empty();
        if summary.timestamps {
            features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("framepipe"),
            required_features: features,
            // Ask for everything the adapter offers: the binding and buffer
            // size limits decide how many bands a frame needs.
            required_limits: adapter.limits(),
            memory_hints: wgpu::MemoryHints::Performance,
            ..Default::default()
        }))
        .map_err(|e| Error::Gpu(format!("{}: cannot create device: {e}", summary.name)))?;
        let error = Arc::new(Mutex::new(None));
        let sink = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| e.to_string().split_whitespace().collect::<Vec<_>>().join(" "));
        }));
        let limits = device.limits();
        let kernels = Kernels::new(&device);
        let binding_limit = options
            .max_binding_override
            .unwrap_or(u64::MAX)
            .min(limits.max_storage_buffer_binding_size)
            .min(limits.max_buffer_size);
        Ok(GpuBackend {
            device,
            queue,
            kernels,
            timestamps: summary.timestamps,
            summary,
            why,
            binding_limit,
            max_buffer: limits.max_buffer_size,
            buffers: None,
            error,
        })
    }

    /// The adapter in use.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.summary
    }

    /// Why this adapter was chosen.
    pub fn reason(&self) -> &str {
        &self.why
    }

    /// Bytes of GPU buffers currently held for frames.
    pub fn allocated_bytes(&self) -> u64 {
        self.buffers.as_ref().map_or(0, |b| b.bytes)
    }

    /// The band layout this backend would use for a frame.
    ///
    /// # Errors
    /// As [`Banding::new`].
    pub fn banding(&self, width: u32, height: u32, format: PixelFormat, plan: &Plan) -> Result<Banding> {
        Banding::new(width, height, format, plan, self.binding_limit)
    }

    /// Runs `plan` on `src`. Returns the frame and the GPU time of its
    /// compute passes in nanoseconds, where the adapter has timestamps.
    ///
    /// # Errors
    /// [`Error::Gpu`] for a layout that cannot fit or a device error.
    pub fn process(&mut self, src: &HostFrame, plan: &Plan) -> Result<(HostFrame, Option<u64>)> {
        let banding = self.banding(src.width, src.height, src.format, plan)?;
        self.ensure_buffers(src, banding, !plan.passes.is_empty())?;
        let mut out = HostFrame::new(src.width, src.height, src.format, src.has_alpha);
        let weights: Vec<wgpu::Buffer> = plan
            .passes
            .iter()
            .map(|p| {
                self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("blur weights"),
                    contents: bytemuck::cast_slice(&p.kernel.weights),
                    usage: wgpu::BufferUsages::STORAGE,
                })
            })
            .collect();
        let mut gpu_ns = self.timestamps.then_some(0u64);
        let mut y0 = 0;
        while y0 < src.height {
            let y1 = (y0 + banding.band_rows).min(src.height);
            let ns = self.run_band(src, &mut out, plan, &weights, banding, y0, y1)?;
            if let (Some(total), Some(ns)) = (gpu_ns.as_mut(), ns) {
                *total += ns;
            }
            y0 = y1;
        }
        Ok((out, gpu_ns))
    }

    fn ensure_buffers(&mut self, src: &HostFrame, banding: Banding, blur: bool) -> Result<()> {
        let key = (src.width, src.format, banding.scratch_rows, blur);
        if self.buffers.as_ref().is_some_and(|b| b.key == key) {
            return Ok(());
        }
        self.buffers = None;
        let packed_bytes = src.row_bytes() as u64 * banding.scratch_rows as u64;
        let scratch_bytes = if blur { src.width as u64 * SCRATCH_BPP * banding.scratch_rows as u64 } else { 0 };
        if scratch_bytes > self.max_buffer {
            return Err(Error::Gpu(format!("a band of {scratch_bytes} bytes exceeds the adapter's buffer limit")));
        }
        let make = |label, size, usage| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage,
                mapped_at_creation: false,
            })
        };
        use wgpu::BufferUsages as U;
        let timer = self.timestamps.then(|| Timer {
            set: self.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("band timer"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            }),
            resolve: make("timer resolve", 16, U::QUERY_RESOLVE | U::COPY_SRC),
            read: make("timer read", 16, U::MAP_READ | U::COPY_DST),
        });
        self.buffers = Some(BandBuffers {
            key,
            packed: make("packed band", packed_bytes, U::STORAGE | U::COPY_SRC | U::COPY_DST),
            scratch: blur
                .then(|| [make("scratch a", scratch_bytes, U::STORAGE), make("scratch b", scratch_bytes, U::STORAGE)]),
            upload: make("upload staging", packed_bytes, U::MAP_WRITE | U::COPY_SRC),
            readback: make("readback staging", packed_bytes, U::MAP_READ | U::COPY_DST),
            timer,
            bytes: 3 * packed_bytes + if blur { 2 * scratch_bytes } else { 0 },
        });
        self.check_error()
    }

    fn check_error(&self) -> Result<()> {
        match self.error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => Err(Error::Gpu(e)),
            None => Ok(()),
        }
    }

    /// Maps `buffer` and waits for it.
    fn map(&self, buffer: &wgpu::Buffer, mode: wgpu::MapMode, size: u64) -> Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        buffer.map_async(mode, 0..size, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("device poll failed: {e}")))?;
        rx.recv()
            .map_err(|_| Error::Gpu("buffer map never completed".into()))?
            .map_err(|e| Error::Gpu(format!("buffer map failed: {e}")))
    }

    #[allow(clippy::too_many_arguments)]
    fn run_band(
        &self,
        src: &HostFrame,
        out: &mut HostFrame,
        plan: &Plan,
        weights: &[wgpu::Buffer],
        banding: Banding,
        y0: u32,
        y1: u32,
    ) -> Result<Option<u64>> {
        let b = self.buffers.as_ref().expect("buffers allocated");
        let row_bytes = src.row_bytes() as u64;
        let load_start = y0.saturating_sub(banding.halo);
        let load_end = (y1 + banding.halo).min(src.height);
        let rows = load_end - load_start;
        let in_bytes = rows as u64 * row_bytes;
        let out_bytes = (y1 - y0) as u64 * row_bytes;

        // Host → mapped staging.
        self.map(&b.upload, wgpu::MapMode::Write, in_bytes)?;
        {
            let mut view = b.upload.get_mapped_range_mut(0..in_bytes).map_err(|e| Error::Gpu(e.to_string()))?;
            let start = load_start as usize * row_bytes as usize;
            view.slice(..).copy_from_slice(&src.data[start..start + in_bytes as usize]);
        }
        b.upload.unmap();

        let store_rows = y1 - y0;
        let first_row = y0 - load_start;
        let params = |radius: u32, affine: &Affine| {
            let p = Params {
                width: src.width,
                rows,
                first_row,
                store_rows,
                radius,
                sixteen: (src.format == PixelFormat::Rgba16) as u32,
                pad: [0; 2],
                affine: affine.rows_f32(),
            };
            self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: bytemuck::bytes_of(&p),
                usage: wgpu::BufferUsages::UNIFORM,
            })
        };
        let bind = |pipeline: &wgpu::ComputePipeline, buffers: &[(u32, &wgpu::Buffer)]| {
            let entries: Vec<wgpu::BindGroupEntry> = buffers
                .iter()
                .map(|(i, buf)| wgpu::BindGroupEntry { binding: *i, resource: buf.as_entire_binding() })
                .collect();
            self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            })
        };
        let groups = |rows: u32| (src.width.div_ceil(kernels::WORKGROUP.0), rows.div_ceil(kernels::WORKGROUP.1));
        let k = &self.kernels;
        let mut dispatches = Vec::new();
        match &b.scratch {
            None => {
                // No blur: halo is zero, so the band's rows are its output rows.
                let p = params(0, &plan.pre);
                dispatches.push((&k.color, bind(&k.color, &[(0, &p), (1, &b.packed)]), groups(rows)));
            }
            Some([a, other]) => {
                // `cur` holds the horizontally blurred band; ping-pong after.
                let (mut cur, mut next) = (a, other);
                for (i, (pass, w)) in plan.passes.iter().zip(weights).enumerate() {
                    let r = pass.kernel.radius;
                    let before = if i == 0 { plan.pre } else { Affine::IDENTITY };
                    let ph = params(r, &before);
                    if i == 0 {
                        let g = bind(&k.blur_h_packed, &[(0, &ph), (1, &b.packed), (2, w), (4, cur)]);
                        dispatches.push((&k.blur_h_packed, g, groups(rows)));
                    } else {
                        let g = bind(&k.blur_h, &[(0, &ph), (2, w), (3, cur), (4, next)]);
                        dispatches.push((&k.blur_h, g, groups(rows)));
                        std::mem::swap(&mut cur, &mut next);
                    }
                    let pv = params(r, &pass.post);
                    if i + 1 == plan.passes.len() {
                        let g = bind(&k.blur_v_packed, &[(0, &pv), (1, &b.packed), (2, w), (3, cur)]);
                        dispatches.push((&k.blur_v_packed, g, groups(store_rows)));
                    } else {
                        let g = bind(&k.blur_v, &[(0, &pv), (2, w), (3, cur), (4, next)]);
                        dispatches.push((&k.blur_v, g, groups(rows)));
                        std::mem::swap(&mut cur, &mut next);
                    }
                }
            }
        }

        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&b.upload, 0, &b.packed, 0, in_bytes);
        {
            let timestamp_writes = b.timer.as_ref().map(|t| wgpu::ComputePassTimestampWrites {
                query_set: &t.set,
                beginning_of_pass_write_index: Some(0),
                end_of_pass_write_index: Some(1),
            });
            let mut pass =
                encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("band"), timestamp_writes });
            for (pipeline, group, (gx, gy)) in &dispatches {
                pass.set_pipeline(pipeline);
                pass.set_bind_group(0, group, &[]);
                pass.dispatch_workgroups(*gx, *gy, 1);
            }
        }
        encoder.copy_buffer_to_buffer(&b.packed, 0, &b.readback, 0, out_bytes);
        if let Some(t) = &b.timer {
            encoder.resolve_query_set(&t.set, 0..2, &t.resolve, 0);
            encoder.copy_buffer_to_buffer(&t.resolve, 0, &t.read, 0, 16);
        }
        self.queue.submit([encoder.finish()]);

        // Mapped readback → host.
        self.map(&b.readback, wgpu::MapMode::Read, out_bytes)?;
        {
            let view = b.readback.get_mapped_range(0..out_bytes).map_err(|e| Error::Gpu(e.to_string()))?;
            let start = y0 as usize * row_bytes as usize;
            out.data[start..start + out_bytes as usize].copy_from_slice(&view);
        }
        b.readback.unmap();
        let ns = match &b.timer {
            Some(t) => {
                self.map(&t.read, wgpu::MapMode::Read, 16)?;
                let ticks: [u64; 2] = {
                    let view = t.read.get_mapped_range(0..16).map_err(|e| Error::Gpu(e.to_string()))?;
                    bytemuck::pod_read_unaligned(&view)
                };
                t.read.unmap();
                let period = self.queue.get_timestamp_period() as f64;
                Some((ticks[1].saturating_sub(ticks[0]) as f64 * period) as u64)
            }
            None => None,
        };
        self.check_error()?;
        Ok(ns)
    }
}
