//! Run statistics and the JSON report.

use serde::Serialize;

/// Timings of one written frame.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct FrameRecord {
    /// Frame number.
    pub number: u64,
    /// Output path.
    pub output: String,
    /// Decode time, ms.
    pub decode_ms: f64,
    /// From the frame's submission to its result back in host memory, on
    /// the host clock, ms: upload, kernels and readback, and in a pipelined
    /// run the waits between them too (behind the other frame on the GPU,
    /// for a copier): a latency, not the stage's work (the stage's busy
    /// time is in `stages`; kernel time alone in `gpu_ms`).
    pub process_ms: f64,
    /// Kernel time from GPU timestamps, ms, where the adapter has them.
    pub gpu_ms: Option<f64>,
    /// Encode + write time, ms.
    pub encode_ms: f64,
    /// Bytes written.
    pub output_bytes: u64,
}

/// One failed frame.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct FrameFailure {
    /// Frame number.
    pub number: u64,
    /// Where it failed, for a farm's retry logic: a bad source stays bad
    /// on a re-run, a full disk or a lost device may not.
    pub kind: FailureKind,
    /// The one-line error.
    pub error: String,
}

impl FrameFailure {
    pub(crate) fn new(number: u64, error: &crate::Error) -> Self {
        FrameFailure { number, kind: FailureKind::of(error), error: error.to_string() }
    }
}

/// What a frame's failure was about: what to fix before the frame is run
/// again (with `--skip-existing`, only the frames not written are).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum FailureKind {
    /// The source frame: unreadable, corrupt, truncated, or of another
    /// size or format than the sequence. Re-running will not help until
    /// the file is replaced.
    Source,
    /// The output: it could not be encoded or written (a full disk, a
    /// folder's permissions, an output stream's reader gone).
    Output,
    /// The GPU: lost, or its memory (the VRAM budget) would not hold the
    /// frame's work.
    Gpu,
    /// The system, not the file: a read the OS failed or refused (too many
    /// open files, a network share's I/O error, a permission), a thread it
    /// would not start. A re-run may succeed once that is put right.
    System,
    /// A fault of framepipe's own (a stage panicked): worth a bug report.
    Internal,
}

impl FailureKind {
    /// The kind of a frame's error.
    pub fn of(error: &crate::Error) -> Self {
        use crate::Error as E;
        match error {
            E::Decode { .. } | E::FrameMismatch { .. } => FailureKind::Source,
            // A source gone, or cut short as it was read: the file's; any
            // other failed read is the system's.
            E::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData => {
                    FailureKind::Source
                }
                _ => FailureKind::System,
            },
            E::Thread { .. } => FailureKind::System,
            E::Encode { .. }
            | E::OutputExists(_)
            | E::OutputIsInput(_)
            | E::OutputNotFile(_)
            | E::OutputReadOnly(_)
            | E::OutputIsFolder(_)
            | E::OutputName { .. }
            | E::OutputDir { .. }
            | E::PathClash { .. }
            | E::Stream(_) => FailureKind::Output,
            // Of one frame, the only sequence error: under skip-existing,
            // its output found there and not a frame to keep.
            E::Sequence(_) => FailureKind::Output,
            E::Gpu(_) | E::NoGpu(_) | E::Budget(_) => FailureKind::Gpu,
            _ => FailureKind::Internal,
        }
    }
}

/// Time one pipeline stage spent working and waiting.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct StageReport {
    /// `read`, `decode`, `gpu`/`compute`, `readback`, `encode`, and `write`
    /// for a stream.
    pub name: String,
    /// Threads running the stage.
    pub workers: usize,
    /// How many of them can work at once: the workers, or fewer where
    /// each needs a frame slot (`decode`) or a readback buffer
    /// (`readback`) and there are fewer of those. `utilization` is per
    /// this many.
    pub parallel: usize,
    /// Items it handled.
    pub frames: usize,
    /// Seconds working, summed over workers.
    pub busy_s: f64,
    /// Seconds waiting for input, summed over workers.
    pub wait_input_s: f64,
    /// Seconds waiting to hand output on or held back by what is
    /// downstream (a full queue, a stream's reorder window for `read`, a
    /// free slot or previews at the gate for `decode`, the backend or VRAM
    /// for the GPU owner), summed over workers.
    pub wait_output_s: f64,
    /// Busy time per item, ms.
    pub busy_ms_per_frame: f64,
    /// Busy time ÷ (`parallel` × wall time).
    pub utilization: f64,
}

