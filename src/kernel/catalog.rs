//! The kernel catalog: one bundle directory per kernel under
//! `<data>/kernels/<name>/`, and the default kernel's name in
//! `<data>/kernels/.default`.
//!
//! Imports are staged in a hidden temporary directory next to the entries
//! and renamed into place only after every check passed, so a failed import
//! leaves no partial entry. Removal renames the entry away before deleting it.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::bundle::{self, Manifest, INITRD, KERNEL, MODULES_DIR};
use super::deb;
use super::error::{Error, Result};
use super::extract::{self, Mapping, Staging};
use super::version::{self, ImageFormat};
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

/// The source of a `kernel import`.
#[derive(Clone, Debug)]
pub enum ImportSource {
    /// A kernel image with an optional modules tree (a directory, a tar or a
    /// `.deb`) and an optional initrd.
    Image {
        kernel: PathBuf,
        modules: Option<PathBuf>,
        initrd: Option<PathBuf>,
    },
    /// A Debian or Ubuntu kernel package.
    Package(PathBuf),
    /// A bundle tarball as `kernel export` writes it.
    Bundle(PathBuf),
    /// A bundle directory: an unpacked `kernel export` tarball or a catalog entry.
    BundleDir(PathBuf),
}

impl ImportSource {
    /// Picks the source kind of `path`. A directory is a bundle directory
    /// when it has `bundle.json`, or else a root with one `boot/vmlinuz-*`
    /// and optionally `lib/modules` or `usr/lib/modules`. For a file, the
    /// first bytes decide: an ar archive is a package, a kernel image is an
    /// image, and a tar or compressed file is a bundle tarball.
    pub fn detect(path: &Path) -> Result<ImportSource> {
        if path.is_dir() {
            return detect_directory(path);
        }

        let mut head = Vec::with_capacity(0x400);
        File::open(path)
            .and_then(|file| file.take(0x400).read_to_end(&mut head))
            .map_err(Error::io("read", path))?;

        if deb::is_package(&head) {
            return Ok(ImportSource::Package(path.to_path_buf()));
        }
        if head.starts_with(b"\x7fELF") || version::is_bzimage(&head) {
            return Ok(ImportSource::Image {
                kernel: path.to_path_buf(),
                modules: None,
                initrd: None,
            });
        }
        let is_tar = head.len() > 262 && &head[257..262] == b"ustar";
        let is_compressed = head.starts_with(&[0x1f, 0x8b])
            || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
            || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]);
        if is_tar || is_compressed {
            return Ok(ImportSource::Bundle(path.to_path_buf()));
        }
        Err(Error::UnknownSource {
            path: path.to_path_buf(),
        })
    }

    fn path(&self) -> &Path {
        match self {
            ImportSource::Image { kernel, .. } => kernel,
            ImportSource::Package(path)
            | ImportSource::Bundle(path)
            | ImportSource::BundleDir(path) => path,
        }
    }
}

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

/// Lists the VMs that use a kernel, so that `kernel rm` can refuse to remove it.
///
/// NOTE: the VM store implements this once VMs exist; until then callers
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
}

impl Catalog {
    /// Opens the catalog in `root`, which is created on the first import.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
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
        let manifest = match source {
            ImportSource::Image {
                kernel,
                modules,
                initrd,
            } => stage_image(staging, kernel, modules.as_deref(), initrd.as_deref())?,
            ImportSource::Package(path) => stage_package(staging, path)?,
            ImportSource::Bundle(path) => {
                let recorded = bundle::stage_tarball(path, staging)?;
                check_bundle(staging, path, recorded)?
            }
            ImportSource::BundleDir(path) => {
                let recorded = stage_bundle_dir(staging, path)?;
                check_bundle(staging, path, recorded)?
            }
        };
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
            entries.push(self.get(&name)?);
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

