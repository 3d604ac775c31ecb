//! The library's one error type.
//!
//! Every variant names the file or value at fault and the reason, in one
//! line, because the CLI prints `Display` as-is: a render-farm log should say
//! what broke without a backtrace. Variants are grouped by what a caller can
//! do about them: fix the arguments ([`Error::is_usage`]), or skip a frame.

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in framepipe.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A parameter is outside its allowed range (`invalid sigma -1 (expected 0 ≤ sigma ≤ 512)`).
    #[error("invalid {what} {value} (expected {expected})")]
    InvalidValue {
        /// Which parameter.
        what: String,
        /// The value as the user wrote it.
        value: String,
        /// The allowed range or syntax.
        expected: String,
    },
    /// A preset file could not be read or parsed.
    #[error("preset {path}: {reason}")]
    Preset {
        /// The preset file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A sequence pattern or frame range is unusable.
    #[error("{0}")]
    Sequence(String),
    /// Frames inside the requested range are absent on disk.
    #[error("{}: missing frame{} {}{}", .pattern, if .list.contains([',', '-']) { "s" } else { "" }, .list, .near.as_ref().map(|n| format!(" ({n})")).unwrap_or_default())]
    MissingFrames {
        /// The input pattern.
        pattern: String,
        /// Compact list of missing numbers, e.g. `5, 7-9`.
        list: String,
        /// A file that looks like one of the missing frames but is named
        /// otherwise (`shot_7.png is numbered with other padding: %d`).
        near: Option<String>,
    },
    /// An output file exists and overwriting was not allowed.
    #[error("{0}: output exists")]
    OutputExists(PathBuf),
    /// An output path is also one of the inputs.
    #[error("{0}: output path is also an input (a frame or the preset); refusing to overwrite a source")]
    OutputIsInput(PathBuf),
    /// A side file (report, chart) would land on a path the run already
    /// reads or writes.
    #[error("{path}: also {role}; choose another name")]
    PathClash {
        /// The side file.
        path: PathBuf,
        /// What else uses it (`an input frame`, `an output frame`).
        role: String,
    },
    /// An output would replace something that is not a plain file: a pipe,
    /// a device, a socket, or a link into `/dev` or `/proc` (`/dev/stdout`).
    #[error("{0}: not a plain file (a pipe, device or system link); name a file")]
    OutputNotFile(PathBuf),
    /// `--overwrite` would replace a file that is read-only: a mark of a
    /// file not to be replaced (an approved frame), as `cp` and FFmpeg's
    /// `-y` respect it.
    #[error("{0}: is read-only (or not this user's to write), so it is not replaced; make it writable to replace it")]
    OutputReadOnly(PathBuf),
    /// An output (frame, report) would replace a folder.
    #[error("{0}: names a folder; an output must be a file")]
    OutputIsFolder(PathBuf),
    /// An output's name is one the file system cannot hold (longer than
    /// its limit, 255 bytes on most): found before any frame is processed.
    #[error("{path}: cannot be an output name: {reason}")]
    OutputName {
        /// The name.
        path: PathBuf,
        /// The OS reason.
        reason: String,
    },
    /// The output folder cannot be created or written.
    #[error("{path}: output folder is not writable: {reason}")]
    OutputDir {
        /// The folder.
        path: PathBuf,
        /// The OS reason.
        reason: String,
    },
    /// A frame could not be decoded.
    #[error("{path}: cannot decode: {reason}")]
    Decode {
        /// The frame file.
        path: PathBuf,
        /// What the decoder reported.
        reason: String,
    },
    /// A frame could not be encoded or written.
    #[error("{path}: cannot write: {reason}")]
    Encode {
        /// The output file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A frame's size or pixel format differs from the sequence's first frame.
    #[error("{path}: frame is {got} but the sequence is {expected}")]
    FrameMismatch {
        /// The odd frame.
        path: PathBuf,
        /// Its size and format.
        got: String,
        /// The first frame's size and format.
        expected: String,
    },
    /// The GPU reported an error.
    #[error("gpu: {0}")]
    Gpu(String),
    /// A GPU was asked for (`--backend gpu`) and none could be opened.
    #[error("gpu: {0}")]
    NoGpu(String),
    /// A GPU allocation would cross the VRAM budget.
    #[error("vram budget: {0}")]
    Budget(String),
    /// A pipeline stage panicked; the run was stopped.
    #[error("{0}")]
    Panic(String),
    /// Writing to the output stream failed (the reader of a pipe went away).
    #[error("output stream: {0}")]
    Stream(String),

    /// A frame failed where a run needs every frame (a benchmark).
    #[error("frame {number} failed: {reason}")]
    FrameFailed {
        /// Its number.
        number: u64,
        /// Why.
        reason: String,
    },
    /// Work that was asked for and stopped before it started: a preview
    /// asked through a [`PreviewView`](crate::preview::PreviewView) whose
    /// engine's last handle went. (A cancelled run is not an error: its
    /// [`Report`](crate::Report) says `cancelled`.)
    #[error("cancelled")]
    Cancelled,
    /// A preview asked through a [`PreviewView`](crate::preview::PreviewView)
    /// that a later request of the same view replaced before it rendered.
    #[error("superseded by a later request of the same view")]
    Superseded,
    /// The OS would not start a thread (a process or container thread
    /// limit, `--threads` far beyond the cores).
    #[error("cannot start a thread for {what}: {source}")]
    Thread {
        /// What the thread was for.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Any other I/O failure, with the path it concerns.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Error {
    /// [`Error::Stream`] for a failed write to the output stream; a reader
    /// that went away (a closed pipe, `| head`) is said as that, not as
    /// the system's `Broken pipe (os error 32)`.
    pub(crate) fn stream(e: &std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::BrokenPipe => Error::Stream("its reader closed it (broken pipe)".into()),
            _ => Error::Stream(e.to_string()),
        }
    }

    /// Shorthand for [`Error::InvalidValue`]; an empty or blank value is
    /// shown quoted (`invalid size "" (expected …)`), not as a gap.
    pub fn invalid(what: impl Into<String>, value: impl ToString, expected: impl Into<String>) -> Self {
        let value = value.to_string();
        let value = if value.trim().is_empty() { format!("{value:?}") } else { value };
        Error::InvalidValue { what: what.into(), value, expected: expected.into() }
    }

    /// True when the error is about the arguments, preset or inputs as a
    /// whole (found before any frame is processed): the CLI exits with 2.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::InvalidValue { .. }
                | Error::Preset { .. }
                | Error::Sequence(_)
                | Error::MissingFrames { .. }
                | Error::OutputExists(_)
                | Error::OutputIsInput(_)
                | Error::PathClash { .. }
                | Error::OutputIsFolder(_)
                | Error::OutputNotFile(_)
                | Error::OutputName { .. }
                | Error::OutputDir { .. }
                | Error::OutputReadOnly(_)
                | Error::Budget(_)
                | Error::NoGpu(_)
        )
    }
}

/// `message` on one line (a log line's, an error's), its runs of white
/// space, line ends among them, one space each.
pub(crate) fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The message a panic carried (`panic!` with a literal or a format).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
