//! The pipelined engine: read, decode, compute, readback, encode, all at once.
//!
//! ```text
//!  read ──▶ decode ×T ──▶ gpu ×1 (owner, ≤2 frames on the GPU) ──▶ readback ×R ──▶ encode ×T ──▶ files
//!              │ writes into the slot's          │ result into a ring buffer │
//!              │ mapped upload                   │                           │
//!              └─ waits for a free slot ◀─ slot freed once the GPU read it   │
//!                           ring buffer freed once copied out ◀──────────────┘
//! ```
//!
//! * A decoder takes a slot from the [`Pool`] before it starts a frame, so
//!   decoding can never run ahead of the slots: that wait is the
//!   backpressure that bounds VRAM and host memory alike. Taking it in the
//!   decoder, not when the frame is queued, means only frames that have
//!   started hold memory, and no frame starts while a preview holds the
//!   engine's [`Gate`](crate::priority::Gate) (until the preview has its
//!   VRAM), so an export frame started after a preview request never
//!   finishes before it.
//! * Decoders write the frame straight into the slot's mapped upload buffer
//!   (the image decoders need a `&mut [u8]` of their own, so it is one copy
//!   from their output, never `queue.write_buffer`).
//! * One thread owns the GPU: it submits a frame as soon as one is decoded
//!   and fewer than [`GPU_DEPTH`] are on the GPU, and otherwise waits for
//!   the oldest. Once the GPU is done with a frame its slot is free (the
//!   upload is mapped again for the next frame) and its result is mapped
//!   in a [`Readback`] from a ring of [`ring_size`] buffers. A readback
//!   thread copies it out (a host memcpy that would otherwise be most of
//!   the owner's time per frame), frees the buffer and hands the host
//!   frame to the encoders. A slot is one frame of VRAM, not two, and is
//!   held only while its frame decodes or is on the GPU. With the CPU backend the owner runs the
//!   rayon kernels and there is no readback stage; with no ops there is
//!   no compute stage and nothing touches the GPU.
//! * Stages are joined by bounded channels. Output files may complete out
//!   of order; each is written atomically.
//! * A failed frame is reported; with [`ErrorPolicy::Stop`] the reader stops
//!   and what is in flight drains. A panic in any stage is caught per frame,
//!   stops the run the same way and surfaces as [`Error::Panic`] once every
//!   thread has joined. Cancellation stops the reader and drains.

use std::collections::VecDeque;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};

use crate::backend::Backend;
use crate::engine::{Cancel, Engine, ErrorPolicy, Job, PreparedJob, Progress, is_identity};
use crate::error::{Error, Result};
use crate::gpu::{FrameShape, GpuBackend, GpuSlot, InFlight, Readback};
use crate::io::{FrameInfo, HostFrame, decode_file, decode_with, encode_frame, probe_file, write_frame_atomic};
use crate::ledger::{Ledger, human_bytes};
use crate::ops::{Plan, process_cpu};
use crate::pool::{Lease, Pool, PoolSize, auto_cap};
use crate::preview::TraceEvent;
use crate::priority::Priority;
use crate::reorder::{Reorder, Window};
use crate::report::{FrameFailure, FrameRecord, Interval, Report, StageReport, peak_rss};

/// Pipeline stages, as named in reports and the fault-injection hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Stage {
    /// Starting a frame: its turn, a slot, the preview gate.
    Start,
    /// Decoding a frame.
    Decode,
    /// Running the kernels (GPU or CPU).
    Compute,
    /// Copying a frame out of its readback staging.
    Readback,
    /// Encoding and writing a frame.
    Encode,
}

/// Most frames on the GPU at once: two let the copy-in of one frame run
/// beside the copy-out of the one before, and keep the queue fed while
/// the owner thread waits; more would only hold slots.
pub const GPU_DEPTH: usize = 2;

/// Threads that copy finished frames out of their readback buffers. The
/// copy is a host memcpy (about 13 ms per 8K RGBA8 frame at 10 GB/s): one
/// thread keeps up with the GPU on small machines, two on larger ones, and
/// the buffer is free as soon as the copy is done rather than after the
/// encode.
pub(crate) fn readback_threads(threads: usize) -> usize {
    if threads >= 4 { 2 } else { 1 }
}

/// Readback buffers a run with `threads` workers keeps where the budget
/// has room (see [`split_budget`]): one per frame on the GPU, one per
/// copier and one queued for each copier, so the GPU never waits for a copy
/// and copiers never wait for the GPU (with one fewer per copier the GPU
/// ran 7 % slower on the software adapter).
pub fn ring_size(threads: usize) -> usize {
    GPU_DEPTH + 2 * readback_threads(threads.max(1))
}

/// What a pool slot holds.
enum SlotKind {
    /// Mapped GPU staging.
    Gpu(GpuSlot),
    /// A permit: the frame lives in host memory.
    Host,
}

/// A frame to decode; its decoder takes the slot (see [`start_frame`]).
struct Work {
    /// Position in read order.
    position: usize,
    number: u64,
    input: PathBuf,
    output: PathBuf,
}

struct Decoded {
    number: u64,
    output: PathBuf,
    /// With a GPU slot, `data` is empty: the pixels are in the slot.
    frame: HostFrame,
    slot: Lease<SlotKind>,
    decode_ms: f64,
}

/// A frame the GPU has finished: its result is mapped in the slot.
struct Finished {
    number: u64,
    output: PathBuf,
    has_alpha: bool,
    readback: Lease<Readback>,
    decode_ms: f64,
    /// When it was submitted.
    t0: Instant,
    gpu_ns: Option<u64>,
}

