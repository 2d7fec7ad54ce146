//! Places archive entries into a [`Tree`] the way extracting them in order
//! onto an empty directory would, without touching the host filesystem.
//!
//! Parent components that are symlinks are followed inside the tree: an
//! absolute target restarts at the tree's root and `..` never climbs above
//! it, as containerd's `fs.RootPath` and the `securejoin` package resolve
//! paths during layer extraction. The last component is never followed.

use std::collections::VecDeque;

use super::reader::{Entry, EntryKind};
use super::TarError;
use crate::tree::{Metadata, NodeId, NodeKind, Tree};

/// Symlinks followed while resolving one path before it counts as a loop;
/// Linux stops at 40 (`MAXSYMLINKS`), this allows more for deep images.
const MAX_SYMLINK_FOLLOWS: u32 = 255;

/// Splits an archive path into components the way `filepath.Clean("/" + path)`
/// does: empty and `.` components dropped, `..` removing the previous one and
/// never going above the root. The root itself is an empty list.
pub fn normalize_path(path: &[u8]) -> Vec<&[u8]> {
    let mut components: Vec<&[u8]> = Vec::new();
    for component in path.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                components.pop();
            }
            name => components.push(name),
        }
    }
    components
}

/// Resolves the directory named by `components`, following symlinks inside
/// the tree, and returns it.
///
/// With `create` set, a missing directory is created with that metadata,
/// and a component that is neither a directory nor a symlink is replaced by
/// such a directory, as the archive implies one there. Without `create`,
/// returns `None` when the path does not lead to a directory.
/// `touched` is called with each directory entry the path passes through.
///
/// # Errors
/// [`TarError::InvalidEntry`] for a symlink loop, [`TarError::Tree`] for a
/// name the tree rejects; `path` names the entry in both.
pub fn resolve_dir(
    tree: &mut Tree,
    components: &[&[u8]],
    create: Option<&Metadata>,
    touched: &mut dyn FnMut(NodeId, &[u8]),
    path: &str,
) -> Result<Option<NodeId>, TarError> {
    let mut stack = vec![tree.root()];
    let mut queue: VecDeque<Vec<u8>> = components.iter().map(|c| c.to_vec()).collect();
    let mut follows = 0u32;

    while let Some(name) = queue.pop_front() {
        match name.as_slice() {
            b"" | b"." => continue,
            b".." => {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            _ => {}
        }
        let current = *stack.last().unwrap_or(&tree.root());
        let existing = tree.lookup(current, &name);
        let kind = existing.map(|id| &tree.node(id).kind);

        match (existing, kind) {
            (Some(id), Some(NodeKind::Directory(_))) => {
                touched(current, &name);
                stack.push(id);
            }
            (Some(_), Some(NodeKind::Symlink(target))) => {
                follows += 1;
                if follows > MAX_SYMLINK_FOLLOWS {
                    return Err(TarError::InvalidEntry {
                        path: path.into(),
                        reason: format!(
                            "more than {MAX_SYMLINK_FOLLOWS} symlinks in its parent path; it probably contains a symlink loop"
                        ),
                    });
                }
                if target.starts_with(b"/") {
                    stack.truncate(1);
                }
                for component in target.split(|b| *b == b'/').rev() {
                    queue.push_front(component.to_vec());
                }
            }
            (_, _) => {
                let Some(metadata) = create else {
                    return Ok(None);
                };
                if existing.is_some() {
                    tree.unlink(current, &name)
                        .map_err(|e| tree_error(path, e))?;
                }
                let id = tree
                    .add(current, &name, NodeKind::directory(), metadata.clone())
                    .map_err(|e| tree_error(path, e))?;
                touched(current, &name);
                stack.push(id);
            }
        }
    }
    Ok(Some(*stack.last().unwrap_or(&tree.root())))
}

/// Enters `entry` into the tree: missing parents are created (0755, owned
/// by root, with the entry's mtime), an existing directory at the path only
/// takes the entry's metadata when the entry is a directory too, and any
/// other existing node at the path is replaced. A hard link names the node
/// its target path reaches now, so its target may come from any earlier
/// entry. Returns the node now at the path.
///
/// `touched` is called with every directory entry that the path passes
/// through or writes.
///
/// # Errors
/// [`TarError::InvalidEntry`] for a hard link whose target is missing or a
/// directory, or an entry that would replace the root with a non-directory;
/// [`TarError::Tree`] for a name the tree rejects.
pub fn place_entry(
    tree: &mut Tree,
    entry: Entry,
    touched: &mut dyn FnMut(NodeId, &[u8]),
) -> Result<NodeId, TarError> {
    let display = entry.display_path();
    let components = normalize_path(&entry.path);
    let Some((name, parents)) = components.split_last() else {
        return place_root(tree, entry, &display);
    };

    let implied = Metadata::new(0o755, 0, 0, entry.metadata.mtime);
    let parent = resolve_dir(tree, parents, Some(&implied), touched, &display)?
        .unwrap_or_else(|| tree.root());
    let existing = tree.lookup(parent, name);
    touched(parent, name);

    let kind = match entry.kind {
        EntryKind::HardLink(target) => {
            let node = resolve_link_target(tree, &target, &display)?;
            if existing != Some(node) {
                if existing.is_some() {
                    tree.unlink(parent, name)
                        .map_err(|e| tree_error(&display, e))?;
                }
                tree.link(parent, name, node)
                    .map_err(|e| tree_error(&display, e))?;
            }
            return Ok(node);
        }
        EntryKind::Directory => {
            if let Some(id) = existing.filter(|id| tree.node(*id).kind.is_directory()) {
                tree.node_mut(id).metadata = entry.metadata;
                return Ok(id);
            }
            NodeKind::directory()
        }
        EntryKind::Regular(data) => NodeKind::Regular(data),
        EntryKind::Symlink(target) => NodeKind::Symlink(target),
        EntryKind::CharDevice { major, minor } => NodeKind::CharDevice { major, minor },
        EntryKind::BlockDevice { major, minor } => NodeKind::BlockDevice { major, minor },
        EntryKind::Fifo => NodeKind::Fifo,
    };
    if existing.is_some() {
        tree.unlink(parent, name)
            .map_err(|e| tree_error(&display, e))?;
    }
    tree.add(parent, name, kind, entry.metadata)
        .map_err(|e| tree_error(&display, e))
}

/// An entry for the archive's root (`./`): a directory gives the root its
/// metadata; anything else cannot replace it.
fn place_root(tree: &mut Tree, entry: Entry, display: &str) -> Result<NodeId, TarError> {
    if !matches!(entry.kind, EntryKind::Directory) {
        return Err(TarError::InvalidEntry {
            path: display.into(),
            reason: "it names the root directory but is not a directory".into(),
        });
    }
    let root = tree.root();
    tree.node_mut(root).metadata = entry.metadata;
    Ok(root)
}

/// Finds the node a hard link's target path names now.
fn resolve_link_target(tree: &mut Tree, target: &[u8], display: &str) -> Result<NodeId, TarError> {
    let invalid = |reason: String| TarError::InvalidEntry {
        path: display.into(),
        reason,
    };
    let target_display = String::from_utf8_lossy(target);
    let components = normalize_path(target);
    let Some((name, parents)) = components.split_last() else {
        return Err(invalid("it is a hard link to the root directory".into()));
    };
    let node = resolve_dir(tree, parents, None, &mut |_, _| {}, display)?
        .and_then(|parent| tree.lookup(parent, name))
        .ok_or_else(|| {
            invalid(format!(
                "its hard link target {target_display:?} does not exist in the archive or the layers below"
            ))
        })?;
    if tree.node(node).kind.is_directory() {
        return Err(invalid(format!(
            "its hard link target {target_display:?} is a directory"
        )));
    }
    Ok(node)
}

fn tree_error(path: &str, source: crate::Error) -> TarError {
    TarError::Tree {
        path: path.into(),
        source,
    }
}
