//! Choosing between the GPU and CPU backends.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{GpuBackend, GpuOptions};
use crate::io::HostFrame;
use crate::ledger::Ledger;
use crate::ops::{Plan, process_cpu};

/// Which backend the user asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[non_exhaustive]
pub enum BackendKind {
    /// A hardware GPU if there is one, else the CPU backend (with a notice).
    #[default]
    Auto,
    /// Any GPU adapter, software rasterizers included; an error if none.
    Gpu,
    /// The CPU reference backend (rayon).
    Cpu,
}

/// An opened backend.
pub enum Backend {
    /// The wgpu backend.
    Gpu(Box<GpuBackend>),
    /// The rayon backend.
    Cpu,
}

impl Backend {
    /// Opens `kind`; GPU buffers are counted by `ledger`. For `Auto`
    /// without a hardware GPU, returns the CPU backend and the one-line
    /// notice saying why.
    ///
    /// # Errors
    /// [`Error::NoGpu`] when `Gpu` was asked for and no adapter opens;
    /// [`Error::InvalidValue`] for an adapter name that matches none, or
    /// one named with `Cpu`. `options` name the adapter and band size;
    /// `hardware_only` is set here from `kind` and the name.
    pub fn open(kind: BackendKind, options: &GpuOptions, ledger: Arc<Ledger>) -> Result<(Backend, Option<String>)> {
        let named = options.adapter.clone();
        let options = |hardware_only| GpuOptions { hardware_only, ..options.clone() };
        match kind {
            BackendKind::Cpu => match named {
                Some(name) => Err(Error::invalid("adapter", format!("{name:?}"), "none with the CPU backend")),
                None => Ok((Backend::Cpu, None)),
            },
            BackendKind::Gpu => match GpuBackend::new(&options(false), ledger) {
                Ok(gpu) => Ok((Backend::Gpu(Box::new(gpu)), None)),
                Err(Error::Gpu(why)) => Err(Error::NoGpu(why)),
                Err(e) => Err(e),
            },
            // An adapter named on purpose is taken even if it is a
            // software rasterizer: the user chose it.
            BackendKind::Auto => match GpuBackend::new(&options(named.is_none()), ledger) {
                Ok(gpu) => Ok((Backend::Gpu(Box::new(gpu)), None)),
                // No adapter at all: one that was named is said to be
                // missing too, as it was asked for.
                Err(Error::Gpu(why)) => {
                    let asked = named.map(|n| format!(" (the adapter {n:?} was asked for)")).unwrap_or_default();
                    Ok((Backend::Cpu, Some(format!("using the CPU backend: {why}{asked}"))))
                }
                Err(e) => Err(e),
            },
        }
    }

    /// `"gpu"` or `"cpu"`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Gpu(_) => "gpu",
            Backend::Cpu => "cpu",
        }
    }

    /// The adapter's name, or a description of the CPU backend running on
    /// `cpu_threads` threads.
    pub fn device_name(&self, cpu_threads: usize) -> String {
        match self {
            Backend::Gpu(g) => format!("{} ({}, {})", g.adapter().name, g.adapter().backend, g.adapter().device_type),
            Backend::Cpu => format!("CPU reference, {cpu_threads} thread{}", if cpu_threads == 1 { "" } else { "s" }),
        }
    }

    /// Runs `plan` on one frame; returns the GPU time where measured.
    ///
    /// # Errors
    /// [`Error::Gpu`] from the GPU backend.
    pub fn process(&mut self, frame: &HostFrame, plan: &Plan) -> Result<(HostFrame, Option<u64>)> {
        match self {
            Backend::Gpu(g) => g.process(frame, plan),
            Backend::Cpu => Ok((process_cpu(frame, plan), None)),
        }
    }
}
