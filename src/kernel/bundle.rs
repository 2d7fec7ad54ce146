//! The kernel bundle: its directory layout, its manifest and its tarball form.
//!
//! A bundle directory (a catalog entry, or the content of an exported tarball):
//!
//! ```text
//! bundle.json                 manifest, first entry of the tarball
//! vmlinuz                     the kernel image (bzImage or ELF vmlinux)
//! initrd.img                  optional: an initrd the user supplied
//! lib/modules/<version>/...   optional: the kernel's modules tree
//! ```

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::{Error, Result};
use super::extract::{self, Mapping, Staging};
use super::version::ImageFormat;

/// File name of the manifest inside a bundle.
pub const MANIFEST: &str = "bundle.json";
/// File name of the kernel image inside a bundle.
pub const KERNEL: &str = "vmlinuz";
/// File name of the user-supplied initrd inside a bundle.
pub const INITRD: &str = "initrd.img";
/// Directory of the modules tree inside a bundle, as in the guest.
pub const MODULES_DIR: &str = "lib/modules";
/// The manifest format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The manifest `bundle.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format, [`FORMAT_VERSION`].
    pub format: u32,
    /// The kernel release (`uname -r`), read from the image.
    pub version: String,
    pub image_format: ImageFormat,
    /// Whether the bundle contains `initrd.img`.
    pub has_initrd: bool,
    /// Whether the bundle contains `lib/modules/<version>`.
    pub has_modules: bool,
    /// File name of what the bundle was imported from.
    pub source: String,
    /// sha256 of the bundle's content listing (see [`content_digest`]), which
    /// detects a tarball that lost entries.
    pub content_sha256: String,
}

impl Manifest {
    /// Reads and validates `bundle.json` in the bundle directory `dir`.
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST);
        let name = dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let invalid = |reason: String| Error::InvalidManifest {
            path: path.clone(),
            name: name.clone(),
            reason,
        };
        let meta = fs::symlink_metadata(&path).map_err(Error::io("read", &path))?;
        if !meta.is_file() {
            return Err(invalid("not a regular file".to_string()));
        }
        let data = fs::read(&path).map_err(Error::io("read", &path))?;
        let manifest: Manifest =
            serde_json::from_slice(&data).map_err(|error| invalid(error.to_string()))?;

        if manifest.format != FORMAT_VERSION {
            return Err(invalid(format!(
                "format {} is not supported (expected {FORMAT_VERSION}); upgrade banger",
                manifest.format
            )));
        }
        if !is_valid_version(&manifest.version) {
            return Err(invalid(format!(
                "version `{}` is not a single path component",
                manifest.version
            )));
        }
        Ok(manifest)
    }

    /// Writes `bundle.json` into the bundle directory `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST);
        let mut data = serde_json::to_vec_pretty(self).map_err(|error| Error::InvalidManifest {
            path: path.clone(),
            name: String::new(),
            reason: error.to_string(),
        })?;
        data.push(b'\n');
        fs::write(&path, data).map_err(Error::io("write", &path))
    }
}

/// Returns whether a kernel version can name the directory
/// `lib/modules/<version>`: one path component, neither `.` nor `..`.
pub fn is_valid_version(version: &str) -> bool {
    extract::normalize(Path::new(version)).is_ok_and(|path| path.components().count() == 1)
}

/// Computes the sha256 of a sorted listing of every entry in the bundle
/// directory `dir` except the manifest: `d PATH`, `f PATH x|- SHA256` (with
/// the owner's execute bit, the only permission a tarball keeps) or
/// `l PATH TARGET`, one per line. Two bundles with the same listing have the
/// same files, executable flags and links.
pub fn content_digest(dir: &Path) -> Result<String> {
    let mut lines = Vec::new();
    list_content(dir, Path::new(""), &mut lines)?;
    lines.sort();

    let mut hasher = Sha256::new();
    for line in &lines {
        hasher.update(line);
        hasher.update(b"\n");
    }
    Ok(hex::encode(hasher.finalize()))
}

fn list_content(root: &Path, rel: &Path, lines: &mut Vec<Vec<u8>>) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;

    let dir = root.join(rel);
    for child in fs::read_dir(&dir).map_err(Error::io("read directory", &dir))? {
        let child = child.map_err(Error::io("read directory", &dir))?;
        let child_rel = rel.join(child.file_name());
        if child_rel == Path::new(MANIFEST) {
            continue;
        }
        let path = child.path();
        let meta = fs::symlink_metadata(&path).map_err(Error::io("read", &path))?;
        let name = child_rel.as_os_str().as_bytes();

        let mut line = Vec::new();
        if meta.is_dir() {
            line.extend_from_slice(b"d ");
            line.extend_from_slice(name);
            list_content(root, &child_rel, lines)?;
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map_err(Error::io("read symlink", &path))?;
            line.extend_from_slice(b"l ");
            line.extend_from_slice(name);
            line.push(b' ');
            line.extend_from_slice(target.as_os_str().as_bytes());
        } else {
            let digest = sha256_file(&path)?;
            line.extend_from_slice(b"f ");
            line.extend_from_slice(name);
            line.extend_from_slice(
                format!(
                    " {} {digest}",
                    if meta.permissions().mode() & 0o100 != 0 {
                        'x'
                    } else {
                        '-'
                    }
                )
                .as_bytes(),
            );
        }
        lines.push(line);
    }
    Ok(())
}

