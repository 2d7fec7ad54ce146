//! Large directories and files: htree depth, dir_nlink, sparse files and
//! deep extent trees, each image checked by `e2fsck -fn`.

mod common;

use std::sync::Arc;

use common::*;
use ext4_writer::{FileData, NodeKind, Options, ReadAt, Segment};

#[test]
fn directory_of_100000_files_has_two_level_htree() {
    let mut tree = empty_tree();
    let root = tree.root();
    let dir = tree
        .add(root, b"many", NodeKind::directory(), meta(0o755))
        .unwrap();
    for index in 0..100_000u32 {
        tree.add(
            dir,
            format!("file-{index:06}").as_bytes(),
            NodeKind::Fifo,
            meta(0o644),
        )
        .unwrap();
    }
    let image = write_checked(&tree, &reproducible());

    let dump = debugfs(&image.path, "htree_dump /many");
    assert!(
        dump.contains("Indirect levels: 1"),
        "{}",
        &dump[..dump.len().min(2000)]
    );
    let fs = image.view();
    assert_eq!(fs.read_dir("/many").unwrap().count(), 100_000 + 2);
    assert!(fs.exists("/many/file-054321").unwrap());
}

#[test]
fn directory_of_70000_subdirectories_uses_dir_nlink() {
    let mut tree = empty_tree();
    let root = tree.root();
    let dir = tree
        .add(root, b"dirs", NodeKind::directory(), meta(0o755))
        .unwrap();
    for index in 0..70_000u32 {
        tree.add(
            dir,
            format!("d{index}").as_bytes(),
            NodeKind::directory(),
            meta(0o755),
        )
        .unwrap();
    }
    let image = write_checked(&tree, &reproducible());
    let stat = debugfs(&image.path, "stat /dirs");
    assert!(
        stat.contains("Links: 1 "),
        "more than 65000 links store 1: {stat}"
    );
    assert!(debugfs(&image.path, "stats").contains("dir_nlink"));
    assert_eq!(image.view().read_dir("/dirs").unwrap().count(), 70_000 + 2);
}

/// A source that returns the same byte everywhere, without memory.
struct Filled(u8);

impl ReadAt for Filled {
    fn read_exact_at(&self, buf: &mut [u8], _offset: u64) -> std::io::Result<()> {
        buf.fill(self.0);
        Ok(())
    }
}

