//! Built images: `<data>/images/<manifest-hex>/` with `rootfs.ext4` and
//! `image.json` (references, config, layers, size, creation time).
//!
//! An image directory appears only by rename from a temporary directory
//! that already contains both files, so a reader never sees half an image.
//! Record updates (tags moving between images, removals) run under an
//! exclusive `flock` on `<data>/images/.lock`, and builds of one digest
//! under `.build-<hex>.lock`. Pulls hold a shared lock on
//! `.pull.lock` from their first download to their record, and prune takes
//! it exclusively, so prune never deletes the blobs of a running pull.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use rustix::fs::{flock, FlockOperation};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::error::{Classify, ExitCode};
use crate::image::blob_cache::{BlobCache, CacheError};
use crate::image::build::INJECTED_VERSION;
use crate::image::model::{Digest, ImageConfig, LayerBlob, PulledImage};

/// A new image for the store to record, from a pull or an import.
#[derive(Clone, Debug)]
pub struct NewImage {
    /// Manifest digest (pull, OCI layout), or the config digest when the
    /// source has no manifest (docker archive, root-filesystem tar).
    pub digest: Digest,
    pub config_digest: Digest,
    pub config: ImageConfig,
    /// Layers, oldest first.
    pub layers: Vec<LayerBlob>,
}

impl From<&PulledImage> for NewImage {
    fn from(pulled: &PulledImage) -> Self {
        Self {
            digest: pulled.manifest_digest.clone(),
            config_digest: pulled.config_digest.clone(),
            config: pulled.config.clone(),
            layers: pulled.layers.clone(),
        }
    }
}
use crate::image::reference::ImageReference;

/// Version of the root filesystem banger builds. An image built with another
/// version, or with another [`INJECTED_VERSION`], is rebuilt on the next
/// pull of its digest.
// NOTE: bump this when the ext4 writer changes what a build produces;
// changes to the injected files bump `INJECTED_VERSION` instead.
pub const ROOTFS_FORMAT_VERSION: u32 = 1;

/// File name of the root filesystem in an image directory.
pub const ROOTFS_FILE: &str = "rootfs.ext4";

/// File name of the record in an image directory.
pub const RECORD_FILE: &str = "image.json";

/// Minimum number of hex characters accepted as a digest prefix, the length `docker` shows.
const MIN_DIGEST_PREFIX: usize = 12;

/// Prefix of temporary directories and files in the store.
const TEMP_PREFIX: &str = ".tmp-";

/// The record of one stored image (`image.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub manifest_digest: Digest,
    /// Normalized references that point at this image, such as
    /// `docker.io/library/debian:bookworm`; empty for a dangling image.
    pub references: Vec<String>,
    /// Platform the manifest was selected for, as `os/arch[/variant]`.
    pub platform: String,
    pub config_digest: Digest,
    pub config: ImageConfig,
    /// Layers, oldest first.
    pub layers: Vec<LayerBlob>,
    pub rootfs_format_version: u32,
    /// Version of the files banger injected into the root filesystem.
    #[serde(default)]
    pub injected_version: u32,
    /// Size of `rootfs.ext4` in bytes (its apparent size, holes included).
    pub rootfs_size: u64,
    /// When banger built this image.
    pub created: DateTime<Utc>,
}

/// Errors of the image store, each naming the image or file involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("failed to {action} `{path}`: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("invalid image record `{path}`: {source}; remove the image directory and pull the image again")]
    InvalidRecord {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("image `{query}` not found; `banger image ls` lists the stored images")]
    NotFound { query: String },
    #[error(
        "image `{query}` is broken: {reason}; run `banger image rm {query}` and pull it again"
    )]
    Broken {
        query: String,
        path: PathBuf,
        reason: String,
    },
    #[error("image `{query}` is ambiguous: it matches {}; give more digest characters", matches.join(", "))]
    Ambiguous { query: String, matches: Vec<String> },
    #[error("a pull or import is running; run `banger image prune` again after it finishes")]
    Busy,
    #[error("failed to build the root filesystem of {reference}: {message}")]
    Build {
        reference: String,
        message: String,
        code: ExitCode,
    },
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("cannot export to `{path}`: it exists and is not a regular file; name a new file or a regular file to replace")]
    ExportTarget { path: PathBuf },
}

impl Classify for StoreError {
    fn exit_code(&self) -> ExitCode {
        match self {
            Self::NotFound { .. } | Self::Broken { .. } => ExitCode::NotFound,
            Self::Ambiguous { .. } => ExitCode::Usage,
            Self::Busy => ExitCode::Conflict,
            Self::ExportTarget { .. } => ExitCode::Usage,
            Self::Build { code, .. } => *code,
            Self::Io { .. } | Self::Cache(_) => ExitCode::HostResource,
            Self::InvalidRecord { .. } => ExitCode::General,
        }
    }
}

/// A root filesystem build that failed, with the exit code it maps to.
#[derive(Debug)]
pub struct BuildFailure {
    pub message: String,
    pub code: ExitCode,
}

