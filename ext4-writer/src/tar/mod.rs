//! Tar archives as input: a streaming reader that decodes every member into
//! an [`Entry`], a [`Spool`] that keeps file contents on disk, and
//! [`tree_from_tar`] for a plain root-filesystem archive.
//!
//! Enabled by the `tar` feature.

mod pax;
mod place;
mod reader;
mod spool;

use std::io::{self, Read};

pub use place::{normalize_path, place_entry, resolve_dir};
pub use reader::{Entry, EntryKind, Reader};
pub use spool::{AppendError, Spool};

use crate::tree::{Metadata, Tree};

/// Everything that can go wrong while reading an archive into a tree.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TarError {
    /// The input failed, for example a decompressor found corrupt data.
    #[error("failed to read the tar stream at byte {offset}: {source}")]
    Read {
        offset: u64,
        #[source]
        source: io::Error,
    },

    /// The input ended inside a member.
    #[error("truncated tar archive: the input ends inside {path:?}, whose header starts at byte {offset}")]
    Truncated { path: String, offset: u64 },

    /// A header block that is not a valid tar header.
    #[error("invalid tar header at byte {offset}: {}", escape_controls(reason))]
    InvalidHeader { offset: u64, reason: String },

    /// A member whose fields cannot be used.
    #[error("invalid tar entry {path:?}: {}", escape_controls(reason))]
    InvalidEntry { path: String, reason: String },

    /// The spool file could not be written.
    #[error("failed to copy the contents of {path:?} to the spool file: {source}")]
    Spool {
        path: String,
        #[source]
        source: io::Error,
    },

    /// The tree rejected the entry, for example a name longer than 255 bytes.
    #[error("cannot add tar entry {path:?} to the tree: {source}")]
    Tree {
        path: String,
        #[source]
        source: crate::Error,
    },
}

/// Escapes control characters in text that may quote archive bytes, so that
/// a message cannot send escape sequences to a terminal.
fn escape_controls(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Reads a plain root-filesystem archive into a tree whose root starts with
/// `root_metadata` (a `./` member replaces it).
///
/// Members are placed in archive order by [`place_entry`]: a later member
/// replaces an earlier one at the same path, hard links name earlier
/// members, and missing parents are created 0755 and owned by root. Names
/// starting with `.wh.` are ordinary files here; layer whiteouts are the
/// caller's business.
///
/// # Errors
/// [`TarError`] naming the member that failed.
pub fn tree_from_tar<R: Read>(
    reader: R,
    root_metadata: Metadata,
    spool: &mut Spool,
) -> Result<Tree, TarError> {
    let mut tree = Tree::new(root_metadata);
    let mut reader = Reader::new(reader);
    while let Some(entry) = reader.next_entry(spool)? {
        place_entry(&mut tree, entry, &mut |_, _| {})?;
    }
    Ok(tree)
}
