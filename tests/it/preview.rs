//! Previews: cache hits without work, the byte bound, LRU order, no stale
//! images, agreement with a CPU downscale, priority over a running export,
//! and many threads at once.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use framepipe::generate::{GenerateOptions, generate_sequence};
use framepipe::gpu::{FrameShape, GpuBackend};
use framepipe::io::{DecodeLimits, EncodeOptions, decode_file};
use framepipe::pool::PoolSize;
use framepipe::preview::{Scale, TraceEvent};
use framepipe::{
    BackendKind, Cancel, Engine, EngineConfig, Error, FrameSpec, HostFrame, Job, MissingPolicy, Op, OpGraph,
    PixelFormat, Sequence, process_cpu,
};

use crate::util::{Rng, backends};

fn sequence(dir: &Path, frames: u32, width: u32, height: u32, format: PixelFormat) -> Sequence {
    let seed = Rng::fresh("preview sequence").next();
    let opts = GenerateOptions { width, height, frames, start: 1, format, alpha: true, seed };
    let p = dir.join("p/s_%03d.png").display().to_string();
    generate_sequence(&opts, &p, &EncodeOptions::default(), false).unwrap();
    Sequence::scan(&p, None, MissingPolicy::Error).unwrap()
}

fn grade(exposure: f64) -> OpGraph {
    OpGraph::new(vec![Op::Exposure { stops: exposure }, Op::Blur { sigma: 1.2 }, Op::Saturation { saturation: 1.2 }])
        .unwrap()
}

fn engine(backend: BackendKind, preview_cache_bytes: u64) -> Engine {
    Engine::new(EngineConfig { backend, preview_cache_bytes, prefetch: 0, ..Default::default() }).unwrap()
}

/// Starts `job` on `engine` in another thread (pipelined, or one frame at
/// a time) and returns once two of its frames are written, so what follows
/// runs beside a live export.
fn start_export(engine: &Engine, job: Job, sequential: bool) -> std::thread::JoinHandle<framepipe::Report> {
    let prepared = framepipe::prepare(&job).unwrap();
    let exporter = engine.clone();
    let (running_tx, running) = crossbeam_channel::bounded(1);
    let export = std::thread::spawn(move || {
        let mut progress = |p: framepipe::Progress<'_>| {
            if let framepipe::Progress::Done { finished: 2, .. } = p {
                let _ = running_tx.send(());
            }
        };
        let cancel = Cancel::default();
        if sequential {
            exporter.run_sequential(&job, &prepared, &cancel, &mut progress).unwrap()
        } else {
            exporter.run(&job, &prepared, &cancel, &mut progress).unwrap()
        }
    });
    running.recv_timeout(Duration::from_secs(60)).unwrap();
    export
}

/// The test's own area average of a full-resolution render, to RGBA8.
fn area_average(full: &HostFrame, s: u32) -> (u32, u32, Vec<u8>) {
    let (w, h) = (full.width.div_ceil(s), full.height.div_ceil(s));
    let max = full.format.max_value() as f64;
    let mut out = Vec::new();
    for oy in 0..h {
        for ox in 0..w {
            let (xs, ys) = (ox * s..((ox + 1) * s).min(full.width), oy * s..((oy + 1) * s).min(full.height));
            let n = (xs.len() * ys.len()) as f64;
            for c in 0..4 {
                let mut sum = 0.0;
                for y in ys.clone() {
                    for x in xs.clone() {
                        sum += full.channel(((y * full.width + x) * 4 + c) as usize) as f64 / max;
                    }
                }
                out.push(((sum / n).clamp(0.0, 1.0) * 255.0 + 0.5).floor() as u8);
            }
        }
    }
    (w, h, out)
}

#[test]
fn preview_equals_cpu_downscale_of_the_full_render() {
    let t = tempfile::tempdir().unwrap();
    for format in [PixelFormat::Rgba8, PixelFormat::Rgba16] {
        // Odd sizes: the last blocks are partial.
        let seq = sequence(&t.path().join(format!("{format}")), 2, 77, 45, format);
        let graph = grade(0.4);
        let src = decode_file(&seq.frames[1].path, &DecodeLimits::default()).unwrap();
        let full = process_cpu(&src, &graph.plan());
        // On the GPU also in bands of a few rows (as an 8K frame is): each
        // band's preview rows land in their place.
        let banded = Some(20 * 77 * 16);
        let mut engines: Vec<_> = backends().into_iter().map(|b| (b, None)).collect();
        if engines.len() > 1 {
            engines.push((BackendKind::Gpu, banded));
        }
        for (backend, band_bytes) in engines {
            let e = Engine::new(EngineConfig {
                backend,
                preview_cache_bytes: 64 << 20,
                prefetch: 0,
                band_bytes,
                ..Default::default()
            })
            .unwrap();
            for scale in [Scale::Full, Scale::Half, Scale::Quarter, Scale::Eighth] {
                let p = e.preview(&seq, 2, &graph, scale).unwrap();
                let (w, h, expected) = area_average(&full, scale.factor());
                assert_eq!((p.width, p.height), (w, h), "{backend:?} {scale:?}");
                let worst = p.data.iter().zip(&expected).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap();
                assert!(worst <= 1, "{backend:?} {band_bytes:?} {format} {scale:?}: off by {worst}");
            }
        }
    }
}

/// A request that fails is a miss all the same (the hit rate counts every
/// request not found in the cache); a grade out of range fails before any
/// work, as a usage error.
#[test]
fn failed_requests_count_as_misses() {
    let t = tempfile::tempdir().unwrap();
    let seq = sequence(t.path(), 2, 32, 24, PixelFormat::Rgba8);
    std::fs::write(&seq.frames[1].path, b"not a png").unwrap();
    let e = engine(BackendKind::Cpu, 64 << 20);
    let err = e.preview(&seq, 2, &grade(0.2), Scale::Half).unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err}");
    let mut wild = grade(0.2);
    wild.ops[0] = Op::Exposure { stops: 99.0 };
    assert!(e.preview(&seq, 1, &wild, Scale::Half).unwrap_err().is_usage());
    let s = e.preview_stats();
    // The bad grade was refused before it was a request: not counted.
    assert_eq!((s.previews.hits, s.previews.misses), (0, 1), "{s:?}");
}

/// A frame whose file went after the sequence was scanned is the I/O
/// error an export meets (an editor rescans on it), not a decode failure.
#[test]
fn a_frame_removed_since_the_scan_is_an_io_error() {
    let t = tempfile::tempdir().unwrap();
    let seq = sequence(t.path(), 2, 32, 24, PixelFormat::Rgba8);
    std::fs::remove_file(&seq.frames[1].path).unwrap();
    let e = engine(BackendKind::Cpu, 64 << 20);
    let err = e.preview(&seq, 2, &grade(0.2), Scale::Half).unwrap_err();
    assert!(matches!(&err, Error::Io { path, .. } if path == &seq.frames[1].path), "{err}");
}

