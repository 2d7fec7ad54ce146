//! Helpers shared by the image tests: building layers, walking a flattened
//! tree, and the fixtures made by tests/fixtures/build-images.sh.

#![allow(dead_code)]

pub mod mount;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use banger::image::flatten::{Layer, LayerSource};
use ext4_writer::{FileData, NodeId, NodeKind, Tree};
use sha2::{Digest, Sha256};
use tar::{Builder, EntryType, Header};

/// The fixture directory (`BANGER_FIXTURES`, default
/// /var/tmp/banger-fixtures); panics when it is missing, because a test that
/// skips would pass without checking anything.
pub fn fixtures() -> PathBuf {
    let dir = std::env::var_os("BANGER_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/banger-fixtures"));
    assert!(
        dir.join("oci/index.json").is_file() && dir.join("expected").is_dir(),
        "fixtures missing in {}: run tests/fixtures/build-images.sh as root (or set BANGER_FIXTURES)",
        dir.display()
    );
    dir
}

/// A layer tar under construction.
pub struct LayerBuilder {
    builder: Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    pub fn new() -> Self {
        Self {
            builder: Builder::new(Vec::new()),
        }
    }

    fn header(kind: EntryType, mode: u32, uid: u64, size: u64) -> Header {
        let mut header = Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(uid);
        header.set_gid(uid);
        header.set_size(size);
        header.set_mtime(1_700_000_000);
        header
    }

    pub fn file(mut self, path: &str, mode: u32, uid: u64, content: &[u8]) -> Self {
        let mut h = Self::header(EntryType::Regular, mode, uid, content.len() as u64);
        self.builder.append_data(&mut h, path, content).unwrap();
        self
    }

    pub fn dir(mut self, path: &str, mode: u32, uid: u64) -> Self {
        let mut h = Self::header(EntryType::Directory, mode, uid, 0);
        self.builder.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(EntryType::Symlink, 0o777, 0, 0);
        self.builder.append_link(&mut h, path, target).unwrap();
        self
    }

    pub fn hard_link(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(EntryType::Link, 0o644, 0, 0);
        self.builder.append_link(&mut h, path, target).unwrap();
        self
    }

    /// Appends a PAX global header, as `git archive` and Go's archive/tar write.
    pub fn global_header(mut self) -> Self {
        let records = b"52 comment=7c4f2dd0c0a1e8b4c1d1b5e0f0e6a1c2b3d4e5f6\n";
        let mut h = Self::header(EntryType::XGlobalHeader, 0o644, 0, records.len() as u64);
        self.builder
            .append_data(&mut h, "pax_global_header", &records[..])
            .unwrap();
        self
    }

    /// Finishes the layer and returns the uncompressed tar.
    pub fn into_tar(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }

    /// Writes the layer gzip-compressed to `dir/name` with its diff_id.
    pub fn write_gzip(self, dir: &Path, name: &str) -> Layer {
        let tar = self.into_tar();
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(&tar).unwrap();
        write_layer(
            dir,
            name,
            &gzip.finish().unwrap(),
            &tar,
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )
    }
}

/// Writes `blob` to `dir/name` and describes it as a layer whose diff_id is
/// the sha256 of `tar`.
pub fn write_layer(dir: &Path, name: &str, blob: &[u8], tar: &[u8], media_type: &str) -> Layer {
    let path = dir.join(name);
    std::fs::write(&path, blob).unwrap();
    Layer {
        source: LayerSource::file(path),
        media_type: media_type.into(),
        diff_id: Some(format!("sha256:{}", hex::encode(Sha256::digest(tar)))),
    }
}

/// Looks up the node at `path` (relative to the root, `/`-separated).
pub fn lookup(tree: &Tree, path: &str) -> Option<NodeId> {
    let mut node = tree.root();
    for name in path.split('/').filter(|c| !c.is_empty()) {
        node = tree.lookup(node, name.as_bytes())?;
    }
    Some(node)
}

