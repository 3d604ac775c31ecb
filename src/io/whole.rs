//! Whether a file holds all of its image, from its structure alone: the
//! end marker a format closes with, or where its data says it lies. A
//! decoder finds most files cut short, but not all (a JPEG decoder fills
//! the missing rows with grey), and a resumed render must know whether an
//! output already there is whole without decoding every one of them.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use crate::error::{Error, Result};

/// Refuses a file cut short: a PNG without its closing IEND chunk, a QOI
/// without its end marker, a JPEG without an end-of-image marker after
/// its last scan, a TIFF whose strips or tiles reach past its end. Reads
/// the file's tail, a TIFF's first directory, or where a PNG's tail holds
/// no IEND (a file cut short, or bytes appended) its chunk headers; a
/// JPEG whose tail has no end marker is read through, its scans walked.
/// Other formats pass: their decoders find a short file themselves.
///
/// # Errors
/// [`Error::Decode`] saying what is missing; [`Error::Io`] when the file
/// cannot be read.
pub fn check_whole(path: &Path) -> Result<()> {
    whole_format(path).map(drop)
}

/// [`check_whole`], returning the format the file's first bytes say it
/// holds, whatever its name says (`None` for none `image` knows).
pub(crate) fn whole_format(path: &Path) -> Result<Option<image::ImageFormat>> {
    use image::ImageFormat;
    let io = |source| Error::Io { path: path.to_owned(), source };
    let format = image::ImageReader::open(path).map_err(io)?.with_guessed_format().map_err(io)?.format();
    let truncated = |what: &str| Err(Error::Decode { path: path.to_owned(), reason: format!("truncated: {what}") });
    match format {
        Some(ImageFormat::Png) if !png_ends(path)? => truncated("no IEND chunk"),
        Some(ImageFormat::Qoi) if !tail(path, 8)?.ends_with(&QOI_END) => truncated("no end marker"),
        Some(ImageFormat::Jpeg) => check_jpeg_whole(path, format),
        Some(ImageFormat::Tiff) => check_tiff_extent(path),
        _ => Ok(()),
    }
    .map(|()| format)
}

/// The IEND chunk every PNG ends with: zero length, type, CRC.
const PNG_END: [u8; 12] = [0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82];

/// The eight bytes every QOI file ends with.
const QOI_END: [u8; 8] = [0, 0, 0, 0, 0, 0, 0, 1];

/// Whether a PNG holds its closing IEND chunk: at its end, or followed
/// by bytes some writers append (which decoders ignore). The chunk with
/// its CRC is 12 bytes that compressed data all but never holds, so the
/// last 4 KiB are looked at first; failing that, the chunks are walked
/// from the start by their lengths (their headers read, never their data)
/// to an IEND, or to the end of the file.
fn png_ends(path: &Path) -> Result<bool> {
    if tail(path, 4096)?.windows(PNG_END.len()).any(|w| w == PNG_END) {
        return Ok(true);
    }
    let io = |source| Error::Io { path: path.to_owned(), source };
    let mut file = buffered(path)?;
    // Past the signature: length (4), type (4), data, CRC (4) each. Read
    // through a buffer: a file of millions of empty chunks costs no
    // system call per chunk.
    file.seek_relative(8).map_err(io)?;
    let mut head = [0u8; 8];
    while read_all(&mut file, &mut head).map_err(io)? {
        if &head[4..] == b"IEND" {
            // Whole once its CRC is there too.
            return read_all(&mut file, &mut [0u8; 4]).map_err(io);
        }
        let data = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        file.seek_relative(i64::from(data) + 4).map_err(io)?;
    }
    Ok(false)
}

/// Whether a PNG holds more images than its default one (an APNG whose
/// acTL chunk, before the image data, counts more than one frame: of one,
/// that frame is the default image): its chunk headers walked to the
/// first IDAT. The default image is the one read.
pub(crate) fn png_animated(path: &Path) -> Result<bool> {
    let io = |source| Error::Io { path: path.to_owned(), source };
    let mut file = buffered(path)?;
    file.seek_relative(8).map_err(io)?;
    let mut head = [0u8; 8];
    while read_all(&mut file, &mut head).map_err(io)? {
        let data = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        match &head[4..] {
            b"acTL" => {
                let mut frames = [0u8; 4];
                return Ok(read_all(&mut file, &mut frames).map_err(io)? && u32::from_be_bytes(frames) > 1);
            }
            b"IDAT" | b"IEND" => return Ok(false),
            _ => {}
        }
        file.seek_relative(i64::from(data) + 4).map_err(io)?;
    }
    Ok(false)
}

