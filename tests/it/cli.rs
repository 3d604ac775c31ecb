//! The `framepipe` binary end to end, on small generated sequences.

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use framepipe::generate::{GenerateOptions, generate_sequence};
use framepipe::io::{DecodeLimits, EncodeOptions, decode_file};
use framepipe::{HostFrame, Op, OpGraph, PixelFormat, process_cpu};
use predicates::prelude::*;
use predicates::str::contains;

fn framepipe() -> Command {
    let mut cmd = Command::cargo_bin("framepipe").unwrap();
    // The environment's backend choice is not the test's: each names its
    // backend where it matters (auto picks the software adapter in CI).
    cmd.env_remove("WGPU_BACKEND");
    // A run that hangs fails its test (killed) rather than stalling CI.
    cmd.timeout(std::time::Duration::from_secs(300));
    cmd
}

/// Writes `frames` small frames numbered from `start` into `dir` as `pattern`.
fn sequence(dir: &Path, pattern: &str, start: u64, frames: u32, format: PixelFormat) -> String {
    // Fresh content each run (the seed is printed if a test fails on it).
    let seed = crate::util::Rng::fresh(pattern).next();
    let opts = GenerateOptions { width: 24, height: 16, frames, start, format, alpha: true, seed };
    let p = dir.join(pattern).display().to_string();
    generate_sequence(&opts, &p, &EncodeOptions::default(), false).unwrap();
    p
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => vec![],
    };
    v.sort();
    v
}

fn decode(path: &Path) -> HostFrame {
    decode_file(path, &DecodeLimits::default()).unwrap()
}

#[test]
fn printf_pattern_keeps_frame_numbers() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), "plate_%04d.png", 1001, 3, PixelFormat::Rgba8);
    let out = t.path().join("graded/shot_%04d.png");
    framepipe()
        .args(["process", &input, "-o", out.to_str().unwrap(), "--exposure", "0.5", "--blur", "1", "--backend", "cpu"])
        .assert()
        .success()
        .stderr(contains("3 frames").and(contains("frames/s")).and(contains("cpu")))
        // The summary names the bottleneck and the efficiency.
        .stderr(contains("Bottleneck: ").and(contains("pipeline efficiency")));
    assert_eq!(files(&t.path().join("graded")), ["shot_1001.png", "shot_1002.png", "shot_1003.png"]);
    // One frame at a time, no stage holds another back: no bottleneck.
    framepipe()
        .args(["process", &input, "-o", out.to_str().unwrap(), "--blur", "1", "--backend", "cpu", "--sequential"])
        .arg("--overwrite")
        .assert()
        .success()
        .stderr(contains("One frame at a time: host frames, no VRAM").and(contains("Bottleneck").not()));
    // Auto without a hardware GPU says in one line why it runs on the CPU.
    let out = t.path().join("auto/shot_%04d.png");
    let assert = framepipe().args(["process", &input, "-o", out.to_str().unwrap(), "--blur", "1"]).assert().success();
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    if stderr.contains("on the cpu backend") {
        let notice = stderr
            .lines()
            .find(|l| l.starts_with("notice: using the CPU backend: "))
            .unwrap_or_else(|| panic!("{stderr}"));
        assert!(notice.len() > "notice: using the CPU backend: ".len(), "{notice}");
    }
}

/// A negative value in any float form is the option's value, not a flag:
/// `-1e-3` and `-.5` as well as `-0.5`.
#[test]
fn negative_values_in_every_float_form() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), "p_%02d.png", 1, 1, PixelFormat::Rgba8);
    let out = t.path().join("o/o_%02d.png").display().to_string();
    let grade = ["--exposure", "-1e-3", "--contrast", "-.5", "--pivot", "-0.1", "--saturation", "-0.5"];
    framepipe().args(["process", &input, "-o", &out, "--backend", "cpu", "-q"]).args(grade).assert().success();
    let want = OpGraph::new(vec![
        Op::Exposure { stops: -1e-3 },
        Op::Contrast { contrast: -0.5, pivot: -0.1 },
        Op::Saturation { saturation: -0.5 },
    ])
    .unwrap();
    let src = decode(&t.path().join("p_01.png"));
    crate::util::assert_close(&decode(&t.path().join("o/o_01.png")), &process_cpu(&src, &want.plan()), "o_01");
    // A negative sigma is read as one, and refused as one.
    framepipe()
        .args(["process", &input, "-o", &out, "--overwrite", "--blur", "-1e-3"])
        .assert()
        .code(2)
        .stderr(contains("sigma -0.001"));
    // An option whose value was left out is named, whatever follows it.
    for next in [["--overwrite", "-q"], ["--exposure", "2"]] {
        framepipe()
            .args(["process", &input, "-o", &out, "--blur"])
            .args(next)
            .assert()
            .code(2)
            .stderr(contains("a value is required for '--blur"));
    }
    framepipe()
        .args(["process", &input, "-o", &out, "--matrix", "--overwrite"])
        .assert()
        .code(2)
        .stderr(contains("a value is required for '--matrix"));
    // Lists start with their first number; flags take no value; a file is
    // named -5 only when said so (--json=-5); help is help.
    let flip = ["--matrix", "-1,0,0,0,1,0,0,0,1", "--offset", "-0.5,0,0"];
    framepipe().args(["process", &input, "-o", &out, "--overwrite", "-q"]).args(flip).assert().success();
    framepipe().args(["process", &input, "-o", &out, "--overwrite", "--json", "-5"]).assert().code(2);
    assert!(!Path::new("-5").exists());
    framepipe().args(["process", "--help", "-5"]).assert().success().stdout(contains("--exposure"));
    // A negative whole number is a value too, refused by its range.
    framepipe()
        .args(["process", &input, "-o", &out, "--jpeg-quality", "-5"])
        .assert()
        .code(2)
        .stderr(contains("invalid value '-5' for '--jpeg-quality"));
    // So is a negative size, named by its parser.
    framepipe()
        .args(["process", &input, "-o", &out, "--vram-budget", "-1GiB"])
        .assert()
        .code(2)
        .stderr(contains("-1GiB"))
        .stderr(contains("unexpected argument").not());
}

/// A temporary folder whose name is not UTF-8 cannot hold the demo's
/// frame patterns: refused up front, nothing made in a look-alike folder.
#[cfg(unix)]
#[test]
fn demo_refuses_a_temporary_folder_named_in_no_text() {
    use std::os::unix::ffi::OsStrExt;
    let t = tempfile::tempdir().unwrap();
    let odd = t.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    fs::create_dir(&odd).unwrap();
    framepipe()
        .env("TMPDIR", &odd)
        .args(["demo", "--size", "64x36", "--frames", "2", "--backend", "cpu"])
        .assert()
        .code(2)
        .stderr(contains("invalid TMPDIR").and(contains("valid UTF-8")));
    assert_eq!(files(t.path()).len(), 1, "only the folder made here: {:?}", files(t.path()));
    assert!(files(&odd).is_empty());
}

/// The README's first command, on a tiny frame size: generates, grades,
/// says where everything is, and leaves it there.
#[test]
fn demo_runs_without_a_gpu() {
    let t = tempfile::tempdir().unwrap();
    let assert = framepipe()
        .env("TMPDIR", t.path())
        .args(["demo", "--size", "64x36", "--frames", "2", "--backend", "cpu"])
        .assert()
        .success()
        .stderr(contains("2 frames (64x36 RGB 8-bit) written").and(contains("Bottleneck: ")));
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    let shown = |label: &str| {
        let line = stderr.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("no {label} {stderr}"));
        PathBuf::from(line[label.len()..].trim())
    };
    let graded = shown("graded:").parent().unwrap().to_owned();
    assert!(graded.starts_with(t.path()), "{graded:?}");
    assert_eq!(files(&graded), ["shot_1001.png", "shot_1002.png"]);
    assert_eq!(files(shown("sources:").parent().unwrap()), ["shot_1001.png", "shot_1002.png"]);
    assert!(shown("report:").is_file() && shown("timeline:").is_file());
    let (a, b) = (decode(&graded.join("shot_1001.png")), decode(&graded.join("shot_1002.png")));
    assert_eq!((a.width, a.height), (64, 36));
    assert_ne!(a, b);
    // The folder is left to the user, who is told its size and how to go.
    let dir = graded.parent().unwrap().display().to_string();
    assert!(stderr.contains(&format!("KiB); remove it with: rm -rf {dir}\n")), "{stderr}");
    framepipe().args(["demo", "--size", "0x36"]).assert().code(2).stderr(contains("invalid size"));
    // An empty TMPDIR is no TMPDIR: /tmp, not the working folder.
    #[cfg(unix)]
    {
        let cwd = tempfile::tempdir().unwrap();
        let assert = framepipe()
            .env("TMPDIR", "")
            .current_dir(cwd.path())
            .args(["demo", "--size", "16x8", "--frames", "1", "--backend", "cpu"])
            .assert()
            .success();
        let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
        let dir = stderr.lines().find_map(|l| l.split("remove it with: rm -rf ").nth(1)).expect("the folder named");
        assert!(dir.starts_with("/tmp/framepipe-demo-"), "{stderr}");
        fs::remove_dir_all(dir).unwrap();
        assert!(files(cwd.path()).is_empty(), "nothing in the working folder");
    }
    // A temporary folder the system keeps for itself is named, with where
    // it came from.
    framepipe()
        .env("TMPDIR", "/proc")
        .args(["demo", "--size", "64x36", "--frames", "1"])
        .assert()
        .code(2)
        .stderr(contains("/proc: output folder is not writable: it is a system folder").and(contains("from TMPDIR")));
}

/// Every preset in samples/ parses, and grades a frame the same on the
/// command line as in the library.
#[test]
fn sample_presets_parse_and_run() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), "s_%02d.png", 1, 1, PixelFormat::Rgba8);
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let mut presets: Vec<_> = fs::read_dir(&samples).unwrap().flatten().map(|e| e.path()).collect();
    presets.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    assert!(presets.len() >= 2, "{presets:?}");
    for preset in presets {
        let graph = framepipe::ops::parse_preset(&fs::read_to_string(&preset).unwrap(), &preset).unwrap();
        let name = preset.file_stem().unwrap().to_string_lossy().to_string();
        let out = t.path().join(format!("{name}_%02d.png")).display().to_string();
        framepipe()
            .args(["process", &input, "-o", &out, "--preset", preset.to_str().unwrap(), "--backend", "cpu", "-q"])
            .assert()
            .success();
        let expected = framepipe::process_cpu(&decode(&t.path().join("s_01.png")), &graph.plan());
        assert_eq!(decode(&t.path().join(format!("{name}_01.png"))), expected, "{name}");
        // A preset from a pipe (a shell's process substitution) reads the same.
        let piped = t.path().join(format!("{name}_piped_%02d.png")).display().to_string();
        let bin = assert_cmd::cargo::cargo_bin("framepipe");
        let line = format!(
            "'{}' process '{input}' -o '{piped}' --backend cpu -q --preset <(cat '{}')",
            bin.display(),
            preset.display()
        );
        let status = std::process::Command::new("bash").arg("-c").arg(&line).status().unwrap();
        assert!(status.success(), "{line}");
        assert_eq!(decode(&t.path().join(format!("{name}_piped_01.png"))), expected, "{name} from a pipe");
        // And from standard input, named `-`.
        let stdin = t.path().join(format!("{name}_stdin_%02d.png")).display().to_string();
        framepipe()
            .args(["process", &input, "-o", &stdin, "--preset", "-", "--backend", "cpu", "-q"])
            .write_stdin(fs::read(&preset).unwrap())
            .assert()
            .success();
        assert_eq!(decode(&t.path().join(format!("{name}_stdin_01.png"))), expected, "{name} from stdin");
    }
    // An offset alone lifts, as --offset without --matrix does.
    let out = t.path().join("lift_%02d.png").display().to_string();
    framepipe()
        .args(["process", &input, "-o", &out, "--preset", "-", "--backend", "cpu", "--json", "-", "-q"])
        .write_stdin("[[op]]\ntype = \"matrix\"\noffset = [0.1, 0, 0]\n")
        .assert()
        .success()
        .stdout(contains(r#""ops": "offset 0.1,0,0""#));
    let lift = OpGraph::new(vec![Op::Matrix {
        matrix: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        offset: [0.1, 0.0, 0.0],
    }]);
    let expected = framepipe::process_cpu(&decode(&t.path().join("s_01.png")), &lift.unwrap().plan());
    assert_eq!(decode(&t.path().join("lift_01.png")), expected);
}

#[test]
fn hash_pattern_directory_and_frame_specs() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    sequence(&src, "shot.####.png", 1, 20, PixelFormat::Rgba8);
    let hash = src.join("shot.####.png").display().to_string();
    let out = t.path().join("a/o.####.png").display().to_string();
    framepipe().args(["process", &hash, "-o", &out, "--frames", "1-3,5,7-20x5", "-q"]).assert().success();
    assert_eq!(
        files(&t.path().join("a")),
        ["o.0001.png", "o.0002.png", "o.0003.png", "o.0005.png", "o.0007.png", "o.0012.png", "o.0017.png"]
    );
    // A directory is a sequence too.
    let out = t.path().join("b/o_%02d.qoi").display().to_string();
    framepipe().args(["process", src.to_str().unwrap(), "-o", &out, "--saturation", "0.5", "-q"]).assert().success();
    assert_eq!(files(&t.path().join("b")).len(), 20);
    assert!(t.path().join("b/o_01.qoi").exists() && t.path().join("b/o_20.qoi").exists());
    // A folder whose name looks like a pattern is still a folder.
    let take = t.path().join("take#2");
    fs::rename(&src, &take).unwrap();
    let out = t.path().join("c/o_%02d.png").display().to_string();
    framepipe().args(["process", take.to_str().unwrap(), "-o", &out, "--frames", "4-6", "-q"]).assert().success();
    assert_eq!(files(&t.path().join("c")), ["o_04.png", "o_05.png", "o_06.png"]);
}

