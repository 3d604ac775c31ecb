//! Decoding files into [`HostFrame`]s, with bounded allocations.

use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageReader};

use super::gray_alpha_tiff::GrayAlphaTiff;
use super::whole::check_jpeg_whole;
use super::{HostFrame, PixelFormat};
use crate::error::{Error, Result};

/// Bounds on what a decoder may allocate, so that a decompression bomb (a
/// small file that claims a huge size) is refused before it is allocated.
#[derive(Clone, Copy, Debug)]
pub struct DecodeLimits {
    /// Largest accepted width and height. By default, 32768 (4x 8K).
    pub max_dimension: u32,
    /// Most memory one frame's decode may hold at its peak, in bytes (its
    /// file, the decoded pixels, their RGBA copies). By default, 4 GiB.
    pub max_alloc: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits { max_dimension: 32768, max_alloc: 4 << 30 }
    }
}

/// Reads and decodes one frame. The format is sniffed from the content
/// first and the extension second, so a misnamed file still decodes and a
/// non-image with an image extension gets a decoder error naming it.
///
/// # Errors
/// [`Error::Decode`] naming the file for an empty, truncated, corrupt,
/// oversized or unsupported file; [`Error::Io`] when it cannot be opened.
pub fn decode_file(path: &Path, limits: &DecodeLimits) -> Result<HostFrame> {
    // The pipeline's own way, into a new buffer: a PNG row by row, an RGBA
    // source as decoded, an RGB one widened in batches (no frame-sized
    // copy on the way, which the limits count on).
    decode_file_with(path, limits, &Fresh, |_| Ok(()))
}

/// What a frame's header says it decodes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FrameInfo {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// RGBA8 or RGBA16 once widened.
    pub format: PixelFormat,
    /// Whether the source carries alpha.
    pub has_alpha: bool,
    /// Whether the source is grey (one channel, or grey and alpha): outputs
    /// of it stay grey where the ops keep it so ([`EncodeOptions::grey`](crate::io::EncodeOptions)).
    pub grey: bool,
    /// Whether the source holds 32-bit floats (a TIFF), clamped to 0..1 and
    /// read as 16 bits.
    pub float: bool,
    /// Whether that alpha is premultiplied (a TIFF's associated alpha): the
    /// decoders divide it out, as the ops and every output format take
    /// straight alpha.
    pub premultiplied: bool,
    /// Channels the source holds beyond color and alpha with no stated
    /// meaning (a TIFF's ExtraSamples 0: Photoshop's saved selections, a
    /// matte): not alpha, so not read, and not in the outputs.
    pub unnamed_channels: u16,
    /// Whether the file holds images past the one read: a multi-page
    /// TIFF's later pages, an animated PNG's frames (its default image is
    /// read). As other readers of stills take them, only the first.
    pub more_images: bool,
    /// Whether the file carries an ICC profile: the outputs carry none
    /// (the values are processed and stored as they are).
    pub icc_profile: bool,
    /// Whether the file carries an orientation (EXIF, a TIFF tag) other
    /// than as stored: not applied, the outputs hold the pixels as stored.
    pub oriented: bool,
}

impl FrameInfo {
    /// The source's channels and depth as people name them ("RGB 8-bit",
    /// "grey+alpha 16-bit", "RGBA 32-bit float"): what its outputs keep
    /// where their format can, unlike `format`, the RGBA it is worked as.
    pub fn layout(&self) -> String {
        let channels = match (self.grey, self.has_alpha) {
            (true, true) => "grey+alpha",
            (true, false) => "grey",
            (false, true) => "RGBA",
            (false, false) => "RGB",
        };
        if self.float { format!("{channels} 32-bit float") } else { format!("{channels} {}-bit", self.format.bits()) }
    }
}

/// Pixels per batch when widening RGB to RGBA: 64 KiB of RGBA8, which
/// stays in cache on its way to the destination.
const WIDEN_BATCH: usize = 16 * 1024;

/// Decodes one frame and hands its RGBA pixels to `sink` as `(byte offset,
/// bytes)` pieces in order, after `check` has accepted its header (so a
/// frame of the wrong size is refused before anything is written).
///
/// The point is the destination: the pipeline's sink copies into a slot's
/// mapped upload buffer, which may only be written. A PNG (non-interlaced)
/// is decoded one row at a time, each row widened to RGBA and handed on:
/// no frame-sized buffer at all, 1.4x (RGBA) to 1.7x (RGB) faster per 8K
/// frame than `image`'s whole decode and a copy (benches/decode.rs). Other RGB sources (JPEG, QOI) are decoded
/// whole and widened in small batches on their way, instead of through a
/// frame-sized RGBA copy that costs an allocation, its page faults and one
/// more pass over 132 MB per 8K frame. Other RGBA sources go in one piece;
/// other layouts take the general path.
///
/// # Errors
/// As [`decode_file`], plus whatever `check` or `sink` return.
pub fn decode_with(
    path: &Path,
    limits: &DecodeLimits,
    check: impl FnOnce(&FrameInfo) -> Result<()>,
    sink: impl FnMut(usize, &[u8]) -> Result<()>,
) -> Result<FrameInfo> {
    decode_with_buffers(path, limits, &Fresh, check, sink)
}

/// Where a whole-frame decode (any source but a non-interlaced PNG; an
/// interlaced one's decoded passes) takes its frame-sized buffer and gives
/// it back. The pipeline hands back
/// buffers its encoders are done with: a new 132 MB buffer per 8K frame
/// costs its page faults (32,000 of them) every time.
pub trait Buffers {
    /// A buffer of `len` bytes (its contents are overwritten).
    fn take(&self, len: usize) -> Vec<u8>;
    /// A buffer no longer needed.
    fn give(&self, buffer: Vec<u8>);
}

/// New buffers, dropped when done.
pub struct Fresh;

impl Buffers for Fresh {
    fn take(&self, len: usize) -> Vec<u8> {
        vec![0; len]
    }

    fn give(&self, _: Vec<u8>) {}
}

/// [`decode_with`], whole-frame decodes taking their buffer from `buffers`.
///
/// # Errors
/// As [`decode_with`].
pub fn decode_with_buffers(
    path: &Path,
    limits: &DecodeLimits,
    buffers: &dyn Buffers,
    check: impl FnOnce(&FrameInfo) -> Result<()>,
    mut sink: impl FnMut(usize, &[u8]) -> Result<()>,
) -> Result<FrameInfo> {
    let mut order = InOrder::default();
    let sink = |at: usize, px: &[u8]| {
        order.piece(path, at, px.len())?;
        sink(at, px)
    };
    let info = contained(path, || decode_to(path, limits, buffers, check, sink, None))?;
    order.finish(path, info.width as usize * info.height as usize * info.format.bytes_per_pixel())?;
    Ok(info)
}

/// Checks that a decoder's pieces arrive in order, each where the last
/// ended, and cover the frame: the destination (a recycled host buffer, a
/// GPU slot's upload) holds an earlier frame's pixels, so a gap would
/// pass them off as this one's.
#[derive(Default)]
struct InOrder {
    written: usize,
}

impl InOrder {
    fn piece(&mut self, path: &Path, at: usize, len: usize) -> Result<()> {
        if at != self.written {
            let reason = format!("the decoder wrote at byte {at} of the frame, where {} was next", self.written);
            return Err(Error::Decode { path: path.to_owned(), reason });
        }
        self.written = at.saturating_add(len);
        Ok(())
    }

    fn finish(&self, path: &Path, bytes: usize) -> Result<()> {
        if self.written != bytes {
            let reason = format!("the decoder gave {} of the frame's {bytes} bytes", self.written);
            return Err(Error::Decode { path: path.to_owned(), reason });
        }
        Ok(())
    }
}

/// [`decode_file`] into a buffer from `buffers`, after `check` has
/// accepted the header: an RGBA source decoded whole becomes the frame's
/// buffer as it is, other sources are written into one.
///
/// # Errors
/// As [`decode_with`].
pub fn decode_file_with(
    path: &Path,
    limits: &DecodeLimits,
    buffers: &dyn Buffers,
    check: impl FnOnce(&FrameInfo) -> Result<()>,
) -> Result<HostFrame> {
    let bytes = std::cell::Cell::new(0);
    let check = |info: &FrameInfo| {
        check(info)?;
        bytes.set(info.width as usize * info.height as usize * info.format.bytes_per_pixel());
        Ok(())
    };
    let mut data = Vec::new();
    let mut whole = None;
    let mut order = InOrder::default();
    let sink = |at: usize, px: &[u8]| {
        order.piece(path, at, px.len())?;
        if data.is_empty() {
            data = buffers.take(bytes.get());
        }
        let piece = data.get_mut(at..at.saturating_add(px.len())).ok_or_else(|| Error::Decode {
            path: path.to_owned(),
            reason: format!("{} bytes at offset {at} overrun the frame", px.len()),
        })?;
        piece.copy_from_slice(px);
        Ok(())
    };
    let FrameInfo { width, height, format, has_alpha, .. } =
        contained(path, || decode_to(path, limits, buffers, check, sink, Some(&mut whole)))?;
    let data = match whole {
        Some(whole) => whole,
        None => {
            order.finish(path, bytes.get())?;
            data
        }
    };
    Ok(HostFrame { width, height, format, has_alpha, data })
}

