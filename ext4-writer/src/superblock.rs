//! The superblock: 1024 bytes at byte 1024 of the filesystem, copied to the
//! start of every group that `sparse_super` picks.

use crate::checksum::crc32c_raw;
use crate::layout::{Geometry, DESC_SIZE, INODE_SIZE};
use crate::le::{hi32, lo32, put_u16, put_u32, put_u64, put_u8};

pub(crate) const SUPERBLOCK_SIZE: usize = 1024;
/// Byte offset of the primary superblock.
pub(crate) const SUPERBLOCK_OFFSET: u64 = 1024;

const EXT4_SUPER_MAGIC: u16 = 0xef53;
const EXT4_GOOD_OLD_FIRST_INO: u32 = 11;
pub(crate) const EXTRA_ISIZE: u16 = 32;

const COMPAT_HAS_JOURNAL: u32 = 0x4;
const COMPAT_EXT_ATTR: u32 = 0x8;
const COMPAT_DIR_INDEX: u32 = 0x20;

const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_FLEX_BG: u32 = 0x200;

const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_LARGE_FILE: u32 = 0x2;
const RO_COMPAT_HUGE_FILE: u32 = 0x8;
const RO_COMPAT_DIR_NLINK: u32 = 0x20;
const RO_COMPAT_EXTRA_ISIZE: u32 = 0x40;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;

/// `s_flags`: directory hashes treat name bytes as signed chars, as on x86
/// where mke2fs sets this flag.
const EXT2_FLAGS_SIGNED_HASH: u32 = 0x1;
/// `s_def_hash_version`: half MD4, the mke2fs default.
pub(crate) const DX_HASH_HALF_MD4: u8 = 1;
/// `s_default_mount_opts`: user xattrs and ACLs, as mke2fs sets them.
const EXT4_DEFM_XATTR_USER_ACL: u32 = 0x4 | 0x8;
/// `s_log_groups_per_flex`: 16 groups per flex group, the mke2fs default.
const LOG_GROUPS_PER_FLEX: u8 = 4;
const EXT3_JNL_BACKUP_BLOCKS: u8 = 1;
const EXT4_CRC32C_CHKSUM: u8 = 1;
const JOURNAL_INODE: u32 = 8;

/// Everything of the superblock that is not derived from the geometry.
#[derive(Clone, Debug)]
pub(crate) struct SuperblockFields {
    pub free_blocks: u64,
    pub free_inodes: u32,
    pub time: i64,
    pub uuid: [u8; 16],
    pub label: [u8; 16],
    pub hash_seed: [u8; 16],
    /// `s_jnl_blocks`: a copy of the journal inode's `i_block` and size, or
    /// `None` without a journal.
    pub journal_backup: Option<JournalBackup>,
}

#[derive(Clone, Debug)]
pub(crate) struct JournalBackup {
    pub i_block: [u8; 60],
    pub size: u64,
}

