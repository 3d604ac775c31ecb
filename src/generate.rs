//! Synthetic sequences for demos, tests and benchmarks.
//!
//! The content is meant to cost codecs what real footage costs: smooth
//! gradients and soft moving shapes (which PNG's filters predict well) under
//! a fine film grain (which they cannot), neither flat nor pure noise. Every
//! pixel is a pure function of (x, y, frame, seed), so runs are repeatable.

use std::path::PathBuf;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::io::{EncodeOptions, HostFrame, OutputFormat, PixelFormat, write_frame_atomic};
use crate::sequence::FramePattern;

/// Parses `8k`, `4k`, `1080p`, `720p` or `WxH`.
///
/// # Errors
/// [`Error::InvalidValue`] for anything else, or a zero or huge size.
pub fn parse_size(s: &str) -> Result<(u32, u32)> {
    let bad = || Error::invalid("size", s, "8k, 4k, 1080p, 720p or WIDTHxHEIGHT (1 to 32768 each)");
    let (w, h) = match s.to_ascii_lowercase().as_str() {
        "8k" => (7680, 4320),
        "dci8k" => (8192, 4320),
        "4k" | "uhd" => (3840, 2160),
        "1080p" | "hd" => (1920, 1080),
        "720p" => (1280, 720),
        other => {
            let (w, h) = other.split_once('x').ok_or_else(bad)?;
            (w.trim().parse().map_err(|_| bad())?, h.trim().parse().map_err(|_| bad())?)
        }
    };
    if w == 0 || h == 0 || w > 32768 || h > 32768 {
        return Err(bad());
    }
    Ok((w, h))
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Number of frames. By default, 24.
    pub frames: u32,
    /// First frame number. By default, 1.
    pub start: u64,
    /// 8 or 16 bits per channel. By default, 8.
    pub format: PixelFormat,
    /// Write an alpha channel. By default, false.
    pub alpha: bool,
    /// Varies the content. By default, 1.
    pub seed: u64,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            width: 1920,
            height: 1080,
            frames: 24,
            start: 1,
            format: PixelFormat::Rgba8,
            alpha: false,
            seed: 1,
        }
    }
}

