//! Every node kind, owner, time and name edge case, written and read back
//! with `ext4-view` and `debugfs`, each image checked by `e2fsck -fn`.

mod common;

use common::*;
use ext4_writer::{BlockSize, FileData, Metadata, NodeKind, Options, Timestamp, Tree};

fn file(bytes: &[u8]) -> NodeKind {
    NodeKind::Regular(FileData::from_bytes(bytes.to_vec()))
}

/// Builds a tree with a few nodes of every kind.
fn mixed_tree() -> Tree {
    let mut tree = empty_tree();
    let root = tree.root();
    let etc = tree
        .add(root, b"etc", NodeKind::directory(), meta(0o755))
        .unwrap();
    tree.add(etc, b"hostname", file(b"banger\n"), meta(0o644))
        .unwrap();
    tree.add(etc, b"empty", file(b""), meta(0o600)).unwrap();
    let big: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
    tree.add(root, b"big", file(&big), meta(0o755)).unwrap();
    tree.add(root, b"sudo", file(b"#!/bin/true\n"), meta(0o4755))
        .unwrap();
    tree.add(root, b"tmp", NodeKind::directory(), meta(0o1777))
        .unwrap();
    tree.add(
        root,
        b"link",
        NodeKind::Symlink(b"etc/hostname".to_vec()),
        meta(0o777),
    )
    .unwrap();
    tree.add(
        root,
        b"null",
        NodeKind::CharDevice { major: 1, minor: 3 },
        meta(0o666),
    )
    .unwrap();
    tree.add(
        root,
        b"sda",
        NodeKind::BlockDevice { major: 8, minor: 0 },
        meta(0o660),
    )
    .unwrap();
    tree.add(
        root,
        b"nvme",
        NodeKind::BlockDevice {
            major: 259,
            minor: 1_048_575,
        },
        meta(0o660),
    )
    .unwrap();
    tree.add(root, b"fifo", NodeKind::Fifo, meta(0o644))
        .unwrap();
    tree.add(root, b"socket", NodeKind::Socket, meta(0o755))
        .unwrap();
    tree
}

#[test]
fn mixed_tree_reads_back() {
    let tree = mixed_tree();
    let image = write_checked(&tree, &Options::default());
    let fs = image.view();

    assert_eq!(fs.read("/etc/hostname").unwrap(), b"banger\n");
    assert_eq!(fs.read("/etc/empty").unwrap(), b"");
    let big: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
    assert_eq!(fs.read("/big").unwrap(), big);
    assert_eq!(fs.metadata("/sudo").unwrap().mode() & 0o7777, 0o4755);
    assert_eq!(fs.metadata("/tmp").unwrap().mode() & 0o7777, 0o1777);
    assert!(fs.metadata("/tmp").unwrap().is_dir());
    assert_eq!(
        fs.read_link("/link").unwrap().as_path(),
        ext4_view::Path::new("etc/hostname")
    );
    assert!(fs
        .symlink_metadata("/null")
        .unwrap()
        .file_type()
        .is_char_dev());
    assert!(fs
        .symlink_metadata("/sda")
        .unwrap()
        .file_type()
        .is_block_dev());
    assert!(fs.symlink_metadata("/fifo").unwrap().file_type().is_fifo());
    assert!(fs
        .symlink_metadata("/socket")
        .unwrap()
        .file_type()
        .is_socket());
}

#[test]
fn device_numbers_both_encodings() {
    let image = write_checked(&mixed_tree(), &Options::default());
    // debugfs decodes i_block[0] when it is set (old encoding), else
    // i_block[1] (new encoding).
    for (path, expected) in [
        ("/null", "number: 01:03 "),
        ("/sda", "number: 08:00 "),
        ("/nvme", "number: 259:1048575 "),
    ] {
        let stat = debugfs(&image.path, &format!("stat {path}"));
        assert!(stat.contains(expected), "{path}: {stat}");
    }
}

#[test]
fn small_block_sizes() {
    for block_size in [BlockSize::B1024, BlockSize::B2048] {
        let options = Options {
            block_size,
            ..Options::default()
        };
        let image = write_checked(&mixed_tree(), &options);
        assert_eq!(image.report.block_size, block_size.bytes());
        let big: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        assert_eq!(image.view().read("/big").unwrap(), big, "{block_size:?}");
    }
}

/// Makes a symlink target of `len` bytes with a `/` every 50 bytes, so
/// that no component is longer than a name.
fn symlink_target(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            if i % 50 == 49 {
                b'/'
            } else {
                b"abcdefghijklmnopqrstuvwxyz"[i % 26]
            }
        })
        .collect()
}

