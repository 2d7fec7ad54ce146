//! Benchmark of ext4-writer against `mkfs.ext4 -d`, side by side in one run.
//!
//! 1. Speed: both build an image of the Debian root filesystem fixture
//!    (`$BANGER_FIXTURES/rootfs/bookworm-banger`) from the directory on
//!    disk, including the directory walk and a final fsync. Each runs
//!    `ROUNDS` times, alternating, and the median of each is reported.
//! 2. Memory: both build an image of the same Debian tree and of a
//!    generated tree holding 1 GiB of file content, each in its own process
//!    under `/usr/bin/time -v`, and the maximum resident set size of each
//!    is reported.
//!
//! Run with `cargo bench --bench ext4_write` as root (mkfs.ext4 -d keeps
//! owners only as root). Needs e2fsprogs and the `time` package.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ext4_writer::options::{Options, Sizing};
use ext4_writer::source::dir::tree_from_dir;

const ROUNDS: usize = 5;
/// Environment variable that turns this binary into the writer process
/// whose memory is measured: its value is `SOURCE_DIR:IMAGE`.
const CHILD_VARIABLE: &str = "EXT4_WRITE_BENCH_CHILD";
const CONTENT_BYTES: u64 = 1 << 30;
const CONTENT_FILES: u64 = 64;

fn main() {
    if let Ok(arguments) = std::env::var(CHILD_VARIABLE) {
        let (source, image) = arguments.split_once(':').expect("SOURCE_DIR:IMAGE");
        let size = write_with_library(Path::new(source), Path::new(image));
        println!("{size}");
        return;
    }
    // `cargo bench` passes `--bench`; any other first argument is a filter
    // that this benchmark does not match.
    if std::env::args().skip(1).any(|arg| arg != "--bench") {
        return;
    }

    let fixtures = std::env::var_os("BANGER_FIXTURES")
        .map_or_else(|| PathBuf::from("/var/tmp/banger-fixtures"), PathBuf::from);
    let source = fixtures.join("rootfs/bookworm-banger");
    assert!(
        source.is_dir(),
        "{} is missing: build the fixtures with tests/fixtures/build-images.sh or set BANGER_FIXTURES",
        source.display()
    );
    let work = tempfile::Builder::new()
        .prefix("ext4-write-bench")
        .tempdir_in("/var/tmp")
        .unwrap();

    speed(&source, work.path());
    memory(&source, work.path());
}

/// Times both writers on `source` and prints their medians and ratio.
fn speed(source: &Path, work: &Path) {
    let ours_image = work.join("ours.ext4");
    let mkfs_image = work.join("mkfs.ext4");
    // Read the tree once so both writers start with a warm page cache.
    let size = write_with_library(source, &ours_image);

    let mut ours = Vec::new();
    let mut mkfs = Vec::new();
    for _ in 0..ROUNDS {
        fs::remove_file(&ours_image).unwrap();
        let start = Instant::now();
        write_with_library(source, &ours_image);
        ours.push(start.elapsed());

        let _ = fs::remove_file(&mkfs_image);
        let start = Instant::now();
        run_mkfs(source, &mkfs_image, size);
        mkfs.push(start.elapsed());
    }
    let ours = median(&mut ours);
    let mkfs = median(&mut mkfs);
    fsck(&ours_image);

    println!("## Debian root filesystem ({})", source.display());
    println!("image size: {size} bytes, median of {ROUNDS} runs each");
    println!("| writer | time |");
    println!("|---|---|");
    println!(
        "| ext4-writer (walk + write + fsync) | {:.3} s |",
        ours.as_secs_f64()
    );
    println!("| mkfs.ext4 -d | {:.3} s |", mkfs.as_secs_f64());
    println!("speedup: {:.2}x", mkfs.as_secs_f64() / ours.as_secs_f64());
}

