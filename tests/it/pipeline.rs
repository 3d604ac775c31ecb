//! The pipelined engine: same bytes as the one-frame-at-a-time path, a
//! ledger that never crosses the budget, failures that stop or skip
//! cleanly, panics that end the run, and host memory that stays bounded.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use framepipe::generate::{GenerateOptions, generate_sequence};
use framepipe::gpu::{FrameShape, GpuBackend};
use framepipe::io::EncodeOptions;
use framepipe::ledger::human_bytes;
use framepipe::pipeline::Stage;
use framepipe::pool::PoolSize;
use framepipe::{BackendKind, Cancel, Engine, EngineConfig, Error, Job, Op, OpGraph, PixelFormat};
use predicates::prelude::PredicateBooleanExt;

fn sequence(dir: &Path, frames: u32, width: u32, height: u32) -> String {
    let seed = crate::util::Rng::fresh("pipeline sequence").next();
    let opts = GenerateOptions { width, height, frames, start: 1, format: PixelFormat::Rgba8, alpha: true, seed };
    let p = dir.join("in/s_%03d.png").display().to_string();
    generate_sequence(&opts, &p, &EncodeOptions::default(), false).unwrap();
    p
}

fn graph() -> OpGraph {
    OpGraph::new(vec![
        Op::Exposure { stops: 0.3 },
        Op::Blur { sigma: 1.5 },
        Op::Saturation { saturation: 1.3 },
        Op::Blur { sigma: 0.7 },
    ])
    .unwrap()
}

/// The kernel buffer bytes of each graph for frames of `shape` on the GPU;
/// none where no adapter opens (the test then has nothing to check).
fn kernel_bytes<const N: usize>(shape: FrameShape, graphs: [&OpGraph; N]) -> Option<[u64; N]> {
    let gpu = crate::util::gpu(Default::default())?;
    Some(graphs.map(|g| gpu.compute_bytes(shape, &g.plan()).unwrap()))
}

fn gpu_available() -> bool {
    crate::util::gpu(Default::default()).is_some()
}

fn engine(backend: BackendKind, pool: PoolSize, threads: usize, vram_budget: u64) -> Engine {
    Engine::new(EngineConfig { backend, pool, threads, vram_budget, ..Default::default() }).unwrap()
}

fn run(engine: &Engine, input: &str, output: &str, sequential: bool) -> framepipe::Report {
    let job = Job::new(input, output, graph());
    let prepared = framepipe::prepare(&job).unwrap();
    let cancel = Cancel::default();
    if sequential {
        engine.run_sequential(&job, &prepared, &cancel, &mut |_| {}).unwrap()
    } else {
        engine.run(&job, &prepared, &cancel, &mut |_| {}).unwrap()
    }
}

fn same_files(a: &Path, b: &Path) {
    let mut names: Vec<_> = fs::read_dir(a).unwrap().flatten().map(|e| e.file_name()).collect();
    names.sort();
    assert!(!names.is_empty());
    for n in names {
        assert_eq!(fs::read(a.join(&n)).unwrap(), fs::read(b.join(&n)).unwrap(), "{n:?} differs");
    }
}

#[test]
fn pipelined_outputs_equal_sequential() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), 7, 61, 37);
    for backend in crate::util::backends() {
        let oracle = t.path().join(format!("{backend:?}-seq"));
        let e = engine(backend, PoolSize::Auto, 1, 2 << 30);
        let one_at_a_time = run(&e, &input, &format!("{}/o_%03d.png", oracle.display()), true);
        // The reference path reports its stages too.
        let names: Vec<&str> = one_at_a_time.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["decode", if backend == BackendKind::Gpu { "gpu" } else { "compute" }, "encode"]);
        // Nothing overlaps one frame at a time: no bottleneck to name.
        assert_eq!((one_at_a_time.bottleneck.as_str(), one_at_a_time.efficiency), ("", 0.0));
        // Its one slot, as the pipelined run reports its slots'.
        let pooled = run(&e, &input, &format!("{}-pooled/o_%03d.png", oracle.display()), false);
        assert_eq!(one_at_a_time.slot_bytes, pooled.slot_bytes, "{backend:?}");
        // Opening the engine is the first run's start-up, not the second's;
        // each prepared its own job.
        assert!(one_at_a_time.open_s > 0.0 && pooled.open_s == 0.0, "{backend:?}");
        assert!(one_at_a_time.prepare_s > 0.0 && pooled.prepare_s > 0.0, "{backend:?}");
        assert!(one_at_a_time.slot_bytes >= 61 * 37 * 4);
        for pool in [PoolSize::Fixed(1), PoolSize::Fixed(2), PoolSize::Fixed(3), PoolSize::Auto] {
            for threads in [1, 4] {
                let dir = t.path().join(format!("{backend:?}-{pool}-{threads}"));
                let e = engine(backend, pool, threads, 2 << 30);
                let report = run(&e, &input, &format!("{}/o_%03d.png", dir.display()), false);
                assert_eq!(report.frames_written, 7, "{backend:?} pool {pool} threads {threads}");
                assert!(report.failures.is_empty());
                if let PoolSize::Fixed(n) = pool {
                    assert_eq!(report.pool_size, n);
                }
                let most = report.occupancy.iter().map(|&(_, n)| n as usize).max().unwrap_or(0);
                assert!(most <= report.pool_size, "{most} slots in use of {}", report.pool_size);
                // Each stage's utilization is its busy time over the
                // workers that can run at once: no more decoders than slots.
                for st in &report.stages {
                    assert!((1..=st.workers).contains(&st.parallel), "{st:?}");
                    let expect = st.busy_s / (st.parallel as f64 * report.seconds);
                    assert!((st.utilization - expect).abs() < 1e-9, "{st:?} over {} s", report.seconds);
                }
                let decode = report.stages.iter().find(|s| s.name == "decode").unwrap();
                assert_eq!(decode.parallel, decode.workers.min(report.pool_size), "{decode:?}");
                // Making the pool is part of the wall time, before any stage.
                assert!(report.setup_s > 0.0 && report.setup_s < report.seconds, "{}", report.setup_s);
                let first = report.intervals.iter().map(|i| i.start).fold(f64::INFINITY, f64::min);
                assert!(first >= report.setup_s, "a stage at {first} s, before set-up ended");
                same_files(&oracle, &dir);
            }
        }
    }
}

