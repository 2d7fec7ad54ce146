//! `banger image`: pull, import, list, inspect, remove and export images.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{not_implemented, Context, Failure};
use crate::store::config::{parse_registry, Platform};

/// The `banger image` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image from a registry and build its ext4 root filesystem.
    Pull(PullArgs),

    /// Import a `docker save` archive, an OCI layout (directory or tar) or a
    /// root filesystem tar.
    Import(ImportArgs),

    /// List images: repository, tag, digest, size and creation time.
    #[command(visible_alias = "list")]
    Ls,

    /// Print an image's record and its config (entrypoint, cmd, env, user) as JSON.
    Inspect {
        /// Image reference or digest.
        #[arg(value_name = "REF")]
        reference: String,
    },

    /// Remove images.
    #[command(visible_alias = "remove")]
    Rm {
        /// Image references or digests.
        #[arg(value_name = "REF", required = true)]
        references: Vec<String>,
    },

    /// Delete cached blobs and built images that no tag refers to.
    Prune,

    /// Copy an image's ext4 root filesystem to a file.
    Export(ExportArgs),
}

/// Options of `banger image pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image reference; short names resolve as Docker does (`debian:bookworm`
    /// is `docker.io/library/debian:bookworm`).
    #[arg(value_name = "REF")]
    pub reference: String,

    /// Platform to select from a multi-platform image, as OS/ARCH[/VARIANT]
    /// [default: the `platform` setting, linux/amd64].
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<Platform>,

    /// Reach this registry (HOST[:PORT]) over plain HTTP; repeatable. Adds to
    /// the `insecure_registries` setting.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]", value_parser = parse_registry)]
    pub insecure_registries: Vec<String>,

    /// Print no progress, only errors.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Options of `banger image import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Archive or directory to import; `-` reads a tar from stdin.
    #[arg(value_name = "FILE|-")]
    pub source: PathBuf,

    /// Name and tag to give the image (NAME[:TAG]) [default: the name
    /// recorded in the archive, if any].
    #[arg(long, value_name = "NAME[:TAG]")]
    pub name: Option<String>,

    /// Platform to select when the archive holds several, as OS/ARCH[/VARIANT]
    /// [default: the `platform` setting, linux/amd64].
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<Platform>,
}

/// Options of `banger image export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Image reference or digest.
    #[arg(value_name = "REF")]
    pub reference: String,

    /// File to write the ext4 image to; it is replaced if it exists.
    #[arg(short, long, value_name = "FILE.ext4")]
    pub output: PathBuf,
}

/// Runs one `banger image` subcommand.
pub fn run(command: ImageCommand, _context: &Context) -> Result<(), Failure> {
    match command {
        ImageCommand::Pull(_) => not_implemented("image pull"),
        ImageCommand::Import(_) => not_implemented("image import"),
        ImageCommand::Ls => not_implemented("image ls"),
        ImageCommand::Inspect { .. } => not_implemented("image inspect"),
        ImageCommand::Rm { .. } => not_implemented("image rm"),
        ImageCommand::Prune => not_implemented("image prune"),
        ImageCommand::Export(_) => not_implemented("image export"),
    }
}
