//! Shared test helpers: fresh random frames, the independent f64
//! definition of every op, tolerance checks, and GPU availability.

use std::time::{SystemTime, UNIX_EPOCH};

use framepipe::gpu::{GpuBackend, GpuOptions};
use framepipe::{HostFrame, Op, PixelFormat};

/// xorshift64*: small, seedable, good enough for test pixels.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from the clock (fresh inputs every run); the seed
    /// is printed so a failure can be replayed with FRAMEPIPE_TEST_SEED.
    pub fn fresh(label: &str) -> Self {
        let seed = std::env::var("FRAMEPIPE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 | 1);
        eprintln!("{label}: seed {seed}");
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A random frame; never all zero.
pub fn random_frame(rng: &mut Rng, width: u32, height: u32, format: PixelFormat, alpha: bool) -> HostFrame {
    let mut f = HostFrame::new(width, height, format, alpha);
    let max = format.max_value() as u64;
    for i in 0..f.channel_count() {
        let v = if i % 4 == 3 && !alpha { max } else { rng.next() % (max + 1) };
        f.set_channel(i, v as u16);
    }
    f.set_channel(0, 1);
    f
}

/// The definitions from the issue, op by op, in f64, with a direct 2-D
/// Gaussian sum: independent of the plan, the fusion and the separable code.
pub fn reference(src: &HostFrame, ops: &[Op]) -> HostFrame {
    let (w, h) = (src.width as usize, src.height as usize);
    let max = src.format.max_value() as f64;
    let mut px: Vec<[f64; 4]> = (0..w * h).map(|p| [0, 1, 2, 3].map(|c| src.channel(p * 4 + c) as f64 / max)).collect();
    for op in ops {
        match *op {
            Op::Exposure { stops } => px.iter_mut().for_each(|p| (0..3).for_each(|c| p[c] *= 2f64.powf(stops))),
            Op::Matrix { matrix: m, offset } => px.iter_mut().for_each(|p| {
                let [r, g, b, a] = *p;
                *p = [
                    m[0] * r + m[1] * g + m[2] * b + offset[0],
                    m[3] * r + m[4] * g + m[5] * b + offset[1],
                    m[6] * r + m[7] * g + m[8] * b + offset[2],
                    a,
                ];
            }),
            Op::Contrast { contrast, pivot } => {
                px.iter_mut().for_each(|p| (0..3).for_each(|c| p[c] = (p[c] - pivot) * contrast + pivot))
            }
            Op::Saturation { saturation } => px.iter_mut().for_each(|p| {
                let luma = 0.2126 * p[0] + 0.7152 * p[1] + 0.0722 * p[2];
                (0..3).for_each(|c| p[c] = luma + saturation * (p[c] - luma));
            }),
            Op::Blur { sigma } if sigma > 0.0 => {
                let r = (3.0 * sigma).ceil() as i64;
                let raw: Vec<f64> = (-r..=r).map(|x| (-(x * x) as f64 / (2.0 * sigma * sigma)).exp()).collect();
                let sum: f64 = raw.iter().sum();
                let wt: Vec<f64> = raw.iter().map(|v| v / sum).collect();
                let old = px.clone();
                for y in 0..h as i64 {
                    for x in 0..w as i64 {
                        let mut acc = [0.0; 4];
                        for j in -r..=r {
                            let sy = (y + j).clamp(0, h as i64 - 1) as usize;
                            for i in -r..=r {
                                let sx = (x + i).clamp(0, w as i64 - 1) as usize;
                                let k = wt[(i + r) as usize] * wt[(j + r) as usize];
                                let s = old[sy * w + sx];
                                (0..4).for_each(|c| acc[c] += k * s[c]);
                            }
                        }
                        px[y as usize * w + x as usize] = acc;
                    }
                }
            }
            Op::Blur { .. } => {}
            ref other => panic!("no reference for {other:?}: write one with the op"),
        }
    }
    let mut out = HostFrame::new(src.width, src.height, src.format, src.has_alpha);
    for (p, v) in px.iter().enumerate() {
        for (c, x) in v.iter().enumerate() {
            out.set_channel(p * 4 + c, (x.clamp(0.0, 1.0) * max + 0.5).floor() as u16);
        }
    }
    out
}

/// Asserts the tolerance: 8-bit ≤ 1 step with < 0.5 % of channels
/// off by one; 16-bit ≤ 2 steps.
pub fn assert_close(actual: &HostFrame, expected: &HostFrame, what: &str) {
    assert_eq!((actual.width, actual.height, actual.format), (expected.width, expected.height, expected.format));
    let n = actual.channel_count();
    let mut max_diff = 0;
    let mut off = 0usize;
    let mut worst = 0;
    for i in 0..n {
        let d = (actual.channel(i) as i32 - expected.channel(i) as i32).abs();
        if d > 0 {
            off += 1;
        }
        if d > max_diff {
            max_diff = d;
            worst = i;
        }
    }
    let (limit, frac) = match actual.format {
        PixelFormat::Rgba8 => (1, 0.005),
        // (No limit on how many channels may be off, each by 2 at most.)
        PixelFormat::Rgba16 => (2, f64::INFINITY),
        other => panic!("no tolerance for {other}"),
    };
    let fraction = off as f64 / n as f64;
    if max_diff > limit || fraction >= frac {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/failures");
        std::fs::create_dir_all(&dir).ok();
        let name: String = what.chars().map(|c| if c.is_alphanumeric() { c } else { '_' }).collect();
        let _ = image::RgbaImage::from_raw(actual.width, actual.height, to8(actual))
            .map(|i| i.save(dir.join(format!("{name}.png"))));
        panic!(
            "{what}: max diff {max_diff} at channel {worst} (pixel {}, got {} want {}), {:.3} % of channels differ; actual written to tests/failures/",
            worst / 4,
            actual.channel(worst),
            expected.channel(worst),
            100.0 * fraction
        );
    }
}

fn to8(f: &HostFrame) -> Vec<u8> {
    (0..f.channel_count())
        .map(|i| if f.format == PixelFormat::Rgba8 { f.channel(i) as u8 } else { (f.channel(i) >> 8) as u8 })
        .collect()
}

/// A GPU backend on any adapter (software included). In CI (`CI=true`) a
/// missing adapter fails the test; elsewhere it prints a notice and skips.
/// The backends to run a test on: the CPU, and the GPU where an adapter
/// opens.
pub fn backends() -> Vec<framepipe::BackendKind> {
    let mut v = vec![framepipe::BackendKind::Cpu];
    if gpu(GpuOptions::default()).is_some() {
        v.push(framepipe::BackendKind::Gpu);
    }
    v
}

pub fn gpu(options: GpuOptions) -> Option<GpuBackend> {
    match GpuBackend::new(&options, framepipe::ledger::Ledger::unlimited()) {
        Ok(g) => Some(g),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but no GPU adapter: {e} (install mesa-vulkan-drivers and libvulkan1)")
        }
        Err(e) => {
            eprintln!("notice: skipping GPU checks: {e}");
            None
        }
    }
}

/// Reads the rest of `stderr` on a thread of its own while waiting for
/// `child` to exit ([`wait_exit`]: a child that hangs, holding its stderr
/// open, fails the test rather than stalling it). Returns the exit status
/// and the text.
pub fn finish<R: std::io::Read + Send + 'static>(
    child: &mut std::process::Child,
    mut stderr: R,
    limit: std::time::Duration,
    what: &str,
) -> (std::process::ExitStatus, String) {
    let reader = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        rest
    });
    let status = wait_exit(child, limit, what);
    (status, reader.join().unwrap())
}

/// Waits for `child` to exit, failing the test after `limit` (a hang is a bug).
pub fn wait_exit(child: &mut std::process::Child, limit: std::time::Duration, what: &str) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if std::time::Instant::now() >= deadline {
            // Not left running on through the other tests.
            let _ = child.kill();
            let _ = child.wait();
            panic!("no exit {what}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
