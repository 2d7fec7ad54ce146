//! Reading tar archives into trees: PAX records, GNU long names and sparse
//! files, special files, and the placement rules of `tree_from_tar`.
//! Archives are built in each test with the `tar` crate's builder or with
//! GNU tar (which must be installed).

use std::io::{Cursor, Write};
use std::path::Path;
use std::process::Command;

use ext4_writer::tar::{tree_from_tar, Entry, EntryKind, Reader, Spool, TarError};
use ext4_writer::{FileData, Metadata, NodeId, NodeKind, Timestamp, Tree};
use tar::{Builder, EntryType, Header};

fn read_entries(archive: &[u8]) -> Vec<Entry> {
    let mut spool = Spool::new().unwrap();
    let mut reader = Reader::new(archive);
    let mut entries = Vec::new();
    while let Some(entry) = reader.next_entry(&mut spool).unwrap() {
        entries.push(entry);
    }
    entries
}

fn file_bytes(data: &FileData) -> Vec<u8> {
    let mut out = vec![0u8; usize::try_from(data.size()).unwrap()];
    for segment in data.segments() {
        let start = usize::try_from(segment.file_offset).unwrap();
        let end = start + usize::try_from(segment.len).unwrap();
        segment
            .source
            .read_exact_at(&mut out[start..end], segment.source_offset)
            .unwrap();
    }
    out
}

fn header(kind: EntryType, mode: u32, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(1_000);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn append_file(builder: &mut Builder<Vec<u8>>, path: &str, mode: u32, content: &[u8]) {
    let mut h = header(EntryType::Regular, mode, content.len() as u64);
    builder.append_data(&mut h, path, content).unwrap();
}

fn lookup(tree: &Tree, path: &str) -> Option<NodeId> {
    let mut node = tree.root();
    for name in path.split('/').filter(|c| !c.is_empty()) {
        node = tree.lookup(node, name.as_bytes())?;
    }
    Some(node)
}

fn regular_content(tree: &Tree, path: &str) -> Vec<u8> {
    let id = lookup(tree, path).unwrap_or_else(|| panic!("{path} is missing"));
    match &tree.node(id).kind {
        NodeKind::Regular(data) => file_bytes(data),
        other => panic!("{path} is not a regular file: {other:?}"),
    }
}

fn root_metadata() -> Metadata {
    Metadata::new(0o700, 0, 0, Timestamp::default())
}

#[test]
fn pax_records_decoded() {
    let mut builder = Builder::new(Vec::new());
    let capability: &[u8] = b"\x01\x00\x00\x02\x00\x20\x00\x00\n\x00";
    let long_path = format!("dir/{}/file", "p".repeat(150));
    builder
        .append_pax_extensions([
            ("uid", &b"3000000"[..]),
            ("gid", b"4000000"),
            ("mtime", b"1700000000.123456789"),
            ("atime", b"-1.5"),
            ("path", long_path.as_bytes()),
            ("SCHILY.xattr.security.capability", capability),
            ("LIBARCHIVE.xattr.user.b64", b"aGk"),
            (
                "SCHILY.xattr.system.posix_acl_access",
                b"\x02\x00\x00\x00\x01\x00\x06\x00",
            ),
        ])
        .unwrap();
    append_file(&mut builder, "short-name", 0o4755, b"content");
    let entries = read_entries(&builder.into_inner().unwrap());

    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!(entry.path, long_path.as_bytes());
    assert_eq!(entry.metadata.uid, 3_000_000);
    assert_eq!(entry.metadata.gid, 4_000_000);
    assert_eq!(entry.metadata.permissions, 0o4755);
    assert_eq!(
        entry.metadata.mtime,
        Timestamp::new(1_700_000_000, 123_456_789)
    );
    assert_eq!(entry.metadata.atime, Timestamp::new(-2, 500_000_000));
    assert_eq!(entry.metadata.ctime, entry.metadata.mtime);
    let names: Vec<&[u8]> = entry
        .metadata
        .xattrs
        .iter()
        .map(|x| x.name.as_slice())
        .collect();
    assert_eq!(
        names,
        [
            &b"security.capability"[..],
            b"system.posix_acl_access",
            b"user.b64"
        ]
    );
    assert_eq!(entry.metadata.xattrs[0].value, capability);
    assert_eq!(entry.metadata.xattrs[2].value, b"hi");
    match &entry.kind {
        EntryKind::Regular(data) => assert_eq!(file_bytes(data), b"content"),
        other => panic!("expected a regular file, got {other:?}"),
    }
}

#[test]
fn gnu_long_names_and_links() {
    let mut builder = Builder::new(Vec::new());
    let long = format!("d/{}", "n".repeat(200));
    let long_link = format!("/{}", "t".repeat(180));
    append_file(&mut builder, &long, 0o644, b"x");
    let mut h = header(EntryType::Symlink, 0o777, 0);
    builder.append_link(&mut h, "link", &long_link).unwrap();
    let mut h = header(EntryType::Link, 0o644, 0);
    builder.append_link(&mut h, "hard", &long).unwrap();
    let entries = read_entries(&builder.into_inner().unwrap());

    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0].path, long.as_bytes());
    assert!(matches!(&entries[1].kind, EntryKind::Symlink(t) if t == long_link.as_bytes()));
    assert!(matches!(&entries[2].kind, EntryKind::HardLink(t) if t == long.as_bytes()));
}

