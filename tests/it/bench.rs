//! `framepipe bench-pool` measures what it claims.

use std::fs;

use assert_cmd::Command;
use framepipe::PixelFormat;
use framepipe::generate::{GenerateOptions, generate_sequence};
use framepipe::io::EncodeOptions;
use framepipe::pool::PoolSize;
use predicates::prelude::*;

#[test]
fn bench_pool_rows_agree_with_their_runs() {
    let backend = if crate::util::gpu(Default::default()).is_some() { "gpu" } else { "cpu" };
    let t = tempfile::tempdir().unwrap();
    let opts = GenerateOptions { width: 48, height: 32, frames: 6, format: PixelFormat::Rgba8, ..Default::default() };
    let input = t.path().join("s_%03d.png").display().to_string();
    generate_sequence(&opts, &input, &EncodeOptions::default(), false).unwrap();
    let (csv, chart) = (t.path().join("b.csv"), t.path().join("b.svg"));
    // A pool of 200 takes one slot per frame: 6.
    let pools = if backend == "gpu" { "1,2,3,200" } else { "1,2,3" };
    let started = std::time::Instant::now();
    let out = Command::cargo_bin("framepipe")
        .unwrap()
        .timeout(std::time::Duration::from_secs(300))
        .args(["bench-pool", &input, "--pools", pools, "--repeat", "1", "--blur", "1.5", "--backend", backend])
        .args([
            "--budget",
            "1MiB",
            "--threads",
            "2",
            "--csv",
            csv.to_str().unwrap(),
            "--chart",
            chart.to_str().unwrap(),
        ])
        .assert()
        .success();
    let elapsed = started.elapsed().as_secs_f64();
    let table = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    if backend == "gpu" {
        let said = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        assert!(said.contains("pool 200 runs with 6 slots"), "said before the runs: {said}");
    }
    let sizes: &[usize] = if backend == "gpu" { &[1, 2, 3, 6] } else { &[1, 2, 3] };
    assert_eq!(table.lines().count(), sizes.len() + 2, "{table}");
    assert!(table.contains("smallest pool within 95 % of the best"), "{table}");
    let text = fs::read_to_string(&csv).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), sizes.len(), "one row per pool size: {text}");
    let mut last_vram = 0;
    for (row, slots) in rows.iter().zip(sizes) {
        let (frames, seconds, fps): (f64, f64, f64) =
            (row[3].parse().unwrap(), row[4].parse().unwrap(), row[5].parse().unwrap());
        assert_eq!(row[1], slots.to_string());
        assert_eq!(frames, 6.0);
        assert!(fps > 0.0 && seconds > 0.0);
        assert!((fps - frames / seconds).abs() <= 1e-3 * fps, "fps {fps} vs {frames}/{seconds}");
        let vram: u64 = row[8].parse().unwrap();
        if backend == "gpu" {
            assert!(vram > last_vram, "peak VRAM rises with the pool: {text}");
        }
        last_vram = vram;
        assert!(row[9].parse::<u64>().unwrap() > 0, "peak RSS measured");
        let efficiency: f64 = row[6].parse().unwrap();
        assert!(efficiency > 0.0 && efficiency <= 1.0, "efficiency {efficiency}");
        assert!(["decode", "gpu", "compute", "readback", "encode"].contains(&row[7]), "bottleneck {}", row[7]);
    }
    // The runs' own clocks cannot claim more time than the whole command took.
    let total: f64 = rows.iter().map(|r| r[4].parse::<f64>().unwrap()).sum();
    assert!(total < elapsed, "runs sum to {total} s but the command took {elapsed} s");
    let svg = fs::read_to_string(&chart).unwrap();
    assert!(svg.contains("pool size (slots)") && svg.contains("frames/s") && svg.contains("peak host RSS (MiB)"));
    assert!(svg.contains("peak VRAM, ledger (MiB)"));
    if backend == "gpu" {
        // A budget that holds one frame and one more slot: a pool of 3 is
        // reported as not measured, and the sweep goes on.
        let shape = framepipe::gpu::FrameShape { width: 48, height: 32, format: PixelFormat::Rgba8 };
        let config = framepipe::EngineConfig { backend: framepipe::BackendKind::Gpu, ..Default::default() };
        let grade = framepipe::OpGraph::new(vec![framepipe::Op::Blur { sigma: 1.5 }]).unwrap();
        let one = framepipe::Engine::new(config).unwrap().export_vram(shape, &grade).unwrap().unwrap();
        let budget = (one + framepipe::gpu::GpuBackend::slot_bytes(shape)).to_string();
        let out = Command::cargo_bin("framepipe")
            .unwrap()
            .timeout(std::time::Duration::from_secs(300))
            .args(["bench-pool", &input, "--pools", "3,1", "--repeat", "1", "--blur", "1.5", "--backend", "gpu"])
            .args(["--budget", &budget, "--threads", "2"])
            .args([
                "--csv",
                t.path().join("r.csv").to_str().unwrap(),
                "--chart",
                t.path().join("r.svg").to_str().unwrap(),
            ])
            .assert()
            .success();
        let table = String::from_utf8_lossy(&out.get_output().stdout).to_string();
        let refused = table.lines().nth(2).unwrap();
        assert!(refused.starts_with("pool 3 not measured: ") && refused.contains("3 slots of"), "{table}");
        assert_eq!(table.lines().count(), 4, "the header, pool 1, the refusal, the pick: {table}");
        assert!(table.lines().last().unwrap().starts_with("smallest pool"), "{table}");
        // The CSV and chart say so too, not only the table.
        let csv = fs::read_to_string(t.path().join("r.csv")).unwrap();
        assert!(csv.lines().last().unwrap().starts_with("3,,,,,,,,,,,\"not measured: "), "{csv}");
        let svg = fs::read_to_string(t.path().join("r.svg")).unwrap();
        assert!(svg.contains("not measured (see the CSV for why): pool 3</text>"), "{svg}");
        // A budget no pool fits: a usage error naming bench-pool's flag.
        Command::cargo_bin("framepipe")
            .unwrap()
            .timeout(std::time::Duration::from_secs(300))
            .args(["bench-pool", &input, "--pools", "1", "--repeat", "1", "--blur", "1.5", "--backend", "gpu"])
            .args(["--budget", &(one / 2).to_string(), "-q"])
            .args(["--csv", t.path().join("n.csv").to_str().unwrap()])
            .assert()
            .code(2)
            .stderr(predicates::str::contains("(raise --budget)"));
        assert!(!t.path().join("n.csv").exists());
    }
}

