//! Command-line interface: argument parsing, output and exit codes.
//!
//! Each command group has its own file with its clap arguments and a `run`
//! function; this file holds the global options, logging, configuration
//! loading and the mapping of errors to exit codes.

pub mod daemon;
pub mod image;
pub mod kernel;
pub mod vm;

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};

use crate::error::{Classify, ExitCode};
use crate::store::config::Config;

/// Exit codes, shown by `banger --help` and listed in the README.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  general failure
  2  invalid command line, config file or BANGER_* environment variable
  3  image, kernel or VM not found
  4  conflict with existing state (name in use, kernel in use)
  5  registry or other remote failed or could not be reached
  6  host resource failed (tap, loop device, VMM process, disk space)
  7  command not implemented yet";

/// banger turns OCI container images into bootable microVMs.
#[derive(Debug, Parser)]
#[command(name = "banger", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Print list and inspect output as JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    /// Log more to stderr: each -v raises the configured log_level one step
    /// (from the default warn: -v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Read settings from FILE instead of /etc/banger/config.toml (root) or
    /// $XDG_CONFIG_HOME/banger/config.toml (other users).
    #[arg(long, global = true, value_name = "FILE", env = "BANGER_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// The top-level command groups.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pull, import, list and export OCI images as ext4 root filesystems.
    #[command(subcommand)]
    Image(image::ImageCommand),

    /// Manage the kernel catalog that VMs boot from.
    #[command(subcommand)]
    Kernel(kernel::KernelCommand),

    /// Run and manage microVMs.
    #[command(subcommand)]
    Vm(vm::VmCommand),

    /// Run the daemon that owns host resources and serves the CLI.
    Daemon(daemon::DaemonArgs),

    /// Print a shell completion script to stdout.
    Completions {
        /// Shell to write the script for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// What every command receives besides its own arguments.
#[derive(Debug)]
pub struct Context {
    pub config: Config,
    /// Whether list and inspect commands print JSON.
    pub json: bool,
}

/// Errors raised by the CLI layer itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The command is part of the command tree but does nothing yet.
    #[error("`banger {command}` is not implemented yet; the README lists what works today")]
    NotImplemented { command: &'static str },

    /// Writing a completion script failed.
    #[error("failed to write the completion script to stdout")]
    WriteCompletions(#[source] io::Error),
}

impl Classify for CliError {
    fn exit_code(&self) -> ExitCode {
        match self {
            CliError::NotImplemented { .. } => ExitCode::NotImplemented,
            CliError::WriteCompletions(_) => ExitCode::General,
        }
    }
}

/// The error every command returns: the message to print and the exit code.
///
/// Any error type that implements [`Classify`] converts into it with `?`,
/// so each module keeps its own error enum.
#[derive(Debug)]
pub struct Failure {
    message: String,
    code: ExitCode,
}

impl Failure {
    /// Creates a failure from a message, for errors that have no enum of
    /// their own.
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code,
        }
    }

    /// The process exit code for this failure.
    pub fn exit_code(&self) -> ExitCode {
        self.code
    }
}

impl<E: StdError + Classify> From<E> for Failure {
    fn from(err: E) -> Self {
        Self {
            message: message_with_sources(&err),
            code: err.exit_code(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Joins `err` and its sources with `: `, skipping a source whose text the
/// message already ends with (errors that print their source themselves).
fn message_with_sources(err: &dyn StdError) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Parses the command line, runs the command and returns the exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // clap prints help and version to stdout and usage errors to stderr.
            let code = if err.use_stderr() {
                ExitCode::Usage
            } else {
                ExitCode::Ok
            };
            // Nothing useful is left to do when stdout or stderr is closed.
            let _ = err.print();
            return code as i32;
        }
    };

    match execute(cli) {
        Ok(()) => ExitCode::Ok as i32,
        Err(failure) => {
            eprintln!("banger: {failure}");
            failure.exit_code() as i32
        }
    }
}

/// Runs a parsed command line.
pub fn execute(cli: Cli) -> Result<(), Failure> {
    // A completion script needs no configuration, so a broken config file
    // does not keep users from installing completions.
    if let Command::Completions { shell } = cli.command {
        return write_completions(shell);
    }

    let config = Config::load(cli.config.as_deref())?;
    // `--quiet` promises only errors, so it also silences retry warnings.
    let quiet =
        matches!(&cli.command, Command::Image(image::ImageCommand::Pull(args)) if args.quiet);
    let base_level = if quiet {
        crate::store::config::LogLevel::Error
    } else {
        config.log_level
    };
    init_logging(base_level.raised_by(cli.verbose));
    tracing::debug!(file = ?config.file, ?config.paths, "loaded configuration");

    let context = Context {
        config,
        json: cli.json,
    };
    match cli.command {
        Command::Image(command) => image::run(command, &context),
        Command::Kernel(command) => kernel::run(command, &context),
        Command::Vm(command) => vm::run(command, &context),
        Command::Daemon(args) => daemon::run(args, &context),
        Command::Completions { .. } => unreachable!("handled before loading the configuration"),
    }
}

fn init_logging(level: crate::store::config::LogLevel) {
    // A second initialisation (tests that call `execute` twice) keeps the
    // first subscriber, which is harmless.
    let _ = tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_max_level(level.to_filter())
        .with_target(false)
        .try_init();
}

fn write_completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "banger", &mut script);
    io::Write::write_all(&mut io::stdout().lock(), &script).map_err(CliError::WriteCompletions)?;
    Ok(())
}

/// The error of a command that has no implementation yet.
pub(crate) fn not_implemented(command: &'static str) -> Result<(), Failure> {
    Err(CliError::NotImplemented { command }.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn failure_appends_unprinted_sources() {
        let err = CliError::WriteCompletions(io::Error::other("broken pipe"));
        let failure = Failure::from(err);
        assert_eq!(
            failure.to_string(),
            "failed to write the completion script to stdout: broken pipe"
        );
        assert_eq!(failure.exit_code(), ExitCode::General);
    }
}
