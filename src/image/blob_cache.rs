//! The verified blob cache, an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/<hex>`) that skopeo, umoci and crane can read.
//!
//! A blob reaches `blobs/sha256/<hex>` only by rename from a temporary file
//! in the same directory, after its size and sha256 were checked and the
//! data fsynced. Nothing else ever writes there, so a file under its digest
//! name contains the right bytes unless something outside banger changed it;
//! [`BlobCache::has`] also compares the size and treats a wrong one as
//! missing. Writers of one digest are serialized by an `flock` on a lock file
//! per digest, which works between processes and between handles of one
//! process. Pulls hold a shared `flock` on `.banger-locks/pulls` while they
//! write blobs and store their image, and prune takes it exclusively, so a
//! prune run with any data directory never deletes blobs a running pull
//! just wrote.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustix::fs::{flock, FlockOperation};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tracing::debug;

use super::model::Digest;

/// Annotation that names a manifest in `index.json`, as `oci:DIR:NAME` expects.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Pause between attempts to take a lock another writer holds.
const LOCK_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Prefix of temporary blob files; `.tmp-<hex>-<pid>-<n>`.
const TEMP_PREFIX: &str = ".tmp-";

/// Lock file that pulls hold shared and prune holds exclusively.
const PULLS_LOCK: &str = "pulls";

/// Lock file that serializes `index.json` updates.
const INDEX_LOCK: &str = "index.json";

/// Counter that keeps temporary names of one process apart.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Errors of the blob cache, each naming the file or digest involved.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("failed to {action} `{path}`: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("blob {digest} has {actual} bytes but its descriptor says {expected}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("blob {expected} has the wrong content: its sha256 is {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {digest} is longer than the {expected} bytes its descriptor says")]
    TooLong { digest: Digest, expected: u64 },
    #[error("invalid `{path}`: {reason}; delete the cache directory to rebuild it")]
    InvalidLayout { path: PathBuf, reason: String },
}

impl CacheError {
    fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Self + 'a {
        move |source| Self::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// A handle on a blob cache directory. Handles are cheap; several handles,
/// in one process or many, may use the same directory at once.
#[derive(Clone, Debug)]
pub struct BlobCache {
    root: PathBuf,
}

/// The outcome of [`BlobCache::begin_write`].
#[derive(Debug)]
pub enum BlobSlot {
    /// The blob is already in the cache with the expected size.
    Cached,
    /// The caller holds the digest's lock and must write the blob.
    Writer(Box<BlobWriter>),
}

/// A lock on the whole cache: shared by pulls, exclusive for prune.
#[derive(Debug)]
pub struct CacheLock {
    _lock: File,
}

/// Temporary blob files and lock files deleted by [`BlobCache::remove_leftovers`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    pub temp_files: Vec<PathBuf>,
    pub lock_files: Vec<PathBuf>,
    pub bytes_freed: u64,
}

impl BlobCache {
    /// Opens the OCI layout at `root` (such as `<cache>/oci`), creating the
    /// directory, `oci-layout` and an empty `index.json` when missing.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, CacheError> {
        let cache = Self { root: root.into() };
        let blobs = cache.blobs_dir();
        fs::create_dir_all(&blobs).map_err(CacheError::io("create", &blobs))?;
        let locks = cache.locks_dir();
        fs::create_dir_all(&locks).map_err(CacheError::io("create", &locks))?;

