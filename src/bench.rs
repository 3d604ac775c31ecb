//! `framepipe bench-pool`: the same job once per pool size, repeated, with
//! the numbers that size hardware.
//!
//! Each run is an ordinary [`Engine::run`] (the same code path as
//! `framepipe process`) into a fresh temporary folder that is deleted
//! afterwards. One warm-up run comes first so that shader compilation,
//! driver start-up and the page cache do not land on the first pool size.

use std::fmt::Write;
use std::path::Path;

use serde::Serialize;

use crate::engine::{Cancel, Engine, EngineConfig, Job};
use crate::error::{Error, Result};
use crate::ledger::human_bytes;
use crate::pool::PoolSize;

/// One measured run.
#[derive(Clone, Debug, Serialize)]
pub struct PoolRun {
    /// Pool size asked for (`auto` or a number).
    pub requested: String,
    /// Slots the run actually had.
    pub pool_size: usize,
    /// Which run of its pool size, from 1 (as the log counts them).
    pub repeat: usize,
    /// Frames written.
    pub frames: usize,
    /// Wall time, s.
    pub seconds: f64,
    /// frames ÷ seconds.
    pub fps: f64,
    /// Pipeline efficiency.
    pub efficiency: f64,
    /// Bottleneck stage.
    pub bottleneck: String,
    /// Ledger peak, bytes.
    pub vram_peak: u64,
    /// Peak resident host memory during the run, bytes.
    pub rss_peak: u64,
    /// Seconds a decode worker waited to start a frame (a free slot, its
    /// turn, previews at the gate), averaged over the workers.
    pub slot_wait_s: f64,
}

/// Resets the kernel's peak-RSS counter so each run reports its own
/// peak (Linux ≥ 4.0; elsewhere the peak is cumulative). The counter
/// restarts from what is resident now, so the memory earlier runs freed
/// goes back to the system first: the C allocator keeps freed frames
/// mapped for reuse, and a run after a larger pool would report that
/// pool's peak as its own.
fn reset_peak_rss() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the system; it
    // takes the allocator's own locks and touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Runs `job` once to warm up (with the automatic pool), then `repeat`
/// times for each pool size. `job.output` is ignored: every run writes to
/// its own temporary folder, named like the job's output pattern's file
/// name. A pool size whose slots do not fit the budget is passed to
/// `skipped` with the reason and the sweep goes on, so one `--pools
/// 1,2,4,8` line serves small and large frames alike.
///
/// # Errors
/// Any other error that stops a run (GPU, a failed frame), or a budget
/// error when no pool size fits at all.
pub fn bench_pool(
    job: &Job,
    config: &EngineConfig,
    pools: &[PoolSize],
    repeat: usize,
    progress: &mut dyn FnMut(&PoolRun),
    skipped: &mut dyn FnMut(PoolSize, &Error),
) -> Result<Vec<PoolRun>> {
    let name = Path::new(&job.output).file_name().and_then(|n| n.to_str()).unwrap_or("out_%06d.png").to_string();
    let once = |pool: PoolSize| -> Result<crate::report::Report> {
        let dir = crate::io::ScratchDir::new("framepipe-bench-")?;
        let mut job = job.clone();
        job.output = crate::sequence::FramePattern::in_dir(dir.path(), &name);
        let prepared = crate::engine::prepare(&job)?;
        let engine = Engine::new(EngineConfig { pool, ..config.clone() })?;
        reset_peak_rss();
        let report = engine.run(&job, &prepared, &Cancel::default(), &mut |_| {})?;
        if let Some(f) = report.failures.first() {
            return Err(Error::FrameFailed { number: f.number, reason: f.error.clone() });
        }
        Ok(report)
    };
    let warm_up = once(PoolSize::Auto)?;
    let mut runs = Vec::new();
    let mut refused = false;
    for &pool in pools {
        for r in 0..repeat.max(1) {
            let report = match once(pool) {
                Err(e @ Error::Budget(_)) => {
                    skipped(pool, &e);
                    refused = true;
                    break;
                }
                other => other?,
            };
            let run = PoolRun {
                requested: pool.to_string(),
                pool_size: report.pool_size,
                repeat: r + 1,
                frames: report.frames_written,
                seconds: report.seconds,
                fps: report.fps,
                efficiency: report.efficiency,
                bottleneck: report.bottleneck.clone(),
                vram_peak: report.vram_peak,
                rss_peak: report.rss_peak,
                slot_wait_s: report.slot_wait_s,
            };
            progress(&run);
            runs.push(run);
        }
    }
    // Each refusal went to `skipped` with its reason; what is left to say
    // is what would fit (auto takes the most that fit, up to its cap).
    if refused && runs.is_empty() {
        return Err(Error::Budget(format!(
            "none of the pool sizes asked for fits the VRAM budget; auto takes {} slot{} with it",
            warm_up.pool_size,
            if warm_up.pool_size == 1 { "" } else { "s" }
        )));
    }
    Ok(runs)
}