/// Graded frames written into the folder given as the input: the run
/// resumes (the folder's sources are the sequence, its own outputs left
/// out). Where a file would be replaced, which sequence is the sources is
/// not guessed: a pattern says it.
#[test]
fn a_folder_input_that_holds_the_runs_own_outputs() {
    let t = tempfile::tempdir().unwrap();
    let sources = sequence(t.path(), "s_%04d.png", 1001, 6, PixelFormat::Rgba8);
    let dir = t.path().display().to_string();
    let out = t.path().join("g_%04d.png").display().to_string();
    framepipe().args(["process", &dir, "-o", &out, "--frames", "1001-1003", "-q"]).assert().success();
    framepipe().args(["process", &dir, "-o", &out, "--skip-existing", "-q"]).assert().success();
    assert_eq!(files(t.path()).len(), 12);
    let made: Vec<Vec<u8>> = files(t.path()).iter().map(|f| fs::read(t.path().join(f)).unwrap()).collect();
    // Either way round, a run that would replace files needs a pattern:
    // read as sources, the graded frames would be written over the real ones.
    let over = t.path().join("s_%04d.png").display().to_string();
    for o in [&out, &over] {
        framepipe()
            .args(["process", &dir, "-o", o, "--overwrite", "--exposure", "1"])
            .assert()
            .code(2)
            .stderr(predicates::str::contains("holds several sequences"));
    }
    let after: Vec<Vec<u8>> = files(t.path()).iter().map(|f| fs::read(t.path().join(f)).unwrap()).collect();
    assert_eq!(made, after, "nothing was replaced");
    framepipe().args(["process", &sources, "-o", &out, "--overwrite", "-q"]).assert().success();
    // Frames under the output's name that no source has: not this run's.
    fs::copy(t.path().join("g_1001.png"), t.path().join("g_2000.png")).unwrap();
    framepipe()
        .args(["process", &dir, "-o", &out, "--skip-existing"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("holds several sequences"));
    fs::remove_file(t.path().join("g_2000.png")).unwrap();
    // A third sequence is not the run's: which to read is the user's call.
    sequence(t.path(), "x_%04d.png", 1, 2, PixelFormat::Rgba8);
    framepipe()
        .args(["process", &dir, "-o", &out, "--skip-existing"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("holds several sequences"));
    // Under the sources' own name in another padding, the same.
    let padded = tempfile::tempdir().unwrap();
    sequence(padded.path(), "s_%04d.png", 1001, 4, PixelFormat::Rgba8);
    let dir = padded.path().display().to_string();
    let out = padded.path().join("s_%05d.png").display().to_string();
    framepipe().args(["process", &dir, "-o", &out, "--frames", "1001-1002", "-q"]).assert().success();
    framepipe()
        .args(["process", &dir, "-o", &out, "--skip-existing"])
        .assert()
        .success()
        .stderr(predicates::str::contains("2 frames already there, left as they were: 1001-1002."));
    assert_eq!(files(padded.path()).len(), 8);
    // One of them with no source is not this run's: two frames of a number.
    fs::copy(padded.path().join("s_01001.png"), padded.path().join("s_01005.png")).unwrap();
    framepipe()
        .args(["process", &dir, "-o", &out, "--skip-existing"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("s_01001.png and ").and(predicates::str::contains("are both frame 1001")));
}

#[test]
fn missing_frames_are_listed_or_skipped() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), "s_%04d.png", 1, 10, PixelFormat::Rgba8);
    for n in [4, 7, 8] {
        fs::remove_file(t.path().join(format!("s_{n:04}.png"))).unwrap();
    }
    let out = t.path().join("o/s_%04d.png").display().to_string();
    framepipe().args(["process", &input, "-o", &out]).assert().code(2).stderr(contains("missing frames 4, 7-8"));
    assert!(files(&t.path().join("o")).iter().all(|f| !f.starts_with("s_")));
    // Skipped, they are named in the summary and in the report.
    framepipe()
        .args(["process", &input, "-o", &out, "--missing", "skip", "--json", "-"])
        .assert()
        .success()
        .stderr(contains("3 missing frames left out: 4, 7-8."))
        .stdout(contains("\"frames_missing\": 3").and(contains("\"missing_list\": \"4, 7-8\"")));
    assert_eq!(files(&t.path().join("o")).len(), 7);
    // A spec that asks for absent frames is also an error.
    let out2 = t.path().join("p/s_%04d.png").display().to_string();
    framepipe()
        .args(["process", &input, "-o", &out2, "--frames", "1-12"])
        .assert()
        .code(2)
        .stderr(contains("4, 7-8, 11-12"));
    // One missing frame is one; none of them there is no gap to skip.
    usage_error(&["process", &input, "-o", &out2, "--frames", "3-4"], "missing frame 4 (use --missing skip");
    usage_error(&["process", &input, "-o", &out2, "--frames", "7-8"], "none of the requested frames exist (7-8)");
    // A stray file numbered far beyond the others is one gap, named as
    // such, not trillions of numbers to list (or allocate).
    fs::copy(t.path().join("s_0001.png"), t.path().join("s_20240315120000.png")).unwrap();
    let out3 = t.path().join("q/s_%04d.png").display().to_string();
    framepipe()
        .args(["process", &input, "-o", &out3])
        .assert()
        .code(2)
        .stderr(contains("missing frames 4, 7-8, 11-20240315119999"));
    framepipe().args(["process", &input, "-o", &out3, "--missing", "skip", "-q"]).assert().success();
    assert_eq!(files(&t.path().join("q")).len(), 8);
}

#[test]
fn formats_round_trip_and_16_bit_stays_16_bit() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), "in16_%02d.png", 1, 1, PixelFormat::Rgba16);
    for ext in ["png", "tif"] {
        let out = t.path().join(format!("o16_%02d.{ext}")).display().to_string();
        framepipe().args(["process", &input, "-o", &out, "--exposure", "0.1", "-q"]).assert().success();
        let f = decode(&t.path().join(format!("o16_01.{ext}")));
        assert_eq!(f.format, PixelFormat::Rgba16, "{ext}");
        // Genuinely 16-bit content, not 8-bit values widened.
        assert!((0..f.channel_count()).any(|i| !f.channel(i).is_multiple_of(257)), "{ext}");
        let graph = framepipe::OpGraph::new(vec![framepipe::Op::Exposure { stops: 0.1 }]).unwrap();
        let expected = framepipe::process_cpu(&decode(&t.path().join("in16_01.png")), &graph.plan());
        crate::util::assert_close(&f, &expected, &format!("16-bit {ext}"));
    }
    // No ops: 16 bits in, the same 16 bits out.
    let original = decode(&t.path().join("in16_01.png"));
    for ext in ["png", "tif"] {
        let out = t.path().join(format!("c16_%02d.{ext}")).display().to_string();
        framepipe().args(["process", &input, "-o", &out, "-q"]).assert().success();
        assert_eq!(decode(&t.path().join(format!("c16_01.{ext}"))), original, "{ext}");
    }
    // No ops: a lossless round trip is bit-exact through every lossless format.
    let input8 = sequence(t.path(), "in8_%02d.png", 1, 1, PixelFormat::Rgba8);
    let original = decode(&t.path().join("in8_01.png"));
    for ext in ["png", "tif", "qoi"] {
        let out = t.path().join(format!("c8_%02d.{ext}")).display().to_string();
        framepipe().args(["process", &input8, "-o", &out, "-q"]).assert().success();
        assert_eq!(decode(&t.path().join(format!("c8_01.{ext}"))), original, "{ext}");
    }
    let out = t.path().join("j_%02d.jpg").display().to_string();
    framepipe().args(["process", &input8, "-o", &out, "-q"]).assert().success();
    let j = decode(&t.path().join("j_01.jpg"));
    assert_eq!((j.width, j.height, j.format), (24, 16, PixelFormat::Rgba8));
    // What an 8-bit container loses of a 16-bit source with alpha is said
    // before the run, not found in the files.
    let out = t.path().join("j16_%02d.jpg").display().to_string();
    framepipe().args(["process", &input, "-o", &out]).assert().success().stderr(contains(
        "notice: JPEG holds less than the sources: 16-bit values are rounded to 8 bits and alpha is dropped",
    ));
    let out = t.path().join("q16_%02d.qoi").display().to_string();
    framepipe()
        .args(["process", &input, "-o", &out])
        .assert()
        .success()
        .stderr(contains("notice: QOI holds less than the sources: 16-bit values are rounded to 8 bits\n"));
    // `generate` says the same of what it is asked to make.
    let out = t.path().join("g16_%02d.jpg").display().to_string();
    framepipe()
        .args(["generate", "--size", "8x8", "--frames", "1", "--depth", "16", "--alpha", "-o", &out])
        .assert()
        .success()
        .stderr(contains(
            "notice: JPEG holds less than what is generated: 16-bit values are rounded to 8 bits and alpha is dropped",
        ));
    // One frame may be named as written, as `process` takes it; two need a
    // frame number field.
    let plate = t.path().join("plate.png");
    let args = ["generate", "--size", "8x8", "--depth", "16", "-o", plate.to_str().unwrap(), "--frames"];
    framepipe().args(args).arg("1").assert().success();
    assert_eq!(decode(&plate).format, PixelFormat::Rgba16);
    framepipe().args(args).arg("2").arg("--overwrite").assert().code(2).stderr(contains("no frame number field"));
}

/// Grey sources (a matte pass, a scan) come out grey, alpha kept, at
/// their depth, where the ops keep every pixel grey: the same values the
/// RGB path would write, in a third of the bytes. A tint makes them RGB.
#[test]
fn grey_sources_stay_grey_where_the_ops_keep_them_so() {
    use image::{ColorType, DynamicImage, ImageBuffer, Luma, LumaA};
    let t = tempfile::tempdir().unwrap();
    let mut rng = crate::util::Rng::fresh("grey sources");
    let (w, h) = (31u32, 17u32);
    let image = |color: ColorType, v: Vec<u16>| -> DynamicImage {
        let bytes = || v.iter().map(|&x| x as u8).collect::<Vec<u8>>();
        match color {
            ColorType::L8 => ImageBuffer::<Luma<u8>, _>::from_raw(w, h, bytes()).unwrap().into(),
            ColorType::La8 => ImageBuffer::<LumaA<u8>, _>::from_raw(w, h, bytes()).unwrap().into(),
            ColorType::L16 => ImageBuffer::<Luma<u16>, _>::from_raw(w, h, v).unwrap().into(),
            _ => ImageBuffer::<LumaA<u16>, _>::from_raw(w, h, v).unwrap().into(),
        }
    };
    let kinds = [("l8", ColorType::L8), ("la8", ColorType::La8), ("l16", ColorType::L16), ("la16", ColorType::La16)];
    let grade = ["--exposure", "0.4", "--contrast", "1.2", "--saturation", "0.5", "--blur", "1.3"];
    let graph = framepipe::OpGraph::new(vec![
        framepipe::Op::Exposure { stops: 0.4 },
        framepipe::Op::Contrast { contrast: 1.2, pivot: 0.5 },
        framepipe::Op::Saturation { saturation: 0.5 },
        framepipe::Op::Blur { sigma: 1.3 },
    ])
    .unwrap();
    for (name, color) in kinds {
        let channels = color.channel_count() as usize;
        let max = if color.bytes_per_pixel() / color.channel_count() == 2 { 65536 } else { 256 };
        let samples: Vec<u16> = (0..(w * h) as usize * channels).map(|_| (rng.next() % max) as u16).collect();
        let input = t.path().join(format!("{name}/s_01.png"));
        fs::create_dir_all(input.parent().unwrap()).unwrap();
        image(color, samples).save(&input).unwrap();
        let pattern = t.path().join(format!("{name}/s_%02d.png")).display().to_string();
        let expected = framepipe::process_cpu(&decode(&input), &graph.plan());
        for ext in ["png", "tif"] {
            let out = t.path().join(format!("out-{name}/s_%02d.{ext}")).display().to_string();
            // The summary names the sources' layout, the report the RGBA
            // they are worked as.
            let layout = match name {
                "l8" => "grey 8-bit",
                "la8" => "grey+alpha 8-bit",
                "l16" => "grey 16-bit",
                _ => "grey+alpha 16-bit",
            };
            framepipe()
                .args(["process", &pattern, "-o", &out, "--backend", "cpu"])
                .args(grade)
                .assert()
                .success()
                .stderr(contains(format!("({w}x{h} {layout}) written")));
            let written = t.path().join(format!("out-{name}/s_01.{ext}"));
            if ext == "png" {
                assert_eq!(image::open(&written).unwrap().color(), color, "{name} as {ext}");
            } else {
                // `image` reads no grey-alpha TIFF: ask `tiff` itself.
                let mut tiff = tiff::decoder::Decoder::new(fs::File::open(&written).unwrap()).unwrap();
                use tiff::tags::Tag;
                let bits = (color.bytes_per_pixel() / color.channel_count()) as u16 * 8;
                let mut tag = |tag| tiff.find_tag_unsigned_vec::<u16>(tag).unwrap().unwrap();
                let (photometric, depths) = (tag(Tag::PhotometricInterpretation), tag(Tag::BitsPerSample));
                assert_eq!((photometric, depths), (vec![1], vec![bits; channels]), "{name}: grey, its depth");
                let extra = tiff.find_tag_unsigned_vec::<u16>(tiff::tags::Tag::ExtraSamples).unwrap();
                assert_eq!(extra, color.has_alpha().then(|| vec![2]), "{name}: alpha marked unassociated");
            }
            let back = decode(&written);
            assert_eq!((back.format, back.has_alpha), (expected.format, expected.has_alpha), "{name} as {ext}");
            // The green RGB would hold, in every channel (the fused matrix
            // rounds R and B their own way, within the tolerance).
            let green = |f: &HostFrame, i: usize| if i % 4 == 3 { f.channel(i) } else { f.channel(i - i % 4 + 1) };
            let n = expected.channel_count();
            assert!((0..n).all(|i| back.channel(i) == green(&expected, i)), "{name} as {ext}: not RGB's green");
            crate::util::assert_close(&back, &expected, &format!("{name} as {ext}"));
        }
        // A tint makes them RGB, even one of a step that rounds away in
        // most pixels.
        for (i, tint) in
            [["--matrix", "1,0,0,0,0.9,0,0,0,0.8"], ["--offset", "0.00392156862745098,0,0"]].iter().enumerate()
        {
            let tinted = t.path().join(format!("tint{i}-{name}/s_%02d.png")).display().to_string();
            framepipe().args(["process", &pattern, "-o", &tinted]).args(tint).assert().success();
            let rgb = image::open(t.path().join(format!("tint{i}-{name}/s_01.png"))).unwrap().color();
            assert_eq!(rgb.channel_count(), if color.has_alpha() { 4 } else { 3 }, "{name} tinted: {tint:?}");
        }
    }
}

