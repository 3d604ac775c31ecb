//! Decoding files into [`HostFrame`]s, with bounded allocations.

use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageReader};

use super::{HostFrame, PixelFormat};
use crate::error::{Error, Result};

/// Bounds on what a decoder may allocate, so that a decompression bomb (a
/// small file that claims a huge size) is refused before it is allocated.
#[derive(Clone, Copy, Debug)]
pub struct DecodeLimits {
    /// Largest accepted width and height. By default, 32768 (4x 8K).
    pub max_dimension: u32,
    /// Largest allocation a decoder may make, in bytes. By default, 4 GiB.
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
    let decoder = open_decoder(path, limits)?;
    let image = DynamicImage::from_decoder(decoder)
        .map_err(|e| Error::Decode { path: path.to_owned(), reason: one_line(&e.to_string()) })?;
    Ok(from_dynamic(image))
}

/// What a frame's header says it decodes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// RGBA8 or RGBA16 once widened.
    pub format: PixelFormat,
    /// Whether the source carries alpha.
    pub has_alpha: bool,
}

/// Pixels per batch when widening RGB to RGBA: 64 KiB of RGBA8, which
/// stays in cache on its way to the destination.
const WIDEN_BATCH: usize = 16 * 1024;

/// Decodes one frame and hands its RGBA pixels to `sink` as `(byte offset,
/// bytes)` pieces in order, after `check` has accepted its header (so a
/// frame of the wrong size is refused before anything is written).
///
/// The point is the destination: the pipeline's sink copies into a slot's
/// mapped upload buffer, which may only be written. RGB sources (most
/// PNG, JPEG and QOI footage) are widened in small batches straight on
/// their way there, instead of through a frame-sized RGBA copy that costs
/// an allocation, its page faults and one more pass over 132 MB per 8K
/// frame. RGBA sources go in one piece; other layouts take the general path.
///
/// # Errors
/// As [`decode_file`], plus whatever `check` or `sink` return.
pub fn decode_with(
    path: &Path,
    limits: &DecodeLimits,
    check: impl FnOnce(&FrameInfo) -> Result<()>,
    mut sink: impl FnMut(usize, &[u8]) -> Result<()>,
) -> Result<FrameInfo> {
    use image::ColorType;
    let fail = |reason: String| Error::Decode { path: path.to_owned(), reason };
    let decoder = open_decoder(path, limits)?;
    let info = header(decoder.as_ref());
    let (color, sixteen) = (decoder.color_type(), info.format == PixelFormat::Rgba16);
    check(&info)?;
    let read = |decoder: Box<dyn ImageDecoder + '_>| -> Result<Vec<u8>> {
        let mut buf = vec![0; decoder.total_bytes() as usize];
        decoder.read_image_boxed(&mut buf).map_err(|e| fail(one_line(&e.to_string())))?;
        Ok(buf)
    };
    match color {
        ColorType::Rgba8 | ColorType::Rgba16 => sink(0, &read(decoder)?)?,
        ColorType::Rgb8 | ColorType::Rgb16 => {
            let rgb = read(decoder)?;
            // Bytes per pixel in and out.
            let (inp, out) = if sixteen { (6, 8) } else { (3, 4) };
            let mut batch = vec![0u8; WIDEN_BATCH * out];
            for (i, pixels) in rgb.chunks(WIDEN_BATCH * inp).enumerate() {
                let n = pixels.len() / inp;
                widen(pixels, &mut batch[..n * out], sixteen);
                sink(i * WIDEN_BATCH * out, &batch[..n * out])?;
            }
        }
        _ => {
            let image = DynamicImage::from_decoder(decoder).map_err(|e| fail(one_line(&e.to_string())))?;
            sink(0, &from_dynamic(image).data)?;
        }
    }
    Ok(info)
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

/// The decoder for a file, with the size and allocation limits applied
/// before anything is decoded.
fn open_decoder<'a>(path: &'a Path, limits: &DecodeLimits) -> Result<Box<dyn ImageDecoder + 'a>> {
    let fail = |reason: String| Error::Decode { path: path.to_owned(), reason };
    let meta = std::fs::metadata(path).map_err(|source| Error::Io { path: path.to_owned(), source })?;
    if meta.len() == 0 {
        return Err(fail("file is empty (0 bytes)".into()));
    }
    let mut reader = ImageReader::open(path)
        .map_err(|source| Error::Io { path: path.to_owned(), source })?
        .with_guessed_format()
        .map_err(|e| fail(e.to_string()))?;
    let mut image_limits = image::Limits::default();
    image_limits.max_alloc = Some(limits.max_alloc);
    reader.limits(image_limits);
    let decoder = reader.into_decoder().map_err(|e| fail(one_line(&e.to_string())))?;
    let (w, h) = decoder.dimensions();
    if w > limits.max_dimension || h > limits.max_dimension {
        return Err(fail(format!("{w}x{h} exceeds the {0}x{0} size limit", limits.max_dimension)));
    }
    // Frames are widened to RGBA: a gray or RGB source needs up to 4x its
    // decoded size once widened, and that is what must stay under the limit.
    let widened = w as u64 * h as u64 * header(&decoder).format.bytes_per_pixel() as u64;
    let needs = decoder.total_bytes().max(widened);
    if needs > limits.max_alloc {
        return Err(fail(format!("{w}x{h} needs {needs} bytes, over the {}-byte decode limit", limits.max_alloc)));
    }
    Ok(Box::new(decoder))
}

/// Reads only the header: size and whether the frame decodes to RGBA8 or
/// RGBA16. Used to size frame slots before any frame is decoded.
///
/// # Errors
/// As [`decode_file`].
pub fn probe_file(path: &Path, limits: &DecodeLimits) -> Result<(u32, u32, PixelFormat)> {
    let info = header(open_decoder(path, limits)?.as_ref());
    Ok((info.width, info.height, info.format))
}

/// What a decoder's header says the frame widens to.
fn header(decoder: &dyn ImageDecoder) -> FrameInfo {
    let (width, height) = decoder.dimensions();
    let color = decoder.color_type();
    let sixteen = color.bytes_per_pixel() / color.channel_count() > 1;
    let format = if sixteen { PixelFormat::Rgba16 } else { PixelFormat::Rgba8 };
    FrameInfo { width, height, format, has_alpha: color.has_alpha() }
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

/// Decoder messages sometimes span lines; a log line must not.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

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