/// An 8-bit frame in a 16-bit sequence (a shot partly re-rendered) joins
/// it widened exactly: its outputs are those of the same frame saved
/// 16-bit, pipelined or one frame at a time, on every backend; PNG (rows)
/// and TIFF (the whole frame in one piece, past one batch of widening).
#[test]
fn an_8_bit_frame_in_a_16_bit_sequence_is_widened_exactly() {
    use framepipe::io::{OutputFormat, write_frame_atomic};
    let t = tempfile::tempdir().unwrap();
    let mut rng = crate::util::Rng::fresh("8-bit frame in 16");
    // 288 KB of 8-bit samples: more than one batch.
    let (w, h) = (300, 240);
    for (ext, format) in [("png", OutputFormat::Png), ("tif", OutputFormat::Tiff)] {
        let (mixed, deep) = (t.path().join(format!("mixed-{ext}")), t.path().join(format!("deep-{ext}")));
        let write = |frame: &framepipe::io::HostFrame, dir: &Path, n: u32| {
            fs::create_dir_all(dir).unwrap();
            let path = dir.join(format!("s_{n:03}.{ext}"));
            write_frame_atomic(frame, &path, format, &EncodeOptions::default(), true).unwrap();
        };
        for n in [1, 3] {
            let frame = crate::util::random_frame(&mut rng, w, h, PixelFormat::Rgba16, true);
            write(&frame, &mixed, n);
            write(&frame, &deep, n);
        }
        let shallow = crate::util::random_frame(&mut rng, w, h, PixelFormat::Rgba8, true);
        let mut widened = framepipe::io::HostFrame::new(w, h, PixelFormat::Rgba16, true);
        for i in 0..shallow.channel_count() {
            widened.set_channel(i, shallow.channel(i) * 257);
        }
        write(&shallow, &mixed, 2);
        write(&widened, &deep, 2);
        for backend in crate::util::backends() {
            let e = engine(backend, PoolSize::Auto, 2, 2 << 30);
            for sequential in [false, true] {
                let out = |dir: &Path| {
                    let name = dir.file_name().unwrap().to_str().unwrap();
                    t.path().join(format!("o-{backend:?}-{sequential}-{name}"))
                };
                let pattern = |dir: &Path| format!("{}/s_%03d.{ext}", dir.display());
                let report = run(&e, &pattern(&mixed), &pattern(&out(&mixed)), sequential);
                let said = (report.frames_written, report.deepened_list.as_str());
                assert_eq!(said, (3, "2"), "{ext} {backend:?} {sequential}: {:?}", report.failures);
                run(&e, &pattern(&deep), &pattern(&out(&deep)), sequential);
                same_files(&out(&deep), &out(&mixed));
            }
        }
        // The other way, a 16-bit frame in an 8-bit sequence, would lose
        // its depth: refused.
        if ext == "png" {
            let narrow = t.path().join("narrow");
            write(&shallow, &narrow, 1);
            write(&widened, &narrow, 2);
            let input = format!("{}/s_%03d.png", narrow.display());
            let job = Job::new(input, format!("{}/o/o_%03d.png", narrow.display()), graph());
            let prepared = framepipe::prepare(&job).unwrap();
            let e = engine(BackendKind::Cpu, PoolSize::Auto, 2, 2 << 30);
            let report = e.run(&job, &prepared, &Cancel::default(), &mut |_| {}).unwrap();
            let failures: Vec<&str> = report.failures.iter().map(|f| f.error.as_str()).collect();
            assert_eq!(failures.len(), 1);
            assert!(failures[0].ends_with("frame is 300x240 16-bit but the sequence is 300x240 8-bit"), "{failures:?}");
        }
    }
}

#[test]
fn banded_frames_through_the_pipeline_equal_whole_frames() {
    if !gpu_available() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (w, h) = (61, 37);
    let input = sequence(t.path(), 5, w, h);
    // Room for 24 rows of f32 scratch: with the blur halos, bands of a few
    // rows, several frames on the GPU at once sharing the band buffers.
    let band_bytes = 24 * w as u64 * 16;
    let layout = framepipe::gpu::Banding::new(w, h, PixelFormat::Rgba8, &graph().plan(), band_bytes).unwrap();
    assert!(layout.band_rows < h / 2, "{layout:?}");
    let oracle = t.path().join("whole");
    run(
        &engine(BackendKind::Gpu, PoolSize::Auto, 1, 2 << 30),
        &input,
        &format!("{}/o_%03d.png", oracle.display()),
        true,
    );
    for (pool, threads) in [(PoolSize::Fixed(1), 1), (PoolSize::Auto, 4)] {
        let e = Engine::new(EngineConfig {
            backend: BackendKind::Gpu,
            pool,
            threads,
            band_bytes: Some(band_bytes),
            ..Default::default()
        })
        .unwrap();
        let dir = t.path().join(format!("banded-{pool}-{threads}"));
        let report = run(&e, &input, &format!("{}/o_%03d.png", dir.display()), false);
        assert_eq!(report.frames_written, 5);
        same_files(&oracle, &dir);
    }
}

#[test]
fn ledger_peak_never_exceeds_budget() {
    let (w, h) = (64, 48);
    let shape = FrameShape { width: w, height: h, format: PixelFormat::Rgba8 };
    let Some([kernels]) = kernel_bytes(shape, [&graph()]) else { return };
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), 6, w, h);
    // Kernel buffers and two readback buffers (one per frame on the GPU)
    // come first; the ring grows past two only when slots are at their cap.
    let ring = framepipe::pipeline::GPU_DEPTH as u64 * GpuBackend::readback_bytes(shape);
    let fixed = kernels + ring;
    let slot = GpuBackend::slot_bytes(shape);
    for slots in [1u64, 2, 3] {
        let budget = fixed + slots * slot;
        let e = engine(BackendKind::Gpu, PoolSize::Auto, 4, budget);
        let dir = t.path().join(format!("b{slots}"));
        let report = run(&e, &input, &format!("{}/o_%03d.png", dir.display()), false);
        assert_eq!(report.frames_written, 6);
        assert_eq!(report.pool_size as u64, slots, "auto takes every slot that fits");
        // The ledger refuses what crosses the budget, so `peak <= budget`
        // holds by construction; that the peak is the budget exactly shows
        // every buffer went through it: kernels, the ring and each slot.
        assert_eq!(e.ledger().peak(), budget, "kernels + ring + {slots} slots, all counted");
        assert_eq!(report.vram_peak, e.ledger().peak());
        // Slots and the ring are freed with the run; kernel buffers stay
        // for the next job.
        assert_eq!(e.ledger().current(), kernels, "slots released");
        // A second export on the same engine uses that kernel set: counted
        // once, it leaves room for as many slots.
        let again = run(&e, &input, &format!("{}/again_%03d.png", dir.display()), false);
        assert_eq!((again.frames_written, again.pool_size as u64), (6, slots));
        // So does the one-frame-at-a-time path, which gives its slot back.
        let one = run(&e, &input, &format!("{}/one_%03d.png", dir.display()), true);
        assert_eq!(one.frames_written, 6);
        assert_eq!(e.ledger().current(), kernels, "sequential slot released");
        assert!(e.ledger().peak() <= budget);
        // Asking for one more slot than fits is refused up front.
        let e = engine(BackendKind::Gpu, PoolSize::Fixed(slots as usize + 1), 4, budget);
        let job = Job::new(input.as_str(), format!("{}/x_%03d.png", dir.display()), graph());
        let prepared = framepipe::prepare(&job).unwrap();
        let err = e.run(&job, &prepared, &Cancel::default(), &mut |_| {}).unwrap_err();
        assert!(matches!(err, Error::Budget(_)), "{err}");
        // Slots are made on several threads at once; the count that fit
        // is still exact.
        let says = format!("{} slots of {} each do not fit: {slots} fit", slots + 1, human_bytes(slot));
        assert!(err.to_string().contains(&says), "{err}");
        assert!(e.ledger().peak() <= budget);
    }
    // The least a run needs, as the engine says it before any run: one
    // slot, one readback buffer and the kernels; enough to export.
    let least = kernels + GpuBackend::readback_bytes(shape) + slot;
    let e = engine(BackendKind::Gpu, PoolSize::Auto, 4, least);
    assert_eq!(e.export_vram(shape, &graph()).unwrap(), Some(least));
    let report = run(&e, &input, &t.path().join("least/o_%03d.png").display().to_string(), false);
    assert_eq!((report.frames_written, report.pool_size), (6, 1));
    // A budget that fits no slot: a clear error before any frame is read.
    let e = engine(BackendKind::Gpu, PoolSize::Auto, 4, least - 1);
    let job = Job::new(input.as_str(), t.path().join("none/o_%03d.png").display().to_string(), graph());
    let prepared = framepipe::prepare(&job).unwrap();
    let err = e.run(&job, &prepared, &Cancel::default(), &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("one 64x48 RGBA8 frame needs") && err.contains("more than the"), "{err}");
    assert!(fs::read_dir(t.path().join("none")).unwrap().next().is_none());
}

