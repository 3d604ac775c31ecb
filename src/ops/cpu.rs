//! The CPU backend: the plan's kernels in f32 on rayon.
//!
//! Arithmetic is written in the same order as the WGSL kernels (load,
//! affine as `m0·r + m1·g + m2·b + offset`, blur taps from -r to +r) so the
//! two backends agree to float rounding; both are checked against the
//! op-by-op f64 definition in the tests.
//!
//! For speed the passes are shaped like the GPU's: a plan without blur is
//! one pass from bytes to bytes; with blurs, the horizontal pass reads a
//! clamped-and-padded copy of each row (no per-tap bounds logic), the
//! vertical pass runs over whole rows as flat `f32` slices (which the
//! compiler vectorises), and the last vertical pass quantises straight into
//! the output bytes.

use rayon::prelude::*;

use super::{Affine, BlurKernel, Plan};
use crate::io::{HostFrame, PixelFormat};

type Px = [f32; 4];

/// Runs `plan` on `src` and returns a frame of the same size and format.
pub fn process_cpu(src: &HostFrame, plan: &Plan) -> HostFrame {
    let width = src.width as usize;
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
    let mut a = load(src, &plan.pre);
    let mut b = vec![[0.0f32; 4]; a.len()];
    for (i, pass) in plan.passes.iter().enumerate() {
        blur_h(&a, &mut b, width, &pass.kernel);
        if i + 1 == plan.passes.len() {
            blur_v_store(&b, &mut out, &pass.kernel, &pass.post);
        } else {
            blur_v(&b, &mut a, width, &pass.kernel, &pass.post);
        }
    }
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

fn load(src: &HostFrame, pre: &Affine) -> Vec<Px> {
    let rows = pre.rows_f32();
    let width = src.width as usize;
    let mut out = vec![[0.0f32; 4]; width * src.height as usize];
    out.par_chunks_mut(width).enumerate().for_each(|(y, row)| load_row(src, y, &rows, row));
    out
}

fn blur_h(src: &[Px], dst: &mut [Px], width: usize, k: &BlurKernel) {
    let r = k.radius as usize;
    dst.par_chunks_mut(width).zip(src.par_chunks(width)).for_each_init(
        || Vec::with_capacity(width + 2 * r),
        |pad: &mut Vec<Px>, (out, row)| {
            // Clamp-to-edge once per row, then every tap is in bounds.
            pad.clear();
            pad.extend(std::iter::repeat_n(row[0], r));
            pad.extend_from_slice(row);
            pad.extend(std::iter::repeat_n(row[width - 1], r));
            for (o, window) in out.iter_mut().zip(pad.windows(2 * r + 1)) {
                let mut acc = [0.0f32; 4];
                for (w, p) in k.weights.iter().zip(window) {
                    for c in 0..4 {
                        acc[c] += w * p[c];
                    }
                }
                *o = acc;
            }
        },
    );
}

/// Sums the vertical taps of output row `y` into `acc` (flat f32, taps in order).
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

fn blur_v(src: &[Px], dst: &mut [Px], width: usize, k: &BlurKernel, post: &Affine) {
    let rows = post.rows_f32();
    dst.par_chunks_mut(width).enumerate().for_each(|(y, out)| {
        vertical_row(src, width, y, k, bytemuck::cast_slice_mut(out));
        for o in out.iter_mut() {
            *o = affine(&rows, *o);
        }
    });
}

/// The last vertical pass: taps, color stage, quantise into the output.
fn blur_v_store(src: &[Px], out: &mut HostFrame, k: &BlurKernel, post: &Affine) {
    let rows = post.rows_f32();
    let width = out.width as usize;
    let (format, row_bytes) = (out.format, out.row_bytes());
    out.data.par_chunks_mut(row_bytes).enumerate().for_each_init(
        || vec![[0.0f32; 4]; width],
        |acc, (y, bytes)| {
            vertical_row(src, width, y, k, bytemuck::cast_slice_mut(acc));
            for a in acc.iter_mut() {
                *a = affine(&rows, *a);
            }
            store_row(acc, bytes, format);
        },
    );
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
