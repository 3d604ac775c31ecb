//! Streams (`-o -`): every frame exactly once, in sequence order, whatever
//! order the encoders finish in; a failed frame is left out (`skip`) or
//! ends the stream before it (`stop`); a reader that goes away stops the
//! run instead of hanging it.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use framepipe::io::{EncodeOptions, OutputFormat, write_frame_atomic};
use framepipe::pool::PoolSize;
use framepipe::{BackendKind, Cancel, Engine, EngineConfig, HostFrame, Job, Op, OpGraph, PixelFormat, process_cpu};

use crate::util::{Rng, random_frame, wait_exit};

/// Writes fresh random frames as `dir/in/r_%03d.png` from frame 1 (16-bit
/// sources stay 16-bit) and returns the pattern and the frames.
fn random_sequence(dir: &Path, rng: &mut Rng, frames: u32, format: PixelFormat) -> (String, Vec<HostFrame>) {
    let (w, h) = (29 + (rng.next() % 20) as u32, 17 + (rng.next() % 20) as u32);
    let list: Vec<HostFrame> = (0..frames).map(|_| random_frame(rng, w, h, format, true)).collect();
    fs::create_dir_all(dir.join("in")).unwrap();
    for (i, f) in list.iter().enumerate() {
        let path = dir.join(format!("in/r_{:03}.png", i + 1));
        write_frame_atomic(f, &path, OutputFormat::Png, &EncodeOptions::default(), false).unwrap();
    }
    (dir.join("in/r_%03d.png").display().to_string(), list)
}

fn graph() -> OpGraph {
    OpGraph::new(vec![Op::Saturation { saturation: 1.4 }, Op::Blur { sigma: 1.2 }, Op::Exposure { stops: -0.2 }])
        .unwrap()
}

fn stream(engine: &Engine, job: &Job, sequential: bool) -> Vec<u8> {
    let prepared = framepipe::prepare(job).unwrap();
    assert!(prepared.is_stream());
    let mut out = Vec::new();
    let report = if sequential {
        engine.run_sequential_stream(job, &prepared, &mut out, &Cancel::default(), &mut |_| {})
    } else {
        engine.run_stream(job, &prepared, &mut out, &Cancel::default(), &mut |_| {})
    }
    .unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.frames_written, prepared.sequence().frames.len());
    if !sequential {
        // Writing to the stream is timed as a stage (a slow reader is a
        // bottleneck the report can name).
        let write = report.stages.iter().find(|s| s.name == "write").expect("a write stage");
        assert_eq!(write.frames, report.frames_written);
    }
    out
}

#[test]
fn stream_carries_every_frame_in_order() {
    let mut rng = Rng::fresh("stream_carries_every_frame_in_order");
    let backends = crate::util::backends();
    for format in [PixelFormat::Rgba8, PixelFormat::Rgba16] {
        let t = tempfile::tempdir().unwrap();
        let (input, frames) = random_sequence(t.path(), &mut rng, 14, format);
        // Raw is the processed frames back to back, 16-bit little-endian.
        let plan = graph().plan();
        let expected: Vec<u8> = frames
            .iter()
            .flat_map(|f| {
                let data = process_cpu(f, &plan).data;
                if format == PixelFormat::Rgba16 {
                    data.chunks_exact(2).flat_map(|c| u16::from_ne_bytes([c[0], c[1]]).to_le_bytes()).collect()
                } else {
                    data
                }
            })
            .collect();
        for &backend in &backends {
            for stream_format in [OutputFormat::Raw, OutputFormat::Png] {
                let mut job = Job::new(input.as_str(), "-", graph());
                job.stream_format = stream_format;
                let one = Engine::new(EngineConfig { backend, threads: 1, ..Default::default() }).unwrap();
                let oracle = stream(&one, &job, true);
                if backend == BackendKind::Cpu && stream_format == OutputFormat::Raw {
                    assert!(oracle == expected, "sequential raw stream is the processed frames in order");
                }
                for (pool, threads) in [(PoolSize::Fixed(1), 1), (PoolSize::Fixed(3), 4), (PoolSize::Auto, 4)] {
                    let e = Engine::new(EngineConfig { backend, pool, threads, ..Default::default() }).unwrap();
                    let got = stream(&e, &job, false);
                    assert!(
                        got == oracle,
                        "{backend:?} {format} {stream_format:?} pool {pool} threads {threads}: {} bytes vs {}",
                        got.len(),
                        oracle.len()
                    );
                }
            }
        }
    }
}

#[test]
fn stream_jobs_need_a_writer_and_file_jobs_refuse_one() {
    let t = tempfile::tempdir().unwrap();
    let (input, _) = random_sequence(t.path(), &mut Rng::fresh("writer"), 2, PixelFormat::Rgba8);
    let e = Engine::new(EngineConfig { backend: BackendKind::Cpu, ..Default::default() }).unwrap();
    let job = Job::new(input.as_str(), "-", graph());
    let prepared = framepipe::prepare(&job).unwrap();
    let err = e.run(&job, &prepared, &Cancel::default(), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("run_stream"), "{err}");
    let files = Job::new(input.as_str(), t.path().join("o_%03d.png").display().to_string(), graph());
    let prepared = framepipe::prepare(&files).unwrap();
    let err = e.run_stream(&files, &prepared, &mut Vec::new(), &Cancel::default(), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("run_stream"), "{err}");
}

