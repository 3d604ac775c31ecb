//! `framepipe process`: a job from the options, run with a progress bar or
//! log lines, a summary, reports, and the exit code.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use framepipe::io::{EncodeOptions, OutputFormat};
use framepipe::ledger::{DEFAULT_BUDGET, human_bytes};
use framepipe::pool::PoolSize;
use framepipe::{Cancel, Engine, EngineConfig, Error, ErrorPolicy, FrameSpec, Job, Progress};
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::{ProcessArgs, RunArgs, op_graph};
use crate::files::{
    check_report_name, failed_after_run, is_earlier_report, refuse_report_on_stdout, refuse_stdout_into_input,
    refuse_stdout_into_output, stdout_writer, write_report,
};
use crate::notices::{
    FLOAT_NOTICE, ICC_NOTICE, MORE_IMAGES_NOTICE, ORIENTED_NOTICE, PREMULTIPLIED_NOTICE, UNNAMED_NOTICE, band_notice,
    earlier_render_notice, format_notice, resume_notice, stale_notice, stream_hint, unnamed_notice,
};
use crate::printable;
use crate::signals::{
    CTRL_C, FIRST_SIGNAL, REPLACING, RESUMABLE, RUN, RUN_RETURNED, SKIPPING, STOPPING_NOW, STREAMING, StaleReport,
    signal_exit_code, stale_reports,
};

pub(crate) fn process(args: ProcessArgs) -> Result<ExitCode, Error> {
    crate::signals::PREPARING.store(true, std::sync::atomic::Ordering::SeqCst);
    let graph = op_graph(&args.ops)?;
    let mut job = Job::new(args.input.clone(), args.output.clone(), graph);
    job.frames = args.frames.as_deref().map(FrameSpec::parse).transpose()?;
    job.missing = args.missing;
    if let Some(format) = args.stream_format {
        if args.output != "-" {
            return Err(Error::invalid("--stream-format", format!("{format:?}").to_lowercase(), "-o - (a stream)"));
        }
        job.stream_format = format;
    }
    if args.output == "-" && std::io::stdout().is_terminal() {
        return Err(Error::invalid(
            "output",
            "- (stdout is a terminal)",
            "a pipe or a file to stream binary frames into",
        ));
    }
    run_job(&job, &args.run, args.ops.preset.as_deref())
}

