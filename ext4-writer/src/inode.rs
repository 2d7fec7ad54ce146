//! On-disk inodes: 256 bytes each, the classic 128 plus 32 bytes of extra
//! fields (`i_extra_isize`) and room for in-inode xattrs.

use crate::checksum::crc32c_raw;
use crate::layout::INODE_SIZE;
use crate::le::{hi16, hi32, lo16, lo32, put_u16, put_u32};
use crate::superblock::EXTRA_ISIZE;
use crate::tree::Timestamp;

pub(crate) const ROOT_INODE: u32 = 2;
pub(crate) const JOURNAL_INODE: u32 = 8;
pub(crate) const LOST_AND_FOUND_INODE: u32 = 11;
pub(crate) const FIRST_INODE: u32 = 11;

pub(crate) const S_IFIFO: u16 = 0o010000;
pub(crate) const S_IFCHR: u16 = 0o020000;
pub(crate) const S_IFDIR: u16 = 0o040000;
pub(crate) const S_IFBLK: u16 = 0o060000;
pub(crate) const S_IFREG: u16 = 0o100000;
pub(crate) const S_IFLNK: u16 = 0o120000;
pub(crate) const S_IFSOCK: u16 = 0o140000;

/// `i_flags`: the directory has an htree index.
pub(crate) const EXT4_INDEX_FL: u32 = 0x1000;
/// `i_flags`: `i_block` contains an extent tree.
pub(crate) const EXT4_EXTENTS_FL: u32 = 0x80000;

/// Bytes after the extra fields where in-inode xattrs go.
pub(crate) const IN_INODE_XATTR_ROOM: usize = INODE_SIZE as usize - 128 - EXTRA_ISIZE as usize;

/// Largest `i_blocks` value without `EXT4_HUGE_FILE_FL`: 48 bits of
/// 512-byte sectors.
const MAX_SECTORS: u64 = (1 << 48) - 1;

/// Largest number of seconds the 32-bit field plus 2 epoch bits holds.
pub(crate) const MAX_SECONDS: i64 = (1i64 << 34) - (1i64 << 31) - 1;
pub(crate) const MIN_SECONDS: i64 = -(1i64 << 31);

/// The values of one inode.
#[derive(Clone, Debug)]
pub(crate) struct Inode {
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub atime: Timestamp,
    pub ctime: Timestamp,
    pub mtime: Timestamp,
    pub crtime: Timestamp,
    pub links_count: u16,
    /// Space in use, data plus extent tree and xattr blocks, in 512-byte
    /// sectors (`i_blocks`).
    pub sectors: u64,
    pub flags: u32,
    pub i_block: [u8; 60],
    pub file_acl: u64,
    /// The in-inode xattr area, starting with its magic, or empty.
    pub xattrs: Vec<u8>,
}

impl Default for Inode {
    fn default() -> Self {
        Self {
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            atime: Timestamp::default(),
            ctime: Timestamp::default(),
            mtime: Timestamp::default(),
            crtime: Timestamp::default(),
            links_count: 0,
            sectors: 0,
            flags: 0,
            i_block: [0; 60],
            file_acl: 0,
            xattrs: Vec::new(),
        }
    }
}

/// Checks whether `time` fits the inode encoding.
pub(crate) fn timestamp_in_range(time: Timestamp) -> bool {
    (MIN_SECONDS..=MAX_SECONDS).contains(&time.seconds) && time.nanoseconds < 1_000_000_000
}

/// Splits a time into the 32-bit seconds field and the `_extra` field:
/// nanoseconds shifted left by 2 and two epoch bits that extend the
/// seconds to 34 bits, as the kernel's `ext4_encode_extra_time` does.
/// The caller checked the range with [`timestamp_in_range`].
#[allow(
    clippy::cast_possible_truncation,
    reason = "the low 32 bits are stored as is and the epoch bits carry the rest"
)]
fn encode_time(time: Timestamp) -> (u32, u32) {
    let low = time.seconds as i32;
    let epoch = ((time.seconds - i64::from(low)) >> 32) as u32 & 0x3;
    (low as u32, (time.nanoseconds << 2) | epoch)
}

/// Old (16-bit) and new (32-bit) device encodings as ext4 stores them:
/// the old one in `i_block[0]` when major and minor fit 8 bits, else the
/// new one in `i_block[1]`.
pub(crate) fn device_i_block(major: u32, minor: u32) -> [u8; 60] {
    let mut i_block = [0u8; 60];
    if major < 256 && minor < 256 {
        put_u32(&mut i_block, 0, (major << 8) | minor);
    } else {
        let encoded = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
        put_u32(&mut i_block, 4, encoded);
    }
    i_block
}

