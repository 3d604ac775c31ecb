//! Previews for editors: a frame of a sequence, graded, at full, 1/2, 1/4
//! or 1/8 resolution, served from an LRU cache and rendered ahead of any
//! export running on the same engine.
//!
//! A miss decodes the source (or takes it from the decoded-source cache, or
//! waits for the request already decoding it, so dragging a grade slider on
//! one frame never decodes twice), runs the plan
//! at full resolution, area-averages it on the GPU and reads back only the
//! small image (a 1/4 preview reads back 1/16 of the bytes). The backend is
//! taken at preview priority, so a waiting preview goes before every
//! export frame that is not already on the GPU; the decode happens on the
//! requesting thread (the caller's, or its view's or async preview's own),
//! never queued behind the export's decoders. When the
//! VRAM budget is full, the export hands slots back until the preview fits.
//!
//! After each request the engine prefetches the next few frames in the
//! direction the playhead moved, at prefetch priority (below previews,
//! above exports); a jump cancels what is still queued. Each
//! [`PreviewView`] (a viewer, a thumbnail strip) has a playhead of its own,
//! as do the engine's own [`Engine::preview`] calls, so one does not turn
//! another's or cancel its prefetches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};
use rayon::prelude::*;

use crate::backend::Backend;
use crate::cache::{ByteLru, CacheStats};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::gpu::{FrameShape, GpuBackend, GpuSlot, SetHold};
use crate::io::{HostFrame, decode_file, probe_file};
use crate::lock;
use crate::ops::{OpGraph, process_cpu};
use crate::priority::{Class, GateGuard, Intent, Priority};
use crate::sequence::Sequence;

/// Preview resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Scale {
    /// Full resolution.
    Full,
    /// 1/2 in each direction.
    Half,
    /// 1/4 in each direction.
    Quarter,
    /// 1/8 in each direction.
    Eighth,
}

impl Scale {
    /// Pixels per output pixel along each axis.
    pub fn factor(self) -> u32 {
        match self {
            Scale::Full => 1,
            Scale::Half => 2,
            Scale::Quarter => 4,
            Scale::Eighth => 8,
        }
    }
}

/// A finished preview: RGBA8, ready to display. Its timings are those of
/// the render that made it: a cache hit, or a request that joined a render
/// under way, returns that same image (shared, not copied), so time a
/// request on its caller's clock to see what it cost.
#[derive(Clone)]
#[non_exhaustive]
pub struct PreviewImage {
    /// Frame number.
    pub frame: u64,
    /// Scale it was rendered at.
    pub scale: Scale,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// RGBA8 pixels, row-major.
    pub data: Vec<u8>,
    /// Decode time (0 when the source was cached), ms.
    pub decode_ms: f64,
    /// Time spent waiting for the backend (export frames already on it) or
    /// for budget an export held, ms.
    pub wait_ms: f64,
    /// Host copy of the source into the upload staging buffer, ms (0 when
    /// the GPU slot still held this source, and on the CPU backend).
    pub upload_ms: f64,
    /// Render time on the host clock once the backend was held (upload,
    /// kernels, readback and the copy out), ms.
    pub render_ms: f64,
    /// Kernel time from GPU timestamps, ms, where available.
    pub gpu_ms: Option<f64>,
    /// From submission until the result was mapped, ms (0 on the CPU
    /// backend): the source's copy onto the GPU, the kernels, the small
    /// image's copy back, and any GPU work queued ahead of it (one queue,
    /// in order: an export's frames). The rest of `render_ms` less
    /// `upload_ms` is the host's: setting up, submitting, the copy out.
    pub on_gpu_ms: f64,
}

impl std::fmt::Debug for PreviewImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every field named: a new one must be added here too.
        let PreviewImage {
            frame,
            scale,
            width,
            height,
            data,
            decode_ms,
            wait_ms,
            upload_ms,
            render_ms,
            gpu_ms,
            on_gpu_ms,
        } = self;
        f.debug_struct("PreviewImage")
            .field("frame", frame)
            .field("scale", scale)
            .field("width", width)
            .field("height", height)
            .field("data", &crate::io::ByteCount(data))
            .field("decode_ms", decode_ms)
            .field("wait_ms", wait_ms)
            .field("upload_ms", upload_ms)
            .field("render_ms", render_ms)
            .field("gpu_ms", gpu_ms)
            .field("on_gpu_ms", on_gpu_ms)
            .finish()
    }
}

/// Counters of the preview machinery.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
#[non_exhaustive]
pub struct PreviewStats {
    /// The finished-preview cache.
    pub previews: CacheStats,
    /// The decoded-source cache.
    pub sources: CacheStats,
    /// Frames rendered (GPU or CPU work done), previews and prefetches.
    pub renders: u64,
    /// Source frames decoded from disk.
    pub decodes: u64,
    /// Source frames copied into the GPU's upload staging: a re-grade of
    /// the frame it already holds (a slider drag) needs no copy.
    pub uploads: u64,
    /// Frames rendered by prefetch.
    pub prefetched: u64,
    /// Preview requests that found their frame being rendered (by a
    /// prefetch, or another thread) and waited for it: counted as misses,
    /// though they did no work of their own.
    pub joined: u64,
    /// Prefetches dropped from the queue, or stopped on their way, because
    /// nobody would ask for them any more: the playhead jumped or turned,
    /// the grade or scale changed, its view went (or its playhead was
    /// dropped for a newer place's), or the engine's last caller went.
    pub prefetch_cancelled: u64,
}

/// How [`Engine::preview`] got its image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Served {
    /// In the cache on arrival.
    Hit,
    /// Rendered by someone else (a prefetch) while this request waited.
    Joined,
    /// Rendered by this request.
    Rendered,
}

/// What the tests and the editor example instrument. The export's events
/// come from pipelined runs ([`Engine::run`](crate::Engine::run)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TraceEvent {
    /// An export frame started decoding.
    ExportDecodeStart(u64),
    /// An export frame was submitted to the GPU.
    ExportOnGpu(u64),
    /// The GPU finished an export frame (not recorded for frames a failed
    /// or aborted run drops).
    ExportOffGpu(u64),
    /// An export frame was written.
    ExportFrameDone(u64),
    /// A preview was asked for.
    PreviewRequested(u64),
    /// A preview was returned.
    PreviewDone(u64),
}

/// Which bytes a frame's file holds, as far as the file system says: its
/// path, length and modification time, and where the platform has them
/// its inode and status-change time. A plate re-rendered under the same
/// name gets a new stamp, so neither cache serves what the old file made:
/// a renderer that writes a new file and renames it brings a new inode
/// (even at the same length within the mtime's granularity, a second on
/// some network shares), and a copy over it that keeps the old mtime
/// (`cp -p`, `rsync -t`) a new ctime. Only a rewrite in place at the same
/// length within one tick of the clock goes unseen.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FileStamp {
    path: std::path::PathBuf,
    len: u64,
    modified: Option<std::time::SystemTime>,
    changed: Option<(u64, u64, i64, i64)>,
}

impl FileStamp {
    /// The stamp of `frame`'s file now.
    fn of(sequence: &Sequence, frame: u64) -> Result<Self> {
        Self::at(frame_path(sequence, frame)?)
    }

