//! Decoding a PNG frame into a destination buffer (what a decoder does
//! with a slot's mapped upload): framepipe's row-by-row path against
//! `image`'s whole-frame decode and conversion followed by a copy, in one
//! run, for RGBA and RGB sources. Throughput counts the RGBA bytes made.
//!
//! `FRAMEPIPE_BENCH_SIZE` (default 4k) sizes it; under `cargo test
//! --benches` it runs once on a tiny frame.

use std::time::Duration;

mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use framepipe::generate::{GenerateOptions, generate_sequence, parse_size};
use framepipe::io::{DecodeLimits, EncodeOptions, decode_with};

fn decode(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let size =
        if full { std::env::var("FRAMEPIPE_BENCH_SIZE").unwrap_or_else(|_| "4k".into()) } else { "64x36".into() };
    let (width, height) = parse_size(&size).expect("FRAMEPIPE_BENCH_SIZE");
    let dir = tempfile::tempdir().expect("temp dir");
    let limits = DecodeLimits::default();
    let mut group = c.benchmark_group(format!("decode/{size}"));
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(common::measuring_time(5.0));
    let rgba_bytes = width as usize * height as usize * 4;
    group.throughput(Throughput::Bytes(rgba_bytes as u64));
    let mut dst = vec![0u8; rgba_bytes];
    for alpha in [true, false] {
        let name = if alpha { "rgba png" } else { "rgb png" };
        let pattern = dir.path().join(format!("{}_%02d.png", if alpha { "a" } else { "o" })).display().to_string();
        let opts = GenerateOptions { width, height, frames: 1, alpha, ..Default::default() };
        generate_sequence(&opts, &pattern, &EncodeOptions::default(), false).expect("generate");
        let path = std::path::PathBuf::from(pattern.replace("%02d", "01"));
        group.bench_function(format!("{name}, framepipe rows"), |b| {
            b.iter(|| {
                decode_with(
                    &path,
                    &limits,
                    |_| Ok(()),
                    |at, px| {
                        dst[at..at + px.len()].copy_from_slice(px);
                        Ok(())
                    },
                )
                .expect("decode")
            })
        });
        group.bench_function(format!("{name}, image whole + copy"), |b| {
            b.iter(|| {
                let image = image::open(&path).expect("decode").into_rgba8();
                dst.copy_from_slice(image.as_raw());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
