//! Encoding [`HostFrame`]s and writing them without ever leaving a partial
//! file: bytes go to a hidden temporary file in the output folder, which is
//! renamed over the final name only once complete.

use std::collections::BTreeSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder};

use super::{HostFrame, PixelFormat};
use crate::error::{Error, Result};

/// Output container, chosen from the output file's extension (or, for a
/// stream, named).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[non_exhaustive]
pub enum OutputFormat {
    /// Headerless packed RGBA, 8 bits (FFmpeg's `rawvideo` `rgba`) or 16
    /// bits little-endian (`rgba64le`), alpha always included: what a
    /// pipe into an encoder wants. Streams only.
    Raw,
    /// PNG, 8 or 16 bits.
    Png,
    /// Baseline JPEG, 8 bits, no alpha.
    Jpeg,
    /// Uncompressed TIFF, 8 or 16 bits. Files only (a TIFF stream cannot
    /// be split), so not offered by `--stream-format`.
    #[cfg_attr(feature = "cli", value(skip))]
    Tiff,
    /// QOI, 8 bits.
    Qoi,
}

impl OutputFormat {
    /// The format for a path's extension (case-insensitive).
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for a missing or unsupported extension.
    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        match ext.as_str() {
            _ if crate::sequence::numbered_extension(&ext) => Err(Error::invalid(
                "output",
                path.display(),
                "a name ending in .png, .jpg, .jpeg, .tif, .tiff or .qoi: its extension picks the format",
            )),
            "png" => Ok(OutputFormat::Png),
            "jpg" | "jpeg" => Ok(OutputFormat::Jpeg),
            "tif" | "tiff" => Ok(OutputFormat::Tiff),
            "qoi" => Ok(OutputFormat::Qoi),
            _ => Err(Error::invalid(
                "output extension",
                format!("{:?} in {}", ext, path.display()),
                "png, jpg, jpeg, tif, tiff or qoi",
            )),
        }
    }

    /// The `image` crate's name for the container; none for raw pixels.
    pub fn image_format(self) -> Option<image::ImageFormat> {
        match self {
            OutputFormat::Raw => None,
            OutputFormat::Png => Some(image::ImageFormat::Png),
            OutputFormat::Jpeg => Some(image::ImageFormat::Jpeg),
            OutputFormat::Tiff => Some(image::ImageFormat::Tiff),
            OutputFormat::Qoi => Some(image::ImageFormat::Qoi),
        }
    }

    /// Whether the container can store 16 bits per channel.
    pub fn supports_16bit(self) -> bool {
        matches!(self, OutputFormat::Png | OutputFormat::Tiff | OutputFormat::Raw)
    }

    /// Whether a grey frame can be stored as grey (one channel, or grey
    /// and alpha), where [`EncodeOptions::grey`] asks for it.
    pub fn stores_grey(self) -> bool {
        matches!(self, OutputFormat::Png | OutputFormat::Tiff | OutputFormat::Jpeg)
    }

    /// Whether a frame's alpha decides if its output has one: JPEG has
    /// none, a raw stream always carries it.
    pub fn alpha_per_frame(self) -> bool {
        !matches!(self, OutputFormat::Jpeg | OutputFormat::Raw)
    }

    /// Refuses a frame size the container cannot hold: QOI takes at most
    /// 400 million pixels, JPEG at most 65535 a side. Known from the first
    /// header, before anything is decoded or written.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] naming the size and the limit.
    pub fn check_size(self, width: u32, height: u32) -> Result<()> {
        let size = format!("{width}x{height}");
        match self {
            OutputFormat::Qoi if width as u64 * height as u64 > QOI_MAX_PIXELS => Err(Error::invalid(
                "frame size for QOI output",
                size,
                format!("at most {QOI_MAX_PIXELS} pixels, QOI's limit (write PNG or TIFF)"),
            )),
            OutputFormat::Jpeg if width.max(height) > 65535 => Err(Error::invalid(
                "frame size for JPEG output",
                size,
                "at most 65535 pixels a side, JPEG's limit (write PNG or TIFF)",
            )),
            _ => Ok(()),
        }
    }
}

/// The most pixels a QOI image holds (the format's own limit).
const QOI_MAX_PIXELS: u64 = 400_000_000;

/// PNG deflate effort. Measured on an 8K graded frame (in the design notes, kept outside this repository): fast
/// is 13x quicker than default for 12 % more bytes, so it is the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum PngCompression {
    /// Fastest deflate with adaptive filtering.
    #[default]
    Fast,
    /// zlib's default level.
    Default,
    /// Most deflate effort, slowest: the smallest files as a rule (on
    /// small, noisy frames fast's adaptive filters can win).
    Best,
}

/// How frames are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EncodeOptions {
    /// PNG deflate effort. By default, [`PngCompression::Fast`].
    pub png_compression: PngCompression,
    /// JPEG quality 1-100. By default, 95.
    pub jpeg_quality: u8,
    /// The sources are grey (one channel, or grey and alpha): a frame whose
    /// every pixel is still grey is written as grey, with its alpha, as it
    /// came (PNG, TIFF, JPEG; QOI and raw streams have no grey), not three
    /// times the size as RGB. A run sets it for each frame whose source is
    /// grey, where the grade keeps grey grey
    /// ([`OpGraph::keeps_grey`](crate::OpGraph::keeps_grey);
    /// [`PreparedJob::encode_for`](crate::PreparedJob::encode_for)); set
    /// in a job's options, for every frame. By default, false.
    pub grey: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions { png_compression: PngCompression::Fast, jpeg_quality: 95, grey: false }
    }
}

/// Encodes `frame` in memory, for a stream. [`OutputFormat::Raw`] costs
/// no copy: the frame's own bytes come back.
///
/// # Errors
/// [`Error::Encode`] naming `what` (the stream) and the reason;
/// [`Error::InvalidValue`] for a frame whose data is not its size.
pub fn encode_frame(frame: HostFrame, format: OutputFormat, options: &EncodeOptions, what: &Path) -> Result<Vec<u8>> {
    frame.check()?;
    if format == OutputFormat::Raw {
        let mut data = frame.data;
        if cfg!(target_endian = "big") && frame.format == PixelFormat::Rgba16 {
            for pair in data.chunks_exact_mut(2) {
                pair.swap(0, 1);
            }
        }
        return Ok(data);
    }
    let mut out = std::io::Cursor::new(Vec::new());
    encode(&frame, format, options, &mut out)
        .map_err(|e| Error::Encode { path: what.to_owned(), reason: super::decode::one_line(&e.to_string()) })?;
    Ok(out.into_inner())
}

/// The temporary outputs being written right now, so that an abrupt stop
/// can remove them; `None` once [`remove_partials`] has run, after which no
/// new one is created.
static LIVE: Mutex<Option<BTreeSet<PathBuf>>> = Mutex::new(Some(BTreeSet::new()));

