//! Reads Debian and Ubuntu kernel packages without dpkg.
//!
//! A `.deb` is an `ar` archive of `debian-binary`, `control.tar.*` and
//! `data.tar.*` (see deb(5)). Only `data.tar` matters here: its
//! `boot/vmlinuz-<version>` becomes the bundle's kernel and its
//! `lib/modules/<version>` (or `usr/lib/modules/<version>`) tree the
//! bundle's modules. Everything else in the package is skipped.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::bundle::{KERNEL, MODULES_DIR};
use super::error::{Error, Result};
use super::extract::{self, Mapping, Staging};

/// The magic at the start of every ar archive.
pub const AR_MAGIC: &[u8] = b"!<arch>\n";

/// The parts of a package copied into the staging directory.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PackageContent {
    /// Whether the package held a `boot/vmlinuz-*`, now at `vmlinuz`.
    pub has_kernel: bool,
    /// Whether the package held modules, now under `lib/modules/`.
    pub has_modules: bool,
}

/// Extracts the kernel image and modules tree of the package at `path` into
/// `staging_dir`.
///
/// # Errors
/// [`Error::InvalidPackage`] when the file is not a Debian binary package or
/// contains two kernel images, and the extraction errors of
/// [`extract::extract_tar`].
pub fn stage_package(path: &Path, staging_dir: &Path) -> Result<PackageContent> {
    let invalid = |reason: String| Error::InvalidPackage {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(Error::io("open", path))?;
    let mut archive = ar::Archive::new(BufReader::new(file));

    let mut saw_debian_binary = false;
    while let Some(member) = archive.next_entry() {
        let mut member = member.map_err(|source| Error::Archive {
            archive: path.to_path_buf(),
            source,
        })?;
        let name = String::from_utf8_lossy(member.header().identifier()).into_owned();

        if name == "debian-binary" {
            let mut version = String::new();
            member
                .read_to_string(&mut version)
                .map_err(Error::io("read", path))?;
            if !version.starts_with("2.") {
                return Err(invalid(format!(
                    "package format `{}` is not supported (expected 2.x)",
                    version.trim()
                )));
            }
            saw_debian_binary = true;
            continue;
        }
        if !name.starts_with("data.tar") {
            continue;
        }
        if !saw_debian_binary {
            return Err(invalid(
                "`data.tar` comes before `debian-binary`".to_string(),
            ));
        }

        let compressed = decompressor(&name, member).map_err(&invalid)?;
        return extract_data(path, staging_dir, compressed);
    }

    Err(invalid(if saw_debian_binary {
        "it has no data.tar member".to_string()
    } else {
        "it is not a Debian binary package (no debian-binary member)".to_string()
    }))
}

fn decompressor<'a, R: Read + 'a>(
    name: &str,
    member: R,
) -> std::result::Result<Box<dyn Read + 'a>, String> {
    Ok(match name {
        "data.tar" => Box::new(member),
        "data.tar.gz" => Box::new(flate2::read::MultiGzDecoder::new(member)),
        "data.tar.xz" => Box::new(xz2::read::XzDecoder::new_multi_decoder(member)),
        "data.tar.zst" => Box::new(
            zstd::stream::read::Decoder::new(member)
                .map_err(|error| format!("failed to start zstd decoding: {error}"))?,
        ),
        other => {
            return Err(format!(
                "member `{other}` uses a compression banger does not read (expected none, .gz, .xz or .zst)"
            ));
        }
    })
}

fn extract_data(
    path: &Path,
    staging_dir: &Path,
    data: Box<dyn Read + '_>,
) -> Result<PackageContent> {
    let staging = Staging::new(staging_dir, path);
    let mut content = PackageContent::default();
    let mut kernel_source: Option<PathBuf> = None;

    extract::extract_tar(data, &staging, |rel| {
        if let Some(mapped) = map_modules_path(rel) {
            content.has_modules |= mapped.components().count() > 2;
            return Ok(Mapping::To(mapped));
        }
        let is_kernel = rel.parent() == Some(Path::new("boot"))
            && rel.file_name().is_some_and(|n| {
                n.as_bytes().starts_with(b"vmlinuz-") || n.as_bytes().starts_with(b"vmlinux-")
            });
        if !is_kernel {
            return Ok(Mapping::Skip);
        }
        if let Some(first) = &kernel_source {
            if first != rel {
                return Err(Error::InvalidPackage {
                    path: path.to_path_buf(),
                    reason: format!(
                        "it holds two kernel images, `{}` and `{}`",
                        first.display(),
                        rel.display()
                    ),
                });
            }
        }
        kernel_source = Some(rel.to_path_buf());
        content.has_kernel = true;
        Ok(Mapping::To(PathBuf::from(KERNEL)))
    })?;
    Ok(content)
}

/// Maps `lib/modules/...` and `usr/lib/modules/...` (merged /usr) to the
/// bundle's `lib/modules/...`; returns `None` for any other path.
pub fn map_modules_path(rel: &Path) -> Option<PathBuf> {
    let rel = rel.strip_prefix("usr").unwrap_or(rel);
    let rest = rel.strip_prefix(MODULES_DIR).ok()?;
    Some(Path::new(MODULES_DIR).join(rest))
}

/// Returns whether the file starts like an ar archive (a `.deb`).
pub fn is_package(head: &[u8]) -> bool {
    head.starts_with(AR_MAGIC)
}

/// Returns the file name of `path` for the manifest's `source` field.
pub fn source_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_else(|| OsStr::new(""))
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_paths_map_to_lib_modules() {
        assert_eq!(
            map_modules_path(Path::new("usr/lib/modules/6.8.0/kernel/a.ko")),
            Some(PathBuf::from("lib/modules/6.8.0/kernel/a.ko"))
        );
        assert_eq!(
            map_modules_path(Path::new("lib/modules/6.1.0")),
            Some(PathBuf::from("lib/modules/6.1.0"))
        );
        assert_eq!(map_modules_path(Path::new("usr/share/doc/x")), None);
        assert_eq!(map_modules_path(Path::new("lib/firmware/x")), None);
    }

    #[test]
    fn text_file_is_not_package() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, b"!<arch>\n").unwrap();
        let staging = tempfile::tempdir().unwrap();
        let error = stage_package(file.path(), staging.path()).unwrap_err();
        assert!(matches!(error, Error::InvalidPackage { .. }), "{error}");
    }
}
