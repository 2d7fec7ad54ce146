//! Writes ext4 filesystem images from a tree of nodes, with the owners,
//! modes, times and xattrs the caller gives, and without mkfs, debugfs, a
//! mount or root.
//!
//! ```no_run
//! use ext4_writer::{FileData, Metadata, NodeKind, Options, Timestamp, Tree};
//!
//! let time = Timestamp::new(1_700_000_000, 0);
//! let mut tree = Tree::new(Metadata::new(0o755, 0, 0, time));
//! let root = tree.root();
//! let etc = tree.add(root, b"etc", NodeKind::directory(), Metadata::new(0o755, 0, 0, time))?;
//! let hostname = FileData::from_bytes(b"vm\n".to_vec());
//! tree.add(etc, b"hostname", NodeKind::Regular(hostname), Metadata::new(0o644, 0, 0, time))?;
//!
//! let file = std::fs::File::create("rootfs.ext4").expect("create the image file");
//! let report = ext4_writer::write_file(&tree, &Options::default(), &file)?;
//! println!("{} bytes, {} free blocks", report.size_bytes, report.free_blocks);
//! # Ok::<(), ext4_writer::Error>(())
//! ```
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
