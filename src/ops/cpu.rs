//! The CPU backend: the plan's kernels in f32 on rayon.
//!
//! Arithmetic is written in the same order as the WGSL kernels (load,
//! affine as `m0·r + m1·g + m2·b + offset`, blur taps from -r to +r) so the
//! two backends agree to float rounding; both are checked against the
//! op-by-op f64 definition in the tests.
//!
//! For speed the work is shaped like the GPU's: a plan without blur is one
//! pass from bytes to bytes. With blurs, the frame is cut into bands of
//! rows, each loaded with a halo of the summed blur radii (as the GPU does
//! for its binding limit), and each band runs every pass on one thread
//! while it is hot in cache: the horizontal pass reads a clamped-and-padded
//! copy of each row (no per-tap bounds logic), the vertical pass runs over
//! whole rows as flat `f32` slices (which the compiler vectorises), and the
//! last vertical pass quantises straight into the output bytes. No
//! frame-sized f32 buffer is ever allocated.

use rayon::prelude::*;

use super::{BlurKernel, Plan};
use crate::io::{HostFrame, PixelFormat};

type Px = [f32; 4];

/// Fewest output rows per band: enough to amortise the halo.
const MIN_BAND_ROWS: usize = 64;

/// Runs `plan` on `src` and returns a frame of the same size and format.
pub fn process_cpu(src: &HostFrame, plan: &Plan) -> HostFrame {
    // Bands at least four halos tall keep the recomputed halo rows under
    // half of the work even for wide blurs.
    let band_rows = MIN_BAND_ROWS.max(4 * plan.halo() as usize);
    process_cpu_banded(src, plan, band_rows)
}

/// [`process_cpu`] with an explicit band height (tests force small bands).
#[doc(hidden)]
pub fn process_cpu_banded(src: &HostFrame, plan: &Plan, band_rows: usize) -> HostFrame {
    let width = src.width as usize;
    let height = src.height as usize;
    let mut out = HostFrame::new(src.width, src.height, src.format, src.has_alpha);
    let row_bytes = out.row_bytes();
    if plan.passes.is_empty() {
        let rows = plan.pre.rows_f32();
        out.data.par_chunks_mut(row_bytes).enumerate().for_each_init(
            || vec![[0.0f32; 4]; width],
            |px, (y, bytes)| {
                load_row(src, y, &rows, px);
                store_row(px, bytes, src.format);
            },
        );
        return out;
    }
    let band_rows = band_rows.clamp(1, height.max(1));
    let halo = plan.halo() as usize;
    let pre = plan.pre.rows_f32();
    out.data.par_chunks_mut(row_bytes * band_rows).enumerate().for_each_init(
        || (Vec::new(), Vec::new(), Vec::new()),
        |(a, b, pad): &mut (Vec<Px>, Vec<Px>, Vec<Px>), (band, bytes)| {
            let y0 = band * band_rows;
            let y1 = (y0 + band_rows).min(height);
            let (load_start, load_end) = (y0.saturating_sub(halo), (y1 + halo).min(height));
            let rows = load_end - load_start;
            a.resize(rows * width, [0.0; 4]);
            b.resize(rows * width, [0.0; 4]);
            for (r, row) in a.chunks_exact_mut(width).enumerate() {
                load_row(src, load_start + r, &pre, row);
            }
            for (i, pass) in plan.passes.iter().enumerate() {
                for (out_row, row) in b.chunks_exact_mut(width).zip(a.chunks_exact(width)) {
                    blur_h_row(row, out_row, pad, &pass.kernel);
                }
                let post = pass.post.rows_f32();
                if i + 1 == plan.passes.len() {
                    // Only the band's own rows, straight into the output.
                    let acc = &mut a[..width];
                    for (y, out_row) in (y0..y1).zip(bytes.chunks_exact_mut(row_bytes)) {
                        vertical_row(b, width, y - load_start, &pass.kernel, bytemuck::cast_slice_mut(acc));
                        for p in acc.iter_mut() {
                            *p = affine(&post, *p);
                        }
                        store_row(acc, out_row, src.format);
                    }
                } else {
                    for (y, out_row) in a.chunks_exact_mut(width).enumerate() {
                        vertical_row(b, width, y, &pass.kernel, bytemuck::cast_slice_mut(out_row));
                        for p in out_row.iter_mut() {
                            *p = affine(&post, *p);
                        }
                    }
                }
            }
        },
    );
    out
}

