//! The wgpu backend: device, kernels, and banded frame processing.
//!
//! A frame is processed in bands of rows so that no binding exceeds the
//! adapter's `max_storage_buffer_binding_size` (128 MiB on many adapters;
//! an 8K frame in f32 RGBA is 531 MB). Each band is loaded with a halo of
//! `sum of blur radii` rows on every side that is not a frame edge, so its
//! stored rows are exactly what a whole-frame pass would give. Frames that
//! fit are one band with no halo.
//!
//! A frame arrives in a [`GpuSlot`]: its upload staging buffer is mapped
//! while the slot is free, so a decoder writes the pixels straight into it
//! (never `queue.write_buffer`, measured 3x slower for frame-sized data).
//! One submission then does, per band: copy the band's rows (with halo)
//! into `packed`, one compute pass of kernels that write their results back
//! into `packed` from row 0, and a copy of those rows into a readback
//! buffer of the ring (or, for a preview, a downscale pass into a small
//! buffer, so only the small image is read back).
//! A plan without blur is one kernel (`color`); a blur is two, horizontal
//! reading the packed pixels and vertical writing them, with the color
//! stages fused in: per 8K RGBA8 frame that is about 40 bytes of memory
//! traffic per pixel instead of the 100 a separate load/store would cost.
//! The kernel buffers (`packed`, f32 scratch, weights, uniforms, bind
//! groups) are built once per (frame shape, plan) and kept for the last
//! few pairs, so an export and the previews beside it do not rebuild them.
//! A new grade with the same layout (a slider being dragged: same frame
//! shape, same blur radii) rewrites an old set's uniforms and weights in
//! place once the cache or the budget is full, instead of allocating
//! hundreds of MB of band buffers per slider step.

mod adapter;
mod banding;
mod kernels;
mod staging;
mod stream;

pub use adapter::{AdapterSummary, choose, instance, list_adapters};
pub use banding::{BAND_TARGET_BYTES, Banding};
pub use staging::{GpuSlot, InFlight, Readback, SlotWriter, StagingMaker};
pub use stream::{STREAM_WGSL, StreamCopy};

use banding::SCRATCH_BPP;
pub use kernels::{BLUR_WGSL, COLOR_WGSL, COMMON_WGSL, DOWNSCALE_WGSL, Kernels, Params, shader_sources};
use staging::request_map;

use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Error, Result};
use crate::io::{HostFrame, PixelFormat};
use crate::ledger::{Ledger, Reservation};
use crate::ops::{Affine, Plan};

/// Width, height and pixel format: what sizes every frame buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameShape {
    /// Pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Channel depth.
    pub format: PixelFormat,
}

impl FrameShape {
    /// `1920x1080 16-bit`: the size and depth, as a frame of another shape
    /// than the run's is told (its channels may differ freely: grey, RGB
    /// and RGBA sources are all worked as RGBA).
    pub(crate) fn in_words(self) -> String {
        format!("{}x{} {}-bit", self.width, self.height, self.format.bits())
    }

    /// How a frame of shape `got` joins a run of this shape: as it is
    /// (`Some(false)`), its samples widened (`Some(true)`: an 8-bit frame
    /// of a 16-bit run's size), or not at all (another size, or a 16-bit
    /// frame of an 8-bit run, whose depth narrowing would lose).
    pub(crate) fn admits(self, got: FrameShape) -> Option<bool> {
        if got == self {
            return Some(false);
        }
        let deepens = (got.width, got.height, got.format, self.format)
            == (self.width, self.height, PixelFormat::Rgba8, PixelFormat::Rgba16);
        deepens.then_some(true)
    }

    /// The shape of a frame.
    pub fn of(frame: &HostFrame) -> Self {
        FrameShape { width: frame.width, height: frame.height, format: frame.format }
    }

    /// The shape a frame of header `info` decodes to.
    pub fn of_info(info: &crate::io::FrameInfo) -> Self {
        FrameShape { width: info.width, height: info.height, format: info.format }
    }

    /// Bytes of one packed frame.
    pub fn frame_bytes(&self) -> u64 {
        self.row_bytes() * self.height as u64
    }

    fn row_bytes(&self) -> u64 {
        self.width as u64 * self.format.bytes_per_pixel() as u64
    }
}

/// How to open the GPU backend.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Only adapters whose name contains this (case-insensitive).
    pub adapter: Option<String>,
    /// Refuse software rasterizers (the `auto` rule). By default, false.
    pub hardware_only: bool,
    /// Pretend the binding limit is this small, to exercise banding in
    /// tests. By default, the adapter's own limit capped at [`BAND_TARGET_BYTES`].
    pub max_binding_override: Option<u64>,
    /// Aim bands at this many bytes instead of [`BAND_TARGET_BYTES`],
    /// keeping the adapter's own limit (or the override) as the ceiling a
    /// wide blur's halo may grow them to: to exercise that growth in tests.
    pub band_target_override: Option<u64>,
}

/// A device with compiled kernels, ready to process frames.
///
/// One thread owns it and does all submission and polling; frame slots
/// ([`GpuSlot`]) travel between threads and are filled by decoders.
pub struct GpuBackend {
    device: wgpu::Device,
    queue: wgpu::Queue,
    kernels: Kernels,
    summary: AdapterSummary,
    why: String,
    binding_limit: u64,
    /// What the adapter binds at most (or the override): where a large
    /// blur halo leaves `binding_limit` too few rows.
    binding_ceiling: u64,
    max_buffer: u64,
    uniform_align: u64,
    timestamps: bool,
    ledger: Arc<Ledger>,
    /// Kernel buffers for the last few (shape, plan) pairs, most recent
    /// last: an export and the previews beside it each keep theirs.
    computes: Vec<Compute>,
    /// Kernel sets allocated, and rewritten for a new plan, so far.
    sets: ComputeStats,
    /// The slot `process` uses for one-off frames.
    own_slot: Option<(GpuSlot, Readback)>,
    /// The kernel set `process` last ran, held ([`GpuBackend::hold_set`])
    /// until a run of frames is over, as `own_slot`.
    own_set: RunHold,
    /// What running exports hold ([`RunHold`]).
    run_keys: RunKeys,
    error: Arc<Mutex<Option<String>>>,
    /// Why the device was lost, once it was: said by every later check,
    /// not once (wgpu reports nothing more of a lost device, and its polls
    /// then fail with an unrelated reason).
    lost: Arc<OnceLock<String>>,
}