/// `path` opened for reading forward through a buffer.
fn buffered(path: &Path) -> Result<BufReader<std::fs::File>> {
    let file = std::fs::File::open(path).map_err(|source| Error::Io { path: path.to_owned(), source })?;
    Ok(BufReader::with_capacity(64 << 10, file))
}

/// Fills `buf`; false where the file ends first.
fn read_all(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    match r.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// The last `n` bytes of `path` (all of it if shorter).
fn tail(path: &Path, n: u64) -> Result<Vec<u8>> {
    let io = |source| Error::Io { path: path.to_owned(), source };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(n))).map_err(io)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io)?;
    Ok(bytes)
}

/// Refuses a TIFF whose first image's strips (or tiles) end past the end
/// of the file.
fn check_tiff_extent(path: &Path) -> Result<()> {
    use tiff::tags::Tag;
    let fail = |reason: String| Error::Decode { path: path.to_owned(), reason };
    let io = |source| Error::Io { path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut tiff = tiff::decoder::Decoder::new(std::io::BufReader::new(file)).map_err(|e| fail(e.to_string()))?;
    let mut list = |tag| tiff.find_tag_unsigned_vec::<u64>(tag).map_err(|e| fail(e.to_string()));
    let (offsets, counts) = match (list(Tag::StripOffsets)?, list(Tag::StripByteCounts)?) {
        (Some(o), Some(c)) => (o, c),
        (Some(o), None) => (o, Vec::new()),
        _ => (list(Tag::TileOffsets)?.unwrap_or_default(), list(Tag::TileByteCounts)?.unwrap_or_default()),
    };
    // Without a size for each piece, where the data ends is unknown: not
    // to be taken as whole.
    if counts.len() < offsets.len() {
        return Err(fail(format!(
            "{} of its {} image data pieces have no byte count",
            offsets.len() - counts.len(),
            offsets.len()
        )));
    }
    let end = offsets.iter().zip(&counts).map(|(o, c)| o.saturating_add(*c)).max().unwrap_or(0);
    if end > len {
        return Err(fail(format!("truncated: its image data ends at byte {end}, the file at {len}")));
    }
    Ok(())
}

/// Refuses a JPEG cut short: the decoder fills what is missing with grey
/// and reports success, so the file itself must end its last scan (SOS)
/// with an end-of-image marker (EOI). Entropy-coded data never holds
/// either marker (a 0xFF in it is followed by 0x00 or a restart marker),
/// and an embedded thumbnail's come before the main image's scans.
///
/// A whole file's marker sits in its last bytes, which are all that is
/// read then. When they lack it (bytes appended after the image: a phone's
/// motion-photo video, a camera's trailer, which may hold anything) the
/// file's segments are walked from the start to its end-of-image marker.
pub(super) fn check_jpeg_whole(path: &Path, format: Option<image::ImageFormat>) -> Result<()> {
    if format != Some(image::ImageFormat::Jpeg) {
        return Ok(());
    }
    // An end-of-image marker after the last scan in `bytes` (no scan at
    // all is the decoder's to refuse).
    let ends = |bytes: &[u8]| {
        let last = |marker: u8| bytes.windows(2).rposition(|w| w == [0xFF, marker]);
        matches!((last(0xDA), last(0xD9)), (scan, Some(end)) if scan.is_none_or(|scan| end > scan))
    };
    if ends(&tail(path, 4096)?) {
        return Ok(());
    }
    // Walked through a buffer, never held whole: a frame's decoder holds
    // the file already (the decode limit counts it once).
    let reached = jpeg_reaches_end(&mut buffered(path)?);
    if reached.map_err(|source| Error::Io { path: path.to_owned(), source })? {
        return Ok(());
    }
    Err(Error::Decode { path: path.to_owned(), reason: "truncated: no end-of-image marker after the last scan".into() })
}

/// Walks a JPEG's segments from its start-of-image marker: each marker
/// segment by its length (an embedded thumbnail, whole JPEG and all, is
/// inside one), each scan's entropy-coded data to the first marker that
/// is neither a stuffed 0xFF (FF 00) nor a restart (FF D0-D7). True once
/// the end-of-image marker is reached; false at the end of the file.
fn jpeg_reaches_end<R: Read + Seek>(r: &mut BufReader<R>) -> std::io::Result<bool> {
    r.seek_relative(2)?;
    // Set where a scan's data ended on a marker's 0xFF, already read.
    let mut at_marker = false;
    loop {
        let Some(marker) = next_marker(r, std::mem::take(&mut at_marker))? else { return Ok(false) };
        match marker {
            0xD9 => return Ok(true),
            0x00 | 0x01 | 0xD0..=0xD7 => {}
            _ => {
                let mut len = [0u8; 2];
                if !read_all(r, &mut len)? {
                    return Ok(false);
                }
                r.seek_relative(i64::from(u16::from_be_bytes(len)) - 2)?;
                if marker == 0xDA {
                    // Entropy-coded data up to the next real marker.
                    loop {
                        if !skip_past_ff(r)? {
                            return Ok(false);
                        }
                        match r.fill_buf()?.first() {
                            Some(0x00 | 0xD0..=0xD7) => r.consume(1),
                            _ => break,
                        }
                    }
                    at_marker = true;
                }
            }
        }
    }
}

/// A JPEG's frame header: its SOF marker (0xC0 baseline, 0xC2
/// progressive, 0xC3 lossless, 0xF7 JPEG-LS, ...) and count of components,
/// from the first one; `None` where there is none before a scan.
pub(super) fn jpeg_frame_header(path: &Path) -> Result<Option<(u8, u8)>> {
    let io = |source| Error::Io { path: path.to_owned(), source };
    let mut r = buffered(path)?;
    r.seek_relative(2).map_err(io)?;
    loop {
        let Some(marker) = next_marker(&mut r, false).map_err(io)? else { return Ok(None) };
        match marker {
            0x00 | 0x01 | 0xD0..=0xD7 => continue,
            // A scan or the end before any frame header: none to read.
            0xD9 | 0xDA => return Ok(None),
            _ => {}
        }
        let mut len = [0u8; 2];
        if !read_all(&mut r, &mut len).map_err(io)? {
            return Ok(None);
        }
        let len = i64::from(u16::from_be_bytes(len));
        // SOF0-SOF15 but DHT (C4), JPG (C8) and DAC (CC), and JPEG-LS's
        // SOF55: precision (1), height (2), width (2), then the count of
        // components.
        if ((0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC)) || marker == 0xF7 {
            let mut head = [0u8; 6];
            if !read_all(&mut r, &mut head).map_err(io)? {
                return Ok(None);
            }
            return Ok(Some((marker, head[5])));
        }
        r.seek_relative(len - 2).map_err(io)?;
    }
}

/// Whether a SOF marker is a progressive frame's: its decoder holds every
/// coefficient of the frame, two bytes per component per pixel at most,
/// on top of its output.
pub(super) fn jpeg_progressive(marker: u8) -> bool {
    matches!(marker, 0xC2 | 0xC6 | 0xCA | 0xCE)
}

/// Whether a SOF marker is a lossless frame's (SOF3 and its kin, or
/// JPEG-LS), which the JPEG decoder does not read.
pub(super) fn jpeg_lossless(marker: u8) -> bool {
    matches!(marker, 0xC3 | 0xC7 | 0xCB | 0xCF | 0xF7)
}

/// The next marker's code, `None` at the end of the file. Bytes between
/// segments (some writers leave padding) and fill bytes (FF FF ...) are
/// skipped; `after_ff`: its 0xFF was read already (a scan's data ended on
/// it).
fn next_marker(r: &mut impl BufRead, after_ff: bool) -> std::io::Result<Option<u8>> {
    if !after_ff && !skip_past_ff(r)? {
        return Ok(None);
    }
    loop {
        match next_byte(r)? {
            Some(0xFF) => {}
            other => return Ok(other),
        }
    }
}

/// Reads up to and including the next 0xFF; false at the end of the file.
fn skip_past_ff(r: &mut impl BufRead) -> std::io::Result<bool> {
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(false);
        }
        match buf.iter().position(|&b| b == 0xFF) {
            Some(i) => {
                r.consume(i + 1);
                return Ok(true);
            }
            None => {
                let n = buf.len();
                r.consume(n);
            }
        }
    }
}