/// Outcome of [`ImageStore::remove`].
#[derive(Debug, PartialEq, Eq)]
pub enum Removal {
    /// The reference was dropped; other references keep the image.
    Untagged { reference: String },
    /// The image and its root filesystem were deleted.
    Deleted { digest: Digest },
}

/// Images and blobs deleted by [`ImageStore::prune`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub images_removed: Vec<Digest>,
    /// Image directories whose record or root filesystem was unusable.
    pub broken_removed: Vec<PathBuf>,
    /// Temporary files and directories and lock files that no live process
    /// held, in the store and the cache.
    pub leftovers_removed: Vec<PathBuf>,
    pub blobs_removed: Vec<Digest>,
    pub bytes_freed: u64,
}

/// A shared lock held by a pull or import until its record is written.
#[derive(Debug)]
pub struct PullGuard {
    _lock: File,
}

/// The image store under `<data>/images`.
#[derive(Clone, Debug)]
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    /// Opens the store under `data_dir` (such as `/var/lib/banger`), creating
    /// `<data_dir>/images` when missing.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let root = data_dir.join("images");
        fs::create_dir_all(&root).map_err(io_error("create", &root))?;
        Ok(Self { root })
    }

    /// Returns the directory of the image with `digest`.
    pub fn image_dir(&self, digest: &Digest) -> PathBuf {
        self.root.join(digest.hex())
    }

    /// Returns the root filesystem path of the image with `digest`.
    pub fn rootfs_path(&self, digest: &Digest) -> PathBuf {
        self.image_dir(digest).join(ROOTFS_FILE)
    }

    /// Takes the shared lock that keeps prune away while a pull writes blobs
    /// and its record.
    pub fn begin_pull(&self) -> Result<PullGuard, StoreError> {
        let lock = self.lock_file(".pull.lock", FlockOperation::LockShared)?;
        Ok(PullGuard { _lock: lock })
    }

    /// Reads the record of `digest`, or `None` when no such image is stored.
    pub fn get(&self, digest: &Digest) -> Result<Option<ImageRecord>, StoreError> {
        read_record(&self.image_dir(digest).join(RECORD_FILE))
    }

    /// Lists every usable stored image, sorted by creation time, newest
    /// first. Broken image directories are skipped with a warning.
    pub fn list(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let (records, broken) = self.scan()?;
        for image in &broken {
            warn!(
                "skipping broken image `{}`: {}; `banger image prune` removes it",
                image.dir.display(),
                image.reason
            );
        }
        Ok(records)
    }

    /// Reads every image directory: usable records, sorted newest first, and
    /// the directories whose record is missing or invalid, names another
    /// digest, or whose `rootfs.ext4` is gone.
    fn scan(&self) -> Result<(Vec<ImageRecord>, Vec<BrokenImage>), StoreError> {
        let entries = fs::read_dir(&self.root).map_err(io_error("list", &self.root))?;
        let mut records = Vec::new();
        let mut broken = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error("list", &self.root))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !entry.path().is_dir() {
                continue;
            }
            let dir = entry.path();
            let name_digest = format!("sha256:{name}").parse::<Digest>().ok();
            let broken_image = |reason: String, record: Option<ImageRecord>| BrokenImage {
                digest: name_digest
                    .clone()
                    .or_else(|| record.as_ref().map(|r| r.manifest_digest.clone())),
                dir: dir.clone(),
                reason,
                record,
            };
            let record = match read_record(&dir.join(RECORD_FILE)) {
                Ok(Some(record)) => record,
                Ok(None) => {
                    broken.push(broken_image(format!("{RECORD_FILE} is missing"), None));
                    continue;
                }
                Err(error @ StoreError::InvalidRecord { .. }) => {
                    broken.push(broken_image(error.to_string(), None));
                    continue;
                }
                Err(error) => return Err(error),
            };
            if record.manifest_digest.hex() != name {
                let reason = format!("{RECORD_FILE} names image {}", record.manifest_digest);
                broken.push(broken_image(reason, Some(record)));
                continue;
            }
            let rootfs = dir.join(ROOTFS_FILE);
            if !rootfs.is_file() {
                let reason = format!("root filesystem `{}` is missing", rootfs.display());
                broken.push(broken_image(reason, Some(record)));
                continue;
            }
            records.push(record);
        }
        records.sort_by_key(|r| std::cmp::Reverse(r.created));
        Ok((records, broken))
    }

    /// Finds an image by reference (`debian:bookworm`), digest
    /// (`sha256:<hex>`) or a digest prefix of at least 12 hex characters.
    pub fn find(&self, query: &str) -> Result<ImageRecord, StoreError> {
        let (records, broken) = self.scan()?;
        let not_found = || match broken.iter().find(|image| image.matches(query)) {
            Some(image) => StoreError::Broken {
                query: query.to_owned(),
                path: image.dir.clone(),
                reason: image.reason.clone(),
            },
            None => StoreError::NotFound {
                query: query.to_owned(),
            },
        };

        if let Ok(digest) = query.parse::<Digest>() {
            return records
                .into_iter()
                .find(|r| r.manifest_digest == digest)
                .ok_or_else(not_found);
        }
        if let Some(prefix) = digest_prefix(query) {
            let mut matches: Vec<ImageRecord> = records
                .iter()
                .filter(|r| r.manifest_digest.hex().starts_with(&prefix))
                .cloned()
                .collect();
            match matches.len() {
                0 => {}
                1 => return Ok(matches.remove(0)),
                _ => {
                    return Err(StoreError::Ambiguous {
                        query: query.to_owned(),
                        matches: matches
                            .iter()
                            .map(|r| r.manifest_digest.to_string())
                            .collect(),
                    })
                }
            }
        }
        let Ok(reference) = ImageReference::parse(query) else {
            return Err(not_found());
        };
        // A reference pinned by digest (`debian@sha256:…`) finds the image
        // with that manifest digest, whatever name it was pulled under.
        if let Some(digest) = reference.digest() {
            return records
                .into_iter()
                .find(|r| &r.manifest_digest == digest)
                .ok_or_else(not_found);
        }
        let name = reference.to_string();
        records
            .into_iter()
            .find(|r| r.references.contains(&name))
            .ok_or_else(not_found)
    }

    /// Stores `image` under `reference`: reuses the built image when its
    /// digest and format version are already stored, otherwise calls
    /// `build` with the path of a new `rootfs.ext4` to write. The reference
    /// moves to this image from any other; with no reference the image is
    /// stored untagged.
    pub fn install(
        &self,
        image: impl Into<NewImage>,
        reference: Option<&str>,
        platform: &str,
        build: impl FnOnce(&Path) -> Result<(), BuildFailure>,
    ) -> Result<ImageRecord, StoreError> {
        let image = image.into();
        let digest = &image.digest;
        let label = reference.unwrap_or("the imported image");
        // One build per digest at a time: a second pull of the same image
        // waits here and then reuses the first one's build.
        let _build_lock = self.lock_file(
            &format!(".build-{}.lock", digest.hex()),
            FlockOperation::LockExclusive,
        )?;
        if let Some(record) = self.get(digest)? {
            let rootfs_ok =
                fs::metadata(self.rootfs_path(digest)).is_ok_and(|m| m.len() == record.rootfs_size);
            let current = record.rootfs_format_version == ROOTFS_FORMAT_VERSION
                && record.injected_version == INJECTED_VERSION;
            if current && rootfs_ok {
                debug!(%digest, "image already built; reusing it");
                return match reference {
                    Some(reference) => self.tag(digest, reference),
                    None => Ok(record),
                };
            }
            debug!(%digest, version = record.rootfs_format_version, "rebuilding image");
        }

        let temp = tempfile::Builder::new()
            .prefix(&format!("{TEMP_PREFIX}{}-", digest.hex()))
            .tempdir_in(&self.root)
            .map_err(io_error("create a temporary directory in", &self.root))?;
        // tempfile creates the directory 0700; a stored image is readable.
        fs::set_permissions(temp.path(), fs::Permissions::from_mode(0o755))
            .map_err(io_error("set permissions of", temp.path()))?;
        let rootfs = temp.path().join(ROOTFS_FILE);
        build(&rootfs).map_err(|failure| StoreError::Build {
            reference: label.to_owned(),
            message: failure.message,
            code: failure.code,
        })?;
        let rootfs_file = File::open(&rootfs).map_err(io_error("open", &rootfs))?;
        rootfs_file.sync_all().map_err(io_error("fsync", &rootfs))?;
        let rootfs_size = rootfs_file
            .metadata()
            .map_err(io_error("inspect", &rootfs))?
            .len();

        let record = ImageRecord {
            manifest_digest: digest.clone(),
            references: Vec::new(),
            platform: platform.to_owned(),
            config_digest: image.config_digest.clone(),
            config: image.config.clone(),
            layers: image.layers.clone(),
            rootfs_format_version: ROOTFS_FORMAT_VERSION,
            injected_version: INJECTED_VERSION,
            rootfs_size,
            created: DateTime::<Utc>::from(std::time::SystemTime::now()),
        };
        write_record(&temp.path().join(RECORD_FILE), &record)?;

        let _lock = self.lock_file(".lock", FlockOperation::LockExclusive)?;
        let final_dir = self.image_dir(digest);
        if final_dir.exists() {
            // A rename cannot replace a non-empty directory, so the old
            // build moves aside first.
            let old = self.root.join(format!("{TEMP_PREFIX}old-{}", digest.hex()));
            let _ = fs::remove_dir_all(&old);
            fs::rename(&final_dir, &old).map_err(io_error("move aside", &final_dir))?;
            fs::remove_dir_all(&old).map_err(io_error("remove", &old))?;
        }
        let temp_path = temp.keep();
        fs::rename(&temp_path, &final_dir).map_err(io_error("rename into place", &final_dir))?;
        sync_dir(&self.root)?;
        debug!(%digest, rootfs_size, "image stored");
        match reference {
            Some(reference) => self.tag_locked(digest, reference),
            None => self.get(digest)?.ok_or_else(|| StoreError::NotFound {
                query: digest.to_string(),
            }),
        }
    }

    /// Points `reference` at the image with `digest`, removing it from any
    /// other image.
    pub fn tag(&self, digest: &Digest, reference: &str) -> Result<ImageRecord, StoreError> {
        let _lock = self.lock_file(".lock", FlockOperation::LockExclusive)?;
        self.tag_locked(digest, reference)
    }

    fn tag_locked(&self, digest: &Digest, reference: &str) -> Result<ImageRecord, StoreError> {
        for mut other in self.list()? {
            if &other.manifest_digest != digest && other.references.iter().any(|r| r == reference) {
                other.references.retain(|r| r != reference);
                self.save(&other)?;
            }
        }
        let mut record = self.get(digest)?.ok_or_else(|| StoreError::NotFound {
            query: digest.to_string(),
        })?;
        if !record.references.iter().any(|r| r == reference) {
            record.references.push(reference.to_owned());
            record.references.sort();
            self.save(&record)?;
        }
        Ok(record)
    }

    /// Removes `query`: a reference is dropped from its image, and the image
    /// is deleted when no reference is left; a digest deletes the image.
    pub fn remove(&self, query: &str) -> Result<Removal, StoreError> {
        let _lock = self.lock_file(".lock", FlockOperation::LockExclusive)?;
        let mut record = match self.find(query) {
            Ok(record) => record,
            Err(StoreError::Broken { path, .. }) => {
                let (_, broken) = self.scan()?;
                let image = broken
                    .into_iter()
                    .find(|image| image.dir == path)
                    .ok_or_else(|| StoreError::NotFound {
                        query: query.to_owned(),
                    })?;
                self.delete_dir(&image.dir)?;
                // `matches` only accepts images whose digest is known.
                let digest = image.digest.expect("matched broken image has a digest");
                return Ok(Removal::Deleted { digest });
            }
            Err(error) => return Err(error),
        };
        let by_reference = ImageReference::parse(query)
            .ok()
            .map(|r| r.to_string())
            .filter(|name| record.references.contains(name));

        if let Some(name) = by_reference {
            record.references.retain(|r| r != &name);
            if !record.references.is_empty() {
                self.save(&record)?;
                return Ok(Removal::Untagged { reference: name });
            }
        }
        self.delete_image(&record.manifest_digest)?;
        Ok(Removal::Deleted {
            digest: record.manifest_digest,
        })
    }

    /// Deletes images without references, then every cached blob that no
    /// stored image uses, and the cache's index entries of deleted manifests.
    /// Also deletes temporary files and lock files left by killed processes.
    /// Fails with [`StoreError::Busy`] while a pull holds its lock on this
    /// store or on the cache, which pulls into other data directories share.
    pub fn prune(&self, cache: &BlobCache) -> Result<PruneReport, StoreError> {
        let _pulls = self.try_lock_file(".pull.lock")?.ok_or(StoreError::Busy)?;
        let _cache_pulls = cache.try_lock_for_prune()?.ok_or(StoreError::Busy)?;
        let _lock = self.lock_file(".lock", FlockOperation::LockExclusive)?;
        let mut report = PruneReport::default();

        let (records, broken) = self.scan()?;
        for image in broken {
            warn!(
                "removing broken image `{}`: {}",
                image.dir.display(),
                image.reason
            );
            self.delete_dir(&image.dir)?;
            report.broken_removed.push(image.dir);
        }
        let mut referenced = Vec::new();
        for record in records {
            if record.references.is_empty() {
                report.bytes_freed += record.rootfs_size;
                self.delete_image(&record.manifest_digest)?;
                report.images_removed.push(record.manifest_digest);
            } else {
                referenced.push(record);
            }
        }
        report.leftovers_removed.extend(self.remove_stale_temps()?);
        let leftovers = cache.remove_leftovers()?;
        report.bytes_freed += leftovers.bytes_freed;
        report.leftovers_removed.extend(leftovers.temp_files);
        report.leftovers_removed.extend(leftovers.lock_files);

        let mut used = std::collections::HashSet::new();
        for record in &referenced {
            used.insert(record.manifest_digest.clone());
            used.insert(record.config_digest.clone());
            used.extend(record.layers.iter().map(|l| l.digest.clone()));
        }
        for digest in cache.list_blobs()? {
            if !used.contains(&digest) {
                report.bytes_freed += cache.remove_blob(&digest)?;
                report.blobs_removed.push(digest);
            }
        }
        cache.untag_missing()?;
        Ok(report)
    }

    /// Copies the root filesystem of `query` to `output` through a temporary
    /// file in the same directory, keeping its holes. Returns the file size.
    pub fn export(&self, query: &str, output: &Path) -> Result<u64, StoreError> {
        let record = self.find(query)?;
        let source = self.rootfs_path(&record.manifest_digest);
        // The export replaces the output by a rename, which would swap a
        // device node such as /dev/null, or a symlink, for a regular file.
        if let Ok(existing) = fs::symlink_metadata(output) {
            if !existing.file_type().is_file() {
                return Err(StoreError::ExportTarget {
                    path: output.to_owned(),
                });
            }
        }
        let dir = match output.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .permissions(fs::Permissions::from_mode(0o644))
            .tempfile_in(dir)
            .map_err(io_error("create a temporary file in", dir))?;
        let source_file = File::open(&source).map_err(io_error("open", &source))?;
        let copied =
            copy_sparse(&source_file, temp.as_file()).map_err(io_error("copy", &source))?;
        temp.as_file()
            .sync_all()
            .map_err(io_error("fsync", temp.path()))?;
        temp.persist(output).map_err(|error| StoreError::Io {
            action: "write",
            path: output.to_owned(),
            source: error.error,
        })?;
        Ok(copied)
    }

    fn save(&self, record: &ImageRecord) -> Result<(), StoreError> {
        write_record(
            &self.image_dir(&record.manifest_digest).join(RECORD_FILE),
            record,
        )
    }

    fn delete_image(&self, digest: &Digest) -> Result<(), StoreError> {
        self.delete_dir(&self.image_dir(digest))?;
        debug!(%digest, "image deleted");
        Ok(())
    }

    /// Deletes an image directory, renaming it first so that readers see it
    /// whole or not at all.
    fn delete_dir(&self, dir: &Path) -> Result<(), StoreError> {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        let doomed = self.root.join(format!("{TEMP_PREFIX}rm-{name}"));
        let _ = fs::remove_dir_all(&doomed);
        fs::rename(dir, &doomed).map_err(io_error("move aside", dir))?;
        fs::remove_dir_all(&doomed).map_err(io_error("remove", &doomed))?;
        Ok(())
    }

    /// Deletes temporary directories and per-image build locks. Only prune
    /// calls it, holding `.pull.lock` exclusively, so no pull or import of
    /// this store is running and none of them belongs to a live process.
    /// Returns the paths removed.
    fn remove_stale_temps(&self) -> Result<Vec<PathBuf>, StoreError> {
        let entries = fs::read_dir(&self.root).map_err(io_error("list", &self.root))?;
        let mut removed = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let result = if name.starts_with(TEMP_PREFIX) {
                if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                }
            } else if name.starts_with(".build-") && name.ends_with(".lock") {
                fs::remove_file(&path)
            } else {
                continue;
            };
            match result {
                Ok(()) => removed.push(path),
                Err(error) => {
                    warn!(path = ?path, %error, "failed to remove a leftover temporary file")
                }
            }
        }
        Ok(removed)
    }

    fn open_lock(&self, name: &str) -> Result<File, StoreError> {
        let path = self.root.join(name);
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o644)
            .open(&path)
            .map_err(io_error("open lock file", &path))
    }

    fn lock_file(&self, name: &str, operation: FlockOperation) -> Result<File, StoreError> {
        let file = self.open_lock(name)?;
        flock(&file, operation).map_err(|errno| StoreError::Io {
            action: "lock",
            path: self.root.join(name),
            source: errno.into(),
        })?;
        Ok(file)
    }

    fn try_lock_file(&self, name: &str) -> Result<Option<File>, StoreError> {
        let file = self.open_lock(name)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(file)),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(errno) => Err(StoreError::Io {
                action: "lock",
                path: self.root.join(name),
                source: errno.into(),
            }),
        }
    }
}

