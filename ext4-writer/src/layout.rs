//! Block group geometry and the block allocator.
//!
//! Every group holds `8 * block_size` blocks; the last one may be partial.
//! Groups 0, 1 and the powers of 3, 5 and 7 start with a copy of the
//! superblock and the group descriptor table (`sparse_super`). With
//! `flex_bg` the bitmaps and inode tables may sit anywhere, so the writer
//! packs them all after the primary descriptors and then allocates data
//! blocks upwards from there.

use crate::error::Error;

/// Size of one on-disk inode, in bytes.
pub(crate) const INODE_SIZE: u32 = 256;

/// Size of one group descriptor with the `64bit` feature, in bytes.
pub(crate) const DESC_SIZE: u32 = 64;

/// Fewest blocks of a filesystem: a superblock, a descriptor block, two
/// bitmaps, an inode table and the root and lost+found directories.
const MIN_BLOCKS: u64 = 16;

/// The shape of a filesystem: block and group counts and sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub block_size: u32,
    pub blocks_count: u64,
    pub first_data_block: u64,
    pub blocks_per_group: u32,
    pub inodes_per_group: u32,
    pub group_count: u32,
    /// Blocks of one copy of the group descriptor table.
    pub gdt_blocks: u64,
    /// Blocks of one group's inode table.
    pub inode_table_blocks: u64,
}

impl Geometry {
    /// The geometry of `blocks_count` blocks holding at least `inodes` inodes.
    ///
    /// # Errors
    /// [`Error::OutOfSpace`] below 16 blocks, [`Error::TooManyInodes`] when a group cannot hold its share of
    /// inodes, [`Error::FilesystemTooLarge`] when the descriptor table would
    /// not fit in a group or the counts overflow 32 bits.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "inodes per group were checked to be at most blocks per group"
    )]
    pub fn new(block_size: u32, blocks_count: u64, inodes: u64) -> Result<Self, Error> {
        let first_data_block = u64::from(block_size == 1024);
        let blocks_per_group = block_size * 8;
        if blocks_count < first_data_block + MIN_BLOCKS {
            return Err(Error::OutOfSpace {
                blocks: blocks_count,
            });
        }
        let group_count_wide = blocks_count
            .saturating_sub(first_data_block)
            .div_ceil(u64::from(blocks_per_group))
            .max(1);
        let group_count =
            u32::try_from(group_count_wide).map_err(|_| Error::FilesystemTooLarge {
                blocks: blocks_count,
                block_size,
            })?;
        let gdt_blocks = (group_count_wide * u64::from(DESC_SIZE)).div_ceil(u64::from(block_size));
        if 1 + gdt_blocks >= u64::from(blocks_per_group) / 2 {
            return Err(Error::FilesystemTooLarge {
                blocks: blocks_count,
                block_size,
            });
        }

        // Inodes per group: a multiple of 8 (whole bitmap bytes) and of the
        // inodes in one table block, at least 16 so group 0 holds the 11
        // reserved inodes, and at most one bitmap block of them.
        let per_table_block = block_size / INODE_SIZE;
        let align = u64::from(per_table_block.max(8));
        let inodes_per_group = inodes
            .div_ceil(group_count_wide)
            .max(16)
            .div_ceil(align)
            .saturating_mul(align);
        if inodes_per_group > u64::from(blocks_per_group)
            || inodes_per_group * group_count_wide > u64::from(u32::MAX)
        {
            return Err(Error::TooManyInodes {
                inodes,
                blocks: blocks_count,
            });
        }
        // Checked just above: at most blocks_per_group.
        let inodes_per_group = inodes_per_group as u32;
        let inode_table_blocks = u64::from(inodes_per_group / per_table_block);

        Ok(Self {
            block_size,
            blocks_count,
            first_data_block,
            blocks_per_group,
            inodes_per_group,
            group_count,
            gdt_blocks,
            inode_table_blocks,
        })
    }

    pub fn inodes_count(&self) -> u32 {
        // Bounded by u32::MAX in `new`.
        self.inodes_per_group * self.group_count
    }

    pub fn group_first_block(&self, group: u32) -> u64 {
        self.first_data_block + u64::from(group) * u64::from(self.blocks_per_group)
    }

    /// Blocks in `group`; the last group may be partial.
    pub fn group_block_count(&self, group: u32) -> u64 {
        let first = self.group_first_block(group);
        (self.blocks_count - first).min(u64::from(self.blocks_per_group))
    }

    /// Whether `group` starts with a superblock and descriptor table copy.
    pub fn has_super(&self, group: u32) -> bool {
        group <= 1 || [3, 5, 7].iter().any(|base| is_power_of(group, *base))
    }

    /// Blocks at the start of `group` taken by the superblock and
    /// descriptor table copy.
    pub fn reserved_blocks(&self, group: u32) -> u64 {
        if self.has_super(group) {
            1 + self.gdt_blocks
        } else {
            0
        }
    }

    /// The group holding `block`.
    pub fn group_of_block(&self, block: u64) -> u32 {
        let index =
            (block.saturating_sub(self.first_data_block)) / u64::from(self.blocks_per_group);
        // Blocks inside the filesystem belong to one of group_count groups.
        u32::try_from(index).unwrap_or(u32::MAX)
    }

    /// The group holding inode `inode` (numbered from 1).
    pub fn group_of_inode(&self, inode: u32) -> u32 {
        (inode - 1) / self.inodes_per_group
    }
}