/// One stage working on one frame, for the timeline.
#[derive(Clone, Debug, Serialize)]
pub struct Interval {
    /// Stage name (one of a run's few, never allocated per frame).
    pub stage: &'static str,
    /// Worker index within the stage.
    pub worker: usize,
    /// Start, seconds since the run began.
    pub start: f64,
    /// End, seconds since the run began.
    pub end: f64,
    /// Frame number.
    pub frame: u64,
}

/// What a run did, for the summary line and `--json`.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct Report {
    /// Input as given.
    pub input: String,
    /// Output pattern, as given.
    pub output: String,
    /// Where the output writes, however it was spelt (its folder resolved,
    /// its frame field as `%0Nd`): how a resumed run knows this report is
    /// its own ([`output_identity`](crate::sequence::output_identity)).
    pub output_identity: String,
    /// The op graph, in words.
    pub ops: String,
    /// `gpu` or `cpu`.
    pub backend: String,
    /// Adapter or CPU description.
    pub device: String,
    /// Frames written.
    pub frames_written: usize,
    /// Frames that failed.
    pub failures: Vec<FrameFailure>,
    /// How many frames failed (`failures`' length, beside the other
    /// `frames_*` counts).
    pub frames_failed: usize,
    /// Frames neither written nor failed: never started after a stop or a
    /// cancel, or dropped in flight by one (`unwritten_list` says which).
    pub frames_unwritten: usize,
    /// Frames inside the range that are not on disk, left out with
    /// `--missing skip`: how many, and which (`5, 7-9`).
    pub frames_missing: u64,
    /// The missing numbers as a compact list; empty when none.
    pub missing_list: String,
    /// Frames whose output was already there, left as it was
    /// ([`Job::skip_existing`](crate::Job)): how many, and which.
    pub frames_existing: usize,
    /// The existing frames' numbers as a compact list; empty when none.
    pub existing_list: String,
    /// Frames neither written nor failed (a stop or a cancel ended the run
    /// first, in flight or never started) as a compact list: the ones to
    /// run again. Empty when none.
    pub unwritten_list: String,
    /// `missing_list`, `existing_list` and `unwritten_list` whole, as
    /// `--frames` specs (`1011-1059x2`): those lists name the first 20 runs
    /// for a reader; these name every frame, for a script.
    pub missing_frames: String,
    /// See [`Report::missing_frames`].
    pub existing_frames: String,
    /// The frames already there, ascending (those kept when the run began,
    /// and those whose output appeared during it).
    #[serde(skip)]
    pub(crate) existing: Vec<u64>,
    /// See [`Report::missing_frames`].
    pub unwritten_frames: String,
    /// The failed frames (`failures`) as a `--frames` spec: with
    /// `unwritten_frames`, what a farm queues again.
    pub failed_frames: String,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Of it, the seconds before the first frame could start: reading the
    /// first header, sizing and making the pool and the readback buffers
    /// (46 ms an 8K slot on the H100), building the kernels. No stage is
    /// busy then, so on a short run it is the wall time the stages'
    /// figures leave unexplained. 0 one frame at a time (set-up is the
    /// first frame's work there).
    pub setup_s: f64,
    /// Before the run (not in `seconds`): how long its engine took to open
    /// (finding the adapter, making the device: about 0.2 s on a
    /// software adapter), in the report of the engine's first run that
    /// returned one, 0 in later ones; and how long preparing the job took (scanning the
    /// sequence, checking the outputs). The CLI's summary names them, so
    /// frames/s of a short run is not read as its wall clock's.
    pub open_s: f64,
    /// See [`open_s`](Self::open_s).
    pub prepare_s: f64,
    /// Frames written per second of wall time.
    pub fps: f64,
    /// Frame size and the format frames are worked in, e.g. "7680x4320 RGBA8".
    pub frame: String,
    /// The first frame's source channels and depth ("RGB 8-bit", "grey
    /// 16-bit": [`FrameInfo::layout`](crate::io::FrameInfo::layout)), which
    /// its outputs keep where their format can; empty when none was read.
    pub sources: String,
    /// The sources are grey: worked as RGBA (`frame`), written grey where
    /// the ops leave them so (see [`EncodeOptions::grey`](crate::io::EncodeOptions)).
    pub grey_sources: bool,
    /// Frames whose sources hold 32-bit floats, clamped to 0..1 and read
    /// as 16 bits, as a compact list (`12-14`); empty when none.
    pub float_list: String,
    /// Frames whose sources' alpha is premultiplied (a TIFF's associated
    /// alpha), divided out as they were read, as a compact list; empty
    /// when none.
    pub premultiplied_list: String,
    /// Frames whose sources have other channels than the first frame's
    /// (grey or color, with or without alpha), of those the output format
    /// keeps: each output keeps its own source's, so the sequence's layout
    /// may change there (a color source stays color, though its pixels be
    /// grey). A compact list; empty when none.
    pub other_channels_list: String,
    /// Frames whose 8-bit sources were widened to the 16-bit sequence's
    /// depth (exactly: each value times 257), as a compact list; empty
    /// when none.
    pub deepened_list: String,
    /// Frames whose source files hold more images than the one read (a
    /// multi-page TIFF, an animated PNG), as a compact list; empty when
    /// none.
    pub more_images_list: String,
    /// Frames whose source files carry an ICC profile, which the outputs
    /// do not, as a compact list; empty when none.
    pub icc_profile_list: String,
    /// Frames whose source files carry an orientation (EXIF, TIFF) that
    /// is not applied, as a compact list; empty when none.
    pub oriented_list: String,
    /// Frames whose sources hold extra channels of no stated meaning (TIFF
    /// ExtraSamples 0: a saved selection, a matte), left out of the
    /// outputs, as a compact list; empty when none.
    pub unnamed_channels_list: String,
    /// Frames whose sources have alpha that the output format drops
    /// (JPEG), as a compact list; empty when none.
    pub alpha_dropped_list: String,
    /// Per-frame timings, by frame number.
    pub frames: Vec<FrameRecord>,
    /// `pipelined` or `sequential`.
    pub mode: String,
    /// Decode and encode threads, as set (the engine's count); a run of
    /// fewer frames starts fewer, one per frame: each stage's `workers`
    /// says how many ran.
    pub threads: usize,
    /// Frame slots in the pool.
    pub pool_size: usize,
    /// Ledger bytes of one slot.
    pub slot_bytes: u64,
    /// The VRAM budget, bytes.
    pub vram_budget: u64,
    /// Most GPU bytes held at once during this run (the ledger's high-water
    /// mark from the run's start, cached buffers of earlier work included).
    pub vram_peak: u64,
    /// Peak resident host memory of the process, bytes (Linux; 0 elsewhere).
    pub rss_peak: u64,
    /// Per-stage statistics.
    pub stages: Vec<StageReport>,
    /// The stage with the highest utilization, of those that worked on
    /// frames (not `read`, which only hands out frame numbers); empty when
    /// no frame was written, and for a sequential run (nothing overlaps).
    pub bottleneck: String,
    /// frames × bottleneck busy per frame ÷ its parallelism ÷ wall time;
    /// 0 without a bottleneck.
    pub efficiency: f64,
    /// Seconds a decode worker waited to start a frame it had: for a free
    /// slot, for its turn (frames start in read order) or for previews at
    /// the engine's gate, averaged over the workers; not waiting for work,
    /// not the stream's reorder window.
    pub slot_wait_s: f64,
    /// Slots given back during the run so that previews could have VRAM
    /// (the pool makes new ones once the previews are done).
    pub slots_yielded: usize,
    /// Slots made again once the previews were done with the memory.
    pub slots_regrown: usize,
    /// `(seconds, slots in use)` samples.
    pub occupancy: Vec<(f64, u32)>,
    /// Stage activity, for the timeline chart.
    pub intervals: Vec<Interval>,
    /// True when the run was cancelled.
    pub cancelled: bool,
}

