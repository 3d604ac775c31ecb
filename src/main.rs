//! The `framepipe` command line: parse arguments, call the library, print.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use framepipe::generate::{GenerateOptions, generate_sequence, parse_size};
use framepipe::io::{EncodeOptions, FileSet, OutputFormat, PngCompression};
use framepipe::ledger::{DEFAULT_BUDGET, human_bytes, parse_bytes};
use framepipe::pool::PoolSize;
use framepipe::{
    BackendKind, Cancel, Engine, EngineConfig, Error, ErrorPolicy, FrameSpec, Job, MissingPolicy, Op, OpGraph,
    PixelFormat, Progress,
};
use indicatif::{ProgressBar, ProgressStyle};

/// `eprintln!` that never panics: a full or closed stderr (`2>/dev/full`,
/// a log pipe that went away) must not abort a run that is writing frames.
/// Each note is one line of a log: control characters in it (a newline in
/// a file name) are written escaped.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "{}", printable(&format!($($arg)*)));
    }};
}

/// `text` with control characters escaped (`\n`, `\u{1b}`), as one line.
fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars().map(|c| if c.is_control() { c.escape_debug().to_string() } else { c.to_string() }).collect()
}

/// GPU frame-processing engine: grade and blur image sequences with WGSL
/// compute shaders, or on the CPU reference (the GPU matches it within one
/// code value).
#[derive(Parser)]
#[command(name = "framepipe", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once; boxing buys nothing
enum Command {
    /// Process an image sequence: decode, apply ops, encode.
    #[command(after_long_help = PROCESS_HELP)]
    Process(ProcessArgs),
    /// Write a synthetic test sequence (gradients, moving shapes, grain).
    Generate(GenerateArgs),
    /// List GPU adapters and say which one `--backend auto` picks.
    Info,
    /// Run the same job for each pool size (--repeat times each, after one warm-up) and compare throughput and memory.
    BenchPool(BenchPoolArgs),
    /// Generate a short 8K sequence in a temporary folder and grade it.
    Demo(DemoArgs),
}

const PROCESS_HELP: &str = "\
OPERATIONS
  Flags apply in the canonical order exposure → matrix (+offset) → contrast → saturation → blur.
  A preset gives any order and any repetition:

    # grade.toml
    [[op]]
    type = \"exposure\"     # stops = 0.5
    stops = 0.5
    [[op]]
    type = \"matrix\"       # row-major 3x3, optional offset
    matrix = [1.05, -0.03, -0.02, 0.0, 1.0, 0.0, -0.02, -0.03, 1.05]
    offset = [0.0, 0.0, 0.01]
    [[op]]
    type = \"contrast\"     # contrast = 1.2, pivot = 0.5 (default)
    contrast = 1.2
    [[op]]
    type = \"saturation\"   # Rec.709 luma weights
    saturation = 0.9
    [[op]]
    type = \"blur\"         # Gaussian, radius ceil(3·sigma), edges clamped; 0 ≤ sigma ≤ 512
    sigma = 4.0

  Values are 0..1 code values, processed as stored (no transfer functions), unclamped between
  ops; integer outputs are clamped and rounded to nearest. Color ops leave alpha alone; blur
  covers all four channels.

PATTERNS
  shot_%04d.png, shot.####.png, or a directory holding one numbered sequence. %4d pads with
  zeros as %04d does; %% is a literal %, and beside a %d field so is # (take#2_%04d.png).
  Frame numbers run from 0 up: a negative one in a sequence (shot_-001.png) is refused.
  Output numbers keep the input numbers; the output extension picks the format (png, jpg,
  tif, qoi). 16-bit sources stay 16-bit in PNG and TIFF.

STREAMS
  -o - writes every frame, in sequence order, to stdout (never to a terminal): frames finish
  out of order, a reorder buffer puts them back, and the reader stays a bounded window ahead.
  --stream-format raw (default) is packed RGBA (rgba, or rgba64le for 16-bit sources); png,
  jpeg or qoi concatenate images (not TIFF: FFmpeg cannot split a TIFF stream). The exact
  FFmpeg input options are printed on stderr (add -r for the frame rate):
    framepipe process shot_%04d.png -o - --preset grade.toml \
      | ffmpeg -f rawvideo -pix_fmt rgba -s 7680x4320 -r 24 -i - -c:v prores_ks graded.mov
  A failed frame is left out with --on-error skip; with stop the stream ends before it.

EXIT CODES
  0 every frame written; 1 a frame failed (or the GPU did, or a report could not be written
  once the frames were); 2 usage, preset or input errors
  found before any frame was processed. Stopped by Ctrl-C, SIGTERM or SIGHUP: in-flight frames
  finished or discarded, nothing partial left, then it ends as the signal would (the shell's
  $? is 130, 143 or 129, and a loop running it stops); a signal ignored by its parent (nohup)
  stays ignored.";

