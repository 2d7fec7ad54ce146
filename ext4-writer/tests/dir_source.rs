//! The directory source against real files made in a temporary directory.
//! Needs root for devices, ownership and trusted xattrs, and the `mknod`,
//! `touch` and `setfattr` commands.
#![cfg(feature = "dir")]

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::process::Command;

use ext4_writer::source::dir::tree_from_dir;
use ext4_writer::{NodeKind, Timestamp, Tree};

fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|err| {
        panic!("failed to run {command:?}: {err}; install coreutils and attr")
    });
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn lookup(tree: &Tree, path: &str) -> ext4_writer::NodeId {
    path.split('/').fold(tree.root(), |node, name| {
        tree.lookup(node, name.as_bytes())
            .unwrap_or_else(|| panic!("{path}: {name} not found"))
    })
}

/// Reads all content of a regular file node, holes as zeros.
fn content(tree: &Tree, path: &str) -> Vec<u8> {
    let NodeKind::Regular(data) = &tree.node(lookup(tree, path)).kind else {
        panic!("{path} is not a regular file");
    };
    let mut bytes = vec![0; usize::try_from(data.size()).unwrap()];
    for segment in data.segments() {
        let start = usize::try_from(segment.file_offset).unwrap();
        let end = start + usize::try_from(segment.len).unwrap();
        segment
            .source
            .read_exact_at(&mut bytes[start..end], segment.source_offset)
            .unwrap();
    }
    bytes
}

#[test]
fn every_node_kind_read() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::write(root.join("file"), b"hello").unwrap();
    symlink("/etc/alternatives/awk", root.join("link")).unwrap();
    fs::create_dir(root.join("sub")).unwrap();
    fs::write(root.join("sub/inner"), b"inner").unwrap();
    run(Command::new("mkfifo").arg(root.join("fifo")));
    let _listener = UnixListener::bind(root.join("socket")).unwrap();
    run(Command::new("mknod")
        .arg(root.join("tty"))
        .args(["c", "5", "0"]));
    run(Command::new("mknod")
        .arg(root.join("nvme"))
        .args(["b", "259", "1048575"]));

    let tree = tree_from_dir(root).unwrap();

    assert_eq!(content(&tree, "file"), b"hello");
    assert_eq!(content(&tree, "sub/inner"), b"inner");
    assert!(
        matches!(&tree.node(lookup(&tree, "link")).kind, NodeKind::Symlink(target) if target == b"/etc/alternatives/awk")
    );
    assert!(tree.node(lookup(&tree, "sub")).kind.is_directory());
    assert!(matches!(
        tree.node(lookup(&tree, "fifo")).kind,
        NodeKind::Fifo
    ));
    assert!(matches!(
        tree.node(lookup(&tree, "socket")).kind,
        NodeKind::Socket
    ));
    assert!(matches!(
        tree.node(lookup(&tree, "tty")).kind,
        NodeKind::CharDevice { major: 5, minor: 0 }
    ));
    assert!(matches!(
        tree.node(lookup(&tree, "nvme")).kind,
        NodeKind::BlockDevice {
            major: 259,
            minor: 1048575
        }
    ));
    let names: Vec<&[u8]> = tree.entries(tree.root()).map(|(name, _)| name).collect();
    assert_eq!(names.len(), 7);
}