#[inline]
fn affine(rows: &[[f32; 4]; 3], p: Px) -> Px {
    let f = |r: &[f32; 4]| r[0] * p[0] + r[1] * p[1] + r[2] * p[2] + r[3];
    [f(&rows[0]), f(&rows[1]), f(&rows[2]), p[3]]
}

/// Row `y` of `src` as 0..1 values through the affine stage.
fn load_row(src: &HostFrame, y: usize, rows: &[[f32; 4]; 3], out: &mut [Px]) {
    let width = src.width as usize;
    match src.format {
        PixelFormat::Rgba8 => {
            let bytes = &src.data[y * width * 4..(y + 1) * width * 4];
            for (px, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                let p = [c[0] as f32 / 255.0, c[1] as f32 / 255.0, c[2] as f32 / 255.0, c[3] as f32 / 255.0];
                *px = affine(rows, p);
            }
        }
        PixelFormat::Rgba16 => {
            let bytes = &src.data[y * width * 8..(y + 1) * width * 8];
            for (px, c) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                let v = |i: usize| u16::from_ne_bytes([c[2 * i], c[2 * i + 1]]) as f32 / 65535.0;
                *px = affine(rows, [v(0), v(1), v(2), v(3)]);
            }
        }
    }
}

/// One row of the horizontal blur: clamp-to-edge once into `pad`, then
/// every tap is in bounds.
fn blur_h_row(row: &[Px], out: &mut [Px], pad: &mut Vec<Px>, k: &BlurKernel) {
    let r = k.radius as usize;
    pad.clear();
    pad.extend(std::iter::repeat_n(row[0], r));
    pad.extend_from_slice(row);
    pad.extend(std::iter::repeat_n(row[row.len() - 1], r));
    for (o, window) in out.iter_mut().zip(pad.windows(2 * r + 1)) {
        let mut acc = [0.0f32; 4];
        for (w, p) in k.weights.iter().zip(window) {
            for c in 0..4 {
                acc[c] += w * p[c];
            }
        }
        *o = acc;
    }
}

/// Sums the vertical taps of row `y` of a band into `acc` (flat f32, taps
/// in order, clamped to the band's rows: its halo makes that exact).
fn vertical_row(src: &[Px], width: usize, y: usize, k: &BlurKernel, acc: &mut [f32]) {
    let r = k.radius as isize;
    let last = (src.len() / width) as isize - 1;
    acc.fill(0.0);
    for (t, w) in k.weights.iter().enumerate() {
        let sy = (y as isize + t as isize - r).clamp(0, last) as usize;
        let row: &[f32] = bytemuck::cast_slice(&src[sy * width..(sy + 1) * width]);
        for (a, p) in acc.iter_mut().zip(row) {
            *a += w * p;
        }
    }
}

/// Clamp to [0, 1], scale, round half up: `floor(v · max + 0.5)`.
#[inline]
fn quantize(v: f32, max: f32) -> u16 {
    (v.clamp(0.0, 1.0) * max + 0.5).floor() as u16
}

fn store_row(px: &[Px], bytes: &mut [u8], format: PixelFormat) {
    match format {
        PixelFormat::Rgba8 => {
            for (p, out) in px.iter().zip(bytes.chunks_exact_mut(4)) {
                for c in 0..4 {
                    out[c] = quantize(p[c], 255.0) as u8;
                }
            }
        }
        PixelFormat::Rgba16 => {
            for (p, out) in px.iter().zip(bytes.chunks_exact_mut(8)) {
                for c in 0..4 {
                    out[2 * c..2 * c + 2].copy_from_slice(&quantize(p[c], 65535.0).to_ne_bytes());
                }
            }
        }
    }
}
