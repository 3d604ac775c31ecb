//! An editor's scrub session, replayed against the engine: play forward at
//! 24 fps for two seconds, jump back, drag a grade slider on one frame
//! through 20 values, scrub forward and back with the grade the slider
//! settled on (so the frames played earlier are stale and rendered again).
//! Run once with the engine idle and once with an export of the same
//! sequence running on it, and print per-request latency percentiles, hit
//! rate, cache bytes, and where a miss spends its time: decode, waiting for
//! the backend, upload copy, on the GPU from submission until the result
//! was mapped (copies, kernels, and export work queued ahead), of that the
//! kernels (timestamps, where the adapter has them), and the host's rest
//! (setting up, submitting, the copy out; on the CPU backend, the kernels).
//!
//! ```sh
//! cargo run --release --example editor -- --size 8k          # the real thing
//! cargo run --release --example editor -- --size 1080p --backend cpu
//! ```

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use framepipe::generate::{GenerateOptions, generate_sequence, parse_size};
use framepipe::gpu::FrameShape;
use framepipe::io::{DecodeLimits, EncodeOptions};
use framepipe::ledger::human_bytes_pair;
use framepipe::preview::{PreviewStats, Scale};
use framepipe::sequence::FramePattern;
use framepipe::{BackendKind, Cancel, Engine, EngineConfig, Job, MissingPolicy, Op, OpGraph, PixelFormat, Sequence};

/// Printing that a reader gone (`| head`) does not turn into a panic:
/// the session goes on to its end and removes its plates. Any other
/// failure (`> /dev/full`) is kept for the end: the report was lost, and
/// the session fails with it, as `framepipe` does.
macro_rules! println {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($t)*)
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            let _ = STDOUT_FAILED.set(e.to_string());
        }
    }};
}

/// The first failure to write the report to stdout other than its reader
/// leaving.
static STDOUT_FAILED: std::sync::OnceLock<String> = std::sync::OnceLock::new();

#[derive(Parser)]
struct Args {
    /// Frame size of the generated sequence.
    #[arg(long, default_value = "8k", conflicts_with = "input", allow_hyphen_values = true)]
    size: String,
    /// Frames in the generated sequence (the export runs over all of them).
    #[arg(long, default_value_t = 72, value_parser = clap::value_parser!(u32).range(1..=framepipe::sequence::MAX_SPEC_FRAMES as i64), conflicts_with = "input", allow_negative_numbers = true)]
    frames: u32,
    /// Backend.
    #[arg(long, value_enum, default_value_t)]
    backend: BackendKind,
    /// Use this existing sequence (all its frames) instead of generating one.
    #[arg(long)]
    input: Option<String>,
    /// VRAM budget shared by previews and the export: 512MiB, 2GiB, 1.5GB.
    #[arg(long = "vram-budget", visible_alias = "budget", default_value = "2GiB", value_parser = |s: &str| framepipe::ledger::parse_bytes(s).map_err(|e| e.to_string()))]
    budget: u64,
    /// Frames prefetched ahead of the playhead, 0 to 1024.
    #[arg(long, default_value_t = EngineConfig::default().prefetch, value_parser = up_to_1024(), allow_negative_numbers = true)]
    prefetch: usize,
    /// Threads that prefetch (0: half the cores, at most --prefetch).
    #[arg(long, default_value_t = 0, value_parser = up_to_1024(), allow_negative_numbers = true)]
    prefetch_threads: usize,
    /// Also write every request of both sessions, one CSV row each (its
    /// time and, for a render, the split), to find what a tail is made of.
    #[arg(long, value_name = "FILE.csv")]
    requests: Option<std::path::PathBuf>,
}

/// 0 to 1024, a negative number refused as out of that range (not as
/// `invalid digit`).
fn up_to_1024() -> clap::builder::RangedI64ValueParser<usize> {
    clap::builder::RangedI64ValueParser::new().range(0..=1024)
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
    frame: u64,
    ms: f64,
    /// Why it failed (then left out of the percentiles), if it did.
    failed: Option<String>,
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
    /// None on the CPU backend, which has no upload or GPU.
    upload: Option<f64>,
    /// From submission until the result was mapped.
    on_gpu: Option<f64>,
    /// Kernel time from GPU timestamps, where the adapter has them (part
    /// of `on_gpu`).
    gpu: Option<f64>,
    /// Render time less upload and `on_gpu`: the host's setting up,
    /// submitting and copy out (on the CPU backend, the kernels too).
    rest: f64,
}

