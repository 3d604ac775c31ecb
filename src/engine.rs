//! The engine and its jobs: a sequence in, an op graph, frames out.
//!
//! [`Engine::run`] is the pipelined path (the `pipeline` module).
//! [`Engine::run_sequential`] is the one-frame-at-a-time path: decode,
//! process, encode, write, next. It is simple enough to be obviously right,
//! which makes it the oracle the pipelined path must match byte for byte.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::backend::{Backend, BackendKind};
use crate::error::{Error, Result};
use crate::io::{DecodeLimits, EncodeOptions, OutputFormat, PixelFormat, encode_frame, write_frame_atomic};
use crate::ledger::{DEFAULT_BUDGET, Ledger};
use crate::ops::{Affine, OpGraph, Plan};
use crate::pool::PoolSize;
use crate::priority::{Priority, PriorityLock};
use crate::report::{FrameFailure, FrameRecord, Report};
use crate::sequence::{FramePattern, FrameSpec, MissingPolicy, Sequence};

/// What to do when one frame fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[non_exhaustive]
pub enum ErrorPolicy {
    /// Stop at the first failed frame (nothing partial is left), exit 1.
    #[default]
    Stop,
    /// Report the frame and go on with the others, exit 1 at the end.
    Skip,
}

/// Everything a run needs besides the backend.
#[derive(Clone, Debug)]
pub struct Job {
    /// Input pattern, directory or file.
    pub input: String,
    /// Subset of frames. By default, every frame on disk.
    pub frames: Option<FrameSpec>,
    /// Frames missing inside the range. By default, an error.
    pub missing: MissingPolicy,
    /// Output pattern (`graded/shot_%04d.png`); the extension picks the
    /// format. `-` streams every frame, in order, to the writer given to
    /// [`Engine::run_stream`].
    pub output: String,
    /// What a stream (`output` `-`) carries: raw, PNG, JPEG or QOI (not
    /// TIFF, which no reader can split). By default, [`OutputFormat::Raw`].
    pub stream_format: OutputFormat,
    /// Operations to apply.
    pub graph: OpGraph,
    /// Replace existing outputs. By default, false: existing outputs stop the run before it starts.
    pub overwrite: bool,
    /// Leave the outputs that exist as they are and process the other
    /// frames: how an interrupted render resumes. Outputs are renamed into
    /// place only once complete, so one that exists is whole. By default,
    /// false; not with `overwrite`, nor with a stream.
    pub skip_existing: bool,
    /// One failed frame stops the run, or is skipped. By default, stop.
    pub on_error: ErrorPolicy,
    /// Encoder settings.
    pub encode: EncodeOptions,
    /// Decoder allocation bounds.
    pub limits: DecodeLimits,
    /// Other files the job reads (a preset): never written over, whatever
    /// `overwrite` says, like the sequence's frames.
    pub also_reads: Vec<PathBuf>,
    /// Test hook: panic in this stage at this frame number.
    #[doc(hidden)]
    pub inject_panic: Option<(crate::pipeline::Stage, u64)>,
    /// Test hook: the OS refuses every thread of this pipeline stage (the
    /// reader's for [`Stage::Start`](crate::pipeline::Stage)).
    #[doc(hidden)]
    pub refuse_threads: Option<crate::pipeline::Stage>,
}

impl Job {
    /// A job with default settings.
    pub fn new(input: impl Into<String>, output: impl Into<String>, graph: OpGraph) -> Self {
        Job {
            input: input.into(),
            frames: None,
            missing: MissingPolicy::Error,
            output: output.into(),
            stream_format: OutputFormat::Raw,
            graph,
            overwrite: false,
            skip_existing: false,
            on_error: ErrorPolicy::Stop,
            encode: EncodeOptions::default(),
            limits: DecodeLimits::default(),
            also_reads: Vec::new(),
            inject_panic: None,
            refuse_threads: None,
        }
    }
}

/// How to build an [`Engine`].
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Which backend. By default, [`BackendKind::Auto`].
    pub backend: BackendKind,
    /// Adapter name filter. By default, none.
    pub adapter: Option<String>,
    /// Hard ceiling on GPU bytes. By default, 2 GiB ([`DEFAULT_BUDGET`]).
    pub vram_budget: u64,
    /// Decode and encode threads, and the CPU backend's kernel threads (at
    /// most one per core); 0 means one per core. By default, 0.
    pub threads: usize,
    /// Frame slots. By default, [`PoolSize::Auto`].
    pub pool: PoolSize,
    /// Bytes of finished previews kept. By default, 512 MiB.
    pub preview_cache_bytes: u64,
    /// Bytes of decoded source frames kept for re-grading. By default, 1 GiB.
    /// (The source decoded last is kept as well, whether or not the cache
    /// keeps it, so a slider dragged on a frame larger than the cache never
    /// decodes it twice; so is the one the GPU's preview upload holds, until
    /// that memory is reclaimed. Host memory can hold two frames more.)
    pub source_cache_bytes: u64,
    /// Frames prefetched ahead of the playhead, at most
    /// [`MAX_THREADS`] (each may take a thread of its own). By default, 3.
    pub prefetch: usize,
    /// Threads that prefetch, each decoding and rendering one frame at a
    /// time (decoding an 8K PNG takes a core about 0.4 s, so playback wants
    /// several at once); 0 means half the engine's [threads](Self::threads),
    /// the other half left to the requests the caller waits on and an
    /// export. Never more than [`prefetch`](Self::prefetch) (nor fewer than
    /// 1): more would only wait. By default, 0.
    pub prefetch_threads: usize,
    /// How long the previews' GPU memory (their frame slot, kernel buffers
    /// of other grades) is kept after the last preview once an export
    /// wants it back to regrow its pool. Kept while an editor is active, so
    /// scrubbing does not reallocate; given back when it is not. For as
    /// long after a preview or prefetch renders, an export keeps one frame
    /// on the GPU instead of two, so previews queue behind less of it. By
    /// default, 1 second.
    pub preview_memory_idle: std::time::Duration,
    /// Most bytes one GPU kernel buffer binds, which sets how many bands of
    /// rows a frame is processed in. Lower it to spend less VRAM on kernel
    /// buffers (more for slots) at the cost of more halo rows re-read; tests
    /// lower it to band small frames. By default, none: the adapter's
    /// binding limit capped at [`BAND_TARGET_BYTES`](crate::gpu::BAND_TARGET_BYTES).
    /// `Some(0)` is refused.
    pub band_bytes: Option<u64>,
    /// Bounds on what decoding a preview's source may allocate (an export
    /// takes [`Job::limits`]): raise them with a job's to preview frames
    /// past the defaults. By default, [`DecodeLimits::default`].
    pub preview_decode_limits: DecodeLimits,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            backend: BackendKind::Auto,
            adapter: None,
            vram_budget: DEFAULT_BUDGET,
            threads: 0,
            pool: PoolSize::Auto,
            preview_cache_bytes: 512 << 20,
            source_cache_bytes: 1 << 30,
            prefetch: 3,
            prefetch_threads: 0,
            preview_memory_idle: std::time::Duration::from_secs(1),
            band_bytes: None,
            preview_decode_limits: DecodeLimits::default(),
        }
    }
}

