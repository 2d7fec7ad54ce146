//! CRC32C checksums as ext4's `metadata_csum` computes them.
//!
//! The kernel's `ext4_chksum` and e2fsprogs' `ext2fs_crc32c_le` run CRC32C
//! from a given seed without the final inversion, so the stored value is the
//! raw register. The `crc32c` crate inverts on entry and exit; [`crc32c_raw`]
//! undoes both.

/// CRC32C of `data` continued from `seed`, without pre- or post-inversion.
pub(crate) fn crc32c_raw(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

/// The filesystem checksum seed (`s_checksum_seed`): CRC32C of the UUID from
/// all ones.
pub(crate) fn fs_seed(uuid: &[u8; 16]) -> u32 {
    crc32c_raw(!0, uuid)
}

/// The per-inode seed that inode, extent, directory and htree checksums
/// start from: the fs seed continued over the inode number and generation.
pub(crate) fn inode_seed(fs_seed: u32, inode: u32, generation: u32) -> u32 {
    let seed = crc32c_raw(fs_seed, &inode.to_le_bytes());
    crc32c_raw(seed, &generation.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_matches_reference_vector() {
        // CRC32C("123456789") is 0xe3069283 with inversions (RFC 3720 B.4).
        assert_eq!(!crc32c_raw(!0, b"123456789"), 0xe306_9283);
    }

    #[test]
    fn raw_continues_across_calls() {
        let whole = crc32c_raw(7, b"abcdef");
        let split = crc32c_raw(crc32c_raw(7, b"abc"), b"def");
        assert_eq!(whole, split);
    }
}
