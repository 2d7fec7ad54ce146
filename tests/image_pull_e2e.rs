//! `banger image pull` and `banger image export` end to end, as a user runs
//! them: the exported ext4 of a fixture image from the real loopback
//! registry passes `e2fsck -fn` and, mounted read-only, equals the tree a
//! root `umoci unpack` made. Needs root, e2fsprogs, util-linux, attr and
//! libcap2-bin.

mod image_support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use image_support::mount::{e2fsck_clean, xattr_set, Mount, LISTING_SCRIPT, SHA256_SCRIPT};

/// Runs `banger` with its config, cache and data inside `home`.
fn banger(home: &Path, args: &[&str]) -> Output {
    banger_with_stdin(home, args, Stdio::null())
}

/// Runs `banger` like [`banger`], with `stdin` as its standard input.
fn banger_with_stdin(home: &Path, args: &[&str], stdin: Stdio) -> Output {
    image_support::banger_command(home, args)
        .stdin(stdin)
        .output()
        .unwrap()
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} exited with {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Compares the mounted image with expected/NAME.{txt,sha256,xattrs.txt}.
fn assert_matches_reference(mount: &Mount, name: &str) {
    let fixtures = image_support::fixtures();
    // lost+found is the only entry the ext4 adds; the fixtures already
    // contain every mount point banger injects.
    let listing: String = mount
        .run(LISTING_SCRIPT)
        .lines()
        .filter(|line| !line.starts_with("./lost+found\t"))
        .map(|line| format!("{line}\n"))
        .collect();
    let expected = fs::read_to_string(fixtures.join(format!("expected/{name}.txt"))).unwrap();
    image_support::assert_same_listing(&listing, &expected, name);

    let expected = fs::read_to_string(fixtures.join(format!("expected/{name}.sha256"))).unwrap();
    image_support::assert_same_listing(&mount.run(SHA256_SCRIPT), &expected, name);

    let dump = mount.run("getfattr -R -h -d -m - --absolute-names . 2>/dev/null || true");
    let expected =
        fs::read_to_string(fixtures.join(format!("expected/{name}.xattrs.txt"))).unwrap();
    assert_eq!(xattr_set(&dump), xattr_set(&expected), "{name} xattrs");
}

#[test]
fn pull_export_matches_umoci_unpack() {
    let registry = image_support::registry_address();
    let home = tempfile::tempdir().unwrap();
    let reference = format!("{registry}/debian:bookworm-banger");
    let pull_args = [
        "image",
        "pull",
        "--quiet",
        "--insecure-registry",
        &registry,
        &reference,
    ];

    let output = banger(home.path(), &pull_args);
    assert_success(&output, "image pull");
    let expected_digest =
        fs::read_to_string(image_support::fixtures().join("registry/bookworm-banger.digest"))
            .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(expected_digest.trim()), "{stdout}");

    // A second pull of the same digest reuses the stored build.
    let rootfs = home
        .path()
        .join("data/images")
        .join(expected_digest.trim().trim_start_matches("sha256:"))
        .join("rootfs.ext4");
    let inode = fs::metadata(&rootfs).unwrap().ino();
    assert_success(&banger(home.path(), &pull_args), "second image pull");
    assert_eq!(
        fs::metadata(&rootfs).unwrap().ino(),
        inode,
        "the image was rebuilt"
    );

    let exported = home.path().join("bookworm-banger.ext4");
    let output = banger(
        home.path(),
        &[
            "image",
            "export",
            &reference,
            "-o",
            exported.to_str().unwrap(),
        ],
    );
    assert_success(&output, "image export");
    let meta = fs::metadata(&exported).unwrap();
    assert_eq!(meta.len(), fs::metadata(&rootfs).unwrap().len());
    assert!(
        meta.blocks() * 512 < meta.len(),
        "the export filled the image's holes"
    );

    e2fsck_clean(&exported);
    let mount = Mount::new(&exported);
    assert_matches_reference(&mount, "bookworm-banger");
    let ping = mount.run("getcap usr/bin/ping");
    assert!(ping.contains("cap_net_raw=ep"), "getcap: {ping}");
    assert_eq!(
        mount.run("stat -c '%a %u:%g' usr/bin/sudo").trim(),
        "4755 0:0"
    );
    assert_eq!(mount.run("stat -c '%t:%T' dev/null").trim(), "1:3");
}