/// One pool size's runs, as [`summarize`] gives them.
pub type Summary = (String, usize, f64, f64, f64, PoolRun);

/// Median frames/s per pool size, with the spread: (requested, slots,
/// median, min, max, the median run). Of an even number of runs, the
/// slower middle one: never a figure better than half the runs.
pub fn summarize(runs: &[PoolRun]) -> Vec<Summary> {
    let mut order: Vec<String> = Vec::new();
    let mut sorted: Vec<&PoolRun> = runs.iter().collect();
    sorted.sort_by_key(|r| pool_order(&r.requested, r.pool_size));
    for r in sorted {
        if !order.contains(&r.requested) {
            order.push(r.requested.clone());
        }
    }
    order
        .into_iter()
        .map(|req| {
            let mut group: Vec<&PoolRun> = runs.iter().filter(|r| r.requested == req).collect();
            group.sort_by(|a, b| a.fps.total_cmp(&b.fps));
            let median = group[(group.len() - 1) / 2].clone();
            let (min, max) = (group[0].fps, group[group.len() - 1].fps);
            (req, median.pool_size, median.fps, min, max, median)
        })
        .collect()
}

/// Where pool size `requested` goes in the table, the CSV and the chart:
/// by the slots it took (`slots`; a size not measured, by its number),
/// `auto` after the fixed size that took as many: whatever order
/// `--pools` gave them in, the chart's line joins them left to right.
fn pool_order(requested: &str, slots: usize) -> (usize, bool) {
    match requested.parse::<usize>() {
        Ok(n) if slots == 0 => (n, false),
        // Auto not measured: its slots unknown, last.
        Err(_) if slots == 0 => (usize::MAX, true),
        _ => (slots, requested.parse::<usize>().is_err()),
    }
}

/// The pool sizes not measured (as for [`csv`]) in [`pool_order`].
fn in_pool_order(unmeasured: &[(String, String)]) -> Vec<&(String, String)> {
    let mut sorted: Vec<&(String, String)> = unmeasured.iter().collect();
    sorted.sort_by_key(|(pool, _)| pool_order(pool, 0));
    sorted
}

