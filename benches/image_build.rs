//! Times building the bookworm-banger fixture from its cached layer blobs
//! (flatten and ext4 write) against `zcat` of the same layers to
//! /dev/null, and reports the peak RSS of the build.
//!
//! Run with `cargo bench --bench image_build`; the fixtures come from
//! tests/fixtures/build-images.sh (`BANGER_FIXTURES`, default
//! /var/tmp/banger-fixtures). Results are recorded in benches/BENCHMARKS.md.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use banger::image::build::{build_rootfs, Headroom};
use banger::image::compression::Compression;
use banger::image::flatten::Layer;
use banger::image::import::import_path;

/// Runs per measurement; the fastest counts, as the machine is shared.
const RUNS: usize = 3;

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

fn main() {
    let fixtures = fixtures();
    let work = tempfile::tempdir().unwrap();
    let image = import_path(&fixtures.join("oci"), Some("bookworm-banger"), work.path()).unwrap();
    let identity = image.digest.as_ref().unwrap().to_string();
    let out = work.path().join("root.ext4");

    let zcat = best(|| zcat_layers(&image.layers));
    let mut size = 0;
    let build = best(|| {
        let start = Instant::now();
        let report = build_rootfs(&image.layers, &identity, Headroom::default(), &out).unwrap();
        size = report.size_bytes;
        start.elapsed()
    });

    println!("layers:            {}", image.layers.len());
    println!(
        "zcat of layers:    {:.3} s (best of {RUNS})",
        zcat.as_secs_f64()
    );
    println!(
        "flatten and build: {:.3} s (best of {RUNS})",
        build.as_secs_f64()
    );
    println!(
        "ratio:             {:.2}x zcat",
        build.as_secs_f64() / zcat.as_secs_f64()
    );
    println!("image size:        {} MiB", size >> 20);
    println!("peak RSS:          {} MiB", peak_rss_kib() >> 10);
}
