//! `banger image import` inputs: the fixture's docker archive, its OCI
//! layout as a directory and as a tar, and a root-filesystem tar from
//! standard input each flatten to the tree a root `umoci unpack` made of
//! the same image.

mod image_support;

use std::path::Path;
use std::process::{Command, Stdio};

use banger::image::flatten::{flatten, flatten_with_diff_ids};
use banger::image::import::{import_path, import_reader, ImportError, ImportFormat, ImportedImage};
use ext4_writer::tar::Spool;

/// Flattens `image` and compares it with expected/bookworm-banger.txt.
fn assert_matches_fixture(image: &ImportedImage, what: &str) {
    let fixtures = image_support::fixtures();
    let mut spool = Spool::new().unwrap();
    let tree = flatten(&image.layers, &mut spool).unwrap();
    let expected = std::fs::read_to_string(fixtures.join("expected/bookworm-banger.txt")).unwrap();
    image_support::assert_same_listing(&image_support::listing(&tree), &expected, what);
    let ping = tree.node(image_support::lookup(&tree, "usr/bin/ping").unwrap());
    assert!(
        ping.metadata
            .xattrs
            .iter()
            .any(|x| x.name == b"security.capability"),
        "{what}: ping lost its capability"
    );
}

/// Runs GNU tar with `args` in `dir`, writing the archive to `out`.
fn gnu_tar(dir: &Path, args: &[&str], out: &Path) {
    let status = Command::new("tar")
        .current_dir(dir)
        .arg("-cf")
        .arg(out)
        .args(args)
        .status()
        .expect("GNU tar must be installed");
    assert!(status.success());
}

#[test]
fn docker_archive_matches_fixture() {
    let fixtures = image_support::fixtures();
    let scratch = tempfile::tempdir().unwrap();
    let archive = fixtures.join("archives/bookworm-banger.docker.tar");
    let image = import_path(&archive, None, scratch.path()).unwrap();

    assert_eq!(image.format, ImportFormat::DockerArchive);
    assert_eq!(image.layers.len(), 3);
    assert!(
        image
            .tags
            .iter()
            .any(|t| t.ends_with("debian:bookworm-banger")),
        "{:?}",
        image.tags
    );
    assert!(image.config.is_some());
    assert_matches_fixture(&image, "docker archive");
}

#[test]
fn oci_layout_tar_matches_fixture() {
    let fixtures = image_support::fixtures();
    let scratch = tempfile::tempdir().unwrap();
    let archive = scratch.path().join("layout.tar");
    gnu_tar(&fixtures.join("oci"), &["."], &archive);
    let image = import_path(&archive, Some("bookworm-banger"), scratch.path()).unwrap();

    assert_eq!(image.format, ImportFormat::OciLayout);
    assert_eq!(image.tags, ["bookworm-banger"]);
    let manifest_digest = std::fs::read_to_string(fixtures.join("oci/index.json")).unwrap();
    assert!(manifest_digest.contains(&image.digest.as_ref().unwrap().to_string()));
    assert_matches_fixture(&image, "OCI layout tar");
}

#[test]
fn oci_layout_needs_a_tag() {
    let fixtures = image_support::fixtures();
    let scratch = tempfile::tempdir().unwrap();
    let err = import_path(&fixtures.join("oci"), None, scratch.path()).unwrap_err();
    assert!(
        matches!(err, ImportError::Ambiguous { count: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("bookworm-banger"), "{err}");

    let err = import_path(&fixtures.join("oci"), Some("nope"), scratch.path()).unwrap_err();
    assert!(
        matches!(&err, ImportError::TagNotFound { tag, .. } if tag == "nope"),
        "{err}"
    );
    assert!(err.to_string().contains("minbase"), "{err}");
}

#[test]
fn rootfs_tar_from_stdin_matches_fixture() {
    let fixtures = image_support::fixtures();
    let scratch = tempfile::tempdir().unwrap();
    let mut child = Command::new("tar")
        .current_dir(fixtures.join("rootfs/bookworm-banger"))
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "-cf",
            "-",
            ".",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("GNU tar must be installed");
    let stdout = child.stdout.take().unwrap();
    let image = import_reader(stdout, None, scratch.path()).unwrap();
    assert!(child.wait().unwrap().success());

    assert_eq!(image.format, ImportFormat::RootfsTar);
    assert!(image.config.is_none());
    assert_eq!(image.layers.len(), 1);
    assert_matches_fixture(&image, "rootfs tar from stdin");
}

#[test]
fn compressed_rootfs_tar_imported() {
    let scratch = tempfile::tempdir().unwrap();
    let source = scratch.path().join("source");
    std::fs::create_dir_all(source.join("etc")).unwrap();
    std::fs::write(source.join("etc/hostname"), b"guest\n").unwrap();
    let archive = scratch.path().join("rootfs.tar.gz");
    gnu_tar(&source, &["-z", "."], &archive);
    let image = import_path(&archive, None, scratch.path()).unwrap();

    assert_eq!(image.format, ImportFormat::RootfsTar);
    let mut spool = Spool::new().unwrap();
    let (tree, diff_ids) = flatten_with_diff_ids(&image.layers, &mut spool).unwrap();
    assert_eq!(image_support::content(&tree, "etc/hostname"), b"guest\n");
    let tar = std::process::Command::new("zcat")
        .arg(&archive)
        .output()
        .unwrap()
        .stdout;
    let expected = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&tar))
    );
    assert_eq!(diff_ids, [expected]);
}

#[test]
fn garbage_input_rejected() {
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("garbage");
    std::fs::write(&path, vec![b'x'; 4096]).unwrap();
    let err = import_path(&path, None, scratch.path()).unwrap_err();
    assert!(matches!(err, ImportError::Invalid { .. }), "{err}");
}

#[test]
fn garbage_tar_header_is_escaped() {
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("garbage.tar");
    // A ustar header whose name holds an ANSI escape and whose checksum
    // field is not a number, followed by the end-of-archive blocks.
    let mut header = vec![0u8; 512];
    header[..9].copy_from_slice(b"\x01\x02\x1b[31mab");
    header[100..108].copy_from_slice(b"0000644\0");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header.extend_from_slice(&[0u8; 1024]);
    std::fs::write(&path, &header).unwrap();

    let err = import_path(&path, None, scratch.path()).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, ImportError::Invalid { .. }), "{message}");
    assert!(
        !message.chars().any(char::is_control),
        "control characters in {message:?}"
    );
    assert!(message.contains("\\u{1b}"), "{message:?}");
}
