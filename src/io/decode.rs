//! Decoding files into [`HostFrame`]s, with bounded allocations.

use std::path::Path;

use image::{DynamicImage, ImageReader};

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
    image_limits.max_image_width = Some(limits.max_dimension);
    image_limits.max_image_height = Some(limits.max_dimension);
    image_limits.max_alloc = Some(limits.max_alloc);
    reader.limits(image_limits);
    let image = reader.decode().map_err(|e| fail(one_line(&e.to_string())))?;
    Ok(from_dynamic(image))
}

/// Reads only the header: size and whether the frame decodes to RGBA8 or
/// RGBA16. Used to size frame slots before any frame is decoded.
///
/// # Errors
/// As [`decode_file`].
pub fn probe_file(path: &Path, limits: &DecodeLimits) -> Result<(u32, u32, PixelFormat)> {
    use image::ImageDecoder;
    let fail = |reason: String| Error::Decode { path: path.to_owned(), reason };
    let meta = std::fs::metadata(path).map_err(|source| Error::Io { path: path.to_owned(), source })?;
    if meta.len() == 0 {
        return Err(fail("file is empty (0 bytes)".into()));
    }
    let reader = ImageReader::open(path)
        .map_err(|source| Error::Io { path: path.to_owned(), source })?
        .with_guessed_format()
        .map_err(|e| fail(e.to_string()))?;
    let decoder = reader.into_decoder().map_err(|e| fail(one_line(&e.to_string())))?;
    let (w, h) = decoder.dimensions();
    if w > limits.max_dimension || h > limits.max_dimension {
        return Err(fail(format!("{w}x{h} exceeds the {0}x{0} size limit", limits.max_dimension)));
    }
    let color = decoder.color_type();
    let sixteen = color.bytes_per_pixel() / color.channel_count() > 1;
    Ok((w, h, if sixteen { PixelFormat::Rgba16 } else { PixelFormat::Rgba8 }))
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
