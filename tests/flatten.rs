//! Layer flattening with small layers built in each test: whiteouts, opaque
//! directories, replacement rules, symlinked parents, hard links and bad
//! input. The real Debian fixture layers are compared with the tree that a
//! root `umoci unpack` made.

mod image_support;

use std::io::Write;
use std::path::Path;

use banger::image::flatten::{flatten, FlattenError, Layer};
use banger::image::import::import_path;
use ext4_writer::tar::Spool;
use ext4_writer::{NodeKind, Tree};
use image_support::{content, link_counts, lookup, LayerBuilder};

fn flatten_layers(layers: &[Layer]) -> (Tree, Spool) {
    let mut spool = Spool::new().unwrap();
    let tree = flatten(layers, &mut spool).unwrap();
    (tree, spool)
}

fn flatten_error(layers: &[Layer]) -> FlattenError {
    let mut spool = Spool::new().unwrap();
    flatten(layers, &mut spool).unwrap_err()
}

#[test]
fn hard_link_survives_whiteout_of_other_name() {
    let dir = tempfile::tempdir().unwrap();
    let lower = LayerBuilder::new()
        .dir("a/", 0o755, 0)
        .file("a/original", 0o644, 0, b"shared content")
        .hard_link("a/alias", "a/original")
        .hard_link("a/third", "a/original")
        .write_gzip(dir.path(), "1");
    let upper = LayerBuilder::new()
        .file("a/.wh.original", 0o644, 0, b"")
        // Overwriting one name gives it a new inode; the others keep the old.
        .file("a/third", 0o644, 0, b"new content")
        .write_gzip(dir.path(), "2");
    let (tree, _spool) = flatten_layers(&[lower, upper]);

    assert!(lookup(&tree, "a/original").is_none());
    assert!(lookup(&tree, "a/.wh.original").is_none());
    assert_eq!(content(&tree, "a/alias"), b"shared content");
    assert_eq!(content(&tree, "a/third"), b"new content");
    let counts = link_counts(&tree);
    assert_eq!(counts[&lookup(&tree, "a/alias").unwrap()], 1);
    assert_eq!(counts[&lookup(&tree, "a/third").unwrap()], 1);
}

#[test]
fn hard_link_to_lower_layer() {
    let dir = tempfile::tempdir().unwrap();
    let lower = LayerBuilder::new()
        .file("bin/tool", 0o755, 0, b"tool")
        .write_gzip(dir.path(), "1");
    let upper = LayerBuilder::new()
        .hard_link("sbin/tool", "bin/tool")
        .write_gzip(dir.path(), "2");
    let (tree, _spool) = flatten_layers(&[lower, upper]);

    assert_eq!(lookup(&tree, "bin/tool"), lookup(&tree, "sbin/tool"));
    assert_eq!(link_counts(&tree)[&lookup(&tree, "bin/tool").unwrap()], 2);
}

#[test]
fn opaque_marker_after_sibling() {
    let dir = tempfile::tempdir().unwrap();
    let lower = LayerBuilder::new()
        .dir("d/", 0o755, 0)
        .file("d/old", 0o644, 0, b"old")
        .dir("d/sub/", 0o755, 0)
        .file("d/sub/old-inner", 0o644, 0, b"old")
        .dir("d/kept-dir/", 0o755, 0)
        .file("d/kept-dir/lower", 0o644, 0, b"lower")
        .file("outside-d", 0o644, 0, b"stays")
        .write_gzip(dir.path(), "1");
    let upper = LayerBuilder::new()
        .dir("d/", 0o700, 0)
        .file("d/before", 0o644, 0, b"same layer, before the marker")
        .file(
            "d/kept-dir/upper",
            0o644,
            0,
            b"same layer, in a lower directory",
        )
        .file("d/.wh..wh..opq", 0o644, 0, b"")
        .file("d/after", 0o644, 0, b"same layer, after the marker")
        .write_gzip(dir.path(), "2");
    let (tree, _spool) = flatten_layers(&[lower, upper]);

    assert_eq!(content(&tree, "d/before"), b"same layer, before the marker");
    assert_eq!(content(&tree, "d/after"), b"same layer, after the marker");
    assert_eq!(
        content(&tree, "d/kept-dir/upper"),
        b"same layer, in a lower directory"
    );
    assert!(lookup(&tree, "d/old").is_none());
    assert!(lookup(&tree, "d/sub").is_none());
    assert!(lookup(&tree, "d/kept-dir/lower").is_none());
    assert!(lookup(&tree, "d/.wh..wh..opq").is_none());
    assert_eq!(content(&tree, "outside-d"), b"stays");
    let d = tree.node(lookup(&tree, "d").unwrap());
    assert_eq!(d.metadata.permissions, 0o700);
}