#[derive(Args)]
struct ProcessArgs {
    /// Input: pattern (shot_%04d.png, shot.####.png), directory, or one file.
    input: String,
    /// Output pattern, e.g. graded/shot_%04d.png, or - to stream every frame in order to stdout.
    #[arg(short, long)]
    output: String,
    /// What `-o -` streams: raw (packed RGBA, 16-bit little-endian for 16-bit sources), or
    /// concatenated png, jpeg or qoi images (ffmpeg -f image2pipe). Default: raw.
    #[arg(long, value_enum, value_name = "FORMAT")]
    stream_format: Option<OutputFormat>,
    /// Frames to process: 1001-1100, 1-3,5,7-20x2 (inclusive). Default: all on disk.
    #[arg(long, value_name = "SPEC", allow_hyphen_values = true)]
    frames: Option<String>,
    /// Frames missing inside the range: error (list them) or skip.
    #[arg(long, value_enum, default_value_t)]
    missing: MissingPolicy,
    #[command(flatten)]
    ops: OpArgs,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
struct OpArgs {
    /// TOML preset with an ordered [[op]] list (conflicts with the op flags).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["exposure", "matrix", "offset", "contrast", "pivot", "saturation", "blur"])]
    preset: Option<PathBuf>,
    /// Exposure in stops (multiply by 2^stops).
    #[arg(long, value_name = "STOPS")]
    exposure: Option<f64>,
    /// 3x3 color matrix, row-major: a,b,c,d,e,f,g,h,i.
    #[arg(long, value_name = "A,..,I")]
    matrix: Option<String>,
    /// RGB offset added after the matrix: r,g,b.
    #[arg(long, value_name = "R,G,B")]
    offset: Option<String>,
    /// Contrast slope around the pivot.
    #[arg(long, value_name = "C")]
    contrast: Option<f64>,
    /// Contrast pivot (with --contrast).
    #[arg(long, value_name = "P", default_value_t = 0.5, requires = "contrast")]
    pivot: f64,
    /// Saturation (0 grey, 1 unchanged), Rec.709 luma.
    #[arg(long, value_name = "S")]
    saturation: Option<f64>,
    /// Gaussian blur sigma in pixels (0 ≤ sigma ≤ 512).
    #[arg(long, value_name = "SIGMA")]
    blur: Option<f64>,
}

#[derive(Args)]
struct BenchPoolArgs {
    /// Input: pattern, directory, or one file.
    input: String,
    /// Frames to use: 1-48, 1001-1100x2 (inclusive). Default: all on disk.
    #[arg(long, value_name = "SPEC", allow_hyphen_values = true)]
    frames: Option<String>,
    /// Frames missing inside the range: error (list them) or skip.
    #[arg(long, value_enum, default_value_t)]
    missing: MissingPolicy,
    /// Pool sizes to compare.
    #[arg(long, action = clap::ArgAction::Set, value_delimiter = ',', default_value = "1,2,4,8,auto", allow_hyphen_values = true)]
    pools: Vec<PoolSize>,
    /// Runs per pool size: the table shows the median run's frames/s with
    /// the range, and the highest peaks; the chart and CSV every run.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    repeat: u32,
    /// VRAM budget: 512MiB, 2GiB, 1.5GB.
    #[arg(long, visible_alias = "vram-budget", value_name = "SIZE", default_value = "2GiB", value_parser = parse_budget)]
    budget: u64,
    /// Decode and encode threads, and the CPU backend's kernel threads (default: one per core).
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    threads: usize,
    /// auto, gpu or cpu.
    #[arg(long, value_enum, default_value_t)]
    backend: BackendKind,
    /// Use the adapter whose name contains this text.
    #[arg(long, value_name = "NAME")]
    adapter: Option<String>,
    /// Output codec (by extension): png, qoi, tif, jpg.
    #[arg(long, default_value = "png")]
    format: String,
    #[command(flatten)]
    ops: OpArgs,
    /// Write every run as CSV.
    #[arg(long, value_name = "FILE", default_value = "bench-pool.csv")]
    csv: PathBuf,
    /// Write the chart (frames/s and peak memory against pool size).
    #[arg(long, value_name = "FILE.svg", default_value = "bench-pool.svg")]
    chart: PathBuf,
    /// Replace an existing CSV or chart.
    #[arg(long)]
    overwrite: bool,
}

#[derive(Args)]
struct RunArgs {
    /// auto: a hardware GPU, else the CPU backend; gpu: any adapter; cpu: the CPU backend.
    #[arg(long, value_enum, default_value_t)]
    backend: BackendKind,
    /// Use the adapter whose name contains this text.
    #[arg(long, value_name = "NAME")]
    adapter: Option<String>,
    /// Replace existing output files.
    #[arg(long)]
    overwrite: bool,
    /// Keep the output files that exist and process only the other frames (resume an interrupted
    /// render: outputs are renamed into place complete, so one that exists is whole). Replaces
    /// the --json and --timeline reports of the run it finishes.
    #[arg(long, conflicts_with = "overwrite")]
    skip_existing: bool,
    /// On a failed frame: stop, or skip it and go on (exit code 1 either way).
    #[arg(long, value_enum, default_value_t)]
    on_error: ErrorPolicy,
    /// PNG deflate effort (default: fast).
    #[arg(long, value_enum)]
    png_compression: Option<PngCompression>,
    /// JPEG quality, 1-100 (default: 95).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=100))]
    jpeg_quality: Option<u8>,
    /// Hard ceiling on GPU memory: 512MiB, 2GiB, 1.5GB (default: 2GiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_budget)]
    vram_budget: Option<u64>,
    /// Frame slots in flight: a number, or auto (as many as fit the budget beside a readback ring of two, or of one where the second buffer would cost the second slot; capped at threads + 3: one slot per decoder, per frame on the GPU (two), one decoded frame waiting its turn; threads + 2 without GPU work). A number N leaves the ring what the N slots leave, at least one buffer.
    #[arg(long, value_name = "N|auto", default_value = "auto")]
    pool: PoolSize,
    /// Decode and encode threads, and the CPU backend's kernel threads (default: one per core).
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    threads: usize,
    /// Process one frame at a time instead of pipelining (the reference path).
    #[arg(long)]
    sequential: bool,
    /// Write a JSON report of the run (- for stdout).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write an SVG timeline: one lane per stage, pool occupancy as an area (- for stdout).
    #[arg(long, value_name = "FILE.svg")]
    timeline: Option<PathBuf>,
    /// Print only errors.
    #[arg(short, long)]
    quiet: bool,
    /// Set by `demo`, which has no command to run again.
    #[arg(skip)]
    demo: bool,
}

#[derive(Args)]
struct GenerateArgs {
    /// Frame size: 8k, 4k, 1080p, 720p or WxH.
    #[arg(long, default_value = "1080p")]
    size: String,
    /// Number of frames.
    #[arg(long, default_value_t = 24, value_parser = frame_count())]
    frames: u32,
    /// First frame number.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    start: u64,
    /// Bits per channel: 8 or 16.
    #[arg(long, default_value_t = 8, value_parser = parse_depth)]
    depth: u8,
    /// Include a varying alpha channel.
    #[arg(long)]
    alpha: bool,
    /// Varies the content.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output pattern, e.g. plates/shot_%04d.png.
    #[arg(short, long)]
    output: String,
    /// Replace existing files.
    #[arg(long)]
    overwrite: bool,
    /// PNG deflate effort (default: fast).
    #[arg(long, value_enum)]
    png_compression: Option<PngCompression>,
    /// Print only errors.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args)]
struct DemoArgs {
    /// Frames to generate and grade.
    #[arg(long, default_value_t = 3, value_parser = frame_count())]
    frames: u32,
    /// Frame size.
    #[arg(long, default_value = "8k")]
    size: String,
    /// Backend to grade on.
    #[arg(long, value_enum, default_value_t)]
    backend: BackendKind,
}

/// The run that the first interrupt asks to stop, once `process` (or
/// `demo`) has one going.
static RUN: std::sync::OnceLock<Cancel> = std::sync::OnceLock::new();

/// Set by the demo, whose folder a second Ctrl-C removes whole.
static DEMO: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// SIGINT, SIGTERM (how render farms stop a job) and SIGHUP. During a
/// `process` run the first asks it to stop (frames being written finish,
/// the rest are dropped, the summary is printed, then the process ends by
/// that signal: [`die_by`]). Otherwise, and on a second signal, the
/// process stops at once after removing its unfinished outputs and scratch
/// folders, ending by the signal that stopped it.
fn on_signal(signal: i32) {
    let first = FIRST_SIGNAL
        .compare_exchange(0, signal, std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst)
        .is_ok();
    match RUN.get() {
        Some(run) if first && STREAMING.load(std::sync::atomic::Ordering::SeqCst) => {
            note!(
                "framepipe: stopping: finishing the frame being written to stdout (interrupt again to stop now; stops at once in {} s if the reader does not take it)",
                STREAM_GRACE.as_secs()
            );
            run.cancel();
            // A reader that stalls holds that write, and the run, forever:
            // one signal from a supervisor must still end it.
            let _ = std::thread::Builder::new().spawn(move || {
                std::thread::sleep(STREAM_GRACE);
                stop_now(signal);
            });
        }
        Some(run) if first => {
            note!("framepipe: stopping: finishing the frames being written (interrupt again to stop now)");
            run.cancel();
        }
        _ => stop_now(signal),
    }
}

/// Set once a signal stops the process at once: it exits from there.
static STOPPING_NOW: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What reading float sources does to them.
const FLOAT_NOTICE: &str = "32-bit floats: values are clamped to 0..1 and kept to 16 bits (no float pipeline yet; scene-linear values above 1 are lost)";

/// What reading sources with premultiplied alpha does to them.
const PREMULTIPLIED_NOTICE: &str = "alpha is premultiplied (TIFF associated alpha): it is divided out as they are read, since the ops and every output take straight alpha";

/// The first signal received (0 before any): a run it stopped ends as it
/// would have ([`die_by`]), once the summary and reports are out.
static FIRST_SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// SIGINT's number, what Ctrl-C is where there are no signals.
const CTRL_C: i32 = 2;

/// The exit code of a process `signal` stopped: 128 + its number, as a
/// shell reports one the signal ended (130 for Ctrl-C).
fn signal_exit_code(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(130)
}

/// Routes SIGINT, SIGTERM and SIGHUP (Ctrl-C where there are no signals)
/// to [`on_signal`], on a thread of its own, not in the signal handler.
/// Returns once they are routed; if they cannot be, they keep their
/// default action (ending the process). One the parent set to be ignored
/// stays ignored: `nohup` (SIGHUP), a script's background job (SIGINT).
fn route_signals() {
    #[cfg(unix)]
    {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let routed_signals: Vec<i32> = [SIGINT, SIGTERM, SIGHUP].into_iter().filter(|&s| !ignored(s)).collect();
        let (routed, ready) = crossbeam_channel::bounded(1);
        // Registered on the thread that serves them: no thread, no
        // registration, so a signal never goes unanswered.
        let thread = std::thread::Builder::new().name("framepipe-signals".into()).spawn(move || {
            let signals = signal_hook::iterator::Signals::new(routed_signals);
            let _ = routed.send(());
            if let Ok(mut signals) = signals {
                signals.forever().for_each(on_signal);
            }
        });
        if thread.is_ok() {
            let _ = ready.recv();
        }
    }
    #[cfg(not(unix))]
    let _ = ctrlc::set_handler(|| on_signal(CTRL_C));
}

/// Whether `signal` is set to be ignored (as a parent left it).
#[cfg(unix)]
fn ignored(signal: i32) -> bool {
    // SAFETY: only reads the current action (no new one is given), into a
    // zeroed struct of the platform's layout.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut action) == 0 && action.sa_sigaction == libc::SIG_IGN
    }
}

/// Ends the process as `signal` would have had it not been caught, once
/// its clean-up is done: a shell then sees a process the signal ended
/// (`$?` is 128 + its number) and stops a loop or script running it, where
/// one that exits with that code is taken to have handled the signal and
/// the loop goes on. Like `_exit`, it runs no exit handlers. Where the
/// signal cannot end it, it exits with 128 + the number.
fn die_by(signal: i32) -> ! {
    #[cfg(unix)]
    // SAFETY: the signal's default action is restored, unblocked on this
    // thread and raised on it: the process ends.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
    exit_now(signal_exit_code(signal).into())
}

/// Set while `process` writes its frames to stdout.
static STREAMING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Set while `process` writes files that `--skip-existing` can resume.
static RESUMABLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How long the first signal waits for a stream's frame to be taken.
const STREAM_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Stops the process at once, removing its unfinished outputs: ends as
/// `signal` would ([`die_by`]).
fn stop_now(signal: i32) -> ! {
    STOPPING_NOW.store(true, std::sync::atomic::Ordering::SeqCst);
    let removed = framepipe::io::remove_partials();
    // (A count of the frames kept could miss one renamed into
    // place just now, before its report: none is given.)
    // (Not the demo's: its folder goes whole.)
    let demo = DEMO.load(std::sync::atomic::Ordering::SeqCst);
    let streaming = STREAMING.load(std::sync::atomic::Ordering::SeqCst);
    let kept = if RUN.get().is_some() && !demo && !streaming { "the frames written so far are kept, " } else { "" };
    note!("framepipe: stopped at once; {kept}{removed} unfinished output(s) removed");
    if RESUMABLE.load(std::sync::atomic::Ordering::SeqCst) {
        note!("notice: the same command with --skip-existing processes only the frames not written");
    }
    die_by(signal);
}

/// Ends the process without running exit handlers: `exit` runs the C and
/// C++ ones (static destructors), and a driver another thread is loading or
/// using at that moment (Mesa's LLVM, on a signal during start-up) then
/// frees what it is still building: "double free", an abort, exit 134
/// instead of 130. Nothing of framepipe's waits on them: its unfinished
/// files are removed before, and stderr is unbuffered.
fn exit_now(code: i32) -> ! {
    #[cfg(unix)]
    // SAFETY: `_exit` only ends the process.
    unsafe {
        libc::_exit(code)
    }
    #[cfg(not(unix))]
    std::process::exit(code)
}

/// `--option -1e-3` as `--option=-1e-3`: an option whose value may be a
/// number (`numeric`) followed by a negative number in any form Rust reads
/// (`-1e-3`, `-.5`, `-5`), a list of them (`-1,0,0`), or what starts as
/// one (`-1GiB`), takes it as its value. clap takes only `-0.5`-like forms as negative numbers; an option
/// told to take any value starting with `-` would instead take the next
/// option when its own value is left out (`--exposure --blur 2`) and report
/// the `2`, where now clap says the value is missing.
fn attach_negative_values(
    args: impl IntoIterator<Item = std::ffi::OsString>,
    numeric: &std::collections::HashSet<String>,
) -> Vec<std::ffi::OsString> {
    // A number, a list of them, or a value that starts as one does (a
    // size, `-1GiB`, `-1x5`: refused by its own parser, by name).
    let negative = |a: &std::ffi::OsString| {
        a.to_str().is_some_and(|s| {
            let digit =
                s.strip_prefix('-').and_then(|r| r.chars().next()).is_some_and(|c| c.is_ascii_digit() || c == '.');
            s.starts_with('-') && (digit || s.split(',').all(|n| n.trim().parse::<f64>().is_ok()))
        })
    };
    let mut out: Vec<std::ffi::OsString> = Vec::new();
    let mut ended = false;
    for arg in args {
        let takes = !ended && out.last().and_then(|l| l.to_str()).is_some_and(|l| numeric.contains(l));
        if takes && negative(&arg) {
            let last = out.last_mut().expect("an option before");
            last.push("=");
            last.push(&arg);
            continue;
        }
        ended |= arg == "--";
        out.push(arg);
    }
    out
}

/// Every subcommand's long options (and visible aliases) that take a value,
/// a file name (`file`) or not: a file may be named `-5`, but only when
/// said so (`--json=-5`), so negative numbers attach to the others.
fn value_options(file: bool) -> std::collections::HashSet<String> {
    fn walk(cmd: &clap::Command, file: bool, out: &mut std::collections::HashSet<String>) {
        for arg in cmd.get_arguments() {
            let names_file = arg.get_value_parser().type_id() == std::any::TypeId::of::<PathBuf>();
            if arg.get_action().takes_values() && names_file == file {
                out.extend(arg.get_long_and_visible_aliases().into_iter().flatten().map(|l| format!("--{l}")));
            }
        }
        cmd.get_subcommands().for_each(|sub| walk(sub, file, out));
    }
    let mut out = std::collections::HashSet::new();
    walk(&<Cli as clap::CommandFactory>::command(), file, &mut out);
    out
}

/// The first argument that is not UTF-8 where it must be: not a file
/// name given to an option that takes one (`--preset`, `--json`), which
/// may be any bytes.
fn non_utf8_argument() -> Option<std::ffi::OsString> {
    let files = value_options(true);
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let file_value = |i: usize| {
        let option = |a: &std::ffi::OsString| a.to_str().is_some_and(|a| files.contains(a));
        let joined = args[i].as_encoded_bytes();
        i.checked_sub(1).is_some_and(|p| option(&args[p]))
            || files.iter().any(|f| joined.starts_with(f.as_bytes()) && joined.get(f.len()) == Some(&b'='))
    };
    (0..args.len()).find(|&i| args[i].to_str().is_none() && !file_value(i)).map(|i| args[i].clone())
}

fn main() -> ExitCode {
    quiet_mesa_wsi();
    route_signals();
    // A codec's panic on an odd file is that file's one-line decode error
    // (see `framepipe::io::in_decoder`): not printed as a crash as well.
    let crash = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !framepipe::io::in_decoder() {
            crash(info)
        }
    }));
    let cli = match Cli::try_parse_from(attach_negative_values(std::env::args_os(), &value_options(false))) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let result = match cli.command {
        Command::Process(args) => process(args),
        Command::Generate(args) => generate(args),
        Command::Info => info(),
        Command::BenchPool(args) => bench_pool(args),
        Command::Demo(args) => demo(args),
    };
    // A signal stopping the process at once ends it (the signal thread is
    // on its way to): what failed because of it (no new output may be
    // made) says nothing.
    let stopping = || {
        if STOPPING_NOW.load(std::sync::atomic::Ordering::SeqCst) {
            loop {
                std::thread::park();
            }
        }
    };
    // A signal that asked a run to stop (or came once it had finished)
    // ends the process, once the run's state is dropped and all is said.
    let signalled = || {
        let signal = FIRST_SIGNAL.load(std::sync::atomic::Ordering::SeqCst);
        if signal != 0 {
            die_by(signal);
        }
    };
    match result {
        Ok(code) => {
            stopping();
            signalled();
            code
        }
        Err(e) => {
            stopping();
            note!("error: {e}");
            signalled();
            ExitCode::from(if e.is_usage() { 2 } else { 1 })
        }
    }
}

