//! Little-endian stores into on-disk byte buffers.
//!
//! Offsets are compile-time constants of the structure being encoded, so an
//! out-of-range offset is a bug in this crate, never an input error.

pub(crate) fn put_u8(buf: &mut [u8], offset: usize, value: u8) {
    buf[offset] = value;
}

pub(crate) fn put_u16(buf: &mut [u8], offset: usize, value: u16) {
    buf[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_u32(buf: &mut [u8], offset: usize, value: u32) {
    buf[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_u64(buf: &mut [u8], offset: usize, value: u64) {
    buf[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
}

pub(crate) fn get_u32(buf: &[u8], offset: usize) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&buf[offset..offset + 4]);
    u32::from_le_bytes(bytes)
}

/// The low 32 bits of `value`.
pub(crate) fn lo32(value: u64) -> u32 {
    (value & 0xffff_ffff) as u32
}

/// The high 32 bits of `value`.
pub(crate) fn hi32(value: u64) -> u32 {
    (value >> 32) as u32
}

/// The low 16 bits of `value`.
pub(crate) fn lo16(value: u32) -> u16 {
    (value & 0xffff) as u16
}

/// The high 16 bits of `value`.
pub(crate) fn hi16(value: u32) -> u16 {
    (value >> 16) as u16
}