/// Buffers the kernels work in, shared by every slot: only the owning
/// thread runs kernels, one frame at a time, so one set is enough.
struct Compute {
    shape: FrameShape,
    plan: Plan,
    banding: Banding,
    /// When a frame last asked for it.
    used: std::time::Instant,
    /// Packed band rows in and out (STORAGE | COPY_SRC | COPY_DST).
    packed: LedgerBuffer,
    /// f32 intermediates, only for plans that blur (held for the bind groups).
    scratch: Option<[LedgerBuffer; 2]>,
    /// One weight table per blur pass.
    weights: Vec<LedgerBuffer>,
    /// Every dispatch's uniforms, at aligned offsets; written when the set
    /// is built or given a new plan.
    uniforms: LedgerBuffer,
    /// Kernel launches, in order: band, pipeline, bind group, workgroups.
    launches: Vec<(usize, wgpu::ComputePipeline, wgpu::BindGroup, (u32, u32))>,
    /// Per band: (upload offset, length) in, (readback offset, length) out.
    copies: Vec<(u64, u64, u64, u64)>,
    /// Downscale passes for previews, by scale.
    previews: Vec<PreviewPass>,
}

impl Compute {
    /// The ledger bytes of every buffer a frame's kernels touch.
    fn reservations(&self) -> Vec<Arc<Reservation>> {
        let mut all = vec![self.packed.reservation.clone(), self.uniforms.reservation.clone()];
        all.extend(self.scratch.iter().flatten().map(|b| b.reservation.clone()));
        all.extend(self.weights.iter().map(|b| b.reservation.clone()));
        all.extend(self.previews.iter().flat_map(PreviewPass::buffers).map(|b| b.reservation.clone()));
        all
    }

    /// Whether frames on the GPU still hold this set's buffers: dropping
    /// it would free nothing until they land, and would make the frames
    /// behind them build it again beside it.
    fn in_flight(&self) -> bool {
        Arc::strong_count(&self.packed.reservation) > 1
    }
}

/// The extra buffers and launches that turn a frame into a preview.
struct PreviewPass {
    scale: u32,
    width: u32,
    height: u32,
    /// One band's RGBA8 result (STORAGE | COPY_SRC), and the whole
    /// preview's readback, which each band's result is copied into: a band
    /// binds no more than the adapter allows, whatever the preview's size.
    small: LedgerBuffer,
    read: LedgerBuffer,
    _uniforms: LedgerBuffer,
    /// One per band.
    launches: Vec<PreviewLaunch>,
    /// When a preview last asked for it.
    used: std::time::Instant,
}

impl PreviewPass {
    fn buffers(&self) -> [&LedgerBuffer; 3] {
        [&self.small, &self.read, &self._uniforms]
    }

    /// Ledger bytes of its buffers.
    fn bytes(&self) -> u64 {
        self.buffers().iter().map(|b| b.reservation.bytes()).sum()
    }

    /// Whether only the pass holds its buffers' memory: no frame on the
    /// GPU and no preview waiting to render holds it (see
    /// [`Compute::reservations`]).
    fn idle(&self) -> bool {
        self.buffers().iter().all(|b| Arc::strong_count(&b.reservation) == 1)
    }
}

/// One band's downscale dispatch.
struct PreviewLaunch {
    group: wgpu::BindGroup,
    workgroups: (u32, u32),
    /// Where the band's result goes in the preview's readback: byte
    /// offset, bytes.
    to: (u64, u64),
}

/// Keeps a kernel set from being evicted; see
/// [`GpuBackend::hold_newest_set`].
#[derive(Default)]
pub struct SetHold(#[allow(dead_code)] Vec<Arc<Reservation>>);

/// The kernel sets running exports hold, by (shape, plan): the key, not
/// one set, so a set rebuilt mid-run (a preview evicted it) is held too.
type RunKeys = Arc<Mutex<Vec<(FrameShape, Plan)>>>;

/// Marks a kernel set as an export's for as long as it runs; see
/// [`GpuBackend::hold_set`].
#[derive(Default)]
pub struct RunHold(Option<(RunKeys, FrameShape, Plan)>);

impl RunHold {
    /// Whether it holds the set for `shape` and `plan`.
    fn holds(&self, shape: FrameShape, plan: &Plan) -> bool {
        self.0.as_ref().is_some_and(|(_, s, p)| *s == shape && p == plan)
    }
}

impl Drop for RunHold {
    fn drop(&mut self) {
        if let Some((keys, shape, plan)) = self.0.take() {
            let mut keys = crate::lock(&keys);
            if let Some(i) = keys.iter().position(|(s, p)| *s == shape && *p == plan) {
                keys.swap_remove(i);
            }
        }
    }
}

/// Most (shape, plan) kernel buffer sets kept at once.
const COMPUTE_CACHE: usize = 3;

/// A buffer and the ledger bytes it holds. The bytes are shared with the
/// frames in flight that use the buffer, so they stay counted until the
/// GPU is done with it even when the set it belongs to is dropped.
struct LedgerBuffer {
    buffer: wgpu::Buffer,
    reservation: Arc<Reservation>,
}

/// How often kernel buffer sets were built and rewritten.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ComputeStats {
    /// Sets allocated (band buffers, uniforms, bind groups).
    pub built: u64,
    /// Sets given a new plan of the same layout in place.
    pub rewritten: u64,
}

/// Blur taps per pass: with the shape and banding, what makes two plans'
/// kernel sets interchangeable.
fn taps(plan: &Plan) -> Vec<usize> {
    plan.passes.iter().map(|p| p.kernel.weights.len()).collect()
}

