//! The piecewise decoder the pipeline uses for GPU slots gives the same
//! pixels as the whole-frame one, for every source layout, and refuses a
//! frame of the wrong size before writing anything.

use std::cell::Cell;

use framepipe::io::{Buffers, DecodeLimits, FrameInfo, decode_file, decode_file_with, decode_with};
use framepipe::{Error, PixelFormat};
use image::{DynamicImage, ImageBuffer};

use crate::util::Rng;

fn pieces(path: &std::path::Path) -> (FrameInfo, Vec<u8>) {
    let mut data = Vec::new();
    let info = decode_with(
        path,
        &DecodeLimits::default(),
        |_| Ok(()),
        |at, px| {
            assert_eq!(at, data.len(), "pieces arrive in order");
            data.extend_from_slice(px);
            Ok(())
        },
    )
    .unwrap();
    (info, data)
}

/// Hands out dirty buffers of the wrong size and counts them.
#[derive(Default)]
struct Recycler {
    taken: Cell<usize>,
    given: Cell<usize>,
}

impl Buffers for Recycler {
    fn take(&self, len: usize) -> Vec<u8> {
        self.taken.set(self.taken.get() + 1);
        let mut dirty = vec![0xa5; len / 2 + 7];
        dirty.resize(len, 0x5a);
        dirty
    }

    fn give(&self, _: Vec<u8>) {
        self.given.set(self.given.get() + 1);
    }
}

#[test]
fn pieces_equal_the_whole_frame_for_every_layout() {
    let mut rng = Rng::fresh("pieces_equal_the_whole_frame");
    let t = tempfile::tempdir().unwrap();
    // Wide enough that RGB is widened in more than one batch.
    let (w, h) = (300 + (rng.next() % 50) as u32, 61 + (rng.next() % 9) as u32);
    let mut bytes = |n: u32| -> Vec<u8> { (0..n).map(|_| rng.next() as u8).collect() };
    let px = w * h;
    let images = [
        ("rgb8", DynamicImage::ImageRgb8(ImageBuffer::from_raw(w, h, bytes(px * 3)).unwrap())),
        ("rgba8", DynamicImage::ImageRgba8(ImageBuffer::from_raw(w, h, bytes(px * 4)).unwrap())),
        ("l8", DynamicImage::ImageLuma8(ImageBuffer::from_raw(w, h, bytes(px)).unwrap())),
        ("rgb16", DynamicImage::ImageRgb16(ImageBuffer::from_raw(w, h, words(&bytes(px * 6))).unwrap())),
        ("rgba16", DynamicImage::ImageRgba16(ImageBuffer::from_raw(w, h, words(&bytes(px * 8))).unwrap())),
    ];
    let mut checked = Vec::new();
    for (name, image) in images {
        for ext in ["png", "tif", "qoi", "jpg"] {
            let path = t.path().join(format!("{name}.{ext}"));
            // Not every container takes every layout; what it takes must agree.
            if image.save(&path).is_err() {
                continue;
            }
            checked.push(format!("{name}.{ext}"));
            let whole = decode_file(&path, &DecodeLimits::default()).unwrap();
            let (info, data) = pieces(&path);
            assert_eq!(
                (info.width, info.height, info.format),
                (whole.width, whole.height, whole.format),
                "{name}.{ext}"
            );
            assert_eq!(info.has_alpha, whole.has_alpha, "{name}.{ext}");
            assert!(data == whole.data, "{name}.{ext}: same pixels");
            // Into recycled buffers (dirty ones, of another size): the same
            // frame, and what was taken is given back or kept as the frame's.
            let recycler = Recycler::default();
            let frame = decode_file_with(&path, &DecodeLimits::default(), &recycler, |_| Ok(())).unwrap();
            assert_eq!(
                (frame.width, frame.height, frame.format, frame.has_alpha),
                (whole.width, whole.height, whole.format, whole.has_alpha),
                "{name}.{ext}"
            );
            assert!(frame.data == whole.data, "{name}.{ext}: same pixels from recycled buffers");
            let (taken, given) = (recycler.taken.get(), recycler.given.get());
            assert_eq!(taken, given + 1, "{name}.{ext}: one buffer kept as the frame's, the rest given back");
        }
    }
    eprintln!("checked {checked:?}");
    for must in ["rgb8.png", "rgba8.png", "l8.png", "rgb16.png", "rgba16.png", "rgb8.jpg", "rgb8.qoi", "rgb16.tif"] {
        assert!(checked.iter().any(|c| c == must), "{must} was checked");
    }
}

