//! The input model: a tree of nodes with owners, modes, times, xattrs and
//! file contents, built by the caller and handed to the writer.
//!
//! A node is one future inode. A directory maps names to node ids, and a
//! node reached through more than one name is a hard link. Link counts are
//! derived from the entries when the image is written, so removing a name
//! never needs bookkeeping from the caller.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::error::Error;

/// Maximum length of one name in a directory, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Index of a node in a [`Tree`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u32);

impl NodeId {
    /// Position of the node in the tree's node table.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A point in time: seconds since the Unix epoch (negative before 1970)
/// and nanoseconds within that second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    pub seconds: i64,
    pub nanoseconds: u32,
}

impl Timestamp {
    pub const fn new(seconds: i64, nanoseconds: u32) -> Self {
        Self {
            seconds,
            nanoseconds,
        }
    }
}

/// One extended attribute, with its full name (`user.x`, `security.capability`,
/// `system.posix_acl_access`, ...) and its value as the VFS presents it.
///
/// POSIX ACLs arrive in the VFS xattr format that tar archives carry; the
/// writer converts them to ext4's on-disk format.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Xattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// Owner, permissions, times and xattrs of a node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    /// Permission bits with setuid (0o4000), setgid (0o2000) and sticky
    /// (0o1000). The file type comes from [`NodeKind`]; bits above 0o7777
    /// are ignored.
    pub permissions: u16,
    pub uid: u32,
    pub gid: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    /// Creation time (ext4 `i_crtime`).
    pub crtime: Timestamp,
    /// Extended attributes. Names must be unique.
    pub xattrs: Vec<Xattr>,
}

impl Metadata {
    /// Metadata with the given permissions and owner, all times set to `time`
    /// and no xattrs.
    pub fn new(permissions: u16, uid: u32, gid: u32, time: Timestamp) -> Self {
        Self {
            permissions,
            uid,
            gid,
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            xattrs: Vec::new(),
        }
    }
}

/// Random-access byte source for file contents.
///
/// Implemented for [`File`] (positional reads), and for byte buffers.
pub trait ReadAt: Send + Sync {
    /// Fills `buf` with the bytes starting at `offset`, or fails with
    /// [`io::ErrorKind::UnexpectedEof`] when the source ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .filter(|end| *end <= self.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(&self[start..end]);
        Ok(())
    }
}

/// A run of file content: `len` bytes that appear at `file_offset` in the
/// file and are read from `source` at `source_offset`.
#[derive(Clone)]
pub struct Segment {
    pub file_offset: u64,
    pub len: u64,
    pub source: Arc<dyn ReadAt>,
    pub source_offset: u64,
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("file_offset", &self.file_offset)
            .field("len", &self.len)
            .field("source_offset", &self.source_offset)
            .finish_non_exhaustive()
    }
}

/// The contents of a regular file: its size and the segments that hold data.
///
/// Bytes not covered by a segment read as zeros and become holes. The writer
/// also leaves a hole for every block of segment data that is all zeros, as
/// `mke2fs -d` does.
#[derive(Clone, Debug, Default)]
pub struct FileData {
    size: u64,
    segments: Vec<Segment>,
}

impl FileData {
    /// Creates an empty file.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Creates a file of `size` bytes that is one hole.
    pub fn sparse(size: u64) -> Self {
        Self {
            size,
            segments: Vec::new(),
        }
    }

    /// Creates a file whose `len` bytes are read from `source` at `source_offset`.
    pub fn from_source(source: Arc<dyn ReadAt>, source_offset: u64, len: u64) -> Self {
        let mut data = Self::sparse(len);
        if len > 0 {
            data.segments.push(Segment {
                file_offset: 0,
                len,
                source,
                source_offset,
            });
        }
        data
    }

    /// Creates a file holding `bytes`.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        let bytes: Vec<u8> = bytes.into();
        let len = bytes.len() as u64;
        Self::from_source(Arc::new(bytes), 0, len)
    }

    /// Builds a file from segments that must be sorted by `file_offset`, must
    /// not overlap and must end at or before `size`.
    ///
    /// # Errors
    /// [`Error::InvalidSegments`] when the segments break those rules.
    pub fn from_segments(size: u64, segments: Vec<Segment>) -> Result<Self, Error> {
        let mut end_of_previous = 0u64;
        for segment in &segments {
            let end = segment.file_offset.checked_add(segment.len);
            match end {
                Some(end) if segment.file_offset >= end_of_previous && end <= size => {
                    end_of_previous = end;
                }
                _ => {
                    return Err(Error::InvalidSegments {
                        size,
                        file_offset: segment.file_offset,
                        len: segment.len,
                    })
                }
            }
        }
        let segments = segments.into_iter().filter(|s| s.len > 0).collect();
        Ok(Self { size, segments })
    }

    /// Size of the file in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Segments holding data, sorted by file offset.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }
}