/// One kernel launch while recording: band, pipeline, (binding, buffer,
/// uniform offset) per binding, workgroups in x and y.
type Dispatch<'a> = (usize, &'a wgpu::ComputePipeline, Vec<(u32, &'a wgpu::Buffer, u64)>, (u32, u32));

impl GpuBackend {
    /// Opens the best adapter that matches `options`; every buffer it makes
    /// is counted by `ledger`.
    ///
    /// # Errors
    /// [`Error::Gpu`] when no adapter qualifies or the device cannot be created.
    pub fn new(options: &GpuOptions, ledger: Arc<Ledger>) -> Result<Self> {
        // Frames go to the GPU as their bytes, and the kernels read 16-bit
        // samples in little-endian order: on a big-endian host every one
        // would arrive byte-swapped (the CPU backend is right there).
        if cfg!(target_endian = "big") {
            return Err(Error::Gpu(
                "the GPU kernels read frames in little-endian order; this host is big-endian".into(),
            ));
        }
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
            let mut slot = crate::lock(&sink);
            slot.get_or_insert_with(|| crate::error::one_line(&e.to_string()));
        }));
        // wgpu reports a lost device here, not as an uncaptured error: a
        // submission to it then fails with nothing else to say so.
        let lost = Arc::new(OnceLock::new());
        let said = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            if reason != wgpu::DeviceLostReason::Destroyed {
                let message = crate::error::one_line(&message);
                let _ = said.set(format!("device lost ({reason:?}): {message}"));
            }
        });
        let limits = device.limits();
        let kernels = Kernels::new(&device);
        // A shader or pipeline the driver refuses is said here, where
        // `auto` still falls back to the CPU, not by the first frame.
        if let Some(e) = crate::lock(&error).take() {
            return Err(Error::Gpu(format!("{}: cannot build the kernels: {e}", summary.name)));
        }
        let binding_ceiling = options
            .max_binding_override
            .unwrap_or(u64::MAX)
            .min(limits.max_storage_buffer_binding_size)
            .min(limits.max_buffer_size);
        // An override is the limit itself (tests force small bands with it).
        let binding_limit = match (options.band_target_override, options.max_binding_override) {
            (Some(target), _) => binding_ceiling.min(target),
            (None, Some(_)) => binding_ceiling,
            (None, None) => binding_ceiling.min(BAND_TARGET_BYTES),
        };
        Ok(GpuBackend {
            device,
            queue,
            kernels,
            timestamps: summary.timestamps,
            summary,
            why,
            binding_limit,
            binding_ceiling,
            max_buffer: limits.max_buffer_size,
            uniform_align: limits
                .min_uniform_buffer_offset_alignment
                .max(limits.min_storage_buffer_offset_alignment)
                .max(256) as u64,
            ledger,
            computes: Vec::new(),
            sets: ComputeStats::default(),
            own_slot: None,
            own_set: RunHold::default(),
            run_keys: RunKeys::default(),
            error,
            lost,
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

    /// The ledger that counts this backend's buffers.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// The band layout this backend would use for a frame.
    ///
    /// # Errors
    /// As [`Banding::new`].
    pub fn banding(&self, width: u32, height: u32, format: PixelFormat, plan: &Plan) -> Result<Banding> {
        Banding::choose(width, height, format, plan, self.binding_limit, self.binding_ceiling)
    }

    /// Ledger bytes of the shared kernel buffers for `shape` and `plan`:
    /// band buffers, weights and uniforms.
    ///
    /// # Errors
    /// As [`Banding::new`].
    pub fn compute_bytes(&self, shape: FrameShape, plan: &Plan) -> Result<u64> {
        let banding = self.banding(shape.width, shape.height, shape.format, plan)?;
        let packed = shape.row_bytes() * banding.scratch_rows as u64;
        let scratch =
            if plan.passes.is_empty() { 0 } else { 2 * shape.width as u64 * SCRATCH_BPP * banding.scratch_rows as u64 };
        let weights: u64 = plan.passes.iter().map(|p| 4 * p.kernel.weights.len() as u64).sum();
        Ok(packed + scratch + weights + self.uniform_bytes(shape.height, banding, plan))
    }

    /// Ledger bytes of the buffers a preview at 1/`scale` adds to the
    /// kernel buffers of `shape` and `plan` (its downscale pass's).
    ///
    /// # Errors
    /// As [`Banding::new`]; [`Error::InvalidValue`] for a scale other than
    /// 1, 2, 4 or 8.
    pub fn preview_bytes(&self, shape: FrameShape, plan: &Plan, scale: u32) -> Result<u64> {
        check_scale(scale)?;
        let banding = self.banding(shape.width, shape.height, shape.format, plan)?;
        let bands: Vec<(u32, u32)> = banding.bands(shape.height).collect();
        let sizes = self.preview_sizes(shape, &bands, scale);
        Ok(sizes.band + sizes.read + sizes.uniforms)
    }

    /// The downscale pass's buffers for `bands` of `shape` at 1/`scale`.
    fn preview_sizes(&self, shape: FrameShape, bands: &[(u32, u32)], scale: u32) -> PreviewSizes {
        let (width, height) = (shape.width.div_ceil(scale), shape.height.div_ceil(scale));
        PreviewSizes {
            band: bands.iter().map(|&b| preview_band_bytes(width, scale, b)).max().unwrap_or(0),
            read: width as u64 * height as u64 * 4,
            uniforms: self.uniform_align * bands.len() as u64,
        }
    }

    fn uniform_bytes(&self, height: u32, banding: Banding, plan: &Plan) -> u64 {
        let per_band = 2 * plan.passes.len().max(1) as u64;
        self.uniform_align * per_band * height.div_ceil(banding.band_rows) as u64
    }

    fn buffer(&self, label: &str, size: u64, usage: wgpu::BufferUsages) -> Result<LedgerBuffer> {
        if size > self.max_buffer {
            return Err(Error::Gpu(format!("{label} of {size} bytes exceeds the adapter's buffer limit")));
        }
        let reservation = self.ledger.reserve(size, label)?;
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage,
            mapped_at_creation: false,
        });
        Ok(LedgerBuffer { buffer, reservation: Arc::new(reservation) })
    }

    /// Allocates the shared kernel buffers for `shape` and `plan`, unless
    /// they are already there, for an export: the sets running exports
    /// hold ([`GpuBackend::hold_set`]) are neither evicted nor rewritten
    /// to make room.
    ///
    /// # Errors
    /// [`Error::Budget`] or [`Error::Gpu`].
    pub fn prepare(&mut self, shape: FrameShape, plan: &Plan) -> Result<()> {
        self.prepare_set(shape, plan, false)
    }

    /// [`GpuBackend::prepare`]; for a preview (`preview`), the sets running
    /// exports hold give way too: an export yields to previews.
    fn prepare_set(&mut self, shape: FrameShape, plan: &Plan, preview: bool) -> Result<()> {
        if let Some(i) = self.computes.iter().position(|c| c.shape == shape && c.plan == *plan) {
            let mut c = self.computes.remove(i);
            c.used = std::time::Instant::now();
            self.computes.push(c);
            return Ok(());
        }
        let banding = self.banding(shape.width, shape.height, shape.format, plan)?;
        let needed = self.compute_bytes(shape, plan)?;
        // Full (the cache, or the budget): give the least recent set of the
        // same layout this plan's numbers rather than build one.
        let full = self.computes.len() >= COMPUTE_CACHE || self.ledger.current() + needed > self.ledger.budget();
        let same_layout = |c: &Compute| c.shape == shape && c.banding == banding && taps(&c.plan) == taps(plan);
        // Preferably one no frame or preview is using (a held set would be
        // rewritten back by its holder: correct, but work twice); never,
        // for an export, one a running export holds.
        let held = self.held_by_runs();
        let untouchable = |c: &Compute| c.in_flight() || (!preview && held(c));
        // For an export, an editor's sets (preview passes on them) go
        // last: an export yields to previews, and a preview's set taken
        // between two requests would be built again for the next.
        let spare = |c: &Compute| !untouchable(c) && (preview || c.previews.is_empty());
        let reusable = (self.computes.iter())
            .position(|c| same_layout(c) && spare(c))
            .or_else(|| self.computes.iter().position(|c| same_layout(c) && !untouchable(c)))
            .or_else(|| self.computes.iter().position(|c| same_layout(c) && (preview || !held(c))));
        if let Some(i) = reusable.filter(|_| full) {
            let mut c = self.computes.remove(i);
            let (params, _, _) = self.layout(shape, plan, banding, &c.packed, c.scratch.as_ref(), &c.weights);
            // Queue writes land before the next submission and after the
            // ones already made: frames in flight keep the old numbers.
            self.queue.write_buffer(&c.uniforms.buffer, 0, &params);
            for (pass, w) in plan.passes.iter().zip(&c.weights) {
                self.queue.write_buffer(&w.buffer, 0, bytemuck::cast_slice(&pass.kernel.weights));
            }
            c.plan = plan.clone();
            c.used = std::time::Instant::now();
            self.computes.push(c);
            self.sets.rewritten += 1;
            return self.checked_newest_set();
        }
        // Older sets are only a cache: drop them (oldest first) rather than
        // fail when the new one would not fit beside them, but never sets
        // that frames on the GPU use (that frees nothing until they land,
        // and their next frames would build them again beside themselves),
        // nor, for an export, those running exports hold.
        // With only those left the cache may hold one more for a while, if
        // the budget allows; if not, the caller is refused and retries once
        // they have landed.
        let idle = |c: &Compute| !untouchable(c);
        while self.computes.len() >= COMPUTE_CACHE
            || (!self.computes.is_empty() && self.ledger.current() + needed > self.ledger.budget())
        {
            match self.computes.iter().position(spare).or_else(|| self.computes.iter().position(idle)) {
                Some(i) => drop(self.computes.remove(i)),
                None => break,
            }
        }
        use wgpu::BufferUsages as U;
        let packed = self.buffer(
            "packed band",
            shape.row_bytes() * banding.scratch_rows as u64,
            U::STORAGE | U::COPY_SRC | U::COPY_DST,
        )?;
        let scratch = if plan.passes.is_empty() {
            None
        } else {
            let bytes = shape.width as u64 * SCRATCH_BPP * banding.scratch_rows as u64;
            Some([self.buffer("scratch a", bytes, U::STORAGE)?, self.buffer("scratch b", bytes, U::STORAGE)?])
        };
        let mut weights = Vec::new();
        for pass in &plan.passes {
            let w = self.buffer("blur weights", 4 * pass.kernel.weights.len() as u64, U::STORAGE | U::COPY_DST)?;
            self.queue.write_buffer(&w.buffer, 0, bytemuck::cast_slice(&pass.kernel.weights));
            weights.push(w);
        }
        let (uniforms, launches, copies) = self.record(shape, plan, banding, &packed, scratch.as_ref(), &weights)?;
        let compute = Compute {
            shape,
            plan: plan.clone(),
            banding,
            used: std::time::Instant::now(),
            packed,
            scratch,
            weights,
            uniforms,
            launches,
            copies,
            previews: Vec::new(),
        };
        self.computes.push(compute);
        self.sets.built += 1;
        self.checked_newest_set()
    }

    /// The device's verdict on the set just built or rewritten: one it
    /// refused is not kept for the next frame to reuse.
    fn checked_newest_set(&mut self) -> Result<()> {
        let checked = self.check_error();
        if checked.is_err() {
            self.computes.pop();
        }
        checked
    }

    /// Drops the kernel sets only exports built (no preview pass on them)
    /// that no frame on the GPU uses and no running export holds
    /// ([`GpuBackend::hold_set`]): an export about to size its pool, having
    /// taken its hold, calls it when the pool would not fit beside them.
    /// They are a cache for an export of the same grade and size, worth
    /// less than the slots of the one starting now; previews' sets stay (an
    /// export yields to previews, never the reverse). Returns how many went.
    pub fn evict_export_sets(&mut self) -> usize {
        let before = self.computes.len();
        let held = self.held_by_runs();
        self.computes.retain(|c| c.in_flight() || held(c) || !c.previews.is_empty());
        before - self.computes.len()
    }

    /// Drops the kernel sets no frame has asked for in `idle`, but the one
    /// for `keep` (a running export's, however long it waited), those
    /// running exports hold ([`GpuBackend::hold_set`]) and those
    /// frames on the GPU or a preview hold (dropping them would free
    /// nothing until they are done, and their next frame would build them
    /// again), and the preview passes left on the others. Returns how many
    /// sets went.
    pub fn evict_idle_sets(&mut self, idle: std::time::Duration, keep: Option<(FrameShape, &Plan)>) -> usize {
        let before = self.computes.len();
        let kept = |c: &Compute| keep.is_some_and(|(shape, plan)| c.shape == shape && c.plan == *plan);
        let held = self.held_by_runs();
        self.computes.retain(|c| kept(c) || c.in_flight() || held(c) || c.used.elapsed() < idle);
        for c in &mut self.computes {
            c.previews.retain(|p| p.used.elapsed() < idle);
        }
        before - self.computes.len()
    }

    /// Marks the kernel set for `shape` and `plan`, if there is one, as an
    /// export's for as long as the returned hold lives: between its frames
    /// too, other exports (their sets, their pools) never evict it from
    /// under the run; a preview still may ([`GpuBackend::prepare_for_preview`]:
    /// the export yields to previews, never the reverse).
    pub fn hold_set(&self, shape: FrameShape, plan: &Plan) -> RunHold {
        crate::lock(&self.run_keys).push((shape, plan.clone()));
        RunHold(Some((self.run_keys.clone(), shape, plan.clone())))
    }

    /// Whether a running export holds a set ([`GpuBackend::hold_set`]),
    /// as the holds are now.
    fn held_by_runs(&self) -> impl Fn(&Compute) -> bool + use<> {
        let keys = crate::lock(&self.run_keys).clone();
        move |c| keys.iter().any(|(s, p)| *s == c.shape && *p == c.plan)
    }

    /// Kernel sets built and rewritten so far.
    pub fn compute_stats(&self) -> ComputeStats {
        self.sets
    }

    /// Allocates everything a preview of `shape` with `plan` at 1/`scale`
    /// needs besides its slot (kernel buffers, the downscale pass), so that
    /// [`GpuBackend::run_preview`] allocates nothing.
    ///
    /// # Errors
    /// [`Error::Budget`] or [`Error::Gpu`]; [`Error::InvalidValue`] for a
    /// scale other than 1, 2, 4 or 8.
    pub fn prepare_for_preview(&mut self, shape: FrameShape, plan: &Plan, scale: u32) -> Result<()> {
        check_scale(scale)?;
        self.prepare_set(shape, plan, true)?;
        self.prepare_preview(scale)
    }

    /// A hold on the newest kernel set (the one just prepared): while it
    /// lives the set counts as in use, so making room for other work never
    /// evicts it. A preview holds the set it reserved while it decodes.
    pub fn hold_newest_set(&self) -> SetHold {
        SetHold(self.computes.last().map(Compute::reservations).unwrap_or_default())
    }

    /// Builds the downscale pass for `scale` on the newest compute set.
    fn prepare_preview(&mut self, scale: u32) -> Result<()> {
        let c = self.computes.last_mut().expect("prepared");
        if let Some(p) = c.previews.iter_mut().find(|p| p.scale == scale) {
            p.used = std::time::Instant::now();
            return Ok(());
        }
        let c = self.computes.last().expect("prepared");
        let shape = c.shape;
        // The set's own bands, as `preview_bytes` counts them.
        let bands: Vec<(u32, u32)> = c.banding.bands(shape.height).collect();
        let sizes = self.preview_sizes(shape, &bands, scale);
        // The set's passes at other scales are a cache too: the least
        // recently asked give way rather than the budget refuse this one (a
        // preview at another scale, whose pass this drops, builds it again),
        // where that makes room. Not one that a frame on the GPU or a
        // preview waiting to render holds (dropping it frees nothing).
        let need = sizes.band + sizes.read + sizes.uniforms;
        let short = (self.ledger.current().saturating_add(need)).saturating_sub(self.ledger.budget());
        let previews = &mut self.computes.last_mut().expect("prepared").previews;
        let mut idle: Vec<usize> = (0..previews.len()).filter(|&i| previews[i].idle()).collect();
        idle.sort_by_key(|&i| previews[i].used);
        let (mut freed, mut going) = (0, Vec::new());
        for i in idle {
            if freed >= short {
                break;
            }
            freed += previews[i].bytes();
            going.push(i);
        }
        if short > 0 && freed >= short {
            going.sort_unstable_by(|a, b| b.cmp(a));
            going.into_iter().for_each(|i| drop(previews.remove(i)));
        }
        let (width, height) = (shape.width.div_ceil(scale), shape.height.div_ceil(scale));
        let out_rows = |(y0, y1): (u32, u32)| (y0 / scale, y1.div_ceil(scale));
        use wgpu::BufferUsages as U;
        let c = self.computes.last().expect("prepared");
        let small = self.buffer("preview", sizes.band, U::STORAGE | U::COPY_SRC)?;
        let read = self.buffer("preview readback", sizes.read, U::MAP_READ | U::COPY_DST)?;
        let uniforms = self.buffer("preview uniforms", sizes.uniforms, U::STORAGE | U::COPY_DST)?;
        let mut params = vec![0u8; (self.uniform_align * bands.len() as u64) as usize];
        let mut launches = Vec::new();
        for (i, &(y0, y1)) in bands.iter().enumerate() {
            let p = Params {
                width: shape.width,
                rows: y1 - y0,
                first_row: 0,
                store_rows: y1 - y0,
                radius: scale,
                sixteen: (shape.format == PixelFormat::Rgba16) as u32,
                affine_at_load: 0,
                pad: 0,
                affine: Affine::IDENTITY.rows_f32(),
            };
            let at = i as u64 * self.uniform_align;
            params[at as usize..at as usize + std::mem::size_of::<Params>()].copy_from_slice(bytemuck::bytes_of(&p));
            let k = &self.kernels.downscale;
            let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("preview"),
                layout: &k.get_bind_group_layout(0),
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &uniforms.buffer,
                            offset: at,
                            size: wgpu::BufferSize::new(std::mem::size_of::<Params>() as u64),
                        }),
                    },
                    wgpu::BindGroupEntry { binding: 1, resource: c.packed.buffer.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 5, resource: small.buffer.as_entire_binding() },
                ],
            });
            let groups =
                (width.div_ceil(kernels::WORKGROUP.0), (y1 - y0).div_ceil(scale).div_ceil(kernels::WORKGROUP.1));
            let at = out_rows((y0, y1)).0 as u64 * width as u64 * 4;
            launches.push(PreviewLaunch {
                group,
                workgroups: groups,
                to: (at, preview_band_bytes(width, scale, (y0, y1))),
            });
        }
        self.queue.write_buffer(&uniforms.buffer, 0, &params);
        // Kept only once it built: a pass that failed validation would
        // fail every later preview at this scale.
        self.check_error()?;
        let used = std::time::Instant::now();
        let pass = PreviewPass { scale, width, height, small, read, _uniforms: uniforms, launches, used };
        self.computes.last_mut().expect("prepared").previews.push(pass);
        Ok(())
    }

    fn check_error(&self) -> Result<()> {
        if let Some(lost) = self.lost.get() {
            return Err(Error::Gpu(lost.clone()));
        }
        take_error(&self.error)
    }

    /// Lays out every band's kernel launches for `shape` and `plan`: the
    /// uniforms, bind groups and copy ranges are the same for every frame,
    /// so they are built once here rather than per frame.
    #[allow(clippy::type_complexity)]
    fn record(
        &self,
        shape: FrameShape,
        plan: &Plan,
        banding: Banding,
        packed: &LedgerBuffer,
        scratch: Option<&[LedgerBuffer; 2]>,
        weights: &[LedgerBuffer],
    ) -> Result<(
        LedgerBuffer,
        Vec<(usize, wgpu::ComputePipeline, wgpu::BindGroup, (u32, u32))>,
        Vec<(u64, u64, u64, u64)>,
    )> {
        let (params, dispatches, copies) = self.layout(shape, plan, banding, packed, scratch, weights);
        let uniforms = self.buffer(
            "kernel uniforms",
            params.len() as u64,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        )?;
        self.queue.write_buffer(&uniforms.buffer, 0, &params);
        let launches = dispatches
            .into_iter()
            .map(|(band, pipeline, bindings, groups)| {
                let entries: Vec<wgpu::BindGroupEntry> = bindings
                    .iter()
                    .map(|&(binding, buffer, offset)| wgpu::BindGroupEntry {
                        binding,
                        resource: if binding == 0 {
                            wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: &uniforms.buffer,
                                offset,
                                size: wgpu::BufferSize::new(std::mem::size_of::<Params>() as u64),
                            })
                        } else {
                            buffer.as_entire_binding()
                        },
                    })
                    .collect();
                let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &pipeline.get_bind_group_layout(0),
                    entries: &entries,
                });
                (band, pipeline.clone(), group, groups)
            })
            .collect();
        Ok((uniforms, launches, copies))
    }

    /// The uniforms (bytes at aligned offsets), launches and per-band copy
    /// ranges of `plan` on `shape`: which numbers a set holds for a plan,
    /// apart from the GPU objects built around them.
    #[allow(clippy::type_complexity)]
    fn layout<'a>(
        &'a self,
        shape: FrameShape,
        plan: &Plan,
        banding: Banding,
        packed: &'a LedgerBuffer,
        scratch: Option<&'a [LedgerBuffer; 2]>,
        weights: &'a [LedgerBuffer],
    ) -> (Vec<u8>, Vec<Dispatch<'a>>, Vec<(u64, u64, u64, u64)>) {
        let bands: Vec<(u32, u32)> = banding.bands(shape.height).collect();
        let params_bytes = self.uniform_bytes(shape.height, banding, plan);
        let mut params = vec![0u8; params_bytes as usize];
        let mut next_params = 0u64;
        let mut param = |p: Params| {
            let at = next_params;
            params[at as usize..at as usize + std::mem::size_of::<Params>()].copy_from_slice(bytemuck::bytes_of(&p));
            next_params += self.uniform_align;
            at
        };
        let mut dispatches: Vec<Dispatch<'_>> = Vec::new();
        let k = &self.kernels;
        let row_bytes = shape.row_bytes();
        let groups = |rows: u32| (shape.width.div_ceil(kernels::WORKGROUP.0), rows.div_ceil(kernels::WORKGROUP.1));
        let per = kernels::BLUR_OUTPUTS;
        let h_groups = |rows: u32| (shape.width.div_ceil(per).div_ceil(kernels::WORKGROUP.0), groups(rows).1);
        let v_groups = |rows: u32| groups(rows.div_ceil(per));
        let mut copies = Vec::new();
        let packed = &packed.buffer;
        for (band, &(y0, y1)) in bands.iter().enumerate() {
            let load_start = y0.saturating_sub(banding.halo);
            let load_end = (y1 + banding.halo).min(shape.height);
            let rows = load_end - load_start;
            copies.push((
                load_start as u64 * row_bytes,
                rows as u64 * row_bytes,
                y0 as u64 * row_bytes,
                (y1 - y0) as u64 * row_bytes,
            ));
            let base = Params {
                width: shape.width,
                rows,
                first_row: y0 - load_start,
                store_rows: y1 - y0,
                radius: 0,
                sixteen: (shape.format == PixelFormat::Rgba16) as u32,
                affine_at_load: 0,
                pad: 0,
                affine: plan.pre.rows_f32(),
            };
            match scratch {
                None => {
                    let at = param(base);
                    dispatches.push((band, &k.color, vec![(0, packed, at), (1, packed, 0)], groups(rows)));
                }
                Some([a, b]) => {
                    let (mut cur, mut next) = (&a.buffer, &b.buffer);
                    for (i, (pass, w)) in plan.passes.iter().zip(weights).enumerate() {
                        let w = &w.buffer;
                        let before = if i == 0 { plan.pre } else { Affine::IDENTITY };
                        let at_load = u32::from(i == 0 && before.gain() > kernels::AT_LOAD_GAIN);
                        let radius = pass.kernel.radius;
                        let ph = param(Params { radius, affine_at_load: at_load, affine: before.rows_f32(), ..base });
                        if i == 0 {
                            let b = vec![(0, packed, ph), (1, packed, 0), (2, w, 0), (4, cur, 0)];
                            dispatches.push((band, &k.blur_h_packed, b, h_groups(rows)));
                        } else {
                            let b = vec![(0, packed, ph), (2, w, 0), (3, cur, 0), (4, next, 0)];
                            dispatches.push((band, &k.blur_h, b, h_groups(rows)));
                            std::mem::swap(&mut cur, &mut next);
                        }
                        let pv = param(Params { radius: pass.kernel.radius, affine: pass.post.rows_f32(), ..base });
                        if i + 1 == plan.passes.len() {
                            let b = vec![(0, packed, pv), (1, packed, 0), (2, w, 0), (3, cur, 0)];
                            dispatches.push((band, &k.blur_v_packed, b, v_groups(y1 - y0)));
                        } else {
                            let b = vec![(0, packed, pv), (2, w, 0), (3, cur, 0), (4, next, 0)];
                            dispatches.push((band, &k.blur_v, b, v_groups(rows)));
                            std::mem::swap(&mut cur, &mut next);
                        }
                    }
                }
            }
        }
        (params, dispatches, copies)
    }

    /// Runs `plan` on one frame: the slot's upload holds it, and one copy
    /// of the packed result comes back into `out` (which must be
    /// `frame_bytes` long). Leaves the slot mapped for its next frame.
    /// Returns the GPU time of the compute work in ns, where timed.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for an `out` that is not one frame long
    /// (checked before anything is submitted); [`Error::Budget`] or
    /// [`Error::Gpu`].
    pub fn run(&mut self, slot: &GpuSlot, readback: &Readback, plan: &Plan, out: &mut [u8]) -> Result<Option<u64>> {
        readback.check_len(out.len())?;
        let ns = self.submit(slot, readback, plan)?.wait(slot)?;
        readback.take_result_into(out)?;
        Ok(ns)
    }

    /// Submits `plan` on the frame in `slot` and returns at once, so the
    /// caller can queue the next frame before this one is back: the GPU
    /// never idles between frames waiting for the host. Frames run in
    /// submission order on the shared kernel buffers, so on the GPU one
    /// frame's copy in, kernels and copy out follow the last one's (the
    /// band buffers are one set; wgpu orders their uses with barriers and
    /// has one queue): GPU time per frame is all three, which the kernel
    /// timestamps alone leave out.
    ///
    /// # Errors
    /// [`Error::Budget`] or [`Error::Gpu`].
    pub fn submit(&mut self, slot: &GpuSlot, readback: &Readback, plan: &Plan) -> Result<InFlight> {
        if readback.shape != slot.shape {
            return Err(Error::Gpu("the readback does not fit the slot's frames".into()));
        }
        self.prepare(slot.shape, plan)?;
        self.submit_prepared(slot, Ok(readback))
    }

    /// Runs `plan` on one frame and reads back only its preview: the
    /// result area-averaged over `scale` x `scale` blocks, as RGBA8, into
    /// `out` (resized to fit). Returns (width, height, kernel ns from GPU
    /// timestamps where the adapter has them, the time from submission
    /// until the result was mapped).
    ///
    /// # Errors
    /// [`Error::Budget`] or [`Error::Gpu`]; [`Error::InvalidValue`] for a
    /// scale other than 1, 2, 4 or 8.
    pub fn run_preview(
        &mut self,
        slot: &GpuSlot,
        plan: &Plan,
        scale: u32,
        out: &mut Vec<u8>,
    ) -> Result<(u32, u32, Option<u64>, std::time::Duration)> {
        self.prepare_for_preview(slot.shape, plan, scale)?;
        let submitted = std::time::Instant::now();
        let ns = self.submit_prepared(slot, Err(scale))?.wait(slot)?;
        let on_gpu = submitted.elapsed();
        let p = self.computes.last().expect("prepared").previews.iter().find(|p| p.scale == scale).expect("prepared");
        out.resize(p.width as usize * p.height as usize * 4, 0);
        // Unmapped whatever the view's fate: the pass is reused, and a
        // buffer left mapped would fail every later preview at this scale.
        let copied = p.read.buffer.get_mapped_range(..).map(|view| {
            let n = out.len();
            out.copy_from_slice(&view[..n]);
        });
        p.read.buffer.unmap();
        copied.map_err(|e| Error::Gpu(format!("preview readback: {e}")))?;
        Ok((p.width, p.height, ns, on_gpu))
    }

    /// Encodes and submits one frame on the newest compute set; the full
    /// result goes to the slot's readback or, with `scale`, only the
    /// preview to the preview's.
    fn submit_prepared(&self, slot: &GpuSlot, to: std::result::Result<&Readback, u32>) -> Result<InFlight> {
        let c = self.computes.last().expect("prepared");
        let (readback, preview) = match to {
            Ok(r) => (Some(r), None),
            Err(s) => (None, Some(c.previews.iter().find(|p| p.scale == s).expect("prepared"))),
        };
        if let Some(r) = readback {
            r.release_result();
        }
        slot.upload.unmap();
        let mut encoder = self.device.create_command_encoder(&Default::default());
        let copies = &c.copies;
        // One [begin, end] pair per band, so the copies between bands are
        // left out; bands past the timed ones share the last pair.
        let pairs = copies.len().min(staging::TIMED_BANDS);
        for (band, &(src_off, src_len, dst_off, dst_len)) in copies.iter().enumerate() {
            encoder.copy_buffer_to_buffer(&slot.upload, src_off, &c.packed.buffer, 0, src_len);
            {
                let pair = 2 * band.min(pairs - 1) as u32;
                let timestamp_writes = pass_timestamps(
                    slot.timer.as_ref().map(|t| &t.set),
                    (band < pairs).then_some(pair),
                    (band + 1 < pairs || band + 1 == copies.len()).then_some(pair + 1),
                );
                let mut pass =
                    encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("band"), timestamp_writes });
                for (_, pipeline, group, (gx, gy)) in c.launches.iter().filter(|l| l.0 == band) {
                    pass.set_pipeline(pipeline);
                    pass.set_bind_group(0, group, &[]);
                    pass.dispatch_workgroups(*gx, *gy, 1);
                }
                if let Some(p) = preview {
                    let launch = &p.launches[band];
                    pass.set_pipeline(&self.kernels.downscale);
                    pass.set_bind_group(0, &launch.group, &[]);
                    pass.dispatch_workgroups(launch.workgroups.0, launch.workgroups.1, 1);
                }
            }
            if let Some(r) = readback {
                encoder.copy_buffer_to_buffer(&c.packed.buffer, 0, &r.buffer, dst_off, dst_len);
            }
            if let Some(p) = preview {
                let (at, bytes) = p.launches[band].to;
                encoder.copy_buffer_to_buffer(&p.small.buffer, 0, &p.read.buffer, at, bytes);
            }
        }
        if let Some(t) = &slot.timer {
            encoder.resolve_query_set(&t.set, 0..2 * pairs as u32, &t.resolve, 0);
            encoder.copy_buffer_to_buffer(&t.resolve, 0, &t.read, 0, 16 * pairs as u64);
        }
        let index = self.queue.submit([encoder.finish()]);
        let result = match (readback, preview) {
            (Some(r), _) => &r.buffer,
            (None, Some(p)) => &p.read.buffer,
            (None, None) => unreachable!("a frame goes to a readback or a preview"),
        };
        let flight = InFlight {
            device: self.device.clone(),
            index,
            result: (result.clone(), request_map(result, wgpu::MapMode::Read)),
            upload: request_map(&slot.upload, wgpu::MapMode::Write),
            timer: slot.timer.as_ref().map(|t| (t.read.clone(), request_map(&t.read, wgpu::MapMode::Read), pairs)),
            full: readback.map(|r| r.mapped.clone()),
            period: self.queue.get_timestamp_period(),
            _holds: c.reservations(),
        };
        self.check_error()?;
        Ok(flight)
    }

    /// Runs `plan` on one frame held in host memory. Returns the frame and
    /// the GPU time of its kernels in nanoseconds, where the adapter has
    /// timestamps.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for a frame whose data is not its size, or
    /// of no pixels; [`Error::Gpu`] for a layout that cannot fit or a
    /// device error; [`Error::Budget`] when the ledger refuses the buffers.
    pub fn process(&mut self, src: &HostFrame, plan: &Plan) -> Result<(HostFrame, Option<u64>)> {
        src.check()?;
        let shape = FrameShape::of(src);
        self.banding(shape.width, shape.height, shape.format, plan)?;
        // The kernel set first: refused it, the call holds no slot it made.
        // A preview that had this slot given up for it would otherwise see
        // the slot taken back by an attempt that cannot run anyway.
        self.prepare(shape, plan)?;
        if !self.own_set.holds(shape, plan) {
            self.own_set = self.hold_set(shape, plan);
        }
        if self.own_slot.as_ref().is_none_or(|(s, _)| s.shape != shape) {
            self.own_slot = None;
            // Kernel sets other exports left give way to this frame.
            if self.ledger.current() + Self::slot_bytes(shape) + Self::readback_bytes(shape) > self.ledger.budget() {
                self.evict_export_sets();
            }
            self.own_slot = Some((self.new_slot(shape)?, self.new_readback(shape)?));
        }
        let (slot, readback) = self.own_slot.take().expect("slot");
        let mut out = HostFrame::new(src.width, src.height, src.format, src.has_alpha);
        let ns = slot.write(&src.data).and_then(|()| self.run(&slot, &readback, plan, &mut out.data))?;
        // Kept only after a frame that came back: a failed one may leave
        // the upload half-mapped, and every later frame would fail on it.
        self.own_slot = Some((slot, readback));
        Ok((out, ns))
    }

    /// Gives back the slot and readback buffer that [`GpuBackend::process`]
    /// keeps from one frame to the next, once a run of frames is over:
    /// two frames of budget an export or a preview may want next. Its
    /// kernel set is let go too: a cache again, evicted as others are.
    pub fn release_own_slot(&mut self) {
        self.own_slot = None;
        self.own_set = RunHold::default();
    }
}

