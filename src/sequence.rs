//! Frame sequences: patterns, frame-range specs and scanning the disk.
//!
//! Three ways to name a sequence, as compositing and farm tools accept them:
//! a printf pattern (`shot_%04d.png`), a hash pattern (`shot.####.png`, one
//! `#` per digit) or a directory whose image files share one name with a
//! varying number. Frame numbers are whatever is on disk (1001 is as good a
//! start as 0); a `--frames` spec picks a subset.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};

/// Image extensions recognised when scanning a directory.
const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "tif", "tiff", "qoi"];

/// A file-name pattern with one frame-number field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FramePattern {
    dir: PathBuf,
    prefix: String,
    suffix: String,
    /// Minimum digits; numbers are zero-padded to it. 0 or 1: unpadded.
    pad: usize,
    original: String,
}

impl FramePattern {
    /// Parses `dir/name_%04d.ext`, `name_%d.ext` or `name.####.ext`.
    ///
    /// # Errors
    /// [`Error::Sequence`] when the file name has no frame field or more than one.
    pub fn parse(pattern: &str) -> Result<Self> {
        let path = Path::new(pattern);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::Sequence(format!("{pattern}: not a file pattern")))?;
        // `%%` is a literal `%` in the folders too, as FFmpeg reads it.
        let dir = path.parent().map(|d| PathBuf::from(d.to_string_lossy().replace("%%", "%"))).unwrap_or_default();
        // Beside a field, a `%` must be `%%` (as printf and FFmpeg read a
        // pattern); a name with no field is a plain file name, `%` and all.
        if let Some(at) = stray_percent(name) {
            let at = name[..at].chars().count() + 1;
            return Err(Error::Sequence(format!(
                "{pattern}: the % at character {at} of {name:?} is not a frame number field (%04d, %d or ####; %% for a literal %)"
            )));
        }
        let mut fields = find_fields(name);
        // Beside one printf field, `#` is a literal (`take#2_%04d.png`), as
        // FFmpeg reads it: `#` is a field only where no `%d` is.
        let printf = |f: &(usize, usize, usize)| name.as_bytes()[f.0] == b'%';
        if fields.iter().filter(|f| printf(f)).count() == 1 {
            fields.retain(printf);
        }
        // A `%04d` in a folder that is not there is a second field, not a
        // name to make (a folder that exists is what it is: `20%desat/`).
        let folder = path.parent().map(|d| d.to_string_lossy().into_owned()).unwrap_or_default();
        if fields.len() == 1 && find_fields(&folder).iter().any(|f| folder.as_bytes()[f.0] == b'%') && !dir.exists() {
            return Err(Error::Sequence(format!(
                "{pattern}: a frame number field in a folder's name as well as the file's (%% for a literal %)"
            )));
        }
        match fields.as_slice() {
            // u64 frame numbers have at most 20 digits; a wider pad is a
            // typo, and would only make names the file system refuses.
            [(_, _, pad)] if *pad > MAX_PAD => Err(Error::Sequence(format!(
                "{pattern}: frame number field pads to {} digits (at most {MAX_PAD})",
                if *pad == usize::MAX { "too many".to_string() } else { pad.to_string() }
            ))),
            [(start, end, pad)] => Ok(FramePattern {
                dir,
                prefix: name[..*start].replace("%%", "%"),
                suffix: name[*end..].replace("%%", "%"),
                pad: *pad,
                original: pattern.to_string(),
            }),
            [] if path.parent().is_some_and(|d| !find_fields(&d.to_string_lossy()).is_empty()) => Err(Error::Sequence(
                format!("{pattern}: the frame number field must be in the file name, not in a folder's"),
            )),
            [] => Err(Error::Sequence(format!("{pattern}: no frame number field (use %04d, %d or ####)"))),
            _ => Err(Error::Sequence(format!("{pattern}: more than one frame number field"))),
        }
    }

    /// The file name with its frame field written one way (`%d` unpadded,
    /// `%0Nd` padded; `#` and `####` alike), `%` escaped.
    fn canonical_name(&self) -> String {
        let field = if self.pad > 1 { format!("%0{}d", self.pad) } else { "%d".into() };
        format!("{}{field}{}", self.prefix.replace('%', "%%"), self.suffix.replace('%', "%%"))
    }

    /// The output for files named `name` (a pattern, `shot_%04d.png`, or
    /// one file's name; either may start with folders) in the folder
    /// `dir`: in a pattern the folder's `%` is escaped, so that a
    /// temporary folder under a `TMPDIR` of any name holds what it was
    /// meant to (one file's name is taken as written).
    pub fn in_dir(dir: &Path, name: &str) -> String {
        if !Self::is_pattern(name) {
            return dir.join(name).display().to_string();
        }
        let dir = dir.display().to_string().replace('%', "%%");
        format!("{dir}{}{name}", std::path::MAIN_SEPARATOR)
    }

    /// Whether a string contains a frame-number field at all.
    pub fn is_pattern(s: &str) -> bool {
        let name = Path::new(s).file_name().and_then(|n| n.to_str()).unwrap_or("");
        !find_fields(name).is_empty()
    }

    /// The path of frame `n`.
    pub fn path(&self, n: u64) -> PathBuf {
        self.dir.join(format!("{}{:0width$}{}", self.prefix, n, self.suffix, width = self.pad))
    }

    /// The folder the frames live in (`.` when the pattern has none).
    pub fn dir(&self) -> &Path {
        if self.dir.as_os_str().is_empty() { Path::new(".") } else { &self.dir }
    }

    /// Why a file in the pattern's folder that looks like one of its frames
    /// is not: numbered with other padding (`s_1.png` for `s_%04d.png`), or
    /// named in other letter case (`S_0001.PNG`), of the numbers `wanted`
    /// takes. For the "no frames match" and "missing frames" errors,
    /// which alone leave the user guessing.
    fn near_miss(&self, wanted: impl Fn(u64) -> bool) -> Option<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(self.dir()).ok()?.flatten().filter_map(|e| e.file_name().into_string().ok()).collect();
        names.sort();
        let (prefix, suffix) = (self.prefix.to_lowercase(), self.suffix.to_lowercase());
        let numbered = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
        let wanted = |digits: &str| digits.parse().is_ok_and(&wanted);
        names.iter().filter(|name| self.number_of(name).is_none()).find_map(|name| {
            if let Some(digits) = self.digits_of(name).filter(|d| wanted(d)) {
                let field = if digits.len() > 1 && digits.starts_with('0') {
                    format!("%0{}d", digits.len())
                } else {
                    "%d".into()
                };
                return Some(format!("{name} is numbered with other padding: {field}"));
            }
            let lower = name.to_lowercase();
            let digits = lower.strip_prefix(&prefix).and_then(|rest| rest.strip_suffix(&suffix))?;
            (numbered(digits) && wanted(digits)).then(|| format!("{name} differs in letter case; names match exactly"))
        })
    }

    /// The digits where the frame number goes, if `file_name` is this
    /// pattern's prefix, digits, suffix (whatever their count).
    fn digits_of<'a>(&self, file_name: &'a str) -> Option<&'a str> {
        let digits = file_name.strip_prefix(&self.prefix)?.strip_suffix(&self.suffix)?;
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
    }

    /// Whether `file_name` is this pattern's frame with a negative number,
    /// as printf writes one (`s_-002.png` for `s_%04d.png`: the sign takes
    /// one place of the padding) or as other tools do, the sign before the
    /// whole padding (`s_-0002.png`).
    fn negative(&self, file_name: &str) -> bool {
        let rest = file_name.strip_prefix(&self.prefix).and_then(|r| r.strip_suffix(&self.suffix));
        let Some(digits) = rest.and_then(|r| r.strip_prefix('-')) else { return false };
        let digits_only = digits.len() <= MAX_PAD && digits.bytes().all(|b| b.is_ascii_digit());
        let number = digits.parse::<u64>().ok().filter(|_| digits_only);
        let padded = |n: u64, width: usize| format!("{n:0width$}") == digits;
        number.is_some_and(|n| padded(n, self.pad.saturating_sub(1)) || padded(n, self.pad))
    }

    /// The frame number a file name stands for, if it matches exactly.
    pub fn number_of(&self, file_name: &str) -> Option<u64> {
        let digits = self.digits_of(file_name)?;
        if digits.len() > MAX_PAD {
            return None;
        }
        let n: u64 = digits.parse().ok()?;
        (format!("{:0width$}", n, width = self.pad) == digits).then_some(n)
    }

    /// The pattern as the user wrote it.
    pub fn as_str(&self) -> &str {
        &self.original
    }
}