/// Each run's wall time, timed from outside: no more than the time between
/// the sweep's reports of consecutive runs (which holds the run and a little
/// set-up), and most of it. frames/s is frames over that time.
#[test]
fn bench_pool_seconds_are_the_runs_wall_time() {
    let t = tempfile::tempdir().unwrap();
    // Runs of a quarter second or so: set-up between them (a millisecond
    // when idle) stays small beside a run even on a loaded 2-core machine.
    let opts = GenerateOptions { width: 640, height: 360, frames: 8, format: PixelFormat::Rgba8, ..Default::default() };
    let input = t.path().join("s_%03d.png").display().to_string();
    generate_sequence(&opts, &input, &EncodeOptions::default(), false).unwrap();
    let graph = framepipe::OpGraph::new(vec![framepipe::Op::Blur { sigma: 2.0 }]).unwrap();
    let job = framepipe::Job::new(input.as_str(), "o_%03d.png", graph);
    // The CPU backend: opening it costs nothing, so set-up between runs is
    // a scan of the folder and a scratch folder made and removed.
    let config = framepipe::EngineConfig { backend: framepipe::BackendKind::Cpu, threads: 2, ..Default::default() };
    let pools = [PoolSize::Fixed(1), PoolSize::Fixed(2), PoolSize::Auto];
    let mut last = None;
    let mut timed = Vec::new();
    let runs = framepipe::bench::bench_pool(
        &job,
        &config,
        &pools,
        2,
        &mut |run| {
            let now = std::time::Instant::now();
            // The first report also covers the warm-up run: no bound.
            if let Some(before) = last.replace(now) {
                timed.push((run.seconds, (now - before).as_secs_f64()));
            }
        },
        &mut |pool, e| panic!("pool {pool} refused: {e}"),
    )
    .unwrap();
    assert_eq!(runs.len(), 6);
    for r in &runs {
        assert_eq!(r.frames, 8);
        assert!((r.fps - r.frames as f64 / r.seconds).abs() <= 1e-9 * r.fps, "{r:?}");
    }
    for (seconds, outside) in timed {
        assert!(seconds <= outside, "a run of {seconds} s inside {outside} s");
        // What lies between reports besides the run is set-up (a scratch
        // folder, an engine): a fraction of a second (2 s allowed on a
        // loaded machine), not the run's own time.
        assert!(
            outside - seconds < 2.0 || seconds >= 0.5 * outside,
            "a run of {seconds} s, but {outside} s between reports"
        );
    }
}

