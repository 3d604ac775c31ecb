//! The stage threads of one pipelined run, each a loop over its input
//! channel (see the module docs for the picture).

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::clock::Clock;
use super::slots::start_frame;
use super::{Decoded, Event, Finished, GPU_DEPTH, Processed, Shared, SlotKind, Stage, StopOnPanic, Work};

/// Bytes of 8-bit samples an 8-bit frame of a 16-bit run is widened at a
/// time on its way into a GPU slot.
const DEEPEN_BATCH: usize = 256 << 10;
use crate::backend::Backend;
use crate::engine::{Engine, PreparedJob};
use crate::error::{Error, Result};
use crate::gpu::{FrameShape, InFlight, Readback};
use crate::io::{
    Buffers, FrameInfo, HostFrame, decode_file_with, decode_with_buffers, encode_frame, write_frame_atomic_unless,
};
use crate::ops::process_cpu;
use crate::pool::{Lease, Pool};
use crate::preview::TraceEvent;
use crate::priority::Priority;
use crate::report::FrameRecord;

/// What every stage thread of one run shares.
#[derive(Clone, Copy)]
pub(super) struct Ctx<'a> {
    pub(super) engine: &'a Engine,
    pub(super) shared: &'a Shared<'a>,
    pub(super) prepared: &'a PreparedJob,
    pub(super) pool: &'a Pool<SlotKind>,
    pub(super) ring: &'a Pool<Readback>,
    /// The shape every frame must have.
    pub(super) shape: FrameShape,
    /// Ledger bytes of one slot.
    pub(super) slot_bytes: u64,
    /// The compute stage: `gpu`, `compute` (CPU kernels), or none (no ops:
    /// decoders hand frames straight to the encoders).
    pub(super) compute_name: Option<&'static str>,
    /// Whether slots are GPU staging (else host permits).
    pub(super) gpu_slots: bool,
}

