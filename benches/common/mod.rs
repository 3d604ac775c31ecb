//! What the criterion suites share.

use std::time::Duration;

/// Criterion's measuring time per case: `default` seconds, or
/// `FRAMEPIPE_BENCH_SECONDS` (what scripts/gpu-report.sh sets to fit its
/// time on the GPU machine).
pub fn measuring_time(default: f64) -> Duration {
    let seconds = std::env::var("FRAMEPIPE_BENCH_SECONDS").ok().and_then(|s| s.parse::<f64>().ok());
    Duration::from_secs_f64(seconds.filter(|s| *s > 0.0).unwrap_or(default))
}
