//! The kernel catalog: one bundle directory per kernel under
//! `<data>/kernels/<name>/`, and the default kernel's name in
//! `<data>/kernels/.default`.
//!
//! Imports are staged in a hidden temporary directory next to the entries
//! and renamed into place only after every check passed, so a failed import
//! leaves no partial entry. Removal renames the entry away before deleting it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::bundle::{self, Manifest, INITRD, KERNEL, MODULES_DIR};
use super::error::{Error, Result};
use super::import::{self, ImportSource};
use super::version::ImageFormat;
use crate::store::paths::Paths;

/// File holding the default kernel's name.
const DEFAULT_FILE: &str = ".default";
/// Maximum length of a kernel name, in bytes.
const MAX_NAME_LEN: usize = 128;
/// Prefixes of the hidden directories that imports and removals work in.
const WORK_DIR_PREFIXES: [&str; 2] = [".import-", ".remove-"];
/// Age after which a work directory counts as left behind by a killed
/// process. No import takes that long, so a live one is never removed.
const STALE_WORK_DIR_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// One kernel in the catalog.
#[derive(Clone, Debug)]
pub struct KernelEntry {
    pub name: String,
    /// The entry's bundle directory.
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl KernelEntry {
    /// Path of the kernel image.
    pub fn kernel_path(&self) -> PathBuf {
        self.dir.join(KERNEL)
    }

    /// Path of the user-supplied initrd, if the bundle has one.
    pub fn initrd_path(&self) -> Option<PathBuf> {
        self.manifest.has_initrd.then(|| self.dir.join(INITRD))
    }

    /// Host path of the modules tree (`lib/modules/<version>`), if the bundle has one.
    pub fn modules_path(&self) -> Option<PathBuf> {
        self.manifest
            .has_modules
            .then(|| self.dir.join(MODULES_DIR).join(&self.manifest.version))
    }
}

/// The record that `kernel inspect` prints.
#[derive(Clone, Debug, Serialize)]
pub struct KernelInfo {
    pub name: String,
    pub version: String,
    pub image_format: ImageFormat,
    pub default: bool,
    pub path: PathBuf,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub modules: Option<PathBuf>,
    /// Path of the modules tree inside the guest.
    pub guest_modules: Option<String>,
    pub source: String,
    pub content_sha256: String,
}

/// Lists the VMs that use a kernel, so that `kernel rm` can reject removing it.
///
/// NOTE: the VM store implements this once VMs exist. Until then callers
/// pass [`NoVms`].
pub trait KernelUsers {
    /// Returns the names of the VMs that boot the kernel `name`.
    fn vms_using(&self, name: &str) -> Result<Vec<String>>;
}

/// A [`KernelUsers`] for a host without VM records.
pub struct NoVms;

impl KernelUsers for NoVms {
    fn vms_using(&self, _name: &str) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// The kernel catalog rooted at a directory.
#[derive(Clone, Debug)]
pub struct Catalog {
    root: PathBuf,
    /// The `default_kernel` setting, which overrides the stored default.
    configured_default: Option<String>,
}

impl Catalog {
    /// Opens the catalog in `root`, which is created on the first import.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            configured_default: None,
        }
    }

    /// Makes `name` (the `default_kernel` setting) the default kernel that
    /// [`Catalog::default_name`], `inspect` and `resolve` report, over the
    /// one stored with [`Catalog::set_default`].
    pub fn with_configured_default(mut self, name: Option<String>) -> Self {
        self.configured_default = name;
        self
    }

    /// Returns the `default_kernel` setting given to
    /// [`Catalog::with_configured_default`].
    pub fn configured_default(&self) -> Option<&str> {
        self.configured_default.as_deref()
    }

    /// Opens the catalog at `<data>/kernels`.
    pub fn from_paths(paths: &Paths) -> Self {
        Self::new(paths.data.join("kernels"))
    }

