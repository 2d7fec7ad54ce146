//! Reads the kernel release (`uname -r`) from a kernel image: the bzImage
//! setup header's version string, or the `Linux version` banner of an ELF
//! vmlinux.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};

/// Offset of the boot sector signature 0xAA55 (x86 boot protocol, `boot_flag`).
const BOOT_FLAG_OFFSET: usize = 0x1FE;
/// Offset of the setup header magic `HdrS` (`header`).
const HEADER_MAGIC_OFFSET: usize = 0x202;
/// Offset of the boot protocol version (`version`).
const PROTOCOL_OFFSET: usize = 0x206;
/// Offset of `kernel_version`: a pointer to the version string, minus 0x200.
const KERNEL_VERSION_OFFSET: usize = 0x20E;
/// Maximum length of the version string read. The kernel's own is well under 256 bytes.
const MAX_VERSION_STRING: usize = 512;
/// The banner `init/version.c` writes into every kernel.
const ELF_BANNER: &[u8] = b"Linux version ";

/// The format of a kernel image file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// A compressed x86 boot image (`arch/x86/boot/bzImage`, Debian's vmlinuz).
    BzImage,
    /// An uncompressed ELF kernel (`vmlinux`), as Firecracker boots it.
    Elf,
}

/// The format and kernel release recorded in a kernel image file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelImage {
    pub format: ImageFormat,
    /// The kernel release, as `uname -r` prints it and as `lib/modules/` names it.
    pub version: String,
}

/// Reads the format and kernel release of the image at `path`.
///
/// # Errors
/// [`Error::NotAKernelImage`] when the file is neither format, and
/// [`Error::NoVersion`] when it is one but carries no readable version.
pub fn read_kernel_image(path: &Path) -> Result<KernelImage> {
    let mut file = File::open(path).map_err(Error::io("open kernel image", path))?;
    let mut head = Vec::with_capacity(0x400);
    file.by_ref()
        .take(0x400)
        .read_to_end(&mut head)
        .map_err(Error::io("read kernel image", path))?;

    if head.starts_with(b"\x7fELF") {
        let version = read_elf_banner(path)?;
        return Ok(KernelImage {
            format: ImageFormat::Elf,
            version,
        });
    }
    if is_bzimage(&head) {
        let version = read_bzimage_version(path, &mut file, &head)?;
        return Ok(KernelImage {
            format: ImageFormat::BzImage,
            version,
        });
    }
    Err(Error::NotAKernelImage {
        path: path.to_path_buf(),
    })
}

/// Returns whether the first bytes of a file look like an x86 boot image.
pub fn is_bzimage(head: &[u8]) -> bool {
    head.len() > KERNEL_VERSION_OFFSET + 2
        && head[BOOT_FLAG_OFFSET..BOOT_FLAG_OFFSET + 2] == [0x55, 0xAA]
        && &head[HEADER_MAGIC_OFFSET..HEADER_MAGIC_OFFSET + 4] == b"HdrS"
}

fn read_bzimage_version(path: &Path, file: &mut File, head: &[u8]) -> Result<String> {
    let no_version = |reason: String| Error::NoVersion {
        path: path.to_path_buf(),
        reason,
    };
    let protocol = u16::from_le_bytes([head[PROTOCOL_OFFSET], head[PROTOCOL_OFFSET + 1]]);
    let pointer =
        u16::from_le_bytes([head[KERNEL_VERSION_OFFSET], head[KERNEL_VERSION_OFFSET + 1]]);

    // kernel_version exists from boot protocol 2.00 on, and 0 means "not set".
    if protocol < 0x0200 || pointer == 0 {
        return Err(no_version(format!(
            "boot protocol {}.{:02} header has no kernel_version pointer",
            protocol >> 8,
            protocol & 0xff
        )));
    }

    let offset = u64::from(pointer) + 0x200;
    let mut raw = Vec::with_capacity(MAX_VERSION_STRING);
    file.seek(SeekFrom::Start(offset))
        .map_err(Error::io("read kernel image", path))?;
    file.take(MAX_VERSION_STRING as u64)
        .read_to_end(&mut raw)
        .map_err(Error::io("read kernel image", path))?;
    let end = raw.iter().position(|&b| b == 0).ok_or_else(|| {
        no_version(format!(
            "the version string at offset {offset:#x} is not NUL-terminated"
        ))
    })?;
    parse_release(&raw[..end])
        .ok_or_else(|| no_version(format!("the version string at offset {offset:#x} is empty")))
}

