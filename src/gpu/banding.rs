//! Bands of rows: how a frame is cut so that no binding exceeds what the
//! adapter allows, with enough halo rows that every band's output equals a
//! whole-frame pass.

use crate::error::{Error, Result};
use crate::io::PixelFormat;
use crate::ops::Plan;

use super::kernels;

/// Bytes of f32 RGBA per pixel in the scratch buffers.
pub(super) const SCRATCH_BPP: u64 = 16;

/// Bytes per pixel that bound a band's rows: the f32 scratch when the plan
/// blurs, else only the packed pixels.
fn band_bpp(plan: &Plan, format: PixelFormat) -> u64 {
    if plan.passes.is_empty() { format.bytes_per_pixel() as u64 } else { SCRATCH_BPP }
}

/// The band layout of a frame under a binding limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Banding {
    /// Output rows per band.
    pub band_rows: u32,
    /// Context rows each side.
    pub halo: u32,
    /// Rows the band buffers hold (band + both halos, at most the frame).
    pub scratch_rows: u32,
}

/// The most bytes one band buffer holds, even where the adapter would bind
/// more (2 GiB on most desktop GPUs): the kernel buffers are a fixed cost
/// beside the frame slots, and a whole 8K frame in f32 (566 MB, twice) would
/// leave a 2 GiB budget room for three slots, so three decodes at once.
/// At 128 MiB an 8K frame is five bands; each re-reads two blur halos (24
/// rows at sigma 4 of about 1000), a few per cent more kernel work.
pub const BAND_TARGET_BYTES: u64 = 128 << 20;

impl Banding {
    /// Lays out a `width x height` frame for `plan` when one binding may
    /// hold at most `limit` bytes.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] (a usage error: the blur is too wide for
    /// this adapter, whatever the frames) when not even a band of 8 rows
    /// plus the blur halo fits; for a frame of no pixels, or wider than
    /// the kernels' dispatches reach.
    pub fn new(width: u32, height: u32, format: PixelFormat, plan: &Plan, limit: u64) -> Result<Self> {
        // A frame of no pixels is the caller's mistake (`HostFrame::check`),
        // a frame wider than 65535 workgroups the adapter's limit.
        if width == 0 || height == 0 {
            return Err(Error::invalid("frame size", format!("{width}x{height}"), "at least 1x1 pixels"));
        }
        let max_width = 65535 * kernels::WORKGROUP.0;
        if width > max_width {
            return Err(Error::invalid("frame width", width, format!("at most {max_width} px on the GPU")));
        }
        let row = width as u64 * band_bpp(plan, format);
        // Dispatch height is capped at 65535 workgroups of WORKGROUP.1 rows.
        let max_rows = (limit / row).min(65535 * kernels::WORKGROUP.1 as u64) as u32;
        if max_rows >= height {
            return Ok(Banding { band_rows: height, halo: 0, scratch_rows: height });
        }
        let halo = plan.halo();
        // Bands start on multiples of 8 so preview downscale blocks (up to
        // 8x8) never straddle two bands.
        // Not even 8 rows without a halo: the rows themselves are too wide
        // for the binding (or the dispatch), whatever the blur.
        if max_rows < 8 {
            return Err(Error::invalid(
                "frame width",
                width,
                format!(
                    "at most {} px for {format} frames with these ops on this adapter: a band of 8 rows must fit one {} binding (the CPU backend has no such limit)",
                    limit / (8 * band_bpp(plan, format)),
                    crate::ledger::human_bytes(limit)
                ),
            ));
        }
        if max_rows < 2 * halo + 8 {
            return Err(Error::invalid(
                "blur radius total",
                format!("{halo} px"),
                format!(
                    "at most {} px for {width}-px-wide frames on this adapter: a band of 8 rows and the context each side must fit the {max_rows} rows one {} binding holds (the CPU backend has no such limit)",
                    max_rows.saturating_sub(8) / 2,
                    crate::ledger::human_bytes(limit)
                ),
            ));
        }
        let band_rows = (max_rows - 2 * halo) / 8 * 8;
        Ok(Banding { band_rows, halo, scratch_rows: (band_rows + 2 * halo).min(height) })
    }

