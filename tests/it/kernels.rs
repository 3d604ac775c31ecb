//! GPU kernels against the CPU backend, and the CPU backend against the
//! op-by-op f64 definition, on fresh random frames.

use framepipe::gpu::GpuOptions;
use framepipe::{Op, OpGraph, PixelFormat, process_cpu};

use crate::util::{Rng, assert_close, gpu, random_frame, reference};

/// Generic coefficients: with two decimals (1.1, -0.07, offset 0.01...)
/// one 8-bit result in a hundred lands exactly on a rounding tie, where f32
/// and the f64 definition may round apart, and a 164-channel frame then
/// has 0.6 % of its channels off by one.
fn matrix() -> Op {
    Op::Matrix {
        matrix: [
            1.103_719_3,
            -0.071_284_6,
            0.021_937_1,
            0.049_163_8,
            0.931_274_9,
            -0.040_611_7,
            -0.118_735_2,
            0.203_348_6,
            1.296_051_4,
        ],
        offset: [0.011_342_7, -0.020_719_3, 0.029_846_1],
    }
}

/// Each op alone, then chains with blurs between color ops and repetition.
fn op_lists() -> Vec<(&'static str, Vec<Op>)> {
    vec![
        ("exposure", vec![Op::Exposure { stops: 0.7 }]),
        ("matrix", vec![matrix()]),
        // Parameters like 1.4 @ 0.45 put a fifth of all 8-bit results exactly
        // on a rounding tie (1.4·c − 45.9), where f32 and f64 round either
        // way; the tolerance is about precision, so use generic values.
        ("contrast", vec![Op::Contrast { contrast: 1.37, pivot: 0.43 }]),
        ("saturation", vec![Op::Saturation { saturation: 1.6 }]),
        ("blur 0", vec![Op::Blur { sigma: 0.0 }]),
        ("blur 0.5", vec![Op::Blur { sigma: 0.5 }]),
        ("blur 1", vec![Op::Blur { sigma: 1.0 }]),
        ("blur 3.7", vec![Op::Blur { sigma: 3.7 }]),
        (
            "canonical chain",
            vec![
                Op::Exposure { stops: -0.3 },
                matrix(),
                Op::Contrast { contrast: 1.2, pivot: 0.5 },
                Op::Saturation { saturation: 0.8 },
                Op::Blur { sigma: 1.0 },
            ],
        ),
        (
            "preset-order chain",
            vec![
                Op::Saturation { saturation: 0.4 },
                Op::Blur { sigma: 0.5 },
                Op::Exposure { stops: 0.5 },
                Op::Blur { sigma: 1.0 },
                Op::Contrast { contrast: 1.3, pivot: 0.4 },
                Op::Exposure { stops: -0.25 },
            ],
        ),
    ]
}

#[test]
fn cpu_matches_definition() {
    let mut rng = Rng::fresh("cpu_matches_definition");
    let shapes = [(1, 1, false), (3, 41, true), (23, 17, false), (16, 9, true)];
    for (name, ops) in op_lists() {
        for &(w, h, alpha) in &shapes {
            for format in [PixelFormat::Rgba8, PixelFormat::Rgba16] {
                let src = random_frame(&mut rng, w, h, format, alpha);
                let plan = OpGraph::new(ops.clone()).unwrap().plan();
                let what = format!("cpu {name} {w}x{h} {format}");
                assert_close(&process_cpu(&src, &plan), &reference(&src, &ops), &what);
            }
        }
    }
}

#[test]
fn cpu_matches_definition_large_sigma() {
    let mut rng = Rng::fresh("cpu_matches_definition_large_sigma");
    // Sigma 16 (radius 48) on a tall, thin frame: every tap clamps somewhere.
    let ops = vec![Op::Blur { sigma: 16.0 }];
    let src = random_frame(&mut rng, 3, 997, PixelFormat::Rgba8, true);
    let plan = OpGraph::new(ops.clone()).unwrap().plan();
    assert_close(&process_cpu(&src, &plan), &reference(&src, &ops), "cpu blur 16 3x997");
}

fn gpu_vs_cpu(options: GpuOptions, cases: &[(u32, u32, PixelFormat, bool, Vec<Op>)], label: &str) {
    let Some(mut backend) = gpu(options) else { return };
    let mut rng = Rng::fresh(label);
    for (w, h, format, alpha, ops) in cases {
        let src = random_frame(&mut rng, *w, *h, *format, *alpha);
        let plan = OpGraph::new(ops.clone()).unwrap().plan();
        let (out, _) = backend.process(&src, &plan).unwrap();
        let what = format!("{label} {w}x{h} {format} {ops:?}");
        assert_close(&out, &process_cpu(&src, &plan), &what);
    }
}