#[test]
fn metadata_read() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let file = root.join("suid");
    fs::write(&file, b"x").unwrap();
    // chown clears setuid, so it comes first.
    std::os::unix::fs::lchown(&file, Some(100000), Some(4294967294)).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o4755)).unwrap();
    run(Command::new("touch")
        .args(["-h", "-m", "-d", "@1234567890.123456789"])
        .arg(&file));
    run(Command::new("touch")
        .args(["-h", "-a", "-d", "@-1.5"])
        .arg(&file));
    fs::create_dir(root.join("tmp")).unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(root, fs::Permissions::from_mode(0o2750)).unwrap();

    let tree = tree_from_dir(root).unwrap();

    let metadata = &tree.node(lookup(&tree, "suid")).metadata;
    assert_eq!(metadata.permissions, 0o4755);
    assert_eq!(metadata.uid, 100000);
    assert_eq!(metadata.gid, 4294967294);
    assert_eq!(metadata.mtime, Timestamp::new(1234567890, 123456789));
    assert_eq!(metadata.atime, Timestamp::new(-2, 500_000_000));
    let stat = fs::symlink_metadata(&file).unwrap();
    assert_eq!(
        metadata.ctime,
        Timestamp::new(stat.ctime(), u32::try_from(stat.ctime_nsec()).unwrap())
    );
    assert!(
        metadata.crtime <= metadata.ctime,
        "birth time comes before the last change"
    );
    assert_eq!(tree.node(lookup(&tree, "tmp")).metadata.permissions, 0o1777);
    assert_eq!(
        tree.node(tree.root()).metadata.permissions,
        0o2750,
        "the root keeps its own mode"
    );
}

#[test]
fn xattrs_read_without_following_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let file = root.join("f");
    fs::write(&file, b"").unwrap();
    run(Command::new("setfattr")
        .args(["-n", "user.b", "-v", "2"])
        .arg(&file));
    run(Command::new("setfattr")
        .args(["-n", "user.a", "-v", "1"])
        .arg(&file));
    run(Command::new("setfattr")
        .args([
            "-n",
            "security.capability",
            "-v",
            "0x0100000200200000000000000000000000000000",
        ])
        .arg(&file));
    symlink("f", root.join("link")).unwrap();
    run(Command::new("setfattr")
        .args(["-h", "-n", "trusted.on_link", "-v", "yes"])
        .arg(root.join("link")));

    let tree = tree_from_dir(root).unwrap();

    let names = |path: &str| -> Vec<String> {
        tree.node(lookup(&tree, path))
            .metadata
            .xattrs
            .iter()
            .map(|x| String::from_utf8(x.name.clone()).unwrap())
            .collect()
    };
    assert_eq!(names("f"), ["security.capability", "user.a", "user.b"]);
    assert_eq!(names("link"), ["trusted.on_link"]);
    let value_of_a = &tree.node(lookup(&tree, "f")).metadata.xattrs[1].value;
    assert_eq!(value_of_a, b"1");
}

#[test]
fn hard_links_share_node() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::write(root.join("a"), b"same").unwrap();
    fs::create_dir(root.join("d")).unwrap();
    fs::hard_link(root.join("a"), root.join("d/b")).unwrap();
    symlink("target", root.join("s")).unwrap();
    fs::hard_link(root.join("s"), root.join("s2")).unwrap();
    fs::write(root.join("single"), b"same").unwrap();

    let tree = tree_from_dir(root).unwrap();

    assert_eq!(lookup(&tree, "a"), lookup(&tree, "d/b"));
    assert_eq!(lookup(&tree, "s"), lookup(&tree, "s2"));
    assert_ne!(lookup(&tree, "a"), lookup(&tree, "single"));
}

#[test]
fn holes_left_out_of_segments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse");
    let file = fs::File::create(&path).unwrap();
    file.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"data", 32 << 20).unwrap();
    drop(file);

    let tree = tree_from_dir(dir.path()).unwrap();

    let NodeKind::Regular(data) = &tree.node(lookup(&tree, "sparse")).kind else {
        panic!("not a regular file");
    };
    assert_eq!(data.size(), 64 << 20);
    assert_eq!(data.segments().len(), 1, "{:?}", data.segments());
    let segment = &data.segments()[0];
    assert!(segment.file_offset <= 32 << 20);
    assert!(segment.file_offset + segment.len >= (32 << 20) + 4);
    assert!(
        segment.len <= 1 << 20,
        "the segment covers the data block, not the holes"
    );
    let mut bytes = [0u8; 4];
    segment.source.read_exact_at(&mut bytes, 32 << 20).unwrap();
    assert_eq!(&bytes, b"data");
}

