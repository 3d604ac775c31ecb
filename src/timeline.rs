//! The `--timeline` chart: what every stage did, and the pool, over time.
//!
//! One lane per stage (a thin row per worker inside it), a bar per frame
//! worked on, and pool occupancy drawn as an area underneath, on a shared
//! time axis in seconds. Written as plain SVG: the chart is a handful of
//! rectangles and one path, which a plotting crate would not make simpler.

use std::fmt::Write;

use crate::report::{Interval, Report};

/// The comment a timeline of a run writing to `output` carries after its
/// `<svg>` tag: how a resumed run (`--skip-existing`) tells the timeline of
/// the run it finishes, which it replaces, from any other file. The name is
/// percent-encoded where a comment line could not hold it as written: `-`
/// (a comment may not hold `--`), `%` itself (so no two names read alike),
/// control characters (XML allows none but tab and line ends, and a line
/// end would split the marker) and the non-characters U+FFFE and U+FFFF.
pub fn marker(output: &str) -> String {
    let mut name = String::with_capacity(output.len());
    for c in output.chars() {
        if matches!(c, '-' | '%' | '\u{fffe}' | '\u{ffff}') || c.is_control() {
            let mut utf8 = [0u8; 4];
            c.encode_utf8(&mut utf8).bytes().for_each(|b| {
                let _ = write!(name, "%{b:02X}");
            });
        } else {
            name.push(c);
        }
    }
    format!("<!-- framepipe timeline of {name} -->")
}

/// Whether `line` is the marker of a timeline of a run writing to
/// `output`: this build's, or the one timelines carried before `%` and
/// control characters were encoded (only `-` was), so a run started by an
/// older framepipe is still resumed.
pub fn marks(line: &str, output: &str) -> bool {
    line == marker(output) || line == format!("<!-- framepipe timeline of {} -->", output.replace('-', "%2D"))
}

const WIDTH: f64 = 1200.0;
const LEFT: f64 = 110.0;
const RIGHT: f64 = 20.0;
const LANE: f64 = 56.0;
const OCCUPANCY: f64 = 90.0;

fn color(stage: &str) -> &'static str {
    match stage {
        "read" => "#8c8c8c",
        "decode" => "#4e79a7",
        "gpu" | "compute" => "#e15759",
        "readback" => "#f28e2b",
        "encode" => "#59a14f",
        "write" => "#76b7b2",
        _ => "#b07aa1",
    }
}

/// `s` as SVG text: markup characters escaped, and control characters
/// (which XML 1.0 does not allow even escaped; a file name may hold them)
/// written as `\u{1b}`, as the command line's messages write them.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            // (U+FFFE and U+FFFF are not XML characters either.)
            c if c.is_control() || matches!(c, '\u{fffe}' | '\u{ffff}') => out.extend(c.escape_debug()),
            c => out.push(c),
        }
    }
    out
}

/// Work of one worker drawn as one rectangle: intervals less than half a
/// pixel apart at the chart's scale. A run of thousands of frames then
/// draws no more rectangles per lane than the chart has pixels, and a short
/// run still draws each frame, its number in the tooltip.
struct Run {
    start: f64,
    end: f64,
    busy: f64,
    /// The distinct frames it holds: the GPU lane has two intervals a
    /// frame (its submission and the wait for it), often with another
    /// frame's between them, so neither the intervals' count nor the
    /// frames of the first and last to start say which frames it holds. A
    /// frame whose intervals fall in two rectangles is the one's that holds
    /// its longest (of equals, the later: the wait, where its work ends), so
    /// each frame is named once.
    frames: std::collections::BTreeSet<u64>,
}

