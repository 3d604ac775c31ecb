//! Host frames and the codecs that fill and drain them.
//!
//! Every format goes through one type, [`HostFrame`]: width, height, a pixel
//! format (RGBA with 8 or 16 bits per channel) and the bytes. Sources are
//! widened to RGBA so the kernels see one layout, and 16-bit sources stay
//! 16-bit until an output format that cannot hold them (JPEG, QOI) is asked
//! for. The one narrowing: 32-bit float TIFFs are clamped to 0..1 and read
//! as 16 bits (with a notice from the command line).

mod decode;
mod encode;
mod gray_alpha_tiff;
mod paths;
mod whole;

pub(crate) use decode::catch_quiet;
pub use decode::{
    Buffers, DecodeLimits, FrameInfo, Fresh, decode_file, decode_file_with, decode_with, decode_with_buffers,
    in_decoder, probe_file, probe_info, quiet_decoder_panics,
};
pub(crate) use encode::write_frame_atomic_unless;
pub use encode::{
    EncodeOptions, MadeDirs, OutputFormat, PngCompression, Removed, ScratchDir, StalePartials, check_new_file,
    check_output_dir, check_output_free, encode_frame, parent_dir, refuse_folder_name, remove_partials,
    remove_stale_partials, resolve_path, temp_root, write_file_atomic, write_frame_atomic,
};
pub use paths::{FileSet, file_id};
pub use whole::check_whole;
pub(crate) use whole::whole_format;

/// Bits per channel of a host frame. Frames are always RGBA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[non_exhaustive]
pub enum PixelFormat {
    /// 8 bits per channel, 4 bytes per pixel.
    Rgba8,
    /// 16 bits per channel in native byte order, 8 bytes per pixel.
    Rgba16,
}

impl PixelFormat {
    /// Bytes per pixel.
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Rgba8 => 4,
            PixelFormat::Rgba16 => 8,
        }
    }

    /// Bits per channel (8 or 16).
    pub fn bits(self) -> u32 {
        match self {
            PixelFormat::Rgba8 => 8,
            PixelFormat::Rgba16 => 16,
        }
    }

    /// Largest code value of a channel (255 or 65535).
    pub fn max_value(self) -> f32 {
        match self {
            PixelFormat::Rgba8 => 255.0,
            PixelFormat::Rgba16 => 65535.0,
        }
    }
}

impl std::fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PixelFormat::Rgba8 => "RGBA8",
            PixelFormat::Rgba16 => "RGBA16",
        })
    }
}

/// One decoded frame in host memory.
#[derive(Clone, PartialEq, Eq)]
pub struct HostFrame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Channel depth.
    pub format: PixelFormat,
    /// Whether the source carried an alpha channel. Frames are RGBA either
    /// way; this decides whether outputs are written with alpha.
    pub has_alpha: bool,
    /// Row-major pixels, `width * height * format.bytes_per_pixel()` bytes.
    pub data: Vec<u8>,
}

/// Pixels shown by their count, not each byte: a debug print of an 8K
/// frame (or a failed `assert_eq!` of two) would be 130 MB of text.
pub(crate) struct ByteCount<'a>(pub(crate) &'a [u8]);

impl std::fmt::Debug for ByteCount<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

impl std::fmt::Debug for HostFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every field named: a new one must be added here too.
        let HostFrame { width, height, format, has_alpha, data } = self;
        f.debug_struct("HostFrame")
            .field("width", width)
            .field("height", height)
            .field("format", format)
            .field("has_alpha", has_alpha)
            .field("data", &ByteCount(data))
            .finish()
    }
}

impl HostFrame {
    /// A frame of the given size filled with zeros.
    pub fn new(width: u32, height: u32, format: PixelFormat, has_alpha: bool) -> Self {
        let len = width as usize * height as usize * format.bytes_per_pixel();
        HostFrame { width, height, format, has_alpha, data: vec![0; len] }
    }

    /// Checks that `data` holds exactly `width * height` pixels of
    /// `format`, and that there is a pixel: the fields are public, so a
    /// frame built by hand may not.
    ///
    /// # Errors
    /// [`Error::InvalidValue`](crate::Error::InvalidValue) with both byte
    /// counts, or naming a size of no pixels.
    pub fn check(&self) -> crate::Result<()> {
        if self.width == 0 || self.height == 0 {
            return Err(crate::Error::invalid("frame size", self.describe(), "at least 1x1 pixels"));
        }
        let pixels = (self.width as usize).checked_mul(self.height as usize);
        match pixels.and_then(|n| n.checked_mul(self.format.bytes_per_pixel())) {
            Some(n) if n == self.data.len() => Ok(()),
            n => Err(crate::Error::invalid(
                "frame data",
                format!("{} bytes", self.data.len()),
                match n {
                    Some(n) => format!("{n} bytes for {}", self.describe()),
                    None => format!("a size this machine can address, not {}", self.describe()),
                },
            )),
        }
    }

    /// Bytes in one row.
    pub fn row_bytes(&self) -> usize {
        self.width as usize * self.format.bytes_per_pixel()
    }

    /// Number of channel values (`width * height * 4`).
    pub fn channel_count(&self) -> usize {
        self.width as usize * self.height as usize * 4
    }

    /// Channel `i` (in RGBA order, row-major) as a code value.
    pub fn channel(&self, i: usize) -> u16 {
        match self.format {
            PixelFormat::Rgba8 => self.data[i] as u16,
            PixelFormat::Rgba16 => u16::from_ne_bytes([self.data[2 * i], self.data[2 * i + 1]]),
        }
    }

    /// Sets channel `i` to a code value (truncated to the format's range).
    pub fn set_channel(&mut self, i: usize, v: u16) {
        match self.format {
            PixelFormat::Rgba8 => self.data[i] = v as u8,
            PixelFormat::Rgba16 => self.data[2 * i..2 * i + 2].copy_from_slice(&v.to_ne_bytes()),
        }
    }

    /// `"7680x4320 RGBA8"`, as used in messages.
    pub fn describe(&self) -> String {
        format!("{}x{} {}", self.width, self.height, self.format)
    }

    /// An 8-bit frame as a 16-bit one of the same values ([`deepen`]): how
    /// it joins a 16-bit sequence. Its buffer comes from `buffers`, and
    /// the 8-bit one goes back there. A 16-bit frame is returned as it is.
    pub(crate) fn deepened(self, buffers: &dyn Buffers) -> HostFrame {
        if self.format == PixelFormat::Rgba16 {
            return self;
        }
        let mut data = buffers.take(2 * self.data.len());
        deepen(&self.data, &mut data);
        buffers.give(self.data);
        HostFrame { format: PixelFormat::Rgba16, data, ..self }
    }
}

/// 8-bit samples to 16-bit ones of the same value, in native byte order:
/// `v · 257`, so 255 is 65535 and every 8-bit value is a 16-bit one
/// exactly (`v / 255 = 257 v / 65535`): the kernels see the same numbers.
pub(crate) fn deepen(samples: &[u8], out: &mut [u8]) {
    for (o, &v) in out.chunks_exact_mut(2).zip(samples) {
        o.copy_from_slice(&(u16::from(v) * 257).to_ne_bytes());
    }
}