#[test]
fn gpu_matches_cpu_every_op() {
    let mut cases = Vec::new();
    for (_, ops) in op_lists() {
        cases.push((23, 17, PixelFormat::Rgba8, true, ops.clone()));
        cases.push((16, 9, PixelFormat::Rgba16, false, ops));
    }
    gpu_vs_cpu(GpuOptions::default(), &cases, "gpu every op");
}

#[test]
fn gpu_matches_definition_small() {
    let Some(mut backend) = gpu(GpuOptions::default()) else { return };
    let mut rng = Rng::fresh("gpu_matches_definition_small");
    for (_, ops) in op_lists() {
        for &(w, h) in &[(1, 1), (19, 7)] {
            let src = random_frame(&mut rng, w, h, PixelFormat::Rgba8, true);
            let plan = OpGraph::new(ops.clone()).unwrap().plan();
            let (out, _) = backend.process(&src, &plan).unwrap();
            assert_close(&out, &reference(&src, &ops), &format!("gpu vs definition {w}x{h} {ops:?}"));
        }
    }
}

#[test]
fn gpu_matches_cpu_odd_sizes_and_sigmas() {
    let blur = |sigma| vec![Op::Exposure { stops: 0.2 }, Op::Blur { sigma }, Op::Saturation { saturation: 1.2 }];
    let cases = vec![
        (1, 1, PixelFormat::Rgba8, true, blur(3.7)),
        (3, 997, PixelFormat::Rgba8, true, blur(16.0)),
        (641, 479, PixelFormat::Rgba8, false, blur(3.7)),
        (641, 479, PixelFormat::Rgba16, true, blur(1.0)),
        (997, 3, PixelFormat::Rgba16, false, blur(16.0)),
        (200, 120, PixelFormat::Rgba8, true, blur(0.5)),
    ];
    gpu_vs_cpu(GpuOptions::default(), &cases, "gpu odd sizes");
}

#[test]
fn gpu_bands_match_cpu() {
    // A tiny binding limit forces many bands, each with a blur halo.
    let width = 37u32;
    let limit = width as u64 * 16 * 40;
    let options = GpuOptions { max_binding_override: Some(limit), ..Default::default() };
    // (ops, height): a color-only plan bands on packed bytes (4 or 8 per
    // pixel), so it needs a taller frame to be split.
    let chains = vec![
        (vec![Op::Blur { sigma: 3.7 }], 97),
        (vec![Op::Blur { sigma: 1.0 }, Op::Contrast { contrast: 1.5, pivot: 0.5 }, Op::Blur { sigma: 3.7 }], 97),
        (
            vec![
                Op::Exposure { stops: 0.4 },
                Op::Blur { sigma: 0.5 },
                matrix(),
                Op::Blur { sigma: 2.0 },
                Op::Blur { sigma: 1.0 },
            ],
            61,
        ),
        (vec![Op::Exposure { stops: 0.4 }, matrix()], 401),
    ];
    if let Some(mut backend) = gpu(options.clone()) {
        for (ops, height) in &chains {
            let plan = OpGraph::new(ops.clone()).unwrap().plan();
            for format in [PixelFormat::Rgba8, PixelFormat::Rgba16] {
                let banding = backend.banding(width, *height, format, &plan).unwrap();
                assert!(banding.band_rows < *height, "{ops:?} must be banded: {banding:?}");
            }
        }
        // Kernel time is summed band by band; a frame of more bands than
        // are timed one by one (16) is still timed.
        let plan = OpGraph::new(vec![Op::Blur { sigma: 3.7 }]).unwrap().plan();
        let banding = backend.banding(width, 401, PixelFormat::Rgba8, &plan).unwrap();
        assert!(401u32.div_ceil(banding.band_rows) > 16, "{banding:?}");
        let src = random_frame(&mut Rng::fresh("timed_bands"), width, 401, PixelFormat::Rgba8, true);
        let (_, ns) = backend.process(&src, &plan).unwrap();
        if backend.adapter().timestamps {
            assert!(ns.is_some_and(|n| n > 0), "{ns:?}");
        }
    }
    let mut cases = Vec::new();
    for (ops, height) in chains {
        cases.push((width, height, PixelFormat::Rgba8, true, ops.clone()));
        cases.push((width, height, PixelFormat::Rgba16, true, ops));
    }
    gpu_vs_cpu(options, &cases, "gpu banded");
}