        let layout = cache.root.join("oci-layout");
        if !layout.exists() {
            write_atomically(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = cache.index_path();
        if !index.exists() {
            let _lock = cache.lock_blocking(INDEX_LOCK)?;
            if !index.exists() {
                let empty = json!({"schemaVersion": 2, "manifests": []});
                write_atomically(&index, empty.to_string().as_bytes())?;
            }
        }
        Ok(cache)
    }

    /// Takes the shared lock a pull holds while it writes blobs and stores
    /// its image, waiting while a prune runs.
    pub fn lock_for_pull(&self) -> Result<CacheLock, CacheError> {
        let lock = self.acquire(PULLS_LOCK, FlockOperation::LockShared)?;
        // A blocking flock either succeeds or fails with an error.
        let lock = lock.expect("a blocking lock is always taken");
        Ok(CacheLock { _lock: lock })
    }

    /// Takes the exclusive lock prune needs, or returns `None` while a pull
    /// holds it shared.
    pub fn try_lock_for_prune(&self) -> Result<Option<CacheLock>, CacheError> {
        let lock = self.acquire(PULLS_LOCK, FlockOperation::NonBlockingLockExclusive)?;
        Ok(lock.map(|lock| CacheLock { _lock: lock }))
    }

    /// Deletes temporary blob files and per-digest lock files that no live
    /// writer holds: a writer keeps its digest's `flock` for as long as its
    /// temporary file exists, so a lock taken here proves the file is
    /// left over from a killed process. Call it with
    /// [`BlobCache::try_lock_for_prune`] held.
    pub fn remove_leftovers(&self) -> Result<Leftovers, CacheError> {
        let mut leftovers = Leftovers::default();
        let blobs = self.blobs_dir();
        let entries = fs::read_dir(&blobs).map_err(CacheError::io("list", &blobs))?;
        for entry in entries {
            let entry = entry.map_err(CacheError::io("list", &blobs))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(TEMP_PREFIX) else {
                continue;
            };
            let hex = rest.split('-').next().unwrap_or_default();
            let lock_name = format!("sha256-{hex}");
            let Some(_lock) = self.acquire(&lock_name, FlockOperation::NonBlockingLockExclusive)?
            else {
                continue;
            };
            let path = entry.path();
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            match fs::remove_file(&path) {
                Ok(()) => {
                    leftovers.bytes_freed += size;
                    leftovers.temp_files.push(path);
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CacheError::Io {
                        action: "remove",
                        path,
                        source,
                    })
                }
            }
        }

        let locks = self.locks_dir();
        let entries = fs::read_dir(&locks).map_err(CacheError::io("list", &locks))?;
        for entry in entries {
            let entry = entry.map_err(CacheError::io("list", &locks))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == PULLS_LOCK || name == INDEX_LOCK {
                continue;
            }
            // Unlinking under the lock is safe because `acquire` checks,
            // after locking, that the path still names the file it locked.
            let Some(_lock) = self.acquire(&name, FlockOperation::NonBlockingLockExclusive)? else {
                continue;
            };
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => leftovers.lock_files.push(path),
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CacheError::Io {
                        action: "remove",
                        path,
                        source,
                    })
                }
            }
        }
        Ok(leftovers)
    }

    /// Returns the layout directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Returns where the blob with `digest` is stored, whether or not it is there.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// Checks whether the blob is cached with `size` bytes. A file of another size
    /// counts as missing and is replaced by the next write.
    pub fn has(&self, digest: &Digest, size: u64) -> Result<bool, CacheError> {
        let path = self.path(digest);
        match fs::metadata(&path) {
            Ok(meta) => Ok(meta.is_file() && meta.len() == size),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(CacheError::Io {
                action: "inspect",
                path,
                source,
            }),
        }
    }

    /// Opens a cached blob for reading. A missing blob is an
    /// [`io::ErrorKind::NotFound`] error, and nothing is created.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, CacheError> {
        let path = self.path(digest);
        File::open(&path).map_err(CacheError::io("open", &path))
    }

    /// Reads a small cached blob (a manifest or config) and checks its size
    /// and digest.
    pub fn read_verified(&self, digest: &Digest, size: u64) -> Result<Vec<u8>, CacheError> {
        let path = self.path(digest);
        let mut bytes = Vec::new();
        self.open_blob(digest)?
            .read_to_end(&mut bytes)
            .map_err(CacheError::io("read", &path))?;

        let actual_size = bytes.len() as u64;
        if actual_size != size {
            return Err(CacheError::SizeMismatch {
                digest: digest.clone(),
                expected: size,
                actual: actual_size,
            });
        }
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(CacheError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Hashes a cached blob and tells whether its bytes still match its
    /// digest. A missing blob is an [`io::ErrorKind::NotFound`] error.
    pub fn verify(&self, digest: &Digest) -> Result<bool, CacheError> {
        let path = self.path(digest);
        let mut file = self.open_blob(digest)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let read = file
                .read(&mut buffer)
                .map_err(CacheError::io("read", &path))?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
        Ok(Digest::from_sha256(&hasher.finalize()) == *digest)
    }

    /// Takes the digest's lock, waiting while another writer holds it, and
    /// returns [`BlobSlot::Cached`] when the blob arrived meanwhile or a
    /// writer otherwise.
    pub async fn begin_write(&self, digest: &Digest, size: u64) -> Result<BlobSlot, CacheError> {
        let lock = self.lock_polling(digest).await?;
        self.slot_under_lock(digest, size, lock)
    }

    /// Stores `bytes` under `digest` after checking size and digest; a
    /// blocking call for small blobs such as manifests.
    pub fn write_verified(&self, digest: &Digest, bytes: &[u8]) -> Result<(), CacheError> {
        let size = bytes.len() as u64;
        let lock = self.lock_blocking(&format!("sha256-{}", digest.hex()))?;
        match self.slot_under_lock(digest, size, lock)? {
            BlobSlot::Cached => Ok(()),
            BlobSlot::Writer(mut writer) => {
                writer.write(bytes)?;
                writer.finish()?;
                Ok(())
            }
        }
    }

    /// Records a manifest in `index.json` under `name`, replacing an earlier
    /// entry with that name, so that `skopeo inspect oci:ROOT:NAME` finds it.
    pub fn tag_manifest(
        &self,
        name: &str,
        media_type: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), CacheError> {
        let _lock = self.lock_blocking(INDEX_LOCK)?;
        let path = self.index_path();
        let text = fs::read_to_string(&path).map_err(CacheError::io("read", &path))?;
        let mut index: Value =
            serde_json::from_str(&text).map_err(|error| CacheError::InvalidLayout {
                path: path.clone(),
                reason: error.to_string(),
            })?;

        let manifests = index
            .get_mut("manifests")
            .and_then(Value::as_array_mut)
            .ok_or_else(|| CacheError::InvalidLayout {
                path: path.clone(),
                reason: "`manifests` is not an array".to_owned(),
            })?;
        manifests.retain(|entry| entry["annotations"][REF_NAME_ANNOTATION] != name);
        manifests.push(json!({
            "mediaType": media_type,
            "digest": digest.to_string(),
            "size": size,
            "annotations": {REF_NAME_ANNOTATION: name},
        }));
        write_atomically(&path, index.to_string().as_bytes())
    }

    /// Digests of every blob in the cache, skipping temporary files.
    pub fn list_blobs(&self) -> Result<Vec<Digest>, CacheError> {
        let dir = self.blobs_dir();
        let entries = fs::read_dir(&dir).map_err(CacheError::io("list", &dir))?;
        let mut digests = Vec::new();
        for entry in entries {
            let entry = entry.map_err(CacheError::io("list", &dir))?;
            let name = entry.file_name();
            if let Ok(digest) = format!("sha256:{}", name.to_string_lossy()).parse() {
                digests.push(digest);
            }
        }
        digests.sort();
        Ok(digests)
    }

    /// Deletes a cached blob under its lock. Returns the bytes freed, zero
    /// when the blob was not there.
    pub fn remove_blob(&self, digest: &Digest) -> Result<u64, CacheError> {
        let _lock = self.lock_blocking(&format!("sha256-{}", digest.hex()))?;
        let path = self.path(digest);
        let size = match fs::metadata(&path) {
            Ok(meta) => meta.len(),
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(source) => {
                return Err(CacheError::Io {
                    action: "inspect",
                    path,
                    source,
                })
            }
        };
        fs::remove_file(&path).map_err(CacheError::io("remove", &path))?;
        debug!(digest = %digest, size, "blob removed");
        Ok(size)
    }

    /// Drops `index.json` entries whose manifest blob is no longer cached.
    /// Returns how many were dropped.
    pub fn untag_missing(&self) -> Result<usize, CacheError> {
        let _lock = self.lock_blocking(INDEX_LOCK)?;
        let path = self.index_path();
        let text = fs::read_to_string(&path).map_err(CacheError::io("read", &path))?;
        let mut index: Value =
            serde_json::from_str(&text).map_err(|error| CacheError::InvalidLayout {
                path: path.clone(),
                reason: error.to_string(),
            })?;
        let Some(manifests) = index.get_mut("manifests").and_then(Value::as_array_mut) else {
            return Ok(0);
        };

        let before = manifests.len();
        manifests.retain(|entry| {
            entry["digest"]
                .as_str()
                .and_then(|d| d.parse::<Digest>().ok())
                .is_some_and(|digest| self.path(&digest).is_file())
        });
        let dropped = before - manifests.len();
        if dropped > 0 {
            write_atomically(&path, index.to_string().as_bytes())?;
        }
        Ok(dropped)
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    fn locks_dir(&self) -> PathBuf {
        self.root.join(".banger-locks")
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    fn slot_under_lock(
        &self,
        digest: &Digest,
        size: u64,
        lock: File,
    ) -> Result<BlobSlot, CacheError> {
        if self.has(digest, size)? {
            return Ok(BlobSlot::Cached);
        }
        // With the lock held no other writer touches this digest, so temporary
        // files left by a killed writer can go.
        self.remove_stale_temps(digest)?;

        let dir = self.blobs_dir();
        let temp_path = dir.join(format!(
            "{TEMP_PREFIX}{}-{}-{}",
            digest.hex(),
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o644)
            .open(&temp_path)
            .map_err(CacheError::io("create", &temp_path))?;
        debug!(digest = %digest, path = ?temp_path, "writing blob");
        Ok(BlobSlot::Writer(Box::new(BlobWriter {
            file,
            temp_path,
            final_path: self.path(digest),
            dir,
            digest: digest.clone(),
            expected_size: size,
            written: 0,
            hasher: Sha256::new(),
            finished: false,
            _lock: lock,
        })))
    }

    fn remove_stale_temps(&self, digest: &Digest) -> Result<(), CacheError> {
        let dir = self.blobs_dir();
        let prefix = format!("{TEMP_PREFIX}{}-", digest.hex());
        let entries = fs::read_dir(&dir).map_err(CacheError::io("list", &dir))?;
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let path = entry.path();
                debug!(path = ?path, "removing a temporary blob left by an earlier writer");
                fs::remove_file(&path).map_err(CacheError::io("remove", &path))?;
            }
        }
        Ok(())
    }

    fn open_lock_file(&self, name: &str) -> Result<File, CacheError> {
        let path = self.locks_dir().join(name);
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o644)
            .open(&path)
            .map_err(CacheError::io("open lock file", &path))
    }

    fn lock_blocking(&self, name: &str) -> Result<File, CacheError> {
        let lock = self.acquire(name, FlockOperation::LockExclusive)?;
        // A blocking flock either succeeds or fails with an error.
        Ok(lock.expect("a blocking lock is always taken"))
    }

    /// Opens and locks the lock file `name` with `operation`; `None` when a
    /// non-blocking lock is held elsewhere. Prune may unlink a lock file
    /// between its open and its flock here, so the lock counts only when the
    /// path still names the locked file, and otherwise the file is opened
    /// again.
    fn acquire(&self, name: &str, operation: FlockOperation) -> Result<Option<File>, CacheError> {
        let path = self.locks_dir().join(name);
        loop {
            let file = self.open_lock_file(name)?;
            match flock(&file, operation) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
                Err(errno) => {
                    return Err(CacheError::Io {
                        action: "lock",
                        path,
                        source: errno.into(),
                    })
                }
            }
            let locked = file.metadata().map_err(CacheError::io("inspect", &path))?;
            match fs::metadata(&path) {
                Ok(current) if current.ino() == locked.ino() && current.dev() == locked.dev() => {
                    return Ok(Some(file))
                }
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CacheError::Io {
                        action: "inspect",
                        path,
                        source,
                    })
                }
            }
        }
    }

    async fn lock_polling(&self, digest: &Digest) -> Result<File, CacheError> {
        let name = format!("sha256-{}", digest.hex());
        let mut logged = false;
        loop {
            if let Some(file) = self.acquire(&name, FlockOperation::NonBlockingLockExclusive)? {
                return Ok(file);
            }
            if !logged {
                debug!(digest = %digest, "waiting for another writer of this blob");
                logged = true;
            }
            tokio::time::sleep(LOCK_POLL_INTERVAL).await;
        }
    }
}

