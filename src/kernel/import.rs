//! Import sources: how `kernel import` reads each kind of source into a
//! staging directory, and the checks a staged bundle passes before it is
//! published.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::bundle::{self, Manifest, INITRD, KERNEL, MODULES_DIR};
use super::deb;
use super::error::{Error, Result};
use super::extract::{self, Mapping, Staging};
use super::version;

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
        let meta = input_metadata(path, "kernel, package or bundle")?;
        if meta.is_dir() {
            return detect_directory(path);
        }
        if !meta.is_file() {
            return Err(Error::NotRegularFile {
                path: path.to_path_buf(),
                what: "kernel image, package or bundle",
            });
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

    /// Returns the file or directory the source reads.
    pub fn path(&self) -> &Path {
        match self {
            ImportSource::Image { kernel, .. } => kernel,
            ImportSource::Package(path)
            | ImportSource::Bundle(path)
            | ImportSource::BundleDir(path) => path,
        }
    }
}

/// Stages `source` in the empty directory `staging` and returns the
/// manifest of the checked bundle.
pub(crate) fn stage_source(staging: &Path, source: &ImportSource) -> Result<Manifest> {
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
    Ok(manifest)
}

fn stage_image(
    staging: &Path,
    kernel: &Path,
    modules: Option<&Path>,
    initrd: Option<&Path>,
) -> Result<Manifest> {
    let writer = Staging::new(staging, kernel);
    copy_regular_file(&writer, kernel, Path::new(KERNEL), "kernel image")?;
    if let Some(initrd) = initrd {
        copy_regular_file(
            &Staging::new(staging, initrd),
            initrd,
            Path::new(INITRD),
            "initrd",
        )?;
    }
    if let Some(modules) = modules {
        stage_modules(staging, modules)?;
    }
    finish_manifest(staging, kernel, &deb::source_name(kernel), modules)
}

fn stage_package(staging: &Path, path: &Path) -> Result<Manifest> {
    let content = deb::stage_package(path, staging)?;
    if !content.has_kernel {
        return Err(Error::InvalidPackage {
            path: path.to_path_buf(),
            reason: "it holds no boot/vmlinuz-*; import the linux-image package, not a metapackage or a modules package".to_string(),
        });
    }
    finish_manifest(
        staging,
        &path.join(KERNEL),
        &deb::source_name(path),
        Some(path),
    )
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
    // A modules path that is a link is passed on, so that staging rejects it.
    let has_modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .any(|dir| !matches!(extract::real_dir(path, Path::new(dir)), Ok(false)));
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
        reason: match error {
            Error::InvalidManifest { reason, .. } => {
                format!("its {} is invalid: {reason}", bundle::MANIFEST)
            }
            other => other.to_string(),
        },
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
    let mut manifest = finish_manifest(staging, &path.join(KERNEL), &recorded.source, Some(path))?;

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
fn copy_regular_file(
    writer: &Staging<'_>,
    source: &Path,
    dest: &Path,
    what: &'static str,
) -> Result<()> {
    let meta = input_metadata(source, what)?;
    if !meta.is_file() {
        return Err(Error::NotRegularFile {
            path: source.to_path_buf(),
            what,
        });
    }
    let mut file = File::open(source).map_err(Error::io("open", source))?;
    writer.write_file(dest, 0o644, meta.len(), &mut file)
}

/// Returns the metadata of a path given on the command line, following a
/// symlink, with a not-found error naming `what` it should be.
fn input_metadata(path: &Path, what: &'static str) -> Result<fs::Metadata> {
    fs::metadata(path).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => Error::InputNotFound {
            path: path.to_path_buf(),
            what,
        },
        _ => Error::io("read", path)(error),
    })
}

/// Stages a modules tree given as a directory, a tar (maybe compressed) or a
/// package, under `lib/modules/`.
fn stage_modules(staging: &Path, modules: &Path) -> Result<()> {
    let writer = Staging::new(staging, modules);
    let meta = input_metadata(modules, "modules")?;
    if !meta.is_dir() && !meta.is_file() {
        return Err(Error::NotRegularFile {
            path: modules.to_path_buf(),
            what: "modules directory, tar or package",
        });
    }

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
        match extract::real_dir(dir, Path::new(nested)) {
            Ok(true) => return Ok(ModulesRoot::Parent(dir.join(nested))),
            Ok(false) => {}
            Err(link) => {
                return Err(Error::InvalidModules {
                    path: dir.to_path_buf(),
                    reason: format!(
                        "`{}` in it is a symlink or a file; banger does not follow symlinks inside a modules tree, so pass the directory it points to",
                        link.display()
                    ),
                })
            }
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
/// and builds the manifest. `kernel_input` is the kernel as the user gave
/// it (a file, or `ARCHIVE/vmlinuz`), named in errors.
fn finish_manifest(
    staging: &Path,
    kernel_input: &Path,
    source: &str,
    modules_source: Option<&Path>,
) -> Result<Manifest> {
    extract::check_links(staging, modules_source.unwrap_or(staging))?;
    let kernel = staging.join(KERNEL);
    let meta = fs::symlink_metadata(&kernel).map_err(Error::io("read", &kernel))?;
    if !meta.is_file() {
        return Err(Error::InvalidBundle {
            path: staging.to_path_buf(),
            reason: format!("`{KERNEL}` is not a regular file"),
        });
    }
    // Errors name the user's file rather than the staged copy.
    let image = version::read_kernel_image(&kernel)
        .map_err(|error| error.naming_input(&kernel, kernel_input))?;
    if !bundle::is_valid_version(&image.version) {
        return Err(Error::InvalidVersion {
            path: kernel_input.to_path_buf(),
            version: image.version,
        });
    }
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
    // Read the tree only when no part of `lib/modules` is a link, so that
    // reading it never follows one out of the bundle.
    match extract::real_dir(staging, Path::new(MODULES_DIR)) {
        Ok(true) => {}
        Ok(false) => return Ok(false),
        Err(link) => {
            return Err(Error::InvalidModules {
                path: source,
                reason: format!(
                    "`{}` is a symlink or a file; banger reads the modules tree without following symlinks, so {MODULES_DIR} and {MODULES_DIR}/<version> must be real directories",
                    link.display()
                ),
            })
        }
    }
    let children = fs::read_dir(&dir).map_err(Error::io("read directory", &dir))?;

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
