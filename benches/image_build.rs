//! Times building the bookworm-banger fixture from its cached layer blobs
//! (flatten and ext4 write). In the same run it times `zcat` of the layers
//! to /dev/null and the old pipeline of tests/fixtures/baseline-mkfs.sh
//! (rootless unpack, `mkfs.ext4 -d`, a debugfs ownership pass). It also reports the peak RSS of the build and
//! whether its image passes `e2fsck -fn`.
//!
//! Run with `cargo bench --bench image_build` as root. The fixtures come from
//! tests/fixtures/build-images.sh (`BANGER_FIXTURES`, default
//! /var/tmp/banger-fixtures). The old pipeline needs umoci, e2fsprogs and
//! python3. Results are recorded in benches/BENCHMARKS.md.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use banger::image::build::{build_rootfs, Headroom};
use banger::image::compression::Compression;
use banger::image::flatten::Layer;
use banger::image::import::import_path;

/// Runs per measurement; the fastest counts, as the machine is shared.
const RUNS: usize = 3;
const TAG: &str = "bookworm-banger";

/// Targets for the build: at most this many times `zcat`, at least this
/// many times faster than the old pipeline, and a peak RSS under this.
const MAX_ZCAT_RATIO: f64 = 1.3;
const MIN_BASELINE_SPEEDUP: f64 = 5.0;
const MAX_PEAK_RSS_MIB: u64 = 150;

fn fixtures() -> PathBuf {
    let dir = std::env::var_os("BANGER_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/banger-fixtures"));
    assert!(
        dir.join("oci/index.json").is_file(),
        "fixtures missing in {}: run tests/fixtures/build-images.sh as root (or set BANGER_FIXTURES)",
        dir.display()
    );
    dir
}

/// Decompresses every layer to /dev/null with `zcat` (or `cat` for an
/// uncompressed one), one after the other.
fn zcat_layers(layers: &[Layer]) -> Duration {
    let start = Instant::now();
    for layer in layers {
        let mut magic = Vec::new();
        std::fs::File::open(&layer.source.path)
            .and_then(|file| file.take(4).read_to_end(&mut magic))
            .unwrap();
        let tool = match Compression::detect(&magic) {
            Compression::Gzip => "zcat",
            Compression::Zstd => "zstdcat",
            Compression::None => "cat",
        };
        let status = Command::new(tool)
            .arg(&layer.source.path)
            .stdout(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("failed to run {tool}: {e}"));
        assert!(status.success(), "{tool} failed");
    }
    start.elapsed()
}

/// Resets the peak RSS (`VmHWM`) of this process to its current RSS, so the
/// next reading covers only what runs after this call. Returns false when
/// the kernel rejects the write (before Linux 4.0).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak resident set size of this process in KiB (`VmHWM`).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn best<F: FnMut() -> Duration>(mut run: F) -> Duration {
    (0..RUNS).map(|_| run()).min().unwrap()
}

/// Step times of one run of the old pipeline, in the order the script ran
/// them.
struct BaselineRun {
    steps: Vec<(String, Duration)>,
}

impl BaselineRun {
    fn total(&self) -> Duration {
        self.steps.iter().map(|(_, time)| *time).sum()
    }
}

/// Runs tests/fixtures/baseline-mkfs.sh once on the fixture layout and
/// reads the step times it records in OUT.times. The script's own
/// untimed `e2fsck -fn` is not part of the times.
fn run_baseline(layout: &Path, work: &Path) -> BaselineRun {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/baseline-mkfs.sh");
    let out = work.join("baseline.ext4");
    let status = Command::new("bash")
        .arg(&script)
        .arg(layout)
        .arg(&out)
        .arg(TAG)
        .status()
        .unwrap_or_else(|e| panic!("failed to run bash {}: {e}", script.display()));
    assert!(status.success(), "{} failed: {status}", script.display());

    let times_path = work.join("baseline.ext4.times");
    let times = std::fs::read_to_string(&times_path)
        .unwrap_or_else(|e| panic!("failed to read {}: {e}", times_path.display()));
    let steps = times
        .lines()
        .map(|line| {
            let (step, seconds) = line
                .split_once('\t')
                .unwrap_or_else(|| panic!("invalid line {line:?} in {}", times_path.display()));
            let seconds: f64 = seconds
                .parse()
                .unwrap_or_else(|e| panic!("invalid time {seconds:?} for {step}: {e}"));
            (step.to_string(), Duration::from_secs_f64(seconds))
        })
        .collect();

    // The next run writes the image, the times and the logs again.
    for suffix in ["", ".times", ".umoci", ".debugfs-errors", ".e2fsck"] {
        let _ = std::fs::remove_file(work.join(format!("baseline.ext4{suffix}")));
    }
    BaselineRun { steps }
}

