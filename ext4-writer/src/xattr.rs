//! Extended attributes: the in-inode xattr area and the shared xattr block.
//!
//! Both places hold the same entry format (`struct ext4_xattr_entry` in the
//! kernel's fs/ext4/xattr.h): a 16-byte entry header, the name without its
//! namespace prefix, padding to 4 bytes, and a value stored elsewhere in
//! the same area. Entries grow from the front, values from the back, and 4
//! zero bytes end the entry list. An xattr block starts with a 32-byte
//! header whose hash lets the kernel find identical blocks to share.

use std::borrow::Cow;

use crate::acl;
use crate::error::Error;
use crate::tree::Xattr;

/// `h_magic` of an xattr block and of the in-inode xattr area.
const MAGIC: u32 = 0xEA02_0000;
/// Size of `struct ext4_xattr_header` at the start of an xattr block.
const BLOCK_HEADER_LEN: usize = 32;
/// Size of the in-inode `struct ext4_xattr_ibody_header` (the magic alone).
const IBODY_HEADER_LEN: usize = 4;
/// Size of `struct ext4_xattr_entry` without the name.
const ENTRY_HEADER_LEN: usize = 16;
/// The zero word after the last entry.
const TERMINATOR_LEN: usize = 4;

const H_REFCOUNT: usize = 4;
const H_BLOCKS: usize = 8;
const H_HASH: usize = 12;
const H_CHECKSUM: usize = 16;

const NAME_HASH_SHIFT: u32 = 5;
const VALUE_HASH_SHIFT: u32 = 16;
const BLOCK_HASH_SHIFT: u32 = 16;

/// Name prefixes the kernel's ext4 maps to an `e_name_index`. A full name
/// (the ACLs) matches exactly and leaves an empty suffix.
///
/// `system.data` (index 7, inline data), `system.richacl` (8) and `gnu.`
/// (10, Hurd) are left out: the writer makes no inline data, and a Linux
/// kernel does not list the other two on a filesystem made for Linux.
const NAME_INDEXES: [(&[u8], u8); 5] = [
    (b"user.", 1),
    (acl::ACCESS_NAME, 2),
    (acl::DEFAULT_NAME, 3),
    (b"trusted.", 4),
    (b"security.", 6),
];

/// The encoded xattrs of one inode, split between the inode and a block.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct XattrPlacement {
    /// Bytes for the in-inode xattr area (starts at inode offset 128 +
    /// i_extra_isize): the 4-byte magic 0xEA020000 then entries and values.
    /// It is exactly `in_inode_room` bytes long, with the values at its end,
    /// or empty when nothing goes in the inode.
    pub in_inode: Vec<u8>,
    /// A full xattr block (block_size bytes) with h_refcount and h_checksum
    /// still zero, or None. Identical sets give identical bytes, so the
    /// caller shares blocks by these bytes.
    pub block: Option<Vec<u8>>,
}

/// One xattr as ext4 stores it: a name index, the name without its prefix
/// and the on-disk value (ACLs already converted).
struct Entry<'a> {
    full_name: &'a [u8],
    index: u8,
    suffix: &'a [u8],
    value: Cow<'a, [u8]>,
}

impl Entry<'_> {
    /// Bytes the entry header and name take in the entry list.
    fn entry_len(&self) -> usize {
        padded(ENTRY_HEADER_LEN + self.suffix.len())
    }

    /// Bytes the entry takes in its area: entry, name and padded value.
    fn space(&self) -> usize {
        self.entry_len() + padded(self.value.len())
    }
}