#[test]
fn special_files_kept() {
    let mut builder = Builder::new(Vec::new());
    for (name, kind, major, minor) in [
        ("null", EntryType::Char, 1, 3),
        ("sda", EntryType::Block, 8, 0),
        ("fifo", EntryType::Fifo, 0, 0),
    ] {
        let mut h = header(kind, 0o640, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        builder.append_data(&mut h, name, &[][..]).unwrap();
    }
    let entries = read_entries(&builder.into_inner().unwrap());

    assert!(matches!(
        entries[0].kind,
        EntryKind::CharDevice { major: 1, minor: 3 }
    ));
    assert!(matches!(
        entries[1].kind,
        EntryKind::BlockDevice { major: 8, minor: 0 }
    ));
    assert!(matches!(entries[2].kind, EntryKind::Fifo));
    assert_eq!(entries[2].metadata.permissions, 0o640);
}

#[test]
fn global_header_consumed() {
    let mut builder = Builder::new(Vec::new());
    let records = b"23 comment=from-global\n12 uid=4242\n";
    let mut h = header(EntryType::XGlobalHeader, 0o644, records.len() as u64);
    builder
        .append_data(&mut h, "pax_global_header", &records[..])
        .unwrap();
    append_file(&mut builder, "a", 0o644, b"a");
    let entries = read_entries(&builder.into_inner().unwrap());

    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].path, b"a");
    assert_eq!(
        entries[0].metadata.uid, 4242,
        "global uid applies as a default"
    );
}

/// Runs GNU tar in `dir` with `args`, returning the archive bytes.
fn gnu_tar(dir: &Path, args: &[&str]) -> Vec<u8> {
    let output = Command::new("tar")
        .current_dir(dir)
        .args(["--numeric-owner", "-cf", "-"])
        .args(args)
        .output()
        .expect("GNU tar must be installed to run this test");
    assert!(output.status.success(), "tar failed: {:?}", output);
    output.stdout
}

/// Creates `holes`, a sparse 10 MiB file with data at 0, at 4 MiB + 10 and in
/// the last byte, and returns its contents.
fn make_sparse_file(dir: &Path) -> Vec<u8> {
    let size = 10 << 20;
    let mut expected = vec![0u8; size];
    let file = std::fs::File::create(dir.join("holes")).unwrap();
    file.set_len(size as u64).unwrap();
    for (offset, bytes) in [
        (0usize, &b"start"[..]),
        ((4 << 20) + 10, b"middle"),
        (size - 1, b"e"),
    ] {
        std::os::unix::fs::FileExt::write_all_at(&file, bytes, offset as u64).unwrap();
        expected[offset..offset + bytes.len()].copy_from_slice(bytes);
    }
    expected
}

#[test]
fn gnu_sparse_formats_become_holes() {
    let dir = tempfile::tempdir().unwrap();
    let expected = make_sparse_file(dir.path());
    for format in [
        &["--format=gnu", "--sparse"][..],
        &["--format=pax", "--sparse", "--sparse-version=0.0"],
        &["--format=pax", "--sparse", "--sparse-version=0.1"],
        &["--format=pax", "--sparse", "--sparse-version=1.0"],
    ] {
        let mut args = format.to_vec();
        args.push("holes");
        let entries = read_entries(&gnu_tar(dir.path(), &args));

        assert_eq!(entries.len(), 1, "{format:?}");
        assert_eq!(entries[0].path, b"holes", "{format:?}");
        let EntryKind::Regular(data) = &entries[0].kind else {
            panic!("{format:?}: not a regular file");
        };
        assert_eq!(data.size(), expected.len() as u64, "{format:?}");
        let stored: u64 = data.segments().iter().map(|s| s.len).sum();
        assert!(stored <= 3 * 4096, "{format:?}: {stored} bytes stored");
        assert_eq!(file_bytes(data), expected, "{format:?}");
    }
}

