//! Block and inode bitmaps: one block per group, one bit per block or inode.

use crate::checksum::crc32c_raw;

/// A bitmap block of `block_size` bytes.
pub(crate) struct Bitmap {
    bytes: Vec<u8>,
}

impl Bitmap {
    pub fn new(block_size: u32) -> Self {
        Self {
            bytes: vec![0u8; block_size as usize],
        }
    }

    /// Sets bits `first..first + count`.
    pub fn set_range(&mut self, first: u64, count: u64) {
        let end = (first + count).min(self.bytes.len() as u64 * 8);
        let mut bit = first;
        while bit < end {
            if bit % 8 == 0 && end - bit >= 8 {
                let whole = ((end - bit) / 8) as usize;
                let start = (bit / 8) as usize;
                self.bytes[start..start + whole].fill(0xff);
                bit += whole as u64 * 8;
            } else {
                self.bytes[(bit / 8) as usize] |= 1 << (bit % 8);
                bit += 1;
            }
        }
    }

    /// Clears bits `first..first + count`.
    pub fn clear_range(&mut self, first: u64, count: u64) {
        let end = (first + count).min(self.bytes.len() as u64 * 8);
        for bit in first..end {
            self.bytes[(bit / 8) as usize] &= !(1 << (bit % 8));
        }
    }

    /// Number of set bits among the first `count`.
    pub fn count_set(&self, count: u64) -> u64 {
        let whole = (count / 8) as usize;
        let mut set: u64 = self.bytes[..whole]
            .iter()
            .map(|byte| u64::from(byte.count_ones()))
            .sum();
        for bit in (whole as u64 * 8)..count {
            set += u64::from(self.bytes[(bit / 8) as usize] >> (bit % 8) & 1);
        }
        set
    }

    /// Computes the `metadata_csum` checksum over the first `bits` bits,
    /// the blocks or inodes per group, which is what the kernel covers.
    pub fn checksum(&self, fs_seed: u32, bits: u32) -> u32 {
        crc32c_raw(fs_seed, &self.bytes[..(bits / 8) as usize])
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_range_unaligned() {
        let mut bitmap = Bitmap::new(1024);
        bitmap.set_range(3, 20);
        assert_eq!(bitmap.count_set(8192), 20);
        assert_eq!(bitmap.as_bytes()[0], 0b1111_1000);
        assert_eq!(bitmap.as_bytes()[2], 0b0111_1111);
    }
}