/// Splits the xattrs of one inode between the in-inode area and an xattr
/// block, and encodes both.
///
/// Entries are sorted by name index, name length and name, the order the
/// kernel's lookup in a block relies on and the order e2fsprogs writes.
/// Each entry goes in the inode when it still fits there, and in the block
/// otherwise. `in_inode_room` is the room after the inode's extra fields
/// (inode_size - 128 - i_extra_isize).
///
/// # Errors
/// [`Error::InvalidXattrName`] for a name outside the `user.`, `trusted.`,
/// `security.` namespaces and the two POSIX ACL names, with an empty
/// suffix, or with a suffix longer than 255 bytes. [`Error::DuplicateXattr`]
/// for a name given twice, [`Error::InvalidAcl`] for a malformed ACL, and
/// [`Error::XattrsTooLarge`] when the entries do not fit in the inode plus
/// one block.
pub(crate) fn place(
    xattrs: &[Xattr],
    in_inode_room: usize,
    block_size: usize,
) -> Result<XattrPlacement, Error> {
    let mut entries = xattrs
        .iter()
        .map(encode_entry)
        .collect::<Result<Vec<_>, _>>()?;
    entries.sort_by(|a, b| {
        (a.index, a.suffix.len(), a.suffix).cmp(&(b.index, b.suffix.len(), b.suffix))
    });
    if let Some(pair) = entries
        .windows(2)
        .find(|pair| pair[0].index == pair[1].index && pair[0].suffix == pair[1].suffix)
    {
        return Err(Error::DuplicateXattr {
            name: pair[0].full_name.to_vec(),
        });
    }

    let inode_capacity = in_inode_room.saturating_sub(IBODY_HEADER_LEN + TERMINATOR_LEN);
    let block_capacity = block_size.saturating_sub(BLOCK_HEADER_LEN + TERMINATOR_LEN);
    let mut inode_free = inode_capacity;
    let mut in_inode = Vec::new();
    let mut in_block = Vec::new();
    for entry in &entries {
        if entry.space() <= inode_free {
            inode_free -= entry.space();
            in_inode.push(entry);
        } else {
            in_block.push(entry);
        }
    }

    let block_used: usize = in_block.iter().map(|entry| entry.space()).sum();
    if block_used > block_capacity {
        // NOTE: the kernel's ea_inode feature would move large values to
        // their own inodes; the writer does not enable it.
        let largest = entries
            .iter()
            .max_by_key(|entry| entry.value.len())
            .expect("a block that overflows holds at least one entry");
        return Err(Error::XattrsTooLarge {
            required_bytes: block_used,
            available_bytes: block_capacity,
            largest_name: largest.full_name.to_vec(),
            largest_value_bytes: largest.value.len(),
        });
    }

    Ok(XattrPlacement {
        in_inode: encode_in_inode(&in_inode, in_inode_room),
        block: (!in_block.is_empty()).then(|| encode_block(&in_block, block_size)),
    })
}

