//! An editor's scrub session, replayed against the engine: play forward at
//! 24 fps for two seconds, jump back, drag a grade slider on one frame
//! through 20 values, scrub forward and back with the grade the slider
//! settled on (so the frames played earlier are stale and rendered again).
//! Run once with the engine idle and once with an export of the same
//! sequence running on it, and print per-request latency percentiles, hit
//! rate, cache bytes, and where a miss spends its time: decode, waiting for
//! the backend, upload copy, GPU kernels (timestamps, where the adapter has
//! them), and the rest (submission, readback, copy out).
//!
//! ```sh
//! cargo run --release --example editor -- --size 8k          # the real thing
//! cargo run --release --example editor -- --size 1080p --backend cpu
//! ```

use std::time::{Duration, Instant};

use clap::Parser;
use framepipe::generate::{GenerateOptions, generate_sequence, parse_size};
use framepipe::io::EncodeOptions;
use framepipe::preview::{PreviewStats, Scale};
use framepipe::{BackendKind, Cancel, Engine, EngineConfig, Job, MissingPolicy, Op, OpGraph, Sequence};

#[derive(Parser)]
struct Args {
    /// Frame size of the generated sequence.
    #[arg(long, default_value = "8k")]
    size: String,
    /// Frames in the sequence (the export runs over all of them).
    #[arg(long, default_value_t = 72)]
    frames: u32,
    /// Backend.
    #[arg(long, value_enum, default_value_t)]
    backend: BackendKind,
    /// Use this existing sequence instead of generating one.
    #[arg(long)]
    input: Option<String>,
    /// VRAM budget shared by previews and the export: 512MiB, 2GiB, 1.5GB.
    #[arg(long, default_value = "2GiB", value_parser = |s: &str| framepipe::ledger::parse_bytes(s).map_err(|e| e.to_string()))]
    budget: u64,
    /// Frames prefetched ahead of the playhead.
    #[arg(long, default_value_t = EngineConfig::default().prefetch)]
    prefetch: usize,
    /// Threads that prefetch (0: half the cores, at most --prefetch).
    #[arg(long, default_value_t = 0)]
    prefetch_threads: usize,
}

fn grade(exposure: f64) -> OpGraph {
    OpGraph::new(vec![
        Op::Exposure { stops: exposure },
        Op::Contrast { contrast: 1.1, pivot: 0.45 },
        Op::Saturation { saturation: 1.1 },
        Op::Blur { sigma: 2.0 },
    ])
    .expect("valid grade")
}

struct Request {
    phase: &'static str,
    ms: f64,
    /// Found in the cache on arrival.
    hit: bool,
    /// Found being rendered by a prefetch, and waited for.
    joined: bool,
    /// For a request that rendered, the split of its time.
    miss: Option<Split>,
}

/// Where a miss spent its time, ms.
struct Split {
    decode: f64,
    wait: f64,
    upload: f64,
    /// Kernel time from GPU timestamps, where the adapter has them.
    gpu: Option<f64>,
    /// Render time less upload and kernels: submission, readback, copy out
    /// (and the kernels themselves where there are no timestamps).
    rest: f64,
}

