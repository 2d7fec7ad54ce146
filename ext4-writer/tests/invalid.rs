//! Input the writer rejects with an error instead of writing a broken
//! image, and the special handling of `/lost+found`.

mod common;

use std::sync::Arc;

use common::*;
use ext4_writer::{Error, FileData, NodeKind, Options, ReadAt, Segment};

#[test]
fn file_above_max_size_rejected() {
    let mut tree = empty_tree();
    let root = tree.root();
    let size = u64::from(u32::MAX) * 4096 + 1;
    tree.add(
        root,
        b"huge",
        NodeKind::Regular(FileData::sparse(size)),
        meta(0o644),
    )
    .unwrap();
    let error = ext4_writer::minimum_size(&tree, &Options::default()).unwrap_err();
    match error {
        Error::FileTooLarge {
            path,
            size: reported,
            block_size,
            ..
        } => {
            assert_eq!(path, "/huge");
            assert_eq!(reported, size);
            assert_eq!(block_size, 4096);
        }
        other => panic!("expected FileTooLarge, got {other}"),
    }
}

#[test]
fn sparse_file_above_128_gib_written() {
    let size = 200u64 << 30;
    let source: Arc<dyn ReadAt> = Arc::new(vec![0x5au8; 4096]);
    let segments = vec![
        Segment {
            file_offset: 150 << 30,
            len: 4096,
            source: source.clone(),
            source_offset: 0,
        },
        Segment {
            file_offset: size - 4096,
            len: 4096,
            source,
            source_offset: 0,
        },
    ];
    let mut tree = empty_tree();
    let root = tree.root();
    tree.add(
        root,
        b"big",
        NodeKind::Regular(FileData::from_segments(size, segments).unwrap()),
        meta(0o644),
    )
    .unwrap();
    let image = write_checked(&tree, &Options::default());
    let stat = debugfs(&image.path, "stat /big");
    assert!(stat.contains(&format!("Size: {size}")), "{stat}");
    assert!(
        stat.contains("Blockcount: 16"),
        "two data blocks only: {stat}"
    );
}

#[test]
fn directory_with_two_names_rejected() {
    let mut tree = empty_tree();
    let root = tree.root();
    let node = tree.add(root, b"a", NodeKind::Fifo, meta(0o644)).unwrap();
    tree.link(root, b"b", node).unwrap();
    tree.node_mut(node).kind = NodeKind::directory();
    let error = ext4_writer::minimum_size(&tree, &Options::default()).unwrap_err();
    assert!(
        matches!(error, Error::HardLinkToDirectory { .. }),
        "{error}"
    );
}

#[test]
fn root_not_directory_rejected() {
    let mut tree = empty_tree();
    let root = tree.root();
    tree.node_mut(root).kind = NodeKind::Fifo;
    let error = ext4_writer::minimum_size(&tree, &Options::default()).unwrap_err();
    assert!(matches!(error, Error::RootNotDirectory), "{error}");
}

#[test]
fn lost_and_found_file_rejected() {
    let mut tree = empty_tree();
    let root = tree.root();
    tree.add(root, b"lost+found", NodeKind::Fifo, meta(0o644))
        .unwrap();
    let error = ext4_writer::minimum_size(&tree, &Options::default()).unwrap_err();
    assert!(matches!(error, Error::InvalidLostAndFound), "{error}");
}

#[test]
fn lost_and_found_from_tree_is_inode_11() {
    let mut tree = empty_tree();
    let root = tree.root();
    let mut metadata = meta(0o750);
    metadata.uid = 1234;
    let lost = tree
        .add(root, b"lost+found", NodeKind::directory(), metadata)
        .unwrap();
    tree.add(
        lost,
        b"orphan",
        NodeKind::Regular(FileData::from_bytes(b"x".to_vec())),
        meta(0o600),
    )
    .unwrap();
    let image = write_checked(&tree, &Options::default());
    let stat = debugfs(&image.path, "stat /lost+found");
    assert!(stat.starts_with("Inode: 11 "), "{stat}");
    assert!(stat.contains("User:  1234"), "{stat}");
    assert!(
        stat.contains("Size: 16384"),
        "16 KiB as mke2fs makes it: {stat}"
    );
    assert_eq!(image.view().read("/lost+found/orphan").unwrap(), b"x");
}

#[test]
fn device_number_out_of_range_rejected() {
    for (major, minor) in [(4096u32, 0u32), (0, 1 << 20)] {
        let mut tree = empty_tree();
        let root = tree.root();
        tree.add(
            root,
            b"dev",
            NodeKind::CharDevice { major, minor },
            meta(0o600),
        )
        .unwrap();
        let error = ext4_writer::minimum_size(&tree, &Options::default()).unwrap_err();
        assert!(
            matches!(error, Error::InvalidDevice { .. }),
            "{major}:{minor}: {error}"
        );
    }
}

#[test]
fn empty_or_nul_symlink_rejected() {
    for target in [Vec::new(), b"a\0b".to_vec()] {
        let mut tree = empty_tree();
        let root = tree.root();
        tree.add(
            root,
            b"link",
            NodeKind::Symlink(target.clone()),
            meta(0o777),
        )
        .unwrap();
        let error = ext4_writer::minimum_size(&tree, &Options::default()).unwrap_err();
        assert!(
            matches!(error, Error::InvalidSymlink { .. }),
            "{target:?}: {error}"
        );
    }
}

/// A source that fails every read, standing in for a disk error.
struct FailingSource;

impl ReadAt for FailingSource {
    fn read_exact_at(&self, _buf: &mut [u8], _offset: u64) -> std::io::Result<()> {
        Err(std::io::Error::other("simulated read failure"))
    }
}

#[test]
fn source_read_error_reported() {
    let mut tree = empty_tree();
    let root = tree.root();
    let data = FileData::from_source(Arc::new(FailingSource), 0, 10);
    tree.add(root, b"broken", NodeKind::Regular(data), meta(0o644))
        .unwrap();
    let mut buffer = std::io::Cursor::new(Vec::new());
    let error = ext4_writer::write(&tree, &Options::default(), &mut buffer).unwrap_err();
    assert!(matches!(error, Error::Io { .. }), "{error}");
    assert!(
        error.to_string().contains("simulated read failure"),
        "{error}"
    );
    assert!(error.to_string().contains("/broken"), "{error}");
}

#[test]
fn xattr_errors_name_node_path() {
    let mut tree = empty_tree();
    let root = tree.root();
    let etc = tree
        .add(root, b"etc", NodeKind::directory(), meta(0o755))
        .unwrap();
    let mut metadata = meta(0o644);
    metadata.xattrs.push(ext4_writer::Xattr {
        name: b"bogus.ns".to_vec(),
        value: b"v".to_vec(),
    });
    tree.add(etc, b"bad", NodeKind::Fifo, metadata).unwrap();

    let error = ext4_writer::minimum_size(&tree, &Options::default()).unwrap_err();

    let message = error.to_string();
    assert!(message.contains("/etc/bad"), "{message}");
    assert!(message.contains("bogus.ns"), "{message}");
    assert!(matches!(error, Error::NodeXattrs { .. }), "{error:?}");
}