/// The kernel set an earlier export left on the engine (another grade) is
/// a cache: it gives way to the next export's pool, which gets the slots
/// it would get on a fresh engine, fixed or auto.
#[test]
fn an_earlier_grades_kernels_give_way_to_the_next_pool() {
    let (w, h) = (64, 48);
    let shape = FrameShape { width: w, height: h, format: PixelFormat::Rgba8 };
    let plain = OpGraph::new(vec![Op::Exposure { stops: 0.5 }]).unwrap();
    let Some([blurred, exposed]) = kernel_bytes(shape, [&graph(), &plain]) else { return };
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), 4, w, h);
    let (slot, readback) = (GpuBackend::slot_bytes(shape), GpuBackend::readback_bytes(shape));
    for pool in [PoolSize::Fixed(3), PoolSize::Auto] {
        // Three slots and the ring (auto: one per frame on the GPU; fixed:
        // the rest, at least one) fit beside either set, not beside both.
        let ring = if pool == PoolSize::Auto { framepipe::pipeline::GPU_DEPTH as u64 } else { 1 };
        let budget = blurred + ring * readback + 3 * slot;
        assert!(exposed > 0 && exposed < blurred);
        let e = engine(BackendKind::Gpu, pool, 4, budget);
        let dir = t.path().join(format!("{pool}"));
        let first = run(&e, &input, &format!("{}/blurred_%03d.png", dir.display()), false);
        assert_eq!((first.frames_written, first.pool_size), (4, 3), "{pool}");
        assert_eq!(e.ledger().current(), blurred);
        let job = Job::new(input.as_str(), format!("{}/exposed_%03d.png", dir.display()), plain.clone());
        let prepared = framepipe::prepare(&job).unwrap();
        let next = e.run(&job, &prepared, &Cancel::default(), &mut |_| {}).unwrap();
        assert_eq!(next.frames_written, 4, "{pool}");
        assert!(next.pool_size >= 3, "{pool}: {} slots", next.pool_size);
        assert_eq!(e.ledger().current(), exposed, "{pool}: the earlier set went");
        assert!(e.ledger().peak() <= budget);
    }
}

/// Auto takes no more slots than the workers that can be busy: a short
/// sequence on many threads does not fill the budget with idle frames; a
/// fixed pool no more than the frames.
#[test]
fn an_auto_pool_is_sized_for_the_frames_there_are() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), 3, 32, 24);
    for backend in crate::util::backends() {
        let e = engine(backend, PoolSize::Auto, 64, 1 << 30);
        let report = run(&e, &input, &format!("{}/{backend:?}/o_%03d.png", t.path().display()), false);
        assert_eq!(report.frames_written, 3);
        let cap = framepipe::pool::auto_cap(3, backend == BackendKind::Gpu);
        assert!((2..=cap).contains(&report.pool_size), "{backend:?}: {} slots for 3 frames", report.pool_size);
        // Nor does a fixed pool larger than the frames.
        let e = engine(backend, PoolSize::Fixed(8), 2, 1 << 30);
        let report = run(&e, &input, &format!("{}/{backend:?}-8/o_%03d.png", t.path().display()), false);
        assert_eq!((report.frames_written, report.pool_size), (3, 3), "{backend:?}");
    }
}

/// A running export holds its kernel set, pipelined (from its sizing) or
/// one frame at a time (from its first frame): another export making room
/// for its pool evicts the sets earlier exports left, never that one,
/// even between its frames; once the run is over it is a cache again.
#[test]
fn a_running_exports_kernel_set_is_not_evicted_for_another() {
    let Some(mut gpu) = crate::util::gpu(Default::default()) else { return };
    let shape = FrameShape { width: 64, height: 48, format: PixelFormat::Rgba8 };
    let plan = |ops: Vec<Op>| OpGraph::new(ops).unwrap().plan();
    let (running, left, next) =
        (graph().plan(), plan(vec![Op::Exposure { stops: 0.5 }]), plan(vec![Op::Blur { sigma: 3.0 }]));
    let bytes = |p| gpu.compute_bytes(shape, p).unwrap();
    let (running_bytes, next_bytes) = (bytes(&running), bytes(&next));
    gpu.prepare(shape, &running).unwrap();
    let held = gpu.hold_set(shape, &running);
    gpu.prepare(shape, &left).unwrap();
    // The next export holds its own set too, as it sizes its pool.
    gpu.prepare(shape, &next).unwrap();
    let _next_held = gpu.hold_set(shape, &next);
    // Another export's grade of the running one's layout, the cache full
    // (three sets): the set left behind gives way, the running one is
    // neither evicted nor rewritten for it.
    let variant = plan(vec![
        Op::Exposure { stops: 0.9 },
        Op::Blur { sigma: 1.5 },
        Op::Saturation { saturation: 1.1 },
        Op::Blur { sigma: 0.7 },
    ]);
    let before = gpu.compute_stats();
    gpu.prepare(shape, &variant).unwrap();
    gpu.prepare(shape, &running).unwrap();
    assert_eq!((gpu.compute_stats().built, gpu.compute_stats().rewritten), (before.built + 1, before.rewritten));
    assert_eq!(gpu.evict_export_sets(), 1, "the variant goes, the running one stays");
    assert_eq!(gpu.ledger().current(), running_bytes + next_bytes, "the running one stays");
    drop(held);
    assert_eq!(gpu.evict_export_sets(), 1, "over, it is a cache");
    assert_eq!(gpu.ledger().current(), next_bytes);
    // One frame at a time: held from its frame to the end of the run.
    let mut rng = crate::util::Rng::fresh("held set");
    let frame = crate::util::random_frame(&mut rng, 64, 48, PixelFormat::Rgba8, true);
    gpu.process(&frame, &running).unwrap();
    assert_eq!(gpu.evict_export_sets(), 0);
    gpu.release_own_slot();
    assert_eq!(gpu.evict_export_sets(), 1);
    assert_eq!(gpu.ledger().current(), next_bytes);
}