/// Measures the peak RSS of both writers on the Debian tree and on 1 GiB
/// of generated content.
fn memory(source: &Path, work: &Path) {
    let content = work.join("content");
    generate_content(&content);

    println!("## Peak RSS");
    println!("| tree | ext4-writer | mkfs.ext4 -d |");
    println!("|---|---|---|");
    for (name, tree) in [
        ("Debian root filesystem".to_string(), source),
        (
            format!("{CONTENT_FILES} files holding {CONTENT_BYTES} bytes"),
            content.as_path(),
        ),
    ] {
        let (ours_kib, mkfs_kib) = peak_rss_pair(tree, work);
        println!(
            "| {name} | {:.1} MiB | {:.1} MiB |",
            ours_kib as f64 / 1024.0,
            mkfs_kib as f64 / 1024.0
        );
    }
}

/// Runs each writer on `source` in its own process and returns their peak
/// RSS in KiB, ours first.
fn peak_rss_pair(source: &Path, work: &Path) -> (u64, u64) {
    let ours_image = work.join("rss-ours.ext4");
    let mkfs_image = work.join("rss-mkfs.ext4");
    let _ = fs::remove_file(&ours_image);
    let _ = fs::remove_file(&mkfs_image);

    let mut child = Command::new("/usr/bin/time");
    child.arg("-v").arg(std::env::current_exe().unwrap()).env(
        CHILD_VARIABLE,
        format!("{}:{}", source.display(), ours_image.display()),
    );
    let (ours_kib, stdout) = peak_rss_kib(&mut child);
    let size: u64 = stdout.trim().parse().unwrap();
    fsck(&ours_image);

    let mut mkfs = Command::new("/usr/bin/time");
    mkfs.arg("-v");
    mkfs.args(mkfs_arguments(source, &mkfs_image, size));
    let (mkfs_kib, _) = peak_rss_kib(&mut mkfs);
    (ours_kib, mkfs_kib)
}

/// Checks that the benchmark measured a valid image.
fn fsck(image: &Path) {
    let status = Command::new("e2fsck")
        .arg("-fn")
        .arg(image)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("failed to run e2fsck; install e2fsprogs");
    assert!(status.success(), "e2fsck -fn {} failed", image.display());
}

/// Reads `source` into a tree and writes an automatically sized image to
/// `image` with default options, then fsyncs it; returns the image size.
fn write_with_library(source: &Path, image: &Path) -> u64 {
    let tree = tree_from_dir(source).unwrap();
    let file = File::create(image).unwrap();
    let options = Options {
        sizing: Sizing::Auto {
            headroom_percent: 10,
            min_free_bytes: 16 << 20,
        },
        ..Options::default()
    };
    let report = ext4_writer::write_file(&tree, &options, &file).unwrap();
    file.sync_all().unwrap();
    report.size_bytes
}

fn mkfs_arguments(source: &Path, image: &Path, size: u64) -> Vec<String> {
    vec![
        "mkfs.ext4".into(),
        "-q".into(),
        "-F".into(),
        "-b".into(),
        "4096".into(),
        "-d".into(),
        source.display().to_string(),
        image.display().to_string(),
        format!("{}k", size / 1024),
    ]
}

fn run_mkfs(source: &Path, image: &Path, size: u64) {
    let arguments = mkfs_arguments(source, image, size);
    let status = Command::new(&arguments[0])
        .args(&arguments[1..])
        .status()
        .unwrap();
    assert!(status.success(), "{arguments:?} failed");
}

/// Runs a command under `/usr/bin/time -v` and returns the maximum resident
/// set size it reports, in KiB, and the command's stdout.
fn peak_rss_kib(command: &mut Command) -> (u64, String) {
    let output = command
        .output()
        .expect("failed to run /usr/bin/time; install the time package");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{command:?} failed:\n{stderr}");
    let kib = stderr
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no maximum resident set size in:\n{stderr}"));
    (kib, String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Writes `CONTENT_FILES` files of pseudo-random bytes (no zero blocks, so
/// nothing becomes a hole) that add up to `CONTENT_BYTES`.
fn generate_content(dir: &Path) {
    fs::create_dir(dir).unwrap();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buffer = vec![0u8; 1 << 20];
    for index in 0..CONTENT_FILES {
        let mut file = File::create(dir.join(format!("file{index:03}"))).unwrap();
        for _ in 0..CONTENT_BYTES / CONTENT_FILES / buffer.len() as u64 {
            for chunk in buffer.chunks_exact_mut(8) {
                // xorshift64: fast, and never all zeros.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes());
            }
            file.write_all(&buffer).unwrap();
        }
    }
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}
