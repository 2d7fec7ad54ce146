//! The first pass over the tree: inode numbers, link counts, input checks
//! and the blocks every node will need, before anything is written.

use std::collections::HashMap;

use crate::dir::{self, Entry};
use crate::error::Error;
use crate::extent::{self, MAX_EXTENT_LEN};
use crate::htree;
use crate::inode::{self, FIRST_INODE, IN_INODE_XATTR_ROOM, LOST_AND_FOUND_INODE, ROOT_INODE};
use crate::tree::{FileData, NodeId, NodeKind, Tree};
use crate::xattr;

/// Largest link count ext4 stores; directories above it use `dir_nlink`.
pub(crate) const EXT4_LINK_MAX: u64 = 65000;
/// Name of the directory e2fsck puts orphans in.
pub(crate) const LOST_AND_FOUND: &[u8] = b"lost+found";
/// Size mke2fs gives `lost+found`: 16 KiB and at least two blocks.
const LOST_AND_FOUND_BYTES: u64 = 16 * 1024;

/// Inode numbers and link counts of the reachable nodes.
pub(crate) struct Plan {
    /// Inode number of each node by index, 0 when no entry reaches it.
    pub inode_of: Vec<u32>,
    /// Link count of each node by index.
    pub links: Vec<u64>,
    /// The directory each node was first reached from, by index.
    pub parent: Vec<NodeId>,
    /// Nodes numbered from 12 upwards, in inode order.
    pub order: Vec<NodeId>,
    /// The tree's own `/lost+found`, or `None` when the writer adds one.
    pub lost_and_found: Option<NodeId>,
    /// Highest inode number in use.
    pub max_inode: u32,
}

impl Plan {
    /// Numbers every reachable node: the root is inode 2, `/lost+found`
    /// inode 11, and the rest follow from 12 directory by directory.
    pub fn new(tree: &Tree) -> Result<Self, Error> {
        let count = tree.node_count();
        let root = tree.root();
        if !tree.node(root).kind.is_directory() {
            return Err(Error::RootNotDirectory);
        }
        let lost_and_found = tree.lookup(root, LOST_AND_FOUND);
        if let Some(node) = lost_and_found {
            if !tree.node(node).kind.is_directory() {
                return Err(Error::InvalidLostAndFound);
            }
        }

        let mut plan = Plan {
            inode_of: vec![0; count],
            links: vec![0; count],
            parent: vec![root; count],
            order: Vec::new(),
            lost_and_found,
            max_inode: LOST_AND_FOUND_INODE,
        };
        plan.inode_of[root.index()] = ROOT_INODE;
        if let Some(node) = lost_and_found {
            plan.inode_of[node.index()] = LOST_AND_FOUND_INODE;
        }

        let mut next = FIRST_INODE + 1;
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            let mut subdirs = Vec::new();
            let mut subdir_count = 0u64;
            for (name, child) in tree.entries(dir) {
                plan.links[child.index()] += 1;
                let is_dir = tree.node(child).kind.is_directory();
                if is_dir {
                    subdir_count += 1;
                    if plan.links[child.index()] > 1 || child == root {
                        return Err(Error::HardLinkToDirectory {
                            name: name.to_vec(),
                        });
                    }
                    subdirs.push(child);
                }
                if plan.links[child.index()] == 1 {
                    plan.parent[child.index()] = dir;
                }
                if plan.inode_of[child.index()] == 0 {
                    plan.inode_of[child.index()] = next;
                    plan.order.push(child);
                    next = next.checked_add(1).ok_or(Error::TooManyNodes)?;
                }
            }
            if dir == root && lost_and_found.is_none() {
                subdir_count += 1;
            }
            plan.links[dir.index()] = 2 + subdir_count;
            stack.extend(subdirs.into_iter().rev());
        }
        plan.max_inode = next - 1;