/// Runs the binary with `args`, returning (exit code, stdout, stderr); a
/// run that hangs is killed and fails the test.
fn run_cli(args: &[&str]) -> (Option<i32>, Vec<u8>, String) {
    let out = assert_cmd::Command::new(env!("CARGO_BIN_EXE_framepipe"))
        .args(args)
        .timeout(Duration::from_secs(300))
        .output()
        .unwrap();
    (out.status.code(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn failed_frames_are_left_out_or_end_the_stream() {
    let t = tempfile::tempdir().unwrap();
    let (input, _) = random_sequence(t.path(), &mut Rng::fresh("failed_frames"), 10, PixelFormat::Rgba8);
    let base = ["process", &input, "-o", "-", "--blur", "1", "--backend", "cpu", "--threads", "3", "--pool", "3"];
    let (code, clean, err) = run_cli(&base);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("-f rawvideo -pix_fmt rgba"), "the FFmpeg options are named: {err}");
    let frame = clean.len() / 10;
    assert_eq!(frame * 10, clean.len());

    let bad = t.path().join("in/r_004.png");
    let bytes = fs::read(&bad).unwrap();
    fs::write(&bad, &bytes[..bytes.len() / 3]).unwrap();
    let (code, skipped, err) = run_cli(&[&base[..], &["--on-error", "skip"]].concat());
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("r_004.png"), "{err}");
    let mut expected = clean[..3 * frame].to_vec();
    expected.extend_from_slice(&clean[4 * frame..]);
    assert!(skipped == expected, "skip: every other frame, in order ({} bytes)", skipped.len());
    assert!(err.contains("the stream left out frame 4; the same command with --frames '4' streams only it"), "{err}");

    let (code, stopped, err) = run_cli(&base);
    assert_eq!(code, Some(1), "{err}");
    assert!(stopped == clean[..3 * frame], "stop: the frames before the failed one, nothing after");
    assert!(!err.contains("streams only"), "a stopped stream is not pieced together: {err}");
}

#[test]
fn a_reader_that_goes_away_stops_the_run() {
    let t = tempfile::tempdir().unwrap();
    let (input, frames) = random_sequence(t.path(), &mut Rng::fresh("reader_goes_away"), 40, PixelFormat::Rgba8);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_framepipe"))
        .args(["process", &input, "-o", "-", "--blur", "2", "--backend", "cpu", "--threads", "2", "-q"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = vec![0u8; frames[0].data.len()];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let status = wait_exit(&mut child, Duration::from_secs(60), "after the reader went away");
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("output stream"), "{err}");
}

#[test]
fn stream_format_needs_a_stream() {
    let t = tempfile::tempdir().unwrap();
    let (input, _) = random_sequence(t.path(), &mut Rng::fresh("stream_format"), 1, PixelFormat::Rgba8);
    let out = t.path().join("o.png").display().to_string();
    let (code, _, err) = run_cli(&["process", &input, "-o", &out, "--stream-format", "png"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--stream-format"), "{err}");
    assert!(!Path::new(&out).exists());
}

#[test]
fn a_panicking_progress_callback_does_not_hang_a_stream() {
    let t = tempfile::tempdir().unwrap();
    let (input, _) = random_sequence(t.path(), &mut Rng::fresh("panicking_callback"), 20, PixelFormat::Rgba8);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let e = Engine::new(EngineConfig {
            backend: BackendKind::Cpu,
            threads: 1,
            pool: PoolSize::Fixed(1),
            ..Default::default()
        })
        .unwrap();
        let job = Job::new(input.as_str(), "-", graph());
        let prepared = framepipe::prepare(&job).unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            e.run_stream(&job, &prepared, &mut Vec::new(), &Cancel::default(), &mut |p| {
                if let framepipe::Progress::Done { finished: 2, .. } = p {
                    panic!("the editor's callback failed");
                }
            })
        }));
        let _ = tx.send(outcome.is_err());
    });
    let panicked = rx.recv_timeout(Duration::from_secs(60)).expect("the run ends instead of hanging");
    assert!(panicked, "the callback's panic reaches the caller");
}

/// A pipe its maker left non-blocking (a Python or Node parent's) answers
/// EAGAIN when full: the stream waits for its reader, as on a blocking
/// pipe, rather than ending part-way through a frame.
#[cfg(unix)]
#[test]
fn a_stream_into_a_non_blocking_pipe_waits_for_its_reader() {
    use std::os::fd::AsRawFd;
    let t = tempfile::tempdir().unwrap();
    let (frames, w, h) = (6, 160, 120);
    let opts = framepipe::generate::GenerateOptions { width: w, height: h, frames, ..Default::default() };
    let input = t.path().join("s_%02d.png").display().to_string();
    framepipe::generate::generate_sequence(&opts, &input, &EncodeOptions::default(), false).unwrap();
    let (mut reader, writer) = std::io::pipe().unwrap();
    // SAFETY: reads and sets the flags of a descriptor this test owns.
    unsafe {
        let flags = libc::fcntl(writer.as_raw_fd(), libc::F_GETFL);
        assert!(libc::fcntl(writer.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) == 0);
    }
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_framepipe"));
    cmd.args(["process", &input, "-o", "-", "--backend", "cpu", "-q"]).stdout(writer).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // The writing end goes with the command: the read below ends with the run.
    drop(cmd);
    let (mut got, mut buf) = (Vec::new(), vec![0u8; 16 << 10]);
    loop {
        std::thread::sleep(Duration::from_millis(2));
        match reader.read(&mut buf).unwrap() {
            0 => break,
            n => got.extend_from_slice(&buf[..n]),
        }
    }
    let status = wait_exit(&mut child, Duration::from_secs(60), "a slow reader");
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "{err}");
    assert_eq!(got.len(), (frames * w * h * 4) as usize, "every frame whole");
}