#[test]
fn symlinked_parent_stays_in_image() {
    let dir = tempfile::tempdir().unwrap();
    let host_target = Path::new("/outside/escaped.txt");
    let host_existed = host_target.exists();
    let lower = LayerBuilder::new()
        .dir("outside/", 0o755, 0)
        .symlink("pwn", "/outside")
        .dir("deep/a/", 0o755, 0)
        .symlink("deep/a/up", "../../../../../outside")
        .write_gzip(dir.path(), "1");
    let upper = LayerBuilder::new()
        .file("pwn/escaped.txt", 0o644, 0, b"inside the image")
        .file("deep/a/up/relative.txt", 0o644, 0, b"clamped at the root")
        .write_gzip(dir.path(), "2");
    let (tree, _spool) = flatten_layers(&[lower, upper]);

    assert_eq!(content(&tree, "outside/escaped.txt"), b"inside the image");
    assert_eq!(
        content(&tree, "outside/relative.txt"),
        b"clamped at the root"
    );
    let pwn = tree.node(lookup(&tree, "pwn").unwrap());
    assert!(matches!(&pwn.kind, NodeKind::Symlink(t) if t == b"/outside"));
    assert_eq!(
        host_target.exists(),
        host_existed,
        "nothing may be written on the host"
    );
}

#[test]
fn file_before_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let layer = LayerBuilder::new()
        .file("etc/app/conf", 0o600, 0, b"conf")
        .dir("etc/app/", 0o750, 42)
        .write_gzip(dir.path(), "1");
    let (tree, _spool) = flatten_layers(&[layer]);

    assert_eq!(content(&tree, "etc/app/conf"), b"conf");
    let etc = tree.node(lookup(&tree, "etc").unwrap());
    assert_eq!((etc.metadata.permissions, etc.metadata.uid), (0o755, 0));
    let app = tree.node(lookup(&tree, "etc/app").unwrap());
    assert_eq!((app.metadata.permissions, app.metadata.uid), (0o750, 42));
}

#[test]
fn pax_global_header_consumed() {
    let dir = tempfile::tempdir().unwrap();
    let layer = LayerBuilder::new()
        .global_header()
        .file("a", 0o644, 0, b"a")
        .write_gzip(dir.path(), "1");
    let (tree, _spool) = flatten_layers(&[layer]);

    let names: Vec<&[u8]> = tree.entries(tree.root()).map(|(name, _)| name).collect();
    assert_eq!(names, [&b"a"[..]]);
}

#[test]
fn whiteout_then_readded() {
    let dir = tempfile::tempdir().unwrap();
    let first = LayerBuilder::new()
        .file("x", 0o644, 0, b"first")
        .dir("y/", 0o755, 0)
        .file("y/inner", 0o644, 0, b"inner")
        .write_gzip(dir.path(), "1");
    let second = LayerBuilder::new()
        .file(".wh.x", 0o644, 0, b"")
        .file(".wh.y", 0o644, 0, b"")
        .write_gzip(dir.path(), "2");
    let third = LayerBuilder::new()
        .file("x", 0o644, 0, b"third")
        .dir("y/", 0o755, 0)
        .write_gzip(dir.path(), "3");

    let (tree, _spool) = flatten_layers(&[first.clone(), second.clone()]);
    assert!(lookup(&tree, "x").is_none());
    assert!(lookup(&tree, "y").is_none());

    let (tree, _spool) = flatten_layers(&[first, second, third]);
    assert_eq!(content(&tree, "x"), b"third");
    assert!(
        lookup(&tree, "y/inner").is_none(),
        "a whited-out directory comes back empty"
    );
}