        if self.default_name()?.as_deref() == Some(name) {
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

    /// Returns the default kernel's name, if one is set.
    pub fn default_name(&self) -> Result<Option<String>> {
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

fn stage_image(
    staging: &Path,
    kernel: &Path,
    modules: Option<&Path>,
    initrd: Option<&Path>,
) -> Result<Manifest> {
    let writer = Staging::new(staging, kernel);
    copy_regular_file(&writer, kernel, Path::new(KERNEL))?;
    if let Some(initrd) = initrd {
        copy_regular_file(&Staging::new(staging, initrd), initrd, Path::new(INITRD))?;
    }
    if let Some(modules) = modules {
        stage_modules(staging, modules)?;
    }
    finish_manifest(staging, &deb::source_name(kernel), modules)
}

fn stage_package(staging: &Path, path: &Path) -> Result<Manifest> {
    let content = deb::stage_package(path, staging)?;
    if !content.has_kernel {
        return Err(Error::InvalidPackage {
            path: path.to_path_buf(),
            reason: "it holds no boot/vmlinuz-*; import the linux-image package, not a metapackage or a modules package".to_string(),
        });
    }
    finish_manifest(staging, &deb::source_name(path), Some(path))
}

/// Detects the kind of directory given to `kernel import`.
fn detect_directory(path: &Path) -> Result<ImportSource> {
    if path.join(bundle::MANIFEST).is_file() {
        return Ok(ImportSource::BundleDir(path.to_path_buf()));
    }

    let mut kernels = Vec::new();
    if let Ok(children) = fs::read_dir(path.join("boot")) {
        for child in children.flatten() {
            let name = child.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("vmlinuz-") || name.starts_with("vmlinux-") {
                kernels.push(child.path());
            }
        }
    }
    let kernel = match kernels.as_slice() {
        [kernel] => kernel.clone(),
        [] => {
            return Err(Error::UnknownSource {
                path: path.to_path_buf(),
            })
        }
        several => {
            let names: Vec<String> = several.iter().map(|k| k.display().to_string()).collect();
            return Err(Error::InvalidModules {
                path: path.to_path_buf(),
                reason: format!(
                    "its boot/ contains several kernels ({}); import one of them with --modules",
                    names.join(", ")
                ),
            });
        }
    };
    let has_modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .any(|dir| path.join(dir).is_dir());
    Ok(ImportSource::Image {
        kernel,
        modules: has_modules.then(|| path.to_path_buf()),
        initrd: None,
    })
}

/// Copies a bundle directory into the staging directory and returns its manifest.
fn stage_bundle_dir(staging: &Path, path: &Path) -> Result<Manifest> {
    let writer = Staging::new(staging, path);
    let children = fs::read_dir(path).map_err(Error::io("read directory", path))?;
    for child in children {
        let child = child.map_err(Error::io("read directory", path))?;
        let name = child.file_name();
        let allowed = [bundle::MANIFEST, KERNEL, INITRD, "lib"];
        if !allowed.iter().any(|a| name.as_os_str() == *a) {
            return Err(Error::InvalidBundle {
                path: path.to_path_buf(),
                reason: format!(
                    "unexpected `{}`; a kernel bundle contains only {}, {KERNEL}, {INITRD} and {MODULES_DIR}/",
                    name.to_string_lossy(),
                    bundle::MANIFEST
                ),
            });
        }
        extract::copy_tree(&child.path(), &writer, Path::new(&name))?;
    }
    Manifest::read(staging).map_err(|error| Error::InvalidBundle {
        path: path.to_path_buf(),
        reason: error.to_string(),
    })
}

/// Checks a staged bundle against the manifest it carried, `recorded`, and
/// returns the manifest to publish.
fn check_bundle(staging: &Path, path: &Path, recorded: Manifest) -> Result<Manifest> {
    let invalid = |reason: String| Error::InvalidBundle {
        path: path.to_path_buf(),
        reason,
    };
    let kernel_is_file =
        fs::symlink_metadata(staging.join(KERNEL)).is_ok_and(|meta| meta.is_file());
    if !kernel_is_file {
        return Err(invalid(format!(
            "it holds no regular file `{KERNEL}`; the tarball is truncated or not a kernel bundle"
        )));
    }
    let mut manifest = finish_manifest(staging, &recorded.source, Some(path))?;

    if manifest.content_sha256 != recorded.content_sha256 {
        return Err(invalid(format!(
            "its content has sha256 {} but {} records {}; the tarball is truncated or was modified",
            manifest.content_sha256,
            bundle::MANIFEST,
            recorded.content_sha256
        )));
    }
    if manifest.version != recorded.version {
        return Err(invalid(format!(
            "{} records version {} but its kernel image is version {}",
            bundle::MANIFEST,
            recorded.version,
            manifest.version
        )));
    }
    manifest.source = recorded.source;
    Ok(manifest)
}

/// Copies a regular file (following a symlink given on the command line)
/// into the staging directory.
fn copy_regular_file(writer: &Staging<'_>, source: &Path, dest: &Path) -> Result<()> {
    let meta = fs::metadata(source).map_err(Error::io("read", source))?;
    if !meta.is_file() {
        return Err(Error::Io {
            action: "read",
            path: source.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        });
    }
    let mut file = File::open(source).map_err(Error::io("open", source))?;
    writer.write_file(dest, 0o644, meta.len(), &mut file)
}

/// Stages a modules tree given as a directory, a tar (maybe compressed) or a
/// package, under `lib/modules/`.
fn stage_modules(staging: &Path, modules: &Path) -> Result<()> {
    let writer = Staging::new(staging, modules);
    let meta = fs::metadata(modules).map_err(Error::io("read", modules))?;

    if meta.is_dir() {
        // The copy keeps symlinks, so resolve one given on the command line first.
        let resolved = fs::canonicalize(modules).map_err(Error::io("resolve", modules))?;
        let tree = modules_root(&resolved)?;
        return match tree {
            ModulesRoot::Parent(dir) => extract::copy_tree(&dir, &writer, Path::new(MODULES_DIR)),
            ModulesRoot::Version(dir, version) => {
                extract::copy_tree(&dir, &writer, &Path::new(MODULES_DIR).join(version))
            }
        };
    }

    let mut head = Vec::new();
    File::open(modules)
        .and_then(|file| file.take(8).read_to_end(&mut head))
        .map_err(Error::io("read", modules))?;
    if deb::is_package(&head) {
        let content = deb::stage_package(modules, staging)?;
        // Its kernel image has replaced the one given, so stop here.
        if content.has_kernel {
            return Err(Error::InvalidModules {
                path: modules.to_path_buf(),
                reason: "this package holds a kernel image too; import the package itself instead of passing it to --modules".to_string(),
            });
        }
        return Ok(());
    }

    let reader = bundle::open_decompressed(modules)?;
    extract::extract_tar(reader, &writer, |rel| Ok(map_modules_tar_path(rel)))
}

/// Maps a path inside a modules tarball to the bundle: `lib/modules/<v>/...`
/// and `usr/lib/modules/<v>/...` keep their place, and a tarball of the
/// version directory itself (`<v>/...`) goes under `lib/modules/`.
fn map_modules_tar_path(rel: &Path) -> Mapping {
    if let Some(mapped) = deb::map_modules_path(rel) {
        return Mapping::To(mapped);
    }
    let leading = [Path::new("lib"), Path::new("usr"), Path::new("usr/lib")];
    if rel.as_os_str().is_empty() || leading.contains(&rel) {
        return Mapping::Skip;
    }
    Mapping::To(Path::new(MODULES_DIR).join(rel))
}

enum ModulesRoot {
    /// A directory of version directories (`/lib/modules`).
    Parent(PathBuf),
    /// One version directory and its name.
    Version(PathBuf, String),
}

/// Finds the modules tree in a directory given to `--modules`: a root with
/// `lib/modules` or `usr/lib/modules`, a `lib/modules` directory, or one
/// `lib/modules/<version>` directory.
fn modules_root(dir: &Path) -> Result<ModulesRoot> {
    for nested in ["lib/modules", "usr/lib/modules"] {
        if dir.join(nested).is_dir() {
            return Ok(ModulesRoot::Parent(dir.join(nested)));
        }
    }
    let looks_like_version = |d: &Path| {
        ["modules.order", "modules.builtin", "kernel"]
            .iter()
            .any(|marker| d.join(marker).exists())
    };
    if looks_like_version(dir) {
        let version =
            dir.file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::InvalidModules {
                    path: dir.to_path_buf(),
                    reason: "the directory name is not a kernel version".to_string(),
                })?;
        return Ok(ModulesRoot::Version(dir.to_path_buf(), version.to_string()));
    }
    Ok(ModulesRoot::Parent(dir.to_path_buf()))
}

/// Reads the staged kernel's version, checks the staged modules against it
/// and builds the manifest.
fn finish_manifest(
    staging: &Path,
    source: &str,
    modules_source: Option<&Path>,
) -> Result<Manifest> {
    let kernel = staging.join(KERNEL);
    let meta = fs::symlink_metadata(&kernel).map_err(Error::io("read", &kernel))?;
    if !meta.is_file() {
        return Err(Error::InvalidBundle {
            path: staging.to_path_buf(),
            reason: format!("`{KERNEL}` is not a regular file"),
        });
    }
    let image = version::read_kernel_image(&kernel)?;
    let initrd = staging.join(INITRD);
    let has_initrd = match fs::symlink_metadata(&initrd) {
        Ok(meta) if meta.is_file() => true,
        Ok(_) => {
            return Err(Error::InvalidBundle {
                path: staging.to_path_buf(),
                reason: format!("`{INITRD}` is not a regular file"),
            })
        }
        Err(_) => false,
    };
    let has_modules = check_modules(staging, &image.version, modules_source)?;

    Ok(Manifest {
        format: bundle::FORMAT_VERSION,
        version: image.version,
        image_format: image.format,
        has_initrd,
        has_modules,
        source: source.to_string(),
        content_sha256: bundle::content_digest(staging)?,
    })
}

/// Checks that `lib/modules/` contains exactly the directory of `version`,
/// and returns whether it contains one.
fn check_modules(staging: &Path, version: &str, source: Option<&Path>) -> Result<bool> {
    let dir = staging.join(MODULES_DIR);
    let source = source.unwrap_or(staging).to_path_buf();
    let children = match fs::read_dir(&dir) {
        Ok(children) => children,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(Error::io("read directory", &dir)(error)),
    };

    let mut versions = Vec::new();
    for child in children {
        let child = child.map_err(Error::io("read directory", &dir))?;
        versions.push(child.file_name().to_string_lossy().into_owned());
    }
    versions.sort();
    match versions.as_slice() {
        [] => Ok(false),
        [only] if only == version => {
            let meta =
                fs::symlink_metadata(dir.join(only)).map_err(Error::io("read", dir.join(only)))?;
            if !meta.is_dir() {
                return Err(Error::InvalidModules {
                    path: source,
                    reason: format!("lib/modules/{only} is not a directory"),
                });
            }
            Ok(true)
        }
        [other] => Err(Error::VersionMismatch {
            image_version: version.to_string(),
            modules_version: other.clone(),
            modules: source,
        }),
        several => Err(Error::InvalidModules {
            path: source,
            reason: format!(
                "it holds modules for several kernels ({}); pass only lib/modules/{version}",
                several.join(", ")
            ),
        }),
    }
}
