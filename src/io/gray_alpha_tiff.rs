//! Grey-plus-alpha TIFFs, and grey (or grey-alpha) TIFFs of 32-bit floats,
//! which `image`'s TIFF codec refuses ("color type Unknown(16)") although
//! the `tiff` crate under it reads them: matte, key and depth passes are
//! often written this way (OpenImageIO and libtiff write a one-channel
//! image with alpha as two samples). This decoder reads them with `tiff`
//! and hands `image` the usual grey or grey-alpha layout (floats clamped
//! to 0..1 at 16 bits, as `image` reads RGB floats), so the rest of the
//! decode path (limits, widening to RGBA) is the one every format takes.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use image::error::{DecodingError, ImageFormatHint};
use image::{ColorType, ImageDecoder, ImageError, ImageResult};
use tiff::decoder::{Decoder, DecodingResult, Limits};
use tiff::tags::{PhotometricInterpretation, SampleFormat, Tag};

/// A grey-alpha TIFF of 8 or 16 bits per sample, or a grey or grey-alpha
/// one of 32-bit floats, opened and checked.
pub(super) struct GrayAlphaTiff {
    decoder: Decoder<BufReader<File>>,
    width: u32,
    height: u32,
    /// 8, 16, or 32 (floats).
    bits: u8,
    /// Whether each pixel has a second sample: alpha, or one of no stated
    /// meaning (ExtraSamples 0, a saved selection), left out on reading
    /// as an RGB file's is.
    two: bool,
    alpha: bool,
    /// Whether the alpha is associated (premultiplied): float samples are
    /// made straight here, before they are rounded to 16 bits.
    associated: bool,
}

impl GrayAlphaTiff {
    /// Opens `path` if it is a grey-alpha TIFF (or grey with one unnamed
    /// extra sample). `Ok(None)` when it is not a grey TIFF with extra
    /// samples, so the caller reports `image`'s own error; `Err` with a
    /// reason when it is one framepipe cannot read (more samples, other
    /// bits or encodings).
    pub(super) fn open(path: &Path, max_alloc: u64) -> Result<Option<GrayAlphaTiff>, String> {
        let Ok(file) = File::open(path) else { return Ok(None) };
        let Ok(decoder) = Decoder::new(BufReader::new(file)) else { return Ok(None) };
        // Both the decoded frame and a chunk as stored (`tiff` refuses a
        // strip or tile of more than 128 MiB by default: one strip of an
        // 8K grey-alpha 16-bit frame is 142 MB) within the decode limit;
        // the caller's count of what a decode needs holds the frame, and
        // a chunk is at most the file, which is within it too.
        let mut limits = Limits::default();
        limits.decoding_buffer_size = usize::try_from(max_alloc).unwrap_or(usize::MAX);
        limits.intermediate_buffer_size = limits.decoding_buffer_size;
        let mut decoder = decoder.with_limits(limits);
        // `tiff` calls any grey image with extra samples "multiband";
        // grey-alpha is two samples, the second marked as alpha
        // (ExtraSamples 1, associated, or 2, unassociated); 0 is a sample
        // of no stated meaning.
        let (bits, two) = match decoder.colortype() {
            Ok(tiff::ColorType::Multiband { bit_depth, num_samples: 2 }) => (bit_depth, true),
            Ok(tiff::ColorType::Multiband { num_samples, .. }) => {
                return Err(format!(
                    "a grey image of {num_samples} samples per pixel (framepipe reads grey, grey with alpha, RGB and RGBA)"
                ));
            }
            Ok(tiff::ColorType::Gray(32)) => (32, false),
            _ => return Ok(None),
        };
        let tags = |decoder: &mut Decoder<_>, tag| {
            decoder.find_tag_unsigned_vec::<u16>(tag).map(Option::unwrap_or_default).map_err(|e| e.to_string())
        };
        let extra = tags(&mut decoder, Tag::ExtraSamples)?;
        if two && !matches!(extra[..], [0..=2]) {
            return Err("grey with a second sample not described (ExtraSamples 0, 1 or 2)".into());
        }
        let alpha = two && extra[..] != [0];
        let associated = alpha && extra[..] == [1];
        if !matches!(bits, 8 | 16 | 32) {
            return Err(format!("{bits}-bit grey-alpha samples are not supported (8 or 16 bits, or 32-bit floats)"));
        }
        if tags(&mut decoder, Tag::PhotometricInterpretation)? != [PhotometricInterpretation::BlackIsZero.to_u16()] {
            return Err("grey samples must be black-is-zero (PhotometricInterpretation 1)".into());
        }
        // Absent means unsigned; present, one value per sample. 32 bits
        // are read as floats only.
        let format = tags(&mut decoder, Tag::SampleFormat)?;
        let want = if bits == 32 { SampleFormat::IEEEFP } else { SampleFormat::Uint }.to_u16();
        if (bits == 32 && format.is_empty()) || format.iter().any(|f| *f != want) {
            return Err(match bits {
                32 => "32-bit grey samples must be floats (integers are not supported)".into(),
                _ => "grey-alpha samples must be unsigned integers".into(),
            });
        }
        let (width, height) = decoder.dimensions().map_err(|e| e.to_string())?;
        Ok(Some(GrayAlphaTiff { decoder, width, height, bits, two, alpha, associated }))
    }