        for node in &plan.order {
            let links = plan.links[node.index()];
            if !tree.node(*node).kind.is_directory() && links > EXT4_LINK_MAX {
                return Err(Error::TooManyLinks {
                    path: plan.path(tree, *node),
                    count: links,
                });
            }
        }
        Ok(plan)
    }

    /// Finds the path of `node` from the root, for error messages.
    pub fn path(&self, tree: &Tree, node: NodeId) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut current = node;
        while current != tree.root() && parts.len() < 4096 {
            let parent = self.parent[current.index()];
            let name = tree
                .entries(parent)
                .find(|(_, id)| *id == current)
                .map(|(name, _)| String::from_utf8_lossy(name).into_owned())
                .unwrap_or_default();
            parts.push(name);
            current = parent;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    /// The nodes in inode order with their numbers; `None` stands for the
    /// `lost+found` the writer adds.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "inode numbers were checked for overflow when they were assigned"
    )]
    pub fn inodes(&self, tree: &Tree) -> Vec<(u32, Option<NodeId>)> {
        let mut inodes = vec![
            (ROOT_INODE, Some(tree.root())),
            (LOST_AND_FOUND_INODE, self.lost_and_found),
        ];
        for (index, node) in self.order.iter().enumerate() {
            if Some(*node) != self.lost_and_found {
                // Numbered from 12 in `new`, which checked for overflow.
                inodes.push((FIRST_INODE + 1 + index as u32, Some(*node)));
            }
        }
        inodes
    }

    /// Lists the entries of directory `dir` as they go on disk, with
    /// `lost+found` added to the root when the tree has none.
    pub fn dir_entries<'t>(&self, tree: &'t Tree, dir: Option<NodeId>) -> Vec<Entry<'t>> {
        let mut entries: Vec<Entry> = match dir {
            Some(dir) => tree
                .entries(dir)
                .map(|(name, child)| Entry {
                    inode: self.inode_of[child.index()],
                    name,
                    file_type: file_type(&tree.node(child).kind),
                })
                .collect(),
            None => Vec::new(),
        };
        if dir == Some(tree.root()) && self.lost_and_found.is_none() {
            entries.push(Entry {
                inode: LOST_AND_FOUND_INODE,
                name: LOST_AND_FOUND,
                file_type: dir::FT_DIR,
            });
        }
        entries
    }

    /// Returns the inode number of the directory that contains `dir`.
    pub fn parent_inode(&self, tree: &Tree, dir: Option<NodeId>) -> u32 {
        match dir {
            Some(node) if node != tree.root() => self.inode_of[self.parent[node.index()].index()],
            _ => ROOT_INODE,
        }
    }
}

/// Returns the directory entry type of a node kind.
pub(crate) fn file_type(kind: &NodeKind) -> u8 {
    match kind {
        NodeKind::Directory(_) => dir::FT_DIR,
        NodeKind::Regular(_) => dir::FT_REG_FILE,
        NodeKind::Symlink(_) => dir::FT_SYMLINK,
        NodeKind::CharDevice { .. } => dir::FT_CHRDEV,
        NodeKind::BlockDevice { .. } => dir::FT_BLKDEV,
        NodeKind::Fifo => dir::FT_FIFO,
        NodeKind::Socket => dir::FT_SOCK,
    }
}

/// Blocks `lost+found` gets at least, as mke2fs sizes it.
#[allow(clippy::cast_possible_truncation, reason = "at most 16 blocks")]
pub(crate) fn lost_and_found_min_blocks(block_size: u32) -> usize {
    (LOST_AND_FOUND_BYTES / u64::from(block_size)).max(2) as usize
}

/// Largest file size with 32-bit logical block numbers.
pub(crate) fn max_file_size(block_size: u32) -> u64 {
    u64::from(u32::MAX) * u64::from(block_size)
}

/// Extents a file of `blocks` data blocks in `runs` runs may need beyond
/// its runs: splits at 32768 blocks and at superblock copies, which are at
/// least half a group apart.
pub(crate) fn extent_splits(blocks: u64, block_size: u32) -> u64 {
    let half_group = u64::from(block_size) * 4;
    blocks / MAX_EXTENT_LEN + blocks / half_group + 1
}

/// Counts the blocks a file's segments cover and the runs they form:
/// returns (blocks, runs).
pub(crate) fn covered_blocks(data: &FileData, block_size: u32) -> (u64, u64) {
    let block_size = u64::from(block_size);
    let mut blocks = 0;
    let mut runs = 0;
    let mut end_of_last: Option<u64> = None;
    for segment in data.segments() {
        let first = segment.file_offset / block_size;
        let end = (segment.file_offset + segment.len).div_ceil(block_size);
        let start = match end_of_last {
            Some(last) if first < last => last,
            Some(last) if first == last => first,
            _ => {
                runs += 1;
                first
            }
        };
        if end > start {
            blocks += end - start;
            end_of_last = Some(end);
        }
    }
    (blocks, runs)
}

/// Blocks of content the image needs besides the metadata and journal,
/// after checking every node: (blocks, distinct xattr blocks with their
/// reference counts).
pub(crate) struct ContentSize {
    pub blocks: u64,
    pub xattr_refcounts: HashMap<Vec<u8>, u32>,
}

