//! The CPU backend: the plan's kernels in f32 on rayon.
//!
//! Arithmetic is written in the same order as the WGSL kernels (load,
//! affine as `m0·r + m1·g + m2·b + offset`, blur taps from -r to +r) so the
//! two backends agree to float rounding; both are checked against the
//! op-by-op f64 definition in the tests.

use rayon::prelude::*;

use super::{Affine, BlurKernel, Plan};
use crate::io::{HostFrame, PixelFormat};

type Px = [f32; 4];

/// Runs `plan` on `src` and returns a frame of the same size and format.
pub fn process_cpu(src: &HostFrame, plan: &Plan) -> HostFrame {
    let width = src.width as usize;
    let mut a = load(src, &plan.pre);
    let mut b = vec![[0.0f32; 4]; a.len()];
    for pass in &plan.passes {
        blur_h(&a, &mut b, width, &pass.kernel);
        blur_v(&b, &mut a, width, &pass.kernel, &pass.post);
    }
    store(&a, src)
}

#[inline]
fn affine(rows: &[[f32; 4]; 3], p: Px) -> Px {
    let f = |r: &[f32; 4]| r[0] * p[0] + r[1] * p[1] + r[2] * p[2] + r[3];
    [f(&rows[0]), f(&rows[1]), f(&rows[2]), p[3]]
}

fn load(src: &HostFrame, pre: &Affine) -> Vec<Px> {
    let rows = pre.rows_f32();
    let scale = src.format.max_value();
    let n = src.width as usize * src.height as usize;
    let mut out = vec![[0.0f32; 4]; n];
    out.par_chunks_mut(src.width as usize).enumerate().for_each(|(y, row)| {
        for (x, px) in row.iter_mut().enumerate() {
            let i = (y * src.width as usize + x) * 4;
            let p = [0, 1, 2, 3].map(|c| src.channel(i + c) as f32 / scale);
            *px = affine(&rows, p);
        }
    });
    out
}

fn blur_h(src: &[Px], dst: &mut [Px], width: usize, k: &BlurKernel) {
    let r = k.radius as isize;
    let last = width as isize - 1;
    dst.par_chunks_mut(width).zip(src.par_chunks(width)).for_each(|(out, row)| {
        for (x, o) in out.iter_mut().enumerate() {
            let mut acc = [0.0f32; 4];
            for (t, w) in k.weights.iter().enumerate() {
                let sx = (x as isize + t as isize - r).clamp(0, last) as usize;
                let p = row[sx];
                for c in 0..4 {
                    acc[c] += w * p[c];
                }
            }
            *o = acc;
        }
    });
}

fn blur_v(src: &[Px], dst: &mut [Px], width: usize, k: &BlurKernel, post: &Affine) {
    let rows = post.rows_f32();
    let r = k.radius as isize;
    let last = (src.len() / width) as isize - 1;
    dst.par_chunks_mut(width).enumerate().for_each(|(y, out)| {
        out.fill([0.0; 4]);
        for (t, w) in k.weights.iter().enumerate() {
            let sy = (y as isize + t as isize - r).clamp(0, last) as usize;
            let row = &src[sy * width..(sy + 1) * width];
            for (o, p) in out.iter_mut().zip(row) {
                for c in 0..4 {
                    o[c] += w * p[c];
                }
            }
        }
        for o in out.iter_mut() {
            *o = affine(&rows, *o);
        }
    });
}

/// Clamp to [0, 1], scale, round half up: `floor(v · max + 0.5)`.
#[inline]
pub(crate) fn quantize(v: f32, max: f32) -> u16 {
    (v.clamp(0.0, 1.0) * max + 0.5).floor() as u16
}

fn store(buf: &[Px], like: &HostFrame) -> HostFrame {
    let mut out = HostFrame::new(like.width, like.height, like.format, like.has_alpha);
    let max = like.format.max_value();
    let row_bytes = out.row_bytes();
    let width = like.width as usize;
    out.data.par_chunks_mut(row_bytes).enumerate().for_each(|(y, row)| {
        for x in 0..width {
            let p = buf[y * width + x];
            for c in 0..4 {
                let v = quantize(p[c], max);
                match like.format {
                    PixelFormat::Rgba8 => row[x * 4 + c] = v as u8,
                    PixelFormat::Rgba16 => row[(x * 4 + c) * 2..(x * 4 + c) * 2 + 2].copy_from_slice(&v.to_ne_bytes()),
                }
            }
        }
    });
    out
}
