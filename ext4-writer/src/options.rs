//! Options of an image build: block size, sizing, inode count, label,
//! UUID, hash seed, journal and reproducibility.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::tree::Timestamp;

/// Filesystem block size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BlockSize {
    B1024,
    B2048,
    #[default]
    B4096,
}

impl BlockSize {
    /// Returns the block size in bytes.
    pub fn bytes(self) -> u32 {
        match self {
            BlockSize::B1024 => 1024,
            BlockSize::B2048 => 2048,
            BlockSize::B4096 => 4096,
        }
    }
}

/// Rule that sets the size of the filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sizing {
    /// Content plus metadata, plus `headroom_percent` of that, and at least
    /// `min_free_bytes` free. The last block group is partial, so the image
    /// is not rounded up to whole groups.
    Auto {
        headroom_percent: u32,
        min_free_bytes: u64,
    },
    /// Exactly `bytes`, rounded down to whole blocks.
    Fixed { bytes: u64 },
}

impl Default for Sizing {
    fn default() -> Self {
        Sizing::Auto {
            headroom_percent: 10,
            min_free_bytes: 16 << 20,
        }
    }
}

/// Settings that make two builds of the same tree byte-identical.
///
/// Every inode gets its (clamped) mtime as its atime, ctime and crtime too,
/// because a source on disk cannot be read without changing its atimes and
/// its ctimes and crtimes cannot be copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reproducible {
    /// Seed of the UUID and hash seed, unless the options set those.
    pub seed: u64,
    /// Superblock times (`s_mkfs_time`, `s_wtime`, `s_lastcheck`) and the
    /// times of a `lost+found` the writer creates, in seconds since the epoch.
    pub timestamp: i64,
    /// Whether mtimes later than `timestamp` are lowered to it, as
    /// reproducible-builds tools do when `SOURCE_DATE_EPOCH` is set.
    pub clamp_mtime: bool,
}

impl Reproducible {
    /// Uses `seed`, and the time from the `SOURCE_DATE_EPOCH` environment
    /// variable, or 0 when it is unset or invalid. [`Reproducible::try_from_env`]
    /// reports an invalid value instead.
    pub fn from_env(seed: u64) -> Self {
        Self::try_from_env(seed).unwrap_or(Self {
            seed,
            timestamp: 0,
            clamp_mtime: false,
        })
    }

    /// Uses `seed`, and the time from the `SOURCE_DATE_EPOCH` environment
    /// variable, or 0 when it is unset.
    ///
    /// # Errors
    /// The variable is set but is not a decimal count of seconds from 0 to
    /// 2^63-1, as the reproducible-builds specification requires. The
    /// message names the value.
    pub fn try_from_env(seed: u64) -> Result<Self, String> {
        match std::env::var_os("SOURCE_DATE_EPOCH") {
            None => Ok(Self {
                seed,
                timestamp: 0,
                clamp_mtime: false,
            }),
            Some(value) => match value.to_str() {
                Some(text) => Self::from_epoch_text(seed, text),
                None => Err(format!(
                    "invalid SOURCE_DATE_EPOCH {value:?}: expected a whole number of seconds since 1970"
                )),
            },
        }
    }

    fn from_epoch_text(seed: u64, epoch: &str) -> Result<Self, String> {
        let digits = epoch.trim();
        let invalid = || {
            format!(
                "invalid SOURCE_DATE_EPOCH {epoch:?}: expected a whole number of seconds since 1970, such as 1700000000"
            )
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let timestamp = digits.parse::<i64>().map_err(|_| invalid())?;
        Ok(Self {
            seed,
            timestamp,
            clamp_mtime: true,
        })
    }

    /// Returns `mtime`, lowered to `timestamp` when `clamp_mtime` is set and
    /// it is later.
    pub fn clamp(&self, mtime: Timestamp) -> Timestamp {
        let limit = Timestamp::new(self.timestamp, 0);
        let later = (mtime.seconds, mtime.nanoseconds) > (limit.seconds, limit.nanoseconds);
        if self.clamp_mtime && later {
            limit
        } else {
            mtime
        }
    }
}

/// Everything that shapes an image besides the tree.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Options {
    pub block_size: BlockSize,
    pub sizing: Sizing,
    /// Number of inodes; `None` gives the nodes of the tree plus the
    /// headroom of the sizing, rounded up to whole block groups.
    pub inode_count: Option<u32>,
    /// Volume label, up to 16 bytes.
    pub label: Option<String>,
    pub uuid: Option<[u8; 16]>,
    /// Seed of the directory index hash (`s_hash_seed`).
    pub hash_seed: Option<[u8; 16]>,
    /// Whether to add an internal journal (inode 8). Filesystems below
    /// 2048 blocks get none, as with `mke2fs`.
    pub journal: bool,
    pub reproducible: Option<Reproducible>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            block_size: BlockSize::default(),
            sizing: Sizing::default(),
            inode_count: None,
            label: None,
            uuid: None,
            hash_seed: None,
            journal: true,
            reproducible: None,
        }
    }
}

