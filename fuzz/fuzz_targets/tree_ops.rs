//! Drives `ext4_writer::Tree` with arbitrary create, add, link and unlink
//! sequences and checks every result against a plain model of the tree.
//!
//! After each operation the tree must agree with the model on every
//! directory's entries, and every stored name must be a valid ext4 name.
//! The directories reachable from the root must form a tree, so each has
//! exactly one name and none is its own ancestor.

#![no_main]

use std::collections::{BTreeMap, HashSet};

use arbitrary::Arbitrary;
use ext4_writer::tree::validate_name;
use ext4_writer::{Error, FileData, Metadata, NodeId, NodeKind, Timestamp, Tree};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Operation {
    /// `Tree::create`: a node no directory names yet.
    Create { kind: Kind },
    /// `Tree::add`.
    Add { parent: u8, name: Name, kind: Kind },
    /// `Tree::link`.
    Link { parent: u8, name: Name, target: u8 },
    /// `Tree::unlink`.
    Unlink { parent: u8, name: Name },
}

#[derive(Arbitrary, Debug, Clone)]
enum Kind {
    Directory,
    Regular(Vec<u8>),
    Symlink(Vec<u8>),
    CharDevice { major: u32, minor: u32 },
    Fifo,
    Socket,
}

impl Kind {
    fn to_node_kind(&self) -> NodeKind {
        match self {
            Kind::Directory => NodeKind::directory(),
            Kind::Regular(bytes) => NodeKind::Regular(FileData::from_bytes(bytes.clone())),
            Kind::Symlink(target) => NodeKind::Symlink(target.clone()),
            Kind::CharDevice { major, minor } => NodeKind::CharDevice {
                major: *major,
                minor: *minor,
            },
            Kind::Fifo => NodeKind::Fifo,
            Kind::Socket => NodeKind::Socket,
        }
    }
}

/// A directory entry name. Most inputs pick from a few short names so that
/// collisions, relinks and unlinks of existing entries happen often.
#[derive(Arbitrary, Debug)]
enum Name {
    Common(u8),
    Raw(Vec<u8>),
    Long { byte: u8, len: u16 },
}

impl Name {
    fn bytes(&self) -> Vec<u8> {
        const COMMON: [&[u8]; 8] = [b"a", b"b", b"etc", b"..", b".", b"a/b", b"nul\0", b""];
        match self {
            Name::Common(index) => COMMON[usize::from(*index) % COMMON.len()].to_vec(),
            Name::Raw(bytes) => bytes.clone(),
            Name::Long { byte, len } => vec![*byte; usize::from(*len % 300)],
        }
    }
}

/// The model: for every node, whether it is a directory and its entries.
struct Model {
    nodes: Vec<Option<BTreeMap<Vec<u8>, usize>>>,
}

impl Model {
    fn is_directory(&self, index: usize) -> bool {
        self.nodes[index].is_some()
    }

    fn is_referenced(&self, target: usize) -> bool {
        self.nodes
            .iter()
            .flatten()
            .any(|entries| entries.values().any(|id| *id == target))
    }

    /// The error `add` or `link` must return before its own checks, if any.
    fn name_error(&self, parent: usize, name: &[u8]) -> Option<&'static str> {
        if validate_name(name).is_err() {
            return Some("InvalidName");
        }
        match &self.nodes[parent] {
            None => Some("NotADirectory"),
            Some(entries) if entries.contains_key(name) => Some("AlreadyExists"),
            Some(_) => None,
        }
    }
}

fn error_kind(err: &Error) -> &'static str {
    match err {
        Error::InvalidName { .. } => "InvalidName",
        Error::AlreadyExists { .. } => "AlreadyExists",
        Error::NotADirectory => "NotADirectory",
        Error::HardLinkToDirectory { .. } => "HardLinkToDirectory",
        Error::TooManyNodes => "TooManyNodes",
        Error::InvalidSegments { .. } => "InvalidSegments",
        Error::Io { .. } => "Io",
        _ => "other",
    }
}

fn metadata() -> Metadata {
    Metadata::new(0o755, 0, 0, Timestamp::default())
}