impl Inode {
    /// Encodes the inode numbered `inode` with its checksum.
    ///
    /// # Errors
    /// Returns the number of sectors when `i_blocks` overflows 48 bits.
    pub fn encode(&self, inode: u32, fs_seed: u32) -> Result<[u8; INODE_SIZE as usize], u64> {
        let mut raw = [0u8; INODE_SIZE as usize];
        self.encode_into(&mut raw, inode, fs_seed)?;
        Ok(raw)
    }

    #[allow(
        clippy::cast_possible_truncation,
        reason = "i_blocks and i_file_acl are below 2^48, checked or allocated within the filesystem"
    )]
    fn encode_into(&self, raw: &mut [u8], inode: u32, fs_seed: u32) -> Result<(), u64> {
        let sectors = self.sectors;
        if sectors > MAX_SECTORS {
            return Err(sectors);
        }
        let (atime, atime_extra) = encode_time(self.atime);
        let (ctime, ctime_extra) = encode_time(self.ctime);
        let (mtime, mtime_extra) = encode_time(self.mtime);
        let (crtime, crtime_extra) = encode_time(self.crtime);

        put_u16(raw, 0x00, self.mode); // i_mode
        put_u16(raw, 0x02, lo16(self.uid)); // i_uid
        put_u32(raw, 0x04, lo32(self.size)); // i_size_lo
        put_u32(raw, 0x08, atime); // i_atime
        put_u32(raw, 0x0c, ctime); // i_ctime
        put_u32(raw, 0x10, mtime); // i_mtime
        put_u16(raw, 0x18, lo16(self.gid)); // i_gid
        put_u16(raw, 0x1a, self.links_count); // i_links_count
        put_u32(raw, 0x1c, lo32(sectors)); // i_blocks_lo
        put_u32(raw, 0x20, self.flags); // i_flags
        raw[0x28..0x64].copy_from_slice(&self.i_block); // i_block
        put_u32(raw, 0x68, lo32(self.file_acl)); // i_file_acl_lo
        put_u32(raw, 0x6c, hi32(self.size)); // i_size_high
                                             // 48-bit values: the high parts are 16 bits, checked above.
        put_u16(raw, 0x74, (sectors >> 32) as u16); // l_i_blocks_high
        put_u16(raw, 0x76, (self.file_acl >> 32) as u16); // l_i_file_acl_high
        put_u16(raw, 0x78, hi16(self.uid)); // l_i_uid_high
        put_u16(raw, 0x7a, hi16(self.gid)); // l_i_gid_high
        put_u16(raw, 0x80, EXTRA_ISIZE); // i_extra_isize
        put_u32(raw, 0x84, ctime_extra); // i_ctime_extra
        put_u32(raw, 0x88, mtime_extra); // i_mtime_extra
        put_u32(raw, 0x8c, atime_extra); // i_atime_extra
        put_u32(raw, 0x90, crtime); // i_crtime
        put_u32(raw, 0x94, crtime_extra); // i_crtime_extra
        let xattr_start = 128 + EXTRA_ISIZE as usize;
        let xattr_len = self.xattrs.len().min(IN_INODE_XATTR_ROOM);
        raw[xattr_start..xattr_start + xattr_len].copy_from_slice(&self.xattrs[..xattr_len]);

        // The checksum covers the whole inode with i_checksum_lo (0x7c) and
        // i_checksum_hi (0x82) taken as zero, from the per-inode seed
        // (generation 0).
        let seed = crate::checksum::inode_seed(fs_seed, inode, 0);
        let mut csum = crc32c_raw(seed, &raw[..0x7c]);
        csum = crc32c_raw(csum, &[0, 0]);
        csum = crc32c_raw(csum, &raw[0x7e..0x82]);
        csum = crc32c_raw(csum, &[0, 0]);
        csum = crc32c_raw(csum, &raw[0x84..]);
        put_u16(raw, 0x7c, lo16(csum)); // l_i_checksum_lo
        put_u16(raw, 0x82, hi16(csum)); // i_checksum_hi
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_epoch_bits() {
        assert_eq!(encode_time(Timestamp::new(-1, 0)), (0xffff_ffff, 0));
        assert_eq!(encode_time(Timestamp::new(1 << 31, 0)), (0x8000_0000, 1));
        assert_eq!(
            encode_time(Timestamp::new(0, 999_999_999)),
            (0, 999_999_999 << 2)
        );
    }

    #[test]
    fn device_encodings() {
        assert_eq!(crate::le::get_u32(&device_i_block(8, 0), 0), 0x800);
        let new = device_i_block(259, 1_048_575);
        assert_eq!(crate::le::get_u32(&new, 0), 0);
        assert_eq!(
            crate::le::get_u32(&new, 4),
            0xff | (259 << 8) | (0xfff00 << 12)
        );
    }
}