impl Options {
    /// Picks the UUID and hash seed: given ones first, then ones derived
    /// from the reproducible seed, then random ones.
    pub(crate) fn identity(&self) -> ([u8; 16], [u8; 16]) {
        let (uuid_fallback, hash_fallback) = match self.reproducible {
            Some(reproducible) => (
                derive_bytes(reproducible.seed, b"uuid"),
                derive_bytes(reproducible.seed, b"hash"),
            ),
            None => (random_bytes(b"uuid"), random_bytes(b"hash")),
        };
        let mut uuid = self.uuid.unwrap_or(uuid_fallback);
        if self.uuid.is_none() {
            // RFC 4122 version 4 (random) and variant bits, as mke2fs makes them.
            uuid[6] = (uuid[6] & 0x0f) | 0x40;
            uuid[8] = (uuid[8] & 0x3f) | 0x80;
        }
        (uuid, self.hash_seed.unwrap_or(hash_fallback))
    }

    /// Returns the superblock time: the reproducible timestamp or now.
    pub(crate) fn now(&self) -> i64 {
        match self.reproducible {
            Some(reproducible) => reproducible.timestamp,
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| {
                    i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
                }),
        }
    }
}

/// Expands `seed` and a purpose tag into 16 bytes with SplitMix64.
fn derive_bytes(seed: u64, purpose: &[u8]) -> [u8; 16] {
    let mut state = seed ^ crc32c::crc32c(purpose) as u64;
    let mut bytes = [0u8; 16];
    for chunk in bytes.chunks_mut(8) {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes());
    }
    bytes
}

/// 16 unpredictable bytes from the clock, the process id and the address
/// randomisation of `RandomState`.
fn random_bytes(purpose: &[u8]) -> [u8; 16] {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};

    let mut hasher = RandomState::new().build_hasher();
    hasher.write(purpose);
    hasher.write_u32(std::process::id());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    hasher.write_u128(nanos);
    derive_bytes(hasher.finish(), purpose)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_date_epoch_parsed() {
        let parse = |text| Reproducible::from_epoch_text(1, text).map(|r| r.timestamp);
        assert_eq!(parse("1700000000"), Ok(1_700_000_000));
        assert_eq!(parse(" 42\n"), Ok(42));
        assert_eq!(parse("0"), Ok(0));
    }

    #[test]
    fn clamp_lowers_later_mtimes_only() {
        let mut reproducible = Reproducible::from_epoch_text(1, "1000").unwrap();
        assert_eq!(
            reproducible.clamp(Timestamp::new(999, 5)),
            Timestamp::new(999, 5)
        );
        assert_eq!(
            reproducible.clamp(Timestamp::new(1000, 1)),
            Timestamp::new(1000, 0)
        );
        assert_eq!(
            reproducible.clamp(Timestamp::new(-5, 0)),
            Timestamp::new(-5, 0)
        );
        reproducible.clamp_mtime = false;
        assert_eq!(
            reproducible.clamp(Timestamp::new(2000, 0)),
            Timestamp::new(2000, 0)
        );
    }

    #[test]
    fn source_date_epoch_invalid_rejected() {
        for bad in ["abc", "-5", "1e9", "99999999999999999999", "", "+5", "1.5"] {
            let err = Reproducible::from_epoch_text(1, bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad:?}: {err}");
        }
    }

    #[test]
    fn identity_from_seed_is_stable() {
        let options = Options {
            reproducible: Some(Reproducible {
                seed: 7,
                timestamp: 0,
                clamp_mtime: false,
            }),
            ..Options::default()
        };
        assert_eq!(options.identity(), options.identity());
        let (uuid, _) = options.identity();
        assert_eq!(uuid[6] >> 4, 4, "version 4 UUID");
        assert_eq!(uuid[8] >> 6, 0b10, "RFC 4122 variant");
    }

    #[test]
    fn identity_given_values_win() {
        let options = Options {
            uuid: Some([1; 16]),
            hash_seed: Some([2; 16]),
            reproducible: Some(Reproducible {
                seed: 7,
                timestamp: 0,
                clamp_mtime: false,
            }),
            ..Options::default()
        };
        assert_eq!(options.identity(), ([1; 16], [2; 16]));
    }
}