/// Replays the session; `paced` requests wait for their 24 fps tick. The
/// session walks the sequence's frames by position, so any sequence works,
/// one frame long or with gaps.
fn session(engine: &Engine, seq: &Sequence) -> Result<Vec<Request>, framepipe::Error> {
    let n = seq.frames.len();
    let frame = |i: usize| seq.frames[i.min(n - 1)].number;
    let mut plan: Vec<(&'static str, u64, f64, bool)> = Vec::new();
    for i in 0..48.min(n) {
        plan.push(("play 24 fps", frame(i), 0.0, true));
    }
    let anchor = (n / 8).max(1).min(n - 1);
    plan.push(("jump back", frame(anchor), 0.0, false));
    // Tenths from -1.0 to 0.9, each the value the scrub's grade is written
    // with (-1.0 + 19 × 0.1 is not 0.9 in binary, and would be a new grade).
    let slider = |k: i32| f64::from(k - 10) / 10.0;
    let settled = slider(19);
    for k in 0..20 {
        plan.push(("slider drag", frame(anchor), slider(k), false));
    }
    // The new grade makes what was played stale: scrubbing forward renders
    // (prefetch runs ahead of it), scrubbing back hits.
    let scrub = 16.min(n - anchor);
    for i in (0..scrub).chain((0..scrub).rev()) {
        plan.push(("scrub", frame(anchor + i), settled, false));
    }
    let on_gpu = engine.backend_name() == "gpu";
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
        let image = engine.preview(seq, frame, &grade(exposure), Scale::Quarter);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let after = engine.preview_stats();
        let image = match image {
            Ok(image) => image,
            // A budget no preview fits in fails every request alike (each
            // after waiting for memory): the session stops at the first.
            Err(e @ framepipe::Error::Budget(_)) if out.iter().all(|r: &Request| r.failed.is_some()) => {
                return Err(e);
            }
            Err(e) => {
                let failed = Some(format!("frame {frame}: {e}"));
                out.push(Request { phase, frame, ms, failed, hit: false, joined: false, miss: None });
                continue;
            }
        };
        let hit = after.previews.hits > before.previews.hits;
        let joined = after.joined > before.joined;
        let miss = (!hit && !joined).then(|| Split {
            decode: image.decode_ms,
            wait: image.wait_ms,
            upload: on_gpu.then_some(image.upload_ms),
            on_gpu: on_gpu.then_some(image.on_gpu_ms),
            gpu: image.gpu_ms,
            rest: image.render_ms - image.upload_ms - image.on_gpu_ms,
        });
        out.push(Request { phase, frame, ms, failed: None, hit, joined, miss });
    }
    Ok(out)
}

/// The `p` quantile of `v`; none when it is empty (every request failed).
fn percentile(v: &mut [f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[((v.len() as f64 - 1.0) * p).round() as usize])
}

/// A figure with `digits` decimals, or "-" where there is none.
fn fixed(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
}