fuzz_target!(|operations: Vec<Operation>| {
    let mut tree = Tree::new(metadata());
    let mut ids = vec![tree.root()];
    let mut model = Model {
        nodes: vec![Some(BTreeMap::new())],
    };
    let pick = |selector: u8, count: usize| usize::from(selector) % count;

    for operation in &operations {
        match operation {
            Operation::Create { kind } => {
                let id = tree.create(kind.to_node_kind(), metadata()).unwrap();
                assert_eq!(id.index(), ids.len());
                ids.push(id);
                model
                    .nodes
                    .push(matches!(kind, Kind::Directory).then(BTreeMap::new));
            }

            Operation::Add { parent, name, kind } => {
                let parent = pick(*parent, ids.len());
                let name = name.bytes();
                let expected = model.name_error(parent, &name);
                let result = tree.add(ids[parent], &name, kind.to_node_kind(), metadata());
                match (result, expected) {
                    (Ok(id), None) => {
                        assert_eq!(id.index(), ids.len(), "add returned a reused id");
                        ids.push(id);
                        model
                            .nodes
                            .push(matches!(kind, Kind::Directory).then(BTreeMap::new));
                        let index = model.nodes.len() - 1;
                        model.nodes[parent].as_mut().unwrap().insert(name, index);
                    }
                    (Err(err), Some(kind)) => assert_eq!(error_kind(&err), kind, "{err}"),
                    (result, expected) => {
                        panic!("add {name:?}: got {result:?}, model expected {expected:?}")
                    }
                }
            }

            Operation::Link {
                parent,
                name,
                target,
            } => {
                let parent = pick(*parent, ids.len());
                let target = pick(*target, ids.len());
                let name = name.bytes();
                let expected = model.name_error(parent, &name).or_else(|| {
                    let second_name = target == 0 || model.is_referenced(target);
                    (model.is_directory(target) && second_name).then_some("HardLinkToDirectory")
                });
                let result = tree.link(ids[parent], &name, ids[target]);
                match (result, expected) {
                    (Ok(()), None) => {
                        model.nodes[parent].as_mut().unwrap().insert(name, target);
                    }
                    (Err(err), Some(kind)) => assert_eq!(error_kind(&err), kind, "{err}"),
                    (result, expected) => {
                        panic!("link {name:?}: got {result:?}, model expected {expected:?}")
                    }
                }
            }

            Operation::Unlink { parent, name } => {
                let parent = pick(*parent, ids.len());
                let name = name.bytes();
                let result = tree.unlink(ids[parent], &name);
                match (&mut model.nodes[parent], result) {
                    (Some(entries), Ok(removed)) => {
                        let expected = entries.remove(&name).map(|index| ids[index]);
                        assert_eq!(removed, expected, "unlink {name:?}");
                    }
                    (None, Err(err)) => assert_eq!(error_kind(&err), "NotADirectory"),
                    (entries, result) => panic!(
                        "unlink {name:?}: got {result:?}, parent is a directory: {}",
                        entries.is_some()
                    ),
                }
            }
        }

        check_invariants(&tree, &ids, &model);
    }
});

fn check_invariants(tree: &Tree, ids: &[NodeId], model: &Model) {
    assert_eq!(tree.node_count(), model.nodes.len(), "node count");

    for (index, id) in ids.iter().enumerate() {
        let entries: Vec<(Vec<u8>, NodeId)> = tree
            .entries(*id)
            .map(|(name, child)| (name.to_vec(), child))
            .collect();
        let expected: Vec<(Vec<u8>, NodeId)> = model.nodes[index]
            .iter()
            .flatten()
            .map(|(name, child)| (name.clone(), ids[*child]))
            .collect();
        assert_eq!(entries, expected, "entries of node {index}");
        assert_eq!(
            tree.node(*id).kind.is_directory(),
            model.is_directory(index),
            "kind of node {index}"
        );

        for (name, child) in &entries {
            validate_name(name).unwrap();
            assert_eq!(tree.lookup(*id, name), Some(*child), "lookup {name:?}");
        }
    }

    // Directories reachable from the root: each is entered exactly once, so
    // none has a second name and none contains itself.
    let mut seen = HashSet::new();
    let mut stack = vec![tree.root()];
    seen.insert(tree.root());
    while let Some(dir) = stack.pop() {
        for (name, child) in tree.entries(dir) {
            if !tree.node(child).kind.is_directory() {
                continue;
            }
            assert!(
                seen.insert(child),
                "directory node {} is reachable twice (last as {name:?})",
                child.index()
            );
            stack.push(child);
        }
    }
}