/// [`decode_with_buffers`]; with `whole`, an RGBA source decoded whole is
/// left there instead of going through `sink`.
fn decode_to(
    path: &Path,
    limits: &DecodeLimits,
    buffers: &dyn Buffers,
    check: impl FnOnce(&FrameInfo) -> Result<()>,
    mut sink: impl FnMut(usize, &[u8]) -> Result<()>,
    whole: Option<&mut Option<Vec<u8>>>,
) -> Result<FrameInfo> {
    use image::ColorType;
    let check = |info: &FrameInfo| ours(|| check(info));
    let mut sink = |at: usize, px: &[u8]| ours(|| sink(at, px));
    let fail = |reason: String| Error::Decode { path: path.to_owned(), reason };
    let (decoder, format, info) = open_decoder(path, limits)?;
    // A codec's refusal found only as the pixels are read (a TIFF's
    // compression), said as the kind of file it is where its tags tell.
    let refused = |e: image::ImageError| fail(codec_said(path, format, &e));
    let (color, sixteen) = (decoder.color_type(), info.format == PixelFormat::Rgba16);
    check(&info)?;
    check_jpeg_whole(path, format)?;
    if stream_png(path, limits, &info, buffers, &mut sink)? {
        return Ok(info);
    }
    let read = |decoder: Box<dyn ImageDecoder + '_>| -> Result<Vec<u8>> {
        let mut buf = buffers.take(decoder.total_bytes() as usize);
        match decoder.read_image_boxed(&mut buf) {
            Ok(()) => Ok(buf),
            Err(e) => {
                buffers.give(buf);
                Err(refused(e))
            }
        }
    };
    match color {
        ColorType::Rgba8 | ColorType::Rgba16 => {
            let mut rgba = read(decoder)?;
            if info.premultiplied {
                unpremultiply(&mut rgba, info.format);
            }
            match whole {
                Some(whole) => *whole = Some(rgba),
                None => {
                    let sent = sink(0, &rgba);
                    buffers.give(rgba);
                    sent?
                }
            }
        }
        ColorType::Rgb8 | ColorType::Rgb16 => {
            let rgb = read(decoder)?;
            // Bytes per pixel in and out.
            let (inp, out) = if sixteen { (6, 8) } else { (3, 4) };
            let mut batch = vec![0u8; WIDEN_BATCH * out];
            let sent = rgb.chunks(WIDEN_BATCH * inp).enumerate().try_for_each(|(i, pixels)| {
                let n = pixels.len() / inp;
                widen(pixels, &mut batch[..n * out], sixteen);
                sink(i * WIDEN_BATCH * out, &batch[..n * out])
            });
            buffers.give(rgb);
            sent?
        }
        _ => {
            let image = DynamicImage::from_decoder(decoder).map_err(refused)?;
            sink(0, &straight_frame(image, &info).data)?;
        }
    }
    Ok(info)
}

/// The eight bytes every PNG file starts with.
const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

/// Streams a PNG to `sink` one row at a time, widened to RGBA on the way:
/// no frame-sized buffer at all, the decoder's output goes straight to the
/// destination (mapped staging, for the pipeline). The same decoder and
/// expansion `image` uses, so the pixels are the ones [`decode_file`]
/// gives. An interlaced PNG (its rows arrive in seven passes) is decoded
/// whole first. Returns false, having written nothing, for anything but a
/// PNG.
fn stream_png(
    path: &Path,
    limits: &DecodeLimits,
    info: &FrameInfo,
    buffers: &dyn Buffers,
    sink: &mut impl FnMut(usize, &[u8]) -> Result<()>,
) -> Result<bool> {
    use std::io::Read;
    let fail = |reason: String| Error::Decode { path: path.to_owned(), reason };
    let file = open_frame(path)?;
    let mut file = std::io::BufReader::new(file);
    let mut signature = [0u8; 8];
    if file.read_exact(&mut signature).is_err() || signature != PNG_SIGNATURE {
        return Ok(false);
    }
    std::io::Seek::rewind(&mut file).map_err(|source| Error::Io { path: path.to_owned(), source })?;
    let png_limits = png::Limits { bytes: png_side_bytes(limits) };
    let mut decoder = png::Decoder::new_with_limits(file, png_limits);
    // Nothing reads them here: a 4 MB file's profile may inflate to GBs.
    decoder.set_ignore_iccp_chunk(true);
    decoder.set_ignore_text_chunk(true);
    decoder.set_transformations(png::Transformations::EXPAND);
    // Every checksum verified: the data's own (Adler-32), off by default
    // in `png`, is what finds a corrupt stream whose chunk CRCs were
    // rewritten to match (a buggy writer); unverified, it decodes to
    // wrong pixels without a word. (`png` checks it as it reads it: a
    // trailer in a chunk of its own after the last row's data is not
    // read. Nor is what follows the image data: an APNG's later frames,
    // which another reader may reject, are not this one's concern.)
    decoder.ignore_checksums(false);
    let decoding = |e: png::DecodingError| match e.to_string() {
        e if e.contains("WrongChecksum") => fail("corrupt image data (its checksum does not match)".into()),
        e if e.contains("Corrupt deflate stream") => {
            fail("corrupt image data (its compressed stream is broken)".into())
        }
        e => fail(one_line(&e)),
    };
    let mut reader = decoder.read_info().map_err(decoding)?;
    let (color, depth) = reader.output_color_type();
    let sixteen = depth == png::BitDepth::Sixteen;
    let (width, height) = (reader.info().width, reader.info().height);
    if (width, height) != (info.width, info.height) || sixteen != (info.format == PixelFormat::Rgba16) {
        return Ok(false);
    }
    let row_bytes = width as usize * info.format.bytes_per_pixel();
    let mut rgba = vec![0u8; row_bytes];
    let mut emit = |row: usize, data: &[u8]| {
        let at = row * row_bytes;
        if color == png::ColorType::Rgba && !sixteen {
            sink(at, data)
        } else {
            expand_row(data, color.samples(), sixteen, &mut rgba);
            sink(at, &rgba)
        }
    };
    let mut rows = 0;
    if reader.info().interlaced {
        // Its rows arrive in seven passes: whole, then row by row.
        let size = reader.output_buffer_size().ok_or_else(|| fail("too large to decode".into()))?;
        let mut frame = buffers.take(size);
        let sent = reader.next_frame(&mut frame).map_err(decoding).and_then(|out| {
            frame.chunks_exact(out.line_size).take(height as usize).try_for_each(|line| {
                emit(rows, line)?;
                rows += 1;
                Ok(())
            })
        });
        buffers.give(frame);
        sent?;
    } else {
        while let Some(row) = reader.next_row().map_err(decoding)? {
            emit(rows, row.data())?;
            rows += 1;
        }
    }
    if rows != height as usize {
        return Err(fail(format!("image data ends after {rows} of {height} rows")));
    }
    Ok(true)
}

/// One decoded PNG row (gray, gray + alpha, RGB or RGBA; 16-bit samples
/// big-endian, as PNG stores them) to RGBA in native byte order, opaque
/// where the source has no alpha, as `image` converts it.
fn expand_row(row: &[u8], channels: usize, sixteen: bool, rgba: &mut [u8]) {
    if channels == 3 && !sixteen {
        return widen(row, rgba, false);
    }
    // Which source sample feeds R, G, B and A (`None`: opaque).
    let from: [Option<usize>; 4] = match channels {
        1 => [Some(0), Some(0), Some(0), None],
        2 => [Some(0), Some(0), Some(0), Some(1)],
        3 => [Some(0), Some(1), Some(2), None],
        _ => [Some(0), Some(1), Some(2), Some(3)],
    };
    if sixteen {
        for (o, i) in rgba.chunks_exact_mut(8).zip(row.chunks_exact(2 * channels)) {
            for (k, f) in from.iter().enumerate() {
                let v = f.map_or(u16::MAX, |c| u16::from_be_bytes([i[2 * c], i[2 * c + 1]]));
                o[2 * k..2 * k + 2].copy_from_slice(&v.to_ne_bytes());
            }
        }
    } else {
        for (o, i) in rgba.chunks_exact_mut(4).zip(row.chunks_exact(channels)) {
            for (k, f) in from.iter().enumerate() {
                o[k] = f.map_or(u8::MAX, |c| i[c]);
            }
        }
    }
}

/// RGB to RGBA with an opaque alpha, 8 or 16 bits per channel.
fn widen(rgb: &[u8], rgba: &mut [u8], sixteen: bool) {
    if sixteen {
        for (o, i) in rgba.chunks_exact_mut(8).zip(rgb.chunks_exact(6)) {
            o[..6].copy_from_slice(i);
            o[6..].copy_from_slice(&[0xff, 0xff]);
        }
    } else {
        for (o, i) in rgba.chunks_exact_mut(4).zip(rgb.chunks_exact(3)) {
            o.copy_from_slice(&[i[0], i[1], i[2], 0xff]);
        }
    }
}

/// What `image` does not say of a TIFF: whether its alpha is associated
/// (premultiplied; ExtraSamples 1), how many extra samples of no stated
/// meaning (ExtraSamples 0) it leaves out, and whether it holds more pages
/// ([`tiff_later_images`]), returned, from one read of its tags. Refuses 32-bit
/// samples without a SampleFormat tag, which means unsigned integers:
/// `image` reads them as floats (mid-grey 0x80000000 becomes -0.0, black),
/// so the pixels would be wrong.
fn tiff_extra_samples(path: &Path, color: image::ColorType) -> Result<(bool, u16, bool)> {
    use image::ColorType::{Rgb32F, Rgba32F};
    use tiff::tags::Tag;
    let fail = |reason: String| Error::Decode { path: path.to_owned(), reason };
    let file = open_frame(path)?;
    let Ok(mut tiff) = tiff::decoder::Decoder::new(std::io::BufReader::new(file)) else {
        return Ok((false, 0, false));
    };
    if matches!(color, Rgb32F | Rgba32F) {
        match tiff.find_tag(Tag::SampleFormat) {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(fail("32-bit integer samples are not supported (8 or 16 bits, or 32-bit float)".into()));
            }
            Err(e) => return Err(fail(one_line(&e.to_string()))),
        }
    }
    // (Unreadable, it fails a frame with alpha, whose kind it says; a frame
    // without is read as before, its extra samples uncounted.)
    let extra = match tiff.find_tag(Tag::ExtraSamples) {
        Ok(extra) => extra,
        Err(e) if color.has_alpha() => return Err(fail(one_line(&e.to_string()))),
        Err(_) => None,
    };
    let extra = extra.and_then(|v| v.into_u16_vec().ok()).unwrap_or_default();
    // The alpha is the first extra sample (the decoders take no other).
    let (alpha, rest) = if color.has_alpha() { extra.split_first().unzip() } else { (None, Some(&extra[..])) };
    let unnamed = rest.unwrap_or_default().iter().filter(|&&e| e == 0).count();
    // A first image of reduced resolution (NewSubfileType bit 0) before
    // another image is a thumbnail written first: read, it would be the
    // frame. (The later one may be flagged reduced too, as some writers
    // flag every page: the first is still not the picture.)
    let kind = tiff.find_tag_unsigned::<u32>(Tag::NewSubfileType).ok().flatten().unwrap_or(0);
    let Later { pages: more, images } = tiff_later_images(&mut tiff);
    if kind & 1 != 0 && images {
        return Err(fail(
            "its first image is a reduced-resolution preview (a thumbnail) before the full one; framepipe reads a TIFF's first image: save the full-resolution image first".into(),
        ));
    }
    Ok((alpha == Some(&1), u16::try_from(unnamed).unwrap_or(u16::MAX), more))
}

