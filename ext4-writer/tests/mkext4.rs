//! The `mkext4` command end to end: images from a directory and from a tar
//! stream on stdin, reproducible builds, and errors. Needs root and the
//! commands listed in the oracle module, plus GNU tar.
#![cfg(feature = "cli")]

mod oracle;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use sha2::{Digest, Sha256};

fn mkext4() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mkext4"))
}

fn check_success(output: &Output) {
    assert!(
        output.status.success(),
        "mkext4 exited with {}:\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Fills `root` with a file, a directory, a symlink, a setuid file and an
/// xattr, owned by root and by uid 1000.
fn small_source(root: &Path) {
    use std::os::unix::fs::{lchown, symlink, PermissionsExt};

    fs::create_dir(root.join("etc")).unwrap();
    fs::write(root.join("etc/hostname"), b"banger\n").unwrap();
    symlink("/usr/bin/mawk", root.join("awk")).unwrap();
    fs::write(root.join("sudo"), b"\x7fELF").unwrap();
    lchown(root.join("sudo"), Some(0), Some(0)).unwrap();
    lchown(root.join("etc/hostname"), Some(1000), Some(1000)).unwrap();
    fs::set_permissions(root.join("sudo"), fs::Permissions::from_mode(0o4755)).unwrap();
    xattr::set(root.join("etc/hostname"), "user.origin", b"test").unwrap();
    oracle::run(
        Command::new("touch")
            .args(["-h", "-m", "-d", "@1600000000.5"])
            .arg(root.join("awk")),
    );
}

fn sha256(path: &Path) -> Vec<u8> {
    Sha256::digest(fs::read(path).unwrap()).to_vec()
}

#[test]
fn from_dir_matches_mount() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    fs::create_dir(&source).unwrap();
    oracle::make_synthetic_source(&source);
    let image = dir.path().join("image.ext4");

    let output = mkext4()
        .arg(&image)
        .arg("--from-dir")
        .arg(&source)
        .output()
        .unwrap();

    check_success(&output);
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(summary.contains("blocks of 4096 bytes"), "{summary}");
    oracle::assert_fsck_clean(&image);
    let source_walk = oracle::walk(&source);
    let mount = oracle::Mount::new(&image);
    let image_walk = oracle::walk(mount.path());
    drop(mount);
    oracle::assert_same_walk(&source_walk, &image_walk);
}

#[test]
fn from_tar_stdin_matches_mount() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    fs::create_dir(&source).unwrap();
    small_source(&source);
    let archive = Command::new("tar")
        .args([
            "--format=posix",
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "-cf",
            "-",
            "-C",
        ])
        .arg(&source)
        .arg(".")
        .output()
        .unwrap()
        .stdout;
    let image = dir.path().join("image.ext4");

    let mut child = mkext4()
        .arg(&image)
        .args([
            "--from-tar",
            "-",
            "--block-size",
            "1024",
            "--label",
            "tarred",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&archive).unwrap();
    let output = child.wait_with_output().unwrap();

    check_success(&output);
    oracle::assert_fsck_clean(&image);
    let label = oracle::run(Command::new("e2label").arg(&image));
    assert_eq!(label.trim(), "tarred");
    let source_walk = oracle::walk(&source);
    let mount = oracle::Mount::new(&image);
    let image_walk = oracle::walk(mount.path());
    drop(mount);
    oracle::assert_same_walk(&source_walk, &image_walk);
}

#[test]
fn reproducible_runs_identical() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    fs::create_dir(&source).unwrap();
    small_source(&source);
    // A tar file is the same input on every run, unlike a directory whose
    // atimes change as the first run reads it.
    let archive = dir.path().join("source.tar");
    oracle::run(
        Command::new("tar")
            .args(["--format=posix", "--xattrs", "--xattrs-include=*", "-cf"])
            .arg(&archive)
            .arg("-C")
            .arg(&source)
            .arg("."),
    );
    let build = |name: &str, seed: &str| {
        let image = dir.path().join(name);
        let output = mkext4()
            .arg(&image)
            .arg("--from-tar")
            .arg(&archive)
            .arg(format!("--reproducible={seed}"))
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        check_success(&output);
        image
    };

    let first = build("first.ext4", "42");
    let second = build("second.ext4", "42");
    let other_seed = build("other.ext4", "43");

    oracle::assert_fsck_clean(&first);
    assert_eq!(
        sha256(&first),
        sha256(&second),
        "same seed and SOURCE_DATE_EPOCH"
    );
    assert_ne!(
        sha256(&first),
        sha256(&other_seed),
        "the seed must reach the UUID"
    );
    let dump = oracle::run(Command::new("dumpe2fs").arg("-h").arg(&first));
    let created = dump
        .lines()
        .find(|line| line.starts_with("Filesystem created:"))
        .unwrap_or_default()
        .to_string();
    let expected =
        oracle::run(Command::new("date").args(["-d", "@1700000000", "+%a %b %e %H:%M:%S %Y"]));
    assert!(
        created.ends_with(expected.trim()),
        "{created} vs {expected}"
    );
}