/// Runs a job from the command line; `preset` is a file it read, which
/// no report may replace.
pub(crate) fn run_job(job: &Job, opts: &RunArgs, preset: Option<&Path>) -> Result<ExitCode, Error> {
    let mut job = job.clone();
    job.also_reads.extend(preset.map(Path::to_owned));
    job.overwrite = opts.overwrite;
    job.skip_existing = opts.skip_existing;
    job.on_error = opts.on_error;
    let defaults = EncodeOptions::default();
    job.encode = EncodeOptions {
        png_compression: opts.png_compression.unwrap_or(defaults.png_compression),
        jpeg_quality: opts.jpeg_quality.unwrap_or(defaults.jpeg_quality),
        ..defaults
    };
    let prepared = framepipe::prepare(&job)?;
    stale_notice(prepared.stale_partials(), opts.quiet);
    if !opts.quiet
        && let Some((list, left_out)) = framepipe::sequence::padding_strays(&job.input, prepared.sequence())
    {
        let how = match (left_out, list.contains(", ")) {
            (true, _) => "left out (a pattern's padding is matched exactly)",
            (false, false) => "taken as a frame all the same",
            (false, true) => "taken as frames all the same",
        };
        note!("notice: {list}: numbered with other padding than the sequence's frames; {how}");
    }
    let dash = |p: &Option<PathBuf>| p.as_deref() == Some(Path::new("-"));
    if prepared.is_stream() || dash(&opts.json) || dash(&opts.timeline) {
        refuse_stdout_into_input(&job, &prepared)?;
    }
    if !prepared.is_stream() && (dash(&opts.json) || dash(&opts.timeline)) {
        refuse_stdout_into_output(&prepared)?;
    }
    // An option the run has no use for (an encoder option for a format it
    // does not write, a pool size with --sequential, --overwrite with
    // nothing to replace) is said, as FFmpeg says an option went unused,
    // rather than silently dropped.
    let output = format!("the output is {}", format!("{:?}", prepared.format()).to_lowercase());
    let files_reported = [&opts.json, &opts.timeline].iter().any(|p| p.is_some() && !dash(p));
    let unused = [
        ("--png-compression", opts.png_compression.is_some() && prepared.format() != OutputFormat::Png, &*output),
        ("--jpeg-quality", opts.jpeg_quality.is_some() && prepared.format() != OutputFormat::Jpeg, &*output),
        ("--pool", matches!(opts.pool, PoolSize::Fixed(_)) && opts.sequential, "--sequential runs one frame at a time"),
        (
            "--overwrite",
            opts.overwrite && prepared.is_stream() && !files_reported,
            "-o - and no report file: nothing to replace",
        ),
    ];
    for (flag, unused, why) in unused {
        if unused && !opts.quiet {
            note!("notice: {flag} is unused: {why}");
        }
    }
    // `-` writes a report to stdout, unless stdout carries the frames.
    for (flag, path) in [("--json", &opts.json), ("--timeline", &opts.timeline)] {
        if dash(path) && prepared.is_stream() {
            return Err(Error::invalid(flag, "-", "a file: stdout carries the frames (-o -)"));
        }
    }
    if dash(&opts.json) && dash(&opts.timeline) {
        return Err(Error::invalid("--timeline", "-", "a file: --json - already writes to stdout"));
    }
    // A resumed run (--skip-existing) replaces the reports of the run it
    // finishes, as --overwrite would: they describe the run that made them.
    // Any other file under a report's name is the user's, kept.
    // Held to the end: a folder made for a report goes if it stays empty.
    let mut _made = Vec::new();
    // The earlier reports of this output that an --overwrite run replaces,
    // which a second interrupt removes: by then they describe outputs the
    // run has begun to replace. (A --skip-existing run replaces no output:
    // the report of the run it finishes still lists what is left to do.
    // A file that is not a report of this output is not the run's to take.)
    let mut earlier = Vec::new();
    let (mut replace_json, mut replace_timeline) = (opts.overwrite, opts.overwrite);
    for (flag, path, replace) in
        [("--json", &opts.json, &mut replace_json), ("--timeline", &opts.timeline, &mut replace_timeline)]
    {
        let Some(path) = path.as_deref().filter(|p| *p != Path::new("-")) else { continue };
        match prepared.check_side_file(path, opts.overwrite) {
            // A plain file exists there (anything else was refused):
            // replaced only if it is the report of the run this resumes.
            Err(Error::OutputExists(_)) if opts.skip_existing && is_earlier_report(path, &job.output) => {
                *replace = true;
                _made.push(prepared.check_side_file(path, true)?);
            }
            // (`--overwrite`, which the message would suggest, does not
            // go with `--skip-existing`.)
            Err(Error::OutputExists(_)) if opts.skip_existing => {
                let expected = "a new file, or the report of the run this resumes (written to the same output)";
                return Err(Error::invalid(flag, path.display(), expected));
            }
            made => _made.push(made?),
        }
        // (Read only once it is known to be a plain file, or nothing: a
        // link to a pipe would never answer.)
        if opts.overwrite && path.is_file() && is_earlier_report(path, &job.output) {
            earlier.push(StaleReport::new(path.to_owned()));
        }
    }
    for (flag, path, kind, ext) in
        [("--json", &opts.json, "the JSON report", "json"), ("--timeline", &opts.timeline, "the SVG timeline", "svg")]
    {
        if let Some(path) = path.as_deref() {
            check_report_name(flag, path, kind, ext)?;
            refuse_report_on_stdout(flag, path)?;
        }
    }
    if let (Some(a), Some(b)) = (&opts.json, &opts.timeline)
        && framepipe::io::resolve_path(a) == framepipe::io::resolve_path(b)
    {
        return Err(Error::PathClash { path: a.clone(), role: "the --json report".into() });
    }
    let engine = Engine::new(EngineConfig {
        backend: opts.backend,
        adapter: opts.adapter.clone(),
        vram_budget: opts.vram_budget.unwrap_or(DEFAULT_BUDGET),
        threads: opts.threads,
        pool: opts.pool,
        ..Default::default()
    })?;
    if let Some(n) = engine.notice().filter(|_| !opts.quiet) {
        note!("notice: {n}");
    }
    // Known once the backend is: the CPU backend holds no VRAM.
    if opts.vram_budget.is_some() && !opts.quiet {
        if engine.backend_name() != "gpu" {
            note!("notice: --vram-budget is unused: the CPU backend holds no GPU memory");
        } else if job.graph.is_identity() {
            note!("notice: --vram-budget is unused: the grade changes nothing, so no frame goes to the GPU");
        }
    }
    if let Some(info) = prepared.first().copied().filter(|_| !opts.quiet) {
        if let Some(hint) = prepared.is_stream().then(|| stream_hint(&prepared, &info)).flatten() {
            note!("{hint}");
        }
        let source = (info.format == framepipe::io::PixelFormat::Rgba16, info.has_alpha);
        if let Some(notice) = format_notice(prepared.format(), source, "the sources") {
            note!("{notice}");
        }
        if let Some(notice) = band_notice(&engine, &job, &info) {
            note!("{notice}");
        }
        if info.float {
            note!("notice: the sources hold {FLOAT_NOTICE}");
        }
        if info.premultiplied {
            note!("notice: the sources' {PREMULTIPLIED_NOTICE}");
        }
        if info.more_images {
            note!("notice: the sources hold {MORE_IMAGES_NOTICE}");
        }
        if info.icc_profile {
            note!("notice: the sources carry {ICC_NOTICE}");
        }
        if info.oriented {
            note!("notice: the sources carry {ORIENTED_NOTICE}");
        }
        if let Some(n) = std::num::NonZeroU16::new(info.unnamed_channels) {
            note!("notice: {}", unnamed_notice(n));
        }
    }
    let cancel = Cancel::default();
    // The first interrupt now asks this run to stop (see `on_signal`).
    STREAMING.store(prepared.is_stream(), std::sync::atomic::Ordering::SeqCst);
    crate::signals::QUIET.store(opts.quiet, std::sync::atomic::Ordering::SeqCst);
    // What a second interrupt can say of finishing (not after --overwrite:
    // the files not yet replaced are an older render's, which it keeps).
    RESUMABLE.store(
        !prepared.is_stream() && !opts.demo && !opts.overwrite && !opts.quiet,
        std::sync::atomic::Ordering::SeqCst,
    );
    SKIPPING.store(opts.skip_existing, std::sync::atomic::Ordering::SeqCst);
    *stale_reports() = earlier;
    let _ = RUN.set(cancel.clone());
    let total = prepared.outputs().len();
    // Frames written so far: the bar's frames/s, as the summary's (failed
    // and kept frames move the bar on, and take no time to speak of).
    let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let bar = (!opts.quiet && std::io::stderr().is_terminal())
        .then(|| frame_bar(total as u64, "frames", "{msg}", Some(written.clone())));
    let started = Instant::now();
    let quiet = opts.quiet;
    // Reasons already said (the error past its file name, `No space left
    // on device`), under `--on-error stop`.
    let mut reasons = std::collections::HashSet::new();
    // Frames failed so far: "done" counts them, a log line says how many.
    let mut failed = 0usize;
    let mut on_progress = |p: Progress<'_>| match p {
        Progress::Done { finished, total, record } => {
            REPLACING.store(true, std::sync::atomic::Ordering::SeqCst);
            written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match &bar {
                Some(bar) => {
                    bar.set_position(finished as u64);
                    bar.set_message(format!("frame {}", record.number));
                }
                None if !quiet => note!(
                    "framepipe: frame {} written {} ({finished}/{total} done{}, {:.2} s elapsed)",
                    record.number,
                    if record.output == "-" { "to stdout" } else { &record.output },
                    if failed > 0 { format!(", {failed} failed") } else { String::new() },
                    started.elapsed().as_secs_f64()
                ),
                None => {}
            }
        }
        // A frame the stop at once failed (no new output may be made) is
        // not its own failure: the stop says what happened.
        Progress::Failed { .. } if STOPPING_NOW.load(std::sync::atomic::Ordering::SeqCst) => {}
        Progress::Failed { finished, failure, .. } => {
            failed += 1;
            // Under `--on-error stop` the first failure is the error; the
            // frames in flight that fail after it for the same reason (a
            // full disk fails them all alike) are counted and listed in
            // the summary, one that failed for another reason is said.
            let line = format!("error: frame {}: {}", failure.number, failure.error);
            let reason = frame_reason(&prepared, failure);
            let repeat = !reasons.insert(reason.to_string()) && opts.on_error == ErrorPolicy::Stop;
            match &bar {
                Some(bar) => {
                    bar.set_position(finished as u64);
                    if !repeat {
                        bar.println(printable(&line));
                    }
                }
                None if repeat => {}
                None => note!("{line}"),
            }
        }
        Progress::Kept { finished, total, number } => {
            let line = format!("framepipe: frame {number} was written meanwhile (another run?): kept");
            match &bar {
                Some(bar) => {
                    bar.set_position(finished as u64);
                    bar.println(line);
                }
                None if !quiet => note!("{line} ({finished}/{total} done)"),
                None => {}
            }
        }
        // Kinds of event this command does not show yet.
        _ => {}
    };
    let report = match (opts.sequential, prepared.is_stream()) {
        (true, false) => engine.run_sequential(&job, &prepared, &cancel, &mut on_progress)?,
        (false, false) => engine.run(&job, &prepared, &cancel, &mut on_progress)?,
        (true, true) => {
            engine.run_sequential_stream(&job, &prepared, &mut stdout_writer(), &cancel, &mut on_progress)?
        }
        (false, true) => engine.run_stream(&job, &prepared, &mut stdout_writer(), &cancel, &mut on_progress)?,
    };
    RUN_RETURNED.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if !opts.quiet {
        note!("{}", report.summary());
        if let Some(notice) = earlier_render_notice(opts, &prepared, &report) {
            note!("{notice}");
        }
        if let Some(notice) = resume_notice(opts, job.frames.is_some(), &prepared, &report) {
            note!("{notice}");
        }
        // Frames of another kind than the first, whose header the notices
        // before the run spoke of.
        let first = prepared.first().copied();
        // (list, whether the first frame was said up front, what follows
        // the list for one frame and for more, the notice).
        let later: [(&str, bool, [&str; 2], &str); 9] = [
            (&report.float_list, first.is_some_and(|i| i.float), [" holds", " hold"], FLOAT_NOTICE),
            (
                &report.premultiplied_list,
                first.is_some_and(|i| i.premultiplied),
                [": its", ": their"],
                PREMULTIPLIED_NOTICE,
            ),
            (&report.more_images_list, first.is_some_and(|i| i.more_images), [" holds", " hold"], MORE_IMAGES_NOTICE),
            (&report.icc_profile_list, first.is_some_and(|i| i.icc_profile), [" carries", " carry"], ICC_NOTICE),
            (&report.oriented_list, first.is_some_and(|i| i.oriented), [" carries", " carry"], ORIENTED_NOTICE),
            (
                &report.unnamed_channels_list,
                first.is_some_and(|i| i.unnamed_channels > 0),
                [" holds extra channels", " hold extra channels"],
                UNNAMED_NOTICE,
            ),
            // Up front, the first frame's alpha said it of all.
            (
                &report.alpha_dropped_list,
                first.is_some_and(|i| i.has_alpha),
                [" has", " have"],
                "alpha, which JPEG has no place for: dropped from the outputs",
            ),
            (
                &report.other_channels_list,
                false,
                [" has a source", " have sources"],
                "with other channels than the first's (grey or color, alpha or not): outputs keep their own source's, so the sequence's channels may change there",
            ),
            (
                &report.deepened_list,
                false,
                [" is", " are"],
                "8-bit in a 16-bit sequence: widened exactly (each value times 257) and worked as the rest",
            ),
        ];
        for (list, said, [one, many], notice) in later {
            if list.is_empty() || said {
                continue;
            }
            let (frames, verb) = if one_frame(list) { ("frame", one) } else { ("frames", many) };
            note!("notice: {frames} {list}{verb} {notice}");
        }
        // Auto takes two slots or more where two fit (and two frames
        // exist); a budget that holds only one still runs, without
        // overlap, and says so.
        let frames = report.frames_written + report.failures.len() + report.frames_unwritten;
        let pooled = !opts.sequential && matches!(opts.pool, PoolSize::Auto);
        if pooled && report.pool_size == 1 && report.backend == "gpu" && frames > 1 {
            note!(
                "notice: --vram-budget {} holds one {} frame slot ({} each): frames went through the GPU one at a time; raise the budget for overlap",
                human_bytes(report.vram_budget),
                report.frame,
                human_bytes(report.slot_bytes)
            );
        }
    }
    // The frames are written: a report that cannot be (its name taken
    // meanwhile, a full disk) is a failure of the run, exit 1, not a usage
    // error, and does not keep the other report from being written.
    let mut unwritten = false;
    // A resumed run that found every frame there (a task queued again
    // after it finished) keeps the reports of the run that made them:
    // its own would say only that nothing was done.
    let keeps = |path: &Path, replace: bool| {
        let kept = replace && opts.skip_existing && prepared.outputs().is_empty() && reports_complete(path);
        if kept && !opts.quiet {
            note!(
                "notice: {} is kept: every frame was already there, and it describes the run that made them",
                path.display()
            );
        }
        kept
    };
    // Two resumed runs at once share the frames (a farm's retried task):
    // the report the other wrote meanwhile, of this output, is replaced by
    // this one's, which lists the frames it kept as well, as the report of
    // an earlier run would be. Any other file that came there stays.
    // (Looked at once the write finds the name taken, however late the
    // other wrote it.)
    let theirs = |path: &Path| opts.skip_existing && path.is_file() && is_earlier_report(path, &job.output);
    let write = |path: &Path, text: &str, replace: bool| match write_replacing(path, text, replace) {
        Err(Error::OutputExists(_)) if theirs(path) => write_replacing(path, text, true),
        written => written,
    };
    if let Some(path) = opts.json.as_deref().filter(|p| !keeps(p, replace_json)) {
        let text = serde_json::to_string_pretty(&report).expect("report serialises") + "\n";
        unwritten |= failed_after_run(write(path, &text, replace_json));
    }
    if let Some(path) = opts.timeline.as_deref().filter(|p| !keeps(p, replace_timeline)) {
        let svg = framepipe::timeline::render_svg(&report);
        unwritten |= failed_after_run(write(path, &svg, replace_timeline));
    }
    Ok(if report.cancelled {
        // Cancelled only by a signal here (the first; Ctrl-C if none came):
        // `main` ends the process by it, once this run's state is dropped.
        let signal = FIRST_SIGNAL.load(std::sync::atomic::Ordering::SeqCst);
        ExitCode::from(signal_exit_code(if signal == 0 { CTRL_C } else { signal }))
    } else if report.failures.is_empty() && report.frames_unwritten == 0 && !unwritten {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A failure's reason past the file it names (its input's or output's
/// path, which may hold `: ` itself): what frames failing alike share.
fn frame_reason<'a>(prepared: &framepipe::PreparedJob, failure: &'a framepipe::report::FrameFailure) -> &'a str {
    let at = prepared.sequence().frames.iter().position(|f| f.number == failure.number);
    let mut paths = at.into_iter().flat_map(|i| [&prepared.sequence().frames[i].path, &prepared.outputs()[i]]);
    paths.find_map(|p| failure.error.strip_prefix(&format!("{}: ", p.display()))).unwrap_or(&failure.error)
}