fn is_power_of(mut value: u32, base: u32) -> bool {
    while value > 1 && value % base == 0 {
        value /= base;
    }
    value == 1
}

/// Hands out blocks upwards from a cursor, skipping superblock copies.
///
/// Blocks below the cursor are in use except the gaps left when a
/// contiguous request skipped a superblock copy, so the block bitmaps can be
/// derived from the cursor and the gaps alone.
#[derive(Clone, Debug)]
pub(crate) struct Allocator {
    cursor: u64,
    gaps: Vec<(u64, u64)>,
}

impl Allocator {
    /// An allocator starting after the primary superblock and descriptors.
    pub fn new(geometry: &Geometry) -> Self {
        Self {
            cursor: geometry.first_data_block + geometry.reserved_blocks(0),
            gaps: Vec::new(),
        }
    }

    /// The first block never handed out.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Free ranges below the cursor, as (first block, count).
    pub fn gaps(&self) -> &[(u64, u64)] {
        &self.gaps
    }

    /// Moves the cursor out of a superblock copy.
    fn skip_reserved(&mut self, geometry: &Geometry) {
        let group = geometry.group_of_block(self.cursor);
        if group < geometry.group_count {
            let first = geometry.group_first_block(group);
            let reserved_end = first + geometry.reserved_blocks(group);
            if self.cursor < reserved_end {
                self.cursor = reserved_end;
            }
        }
    }

    /// The number of blocks from the cursor to the next superblock copy or
    /// the end of the filesystem.
    fn room(&self, geometry: &Geometry) -> u64 {
        let group = geometry.group_of_block(self.cursor);
        let mut next = group.saturating_add(1);
        while next < geometry.group_count && !geometry.has_super(next) {
            next += 1;
        }
        let limit = if next < geometry.group_count {
            geometry.group_first_block(next)
        } else {
            geometry.blocks_count
        };
        limit.saturating_sub(self.cursor)
    }

    /// Allocates up to `max_len` contiguous blocks; returns (first, count).
    ///
    /// # Errors
    /// [`Error::OutOfSpace`] when no block is left.
    pub fn alloc_run(&mut self, geometry: &Geometry, max_len: u64) -> Result<(u64, u64), Error> {
        self.skip_reserved(geometry);
        let room = self.room(geometry);
        if room == 0 || max_len == 0 {
            return Err(Error::OutOfSpace {
                blocks: geometry.blocks_count,
            });
        }
        let len = room.min(max_len);
        let first = self.cursor;
        self.cursor += len;
        Ok((first, len))
    }