/// A blob being written to its temporary file. [`BlobWriter::finish`]
/// publishes it; dropping the writer without finishing deletes the file.
#[derive(Debug)]
pub struct BlobWriter {
    file: File,
    temp_path: PathBuf,
    final_path: PathBuf,
    dir: PathBuf,
    digest: Digest,
    expected_size: u64,
    written: u64,
    hasher: Sha256,
    finished: bool,
    /// The digest's `flock`, released when the writer is dropped.
    _lock: File,
}

impl BlobWriter {
    /// Bytes written so far, the offset to resume a download from.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Appends a chunk. A chunk that would make the blob longer than its
    /// descriptor's size is rejected and nothing of it is written.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), CacheError> {
        let new_len = self.written.saturating_add(chunk.len() as u64);
        if new_len > self.expected_size {
            return Err(CacheError::TooLong {
                digest: self.digest.clone(),
                expected: self.expected_size,
            });
        }
        self.file
            .write_all(chunk)
            .map_err(CacheError::io("write", &self.temp_path))?;
        self.hasher.update(chunk);
        self.written = new_len;
        Ok(())
    }

    /// Discards what was written, for a server that ignored a Range request
    /// and sent the whole blob again.
    pub fn restart(&mut self) -> Result<(), CacheError> {
        self.file
            .set_len(0)
            .map_err(CacheError::io("truncate", &self.temp_path))?;
        io::Seek::rewind(&mut self.file).map_err(CacheError::io("rewind", &self.temp_path))?;
        self.hasher = Sha256::new();
        self.written = 0;
        Ok(())
    }

    /// Checks size and sha256, fsyncs the file, renames it to the blob's
    /// name and fsyncs the directory. On any error the temporary file is
    /// deleted. Returns the blob's path.
    pub fn finish(mut self) -> Result<PathBuf, CacheError> {
        if self.written != self.expected_size {
            return Err(CacheError::SizeMismatch {
                digest: self.digest.clone(),
                expected: self.expected_size,
                actual: self.written,
            });
        }
        let actual = Digest::from_sha256(self.hasher.clone().finalize().as_slice());
        if actual != self.digest {
            return Err(CacheError::DigestMismatch {
                expected: self.digest.clone(),
                actual,
            });
        }

        self.file
            .sync_all()
            .map_err(CacheError::io("fsync", &self.temp_path))?;
        fs::rename(&self.temp_path, &self.final_path)
            .map_err(CacheError::io("rename into place", &self.final_path))?;
        self.finished = true;
        sync_dir(&self.dir)?;
        debug!(digest = %self.digest, size = self.expected_size, "blob verified and stored");
        Ok(self.final_path.clone())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.finished {
            // NOTE: a failure here leaves a temporary file that the next
            // writer of this digest removes under the lock.
            let _ = fs::remove_file(&self.temp_path);
        }
    }
}

