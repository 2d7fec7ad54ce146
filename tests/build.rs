//! Building ext4 images from flattened layers: the real Debian fixture is
//! flattened, built, checked with `e2fsck -fn`, mounted read-only through a
//! loop device and compared with the tree a root `umoci unpack` made.
//! Needs root, e2fsprogs, util-linux (mount) and attr (getfattr).

mod image_support;

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use banger::image::build::{build, Headroom};
use banger::image::flatten::flatten;
use banger::image::import::import_path;
use ext4_writer::tar::Spool;
use ext4_writer::{Metadata, NodeKind, Timestamp, Tree};
use sha2::{Digest, Sha256};

/// The listing of build-images.sh step 6, run in the mounted image.
const LISTING_SCRIPT: &str = r#"find . -printf '%p\t%y %#m %U:%G %s %n\t%l\n' \
  | awk -F'\t' '{split($2,a," "); if (a[1]=="d") {a[4]="-"; a[5]="-"}
      print $1 "\t" a[1] " " a[2] " " a[3] " " a[4] " " a[5] (a[1]=="l" ? " -> " $3 : "")}' \
  | LC_ALL=C sort"#;
const SHA256_SCRIPT: &str = "find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum";

/// A read-only loop mount of an image, unmounted when dropped (the loop
/// device is released with it, as `mount -o loop` sets autoclear).
struct Mount {
    dir: tempfile::TempDir,
}

impl Mount {
    fn new(image: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("mount")
            .args(["-t", "ext4", "-o", "ro,loop,noload"])
            .arg(image)
            .arg(dir.path())
            .output()
            .expect("mount (util-linux) must be installed");
        assert!(
            output.status.success(),
            "mounting {} failed (tests must run as root): {}",
            image.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn run(&self, script: &str) -> String {
        let output = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(self.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let status = Command::new("umount").arg(self.dir.path()).status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("failed to unmount {}", self.dir.path().display());
        }
    }
}

fn e2fsck_clean(image: &Path) {
    let output = Command::new("e2fsck")
        .args(["-fn"])
        .arg(image)
        .output()
        .expect("e2fsck (e2fsprogs) must be installed");
    assert!(
        output.status.success(),
        "e2fsck -fn {} found problems:\n{}{}",
        image.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `getfattr -R -d` output as a set of `FILE\tNAME=VALUE` lines, because
/// its traversal order follows the directory order of each filesystem.
fn xattr_set(dump: &str) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    let mut file = String::new();
    for line in dump.lines() {
        if let Some(name) = line.strip_prefix("# file: ") {
            file = name.to_string();
        } else if !line.is_empty() {
            set.insert(format!("{file}\t{line}"));
        }
    }
    set
}

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
        image.digest.as_deref().unwrap(),
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