impl Ctx<'_> {
    /// Hands the frames to the decoders in order, as far as a stream's
    /// window allows. Returns its clock and how many it sent.
    pub(super) fn read(self, work: Vec<(u64, PathBuf, PathBuf)>, decode_tx: Sender<Work>) -> (Clock, usize) {
        let shared = self.shared;
        let _stop_on_panic = StopOnPanic(shared);
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
    }

    /// A decode worker: takes a slot for each frame (in read order), decodes
    /// into it, and passes the frame on. Returns its clock and the time it
    /// waited to start frames.
    pub(super) fn decode(
        self,
        worker: usize,
        rx: Receiver<Work>,
        to_compute: Sender<Decoded>,
        to_encode: Sender<Processed>,
        events: Sender<Event>,
    ) -> (Clock, Duration) {
        let Ctx { engine, shared, pool, shape, slot_bytes, compute_name, gpu_slots, .. } = self;
        let _stop_on_panic = StopOnPanic(shared);
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
            // Held back by what is downstream (no free slot) or by
            // previews: waiting on output, not on work to do.
            slot_wait += asked.elapsed();
            clock.wait_out += asked.elapsed();
            let slot = match slot {
                Ok(Some(slot)) => slot,
                // Stopped or cancelled: frames not yet started are dropped.
                Ok(None) => {
                    let _ = events.send(Event::Abandoned(number));
                    continue;
                }
                Err(payload) => {
                    let msg = crate::error::panic_message(&*payload);
                    let e = Error::Panic(format!("{:?} stage panicked on frame {number}: {msg}", Stage::Start));
                    shared.fail(&events, number, e);
                    shared.next_turn.notify_all();
                    continue;
                }
            };
            // Written meanwhile by another run (a farm's retried task):
            // under skip-existing, kept without the work, if it reads as
            // this render's frame (anything else there is left for the
            // rename to find). Looked at once its turn came, so the frames
            // after it start in order.
            if shared.prepared.appeared(shared.job, &output) {
                drop(slot);
                let _ = events.send(Event::Kept(number));
                continue;
            }
            let t0 = Instant::now();
            let result = clock.work(shared.start, "decode", worker, number, || {
                shared.guarded(Stage::Decode, number, || self.decode_into(&slot, (number, &input)))
            });
            let decode_ms = t0.elapsed().as_secs_f64() * 1e3;
            match result {
                Ok((frame, grey)) if compute_name.is_some() => {
                    let d = Decoded { number, output, frame, grey, slot, decode_ms };
                    if !forward(&mut clock, &to_compute, d, number, &events) {
                        break;
                    }
                }
                Ok((frame, grey)) => {
                    drop(slot);
                    let p = Processed { number, output, frame, grey, decode_ms, process_ms: 0.0, gpu_ns: None };
                    if !forward(&mut clock, &to_encode, p, number, &events) {
                        break;
                    }
                }
                Err(e) => shared.fail(&events, number, e),
            }
        }
        (clock, slot_wait)
    }

    /// Decodes `input` into `slot`: straight into a GPU slot's mapped
    /// upload, in pieces (the frame it returns then has no pixels of its
    /// own), or into a host buffer (one an encoder gave back, where there
    /// is one). A frame of another shape than the run's is refused before
    /// anything is written. A frame read whole is noted among the run's
    /// sources of its kind. With the frame, whether its source is grey.
    fn decode_into(self, slot: &SlotKind, (number, input): (u64, &std::path::Path)) -> Result<(HostFrame, bool)> {
        let shape = self.shape;
        let header = std::cell::Cell::new(None);
        let deepen = std::cell::Cell::new(false);
        let check = |i: &FrameInfo| {
            let got = FrameShape::of_info(i);
            header.set(Some(*i));
            match shape.admits(got) {
                Some(widened) => {
                    deepen.set(widened);
                    Ok(())
                }
                None => Err(Error::FrameMismatch {
                    path: input.to_owned(),
                    got: got.in_words(),
                    expected: shape.in_words(),
                }),
            }
        };
        let frame = self.decode_checked(slot, input, check, &deepen)?;
        if let Some(info) = header.get() {
            crate::lock(&self.shared.sources).note(number, &info);
        }
        Ok((frame, header.get().is_some_and(|i| i.grey)))
    }

    /// [`Self::decode_into`] with `check` for the header, which sets
    /// `deepen` for an 8-bit frame of a 16-bit run: its samples are
    /// widened as they come.
    fn decode_checked(
        self,
        slot: &SlotKind,
        input: &std::path::Path,
        check: impl FnOnce(&FrameInfo) -> Result<()>,
        deepen: &std::cell::Cell<bool>,
    ) -> Result<HostFrame> {
        let (shape, spares) = (self.shape, &self.shared.spares);
        let limits = &self.shared.job.limits;
        match slot {
            SlotKind::Gpu(s) => {
                let mut w = s.writer()?;
                // A piece that does not fit is the file's fault, not the GPU's.
                let mut deep = Vec::new();
                let write = |at: usize, px: &[u8]| {
                    let fail = |e: Error| Error::Decode { path: input.to_owned(), reason: e.to_string() };
                    if !deepen.get() {
                        return w.write(at, px).map_err(fail);
                    }
                    // In batches through one buffer: a piece of the whole
                    // frame (a TIFF's, a QOI's) is not copied whole at
                    // twice its size.
                    for (k, part) in px.chunks(DEEPEN_BATCH).enumerate() {
                        deep.resize(2 * part.len(), 0);
                        crate::io::deepen(part, &mut deep);
                        w.write(2 * (at + k * DEEPEN_BATCH), &deep).map_err(fail)?;
                    }
                    Ok(())
                };
                let info = decode_with_buffers(input, limits, spares, check, write)?;
                let (width, height, format) = (shape.width, shape.height, shape.format);
                Ok(HostFrame { width, height, format, has_alpha: info.has_alpha, data: Vec::new() })
            }
            SlotKind::Host => {
                let frame = decode_file_with(input, limits, spares, check)?;
                Ok(if deepen.get() { frame.deepened(spares) } else { frame })
            }
        }
    }

    /// The thread that owns the compute stage: on the GPU it keeps up to
    /// [`GPU_DEPTH`] frames in flight and hands finished ones to the
    /// copiers; the CPU backend runs the kernels here.
    pub(super) fn compute(
        self,
        name: &'static str,
        compute_rx: Receiver<Decoded>,
        to_encode: Sender<Processed>,
        to_readback: Sender<Finished>,
        events: Sender<Event>,
    ) -> Clock {
        let Ctx { engine, shared, ring, shape, gpu_slots, .. } = self;
        let _stop_on_panic = StopOnPanic(shared);
        let mut clock = Clock::default();
        let mut broken = false;
        // Frames on the GPU, oldest first: a new frame is submitted
        // whenever there is room and one is ready, and only when
        // none is does this thread wait for the oldest. While an editor
        // is previewing, the room is one frame: its previews queue
        // behind less export work.
        // (The flight comes first: should this thread unwind, it is
        // waited for before its slot and readback go back.)
        let mut flights: VecDeque<(InFlight, Decoded, Lease<Readback>, Instant)> = VecDeque::new();
        // A frame refused for memory, or for want of a free readback
        // buffer, while others were on the GPU: it goes again once
        // they are done.
        let mut pending: Option<Decoded> = None;
        // When this thread first saw the run stopping while it waited for a
        // readback buffer, since the ring last gave one: the minute it
        // gives a stuck ring counts from there, once per run, not once per
        // frame, while a ring that still turns (slow encoders draining)
        // starts it again.
        let mut stopped: Option<Instant> = None;
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
            } else if flights.len() >= GPU_DEPTH || (!flights.is_empty() && engine.previews_live()) {
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
                if broken || shared.cancel.is_cancelled() || shared.aborted() {
                    // Drain without touching a failed device, or
                    // drop what a cancelled or aborted run has not started.
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
                            stopped = None;
                            break Some(r);
                        }
                        // A stopped run still drains the frames it
                        // decoded (the copiers free the ring, once the
                        // encoders take their frames: seconds each at
                        // 8K, 16-bit, a slow PNG setting); only a cancel,
                        // or a ring still full a minute after a stop (a
                        // copier that can never free it), drops this one.
                        if shared.stopping() {
                            stopped.get_or_insert_with(Instant::now);
                        }
                        let stuck = stopped.is_some_and(|t| t.elapsed() > Duration::from_secs(60));
                        if shared.cancel.is_cancelled() || shared.aborted() || stuck {
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
                clock.discount(waited);
                match result {
                    Ok(Submitted::Gpu(flight)) => {
                        engine.trace(TraceEvent::ExportOnGpu(d.number));
                        flights.push_back((flight, d, readback.expect("GPU frames have one"), t0))
                    }
                    Ok(Submitted::Done(frame)) => {
                        // The source's buffer is dropped: the kernels made
                        // a new one for the output, which the encoder gives
                        // back, so takes and gives stay even.
                        let Decoded { number, output, grey, slot, decode_ms, .. } = d;
                        drop(slot);
                        let process_ms = t0.elapsed().as_secs_f64() * 1e3;
                        let p = Processed { number, output, frame, grey, decode_ms, process_ms, gpu_ns: None };
                        if !forward(&mut clock, &to_encode, p, number, &events) {
                            break;
                        }
                    }
                    Err(Error::Budget(_)) if !may_wait => {
                        // Counted when it is submitted.
                        clock.undo_last();
                        pending = Some(d);
                    }
                    // It stopped waiting for memory because the run stopped:
                    // never processed, so not counted as a frame.
                    Err(Error::Budget(_)) if shared.stopping() => {
                        clock.undo_last();
                        abandon(d);
                    }
                    // Cancelled while it waited for the backend: never started.
                    Err(Error::Cancelled) => {
                        clock.undo_last();
                        abandon(d);
                    }
                    Err(e) => {
                        broken = matches!(e, Error::Panic(_) | Error::Gpu(_));
                        shared.fail(&events, d.number, e);
                    }
                }
                continue;
            }
            let Some((flight, d, readback, t0)) = flights.pop_front() else { continue };
            if broken || shared.aborted() {
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
                    engine.trace(TraceEvent::ExportOffGpu(number));
                    let Decoded { number, output, frame, grey, slot, decode_ms } = d;
                    // The GPU is done with the upload: the slot can take
                    // the next frame while the result is copied out.
                    drop(slot);
                    let has_alpha = frame.has_alpha;
                    let f = Finished { number, output, has_alpha, grey, readback, decode_ms, t0, gpu_ns };
                    if !forward(&mut clock, &to_readback, f, number, &events) {
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
    }

    /// A copier: takes finished frames out of their readback buffers (and
    /// frees them) for the encoders.
    pub(super) fn copy_out(
        self,
        worker: usize,
        rx: Receiver<Finished>,
        to_encode: Sender<Processed>,
        events: Sender<Event>,
    ) -> Clock {
        let Ctx { shared, shape, .. } = self;
        let _stop_on_panic = StopOnPanic(shared);
        let mut clock = Clock::default();
        while let Some(f) = clock.recv(&rx) {
            let Finished { number, output, has_alpha, grey, readback, decode_ms, t0, gpu_ns } = f;
            if shared.aborted() {
                let _ = events.send(Event::Abandoned(number));
                continue;
            }
            let result = clock.work(shared.start, "readback", worker, number, || {
                shared.guarded(Stage::Readback, number, || {
                    let mut data = Buffers::take(&shared.spares, shape.frame_bytes() as usize);
                    readback.take_result_into(&mut data).map(|()| data)
                })
            });
            drop(readback); // the frame is back in host memory: free the buffer
            match result {
                Ok(data) => {
                    let frame =
                        HostFrame { width: shape.width, height: shape.height, format: shape.format, has_alpha, data };
                    let process_ms = t0.elapsed().as_secs_f64() * 1e3;
                    let p = Processed { number, output, frame, grey, decode_ms, process_ms, gpu_ns };
                    if !forward(&mut clock, &to_encode, p, number, &events) {
                        break;
                    }
                }
                Err(e) => shared.fail(&events, number, e),
            }
        }
        clock
    }

    /// An encoder: writes each frame atomically, or encodes it for the
    /// stream (the progress thread writes it in order).
    pub(super) fn encode(self, worker: usize, rx: Receiver<Processed>, events: Sender<Event>) -> Clock {
        let Ctx { engine, shared, prepared, .. } = self;
        let _stop_on_panic = StopOnPanic(shared);
        let mut clock = Clock::default();
        while let Some(p) = clock.recv(&rx) {
            let number = p.number;
            if shared.aborted() {
                let _ = events.send(Event::Abandoned(number));
                continue;
            }
            let t0 = Instant::now();
            let result = clock.work(shared.start, "encode", worker, number, || {
                shared.guarded(Stage::Encode, number, || {
                    let job = shared.job;
                    let options = prepared.encode_for(p.grey);
                    if prepared.stream {
                        encode_frame(p.frame, prepared.format, &options, &p.output).map(|b| Some(Some(b)))
                    } else {
                        // A failure elsewhere while this frame encoded (a
                        // PNG takes seconds): it is not written after it.
                        let (frame, format, overwrite) = (p.frame, prepared.format, job.overwrite);
                        let written =
                            write_frame_atomic_unless(&frame, &p.output, format, &options, overwrite, &|| {
                                shared.aborted()
                            });
                        Buffers::give(&shared.spares, frame.data);
                        written.map(|written| written.then_some(None))
                    }
                })
            });
            match result {
                Ok(None) => {
                    let _ = events.send(Event::Abandoned(number));
                }
                Ok(Some(bytes)) => {
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
    }
}

/// What submitting a frame gives: GPU work under way, or (CPU backend)
/// the finished frame.
enum Submitted {
    Gpu(InFlight),
    Done(HostFrame),
}

/// Submits one decoded frame under the export's priority: on the GPU it
/// returns at once; the CPU backend runs the kernels here. When previews
/// have taken the budget, waits for memory if `may_wait` (for as long as
/// previews hold memory they will give back, else up to 10 s, and only
/// that after a stop; never past a cancel); else the caller first finishes the frames it has on the GPU
/// (they free nothing while they wait).
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
        let mark = engine.ledger().mark();
        let mut backend = engine.backend().lock(Priority::Export);
        waited += asked.elapsed();
        // Cancelled (or aborted) while previews held the backend: the
        // frame has not started, and is dropped as one not yet taken.
        if shared.cancel.is_cancelled() || shared.aborted() {
            return (Err(Error::Cancelled), waited);
        }
        let r = shared.guarded(Stage::Compute, d.number, || match (&mut *backend, &*d.slot, readback) {
            (Backend::Gpu(g), SlotKind::Gpu(s), Some(r)) => Ok(Submitted::Gpu(g.submit(s, r, &shared.plan)?)),
            (_, _, _) => {
                debug_assert_eq!(FrameShape::of(&d.frame), shape);
                Ok(Submitted::Done(engine.on_cpu_threads(|| process_cpu(&d.frame, &shared.plan))))
            }
        });
        drop(backend);
        match r {
            // A stopped run still drains the frames it started: this one
            // waits out its deadline, though no longer for an editor's
            // previews to go quiet (which may be never).
            Err(Error::Budget(_))
                if may_wait
                    && !shared.cancel.is_cancelled()
                    && !shared.aborted()
                    && (Instant::now() < deadline || (engine.preview_memory_held() && !shared.stopping())) =>
            {
                // Memory an editor left idle is given back (this run's
                // kernel set stays); frames on the GPU free theirs as
                // they land.
                // Reclaiming waits for the backend behind previews: time
                // held back, as the wait for memory is.
                let since = mark.since();
                let asked = Instant::now();
                engine.reclaim_preview_memory(Some((shape, &shared.plan)));
                engine.ledger().wait_release(since, Duration::from_millis(250));
                waited += asked.elapsed();
            }
            r => return (r, waited),
        }
    }
}

/// Passes a frame to the next stage; when that stage is gone (it reported
/// why), reports the frame dropped, so a stream does not wait for it, and
/// returns false.
fn forward<T>(clock: &mut Clock, tx: &Sender<T>, v: T, number: u64, events: &Sender<Event>) -> bool {
    if clock.send(tx, v) {
        return true;
    }
    let _ = events.send(Event::Abandoned(number));
    false
}
