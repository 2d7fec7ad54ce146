//! Hashed directories (`dir_index`): a root block with `.`, `..` and a
//! `dx_root` index, an optional level of index nodes, and leaf blocks of
//! entries sorted by the half-MD4 hash of their names.

use crate::checksum::crc32c_raw;
use crate::dir::{self, Entry, TAIL_SIZE};
use crate::le::{put_u16, put_u32, put_u8};
use crate::superblock::DX_HASH_HALF_MD4;

/// Size of `struct dx_tail`, the checksum after the index entries.
const DX_TAIL_SIZE: usize = 8;
/// Offset of the root's count and limit: after `.` (12 bytes), the `..`
/// header and name (12 bytes) and `dx_root_info` (8 bytes).
const ROOT_COUNT_OFFSET: usize = 32;
/// Offset of a node's count and limit: after a fake empty entry (8 bytes).
const NODE_COUNT_OFFSET: usize = 8;
/// Leaf blocks are filled to 80%, as `e2fsck -D` fills them by default,
/// so that new entries do not split a block at once.
const LEAF_SLACK_PERCENT: usize = 20;

/// Half-MD4 directory hash of `name` as ext4 computes it with signed chars:
/// returns (major hash, minor hash).
pub(crate) fn dx_hash(name: &[u8], seed: &[u32; 4]) -> (u32, u32) {
    let mut buf = if seed.iter().any(|word| *word != 0) {
        *seed
    } else {
        [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476]
    };
    let mut rest = name;
    loop {
        let input = str2hashbuf_signed(rest);
        half_md4_transform(&mut buf, &input);
        if rest.len() <= 32 {
            break;
        }
        rest = &rest[32..];
    }
    let mut hash = buf[1] & !1;
    // The kernel keeps 0x7fffffff << 1 for the end-of-directory cookie.
    if hash == 0xffff_fffe {
        hash = 0xffff_fffc;
    }
    (hash, buf[2])
}

/// Packs up to 32 bytes of `msg`, the part of the name not hashed yet,
/// into 8 words: each byte sign-extended and shifted in from the right,
/// padded with the remaining length repeated in every byte.
#[allow(
    clippy::cast_possible_truncation,
    reason = "names are at most 255 bytes"
)]
fn str2hashbuf_signed(msg: &[u8]) -> [u32; 8] {
    // Names are at most 255 bytes.
    let len = msg.len() as u32;
    let mut pad = len | (len << 8);
    pad |= pad << 16;
    let mut out = [pad; 8];
    let mut val = pad;
    let mut word = 0;
    for (index, byte) in msg.iter().take(32).enumerate() {
        let signed = i32::from(*byte as i8) as u32;
        val = signed.wrapping_add(val << 8);
        if index % 4 == 3 {
            out[word] = val;
            val = pad;
            word += 1;
        }
    }
    if word < 8 {
        out[word] = val;
    }
    out
}

