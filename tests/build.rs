//! Building ext4 images from flattened layers: the real Debian fixture is
//! flattened, built, checked with `e2fsck -fn`, mounted read-only through a
//! loop device and compared with the tree a root `umoci unpack` made.
//! Needs root, e2fsprogs, util-linux (mount) and attr (getfattr).

mod image_support;

use std::fs::File;
use std::path::{Path, PathBuf};

use banger::image::build::{build, Headroom};
use banger::image::flatten::flatten;
use banger::image::import::import_path;
use ext4_writer::tar::Spool;
use ext4_writer::{Metadata, NodeKind, Timestamp, Tree};
use image_support::mount::{e2fsck_clean, xattr_set, Mount, LISTING_SCRIPT, SHA256_SCRIPT};
use sha2::{Digest, Sha256};

fn build_fixture(out: &Path) {
    let fixtures = image_support::fixtures();
    let scratch = tempfile::tempdir().unwrap();
    let image = import_path(
        &fixtures.join("oci"),
        Some("bookworm-banger"),
        scratch.path(),
    )
    .unwrap();
    let mut spool = Spool::new().unwrap();
    let mut tree = flatten(&image.layers, &mut spool).unwrap();
    let file = File::create(out).unwrap();
    let report = build(
        &mut tree,
        &image.digest.as_ref().unwrap().to_string(),
        Headroom::default(),
        &file,
    )
    .unwrap();
    assert!(
        report.free_blocks * u64::from(report.block_size) >= Headroom::default().min_free_bytes
    );
}

#[test]
fn fixture_image_matches_umoci_unpack() {
    let fixtures = image_support::fixtures();
    let work = tempfile::tempdir().unwrap();
    let image_path: PathBuf = work.path().join("root.ext4");
    build_fixture(&image_path);
    e2fsck_clean(&image_path);

    let mount = Mount::new(&image_path);
    let listing = mount.run(LISTING_SCRIPT);
    let listing: String = listing
        .lines()
        .filter(|line| !line.starts_with("./lost+found\t"))
        .map(|line| format!("{line}\n"))
        .collect();
    let expected = std::fs::read_to_string(fixtures.join("expected/bookworm-banger.txt")).unwrap();
    image_support::assert_same_listing(&listing, &expected, "mounted image listing");

    let sums = mount.run(SHA256_SCRIPT);
    let expected =
        std::fs::read_to_string(fixtures.join("expected/bookworm-banger.sha256")).unwrap();
    image_support::assert_same_listing(&sums, &expected, "mounted image sha256");

    let dump = mount.run("getfattr -R -h -d -m - --absolute-names . 2>/dev/null || true");
    let expected =
        std::fs::read_to_string(fixtures.join("expected/bookworm-banger.xattrs.txt")).unwrap();
    assert_eq!(xattr_set(&dump), xattr_set(&expected));

    let root_mode = mount.run("stat -c %a .");
    assert_eq!(root_mode.trim(), "755");
    let null = mount.run("stat -c '%t:%T' dev/null");
    assert_eq!(null.trim(), "1:3");
}

#[test]
fn build_is_reproducible() {
    let make_tree = || {
        let mut tree = Tree::new(Metadata::new(0o755, 0, 0, Timestamp::new(1, 0)));
        let root = tree.root();
        let etc = tree
            .add(
                root,
                b"etc",
                NodeKind::directory(),
                Metadata::new(0o755, 0, 0, Timestamp::new(1, 0)),
            )
            .unwrap();
        let data = ext4_writer::FileData::from_bytes(b"hostname\n".to_vec());
        tree.add(
            etc,
            b"hostname",
            NodeKind::Regular(data),
            Metadata::new(0o644, 0, 0, Timestamp::new(1, 0)),
        )
        .unwrap();
        tree
    };
    let work = tempfile::tempdir().unwrap();
    let small = Headroom {
        percent: 0,
        min_free_bytes: 1 << 20,
    };
    let mut digests = Vec::new();
    for (index, identity) in ["sha256:same", "sha256:same", "sha256:other"]
        .iter()
        .enumerate()
    {
        let path = work.path().join(format!("{index}.ext4"));
        let file = File::create(&path).unwrap();
        build(&mut make_tree(), identity, small, &file).unwrap();
        drop(file);
        e2fsck_clean(&path);
        digests.push(hex::encode(Sha256::digest(std::fs::read(&path).unwrap())));
    }
    assert_eq!(digests[0], digests[1], "same tree and identity");
    assert_ne!(digests[0], digests[2], "another identity gets another UUID");
}