fn read_elf_banner(path: &Path) -> Result<String> {
    let data = std::fs::read(path).map_err(Error::io("read kernel image", path))?;

    // Format strings such as "Linux version %s" also contain the prefix, so
    // take the first occurrence followed by a digit.
    let mut start = 0;
    while let Some(found) = find(&data[start..], ELF_BANNER) {
        let version_start = start + found + ELF_BANNER.len();
        let rest = &data[version_start..];
        if rest.first().is_some_and(u8::is_ascii_digit) {
            if let Some(version) = parse_release(rest) {
                return Ok(version);
            }
        }
        start = version_start;
    }
    Err(Error::NoVersion {
        path: path.to_path_buf(),
        reason: "the ELF image contains no `Linux version <release>` banner".to_string(),
    })
}

/// Takes the first whitespace-separated token, the release, from a version string
/// such as `6.1.0-57-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP ...`.
fn parse_release(raw: &[u8]) -> Option<String> {
    let token: Vec<u8> = raw
        .iter()
        .copied()
        .take_while(|b| b.is_ascii_graphic())
        .collect();
    if token.is_empty() {
        return None;
    }
    String::from_utf8(token).ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn bzimage_with(version: &[u8]) -> Vec<u8> {
        let mut image = vec![0u8; 0x1000];
        image[BOOT_FLAG_OFFSET..BOOT_FLAG_OFFSET + 2].copy_from_slice(&[0x55, 0xAA]);
        image[HEADER_MAGIC_OFFSET..HEADER_MAGIC_OFFSET + 4].copy_from_slice(b"HdrS");
        image[PROTOCOL_OFFSET..PROTOCOL_OFFSET + 2].copy_from_slice(&0x020Fu16.to_le_bytes());
        image[KERNEL_VERSION_OFFSET..KERNEL_VERSION_OFFSET + 2]
            .copy_from_slice(&0x0600u16.to_le_bytes());
        image[0x800..0x800 + version.len()].copy_from_slice(version);
        image
    }

    fn write_temp(data: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(data).unwrap();
        file
    }

    #[test]
    fn bzimage_version_from_header() {
        let file = write_temp(&bzimage_with(b"6.1.0-57-cloud-amd64 (debian) #1 SMP\0"));
        let image = read_kernel_image(file.path()).unwrap();
        assert_eq!(image.format, ImageFormat::BzImage);
        assert_eq!(image.version, "6.1.0-57-cloud-amd64");
    }

    #[test]
    fn bzimage_without_pointer_rejected() {
        let mut data = bzimage_with(b"6.1.0\0");
        data[KERNEL_VERSION_OFFSET..KERNEL_VERSION_OFFSET + 2].copy_from_slice(&[0, 0]);
        let file = write_temp(&data);
        let error = read_kernel_image(file.path()).unwrap_err();
        assert!(matches!(error, Error::NoVersion { .. }), "{error}");
    }

    #[test]
    fn elf_version_skips_format_string() {
        let mut data = b"\x7fELF\x02\x01\x01".to_vec();
        data.extend_from_slice(b"\0\0Linux version %s\0");
        data.extend_from_slice(b"Linux version 6.12.3-fc (builder@host) (gcc 13) #1 SMP\n\0");
        let file = write_temp(&data);
        let image = read_kernel_image(file.path()).unwrap();
        assert_eq!(image.format, ImageFormat::Elf);
        assert_eq!(image.version, "6.12.3-fc");
    }

    #[test]
    fn elf_without_banner_rejected() {
        let file = write_temp(b"\x7fELF\x02\x01\x01 nothing here");
        let error = read_kernel_image(file.path()).unwrap_err();
        assert!(matches!(error, Error::NoVersion { .. }), "{error}");
    }

    #[test]
    fn text_file_is_not_kernel() {
        let file = write_temp(b"#!/bin/sh\necho hello\n");
        let error = read_kernel_image(file.path()).unwrap_err();
        assert!(matches!(error, Error::NotAKernelImage { .. }), "{error}");
    }
}