    /// Whether its samples are floats (clamped to 0..1 on reading).
    pub(super) fn float(&self) -> bool {
        self.bits == 32
    }
}

impl ImageDecoder for GrayAlphaTiff {
    fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn color_type(&self) -> ColorType {
        match (self.bits, self.alpha) {
            (8, true) => ColorType::La8,
            (8, false) => ColorType::L8,
            (_, true) => ColorType::La16,
            (_, false) => ColorType::L16,
        }
    }

    /// As stored: a second sample left out is still in the file (and in
    /// the decoder's copy of it).
    fn original_color_type(&self) -> image::ExtendedColorType {
        use image::ExtendedColorType::{L8, L16, La8, La16};
        match (self.bits, self.two) {
            (8, true) => La8,
            (8, false) => L8,
            (_, true) => La16,
            (_, false) => L16,
        }
    }

    fn read_image(mut self, buf: &mut [u8]) -> ImageResult<()> {
        let fail = |reason: String| {
            ImageError::Decoding(DecodingError::new(ImageFormatHint::Exact(image::ImageFormat::Tiff), reason))
        };
        let pixels = self.width as usize * self.height as usize;
        let mut result = match self.bits {
            8 => DecodingResult::U8(Vec::new()),
            16 => DecodingResult::U16(Vec::new()),
            _ => DecodingResult::F32(Vec::new()),
        };
        let layout = self.decoder.read_image_to_buffer(&mut result).map_err(|e| fail(e.to_string()))?;
        let planar = layout.planes > 1;
        // Per pixel, the grey sample and the alpha (`None` where the
        // second sample is not one and is left out, or there is none).
        let (two, alpha) = (self.two, self.alpha);
        let samples = |n: usize| {
            let want = if two { 2 * pixels } else { pixels };
            if n < want {
                return Err(fail(format!("the file holds {n} of the image's {want} samples")));
            }
            Ok(move |p: usize| -> (usize, Option<usize>) {
                match (two, planar) {
                    (false, _) => (p, None),
                    (true, true) => (p, alpha.then_some(pixels + p)),
                    (true, false) => (2 * p, alpha.then_some(2 * p + 1)),
                }
            })
        };
        let width = if alpha { 2 } else { 1 } * if self.bits == 8 { 1 } else { 2 };
        let out = buf.chunks_exact_mut(width).take(pixels).enumerate();
        match &result {
            DecodingResult::U8(v) => {
                let at = samples(v.len())?;
                for (p, out) in out {
                    let (g, a) = at(p);
                    out[0] = v[g];
                    if let Some(a) = a {
                        out[1] = v[a];
                    }
                }
            }
            DecodingResult::U16(v) => {
                let at = samples(v.len())?;
                for (p, out) in out {
                    let (g, a) = at(p);
                    out[..2].copy_from_slice(&v[g].to_ne_bytes());
                    if let Some(a) = a {
                        out[2..].copy_from_slice(&v[a].to_ne_bytes());
                    }
                }
            }
            DecodingResult::F32(v) => {
                // Clamped to 0..1 and rounded to 16 bits (NaN reads as 0).
                let sixteen = |f: f32| ((f.clamp(0.0, 1.0) * 65535.0).round() as u16).to_ne_bytes();
                let at = samples(v.len())?;
                for (p, out) in out {
                    let (g, a) = at(p);
                    let (g, a) = (v[g], a.map(|a| v[a]));
                    if let Some(a) = a {
                        // Straight before rounding (the caller divides
                        // integer samples only).
                        let g = if self.associated { super::decode::straight_f32(g, a) } else { g };
                        out[..2].copy_from_slice(&sixteen(g));
                        out[2..].copy_from_slice(&sixteen(a));
                    } else {
                        out.copy_from_slice(&sixteen(g));
                    }
                }
            }
            _ => return Err(fail("unexpected sample type".into())),
        }
        Ok(())
    }

    fn read_image_boxed(self: Box<Self>, buf: &mut [u8]) -> ImageResult<()> {
        (*self).read_image(buf)
    }
}