/// The type of a node, with the data that belongs to that type.
#[derive(Clone, Debug)]
pub enum NodeKind {
    /// A directory and its entries, sorted by name.
    Directory(BTreeMap<Vec<u8>, NodeId>),
    Regular(FileData),
    /// A symbolic link and its target, stored as given and never resolved.
    Symlink(Vec<u8>),
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
    Socket,
}

impl NodeKind {
    /// Creates an empty directory.
    pub fn directory() -> Self {
        NodeKind::Directory(BTreeMap::new())
    }

    pub fn is_directory(&self) -> bool {
        matches!(self, NodeKind::Directory(_))
    }
}

/// One inode-to-be: its type-specific data and its metadata.
#[derive(Clone, Debug)]
pub struct Node {
    pub kind: NodeKind,
    pub metadata: Metadata,
}

/// A tree of nodes rooted at a directory.
///
/// Nodes are never freed: a node that no entry reaches any more is simply
/// not written.
#[derive(Clone, Debug)]
pub struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    /// Creates a tree holding only a root directory with `metadata`.
    pub fn new(metadata: Metadata) -> Self {
        Self {
            nodes: vec![Node {
                kind: NodeKind::directory(),
                metadata,
            }],
        }
    }

    /// Returns the root directory.
    pub fn root(&self) -> NodeId {
        NodeId(0)
    }

    /// Number of nodes ever created, reachable or not.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Returns the node `id`.
    ///
    /// # Panics
    /// When `id` did not come from this tree.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    /// Returns the node `id` for changing its metadata or contents.
    ///
    /// Turning a directory into another kind drops its entries. Turning a
    /// node with several names into a directory makes a tree that the
    /// writer rejects with [`Error::HardLinkToDirectory`].
    ///
    /// # Panics
    /// When `id` did not come from this tree.
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id.index()]
    }

    /// Creates a node that no directory refers to yet; [`Tree::link`] gives
    /// it a name.
    pub fn create(&mut self, kind: NodeKind, metadata: Metadata) -> Result<NodeId, Error> {
        let index = u32::try_from(self.nodes.len()).map_err(|_| Error::TooManyNodes)?;
        self.nodes.push(Node { kind, metadata });
        Ok(NodeId(index))
    }

    /// Creates a node and enters it in `parent` as `name`.
    ///
    /// # Errors
    /// [`Error::InvalidName`] for an empty name, a name longer than 255 bytes,
    /// or one holding `/` or NUL, `.` or `..`; [`Error::NotADirectory`] when
    /// `parent` is not a directory; [`Error::AlreadyExists`] when `name` is
    /// taken.
    pub fn add(
        &mut self,
        parent: NodeId,
        name: &[u8],
        kind: NodeKind,
        metadata: Metadata,
    ) -> Result<NodeId, Error> {
        self.check_free_name(parent, name)?;
        let id = self.create(kind, metadata)?;
        self.entries_mut(parent)?.insert(name.to_vec(), id);
        Ok(id)
    }

    /// Enters the existing node `target` in `parent` as `name`: a hard link
    /// when `target` already has a name.
    ///
    /// # Errors
    /// The errors of [`Tree::add`], and [`Error::HardLinkToDirectory`] when
    /// `target` is a directory that already has a name or is the root.
    pub fn link(&mut self, parent: NodeId, name: &[u8], target: NodeId) -> Result<(), Error> {
        self.check_free_name(parent, name)?;
        if self.node(target).kind.is_directory()
            && (target == self.root() || self.is_referenced(target))
        {
            return Err(Error::HardLinkToDirectory {
                name: name.to_vec(),
            });
        }
        self.entries_mut(parent)?.insert(name.to_vec(), target);
        Ok(())
    }

    /// Removes the entry `name` from `parent` and returns the node it named.
    /// Removing a directory's entry drops its whole subtree from the image,
    /// except nodes that other entries still reach.
    pub fn unlink(&mut self, parent: NodeId, name: &[u8]) -> Result<Option<NodeId>, Error> {
        Ok(self.entries_mut(parent)?.remove(name))
    }

    /// Looks `name` up in `parent`; `None` when `parent` is not a directory
    /// or has no such entry.
    pub fn lookup(&self, parent: NodeId, name: &[u8]) -> Option<NodeId> {
        match &self.node(parent).kind {
            NodeKind::Directory(entries) => entries.get(name).copied(),
            _ => None,
        }
    }

    /// Iterates over the entries of directory `dir`, sorted by name. Other
    /// kinds have none.
    pub fn entries(&self, dir: NodeId) -> impl Iterator<Item = (&[u8], NodeId)> {
        let entries = match &self.node(dir).kind {
            NodeKind::Directory(entries) => Some(entries),
            _ => None,
        };
        entries
            .into_iter()
            .flat_map(|e| e.iter().map(|(name, id)| (name.as_slice(), *id)))
    }

    fn entries_mut(&mut self, dir: NodeId) -> Result<&mut BTreeMap<Vec<u8>, NodeId>, Error> {
        match &mut self.nodes[dir.index()].kind {
            NodeKind::Directory(entries) => Ok(entries),
            _ => Err(Error::NotADirectory),
        }
    }

    fn check_free_name(&self, parent: NodeId, name: &[u8]) -> Result<(), Error> {
        validate_name(name)?;
        match &self.node(parent).kind {
            NodeKind::Directory(entries) if entries.contains_key(name) => {
                Err(Error::AlreadyExists {
                    name: name.to_vec(),
                })
            }
            NodeKind::Directory(_) => Ok(()),
            _ => Err(Error::NotADirectory),
        }
    }

    fn is_referenced(&self, target: NodeId) -> bool {
        self.nodes.iter().any(|node| match &node.kind {
            NodeKind::Directory(entries) => entries.values().any(|id| *id == target),
            _ => false,
        })
    }
}

