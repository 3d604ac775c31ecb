//! The command line's grammar: subcommands, options, their parsers, and
//! the argument rewriting clap needs (negative numbers as values).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use framepipe::engine::MAX_THREADS;
use framepipe::io::{OutputFormat, PngCompression};
use framepipe::ledger::parse_bytes;
use framepipe::pool::PoolSize;
use framepipe::{BackendKind, Error, ErrorPolicy, MissingPolicy, Op, OpGraph};

/// GPU frame-processing engine: grade and blur image sequences with WGSL
/// compute shaders, or on the CPU reference (the GPU matches it within one
/// 8-bit code value, two 16-bit steps).
#[derive(Parser)]
#[command(name = "framepipe", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once; boxing buys nothing
pub(crate) enum Command {
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
    name = \"warm\"           # optional, as is description = \"...\"
    [[op]]
    type = \"exposure\"     # stops, -32 to 32
    stops = 0.5
    [[op]]
    type = \"matrix\"       # row-major 3x3 (default identity) and/or offset (default 0);
    matrix = [1.05, -0.03, -0.02, 0.0, 1.0, 0.0, -0.02, -0.03, 1.05]   # each -1e6 to 1e6
    offset = [0.0, 0.0, 0.01]
    [[op]]
    type = \"contrast\"     # -1000 to 1000, pivot (default 0.5) -1000 to 1000
    contrast = 1.2
    [[op]]
    type = \"saturation\"   # Rec.709 luma weights; -1000 to 1000
    saturation = 0.9
    [[op]]
    type = \"blur\"         # Gaussian, radius ceil(3·sigma), edges clamped; 0 ≤ sigma ≤ 512
    sigma = 4.0

