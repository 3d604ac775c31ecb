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
//!   and fewer than [`GPU_DEPTH`] are on the GPU (one while an editor is
//!   previewing on the engine: a preview queues behind whatever export work
//!   was submitted before it), and otherwise waits for the oldest. Once
//!   the GPU is done with a frame its slot is free (the
//!   upload is mapped again for the next frame) and its result is mapped
//!   in a [`Readback`] from a ring of [`ring_size`] buffers. A readback
//!   thread copies it out (a host memcpy that would otherwise be most of
//!   the owner's time per frame), frees the buffer and hands the host
//!   frame to the encoders. A slot is one frame of VRAM, not two, held
//!   from its frame's decode until the GPU has read it, waiting for the
//!   owner meanwhile (up to the whole pool decoded and waiting, when the
//!   GPU is the slowest stage). With the CPU backend the owner runs the
//!   rayon kernels and there is no readback stage; with no ops there is
//!   no compute stage and nothing touches the GPU.
//! * Stages are joined by bounded channels. Output files may complete out
//!   of order; each is written atomically.
//! * A failed frame is reported; with [`ErrorPolicy::Stop`] the reader stops
//!   and what is in flight drains. A panic in any stage (caught per frame)
//!   or a lost device aborts the run: every stage drops the frames it holds,
//!   so none is written after the error. A panic surfaces as
//!   [`Error::Panic`] once every thread has joined; a lost device as the
//!   failure of the frame whose wait found it ([`Error::Gpu`]) in the
//!   report, the frames it took down beside it as not written (skipped).
//!   Cancellation stops the reader; frames already on the GPU or past it
//!   are finished and written, those decoded and waiting for it are
//!   dropped (not written; on a stream, nothing after the first of them).
//! * Decode and encode run `min(threads, frames)` workers each.
//!
//! `stages` holds each thread's loop, `slots` the pool's sizing and the
//! start of a frame, `clock` the per-worker time accounting; this module
//! wires them together and builds the report.

mod clock;
mod slots;
mod stages;

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, bounded, unbounded};

pub(crate) use clock::Clock;
pub use slots::split_budget;
use slots::{Sizing, Staging, size_slots};
pub(crate) use slots::{check_one_frame_fits, check_pool_fits, one_frame_bytes};
use stages::Ctx;

use crate::engine::{Cancel, Engine, ErrorPolicy, Job, PreparedJob, Progress, is_identity};
use crate::error::{Error, Result};
use crate::gpu::{FrameShape, GpuSlot, Readback};
use crate::io::{HostFrame, probe_file};
use crate::ops::Plan;
use crate::pool::{Lease, Pool, PoolSize};
use crate::priority::Priority;
use crate::reorder::{Reorder, Window};
use crate::report::{FrameFailure, FrameRecord, Report, StageReport, peak_rss};

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
/// the owner thread waits; more would only hold slots. While previews are
/// live the export keeps one: on the H100 an 8K frame's copies in and out
/// take about 10 ms, and a slider drag's p95 with an export running went
/// from 21-41 ms (three of four sessions over 30 ms, at 27b2090) to
/// 24-30 ms (five of five under, at 483a7a8 and 2f3e387); each p95 is of
/// 20 requests, near their maximum.
pub const GPU_DEPTH: usize = 2;

/// Threads that copy finished frames out of their readback buffers. The
/// copy is a host memcpy (about 13 ms per 8K RGBA8 frame at 10 GB/s): one
/// thread keeps up with the GPU on small machines, two on larger ones, and
/// the buffer is free as soon as the copy is done rather than after the
/// encode.
pub(crate) fn readback_threads(threads: usize) -> usize {
    if threads >= 4 { 2 } else { 1 }
}

