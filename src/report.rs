//! Run statistics and the JSON report.

use serde::Serialize;

/// Timings of one written frame.
#[derive(Clone, Debug, Serialize)]
pub struct FrameRecord {
    /// Frame number.
    pub number: u64,
    /// Output path.
    pub output: String,
    /// Decode time, ms.
    pub decode_ms: f64,
    /// Processing time on the host clock (upload + kernels + readback), ms.
    pub process_ms: f64,
    /// Kernel time from GPU timestamps, ms, where the adapter has them.
    pub gpu_ms: Option<f64>,
    /// Encode + write time, ms.
    pub encode_ms: f64,
    /// Bytes written.
    pub output_bytes: u64,
}

/// One failed frame.
#[derive(Clone, Debug, Serialize)]
pub struct FrameFailure {
    /// Frame number.
    pub number: u64,
    /// The one-line error.
    pub error: String,
}

/// What a run did, for the summary line and `--json`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Input as given.
    pub input: String,
    /// Output pattern.
    pub output: String,
    /// The op graph, in words.
    pub ops: String,
    /// `gpu` or `cpu`.
    pub backend: String,
    /// Adapter or CPU description.
    pub device: String,
    /// Frames written.
    pub frames_written: usize,
    /// Frames that failed.
    pub failures: Vec<FrameFailure>,
    /// Frames never attempted (after a stop or a cancel).
    pub frames_skipped: usize,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Frames written per second of wall time.
    pub fps: f64,
    /// Frame size and format, e.g. "7680x4320 RGBA8".
    pub frame: String,
    /// Per-frame timings.
    pub frames: Vec<FrameRecord>,
}

impl Report {
    /// Mean of a per-frame field over written frames, ms.
    pub fn mean_ms(&self, field: impl Fn(&FrameRecord) -> Option<f64>) -> Option<f64> {
        let v: Vec<f64> = self.frames.iter().filter_map(field).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }

    /// The end-of-run paragraph.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} frame{} ({}) written in {:.2} s, {:.2} frames/s, on the {} backend: {}.",
            self.frames_written,
            if self.frames_written == 1 { "" } else { "s" },
            self.frame,
            self.seconds,
            self.fps,
            self.backend,
            self.device
        );
        if let (Some(d), Some(p), Some(e)) = (
            self.mean_ms(|f| Some(f.decode_ms)),
            self.mean_ms(|f| Some(f.process_ms)),
            self.mean_ms(|f| Some(f.encode_ms)),
        ) {
            s += &format!(" Per frame: decode {d:.0} ms, process {p:.0} ms, encode {e:.0} ms");
            if let Some(g) = self.mean_ms(|f| f.gpu_ms) {
                s += &format!(" (GPU kernels {g:.2} ms)");
            }
            s += ".";
        }
        if !self.failures.is_empty() {
            s += &format!(" {} frame(s) failed.", self.failures.len());
        }
        if self.frames_skipped > 0 {
            s += &format!(" {} frame(s) not attempted.", self.frames_skipped);
        }
        s
    }
}