/// A sequence whose frames change channels (a grey frame among color
/// ones, alpha on some) keeps each frame's in its output, and says where
/// the layout changes: some tools reading it back would not expect that.
#[test]
fn frames_with_other_channels_than_the_first_are_named() {
    use image::{DynamicImage, ImageBuffer, Luma, Rgb, Rgba};
    let t = tempfile::tempdir().unwrap();
    let mut rng = crate::util::Rng::fresh("mixed channels");
    let (w, h) = (12u32, 9u32);
    let mut bytes = |n: u32| (0..(w * h * n)).map(|_| (rng.next() % 256) as u8).collect::<Vec<u8>>();
    let frames: [DynamicImage; 4] = [
        ImageBuffer::<Luma<u8>, _>::from_raw(w, h, bytes(1)).unwrap().into(),
        ImageBuffer::<Luma<u8>, _>::from_raw(w, h, bytes(1)).unwrap().into(),
        ImageBuffer::<Rgb<u8>, _>::from_raw(w, h, bytes(3)).unwrap().into(),
        ImageBuffer::<Rgba<u8>, _>::from_raw(w, h, bytes(4)).unwrap().into(),
    ];
    for (i, frame) in frames.iter().enumerate() {
        frame.save(t.path().join(format!("m_{:02}.png", i + 1))).unwrap();
    }
    let input = t.path().join("m_%02d.png").display().to_string();
    let out = t.path().join("o/m_%02d.png").display().to_string();
    framepipe()
        .args(["process", &input, "-o", &out, "--exposure", "0.5"])
        .assert()
        .success()
        .stderr(contains("notice: frames 3-4 have sources with other channels than the first"));
    // Each output's channel count, of frames `numbers` in folder `dir`.
    let channels = |dir: &str, numbers: std::ops::RangeInclusive<u32>| -> Vec<u8> {
        let open = |n| image::open(t.path().join(format!("{dir}/m_{n:02}.png"))).unwrap();
        numbers.map(|n| open(n).color().channel_count()).collect()
    };
    assert_eq!(channels("o", 1..=4), [1, 1, 3, 4]);
    // In JPEG, only grey or color can change: the RGBA frame is RGB there.
    let jpeg = t.path().join("j/m_%02d.jpg").display().to_string();
    framepipe()
        .args(["process", &input, "-o", &jpeg, "--exposure", "0.5"])
        .assert()
        .success()
        .stderr(contains("notice: frames 3-4 have sources with other channels"))
        .stderr(contains("notice: frame 4 has alpha, which JPEG has no place for: dropped from the outputs"));
    // One frame, said so; QOI stores no grey, so grey and RGB frames
    // come out alike there.
    let one = t.path().join("c/m_%02d.png").display().to_string();
    framepipe()
        .args(["process", &input, "-o", &one, "--frames", "2-3", "--exposure", "0.5"])
        .assert()
        .success()
        .stderr(contains("frame 3 has a source with other channels"));
    framepipe()
        .args(["process", &input, "-o", &t.path().join("q/m_%02d.qoi").display().to_string(), "--frames", "1-3"])
        .assert()
        .success()
        .stderr(contains("other channels").not());
    // The other way round: a grey frame among color ones stays grey.
    fs::rename(t.path().join("m_01.png"), t.path().join("m_05.png")).unwrap();
    let back = t.path().join("b/m_%02d.png").display().to_string();
    framepipe()
        .args(["process", &input, "-o", &back, "--frames", "3-5", "--exposure", "0.5", "--backend", "cpu"])
        .assert()
        .success()
        .stderr(contains("notice: frames 4-5 have sources with other channels than the first"));
    assert_eq!(channels("b", 3..=5), [3, 4, 1]);
}

#[test]
fn gpu_and_cpu_cli_outputs_agree() {
    if crate::util::gpu(Default::default()).is_none() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), "s_%02d.png", 1, 2, PixelFormat::Rgba8);
    let preset = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/grade.toml");
    for backend in ["cpu", "gpu"] {
        let out = t.path().join(format!("{backend}/s_%02d.png")).display().to_string();
        framepipe()
            .args(["process", &input, "-o", &out, "--preset", preset.to_str().unwrap(), "--backend", backend])
            .assert()
            .success()
            .stderr(contains(format!("on the {backend} backend")));
    }
    // One frame at a time, as asked: no notice that the budget held one.
    let out = t.path().join("seq/s_%02d.png").display().to_string();
    framepipe()
        .args(["process", &input, "-o", &out, "--preset", preset.to_str().unwrap(), "--backend", "gpu"])
        .arg("--sequential")
        .assert()
        .success()
        .stderr(contains("one at a time").not());
    for n in 1..=2 {
        let a = decode(&t.path().join(format!("cpu/s_{n:02}.png")));
        let b = decode(&t.path().join(format!("gpu/s_{n:02}.png")));
        crate::util::assert_close(&b, &a, "cli gpu vs cpu");
        assert_eq!(decode(&t.path().join(format!("seq/s_{n:02}.png"))).data, b.data, "sequential vs pipelined");
    }
}

/// Runs a process that must fail for one bad frame, on the CPU backend
/// and, where there is an adapter, on the GPU (whose decoders write
/// straight into mapped staging).
fn one_bad_frame(bad: impl Fn(&Path), expect: &str) {
    one_bad_frame_on("cpu", &bad, expect);
    if crate::util::gpu(Default::default()).is_some() {
        one_bad_frame_on("gpu", &bad, expect);
    }
}

fn one_bad_frame_on(backend: &str, bad: &dyn Fn(&Path), expect: &str) {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), "s_%02d.png", 1, 4, PixelFormat::Rgba8);
    bad(&t.path().join("s_03.png"));
    let out_dir = t.path().join("out");
    let out = out_dir.join("s_%02d.png").display().to_string();
    let assert =
        framepipe().args(["process", &input, "-o", &out, "--exposure", "0.2", "--backend", backend]).assert().code(1);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    let line = stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(line.contains("s_03.png") && line.contains(expect), "{line}");
    // Stop at the bad frame: frames already in flight drain (earlier ones
    // always are), nothing is partial, and the bad frame has no output.
    let written = files(&out_dir);
    assert!(written.starts_with(&["s_01.png".into(), "s_02.png".into()]), "{written:?} {stderr}");
    assert!(written.iter().all(|f| f == "s_01.png" || f == "s_02.png" || f == "s_04.png"), "{written:?}");
    // With --on-error skip every other frame is written, still exit 1.
    framepipe()
        .args(["process", &input, "-o", &out, "--exposure", "0.2", "--backend", backend])
        .args(["--on-error", "skip", "--overwrite", "-q"])
        .assert()
        .code(1);
    assert_eq!(files(&out_dir), ["s_01.png", "s_02.png", "s_04.png"], "{backend}");
}

/// Under `--on-error stop` the first failure is the run's one error line;
/// frames in flight that fail after it are counted in the summary. Under
/// `skip` each failure has its line.
#[test]
fn one_error_line_under_stop_one_per_frame_under_skip() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), "s_%02d.png", 1, 16, PixelFormat::Rgba8);
    for n in 2..=16 {
        let p = t.path().join(format!("s_{n:02}.png"));
        let bytes = fs::read(&p).unwrap();
        fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    }
    // (errors printed, frames the summary says failed)
    let run = |policy: &str, i: usize| {
        let out = t.path().join(format!("{policy}{i}/s_%02d.png")).display().to_string();
        let args = ["process", &input, "-o", &out, "--backend", "cpu", "--threads", "8", "--on-error", policy];
        let run = framepipe().args(args).assert().code(1);
        let stderr = String::from_utf8_lossy(&run.get_output().stderr).to_string();
        let errors = stderr.lines().filter(|l| l.starts_with("error:")).count();
        // "... 15 frames failed: 1-15." (or "1 frame failed: 4.")
        let failed = stderr.split(" failed: ").next().and_then(|s| s.rsplit(' ').nth(1)?.parse().ok());
        (errors, failed.unwrap_or_else(|| panic!("no count of failed frames: {stderr}")))
    };
    assert_eq!(run("skip", 0), (15, 15));
    // How many of the frames in flight fail before the stop varies: until
    // a run where more than one did (four in ten here, fewer on a busy
    // machine), each says one.
    let several = (0..60).any(|i| {
        let (errors, failed) = run("stop", i);
        assert_eq!(errors, 1, "{failed} failed");
        failed > 1
    });
    assert!(several, "no run had more than one frame in flight fail");
}

#[test]
fn truncated_frame() {
    one_bad_frame(
        |p| {
            let bytes = fs::read(p).unwrap();
            fs::write(p, &bytes[..bytes.len() / 2]).unwrap();
        },
        "cannot decode",
    );
}

#[test]
fn corrupt_frame() {
    one_bad_frame(
        |p| {
            let mut bytes = fs::read(p).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid..mid + 64].iter_mut().for_each(|b| *b ^= 0x5a);
            fs::write(p, bytes).unwrap();
        },
        "cannot decode",
    );
}

#[test]
fn zero_byte_frame() {
    one_bad_frame(|p| fs::write(p, b"").unwrap(), "empty");
}

#[test]
fn text_file_with_image_extension() {
    one_bad_frame(
        |p| fs::write(p, "this is not an image\n".repeat(20)).unwrap(),
        "cannot decode: not a PNG file: it does not begin as one (nor as a JPEG, TIFF or QOI file)",
    );
}

#[test]
fn frame_of_another_size() {
    one_bad_frame(
        |p| {
            let opts = GenerateOptions { width: 30, height: 16, frames: 1, start: 3, ..Default::default() };
            fs::remove_file(p).unwrap();
            generate_sequence(
                &opts,
                p.with_file_name("s_%02d.png").to_str().unwrap(),
                &EncodeOptions::default(),
                false,
            )
            .unwrap();
        },
        "30x16",
    );
}

/// A valid PNG whose header claims 100000 x 100000 pixels.
fn decompression_bomb(path: &Path) {
    claimed_size_png(path, 100_000, 100_000);
}

/// A 1x1 PNG whose header claims `width` x `height` pixels.
fn claimed_size_png(path: &Path, width: u32, height: u32) {
    let mut png = Vec::new();
    image::RgbaImage::new(1, 1).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    // IHDR data starts at byte 16: width, height (big-endian), then its CRC.
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    fs::write(path, png).unwrap();
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn decompression_bomb_is_refused() {
    one_bad_frame(decompression_bomb, "limit");
}

/// A small PNG whose ICC profile inflates to 384 MiB: read as its pixels,
/// the profile never inflated whole (the run's peak RSS was over 1 GB
/// before the PNG decoder's own allocations were bounded apart).
#[test]
fn a_png_whose_profile_is_a_bomb_is_read_in_bounded_memory() {
    use image::ImageEncoder;
    let t = tempfile::tempdir().unwrap();
    let rgb = image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([(x * 31) as u8, (y * 29) as u8, 7]));
    let mut bytes = Vec::new();
    let mut encoder = image::codecs::png::PngEncoder::new(&mut bytes);
    encoder.set_icc_profile(vec![0; 384 << 20]).unwrap();
    encoder.write_image(rgb.as_raw(), 8, 8, image::ExtendedColorType::Rgb8).unwrap();
    let input = t.path().join("bomb.png");
    fs::write(&input, &bytes).unwrap();
    let (out, json) = (t.path().join("o.png"), t.path().join("r.json"));
    framepipe()
        .args(["process", "--backend", "cpu", "-q"])
        .arg(&input)
        .arg("-o")
        .arg(&out)
        .arg("--json")
        .arg(&json)
        .assert()
        .success();
    assert_eq!(decode(&out).data, decode(&input).data);
    let report: serde_json::Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    let rss = report["rss_peak"].as_u64().unwrap();
    assert!(rss > 0 && rss < 200 << 20, "peak RSS {rss}");
}

/// A frame larger than the output format holds (QOI: 400 million pixels)
/// is refused from its header, before any frame is decoded: exit 2.
#[test]
fn a_frame_the_output_format_cannot_hold_is_refused_up_front() {
    let t = tempfile::tempdir().unwrap();
    fs::create_dir(t.path().join("in")).unwrap();
    claimed_size_png(&t.path().join("in/big_1.png"), 20_001, 20_001);
    let input = t.path().join("in/big_%d.png").display().to_string();
    let expect = "invalid frame size for QOI output 20001x20001 (expected at most 400000000 pixels, QOI's limit";
    let out = t.path().join("o/big_%d.qoi").display().to_string();
    usage_error(&["process", &input, "-o", &out, "--backend", "cpu"], expect);
    usage_error(&["process", &input, "-o", "-", "--stream-format", "qoi", "--backend", "cpu"], expect);
    assert!(!t.path().join("o").exists());
}

fn usage_error(args: &[&str], expect: &str) {
    framepipe().args(args).assert().code(2).stderr(
        contains(expect).and(predicate::function(|s: &str| s.lines().filter(|l| l.starts_with("error")).count() == 1)),
    );
}