#[test]
fn an_interrupted_bench_pool_leaves_nothing_behind() {
    let t = tempfile::tempdir().unwrap();
    let opts =
        GenerateOptions { width: 1280, height: 720, frames: 6, format: PixelFormat::Rgba8, ..Default::default() };
    let input = t.path().join("s_%03d.png").display().to_string();
    generate_sequence(&opts, &input, &EncodeOptions::default(), false).unwrap();
    // Its scratch folder goes where TMPDIR says: here, to be watched.
    let scratch = t.path().join("tmp");
    fs::create_dir(&scratch).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_framepipe"))
        .args(["bench-pool", &input, "--pools", "1", "--repeat", "1", "--blur", "6", "--backend", "cpu"])
        .args(["--threads", "1", "--csv", t.path().join("b.csv").to_str().unwrap()])
        .args(["--chart", t.path().join("b.svg").to_str().unwrap()])
        .env("TMPDIR", &scratch)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while fs::read_dir(&scratch).unwrap().next().is_none() {
        assert!(started.elapsed().as_secs() < 30, "bench-pool made its scratch folder");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let kill = format!("kill -TERM {}", child.id());
    assert!(std::process::Command::new("sh").args(["-c", &kill]).status().unwrap().success());
    let status = crate::util::wait_exit(&mut child, std::time::Duration::from_secs(30), "after SIGTERM");
    // Ended as SIGTERM would have, once it cleaned up.
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(15));
    assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0, "scratch folder removed");
    assert!(!t.path().join("b.csv").exists() && !t.path().join("b.svg").exists());
}

/// Mistakes in a sweep are found before its first run, in one line.
#[test]
fn bench_pool_refuses_bad_sweeps_up_front() {
    let t = tempfile::tempdir().unwrap();
    let opts = GenerateOptions { width: 16, height: 8, frames: 3, ..Default::default() };
    let input = t.path().join("s_%03d.png").display().to_string();
    generate_sequence(&opts, &input, &EncodeOptions::default(), false).unwrap();
    fs::remove_file(t.path().join("s_002.png")).unwrap();
    let csv = t.path().join("b.csv").display().to_string();
    for (args, expect) in [
        (&["--format", "bmp"][..], "invalid --format bmp"),
        (&["--format", "%d.png"][..], "invalid --format %d.png"),
        (&["--pools", "2,1,2"][..], "invalid --pools 2"),
        (&[][..], "missing frame 2 (use --missing skip"),
    ] {
        let out = Command::cargo_bin("framepipe")
            .unwrap()
            .timeout(std::time::Duration::from_secs(300))
            .args(["bench-pool", &input, "--backend", "cpu", "--csv", &csv])
            .args(args)
            .assert()
            .code(2);
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        assert!(stderr.contains(expect) && stderr.lines().count() == 1, "{args:?}: {stderr}");
    }
    // The gap is left out when asked, and said, as with `process`, even
    // with -q (which leaves out the line per run). A pool size may come
    // with spaces around it.
    Command::cargo_bin("framepipe")
        .unwrap()
        .timeout(std::time::Duration::from_secs(300))
        .args(["bench-pool", &input, "--backend", "cpu", "--pools", " 1", "--repeat", "1", "--missing", "skip", "-q"])
        .args(["--csv", &csv, "--chart", &t.path().join("b.svg").display().to_string()])
        .assert()
        .success()
        .stdout(predicates::str::contains("smallest pool within 95 % of the best: 1 (1 slot"))
        .stderr(
            predicates::str::contains("bench-pool: 1 missing frame left out: 2")
                .and(predicates::str::contains("run 1:").not())
                .and(predicates::str::contains("wrote").not()),
        );
    assert_eq!(fs::read_to_string(&csv).unwrap().lines().count(), 2, "a header and one run");
    // The table goes to stdout: not appended to a frame it reads.
    let frame = t.path().join("s_001.png");
    let before = fs::read(&frame).unwrap();
    let appended = fs::OpenOptions::new().append(true).open(&frame).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_framepipe"))
        .args(["bench-pool", &input, "--backend", "cpu", "--missing", "skip", "--overwrite", "--csv", &csv])
        .stdout(appended)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("invalid stdout (redirected to ") && stderr.contains("s_001.png"), "{stderr}");
    assert_eq!(fs::read(&frame).unwrap(), before, "the frame untouched");
}

/// One still in (no frame number in its name) is swept as one frame.
#[test]
fn bench_pool_takes_a_single_still() {
    let t = tempfile::tempdir().unwrap();
    let opts = GenerateOptions { width: 16, height: 8, frames: 1, ..Default::default() };
    let still = t.path().join("plate_final.png").display().to_string();
    generate_sequence(&opts, &still, &EncodeOptions::default(), false).unwrap();
    Command::cargo_bin("framepipe")
        .unwrap()
        .timeout(std::time::Duration::from_secs(300))
        .args(["bench-pool", &still, "--pools", "1", "--repeat", "1", "--backend", "cpu", "--blur", "1"])
        .args(["--csv", t.path().join("b.csv").to_str().unwrap(), "--chart", t.path().join("b.svg").to_str().unwrap()])
        .assert()
        .success();
    // One row: pool 1, one slot, the first repeat, one frame.
    let csv = fs::read_to_string(t.path().join("b.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 1, "{csv}");
    assert_eq!(rows[0][..4], ["1", "1", "1", "1"], "{csv}");
}