/// The GPU against the definition itself where the chained checks (GPU ≈
/// CPU ≈ definition) would allow twice the tolerance: 16-bit at sigma 16,
/// and bands: cut to a small target, and grown past it (to the adapter's
/// limit) where a wide blur's halo would leave bands of a few rows.
#[test]
fn gpu_matches_definition_16_bit_wide_blurs_and_bands() {
    let mut rng = Rng::fresh("gpu_definition_bands");
    let width = 37u32;
    let small = width as u64 * 16 * 40;
    let chain = |sigma| vec![Op::Exposure { stops: 0.3 }, Op::Blur { sigma }, Op::Saturation { saturation: 1.3 }];
    let runs = [
        (GpuOptions::default(), 64, 48, chain(16.0), false),
        (GpuOptions { max_binding_override: Some(small), ..Default::default() }, width, 97, chain(3.7), false),
        (GpuOptions { band_target_override: Some(small), ..Default::default() }, width, 301, chain(8.0), true),
    ];
    for (options, w, h, ops, grown) in runs {
        let Some(mut backend) = gpu(options) else { return };
        let plan = OpGraph::new(ops.clone()).unwrap().plan();
        for format in [PixelFormat::Rgba8, PixelFormat::Rgba16] {
            let banding = backend.banding(w, h, format, &plan).unwrap();
            if grown {
                // At the target a band would be 40 rows (8-bit) beside a halo
                // of 24 each side; grown, bands are twice their halo.
                assert!(banding.band_rows >= 2 * banding.halo && banding.band_rows < h, "{banding:?}");
            }
            let src = random_frame(&mut rng, w, h, format, true);
            let (out, _) = backend.process(&src, &plan).unwrap();
            let what = format!("gpu vs definition {w}x{h} {format} {ops:?} {banding:?}");
            assert_close(&out, &reference(&src, &ops), &what);
        }
    }
}

#[test]
fn band_too_small_for_halo_is_a_clear_error() {
    let options = GpuOptions { max_binding_override: Some(8 * 16 * 10), ..Default::default() };
    let Some(mut backend) = gpu(options) else { return };
    let plan = OpGraph::new(vec![Op::Blur { sigma: 16.0 }]).unwrap().plan();
    let src = random_frame(&mut Rng::fresh("band_too_small"), 8, 200, PixelFormat::Rgba8, false);
    let err = backend.process(&src, &plan).unwrap_err().to_string();
    assert!(err.contains("blur radius"), "{err}");
}

#[test]
fn cpu_bands_equal_one_band() {
    // Small bands with halos must give the very bytes of one whole-frame band.
    let mut rng = Rng::fresh("cpu_bands_equal_one_band");
    // Only plans that blur are banded (colour ops alone ignore bands).
    let blurs =
        op_lists().into_iter().filter(|(_, ops)| ops.iter().any(|op| matches!(op, Op::Blur { sigma } if *sigma > 0.0)));
    let mut checked = 0;
    for (_, ops) in blurs {
        checked += 1;
        for format in [PixelFormat::Rgba8, PixelFormat::Rgba16] {
            let src = random_frame(&mut rng, 29, 83, format, true);
            let plan = OpGraph::new(ops.clone()).unwrap().plan();
            let whole = framepipe::ops::process_cpu_banded(&src, &plan, usize::MAX / 2);
            for band_rows in [1, 7, 16] {
                let banded = framepipe::ops::process_cpu_banded(&src, &plan, band_rows);
                assert!(banded == whole, "{ops:?} {format} bands of {band_rows}");
            }
        }
    }
    assert!(checked >= 4, "{checked} plans with a blur");
}

/// A strong gain before a blur (a contrast of 1000 around the pivot) must
/// not magnify the blur's rounding: 16-bit output within 2 steps of the
/// definition, at sigma 3.7, 8 and 16.
#[test]
fn gpu_matches_definition_16_bit_with_strong_gains_before_a_blur() {
    let Some(mut backend) = gpu(GpuOptions::default()) else { return };
    let mut rng = Rng::fresh("strong_gains");
    for (contrast, sigma) in [(300.0, 8.0), (1000.0, 8.0), (1000.0, 16.0), (800.0, 3.7)] {
        let ops = vec![Op::Contrast { contrast, pivot: 0.5 }, Op::Blur { sigma }, Op::Saturation { saturation: 0.9 }];
        let src = random_frame(&mut rng, 96, 64, PixelFormat::Rgba16, true);
        let (out, _) = backend.process(&src, &OpGraph::new(ops.clone()).unwrap().plan()).unwrap();
        assert_close(&out, &reference(&src, &ops), &format!("gpu vs definition 96x64 RGBA16 {ops:?}"));
    }
}