    /// The stamp of the file at `path` now.
    fn at(path: std::path::PathBuf) -> Result<Self> {
        // A file gone or unreadable since the scan: the I/O error a frame's
        // decode would give (as an export meets it), not a decode failure.
        let meta = std::fs::metadata(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
        #[cfg(unix)]
        let changed = {
            use std::os::unix::fs::MetadataExt;
            Some((meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec()))
        };
        #[cfg(not(unix))]
        let changed = None;
        Ok(FileStamp { path, len: meta.len(), modified: meta.modified().ok(), changed })
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct PreviewKey {
    file: FileStamp,
    frame: u64,
    graph: GradeKey,
    scale: Scale,
}

/// A grade as a key: its ops written out in full, so two grades share a
/// key only when every op and parameter is the same (a hash alone could
/// collide and serve another grade's image).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct GradeKey(Arc<str>);

impl GradeKey {
    /// -0.0 is written as 0.0: the same grade (a slider crossing zero as
    /// `-x * step`) is the same key, not a render and a cache entry again.
    fn of(graph: &OpGraph) -> Self {
        fn positive_zero(v: &mut serde_json::Value) {
            match v {
                serde_json::Value::Number(n) if n.as_f64() == Some(0.0) => *v = serde_json::Value::from(0.0),
                serde_json::Value::Array(a) => a.iter_mut().for_each(positive_zero),
                serde_json::Value::Object(o) => o.values_mut().for_each(positive_zero),
                _ => {}
            }
        }
        let mut ops = serde_json::to_value(&graph.ops).expect("ops serialise");
        positive_zero(&mut ops);
        GradeKey(ops.to_string().into())
    }
}

/// Where the last request of one place (a [`PreviewView`], or the
/// engine's own [`Engine::preview`] calls) was, which way it moved, and how
/// far ahead prefetches are queued. Places are positions in the sequence's
/// frame list, not frame numbers: a shot on twos (`1-100x2`) or with gaps
/// steps from one frame to the next that exists.
struct Playhead {
    place: u64,
    source: String,
    /// The grade and scale prefetches are queued with.
    graph: GradeKey,
    scale: Scale,
    /// The last request's frame, and its position in that request's list.
    frame: u64,
    at: i128,
    step: i128,
    queued_until: i128,
    /// Moves when what this playhead queued is cancelled.
    generation: Arc<AtomicU64>,
    /// The number of the request that last moved it: an older one that
    /// reaches it late (async previews, each on a thread of its own) does
    /// not move it back.
    ticket: u64,
}

impl Playhead {
    /// A place seen for the first time, or after a jump, by the `ticket`th
    /// request: no direction yet.
    fn new(
        (place, ticket): (u64, u64),
        source: String,
        (graph, scale): (GradeKey, Scale),
        (frame, at): (u64, i128),
    ) -> Self {
        let generation = Arc::default();
        Playhead { place, source, graph, scale, frame, at, step: 0, queued_until: at, generation, ticket }
    }

    /// Cancels what it queued: queued jobs are dropped, one under way stops
    /// at its next wait.
    fn cancel(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// Places whose playheads are followed at once; one more takes the place
/// of the one left longest, whose prefetches are cancelled.
const MAX_PLAYHEADS: usize = 8;

/// How long a preview's ask for VRAM waits, from its first refusal, for an
/// export to give memory back.
const MEMORY_WAIT: Duration = Duration::from_secs(5);

/// The place of the engine's own requests ([`Engine::preview`],
/// [`Engine::preview_async`]); each view numbers its own from 1.
const ENGINE_PLACE: u64 = 0;

/// The most trace events held between takes.
const MAX_TRACE: usize = 1 << 20;

/// Where a request comes from: its place (whose playhead it moves), its
/// number in the order requests were made, and whether it may still move
/// the playhead (`open`).
#[derive(Clone, Copy)]
struct Origin<'a> {
    place: u64,
    ticket: u64,
    open: &'a dyn Fn() -> bool,
}

/// When a prefetch was queued: the engine's generation (which moves when
/// its last caller goes) and its playhead's.
#[derive(Clone)]
struct Generation {
    engine: u64,
    playhead: u64,
    counter: Arc<AtomicU64>,
}

impl Generation {
    fn of(state: &PreviewState, counter: &Arc<AtomicU64>) -> Self {
        let engine = state.generation.load(Ordering::SeqCst);
        Generation { engine, playhead: counter.load(Ordering::SeqCst), counter: counter.clone() }
    }

    /// Whether nothing has cancelled it since.
    fn current(&self, state: &PreviewState) -> bool {
        state.generation.load(Ordering::SeqCst) == self.engine && self.counter.load(Ordering::SeqCst) == self.playhead
    }
}

struct PrefetchJob {
    generation: Generation,
    /// Its playhead's place, and its frame's position in that playhead's
    /// list: one the playhead has stepped past is not rendered.
    place: u64,
    at: i128,
    /// The frame's file (not the sequence: a request on a long timeline
    /// must not copy its list of frames).
    path: std::path::PathBuf,
    frame: u64,
    graph: OpGraph,
    scale: Scale,
}

/// Previews for one place in a UI, which only ever shows the newest: each
/// request made through a view supersedes the ones it made before. One
/// that was waiting its turn is answered [`Error::Superseded`] at once;
/// the one under way stops within 20 ms while it waits (for the backend,
/// for memory, for another request's decode or render of its frame) and before its
/// decode and its render; a decode or a render already running finishes.
/// A slider dragged faster than a frame renders then costs the request
/// under way plus the newest, not one render per position passed, and an
/// export waits for neither of the rest. One thread per view serves its requests;
/// cloning a view gives another handle to the same view, and the thread
/// ends once the last handle is gone and the request it left is answered
/// (rendered; or answered [`Error::Cancelled`] if the view held the
/// engine's last handle, which stops the engine).
///
/// ```no_run
/// # fn main() -> framepipe::Result<()> {
/// use framepipe::{Engine, EngineConfig, MissingPolicy, Op, OpGraph, Sequence};
/// use framepipe::preview::Scale;
/// let engine = Engine::new(EngineConfig::default())?;
/// let seq = Sequence::scan("plates/shot_%04d.png", None, MissingPolicy::Error)?;
/// let viewer = engine.preview_view();
/// let mut shown = None;
/// for stops in [0.1, 0.2, 0.3] {
///     // The slider moved: ask, never wait.
///     shown = Some(viewer.request(&seq, 1001, &OpGraph::new(vec![Op::Exposure { stops }])?, Scale::Quarter));
/// }
/// // The newest arrives; the ones it overtook say so.
/// let image = shown.unwrap().recv().expect("sent")?;
/// # let _ = image; Ok(()) }
/// ```
#[derive(Clone)]
pub struct PreviewView(Arc<ViewHandle>);

/// The handles' side of a view: closes its mailbox when the last goes. It
/// holds a caller's handle of the engine, so the engine lives while the
/// view does (its thread holds an internal one, joined when the engine's
/// last caller goes).
struct ViewHandle {
    mailbox: Arc<Mailbox>,
    /// Its prefetch playhead's place.
    place: u64,
    engine: Engine,
    /// Why the view has no thread (the OS would not start one): each
    /// request is answered with it.
    no_thread: Option<(std::io::ErrorKind, String)>,
}

impl Drop for ViewHandle {
    fn drop(&mut self) {
        self.mailbox.close(false);
        // Nobody will ask for what it had prefetched. Its thread sees the
        // mailbox closed under the playheads' lock: it makes none after.
        self.engine.core.previews.forget_place(self.place);
    }
}

/// A thread of the engine's own, and the mailbox it serves if it is a view's.
type OwnThread = (std::thread::JoinHandle<()>, Option<Arc<Mailbox>>);

/// Where a view's requests wait for its thread: only the newest is kept.
#[derive(Default)]
struct Mailbox {
    /// The request not yet taken, and whether the view is gone.
    next: Mutex<(Option<ViewRequest>, bool)>,
    posted: std::sync::Condvar,
    /// The newest request's number: one under way that is no longer the
    /// newest stops at its next check.
    latest: AtomicU64,
    /// The newest request's number when the engine stopped the view (0
    /// while it has not): that request was stopped, not overtaken.
    stopped_at: AtomicU64,
}

struct ViewRequest {
    id: u64,
    sequence: Sequence,
    frame: u64,
    graph: OpGraph,
    scale: Scale,
    reply: Sender<Result<Arc<PreviewImage>>>,
}

impl PreviewView {
    fn new(engine: &Engine) -> Self {
        let mailbox = Arc::new(Mailbox::default());
        let (caller, worker) = (engine.clone(), mailbox.clone());
        let place = engine.core.previews.places.fetch_add(1, Ordering::SeqCst) + 1;
        let engine = Engine::internal(engine.core.clone());
        let thread = std::thread::Builder::new().name("framepipe-view".into()).spawn(move || {
            while let Some(r) = worker.take() {
                let newest = || worker.latest.load(Ordering::SeqCst) == r.id;
                // A panic answers its request and leaves the thread
                // serving the next ones (the render's own are caught
                // deeper, with its memory given back).
                // Once the last handle went (its last request is still
                // answered), the view moves no playhead: nobody will step on.
                let open = || !lock(&worker.next).1;
                let origin = Origin { place, ticket: engine.core.previews.ticket(), open: &open };
                let preview = || engine.preview_while(&r.sequence, r.frame, &r.graph, (r.scale, origin), &newest);
                let answer = match panic_as_error(r.frame, preview) {
                    // Stopped because the engine is going, not overtaken.
                    Err(Error::Superseded) if worker.stopped_at.load(Ordering::SeqCst) == r.id => Err(Error::Cancelled),
                    answer => answer,
                };
                let _ = r.reply.send(answer);
            }
        });
        let no_thread = match thread {
            Ok(thread) => {
                caller.core.previews.own_thread(thread, Some(mailbox.clone()));
                None
            }
            Err(e) => Some((e.kind(), e.to_string())),
        };
        PreviewView(Arc::new(ViewHandle { mailbox, place, engine: caller, no_thread }))
    }

    /// The preview of `frame` with `graph` at `scale`, on the returned
    /// channel, superseding this view's earlier requests that have not
    /// rendered yet (a cache hit is served while it is the newest). Never
    /// blocks.
    ///
    /// # Errors
    /// On the channel: as [`Engine::preview`]; [`Error::Superseded`] for a
    /// request a newer one of this view replaced before it rendered;
    /// [`Error::Thread`] when the view's thread could not be started.
    pub fn request(
        &self,
        sequence: &Sequence,
        frame: u64,
        graph: &OpGraph,
        scale: Scale,
    ) -> Receiver<Result<Arc<PreviewImage>>> {
        let mailbox = &self.0.mailbox;
        let (reply, rx) = crossbeam_channel::bounded(1);
        if let Some((kind, why)) = &self.0.no_thread {
            let source = std::io::Error::new(*kind, why.clone());
            let _ = reply.send(Err(Error::Thread { what: "a preview view".into(), source }));
            return rx;
        }
        let (sequence, graph) = (sequence.clone(), graph.clone());
        let waiting = {
            // Numbered under the lock: handles on two threads post in the
            // order of their numbers, so the one kept is the newest.
            let mut next = lock(&mailbox.next);
            let id = mailbox.latest.fetch_add(1, Ordering::SeqCst) + 1;
            next.0.replace(ViewRequest { id, sequence, frame, graph, scale, reply })
        };
        mailbox.posted.notify_all();
        if let Some(overtaken) = waiting {
            let _ = overtaken.reply.send(Err(Error::Superseded));
        }
        rx
    }
}

impl Mailbox {
    /// No request is taken after this; with `stop` (the engine is going),
    /// the one under way stops at its next check too, and it and the one
    /// waiting are answered [`Error::Cancelled`].
    fn close(&self, stop: bool) {
        let waiting = {
            let mut next = lock(&self.next);
            next.1 = true;
            if stop {
                // Under the lock no request is posted meanwhile; stored
                // before `latest` moves, so a request that sees it moved
                // sees this too.
                self.stopped_at.store(self.latest.load(Ordering::SeqCst), Ordering::SeqCst);
                self.latest.store(u64::MAX, Ordering::SeqCst);
                next.0.take()
            } else {
                None
            }
        };
        self.posted.notify_all();
        if let Some(waiting) = waiting {
            let _ = waiting.reply.send(Err(Error::Cancelled));
        }
    }

    /// The next request to render, once there is one; `None` once the view
    /// is gone and its last request answered.
    fn take(&self) -> Option<ViewRequest> {
        let mut next = lock(&self.next);
        loop {
            if let Some(r) = next.0.take() {
                return Some(r);
            }
            if next.1 {
                return None;
            }
            next = self.posted.wait(next).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// `work` for a preview of `frame`, a panic in it turned into the error it
/// answers with.
fn panic_as_error<T>(frame: u64, work: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|payload| {
        let msg = crate::error::panic_message(&*payload);
        Err(Error::Panic(format!("preview of frame {frame} panicked: {msg}")))
    })
}

/// A decode other requests wait for: the frame, or the file and why it
/// failed (an [`Error`] is not `Clone`; each waiter gets its own).
type PendingSource = OnceLock<std::result::Result<Arc<HostFrame>, DecodeFailure>>;

/// A decode's failure as the requests that joined it get it: the kind of
/// error the decoding request got ([`Error`] is not `Clone`), so an editor
/// that rescans on [`Error::Io`] (a file gone) sees it whichever request
/// met it.
#[derive(Debug, Clone)]
struct DecodeFailure {
    path: std::path::PathBuf,
    /// The I/O error's kind, for an [`Error::Io`]; else an [`Error::Decode`].
    io: Option<std::io::ErrorKind>,
    reason: String,
}

impl DecodeFailure {
    fn of(error: &Error, path: &std::path::Path) -> Self {
        match error {
            Error::Decode { path, reason } => DecodeFailure { path: path.clone(), io: None, reason: reason.clone() },
            Error::Io { path, source } => {
                DecodeFailure { path: path.clone(), io: Some(source.kind()), reason: source.to_string() }
            }
            e => DecodeFailure { path: path.to_path_buf(), io: None, reason: e.to_string() },
        }
    }

    fn error(&self) -> Error {
        let path = self.path.clone();
        match self.io {
            Some(kind) => Error::Io { path, source: std::io::Error::new(kind, self.reason.clone()) },
            None => Error::Decode { path, reason: self.reason.clone() },
        }
    }
}

/// The GPU slot previews render through, and the decoded source whose
/// pixels its upload buffer still holds (mapping it again for writing
/// keeps the contents, so the same source needs no second copy).
struct PreviewSlot {
    slot: GpuSlot,
    holds: Option<Arc<HostFrame>>,
}

/// The engine's preview state: caches, counters, prefetch, trace.
pub(crate) struct PreviewState {
    cache: Mutex<ByteLru<PreviewKey, PreviewImage>>,
    sources: Mutex<ByteLru<FileStamp, HostFrame>>,
    /// Sources being decoded now, each with the place its result lands,
    /// and the signal that one did: requests for one frame under several
    /// grades (a slider dragged faster than a decode) take the first
    /// decode's result instead of each reading the file. (Handed over
    /// here, not through the source cache, which may not keep it.)
    decoding: Mutex<HashMap<FileStamp, Arc<PendingSource>>>,
    decoded: std::sync::Condvar,
    /// The source a preview (not a prefetch) decoded last, kept whatever
    /// the source cache keeps (a frame larger than it, or a cache of 0
    /// bytes): a slider dragged on that frame never decodes it again.
    last_source: Mutex<Option<(FileStamp, Arc<HostFrame>)>>,
    renders: AtomicU64,
    decodes: AtomicU64,
    uploads: AtomicU64,
    prefetched: AtomicU64,
    joined: AtomicU64,
    cancelled: AtomicU64,
    playheads: Mutex<Vec<Playhead>>,
    /// Views made so far: each is a place with a playhead of its own.
    places: AtomicU64,
    /// Requests made so far, numbering them in the order they were made.
    tickets: AtomicU64,
    generation: AtomicU64,
    /// The prefetch threads' queue: started by the first prefetch, closed
    /// when the last caller's handle goes.
    prefetch: Mutex<Option<Sender<PrefetchJob>>>,
    /// The prefetch threads, views' and async previews' threads (with a view's
    /// mailbox), joined when the engine's last caller goes.
    threads: Mutex<Vec<OwnThread>>,
    /// Keys being rendered now, each with its render's class at the
    /// backend (raised when a preview joins a prefetch) and the image it
    /// leaves for those who joined it, and the signal that one landed.
    inflight: Mutex<HashMap<PreviewKey, InFlight>>,
    landed: std::sync::Condvar,
    /// Upload staging for preview sources; used only under the backend lock.
    slot: Mutex<Option<PreviewSlot>>,
    /// When a preview last rendered on the GPU, until its memory is
    /// reclaimed.
    last_render: Mutex<Option<Instant>>,
    /// Renders under way (previews and prefetches): their memory is never
    /// reclaimed, however long their decode takes.
    active: AtomicUsize,
    tracing: AtomicBool,
    trace: Mutex<Vec<(Instant, TraceEvent)>>,
}

impl PreviewState {
    pub(crate) fn new(preview_bytes: u64, source_bytes: u64) -> Self {
        PreviewState {
            cache: Mutex::new(ByteLru::new(preview_bytes)),
            sources: Mutex::new(ByteLru::new(source_bytes)),
            decoding: Default::default(),
            decoded: Default::default(),
            last_source: Mutex::new(None),
            renders: AtomicU64::new(0),
            decodes: AtomicU64::new(0),
            uploads: AtomicU64::new(0),
            prefetched: AtomicU64::new(0),
            joined: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            playheads: Mutex::new(Vec::new()),
            places: AtomicU64::new(ENGINE_PLACE),
            tickets: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            prefetch: Mutex::new(None),
            threads: Mutex::default(),
            inflight: Mutex::default(),
            landed: std::sync::Condvar::new(),
            slot: Mutex::new(None),
            last_render: Mutex::new(None),
            active: AtomicUsize::new(0),
            tracing: AtomicBool::new(false),
            trace: Mutex::new(Vec::new()),
        }
    }

    /// Records `event` when tracing, up to [`MAX_TRACE`] held.
    pub(crate) fn record(&self, event: TraceEvent) {
        if self.tracing.load(Ordering::Relaxed) {
            let mut trace = lock(&self.trace);
            if trace.len() < MAX_TRACE {
                trace.push((Instant::now(), event));
            }
        }
    }

    /// The last caller's handle went: queued prefetches are cancelled, one
    /// under way stops at its next wait (the generation moved), the views
    /// close (their requests under way stop at their next check), and
    /// every thread of the engine's own is joined, so nothing of the
    /// engine runs on after the caller's drop returns. An async preview
    /// under way is finished first.
    pub(crate) fn stop_threads(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        drop(lock(&self.prefetch).take());
        let threads = std::mem::take(&mut *lock(&self.threads));
        for (_, mailbox) in &threads {
            if let Some(mailbox) = mailbox {
                mailbox.close(true);
            }
        }
        // Never the current thread (none of these holds a caller's handle,
        // so this is only a guard).
        let me = std::thread::current().id();
        for (handle, _) in threads {
            if handle.thread().id() != me {
                let _ = handle.join();
            }
        }
    }

    /// Drops the prefetch playhead of `place` (a view that went), cancelling
    /// what it had queued.
    fn forget_place(&self, place: u64) {
        let mut playheads = lock(&self.playheads);
        if let Some(i) = playheads.iter().position(|p| p.place == place) {
            playheads.remove(i).cancel();
        }
    }

    /// The next request's number.
    fn ticket(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Whether the playhead of `place` has moved past position `at` in the
    /// direction it moves.
    fn passed(&self, place: u64, at: i128) -> bool {
        lock(&self.playheads).iter().any(|p| p.place == place && (at - p.at) * p.step < 0)
    }

    /// Keeps a thread of the engine's own (the prefetch thread, a view's, an
    /// async preview's) to join when the engine goes; those that ended are
    /// let go here.
    fn own_thread(&self, thread: std::thread::JoinHandle<()>, mailbox: Option<Arc<Mailbox>>) {
        let mut threads = lock(&self.threads);
        threads.retain(|(h, _)| !h.is_finished());
        threads.push((thread, mailbox));
    }
}

impl Drop for PreviewState {
    /// The engine is going: if its last caller did not already stop its
    /// threads, this does.
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// Area average over `factor` x `factor` blocks to RGBA8, on the CPU: the
/// twin of `shaders/downscale.wgsl` (same blocks, order and rounding).
///
/// # Panics
/// If `frame` fails [`HostFrame::check`] (its data is not its size).
pub fn downscale_cpu(frame: &HostFrame, factor: u32) -> (u32, u32, Vec<u8>) {
    if let Err(e) = frame.check() {
        panic!("downscale_cpu: {e}");
    }
    // 0 would divide by zero; it can only mean no reduction.
    let factor = factor.max(1);
    let (w, h) = (frame.width.div_ceil(factor), frame.height.div_ceil(factor));
    let max = frame.format.max_value();
    let mut out = vec![0u8; w as usize * h as usize * 4];
    out.par_chunks_mut(w as usize * 4).enumerate().for_each(|(oy, row)| {
        for ox in 0..w as usize {
            let (x0, y0) = (ox * factor as usize, oy * factor as usize);
            let x1 = (x0 + factor as usize).min(frame.width as usize);
            let y1 = (y0 + factor as usize).min(frame.height as usize);
            let mut acc = [0.0f32; 4];
            for y in y0..y1 {
                for x in x0..x1 {
                    let i = (y * frame.width as usize + x) * 4;
                    for (c, a) in acc.iter_mut().enumerate() {
                        *a += frame.channel(i + c) as f32 / max;
                    }
                }
            }
            let n = ((x1 - x0) * (y1 - y0)) as f32;
            for c in 0..4 {
                row[ox * 4 + c] = ((acc[c] / n).clamp(0.0, 1.0) * 255.0 + 0.5).floor() as u8;
            }
        }
    });
    (w, h, out)
}

/// One count on a counter (renders under way, the engine's pressure, the
/// requests waiting for a render) from creation until dropped, unwinding
/// included. `C` is a borrow of the counter, or an `Arc` of one that is to
/// outlive the lock it was found under.
struct Held<C: std::ops::Deref<Target = AtomicUsize>>(C);

impl<C: std::ops::Deref<Target = AtomicUsize>> Held<C> {
    fn new(counter: C) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Held(counter)
    }
}

impl<C: std::ops::Deref<Target = AtomicUsize>> Drop for Held<C> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The file of `frame` in `sequence`.
fn frame_path(sequence: &Sequence, frame: u64) -> Result<std::path::PathBuf> {
    sequence
        .frame(frame)
        .map(|f| f.path.clone())
        .ok_or_else(|| Error::Sequence(format!("{}: frame {frame} is not in the sequence", sequence.source)))
}

/// The preview slot for `shape`: the one `held` if it has that shape,
/// else a new one, asked for only after the old one's memory went back.
fn fitted_slot(gpu: &GpuBackend, held: Option<PreviewSlot>, shape: FrameShape) -> Result<PreviewSlot> {
    match held {
        Some(s) if s.slot.shape() == shape => Ok(s),
        other => {
            drop(other);
            gpu.new_slot(shape).map(|slot| PreviewSlot { slot, holds: None })
        }
    }
}

/// A render under way: its priority class, and where its image is left
/// for those waiting on it. The cache may not keep an image (one larger
/// than the cache, or evicted by other inserts at once): waiters take it
/// from here rather than render it a second time.
#[derive(Clone)]
struct InFlight {
    class: Class,
    image: Arc<OnceLock<Arc<PreviewImage>>>,
    /// Up while the render waits for VRAM: a preview waiting on it then
    /// presses the export as its own render would, and only then.
    starved: Arc<AtomicUsize>,
    /// Previews waiting for it (that joined it): while one does, the
    /// render goes on though its own request no longer wants it.
    waiting: Arc<AtomicUsize>,
    /// The priority of the request rendering it, which its class goes
    /// back to when the last preview that joined it leaves.
    owner: Priority,
}

/// Takes a key out of the in-flight set when its render ends, by return or
/// by unwinding, and wakes whoever waits for it.
struct Landed<'a> {
    state: &'a PreviewState,
    key: &'a PreviewKey,
}

impl Drop for Landed<'_> {
    fn drop(&mut self) {
        lock(&self.state.inflight).remove(self.key);
        self.state.landed.notify_all();
    }
}

impl Engine {
    /// The preview of `frame` of `sequence` with `graph` at `scale`.
    /// Thread-safe; a cache hit touches neither the GPU nor the frame's
    /// pixels (only its file's metadata, to see it has not changed). Like
    /// any request it moves the playhead, so the next frames may be
    /// prefetched (rendered) after it.
    ///
    /// # Errors
    /// [`Error::Sequence`] for a frame not in the sequence, a decode error,
    /// an invalid graph (or a blur too wide for the adapter's bindings:
    /// [`Error::InvalidValue`]), a GPU error, [`Error::Budget`] when the preview's
    /// VRAM could not be had (each of its two asks, before the decode and
    /// for the render, waits up to 5 s from its first refusal for an export
    /// to give memory back;
    /// one larger than the whole budget fails at once),
    /// or [`Error::Panic`] when its render panicked.
    pub fn preview(&self, sequence: &Sequence, frame: u64, graph: &OpGraph, scale: Scale) -> Result<Arc<PreviewImage>> {
        self.preview_from(sequence, frame, graph, scale, self.core.previews.ticket())
    }

    /// [`Engine::preview`] made as the `ticket`th request.
    fn preview_from(
        &self,
        sequence: &Sequence,
        frame: u64,
        graph: &OpGraph,
        scale: Scale,
        ticket: u64,
    ) -> Result<Arc<PreviewImage>> {
        // Wanted while a caller holds the engine: an async request (on an
        // engine thread) stops at its next check once the last caller's
        // handle goes, whose drop joins it, rather than rendering on.
        let wanted = || Engine::has_callers(&self.core);
        let origin = Origin { place: ENGINE_PLACE, ticket, open: &wanted };
        self.preview_while(sequence, frame, graph, (scale, origin), &wanted)
    }

    /// [`Engine::preview`] for as long as `wanted` says so: asked before
    /// anything is done, before the decode and once the backend is this
    /// request's, it ends the request with [`Error::Superseded`] (a render
    /// under way finishes). Its origin's playhead moves while its `open`
    /// says so.
    fn preview_while(
        &self,
        sequence: &Sequence,
        frame: u64,
        graph: &OpGraph,
        (scale, origin): (Scale, Origin),
        wanted: &dyn Fn() -> bool,
    ) -> Result<Arc<PreviewImage>> {
        if !wanted() {
            return Err(Error::Superseded);
        }
        let state = &self.core.previews;
        // A frame not in the sequence, or a grade out of range (a value
        // typed in a field), is an error before it moves the playhead (and
        // cancels what is prefetched for the real one).
        let file = FileStamp::of(sequence, frame)?;
        graph.validate()?;
        // Raised before the request is recorded: no export frame starts
        // after it until this preview holds its VRAM, the render under way
        // it joined (a prefetch's, decoding perhaps) has landed, or it is
        // served from the cache. (Lowered at the join, an export frame
        // started meanwhile could finish ahead of the preview.)
        let mut gate = Some(self.core.gate.raise(|| state.record(TraceEvent::PreviewRequested(frame))));
        let key = PreviewKey { file, frame, graph: GradeKey::of(graph), scale };
        let open = origin.open;
        let origin = Origin { open: &|| wanted() && open(), ..origin };
        self.schedule_prefetch(sequence, frame, (graph, &key.graph), scale, origin);
        let (image, served) = match self.cached_or_render(&key, graph, (Priority::Preview, wanted), &mut gate) {
            Ok(served) => served,
            Err(e) => {
                // Not found in the cache either: a miss, or the hit rate
                // would count only the misses that went well.
                lock(&state.cache).count(false);
                return Err(e);
            }
        };
        // A render traced its end itself, once its image was read back
        // (still holding its intent, so no export frame came between).
        if served != Served::Rendered {
            state.record(TraceEvent::PreviewDone(frame));
        }
        drop(gate);
        // Only an image found in the cache on arrival is a hit; one that
        // waited for a render under way (a prefetch) is a miss that
        // joined it, so the hit rate never hides a wait.
        lock(&state.cache).count(served == Served::Hit);
        if served == Served::Joined {
            state.joined.fetch_add(1, Ordering::SeqCst);
        }
        Ok(image)
    }

    /// The cached image for `key`, or one rendered now; a render of the
    /// same key already under way (a prefetch, another thread) is waited
    /// for, never repeated (holding `gate` meanwhile). Returns how the
    /// image was served.
    fn cached_or_render<'a>(
        &'a self,
        key: &PreviewKey,
        graph: &OpGraph,
        (priority, wanted): (Priority, &dyn Fn() -> bool),
        gate: &mut Option<GateGuard<'a>>,
    ) -> Result<(Arc<PreviewImage>, Served)> {
        let state = &self.core.previews;
        let mut joined: Option<Arc<OnceLock<Arc<PreviewImage>>>> = None;
        let mut urgent = None;
        let mut counted: Option<Held<Arc<AtomicUsize>>> = None;
        loop {
            if let Some(image) = joined.as_ref().and_then(|j| j.get()) {
                return Ok((image.clone(), Served::Joined));
            }
            let served = if joined.is_some() { Served::Joined } else { Served::Hit };
            if let Some(image) = lock(&state.cache).peek(key) {
                return Ok((image, served));
            }
            let mut inflight = lock(&state.inflight);
            // A render that landed between the look above and this lock
            // has left `inflight` but is in the cache (or left its image
            // with us): never render twice.
            if let Some(image) = joined.as_ref().and_then(|j| j.get()) {
                return Ok((image.clone(), Served::Joined));
            }
            if let Some(image) = lock(&state.cache).peek(key) {
                return Ok((image, served));
            }
            if let Some(InFlight { class, image, starved, waiting, owner }) = inflight.get(key) {
                // Overtaken while it waited for someone else's render: it
                // holds nothing up any longer (the gate, the urgency, the
                // class it raised the render to, once no other preview
                // waits on it: a prefetch no one waits for must not take
                // memory or the GPU ahead of the preview now shown).
                if !wanted() {
                    if let Some(c) = counted.take().filter(|c| Arc::ptr_eq(&c.0, waiting)) {
                        drop(c);
                        if waiting.load(Ordering::SeqCst) == 0 && *owner < Priority::Preview {
                            self.core.backend.lower(class, *owner);
                        }
                    }
                    return Err(Error::Superseded);
                }
                // A preview waiting on a prefetch's render makes it a
                // preview's render at the backend: it goes ahead of other
                // prefetches and of export frames from now on.
                if priority == Priority::Preview {
                    self.core.backend.raise(class, Priority::Preview);
                }
                joined = Some(image.clone());
                // Only a preview keeps a superseded render going: one kept
                // for a prefetch would hold the export off at preview
                // strength for speculative work (the prefetch renders the
                // frame itself, at its own priority, if it is dropped).
                if priority == Priority::Preview && !counted.as_ref().is_some_and(|c| Arc::ptr_eq(&c.0, waiting)) {
                    counted = Some(Held::new(waiting.clone()));
                }
                // A prefetch rendering it that waits for memory claims it
                // at prefetch strength (the export keeps its last slot): a
                // preview waiting on it makes the claim urgent, while the
                // claim lasts.
                if priority == Priority::Preview && starved.load(Ordering::SeqCst) > 0 {
                    urgent.get_or_insert_with(|| Held::new(&self.core.pressure.urgent));
                } else {
                    urgent = None;
                }
                let _ = state.landed.wait_timeout(inflight, Duration::from_millis(20));
                continue;
            }
            // Its own render (the one it waited on failed) presses for
            // memory itself, if it has to.
            drop(urgent.take());
            drop(counted.take());
            let mine = InFlight {
                class: Class::default(),
                image: Default::default(),
                starved: Default::default(),
                waiting: Default::default(),
                owner: priority,
            };
            inflight.insert(key.clone(), mine.clone());
            drop(inflight);
            let InFlight { class, image: handoff, starved, waiting, .. } = mine;
            // Whatever happens below, the key leaves `inflight`, or every
            // later request for it would wait forever.
            let _landed = Landed { state, key };
            // A render others joined is theirs too: while one of them waits,
            // the cancel of its own request (a prefetch's playhead turned
            // back onto it by the preview that joined it) does not stop it.
            let kept = || wanted() || waiting.load(Ordering::SeqCst) > 0;
            let render = || {
                self.render_preview(&key.file, key.frame, graph, key.scale, (priority, &class, &kept, &starved), gate)
            };
            let result = panic_as_error(key.frame, render).map(Arc::new);
            if let Ok(image) = &result {
                // Left for the waiters before the key leaves `inflight`.
                let _ = handoff.set(image.clone());
                lock(&state.cache).insert(key.clone(), image.clone(), image.data.len() as u64);
            }
            return result.map(|image| (image, Served::Rendered));
        }
    }

    /// [`Engine::preview`] on another thread: the result arrives on the
    /// returned channel, so a UI thread never blocks. Requests move the
    /// prefetch playhead in the order they were made, whichever thread
    /// gets going first.
    ///
    /// Each call is a thread of its own and every request renders: for a
    /// UI that asks on every slider move, a [`PreviewView`]
    /// ([`Engine::preview_view`]) renders only the newest. Dropping the
    /// engine's last handle ends one still under way at its next check
    /// (a render started finishes), so the drop is not held up by it.
    ///
    /// # Errors
    /// On the channel: as [`Engine::preview`]; [`Error::Thread`] when no
    /// thread could be started for it; [`Error::Superseded`] when the
    /// engine's last handle went first.
    pub fn preview_async(
        &self,
        sequence: &Sequence,
        frame: u64,
        graph: &OpGraph,
        scale: Scale,
    ) -> Receiver<Result<Arc<PreviewImage>>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let (engine, sequence, graph) = (Engine::internal(self.core.clone()), sequence.clone(), graph.clone());
        let failed = tx.clone();
        let ticket = self.core.previews.ticket();
        let thread = std::thread::Builder::new().name("framepipe-preview".into()).spawn(move || {
            // A panic is answered, as a view's is, never a closed channel.
            let preview = || engine.preview_from(&sequence, frame, &graph, scale, ticket);
            let _ = tx.send(panic_as_error(frame, preview));
        });
        match thread {
            Ok(thread) => self.core.previews.own_thread(thread, None),
            Err(source) => {
                drop(failed.send(Err(Error::Thread { what: format!("the preview of frame {frame}"), source })))
            }
        }
        rx
    }

    /// A view of an editor (the viewer, a thumbnail under the cursor) whose
    /// requests supersede one another: see [`PreviewView`].
    pub fn preview_view(&self) -> PreviewView {
        PreviewView::new(self)
    }

    /// Gives back the previews' GPU memory if no preview has used it for
    /// [`EngineConfig::preview_memory_idle`](crate::EngineConfig): the
    /// slot, and the kernel sets unused that long (not those frames on
    /// the GPU use: another export's stay while it has frames there). An export
    /// calls it when it wants memory to regrow its pool, naming its own
    /// kernel set (`keep`: shape and plan), which stays however long it
    /// waited behind previews. Never touches a render under way. Returns
    /// whether anything went.
    pub(crate) fn reclaim_preview_memory(&self, keep: Option<(FrameShape, &crate::ops::Plan)>) -> bool {
        let state = &self.core.previews;
        let idle = self.core.config.preview_memory_idle;
        if state.active.load(Ordering::SeqCst) > 0 {
            return false;
        }
        // A preview that panicked holding the slot poisoned it; the slot
        // itself is still sound (the next preview replaces a failed one).
        let mut slot = match state.slot.try_lock() {
            Ok(slot) => slot,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return false,
        };
        // A render counts itself active before it takes the slot: one that
        // started since the look above is seen here, and keeps it.
        if state.active.load(Ordering::SeqCst) > 0 {
            return false;
        }
        {
            // Once per quiet spell: cleared here, set by the next render.
            let mut last = lock(&state.last_render);
            if last.is_none_or(|t| t.elapsed() < idle) {
                return false;
            }
            *last = None;
        }
        *slot = None;
        drop(slot);
        if let Backend::Gpu(gpu) = &mut *self.core.backend.lock(Priority::Export) {
            gpu.evict_idle_sets(idle, keep);
        }
        true
    }

    /// Whether previews hold GPU memory that they will give back: a
    /// render is under way, or one ran since their memory was last
    /// reclaimed.
    pub(crate) fn preview_memory_held(&self) -> bool {
        self.previews_rendered_within(None)
    }

    /// Whether an editor is using previews now: a render (a preview's or a
    /// prefetch's) is under way, or one ran within `preview_memory_idle`.
    /// The export then keeps one frame on the GPU, not
    /// [`GPU_DEPTH`](crate::pipeline::GPU_DEPTH): a preview submitted behind
    /// export work waits for all of it (one queue), and an 8K frame's
    /// copies in and out take about 10 ms.
    pub(crate) fn previews_live(&self) -> bool {
        self.previews_rendered_within(Some(self.core.config.preview_memory_idle))
    }

    /// A render under way, or the last one within `within` (`None`: at
    /// any time since the previews' memory was last reclaimed).
    fn previews_rendered_within(&self, within: Option<std::time::Duration>) -> bool {
        let state = &self.core.previews;
        state.active.load(Ordering::SeqCst) > 0
            || lock(&state.last_render).is_some_and(|t| within.is_none_or(|w| t.elapsed() < w))
    }

    /// Whether a preview is cached (without counting a hit or a miss).
    pub fn preview_cached(&self, sequence: &Sequence, frame: u64, graph: &OpGraph, scale: Scale) -> bool {
        let Ok(file) = FileStamp::of(sequence, frame) else { return false };
        let key = PreviewKey { file, frame, graph: GradeKey::of(graph), scale };
        lock(&self.core.previews.cache).contains(&key)
    }

    /// VRAM one preview of a frame of `shape` graded with `graph` at
    /// `scale` takes of the budget (its slot, the kernel buffers and its
    /// downscale pass's); none on the CPU backend. Each other scale asked
    /// of the same frame size and grade keeps a downscale pass of its own
    /// while the budget has room for it, and gives way when it has not. An editor can refuse a budget no preview fits in before it
    /// makes or opens anything; a preview asked for anyway fails with
    /// [`Error::Budget`].
    ///
    /// # Errors
    /// A blur whose halo the adapter's bindings cannot take, or a graph
    /// [`OpGraph::validate`] refuses ([`Error::InvalidValue`]). (A frame
    /// larger than the adapter's largest buffer is refused when its slot
    /// is made.)
    pub fn preview_vram(&self, shape: FrameShape, graph: &OpGraph, scale: Scale) -> Result<Option<u64>> {
        graph.validate()?;
        // Asked from a UI thread: on the CPU backend it never waits for
        // the lock an export's kernels hold.
        if self.backend_name() == "cpu" {
            return Ok(None);
        }
        match &*self.backend().lock(Priority::Preview) {
            Backend::Gpu(gpu) => preview_need(gpu, shape, &graph.plan(), scale.factor()).map(Some),
            Backend::Cpu => Ok(None),
        }
    }

    /// VRAM at and above which previews of `scale` run beside an export of
    /// the same frame size and grade with an automatic pool: one export
    /// frame ([`Engine::export_vram`]: its slot, a readback buffer and the
    /// kernel buffers, which previews share), the second readback buffer
    /// of the export's ring (taken as soon as it fits, and kept: the frames
    /// on the GPU land in it), and a preview's downscale buffers; a
    /// preview takes the slots the export gives up for it. Below it each
    /// preview may wait for memory the export cannot give, then fail with
    /// [`Error::Budget`], holding the export up meanwhile. Where the export
    /// needs no VRAM (the CPU backend, a graph that changes nothing) it is
    /// [`Engine::preview_vram`].
    ///
    /// # Errors
    /// As [`Engine::preview_vram`].
    pub fn session_vram(&self, shape: FrameShape, graph: &OpGraph, scale: Scale) -> Result<Option<u64>> {
        graph.validate()?;
        if self.backend_name() == "cpu" {
            return Ok(None);
        }
        let plan = graph.plan();
        let Backend::Gpu(gpu) = &*self.backend().lock(Priority::Preview) else { return Ok(None) };
        if crate::engine::is_identity(&plan) {
            return preview_need(gpu, shape, &plan, scale.factor()).map(Some);
        }
        let export = crate::pipeline::one_frame_bytes(shape, gpu.compute_bytes(shape, &plan)?);
        let ring = (crate::pipeline::GPU_DEPTH as u64 - 1) * GpuBackend::readback_bytes(shape);
        let downscale = gpu.preview_bytes(shape, &plan, scale.factor())?;
        Ok(Some(export.saturating_add(ring).saturating_add(downscale)))
    }

    /// Cache and render counters.
    pub fn preview_stats(&self) -> PreviewStats {
        let s = &self.core.previews;
        PreviewStats {
            previews: lock(&s.cache).stats(),
            sources: lock(&s.sources).stats(),
            renders: s.renders.load(Ordering::SeqCst),
            decodes: s.decodes.load(Ordering::SeqCst),
            uploads: s.uploads.load(Ordering::SeqCst),
            prefetched: s.prefetched.load(Ordering::SeqCst),
            joined: s.joined.load(Ordering::SeqCst),
            prefetch_cancelled: s.cancelled.load(Ordering::SeqCst),
        }
    }

    /// Starts recording [`TraceEvent`]s (exports and previews). At most a
    /// million are held (about 32 MB) until [`Engine::take_trace`] takes
    /// them; later ones are dropped, so a trace left on in a long session
    /// does not grow without end.
    pub fn enable_trace(&self) {
        self.core.previews.tracing.store(true, Ordering::SeqCst);
    }

    /// Stops recording [`TraceEvent`]s; those recorded stay for
    /// [`Engine::take_trace`].
    pub fn disable_trace(&self) {
        self.core.previews.tracing.store(false, Ordering::SeqCst);
    }

    /// The events recorded so far, oldest first.
    pub fn take_trace(&self) -> Vec<(Instant, TraceEvent)> {
        std::mem::take(&mut *lock(&self.core.previews.trace))
    }

    pub(crate) fn trace(&self, event: TraceEvent) {
        self.core.previews.record(event);
    }

    /// The decoded frame of `file` (stamped when the request came), from
    /// the source cache or decoded now, with the decode's milliseconds.
    /// One decode per file at a time: a request for a file another is
    /// decoding waits for that decode and takes its result (its wait counts
    /// as this request's decode), unless `wanted` says it no longer wants it.
    fn source(&self, file: &FileStamp, priority: Priority, wanted: &dyn Fn() -> bool) -> Result<(Arc<HostFrame>, f64)> {
        let state = &self.core.previews;
        let t = Instant::now();
        let mut decoding = lock(&state.decoding);
        // Under the in-flight lock: a decode that ends meanwhile has put
        // its frame in the cache before it leaves the map.
        // A preview's source is kept as the last: the frames prefetched
        // ahead are not the one a slider is on.
        let remember = |src: &Arc<HostFrame>| {
            if priority == Priority::Preview {
                *lock(&state.last_source) = Some((file.clone(), src.clone()));
            }
        };
        // Counted once it is known: the last source kept beside the cache
        // (a frame larger than the cache, a slider on it) is a hit too.
        let cached = lock(&state.sources).peek(file);
        if let Some(src) = cached {
            lock(&state.sources).count(true);
            remember(&src);
            return Ok((src, 0.0));
        }
        let last = lock(&state.last_source).as_ref().filter(|(stamp, _)| stamp == file).map(|(_, src)| src.clone());
        lock(&state.sources).count(last.is_some());
        if let Some(src) = last {
            return Ok((src, 0.0));
        }
        if let Some(pending) = decoding.get(file).cloned() {
            while pending.get().is_none() {
                if !wanted() {
                    return Err(Error::Superseded);
                }
                let wait = state.decoded.wait_timeout(decoding, Duration::from_millis(20));
                decoding = wait.unwrap_or_else(|e| e.into_inner()).0;
            }
            return match pending.get().expect("landed") {
                Ok(src) => {
                    remember(src);
                    Ok((src.clone(), t.elapsed().as_secs_f64() * 1e3))
                }
                Err(failure) => Err(failure.error()),
            };
        }
        let pending = Arc::new(PendingSource::new());
        decoding.insert(file.clone(), pending.clone());
        drop(decoding);
        /// Lands the result (a failure if the decode panicked) and wakes
        /// the waiters however the decode ends.
        struct Landing<'a>(&'a PreviewState, &'a FileStamp, Arc<PendingSource>);
        impl Drop for Landing<'_> {
            fn drop(&mut self) {
                let interrupted =
                    DecodeFailure { path: self.1.path.clone(), io: None, reason: "the decode was interrupted".into() };
                let _ = self.2.set(Err(interrupted));
                lock(&self.0.decoding).remove(self.1);
                self.0.decoded.notify_all();
            }
        }
        let landing = Landing(state, file, pending);
        let decoded = decode_file(&file.path, &self.core.config.preview_decode_limits).map(Arc::new);
        let shared = match &decoded {
            Ok(src) => {
                state.decodes.fetch_add(1, Ordering::SeqCst);
                lock(&state.sources).insert(file.clone(), src.clone(), src.data.len() as u64);
                remember(src);
                Ok(src.clone())
            }
            Err(e) => Err(DecodeFailure::of(e, &file.path)),
        };
        let _ = landing.2.set(shared);
        drop(landing);
        Ok((decoded?, t.elapsed().as_secs_f64() * 1e3))
    }

    fn render_preview<'a>(
        &'a self,
        file: &FileStamp,
        frame: u64,
        graph: &OpGraph,
        scale: Scale,
        (priority, class, wanted, starved): (Priority, &Class, &dyn Fn() -> bool, &AtomicUsize),
        gate: &mut Option<GateGuard<'a>>,
    ) -> Result<PreviewImage> {
        graph.validate()?;
        let state = &self.core.previews;
        let _active = Held::new(&state.active);
        // Announced before the decode: export frames reaching the backend
        // while this request decodes queue behind it.
        // (A prefetch announces itself only once decoded: export frames must
        // not stall while it reads the disk.)
        let mut intent = (priority == Priority::Preview).then(|| self.core.backend.intend_as(priority, class));
        let plan = graph.plan();
        let factor = scale.factor();
        let t = Instant::now();
        let mut waited = Duration::ZERO;
        // What it took stays its own until it renders: the slot out of the
        // shared place, the kernel set held, so a preview of another shape
        // or grade arriving meanwhile cannot take either away.
        let mut reserved: Option<(PreviewSlot, SetHold)> = None;
        // A slot reserved for a preview that then fails is sound: back to
        // the shared place, unless another preview has put one there since.
        let give_back = |reserved: Option<(PreviewSlot, SetHold)>| {
            if let Some((slot, _)) = reserved {
                lock(&state.slot).get_or_insert(slot);
                self.core.ledger.hand_over();
            }
        };
        // On the GPU a preview takes its VRAM (slot, kernel buffers) before
        // it decodes, from the file's header, while the gate keeps new export
        // frames from starting: if the budget is full, only frames that had
        // started before the request give memory back, never frames that
        // would then finish ahead of this preview.
        if priority == Priority::Preview && self.backend_name() == "gpu" {
            let probe = probe_file(&file.path, &self.core.config.preview_decode_limits);
            // An unreadable header fails in the decode below, with its reason.
            if let Ok((width, height, format)) = probe {
                let shape = FrameShape { width, height, format };
                let reserved_ok =
                    self.with_memory((priority, class, wanted, starved), &mut intent, &mut waited, gate, |backend| {
                        match backend {
                            // Overtaken while it waited for the backend (or
                            // between refusals): it takes no memory.
                            _ if !wanted() => Err(Error::Superseded),
                            Backend::Gpu(gpu) => {
                                // Its slot, kernel and downscale buffers may
                                // each fit and never all: no wait for
                                // releases then.
                                check_preview_fits(&self.core.ledger, gpu, shape, &plan, factor)?;
                                let held = reserved.take().map(|(s, _)| s).or_else(|| lock(&state.slot).take());
                                let slot = fitted_slot(gpu, held, shape)?;
                                *lock(&state.last_render) = Some(Instant::now());
                                let r = gpu.prepare_for_preview(shape, &plan, factor);
                                if r.is_ok() {
                                    reserved = Some((slot, gpu.hold_newest_set()));
                                } else {
                                    // Not held while it waits: previews
                                    // side by side, each with a slot and
                                    // waiting for the rest, would hold the
                                    // budget between them until all failed.
                                    // One idle slot stays in the shared place
                                    // (for the next preview to take: woken).
                                    lock(&state.slot).get_or_insert(slot);
                                    self.core.ledger.hand_over();
                                }
                                r
                            }
                            Backend::Cpu => Ok(()),
                        }
                    });
                if let Err(e) = reserved_ok {
                    give_back(reserved.take());
                    return Err(e);
                }
            }
        }
        *gate = None;
        if !wanted() {
            give_back(reserved.take());
            return Err(Error::Superseded);
        }
        let reserve = t.elapsed().saturating_sub(waited);
        let (src, decode_ms) = match self.source(file, priority, wanted) {
            Ok(source) => source,
            Err(e) => {
                give_back(reserved.take());
                return Err(e);
            }
        };
        let t = Instant::now();
        let before = waited;
        let mut upload = Duration::ZERO;
        let rendered = self.with_memory(
            (priority, class, wanted, starved),
            &mut intent,
            &mut waited,
            gate,
            |backend| match backend {
                // Its turn came after a later request of its view: that
                // one is what the view shows.
                _ if !wanted() => Err(Error::Superseded),
                Backend::Gpu(gpu) => {
                    let shape = FrameShape::of(&src);
                    let (held, _hold) = match reserved.take() {
                        Some((slot, hold)) => (Some(slot), Some(hold)),
                        None => {
                            // Not reserved ahead (a prefetch): one that can
                            // never fit fails at once, as a preview's
                            // reservation does, rather than pressing the
                            // export for memory that cannot help.
                            check_preview_fits(&self.core.ledger, gpu, shape, &plan, factor)?;
                            (lock(&state.slot).take(), None)
                        }
                    };
                    let mut s = fitted_slot(gpu, held, shape)?;
                    // The kernels first: refused them (memory, the device),
                    // the slot is untouched, kept for the retry or the next
                    // preview rather than allocated again.
                    if let Err(e) = gpu.prepare_for_preview(shape, &plan, factor) {
                        *lock(&state.slot) = Some(s);
                        self.core.ledger.hand_over();
                        return Err(e);
                    }
                    let mut data = Vec::new();
                    // A slider drag re-grades the frame the slot already
                    // holds: its upload still has the pixels, skip the copy.
                    let held = s.holds.take().is_some_and(|h| Arc::ptr_eq(&h, &src));
                    let copy = Instant::now();
                    let r = if held { Ok(()) } else { s.slot.write(&src.data) };
                    upload += copy.elapsed();
                    if !held && r.is_ok() {
                        state.uploads.fetch_add(1, Ordering::SeqCst);
                    }
                    let r = r
                        .and_then(|()| gpu.run_preview(&s.slot, &plan, factor, &mut data))
                        .map(|(w, h, ns, on_gpu)| (w, h, data, ns, on_gpu));
                    // A slot whose frame failed may be left half-mapped:
                    // the next preview makes a new one.
                    if r.is_ok() {
                        s.holds = Some(src.clone());
                        *lock(&state.slot) = Some(s);
                        // A preview waiting for memory takes this slot.
                        self.core.ledger.hand_over();
                    }
                    *lock(&state.last_render) = Some(Instant::now());
                    r
                }
                Backend::Cpu => {
                    let (w, h, data) = self.on_cpu_threads(|| downscale_cpu(&process_cpu(&src, &plan), factor));
                    Ok((w, h, data, None, Duration::ZERO))
                }
            },
        );
        // Given up before its turn (overtaken, out of time for memory): the
        // slot it reserved is sound, for the next preview.
        if rendered.is_err() {
            give_back(reserved.take());
        }
        let (width, height, data, gpu_ns, on_gpu) = rendered?;
        state.renders.fetch_add(1, Ordering::SeqCst);
        if priority == Priority::Preview {
            // Before the intent goes: no export frame is let in between.
            state.record(TraceEvent::PreviewDone(frame));
        }
        Ok(PreviewImage {
            frame,
            scale,
            width,
            height,
            data,
            decode_ms,
            wait_ms: waited.as_secs_f64() * 1e3,
            upload_ms: upload.as_secs_f64() * 1e3,
            render_ms: (reserve + t.elapsed().saturating_sub(waited - before)).as_secs_f64() * 1e3,
            gpu_ms: gpu_ns.map(|n| n as f64 / 1e6),
            on_gpu_ms: on_gpu.as_secs_f64() * 1e3,
        })
    }

    /// Runs `work` on the backend, announced at `priority`; when the VRAM
    /// budget is full (an export holds it) asks the export to hand slots
    /// back, waits for a release without holding or announcing the backend
    /// (the frames holding the memory must get through to free it) and
    /// tries again, for up to [`MEMORY_WAIT`] from the first refusal; a
    /// request larger than the whole
    /// budget fails at once, as no release can make room. A preview keeps the gate up
    /// meanwhile, so no export frame starts and takes the memory first,
    /// and a prefetch takes none while a preview waits (as if refused).
    /// Time spent waiting goes to `waited`.
    fn with_memory<'a, R>(
        &'a self,
        (priority, class, wanted_by_caller, starved): (Priority, &Class, &dyn Fn() -> bool, &AtomicUsize),
        intent: &mut Option<Intent<'a, Backend>>,
        waited: &mut Duration,
        gate: &mut Option<GateGuard<'a>>,
        mut work: impl FnMut(&mut Backend) -> Result<R>,
    ) -> Result<R> {
        // Bounded in time from the first refusal (time queued behind other
        // previews for the backend is not time waiting for memory); each
        // refusal waits for a release or 250 ms.
        let mut deadline = None;
        // A prefetch stops waiting once its playhead jumped or the grade
        // changed, and a view's request once a newer one came (each asked
        // through `wanted`): either would hold the export down for a frame
        // nobody wants.
        let wanted = wanted_by_caller;
        // Up from the first refusal to the end: an export must not regrow
        // a slot with memory it just gave back for this request.
        let mut pressure = None;
        loop {
            let asked = Instant::now();
            let mark = self.core.ledger.mark();
            let result = {
                let intent = intent.get_or_insert_with(|| self.core.backend.intend_as(priority, class));
                let backend = intent.lock_while(Some(&wanted_by_caller));
                *waited += asked.elapsed();
                // A prefetch takes no memory while a preview waits for
                // some: what the export gives back is the preview's. (One
                // a preview joined was raised to a preview's class.)
                let yields = priority == Priority::Prefetch
                    && !class.at_least(Priority::Preview)
                    && self.core.pressure.urgent.load(Ordering::SeqCst) > 0;
                match backend {
                    Some(_) if yields => Err(Error::Budget("a preview is waiting for memory".into())),
                    Some(mut backend) => work(&mut backend),
                    None => Err(Error::Superseded),
                }
            };
            match result {
                Err(Error::Budget(_))
                    if wanted()
                        && !mark.hopeless()
                        && Instant::now() < *deadline.get_or_insert_with(|| Instant::now() + MEMORY_WAIT) =>
                {
                    let since = mark.since();
                    if priority == Priority::Preview && gate.is_none() {
                        *gate = Some(self.core.gate.raise(|| {}));
                    }
                    // Pressure is raised before the intent goes: dropping
                    // it wakes a prefetch waiting on it, which must see
                    // the preview's claim and yield, not take the memory
                    // just freed.
                    pressure.get_or_insert_with(|| {
                        let urgent = (priority == Priority::Preview).then(|| Held::new(&self.core.pressure.urgent));
                        (Held::new(&self.core.pressure.any), urgent, Held::new(starved))
                    });
                    *intent = None;
                    // Memory an export holds idle goes now rather than
                    // when it next starts a frame: a free pool slot, else
                    // (for a preview) the slot a sequential export keeps
                    // between frames.
                    // (A prefetch a preview has joined counts: the
                    // preview holds `urgent` up while it waits.)
                    // Each wait gives up once the request is no longer
                    // wanted: it must not hold the export back meanwhile.
                    let asked = Instant::now();
                    if !self.core.pressure.shed_free()
                        && self.core.pressure.urgent.load(Ordering::SeqCst) > 0
                        && let Some(mut backend) =
                            self.core.backend.intend_as(priority, class).lock_while(Some(&wanted_by_caller))
                        && let Backend::Gpu(g) = &mut *backend
                    {
                        g.release_own_slot();
                    }
                    let until = asked + Duration::from_millis(250);
                    while self.core.ledger.releases() <= since && wanted() {
                        let left = until.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        self.core.ledger.wait_release(since, left.min(Duration::from_millis(20)));
                    }
                    *waited += asked.elapsed();
                }
                // Refused after it was overtaken: what it answers is that.
                Err(Error::Budget(_)) if !wanted() => return Err(Error::Superseded),
                r => return r,
            }
        }
    }

