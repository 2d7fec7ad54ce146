//! Oracles for the integration tests: `e2fsck -fn`, a read-only kernel
//! mount through a loop device, and a differential walk that compares a
//! mounted image with the directory it was built from.
//!
//! Everything here needs root and the commands `e2fsck`, `mount`,
//! `umount` and `getcap` (packages e2fsprogs, util-linux, libcap2-bin).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Fixture root from `BANGER_FIXTURES`, default /var/tmp/banger-fixtures.
/// Panics, naming the script that builds the fixtures, when it is missing.
pub fn fixtures() -> PathBuf {
    let root = std::env::var_os("BANGER_FIXTURES")
        .map_or_else(|| PathBuf::from("/var/tmp/banger-fixtures"), PathBuf::from);
    assert!(
        root.join("rootfs").is_dir(),
        "fixtures not found in {}: build them with tests/fixtures/build-images.sh or set BANGER_FIXTURES",
        root.display()
    );
    root
}

/// Runs `command`, panicking with its output when it cannot start or fails.
pub fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("failed to run {command:?}: {err}"));
    assert!(
        output.status.success(),
        "{command:?} exited with {}:\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Asserts that `e2fsck -fn` finds nothing to fix in `image`.
pub fn assert_fsck_clean(image: &Path) {
    let output = Command::new("e2fsck")
        .env(
            "E2FSCK_CONFIG",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/e2fsck.conf"),
        )
        .arg("-fn")
        .arg(image)
        .output()
        .unwrap_or_else(|err| panic!("failed to run e2fsck: {err}; install e2fsprogs"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "e2fsck -fn {} exited with {}:\n{stdout}{stderr}",
        image.display(),
        output.status
    );
    // A clean run prints the five passes and a summary line, nothing else.
    let unexpected: Vec<&str> = stdout
        .lines()
        .filter(|line| !line.starts_with("Pass ") && !line.contains(" files ("))
        .collect();
    assert!(unexpected.is_empty(), "e2fsck -fn reported:\n{stdout}");
}

/// An image mounted read-only on a mount point of its own; unmounted (and
/// its loop device released) on drop.
pub struct Mount {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Mount {
    pub fn new(image: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ext4-writer-mnt")
            .tempdir()
            .unwrap();
        let path = dir.path().join("mnt");
        fs::create_dir(&path).unwrap();
        run(Command::new("mount")
            .args(["-t", "ext4", "-o", "loop,ro"])
            .arg(image)
            .arg(&path));
        Self { _dir: dir, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // mount -o loop sets autoclear, so unmounting frees the loop device.
        let status = Command::new("umount").arg(&self.path).status();
        if !matches!(status, Ok(status) if status.success()) {
            eprintln!("failed to unmount {}: {status:?}", self.path.display());
        }
    }
}

/// What the walk compares for one path, except the name.
#[derive(Debug, PartialEq, Eq)]
pub struct Record {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Size of regular files and symlinks; directory sizes depend on the
    /// filesystem and are left out.
    pub size: Option<u64>,
    pub links: u64,
    pub sha256: Option<String>,
    pub target: Option<Vec<u8>>,
    pub rdev: Option<u64>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// `getcap` output without the path, for files with
    /// security.capability.
    pub capabilities: Option<String>,
    pub mtime: (i64, i64),
}

/// Walks `root` without following symlinks and records every path below
/// it, `""` being `root` itself.
pub fn walk(root: &Path) -> BTreeMap<Vec<u8>, Record> {
    let mut records = BTreeMap::new();
    let mut pending = vec![(root.to_path_buf(), Vec::new())];
    while let Some((path, relative)) = pending.pop() {
        let stat =
            fs::symlink_metadata(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        if stat.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                let entry = entry.unwrap();
                let mut child = relative.clone();
                child.push(b'/');
                child.extend_from_slice(entry.file_name().as_bytes());
                pending.push((entry.path(), child));
            }
        }
        records.insert(relative, record(&path, &stat));
    }
    records
}

fn record(path: &Path, stat: &fs::Metadata) -> Record {
    let file_type = stat.file_type();
    let kind = if file_type.is_dir() {
        "directory"
    } else if file_type.is_file() {
        "file"
    } else if file_type.is_symlink() {
        "symlink"
    } else if file_type.is_char_device() {
        "char device"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_fifo() {
        "fifo"
    } else {
        "socket"
    };
    let xattrs: BTreeMap<Vec<u8>, Vec<u8>> = xattr::list(path)
        .unwrap_or_else(|err| panic!("failed to list xattrs of {}: {err}", path.display()))
        .filter_map(|name| {
            let value = xattr::get(path, &name).ok()??;
            Some((name.as_bytes().to_vec(), value))
        })
        .collect();
    let capabilities = xattrs
        .contains_key(&b"security.capability"[..])
        .then(|| getcap(path));

    Record {
        kind,
        mode: stat.mode(),
        uid: stat.uid(),
        gid: stat.gid(),
        size: (file_type.is_file() || file_type.is_symlink()).then_some(stat.len()),
        links: stat.nlink(),
        sha256: file_type.is_file().then(|| sha256(path)),
        target: file_type.is_symlink().then(|| {
            fs::read_link(path)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        }),
        rdev: (file_type.is_char_device() || file_type.is_block_device()).then_some(stat.rdev()),
        xattrs,
        capabilities,
        mtime: (stat.mtime(), stat.mtime_nsec()),
    }
}

fn sha256(path: &Path) -> String {
    let mut file = File::open(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 16];
    loop {
        let read = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => panic!("{}: {err}", path.display()),
        };
        hasher.update(&buffer[..read]);
    }
    hasher
        .finalize()
        .iter()
        .fold(String::new(), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

fn getcap(path: &Path) -> String {
    let output = run(Command::new("getcap").arg(path));
    let path_text = path.to_string_lossy();
    output
        .trim()
        .strip_prefix(path_text.as_ref())
        .unwrap_or(&output)
        .trim()
        .to_string()
}

/// Compares the walk of a mounted image with the walk of its source and
/// returns one line per difference.
///
/// The image's `/lost+found` is left out when the source has none, and
/// the root's link count is compared with it taken away.
pub fn differences(
    source: &BTreeMap<Vec<u8>, Record>,
    image: &BTreeMap<Vec<u8>, Record>,
) -> Vec<String> {
    let lost_found = b"/lost+found".to_vec();
    let added_lost_found = image.contains_key(&lost_found) && !source.contains_key(&lost_found);
    let mut lines = Vec::new();
    for (path, expected) in source {
        let display_path = String::from_utf8_lossy(path);
        let Some(actual) = image.get(path) else {
            lines.push(format!("{display_path}: missing from the image"));
            continue;
        };
        let mut actual_links = actual.links;
        if path.is_empty() && added_lost_found {
            actual_links -= 1;
        }
        let fields: [(&str, String, String); 12] = [
            ("type", expected.kind.into(), actual.kind.into()),
            (
                "mode",
                format!("{:o}", expected.mode),
                format!("{:o}", actual.mode),
            ),
            ("uid", expected.uid.to_string(), actual.uid.to_string()),
            ("gid", expected.gid.to_string(), actual.gid.to_string()),
            (
                "size",
                format!("{:?}", expected.size),
                format!("{:?}", actual.size),
            ),
            (
                "links",
                expected.links.to_string(),
                actual_links.to_string(),
            ),
            (
                "sha256",
                format!("{:?}", expected.sha256),
                format!("{:?}", actual.sha256),
            ),
            (
                "target",
                format!("{:?}", expected.target),
                format!("{:?}", actual.target),
            ),
            (
                "rdev",
                format!("{:?}", expected.rdev),
                format!("{:?}", actual.rdev),
            ),
            (
                "xattrs",
                format!("{:?}", expected.xattrs),
                format!("{:?}", actual.xattrs),
            ),
            (
                "getcap",
                format!("{:?}", expected.capabilities),
                format!("{:?}", actual.capabilities),
            ),
            (
                "mtime",
                format!("{:?}", expected.mtime),
                format!("{:?}", actual.mtime),
            ),
        ];
        for (field, expected, actual) in fields {
            if expected != actual {
                lines.push(format!(
                    "{display_path}: {field} {expected} in the source, {actual} in the image"
                ));
            }
        }
    }
    for path in image.keys() {
        let is_lost_found = added_lost_found && path.starts_with(&lost_found);
        if !source.contains_key(path) && !is_lost_found {
            lines.push(format!(
                "{}: only in the image",
                String::from_utf8_lossy(path)
            ));
        }
    }
    lines
}

/// Asserts that the walks agree, listing the first differences.
pub fn assert_same_walk(source: &BTreeMap<Vec<u8>, Record>, image: &BTreeMap<Vec<u8>, Record>) {
    let lines = differences(source, image);
    assert!(
        lines.is_empty(),
        "{} differences between the source and the mounted image, first ones:\n{}",
        lines.len(),
        lines
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Number of files in `/shared` that carry the same large xattr set.
pub const SHARED_XATTR_FILES: usize = 1000;

/// Fills `root` with every node kind and the hard cases of metadata:
/// setuid, setgid and sticky bits, hard links to a file, a symlink and a
/// device, a fifo, a socket, devices, xattrs in the inode and in a block,
/// an access and a default ACL, a file capability, a 3000-byte xattr value,
/// 1000 files sharing one xattr set, a sparse file, wide uids and gids,
/// times before 1970 and after 2038 with nanoseconds, and names that are
/// 255 bytes long or not UTF-8.
///
/// Needs root and the commands setfacl (package acl) and setcap (package
/// libcap2-bin).
pub fn make_synthetic_source(root: &Path) {
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::fs::{lchown, symlink, FileExt, PermissionsExt};

    let path = |name: &str| root.join(name);
    let chmod = |name: &str, mode: u32| {
        fs::set_permissions(path(name), fs::Permissions::from_mode(mode)).unwrap();
    };
    let set_xattr = |name: &str, key: &str, value: &[u8]| {
        xattr::set(path(name), key, value)
            .unwrap_or_else(|err| panic!("failed to set {key} on {name}: {err}"));
    };
    let touch = |name: &str, time: &str| {
        run(Command::new("touch")
            .args(["-h", "-m", "-d", time])
            .arg(path(name)));
    };

    fs::write(path("hello"), b"hello, world\n").unwrap();
    fs::write(path("empty"), b"").unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(path("big"), &big).unwrap();
    let sparse = File::create(path("sparse")).unwrap();
    sparse.set_len(5 << 20).unwrap();
    sparse.write_all_at(b"middle", 2 << 20).unwrap();
    drop(sparse);

    fs::write(path("suid"), b"#!/bin/sh\n").unwrap();
    chmod("suid", 0o4755);
    fs::create_dir(path("setgid")).unwrap();
    chmod("setgid", 0o2775);
    fs::create_dir(path("sticky")).unwrap();
    chmod("sticky", 0o1777);
    for (name, uid, gid) in [
        ("uid65536", 65536, 65535),
        ("uid100000", 100000, 100000),
        ("uidmax", 4294967294, 4294967294),
    ] {
        fs::write(path(name), name).unwrap();
        lchown(path(name), Some(uid), Some(gid)).unwrap();
    }

    fs::create_dir(path("links")).unwrap();
    fs::write(path("links/file"), b"linked").unwrap();
    fs::hard_link(path("links/file"), path("links/file2")).unwrap();
    fs::hard_link(path("links/file"), path("setgid/file3")).unwrap();
    symlink("file", path("links/symlink")).unwrap();
    fs::hard_link(path("links/symlink"), path("links/symlink2")).unwrap();
    run(Command::new("mknod")
        .arg(path("links/null"))
        .args(["c", "1", "3"]));
    fs::hard_link(path("links/null"), path("links/null2")).unwrap();

    symlink("/etc/alternatives/awk", path("short-link")).unwrap();
    symlink("t".repeat(59), path("link59")).unwrap();
    symlink("t".repeat(60), path("link60")).unwrap();
    symlink("d/".repeat(2047) + "x", path("link4095")).unwrap();
    run(Command::new("mkfifo").arg(path("fifo")));
    drop(std::os::unix::net::UnixListener::bind(path("socket")).unwrap());
    run(Command::new("mknod").arg(path("sda")).args(["b", "8", "0"]));
    run(Command::new("mknod")
        .arg(path("nvme"))
        .args(["b", "259", "1048575"]));

    fs::write(path("xattrs"), b"x").unwrap();
    set_xattr("xattrs", "user.small", b"1");
    set_xattr("xattrs", "trusted.overlay.opaque", b"y");
    set_xattr("xattrs", "user.binary", &[0, 0xff, 0x80, 10]);
    fs::write(path("big-xattr"), b"x").unwrap();
    set_xattr("big-xattr", "user.large", &[0x42; 3000]);
    fs::write(path("ping"), b"\x7fELF").unwrap();
    chmod("ping", 0o755);
    run(Command::new("setcap")
        .arg("cap_net_raw=ep")
        .arg(path("ping")));
    fs::write(path("acl-file"), b"acl").unwrap();
    run(Command::new("setfacl")
        .args(["-m", "u:1000:rx,g:100:r,m:rwx"])
        .arg(path("acl-file")));
    fs::create_dir(path("acl-dir")).unwrap();
    run(Command::new("setfacl")
        .args(["-d", "-m", "u:1000:rwx,g::rx,o::-"])
        .arg(path("acl-dir")));
    run(Command::new("setfacl")
        .args(["-m", "u:2000:rwx"])
        .arg(path("acl-dir")));

    fs::create_dir(path("shared")).unwrap();
    for i in 0..SHARED_XATTR_FILES {
        let name = format!("shared/f{i:04}");
        fs::write(path(&name), b"").unwrap();
        set_xattr(&name, "user.shared", &[0x53; 200]);
        set_xattr(&name, "user.tag", b"same");
    }

    let odd_names = root.join("names");
    fs::create_dir(&odd_names).unwrap();
    fs::write(odd_names.join("n".repeat(255)), b"long").unwrap();
    fs::write(
        odd_names.join(std::ffi::OsStr::from_bytes(b"new\nline\xff")),
        b"odd",
    )
    .unwrap();
    fs::write(odd_names.join(" space "), b"space").unwrap();

    fs::create_dir(path("times")).unwrap();
    for (name, time) in [
        ("times/before-1970", "@-1.25"),
        ("times/epoch", "@0"),
        ("times/y2038", "@2147483648.999999999"),
        ("times/year-2400", "@13569465600.123456789"),
    ] {
        fs::write(path(name), b"t").unwrap();
        touch(name, time);
    }

    // Directories last, since adding entries changes their mtime.
    touch("setgid", "@1700000000.5");
    touch("", "@1600000000.25");
}