    /// Returns the directory that contains the catalog entries.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Imports a kernel under `name`, or under its version when `name` is `None`.
    ///
    /// # Errors
    /// [`Error::Exists`] when the name is taken, [`Error::VersionMismatch`]
    /// when the modules belong to another kernel, and the read and extraction
    /// errors of the source. On any error no entry is left behind.
    pub fn import(&self, source: &ImportSource, name: Option<&str>) -> Result<KernelEntry> {
        if let Some(name) = name {
            validate_name(name)?;
        }
        fs::create_dir_all(&self.root).map_err(Error::io("create directory", &self.root))?;
        self.remove_stale_work_dirs();
        let staging_dir = tempfile::Builder::new()
            .prefix(WORK_DIR_PREFIXES[0])
            .tempdir_in(&self.root)
            .map_err(Error::io("create staging directory in", &self.root))?;
        let staging = staging_dir.path();

        // Stage the files, then check what was staged.
        let manifest = import::stage_source(staging, source)?;
        let name = match name {
            Some(name) => name.to_string(),
            None => {
                validate_name(&manifest.version)?;
                manifest.version.clone()
            }
        };
        manifest.write(staging)?;

        // Publish the entry.
        let dest = self.root.join(&name);
        if fs::symlink_metadata(&dest).is_ok() {
            return Err(Error::Exists { name });
        }
        let staged = staging_dir.keep();
        if let Err(error) = fs::rename(&staged, &dest) {
            let _ = fs::remove_dir_all(&staged);
            // A non-empty directory created meanwhile under the same name.
            if matches!(error.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) {
                return Err(Error::Exists { name });
            }
            return Err(Error::io("publish catalog entry", &dest)(error));
        }
        tracing::info!(kernel = %name, version = %manifest.version, source = %source.path().display(), "imported kernel");
        Ok(KernelEntry {
            name,
            dir: dest,
            manifest,
        })
    }

