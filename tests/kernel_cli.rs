//! `banger kernel` commands run as a separate process against a catalog in
//! a temporary data directory, with Debian's real cloud kernel package.

mod kernel_support;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

/// Runs banger with `args` and a data directory under `home`, with no
/// configuration from the caller or the machine.
fn banger(home: &Path, args: &[&str]) -> Output {
    banger_with_env(home, args, &[])
}

/// Runs banger as [`banger`] does, with the extra variables `env`.
fn banger_with_env(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let empty = home.join("empty.toml");
    fs::write(&empty, "").unwrap();
    Command::new(env!("CARGO_BIN_EXE_banger"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("BANGER_CONFIG", &empty)
        .env("BANGER_DATA_DIR", home.join("data"))
        .env("BANGER_CACHE_DIR", home.join("cache"))
        .env("BANGER_RUNTIME_DIR", home.join("run"))
        .envs(env.iter().copied())
        .current_dir(home)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_ok(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        stderr(output)
    );
}

#[test]
fn kernel_commands_with_debian_package() {
    let home = tempfile::tempdir().unwrap();
    let deb = kernel_support::kernel_deb();
    let package = deb.file_name().unwrap().to_string_lossy().into_owned();
    let version = package
        .split('_')
        .next()
        .unwrap()
        .strip_prefix("linux-image-")
        .unwrap()
        .to_string();

    let import = banger(home.path(), &["kernel", "import", deb.to_str().unwrap()]);
    assert_ok(&import);
    assert!(
        stdout(&import).starts_with(&format!("{version} {version} ")),
        "{}",
        stdout(&import)
    );

    let ls = banger(home.path(), &["kernel", "ls"]);
    assert_ok(&ls);
    let text = stdout(&ls);
    assert!(text.starts_with("NAME"), "{text}");
    let row = text.lines().nth(1).unwrap_or_default();
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        columns,
        [version.as_str(), version.as_str(), "bzimage", "yes", "no"],
        "{text}"
    );

    let inspect = banger(home.path(), &["kernel", "inspect", &version]);
    assert_ok(&inspect);
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(info["version"], version.as_str());
    assert_eq!(
        info["guest_modules"],
        format!("/lib/modules/{version}").as_str()
    );
    assert_eq!(info["source"], package.as_str());

    let json_ls = banger(home.path(), &["--json", "kernel", "ls"]);
    assert_ok(&json_ls);
    let list: serde_json::Value = serde_json::from_slice(&json_ls.stdout).unwrap();
    assert_eq!(list[0]["name"], version.as_str());

    // With one kernel, `kernel default` prints it; setting it marks the row.
    let default = banger(home.path(), &["kernel", "default"]);
    assert_ok(&default);
    assert_eq!(stdout(&default).trim(), version);
    assert_ok(&banger(home.path(), &["kernel", "default", &version]));
    let ls = banger(home.path(), &["kernel", "ls"]);
    assert!(
        stdout(&ls)
            .lines()
            .nth(1)
            .unwrap_or_default()
            .trim_end()
            .ends_with('*'),
        "{}",
        stdout(&ls)
    );

    // Export, remove, and import the bundle back.
    let bundle = home.path().join("bundle.tar");
    assert_ok(&banger(
        home.path(),
        &["kernel", "export", &version, "-o", bundle.to_str().unwrap()],
    ));
    let again = banger(home.path(), &["kernel", "import", bundle.to_str().unwrap()]);
    assert_eq!(
        again.status.code(),
        Some(4),
        "importing under a taken name: {}",
        stderr(&again)
    );
    assert_ok(&banger(home.path(), &["kernel", "rm", &version]));
    assert_ok(&banger(
        home.path(),
        &["kernel", "import", bundle.to_str().unwrap()],
    ));
    let inspect_again = banger(home.path(), &["kernel", "inspect", &version]);
    let info_again: serde_json::Value = serde_json::from_slice(&inspect_again.stdout).unwrap();
    assert_eq!(info_again["content_sha256"], info["content_sha256"]);
    assert_eq!(info_again["source"], package.as_str());
}

#[test]
fn kernel_default_without_kernels_names_import() {
    let home = tempfile::tempdir().unwrap();

    let output = banger(home.path(), &["kernel", "default"]);

    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("banger kernel import"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn kernel_errors_exit_codes() {
    let home = tempfile::tempdir().unwrap();
    let text = home.path().join("notes.txt");
    fs::write(&text, "not a kernel").unwrap();
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["kernel", "inspect", "missing"],
            3,
            "kernel `missing` not found",
        ),
        (
            &["kernel", "rm", "missing"],
            3,
            "kernel `missing` not found",
        ),
        (
            &["kernel", "import", "/nonexistent/vmlinuz"],
            3,
            "/nonexistent/vmlinuz",
        ),
        (
            &["kernel", "import", text.to_str().unwrap()],
            1,
            "is not a kernel image",
        ),
        (&["kernel", "inspect", "../x"], 2, "invalid kernel name"),
    ];
    for (args, code, message) in cases {
        let output = banger(home.path(), args);
        assert_eq!(
            output.status.code(),
            Some(*code),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(message),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn ls_warns_about_invalid_entry() {
    let home = tempfile::tempdir().unwrap();
    let kernel = home.path().join("vmlinuz-6.1.0-cli");
    fs::write(&kernel, kernel_support::synthetic_bzimage("6.1.0-cli")).unwrap();
    assert_ok(&banger(
        home.path(),
        &["kernel", "import", kernel.to_str().unwrap()],
    ));
    let broken = home.path().join("data/kernels/broken");
    fs::create_dir(&broken).unwrap();
    fs::write(broken.join("bundle.json"), b"not json").unwrap();

    let ls = banger(home.path(), &["kernel", "ls"]);

    assert_ok(&ls);
    assert!(stdout(&ls).contains("6.1.0-cli"), "{}", stdout(&ls));
    assert!(!stdout(&ls).contains("broken"), "{}", stdout(&ls));
    assert!(stderr(&ls).contains("broken"), "{}", stderr(&ls));
    assert!(
        stderr(&ls).contains("banger kernel rm broken"),
        "{}",
        stderr(&ls)
    );
}

/// Imports a synthetic kernel image of `version` through the CLI.
fn import_synthetic(home: &Path, version: &str) {
    let kernel = home.join(format!("vmlinuz-{version}"));
    fs::write(&kernel, kernel_support::synthetic_bzimage(version)).unwrap();
    assert_ok(&banger(
        home,
        &["kernel", "import", kernel.to_str().unwrap()],
    ));
}

#[test]
fn default_setting_overrides_stored_default() {
    let home = tempfile::tempdir().unwrap();
    import_synthetic(home.path(), "6.1.0-a");
    import_synthetic(home.path(), "6.1.0-b");
    assert_ok(&banger(home.path(), &["kernel", "default", "6.1.0-a"]));
    let env = [("BANGER_DEFAULT_KERNEL", "6.1.0-b")];

    let default = banger_with_env(home.path(), &["kernel", "default"], &env);
    let ls = banger_with_env(home.path(), &["kernel", "ls"], &env);
    let inspect_a = banger_with_env(home.path(), &["kernel", "inspect", "6.1.0-a"], &env);
    let inspect_b = banger_with_env(home.path(), &["kernel", "inspect", "6.1.0-b"], &env);
    let set = banger_with_env(home.path(), &["kernel", "default", "6.1.0-a"], &env);

    assert_ok(&default);
    assert_eq!(stdout(&default).trim(), "6.1.0-b");
    assert_ok(&ls);
    let listing = stdout(&ls);
    let marked: Vec<&str> = listing
        .lines()
        .filter(|line| line.ends_with('*'))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(marked, vec!["6.1.0-b"], "{listing}");
    assert!(
        stdout(&inspect_a).contains("\"default\": false"),
        "{}",
        stdout(&inspect_a)
    );
    assert!(
        stdout(&inspect_b).contains("\"default\": true"),
        "{}",
        stdout(&inspect_b)
    );
    assert_ok(&set);
    assert!(stderr(&set).contains("overrides"), "{}", stderr(&set));
    assert!(stderr(&set).contains("6.1.0-b"), "{}", stderr(&set));
}

#[test]
fn import_missing_or_special_input_exit_codes() {
    let home = tempfile::tempdir().unwrap();
    let kernel = home.path().join("vmlinuz-6.1.0-x");
    fs::write(&kernel, kernel_support::synthetic_bzimage("6.1.0-x")).unwrap();
    let fifo = home.path().join("fifo");
    let mkfifo_status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(mkfifo_status.success(), "mkfifo failed");
    let kernel_arg = kernel.to_str().unwrap();
    let cases: [(&[&str], i32); 4] = [
        (&["kernel", "import", "/nonexistent"], 3),
        (
            &["kernel", "import", kernel_arg, "--initrd", "/nonexistent"],
            3,
        ),
        (
            &["kernel", "import", kernel_arg, "--initrd", "/dev/zero"],
            2,
        ),
        (&["kernel", "import", fifo.to_str().unwrap()], 2),
    ];

    for (args, code) in cases {
        let output = banger(home.path(), args);

        assert_eq!(
            output.status.code(),
            Some(code),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains('`'),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn default_unset_among_several_is_not_found() {
    let home = tempfile::tempdir().unwrap();
    import_synthetic(home.path(), "6.1.0-a");
    import_synthetic(home.path(), "6.1.0-b");

    let output = banger(home.path(), &["kernel", "default"]);

    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("banger kernel default NAME"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn rm_tries_every_name() {
    let home = tempfile::tempdir().unwrap();
    import_synthetic(home.path(), "6.1.0-a");
    import_synthetic(home.path(), "6.1.0-b");

    let output = banger(
        home.path(),
        &["kernel", "rm", "6.1.0-a", "nosuch", "6.1.0-b"],
    );

    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains("nosuch"), "{}", stderr(&output));
    assert!(!home.path().join("data/kernels/6.1.0-a").exists());
    assert!(!home.path().join("data/kernels/6.1.0-b").exists());
}

#[test]
fn export_dash_writes_stdout() {
    let home = tempfile::tempdir().unwrap();
    import_synthetic(home.path(), "6.1.0-a");

    let output = banger(home.path(), &["kernel", "export", "6.1.0-a", "-o", "-"]);

    assert_ok(&output);
    assert!(!home.path().join("-").exists());
    assert!(output.stdout.len() > 512, "{} bytes", output.stdout.len());
    assert_eq!(&output.stdout[257..262], b"ustar");
}
