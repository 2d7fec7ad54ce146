//! Exit codes and the classification that maps every module's errors to one.

/// Documented process exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum ExitCode {
    /// Success.
    Ok = 0,
    /// Any failure without a more specific code.
    General = 1,
    /// Invalid command line or configuration.
    Usage = 2,
    /// The named image, kernel or VM does not exist.
    NotFound = 3,
    /// The request conflicts with existing state (a name in use, a kernel in use).
    Conflict = 4,
    /// A registry or another remote returned an error or could not be reached.
    Remote = 5,
    /// A host resource (tap, loop device, VMM process, disk space) failed.
    HostResource = 6,
    /// The command exists in the command tree but has no implementation yet.
    NotImplemented = 7,
}

/// Implemented by each module's error type so that `main` can pick an exit code.
pub trait Classify {
    fn exit_code(&self) -> ExitCode;
}