    /// Removes import and removal directories that a killed process left
    /// behind. Failures are logged and otherwise ignored, because they do not
    /// affect the import that triggered the cleanup.
    fn remove_stale_work_dirs(&self) {
        let Ok(children) = fs::read_dir(&self.root) else {
            return;
        };
        for child in children.flatten() {
            let name = child.file_name();
            let is_work_dir = WORK_DIR_PREFIXES
                .iter()
                .any(|prefix| name.to_string_lossy().starts_with(prefix));
            let age = child
                .metadata()
                .and_then(|meta| meta.modified())
                .ok()
                .and_then(|modified| modified.elapsed().ok());
            if !is_work_dir || age.is_none_or(|age| age < STALE_WORK_DIR_AGE) {
                continue;
            }
            let path = child.path();
            match fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed stale kernel work directory")
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "failed to remove stale kernel work directory")
                }
            }
        }
    }

    /// Lists the kernels, sorted by name.
    pub fn list(&self) -> Result<Vec<KernelEntry>> {
        let children = match fs::read_dir(&self.root) {
            Ok(children) => children,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(Error::io("read directory", &self.root)(error)),
        };
        let mut entries = Vec::new();
        for child in children {
            let child = child.map_err(Error::io("read directory", &self.root))?;
            let Some(name) = child.file_name().to_str().map(str::to_string) else {
                continue;
            };
            // Hidden names are staging directories and the default marker.
            if name.starts_with('.') || validate_name(&name).is_err() {
                continue;
            }
            // One damaged entry must not hide the others.
            match self.get(&name) {
                Ok(entry) => entries.push(entry),
                Err(error @ Error::InvalidManifest { .. }) => {
                    tracing::warn!(kernel = %name, "skipped kernel: {error}");
                }
                Err(error) => return Err(error),
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Returns the kernel `name`.
    pub fn get(&self, name: &str) -> Result<KernelEntry> {
        validate_name(name)?;
        let dir = self.root.join(name);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            _ => {
                return Err(Error::NotFound {
                    name: name.to_string(),
                })
            }
        }
        let manifest = Manifest::read(&dir)?;
        Ok(KernelEntry {
            name: name.to_string(),
            dir,
            manifest,
        })
    }

    /// Returns what `kernel inspect` prints for the kernel `name`.
    pub fn inspect(&self, name: &str) -> Result<KernelInfo> {
        let entry = self.get(name)?;
        let default = self.default_name()?.as_deref() == Some(name);
        Ok(KernelInfo {
            name: entry.name.clone(),
            version: entry.manifest.version.clone(),
            image_format: entry.manifest.image_format,
            default,
            path: entry.dir.clone(),
            kernel: entry.kernel_path(),
            initrd: entry.initrd_path(),
            modules: entry.modules_path(),
            guest_modules: entry
                .manifest
                .has_modules
                .then(|| format!("/lib/modules/{}", entry.manifest.version)),
            source: entry.manifest.source.clone(),
            content_sha256: entry.manifest.content_sha256.clone(),
        })
    }

    /// Removes the kernel `name`, unless a VM uses it and `force` is off.
    pub fn remove(&self, name: &str, force: bool, users: &dyn KernelUsers) -> Result<()> {
        validate_name(name)?;
        let entry_dir = self.root.join(name);
        if !entry_dir.is_dir() {
            return Err(Error::NotFound {
                name: name.to_string(),
            });
        }
        let vms = users.vms_using(name)?;
        if !vms.is_empty() && !force {
            return Err(Error::InUse {
                name: name.to_string(),
                users: vms,
            });
        }

        // Rename first, so that the entry disappears at once even if the
        // deletion is interrupted.
        let trash = tempfile::Builder::new()
            .prefix(WORK_DIR_PREFIXES[1])
            .tempdir_in(&self.root)
            .map_err(Error::io("create directory in", &self.root))?;
        let target = trash.path().join(name);
        fs::rename(&entry_dir, &target).map_err(Error::io("remove", &entry_dir))?;
        trash.close().map_err(Error::io("remove", &entry_dir))?;

        if self.stored_default()?.as_deref() == Some(name) {
            let marker = self.root.join(DEFAULT_FILE);
            fs::remove_file(&marker).map_err(Error::io("remove", &marker))?;
        }
        tracing::info!(kernel = %name, forced = force && !vms.is_empty(), "removed kernel");
        Ok(())
    }

    /// Makes `name` the kernel that VMs boot when they name none.
    pub fn set_default(&self, name: &str) -> Result<()> {
        self.get(name)?;
        let marker = self.root.join(DEFAULT_FILE);
        let mut temp = tempfile::NamedTempFile::new_in(&self.root)
            .map_err(Error::io("create file in", &self.root))?;
        writeln!(temp, "{name}").map_err(Error::io("write", temp.path().to_path_buf()))?;
        temp.persist(&marker)
            .map_err(|error| Error::io("write", &marker)(error.error))?;
        Ok(())
    }

    /// Returns the default kernel's name: the `default_kernel` setting when
    /// configured, else the one stored with `kernel default NAME`.
    pub fn default_name(&self) -> Result<Option<String>> {
        match &self.configured_default {
            Some(name) => Ok(Some(name.clone())),
            None => self.stored_default(),
        }
    }

    /// Returns the name stored with [`Catalog::set_default`], if any.
    pub fn stored_default(&self) -> Result<Option<String>> {
        let marker = self.root.join(DEFAULT_FILE);
        match fs::read_to_string(&marker) {
            Ok(text) => Ok(Some(text.trim().to_string()).filter(|n| !n.is_empty())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(Error::io("read", &marker)(error)),
        }
    }

    /// Resolves the kernel a VM boots: `name` when given, else the default,
    /// else the only kernel.
    ///
    /// # Errors
    /// [`Error::NoKernels`], which names the import command, when the
    /// catalog is empty; [`Error::NoDefault`] when several kernels exist and
    /// none is the default.
    pub fn resolve(&self, name: Option<&str>) -> Result<KernelEntry> {
        if let Some(name) = name {
            return self.get(name);
        }
        if let Some(default) = self.default_name()? {
            return self.get(&default);
        }
        let mut entries = self.list()?;
        match entries.len() {
            0 => Err(Error::NoKernels),
            1 => Ok(entries.remove(0)),
            count => Err(Error::NoDefault { count }),
        }
    }

    /// Writes the kernel `name` as a bundle tarball to `out`.
    pub fn export(&self, name: &str, out: impl Write) -> Result<()> {
        let entry = self.get(name)?;
        bundle::write_tarball(&entry.dir, out)
    }
}

/// Checks a kernel name: 1 to 128 ASCII letters, digits, `.`, `_` or `-`,
/// starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidName {
            name: name.to_string(),
        })
    }
}