/// What a TIFF holds after its first image.
#[derive(Default)]
struct Later {
    /// A page: an image of full resolution (NewSubfileType without its
    /// reduced-resolution or mask bit; a thumbnail, a pyramid level or a
    /// transparency mask is no page).
    pages: bool,
    /// Any image that is not a transparency mask.
    images: bool,
}

/// Looks at a few directories at most, from `tiff`'s first on, for what
/// follows it ([`Later`]).
fn tiff_later_images<R: std::io::Read + std::io::Seek>(tiff: &mut tiff::decoder::Decoder<R>) -> Later {
    let mut later = Later::default();
    for _ in 0..16 {
        if !tiff.more_images() || tiff.next_image().is_err() {
            break;
        }
        // Bit 0: a reduced-resolution version, bit 2: a transparency mask.
        let kind = tiff.find_tag_unsigned::<u32>(tiff::tags::Tag::NewSubfileType).ok().flatten().unwrap_or(0);
        later.images |= kind & 0b100 == 0;
        if kind & 0b101 == 0 {
            later.pages = true;
            break;
        }
    }
    later
}

/// A codec's error `e` on the file at `path` (of `format`) as one line: a
/// TIFF's refusal as the kind of file it is, where its tags tell ([`tiff_refusal`];
/// only a refusal: a bilevel TIFF cut short is truncated, not a kind of
/// file that is not read).
fn codec_said(path: &Path, format: Option<image::ImageFormat>, e: &image::ImageError) -> String {
    let said = e.to_string();
    let refusal = format == Some(image::ImageFormat::Tiff) && matches!(e, image::ImageError::Unsupported(_));
    refusal.then(|| tiff_refusal(path, &said)).flatten().unwrap_or_else(|| one_line(&said))
}

/// The kind of TIFF `image` refused, in a user's terms (`a palette TIFF`),
/// where its tags say it: the codec's own words name its internal types
/// (`color type Unknown(24)`, `sample format 3 for 16 bits`).
fn tiff_refusal(path: &Path, error: &str) -> Option<String> {
    use tiff::tags::Tag;
    let file = open_frame(path).ok()?;
    let mut tiff = tiff::decoder::Decoder::new(std::io::BufReader::new(file)).ok()?;
    let first = |tiff: &mut tiff::decoder::Decoder<_>, tag| {
        tiff.find_tag_unsigned_vec::<u32>(tag).ok().flatten().and_then(|v| v.first().copied())
    };
    if error.contains("compression") {
        let code = first(&mut tiff, Tag::Compression)?;
        let name = match code {
            2 => "CCITT modified Huffman".to_string(),
            3 => "CCITT Group 3 fax".into(),
            6 => "old-style JPEG".into(),
            34661 => "JBIG".into(),
            34676 | 34677 => "SGILog".into(),
            34712 => "JPEG 2000".into(),
            34925 => "LZMA".into(),
            50000 => "Zstandard".into(),
            50001 => "WebP".into(),
            code => format!("compression method {code}"),
        };
        return Some(format!(
            "a TIFF compressed with {name}, which framepipe does not read (uncompressed, LZW, Deflate, PackBits, JPEG or Group 4 fax)"
        ));
    }
    let photometric = first(&mut tiff, Tag::PhotometricInterpretation)?;
    let bits = first(&mut tiff, Tag::BitsPerSample).unwrap_or(1);
    let sample_format = first(&mut tiff, Tag::SampleFormat).unwrap_or(1);
    let kind = match (photometric, sample_format, bits) {
        (3, ..) => "a palette (indexed color) TIFF".to_string(),
        (4, ..) => "a transparency mask TIFF".into(),
        (6, ..) => "a YCbCr TIFF".into(),
        (8..=10, ..) => "a CIELab TIFF".into(),
        (32844 | 32845, ..) => "a LogLuv TIFF".into(),
        (_, 2, _) => format!("a TIFF of {bits}-bit signed integers"),
        (_, 3, 32) => return None,
        (_, 3, _) => format!("a TIFF of {bits}-bit floats"),
        (_, _, 8 | 16) => return None,
        _ => format!("a TIFF of {bits}-bit samples"),
    };
    Some(format!("{kind}, which framepipe does not read (RGB or grey: 8 or 16 bits, or 32-bit float)"))
}

/// Refuses a file that does not begin as any image framepipe reads does
/// (PNG, JPEG, TIFF and QOI all have a signature): a text file, or
/// another kind, under an image's name. Left to the decoder its name picks,
/// it would say what it made of the bytes (`invalid number of channels:
/// 114`, the letter `r`).
/// `file` is read from its start and left there again.
fn refuse_unsigned(path: &Path, mut file: &std::fs::File) -> Result<()> {
    use std::io::{Read, Seek};
    let io = |source| Error::Io { path: path.to_owned(), source };
    let mut head = Vec::with_capacity(16);
    file.by_ref().take(16).read_to_end(&mut head).map_err(io)?;
    file.rewind().map_err(io)?;
    // Classic and big TIFF, either byte order; a JPEG's SOI and a marker.
    const SIGNATURES: [&[u8]; 7] =
        [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\0", b"MM\0*", b"II+\0", b"MM\0+", b"qoif"];
    if SIGNATURES.iter().any(|s| head.starts_with(s)) {
        return Ok(());
    }
    let named = path.extension().map(|e| e.to_string_lossy().to_uppercase()).unwrap_or_default();
    let family = match named.as_str() {
        "JPG" => "JPEG",
        "TIF" => "TIFF",
        other => other,
    };
    let others: Vec<&str> = ["PNG", "JPEG", "TIFF", "QOI"].into_iter().filter(|f| *f != family).collect();
    let (last, rest) = others.split_last().expect("three others, or four");
    let reason = if head.len() < 8 {
        format!("{} bytes, too short for an image file", head.len())
    } else if others.len() == 3 {
        format!("not a {named} file: it does not begin as one (nor as a {} or {last} file)", rest.join(", "))
    } else {
        // No extension, or one the content decides (`plate.0001`).
        format!("not a {} or {last} file: it begins as none of them", rest.join(", "))
    };
    Err(Error::Decode { path: path.to_owned(), reason })
}

/// The decoder for a file, with the size and allocation limits applied
/// before anything is decoded, and the format it found.
fn open_decoder<'a>(
    path: &'a Path,
    limits: &DecodeLimits,
) -> Result<(Box<dyn ImageDecoder + 'a>, Option<image::ImageFormat>, FrameInfo)> {
    let fail = |reason: String| Error::Decode { path: path.to_owned(), reason };
    let io = |source| Error::Io { path: path.to_owned(), source };
    // Opened once: checked, its signature read, then decoded.
    let file = open_frame(path)?;
    let meta = file.metadata().map_err(io)?;
    if meta.len() == 0 {
        return Err(fail("file is empty (0 bytes)".into()));
    }
    // Some decoders (JPEG) read the whole file first: one larger than what
    // a frame may take is no frame.
    if meta.len() > limits.max_alloc {
        return Err(fail(format!("{} bytes, over the {}-byte decode limit", meta.len(), limits.max_alloc)));
    }
    refuse_unsigned(path, &file)?;
    // The name's format first, as `ImageReader::open` takes it: the
    // content's guess misses some (BigTIFF).
    let mut reader = ImageReader::new(std::io::BufReader::new(file));
    if let Ok(named) = image::ImageFormat::from_path(path) {
        reader.set_format(named);
    }
    let mut reader = reader.with_guessed_format().map_err(|e| fail(e.to_string()))?;
    let format = reader.format();
    let mut image_limits = image::Limits::default();
    // A PNG decoder's own allocations are its chunks' (an ICC profile, text,
    // inflated whole) and a row, never the frame (counted below): bounded
    // apart, or a small file whose profile inflates to gigabytes takes them.
    image_limits.max_alloc =
        Some(if format == Some(image::ImageFormat::Png) { png_side_bytes(limits) as u64 } else { limits.max_alloc });
    reader.limits(image_limits);
    let mut float = false;
    let mut decoder: Box<dyn ImageDecoder + 'a> = match reader.into_decoder() {
        Ok(decoder) => Box::new(decoder),
        Err(e) if format == Some(image::ImageFormat::Tiff) => match GrayAlphaTiff::open(path, limits.max_alloc) {
            Ok(Some(decoder)) => {
                float = decoder.float();
                Box::new(decoder)
            }
            Ok(None) => return Err(fail(codec_said(path, format, &e))),
            Err(reason) => return Err(fail(reason)),
        },
        // Said as what it is, not as the decoder's confusion ("number of
        // components cannot be zero").
        Err(_)
            if format == Some(image::ImageFormat::Jpeg)
                && super::whole::jpeg_frame_header(path)?.is_some_and(|(sof, _)| super::whole::jpeg_lossless(sof)) =>
        {
            return Err(fail("a lossless JPEG (SOF3 or JPEG-LS), which framepipe does not read".into()));
        }
        Err(e) => return Err(fail(one_line(&e.to_string()))),
    };
    let (w, h) = decoder.dimensions();
    // Before any metadata is read (an ICC profile, a TIFF's tags), which a
    // file claiming a huge image may size by its claim.
    if w > limits.max_dimension || h > limits.max_dimension {
        return Err(fail(format!("{w}x{h} exceeds the {0}x{0} size limit", limits.max_dimension)));
    }
    let mut info = header(decoder.as_ref());
    info.float |= float;
    // (Unreadable, neither is anything to speak of: the pixels decode.)
    info.icc_profile = decoder.icc_profile().is_ok_and(|p| p.is_some());
    info.oriented = decoder.orientation().is_ok_and(|o| o != image::metadata::Orientation::NoTransforms);
    match format {
        Some(image::ImageFormat::Tiff) => {
            (info.premultiplied, info.unnamed_channels, info.more_images) =
                tiff_extra_samples(path, decoder.color_type())?;
        }
        Some(image::ImageFormat::Png) => info.more_images = super::whole::png_animated(path)?,
        _ => {}
    }
    // Frames are widened to RGBA: a gray or RGB source needs up to 4x its
    // decoded size once widened.
    let widened = w as u64 * h as u64 * info.format.bytes_per_pixel() as u64;
    // At the peak, on every path ([`decode_to`]): a PNG streamed row by
    // row holds only the frame (an interlaced one its decoded whole
    // besides); any other RGBA source is decoded into the frame's buffer; an RGB one is decoded whole
    // and widened into the frame; other layouts (grey, float, palette) are
    // decoded, converted to RGBA and copied out, three frames of it. A
    // JPEG decoder holds its file as well (a progressive one every
    // coefficient too, two bytes per component per pixel at most, as at
    // 4:4:4), and a TIFF decoder its own copy
    // of the decoded samples (twice the size for grey floats, which ours
    // hands on as 16 bits; four samples a pixel for CMYK).
    use image::ColorType as C;
    let total = decoder.total_bytes();
    let png = format == Some(image::ImageFormat::Png);
    let needs = match decoder.color_type() {
        // By rows into the frame; interlaced, decoded whole, then by rows.
        _ if png && !png_interlaced(path)? => widened,
        _ if png => total.saturating_add(widened),
        C::Rgba8 | C::Rgba16 => total,
        C::Rgb8 | C::Rgb16 => total.saturating_add(widened),
        _ => total.saturating_add(widened.saturating_mul(3)),
    };
    let needs = match format {
        Some(image::ImageFormat::Jpeg) => {
            let coefficients = match super::whole::jpeg_frame_header(path)? {
                Some((sof, components)) if super::whole::jpeg_progressive(sof) => {
                    (w as u64 * h as u64).saturating_mul(2 * u64::from(components))
                }
                _ => 0,
            };
            needs.saturating_add(meta.len()).saturating_add(coefficients)
        }
        Some(image::ImageFormat::Tiff) => {
            // Its copy holds the samples as stored: four a pixel for CMYK,
            // which `image` hands on as RGB, three; two for grey with a
            // sample left out, handed on as grey.
            let stored = match decoder.original_color_type() {
                image::ExtendedColorType::Cmyk8 | image::ExtendedColorType::Cmyk16 => total / 3 * 4,
                image::ExtendedColorType::La8 | image::ExtendedColorType::La16 if !info.has_alpha => total * 2,
                _ => total,
            };
            needs.saturating_add(stored.saturating_mul(if info.grey && info.float { 2 } else { 1 }))
        }
        _ => needs,
    };
    if needs > limits.max_alloc {
        return Err(fail(format!("{w}x{h} needs {needs} bytes, over the {}-byte decode limit", limits.max_alloc)));
    }
    Ok((decoder, format, info))
}