/// What submitting a frame gives: GPU work under way, or (CPU backend)
/// the finished frame.
enum Submitted {
    Gpu(InFlight),
    Done(HostFrame),
}

/// Submits one decoded frame under the export's priority: on the GPU it
/// returns at once; the CPU backend runs the kernels here. When previews
/// have taken the budget (their kernel buffers evicted ours), waits for
/// memory (up to 10 s) if `may_wait`; else the caller first finishes
/// the frames it has on the GPU (they free nothing while they wait).
///
/// Also returns the time spent waiting for the backend (previews ahead)
/// and for memory, which is not work.
fn submit(
    engine: &Engine,
    shared: &Shared<'_>,
    d: &Decoded,
    readback: Option<&Readback>,
    shape: FrameShape,
    may_wait: bool,
) -> (Result<Submitted>, Duration) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut waited = Duration::ZERO;
    loop {
        let asked = Instant::now();
        let since = engine.ledger().releases();
        let mut backend = engine.backend().lock(Priority::Export);
        waited += asked.elapsed();
        let r = shared.guarded(Stage::Compute, d.number, || match (&mut *backend, &*d.slot, readback) {
            (Backend::Gpu(g), SlotKind::Gpu(s), Some(r)) => Ok(Submitted::Gpu(g.submit(s, r, &shared.plan)?)),
            (_, _, _) => {
                debug_assert_eq!(FrameShape::of(&d.frame), shape);
                Ok(Submitted::Done(process_cpu(&d.frame, &shared.plan)))
            }
        });
        drop(backend);
        match r {
            Err(Error::Budget(_)) if may_wait && Instant::now() < deadline => {
                // Memory an editor left idle is given back (this run's
                // kernel set stays); frames on the GPU free theirs as
                // they land.
                engine.reclaim_preview_memory(Some((shape, &shared.plan)));
                let asked = Instant::now();
                engine.ledger().wait_release(since, Duration::from_millis(250));
                waited += asked.elapsed();
            }
            r => return (r, waited),
        }
    }
}

struct Processed {
    number: u64,
    output: PathBuf,
    frame: HostFrame,
    decode_ms: f64,
    process_ms: f64,
    gpu_ns: Option<u64>,
}

enum Event {
    /// Written to its file.
    Done(FrameRecord),
    /// Encoded for the stream; the progress thread writes it in order.
    Encoded(FrameRecord, Vec<u8>),
    Failed(FrameFailure),
    /// Dispatched but never processed: the device had failed on an earlier
    /// frame. Counted as skipped.
    Abandoned(u64),
}

/// One worker's clock.
#[derive(Default)]
struct Clock {
    busy: Duration,
    wait_in: Duration,
    wait_out: Duration,
    frames: usize,
    intervals: Vec<Interval>,
}

impl Clock {
    fn work<T>(&mut self, start: Instant, stage: &str, worker: usize, frame: u64, f: impl FnOnce() -> T) -> T {
        let t0 = Instant::now();
        let out = f();
        let t1 = Instant::now();
        self.busy += t1 - t0;
        self.frames += 1;
        self.intervals.push(Interval {
            stage: stage.into(),
            worker,
            start: (t0 - start).as_secs_f64(),
            end: (t1 - start).as_secs_f64(),
            frame,
        });
        out
    }

    /// Like [`Clock::work`] for the second half of a frame's work (the GPU
    /// owner waiting for it): busy time and an interval, no new frame.
    fn wait<T>(&mut self, start: Instant, stage: &str, frame: u64, f: impl FnOnce() -> T) -> T {
        let frames = self.frames;
        let out = self.work(start, stage, 0, frame, f);
        self.frames = frames;
        out
    }

    fn recv<T>(&mut self, rx: &Receiver<T>) -> Option<T> {
        let t = Instant::now();
        let v = rx.recv().ok();
        self.wait_in += t.elapsed();
        v
    }

    fn send<T>(&mut self, tx: &Sender<T>, v: T) -> bool {
        let t = Instant::now();
        let ok = tx.send(v).is_ok();
        self.wait_out += t.elapsed();
        ok
    }
}

/// What a thread that died outside its per-frame guard leaves: the run's
/// fatal error, and an empty clock.
fn join_failed(shared: &Shared<'_>) -> Clock {
    let mut fatal = shared.fatal.lock().unwrap_or_else(|p| p.into_inner());
    fatal.get_or_insert_with(|| "a pipeline thread panicked".into());
    Clock::default()
}

/// Sets the stop flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Shared run state.
struct Shared<'a> {
    job: &'a Job,
    plan: Plan,
    start: Instant,
    stop: AtomicBool,
    fatal: Mutex<Option<String>>,
    cancel: &'a Cancel,
    /// For a stream: how far the reader may run ahead of the writer.
    window: Option<Window>,
    /// The position (in read order) of the next frame to start.
    turn: Mutex<usize>,
    next_turn: std::sync::Condvar,
}

