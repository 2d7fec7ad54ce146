//! The kernel command line arguments the init reads.

/// Root filesystem settings from the kernel command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootArgs {
    /// `root=`: the root device node.
    pub device: Option<String>,
    /// `rootfstype=`, ext4 when missing.
    pub fstype: String,
    /// `rootflags=`: file system mount options.
    pub flags: String,
    /// `ro` mounts read-only; `rw` (the default here) read-write.
    pub read_only: bool,
    /// `init=`: the program to run on the root filesystem, `/sbin/init` when missing.
    pub init: String,
    /// `rootdelay=`: seconds to wait for the root device, 10 when missing.
    pub wait_secs: u64,
}

/// Parses the text of /proc/cmdline. Later arguments win, as in the kernel.
pub fn parse(cmdline: &str) -> RootArgs {
    let mut args = RootArgs {
        device: None,
        fstype: "ext4".to_string(),
        flags: String::new(),
        read_only: false,
        init: "/sbin/init".to_string(),
        wait_secs: 10,
    };
    for word in cmdline.split_ascii_whitespace() {
        match word.split_once('=') {
            Some(("root", value)) => args.device = Some(value.to_string()),
            Some(("rootfstype", value)) => args.fstype = value.to_string(),
            Some(("rootflags", value)) => args.flags = value.to_string(),
            Some(("init", value)) => args.init = value.to_string(),
            Some(("rootdelay", value)) => {
                if let Ok(secs) = value.parse() {
                    args.wait_secs = secs;
                }
            }
            None if word == "ro" => args.read_only = true,
            None if word == "rw" => args.read_only = false,
            _ => {}
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_root_arguments() {
        let args = parse("console=ttyS0 root=/dev/vda rootfstype=ext4 ro init=/init panic=-1\n");
        assert_eq!(args.device.as_deref(), Some("/dev/vda"));
        assert_eq!(args.fstype, "ext4");
        assert!(args.read_only);
        assert_eq!(args.init, "/init");
    }

    #[test]
    fn parse_defaults_and_last_wins() {
        let args = parse("ro rw rootdelay=3 rootdelay=x");
        assert_eq!(args.device, None);
        assert!(!args.read_only);
        assert_eq!(args.init, "/sbin/init");
        assert_eq!(args.wait_secs, 3);
    }
}
