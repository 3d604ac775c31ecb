//! End-to-end frames/s of `Engine::run` (the code path of `framepipe
//! process`) on a generated sequence, per output codec and pool size.
//! Criterion reports elements/s = frames/s and compares the pool sizes.
//!
//! `FRAMEPIPE_BENCH_SIZE` (default 1080p), `FRAMEPIPE_BENCH_FRAMES`
//! (default 24) and `FRAMEPIPE_BENCH_BACKEND` (auto, gpu, cpu) size it;
//! under `cargo test --benches` it runs once on a tiny sequence.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use framepipe::generate::{GenerateOptions, generate_sequence, parse_size};
use framepipe::io::EncodeOptions;
use framepipe::pool::PoolSize;
use framepipe::{BackendKind, Cancel, Engine, EngineConfig, Job, Op, OpGraph};

fn env(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.into())
}

fn backend() -> BackendKind {
    match env("FRAMEPIPE_BENCH_BACKEND", "auto").as_str() {
        "gpu" => BackendKind::Gpu,
        "cpu" => BackendKind::Cpu,
        _ => BackendKind::Auto,
    }
}

fn pipeline(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let (size, frames) = if full {
        (env("FRAMEPIPE_BENCH_SIZE", "1080p"), env("FRAMEPIPE_BENCH_FRAMES", "24"))
    } else {
        ("64x36".into(), "4".into())
    };
    let (width, height) = parse_size(&size).expect("FRAMEPIPE_BENCH_SIZE");
    let frames: u32 = frames.parse().expect("FRAMEPIPE_BENCH_FRAMES");
    let dir = tempfile::tempdir().expect("temp dir");
    let graph = OpGraph::new(vec![
        Op::Matrix { matrix: [1.05, -0.03, -0.02, 0.01, 1.0, -0.01, -0.02, -0.06, 1.08], offset: [0.0; 3] },
        Op::Blur { sigma: 4.0 },
    ])
    .expect("valid ops");
    // Named by the backend that opens (auto may fall back to the CPU).
    let opened = Engine::new(EngineConfig { backend: backend(), ..Default::default() }).expect("engine");
    let name = opened.backend_name();
    drop(opened);
    for codec in ["png", "qoi", "tif"] {
        let input = dir.path().join(format!("in-{codec}/s_%04d.{codec}")).display().to_string();
        let opts = GenerateOptions { width, height, frames, ..Default::default() };
        generate_sequence(&opts, &input, &EncodeOptions::default(), false).expect("generate");
        let mut group = c.benchmark_group(format!("pipeline/{codec}/{size}/{name}"));
        group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
        group.throughput(Throughput::Elements(frames as u64));
        for pool in [1, 2, 4, 8] {
            let engine =
                Engine::new(EngineConfig { backend: backend(), pool: PoolSize::Fixed(pool), ..Default::default() })
                    .expect("engine");
            let mut job = Job::new(
                input.as_str(),
                dir.path().join(format!("out-{codec}/o_%04d.{codec}")).display().to_string(),
                graph.clone(),
            );
            job.overwrite = true;
            let prepared = framepipe::prepare(&job).expect("prepare");
            group.bench_with_input(BenchmarkId::from_parameter(pool), &pool, |b, _| {
                b.iter(|| {
                    let report = engine.run(&job, &prepared, &Cancel::default(), &mut |_| {}).expect("run");
                    assert_eq!(report.frames_written, frames as usize);
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