/// Peak resident set size of this process in bytes (`VmHWM`), 0 where unknown.
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
        })
        .map_or(0, |kb| kb * 1024)
}

/// Start-up (opening the engine, preparing the job) the summary names from
/// this many seconds: a twentieth of a second shows on a wall clock.
const START_UP_SAID_FROM: f64 = 0.05;

impl Report {
    /// An empty report for `job` on `engine`, in `mode` (`pipelined` or
    /// `sequential`): the header fields every run fills in the same way.
    pub fn for_job(
        job: &crate::engine::Job,
        prepared: &crate::engine::PreparedJob,
        engine: &crate::engine::Engine,
        mode: &str,
    ) -> Self {
        let missing = &prepared.sequence.missing;
        let mut existing = prepared.existing.clone();
        existing.sort_unstable();
        let mut report = Report {
            frames_missing: crate::sequence::count_runs(missing),
            missing_list: crate::sequence::compact_runs(missing),
            existing,
            unwritten_list: String::new(),
            // The gaps are runs, never enumerated (a gap may be millions).
            missing_frames: crate::sequence::frame_spec(missing),
            unwritten_frames: String::new(),
            failed_frames: String::new(),
            input: job.input.clone(),
            output: job.output.clone(),
            output_identity: crate::sequence::output_identity(&job.output),
            ops: job.graph.describe(),
            backend: engine.backend_name().into(),
            device: engine.device_name().into(),
            mode: mode.into(),
            // Grey as read, written grey or not (a tint makes them RGB).
            grey_sources: job.encode.grey || prepared.first.is_some_and(|i| i.grey),
            sources: prepared.first.as_ref().map(crate::io::FrameInfo::layout).unwrap_or_default(),
            vram_budget: engine.ledger().budget(),
            open_s: engine.opened_s(),
            prepare_s: prepared.prepare_s,
            ..Default::default()
        };
        report.list_existing();
        report
    }

