//! Errors of the kernel catalog, each naming the file, entry or version
//! involved and what to do about it.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Classify, ExitCode};

/// Errors from importing, reading, removing and booting kernel bundles.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file system operation failed.
    #[error("failed to {action} `{path}`: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A file or directory given on the command line does not exist.
    #[error("`{path}` not found; check the {what} path")]
    InputNotFound { path: PathBuf, what: &'static str },

    /// A path given on the command line is a device, fifo or socket.
    #[error("`{path}` is not a regular file; pass a {what} file")]
    NotRegularFile { path: PathBuf, what: &'static str },

    /// The file is neither a bzImage nor an ELF vmlinux.
    #[error("`{path}` is not a kernel image: expected a bzImage (boot sector magic 0xAA55 and header `HdrS`) or an ELF vmlinux")]
    NotAKernelImage { path: PathBuf },

    /// The kernel image carries no version string.
    #[error("cannot read the kernel version from `{path}`: {reason}")]
    NoVersion { path: PathBuf, reason: String },

    /// The file given to `kernel import` has a format banger does not import.
    #[error("`{path}` is not a kernel image, a Debian kernel package or a kernel bundle tarball")]
    UnknownSource { path: PathBuf },

    /// The modules tree belongs to another kernel than the image.
    #[error("the modules in `{modules}` are for kernel {modules_version}, but the kernel image is version {image_version}; pass the lib/modules/{image_version} tree")]
    VersionMismatch {
        image_version: String,
        modules_version: String,
        modules: PathBuf,
    },

    /// The modules tree does not have the `lib/modules/<version>` shape.
    #[error("invalid modules tree `{path}`: {reason}")]
    InvalidModules { path: PathBuf, reason: String },

    /// A Debian package is malformed or contains no kernel.
    #[error("invalid kernel package `{path}`: {reason}")]
    InvalidPackage { path: PathBuf, reason: String },

    /// A bundle tarball is malformed or its content does not match its manifest.
    #[error("invalid kernel bundle `{path}`: {reason}")]
    InvalidBundle { path: PathBuf, reason: String },

    /// An archive entry would write outside the catalog entry, or has a type
    /// that a kernel bundle does not contain.
    #[error("rejected entry `{entry}` in `{archive}`: {reason}")]
    UnsafeEntry {
        archive: PathBuf,
        entry: String,
        reason: String,
    },

    /// An archive could not be read to its end, usually because it is truncated.
    #[error("failed to read archive `{archive}` (truncated or corrupt?): {source}")]
    Archive {
        archive: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The kernel name contains characters that are not allowed.
    #[error("invalid kernel name `{name}`: use 1 to 128 letters, digits, `.`, `_` or `-`, starting with a letter or digit")]
    InvalidName { name: String },

    /// No kernel with this name is in the catalog.
    #[error("kernel `{name}` not found; `banger kernel ls` lists the imported kernels")]
    NotFound { name: String },

    /// The catalog is empty.
    #[error("no kernel imported; import one with `banger kernel import FILE` (a vmlinuz, a Debian linux-image .deb or a bundle tarball)")]
    NoKernels,

    /// Several kernels exist and none is the default.
    #[error("no default kernel among {count} imported kernels; choose one with `banger kernel default NAME`")]
    NoDefault { count: usize },

    /// A kernel with this name already exists.
    #[error("kernel `{name}` already exists; remove it with `banger kernel rm {name}` or import under another name with --name")]
    Exists { name: String },

    /// VMs still use the kernel.
    #[error("kernel `{name}` is used by VM(s) {}; stop and delete them first or pass --force", users.join(", "))]
    InUse { name: String, users: Vec<String> },

    /// The catalog entry's manifest is unreadable.
    #[error("invalid manifest `{path}`: {reason}; remove the kernel with `banger kernel rm {name}` and import it again")]
    InvalidManifest {
        path: PathBuf,
        name: String,
        reason: String,
    },

    /// The kernel's version string cannot name its modules directory.
    #[error("invalid kernel version `{version}` in `{path}`: it must be one path component other than `.` and `..`, because it names lib/modules/<version>; import a kernel built with a plain release string")]
    InvalidVersion { path: PathBuf, version: String },

    /// A kernel module needed to reach the root disk is neither built in nor shipped.
    #[error("kernel {version} has no driver `{module}`, neither built in nor in its modules tree; import the kernel with its modules (--modules)")]
    MissingModule { version: String, module: String },

    /// A kernel module file is malformed.
    #[error("invalid kernel module `{path}`: {reason}")]
    InvalidModule { path: PathBuf, reason: String },

    /// The static guest init binary was not found.
    #[error("static guest init `banger-guest` not found (looked in {}); build it with `RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build -p banger-guest --target x86_64-unknown-linux-gnu` and set BANGER_GUEST_INIT to its path", searched.iter().map(|p| format!("`{}`", p.display())).collect::<Vec<_>>().join(", "))]
    GuestInitNotFound { searched: Vec<PathBuf> },

    /// A registry request failed.
    #[error("failed to {action} `{reference}`: {reason}")]
    Registry {
        reference: String,
        action: &'static str,
        reason: String,
    },

    /// The registry manifest is not a banger kernel bundle.
    #[error("`{reference}` is not a banger kernel bundle: {reason}; push kernels with `banger kernel push`")]
    NotAKernelArtifact { reference: String, reason: String },

    /// The blob cache failed or a downloaded blob did not match its digest.
    #[error(transparent)]
    Cache(#[from] crate::image::blob_cache::CacheError),

    /// The guest init binary cannot run as the first process of an initrd.
    #[error("guest init `{path}` is not a static x86-64 ELF executable: {reason}; build it with `RUSTFLAGS=\"-C target-feature=+crt-static\"`")]
    InvalidGuestInit { path: PathBuf, reason: String },
}

impl Error {
    /// Wraps an I/O error with the action and path it happened on.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}

impl Error {
    /// Replaces the leading `from` of the input path this error names with
    /// `to`, so that an error about a staged or cached copy names what the
    /// user gave (a file or a registry reference) instead.
    pub(crate) fn naming_input(self, from: &Path, to: &Path) -> Error {
        let swap = |path: PathBuf| match path.strip_prefix(from) {
            Ok(rest) if rest.as_os_str().is_empty() => to.to_path_buf(),
            Ok(rest) => to.join(rest),
            Err(_) => path,
        };
        match self {
            Error::UnsafeEntry {
                archive,
                entry,
                reason,
            } => Error::UnsafeEntry {
                archive: swap(archive),
                entry,
                reason,
            },
            Error::Archive { archive, source } => Error::Archive {
                archive: swap(archive),
                source,
            },
            Error::InvalidBundle { path, reason } => Error::InvalidBundle {
                path: swap(path),
                reason,
            },
            Error::InvalidModules { path, reason } => Error::InvalidModules {
                path: swap(path),
                reason,
            },
            Error::InvalidPackage { path, reason } => Error::InvalidPackage {
                path: swap(path),
                reason,
            },
            Error::VersionMismatch {
                image_version,
                modules_version,
                modules,
            } => Error::VersionMismatch {
                image_version,
                modules_version,
                modules: swap(modules),
            },
            Error::InvalidVersion { path, version } => Error::InvalidVersion {
                path: swap(path),
                version,
            },
            Error::NotAKernelImage { path } => Error::NotAKernelImage { path: swap(path) },
            Error::NoVersion { path, reason } => Error::NoVersion {
                path: swap(path),
                reason,
            },
            Error::UnknownSource { path } => Error::UnknownSource { path: swap(path) },
            other => other,
        }
    }
}

impl Classify for Error {
    fn exit_code(&self) -> ExitCode {
        match self {
            Error::NotFound { .. }
            | Error::NoKernels
            | Error::NoDefault { .. }
            | Error::InputNotFound { .. }
            | Error::GuestInitNotFound { .. } => ExitCode::NotFound,
            Error::Exists { .. } | Error::InUse { .. } => ExitCode::Conflict,
            Error::InvalidName { .. } | Error::NotRegularFile { .. } => ExitCode::Usage,
            Error::Io { .. } => ExitCode::HostResource,
            Error::Registry { .. } | Error::NotAKernelArtifact { .. } => ExitCode::Remote,
            _ => ExitCode::General,
        }
    }
}

/// Result type of the kernel module.
pub type Result<T, E = Error> = std::result::Result<T, E>;