/// Opens a frame's file to read it. A pipe put in its place while a run
/// goes (a scan refuses one found before) would hold the open until a
/// writer came, and the run with it: opened without waiting, and refused
/// as what it is not, as a folder put there is.
///
/// # Errors
/// [`Error::Io`] when it cannot be opened; [`Error::Decode`] for what is
/// not a file.
fn open_frame(path: &Path) -> Result<std::fs::File> {
    let io = |source| Error::Io { path: path.to_owned(), source };
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path).map_err(io)?;
    // (A file's reads never wait: the flag changes nothing for one.)
    if !file.metadata().map_err(io)?.is_file() {
        let reason = "not a file (a folder, a pipe or a device) in the frame's place".to_string();
        return Err(Error::Decode { path: path.to_owned(), reason });
    }
    Ok(file)
}

/// What a PNG decoder may allocate besides the frame (ancillary chunks, an
/// ICC profile inflated, a row): the `png` crate's own default, 64 MiB, or
/// the decode limit if that is less.
fn png_side_bytes(limits: &DecodeLimits) -> usize {
    usize::try_from(limits.max_alloc.min(64 << 20)).unwrap_or(usize::MAX)
}

/// Whether the PNG at `path` is interlaced (Adam7): decoded whole, not
/// streamed by rows. Its header says so at a fixed place, in the first
/// chunk; a file too short to hold it is left to the decoder to refuse.
fn png_interlaced(path: &Path) -> Result<bool> {
    use std::io::Read;
    let file = open_frame(path)?;
    let mut head = Vec::with_capacity(29);
    file.take(29).read_to_end(&mut head).map_err(|source| Error::Io { path: path.to_owned(), source })?;
    Ok(head.len() == 29 && head[..8] == PNG_SIGNATURE && &head[12..16] == b"IHDR" && head[28] != 0)
}

/// Reads only the header: size and whether the frame decodes to RGBA8 or
/// RGBA16. Used to size frame slots before any frame is decoded.
///
/// # Errors
/// As [`decode_file`].
pub fn probe_file(path: &Path, limits: &DecodeLimits) -> Result<(u32, u32, PixelFormat)> {
    let info = probe_info(path, limits)?;
    Ok((info.width, info.height, info.format))
}

/// Reads only the header: [`probe_file`], and whether the frame has alpha.
///
/// # Errors
/// As [`decode_file`].
pub fn probe_info(path: &Path, limits: &DecodeLimits) -> Result<FrameInfo> {
    contained(path, || Ok(open_decoder(path, limits)?.2))
}

thread_local! {
    /// How deep this thread is in [`contained`] decoder calls.
    static DECODING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Set when a panic unwinds out of [`ours`]: framepipe's, not the codec's.
    static OURS_PANICKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs the caller's own code (a header check, a sink writing pixels into
/// staging) from inside [`contained`] decoding work: a panic there is a
/// bug of framepipe's, not the file's, so the panic hook sees it as one
/// and it goes on unwinding past [`contained`], never a decode error that
/// `--on-error skip` would pass over.
fn ours<T>(work: impl FnOnce() -> T) -> T {
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            DECODING.with(|d| d.set(self.0));
            if std::thread::panicking() {
                OURS_PANICKED.with(|p| p.set(true));
            }
        }
    }
    let _restore = Restore(DECODING.with(|d| d.replace(0)));
    work()
}

/// Whether this thread is running a decoder, whose panic becomes its
/// file's [`Error::Decode`] (or a GPU poll, whose panic is a lost
/// device's [`Error::Gpu`]): a panic hook can leave such a panic unprinted
/// (the `framepipe` binary does), the error line saying it instead.
pub fn in_decoder() -> bool {
    DECODING.with(|d| d.get() > 0)
}

/// Installs a panic hook that leaves decoders' panics unprinted (each is
/// already its file's one-line decode error: see [`in_decoder`]) and hands
/// every other panic to the hook that was there. For a program that reads
/// files its users bring: a codec's bug on an odd file would otherwise
/// print a crash report each time the frame is asked for. Call it once,
/// early in `main`.
pub fn quiet_decoder_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !in_decoder() {
            previous(info)
        }
    }));
}

/// Runs `work`, a library call that reports a failure by panicking (wgpu's
/// poll of a lost device), with the panic caught and counted as a
/// decoder's ([`in_decoder`]): unprinted under [`quiet_decoder_panics`],
/// the caller's one-line error says it instead.
pub(crate) fn catch_quiet<T>(work: impl FnOnce() -> T) -> std::thread::Result<T> {
    DECODING.with(|d| d.set(d.get() + 1));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
    DECODING.with(|d| d.set(d.get() - 1));
    result
}

/// Runs decoding work on `path`, a panic in it becoming the file's decode
/// error. Codecs have bugs that only odd files reach (a planar, tiled TIFF
/// whose edge tiles overhang the image trips an assertion in `tiff`): that
/// is one bad frame, skipped under `--on-error skip` like any other, not
/// the end of the run, nor of the program on the one-frame-at-a-time path.
fn contained<T>(path: &Path, work: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_quiet(work).unwrap_or_else(|payload| {
        if OURS_PANICKED.with(|p| p.replace(false)) {
            std::panic::resume_unwind(payload);
        }
        let reason = format!("the decoder failed on it: {}", one_line(&crate::error::panic_message(&*payload)));
        Err(Error::Decode { path: path.to_owned(), reason })
    })
}

/// What a decoder's header says the frame widens to.
fn header(decoder: &dyn ImageDecoder) -> FrameInfo {
    let (width, height) = decoder.dimensions();
    let color = decoder.color_type();
    let sixteen = color.bytes_per_pixel() / color.channel_count() > 1;
    let format = if sixteen { PixelFormat::Rgba16 } else { PixelFormat::Rgba8 };
    let grey = color.channel_count() <= 2;
    let float = matches!(color, image::ColorType::Rgb32F | image::ColorType::Rgba32F);
    FrameInfo {
        width,
        height,
        format,
        has_alpha: color.has_alpha(),
        grey,
        float,
        premultiplied: false,
        unnamed_channels: 0,
        more_images: false,
        icc_profile: false,
        oriented: false,
    }
}

/// `image` (decoded from a source `info` describes) as a frame with
/// straight alpha. NaN float samples read as 0. A float source's color is
/// divided by its alpha in f32, before it is clamped and rounded to 16
/// bits: divided after, the rounding would grow by 1/alpha (500 steps at
/// alpha 0.001). Integer sources are divided as stored. (A grey-alpha
/// float TIFF's reader divides its own.)
fn straight_frame(image: DynamicImage, info: &FrameInfo) -> HostFrame {
    // NaN samples read as 0, as grey float TIFFs' do (`image` would make
    // them white): a NaN alpha is a transparent pixel, its color 0.
    let zero_nan = |v: &mut f32| {
        if v.is_nan() {
            *v = 0.0;
        }
    };
    let image = match image {
        DynamicImage::ImageRgb32F(mut float) => {
            float.iter_mut().for_each(zero_nan);
            DynamicImage::ImageRgb32F(float)
        }
        DynamicImage::ImageRgba32F(mut float) => {
            float.iter_mut().for_each(zero_nan);
            if info.premultiplied {
                for px in float.pixels_mut() {
                    let a = px[3];
                    px.0[..3].iter_mut().for_each(|c| *c = straight_f32(*c, a));
                }
            }
            DynamicImage::ImageRgba32F(float)
        }
        other => other,
    };
    let mut frame = from_dynamic(image);
    if info.premultiplied && !info.float {
        unpremultiply(&mut frame.data, frame.format);
    }
    frame
}

