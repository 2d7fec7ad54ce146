//! A directory on disk as a [`Tree`], as `mke2fs -d` reads one.
//!
//! The walk follows a symlink given as the root and no other. It keeps
//! owners, permissions with setuid, setgid and sticky bits, all four times
//! with nanoseconds, xattrs (file capabilities and POSIX ACLs included),
//! device numbers and hard links. File contents stay on disk: each file becomes segments over a
//! [`LazyFile`] that opens the path only when the writer reads it, so a
//! tree of many files does not hold one descriptor per file.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use rustix::fs::SeekFrom;

use crate::error::Error;
use crate::tree::{FileData, Metadata, NodeId, NodeKind, ReadAt, Segment, Timestamp, Tree, Xattr};

/// Maximum number of files the lazy sources of one tree keep open at once.
const MAX_OPEN_FILES: usize = 32;

/// Reads the directory `root` and everything below it into a tree whose
/// root carries `root`'s own metadata.
///
/// # Errors
/// [`Error::Io`] naming the path when a directory cannot be listed, an
/// entry, its symlink target, its holes or its xattrs cannot be read.
/// Errors of the tree, which names read from a directory do not cause,
/// become [`Error::Io`] naming the path too.
pub fn tree_from_dir(root: &Path) -> Result<Tree, Error> {
    // The root itself may be a symlink to a directory, as with `mke2fs -d`.
    let root_stat = fs::metadata(root).map_err(|err| io_error("failed to examine", root, err))?;
    if !root_stat.is_dir() {
        return Err(Error::Io {
            context: format!("failed to read `{}`", shorten(root)),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        });
    }

    let mut walk = Walk {
        tree: Tree::new(metadata(root, &root.join("."), &root_stat)?),
        hard_links: HashMap::new(),
        open_files: Arc::new(Mutex::new(OpenFiles::default())),
        next_file_id: 0,
    };
    let tree_root = walk.tree.root();
    let mut pending = vec![(root.to_path_buf(), tree_root)];
    while let Some((dir, node)) = pending.pop() {
        let handle = DirHandle::open(&dir)?;
        walk.read_directory(&dir, &handle, node, &mut pending)?;
    }
    Ok(walk.tree)
}

/// State of one walk: the tree so far, and the nodes of files with more
/// than one link, keyed by device and inode number.
struct Walk {
    tree: Tree,
    hard_links: HashMap<(u64, u64), NodeId>,
    open_files: Arc<Mutex<OpenFiles>>,
    next_file_id: u64,
}

impl Walk {
    /// Adds the entries of `dir`, opened as `handle`, to `node`, and queues
    /// its subdirectories.
    fn read_directory(
        &mut self,
        dir: &Path,
        handle: &DirHandle,
        node: NodeId,
        pending: &mut Vec<(PathBuf, NodeId)>,
    ) -> Result<(), Error> {
        let mut names = Vec::new();
        let listing = fs::read_dir(handle.access(None))
            .map_err(|err| io_error("failed to list", dir, err))?;
        for entry in listing {
            let entry = entry.map_err(|err| io_error("failed to list", dir, err))?;
            names.push(entry.file_name());
        }
        // Sorted names make the node order, and so the image, independent of
        // the order the filesystem lists entries in.
        names.sort();

        for name in names {
            let path = dir.join(&name);
            let access = handle.access(Some(&name));
            let stat = fs::symlink_metadata(&access)
                .map_err(|err| io_error("failed to examine", &path, err))?;
            if let Some(target) = self.hard_link_target(&stat) {
                self.tree
                    .link(node, name.as_bytes(), target)
                    .map_err(|err| tree_error(&path, err))?;
                continue;
            }

            let kind = self.node_kind(&path, &access, &stat)?;
            let is_directory = kind.is_directory();
            let metadata = metadata(&path, &access, &stat)?;
            let child = self
                .tree
                .add(node, name.as_bytes(), kind, metadata)
                .map_err(|err| tree_error(&path, err))?;
            if is_directory {
                pending.push((path, child));
            } else if stat.nlink() > 1 {
                self.hard_links.insert((stat.dev(), stat.ino()), child);
            }
        }
        Ok(())
    }

