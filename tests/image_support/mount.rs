//! Oracles for built images: `e2fsck -fn`, a read-only loop mount, and the
//! listings build-images.sh makes of the reference trees.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The listing of build-images.sh step 6, run in the mounted image.
pub const LISTING_SCRIPT: &str = r#"find . -printf '%p\t%y %#m %U:%G %s %n\t%l\n' \
  | awk -F'\t' '{split($2,a," "); if (a[1]=="d") {a[4]="-"; a[5]="-"}
      print $1 "\t" a[1] " " a[2] " " a[3] " " a[4] " " a[5] (a[1]=="l" ? " -> " $3 : "")}' \
  | LC_ALL=C sort"#;
pub const SHA256_SCRIPT: &str = "find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum";

/// A read-only loop mount of an image, unmounted when dropped (the loop
/// device is released with it, as `mount -o loop` sets autoclear).
pub struct Mount {
    dir: tempfile::TempDir,
}

impl Mount {
    pub fn new(image: &Path) -> Self {
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

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn run(&self, script: &str) -> String {
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

pub fn e2fsck_clean(image: &Path) {
    let output = Command::new("e2fsck")
        .env(
            "E2FSCK_CONFIG",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/e2fsck.conf"),
        )
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
pub fn xattr_set(dump: &str) -> BTreeSet<String> {
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