/// One still in, one file out: an output with a frame field has no number
/// to take (`take#2.png` would become `take02.png`); a numbered file is a
/// frame, whose number the field takes.
#[test]
fn a_still_has_no_frame_number_for_an_output_field() {
    let t = tempfile::tempdir().unwrap();
    let numbered = sequence(t.path(), "s_%04d.png", 42, 1, PixelFormat::Rgba8).replace("%04d", "0042");
    let still = t.path().join("plate.png");
    fs::copy(&numbered, &still).unwrap();
    let (still, take) = (still.display().to_string(), t.path().join("take#2.png").display().to_string());
    usage_error(&["process", &still, "-o", &take, "--exposure", "1"], "is one file with no frame number");
    assert!(!t.path().join("take02.png").exists());
    framepipe()
        .args(["process", &still, "-o", &t.path().join("graded.png").display().to_string(), "-q"])
        .assert()
        .success();
    let out = t.path().join("o_%04d.png").display().to_string();
    framepipe().args(["process", &numbered, "-o", &out, "-q"]).assert().success();
    assert!(t.path().join("o_0042.png").is_file());
}

/// Argument errors from the parser are one line too, naming the argument
/// and keeping clap's suggestion; help still prints in full.
#[test]
fn argument_errors_are_one_line() {
    let one = |args: &[&str], expect: &str| {
        let out = framepipe().args(args).assert().code(2).get_output().stderr.clone();
        let stderr = String::from_utf8_lossy(&out);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: ") && stderr.contains(expect), "{args:?}: {stderr}");
    };
    one(&["process", "in", "-o", "out.png", "--pool", "0"], "invalid value '0' for '--pool <N|auto>'");
    one(&["process", "in", "-o", "out.png", "--bakend", "gpu"], "tip: a similar argument exists: '--backend'");
    one(&["process"], "not provided: --output <OUTPUT>, <INPUT>");
    one(&["reticulate"], "unrecognized subcommand 'reticulate'");
    framepipe().args(["process", "--help"]).assert().success().stdout(contains("--preset"));
}

#[test]
fn bad_arguments_and_presets_exit_2() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), "s_%02d.png", 1, 2, PixelFormat::Rgba8);
    let out = t.path().join("o/s_%02d.png").display().to_string();
    usage_error(&["process", &input, "-o", &out, "--blur", "-1"], "invalid sigma -1");
    usage_error(&["process", &input, "-o", &out, "--blur", "NaN"], "invalid sigma NaN");
    usage_error(&["process", &input, "-o", &out, "--matrix", "1,2,3"], "invalid matrix");
    usage_error(
        &["process", &input, "-o", &out, "--threads", "100000"],
        "'100000' for '--threads <N>': expected 0 (one per core) to 1024",
    );
    usage_error(&["process", &input, "-o", &out, "--threads", "-1"], "'--threads <N>': expected 0 or more");
    usage_error(&["generate", "-o", &out, "--start", "-1"], "'--start <START>': expected 0 or more");
    usage_error(&["process", &input, "-o", &out, "--pivot", "0.3"], "--contrast <C>");
    if crate::util::gpu(Default::default()).is_some() {
        let args = ["process", &input, "-o", &out, "--backend", "gpu", "--adapter", "no such card"];
        let found = "(expected part of an adapter's name, or its number; found: [0] ";
        usage_error(&args, &format!("invalid --adapter \"no such card\" {found}"));
        // By its number in `framepipe info`, as it lists them.
        let by_number = t.path().join("n/s_%02d.png").display().to_string();
        let args = ["process", &input, "-o", &by_number, "--backend", "gpu", "--adapter", "0"];
        framepipe().args(args).assert().success().stderr(contains("on the gpu backend"));
        // A number past them is refused, never read as a digit of a name.
        let args = ["process", &input, "-o", &out, "--backend", "gpu", "--adapter", "97"];
        usage_error(&args, "invalid --adapter \"97\" (expected an adapter's number, 0 to ");
    }
    usage_error(&["process", &input, "-o", "o/x_%0999999999999999999999d.png"], "pads to too many digits");
    usage_error(&["process", &input, "-o", "o/x_%0300d.png"], "pads to 300 digits (at most 20)");
    usage_error(
        &["process", &input, "-o", "o/x_%i.png"],
        "the % at character 3 of \"x_%i.png\" is not a frame number field",
    );
    usage_error(&["process", &input, "-o", &out, "--adapter", ""], "invalid --adapter \"\"");
    usage_error(&["process", &input, "-o", &out, "--adapter", " "], "invalid --adapter \" \" (expected part of");
    // Two files that are both frame 1 in a folder: no guessing.
    let dup = t.path().join("dup");
    fs::create_dir(&dup).unwrap();
    fs::copy(t.path().join("s_01.png"), dup.join("shot_1.png")).unwrap();
    fs::copy(t.path().join("s_01.png"), dup.join("shot_0001.png")).unwrap();
    usage_error(&["process", dup.to_str().unwrap(), "-o", &out], "shot_1.png are both frame 1");
    // ... and a pattern chooses, as the message says: the other's digits
    // are padded otherwise, so they are not its frames.
    for (pattern, o) in [("shot_%04d.png", "p4/o_%04d.png"), ("shot_%d.png", "p1/o_%d.png")] {
        let (input, output) = (dup.join(pattern), t.path().join(o));
        framepipe().arg("process").arg(&input).arg("-o").arg(&output).args(["-q"]).assert().success();
    }
    assert_eq!(files(&t.path().join("p4")), ["o_0001.png"]);
    assert_eq!(files(&t.path().join("p1")), ["o_1.png"]);
    let nothing = t.path().join("none_%04d.png").display().to_string();
    usage_error(&["process", &nothing, "-o", &out], "no frames match");
    // A preset is a small file: not a device, not a folder, not a
    // generated runaway.
    usage_error(&["process", &input, "-o", &out, "--preset", "/dev/zero"], "/dev/zero: not a file (a device?)");
    let folder = t.path().display().to_string();
    usage_error(&["process", &input, "-o", &out, "--preset", &folder], "a folder, not a preset file");
    let many = t.path().join("many.toml");
    fs::write(&many, "[[op]]\ntype = \"exposure\"\nstops = 0\n".repeat(1001)).unwrap();
    usage_error(
        &["process", &input, "-o", &out, "--preset", many.to_str().unwrap()],
        "1001 [[op]] entries, at most 1000",
    );
    let huge = t.path().join("huge.toml");
    fs::write(&huge, format!("# {}\n", "x".repeat(1 << 20))).unwrap();
    usage_error(
        &["process", &input, "-o", &out, "--preset", huge.to_str().unwrap()],
        "huge.toml: larger than 1024 KiB",
    );
    let unknown = t.path().join("unknown.toml");
    fs::write(&unknown, "[[op]]\ntype = \"sharpen\"\namount = 1\n").unwrap();
    usage_error(
        &["process", &input, "-o", &out, "--preset", unknown.to_str().unwrap()],
        "op 1 (line 2): unknown variant `sharpen`",
    );
    let wrong = t.path().join("wrong.toml");
    // The second op is named, not the start of the list.
    fs::write(
        &wrong,
        "name = \"x\"\n\n[[op]]\ntype = \"exposure\"\nstops = 1\n\n[[op]]\ntype = \"blur\"\nsigma = \"big\"\n",
    )
    .unwrap();
    usage_error(
        &["process", &input, "-o", &out, "--preset", wrong.to_str().unwrap()],
        "op 2 (line 9) (blur): sigma: invalid type: string \"big\", expected a number",
    );
    let negative = t.path().join("neg.toml");
    fs::write(&negative, "[[op]]\ntype = \"blur\"\nsigma = -2.0\n").unwrap();
    usage_error(&["process", &input, "-o", &out, "--preset", negative.to_str().unwrap()], "invalid sigma -2");
    // Each exposure is in range; two in a row fuse past the limit, named
    // by the ops and lines that did it (after a blur: ops 2 and 3).
    let blur = "[[op]]\ntype = \"blur\"\nsigma = 1.0\n";
    let huge = t.path().join("huge.toml");
    fs::write(&huge, blur.to_string() + &"[[op]]\ntype = \"exposure\"\nstops = 32\n".repeat(4)).unwrap();
    usage_error(
        &["process", &input, "-o", &out, "--preset", huge.to_str().unwrap()],
        "huge.toml: ops 2-3 (lines 4-7): invalid fused color gain 1.845e19",
    );
    // Runs each in range, kept apart by blurs, whose gains multiply past
    // f32 (inf, then NaN at a mixed-sign matrix): named from the first op.
    let run = "[[op]]\ntype = \"exposure\"\nstops = 32\n".to_string() + blur;
    fs::write(&huge, run.repeat(5)).unwrap();
    usage_error(
        &["process", &input, "-o", &out, "--preset", huge.to_str().unwrap()],
        "huge.toml: ops 1-7 (lines 1-19): invalid color gain over the whole graph 3.403e38 (expected at most 1e30",
    );
    // So many that the composition overflows f64 (inf, and NaN off the
    // diagonal): refused too, never black frames.
    fs::write(&huge, "[[op]]\ntype = \"exposure\"\nstops = 32\n".repeat(33)).unwrap();
    usage_error(&["process", &input, "-o", &out, "--preset", huge.to_str().unwrap()], "invalid fused color gain");
    usage_error(&["process", &input, "-o", &t.path().join("x_%02d.bmp").display().to_string()], "output extension");
    assert!(!t.path().join("o").exists() || files(&t.path().join("o")).is_empty());
}

#[test]
fn unwritable_output_folder() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), "s_%02d.png", 1, 2, PixelFormat::Rgba8);
    // A folder below a regular file can be neither created nor written, even by root.
    let blocker = t.path().join("blocker");
    fs::write(&blocker, b"x").unwrap();
    let out = blocker.join("o/s_%02d.png").display().to_string();
    usage_error(&["process", &input, "-o", &out], "output folder is not writable");
}

/// A name longer than the file system holds (255 bytes on most) is refused
/// before any frame, not found at each frame's rename or the report's.
#[test]
fn an_output_name_too_long_is_refused_before_any_frame() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), "s_%02d.png", 1, 2, PixelFormat::Rgba8);
    let long = "L".repeat(300);
    let frames = t.path().join("o").join(format!("{long}_%02d.png")).display().to_string();
    usage_error(&["process", &input, "-o", &frames], "_01.png: cannot be an output name:");
    let out = t.path().join("p/s_%02d.png").display().to_string();
    for flag in ["--json", "--timeline"] {
        let ext = if flag == "--json" { "json" } else { "svg" };
        // In a folder that is there, or one that is to be made.
        for dir in ["", "new/"] {
            let report = t.path().join(format!("{dir}{long}.{ext}"));
            usage_error(&["process", &input, "-o", &out, flag, report.to_str().unwrap()], "cannot be an output name:");
        }
    }
    for made in ["o", "p", "new"] {
        assert!(!t.path().join(made).exists(), "nothing made: {made}");
    }
}