    /// Mean of a per-frame field over written frames, ms.
    pub fn mean_ms(&self, field: impl Fn(&FrameRecord) -> Option<f64>) -> Option<f64> {
        let v: Vec<f64> = self.frames.iter().filter_map(field).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }

    /// The end-of-run paragraph.
    pub fn summary(&self) -> String {
        // No frame decoded, no size to name. The size with the sources'
        // layout (what the outputs hold), not the RGBA they are worked as.
        let grey = if self.grey_sources { ", grey sources" } else { "" };
        let frame = match self.frame.split_once(' ') {
            _ if self.frame.is_empty() => String::new(),
            Some((size, _)) if !self.sources.is_empty() => format!(" ({size} {})", self.sources),
            _ => format!(" ({}{grey})", self.frame),
        };
        let mut s = format!(
            "{} frame{}{frame} written in {:.2} s, {:.2} frames/s, on the {} backend: {}.",
            self.frames_written,
            if self.frames_written == 1 { "" } else { "s" },
            self.seconds,
            self.fps,
            self.backend,
            self.device
        );
        if let (Some(d), Some(p), Some(e)) = (
            self.mean_ms(|f| Some(f.decode_ms)),
            self.mean_ms(|f| Some(f.process_ms)),
            self.mean_ms(|f| Some(f.encode_ms)),
        ) {
            // Pipelined, a frame's processing is a latency, waits between
            // its steps included: said as such.
            let waits = if self.mode == "pipelined" { " (waits included)" } else { "" };
            s += &format!(" Per frame: decode {d:.0} ms, process {p:.0} ms{waits}, encode {e:.0} ms");
            if let Some(g) = self.mean_ms(|f| f.gpu_ms) {
                s += &format!(" (GPU kernels {g:.2} ms)");
            }
            s += ".";
        }
        // The CPU backend's slots are host frames: no VRAM to speak of.
        let vram = if self.backend == "gpu" {
            let (peak, budget) = (self.vram_peak, self.vram_budget);
            format!("VRAM peak {} of {}", crate::ledger::human_bytes(peak), crate::ledger::human_bytes(budget))
        } else {
            "host frames, no VRAM".to_string()
        };
        let rss = crate::ledger::human_bytes(self.rss_peak);
        if self.mode == "sequential" && self.frames_written > 0 {
            // Nothing overlaps: no stage holds the others back.
            s += &format!(" One frame at a time: {vram}; host RSS peak {rss}.");
        } else if !self.bottleneck.is_empty() {
            s += &format!(
                " Bottleneck: {} ({:.0} % busy); pipeline efficiency {:.0} %; pool {} slot{}, {vram}; host RSS peak {rss}.",
                self.bottleneck,
                100.0 * self.stages.iter().find(|st| st.name == self.bottleneck).map_or(0.0, |st| st.utilization),
                100.0 * self.efficiency,
                self.pool_size,
                if self.pool_size == 1 { "" } else { "s" },
            );
        }
        // Start-up a short run's frames/s does not count, said where it
        // is enough to notice on a wall clock.
        if self.open_s + self.prepare_s >= START_UP_SAID_FROM {
            let parts: Vec<String> =
                [(self.open_s, "opening the backend"), (self.prepare_s, "checking the sequence and outputs")]
                    .into_iter()
                    .filter(|(s, _)| *s >= 0.005)
                    .map(|(s, what)| format!("{s:.2} s {what}"))
                    .collect();
            s += &format!(" Before the run: {}.", parts.join(", "));
        }
        if !self.failures.is_empty() {
            let mut numbers: Vec<u64> = self.failures.iter().map(|f| f.number).collect();
            numbers.sort_unstable();
            let list = crate::sequence::compact_runs(&crate::sequence::runs_of(numbers));
            let n = self.failures.len();
            s += &format!(" {n} frame{} failed: {list}.", if n == 1 { "" } else { "s" });
        }
        if self.frames_existing > 0 {
            let (n, list) = (self.frames_existing, &self.existing_list);
            s += &format!(
                " {n} frame{} already there, left as {}: {list}.",
                if n == 1 { "" } else { "s" },
                if n == 1 { "it was" } else { "they were" }
            );
        }
        if self.frames_missing > 0 {
            let (n, list) = (self.frames_missing, &self.missing_list);
            s += &format!(" {n} missing frame{} left out: {list}.", if n == 1 { "" } else { "s" });
        }
        if self.frames_unwritten > 0 {
            let n = self.frames_unwritten;
            s += &format!(" {n} frame{} not written: {}.", if n == 1 { "" } else { "s" }, self.unwritten_list);
        }
        s
    }

