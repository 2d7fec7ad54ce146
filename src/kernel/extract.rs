//! Safe extraction of archives and directory trees into a staging directory.
//!
//! Every write goes through [`Staging`], which keeps it inside the staging
//! root: entry paths that are absolute or contain `..` are rejected, no write
//! goes through a symlink, and a hard link must point at a regular file
//! already extracted. Once everything is staged, [`check_links`] resolves
//! each relative symlink target through the links staged beside it and
//! rejects one that leaves the root or passes through an absolute link.
//! Absolute symlink targets are kept as they are for leaf links, because
//! they are only ever resolved inside the guest
//! (`lib/modules/<v>/build -> /usr/src/...`); the directories banger reads
//! (`lib`, `lib/modules`, `lib/modules/<v>`) must be real directories, so no
//! path the host reads goes through a link. The host never follows a
//! symlink inside a bundle: code that reads bundle files opens only regular
//! files and walks directories with `symlink_metadata`.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::error::{Error, Result};

/// What to do with an archive entry, as a caller's mapping decides it.
pub enum Mapping {
    /// Extract the entry to this path relative to the staging root.
    To(PathBuf),
    /// Read past the entry.
    Skip,
}

/// A directory that extraction writes into, and the archive being extracted
/// (named in errors).
pub struct Staging<'a> {
    root: &'a Path,
    archive: &'a Path,
}

impl<'a> Staging<'a> {
    /// Creates a writer into the existing directory `root`.
    pub fn new(root: &'a Path, archive: &'a Path) -> Self {
        Self { root, archive }
    }

    fn reject(&self, entry: &Path, reason: impl Into<String>) -> Error {
        Error::UnsafeEntry {
            archive: self.archive.to_path_buf(),
            entry: entry.display().to_string(),
            reason: reason.into(),
        }
    }

    /// Returns the directory that contains the staging root: the kernel
    /// catalog, which is what a user can free space in.
    fn catalog_dir(&self) -> &Path {
        self.root.parent().unwrap_or(self.root)
    }

    /// Creates the directory `rel`, and its missing parents.
    pub fn create_dir(&self, rel: &Path, mode: u32) -> Result<()> {
        let path = self.prepare(rel)?;
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(self.reject(rel, "a directory replaces an earlier file or link"));
            }
            Err(_) => fs::create_dir(&path).map_err(Error::io("create directory", &path))?,
        }
        set_mode(&path, dir_mode(mode))
    }

    /// Writes a regular file `rel` with the bytes of `data`, which must be
    /// exactly `size` bytes long.
    pub fn write_file(&self, rel: &Path, mode: u32, size: u64, data: &mut dyn Read) -> Result<()> {
        let path = self.prepare(rel)?;
        self.remove_existing(rel, &path)?;

        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(file_mode(mode))
            .open(&path)
            .map_err(Error::io("create file", &path))?;
        // Read and write errors get separate variants: a failed read means a bad
        // input, a failed write a full or broken catalog file system.
        let mut buffer = vec![0u8; 64 * 1024];
        let mut copied = 0u64;
        loop {
            let count = match data.read(&mut buffer) {
                Ok(0) => break,
                Ok(count) => count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(Error::Archive {
                        archive: self.archive.to_path_buf(),
                        source,
                    })
                }
            };
            file.write_all(&buffer[..count])
                .map_err(Error::io("write to the kernel catalog", self.catalog_dir()))?;
            copied += count as u64;
        }
        if copied != size {
            return Err(Error::Archive {
                archive: self.archive.to_path_buf(),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "entry `{}` ends after {copied} of its {size} bytes",
                        rel.display()
                    ),
                ),
            });
        }
        set_mode(&path, file_mode(mode))
    }

    /// Creates a symlink `rel` pointing at `target`, after checking that a
    /// relative target stays inside the staging root.
    pub fn symlink(&self, rel: &Path, target: &Path) -> Result<()> {
        if target.as_os_str().is_empty() {
            return Err(self.reject(rel, "symlink with an empty target"));
        }
        if target.is_relative() {
            let parent_depth = rel.components().count().saturating_sub(1);
            if climbs_out(parent_depth, target) {
                return Err(self.reject(
                    rel,
                    format!(
                        "relative symlink target `{}` climbs out of the bundle",
                        target.display()
                    ),
                ));
            }
        }

        let path = self.prepare(rel)?;
        self.remove_existing(rel, &path)?;
        std::os::unix::fs::symlink(target, &path).map_err(Error::io("create symlink", &path))
    }

    /// Creates a hard link `rel` to the regular file `target`, a path relative
    /// to the staging root that was extracted before.
    pub fn hard_link(&self, rel: &Path, target: &Path) -> Result<()> {
        let target_rel = normalize(target).map_err(|reason| {
            self.reject(
                rel,
                format!("hard link target `{}` {reason}", target.display()),
            )
        })?;
        let target_path = self.root.join(&target_rel);
        self.check_no_symlink_parents(&target_rel, rel)?;
        match fs::symlink_metadata(&target_path) {
            Ok(meta) if meta.is_file() => {}
            _ => {
                return Err(self.reject(
                    rel,
                    format!(
                        "hard link target `{}` is not a regular file extracted earlier",
                        target.display()
                    ),
                ));
            }
        }

        let path = self.prepare(rel)?;
        self.remove_existing(rel, &path)?;
        fs::hard_link(&target_path, &path).map_err(Error::io("create hard link", &path))
    }

    /// Creates the missing parent directories of `rel` and returns its full path.
    fn prepare(&self, rel: &Path) -> Result<PathBuf> {
        self.check_no_symlink_parents(rel, rel)?;
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(Error::io("create directory", parent))?;
        }
        Ok(path)
    }

    /// Rejects `rel` when one of its parent components is something other than
    /// a directory, so that no write goes through a symlink.
    fn check_no_symlink_parents(&self, rel: &Path, entry: &Path) -> Result<()> {
        let mut current = self.root.to_path_buf();
        let parents = rel.components().count().saturating_sub(1);
        for component in rel.components().take(parents) {
            current.push(component);
            match fs::symlink_metadata(&current) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    let through = current.strip_prefix(self.root).unwrap_or(&current);
                    return Err(self.reject(
                        entry,
                        format!("its parent `{}` is not a directory", through.display()),
                    ));
                }
                // The rest is missing and will be created as directories.
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Removes a file or link that an archive entry replaces, as tar does.
    fn remove_existing(&self, rel: &Path, path: &Path) -> Result<()> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => {
                Err(self.reject(rel, "a non-directory replaces an earlier directory"))
            }
            Ok(_) => fs::remove_file(path).map_err(Error::io("replace", path)),
            Err(_) => Ok(()),
        }
    }
}