fn live() -> std::sync::MutexGuard<'static, Option<BTreeSet<PathBuf>>> {
    crate::lock(&LIVE)
}

/// Scratch folders of this process (bench-pool's outputs), removed with the
/// partial outputs by [`remove_partials`]; `None` once it has run, after
/// which none is made.
static SCRATCH: Mutex<Option<BTreeSet<PathBuf>>> = Mutex::new(Some(BTreeSet::new()));

fn scratch() -> std::sync::MutexGuard<'static, Option<BTreeSet<PathBuf>>> {
    crate::lock(&SCRATCH)
}

/// Folders [`MadeDirs`] alive now hold, outermost first: an abrupt stop
/// removes those left empty, as their drops would have. `None` once
/// [`remove_partials`] has run, after which none is made.
static MADE: Mutex<Option<Vec<PathBuf>>> = Mutex::new(Some(Vec::new()));

fn made() -> std::sync::MutexGuard<'static, Option<Vec<PathBuf>>> {
    crate::lock(&MADE)
}

/// Why nothing more is made once [`remove_partials`] has run.
const STOPPING: &str = "the process is stopping";

/// Removes every temporary output this process is writing and stops new
/// ones from being created, for a process about to exit without unwinding
/// (a second Ctrl-C): nothing partial is left behind. Scratch folders
/// registered with [`ScratchDir`] go too, whole. Returns what was
/// removed. Outputs already renamed into place are complete and stay.
pub fn remove_partials() -> Removed {
    let mut live = live();
    let paths = live.take().unwrap_or_default();
    let partials = paths.iter().filter(|p| std::fs::remove_file(p).is_ok()).count();
    // Taken, not emptied: a folder another thread would make after this
    // (bench-pool's next run) is refused instead of left behind.
    let scratch_dirs =
        scratch().take().unwrap_or_default().iter().filter(|d| std::fs::remove_dir_all(d).is_ok()).count();
    for dir in made().take().unwrap_or_default().iter().rev() {
        // Fails, as it should, once the folder holds anything.
        let _ = std::fs::remove_dir(dir);
    }
    Removed { partials, scratch_dirs }
}

/// What [`remove_partials`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// Unfinished outputs (temporary files).
    pub partials: usize,
    /// Scratch folders, with the frames written there (bench-pool's runs).
    pub scratch_dirs: usize,
}

/// A temporary output's name: this, random letters and digits, then
/// [`TEMP_SUFFIX`]; hidden, and never an image name.
const TEMP_PREFIX: &str = ".framepipe-";
const TEMP_SUFFIX: &str = ".partial";
const TEMP_RANDOM: usize = 6;

/// Whether `name` is a temporary output's, as framepipe gives them: six
/// random letters or digits between [`TEMP_PREFIX`] and [`TEMP_SUFFIX`].
fn is_temp_name(name: &str) -> bool {
    let random = name.strip_prefix(TEMP_PREFIX).and_then(|n| n.strip_suffix(TEMP_SUFFIX));
    random.is_some_and(|r| r.len() == TEMP_RANDOM && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// How long a temporary output must have been left untouched before it
/// can be taken for a killed run's: a writer locks its file a moment after
/// creating it.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes the unfinished outputs (`.framepipe-*.partial`) that a run
/// killed outright (SIGKILL, a power cut: nothing it could catch) left in
/// `dir`: those no live process holds locked, as every writer does its
/// own, and untouched for 10 minutes (a writer's lock may not reach
/// another machine sharing the folder, NFS with local locks; a frame
/// encoded in memory before it is written leaves its file untouched that
/// long, and clocks differ). Only plain files: a pipe of the name would
/// block the open.
pub fn remove_stale_partials(dir: &Path) -> StalePartials {
    let Ok(entries) = std::fs::read_dir(dir) else { return StalePartials::default() };
    // Some(true): stale; Some(false): no live process holds it, but it is
    // too recent to be sure; None: not one to touch.
    let stale = |path: &Path| -> Option<bool> {
        // Only names of the form framepipe gives them: six random letters
        // or digits between the two.
        if !path.file_name().and_then(|n| n.to_str()).is_some_and(is_temp_name) {
            return None;
        }
        if !std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file()) {
            return None;
        }
        let file = std::fs::File::open(path).ok()?;
        let meta = file.metadata().ok().filter(|m| m.is_file())?;
        // Shared: it conflicts with a writer's exclusive lock all the same,
        // and needs no write access (NFS emulates flock with fcntl locks,
        // whose exclusive kind a read-only file cannot take).
        file.try_lock_shared().ok()?;
        let old = meta.modified().ok().and_then(|t| t.elapsed().ok());
        Some(old.is_some_and(|age| age >= STALE_AFTER))
    };
    let mut found = StalePartials::default();
    for path in entries.flatten().map(|e| e.path()) {
        match stale(&path) {
            Some(true) if std::fs::remove_file(&path).is_ok() => found.removed.push(path),
            Some(false) => found.recent.push(path),
            _ => {}
        }
    }
    found
}

/// What [`remove_stale_partials`] found.
#[derive(Debug, Default)]
pub struct StalePartials {
    /// Removed: no live process held them, untouched for 10 minutes.
    pub removed: Vec<PathBuf>,
    /// Kept: no process here holds them, but they are younger than that
    /// (a run just killed; or one on another machine sharing the folder).
    pub recent: Vec<PathBuf>,
}

/// The system's temporary folder, absolute (it is printed for the user to
/// find, from anywhere), and whether `TMPDIR` named it. An empty `TMPDIR`
/// counts as unset (`/tmp`), where [`std::env::temp_dir`] would give the
/// working folder: an 8K demo would land beside the user's files.
pub fn temp_root() -> (PathBuf, bool) {
    match std::env::var_os("TMPDIR") {
        Some(dir) if !dir.is_empty() => (std::path::absolute(&dir).unwrap_or_else(|_| dir.into()), true),
        Some(_) if cfg!(unix) => (PathBuf::from("/tmp"), false),
        _ => (std::env::temp_dir(), false),
    }
}

/// A temporary folder removed when dropped and, should the process be
/// stopped without unwinding, by [`remove_partials`].
pub struct ScratchDir(Option<tempfile::TempDir>);

impl ScratchDir {
    /// A new folder named `prefix…` in the system's temporary folder.
    ///
    /// # Errors
    /// [`Error::OutputDir`] naming the temporary folder when it cannot be
    /// made there (`TMPDIR` set to a folder that is not there): found
    /// before any work, as an output folder's trouble is.
    pub fn new(prefix: &str) -> Result<Self> {
        let (root, from_env) = temp_root();
        // The reason names where the folder came from: a user who set
        // `TMPDIR` long ago does not think of it as an output folder.
        let fail = |reason: String| {
            let reason = if from_env { format!("{reason} (the temporary folder, from TMPDIR)") } else { reason };
            Error::OutputDir { path: root.clone(), reason }
        };
        if in_system_folder(&root) {
            return Err(fail("it is a system folder (/proc, /dev)".into()));
        }
        // What is made there is named by frame patterns, which are text: a
        // name that is not would be spelt another way (U+FFFD), and the
        // frames written outside the folder that is removed.
        if root.to_str().is_none() {
            let expected = "a folder whose name is valid UTF-8, as frame patterns must be";
            return Err(Error::invalid("TMPDIR", root.display(), expected));
        }
        // Made and registered under one lock (and removed under it on
        // drop): an interrupt in between would leave it behind.
        let mut scratch = scratch();
        let registry = scratch.as_mut().ok_or_else(|| fail(STOPPING.into()))?;
        let dir = tempfile::Builder::new().prefix(prefix).tempdir_in(&root).map_err(|e| fail(plain(&e)))?;
        registry.insert(dir.path().to_path_buf());
        Ok(ScratchDir(Some(dir)))
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        self.0.as_ref().expect("there until dropped").path()
    }

    /// Keeps the folder and what it holds (no longer removed by a drop or
    /// by [`remove_partials`]), returning its path.
    pub fn keep(mut self) -> PathBuf {
        let mut scratch = scratch();
        let dir = self.0.take().expect("there until dropped");
        scratch.as_mut().map(|s| s.remove(dir.path()));
        dir.keep()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let mut scratch = scratch();
        if let Some(dir) = self.0.take() {
            scratch.as_mut().map(|s| s.remove(dir.path()));
            let _ = dir.close();
        }
    }
}

/// Takes a temporary output out of [`LIVE`] when it is renamed or dropped.
struct Registered {
    path: PathBuf,
    /// The file itself (a second handle), to find it by where a moved
    /// folder took it: its name in the registry, and `tempfile`'s removal
    /// of it, go by the path it was made at.
    file: Option<std::fs::File>,
    /// Renamed into place: the file is the output now, not a leftover.
    placed: bool,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(set) = live().as_mut() {
            set.remove(&self.path);
        }
        if !self.placed
            && let Some(file) = &self.file
        {
            remove_moved_temp(file);
        }
    }
}