/// The next byte, `None` at the end of the file.
fn next_byte(r: &mut impl BufRead) -> std::io::Result<Option<u8>> {
    let b = r.fill_buf()?.first().copied();
    if b.is_some() {
        r.consume(1);
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{EncodeOptions, HostFrame, OutputFormat, PixelFormat, encode_frame};

    #[test]
    fn a_file_cut_short_is_refused_a_whole_one_passes() {
        let t = tempfile::tempdir().unwrap();
        let mut frame = HostFrame::new(37, 23, PixelFormat::Rgba8, false);
        frame.data.iter_mut().enumerate().for_each(|(i, b)| *b = (i * 7919 % 251) as u8);
        for (name, format) in
            [("f.png", OutputFormat::Png), ("f.qoi", OutputFormat::Qoi), ("f.jpg", OutputFormat::Jpeg)]
        {
            let path = t.path().join(name);
            let bytes = encode_frame(frame.clone(), format, &EncodeOptions::default(), &path).unwrap();
            std::fs::write(&path, &bytes).unwrap();
            check_whole(&path).unwrap();
            if format != OutputFormat::Qoi {
                // Bytes some writers append after the end: still whole,
                // whatever they hold (a motion photo's video after a JPEG
                // holds scan and end markers of its own, in any order).
                let mut junk: Vec<u8> = (0..20_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
                junk.extend([0xFF, 0xDA, 0, 4, 1, 2, 0xFF, 0xD9, 0xFF, 0xDA, 7, 7]);
                std::fs::write(&path, [&bytes[..], &junk].concat()).unwrap();
                check_whole(&path).unwrap();
            }
            for cut in [5, 2] {
                std::fs::write(&path, &bytes[..bytes.len() - cut]).unwrap();
                let err = check_whole(&path).unwrap_err().to_string();
                assert!(err.contains(name) && err.contains("truncated"), "{cut}: {err}");
            }
        }
        // A TIFF whose directory comes first (as many writers put it): a
        // 2x1 grey image, its one strip of two bytes after the directory.
        let tiff_of = |entries: &[(u16, u16, u32)]| {
            let mut tiff = b"II*\0\x08\0\0\0".to_vec();
            tiff.extend((entries.len() as u16).to_le_bytes());
            for &(tag, kind, value) in entries {
                tiff.extend(tag.to_le_bytes());
                tiff.extend(kind.to_le_bytes());
                tiff.extend(1u32.to_le_bytes());
                tiff.extend(if kind == 3 { (value as u16 as u32).to_le_bytes() } else { value.to_le_bytes() });
            }
            tiff.extend(0u32.to_le_bytes());
            tiff
        };
        let mut tiff = tiff_of(&[(256, 3, 2), (257, 3, 1), (258, 3, 8), (262, 3, 1), (273, 4, 86), (279, 4, 2)]);
        assert_eq!(tiff.len(), 86);
        tiff.extend([10, 200]);
        let path = t.path().join("f.tif");
        std::fs::write(&path, &tiff).unwrap();
        check_whole(&path).unwrap();
        std::fs::write(&path, &tiff[..87]).unwrap();
        let err = check_whole(&path).unwrap_err().to_string();
        assert!(err.contains("its image data ends at byte 88, the file at 87"), "{err}");
        // Its strip without a byte count: where the data ends is unknown
        // (refused by `tiff` itself, or for fewer counts than strips here).
        let mut tiff = tiff_of(&[(256, 3, 2), (257, 3, 1), (258, 3, 8), (262, 3, 1), (273, 4, 74)]);
        tiff.extend([10, 200]);
        std::fs::write(&path, &tiff).unwrap();
        assert!(check_whole(&path).unwrap_err().to_string().contains("f.tif"));
    }

    #[test]
    fn a_jpeg_walk_passes_stuffed_bytes_and_restarts_to_the_end_marker() {
        let walk = |bytes: &[u8]| jpeg_reaches_end(&mut BufReader::with_capacity(3, std::io::Cursor::new(bytes)));
        // SOI, an APP0 segment holding FF D9 (skipped by its length), a
        // scan whose data holds a stuffed FF 00 and a restart FF D0, EOI,
        // then a trailer.
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 6, 0xFF, 0xD9, 1, 2];
        jpeg.extend([0xFF, 0xDA, 0, 3, 9, 5, 0xFF, 0x00, 7, 0xFF, 0xD0, 8, 0xFF, 0xFF, 0xD9]);
        assert!(walk(&jpeg).unwrap());
        jpeg.extend([0, 1, 2, 0xFF]);
        assert!(walk(&jpeg).unwrap());
        // Cut inside the scan, or inside a segment: no end.
        assert!(!walk(&jpeg[..14]).unwrap());
        assert!(!walk(&jpeg[..7]).unwrap());
        // A segment length under 2 (no room for itself) does not stall.
        assert!(!walk(&[0xFF, 0xD8, 0xFF, 0xE1, 0, 0, 5, 5]).unwrap());
        assert!(walk(&[0xFF, 0xD8, 0xFF, 0xE1, 0, 1, 0xFF, 0xD9]).unwrap());
    }
}