/// Mesa's Vulkan drivers print "error: XDG_RUNTIME_DIR is invalid" on
/// headless machines (render nodes, CI) although compute needs no window
/// system; that line would read like one of ours. Point it at the temp dir.
/// Help and version go to stdout as clap writes them; a usage error is
/// one line on stderr (clap's own spans several: a tip, the usage, a
/// pointer to `--help`), naming the argument and the value, exit 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        // Help that cannot be written (`--help > /dev/full`) is a failure;
        // a reader that stopped early (`| head`) got what it wanted.
        use std::io::Write as _;
        return match e.print().and_then(|()| std::io::stdout().flush()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                note!("error: stdout: {e}");
                ExitCode::from(1)
            }
            _ => ExitCode::SUCCESS,
        };
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = e.print();
        return ExitCode::from(2);
    }
    if e.kind() == ErrorKind::InvalidUtf8 {
        // clap names neither the argument nor the value: name the value.
        if let Some(bad) = non_utf8_argument() {
            note!("error: argument {bad:?} is not valid UTF-8 (frame patterns and option values must be)");
            return ExitCode::from(2);
        }
    }
    note!("{}", one_line(&e.render().to_string()));
    ExitCode::from(2)
}

/// clap's message up to its first blank line, as one line: a list under
/// the first line (missing arguments) joined with commas, and its tips
/// (a similar argument) after a semicolon.
fn one_line(rendered: &str) -> String {
    let mut lines = rendered.lines().take_while(|l| !l.trim().is_empty());
    let mut out = lines.next().unwrap_or("error: invalid arguments").trim_end().to_string();
    let items: Vec<&str> = lines.map(str::trim).collect();
    if !items.is_empty() {
        out.push(' ');
        out.push_str(&items.join(", "));
    }
    // Not clap's "to pass '-5' as a value, use '-- -5'": after `--` comes
    // the input, never an option's value.
    let tips = rendered.lines().map(str::trim).filter(|l| l.starts_with("tip:") && !l.contains("use '-- "));
    for tip in tips {
        out.push_str("; ");
        out.push_str(tip);
    }
    out.push_str(" (see --help)");
    out
}