/// The table `bench-pool` prints, each column as wide as its widest cell,
/// then a line for each pool size not measured (`unmeasured`, as for
/// [`csv`]) and the smallest pool worth its VRAM.
pub fn table(runs: &[PoolRun], unmeasured: &[(String, String)]) -> String {
    const HEAD: [&str; 9] =
        ["pool", "slots", "frames/s", "(min - max)", "efficiency", "bottleneck", "peak VRAM", "peak RSS", "slot wait"];
    // Text columns to the left, figures to the right.
    const LEFT: [bool; 9] = [true, false, false, true, false, true, false, false, false];
    let sums = summarize(runs);
    let rows: Vec<[String; 9]> = (sums.iter())
        .map(|(req, slots, median, min, max, m)| {
            // Peaks are the highest of the pool size's runs (the CSV has
            // each run's), the rest the median run's.
            let (vram, rss) = (highest(runs, req, |r| r.vram_peak), highest(runs, req, |r| r.rss_peak));
            [
                req.to_string(),
                slots.to_string(),
                format!("{median:.3}"),
                format!("({min:.3} - {max:.3})"),
                format!("{:.0} %", 100.0 * m.efficiency),
                m.bottleneck.clone(),
                human_bytes(vram),
                human_bytes(rss),
                format!("{:.2} s", m.slot_wait_s),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..HEAD.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).chain([HEAD[c].len()]).max().unwrap_or(0))
        .collect();
    let mut s = String::new();
    let line = |s: &mut String, cells: &[&str]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .zip(LEFT)
            .map(|((cell, &w), left)| if left { format!("{cell:<w$}") } else { format!("{cell:>w$}") })
            .collect();
        let _ = writeln!(s, "{}", padded.join("  ").trim_end());
    };
    line(&mut s, &HEAD);
    for r in &rows {
        line(&mut s, &r.iter().map(String::as_str).collect::<Vec<_>>());
    }
    for (pool, why) in in_pool_order(unmeasured) {
        let _ = writeln!(s, "pool {pool} not measured: {why}");
    }
    if let Some((req, slots, share)) = smallest_of(&sums) {
        // The other sizes that took as many slots and also reached 95 %:
        // the same pool again, said as such.
        let best = best_fps(&sums);
        let same: Vec<&str> =
            sums.iter().filter(|r| r.1 == slots && r.0 != req && r.2 >= 0.95 * best).map(|r| r.0.as_str()).collect();
        let also = match same.split_last() {
            None => String::new(),
            Some((last, [])) => format!(", as did {last}"),
            Some((last, rest)) => format!(", as did {} and {last}", rest.join(", ")),
        };
        let _ = writeln!(
            s,
            "smallest pool within 95 % of the best: {req} ({slots} slot{}{also}; {:.0} % of the best)",
            if slots == 1 { "" } else { "s" },
            100.0 * share
        );
    }
    s
}

/// The smallest pool whose median frames/s is within 95 % of the best
/// median: the size worth paying VRAM for, with its share of the best.
/// Sizes that took as many slots (`--pools 2,4` over two frames, or auto
/// beside the number it chose) are named by the smallest asked for (a
/// number before auto) of those that reached 95 % themselves: the same
/// slots can still differ (auto's readback ring), and a size is never
/// credited with another's figure.
pub fn smallest_within_95(runs: &[PoolRun]) -> Option<(String, usize, f64)> {
    smallest_of(&summarize(runs))
}

fn best_fps(sums: &[Summary]) -> f64 {
    sums.iter().map(|r| r.2).fold(0.0, f64::max)
}

/// [`smallest_within_95`] of runs [`summarize`]d.
fn smallest_of(sums: &[Summary]) -> Option<(String, usize, f64)> {
    let best = best_fps(sums);
    let within = || sums.iter().filter(|r| r.2 >= 0.95 * best);
    let slots = within().map(|r| r.1).min()?;
    let pick = within().filter(|r| r.1 == slots).min_by_key(|r| r.0.parse::<usize>().unwrap_or(usize::MAX))?;
    Some((pick.0.clone(), slots, pick.2 / best.max(1e-12)))
}

/// Every run as CSV, then a row for each pool size not measured
/// (`unmeasured`: the size asked for and why), its figures empty and the
/// reason in the `note` column.
pub fn csv(runs: &[PoolRun], unmeasured: &[(String, String)]) -> String {
    let mut s = String::from(
        "pool,slots,repeat,frames,seconds,fps,efficiency,bottleneck,vram_peak_bytes,rss_peak_bytes,slot_wait_s,note\n",
    );
    // Rows in pool order, each size's runs in turn (a stable sort).
    let mut rows: Vec<((usize, bool), String)> = runs
        .iter()
        .map(|r| {
            let row = format!(
                "{},{},{},{},{:.6},{:.4},{:.4},{},{},{},{:.4},",
                r.requested,
                r.pool_size,
                r.repeat,
                r.frames,
                r.seconds,
                r.fps,
                r.efficiency,
                r.bottleneck,
                r.vram_peak,
                r.rss_peak,
                r.slot_wait_s
            );
            (pool_order(&r.requested, r.pool_size), row)
        })
        .collect();
    for (pool, why) in unmeasured {
        let row = format!("{pool},,,,,,,,,,,\"not measured: {}\"", why.replace('"', "\"\""));
        rows.push((pool_order(pool, 0), row));
    }
    rows.sort_by_key(|(order, _)| *order);
    for (_, row) in rows {
        let _ = writeln!(s, "{row}");
    }
    s
}

/// One of a run's figures.
type RunFigure = fn(&PoolRun) -> u64;

