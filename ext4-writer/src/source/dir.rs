//! A directory on disk as a [`Tree`], as `mke2fs -d` reads one.
//!
//! The walk never follows symlinks. It keeps owners, permissions with
//! setuid, setgid and sticky bits, all four times with nanoseconds, xattrs
//! (file capabilities and POSIX ACLs included), device numbers and hard
//! links. File contents stay on disk: each file becomes segments over a
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
    let root_stat =
        fs::symlink_metadata(root).map_err(|err| io_error("failed to examine", root, err))?;
    if !root_stat.is_dir() {
        return Err(Error::Io {
            context: format!("failed to read `{}`", root.display()),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        });
    }

    let mut walk = Walk {
        tree: Tree::new(metadata(root, &root_stat)?),
        hard_links: HashMap::new(),
        open_files: Arc::new(Mutex::new(OpenFiles::default())),
        next_file_id: 0,
    };
    let tree_root = walk.tree.root();
    let mut pending = vec![(root.to_path_buf(), tree_root)];
    while let Some((dir, node)) = pending.pop() {
        walk.read_directory(&dir, node, &mut pending)?;
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
    /// Adds the entries of `dir` to `node`, and queues its subdirectories.
    fn read_directory(
        &mut self,
        dir: &Path,
        node: NodeId,
        pending: &mut Vec<(PathBuf, NodeId)>,
    ) -> Result<(), Error> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir).map_err(|err| io_error("failed to list", dir, err))? {
            let entry = entry.map_err(|err| io_error("failed to list", dir, err))?;
            names.push(entry.file_name());
        }
        // Sorted names make the node order, and so the image, independent of
        // the order the filesystem lists entries in.
        names.sort();

        for name in names {
            let path = dir.join(&name);
            let stat = fs::symlink_metadata(&path)
                .map_err(|err| io_error("failed to examine", &path, err))?;
            if let Some(target) = self.hard_link_target(&stat) {
                self.tree
                    .link(node, name.as_bytes(), target)
                    .map_err(|err| tree_error(&path, err))?;
                continue;
            }

            let kind = self.node_kind(&path, &stat)?;
            let is_directory = kind.is_directory();
            let metadata = metadata(&path, &stat)?;
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

    /// Reads the node kind of `path` with its type-specific data.
    fn node_kind(&mut self, path: &Path, stat: &fs::Metadata) -> Result<NodeKind, Error> {
        let file_type = stat.file_type();
        let kind = if file_type.is_dir() {
            NodeKind::directory()
        } else if file_type.is_file() {
            NodeKind::Regular(self.file_data(path, stat.len())?)
        } else if file_type.is_symlink() {
            let target = fs::read_link(path)
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
    fn file_data(&mut self, path: &Path, size: u64) -> Result<FileData, Error> {
        if size == 0 {
            return Ok(FileData::empty());
        }
        let file = open_noatime(path).map_err(|err| io_error("failed to open", path, err))?;
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

/// Reads the owner, permissions, times and xattrs of `path`.
fn metadata(path: &Path, stat: &fs::Metadata) -> Result<Metadata, Error> {
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
        xattrs: xattrs(path)?,
    })
}

/// Reads the xattrs of `path` itself (never of a symlink's target), sorted
/// by name.
fn xattrs(path: &Path) -> Result<Vec<Xattr>, Error> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(err) if err.kind() == io::ErrorKind::Unsupported => return Ok(Vec::new()),
        Err(err) => return Err(io_error("failed to list the xattrs of", path, err)),
    };
    let mut xattrs = Vec::new();
    for name in names {
        let value = xattr::get(path, &name)
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
        context: format!("{action} `{}`", path.display()),
        source,
    }
}

/// Adds the path to an error of the tree, whose messages carry only names.
fn tree_error(path: &Path, err: Error) -> Error {
    Error::Io {
        context: format!("failed to add `{}` to the tree", path.display()),
        source: io::Error::new(io::ErrorKind::InvalidInput, err.to_string()),
    }
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
/// closed when more than [`MAX_OPEN_FILES`] others were opened since.
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
        let file = Arc::new(open_noatime(&self.path)?);
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
                format!("failed to read `{}`: {err}", self.path.display()),
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
