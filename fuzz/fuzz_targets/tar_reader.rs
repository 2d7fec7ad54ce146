//! Feeds arbitrary bytes to the tar reader and `tree_from_tar`: any input
//! must give a tree or an error, never a panic, and a tree's regular files
//! must read back within their sizes.

#![no_main]

use ext4_writer::tar::{tree_from_tar, Spool};
use ext4_writer::{Metadata, NodeKind, Timestamp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut spool = Spool::new().expect("the temporary directory must be writable");
    let root = Metadata::new(0o755, 0, 0, Timestamp::default());
    let Ok(tree) = tree_from_tar(data, root, &mut spool) else {
        return;
    };
    let mut stack = vec![tree.root()];
    let mut visited = 0usize;
    while let Some(dir) = stack.pop() {
        visited += 1;
        assert!(visited <= tree.node_count(), "a directory is reachable twice");
        for (_, child) in tree.entries(dir) {
            match &tree.node(child).kind {
                NodeKind::Directory(_) => stack.push(child),
                NodeKind::Regular(file) => check_file(file),
                _ => {}
            }
        }
    }
});

/// Checks that every segment lies within the file and reads back.
fn check_file(file: &ext4_writer::FileData) {
    for segment in file.segments() {
        assert!(segment.file_offset + segment.len <= file.size());
        let len = usize::try_from(segment.len.min(4096)).unwrap_or(4096);
        let mut buf = vec![0u8; len];
        segment
            .source
            .read_exact_at(&mut buf, segment.source_offset)
            .expect("spooled bytes must read back");
    }
}