fn print(label: &str, requests: &[Request], stats: &PreviewStats) {
    unless_stopping();
    println!("\n### {label}\n");
    println!(
        "| phase | requests | hits | joined a prefetch | p50 ms | p95 ms | max ms | hit p95 ms \
         | render, mean of misses: decode ms | wait ms | upload ms | on the GPU ms | of which kernels ms | host rest ms |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut phases: Vec<&str> = requests.iter().map(|r| r.phase).collect();
    phases.dedup();
    phases.push("all");
    for phase in phases {
        let rs: Vec<&Request> =
            requests.iter().filter(|r| (phase == "all" || r.phase == phase) && r.failed.is_none()).collect();
        let mut ms: Vec<f64> = rs.iter().map(|r| r.ms).collect();
        let mut hit_ms: Vec<f64> = rs.iter().filter(|r| r.hit).map(|r| r.ms).collect();
        let hit_p95 = fixed(percentile(&mut hit_ms, 0.95), 3);
        let misses: Vec<&Split> = rs.iter().filter_map(|r| r.miss.as_ref()).collect();
        // Means over the misses; "-" where there are none (or, for the
        // kernels column, no timestamps).
        let mean = |f: &dyn Fn(&Split) -> Option<f64>| {
            let v: Vec<f64> = misses.iter().filter_map(|m| f(m)).collect();
            if v.is_empty() { "-".to_string() } else { format!("{:.1}", v.iter().sum::<f64>() / v.len() as f64) }
        };
        println!(
            "| {phase} | {} | {} | {} | {} | {} | {} | {hit_p95} | {} | {} | {} | {} | {} | {} |",
            rs.len(),
            rs.iter().filter(|r| r.hit).count(),
            rs.iter().filter(|r| r.joined).count(),
            fixed(percentile(&mut ms, 0.5), 2),
            fixed(percentile(&mut ms, 0.95), 2),
            fixed(percentile(&mut ms, 1.0), 2),
            mean(&|m| Some(m.decode)),
            mean(&|m| Some(m.wait)),
            mean(&|m| m.upload),
            mean(&|m| m.on_gpu),
            mean(&|m| m.gpu),
            mean(&|m| Some(m.rest)),
        );
    }
    let p = stats.previews;
    let failed: Vec<&str> = requests.iter().filter_map(|r| r.failed.as_deref()).collect();
    // The engine counts a failed request as a miss (it found nothing
    // cached); said here, as the table above leaves failures out.
    let failed_misses = if failed.is_empty() { String::new() } else { format!(" and {} failed", failed.len()) };
    println!(
        "\nhit rate {:.0} % ({} hits, {} misses of which {} joined a prefetch under way{failed_misses}), {} prefetched, {} prefetch{} cancelled, preview cache {} in {} entr{}, {} eviction{}; {} decode{}",
        100.0 * p.hits as f64 / (p.hits + p.misses).max(1) as f64,
        p.hits,
        p.misses,
        stats.joined,
        stats.prefetched,
        stats.prefetch_cancelled,
        if stats.prefetch_cancelled == 1 { "" } else { "es" },
        framepipe::ledger::human_bytes(p.bytes),
        p.entries,
        if p.entries == 1 { "y" } else { "ies" },
        p.evictions,
        if p.evictions == 1 { "" } else { "s" },
        stats.decodes,
        if stats.decodes == 1 { "" } else { "s" }
    );
    if let Some(first) = failed.first() {
        let n = failed.len();
        let s = if n == 1 { "" } else { "s" };
        println!("\n{n} preview{s} failed, left out of the figures; the first: {first}");
    }
}

/// Writes `--requests`: one row per request of each session, in order.
fn write_requests(path: &std::path::Path, sessions: &[(&str, &[Request])]) -> Result<(), framepipe::Error> {
    let mut csv = String::from(
        "session,request,phase,frame,ms,hit,joined,failed,decode_ms,wait_ms,upload_ms,on_gpu_ms,kernels_ms,rest_ms\n",
    );
    for (session, requests) in sessions {
        for (i, r) in requests.iter().enumerate() {
            let split = match &r.miss {
                Some(m) => {
                    let ms = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
                    let (upload, on_gpu, gpu) = (ms(m.upload), ms(m.on_gpu), ms(m.gpu));
                    format!("{:.3},{:.3},{upload},{on_gpu},{gpu},{:.3}", m.decode, m.wait, m.rest)
                }
                None => ",,,,,".to_string(),
            };
            csv += &format!(
                "{session},{i},{},{},{:.3},{},{},{},{split}\n",
                r.phase,
                r.frame,
                r.ms,
                r.hit,
                r.joined,
                r.failed.is_some()
            );
        }
    }
    // Never over a file of the user's (checked at set-up, and again here).
    let io = |source| framepipe::Error::Io { path: path.to_path_buf(), source };
    let mut file = std::fs::File::create_new(path).map_err(io)?;
    std::io::Write::write_all(&mut file, csv.as_bytes()).map_err(io)
}

/// Set by the Ctrl-C handler before it removes the plates: what the session
/// does after (previews failing on files removed under them) is not its.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Waits for a stop under way to end the process, if one is.
fn unless_stopping() {
    while STOPPING.load(Ordering::SeqCst) {
        std::thread::park();
    }
}

fn main() -> ExitCode {
    // Mesa's Vulkan drivers complain of an unset XDG_RUNTIME_DIR on
    // headless machines, which compute does not need (as in framepipe).
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: first thing in main, before any other thread exists.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", framepipe::io::temp_root().0) };
    }

    // A codec's panic on an odd frame is that request's error, counted in
    // the summary: not a crash report on stderr for every request of it.
    framepipe::io::quiet_decoder_panics();
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // One line, as framepipe's own usage errors: clap's first line
            // with the list under it (the arguments in conflict) joined on.
            let rendered = e.render().to_string();
            let mut lines = rendered.lines().take_while(|l| !l.trim().is_empty()).map(str::trim);
            let first = lines.next().unwrap_or("error: invalid arguments");
            let listed: Vec<&str> = lines.collect();
            let sep = if listed.is_empty() { "" } else { " " };
            eprintln!("{first}{sep}{} (see --help)", listed.join(", "));
            return ExitCode::from(2);
        }
    };
    // Set-up errors (a size, a sequence, a budget too small for a frame)
    // are usage errors: exit 2; a session that fails part-way, 1.
    let root = framepipe::io::temp_root().0;
    let dir = match tempfile::tempdir_in(&root) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("error: {}: cannot make a temporary folder there: {e}", root.display());
            return ExitCode::from(2);
        }
    };
    // Ctrl-C or SIGTERM, from the plates' generation on, removes the
    // plates and the export's frames with the folder, which a plain exit
    // would leave behind.
    let scratch = dir.path().to_path_buf();
    on_stop_signal(move |signal| {
        // Nothing more of the session is printed (no failures made up by
        // frames removed under previews still rendering).
        STOPPING.store(true, Ordering::SeqCst);
        // No new output is started from here (a frame being written would
        // put files back in the folder being removed).
        framepipe::io::remove_partials();
        for _ in 0..5 {
            if std::fs::remove_dir_all(&scratch).is_ok() || !scratch.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("editor: stopped; {} removed", scratch.display());
        // Ended by the signal itself, as framepipe is: a shell loop
        // running the example stops on Ctrl-C, where an exit code of 130
        // would have it go on. Without exit handlers either way: a driver
        // in use on another thread must not be torn down under it.
        #[cfg(unix)]
        let _ = signal_hook::low_level::emulate_default_handler(signal);
        // Were the signal's default not to end it: 128 + its number, as a
        // shell reports it (130 for Ctrl-C, 143 for a farm's SIGTERM).
        let code = 128 + signal;
        #[cfg(unix)]
        // SAFETY: `_exit` only ends the process.
        unsafe {
            libc::_exit(code)
        }
        #[cfg(not(unix))]
        std::process::exit(code);
    });
    let (input, seq, config, _made) = match set_up(&args, &dir) {
        Ok(ready) => ready,
        Err(e) => {
            eprintln!("error: {e}{}", hint(&e));
            return ExitCode::from(2);
        }
    };
    let lost = || match STDOUT_FAILED.get() {
        Some(e) => {
            eprintln!("error: stdout: {e}");
            true
        }
        None => false,
    };
    match run(&args, &dir, &input, &seq, config) {
        // A lost report fails the session whatever it measured.
        Ok(ok) if lost() || !ok => ExitCode::from(1),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            unless_stopping();
            eprintln!("error: {e}{}", hint(&e));
            lost();
            // A budget that cannot hold one frame, found by the first
            // preview: set-up, as for `framepipe process`.
            ExitCode::from(if e.is_usage() { 2 } else { 1 })
        }
    }
}