/// An export making room in a full cache takes a set only exports used
/// before an editor's: the preview's set is still there, untouched, for
/// its next request.
#[test]
fn an_export_takes_an_export_set_before_a_previews() {
    let Some(mut gpu) = crate::util::gpu(Default::default()) else { return };
    let shape = FrameShape { width: 64, height: 48, format: PixelFormat::Rgba8 };
    let plan = |ops: Vec<Op>| OpGraph::new(ops).unwrap().plan();
    let exposure = |stops| plan(vec![Op::Exposure { stops }]);
    // The preview's (the least recent), an export's of the same layout,
    // and one of another: the cache is full.
    gpu.prepare_for_preview(shape, &exposure(0.5), 2).unwrap();
    gpu.prepare(shape, &exposure(0.7)).unwrap();
    gpu.prepare(shape, &plan(vec![Op::Blur { sigma: 3.0 }])).unwrap();
    let before = gpu.compute_stats();
    gpu.prepare(shape, &exposure(0.9)).unwrap();
    gpu.prepare_for_preview(shape, &exposure(0.5), 2).unwrap();
    let after = gpu.compute_stats();
    assert_eq!((after.built, after.rewritten), (before.built, before.rewritten + 1), "{before:?} {after:?}");
    // Evicting for a set of another layout: an export's goes, though the
    // preview's is the least recent.
    gpu.prepare(shape, &plan(vec![Op::Blur { sigma: 3.0 }])).unwrap();
    gpu.prepare(shape, &exposure(0.9)).unwrap();
    gpu.prepare(shape, &plan(vec![Op::Blur { sigma: 9.0 }])).unwrap();
    let before = gpu.compute_stats();
    gpu.prepare_for_preview(shape, &exposure(0.5), 2).unwrap();
    assert_eq!(gpu.compute_stats(), before, "the preview's set is still there");
}

/// One frame at a time too, the set an earlier export left gives way to
/// the frame's slot rather than fail it.
#[test]
fn an_earlier_grades_kernels_give_way_to_a_sequential_frame() {
    let shape = FrameShape { width: 64, height: 48, format: PixelFormat::Rgba8 };
    let (left, plain) = (graph(), OpGraph::new(vec![Op::Exposure { stops: 0.5 }]).unwrap());
    let Some([left_bytes, plain_bytes]) = kernel_bytes(shape, [&left, &plain]) else { return };
    let (left, plain) = (left.plan(), plain.plan());
    let frame_bytes = GpuBackend::slot_bytes(shape) + GpuBackend::readback_bytes(shape);
    // Both sets fit, or one set and a frame: not both sets and a frame.
    let budget = left_bytes + plain_bytes + frame_bytes - 1;
    let ledger = framepipe::ledger::Ledger::new(budget);
    let mut gpu = GpuBackend::new(&Default::default(), ledger.clone()).unwrap();
    gpu.prepare(shape, &left).unwrap();
    let mut rng = crate::util::Rng::fresh("sequential frame beside a left set");
    let frame = crate::util::random_frame(&mut rng, 64, 48, PixelFormat::Rgba8, true);
    gpu.process(&frame, &plain).unwrap();
    assert_eq!(ledger.current(), plain_bytes + frame_bytes);
    assert!(ledger.peak() <= budget);
}

/// Frames whose header does not read fail before the pool is made, which
/// is sized for the frames left to start: one here, not eight threads'
/// worth.
#[test]
fn a_pool_is_sized_for_the_frames_left_after_unreadable_ones() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), 4, 32, 24);
    for n in 1..=3 {
        fs::write(t.path().join(format!("in/s_{n:03}.png")), b"not a png").unwrap();
    }
    for backend in crate::util::backends() {
        let e = engine(backend, PoolSize::Auto, 8, 1 << 30);
        let mut job = Job::new(input.as_str(), format!("{}/{backend:?}/o_%03d.png", t.path().display()), graph());
        job.on_error = framepipe::ErrorPolicy::Skip;
        let prepared = framepipe::prepare(&job).unwrap();
        let report = e.run(&job, &prepared, &Cancel::default(), &mut |_| {}).unwrap();
        assert_eq!((report.frames_written, report.failures.len()), (1, 3), "{backend:?}");
        assert!(report.failures.iter().all(|f| f.kind == framepipe::FailureKind::Source), "{:?}", report.failures);
        assert_eq!(report.pool_size, 1, "{backend:?}");
        assert_eq!((report.failed_frames.as_str(), report.unwritten_frames.as_str()), ("1-3", ""));
    }
}

/// A budget of nothing is refused when the engine is made, on any backend,
/// not by every frame and preview after.
#[test]
fn an_engine_with_no_budget_is_refused() {
    let err =
        Engine::new(EngineConfig { backend: BackendKind::Cpu, vram_budget: 0, ..Default::default() }).unwrap_err();
    assert!(err.is_usage() && err.to_string().contains("vram budget 0"), "{err}");
}

/// What an embedding program can get wrong is refused with a reason, not
/// trusted: a config out of range, a grade built or changed without its
/// checks, a job changed between `prepare` and `run`.
#[test]
fn a_library_user_s_mistakes_are_refused_with_a_reason() {
    let refused = |config: EngineConfig, says: &str| {
        let err = Engine::new(config).unwrap_err();
        assert!(err.is_usage() && err.to_string().contains(says), "{err}");
    };
    let cpu = || EngineConfig { backend: BackendKind::Cpu, ..Default::default() };
    refused(EngineConfig { prefetch: 100_000, ..cpu() }, "invalid prefetch 100000");
    refused(EngineConfig { band_bytes: Some(0), ..cpu() }, "invalid band bytes 0");
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), 2, 16, 8);
    let e = engine(BackendKind::Cpu, PoolSize::Auto, 2, 1 << 30);
    let mut job = Job::new(input.as_str(), t.path().join("o/o_%03d.jpg").display().to_string(), graph());
    job.encode.jpeg_quality = 0;
    assert!(framepipe::prepare(&job).unwrap_err().to_string().contains("invalid JPEG quality 0"));
    job.encode.jpeg_quality = 90;
    let prepared = framepipe::prepare(&job).unwrap();
    // A grade whose sigma came from a text field, set without OpGraph::new.
    let mut bad = job.clone();
    bad.graph.ops.push(Op::Blur { sigma: f64::NAN });
    let shape = FrameShape { width: 16, height: 8, format: PixelFormat::Rgba8 };
    assert!(e.export_vram(shape, &bad.graph).unwrap_err().is_usage());
    let ran = e.run(&bad, &prepared, &Cancel::default(), &mut |_| {});
    assert!(ran.unwrap_err().to_string().contains("sigma"));
    // Another output than the one prepared (its folder checked, its
    // existing files refused) would be written unchecked: refused.
    let mut moved = job.clone();
    moved.output = t.path().join("elsewhere/o_%03d.png").display().to_string();
    let err = e.run_sequential(&moved, &prepared, &Cancel::default(), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("the job it was prepared from"), "{err}");
    // The job as prepared runs.
    assert_eq!(e.run(&job, &prepared, &Cancel::default(), &mut |_| {}).unwrap().frames_written, 2);
}

