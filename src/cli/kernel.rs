//! `banger kernel`: the catalog of kernel bundles that VMs boot from.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{not_implemented, Context, Failure};
use crate::store::config::parse_registry;

/// The `banger kernel` subcommands.
#[derive(Debug, Subcommand)]
pub enum KernelCommand {
    /// Import a kernel image (bzImage or ELF vmlinux), a Debian or Ubuntu
    /// kernel package (.deb) or a bundle tarball from `banger kernel export`.
    Import(ImportArgs),

    /// Pull a kernel bundle stored as an OCI artifact in a registry.
    Pull(PullArgs),

    /// Push a kernel bundle to a registry as an OCI artifact.
    Push(PushArgs),

    /// List kernels: name, version, whether it has modules and an initrd.
    #[command(visible_alias = "list")]
    Ls,

    /// Print a kernel's record as JSON: version, files and sizes.
    Inspect {
        /// Kernel name.
        name: String,
    },

    /// Remove kernels from the catalog.
    #[command(visible_alias = "remove")]
    Rm {
        /// Kernel names.
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,

        /// Remove a kernel even while VMs are configured to boot it.
        #[arg(short, long)]
        force: bool,
    },

    /// Set the kernel that `vm run` uses without --kernel, or print it when
    /// NAME is omitted.
    Default {
        /// Kernel name.
        name: Option<String>,
    },

    /// Write a kernel bundle to a tarball that `banger kernel import` reads.
    Export {
        /// Kernel name.
        name: String,

        /// Tarball to write; it is replaced if it exists.
        #[arg(short, long, value_name = "FILE.tar")]
        output: PathBuf,
    },
}

/// Options of `banger kernel import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Kernel image, .deb package or bundle tarball.
    #[arg(value_name = "FILE")]
    pub source: PathBuf,

    /// Modules tree for a bare kernel image: a directory or tar holding
    /// lib/modules/VERSION (its version must match the kernel's).
    #[arg(long, value_name = "DIR|TAR")]
    pub modules: Option<PathBuf>,

    /// Initial ramdisk to boot with a bare kernel image.
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,

    /// Catalog name [default: the kernel version read from the image].
    #[arg(long)]
    pub name: Option<String>,
}

/// Options of `banger kernel pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Registry reference of the kernel artifact.
    #[arg(value_name = "REF")]
    pub reference: String,

    /// Catalog name [default: the name recorded in the bundle].
    #[arg(long)]
    pub name: Option<String>,

    /// Reach this registry (HOST[:PORT]) over plain HTTP; repeatable. Adds to
    /// the `insecure_registries` setting.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]", value_parser = parse_registry)]
    pub insecure_registries: Vec<String>,
}

/// Options of `banger kernel push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Kernel name in the catalog.
    pub name: String,

    /// Registry reference to push to.
    #[arg(value_name = "REF")]
    pub reference: String,

    /// Reach this registry (HOST[:PORT]) over plain HTTP; repeatable. Adds to
    /// the `insecure_registries` setting.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]", value_parser = parse_registry)]
    pub insecure_registries: Vec<String>,
}

/// Runs one `banger kernel` subcommand.
pub fn run(command: KernelCommand, _context: &Context) -> Result<(), Failure> {
    match command {
        KernelCommand::Import(_) => not_implemented("kernel import"),
        KernelCommand::Pull(_) => not_implemented("kernel pull"),
        KernelCommand::Push(_) => not_implemented("kernel push"),
        KernelCommand::Ls => not_implemented("kernel ls"),
        KernelCommand::Inspect { .. } => not_implemented("kernel inspect"),
        KernelCommand::Rm { .. } => not_implemented("kernel rm"),
        KernelCommand::Default { .. } => not_implemented("kernel default"),
        KernelCommand::Export { .. } => not_implemented("kernel export"),
    }
}