/// The most frames a `--frames` spec may name (ten million: 4.8 days at
/// 24 fps), in one range or in all.
pub const MAX_SPEC_FRAMES: u64 = 10_000_000;

/// The widest zero padding a frame number field may ask for.
const MAX_PAD: usize = 20;

/// Where a `%` starts that is neither `%%` nor a `%Nd` field (`%x`,
/// `%-4d`, a lone `%`), as printf and FFmpeg would refuse it.
fn stray_percent(name: &str) -> Option<usize> {
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if b.get(i + 1) == Some(&b'%') {
                i += 2;
                continue;
            }
            let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if b.get(i + 1 + digits) != Some(&b'd') {
                return Some(i);
            }
        }
        i += 1;
    }
    None
}

/// Whether what follows a name's last dot is no extension but its frame
/// number (`cache.0001`, `cache.####`, `cache.%04d`), or nothing at all.
pub(crate) fn numbered_extension(ext: &str) -> bool {
    ext.bytes().all(|b| b.is_ascii_digit()) || !find_fields(ext).is_empty()
}

/// Finds `%d`, `%0Nd` and runs of `#` in a file name: (start, end, pad).
/// `%%` is a literal `%`, as in printf and FFmpeg.
fn find_fields(name: &str) -> Vec<(usize, usize, usize)> {
    let b = name.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && b.get(i + 1) == Some(&b'%') {
            i += 2;
            continue;
        }
        if b[i] == b'%' {
            let mut j = i + 1;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j < b.len() && b[j] == b'd' {
                // Too many digits to parse is too wide a pad.
                let pad = if j == i + 1 { 0 } else { name[i + 1..j].parse().unwrap_or(usize::MAX) };
                out.push((i, j + 1, pad));
                i = j + 1;
                continue;
            }
        } else if b[i] == b'#' {
            let mut j = i;
            while j < b.len() && b[j] == b'#' {
                j += 1;
            }
            out.push((i, j, j - i));
            i = j;
            continue;
        }
        i += 1;
    }
    out
}

/// A `--frames` spec: `1001-1100`, `1-3,5,7-20x2` (inclusive ranges,
/// optional step after `x`, or `:` as some farm managers write it; spaces
/// around the parts ignored), as render farms pass them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameSpec(Vec<u64>);

impl FrameSpec {
    /// Parses a spec into the sorted, de-duplicated list of frame numbers.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] naming the bad part.
    pub fn parse(spec: &str) -> Result<Self> {
        // The part at fault, or the whole spec where that part is empty
        // (`1-5,`), which alone would show as "".
        let bad = |part: &str| {
            let shown = if part.is_empty() { spec } else { part };
            Error::invalid(
                "frame spec",
                format!("{shown:?}"),
                "N, A-B or A-BxSTEP (or A-B:STEP), comma separated, A ≤ B, STEP ≥ 1",
            )
        };
        // Digits only: not the `+1` that u64's parser takes.
        let number = |n: &str| {
            let n = n.trim();
            n.bytes().all(|b| b.is_ascii_digit()).then(|| n.parse::<u64>().ok()).flatten()
        };
        let mut frames = Vec::new();
        for part in spec.split(',').map(str::trim) {
            // A step belongs to a range: `5x2` alone is a typo (for
            // `1-5x2`?), refused rather than read as frame 5.
            let (range, step) = match part.split_once(['x', ':']) {
                Some((r, _)) if !r.contains('-') => return Err(bad(part)),
                Some((r, s)) => (r, number(s).filter(|&s| s >= 1).ok_or_else(|| bad(part))?),
                None => (part, 1),
            };
            let (a, b) = match range.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (range.trim(), range.trim()),
            };
            let (a, b) = number(a).zip(number(b)).ok_or_else(|| bad(part))?;
            if a > b {
                return Err(bad(part));
            }
            if (b - a) / step >= MAX_SPEC_FRAMES {
                return Err(Error::invalid(
                    "frame spec",
                    format!("{part:?}"),
                    format!("at most {MAX_SPEC_FRAMES} frames"),
                ));
            }
            // (Repeats count: parts that overlap past the limit are a spec
            // gone wrong, refused rather than sorted again and again; and
            // before the part is taken, which would first allocate it.)
            if frames.len() as u64 + (b - a) / step + 1 > MAX_SPEC_FRAMES {
                let mut shown: String = spec.chars().take(40).collect();
                if shown.len() < spec.len() {
                    shown.push('…');
                }
                return Err(Error::invalid(
                    "frame spec",
                    format!("{shown:?}"),
                    format!("at most {MAX_SPEC_FRAMES} frames in all, repeats counted"),
                ));
            }
            // A step past the range takes its first frame alone (and a
            // step over usize::MAX, on a 32-bit host, is no panic).
            frames.extend((a..=b).step_by(usize::try_from(step).unwrap_or(usize::MAX)));
        }
        frames.sort_unstable();
        frames.dedup();
        Ok(FrameSpec(frames))
    }

    /// The frame numbers, ascending.
    pub fn frames(&self) -> &[u64] {
        &self.0
    }
}

/// What to do about frames missing inside the range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[non_exhaustive]
pub enum MissingPolicy {
    /// Refuse to start and list the missing numbers.
    #[default]
    Error,
    /// Process the frames that exist.
    Skip,
}

/// One frame of a sequence on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequenceFrame {
    /// Its frame number.
    pub number: u64,
    /// Its file.
    pub path: PathBuf,
}

/// An ordered list of frames found on disk. Cheap to clone (its lists are
/// shared): an editor passes one with every preview request.
#[derive(Clone, Debug)]
pub struct Sequence {
    /// The input as given (pattern or directory).
    pub source: String,
    /// Frames to process, ascending by number.
    pub frames: Arc<[SequenceFrame]>,
    /// Numbers that were asked for (or inside the detected range) but are
    /// absent, as ascending inclusive runs (a stray `shot_20240315.png`
    /// beside `shot_0001.png` is one run, not millions of numbers).
    pub missing: Vec<RangeInclusive<u64>>,
    /// Every file the input matched, selected by the frame spec or not:
    /// sources a run must never write over.
    pub matched: Arc<[PathBuf]>,
}

impl Sequence {
    /// Scans the disk for `input` (a pattern, a directory, or one file).
    ///
    /// Without a spec the range is min..=max of the numbers present.
    ///
    /// # Errors
    /// [`Error::Sequence`] when nothing matches; [`Error::MissingFrames`]
    /// when frames are absent and the policy is [`MissingPolicy::Error`].
    pub fn scan(input: &str, spec: Option<&FrameSpec>, missing: MissingPolicy) -> Result<Self> {
        Self::scan_for(input, spec, missing, None)
    }

