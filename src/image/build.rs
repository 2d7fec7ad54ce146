//! Building: adds what banger injects to a flattened tree and writes it as
//! an ext4 image with `ext4-writer`.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use ext4_writer::tar::Spool;
use ext4_writer::{Metadata, NodeKind, Options, Report, Reproducible, Sizing, Timestamp, Tree};
use sha2::{Digest, Sha256};

use super::flatten::{flatten, FlattenError, Layer};
use crate::error::{Classify, ExitCode};

/// Version of the set of files banger injects. Raise it, together with
/// [`crate::store::images::ROOTFS_FORMAT_VERSION`], whenever what [`inject`]
/// adds changes, so that stored images are rebuilt.
pub const INJECTED_VERSION: u32 = 1;

/// Directories the guest mounts filesystems on at boot, with the
/// permissions they get when the image lacks them.
const MOUNT_POINTS: [(&[u8], u16); 5] = [
    (b"proc", 0o755),
    (b"sys", 0o755),
    (b"dev", 0o755),
    (b"run", 0o755),
    (b"tmp", 0o1777),
];

/// Free space a built image keeps beyond its content: a root filesystem
/// needs room for logs, package caches and the guest's own writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Headroom {
    /// Extra space as a percentage of content and metadata.
    pub percent: u32,
    /// Minimum free space in bytes.
    pub min_free_bytes: u64,
}

impl Default for Headroom {
    fn default() -> Self {
        Self {
            percent: 20,
            min_free_bytes: 256 << 20,
        }
    }
}

/// Everything that can go wrong while building an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The tree rejected an injected mount point.
    #[error("failed to add the mount point /{name} to the image: {source}")]
    Inject {
        name: String,
        #[source]
        source: ext4_writer::Error,
    },

    /// The layers could not be flattened.
    #[error(transparent)]
    Flatten(#[from] FlattenError),

    /// The image file or the spool beside it could not be created.
    #[error("failed to create {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The writer failed: the tree does not fit ext4's limits, or the
    /// output could not be written.
    #[error("failed to write the ext4 image: {source}")]
    Write {
        #[source]
        source: ext4_writer::Error,
    },
}

impl Classify for BuildError {
    fn exit_code(&self) -> ExitCode {
        match self {
            BuildError::Write {
                source: ext4_writer::Error::Io { .. },
            } => ExitCode::HostResource,
            BuildError::Create { .. } => ExitCode::HostResource,
            BuildError::Flatten(err) => err.exit_code(),
            _ => ExitCode::General,
        }
    }
}

/// Adds the mount points the guest needs where the image has no entry of
/// that name: directories owned by root, 0755 (`/tmp` 1777), with `time` as
/// their times. An existing entry, even a symlink or a file, is left alone.
///
/// # Errors
/// [`BuildError::Inject`] when the root is not a directory the tree
/// accepts names in.
pub fn inject(tree: &mut Tree, time: Timestamp) -> Result<(), BuildError> {
    let root = tree.root();
    for (name, permissions) in MOUNT_POINTS {
        if tree.lookup(root, name).is_some() {
            continue;
        }
        let metadata = Metadata::new(permissions, 0, 0, time);
        tree.add(root, name, NodeKind::directory(), metadata)
            .map_err(|source| BuildError::Inject {
                name: String::from_utf8_lossy(name).into_owned(),
                source,
            })?;
    }
    Ok(())
}

/// Derives the reproducible-build seed from an image identity such as its
/// manifest digest, so the same image always gets the same UUID and hash
/// seed.
pub fn seed_for(identity: &str) -> u64 {
    let digest = Sha256::digest(identity.as_bytes());
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(seed)
}

/// Injects banger's mount points into `tree` and writes it to `out` as an
/// ext4 image sized from its content plus `headroom`. The root keeps the
/// image's own mode and owner. The same tree and `identity` give a
/// byte-identical image, with superblock times from `SOURCE_DATE_EPOCH`
/// (or 0).
///
/// # Errors
/// [`BuildError`] when the tree exceeds ext4's limits or `out` cannot be
/// written.
pub fn build(
    tree: &mut Tree,
    identity: &str,
    headroom: Headroom,
    out: &File,
) -> Result<Report, BuildError> {
    let reproducible = Reproducible::from_env(seed_for(identity));
    inject(tree, Timestamp::new(reproducible.timestamp, 0))?;

    let options = Options {
        sizing: Sizing::Auto {
            headroom_percent: headroom.percent,
            min_free_bytes: headroom.min_free_bytes,
        },
        reproducible: Some(reproducible),
        ..Options::default()
    };
    let report = ext4_writer::write_file(tree, &options, out)
        .map_err(|source| BuildError::Write { source })?;
    tracing::debug!(
        identity,
        size_bytes = report.size_bytes,
        inodes = report.inodes,
        "built ext4 image"
    );
    Ok(report)
}

/// Flattens `layers` and builds the image at `out`, which is created or
/// truncated. File contents are spooled in a temporary file beside `out`,
/// deleted when the build ends. `identity` (the manifest digest) seeds
/// the reproducible build.
///
/// # Errors
/// [`BuildError`] for a layer that cannot be flattened, a tree that ext4
/// cannot hold, or a file that cannot be created or written.
pub fn build_rootfs(
    layers: &[Layer],
    identity: &str,
    headroom: Headroom,
    out: &Path,
) -> Result<Report, BuildError> {
    let dir = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut spool = Spool::new_in(dir).map_err(|source| BuildError::Create {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut tree = flatten(layers, &mut spool)?;

    let file = File::create(out).map_err(|source| BuildError::Create {
        path: out.to_path_buf(),
        source,
    })?;
    build(&mut tree, identity, headroom, &file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inject_adds_missing_mount_points() {
        let mut tree = Tree::new(Metadata::new(0o700, 0, 0, Timestamp::default()));
        let root = tree.root();
        tree.add(
            root,
            b"tmp",
            NodeKind::Symlink(b"var/tmp".to_vec()),
            Metadata::new(0o777, 0, 0, Timestamp::default()),
        )
        .unwrap();
        inject(&mut tree, Timestamp::new(5, 0)).unwrap();

        for name in [&b"proc"[..], b"sys", b"dev", b"run"] {
            let node = tree.node(tree.lookup(root, name).unwrap());
            assert!(node.kind.is_directory(), "{name:?}");
            assert_eq!(node.metadata.permissions, 0o755);
            assert_eq!(node.metadata.mtime, Timestamp::new(5, 0));
        }
        let tmp = tree.node(tree.lookup(root, b"tmp").unwrap());
        assert!(
            matches!(tmp.kind, NodeKind::Symlink(_)),
            "an existing /tmp stays"
        );
        assert_eq!(
            tree.node(root).metadata.permissions,
            0o700,
            "the root keeps its mode"
        );
    }

    #[test]
    fn inject_makes_tmp_sticky() {
        let mut tree = Tree::new(Metadata::new(0o755, 0, 0, Timestamp::default()));
        inject(&mut tree, Timestamp::default()).unwrap();
        let tmp = tree.node(tree.lookup(tree.root(), b"tmp").unwrap());
        assert_eq!(tmp.metadata.permissions, 0o1777);
    }

    #[test]
    fn seed_depends_on_identity() {
        assert_eq!(seed_for("sha256:aa"), seed_for("sha256:aa"));
        assert_ne!(seed_for("sha256:aa"), seed_for("sha256:ab"));
    }
}
