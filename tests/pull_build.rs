//! Pulled images built into ext4. Each fixture image is pulled from the
//! real loopback registry, flattened and built. The image must pass
//! `e2fsck -fn` and, mounted read-only, equal the reference tree that a
//! root `umoci unpack` made. Needs root, e2fsprogs, util-linux, attr and
//! libcap2-bin.

mod image_support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use banger::image::blob_cache::BlobCache;
use banger::image::build::{build_rootfs, Headroom};
use banger::image::flatten::Layer;
use banger::image::platform::Platform;
use banger::image::progress::Progress;
use banger::image::registry::{pull, PullOptions, RetryPolicy};
use banger::image::{ImageReference, PulledImage};
use image_support::mount::{e2fsck_clean, xattr_set, Mount, LISTING_SCRIPT, SHA256_SCRIPT};

/// Address of the loopback registry (`BANGER_TEST_REGISTRY`), checked to
/// accept connections.
fn registry_address() -> String {
    let address =
        std::env::var("BANGER_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5055".to_owned());
    let reachable = address
        .parse::<SocketAddr>()
        .ok()
        .and_then(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok())
        .is_some();
    assert!(
        reachable,
        "test registry {address} is not reachable: run tests/fixtures/build-images.sh, which starts it through tests/fixtures/registry.sh (or set BANGER_TEST_REGISTRY)"
    );
    address
}

async fn pull_fixture(tag: &str, cache: &BlobCache) -> PulledImage {
    let address = registry_address();
    let options = PullOptions {
        platform: Platform::default(),
        insecure_registries: vec![address.clone()],
        docker_config: None,
        max_concurrent_downloads: 3,
        retry: RetryPolicy::default(),
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(30),
    };
    let reference = ImageReference::parse(&format!("{address}/debian:{tag}")).unwrap();
    pull(&reference, &options, cache, &Progress::quiet())
        .await
        .unwrap()
}

/// Pulls `tag`, builds it to `out` and checks it with e2fsck.
async fn pull_and_build(tag: &str, work: &Path) -> std::path::PathBuf {
    let cache = BlobCache::open(work.join("oci")).unwrap();
    let image = pull_fixture(tag, &cache).await;
    let layers = Layer::from_pulled(&image, &cache).unwrap();
    let out = work.join(format!("{tag}.ext4"));
    let identity = image.manifest_digest.to_string();
    build_rootfs(&layers, &identity, Headroom::default(), &out).unwrap();
    e2fsck_clean(&out);
    out
}

/// Compares the mounted image with expected/NAME.{txt,sha256,xattrs.txt}.
fn assert_matches_reference(mount: &Mount, name: &str) {
    let fixtures = image_support::fixtures();
    let listing: String = mount
        .run(LISTING_SCRIPT)
        .lines()
        .filter(|line| !line.starts_with("./lost+found\t"))
        .map(|line| format!("{line}\n"))
        .collect();
    let expected = std::fs::read_to_string(fixtures.join(format!("expected/{name}.txt"))).unwrap();
    image_support::assert_same_listing(&listing, &expected, name);

    let expected =
        std::fs::read_to_string(fixtures.join(format!("expected/{name}.sha256"))).unwrap();
    image_support::assert_same_listing(&mount.run(SHA256_SCRIPT), &expected, name);

    let dump = mount.run("getfattr -R -h -d -m - --absolute-names . 2>/dev/null || true");
    let expected =
        std::fs::read_to_string(fixtures.join(format!("expected/{name}.xattrs.txt"))).unwrap();
    assert_eq!(xattr_set(&dump), xattr_set(&expected), "{name} xattrs");
}

#[tokio::test(flavor = "multi_thread")]
async fn pulled_minbase_matches_reference() {
    let work = tempfile::tempdir().unwrap();
    let image = pull_and_build("minbase", work.path()).await;
    let mount = Mount::new(&image);
    assert_matches_reference(&mount, "minbase");
    assert_eq!(mount.run("stat -c '%t:%T' dev/null").trim(), "1:3");
}

#[tokio::test(flavor = "multi_thread")]
async fn pulled_docker_schema2_matches_reference() {
    let work = tempfile::tempdir().unwrap();
    let image = pull_and_build("bookworm-banger-v2s2", work.path()).await;
    let mount = Mount::new(&image);
    assert_matches_reference(&mount, "bookworm-banger");

    let ping = mount.run("getcap usr/bin/ping");
    assert!(ping.contains("cap_net_raw=ep"), "getcap: {ping}");
    let sudo = mount.run("stat -c '%a %u:%g' usr/bin/sudo");
    assert_eq!(sudo.trim(), "4755 0:0");
}

#[tokio::test(flavor = "multi_thread")]
async fn pulled_bookworm_ssh_keeps_ownership() {
    let work = tempfile::tempdir().unwrap();
    let image = pull_and_build("bookworm-ssh", work.path()).await;
    let mount = Mount::new(&image);

    let ping = mount.run("getcap usr/bin/ping");
    assert!(ping.contains("cap_net_raw=ep"), "getcap: {ping}");
    let sudo = mount.run("stat -c '%a %u:%g' usr/bin/sudo");
    assert_eq!(sudo.trim(), "4755 0:0");
    let home = mount.run("stat -c '%u:%g' home/banger");
    assert_eq!(home.trim(), "1000:1000");
    // Layer 3 of bookworm-banger deletes these; here they must still exist.
    assert!(mount.path().join("opt/doomed/f1").is_file());
    assert!(mount.path().join("usr/share/doc").is_dir());
}