/// Normalizes an archive entry path into a relative path without `.` or
/// `..`, or returns why it is unsafe. The empty path (`./`) stays empty.
pub fn normalize(path: &Path) -> std::result::Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::CurDir => {}
            Component::ParentDir => return Err("contains `..`"),
            Component::RootDir | Component::Prefix(_) => return Err("is absolute"),
        }
    }
    Ok(out)
}

/// Returns whether a relative symlink target, resolved lexically from a directory
/// `parent_depth` levels below the root, climbs above the root at any point.
fn climbs_out(parent_depth: usize, target: &Path) -> bool {
    let mut depth = parent_depth;
    for component in target.components() {
        match component {
            Component::ParentDir => match depth.checked_sub(1) {
                Some(up) => depth = up,
                None => return true,
            },
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return true,
        }
    }
    false
}

/// Most symlinks followed while resolving one target, as the kernel's
/// `MAXSYMLINKS`.
const MAX_LINK_HOPS: usize = 40;

/// Checks every symlink of the staged tree `root`: a relative target,
/// resolved from the link's directory through the symlinks of the tree,
/// must stay inside `root` and must not pass through a symlink with an
/// absolute target. `archive` is named in errors.
///
/// # Errors
/// [`Error::UnsafeEntry`] naming the first link that escapes.
pub fn check_links(root: &Path, archive: &Path) -> Result<()> {
    let staging = Staging::new(root, archive);
    let mut links = Vec::new();
    collect_links(root, Path::new(""), &mut links)?;
    for link in links {
        let full = root.join(&link);
        let target = fs::read_link(&full).map_err(Error::io("read symlink", &full))?;
        if target.is_absolute() {
            continue;
        }
        if let Err(reason) = resolve_inside(root, &link, &target) {
            return Err(staging.reject(
                &link,
                format!("relative symlink target `{}` {reason}", target.display()),
            ));
        }
    }
    Ok(())
}