/// Refuses a preview scale the kernel does not take: bands start on
/// multiples of 8 rows, so a band's first preview row is whole only at 1,
/// 2, 4 or 8 (what [`Scale`](crate::preview::Scale) offers).
fn check_scale(scale: u32) -> Result<()> {
    if matches!(scale, 1 | 2 | 4 | 8) { Ok(()) } else { Err(Error::invalid("preview scale", scale, "1, 2, 4 or 8")) }
}

/// Bytes of band `(y0, y1)` of a frame downscaled to `width` pixels at
/// 1/`scale`: bands start on multiples of 8, so of the scale; only the
/// last one ends on a partial block.
fn preview_band_bytes(width: u32, scale: u32, (y0, y1): (u32, u32)) -> u64 {
    (y1.div_ceil(scale) - y0 / scale) as u64 * width as u64 * 4
}

/// Bytes of a downscale pass's buffers: the widest band's output, the
/// whole preview's readback, and one uniform block per band.
struct PreviewSizes {
    band: u64,
    read: u64,
    uniforms: u64,
}

/// A compute pass's timestamp writes into `set` (where the adapter has
/// timestamps): `begin` at its start, `end` at its end, either left out;
/// none at all when both are (wgpu refuses an empty pair).
fn pass_timestamps(
    set: Option<&wgpu::QuerySet>,
    begin: Option<u32>,
    end: Option<u32>,
) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
    set.filter(|_| begin.is_some() || end.is_some()).map(|query_set| wgpu::ComputePassTimestampWrites {
        query_set,
        beginning_of_pass_write_index: begin,
        end_of_pass_write_index: end,
    })
}