    /// Lists the frames whose sources `kinds` noted.
    pub(crate) fn list_sources(&mut self, kinds: SourceKinds) {
        let list = |mut numbers: Vec<u64>| {
            numbers.sort_unstable();
            crate::sequence::compact_runs(&crate::sequence::runs_of(numbers))
        };
        self.float_list = list(kinds.float);
        self.premultiplied_list = list(kinds.premultiplied);
        self.other_channels_list = list(kinds.other_channels);
        self.deepened_list = list(kinds.deepened);
        self.more_images_list = list(kinds.more_images);
        self.icc_profile_list = list(kinds.icc_profile);
        self.oriented_list = list(kinds.oriented);
        self.unnamed_channels_list = list(kinds.unnamed_channels);
        self.alpha_dropped_list = list(kinds.alpha_dropped);
    }

    /// Counts the frames `numbers`, whose outputs appeared during the run
    /// (under [`crate::Job::skip_existing`]), with the frames already there.
    pub(crate) fn keep(&mut self, numbers: Vec<u64>) {
        if numbers.is_empty() {
            return;
        }
        self.existing.extend(numbers);
        self.existing.sort_unstable();
        self.list_existing();
    }

    /// Fills the counts and lists of the frames already there.
    fn list_existing(&mut self) {
        self.frames_existing = self.existing.len();
        self.existing_list = crate::sequence::compact_runs(&crate::sequence::runs_of(self.existing.iter().copied()));
        self.existing_frames = crate::sequence::stepped_spec(&self.existing);
    }

    /// Fills [`Report::unwritten_list`] and [`Report::frames_unwritten`]
    /// from the job's frame numbers (ascending) and what was written,
    /// failed or kept, and [`Report::failed_frames`] and
    /// [`Report::frames_failed`].
    pub(crate) fn list_unwritten(&mut self, job_frames: impl IntoIterator<Item = u64>) {
        let mut failed: Vec<u64> = self.failures.iter().map(|f| f.number).collect();
        failed.sort_unstable();
        failed.dedup();
        self.failed_frames = crate::sequence::stepped_spec(&failed);
        self.frames_failed = self.failures.len();
        let done: std::collections::HashSet<u64> = (self.frames.iter().map(|f| f.number))
            .chain(self.failures.iter().map(|f| f.number))
            .chain(self.existing.iter().copied())
            .collect();
        let left: Vec<u64> = job_frames.into_iter().filter(|n| !done.contains(n)).collect();
        // Counted from the list itself: frames dropped anywhere (in a
        // channel a stopped stage left, a halted stream's) are in it.
        self.frames_unwritten = left.len();
        self.unwritten_list = crate::sequence::compact_runs(&crate::sequence::runs_of(left.iter().copied()));
        self.unwritten_frames = crate::sequence::stepped_spec(&left);
    }
}