pub fn file_bytes(data: &FileData) -> Vec<u8> {
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

/// Reads the contents of the regular file at `path`, and panics when it is missing or
/// not a regular file.
pub fn content(tree: &Tree, path: &str) -> Vec<u8> {
    let id = lookup(tree, path).unwrap_or_else(|| panic!("{path} is missing"));
    match &tree.node(id).kind {
        NodeKind::Regular(data) => file_bytes(data),
        other => panic!("{path} is not a regular file: {other:?}"),
    }
}

/// Number of directory entries that name each node.
pub fn link_counts(tree: &Tree) -> HashMap<NodeId, u32> {
    let mut counts = HashMap::new();
    let mut stack = vec![tree.root()];
    while let Some(dir) = stack.pop() {
        for (_, child) in tree.entries(dir) {
            let count = counts.entry(child).or_insert(0);
            *count += 1;
            if *count == 1 && tree.node(child).kind.is_directory() {
                stack.push(child);
            }
        }
    }
    counts
}

/// Lists every path of the tree, `./`-prefixed and sorted bytewise, with its node.
pub fn walk(tree: &Tree) -> Vec<(Vec<u8>, NodeId)> {
    let mut out = vec![(b".".to_vec(), tree.root())];
    let mut stack = vec![(b".".to_vec(), tree.root())];
    while let Some((prefix, dir)) = stack.pop() {
        for (name, child) in tree.entries(dir) {
            let mut path = prefix.clone();
            path.push(b'/');
            path.extend_from_slice(name);
            if tree.node(child).kind.is_directory() {
                stack.push((path.clone(), child));
            }
            out.push((path, child));
        }
    }
    out.sort();
    out
}

/// Lists the tree in the format of the fixtures' expected/TAG.txt, which
/// build-images.sh makes with `find -printf '%p\t%y %#m %U:%G %s %n\t%l'`:
/// `PATH<TAB>TYPE MODE UID:GID SIZE NLINK [-> TARGET]`, with `-` for the
/// size and link count of directories.
pub fn listing(tree: &Tree) -> String {
    let counts = link_counts(tree);
    let mut out = String::new();
    for (path, id) in walk(tree) {
        let node = tree.node(id);
        let (kind, size) = match &node.kind {
            NodeKind::Directory(_) => ('d', None),
            NodeKind::Regular(data) => ('f', Some(data.size())),
            NodeKind::Symlink(target) => ('l', Some(target.len() as u64)),
            NodeKind::CharDevice { .. } => ('c', Some(0)),
            NodeKind::BlockDevice { .. } => ('b', Some(0)),
            NodeKind::Fifo => ('p', Some(0)),
            NodeKind::Socket => ('s', Some(0)),
        };
        let mode = node.metadata.permissions & 0o7777;
        let mode = if mode == 0 {
            "0".to_string()
        } else {
            format!("0{mode:o}")
        };
        let (size, nlink) = match size {
            None => ("-".to_string(), "-".to_string()),
            Some(size) => (
                size.to_string(),
                counts.get(&id).copied().unwrap_or(1).to_string(),
            ),
        };
        write!(
            out,
            "{}\t{kind} {mode} {}:{} {size} {nlink}",
            String::from_utf8_lossy(&path),
            node.metadata.uid,
            node.metadata.gid
        )
        .unwrap();
        if let NodeKind::Symlink(target) = &node.kind {
            write!(out, " -> {}", String::from_utf8_lossy(target)).unwrap();
        }
        out.push('\n');
    }
    out
}

/// `sha256  ./PATH` for every regular file, as expected/TAG.sha256 lists them.
pub fn sha256_listing(tree: &Tree) -> String {
    let mut out = String::new();
    for (path, id) in walk(tree) {
        if let NodeKind::Regular(data) = &tree.node(id).kind {
            let digest = hex::encode(Sha256::digest(file_bytes(data)));
            writeln!(out, "{digest}  {}", String::from_utf8_lossy(&path)).unwrap();
        }
    }
    out
}

/// Compares two listings line by line and panics with the first
/// differences, so a failure shows what is wrong without a 10000-line diff.
pub fn assert_same_listing(actual: &str, expected: &str, what: &str) {
    let actual_lines: Vec<&str> = actual.lines().collect();
    let expected_lines: Vec<&str> = expected.lines().collect();
    let actual_set: std::collections::BTreeSet<&str> = actual_lines.iter().copied().collect();
    let expected_set: std::collections::BTreeSet<&str> = expected_lines.iter().copied().collect();
    let missing: Vec<&&str> = expected_set.difference(&actual_set).take(15).collect();
    let extra: Vec<&&str> = actual_set.difference(&expected_set).take(15).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: {} expected lines, {} actual\nmissing (first 15):\n{}\nunexpected (first 15):\n{}",
        expected_lines.len(),
        actual_lines.len(),
        missing
            .iter()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n"),
        extra
            .iter()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
}

/// Returns the address of the test registry (`BANGER_TEST_REGISTRY`, default
/// 127.0.0.1:5055), and panics when nothing listens there.
pub fn registry_address() -> String {
    let address =
        std::env::var("BANGER_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5055".to_owned());
    let reachable = address
        .parse::<std::net::SocketAddr>()
        .ok()
        .and_then(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok())
        .is_some();
    assert!(
        reachable,
        "test registry {address} is not reachable: start it with tests/fixtures/registry.sh start after tests/fixtures/build-images.sh, or set BANGER_TEST_REGISTRY"
    );
    address
}

/// Builds a `banger` command whose config, cache and data stay in `home`,
/// so neither the caller's `BANGER_*` variables nor the machine's config
/// files apply.
pub fn banger_command(home: &Path, args: &[&str]) -> Command {
    let empty = home.join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_banger"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("BANGER_CONFIG", &empty)
        .env("BANGER_CACHE_DIR", home.join("cache"))
        .env("BANGER_DATA_DIR", home.join("data"))
        .env("BANGER_RUNTIME_DIR", home.join("run"));
    command
}
