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
//! ```no_run
//! use framepipe::{Cancel, Engine, EngineConfig, Job, Op, OpGraph, Progress};
//!
//! let graph = OpGraph::new(vec![Op::Exposure { stops: 0.5 }, Op::Blur { sigma: 4.0 }])?;
//! let job = Job::new("plates/shot_%04d.png", "graded/shot_%04d.png", graph);
//! let prepared = framepipe::prepare(&job)?;
//! let mut engine = Engine::new(EngineConfig::default())?; // auto backend, 2 GiB VRAM budget
//! if let Some(n) = engine.notice() { eprintln!("{n}"); }
//! let report = engine.run(&job, &prepared, &Cancel::default(), &mut |p| {
//!     if let Progress::Done { finished, total, .. } = p { eprintln!("{finished}/{total}"); }
//! })?;
//! println!("{}", report.summary());
//! # Ok::<(), framepipe::Error>(())
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
pub mod bench;
pub mod cache;
pub mod engine;
pub mod error;
pub mod generate;
pub mod gpu;
pub mod io;
pub mod ledger;
pub mod ops;
pub mod pipeline;
pub mod pool;
pub mod preview;
pub mod priority;
pub mod report;
pub mod sequence;
pub mod timeline;

pub use backend::{Backend, BackendKind};
pub use engine::{Cancel, Engine, EngineConfig, ErrorPolicy, Job, PreparedJob, Progress, prepare};
pub use error::{Error, Result};
pub use io::{HostFrame, PixelFormat};
pub use ops::{Op, OpGraph, Plan, load_preset, process_cpu};
pub use report::Report;
pub use sequence::{FrameSpec, MissingPolicy, Sequence};