    /// [`Self::scan`] for a run that writes `output` (a frame pattern): a
    /// folder given as the input that also holds that run's own outputs
    /// (graded frames written beside their sources, by an earlier or an
    /// interrupted run) is the sequence of sources, the outputs left out,
    /// so that the same command can be resumed (`--skip-existing`). Only
    /// for a run that replaces no file: the two sequences could be either
    /// way round.
    ///
    /// # Errors
    /// As [`Self::scan`].
    pub fn scan_for(
        input: &str,
        spec: Option<&FrameSpec>,
        missing: MissingPolicy,
        output: Option<&str>,
    ) -> Result<Self> {
        let output = output.and_then(|o| FramePattern::parse(o).ok());
        let (found, odd) = find_frames(input, spec.is_some(), output.as_ref())?;
        // Named as a frame the run takes, but not a frame file: said as
        // such, not counted as missing. Without a spec every one is taken:
        // had it been a file, the range would reach it (a link to nothing
        // as the last frame must not shorten the shot without a word).
        let taken = |n: u64| spec.is_none_or(|s| s.frames().binary_search(&n).is_ok());
        if let Some((n, p)) = odd.iter().find(|(n, _)| taken(**n)) {
            // A lookup that failed (a share's EIO, a folder that can be
            // listed but not entered) says why, not "not a file".
            return Err(Error::Sequence(match std::fs::metadata(p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => format!("{}: frame {n}: {e}", p.display()),
                _ => format!("{}: frame {n} is not a file (a folder, a pipe, or a link to nothing)", p.display()),
            }));
        }
        if found.is_empty() {
            let near = FramePattern::parse(input).ok().filter(|_| !Path::new(input).exists());
            let hint = near.and_then(|p| p.near_miss(|_| true)).map(|h| format!(" ({h})")).unwrap_or_default();
            return Err(Error::Sequence(format!("{input}: no frames match{hint}")));
        }
        let mut frames = Vec::new();
        let mut absent: Vec<RangeInclusive<u64>> = Vec::new();
        match spec {
            Some(s) => {
                for &n in s.frames() {
                    match found.get(&n) {
                        Some(path) => frames.push(SequenceFrame { number: n, path: path.clone() }),
                        None => match absent.last_mut() {
                            Some(run) if *run.end() + 1 == n => *run = *run.start()..=n,
                            _ => absent.push(n..=n),
                        },
                    }
                }
            }
            // The range is min..=max of what exists: every file is a frame,
            // and the gaps between neighbours are what is missing (walked
            // as gaps, never enumerated).
            None => {
                let mut previous: Option<u64> = None;
                for (&n, path) in &found {
                    if let Some(p) = previous.filter(|&p| n > p + 1) {
                        absent.push(p + 1..=n - 1);
                    }
                    previous = Some(n);
                    frames.push(SequenceFrame { number: n, path: path.clone() });
                }
            }
        }
        // None there at all is that error, whatever `missing` says: no
        // other frames for skipping to leave.
        if frames.is_empty() {
            let which = if absent.is_empty() { String::new() } else { format!(" ({})", compact_runs(&absent)) };
            return Err(Error::Sequence(format!("{input}: none of the requested frames exist{which}")));
        }
        if !absent.is_empty() && missing == MissingPolicy::Error {
            let pattern = FramePattern::parse(input).ok().filter(|_| !Path::new(input).exists());
            // (The runs are in order: a sparse spec may leave millions.)
            let absent_has =
                |n: u64| absent.get(absent.partition_point(|run| *run.end() < n)).is_some_and(|r| r.contains(&n));
            let near = pattern.and_then(|p| p.near_miss(absent_has));
            return Err(Error::MissingFrames { pattern: input.to_string(), list: compact_runs(&absent), near });
        }
        let matched = found.into_values().collect();
        Ok(Sequence { source: input.to_string(), frames: frames.into(), missing: absent, matched })
    }

    /// How many numbers [`missing`](Self::missing) holds.
    pub fn missing_count(&self) -> u64 {
        count_runs(&self.missing)
    }

    /// The frame numbered `number`, if the sequence has it.
    pub fn frame(&self, number: u64) -> Option<&SequenceFrame> {
        self.position(number).map(|i| &self.frames[i])
    }

    /// Where the frame numbered `number` is in [`frames`](Self::frames).
    /// A scan lists them ascending, so a binary search finds it; a list
    /// an editor built out of order is searched through.
    pub fn position(&self, number: u64) -> Option<usize> {
        (self.frames.binary_search_by_key(&number, |f| f.number).ok())
            .or_else(|| self.frames.iter().position(|f| f.number == number))
    }
}

/// Files padded otherwise than the rest of `sequence` (scanned from
/// `input`), which a user may not know of: through a pattern, files of its
/// name in its folder with another padding, left out (`a_3.png` beside
/// `a_0001.png` for `a_%04d.png`); through a folder, frames whose number is
/// written with fewer digits than the others are padded to, taken all
/// the same (`a_3.png` there is frame 3). A compact list of names, at most
/// five, and whether they were left out; none when all agree.
pub fn padding_strays(input: &str, sequence: &Sequence) -> Option<(String, bool)> {
    let path = Path::new(input);
    let (names, left_out): (Vec<String>, bool) = if FramePattern::is_pattern(input) && !path.exists() {
        let pattern = FramePattern::parse(input).ok()?;
        let mut names: Vec<String> = std::fs::read_dir(pattern.dir())
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            // (A number too long to read is no padding of the pattern's:
            // a `--frames` run leaves it out, any other refuses it.)
            .filter(|n| {
                pattern.digits_of(n).is_some_and(|d| d.parse::<u64>().is_ok()) && pattern.number_of(n).is_none()
            })
            .collect();
        names.sort();
        (names, true)
    } else if path.is_dir() {
        let digits = |f: &SequenceFrame| {
            let stem = f.path.file_stem()?.to_str()?;
            let (start, end, _) = last_digits(stem)?;
            Some(stem[start..end].len())
        };
        // Padded to: the widest number written with a leading zero.
        let padded = |f: &&SequenceFrame| {
            let stem = f.path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            last_digits(stem).is_some_and(|(start, end, _)| end - start > 1 && stem[start..].starts_with('0'))
        };
        let pad = sequence.frames.iter().filter(padded).filter_map(digits).max()?;
        let names = (sequence.frames.iter())
            .filter(|f| digits(f).is_some_and(|d| d < pad))
            .filter_map(|f| f.path.file_name()?.to_str().map(str::to_string))
            .collect();
        (names, false)
    } else {
        return None;
    };
    if names.is_empty() {
        return None;
    }
    let mut list = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 5 {
        list += &format!(" … {} in all", names.len());
    }
    Some((list, left_out))
}

/// Number → path for every frame of `input` on disk; and for a pattern,
/// the entries named as frames that are not files.
type Found = (BTreeMap<u64, PathBuf>, BTreeMap<u64, PathBuf>);

