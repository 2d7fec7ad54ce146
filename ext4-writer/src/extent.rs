//! Extent trees: up to four entries in the inode's `i_block`, and index and
//! leaf blocks below it when a file has more extents.

use crate::checksum::crc32c_raw;
use crate::le::{hi32, lo32, put_u16, put_u32};

const EXT4_EXT_MAGIC: u16 = 0xf30a;
const HEADER_SIZE: usize = 12;
const ENTRY_SIZE: usize = 12;
/// Entries that fit in `i_block` after the header.
const ROOT_ENTRIES: usize = 4;
/// Longest initialized extent; longer `ee_len` values mean unwritten.
pub(crate) const MAX_EXTENT_LEN: u64 = 32768;

/// One mapping of `len` file blocks from `logical` to disk blocks from
/// `physical`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Extent {
    pub logical: u32,
    pub len: u16,
    pub physical: u64,
}

/// Appends a run to `extents`, extending the last extent when the run
/// continues it both in the file and on disk.
#[allow(
    clippy::cast_possible_truncation,
    reason = "extent lengths are at most 32768 and logical blocks fit 32 bits because file sizes are checked"
)]
pub(crate) fn push_run(
    extents: &mut Vec<Extent>,
    mut logical: u32,
    mut physical: u64,
    mut len: u64,
) {
    if let Some(last) = extents.last_mut() {
        let last_len = u64::from(last.len);
        let contiguous = u64::from(last.logical) + last_len == u64::from(logical)
            && last.physical + last_len == physical;
        if contiguous && last_len < MAX_EXTENT_LEN {
            let grow = (MAX_EXTENT_LEN - last_len).min(len);
            // grow <= MAX_EXTENT_LEN - last_len, so the sum fits ee_len.
            last.len = (last_len + grow) as u16;
            logical += grow as u32;
            physical += grow;
            len -= grow;
        }
    }
    while len > 0 {
        let piece = len.min(MAX_EXTENT_LEN);
        extents.push(Extent {
            logical,
            // piece <= 32768.
            len: piece as u16,
            physical,
        });
        // The logical block stays below 2^32 because file sizes are checked.
        logical = logical.wrapping_add(piece as u32);
        physical += piece;
        len -= piece;
    }
}

/// Entries per extent tree block after its header and checksum tail.
fn block_entries(block_size: u32) -> usize {
    (block_size as usize - HEADER_SIZE - 4) / ENTRY_SIZE
}

/// Blocks an extent tree of `extent_count` extents needs outside the inode.
pub(crate) fn tree_blocks(extent_count: u64, block_size: u32) -> u64 {
    let per_block = block_entries(block_size) as u64;
    let mut level = extent_count;
    let mut blocks = 0;
    while level > ROOT_ENTRIES as u64 {
        level = level.div_ceil(per_block);
        blocks += level;
    }
    blocks
}

/// An extent tree ready to store: the `i_block` bytes and the blocks below.
pub(crate) struct ExtentTree {
    pub i_block: [u8; 60],
    /// (disk block, contents) of every index and leaf block.
    pub blocks: Vec<(u64, Vec<u8>)>,
}