/// Checks every node and sums the blocks it needs with `block_size`.
///
/// NOTE: each distinct xattr block is kept in memory until the image is
/// written, so a tree where every node has its own large xattr set costs a
/// block of memory per node.
pub(crate) fn content_size(
    plan: &Plan,
    tree: &Tree,
    block_size: u32,
    hash_seed: &[u32; 4],
) -> Result<ContentSize, Error> {
    let mut size = ContentSize {
        blocks: 0,
        xattr_refcounts: HashMap::new(),
    };
    for (_, node) in plan.inodes(tree) {
        let blocks = match node {
            Some(node) => node_blocks(plan, tree, node, block_size, hash_seed)?,
            None => lost_and_found_min_blocks(block_size) as u64,
        };
        size.blocks = size.blocks.checked_add(blocks).ok_or(Error::Overflow {
            what: "block count",
        })?;
        if let Some(node) = node {
            let placement = xattr::place(
                &tree.node(node).metadata.xattrs,
                IN_INODE_XATTR_ROOM,
                block_size as usize,
            )
            .map_err(|err| Error::NodeXattrs {
                path: plan.path(tree, node),
                source: Box::new(err),
            })?;
            if let Some(block) = placement.block {
                let refcount = size.xattr_refcounts.entry(block).or_insert(0);
                *refcount += 1;
            }
        }
    }
    size.blocks += size.xattr_refcounts.len() as u64;
    Ok(size)
}

/// Checks one node and returns the data and extent tree blocks it needs.
fn node_blocks(
    plan: &Plan,
    tree: &Tree,
    node: NodeId,
    block_size: u32,
    hash_seed: &[u32; 4],
) -> Result<u64, Error> {
    let entry = tree.node(node);
    let metadata = &entry.metadata;
    for time in [
        metadata.atime,
        metadata.mtime,
        metadata.ctime,
        metadata.crtime,
    ] {
        if !inode::timestamp_in_range(time) {
            return Err(Error::TimestampOutOfRange {
                path: plan.path(tree, node),
                seconds: time.seconds,
                nanoseconds: time.nanoseconds,
            });
        }
    }
    match &entry.kind {
        NodeKind::Directory(_) => {
            let (blocks, _) = directory_blocks(plan, tree, Some(node), block_size, hash_seed)?;
            Ok(blocks + extent::tree_blocks(1 + extent_splits(blocks, block_size), block_size))
        }
        NodeKind::Regular(data) => {
            if data.size() > max_file_size(block_size) {
                return Err(Error::FileTooLarge {
                    path: plan.path(tree, node),
                    size: data.size(),
                    block_size,
                    max_size: max_file_size(block_size),
                });
            }
            let (blocks, runs) = covered_blocks(data, block_size);
            let extents = runs + extent_splits(blocks, block_size);
            Ok(blocks + extent::tree_blocks(extents, block_size))
        }
        NodeKind::Symlink(target) => {
            let reason = if target.is_empty() {
                Some("it is empty")
            } else if target.contains(&0) {
                Some("it contains a NUL byte")
            } else if target.len() >= block_size as usize {
                Some("it must be shorter than one block")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(Error::InvalidSymlink {
                    path: plan.path(tree, node),
                    len: target.len(),
                    reason,
                });
            }
            Ok(u64::from(target.len() >= FAST_SYMLINK_MAX))
        }
        NodeKind::CharDevice { major, minor } | NodeKind::BlockDevice { major, minor } => {
            if *major >= 4096 || *minor >= 1 << 20 {
                return Err(Error::InvalidDevice {
                    path: plan.path(tree, node),
                    major: *major,
                    minor: *minor,
                });
            }
            Ok(0)
        }
        NodeKind::Fifo | NodeKind::Socket => Ok(0),
    }
}

/// Symlink targets shorter than this live in `i_block`.
pub(crate) const FAST_SYMLINK_MAX: usize = 60;

/// Blocks of a directory and whether it is hashed.
pub(crate) fn directory_blocks(
    plan: &Plan,
    tree: &Tree,
    dir: Option<NodeId>,
    block_size: u32,
    hash_seed: &[u32; 4],
) -> Result<(u64, bool), Error> {
    let entries = plan.dir_entries(tree, dir);
    let linear = dir::linear_block_count(entries.iter().map(|e| e.name.len()), block_size as usize);
    let is_lost_and_found = dir.is_none() || dir == plan.lost_and_found;
    if linear <= 1 || is_lost_and_found {
        let min = if is_lost_and_found {
            lost_and_found_min_blocks(block_size)
        } else {
            1
        };
        return Ok((linear.max(min) as u64, false));
    }
    match htree::block_count(&entries, block_size as usize, hash_seed) {
        Ok(blocks) => Ok((blocks, true)),
        Err(leaf_blocks) => Err(Error::DirectoryTooLarge {
            path: match dir {
                Some(node) => plan.path(tree, node),
                None => "/lost+found".to_string(),
            },
            leaf_blocks,
            max_leaf_blocks: htree::max_leaf_blocks(block_size as usize),
        }),
    }
}
