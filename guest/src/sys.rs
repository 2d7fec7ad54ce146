//! Thin wrappers around the system calls the init needs, each turning a
//! failure into an error that names the call and its arguments.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

fn c_string(value: &str) -> io::Result<CString> {
    CString::new(value).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{value}` contains NUL"),
        )
    })
}

fn check(result: libc::c_int, what: impl FnOnce() -> String) -> io::Result<()> {
    if result == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    Err(io::Error::new(
        error.kind(),
        format!("{} failed: {error}", what()),
    ))
}

/// Mounts `source` of type `fstype` on `target` with `flags` and the option
/// string `data`.
pub fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let c_source = c_string(source)?;
    let c_target = c_string(target)?;
    let c_fstype = c_string(fstype)?;
    let c_data = c_string(data)?;
    // SAFETY: the four pointers come from CStrings that outlive the call,
    // and mount(2) only reads them.
    let result = unsafe {
        libc::mount(
            c_source.as_ptr(),
            c_target.as_ptr(),
            c_fstype.as_ptr(),
            flags,
            c_data.as_ptr().cast(),
        )
    };
    check(result, || {
        format!("mount {source} on {target} (type {fstype})")
    })
}

/// Moves the mount at `source` to `target` (mount --move).
pub fn move_mount(source: &str, target: &str) -> io::Result<()> {
    let c_source = c_string(source)?;
    let c_target = c_string(target)?;
    // SAFETY: both pointers come from CStrings that outlive the call; a null
    // file system type and data are allowed with MS_MOVE.
    let result = unsafe {
        libc::mount(
            c_source.as_ptr(),
            c_target.as_ptr(),
            std::ptr::null(),
            libc::MS_MOVE,
            std::ptr::null(),
        )
    };
    check(result, || format!("move mount {source} to {target}"))
}

/// Unmounts `target`, detaching it if it is busy.
pub fn unmount(target: &str) -> io::Result<()> {
    let c_target = c_string(target)?;
    // SAFETY: the pointer comes from a CString that outlives the call.
    let result = unsafe { libc::umount2(c_target.as_ptr(), libc::MNT_DETACH) };
    check(result, || format!("unmount {target}"))
}

/// Loads the kernel module in the file at `path` with finit_module(2).
/// Returns `Ok(false)` when a module of that name is already loaded.
pub fn load_module(path: &Path) -> io::Result<bool> {
    let file = File::open(path)?;
    let params = c_string("")?;
    // SAFETY: the descriptor stays open for the call, `params` is a valid
    // C string, and finit_module(2) takes no other pointers.
    let result =
        unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
    if result == 0 {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EEXIST) {
        return Ok(false);
    }
    Err(io::Error::new(
        error.kind(),
        format!("finit_module {} failed: {error}", path.display()),
    ))
}

/// Flushes file systems and powers the machine off. Returns only on failure.
pub fn power_off() -> io::Error {
    // SAFETY: sync(2) takes no arguments and, per its man page, always succeeds.
    unsafe { libc::sync() };
    // SAFETY: reboot(2) with a command constant takes no pointers; it stops
    // the machine or fails with an errno.
    unsafe { libc::reboot(libc::RB_POWER_OFF) };
    io::Error::last_os_error()
}
