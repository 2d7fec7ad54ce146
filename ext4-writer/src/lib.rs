//! Writes ext4 filesystem images from a tree of nodes, with the owners,
//! modes, times and xattrs the caller gives, and without mkfs, debugfs, a
//! mount or root.
#![forbid(unsafe_code)]

pub mod error;
pub mod options;
pub mod source;
#[cfg(feature = "tar")]
pub mod tar;
pub mod tree;

mod acl;
mod bitmap;
mod checksum;
mod dir;
mod extent;
mod group_desc;
mod htree;
mod inode;
mod journal;
mod layout;
mod le;
mod output;
mod plan;
mod superblock;
mod writer;
mod xattr;

pub use error::Error;
pub use options::{BlockSize, Options, Reproducible, Sizing};
pub use tree::{
    FileData, Metadata, Node, NodeId, NodeKind, ReadAt, Segment, Timestamp, Tree, Xattr,
};
pub use writer::{minimum_size, write, write_file, Report};