/// `picked`: a `--frames` spec chooses the frames, so a file whose number
/// cannot be read cannot be one of them. `output`: the run's output
/// pattern, whose frames a folder scan leaves out ([`Sequence::scan_for`]).
fn find_frames(input: &str, picked: bool, output: Option<&FramePattern>) -> Result<Found> {
    if input.trim().is_empty() {
        return Err(Error::invalid("input", format!("{input:?}"), "a file, a folder or a frame pattern"));
    }
    let path = Path::new(input);
    // A file or pattern names its format: one framepipe cannot read is a
    // usage error now, not a decode error on every frame.
    // (A name with no extension is left to the decoder, which sniffs the
    // content; a path that is not there gets the error below.)
    if path.is_file() || (FramePattern::is_pattern(input) && !path.exists()) {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        if !numbered_extension(&ext) && !IMAGE_EXTENSIONS.contains(&ext.as_str()) {
            let known = IMAGE_EXTENSIONS.iter().map(|e| format!(".{e}")).collect::<Vec<_>>().join(", ");
            return Err(Error::Sequence(format!("{input}: not an image framepipe reads (one of {known})")));
        }
    }
    // A folder or file that exists is what it is, even when its name has a
    // `#` or `%d` in it (`take#2/`).
    if FramePattern::is_pattern(input) && !path.exists() {
        let pattern = FramePattern::parse(input)?;
        if !pattern.dir().is_dir() {
            let is = if pattern.dir().exists() { "is a file, not a folder" } else { "does not exist" };
            return Err(Error::Sequence(format!("{input}: folder {} {is}", pattern.dir().display())));
        }
        let (mut found, mut odd) = (BTreeMap::new(), BTreeMap::new());
        for (name, _, is_file) in list_dir(pattern.dir(), false)? {
            // Named as the pattern names it (`s_0001.png`, not `./s_0001.png`).
            let p = pattern.dir.join(&name);
            if let Some(n) = pattern.number_of(&name) {
                if is_file { &mut found } else { &mut odd }.insert(n, p);
            } else if pattern.digits_of(&name).is_some_and(|d| !d.starts_with('0') && d.parse::<u64>().is_err()) {
                // A number too large for a u64, written as any pattern
                // would write it (no leading zero), where no spec picks
                // the frames. Other digit runs are padded otherwise:
                // another pattern's frames.
                if !picked {
                    return Err(unreadable_number(&p));
                }
            } else if is_file && !picked && pattern.negative(&name) {
                return Err(negative_number(&p));
            }
        }
        return Ok((found, odd));
    }
    if path.is_dir() {
        return scan_directory(path, picked, output);
    }
    if path.is_file() {
        // A single file: frame number from the digits that end its name
        // (`shot_1001.png`, `shot.1001.png`), else 0: `plate_v2_final.png`
        // is no frame 2, `ev_-1.png` no frame 1, a name ending in more
        // digits than a frame number has (a timestamp) no frame at all:
        // one file is a still, whose number nothing needs.
        let n = still_number(path).unwrap_or(0);
        return Ok((BTreeMap::from([(n, path.to_path_buf())]), BTreeMap::new()));
    }
    if std::fs::metadata(path).is_ok() {
        return Err(Error::Sequence(format!("{input}: not a file or a folder (a pipe or a device?)")));
    }
    // A `%` that is no frame field (`shot_%s.png`, or a name that is not
    // there): said as for an output.
    let why = match FramePattern::parse(input) {
        Err(e) if input.contains('%') => {
            let e = e.to_string();
            format!(" ({})", e.strip_prefix(&format!("{input}: ")).unwrap_or(&e))
        }
        _ => String::new(),
    };
    Err(Error::Sequence(format!("{input}: no such file, directory or frame pattern{why}")))
}

/// The entries of `dir` by name, each with whether it is a plain file (a
/// link to one counts). A name that is not UTF-8 cannot match
/// a pattern (which is text); in a folder scan (`every_image`) one with an
/// image extension would be a frame left out without a word: refused.
fn list_dir(dir: &Path, every_image: bool) -> Result<Vec<(String, PathBuf, bool)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::Sequence(format!("{}: {e}", dir.display())))?;
    let mut out = Vec::new();
    // An entry that cannot be read ends the listing (a network share's
    // EIO or ESTALE): the frames after it would be missing, or the range
    // shorter, without a word.
    for entry in entries {
        let entry = entry.map_err(|e| Error::Sequence(format!("{}: listing failed: {e}", dir.display())))?;
        let path = entry.path();
        let is_file = path.is_file();
        match entry.file_name().to_str() {
            Some(name) => out.push((name.to_string(), path, is_file)),
            None if !is_file => {}
            // (One with no digit could not be a frame: left out, as a
            // UTF-8 one would be.)
            None if every_image
                && is_image_name(&path)
                && !entry.file_name().as_encoded_bytes().starts_with(b".")
                && entry.file_name().as_encoded_bytes().iter().any(u8::is_ascii_digit) =>
            {
                return Err(Error::Sequence(format!(
                    "{}: the file name is not UTF-8, which framepipe cannot number; rename it",
                    path.display()
                )));
            }
            None => {}
        }
    }
    Ok(out)
}

/// Whether `path` has an extension framepipe reads.
fn is_image_name(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    IMAGE_EXTENSIONS.contains(&ext.as_str())
}

/// A directory must hold exactly one numbered image sequence. Entries
/// named as its frames that are not files (a link to nothing, a folder)
/// come back beside it, as for a pattern.
///
/// With `picked` (a `--frames` spec), files whose number framepipe cannot
/// take (too large, negative) are left out rather than refused: the spec
/// cannot name them.
///
/// Where it holds two, the one `output` names (a run writing into the
/// folder it reads, again) is left out, if its frame numbers are among the
/// other's as a run's outputs are; it still is read when it is the only
/// one, for the run to refuse writing over its own sources.
fn scan_directory(dir: &Path, picked: bool, output: Option<&FramePattern>) -> Result<Found> {
    type Key = (String, String);
    let mut groups: BTreeMap<Key, BTreeMap<u64, PathBuf>> = BTreeMap::new();
    let mut odd: BTreeMap<Key, BTreeMap<u64, PathBuf>> = BTreeMap::new();
    // Files the output pattern names, where it writes into this folder:
    // the run's own outputs, perhaps under its sources' name in another
    // padding (`shot_01001.png` beside `shot_1001.png`).
    let here = output.filter(|o| same_folder(o.dir(), dir));
    let mut mine: BTreeMap<Key, BTreeMap<u64, PathBuf>> = BTreeMap::new();
    for (name, path, is_file) in list_dir(dir, true)? {
        if !is_image_name(&path) || name.starts_with('.') {
            continue;
        }
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let stem = &name[..name.len() - ext.len() - 1];
        if is_file && last_digits(stem).is_none() && stem.bytes().any(|b| b.is_ascii_digit()) {
            if picked {
                continue;
            }
            return Err(unreadable_number(&path));
        }
        let Some((start, end, n)) = last_digits(stem) else { continue };
        if is_file && signed(stem, start) {
            if picked {
                continue;
            }
            return Err(negative_number(&path));
        }
        let key = (name[..start].to_string(), name[end..].to_string());
        if !is_file {
            odd.entry(key).or_default().insert(n, path);
            continue;
        }
        // `shot_1.png` beside `shot_0001.png`: which is frame 1 would
        // depend on the directory's order. Refuse rather than guess.
        let into = if here.is_some_and(|o| o.number_of(&name).is_some()) { &mut mine } else { &mut groups };
        if let Some(other) = into.entry(key).or_default().insert(n, path.clone()) {
            return Err(both_frame(dir, other, path, n));
        }
    }
    // Outputs under their sources' name (another padding) whose sources
    // are all there are left out; any other joins the files of its name,
    // to be refused beside one of the same number, or read as a frame.
    for (key, made) in mine {
        match groups.get_mut(&key) {
            Some(read) if made.keys().all(|n| read.contains_key(n)) => {}
            Some(read) => {
                for (n, path) in made {
                    if let Some(other) = read.insert(n, path.clone()) {
                        return Err(both_frame(dir, other, path, n));
                    }
                }
            }
            None => {
                groups.insert(key, made);
            }
        }
    }
    if groups.len() > 1
        && let Some(output) = here
    {
        let named = |found: &BTreeMap<u64, PathBuf>| {
            let name = found.values().next().and_then(|p| p.file_name()).and_then(|n| n.to_str());
            name.is_some_and(|n| output.number_of(n).is_some())
        };
        let (outputs, sources): (Vec<_>, Vec<_>) = groups.iter().partition(|(_, found)| named(found));
        // A run's outputs carry their sources' numbers: a sequence the
        // output pattern names that does not (a typo naming another shot's
        // frames) is no output of this run, and the folder stays ambiguous.
        if let ([(key, made)], [(_, read)]) = (&outputs[..], &sources[..])
            && made.keys().all(|n| read.contains_key(n))
        {
            let key = (*key).clone();
            groups.remove(&key);
        }
    }
    match groups.len() {
        0 => Ok((BTreeMap::new(), BTreeMap::new())),
        1 => {
            let (key, found) = groups.into_iter().next().unwrap();
            Ok((found, odd.remove(&key).unwrap_or_default()))
        }
        _ => {
            // The first few: a folder of thousands of stills (`shot_0001_v2.png`,
            // numbered last by their version) is one line, not thousands.
            // Each as a pattern that reads it: `#` repeated to its padding
            // (the widest number written with a leading zero).
            let pattern = |((p, s), found): (&(String, String), &BTreeMap<u64, PathBuf>)| {
                let digits = |path: &PathBuf| {
                    let d = path.file_name()?.to_str()?.strip_prefix(p.as_str())?.strip_suffix(s.as_str())?;
                    (d.len() > 1 && d.starts_with('0')).then_some(d.len())
                };
                format!("{p}{}{s}", "#".repeat(found.values().filter_map(digits).max().unwrap_or(1)))
            };
            let mut names: Vec<String> = groups.iter().take(5).map(pattern).collect();
            if groups.len() > names.len() {
                names.push(format!("… {} in all", groups.len()));
            }
            Err(Error::Sequence(format!(
                "{}: holds several sequences ({}); pass a pattern instead",
                dir.display(),
                names.join(", ")
            )))
        }
    }
}