/// Removes the temporary output `file` (open) where its folder was moved
/// while it was written (a shot folder moved to an archive mid-run): the
/// removal by its first path missed it, and it is still on disk under
/// its own kind of name (Linux, where the process's open files name their
/// paths; elsewhere it stays, and a later run removes it once stale).
fn remove_moved_temp(file: &std::fs::File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        if file.metadata().is_ok_and(|m| m.nlink() > 0)
            && let Ok(now) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            && now.file_name().and_then(|n| n.to_str()).is_some_and(is_temp_name)
        {
            let _ = std::fs::remove_file(now);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// A new temporary output in `dir` (`.framepipe-XXXXXX.partial`), locked
/// and registered for [`remove_partials`]: created and registered under
/// one lock, so an abrupt stop either sees it or prevents it. Bind the
/// pair in this order, so the file goes before it leaves the registry.
fn new_temp(dir: &Path) -> std::result::Result<(Registered, tempfile::NamedTempFile), String> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(TEMP_PREFIX).suffix(TEMP_SUFFIX).rand_bytes(TEMP_RANDOM);
    // Temporary files are private (0600) by default; an output is an
    // ordinary file, so ask for 0666 and let the umask decide, as `cp` does.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut live = live();
    let set = live.as_mut().ok_or_else(|| STOPPING.to_string())?;
    let tmp = builder.tempfile_in(dir).map_err(|e| plain(&e))?;
    // Held while it is written (the lock goes with the process): how a
    // later run tells a killed run's leftover from one being written
    // ([`remove_stale_partials`]). Where locks are not supported, none
    // is ever taken for stale.
    // Blocking: a scan holds its shared lock for an instant, and a write
    // that lost that race would go unlocked, taken for a killed run's.
    let _ = tmp.as_file().lock();
    set.insert(tmp.path().to_path_buf());
    let file = tmp.as_file().try_clone().ok();
    Ok((Registered { path: tmp.path().to_path_buf(), file, placed: false }, tmp))
}

/// Encodes `frame` into `path` atomically.
///
/// With `overwrite` false an existing file is never replaced, even one that
/// appears while encoding. 16-bit frames are written with 16 bits where the
/// container allows; JPEG and QOI get the frame rounded to 8 bits.
///
/// # Errors
/// [`Error::OutputExists`], or [`Error::Encode`] naming the path;
/// [`Error::InvalidValue`] for a frame whose data is not its size.
pub fn write_frame_atomic(
    frame: &HostFrame,
    path: &Path,
    format: OutputFormat,
    options: &EncodeOptions,
    overwrite: bool,
) -> Result<()> {
    write_frame_atomic_unless(frame, path, format, options, overwrite, &|| false).map(|_| ())
}

/// [`write_frame_atomic`], asking `abandon` once the frame is encoded and
/// before it takes its name: when it says so (the run failed meanwhile),
/// the file is dropped unnamed and `Ok(false)` says it was not written.
pub(crate) fn write_frame_atomic_unless(
    frame: &HostFrame,
    path: &Path,
    format: OutputFormat,
    options: &EncodeOptions,
    overwrite: bool,
    abandon: &dyn Fn() -> bool,
) -> Result<bool> {
    if format == OutputFormat::Raw {
        return Err(Error::Encode { path: path.to_owned(), reason: "raw output is for streams (-o -) only".into() });
    }
    frame.check()?;
    write_atomic(path, overwrite, abandon, |w| {
        encode(frame, format, options, w).map_err(|e| super::decode::one_line(&e.to_string()))
    })
}

/// Writes `bytes` (a report, a chart, a table) into `path` the way frames
/// are written: complete or not at all, never over an existing file unless
/// `overwrite`.
///
/// # Errors
/// [`Error::OutputExists`], or [`Error::Encode`] naming the path.
pub fn write_file_atomic(path: &Path, bytes: &[u8], overwrite: bool) -> Result<()> {
    write_atomic(path, overwrite, &|| false, |w| w.write_all(bytes).map_err(|e| e.to_string())).map(|_| ())
}

/// The path a file is (or will be) reached by once `..` and symbolic links
/// are resolved, so that two spellings of one file compare equal: the
/// longest part of it that exists, resolved, and the rest taken as written
/// (nothing that does not exist yet can be a link), `..` and `.` included.
pub fn resolve_path(path: &Path) -> PathBuf {
    use std::path::Component;
    if let Ok(c) = path.canonicalize() {
        return c;
    }
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let parts: Vec<Component> = absolute.components().collect();
    for split in (1..=parts.len()).rev() {
        let Ok(mut resolved) = parts[..split].iter().collect::<PathBuf>().canonicalize() else { continue };
        for part in &parts[split..] {
            match part {
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::CurDir => {}
                other => resolved.push(other),
            }
        }
        return resolved;
    }
    absolute
}

/// Checks, before any work, that a side file (a report, a chart) can be
/// written at `path` later: its folder exists or can be made and takes
/// files, and it is not an existing file unless `overwrite` (never a
/// folder). A run that takes minutes should not fail at its very end.
/// Keep the returned [`MadeDirs`] until the file is written.
///
/// # Errors
/// [`Error::OutputExists`], [`Error::OutputIsFolder`], [`Error::OutputDir`].
pub fn check_new_file(path: &Path, overwrite: bool) -> Result<MadeDirs> {
    refuse_folder_name(path)?;
    // What is there is checked first (an existing file is the error to
    // give); a name too long is only found once its folder exists.
    check_output_free(path, overwrite)?;
    let made = check_output_dir(parent_dir(path))?;
    check_output_free(path, overwrite)?;
    Ok(made)
}

/// Refuses a file name that can only name a folder (`report/`, `out.png/.`,
/// `x/..`): writing would find that out only at the end of a run, and a
/// pattern's trailing `/` would otherwise be dropped without a word.
///
/// # Errors
/// [`Error::OutputIsFolder`].
pub fn refuse_folder_name(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let name = path.as_os_str().to_string_lossy();
    if matches!(name.rsplit(std::path::is_separator).next(), Some("" | "." | "..")) {
        return Err(Error::OutputIsFolder(path.to_owned()));
    }
    Ok(())
}

/// Checks that an output may go to `path`: not a folder, nothing there (a
/// dangling link counts) unless `overwrite`, and never anything but a plain
/// file: outputs are renamed into place, which would replace a pipe, a
/// device or `/dev/stdout` with a file. A name the file system cannot
/// hold is refused here, not found at the rename after the frame's work.
///
/// # Errors
/// [`Error::OutputIsFolder`], [`Error::OutputNotFile`], [`Error::OutputExists`],
/// [`Error::OutputReadOnly`], [`Error::OutputName`].
pub fn check_output_free(path: &Path, overwrite: bool) -> Result<()> {
    let there = std::fs::symlink_metadata(path);
    if let Err(e) = &there
        && e.kind() == std::io::ErrorKind::InvalidFilename
    {
        return Err(Error::OutputName { path: path.to_owned(), reason: e.to_string() });
    }
    if there.is_ok() {
        if path.is_dir() {
            return Err(Error::OutputIsFolder(path.to_owned()));
        }
        // `/dev/stdout` is a link to a plain file when stdout is redirected
        // to one: the path, where a link points and where it ends all count.
        // `/dev/shm` is a RAM disk of plain files, written like any folder.
        let link = std::fs::read_link(path).ok().map(|to| parent_dir(path).join(to));
        let special = std::fs::metadata(path).is_ok_and(|m| !m.is_file());
        if special || link.as_deref().is_some_and(is_system) || in_system_folder(path) {
            return Err(Error::OutputNotFile(path.to_owned()));
        }
        if !overwrite {
            return Err(Error::OutputExists(path.to_owned()));
        }
        refuse_read_only(path)?;
    }
    Ok(())
}

/// Refuses to replace a read-only file (see [`Error::OutputReadOnly`]);
/// checked again just before the rename, as it may be made so mid-run.
/// Read-only is a file with no write bit at all (refused even for root:
/// an approved frame), or one this user may not write (owner bits
/// without `w`, another user's file): the rename would replace it all the
/// same, as the folder allows, where `cp` would fail.
fn refuse_read_only(path: &Path) -> Result<()> {
    let Ok(meta) = std::fs::metadata(path) else { return Ok(()) };
    if meta.is_file() && (meta.permissions().readonly() || !writable(path)) {
        return Err(Error::OutputReadOnly(path.to_owned()));
    }
    Ok(())
}

/// Whether this process may write `path` (`access(W_OK)`).
#[cfg(unix)]
fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return true };
    // SAFETY: a valid NUL-terminated path; access() only reads it.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

