//! `banger daemon`: run the daemon in the foreground.

use std::path::PathBuf;

use clap::Args;

use super::{not_implemented, Context, Failure};

/// Options of `banger daemon`.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Unix socket to serve the CLI on [default: banger.sock in the runtime
    /// directory].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Group whose members may open the socket, besides root.
    #[arg(long, value_name = "NAME", default_value = "banger")]
    pub group: String,
}

/// Runs the daemon until it is stopped.
pub fn run(_args: DaemonArgs, _context: &Context) -> Result<(), Failure> {
    not_implemented("daemon")
}
