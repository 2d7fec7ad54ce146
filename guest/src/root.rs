//! The root filesystem stage: report that the VM reached its root
//! filesystem, then power off.
//!
//! NOTE: this is all the guest does on the root filesystem so far. Running a
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
    let root = root_device()?;
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

/// Names the device and file system type of `/`. The kernel lists a root it
/// mounted itself as `/dev/root` in /proc/mounts, so the device name comes
/// from sysfs, by the device number of `/`.
fn root_device() -> io::Result<String> {
    use std::os::unix::fs::MetadataExt;

    let dev = fs::metadata("/")?.dev();
    // The glibc encoding of dev_t, as gnu_dev_major and gnu_dev_minor decode it.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let uevent =
        fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent")).unwrap_or_default();
    let name = uevent
        .lines()
        .find_map(|line| line.strip_prefix("DEVNAME="))
        .map(|name| format!("/dev/{name}"))
        .unwrap_or_else(|| format!("block device {major}:{minor}"));

    let mounts = fs::read_to_string("/proc/mounts")?;
    let fstype = mounts
        .lines()
        .map(|line| line.split(' ').collect::<Vec<_>>())
        .filter(|fields| fields.len() > 2 && fields[1] == "/")
        .map(|fields| fields[2].to_string())
        .next_back()
        .unwrap_or_else(|| "unknown".to_string());
    Ok(format!("{name} ({fstype})"))
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