#[test]
fn symlink_lengths() {
    let mut tree = empty_tree();
    let root = tree.root();
    for len in [1usize, 59, 60, 4095] {
        let target = symlink_target(len);
        tree.add(
            root,
            format!("l{len}").as_bytes(),
            NodeKind::Symlink(target),
            meta(0o777),
        )
        .unwrap();
    }
    let image = write_checked(&tree, &Options::default());
    let fs = image.view();
    for len in [1usize, 59, 60, 4095] {
        let target = symlink_target(len);
        let read = fs.read_link(format!("/l{len}").as_str()).unwrap();
        assert_eq!(read.as_ref(), target.as_slice(), "symlink of {len} bytes");
    }
    let fast = debugfs(&image.path, "stat /l59");
    assert!(
        fast.contains("Fast link dest"),
        "59 bytes is a fast symlink: {fast}"
    );
    let slow = debugfs(&image.path, "stat /l60");
    assert!(slow.contains("EXTENTS:"), "60 bytes uses a block: {slow}");
}

#[test]
fn symlink_too_long_for_block_rejected() {
    let mut tree = empty_tree();
    let root = tree.root();
    tree.add(root, b"l", NodeKind::Symlink(vec![b'x'; 1024]), meta(0o777))
        .unwrap();
    let options = Options {
        block_size: BlockSize::B1024,
        ..Options::default()
    };
    let error = ext4_writer::minimum_size(&tree, &options).unwrap_err();
    assert!(
        matches!(error, ext4_writer::Error::InvalidSymlink { .. }),
        "{error}"
    );
}

#[test]
fn names_of_255_arbitrary_bytes() {
    let mut tree = empty_tree();
    let root = tree.root();
    let mut names = Vec::new();
    for seed in 0u8..8 {
        let name: Vec<u8> = (0..255u32)
            .map(
                |i| match (i.to_le_bytes()[0]).wrapping_mul(31).wrapping_add(seed) {
                    0 | b'/' => b'\n',
                    byte => byte,
                },
            )
            .collect();
        tree.add(root, &name, file(&[seed]), meta(0o644)).unwrap();
        names.push(name);
    }
    let image = write_checked(&tree, &Options::default());
    let fs = image.view();
    let mut listed: Vec<Vec<u8>> = fs
        .read_dir("/")
        .unwrap()
        .map(|entry| entry.unwrap().file_name().as_ref().to_vec())
        .filter(|name| name.len() == 255)
        .collect();
    listed.sort();
    names.sort();
    assert_eq!(listed, names);
    let path = [b"/".as_slice(), &names[3]].concat();
    assert_eq!(fs.read(path.as_slice()).unwrap().len(), 1);
}

#[test]
fn large_uids_and_gids() {
    let mut tree = empty_tree();
    let root = tree.root();
    let ids = [65535u32, 65536, 100_000, 4_294_967_294];
    for id in ids {
        let metadata = Metadata::new(0o644, id, id ^ 1, Timestamp::new(0, 0));
        tree.add(root, format!("u{id}").as_bytes(), file(b"x"), metadata)
            .unwrap();
    }
    let image = write_checked(&tree, &Options::default());
    let fs = image.view();
    for id in ids {
        let metadata = fs.metadata(format!("/u{id}").as_str()).unwrap();
        assert_eq!(metadata.uid(), id);
        assert_eq!(metadata.gid(), id ^ 1);
    }
}

#[test]
fn timestamps_with_epoch_bits() {
    // Year 2400, 1 January 00:00:00 UTC.
    let year_2400 = 13_569_465_600i64;
    // (time, i_mtime and i_mtime_extra as debugfs prints them): the extra
    // field is nanoseconds << 2 with two epoch bits that extend the seconds.
    let cases = [
        (Timestamp::new(-1, 0), "0xffffffff:00000000"),
        (Timestamp::new(0, 0), "0x00000000:00000000"),
        (Timestamp::new(1 << 31, 5), "0x80000000:00000015"),
        (
            Timestamp::new(year_2400, 999_999_999),
            "0x28cd9d00:ee6b27ff",
        ),
        (Timestamp::new(-(1 << 31), 1), "0x80000000:00000004"),
    ];
    let mut tree = empty_tree();
    let root = tree.root();
    for (index, (time, _)) in cases.iter().enumerate() {
        let mut metadata = meta(0o644);
        metadata.mtime = *time;
        metadata.crtime = *time;
        tree.add(root, format!("t{index}").as_bytes(), file(b"t"), metadata)
            .unwrap();
    }
    let image = write_checked(&tree, &Options::default());
    for (index, (time, raw)) in cases.iter().enumerate() {
        let stat = debugfs(&image.path, &format!("stat /t{index}"));
        assert!(
            stat.contains(&format!(" mtime: {raw}")),
            "mtime {time:?}: {stat}"
        );
        assert!(
            stat.contains(&format!("crtime: {raw}")),
            "crtime {time:?}: {stat}"
        );
    }
    let stat_2400 = debugfs(&image.path, "stat /t3");
    assert!(
        stat_2400.contains("2400"),
        "debugfs decodes the epoch bits: {stat_2400}"
    );

    // NOTE: ext4-view 1.0.0 rejects i_mtime values with bit 31 set (it
    // converts the u32 with i32::try_from), so only times from 1970 to 2038
    // are read back through it.
    let fs = image.view();
    let modified = fs.metadata("/t1").unwrap().modified();
    assert_eq!((modified.seconds(), modified.nanoseconds()), (0, 0));
}