fn words(b: &[u8]) -> Vec<u16> {
    b.chunks_exact(2).map(|c| u16::from_ne_bytes([c[0], c[1]])).collect()
}

#[test]
fn a_refused_header_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("f.png");
    image::RgbImage::from_pixel(40, 30, image::Rgb([200, 10, 99])).save(&path).unwrap();
    let err = decode_with(
        &path,
        &DecodeLimits::default(),
        |i| if i.format == PixelFormat::Rgba16 { Ok(()) } else { Err(Error::invalid("depth", "8-bit", "16-bit")) },
        |_, _| panic!("nothing is written for a refused frame"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("8-bit"), "{err}");
}

/// Grey plus alpha, as a TIFF (a matte pass): `image` alone refuses it.
struct GrayAlpha<T>(std::marker::PhantomData<T>);

const TWO_UINTS: &[tiff::tags::SampleFormat] = &[tiff::tags::SampleFormat::Uint; 2];

/// Grey-alpha samples of one type: `tiff`'s encoder knows none.
macro_rules! gray_alpha {
    ($sample:ty, $bits:literal) => {
        impl tiff::encoder::colortype::ColorType for GrayAlpha<$sample> {
            type Inner = $sample;
            const TIFF_VALUE: tiff::tags::PhotometricInterpretation =
                tiff::tags::PhotometricInterpretation::BlackIsZero;
            const BITS_PER_SAMPLE: &'static [u16] = &[$bits, $bits];
            const SAMPLE_FORMAT: &'static [tiff::tags::SampleFormat] = TWO_UINTS;

            fn horizontal_predict(row: &[$sample], result: &mut Vec<$sample>) {
                result.extend(row.iter().enumerate().map(|(i, v)| if i < 2 { *v } else { v.wrapping_sub(row[i - 2]) }));
            }
        }
    };
}

gray_alpha!(u8, 8);
gray_alpha!(u16, 16);

/// Grey and a second sample of the ExtraSamples kind `extra`.
fn write_gray_extra<C: tiff::encoder::colortype::ColorType>(
    path: &std::path::Path,
    w: u32,
    h: u32,
    data: &[C::Inner],
    extra: u16,
) where
    [C::Inner]: tiff::encoder::TiffValue,
{
    let mut encoder = tiff::encoder::TiffEncoder::new(std::fs::File::create(path).unwrap()).unwrap();
    let mut image = encoder.new_image::<C>(w, h).unwrap();
    image.encoder().write_tag(tiff::tags::Tag::ExtraSamples, &[extra][..]).unwrap();
    image.write_data(data).unwrap();
}

/// A fourth sample of no stated meaning (Photoshop's saved selection) is
/// not alpha: the color is read, the channel left out and counted, so a
/// notice can say so.
#[test]
fn a_tiff_channel_of_no_stated_meaning_is_counted_not_taken_for_alpha() {
    let mut rng = Rng::fresh("a_tiff_unnamed_channel");
    let t = tempfile::tempdir().unwrap();
    let (w, h) = (9 + (rng.next() % 20) as u32, 3 + (rng.next() % 10) as u32);
    let samples: Vec<u8> = (0..4 * w * h).map(|_| rng.next() as u8).collect();
    let path = t.path().join("selection.tif");
    let mut encoder = tiff::encoder::TiffEncoder::new(std::fs::File::create(&path).unwrap()).unwrap();
    let mut image = encoder.new_image::<tiff::encoder::colortype::RGBA8>(w, h).unwrap();
    image.encoder().write_tag(tiff::tags::Tag::ExtraSamples, &[0u16][..]).unwrap();
    image.write_data(&samples).unwrap();
    let info = framepipe::io::probe_info(&path, &DecodeLimits::default()).unwrap();
    assert_eq!((info.has_alpha, info.unnamed_channels), (false, 1));
    let frame = decode_file(&path, &DecodeLimits::default()).unwrap();
    let want: Vec<u8> = samples.chunks(4).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
    assert!(frame.data == want, "the color as stored, opaque");
}