/// The mirror case: a strong gain after the blur (3 to 5 steps off when
/// it was applied to the sum). Both backends move it ahead of the blur (it
/// commutes with one), where it does not magnify the sum's rounding. At a
/// gain of 1000 f32 itself is the limit: the fused coefficients round by
/// about 2 steps' worth, and one run in a hundred lands 3 steps off.
#[test]
fn both_backends_match_the_definition_16_bit_with_strong_gains_after_a_blur() {
    let mut rng = Rng::fresh("strong_gains_after");
    let mut backend = gpu(GpuOptions::default());
    for (contrast, sigma) in [(300.0, 4.0), (300.0, 8.0), (300.0, 16.0), (200.0, 12.0)] {
        let ops = vec![
            Op::Exposure { stops: 0.2 },
            Op::Blur { sigma: 1.5 },
            Op::Saturation { saturation: 1.1 },
            Op::Blur { sigma },
            Op::Contrast { contrast, pivot: 0.5 },
        ];
        both_match_definition(backend.as_mut(), &random_frame(&mut rng, 80, 56, PixelFormat::Rgba16, true), &ops);
    }
}

/// The CPU backend and, where there is one, the GPU against the op-by-op
/// definition.
fn both_match_definition(gpu: Option<&mut framepipe::gpu::GpuBackend>, src: &framepipe::HostFrame, ops: &[Op]) {
    let plan = OpGraph::new(ops.to_vec()).unwrap().plan();
    let want = reference(src, ops);
    let what = format!("{} {ops:?}", src.describe());
    assert_close(&process_cpu(src, &plan), &want, &format!("cpu vs definition {what}"));
    if let Some(b) = gpu {
        let (out, _) = b.process(src, &plan).unwrap();
        assert_close(&out, &want, &format!("gpu vs definition {what}"));
    }
}

/// A strong stage before a blur that a later stage undoes (green scaled
/// by 1e5 and taken back): the blur must not sum the huge values, whose
/// f32 rounding the cancellation would leave behind (hundreds of 16-bit
/// steps). Both backends apply the whole grade ahead of the blur.
#[test]
fn both_backends_match_the_definition_when_a_later_stage_undoes_a_strong_one() {
    let mut rng = Rng::fresh("undone_gain");
    let mut backend = gpu(GpuOptions::default());
    for (k, sigma) in [(1e5, 3.7), (1e3, 1.0), (1e3, 8.0)] {
        let ops = vec![
            Op::Matrix { matrix: [1.0, k, 0.0, 0.0, k, 0.0, 0.0, 0.0, 1.0], offset: [0.0; 3] },
            Op::Blur { sigma },
            Op::Matrix { matrix: [1.0, -1.0, 0.0, 0.0, 1.0 / k, 0.0, 0.0, 0.0, 1.0], offset: [0.0; 3] },
            Op::Saturation { saturation: 1.2 },
        ];
        both_match_definition(backend.as_mut(), &random_frame(&mut rng, 67, 23, PixelFormat::Rgba16, true), &ops);
    }
}

/// The bandwidth reference the kernel bench reads the others against runs,
/// is timed the way the frame kernels are, and gives its memory back.
#[test]
fn the_streaming_reference_is_timed_and_gives_its_memory_back() {
    let Some(backend) = gpu(GpuOptions::default()) else { return };
    let copy = backend.stream_copy((3 << 20) + 5, 1).unwrap();
    assert!(copy.ns > 0);
    assert_eq!(copy.bytes, 3 << 20, "rounded down to 16 bytes");
    assert_eq!(copy.timed, backend.adapter().timestamps);
    assert_eq!(backend.ledger().current(), 0, "both buffers released");
    // Passes in a row are timed together.
    let four = backend.stream_copy(3 << 20, 4).unwrap();
    assert_eq!(four.bytes, 3 << 20);
    assert!(four.ns > 0 && four.timed == copy.timed, "four passes timed like one");
    assert!(backend.stream_copy(8, 1).is_err(), "less than one 16-byte copy");
    assert!(backend.stream_copy(64, 0).is_err(), "no pass");
}

/// A frame of no pixels, which a library caller can build by hand, is an
/// error naming its size on the GPU (the CPU backend's documented panic
/// says the same), never a division by zero deep in the banding.
#[test]
fn a_frame_of_no_pixels_is_refused_by_size() {
    let plan = OpGraph::new(vec![Op::Exposure { stops: 0.5 }, Op::Blur { sigma: 2.0 }]).unwrap().plan();
    for (w, h) in [(0, 10), (10, 0)] {
        let empty = framepipe::HostFrame::new(w, h, PixelFormat::Rgba8, true);
        let panic = std::panic::catch_unwind(|| process_cpu(&empty, &plan)).unwrap_err();
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(message.contains(&format!("invalid frame size {w}x{h} RGBA8")), "{message}");
        if let Some(mut g) = gpu(GpuOptions::default()) {
            let err = g.process(&empty, &plan).unwrap_err().to_string();
            assert!(err.contains(&format!("invalid frame size {w}x{h} RGBA8")), "{err}");
        }
    }
}
