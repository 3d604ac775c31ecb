//! The notices a run prints: what the output or the adapter does to the
//! sources, what a killed run left, how to finish a run stopped early.

use std::path::{Path, PathBuf};

use framepipe::io::OutputFormat;
use framepipe::{Engine, Job};

use crate::args::RunArgs;

/// What reading float sources does to them.
pub(crate) const FLOAT_NOTICE: &str = "32-bit floats: values are clamped to 0..1 and kept to 16 bits (no float pipeline yet; scene-linear values above 1 are lost)";

/// What reading sources of several images does.
pub(crate) const MORE_IMAGES_NOTICE: &str =
    "more than one image (a multi-page TIFF, an animated PNG): only the first is read";

/// What becomes of the sources' ICC profiles.
pub(crate) const ICC_NOTICE: &str = "an ICC profile, which the outputs do not carry: the values are processed and stored as they are, so a color-managed viewer may show the outputs differently";

/// What becomes of the sources' orientation tags.
pub(crate) const ORIENTED_NOTICE: &str =
    "an orientation tag (EXIF, TIFF) that is not applied: the outputs hold the pixels as stored, without it";

/// What reading sources with premultiplied alpha does to them.
pub(crate) const PREMULTIPLIED_NOTICE: &str = "alpha is premultiplied (TIFF associated alpha): it is divided out as they are read, since the ops and every output take straight alpha";

/// What becomes of a source's `n` extra channels of no stated meaning.
pub(crate) fn unnamed_notice(n: std::num::NonZeroU16) -> String {
    let (n, s) = (n.get(), crate::plural(n.get()));
    format!("the sources hold {n} extra channel{s} {UNNAMED_NOTICE}")
}

/// What happens to a source's channels of no stated meaning.
pub(crate) const UNNAMED_NOTICE: &str =
    "of no stated meaning (TIFF ExtraSamples 0: a saved selection, a matte), not alpha: left out of the outputs";