/// An interrupted render resumes: the outputs that exist are kept as they
/// are (each was renamed into place complete) and only the others are made.
#[test]
fn skip_existing_resumes_a_render_and_keeps_what_is_there() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), "s_%02d.png", 1, 6, PixelFormat::Rgba8);
    let all = t.path().join("all/o_%02d.png").display().to_string();
    framepipe().args(["process", &input, "-o", &all, "--blur", "1", "-q"]).assert().success();
    for sequential in [false, true] {
        let dir = t.path().join(format!("resumed-{sequential}"));
        let out = dir.join("o_%02d.png").display().to_string();
        let json = t.path().join(format!("r-{sequential}.json"));
        let svg = t.path().join(format!("t-{sequential}.svg"));
        let first = ["process", &input, "-o", &out, "--blur", "1", "--frames", "1-3", "-q", "--json"];
        framepipe().args(first).arg(&json).arg("--timeline").arg(&svg).assert().success();
        let first_svg = fs::read(&svg).unwrap();
        // What is there is kept even if it differs from what a run would
        // make (here an ungraded frame), as long as it is a frame.
        let kept = fs::read(t.path().join("s_02.png")).unwrap();
        fs::write(dir.join("o_02.png"), &kept).unwrap();
        // The first run's report is replaced by the one of the run that
        // finishes it.
        let mut resume = framepipe();
        resume.args(["process", &input, "-o", &out, "--blur", "1", "--skip-existing", "--json"]).arg(&json);
        resume.arg("--timeline").arg(&svg);
        if sequential {
            resume.arg("--sequential");
        }
        resume.assert().success().stderr(contains("3 frames already there, left as they were: 1-3."));
        assert_eq!(fs::read(dir.join("o_02.png")).unwrap(), kept);
        for n in 4..=6 {
            let name = format!("o_{n:02}.png");
            assert_eq!(fs::read(dir.join(&name)).unwrap(), fs::read(t.path().join("all").join(&name)).unwrap());
        }
        let report: serde_json::Value = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!((report["frames_written"].as_u64(), report["frames_existing"].as_u64()), (Some(3), Some(3)));
        assert_ne!(fs::read(&svg).unwrap(), first_svg, "the timeline replaced too");
        // Queued again once finished: nothing to do, and the reports of the
        // run that did it are kept.
        let (done_json, done_svg) = (fs::read(&json).unwrap(), fs::read(&svg).unwrap());
        let mut again = framepipe();
        again.args(["process", &input, "-o", &out, "--blur", "1", "--skip-existing", "--json"]).arg(&json);
        again.arg("--timeline").arg(&svg).assert().success().stderr(contains("is kept: every frame was already there"));
        assert_eq!((fs::read(&json).unwrap(), fs::read(&svg).unwrap()), (done_json.clone(), done_svg));
        // Not a report of a run that left frames to do (another run did
        // them since): a farm reading it would queue them again.
        let stopped = String::from_utf8(done_json).unwrap().replace(r#""cancelled": false"#, r#""cancelled": true"#);
        fs::write(&json, stopped).unwrap();
        let mut last = framepipe();
        last.args(["process", &input, "-o", &out, "--blur", "1", "--skip-existing", "-q", "--json"]).arg(&json);
        last.assert().success();
        let report: serde_json::Value = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!((report["frames_written"].as_u64(), report["cancelled"].as_bool()), (Some(0), Some(false)));
    }
    // A run knows its report by where it writes, however that is spelt;
    // the same spelling from another folder is another run's.
    let spelt = t.path().join("spelt");
    fs::create_dir_all(spelt.join("sub")).unwrap();
    let at = |dir: &Path| {
        let mut cmd = framepipe();
        cmd.current_dir(dir).args(["process", &input, "-q"]);
        cmd
    };
    at(&spelt).args(["-o", "q8/o_%02d.png", "--frames", "1-3", "--json", "rep.json"]).assert().success();
    at(&spelt).args(["-o", "./q8/o_##.png", "--skip-existing", "--json", "rep.json"]).assert().success();
    let report: serde_json::Value = serde_json::from_slice(&fs::read(spelt.join("rep.json")).unwrap()).unwrap();
    assert_eq!((report["frames_written"].as_u64(), report["output"].as_str()), (Some(3), Some("./q8/o_##.png")));
    let theirs = fs::read(spelt.join("rep.json")).unwrap();
    at(&spelt.join("sub"))
        .args(["-o", "./q8/o_##.png", "--skip-existing", "--json", "../rep.json"])
        .assert()
        .code(2)
        .stderr(contains("the report of the run this resumes"));
    assert_eq!(fs::read(spelt.join("rep.json")).unwrap(), theirs);
    // More runs than a reader's list names: the report's spec names them
    // all, as --frames takes them.
    let many = sequence(t.path(), "m_%02d.png", 1, 50, PixelFormat::Rgba8);
    let out = t.path().join("many/o_%02d.png").display().to_string();
    framepipe().args(["process", &many, "-o", &out, "--frames", "1-49x2", "-q"]).assert().success();
    let json = t.path().join("many.json");
    framepipe().args(["process", &many, "-o", &out, "--skip-existing", "-q", "--json"]).arg(&json).assert().success();
    let report: serde_json::Value = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["existing_frames"], "1-49x2");
    assert!(report["existing_list"].as_str().unwrap().ends_with("(25 numbers in all)"), "{}", report["existing_list"]);
    assert_eq!((report["unwritten_frames"].as_str(), report["missing_frames"].as_str()), (Some(""), Some("")));
    // A file of the user's under a report's name is not a report to
    // replace, nor is another run's report (here the first loop's, which
    // wrote to another folder): kept, and the run refused up front.
    let out = t.path().join("resumed-true/o_%02d.png").display().to_string();
    for (flag, report) in [("--json", "r-false.json"), ("--timeline", "t-false.svg")] {
        let theirs = t.path().join(report);
        let before = fs::read(&theirs).unwrap();
        let mut resume = framepipe();
        resume.args(["process", &input, "-o", &out, "--skip-existing", flag]).arg(&theirs);
        resume.assert().code(2).stderr(contains("the report of the run this resumes"));
        assert_eq!(fs::read(&theirs).unwrap(), before);
    }
    for (flag, name) in [("--json", "notes.json"), ("--timeline", "drawing.svg")] {
        let mine = t.path().join(name);
        fs::write(&mine, "{\"input\": \"mine\"}").unwrap();
        let mut resume = framepipe();
        resume.args(["process", &input, "-o", &out, "--skip-existing", flag]).arg(&mine);
        let refused =
            format!("invalid {flag} {} (expected a new file, or the report of the run this resumes", mine.display());
        resume.assert().code(2).stderr(contains(refused));
        assert_eq!(fs::read_to_string(&mine).unwrap(), "{\"input\": \"mine\"}");
    }
    // Nothing left to do is not an error; a stream has nothing to keep,
    // and replacing and keeping at once is a contradiction.
    let out = t.path().join("resumed-false/o_%02d.png").display().to_string();
    framepipe().args(["process", &input, "-o", &out, "--skip-existing"]).assert().success();
    usage_error(&["process", &input, "-o", "-", "--skip-existing"], "invalid --skip-existing with a stream output");
    usage_error(&["process", &input, "-o", &out, "--skip-existing", "--overwrite"], "cannot be used with");
    // Kept only if it is a frame: not an empty file, not a link to nothing.
    let dir = t.path().join("resumed-false");
    fs::write(dir.join("o_05.png"), b"").unwrap();
    usage_error(&["process", &input, "-o", &out, "--skip-existing"], "o_05.png: exists but is not a frame");
    // Nor a copy cut short after its header (an interrupted copy).
    let whole = fs::read(dir.join("o_04.png")).unwrap();
    fs::write(dir.join("o_05.png"), &whole[..whole.len() - 12]).unwrap();
    usage_error(&["process", &input, "-o", &out, "--skip-existing"], "(truncated: no IEND chunk)");
    // Nor another format under its name, nor another size than the run
    // renders (24x16): not this render's frame.
    let pixels = image::RgbaImage::from_fn(24, 16, |x, y| image::Rgba([x as u8 * 9, y as u8 * 13, 77, 255]));
    pixels.save_with_format(dir.join("o_05.png"), image::ImageFormat::Qoi).unwrap();
    usage_error(&["process", &input, "-o", &out, "--skip-existing"], "(its content is QOI, its name says PNG)");
    image::imageops::crop_imm(&pixels, 0, 0, 20, 16).to_image().save(dir.join("o_05.png")).unwrap();
    usage_error(&["process", &input, "-o", &out, "--skip-existing"], "(20x16, not the 24x16 this run renders)");
    // Several such: the first with its reason, the others named, in one run.
    fs::write(dir.join("o_02.png"), b"").unwrap();
    fs::write(dir.join("o_03.png"), &whole[..40]).unwrap();
    usage_error(
        &["process", &input, "-o", &out, "--skip-existing"],
        "o_02.png: exists but is not a frame to keep (an empty file); remove it to render it again; nor are the outputs of 2 other frames: 3,5",
    );
    fs::write(dir.join("o_02.png"), &whole).unwrap();
    fs::write(dir.join("o_03.png"), &whole).unwrap();
    #[cfg(unix)]
    {
        fs::remove_file(dir.join("o_05.png")).unwrap();
        std::os::unix::fs::symlink("nowhere.png", dir.join("o_05.png")).unwrap();
        usage_error(
            &["process", &input, "-o", &out, "--skip-existing"],
            "o_05.png: exists but is not a frame to keep (a link to nothing)",
        );
    }
}

/// A resumed run renders the frames left as the whole run did: at the
/// size of the first frame asked, a kept one too, so a source of another
/// size fails as it did, rather than setting the size of the rest.
#[test]
fn a_resumed_run_keeps_the_whole_runs_frame_size() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), "s_%02d.png", 1, 4, PixelFormat::Rgba8);
    let odd = image::RgbaImage::from_fn(20, 16, |x, y| image::Rgba([x as u8 * 7, y as u8 * 11, 90, 255]));
    odd.save(t.path().join("s_03.png")).unwrap();
    for sequential in [false, true] {
        let out = t.path().join(format!("o-{sequential}/o_%02d.png")).display().to_string();
        let run = |extra: &[&str]| {
            let mut cmd = framepipe();
            cmd.args(["process", &input, "-o", &out, "--backend", "cpu", "--on-error", "skip"]).args(extra);
            if sequential {
                cmd.arg("--sequential");
            }
            cmd.assert().code(1).stderr(contains("is 20x16 8-bit but the sequence is 24x16 8-bit"))
        };
        run(&[]);
        run(&["--skip-existing"]);
        let dir = t.path().join(format!("o-{sequential}"));
        assert!(!dir.join("o_03.png").exists(), "sequential {sequential}");
        assert_eq!(files(&dir), ["o_01.png", "o_02.png", "o_04.png"]);
    }
}

#[test]
fn existing_outputs_and_inputs_are_never_overwritten() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), "s_%02d.png", 1, 2, PixelFormat::Rgba8);
    let before = fs::read(t.path().join("s_01.png")).unwrap();
    // Output == input is refused even with --overwrite.
    framepipe()
        .args(["process", &input, "-o", &input, "--overwrite", "--exposure", "1"])
        .assert()
        .code(2)
        .stderr(contains("also an input"));
    assert_eq!(fs::read(t.path().join("s_01.png")).unwrap(), before);
    let out = t.path().join("o/s_%02d.png").display().to_string();
    fs::create_dir(t.path().join("o")).unwrap();
    fs::write(t.path().join("o/s_02.png"), b"precious").unwrap();
    framepipe()
        .args(["process", &input, "-o", &out])
        .assert()
        .code(2)
        .stderr(contains("s_02.png: output exists (use --overwrite to replace it)"));
    assert_eq!(fs::read(t.path().join("o/s_02.png")).unwrap(), b"precious");
    assert_eq!(files(&t.path().join("o")), ["s_02.png"]);
    // Replaced, it keeps its permissions (private stays private).
    #[cfg(unix)]
    let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    #[cfg(unix)]
    fs::set_permissions(t.path().join("o/s_02.png"), private).unwrap();
    framepipe().args(["process", &input, "-o", &out, "--overwrite", "-q"]).assert().success();
    assert_ne!(fs::read(t.path().join("o/s_02.png")).unwrap(), b"precious");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(t.path().join("o/s_02.png")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A read-only file is one not to be replaced (an approved frame):
    // refused up front even with --overwrite, nothing written.
    let approved = t.path().join("o/s_02.png");
    let kept = fs::read(&approved).unwrap();
    let mut read_only = fs::metadata(&approved).unwrap().permissions();
    read_only.set_readonly(true);
    fs::set_permissions(&approved, read_only).unwrap();
    fs::remove_file(t.path().join("o/s_01.png")).unwrap();
    framepipe()
        .args(["process", &input, "-o", &out, "--overwrite", "--exposure", "1"])
        .assert()
        .code(2)
        .stderr(contains("s_02.png: is read-only (or not this user's to write), so it is not replaced"));
    assert_eq!(fs::read(&approved).unwrap(), kept);
    assert_eq!(files(&t.path().join("o")), ["s_02.png"]);
    // Write bits for the group only: not the owner's to write (root may).
    #[cfg(unix)]
    if unsafe { libc::geteuid() } != 0 {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&approved, fs::Permissions::from_mode(0o464)).unwrap();
        framepipe()
            .args(["process", &input, "-o", &out, "--overwrite", "--exposure", "1"])
            .assert()
            .code(2)
            .stderr(contains("s_02.png: is read-only (or not this user's to write)"));
        assert_eq!(fs::read(&approved).unwrap(), kept);
    }
    // (Writable again, or Windows could not remove the folder after.)
    let mut writable = fs::metadata(&approved).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    writable.set_readonly(false);
    fs::set_permissions(&approved, writable).unwrap();
    // A folder where a frame would go is refused before any frame, even
    // with --overwrite.
    fs::create_dir(t.path().join("d")).unwrap();
    fs::create_dir(t.path().join("d/s_02.png")).unwrap();
    let into = t.path().join("d/s_%02d.png").display().to_string();
    framepipe()
        .args(["process", &input, "-o", &into, "--overwrite"])
        .assert()
        .code(2)
        .stderr(contains("s_02.png: names a folder; an output must be a file"));
    assert_eq!(files(&t.path().join("d")), ["s_02.png"]);
}

#[test]
fn reports_never_land_on_inputs_outputs_or_existing_files() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), "s_%02d.png", 1, 2, PixelFormat::Rgba8);
    let source = t.path().join("s_01.png");
    let before = fs::read(&source).unwrap();
    let out = t.path().join("o/s_%02d.png").display().to_string();
    let run = |extra: &[&str]| {
        let mut cmd = framepipe();
        cmd.args(["process", &input, "-o", &out, "--exposure", "1", "-q"]).args(extra);
        cmd.assert()
    };
    // Refused up front (exit 2, no frame written), even with --overwrite.
    for flag in ["--json", "--timeline"] {
        run(&[flag, source.to_str().unwrap(), "--overwrite"]).code(2).stderr(contains("s_01.png: also an input;"));
        let output = t.path().join("o/s_02.png");
        run(&[flag, output.to_str().unwrap()]).code(2).stderr(contains("s_02.png: also an output;"));
        // Another spelling of the same file is the same file.
        let roundabout = t.path().join("o/../o/s_02.png");
        run(&[flag, roundabout.to_str().unwrap(), "--overwrite"]).code(2).stderr(contains("also an output;"));
    }
    // The preset a run reads is an input too.
    let preset = t.path().join("grade.toml");
    fs::write(&preset, "[[op]]\ntype = \"exposure\"\nstops = 0.5\n").unwrap();
    framepipe()
        .args(["process", &input, "-o", &out, "-q", "--preset", preset.to_str().unwrap()])
        .args(["--json", preset.to_str().unwrap(), "--overwrite"])
        .assert()
        .code(2)
        .stderr(contains("grade.toml: also an input;"));
    assert!(fs::read_to_string(&preset).unwrap().contains("exposure"));
    // bench-pool's table and chart are held to the same rules, up front.
    framepipe()
        .args(["bench-pool", &input, "--backend", "cpu", "--pools", "1", "--repeat", "1", "--overwrite"])
        .args(["--csv", source.to_str().unwrap()])
        .assert()
        .code(2)
        .stderr(contains("s_01.png: also an input;"));
    let csv = t.path().join("b.csv");
    let same = t.path().join("o/../b.csv");
    framepipe()
        .args(["bench-pool", &input, "--backend", "cpu", "--pools", "1", "--repeat", "1"])
        .args(["--csv", csv.to_str().unwrap(), "--chart", same.to_str().unwrap()])
        .assert()
        .code(2)
        .stderr(contains("also an output;"));
    assert_eq!(fs::read(&source).unwrap(), before);
    assert!(!t.path().join("o").exists() || files(&t.path().join("o")).is_empty());
    let notes = t.path().join("notes.json");
    fs::write(&notes, b"precious").unwrap();
    run(&["--json", notes.to_str().unwrap()]).code(2).stderr(contains("notes.json: output exists"));
    assert_eq!(fs::read(&notes).unwrap(), b"precious");
    let same = t.path().join("r.txt");
    let same = same.to_str().unwrap();
    run(&["--json", same, "--timeline", same]).code(2).stderr(contains("also the --json report"));
    // Names swapped between reports would write each as the other.
    run(&["--json", "r.svg"]).code(2).stderr(contains("--json r.svg (expected a name for the JSON report (.json)"));
    run(&["--timeline", "t.JSON"]).code(2).stderr(contains("not a .json name"));
    framepipe()
        .args(["bench-pool", &input, "--backend", "cpu", "--pools", "1", "--repeat", "1"])
        .args(["--csv", "b.svg", "--chart", "b.csv"])
        .assert()
        .code(2)
        .stderr(contains("--csv b.svg (expected a name for the CSV table (.csv), not a .svg name)"));
    // A folder for the report is made; the report is complete and alone.
    let json = t.path().join("reports/r.json");
    let svg = t.path().join("reports/t.svg");
    run(&["--json", json.to_str().unwrap(), "--timeline", svg.to_str().unwrap()]).success();
    serde_json::from_str::<serde_json::Value>(&fs::read_to_string(&json).unwrap()).unwrap();
    assert!(fs::read_to_string(&svg).unwrap().trim_end().ends_with("</svg>"));
    assert_eq!(files(&t.path().join("reports")), ["r.json", "t.svg"]);
    // --overwrite replaces an earlier report (and the frames).
    run(&["--json", notes.to_str().unwrap(), "--overwrite"]).success();
    assert_ne!(fs::read(&notes).unwrap(), b"precious");
    // Never a link into /proc or /dev (where /dev/stdout leads to a plain
    // file when stdout is redirected to one), nor a pipe: a rename would
    // replace it with a file.
    let link = t.path().join("err.json");
    std::os::unix::fs::symlink("/proc/self/fd/2", &link).unwrap();
    let fifo = t.path().join("fifo.json");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    for special in [link.as_path(), fifo.as_path(), Path::new("/dev/stdout")] {
        run(&["--json", special.to_str().unwrap(), "--overwrite"]).code(2).stderr(contains("not a plain file"));
    }
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert!(fs::symlink_metadata("/dev/stdout").unwrap().file_type().is_symlink());
    // A new name there is refused for the folder it is in, with that reason.
    for new in ["/dev/framepipe-test.json", "/proc/framepipe-test.json"] {
        run(&["--json", new, "--overwrite"]).code(2).stderr(contains("it is a system folder (/proc, /dev)"));
        assert!(!Path::new(new).exists());
    }
    // bench-pool prints its table on stdout: its files are files.
    framepipe()
        .args(["bench-pool", &input, "--backend", "cpu", "--pools", "1", "--repeat", "1", "--csv", "-"])
        .assert()
        .code(2)
        .stderr(contains("invalid --csv -"));
}