fn half_md4_transform(buf: &mut [u32; 4], input: &[u32; 8]) {
    const K2: u32 = 0o13240474631;
    const K3: u32 = 0o15666365641;
    let f = |x: u32, y: u32, z: u32| z ^ (x & (y ^ z));
    let g = |x: u32, y: u32, z: u32| (x & y).wrapping_add((x ^ y) & z);
    let h = |x: u32, y: u32, z: u32| x ^ y ^ z;
    let step = |a: u32, mix: u32, x: u32, shift: u32| {
        a.wrapping_add(mix).wrapping_add(x).rotate_left(shift)
    };

    let [mut a, mut b, mut c, mut d] = *buf;

    a = step(a, f(b, c, d), input[0], 3);
    d = step(d, f(a, b, c), input[1], 7);
    c = step(c, f(d, a, b), input[2], 11);
    b = step(b, f(c, d, a), input[3], 19);
    a = step(a, f(b, c, d), input[4], 3);
    d = step(d, f(a, b, c), input[5], 7);
    c = step(c, f(d, a, b), input[6], 11);
    b = step(b, f(c, d, a), input[7], 19);

    a = step(a, g(b, c, d), input[1].wrapping_add(K2), 3);
    d = step(d, g(a, b, c), input[3].wrapping_add(K2), 5);
    c = step(c, g(d, a, b), input[5].wrapping_add(K2), 9);
    b = step(b, g(c, d, a), input[7].wrapping_add(K2), 13);
    a = step(a, g(b, c, d), input[0].wrapping_add(K2), 3);
    d = step(d, g(a, b, c), input[2].wrapping_add(K2), 5);
    c = step(c, g(d, a, b), input[4].wrapping_add(K2), 9);
    b = step(b, g(c, d, a), input[6].wrapping_add(K2), 13);

    a = step(a, h(b, c, d), input[3].wrapping_add(K3), 3);
    d = step(d, h(a, b, c), input[7].wrapping_add(K3), 9);
    c = step(c, h(d, a, b), input[2].wrapping_add(K3), 11);
    b = step(b, h(c, d, a), input[6].wrapping_add(K3), 15);
    a = step(a, h(b, c, d), input[1].wrapping_add(K3), 3);
    d = step(d, h(a, b, c), input[5].wrapping_add(K3), 9);
    c = step(c, h(d, a, b), input[0].wrapping_add(K3), 11);
    b = step(b, h(c, d, a), input[4].wrapping_add(K3), 15);

    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

/// Reads the 16-byte `s_hash_seed` as the four words the hash starts from.
pub(crate) fn seed_words(hash_seed: &[u8; 16]) -> [u32; 4] {
    let mut words = [0u32; 4];
    for (word, bytes) in words.iter_mut().zip(hash_seed.chunks(4)) {
        *word = crate::le::get_u32(bytes, 0);
    }
    words
}

fn root_limit(block_size: usize) -> usize {
    (block_size - ROOT_COUNT_OFFSET - DX_TAIL_SIZE) / 8
}

fn node_limit(block_size: usize) -> usize {
    (block_size - NODE_COUNT_OFFSET - DX_TAIL_SIZE) / 8
}

/// Largest number of leaf blocks a two-level index reaches.
pub(crate) fn max_leaf_blocks(block_size: usize) -> u64 {
    (root_limit(block_size) * node_limit(block_size)) as u64
}

/// Entries sorted by hash, and the leaf they start: the planning shared by
/// counting and encoding.
struct Leaves<'a> {
    sorted: Vec<(u32, u32, Entry<'a>)>,
    starts: Vec<usize>,
}

fn plan_leaves<'a>(entries: &[Entry<'a>], block_size: usize, seed: &[u32; 4]) -> Leaves<'a> {
    let mut sorted: Vec<(u32, u32, Entry)> = entries
        .iter()
        .map(|entry| {
            let (hash, minor) = dx_hash(entry.name, seed);
            (hash, minor, *entry)
        })
        .collect();
    sorted.sort_by(|x, y| (x.0, x.1, x.2.name).cmp(&(y.0, y.1, y.2.name)));
    let usable = block_size - TAIL_SIZE;
    let slack = usable * LEAF_SLACK_PERCENT / 100;
    let starts = dir::block_starts(
        sorted.iter().map(|e| dir::rec_len(e.2.name.len())),
        usable,
        slack,
    );
    Leaves { sorted, starts }
}

/// Index levels below the root (`indirect_levels`) and the count of index
/// node blocks for `leaf_count` leaves, or `None` above two levels.
fn index_shape(leaf_count: usize, block_size: usize) -> Option<(u8, usize)> {
    if leaf_count <= root_limit(block_size) {
        return Some((0, 0));
    }
    let nodes = leaf_count.div_ceil(node_limit(block_size));
    (nodes <= root_limit(block_size)).then_some((1, nodes))
}

/// Blocks of the hashed directory holding `entries`: (total, leaves), or
/// `Err(leaves)` when two index levels cannot reach them all.
pub(crate) fn block_count(
    entries: &[Entry],
    block_size: usize,
    seed: &[u32; 4],
) -> Result<u64, u64> {
    let leaves = plan_leaves(entries, block_size, seed).starts.len();
    match index_shape(leaves, block_size) {
        Some((_, nodes)) => Ok((1 + nodes + leaves) as u64),
        None => Err(leaves as u64),
    }
}