/// Two files in `dir` that both name frame `n` (`shot_1.png`, `shot_0001.png`).
fn both_frame(dir: &Path, a: PathBuf, b: PathBuf, n: u64) -> Error {
    let (a, b) = if a < b { (a, b) } else { (b, a) };
    Error::Sequence(format!(
        "{}: {} and {} are both frame {n}; pass a pattern (%04d or %d) to choose",
        dir.display(),
        a.display(),
        b.display()
    ))
}

/// Whether `a` and `b` are the same existing folder, however named.
fn same_folder(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Where an output writes, as one string however it is spelt: its folder
/// resolved (`q8/`, `./q8/`, the absolute path, a link to it, from any
/// working folder) and its frame field written one way (`s_####.png` is
/// `s_%04d.png`). A report names its run's output so, and a resumed run
/// knows its own report by it, never another run's of the same spelling.
pub fn output_identity(output: &str) -> String {
    if output == "-" {
        return output.into();
    }
    match FramePattern::parse(output) {
        Ok(p) => crate::io::resolve_path(p.dir()).join(p.canonical_name()).display().to_string(),
        // One file: its folder resolved, its name as written (a link there
        // is replaced by the output, not followed).
        Err(_) => {
            let path = Path::new(output);
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            match path.file_name() {
                Some(name) => crate::io::resolve_path(dir).join(name).display().to_string(),
                None => crate::io::resolve_path(path).display().to_string(),
            }
        }
    }
}

/// The frame number a single file's name gives: the digits that end its
/// stem, unsigned; `None` for a still (`plate_v2_final.png`,
/// `bracket_-2.png`), which is frame 0.
///
/// # Errors
/// [`Error::Sequence`] for a number too long to read.
pub(crate) fn number_in_name(path: &Path) -> Result<Option<u64>> {
    // Digits after the last dot (`cache.0002`) are the number, not an
    // extension.
    let numbered = path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.bytes().all(|b| b.is_ascii_digit()));
    let stem = if numbered { path.file_name() } else { path.file_stem() };
    let stem = stem.and_then(|s| s.to_str()).unwrap_or("");
    Ok(match last_digits(stem) {
        // `bracket_-2.png` is no frame -2 (nor 2): a still.
        Some((start, end, _)) if end == stem.len() && signed(stem, start) => None,
        Some((_, end, n)) if end == stem.len() => Some(n),
        None if stem.bytes().last().is_some_and(|b| b.is_ascii_digit()) => return Err(unreadable_number(path)),
        _ => None,
    })
}

/// The frame number of one file named on its own: the digits that end its
/// name, none for a still (no digits, a sign before them, more digits than
/// a frame number holds: a timestamp), whose number nothing needs.
pub(crate) fn still_number(path: &Path) -> Option<u64> {
    number_in_name(path).ok().flatten()
}

/// A file named like a frame of the sequence whose number framepipe cannot
/// hold: refused by name rather than left out without a word.
fn unreadable_number(path: &Path) -> Error {
    Error::Sequence(format!(
        "{}: a frame number framepipe cannot read (at most {MAX_PAD} digits, up to {})",
        path.display(),
        u64::MAX
    ))
}

/// A frame number framepipe does not take: refused by name rather than
/// read without its sign (frames played backwards, renumbered).
fn negative_number(path: &Path) -> Error {
    Error::Sequence(format!(
        "{}: a negative frame number; framepipe numbers frames from 0 up (renumber the sequence)",
        path.display()
    ))
}

/// Whether the digits at `start` in a file name's stem are a negative
/// number: a `-` before them that is a sign, not a separator (at the start,
/// or after `_` or `.`: `n_-003`, `shot.-001`; `shot-0001` is frame 1).
fn signed(stem: &str, start: usize) -> bool {
    let before = &stem.as_bytes()[..start];
    before.last() == Some(&b'-') && matches!(before.len().checked_sub(2).map(|i| before[i]), None | Some(b'_' | b'.'))
}

/// The last run of ASCII digits in `s`: (start, end, value).
/// The last run of digits in `s` (a folder scan's frame number): where it
/// starts and ends, and its value.
pub(crate) fn last_digits(s: &str) -> Option<(usize, usize, u64)> {
    let b = s.as_bytes();
    let end = b.iter().rposition(|c| c.is_ascii_digit())? + 1;
    let start = b[..end].iter().rposition(|c| !c.is_ascii_digit()).map_or(0, |i| i + 1);
    let n = s[start..end].parse().ok()?;
    Some((start, end, n))
}

/// Ascending numbers as runs of consecutive ones (`1 2 3 5` → `1-3, 5`).
pub fn runs_of(ascending: impl IntoIterator<Item = u64>) -> Vec<RangeInclusive<u64>> {
    let mut runs: Vec<RangeInclusive<u64>> = Vec::new();
    for n in ascending {
        match runs.last_mut() {
            Some(run) if run.end().checked_add(1) == Some(n) => *run = *run.start()..=n,
            _ => runs.push(n..=n),
        }
    }
    runs
}

/// How many numbers inclusive `runs` hold.
pub fn count_runs(runs: &[RangeInclusive<u64>]) -> u64 {
    // (A reversed run, from a list built by hand, holds none.)
    runs.iter()
        .map(|r| if r.is_empty() { 0 } else { (r.end() - r.start()).saturating_add(1) })
        .fold(0, u64::saturating_add)
}

/// Ascending inclusive runs as `1-3, 5, 7-9`: the first 20 runs, then the
/// count of numbers in all.
pub fn compact_runs(runs: &[RangeInclusive<u64>]) -> String {
    let text = runs_text(&runs[..runs.len().min(20)], ", ");
    if runs.len() > 20 {
        let total = count_runs(runs);
        return format!("{text}, … ({total} numbers in all)");
    }
    text
}

