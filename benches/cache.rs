//! Preview latency: a cache hit, a miss that re-grades a cached source
//! (the slider-drag case), a miss that decodes, and a scrub back and forth.
//!
//! `FRAMEPIPE_BENCH_SIZE` (default 4k) and `FRAMEPIPE_BENCH_BACKEND`
//! (auto, gpu, cpu) size it; under `cargo test --benches` it runs once on
//! a tiny sequence.

use std::time::{Duration, Instant};

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use framepipe::generate::{GenerateOptions, generate_sequence, parse_size};
use framepipe::io::EncodeOptions;
use framepipe::preview::Scale;
use framepipe::{BackendKind, Engine, EngineConfig, MissingPolicy, Op, OpGraph, Sequence};

fn grade(stops: f64) -> OpGraph {
    OpGraph::new(vec![Op::Exposure { stops }, Op::Blur { sigma: 2.0 }]).expect("valid ops")
}

fn cache(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let size =
        if full { std::env::var("FRAMEPIPE_BENCH_SIZE").unwrap_or_else(|_| "4k".into()) } else { "64x36".into() };
    let backend = match std::env::var("FRAMEPIPE_BENCH_BACKEND").as_deref() {
        Ok("gpu") => BackendKind::Gpu,
        Ok("cpu") => BackendKind::Cpu,
        _ => BackendKind::Auto,
    };
    let (width, height) = parse_size(&size).expect("FRAMEPIPE_BENCH_SIZE");
    let dir = tempfile::tempdir().expect("temp dir");
    let pattern = dir.path().join("s_%04d.png").display().to_string();
    let frames = 12;
    let opts = GenerateOptions { width, height, frames, ..Default::default() };
    generate_sequence(&opts, &pattern, &EncodeOptions::default(), false).expect("generate");
    let seq = Sequence::scan(&pattern, None, MissingPolicy::Error).expect("scan");
    let engine = |source_cache_bytes| {
        Engine::new(EngineConfig { backend, prefetch: 0, source_cache_bytes, ..Default::default() }).expect("engine")
    };

    let e = engine(1 << 30);
    // Named by the backend that opened (auto may have fallen back).
    let mut group = c.benchmark_group(format!("preview/{size}/{}", e.backend_name()));
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(common::measuring_time(3.0));
    e.preview(&seq, 1, &grade(0.0), Scale::Quarter).expect("preview");
    group.bench_function("hit", |b| b.iter(|| e.preview(&seq, 1, &grade(0.0), Scale::Quarter).expect("preview")));
    let mut stops = 0.0;
    group.bench_function("miss, source cached (slider drag)", |b| {
        b.iter(|| {
            stops = (stops + 1e-3) % 4.0; // a new grade each time, within range
            e.preview(&seq, 1, &grade(stops), Scale::Quarter).expect("preview")
        })
    });
    let cold = engine(0); // no source cache: every miss decodes
    group.bench_function("miss, decode", |b| {
        b.iter(|| {
            stops = (stops + 1e-3) % 4.0; // a new grade each time, within range
            cold.preview(&seq, 2, &grade(stops), Scale::Quarter).expect("preview")
        })
    });
    // An editor that has shown a frame already (its slot and kernel
    // buffers exist), scrubbing forward (misses) and back (hits).
    group.bench_function("scrub 12 frames there (misses) and back (hits)", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let e = engine(1 << 30);
                e.preview(&seq, 1, &grade(1.0), Scale::Quarter).expect("preview");
                let t = Instant::now();
                for f in (1..=frames as u64).chain((1..=frames as u64).rev()) {
                    e.preview(&seq, f, &grade(0.0), Scale::Quarter).expect("preview");
                }
                total += t.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, cache);
criterion_main!(benches);