impl Shared<'_> {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.cancel.is_cancelled()
    }

    fn fail(&self, events: &Sender<Event>, number: u64, error: Error) {
        let fatal = matches!(error, Error::Panic(_) | Error::Gpu(_));
        if fatal || self.job.on_error == ErrorPolicy::Stop {
            self.stop.store(true, Ordering::SeqCst);
        }
        if let Error::Panic(msg) = &error {
            self.fatal.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| msg.clone());
        }
        let _ = events.send(Event::Failed(FrameFailure { number, error: error.to_string() }));
    }

    /// Runs one frame's work for `stage`, turning a panic into an error;
    /// the test hook may inject one here.
    fn guarded<T>(&self, stage: Stage, number: u64, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let injected = self.job.inject_panic == Some((stage, number));
        self.catch(stage, number, || {
            if injected {
                panic!("injected test panic");
            }
            f()
        })
    }

    /// Runs one frame's work for `stage`, turning a panic into an error.
    fn catch<T>(&self, stage: Stage, number: u64, f: impl FnOnce() -> Result<T>) -> Result<T> {
        catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
            let msg = crate::error::panic_message(&*payload);
            Err(Error::Panic(format!("{stage:?} stage panicked on frame {number}: {msg}")))
        })
    }
}

/// The shape every frame must have: the first frame whose header reads.
/// Frames before it that cannot be read are failures.
fn probe_shape(job: &Job, prepared: &PreparedJob, failures: &mut Vec<FrameFailure>) -> Option<(usize, FrameShape)> {
    for (i, f) in prepared.sequence.frames.iter().enumerate() {
        match probe_file(&f.path, &job.limits) {
            Ok((width, height, format)) => return Some((i, FrameShape { width, height, format })),
            Err(e) => {
                failures.push(FrameFailure { number: f.number, error: e.to_string() });
                if job.on_error == ErrorPolicy::Stop {
                    return None;
                }
            }
        }
    }
    None
}

/// Takes a slot for frame `number` and marks its start, once no preview
/// holds the engine's gate; `None` when the run stops first. While a
/// preview waits for VRAM, free slots are retired here rather than handed
/// out. With GPU slots (`gpu`: the shape and bytes of one), a slot given
/// back to a preview earlier is replaced first while the budget has room.
/// `alone`: the run has no compute stage (no ops), so it also waits while
/// a preview renders.
///
/// Frames start in read order (`position`): decoders that each wait for a
/// slot a few ms at a time would otherwise let later frames take it again
/// and again, and a failing frame could be reached only after many more.
fn start_frame(
    engine: &Engine,
    shared: &Shared<'_>,
    pool: &Pool<SlotKind>,
    (position, number): (usize, u64),
    gpu: Option<(FrameShape, u64)>,
    alone: bool,
) -> Option<Lease<SlotKind>> {
    if shared.job.inject_panic == Some((Stage::Start, number)) {
        panic!("injected test panic");
    }
    loop {
        if shared.stopping() {
            return None;
        }
        {
            let turn = shared.turn.lock().unwrap_or_else(|p| p.into_inner());
            if *turn != position {
                let wait = shared.next_turn.wait_timeout(turn, Duration::from_millis(20));
                drop(wait.unwrap_or_else(|p| p.into_inner()));
                continue;
            }
        }
        if let Some((shape, bytes)) = gpu {
            regrow(engine, pool, shape, bytes, &shared.plan);
        }
        // A preview holds the gate: wait without a slot.
        if !engine.core.gate.pass(Duration::from_millis(20), || true) {
            pool.shed();
            continue;
        }
        if alone && !engine.backend().wait_clear_above(Priority::Export, Duration::from_millis(20)) {
            continue;
        }
        let Some(slot) = pool.acquire_timeout(Duration::from_millis(20)) else { continue };
        // The start is traced only if it happens before any preview raises
        // the gate: one raised since the check above sends the slot back.
        // An export without a compute stage never meets a preview at the
        // backend, so it also waits while one is rendering (announced,
        // which a preview is from before it lowers the gate).
        let start = || {
            let held = alone && engine.backend().waiting_above(Priority::Export);
            if !held {
                engine.trace(TraceEvent::ExportDecodeStart(number));
            }
            !held
        };
        if engine.core.gate.pass(Duration::ZERO, start) {
            *shared.turn.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            shared.next_turn.notify_all();
            return Some(slot);
        }
        if alone {
            engine.backend().wait_clear_above(Priority::Export, Duration::from_millis(20));
        }
    }
}

/// Puts back a GPU slot the pool gave to previews, once they are done
/// with the memory (reclaiming what they left idle first) and none is
/// waiting at the gate.
fn regrow(engine: &Engine, pool: &Pool<SlotKind>, shape: FrameShape, bytes: u64, plan: &Plan) {
    let ledger = engine.ledger();
    let room = || ledger.current() + bytes <= ledger.budget();
    let wanted = || pool.wants_slot() && !engine.core.gate.is_raised();
    if !wanted() {
        return;
    }
    if !room() {
        engine.reclaim_preview_memory(Some((shape, plan)));
    }
    if !room() {
        return;
    }
    let backend = engine.backend().lock(Priority::Export);
    // Asked again under the lock: a preview may have come since.
    if let Backend::Gpu(g) = &*backend
        && wanted()
        && room()
        && let Ok(s) = g.new_slot(shape)
    {
        let _ = pool.replenish(SlotKind::Gpu(s));
    }
}

fn describe(shape: FrameShape) -> String {
    format!("{}x{} {}", shape.width, shape.height, shape.format)
}