#[test]
fn hits_do_no_work_and_grade_changes_are_never_stale() {
    let t = tempfile::tempdir().unwrap();
    let seq = sequence(t.path(), 3, 64, 40, PixelFormat::Rgba8);
    for backend in backends() {
        let e = engine(backend, 64 << 20);
        let first = e.preview(&seq, 1, &grade(0.2), Scale::Quarter).unwrap();
        let before = e.preview_stats();
        let again = e.preview(&seq, 1, &grade(0.2), Scale::Quarter).unwrap();
        let after = e.preview_stats();
        assert!(Arc::ptr_eq(&first, &again), "a hit returns the cached image");
        assert_eq!((after.renders, after.decodes), (before.renders, before.decodes), "no GPU work, no decode");
        assert_eq!(after.previews.hits, before.previews.hits + 1);
        // Drag a slider: a new grade renders again, from the cached source.
        let mut rng = Rng::fresh("slider");
        for _ in 0..5 {
            let stops = rng.next() as f64 / u64::MAX as f64 - 0.5;
            let graded = e.preview(&seq, 1, &grade(stops), Scale::Quarter).unwrap();
            let fresh = engine(backend, 64 << 20).preview(&seq, 1, &grade(stops), Scale::Quarter).unwrap();
            assert_eq!(graded.data, fresh.data, "stops {stops}: never a stale image");
        }
        let s = e.preview_stats();
        assert_eq!(s.decodes, 1, "re-grading one frame decodes it once");
        assert_eq!(s.renders, 6);
        let uploads = if backend == BackendKind::Gpu { 1 } else { 0 };
        assert_eq!(s.uploads, uploads, "{backend:?}: the GPU slot keeps the frame it holds across grades");
        // Across frames: the slot's pixels are another frame's by the time
        // frame 1 comes back with a new grade, and must not be reused.
        for (f, stops) in [(2, 0.1), (1, 0.15), (2, 0.2), (3, 0.2), (1, 0.25)] {
            let got = e.preview(&seq, f, &grade(stops), Scale::Quarter).unwrap();
            let fresh = engine(backend, 64 << 20).preview(&seq, f, &grade(stops), Scale::Quarter).unwrap();
            assert_eq!(got.data, fresh.data, "{backend:?}: frame {f} at {stops} after another frame");
        }
        // A plate re-rendered under the same name: the new pixels, not
        // the cached preview or the cached source of the old file.
        let old = e.preview(&seq, 3, &grade(0.2), Scale::Quarter).unwrap();
        let seed = Rng::fresh("re-rendered plate").next();
        let opts =
            GenerateOptions { width: 64, height: 40, frames: 1, start: 3, alpha: true, seed, ..Default::default() };
        let pattern = t.path().join("p/s_%03d.png").display().to_string();
        generate_sequence(&opts, &pattern, &EncodeOptions::default(), true).unwrap();
        let new = e.preview(&seq, 3, &grade(0.2), Scale::Quarter).unwrap();
        let fresh = engine(backend, 64 << 20).preview(&seq, 3, &grade(0.2), Scale::Quarter).unwrap();
        assert_eq!(new.data, fresh.data, "{backend:?}: the re-rendered plate");
        assert_ne!(new.data, old.data, "{backend:?}: new content");
    }
}

/// A slider dragged faster than a frame decodes: every grade asked for at
/// once waits for one decode of the file, and each gets its own grade.
#[test]
fn grades_of_one_frame_asked_at_once_decode_it_once() {
    let t = tempfile::tempdir().unwrap();
    let seq = sequence(t.path(), 1, 256, 192, PixelFormat::Rgba8);
    for backend in backends() {
        let e = engine(backend, 64 << 20);
        let stops = [-0.3, -0.1, 0.1, 0.3, 0.5];
        let asked: Vec<_> = stops.iter().map(|&s| e.preview_async(&seq, 1, &grade(s), Scale::Half)).collect();
        for (rx, s) in asked.into_iter().zip(stops) {
            let got = rx.recv_timeout(Duration::from_secs(120)).unwrap().unwrap();
            let fresh = engine(backend, 64 << 20).preview(&seq, 1, &grade(s), Scale::Half).unwrap();
            assert_eq!(got.data, fresh.data, "{backend:?} stops {s}: its own grade");
        }
        assert_eq!(e.preview_stats().decodes, 1, "{backend:?}: one decode for five grades");
    }
}

/// A slider dragged on a frame larger than the source cache (here one of
/// no bytes) still decodes it once: the source a preview decoded last is
/// kept, whatever the prefetches ahead of it decode meanwhile.
#[test]
fn a_slider_on_a_frame_larger_than_the_source_cache_decodes_it_once() {
    let t = tempfile::tempdir().unwrap();
    let seq = sequence(t.path(), 6, 64, 40, PixelFormat::Rgba8);
    for backend in backends() {
        let config = EngineConfig { backend, source_cache_bytes: 0, prefetch: 2, ..Default::default() };
        let e = Engine::new(config).unwrap();
        // Stepping onto frame 2 prefetches 3 and 4; let them land.
        e.preview(&seq, 1, &grade(-0.2), Scale::Half).unwrap();
        e.preview(&seq, 2, &grade(-0.2), Scale::Half).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !(3..=4).all(|f| e.preview_cached(&seq, f, &grade(-0.2), Scale::Half)) {
            assert!(std::time::Instant::now() < deadline, "{backend:?}: the prefetches land");
            std::thread::sleep(Duration::from_millis(10));
        }
        let before = e.preview_stats();
        assert_eq!(before.decodes, 4, "{backend:?}: frames 1 to 4, once each");
        assert_eq!(before.sources.too_large, 4, "{backend:?}: none kept in the cache, each counted");
        for stops in [0.0, 0.2, 0.4] {
            e.preview(&seq, 2, &grade(stops), Scale::Half).unwrap();
        }
        let after = e.preview_stats();
        assert_eq!(after.decodes, before.decodes, "{backend:?}: three more grades of frame 2, no decode");
        // The source kept beside the cache served them: hits, not misses.
        assert_eq!(after.sources.hits - before.sources.hits, 3, "{backend:?}");
        assert_eq!(after.sources.misses, before.sources.misses, "{backend:?}");
    }
}

/// A slider dragged faster than frames render, through one view: the
/// newest request gets its own image; those it overtook before they
/// rendered end as superseded rather than taking the backend in turn.
#[test]
fn a_view_serves_its_newest_request_and_drops_the_ones_it_overtook() {
    let t = tempfile::tempdir().unwrap();
    let seq = sequence(t.path(), 1, 1024, 768, PixelFormat::Rgba8);
    for backend in backends() {
        let e = engine(backend, 64 << 20);
        let view = e.preview_view();
        let stops: Vec<f64> = (0..10).map(|i| i as f64 * 0.05 - 0.2).collect();
        let asked: Vec<_> = stops.iter().map(|&s| view.request(&seq, 1, &grade(s), Scale::Quarter)).collect();
        let results: Vec<_> = asked.into_iter().map(|rx| rx.recv_timeout(Duration::from_secs(120)).unwrap()).collect();
        let (newest, overtaken) = results.split_last().unwrap();
        let fresh = |s: f64| engine(backend, 64 << 20).preview(&seq, 1, &grade(s), Scale::Quarter).unwrap();
        assert_eq!(newest.as_ref().unwrap().data, fresh(stops[9]).data, "{backend:?}: the newest, its own grade");
        let dropped = overtaken.iter().filter(|r| matches!(r, Err(Error::Superseded))).count();
        assert!(dropped >= 5, "{backend:?}: {dropped} of 9 overtaken requests dropped");
        assert_eq!(e.preview_stats().renders as usize, 10 - dropped, "{backend:?}: the dropped never rendered");
        // One that rendered before it was overtaken is its own grade too.
        if let Some((Ok(image), &s)) = overtaken.iter().zip(&stops).find(|(r, _)| r.is_ok()) {
            assert_eq!(image.data, fresh(s).data, "{backend:?} stops {s}");
        }
        // Another view, or a plain request, is not superseded by this one.
        let other = e.preview_view().request(&seq, 1, &grade(0.9), Scale::Quarter);
        let _ = view.request(&seq, 1, &grade(0.95), Scale::Quarter);
        assert!(other.recv_timeout(Duration::from_secs(120)).unwrap().is_ok());
    }
}