#[test]
fn sparse_5_gib_file_stays_sparse() {
    let size = 5u64 << 30;
    let source: Arc<dyn ReadAt> = Arc::new(Filled(0xab));
    let segments = vec![
        Segment {
            file_offset: 0,
            len: 4096,
            source: source.clone(),
            source_offset: 0,
        },
        Segment {
            file_offset: 3 << 30,
            len: 10,
            source: source.clone(),
            source_offset: 0,
        },
        Segment {
            file_offset: size - 1,
            len: 1,
            source,
            source_offset: 0,
        },
    ];
    let mut tree = empty_tree();
    let root = tree.root();
    let data = FileData::from_segments(size, segments).unwrap();
    tree.add(root, b"sparse", NodeKind::Regular(data), meta(0o644))
        .unwrap();
    let image = write_checked(&tree, &Options::default());

    assert!(
        image.report.size_bytes < 200 << 20,
        "the image holds 3 data blocks, not 5 GiB: {:?}",
        image.report
    );
    let stat = debugfs(&image.path, "stat /sparse");
    assert!(stat.contains(&format!("Size: {size}")), "{stat}");
    let fs = image.view();
    let head = read_range(&fs, "/sparse", 4090, 16);
    assert_eq!(
        head,
        [0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    let tail = read_range(&fs, "/sparse", size - 4, 4);
    assert_eq!(tail, [0, 0, 0, 0xab]);
}

/// Reads `len` bytes at `offset` from a file through ext4-view.
fn read_range(fs: &ext4_view::Ext4, path: &str, offset: u64, len: usize) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = fs.open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; len];
    file.read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn file_of_3000_fragments_has_depth_two() {
    let source: Arc<dyn ReadAt> = Arc::new(Filled(7));
    let segments: Vec<Segment> = (0..3000u64)
        .map(|index| Segment {
            file_offset: index * 8192,
            len: 4096,
            source: source.clone(),
            source_offset: 0,
        })
        .collect();
    let data = FileData::from_segments(3000 * 8192, segments).unwrap();
    let mut tree = empty_tree();
    let root = tree.root();
    tree.add(root, b"fragments", NodeKind::Regular(data), meta(0o644))
        .unwrap();
    let image = write_checked(&tree, &Options::default());

    let extents = debugfs(&image.path, "ex /fragments");
    assert!(
        extents.contains(" 0/ 2 "),
        "root level of a depth-2 tree: {}",
        &extents[..extents.len().min(1000)]
    );
    assert!(
        extents.contains(" 2/ 2 "),
        "leaf level: {}",
        &extents[..extents.len().min(1000)]
    );
    let fs = image.view();
    assert_eq!(
        read_range(&fs, "/fragments", 2999 * 8192, 4096),
        vec![7u8; 4096]
    );
    assert_eq!(
        read_range(&fs, "/fragments", 2998 * 8192 + 4096, 4096),
        vec![0u8; 4096]
    );
}

#[test]
fn zero_blocks_become_holes() {
    let mut content = vec![0u8; 10 * 4096];
    content[0] = 1;
    content[9 * 4096] = 2;
    let mut tree = empty_tree();
    let root = tree.root();
    tree.add(
        root,
        b"mostly-zero",
        NodeKind::Regular(FileData::from_bytes(content.clone())),
        meta(0o644),
    )
    .unwrap();
    let image = write_checked(&tree, &Options::default());
    let stat = debugfs(&image.path, "stat /mostly-zero");
    assert!(
        stat.contains("Blockcount: 16"),
        "two 4 KiB blocks are 16 sectors: {stat}"
    );
    assert_eq!(image.view().read("/mostly-zero").unwrap(), content);
}

#[test]
fn shared_xattr_block_has_refcount() {
    let mut tree = empty_tree();
    let root = tree.root();
    let shared = ext4_writer::Xattr {
        name: b"user.big".to_vec(),
        value: vec![b'v'; 3000],
    };
    for index in 0..1000u32 {
        let mut metadata = meta(0o644);
        metadata.xattrs = vec![shared.clone()];
        tree.add(
            root,
            format!("f{index}").as_bytes(),
            NodeKind::Regular(FileData::empty()),
            metadata,
        )
        .unwrap();
    }
    let mut small = meta(0o644);
    small.xattrs = vec![ext4_writer::Xattr {
        name: b"user.small".to_vec(),
        value: b"in-inode".to_vec(),
    }];
    tree.add(root, b"small", NodeKind::Fifo, small).unwrap();
    let image = write_checked(&tree, &Options::default());

    let first = debugfs(&image.path, "stat /f0");
    let last = debugfs(&image.path, "stat /f999");
    let acl_line = |stat: &str| {
        stat.lines()
            .find(|line| line.starts_with("File ACL:"))
            .map(str::to_string)
    };
    assert_eq!(acl_line(&first), acl_line(&last), "one block is shared");
    assert_ne!(acl_line(&first).as_deref(), Some("File ACL: 0"));
    let value = debugfs(&image.path, "ea_get /f500 user.big");
    assert!(
        value.contains(&"v".repeat(100)),
        "{}",
        &value[..value.len().min(300)]
    );
    let small_value = debugfs(&image.path, "ea_get /small user.small");
    assert!(small_value.contains("in-inode"), "{small_value}");
    assert!(
        debugfs(&image.path, "stat /small").contains("File ACL: 0"),
        "a small xattr stays in the inode"
    );
}

#[test]
fn hashed_directory_with_high_bytes_in_names() {
    // Bytes above 0x7f hash differently with signed and unsigned chars;
    // e2fsck recomputes every hash with the superblock's signed flag.
    let mut tree = empty_tree();
    let root = tree.root();
    let dir = tree
        .add(root, b"high", NodeKind::directory(), meta(0o755))
        .unwrap();
    for index in 0..400u32 {
        let mut name = vec![0xe9u8; 30];
        name.extend(format!("{index}").bytes().map(|digit| digit | 0x80));
        tree.add(dir, &name, NodeKind::Fifo, meta(0o644)).unwrap();
    }
    for block_size in [ext4_writer::BlockSize::B1024, ext4_writer::BlockSize::B4096] {
        let options = Options {
            block_size,
            ..Options::default()
        };
        let image = write_checked(&tree, &options);
        assert!(
            debugfs(&image.path, "stat /high").contains("Flags: 0x81000"),
            "indexed and extent-mapped"
        );
        assert_eq!(image.view().read_dir("/high").unwrap().count(), 402);
    }
}

#[test]
fn unaligned_segments_share_blocks() {
    let first: Arc<dyn ReadAt> = Arc::new(vec![1u8; 10_000]);
    let second: Arc<dyn ReadAt> = Arc::new(vec![2u8; 10_000]);
    let layout = [
        (100u64, 100u64, &first),
        (200, 4800, &second),
        (5000, 3, &first),
        (9000, 1, &second),
        (1 << 20, 5000, &first),
    ];
    let segments: Vec<Segment> = layout
        .iter()
        .map(|(file_offset, len, source)| Segment {
            file_offset: *file_offset,
            len: *len,
            source: Arc::clone(source),
            source_offset: 17,
        })
        .collect();
    let size = (1 << 20) + 6000;

    let mut expected = vec![0u8; usize::try_from(size).unwrap()];
    for (file_offset, len, source) in layout {
        let value = if Arc::ptr_eq(source, &first) { 1 } else { 2 };
        let start = usize::try_from(file_offset).unwrap();
        let end = usize::try_from(file_offset + len).unwrap();
        expected[start..end].fill(value);
    }
    let mut tree = empty_tree();
    let root = tree.root();
    tree.add(
        root,
        b"pieces",
        NodeKind::Regular(FileData::from_segments(size, segments).unwrap()),
        meta(0o644),
    )
    .unwrap();
    let image = write_checked(&tree, &Options::default());
    assert!(image.view().read("/pieces").unwrap() == expected);
}

#[test]
fn deep_directory_chain() {
    let mut tree = empty_tree();
    let mut dir = tree.root();
    for _ in 0..3000 {
        dir = tree
            .add(dir, b"d", NodeKind::directory(), meta(0o755))
            .unwrap();
    }
    tree.add(
        dir,
        b"leaf",
        NodeKind::Regular(FileData::from_bytes(b"deep".to_vec())),
        meta(0o644),
    )
    .unwrap();
    // e2fsck's pass 3 walks every directory up to the root.
    let image = write_checked(&tree, &Options::default());

    // ext4-view resolves at most a few hundred components per path.
    let path = "/d".repeat(400);
    assert!(image.view().metadata(path.as_str()).unwrap().is_dir());
    let leaf = debugfs(&image.path, "ncheck 3012");
    assert!(
        leaf.ends_with("/leaf\n"),
        "{}",
        &leaf[leaf.len().saturating_sub(200)..]
    );
}

#[test]
fn unlinked_nodes_not_written() {
    let mut tree = empty_tree();
    let root = tree.root();
    let gone = tree
        .add(root, b"gone", NodeKind::directory(), meta(0o755))
        .unwrap();
    tree.add(
        gone,
        b"inside",
        NodeKind::Regular(FileData::from_bytes(vec![9u8; 100_000])),
        meta(0o644),
    )
    .unwrap();
    tree.create(NodeKind::Fifo, meta(0o644)).unwrap();
    tree.unlink(root, b"gone").unwrap();
    let image = write_checked(&tree, &Options::default());
    assert!(!image.view().exists("/gone").unwrap());
    // Inodes 1 to 11 are reserved, so nothing beyond lost+found is in use.
    assert!(debugfs(&image.path, "stats").contains("Free inodes:"));
    let inodes_used = image.report.inodes - image.report.free_inodes;
    assert_eq!(inodes_used, 11);
}