fn open_descriptors() -> usize {
    fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn lazy_sources_bound_open_files() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..300 {
        fs::write(dir.path().join(format!("f{i:03}")), format!("content {i}")).unwrap();
    }
    let before = open_descriptors();

    let tree = tree_from_dir(dir.path()).unwrap();
    assert!(
        open_descriptors() <= before + 1,
        "the walk leaves no file open"
    );
    for i in 0..300 {
        assert_eq!(
            content(&tree, &format!("f{i:03}")),
            format!("content {i}").as_bytes()
        );
    }

    // Other tests run in parallel threads, so allow for their descriptors.
    assert!(
        open_descriptors() <= before + 32 + 16,
        "{} open",
        open_descriptors()
    );
}

#[test]
fn read_error_names_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shrinks");
    fs::write(&path, b"0123456789").unwrap();
    let tree = tree_from_dir(dir.path()).unwrap();
    fs::write(&path, b"01").unwrap();

    let NodeKind::Regular(data) = &tree.node(lookup(&tree, "shrinks")).kind else {
        panic!("not a regular file");
    };
    let mut bytes = [0u8; 10];
    let err = data.segments()[0]
        .source
        .read_exact_at(&mut bytes, 0)
        .unwrap_err();
    assert!(err.to_string().contains("shrinks"), "{err}");
}

#[test]
fn missing_root_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let err = tree_from_dir(&missing).unwrap_err();
    assert!(
        err.to_string().contains(&*missing.to_string_lossy()),
        "{err}"
    );

    let file = dir.path().join("file");
    fs::write(&file, b"").unwrap();
    let err = tree_from_dir(&file).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
}

#[test]
fn device_numbers_decoded_as_glibc() {
    let dir = tempfile::tempdir().unwrap();
    for (name, major, minor) in [
        ("a", 1u32, 3u32),
        ("b", 8, 0),
        ("c", 4095, 255),
        ("d", 4095, 1048575),
    ] {
        run(Command::new("mknod").arg(dir.path().join(name)).args([
            "c",
            &major.to_string(),
            &minor.to_string(),
        ]));
    }

    let tree = tree_from_dir(dir.path()).unwrap();

    for (name, major, minor) in [
        ("a", 1u32, 3u32),
        ("b", 8, 0),
        ("c", 4095, 255),
        ("d", 4095, 1048575),
    ] {
        let NodeKind::CharDevice { major: m, minor: n } = tree.node(lookup(&tree, name)).kind
        else {
            panic!("{name} is not a char device");
        };
        assert_eq!((m, n), (major, minor), "{name}");
    }
}

#[test]
fn tree_deeper_than_path_max_read() {
    let dir = tempfile::tempdir().unwrap();
    let name = "d".repeat(200);
    // 50 levels of 201 bytes: about 10000 bytes, past PATH_MAX (4096).
    let script = format!(
        "for i in $(seq 50); do mkdir {name} && cd -P {name} || exit 1; done; \
         printf deep > file && setfattr -n user.depth -v 50 file && \
         mkdir sub && printf deeper > sub/file"
    );
    run(Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path()));

    let tree = tree_from_dir(dir.path()).unwrap();

    let deep = vec![name.as_str(); 50].join("/");
    assert_eq!(content(&tree, &format!("{deep}/file")), b"deep");
    assert_eq!(content(&tree, &format!("{deep}/sub/file")), b"deeper");
    let xattrs = &tree
        .node(lookup(&tree, &format!("{deep}/file")))
        .metadata
        .xattrs;
    assert_eq!(xattrs.len(), 1);
    assert_eq!(xattrs[0].value, b"50");
}

#[test]
fn root_symlink_to_directory_followed() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    fs::create_dir(&real).unwrap();
    fs::write(real.join("file"), b"through the link").unwrap();
    fs::set_permissions(&real, fs::Permissions::from_mode(0o750)).unwrap();
    let link = dir.path().join("link");
    symlink(&real, &link).unwrap();

    let tree = tree_from_dir(&link).unwrap();

    assert_eq!(content(&tree, "file"), b"through the link");
    assert_eq!(tree.node(tree.root()).metadata.permissions, 0o750);
}