/// An image directory that cannot be used, found by [`ImageStore::scan`].
#[derive(Debug)]
struct BrokenImage {
    dir: PathBuf,
    /// Digest from the directory name, or else from a readable record.
    digest: Option<Digest>,
    reason: String,
    record: Option<ImageRecord>,
}

impl BrokenImage {
    /// Tells whether `query` (digest, digest prefix or reference) names this
    /// image, as [`ImageStore::find`] matches usable images.
    fn matches(&self, query: &str) -> bool {
        let Some(digest) = &self.digest else {
            return false;
        };
        if let Ok(wanted) = query.parse::<Digest>() {
            return &wanted == digest;
        }
        if let Some(prefix) = digest_prefix(query) {
            return digest.hex().starts_with(&prefix);
        }
        let Ok(reference) = ImageReference::parse(query) else {
            return false;
        };
        if let Some(wanted) = reference.digest() {
            return wanted == digest;
        }
        let name = reference.to_string();
        self.record
            .as_ref()
            .is_some_and(|record| record.references.contains(&name))
    }
}

/// Returns the lowercase hex of a digest prefix query: at least 12 hex
/// characters, with or without `sha256:` in front.
fn digest_prefix(query: &str) -> Option<String> {
    let hex = query.strip_prefix("sha256:").unwrap_or(query);
    let is_hex = hex.bytes().all(|b| b.is_ascii_hexdigit());
    (is_hex && hex.len() >= MIN_DIGEST_PREFIX).then(|| hex.to_ascii_lowercase())
}

