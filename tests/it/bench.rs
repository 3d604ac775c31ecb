//! `framepipe bench-pool` measures what it claims.

use std::fs;

use assert_cmd::Command;
use framepipe::PixelFormat;
use framepipe::generate::{GenerateOptions, generate_sequence};
use framepipe::io::EncodeOptions;

#[test]
fn bench_pool_rows_agree_with_their_runs() {
    let backend = if crate::util::gpu(Default::default()).is_some() { "gpu" } else { "cpu" };
    let t = tempfile::tempdir().unwrap();
    let opts = GenerateOptions { width: 48, height: 32, frames: 6, format: PixelFormat::Rgba8, ..Default::default() };
    let input = t.path().join("s_%03d.png").display().to_string();
    generate_sequence(&opts, &input, &EncodeOptions::default(), false).unwrap();
    let (csv, chart) = (t.path().join("b.csv"), t.path().join("b.svg"));
    // On the GPU a 1 MiB budget holds 3 slots of these frames but not 200:
    // that size is reported as not measured and the sweep goes on.
    let pools = if backend == "gpu" { "1,2,3,200" } else { "1,2,3" };
    let started = std::time::Instant::now();
    let out = Command::cargo_bin("framepipe")
        .unwrap()
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
        let refused = table.lines().last().unwrap();
        assert!(refused.starts_with("pool 200 not measured: ") && refused.contains("200 slots of"), "{table}");
        assert_eq!(table.lines().count(), 6, "{table}");
    } else {
        assert_eq!(table.lines().count(), 5, "{table}");
    }
    assert!(table.contains("smallest pool within 95 % of the best"), "{table}");
    let text = fs::read_to_string(&csv).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 3, "one row per pool size: {text}");
    let mut last_vram = 0;
    for (row, slots) in rows.iter().zip([1, 2, 3]) {
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
    }
    // The runs' own clocks cannot claim more time than the whole command took.
    let total: f64 = rows.iter().map(|r| r[4].parse::<f64>().unwrap()).sum();
    assert!(total < elapsed, "runs sum to {total} s but the command took {elapsed} s");
    let svg = fs::read_to_string(&chart).unwrap();
    assert!(svg.contains("pool size (slots)") && svg.contains("frames/s") && svg.contains("peak memory (MiB)"));
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
    assert_eq!(status.code(), Some(130));
    assert_eq!(fs::read_dir(&scratch).unwrap().count(), 0, "scratch folder removed");
    assert!(!t.path().join("b.csv").exists() && !t.path().join("b.svg").exists());
}
