//! Writes the Debian fixture root filesystem with ext4-writer and with
//! `mkfs.ext4 -d` side by side, and a tree of 1 GiB of content, printing
//! wall times, their ratio and the peak resident memory of this process.
//!
//! Run with `cargo bench -p ext4-writer --bench debian_rootfs`. The fixtures
//! come from tests/fixtures/build-images.sh (`BANGER_FIXTURES`, default
//! /var/tmp/banger-fixtures).

use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ext4_writer::{FileData, Metadata, NodeKind, Options, ReadAt, Sizing, Timestamp, Tree};

const RUNS: usize = 3;

fn main() {
    let fixtures =
        std::env::var_os("BANGER_FIXTURES").unwrap_or_else(|| "/var/tmp/banger-fixtures".into());
    let scratch = tempfile::tempdir().expect("temp dir");
    for name in ["minbase", "bookworm-banger"] {
        let rootfs = Path::new(&fixtures).join("rootfs").join(name);
        assert!(
            rootfs.join("etc/os-release").exists(),
            "missing fixture {}: run tests/fixtures/build-images.sh",
            rootfs.display()
        );
        compare_with_mkfs(&rootfs, scratch.path());
    }
    peak_memory_for_1_gib(scratch.path());
}

fn compare_with_mkfs(rootfs: &Path, scratch: &Path) {
    let image = scratch.join("writer.img");
    let mut writer_times = Vec::new();
    let mut size = 0;
    for _ in 0..RUNS {
        let start = Instant::now();
        let tree = ext4_writer::source::dir::tree_from_dir(rootfs).expect("read the tree");
        let file = File::create(&image).expect("create image");
        let report =
            ext4_writer::write_file(&tree, &Options::default(), &file).expect("write image");
        file.sync_all().expect("sync image");
        writer_times.push(start.elapsed());
        size = report.size_bytes;
    }

    let mkfs_image = scratch.join("mkfs.img");
    let mut mkfs_times = Vec::new();
    for _ in 0..RUNS {
        let _ = std::fs::remove_file(&mkfs_image);
        let start = Instant::now();
        let status = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096", "-d"])
            .arg(rootfs)
            .arg(&mkfs_image)
            .arg(format!("{}k", size / 1024))
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run mkfs.ext4");
        assert!(status.success(), "mkfs.ext4 -d failed");
        File::open(&mkfs_image)
            .and_then(|file| file.sync_all())
            .expect("sync mkfs image");
        mkfs_times.push(start.elapsed());
    }

    let writer = median(&mut writer_times);
    let mkfs = median(&mut mkfs_times);
    println!(
        "{}: image {} MiB; ext4-writer {:.3} s (tree read included), mkfs.ext4 -d {:.3} s; mkfs/writer = {:.2}x (median of {RUNS})",
        rootfs.display(),
        size >> 20,
        writer.as_secs_f64(),
        mkfs.as_secs_f64(),
        mkfs.as_secs_f64() / writer.as_secs_f64()
    );
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Writes 1 GiB of content, 256 files of 4 MiB read from one spool file,
/// and prints the peak resident memory of the process.
fn peak_memory_for_1_gib(scratch: &Path) {
    let spool_path = scratch.join("spool");
    let chunk: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i % 253).to_le_bytes()[0] | 1)
        .collect();
    {
        use std::io::Write;
        let mut spool = File::create(&spool_path).expect("create spool");
        for _ in 0..1024 {
            spool.write_all(&chunk).expect("write spool");
        }
    }
    let spool: Arc<dyn ReadAt> = Arc::new(File::open(&spool_path).expect("open spool"));
    let metadata = Metadata::new(0o644, 0, 0, Timestamp::new(0, 0));
    let mut tree = Tree::new(Metadata::new(0o755, 0, 0, Timestamp::new(0, 0)));
    let root = tree.root();
    for index in 0..256u64 {
        let data = FileData::from_source(spool.clone(), index * (4 << 20), 4 << 20);
        tree.add(
            root,
            format!("f{index}").as_bytes(),
            NodeKind::Regular(data),
            metadata.clone(),
        )
        .expect("add file");
    }
    let before = peak_rss_kib();
    let file = File::create(scratch.join("big.img")).expect("create image");
    let options = Options {
        sizing: Sizing::Auto {
            headroom_percent: 5,
            min_free_bytes: 0,
        },
        ..Options::default()
    };
    let start = Instant::now();
    ext4_writer::write_file(&tree, &options, &file).expect("write image");
    println!(
        "1 GiB of content in 256 files: {:.3} s; peak RSS {} MiB (before writing {} MiB)",
        start.elapsed().as_secs_f64(),
        peak_rss_kib() / 1024,
        before / 1024
    );
}

/// `VmHWM` of this process from /proc, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