#[test]
fn gnu_tar_pax_xattrs_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, b"data").unwrap();
    let status = Command::new("setfattr")
        .args(["-n", "user.note", "-v", "hello"])
        .arg(&file)
        .status()
        .expect("setfattr (package attr) must be installed");
    assert!(status.success());
    let archive = gnu_tar(
        dir.path(),
        &["--format=pax", "--xattrs", "--xattrs-include=*", "f"],
    );
    let entries = read_entries(&archive);

    assert_eq!(entries.len(), 1);
    let xattrs = &entries[0].metadata.xattrs;
    assert_eq!(xattrs.len(), 1);
    assert_eq!(xattrs[0].name, b"user.note");
    assert_eq!(xattrs[0].value, b"hello");
}

#[test]
fn gnu_tar_negative_mtime_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("old");
    std::fs::write(&file, b"data").unwrap();
    let status = Command::new("touch")
        .args(["-m", "-d", "@-315619200"])
        .arg(&file)
        .status()
        .expect("touch (coreutils) must be installed");
    assert!(status.success());
    let archive = gnu_tar(dir.path(), &["--format=gnu", "old"]);

    let entries = read_entries(&archive);

    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].metadata.mtime, Timestamp::new(-315_619_200, 0));
}

#[test]
fn base256_negative_uid_rejected() {
    let mut header = header(EntryType::Regular, 0o644, 0);
    header.set_path("f").unwrap();
    // Base-256 -1: the marker bit and all ones.
    header.as_mut_bytes()[108..116].fill(0xff);
    header.set_cksum();
    let mut archive = header.as_bytes().to_vec();
    archive.extend_from_slice(&[0u8; 1024]);

    let mut spool = Spool::new().unwrap();
    let err = Reader::new(&archive[..])
        .next_entry(&mut spool)
        .unwrap_err()
        .to_string();

    assert!(err.contains("uid -1"), "{err}");
}

#[test]
fn gnu_tar_text_acls_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"data").unwrap();
    std::fs::create_dir(dir.path().join("d")).unwrap();
    for (args, path) in [
        (&["-m", "u:54321:r,u:daemon:rw"][..], "f"),
        (&["-d", "-m", "g:54322:rx"][..], "d"),
    ] {
        let status = Command::new("setfacl")
            .args(args)
            .arg(dir.path().join(path))
            .status()
            .expect("setfacl (package acl) must be installed");
        assert!(status.success());
    }
    let archive = gnu_tar(dir.path(), &["--format=posix", "--acls", "f", "d"]);

    let entries = read_entries(&archive);

    let acl = |entry: &Entry, name: &[u8]| {
        entry
            .metadata
            .xattrs
            .iter()
            .find(|x| x.name == name)
            .map(|x| x.value.clone())
    };
    let vfs = |entries: &[(u16, u16, u32)]| {
        let mut bytes = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            bytes.extend_from_slice(&tag.to_le_bytes());
            bytes.extend_from_slice(&perm.to_le_bytes());
            bytes.extend_from_slice(&id.to_le_bytes());
        }
        bytes
    };
    let file = entries.iter().find(|e| e.path == b"f").unwrap();
    let directory = entries.iter().find(|e| e.path.starts_with(b"d")).unwrap();
    assert_eq!(
        acl(file, b"system.posix_acl_access"),
        Some(vfs(&[
            (0x01, 6, u32::MAX),
            (0x02, 6, 1),
            (0x02, 4, 54321),
            (0x04, 4, u32::MAX),
            (0x10, 6, u32::MAX),
            (0x20, 4, u32::MAX),
        ]))
    );
    assert_eq!(
        acl(directory, b"system.posix_acl_default"),
        Some(vfs(&[
            (0x01, 7, u32::MAX),
            (0x04, 5, u32::MAX),
            (0x08, 5, 54322),
            (0x10, 5, u32::MAX),
            (0x20, 5, u32::MAX),
        ]))
    );
}

#[test]
fn pax_bad_text_acl_names_entry() {
    let mut builder = Builder::new(Vec::new());
    builder
        .append_pax_extensions([("SCHILY.acl.access", &b"user::rwq"[..])])
        .unwrap();
    append_file(&mut builder, "etc/shadow", 0o640, b"x");
    let archive = builder.into_inner().unwrap();

    let mut spool = Spool::new().unwrap();
    let err = Reader::new(&archive[..])
        .next_entry(&mut spool)
        .unwrap_err()
        .to_string();

    assert!(err.contains("etc/shadow"), "{err}");
    assert!(err.contains("user::rwq"), "{err}");
}