/// A premultiplied float color `c` of alpha `a` made straight: 0 where
/// there is no alpha (0, or NaN).
pub(super) fn straight_f32(c: f32, a: f32) -> f32 {
    if a > 0.0 { c / a } else { 0.0 }
}

/// Premultiplied RGBA to straight: each color divided by its alpha, rounded
/// to nearest and clamped (a color above its alpha is not a valid
/// premultiplied value); where alpha is 0 the color is 0.
fn unpremultiply(data: &mut [u8], format: PixelFormat) {
    fn divide(c: u32, a: u32, max: u32) -> u32 {
        (c * max + a / 2).checked_div(a).map_or(0, |v| v.min(max))
    }
    match format {
        PixelFormat::Rgba8 => {
            for px in data.chunks_exact_mut(4) {
                let a = px[3] as u32;
                if a != 255 {
                    for c in &mut px[..3] {
                        *c = divide(*c as u32, a, 255) as u8;
                    }
                }
            }
        }
        PixelFormat::Rgba16 => {
            // Samples in native byte order, as everywhere in a frame.
            for px in data.chunks_exact_mut(8) {
                let a = u16::from_ne_bytes([px[6], px[7]]) as u32;
                if a != 65535 {
                    for c in px[..6].chunks_exact_mut(2) {
                        let straight = divide(u16::from_ne_bytes([c[0], c[1]]) as u32, a, 65535) as u16;
                        c.copy_from_slice(&straight.to_ne_bytes());
                    }
                }
            }
        }
    }
}

/// Converts a decoded image to RGBA, keeping its bit depth class.
pub(crate) fn from_dynamic(image: DynamicImage) -> HostFrame {
    let has_alpha = image.color().has_alpha();
    let (width, height) = (image.width(), image.height());
    let sixteen = image.color().bytes_per_pixel() / image.color().channel_count() > 1;
    if sixteen {
        let pixels = image.into_rgba16().into_raw();
        let data = bytemuck::cast_slice::<u16, u8>(&pixels).to_vec();
        HostFrame { width, height, format: PixelFormat::Rgba16, has_alpha, data }
    } else {
        let data = image.into_rgba8().into_raw();
        HostFrame { width, height, format: PixelFormat::Rgba8, has_alpha, data }
    }
}

