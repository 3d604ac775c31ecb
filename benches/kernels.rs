//! Kernel throughput per op, frame size and backend.
//!
//! GPU figures are GPU time from timestamp queries around the compute pass
//! (not host clocks around a blocking poll); an adapter without timestamps
//! is measured on the host clock and labelled `gpu-hostclock`. Where a frame
//! is banded, each band's passes are timed on their own and summed, so the
//! copies between bands are not counted (past the 16th band the rest share
//! one bracket, copies included: frames some 32K pixels wide).
//! A GPU case runs its frame again and again, each run submitted as soon
//! as the last is back and with no host copy between, so the GPU is as
//! busy as in an export and runs at its working clock (see the case's
//! comment). CPU figures are host time.
//! Throughput counts one RGBA8 frame read plus one written, the accounting
//! of the ~2 TB/s streaming-kernel figure in the design notes (kept outside this repository); `stream` is that
//! kernel (a plain copy of the frame's bytes, timed the same way), the
//! ceiling the others are read against.
//!
//! `cargo bench --bench kernels` runs 1080p, 4K and 8K on a hardware GPU
//! and the CPU; `FRAMEPIPE_BENCH_SIZES=8k FRAMEPIPE_BENCH_BACKENDS=gpu`
//! narrows it, `gpu-software` takes a software rasterizer too (slow).
//! Under `cargo test --benches` each case runs once on a tiny frame.

use std::time::{Duration, Instant};

mod common;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use framepipe::generate::{GenerateOptions, parse_size, synthetic_frame};
use framepipe::gpu::{FrameShape, GpuBackend, GpuOptions};
use framepipe::{Backend, Op, OpGraph, PixelFormat};

fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn list(var: &str, default: &str) -> Vec<String> {
    std::env::var(var).unwrap_or_else(|_| default.into()).split(',').map(|s| s.trim().to_string()).collect()
}

fn cases() -> Vec<(String, Vec<Op>)> {
    let color = vec![
        Op::Exposure { stops: 0.3 },
        Op::Matrix { matrix: [1.05, -0.03, -0.02, 0.01, 1.0, -0.01, -0.02, -0.06, 1.08], offset: [0.01, 0.0, -0.01] },
        Op::Contrast { contrast: 1.15, pivot: 0.45 },
        Op::Saturation { saturation: 1.1 },
    ];
    let mut v = vec![("color".to_string(), color.clone())];
    for sigma in [1.0, 4.0, 16.0, 64.0] {
        v.push((format!("blur{sigma}"), vec![Op::Blur { sigma }]));
    }
    let mut both = color;
    both.push(Op::Blur { sigma: 4.0 });
    v.push(("color+blur4".into(), both));
    v
}