#[test]
fn replacement_rules() {
    let dir = tempfile::tempdir().unwrap();
    let lower = LayerBuilder::new()
        .dir("dir-to-file/", 0o755, 0)
        .file("dir-to-file/child", 0o644, 0, b"child")
        .file("file-to-dir", 0o644, 0, b"file")
        .symlink("link-to-file", "/etc/passwd")
        .dir("dir-stays/", 0o755, 0)
        .file("dir-stays/child", 0o644, 0, b"child")
        .write_gzip(dir.path(), "1");
    let upper = LayerBuilder::new()
        .file("dir-to-file", 0o644, 0, b"now a file")
        .dir("file-to-dir/", 0o711, 0)
        .file("link-to-file", 0o600, 0, b"now a file")
        .dir("dir-stays/", 0o700, 5)
        .write_gzip(dir.path(), "2");
    let (tree, _spool) = flatten_layers(&[lower, upper]);

    assert_eq!(content(&tree, "dir-to-file"), b"now a file");
    assert!(tree
        .node(lookup(&tree, "file-to-dir").unwrap())
        .kind
        .is_directory());
    assert_eq!(content(&tree, "link-to-file"), b"now a file");
    assert_eq!(content(&tree, "dir-stays/child"), b"child");
    let stays = tree.node(lookup(&tree, "dir-stays").unwrap());
    assert_eq!((stays.metadata.permissions, stays.metadata.uid), (0o700, 5));
}

#[test]
fn setuid_file_owned_by_1000() {
    let dir = tempfile::tempdir().unwrap();
    let layer = LayerBuilder::new()
        .file("usr/bin/tool", 0o4755, 1000, b"#!/bin/sh\n")
        .write_gzip(dir.path(), "1");
    let (tree, _spool) = flatten_layers(&[layer]);

    let tool = tree.node(lookup(&tree, "usr/bin/tool").unwrap());
    assert_eq!(tool.metadata.permissions, 0o4755);
    assert_eq!((tool.metadata.uid, tool.metadata.gid), (1000, 1000));
}

#[test]
fn zstd_and_plain_layers() {
    let dir = tempfile::tempdir().unwrap();
    let tar = LayerBuilder::new().file("z", 0o644, 0, b"zstd").into_tar();
    let zstd = zstd::encode_all(tar.as_slice(), 3).unwrap();
    let first = image_support::write_layer(
        dir.path(),
        "1",
        &zstd,
        &tar,
        "application/vnd.oci.image.layer.v1.tar+zstd",
    );
    let tar = LayerBuilder::new().file("p", 0o644, 0, b"plain").into_tar();
    let second = image_support::write_layer(
        dir.path(),
        "2",
        &tar,
        &tar,
        "application/vnd.oci.image.layer.v1.tar",
    );
    let (tree, _spool) = flatten_layers(&[first, second]);

    assert_eq!(content(&tree, "z"), b"zstd");
    assert_eq!(content(&tree, "p"), b"plain");
}

#[test]
fn empty_whiteout_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let layer = LayerBuilder::new()
        .file("etc/.wh.", 0o644, 0, b"")
        .write_gzip(dir.path(), "1");
    let err = flatten_error(&[layer]);
    assert!(
        matches!(&err, FlattenError::EmptyWhiteout { path, .. } if path == "etc/.wh."),
        "{err}"
    );
    assert!(err.to_string().contains("layer 1 of 1"), "{err}");
}

#[test]
fn diff_id_mismatch_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut layer = LayerBuilder::new()
        .file("a", 0o644, 0, b"a")
        .write_gzip(dir.path(), "1");
    let wrong = format!("sha256:{}", "0".repeat(64));
    layer.diff_id = Some(wrong.clone());
    let err = flatten_error(&[layer]);
    assert!(
        matches!(&err, FlattenError::DiffIdMismatch { expected, .. } if *expected == wrong),
        "{err}"
    );

    let mut layer = LayerBuilder::new()
        .file("a", 0o644, 0, b"a")
        .write_gzip(dir.path(), "2");
    layer.diff_id = Some("md5:abc".into());
    let err = flatten_error(&[layer]);
    assert!(matches!(err, FlattenError::InvalidDiffId { .. }), "{err}");
}

#[test]
fn corrupt_gzip_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let layer = LayerBuilder::new()
        .file("a", 0o644, 0, &[b'x'; 10000])
        .write_gzip(dir.path(), "1");
    let mut blob = std::fs::read(&layer.source.path).unwrap();
    let middle = blob.len() / 2;
    for byte in &mut blob[middle..middle + 16] {
        *byte ^= 0x5a;
    }
    std::fs::write(&layer.source.path, &blob).unwrap();
    let err = flatten_error(&[layer]);
    assert!(matches!(err, FlattenError::Tar { .. }), "{err}");
    assert!(err.to_string().contains("layer 1 of 1"), "{err}");
}

#[test]
fn truncated_tar_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let tar = LayerBuilder::new()
        .file("big", 0o644, 0, &[7u8; 5000])
        .into_tar();
    let cut = &tar[..2048];
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(cut).unwrap();
    let layer = image_support::write_layer(
        dir.path(),
        "1",
        &gzip.finish().unwrap(),
        cut,
        "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    let err = flatten_error(&[layer]);
    assert!(err.to_string().contains("truncated"), "{err}");
    assert!(err.to_string().contains("\"big\""), "{err}");
}