/// Codec messages sometimes span lines; a log line must not. Some say
/// what happened in their own terms: said in a user's.
pub(super) fn one_line(s: &str) -> String {
    let mut line = crate::error::one_line(s);
    // `image`'s wrapper of a codec's error: `Format error decoding Png:
    // Invalid PNG signature.`
    if let Some((format, why)) = line.strip_prefix("Format error decoding ").and_then(|r| r.split_once(": ")) {
        line = format!("not a valid {} file: {why}", format.to_uppercase());
    }
    // A reader's `read_exact` past the end (TIFF strips, QOI runs), or a
    // PNG's data cut off.
    if line.contains("failed to fill whole buffer")
        || line == "unexpected end of file"
        || line.contains("Not enough bytes, expected")
    {
        line = "truncated: the file ends before its image does".into();
    }
    // A PNG row whose filter byte is none of the five: the image data is
    // corrupt (its checksum agreed, so it was written so).
    if let Some(n) = line.strip_prefix("Unknown filter method ").map(|n| n.trim_end_matches('.')) {
        line = format!("corrupt image data: a row's filter type is {n}, not one of PNG's (0 to 4)");
    }
    // The png crate names a chunk by its Debug form (`ChunkType { type:
    // IDAT, critical: true, .. }`): its four letters are the name.
    while let Some(at) = line.find("ChunkType { type: ") {
        let Some(close) = line[at..].find('}') else { break };
        let name: String = line[at + 18..].chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        line.replace_range(at..at + close + 1, &name);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipe or a folder put in a frame's place during a run is refused
    /// as not a file, at once: a pipe's open would wait for a writer.
    #[cfg(unix)]
    #[test]
    fn a_pipe_or_folder_in_a_frames_place_is_refused_without_waiting() {
        let t = tempfile::tempdir().unwrap();
        let (pipe, folder) = (t.path().join("s_0001.png"), t.path().join("s_0002.png"));
        let c = std::ffi::CString::new(pipe.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string; makes a FIFO in the test's own folder.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        std::fs::create_dir(&folder).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let said = |p: &Path| decode_file(p, &DecodeLimits::default()).unwrap_err().to_string();
            let _ = tx.send((said(&pipe), said(&folder)));
        });
        let (pipe, folder) = rx.recv_timeout(std::time::Duration::from_secs(30)).expect("no wait for a writer");
        for e in [pipe, folder] {
            assert!(e.contains("not a file (a folder, a pipe or a device)"), "{e}");
        }
    }

    /// Pieces out of order, or short of the frame, are the file's error:
    /// never an earlier frame's pixels left in the gap.
    #[test]
    fn pieces_must_come_in_order_and_cover_the_frame() {
        let path = Path::new("f.png");
        let mut order = InOrder::default();
        order.piece(path, 0, 8).unwrap();
        order.piece(path, 8, 8).unwrap();
        order.finish(path, 16).unwrap();
        let gap = order.piece(path, 20, 4).unwrap_err().to_string();
        assert!(gap.contains("f.png") && gap.contains("wrote at byte 20 of the frame, where 16 was next"), "{gap}");
        assert!(InOrder::default().piece(path, 4, 4).is_err(), "a first piece past the start");
        let short = order.finish(path, 24).unwrap_err().to_string();
        assert!(short.contains("gave 16 of the frame's 24 bytes"), "{short}");
    }

    /// Codecs' own words for a file cut short or corrupt, in a user's.
    #[test]
    fn codec_words_are_said_in_a_users() {
        let jpeg = "Format error decoding Jpeg: I/O errors Not enough bytes, expected 64 but found 56";
        assert_eq!(one_line(jpeg), "truncated: the file ends before its image does");
        assert_eq!(
            one_line("Unknown filter method 61."),
            "corrupt image data: a row's filter type is 61, not one of PNG's (0 to 4)"
        );
        // A file that begins as no image does, whatever its name.
        let t = tempfile::tempdir().unwrap();
        for (name, bytes, said) in [
            ("t.qoi", &b"some text that is long enough"[..], "not a QOI file: it does not begin as one"),
            ("s.png", b"\x89PN", "3 bytes, too short for an image file"),
            (
                "s_0001",
                b"some text that is long enough",
                "not a PNG, JPEG, TIFF or QOI file: it begins as none of them",
            ),
        ] {
            std::fs::write(t.path().join(name), bytes).unwrap();
            let err = decode_file(&t.path().join(name), &DecodeLimits::default()).unwrap_err().to_string();
            assert!(err.contains(said), "{err}");
        }
    }

    #[test]
    fn a_chunks_debug_form_is_its_name() {
        let png = "CRC error: expected 0x5b4b670d have 0x2af2bc29 while decoding ChunkType { type: IDAT, critical: true, private: false, reserved: false, safecopy: false } chunk.";
        assert_eq!(one_line(png), "CRC error: expected 0x5b4b670d have 0x2af2bc29 while decoding IDAT chunk.");
    }

    /// The limit counts what a decode holds at its peak: a grey 16-bit
    /// TIFF is decoded (2 bytes a pixel, and the TIFF decoder's own copy,
    /// 2), converted and copied (8 each, three times): 28 bytes a pixel; an
    /// RGBA PNG goes straight to its frame (8); a file larger than the
    /// limit is not read at all.
    #[test]
    fn the_decode_limit_counts_the_peak() {
        let t = tempfile::tempdir().unwrap();
        let (w, h) = (60u32, 40u32);
        let grey: Vec<u16> = (0..w * h).map(|i| (i.wrapping_mul(2_654_435_761) >> 16) as u16).collect();
        let path = t.path().join("grey.tif");
        image::ImageBuffer::<image::Luma<u16>, _>::from_raw(w, h, grey).unwrap().save(&path).unwrap();
        let rgba = t.path().join("rgba.png");
        let mut frame = HostFrame::new(w, h, PixelFormat::Rgba16, true);
        frame.data.iter_mut().enumerate().for_each(|(i, b)| *b = (i * 31 % 251) as u8);
        let png = crate::io::encode_frame(frame, crate::io::OutputFormat::Png, &Default::default(), &rgba).unwrap();
        std::fs::write(&rgba, png).unwrap();
        let pixels = (w * h) as u64;
        let limits = |max_alloc| DecodeLimits { max_alloc, ..Default::default() };
        assert!(decode_file(&rgba, &limits(8 * pixels)).is_ok());
        assert!(decode_file(&path, &limits(28 * pixels)).is_ok());
        let err = decode_file(&path, &limits(28 * pixels - 1)).unwrap_err().to_string();
        assert!(err.contains("over the") && err.contains("grey.tif"), "{err}");
        let small = limits(std::fs::metadata(&rgba).unwrap().len() - 1);
        assert!(decode_file(&rgba, &small).unwrap_err().to_string().contains("bytes, over the"));
    }

    /// A TIFF whose alpha is associated (premultiplied) reads as straight
    /// alpha, every path alike: color divided by alpha, rounded to nearest,
    /// 0 where alpha is 0; a straight-alpha TIFF of the same bytes is read
    /// as it is.
    #[test]
    fn a_premultiplied_tiff_reads_as_straight_alpha() {
        use tiff::encoder::{TiffEncoder, colortype};
        let t = tempfile::tempdir().unwrap();
        let mut x = 0x2545_f491_u32 ^ std::process::id();
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for sixteen in [false, true] {
            let max = if sixteen { 65535u32 } else { 255 };
            // Random straight pixels, premultiplied as a renderer would;
            // some fully transparent, some opaque.
            let mut premultiplied = Vec::new();
            for i in 0..64 * 9 {
                let a = match i % 9 {
                    0 => 0,
                    1 => max,
                    _ => next() % (max + 1),
                };
                for _ in 0..3 {
                    let c = next() % (max + 1);
                    premultiplied.push(((c as f64 * a as f64 / max as f64).round()) as u32);
                }
                premultiplied.push(a);
            }
            let expected: Vec<u32> = premultiplied
                .chunks(4)
                .flat_map(|p| {
                    let a = p[3] as f64;
                    let straight =
                        |c: u32| if a == 0.0 { 0 } else { ((c as f64 * max as f64 / a).round() as u32).min(max) };
                    [straight(p[0]), straight(p[1]), straight(p[2]), p[3]]
                })
                .collect();
            let write = |name: &str, extra: u16| {
                let path = t.path().join(name);
                let file = std::fs::File::create(&path).unwrap();
                let mut tiff = TiffEncoder::new(file).unwrap();
                if sixteen {
                    let data: Vec<u16> = premultiplied.iter().map(|&v| v as u16).collect();
                    let mut image = tiff.new_image::<colortype::RGBA16>(64, 9).unwrap();
                    image.encoder().write_tag(tiff::tags::Tag::ExtraSamples, &[extra][..]).unwrap();
                    image.write_data(&data).unwrap();
                } else {
                    let data: Vec<u8> = premultiplied.iter().map(|&v| v as u8).collect();
                    let mut image = tiff.new_image::<colortype::RGBA8>(64, 9).unwrap();
                    image.encoder().write_tag(tiff::tags::Tag::ExtraSamples, &[extra][..]).unwrap();
                    image.write_data(&data).unwrap();
                }
                path
            };
            let values = |data: &[u8]| -> Vec<u32> {
                if sixteen {
                    data.chunks(2).map(|b| u16::from_ne_bytes([b[0], b[1]]) as u32).collect()
                } else {
                    data.iter().map(|&b| b as u32).collect()
                }
            };
            let limits = DecodeLimits::default();
            let path = write("assoc.tif", 1);
            assert!(probe_info(&path, &limits).unwrap().premultiplied);
            assert_eq!(values(&decode_file(&path, &limits).unwrap().data), expected, "16-bit {sixteen}");
            let mut streamed = vec![0u8; premultiplied.len() * if sixteen { 2 } else { 1 }];
            decode_with(
                &path,
                &limits,
                |_| Ok(()),
                |at, px| {
                    streamed[at..at + px.len()].copy_from_slice(px);
                    Ok(())
                },
            )
            .unwrap();
            assert_eq!(values(&streamed), expected, "16-bit {sixteen}, streamed");
            let path = write("straight.tif", 2);
            assert!(!probe_info(&path, &limits).unwrap().premultiplied);
            assert_eq!(values(&decode_file(&path, &limits).unwrap().data), premultiplied);
        }
    }

    /// A codec's panic is its file's decode error, and marks the thread as
    /// decoding while it unwinds (for a quiet panic hook).
    #[test]
    fn a_decoder_panic_is_the_files_decode_error() {
        let path = Path::new("plates/odd_0001.tif");
        let err = contained(path, || -> Result<()> {
            assert!(in_decoder());
            panic!("assertion failed: buf.len() >= row_stride");
        })
        .unwrap_err();
        assert!(!in_decoder());
        assert_eq!(
            err.to_string(),
            "plates/odd_0001.tif: cannot decode: the decoder failed on it: assertion failed: buf.len() >= row_stride"
        );
        assert_eq!(contained(path, || Ok(7)).unwrap(), 7);
        // framepipe's own code run from the decoding (a check, a sink)
        // panics as itself: not the file's error, not quiet.
        let ours_panic = std::panic::catch_unwind(|| {
            contained(path, || -> Result<()> {
                ours(|| {
                    assert!(!in_decoder());
                    panic!("a bug of ours")
                })
            })
        });
        assert_eq!(crate::error::panic_message(&*ours_panic.unwrap_err()), "a bug of ours");
        assert!(!in_decoder());
        assert_eq!(contained(path, || Ok(8)).unwrap(), 8);
    }

    /// Writes a `w x h` PNG of `color` and `depth` from fresh random bytes
    /// (an indexed one with a palette and partial transparency; a gray or
    /// RGB one with `key`, a tRNS colour key equal to its first pixel, so
    /// that the key matches at least once).
    fn random_png(path: &Path, w: u32, h: u32, color: png::ColorType, depth: png::BitDepth, key: bool) {
        let mut x = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
        let mut byte = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        };
        let bits = color.samples() * depth as usize;
        let mut data: Vec<u8> = (0..(w as usize * bits).div_ceil(8) * h as usize).map(|_| byte()).collect();
        let mut encoder = png::Encoder::new(std::fs::File::create(path).unwrap(), w, h);
        encoder.set_color(color);
        encoder.set_depth(depth);
        if color == png::ColorType::Indexed {
            encoder.set_palette((0..16 * 3).map(|_| byte()).collect::<Vec<u8>>());
            encoder.set_trns(vec![0u8, 128, 255]);
            if depth == png::BitDepth::Eight {
                data.iter_mut().for_each(|b| *b %= 16);
            }
        } else if key {
            // tRNS holds one 16-bit big-endian sample per channel.
            let trns: Vec<u8> = match depth {
                png::BitDepth::Sixteen => data[..2 * color.samples()].to_vec(),
                png::BitDepth::Eight => data[..color.samples()].iter().flat_map(|&v| [0, v]).collect(),
                low => vec![0, data[0] >> (8 - low as u8)],
            };
            encoder.set_trns(trns);
        }
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&data).unwrap();
    }

    #[test]
    fn a_jpeg_cut_short_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut x = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u32 | 1;
        let rgb: Vec<u8> = (0..96 * 64 * 3)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (i / 3 % 96) as u8 + (x % 64) as u8
            })
            .collect();
        use image::ImageEncoder as _;
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .write_image(&rgb, 96, 64, image::ExtendedColorType::Rgb8)
            .unwrap();
        let whole = dir.path().join("whole.jpg");
        std::fs::write(&whole, &jpeg).unwrap();
        assert_eq!(decode_file(&whole, &DecodeLimits::default()).unwrap().width, 96);
        // Whole, with more than the 4 KiB read first trailing its end (a
        // camera's appended data): found by the scan of the whole file.
        let trailed = dir.path().join("trailed.jpg");
        std::fs::write(&trailed, [&jpeg[..], &[0x20; 5000]].concat()).unwrap();
        assert_eq!(decode_file(&trailed, &DecodeLimits::default()).unwrap().width, 96);
        // Cut in its scan: the decoder alone would fill the rest with grey.
        let cut = dir.path().join("cut.jpg");
        std::fs::write(&cut, &jpeg[..jpeg.len() * 6 / 10]).unwrap();
        for e in [
            decode_file(&cut, &DecodeLimits::default()).unwrap_err(),
            decode_with(&cut, &DecodeLimits::default(), |_| Ok(()), |_, _| Ok(())).unwrap_err(),
        ] {
            assert!(
                e.to_string()
                    .ends_with("cut.jpg: cannot decode: truncated: no end-of-image marker after the last scan")
            );
        }
    }

    /// A TIFF of `w x 1` RGB pixels of 32 bits per sample with no
    /// SampleFormat tag: unsigned integers, by the TIFF 6.0 default.
    fn u32_tiff(w: u32, value: u32) -> Vec<u8> {
        let data: Vec<u8> = (0..w * 3).flat_map(|_| value.to_le_bytes()).collect();
        let bits_at = 8 + data.len() as u32;
        let ifd_at = bits_at + 6;
        let mut b = b"II*\0".to_vec();
        b.extend(ifd_at.to_le_bytes());
        b.extend(&data);
        b.extend([32u16, 32, 32].iter().flat_map(|v| v.to_le_bytes()));
        // (tag, type: 3 short / 4 long, count, value or offset)
        let tags: [(u16, u16, u32, u32); 9] = [
            (256, 4, 1, w),
            (257, 4, 1, 1),
            (258, 3, 3, bits_at),
            (259, 3, 1, 1),
            (262, 3, 1, 2),
            (273, 4, 1, 8),
            (277, 3, 1, 3),
            (278, 4, 1, 1),
            (279, 4, 1, data.len() as u32),
        ];
        b.extend((tags.len() as u16).to_le_bytes());
        for (tag, kind, count, value) in tags {
            b.extend(tag.to_le_bytes());
            b.extend(kind.to_le_bytes());
            b.extend(count.to_le_bytes());
            b.extend(value.to_le_bytes());
        }
        b.extend(0u32.to_le_bytes());
        b
    }

    /// A float TIFF is said to be one, and read clamped to 0..1 at 16 bits.
    /// NaN reads as 0.
    #[test]
    fn a_float_tiff_is_read_clamped_to_16_bits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f32.tif");
        // NaN reads as 0 (`image` alone would make it white).
        let values = [0.5f32, 1.5, -0.25, 1.0, f32::NAN, 0.25, 2.0, 0.75];
        image::Rgba32FImage::from_raw(2, 1, values.to_vec()).unwrap().save(&path).unwrap();
        let info = probe_info(&path, &DecodeLimits::default()).unwrap();
        assert!(info.float && info.format == PixelFormat::Rgba16);
        let frame = decode_file(&path, &DecodeLimits::default()).unwrap();
        let got: Vec<u16> = (0..8).map(|i| frame.channel(i)).collect();
        assert_eq!(got, [32768, 65535, 0, 65535, 0, 16384, 65535, 49151]);
    }

    /// The decode limit counts what each path holds at its peak: an RGB
    /// JPEG its file, the decoded RGB and the RGBA frame it is widened
    /// into; a PNG streamed by rows only the frame, and an interlaced one,
    /// decoded whole, its RGB and the frame.
    #[test]
    fn the_decode_limit_counts_each_paths_peak() {
        let dir = tempfile::tempdir().unwrap();
        let (w, h) = (100u32, 60u32);
        let pixels: Vec<u8> = (0..w * h * 3).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8).collect();
        let frame = (w * h * 4) as u64;
        let rgb = image::RgbImage::from_raw(w, h, pixels).unwrap();
        let jpeg = dir.path().join("f.jpg");
        rgb.save(&jpeg).unwrap();
        let png = dir.path().join("f.png");
        rgb.save(&png).unwrap();
        let file = std::fs::metadata(&jpeg).unwrap().len();
        let limits = |max_alloc| DecodeLimits { max_alloc, ..Default::default() };
        // The JPEG: its file, 3 bytes a pixel decoded, 4 widened.
        let jpeg_needs = file + frame / 4 * 3 + frame;
        assert!(decode_file(&jpeg, &limits(jpeg_needs)).is_ok());
        let refused = decode_file(&jpeg, &limits(jpeg_needs - 1)).unwrap_err().to_string();
        assert!(refused.contains(&format!("needs {jpeg_needs} bytes")), "{refused}");
        // The same marked progressive (SOF2): every coefficient as well,
        // two bytes for each of its three components a pixel.
        let bytes = std::fs::read(&jpeg).unwrap();
        let sof = bytes.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
        let progressive = dir.path().join("p.jpg");
        std::fs::write(&progressive, [&bytes[..sof + 1], &[0xC2], &bytes[sof + 2..]].concat()).unwrap();
        assert_eq!(super::super::whole::jpeg_frame_header(&progressive).unwrap(), Some((0xC2, 3)));
        assert_eq!(super::super::whole::jpeg_frame_header(&jpeg).unwrap(), Some((0xC0, 3)));
        let progressive_needs = jpeg_needs + frame / 4 * 6;
        let refused = decode_file(&progressive, &limits(progressive_needs - 1)).unwrap_err().to_string();
        assert!(refused.contains(&format!("needs {progressive_needs} bytes")), "{refused}");
        // Marked lossless (SOF3), which the decoder does not read: said so.
        let lossless = dir.path().join("l.jpg");
        std::fs::write(&lossless, [&bytes[..sof + 1], &[0xC3], &bytes[sof + 2..]].concat()).unwrap();
        let refused = decode_file(&lossless, &limits(u64::MAX)).unwrap_err().to_string();
        assert!(
            refused.ends_with("l.jpg: cannot decode: a lossless JPEG (SOF3 or JPEG-LS), which framepipe does not read"),
            "{refused}"
        );
        // The streamed PNG: the frame alone.
        assert!(decode_file(&png, &limits(frame)).is_ok());
        // Interlaced: decoded whole, then converted and copied out.
        let interlaced = dir.path().join("i.png");
        std::fs::write(&interlaced, adam7_png(&rgb)).unwrap();
        assert!(png_interlaced(&interlaced).unwrap() && !png_interlaced(&png).unwrap());
        let rgb_needs = frame / 4 * 3 + frame;
        let refused = decode_file(&interlaced, &limits(rgb_needs - 1)).unwrap_err().to_string();
        assert!(refused.contains(&format!("needs {rgb_needs} bytes")), "{refused}");
        let whole = decode_file(&interlaced, &limits(rgb_needs)).unwrap();
        assert_eq!(whole.data, decode_file(&png, &limits(frame)).unwrap().data, "both read alike");
    }

    /// TIFFs of a kind framepipe does not read are said as that kind, not
    /// in the codec's terms.
    #[test]
    fn an_unread_kind_of_tiff_is_named() {
        use tiff::encoder::{TiffEncoder, colortype};
        let t = tempfile::tempdir().unwrap();
        let (w, h) = (5u32, 3u32);
        let signed = t.path().join("i16.tif");
        let data: Vec<i16> = (0..(w * h) as i16).map(|i| i * 97 - 700).collect();
        let file = std::fs::File::create(&signed).unwrap();
        TiffEncoder::new(file).unwrap().write_image::<colortype::GrayI16>(w, h, &data).unwrap();
        let wide = t.path().join("f64.tif");
        let data: Vec<f64> = (0..w * h * 3).map(|i| i as f64 / 45.0).collect();
        let file = std::fs::File::create(&wide).unwrap();
        TiffEncoder::new(file).unwrap().write_image::<colortype::RGB64Float>(w, h, &data).unwrap();
        // An RGB TIFF whose Compression tag says Zstandard (50000).
        let squeezed = t.path().join("zstd.tif");
        let data: Vec<u8> = (0..w * h * 3).map(|i| i as u8).collect();
        let mut bytes = Vec::new();
        let cursor = std::io::Cursor::new(&mut bytes);
        TiffEncoder::new(cursor).unwrap().write_image::<colortype::RGB8>(w, h, &data).unwrap();
        let entry = bytes.windows(8).position(|e| e == [0x03, 0x01, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00]).unwrap();
        bytes[entry + 8..entry + 10].copy_from_slice(&50000u16.to_le_bytes());
        std::fs::write(&squeezed, bytes).unwrap();
        for (path, kind) in [
            (signed, "a TIFF of 16-bit signed integers"),
            (wide, "a TIFF of 64-bit floats"),
            (squeezed, "a TIFF compressed with Zstandard"),
        ] {
            let e = decode_file(&path, &DecodeLimits::default()).unwrap_err().to_string();
            assert!(e.contains(&format!("cannot decode: {kind}, which framepipe does not read")), "{e}");
        }
    }

    /// A PNG chunk's CRC-32 (of its type and data).
    fn crc(bytes: &[u8]) -> u32 {
        !bytes.iter().fold(!0u32, |mut c, &v| {
            c ^= v as u32;
            (0..8).for_each(|_| c = if c & 1 == 1 { (c >> 1) ^ 0xedb8_8320 } else { c >> 1 });
            c
        })
    }

    /// `png` (of one IDAT chunk) with its data's Adler-32 checksum wrong
    /// and the chunk's CRC made to match: a stream only the checksum
    /// finds corrupt, as from a writer that fixed up its CRCs.
    fn spoil_adler(png: &[u8]) -> Vec<u8> {
        let at = png.windows(4).position(|w| w == b"IDAT").unwrap();
        let len = u32::from_be_bytes(png[at - 4..at].try_into().unwrap()) as usize;
        let mut spoilt = png.to_vec();
        spoilt[at + 4 + len - 1] ^= 0x10;
        let sum = crc(&spoilt[at..at + 4 + len]);
        spoilt[at + 4 + len..at + 8 + len].copy_from_slice(&sum.to_be_bytes());
        spoilt
    }

    /// A PNG whose data decodes but does not match its checksum is
    /// corrupt (its pixels are wrong), interlaced or not.
    #[test]
    fn a_png_whose_data_checksum_is_wrong_is_refused() {
        use image::ImageEncoder;
        let t = tempfile::tempdir().unwrap();
        let rgb = image::RgbImage::from_fn(21, 13, |x, y| image::Rgb([(x * 11) as u8, (y * 17) as u8, (x ^ y) as u8]));
        let mut plain = Vec::new();
        image::codecs::png::PngEncoder::new(&mut plain)
            .write_image(&rgb, 21, 13, image::ExtendedColorType::Rgb8)
            .unwrap();
        for (name, png) in [("plain.png", plain), ("adam7.png", adam7_png(&rgb))] {
            let good = t.path().join(format!("good-{name}"));
            std::fs::write(&good, &png).unwrap();
            assert!(decode_file(&good, &DecodeLimits::default()).is_ok(), "{name}");
            let bad = t.path().join(name);
            std::fs::write(&bad, spoil_adler(&png)).unwrap();
            let e = decode_file(&bad, &DecodeLimits::default()).unwrap_err().to_string();
            assert!(
                e.ends_with(&format!("{name}: cannot decode: corrupt image data (its checksum does not match)")),
                "{e}"
            );
        }
    }

    /// `rgb` as an interlaced (Adam7) PNG, which the png crate does not
    /// write: each pass's rows unfiltered, in stored deflate blocks.
    fn adam7_png(rgb: &image::RgbImage) -> Vec<u8> {
        let (w, h) = rgb.dimensions();
        let mut raw = Vec::new();
        for (x0, y0, dx, dy) in
            [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
        {
            if x0 >= w || y0 >= h {
                continue;
            }
            for y in (y0..h).step_by(dy) {
                raw.push(0);
                (x0..w).step_by(dx).for_each(|x| raw.extend(rgb.get_pixel(x, y).0));
            }
        }
        let mut zlib = vec![0x78, 0x01];
        let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
        for (i, block) in blocks.iter().enumerate() {
            let len = block.len() as u16;
            zlib.push(u8::from(i + 1 == blocks.len()));
            zlib.extend(len.to_le_bytes().into_iter().chain((!len).to_le_bytes()));
            zlib.extend(*block);
        }
        let (a, b) = raw.iter().fold((1u32, 0u32), |(a, b), &v| ((a + v as u32) % 65521, (b + a + v as u32) % 65521));
        zlib.extend(((b << 16) | a).to_be_bytes());
        let mut png = PNG_SIGNATURE.to_vec();
        let ihdr = [&w.to_be_bytes()[..], &h.to_be_bytes(), &[8, 2, 0, 0, 1]].concat();
        for (kind, data) in [(&b"IHDR"[..], &ihdr[..]), (b"IDAT", &zlib), (b"IEND", &[])] {
            png.extend((data.len() as u32).to_be_bytes());
            let body = [kind, data].concat();
            png.extend(&body);
            png.extend(crc(&body).to_be_bytes());
        }
        png
    }

    /// A PNG whose ICC profile inflates far past its file (a 100 KB file,
    /// 96 MiB of profile) reads as its pixels: the profile, which nothing
    /// uses, is dropped at the PNG decoder's own bound (64 MiB), never
    /// inflated whole. (A 512 MiB profile took the decode to 1.06 GB of
    /// RSS before the bound, 72 MB after.)
    #[test]
    fn a_png_whose_profile_inflates_to_a_bomb_reads_as_its_pixels() {
        use image::ImageEncoder;
        let t = tempfile::tempdir().unwrap();
        let rgb = image::RgbImage::from_fn(13, 7, |x, y| image::Rgb([(x * 19) as u8, (y * 37) as u8, (x ^ y) as u8]));
        let path = t.path().join("profiled.png");
        let mut bytes = Vec::new();
        let mut encoder = image::codecs::png::PngEncoder::new(&mut bytes);
        encoder.set_icc_profile(vec![0; 96 << 20]).unwrap();
        encoder.write_image(rgb.as_raw(), 13, 7, image::ExtendedColorType::Rgb8).unwrap();
        assert!(bytes.len() < 1 << 20, "{}", bytes.len());
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(png_side_bytes(&DecodeLimits::default()), 64 << 20);
        let frame = decode_file(&path, &DecodeLimits::default()).unwrap();
        let widened: Vec<u8> = rgb.pixels().flat_map(|p| [p[0], p[1], p[2], 255]).collect();
        assert_eq!(frame.data, widened);
    }

    /// A float TIFF with associated alpha is made straight in f32, before
    /// it is rounded to 16 bits: within one step of the straight color
    /// however small the alpha (divided after rounding, 500 steps off at
    /// alpha 0.001). RGBA and grey-alpha alike, decoded whole or streamed.
    #[test]
    fn a_premultiplied_float_tiff_is_divided_before_rounding() {
        use tiff::encoder::{TiffEncoder, colortype};
        use tiff::tags::ExtraSamples::AssociatedAlpha;
        let dir = tempfile::tempdir().unwrap();
        let mut x = 0x2545_f491_4f6c_dd1d_u64 ^ u64::from(std::process::id());
        let mut unit = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32
        };
        // Straight colors and alphas from 1 down to 1e-4 (and 0, and NaN:
        // color 0, alpha 0).
        let pixels: Vec<([f32; 3], f32)> = (0..256)
            .map(|i| {
                let c = [unit(), unit(), unit()];
                let a = match i {
                    0 => 0.0,
                    1 => f32::NAN,
                    _ => 10f32.powf(-4.0 * unit()),
                };
                (c, a)
            })
            .collect();
        let step = |v: f32| (v.clamp(0.0, 1.0) * 65535.0).round() as i32;
        for grey in [false, true] {
            let path = dir.path().join(format!("assoc-grey-{grey}.tif"));
            let mut tiff = TiffEncoder::new(std::fs::File::create(&path).unwrap()).unwrap();
            let mut expected = Vec::new();
            if grey {
                let data: Vec<f32> = pixels.iter().flat_map(|&(c, a)| [c[0] * a, a]).collect();
                let mut image = tiff.new_image::<colortype::Gray32Float>(256, 1).unwrap();
                image.extra_samples(&[AssociatedAlpha]).unwrap();
                image.write_data(&data).unwrap();
                for &(c, a) in &pixels {
                    let g = if a > 0.0 { step(c[0]) } else { 0 };
                    expected.extend([g, g, g, step(a)]);
                }
            } else {
                let data: Vec<f32> = pixels.iter().flat_map(|&(c, a)| [c[0] * a, c[1] * a, c[2] * a, a]).collect();
                let mut image = tiff.new_image::<colortype::RGBA32Float>(256, 1).unwrap();
                image.encoder().write_tag(tiff::tags::Tag::ExtraSamples, &[AssociatedAlpha.to_u16()][..]).unwrap();
                image.write_data(&data).unwrap();
                for &(c, a) in &pixels {
                    let rgb = c.map(|v| if a > 0.0 { step(v) } else { 0 });
                    expected.extend([rgb[0], rgb[1], rgb[2], step(a)]);
                }
            }
            let limits = DecodeLimits::default();
            let info = probe_info(&path, &limits).unwrap();
            assert!(info.float && info.premultiplied, "grey {grey}");
            let whole = decode_file(&path, &limits).unwrap();
            let mut streamed = vec![0u8; whole.data.len()];
            let sink = |at: usize, px: &[u8]| {
                streamed[at..at + px.len()].copy_from_slice(px);
                Ok(())
            };
            decode_with(&path, &limits, |_| Ok(()), sink).unwrap();
            assert_eq!(streamed, whole.data, "grey {grey}: both paths alike");
            for (i, (&want, got)) in expected.iter().zip(whole.data.chunks(2)).enumerate() {
                let got = u16::from_ne_bytes([got[0], got[1]]) as i32;
                assert!((got - want).abs() <= 1, "grey {grey}, sample {i}: {got} for {want}");
            }
        }
    }

    /// Grey float TIFFs (a depth pass, a matte), with or without alpha,
    /// which `image` refuses, read clamped as RGB floats are.
    #[test]
    fn a_grey_float_tiff_is_read_clamped_to_16_bits() {
        use tiff::encoder::{TiffEncoder, colortype};
        let dir = tempfile::tempdir().unwrap();
        let values = [0.5f32, 1.5, -0.25, 0.75, f32::NAN, 0.25];
        for alpha in [false, true] {
            let path = dir.path().join(format!("grey-{alpha}.tif"));
            let mut tiff = TiffEncoder::new(std::fs::File::create(&path).unwrap()).unwrap();
            let width = if alpha { 3 } else { 6 };
            let mut image = tiff.new_image::<colortype::Gray32Float>(width, 1).unwrap();
            if alpha {
                image.extra_samples(&[tiff::tags::ExtraSamples::UnassociatedAlpha]).unwrap();
            }
            image.write_data(&values).unwrap();
            let info = probe_info(&path, &DecodeLimits::default()).unwrap();
            assert!(info.float && info.grey && info.has_alpha == alpha && info.format == PixelFormat::Rgba16);
            let frame = decode_file(&path, &DecodeLimits::default()).unwrap();
            let got: Vec<u16> = (0..frame.channel_count()).map(|i| frame.channel(i)).collect();
            let expected: Vec<u16> = match alpha {
                false => [32768u16, 65535, 0, 49151, 0, 16384].iter().flat_map(|&g| [g, g, g, 65535]).collect(),
                true => vec![32768, 32768, 32768, 65535, 0, 0, 0, 49151, 0, 0, 0, 16384],
            };
            assert_eq!(got, expected, "alpha {alpha}");
        }
    }

    #[test]
    fn a_tiff_of_32_bit_integers_is_refused_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u32.tif");
        std::fs::write(&path, u32_tiff(4, 0x8000_0000)).unwrap();
        let e = probe_info(&path, &DecodeLimits::default()).unwrap_err().to_string();
        assert!(
            e.ends_with(
                "u32.tif: cannot decode: 32-bit integer samples are not supported (8 or 16 bits, or 32-bit float)"
            ),
            "{e}"
        );
        assert!(decode_file(&path, &DecodeLimits::default()).is_err());
    }

    #[test]
    fn png_rows_streamed_equal_a_whole_decode() {
        use png::{BitDepth, ColorType};
        let dir = tempfile::tempdir().unwrap();
        let (gray, rgb) = (ColorType::Grayscale, ColorType::Rgb);
        let all = [gray, ColorType::GrayscaleAlpha, rgb, ColorType::Rgba];
        let mut cases: Vec<_> = all.iter().map(|&c| (c, BitDepth::Eight, false)).collect();
        cases.extend(all.iter().map(|&c| (c, BitDepth::Sixteen, false)));
        // Sub-byte samples, palettes and tRNS colour keys: EXPAND's work.
        for depth in [BitDepth::One, BitDepth::Two, BitDepth::Four, BitDepth::Eight] {
            cases.extend([(gray, depth, false), (gray, depth, true), (ColorType::Indexed, depth, false)]);
        }
        cases.extend([(gray, BitDepth::Sixteen, true), (rgb, BitDepth::Eight, true), (rgb, BitDepth::Sixteen, true)]);
        for (i, (color, depth, key)) in cases.into_iter().enumerate() {
            let path = dir.path().join(format!("f{i}.png"));
            random_png(&path, 37, 11, color, depth, key);
            let case = format!("{color:?} {depth:?}{}", if key { " tRNS" } else { "" });
            // The oracle: `image`'s own whole-frame decode and conversion.
            let whole = from_dynamic(image::open(&path).unwrap());
            if key {
                let clear = whole.data.chunks(whole.format.bytes_per_pixel()).any(|p| p.ends_with(&[0]));
                assert!(whole.has_alpha && clear, "{case}: the key makes a pixel transparent");
            }
            assert_eq!(decode_file(&path, &DecodeLimits::default()).unwrap(), whole, "{case}");
            let mut streamed = vec![0u8; whole.data.len()];
            let mut pieces = 0;
            let info = decode_with(
                &path,
                &DecodeLimits::default(),
                |_| Ok(()),
                |at, px| {
                    streamed[at..at + px.len()].copy_from_slice(px);
                    pieces += 1;
                    Ok(())
                },
            )
            .unwrap();
            assert_eq!(pieces, 11, "{case}: row by row");
            assert_eq!((info.format, info.has_alpha), (whole.format, whole.has_alpha), "{case}");
            assert!(streamed == whole.data, "{case}: pixels differ");
        }
        // A file cut short fails with a reason naming it, wherever it ends.
        let path = dir.path().join("cut.png");
        random_png(&path, 64, 64, ColorType::Rgba, BitDepth::Eight, false);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let err = decode_with(&path, &DecodeLimits::default(), |_| Ok(()), |_, _| Ok(())).unwrap_err().to_string();
        assert!(err.contains("cut.png"), "{err}");
    }

    #[test]
    fn the_limit_counts_the_widening_to_rgba() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gray.png");
        let pixels: Vec<u8> = (0..100 * 100).map(|i| (i * 7 % 251) as u8).collect();
        image::GrayImage::from_raw(100, 100, pixels).unwrap().save(&path).unwrap();
        // 10 000 bytes decoded, 40 000 once widened to RGBA8.
        let limits = |max_alloc| DecodeLimits { max_alloc, ..Default::default() };
        let err = decode_file(&path, &limits(20_000)).unwrap_err().to_string();
        assert!(err.contains("gray.png") && err.contains("needs 40000 bytes"), "{err}");
        let frame = decode_file(&path, &limits(40_000)).unwrap();
        assert_eq!((frame.width, frame.height, frame.data.len()), (100, 100, 40_000));
    }
}