/// Says when a blur's halo dwarfs the bands an adapter's binding limit
/// leaves (σ 169 at 8192 wide on a 128 MiB adapter: bands of 8 rows, each
/// reading 1014 more): the run is many times the work of one pass, which
/// should be known before it starts rather than found in its speed.
pub(crate) fn band_notice(engine: &Engine, job: &Job, info: &framepipe::io::FrameInfo) -> Option<String> {
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

/// What the output format cannot hold of the source (16 bits, alpha),
/// said once before the run rather than found in the files.
pub(crate) fn format_notice(format: OutputFormat, (sixteen, alpha): (bool, bool), what: &str) -> Option<String> {
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
pub(crate) fn stream_hint(prepared: &framepipe::PreparedJob, info: &framepipe::io::FrameInfo) -> Option<String> {
    let (w, h, format) = (info.width, info.height, info.format);
    Some(match prepared.format() {
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

/// Says which unfinished outputs of a killed run were removed.
/// And which were kept, too recent to be sure no other machine's run is
/// writing them.
pub(crate) fn stale_notice(found: &framepipe::io::StalePartials, quiet: bool) {
    if quiet {
        return;
    }
    let dir = |p: &PathBuf| framepipe::io::parent_dir(p).display().to_string();
    if let Some(first) = found.removed.first() {
        let (n, dir) = (found.removed.len(), dir(first));
        let s = crate::plural(n);
        note!("notice: removed {n} unfinished output{s} a killed run left in {dir} (.framepipe-*.partial)");
    }
    if let Some(first) = found.recent.first() {
        let (n, dir) = (found.recent.len(), dir(first));
        let (s, they) = if n == 1 { ("", "it") } else { ("s", "they") };
        note!(
            "notice: kept {n} unfinished output{s} in {dir} (.framepipe-*.partial): under 10 minutes old, {they} may be another machine's run's; a run after that removes {}",
            if n == 1 { "it" } else { "them" }
        );
    }
}

/// How a run of files that stopped early is finished: with
/// `--skip-existing`, or the same command again where it has it. `first`
/// leads it: what to do before (`once ..., `), or nothing.
pub(crate) fn resume_hint(skipping: bool, first: &str) -> String {
    let how = if skipping { "again" } else { "with --skip-existing" };
    format!("notice: {first}the same command {how} processes only the frames not written")
}

/// After a run that stopped early, the command that finishes it: what was
/// written stays, the rest is one flag away. (Not `--skip-existing` after
/// `--overwrite`: the files not yet replaced are an older render's, which
/// it would keep; `--frames` with every frame not written, failed ones too.)
/// `picked`: the command has a `--frames` of its own, which the new one
/// replaces.
pub(crate) fn resume_notice(
    opts: &RunArgs,
    picked: bool,
    prepared: &framepipe::PreparedJob,
    report: &framepipe::Report,
) -> Option<String> {
    // (Failed frames count: under --on-error skip they are all that is
    // left to do.)
    let left = report.frames_unwritten + report.frames_failed;
    // The new command's --frames replaces one the command has.
    let instead = if picked { " in place of its own" } else { "" };
    if prepared.is_stream() && report.frames_unwritten == 0 && !report.failures.is_empty() {
        // A stream is not resumed: what went on past its bad frames can
        // only be told how to make those alone, for splicing in.
        let mut failed: Vec<u64> = report.failures.iter().map(|f| f.number).collect();
        failed.sort_unstable();
        let spec = framepipe::sequence::stepped_spec(&failed);
        return (spec.len() <= 200).then(|| {
            let (s, them) = if failed.len() == 1 { ("", "it") } else { ("s", "them") };
            format!("notice: the stream left out frame{s} {spec}; the same command with --frames '{spec}'{instead} streams only {them}")
        });
    }
    if prepared.is_stream() || opts.demo || left == 0 || report.frames.is_empty() {
        return None;
    }
    // Frames that failed for their sources fail again until those are
    // put right: said first, not left for the next run to find.
    let sources_first =
        !report.failures.is_empty() && report.failures.iter().all(|f| f.kind == framepipe::report::FailureKind::Source);
    let first = if sources_first { "once the failed frames' sources are put right, " } else { "" };
    if !opts.overwrite {
        return Some(resume_hint(opts.skip_existing, first));
    }
    let written: std::collections::HashSet<u64> = report.frames.iter().map(|f| f.number).collect();
    let mut left: Vec<u64> =
        prepared.sequence().frames.iter().map(|f| f.number).filter(|n| !written.contains(n)).collect();
    left.sort_unstable();
    let spec = framepipe::sequence::stepped_spec(&left);
    // (The summary's lists stop after twenty runs; the report's are whole.)
    let lists = match opts.json.as_deref() {
        Some(json) if json != Path::new("-") => {
            format!("the frames {} lists as failed_frames and unwritten_frames", json.display())
        }
        _ => "every frame not written (the summary lists the first; --json lists them all)".to_string(),
    };
    let first = if sources_first { first } else { "to finish, " };
    Some(if spec.len() <= 200 {
        format!("notice: {first}run the same command with --frames '{spec}'{instead}")
    } else {
        format!("notice: {first}run the same command with --frames{instead} and {lists}")
    })
}

/// After an `--overwrite` run in which frames failed: the outputs those
/// frames left as they were, which hold an earlier render (never removed:
/// they are the user's), named so they are not taken for this run's.
pub(crate) fn earlier_render_notice(
    opts: &RunArgs,
    prepared: &framepipe::PreparedJob,
    report: &framepipe::Report,
) -> Option<String> {
    if !opts.overwrite || prepared.is_stream() || report.failures.is_empty() {
        return None;
    }
    let failed: std::collections::HashSet<u64> = report.failures.iter().map(|f| f.number).collect();
    let mut kept: Vec<(u64, &PathBuf)> = (prepared.sequence().frames.iter().zip(prepared.outputs()))
        .filter(|(f, out)| failed.contains(&f.number) && out.is_file())
        .map(|(f, out)| (f.number, out))
        .collect();
    kept.sort_unstable();
    let &(first, path) = kept.first()?;
    Some(match kept.len() {
        1 => format!("notice: {} (frame {first} failed) still holds an earlier render, left as it was", path.display()),
        n => format!(
            "notice: the outputs of the {n} failed frames {} ({} and {}) still hold an earlier render, left as they were",
            framepipe::sequence::stepped_spec(&kept.iter().map(|k| k.0).collect::<Vec<_>>()),
            path.display(),
            if n == 2 { "1 other".to_string() } else { format!("{} others", n - 1) }
        ),
    })
}
