//! The root filesystem stage: report that the VM reached its root
//! filesystem, then power off.
//!
//! NOTE: this is all the guest does on the root filesystem so far; running a
//! workload and talking to the host come with the VM side.

use std::fs;
use std::io;

use crate::sys;

/// The line a host waits for on the serial console.
pub const READY_MARKER: &str = "BANGER-GUEST-READY";

/// Mounts the pseudo file systems, prints the ready line and powers off.
/// Returns only on failure.
pub fn report_and_power_off() -> io::Result<()> {
    if !std::path::Path::new("/proc/self").exists() {
        sys::mount("proc", "/proc", "proc", 0, "")?;
    }
    mount_if_missing("sysfs", "/sys", "sysfs")?;
    // The kernel mounts devtmpfs itself when built with CONFIG_DEVTMPFS_MOUNT.
    mount_if_missing("devtmpfs", "/dev", "devtmpfs")?;

    let release = fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let mounts = fs::read_to_string("/proc/mounts")?;
    let root = mounts
        .lines()
        .map(|line| line.split(' ').collect::<Vec<_>>())
        .filter(|fields| fields.len() > 2 && fields[1] == "/")
        .map(|fields| format!("{} ({})", fields[0], fields[2]))
        .next_back()
        .unwrap_or_else(|| "unknown".to_string());
    let modules: Vec<String> = fs::read_to_string("/proc/modules")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').next().map(str::to_string))
        .collect();

    println!(
        "{READY_MARKER} root={root} kernel={} modules={}",
        release.trim(),
        if modules.is_empty() {
            "-".to_string()
        } else {
            modules.join(",")
        }
    );
    Err(sys::power_off())
}

/// Mounts `source` on `target` unless /proc/mounts lists a mount there, or
/// the root filesystem has no such directory.
fn mount_if_missing(source: &str, target: &str, fstype: &str) -> io::Result<()> {
    if !std::path::Path::new(target).is_dir() {
        return Ok(());
    }
    let mounts = fs::read_to_string("/proc/mounts")?;
    let mounted = mounts
        .lines()
        .any(|line| line.split(' ').nth(1) == Some(target));
    if mounted {
        return Ok(());
    }
    sys::mount(source, target, fstype, 0, "")
}