/// Replaces `path` with `bytes` through a temporary file and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(dir)
        .map_err(CacheError::io("create a temporary file in", dir))?;
    temp.write_all(bytes)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(CacheError::io("write", temp.path()))?;
    temp.persist(path).map_err(|error| CacheError::Io {
        action: "rename into place",
        path: path.to_owned(),
        source: error.error,
    })?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), CacheError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(CacheError::io("fsync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn open_creates_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path().join("oci")).unwrap();
        let layout = fs::read_to_string(cache.root().join("oci-layout")).unwrap();
        assert!(layout.contains("1.0.0"));
        let index: Value =
            serde_json::from_str(&fs::read_to_string(cache.root().join("index.json")).unwrap())
                .unwrap();
        assert_eq!(index["schemaVersion"], 2);
        assert!(cache.root().join("blobs/sha256").is_dir());
    }

    #[test]
    fn write_verified_stores_the_blob() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let digest = Digest::of(b"hello");
        cache.write_verified(&digest, b"hello").unwrap();
        assert!(cache.has(&digest, 5).unwrap());
        assert_eq!(cache.read_verified(&digest, 5).unwrap(), b"hello");
        assert_eq!(entries(&dir.path().join("blobs/sha256")), [digest.hex()]);
    }

    #[test]
    fn write_with_wrong_bytes_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let digest = Digest::of(b"hello");
        let error = cache.write_verified(&digest, b"jello").unwrap_err();
        assert!(
            matches!(error, CacheError::DigestMismatch { .. }),
            "{error}"
        );
        assert!(entries(&dir.path().join("blobs/sha256")).is_empty());
    }

    #[tokio::test]
    async fn dropped_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let digest = Digest::of(b"hello");
        let BlobSlot::Writer(mut writer) = cache.begin_write(&digest, 5).await.unwrap() else {
            panic!("empty cache returned Cached");
        };
        writer.write(b"hel").unwrap();
        drop(writer);
        assert!(entries(&dir.path().join("blobs/sha256")).is_empty());
        assert!(!cache.has(&digest, 5).unwrap());
    }

    #[tokio::test]
    async fn leftovers_of_dead_writers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let blobs = dir.path().join("blobs/sha256");
        // A temporary file of a killed pull: no process holds its lock.
        let dead = Digest::of(b"dead");
        let dead_temp = blobs.join(format!("{TEMP_PREFIX}{}-1-0", dead.hex()));
        fs::write(&dead_temp, b"de").unwrap();
        drop(cache.acquire(
            &format!("sha256-{}", dead.hex()),
            FlockOperation::LockExclusive,
        ));
        // A live writer keeps its temporary file and its lock.
        let live = Digest::of(b"live");
        let BlobSlot::Writer(mut writer) = cache.begin_write(&live, 4).await.unwrap() else {
            panic!("empty cache returned Cached");
        };
        writer.write(b"li").unwrap();

        let leftovers = cache.remove_leftovers().unwrap();
        assert_eq!(leftovers.temp_files, vec![dead_temp.clone()]);
        assert_eq!(leftovers.bytes_freed, 2);
        let locks = entries(&dir.path().join(".banger-locks"));
        assert!(
            !locks.contains(&format!("sha256-{}", dead.hex())),
            "{locks:?}"
        );
        assert!(
            locks.contains(&format!("sha256-{}", live.hex())),
            "{locks:?}"
        );
        assert_eq!(entries(&blobs).len(), 1, "live temporary file kept");

        writer.write(b"ve").unwrap();
        writer.finish().unwrap();
        assert!(cache.has(&live, 4).unwrap());
    }

    #[test]
    fn prune_lock_waits_for_pulls() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let other_handle = BlobCache::open(dir.path()).unwrap();
        let pull = cache.lock_for_pull().unwrap();
        assert!(other_handle.try_lock_for_prune().unwrap().is_none());
        drop(pull);
        let prune = other_handle.try_lock_for_prune().unwrap();
        assert!(prune.is_some());
    }

    #[tokio::test]
    async fn too_long_chunk_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let digest = Digest::of(b"hello");
        let BlobSlot::Writer(mut writer) = cache.begin_write(&digest, 5).await.unwrap() else {
            panic!("empty cache returned Cached");
        };
        let error = writer.write(b"hello!").unwrap_err();
        assert!(matches!(error, CacheError::TooLong { .. }), "{error}");
        assert_eq!(writer.written(), 0);
    }

    #[tokio::test]
    async fn restart_discards_written_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let digest = Digest::of(b"hello");
        let BlobSlot::Writer(mut writer) = cache.begin_write(&digest, 5).await.unwrap() else {
            panic!("empty cache returned Cached");
        };
        writer.write(b"xx").unwrap();
        writer.restart().unwrap();
        writer.write(b"hello").unwrap();
        writer.finish().unwrap();
        assert_eq!(cache.read_verified(&digest, 5).unwrap(), b"hello");
    }

    #[test]
    fn wrong_size_counts_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let digest = Digest::of(b"hello");
        cache.write_verified(&digest, b"hello").unwrap();
        fs::write(cache.path(&digest), b"hel").unwrap();
        assert!(!cache.has(&digest, 5).unwrap());
        cache.write_verified(&digest, b"hello").unwrap();
        assert_eq!(cache.read_verified(&digest, 5).unwrap(), b"hello");
    }

    #[test]
    fn open_blob_of_missing_digest_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let error = cache.open_blob(&Digest::of(b"absent")).unwrap_err();
        assert!(
            matches!(error, CacheError::Io { ref source, .. } if source.kind() == io::ErrorKind::NotFound)
        );
        assert!(entries(&dir.path().join("blobs/sha256")).is_empty());
    }

    #[tokio::test]
    async fn second_writer_waits_and_sees_cached() {
        let dir = tempfile::tempdir().unwrap();
        let first = BlobCache::open(dir.path()).unwrap();
        let second = BlobCache::open(dir.path()).unwrap();
        let digest = Digest::of(b"hello");
        let BlobSlot::Writer(mut writer) = first.begin_write(&digest, 5).await.unwrap() else {
            panic!("empty cache returned Cached");
        };

        let waiter = {
            let digest = digest.clone();
            tokio::spawn(async move { second.begin_write(&digest, 5).await })
        };
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(
            !waiter.is_finished(),
            "second writer did not wait for the lock"
        );

        writer.write(b"hello").unwrap();
        writer.finish().unwrap();
        let slot = waiter.await.unwrap().unwrap();
        assert!(matches!(slot, BlobSlot::Cached));
    }

    #[test]
    fn stale_temp_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let digest = Digest::of(b"hello");
        let stale = dir
            .path()
            .join(format!("blobs/sha256/.tmp-{}-1-0", digest.hex()));
        fs::write(&stale, b"he").unwrap();
        cache.write_verified(&digest, b"hello").unwrap();
        assert!(!stale.exists());
    }

    #[test]
    fn tag_manifest_replaces_same_name() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let first = Digest::of(b"one");
        let second = Digest::of(b"two");
        let media_type = "application/vnd.oci.image.manifest.v1+json";
        cache.tag_manifest("r:1", media_type, &first, 3).unwrap();
        cache.tag_manifest("r:2", media_type, &first, 3).unwrap();
        cache.tag_manifest("r:1", media_type, &second, 3).unwrap();
        let index: Value =
            serde_json::from_str(&fs::read_to_string(dir.path().join("index.json")).unwrap())
                .unwrap();
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 2);
        let r1 = manifests
            .iter()
            .find(|m| m["annotations"][REF_NAME_ANNOTATION] == "r:1")
            .unwrap();
        assert_eq!(r1["digest"], second.to_string());
    }
}