impl ImageRecord {
    /// Formats the creation time as `YYYY-MM-DDTHH:MM:SSZ`.
    pub fn created_text(&self) -> String {
        self.created.to_rfc3339_opts(SecondsFormat::Secs, true)
    }
}

/// Copies `source` to the empty file `target` extent by extent, so holes in
/// the source stay holes. Returns the size of the source.
fn copy_sparse(source: &File, target: &File) -> io::Result<u64> {
    let size = source.metadata()?.len();
    let mut offset = 0;
    while offset < size {
        let data_start = match rustix::fs::seek(source, rustix::fs::SeekFrom::Data(offset)) {
            Ok(start) => start,
            // ENXIO: no data after `offset`, only a trailing hole.
            Err(rustix::io::Errno::NXIO) => break,
            Err(errno) => return Err(errno.into()),
        };
        let data_end = rustix::fs::seek(source, rustix::fs::SeekFrom::Hole(data_start))?;

        copy_range(source, target, data_start, data_end)?;
        offset = data_end;
    }
    target.set_len(size)?;
    Ok(size)
}

/// Copies bytes `start..end` between the same offsets of two files, with
/// `copy_file_range` where the kernel supports it for this pair of files
/// (Linux 5.19 and later reject most pairs on different filesystems) and
/// positioned reads and writes otherwise.
fn copy_range(source: &File, target: &File, start: u64, end: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;

    let shrank = || {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "source file shrank while it was copied",
        )
    };
    let mut read_offset = start;
    let mut write_offset = start;
    while read_offset < end {
        let chunk = usize::try_from(end - read_offset).unwrap_or(usize::MAX);
        match rustix::fs::copy_file_range(
            source,
            Some(&mut read_offset),
            target,
            Some(&mut write_offset),
            chunk,
        ) {
            Ok(0) => return Err(shrank()),
            Ok(_) => {}
            Err(
                rustix::io::Errno::XDEV
                | rustix::io::Errno::NOSYS
                | rustix::io::Errno::OPNOTSUPP
                | rustix::io::Errno::INVAL,
            ) => break,
            Err(errno) => return Err(errno.into()),
        }
    }

    let mut buffer = vec![0u8; 1 << 20];
    while read_offset < end {
        let want = usize::try_from(end - read_offset).map_or(buffer.len(), |n| n.min(buffer.len()));
        let read = source.read_at(&mut buffer[..want], read_offset)?;
        if read == 0 {
            return Err(shrank());
        }
        target.write_all_at(&buffer[..read], read_offset)?;
        read_offset += read as u64;
    }
    Ok(())
}