/// Every file the input matches is a source, selected by `--frames` or
/// not, under any of its names (a hard link too), and so is the preset:
/// no frame, report or stream lands on one, whatever `--overwrite` says.
#[test]
fn sources_are_protected_outside_the_selection_and_under_every_name() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), "s_%02d.png", 1, 3, PixelFormat::Rgba8);
    let other = t.path().join("s_03.png");
    let before = fs::read(&other).unwrap();
    let (other_s, input_s) = (other.to_str().unwrap(), input.as_str());
    let base = ["process", input_s, "--frames", "1", "--exposure", "1", "--overwrite", "-q"];
    let refused = |extra: &[&str], expect: &str| {
        framepipe().args(base).args(extra).assert().code(2).stderr(contains(expect));
    };
    refused(&["-o", other_s], "s_03.png: output path is also an input");
    let out = t.path().join("o/s_%02d.png").display().to_string();
    refused(&["-o", &out, "--json", other_s], "s_03.png: also an input;");
    let hard = t.path().join("h/s_01.png");
    fs::create_dir(t.path().join("h")).unwrap();
    fs::hard_link(t.path().join("s_01.png"), &hard).unwrap();
    refused(&["-o", t.path().join("h/s_%02d.png").to_str().unwrap()], "s_01.png: output path is also an input");
    let preset = t.path().join("grade.png");
    fs::write(&preset, "[[op]]\ntype = \"exposure\"\nstops = 0.5\n").unwrap();
    framepipe()
        .args(["process", &t.path().join("s_01.png").display().to_string(), "--overwrite", "-q"])
        .args(["-o", preset.to_str().unwrap(), "--preset", preset.to_str().unwrap()])
        .assert()
        .code(2)
        .stderr(contains("grade.png: output path is also an input"));
    assert!(fs::read_to_string(&preset).unwrap().contains("exposure"));
    // A stream into a source, through the shell's redirection.
    let stdout = fs::OpenOptions::new().append(true).open(&other).unwrap();
    let status = std::process::Command::new(assert_cmd::cargo::cargo_bin("framepipe"))
        .args(["process", input_s, "-o", "-", "-q"])
        .stdout(stdout)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
    assert_eq!(fs::read(&other).unwrap(), before);
    assert!(!t.path().join("o").exists(), "nothing was written");
    // A report that stdout is redirected to would be renamed over the
    // stream (or bench-pool's table) at the end.
    let report = t.path().join("same.txt");
    for (args, flag) in [
        (vec!["process", input_s, "-o", "-", "--overwrite", "--json"], "--json"),
        (vec!["bench-pool", input_s, "--pools", "1", "--repeat", "1", "--overwrite", "--csv"], "--csv"),
    ] {
        let output = std::process::Command::new(assert_cmd::cargo::cargo_bin("framepipe"))
            .args(&args)
            .arg(&report)
            .args(["--backend", "cpu"])
            .stdout(fs::File::create(&report).unwrap())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(&format!("invalid {flag} ")) && stderr.contains("stdout is redirected"), "{stderr}");
    }
    // So would an output frame over a report written to stdout.
    let frame = t.path().join("f/o_02.png");
    fs::create_dir_all(frame.parent().unwrap()).unwrap();
    let out = t.path().join("f/o_%02d.png").display().to_string();
    for flag in ["--json", "--timeline"] {
        let output = std::process::Command::new(assert_cmd::cargo::cargo_bin("framepipe"))
            .args(["process", input_s, "-o", &out, "--overwrite", "--backend", "cpu", flag, "-"])
            .stdout(fs::File::create(&frame).unwrap())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("invalid stdout (redirected to ") && stderr.contains("o_02.png"), "{stderr}");
        assert_eq!(files(frame.parent().unwrap()), ["o_02.png"], "no frame written");
    }
    // Nor is a report appended (`>>`) to a finished frame a resumed run
    // keeps.
    let done = t.path().join("done/o_%02d.png").display().to_string();
    framepipe().args(["process", input_s, "-o", &done, "--backend", "cpu", "-q"]).assert().success();
    let kept = t.path().join("done/o_01.png");
    let before = fs::read(&kept).unwrap();
    let output = std::process::Command::new(assert_cmd::cargo::cargo_bin("framepipe"))
        .args(["process", input_s, "-o", &done, "--skip-existing", "--backend", "cpu", "--json", "-"])
        .stdout(fs::OpenOptions::new().append(true).open(&kept).unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("invalid stdout (redirected to ") && stderr.contains("o_01.png"), "{stderr}");
    assert_eq!(fs::read(&kept).unwrap(), before, "the kept frame is as it was");
}

/// Report names that can only fail once the frames are done (a folder's
/// name) or that would pass for a frame are refused before any frame.
#[test]
fn report_names_that_cannot_work_are_refused_up_front() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), "s_%02d.png", 1, 2, PixelFormat::Rgba8);
    let out = t.path().join("o/s_%02d.png").display().to_string();
    let dir = t.path().join("reports/").display().to_string() + "/";
    for (flag, name, expect) in [
        ("--json", dir.as_str(), "names a folder"),
        ("--timeline", "t.svg/.", "names a folder"),
        ("--timeline", "t.png", "invalid --timeline t.png (expected a name for the SVG timeline"),
        ("--json", "r.TIF", "invalid --json r.TIF"),
    ] {
        usage_error(&["process", &input, "-o", &out, flag, name], expect);
    }
    usage_error(&["bench-pool", &input, "--chart", "c.png"], "invalid --chart c.png");
    // Outputs too: a trailing `/` would otherwise be dropped (a pattern) or
    // found only when the frame is written (one file).
    let one = t.path().join("s_01.png").display().to_string();
    let slip = format!("names a folder; for frames named so, leave out the final separator ({out})");
    let folder = "names a folder; name the output files in it, as ".to_string();
    for (input, output, said) in
        [(&input, format!("{out}/"), slip), (&one, t.path().join("o/x.png/.").display().to_string(), folder)]
    {
        usage_error(&["process", input, "-o", &output], &said);
    }
    // A folder that is there: named with the input's names, in a folder
    // of its own where it is the sources' (their names are taken there).
    let said =
        |folder: &str, example: &str| format!("{folder}: names a folder; name the output files in it, as {example}");
    let here = t.path().display().to_string();
    usage_error(&["process", &input, "-o", &here], &said(&here, &format!("{here}/graded/s_%02d.png")));
    let other = t.path().join("other");
    fs::create_dir(&other).unwrap();
    let other = other.display().to_string();
    usage_error(&["process", &input, "-o", &other], &said(&other, &format!("{other}/s_%02d.png")));
    usage_error(&["generate", "--size", "8x8", "--frames", "2", "-o", &format!("{out}/")], "names a folder");
    usage_error(&["generate", "--size", "8x8", "--frames", "2", "-o", "-"], "generate writes files, not a stream");
    assert!(!t.path().join("o").exists() && !t.path().join("reports").exists());
}

/// A report that cannot be written once the frames are (its name taken
/// while the run went on) fails the run, exit 1, not a usage error, and
/// what the user put there stays.
#[test]
fn a_report_that_cannot_be_written_at_the_end_fails_the_run() {
    let t = tempfile::tempdir().unwrap();
    // Frames large enough that the run outlasts the test's write by far.
    let input = t.path().join("s_%02d.png").display().to_string();
    let opts = GenerateOptions { width: 256, height: 256, frames: 40, ..Default::default() };
    generate_sequence(&opts, &input, &EncodeOptions::default(), false).unwrap();
    let out = t.path().join("o/s_%02d.png").display().to_string();
    let json = t.path().join("run.json");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("framepipe"))
        .args(["process", &input, "-o", &out, "--backend", "cpu", "--threads", "1", "--blur", "30", "-q"])
        .arg("--json")
        .arg(&json)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !t.path().join("o/s_01.png").exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before its first frame");
        assert!(std::time::Instant::now() < deadline, "no frame in 2 minutes");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    fs::write(&json, "the user's notes").unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("run.json: output exists"), "{stderr}");
    assert_eq!(files(&t.path().join("o")).len(), 40, "every frame written");
    assert_eq!(fs::read_to_string(&json).unwrap(), "the user's notes");
}

/// A file name with a newline in it still makes a one-line error.
#[test]
fn control_characters_in_names_stay_on_one_line() {
    let t = tempfile::tempdir().unwrap();
    let name = t.path().join("no\nsuch_%02d.png").display().to_string();
    usage_error(&["process", &name, "-o", "o_%02d.png"], "no\\nsuch_%02d.png");
}

/// Frame numbers as long as a u64 allows are read back as written.
#[test]
fn twenty_digit_frame_numbers_round_trip() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), "b_%04d.png", 10_000_000_000_000_000_000, 2, PixelFormat::Rgba8);
    let out = t.path().join("o/b_%04d.png").display().to_string();
    framepipe().args(["process", &input, "-o", &out, "-q"]).assert().success();
    assert_eq!(files(&t.path().join("o")), ["b_10000000000000000000.png", "b_10000000000000000001.png"]);
    // The last frame number a u64 holds can be generated.
    let last = t.path().join("l/l_%d.png").display().to_string();
    framepipe()
        .args(["generate", "--size", "8x8", "--frames", "1", "--start", &u64::MAX.to_string(), "-o", &last])
        .assert()
        .success();
    assert_eq!(files(&t.path().join("l")), [format!("l_{}.png", u64::MAX)]);
    // A file named like a frame whose number no u64 holds is named, by a
    // pattern or in a folder, not left out without a word.
    let first = t.path().join("b_10000000000000000000.png");
    fs::copy(&first, t.path().join("b_99999999999999999999.png")).unwrap();
    for input in [input.clone(), t.path().display().to_string()] {
        usage_error(&["process", &input, "-o", &out, "--overwrite"], "b_99999999999999999999.png: a frame number");
    }
    // Named alone it is a still (its digits a timestamp, say): processed.
    let alone = t.path().join("b_99999999999999999999.png").display().to_string();
    let still = t.path().join("still.png");
    framepipe().args(["process", &alone, "-o"]).arg(&still).args(["--backend", "cpu", "-q"]).assert().success();
    assert!(still.is_file());
}

/// A frame whose name is not UTF-8 is named in a folder scan, not left out.
#[cfg(unix)]
#[test]
fn a_folder_frame_whose_name_is_not_utf8_is_refused_by_name() {
    use std::os::unix::ffi::OsStrExt;
    let t = tempfile::tempdir().unwrap();
    sequence(t.path(), "s_%02d.png", 1, 2, PixelFormat::Rgba8);
    let odd = t.path().join(std::ffi::OsStr::from_bytes(b"s_\xff03.png"));
    if fs::copy(t.path().join("s_01.png"), &odd).is_err() {
        return; // a file system that takes only UTF-8 names
    }
    let out = t.path().join("o/s_%02d.png").display().to_string();
    usage_error(&["process", &t.path().display().to_string(), "-o", &out], "03.png: the file name is not UTF-8");
    // One with no digit could be no frame: left out, as a UTF-8 one is.
    fs::rename(&odd, t.path().join(std::ffi::OsStr::from_bytes(b"thumb\xe9.png"))).unwrap();
    framepipe().args(["process", &t.path().display().to_string(), "-o", &out, "-q"]).assert().success();
    fs::remove_dir_all(t.path().join("o")).unwrap();
    // A pattern is text: such a name cannot be one of its frames.
    let pattern = t.path().join("s_%02d.png").display().to_string();
    framepipe().args(["process", &pattern, "-o", &out, "-q"]).assert().success();
}