#[test]
fn too_small_size_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    fs::create_dir(&source).unwrap();
    fs::write(source.join("big"), vec![1u8; 4 << 20]).unwrap();
    let image = dir.path().join("image.ext4");

    let output = mkext4()
        .arg(&image)
        .arg("--from-dir")
        .arg(&source)
        .args(["--size", "1M"])
        .output()
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("mkext4: failed to write"), "{stderr}");
    assert!(
        stderr.contains("bytes"),
        "the error states the minimum size: {stderr}"
    );
    assert!(!image.exists(), "a failed build leaves no image behind");
}

#[test]
fn missing_source_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");

    let output = mkext4()
        .arg(dir.path().join("image.ext4"))
        .arg("--from-dir")
        .arg(&missing)
        .output()
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&*missing.to_string_lossy()), "{stderr}");
}

#[test]
fn help_names_units() {
    let output = mkext4().arg("--help").output().unwrap();

    check_success(&output);
    let help = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "--from-dir <DIR>",
        "--from-tar <FILE>",
        "--size <BYTES>",
        "powers of 1024",
        "--headroom <PERCENT>",
        "--block-size <BYTES>",
        "--inodes <COUNT>",
        "--label <LABEL>",
        "--uuid <UUID>",
        "--no-journal",
        "--reproducible[=<SEED>]",
        "SOURCE_DATE_EPOCH",
    ] {
        assert!(
            help.contains(expected),
            "--help lacks {expected:?}:\n{help}"
        );
    }
}

/// 100000 files through the dir source with at most 64 descriptors: the
/// lazy sources must close files as they go.
#[test]
fn many_files_low_descriptor_limit() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    fs::create_dir(&source).unwrap();
    for i in 0..100_000 {
        fs::write(source.join(format!("f{i:06}")), format!("file {i}\n")).unwrap();
    }
    let image = dir.path().join("image.ext4");

    let output = Command::new("prlimit")
        .arg("--nofile=64:64")
        .arg(env!("CARGO_BIN_EXE_mkext4"))
        .arg(&image)
        .arg("--from-dir")
        .arg(&source)
        .output()
        .expect("failed to run prlimit; install util-linux");

    check_success(&output);
    oracle::assert_fsck_clean(&image);
    let dump = oracle::run(
        Command::new("debugfs")
            .args(["-R", "cat /f099999"])
            .arg(&image),
    );
    assert_eq!(dump, "file 99999\n");
}

/// Runs mkext4 on a small source into `output` with extra arguments.
fn build_into(output: &Path, extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("file"), b"content\n").unwrap();
    mkext4()
        .arg(output)
        .arg("--from-dir")
        .arg(dir.path())
        .args(extra)
        .output()
        .unwrap()
}

/// A loop device over a file in a temp dir, detached on drop.
struct LoopDevice {
    device: String,
}

impl LoopDevice {
    fn new(backing: &Path) -> Self {
        let device = oracle::run(Command::new("losetup").args(["-f", "--show"]).arg(backing))
            .trim()
            .to_string();
        Self { device }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

#[test]
fn block_device_written_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing");
    // Old data that the image must not show through: ones everywhere.
    fs::write(&backing, vec![0xffu8; 64 << 20]).unwrap();
    let device = LoopDevice::new(&backing);

    let output = build_into(Path::new(&device.device), &[]);

    check_success(&output);
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(
        summary.contains(&format!("{} bytes", 64 << 20)),
        "{summary}"
    );
    oracle::assert_fsck_clean(Path::new(&device.device));
    assert!(Path::new(&device.device).exists(), "the device node stays");
}

#[test]
fn block_device_too_small_kept() {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing");
    fs::write(&backing, vec![0xffu8; 1 << 20]).unwrap();
    let device = LoopDevice::new(&backing);

    let larger = build_into(Path::new(&device.device), &["--size", "2M"]);
    let small = build_into(Path::new(&device.device), &["--size", "8K"]);

    assert!(!larger.status.success());
    let stderr = String::from_utf8_lossy(&larger.stderr);
    assert!(stderr.contains("larger than the device"), "{stderr}");
    assert!(!small.status.success());
    assert!(Path::new(&device.device).exists(), "the device node stays");
}

#[test]
fn fifo_output_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    oracle::run(Command::new("mkfifo").arg(&fifo));