#[cfg(not(unix))]
fn writable(_: &Path) -> bool {
    true
}

/// Whether `path` is in `/proc` or `/dev` (not `/dev/shm`, a RAM disk of
/// plain files, written like any folder): files there are the system's.
fn is_system(path: &Path) -> bool {
    let p = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    p.starts_with("/proc") || (p.starts_with("/dev") && !p.starts_with("/dev/shm"))
}

/// [`is_system`] for `path` as written and as it resolves (through links
/// and `..`).
fn in_system_folder(path: &Path) -> bool {
    is_system(path) || is_system(&resolve_path(path))
}

/// Folders made for outputs that may end up holding nothing (a later check
/// failed, every frame failed): dropping this removes those still empty,
/// innermost first, so a refused command leaves no trace. Folders that got
/// a file stay, as do folders that were there before.
#[derive(Debug, Default)]
#[must_use = "the folders are removed again when this drops, if still empty"]
pub struct MadeDirs(Vec<PathBuf>);

impl MadeDirs {
    /// The folders made, outermost first.
    pub fn paths(&self) -> &[PathBuf] {
        &self.0
    }
}

impl Drop for MadeDirs {
    fn drop(&mut self) {
        let mut made = made();
        for dir in self.0.iter().rev() {
            // Fails, as it should, once the folder holds anything.
            let _ = std::fs::remove_dir(dir);
            if let Some(made) = made.as_mut()
                && let Some(i) = made.iter().rposition(|d| d == dir)
            {
                made.remove(i);
            }
        }
    }
}