#[test]
fn budget_too_small_on_the_command_line() {
    if !gpu_available() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), 2, 64, 48);
    let out = t.path().join("o/s_%03d.png").display().to_string();
    let run = ["process", &input, "-o", &out, "--blur", "2", "--backend", "gpu", "--vram-budget", "20KiB"];
    Command::cargo_bin("framepipe")
        .unwrap()
        .timeout(std::time::Duration::from_secs(300))
        .args(run)
        .assert()
        .code(2)
        .stderr(predicates::str::contains("frame needs"));
    // One frame at a time, the same refusal, in the same terms.
    Command::cargo_bin("framepipe")
        .unwrap()
        .timeout(std::time::Duration::from_secs(300))
        .args(run)
        .arg("--sequential")
        .assert()
        .code(2)
        .stderr(predicates::str::contains("frame needs").and(predicates::str::contains("scratch").not()));
    assert!(fs::read_dir(t.path().join("o")).map_or(true, |d| d.count() == 0), "nothing written");
}

fn corrupt(path: &Path) {
    let bytes = fs::read(path).unwrap();
    fs::write(path, &bytes[..bytes.len() / 3]).unwrap();
}

#[test]
fn failing_frame_skip_and_stop() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), 40, 40, 30);
    corrupt(&t.path().join("in/s_006.png"));
    for backend in ["cpu", "gpu"] {
        if backend == "gpu" && !gpu_available() {
            continue;
        }
        let skip = t.path().join(format!("{backend}-skip"));
        Command::cargo_bin("framepipe")
            .unwrap()
            .timeout(std::time::Duration::from_secs(300))
            .args(["process", &input, "-o", &format!("{}/o_%03d.png", skip.display()), "--blur", "1"])
            .args(["--backend", backend, "--on-error", "skip", "--threads", "3", "--pool", "3"])
            .timeout(Duration::from_secs(60))
            .assert()
            .code(1)
            // The summary names the frame to look at.
            .stderr(predicates::str::contains("s_006.png").and(predicates::str::contains("1 frame failed: 6.")));
        let mut written: Vec<_> =
            fs::read_dir(&skip).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()).collect();
        written.sort();
        let expected: Vec<String> = (1..=40).filter(|&n| n != 6).map(|n| format!("o_{n:03}.png")).collect();
        assert_eq!(written, expected);

        let stop = t.path().join(format!("{backend}-stop"));
        Command::cargo_bin("framepipe")
            .unwrap()
            .timeout(std::time::Duration::from_secs(300))
            .args(["process", &input, "-o", &format!("{}/o_%03d.png", stop.display()), "--blur", "1"])
            .args(["--backend", backend, "--threads", "3", "--pool", "3"])
            .timeout(Duration::from_secs(60))
            .assert()
            .code(1)
            .stderr(predicates::prelude::PredicateBooleanExt::and(
                predicates::str::contains("s_006.png"),
                predicates::str::contains("not written: "),
            ));
        // It stopped: only frames already taken when 6 failed (at most a
        // pool's worth past it) were finished.
        let written = fs::read_dir(&stop).unwrap().count();
        assert!(written <= 5 + 3 + 3, "{backend}: stopped early, {written} written");
        for entry in fs::read_dir(&stop).unwrap().flatten() {
            let name = entry.file_name().into_string().unwrap();
            assert!(name.starts_with("o_") && !name.contains("partial") && name != "o_006.png", "{name}");
            assert!(framepipe::io::decode_file(&entry.path(), &Default::default()).is_ok(), "{name} is complete");
        }
    }
}

#[test]
fn a_panicking_stage_ends_the_run_with_an_error() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), 40, 32, 24);
    let mut cases =
        vec![(BackendKind::Cpu, Stage::Start), (BackendKind::Cpu, Stage::Decode), (BackendKind::Cpu, Stage::Compute)];
    cases.push((BackendKind::Cpu, Stage::Encode));
    if gpu_available() {
        cases.extend([(BackendKind::Gpu, Stage::Compute), (BackendKind::Gpu, Stage::Readback)]);
    }
    for (backend, stage) in cases {
        let e = engine(backend, PoolSize::Fixed(2), 2, 2 << 30);
        let mut job = Job::new(
            input.as_str(),
            t.path().join(format!("{backend:?}{stage:?}/o_%03d.png")).display().to_string(),
            graph(),
        );
        job.inject_panic = Some((stage, 3));
        let prepared = framepipe::prepare(&job).unwrap();
        // Frames reported written once the panic was: at most those each
        // of the two encoders was already writing; the rest are dropped.
        // The second is timed from the panic's report, not from the start
        // (building kernels on a loaded software adapter is not the point).
        // On a thread of its own, waited for with a limit: a stage left
        // hanging by the panic fails the test rather than stalling it.
        // `run` returns only after every thread has joined.
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let run = std::thread::spawn(move || {
            let (mut failed, mut after) = (None, 0);
            let mut progress = |p: framepipe::Progress<'_>| match p {
                framepipe::Progress::Failed { failure, .. } => {
                    assert_eq!(failure.kind, framepipe::FailureKind::Internal, "{failure:?}");
                    _ = failed.get_or_insert_with(Instant::now);
                }
                framepipe::Progress::Done { .. } => after += usize::from(failed.is_some()),
                _ => {}
            };
            let result = e.run(&job, &prepared, &Cancel::default(), &mut progress).map(|r| r.frames_written);
            let _ = done_tx.send((result, failed, after));
        });
        let (result, failed, after) = done.recv_timeout(Duration::from_secs(60)).expect("the run ends after a panic");
        // The engine goes on that thread: before the process ends.
        run.join().unwrap();
        let err = result.unwrap_err();
        let elapsed = failed.expect("the panic is reported as a failed frame").elapsed();
        assert!(after <= 2, "{backend:?} {stage:?}: {after} frames written after the panic");
        assert!(
            matches!(&err, Error::Panic(m) if m.contains(&format!("{stage:?} stage panicked on frame 3"))),
            "{err}"
        );
        assert!(elapsed < Duration::from_secs(1), "{backend:?} {stage:?} took {elapsed:?}");
    }
    // The one-frame-at-a-time path returns the same error, having written
    // the frames before and nothing partial.
    for stage in [Stage::Decode, Stage::Compute, Stage::Encode] {
        let e = engine(BackendKind::Cpu, PoolSize::Fixed(1), 1, 2 << 30);
        let dir = t.path().join(format!("seq{stage:?}"));
        let mut job = Job::new(input.as_str(), dir.join("o_%03d.png").display().to_string(), graph());
        job.inject_panic = Some((stage, 3));
        let prepared = framepipe::prepare(&job).unwrap();
        let err = e.run_sequential(&job, &prepared, &Cancel::default(), &mut |_| {}).unwrap_err();
        let said = format!("{stage:?} stage panicked on frame 3: injected test panic");
        assert!(matches!(&err, Error::Panic(m) if m.contains(&said)), "{err}");
        let mut names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, ["o_001.png", "o_002.png"], "{stage:?}");
    }
}