#[test]
fn cache_is_bounded_and_evicts_least_recently_used() {
    let t = tempfile::tempdir().unwrap();
    let seq = sequence(t.path(), 6, 64, 40, PixelFormat::Rgba8);
    let one = 16 * 10 * 4; // a 1/4 preview of 64x40
    let e = engine(BackendKind::Cpu, 3 * one);
    let g = grade(0.1);
    for f in [1, 2, 3] {
        e.preview(&seq, f, &g, Scale::Quarter).unwrap();
    }
    e.preview(&seq, 1, &g, Scale::Quarter).unwrap(); // 2 is now the least recent
    e.preview(&seq, 4, &g, Scale::Quarter).unwrap();
    assert!(!e.preview_cached(&seq, 2, &g, Scale::Quarter));
    for f in [1, 3, 4] {
        assert!(e.preview_cached(&seq, f, &g, Scale::Quarter), "frame {f}");
    }
    for f in 1..=6 {
        e.preview(&seq, f, &g, Scale::Quarter).unwrap();
        let s = e.preview_stats().previews;
        assert!(s.bytes <= 3 * one, "{s:?}");
    }
    assert!(e.preview_stats().previews.evictions >= 4);
}

#[test]
fn previews_go_ahead_of_export_frames() {
    let t = tempfile::tempdir().unwrap();
    let seq = sequence(t.path(), 60, 320, 200, PixelFormat::Rgba8);
    // An export with no ops (a copy) meets previews nowhere but the CPU: it
    // is held back all the same. So is the one-frame-at-a-time export, and
    // so are exports beside prefetches (which rank between the two).
    let copy = OpGraph::new(vec![]).unwrap();
    let cases = |b| [(b, grade(0.3), false, 0), (b, copy.clone(), false, 0), (b, grade(0.3), true, 2)];
    for (backend, export_graph, sequential, prefetch) in backends().into_iter().flat_map(cases) {
        let e =
            Engine::new(EngineConfig { backend, threads: 2, pool: PoolSize::Fixed(2), prefetch, ..Default::default() })
                .unwrap();
        e.enable_trace();
        let ops = export_graph.ops.len();
        let case = format!("{backend:?}, {ops} ops, sequential {sequential}, prefetch {prefetch}");
        let job = Job::new(
            seq.source.as_str(),
            t.path().join(format!("{backend:?}{ops}{sequential}/o_%03d.png")).display().to_string(),
            export_graph,
        );
        let export = start_export(&e, job, sequential);
        // Ask for previews while the export runs.
        for f in [55, 30, 5] {
            e.preview(&seq, f, &grade(-0.2), Scale::Half).unwrap();
        }
        let report = export.join().unwrap();
        assert_eq!(report.frames_written, 60);
        let checked = previews_went_first(&e.take_trace(), &[55, 30, 5], 60);
        assert!(checked > 0, "{case}: the export ended before the previews were asked for");
        eprintln!("{case}: {checked} export frames started after a preview request and finished after it");
    }
}

/// Checks in `trace` that every export frame (of `1..=total`) that started
/// decoding after a preview of `previews` was asked for finished after
/// that preview; returns how many such frames there were.
fn previews_went_first(trace: &[(Instant, TraceEvent)], previews: &[u64], total: u64) -> usize {
    let at = |ev: TraceEvent| trace.iter().find(|(_, e)| *e == ev).map(|(t, _)| *t);
    let mut checked = 0;
    for &f in previews {
        let asked = at(TraceEvent::PreviewRequested(f)).unwrap();
        let done = at(TraceEvent::PreviewDone(f)).unwrap();
        for n in 1..=total {
            let started = at(TraceEvent::ExportDecodeStart(n)).unwrap();
            if started > asked {
                checked += 1;
                let written = at(TraceEvent::ExportFrameDone(n)).unwrap();
                assert!(done < written, "export frame {n} finished before preview {f}");
            }
        }
    }
    checked
}