/// `device.poll`, a lost device an error. wgpu panics on any failed poll
/// but a timeout: a driver reset or an unplugged GPU would unwind through
/// the in-flight frame's drop (which polls to settle its maps: a second
/// panic, the process aborted, an embedding editor with it).
fn poll(device: &wgpu::Device, what: wgpu::PollType) -> Result<wgpu::PollStatus> {
    use crate::error::{one_line, panic_message};
    match crate::io::catch_quiet(|| device.poll(what)) {
        Ok(Ok(status)) => Ok(status),
        Ok(Err(e)) => Err(Error::Gpu(format!("device poll failed: {}", one_line(&e.to_string())))),
        Err(payload) => Err(Error::Gpu(format!("device lost: {}", one_line(&panic_message(&*payload))))),
    }
}

/// The device error wgpu reported since the last look, if any, as this
/// operation's failure.
fn take_error(error: &Mutex<Option<String>>) -> Result<()> {
    match crate::lock(error).take() {
        Some(e) => Err(Error::Gpu(e)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{Op, OpGraph};

    #[test]
    fn previews_take_the_scales_whose_bands_start_whole() {
        assert!([1, 2, 4, 8].into_iter().all(|s| check_scale(s).is_ok()));
        for s in [0, 3, 16] {
            assert!(check_scale(s).unwrap_err().to_string().contains("1, 2, 4 or 8"), "{s}");
        }
    }

    #[test]
    fn an_8k_frame_is_banded_to_the_target_even_where_the_adapter_binds_more() {
        let plan = OpGraph::new(vec![Op::Blur { sigma: 4.0 }]).unwrap().plan();
        let limit = BAND_TARGET_BYTES.min(2 << 30);
        let b = Banding::new(8192, 4320, PixelFormat::Rgba8, &plan, limit).unwrap();
        assert!(8192 * SCRATCH_BPP * b.scratch_rows as u64 <= BAND_TARGET_BYTES);
        assert_eq!(4320u32.div_ceil(b.band_rows), 5, "{b:?}");
        assert_eq!(b.halo, 12);
        assert_eq!(Banding::choose(8192, 4320, PixelFormat::Rgba8, &plan, limit, 2 << 30).unwrap(), b);
    }

    #[test]
    fn a_halo_too_tall_for_the_target_takes_the_adapters_limit() {
        let plan = OpGraph::new(vec![Op::Blur { sigma: 170.0 }]).unwrap().plan();
        let err = Banding::new(8192, 4320, PixelFormat::Rgba8, &plan, BAND_TARGET_BYTES).unwrap_err();
        assert!(err.to_string().contains("blur radius total 510 px"), "{err}");
        // Bands twice the halo under a 2 GiB ceiling: buffers no larger
        // than that needs.
        let b = Banding::choose(8192, 4320, PixelFormat::Rgba8, &plan, BAND_TARGET_BYTES, 2 << 30).unwrap();
        assert!(b.halo == 510 && b.band_rows >= 2 * b.halo, "{b:?}");
        assert!(b.scratch_rows <= 4 * 510 + 24, "{b:?}");
        // Where the adapter binds no more than the target, the error stands.
        let same = Banding::choose(8192, 4320, PixelFormat::Rgba8, &plan, BAND_TARGET_BYTES, BAND_TARGET_BYTES);
        assert!(same.is_err());
        // Bands shorter than twice their halo also move up.
        let plan = OpGraph::new(vec![Op::Blur { sigma: 100.0 }]).unwrap().plan();
        let small = Banding::new(8192, 4320, PixelFormat::Rgba8, &plan, BAND_TARGET_BYTES).unwrap();
        assert!(small.band_rows < 2 * small.halo, "{small:?}");
        let b = Banding::choose(8192, 4320, PixelFormat::Rgba8, &plan, BAND_TARGET_BYTES, 2 << 30).unwrap();
        assert!(b.halo == 300 && b.band_rows >= 2 * b.halo, "{b:?}");
        assert!(b.scratch_rows <= 4 * 300 + 24, "{b:?}");
    }
}