impl Run {
    /// `frame 7`, `frames 1, 4`, `12 frames, 1-12`, `120 frames between 1
    /// and 361` (the lowest and highest numbers, where it does not hold
    /// every frame between them: another worker had those).
    fn what(&self) -> String {
        let (Some(&first), Some(&last)) = (self.frames.first(), self.frames.last()) else {
            return "no frame".into();
        };
        match self.frames.len() {
            1 => format!("frame {first}"),
            2 | 3 => format!("frames {}", self.frames.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")),
            n if last - first == n as u64 - 1 => format!("{n} frames, {first}-{last}"),
            n => format!("{n} frames between {first} and {last}"),
        }
    }
}

fn runs<'a>(intervals: impl Iterator<Item = &'a Interval>, x: &dyn Fn(f64) -> f64) -> Vec<Run> {
    let mut sorted: Vec<&Interval> = intervals.collect();
    sorted.sort_by(|a, b| a.start.total_cmp(&b.start));
    let mut out: Vec<Run> = Vec::new();
    // Each frame's rectangle: the one holding its longest interval.
    let mut home: std::collections::HashMap<u64, (f64, usize)> = std::collections::HashMap::new();
    for iv in sorted {
        match out.last_mut() {
            Some(run) if x(iv.start) - x(run.end) < 0.5 => {
                run.end = run.end.max(iv.end);
                run.busy += iv.end - iv.start;
                run.frames.insert(iv.frame);
            }
            _ => out.push(Run { start: iv.start, end: iv.end, busy: iv.end - iv.start, frames: [iv.frame].into() }),
        }
        let (length, at) = (iv.end - iv.start, out.len() - 1);
        let held = home.entry(iv.frame).or_insert((length, at));
        if length >= held.0 {
            *held = (length, at);
        }
    }
    for (at, run) in out.iter_mut().enumerate() {
        // (A rectangle of none's longest keeps what it holds.)
        let own: std::collections::BTreeSet<u64> = run.frames.iter().copied().filter(|f| home[f].1 == at).collect();
        if !own.is_empty() {
            run.frames = own;
        }
    }
    out
}

/// The occupancy samples reduced to at most three a half-pixel: the
/// highest count reached there, the lowest, then the count it ended at, so
/// the chart keeps every peak and trough however many samples a long run
/// took.
fn steps(samples: &[(f64, u32)], x: &dyn Fn(f64) -> f64) -> Vec<(f64, u32)> {
    /// A half-pixel's samples: where, from when, highest, lowest, last.
    type Column = (i64, f64, u32, u32, u32);
    let mut out: Vec<(f64, u32)> = Vec::new();
    let mut column: Option<Column> = None;
    let flush = |out: &mut Vec<(f64, u32)>, (_, t, high, low, last): Column| {
        for n in [high, low, last] {
            if out.last() != Some(&(t, n)) {
                out.push((t, n));
            }
        }
    };
    for &(t, n) in samples {
        let at = (x(t) * 2.0).floor() as i64;
        column = match column {
            Some((c, t0, high, low, _)) if c == at => Some((c, t0, high.max(n), low.min(n), n)),
            Some(done) => {
                flush(&mut out, done);
                Some((at, t, n, n, n))
            }
            None => Some((at, t, n, n, n)),
        };
    }
    if let Some(done) = column {
        flush(&mut out, done);
    }
    out
}