/// Grey with a second sample of no stated meaning is read as grey, the
/// sample left out and counted, as it is beside RGB.
#[test]
fn a_grey_tiff_with_a_channel_of_no_stated_meaning_is_read_as_grey() {
    let (_t, written) = grey_pair_tiffs_read_back("a_grey_tiff_unnamed_channel", 0, false);
    for (path, format) in written {
        let info = framepipe::io::probe_info(&path, &DecodeLimits::default()).unwrap();
        assert_eq!((info.format, info.has_alpha, info.unnamed_channels), (format, false, 1));
    }
}

#[test]
fn a_grey_alpha_tiff_widens_to_rgba_with_its_alpha() {
    grey_pair_tiffs_read_back("a_grey_alpha_tiff", 2, true);
}

/// Writes random grey pairs as 8- and 16-bit TIFFs whose second sample is
/// of the ExtraSamples kind `extra`, and checks each reads back with grey
/// in R, G and B and, in A, the second sample (`alpha`) or opaque, the
/// pipeline's decoder agreeing. Returns the folder and the files.
fn grey_pair_tiffs_read_back(
    seed: &str,
    extra: u16,
    alpha: bool,
) -> (tempfile::TempDir, Vec<(std::path::PathBuf, PixelFormat)>) {
    let mut rng = Rng::fresh(seed);
    let t = tempfile::tempdir().unwrap();
    let (w, h) = (17 + (rng.next() % 30) as u32, 5 + (rng.next() % 20) as u32);
    let samples: Vec<u16> = (0..2 * w * h).map(|_| rng.next() as u16).collect();
    let eight: Vec<u8> = samples.iter().map(|v| *v as u8).collect();
    let (p8, p16) = (t.path().join("grey8.tif"), t.path().join("grey16.tif"));
    write_gray_extra::<GrayAlpha<u8>>(&p8, w, h, &eight, extra);
    write_gray_extra::<GrayAlpha<u16>>(&p16, w, h, &samples, extra);
    let written = vec![(p8, PixelFormat::Rgba8), (p16, PixelFormat::Rgba16)];
    for (path, format) in &written {
        let frame = decode_file(path, &DecodeLimits::default()).unwrap();
        assert_eq!((frame.width, frame.height, frame.format, frame.has_alpha), (w, h, *format, alpha));
        let px: Vec<u16> = match format {
            PixelFormat::Rgba8 => frame.data.iter().map(|v| *v as u16).collect(),
            PixelFormat::Rgba16 => words(&frame.data),
            other => panic!("{other} written"),
        };
        let (wide, opaque): (Vec<u16>, u16) = match format {
            PixelFormat::Rgba8 => (eight.iter().map(|&v| v.into()).collect(), 255),
            PixelFormat::Rgba16 => (samples.clone(), 65535),
            other => panic!("{other} written"),
        };
        let want: Vec<u16> =
            wide.chunks(2).flat_map(|ga| [ga[0], ga[0], ga[0], if alpha { ga[1] } else { opaque }]).collect();
        assert!(px == want, "{}: grey in R, G and B, alpha {alpha} in A", path.display());
        let (info, data) = pieces(path);
        assert_eq!((info.format, info.has_alpha), (*format, alpha));
        assert!(data == frame.data, "{}: the pipeline's decoder agrees", path.display());
    }
    (t, written)
}