/// Returns the lowercase hex sha256 of a file's content.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(Error::io("read", path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = file.read(&mut buffer).map_err(Error::io("read", path))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Writes the bundle directory `dir` as a tarball to `out`, the manifest
/// first and then every other entry in sorted order. Headers use tar's
/// deterministic mode (owner 0:0, a fixed mtime, mode 0755 or 0644), so the
/// same bundle always gives the same bytes.
pub fn write_tarball(dir: &Path, out: impl Write) -> Result<()> {
    let write_error = |source| Error::Io {
        action: "write bundle tarball for",
        path: dir.to_path_buf(),
        source,
    };
    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);

    append_entry(&mut builder, dir, Path::new(MANIFEST)).map_err(write_error)?;
    let mut rels = Vec::new();
    collect_sorted(dir, Path::new(""), &mut rels)?;
    for rel in rels {
        append_entry(&mut builder, dir, &rel).map_err(write_error)?;
    }

    builder
        .into_inner()
        .and_then(|mut out| out.flush())
        .map_err(write_error)
}

fn collect_sorted(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .map_err(Error::io("read directory", &dir))?
        .map(|child| child.map(|c| c.file_name()))
        .collect::<io::Result<_>>()
        .map_err(Error::io("read directory", &dir))?;
    names.sort();
    for name in names {
        let child_rel = rel.join(&name);
        if child_rel == Path::new(MANIFEST) {
            continue;
        }
        let is_dir = fs::symlink_metadata(root.join(&child_rel))
            .map_err(Error::io("read", root.join(&child_rel)))?
            .is_dir();
        out.push(child_rel.clone());
        if is_dir {
            collect_sorted(root, &child_rel, out)?;
        }
    }
    Ok(())
}

fn append_entry<W: Write>(
    builder: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
) -> io::Result<()> {
    // append_path_with_name writes directories, files and (with
    // follow_symlinks off) symlinks, and long names as GNU extensions.
    builder.append_path_with_name(root.join(rel), rel)
}

/// Opens a file and undoes gzip, zstd or xz compression, recognized by magic bytes.
pub fn open_decompressed(path: &Path) -> Result<Box<dyn Read>> {
    let mut file = BufReader::new(File::open(path).map_err(Error::io("open", path))?);
    let mut magic = [0u8; 6];
    let mut filled = 0;
    while filled < magic.len() {
        let read = file
            .read(&mut magic[filled..])
            .map_err(Error::io("read", path))?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    let head = io::Cursor::new(magic[..filled].to_vec());
    let stream = head.chain(file);
    decompress(stream, &magic[..filled]).map_err(Error::io("decompress", path))
}

/// Wraps `stream` in the decoder that its first bytes `magic` call for.
pub fn decompress<R: Read + 'static>(stream: R, magic: &[u8]) -> io::Result<Box<dyn Read>> {
    Ok(if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(stream))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::new(stream)?)
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Box::new(xz2::read::XzDecoder::new_multi_decoder(stream))
    } else {
        Box::new(stream)
    })
}

/// Extracts a bundle tarball (plain, gzip, zstd or xz) into `staging_dir`
/// and returns the manifest it carries. The caller checks the content
/// against the manifest's digest.
pub fn stage_tarball(path: &Path, staging_dir: &Path) -> Result<Manifest> {
    let staging = Staging::new(staging_dir, path);
    let reader = open_decompressed(path)?;
    extract::extract_tar(reader, &staging, |rel| {
        let first = rel.components().next().map(|c| c.as_os_str().to_owned());
        match first.as_deref().and_then(|f| f.to_str()) {
            None => Ok(Mapping::Skip),
            Some(MANIFEST | KERNEL | INITRD | "lib") => Ok(Mapping::To(rel.to_path_buf())),
            Some(_) => Err(Error::UnsafeEntry {
                archive: path.to_path_buf(),
                entry: rel.display().to_string(),
                reason: format!(
                    "a kernel bundle contains only {MANIFEST}, {KERNEL}, {INITRD} and {MODULES_DIR}/"
                ),
            }),
        }
    })?;

    Manifest::read(staging_dir).map_err(|error| Error::InvalidBundle {
        path: path.to_path_buf(),
        reason: match error {
            // The hint of `InvalidManifest` is for catalog entries, not inputs.
            Error::InvalidManifest { reason, .. } => format!("its {MANIFEST} is invalid: {reason}"),
            other => other.to_string(),
        },
    })
}
