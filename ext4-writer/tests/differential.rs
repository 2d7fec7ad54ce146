//! Images built from directories through the dir source, checked with
//! `e2fsck -fn` and compared with their source through a read-only kernel
//! mount. Needs root, a kernel with ext4 and loop devices, and the commands
//! listed in the oracle module.
#![cfg(feature = "dir")]

mod oracle;

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use ext4_writer::options::{BlockSize, Options, Reproducible};
use ext4_writer::source::dir::tree_from_dir;

fn write_image(source: &Path, image: &Path, options: &Options) {
    let tree = tree_from_dir(source)
        .unwrap_or_else(|err| panic!("failed to read {}: {err}", source.display()));
    let file = File::create(image).unwrap();
    ext4_writer::write_file(&tree, options, &file)
        .unwrap_or_else(|err| panic!("failed to write {}: {err}", image.display()));
}

fn check_against_mount(source: &Path, image: &Path) {
    oracle::assert_fsck_clean(image);
    let source_walk = oracle::walk(source);
    let mount = oracle::Mount::new(image);
    let image_walk = oracle::walk(mount.path());
    drop(mount);
    oracle::assert_same_walk(&source_walk, &image_walk);
}

/// `File ACL` block number of `path` in `image`, from `debugfs stat`.
fn xattr_block(image: &Path, path: &str) -> u64 {
    let stat = oracle::run(
        Command::new("debugfs")
            .args(["-R", &format!("stat {path}")])
            .arg(image),
    );
    stat.split("File ACL: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no File ACL for {path} in debugfs output:\n{stat}"))
}

#[test]
fn synthetic_tree_matches_mount() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    fs::create_dir(&source).unwrap();
    oracle::make_synthetic_source(&source);
    let image = dir.path().join("image.ext4");

    write_image(&source, &image, &Options::default());

    check_against_mount(&source, &image);

    // The walk compares these only if the source really has them.
    let source_walk = oracle::walk(&source);
    let xattr_names =
        |path: &[u8]| -> Vec<Vec<u8>> { source_walk[path].xattrs.keys().cloned().collect() };
    assert!(xattr_names(b"/acl-file").contains(&b"system.posix_acl_access".to_vec()));
    assert!(xattr_names(b"/acl-dir").contains(&b"system.posix_acl_default".to_vec()));
    assert_eq!(
        source_walk[&b"/ping"[..]].capabilities.as_deref(),
        Some("cap_net_raw=ep")
    );
    assert_eq!(
        source_walk[&b"/big-xattr"[..]].xattrs[&b"user.large"[..]].len(),
        3000
    );

    // The files of /shared carry one xattr set too large for the inode, so
    // they must share a single block whose refcount counts all of them.
    let block = xattr_block(&image, "/shared/f0000");
    assert_ne!(block, 0, "the shared set went in the inode");
    for name in ["f0001", "f0500", "f0999"] {
        assert_eq!(
            xattr_block(&image, &format!("/shared/{name}")),
            block,
            "{name}"
        );
    }
    let bytes = fs::read(&image).unwrap();
    let offset = usize::try_from(block).unwrap() * 4096;
    let refcount = u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into().unwrap());
    assert_eq!(
        refcount,
        u32::try_from(oracle::SHARED_XATTR_FILES).unwrap(),
        "h_refcount"
    );
}

/// 1 KiB and 2 KiB blocks put xattr blocks, directory blocks and extents
/// at other offsets and checksums. The 3000-byte xattr value and the
/// 4095-byte symlink target do not fit in a 1 KiB block, so they are left
/// out here.
#[test]
fn synthetic_tree_small_blocks_match_mount() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    fs::create_dir(&source).unwrap();
    oracle::make_synthetic_source(&source);
    fs::remove_file(source.join("big-xattr")).unwrap();
    fs::remove_file(source.join("link4095")).unwrap();
    oracle::run(
        Command::new("touch")
            .args(["-m", "-d", "@1600000000.25"])
            .arg(&source),
    );

    for block_size in [BlockSize::B1024, BlockSize::B2048] {
        let image = dir
            .path()
            .join(format!("image-{}.ext4", block_size.bytes()));
        let options = Options {
            block_size,
            ..Options::default()
        };

        write_image(&source, &image, &options);

        check_against_mount(&source, &image);
    }
}

#[test]
fn debian_rootfs_matches_mount() {
    let source = oracle::fixtures().join("rootfs/bookworm-banger");
    assert!(
        source.is_dir(),
        "{} is missing: build the fixtures with tests/fixtures/build-images.sh",
        source.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("debian.ext4");

    write_image(&source, &image, &Options::default());

    check_against_mount(&source, &image);
}

#[test]
fn reproducible_mtime_clamped() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    fs::create_dir(&source).unwrap();
    fs::write(source.join("new"), b"new\n").unwrap();
    fs::write(source.join("old"), b"old\n").unwrap();
    oracle::run(
        Command::new("touch")
            .args(["-m", "-d", "@1000.5"])
            .arg(source.join("old")),
    );
    let options = Options {
        reproducible: Some(Reproducible {
            seed: 42,
            timestamp: 1_700_000_000,
            clamp_mtime: true,
        }),
        ..Options::default()
    };
    let image = dir.path().join("image.ext4");

    let tree = tree_from_dir(&source).unwrap();
    let file = File::create(&image).unwrap();
    ext4_writer::write_file(&tree, &options, &file).unwrap();

    oracle::assert_fsck_clean(&image);
    let mount = oracle::Mount::new(&image);
    let new = fs::symlink_metadata(mount.path().join("new")).unwrap();
    let old = fs::symlink_metadata(mount.path().join("old")).unwrap();
    assert_eq!((new.mtime(), new.mtime_nsec()), (1_700_000_000, 0));
    assert_eq!((new.atime(), new.ctime()), (1_700_000_000, 1_700_000_000));
    assert_eq!((old.mtime(), old.mtime_nsec()), (1000, 500_000_000));
    assert_eq!((old.atime(), old.atime_nsec()), (1000, 500_000_000));
    assert_eq!((old.ctime(), old.ctime_nsec()), (1000, 500_000_000));
}

#[test]
fn reproducible_build_identical() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    fs::create_dir(&source).unwrap();
    fs::create_dir(source.join("etc")).unwrap();
    fs::write(source.join("etc/hostname"), b"banger\n").unwrap();
    let options = Options {
        reproducible: Some(Reproducible {
            seed: 42,
            timestamp: 1_700_000_000,
            clamp_mtime: false,
        }),
        ..Options::default()
    };

    // Each build reads the source again, after the first build's reads
    // updated its atimes.
    let first = dir.path().join("first.ext4");
    let second = dir.path().join("second.ext4");
    for image in [&first, &second] {
        let tree = tree_from_dir(&source).unwrap();
        let file = File::create(image).unwrap();
        ext4_writer::write_file(&tree, &options, &file).unwrap();
    }

    oracle::assert_fsck_clean(&first);
    assert!(
        fs::read(&first).unwrap() == fs::read(&second).unwrap(),
        "the two images differ"
    );
}
