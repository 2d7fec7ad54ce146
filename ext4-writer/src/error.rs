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
    /// `required_bytes` counts the entries left over after filling the
    /// inode, and `available_bytes` is the room of one xattr block.
    #[error("the xattrs that do not fit in the inode need {required_bytes} bytes, but one xattr block holds at most {available_bytes} (largest value: {:?} with {largest_value_bytes} bytes); use a larger block size or smaller xattr values", String::from_utf8_lossy(largest_name))]
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

    /// An xattr error ([`Error::InvalidXattrName`], [`Error::DuplicateXattr`],
    /// [`Error::XattrsTooLarge`], [`Error::InvalidAcl`]) with the node's path.
    #[error("xattrs of {path:?}: {source}")]
    NodeXattrs {
        path: String,
        #[source]
        source: Box<Error>,
    },

    /// A node reached through more links than ext4 can count.
    #[error("{path:?} has {count} links but ext4 allows at most 65000 per inode; make some of them copies instead of hard links")]
    TooManyLinks { path: String, count: u64 },

    /// A regular file larger than ext4 can map with 32-bit block numbers.
    #[error("{path:?} is {size} bytes but the largest file with {block_size}-byte blocks is {max_size} bytes; use a larger block size or a smaller file")]
    FileTooLarge {
        path: String,
        size: u64,
        block_size: u32,
        max_size: u64,
    },

    /// A symlink target that ext4 cannot store.
    #[error("invalid symlink target for {path:?} ({len} bytes): {reason}")]
    InvalidSymlink {
        path: String,
        len: usize,
        reason: &'static str,
    },

    /// A device number outside the 12-bit major and 20-bit minor of Linux.
    #[error("invalid device number {major}:{minor} for {path:?}: the major must be below 4096 and the minor below 1048576")]
    InvalidDevice {
        path: String,
        major: u32,
        minor: u32,
    },

    /// A time outside what ext4's 34-bit seconds and nanoseconds can store.
    #[error("invalid timestamp {seconds}.{nanoseconds:09} s for {path:?}: ext4 stores seconds from -2147483648 to 15032385535 (year 2446) and nanoseconds below 1000000000")]
    TimestampOutOfRange {
        path: String,
        seconds: i64,
        nanoseconds: u32,
    },

    /// A directory with more entries than a two-level htree can index.
    #[error("directory {path:?} needs {leaf_blocks} leaf blocks but a two-level directory index reaches at most {max_leaf_blocks}; split it or use a larger block size")]
    DirectoryTooLarge {
        path: String,
        leaf_blocks: u64,
        max_leaf_blocks: u64,
    },

    /// The root has a `lost+found` that is not a directory.
    #[error("/lost+found must be a directory because e2fsck and the kernel use it; rename or remove that entry")]
    InvalidLostAndFound,

    /// The root node of the tree was turned into something other than a directory.
    #[error("the root node must be a directory")]
    RootNotDirectory,

    /// An option value the writer cannot use.
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        option: &'static str,
        reason: String,
    },

    /// The inode count requested is below what the tree needs.
    #[error("{requested} inodes requested but the tree needs {required}; raise the inode count or leave it unset")]
    TooFewInodes { requested: u64, required: u64 },

    /// More inodes than the block groups of the filesystem can hold.
    #[error("{inodes} inodes do not fit in {blocks} blocks (at most one inode per block of each group); raise the size or lower the inode count")]
    TooManyInodes { inodes: u64, blocks: u64 },

    /// More blocks than this block size can address without `meta_bg`.
    #[error("{blocks} blocks of {block_size} bytes are too many for one group descriptor table; {}", size_advice(*block_size))]
    FilesystemTooLarge { blocks: u64, block_size: u32 },

    /// Automatic sizing grew past the largest filesystem, because of the
    /// inode count or the headroom.
    #[error("automatic sizing for {inodes} inodes and {headroom_percent}% headroom needs more blocks of {block_size} bytes than ext4 can address without meta_bg; lower the inode count or the headroom")]
    AutoSizeTooLarge {
        inodes: u64,
        headroom_percent: u32,
        block_size: u32,
    },

    /// The content does not fit in the fixed size.
    #[error("the tree needs at least {required_bytes} bytes but the fixed size is {available_bytes} bytes; raise the size to {required_bytes} bytes or use automatic sizing")]
    DoesNotFit {
        required_bytes: u64,
        available_bytes: u64,
    },

    /// The allocator ran out of blocks, which the size planning should
    /// have prevented.
    #[error("internal error: the filesystem of {blocks} blocks ran out of free blocks while writing; please report this with the tree that caused it")]
    OutOfSpace { blocks: u64 },

    /// A count or offset overflowed while laying out the image.
    #[error("the image is too large: {what} overflows")]
    Overflow { what: &'static str },

    /// An I/O error while reading content or writing the image.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// Advice for a filesystem with too many blocks: a larger block size helps
/// only below the largest, 4096.
fn size_advice(block_size: u32) -> &'static str {
    if block_size < 4096 {
        "use a larger block size or a smaller size"
    } else {
        "use a smaller size"
    }
}
