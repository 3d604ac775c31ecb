//! The `--timeline` chart: what every stage did, and the pool, over time.
//!
//! One lane per stage (a thin row per worker inside it), a bar per frame
//! worked on, and pool occupancy drawn as an area underneath, on a shared
//! time axis in seconds. Written as plain SVG: the chart is a handful of
//! rectangles and one path, which a plotting crate would not make simpler.

use std::fmt::Write;

use crate::report::Report;

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

/// Renders the report's intervals and occupancy as an SVG document.
pub fn render_svg(report: &Report) -> String {
    let lanes: Vec<&str> = report.stages.iter().map(|s| s.name.as_str()).collect();
    let top = 54.0;
    let height = top + LANE * lanes.len() as f64 + OCCUPANCY + 60.0;
    let span = report.seconds.max(1e-3);
    let plot = WIDTH - LEFT - RIGHT;
    let x = |t: f64| LEFT + plot * (t / span).clamp(0.0, 1.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="20" font-size="14" font-weight="bold">{} frames of {} in {:.2} s ({:.2} frames/s), {} backend</text>"#,
        report.frames_written,
        escape(&report.frame),
        report.seconds,
        report.fps,
        escape(&report.backend)
    );
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="38">bottleneck: {} · efficiency {:.0} % · pool {} slots · VRAM peak {}</text>"#,
        escape(&report.bottleneck),
        100.0 * report.efficiency,
        report.pool_size,
        crate::ledger::human_bytes(report.vram_peak)
    );
    for (i, stage) in report.stages.iter().enumerate() {
        let y0 = top + LANE * i as f64;
        let _ = writeln!(s, r##"<rect x="{LEFT}" y="{y0}" width="{plot}" height="{}" fill="#f4f4f4"/>"##, LANE - 6.0);
        let _ = writeln!(
            s,
            r##"<text x="8" y="{}">{}</text><text x="8" y="{}" fill="#666">×{} · {:.0} % busy</text>"##,
            y0 + 20.0,
            escape(&stage.name),
            y0 + 36.0,
            stage.workers,
            100.0 * stage.utilization
        );
        let row = (LANE - 6.0) / stage.workers.max(1) as f64;
        for iv in report.intervals.iter().filter(|iv| iv.stage == stage.name) {
            let (a, b) = (x(iv.start), x(iv.end));
            let _ = writeln!(
                s,
                r#"<rect x="{a:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} frame {}: {:.1} ms</title></rect>"#,
                y0 + row * iv.worker as f64 + 0.5,
                (b - a).max(0.8),
                (row - 1.0).max(0.5),
                color(&stage.name),
                escape(&iv.stage),
                iv.frame,
                (iv.end - iv.start) * 1e3
            );
        }
    }
    // Pool occupancy as a step area.
    let oy = top + LANE * lanes.len() as f64 + 10.0;
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
    for &(t, n) in &report.occupancy {
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
    // Time axis.
    let axis = base + 4.0;
    let _ = writeln!(s, r##"<line x1="{LEFT}" y1="{axis}" x2="{}" y2="{axis}" stroke="#333"/>"##, LEFT + plot);
    let step = nice_step(span / 10.0);
    let mut t = 0.0;
    while t <= span + 1e-9 {
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{axis}" x2="{0:.1}" y2="{1}" stroke="#333"/><text x="{0:.1}" y="{2}" text-anchor="middle">{3}</text>"##,
            x(t),
            axis + 5.0,
            axis + 18.0,
            trim(t)
        );
        t += step;
    }
    let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">time (s)</text>"#, LEFT + plot / 2.0, axis + 36.0);
    s.push_str("</svg>\n");
    s
}

fn nice_step(raw: f64) -> f64 {
    let p = 10f64.powf(raw.max(1e-6).log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * p).find(|v| *v >= raw).unwrap_or(10.0 * p)
}

fn trim(t: f64) -> String {
    let s = format!("{t:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn names_become_valid_svg_text() {
        assert_eq!(escape("a&b <c> \"d\""), "a&amp;b &lt;c&gt; &quot;d&quot;");
        // XML 1.0 has no escape for most control characters: written out.
        assert_eq!(escape("\u{1}a\u{1b}b\nc"), "\\u{1}a\\u{1b}b\\nc");
        assert_eq!(escape("a\u{ffff}"), "a\\u{ffff}");
    }
}