/// Runs as a `--frames` spec that [`FrameSpec::parse`] reads back
/// (`1-3,5`): every run, no spaces; three or more single numbers a steady
/// step apart as one stepped run, as a render farm writes them (the gaps
/// of a shot on twos, `1011,1013,…,1059`, as `1011-1059x2`).
pub fn frame_spec(runs: &[RangeInclusive<u64>]) -> String {
    let single = |r: &RangeInclusive<u64>| r.start() == r.end();
    let parts: Vec<String> = runs
        .chunk_by(|a, b| single(a) == single(b))
        .map(|chunk| {
            let numbers: Vec<u64> = chunk.iter().map(|r| *r.start()).collect();
            // (A list built by hand out of order is written as it is.)
            if single(&chunk[0]) && numbers.windows(2).all(|w| w[0] < w[1]) {
                stepped_spec(&numbers)
            } else {
                runs_text(chunk, ",")
            }
        })
        .collect();
    parts.join(",")
}

/// Ascending frame numbers as a whole `--frames` spec, every number in it,
/// runs of a steady step of three or more written with it as a render
/// farm writes them (`1001,1003,1005` as `1001-1005x2`): what a script
/// reads back, or passes to `--frames`.
pub fn stepped_spec(ascending: &[u64]) -> String {
    debug_assert!(ascending.windows(2).all(|w| w[0] < w[1]), "ascending, each once");
    let mut parts = Vec::new();
    let mut i = 0;
    while i < ascending.len() {
        let first = ascending[i];
        let step = ascending.get(i + 1).map_or(0, |&next| next - first);
        let mut j = i;
        while step > 0 && ascending.get(j + 1).is_some_and(|&next| next - ascending[j] == step) {
            j += 1;
        }
        let last = ascending[j];
        match j - i + 1 {
            n if step == 1 && n >= 2 => parts.push(format!("{first}-{last}")),
            n if n >= 3 => parts.push(format!("{first}-{last}x{step}")),
            _ => {
                parts.push(first.to_string());
                j = i;
            }
        }
        i = j + 1;
    }
    parts.join(",")
}