/// The sequence (generated in `dir`, or the `--input`) and the engine's
/// configuration.
/// A folder made for `--requests` is held to the end (removed if the
/// session fails before writing there).
type SetUp = (String, Sequence, EngineConfig, Option<framepipe::io::MadeDirs>);

fn set_up(args: &Args, dir: &tempfile::TempDir) -> Result<SetUp, framepipe::Error> {
    let mut made = None;
    if let Some(path) = &args.requests {
        if path.as_os_str() == "-" {
            let source = std::io::Error::other("the rows go to a file; name one");
            return Err(framepipe::Error::Io { path: path.clone(), source });
        }
        // What `framepipe process` checks of its report: found now, not
        // after the session (a folder's name, a file there, a system
        // folder, one that cannot be made).
        // Nor an image's name: CSV text there would be a broken frame.
        if framepipe::io::OutputFormat::from_path(path).is_ok() {
            let source = std::io::Error::other("an image's name; the rows are CSV text (requests.csv)");
            return Err(framepipe::Error::Io { path: path.clone(), source });
        }
        made = Some(framepipe::io::check_new_file(path, false)?);
    }
    let config = EngineConfig {
        backend: args.backend,
        vram_budget: args.budget,
        prefetch: args.prefetch,
        prefetch_threads: args.prefetch_threads,
        ..Default::default()
    };
    let input = match &args.input {
        Some(i) => i.clone(),
        None => {
            let (width, height) = parse_size(&args.size)?;
            // Found before the plates are made (minutes at 8K).
            check_budget(&config, FrameShape { width, height, format: PixelFormat::Rgba8 })?;
            let pattern = FramePattern::in_dir(dir.path(), "plates/shot_%04d.png");
            let plural = if args.frames == 1 { "" } else { "s" };
            eprintln!("generating {} frame{plural} of {width}x{height} ...", args.frames);
            let opts = GenerateOptions { width, height, frames: args.frames, start: 1001, ..Default::default() };
            generate_sequence(&opts, &pattern, &EncodeOptions::default(), false)?;
            pattern
        }
    };
    let seq = Sequence::scan(&input, None, MissingPolicy::Error)?;
    if args.input.is_some() {
        let first = &seq.frames[0].path;
        let (width, height, format) = framepipe::io::probe_file(first, &DecodeLimits::default())?;
        check_budget(&config, FrameShape { width, height, format })?;
    }
    Ok((input, seq, config, made))
}

