//! Shared helpers of the writer tests: build trees, write images to temp
//! files and check them with `e2fsck -fn` and the `ext4-view` reader.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use ext4_writer::{Metadata, Options, Report, Timestamp, Tree};

pub fn meta(permissions: u16) -> Metadata {
    Metadata::new(
        permissions,
        0,
        0,
        Timestamp::new(1_700_000_000, 123_456_789),
    )
}

pub fn empty_tree() -> Tree {
    Tree::new(meta(0o755))
}

/// An image written to a temp dir that lives as long as the value.
pub struct Image {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub report: Report,
}

impl Image {
    pub fn view(&self) -> ext4_view::Ext4 {
        ext4_view::Ext4::load_from_path(&self.path).expect("ext4-view loads the image")
    }
}

/// Writes `tree` with `options` and asserts that `e2fsck -fn` is clean.
pub fn write_checked(tree: &Tree, options: &Options) -> Image {
    let image = write_unchecked(tree, options);
    assert_fsck_clean(&image.path);
    image
}

pub fn write_unchecked(tree: &Tree, options: &Options) -> Image {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("image.ext4");
    let file = std::fs::File::create(&path).expect("create image file");
    let report = ext4_writer::write_file(tree, options, &file).expect("write image");
    Image { dir, path, report }
}

/// Runs `e2fsck -fn` and asserts exit status 0 and no problem lines.
pub fn assert_fsck_clean(path: &Path) {
    let output = Command::new("e2fsck")
        .env(
            "E2FSCK_CONFIG",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/e2fsck.conf"),
        )
        .arg("-fn")
        .arg(path)
        .output()
        .expect("e2fsck runs (install e2fsprogs)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let problems: Vec<&str> = stdout
        .lines()
        .filter(|line| {
            !line.starts_with("Pass ") && !line.contains(" files (") && !line.trim().is_empty()
        })
        .collect();
    assert!(
        output.status.success() && problems.is_empty(),
        "e2fsck -fn {} exited with {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        path.display(),
        output.status.code()
    );
}

/// Runs `debugfs -R request` on the image and returns its stdout.
pub fn debugfs(path: &Path, request: &str) -> String {
    let output = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(path)
        .output()
        .expect("debugfs runs (install e2fsprogs)");
    assert!(
        output.status.success(),
        "debugfs -R {request:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Options that make the image reproducible.
pub fn reproducible() -> Options {
    Options {
        reproducible: Some(ext4_writer::Reproducible {
            seed: 42,
            timestamp: 1_700_000_000,
            clamp_mtime: false,
        }),
        ..Options::default()
    }
}