fn runs_text(runs: &[RangeInclusive<u64>], separator: &str) -> String {
    let text: Vec<String> = runs
        .iter()
        .map(|r| if r.start() == r.end() { r.start().to_string() } else { format!("{}-{}", r.start(), r.end()) })
        .collect();
    text.join(separator)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequence_built_by_hand_out_of_order_still_finds_its_frames() {
        let frame = |number: u64| SequenceFrame { number, path: format!("f{number}.png").into() };
        let seq = Sequence {
            source: "by hand".into(),
            frames: vec![frame(5), frame(1), frame(9), frame(3)].into(),
            missing: vec![RangeInclusive::new(8, 6), 2..=2],
            matched: Arc::from(Vec::new()),
        };
        assert_eq!([1, 3, 5, 9, 4].map(|n| seq.position(n)), [Some(1), Some(3), Some(0), Some(2), None]);
        assert_eq!(seq.frame(9).map(|f| f.number), Some(9));
        // A reversed run holds no numbers.
        assert_eq!(count_runs(&seq.missing), 1);
        let many: Vec<RangeInclusive<u64>> =
            (0..30).map(|i| if i == 0 { RangeInclusive::new(8, 6) } else { i * 10..=i * 10 }).collect();
        assert!(compact_runs(&many).ends_with("(29 numbers in all)"), "{}", compact_runs(&many));
    }

    #[test]
    fn misplaced_fields_and_odd_files_are_named_for_what_they_are() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("s_0001.png"), b"").unwrap();
        std::fs::create_dir(t.path().join("s_0002.png")).unwrap();
        let pattern = t.path().join("s_%04d.png").display().to_string();
        std::fs::write(t.path().join("s_0003.png"), b"").unwrap();
        let e = Sequence::scan(&pattern, None, MissingPolicy::Skip).unwrap_err().to_string();
        assert!(e.ends_with("s_0002.png: frame 2 is not a file (a folder, a pipe, or a link to nothing)"), "{e}");
        // Not when the run does not take that frame.
        let odd = FrameSpec::parse("1,3").unwrap();
        assert_eq!(Sequence::scan(&pattern, Some(&odd), MissingPolicy::Error).unwrap().frames.len(), 2);
        // The same in a folder, and for a link to nothing past the last
        // file: it would have been the last frame.
        let folder = t.path().display().to_string();
        let e = Sequence::scan(&folder, None, MissingPolicy::Skip).unwrap_err().to_string();
        assert!(e.ends_with("s_0002.png: frame 2 is not a file (a folder, a pipe, or a link to nothing)"), "{e}");
        std::fs::remove_dir(t.path().join("s_0002.png")).unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("gone.png", t.path().join("s_0004.png")).unwrap();
            for input in [&pattern, &folder] {
                let e = Sequence::scan(input, None, MissingPolicy::Skip).unwrap_err().to_string();
                assert!(
                    e.ends_with("s_0004.png: frame 4 is not a file (a folder, a pipe, or a link to nothing)"),
                    "{e}"
                );
            }
        }
        // A pattern that matches nothing says what nearly matched.
        let near = tempfile::tempdir().unwrap();
        std::fs::write(near.path().join("shot_0007.PNG"), b"").unwrap();
        std::fs::write(near.path().join("take_1.png"), b"").unwrap();
        for (pattern, hint) in [
            ("shot_%04d.png", "(shot_0007.PNG differs in letter case; names match exactly)"),
            ("shot_%d.PNG", "(shot_0007.PNG is numbered with other padding: %04d)"),
            ("take_%03d.png", "(take_1.png is numbered with other padding: %d)"),
        ] {
            let input = near.path().join(pattern).display().to_string();
            let e = Sequence::scan(&input, None, MissingPolicy::Error).unwrap_err().to_string();
            assert!(e.ends_with(&format!("{pattern}: no frames match {hint}")), "{e}");
        }
        // Frames missing from a range say what nearly matched them (a
        // stray of another number is not named).
        std::fs::write(near.path().join("take_002.png"), b"").unwrap();
        std::fs::write(near.path().join("take_9.png"), b"").unwrap();
        let input = near.path().join("take_%03d.png").display().to_string();
        for (frames, tail) in [
            ("1-2", "missing frame 1 (take_1.png is numbered with other padding: %d)"),
            ("2-3", "missing frame 3"),
            ("2,4,6,9", "missing frames 4, 6, 9 (take_9.png is numbered with other padding: %d)"),
        ] {
            let spec = FrameSpec::parse(frames).unwrap();
            let e = Sequence::scan(&input, Some(&spec), MissingPolicy::Error).unwrap_err().to_string();
            assert!(e.ends_with(tail), "{e}");
        }
        // Where the only match is not a file, that is what is said.
        std::fs::create_dir(near.path().join("only_0001.png")).unwrap();
        let input = near.path().join("only_%04d.png").display().to_string();
        let e = Sequence::scan(&input, None, MissingPolicy::Error).unwrap_err().to_string();
        assert!(e.ends_with("only_0001.png: frame 1 is not a file (a folder, a pipe, or a link to nothing)"), "{e}");
        // A pattern's folder that is a file is said to be one.
        let file = near.path().join("take_1.png").join("s_%04d.png").display().to_string();
        let e = Sequence::scan(&file, None, MissingPolicy::Error).unwrap_err().to_string();
        assert!(e.ends_with("take_1.png is a file, not a folder"), "{e}");
        // A frame that cannot be looked up (a folder that can be listed but
        // not entered) says why, where the permission holds (not as root).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let shut = near.path().join("shut");
            std::fs::create_dir(&shut).unwrap();
            std::fs::write(shut.join("s_0001.png"), b"").unwrap();
            std::fs::set_permissions(&shut, std::fs::Permissions::from_mode(0o644)).unwrap();
            let denied = std::fs::metadata(shut.join("s_0001.png")).is_err();
            let e = Sequence::scan(&shut.join("s_%04d.png").display().to_string(), None, MissingPolicy::Error);
            std::fs::set_permissions(&shut, std::fs::Permissions::from_mode(0o755)).unwrap();
            if denied {
                let e = e.unwrap_err().to_string();
                assert!(e.contains("s_0001.png: frame 1: Permission denied"), "{e}");
            }
        }
        // One file whose name ends in more digits than a frame number
        // holds (a timestamp) is a still, frame 0: nothing needs its number
        // (an output with a frame field is refused for it).
        let big = t.path().join("x_99999999999999999999.png");
        std::fs::write(&big, b"").unwrap();
        let still = Sequence::scan(&big.display().to_string(), None, MissingPolicy::Error).unwrap();
        assert_eq!(still.frames.iter().map(|f| (f.number, f.path.clone())).collect::<Vec<_>>(), [(0, big.clone())]);
        // A field in a folder's name as well as the file's is refused, not
        // made into a folder named `%04d`; beside a printf field, `#` is a
        // literal.
        for pattern in ["o/%04d/s_%04d.png", "o/%04d/s_####.png"] {
            let e = FramePattern::parse(pattern).unwrap_err().to_string();
            assert!(e.contains("a frame number field in a folder's name as well as the file's"), "{e}");
        }
        // A folder that exists is what it is.
        let odd = t.path().join("20%desat");
        std::fs::create_dir(&odd).unwrap();
        assert!(FramePattern::parse(&odd.join("s_%04d.png").display().to_string()).is_ok());
        let take = FramePattern::parse("take#2/take#2_%04d.png").unwrap();
        assert_eq!(take.path(7), Path::new("take#2/take#2_0007.png"));
        assert!(FramePattern::parse("a#_####.png").is_err());
        let e = FramePattern::parse("renders/shot_%04d/f.png").unwrap_err().to_string();
        assert_eq!(e, "renders/shot_%04d/f.png: the frame number field must be in the file name, not in a folder's");
        #[cfg(unix)]
        {
            let t = tempfile::tempdir().unwrap();
            let fifo = t.path().join("p.png");
            if std::process::Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success()) {
                let e = Sequence::scan(&fifo.display().to_string(), None, MissingPolicy::Error).unwrap_err();
                assert!(e.to_string().ends_with("p.png: not a file or a folder (a pipe or a device?)"), "{e}");
            }
        }
    }

    #[test]
    fn negative_frame_numbers_are_refused_not_read_without_their_sign() {
        let t = tempfile::tempdir().unwrap();
        for name in ["n_-003.png", "n_-002.png", "n_0000.png"] {
            std::fs::write(t.path().join(name), b"").unwrap();
        }
        let folder = t.path().display().to_string();
        let pattern = t.path().join("n_%04d.png").display().to_string();
        for input in [&folder, &pattern] {
            let e = Sequence::scan(input, None, MissingPolicy::Skip).unwrap_err().to_string();
            assert!(e.contains("a negative frame number"), "{input}: {e}");
            // A spec picks frames from 0 up: the others are not its business.
            let spec = FrameSpec::parse("0").unwrap();
            assert_eq!(Sequence::scan(input, Some(&spec), MissingPolicy::Error).unwrap().frames.len(), 1, "{input}");
        }
        // One still named so (an exposure bracket) is a still: frame 0.
        let single = t.path().join("n_-003.png").display().to_string();
        assert_eq!(Sequence::scan(&single, None, MissingPolicy::Error).unwrap().frames[0].number, 0);
        // As printf pads a negative number, and only so: `-1` is not -0001.
        let p = FramePattern::parse("s-%04d.png").unwrap();
        assert!(p.negative("s--001.png") && !p.negative("s--1.png") && !p.negative("s-0001.png"));
        // Or with the sign before the whole padding, as other tools write it.
        assert!(p.negative("s--0001.png") && !p.negative("s--00001.png"));
        let hashed = FramePattern::parse("n.####.png").unwrap();
        assert!(hashed.negative("n.-0001.png") && hashed.negative("n.-001.png"));
        // A hyphen after a letter is a separator: `shot-0001` is frame 1.
        let dashed = tempfile::tempdir().unwrap();
        std::fs::write(dashed.path().join("shot-0001.png"), b"").unwrap();
        let seq = Sequence::scan(&dashed.path().display().to_string(), None, MissingPolicy::Error).unwrap();
        assert_eq!(seq.frames[0].number, 1);
        // An empty input is named as such.
        let e = Sequence::scan("", None, MissingPolicy::Error).unwrap_err().to_string();
        assert!(e.contains("input"), "{e}");
    }

    /// A file padded otherwise is named: left out by a pattern, taken by a
    /// folder scan; frames past the padding's width (10000 of `%04d`) and
    /// sequences never padded are no strays.
    #[test]
    fn frames_padded_otherwise_are_named() {
        let t = tempfile::tempdir().unwrap();
        for name in ["a_0001.png", "a_0002.png", "a_3.png", "a_10000.png"] {
            std::fs::write(t.path().join(name), b"").unwrap();
        }
        let folder = t.path().display().to_string();
        let pattern = t.path().join("a_%04d.png").display().to_string();
        for (input, expect) in [(&folder, ("a_3.png".to_string(), false)), (&pattern, ("a_3.png".into(), true))] {
            let seq = Sequence::scan(input, None, MissingPolicy::Skip).unwrap();
            assert_eq!(padding_strays(input, &seq), Some(expect), "{input}");
        }
        let plain = tempfile::tempdir().unwrap();
        for name in ["b_1.png", "b_2.png", "b_10.png"] {
            std::fs::write(plain.path().join(name), b"").unwrap();
        }
        let input = plain.path().display().to_string();
        let seq = Sequence::scan(&input, None, MissingPolicy::Skip).unwrap();
        assert_eq!(padding_strays(&input, &seq), None);
        // A number too large to read is padded as the pattern says: no
        // stray (left out by `--frames`, refused without).
        let big = tempfile::tempdir().unwrap();
        for name in ["y_00000000000000000001.png", "y_99999999999999999999.png"] {
            std::fs::write(big.path().join(name), b"").unwrap();
        }
        let input = big.path().join("y_%020d.png").display().to_string();
        let seq = Sequence::scan(&input, Some(&FrameSpec::parse("1").unwrap()), MissingPolicy::Error).unwrap();
        assert_eq!(padding_strays(&input, &seq), None);
        let e = Sequence::scan(&input, None, MissingPolicy::Error).unwrap_err().to_string();
        assert!(e.contains("y_99999999999999999999.png: a frame number framepipe cannot read"), "{e}");
    }

    #[test]
    fn frames_are_found_by_number() {
        let t = tempfile::tempdir().unwrap();
        for n in [1001, 1003, 1004] {
            std::fs::write(t.path().join(format!("s_{n}.png")), b"").unwrap();
        }
        let pattern = t.path().join("s_%04d.png").display().to_string();
        let seq = Sequence::scan(&pattern, None, MissingPolicy::Skip).unwrap();
        assert_eq!(seq.frame(1003).map(|f| f.path.clone()), Some(t.path().join("s_1003.png")));
        assert!([999, 1002, 1005].iter().all(|&n| seq.frame(n).is_none()));
        // A clone shares the lists.
        assert!(Arc::ptr_eq(&seq.clone().frames, &seq.frames));
        // One file: numbered by the digits that end its name, else 0.
        for (name, n) in [("shot.1042.png", 1042), ("plate_v2_final.png", 0), ("take3_grade.png", 0), ("still.png", 0)]
        {
            let path = t.path().join(name);
            std::fs::write(&path, b"").unwrap();
            let seq = Sequence::scan(path.to_str().unwrap(), None, MissingPolicy::Error).unwrap();
            assert_eq!(seq.frames.iter().map(|f| f.number).collect::<Vec<_>>(), [n], "{name}");
        }
    }

    #[test]
    fn a_folder_of_many_sequences_names_a_few() {
        let t = tempfile::tempdir().unwrap();
        for n in 1..=8 {
            std::fs::write(t.path().join(format!("shot_{n:04}_v2.png")), b"").unwrap();
        }
        let err = Sequence::scan(t.path().to_str().unwrap(), None, MissingPolicy::Error).unwrap_err().to_string();
        assert!(
            err.contains("holds several sequences (shot_0001_v#")
                && err.ends_with("… 8 in all); pass a pattern instead"),
            "{err}"
        );
        assert_eq!(err.matches("shot_").count(), 5, "{err}");
        // Each named as a pattern that reads it, padding and all.
        let two = tempfile::tempdir().unwrap();
        for name in ["a_0009.png", "a_0010.png", "a_0009.jpg", "b_7.tif", "b_12.tif"] {
            std::fs::write(two.path().join(name), b"").unwrap();
        }
        let err = Sequence::scan(two.path().to_str().unwrap(), None, MissingPolicy::Error).unwrap_err().to_string();
        assert!(err.contains("holds several sequences (a_####.jpg, a_####.png, b_#.tif)"), "{err}");
    }

    #[test]
    fn a_frame_spec_of_runs_reads_back_whole() {
        let numbers: Vec<u64> = (1..=100).filter(|n| n % 3 != 0).chain([1001, 1002, 1005]).collect();
        let runs = runs_of(numbers.iter().copied());
        assert!(runs.len() > 20, "longer than the summary's list");
        let spec = frame_spec(&runs);
        assert!(!spec.contains(' '));
        assert_eq!(FrameSpec::parse(&spec).unwrap().frames(), numbers.as_slice());
        // Single numbers a steady step apart are one stepped run; ranges
        // and the rest stay as they are.
        let gaps: Vec<u64> = (1011..=1059).step_by(2).chain([1070, 1080, 1085]).collect();
        let runs: Vec<RangeInclusive<u64>> = (gaps.iter().map(|&n| n..=n)).chain([1090..=1099, 2000..=2000]).collect();
        assert_eq!(frame_spec(&runs), "1011-1059x2,1070,1080,1085,1090-1099,2000");
        let expected: Vec<u64> = gaps.iter().copied().chain(1090..=1099).chain([2000]).collect();
        assert_eq!(FrameSpec::parse(&frame_spec(&runs)).unwrap().frames(), expected.as_slice());
    }

    #[test]
    fn patterns_parse_and_format() {
        let p = FramePattern::parse("out/shot_%04d.png").unwrap();
        assert_eq!(p.path(7), Path::new("out/shot_0007.png"));
        assert_eq!(p.path(12345), Path::new("out/shot_12345.png"));
        assert_eq!(p.number_of("shot_1001.png"), Some(1001));
        assert_eq!(p.number_of("shot_101.png"), None);
        let h = FramePattern::parse("shot.####.exr").unwrap();
        assert_eq!(h.path(42), Path::new("shot.0042.exr"));
        let d = FramePattern::parse("f%d.qoi").unwrap();
        assert_eq!(d.number_of("f07.qoi"), None);
        assert_eq!(d.number_of("f7.qoi"), Some(7));
        assert!(FramePattern::parse("plain.png").is_err());
        assert!(FramePattern::parse("a%02d_%02d.png").is_err());
        // `%%` is a literal percent sign, as printf and FFmpeg read it.
        let pct = FramePattern::parse("take%%2/mix_%%50_%03d.png").unwrap();
        assert_eq!(pct.path(4), Path::new("take%2/mix_%50_004.png"));
        assert_eq!(pct.number_of("mix_%50_004.png"), Some(4));
        assert!(FramePattern::parse("only_%%.png").is_err());
    }

    #[test]
    fn frame_specs() {
        assert_eq!(FrameSpec::parse("1-3,5,7-20x2").unwrap().frames(), &[1, 2, 3, 5, 7, 9, 11, 13, 15, 17, 19]);
        assert_eq!(FrameSpec::parse("1001-1003").unwrap().frames(), &[1001, 1002, 1003]);
        for bad in ["", "5-1", "a", "1-3x0", "1--3", "1:5", "5x2", "5x1", "+1-3", "1-+3", "1-3x+2"] {
            assert!(FrameSpec::parse(bad).is_err(), "{bad}");
        }
        // `:` as a step, and spaces around the parts, as farms write them.
        assert_eq!(FrameSpec::parse("1-10:3").unwrap().frames(), &[1, 4, 7, 10]);
        assert!(FrameSpec::parse(" 1 - 3 , 5 x 2").is_err(), "a step needs a range");
        assert_eq!(FrameSpec::parse(" 1 - 3 , 7-9 x 2 ").unwrap().frames(), &[1, 2, 3, 7, 9]);
        // A step on a range, however short, is a range's step.
        assert_eq!(FrameSpec::parse("5-5x2").unwrap().frames(), &[5]);
        assert_eq!(FrameSpec::parse("4-5x2").unwrap().frames(), &[4]);
        let err = FrameSpec::parse("0-10000000").unwrap_err().to_string();
        assert!(err.contains("at most 10000000 frames"), "{err}");
        // A step counts: this range names a million frames.
        assert_eq!(FrameSpec::parse("0-99999999x100").unwrap().frames().len(), 1_000_000);
        // Many ranges, each allowed, but too many frames in all.
        let many: Vec<String> =
            (0..3u64).map(|i| format!("{}-{}", i * 20_000_000, i * 20_000_000 + 9_000_000)).collect();
        let err = FrameSpec::parse(&many.join(",")).unwrap_err().to_string();
        assert!(err.contains("at most 10000000 frames in all"), "{err}");
    }

    #[test]
    fn a_stepped_spec_holds_every_number_and_reads_back() {
        let cases: [(&[u64], &str); 6] = [
            (&[], ""),
            (&[5], "5"),
            (&[1, 2, 3, 5, 7, 9, 10, 20], "1-3,5-9x2,10,20"),
            (&[1001, 1003], "1001,1003"),
            (&[4, 8, 12, 13, 14], "4-12x4,13-14"),
            (&[0, u64::MAX], "0,18446744073709551615"),
        ];
        for (numbers, spec) in cases {
            assert_eq!(stepped_spec(numbers), spec);
            if !numbers.is_empty() {
                assert_eq!(FrameSpec::parse(spec).unwrap().frames(), numbers);
            }
        }
        let every: Vec<u64> = (1011..=1059).step_by(2).collect();
        assert_eq!(stepped_spec(&every), "1011-1059x2");
    }

    #[test]
    fn a_stray_percent_is_named() {
        for bad in ["a_%04d%.png", "100%_%04d.png", "a_%x_%d.png", "a_%-4d_####.png"] {
            assert!(FramePattern::is_pattern(bad), "{bad}");
            let err = FramePattern::parse(bad).unwrap_err().to_string();
            assert!(err.contains("is not a frame number field"), "{bad}: {err}");
        }
        // No field at all: a plain name, `%` included (one frame's output).
        assert!(!FramePattern::is_pattern("grade 50%.png"));
        let ok = FramePattern::parse("100%%_%04d.png").unwrap();
        assert_eq!(ok.path(7), Path::new("100%_0007.png"));
        // As an input that is not there: what is wrong with its `%` too.
        let t = tempfile::tempdir().unwrap();
        let input = t.path().join("shot_%s.png").display().to_string();
        let err = Sequence::scan(&input, None, MissingPolicy::Error).unwrap_err().to_string();
        assert!(err.contains("no such file, directory or frame pattern (the % at character 6"), "{err}");
    }

    #[test]
    fn compact() {
        assert_eq!(compact_runs(&[5..=5, 7..=9, 12..=12]), "5, 7-9, 12");
    }
}
