//! Linear directory blocks: `ext4_dir_entry_2` records packed into blocks
//! that end with a 12-byte checksum tail.

use crate::checksum::crc32c_raw;
use crate::le::{put_u16, put_u32, put_u8};

/// Size of the checksum tail that ends every directory leaf block.
pub(crate) const TAIL_SIZE: usize = 12;
/// `det_reserved_ft` of the checksum tail.
const TAIL_FILE_TYPE: u8 = 0xde;

pub(crate) const FT_REG_FILE: u8 = 1;
pub(crate) const FT_DIR: u8 = 2;
pub(crate) const FT_CHRDEV: u8 = 3;
pub(crate) const FT_BLKDEV: u8 = 4;
pub(crate) const FT_FIFO: u8 = 5;
pub(crate) const FT_SOCK: u8 = 6;
pub(crate) const FT_SYMLINK: u8 = 7;

/// One directory entry to store.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry<'a> {
    pub inode: u32,
    pub name: &'a [u8],
    pub file_type: u8,
}

/// Returns the record length of an entry with a `name_len`-byte name: 8
/// bytes of header plus the name, rounded up to 4 bytes.
pub(crate) fn rec_len(name_len: usize) -> usize {
    (8 + name_len + 3) & !3
}

/// Splits entries into blocks: returns the index of the first entry of
/// each block. A block closes when the next entry does not fit in `usable`
/// bytes, or when fewer than `slack` bytes are left after an entry.
pub(crate) fn block_starts(
    rec_lens: impl Iterator<Item = usize>,
    usable: usize,
    slack: usize,
) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut left = 0usize;
    for (index, len) in rec_lens.enumerate() {
        if len > left {
            starts.push(index);
            left = usable;
        }
        left -= len;
        if left < slack {
            left = 0;
        }
    }
    starts
}

/// Encodes `entries` into one block, the last entry stretched to the tail,
/// and sets the checksum tail.
#[allow(
    clippy::cast_possible_truncation,
    reason = "record lengths are below the block size, at most 4096"
)]
pub(crate) fn encode_leaf(entries: &[Entry], block_size: usize, inode_seed: u32) -> Vec<u8> {
    let mut block = vec![0u8; block_size];
    let usable = block_size - TAIL_SIZE;
    let mut offset = 0;
    for (index, entry) in entries.iter().enumerate() {
        let len = if index + 1 == entries.len() {
            usable - offset
        } else {
            rec_len(entry.name.len())
        };
        write_entry(&mut block, offset, entry, len);
        offset += len;
    }
    if entries.is_empty() {
        // An empty block: one unused record spanning it.
        put_u16(&mut block, 4, usable as u16); // rec_len
    }
    set_tail(&mut block, inode_seed);
    block
}

/// Writes one `ext4_dir_entry_2` at `offset` with record length `len`.
#[allow(
    clippy::cast_possible_truncation,
    reason = "record lengths are below the block size and names at most 255 bytes, checked by the tree"
)]
pub(crate) fn write_entry(block: &mut [u8], offset: usize, entry: &Entry, len: usize) {
    put_u32(block, offset, entry.inode); // inode
                                         // Record lengths are below the 64 KiB that the 16-bit field holds for
                                         // the block sizes this writer makes.
    put_u16(block, offset + 4, len as u16); // rec_len
                                            // Names are at most 255 bytes, checked when the tree is built.
    put_u8(block, offset + 6, entry.name.len() as u8); // name_len
    put_u8(block, offset + 7, entry.file_type); // file_type
    block[offset + 8..offset + 8 + entry.name.len()].copy_from_slice(entry.name);
}

/// Writes the checksum tail: a fake entry of 12 bytes whose last 4 hold
/// CRC32C of the block before it, from the per-inode seed.
#[allow(
    clippy::cast_possible_truncation,
    reason = "the tail size is the constant 12"
)]
pub(crate) fn set_tail(block: &mut [u8], inode_seed: u32) {
    let tail = block.len() - TAIL_SIZE;
    block[tail..].fill(0);
    put_u16(block, tail + 4, TAIL_SIZE as u16); // det_rec_len
    put_u8(block, tail + 7, TAIL_FILE_TYPE); // det_reserved_ft
    let checksum = crc32c_raw(inode_seed, &block[..tail]);
    put_u32(block, tail + 8, checksum); // det_checksum
}

/// Linear directory blocks: `.` and `..`, then `entries` in order, and
/// empty blocks up to `min_blocks`.
pub(crate) fn linear_blocks(
    dot_dot: [Entry; 2],
    entries: &[Entry],
    block_size: usize,
    min_blocks: usize,
    inode_seed: u32,
) -> Vec<Vec<u8>> {
    let all: Vec<Entry> = dot_dot.iter().chain(entries.iter()).copied().collect();
    let starts = block_starts(
        all.iter().map(|e| rec_len(e.name.len())),
        block_size - TAIL_SIZE,
        0,
    );
    let mut blocks: Vec<Vec<u8>> = starts
        .iter()
        .enumerate()
        .map(|(index, start)| {
            let end = starts.get(index + 1).copied().unwrap_or(all.len());
            encode_leaf(&all[*start..end], block_size, inode_seed)
        })
        .collect();
    while blocks.len() < min_blocks {
        blocks.push(encode_leaf(&[], block_size, inode_seed));
    }
    blocks
}

/// Counts the blocks [`linear_blocks`] makes, without encoding them.
pub(crate) fn linear_block_count(names: impl Iterator<Item = usize>, block_size: usize) -> usize {
    let dots = [1usize, 2].into_iter();
    block_starts(dots.chain(names).map(rec_len), block_size - TAIL_SIZE, 0).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rec_len_rounds_to_four() {
        assert_eq!(rec_len(1), 12);
        assert_eq!(rec_len(4), 12);
        assert_eq!(rec_len(5), 16);
        assert_eq!(rec_len(255), 264);
    }

    #[test]
    fn blocks_split_when_full() {
        // 4084 usable bytes hold 15 records of 264 bytes (3960).
        let starts = block_starts(std::iter::repeat_n(264, 31), 4084, 0);
        assert_eq!(starts, vec![0, 15, 30]);
    }

    #[test]
    fn slack_closes_block_early() {
        let starts = block_starts(std::iter::repeat_n(100, 20), 1000, 200);
        assert_eq!(starts, vec![0, 9, 18]);
    }
}
