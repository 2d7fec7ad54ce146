//! Errors of the writer, split by cause: invalid input from the caller,
//! content that does not fit, and I/O.

use std::io;

/// Everything that can go wrong while building a tree or writing an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A directory entry name that ext4 cannot store.
    #[error("invalid name {:?}: {reason}", String::from_utf8_lossy(name))]
    InvalidName { name: Vec<u8>, reason: &'static str },

    /// The name is already taken in its directory.
    #[error(
        "an entry named {:?} already exists in the directory",
        String::from_utf8_lossy(name)
    )]
    AlreadyExists { name: Vec<u8> },

    /// An entry was added to, or looked up in, a node that is not a directory.
    #[error("the parent node is not a directory")]
    NotADirectory,

    /// Directories cannot have a second name.
    #[error("cannot hard link {:?} to a directory; only files, symlinks and special files can have several names", String::from_utf8_lossy(name))]
    HardLinkToDirectory { name: Vec<u8> },

    /// More nodes than the 32-bit node table can index.
    #[error("the tree holds more than 2^32 nodes")]
    TooManyNodes,

    /// File segments that overlap, are unsorted or run past the file size.
    #[error("invalid file segment at offset {file_offset} with length {len} for a file of {size} bytes; segments must be sorted, must not overlap and must end within the file")]
    InvalidSegments {
        size: u64,
        file_offset: u64,
        len: u64,
    },

    /// An xattr name with no namespace prefix that ext4 can store, or a
    /// name ext4 cannot encode.
    #[error("invalid xattr name {:?}: {reason}", String::from_utf8_lossy(name))]
    InvalidXattrName { name: Vec<u8>, reason: String },

    /// The same xattr name appears twice on one node.
    #[error(
        "xattr {:?} is set twice on one node; xattr names must be unique",
        String::from_utf8_lossy(name)
    )]
    DuplicateXattr { name: Vec<u8> },

    /// The xattrs of one node do not fit in the inode plus one xattr block.
    #[error("the xattrs of a node need {required_bytes} bytes, but the inode and one xattr block hold at most {available_bytes} (largest value: {:?} with {largest_value_bytes} bytes); use a larger block size or smaller xattr values", String::from_utf8_lossy(largest_name))]
    XattrsTooLarge {
        required_bytes: usize,
        available_bytes: usize,
        largest_name: Vec<u8>,
        largest_value_bytes: usize,
    },

    /// A POSIX ACL xattr value that is not a valid ACL in the VFS format.
    #[error(
        "invalid POSIX ACL in xattr {:?}: {reason}",
        String::from_utf8_lossy(name)
    )]
    InvalidAcl { name: Vec<u8>, reason: String },

    /// An I/O error while reading content or writing the image.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}