/// Lists the symlinks under `root/rel`, relative to `root`, without
/// following any.
fn collect_links(root: &Path, rel: &Path, links: &mut Vec<PathBuf>) -> Result<()> {
    let dir = root.join(rel);
    let mut children: Vec<_> = fs::read_dir(&dir)
        .map_err(Error::io("read directory", &dir))?
        .collect::<io::Result<_>>()
        .map_err(Error::io("read directory", &dir))?;
    children.sort_by_key(|child| child.file_name());
    for child in children {
        let child_rel = rel.join(child.file_name());
        let file_type = child
            .file_type()
            .map_err(Error::io("read", root.join(&child_rel)))?;
        if file_type.is_symlink() {
            links.push(child_rel);
        } else if file_type.is_dir() {
            collect_links(root, &child_rel, links)?;
        }
    }
    Ok(())
}

/// Resolves the relative symlink target `target` of the link `link` (both
/// relative to `root`) lexically, following the symlinks found in `root` on
/// the way, and returns why it leaves `root` if it does. A missing component
/// is taken as a plain directory, since nothing can be created there later.
fn resolve_inside(root: &Path, link: &Path, target: &Path) -> std::result::Result<(), String> {
    let mut current: Vec<std::ffi::OsString> = link
        .parent()
        .map(|parent| {
            parent
                .components()
                .map(|c| c.as_os_str().to_os_string())
                .collect()
        })
        .unwrap_or_default();
    let mut pending: std::collections::VecDeque<std::ffi::OsString> = target
        .components()
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    let mut hops = 0;
    while let Some(component) = pending.pop_front() {
        if component == "." {
            continue;
        }
        if component == ".." {
            if current.pop().is_none() {
                return Err("climbs out of the bundle".to_string());
            }
            continue;
        }
        let mut candidate: PathBuf = current.iter().collect();
        candidate.push(&component);
        match fs::symlink_metadata(root.join(&candidate)) {
            Ok(meta) if meta.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return Err(format!(
                        "follows more than {MAX_LINK_HOPS} symlinks (a loop?)"
                    ));
                }
                let next = fs::read_link(root.join(&candidate))
                    .map_err(|error| format!("cannot be resolved: {error}"))?;
                if next.is_absolute() {
                    return Err(format!(
                        "passes through `{}`, a symlink to the absolute path `{}`",
                        candidate.display(),
                        next.display()
                    ));
                }
                for part in next.components().rev() {
                    pending.push_front(part.as_os_str().to_os_string());
                }
            }
            _ => current.push(component),
        }
    }
    Ok(())
}

/// Returns whether `root/rel` exists, after checking that it and each of its
/// parents below `root` is a real directory, not a symlink.
///
/// # Errors
/// The path of the first component that exists but is not a directory.
pub fn real_dir(root: &Path, rel: &Path) -> std::result::Result<bool, PathBuf> {
    let mut current = PathBuf::new();
    for component in rel.components() {
        current.push(component);
        match fs::symlink_metadata(root.join(&current)) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(current),
            Err(_) => return Ok(false),
        }
    }
    Ok(true)
}

/// Keeps the permission bits and drops setuid, setgid and sticky: nothing in
/// a kernel bundle needs them on the host.
fn file_mode(mode: u32) -> u32 {
    mode & 0o777
}

fn dir_mode(mode: u32) -> u32 {
    // The owner must be able to enter and fill the directory, or cleanup fails.
    (mode & 0o777) | 0o700
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(Error::io("set permissions of", path))
}

