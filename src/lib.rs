//! framepipe: a GPU frame-processing engine.
//!
//! It reads image sequences (PNG, JPEG, TIFF, QOI; 8 and 16 bits), runs an
//! ordered graph of color operations and Gaussian blurs as WGSL compute
//! kernels through wgpu, and writes the results. A CPU backend runs the same
//! plan on rayon; it is the oracle the GPU is tested against and the
//! fallback where no GPU exists.
//!
//! # Examples
//!
//! Grade a sequence from Rust, on whatever backend is available:
//!
//! ```
//! use framepipe::generate::{GenerateOptions, generate_sequence};
//! use framepipe::{Cancel, Engine, EngineConfig, Job, Op, OpGraph, Progress};
//!
//! # let dir = tempfile::tempdir().unwrap();
//! # let plates = dir.path().join("plates/shot_%04d.png").display().to_string();
//! # let graded = dir.path().join("graded/shot_%04d.png").display().to_string();
//! // A small synthetic sequence to work on (plates/shot_1001.png ...).
//! let opts = GenerateOptions { width: 64, height: 36, frames: 3, start: 1001, ..Default::default() };
//! generate_sequence(&opts, &plates, &Default::default(), false)?;
//!
//! let graph = OpGraph::new(vec![Op::Exposure { stops: 0.5 }, Op::Blur { sigma: 4.0 }])?;
//! let job = Job::new(plates.as_str(), graded.as_str(), graph);
//! let prepared = framepipe::prepare(&job)?; // every check happens before any frame
//! let engine = Engine::new(EngineConfig::default())?; // auto backend, 2 GiB VRAM budget
//! if let Some(n) = engine.notice() { eprintln!("{n}"); }
//! let cancel = Cancel::default(); // clone it into another thread to stop the run
//! let report = engine.run(&job, &prepared, &cancel, &mut |p| {
//!     if let Progress::Done { finished, total, .. } = p { eprintln!("{finished}/{total}"); }
//! })?;
//! assert_eq!(report.frames_written, 3);
//! println!("{}", report.summary()); // names the bottleneck and the efficiency
//! # Ok::<(), framepipe::Error>(())
//! ```
//!
//! Embed it in an editor: an export runs in the background while the UI
//! asks for previews, which come from an LRU cache or go ahead of the
//! export's frames:
//!
//! ```
//! use framepipe::generate::{GenerateOptions, generate_sequence};
//! use framepipe::{Cancel, Engine, EngineConfig, Error, Job, MissingPolicy, Op, OpGraph, Scale, Sequence};
//!
//! # let dir = tempfile::tempdir().unwrap();
//! # let plates = dir.path().join("plates/shot_%04d.png").display().to_string();
//! # let graded = dir.path().join("graded/shot_%04d.png").display().to_string();
//! # let opts = GenerateOptions { width: 64, height: 36, frames: 4, start: 1001, ..Default::default() };
//! # generate_sequence(&opts, &plates, &Default::default(), false)?;
//! let engine = Engine::new(EngineConfig { vram_budget: 1 << 30, ..Default::default() })?;
//! let grade = OpGraph::new(vec![Op::Exposure { stops: 0.5 }, Op::Blur { sigma: 2.0 }])?;
//!
//! // The export, on a thread of its own; `stop` is the UI's Cancel button.
//! let job = Job::new(plates.as_str(), graded.as_str(), grade.clone());
//! let prepared = framepipe::prepare(&job)?;
//! let (exporter, cancel) = (engine.clone(), Cancel::default());
//! let stop = cancel.clone();
//! let export = std::thread::spawn(move || exporter.run(&job, &prepared, &cancel, &mut |_| {}));
//!
//! // A preview blocks until its image is there (call it from a worker)...
//! let seq = Sequence::scan(&plates, None, MissingPolicy::Error)?;
//! let image = engine.preview(&seq, 1002, &grade, Scale::Half)?;
//! assert_eq!((image.width, image.height, image.data.len()), (32, 18, 32 * 18 * 4)); // RGBA8
//! // ...and the same request again is a cache hit: no decode, no GPU.
//! let again = engine.preview(&seq, 1002, &grade, Scale::Half)?;
//! assert!(std::sync::Arc::ptr_eq(&image, &again));
//!
//! // A UI thread never blocks: a view's newest request supersedes the ones
//! // not yet rendered (they end with Error::Superseded); poll try_recv().
//! let viewer = engine.preview_view();
//! let brighter = OpGraph::new(vec![Op::Exposure { stops: 1.0 }])?;
//! let newest = viewer.request(&seq, 1003, &brighter, Scale::Quarter);
//! assert_eq!(newest.recv().expect("answered")?.frame, 1003);
//!
//! stop.cancel(); // closing: stop the export and wait for it
//! let report = export.join().expect("the export thread")?;
//! assert!(report.frames_written <= 4);
//! # Ok::<(), Error>(())
//! ```
//!
//! Process one frame in memory with the CPU reference:
//!
//! ```
//! use framepipe::{HostFrame, Op, OpGraph, PixelFormat, process_cpu};
//!
//! let mut frame = HostFrame::new(4, 2, PixelFormat::Rgba8, false);
//! frame.data.iter_mut().enumerate().for_each(|(i, b)| *b = (i * 7) as u8);
//! let plan = OpGraph::new(vec![Op::Exposure { stops: 1.0 }])?.plan();
//! let out = process_cpu(&frame, &plan);
//! assert_eq!(out.data[0], 0);
//! assert_eq!(out.data[1], 14); // 7 doubled
//! # Ok::<(), framepipe::Error>(())
//! ```

#![warn(missing_docs)]

pub mod backend;
// The engine's machinery: public for the benches, the tests and the
// `framepipe` binary, hidden from the docs, and not part of the API an
// embedder should build on (it changes as the engine does).
#[doc(hidden)]
pub mod bench;
pub mod cache;
pub mod engine;
pub mod error;
pub mod generate;
pub mod gpu;
pub mod io;
pub mod ledger;
pub mod ops;
#[doc(hidden)]
pub mod pipeline;
pub mod pool;
pub mod preview;
#[doc(hidden)]
pub mod priority;
mod reorder;
pub mod report;
pub mod sequence;
pub mod timeline;

pub use backend::{Backend, BackendKind};
pub use engine::{Cancel, Engine, EngineConfig, ErrorPolicy, Job, PreparedJob, Progress, prepare};
pub use error::{Error, Result};
pub use gpu::FrameShape;
pub use io::{EncodeOptions, HostFrame, OutputFormat, PixelFormat};
pub use ops::{Op, OpGraph, Plan, load_preset, process_cpu};
pub use pool::PoolSize;
pub use preview::{PreviewImage, PreviewStats, PreviewView, Scale};
pub use report::{FailureKind, FrameFailure, FrameRecord, Report};
pub use sequence::{FrameSpec, MissingPolicy, Sequence};

// What a UI shares between threads must stay shareable.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Engine>();
    shared::<PreviewView>();
    shared::<PreviewImage>();
    shared::<Report>();
    shared::<Error>();
    shared::<Cancel>();
    shared::<PreparedJob>();
};

/// Locks `m`, taking it over from a thread that panicked holding it: every
/// state the engine guards is left whole between statements (a panic is
/// reported as the run's error on its own), and one stage's panic must not
/// turn every later lock into a second one.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
