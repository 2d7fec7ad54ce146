//! Property test: random trees are written, read back with `ext4-view`
//! and compared node by node; every fourth image also goes through
//! `e2fsck -fn`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use ext4_writer::{BlockSize, FileData, Metadata, NodeId, NodeKind, Options, Timestamp, Tree};
use proptest::prelude::*;

/// One step of building a random tree.
#[derive(Clone, Debug)]
enum Step {
    Dir,
    File {
        content: Vec<u8>,
        zero_blocks: Vec<bool>,
    },
    Symlink(Vec<u8>),
    Device {
        block: bool,
        major: u32,
        minor: u32,
    },
    Fifo,
    Socket,
    /// A second name for an earlier non-directory node, by position.
    HardLink(usize),
}

#[derive(Clone, Debug)]
struct NodeSpec {
    /// Position of the parent among the directories created before.
    parent: usize,
    name: Vec<u8>,
    step: Step,
    permissions: u16,
    uid: u32,
    gid: u32,
    mtime: (i64, u32),
}

fn name_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        any::<u8>().prop_filter("no '/' or NUL", |b| *b != b'/' && *b != 0),
        1..=255,
    )
    .prop_filter("not . or ..", |name| name != b"." && name != b"..")
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Dir),
        4 => (prop::collection::vec(any::<u8>(), 0..20_000), prop::collection::vec(any::<bool>(), 5))
            .prop_map(|(content, zero_blocks)| Step::File { content, zero_blocks }),
        // ext4-view rejects targets with a component above 255 bytes.
        2 => prop::collection::vec(1u8..=255, 1..=255).prop_map(Step::Symlink),
        1 => (any::<bool>(), 0u32..4096, 0u32..(1 << 20)).prop_map(|(block, major, minor)| Step::Device { block, major, minor }),
        1 => Just(Step::Fifo),
        1 => Just(Step::Socket),
        2 => any::<usize>().prop_map(Step::HardLink),
    ]
}

fn node_strategy() -> impl Strategy<Value = NodeSpec> {
    (
        any::<usize>(),
        name_strategy(),
        step_strategy(),
        0u16..0o7777,
        any::<u32>(),
        any::<u32>(),
        // ext4-view 1.0.0 reads only times with bit 31 of i_mtime clear.
        (0i64..(1 << 31), 0u32..1_000_000_000),
    )
        .prop_map(
            |(parent, name, step, permissions, uid, gid, mtime)| NodeSpec {
                parent,
                name,
                step,
                permissions,
                uid,
                gid,
                mtime,
            },
        )
}

/// Builds the tree; returns it and the nodes in creation order.
fn build_tree(specs: &[NodeSpec]) -> Tree {
    let mut tree = empty_tree();
    let mut dirs = vec![tree.root()];
    let mut others: Vec<NodeId> = Vec::new();
    for spec in specs {
        let parent = dirs[spec.parent % dirs.len()];
        if tree.lookup(parent, &spec.name).is_some()
            || (parent == tree.root() && spec.name == b"lost+found")
        {
            continue;
        }
        let mut metadata = Metadata::new(
            spec.permissions,
            spec.uid,
            spec.gid,
            Timestamp::new(spec.mtime.0, spec.mtime.1),
        );
        metadata.mtime = Timestamp::new(spec.mtime.0, spec.mtime.1);
        let kind = match &spec.step {
            Step::Dir => NodeKind::directory(),
            Step::File {
                content,
                zero_blocks,
            } => {
                let mut content = content.clone();
                for (index, zero) in zero_blocks.iter().enumerate() {
                    let start = index * 4096;
                    if *zero && start < content.len() {
                        let end = (start + 4096).min(content.len());
                        content[start..end].fill(0);
                    }
                }
                NodeKind::Regular(FileData::from_bytes(content))
            }
            Step::Symlink(target) => NodeKind::Symlink(target.clone()),
            Step::Device {
                block: true,
                major,
                minor,
            } => NodeKind::BlockDevice {
                major: *major,
                minor: *minor,
            },
            Step::Device {
                block: false,
                major,
                minor,
            } => NodeKind::CharDevice {
                major: *major,
                minor: *minor,
            },
            Step::Fifo => NodeKind::Fifo,
            Step::Socket => NodeKind::Socket,
            Step::HardLink(target) => {
                if !others.is_empty() {
                    let target = others[target % others.len()];
                    tree.link(parent, &spec.name, target).unwrap();
                }
                continue;
            }
        };
        let is_dir = kind.is_directory();
        let id = tree.add(parent, &spec.name, kind, metadata).unwrap();
        if is_dir {
            dirs.push(id);
        } else {
            others.push(id);
        }
    }
    tree
}

