//! Writes ext4 filesystem images from a tree of nodes, with the owners,
//! modes, times and xattrs the caller gives, and without mkfs, debugfs, a
//! mount or root.
#![forbid(unsafe_code)]

pub mod error;
#[cfg(feature = "tar")]
pub mod tar;
pub mod tree;

pub use error::Error;
pub use tree::{
    FileData, Metadata, Node, NodeId, NodeKind, ReadAt, Segment, Timestamp, Tree, Xattr,
};