#[test]
fn fixture_layers_match_umoci_unpack() {
    let fixtures = image_support::fixtures();
    let scratch = tempfile::tempdir().unwrap();
    let image = import_path(
        &fixtures.join("oci"),
        Some("bookworm-banger"),
        scratch.path(),
    )
    .unwrap();
    assert_eq!(image.layers.len(), 3);
    let (tree, _spool) = flatten_layers(&image.layers);

    let expected = std::fs::read_to_string(fixtures.join("expected/bookworm-banger.txt")).unwrap();
    image_support::assert_same_listing(
        &image_support::listing(&tree),
        &expected,
        "bookworm-banger listing",
    );
    let expected =
        std::fs::read_to_string(fixtures.join("expected/bookworm-banger.sha256")).unwrap();
    image_support::assert_same_listing(
        &image_support::sha256_listing(&tree),
        &expected,
        "bookworm-banger sha256",
    );

    let ping = tree.node(lookup(&tree, "usr/bin/ping").unwrap());
    let capability = ping
        .metadata
        .xattrs
        .iter()
        .find(|x| x.name == b"security.capability");
    assert!(
        capability.is_some(),
        "ping has no security.capability: {:?}",
        ping.metadata.xattrs
    );
    let marked = tree.node(lookup(&tree, "opt/xattr-file").unwrap());
    assert!(marked
        .metadata
        .xattrs
        .iter()
        .any(|x| x.name == b"user.banger" && x.value == b"hello"));
}

/// Flattening random layers of files, directories, whiteouts and opaque
/// markers, compared with a small model that applies the same rules to a
/// map of paths.
mod model {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::image_support::{walk, LayerBuilder};
    use super::*;

    /// One entry of a generated layer.
    #[derive(Clone, Debug)]
    enum Op {
        File(Vec<String>, u8),
        Dir(Vec<String>),
        Whiteout(Vec<String>),
        Opaque(Vec<String>),
    }

    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Kind {
        Dir,
        File(u8),
    }

    type State = BTreeMap<Vec<String>, Kind>;