#[test]
fn timestamp_out_of_range_rejected() {
    let mut tree = empty_tree();
    let root = tree.root();
    let mut metadata = meta(0o644);
    metadata.mtime = Timestamp::new(1 << 40, 0);
    tree.add(root, b"future", file(b"x"), metadata).unwrap();
    let error = ext4_writer::minimum_size(&tree, &Options::default()).unwrap_err();
    assert!(
        matches!(error, ext4_writer::Error::TimestampOutOfRange { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("/future"), "{error}");
}

#[test]
fn hard_links_share_inode() {
    let mut tree = empty_tree();
    let root = tree.root();
    let dir = tree
        .add(root, b"d", NodeKind::directory(), meta(0o755))
        .unwrap();
    let regular = tree
        .add(root, b"file", file(b"shared"), meta(0o644))
        .unwrap();
    let symlink = tree
        .add(
            root,
            b"sym",
            NodeKind::Symlink(b"file".to_vec()),
            meta(0o777),
        )
        .unwrap();
    let device = tree
        .add(
            root,
            b"dev",
            NodeKind::CharDevice { major: 1, minor: 5 },
            meta(0o666),
        )
        .unwrap();
    tree.link(dir, b"file2", regular).unwrap();
    tree.link(dir, b"file3", regular).unwrap();
    tree.link(dir, b"sym2", symlink).unwrap();
    tree.link(dir, b"dev2", device).unwrap();
    let image = write_checked(&tree, &Options::default());

    for (first, second, links) in [
        ("/file", "/d/file2", 3),
        ("/sym", "/d/sym2", 2),
        ("/dev", "/d/dev2", 2),
    ] {
        let stat_first = debugfs(&image.path, &format!("stat {first}"));
        let stat_second = debugfs(&image.path, &format!("stat {second}"));
        let inode_line = |stat: &str| {
            stat.lines()
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .nth(1)
                .map(str::to_string)
        };
        assert_eq!(
            inode_line(&stat_first),
            inode_line(&stat_second),
            "{first} and {second}"
        );
        assert!(
            stat_first.contains(&format!("Links: {links}")),
            "{first}: {stat_first}"
        );
    }
    assert_eq!(image.view().read("/d/file3").unwrap(), b"shared");
}

#[test]
fn too_many_links_rejected() {
    let mut tree = empty_tree();
    let root = tree.root();
    let target = tree.add(root, b"f", file(b"x"), meta(0o644)).unwrap();
    let dir = tree
        .add(root, b"links", NodeKind::directory(), meta(0o755))
        .unwrap();
    for index in 0..65000u32 {
        tree.link(dir, format!("{index}").as_bytes(), target)
            .unwrap();
    }
    let error = ext4_writer::minimum_size(&tree, &Options::default()).unwrap_err();
    match error {
        ext4_writer::Error::TooManyLinks { path, count } => {
            assert_eq!(path, "/f");
            assert_eq!(count, 65001);
        }
        other => panic!("expected TooManyLinks, got {other}"),
    }
}

#[test]
fn directory_link_counts() {
    let mut tree = empty_tree();
    let root = tree.root();
    let parent = tree
        .add(root, b"p", NodeKind::directory(), meta(0o755))
        .unwrap();
    for index in 0..3 {
        tree.add(
            parent,
            format!("c{index}").as_bytes(),
            NodeKind::directory(),
            meta(0o755),
        )
        .unwrap();
    }
    let image = write_checked(&tree, &Options::default());
    assert!(debugfs(&image.path, "stat /p").contains("Links: 5"));
    // The root contains p and lost+found.
    assert!(debugfs(&image.path, "stat /").contains("Links: 4"));
}

#[test]
fn label_and_uuid_stored() {
    let options = Options {
        label: Some("rootfs".to_string()),
        uuid: Some([0x11; 16]),
        hash_seed: Some([0x22; 16]),
        ..Options::default()
    };
    let image = write_checked(&empty_tree(), &options);
    let fs = image.view();
    assert_eq!(fs.label().to_str().unwrap(), "rootfs");
    let header = debugfs(&image.path, "stats");
    assert!(
        header.contains("11111111-1111-1111-1111-111111111111"),
        "{header}"
    );
}

#[test]
fn label_too_long_rejected() {
    let options = Options {
        label: Some("x".repeat(17)),
        ..Options::default()
    };
    let error = ext4_writer::minimum_size(&empty_tree(), &options).unwrap_err();
    assert!(
        matches!(
            error,
            ext4_writer::Error::InvalidOption {
                option: "label",
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn journal_off_leaves_no_journal() {
    let options = Options {
        journal: false,
        ..Options::default()
    };
    let image = write_checked(&mixed_tree(), &options);
    let stats = debugfs(&image.path, "stats");
    assert!(!stats.contains("has_journal"), "{stats}");
    let with_journal = write_checked(&mixed_tree(), &Options::default());
    assert!(debugfs(&with_journal.path, "stats").contains("has_journal"));
}