    /// Queues the next frames in the direction the playhead of the
    /// request's `place` moved. Steps in the same direction extend the
    /// queue; a jump (or another sequence), a change of direction, grade or
    /// scale cancels what that playhead still has queued and starts again.
    /// The origin's `open` is asked under the playheads' lock: a request
    /// already overtaken (a view's) must not turn its playhead back; nor
    /// does one made before the request that last moved it.
    fn schedule_prefetch(
        &self,
        sequence: &Sequence,
        frame: u64,
        (graph, grade): (&OpGraph, &GradeKey),
        scale: Scale,
        Origin { place, ticket, open: wanted }: Origin,
    ) {
        let count = self.core.config.prefetch;
        let state = &self.core.previews;
        let Some(at) = sequence.position(frame) else { return };
        let at = at as i128;
        let mut playheads = lock(&state.playheads);
        if !wanted() {
            return;
        }
        let (source, graph_key) = (sequence.source.clone(), grade.clone());
        // Each place in an editor moves on its own: the viewer's playhead is
        // not turned by a thumbnail view's request elsewhere in the shot.
        let Some(i) = playheads.iter().position(|p| p.place == place) else {
            if playheads.len() == MAX_PLAYHEADS {
                playheads.remove(0).cancel();
            }
            playheads.push(Playhead::new((place, ticket), source, (graph_key, scale), (frame, at)));
            return;
        };
        if playheads[i].ticket > ticket {
            return;
        }
        // Most recently moved last.
        let mut p = playheads.remove(i);
        p.ticket = ticket;
        // Another sequence, or another list of its frames (positions in
        // the old one say nothing in this one): a jump.
        let same_list = usize::try_from(p.at).ok().and_then(|i| sequence.frames.get(i)).map(|f| f.number);
        if p.source != source || same_list != Some(p.frame) {
            p.cancel();
            playheads.push(Playhead {
                generation: p.generation,
                ..Playhead::new((place, ticket), source, (graph_key, scale), (frame, at))
            });
            return;
        }
        if p.graph != graph_key || p.scale != scale {
            // A new grade (a slider moved) or scale: what is queued renders
            // something nobody will ask for. Cancel it, keep the direction,
            // and queue afresh from here.
            p.cancel();
            p.queued_until = p.at;
            (p.graph, p.scale) = (graph_key, scale);
        }
        let (step, mut from) = match at - p.at {
            0 => {
                playheads.push(p); // same frame (a slider drag): nothing new to fetch
                return;
            }
            d if d.unsigned_abs() > count.max(1) as u128 => {
                p.cancel(); // a jump
                (p.frame, p.at, p.step, p.queued_until) = (frame, at, 0, at);
                playheads.push(p);
                return;
            }
            d if d.signum() == p.step => (d.signum(), p.queued_until),
            d => {
                p.cancel(); // turned around
                (d.signum(), at)
            }
        };
        if (from - at) * step <= 0 {
            from = at;
        }
        let until = at + step * count as i128;
        let queued_until = if step > 0 { until.max(from) } else { until.min(from) };
        (p.frame, p.at, p.step, p.queued_until) = (frame, at, step, queued_until);
        // Read under the playheads' lock, which every change of one takes:
        // a jump by another thread right after cancels these prefetches.
        let generation = Generation::of(state, &p.generation);
        playheads.push(p);
        drop(playheads);
        if count == 0 {
            return;
        }
        let mut queue = lock(&state.prefetch);
        // No caller left (a view's thread finishing after the last handle
        // went): no thread to start, nobody to prefetch for.
        if queue.is_none() && !Engine::has_callers(&self.core) {
            return;
        }
        if queue.is_none() {
            let (tx, rx) = unbounded::<PrefetchJob>();
            for i in 0..self.prefetch_threads() {
                let (core, rx) = (Arc::downgrade(&self.core), rx.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("framepipe-prefetch-{i}"))
                    .spawn(move || prefetch_worker(&core, &rx));
                // Out of threads: prefetch with the ones there are. None:
                // the queue is kept with no reader (what is sent to it is
                // dropped), so later requests do not try again; previews
                // still render, on the caller's thread.
                match spawned {
                    Ok(handle) => state.own_thread(handle, None),
                    Err(_) => break,
                }
            }
            *queue = Some(tx);
        }
        let Some(sender) = queue.as_ref() else { return };
        let mut target = from;
        while (until - target) * step > 0 {
            target += step;
            let Some(f) = usize::try_from(target).ok().and_then(|i| sequence.frames.get(i)) else {
                break;
            };
            let (path, frame, generation) = (f.path.clone(), f.number, generation.clone());
            let job = PrefetchJob { generation, place, at: target, path, frame, graph: graph.clone(), scale };
            let _ = sender.send(job);
        }
    }
}