/// Frames decoded (or read back) and waiting for one of the `threads`
/// encoders. Each is a whole frame of host memory (132 MB at 8K) and the
/// encoders are many, so the queue only smooths arrivals: a few suffice.
/// At one per encoder, 16 threads held 2 GB of 8K frames waiting there.
pub(crate) fn encode_queue(threads: usize) -> usize {
    threads.clamp(1, 4)
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

/// A frame to decode; its decoder takes the slot (see [`slots::start_frame`]).
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
    /// The source is grey: see [`PreparedJob::encode_for`](crate::PreparedJob::encode_for).
    grey: bool,
    slot: Lease<SlotKind>,
    decode_ms: f64,
}

/// A frame the GPU has finished: its result is mapped in the slot.
struct Finished {
    number: u64,
    output: PathBuf,
    has_alpha: bool,
    grey: bool,
    readback: Lease<Readback>,
    decode_ms: f64,
    /// When it was submitted.
    t0: Instant,
    gpu_ns: Option<u64>,
}

struct Processed {
    number: u64,
    output: PathBuf,
    frame: HostFrame,
    grey: bool,
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
    /// Its output appeared during the run: kept, under skip-existing.
    Kept(u64),
    /// Dispatched but never finished: the run was cancelled, or aborted by
    /// a panic or a failed device on an earlier frame. Counted as skipped.
    Abandoned(u64),
}

/// A stage's thread, started in `scope`; `None` when the OS will not start
/// it (a process or container thread limit), which fails the run with
/// [`Error::Thread`]: the threads already started stop, and the scope
/// joins them. The reader's thread goes as [`Stage::Start`].
fn spawn<'scope, T: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    shared: &Shared<'_>,
    stage: Stage,
    f: impl FnOnce() -> T + Send + 'scope,
) -> Option<std::thread::ScopedJoinHandle<'scope, T>> {
    let what = match stage {
        Stage::Start => "reader",
        Stage::Decode => "decoder",
        Stage::Compute => "compute",
        Stage::Readback => "readback",
        Stage::Encode => "encoder",
    };
    let started = match shared.job.refuse_threads {
        Some(refused) if refused == stage => Err(std::io::Error::from(std::io::ErrorKind::WouldBlock)),
        _ => std::thread::Builder::new().name(format!("framepipe-{what}")).spawn_scoped(scope, f),
    };
    match started {
        Ok(handle) => Some(handle),
        Err(source) => {
            shared.stop.store(true, Ordering::SeqCst);
            shared.abort.store(true, Ordering::SeqCst);
            let mut fatal = crate::lock(&shared.fatal);
            fatal.get_or_insert(Error::Thread { what: format!("the pipeline's {what}"), source });
            drop(fatal);
            shared.next_turn.notify_all();
            None
        }
    }
}

/// What a thread that died outside its per-frame guard leaves: the run's
/// fatal error, and an empty clock.
fn join_failed(shared: &Shared<'_>) -> Clock {
    let mut fatal = crate::lock(&shared.fatal);
    fatal.get_or_insert_with(|| Error::Panic("a pipeline thread panicked".into()));
    Clock::default()
}

/// Stops the run if the thread holding it unwinds: a stage thread that
/// dies outside a frame's guard must not leave the decoders after it
/// waiting for its turn.
struct StopOnPanic<'a, 'b>(&'a Shared<'b>);

impl Drop for StopOnPanic<'_, '_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.stop.store(true, Ordering::SeqCst);
            self.0.abort.store(true, Ordering::SeqCst);
            join_failed(self.0);
            self.0.next_turn.notify_all();
        }
    }
}