#[test]
fn header_garbage_escaped_in_errors() {
    let mut header = header(EntryType::Regular, 0o644, 0);
    header.set_path("f").unwrap();
    // A device major with a terminal escape sequence in a character device.
    header.set_entry_type(EntryType::Char);
    header.as_mut_bytes()[329..337].copy_from_slice(b"\x1b[2J\x1b]0\x07");
    header.set_cksum();
    let mut archive = header.as_bytes().to_vec();
    archive.extend_from_slice(&[0u8; 1024]);

    let mut spool = Spool::new().unwrap();
    let err = Reader::new(&archive[..])
        .next_entry(&mut spool)
        .unwrap_err()
        .to_string();

    assert!(!err.contains('\x1b'), "{err:?}");
    assert!(!err.contains('\x07'), "{err:?}");
    assert!(err.contains("\\u{1b}[2J"), "{err:?}");
}

#[test]
fn tree_places_entries_in_order() {
    let mut builder = Builder::new(Vec::new());
    // A file before its directory, whose metadata arrives later.
    append_file(&mut builder, "./etc/conf/a.txt", 0o600, b"a");
    let mut h = header(EntryType::Directory, 0o750, 0);
    h.set_uid(7);
    builder.append_data(&mut h, "./etc/", &[][..]).unwrap();
    append_file(&mut builder, "./bin/tool", 0o755, b"v1");
    let mut h = header(EntryType::Link, 0o755, 0);
    builder
        .append_link(&mut h, "./bin/tool-alias", "./bin/tool")
        .unwrap();
    // A later entry replaces the file; the hard link keeps the old content.
    append_file(&mut builder, "./bin/tool", 0o755, b"v2");
    let mut h = header(EntryType::Directory, 0o755, 0);
    builder.append_data(&mut h, "./", &[][..]).unwrap();
    let archive = builder.into_inner().unwrap();
    let mut spool = Spool::new().unwrap();
    let tree = tree_from_tar(archive.as_slice(), root_metadata(), &mut spool).unwrap();

    let etc = tree.node(lookup(&tree, "etc").unwrap());
    assert_eq!(etc.metadata.permissions, 0o750);
    assert_eq!(etc.metadata.uid, 7);
    let conf = tree.node(lookup(&tree, "etc/conf").unwrap());
    assert_eq!((conf.metadata.permissions, conf.metadata.uid), (0o755, 0));
    assert_eq!(regular_content(&tree, "etc/conf/a.txt"), b"a");
    assert_eq!(regular_content(&tree, "bin/tool"), b"v2");
    assert_eq!(regular_content(&tree, "bin/tool-alias"), b"v1");
    assert_eq!(tree.node(tree.root()).metadata.permissions, 0o755);
}

#[test]
fn tree_hard_link_to_missing_rejected() {
    let mut builder = Builder::new(Vec::new());
    let mut h = header(EntryType::Link, 0o644, 0);
    builder.append_link(&mut h, "b", "missing").unwrap();
    let archive = builder.into_inner().unwrap();
    let err = tree_from_tar(
        archive.as_slice(),
        root_metadata(),
        &mut Spool::new().unwrap(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, TarError::InvalidEntry { path, .. } if path == "b"),
        "{err}"
    );
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn truncated_archive_names_entry() {
    let mut builder = Builder::new(Vec::new());
    append_file(&mut builder, "big", 0o644, &[7u8; 5000]);
    let archive = builder.into_inner().unwrap();
    let cut = &archive[..512 + 1000];
    let err = tree_from_tar(cut, root_metadata(), &mut Spool::new().unwrap()).unwrap_err();
    assert!(
        matches!(&err, TarError::Truncated { path, offset: 0 } if path == "big"),
        "{err}"
    );
}

#[test]
fn corrupt_header_rejected() {
    let mut builder = Builder::new(Vec::new());
    append_file(&mut builder, "a", 0o644, b"a");
    let mut archive = builder.into_inner().unwrap();
    archive[0] = b'b';
    let err = tree_from_tar(
        archive.as_slice(),
        root_metadata(),
        &mut Spool::new().unwrap(),
    )
    .unwrap_err();
    assert!(
        matches!(err, TarError::InvalidHeader { offset: 0, .. }),
        "{err}"
    );
}

#[test]
fn reader_stops_at_end_marker() {
    let mut builder = Builder::new(Vec::new());
    append_file(&mut builder, "a", 0o644, b"a");
    let mut archive = builder.into_inner().unwrap();
    archive
        .write_all(b"trailing bytes after the end-of-archive blocks")
        .unwrap();
    let mut reader = Reader::new(Cursor::new(archive));
    let mut spool = Spool::new().unwrap();
    assert!(reader.next_entry(&mut spool).unwrap().is_some());
    assert!(reader.next_entry(&mut spool).unwrap().is_none());
    assert_eq!(reader.position(), 1536);
}

/// A reader that returns at most `step` bytes per call, as pipes and
/// decompressors may.
struct ShortReads<'a> {
    data: &'a [u8],
    step: usize,
}