/// Compares the directory `dir` of the tree with `path` in the image.
fn compare_dir(
    tree: &Tree,
    dir: NodeId,
    fs: &ext4_view::Ext4,
    path: &[u8],
) -> Result<(), TestCaseError> {
    let mut listed: Vec<Vec<u8>> = fs
        .read_dir(path)
        .map_err(|error| {
            TestCaseError::fail(format!(
                "read_dir {:?}: {error}",
                String::from_utf8_lossy(path)
            ))
        })?
        .map(|entry| entry.unwrap().file_name().as_ref().to_vec())
        .filter(|name| name != b"." && name != b"..")
        .collect();
    listed.sort();
    let mut expected: Vec<Vec<u8>> = tree.entries(dir).map(|(name, _)| name.to_vec()).collect();
    if dir == tree.root() {
        expected.push(b"lost+found".to_vec());
    }
    expected.sort();
    prop_assert_eq!(
        &listed,
        &expected,
        "entries of {:?}",
        String::from_utf8_lossy(path)
    );

    for (name, id) in tree.entries(dir) {
        let child_path = [path, b"/", name].concat();
        let child_path = if path == b"/" {
            [b"/", name].concat()
        } else {
            child_path
        };
        let node = tree.node(id);
        let metadata = fs.symlink_metadata(child_path.as_slice()).unwrap();
        prop_assert_eq!(metadata.mode() & 0o7777, node.metadata.permissions & 0o7777);
        prop_assert_eq!(metadata.uid(), node.metadata.uid);
        prop_assert_eq!(metadata.gid(), node.metadata.gid);
        let mtime = metadata.modified();
        prop_assert_eq!(
            (mtime.seconds(), mtime.nanoseconds()),
            (node.metadata.mtime.seconds, node.metadata.mtime.nanoseconds)
        );
        let file_type = metadata.file_type();
        match &node.kind {
            NodeKind::Directory(_) => {
                prop_assert!(file_type.is_dir());
                compare_dir(tree, id, fs, &child_path)?;
            }
            NodeKind::Regular(data) => {
                prop_assert!(file_type.is_regular_file());
                prop_assert_eq!(metadata.len(), data.size());
                let mut expected = vec![0u8; usize::try_from(data.size()).unwrap()];
                for segment in data.segments() {
                    let start = usize::try_from(segment.file_offset).unwrap();
                    let end = start + usize::try_from(segment.len).unwrap();
                    segment
                        .source
                        .read_exact_at(&mut expected[start..end], segment.source_offset)
                        .unwrap();
                }
                prop_assert!(
                    fs.read(child_path.as_slice()).unwrap() == expected,
                    "content of {:?}",
                    String::from_utf8_lossy(&child_path)
                );
            }
            NodeKind::Symlink(target) => {
                prop_assert!(file_type.is_symlink());
                let read = fs.read_link(child_path.as_slice()).unwrap();
                prop_assert_eq!(read.as_ref(), target.as_slice());
            }
            NodeKind::CharDevice { .. } => prop_assert!(file_type.is_char_dev()),
            NodeKind::BlockDevice { .. } => prop_assert!(file_type.is_block_dev()),
            NodeKind::Fifo => prop_assert!(file_type.is_fifo()),
            NodeKind::Socket => prop_assert!(file_type.is_socket()),
        }
    }
    Ok(())
}

static CASES: AtomicUsize = AtomicUsize::new(0);

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn random_tree_round_trips(
        specs in prop::collection::vec(node_strategy(), 0..120),
        block_size in prop_oneof![Just(BlockSize::B1024), Just(BlockSize::B2048), Just(BlockSize::B4096)],
    ) {
        let tree = build_tree(&specs);
        let options = Options { block_size, ..reproducible() };
        let image = if CASES.fetch_add(1, Ordering::Relaxed) % 4 == 0 {
            write_checked(&tree, &options)
        } else {
            write_unchecked(&tree, &options)
        };
        let fs = image.view();
        compare_dir(&tree, tree.root(), &fs, b"/")?;
    }
}