fn quiet_mesa_wsi() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: called first thing in main, before any other thread exists.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
}

/// A count of frames to generate: 1 to as many as `process` takes.
fn frame_count() -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..=framepipe::sequence::MAX_SPEC_FRAMES as i64)
}

fn parse_budget(s: &str) -> Result<u64, String> {
    parse_bytes(s).map_err(|e| e.to_string())
}

fn parse_list<const N: usize>(what: &str, s: &str) -> Result<[f64; N], Error> {
    let bad = || Error::invalid(what, s, format!("{N} comma-separated numbers"));
    let v: Vec<f64> = s.split(',').map(|x| x.trim().parse::<f64>().map_err(|_| bad())).collect::<Result<_, _>>()?;
    v.try_into().map_err(|_| bad())
}

/// The op graph from `--preset` or the op flags in canonical order.
fn op_graph(args: &OpArgs) -> Result<OpGraph, Error> {
    if let Some(preset) = &args.preset {
        return framepipe::load_preset(preset);
    }
    let mut ops = Vec::new();
    if let Some(stops) = args.exposure {
        ops.push(Op::Exposure { stops });
    }
    match (&args.matrix, &args.offset) {
        (Some(m), offset) => ops.push(Op::Matrix {
            matrix: parse_list("matrix", m)?,
            offset: offset.as_deref().map(|o| parse_list("offset", o)).transpose()?.unwrap_or_default(),
        }),
        (None, Some(o)) => ops.push(Op::Matrix {
            matrix: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            offset: parse_list("offset", o)?,
        }),
        (None, None) => {}
    }
    if let Some(contrast) = args.contrast {
        ops.push(Op::Contrast { contrast, pivot: args.pivot });
    }
    if let Some(saturation) = args.saturation {
        ops.push(Op::Saturation { saturation });
    }
    if let Some(sigma) = args.blur {
        ops.push(Op::Blur { sigma });
    }
    OpGraph::new(ops)
}

