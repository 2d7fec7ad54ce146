//! Runs the built `banger` binary and checks its help, errors and exit codes.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

/// Runs banger with `args`, HOME set to `home` and BANGER_CONFIG naming an
/// empty file, so neither the caller's BANGER_* variables nor the machine's
/// config files apply; `env` adds variables on top.
fn banger(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_banger"));
    command.args(args).env_clear();
    command.env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command.env("HOME", home);
    command.env("XDG_CONFIG_HOME", home.join("config"));
    // Root reads /etc/banger/config.toml by default; an empty explicit file
    // keeps the test independent of the machine's configuration.
    let empty = home.join("empty.toml");
    fs::write(&empty, "").unwrap();
    command.env("BANGER_CONFIG", &empty);
    // Root's default directories are system paths; tests keep to `home`.
    command.env("BANGER_CACHE_DIR", home.join("cache"));
    command.env("BANGER_DATA_DIR", home.join("data"));
    command.env("BANGER_RUNTIME_DIR", home.join("run"));
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn help_lists_command_tree() {
    let home = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--help"],
            &[
                "image",
                "kernel",
                "vm",
                "daemon",
                "completions",
                "--json",
                "--verbose",
                "--config",
                "Exit codes:",
                "7  command not implemented yet",
            ],
        ),
        (
            &["image", "--help"],
            &["pull", "import", "ls", "inspect", "rm", "prune", "export"],
        ),
        (
            &["kernel", "--help"],
            &[
                "import", "pull", "push", "ls", "inspect", "rm", "default", "export",
            ],
        ),
        (
            &["vm", "--help"],
            &["run", "ls", "stop", "start", "rm", "logs", "ssh", "exec"],
        ),
        (
            &["vm", "run", "--help"],
            &[
                "--cpus",
                "--memory <MIB>",
                "Guest memory in MiB",
                "--kernel",
                "--name",
                "--disk-size <MIB>",
                "-- <CMD>",
            ],
        ),
        (
            &["image", "pull", "--help"],
            &["--platform", "--insecure-registry", "--quiet"],
        ),
        (&["daemon", "--help"], &["--socket", "--group"]),
        (
            &["vm", "stop", "--help"],
            &["--timeout <SECONDS>", "Seconds to wait"],
        ),
        (
            &["kernel", "import", "--help"],
            &["--modules", "--initrd", "--name"],
        ),
    ];
    for (args, expected) in cases {
        let output = banger(home.path(), args, &[]);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        let text = stdout(&output);
        for word in *expected {
            assert!(text.contains(word), "{args:?} help lacks {word:?}:\n{text}");
        }
    }
}

#[test]
fn unimplemented_commands_exit_7() {
    let home = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["vm", "run", "debian", "--", "cat", "/etc/os-release"],
            "vm run",
        ),
        (&["vm", "ls"], "vm ls"),
        (&["vm", "stop", "web"], "vm stop"),
        (&["vm", "start", "web"], "vm start"),
        (&["vm", "rm", "web"], "vm rm"),
        (&["vm", "logs", "web"], "vm logs"),
        (&["vm", "ssh", "web"], "vm ssh"),
        (&["vm", "exec", "web", "--", "true"], "vm exec"),
        (&["daemon"], "daemon"),
    ];
    for (args, command) in cases {
        let output = banger(home.path(), args, &[]);
        assert_eq!(
            output.status.code(),
            Some(7),
            "{args:?}: {}",
            stderr(&output)
        );
        let expected = format!("banger: `banger {command}` is not implemented yet");
        assert!(
            stderr(&output).starts_with(&expected),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(stdout(&output).is_empty(), "{args:?} printed to stdout");
    }
}