/// A budget that cannot hold previews beside the export is refused before
/// the session, not found by its first request (nor left to starve the
/// export the whole session while the figures read as a pass), and so is
/// a setting out of range. (The probe's device is gone before the
/// session's engines are made.)
fn check_budget(config: &EngineConfig, shape: FrameShape) -> Result<(), framepipe::Error> {
    let engine = Engine::new(config.clone())?;
    let need = engine.session_vram(shape, &grade(0.0), Scale::Quarter)?;
    match need {
        Some(need) if need > config.vram_budget => {
            let (need, budget) = human_bytes_pair(need, config.vram_budget);
            let FrameShape { width, height, .. } = shape;
            Err(framepipe::Error::Budget(format!(
                "--vram-budget {budget} cannot hold previews of {width}x{height} frames beside the export, which needs {need}"
            )))
        }
        _ => Ok(()),
    }
}

/// Both sessions and their figures; false when a preview or an export
/// frame failed.
fn run(
    args: &Args,
    dir: &tempfile::TempDir,
    input: &str,
    seq: &Sequence,
    config: EngineConfig,
) -> Result<bool, framepipe::Error> {
    let idle = Engine::new(config.clone())?;
    if let Some(n) = idle.notice() {
        eprintln!("notice: {n}");
    }
    let prefetching = match args.prefetch {
        0 => "no prefetch".to_string(),
        // Nothing ahead of the one frame there is.
        _ if seq.frames.len() < 2 => "no prefetch (one frame)".to_string(),
        // No more than there are other frames to fetch.
        n => {
            let n = n.min(seq.frames.len() - 1);
            let threads = idle.prefetch_threads();
            let (frames, threads_s) = (if n == 1 { "" } else { "s" }, if threads == 1 { "" } else { "s" });
            format!("prefetching {n} frame{frames} on {threads} thread{threads_s}")
        }
    };
    println!(
        "## Editor session: {} ({} frame{}), 1/4 previews, on {}, {prefetching}",
        input,
        seq.frames.len(),
        if seq.frames.len() == 1 { "" } else { "s" },
        idle.device_name(),
    );
    let quiet = session(&idle, seq)?;
    print("engine idle", &quiet, &idle.preview_stats());
    drop(idle);

    let busy = Engine::new(config)?;
    // One file in (a still), one file out.
    let name = if std::path::Path::new(&input).is_file() { "export/o.png" } else { "export/o_%04d.png" };
    let mut job = Job::new(input, FramePattern::in_dir(dir.path(), name), grade(0.0));
    job.overwrite = true;
    let prepared = framepipe::prepare(&job)?;
    let exporter = busy.clone();
    let cancel = Cancel::default();
    let stop = cancel.clone();
    // The export restarts until the session is over, so every request
    // competes with it. Its failed frames are counted, not dropped; a pass
    // counts once it wrote every frame (the last one is cut short by the
    // session's end). One that wrote nothing for failures would only fail
    // again: the export ends there, and the summary says why.
    let export = std::thread::spawn(move || -> Result<(usize, usize, Vec<String>), framepipe::Error> {
        let (mut frames, mut runs, mut failed) = (0, 0, Vec::new());
        while !cancel.is_cancelled() {
            let report = exporter.run(&job, &prepared, &cancel, &mut |_| {})?;
            frames += report.frames_written;
            failed.extend(report.failures.iter().map(|f| format!("frame {}: {}", f.number, f.error)));
            runs += usize::from(report.frames_written == prepared.outputs().len());
            if report.frames_written == 0 && !report.failures.is_empty() {
                break;
            }
        }
        Ok((frames, runs, failed))
    });
    std::thread::sleep(Duration::from_millis(200));
    let requests = session(&busy, seq);
    stop.cancel();
    // Joined before any error goes up: the engine must not be left running
    // on a thread at exit.
    let exported = export.join().map_err(|_| framepipe::Error::Panic("the export thread panicked".into()))?;
    let requests = requests?;
    let (frames, runs, failed) = exported?;
    print(
        &format!(
            "export running ({frames} frame{} exported during the session, {runs} whole pass{} over the sequence)",
            if frames == 1 { "" } else { "s" },
            if runs == 1 { "" } else { "es" }
        ),
        &requests,
        &busy.preview_stats(),
    );
    if let Some(first) = failed.first() {
        let n = failed.len();
        println!("\n{n} export frame{} failed; the first: {first}", if n == 1 { "" } else { "s" });
    }
    // The figures the editor issue sets targets for, in one place.
    let p95 = |rs: &[Request], phase: Option<&str>| {
        let mut ms: Vec<f64> =
            rs.iter().filter(|r| r.failed.is_none() && phase.is_none_or(|p| r.phase == p)).map(|r| r.ms).collect();
        percentile(&mut ms, 0.95)
    };
    let (idle_p95, busy_p95) = (p95(&quiet, None), p95(&requests, None));
    let hits = |rs: &[Request]| {
        let mut ms: Vec<f64> = rs.iter().filter(|r| r.hit).map(|r| r.ms).collect();
        percentile(&mut ms, 0.95)
    };
    println!(
        "
### Summary
"
    );
    let ratio = idle_p95.zip(busy_p95).map(|(idle, busy)| busy / idle);
    if frames == 0 {
        // Nothing competed with the second session: no comparison to make.
        println!("- preview p95 with an export running: not measured: the export wrote no frame (see its failures)");
    } else {
        println!(
            "- preview p95 with an export running / idle: {} / {} ms = {}x (target ≤ 1.5x)",
            fixed(busy_p95, 2),
            fixed(idle_p95, 2),
            fixed(ratio, 2)
        );
    }
    println!(
        "- slider drag p95 (same frame, new grade each time): idle {} ms, export running {} ms (target < 30 ms)",
        fixed(p95(&quiet, Some("slider drag")), 2),
        fixed(p95(&requests, Some("slider drag")), 2)
    );
    println!(
        "- cache hit p95: idle {} ms, export running {} ms (target < 1 ms)",
        fixed(hits(&quiet), 3),
        fixed(hits(&requests), 3)
    );
    // After the summary: a file that cannot be written loses only itself.
    if let Some(path) = &args.requests {
        write_requests(path, &[("idle", &quiet), ("export", &requests)])?;
    }
    // Figures taken over failures are not the session's: said in the exit code.
    let previews_failed = quiet.iter().chain(&requests).any(|r| r.failed.is_some());
    Ok(!previews_failed && failed.is_empty())
}

/// What to do about an error where it is not plain: this session replaces
/// no file, so one in the way is for the user to move.
fn hint(e: &framepipe::Error) -> &'static str {
    match e {
        framepipe::Error::OutputExists(_) => " (remove it, or name another file)",
        _ => "",
    }
}

/// Calls `stop` with the signal's number on SIGINT, SIGTERM or SIGHUP (on
/// Ctrl-C, as SIGINT, where there are no signals), on a thread of its own.
fn on_stop_signal(stop: impl Fn(i32) + Send + 'static) {
    #[cfg(unix)]
    {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        if let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
            let _ = std::thread::Builder::new().name("editor-signals".into()).spawn(move || {
                signals.forever().take(1).for_each(stop);
            });
        }
    }
    #[cfg(not(unix))]
    let _ = ctrlc::set_handler(move || stop(2));
}