/// Encodes the hashed directory: the root block, index nodes, then leaves.
/// Returns `Err(leaves)` when two index levels cannot reach them all.
#[allow(
    clippy::cast_possible_truncation,
    reason = "block numbers of a directory are below 2^32 and the block size fits 16 bits"
)]
pub(crate) fn encode(
    dot_dot: [Entry; 2],
    entries: &[Entry],
    block_size: usize,
    seed: &[u32; 4],
    inode_seed: u32,
) -> Result<Vec<Vec<u8>>, u64> {
    let leaves = plan_leaves(entries, block_size, seed);
    let leaf_count = leaves.starts.len();
    let (levels, node_count) = index_shape(leaf_count, block_size).ok_or(leaf_count as u64)?;
    let first_leaf = 1 + node_count;

    // One index entry per leaf: its lowest hash, with bit 0 set when the
    // leaf continues a run of equal hashes from the previous leaf.
    let mut leaf_index = Vec::with_capacity(leaf_count);
    let mut leaf_blocks = Vec::with_capacity(leaf_count);
    for (number, start) in leaves.starts.iter().enumerate() {
        let end = leaves
            .starts
            .get(number + 1)
            .copied()
            .unwrap_or(leaves.sorted.len());
        let hash = leaves.sorted[*start].0;
        let continues = *start > 0 && leaves.sorted[*start - 1].0 == hash;
        let logical = (first_leaf + number) as u32;
        leaf_index.push((hash | u32::from(continues), logical));
        let block_entries: Vec<Entry> = leaves.sorted[*start..end].iter().map(|e| e.2).collect();
        leaf_blocks.push(dir::encode_leaf(&block_entries, block_size, inode_seed));
    }

    let mut blocks = Vec::with_capacity(first_leaf + leaf_count);
    if levels == 0 {
        blocks.push(root_block(dot_dot, &leaf_index, 0, block_size, inode_seed));
    } else {
        let per_node = node_limit(block_size);
        let mut node_index = Vec::with_capacity(node_count);
        let mut nodes = Vec::with_capacity(node_count);
        for (number, chunk) in leaf_index.chunks(per_node).enumerate() {
            node_index.push((chunk[0].0, (1 + number) as u32));
            nodes.push(index_block(
                chunk,
                NODE_COUNT_OFFSET,
                per_node,
                block_size,
                inode_seed,
                |block| {
                    // A fake entry spanning the block hides the index from
                    // readers that do not know htree.
                    put_u16(block, 4, block_size as u16); // rec_len
                },
            ));
        }
        blocks.push(root_block(
            dot_dot,
            &node_index,
            levels,
            block_size,
            inode_seed,
        ));
        blocks.extend(nodes);
    }
    blocks.extend(leaf_blocks);
    Ok(blocks)
}

fn root_block(
    dot_dot: [Entry; 2],
    index: &[(u32, u32)],
    levels: u8,
    block_size: usize,
    inode_seed: u32,
) -> Vec<u8> {
    index_block(
        index,
        ROOT_COUNT_OFFSET,
        root_limit(block_size),
        block_size,
        inode_seed,
        |block| {
            dir::write_entry(block, 0, &dot_dot[0], 12);
            dir::write_entry(block, 12, &dot_dot[1], block_size - 12);
            put_u32(block, 24, 0); // dx_root_info.reserved_zero
            put_u8(block, 28, DX_HASH_HALF_MD4); // hash_version
            put_u8(block, 29, 8); // info_length
            put_u8(block, 30, levels); // indirect_levels
        },
    )
}

/// An index block: `header` fills what precedes the count and limit at
/// `count_offset`, then the entries and the `dx_tail` checksum follow.
#[allow(
    clippy::cast_possible_truncation,
    reason = "index counts and limits are at most 510 for 4 KiB blocks"
)]
fn index_block(
    index: &[(u32, u32)],
    count_offset: usize,
    limit: usize,
    block_size: usize,
    inode_seed: u32,
    header: impl FnOnce(&mut [u8]),
) -> Vec<u8> {
    let mut block = vec![0u8; block_size];
    header(&mut block);
    // Both are at most 510, the limit of a 4 KiB block.
    put_u16(&mut block, count_offset, limit as u16); // limit
    put_u16(&mut block, count_offset + 2, index.len() as u16); // count
    for (number, (hash, logical)) in index.iter().enumerate() {
        let offset = count_offset + number * 8;
        // The first entry has no hash because the count and limit take its place.
        if number > 0 {
            put_u32(&mut block, offset, *hash); // hash
        }
        put_u32(&mut block, offset + 4, *logical); // block
    }

    // dx_tail: CRC32C of the count, limit and used entries, then of
    // dt_reserved and a zero checksum field.
    let tail = count_offset + limit * 8;
    let covered = count_offset + index.len() * 8;
    let mut csum = crc32c_raw(inode_seed, &block[..covered]);
    csum = crc32c_raw(csum, &block[tail..tail + 4]);
    csum = crc32c_raw(csum, &[0; 4]);
    put_u32(&mut block, tail + 4, csum); // dt_checksum
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_for_4k() {
        assert_eq!(root_limit(4096), 507);
        assert_eq!(node_limit(4096), 510);
    }

    #[test]
    fn hash_clears_low_bit() {
        let seed = [1, 2, 3, 4];
        for name in [&b"a"[..], b"lost+found", &[0xff; 255]] {
            assert_eq!(dx_hash(name, &seed).0 & 1, 0);
        }
    }
}