/// Makes the output folder `dir` if needed and proves it takes files now,
/// rather than after the first decode. The folders it made are removed
/// again, if still empty, when the returned [`MadeDirs`] drops.
///
/// # Errors
/// [`Error::OutputDir`].
pub fn check_output_dir(dir: &Path) -> Result<MadeDirs> {
    use std::path::Component;
    let dir_error = |e: std::io::Error| Error::OutputDir { path: dir.to_owned(), reason: e.to_string() };
    // (The system's own answer there is no reason: ENOENT in `/proc`.)
    if in_system_folder(dir) {
        let reason = "it is a system folder (/proc, /dev)".to_string();
        return Err(Error::OutputDir { path: dir.to_owned(), reason });
    }
    // One component at a time, as written (`a/../renders` needs `a` to
    // exist for the system to reach `renders`), recording only what this
    // call made: not `renders` (the user's, reached through `a/..`), not a
    // folder another process made in the meantime. Recorded resolved, so a
    // later change of working folder cannot point the removal elsewhere.
    let mut made = MadeDirs::default();
    let mut at = PathBuf::new();
    for part in dir.components() {
        at.push(part);
        if !matches!(part, Component::Normal(_)) {
            continue;
        }
        // Made and recorded under one lock: an abrupt stop either sees it
        // or prevents it.
        // (The lock goes before `made` can drop, which takes it.)
        let created = self::made().as_mut().map(|registry| {
            std::fs::create_dir(&at).map(|()| {
                let path = resolve_path(&at);
                registry.push(path.clone());
                path
            })
        });
        let Some(created) = created else {
            return Err(Error::OutputDir { path: dir.to_owned(), reason: STOPPING.into() });
        };
        match created {
            Ok(path) => made.0.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && !at.is_dir() && at.exists() => {
                let reason = "it is a file".to_string();
                return Err(Error::OutputDir { path: at, reason });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            // Some network file systems refuse mkdir on a folder that is
            // there with another error.
            Err(_) if at.is_dir() => {}
            // `made` drops here, removing what was made so far.
            Err(e) => return Err(dir_error(e)),
        }
    }
    // A temporary output's own kind of file, so that a stop at once
    // removes it too (and a later run, if the process was killed).
    {
        let (_registered, _probe) =
            new_temp(dir).map_err(|reason| Error::OutputDir { path: dir.to_owned(), reason })?;
    }
    Ok(made)
}

/// The folder a file at `path` goes in: `.` for a bare file name.
pub fn parent_dir(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Fills a hidden temporary file beside `path` with `fill` and renames it
/// into place, unless `abandon` says otherwise once it is full (then
/// `Ok(false)`): a reader (or a crash) never sees a half-written file.
fn write_atomic(
    path: &Path,
    overwrite: bool,
    abandon: &dyn Fn() -> bool,
    fill: impl FnOnce(&mut BufWriter<&mut std::fs::File>) -> std::result::Result<(), String>,
) -> Result<bool> {
    let fail = |reason: String| Error::Encode { path: path.to_owned(), reason };
    // (`tmp` is dropped, deleting the file on failure, before it leaves
    // the registry.)
    let (mut registered, mut tmp) = new_temp(parent_dir(path)).map_err(fail)?;
    {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        fill(&mut w).map_err(fail)?;
        w.flush().map_err(|e| fail(e.to_string()))?;
    }
    // On disk before it takes its name: a crash or a power cut after the
    // rename must not leave a name on a file the disk never got whole (a
    // resumed run keeps any file that is there and reads as a frame).
    // Not for a file the run no longer wants (a stop syncs nothing).
    // On failure the temporary file is removed when `tmp` drops.
    if abandon() {
        return Ok(false);
    }
    tmp.as_file().sync_data().map_err(|e| fail(e.to_string()))?;
    if abandon() {
        return Ok(false);
    }
    if overwrite {
        refuse_read_only(path)?;
        // The file replaced keeps its permissions (a 0600 plate stays
        // private), as `cp` over an existing file does.
        if let Some(old) = std::fs::metadata(path).ok().filter(|m| m.is_file()) {
            // Its read, write and execute bits, not set-id ones.
            #[cfg(unix)]
            let permissions = {
                use std::os::unix::fs::PermissionsExt;
                std::fs::Permissions::from_mode(old.permissions().mode() & 0o777)
            };
            #[cfg(not(unix))]
            let permissions = old.permissions();
            let _ = tmp.as_file().set_permissions(permissions);
        }
        tmp.persist(path).map_err(|e| fail(plain(&e.error)))?;
    } else {
        match tmp.persist_noclobber(path) {
            Ok(_) => {}
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::OutputExists(path.to_owned()));
            }
            // A file system without an exclusive rename (some macOS network
            // volumes answer ENOTSUP, which tempfile passes on; on Linux it
            // tries a hard link itself): a hard link takes the name only if
            // it is free, as the rename would; the temporary name goes with
            // `e.file`. Without hard links either (FUSE mounts, SMB), the
            // name is reserved by an exclusive create.
            Err(e) => match std::fs::hard_link(e.file.path(), path) {
                Ok(()) => {}
                Err(l) if l.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(Error::OutputExists(path.to_owned()));
                }
                Err(_) => persist_over_placeholder(e.file, path).map_err(|r| match r {
                    // The same reason twice (a folder no longer writable)
                    // is said once.
                    Error::Encode { reason, .. } if reason == plain(&e.error) => fail(reason),
                    Error::Encode { reason, .. } => fail(format!("{} (then: {reason})", plain(&e.error))),
                    r => r,
                })?,
            },
        }
    }
    registered.placed = true;
    Ok(true)
}

/// An I/O error without the temporary file's name that `tempfile` adds
/// (` at path "….framepipe-x.partial"`): the message names the output.
fn plain(e: &std::io::Error) -> String {
    let said = e.to_string();
    match said.find(" at path \"") {
        Some(at) => said[..at].to_string(),
        None => said,
    }
}

/// Renames `tmp` to `path` where the file system can neither rename without
/// replacing nor hard-link: an exclusive create takes the name first (never
/// a file that is there, even one that appears meanwhile), and the finished
/// file is renamed over that empty placeholder, its own. A reader may see
/// the name empty for that instant; a crash in it leaves the placeholder,
/// which a resumed run refuses by name rather than keeps.
///
/// # Errors
/// [`Error::OutputExists`]; [`Error::Encode`] with the reason.
fn persist_over_placeholder(tmp: tempfile::NamedTempFile, path: &Path) -> Result<()> {
    let fail = |reason: String| Error::Encode { path: path.to_owned(), reason };
    match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(Error::OutputExists(path.to_owned())),
        Err(e) => return Err(fail(e.to_string())),
    }
    let placeholder = super::file_id(path);
    tmp.persist(path).map(|_| ()).map_err(|e| {
        // The placeholder is this run's: it goes (the temporary file goes
        // with `e.file`).
        remove_placeholder(path, placeholder);
        fail(plain(&e.error))
    })
}

/// Removes the empty placeholder this run made at `path` (identity
/// `placeholder`), only while the name still holds it: another run's
/// `--overwrite` may have put its finished frame there meanwhile, which is
/// never empty, and is kept.
fn remove_placeholder(path: &Path, placeholder: Option<(u64, u64)>) {
    let still_ours = std::fs::symlink_metadata(path)
        .is_ok_and(|m| m.is_file() && m.len() == 0 && super::file_id(path) == placeholder);
    if still_ours {
        let _ = std::fs::remove_file(path);
    }
}