  A preset is at most 1 MiB and 1000 ops; --preset - reads it from standard input. Color ops
  next to each other fuse into one pass, whose gain may not pass 1e12 (past f32's range).
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
pub(crate) struct ProcessArgs {
    /// Input: pattern (shot_%04d.png, shot.####.png), directory, or one file.
    pub(crate) input: String,
    /// Output pattern, e.g. graded/shot_%04d.png, or - to stream every frame in order to stdout.
    #[arg(short, long)]
    pub(crate) output: String,
    /// What `-o -` streams: raw (packed RGBA, 16-bit little-endian for 16-bit sources), or
    /// concatenated png, jpeg or qoi images (ffmpeg -f image2pipe). Default: raw.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub(crate) stream_format: Option<OutputFormat>,
    /// Frames to process: 1001-1100, 1-3,5,7-20x2 (inclusive; a step also as 7-20:2). Default: all on disk.
    #[arg(long, value_name = "SPEC")]
    pub(crate) frames: Option<String>,
    /// Frames missing inside the range: error (list them) or skip.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) missing: MissingPolicy,
    #[command(flatten)]
    pub(crate) ops: OpArgs,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

#[derive(Args)]
pub(crate) struct OpArgs {
    /// TOML preset with an ordered [[op]] list, - for standard input (conflicts with the op flags).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["exposure", "matrix", "offset", "contrast", "pivot", "saturation", "blur"])]
    pub(crate) preset: Option<PathBuf>,
    /// Exposure in stops (multiply by 2^stops), -32 to 32.
    #[arg(long, value_name = "STOPS")]
    pub(crate) exposure: Option<f64>,
    /// 3x3 color matrix, row-major: a,b,c,d,e,f,g,h,i (each -1e6 to 1e6).
    #[arg(long, value_name = "A,..,I")]
    pub(crate) matrix: Option<String>,
    /// RGB offset added after the matrix (alone: to the identity): r,g,b, each -1e6 to 1e6.
    #[arg(long, value_name = "R,G,B")]
    pub(crate) offset: Option<String>,
    /// Contrast slope around the pivot, -1000 to 1000.
    #[arg(long, value_name = "C")]
    pub(crate) contrast: Option<f64>,
    /// Contrast pivot (with --contrast), -1000 to 1000.
    #[arg(long, value_name = "P", default_value_t = 0.5, requires = "contrast")]
    pub(crate) pivot: f64,
    /// Saturation (0 grey, 1 unchanged), Rec.709 luma; -1000 to 1000.
    #[arg(long, value_name = "S")]
    pub(crate) saturation: Option<f64>,
    /// Gaussian blur sigma in pixels (0 ≤ sigma ≤ 512).
    #[arg(long, value_name = "SIGMA")]
    pub(crate) blur: Option<f64>,
}

#[derive(Args)]
pub(crate) struct BenchPoolArgs {
    /// Input: pattern, directory, or one file.
    pub(crate) input: String,
    /// Frames to use: 1-48, 1001-1100x2 (inclusive). Default: all on disk.
    #[arg(long, value_name = "SPEC")]
    pub(crate) frames: Option<String>,
    /// Frames missing inside the range: error (list them) or skip.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) missing: MissingPolicy,
    /// Pool sizes to compare.
    #[arg(long, action = clap::ArgAction::Set, value_delimiter = ',', default_value = "1,2,4,8,auto")]
    pub(crate) pools: Vec<PoolSize>,
    /// Runs per pool size: the table shows the median run's frames/s (of
    /// an even count, the slower middle run) with the range, and the
    /// highest peaks; the chart and CSV every run. 1 to 100.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub(crate) repeat: u32,
    /// VRAM budget: 512MiB, 2GiB, 1.5GB.
    #[arg(long, visible_alias = "vram-budget", value_name = "SIZE", default_value = "2GiB", value_parser = parse_budget)]
    pub(crate) budget: u64,
    /// Decode and encode threads (up to 1024), and the CPU backend's kernel threads (at most one per core); default, or 0: one per core.
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true, value_parser = threads, allow_negative_numbers = true)]
    pub(crate) threads: usize,
    /// auto, gpu or cpu.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) backend: BackendKind,
    /// Use the adapter whose name contains this text, or its number in `framepipe info` (0, 1, ...).
    #[arg(long, value_name = "NAME")]
    pub(crate) adapter: Option<String>,
    /// Output codec (by extension): png, qoi, tif, jpg.
    #[arg(long, default_value = "png")]
    pub(crate) format: String,
    #[command(flatten)]
    pub(crate) ops: OpArgs,
    /// Write every run as CSV.
    #[arg(long, value_name = "FILE", default_value = "bench-pool.csv")]
    pub(crate) csv: PathBuf,
    /// Write the chart (frames/s and peak memory against pool size).
    #[arg(long, value_name = "FILE.svg", default_value = "bench-pool.svg")]
    pub(crate) chart: PathBuf,
    /// Replace an existing CSV or chart (not a read-only one).
    #[arg(long)]
    pub(crate) overwrite: bool,
    /// Print only the table, notices and errors (no line per run).
    #[arg(short, long)]
    pub(crate) quiet: bool,
}

#[derive(Args)]
pub(crate) struct RunArgs {
    /// auto: a hardware GPU, else the CPU backend; gpu: any adapter; cpu: the CPU backend.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) backend: BackendKind,
    /// Use the adapter whose name contains this text, or its number in `framepipe info` (0, 1, ...).
    #[arg(long, value_name = "NAME")]
    pub(crate) adapter: Option<String>,
    /// Replace existing output files (not read-only ones: make those writable first).
    #[arg(long)]
    pub(crate) overwrite: bool,
    /// Keep the output files that exist and process only the other frames (resume an interrupted
    /// render: outputs are renamed into place complete, so one that exists is whole). Replaces
    /// the --json and --timeline reports of the run it finishes (kept where every frame is
    /// there and they tell of a finished run).
    #[arg(long, conflicts_with = "overwrite")]
    pub(crate) skip_existing: bool,
    /// On a failed frame: stop, or skip it and go on (exit code 1 either way).
    #[arg(long, value_enum, default_value_t)]
    pub(crate) on_error: ErrorPolicy,
    /// PNG deflate effort (default: fast).
    #[arg(long, value_enum)]
    pub(crate) png_compression: Option<PngCompression>,
    /// JPEG quality, 1-100 (default: 95).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub(crate) jpeg_quality: Option<u8>,
    /// Hard ceiling on GPU memory: 512MiB, 2GiB, 1.5GB (default: 2GiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_budget)]
    pub(crate) vram_budget: Option<u64>,
    /// Frame slots in flight: a number, or auto (as many as fit the budget beside a readback ring of two, or of one where the second buffer would cost the second slot; capped at threads + 3: one slot per decoder, per frame on the GPU (two), one decoded frame waiting its turn; threads + 2 without GPU work). A number N (at most one slot per frame to process) leaves the ring what the N slots leave, at least one buffer.
    #[arg(long, value_name = "N|auto", default_value = "auto")]
    pub(crate) pool: PoolSize,
    /// Decode and encode threads (up to 1024), and the CPU backend's kernel threads (at most one per core); default, or 0: one per core.
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true, value_parser = threads, allow_negative_numbers = true)]
    pub(crate) threads: usize,
    /// Process one frame at a time instead of pipelining (the reference path): one frame decodes, is processed and is encoded before the next; --threads then sets only the CPU backend's kernel threads, and --pool is unused.
    #[arg(long)]
    pub(crate) sequential: bool,
    /// Write a JSON report of the run (- for stdout).
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,
    /// Write an SVG timeline: one lane per stage, pool occupancy as an area (- for stdout).
    #[arg(long, value_name = "FILE.svg")]
    pub(crate) timeline: Option<PathBuf>,
    /// Print only errors.
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Set by `demo`, which has no command to run again.
    #[arg(skip)]
    pub(crate) demo: bool,
}