    /// Returns the node already made for another name of the same inode.
    fn hard_link_target(&self, stat: &fs::Metadata) -> Option<NodeId> {
        if stat.is_dir() || stat.nlink() < 2 {
            return None;
        }
        self.hard_links.get(&(stat.dev(), stat.ino())).copied()
    }

    /// Reads the node kind of `path`, reached through `access`, with its
    /// type-specific data.
    fn node_kind(
        &mut self,
        path: &Path,
        access: &Path,
        stat: &fs::Metadata,
    ) -> Result<NodeKind, Error> {
        let file_type = stat.file_type();
        let kind = if file_type.is_dir() {
            NodeKind::directory()
        } else if file_type.is_file() {
            NodeKind::Regular(self.file_data(path, access, stat.len())?)
        } else if file_type.is_symlink() {
            let target = fs::read_link(access)
                .map_err(|err| io_error("failed to read the symlink", path, err))?;
            NodeKind::Symlink(target.into_os_string().into_vec())
        } else if file_type.is_char_device() {
            let (major, minor) = split_device_number(stat.rdev());
            NodeKind::CharDevice { major, minor }
        } else if file_type.is_block_device() {
            let (major, minor) = split_device_number(stat.rdev());
            NodeKind::BlockDevice { major, minor }
        } else if file_type.is_fifo() {
            NodeKind::Fifo
        } else if file_type.is_socket() {
            NodeKind::Socket
        } else {
            return Err(io_error(
                "failed to read",
                path,
                io::Error::new(io::ErrorKind::Unsupported, "unknown file type"),
            ));
        };
        Ok(kind)
    }

    /// Builds the content of the regular file `path`: one segment per run of
    /// data between holes, all read lazily from the path.
    fn file_data(&mut self, path: &Path, access: &Path, size: u64) -> Result<FileData, Error> {
        if size == 0 {
            return Ok(FileData::empty());
        }
        let file = open_noatime(access).map_err(|err| io_error("failed to open", path, err))?;
        let runs = data_runs(&file, size)
            .map_err(|err| io_error("failed to find the holes of", path, err))?;
        drop(file);

        let source: Arc<dyn ReadAt> = Arc::new(LazyFile {
            id: self.next_file_id,
            path: path.to_path_buf(),
            open_files: Arc::clone(&self.open_files),
        });
        self.next_file_id += 1;
        let segments = runs
            .into_iter()
            .map(|(offset, len)| Segment {
                file_offset: offset,
                len,
                source: Arc::clone(&source),
                source_offset: offset,
            })
            .collect();
        FileData::from_segments(size, segments).map_err(|err| tree_error(path, err))
    }
}

/// Lists the runs of data in `file` as (offset, length) with SEEK_DATA and
/// SEEK_HOLE, up to `size`. A filesystem without hole reporting returns the
/// whole file as one run, and the writer still leaves all-zero blocks out.
fn data_runs(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut runs = Vec::new();
    let mut offset = 0;
    while offset < size {
        let start = match rustix::fs::seek(file, SeekFrom::Data(offset)) {
            Ok(start) => start,
            // ENXIO: only a hole remains after `offset`.
            Err(rustix::io::Errno::NXIO) => break,
            Err(rustix::io::Errno::INVAL) if offset == 0 => return Ok(vec![(0, size)]),
            Err(err) => return Err(err.into()),
        };
        if start >= size {
            break;
        }
        let end = rustix::fs::seek(file, SeekFrom::Hole(start))?.min(size);
        runs.push((start, end - start));
        offset = end;
    }
    Ok(runs)
}

/// Reads the owner, permissions, times and xattrs of `path`, reached
/// through `access`.
fn metadata(path: &Path, access: &Path, stat: &fs::Metadata) -> Result<Metadata, Error> {
    let ctime = timestamp(stat.ctime(), stat.ctime_nsec());
    // std reads the birth time through statx. A filesystem that does not
    // record one gets ctime instead.
    let crtime = stat
        .created()
        .ok()
        .and_then(|created| match created.duration_since(UNIX_EPOCH) {
            Ok(after) => Some(Timestamp::new(
                i64::try_from(after.as_secs()).ok()?,
                after.subsec_nanos(),
            )),
            Err(_) => None,
        })
        .unwrap_or(ctime);
    // st_mode keeps the permission bits, setuid, setgid and sticky in its
    // low 12 bits, so the cast drops only the file type.
    let permissions = (stat.mode() & 0o7777) as u16;

    Ok(Metadata {
        permissions,
        uid: stat.uid(),
        gid: stat.gid(),
        atime: timestamp(stat.atime(), stat.atime_nsec()),
        mtime: timestamp(stat.mtime(), stat.mtime_nsec()),
        ctime,
        crtime,
        xattrs: xattrs(path, access)?,
    })
}

