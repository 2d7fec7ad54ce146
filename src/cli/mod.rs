//! Command-line interface: argument parsing, output and exit codes.

/// Parses the command line, runs the command and returns the exit code.
pub fn run() -> i32 {
    // NOTE: replaced by the clap command tree; every command is unimplemented here.
    eprintln!("banger: no commands are implemented yet");
    1
}
