//! `banger vm`: run and manage microVMs.

use clap::{Args, Subcommand, ValueEnum};

use super::{not_implemented, Context, Failure};

/// Largest vCPU count a VM may have; Firecracker's API (v1.17) accepts 1 to 32.
pub const MAX_VCPUS: u8 = 32;

/// The `banger vm` subcommands.
#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Create a VM from an image and boot it; with a command after `--`,
    /// run that command in place of the image's entrypoint and cmd.
    Run(RunArgs),

    /// List VMs: name, image, state, address and uptime.
    #[command(visible_alias = "list")]
    Ls,

    /// Stop running VMs: ask the guest to power off, then kill the VMM
    /// after the timeout.
    Stop {
        /// VM names.
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,

        /// Seconds to wait for the guest to power off before killing its VMM.
        #[arg(short, long, value_name = "SECONDS", default_value_t = 10)]
        timeout: u32,
    },

    /// Boot stopped VMs again with their existing disks.
    Start {
        /// VM names.
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,
    },

    /// Delete VMs and their disks.
    #[command(visible_alias = "remove")]
    Rm {
        /// VM names.
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,

        /// Stop running VMs first instead of refusing to delete them.
        #[arg(short, long)]
        force: bool,
    },

    /// Print a VM's serial console output.
    Logs {
        /// VM name.
        name: String,

        /// Keep printing new output until interrupted.
        #[arg(short, long)]
        follow: bool,
    },

    /// Open an SSH session to a VM.
    Ssh {
        /// VM name.
        name: String,

        /// Guest user to log in as.
        #[arg(short, long, default_value = "root")]
        user: String,

        /// Arguments passed to ssh after the destination (a remote command).
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },

    /// Run a command in a running VM and exit with its exit status.
    Exec {
        /// VM name.
        name: String,

        /// Command and arguments to run in the guest.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
}

/// Options of `banger vm run`, named as `docker run` names them.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Image reference or digest; a reference that is not present is pulled.
    #[arg(value_name = "IMAGE")]
    pub image: String,

    /// VM name [default: a generated name].
    #[arg(long)]
    pub name: Option<String>,

    /// Number of virtual CPUs.
    #[arg(long, value_name = "COUNT", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=i64::from(MAX_VCPUS)))]
    pub cpus: u8,

    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub memory: u32,

    /// Kernel from the catalog to boot [default: the default kernel].
    #[arg(long, value_name = "NAME")]
    pub kernel: Option<String>,

    /// Size of the VM's writable root disk in MiB [default: the image's
    /// filesystem size].
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    pub disk_size: Option<u64>,

    /// Environment variable for the guest command, as KEY=VALUE; repeatable.
    #[arg(short, long = "env", value_name = "KEY=VALUE", value_parser = parse_env_var)]
    pub env: Vec<(String, String)>,

    /// Start the VM in the background and print its name.
    #[arg(short, long)]
    pub detach: bool,

    /// Delete the VM and its disk when it stops.
    #[arg(long)]
    pub rm: bool,

    /// Virtual machine monitor to run the VM with.
    #[arg(long, value_enum, default_value_t = VmmChoice::Auto)]
    pub vmm: VmmChoice,

    /// Command and arguments to run in the guest in place of the image's
    /// entrypoint and cmd.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Virtual machine monitor that runs a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum VmmChoice {
    /// Firecracker when it is installed and KVM works, QEMU otherwise.
    Auto,
    /// Firecracker; fails when it is not installed or KVM does not work.
    Firecracker,
    /// QEMU, with KVM when it works and TCG emulation otherwise.
    Qemu,
}

/// Splits `KEY=VALUE`; the key must be non-empty and the value may be empty.
fn parse_env_var(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!(
            "invalid environment variable `{text}`: expected KEY=VALUE"
        )),
    }
}

/// Runs one `banger vm` subcommand.
pub fn run(command: VmCommand, _context: &Context) -> Result<(), Failure> {
    match command {
        VmCommand::Run(_) => not_implemented("vm run"),
        VmCommand::Ls => not_implemented("vm ls"),
        VmCommand::Stop { .. } => not_implemented("vm stop"),
        VmCommand::Start { .. } => not_implemented("vm start"),
        VmCommand::Rm { .. } => not_implemented("vm rm"),
        VmCommand::Logs { .. } => not_implemented("vm logs"),
        VmCommand::Ssh { .. } => not_implemented("vm ssh"),
        VmCommand::Exec { .. } => not_implemented("vm exec"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_var_parsing() {
        assert_eq!(
            parse_env_var("A=b=c"),
            Ok(("A".to_owned(), "b=c".to_owned()))
        );
        assert_eq!(
            parse_env_var("EMPTY="),
            Ok(("EMPTY".to_owned(), String::new()))
        );
        assert!(parse_env_var("=x").is_err());
        assert!(parse_env_var("NOEQUALS").is_err());
    }
}