#[test]
fn cancel_stops_taking_frames() {
    let t = tempfile::tempdir().unwrap();
    // Enough frames that the rest outlast any delay before the cancel.
    let input = sequence(t.path(), 200, 32, 24);
    let e = engine(BackendKind::Cpu, PoolSize::Fixed(2), 1, 2 << 30);
    let job = Job::new(input.as_str(), t.path().join("c/o_%03d.png").display().to_string(), graph());
    let prepared = framepipe::prepare(&job).unwrap();
    let cancel = Cancel::default();
    let handle = cancel.clone();
    let report = e
        .run(&job, &prepared, &cancel, &mut |p| {
            if let framepipe::Progress::Done { finished: 2, .. } = p {
                handle.cancel();
            }
        })
        .unwrap();
    assert!(report.cancelled);
    assert!(report.frames_written < 200 && report.frames_written >= 2, "{}", report.frames_written);
    assert_eq!(report.frames_written + report.frames_unwritten, 200);
}

/// A frame whose compute waited for the backend (a preview held it) when
/// the run was cancelled has not started: it is dropped, not processed
/// (and its write abandoned) after the cancel.
#[test]
fn a_frame_waiting_for_the_backend_at_a_cancel_is_dropped() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), 40, 32, 24);
    let e = engine(BackendKind::Cpu, PoolSize::Fixed(2), 1, 2 << 30);
    let job = Job::new(input.as_str(), t.path().join("w/o_%03d.png").display().to_string(), graph());
    let prepared = framepipe::prepare(&job).unwrap();
    let cancel = Cancel::default();
    let written = std::sync::atomic::AtomicUsize::new(0);
    let (first_tx, first) = crossbeam_channel::bounded(1);
    let report = std::thread::scope(|s| {
        let run = s.spawn(|| {
            let mut progress = |p: framepipe::Progress<'_>| {
                if let framepipe::Progress::Done { finished, .. } = p {
                    written.store(finished, std::sync::atomic::Ordering::SeqCst);
                    let _ = first_tx.try_send(());
                }
            };
            e.run(&job, &prepared, &cancel, &mut progress).unwrap()
        });
        // Once frames flow, the backend is held as a preview's render holds
        // it: the next frame's compute waits, the frames computed before
        // are written (tiny frames: well within the wait).
        first.recv_timeout(Duration::from_secs(60)).unwrap();
        let held = e.backend().lock(framepipe::priority::Priority::Preview);
        // The frames computed before the hold are written once the count
        // stands still a while (a loaded machine is given that long, not
        // a fixed time).
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut still = (written.load(std::sync::atomic::Ordering::SeqCst), Instant::now());
        while still.1.elapsed() < Duration::from_millis(800) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            let now = written.load(std::sync::atomic::Ordering::SeqCst);
            if now != still.0 {
                still = (now, Instant::now());
            }
        }
        let before = written.load(std::sync::atomic::Ordering::SeqCst);
        cancel.cancel();
        drop(held);
        (run.join().unwrap(), before)
    });
    let (report, before) = report;
    assert!(report.cancelled);
    assert_eq!(report.frames_written, before, "{report:?}");
    let compute = report.stages.iter().find(|s| s.name == "compute").expect("a compute stage");
    assert_eq!(compute.frames, before, "no frame processed after the cancel: {:?}", report.stages);
}

/// A cancel that arrives while the last frame is under way still marks the
/// run cancelled (the CLI exits 130, as a shell expects after Ctrl-C), in
/// the pipeline and the one-frame-at-a-time path alike.
#[test]
fn cancel_during_the_last_frame_is_reported_by_both_paths() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), 3, 32, 24);
    let e = engine(BackendKind::Cpu, PoolSize::Fixed(2), 1, 2 << 30);
    for (i, sequential) in [false, true].into_iter().enumerate() {
        let job = Job::new(input.as_str(), t.path().join(format!("l{i}/o_%03d.png")).display().to_string(), graph());
        let prepared = framepipe::prepare(&job).unwrap();
        let cancel = Cancel::default();
        let handle = cancel.clone();
        let mut progress = |p: framepipe::Progress<'_>| {
            if let framepipe::Progress::Done { finished: 3, .. } = p {
                handle.cancel();
            }
        };
        let report = if sequential {
            e.run_sequential(&job, &prepared, &cancel, &mut progress)
        } else {
            e.run(&job, &prepared, &cancel, &mut progress)
        }
        .unwrap();
        assert!(report.cancelled, "sequential: {sequential}");
        assert_eq!((report.frames_written, report.frames_unwritten), (3, 0), "sequential: {sequential}");
    }
}

fn peak_rss(dir: &Path, input: &str, frames: u32, backend: &str) -> u64 {
    let json = dir.join(format!("r{frames}{backend}.json"));
    Command::cargo_bin("framepipe")
        .unwrap()
        .timeout(std::time::Duration::from_secs(300))
        .args(["process", input, "-o", &format!("{}/o{frames}{backend}_%03d.png", dir.display()), "--blur", "1"])
        .args(["--backend", backend, "--pool", "2", "--threads", "2", "--frames", &format!("1-{frames}"), "-q"])
        .args(["--json", json.to_str().unwrap()])
        .assert()
        .success();
    let report: serde_json::Value = serde_json::from_str(&fs::read_to_string(json).unwrap()).unwrap();
    assert_eq!(report["frames_written"], frames);
    report["rss_peak"].as_u64().unwrap()
}

#[test]
fn host_memory_stays_bounded() {
    let t = tempfile::tempdir().unwrap();
    // 256x256 RGBA: 256 KiB per frame; 180 extra frames would be 45 MiB.
    let input = sequence(t.path(), 200, 256, 256);
    for backend in ["cpu", "gpu"] {
        if backend == "gpu" && !gpu_available() {
            continue;
        }
        let small = peak_rss(t.path(), &input, 20, backend);
        let large = peak_rss(t.path(), &input, 200, backend);
        assert!(small > 0, "peak RSS readable");
        assert!(large < small + 8 * 1024 * 1024, "{backend}: 200 frames peaked at {large} B, 20 frames at {small} B");
    }
}

/// Reads `stderr` up to the first line `wanted` takes (or its end): that line.
fn read_until(stderr: &mut impl std::io::BufRead, wanted: impl Fn(&str) -> bool) -> String {
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 && !wanted(&line) {
        line.clear();
    }
    line
}

/// Sends `signal` (`INT`, `TERM`; `TERM TERM`: twice, 50 ms apart, which
/// the signal thread reads as two deliveries, not one) to `child` with the
/// shell's builtin kill: present wherever sh is, unlike /bin/kill.
fn send(child: &std::process::Child, signal: &str) {
    let kill: Vec<String> = signal.split_whitespace().map(|s| format!("kill -{s} {}", child.id())).collect();
    let kill = kill.join("; sleep 0.05; ");
    assert!(std::process::Command::new("sh").args(["-c", &kill]).status().unwrap().success());
}

