//! `banger image` commands run as a separate process: concurrent pulls from
//! the real loopback registry into one cache, and ls, inspect, rm, prune and
//! export over images stored through the library.

mod image_support;

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use banger::error::ExitCode;
use banger::image::blob_cache::BlobCache;
use banger::image::model::{Digest, ImageConfig, LayerBlob, PulledImage, RootFs};
use banger::image::ImageReference;
use banger::store::images::{BuildFailure, ImageStore};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

fn fixtures_dir() -> PathBuf {
    let dir = std::env::var_os("BANGER_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/banger-fixtures"));
    assert!(
        dir.join("registry").is_dir(),
        "fixtures missing in {}: run tests/fixtures/build-images.sh (or set BANGER_FIXTURES)",
        dir.display()
    );
    dir
}

fn banger(home: &Path, args: &[&str]) -> Output {
    image_support::banger_command(home, args).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn two_processes_pull_into_one_cache() {
    fixtures_dir();
    let registry = image_support::registry_address();
    let home = tempfile::tempdir().unwrap();
    let reference = format!("{registry}/debian:bookworm-banger");
    let args = [
        "image",
        "pull",
        "--quiet",
        "--insecure-registry",
        &registry,
        &reference,
    ];

    let children: Vec<_> = (0..2)
        .map(|_| {
            image_support::banger_command(home.path(), &args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();

    for output in &outputs {
        assert!(output.status.success(), "{}", stderr(output));
    }
    assert_eq!(stdout(&outputs[0]), stdout(&outputs[1]));
    let expected_digest =
        fs::read_to_string(fixtures_dir().join("registry/bookworm-banger.digest")).unwrap();
    assert!(
        stdout(&outputs[0]).contains(expected_digest.trim()),
        "{}",
        stdout(&outputs[0])
    );
    let images: Vec<String> = fs::read_dir(home.path().join("data/images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    assert_eq!(
        images,
        [expected_digest.trim().trim_start_matches("sha256:")]
    );

    let blobs = home.path().join("cache/oci/blobs/sha256");
    let mut names: Vec<String> = fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // manifest + config + 3 layers, each stored once and complete.
    assert_eq!(names.len(), 5, "{names:?}");
    for name in &names {
        let bytes = fs::read(blobs.join(name)).unwrap();
        assert_eq!(hex::encode(Sha256::digest(&bytes)), *name);
    }
}

/// A stand-in for the ext4 build: the store treats the root filesystem as
/// opaque bytes, so these tests write known ones.
fn store_image(home: &Path, reference: &str, seed: &[u8], rootfs: &'static [u8]) -> Digest {
    let cache = BlobCache::open(home.join("cache/oci")).unwrap();
    let store = ImageStore::open(&home.join("data")).unwrap();
    let manifest = [seed, b"-manifest"].concat();
    let config = [seed, b"-config"].concat();
    let layer = [seed, b"-layer"].concat();
    for blob in [&manifest, &config, &layer] {
        cache.write_verified(&Digest::of(blob), blob).unwrap();
    }
    let reference = ImageReference::parse(reference).unwrap();
    let pulled = PulledImage {
        reference: reference.clone(),
        manifest_digest: Digest::of(&manifest),
        manifest,
        config_digest: Digest::of(&config),
        config: ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![Digest::of(b"diff")],
            },
            ..ImageConfig::default()
        },
        layers: vec![LayerBlob {
            digest: Digest::of(&layer),
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            size: layer.len() as u64,
        }],
    };
    let record = store
        .install(
            &pulled,
            Some(&reference.to_string()),
            "linux/amd64",
            |path| {
                fs::write(path, rootfs).map_err(|e| BuildFailure {
                    message: e.to_string(),
                    code: ExitCode::General,
                })
            },
        )
        .unwrap();
    record.manifest_digest
}

#[test]
fn ls_shows_each_reference() {
    let home = tempfile::tempdir().unwrap();
    let digest = store_image(home.path(), "debian:bookworm", b"a", b"ext4");
    store_image(home.path(), "127.0.0.1:5055/app:v1", b"b", b"ext4!");

    let output = banger(home.path(), &["image", "ls"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("REPOSITORY"), "{text}");
    let debian = lines
        .iter()
        .find(|l| l.starts_with("docker.io/library/debian"))
        .expect("debian row");
    assert!(debian.contains("bookworm"), "{debian}");
    assert!(debian.contains(&digest.hex()[..12]), "{debian}");
    assert!(debian.contains("4 B"), "{debian}");
    assert!(text.contains("127.0.0.1:5055/app"), "{text}");

    let json = banger(home.path(), &["--json", "image", "ls"]);
    let records: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(records.as_array().unwrap().len(), 2);
}

#[test]
fn inspect_prints_the_record() {
    let home = tempfile::tempdir().unwrap();
    let digest = store_image(home.path(), "debian:bookworm", b"a", b"ext4");

    let output = banger(home.path(), &["image", "inspect", "debian:bookworm"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let record: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(record["manifest_digest"], digest.to_string());
    assert_eq!(record["references"][0], "docker.io/library/debian:bookworm");
    assert_eq!(record["config"]["os"], "linux");

    let missing = banger(home.path(), &["image", "inspect", "debian:trixie"]);
    assert_eq!(missing.status.code(), Some(ExitCode::NotFound as i32));
    assert!(
        stderr(&missing).contains("debian:trixie"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn export_writes_the_rootfs() {
    let home = tempfile::tempdir().unwrap();
    store_image(home.path(), "debian:bookworm", b"a", b"ext4 bytes");
    let target = home.path().join("out.ext4");

    let output = banger(
        home.path(),
        &[
            "image",
            "export",
            "debian:bookworm",
            "-o",
            target.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(fs::read(&target).unwrap(), b"ext4 bytes");
}

#[test]
fn export_rejects_special_targets() {
    let home = tempfile::tempdir().unwrap();
    store_image(home.path(), "debian:bookworm", b"a", b"ext4 bytes");
    // A fifo stands in for a device node such as /dev/full: both would be
    // swapped for a regular file by the rename that finishes an export.
    let fifo = home.path().join("fifo");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let kept = home.path().join("kept.ext4");
    fs::write(&kept, b"keep me").unwrap();
    let link = home.path().join("link.ext4");
    std::os::unix::fs::symlink(&kept, &link).unwrap();

    for target in [&fifo, &link] {
        let output = banger(
            home.path(),
            &[
                "image",
                "export",
                "debian:bookworm",
                "-o",
                target.to_str().unwrap(),
            ],
        );
        assert_eq!(
            output.status.code(),
            Some(ExitCode::Usage as i32),
            "{}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("not a regular file"),
            "{}",
            stderr(&output)
        );
    }
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(&kept).unwrap(), b"keep me");
}

#[test]
fn rm_then_prune_frees_everything() {
    let home = tempfile::tempdir().unwrap();
    let digest = store_image(home.path(), "debian:bookworm", b"a", b"ext4");

    let output = banger(
        home.path(),
        &["image", "rm", "debian:bookworm", "debian:trixie"],
    );
    assert_eq!(output.status.code(), Some(ExitCode::NotFound as i32));
    assert!(
        stdout(&output).contains(&format!("deleted {digest}")),
        "{}",
        stdout(&output)
    );
    assert!(
        stderr(&output).contains("debian:trixie"),
        "{}",
        stderr(&output)
    );
    assert!(!home.path().join("data/images").join(digest.hex()).exists());

    let prune = banger(home.path(), &["image", "prune"]);
    assert!(prune.status.success(), "{}", stderr(&prune));
    assert!(stdout(&prune).contains("3 blobs"), "{}", stdout(&prune));
    let blobs = fs::read_dir(home.path().join("cache/oci/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0);
}

/// A tmpfs mounted on a temporary directory for one test, unmounted when
/// dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "banger-test-tmpfs"])
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

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let status = Command::new("umount").arg(self.dir.path()).status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("failed to unmount {}", self.dir.path().display());
        }
    }
}

#[test]
fn export_to_another_filesystem() {
    // copy_file_range fails with EXDEV between ext4 and tmpfs on current
    // kernels, so this takes the read-and-write path.
    let home = tempfile::tempdir().unwrap();
    store_image(home.path(), "debian:bookworm", b"a", b"ext4 bytes");
    let tmpfs = Tmpfs::mount();
    let target = tmpfs.dir.path().join("out.ext4");

    let output = banger(
        home.path(),
        &[
            "image",
            "export",
            "debian:bookworm",
            "-o",
            target.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(fs::read(&target).unwrap(), b"ext4 bytes");
}

#[test]
fn quiet_pull_prints_only_the_error() {
    let home = tempfile::tempdir().unwrap();
    // A loopback port with no listener: every connection is refused, and
    // each refusal is retried with a warning unless `--quiet` is given.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let registry = format!("127.0.0.1:{port}");
    let reference = format!("{registry}/debian:none");

    let output = banger(
        home.path(),
        &[
            "image",
            "pull",
            "--quiet",
            "--insecure-registry",
            &registry,
            &reference,
        ],
    );
    assert_eq!(output.status.code(), Some(ExitCode::Remote as i32));
    let stderr = stderr(&output);
    assert!(!stderr.contains("WARN"), "{stderr}");
    assert!(!stderr.contains("retrying"), "{stderr}");
    assert!(stderr.contains("failed to reach registry"), "{stderr}");
}

#[test]
fn broken_record_does_not_block_the_store() {
    let home = tempfile::tempdir().unwrap();
    let good = store_image(home.path(), "debian:bookworm", b"a", b"ext4");
    let bad = store_image(home.path(), "debian:trixie", b"b", b"ext4");
    let images = home.path().join("data/images");
    let bad_record = images.join(bad.hex()).join("image.json");
    fs::write(&bad_record, b"\x00garbage").unwrap();
    let stray = images.join("zzzz");
    fs::create_dir(&stray).unwrap();
    fs::write(stray.join("image.json"), b"{}").unwrap();

    let ls = banger(home.path(), &["image", "ls"]);
    assert!(ls.status.success(), "{}", stderr(&ls));
    assert!(stdout(&ls).contains(&good.hex()[..12]), "{}", stdout(&ls));
    assert!(
        stderr(&ls).contains(&bad_record.display().to_string()),
        "{}",
        stderr(&ls)
    );

    let inspect = banger(home.path(), &["image", "inspect", "debian:bookworm"]);
    assert!(inspect.status.success(), "{}", stderr(&inspect));

    let rm = banger(home.path(), &["image", "rm", &bad.to_string()]);
    assert!(rm.status.success(), "{}", stderr(&rm));
    assert!(!images.join(bad.hex()).exists());

    let prune = banger(home.path(), &["image", "prune"]);
    assert!(prune.status.success(), "{}", stderr(&prune));
    assert!(!stray.exists());
    assert!(images.join(good.hex()).exists());
}

#[test]
fn missing_rootfs_says_pull_again() {
    let home = tempfile::tempdir().unwrap();
    let digest = store_image(home.path(), "debian:bookworm", b"a", b"ext4");
    let image_dir = home.path().join("data/images").join(digest.hex());
    fs::remove_file(image_dir.join("rootfs.ext4")).unwrap();

    let ls = banger(home.path(), &["image", "ls"]);
    assert!(ls.status.success(), "{}", stderr(&ls));
    assert!(
        !stdout(&ls).contains(&digest.hex()[..12]),
        "{}",
        stdout(&ls)
    );

    let inspect = banger(home.path(), &["image", "inspect", "debian:bookworm"]);
    assert_eq!(inspect.status.code(), Some(ExitCode::NotFound as i32));
    let message = stderr(&inspect);
    assert!(message.contains("rootfs.ext4"), "{message}");
    assert!(message.contains("pull it again"), "{message}");

    let rm = banger(home.path(), &["image", "rm", "debian:bookworm"]);
    assert!(rm.status.success(), "{}", stderr(&rm));
    assert!(!image_dir.exists());
}

#[test]
fn digest_queries_find_the_image() {
    let home = tempfile::tempdir().unwrap();
    let digest = store_image(home.path(), "debian:bookworm", b"a", b"ext4");
    let short = format!("sha256:{}", &digest.hex()[..12]);
    let pinned = format!("127.0.0.1:5055/other@{digest}");

    for query in [short.as_str(), pinned.as_str()] {
        let output = banger(home.path(), &["image", "inspect", query]);
        assert!(output.status.success(), "{query}: {}", stderr(&output));
    }
}

#[test]
fn corrupt_cached_layer_is_evicted() {
    let registry = image_support::registry_address();
    let home = tempfile::tempdir().unwrap();
    let reference = format!("{registry}/debian:minbase");
    let pull_args = [
        "image",
        "pull",
        "--quiet",
        "--insecure-registry",
        &registry,
        &reference,
    ];
    let first = banger(home.path(), &pull_args);
    assert!(first.status.success(), "{}", stderr(&first));
    let rm = banger(home.path(), &["image", "rm", &reference]);
    assert!(rm.status.success(), "{}", stderr(&rm));

    // Flip one byte in the middle of the largest cached blob, the layer,
    // keeping its size.
    let blobs = home.path().join("cache/oci/blobs/sha256");
    let layer = fs::read_dir(&blobs)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .max_by_key(|path| fs::metadata(path).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(&layer).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&layer, &bytes).unwrap();
    let hex = layer.file_name().unwrap().to_string_lossy().into_owned();

    let second = banger(home.path(), &pull_args);
    assert!(!second.status.success());
    let message = stderr(&second);
    assert!(message.contains(&format!("sha256:{hex}")), "{message}");
    assert!(message.contains(&layer.display().to_string()), "{message}");
    assert!(message.contains("pull the image again"), "{message}");
    assert!(!layer.exists(), "corrupt blob left in the cache");

    let third = banger(home.path(), &pull_args);
    assert!(third.status.success(), "{}", stderr(&third));
}

#[test]
fn pinned_pull_stores_the_digest_reference() {
    let registry = image_support::registry_address();
    let digest = fs::read_to_string(fixtures_dir().join("registry/minbase.digest")).unwrap();
    let digest = digest.trim();
    let home = tempfile::tempdir().unwrap();
    let pinned = format!("{registry}/debian:minbase@{digest}");

    let pull = banger(
        home.path(),
        &[
            "image",
            "pull",
            "--quiet",
            "--insecure-registry",
            &registry,
            &pinned,
        ],
    );
    assert!(pull.status.success(), "{}", stderr(&pull));
    let inspect = banger(home.path(), &["image", "inspect", digest]);
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    let record: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(
        record["references"],
        serde_json::json!([format!("{registry}/debian@{digest}")])
    );

    // The same image pulled by tag gets a second, tagged row, and removing
    // the tag removes exactly that row.
    let tagged = format!("{registry}/debian:minbase");
    let pull = banger(
        home.path(),
        &[
            "image",
            "pull",
            "--quiet",
            "--insecure-registry",
            &registry,
            &tagged,
        ],
    );
    assert!(pull.status.success(), "{}", stderr(&pull));
    let rows = |home: &Path| -> Vec<String> {
        stdout(&banger(home, &["image", "ls"]))
            .lines()
            .skip(1)
            .map(|line| {
                line.split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    };
    let repository = format!("{registry}/debian");
    assert_eq!(
        rows(home.path()),
        vec![
            format!("{repository} minbase"),
            format!("{repository} <none>")
        ]
    );
    let rm = banger(home.path(), &["image", "rm", &tagged]);
    assert!(stdout(&rm).contains("untagged"), "{}", stdout(&rm));
    assert_eq!(rows(home.path()), vec![format!("{repository} <none>")]);

    let export = banger(
        home.path(),
        &[
            "image",
            "export",
            &format!("{registry}/elsewhere@{digest}"),
            "-o",
            home.path().join("out.ext4").to_str().unwrap(),
        ],
    );
    assert!(export.status.success(), "{}", stderr(&export));
}