/// Runs `e2fsck -fn` on `image`, untimed, and returns its exit status as
/// text (e2fsck exits 0 when the file system is clean).
fn fsck_status(image: &Path) -> String {
    let status = Command::new("e2fsck")
        .arg("-fn")
        .arg(image)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("failed to run e2fsck: {e}"));
    match status.code() {
        Some(0) => "clean".to_string(),
        Some(code) => format!("NOT clean, exit {code}"),
        None => format!("killed: {status}"),
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

fn main() {
    // `cargo bench` passes `--bench`. Without it, as under `cargo test
    // --benches`, this benchmark returns at once.
    if !std::env::args().skip(1).any(|arg| arg == "--bench") {
        return;
    }

    let fixtures = fixtures();
    let layout = fixtures.join("oci");
    let work = tempfile::tempdir().unwrap();
    let image = import_path(&layout, Some(TAG), work.path()).unwrap();
    let identity = image.digest.as_ref().unwrap().to_string();
    let out = work.path().join("root.ext4");

    let zcat = best(|| zcat_layers(&image.layers));

    // Reset the peak so that the import does not count toward the build's.
    let setup_peak_rss_mib = peak_rss_kib() >> 10;
    let peak_rss_reset = reset_peak_rss();
    let mut size = 0;
    let build = best(|| {
        let start = Instant::now();
        let report = build_rootfs(&image.layers, &identity, Headroom::default(), &out).unwrap();
        size = report.size_bytes;
        start.elapsed()
    });
    let peak_rss_mib = peak_rss_kib() >> 10;
    let fsck = fsck_status(&out);
    std::fs::remove_file(&out).unwrap();

    let baseline = (0..RUNS)
        .map(|_| run_baseline(&layout, work.path()))
        .min_by_key(BaselineRun::total)
        .unwrap();

    let zcat_ratio = build.as_secs_f64() / zcat.as_secs_f64();
    let speedup = baseline.total().as_secs_f64() / build.as_secs_f64();
    println!();
    println!("layers:              {}", image.layers.len());
    println!("image size:          {} MiB", size >> 20);
    println!("e2fsck -fn of image: {fsck}");
    println!(
        "zcat of layers:      {:7.3} s (best of {RUNS})",
        zcat.as_secs_f64()
    );
    println!(
        "banger build:        {:7.3} s (best of {RUNS}, flatten and ext4 write)",
        build.as_secs_f64()
    );
    println!(
        "old pipeline:        {:7.3} s (best total of {RUNS}, without e2fsck)",
        baseline.total().as_secs_f64()
    );
    for (step, time) in &baseline.steps {
        println!("  {step:<18} {:7.3} s", time.as_secs_f64());
    }
    println!(
        "build / zcat:        {zcat_ratio:7.2}x (target at most {MAX_ZCAT_RATIO}x: {})",
        verdict(zcat_ratio <= MAX_ZCAT_RATIO)
    );
    println!(
        "old pipeline / build:{speedup:7.2}x (target at least {MIN_BASELINE_SPEEDUP}x: {})",
        verdict(speedup >= MIN_BASELINE_SPEEDUP)
    );
    println!(
        "peak RSS of build:   {peak_rss_mib:7} MiB (target under {MAX_PEAK_RSS_MIB} MiB: {}){}",
        verdict(peak_rss_mib < MAX_PEAK_RSS_MIB),
        if peak_rss_reset {
            ""
        } else {
            ", includes the import: /proc/self/clear_refs rejected the reset"
        }
    );
    println!("peak RSS before build:{setup_peak_rss_mib:6} MiB (the import)");
}