#[test]
fn inputs_framepipe_cannot_read_are_refused_by_name() {
    let t = tempfile::tempdir().unwrap();
    let notes = t.path().join("readme.txt");
    fs::write(&notes, "not a frame").unwrap();
    let out = t.path().join("o.png").display().to_string();
    for input in [notes.display().to_string(), t.path().join("s_%04d.exr").display().to_string()] {
        framepipe()
            .args(["process", &input, "-o", &out, "--backend", "cpu"])
            .assert()
            .code(2)
            .stderr(contains(": not an image framepipe reads (one of .png,"));
    }
    let many = t.path().join("g/z_%04d.png").display().to_string();
    framepipe()
        .args(["generate", "--size", "16x16", "--frames", "100000000", "-o", &many])
        .assert()
        .code(2)
        .stderr(contains("100000000 is not in 1..=10000000"));
    assert!(!t.path().join("g").exists());
}

#[test]
fn a_frame_number_after_the_last_dot_is_no_extension() {
    // A cache's files: `cache.0001`, read by their content.
    let t = tempfile::tempdir().unwrap();
    let png = sequence(t.path(), "p_%d.png", 1, 2, PixelFormat::Rgba8);
    for n in 1..=2 {
        fs::rename(png.replace("%d", &n.to_string()), t.path().join(format!("cache.{n:04}"))).unwrap();
    }
    let cases = [
        ("cache.####", "a/o_%04d.png"),
        ("cache.%04d", "b/o_%04d.png"),
        ("cache.0002", "c/o.png"),
        // Alone, it is frame 2 as through a pattern.
        ("cache.0002", "d/o_%04d.png"),
    ];
    for (input, out) in cases {
        let input = t.path().join(input).display().to_string();
        let out = t.path().join(out).display().to_string();
        framepipe().args(["process", &input, "-o", &out, "--backend", "cpu", "-q"]).assert().success();
    }
    assert!(t.path().join("a/o_0002.png").exists() && t.path().join("b/o_0001.png").exists());
    assert!(t.path().join("c/o.png").exists() && t.path().join("d/o_0002.png").exists());
    // An output's name must say its format, a frame number after the
    // last dot being none.
    for (input, out) in [("cache.%04d", "o_%d"), ("cache.%04d", "o.%04d"), ("cache.0002", "o")] {
        let input = t.path().join(input).display().to_string();
        let out = t.path().join(out).display().to_string();
        let said = format!("invalid output {out} (expected a name ending in .png, .jpg, .jpeg, .tif, .tiff or .qoi");
        usage_error(&["process", &input, "-o", &out], &said);
    }
}

#[test]
fn json_report_and_farm_log_lines() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), "s_%02d.png", 5, 3, PixelFormat::Rgba8);
    let out = t.path().join("o/s_%02d.png").display().to_string();
    let json: PathBuf = t.path().join("r.json");
    // stderr is a pipe here: one plain line per frame, no progress bar.
    framepipe()
        .args(["process", &input, "-o", &out, "--blur", "2", "--json", json.to_str().unwrap()])
        .assert()
        .success()
        .stderr(contains("frame 5 written").and(contains("frame 7 written")));
    let report: serde_json::Value = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["frames_written"], 3);
    assert_eq!(report["frame"], "24x16 RGBA8");
    assert_eq!(report["sources"], "RGBA 8-bit");
    assert!(report["fps"].as_f64().unwrap() > 0.0);
    assert_eq!(report["frames"].as_array().unwrap().len(), 3);
}

#[test]
fn generate_and_info() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("g_%03d.png").display().to_string();
    framepipe().args(["generate", "--size", "40x30", "--frames", "2", "--start", "7", "-o", &out]).assert().success();
    let a = decode(&t.path().join("g_007.png"));
    let b = decode(&t.path().join("g_008.png"));
    assert_eq!((a.width, a.height), (40, 30));
    assert_ne!(a, b, "frames move");
    let distinct: std::collections::HashSet<u8> = a.data.iter().copied().collect();
    assert!(distinct.len() > 20, "not flat");
    framepipe().args(["generate", "--size", "nope", "-o", &out]).assert().code(2).stderr(contains("invalid size"));
    framepipe()
        .args(["generate", "--size", "32768x32768", "--depth", "16", "-o", &out])
        .assert()
        .code(2)
        .stderr(contains("invalid frame size 32768x32768 at 16 bits (8.00 GiB)"));
    // A size the output format cannot hold, at once, before any frame.
    let qoi = t.path().join("q/q_%d.qoi").display().to_string();
    framepipe()
        .args(["generate", "--size", "20001x20000", "-o", &qoi])
        .assert()
        .code(2)
        .stderr(contains("invalid frame size for QOI output 20001x20000"));
    assert!(!t.path().join("q").exists());
    // An existing frame stops generate before it writes anything.
    fs::write(t.path().join("g_012.png"), b"mine").unwrap();
    framepipe()
        .args(["generate", "--size", "40x30", "--frames", "8", "--start", "9", "-o", &out])
        .assert()
        .code(2)
        .stderr(contains("g_012.png: output exists"));
    assert_eq!(files(t.path()), ["g_007.png", "g_008.png", "g_012.png"]);
    let last = u64::MAX.to_string();
    framepipe()
        .args(["generate", "--size", "40x30", "--frames", "2", "--start", &last, "-o", &out])
        .assert()
        .code(2)
        .stderr(contains("invalid start frame"));
    // Any seed works, the largest too.
    let big = t.path().join("big/b_%d.png").display().to_string();
    let seed = u64::MAX.to_string();
    framepipe().args(["generate", "--size", "8x8", "--frames", "1", "--seed", &seed, "-o", &big]).assert().success();
    framepipe().arg("info").assert().success().stdout(contains("auto picks"));
}

/// An option the run has no use for is said, as FFmpeg says an option
/// went unused, rather than dropped without a word.
#[test]
fn unused_options_are_said() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), "s_%02d.png", 1, 2, PixelFormat::Rgba8);
    let out = |name: &str| t.path().join(name).display().to_string();
    let cases: [(Vec<String>, &str); 4] = [
        (
            vec!["-o".into(), out("a/s_%02d.tif"), "--png-compression".into(), "best".into()],
            "--png-compression is unused: the output is tiff",
        ),
        (
            vec!["-o".into(), out("b/s_%02d.png"), "--jpeg-quality".into(), "80".into()],
            "--jpeg-quality is unused: the output is png",
        ),
        (
            vec!["-o".into(), out("c/s_%02d.png"), "--pool".into(), "3".into(), "--sequential".into()],
            "--pool is unused: --sequential",
        ),
        (vec!["-o".into(), "-".into(), "--overwrite".into()], "--overwrite is unused: -o - and no report file"),
    ];
    for (args, notice) in cases {
        framepipe()
            .args(["process", &input, "--backend", "cpu"])
            .args(&args)
            .assert()
            .success()
            .stderr(contains(format!("notice: {notice}")));
    }
    // With a report file, --overwrite has a use beside -o -.
    let report = out("r.json");
    framepipe()
        .args(["process", &input, "--backend", "cpu", "-o", "-", "--overwrite", "--json", &report])
        .assert()
        .success()
        .stderr(contains("is unused").not());
    // A budget is of use on the GPU only to a grade that goes there.
    if crate::util::gpu(Default::default()).is_none() {
        return;
    }
    let gpu = ["process", &input, "-o", "-", "--backend", "gpu", "--vram-budget", "1GiB"];
    let notice = "--vram-budget is unused: the grade changes nothing, so no frame goes to the GPU";
    framepipe().args(gpu).args(["--exposure", "0"]).assert().success().stderr(contains(notice));
    framepipe().args(gpu).args(["--blur", "1"]).assert().success().stderr(contains("is unused").not());
}

/// A full disk or a closed pipe on stdout or stderr is an error or the
/// end of the output, never a panic (exit 101).
#[test]
fn full_or_closed_standard_streams_never_panic() {
    let Ok(full) = fs::OpenOptions::new().write(true).open("/dev/full") else { return };
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), "s_%02d.png", 1, 3, PixelFormat::Rgba8);
    let out = t.path().join("o/s_%02d.png").display().to_string();
    let bin = || std::process::Command::new(assert_cmd::cargo::cargo_bin("framepipe"));
    let info = bin().arg("info").stdout(full.try_clone().unwrap()).output().unwrap();
    assert_eq!(info.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&info.stderr);
    assert!(stderr.starts_with("error: stdout: No space left") && stderr.lines().count() == 1, "{stderr}");
    let help = bin().arg("--help").stdout(full.try_clone().unwrap()).output().unwrap();
    assert_eq!(help.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&help.stderr).starts_with("error: stdout: No space left"));
    let args = ["process", &input, "-o", &out, "--backend", "cpu"];
    let run = bin().args(args).stderr(full).status().unwrap();
    assert_eq!(run.code(), Some(0));
    assert_eq!(files(&t.path().join("o")).len(), 3);
}

#[test]
fn stdout_reports_and_stream_formats() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), "s_%02d.png", 1, 2, PixelFormat::Rgba8);
    let out = t.path().join("o/s_%02d.png").display().to_string();
    // `--json -` writes the report to stdout, and no file named `-`.
    let run = framepipe().current_dir(t.path()).args(["process", &input, "-o", &out, "--json", "-"]).assert().success();
    let report: serde_json::Value = serde_json::from_slice(&run.get_output().stdout).unwrap();
    assert_eq!(report["frames_written"], 2);
    assert!(!t.path().join("-").exists());
    // A reader that closed stdout before the report came lost it: exit 1.
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("framepipe"))
        .args(["process", &input, "-o", &t.path().join("c/s_%02d.png").display().to_string(), "--json", "-", "-q"])
        .args(["--backend", "cpu"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let lost = child.wait_with_output().unwrap();
    assert_eq!(lost.status.code(), Some(1), "{}", String::from_utf8_lossy(&lost.stderr));
    assert!(String::from_utf8_lossy(&lost.stderr).contains("error: stdout"));
    // Not when stdout carries the frames, and not both reports at once.
    framepipe()
        .args(["process", &input, "-o", "-", "--json", "-"])
        .assert()
        .code(2)
        .stderr(contains("invalid --json -"));
    let out2 = t.path().join("p/s_%02d.png").display().to_string();
    framepipe()
        .args(["process", &input, "-o", &out2, "--json", "-", "--timeline", "-"])
        .assert()
        .code(2)
        .stderr(contains("invalid --timeline -"));
    // FFmpeg cannot split concatenated TIFFs: not offered, not streamed.
    framepipe()
        .args(["process", &input, "-o", "-", "--stream-format", "tiff"])
        .assert()
        .code(2)
        .stderr(contains("invalid value 'tiff'"));
    // An adapter named for the CPU backend is a contradiction.
    framepipe()
        .args(["process", &input, "-o", &out2, "--backend", "cpu", "--adapter", "x"])
        .assert()
        .code(2)
        .stderr(contains("invalid --adapter \"x\""));
    assert!(files(&t.path().join("p")).is_empty());
}

/// A refused or fruitless command leaves no empty folders behind; folders
/// that were there, or that got files, stay.
#[test]
fn folders_made_for_nothing_are_removed() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), "s_%02d.png", 1, 2, PixelFormat::Rgba8);
    let out = |d: &str| t.path().join(d).join("deeper/s_%02d.png").display().to_string();
    // A check after the folders were made: the report would replace a frame.
    let frame = t.path().join("s_01.png");
    framepipe()
        .args(["process", &input, "-o", &out("a"), "--json", frame.to_str().unwrap(), "--overwrite"])
        .assert()
        .code(2);
    assert!(!t.path().join("a").exists(), "refused: no folder left");
    // Every frame fails: nothing written, no folder.
    let broken = t.path().join("broken");
    fs::create_dir(&broken).unwrap();
    for n in 1..=2 {
        fs::write(broken.join(format!("b_{n:02}.png")), b"not a png").unwrap();
    }
    let pattern = broken.join("b_%02d.png").display().to_string();
    framepipe().args(["process", &pattern, "-o", &out("b"), "--on-error", "skip", "-q"]).assert().code(1);
    assert!(!t.path().join("b").exists(), "nothing written: no folder left");
    // A report in a folder of its own that the run never reaches.
    let report = t.path().join("reports/run.json");
    framepipe().args(["process", &pattern, "-o", &out("c"), "--json", report.to_str().unwrap(), "-q"]).assert().code(1);
    assert!(report.exists(), "the report of a failed run is written");
    // A run that writes keeps its folders, and one there before stays.
    fs::create_dir(t.path().join("d")).unwrap();
    framepipe().args(["process", &pattern, "-o", &out("d"), "-q"]).assert().code(1);
    assert!(t.path().join("d").is_dir() && !t.path().join("d/deeper").exists());
    framepipe().args(["process", &input, "-o", &out("e"), "-q"]).assert().success();
    assert_eq!(files(&t.path().join("e/deeper")), ["s_01.png", "s_02.png"]);
}

/// A killed run's unfinished outputs go with the next run into the folder,
/// `generate`'s as `process`'s, with a notice; a user's look-alike stays.
#[test]
fn the_next_run_removes_a_killed_runs_unfinished_outputs() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), "s_%02d.png", 1, 2, PixelFormat::Rgba8);
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for (cmd, dir) in [("process", "p"), ("generate", "g")] {
        let dir = t.path().join(dir);
        fs::create_dir(&dir).unwrap();
        for name in [".framepipe-Ab12Cd.partial", ".framepipe-my notes.partial"] {
            fs::File::create(dir.join(name)).unwrap().set_modified(hour_ago).unwrap();
        }
        let out = dir.join("o_%02d.png").display().to_string();
        let args: Vec<&str> = match cmd {
            "process" => vec!["process", &input, "-o", &out, "--backend", "cpu"],
            _ => vec!["generate", "--size", "8x8", "--frames", "2", "-o", &out],
        };
        let notice = format!("notice: removed 1 unfinished output a killed run left in {}", dir.display());
        framepipe().args(args).assert().success().stderr(contains(notice));
        assert_eq!(files(&dir), [".framepipe-my notes.partial", "o_01.png", "o_02.png"], "{cmd}");
    }
}