/// Exports the image `reference` from `home`, checks it with `e2fsck -fn`
/// and compares its mounted tree with expected/bookworm-banger.
fn assert_export_matches_bookworm_banger(home: &Path, reference: &str) {
    let exported = home.join("exported.ext4");
    let output = banger(
        home,
        &[
            "image",
            "export",
            reference,
            "-o",
            exported.to_str().unwrap(),
        ],
    );
    assert_success(&output, "image export");
    e2fsck_clean(&exported);
    let mount = Mount::new(&exported);
    assert_matches_reference(&mount, "bookworm-banger");
    assert_eq!(
        mount.run("stat -c '%a %u:%g' usr/bin/sudo").trim(),
        "4755 0:0"
    );
}

#[test]
fn import_docker_archive_matches_reference() {
    let home = tempfile::tempdir().unwrap();
    let archive = image_support::fixtures().join("archives/bookworm-banger.docker.tar");
    let output = banger(home.path(), &["image", "import", archive.to_str().unwrap()]);
    assert_success(&output, "image import of a docker archive");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("docker.io/library/debian:bookworm-banger "),
        "the archive's RepoTags name the image: {stdout}"
    );
    assert_export_matches_bookworm_banger(home.path(), "debian:bookworm-banger");
}

#[test]
fn import_oci_layout_matches_reference() {
    let home = tempfile::tempdir().unwrap();
    let layout = image_support::fixtures().join("oci");
    let layout = layout.to_str().unwrap();

    let output = banger(home.path(), &["image", "import", layout]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "a layout of 3 images needs --tag"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--tag"), "{stderr}");

    let output = banger(
        home.path(),
        &[
            "image",
            "import",
            layout,
            "--tag",
            "bookworm-banger",
            "--name",
            "local/oci:1",
        ],
    );
    assert_success(&output, "image import of an OCI layout");
    // An OCI layout keeps the manifest, so the import has the pull's digest.
    let digest =
        fs::read_to_string(image_support::fixtures().join("registry/bookworm-banger.digest"))
            .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(digest.trim()), "{stdout}");
    assert_export_matches_bookworm_banger(home.path(), "local/oci:1");
}

#[test]
fn import_rootfs_tar_from_stdin() {
    let home = tempfile::tempdir().unwrap();
    let rootfs = image_support::fixtures().join("rootfs/bookworm-banger");
    let tar_path = home.path().join("rootfs.tar");
    let status = Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "--format=pax",
            "-C",
        ])
        .arg(&rootfs)
        .args(["-cf"])
        .arg(&tar_path)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success(), "tar of {} failed", rootfs.display());

    let stdin = Stdio::from(fs::File::open(&tar_path).unwrap());
    let output = banger_with_stdin(
        home.path(),
        &["image", "import", "-", "--name", "local/rootfs:tar"],
        stdin,
    );
    assert_success(&output, "image import of a rootfs tar from stdin");
    assert_export_matches_bookworm_banger(home.path(), "local/rootfs:tar");

    // A second import of the same bytes reuses the stored image.
    let stdin = Stdio::from(fs::File::open(&tar_path).unwrap());
    let again = banger_with_stdin(
        home.path(),
        &["image", "import", "-", "--name", "local/rootfs:again"],
        stdin,
    );
    assert_success(&again, "second import");
    let digest_of = |output: &Output| {
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(digest_of(&output), digest_of(&again));
}
