//! Block group descriptors: 64 bytes each with the `64bit` feature, one
//! table after every superblock copy.

use crate::checksum::crc32c_raw;
use crate::layout::DESC_SIZE;
use crate::le::{hi16, hi32, lo16, lo32, put_u16, put_u32};

/// `bg_flags`: the inode table is zeroed, so nothing needs to clear it.
const EXT4_BG_INODE_ZEROED: u16 = 0x4;

/// The values of one group descriptor.
#[derive(Clone, Debug, Default)]
pub(crate) struct GroupDesc {
    pub block_bitmap: u64,
    pub inode_bitmap: u64,
    pub inode_table: u64,
    pub free_blocks: u32,
    pub free_inodes: u32,
    pub used_dirs: u32,
    /// Inodes at the end of the table never used (`bg_itable_unused`).
    pub itable_unused: u32,
    pub block_bitmap_csum: u32,
    pub inode_bitmap_csum: u32,
}

impl GroupDesc {
    /// Encodes the descriptor of `group` with its checksum.
    pub fn encode(&self, group: u32, fs_seed: u32) -> [u8; DESC_SIZE as usize] {
        let mut desc = [0u8; DESC_SIZE as usize];
        put_u32(&mut desc, 0x00, lo32(self.block_bitmap)); // bg_block_bitmap_lo
        put_u32(&mut desc, 0x04, lo32(self.inode_bitmap)); // bg_inode_bitmap_lo
        put_u32(&mut desc, 0x08, lo32(self.inode_table)); // bg_inode_table_lo
        put_u16(&mut desc, 0x0c, lo16(self.free_blocks)); // bg_free_blocks_count_lo
        put_u16(&mut desc, 0x0e, lo16(self.free_inodes)); // bg_free_inodes_count_lo
        put_u16(&mut desc, 0x10, lo16(self.used_dirs)); // bg_used_dirs_count_lo
        put_u16(&mut desc, 0x12, EXT4_BG_INODE_ZEROED); // bg_flags
        put_u16(&mut desc, 0x18, lo16(self.block_bitmap_csum)); // bg_block_bitmap_csum_lo
        put_u16(&mut desc, 0x1a, lo16(self.inode_bitmap_csum)); // bg_inode_bitmap_csum_lo
        put_u16(&mut desc, 0x1c, lo16(self.itable_unused)); // bg_itable_unused_lo
        put_u32(&mut desc, 0x20, hi32(self.block_bitmap)); // bg_block_bitmap_hi
        put_u32(&mut desc, 0x24, hi32(self.inode_bitmap)); // bg_inode_bitmap_hi
        put_u32(&mut desc, 0x28, hi32(self.inode_table)); // bg_inode_table_hi
        put_u16(&mut desc, 0x2c, hi16(self.free_blocks)); // bg_free_blocks_count_hi
        put_u16(&mut desc, 0x2e, hi16(self.free_inodes)); // bg_free_inodes_count_hi
        put_u16(&mut desc, 0x30, hi16(self.used_dirs)); // bg_used_dirs_count_hi
        put_u16(&mut desc, 0x32, hi16(self.itable_unused)); // bg_itable_unused_hi
        put_u16(&mut desc, 0x38, hi16(self.block_bitmap_csum)); // bg_block_bitmap_csum_hi
        put_u16(&mut desc, 0x3a, hi16(self.inode_bitmap_csum)); // bg_inode_bitmap_csum_hi

        // metadata_csum: the low 16 bits of CRC32C over the group number and
        // the descriptor with bg_checksum (offset 0x1e) taken as zero.
        let mut csum = crc32c_raw(fs_seed, &group.to_le_bytes());
        csum = crc32c_raw(csum, &desc[..0x1e]);
        csum = crc32c_raw(csum, &[0, 0]);
        csum = crc32c_raw(csum, &desc[0x20..]);
        put_u16(&mut desc, 0x1e, lo16(csum)); // bg_checksum
        desc
    }
}