/// A run that stopped at a failed frame says how to finish it: with
/// `--skip-existing`, or after `--overwrite` with the frames left, in place
/// of a `--frames` the command has (a second one is refused).
#[test]
fn a_stopped_run_says_the_command_that_finishes_it() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), "s_%02d.png", 1, 4, PixelFormat::Rgba8);
    fs::write(t.path().join("s_02.png"), b"not a png").unwrap();
    let out = t.path().join("o/o_%02d.png").display().to_string();
    let run = |extra: &[&str]| {
        let mut cmd = framepipe();
        cmd.args(["process", &input, "-o", &out, "--threads", "1", "--pool", "1", "--sequential", "--exposure", "1"]);
        cmd.args(extra).assert().code(1)
    };
    // (Frame 2 failed for its source: put right first.)
    let fix = "notice: once the failed frames' sources are put right,";
    run(&[])
        .stderr(contains(format!("{fix} the same command with --skip-existing processes only the frames not written")));
    run(&["--overwrite", "--frames", "1-4"])
        .stderr(contains(format!("{fix} run the same command with --frames '2-4' in place of its own")));
    run(&["--overwrite"]).stderr(contains("with --frames '2-4'\n"));
    // Under --on-error skip the failed frames are what is left; the output
    // an earlier render left for one is named, and kept.
    let earlier = t.path().join("o/o_02.png");
    fs::copy(t.path().join("s_01.png"), &earlier).unwrap();
    run(&["--overwrite", "--on-error", "skip"]).stderr(
        contains("with --frames '2'\n")
            .and(contains("o_02.png (frame 2 failed) still holds an earlier render, left as it was"))
            .and(contains("o_04.png (4/4 done, 1 failed, ")),
    );
    assert_eq!(fs::read(&earlier).unwrap(), fs::read(t.path().join("s_01.png")).unwrap());
}

/// A frame of another kind than the first (float samples, premultiplied
/// alpha), which the notices before the run could not know of, is named
/// after it and in the JSON report, pipelined and one frame at a time.
#[test]
fn later_frames_of_another_kind_are_named_after_the_run() {
    use tiff::encoder::{TiffEncoder, colortype};
    use tiff::tags::{ExtraSamples, Tag};
    let t = tempfile::tempdir().unwrap();
    fs::create_dir(t.path().join("in")).unwrap();
    let mut rng = crate::util::Rng::fresh("kinds of frames");
    let (w, h) = (9u32, 7u32);
    let mut samples = || -> Vec<u16> { (0..w * h * 4).map(|_| (rng.next() >> 48) as u16).collect() };
    let create = |n: u32| TiffEncoder::new(fs::File::create(t.path().join(format!("in/f_{n}.tif"))).unwrap()).unwrap();
    // 1: straight 16-bit; 2: floats; 3: premultiplied 16-bit.
    let mut tiff = create(1);
    let mut image = tiff.new_image::<colortype::RGBA16>(w, h).unwrap();
    image.encoder().write_tag(Tag::ExtraSamples, &[ExtraSamples::UnassociatedAlpha.to_u16()][..]).unwrap();
    image.write_data(&samples()).unwrap();
    let floats: Vec<f32> = samples().iter().map(|&v| v as f32 / 65535.0).collect();
    create(2).write_image::<colortype::RGBA32Float>(w, h, &floats).unwrap();
    let mut tiff = create(3);
    let mut image = tiff.new_image::<colortype::RGBA16>(w, h).unwrap();
    image.encoder().write_tag(Tag::ExtraSamples, &[ExtraSamples::AssociatedAlpha.to_u16()][..]).unwrap();
    image.write_data(&samples()).unwrap();
    // 4: floats of another size, which fails: no kind of frame written.
    create(4).write_image::<colortype::RGBA32Float>(w - 1, h, &floats[..((w - 1) * h * 4) as usize]).unwrap();
    // 5: a fourth channel of no stated meaning, left out.
    let mut tiff = create(5);
    let mut image = tiff.new_image::<colortype::RGBA16>(w, h).unwrap();
    image.encoder().write_tag(Tag::ExtraSamples, &[ExtraSamples::Unspecified.to_u16()][..]).unwrap();
    image.write_data(&samples()).unwrap();
    let input = t.path().join("in/f_%d.tif").display().to_string();
    for sequential in [false, true] {
        let out = t.path().join(format!("o{sequential}/o_%d.tif")).display().to_string();
        let json = t.path().join(format!("r{sequential}.json"));
        let mut cmd = framepipe();
        cmd.args(["process", &input, "-o", &out, "--exposure", "0.25", "--backend", "cpu", "--on-error", "skip"]);
        cmd.args(["--json", json.to_str().unwrap()]);
        if sequential {
            cmd.arg("--sequential");
        }
        cmd.assert()
            .code(1)
            .stderr(contains("f_4.tif: frame is 8x7"))
            .stderr(contains("notice: frame 2 holds 32-bit floats: values are clamped to 0..1"))
            .stderr(contains("notice: frame 3: its alpha is premultiplied"))
            .stderr(contains("notice: frame 5 holds extra channels of no stated meaning"))
            .stderr(contains("notice: the sources hold").not());
        let report: serde_json::Value = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!((report["float_list"].as_str(), report["premultiplied_list"].as_str()), (Some("2"), Some("3")));
        assert_eq!(report["unnamed_channels_list"].as_str(), Some("5"));
    }
}

/// Files of several images (a multi-page TIFF, an animated PNG) are read as
/// their first, and said to be: up front for the first frame, at the end
/// for a later one, and in the report.
#[test]
fn only_the_first_image_of_a_many_image_file_is_read_and_said_so() {
    let t = tempfile::tempdir().unwrap();
    let (w, h) = (6u32, 4u32);
    let page = |seed: u8| -> Vec<u8> { (0..w * h * 3).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect() };
    let pages = t.path().join("pages.tif");
    let mut tiff = tiff::encoder::TiffEncoder::new(fs::File::create(&pages).unwrap()).unwrap();
    for seed in [7, 99] {
        tiff.write_image::<tiff::encoder::colortype::RGB8>(w, h, &page(seed)).unwrap();
    }
    drop(tiff);
    let json = t.path().join("r.json");
    framepipe()
        .args(["process", pages.to_str().unwrap(), "-o", t.path().join("o.png").to_str().unwrap(), "--backend", "cpu"])
        .arg("--json")
        .arg(&json)
        .assert()
        .success()
        .stderr(contains("notice: the sources hold more than one image (a multi-page TIFF, an animated PNG)"));
    let first = decode_file(&t.path().join("o.png"), &DecodeLimits::default()).unwrap();
    let want: Vec<u8> = page(7).chunks(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
    assert_eq!(first.data, want, "the first page");
    let report: serde_json::Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["more_images_list"], "0");
    // A thumbnail written first (NewSubfileType 1) is not taken for the
    // frame: refused, saying why.
    let thumbnailed = t.path().join("thumb.tif");
    let refused = || {
        framepipe()
            .args(["process", thumbnailed.to_str().unwrap(), "-o", t.path().join("t.png").to_str().unwrap()])
            .args(["--backend", "cpu"])
            .assert()
            .code(1)
            .stderr(contains(
                "thumb.tif: cannot decode: its first image is a reduced-resolution preview (a thumbnail)",
            ));
    };
    let mut tiff = tiff::encoder::TiffEncoder::new(fs::File::create(&thumbnailed).unwrap()).unwrap();
    let mut thumb = tiff.new_image::<tiff::encoder::colortype::RGB8>(3, 2).unwrap();
    thumb.encoder().write_tag(tiff::tags::Tag::NewSubfileType, 1u32).unwrap();
    thumb.write_data(&page(3)[..18]).unwrap();
    tiff.write_image::<tiff::encoder::colortype::RGB8>(w, h, &page(7)).unwrap();
    drop(tiff);
    refused();
    // Some writers flag every page reduced: the thumbnail is still refused.
    let mut tiff = tiff::encoder::TiffEncoder::new(fs::File::create(&thumbnailed).unwrap()).unwrap();
    for (w, h, data) in [(3, 2, &page(3)[..18]), (w, h, &page(7)[..])] {
        let mut image = tiff.new_image::<tiff::encoder::colortype::RGB8>(w, h).unwrap();
        image.encoder().write_tag(tiff::tags::Tag::NewSubfileType, 1u32).unwrap();
        image.write_data(data).unwrap();
    }
    drop(tiff);
    refused();
    // An animated PNG as the second frame of a sequence: said at the end.
    let seq = t.path().join("seq");
    fs::create_dir(&seq).unwrap();
    let still = image::RgbImage::from_raw(w, h, page(1)).unwrap();
    still.save(seq.join("s_01.png")).unwrap();
    let apng = |frames: u32| {
        let mut apng = Vec::new();
        let mut encoder = png::Encoder::new(&mut apng, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_animated(frames, 0).unwrap();
        let mut writer = encoder.write_header().unwrap();
        for f in 0..frames {
            writer.write_image_data(&page(3 + f as u8)).unwrap();
        }
        drop(writer);
        apng
    };
    fs::write(seq.join("s_02.png"), apng(2)).unwrap();
    // An APNG of one frame holds its default image only: not said.
    fs::write(seq.join("s_03.png"), apng(1)).unwrap();
    let out = t.path().join("q/o_%02d.png").display().to_string();
    framepipe()
        .args(["process", &format!("{}/s_%02d.png", seq.display()), "-o", &out, "--backend", "cpu"])
        .assert()
        .success()
        .stderr(contains("notice: frame 2 holds more than one image").and(contains("the sources hold").not()));
}

/// A source's ICC profile and orientation tag are not carried to the
/// outputs nor applied: said, for the frames that have them.
#[test]
fn icc_profiles_and_orientation_tags_left_behind_are_said() {
    use image::ImageEncoder;
    let t = tempfile::tempdir().unwrap();
    let (w, h) = (6u32, 4u32);
    let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i as u8).wrapping_mul(37)).collect();
    image::RgbImage::from_raw(w, h, rgb.clone()).unwrap().save(t.path().join("s_01.png")).unwrap();
    // Frame 2: a profile, and EXIF saying "rotate 90" (orientation 6).
    let exif =
        [&b"MM\0\x2a\0\0\0\x08"[..], &[0, 1], &[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0], &[0, 0, 0, 0]].concat();
    let mut tagged = Vec::new();
    let mut encoder = image::codecs::png::PngEncoder::new(&mut tagged);
    encoder.set_icc_profile(b"a profile's bytes".to_vec()).unwrap();
    encoder.set_exif_metadata(exif).unwrap();
    encoder.write_image(&rgb, w, h, image::ExtendedColorType::Rgb8).unwrap();
    fs::write(t.path().join("s_02.png"), tagged).unwrap();
    let input = t.path().join("s_%02d.png").display().to_string();
    let out = t.path().join("o/o_%02d.png").display().to_string();
    let json = t.path().join("r.json");
    framepipe()
        .args(["process", &input, "-o", &out, "--backend", "cpu", "--json"])
        .arg(&json)
        .assert()
        .success()
        .stderr(contains("notice: frame 2 carries an ICC profile, which the outputs do not carry"))
        .stderr(contains("notice: frame 2 carries an orientation tag (EXIF, TIFF) that is not applied"));
    let report: serde_json::Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    assert_eq!((&report["icc_profile_list"], &report["oriented_list"]), (&"2".into(), &"2".into()));
    // The pixels as stored, unrotated.
    assert_eq!(decode(&t.path().join("o/o_02.png")).width, w);
}

/// Two --skip-existing runs on the same frames at once (a farm retrying a
/// task still running): each keeps what the other wrote meanwhile, and
/// together they write every frame once, neither failing.
#[test]
fn skip_existing_runs_at_once_share_the_frames() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), "s_%02d.png", 1, 12, PixelFormat::Rgba8);
    // Each with its report, then both naming one (a task's fixed report
    // path): the one that finishes last replaces the other's.
    for (dir, reports) in [("o", ["a.json", "b.json"]), ("p", ["r.json", "r.json"])] {
        let out = t.path().join(format!("{dir}/o_%02d.png")).display().to_string();
        let run = |json: &str| {
            std::process::Command::new(assert_cmd::cargo::cargo_bin("framepipe"))
                .args(["process", &input, "-o", &out, "--blur", "2", "--backend", "cpu", "--threads", "1"])
                .args(["--skip-existing", "-q", "--json"])
                .arg(t.path().join(dir).with_extension(json))
                .spawn()
                .unwrap()
        };
        let (mut a, mut b) = (run(reports[0]), run(reports[1]));
        assert!(a.wait().unwrap().success() && b.wait().unwrap().success(), "{dir}");
        let report = |json: &str| -> serde_json::Value {
            serde_json::from_slice(&fs::read(t.path().join(dir).with_extension(json)).unwrap()).unwrap()
        };
        let (a, b) = (report(reports[0]), report(reports[1]));
        for r in [&a, &b] {
            assert_eq!(r["failures"].as_array().unwrap().len(), 0, "{r}");
            assert_eq!(r["unwritten_frames"], "", "{r}");
            let (written, existing) = (r["frames_written"].as_u64().unwrap(), r["frames_existing"].as_u64().unwrap());
            assert_eq!(written + existing, 12, "every frame written or kept: {r}");
        }
        if reports[0] != reports[1] {
            assert!(a["frames_written"].as_u64().unwrap() + b["frames_written"].as_u64().unwrap() >= 12);
        }
        let written = files(&t.path().join(dir));
        assert_eq!(written.len(), 12, "{written:?}");
        for name in written {
            decode(&t.path().join(dir).join(name));
        }
    }
}

/// An output of another bit depth than the run writes is not this
/// render's frame: --skip-existing refuses it by name, as another size.
#[test]
fn skip_existing_refuses_an_output_of_another_depth() {
    let t = tempfile::tempdir().unwrap();
    let input = sequence(t.path(), "s_%02d.png", 1, 3, PixelFormat::Rgba8);
    let deep = sequence(&t.path().join("o"), "o_%02d.png", 2, 1, PixelFormat::Rgba16);
    assert!(deep.ends_with("o_%02d.png"));
    let out = t.path().join("o/o_%02d.png").display().to_string();
    framepipe().args(["process", &input, "-o", &out, "--backend", "cpu", "--skip-existing"]).assert().code(2).stderr(
        contains("o_02.png: exists but is not a frame to keep (16-bit, not the 8-bit frames this run renders)"),
    );
}