/// [`write_report`] for a run's report, which from then on is no earlier
/// report for a second interrupt to remove. The list is held while the
/// file is written (not stdout, which a stalled reader may hold): an
/// interrupt meanwhile waits for the rename, and neither removes the new
/// report nor leaves the old one.
fn write_replacing(path: &Path, text: &str, replace: bool) -> Result<(), Error> {
    if path == Path::new("-") {
        return write_report(path, text, replace);
    }
    let mut stale = stale_reports();
    let written = write_report(path, text, replace);
    stale.retain(|r| r.path != path);
    written
}

/// Whether the report at `path` is of a run that finished every frame it
/// was given (none failed or left unwritten, not stopped): one that did
/// not would send a farm reading it to do again what is done.
fn reports_complete(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else { return false };
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("svg")) {
        return framepipe::timeline::is_complete(&text);
    }
    let Ok(report) = serde_json::from_str::<serde_json::Value>(&text) else { return false };
    let none = |key: &str| report.get(key).is_none_or(|v| v.as_u64() == Some(0));
    report["failures"].as_array().is_some_and(|f| f.is_empty())
        && none("frames_unwritten")
        && none("frames_skipped")
        && report["cancelled"] != true
}

/// Whether a frame list (`2`, `1-3,7`) names one frame.
fn one_frame(list: &str) -> bool {
    list.parse::<u64>().is_ok()
}