#[test]
fn invalid_arguments_exit_2() {
    let home = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["vm", "run", "debian", "--cpus", "0"], "--cpus"),
        (&["vm", "run", "debian", "--cpus", "33"], "--cpus"),
        (&["vm", "run", "debian", "--memory", "lots"], "--memory"),
        (&["vm", "run", "debian", "--env", "=x"], "KEY=VALUE"),
        (
            &["image", "pull", "debian", "--platform", "amd64"],
            "OS/ARCH",
        ),
        (
            &[
                "image",
                "pull",
                "debian",
                "--insecure-registry",
                "http://r:5000",
            ],
            "HOST[:PORT]",
        ),
        (&["image", "frobnicate"], "frobnicate"),
        (&["vm", "exec", "web"], "CMD"),
    ];
    for (args, mention) in cases {
        let output = banger(home.path(), args, &[]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(mention),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn bad_config_file_exits_2() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("bad.toml");
    let cases = [
        ("colour = \"blue\"\n", "unknown key `colour`"),
        ("platform = 64\n", "key `platform`"),
        ("log_level = \"loud\"\n", "invalid log level `loud`"),
        ("platform = \n", "invalid TOML"),
    ];
    for (text, mention) in cases {
        fs::write(&file, text).unwrap();
        let output = banger(
            home.path(),
            &["--config", file.to_str().unwrap(), "image", "ls"],
            &[],
        );
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{text}: {message}");
        assert!(message.starts_with("banger: "), "{message}");
        assert!(message.contains(mention), "{text}: {message}");
        assert!(message.contains(file.to_str().unwrap()), "{message}");
    }
}

#[test]
fn missing_config_file_exits_2() {
    let home = tempfile::tempdir().unwrap();
    let output = banger(
        home.path(),
        &["--config", "/nonexistent/banger.toml", "vm", "ls"],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("`/nonexistent/banger.toml` not found"));
}

#[test]
fn config_env_names_file() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("from-env.toml");
    fs::write(&file, "nonsense = 1\n").unwrap();
    let output = banger(
        home.path(),
        &["image", "ls"],
        &[("BANGER_CONFIG", file.to_str().unwrap())],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("unknown key `nonsense`"));
}

#[test]
fn bad_env_value_exits_2() {
    let home = tempfile::tempdir().unwrap();
    let cases = [
        ("BANGER_LOG_LEVEL", "loud"),
        ("BANGER_PLATFORM", "linux"),
        ("BANGER_CACHE_DIR", "relative/cache"),
        ("BANGER_INSECURE_REGISTRIES", "127.0.0.1:5000/v2"),
    ];
    for (variable, value) in cases {
        let output = banger(home.path(), &["vm", "ls"], &[(variable, value)]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{variable}: {message}");
        assert!(message.contains(variable), "{message}");
        assert!(message.contains(value), "{message}");
    }
}

#[test]
fn completions_for_each_shell() {
    let home = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let output = banger(home.path(), &["completions", shell], &[]);
        assert!(output.status.success(), "{shell}: {}", stderr(&output));
        let script = stdout(&output);
        assert!(script.contains("banger"), "{shell}");
        assert!(script.contains("insecure-registry"), "{shell}");
    }
}

#[test]
fn bash_completion_script_is_valid_bash() {
    let home = tempfile::tempdir().unwrap();
    let output = banger(home.path(), &["completions", "bash"], &[]);
    let script = home.path().join("banger.bash");
    fs::write(&script, &output.stdout).unwrap();
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", stderr(&check));
}

#[test]
fn completions_ignore_broken_config() {
    let home = tempfile::tempdir().unwrap();
    let output = banger(
        home.path(),
        &["completions", "bash"],
        &[("BANGER_CONFIG", "/nonexistent/banger.toml")],
    );
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn unknown_shell_exits_2() {
    let home = tempfile::tempdir().unwrap();
    let output = banger(home.path(), &["completions", "tcsh"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("tcsh"));
}

#[test]
fn verbose_logs_to_stderr() {
    let home = tempfile::tempdir().unwrap();
    let output = banger(home.path(), &["-vv", "image", "ls"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("loaded configuration"),
        "{}",
        stderr(&output)
    );

    let quiet = banger(home.path(), &["image", "ls"], &[]);
    assert!(!stderr(&quiet).contains("loaded configuration"));
}

#[test]
fn version_exits_0() {
    let home = tempfile::tempdir().unwrap();
    let output = banger(home.path(), &["--version"], &[]);
    assert!(output.status.success());
    assert!(stdout(&output).starts_with("banger "));
}

#[test]
fn readme_lists_help_exit_codes() {
    let home = tempfile::tempdir().unwrap();
    let help = stdout(&banger(home.path(), &["--help"], &[]));
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();

    // Help lines look like "  3  image, kernel or VM not found"; README
    // rows look like "| 3 | image, kernel or VM not found |" with backticks.
    let help_codes: Vec<(String, String)> = help
        .lines()
        .skip_while(|line| *line != "Exit codes:")
        .skip(1)
        .filter_map(|line| line.trim().split_once("  "))
        .map(|(code, meaning)| (code.to_owned(), meaning.trim().to_owned()))
        .collect();
    assert!(help_codes.len() >= 8, "exit codes in --help:\n{help}");
    for (code, meaning) in &help_codes {
        let row = format!("| {code} | {meaning} |");
        assert!(
            readme.replace('`', "").contains(&row),
            "README lacks the exit code row {row:?}"
        );
    }
}