fn encode<W: Write + std::io::Seek>(
    frame: &HostFrame,
    format: OutputFormat,
    options: &EncodeOptions,
    w: &mut W,
) -> image::ImageResult<()> {
    let (width, height) = (frame.width, frame.height);
    let sixteen = frame.format == PixelFormat::Rgba16 && format.supports_16bit();
    let alpha = frame.has_alpha && format != OutputFormat::Jpeg;
    let grey = options.grey && format.stores_grey();
    let (bytes, color) = match grey.then(|| pack_grey(frame, sixteen, alpha)).flatten() {
        Some((bytes, color)) => (std::borrow::Cow::Owned(bytes), color),
        None => pack(frame, sixteen, alpha),
    };
    match format {
        OutputFormat::Png => {
            let compression = match options.png_compression {
                PngCompression::Fast => CompressionType::Fast,
                PngCompression::Default => CompressionType::Default,
                PngCompression::Best => CompressionType::Best,
            };
            PngEncoder::new_with_quality(w, compression, FilterType::Adaptive).write_image(&bytes, width, height, color)
        }
        OutputFormat::Jpeg => image::codecs::jpeg::JpegEncoder::new_with_quality(w, options.jpeg_quality)
            .write_image(&bytes, width, height, color),
        // Into the file as it is encoded (the encoder seeks back to write
        // its offsets): not built whole in memory first, a copy the size
        // of the frame per encoder.
        OutputFormat::Tiff => encode_tiff_into(w, &bytes, (width, height), color, BIG_TIFF_FROM)
            .map_err(|e| image::ImageError::IoError(std::io::Error::other(e.to_string()))),
        OutputFormat::Qoi => image::codecs::qoi::QoiEncoder::new(w).write_image(&bytes, width, height, color),
        OutputFormat::Raw => {
            w.write_all(&frame.data)?;
            Ok(())
        }
    }
}

/// Frames from this many bytes are written as BigTIFF: a classic TIFF's
/// offsets are 32 bits, so it holds less than 4 GiB (a 32768x16384 16-bit
/// RGBA frame is 4 GiB). Readers of TIFF (libtiff, OpenImageIO, `tiff`)
/// read both; smaller frames stay classic, which every reader takes.
const BIG_TIFF_FROM: u64 = (1 << 32) - (1 << 20);

/// [`encode_tiff_into`] memory, BigTIFF from `big` bytes of samples
/// (tests lower it).
#[cfg(test)]
fn encode_tiff_from(bytes: &[u8], size: (u32, u32), color: ExtendedColorType, big: u64) -> tiff::TiffResult<Vec<u8>> {
    let mut cursor = std::io::Cursor::new(Vec::with_capacity(bytes.len() + 4096));
    encode_tiff_into(&mut cursor, bytes, size, color, big)?;
    Ok(cursor.into_inner())
}

/// An uncompressed TIFF of RGB, RGBA, grey or grey-alpha samples, 8 or 16
/// bits, written into `w` (which the encoder seeks); BigTIFF from `big`
/// bytes of samples. Through the `tiff` crate rather than `image`, to
/// mark the last sample as unassociated alpha (ExtraSamples 2, as TIFF
/// 6.0 asks): without the tag, readers such as libtiff do not take it as
/// alpha.
fn encode_tiff_into<W: Write + std::io::Seek>(
    w: &mut W,
    bytes: &[u8],
    (width, height): (u32, u32),
    color: ExtendedColorType,
    big: u64,
) -> tiff::TiffResult<()> {
    use tiff::encoder::{TiffEncoder, TiffKind, TiffValue, colortype};
    use tiff::tags::ExtraSamples;
    /// With `alpha`, a grey type gets its alpha as an extra sample; an RGBA
    /// type counts its own and only needs the tag.
    fn write<C: colortype::ColorType, K: TiffKind, W: std::io::Write + std::io::Seek>(
        mut tiff: TiffEncoder<W, K>,
        data: &[C::Inner],
        (width, height): (u32, u32),
        alpha: bool,
    ) -> tiff::TiffResult<()>
    where
        [C::Inner]: TiffValue,
    {
        let mut image = tiff.new_image::<C>(width, height)?;
        if alpha && C::BITS_PER_SAMPLE.len() == 1 {
            image.extra_samples(&[ExtraSamples::UnassociatedAlpha])?;
        } else if alpha {
            image
                .encoder()
                .write_tag(tiff::tags::Tag::ExtraSamples, &[ExtraSamples::UnassociatedAlpha.to_u16()][..])?;
        }
        image.write_data(data)
    }
    fn put<C: colortype::ColorType, W: Write + std::io::Seek>(
        w: &mut W,
        data: &[C::Inner],
        size: (u32, u32),
        alpha: bool,
        big: u64,
    ) -> tiff::TiffResult<()>
    where
        [C::Inner]: TiffValue,
    {
        if std::mem::size_of_val(data) as u64 >= big {
            write::<C, _, _>(TiffEncoder::new_big(w)?, data, size, alpha)
        } else {
            write::<C, _, _>(TiffEncoder::new(w)?, data, size, alpha)
        }
    }
    let size = (width, height);
    use ExtendedColorType as C;
    if matches!(color, C::Rgb8 | C::Rgba8 | C::L8 | C::La8) {
        return match color {
            C::Rgba8 => put::<colortype::RGBA8, _>(w, bytes, size, true, big),
            C::L8 | C::La8 => put::<colortype::Gray8, _>(w, bytes, size, color == C::La8, big),
            _ => put::<colortype::RGB8, _>(w, bytes, size, false, big),
        };
    }
    // Native-endian samples, as the frame holds them (copied only if the
    // bytes are not aligned for u16).
    let words: std::borrow::Cow<'_, [u16]> = match bytemuck::try_cast_slice(bytes) {
        Ok(words) => words.into(),
        Err(_) => bytemuck::pod_collect_to_vec(bytes).into(),
    };
    match color {
        C::Rgba16 => put::<colortype::RGBA16, _>(w, &words, size, true, big),
        C::L16 | C::La16 => put::<colortype::Gray16, _>(w, &words, size, color == C::La16, big),
        _ => put::<colortype::RGB16, _>(w, &words, size, false, big),
    }
}

/// Grey (and alpha) samples of a frame that is grey, at the depth [`pack`]
/// would give: its green, the channel nearest luma; `None` for a frame with
/// any color. Grey is R, G and B within one step of each other: the ops
/// keep a grey pixel grey, but fused into one matrix in f32 (exposure,
/// contrast, saturation) each row rounds its own way, so a grey source
/// comes back with channels one step apart here and there, the same
/// within the tolerance the kernels are held to.
fn pack_grey(frame: &HostFrame, sixteen: bool, alpha: bool) -> Option<(Vec<u8>, ExtendedColorType)> {
    let channel = frame.format.bytes_per_pixel() / 4;
    let pixels = frame.data.chunks_exact(4 * channel);
    let grey = |px: &[u8]| match channel {
        1 => px[0].abs_diff(px[1]) <= 1 && px[2].abs_diff(px[1]) <= 1,
        _ => {
            let at = |c: usize| u16::from_ne_bytes([px[2 * c], px[2 * c + 1]]);
            at(0).abs_diff(at(1)) <= 1 && at(2).abs_diff(at(1)) <= 1
        }
    };
    if !pixels.clone().all(grey) {
        return None;
    }
    let color = match (sixteen, alpha) {
        (true, true) => ExtendedColorType::La16,
        (true, false) => ExtendedColorType::L16,
        (false, true) => ExtendedColorType::La8,
        (false, false) => ExtendedColorType::L8,
    };
    let keep = [Some(1), alpha.then_some(3)];
    let mut out = Vec::with_capacity(frame.data.len() / 4 * if alpha { 2 } else { 1 });
    for px in pixels {
        for c in keep.iter().flatten() {
            let sample = &px[c * channel..(c + 1) * channel];
            match (sixteen, channel) {
                (false, 2) => {
                    // Round to nearest, as `pack` does.
                    let v = u16::from_ne_bytes([sample[0], sample[1]]) as u32;
                    out.push(((v * 255 + 32767) / 65535) as u8);
                }
                _ => out.extend_from_slice(sample),
            }
        }
    }
    Some((out, color))
}