/// A progress bar of `total` frames (`{pos}/{len} what`), with the rate and
/// ETA from the mean since the start, as the summary reckons frames/s:
/// indicatif's own is a recent average, which a pipeline filling up (or a
/// slow frame) swings far from it. `tail` ends the line (`{msg}`). The
/// rate shown counts `written` where given (frames that failed or were
/// kept finish too, not as work done), else every frame finished; the
/// ETA goes by frames finished.
pub(crate) fn frame_bar(
    total: u64,
    what: &str,
    tail: &str,
    written: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let per_s = |n: u64, state: &indicatif::ProgressState| n as f64 / state.elapsed().as_secs_f64().max(1e-3);
    let rate = move |state: &indicatif::ProgressState| per_s(state.pos(), state);
    let shown = move |state: &indicatif::ProgressState| match &written {
        Some(n) => per_s(n.load(std::sync::atomic::Ordering::Relaxed), state),
        None => rate(state),
    };
    let template = format!("{{bar:40.cyan/blue}} {{pos}}/{{len}} {what}  {{rate}}  ETA {{left}}  {tail}");
    let style = ProgressStyle::with_template(template.trim_end())
        .expect("valid template")
        .with_key("rate", move |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.2} frames/s", shown(state));
        })
        .with_key("left", move |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let left = state.len().unwrap_or(0).saturating_sub(state.pos()) as f64;
            let _ = match state.pos() {
                0 => write!(w, "-"),
                _ => {
                    write!(w, "{:#}", indicatif::HumanDuration(std::time::Duration::from_secs_f64(left / rate(state))))
                }
            };
        });
    bar.set_style(style);
    bar
}
