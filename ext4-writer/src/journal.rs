//! The superblock of an internal jbd2 journal and its default size.
//!
//! jbd2 fields are big-endian, unlike the rest of ext4. A clean journal is
//! its superblock followed by blocks the kernel never reads before it writes
//! them, because `s_start = 0` marks it as having nothing to replay.

/// `h_magic` of every jbd2 block.
const JBD2_MAGIC: u32 = 0xC03B_3998;
/// `h_blocktype` of a version 2 journal superblock.
const JBD2_SUPERBLOCK_V2: u32 = 4;
/// `JBD2_FEATURE_INCOMPAT_CSUM_V3`: block tags and commit blocks carry
/// crc32c checksums, and the superblock has `s_checksum`.
const JBD2_FEATURE_INCOMPAT_CSUM_V3: u32 = 0x10;
/// `s_checksum_type` for crc32c.
const JBD2_CRC32C_CHKSUM: u8 = 4;
/// Bytes of `journal_superblock_t` that `s_checksum` covers.
const SUPERBLOCK_LEN: usize = 1024;

// Byte offsets in `journal_superblock_t` (include/linux/jbd2.h).
const H_MAGIC: usize = 0x0;
const H_BLOCKTYPE: usize = 0x4;
const S_BLOCKSIZE: usize = 0xC;
const S_MAXLEN: usize = 0x10;
const S_FIRST: usize = 0x14;
const S_SEQUENCE: usize = 0x18;
const S_FEATURE_INCOMPAT: usize = 0x28;
const S_UUID: usize = 0x30;
const S_NR_USERS: usize = 0x40;
const S_CHECKSUM_TYPE: usize = 0x50;
const S_CHECKSUM: usize = 0xFC;

/// The journal superblock (one fs block) for an internal, clean jbd2 v2
/// journal with csum v3.
///
/// The fields match what e2fsprogs' `ext2fs_create_journal_superblock2`
/// writes for an internal journal (one user, log starting at block 1,
/// sequence 1, `s_start` 0), plus the csum v3 feature, crc32c checksum
/// type and `s_checksum` that the kernel adds on the first mount of a
/// metadata_csum filesystem. `block_size` must be at least 1024.
pub(crate) fn superblock(block_size: u32, journal_blocks: u32, fs_uuid: [u8; 16]) -> Vec<u8> {
    let mut block = vec![0u8; block_size as usize];
    let mut put = |offset: usize, value: u32| {
        block[offset..offset + 4].copy_from_slice(&value.to_be_bytes());
    };

    put(H_MAGIC, JBD2_MAGIC);
    put(H_BLOCKTYPE, JBD2_SUPERBLOCK_V2);
    put(S_BLOCKSIZE, block_size);
    put(S_MAXLEN, journal_blocks);
    put(S_FIRST, 1);
    put(S_SEQUENCE, 1);
    put(S_FEATURE_INCOMPAT, JBD2_FEATURE_INCOMPAT_CSUM_V3);
    put(S_NR_USERS, 1);
    block[S_UUID..S_UUID + 16].copy_from_slice(&fs_uuid);
    block[S_CHECKSUM_TYPE] = JBD2_CRC32C_CHKSUM;

    // jbd2_superblock_csum: crc32c seeded with !0 and without the final
    // inversion over the structure with s_checksum zero, which is the
    // inverse of the standard crc32c.
    let checksum = !crc32c::crc32c(&block[..SUPERBLOCK_LEN]);
    block[S_CHECKSUM..S_CHECKSUM + 4].copy_from_slice(&checksum.to_be_bytes());
    block
}