/// One prefetch thread: renders queued frames, nearest first, until the
/// queue closes or no caller is left. Several share one queue, so the next
/// frames decode at once.
fn prefetch_worker(core: &std::sync::Weak<crate::engine::EngineCore>, rx: &Receiver<PrefetchJob>) {
    while let Ok(job) = rx.recv() {
        // Gone, or no caller holds it: nobody will ask for what it would
        // render.
        let Some(core) = core.upgrade().filter(|c| Engine::has_callers(c)) else { break };
        let engine = Engine::internal(core);
        let state = &engine.core.previews;
        // Cancelled, or stepped past (playback skipping frames, steps of
        // two or three, leaves the frames between queued ahead of the
        // ones it will ask for).
        if !job.generation.current(state) || state.passed(job.place, job.at) {
            state.cancelled.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        // A file gone since it was queued: nothing to render.
        let Ok(file) = FileStamp::at(job.path) else { continue };
        let key = PreviewKey { file, frame: job.frame, graph: GradeKey::of(&job.graph), scale: job.scale };
        // Unwanted once the playhead moves elsewhere or the last caller
        // goes: it stops at its next wait.
        let wanted = || Engine::has_callers(&engine.core) && job.generation.current(state);
        match engine.cached_or_render(&key, &job.graph, (Priority::Prefetch, &wanted), &mut None) {
            Ok((_, Served::Rendered)) => {
                state.prefetched.fetch_add(1, Ordering::SeqCst);
            }
            // Stopped on its way by a jump: cancelled too.
            Err(_) if !wanted() => {
                state.cancelled.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
    }
}

/// VRAM a preview of `shape` under `plan` at 1/`factor` takes: its slot,
/// the kernel buffers and its downscale pass's (which each may fit and
/// never all).
fn preview_need(gpu: &GpuBackend, shape: FrameShape, plan: &crate::ops::Plan, factor: u32) -> Result<u64> {
    let kernels = gpu.compute_bytes(shape, plan)?.saturating_add(gpu.preview_bytes(shape, plan, factor)?);
    Ok(GpuBackend::slot_bytes(shape).saturating_add(kernels))
}

/// Refuses a preview of `shape` whose buffers may each fit the budget and
/// never all ([`preview_need`]): no release makes room, so none is waited
/// for.
fn check_preview_fits(
    ledger: &crate::ledger::Ledger,
    gpu: &GpuBackend,
    shape: FrameShape,
    plan: &crate::ops::Plan,
    factor: u32,
) -> Result<()> {
    let FrameShape { width, height, format } = shape;
    let what = format!("a preview of one {width}x{height} {format} frame (slot, kernel and downscale buffers)");
    ledger.check_fits(preview_need(gpu, shape, plan, factor)?, &what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grade_key_takes_negative_zero_for_zero_and_nothing_else() {
        use crate::ops::Op;
        let key = |stops: f64, m0: f64| {
            let matrix = [m0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
            let ops = vec![Op::Exposure { stops }, Op::Matrix { matrix, offset: [-0.0, 0.0, 0.25] }];
            GradeKey::of(&OpGraph::new(ops).unwrap())
        };
        assert_eq!(key(-0.0, 1.0), key(0.0, 1.0));
        assert_ne!(key(-0.0, 1.0), key(-0.05, 1.0));
        assert_ne!(key(0.0, 1.0), key(0.0, -1.0));
        assert!(key(0.0, 1.0).0.contains("0.25"));
    }

    /// A queued prefetch is passed once its playhead has stepped beyond it
    /// in the way it moves (playback on twos skips the frames between);
    /// ahead of it, at it, or for another place, it is not.
    #[test]
    fn a_prefetch_the_playhead_stepped_past_is_passed() {
        let state = PreviewState::new(0, 0);
        let at = |place| Playhead::new((place, 0), "s".into(), (GradeKey::default(), Scale::Half), (1005, 5));
        let mut forward = at(1);
        forward.step = 1;
        let mut back = at(2);
        back.step = -1;
        let still = at(3);
        lock(&state.playheads).extend([forward, back, still]);
        assert!(state.passed(1, 4) && !state.passed(1, 5) && !state.passed(1, 6));
        assert!(state.passed(2, 6) && !state.passed(2, 5) && !state.passed(2, 4));
        assert!(!state.passed(3, 4) && !state.passed(3, 6), "no direction yet");
        assert!(!state.passed(9, 4), "no such place");
    }

    /// Requests move the playhead in the order they were made: one made
    /// earlier that gets going later (an async preview's thread) does not
    /// move it back, nor turn it.
    #[test]
    fn an_older_request_arriving_late_does_not_move_the_playhead() {
        let t = tempfile::tempdir().unwrap();
        let pattern = t.path().join("f_%02d.png").display().to_string();
        let opts = crate::generate::GenerateOptions { width: 8, height: 8, frames: 6, start: 1, ..Default::default() };
        crate::generate::generate_sequence(&opts, &pattern, &Default::default(), false).unwrap();
        let seq = Sequence::scan(&pattern, None, crate::MissingPolicy::Error).unwrap();
        let config = crate::EngineConfig { backend: crate::BackendKind::Cpu, prefetch: 0, ..Default::default() };
        let engine = Engine::new(config).unwrap();
        let graph = OpGraph::new(vec![crate::Op::Exposure { stops: 0.5 }]).unwrap();
        let playhead = || {
            let playheads = lock(&engine.core.previews.playheads);
            let p = &playheads[0];
            (p.frame, p.step, p.generation.load(Ordering::SeqCst))
        };
        engine.preview_from(&seq, 3, &graph, Scale::Half, 10).unwrap();
        engine.preview_from(&seq, 4, &graph, Scale::Half, 11).unwrap();
        let (frame, step, generation) = playhead();
        assert_eq!((frame, step), (4, 1));
        engine.preview_from(&seq, 2, &graph, Scale::Half, 9).unwrap();
        assert_eq!(playhead(), (4, 1, generation), "made before the others: no turn, nothing cancelled");
        engine.preview_from(&seq, 5, &graph, Scale::Half, 12).unwrap();
        assert_eq!(playhead(), (5, 1, generation));
        // Made in order, the same step back turns it.
        engine.preview_from(&seq, 4, &graph, Scale::Half, 13).unwrap();
        assert_eq!(playhead(), (4, -1, generation + 1));
    }
}