    /// The layout under `target` bytes per binding, unless the blur halo
    /// leaves that no rows, or bands shorter than twice their halo (most of
    /// the work re-reading context): then under `ceiling`, the adapter's
    /// own limit: the least limit up to it whose bands are twice their
    /// halo, so the kernel buffers grow no more than they must. A 8192-wide
    /// frame blurred at sigma 170 needs bands of 2 x 510 rows of context
    /// and 8 of its own, 1028 rows, more than the 1024 rows 128 MiB holds.
    ///
    /// # Errors
    /// As [`Banding::new`], under the larger limit.
    pub fn choose(
        width: u32,
        height: u32,
        format: PixelFormat,
        plan: &Plan,
        target: u64,
        ceiling: u64,
    ) -> Result<Self> {
        match Banding::new(width, height, format, plan, target) {
            Ok(b) if b.band_rows >= 2 * b.halo || ceiling <= target => Ok(b),
            Err(e) if ceiling <= target => Err(e),
            _ => {
                // Rows for a band of twice the halo (at least 8, and 8 more
                // for rounding to the band grid) and the halo on both sides.
                let halo = plan.halo() as u64;
                let rows = 2 * halo + (2 * halo).max(8) + 8;
                let enough = (width as u64 * band_bpp(plan, format) * rows).clamp(target, ceiling);
                Banding::new(width, height, format, plan, enough)
            }
        }
    }

    /// `(y0, y1)` output row ranges of each band.
    pub(super) fn bands(&self, height: u32) -> impl Iterator<Item = (u32, u32)> + '_ {
        (0..height).step_by(self.band_rows as usize).map(move |y0| (y0, (y0 + self.band_rows).min(height)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{Op, OpGraph};

    fn blur(sigma: f64) -> Plan {
        OpGraph::new(vec![Op::Blur { sigma }]).unwrap().plan()
    }

    #[test]
    fn the_widest_blur_a_binding_takes_leaves_bands_of_eight_rows() {
        // 8192 px of f32 RGBA: 1024 rows in 128 MiB.
        let limit = 128 << 20;
        let b = Banding::new(8192, 1100, PixelFormat::Rgba8, &blur(169.0), limit).unwrap();
        assert_eq!((b.halo, b.band_rows), (507, 8));
        assert_eq!(b.bands(1100).count(), 138);
        let e = Banding::new(8192, 1100, PixelFormat::Rgba8, &blur(170.0), limit).unwrap_err();
        assert!(e.is_usage(), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("blur radius total 510 px") && msg.contains("at most 508 px"), "{msg}");
        // Frames that fit one binding need no bands, whatever the blur.
        let b = Banding::new(8192, 1000, PixelFormat::Rgba8, &blur(400.0), limit).unwrap();
        assert_eq!((b.band_rows, b.halo), (1000, 0));
    }

    #[test]
    fn rows_too_wide_for_eight_in_a_binding_name_the_width_not_the_blur() {
        // 1920 px of RGBA16, no blur: 15 KiB a row, 4 rows in 64 KiB.
        let colour = OpGraph::new(vec![Op::Exposure { stops: 1.0 }]).unwrap().plan();
        let e = Banding::new(1920, 1080, PixelFormat::Rgba16, &colour, 64 << 10).unwrap_err();
        let msg = e.to_string();
        assert!(e.is_usage() && msg.contains("frame width") && msg.contains("at most 1024 px"), "{msg}");
        assert!(!msg.contains("blur"), "{msg}");
        assert!(Banding::new(1024, 1080, PixelFormat::Rgba16, &colour, 64 << 10).is_ok());
    }
}
