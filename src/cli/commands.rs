//! The other subcommands: `bench-pool`, `generate`, `info` and `demo`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use framepipe::generate::{GenerateOptions, generate_sequence, generate_sequence_with, parse_size};
use framepipe::io::{EncodeOptions, FileSet, OutputFormat};
use framepipe::pool::PoolSize;
use framepipe::sequence::FramePattern;
use framepipe::{BackendKind, Engine, EngineConfig, Error, ErrorPolicy, FrameSpec, Job, PixelFormat};

use crate::args::{BenchPoolArgs, DemoArgs, GenerateArgs, RunArgs, op_graph};
use crate::files::{check_report_name, failed_after_run, print_stdout, refuse_report_on_stdout, refuse_stdout_onto};
use crate::notices::{format_notice, stale_notice};
use crate::process::run_job;
use crate::signals::DEMO;

pub(crate) fn bench_pool(args: BenchPoolArgs) -> Result<ExitCode, Error> {
    let graph = op_graph(&args.ops)?;
    // One file in (a still) is one file out: no frame field for it.
    let field = if Path::new(&args.input).is_file() { "" } else { "_%06d" };
    let mut job = Job::new(args.input.clone(), format!("out{field}.{}", args.format), graph);
    job.frames = args.frames.as_deref().map(FrameSpec::parse).transpose()?;
    job.missing = args.missing;
    job.overwrite = true;
    // An extension alone: `%d.png` would end like one and name a pattern.
    let format = OutputFormat::from_path(Path::new(&job.output))
        .ok()
        .filter(|_| args.format.chars().all(|c| c.is_ascii_alphanumeric()))
        .ok_or_else(|| Error::invalid("--format", &args.format, "png, jpg, jpeg, tif, tiff or qoi"))?;
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = args.pools.iter().find(|p| !seen.insert(p.to_string())) {
        return Err(Error::invalid("--pools", twice, "each pool size once"));
    }
    // The table goes to stdout; the CSV and the chart are files.
    for (flag, path) in [("--csv", &args.csv), ("--chart", &args.chart)] {
        if path.as_os_str() == "-" {
            return Err(Error::invalid(flag, "-", "a file name (the table is printed on stdout)"));
        }
    }
    // Before minutes of runs: neither file may replace a frame, the
    // preset, or the other.
    let sequence = framepipe::Sequence::scan(&args.input, job.frames.as_ref(), args.missing)?;
    let inputs = || sequence.matched.iter().map(PathBuf::as_path).chain(args.ops.preset.as_deref());
    let reads = FileSet::new(inputs());
    // The table goes to stdout, after minutes of runs: not into an input.
    refuse_stdout_onto(inputs(), "an input")?;
    let check = |path: &Path, writes: &[&Path]| {
        framepipe::engine::check_side_file(path, args.overwrite, &reads, &FileSet::new(writes))
    };
    // Held to the end: a folder made for them goes if it stays empty.
    let _made = [check(&args.csv, &[])?, check(&args.chart, &[args.csv.as_path()])?];
    check_report_name("--csv", &args.csv, "the CSV table", "csv")?;
    check_report_name("--chart", &args.chart, "the SVG chart", "svg")?;
    refuse_report_on_stdout("--csv", &args.csv)?;
    refuse_report_on_stdout("--chart", &args.chart)?;
    let config = EngineConfig {
        backend: args.backend,
        adapter: args.adapter.clone(),
        vram_budget: args.budget,
        threads: args.threads,
        pool: PoolSize::Auto,
        ..Default::default()
    };
    let probe = Engine::new(config.clone())?;
    if let Some(n) = probe.notice() {
        note!("notice: {n}");
    }
    // What the format cannot hold of the sources, as `process` says it
    // (the frames are thrown away, but the encode times are of less).
    let first = sequence.frames.first().and_then(|f| framepipe::io::probe_info(&f.path, &job.limits).ok());
    if let Some(info) = first {
        let source = (info.format == PixelFormat::Rgba16, info.has_alpha);
        if let Some(notice) = format_notice(format, source, "the sources") {
            note!("{notice}");
        }
    }
    let device = probe.device_name().to_string();
    let threads = probe.threads();
    // The CPU backend holds no VRAM: no budget is said to bound it.
    let budget = match probe.backend_name() {
        "gpu" => framepipe::ledger::human_bytes(args.budget),
        _ => "unused (the CPU backend holds no GPU memory)".to_string(),
    };
    drop(probe);
    // Progress: left out with -q (the table, notices and errors stay).
    macro_rules! progress {
        ($($arg:tt)*) => {
            if !args.quiet {
                note!($($arg)*);
            }
        };
    }
    progress!(
        "bench-pool: {} ({}), {} on {device}, {threads} decode/encode thread{}, budget {}, pools {}, {} run{} each after one warm-up",
        args.input,
        job.graph.describe(),
        args.format,
        crate::plural(threads),
        budget,
        args.pools.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(","),
        args.repeat,
        crate::plural(args.repeat)
    );
    if !sequence.missing.is_empty() {
        let n = sequence.missing_count();
        let list = framepipe::sequence::compact_runs(&sequence.missing);
        note!("bench-pool: {n} missing frame{} left out: {list}", crate::plural(n));
    }
    // A fixed pool takes no more slots than the run has frames (as in
    // `process`): said before the runs, not found in the table's slots.
    let frames = sequence.frames.len();
    let capped: Vec<String> =
        args.pools.iter().filter(|p| matches!(p, PoolSize::Fixed(n) if *n > frames)).map(|p| p.to_string()).collect();
    if !capped.is_empty() {
        let s = crate::plural::<usize>;
        note!(
            "bench-pool: pool{} {} run{} with {frames} slot{}: a slot past the sequence's {frames} frame{} would never hold one",
            s(capped.len()),
            capped.join(","),
            if capped.len() == 1 { "s" } else { "" },
            s(frames),
            s(frames)
        );
    }
    let mut refused = Vec::new();
    let runs = framepipe::bench::bench_pool(
        &job,
        &config,
        &args.pools,
        args.repeat as usize,
        &mut |r| {
            progress!(
                "  pool {} ({} slot{}) run {}: {} frame{} in {:.2} s, {:.3} frames/s",
                r.requested,
                r.pool_size,
                crate::plural(r.pool_size),
                r.repeat,
                r.frames,
                crate::plural(r.frames),
                r.seconds,
                r.fps
            )
        },
        &mut |pool, e| {
            note!("  pool {pool} not measured: {e}");
            refused.push((pool.to_string(), e.to_string()));
        },
    )?;
    let table = framepipe::bench::table(&runs, &refused);
    // After minutes of runs, each output is tried whatever became of the
    // others, and one that fails is a failure of the run (exit 1).
    let mut failed = failed_after_run(print_stdout(&table));
    let title = format!("{} · {} · {} · {device}", args.input, job.graph.describe(), args.format);
    let files = [
        (&args.csv, framepipe::bench::csv(&runs, &refused)),
        (&args.chart, framepipe::bench::chart_svg(&runs, &title, &refused)),
    ];
    for (path, text) in files {
        if failed_after_run(framepipe::io::write_file_atomic(path, text.as_bytes(), args.overwrite)) {
            failed = true;
        } else {
            progress!("wrote {}", path.display());
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

pub(crate) fn generate(args: GenerateArgs) -> Result<ExitCode, Error> {
    let (width, height) = parse_size(&args.size)?;
    let format = if args.depth == 16 { PixelFormat::Rgba16 } else { PixelFormat::Rgba8 };
    let opts = GenerateOptions {
        width,
        height,
        frames: args.frames,
        start: args.start,
        format,
        alpha: args.alpha,
        seed: args.seed,
    };
    let defaults = EncodeOptions::default();
    let encode =
        EncodeOptions { png_compression: args.png_compression.unwrap_or(defaults.png_compression), ..defaults };
    if args.output == "-" {
        return Err(Error::invalid("-o", "-", "a file pattern: generate writes files, not a stream"));
    }
    if args.output.trim().is_empty() {
        return Err(Error::invalid("-o", "\"\"", "a file pattern, e.g. plates/shot_%04d.png"));
    }
    framepipe::io::refuse_folder_name(&args.output)?;
    let output = OutputFormat::from_path(Path::new(&args.output))?;
    if args.png_compression.is_some() && output != OutputFormat::Png && !args.quiet {
        note!("notice: --png-compression is unused: the output is {}", format!("{output:?}").to_lowercase());
    }
    if let Some(notice) = format_notice(output, (args.depth == 16, args.alpha), "what is generated")
        && !args.quiet
    {
        note!("{notice}");
    }
    // A killed run's leftovers, as `process` removes them.
    if let Ok(pattern) = framepipe::sequence::FramePattern::parse(&args.output) {
        stale_notice(&framepipe::io::remove_stale_partials(pattern.dir()), args.quiet);
    }
    let t = Instant::now();
    // A bar on a terminal: an 8K sequence takes a while to write.
    let bar = (!args.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .then(|| crate::process::frame_bar(u64::from(args.frames), "frames generated", "", None));
    let written = generate_sequence_with(&opts, &args.output, &encode, args.overwrite, &|_| {
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let written = written?;
    // JPEG and QOI hold 8 bits whatever was generated.
    let kept = match output {
        OutputFormat::Png | OutputFormat::Tiff => args.depth,
        _ => 8,
    };
    if !args.quiet {
        let n = written.len();
        note!(
            "wrote {n} frame{} of {width}x{height} ({kept}-bit) to {} in {:.1} s",
            crate::plural(n),
            args.output,
            t.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn info() -> Result<ExitCode, Error> {
    use std::fmt::Write as _;
    let instance = framepipe::gpu::instance();
    let adapters = framepipe::gpu::list_adapters(&instance);
    let mut out = String::new();
    if adapters.is_empty() {
        out += "no GPU adapters found (no Vulkan, Metal or DX12 driver)\n";
    }
    for (i, (_, a)) in adapters.iter().enumerate() {
        let _ = writeln!(out, "[{i}] {}", a.name);
        let software = if a.software { " (software rasterizer)" } else { "" };
        let _ = writeln!(out, "    backend {}, type {}{software}", a.backend, a.device_type);
        let _ = writeln!(out, "    driver {}", a.driver);
        let _ = writeln!(
            out,
            "    max storage binding {} MiB, max buffer {} MiB, timestamps {}",
            a.max_storage_buffer_binding_size >> 20,
            a.max_buffer_size >> 20,
            if a.timestamps { "yes" } else { "no" }
        );
    }
    match framepipe::gpu::choose(adapters, None, true) {
        Ok((_, _, why)) => {
            let _ = writeln!(out, "auto picks: {why}");
        }
        Err(Error::Gpu(why)) => {
            let threads = rayon::current_num_threads();
            let _ = writeln!(out, "auto picks: the CPU backend ({threads} threads), because {why}");
        }
        Err(e) => return Err(e),
    }
    print_stdout(&out)?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn demo(args: DemoArgs) -> Result<ExitCode, Error> {
    let (width, height) = parse_size(&args.size)?;
    // A GPU asked for and not there is said before seconds of generating
    // (its adapters listed, as `info` does: no device made twice).
    if args.backend == BackendKind::Gpu {
        let adapters = framepipe::gpu::list_adapters(&framepipe::gpu::instance());
        if let Err(Error::Gpu(why)) = framepipe::gpu::choose(adapters, None, false) {
            return Err(Error::NoGpu(why));
        }
    }
    // Removed if the demo fails or is stopped at once (a second Ctrl-C)
    // before its frames are graded; kept then.
    let tmp = framepipe::io::ScratchDir::new("framepipe-demo-")?;
    DEMO.store(true, std::sync::atomic::Ordering::SeqCst);
    let dir = tmp.path().to_owned();
    let plates = FramePattern::in_dir(&dir, "plates/shot_%04d.png");
    let graded = FramePattern::in_dir(&dir, "graded/shot_%04d.png");
    let opts = GenerateOptions { width, height, frames: args.frames, start: 1001, ..Default::default() };
    let s = crate::plural(args.frames);
    note!("generating {} frame{s} of {width}x{height} in {} ...", args.frames, dir.display());
    let t = Instant::now();
    generate_sequence(&opts, &plates, &EncodeOptions::default(), false)?;
    note!("generated in {:.1} s; grading with the built-in samples/grade.toml ...", t.elapsed().as_secs_f64());
    let preset = include_str!("../../samples/grade.toml");
    let graph = framepipe::ops::parse_preset(preset, Path::new("samples/grade.toml"))?;
    note!("ops: {}", graph.describe());
    let job = Job::new(plates.clone(), graded.clone(), graph);
    let run = RunArgs {
        backend: args.backend,
        adapter: None,
        overwrite: false,
        skip_existing: false,
        on_error: ErrorPolicy::Stop,
        png_compression: None,
        jpeg_quality: None,
        vram_budget: None,
        pool: PoolSize::Auto,
        threads: 0,
        sequential: false,
        json: Some(dir.join("report.json")),
        timeline: Some(dir.join("timeline.svg")),
        quiet: false,
        demo: true,
    };
    let code = run_job(&job, &run, None)?;
    tmp.keep();
    note!("sources:  {plates}");
    note!("graded:   {graded}");
    note!("report:   {}", dir.join("report.json").display());
    note!("timeline: {}", dir.join("timeline.svg").display());
    // Kept for the user to look at, and left to them: a temporary folder
    // the system may clear, but an 8K demo is over 100 MB each run.
    let held = framepipe::ledger::human_bytes(folder_bytes(&dir));
    if let Some(word) = cfg!(unix).then(|| shell_word(&dir.display().to_string())).flatten() {
        note!("the folder is kept ({held}); remove it with: rm -rf {word}");
    } else {
        note!("the folder is kept ({held}); remove it when done: {}", dir.display());
    }
    Ok(code)
}

/// `word` as one shell word: as it is when plain, else single-quoted;
/// none for a word with control characters, which the terminal line
/// shows escaped (`\n`): pasted back, that would name another path.
fn shell_word(word: &str) -> Option<String> {
    if word.chars().any(char::is_control) {
        None
    } else if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:,@%".contains(c)) {
        Some(word.to_string())
    } else {
        Some(format!("'{}'", word.replace('\'', r"'\''")))
    }
}

/// The bytes of the files under `dir`, for the demo's closing line (what
/// cannot be read counts as nothing: a figure, not a check).
fn folder_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => folder_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo's `rm -rf` line pastes as one word, whatever the path.
    #[test]
    fn shell_words_paste_as_one() {
        let word = |w: &str| shell_word(w).unwrap();
        assert_eq!(word("/tmp/framepipe-demo-x1Y2"), "/tmp/framepipe-demo-x1Y2");
        assert_eq!(word("/tmp/my demos/d"), "'/tmp/my demos/d'");
        assert_eq!(word("/tmp/it's"), r"'/tmp/it'\''s'");
        assert_eq!(word("/tmp/$HOME`x`"), "'/tmp/$HOME`x`'");
        assert_eq!(word(""), "''");
        // Printed escaped, it would not paste back: no command then.
        assert_eq!(shell_word("/tmp/a\nb"), None);
        assert_eq!(shell_word("/tmp/a\tb"), None);
    }
}