/// Reads the xattrs of `path` itself (never of a symlink's target), reached
/// through `access`, sorted by name.
fn xattrs(path: &Path, access: &Path) -> Result<Vec<Xattr>, Error> {
    let names = match xattr::list(access) {
        Ok(names) => names,
        Err(err) if err.kind() == io::ErrorKind::Unsupported => return Ok(Vec::new()),
        Err(err) => return Err(io_error("failed to list the xattrs of", path, err)),
    };
    let mut xattrs = Vec::new();
    for name in names {
        let value = xattr::get(access, &name)
            .map_err(|err| io_error(&format!("failed to read xattr {:?} of", name), path, err))?;
        // A value removed between listing and reading is simply gone.
        if let Some(value) = value {
            xattrs.push(Xattr {
                name: name.as_bytes().to_vec(),
                value,
            });
        }
    }
    xattrs.sort();
    Ok(xattrs)
}

/// Splits a Linux `dev_t` into major and minor as glibc's `major()` and
/// `minor()` do: 12 bits of major at bit 8 and the rest at bit 32, 8 bits
/// of minor at bit 0 and the rest at bit 12.
#[allow(clippy::cast_possible_truncation)] // The masks keep 32 bits of each.
fn split_device_number(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & 0xffff_f000);
    let minor = (rdev & 0xff) | ((rdev >> 12) & 0xffff_ff00);
    (major as u32, minor as u32)
}

fn timestamp(seconds: i64, nanoseconds: i64) -> Timestamp {
    // The kernel reports nanoseconds in 0..1e9.
    Timestamp::new(seconds, u32::try_from(nanoseconds).unwrap_or(0))
}

fn io_error(action: &str, path: &Path, source: io::Error) -> Error {
    Error::Io {
        context: format!("{action} `{}`", shorten(path)),
        source,
    }
}

/// Adds the path to an error of the tree, whose messages carry only names.
fn tree_error(path: &Path, err: Error) -> Error {
    Error::Io {
        context: format!("failed to add `{}` to the tree", shorten(path)),
        source: io::Error::new(io::ErrorKind::InvalidInput, err.to_string()),
    }
}

/// Longest path handed to the kernel whole; PATH_MAX is 4096 bytes with
/// the NUL, and longer paths fail with ENAMETOOLONG.
const PATH_LIMIT: usize = 4000;

/// Longest path shown in a message: longer ones keep their last components.
const SHOWN_PATH_LIMIT: usize = 160;

/// An open directory of the walk. Entries of a directory whose path is too
/// long for the kernel are reached through `/proc/self/fd/N/NAME`.
///
/// NOTE: trees deeper than PATH_MAX therefore need /proc mounted.
struct DirHandle {
    path: PathBuf,
    fd: Option<File>,
}

impl DirHandle {
    fn open(path: &Path) -> Result<Self, Error> {
        if path.as_os_str().len() < PATH_LIMIT {
            return Ok(Self {
                path: path.to_path_buf(),
                fd: None,
            });
        }
        let fd = open_chunks(path, rustix::fs::OFlags::DIRECTORY)
            .map_err(|err| io_error("failed to open the directory", path, err))?;
        Ok(Self {
            path: path.to_path_buf(),
            fd: Some(fd),
        })
    }

    /// Returns a path to the directory itself (`None`) or to its entry
    /// `name` that the kernel accepts whatever the depth.
    fn access(&self, name: Option<&std::ffi::OsStr>) -> PathBuf {
        let base = match &self.fd {
            Some(fd) => {
                use std::os::fd::AsRawFd;
                PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            }
            None => self.path.clone(),
        };
        match name {
            Some(name) => base.join(name),
            None => base,
        }
    }
}