/// The frames whose sources were converted on reading in ways the notices
/// speak of (floats clamped, premultiplied alpha divided out): the first
/// frame's header says what the run starts with, not what a later frame
/// of another kind holds.
#[derive(Debug, Default)]
pub(crate) struct SourceKinds {
    float: Vec<u64>,
    premultiplied: Vec<u64>,
    /// Which of (grey, alpha) a source passes on to its output.
    carried: (bool, bool),
    /// The first frame's output channels (grey, alpha), and the frames
    /// whose outputs have others.
    first: Option<(bool, bool)>,
    other_channels: Vec<u64>,
    /// The first frame's depth, and the frames of less, widened to it.
    depth: Option<crate::io::PixelFormat>,
    deepened: Vec<u64>,
    more_images: Vec<u64>,
    icc_profile: Vec<u64>,
    oriented: Vec<u64>,
    unnamed_channels: Vec<u64>,
    /// The output format has no alpha (JPEG), and the frames whose
    /// sources' alpha it drops.
    drops_alpha: bool,
    alpha_dropped: Vec<u64>,
}

impl SourceKinds {
    /// For a prepared job, whose first frame is the one others are
    /// compared with.
    pub(crate) fn new(prepared: &crate::engine::PreparedJob) -> Self {
        let carried =
            (prepared.encode_for(true).grey && prepared.format.stores_grey(), prepared.format.alpha_per_frame());
        let drops_alpha = prepared.format == crate::io::OutputFormat::Jpeg;
        let mut kinds = SourceKinds { carried, drops_alpha, ..Default::default() };
        kinds.first = prepared.first.as_ref().map(|i| kinds.channels(i));
        kinds.depth = prepared.first.as_ref().map(|i| i.format);
        kinds
    }

    fn channels(&self, info: &crate::io::FrameInfo) -> (bool, bool) {
        (info.grey && self.carried.0, info.has_alpha && self.carried.1)
    }

    /// Notes frame `number`, whose header reads `info`.
    pub(crate) fn note(&mut self, number: u64, info: &crate::io::FrameInfo) {
        if info.float {
            self.float.push(number);
        }
        if info.premultiplied {
            self.premultiplied.push(number);
        }
        for (set, list) in [
            (info.more_images, &mut self.more_images),
            (info.icc_profile, &mut self.icc_profile),
            (info.oriented, &mut self.oriented),
            (info.unnamed_channels > 0, &mut self.unnamed_channels),
            (info.has_alpha && self.drops_alpha, &mut self.alpha_dropped),
        ] {
            if set {
                list.push(number);
            }
        }
        if self.first.is_some_and(|first| first != self.channels(info)) {
            self.other_channels.push(number);
        }
        if self.depth.is_some_and(|depth| depth != info.format) {
            self.deepened.push(number);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    /// What a farm reads to decide whether to run a frame again.
    #[test]
    fn failures_are_told_by_what_failed() {
        let io = |kind| Error::Io { path: "s_0001.png".into(), source: std::io::Error::from(kind) };
        let cases = [
            (Error::Decode { path: "s.png".into(), reason: "truncated".into() }, FailureKind::Source),
            (io(std::io::ErrorKind::NotFound), FailureKind::Source),
            (io(std::io::ErrorKind::PermissionDenied), FailureKind::System),
            (Error::Io { path: "s.png".into(), source: std::io::Error::other("EIO") }, FailureKind::System),
            (Error::Encode { path: "o.png".into(), reason: "disk full".into() }, FailureKind::Output),
            (Error::stream(&std::io::Error::from(std::io::ErrorKind::BrokenPipe)), FailureKind::Output),
            (Error::Gpu("device lost".into()), FailureKind::Gpu),
            (Error::Panic("decode stage panicked".into()), FailureKind::Internal),
        ];
        for (error, kind) in cases {
            assert_eq!(FrameFailure::new(7, &error).kind, kind, "{error}");
        }
    }
}