impl std::io::Read for ShortReads<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.step).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[test]
fn reader_handles_short_reads() {
    let mut builder = Builder::new(Vec::new());
    builder
        .append_pax_extensions([("SCHILY.xattr.user.k", &b"v"[..])])
        .unwrap();
    append_file(&mut builder, "a", 0o644, &[5u8; 9000]);
    let long_path = format!("{}b", "long/".repeat(40));
    append_file(&mut builder, &long_path, 0o644, b"b");
    let archive = builder.into_inner().unwrap();
    for step in [1, 7, 511, 513] {
        let reader = ShortReads {
            data: &archive,
            step,
        };
        let tree = tree_from_tar(reader, root_metadata(), &mut Spool::new().unwrap()).unwrap();
        assert_eq!(regular_content(&tree, "a"), vec![5u8; 9000], "step {step}");
        let a = tree.node(lookup(&tree, "a").unwrap());
        assert_eq!(a.metadata.xattrs.len(), 1, "step {step}");
        assert_eq!(regular_content(&tree, &long_path), b"b", "step {step}");
    }
}

mod round_trip {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// A file to archive: mode, owner and contents.
    #[derive(Clone, Debug)]
    struct FileSpec {
        mode: u32,
        uid: u64,
        content: Vec<u8>,
    }

    fn file_spec() -> impl Strategy<Value = FileSpec> {
        (
            0u32..0o7777,
            prop_oneof![Just(0u64), Just(1000), 0u64..2_097_151],
            prop::collection::vec(any::<u8>(), 0..3000),
        )
            .prop_map(|(mode, uid, content)| FileSpec { mode, uid, content })
    }

    /// Paths of one to three components from a small alphabet, so that
    /// files share directories.
    fn path() -> impl Strategy<Value = String> {
        prop::collection::vec("[a-c]{1,2}", 1..4).prop_map(|parts| parts.join("/"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn tree_matches_archived_files(files in prop::collection::btree_map(path(), file_spec(), 1..20)) {
            // A path that is also another file's parent directory cannot
            // hold a file; keep the deepest paths only.
            let files: BTreeMap<String, FileSpec> = files
                .iter()
                .filter(|(path, _)| !files.keys().any(|other| other.starts_with(&format!("{path}/"))))
                .map(|(path, spec)| (path.clone(), spec.clone()))
                .collect();
            let mut builder = Builder::new(Vec::new());
            for (path, spec) in &files {
                let mut h = header(EntryType::Regular, spec.mode, spec.content.len() as u64);
                h.set_uid(spec.uid);
                builder.append_data(&mut h, path, spec.content.as_slice()).unwrap();
            }
            let archive = builder.into_inner().unwrap();
            let tree = tree_from_tar(archive.as_slice(), root_metadata(), &mut Spool::new().unwrap()).unwrap();

            for (path, spec) in &files {
                let node = tree.node(lookup(&tree, path).unwrap());
                prop_assert_eq!(u32::from(node.metadata.permissions), spec.mode);
                prop_assert_eq!(u64::from(node.metadata.uid), spec.uid);
                prop_assert_eq!(regular_content(&tree, path), spec.content.clone());
            }
        }
    }
}

#[test]
fn tree_file_as_parent_rejected() {
    let mut builder = Builder::new(Vec::new());
    append_file(&mut builder, "etc/passwd", 0o644, b"root:x:0:0");
    let mut h = header(EntryType::Symlink, 0o777, 0);
    builder.append_link(&mut h, "link", "/etc/passwd").unwrap();
    append_file(&mut builder, "link/inner", 0o644, b"x");
    let archive = builder.into_inner().unwrap();
    let err = tree_from_tar(
        archive.as_slice(),
        root_metadata(),
        &mut Spool::new().unwrap(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, TarError::InvalidEntry { path, .. } if path == "link/inner"),
        "{err}"
    );
    assert!(
        err.to_string().contains("\"passwd\" is not a directory"),
        "{err}"
    );
}