/// Sets h_refcount and the metadata_csum checksum of an xattr block stored
/// at block_number. checksum_seed is crc32c(!0, fs uuid) (the superblock's
/// s_checksum_seed value).
///
/// The checksum covers the little-endian block number, then the block with
/// h_checksum zero, as `ext4_xattr_block_csum` in the kernel computes it.
pub(crate) fn finish_block(block: &mut [u8], block_number: u64, refcount: u32, checksum_seed: u32) {
    block[H_REFCOUNT..H_REFCOUNT + 4].copy_from_slice(&refcount.to_le_bytes());
    block[H_CHECKSUM..H_CHECKSUM + 4].fill(0);

    // crc32c_append wraps the CRC in bit inversions; the kernel's ext4
    // checksums do not, so invert on the way in and out.
    let crc = crc32c::crc32c_append(!checksum_seed, &block_number.to_le_bytes());
    let crc = !crc32c::crc32c_append(crc, block);
    block[H_CHECKSUM..H_CHECKSUM + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Maps a full xattr name to its index and suffix, and converts ACL values.
fn encode_entry(xattr: &Xattr) -> Result<Entry<'_>, Error> {
    let name = xattr.name.as_slice();
    let invalid = |reason: String| Error::InvalidXattrName {
        name: name.to_vec(),
        reason,
    };

    let (prefix, index) = NAME_INDEXES
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .ok_or_else(|| {
            invalid("ext4 stores only xattrs in the user., trusted. and security. namespaces and the POSIX ACLs system.posix_acl_access and system.posix_acl_default".to_string())
        })?;
    let suffix = &name[prefix.len()..];
    let is_acl = acl::is_acl_name(prefix);
    if is_acl && !suffix.is_empty() {
        return Err(invalid(
            "no xattr name continues after a POSIX ACL name".to_string(),
        ));
    }
    if !is_acl && suffix.is_empty() {
        return Err(invalid(
            "the name is only a namespace prefix; add a name after the dot".to_string(),
        ));
    }
    if suffix.len() > usize::from(u8::MAX) {
        return Err(invalid(format!(
            "the name after the namespace prefix is {} bytes; ext4 allows at most 255",
            suffix.len()
        )));
    }

    let value = if is_acl {
        Cow::Owned(acl::vfs_to_disk(name, &xattr.value)?)
    } else {
        Cow::Borrowed(xattr.value.as_slice())
    };
    Ok(Entry {
        full_name: name,
        index: *index,
        suffix,
        value,
    })
}

/// Encodes the in-inode area: magic, entries, terminator, values at the end.
fn encode_in_inode(entries: &[&Entry<'_>], room: usize) -> Vec<u8> {
    if entries.is_empty() {
        return Vec::new();
    }
    let mut area = vec![0; room];
    area[..4].copy_from_slice(&MAGIC.to_le_bytes());
    // In the inode, e_value_offs counts from the first entry.
    write_entries(&mut area, IBODY_HEADER_LEN, IBODY_HEADER_LEN, entries);
    area
}

/// Encodes a whole xattr block with h_refcount and h_checksum zero.
fn encode_block(entries: &[&Entry<'_>], block_size: usize) -> Vec<u8> {
    let mut block = vec![0; block_size];
    block[..4].copy_from_slice(&MAGIC.to_le_bytes());
    block[H_BLOCKS..H_BLOCKS + 4].copy_from_slice(&1u32.to_le_bytes());
    // In a block, e_value_offs counts from the start of the block.
    let hashes = write_entries(&mut block, BLOCK_HEADER_LEN, 0, entries);
    block[H_HASH..H_HASH + 4].copy_from_slice(&block_hash(&hashes).to_le_bytes());
    block
}

/// Writes `entries` from `entries_start` on and their values from the end of
/// `area` backwards; returns each entry's `e_hash`.
///
/// `place` has checked that everything fits, and `area` is zeroed, so the
/// terminator is already in place.
fn write_entries(
    area: &mut [u8],
    entries_start: usize,
    offset_base: usize,
    entries: &[&Entry<'_>],
) -> Vec<u32> {
    let mut position = entries_start;
    let mut values_start = area.len();
    let mut hashes = Vec::with_capacity(entries.len());
    for entry in entries {
        values_start -= padded(entry.value.len());
        area[values_start..values_start + entry.value.len()].copy_from_slice(&entry.value);
        let hash = entry_hash(
            entry.suffix,
            &area[values_start..values_start + padded(entry.value.len())],
        );
        hashes.push(hash);

        // Offsets fit in e_value_offs: areas are at most one 64 KiB block.
        let value_offset = u16::try_from(values_start - offset_base).unwrap_or(u16::MAX);
        let value_size = u32::try_from(entry.value.len()).unwrap_or(u32::MAX);
        let header = &mut area[position..position + ENTRY_HEADER_LEN];
        // The suffix length was checked to be at most 255.
        header[0] = u8::try_from(entry.suffix.len()).unwrap_or(u8::MAX);
        header[1] = entry.index;
        header[2..4].copy_from_slice(&value_offset.to_le_bytes());
        header[4..8].copy_from_slice(&0u32.to_le_bytes()); // e_value_inum: no ea_inode
        header[8..12].copy_from_slice(&value_size.to_le_bytes());
        header[12..16].copy_from_slice(&hash.to_le_bytes());
        let name_start = position + ENTRY_HEADER_LEN;
        area[name_start..name_start + entry.suffix.len()].copy_from_slice(entry.suffix);
        position += entry.entry_len();
    }
    hashes
}

/// `e_hash` of an entry, as `ext4_xattr_hash_entry` computes it: the name
/// bytes (unsigned), then the zero-padded value as little-endian words.
fn entry_hash(suffix: &[u8], padded_value: &[u8]) -> u32 {
    let mut hash: u32 = 0;
    for &byte in suffix {
        hash = hash.rotate_left(NAME_HASH_SHIFT) ^ u32::from(byte);
    }
    for word in padded_value.chunks_exact(4) {
        let word = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        hash = hash.rotate_left(VALUE_HASH_SHIFT) ^ word;
    }
    hash
}

/// `h_hash` of a block, as `ext4_xattr_rehash` computes it: the entry
/// hashes folded together, or 0 when any entry hash is 0.
fn block_hash(entry_hashes: &[u32]) -> u32 {
    if entry_hashes.contains(&0) {
        return 0;
    }
    entry_hashes.iter().fold(0, |hash, &entry_hash| {
        hash.rotate_left(BLOCK_HASH_SHIFT) ^ entry_hash
    })
}

/// Rounds `len` up to the 4-byte alignment of entries and values.
fn padded(len: usize) -> usize {
    len.div_ceil(4) * 4
}

#[cfg(test)]
mod tests;