fn hash(mut x: u64) -> u64 {
    // SplitMix64 finaliser: cheap and well mixed.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Renders frame `n` of the synthetic sequence.
pub fn synthetic_frame(opts: &GenerateOptions, n: u64) -> HostFrame {
    let (w, h) = (opts.width as usize, opts.height as usize);
    let mut frame = HostFrame::new(opts.width, opts.height, opts.format, opts.alpha);
    let max = opts.format.max_value();
    let t = n as f32;
    let s = hash(opts.seed) as f32 / u64::MAX as f32;
    // A few soft discs drifting across the frame.
    let discs: Vec<[f32; 6]> = (0..6u64)
        .map(|k| {
            let r = |i: u64| hash(opts.seed.wrapping_mul(977).wrapping_add(k * 31 + i)) as f32 / u64::MAX as f32;
            let cx = (r(0) + 0.013 * t * (r(1) - 0.5)).rem_euclid(1.0);
            [cx, r(2), 0.05 + 0.15 * r(3), r(4), r(5), r(6)]
        })
        .collect();
    let aspect = w as f32 / h as f32;
    let bpp = opts.format.bytes_per_pixel();
    frame.data.par_chunks_mut(w * bpp).enumerate().for_each(|(y, row)| {
        let v = y as f32 / h as f32;
        for x in 0..w {
            let u = x as f32 / w as f32;
            let mut c = [0.18 + 0.45 * v, 0.25 + 0.35 * v, 0.55 - 0.3 * v];
            let wave = 0.04 * (u * 37.0 + t * 0.31 + s * 6.0).sin() * (v * 23.0 - t * 0.17).sin();
            for d in &discs {
                let dx = (u - d[0]) * aspect;
                let dy = v - d[1];
                let dist = (dx * dx + dy * dy).sqrt();
                let k = ((d[2] - dist) / (0.2 * d[2])).clamp(0.0, 1.0);
                for ch in 0..3 {
                    c[ch] = c[ch] * (1.0 - 0.6 * k) + 0.6 * k * d[3 + ch];
                }
            }
            let g = hash(((y * w + x) as u64) ^ (n << 40) ^ (opts.seed << 56));
            for ch in 0..4 {
                let grain = (((g >> (ch * 16)) & 0xffff) as f32 / 65535.0 - 0.5) * 0.012;
                let value = if ch == 3 { 0.75 + 0.25 * (u * 3.0 + t * 0.1).cos() } else { c[ch] + wave + grain };
                let q = (value.clamp(0.0, 1.0) * max + 0.5) as u16;
                match opts.format {
                    PixelFormat::Rgba8 => row[x * 4 + ch] = q as u8,
                    PixelFormat::Rgba16 => {
                        row[(x * 4 + ch) * 2..(x * 4 + ch) * 2 + 2].copy_from_slice(&q.to_ne_bytes())
                    }
                }
            }
        }
    });
    if !opts.alpha {
        // Opaque, so an RGB file and an RGBA frame agree.
        for i in 0..w * h {
            frame.set_channel(i * 4 + 3, max as u16);
        }
    }
    frame
}

/// Writes the sequence to `pattern`; returns the paths written.
///
/// # Errors
/// [`Error::OutputExists`] (unless `overwrite`), found before any frame is
/// made; an encode error (a name taken while generating among them),
/// which says the frames that were written.
pub fn generate_sequence(
    opts: &GenerateOptions,
    pattern: &str,
    encode: &EncodeOptions,
    overwrite: bool,
) -> Result<Vec<PathBuf>> {
    generate_sequence_with(opts, pattern, encode, overwrite, &|_| {})
}

/// Host memory the frames being generated at once may take, about: 8 GiB
/// (ten 8K 16-bit frames under way; one at a time past 1.3 GiB a frame).
const GENERATE_HOST_BYTES: u64 = 8 << 30;

/// [`generate_sequence`], calling `written` with each frame's number once
/// it is in place (from the threads writing them), for a progress bar.
/// Frames are started in order, so a run stopped part way has written a
/// first run of them (and the few under way), not scattered ones.
///
/// # Errors
/// As [`generate_sequence`].
pub fn generate_sequence_with(
    opts: &GenerateOptions,
    pattern: &str,
    encode: &EncodeOptions,
    overwrite: bool,
    written: &(dyn Fn(u64) + Sync),
) -> Result<Vec<PathBuf>> {
    crate::io::refuse_folder_name(pattern)?;
    if opts.frames == 0 || opts.frames as u64 > crate::sequence::MAX_SPEC_FRAMES {
        let most = crate::sequence::MAX_SPEC_FRAMES;
        return Err(Error::invalid("frame count", opts.frames, format!("1 to {most}, as many as process takes")));
    }
    // One frame may be named as written (as `process` takes it), `%` and
    // all; more need a frame number field.
    let name = pattern;
    let single = opts.frames == 1 && !FramePattern::is_pattern(name);
    let pattern = if single { None } else { Some(FramePattern::parse(name)?) };
    let path_of = |n: u64| pattern.as_ref().map_or_else(|| PathBuf::from(name), |p| p.path(n));
    let format = OutputFormat::from_path(std::path::Path::new(name))?;
    // A size the format cannot hold is refused before a frame is made.
    format.check_size(opts.width, opts.height)?;
    // What framepipe would refuse to read back is not worth writing (nor
    // the host memory it takes, one frame per core).
    let limit = crate::io::DecodeLimits::default().max_alloc;
    let bytes = opts.width as u64 * opts.height as u64 * opts.format.bytes_per_pixel() as u64;
    if bytes > limit {
        let bits = 8 * opts.format.bytes_per_pixel() / 4;
        return Err(Error::invalid(
            "frame size",
            format!("{}x{} at {bits} bits ({})", opts.width, opts.height, crate::ledger::human_bytes(bytes)),
            format!("at most {} per frame, what a frame may take when read", crate::ledger::human_bytes(limit)),
        ));
    }
    // Inclusive: frame u64::MAX is a frame like any other.
    let last = opts.start.checked_add(opts.frames as u64 - 1).ok_or_else(|| {
        let most = u64::MAX - (opts.frames as u64 - 1);
        Error::invalid(
            "start frame",
            opts.start,
            format!("at most {most}, for {} frames to end by {}", opts.frames, u64::MAX),
        )
    })?;
    // Removed again if a check below (or every frame) fails.
    let _made = crate::io::check_output_dir(crate::io::parent_dir(&path_of(opts.start)))?;
    // Every name checked before the first frame: no half-made sequence
    // because frame 5 of 10 was already there.
    for n in opts.start..=last {
        crate::io::check_output_free(&path_of(n), overwrite)?;
    }
    // Frames in parallel: the PNG encoder is single-threaded. None is
    // started after one failed (a full disk, a name another run took).
    let stop = std::sync::atomic::AtomicBool::new(false);
    // As many at once as cores, or as fit the host memory allowed: each
    // holds its frame and, while it is encoded, up to twice that more (a
    // TIFF built whole, channels packed), so 16 threads of 4 GiB frames
    // would take some 190 GiB.
    let cores = rayon::current_num_threads();
    let at_once = (GENERATE_HOST_BYTES / (3 * bytes.max(1))).clamp(1, cores as u64) as usize;
    let pool = |threads: usize, name: &'static str| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(move |i| format!("framepipe-{name}-{i}"))
            .build()
            .map_err(|e| Error::Thread { what: "generating frames".into(), source: std::io::Error::other(e) })
    };
    // Fewer frames at once than cores: each is still drawn on all of them.
    let (threads, draw) = if at_once < cores {
        (pool(at_once, "generate")?, Some(pool(cores, "draw")?))
    } else {
        (pool(at_once, "generate")?, None)
    };
    let synthetic_frame = |opts: &GenerateOptions, n| match &draw {
        Some(draw) => draw.install(|| synthetic_frame(opts, n)),
        None => synthetic_frame(opts, n),
    };
    // Taken in order by whichever thread is free (a split range would
    // start its halves at once).
    let mut results: Vec<(u64, Result<PathBuf>)> = threads.install(|| {
        (opts.start..=last)
            .par_bridge()
            .filter_map(|n| {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return None;
                }
                let path = path_of(n);
                let r = write_frame_atomic(&synthetic_frame(opts, n), &path, format, encode, overwrite).map(|()| path);
                match &r {
                    Ok(_) => written(n),
                    Err(_) => stop.store(true, std::sync::atomic::Ordering::Relaxed),
                }
                Some((n, r))
            })
            .collect()
    });
    results.sort_unstable_by_key(|(n, _)| *n);
    let mut written = Vec::new();
    let mut failed = None;
    for (n, r) in results {
        match r {
            Ok(path) => written.push((n, path)),
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    let Some(e) = failed else { return Ok(written.into_iter().map(|(_, p)| p).collect()) };
    // Past the checks, a name taken is one that appeared meanwhile
    // (another run writing there): the run failed, its arguments did not.
    // What it wrote is said, since the folder may now mix two runs.
    let (path, reason) = match e {
        Error::OutputExists(path) => (path, "it appeared while generating (another run writing there?)".to_string()),
        Error::Encode { path, reason } => (path, reason),
        // Made read-only since the checks (under --overwrite): as above,
        // the run's failure, not a usage error, with what it wrote said.
        Error::OutputReadOnly(path) => (path, "it was made read-only while generating, so it is not replaced".into()),
        Error::Io { path, source } => (path, source.to_string()),
        e => return Err(e),
    };
    let numbers: Vec<u64> = written.iter().map(|(n, _)| *n).collect();
    let wrote = match numbers.len() {
        0 => "no frame was written".to_string(),
        1 => format!("frame {} was written", numbers[0]),
        _ => format!("frames {} were written", crate::sequence::stepped_spec(&numbers)),
    };
    Err(Error::Encode { path, reason: format!("{reason}; {wrote}") })
}