    fn path() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c")], 1..4)
            .prop_map(|parts| parts.into_iter().map(String::from).collect())
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (path(), any::<u8>()).prop_map(|(p, c)| Op::File(p, c)),
            2 => path().prop_map(Op::Dir),
            2 => path().prop_map(Op::Whiteout),
            1 => path().prop_map(Op::Opaque),
        ]
    }

    fn remove_subtree(state: &mut State, path: &[String]) {
        state.retain(|p, _| !p.starts_with(path));
    }

    /// Makes every parent of `path` a directory; `Err` when one is a file,
    /// which the flattener rejects.
    fn ensure_parents(
        state: &mut State,
        path: &[String],
        touched: &mut BTreeSet<Vec<String>>,
    ) -> Result<(), ()> {
        for end in 1..path.len() {
            let parent = path[..end].to_vec();
            match state.get(&parent) {
                Some(Kind::File(_)) => return Err(()),
                Some(Kind::Dir) => {}
                None => {
                    state.insert(parent.clone(), Kind::Dir);
                }
            }
            touched.insert(parent);
        }
        Ok(())
    }

    /// Applies one layer to the model; `Err` when the flattener must fail.
    fn apply(state: &mut State, layer: &[Op]) -> Result<(), ()> {
        let mut touched = BTreeSet::new();
        let mut opaque = Vec::new();
        for op in layer {
            match op {
                Op::File(path, content) => {
                    ensure_parents(state, path, &mut touched)?;
                    remove_subtree(state, path);
                    state.insert(path.clone(), Kind::File(*content));
                    touched.insert(path.clone());
                }
                Op::Dir(path) => {
                    ensure_parents(state, path, &mut touched)?;
                    if state.get(path) != Some(&Kind::Dir) {
                        remove_subtree(state, path);
                        state.insert(path.clone(), Kind::Dir);
                    }
                    touched.insert(path.clone());
                }
                Op::Whiteout(path) => {
                    // Resolution stops at the first missing or non-directory
                    // parent; the directories before it count as touched.
                    let mut parents_are_dirs = true;
                    for end in 1..path.len() {
                        if state.get(&path[..end].to_vec()) != Some(&Kind::Dir) {
                            parents_are_dirs = false;
                            break;
                        }
                        touched.insert(path[..end].to_vec());
                    }
                    if parents_are_dirs {
                        remove_subtree(state, path);
                    }
                }
                Op::Opaque(dir) => {
                    let mut with_marker = dir.clone();
                    with_marker.push(".wh..wh..opq".into());
                    ensure_parents(state, &with_marker, &mut touched)?;
                    opaque.push(dir.clone());
                }
            }
        }
        // Under an opaque directory a path survives when it and every
        // directory between it and the opaque one were touched by the layer.
        for dir in opaque {
            state.retain(|p, _| {
                !p.starts_with(&dir)
                    || p.len() == dir.len()
                    || (dir.len() + 1..=p.len()).all(|end| touched.contains(&p[..end]))
            });
        }
        Ok(())
    }

    fn build_layer(ops: &[Op], dir: &std::path::Path, name: &str) -> Layer {
        let mut builder = LayerBuilder::new();
        for op in ops {
            builder = match op {
                Op::File(path, content) => builder.file(&path.join("/"), 0o644, 0, &[*content]),
                Op::Dir(path) => builder.dir(&format!("{}/", path.join("/")), 0o755, 0),
                Op::Whiteout(path) => {
                    let (last, parents) = path.split_last().unwrap();
                    let mut whiteout = parents.to_vec();
                    whiteout.push(format!(".wh.{last}"));
                    builder.file(&whiteout.join("/"), 0o644, 0, b"")
                }
                Op::Opaque(path) => {
                    builder.file(&format!("{}/.wh..wh..opq", path.join("/")), 0o644, 0, b"")
                }
            };
        }
        builder.write_gzip(dir, name)
    }

    fn tree_state(tree: &ext4_writer::Tree) -> State {
        let mut state = State::new();
        for (path, id) in walk(tree) {
            let text = String::from_utf8(path).unwrap();
            let parts: Vec<String> = text.split('/').skip(1).map(String::from).collect();
            if parts.is_empty() {
                continue;
            }
            let kind = match &tree.node(id).kind {
                NodeKind::Directory(_) => Kind::Dir,
                NodeKind::Regular(data) => Kind::File(image_support::file_bytes(data)[0]),
                other => panic!("unexpected node {other:?}"),
            };
            state.insert(parts, kind);
        }
        state
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn flatten_matches_model(layers in prop::collection::vec(prop::collection::vec(op(), 0..8), 1..4)) {
            let dir = tempfile::tempdir().unwrap();
            let mut expected = State::new();
            let mut expect_error = false;
            for layer in &layers {
                if apply(&mut expected, layer).is_err() {
                    expect_error = true;
                    break;
                }
            }
            let inputs: Vec<Layer> = layers
                .iter()
                .enumerate()
                .map(|(i, ops)| build_layer(ops, dir.path(), &i.to_string()))
                .collect();
            let mut spool = Spool::new().unwrap();
            let result = flatten(&inputs, &mut spool);

            if expect_error {
                prop_assert!(result.is_err(), "the model rejects a file used as a parent");
            } else {
                let tree = result.unwrap();
                prop_assert_eq!(tree_state(&tree), expected);
            }
        }
    }
}

/// A 1 MiB tmpfs mounted on a temporary directory, unmounted when dropped.
struct SmallTmpfs {
    dir: tempfile::TempDir,
}

impl SmallTmpfs {
    fn mount() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "banger-test-spool"])
            .arg(dir.path())
            .output()
            .expect("mount (util-linux) must be installed");
        assert!(
            output.status.success(),
            "mounting a tmpfs failed (tests must run as root): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Self { dir }
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let status = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("failed to unmount {}", self.dir.path().display());
        }
    }
}

#[test]
fn full_spool_is_a_host_resource_error() {
    use banger::error::{Classify, ExitCode};

    let dir = tempfile::tempdir().unwrap();
    // A repeated byte gzips to a few KiB, but the spool needs the full 2 MiB.
    let big = vec![0x5a_u8; 2 << 20];
    let layer = LayerBuilder::new()
        .file("big", 0o644, 0, &big)
        .write_gzip(dir.path(), "1");
    let tmpfs = SmallTmpfs::mount();
    let mut spool = Spool::new_in(tmpfs.dir.path()).unwrap();

    let error = flatten(&[layer], &mut spool).unwrap_err();
    assert_eq!(error.exit_code(), ExitCode::HostResource, "{error}");
    // The spool file must close before the tmpfs can be unmounted.
    drop(spool);
}