/// The highest of `of` over the runs of pool size `requested`: a peak is
/// what a machine must hold, whichever run reached it.
fn highest(runs: &[PoolRun], requested: &str, of: RunFigure) -> u64 {
    runs.iter().filter(|r| r.requested == requested).map(of).max().unwrap_or(0)
}

/// Three panels against pool size, each on its own axis from 0: frames/s
/// (every run as a dot, the median joined by a line), peak VRAM (the
/// ledger's) and peak host RSS (MiB: every run as a dot, the highest joined
/// by a line, as the table gives it). VRAM has its own axis: a few MiB of
/// slots beside a hundred of RSS would lie flat on one. Pool sizes are
/// categories by the slots they took ([`summarize`]'s order), `auto`
/// labelled with its slots, the labels turned where they would not fit
/// side by side; sizes not measured (`unmeasured`, as for [`csv`]) are
/// named under the title.
pub fn chart_svg(runs: &[PoolRun], title: &str, unmeasured: &[(String, String)]) -> String {
    let sums = summarize(runs);
    let labels: Vec<String> =
        sums.iter().map(|r| if r.0 == r.1.to_string() { r.0.clone() } else { format!("{} ({})", r.0, r.1) }).collect();
    let (panel_w, left0, pitch) = (300.0, 70.0, 410.0);
    let (top, bottom) = (60.0, 320.0);
    let n = sums.len().max(1) as f64;
    // About 7 px a character at 12 px: labels wider than their category
    // are drawn at 45°, which takes their length (× sin 45°) below the axis.
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(1) as f64 * 7.0;
    let turned = longest + 6.0 > panel_w / n;
    let under = if turned { 12.0 + longest * 0.71 } else { 16.0 };
    // Turned, a label still needs about 17 px along the axis (its height
    // over sin 45°): closer, labels `thin` places apart are drawn.
    let thin = if turned { (17.0 / (panel_w / n)).ceil().max(1.0) as usize } else { 1 };
    // `auto`'s label always (its slots are the figure to read); the
    // numbers from the left, each at least `thin` from any drawn.
    let mut shown: Vec<bool> = sums.iter().map(|r| r.0 == "auto").collect();
    let mut last: Option<usize> = None;
    for i in 0..shown.len() {
        let clear = last.is_none_or(|l| i - l >= thin) && !shown[i + 1..(i + thin).min(shown.len())].contains(&true);
        if shown[i] || clear {
            shown[i] = true;
            last = Some(i);
        }
    }
    let (w, h) = (left0 + 2.0 * pitch + panel_w + 30.0, bottom + under + 36.0);
    let index = |req: &str| sums.iter().position(|r| r.0 == req).unwrap_or(0) as f64;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    // Text longer than the chart is wide (a deep folder, a long grade in
    // the title) is cut with an ellipsis rather than at the edge; `px` a
    // character: 8.5 in bold at 14 px, 7 at 12.
    let fit = |text: &str, px: f64| {
        let most = ((w - 40.0) / px) as usize;
        if text.chars().count() <= most {
            text.to_string()
        } else {
            text.chars().take(most.saturating_sub(1)).chain(['…']).collect()
        }
    };
    let _ = writeln!(
        s,
        r#"<text x="20" y="24" font-size="14" font-weight="bold">{}</text>"#,
        crate::timeline::escape(&fit(title, 8.5))
    );
    if !unmeasured.is_empty() {
        let pools: Vec<&str> = in_pool_order(unmeasured).into_iter().map(|(pool, _)| pool.as_str()).collect();
        let _ = writeln!(
            s,
            r##"<text x="20" y="42" fill="#b00">{}</text>"##,
            crate::timeline::escape(&fit(
                &format!("not measured (see the CSV for why): pool {}", pools.join(", ")),
                7.0
            ))
        );
    }
    // Each panel: its axis title, colour, every run's value, and the line's
    // value per pool size (in `sums` order).
    let fps_line: Vec<f64> = sums.iter().map(|r| r.2).collect();
    let peak_line = |of: RunFigure| -> Vec<f64> { sums.iter().map(|r| mib(highest(runs, &r.0, of))).collect() };
    let panels: [(_, _, Vec<(f64, f64)>, _); 3] = [
        ("frames/s", "#4e79a7", runs.iter().map(|r| (index(&r.requested), r.fps)).collect(), fps_line),
        (
            "peak VRAM, ledger (MiB)",
            "#e15759",
            runs.iter().map(|r| (index(&r.requested), mib(r.vram_peak))).collect(),
            peak_line(|r| r.vram_peak),
        ),
        (
            "peak host RSS (MiB)",
            "#59a14f",
            runs.iter().map(|r| (index(&r.requested), mib(r.rss_peak))).collect(),
            peak_line(|r| r.rss_peak),
        ),
    ];
    for (p, (ylabel, color, dots, line)) in panels.into_iter().enumerate() {
        let left = left0 + pitch * p as f64;
        let x = |i: f64| left + panel_w * (i + 0.5) / n;
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{bottom}" x2="{}" y2="{bottom}" stroke="#333"/><line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#333"/>"##,
            left + panel_w
        );
        // Round ticks, at most four: the axis ends at the first one at or
        // past the data.
        let data_max = dots.iter().map(|d| d.1).chain(line.iter().copied()).fold(0.0, f64::max);
        // (Nothing to show, 0 to 1: not ticks of a millionth.)
        let step = if data_max > 0.0 { crate::timeline::nice_step(data_max / 4.0) } else { 1.0 };
        let ymax = step * (data_max / step).ceil().max(1.0);
        let y = |v: f64| bottom - (bottom - top) * (v / ymax);
        let ticks = (ymax / step).round() as u32;
        for i in 0..=ticks {
            let v = step * f64::from(i);
            // Gridlines under the data, none over the axis; each label's
            // baseline a little below its value, so the text is centred on it.
            if i > 0 {
                let _ = writeln!(
                    s,
                    r##"<line x1="{}" y1="{:.1}" x2="{}" y2="{1:.1}" stroke="#eee"/>"##,
                    left + 1.0,
                    y(v),
                    left + panel_w
                );
            }
            let label = crate::timeline::tick_label(v, step);
            let _ = writeln!(s, r#"<text x="{}" y="{:.1}" text-anchor="end">{label}</text>"#, left - 6.0, y(v) + 4.0);
        }
        for (i, label) in labels.iter().enumerate().filter(|(i, _)| shown[*i]) {
            let (cx, cy) = (x(i as f64), bottom + if turned { 12.0 } else { 16.0 });
            let _ = if turned {
                writeln!(s, r#"<text transform="translate({cx:.1},{cy}) rotate(-45)" text-anchor="end">{label}</text>"#)
            } else {
                writeln!(s, r#"<text x="{cx:.1}" y="{cy}" text-anchor="middle">{label}</text>"#)
            };
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.0}" text-anchor="middle">pool size (slots)</text>"#,
            left + panel_w / 2.0,
            bottom + under + 20.0
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate({},{}) rotate(-90)" text-anchor="middle">{ylabel}</text>"#,
            left - 48.0,
            (top + bottom) / 2.0
        );
        if data_max == 0.0 && p == 1 {
            // The CPU backend, or a grade that sends nothing to the GPU.
            let _ = writeln!(
                s,
                r##"<text x="{}" y="{}" text-anchor="middle" fill="#666">no VRAM held: nothing ran on the GPU</text>"##,
                left + panel_w / 2.0,
                (top + bottom) / 2.0
            );
            continue;
        }
        for (i, v) in dots {
            let _ =
                writeln!(s, r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}" fill-opacity="0.5"/>"#, x(i), y(v));
        }
        let pts: Vec<String> =
            line.iter().enumerate().map(|(i, &v)| format!("{:.1},{:.1}", x(i as f64), y(v))).collect();
        let _ = writeln!(s, r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#, pts.join(" "));
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(requested: &str, repeat: usize, fps: f64) -> PoolRun {
        PoolRun {
            requested: requested.into(),
            pool_size: requested.parse().unwrap_or(4),
            repeat,
            frames: 10,
            seconds: 10.0 / fps,
            fps,
            efficiency: 0.9,
            bottleneck: "decode".into(),
            vram_peak: 1,
            rss_peak: 1,
            slot_wait_s: 0.0,
        }
    }

    #[test]
    fn the_median_of_an_even_count_is_the_slower_middle_run() {
        let runs = [run("1", 1, 9.0), run("1", 2, 5.0), run("2", 1, 7.0), run("2", 2, 8.0), run("2", 3, 6.0)];
        let sums = summarize(&runs);
        let medians: Vec<(&str, f64, f64, f64)> = sums.iter().map(|s| (s.0.as_str(), s.2, s.3, s.4)).collect();
        assert_eq!(medians, [("1", 5.0, 5.0, 9.0), ("2", 7.0, 6.0, 8.0)]);
        // The runs are counted from 1 in the CSV, as in the log.
        assert!(csv(&runs, &[]).lines().nth(1).unwrap().starts_with("1,1,1,10,"), "{}", csv(&runs, &[]));
        // A size not measured has its row, figures empty, the reason quoted.
        let skipped = [("8".to_string(), "needs \"more\"".to_string())];
        assert!(csv(&runs, &skipped).ends_with("\n8,,,,,,,,,,,\"not measured: needs \"\"more\"\"\"\n"));
        assert!(chart_svg(&runs, "t", &skipped).contains(">not measured (see the CSV for why): pool 8</text>"));
    }

    /// `--pools 8,auto,4,2` with 8 not fitting: every output in order of
    /// the slots taken, auto (4 slots) after 4, the size not measured in
    /// its place (in the table, after those measured and before the line
    /// that picks the smallest pool).
    #[test]
    fn pool_sizes_come_out_in_order_of_slots_whatever_the_order_asked() {
        let runs = [run("auto", 1, 9.0), run("4", 1, 8.0), run("2", 1, 6.0), run("2", 2, 6.5)];
        let skipped = [("8".to_string(), "too big".to_string())];
        let order: Vec<String> = summarize(&runs).into_iter().map(|r| r.0).collect();
        assert_eq!(order, ["2", "4", "auto"]);
        let csv = csv(&runs, &skipped);
        let pools: Vec<&str> = csv.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
        assert_eq!(pools, ["2", "2", "4", "auto", "8"], "{csv}");
        let table = table(&runs, &skipped);
        let first = |what: &str| table.find(what).unwrap_or_else(|| panic!("{what}: {table}"));
        assert!(first("\n2 ") < first("\n4 ") && first("\n4 ") < first("\nauto "), "{table}");
        assert!(first("\nauto ") < first("pool 8 not measured") && first("pool 8 not") < first("smallest"), "{table}");
        // The chart's categories left to right: 2, 4, auto.
        let svg = chart_svg(&runs, "t", &skipped);
        let at = |label: &str| svg.find(&format!(">{label}<")).unwrap_or_else(|| panic!("{label}: {svg}"));
        assert!(at("2") < at("4") && at("4") < at("auto (4)"), "{svg}");
    }

    /// Sizes that took as many slots are named by the smallest asked for
    /// of those that reached 95 % themselves, each with its own share.
    #[test]
    fn pools_of_as_many_slots_are_named_by_the_smallest_that_reached_it() {
        let mut runs = [run("2", 1, 9.6), run("4", 1, 10.0), run("8", 1, 9.0), run("auto", 1, 9.9)];
        for r in &mut runs {
            r.pool_size = 2;
        }
        assert_eq!(smallest_within_95(&runs), Some(("2".to_string(), 2, 0.96)));
        let said = "smallest pool within 95 % of the best: 2 (2 slots, as did 4 and auto; 96 % of the best)";
        assert!(table(&runs, &[]).ends_with(&format!("{said}\n")), "{}", table(&runs, &[]));
        let runs = [run("1", 1, 5.0), run("auto", 1, 9.9), run("4", 1, 10.0)];
        assert_eq!(smallest_within_95(&runs), Some(("4".to_string(), 4, 1.0)));
        let runs = [run("1", 1, 5.0), run("auto", 1, 10.0)];
        assert_eq!(smallest_within_95(&runs), Some(("auto".to_string(), 4, 1.0)));
        // A size of as many slots that fell short is not credited with
        // auto's figure.
        let runs = [run("4", 1, 7.7), run("auto", 1, 10.0)];
        assert_eq!(smallest_within_95(&runs), Some(("auto".to_string(), 4, 1.0)));
        let said = "smallest pool within 95 % of the best: auto (4 slots; 100 % of the best)";
        assert!(table(&runs, &[]).ends_with(&format!("{said}\n")), "{}", table(&runs, &[]));
    }

    #[test]
    fn the_table_shows_the_highest_peaks_and_the_chart_grid_sits_on_its_values() {
        let mut runs = [run("1", 1, 9.0), run("1", 2, 5.0), run("1", 3, 7.0)];
        runs[0].rss_peak = 3 << 20;
        runs[1].vram_peak = 2 << 20;
        let table = table(&runs, &[]);
        assert!(table.contains("2.00 MiB") && table.contains("3.00 MiB"), "{table}");
        // Gridlines sit on their values (the top one, 4/4 of the axis, at
        // y = 60), labels' baselines just below; none is drawn over the x
        // axis (y = 320), whose 0 is only labelled.
        let svg = chart_svg(&runs, "t", &[]);
        // The memory lines join the same highest peaks (the median run's
        // are 1 byte), each at the top of its own axis: RSS 3 MiB of 0-3,
        // VRAM 2 MiB of 0-2 (not flattened under RSS's).
        assert!(svg.contains(r##"<polyline points="1040.0,60.0" fill="none" stroke="#59a14f""##), "{svg}");
        assert!(svg.contains(r##"<polyline points="630.0,60.0" fill="none" stroke="#e15759""##), "{svg}");
        assert!(svg.contains(r##"y1="60.0" x2="370" y2="60.0" stroke="#eee""##), "{svg}");
        assert!(svg.contains(r#"y="64.0" text-anchor="end">"#), "{svg}");
        assert!(!svg.contains(r##"y1="320.0" x2="370" y2="320.0" stroke="#eee""##), "{svg}");
        assert!(svg.contains(r#"y="324.0" text-anchor="end">0<"#), "{svg}");
        // Round ticks: 9 frames/s at most reads 0, 5, 10 (the axis ends
        // at 10, the top gridline); 3 MiB reads 0, 1, 2, 3; 2 MiB 0 to 2
        // by halves.
        for label in ["0", "5", "10", "1", "2", "3", "0.5", "1.5"] {
            assert!(svg.contains(&format!(r#"text-anchor="end">{label}<"#)), "{label}: {svg}");
        }
        assert!(!svg.contains(r#"text-anchor="end">2.5<"#), "{svg}");
        assert!(!svg.contains("no VRAM held"), "{svg}");
    }

    /// Labels that would overlap side by side are turned; a sweep that held
    /// no VRAM says so rather than drawing a line along 0.
    #[test]
    fn crowded_labels_are_turned_and_no_vram_is_said() {
        let few = [run("1", 1, 9.0), run("2", 1, 9.0)];
        assert!(!chart_svg(&few, "t", &[]).contains("rotate(-45)"));
        let mut many: Vec<PoolRun> = (1..=16).map(|p| run(&p.to_string(), 1, 9.0)).collect();
        many.push(run("auto", 1, 9.0));
        for r in &mut many {
            (r.vram_peak, r.rss_peak) = (0, 50 << 20);
        }
        let svg = chart_svg(&many, "t", &[]);
        assert!(svg.contains(r#"rotate(-45)" text-anchor="end">auto (4)</text>"#), "{svg}");
        assert!(svg.contains("no VRAM held: nothing ran on the GPU"), "{svg}");
        assert!(!svg.contains(">0.000001<"), "an empty axis runs 0 to 1: {svg}");
        assert!(!svg.contains(r##"stroke="#e15759""##), "no VRAM line: {svg}");
        // Too many even turned (41, 7 px each): every third, auto (after
        // 4, as many slots) always, its neighbours left out.
        let mut more: Vec<PoolRun> = (1..=40).map(|p| run(&p.to_string(), 1, 9.0)).collect();
        more.push(run("auto", 1, 9.0));
        let svg = chart_svg(&more, &"t".repeat(400), &[]);
        let label = |l: &str| svg.contains(&format!(r#"rotate(-45)" text-anchor="end">{l}</text>"#));
        assert!(label("1") && label("auto (4)") && label("7") && label("10"), "{svg}");
        assert!(!label("2") && !label("4") && !label("5") && !label("6"), "{svg}");
        assert!(svg.contains("t…</text>") && !svg.contains(&"t".repeat(200)), "a long title is cut: {svg}");
    }
}