/// Renders the report's intervals and occupancy as an SVG document.
pub fn render_svg(report: &Report) -> String {
    let lanes: Vec<&str> = report.stages.iter().map(|s| s.name.as_str()).collect();
    let top = 54.0;
    // One frame at a time there is no pool to share (a sequential run
    // takes no occupancy samples; nor does one with nothing to do): no
    // lane for it, which would read as a pool never used, and the time
    // axis right under the stages' lanes, as far below the last as it is
    // below the pool's area.
    let pool = !report.occupancy.is_empty();
    let lanes_end = top + LANE * lanes.len() as f64;
    let axis = if pool { lanes_end + OCCUPANCY - 6.0 } else { lanes_end - 2.0 };
    let height = axis + 66.0;
    let span = report.seconds.max(1e-3);
    let plot = WIDTH - LEFT - RIGHT;
    let x = |t: f64| LEFT + plot * (t / span).clamp(0.0, 1.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, "{}", marker(&report.output_identity));
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(s, r#"<text x="{LEFT}" y="20" font-size="14" font-weight="bold">{}</text>"#, title(report));
    // One frame at a time nothing overlaps: no stage holds another back.
    let overlap = if report.mode == "sequential" {
        "one frame at a time".to_string()
    } else {
        format!(
            "bottleneck: {} · efficiency {:.0} % · pool {} slot{}",
            // A run with nothing to do (every output there) had none.
            escape(if report.bottleneck.is_empty() { "none" } else { &report.bottleneck }),
            100.0 * report.efficiency,
            report.pool_size,
            if report.pool_size == 1 { "" } else { "s" },
        )
    };
    // As the summary says it: the CPU backend's slots are host frames.
    let vram = if report.backend == "gpu" {
        format!("VRAM peak {}", crate::ledger::human_bytes(report.vram_peak))
    } else {
        "host frames, no VRAM".to_string()
    };
    let _ = writeln!(s, r#"<text x="{LEFT}" y="38">{overlap} · {vram}</text>"#);
    for (i, stage) in report.stages.iter().enumerate() {
        let y0 = top + LANE * i as f64;
        let _ = writeln!(s, r##"<rect x="{LEFT}" y="{y0}" width="{plot}" height="{}" fill="#f4f4f4"/>"##, LANE - 6.0);
        // The read stage hands frame numbers to the decoders (which read the
        // files): it has waits, never busy time, so its lane says what it does.
        // Decoders beyond the pool's slots wait for one (copiers for a
        // readback buffer): its busy share is of those that can run at
        // once, which the lane says.
        let load = match stage.name.as_str() {
            "read" => format!("{} handed out", stage.frames),
            name if (1..stage.workers).contains(&stage.parallel) => format!(
                "×{} ({} at once: the {}) · {:.0} % busy",
                stage.workers,
                stage.parallel,
                if name == "readback" { "readback buffers" } else { "slots" },
                100.0 * stage.utilization
            ),
            _ => format!("×{} · {:.0} % busy", stage.workers, 100.0 * stage.utilization),
        };
        let _ = writeln!(
            s,
            r##"<text x="8" y="{}">{}</text><text x="8" y="{}" fill="#666">{load}</text>"##,
            y0 + 20.0,
            escape(&stage.name),
            y0 + 36.0,
        );
        let row = (LANE - 6.0) / stage.workers.max(1) as f64;
        for worker in 0..stage.workers.max(1) {
            let lane = report.intervals.iter().filter(|iv| iv.stage == stage.name && iv.worker == worker);
            for run in runs(lane, &x) {
                let (a, b) = (x(run.start), x(run.end));
                let what = run.what();
                let _ = writeln!(
                    s,
                    r#"<rect x="{a:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {what}: {:.1} ms</title></rect>"#,
                    y0 + row * worker as f64 + 0.5,
                    (b - a).max(0.8),
                    (row - 1.0).max(0.5),
                    color(&stage.name),
                    escape(&stage.name),
                    run.busy * 1e3
                );
            }
        }
    }
    // Set-up (the pool made, kernels built) before any stage could start:
    // shaded and named, where it is wide enough to see, so the empty start
    // of the lanes reads as what it is.
    if x(report.setup_s) - LEFT >= 2.0 {
        let (bottom, w) = (lanes_end, x(report.setup_s) - LEFT);
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{top}" width="{w:.1}" height="{:.1}" fill="#bbbbbb" fill-opacity="0.35"><title>set-up: {:.1} ms</title></rect>"##,
            bottom - top,
            report.setup_s * 1e3
        );
        if w >= 40.0 {
            let _ = writeln!(s, r##"<text x="{:.1}" y="{}" fill="#666">set-up</text>"##, LEFT + 4.0, bottom - 6.0);
        }
    }
    // Pool occupancy as a step area.
    if pool {
        let oy = lanes_end + 10.0;
        let base = oy + OCCUPANCY - 20.0;
        let max = report.pool_size.max(1) as f64;
        let yv = |n: u32| base - (OCCUPANCY - 30.0) * (n as f64 / max);
        let _ = writeln!(
            s,
            r##"<text x="8" y="{}">pool slots</text><text x="8" y="{}" fill="#666">in use (max {})</text>"##,
            oy + 20.0,
            oy + 36.0,
            report.pool_size
        );
        let mut path = format!("M{LEFT},{base}");
        let mut last = 0;
        for (t, n) in steps(&report.occupancy, &x) {
            let _ = write!(path, " L{:.1},{:.1} L{:.1},{:.1}", x(t), yv(last), x(t), yv(n));
            last = n;
        }
        let _ = write!(path, " L{:.1},{:.1} L{:.1},{base} Z", x(span), yv(last), x(span));
        let _ = writeln!(s, r##"<path d="{path}" fill="#f28e2b" fill-opacity="0.5" stroke="#f28e2b"/>"##);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="#999" stroke-dasharray="4 3"/>"##,
            yv(report.pool_size as u32),
            LEFT + plot,
            yv(report.pool_size as u32)
        );
    }
    // Time axis.
    let _ = writeln!(s, r##"<line x1="{LEFT}" y1="{axis}" x2="{}" y2="{axis}" stroke="#333"/>"##, LEFT + plot);
    for (t, label) in time_ticks(span) {
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{axis}" x2="{0:.1}" y2="{1}" stroke="#333"/><text x="{0:.1}" y="{2}" text-anchor="middle">{3}</text>"##,
            x(t),
            axis + 5.0,
            axis + 18.0,
            label
        );
    }
    let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">time (s)</text>"#, LEFT + plot / 2.0, axis + 36.0);
    s.push_str("</svg>\n");
    s
}

/// The time axis's ticks over `span` seconds, about ten: each one's time
/// and label. Counted, not summed: a sum of steps drifts, and a tick can go
/// missing.
fn time_ticks(span: f64) -> Vec<(f64, String)> {
    let step = nice_step(span / 10.0);
    (0..=(span / step + 1e-6).floor() as u32).map(|i| f64::from(i) * step).map(|t| (t, tick_label(t, step))).collect()
}

/// The 1, 2 or 5 times a power of ten at or above `raw`: a tick step.
pub(crate) fn nice_step(raw: f64) -> f64 {
    let p = 10f64.powf(raw.max(1e-6).log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * p).find(|v| *v >= raw).unwrap_or(10.0 * p)
}

/// `t` with as many decimals as the tick step needs (0.0005 s steps are
/// labelled 0.0005, 0.001, 0.0015, never 0.001 twice), trailing zeros cut.
pub(crate) fn tick_label(t: f64, step: f64) -> String {
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    let s = format!("{t:.decimals$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

/// Whether a timeline (its SVG text) is of a run that wrote every frame it
/// was given: its title adds nothing after the backend but the frames
/// already there, which a resumed run did not have to write.
/// (A timeline of a build before those were named has them nowhere.)
pub fn is_complete(svg: &str) -> bool {
    // Only the title: the output's name is elsewhere in the text (the
    // marker), and may hold anything.
    const TITLE: &str = "font-weight=\"bold\">";
    let title = svg.find(TITLE).map_or(svg, |at| &svg[at + TITLE.len()..]);
    let title = title.split('<').next().unwrap_or(title);
    let Some(at) = title.rfind(" backend; ") else { return true };
    let said = &title[at + " backend; ".len()..];
    said.split(", ").all(|part| part.strip_suffix(" already there").is_some_and(|n| n.parse::<u64>().is_ok()))
}

/// The chart's title: what the run wrote, how fast and on which backend,
/// then [`outcome`]. A run that found every frame already there (a resumed
/// run queued again after it finished) processed nothing, which it says in
/// so many words, not as 0 frames in 0.00 s at 0.00 frames/s; so does one
/// stopped before it started any, beside those already there.
fn title(report: &Report) -> String {
    let backend = escape(&report.backend);
    let existing = report.frames_existing;
    if report.frames_written == 0 && report.failures.is_empty() && existing > 0 {
        let all = if report.frames_unwritten == 0 && existing > 1 { "all " } else { "" };
        return format!(
            "no frames processed: {all}{existing} already there, {backend} backend{}",
            outcome(report, false)
        );
    }
    format!(
        "{} frame{}{} in {:.2} s ({:.2} frames/s), {backend} backend{}",
        report.frames_written,
        if report.frames_written == 1 { "" } else { "s" },
        // No frame decoded, no size to name.
        if report.frame.is_empty() { String::new() } else { format!(" of {}", escape(&report.frame)) },
        report.seconds,
        report.fps,
        // A run that did not finish does not look like one that did.
        outcome(report, true)
    )
}

/// What the title adds after the backend's name for the frames a run did
/// not write: `; 16 already there, 2 failed, 5 not written (stopped)`, as
/// the summary counts them (the frames already there only where `existing`:
/// not when the title led with them); nothing for a run that wrote them all
/// (and found none there). [`is_complete`] reads it.
fn outcome(report: &Report, existing: bool) -> String {
    let mut parts = Vec::new();
    if existing && report.frames_existing > 0 {
        parts.push(format!("{} already there", report.frames_existing));
    }
    let kept = parts.len();
    if !report.failures.is_empty() {
        parts.push(format!("{} failed", report.failures.len()));
    }
    if report.frames_unwritten > 0 {
        parts.push(format!("{} not written", report.frames_unwritten));
    }
    if report.cancelled {
        // Beside the frames the stop left undone; alone where it left none.
        let undone = parts.len() > kept;
        match parts.last_mut() {
            Some(last) if undone => last.push_str(" (stopped)"),
            _ => parts.push("stopped".into()),
        }
    }
    if parts.is_empty() { String::new() } else { format!("; {}", parts.join(", ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(worker: usize, start: f64, end: f64, frame: u64) -> Interval {
        Interval { stage: "encode", worker, start, end, frame }
    }

    #[test]
    fn tick_labels_tell_ticks_apart() {
        let labels = |span: f64| time_ticks(span).into_iter().map(|(_, label)| label).collect::<Vec<_>>();
        assert_eq!(
            labels(0.005),
            ["0", "0.0005", "0.001", "0.0015", "0.002", "0.0025", "0.003", "0.0035", "0.004", "0.0045", "0.005"]
        );
        assert_eq!(labels(0.001)[..3], ["0", "0.0001", "0.0002"]);
        assert_eq!(labels(42.0)[..3], ["0", "5", "10"]);
        assert_eq!(labels(1.0).last().unwrap(), "1");
        for span in [0.001, 0.0037, 0.02, 0.7, 3.3, 130.0, 4000.0] {
            let l = labels(span);
            let distinct: std::collections::BTreeSet<_> = l.iter().collect();
            assert_eq!(distinct.len(), l.len(), "{span}: {l:?}");
        }
    }

    #[test]
    fn work_closer_than_half_a_pixel_is_one_rectangle() {
        let px = |t: f64| t * 100.0; // 100 px a second
        let ivs = [interval(0, 0.0, 0.1, 1), interval(0, 0.102, 0.2, 4), interval(0, 0.5, 0.6, 3)];
        let r = runs(ivs.iter(), &px);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].what(), r[1].what()), ("frames 1, 4".to_string(), "frame 3".to_string()));
        assert!((r[0].busy - 0.198).abs() < 1e-9 && (r[0].end - 0.2).abs() < 1e-9);
        // A frame's two intervals (the GPU lane) count once.
        let gpu = [interval(0, 0.0, 0.1, 1), interval(0, 0.1, 0.2, 2), interval(0, 0.2, 0.3, 1)];
        assert_eq!(runs(gpu.iter(), &px)[0].what(), "frames 1, 2");
    }

    #[test]
    fn occupancy_keeps_every_peak_and_trough_in_three_points_a_half_pixel() {
        let px = |t: f64| t;
        let samples = [(0.0, 1), (0.1, 3), (0.2, 2), (5.0, 1), (5.1, 0), (5.2, 1), (9.0, 2)];
        let expect = [(0.0, 3), (0.0, 1), (0.0, 2), (5.0, 1), (5.0, 0), (5.0, 1), (9.0, 2)];
        assert_eq!(steps(&samples, &px), expect);
    }

    #[test]
    fn a_long_run_draws_a_bounded_chart() {
        let frames = 200_000u64;
        let report = Report {
            seconds: 1000.0,
            stages: vec![crate::report::StageReport { name: "encode".into(), workers: 2, ..Default::default() }],
            intervals: (0..frames)
                .map(|f| interval(f as usize % 2, f as f64 * 0.005, f as f64 * 0.005 + 0.009, f))
                .collect(),
            occupancy: (0..frames).map(|f| (f as f64 * 0.005, (f % 4) as u32)).collect(),
            pool_size: 4,
            ..Default::default()
        };
        let svg = render_svg(&report);
        assert!(svg.matches("<rect").count() < 100, "{} rectangles", svg.matches("<rect").count());
        assert!(svg.len() < 200_000, "{} bytes", svg.len());
        // Decoders beyond the slots: the lane says how many run at once.
        let decode =
            crate::report::StageReport { name: "decode".into(), workers: 8, parallel: 2, ..Default::default() };
        let svg = render_svg(&Report { stages: vec![decode], ..Default::default() });
        assert!(svg.contains(">×8 (2 at once: the slots) · 0 % busy<"), "{svg}");
        assert!(!svg.contains("set-up"), "none to show");
        let copiers =
            crate::report::StageReport { name: "readback".into(), workers: 2, parallel: 1, ..Default::default() };
        let svg = render_svg(&Report { stages: vec![copiers], ..Default::default() });
        assert!(svg.contains(">×2 (1 at once: the readback buffers) · 0 % busy<"), "{svg}");
        // The set-up before the first frame is shaded and named.
        let encode = crate::report::StageReport { name: "encode".into(), workers: 1, ..Default::default() };
        let svg = render_svg(&Report { stages: vec![encode], seconds: 1.0, setup_s: 0.25, ..Default::default() });
        assert!(svg.contains("<title>set-up: 250.0 ms</title>") && svg.contains(">set-up</text>"), "{svg}");
        // The title counts as the summary does.
        let stopped = Report { frames_written: 3, frames_unwritten: 5, cancelled: true, ..Default::default() };
        assert!(render_svg(&stopped).contains("backend; 5 not written (stopped)</text>"));
        for (written, said) in [(0, ">0 frames in"), (1, ">1 frame in"), (2, ">2 frames in")] {
            let svg = render_svg(&Report { frames_written: written, ..Default::default() });
            assert!(svg.contains(said), "{said}: {svg}");
        }
    }

    /// A GPU lane's frames as the pipeline records them: each frame's
    /// submission, then the wait for the frame before it, a second long
    /// each and back to back, with a gap of `gap` seconds after the wait
    /// for frame `split`.
    fn gpu_lane(frames: u64, split: u64, gap: f64) -> Vec<Interval> {
        let mut order = vec![1];
        for f in 2..=frames {
            order.extend([f, f - 1]);
        }
        order.push(frames);
        let mut t = 0.0;
        let mut waited = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for f in order {
            out.push(Interval { stage: "gpu", worker: 0, start: t, end: t + 1.0, frame: f });
            t += 1.0;
            if !waited.insert(f) && f == split {
                t += gap;
            }
        }
        out
    }

    #[test]
    fn gpu_tooltips_count_each_frame_once_and_name_the_lowest_and_highest() {
        let px = |t: f64| t * 10.0;
        // Frame 12 submitted before the gap, waited for after it: named
        // once, where it was waited for.
        let lane = gpu_lane(16, 11, 5.0);
        let r = runs(lane.iter(), &px);
        assert_eq!(r.iter().map(Run::what).collect::<Vec<_>>(), ["11 frames, 1-11", "5 frames, 12-16"]);
        // One rectangle: every frame once, though each has two intervals.
        let r = runs(gpu_lane(16, 0, 0.0).iter(), &px);
        assert_eq!((r.len(), r[0].what()), (1, "16 frames, 1-16".to_string()));
        // Another worker's frames between them are not this one's.
        let every_other: Vec<Interval> = (0..5).map(|i| interval(0, i as f64, i as f64 + 1.0, 2 * i + 1)).collect();
        assert_eq!(runs(every_other.iter(), &px)[0].what(), "5 frames between 1 and 9");
        // In the chart, the tooltip after the stage's name.
        let gpu = crate::report::StageReport { name: "gpu".into(), workers: 1, ..Default::default() };
        let report = Report { seconds: 40.0, stages: vec![gpu], intervals: lane, ..Default::default() };
        let svg = render_svg(&report);
        assert!(svg.contains("<title>gpu 11 frames, 1-11: 23000.0 ms</title>"), "{svg}");
        assert!(svg.contains("<title>gpu 5 frames, 12-16: 9000.0 ms</title>"), "{svg}");
    }

    /// The height the SVG says it has, and the time axis's height (the
    /// last line drawn from the plot's left edge: after the pool's).
    fn heights(svg: &str) -> (f64, f64) {
        let number = |at: Option<usize>, after: &str| -> f64 {
            let at = at.unwrap_or_else(|| panic!("{after}: {svg}")) + after.len();
            svg[at..].split('"').next().unwrap().parse().unwrap()
        };
        let (height, axis) = (r#"height=""#, r#"<line x1="110" y1=""#);
        (number(svg.find(height), height), number(svg.rfind(axis), axis))
    }

    #[test]
    fn a_sequential_run_has_no_pool_lane() {
        let stage = |name: &str| crate::report::StageReport { name: name.into(), workers: 1, ..Default::default() };
        let sequential = Report {
            mode: "sequential".into(),
            seconds: 1.0,
            pool_size: 1,
            stages: vec![stage("decode"), stage("gpu"), stage("encode")],
            ..Default::default()
        };
        let svg = render_svg(&sequential);
        assert!(!svg.contains("pool slots") && !svg.contains("<path") && !svg.contains("stroke-dasharray"), "{svg}");
        // The axis right under the last lane (its rectangle ends 6 px short
        // of the lane's end), as far below it as it is below the pool's area.
        let lanes_end = 54.0 + 3.0 * LANE;
        let (height, axis) = heights(&svg);
        assert_eq!(axis, lanes_end - 6.0 + 4.0);
        // Pipelined, the pool's lane is between, as it was.
        let pipelined = Report { mode: "pipelined".into(), pool_size: 4, occupancy: vec![(0.0, 1)], ..sequential };
        let svg = render_svg(&pipelined);
        assert!(svg.contains(">in use (max 4)</text>") && svg.contains("<path"), "{svg}");
        let (tall, pool_axis) = heights(&svg);
        assert_eq!((pool_axis, tall), (lanes_end + OCCUPANCY - 6.0, lanes_end + OCCUPANCY + 60.0));
        // All else the same distance from the axis.
        assert_eq!(tall - pool_axis, height - axis);
    }

    #[test]
    fn the_title_names_frames_already_there() {
        let title = |report: &Report| {
            let svg = render_svg(report);
            let at = svg.find(r#"font-weight="bold">"#).unwrap() + r#"font-weight="bold">"#.len();
            (svg[at..].split("</text>").next().unwrap().to_string(), is_complete(&svg))
        };
        let resumed = Report {
            backend: "gpu".into(),
            frames_written: 16,
            frames_existing: 16,
            seconds: 3.9,
            fps: 16.0 / 3.9,
            frame: "320x180 RGBA8".into(),
            ..Default::default()
        };
        // Already there is done: the resumed run finished what it was given.
        assert_eq!(
            title(&resumed),
            ("16 frames of 320x180 RGBA8 in 3.90 s (4.10 frames/s), gpu backend; 16 already there".into(), true)
        );
        let failure =
            crate::report::FrameFailure { number: 20, kind: crate::report::FailureKind::Gpu, error: "lost".into() };
        let failed = Report { failures: vec![failure], frames_written: 15, fps: 15.0 / 3.9, ..resumed.clone() };
        assert_eq!(
            title(&failed),
            (
                "15 frames of 320x180 RGBA8 in 3.90 s (3.85 frames/s), gpu backend; 16 already there, 1 failed".into(),
                false
            )
        );
        let stopped = Report { cancelled: true, ..resumed.clone() };
        assert!(title(&stopped).0.ends_with("backend; 16 already there, stopped") && !title(&stopped).1);
        // Every frame there: nothing processed, said so.
        let all_there = Report { backend: "gpu".into(), frames_existing: 32, seconds: 2.8e-5, ..Default::default() };
        assert_eq!(title(&all_there), ("no frames processed: all 32 already there, gpu backend".into(), true));
        let one = Report { frames_existing: 1, ..all_there.clone() };
        assert_eq!(title(&one).0, "no frames processed: 1 already there, gpu backend");
        // Stopped before it started any of the rest.
        let none_yet = Report { frames_existing: 16, frames_unwritten: 16, cancelled: true, ..all_there };
        assert_eq!(
            title(&none_yet),
            ("no frames processed: 16 already there, gpu backend; 16 not written (stopped)".into(), false)
        );
        // The output's name in the marker is not read as the title.
        let named = Report {
            output_identity: "renders/gpu backend; v2/s_%04d.png".into(),
            frames_written: 2,
            ..Report::default()
        };
        assert!(is_complete(&render_svg(&named)));
        // Timelines of builds before these named no frames already there.
        assert!(is_complete(r#"<text font-weight="bold">2 frames in 1.00 s (2.00 frames/s), gpu backend</text>"#));
        assert!(!is_complete(
            r#"<text font-weight="bold">2 frames in 1.00 s (2.00 frames/s), gpu backend; stopped</text>"#
        ));
    }

    #[test]
    fn names_become_valid_svg_text() {
        assert_eq!(escape("a&b <c> \"d\""), "a&amp;b &lt;c&gt; &quot;d&quot;");
        // XML 1.0 has no escape for most control characters: written out.
        assert_eq!(escape("\u{1}a\u{1b}b\nc"), "\\u{1}a\\u{1b}b\\nc");
        assert_eq!(escape("a\u{ffff}"), "a\\u{ffff}");
    }

    /// The marker is one line a comment can hold, whatever the name: no
    /// `--`, no control character, and two names never read alike.
    #[test]
    fn the_marker_holds_any_name_on_one_line() {
        let odd = "out\u{1}-shot\n%2D_%04d.png";
        let m = marker(odd);
        assert_eq!(m, "<!-- framepipe timeline of out%01%2Dshot%0A%252D_%2504d.png -->");
        assert!(!m[4..m.len() - 3].contains("--") && !m.chars().any(char::is_control));
        assert_ne!(marker("a-b"), marker("a%2Db"));
        // An older build's marker of the same run is still its.
        assert!(marks("<!-- framepipe timeline of o%2Dx_%04d.png -->", "o-x_%04d.png"));
        assert!(marks(&marker(odd), odd) && !marks(&marker("a"), "b"));
    }
}