#[derive(Args)]
pub(crate) struct GenerateArgs {
    /// Frame size: 8k, 4k, 1080p, 720p or WxH.
    #[arg(long, default_value = "1080p")]
    pub(crate) size: String,
    /// Number of frames.
    #[arg(long, default_value_t = 24, value_parser = frame_count())]
    pub(crate) frames: u32,
    /// First frame number.
    #[arg(long, default_value_t = 1, value_parser = whole::<u64>, allow_negative_numbers = true)]
    pub(crate) start: u64,
    /// Bits per channel: 8 or 16.
    #[arg(long, default_value_t = 8, value_parser = parse_depth)]
    pub(crate) depth: u8,
    /// Include a varying alpha channel.
    #[arg(long)]
    pub(crate) alpha: bool,
    /// Varies the content.
    #[arg(long, default_value_t = 1, value_parser = whole::<u64>, allow_negative_numbers = true)]
    pub(crate) seed: u64,
    /// Output pattern, e.g. plates/shot_%04d.png.
    #[arg(short, long)]
    pub(crate) output: String,
    /// Replace existing files (not read-only ones).
    #[arg(long)]
    pub(crate) overwrite: bool,
    /// PNG deflate effort (default: fast).
    #[arg(long, value_enum)]
    pub(crate) png_compression: Option<PngCompression>,
    /// Print only errors.
    #[arg(short, long)]
    pub(crate) quiet: bool,
}

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Frames to generate and grade.
    #[arg(long, default_value_t = 3, value_parser = frame_count())]
    pub(crate) frames: u32,
    /// Frame size: 8k, 4k, 1080p, 720p or WxH.
    #[arg(long, default_value = "8k")]
    pub(crate) size: String,
    /// Backend to grade on.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) backend: BackendKind,
}

/// `--option -1e-3` as `--option=-1e-3`: an option whose value may be a
/// number (`numeric`) followed by a negative number in any form Rust reads
/// (`-1e-3`, `-.5`, `-5`), a list of them (`-1,0,0`), or what starts as
/// one (`-1GiB`), takes it as its value. clap takes only `-0.5`-like forms as negative numbers; an option
/// told to take any value starting with `-` would instead take the next
/// option when its own value is left out (`--exposure --blur 2`) and report
/// the `2`, where now clap says the value is missing.
pub(crate) fn attach_negative_values(
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
pub(crate) fn value_options(file: bool) -> std::collections::HashSet<String> {
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
pub(crate) fn non_utf8_argument() -> Option<std::ffi::OsString> {
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

/// A whole number, 0 or more, refused saying what is wrong with it
/// (clap's own parser answers `-1` with `invalid digit found in string`).
fn whole<T: TryFrom<u64>>(s: &str) -> Result<T, String> {
    use std::num::IntErrorKind;
    let t = s.trim();
    let n = t.parse::<u64>().map_err(|e| match e.kind() {
        _ if t.strip_prefix('-').is_some_and(|n| n.parse::<u64>().is_ok()) => "expected 0 or more".to_string(),
        IntErrorKind::PosOverflow => format!("expected at most {}", u64::MAX),
        IntErrorKind::Empty => "expected a whole number".to_string(),
        _ => "not a whole number".to_string(),
    })?;
    T::try_from(n).map_err(|_| "too large".to_string())
}

/// `--threads`: 0 (one per core) to [`MAX_THREADS`], refused here rather
/// than after the inputs are looked at.
fn threads(s: &str) -> Result<usize, String> {
    match s.trim().parse::<u128>() {
        Ok(n) if n <= MAX_THREADS as u128 => Ok(n as usize),
        Ok(_) => Err(format!("expected 0 (one per core) to {MAX_THREADS}")),
        Err(_) => whole::<usize>(s),
    }
}

/// `--depth`: 8 or 16 bits per channel, nothing between.
fn parse_depth(s: &str) -> Result<u8, String> {
    match s.trim() {
        "8" => Ok(8),
        "16" => Ok(16),
        _ => Err(format!("invalid depth {s} (expected 8 or 16)")),
    }
}

/// The op graph from `--preset` or the op flags in canonical order.
pub(crate) fn op_graph(args: &OpArgs) -> Result<OpGraph, Error> {
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
