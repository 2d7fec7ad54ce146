//! banger-guest: the init that banger runs inside its microVMs.
//!
//! It runs as PID 1 in two places:
//! - as `/init` of the initrd banger generates when the kernel lacks a
//!   built-in driver for the root disk: it loads the modules listed in
//!   `/etc/banger/initrd-modules`, mounts the root filesystem named by
//!   `root=` and `rootfstype=`, and runs `init=` there;
//! - as the root filesystem's init: it mounts /proc, /sys and /dev, prints a
//!   ready line with the root device, kernel release and loaded modules, and
//!   powers the VM off.
//!
//! Build it static, so it runs without a libc in the guest:
//! `RUSTFLAGS="-C target-feature=+crt-static" cargo build -p banger-guest --target x86_64-unknown-linux-gnu`.

mod cmdline;
mod initrd;
mod root;
mod sys;

use std::path::Path;
use std::process::ExitCode;

/// The module list that marks the initrd stage; banger's initrd writer puts it there.
const MODULE_LIST: &str = "/etc/banger/initrd-modules";

fn main() -> ExitCode {
    if std::process::id() != 1 {
        eprintln!("banger-guest: must run as PID 1 (the init) inside a banger VM; it mounts file systems and powers the machine off");
        return ExitCode::from(2);
    }

    let result = if Path::new(MODULE_LIST).exists() {
        initrd::switch_to_root(Path::new(MODULE_LIST))
    } else {
        root::report_and_power_off()
    };

    // PID 1 must not exit, or the kernel panics; report and stop the VM.
    if let Err(error) = result {
        println!("banger-guest: error: {error}");
    }
    let error = sys::power_off();
    println!("banger-guest: power off failed: {error}");
    loop {
        std::thread::park();
    }
}