fn process(args: ProcessArgs) -> Result<ExitCode, Error> {
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

/// Standard output as a plain file: frames are large binary writes, which
/// `Stdout`'s line buffering would only scan for newlines.
fn stdout_writer() -> Box<dyn std::io::Write + Send> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        if let Ok(fd) = std::io::stdout().as_fd().try_clone_to_owned() {
            return Box::new(std::fs::File::from(fd));
        }
    }
    Box::new(std::io::stdout())
}

/// Says when a blur's halo dwarfs the bands an adapter's binding limit
/// leaves (σ 169 at 8192 wide on a 128 MiB adapter: bands of 8 rows, each
/// reading 1014 more): the run is many times the work of one pass, which
/// should be known before it starts rather than found in its speed.
fn band_notice(engine: &Engine, job: &Job, info: &framepipe::io::FrameInfo) -> Option<String> {
    let plan = job.graph.plan();
    let banding = match &*engine.backend().lock(framepipe::priority::Priority::Export) {
        framepipe::Backend::Gpu(g) => g.banding(info.width, info.height, info.format, &plan).ok()?,
        framepipe::Backend::Cpu => return None,
    };
    let work = banding.scratch_rows.min(info.height) as f64 / banding.band_rows.min(info.height) as f64;
    (work >= 4.0).then(|| {
        format!(
            "notice: the blurs' halo of {} rows leaves this adapter's bindings room for bands of {} rows: about {work:.0}x the kernel work of one pass (--backend cpu has no such limit)",
            banding.halo, banding.band_rows
        )
    })
}

/// A report named like a frame (`--timeline tl.png`) would be text under
/// an image's name, found later as a broken frame: refused up front.
fn check_report_name(flag: &str, path: &Path, kind: &str, ext: &str) -> Result<(), Error> {
    if OutputFormat::from_path(path).is_ok() {
        return Err(Error::invalid(flag, path.display(), format!("a name for {kind}, not an image name")));
    }
    // Another report's extension is two names swapped (`--csv t.svg
    // --chart t.csv`), which would write each file under the other's name.
    let theirs = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    if let Some(theirs) = theirs.filter(|e| REPORT_EXTENSIONS.contains(&e.as_str()) && e != ext) {
        return Err(Error::invalid(flag, path.display(), format!("a name for {kind} (.{ext}), not a .{theirs} name")));
    }
    Ok(())
}

/// The extensions of the files reports and tables are written as.
const REPORT_EXTENSIONS: [&str; 3] = ["json", "svg", "csv"];

/// Refuses a run that writes to stdout when stdout is redirected into one
/// of its inputs (`-o - >> shot_0005.png`). (`>` has emptied the file
/// before framepipe starts: only the shell can refuse that, with
/// `set -o noclobber`.)
fn refuse_stdout_into_input(job: &Job, prepared: &framepipe::PreparedJob) -> Result<(), Error> {
    let inputs = prepared.sequence.matched.iter().chain(&job.also_reads).map(PathBuf::as_path);
    refuse_stdout_into(&prepared.reads, inputs)
}

/// [`refuse_stdout_into_input`] for the files `reads` (named `inputs`).
fn refuse_stdout_into<'a>(reads: &FileSet, mut inputs: impl Iterator<Item = &'a Path>) -> Result<(), Error> {
    let Some(id) = stdout_file_id().filter(|&id| reads.contains_id(id)) else { return Ok(()) };
    let name = inputs.find(|p| framepipe::io::file_id(p) == Some(id)).map(|p| p.display().to_string());
    let what = format!("(redirected to {})", name.as_deref().unwrap_or("an input"));
    Err(Error::invalid("stdout", what, "a pipe or a file that is not an input"))
}