    let output = build_into(&fifo, &[]);

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is a fifo"), "{stderr}");
    assert!(fs::symlink_metadata(&fifo).is_ok(), "the fifo stays");
}

#[test]
fn failed_build_keeps_existing_image() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.ext4");
    fs::write(&image, b"old image").unwrap();
    let link = dir.path().join("link.ext4");
    std::os::unix::fs::symlink(&image, &link).unwrap();

    let direct = build_into(&image, &["--size", "8K"]);
    let through_link = build_into(&link, &["--size", "8K"]);

    assert!(!direct.status.success());
    assert!(!through_link.status.success());
    assert_eq!(fs::read(&image).unwrap(), b"old image");
    assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "temporary files left: {leftovers:?}");
}

#[test]
fn symlink_output_replaces_target() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.ext4");
    fs::write(&image, b"old image").unwrap();
    fs::set_permissions(&image, fs::Permissions::from_mode(0o640)).unwrap();
    let link = dir.path().join("link.ext4");
    std::os::unix::fs::symlink(&image, &link).unwrap();

    let output = build_into(&link, &[]);

    check_success(&output);
    assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
    oracle::assert_fsck_clean(&image);
    let mode = fs::metadata(&image).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o640, "the replaced file keeps its mode");
}

#[test]
fn invalid_source_date_epoch_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.ext4");
    for bad in ["abc", "-5", "1e9", "99999999999999999999"] {
        let output = mkext4()
            .arg(&image)
            .arg("--from-dir")
            .arg(dir.path())
            .arg("--reproducible")
            .env("SOURCE_DATE_EPOCH", bad)
            .output()
            .unwrap();

        assert!(!output.status.success(), "{bad} accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(bad), "{stderr}");
    }
}

#[test]
fn empty_or_compressed_tar_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.tar");
    fs::write(dir.path().join("file"), b"data").unwrap();
    oracle::run(
        Command::new("tar")
            .current_dir(dir.path())
            .args(["-cf", "plain.tar", "file"]),
    );
    oracle::run(
        Command::new("sh")
            .current_dir(dir.path())
            .args(["-c", "gzip -c plain.tar > plain.tar.gz"]),
    );
    let image = dir.path().join("image.ext4");
    let run = |input: &[u8]| {
        let mut child = mkext4()
            .arg(&image)
            .args(["--from-tar", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    };

    let empty = run(b"");
    let gzip = run(&fs::read(dir.path().join("plain.tar.gz")).unwrap());
    let plain = run(&fs::read(&plain).unwrap());

    assert!(!empty.status.success());
    let stderr = String::from_utf8_lossy(&empty.stderr);
    assert!(stderr.contains("no tar data in standard input"), "{stderr}");
    assert!(!gzip.status.success());
    let stderr = String::from_utf8_lossy(&gzip.stderr);
    assert!(stderr.contains("gzip-compressed"), "{stderr}");
    check_success(&plain);
}

#[test]
fn seed_like_output_rejected() {
    let dir = tempfile::tempdir().unwrap();

    let output = mkext4()
        .current_dir(dir.path())
        .args(["--reproducible", "5", "--from-dir", "."])
        .output()
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--reproducible=5"), "{stderr}");
    assert!(!dir.path().join("5").exists());
}

#[test]
fn stated_minimum_size_fits() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.ext4");

    let small = build_into(&image, &["--size", "1K"]);

    assert!(!small.status.success());
    let stderr = String::from_utf8_lossy(&small.stderr);
    let minimum: u64 = stderr
        .split("raise the size to ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no minimum stated: {stderr}"));
    assert!(minimum <= 64 << 10, "{stderr}");
    let exact = build_into(&image, &["--size", &minimum.to_string()]);
    check_success(&exact);
    oracle::assert_fsck_clean(&image);
    let below = build_into(&image, &["--size", &(minimum - 4096).to_string()]);
    assert!(!below.status.success());
}

#[test]
fn dropped_journal_warned() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.ext4");

    let small = build_into(&image, &["--size", "64K"]);
    let quiet = build_into(&image, &["--size", "64K", "--no-journal"]);
    let large = build_into(&image, &["--size", "8M"]);

    check_success(&small);
    let stderr = String::from_utf8_lossy(&small.stderr);
    assert!(
        stderr.contains("warning: the image has no journal"),
        "{stderr}"
    );
    check_success(&quiet);
    assert!(quiet.stderr.is_empty());
    check_success(&large);
    assert!(large.stderr.is_empty());
}