/// Repacks RGBA to what the encoder takes: drop alpha where not wanted, and
/// round 16 to 8 bits where the container cannot hold 16.
fn pack(frame: &HostFrame, sixteen: bool, alpha: bool) -> (std::borrow::Cow<'_, [u8]>, ExtendedColorType) {
    use std::borrow::Cow;
    let channels = if alpha { 4 } else { 3 };
    let color = match (sixteen, alpha) {
        (true, true) => ExtendedColorType::Rgba16,
        (true, false) => ExtendedColorType::Rgb16,
        (false, true) => ExtendedColorType::Rgba8,
        (false, false) => ExtendedColorType::Rgb8,
    };
    if alpha && (sixteen || frame.format == PixelFormat::Rgba8) {
        return (Cow::Borrowed(&frame.data), color);
    }
    // Dropping alpha at the same depth (the common RGB output): copy the
    // first three channels of every pixel.
    let stride = frame.format.bytes_per_pixel();
    if !alpha && (sixteen || frame.format == PixelFormat::Rgba8) {
        let keep = stride / 4 * 3;
        let mut out = Vec::with_capacity(frame.data.len() / 4 * 3);
        for px in frame.data.chunks_exact(stride) {
            out.extend_from_slice(&px[..keep]);
        }
        return (Cow::Owned(out), color);
    }
    let pixels = frame.width as usize * frame.height as usize;
    let bytes_per_channel = if sixteen { 2 } else { 1 };
    let mut out = Vec::with_capacity(pixels * channels * bytes_per_channel);
    for p in 0..pixels {
        for c in 0..channels {
            let v = frame.channel(p * 4 + c);
            match (sixteen, frame.format) {
                (true, _) => out.extend_from_slice(&v.to_ne_bytes()),
                (false, PixelFormat::Rgba8) => out.push(v as u8),
                // Round to nearest: v * 255 / 65535, exact in integers.
                (false, PixelFormat::Rgba16) => out.push(((v as u32 * 255 + 32767) / 65535) as u8),
            }
        }
    }
    (Cow::Owned(out), color)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The last resort of a file system with neither an exclusive rename
    /// nor hard links: the name is taken only if free, and the file lands
    /// whole under it.
    #[test]
    fn a_placeholder_takes_a_free_name_and_never_a_file_that_is_there() {
        use std::io::Write as _;
        let t = tempfile::tempdir().unwrap();
        let made = |bytes: &[u8]| {
            let mut f = tempfile::NamedTempFile::new_in(t.path()).unwrap();
            f.write_all(bytes).unwrap();
            f
        };
        let path = t.path().join("o_0001.png");
        persist_over_placeholder(made(b"frame"), &path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"frame");
        let e = persist_over_placeholder(made(b"other"), &path).unwrap_err();
        assert!(matches!(e, Error::OutputExists(_)), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"frame", "the file there is kept");
        let names: Vec<_> = std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["o_0001.png"], "the refused file's temporary name went with it");
    }

    /// A folder moved while a frame was written into it (to an archive,
    /// mid-run): the write fails, and its temporary file goes from where
    /// the folder went, not left there whole.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_temporary_output_goes_from_a_folder_moved_while_it_was_written() {
        let t = tempfile::tempdir().unwrap();
        let (dir, moved) = (t.path().join("shot"), t.path().join("archive"));
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("o_0001.png");
        let e = write_atomic(&path, false, &|| false, |w| {
            w.write_all(b"a whole frame").map_err(|e| e.to_string())?;
            std::fs::rename(&dir, &moved).map_err(|e| e.to_string())
        })
        .unwrap_err();
        assert!(matches!(e, Error::Encode { .. }), "{e}");
        let left: Vec<_> = std::fs::read_dir(&moved).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// A placeholder whose rename failed goes; a frame another run put
    /// under its name meanwhile stays.
    #[test]
    fn only_the_runs_own_empty_placeholder_is_removed() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("o_0001.png");
        std::fs::write(&path, b"").unwrap();
        remove_placeholder(&path, crate::io::file_id(&path));
        assert!(!path.exists(), "the run's own placeholder goes");
        std::fs::write(&path, b"").unwrap();
        let mine = crate::io::file_id(&path);
        let theirs = t.path().join("theirs.png");
        std::fs::write(&theirs, b"finished frame").unwrap();
        std::fs::rename(&theirs, &path).unwrap();
        remove_placeholder(&path, mine);
        assert_eq!(std::fs::read(&path).unwrap(), b"finished frame", "another run's frame is kept");
    }

    #[test]
    fn only_a_killed_runs_unfinished_outputs_are_removed() {
        let t = tempfile::tempdir().unwrap();
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        let file = |name: &str, old: bool| {
            let f = std::fs::File::create(t.path().join(name)).unwrap();
            f.set_len(100).unwrap();
            if old {
                f.set_modified(hour_ago).unwrap();
            }
            f
        };
        file(".framepipe-AbC123.partial", true);
        file(".framepipe-fresh1.partial", false);
        // Not framepipe's form: a user's file that happens to match the glob.
        file(".framepipe-my notes.partial", true);
        let held = file(".framepipe-held42.partial", true);
        held.lock().unwrap();
        file("notes.partial", true);
        file(".framepipe-notes.txt", true);
        // A pipe of the form: never opened (that would block), never removed.
        #[cfg(unix)]
        {
            let fifo = std::ffi::CString::new(t.path().join(".framepipe-fifo01.partial").to_str().unwrap()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        }
        let found = remove_stale_partials(t.path());
        assert_eq!(found.removed, [t.path().join(".framepipe-AbC123.partial")]);
        assert_eq!(found.recent, [t.path().join(".framepipe-fresh1.partial")], "said, not removed");
        let mut left: Vec<_> = std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        let mut kept = vec![".framepipe-fresh1.partial", ".framepipe-held42.partial", ".framepipe-my notes.partial"];
        if cfg!(unix) {
            kept.insert(0, ".framepipe-fifo01.partial");
        }
        assert_eq!(left, [&kept[..], &[".framepipe-notes.txt", "notes.partial"]].concat());
        // A file being written is held by its writer.
        let busy = t.path().join("frame.png");
        let frame = HostFrame::new(4, 4, PixelFormat::Rgba8, true);
        write_atomic(&busy, false, &|| false, |w| {
            let partial = std::fs::read_dir(t.path()).unwrap().flatten().find(|e| {
                let name = e.file_name().into_string().unwrap();
                name.starts_with(".framepipe-") && name.ends_with(".partial") && !left.iter().any(|l| *l == *name)
            });
            let partial = std::fs::File::open(partial.expect("the temporary file").path()).unwrap();
            assert!(partial.try_lock().is_err(), "locked while written");
            encode(&frame, OutputFormat::Png, &EncodeOptions::default(), w).map_err(|e| e.to_string())
        })
        .unwrap();
        drop(held);
    }

    #[test]
    fn tiff_alpha_is_marked_as_alpha_and_reads_back() {
        let t = tempfile::tempdir().unwrap();
        let mut x = 0x9e37_79b9_u32 ^ std::process::id();
        for (format, has_alpha) in
            [(PixelFormat::Rgba8, true), (PixelFormat::Rgba16, true), (PixelFormat::Rgba16, false)]
        {
            let mut frame = HostFrame::new(7, 5, format, has_alpha);
            for b in frame.data.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            if !has_alpha {
                (0..frame.channel_count()).filter(|i| i % 4 == 3).for_each(|i| frame.set_channel(i, u16::MAX));
            }
            let path = t.path().join(format!("{format}-{has_alpha}.tif"));
            write_frame_atomic(&frame, &path, OutputFormat::Tiff, &EncodeOptions::default(), false).unwrap();
            let file = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
            let mut tiff = tiff::decoder::Decoder::new(file).unwrap();
            let extra = tiff.find_tag_unsigned_vec::<u16>(tiff::tags::Tag::ExtraSamples).unwrap();
            assert_eq!(extra, has_alpha.then(|| vec![2]), "{format} alpha {has_alpha}");
            let back = crate::io::decode_file(&path, &Default::default()).unwrap();
            assert_eq!((back.format, back.has_alpha, &back.data), (format, has_alpha, &frame.data));
        }
    }

    /// Frames too large for a classic TIFF's 32-bit offsets are BigTIFF
    /// (here from 0 bytes), which reads back alike, alpha marked.
    #[test]
    fn big_frames_are_written_as_bigtiff_and_read_back() {
        let t = tempfile::tempdir().unwrap();
        let mut x = 0x2545_f491_u32 ^ std::process::id();
        let bytes: Vec<u8> = (0..9 * 4 * 2 * 4)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let (classic, big) = (
            encode_tiff_from(&bytes, (9, 4), ExtendedColorType::Rgba16, BIG_TIFF_FROM).unwrap(),
            encode_tiff_from(&bytes, (9, 4), ExtendedColorType::Rgba16, 0).unwrap(),
        );
        let version = |tiff: &[u8]| u16::from_ne_bytes([tiff[2], tiff[3]]);
        assert_eq!((version(&classic), version(&big)), (42, 43), "42 is classic TIFF, 43 BigTIFF");
        let path = t.path().join("big.tif");
        std::fs::write(&path, &big).unwrap();
        let back = crate::io::decode_file(&path, &Default::default()).unwrap();
        assert_eq!((back.width, back.height, back.format, back.has_alpha), (9, 4, PixelFormat::Rgba16, true));
        assert_eq!(back.data, bytes);
    }

    #[test]
    fn a_frame_whose_data_is_not_its_size_is_an_error_not_a_panic() {
        let t = tempfile::tempdir().unwrap();
        let mut frame = HostFrame::new(64, 64, PixelFormat::Rgba8, true);
        frame.data.truncate(100);
        let path = t.path().join("short.png");
        let e = write_frame_atomic(&frame, &path, OutputFormat::Png, &EncodeOptions::default(), false).unwrap_err();
        assert_eq!(e.to_string(), "invalid frame data 100 bytes (expected 16384 bytes for 64x64 RGBA8)");
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0, "nothing written");
        for format in [OutputFormat::Png, OutputFormat::Raw] {
            assert!(encode_frame(frame.clone(), format, &EncodeOptions::default(), &path).is_err(), "{format:?}");
        }
    }

    #[test]
    fn only_folders_this_check_made_are_removed() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        std::fs::create_dir(t.path().join("renders")).unwrap();
        // Through a missing folder to an existing, empty one of the user's.
        let made = check_output_dir(&t.path().join("gone/../renders/new/deeper")).unwrap();
        let expected = [root.join("gone"), root.join("renders/new"), root.join("renders/new/deeper")];
        assert_eq!(made.paths(), expected);
        drop(made);
        assert!(t.path().join("renders").is_dir() && !t.path().join("renders/new").exists());
        assert!(!t.path().join("gone").exists());
        // A folder that got a file stays.
        let made = check_output_dir(&t.path().join("kept")).unwrap();
        std::fs::write(t.path().join("kept/frame.png"), b"x").unwrap();
        drop(made);
        assert!(t.path().join("kept/frame.png").exists());
    }

    #[test]
    fn one_file_spelled_two_ways_resolves_to_one_path() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        // Through folders that do not exist (yet).
        assert_eq!(resolve_path(&t.path().join("new/../b.csv")), root.join("b.csv"));
        assert_eq!(resolve_path(&t.path().join("a/./b/../c.json")), root.join("a/c.json"));
        // Through a link that does.
        std::fs::create_dir(t.path().join("real")).unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(t.path().join("real"), t.path().join("link")).unwrap();
            assert_eq!(resolve_path(&t.path().join("link/new/../r.txt")), root.join("real/r.txt"));
        }
    }

    #[test]
    fn pack_keeps_or_drops_channels_and_depth() {
        for format in [PixelFormat::Rgba8, PixelFormat::Rgba16] {
            let mut f = HostFrame::new(3, 2, format, false);
            for i in 0..f.channel_count() {
                f.set_channel(i, ((i as u32 * 4111) % (format.max_value() as u32 + 1)) as u16);
            }
            for (sixteen, alpha) in [(false, false), (false, true), (true, false), (true, true)] {
                if sixteen && format == PixelFormat::Rgba8 {
                    continue;
                }
                let (bytes, _) = pack(&f, sixteen, alpha);
                let channels = if alpha { 4 } else { 3 };
                let mut i = 0;
                for p in 0..6 {
                    for c in 0..channels {
                        let v = f.channel(p * 4 + c) as u32;
                        let got = if sixteen {
                            let g = u16::from_ne_bytes([bytes[i], bytes[i + 1]]) as u32;
                            i += 2;
                            g
                        } else {
                            i += 1;
                            bytes[i - 1] as u32
                        };
                        let want = match (sixteen, format) {
                            (false, PixelFormat::Rgba16) => (v * 255 + 32767) / 65535,
                            _ => v,
                        };
                        assert_eq!(got, want, "{format} sixteen {sixteen} alpha {alpha} pixel {p} channel {c}");
                    }
                }
                assert_eq!(i, bytes.len());
            }
        }
    }
}