/// Journal size in blocks for a filesystem of fs_blocks blocks, as mke2fs
/// picks it; 0 when the filesystem is too small for a journal (under 2048
/// blocks), where mke2fs makes none.
///
/// The steps are `ext2fs_default_journal_size` from e2fsprogs 1.47: they
/// count blocks, whatever the block size, so a filesystem of 1 KiB blocks
/// gets a journal of the same block count and a quarter of the bytes.
pub(crate) fn default_size_blocks(fs_blocks: u64, _block_size: u32) -> u32 {
    const STEPS: [(u64, u32); 9] = [
        (2048, 0),
        (32768, 1024),
        (256 * 1024, 4096),
        (512 * 1024, 8192),
        (4096 * 1024, 16384),
        (8192 * 1024, 32768),
        (16384 * 1024, 65536),
        (32768 * 1024, 131072),
        (u64::MAX, 262144),
    ];
    STEPS
        .iter()
        .find(|(below, _)| fs_blocks < *below)
        .map_or(262144, |(_, journal_blocks)| *journal_blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be32(block: &[u8], offset: usize) -> u32 {
        u32::from_be_bytes(block[offset..offset + 4].try_into().unwrap())
    }

    const UUID: [u8; 16] = [
        0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32,
        0x10,
    ];

    #[test]
    fn superblock_fields() {
        let block = superblock(4096, 4096, UUID);

        assert_eq!(block.len(), 4096);
        assert_eq!(be32(&block, 0x0), 0xC03B_3998, "h_magic");
        assert_eq!(be32(&block, 0x4), 4, "h_blocktype: superblock v2");
        assert_eq!(be32(&block, 0x8), 0, "h_sequence");
        assert_eq!(be32(&block, 0xC), 4096, "s_blocksize");
        assert_eq!(be32(&block, 0x10), 4096, "s_maxlen");
        assert_eq!(be32(&block, 0x14), 1, "s_first");
        assert_eq!(be32(&block, 0x18), 1, "s_sequence");
        assert_eq!(be32(&block, 0x1C), 0, "s_start: clean, nothing to replay");
        assert_eq!(be32(&block, 0x20), 0, "s_errno");
        assert_eq!(be32(&block, 0x24), 0, "s_feature_compat");
        assert_eq!(be32(&block, 0x28), 0x10, "s_feature_incompat: csum v3");
        assert_eq!(be32(&block, 0x2C), 0, "s_feature_ro_compat");
        assert_eq!(&block[0x30..0x40], &UUID, "s_uuid");
        assert_eq!(be32(&block, 0x40), 1, "s_nr_users");
        assert_eq!(be32(&block, 0x44), 0, "s_dynsuper");
        assert_eq!(block[0x50], 4, "s_checksum_type: crc32c");
        assert_eq!(be32(&block, 0x54), 0, "s_num_fc_blks");
        assert!(
            block[0x100..].iter().all(|&b| b == 0),
            "s_users and the rest stay zero"
        );
    }

    #[test]
    fn superblock_checksum() {
        let block = superblock(1024, 1024, UUID);

        let mut zeroed = block.clone();
        zeroed[0xFC..0x100].fill(0);
        let expected = crc32c_raw(!0, &zeroed[..1024]);
        assert_eq!(be32(&block, 0xFC), expected, "s_checksum");
        assert_ne!(expected, 0);
    }

    /// crc32c without the pre and post inversion, computed bit by bit with
    /// the reflected polynomial 0x82F63B78, as the kernel's crc32c_le is.
    fn crc32c_raw(mut crc: u32, data: &[u8]) -> u32 {
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
            }
        }
        crc
    }

    #[test]
    fn default_sizes_follow_mke2fs() {
        let cases = [
            (2047, 0),
            (2048, 1024),
            (32767, 1024),
            (32768, 4096),
            (262143, 4096),
            (262144, 8192),
            (524288, 16384),
            (4 * 1024 * 1024, 32768),
            (8 * 1024 * 1024, 65536),
            (16 * 1024 * 1024, 131072),
            (32 * 1024 * 1024, 262144),
            (u64::MAX, 262144),
        ];
        for (fs_blocks, expected) in cases {
            assert_eq!(
                default_size_blocks(fs_blocks, 4096),
                expected,
                "{fs_blocks} blocks"
            );
        }
    }

    /// Replaces the journal superblock of a `mke2fs` image with ours and
    /// checks that `e2fsck -fn` (which verifies csum v3 checksums) and a
    /// kernel mount accept it.
    #[test]
    fn e2fsck_accepts_superblock() {
        use std::process::Command;

        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image.ext4");
        let run = |command: &mut Command| {
            let output = command.output().unwrap_or_else(|err| {
                panic!("failed to run {command:?}: {err}; install e2fsprogs")
            });
            assert!(
                output.status.success(),
                "{command:?} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8(output.stdout).unwrap()
        };
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096", "-O", "metadata_csum"])
            .arg(&image)
            .arg("64M"));
        let bmap = run(Command::new("debugfs")
            .args(["-R", "bmap <8> 0"])
            .arg(&image));
        let journal_start: usize = bmap.trim().parse().unwrap();
        let mut bytes = std::fs::read(&image).unwrap();
        let uuid: [u8; 16] = bytes[1024 + 0x68..1024 + 0x78].try_into().unwrap();
        let theirs = &bytes[journal_start * 4096..(journal_start + 1) * 4096];
        let journal_blocks = be32(theirs, 0x10);
        assert_eq!(
            journal_blocks,
            default_size_blocks(64 * 256, 4096),
            "s_maxlen"
        );

        let ours = superblock(4096, journal_blocks, uuid);
        bytes[journal_start * 4096..(journal_start + 1) * 4096].copy_from_slice(&ours);
        std::fs::write(&image, &bytes).unwrap();

        run(Command::new("e2fsck")
            .env(
                "E2FSCK_CONFIG",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/e2fsck.conf"),
            )
            .arg("-fn")
            .arg(&image));
        let dump = run(Command::new("dumpe2fs").arg("-h").arg(&image));
        assert!(
            dump.contains("Journal features:         journal_checksum_v3"),
            "{dump}"
        );
        assert!(dump.contains("Journal checksum type:    crc32c"), "{dump}");

        // The kernel's jbd2 verifies the checksum while loading the journal,
        // even for a read-only mount.
        let mount_point = dir.path().join("mnt");
        std::fs::create_dir(&mount_point).unwrap();
        run(Command::new("mount")
            .args(["-o", "loop,ro"])
            .arg(&image)
            .arg(&mount_point));
        run(Command::new("umount").arg(&mount_point));
    }
}