/// Replays the session; `paced` requests wait for their 24 fps tick.
fn session(engine: &Engine, seq: &Sequence) -> Vec<Request> {
    let first = seq.frames[0].number;
    let n = seq.frames.len() as u64;
    let mut plan: Vec<(&'static str, u64, f64, bool)> = Vec::new();
    for i in 0..48.min(n) {
        plan.push(("play 24 fps", first + i, 0.0, true));
    }
    let anchor = first + (n / 8).max(1);
    plan.push(("jump back", anchor, 0.0, false));
    let settled = 0.9;
    for k in 0..20 {
        plan.push(("slider drag", anchor, -1.0 + k as f64 * 0.1, false));
    }
    // The new grade makes what was played stale: scrubbing forward renders
    // (prefetch runs ahead of it), scrubbing back hits.
    for i in 0..16.min(n - 1) {
        plan.push(("scrub", anchor + i.min(n - 1 - (anchor - first)), settled, false));
    }
    for i in (0..16.min(n - 1)).rev() {
        plan.push(("scrub", anchor + i.min(n - 1 - (anchor - first)), settled, false));
    }
    let start = Instant::now();
    let mut out = Vec::new();
    for (i, (phase, frame, exposure, paced)) in plan.into_iter().enumerate() {
        if paced {
            let tick = start + Duration::from_secs_f64(i as f64 / 24.0);
            if let Some(wait) = tick.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let before = engine.preview_stats();
        let t = Instant::now();
        let image = engine.preview(seq, frame, &grade(exposure), Scale::Quarter).expect("preview");
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let after = engine.preview_stats();
        let hit = after.previews.hits > before.previews.hits;
        let joined = after.joined > before.joined;
        let miss = (!hit && !joined).then(|| Split {
            decode: image.decode_ms,
            wait: image.wait_ms,
            upload: image.upload_ms,
            gpu: image.gpu_ms,
            rest: image.render_ms - image.upload_ms - image.gpu_ms.unwrap_or(0.0),
        });
        out.push(Request { phase, ms, hit, joined, miss });
    }
    out
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn print(label: &str, requests: &[Request], stats: &PreviewStats) {
    println!("\n### {label}\n");
    println!(
        "| phase | requests | hits | joined a prefetch | p50 ms | p95 ms | max ms | hit p95 ms \
         | render: decode ms | wait ms | upload ms | GPU ms | readback + rest ms |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut phases: Vec<&str> = requests.iter().map(|r| r.phase).collect();
    phases.dedup();
    phases.push("all");
    for phase in phases {
        let rs: Vec<&Request> = requests.iter().filter(|r| phase == "all" || r.phase == phase).collect();
        let mut ms: Vec<f64> = rs.iter().map(|r| r.ms).collect();
        let mut hit_ms: Vec<f64> = rs.iter().filter(|r| r.hit).map(|r| r.ms).collect();
        let hit_p95 = if hit_ms.is_empty() { "-".to_string() } else { format!("{:.3}", percentile(&mut hit_ms, 0.95)) };
        let misses: Vec<&Split> = rs.iter().filter_map(|r| r.miss.as_ref()).collect();
        // Means over the misses; "-" where there are none (or, for the GPU
        // column, no timestamps: the kernels are then in the last column).
        let mean = |f: &dyn Fn(&Split) -> Option<f64>| {
            let v: Vec<f64> = misses.iter().filter_map(|m| f(m)).collect();
            if v.is_empty() { "-".to_string() } else { format!("{:.1}", v.iter().sum::<f64>() / v.len() as f64) }
        };
        println!(
            "| {phase} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {hit_p95} | {} | {} | {} | {} | {} |",
            rs.len(),
            rs.iter().filter(|r| r.hit).count(),
            rs.iter().filter(|r| r.joined).count(),
            percentile(&mut ms, 0.5),
            percentile(&mut ms, 0.95),
            percentile(&mut ms, 1.0),
            mean(&|m| Some(m.decode)),
            mean(&|m| Some(m.wait)),
            mean(&|m| Some(m.upload)),
            mean(&|m| m.gpu),
            mean(&|m| Some(m.rest)),
        );
    }
    let p = stats.previews;
    println!(
        "\nhit rate {:.0} % ({} hits, {} misses of which {} joined a prefetch under way), {} prefetched, {} prefetches cancelled, preview cache {:.1} MiB in {} entries, {} evictions; {} decodes",
        100.0 * p.hits as f64 / (p.hits + p.misses).max(1) as f64,
        p.hits,
        p.misses,
        stats.joined,
        stats.prefetched,
        stats.prefetch_cancelled,
        p.bytes as f64 / 1048576.0,
        p.entries,
        p.evictions,
        stats.decodes
    );
}

fn main() -> Result<(), framepipe::Error> {
    let args = Args::parse();
    let dir = tempfile::tempdir().map_err(|source| framepipe::Error::Io { path: std::env::temp_dir(), source })?;
    let input = match &args.input {
        Some(i) => i.clone(),
        None => {
            let (width, height) = parse_size(&args.size)?;
            let pattern = dir.path().join("plates/shot_%04d.png").display().to_string();
            eprintln!("generating {} frames of {width}x{height} ...", args.frames);
            let opts = GenerateOptions { width, height, frames: args.frames, start: 1001, ..Default::default() };
            generate_sequence(&opts, &pattern, &EncodeOptions::default(), false)?;
            pattern
        }
    };
    let seq = Sequence::scan(&input, None, MissingPolicy::Error)?;
    let config = EngineConfig {
        backend: args.backend,
        vram_budget: args.budget,
        prefetch: args.prefetch,
        prefetch_threads: args.prefetch_threads,
        ..Default::default()
    };

    let idle = Engine::new(config.clone())?;
    if let Some(n) = idle.notice() {
        eprintln!("notice: {n}");
    }
    println!(
        "## Editor session: {} ({} frames), 1/4 previews, on {}, prefetching {} frames on {} thread{}",
        input,
        seq.frames.len(),
        idle.device_name(),
        args.prefetch,
        idle.prefetch_threads(),
        if idle.prefetch_threads() == 1 { "" } else { "s" }
    );
    let quiet = session(&idle, &seq);
    print("engine idle", &quiet, &idle.preview_stats());
    drop(idle);

    let busy = Engine::new(config)?;
    let mut job = Job::new(input.as_str(), dir.path().join("export/o_%04d.png").display().to_string(), grade(0.0));
    job.overwrite = true;
    let prepared = framepipe::prepare(&job)?;
    let exporter = busy.clone();
    let cancel = Cancel::default();
    let stop = cancel.clone();
    // The export restarts until the session is over, so every request
    // competes with it.
    let export = std::thread::spawn(move || -> Result<(usize, usize), framepipe::Error> {
        let (mut frames, mut runs) = (0, 0);
        while !cancel.is_cancelled() {
            frames += exporter.run(&job, &prepared, &cancel, &mut |_| {})?.frames_written;
            runs += 1;
        }
        Ok((frames, runs))
    });
    std::thread::sleep(Duration::from_millis(200));
    let requests = session(&busy, &seq);
    stop.cancel();
    let (frames, runs) = export.join().expect("export thread")?;
    print(
        &format!("export running ({frames} frames exported in {runs} passes over the sequence during the session)"),
        &requests,
        &busy.preview_stats(),
    );
    // The figures the editor issue sets targets for, in one place.
    let p95 = |rs: &[Request], phase: Option<&str>| {
        let mut ms: Vec<f64> = rs.iter().filter(|r| phase.is_none_or(|p| r.phase == p)).map(|r| r.ms).collect();
        percentile(&mut ms, 0.95)
    };
    let (idle_p95, busy_p95) = (p95(&quiet, None), p95(&requests, None));
    let hits = |rs: &[Request]| {
        let mut ms: Vec<f64> = rs.iter().filter(|r| r.hit).map(|r| r.ms).collect();
        if ms.is_empty() { f64::NAN } else { percentile(&mut ms, 0.95) }
    };
    println!(
        "
### Summary
"
    );
    println!(
        "- preview p95 with an export running / idle: {busy_p95:.2} / {idle_p95:.2} ms = {:.2}x (target ≤ 1.5x)",
        busy_p95 / idle_p95
    );
    println!(
        "- slider drag p95 (same frame, new grade each time): idle {:.2} ms, export running {:.2} ms (target < 30 ms)",
        p95(&quiet, Some("slider drag")),
        p95(&requests, Some("slider drag"))
    );
    println!("- cache hit p95: idle {:.3} ms, export running {:.3} ms (target < 1 ms)", hits(&quiet), hits(&requests));
    Ok(())
}