/// Builds the tree for `extents`, placing its blocks at `tree_block_numbers`
/// (as many as [`tree_blocks`] returns), and checksums them with the
/// per-inode seed.
pub(crate) fn build(
    extents: &[Extent],
    tree_block_numbers: &[u64],
    block_size: u32,
    inode_seed: u32,
) -> ExtentTree {
    let per_block = block_entries(block_size);
    let mut entries: Vec<[u8; ENTRY_SIZE]> = extents.iter().map(leaf_entry).collect();
    let mut first_logical: Vec<u32> = extents.iter().map(|extent| extent.logical).collect();
    let mut numbers = tree_block_numbers.iter().copied();
    let mut blocks = Vec::with_capacity(tree_block_numbers.len());
    let mut depth = 0u16;

    while entries.len() > ROOT_ENTRIES {
        let mut parent_entries = Vec::new();
        let mut parent_logical = Vec::new();
        for (chunk, logicals) in entries
            .chunks(per_block)
            .zip(first_logical.chunks(per_block))
        {
            let mut block = vec![0u8; block_size as usize];
            write_header(&mut block, chunk.len(), per_block, depth);
            for (index, entry) in chunk.iter().enumerate() {
                let offset = HEADER_SIZE + index * ENTRY_SIZE;
                block[offset..offset + ENTRY_SIZE].copy_from_slice(entry);
            }
            let tail = HEADER_SIZE + per_block * ENTRY_SIZE;
            let checksum = crc32c_raw(inode_seed, &block[..tail]);
            put_u32(&mut block, tail, checksum); // eb_checksum
                                                 // The caller passes tree_blocks() numbers, one per block built here.
            let number = numbers.next().unwrap_or(0);
            parent_entries.push(index_entry(logicals[0], number));
            parent_logical.push(logicals[0]);
            blocks.push((number, block));
        }
        entries = parent_entries;
        first_logical = parent_logical;
        depth += 1;
    }

    let mut i_block = [0u8; 60];
    write_header(&mut i_block, entries.len(), ROOT_ENTRIES, depth);
    for (index, entry) in entries.iter().enumerate() {
        let offset = HEADER_SIZE + index * ENTRY_SIZE;
        i_block[offset..offset + ENTRY_SIZE].copy_from_slice(entry);
    }
    ExtentTree { i_block, blocks }
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "entry counts are at most 340, the entries of a 4 KiB block"
)]
fn write_header(buf: &mut [u8], entries: usize, max: usize, depth: u16) {
    put_u16(buf, 0, EXT4_EXT_MAGIC); // eh_magic
                                     // Both are at most 340, the entries of a 4 KiB block.
    put_u16(buf, 2, entries as u16); // eh_entries
    put_u16(buf, 4, max as u16); // eh_max
    put_u16(buf, 6, depth); // eh_depth
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "block numbers are below 2^48, the 64bit feature limit"
)]
fn leaf_entry(extent: &Extent) -> [u8; ENTRY_SIZE] {
    let mut entry = [0u8; ENTRY_SIZE];
    put_u32(&mut entry, 0, extent.logical); // ee_block
    put_u16(&mut entry, 4, extent.len); // ee_len
    put_u16(&mut entry, 6, hi32(extent.physical) as u16); // ee_start_hi
    put_u32(&mut entry, 8, lo32(extent.physical)); // ee_start_lo
    entry
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "block numbers are below 2^48, the 64bit feature limit"
)]
fn index_entry(logical: u32, block: u64) -> [u8; ENTRY_SIZE] {
    let mut entry = [0u8; ENTRY_SIZE];
    put_u32(&mut entry, 0, logical); // ei_block
    put_u32(&mut entry, 4, lo32(block)); // ei_leaf_lo
    put_u16(&mut entry, 8, hi32(block) as u16); // ei_leaf_hi
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_blocks_by_depth() {
        assert_eq!(tree_blocks(4, 4096), 0);
        assert_eq!(tree_blocks(5, 4096), 1);
        assert_eq!(tree_blocks(340 * 4, 4096), 4);
        assert_eq!(tree_blocks(3000, 4096), 9 + 1);
    }

    #[test]
    fn push_run_merges_and_splits() {
        let mut extents = Vec::new();
        push_run(&mut extents, 0, 100, 10);
        push_run(&mut extents, 10, 110, 5);
        assert_eq!(extents.len(), 1);
        assert_eq!(extents[0].len, 15);
        push_run(&mut extents, 15, 115, 40000);
        assert_eq!(extents.len(), 2);
        assert_eq!(extents[0].len, 32768);
        assert_eq!(extents[1].logical, 32768);
    }

    #[test]
    fn depth_two_for_3000_extents() {
        let extents: Vec<Extent> = (0..3000)
            .map(|i| Extent {
                logical: i * 2,
                len: 1,
                physical: 1000 + u64::from(i),
            })
            .collect();
        let numbers: Vec<u64> = (10..20).collect();
        let tree = build(&extents, &numbers, 4096, 0);
        assert_eq!(u16::from_le_bytes([tree.i_block[6], tree.i_block[7]]), 2);
        assert_eq!(tree.blocks.len(), 10);
    }
}