    /// Allocates exactly `len` contiguous blocks, leaving a gap before a
    /// superblock copy when they do not fit in front of it.
    pub fn alloc_contiguous(&mut self, geometry: &Geometry, len: u64) -> Result<u64, Error> {
        loop {
            self.skip_reserved(geometry);
            let room = self.room(geometry);
            if room >= len {
                let first = self.cursor;
                self.cursor += len;
                return Ok(first);
            }
            if self.cursor + room >= geometry.blocks_count {
                return Err(Error::OutOfSpace {
                    blocks: geometry.blocks_count,
                });
            }
            self.gaps.push((self.cursor, room));
            self.cursor += room;
        }
    }

    /// Allocates `count` blocks as runs; returns the runs.
    pub fn alloc_blocks(
        &mut self,
        geometry: &Geometry,
        mut count: u64,
    ) -> Result<Vec<(u64, u64)>, Error> {
        let mut runs = Vec::new();
        while count > 0 {
            let run = self.alloc_run(geometry, count)?;
            count -= run.1;
            runs.push(run);
        }
        Ok(runs)
    }

    /// Blocks still free at or above the cursor.
    pub fn remaining(&self, geometry: &Geometry) -> u64 {
        let mut probe = self.clone();
        let mut free = 0;
        loop {
            probe.skip_reserved(geometry);
            let room = probe.room(geometry);
            if room == 0 {
                return free;
            }
            free += room;
            probe.cursor += room;
        }
    }
}

/// Where the per-group metadata went.
#[derive(Clone, Debug)]
pub(crate) struct MetadataBlocks {
    pub block_bitmaps: Vec<u64>,
    pub inode_bitmaps: Vec<u64>,
    pub inode_tables: Vec<u64>,
}

/// Places every group's bitmaps and inode table after the primary
/// descriptors, in the order mke2fs uses inside a flex group: all block
/// bitmaps, then all inode bitmaps, then all inode tables.
pub(crate) fn place_metadata(
    geometry: &Geometry,
    allocator: &mut Allocator,
) -> Result<MetadataBlocks, Error> {
    let groups = geometry.group_count as usize;
    let mut metadata = MetadataBlocks {
        block_bitmaps: Vec::with_capacity(groups),
        inode_bitmaps: Vec::with_capacity(groups),
        inode_tables: Vec::with_capacity(groups),
    };
    for _ in 0..groups {
        metadata
            .block_bitmaps
            .push(allocator.alloc_contiguous(geometry, 1)?);
    }
    for _ in 0..groups {
        metadata
            .inode_bitmaps
            .push(allocator.alloc_contiguous(geometry, 1)?);
    }
    for _ in 0..groups {
        let table = allocator.alloc_contiguous(geometry, geometry.inode_table_blocks)?;
        metadata.inode_tables.push(table);
    }
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_super_groups() {
        let geometry = Geometry::new(4096, 32768 * 60, 1024).unwrap();
        let with_super: Vec<u32> = (0..60).filter(|g| geometry.has_super(*g)).collect();
        assert_eq!(with_super, vec![0, 1, 3, 5, 7, 9, 25, 27, 49]);
    }

    #[test]
    fn one_kib_blocks_start_at_block_one() {
        let geometry = Geometry::new(1024, 20000, 100).unwrap();
        assert_eq!(geometry.first_data_block, 1);
        assert_eq!(geometry.group_count, 3);
        assert_eq!(geometry.group_block_count(2), 20000 - 1 - 2 * 8192);
    }

    #[test]
    fn allocator_skips_superblock_copy() {
        let geometry = Geometry::new(1024, 8193 + 100, 16).unwrap();
        let mut allocator = Allocator::new(&geometry);
        allocator.cursor = 8190;
        let run = allocator.alloc_run(&geometry, 10).unwrap();
        assert_eq!(run, (8190, 3));
        let run = allocator.alloc_run(&geometry, 10).unwrap();
        assert_eq!(
            run.0,
            8193 + 2,
            "the backup superblock and one descriptor block are skipped"
        );
    }

    #[test]
    fn inodes_per_group_rounded() {
        let geometry = Geometry::new(4096, 100_000, 1000).unwrap();
        assert_eq!(geometry.group_count, 4);
        assert_eq!(geometry.inodes_per_group, 256);
        assert_eq!(geometry.inode_table_blocks, 16);
    }
}