/// Checks that `name` can be one directory entry: 1 to 255 bytes, no `/`,
/// no NUL, and not `.` or `..`.
pub fn validate_name(name: &[u8]) -> Result<(), Error> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("it is longer than 255 bytes")
    } else if name.contains(&b'/') {
        Some("it contains '/'")
    } else if name.contains(&0) {
        Some("it contains a NUL byte")
    } else if name == b"." || name == b".." {
        Some("'.' and '..' are made by the writer")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            name: name.to_vec(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Metadata {
        Metadata::new(0o755, 0, 0, Timestamp::default())
    }

    #[test]
    fn names_rejected() {
        let mut tree = Tree::new(meta());
        let root = tree.root();
        for bad in [&b""[..], b"a/b", b"a\0b", b".", b"..", &[b'x'; 256]] {
            let err = tree.add(root, bad, NodeKind::Fifo, meta()).unwrap_err();
            assert!(matches!(err, Error::InvalidName { .. }), "{bad:?}: {err}");
        }
        assert!(tree.add(root, &[0xff; 255], NodeKind::Fifo, meta()).is_ok());
    }

    #[test]
    fn hard_link_to_directory_rejected() {
        let mut tree = Tree::new(meta());
        let root = tree.root();
        let dir = tree.add(root, b"d", NodeKind::directory(), meta()).unwrap();
        let err = tree.link(root, b"e", dir).unwrap_err();
        assert!(matches!(err, Error::HardLinkToDirectory { .. }));
        let err = tree.link(dir, b"up", root).unwrap_err();
        assert!(matches!(err, Error::HardLinkToDirectory { .. }));
    }

    #[test]
    fn duplicate_name_rejected() {
        let mut tree = Tree::new(meta());
        let root = tree.root();
        tree.add(root, b"a", NodeKind::Fifo, meta()).unwrap();
        let err = tree.add(root, b"a", NodeKind::Socket, meta()).unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { .. }));
    }

    #[test]
    fn segments_must_not_overlap() {
        let source: Arc<dyn ReadAt> = Arc::new(vec![1u8; 10]);
        let segment = |file_offset, len| Segment {
            file_offset,
            len,
            source: source.clone(),
            source_offset: 0,
        };
        assert!(FileData::from_segments(20, vec![segment(0, 5), segment(5, 5)]).is_ok());
        assert!(FileData::from_segments(20, vec![segment(0, 6), segment(5, 5)]).is_err());
        assert!(FileData::from_segments(8, vec![segment(0, 10)]).is_err());
    }
}