/// Sets the stop flag when dropped; unwinding, the abort flag too: the
/// frames in flight are the run's no more (the caller is gone), so none is
/// renamed into place, and the threads join at once.
struct StopOnDrop<'a>(&'a AtomicBool, &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.1.store(true, Ordering::SeqCst);
        }
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Shared run state.
struct Shared<'a> {
    job: &'a Job,
    prepared: &'a PreparedJob,
    plan: Plan,
    start: Instant,
    stop: AtomicBool,
    /// A panic or a device error: frames already started are dropped
    /// rather than finished (a stop under `--on-error stop` drains them).
    abort: AtomicBool,
    /// What ends the run as an error, not a report: a panic, a thread the
    /// OS would not start, a pool left with no slot the device would make.
    fatal: Mutex<Option<Error>>,
    cancel: &'a Cancel,
    /// For a stream: how far the reader may run ahead of the writer.
    window: Option<Window>,
    /// The position (in read order) of the next frame to start.
    turn: Mutex<usize>,
    next_turn: std::sync::Condvar,
    /// Host frame buffers the encoders are done with, for the decoders and
    /// copiers.
    spares: Spares,
    /// Frames whose sources hold floats or premultiplied alpha.
    sources: Mutex<crate::report::SourceKinds>,
    /// When the device last refused a slot given back after previews
    /// (with slots left, the run goes on with fewer): not asked again for
    /// a while, rather than at every 20 ms turn of a waiting decoder.
    regrow_refused: Mutex<Option<Instant>>,
}

/// Host frame buffers handed back for the next frames: the encoders give
/// back each frame's once it is written to a file (a frame for a stream
/// leaves as the stream's bytes, a raw one without a copy, and is not
/// given back), decoders and copiers take them to
/// decode or copy the next frames into. A new 132 MB buffer per 8K frame
/// costs its page faults (its first write touches 32,000 new pages) on top
/// of the work: the readback's copy into one ran at about 1 GB/s on the
/// H100 machine and on the 2-core VM. Buffers in use never outnumber the
/// frames in host memory at once, and `keep` bounds those kept idle.
struct Spares {
    keep: usize,
    free: Mutex<Vec<Vec<u8>>>,
}

impl crate::io::Buffers for Spares {
    /// A buffer of `len` bytes: a spare, else a new one.
    fn take(&self, len: usize) -> Vec<u8> {
        let spare = crate::lock(&self.free).pop();
        match spare {
            // A smaller one (an RGB decode's) would be reallocated and
            // copied: a new one costs no more.
            Some(mut data) if data.capacity() >= len => {
                data.resize(len, 0);
                data
            }
            _ => vec![0; len],
        }
    }

    /// Keeps `data` for the next frame, unless enough are kept already.
    fn give(&self, data: Vec<u8>) {
        let mut free = crate::lock(&self.free);
        if data.capacity() > 0 && free.len() < self.keep {
            free.push(data);
        }
    }
}

