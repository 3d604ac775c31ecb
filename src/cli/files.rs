//! The files the command writes besides frames (reports, tables, charts)
//! and stdout: checked before a run, written whole after it.

use std::path::{Path, PathBuf};

use framepipe::io::OutputFormat;
use framepipe::{Error, Job};

/// A report named like a frame (`--timeline tl.png`) would be text under
/// an image's name, found later as a broken frame: refused up front.
pub(crate) fn check_report_name(flag: &str, path: &Path, kind: &str, ext: &str) -> Result<(), Error> {
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
pub(crate) fn refuse_stdout_into_input(job: &Job, prepared: &framepipe::PreparedJob) -> Result<(), Error> {
    let inputs = prepared.sequence().matched.iter().chain(&job.also_reads).map(PathBuf::as_path);
    refuse_stdout_onto(inputs, "an input")
}

/// Refuses stdout redirected to one of the run's output frames (`--json -
/// --overwrite > o/s_0003.png`): the frame's rename would replace the
/// report written there, without a word. A frame `--skip-existing` keeps
/// too: appended to (`>>`), it would be a finished frame broken.
pub(crate) fn refuse_stdout_into_output(prepared: &framepipe::PreparedJob) -> Result<(), Error> {
    let outputs = prepared.outputs().iter().chain(prepared.kept_outputs());
    refuse_stdout_onto(outputs.map(PathBuf::as_path), "an output frame")
}

/// Refuses stdout redirected to one of `files` (`kind`: an input, an
/// output frame), under any of its names.
pub(crate) fn refuse_stdout_onto<'a>(mut files: impl Iterator<Item = &'a Path>, kind: &str) -> Result<(), Error> {
    let Some(id) = stdout_file_id() else { return Ok(()) };
    match files.find(|p| framepipe::io::file_id(p) == Some(id)) {
        Some(p) => Err(Error::invalid(
            "stdout",
            format!("(redirected to {})", p.display()),
            format!("a pipe or a file that is not {kind}"),
        )),
        None => Ok(()),
    }
}

/// Refuses a report file that stdout is redirected to (`--json r.json
/// --overwrite > r.json`): the report is renamed into place at the end,
/// which would throw away everything written to stdout (the frames of
/// `-o -`, bench-pool's table).
pub(crate) fn refuse_report_on_stdout(flag: &str, path: &Path) -> Result<(), Error> {
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

/// Reports an error met after the work was done (a report that cannot be
/// written) and says whether there was one: such an error fails the run
/// rather than being a usage error. Not said while a signal stops the
/// process at once: its clean-up refuses new files, and the stop says
/// what happened.
pub(crate) fn failed_after_run(result: Result<(), Error>) -> bool {
    let stopping = || crate::signals::STOPPING_NOW.load(std::sync::atomic::Ordering::SeqCst);
    result
        .map_err(|e| {
            if !stopping() {
                note!("error: {e}")
            }
        })
        .is_err()
}

/// Whether `path` holds a report of an earlier run writing to `output` (a
/// JSON report naming it, or a timeline marked with it, by where it writes
/// however it was spelt: [`framepipe::sequence::output_identity`]): the
/// only existing report a resumed run replaces. Another run's, or any
/// other file, is kept. (A report of a build before the identity names
/// its output as typed: compared so.)
pub(crate) fn is_earlier_report(path: &Path, output: &str) -> bool {
    let identity = framepipe::sequence::output_identity(output);
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
        return second
            .is_some_and(|l| framepipe::timeline::marks(l, &identity) || framepipe::timeline::marks(l, output));
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
    report.is_some_and(|r| {
        is_report(&r)
            && match r.get("output_identity") {
                Some(id) => *id == identity,
                None => r["output"] == output,
            }
    })
}

/// A report to its file (whole or not at all), or to stdout for `-`: there
/// a reader that closed it before the end lost the report (a script reads
/// it whole), which fails the run as a full disk would.
pub(crate) fn write_report(path: &Path, text: &str, overwrite: bool) -> Result<(), Error> {
    if path == Path::new("-") {
        return write_stdout(text);
    }
    framepipe::io::write_file_atomic(path, text.as_bytes(), overwrite)
}

/// Writes `text` to stdout for a reader to look at (a listing, a table).
/// A reader that stopped reading (`| head`) got what it wanted: that ends
/// quietly; any other failure (`>/dev/full`) is an error naming stdout,
/// never a panic.
pub(crate) fn print_stdout(text: &str) -> Result<(), Error> {
    match write_stdout(text) {
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Writes `text` to stdout, whole or with an error naming stdout.
fn write_stdout(text: &str) -> Result<(), Error> {
    use std::io::Write as _;
    let write = || -> std::io::Result<()> {
        // (Anything printed before goes first.)
        std::io::stdout().flush()?;
        let mut out = stdout_writer();
        out.write_all(text.as_bytes())?;
        out.flush()
    };
    write().map_err(|source| Error::Io { path: "stdout".into(), source })
}

/// Standard output as a plain file: frames are large binary writes, which
/// `Stdout`'s line buffering would only scan for newlines.
pub(crate) fn stdout_writer() -> Box<dyn std::io::Write + Send> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        if let Ok(fd) = std::io::stdout().as_fd().try_clone_to_owned() {
            return Box::new(Timed(Waiting(std::fs::File::from(fd))));
        }
    }
    Box::new(Timed(std::io::stdout()))
}

/// When the write to stdout under way began (ms since [`write_clock`]'s
/// start, plus one), 0 when none is: how long a reader has left one
/// waiting, which is what a stopping stream gives a time limit, not the
/// frames still being made.
pub(crate) static WRITING_SINCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The milliseconds [`WRITING_SINCE`] counts, from the first look.
pub(crate) fn write_clock() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64 + 1
}

/// A writer whose writes under way are timed in [`WRITING_SINCE`], each
/// piece of a frame on its own: a slow reader that takes a frame in
/// bursts is taking it, only one that takes nothing leaves a write
/// waiting. A piece is at most [`PIECE`] bytes: a blocking pipe's write
/// returns only once all it was given is taken (an 8K frame over a slow
/// link: many seconds for a reader that never stopped).
struct Timed<W>(W);

/// The most bytes one timed write hands on ([`Timed`]).
const PIECE: usize = 1 << 20;

impl<W: std::io::Write> Timed<W> {
    fn timed<T>(&mut self, op: impl FnOnce(&mut W) -> T) -> T {
        use std::sync::atomic::Ordering::SeqCst;
        WRITING_SINCE.store(write_clock(), SeqCst);
        let r = op(&mut self.0);
        WRITING_SINCE.store(0, SeqCst);
        r
    }
}

impl<W: std::io::Write> std::io::Write for Timed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.timed(|w| w.write(&buf[..buf.len().min(PIECE)]))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.timed(|w| w.flush())
    }
}

/// A file descriptor that may have been left non-blocking by whoever made
/// it (a Python or Node parent's pipe): a full pipe answers EAGAIN, which
/// would end the stream part-way through a frame. A write waits for room
/// instead, as on a blocking pipe.
#[cfg(unix)]
struct Waiting(std::fs::File);

#[cfg(unix)]
impl std::io::Write for Waiting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd;
        loop {
            match self.0.write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let mut fd = libc::pollfd { fd: self.0.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
                    // SAFETY: one valid pollfd; an interrupted wait is tried again.
                    unsafe { libc::poll(&mut fd, 1, -1) };
                }
                r => return r,
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
