//! Writes ext4 filesystem images from a tree of nodes, with the owners,
//! modes, times and xattrs the caller gives, and without mkfs, debugfs, a
//! mount or root.
#![forbid(unsafe_code)]

pub mod error;
pub mod source;
#[cfg(feature = "tar")]
pub mod tar;
pub mod tree;

// NOTE: only tests call these modules until the writer core uses them.
#[cfg_attr(not(test), allow(dead_code))]
mod acl;
#[cfg_attr(not(test), allow(dead_code))]
mod journal;
#[cfg_attr(not(test), allow(dead_code))]
mod xattr;

pub use error::Error;
pub use tree::{
    FileData, Metadata, Node, NodeId, NodeKind, ReadAt, Segment, Timestamp, Tree, Xattr,
};
