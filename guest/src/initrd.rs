//! The initrd stage: load the root disk's driver modules, mount the root
//! filesystem and run its init.

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cmdline::{self, RootArgs};
use crate::sys;

const NEW_ROOT: &str = "/newroot";

/// Loads the modules in `module_list` and replaces this process with the
/// root filesystem's init. Returns only on failure.
pub fn switch_to_root(module_list: &Path) -> io::Result<()> {
    mount_pseudo_filesystems()?;
    let args = cmdline::parse(&fs::read_to_string("/proc/cmdline")?);
    let device = args.device.clone().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the kernel command line has no root= argument",
        )
    })?;

    for line in fs::read_to_string(module_list)?
        .lines()
        .filter(|l| !l.is_empty())
    {
        let loaded = sys::load_module(Path::new(line))?;
        if !loaded {
            println!("banger-guest: module {line} was already loaded");
        }
    }

    wait_for_device(&device, Duration::from_secs(args.wait_secs))?;
    mount_root(&device, &args)?;
    let init = args.init.clone();
    enter_root()?;

    let error = Command::new(&init).exec();
    Err(io::Error::new(
        error.kind(),
        format!("failed to run {init} on the root filesystem: {error}"),
    ))
}

fn mount_pseudo_filesystems() -> io::Result<()> {
    sys::mount("proc", "/proc", "proc", 0, "")?;
    sys::mount("sysfs", "/sys", "sysfs", 0, "")?;
    sys::mount("devtmpfs", "/dev", "devtmpfs", 0, "mode=0755")
}

/// Waits for the driver to create the device node, which happens after
/// module loading returns.
fn wait_for_device(device: &str, timeout: Duration) -> io::Result<()> {
    let start = Instant::now();
    while !Path::new(device).exists() {
        if start.elapsed() > timeout {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "root device {device} did not appear within {} s",
                    timeout.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn mount_root(device: &str, args: &RootArgs) -> io::Result<()> {
    let flags = if args.read_only { libc::MS_RDONLY } else { 0 };
    sys::mount(device, NEW_ROOT, &args.fstype, flags, &args.flags)
}

/// Makes /newroot the root: moves /dev along when the root has a /dev,
/// drops /proc and /sys, and moves the new root over / as switch_root does.
fn enter_root() -> io::Result<()> {
    let new_dev = format!("{NEW_ROOT}/dev");
    if Path::new(&new_dev).is_dir() {
        sys::move_mount("/dev", &new_dev)?;
    } else {
        sys::unmount("/dev")?;
    }
    sys::unmount("/proc")?;
    sys::unmount("/sys")?;

    // NOTE: the initramfs files stay in memory (well under 2 MiB: the init
    // and a few modules) instead of being deleted as switch_root(8) does.
    std::env::set_current_dir(NEW_ROOT)?;
    sys::move_mount(".", "/")?;
    std::os::unix::fs::chroot(".")?;
    std::env::set_current_dir("/")
}