/// How `free` bytes split into (slots, readback buffers). Slots come
/// first: each is a frame decoding or on the GPU, and decode parallelism is
/// what a many-core machine needs. The ring gets [`GPU_DEPTH`] buffers (one
/// if even that would leave no slot), slots take what fits up to
/// [`auto_cap`], and the ring grows towards [`ring_size`] only with what
/// is left. A fixed pool size leaves the ring the rest, at least one.
pub fn split_budget(free: u64, slot: u64, readback: u64, threads: usize, pool: PoolSize) -> (usize, usize) {
    let ideal = ring_size(threads);
    match pool {
        PoolSize::Fixed(n) => (n, ((free.saturating_sub(n as u64 * slot) / readback) as usize).clamp(1, ideal)),
        PoolSize::Auto => {
            let base = if free >= GPU_DEPTH as u64 * readback + slot { GPU_DEPTH } else { 1 };
            let n = ((free.saturating_sub(base as u64 * readback) / slot) as usize).clamp(1, auto_cap(threads, true));
            (n, ((free.saturating_sub(n as u64 * slot) / readback) as usize).clamp(base, ideal))
        }
    }
}

/// The frame slots and, on the GPU, the readback ring: staging counted by
/// the ledger, or host permits.
struct Staging {
    slots: Vec<SlotKind>,
    /// Ledger bytes of one slot (a host frame's bytes for host permits).
    slot_bytes: u64,
    ring: Vec<Readback>,
}

/// Builds the slots: GPU staging counted by the ledger, or host permits.
fn make_slots(
    backend: &mut Backend,
    ledger: &Arc<Ledger>,
    shape: FrameShape,
    plan: &Plan,
    identity: bool,
    threads: usize,
    pool: PoolSize,
) -> Result<Staging> {
    let gpu: &mut GpuBackend = match backend {
        Backend::Gpu(g) if !identity => g,
        _ => {
            let n = match pool {
                PoolSize::Fixed(n) => n,
                PoolSize::Auto => auto_cap(threads, false),
            };
            let slots = (0..n).map(|_| SlotKind::Host).collect();
            return Ok(Staging { slots, slot_bytes: shape.frame_bytes(), ring: Vec::new() });
        }
    };
    let kernels = gpu.compute_bytes(shape, plan)?;
    let slot = GpuBackend::slot_bytes(shape);
    let readback = GpuBackend::readback_bytes(shape);
    let budget = ledger.budget();
    let needed = kernels + readback + slot;
    let refuse = |held: u64| {
        let held = if held > 0 {
            format!(" beside {} held by previews and other grades", human_bytes(held))
        } else {
            String::new()
        };
        Error::Budget(format!(
            "one {} frame needs {} ({} for its slot's upload staging, {} for a readback buffer, {} of kernel buffers), more than the {} budget{held} (raise --vram-budget)",
            describe(shape),
            human_bytes(needed),
            human_bytes(slot),
            human_bytes(readback),
            human_bytes(kernels),
            human_bytes(budget)
        ))
    };
    if needed > budget {
        return Err(refuse(0));
    }
    // The kernel set first: one already built for this grade (an earlier
    // export, a preview) is used, not counted twice, and cached sets of
    // other grades make room for it.
    match gpu.prepare(shape, plan) {
        Err(Error::Budget(_)) => return Err(refuse(ledger.current())),
        r => r?,
    }
    if ledger.current() + readback + slot > budget {
        return Err(refuse(ledger.current().saturating_sub(kernels)));
    }
    let free = budget.saturating_sub(ledger.current());
    let (n, rings) = split_budget(free, slot, readback, threads, pool);
    let ring = (0..rings).map(|_| gpu.new_readback(shape)).collect::<Result<Vec<_>>>()?;
    let mut slots = Vec::with_capacity(n);
    for i in 0..n {
        let s = gpu.new_slot(shape).map_err(|e| match e {
            Error::Budget(_) => Error::Budget(format!(
                "{n} slots of {} each do not fit: {i} fit in the {} budget beside {} of kernel buffers and a readback buffer of {}",
                human_bytes(slot),
                human_bytes(budget),
                human_bytes(kernels),
                human_bytes(readback)
            )),
            e => e,
        })?;
        slots.push(SlotKind::Gpu(s));
    }
    Ok(Staging { slots, slot_bytes: slot, ring })
}

