//! Checks of the differential walk itself, on two host directories, so a
//! walk that reports nothing is known to be able to report something.
//! Needs root and the commands listed in the oracle module.
#![cfg(feature = "dir")]

mod oracle;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

#[test]
fn copy_walks_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    fs::create_dir(&source).unwrap();
    oracle::make_synthetic_source(&source);
    let copy = dir.path().join("copy");
    oracle::run(Command::new("cp").arg("-a").arg(&source).arg(&copy));

    let source_walk = oracle::walk(&source);
    assert!(
        source_walk.len() > oracle::SHARED_XATTR_FILES + 30,
        "{} paths",
        source_walk.len()
    );
    oracle::assert_same_walk(&source_walk, &oracle::walk(&copy));
}

#[test]
fn changes_reported() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    fs::create_dir(&source).unwrap();
    fs::write(source.join("content"), b"one").unwrap();
    fs::write(source.join("mode"), b"").unwrap();
    fs::write(source.join("xattr"), b"").unwrap();
    fs::write(source.join("time"), b"").unwrap();
    fs::write(source.join("gone"), b"").unwrap();
    let copy = dir.path().join("copy");
    oracle::run(Command::new("cp").arg("-a").arg(&source).arg(&copy));

    fs::write(copy.join("content"), b"two").unwrap();
    oracle::run(
        Command::new("touch")
            .arg("-r")
            .arg(source.join("content"))
            .arg(copy.join("content")),
    );
    fs::set_permissions(copy.join("mode"), fs::Permissions::from_mode(0o4711)).unwrap();
    xattr::set(copy.join("xattr"), "user.added", b"1").unwrap();
    oracle::run(
        Command::new("touch")
            .args(["-m", "-d", "@5.000000001"])
            .arg(copy.join("time")),
    );
    fs::remove_file(copy.join("gone")).unwrap();
    fs::write(copy.join("extra"), b"").unwrap();
    oracle::run(
        Command::new("touch")
            .args(["-m", "-d", "@1"])
            .arg(&copy)
            .arg(&source),
    );

    let lines = oracle::differences(&oracle::walk(&source), &oracle::walk(&copy));
    let fields: Vec<String> = lines
        .iter()
        .map(|line| line.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        fields,
        [
            "/content: sha256",
            "/gone: missing",
            "/mode: mode",
            "/time: mtime",
            "/xattr: xattrs",
            "/extra: only"
        ],
        "{lines:#?}"
    );
}