fn read_record(path: &Path) -> Result<Option<ImageRecord>, StoreError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Io {
                action: "read",
                path: path.to_owned(),
                source,
            })
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| StoreError::InvalidRecord {
            path: path.to_owned(),
            source,
        })
}

/// Replaces the record at `path` through a temporary file and a rename.
fn write_record(path: &Path, record: &ImageRecord) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .permissions(fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)
        .map_err(io_error("create a temporary file in", dir))?;
    // Serializing plain data with string keys cannot fail.
    let json = serde_json::to_vec_pretty(record).expect("image record serializes");
    temp.write_all(&json)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(io_error("write", path))?;
    temp.persist(path).map_err(|error| StoreError::Io {
        action: "rename into place",
        path: path.to_owned(),
        source: error.error,
    })?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("fsync", dir))
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::model::RootFs;

    /// A stand-in for the ext4 build, which the store treats as opaque bytes.
    fn write_bytes(content: &'static [u8]) -> impl FnOnce(&Path) -> Result<(), BuildFailure> {
        move |path| {
            fs::write(path, content).map_err(|e| BuildFailure {
                message: e.to_string(),
                code: ExitCode::General,
            })
        }
    }

    fn pulled(name: &str, tag_seed: &[u8], cache: &BlobCache) -> PulledImage {
        let layer = [tag_seed, b"-layer"].concat();
        let config = [tag_seed, b"-config"].concat();
        let manifest = [tag_seed, b"-manifest"].concat();
        for blob in [&layer, &config, &manifest] {
            cache.write_verified(&Digest::of(blob), blob).unwrap();
        }
        PulledImage {
            reference: ImageReference::parse(name).unwrap(),
            manifest_digest: Digest::of(&manifest),
            manifest,
            config_digest: Digest::of(&config),
            config: ImageConfig {
                architecture: "amd64".into(),
                os: "linux".into(),
                rootfs: RootFs {
                    kind: "layers".into(),
                    diff_ids: vec![Digest::of(b"diff")],
                },
                ..ImageConfig::default()
            },
            layers: vec![LayerBlob {
                digest: Digest::of(&layer),
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                size: layer.len() as u64,
            }],
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        store: ImageStore,
        cache: BlobCache,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&dir.path().join("data")).unwrap();
        let cache = BlobCache::open(dir.path().join("cache/oci")).unwrap();
        Fixture {
            _dir: dir,
            store,
            cache,
        }
    }

    const DEBIAN: &str = "docker.io/library/debian:bookworm";

    #[test]
    fn install_writes_rootfs_and_record() {
        let f = fixture();
        let image = pulled("debian:bookworm", b"a", &f.cache);
        let record = f
            .store
            .install(&image, Some(DEBIAN), "linux/amd64", write_bytes(b"ext4"))
            .unwrap();

        assert_eq!(record.references, [DEBIAN]);
        assert_eq!(record.rootfs_size, 4);
        assert_eq!(record.rootfs_format_version, ROOTFS_FORMAT_VERSION);
        let rootfs = f.store.rootfs_path(&image.manifest_digest);
        assert_eq!(fs::read(rootfs).unwrap(), b"ext4");
        assert_eq!(f.store.get(&image.manifest_digest).unwrap(), Some(record));
    }

    #[test]
    fn second_install_reuses_the_build() {
        let f = fixture();
        let image = pulled("debian:bookworm", b"a", &f.cache);
        f.store
            .install(&image, Some(DEBIAN), "linux/amd64", write_bytes(b"ext4"))
            .unwrap();
        let record = f
            .store
            .install(
                &image,
                Some("docker.io/library/debian:12"),
                "linux/amd64",
                |_| panic!("the stored build was not reused"),
            )
            .unwrap();
        assert_eq!(record.references, ["docker.io/library/debian:12", DEBIAN]);
    }

    #[test]
    fn other_format_version_is_rebuilt() {
        let f = fixture();
        let image = pulled("debian:bookworm", b"a", &f.cache);
        let mut record = f
            .store
            .install(&image, Some(DEBIAN), "linux/amd64", write_bytes(b"old"))
            .unwrap();
        record.rootfs_format_version = ROOTFS_FORMAT_VERSION + 1;
        f.store.save(&record).unwrap();

        let rebuilt = f
            .store
            .install(&image, Some(DEBIAN), "linux/amd64", write_bytes(b"newer"))
            .unwrap();
        assert_eq!(rebuilt.rootfs_format_version, ROOTFS_FORMAT_VERSION);
        assert_eq!(
            fs::read(f.store.rootfs_path(&image.manifest_digest)).unwrap(),
            b"newer"
        );
    }

    #[test]
    fn failed_build_leaves_nothing() {
        let f = fixture();
        let image = pulled("debian:bookworm", b"a", &f.cache);
        let error = f
            .store
            .install(&image, Some(DEBIAN), "linux/amd64", |path| {
                fs::write(path, b"partial").unwrap();
                Err(BuildFailure {
                    message: "writer failed".into(),
                    code: ExitCode::General,
                })
            })
            .unwrap_err();
        assert!(error.to_string().contains("writer failed"), "{error}");
        let names: Vec<_> = fs::read_dir(&f.store.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".lock"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn tag_moves_to_the_new_digest() {
        let f = fixture();
        let old = pulled("debian:bookworm", b"old", &f.cache);
        let new = pulled("debian:bookworm", b"new", &f.cache);
        f.store
            .install(&old, Some(DEBIAN), "linux/amd64", write_bytes(b"1"))
            .unwrap();
        f.store
            .install(&new, Some(DEBIAN), "linux/amd64", write_bytes(b"2"))
            .unwrap();

        let old_record = f.store.get(&old.manifest_digest).unwrap().unwrap();
        assert!(old_record.references.is_empty());
        assert_eq!(
            f.store.find("debian:bookworm").unwrap().manifest_digest,
            new.manifest_digest
        );
    }

    #[test]
    fn find_by_reference_digest_and_prefix() {
        let f = fixture();
        let image = pulled("debian:bookworm", b"a", &f.cache);
        f.store
            .install(&image, Some(DEBIAN), "linux/amd64", write_bytes(b"x"))
            .unwrap();
        let digest = &image.manifest_digest;

        for query in [
            "debian:bookworm".to_owned(),
            DEBIAN.to_owned(),
            digest.to_string(),
            digest.hex()[..12].to_owned(),
        ] {
            assert_eq!(
                &f.store.find(&query).unwrap().manifest_digest,
                digest,
                "{query}"
            );
        }
        let error = f.store.find("debian:trixie").unwrap_err();
        assert!(matches!(error, StoreError::NotFound { .. }), "{error}");
        assert_eq!(error.exit_code(), ExitCode::NotFound);
        assert!(
            f.store.find(&digest.hex()[..6]).is_err(),
            "short prefix accepted"
        );
    }

    #[test]
    fn remove_untags_then_deletes() {
        let f = fixture();
        let image = pulled("debian:bookworm", b"a", &f.cache);
        f.store
            .install(&image, Some(DEBIAN), "linux/amd64", write_bytes(b"x"))
            .unwrap();
        f.store
            .tag(&image.manifest_digest, "docker.io/library/debian:12")
            .unwrap();

        let first = f.store.remove("debian:12").unwrap();
        assert_eq!(
            first,
            Removal::Untagged {
                reference: "docker.io/library/debian:12".into()
            }
        );
        assert!(f.store.image_dir(&image.manifest_digest).exists());

        let second = f.store.remove("debian:bookworm").unwrap();
        assert_eq!(
            second,
            Removal::Deleted {
                digest: image.manifest_digest.clone()
            }
        );
        assert!(!f.store.image_dir(&image.manifest_digest).exists());
    }

    #[test]
    fn prune_removes_dangling_images_and_unused_blobs() {
        let f = fixture();
        let old = pulled("debian:bookworm", b"old", &f.cache);
        let new = pulled("debian:bookworm", b"new", &f.cache);
        f.store
            .install(&old, Some(DEBIAN), "linux/amd64", write_bytes(b"1"))
            .unwrap();
        f.cache
            .tag_manifest(
                DEBIAN,
                "application/vnd.oci.image.manifest.v1+json",
                &old.manifest_digest,
                9,
            )
            .unwrap();
        f.store
            .install(&new, Some(DEBIAN), "linux/amd64", write_bytes(b"22"))
            .unwrap();
        let stray = Digest::of(b"stray");
        f.cache.write_verified(&stray, b"stray").unwrap();

        let report = f.store.prune(&f.cache).unwrap();
        assert_eq!(
            report.images_removed,
            std::slice::from_ref(&old.manifest_digest)
        );
        assert_eq!(report.blobs_removed.len(), 4, "{report:?}");
        assert!(report.blobs_removed.contains(&stray));
        assert!(!f.store.image_dir(&old.manifest_digest).exists());
        assert!(f.store.image_dir(&new.manifest_digest).exists());
        for digest in [
            &new.manifest_digest,
            &new.config_digest,
            &new.layers[0].digest,
        ] {
            assert!(f.cache.path(digest).exists(), "{digest} was pruned");
        }
        let index = fs::read_to_string(f.cache.root().join("index.json")).unwrap();
        assert!(!index.contains(old.manifest_digest.hex()), "{index}");
    }

    #[test]
    fn prune_waits_for_no_pull() {
        let f = fixture();
        let guard = f.store.begin_pull().unwrap();
        let error = f.store.prune(&f.cache).unwrap_err();
        assert!(matches!(error, StoreError::Busy), "{error}");
        assert_eq!(error.exit_code(), ExitCode::Conflict);
        drop(guard);
        f.store.prune(&f.cache).unwrap();
    }

    #[test]
    fn prune_waits_for_pull_of_another_store() {
        let f = fixture();
        // A pull into another data directory that shares the cache.
        let other = ImageStore::open(&f._dir.path().join("other-data")).unwrap();
        let other_pull = other.begin_pull().unwrap();
        let cache_lock = f.cache.lock_for_pull().unwrap();
        let error = f.store.prune(&f.cache).unwrap_err();
        assert!(matches!(error, StoreError::Busy), "{error}");
        drop((cache_lock, other_pull));
        f.store.prune(&f.cache).unwrap();
    }

    #[test]
    fn prune_removes_store_leftovers() {
        let f = fixture();
        let temp_dir = f.store.root.join(format!("{TEMP_PREFIX}abc-XXXX"));
        fs::create_dir(&temp_dir).unwrap();
        let build_lock = f.store.root.join(".build-abc.lock");
        fs::write(&build_lock, b"").unwrap();

        let report = f.store.prune(&f.cache).unwrap();
        assert!(!temp_dir.exists());
        assert!(!build_lock.exists());
        assert!(report.leftovers_removed.contains(&temp_dir));
        assert!(report.leftovers_removed.contains(&build_lock));
    }

    #[test]
    fn export_copies_the_rootfs() {
        let f = fixture();
        let image = pulled("debian:bookworm", b"a", &f.cache);
        f.store
            .install(
                &image,
                Some(DEBIAN),
                "linux/amd64",
                write_bytes(b"ext4 bytes"),
            )
            .unwrap();
        let output = f._dir.path().join("out.ext4");
        let copied = f.store.export("debian:bookworm", &output).unwrap();
        assert_eq!(copied, 10);
        assert_eq!(fs::read(&output).unwrap(), b"ext4 bytes");
    }

    #[test]
    fn export_keeps_holes() {
        use std::os::unix::fs::MetadataExt;

        let f = fixture();
        let image = pulled("debian:bookworm", b"a", &f.cache);
        f.store
            .install(&image, Some(DEBIAN), "linux/amd64", |path| {
                // 64 MiB apparent size with 8 KiB of data at each end.
                let file = File::create(path).unwrap();
                file.set_len(64 << 20).unwrap();
                std::os::unix::fs::FileExt::write_all_at(&file, &[7u8; 8192], 0).unwrap();
                std::os::unix::fs::FileExt::write_all_at(&file, &[9u8; 8192], (64 << 20) - 8192)
                    .unwrap();
                Ok(())
            })
            .unwrap();
        let output = f._dir.path().join("sparse.ext4");
        let copied = f.store.export("debian:bookworm", &output).unwrap();

        assert_eq!(copied, 64 << 20);
        let meta = fs::metadata(&output).unwrap();
        assert_eq!(meta.len(), 64 << 20);
        assert!(
            meta.blocks() * 512 < 1 << 20,
            "holes were filled: {} blocks",
            meta.blocks()
        );
        let bytes = fs::read(&output).unwrap();
        assert!(bytes[..8192].iter().all(|&b| b == 7));
        assert!(bytes[8192..(64 << 20) - 8192].iter().all(|&b| b == 0));
        assert!(bytes[(64 << 20) - 8192..].iter().all(|&b| b == 9));
    }
}