/// Starts a CPU run over `frames` frames of `width`x`height`, waits for its
/// first frame, sends `signals` (one after the other), and checks that it
/// ends as the last one would have (a shell sees a process the signal
/// ended, `$?` 128 + its number, and stops a loop running it) leaving only
/// complete outputs. Returns its stderr after the first frame.
/// `replacing`: the run replaces (`--overwrite`) the JSON report an
/// earlier run of its output left, and a file of the user's under its
/// timeline's name; returned is what is under those names once it ended.
fn interrupt(signals: &[&str], frames: u32, width: u32, height: u32, replacing: bool) -> (String, [Option<String>; 2]) {
    use std::io::BufReader;
    use std::process::Stdio;
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), frames, width, height);
    let out = t.path().join("o");
    let (report, timeline) = (t.path().join("r.json"), t.path().join("t.svg"));
    let output = format!("{}/o_%03d.png", out.display());
    let framepipe = || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_framepipe"));
        command.args(["process", &input, "-o", &output, "--blur", "6", "--backend", "cpu", "--threads", "1"]);
        command.args(["--pool", "2"]);
        command
    };
    let mut command = framepipe();
    if replacing {
        let earlier = framepipe().args(["--frames", "1", "-q", "--json"]).arg(&report).status().unwrap();
        assert!(earlier.success());
        fs::write(&timeline, "<svg>mine</svg>").unwrap();
        command.arg("--overwrite").arg("--json").arg(&report).arg("--timeline").arg(&timeline);
    }
    let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let line = read_until(&mut stderr, |l| l.contains("written"));
    assert!(line.contains("written"), "a frame was written before the interrupt");
    for signal in signals {
        send(&child, signal);
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, rest) = crate::util::finish(&mut child, stderr, Duration::from_secs(30), "after the interrupt");
    let last = signals.last().and_then(|s| s.split_whitespace().last());
    assert_eq!(ended_by(status), last.map(signal_number), "{signals:?}: {rest}");
    let written: Vec<_> = fs::read_dir(&out).unwrap().flatten().collect();
    assert!(!written.is_empty() && written.len() < frames as usize);
    // The summary names every frame that is not on disk, to run again.
    if let Some(list) = rest.split("not written: ").nth(1) {
        let list = list.split('.').next().unwrap();
        let listed: Vec<u64> = list
            .split(", ")
            .flat_map(|run| {
                let (a, b) = run.split_once('-').unwrap_or((run, run));
                a.parse::<u64>().unwrap()..=b.parse::<u64>().unwrap()
            })
            .collect();
        for n in 1..=frames as u64 {
            let on_disk = out.join(format!("o_{n:03}.png")).exists();
            assert_ne!(on_disk, listed.contains(&n), "frame {n}: {rest}");
        }
    }
    for f in written {
        let name = f.file_name().into_string().unwrap();
        assert!(!name.starts_with('.'), "{signals:?}: no temporary file left: {name}");
        framepipe::io::decode_file(&f.path(), &Default::default()).expect("complete frame");
    }
    (rest, [fs::read_to_string(&report).ok(), fs::read_to_string(&timeline).ok()])
}

/// The number of SIG`signal`.
fn signal_number(signal: &str) -> i32 {
    match signal {
        "HUP" => 1,
        "INT" => 2,
        "TERM" => 15,
        other => panic!("no number for SIG{other}"),
    }
}

/// The signal that ended a process that caught it and then ended as it
/// would have (so a shell loop running it stops): killed by it, not an
/// exit with 128 + its number.
fn ended_by(status: std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.code(), None, "ended by a signal, not an exit code");
    status.signal()
}

#[test]
fn ctrl_c_sigterm_or_sighup_drains_in_flight_frames_and_ends_by_it() {
    for signal in ["INT", "TERM", "HUP"] {
        let (rest, _) = interrupt(&[signal], 80, 320, 200, false);
        assert!(rest.contains("not written: "), "{signal}: the summary is printed: {rest}");
        assert!(rest.contains("with --skip-existing processes only the frames not written"), "{rest}");
    }
}

/// `timeout` sends its signal to the process and then to its group: the
/// same signal twice at once is one request to stop, which drains and
/// prints the summary, not a second that stops at once.
#[test]
fn the_same_signal_twice_at_once_is_one_request_to_stop() {
    let (rest, _) = interrupt(&["TERM TERM"], 8, 1280, 720, false);
    assert!(rest.contains("not written: ") && !rest.contains("at once"), "{rest}");
}