/// Extracts a tar stream into `staging`, passing each normalized entry path
/// through `map`. Reads the archive to its end, so truncation anywhere in a
/// compressed stream is detected.
///
/// # Errors
/// [`Error::UnsafeEntry`] for a hostile entry and [`Error::Archive`] when the
/// archive cannot be read to its end.
pub fn extract_tar<R: Read>(
    reader: R,
    staging: &Staging<'_>,
    mut map: impl FnMut(&Path) -> Result<Mapping>,
) -> Result<()> {
    let archive_error = |source| Error::Archive {
        archive: staging.archive.to_path_buf(),
        source,
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(archive_error)?;

    for entry in entries {
        let mut entry = entry.map_err(archive_error)?;
        let raw_path = PathBuf::from(OsStr::from_bytes(&entry.path_bytes()));
        let rel = normalize(&raw_path).map_err(|reason| staging.reject(&raw_path, reason))?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        let Mapping::To(dest) = map(&rel)? else {
            continue;
        };
        let dest = normalize(&dest).map_err(|reason| staging.reject(&raw_path, reason))?;
        if dest.as_os_str().is_empty() {
            continue;
        }

        let mode = entry.header().mode().map_err(archive_error)?;
        let link_name = entry
            .link_name_bytes()
            .map(|name| PathBuf::from(OsStr::from_bytes(&name)));
        let link_target = || {
            link_name
                .clone()
                .ok_or_else(|| staging.reject(&raw_path, "link entry without a link target"))
        };
        if kind.is_dir() {
            staging.create_dir(&dest, mode)?;
        } else if kind.is_symlink() {
            let target = link_target()?;
            staging.symlink(&dest, &target)?;
        } else if kind.is_hard_link() {
            let target = link_target()?;
            let target = match map(&normalize(&target).map_err(|reason| {
                staging.reject(
                    &raw_path,
                    format!("hard link target `{}` {reason}", target.display()),
                )
            })?)? {
                Mapping::To(mapped) => mapped,
                Mapping::Skip => {
                    return Err(staging.reject(
                        &raw_path,
                        format!("hard link target `{}` is not extracted", target.display()),
                    ));
                }
            };
            staging.hard_link(&dest, &target)?;
        } else if kind.is_file() || kind.is_contiguous() {
            let size = entry.header().entry_size().map_err(archive_error)?;
            staging.write_file(&dest, mode, size, &mut entry)?;
        } else {
            return Err(staging.reject(
                &raw_path,
                format!(
                    "entry type {:?} is not allowed; a kernel bundle contains only files, directories and links",
                    kind
                ),
            ));
        }
    }

    // Read what follows the last entry, so that a compressed stream's own
    // end-of-stream check runs.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(archive_error)?;
    Ok(())
}

/// Copies the directory tree `source` into `staging` under `dest`, with the
/// same checks as archive extraction. Symlinks are copied, not followed.
pub fn copy_tree(source: &Path, staging: &Staging<'_>, dest: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(source).map_err(Error::io("read", source))?;
    let file_type = meta.file_type();

    if file_type.is_dir() {
        staging.create_dir(dest, meta.permissions().mode())?;
        let mut children: Vec<_> = fs::read_dir(source)
            .map_err(Error::io("read directory", source))?
            .collect::<io::Result<_>>()
            .map_err(Error::io("read directory", source))?;
        children.sort_by_key(|child| child.file_name());
        for child in children {
            copy_tree(&child.path(), staging, &dest.join(child.file_name()))?;
        }
        Ok(())
    } else if file_type.is_symlink() {
        let target = fs::read_link(source).map_err(Error::io("read symlink", source))?;
        staging.symlink(dest, &target)
    } else if file_type.is_file() {
        let mut file = File::open(source).map_err(Error::io("open", source))?;
        staging.write_file(dest, meta.permissions().mode(), meta.len(), &mut file)
    } else {
        Err(staging.reject(
            dest,
            "not a regular file, directory or symlink; a kernel bundle contains only those",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_rejects_parent_and_absolute() {
        assert_eq!(
            normalize(Path::new("./a/./b")).unwrap(),
            PathBuf::from("a/b")
        );
        assert_eq!(normalize(Path::new("./")).unwrap(), PathBuf::new());
        assert!(normalize(Path::new("a/../b")).is_err());
        assert!(normalize(Path::new("/etc/passwd")).is_err());
    }

    #[test]
    fn climbs_out_counts_from_parent() {
        assert!(!climbs_out(2, Path::new("../../x")));
        assert!(climbs_out(2, Path::new("../../../x")));
        assert!(climbs_out(0, Path::new("..")));
        assert!(climbs_out(1, Path::new("a/../../..")));
        assert!(!climbs_out(0, Path::new("a/b/../c")));
    }

    #[test]
    fn write_through_symlink_rejected() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let staging = Staging::new(root.path(), Path::new("test.tar"));
        staging.symlink(Path::new("link"), outside.path()).unwrap();

        let error = staging
            .write_file(Path::new("link/file"), 0o644, 1, &mut &b"x"[..])
            .unwrap_err();

        assert!(matches!(error, Error::UnsafeEntry { .. }), "{error}");
        assert!(!outside.path().join("file").exists());
    }

    #[test]
    fn short_file_data_rejected() {
        let root = tempfile::tempdir().unwrap();
        let staging = Staging::new(root.path(), Path::new("test.tar"));
        let error = staging
            .write_file(Path::new("f"), 0o644, 10, &mut &b"abc"[..])
            .unwrap_err();
        assert!(matches!(error, Error::Archive { .. }), "{error}");
    }
}