/// Refuses a report file that stdout is redirected to (`--json r.json
/// --overwrite > r.json`): the report is renamed into place at the end,
/// which would throw away everything written to stdout (the frames of
/// `-o -`, bench-pool's table).
fn refuse_report_on_stdout(flag: &str, path: &Path) -> Result<(), Error> {
    match stdout_file_id() {
        Some(id) if path != Path::new("-") && framepipe::io::file_id(path) == Some(id) => {
            Err(Error::invalid(flag, path.display(), "a file other than the one stdout is redirected to"))
        }
        _ => Ok(()),
    }
}

/// The identity on disk of the file stdout is redirected to, if it is one.
fn stdout_file_id() -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let fd = std::io::stdout().as_fd().try_clone_to_owned().ok()?;
        let meta = std::fs::File::from(fd).metadata().ok()?;
        meta.is_file().then(|| (meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    None
}

/// What the output format cannot hold of the source (16 bits, alpha),
/// said once before the run rather than found in the files.
fn format_notice(format: OutputFormat, (sixteen, alpha): (bool, bool), what: &str) -> Option<String> {
    let name = match format {
        OutputFormat::Jpeg => "JPEG",
        OutputFormat::Qoi => "QOI",
        _ => return None,
    };
    let mut lost = Vec::new();
    if sixteen {
        lost.push("16-bit values are rounded to 8 bits");
    }
    if alpha && format == OutputFormat::Jpeg {
        lost.push("alpha is dropped");
    }
    (!lost.is_empty()).then(|| format!("notice: {name} holds less than {what}: {}", lost.join(" and ")))
}

/// The FFmpeg input options that read what a stream job writes.
fn stream_hint(prepared: &framepipe::PreparedJob, info: &framepipe::io::FrameInfo) -> Option<String> {
    let (w, h, format) = (info.width, info.height, info.format);
    Some(match prepared.format {
        OutputFormat::Raw => {
            let pix = if format == framepipe::io::PixelFormat::Rgba16 { "rgba64le" } else { "rgba" };
            format!("streaming raw {pix} {w}x{h} frames to stdout (ffmpeg: -f rawvideo -pix_fmt {pix} -s {w}x{h} -i -)")
        }
        f => {
            let codec = match f {
                OutputFormat::Jpeg => "mjpeg",
                OutputFormat::Qoi => "qoi",
                _ => "png",
            };
            format!("streaming {w}x{h} {f:?} images to stdout (ffmpeg: -f image2pipe -c:v {codec} -i -)").to_lowercase()
        }
    })
}

/// Runs a job from the command line; `preset` is a file it read, which
/// no report may replace.
fn run_job(job: &Job, opts: &RunArgs, preset: Option<&Path>) -> Result<ExitCode, Error> {
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
    stale_notice(&prepared.stale_partials, opts.quiet);
    let dash = |p: &Option<PathBuf>| p.as_deref() == Some(Path::new("-"));
    if prepared.stream || dash(&opts.json) || dash(&opts.timeline) {
        refuse_stdout_into_input(&job, &prepared)?;
    }
    // An option the run has no use for (an encoder option for a format it
    // does not write, a pool size with --sequential, --overwrite with
    // nothing to replace) is said, as FFmpeg says an option went unused,
    // rather than silently dropped.
    let output = format!("the output is {}", format!("{:?}", prepared.format).to_lowercase());
    let files_reported = [&opts.json, &opts.timeline].iter().any(|p| p.is_some() && !dash(p));
    let unused = [
        ("--png-compression", opts.png_compression.is_some() && prepared.format != OutputFormat::Png, &*output),
        ("--jpeg-quality", opts.jpeg_quality.is_some() && prepared.format != OutputFormat::Jpeg, &*output),
        ("--pool", matches!(opts.pool, PoolSize::Fixed(_)) && opts.sequential, "--sequential runs one frame at a time"),
        (
            "--overwrite",
            opts.overwrite && prepared.stream && !files_reported,
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
        if dash(path) && prepared.stream {
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
    if opts.vram_budget.is_some() && engine.backend_name() != "gpu" && !opts.quiet {
        note!("notice: --vram-budget is unused: the CPU backend holds no GPU memory");
    }
    if let Some(info) = prepared.first.filter(|_| !opts.quiet) {
        if let Some(hint) = prepared.stream.then(|| stream_hint(&prepared, &info)).flatten() {
            note!("{hint}");
        }
        let source = (info.format == framepipe::io::PixelFormat::Rgba16, info.has_alpha);
        if let Some(notice) = format_notice(prepared.format, source, "the sources") {
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
    }
    let cancel = Cancel::default();
    // The first interrupt now asks this run to stop (see `on_signal`).
    STREAMING.store(prepared.stream, std::sync::atomic::Ordering::SeqCst);
    // What a second interrupt can say of finishing (not after --overwrite:
    // the files not yet replaced are an older render's, which it keeps).
    RESUMABLE
        .store(!prepared.stream && !opts.demo && !opts.overwrite && !opts.quiet, std::sync::atomic::Ordering::SeqCst);
    let _ = RUN.set(cancel.clone());
    let total = prepared.outputs.len();
    let bar = (!opts.quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} frames  {per_sec}  ETA {eta}  {msg}")
                .expect("valid template"),
        );
        bar
    });
    let started = Instant::now();
    let quiet = opts.quiet;
    // Reasons already said (the error past its file name, `No space left
    // on device`), under `--on-error stop`.
    let mut reasons = std::collections::HashSet::new();
    let mut on_progress = |p: Progress<'_>| match p {
        Progress::Done { finished, total, record } => match &bar {
            Some(bar) => {
                bar.set_position(finished as u64);
                bar.set_message(format!("frame {}", record.number));
            }
            None if !quiet => note!(
                "framepipe: frame {} written {} ({finished}/{total} done, {:.2} s elapsed)",
                record.number,
                if record.output == "-" { "to stdout" } else { &record.output },
                started.elapsed().as_secs_f64()
            ),
            None => {}
        },
        // A frame the stop at once failed (no new output may be made) is
        // not its own failure: the stop says what happened.
        Progress::Failed { .. } if STOPPING_NOW.load(std::sync::atomic::Ordering::SeqCst) => {}
        Progress::Failed { finished, failure, .. } => {
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
    };
    let report = match (opts.sequential, prepared.stream) {
        (true, false) => engine.run_sequential(&job, &prepared, &cancel, &mut on_progress)?,
        (false, false) => engine.run(&job, &prepared, &cancel, &mut on_progress)?,
        (true, true) => {
            engine.run_sequential_stream(&job, &prepared, &mut stdout_writer(), &cancel, &mut on_progress)?
        }
        (false, true) => engine.run_stream(&job, &prepared, &mut stdout_writer(), &cancel, &mut on_progress)?,
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if !opts.quiet {
        note!("{}", report.summary());
        if let Some(notice) = resume_notice(opts, job.frames.is_some(), &prepared, &report) {
            note!("{notice}");
        }
        // Frames of another kind than the first, whose header the notices
        // before the run spoke of.
        let first = prepared.first;
        if !report.float_list.is_empty() && !first.is_some_and(|i| i.float) {
            note!("notice: frames {} hold {FLOAT_NOTICE}", report.float_list);
        }
        if !report.premultiplied_list.is_empty() && !first.is_some_and(|i| i.premultiplied) {
            note!("notice: frames {}: their {PREMULTIPLIED_NOTICE}", report.premultiplied_list);
        }
        // Auto takes two slots or more where two fit (and two frames
        // exist); a budget that holds only one still runs, without
        // overlap, and says so.
        let frames = report.frames_written + report.failures.len() + report.frames_skipped;
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
    if let Some(path) = &opts.json {
        let text = serde_json::to_string_pretty(&report).expect("report serialises") + "\n";
        unwritten |= failed_after_run(write_report(path, &text, replace_json));
    }
    if let Some(path) = &opts.timeline {
        let svg = framepipe::timeline::render_svg(&report);
        unwritten |= failed_after_run(write_report(path, &svg, replace_timeline));
    }
    Ok(if report.cancelled {
        // Cancelled only by a signal here (the first; Ctrl-C if none came):
        // `main` ends the process by it, once this run's state is dropped.
        let signal = FIRST_SIGNAL.load(std::sync::atomic::Ordering::SeqCst);
        ExitCode::from(signal_exit_code(if signal == 0 { CTRL_C } else { signal }))
    } else if report.failures.is_empty() && report.frames_skipped == 0 && !unwritten {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A failure's reason past the file it names (its input's or output's
/// path, which may hold `: ` itself): what frames failing alike share.
fn frame_reason<'a>(prepared: &framepipe::PreparedJob, failure: &'a framepipe::report::FrameFailure) -> &'a str {
    let at = prepared.sequence.frames.iter().position(|f| f.number == failure.number);
    let mut paths = at.into_iter().flat_map(|i| [&prepared.sequence.frames[i].path, &prepared.outputs[i]]);
    paths.find_map(|p| failure.error.strip_prefix(&format!("{}: ", p.display()))).unwrap_or(&failure.error)
}

/// Says which unfinished outputs of a killed run were removed.
/// And which were kept, too recent to be sure no other machine's run is
/// writing them.
fn stale_notice(found: &framepipe::io::StalePartials, quiet: bool) {
    if quiet {
        return;
    }
    let dir = |p: &PathBuf| framepipe::io::parent_dir(p).display().to_string();
    if let Some(first) = found.removed.first() {
        let (n, dir) = (found.removed.len(), dir(first));
        note!("notice: removed {n} unfinished output(s) a killed run left in {dir} (.framepipe-*.partial)");
    }
    if let Some(first) = found.recent.first() {
        let (n, dir) = (found.recent.len(), dir(first));
        note!(
            "notice: kept {n} unfinished output(s) in {dir} (.framepipe-*.partial): under 10 minutes old, they may be another machine's run's; a run after that removes them"
        );
    }
}

/// After a run that stopped early, the command that finishes it: what was
/// written stays, the rest is one flag away. (Not `--skip-existing` after
/// `--overwrite`: the files not yet replaced are an older render's, which
/// it would keep; `--frames` with every frame not written, failed ones too.)
/// `picked`: the command has a `--frames` of its own, which the new one
/// replaces.
fn resume_notice(
    opts: &RunArgs,
    picked: bool,
    prepared: &framepipe::PreparedJob,
    report: &framepipe::Report,
) -> Option<String> {
    if prepared.stream || opts.demo || report.frames_skipped == 0 || report.frames.is_empty() {
        return None;
    }
    if !opts.overwrite {
        return Some("notice: the same command with --skip-existing processes only the frames not written".into());
    }
    let written: std::collections::HashSet<u64> = report.frames.iter().map(|f| f.number).collect();
    let mut left: Vec<u64> =
        prepared.sequence.frames.iter().map(|f| f.number).filter(|n| !written.contains(n)).collect();
    left.sort_unstable();
    let spec = framepipe::sequence::frame_spec(&framepipe::sequence::runs_of(left));
    let instead = if picked { " in place of its own" } else { "" };
    Some(if spec.len() <= 200 {
        format!("notice: to finish, run the same command with --frames '{spec}'{instead}")
    } else {
        format!(
            "notice: to finish, run the same command with --frames{instead} and the frames the summary lists as failed or not written"
        )
    })
}

fn bench_pool(args: BenchPoolArgs) -> Result<ExitCode, Error> {
    let graph = op_graph(&args.ops)?;
    let mut job = Job::new(args.input.clone(), format!("out_%06d.{}", args.format), graph);
    job.frames = args.frames.as_deref().map(FrameSpec::parse).transpose()?;
    job.missing = args.missing;
    job.overwrite = true;
    // An extension alone: `%d.png` would end like one and name a pattern.
    if !args.format.chars().all(|c| c.is_ascii_alphanumeric())
        || OutputFormat::from_path(Path::new(&job.output)).is_err()
    {
        return Err(Error::invalid("--format", &args.format, "png, jpg, jpeg, tif, tiff or qoi"));
    }
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
    refuse_stdout_into(&reads, inputs())?;
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
    let device = probe.device_name().to_string();
    let threads = probe.threads();
    drop(probe);
    note!(
        "bench-pool: {} ({}), {} on {device}, {threads} decode/encode threads, budget {}, pools {}, {} run{} each after one warm-up",
        args.input,
        job.graph.describe(),
        args.format,
        framepipe::ledger::human_bytes(args.budget),
        args.pools.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(","),
        args.repeat,
        if args.repeat == 1 { "" } else { "s" }
    );
    if !sequence.missing.is_empty() {
        let n = sequence.missing_count();
        let list = framepipe::sequence::compact_runs(&sequence.missing);
        note!("bench-pool: {n} missing frame{} left out: {list}", if n == 1 { "" } else { "s" });
    }
    let mut refused = Vec::new();
    let runs = framepipe::bench::bench_pool(
        &job,
        &config,
        &args.pools,
        args.repeat as usize,
        &mut |r| {
            note!(
                "  pool {} ({} slot{}) run {}: {} frame{} in {:.2} s, {:.3} frames/s",
                r.requested,
                r.pool_size,
                if r.pool_size == 1 { "" } else { "s" },
                r.repeat,
                r.frames,
                if r.frames == 1 { "" } else { "s" },
                r.seconds,
                r.fps
            )
        },
        &mut |pool, e| {
            note!("  pool {pool}: skipped: {e}");
            refused.push(format!("pool {pool} not measured: {e}"));
        },
    )?;
    let mut table = framepipe::bench::table(&runs);
    for line in &refused {
        table += line;
        table.push('\n');
    }
    // After minutes of runs, each output is tried whatever became of the
    // others, and one that fails is a failure of the run (exit 1).
    let mut failed = failed_after_run(print_stdout(&table));
    let title = format!("{} · {} · {} · {device}", args.input, job.graph.describe(), args.format);
    let files = [(&args.csv, framepipe::bench::csv(&runs)), (&args.chart, framepipe::bench::chart_svg(&runs, &title))];
    for (path, text) in files {
        if failed_after_run(framepipe::io::write_file_atomic(path, text.as_bytes(), args.overwrite)) {
            failed = true;
        } else {
            note!("wrote {}", path.display());
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// `--depth`: 8 or 16 bits per channel, nothing between.
fn parse_depth(s: &str) -> Result<u8, String> {
    match s.trim() {
        "8" => Ok(8),
        "16" => Ok(16),
        _ => Err(format!("invalid depth {s} (expected 8 or 16)")),
    }
}

fn generate(args: GenerateArgs) -> Result<ExitCode, Error> {
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
    let written = generate_sequence(&opts, &args.output, &encode, args.overwrite)?;
    // JPEG and QOI hold 8 bits whatever was generated.
    let kept = match output {
        OutputFormat::Png | OutputFormat::Tiff => args.depth,
        _ => 8,
    };
    if !args.quiet {
        let n = written.len();
        note!(
            "wrote {n} frame{} of {width}x{height} ({kept}-bit) to {} in {:.1} s",
            if n == 1 { "" } else { "s" },
            args.output,
            t.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn info() -> Result<ExitCode, Error> {
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

/// Reports an error met after the work was done (a report that cannot be
/// written) and says whether there was one: such an error fails the run
/// rather than being a usage error.
fn failed_after_run(result: Result<(), Error>) -> bool {
    result.map_err(|e| note!("error: {e}")).is_err()
}

/// Whether `path` holds a report of an earlier run writing to `output` (a
/// JSON report naming it, or a timeline marked with it): the only existing
/// report a resumed run replaces. Another run's, or any other file, is
/// kept.
fn is_earlier_report(path: &Path, output: &str) -> bool {
    use std::io::Read;
    let size = std::fs::metadata(path).ok().filter(|m| m.is_file()).map(|m| m.len());
    // A timeline says whose it is on its second line: only its head is read.
    let mut head = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(1 << 20).read_to_end(&mut head));
    if read.is_err() {
        return false;
    }
    if head.starts_with(b"<svg") {
        let second = head.split(|&b| b == b'\n').nth(1).and_then(|l| std::str::from_utf8(l).ok());
        return second.is_some_and(|l| framepipe::timeline::marks(l, output));
    }
    // A JSON report holds a record per frame (about 1 KB): 256 MiB is a
    // quarter of a million frames; a larger file is taken for another's,
    // and is not read whole to find out.
    if size.is_none_or(|n| n > 256 << 20) {
        return false;
    }
    let Ok(text) = std::fs::read_to_string(path) else { return false };
    let report = serde_json::from_str::<serde_json::Value>(&text).ok();
    let is_report =
        |r: &serde_json::Value| ["input", "ops", "backend", "frames_written"].iter().all(|k| r.get(k).is_some());
    report.is_some_and(|r| is_report(&r) && r["output"] == output)
}

/// A report to its file (whole or not at all), or to stdout for `-`.
fn write_report(path: &Path, text: &str, overwrite: bool) -> Result<(), Error> {
    if path == Path::new("-") {
        return print_stdout(text);
    }
    framepipe::io::write_file_atomic(path, text.as_bytes(), overwrite)
}

/// Writes `text` to stdout. A reader that stopped reading (`| head`) got
/// what it wanted: that ends quietly; any other failure (`>/dev/full`) is
/// an error naming stdout, never a panic.
fn print_stdout(text: &str) -> Result<(), Error> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(source) => Err(Error::Io { path: "stdout".into(), source }),
        Ok(()) => Ok(()),
    }
}

fn demo(args: DemoArgs) -> Result<ExitCode, Error> {
    let (width, height) = parse_size(&args.size)?;
    // Removed if the demo fails or is stopped at once (a second Ctrl-C)
    // before its frames are graded; kept then.
    let tmp = framepipe::io::ScratchDir::new("framepipe-demo-")?;
    DEMO.store(true, std::sync::atomic::Ordering::SeqCst);
    let dir = tmp.path().to_owned();
    let plates = dir.join("plates/shot_%04d.png").display().to_string();
    let graded = dir.join("graded/shot_%04d.png").display().to_string();
    let opts = GenerateOptions { width, height, frames: args.frames, start: 1001, ..Default::default() };
    note!("generating {} frames of {width}x{height} in {} ...", args.frames, dir.display());
    let t = Instant::now();
    generate_sequence(&opts, &plates, &EncodeOptions::default(), false)?;
    note!("generated in {:.1} s; grading with the built-in samples/grade.toml ...", t.elapsed().as_secs_f64());
    let preset = include_str!("../samples/grade.toml");
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
    Ok(code)
}