impl Shared<'_> {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.cancel.is_cancelled()
    }

    /// Whether the run failed past finishing the frames under way (a
    /// panic, a lost device): it must end at once and write no frame
    /// after the error, so every stage drops what it holds.
    fn aborted(&self) -> bool {
        self.abort.load(Ordering::SeqCst)
    }

    fn fail(&self, events: &Sender<Event>, number: u64, error: Error) {
        // Written meanwhile by another run (a farm's retried task): under
        // skip-existing that frame is there, as if found at the start, if
        // it reads as this render's frame (else that is the failure).
        let Some(error) = self.prepared.unless_kept(self.job, error) else {
            let _ = events.send(Event::Kept(number));
            return;
        };
        let fatal = matches!(error, Error::Panic(_) | Error::Gpu(_));
        if fatal || self.job.on_error == ErrorPolicy::Stop {
            self.stop.store(true, Ordering::SeqCst);
        }
        if fatal {
            self.abort.store(true, Ordering::SeqCst);
        }
        if let Error::Panic(msg) = &error {
            crate::lock(&self.fatal).get_or_insert_with(|| Error::Panic(msg.clone()));
        }
        let _ = events.send(Event::Failed(FrameFailure::new(number, &error)));
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

/// The shape every frame must have, the prepared job's (the first frame
/// asked whose header reads, a kept one too: [`PreparedJob::first`]), and
/// the first frame to process whose header reads. Frames before it that
/// cannot be read are failures.
fn probe_shape(job: &Job, prepared: &PreparedJob, failures: &mut Vec<FrameFailure>) -> Option<(usize, FrameShape)> {
    // The run's shape is the prepared one (a kept frame's, on a resumed
    // run): a first frame of another size fails as in the whole run.
    let run = prepared.first.as_ref().map(FrameShape::of_info);
    for (i, f) in prepared.sequence.frames.iter().enumerate() {
        match probe_file(&f.path, &job.limits) {
            Ok((width, height, format)) => return Some((i, run.unwrap_or(FrameShape { width, height, format }))),
            Err(e) => {
                failures.push(FrameFailure::new(f.number, &e));
                if job.on_error == ErrorPolicy::Stop {
                    return None;
                }
            }
        }
    }
    None
}

fn describe(shape: FrameShape) -> String {
    format!("{}x{} {}", shape.width, shape.height, shape.format)
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
    let mut report = Report { threads, ..Report::for_job(job, prepared, engine, "pipelined") };
    let mut early = Vec::new();
    let probed = probe_shape(job, prepared, &mut early);
    let mut finished = 0;
    for failure in &early {
        finished += 1;
        progress(Progress::Failed { finished, total, failure });
    }
    report.failures = early;
    // The report of a run that ends before any frame starts.
    let unstarted = |mut report: Report| {
        report.list_unwritten(prepared.sequence.frames.iter().map(|f| f.number));
        report.seconds = start.elapsed().as_secs_f64();
        report.rss_peak = peak_rss();
        Ok(report)
    };
    let Some((first, shape)) = probed else { return unstarted(report) };
    report.frame = describe(shape);
    // Preview memory an editor has left idle goes back before the pool is
    // sized (kept while the editor is active).
    engine.reclaim_preview_memory(Some((shape, &plan)));
    // The pool (auto) and the stage threads are sized for the workers
    // that can be busy: no more than the frames left to start (those
    // before `first` failed their header).
    let remaining = total - first;
    let busy = threads.min(remaining);
    // A fixed pool takes no more slots than frames either: one past them
    // never holds a frame, and only takes VRAM (a farm's `--pool 16` on
    // a three-frame 8K shot would not fit the budget).
    let pool_size = match pool_size {
        PoolSize::Fixed(n) => PoolSize::Fixed(n.min(remaining.max(1))),
        auto => auto,
    };
    // A pool that does not fit beside what an active editor's previews
    // hold waits for them to go quiet and give it back (the export yields,
    // never the preview); one that does not fit the budget is the error.
    // Memory taken between the sizing and the making (a preview, another
    // run on the engine) is a race, not a pool that does not fit: sized
    // again from what is left, a few times.
    let mut raced = 0;
    // (`_kernels` holds the run's kernel set to its end: see `size_slots`.)
    let Staging { slots, slot_bytes, ring, hold: _kernels } = loop {
        let mark = ledger.mark();
        let mut backend = engine.backend().lock(Priority::Export);
        let sizing = Sizing { pool: pool_size, threads: busy, frames: remaining };
        let planned = size_slots(&mut backend, ledger, shape, &plan, identity, sizing);
        // Released first: reclaiming takes the backend too, and previews
        // must not wait while the slots are made (46 ms per 8K slot).
        drop(backend);
        let made = match planned {
            Ok(planned) => {
                let fitted = planned.fitted();
                match planned.make() {
                    Err(Error::Budget(_)) if fitted && raced < 5 => {
                        raced += 1;
                        continue;
                    }
                    made => made,
                }
            }
            Err(e) => Err(e),
        };
        match made {
            Err(Error::Budget(_)) if engine.preview_memory_held() => {
                // A pool more than the whole budget (one frame, or a fixed
                // pool's slots) is the error, whatever previews hold:
                // nothing they give back makes it fit.
                if let crate::backend::Backend::Gpu(gpu) = &*engine.backend().lock(Priority::Export) {
                    check_pool_fits(gpu, shape, &plan, pool_size, ledger.budget())?;
                }
                // Cancelled while waiting: a run that started no frame.
                if cancel.is_cancelled() {
                    report.cancelled = true;
                    return unstarted(report);
                }
                let since = mark.since();
                if !engine.reclaim_preview_memory(Some((shape, &plan))) {
                    ledger.wait_release(since, Duration::from_millis(250));
                }
            }
            r => break r?,
        }
    };
    report.pool_size = slots.len();
    report.slot_bytes = slot_bytes;
    report.setup_s = start.elapsed().as_secs_f64();
    // Host permits hold no VRAM: previews' pressure must not shrink them.
    let pressure = if ring.is_empty() { Default::default() } else { engine.core.pressure.clone() };
    let pool = Pool::new(slots, start, pressure);
    // Never yielded to previews: the ring is a fixed cost, like the kernels.
    let ring = Pool::new(ring, start, Default::default());

    let (events_tx, events_rx) = unbounded::<Event>();
    // Frames dispatched but not yet written to a stream: the slots, a
    // frame per encoder and one waiting for each.
    let window = stream.is_some().then(|| Window::new(pool.size() + 2 * busy));
    let shared = Shared {
        job,
        prepared,
        plan,
        start,
        stop: AtomicBool::new(false),
        abort: AtomicBool::new(false),
        fatal: Mutex::new(None),
        cancel,
        window,
        turn: Mutex::new(0),
        next_turn: std::sync::Condvar::new(),
        // Frames waiting to be encoded, one per encoder, one per copier.
        spares: Spares { keep: encode_queue(busy) + busy + readback_threads(busy), free: Mutex::default() },
        sources: Mutex::new(crate::report::SourceKinds::new(prepared)),
        regrow_refused: Mutex::new(None),
    };
    let work: Vec<(u64, PathBuf, PathBuf)> = prepared.sequence.frames[first..]
        .iter()
        .zip(&prepared.outputs[first..])
        .map(|(f, o)| (f.number, f.path.clone(), o.clone()))
        .collect();
    let mut reorder = Reorder::new(work.iter().map(|w| w.0).collect());
    // Frames dropped in flight (a cancel, a stop): a gap no failure was
    // reported for, so a stream ends before one whatever `--on-error` says.
    let mut abandoned_numbers = std::collections::HashSet::new();

    let compute_name =
        if identity { None } else { Some(if engine.backend_name() == "gpu" { "gpu" } else { "compute" }) };
    let (decode_tx, decode_rx) = bounded::<Work>(busy);
    let (compute_tx, compute_rx) = bounded::<Decoded>(pool.size());
    let (encode_tx, encode_rx) = bounded::<Processed>(encode_queue(busy));
    let gpu_slots = compute_name == Some("gpu");
    let (to_readback, readback_rx) = bounded::<Finished>(readback_threads(busy));
    let mut clocks: Vec<(&'static str, Vec<Clock>)> = Vec::new();
    // Writing to a stream is a stage of its own: a slow consumer (an
    // encoder reading the pipe) is then what the report names.
    let mut write_clock = Clock::default();
    let mut slot_wait = Duration::ZERO;
    let mut slot_waiters = 1;

    let ctx =
        Ctx { engine, shared: &shared, prepared, pool: &pool, ring: &ring, shape, slot_bytes, compute_name, gpu_slots };
    std::thread::scope(|scope| {
        let shared = &shared;
        let reader = spawn(scope, shared, Stage::Start, move || ctx.read(work, decode_tx));
        let decoders: Vec<_> = (0..busy)
            .filter_map(|worker| {
                let (rx, to_compute, to_encode, events) =
                    (decode_rx.clone(), compute_tx.clone(), encode_tx.clone(), events_tx.clone());
                spawn(scope, shared, Stage::Decode, move || ctx.decode(worker, rx, to_compute, to_encode, events))
            })
            .collect();
        drop((decode_rx, compute_tx));
        // `to_readback` goes to the compute thread: gone with it, or with
        // the closure `map` never calls, so the copiers see the end.
        let compute_channels = (compute_rx, encode_tx.clone(), to_readback, events_tx.clone());
        let compute = compute_name.and_then(|name| {
            let (rx, to_encode, to_readback, events) = compute_channels;
            spawn(scope, shared, Stage::Compute, move || ctx.compute(name, rx, to_encode, to_readback, events))
        });
        let readers: Vec<_> = (0..if gpu_slots { readback_threads(busy) } else { 0 })
            .filter_map(|worker| {
                let (rx, to_encode, events) = (readback_rx.clone(), encode_tx.clone(), events_tx.clone());
                spawn(scope, shared, Stage::Readback, move || ctx.copy_out(worker, rx, to_encode, events))
            })
            .collect();
        drop((readback_rx, encode_tx));
        let encoders: Vec<_> = (0..busy)
            .filter_map(|worker| {
                let (rx, events) = (encode_rx.clone(), events_tx.clone());
                spawn(scope, shared, Stage::Encode, move || ctx.encode(worker, rx, events))
            })
            .collect();
        drop(encode_rx);

        drop(events_tx);

        // If this thread unwinds (a progress callback panicked), the others
        // must still stop, or the scope would wait for them forever.
        let _stop_on_unwind = StopOnDrop(&shared.stop, &shared.abort);
        // This thread reports progress until every stage has hung up, and
        // writes a stream's frames in order.
        let mut done = Vec::new();
        let mut failed = Vec::new();
        let mut kept = Vec::new();
        let mut halted = false;
        loop {
            let asked = Instant::now();
            let Ok(event) = events_rx.recv() else { break };
            // Writing a stream waits here for its next frame.
            if stream.is_some() {
                write_clock.wait_in += asked.elapsed();
            }
            match event {
                Event::Done(record) => {
                    finished += 1;
                    done.push(record);
                    progress(Progress::Done { finished, total, record: done.last().expect("just pushed") });
                }
                Event::Failed(failure) => {
                    finished += 1;
                    // Only a stream waits in order for the frames it skips.
                    if stream.is_some() {
                        reorder.insert(failure.number, None);
                    }
                    failed.push(failure);
                    progress(Progress::Failed { finished, total, failure: failed.last().expect("just pushed") });
                }
                Event::Kept(number) => {
                    finished += 1;
                    kept.push(number);
                    progress(Progress::Kept { finished, total, number });
                }
                Event::Encoded(record, bytes) => reorder.insert(record.number, Some((record, bytes))),
                Event::Abandoned(number) => {
                    abandoned_numbers.insert(number);
                    if stream.is_some() {
                        reorder.insert(number, None);
                    }
                }
            }
            let Some(out) = stream.as_deref_mut() else { continue };
            while let Some((number, item)) = reorder.pop() {
                match item {
                    // After a failure under `stop` (or a write error) nothing
                    // more goes out: the consumer must not get frames after a
                    // gap it was not told about.
                    // Nor after a panic or a lost device elsewhere.
                    // (Counted unwritten from the frames not written.)
                    Some(_) if halted || shared.aborted() => {}
                    Some((record, bytes)) => {
                        finished += 1;
                        let write = || out.write_all(&bytes).and_then(|()| out.flush());
                        match write_clock.work(shared.start, "write", 0, record.number, write) {
                            Ok(()) => {
                                done.push(record);
                                progress(Progress::Done { finished, total, record: done.last().expect("just pushed") });
                            }
                            Err(e) => {
                                halted = true;
                                shared.stop.store(true, Ordering::SeqCst);
                                failed.push(FrameFailure::new(record.number, &Error::stream(&e)));
                                let failure = failed.last().expect("just pushed");
                                progress(Progress::Failed { finished, total, failure });
                            }
                        }
                    }
                    None => halted |= job.on_error == ErrorPolicy::Stop || abandoned_numbers.contains(&number),
                }
                if let Some(window) = &shared.window {
                    window.advance(reorder.released());
                }
            }
        }
        reorder.abandon();
        // Every stage has hung up (normally, or a thread died outside its
        // per-frame guard): make sure the reader is not left waiting for a
        // slot or the stream window.
        shared.stop.store(true, Ordering::SeqCst);
        let join = |h: std::thread::ScopedJoinHandle<'_, Clock>| h.join().unwrap_or_else(|_| join_failed(shared));
        // A reader that died (or never started) dispatched an unknown
        // count: say none, and the run fails with the panic.
        let read = reader.map(|h| h.join().unwrap_or_else(|_| (join_failed(shared), 0)));
        let (mut clock, sent) = read.unwrap_or_default();
        // It hands out frame numbers (its time is the wait for decoders to
        // take them): the frames it handed out are its count.
        clock.frames = sent;
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
        if stream.is_some() {
            clocks.push(("write", vec![std::mem::take(&mut write_clock)]));
        }
        done.sort_by_key(|r| r.number);
        report.frames = done;
        report.failures.extend(failed);
        report.keep(kept);
    });

    let wall = start.elapsed().as_secs_f64();
    report.seconds = wall;
    report.frames_written = report.frames.len();
    report.fps = report.frames_written as f64 / wall.max(1e-9);
    report.list_unwritten(prepared.sequence.frames.iter().map(|f| f.number));
    report.cancelled = cancel.is_cancelled();
    report.vram_peak = watch.peak();
    report.rss_peak = peak_rss();
    report.occupancy = pool.occupancy().samples();
    report.slots_yielded = pool.retired();
    report.slots_regrown = pool.replenished();
    report.slot_wait_s = slot_wait.as_secs_f64() / slot_waiters.max(1) as f64;
    add_stages(&mut report, clocks, (pool.size(), ring.size()), wall);
    report.list_sources(shared.sources.into_inner().unwrap_or_else(|p| p.into_inner()));
    if let Some(error) = shared.fatal.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(error);
    }
    Ok(report)
}

/// Per-stage statistics from the workers' clocks, and the bottleneck: the
/// stage (other than the reader) busiest for its parallelism, whose
/// utilization is the run's efficiency. Call it once `frames_written` is
/// set.
///
/// `slots` and `ring` bound the decodes and the copies out at once (their
/// threads can do no more than the frame slots, and the readback buffers,
/// allow).
pub(crate) fn add_stages(
    report: &mut Report,
    clocks: Vec<(&'static str, Vec<Clock>)>,
    (slots, ring): (usize, usize),
    wall: f64,
) {
    for (name, workers) in clocks {
        let busy: f64 = workers.iter().map(|c| c.busy.as_secs_f64()).sum();
        let frames: usize = workers.iter().map(|c| c.frames).sum();
        let n = workers.len().max(1);
        // A decoder holds a slot while it decodes: fewer slots than
        // decoders means fewer decodes at once than threads. A copier
        // holds a readback buffer in the same way.
        let parallel = match name {
            "decode" => n.min(slots.max(1)),
            "readback" => n.min(ring.max(1)),
            _ => n,
        };
        report.stages.push(StageReport {
            name: name.into(),
            workers: n,
            parallel,
            frames,
            busy_s: busy,
            wait_input_s: workers.iter().map(|c| c.wait_in.as_secs_f64()).sum(),
            wait_output_s: workers.iter().map(|c| c.wait_out.as_secs_f64()).sum(),
            busy_ms_per_frame: if frames > 0 { busy * 1e3 / frames as f64 } else { 0.0 },
            utilization: busy / parallel as f64 / wall.max(1e-9),
        });
        report.intervals.extend(workers.into_iter().flat_map(|c| c.intervals));
    }
    // A run that wrote nothing has no throughput to explain, one frame at a
    // time nothing overlaps: no bottleneck.
    if report.frames_written == 0 || report.mode == "sequential" {
        return;
    }
    if let Some(b) = report
        .stages
        .iter()
        .filter(|s| s.name != "read" && s.frames > 0)
        .max_by(|a, b| a.utilization.total_cmp(&b.utilization))
    {
        report.bottleneck = b.name.clone();
        report.efficiency = b.utilization;
    }
}