/// Runs a prepared job pipelined. See the module docs. A stream job's
/// frames go to `stream`, in order.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    job: &Job,
    prepared: &PreparedJob,
    engine: &Engine,
    threads: usize,
    pool_size: PoolSize,
    mut stream: Option<&mut (dyn Write + Send)>,
    cancel: &Cancel,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Report> {
    let start = Instant::now();
    let ledger = engine.ledger();
    // This run's peak: the engine's own includes earlier runs and previews.
    let watch = ledger.watch();
    let plan = job.graph.plan();
    let identity = is_identity(&plan);
    let total = prepared.sequence.frames.len();
    let threads = threads.max(1);
    let mut report = Report { threads, ..Report::for_job(job, engine, "pipelined") };
    let mut early = Vec::new();
    let probed = probe_shape(job, prepared, &mut early);
    let mut finished = 0;
    for failure in &early {
        finished += 1;
        progress(Progress::Failed { finished, total, failure });
    }
    report.failures = early;
    let Some((first, shape)) = probed else {
        report.frames_skipped = total - report.failures.len();
        report.seconds = start.elapsed().as_secs_f64();
        return Ok(report);
    };
    report.frame = describe(shape);
    // Preview memory an editor has left idle goes back before the pool is
    // sized (kept while the editor is active).
    engine.reclaim_preview_memory(Some((shape, &plan)));
    let Staging { slots, slot_bytes, ring } =
        make_slots(&mut engine.backend().lock(Priority::Export), ledger, shape, &plan, identity, threads, pool_size)?;
    report.pool_size = slots.len();
    report.slot_bytes = slot_bytes;
    // Host permits hold no VRAM: previews' pressure must not shrink them.
    let pressure = if ring.is_empty() { Default::default() } else { engine.core.pressure.clone() };
    let pool = Pool::new(slots, start, pressure);
    // Never yielded to previews: the ring is a fixed cost, like the kernels.
    let ring = Pool::new(ring, start, Default::default());

    let (events_tx, events_rx) = unbounded::<Event>();
    // Frames dispatched but not yet written to a stream: the slots, a
    // frame per encoder and one waiting for each.
    let window = stream.is_some().then(|| Window::new(pool.size() + 2 * threads));
    let shared = Shared {
        job,
        plan,
        start,
        stop: AtomicBool::new(false),
        fatal: Mutex::new(None),
        cancel,
        window,
        turn: Mutex::new(0),
        next_turn: std::sync::Condvar::new(),
    };
    let work: Vec<(u64, PathBuf, PathBuf)> = prepared.sequence.frames[first..]
        .iter()
        .zip(&prepared.outputs[first..])
        .map(|(f, o)| (f.number, f.path.clone(), o.clone()))
        .collect();
    let mut reorder = Reorder::new(work.iter().map(|w| w.0).collect());
    let mut dropped = 0;
    let mut abandoned = 0;

    let compute_name =
        if identity { None } else { Some(if engine.backend_name() == "gpu" { "gpu" } else { "compute" }) };
    let (decode_tx, decode_rx) = bounded::<Work>(threads);
    let (compute_tx, compute_rx) = bounded::<Decoded>(pool.size());
    let (encode_tx, encode_rx) = bounded::<Processed>(threads);
    let gpu_slots = compute_name == Some("gpu");
    let (to_readback, readback_rx) = bounded::<Finished>(readback_threads(threads));
    let mut clocks: Vec<(&'static str, Vec<Clock>)> = Vec::new();
    let mut dispatched = 0usize;
    let mut slot_wait = Duration::ZERO;
    let mut slot_waiters = 1;

    std::thread::scope(|scope| {
        let shared = &shared;
        let pool = &pool;
        let ring = &ring;
        let reader = scope.spawn(move || {
            let mut clock = Clock::default();
            let mut sent = 0;
            'frames: for (position, (number, input, output)) in work.into_iter().enumerate() {
                let t = Instant::now();
                if let Some(window) = &shared.window {
                    while !window.admit(position, Duration::from_millis(20)) {
                        if shared.stopping() {
                            break 'frames;
                        }
                    }
                }
                clock.wait_out += t.elapsed();
                if shared.stopping() || !clock.send(&decode_tx, Work { position, number, input, output }) {
                    break;
                }
                sent += 1;
            }
            (clock, sent)
        });
        let decoders: Vec<_> = (0..threads)
            .map(|worker| {
                let rx = decode_rx.clone();
                let to_compute = compute_tx.clone();
                let to_encode = encode_tx.clone();
                let events = events_tx.clone();
                scope.spawn(move || {
                    let mut clock = Clock::default();
                    // Time spent waiting for a free slot (or for previews
                    // at the gate), apart from waiting for work.
                    let mut slot_wait = Duration::ZERO;
                    while let Some(w) = clock.recv(&rx) {
                        let Work { position, number, input, output } = w;
                        let asked = Instant::now();
                        let gpu = gpu_slots.then_some((shape, slot_bytes));
                        // A panic here (outside any frame's guard) must stop the
                        // run: the decoders after this one wait for its turn.
                        let slot = catch_unwind(AssertUnwindSafe(|| {
                            start_frame(engine, shared, pool, (position, number), gpu, compute_name.is_none())
                        }));
                        slot_wait += asked.elapsed();
                        clock.wait_in += asked.elapsed();
                        let slot = match slot {
                            Ok(Some(slot)) => slot,
                            // Stopped or cancelled: frames not yet started are dropped.
                            Ok(None) => {
                                let _ = events.send(Event::Abandoned(number));
                                continue;
                            }
                            Err(payload) => {
                                let msg = crate::error::panic_message(&*payload);
                                let e =
                                    Error::Panic(format!("{:?} stage panicked on frame {number}: {msg}", Stage::Start));
                                shared.fail(&events, number, e);
                                shared.next_turn.notify_all();
                                continue;
                            }
                        };
                        let t0 = Instant::now();
                        let result = clock.work(shared.start, "decode", worker, number, || {
                            shared.guarded(Stage::Decode, number, || {
                                let mismatch = |got: String| Error::FrameMismatch {
                                    path: input.clone(),
                                    got,
                                    expected: describe(shape),
                                };
                                match &*slot {
                                    SlotKind::Gpu(s) => {
                                        // Straight into the slot's mapped upload, in pieces.
                                        let mut w = s.writer()?;
                                        let limits = &shared.job.limits;
                                        let check = |i: &FrameInfo| {
                                            let got = FrameShape { width: i.width, height: i.height, format: i.format };
                                            if got == shape { Ok(()) } else { Err(mismatch(describe(got))) }
                                        };
                                        // A piece that does not fit is the file's fault, not the GPU's.
                                        let write = |at, px: &[u8]| {
                                            w.write(at, px).map_err(|e| Error::Decode {
                                                path: input.clone(),
                                                reason: e.to_string(),
                                            })
                                        };
                                        let info = decode_with(&input, limits, check, write)?;
                                        let (width, height, format) = (shape.width, shape.height, shape.format);
                                        Ok(HostFrame {
                                            width,
                                            height,
                                            format,
                                            has_alpha: info.has_alpha,
                                            data: Vec::new(),
                                        })
                                    }
                                    SlotKind::Host => {
                                        let frame = decode_file(&input, &shared.job.limits)?;
                                        if FrameShape::of(&frame) != shape {
                                            return Err(mismatch(frame.describe()));
                                        }
                                        Ok(frame)
                                    }
                                }
                            })
                        });
                        let decode_ms = t0.elapsed().as_secs_f64() * 1e3;
                        match result {
                            Ok(frame) if compute_name.is_some() => {
                                let d = Decoded { number, output, frame, slot, decode_ms };
                                if !clock.send(&to_compute, d) {
                                    break;
                                }
                            }
                            Ok(frame) => {
                                drop(slot);
                                let p = Processed { number, output, frame, decode_ms, process_ms: 0.0, gpu_ns: None };
                                if !clock.send(&to_encode, p) {
                                    break;
                                }
                            }
                            Err(e) => shared.fail(&events, number, e),
                        }
                    }
                    (clock, slot_wait)
                })
            })
            .collect();
        drop(compute_tx);
        let compute = compute_name.map(|name| {
            let to_encode = encode_tx.clone();
            let events = events_tx.clone();
            scope.spawn(move || {
                let mut clock = Clock::default();
                let mut broken = false;
                // Frames on the GPU, oldest first: a new frame is submitted
                // whenever there is room and one is ready, and only when
                // none is does this thread wait for the oldest.
                // (The flight comes first: should this thread unwind, it is
                // waited for before its slot and readback go back.)
                let mut flights: VecDeque<(InFlight, Decoded, Lease<Readback>, Instant)> = VecDeque::new();
                // A frame refused for memory, or for want of a free readback
                // buffer, while others were on the GPU: it goes again once
                // they are done.
                let mut pending: Option<Decoded> = None;
                // Frames a failed device never processed are reported as
                // such, so a stream's reorder buffer does not wait for them.
                let abandon = |d: Decoded| {
                    let _ = events.send(Event::Abandoned(d.number));
                };
                loop {
                    let next = if let Some(d) = pending.take() {
                        if flights.is_empty() {
                            Some(d)
                        } else {
                            pending = Some(d);
                            None
                        }
                    } else if flights.len() >= GPU_DEPTH {
                        None
                    } else if flights.is_empty() {
                        match clock.recv(&compute_rx) {
                            Some(d) => Some(d),
                            None => break,
                        }
                    } else if engine.backend().waiting_above(Priority::Export) {
                        // A preview is waiting: submit nothing new, finish
                        // what is on the GPU (its slots may be what the
                        // preview needs).
                        None
                    } else {
                        compute_rx.try_recv().ok()
                    };
                    if let Some(d) = next {
                        if broken || shared.cancel.is_cancelled() {
                            // Drain without touching a failed device, or
                            // drop what a cancelled run has not started.
                            abandon(d);
                            continue;
                        }
                        let number = d.number;
                        let may_wait = flights.is_empty();
                        // Where the result will come back. With frames on the
                        // GPU, none free means finish the oldest first; with
                        // none, the copiers free one soon.
                        let readback = if !gpu_slots {
                            None
                        } else if may_wait {
                            let asked = Instant::now();
                            let r = loop {
                                if let Some(r) = ring.acquire_timeout(Duration::from_millis(20)) {
                                    break Some(r);
                                }
                                // A stopped run still drains the frames it
                                // decoded (the copiers free the ring); only a
                                // cancel, or a ring still full seconds after
                                // a stop (a failed copier), drops this one.
                                let stuck = shared.stopping() && asked.elapsed() > Duration::from_secs(5);
                                if shared.cancel.is_cancelled() || stuck {
                                    break None;
                                }
                            };
                            clock.wait_out += asked.elapsed();
                            let Some(r) = r else {
                                abandon(d);
                                continue;
                            };
                            Some(r)
                        } else if let Some(r) = ring.acquire_timeout(Duration::ZERO) {
                            Some(r)
                        } else {
                            pending = Some(d);
                            continue;
                        };
                        let t0 = Instant::now();
                        let (result, waited) = clock.work(shared.start, name, 0, number, || {
                            submit(engine, shared, &d, readback.as_deref(), shape, may_wait)
                        });
                        clock.busy = clock.busy.saturating_sub(waited);
                        clock.wait_out += waited;
                        match result {
                            Ok(Submitted::Gpu(flight)) => {
                                flights.push_back((flight, d, readback.expect("GPU frames have one"), t0))
                            }
                            Ok(Submitted::Done(frame)) => {
                                let Decoded { number, output, slot, decode_ms, .. } = d;
                                drop(slot);
                                let process_ms = t0.elapsed().as_secs_f64() * 1e3;
                                let p = Processed { number, output, frame, decode_ms, process_ms, gpu_ns: None };
                                if !clock.send(&to_encode, p) {
                                    break;
                                }
                            }
                            Err(Error::Budget(_)) if !may_wait => {
                                // Counted when it is submitted.
                                clock.frames -= 1;
                                pending = Some(d);
                            }
                            Err(e) => {
                                broken = matches!(e, Error::Panic(_) | Error::Gpu(_));
                                shared.fail(&events, d.number, e);
                            }
                        }
                        continue;
                    }
                    let Some((flight, d, readback, t0)) = flights.pop_front() else { continue };
                    if broken {
                        if let SlotKind::Gpu(s) = &*d.slot {
                            let _ = flight.wait(s);
                        }
                        abandon(d);
                        continue;
                    }
                    let number = d.number;
                    let result = clock.wait(shared.start, name, number, || {
                        shared.catch(Stage::Compute, number, || match &*d.slot {
                            SlotKind::Gpu(s) => flight.wait(s),
                            SlotKind::Host => unreachable!("host slots are never submitted"),
                        })
                    });
                    match result {
                        Ok(gpu_ns) => {
                            let Decoded { number, output, frame, slot, decode_ms } = d;
                            // The GPU is done with the upload: the slot can take
                            // the next frame while the result is copied out.
                            drop(slot);
                            let has_alpha = frame.has_alpha;
                            let f = Finished { number, output, has_alpha, readback, decode_ms, t0, gpu_ns };
                            if !clock.send(&to_readback, f) {
                                break;
                            }
                        }
                        Err(e) => {
                            broken = true;
                            shared.fail(&events, number, e);
                        }
                    }
                }
                // What is still on the GPU is dropped only once it is done.
                for (flight, d, _, _) in flights {
                    if let SlotKind::Gpu(s) = &*d.slot {
                        let _ = flight.wait(s);
                    }
                    abandon(d);
                }
                if let Some(d) = pending {
                    abandon(d);
                }
                clock
            })
        });
        // `to_readback` went into the compute closure: gone with it, or with
        // the closure `map` never called.
        let readers: Vec<_> = (0..if gpu_slots { readback_threads(threads) } else { 0 })
            .map(|worker| {
                let rx = readback_rx.clone();
                let to_encode = encode_tx.clone();
                let events = events_tx.clone();
                scope.spawn(move || {
                    let mut clock = Clock::default();
                    while let Some(f) = clock.recv(&rx) {
                        let Finished { number, output, has_alpha, readback, decode_ms, t0, gpu_ns } = f;
                        let result = clock.work(shared.start, "readback", worker, number, || {
                            shared.guarded(Stage::Readback, number, || readback.take_result())
                        });
                        drop(readback); // the frame is back in host memory: free the buffer
                        match result {
                            Ok(data) => {
                                let frame = HostFrame {
                                    width: shape.width,
                                    height: shape.height,
                                    format: shape.format,
                                    has_alpha,
                                    data,
                                };
                                let process_ms = t0.elapsed().as_secs_f64() * 1e3;
                                let p = Processed { number, output, frame, decode_ms, process_ms, gpu_ns };
                                if !clock.send(&to_encode, p) {
                                    break;
                                }
                            }
                            Err(e) => shared.fail(&events, number, e),
                        }
                    }
                    clock
                })
            })
            .collect();
        drop(readback_rx);
        drop(encode_tx);
        let encoders: Vec<_> = (0..threads)
            .map(|worker| {
                let rx = encode_rx.clone();
                let events = events_tx.clone();
                scope.spawn(move || {
                    let mut clock = Clock::default();
                    while let Some(p) = clock.recv(&rx) {
                        let number = p.number;
                        let t0 = Instant::now();
                        let result = clock.work(shared.start, "encode", worker, number, || {
                            shared.guarded(Stage::Encode, number, || {
                                let job = shared.job;
                                if prepared.stream {
                                    encode_frame(p.frame, prepared.format, &job.encode, &p.output).map(Some)
                                } else {
                                    write_frame_atomic(&p.frame, &p.output, prepared.format, &job.encode, job.overwrite)
                                        .map(|()| None)
                                }
                            })
                        });
                        match result {
                            Ok(bytes) => {
                                let record = FrameRecord {
                                    number,
                                    output: p.output.display().to_string(),
                                    decode_ms: p.decode_ms,
                                    process_ms: p.process_ms,
                                    gpu_ms: p.gpu_ns.map(|n| n as f64 / 1e6),
                                    encode_ms: t0.elapsed().as_secs_f64() * 1e3,
                                    output_bytes: match &bytes {
                                        Some(b) => b.len() as u64,
                                        None => std::fs::metadata(&p.output).map_or(0, |m| m.len()),
                                    },
                                };
                                engine.trace(TraceEvent::ExportFrameDone(number));
                                let _ = events.send(match bytes {
                                    Some(b) => Event::Encoded(record, b),
                                    None => Event::Done(record),
                                });
                            }
                            Err(e) => shared.fail(&events, number, e),
                        }
                    }
                    clock
                })
            })
            .collect();
        drop(decode_rx);
        drop(encode_rx);

        drop(events_tx);

        // If this thread unwinds (a progress callback panicked), the others
        // must still stop, or the scope would wait for them forever.
        let _stop_on_unwind = StopOnDrop(&shared.stop);
        // This thread reports progress until every stage has hung up, and
        // writes a stream's frames in order.
        let mut done = Vec::new();
        let mut failed = Vec::new();
        let mut halted = false;
        while let Ok(event) = events_rx.recv() {
            match event {
                Event::Done(record) => {
                    finished += 1;
                    done.push(record);
                    progress(Progress::Done { finished, total, record: done.last().expect("just pushed") });
                }
                Event::Failed(failure) => {
                    finished += 1;
                    reorder.insert(failure.number, None);
                    failed.push(failure);
                    progress(Progress::Failed { finished, total, failure: failed.last().expect("just pushed") });
                }
                Event::Encoded(record, bytes) => reorder.insert(record.number, Some((record, bytes))),
                Event::Abandoned(number) => {
                    abandoned += 1;
                    reorder.insert(number, None);
                }
            }
            let Some(out) = stream.as_deref_mut() else { continue };
            while let Some((_, item)) = reorder.pop() {
                match item {
                    // After a failure under `stop` (or a write error) nothing
                    // more goes out: the consumer must not get frames after a
                    // gap it was not told about.
                    Some(_) if halted => dropped += 1,
                    Some((record, bytes)) => {
                        finished += 1;
                        match out.write_all(&bytes).and_then(|()| out.flush()) {
                            Ok(()) => {
                                done.push(record);
                                progress(Progress::Done { finished, total, record: done.last().expect("just pushed") });
                            }
                            Err(e) => {
                                halted = true;
                                shared.stop.store(true, Ordering::SeqCst);
                                let error = Error::Stream(e.to_string()).to_string();
                                failed.push(FrameFailure { number: record.number, error });
                                let failure = failed.last().expect("just pushed");
                                progress(Progress::Failed { finished, total, failure });
                            }
                        }
                    }
                    None => halted |= job.on_error == ErrorPolicy::Stop,
                }
                if let Some(window) = &shared.window {
                    window.advance(reorder.released());
                }
            }
        }
        dropped += reorder.abandon();
        // Every stage has hung up (normally, or a thread died outside its
        // per-frame guard): make sure the reader is not left waiting for a
        // slot or the stream window.
        shared.stop.store(true, Ordering::SeqCst);
        let join = |h: std::thread::ScopedJoinHandle<'_, Clock>| h.join().unwrap_or_else(|_| join_failed(shared));
        let (clock, sent) = reader.join().unwrap_or_default();
        dispatched = sent;
        clocks.push(("read", vec![clock]));
        let decoders: Vec<Clock> = decoders
            .into_iter()
            .map(|h| {
                let (clock, waited) = h.join().unwrap_or_else(|_| (join_failed(shared), Duration::ZERO));
                slot_wait += waited;
                clock
            })
            .collect();
        slot_waiters = decoders.len();
        clocks.push(("decode", decoders));
        if let (Some(name), Some(h)) = (compute_name, compute) {
            clocks.push((name, vec![join(h)]));
        }
        if gpu_slots {
            clocks.push(("readback", readers.into_iter().map(join).collect()));
        }
        clocks.push(("encode", encoders.into_iter().map(join).collect()));
        done.sort_by_key(|r| r.number);
        report.frames = done;
        report.failures.extend(failed);
    });

    let wall = start.elapsed().as_secs_f64();
    report.seconds = wall;
    report.frames_written = report.frames.len();
    report.fps = report.frames_written as f64 / wall.max(1e-9);
    // Frames a halted stream did not write count as skipped, like the ones
    // never dispatched.
    report.frames_skipped = total - first - dispatched + dropped + abandoned;
    report.cancelled = cancel.is_cancelled();
    report.vram_peak = watch.peak();
    report.rss_peak = peak_rss();
    report.occupancy = pool.occupancy().samples();
    report.slots_yielded = pool.retired();
    report.slots_regrown = pool.replenished();
    report.slot_wait_s = slot_wait.as_secs_f64() / slot_waiters.max(1) as f64;
    for (name, workers) in clocks {
        let busy: f64 = workers.iter().map(|c| c.busy.as_secs_f64()).sum();
        let frames: usize = workers.iter().map(|c| c.frames).sum();
        let n = workers.len().max(1);
        // A decoder holds a slot while it decodes: fewer slots than
        // decoders means fewer decodes at once than threads.
        let parallel = if name == "decode" { n.min(pool.size().max(1)) } else { n };
        report.stages.push(StageReport {
            name: name.into(),
            workers: n,
            frames,
            busy_s: busy,
            wait_input_s: workers.iter().map(|c| c.wait_in.as_secs_f64()).sum(),
            wait_output_s: workers.iter().map(|c| c.wait_out.as_secs_f64()).sum(),
            busy_ms_per_frame: if frames > 0 { busy * 1e3 / frames as f64 } else { 0.0 },
            utilization: busy / parallel as f64 / wall.max(1e-9),
        });
        report.intervals.extend(workers.into_iter().flat_map(|c| c.intervals));
    }
    if let Some(b) =
        report.stages.iter().filter(|s| s.name != "read").max_by(|a, b| a.utilization.total_cmp(&b.utilization))
    {
        report.bottleneck = b.name.clone();
        report.efficiency = b.utilization;
    }
    if let Some(msg) = shared.fatal.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(Error::Panic(msg));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_come_before_a_deep_readback_ring() {
        let mib = 1u64 << 20;
        let gib = 1u64 << 30;
        // 8K RGBA16 beside ~320 MiB of kernel buffers in the default 2 GiB:
        // four slots and two readback buffers, not a full ring and one slot.
        let frame16 = 7680 * 4320 * 8;
        let free = 2 * gib - 320 * mib;
        let (slots, ring) = split_budget(free, frame16 + 48, frame16, 16, PoolSize::Auto);
        assert_eq!((slots, ring), (4, 2));
        assert!(slots as u64 * (frame16 + 48) + ring as u64 * frame16 <= free);
        // Small frames: every slot that helps and the whole ring.
        assert_eq!(split_budget(free, 1000, 1000, 16, PoolSize::Auto), (auto_cap(16, true), ring_size(16)));
        // Room for one frame of each only.
        assert_eq!(split_budget(2100, 1050, 1000, 4, PoolSize::Auto), (1, 1));
        // A fixed pool leaves the ring the rest, at least one.
        assert_eq!(split_budget(12_000, 1000, 1000, 4, PoolSize::Fixed(5)), (5, ring_size(4)));
        assert_eq!(split_budget(5_500, 1000, 1000, 4, PoolSize::Fixed(5)), (5, 1));
    }
}