fn kernels(c: &mut Criterion) {
    let sizes = if full_run() { list("FRAMEPIPE_BENCH_SIZES", "1080p,4k,8k") } else { vec!["64x36".into()] };
    let mut backends: Vec<(String, Backend)> = Vec::new();
    for name in list("FRAMEPIPE_BENCH_BACKENDS", "gpu,cpu") {
        match name.as_str() {
            "cpu" => backends.push(("cpu".into(), Backend::Cpu)),
            "gpu" | "gpu-software" => {
                // `gpu-software` names the software rasterizer, whatever
                // else the machine has; `gpu` takes the best adapter.
                let adapter = (name == "gpu-software").then(|| {
                    let instance = framepipe::gpu::instance();
                    let adapters = framepipe::gpu::list_adapters(&instance);
                    adapters.into_iter().find(|(_, a)| a.software).map(|(_, a)| a.name)
                });
                if adapter == Some(None) {
                    eprintln!("gpu-software: no software adapter found");
                    continue;
                }
                let options = GpuOptions { adapter: adapter.flatten(), ..Default::default() };
                match GpuBackend::new(&options, framepipe::ledger::Ledger::unlimited()) {
                    // A software rasterizer takes minutes per 8K blur: measured
                    // only when asked for by name (or once, tiny, in tests).
                    Ok(g) if g.adapter().software && full_run() && name == "gpu" => {
                        eprintln!(
                            "skipping {} (software): FRAMEPIPE_BENCH_BACKENDS=gpu-software to measure it",
                            g.adapter().name
                        )
                    }
                    Ok(g) => {
                        let label = if g.adapter().software { "gpu-software" } else { "gpu" };
                        // Without timestamps the figure is host time around a
                        // blocking poll (copies and mapping included): say so in
                        // the id, so it is never read as kernel time.
                        let label =
                            if g.adapter().timestamps { label.to_string() } else { format!("{label}-hostclock") };
                        // Asked for twice (`gpu,gpu-software` where the only
                        // adapter is software): measured once.
                        if backends.iter().any(|(l, _)| *l == label) {
                            continue;
                        }
                        eprintln!("gpu: {} (timestamps: {})", g.adapter().name, g.adapter().timestamps);
                        backends.push((label, Backend::Gpu(Box::new(g))));
                    }
                    Err(e) => eprintln!("no GPU backend: {e}"),
                }
            }
            other => panic!("unknown backend {other:?} in FRAMEPIPE_BENCH_BACKENDS"),
        }
    }
    for size in sizes {
        let (width, height) = parse_size(&size).expect("size");
        let opts = GenerateOptions { width, height, format: PixelFormat::Rgba8, ..Default::default() };
        let frame = synthetic_frame(&opts, 1);
        let mut group = c.benchmark_group(format!("kernels/{size}"));
        group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(common::measuring_time(3.0));
        // Decimal units: criterion prints GB/s, the unit the ~2 TB/s
        // streaming figure is quoted in.
        group.throughput(Throughput::BytesDecimal(2 * frame.data.len() as u64));
        // The reference: a kernel that only copies a frame's bytes.
        for (label, backend) in backends.iter() {
            if let Backend::Gpu(g) = backend {
                group.bench_function(BenchmarkId::new("stream", label), |b| {
                    // All of criterion's iterations in one submission, back
                    // to back, as the frame kernels run (see `stream_copy`).
                    // At most 1024 passes a submission: a command buffer of
                    // criterion's every iteration could hold 100,000s.
                    b.iter_custom(|iters| {
                        let want = frame.data.len() as u64;
                        let mut ns = 0.0;
                        let mut left = iters;
                        while left > 0 {
                            let passes = left.min(1024);
                            let c = g.stream_copy(want, passes as u32).expect("stream");
                            // A frame larger than one binding is copied in
                            // part: scaled to the whole (a streaming copy is
                            // linear).
                            ns += c.ns as f64 * want as f64 / c.bytes as f64;
                            left -= passes;
                        }
                        Duration::from_nanos(ns as u64)
                    })
                });
            }
        }
        for (name, ops) in cases() {
            let plan = OpGraph::new(ops).expect("valid ops").plan();
            for (label, backend) in backends.iter_mut() {
                group.bench_with_input(BenchmarkId::new(&name, &*label), &plan, |b, plan| match backend {
                    Backend::Gpu(g) => {
                        // The frame goes up once; each iteration runs the
                        // plan on it again (copy in, kernels, copy out) as
                        // soon as the last is back, with no host copy
                        // between, so the GPU is as busy as in an export. Timed one frame at a time
                        // with host copies between, an H100 idled at its
                        // 345 MHz clock rather than 1980 MHz and the kernels
                        // took 5x longer than in a pipelined run.
                        let shape = FrameShape::of(&frame);
                        let slot = g.new_slot(shape).expect("slot");
                        let readback = g.new_readback(shape).expect("readback");
                        slot.write(&frame.data).expect("upload");
                        b.iter_custom(|iters| {
                            let mut total = Duration::ZERO;
                            for _ in 0..iters {
                                let t = Instant::now();
                                let ns = g.submit(&slot, &readback, plan).and_then(|f| f.wait(&slot)).expect("run");
                                // A figure labelled as GPU time never falls
                                // back to the host clock.
                                total += match (ns, label.as_str()) {
                                    (Some(ns), _) => Duration::from_nanos(ns),
                                    (None, "gpu" | "gpu-software") => panic!("{label}: a frame came back untimed"),
                                    (None, _) => t.elapsed(),
                                };
                            }
                            total
                        })
                    }
                    Backend::Cpu => b.iter(|| backend.process(&frame, plan).expect("process")),
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