#[test]
fn many_threads_at_once() {
    let t = tempfile::tempdir().unwrap();
    let seq = Arc::new(sequence(t.path(), 12, 48, 32, PixelFormat::Rgba8));
    let sources: Arc<Vec<HostFrame>> =
        Arc::new(seq.frames.iter().map(|f| decode_file(&f.path, &DecodeLimits::default()).unwrap()).collect());
    for backend in backends() {
        let cap = 24 * 16 * 4 * 5; // five half-scale previews
        let e =
            Engine::new(EngineConfig { backend, preview_cache_bytes: cap, prefetch: 2, ..Default::default() }).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (e, seq, sources) = (e.clone(), seq.clone(), sources.clone());
                std::thread::spawn(move || {
                    let mut rng = Rng::fresh(&format!("thread {i}"));
                    let mut n = 0;
                    while Instant::now() < deadline {
                        let frame = 1 + rng.next() % 12;
                        let scale = [Scale::Half, Scale::Quarter, Scale::Eighth][(rng.next() % 3) as usize];
                        // Grades of two blur radii: kernel sets of two layouts
                        // are reserved, held and rendered side by side.
                        let stops = (rng.next() % 4) as f64 * 0.1;
                        let sigma = [1.2, 3.0][(rng.next() % 2) as usize];
                        let g = OpGraph::new(vec![Op::Exposure { stops }, Op::Blur { sigma }]).unwrap();
                        let p = e.preview(&seq, frame, &g, scale).unwrap();
                        assert_eq!(p.frame, frame);
                        // Its own frame, grade and scale: no other request's
                        // image, whatever ran beside it.
                        let full = process_cpu(&sources[frame as usize - 1], &g.plan());
                        let (w, h, expected) = area_average(&full, scale.factor());
                        assert_eq!((p.width, p.height), (w, h));
                        let worst = p.data.iter().zip(&expected).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
                        assert!(worst <= 1, "frame {frame} {g:?} {scale:?}: off by {worst}");
                        assert!(e.preview_stats().previews.bytes <= cap);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        // A deadlock fails the test instead of hanging it.
        let (done_tx, done) = crossbeam_channel::unbounded();
        for h in threads {
            let done_tx = done_tx.clone();
            std::thread::spawn(move || {
                let _ = done_tx.send(h.join());
            });
        }
        let total: usize = (0..8)
            .map(|_| done.recv_timeout(Duration::from_secs(120)).expect("a preview thread hung").expect("no panic"))
            .sum();
        assert!(total > 8, "{backend:?}: {total} previews");
        assert!(e.preview_stats().previews.bytes <= cap);
    }
}

/// The kernel buffer bytes the GPU backend needs for `graph` on `shape`.
/// A GPU test's frames: `frames` of `width x height` RGBA8 in a new
/// folder, and their shape; `None` (the test returns) without an adapter.
fn gpu_sequence(frames: u32, width: u32, height: u32) -> Option<(tempfile::TempDir, Sequence, FrameShape)> {
    crate::util::gpu(Default::default())?;
    let t = tempfile::tempdir().unwrap();
    let seq = sequence(t.path(), frames, width, height, PixelFormat::Rgba8);
    Some((t, seq, FrameShape { width, height, format: PixelFormat::Rgba8 }))
}

fn kernel_bytes(shape: FrameShape, graph: &OpGraph) -> u64 {
    let probe = engine(BackendKind::Gpu, 1 << 20);
    match &*probe.backend().lock(framepipe::priority::Priority::Export) {
        framepipe::Backend::Gpu(g) => g.compute_bytes(shape, &graph.plan()).unwrap(),
        framepipe::Backend::Cpu => unreachable!("a GPU engine"),
    }
}

#[test]
fn a_full_budget_makes_the_export_yield_to_previews() {
    let Some((t, seq, shape)) = gpu_sequence(100, 160, 96) else { return };
    let ring = framepipe::pipeline::GPU_DEPTH as u64 * GpuBackend::readback_bytes(shape);
    let fixed = ring + kernel_bytes(shape, &grade(0.3));
    // The export's kernel buffers and four slots fill the budget, with
    // half a slot to spare: less than a preview needs. Then one slot, which
    // the export gives up too; then the one-frame-at-a-time export, which
    // gives up the slot it keeps between frames.
    for (slots, sequential) in [(4, false), (1, false), (1, true)] {
        let slot = GpuBackend::slot_bytes(shape);
        // One readback buffer for the sequential export, which has one, and
        // where a second would cost the second slot.
        let readbacks = if sequential || slots == 1 { 1 } else { framepipe::pipeline::GPU_DEPTH as u64 };
        let budget = fixed - ring + readbacks * GpuBackend::readback_bytes(shape) + slots * slot + slot / 2;
        let e = Engine::new(EngineConfig {
            backend: BackendKind::Gpu,
            vram_budget: budget,
            threads: 2,
            pool: PoolSize::Auto,
            prefetch: 0,
            preview_memory_idle: Duration::from_millis(50),
            ..Default::default()
        })
        .unwrap();
        e.enable_trace();
        let out = t.path().join(format!("o{slots}{sequential}/o_%03d.png")).display().to_string();
        let export = start_export(&e, Job::new(seq.source.as_str(), out, grade(0.3)), sequential);
        // Each new grade needs kernel buffers of its own: memory again. The
        // last blurs wider: buffers of another layout, which take the
        // export's own (no room for both); the export waits, then rebuilds.
        let wider = OpGraph::new(vec![Op::Exposure { stops: 0.1 }, Op::Blur { sigma: 2.7 }]).unwrap();
        for (f, g) in [(7, grade(-0.4)), (20, grade(-0.2)), (33, wider)] {
            let p = e.preview(&seq, f, &g, Scale::Quarter).expect("the preview gets memory");
            assert_eq!((p.width, p.height), (40, 24));
        }
        let last_preview = Instant::now();
        let report = export.join().unwrap();
        assert_eq!(report.frames_written, 100, "the export slowed down but finished: {:?}", report.failures);
        assert!(e.ledger().peak() <= budget);
        if sequential {
            continue;
        }
        assert_eq!(report.pool_size as u64, slots);
        assert!(report.slots_yielded > 0, "{slots} slots: the export gave slots back");
        assert!(e.ledger().peak() <= budget);
        // Once the previews went quiet their memory came back to the
        // export, which regrew the whole pool.
        eprintln!("{slots} slots: export ran {:.2} s past the last preview", last_preview.elapsed().as_secs_f64());
        assert_eq!(report.slots_regrown, report.slots_yielded, "{report:?}");
        // Memory came from frames already under way, never from frames
        // started after a request, which then finish after it.
        let checked = previews_went_first(&e.take_trace(), &[7, 20, 33], 100);
        assert!(checked > 0, "{slots} slots: the export ended before the previews were asked for");
    }
}

/// At the budget `session_vram` names, previews of the export's own grade
/// run beside it: the export gives up its slot, and the preview's
/// downscale buffers fit beside what it keeps, its readback ring of two
/// included. (Above `export_vram` and `preview_vram` alone is not enough.)
#[test]
fn previews_run_beside_an_export_at_the_session_budget() {
    let Some((t, seq, shape)) = gpu_sequence(30, 160, 96) else { return };
    let probe = engine(BackendKind::Gpu, 1 << 20);
    let session = probe.session_vram(shape, &grade(0.3), Scale::Quarter).unwrap().unwrap();
    let (export, preview) = (
        probe.export_vram(shape, &grade(0.3)).unwrap().unwrap(),
        probe.preview_vram(shape, &grade(0.3), Scale::Quarter).unwrap().unwrap(),
    );
    assert!(session > export.max(preview), "{session} {export} {preview}");
    let e = Engine::new(EngineConfig {
        backend: BackendKind::Gpu,
        vram_budget: session,
        threads: 2,
        prefetch: 0,
        ..Default::default()
    })
    .unwrap();
    let out = t.path().join("o/o_%03d.png").display().to_string();
    let export = start_export(&e, Job::new(seq.source.as_str(), out, grade(0.3)), false);
    for f in [5, 12, 19] {
        e.preview(&seq, f, &grade(0.3), Scale::Quarter).expect("the preview gets memory");
    }
    assert_eq!(export.join().unwrap().frames_written, 30);
    assert!(e.ledger().peak() <= session);
    assert_eq!(engine(BackendKind::Cpu, 1 << 20).session_vram(shape, &grade(0.3), Scale::Quarter).unwrap(), None);
}

/// An export whose one frame is more than the whole budget fails at once,
/// even beside an editor that holds memory: nothing it gives back helps.
#[test]
fn an_export_no_budget_holds_fails_at_once_beside_an_active_editor() {
    let Some((t, seq, shape)) = gpu_sequence(3, 96, 64) else { return };
    let probe = engine(BackendKind::Gpu, 1 << 20);
    let preview = probe.preview_vram(shape, &grade(0.3), Scale::Quarter).unwrap().unwrap();
    assert!(preview < probe.export_vram(shape, &grade(0.3)).unwrap().unwrap());
    // An export on an engine whose editor has just previewed a frame: its
    // error, which must come at once.
    let export_fails = |vram_budget: u64, pool: PoolSize, out: &str| {
        let config = EngineConfig {
            backend: BackendKind::Gpu,
            vram_budget,
            pool,
            prefetch: 0,
            preview_memory_idle: Duration::from_secs(600),
            ..Default::default()
        };
        let e = Engine::new(config).unwrap();
        e.preview(&seq, 1, &grade(0.3), Scale::Quarter).unwrap();
        let job = Job::new(seq.source.as_str(), t.path().join(out).display().to_string(), grade(0.3));
        let prepared = framepipe::prepare(&job).unwrap();
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            let _ = tx.send(e.run(&job, &prepared, &Cancel::default(), &mut |_| {}).map(|r| r.frames_written));
        });
        let result = rx.recv_timeout(Duration::from_secs(60)).expect("the export answers, not waits for the editor");
        result.unwrap_err().to_string()
    };
    let err = export_fails(preview, PoolSize::Auto, "o/o_%03d.png");
    assert!(err.contains("one 96x64 RGBA8 frame needs"), "{err}");
    // Nor does a fixed pool whose slots are more than the whole budget,
    // though one frame fits.
    let budget = preview.max(probe.export_vram(shape, &grade(0.3)).unwrap().unwrap());
    let frames = seq.frames.len();
    let err = export_fails(budget, PoolSize::Fixed(50), "p/o_%03d.png");
    assert!(err.contains(&format!("{frames} slots of ")) && err.contains(" fit in the "), "{err}");
}

/// An export of a fixed pool started while the editor's last preview still
/// holds its slot: the export waits for the previews to go quiet and take
/// their memory back, rather than fail for want of it.
#[test]
fn an_export_started_beside_an_active_editor_waits_for_its_memory() {
    let Some((t, seq, shape)) = gpu_sequence(6, 96, 64) else { return };
    let kernels = kernel_bytes(shape, &grade(0.3));
    let ring = framepipe::pipeline::GPU_DEPTH as u64 * GpuBackend::readback_bytes(shape);
    let budget = kernels + ring + 3 * GpuBackend::slot_bytes(shape);
    let e = Engine::new(EngineConfig {
        backend: BackendKind::Gpu,
        vram_budget: budget,
        pool: PoolSize::Fixed(3),
        prefetch: 0,
        preview_memory_idle: Duration::from_millis(200),
        ..Default::default()
    })
    .unwrap();
    e.preview(&seq, 2, &grade(0.1), Scale::Quarter).unwrap();
    let job = Job::new(seq.source.as_str(), t.path().join("o/o_%03d.png").display().to_string(), grade(0.3));
    let prepared = framepipe::prepare(&job).unwrap();
    let report = e.run(&job, &prepared, &Cancel::default(), &mut |_| {}).expect("the export waits, then runs");
    assert_eq!((report.frames_written, report.pool_size), (6, 3));
    assert!(e.ledger().peak() <= budget);
}

/// A one-frame-at-a-time export waiting for the memory an active editor
/// holds, cancelled: a cancelled run with nothing failed, not a budget
/// error (the frame was abandoned, not refused).
#[test]
fn a_sequential_export_cancelled_while_it_waits_for_preview_memory_is_cancelled() {
    let Some((t, seq, shape)) = gpu_sequence(3, 96, 64) else { return };
    let probe = engine(BackendKind::Gpu, 1 << 20);
    // Another grade: kernel buffers the export cannot share.
    let wider = OpGraph::new(vec![Op::Blur { sigma: 2.7 }]).unwrap();
    let (export, preview) = (
        probe.export_vram(shape, &grade(0.3)).unwrap().unwrap(),
        probe.preview_vram(shape, &wider, Scale::Quarter).unwrap().unwrap(),
    );
    let budget = export.max(preview);
    let e = Engine::new(EngineConfig {
        backend: BackendKind::Gpu,
        vram_budget: budget,
        prefetch: 0,
        preview_memory_idle: Duration::from_secs(600),
        ..Default::default()
    })
    .unwrap();
    e.preview(&seq, 1, &wider, Scale::Quarter).unwrap();
    let job = Job::new(seq.source.as_str(), t.path().join("o/o_%03d.png").display().to_string(), grade(0.3));
    let prepared = framepipe::prepare(&job).unwrap();
    let cancel = Cancel::default();
    let (stopper, exporter) = (cancel.clone(), e.clone());
    let export = std::thread::spawn(move || exporter.run_sequential(&job, &prepared, &cancel, &mut |_| {}));
    std::thread::sleep(Duration::from_millis(1500));
    stopper.cancel();
    let report = export.join().unwrap().expect("a cancelled run, not an error");
    assert!(report.cancelled && report.failures.is_empty(), "{report:?}");
    assert_eq!((report.frames_written, report.frames_unwritten), (0, 3));
    assert!(!t.path().join("o/o_001.png").exists());
    assert!(e.ledger().peak() <= budget);
}

/// A preview whose frame needs more VRAM than the whole budget fails with
/// the sizes, and gives back whatever it had reserved: no release could
/// ever make room, so it does not wait for one.
#[test]
fn a_preview_larger_than_the_whole_budget_fails_and_holds_nothing() {
    let Some((_t, seq, shape)) = gpu_sequence(2, 96, 64) else { return };
    let e = Engine::new(EngineConfig {
        backend: BackendKind::Gpu,
        vram_budget: GpuBackend::slot_bytes(shape) - 1,
        prefetch: 0,
        ..Default::default()
    })
    .unwrap();
    let err = e.preview(&seq, 1, &grade(0.1), Scale::Full).unwrap_err();
    assert!(matches!(err, Error::Budget(_)) && err.to_string().contains("more than the whole"), "{err}");
    assert_eq!(e.ledger().current(), 0);
    // Its slot fits, and its kernel and downscale buffers, but never all
    // at once. What an editor can ask before it opens anything is exactly
    // that sum, and a budget of it is enough. The CPU backend takes none.
    let probe = engine(BackendKind::Gpu, 1 << 20);
    for scale in [Scale::Full, Scale::Quarter] {
        let need = probe.preview_vram(shape, &grade(0.1), scale).unwrap().expect("a GPU engine");
        assert!(need > kernel_bytes(shape, &grade(0.1)) + GpuBackend::slot_bytes(shape));
        for vram_budget in [need - 1, need] {
            let e =
                Engine::new(EngineConfig { backend: BackendKind::Gpu, vram_budget, prefetch: 0, ..Default::default() })
                    .unwrap();
            match e.preview(&seq, 1, &grade(0.1), scale) {
                Ok(_) => assert_eq!(vram_budget, need, "{scale:?}"),
                Err(err) => {
                    let err = err.to_string();
                    assert!(vram_budget < need && err.contains("more than the whole"), "{scale:?}: {err}");
                    assert!(err.contains("(slot, kernel and downscale buffers)"), "{err}");
                    assert_eq!(e.ledger().current(), 0);
                }
            }
        }
    }
    // A budget that holds one scale's preview serves another scale after
    // it: the first's downscale pass gives way.
    let full = probe.preview_vram(shape, &grade(0.1), Scale::Full).unwrap().unwrap();
    let e =
        Engine::new(EngineConfig { backend: BackendKind::Gpu, vram_budget: full, prefetch: 0, ..Default::default() })
            .unwrap();
    for scale in [Scale::Full, Scale::Quarter, Scale::Full] {
        e.preview(&seq, 2, &grade(0.1), scale).unwrap();
    }
    assert_eq!(engine(BackendKind::Cpu, 1 << 20).preview_vram(shape, &grade(0.1), Scale::Full).unwrap(), None);
}

/// On the CPU backend with one thread, previews and a one-frame-at-a-time
/// export share the backend and the engine's single kernel thread: both
/// taken in the same order, neither waits for the other forever.
#[test]
fn one_cpu_thread_serves_previews_beside_a_sequential_export() {
    let t = tempfile::tempdir().unwrap();
    let seq = sequence(t.path(), 30, 64, 40, PixelFormat::Rgba8);
    let config = EngineConfig { backend: BackendKind::Cpu, threads: 1, prefetch: 0, ..Default::default() };
    let e = Engine::new(config).unwrap();
    let out = t.path().join("o/o_%03d.png").display().to_string();
    let export = start_export(&e, Job::new(seq.source.as_str(), out, grade(0.3)), true);
    let (done_tx, done) = crossbeam_channel::bounded(1);
    let (viewer, shown) = (e.clone(), seq.clone());
    std::thread::spawn(move || {
        for i in 0..40u64 {
            let frame = 1 + i % 30;
            viewer.preview(&shown, frame, &grade(i as f64 * 0.01), Scale::Quarter).expect("preview");
        }
        let _ = done_tx.send(());
    });
    done.recv_timeout(Duration::from_secs(120)).expect("previews finished: no deadlock");
    assert_eq!(export.join().unwrap().frames_written, 30);
}

/// Waits (bounded) until every frame in `frames` is cached with `g`.
fn prefetched(e: &Engine, seq: &Sequence, frames: &[u64], g: &OpGraph) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if frames.iter().all(|&f| e.preview_cached(seq, f, g, Scale::Quarter)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn prefetch_follows_the_playhead_the_grade_and_the_direction() {
    let t = tempfile::tempdir().unwrap();
    let seq = sequence(t.path(), 40, 64, 40, PixelFormat::Rgba8);
    let (g1, g2) = (grade(0.1), grade(-0.3));
    // One prefetch thread, or three rendering the next frames at once.
    for (backend, prefetch_threads) in backends().into_iter().flat_map(|b| [(b, 1), (b, 3)]) {
        let e = Engine::new(EngineConfig { backend, prefetch: 3, prefetch_threads, ..Default::default() }).unwrap();
        assert_eq!(e.prefetch_threads(), prefetch_threads);
        let backend = format!("{backend:?}, {prefetch_threads} threads");
        // Playing forward queues the next three frames.
        e.preview(&seq, 10, &g1, Scale::Quarter).unwrap();
        e.preview(&seq, 11, &g1, Scale::Quarter).unwrap();
        assert!(prefetched(&e, &seq, &[12, 13, 14], &g1), "{backend}: forward prefetch");
        // A new grade: the next frames are fetched with it, not only the
        // one frame beyond what the old grade had queued.
        e.preview(&seq, 12, &g2, Scale::Quarter).unwrap();
        assert!(prefetched(&e, &seq, &[13, 14, 15], &g2), "{backend}: prefetch after a grade change");
        // Turning around fetches backwards.
        e.preview(&seq, 11, &g2, Scale::Quarter).unwrap();
        assert!(prefetched(&e, &seq, &[10, 9, 8], &g2), "{backend}: backward prefetch");
        // Stepping back to the first frames queues nothing before them,
        // and fails nothing.
        e.preview(&seq, 2, &g2, Scale::Quarter).unwrap();
        e.preview(&seq, 1, &g2, Scale::Quarter).unwrap();
        // (Counted just after they are cached: waited for.)
        let deadline = Instant::now() + Duration::from_secs(30);
        while e.preview_stats().prefetched < 9 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let stats = e.preview_stats();
        assert!(stats.prefetched >= 9, "{backend}: {stats:?}");
    }
}

/// Requests for a frame being rendered wait for that render and take its
/// image, even where the cache cannot keep it (larger than the cache):
/// every request renders or joins, never both.
#[test]
fn a_render_under_way_is_joined_not_repeated_even_past_the_cache() {
    let t = tempfile::tempdir().unwrap();
    let seq = sequence(t.path(), 2, 640, 400, PixelFormat::Rgba8);
    let g = grade(0.3);
    // An image of 1 MB, a cache of 1000 bytes: nothing is ever kept.
    let e = engine(BackendKind::Cpu, 1000);
    let start = std::sync::Barrier::new(4);
    let images: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    e.preview(&seq, 1, &g, Scale::Full).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let stats = e.preview_stats();
    assert_eq!(stats.previews.bytes, 0, "{stats:?}");
    assert!(stats.joined >= 1, "requests released together joined the first one's render: {stats:?}");
    assert_eq!(stats.renders + stats.joined, 4, "{stats:?}");
    assert!(images.iter().all(|i| i.data == images[0].data));
}

/// Previews decode within the engine's limits, which an application
/// raises or lowers as it does a job's.
#[test]
fn previews_decode_within_the_engines_limits() {
    let t = tempfile::tempdir().unwrap();
    let seq = sequence(t.path(), 1, 48, 32, PixelFormat::Rgba8);
    let g = grade(0.1);
    let preview_decode_limits = DecodeLimits { max_dimension: 40, ..Default::default() };
    let config = EngineConfig { backend: BackendKind::Cpu, preview_decode_limits, prefetch: 0, ..Default::default() };
    let err = Engine::new(config).unwrap().preview(&seq, 1, &g, Scale::Half).unwrap_err().to_string();
    assert!(err.contains("48x32 exceeds the 40x40 size limit"), "{err}");
    engine(BackendKind::Cpu, 1 << 20).preview(&seq, 1, &g, Scale::Half).unwrap();
}

/// The viewer's playhead is its own: thumbnails asked for through their
/// view, elsewhere in the shot, between its steps neither turn it nor
/// cancel its prefetches (asked through the viewer's place, they would).
#[test]
fn thumbnails_between_the_viewers_steps_leave_its_prefetch_alone() {
    let t = tempfile::tempdir().unwrap();
    let seq = sequence(t.path(), 40, 64, 40, PixelFormat::Rgba8);
    let g = grade(-0.2);
    let config = EngineConfig { backend: BackendKind::Cpu, prefetch: 3, prefetch_threads: 1, ..Default::default() };
    let e = Engine::new(config).unwrap();
    let thumbnails = e.preview_view();
    let thumbnail = |frame| {
        thumbnails.request(&seq, frame, &g, Scale::Eighth).recv_timeout(Duration::from_secs(120)).unwrap().unwrap()
    };
    e.preview(&seq, 10, &g, Scale::Quarter).unwrap();
    thumbnail(30);
    e.preview(&seq, 11, &g, Scale::Quarter).unwrap();
    thumbnail(2);
    assert!(prefetched(&e, &seq, &[12, 13, 14], &g), "{:?}", e.preview_stats());
    // In one place, a request elsewhere is a jump: nothing queued.
    let settled = |s: &framepipe::preview::PreviewStats| s.prefetched + s.prefetch_cancelled;
    // A prefetch is counted just after its image is cached: the last of
    // the three may be cached and not yet counted.
    let deadline = Instant::now() + Duration::from_secs(30);
    while settled(&e.preview_stats()) < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = settled(&e.preview_stats());
    assert_eq!(before, 3, "{:?}", e.preview_stats());
    e.preview(&seq, 20, &g, Scale::Quarter).unwrap();
    e.preview(&seq, 21, &g, Scale::Quarter).unwrap(); // queues 22..=24
    e.preview(&seq, 35, &g, Scale::Eighth).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while settled(&e.preview_stats()) < before + 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(settled(&e.preview_stats()), before + 3, "{:?}", e.preview_stats());
    assert!(!e.preview_cached(&seq, 36, &g, Scale::Eighth), "a jump queues nothing");
}

/// Views that come and go (a thumbnail per hovered clip, dropped with its
/// request still under way) leave no playhead behind: the viewer's, older
/// than all of theirs, is not pushed out and still prefetches on its step.
#[test]
fn views_dropped_with_a_request_under_way_leave_no_playhead() {
    let t = tempfile::tempdir().unwrap();
    let seq = sequence(t.path(), 40, 64, 40, PixelFormat::Rgba8);
    let g = grade(0.25);
    let config = EngineConfig { backend: BackendKind::Cpu, prefetch: 3, prefetch_threads: 1, ..Default::default() };
    let e = Engine::new(config).unwrap();
    e.preview(&seq, 10, &g, Scale::Quarter).unwrap();
    e.preview(&seq, 11, &g, Scale::Quarter).unwrap();
    assert!(prefetched(&e, &seq, &[12, 13, 14], &g), "{:?}", e.preview_stats());
    for frame in 25..37 {
        let view = e.preview_view();
        let rx = view.request(&seq, frame, &g, Scale::Eighth);
        drop(view);
        let answer = rx.recv_timeout(Duration::from_secs(120)).expect("answered, not left queued");
        assert_eq!(answer.unwrap().frame, frame, "its last request is still answered");
    }
    e.preview(&seq, 12, &g, Scale::Quarter).unwrap();
    assert!(prefetched(&e, &seq, &[15], &g), "the viewer's playhead stepped on: {:?}", e.preview_stats());
}

/// A shot on twos (or with gaps) steps from one frame to the next there
/// is: prefetch counts frames of the sequence, not frame numbers.
#[test]
fn prefetch_steps_through_the_frames_a_sequence_has() {
    let t = tempfile::tempdir().unwrap();
    sequence(t.path(), 30, 48, 32, PixelFormat::Rgba8);
    let on_twos = t.path().join("p/s_%03d.png").display().to_string();
    let spec = FrameSpec::parse("1-30x2").unwrap();
    let seq = Sequence::scan(&on_twos, Some(&spec), MissingPolicy::Error).unwrap();
    assert_eq!(seq.frames.len(), 15);
    let g = grade(0.4);
    let config = EngineConfig { backend: BackendKind::Cpu, prefetch: 3, prefetch_threads: 1, ..Default::default() };
    let e = Engine::new(config).unwrap();
    // 9 then 11: one step forward, whose next three frames are 13, 15, 17.
    e.preview(&seq, 9, &g, Scale::Quarter).unwrap();
    e.preview(&seq, 11, &g, Scale::Quarter).unwrap();
    assert!(prefetched(&e, &seq, &[13, 15, 17], &g), "{:?}", e.preview_stats());
    // Backwards from 17 after a step back: 13, 11, 9 (not a jump).
    e.preview(&seq, 17, &g, Scale::Quarter).unwrap();
    e.preview(&seq, 15, &g, Scale::Quarter).unwrap();
    assert!(prefetched(&e, &seq, &[13, 11, 9], &g), "{:?}", e.preview_stats());
}

#[test]
fn a_jump_cancels_queued_prefetches_and_async_previews_arrive() {
    let t = tempfile::tempdir().unwrap();
    // Frames large enough that eight prefetches take a while to render.
    let seq = sequence(t.path(), 40, 640, 400, PixelFormat::Rgba8);
    let g = grade(0.2);
    // More prefetch threads than frames prefetched would only wait.
    let many = EngineConfig { backend: BackendKind::Cpu, prefetch: 2, prefetch_threads: 100_000, ..Default::default() };
    assert_eq!(Engine::new(many).unwrap().prefetch_threads(), 2);
    let config = EngineConfig { backend: BackendKind::Cpu, prefetch: 8, prefetch_threads: 2, ..Default::default() };
    let e = Engine::new(config).unwrap();
    e.preview(&seq, 10, &g, Scale::Quarter).unwrap();
    e.preview(&seq, 11, &g, Scale::Quarter).unwrap(); // queues 12..=19
    e.preview(&seq, 35, &g, Scale::Quarter).unwrap(); // a jump: cancels them, queues nothing
    let deadline = Instant::now() + Duration::from_secs(60);
    let settled = loop {
        let s = e.preview_stats();
        if s.prefetched + s.prefetch_cancelled >= 8 || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(settled.prefetched + settled.prefetch_cancelled, 8, "{settled:?}");
    assert!(settled.prefetch_cancelled > 0, "{settled:?}");
    let cached = (12..=19).filter(|&f| e.preview_cached(&seq, f, &g, Scale::Quarter)).count();
    assert_eq!(cached as u64, settled.prefetched, "only what was rendered before the jump is cached");
    assert!((36..=40).all(|f| !e.preview_cached(&seq, f, &g, Scale::Quarter)), "nothing after a jump");
    // The async variant delivers the same image on a channel.
    let rx = e.preview_async(&seq, 30, &g, Scale::Half);
    let image = rx.recv_timeout(Duration::from_secs(60)).unwrap().unwrap();
    assert_eq!((image.frame, image.width, image.height), (30, 320, 200));
    assert_eq!(image.data, e.preview(&seq, 30, &g, Scale::Half).unwrap().data);
}

/// The engine goes with prefetches queued, a view's requests waiting and an
/// async preview under way: the last handle's drop (the view's, here)
/// stops and joins the engine's threads, so every buffer is released before
/// it returns (a GPU driver torn down at process exit under a thread still
/// rendering crashes), and every request is answered.
#[test]
fn the_last_handle_stops_the_engines_threads_before_its_drop_returns() {
    if crate::util::gpu(Default::default()).is_none() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let seq = sequence(t.path(), 20, 320, 200, PixelFormat::Rgba8);
    let e = Engine::new(EngineConfig { backend: BackendKind::Gpu, prefetch: 8, ..Default::default() }).unwrap();
    let ledger = e.ledger().clone();
    e.preview(&seq, 1, &grade(0.2), Scale::Quarter).unwrap();
    e.preview(&seq, 2, &grade(0.2), Scale::Quarter).unwrap(); // queues 3..=10
    assert!(ledger.current() > 0);
    let view = e.preview_view();
    let asked: Vec<_> = (11..15).map(|f| view.request(&seq, f, &grade(0.3), Scale::Quarter)).collect();
    let async_preview = e.preview_async(&seq, 16, &grade(0.4), Scale::Half);
    drop(e);
    // The view still holds the engine: its newest request is served.
    let (newest, overtaken) = asked.split_last().unwrap();
    let newest = newest.recv_timeout(Duration::from_secs(120)).unwrap();
    assert!(newest.is_ok(), "{newest:?}");
    let later = view.request(&seq, 17, &grade(0.5), Scale::Quarter);
    drop(view);
    assert_eq!(ledger.current(), 0, "every buffer released when the last handle's drop returns");
    for rx in overtaken.iter().chain([&async_preview]) {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(Ok(_) | Err(Error::Superseded)) => {}
            other => panic!("a request left unanswered or failed: {other:?}"),
        }
    }
    // The last request, overtaken by none, was rendered or stopped with the
    // engine: said as such, not as superseded.
    match later.recv_timeout(Duration::from_secs(1)) {
        Ok(Ok(_) | Err(Error::Cancelled)) => {}
        other => panic!("the view's last request: {other:?}"),
    }
}

#[test]
fn a_slider_drag_rewrites_kernel_buffers_in_place_and_never_mixes_grades() {
    if crate::util::gpu(Default::default()).is_none() {
        return;
    }
    use framepipe::priority::Priority;
    let sets = |e: &Engine| match &*e.backend().lock(Priority::Export) {
        framepipe::Backend::Gpu(g) => g.compute_stats(),
        framepipe::Backend::Cpu => unreachable!(),
    };
    let t = tempfile::tempdir().unwrap();
    let seq = sequence(t.path(), 60, 160, 96, PixelFormat::Rgba8);
    let src = decode_file(&seq.frames[4].path, &DecodeLimits::default()).unwrap();
    let e =
        Engine::new(EngineConfig { backend: BackendKind::Gpu, threads: 1, prefetch: 0, ..Default::default() }).unwrap();
    e.enable_trace();
    // An export of the same frames with a grade of the same layout runs
    // beside the drag: its kernel set may be rewritten between its frames.
    let job = Job::new(seq.source.as_str(), t.path().join("o/o_%03d.png").display().to_string(), grade(0.3));
    let export = start_export(&e, job, false);
    let mut rng = Rng::fresh("drag");
    let mut held = Vec::new();
    for step in 0..12 {
        let stops = rng.next() as f64 / u64::MAX as f64 - 0.5;
        let g = grade(stops);
        let p = e.preview(&seq, 5, &g, Scale::Half).unwrap();
        let (_, _, expected) = area_average(&process_cpu(&src, &g.plan()), 2);
        let worst = p.data.iter().zip(&expected).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap();
        assert!(worst <= 1, "step {step}, stops {stops}: off by {worst}");
        held.push(e.ledger().current());
    }
    let report = export.join().unwrap();
    assert_eq!(report.frames_written, 60);
    let trace = e.take_trace();
    let fourth = trace.iter().filter(|(_, ev)| matches!(ev, TraceEvent::PreviewDone(_))).nth(3).unwrap().0;
    let later = trace.iter().filter(|(t, ev)| *t > fourth && matches!(ev, TraceEvent::ExportFrameDone(_))).count();
    assert!(later > 0, "the export ran on while sets were being rewritten");
    let s = sets(&e);
    assert!(s.built <= 4 && s.rewritten >= 8, "{s:?}");
    // Once the cache is full, dragging allocates nothing more per step: a
    // set rewritten for the preview (the export's, as the two take turns)
    // may get its half-size downscale pass once (its output, its
    // parameters), never again.
    let pass = 2 * (160 / 2) * (96 / 2) * 4;
    assert!(held[4..].iter().all(|&b| b <= held[3] + s.built * pass), "{held:?}");
    // Every exported frame has the export's grade, never a preview's.
    let plan = grade(0.3).plan();
    for f in seq.frames.iter() {
        let out = decode_file(&t.path().join(format!("o/o_{:03}.png", f.number)), &DecodeLimits::default()).unwrap();
        let want = process_cpu(&decode_file(&f.path, &DecodeLimits::default()).unwrap(), &plan);
        crate::util::assert_close(&out, &want, &format!("exported frame {}", f.number));
    }
}

/// Most export frames on the GPU at once in `trace`, and how many went.
fn export_depth(trace: &[(Instant, TraceEvent)]) -> (usize, usize) {
    let (mut on, mut most, mut went) = (0usize, 0, 0);
    for (_, ev) in trace {
        match ev {
            TraceEvent::ExportOnGpu(_) => {
                on += 1;
                went += 1;
                most = most.max(on);
            }
            TraceEvent::ExportOffGpu(_) => on = on.saturating_sub(1),
            _ => {}
        }
    }
    (most, went)
}

/// While an editor previews, the export keeps one frame on the GPU, so a
/// preview queues behind less of its work (one queue, first in first out);
/// without previews the same export keeps two.
#[test]
fn an_export_keeps_one_frame_on_the_gpu_while_previews_are_live() {
    let Some((t, seq, _)) = gpu_sequence(24, 160, 96) else { return };
    let depth = |previewing: bool, run: usize| {
        let e = Engine::new(EngineConfig {
            backend: BackendKind::Gpu,
            threads: 2,
            prefetch: 0,
            // Live for the whole export, from one preview.
            preview_memory_idle: Duration::from_secs(600),
            ..Default::default()
        })
        .unwrap();
        if previewing {
            e.preview(&seq, 3, &grade(0.2), Scale::Quarter).unwrap();
        }
        e.enable_trace();
        let out = t.path().join(format!("o{previewing}{run}/o_%03d.png")).display().to_string();
        let job = Job::new(seq.source.as_str(), out, grade(0.3));
        let prepared = framepipe::prepare(&job).unwrap();
        let report = e.run(&job, &prepared, &Cancel::default(), &mut |_| {}).unwrap();
        assert_eq!(report.frames_written, 24);
        let (most, went) = export_depth(&e.take_trace());
        assert_eq!(went, 24, "every frame went through the GPU");
        most
    };
    assert_eq!(depth(true, 0), 1);
    // Two decoders keep the GPU's two places filled, most runs: a few
    // tries, so a run where the GPU always kept up does not fail the test.
    let unthrottled = (0..4).map(|run| depth(false, run)).max().unwrap();
    assert_eq!(unthrottled, framepipe::pipeline::GPU_DEPTH);
}

/// A stream export whose reader stopped reading: the export's decoders
/// all wait, its slots sit free (or, one frame at a time, it sits in a
/// write holding the slot it keeps). A preview that needs that memory
/// takes it at once rather than waiting for a frame to start.
#[test]
fn a_stalled_stream_export_gives_its_idle_memory_to_a_preview() {
    let Some((_dir, seq, shape)) = gpu_sequence(12, 160, 96) else { return };
    /// Blocks its first write until `open` says so.
    struct Stalled {
        open: crossbeam_channel::Receiver<()>,
        entered: crossbeam_channel::Sender<()>,
        stalled: bool,
    }
    impl std::io::Write for Stalled {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if !self.stalled {
                self.stalled = true;
                let _ = self.entered.send(());
                let _ = self.open.recv();
            }
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let slot = GpuBackend::slot_bytes(shape);
    let kernels = kernel_bytes(shape, &grade(0.3));
    for sequential in [false, true] {
        // As in the test above: the export fills the budget but for half
        // a slot.
        let (slots, readbacks) = if sequential { (1, 1) } else { (4, framepipe::pipeline::GPU_DEPTH as u64) };
        let budget = kernels + readbacks * GpuBackend::readback_bytes(shape) + slots * slot + slot / 2;
        let e = Engine::new(EngineConfig {
            backend: BackendKind::Gpu,
            vram_budget: budget,
            threads: 2,
            prefetch: 0,
            preview_memory_idle: Duration::from_millis(50),
            ..Default::default()
        })
        .unwrap();
        let job = Job::new(seq.source.as_str(), "-", grade(0.3));
        let prepared = framepipe::prepare(&job).unwrap();
        let (open_tx, open) = crossbeam_channel::bounded(1);
        let (entered, stalled) = crossbeam_channel::bounded(1);
        let exporter = e.clone();
        let export = std::thread::spawn(move || {
            let mut out = Stalled { open, entered, stalled: false };
            let cancel = Cancel::default();
            if sequential {
                exporter.run_sequential_stream(&job, &prepared, &mut out, &cancel, &mut |_| {})
            } else {
                exporter.run_stream(&job, &prepared, &mut out, &cancel, &mut |_| {})
            }
        });
        stalled.recv_timeout(Duration::from_secs(60)).unwrap();
        // The frames under way come back and the export goes quiet.
        std::thread::sleep(Duration::from_millis(500));
        let wider = OpGraph::new(vec![Op::Exposure { stops: 0.1 }, Op::Blur { sigma: 2.7 }]).unwrap();
        let p = e.preview(&seq, 9, &wider, Scale::Half).expect("the preview gets the export's idle memory");
        assert_eq!((p.width, p.height), (80, 48));
        open_tx.send(()).unwrap();
        let report = export.join().unwrap().unwrap();
        assert_eq!(report.frames_written, 12, "sequential {sequential}: {:?}", report.failures);
        assert!(e.ledger().peak() <= budget);
    }
}

/// A plate rewritten in place at the same length with its old mtime put
/// back (a copy that keeps times, a coarse network clock): still a new
/// file to both caches.
#[test]
fn a_plate_rewritten_with_its_old_length_and_mtime_is_not_served_stale() {
    let t = tempfile::tempdir().unwrap();
    let seed = Rng::fresh("same-length plates").next();
    let opts = GenerateOptions { width: 48, height: 32, frames: 2, start: 1, alpha: true, seed, ..Default::default() };
    let pattern = t.path().join("q/s_%03d.tif").display().to_string();
    generate_sequence(&opts, &pattern, &EncodeOptions::default(), false).unwrap();
    let seq = Sequence::scan(&pattern, None, MissingPolicy::Error).unwrap();
    let (one, two) = (&seq.frames[0].path, &seq.frames[1].path);
    let replacement = std::fs::read(two).unwrap();
    assert_eq!(std::fs::metadata(one).unwrap().len(), replacement.len() as u64, "uncompressed: one length");
    let e = engine(BackendKind::Cpu, 64 << 20);
    let old = e.preview(&seq, 1, &grade(0.2), Scale::Half).unwrap();
    let mtime = std::fs::metadata(one).unwrap().modified().unwrap();
    // Past a tick of the kernel's file clock (a few ms), which a rewrite
    // within would share the ctime of: that one no stamp can see.
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(one, &replacement).unwrap();
    std::fs::File::options().write(true).open(one).unwrap().set_modified(mtime).unwrap();
    let new = e.preview(&seq, 1, &grade(0.2), Scale::Half).unwrap();
    let want = e.preview(&seq, 2, &grade(0.2), Scale::Half).unwrap();
    assert_ne!(new.data, old.data);
    assert_eq!(new.data, want.data, "frame 1 now holds frame 2's pixels");
}

/// Eight threads previewing beside an export at the session budget (one
/// preview's memory beside the export's; no cache, so each one renders):
/// every preview gets its memory in turn, none is refused. (Each holding a
/// slot while it waited for the rest, they held the budget between them
/// until all eight failed.)
#[test]
fn eight_preview_threads_beside_an_export_at_the_session_budget() {
    let Some((t, seq, shape)) = gpu_sequence(60, 160, 96) else { return };
    let probe = engine(BackendKind::Gpu, 1 << 20);
    let session = probe.session_vram(shape, &grade(0.3), Scale::Quarter).unwrap().unwrap();
    let e = Engine::new(EngineConfig {
        backend: BackendKind::Gpu,
        vram_budget: session,
        threads: 2,
        prefetch: 2,
        preview_cache_bytes: 1,
        ..Default::default()
    })
    .unwrap();
    let out = t.path().join("o/o_%03d.png").display().to_string();
    let export = start_export(&e, Job::new(seq.source.as_str(), out, grade(0.3)), false);
    let seq = Arc::new(seq);
    let deadline = Instant::now() + Duration::from_secs(4);
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (e, seq) = (e.clone(), seq.clone());
            std::thread::spawn(move || {
                let mut rng = Rng::fresh(&format!("beside {i}"));
                let (mut ok, mut failed) = (0, Vec::new());
                while Instant::now() < deadline {
                    let frame = 1 + rng.next() % 60;
                    match e.preview(&seq, frame, &grade(0.3), Scale::Quarter) {
                        Ok(_) => ok += 1,
                        Err(err) => failed.push(err.to_string()),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let mut all_failed = Vec::new();
    let mut total = 0;
    for h in threads {
        let (ok, failed) = h.join().unwrap();
        total += ok;
        all_failed.extend(failed);
    }
    let report = export.join().unwrap();
    assert!(all_failed.is_empty(), "{} of {} refused: {all_failed:?}", all_failed.len(), total + all_failed.len());
    assert!(total >= 8, "{total} previews");
    assert_eq!(report.frames_written, 60);
    assert!(e.ledger().peak() <= session);
}