/// Opens the regular file `path` for reading without updating its atime,
/// whatever the length of the path.
fn open_deep(path: &Path) -> io::Result<File> {
    if path.as_os_str().len() < PATH_LIMIT {
        return open_noatime(path);
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().unwrap_or_default();
    let dir = open_chunks(parent, rustix::fs::OFlags::DIRECTORY)?;
    use std::os::fd::AsRawFd;
    open_noatime(&Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name))
}

/// Opens `path` with `flags` (plus O_PATH and O_CLOEXEC) in pieces shorter
/// than [`PATH_LIMIT`], each relative to the directory the previous opened.
fn open_chunks(path: &Path, flags: rustix::fs::OFlags) -> io::Result<File> {
    use rustix::fs::{openat, Mode, OFlags, CWD};

    let mut pieces: Vec<PathBuf> = Vec::new();
    let mut current = PathBuf::new();
    for component in path.components() {
        let len = component.as_os_str().len();
        if len >= PATH_LIMIT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a path component is longer than the kernel accepts",
            ));
        }
        if current.as_os_str().len() + len + 1 >= PATH_LIMIT {
            pieces.push(std::mem::take(&mut current));
        }
        current.push(component);
    }
    pieces.push(current);

    let open_flags = flags | OFlags::PATH | OFlags::CLOEXEC;
    let mut fd = openat(CWD, &pieces[0], open_flags, Mode::empty())?;
    for piece in &pieces[1..] {
        fd = openat(&fd, piece, open_flags, Mode::empty())?;
    }
    Ok(File::from(fd))
}

/// Shortens a long path for a message to its last components after `...`.
fn shorten(path: &Path) -> String {
    let text = path.display().to_string();
    if text.len() <= SHOWN_PATH_LIMIT {
        return text;
    }
    let mut start = text.len() - SHOWN_PATH_LIMIT;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let tail = &text[start..];
    let tail = tail.find('/').map_or(tail, |slash| &tail[slash..]);
    format!("...{tail}")
}

/// Opens `path` for reading without updating its atime (O_NOATIME), which
/// the kernel permits to the file's owner and to root, else opens it plainly.
fn open_noatime(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;

    let noatime = rustix::fs::OFlags::NOATIME.bits();
    match fs::OpenOptions::new()
        .read(true)
        .custom_flags(i32::from_ne_bytes(noatime.to_ne_bytes()))
        .open(path)
    {
        Err(err) if err.kind() == io::ErrorKind::PermissionDenied => File::open(path),
        result => result,
    }
}

/// File content read from a path that is opened on the first read and
/// closed when more than `MAX_OPEN_FILES` others were opened since.
#[derive(Debug)]
pub struct LazyFile {
    id: u64,
    path: PathBuf,
    open_files: Arc<Mutex<OpenFiles>>,
}

impl LazyFile {
    /// Returns the path the content is read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open(&self) -> io::Result<Arc<File>> {
        // A poisoned lock only means another reader panicked; the list of
        // open files stays usable.
        let mut open_files = self
            .open_files
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, file)) = open_files.files.iter().find(|(id, _)| *id == self.id) {
            return Ok(Arc::clone(file));
        }
        let file = Arc::new(open_deep(&self.path)?);
        if open_files.files.len() >= MAX_OPEN_FILES {
            open_files.files.pop_front();
        }
        open_files.files.push_back((self.id, Arc::clone(&file)));
        Ok(file)
    }
}

impl ReadAt for LazyFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let with_path = |err: io::Error| {
            io::Error::new(
                err.kind(),
                format!("failed to read `{}`: {err}", shorten(&self.path)),
            )
        };
        let file = self.open().map_err(with_path)?;
        FileExt::read_exact_at(file.as_ref(), buf, offset).map_err(with_path)
    }
}

/// The files lazy sources have open, oldest first.
#[derive(Debug, Default)]
struct OpenFiles {
    files: VecDeque<(u64, Arc<File>)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_shortened_to_last_components() {
        let long = PathBuf::from(format!("/{}/tail/name", "a/".repeat(3000)));

        let shown = shorten(&long);

        assert!(shown.len() <= SHOWN_PATH_LIMIT + 3, "{shown}");
        assert!(shown.starts_with(".../"), "{shown}");
        assert!(shown.ends_with("/tail/name"), "{shown}");
        assert_eq!(shorten(Path::new("/etc/hostname")), "/etc/hostname");
    }
}