/// An opened backend with its VRAM ledger, ready to run jobs.
///
/// # Examples
///
/// ```no_run
/// use framepipe::{Cancel, Engine, EngineConfig, Job, Op, OpGraph};
///
/// let mut engine = Engine::new(EngineConfig { vram_budget: 4 << 30, ..Default::default() })?;
/// let graph = OpGraph::new(vec![Op::Saturation { saturation: 0.8 }, Op::Blur { sigma: 2.0 }])?;
/// let job = Job::new("plates/shot_%04d.png", "graded/shot_%04d.png", graph);
/// let prepared = framepipe::prepare(&job)?;
/// let cancel = Cancel::default(); // clone it to another thread to stop the run
/// let report = engine.run(&job, &prepared, &cancel, &mut |p| println!("{p:?}"))?;
/// println!("{} (ledger peak {} bytes)", report.summary(), engine.ledger().peak());
/// # Ok::<(), framepipe::Error>(())
/// ```
///
/// An `Engine` is a cheap handle (clone it freely): exports, previews and
/// prefetches from any thread share one backend, one ledger and the caches.
/// When the last handle goes (a [`PreviewView`](crate::preview::PreviewView) holds
/// one), the engine's own threads are stopped (prefetches, views' requests)
/// or finished (an async preview under way, which still answers) and
/// joined before the drop returns, so the device is released
/// on the dropping thread and nothing of the engine runs on after it (a
/// GPU driver torn down at process exit under a thread still using it
/// crashes).
pub struct Engine {
    pub(crate) core: std::sync::Arc<EngineCore>,
    /// Whether this is a caller's handle (counted in `EngineCore::handles`)
    /// rather than one the engine's own threads render through.
    caller: bool,
}

/// What an engine runs on, for logs: its backend, device and budget.
impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("backend", &self.backend_name())
            .field("device", &self.device_name())
            .field("vram_budget", &self.ledger().budget())
            .field("threads", &self.threads())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// The handle the engine's own threads render through: it keeps the
    /// engine alive while they work but is not counted as a caller's.
    pub(crate) fn internal(core: std::sync::Arc<EngineCore>) -> Self {
        Engine { core, caller: false }
    }

    /// Whether any caller still holds a handle: when none does, nobody will
    /// ask for what the engine's own threads would render.
    pub(crate) fn has_callers(core: &EngineCore) -> bool {
        core.handles.load(std::sync::atomic::Ordering::SeqCst) > 0
    }
}

impl Clone for Engine {
    /// A caller's handle makes another; an internal one another internal
    /// one, so the engine's own threads never count as callers.
    fn clone(&self) -> Self {
        if self.caller {
            self.core.handles.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Engine { core: self.core.clone(), caller: self.caller }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.caller && self.core.handles.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.core.previews.stop_threads();
        }
    }
}

/// What every handle of one engine shares.
pub(crate) struct EngineCore {
    pub(crate) config: EngineConfig,
    /// Callers' handles alive (see [`Engine`]'s drop).
    handles: std::sync::atomic::AtomicUsize,
    pub(crate) backend: PriorityLock<Backend>,
    name: &'static str,
    device: String,
    pub(crate) ledger: std::sync::Arc<Ledger>,
    notice: Option<String>,
    /// Previews waiting for VRAM: while any wait, exports give slots back.
    pub(crate) pressure: std::sync::Arc<crate::pool::Pressure>,
    /// Raised by previews until they hold their VRAM: export frames do not
    /// start while it is up.
    pub(crate) gate: crate::priority::Gate,
    pub(crate) previews: crate::preview::PreviewState,
    /// The CPU backend's kernels run here, on [`Engine::threads`] threads
    /// (at most one per core):
    /// `--threads 1` on a render farm's one-core slot means one core, not
    /// rayon's global pool of all of them. Started on first use (a GPU
    /// engine never needs it); `None` if the threads could not be started,
    /// and the work then runs on the caller's thread.
    cpu: std::sync::OnceLock<Option<rayon::ThreadPool>>,
    /// Seconds [`Engine::new`] took (the adapter, the device), until the
    /// first run's report takes them: that run paid them.
    opened_s: std::sync::Mutex<Option<f64>>,
}

impl Engine {
    /// Opens the backend the config asks for.
    ///
    /// # Errors
    /// [`Error::NoGpu`] when a GPU was required and none opens;
    /// [`Error::InvalidValue`] for a bad thread count, pool size, VRAM
    /// budget (0), prefetch count, band size (0) or adapter name.
    pub fn new(config: EngineConfig) -> Result<Self> {
        // No frame, preview or kernel buffer fits in none.
        if config.vram_budget == 0 {
            return Err(Error::invalid("vram budget", 0, "at least one byte (2GiB by default)"));
        }
        if config.threads > MAX_THREADS {
            return Err(Error::invalid("thread count", config.threads, format!("0 (one per core) to {MAX_THREADS}")));
        }
        // A pool of no slots would never start a frame.
        if let PoolSize::Fixed(n) = config.pool
            && !(1..=crate::pool::MAX_POOL).contains(&n)
        {
            return Err(Error::invalid("pool size", n, format!("auto or 1 to {}", crate::pool::MAX_POOL)));
        }
        // Prefetch threads are at most the frames prefetched, each decoding
        // one at a time: a mistyped 100000 would start as many.
        if config.prefetch > MAX_THREADS {
            return Err(Error::invalid("prefetch", config.prefetch, format!("0 to {MAX_THREADS} frames")));
        }
        // No band of rows fits in none.
        if config.band_bytes == Some(0) {
            return Err(Error::invalid("band bytes", 0, "at least one row's bytes, or none (the adapter's limit)"));
        }
        // Every name contains "": it would pick any adapter, a software one
        // too, where the user meant to choose one.
        if let Some(blank) = config.adapter.as_deref().filter(|n| n.trim().is_empty()) {
            return Err(Error::invalid("adapter", format!("{blank:?}"), "part of an adapter's name, not blank"));
        }
        let opening = Instant::now();
        let ledger = Ledger::new(config.vram_budget);
        let options = crate::gpu::GpuOptions {
            adapter: config.adapter.clone(),
            max_binding_override: config.band_bytes,
            ..Default::default()
        };
        let (backend, notice) = Backend::open(config.backend, &options, ledger.clone())?;
        let (name, device) = (backend.name(), backend.device_name(kernel_threads(config.threads)));
        let previews = crate::preview::PreviewState::new(config.preview_cache_bytes, config.source_cache_bytes);
        let core = EngineCore {
            handles: std::sync::atomic::AtomicUsize::new(1),
            config,
            backend: PriorityLock::new(backend),
            name,
            device,
            ledger,
            notice,
            pressure: Default::default(),
            gate: Default::default(),
            previews,
            cpu: std::sync::OnceLock::new(),
            opened_s: std::sync::Mutex::new(Some(opening.elapsed().as_secs_f64())),
        };
        Ok(Engine { core: std::sync::Arc::new(core), caller: true })
    }

    /// Seconds the engine took to open, until a run has paid them ([`a
    /// report`](crate::Report::open_s) of one that returned); 0 after.
    pub(crate) fn opened_s(&self) -> f64 {
        crate::lock(&self.core.opened_s).unwrap_or(0.0)
    }

