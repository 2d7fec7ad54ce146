//! The real Debian root filesystem from the test fixtures, read from disk,
//! written as an image, checked by `e2fsck -fn` and compared file by file
//! through `ext4-view`.
//!
//! The fixtures come from tests/fixtures/build-images.sh; `BANGER_FIXTURES`
//! points at them (default /var/tmp/banger-fixtures).

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;

fn fixture_rootfs(name: &str) -> PathBuf {
    let fixtures =
        std::env::var_os("BANGER_FIXTURES").unwrap_or_else(|| "/var/tmp/banger-fixtures".into());
    let path = Path::new(&fixtures).join("rootfs").join(name);
    assert!(
        path.join("etc/os-release").exists(),
        "missing fixture {}: run tests/fixtures/build-images.sh or set BANGER_FIXTURES",
        path.display()
    );
    path
}

/// Compares every entry under `host` with `image_path` in the image.
fn compare(host: &Path, fs: &ext4_view::Ext4, image_path: &[u8], checked: &mut usize) {
    for entry in std::fs::read_dir(host).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let name = std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str()).to_vec();
        let child = if image_path == b"/" {
            [b"/", name.as_slice()].concat()
        } else {
            [image_path, b"/", &name].concat()
        };
        let host_meta = std::fs::symlink_metadata(entry.path()).unwrap();
        let image_meta = fs
            .symlink_metadata(child.as_slice())
            .unwrap_or_else(|error| {
                panic!("{} missing from the image: {error}", entry.path().display())
            });
        assert_eq!(
            u32::from(image_meta.mode() & 0o7777),
            host_meta.mode() & 0o7777,
            "{}",
            entry.path().display()
        );
        assert_eq!(
            image_meta.uid(),
            host_meta.uid(),
            "{}",
            entry.path().display()
        );
        assert_eq!(
            image_meta.gid(),
            host_meta.gid(),
            "{}",
            entry.path().display()
        );
        let file_type = host_meta.file_type();
        if file_type.is_dir() {
            compare(&entry.path(), fs, &child, checked);
        } else if file_type.is_file() {
            assert_eq!(
                image_meta.len(),
                host_meta.len(),
                "{}",
                entry.path().display()
            );
            let content = fs.read(child.as_slice()).unwrap();
            assert!(
                content == std::fs::read(entry.path()).unwrap(),
                "content of {}",
                entry.path().display()
            );
        } else if file_type.is_symlink() {
            let target = std::fs::read_link(entry.path()).unwrap();
            let read = fs.read_link(child.as_slice()).unwrap();
            assert_eq!(
                read.as_ref(),
                std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str())
            );
        }
        *checked += 1;
    }
}

#[test]
fn debian_minbase_round_trips() {
    let rootfs = fixture_rootfs("minbase");
    let tree = ext4_writer::source::dir::tree_from_dir(&rootfs).expect("read the fixture tree");
    let image = write_checked(&tree, &reproducible());
    let fs = image.view();
    let mut checked = 0;
    compare(&rootfs, &fs, b"/", &mut checked);
    assert!(
        checked > 5000,
        "the Debian tree has thousands of entries: {checked}"
    );
}