/// A signal the parent set to be ignored (`nohup`: SIGHUP) stays ignored:
/// the run goes on to the end.
#[test]
fn a_signal_the_parent_ignores_does_not_stop_the_run() {
    use std::io::BufReader;
    use std::process::Stdio;
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), 12, 320, 200);
    let out = t.path().join("o/o_%03d.png").display().to_string();
    // `sh` ignores it, and `exec` keeps it ignored, as nohup does.
    let mut child = std::process::Command::new("sh")
        .args(["-c", "trap '' HUP; exec \"$0\" \"$@\"", env!("CARGO_BIN_EXE_framepipe")])
        .args(["process", &input, "-o", &out, "--blur", "6", "--backend", "cpu", "--threads", "1"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let line = read_until(&mut stderr, |l| l.contains("written"));
    assert!(line.contains("written"), "a frame was written before the signal");
    send(&child, "HUP");
    let (status, rest) = crate::util::finish(&mut child, stderr, Duration::from_secs(60), "the whole run");
    assert!(status.success(), "{rest}");
    assert!(!rest.contains("stopping"), "{rest}");
    assert_eq!(fs::read_dir(t.path().join("o")).unwrap().count(), 12);
}

#[test]
fn a_second_interrupt_stops_at_once_and_removes_unfinished_outputs() {
    // Frames slow enough (a wide blur on one thread) that the second signal
    // lands while the first drain is still working.
    // The second signal's code is the exit code: it stopped the process.
    let (rest, [report, timeline]) = interrupt(&["INT", "TERM"], 8, 1280, 720, true);
    assert!(rest.contains("stopped at once; the frames written so far are kept, "), "{rest}");
    assert!(!rest.contains("frames/s"), "no summary after stopping at once: {rest}");
    // No report is written, and the earlier run's it was replacing no
    // longer describes the outputs: it goes, said so. A file of the
    // user's under a report's name was to be replaced only by a report.
    assert_eq!(report, None, "{rest}");
    assert!(rest.contains("removed the earlier report ") && rest.contains("r.json"), "{rest}");
    assert_eq!(timeline.as_deref(), Some("<svg>mine</svg>"));
}

/// A stage's threads the OS will not start (a thread limit) fail the run
/// with that reason, nothing written, every thread that did start joined:
/// never a panic that leaves the others waiting. (Reproduced for real
/// with `ulimit -v 600000` and `--threads 256`, which hung before e67d385;
/// not a test, as std itself may abort a thread it started short of
/// memory.)
#[test]
fn threads_the_os_refuses_fail_the_run_without_hanging() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), 12, 16, 8);
    let stages = [(Stage::Start, "reader"), (Stage::Decode, "decoder"), (Stage::Compute, "compute")];
    let mut cases: Vec<_> =
        stages.iter().chain(&[(Stage::Encode, "encoder")]).map(|&s| (BackendKind::Cpu, s)).collect();
    if gpu_available() {
        cases.extend([
            (BackendKind::Gpu, (Stage::Compute, "compute")),
            (BackendKind::Gpu, (Stage::Readback, "readback")),
        ]);
    }
    for (backend, (stage, thread)) in cases {
        let e = engine(backend, PoolSize::Fixed(2), 2, 2 << 30);
        let out = t.path().join(format!("{backend:?}-{thread}"));
        let mut job = Job::new(input.as_str(), out.join("o_%03d.png").display().to_string(), graph());
        job.refuse_threads = Some(stage);
        let prepared = framepipe::prepare(&job).unwrap();
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let run = std::thread::spawn(move || {
            let _ = done_tx.send(e.run(&job, &prepared, &Cancel::default(), &mut |_| {}));
        });
        let result = done.recv_timeout(Duration::from_secs(60)).expect("the run ends");
        // The engine goes on that thread: before the process ends.
        run.join().unwrap();
        let err = result.map(|r| r.frames_written).unwrap_err();
        assert!(matches!(err, Error::Thread { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("cannot start a thread for the pipeline's {thread}: operation would block")
        );
        assert_eq!(fs::read_dir(&out).map_or(0, |d| d.count()), 0, "{backend:?} {thread}: nothing written");
    }
}

/// The demo stopped while it generates its frames leaves no folder behind.
#[test]
fn the_demo_interrupted_while_generating_leaves_nothing() {
    use std::io::BufReader;
    use std::process::Stdio;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_framepipe"))
        .args(["demo", "--size", "1920x1080", "--frames", "40", "--backend", "cpu"])
        .env("TMPDIR", tmp.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = read_until(&mut BufReader::new(child.stderr.take().unwrap()), |l| l.starts_with("generating"));
    assert!(line.starts_with("generating"), "{line}");
    let demo = tmp.path().read_dir().unwrap().flatten().next().expect("the demo's folder").path();
    // Some frames are there to remove.
    let plates = demo.join("plates");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while fs::read_dir(&plates).map_or(0, |d| d.count()) < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    send(&child, "INT");
    let status = crate::util::wait_exit(&mut child, Duration::from_secs(30), "after the interrupt");
    assert_eq!(ended_by(status), Some(signal_number("INT")));
    assert!(!demo.exists(), "{} removed", demo.display());
}

/// A first frame cut short after its header sets the run's frame size in
/// both paths alike (its header is what the pipeline sizes the pool by),
/// so under `--on-error skip` they fail and write the same frames.
#[test]
fn both_paths_take_the_frame_size_from_the_first_header() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), 4, 24, 16);
    let seed = crate::util::Rng::fresh("larger first frame").next();
    let opts =
        GenerateOptions { width: 48, height: 32, frames: 1, start: 1, format: PixelFormat::Rgba8, alpha: true, seed };
    let big = t.path().join("big/b_%03d.png").display().to_string();
    generate_sequence(&opts, &big, &EncodeOptions::default(), false).unwrap();
    let bytes = fs::read(t.path().join("big/b_001.png")).unwrap();
    fs::write(t.path().join("in/s_001.png"), &bytes[..bytes.len() / 2]).unwrap();
    let e = engine(BackendKind::Cpu, PoolSize::Fixed(2), 2, 2 << 30);
    let mut failed = Vec::new();
    for sequential in [false, true] {
        let mut job =
            Job::new(input.as_str(), t.path().join(format!("o{sequential}/o_%03d.png")).display().to_string(), graph());
        job.on_error = framepipe::ErrorPolicy::Skip;
        let prepared = framepipe::prepare(&job).unwrap();
        let cancel = Cancel::default();
        let report = if sequential {
            e.run_sequential(&job, &prepared, &cancel, &mut |_| {}).unwrap()
        } else {
            e.run(&job, &prepared, &cancel, &mut |_| {}).unwrap()
        };
        assert_eq!(report.frame, "48x32 RGBA8", "sequential {sequential}");
        let mut numbers: Vec<u64> = report.failures.iter().map(|f| f.number).collect();
        numbers.sort();
        failed.push((numbers, report.frames_written));
    }
    assert_eq!(failed[0], failed[1]);
    assert_eq!(failed[0], (vec![1, 2, 3, 4], 0));
}

/// A stream whose reader stalls holds its frame's write forever: one
/// SIGTERM (a supervisor's) still ends the run, once the grace period for
/// that frame has passed.
#[test]
fn one_signal_ends_a_stream_whose_reader_stalled() {
    use std::io::BufReader;
    use std::process::Stdio;
    let t = tempfile::tempdir().unwrap();
    // Frames larger than a pipe holds: the writer blocks on the first.
    let input = sequence(t.path(), 4, 640, 360);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_framepipe"))
        .args(["process", &input, "-o", "-", "--backend", "cpu"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    read_until(&mut stderr, |l| l.starts_with("streaming "));
    // The reader never reads (its end is kept open), and the pipe fills.
    let _stalled = child.stdout.take().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    send(&child, "TERM");
    let line = read_until(&mut stderr, |l| l.contains("stopped at once"));
    assert!(line.contains("stopped at once"), "{line}");
    let status = crate::util::wait_exit(&mut child, Duration::from_secs(30), "after the grace period");
    assert_eq!(ended_by(status), Some(signal_number("TERM")));
}

/// Outputs that appear after a --skip-existing run was prepared (another
/// run writing there): one that reads as this render's frame is kept and
/// counted with the frames already there; anything else there (an empty
/// file) is that frame's failure, never counted as done.
#[test]
fn outputs_appearing_mid_run_are_kept_only_if_frames() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), 5, 40, 24);
    for sequential in [false, true] {
        let dir = t.path().join(format!("o-{sequential}"));
        let mut job = Job::new(input.as_str(), format!("{}/o_%03d.png", dir.display()), graph());
        job.skip_existing = true;
        job.on_error = framepipe::ErrorPolicy::Skip;
        let prepared = framepipe::prepare(&job).unwrap();
        // After the run was prepared: a frame another run rendered, and
        // an empty file.
        let e = engine(BackendKind::Cpu, PoolSize::Auto, 2, 2 << 30);
        let other = Job::new(input.replace("s_%03d", "s_002"), dir.join("o_002.png").display().to_string(), graph());
        e.run(&other, &framepipe::prepare(&other).unwrap(), &Cancel::default(), &mut |_| {}).unwrap();
        fs::write(dir.join("o_004.png"), b"").unwrap();
        let cancel = Cancel::default();
        let report = if sequential {
            e.run_sequential(&job, &prepared, &cancel, &mut |_| {}).unwrap()
        } else {
            e.run(&job, &prepared, &cancel, &mut |_| {}).unwrap()
        };
        let written: Vec<u64> = report.frames.iter().map(|f| f.number).collect();
        assert_eq!(written, [1, 3, 5], "sequential {sequential}");
        assert_eq!((report.frames_existing, report.existing_list.as_str()), (1, "2"), "sequential {sequential}");
        assert_eq!(report.failures.len(), 1, "sequential {sequential}: {:?}", report.failures);
        assert_eq!((report.failures[0].number, report.failures[0].kind), (4, framepipe::FailureKind::Output));
        assert!(report.failures[0].error.contains("o_004.png: exists but is not a frame to keep (an empty file)"));
        assert_eq!(report.unwritten_frames, "", "sequential {sequential}");
    }
}