/// Encodes the superblock copy kept in `group`.
#[allow(
    clippy::cast_possible_truncation,
    reason = "inode and descriptor sizes are the constants 256 and 64"
)]
pub(crate) fn encode(geometry: &Geometry, fields: &SuperblockFields, group: u32) -> Vec<u8> {
    let mut sb = vec![0u8; SUPERBLOCK_SIZE];
    let log_block_size = geometry.block_size.trailing_zeros() - 10;
    let (time_lo, time_hi) = split_time(fields.time);

    put_u32(&mut sb, 0x00, geometry.inodes_count()); // s_inodes_count
    put_u32(&mut sb, 0x04, lo32(geometry.blocks_count)); // s_blocks_count_lo
    put_u32(&mut sb, 0x0c, lo32(fields.free_blocks)); // s_free_blocks_count_lo
    put_u32(&mut sb, 0x10, fields.free_inodes); // s_free_inodes_count
    put_u32(&mut sb, 0x14, lo32(geometry.first_data_block)); // s_first_data_block
    put_u32(&mut sb, 0x18, log_block_size); // s_log_block_size
    put_u32(&mut sb, 0x1c, log_block_size); // s_log_cluster_size
    put_u32(&mut sb, 0x20, geometry.blocks_per_group); // s_blocks_per_group
    put_u32(&mut sb, 0x24, geometry.blocks_per_group); // s_clusters_per_group
    put_u32(&mut sb, 0x28, geometry.inodes_per_group); // s_inodes_per_group
    put_u32(&mut sb, 0x30, time_lo); // s_wtime
    put_u16(&mut sb, 0x36, 0xffff); // s_max_mnt_count: no forced checks
    put_u16(&mut sb, 0x38, EXT4_SUPER_MAGIC); // s_magic
    put_u16(&mut sb, 0x3a, 1); // s_state: cleanly unmounted
    put_u16(&mut sb, 0x3c, 1); // s_errors: continue
    put_u32(&mut sb, 0x40, time_lo); // s_lastcheck
    put_u32(&mut sb, 0x4c, 1); // s_rev_level: dynamic
    put_u32(&mut sb, 0x54, EXT4_GOOD_OLD_FIRST_INO); // s_first_ino
                                                     // INODE_SIZE is 256 and a group number fits the 16-bit field whenever
                                                     // the group has a superblock copy worth reading; mke2fs truncates too.
    put_u16(&mut sb, 0x58, INODE_SIZE as u16); // s_inode_size
    put_u16(&mut sb, 0x5a, (group & 0xffff) as u16); // s_block_group_nr

    let mut compat = COMPAT_EXT_ATTR | COMPAT_DIR_INDEX;
    if fields.journal_backup.is_some() {
        compat |= COMPAT_HAS_JOURNAL;
    }
    let incompat = INCOMPAT_FILETYPE | INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG;
    let ro_compat = RO_COMPAT_SPARSE_SUPER
        | RO_COMPAT_LARGE_FILE
        | RO_COMPAT_HUGE_FILE
        | RO_COMPAT_DIR_NLINK
        | RO_COMPAT_EXTRA_ISIZE
        | RO_COMPAT_METADATA_CSUM;
    put_u32(&mut sb, 0x5c, compat); // s_feature_compat
    put_u32(&mut sb, 0x60, incompat); // s_feature_incompat
    put_u32(&mut sb, 0x64, ro_compat); // s_feature_ro_compat
    sb[0x68..0x78].copy_from_slice(&fields.uuid); // s_uuid
    sb[0x78..0x88].copy_from_slice(&fields.label); // s_volume_name
    sb[0xec..0xfc].copy_from_slice(&fields.hash_seed); // s_hash_seed
    put_u8(&mut sb, 0xfc, DX_HASH_HALF_MD4); // s_def_hash_version
    put_u16(&mut sb, 0xfe, DESC_SIZE as u16); // s_desc_size
    put_u32(&mut sb, 0x100, EXT4_DEFM_XATTR_USER_ACL); // s_default_mount_opts
    put_u32(&mut sb, 0x108, time_lo); // s_mkfs_time

    if let Some(journal) = &fields.journal_backup {
        put_u32(&mut sb, 0xe0, JOURNAL_INODE); // s_journal_inum
        put_u8(&mut sb, 0xfd, EXT3_JNL_BACKUP_BLOCKS); // s_jnl_backup_type
        sb[0x10c..0x148].copy_from_slice(&journal.i_block); // s_jnl_blocks[0..15]
        put_u32(&mut sb, 0x148, hi32(journal.size)); // s_jnl_blocks[15]: i_size_high
        put_u32(&mut sb, 0x14c, lo32(journal.size)); // s_jnl_blocks[16]: i_size
    }

    put_u32(&mut sb, 0x150, hi32(geometry.blocks_count)); // s_blocks_count_hi
    put_u32(&mut sb, 0x158, hi32(fields.free_blocks)); // s_free_blocks_count_hi
    put_u16(&mut sb, 0x15c, EXTRA_ISIZE); // s_min_extra_isize
    put_u16(&mut sb, 0x15e, EXTRA_ISIZE); // s_want_extra_isize
    put_u32(&mut sb, 0x160, EXT2_FLAGS_SIGNED_HASH); // s_flags
    put_u8(&mut sb, 0x174, LOG_GROUPS_PER_FLEX); // s_log_groups_per_flex
    put_u8(&mut sb, 0x175, EXT4_CRC32C_CHKSUM); // s_checksum_type
    put_u64(&mut sb, 0x178, 0); // s_kbytes_written
    put_u8(&mut sb, 0x274, time_hi); // s_wtime_hi
    put_u8(&mut sb, 0x276, time_hi); // s_mkfs_time_hi
    put_u8(&mut sb, 0x277, time_hi); // s_lastcheck_hi

    let checksum = crc32c_raw(!0, &sb[..0x3fc]);
    put_u32(&mut sb, 0x3fc, checksum); // s_checksum
    sb
}

/// Splits a superblock time into its low 32 bits and the 8 bits above,
/// clamped to the unsigned 40-bit range the fields hold.
fn split_time(time: i64) -> (u32, u8) {
    let clamped = time.clamp(0, (1i64 << 40) - 1) as u64;
    (lo32(clamped), (clamped >> 32) as u8)
}