    /// Why `auto` fell back to the CPU, if it did.
    pub fn notice(&self) -> Option<&str> {
        self.core.notice.as_deref()
    }

    /// The backend, shared by exports and previews: lock it with the
    /// priority of the work (see [`crate::priority`]). Machinery, for the
    /// tests and the binary: a guard held here stops every export and
    /// preview, and one held while calling [`Engine::preview`] on the same
    /// thread deadlocks.
    #[doc(hidden)]
    pub fn backend(&self) -> &PriorityLock<Backend> {
        &self.core.backend
    }

    /// `"gpu"` or `"cpu"`.
    pub fn backend_name(&self) -> &'static str {
        self.core.name
    }

    /// The adapter's name, or a description of the CPU backend.
    pub fn device_name(&self) -> &str {
        &self.core.device
    }

    /// The ledger counting every GPU byte.
    pub fn ledger(&self) -> &std::sync::Arc<Ledger> {
        &self.core.ledger
    }

    /// The config it was built with.
    pub fn config(&self) -> &EngineConfig {
        &self.core.config
    }

    /// VRAM one export frame of `shape` graded with `graph` takes of the
    /// budget (a slot, a readback buffer and the kernel buffers): the
    /// least a run on this engine needs; none on the CPU backend, or for
    /// a graph with nothing to do. An editor can check a budget before it
    /// makes or opens anything (with [`Engine::preview_vram`]); a run asked
    /// for anyway is refused up front with [`Error::Budget`].
    ///
    /// # Errors
    /// A blur whose halo the adapter's bindings cannot take, or a graph
    /// [`OpGraph::validate`] refuses ([`Error::InvalidValue`]). (A frame
    /// larger than the adapter's largest buffer is refused when its slot
    /// is made.)
    pub fn export_vram(&self, shape: crate::gpu::FrameShape, graph: &OpGraph) -> Result<Option<u64>> {
        graph.validate()?;
        let plan = graph.plan();
        // (On the CPU backend it never waits for the lock an export's
        // kernels hold.)
        if is_identity(&plan) || self.backend_name() == "cpu" {
            return Ok(None);
        }
        match &*self.backend().lock(Priority::Export) {
            Backend::Gpu(gpu) => Ok(Some(crate::pipeline::one_frame_bytes(shape, gpu.compute_bytes(shape, &plan)?))),
            Backend::Cpu => Ok(None),
        }
    }

    /// Decode/encode threads (the config's, or one per core).
    pub fn threads(&self) -> usize {
        resolve_threads(self.core.config.threads)
    }

    /// Threads that prefetch: the config's, or half the engine's threads;
    /// at least 1, at most the frames prefetched.
    pub fn prefetch_threads(&self) -> usize {
        // More threads than frames prefetched would only wait (and a
        // mistyped 100000 would exhaust the process's memory for stacks).
        let most = self.core.config.prefetch.max(1);
        match self.core.config.prefetch_threads {
            0 => (self.threads() / 2).clamp(1, most),
            n => n.min(most),
        }
    }

    /// Runs `work` on the engine's CPU threads (see [`Engine::threads`],
    /// at most one per core): what it runs in parallel (the CPU kernels)
    /// stays within them.
    /// Call it holding the backend, never the other way round: a pool
    /// thread must not wait for the backend.
    pub(crate) fn on_cpu_threads<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        let pool = self.core.cpu.get_or_init(|| {
            let builder = rayon::ThreadPoolBuilder::new().num_threads(kernel_threads(self.core.config.threads));
            builder.thread_name(|i| format!("framepipe-cpu-{i}")).build().ok()
        });
        match pool {
            Some(pool) => pool.install(work),
            None => work(),
        }
    }

    /// Runs a prepared job with every stage at once over the slot pool.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for a `job` other than the one `prepared`
    /// was made from, or whose graph is no longer valid; [`Error::Budget`]
    /// when not even one slot fits; [`Error::Panic`] when a stage panicked,
    /// [`Error::Thread`] when the OS would not start one of its threads
    /// (all threads are joined first). Per-frame failures are in the
    /// report; a cancel is its `cancelled`, not an error.
    ///
    /// # Panics
    /// When `progress` panics: the panic goes on out of `run` once every
    /// thread has stopped (frames already under way may still be written).
    pub fn run(
        &self,
        job: &Job,
        prepared: &PreparedJob,
        cancel: &Cancel,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Report> {
        check_runnable(job, prepared, false)?;
        self.pipelined(job, prepared, None, cancel, progress)
    }

    /// Runs a prepared stream job (output `-`) pipelined, writing every
    /// frame to `out` in sequence order: frames finish out of order, so a
    /// reorder buffer holds the early ones, and the reader never runs more
    /// than a window of frames ahead of the last one written, which bounds
    /// that buffer. A failed frame is left out (`--on-error skip`) or ends
    /// the stream before it (`stop`): a consumer never gets frames after a
    /// gap it was not told about. A write error (the reader of a pipe went
    /// away) stops the run.
    ///
    /// # Errors
    /// As [`Engine::run`].
    pub fn run_stream(
        &self,
        job: &Job,
        prepared: &PreparedJob,
        out: &mut (dyn std::io::Write + Send),
        cancel: &Cancel,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Report> {
        check_runnable(job, prepared, true)?;
        self.pipelined(job, prepared, Some(out), cancel, progress)
    }

    fn pipelined(
        &self,
        job: &Job,
        prepared: &PreparedJob,
        out: Option<&mut (dyn std::io::Write + Send)>,
        cancel: &Cancel,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Report> {
        let report =
            crate::pipeline::run(job, prepared, self, self.threads(), self.core.config.pool, out, cancel, progress);
        self.opened_paid(report)
    }

    /// A run's `report`: one that returned has paid the engine's opening
    /// (its `open_s`, which later runs' reports leave at 0); one that
    /// failed leaves it to the next.
    fn opened_paid(&self, report: Result<Report>) -> Result<Report> {
        if report.is_ok() {
            crate::lock(&self.core.opened_s).take();
        }
        report
    }

    /// Runs a prepared job one frame at a time (the oracle).
    ///
    /// # Errors
    /// As [`Engine::run`].
    pub fn run_sequential(
        &self,
        job: &Job,
        prepared: &PreparedJob,
        cancel: &Cancel,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Report> {
        check_runnable(job, prepared, false)?;
        self.sequential(job, prepared, None, cancel, progress)
    }

    /// [`Engine::run_stream`] one frame at a time (the oracle).
    ///
    /// # Errors
    /// As [`Engine::run`].
    pub fn run_sequential_stream(
        &self,
        job: &Job,
        prepared: &PreparedJob,
        out: &mut dyn std::io::Write,
        cancel: &Cancel,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Report> {
        check_runnable(job, prepared, true)?;
        self.sequential(job, prepared, Some(out), cancel, progress)
    }

    fn sequential(
        &self,
        job: &Job,
        prepared: &PreparedJob,
        out: Option<&mut dyn std::io::Write>,
        cancel: &Cancel,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Report> {
        /// The slot the run keeps between frames goes back however the
        /// run ends: a panic in a progress callback or a kernel included,
        /// or the ledger would count it for the engine's whole life.
        struct ReleaseOwnSlot<'a>(&'a Engine);
        impl Drop for ReleaseOwnSlot<'_> {
            fn drop(&mut self) {
                if let Backend::Gpu(gpu) = &mut *self.0.core.backend.lock(Priority::Export) {
                    gpu.release_own_slot();
                }
            }
        }
        let watch = self.core.ledger.watch();
        let report = {
            let _release = ReleaseOwnSlot(self);
            run_sequential(job, prepared, self, out, cancel, progress)
        };
        let mut report = self.opened_paid(report)?;
        report.vram_peak = watch.peak();
        report.rss_peak = crate::report::peak_rss();
        Ok(report)
    }
}

/// The most decode/encode threads an engine starts: each holds a frame in
/// flight, so more only multiplies memory.
pub const MAX_THREADS: usize = 1024;

/// A job checked against the disk: frames found, output paths decided.
/// Read-only to callers: a run trusts what [`prepare`] checked (no output
/// on an input, one output per frame), so nothing may change it after.
#[derive(Debug)]
pub struct PreparedJob {
    /// The frames to process.
    pub(crate) sequence: Sequence,
    /// One output path per frame, same order (`-` for a stream).
    pub(crate) outputs: Vec<PathBuf>,
    /// Output container.
    pub(crate) format: OutputFormat,
    /// Whether the frames go to one stream (output `-`) rather than files.
    pub(crate) stream: bool,
    /// The header of the first frame asked whose header reads, kept
    /// frames ([`Job::skip_existing`]) included (the run's shape, and what
    /// the notices speak of); read once, here.
    pub(crate) first: Option<crate::io::FrameInfo>,
    /// How the frames are encoded: the job's options, with
    /// [`EncodeOptions::grey`] set where [`first`](Self::first) is grey.
    pub(crate) encode: EncodeOptions,
    /// The grade keeps grey grey ([`OpGraph::keeps_grey`](crate::OpGraph::keeps_grey)):
    /// each grey source may come out grey, whatever the first frame is
    /// ([`Self::encode_for`]).
    pub(crate) keeps_grey: bool,
    /// Frames left out because their output exists
    /// ([`Job::skip_existing`]), ascending.
    pub(crate) existing: Vec<u64>,
    /// Those frames' outputs, kept.
    kept: Vec<PathBuf>,
    /// Every file the job reads, matched frames not selected and
    /// [`Job::also_reads`] included: what no output may land on.
    pub(crate) reads: crate::io::FileSet,
    /// Unfinished outputs of a run killed outright (SIGKILL, a power cut)
    /// that [`prepare`] found in the output folder: hidden
    /// `.framepipe-*.partial` files no live run holds, removed where they
    /// were untouched for 10 minutes, else kept (see
    /// [`remove_stale_partials`](crate::io::remove_stale_partials)).
    pub(crate) stale_partials: crate::io::StalePartials,
    /// Seconds [`prepare`] took: scanning the sequence, reading the first
    /// header, checking every output.
    pub(crate) prepare_s: f64,
    /// Output folders [`prepare`] made: removed again when the last copy of
    /// this job drops, if the run left them empty.
    _made: std::sync::Arc<crate::io::MadeDirs>,
    /// The job as prepared: a run is refused another.
    from: Job,
}

impl PreparedJob {
    /// The frames to process.
    pub fn sequence(&self) -> &Sequence {
        &self.sequence
    }

    /// One output path per frame, same order (`-` for a stream).
    pub fn outputs(&self) -> &[PathBuf] {
        &self.outputs
    }

    /// Output container.
    pub fn format(&self) -> OutputFormat {
        self.format
    }

    /// Whether the frames go to one stream (output `-`) rather than files.
    pub fn is_stream(&self) -> bool {
        self.stream
    }

    /// The header of the first frame asked whose header reads (see the
    /// field's notes): the run's shape.
    pub fn first(&self) -> Option<&crate::io::FrameInfo> {
        self.first.as_ref()
    }

    /// The job's encode options, grey decided by the first frame: how
    /// that frame is encoded. Each frame's are [`Self::encode_for`] its
    /// source.
    pub fn encode(&self) -> &EncodeOptions {
        &self.encode
    }

    /// How a frame whose source is grey (`grey`) or not is encoded: each
    /// output keeps its own source's channels, a grey frame of a color
    /// sequence coming out grey as a color frame of a grey one comes out
    /// color (where the grade keeps grey grey).
    pub fn encode_for(&self, grey: bool) -> EncodeOptions {
        EncodeOptions { grey: self.from.encode.grey || (grey && self.keeps_grey), ..self.encode }
    }

    /// Frames left out because their output exists, ascending.
    pub fn existing(&self) -> &[u64] {
        &self.existing
    }

    /// The outputs of [`Self::existing`]'s frames, kept as they are.
    pub fn kept_outputs(&self) -> &[PathBuf] {
        &self.kept
    }

    /// Every file the job reads: what no output may land on.
    pub fn reads(&self) -> &crate::io::FileSet {
        &self.reads
    }

    /// Unfinished outputs of a killed run that [`prepare`] found, removed
    /// or kept.
    pub fn stale_partials(&self) -> &crate::io::StalePartials {
        &self.stale_partials
    }

    /// Checks a side file the run will write when it ends (a JSON report, a
    /// timeline): none of the files the job reads ([`PreparedJob::reads`])
    /// or writes, whatever `overwrite` says; not an existing file unless
    /// `overwrite`; in a folder that takes files. Files are compared by
    /// identity on disk, or by their paths once `..` and links are
    /// resolved. Call it before the run, so a bad name is a usage error
    /// rather than a lost report after an hour of frames. Keep the returned
    /// [`MadeDirs`](crate::io::MadeDirs) until the file is written: a
    /// folder made for it is removed if it stays empty.
    ///
    /// # Errors
    /// [`Error::PathClash`], [`Error::OutputExists`], [`Error::OutputDir`],
    /// [`Error::OutputIsFolder`] (a name ending in `/`).
    pub fn check_side_file(&self, path: &Path, overwrite: bool) -> Result<crate::io::MadeDirs> {
        let outputs = self.outputs.iter().filter(|_| !self.stream);
        check_side_file(path, overwrite, &self.reads, &crate::io::FileSet::new(outputs))
    }
}

/// [`PreparedJob::check_side_file`] for any set of files read and written.
///
/// # Errors
/// As [`PreparedJob::check_side_file`].
pub fn check_side_file(
    path: &Path,
    overwrite: bool,
    reads: &crate::io::FileSet,
    writes: &crate::io::FileSet,
) -> Result<crate::io::MadeDirs> {
    let clash = |role: &str| Error::PathClash { path: path.to_owned(), role: role.into() };
    if reads.contains(path) {
        return Err(clash("an input"));
    }
    if writes.contains(path) {
        return Err(clash("an output"));
    }
    crate::io::check_new_file(path, overwrite)
}

/// A run's `job` must be the one `prepared` was made from (what prepare
/// checked and decided: the frames, the outputs, their encoding), its
/// graph valid (checked again: it may have been changed since, or built
/// without [`OpGraph::new`]); stream jobs need a writer, file jobs must
/// not get one.
fn check_runnable(job: &Job, prepared: &PreparedJob, have_writer: bool) -> Result<()> {
    job.graph.validate()?;
    let from = &prepared.from;
    let same = job.input == from.input
        && job.frames == from.frames
        && job.missing == from.missing
        && job.output == from.output
        && job.stream_format == from.stream_format
        && job.overwrite == from.overwrite
        && job.skip_existing == from.skip_existing
        && job.encode == from.encode
        && job.also_reads == from.also_reads;
    if !same {
        return Err(Error::invalid(
            "job",
            &job.output,
            "the job it was prepared from: prepare it again after changing its input, frames, outputs or encoding",
        ));
    }
    match (prepared.stream, have_writer) {
        (true, false) => Err(Error::invalid("output", "-", "a writer: run a stream job with Engine::run_stream")),
        (false, true) => Err(Error::invalid("output", "a file pattern", "-, for Engine::run_stream")),
        _ => Ok(()),
    }
}

/// Scans the input and checks every output before any frame is touched.
/// Once every check has passed, it removes the unfinished outputs a run
/// killed outright left in the output folder
/// ([`PreparedJob::stale_partials`]), as the run it prepares will write
/// there.
///
/// # Errors
/// Usage errors ([`Error::is_usage`]): bad pattern, nothing found, missing
/// frames, bad extension, an output that exists or is an input, an output
/// folder that cannot be created or written.
pub fn prepare(job: &Job) -> Result<PreparedJob> {
    let preparing = Instant::now();
    job.graph.validate()?;
    // Only for a run that replaces nothing: which of two sequences is the
    // sources is then a guess that can lose no file (with --overwrite, the
    // graded frames read as sources could replace the real ones).
    let output = (job.output != "-" && !job.overwrite).then_some(job.output.as_str());
    let mut sequence = Sequence::scan_for(&job.input, job.frames.as_ref(), job.missing, output)?;
    let reads = crate::io::FileSet::new(sequence.matched.iter().chain(&job.also_reads));
    let stream = job.output == "-";
    // The run's shape, and whether its sources are grey, as the first frame
    // whose header reads says: of every frame asked, those whose outputs
    // are kept too, so that a resumed run renders what the whole one did
    // (and refuses the same frames as of another size).
    let first = sequence.frames.iter().find_map(|f| crate::io::probe_info(&f.path, &job.limits).ok());
    let targets = if stream {
        stream_targets(job, &sequence)?
    } else {
        file_targets(job, &mut sequence, &reads, first.as_ref())?
    };
    if let Some(info) = first {
        targets.format.check_size(info.width, info.height)?;
    }
    // `image` would clamp it silently.
    if targets.format == OutputFormat::Jpeg && !(1..=100).contains(&job.encode.jpeg_quality) {
        return Err(Error::invalid("JPEG quality", job.encode.jpeg_quality, "1 to 100"));
    }
    // Every check passed: the run will write there.
    let stale_partials = targets.out_dir.as_deref().map(crate::io::remove_stale_partials).unwrap_or_default();
    // Grey sources come out grey where the grade keeps grey grey (a tint
    // too small to survive rounding is kept as RGB, not lost).
    let mut prepared = PreparedJob {
        sequence,
        outputs: targets.outputs,
        format: targets.format,
        stream,
        first,
        encode: job.encode,
        keeps_grey: job.graph.keeps_grey(),
        existing: targets.existing,
        kept: targets.kept,
        reads,
        stale_partials,
        _made: targets.made,
        from: job.clone(),
        prepare_s: preparing.elapsed().as_secs_f64(),
    };
    prepared.encode = prepared.encode_for(first.is_some_and(|i| i.grey));
    Ok(prepared)
}

/// Where a prepared job's frames go, as [`prepare`] decided.
struct Targets {
    outputs: Vec<PathBuf>,
    format: OutputFormat,
    existing: Vec<u64>,
    kept: Vec<PathBuf>,
    /// The folder the files go to (none for a stream).
    out_dir: Option<PathBuf>,
    made: std::sync::Arc<crate::io::MadeDirs>,
}

/// The targets of a job written to one stream (output `-`).
fn stream_targets(job: &Job, sequence: &Sequence) -> Result<Targets> {
    // FFmpeg (image2pipe, tiff_pipe) cannot split concatenated TIFFs.
    if job.stream_format == OutputFormat::Tiff {
        return Err(Error::invalid("stream format", "tiff", "raw, png, jpeg or qoi (a TIFF stream cannot be split)"));
    }
    if job.skip_existing {
        return Err(Error::invalid("skip existing", "with a stream output", "file outputs: a stream has none to keep"));
    }
    Ok(Targets {
        outputs: vec![PathBuf::from("-"); sequence.frames.len()],
        format: job.stream_format,
        existing: Vec::new(),
        kept: Vec::new(),
        out_dir: None,
        made: Default::default(),
    })
}

/// The targets of a job written to files, every one checked; frames whose
/// output is kept ([`Job::skip_existing`]) leave `sequence`.
fn file_targets(
    job: &Job,
    sequence: &mut Sequence,
    reads: &crate::io::FileSet,
    rendered: Option<&crate::io::FrameInfo>,
) -> Result<Targets> {
    if job.output.trim().is_empty() {
        return Err(Error::invalid("output", "\"\"", "a file, a frame pattern, or - for a stream"));
    }
    refuse_output_folder(job, sequence)?;
    let mut outputs: Vec<PathBuf> = if FramePattern::is_pattern(&job.output) {
        let pattern = FramePattern::parse(&job.output)?;
        // One still (`plate.png`) has no number to put in a frame field:
        // `take#2.png` would silently become `take02.png`.
        let only = Path::new(&job.input);
        if sequence.frames.len() == 1 && only.is_file() && crate::sequence::still_number(only).is_none() {
            return Err(Error::Sequence(format!(
                "{}: a frame number field (# or %d), but the input {} is one file with no frame number: name the output as a file",
                job.output, job.input
            )));
        }
        sequence.frames.iter().map(|f| pattern.path(f.number)).collect()
    } else if sequence.frames.len() == 1 {
        vec![PathBuf::from(&job.output)]
    } else {
        // `x_%i.png`: say which `%` is not a field.
        if job.output.contains('%') {
            FramePattern::parse(&job.output)?;
        }
        // A name without an extension is most likely a folder meant.
        let example = match Path::new(&job.output).extension() {
            None => format!(" (into a folder: {}/{})", job.output, example_name(job, sequence)),
            Some(_) => String::new(),
        };
        return Err(Error::Sequence(format!(
            "{}: output needs a frame number field (%04d or ####) for {} frames{example}",
            job.output,
            sequence.frames.len()
        )));
    };
    // Named by what the user gave (the pattern), the extension the same.
    let format = OutputFormat::from_path(Path::new(&job.output))?;
    if job.skip_existing && job.overwrite {
        return Err(Error::invalid("skip existing", "with overwrite", "one of them: keep what exists, or replace it"));
    }
    // Dropped, and the folders with it, if a check below fails.
    let out_dir = crate::io::parent_dir(&outputs[0]).to_owned();
    let made = std::sync::Arc::new(crate::io::check_output_dir(&out_dir)?);
    let mut keep = Vec::with_capacity(outputs.len());
    // Outputs there that are not frames to keep: all named in one error,
    // not one a run (a resume after a copy that broke several).
    let mut refused: Vec<(u64, Error)> = Vec::new();
    for (frame, out) in sequence.frames.iter().zip(&outputs) {
        if reads.contains(out) {
            return Err(Error::OutputIsInput(out.clone()));
        }
        // A folder or a device there is still the error it always is; a
        // file counts as done only if it reads as a frame.
        keep.push(match crate::io::check_output_free(out, job.overwrite) {
            Err(Error::OutputExists(_)) if job.skip_existing => {
                if let Err(e) = check_done(out, format, written_shape(format, rendered), &job.limits) {
                    refused.push((frame.number, e));
                }
                false
            }
            r => r.map(|()| true)?,
        });
    }
    let mut refused = refused.into_iter();
    if let Some((_, first)) = refused.next() {
        let mut others: Vec<u64> = refused.map(|(frame, _)| frame).collect();
        others.sort_unstable();
        if others.is_empty() {
            return Err(first);
        }
        // Every one, as frame runs (`4-7,9`), however many.
        let (n, frames) = (others.len(), crate::sequence::frame_spec(&crate::sequence::runs_of(others)));
        let (nor, s) = if n == 1 { ("is", "") } else { ("are", "s") };
        return Err(Error::Sequence(format!("{first}; nor {nor} the outputs of {n} other frame{s}: {frames}")));
    }
    let (mut existing, mut kept) = (Vec::new(), Vec::new());
    if keep.contains(&false) {
        let (mut frames, mut left) = (Vec::new(), Vec::new());
        for ((frame, out), to_write) in sequence.frames.iter().zip(outputs).zip(keep) {
            if to_write {
                frames.push(frame.clone());
                left.push(out);
            } else {
                existing.push(frame.number);
                kept.push(out);
            }
        }
        (sequence.frames, outputs) = (frames.into(), left);
        existing.sort_unstable();
    }
    Ok(Targets { outputs, format, existing, kept, out_dir: Some(out_dir), made })
}

/// What a run writes in `format` from sources whose first frame reads
/// `first`: its size, and its depth where the format holds 16 bits.
fn written_shape(format: OutputFormat, first: Option<&crate::io::FrameInfo>) -> Option<(u32, u32, PixelFormat)> {
    first.map(|i| {
        let depth = if format.supports_16bit() { i.format } else { PixelFormat::Rgba8 };
        (i.width, i.height, depth)
    })
}

impl PreparedJob {
    /// Whether the output `out`, which appeared while the run went on
    /// (another run writing there), is a frame [`Job::skip_existing`]
    /// keeps: as one found at the start, it must read as this render's.
    ///
    /// # Errors
    /// As for an output found at the start that is not a frame to keep.
    fn check_kept(&self, out: &Path, limits: &DecodeLimits) -> Result<()> {
        check_done(out, self.format, written_shape(self.format, self.first.as_ref()), limits)
    }

    /// Whether a frame's output `out` has appeared since the run was
    /// prepared and is kept without the work (under `job`'s
    /// `skip_existing`). Anything else there is left for the rename to
    /// find ([`PreparedJob::unless_kept`]).
    pub(crate) fn appeared(&self, job: &Job, out: &Path) -> bool {
        job.skip_existing && std::fs::symlink_metadata(out).is_ok() && self.check_kept(out, &job.limits).is_ok()
    }

    /// A frame's `error`, unless it is the output found at its rename (a
    /// run writing there meanwhile) that `job`'s `skip_existing` keeps:
    /// then none. One that is not a frame to keep is the error instead.
    pub(crate) fn unless_kept(&self, job: &Job, error: Error) -> Option<Error> {
        match error {
            Error::OutputExists(out) if job.skip_existing => self.check_kept(&out, &job.limits).err(),
            e => Some(e),
        }
    }
}

/// A name for outputs in a folder, to suggest: the input's own, where it
/// has one (`shot_%04d.png`, `plate.png`; a folder's frames, their
/// pattern), else `frame_%04d.png`.
fn example_name(job: &Job, sequence: &Sequence) -> String {
    let input = Path::new(&job.input).file_name().map(|n| n.to_string_lossy().into_owned());
    let one_file = sequence.frames.len() == 1 && Path::new(&job.input).is_file();
    let named = input.filter(|n| one_file || FramePattern::is_pattern(n));
    // A folder's frames: the first's name, its number as a field.
    let of_folder = || {
        let first = sequence.frames.first()?.path.file_name()?.to_str()?.to_string();
        let stem = Path::new(&first).file_stem()?.to_str()?;
        let (start, end, _) = crate::sequence::last_digits(stem)?;
        Some(format!("{}%0{}d{}", &first[..start], end - start, &first[end..]))
    };
    named.or_else(|| (sequence.frames.len() > 1).then(of_folder).flatten()).unwrap_or_else(|| "frame_%04d.png".into())
}

/// Refuses an output that names a folder (`-o graded`, `-o graded/`),
/// saying how to name the frames in it: the input's own names where it has
/// them (`graded/shot_%04d.png`, `graded/plate.png`).
fn refuse_output_folder(job: &Job, sequence: &Sequence) -> Result<()> {
    let out = Path::new(&job.output);
    let named_folder = crate::io::refuse_folder_name(out).is_err();
    if !named_folder && (FramePattern::is_pattern(&job.output) || !out.is_dir()) {
        return Ok(());
    }
    let name = example_name(job, sequence);
    let folder = job.output.trim_end_matches(std::path::is_separator);
    let folder = Path::new(if folder.is_empty() { job.output.as_str() } else { folder });
    // The sources' own folder: there the names would be theirs.
    let sources = sequence.frames.first().map(|f| crate::io::file_id(crate::io::parent_dir(&f.path)));
    // `o_%04d.png/`: the slash was a slip; the name is the pattern.
    if job.output.ends_with(std::path::is_separator) && FramePattern::is_pattern(&folder.to_string_lossy()) {
        return Err(Error::Sequence(format!(
            "{}: names a folder; for frames named so, leave out the final separator ({})",
            job.output,
            folder.display()
        )));
    }
    let example = match sources {
        Some(Some(id)) if crate::io::file_id(folder) == Some(id) => folder.join("graded").join(name),
        _ => folder.join(name),
    };
    Err(Error::Sequence(format!(
        "{}: names a folder; name the output files in it, as {}",
        job.output,
        example.display()
    )))
}

/// Refuses an output [`Job::skip_existing`] would keep that is not a frame:
/// a link to nothing, an empty file, one whose header does not read, one
/// cut short (its format's end marker or data extent missing: a copy
/// interrupted), one whose content is another format than its name's
/// (`format`) or another size or bit depth than the run renders
/// (`rendered`, where known): not this render's frame. Only the header and the structure are read,
/// not the pixels: framepipe's own outputs are synced whole before they
/// take their name, so a broken one is another program's (or a disk's)
/// doing. Rendering it again would replace a file framepipe did not vouch
/// for; the user removes it, or takes `overwrite`.
fn check_done(
    out: &Path,
    format: OutputFormat,
    rendered: Option<(u32, u32, PixelFormat)>,
    limits: &DecodeLimits,
) -> Result<()> {
    let why = match std::fs::metadata(out) {
        // There as a name, not as a file.
        Err(_) if std::fs::symlink_metadata(out).is_ok_and(|m| m.is_symlink()) => "a link to nothing".into(),
        Err(e) => e.to_string(),
        Ok(m) if m.len() == 0 => "an empty file".into(),
        Ok(_) => {
            match crate::io::probe_file(out, limits)
                .and_then(|(w, h, f)| Ok(((w, h, f), crate::io::whole_format(out)?)))
            {
                Ok((_, held)) if held != format.image_format() => {
                    let name =
                        |f: Option<image::ImageFormat>| f.map_or("unknown".into(), |f| format!("{f:?}").to_uppercase());
                    format!("its content is {}, its name says {}", name(held), name(format.image_format()))
                }
                Ok(((w, h, f), _)) => match rendered {
                    Some((rw, rh, _)) if (rw, rh) != (w, h) => format!("{w}x{h}, not the {rw}x{rh} this run renders"),
                    Some((.., rf)) if rf != f => {
                        format!("{}-bit, not the {}-bit frames this run renders", f.bits(), rf.bits())
                    }
                    _ => return Ok(()),
                },
                Err(Error::Decode { reason, .. }) => reason,
                Err(e) => e.to_string(),
            }
        }
    };
    Err(Error::Sequence(format!(
        "{}: exists but is not a frame to keep ({why}); remove it to render it again",
        out.display()
    )))
}

/// A handle that stops a running job: no frame starts after it, frames
/// being processed (on the GPU, or the CPU backend's kernels) or past that
/// are finished and written, decoded frames still waiting to be processed
/// are dropped (listed as unwritten in the report). A sequential run
/// finishes the frame it started. Once cancelled it stays so: a run
/// given it afterwards starts no frame; use a new one per run.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// Asks the run to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Progress events, one per frame (more kinds may come: a `_` arm).
#[derive(Debug)]
#[non_exhaustive]
pub enum Progress<'a> {
    /// A frame was written.
    Done {
        /// Frames finished so far (written or failed).
        finished: usize,
        /// Frames in the job.
        total: usize,
        /// The frame's record.
        record: &'a FrameRecord,
    },
    /// A frame failed.
    Failed {
        /// Frames finished so far (written or failed).
        finished: usize,
        /// Frames in the job.
        total: usize,
        /// The failure.
        failure: &'a FrameFailure,
    },
    /// A frame's output appeared while the run went on (another run
    /// writing to the same place, a farm's retried task) and, under
    /// [`Job::skip_existing`], is kept: counted with the frames already
    /// there, not written again.
    Kept {
        /// Frames finished so far (written, failed or kept).
        finished: usize,
        /// Frames in the job.
        total: usize,
        /// The frame's number.
        number: u64,
    },
}

pub(crate) fn is_identity(plan: &Plan) -> bool {
    plan.passes.is_empty() && plan.pre == Affine::IDENTITY
}

/// Runs `plan` on `src` at export priority. Refused VRAM that previews
/// hold (they took this path's slot, or the budget beside theirs) is waited
/// for, as the pipeline waits to regrow its pool: their memory comes back
/// once they have been quiet for `preview_memory_idle`. Refused memory
/// that no preview will give back is the error it is. Also returns the
/// time spent waiting (for the backend, previews ahead; for memory), which
/// is not work.
fn process_yielding(
    engine: &Engine,
    src: &crate::io::HostFrame,
    plan: &Plan,
    cancel: &Cancel,
) -> (Result<(crate::io::HostFrame, Option<u64>)>, Duration) {
    let keep = (crate::gpu::FrameShape::of(src), plan);
    let mut waited = Duration::ZERO;
    loop {
        let mark = engine.ledger().mark();
        let asked = Instant::now();
        // Bound first: the backend guard must be gone before the arms,
        // which reclaim previews' memory under the same lock.
        // The backend first, then the CPU threads, in the order every
        // other path takes them (a pool thread never waits for the lock).
        let result = {
            let mut backend = engine.backend().lock(Priority::Export);
            waited += asked.elapsed();
            match &mut *backend {
                Backend::Cpu => Ok((engine.on_cpu_threads(|| crate::ops::process_cpu(src, plan)), None)),
                gpu => gpu.process(src, plan),
            }
        };
        match result {
            Err(Error::Budget(_)) if !cancel.is_cancelled() && engine.preview_memory_held() => {
                // Reclaiming waits for the backend behind previews: time
                // held back, as the wait for memory is.
                let since = mark.since();
                let asked = Instant::now();
                if !engine.reclaim_preview_memory(Some(keep)) {
                    engine.ledger().wait_release(since, Duration::from_millis(250));
                }
                waited += asked.elapsed();
            }
            r => return (r, waited),
        }
    }
}

/// `threads` as configured, or one per core for 0.
fn resolve_threads(threads: usize) -> usize {
    match threads {
        0 => cores(),
        n => n,
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The CPU kernels' threads: the config's, at most one per core. Decoders
/// and encoders may usefully outnumber the cores (each waits on its file
/// now and then); kernels never do, and a thousand of them on two cores
/// ran twenty times slower.
fn kernel_threads(threads: usize) -> usize {
    resolve_threads(threads).min(cores())
}

/// Processes every frame of a prepared job, one at a time.
///
/// # Errors
/// Only errors that concern the whole run; per-frame failures are in the
/// report (`failures`) and, with [`ErrorPolicy::Stop`], end the run early.
fn run_sequential(
    job: &Job,
    prepared: &PreparedJob,
    engine: &Engine,
    mut stream: Option<&mut dyn std::io::Write>,
    cancel: &Cancel,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Report> {
    let started = Instant::now();
    let plan = job.graph.plan();
    let identity = is_identity(&plan);
    let total = prepared.sequence.frames.len();
    // A budget that cannot hold one frame is refused up front, as the
    // pipeline refuses it (a header that cannot be read fails its frame).
    let first_header = prepared.first.map(|i| (i.width, i.height, i.format));
    if let (false, Some((width, height, format))) = (identity, first_header)
        && let Backend::Gpu(gpu) = &*engine.backend().lock(Priority::Export)
    {
        let shape = crate::gpu::FrameShape { width, height, format };
        crate::pipeline::check_one_frame_fits(gpu, shape, &plan, engine.ledger().budget())?;
    }
    let mut report = Report { threads: 1, pool_size: 1, ..Report::for_job(job, prepared, engine, "sequential") };
    let mut sources = crate::report::SourceKinds::new(prepared);
    // The run's shape is the first frame's whose header reads, as in the
    // pipeline: a first frame cut short after its header still sets it
    // (its neighbours are not then mismatched).
    let mut expected = first_header;
    // Its one slot, as the pipelined run reports its slots': GPU staging
    // where the frames go through the GPU, else a host frame.
    let on_gpu = !identity && engine.backend_name() == "gpu";
    let slot_of = |shape: crate::gpu::FrameShape| {
        if on_gpu { crate::gpu::GpuBackend::slot_bytes(shape) } else { shape.frame_bytes() }
    };
    if let Some((width, height, format)) = expected {
        report.frame = format!("{width}x{height} {format}");
        report.slot_bytes = slot_of(crate::gpu::FrameShape { width, height, format });
    }
    // One worker per stage, one stage at a time: the report and timeline
    // show where each frame's time went, as for the pipeline.
    let [mut decode, mut compute, mut encode] = [(); 3].map(|()| crate::pipeline::Clock::default());
    let compute_name = if engine.backend_name() == "gpu" { "gpu" } else { "compute" };
    let mut kept = Vec::new();
    for (i, (frame, out)) in prepared.sequence.frames.iter().zip(&prepared.outputs).enumerate() {
        // As in the pipeline, a frame starts only while no preview holds the
        // gate up or waits for the backend: previews go first.
        let start = || {
            let held = engine.backend().waiting_above(Priority::Export);
            if !held {
                engine.trace(crate::preview::TraceEvent::ExportDecodeStart(frame.number));
            }
            !held
        };
        // (A preview waiting for VRAM takes the slot this path keeps
        // between frames itself, whatever this path is doing.)
        let held = Instant::now();
        while !cancel.is_cancelled() && !engine.core.gate.pass(Duration::from_millis(20), start) {
            engine.backend().wait_clear_above(Priority::Export, Duration::from_millis(20));
        }
        decode.wait_out += held.elapsed();
        if cancel.is_cancelled() {
            break;
        }
        let n = frame.number;
        // Written meanwhile by another run, and a frame to keep: kept
        // without the work, as in the pipeline.
        if prepared.appeared(job, out) {
            kept.push(n);
            progress(Progress::Kept { finished: i + 1, total, number: n });
            continue;
        }
        // The stage a panic is blamed on, as the pipeline names it; the
        // test hook may inject one at its start.
        let stage = std::cell::Cell::new(crate::pipeline::Stage::Decode);
        let enter = |next| {
            stage.set(next);
            if job.inject_panic == Some((next, n)) {
                panic!("injected test panic");
            }
        };
        // A panic in a codec or the backend ends the run with an error, as
        // in the pipeline, not the caller's thread.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<FrameRecord> {
            enter(crate::pipeline::Stage::Decode);
            let t0 = Instant::now();
            // The header, noted among the sources of its kind once the
            // frame is read whole and found the run's size.
            let header = std::cell::Cell::new(None);
            let note = |info: &crate::io::FrameInfo| {
                header.set(Some(*info));
                Ok(())
            };
            let read = || crate::io::decode_file_with(&frame.path, &job.limits, &crate::io::Fresh, note);
            let mut src = decode.work(started, "decode", 0, n, read)?;
            let shape = (src.width, src.height, src.format);
            match expected {
                None => {
                    expected = Some(shape);
                    report.frame = src.describe();
                    report.slot_bytes = slot_of(crate::gpu::FrameShape::of(&src));
                }
                Some((width, height, format)) => {
                    let (got, run) =
                        (crate::gpu::FrameShape::of(&src), crate::gpu::FrameShape { width, height, format });
                    match run.admits(got) {
                        Some(false) => {}
                        // An 8-bit frame of a 16-bit sequence, as in the pipeline.
                        Some(true) => src = src.deepened(&crate::io::Fresh),
                        None => {
                            let (got, expected) = (got.in_words(), run.in_words());
                            return Err(Error::FrameMismatch { path: frame.path.clone(), got, expected });
                        }
                    }
                }
            }
            if let Some(info) = header.get() {
                sources.note(n, &info);
            }
            let t1 = Instant::now();
            let (dst, gpu_ns) = if identity {
                (src, None)
            } else {
                enter(crate::pipeline::Stage::Compute);
                let (processed, waited) =
                    compute.work(started, compute_name, 0, n, || process_yielding(engine, &src, &plan, cancel));
                // Waiting behind previews is not the stage's work.
                compute.discount(waited);
                processed?
            };
            let t2 = Instant::now();
            enter(crate::pipeline::Stage::Encode);
            let options = prepared.encode_for(header.get().is_some_and(|i| i.grey));
            let output_bytes = encode.work(started, "encode", 0, n, || -> Result<u64> {
                Ok(match stream.as_deref_mut() {
                    Some(w) => {
                        let bytes = encode_frame(dst, prepared.format, &options, out)?;
                        w.write_all(&bytes).and_then(|()| w.flush()).map_err(|e| Error::stream(&e))?;
                        bytes.len() as u64
                    }
                    None => {
                        write_frame_atomic(&dst, out, prepared.format, &options, job.overwrite)?;
                        std::fs::metadata(out).map(|m| m.len()).unwrap_or(0)
                    }
                })
            })?;
            let t3 = Instant::now();
            let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
            Ok(FrameRecord {
                number: frame.number,
                output: out.display().to_string(),
                decode_ms: ms(t0, t1),
                process_ms: ms(t1, t2),
                gpu_ms: gpu_ns.map(|n| n as f64 / 1e6),
                encode_ms: ms(t2, t3),
                output_bytes,
            })
        }))
        .unwrap_or_else(|payload| {
            let msg = crate::error::panic_message(&*payload);
            Err(Error::Panic(format!("{:?} stage panicked on frame {n}: {msg}", stage.get())))
        });
        if let Err(e @ Error::Panic(_)) = result {
            return Err(e);
        }
        let finished = i + 1;
        // Written meanwhile, found at the rename: kept if a frame to keep,
        // else that is the failure.
        let result = match result.map_err(|e| prepared.unless_kept(job, e)) {
            Err(None) => {
                kept.push(n);
                progress(Progress::Kept { finished, total, number: n });
                continue;
            }
            r => r.map_err(|e| e.expect("not kept")),
        };
        match result {
            // Memory previews held, waited for until the run was cancelled:
            // the frame is abandoned with the rest, not a budget failure
            // (as the pipeline drops a refused frame once it is stopping).
            Err(Error::Budget(_)) if cancel.is_cancelled() => break,
            Ok(record) => {
                engine.trace(crate::preview::TraceEvent::ExportFrameDone(frame.number));
                report.frames.push(record);
                progress(Progress::Done { finished, total, record: report.frames.last().unwrap() });
            }
            // The first frame to reach the kernels not fitting the budget
            // is the run not fitting it: a usage error, as the pipelined
            // run reports it before any frame, not one failure per frame.
            // After frames that failed or were kept (reported already),
            // it is that frame's failure, and those stay in the report.
            Err(e @ Error::Budget(_)) if report.frames.is_empty() && report.failures.is_empty() && kept.is_empty() => {
                return Err(e);
            }
            Err(e) => {
                report.failures.push(FrameFailure::new(frame.number, &e));
                progress(Progress::Failed { finished, total, failure: report.failures.last().unwrap() });
                if job.on_error == ErrorPolicy::Stop || matches!(e, Error::Gpu(_) | Error::Stream(_)) {
                    break;
                }
            }
        }
    }
    report.frames_written = report.frames.len();
    report.keep(kept);
    report.list_unwritten(prepared.sequence.frames.iter().map(|f| f.number));
    report.list_sources(sources);
    // A cancel that came while the last frame was under way is still a
    // cancelled run (exit 130), as the pipeline reports it.
    report.cancelled = cancel.is_cancelled();
    report.seconds = started.elapsed().as_secs_f64();
    report.fps = report.frames_written as f64 / report.seconds.max(1e-9);
    let mut clocks = vec![("decode", vec![decode])];
    if !identity {
        clocks.push((compute_name, vec![compute]));
    }
    clocks.push(("encode", vec![encode]));
    let wall = report.seconds;
    crate::pipeline::add_stages(&mut report, clocks, (1, 1), wall);
    Ok(report)
}
