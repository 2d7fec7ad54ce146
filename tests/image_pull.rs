//! Registry pulls into the blob cache, against the real loopback registry
//! (`tests/fixtures/registry.sh`) and against `FaultyRegistry`, a test double
//! that serves real fixture blobs with the faults a real registry will not
//! produce on demand.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use banger::error::{Classify, ExitCode};
use banger::image::blob_cache::BlobCache;
use banger::image::model::Digest;
use banger::image::platform::Platform;
use banger::image::progress::Progress;
use banger::image::registry::{pull, PullOptions, RetryPolicy};
use banger::image::{ImageReference, PullError, PulledImage};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const FIXTURE_TAGS: [&str; 4] = [
    "minbase",
    "bookworm-ssh",
    "bookworm-banger",
    "bookworm-banger-v2s2",
];

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

fn fixtures_dir() -> PathBuf {
    let dir = std::env::var_os("BANGER_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/banger-fixtures"));
    assert!(
        dir.join("oci/index.json").is_file(),
        "fixtures missing in {}: run tests/fixtures/build-images.sh (or set BANGER_FIXTURES)",
        dir.display()
    );
    dir
}

/// Address of the real registry, checked to accept connections.
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

fn fast_options(insecure: &str) -> PullOptions {
    PullOptions {
        platform: Platform::default(),
        insecure_registries: vec![insecure.to_owned()],
        docker_config: None,
        max_concurrent_downloads: 3,
        retry: RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            max_retry_after: Duration::from_secs(3),
        },
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(5),
    }
}

async fn pull_into(
    reference: &str,
    options: &PullOptions,
    cache: &BlobCache,
) -> Result<PulledImage, PullError> {
    let reference = ImageReference::parse(reference).unwrap();
    pull(&reference, options, cache, &Progress::quiet()).await
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks that every file under `blobs/sha256` is a complete, verified blob
/// named by its digest, and that no temporary file is left. Returns the
/// blob names.
fn assert_cache_clean(cache: &BlobCache) -> Vec<String> {
    let dir = cache.root().join("blobs/sha256");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with('.'),
            "temporary file left in cache: {name}"
        );
        let bytes = std::fs::read(entry.path()).unwrap();
        assert_eq!(
            sha256_hex(&bytes),
            name,
            "cached blob {name} does not verify"
        );
        names.push(name);
    }
    names.sort();
    names
}

fn assert_blobs_of(image: &PulledImage, cache: &BlobCache) {
    let config = std::fs::read(cache.path(&image.config_digest)).unwrap();
    assert_eq!(sha256_hex(&config), image.config_digest.hex());
    for layer in &image.layers {
        let path = cache.path(&layer.digest);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            layer.size,
            "{}",
            path.display()
        );
        assert!(cache.has(&layer.digest, layer.size).unwrap());
    }
    let manifest = std::fs::read(cache.path(&image.manifest_digest)).unwrap();
    assert_eq!(manifest, image.manifest);
}

// ---------------------------------------------------------------------------
// Against the real registry.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_each_fixture_tag() {
    let fixtures = fixtures_dir();
    let registry = registry_address();
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path().join("oci")).unwrap();
    let options = fast_options(&registry);

    for tag in FIXTURE_TAGS {
        let reference = format!("{registry}/debian:{tag}");
        let image = pull_into(&reference, &options, &cache)
            .await
            .unwrap_or_else(|e| panic!("pull {reference}: {e}"));

        let expected_digest =
            std::fs::read_to_string(fixtures.join(format!("registry/{tag}.digest"))).unwrap();
        assert_eq!(
            image.manifest_digest.to_string(),
            expected_digest.trim(),
            "{tag}"
        );
        assert_eq!(image.config.os, "linux");
        assert_eq!(image.config.architecture, "amd64");
        assert_eq!(image.layers.len(), image.config.rootfs.diff_ids.len());
        assert_blobs_of(&image, &cache);
        if tag.ends_with("v2s2") {
            let media_type = &image.layers[0].media_type;
            assert_eq!(
                media_type,
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            );
        }
    }
    assert_cache_clean(&cache);

    // The cache is an OCI layout that skopeo and umoci read. They list only
    // OCI media types, so the Docker schema-2 manifest is checked in
    // index.json instead.
    let index: Value =
        serde_json::from_slice(&std::fs::read(cache.root().join("index.json")).unwrap()).unwrap();
    let v2s2_name = format!("{registry}/debian:bookworm-banger-v2s2");
    let v2s2 = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == v2s2_name.as_str())
        .expect("v2s2 manifest in index.json");
    assert_eq!(
        v2s2["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    for tag in FIXTURE_TAGS.iter().filter(|t| !t.ends_with("v2s2")) {
        let name = format!("{registry}/debian:{tag}");
        let output = Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:{name}", cache.root().display()))
            .output()
            .expect("skopeo must be installed for this test");
        assert!(
            output.status.success(),
            "skopeo inspect {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let inspected: Value = serde_json::from_slice(&output.stdout).unwrap();
        let expected_digest =
            std::fs::read_to_string(fixtures.join(format!("registry/{tag}.digest"))).unwrap();
        assert_eq!(inspected["Digest"], expected_digest.trim(), "{tag}");
    }
    let output = Command::new("umoci")
        .args(["ls", "--layout"])
        .arg(cache.root())
        .output()
        .expect("umoci must be installed for this test");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed = String::from_utf8_lossy(&output.stdout);
    for tag in FIXTURE_TAGS.iter().filter(|t| !t.ends_with("v2s2")) {
        assert!(
            listed.contains(&format!("debian:{tag}")),
            "umoci ls: {listed}"
        );
    }
}

#[tokio::test]
async fn second_pull_reuses_cached_blobs() {
    fixtures_dir();
    let registry = registry_address();
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    let options = fast_options(&registry);
    let reference = format!("{registry}/debian:bookworm-banger");

    let first = pull_into(&reference, &options, &cache).await.unwrap();
    let inode_of = |digest: &Digest| {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(cache.path(digest)).unwrap())
    };
    let inodes: Vec<u64> = first.layers.iter().map(|l| inode_of(&l.digest)).collect();

    let second = pull_into(&reference, &options, &cache).await.unwrap();
    assert_eq!(second.manifest_digest, first.manifest_digest);
    let again: Vec<u64> = second.layers.iter().map(|l| inode_of(&l.digest)).collect();
    assert_eq!(inodes, again, "a cached layer was written again");
}

#[tokio::test]
async fn unknown_tag_is_not_found() {
    fixtures_dir();
    let registry = registry_address();
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    let reference = format!("{registry}/debian:no-such-tag");

    let error = pull_into(&reference, &fast_options(&registry), &cache)
        .await
        .unwrap_err();
    assert!(
        matches!(error, PullError::ManifestNotFound { .. }),
        "{error}"
    );
    assert_eq!(error.exit_code(), ExitCode::NotFound);
    assert!(error.to_string().contains("no-such-tag"), "{error}");
}

#[tokio::test]
async fn other_platform_is_not_found() {
    fixtures_dir();
    let registry = registry_address();
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    let mut options = fast_options(&registry);
    options.platform = "linux/arm64".parse().unwrap();

    let error = pull_into(&format!("{registry}/debian:minbase"), &options, &cache)
        .await
        .unwrap_err();
    assert!(
        matches!(error, PullError::PlatformNotFound { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("linux/amd64"), "{error}");
}

#[tokio::test]
async fn registry_not_named_insecure_gets_https() {
    fixtures_dir();
    let registry = registry_address();
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    let options = fast_options("other.example:1");

    let error = pull_into(&format!("{registry}/debian:minbase"), &options, &cache)
        .await
        .unwrap_err();
    assert_eq!(error.exit_code(), ExitCode::Remote, "{error}");
    assert!(error.to_string().contains("https://"), "{error}");
    // The TLS handshake with a plain-HTTP server fails the same way every
    // time, so it is not retried.
    assert!(
        matches!(error, PullError::Connection { attempts: 1, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("--insecure-registry"), "{error}");
    assert!(assert_cache_clean(&cache).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_share_the_cache() {
    fixtures_dir();
    let registry = registry_address();
    let dir = tempfile::tempdir().unwrap();
    let reference = format!("{registry}/debian:bookworm-banger");

    let tasks: Vec<_> = (0..2)
        .map(|_| {
            // Separate handles take separate flocks, as two processes would.
            let cache = BlobCache::open(dir.path()).unwrap();
            let options = fast_options(&registry);
            let reference = reference.clone();
            tokio::spawn(async move { pull_into(&reference, &options, &cache).await })
        })
        .collect();
    let mut images = Vec::new();
    for task in tasks {
        images.push(task.await.unwrap().unwrap());
    }

    assert_eq!(images[0].manifest_digest, images[1].manifest_digest);
    let cache = BlobCache::open(dir.path()).unwrap();
    let names = assert_cache_clean(&cache);
    // manifest + config + 3 layers, each stored once.
    assert_eq!(names.len(), 5, "{names:?}");
}

// ---------------------------------------------------------------------------
// FaultyRegistry: a test double for faults a real registry will not produce
// on demand. It serves real fixture blobs over plain HTTP/1.1, one request per
// connection.
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Fault {
    /// Answer with this status (and `Retry-After` seconds) instead of the blob.
    Status(u16, Option<u64>),
    /// Announce the full length, send this many bytes, then close the connection.
    DropAfter(usize),
    /// Flip one byte in the middle of the body.
    WrongByte,
    /// Append bytes beyond the blob, with or without a matching Content-Length.
    ExtraBytes { with_length: bool },
    /// Send this many bytes, then stall without closing.
    Stall(usize),
    /// Close the connection without sending a response.
    Hangup,
    /// Redirect to this URL with a 307.
    Redirect(String),
}

#[derive(Clone, Debug)]
struct Logged {
    path: String,
    range: Option<String>,
    authorization: Option<String>,
    status: u16,
}

#[derive(Default)]
struct RegistryState {
    /// Manifests by tag and by digest: bytes and media type.
    manifests: HashMap<String, (Vec<u8>, String)>,
    blobs: HashMap<String, Arc<Vec<u8>>>,
    /// One-shot faults per blob digest, used in order.
    faults: HashMap<String, VecDeque<Fault>>,
    /// Blobs whose every response stops at this byte offset.
    stop_at: HashMap<String, usize>,
    /// Blobs served whole with 200 whatever `Range` the request carries.
    ignore_range: std::collections::HashSet<String>,
    /// When set, bearer tokens are required, and each is accepted this many times.
    token_budget: Option<u32>,
    tokens_issued: u32,
    token_uses: HashMap<String, u32>,
    log: Vec<Logged>,
}

struct FaultyRegistry {
    address: String,
    state: Arc<Mutex<RegistryState>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FaultyRegistry {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A small, coherent image made of real fixture content: the last layer of
/// bookworm-banger and a config whose diff_id is computed here.
struct SmallImage {
    manifest: Vec<u8>,
    manifest_digest: String,
    config_digest: String,
    layer_digest: String,
    layer_size: usize,
}

impl FaultyRegistry {
    async fn start() -> (Self, SmallImage) {
        let fixtures = fixtures_dir();
        let blob = |digest: &str| {
            let hex = digest.strip_prefix("sha256:").unwrap();
            std::fs::read(fixtures.join("oci/blobs/sha256").join(hex)).unwrap()
        };

        let index: Value =
            serde_json::from_slice(&std::fs::read(fixtures.join("oci/index.json")).unwrap())
                .unwrap();
        let banger = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "bookworm-banger")
            .expect("bookworm-banger in fixtures oci/index.json");
        let banger_manifest: Value =
            serde_json::from_slice(&blob(banger["digest"].as_str().unwrap())).unwrap();
        let layer_descriptor = banger_manifest["layers"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        let layer_digest = layer_descriptor["digest"].as_str().unwrap().to_owned();
        let layer = blob(&layer_digest);

        let mut uncompressed = Vec::new();
        flate2::read::GzDecoder::new(layer.as_slice())
            .read_to_end(&mut uncompressed)
            .unwrap();
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&uncompressed))]},
        }))
        .unwrap();
        let config_digest = format!("sha256:{}", sha256_hex(&config));
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [layer_descriptor],
        }))
        .unwrap();
        let manifest_digest = format!("sha256:{}", sha256_hex(&manifest));

        let mut state = RegistryState::default();
        state.manifests.insert(
            "small".to_owned(),
            (manifest.clone(), OCI_MANIFEST.to_owned()),
        );
        state.manifests.insert(
            manifest_digest.clone(),
            (manifest.clone(), OCI_MANIFEST.to_owned()),
        );
        state.blobs.insert(config_digest.clone(), Arc::new(config));
        let layer_size = layer.len();
        state.blobs.insert(layer_digest.clone(), Arc::new(layer));

        let state = Arc::new(Mutex::new(state));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = {
            let state = state.clone();
            let address = address.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let state = state.clone();
                    let address = address.clone();
                    tokio::spawn(async move {
                        let _ = serve_connection(stream, state, address).await;
                    });
                }
            })
        };
        let registry = Self {
            address,
            state,
            server,
        };
        let image = SmallImage {
            manifest,
            manifest_digest,
            config_digest,
            layer_digest,
            layer_size,
        };
        (registry, image)
    }

    fn reference(&self, tag: &str) -> String {
        format!("{}/debian:{tag}", self.address)
    }

    fn add_fault(&self, digest: &str, fault: Fault) {
        let mut state = self.state.lock().unwrap();
        state
            .faults
            .entry(digest.to_owned())
            .or_default()
            .push_back(fault);
    }

    fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    fn blob_requests(&self, digest: &str) -> Vec<Logged> {
        let suffix = format!("/blobs/{digest}");
        self.log()
            .into_iter()
            .filter(|l| l.path.ends_with(&suffix))
            .collect()
    }

    fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }
}

struct Request {
    path: String,
    headers: HashMap<String, String>,
}

async fn read_request(stream: &mut BufReader<TcpStream>) -> std::io::Result<Request> {
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut header = String::new();
        stream.read_line(&mut header).await?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    Ok(Request { path, headers })
}

async fn write_head(
    stream: &mut BufReader<TcpStream>,
    status: u16,
    headers: &[(&str, String)],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.get_mut().write_all(head.as_bytes()).await
}

async fn respond(
    stream: &mut BufReader<TcpStream>,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut all = headers.to_vec();
    all.push(("Content-Length", body.len().to_string()));
    write_head(stream, status, &all).await?;
    stream.get_mut().write_all(body).await?;
    stream.get_mut().shutdown().await
}

async fn serve_connection(
    stream: TcpStream,
    state: Arc<Mutex<RegistryState>>,
    address: String,
) -> std::io::Result<()> {
    let mut stream = BufReader::new(stream);
    let request = read_request(&mut stream).await?;
    let log = |status: u16| {
        state.lock().unwrap().log.push(Logged {
            path: request.path.clone(),
            range: request.headers.get("range").cloned(),
            authorization: request.headers.get("authorization").cloned(),
            status,
        });
    };
    let challenge = (
        "WWW-Authenticate",
        format!(r#"Bearer realm="http://{address}/token",service="faulty-registry""#),
    );

    if request.path.starts_with("/token") {
        let token = {
            let mut state = state.lock().unwrap();
            state.tokens_issued += 1;
            let token = format!("token-{}", state.tokens_issued);
            let budget = state.token_budget.unwrap_or(u32::MAX);
            state.token_uses.insert(token.clone(), budget);
            token
        };
        log(200);
        let body = json!({"token": token, "expires_in": 300}).to_string();
        return respond(&mut stream, 200, &[], body.as_bytes()).await;
    }

    // Token check: each token is accepted `token_budget` times, then it is
    // answered like an expired one.
    let authorized = {
        let mut state = state.lock().unwrap();
        match state.token_budget {
            None => true,
            Some(_) => {
                let token = request
                    .headers
                    .get("authorization")
                    .and_then(|a| a.strip_prefix("Bearer "))
                    .map(str::to_owned);
                match token.and_then(|t| state.token_uses.get_mut(&t)) {
                    Some(remaining) if *remaining > 0 => {
                        *remaining -= 1;
                        true
                    }
                    _ => false,
                }
            }
        }
    };
    if !authorized {
        log(401);
        let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"token expired"}]}"#;
        return respond(&mut stream, 401, &[challenge], body).await;
    }

    if request.path == "/v2/" {
        log(200);
        return respond(&mut stream, 200, &[], b"{}").await;
    }

    if let Some(reference) = request.path.strip_prefix("/v2/debian/manifests/") {
        let (manifest, fault) = {
            let mut state = state.lock().unwrap();
            let fault = state
                .faults
                .get_mut(&format!("manifest:{reference}"))
                .and_then(VecDeque::pop_front);
            (state.manifests.get(reference).cloned(), fault)
        };
        return match manifest {
            Some((bytes, media_type)) => {
                log(200);
                let digest = format!("sha256:{}", sha256_hex(&bytes));
                let headers = [
                    ("Content-Type", media_type),
                    ("Docker-Content-Digest", digest),
                ];
                if let Some(Fault::DropAfter(cut)) = fault {
                    let mut all = headers.to_vec();
                    all.push(("Content-Length", bytes.len().to_string()));
                    write_head(&mut stream, 200, &all).await?;
                    return stream
                        .get_mut()
                        .write_all(&bytes[..cut.min(bytes.len())])
                        .await;
                }
                respond(&mut stream, 200, &headers, &bytes).await
            }
            None => {
                log(404);
                let body =
                    br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
                respond(&mut stream, 404, &[], body).await
            }
        };
    }

    let Some(digest) = request.path.strip_prefix("/v2/debian/blobs/") else {
        log(404);
        return respond(&mut stream, 404, &[], b"").await;
    };
    let (blob, fault, stop_at, ignore_range) = {
        let mut state = state.lock().unwrap();
        let fault = state.faults.get_mut(digest).and_then(VecDeque::pop_front);
        (
            state.blobs.get(digest).cloned(),
            fault,
            state.stop_at.get(digest).copied(),
            state.ignore_range.contains(digest),
        )
    };
    let Some(blob) = blob else {
        log(404);
        return respond(
            &mut stream,
            404,
            &[],
            br#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#,
        )
        .await;
    };

    let start = request
        .headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok())
        .filter(|_| !ignore_range)
        .unwrap_or(0);
    let end = stop_at.unwrap_or(blob.len()).min(blob.len());
    let (status, mut headers) = if start > 0 {
        let content_range = format!("bytes {start}-{}/{}", blob.len() - 1, blob.len());
        (206, vec![("Content-Range", content_range)])
    } else {
        (200, Vec::new())
    };
    let body = &blob[start.min(end)..end];

    match fault {
        Some(Fault::Status(code, retry_after)) => {
            log(code);
            let headers: Vec<_> = retry_after
                .map(|s| ("Retry-After", s.to_string()))
                .into_iter()
                .collect();
            respond(&mut stream, code, &headers, b"injected failure").await
        }
        Some(Fault::DropAfter(bytes)) => {
            log(status);
            headers.push(("Content-Length", body.len().to_string()));
            write_head(&mut stream, status, &headers).await?;
            stream
                .get_mut()
                .write_all(&body[..bytes.min(body.len())])
                .await?;
            // Dropping the stream without a shutdown resets the connection.
            Ok(())
        }
        Some(Fault::WrongByte) => {
            log(status);
            let mut wrong = body.to_vec();
            let middle = wrong.len() / 2;
            wrong[middle] ^= 0xff;
            respond(&mut stream, status, &headers, &wrong).await
        }
        Some(Fault::ExtraBytes { with_length }) => {
            log(status);
            let mut longer = body.to_vec();
            longer.extend_from_slice(&[0u8; 4096]);
            if with_length {
                respond(&mut stream, status, &headers, &longer).await
            } else {
                // No Content-Length: the body ends when the connection closes.
                write_head(&mut stream, status, &headers).await?;
                stream.get_mut().write_all(&longer).await?;
                stream.get_mut().shutdown().await
            }
        }
        Some(Fault::Hangup) => {
            log(0);
            Ok(())
        }
        Some(Fault::Redirect(location)) => {
            log(307);
            respond(&mut stream, 307, &[("Location", location)], b"").await
        }
        Some(Fault::Stall(bytes)) => {
            log(status);
            headers.push(("Content-Length", body.len().to_string()));
            write_head(&mut stream, status, &headers).await?;
            stream
                .get_mut()
                .write_all(&body[..bytes.min(body.len())])
                .await?;
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        }
        None => {
            log(status);
            respond(&mut stream, status, &headers, body).await
        }
    }
}

// ---------------------------------------------------------------------------
// Fault tests.
// ---------------------------------------------------------------------------

/// Pulls the small image with no faults left and checks the result.
async fn assert_later_pull_succeeds(
    registry: &FaultyRegistry,
    image: &SmallImage,
    cache: &BlobCache,
) {
    let options = fast_options(&registry.address);
    let pulled = pull_into(&registry.reference("small"), &options, cache)
        .await
        .expect("pull after the fault");
    assert_eq!(pulled.manifest_digest.to_string(), image.manifest_digest);
    assert_blobs_of(&pulled, cache);
    assert_cache_clean(cache);
}

fn layer_cached(cache: &BlobCache, image: &SmallImage) -> bool {
    let digest: Digest = image.layer_digest.parse().unwrap();
    cache.path(&digest).exists()
}

#[tokio::test]
async fn faulty_registry_serves_small_image() {
    let (registry, image) = FaultyRegistry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();

    let pulled = pull_into(
        &registry.reference("small"),
        &fast_options(&registry.address),
        &cache,
    )
    .await
    .unwrap();
    assert_eq!(pulled.manifest, image.manifest);
    assert_eq!(pulled.config_digest.to_string(), image.config_digest);
    assert_eq!(pulled.layers.len(), 1);
    assert_eq!(pulled.layers[0].size, image.layer_size as u64);
    assert_cache_clean(&cache);
}

#[tokio::test]
async fn truncated_body_fails_cleanly() {
    let (registry, image) = FaultyRegistry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    let stop = image.layer_size / 3;
    registry
        .state
        .lock()
        .unwrap()
        .stop_at
        .insert(image.layer_digest.clone(), stop);

    let error = pull_into(
        &registry.reference("small"),
        &fast_options(&registry.address),
        &cache,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, PullError::Truncated { received, .. } if received == stop as u64),
        "{error}"
    );
    assert_eq!(error.exit_code(), ExitCode::Remote);
    assert!(error.to_string().contains(&image.layer_digest), "{error}");
    assert!(!layer_cached(&cache, &image));
    assert_cache_clean(&cache);
    // Resumed attempts asked for the rest of the blob.
    let ranges: Vec<_> = registry
        .blob_requests(&image.layer_digest)
        .into_iter()
        .filter_map(|l| l.range)
        .collect();
    assert!(ranges.contains(&format!("bytes={stop}-")), "{ranges:?}");

    registry.state.lock().unwrap().stop_at.clear();
    assert_later_pull_succeeds(&registry, &image, &cache).await;
}

#[tokio::test]
async fn ignored_range_on_short_body_gives_up() {
    let (registry, image) = FaultyRegistry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    let stop = image.layer_size / 2;
    {
        let mut state = registry.state.lock().unwrap();
        state.stop_at.insert(image.layer_digest.clone(), stop);
        state.ignore_range.insert(image.layer_digest.clone());
    }
    let options = fast_options(&registry.address);

    let reference = registry.reference("small");
    let pull = pull_into(&reference, &options, &cache);
    let error = tokio::time::timeout(Duration::from_secs(20), pull)
        .await
        .expect("pull gives up instead of resuming forever")
        .unwrap_err();
    assert!(
        matches!(error, PullError::Truncated { received, .. } if received == stop as u64),
        "{error}"
    );
    assert_eq!(error.exit_code(), ExitCode::Remote);
    let requests = registry.blob_requests(&image.layer_digest);
    assert!(
        requests.len() <= options.retry.max_attempts as usize,
        "{} requests: {requests:?}",
        requests.len()
    );
    assert!(!layer_cached(&cache, &image));
    assert_cache_clean(&cache);
}

#[tokio::test]
async fn wrong_bytes_fail_verification() {
    let (registry, image) = FaultyRegistry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    registry.add_fault(&image.layer_digest, Fault::WrongByte);

    let error = pull_into(
        &registry.reference("small"),
        &fast_options(&registry.address),
        &cache,
    )
    .await
    .unwrap_err();
    assert!(matches!(error, PullError::DigestMismatch { .. }), "{error}");
    assert!(error.to_string().contains(&image.layer_digest), "{error}");
    assert!(!layer_cached(&cache, &image));
    assert_cache_clean(&cache);

    assert_later_pull_succeeds(&registry, &image, &cache).await;
}

#[tokio::test]
async fn longer_body_is_cut_off() {
    for with_length in [true, false] {
        let (registry, image) = FaultyRegistry::start().await;
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        registry.add_fault(&image.layer_digest, Fault::ExtraBytes { with_length });

        let error = pull_into(
            &registry.reference("small"),
            &fast_options(&registry.address),
            &cache,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(error, PullError::BodyTooLong { .. }),
            "with_length {with_length}: {error}"
        );
        assert!(!layer_cached(&cache, &image));
        assert_cache_clean(&cache);

        assert_later_pull_succeeds(&registry, &image, &cache).await;
    }
}

#[tokio::test]
async fn server_error_then_success() {
    let (registry, image) = FaultyRegistry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    registry.add_fault(&image.layer_digest, Fault::Status(500, None));
    registry.add_fault(&image.layer_digest, Fault::Status(503, None));

    pull_into(
        &registry.reference("small"),
        &fast_options(&registry.address),
        &cache,
    )
    .await
    .expect("retries after 500 and 503");
    let statuses: Vec<u16> = registry
        .blob_requests(&image.layer_digest)
        .iter()
        .map(|l| l.status)
        .collect();
    assert_eq!(statuses, [500, 503, 200]);
    assert!(layer_cached(&cache, &image));
    assert_cache_clean(&cache);
}

#[tokio::test]
async fn too_many_requests_honours_retry_after() {
    let (registry, image) = FaultyRegistry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    registry.add_fault(&image.layer_digest, Fault::Status(429, Some(1)));

    let started = Instant::now();
    pull_into(
        &registry.reference("small"),
        &fast_options(&registry.address),
        &cache,
    )
    .await
    .expect("retry after 429");
    // The backoff of `fast_options` is at most 100 ms, so only Retry-After
    // explains a wait of a second.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_cache_clean(&cache);
}

#[tokio::test]
async fn persistent_server_error_gives_up() {
    let (registry, image) = FaultyRegistry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    for _ in 0..4 {
        registry.add_fault(&image.layer_digest, Fault::Status(502, None));
    }

    let error = pull_into(
        &registry.reference("small"),
        &fast_options(&registry.address),
        &cache,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            PullError::RegistryStatus {
                status: 502,
                attempts: 4,
                ..
            }
        ),
        "{error}"
    );
    assert!(!layer_cached(&cache, &image));
    assert_cache_clean(&cache);

    assert_later_pull_succeeds(&registry, &image, &cache).await;
}

#[tokio::test]
async fn dropped_connection_resumes_with_range() {
    let (registry, image) = FaultyRegistry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    let first_cut = image.layer_size / 4;
    registry.add_fault(&image.layer_digest, Fault::DropAfter(first_cut));
    registry.add_fault(&image.layer_digest, Fault::DropAfter(1000));

    pull_into(
        &registry.reference("small"),
        &fast_options(&registry.address),
        &cache,
    )
    .await
    .expect("resume after dropped connections");
    let requests = registry.blob_requests(&image.layer_digest);
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert_eq!(requests[0].range, None);
    let second_offset: usize = requests[1]
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse().ok())
        .expect("second request has a range");
    assert!(
        second_offset > 0 && second_offset <= first_cut,
        "{requests:?}"
    );
    assert!(requests[2].range.is_some(), "{requests:?}");
    assert!(layer_cached(&cache, &image));
    assert_cache_clean(&cache);
}

#[tokio::test]
async fn expired_token_is_refreshed() {
    let (registry, image) = FaultyRegistry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    // The first token covers the manifest and the config, then expires
    // before the layer.
    registry.state.lock().unwrap().token_budget = Some(2);

    pull_into(
        &registry.reference("small"),
        &fast_options(&registry.address),
        &cache,
    )
    .await
    .expect("pull with a token refresh");
    let log = registry.log();
    let tokens_issued = log.iter().filter(|l| l.path.starts_with("/token")).count();
    assert_eq!(tokens_issued, 2, "{log:?}");
    let layer = registry.blob_requests(&image.layer_digest);
    let statuses: Vec<u16> = layer.iter().map(|l| l.status).collect();
    assert_eq!(statuses, [401, 200], "{log:?}");
    assert_eq!(layer[0].authorization.as_deref(), Some("Bearer token-1"));
    assert_eq!(layer[1].authorization.as_deref(), Some("Bearer token-2"));
    assert_cache_clean(&cache);
}

#[tokio::test]
async fn rejected_fresh_token_is_unauthorized() {
    let (registry, _image) = FaultyRegistry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    // Tokens are issued but never accepted.
    registry.state.lock().unwrap().token_budget = Some(0);

    let error = pull_into(
        &registry.reference("small"),
        &fast_options(&registry.address),
        &cache,
    )
    .await
    .unwrap_err();
    assert!(matches!(error, PullError::Unauthorized { .. }), "{error}");
    assert!(error.to_string().contains("docker login"), "{error}");
    assert!(assert_cache_clean(&cache).is_empty());
}

#[tokio::test]
async fn truncated_cached_blob_is_refetched() {
    let (registry, image) = FaultyRegistry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    let options = fast_options(&registry.address);
    pull_into(&registry.reference("small"), &options, &cache)
        .await
        .unwrap();

    let digest: Digest = image.layer_digest.parse().unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(cache.path(&digest))
        .unwrap();
    file.set_len(image.layer_size as u64 / 2).unwrap();
    drop(file);
    registry.clear_log();

    pull_into(&registry.reference("small"), &options, &cache)
        .await
        .unwrap();
    assert_eq!(registry.blob_requests(&image.layer_digest).len(), 1);
    assert!(
        registry.blob_requests(&image.config_digest).is_empty(),
        "config was refetched"
    );
    assert_cache_clean(&cache);
}

#[tokio::test]
async fn second_pull_requests_no_blobs() {
    let (registry, image) = FaultyRegistry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    let options = fast_options(&registry.address);
    pull_into(&registry.reference("small"), &options, &cache)
        .await
        .unwrap();
    registry.clear_log();

    pull_into(&registry.reference("small"), &options, &cache)
        .await
        .unwrap();
    let blob_requests: Vec<_> = registry
        .log()
        .into_iter()
        .filter(|l| l.path.contains("/blobs/"))
        .collect();
    assert!(blob_requests.is_empty(), "{blob_requests:?}");
    assert!(layer_cached(&cache, &image));
}

#[tokio::test]
async fn dropped_pull_leaves_nothing() {
    let (registry, image) = FaultyRegistry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    registry.add_fault(&image.layer_digest, Fault::Stall(image.layer_size / 2));

    let reference = registry.reference("small");
    let options = fast_options(&registry.address);
    let pulling = pull_into(&reference, &options, &cache);
    let outcome = tokio::time::timeout(Duration::from_millis(1500), pulling).await;
    assert!(outcome.is_err(), "the stalled pull finished");
    assert!(!layer_cached(&cache, &image));
    assert_cache_clean(&cache);

    assert_later_pull_succeeds(&registry, &image, &cache).await;
}

#[tokio::test]
async fn index_selects_the_platform() {
    let (registry, image) = FaultyRegistry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    let missing_arm = format!("sha256:{}", "0".repeat(64));
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": missing_arm, "size": 10,
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": OCI_MANIFEST, "digest": image.manifest_digest, "size": image.manifest.len(),
             "platform": {"os": "linux", "architecture": "amd64"}},
        ],
    }))
    .unwrap();
    registry
        .state
        .lock()
        .unwrap()
        .manifests
        .insert("multi".to_owned(), (index, OCI_INDEX.to_owned()));

    let mut options = fast_options(&registry.address);
    let pulled = pull_into(&registry.reference("multi"), &options, &cache)
        .await
        .unwrap();
    assert_eq!(pulled.manifest_digest.to_string(), image.manifest_digest);

    // A Docker manifest list has the same shape under its own media type.
    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_LIST,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": image.manifest_digest, "size": image.manifest.len(),
             "platform": {"os": "linux", "architecture": "amd64"}},
        ],
    }))
    .unwrap();
    registry
        .state
        .lock()
        .unwrap()
        .manifests
        .insert("list".to_owned(), (list, DOCKER_MANIFEST_LIST.to_owned()));
    let pulled = pull_into(&registry.reference("list"), &options, &cache)
        .await
        .unwrap();
    assert_eq!(pulled.manifest_digest.to_string(), image.manifest_digest);

    options.platform = "linux/s390x".parse().unwrap();
    let error = pull_into(&registry.reference("multi"), &options, &cache)
        .await
        .unwrap_err();
    assert!(
        matches!(error, PullError::PlatformNotFound { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("linux/arm64/v8") && message.contains("linux/amd64"),
        "{message}"
    );

    // The variant is matched exactly: plain linux/arm64 is not linux/arm64/v8.
    options.platform = "linux/arm64".parse().unwrap();
    let error = pull_into(&registry.reference("multi"), &options, &cache)
        .await
        .unwrap_err();
    assert!(
        matches!(error, PullError::PlatformNotFound { .. }),
        "{error}"
    );

    // The index lists linux/arm64/v8, but the registry lacks its manifest.
    options.platform = "linux/arm64/v8".parse().unwrap();
    let error = pull_into(&registry.reference("multi"), &options, &cache)
        .await
        .unwrap_err();
    assert!(
        matches!(error, PullError::IndexEntryNotFound { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(message.contains(&missing_arm), "{message}");
    assert!(!message.contains("check the name and tag"), "{message}");
    assert_eq!(error.exit_code(), ExitCode::NotFound);

    // Entries without a platform leave nothing to list.
    let bare = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": image.manifest_digest, "size": image.manifest.len()},
        ],
    }))
    .unwrap();
    registry
        .state
        .lock()
        .unwrap()
        .manifests
        .insert("bare".to_owned(), (bare, OCI_INDEX.to_owned()));
    let error = pull_into(&registry.reference("bare"), &options, &cache)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(!message.contains("(available: )"), "{message}");
    assert!(message.contains("no platform"), "{message}");
}

#[tokio::test]
async fn manifest_with_wrong_digest_is_rejected() {
    let (registry, image) = FaultyRegistry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    let mut tampered = image.manifest.clone();
    tampered.push(b'\n');
    registry.state.lock().unwrap().manifests.insert(
        image.manifest_digest.clone(),
        (tampered, OCI_MANIFEST.to_owned()),
    );
    let by_digest = format!("{}/debian@{}", registry.address, image.manifest_digest);

    let error = pull_into(&by_digest, &fast_options(&registry.address), &cache)
        .await
        .unwrap_err();
    assert!(matches!(error, PullError::DigestMismatch { .. }), "{error}");
    assert!(assert_cache_clean(&cache).is_empty());
}

#[tokio::test]
async fn docker_config_credentials_reach_the_token_endpoint() {
    use base64::Engine as _;

    let (registry, _image) = FaultyRegistry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path().join("oci")).unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    let config_path = dir.path().join("config.json");
    let config = json!({"auths": {registry.address.clone(): {"auth": encoded}}});
    std::fs::write(&config_path, config.to_string()).unwrap();
    registry.state.lock().unwrap().token_budget = Some(100);

    let mut options = fast_options(&registry.address);
    options.docker_config = Some(config_path);
    pull_into(&registry.reference("small"), &options, &cache)
        .await
        .unwrap();
    let token_requests: Vec<_> = registry
        .log()
        .into_iter()
        .filter(|l| l.path.starts_with("/token"))
        .collect();
    assert_eq!(token_requests.len(), 1, "{token_requests:?}");
    let expected = format!("Basic {encoded}");
    assert_eq!(
        token_requests[0].authorization.as_deref(),
        Some(expected.as_str())
    );
    assert!(
        token_requests[0]
            .path
            .contains("scope=repository%3Adebian%3Apull"),
        "{token_requests:?}"
    );
}

#[tokio::test]
async fn connection_closed_before_response_is_retried() {
    let (registry, image) = FaultyRegistry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    registry.add_fault(&image.layer_digest, Fault::Hangup);
    registry.add_fault(&image.layer_digest, Fault::Hangup);

    pull_into(
        &registry.reference("small"),
        &fast_options(&registry.address),
        &cache,
    )
    .await
    .expect("retry after closed connections");
    let statuses: Vec<u16> = registry
        .blob_requests(&image.layer_digest)
        .iter()
        .map(|l| l.status)
        .collect();
    assert_eq!(statuses, [0, 0, 200]);
    assert!(layer_cached(&cache, &image));
    assert_cache_clean(&cache);
}

#[tokio::test]
async fn redirect_to_unlisted_http_host_is_rejected() {
    let (registry, image) = FaultyRegistry::start().await;
    let (other, _) = FaultyRegistry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    let location = format!(
        "http://{}/v2/debian/blobs/{}",
        other.address, image.layer_digest
    );
    registry.add_fault(&image.layer_digest, Fault::Redirect(location));

    // Only the first registry is named insecure, so plain HTTP to the
    // other one is not allowed, even through a redirect.
    let error = pull_into(
        &registry.reference("small"),
        &fast_options(&registry.address),
        &cache,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, PullError::Connection { attempts: 1, .. }),
        "{error}"
    );
    assert!(other.blob_requests(&image.layer_digest).is_empty());
    assert!(!layer_cached(&cache, &image));
    assert_cache_clean(&cache);
}

#[tokio::test]
async fn redirect_to_listed_http_host_is_followed() {
    let (registry, image) = FaultyRegistry::start().await;
    let (other, _) = FaultyRegistry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    let location = format!(
        "http://{}/v2/debian/blobs/{}",
        other.address, image.layer_digest
    );
    registry.add_fault(&image.layer_digest, Fault::Redirect(location));

    registry.state.lock().unwrap().token_budget = Some(100);

    let mut options = fast_options(&registry.address);
    options.insecure_registries.push(other.address.clone());
    pull_into(&registry.reference("small"), &options, &cache)
        .await
        .expect("redirect to a listed registry");
    let redirected = other.blob_requests(&image.layer_digest);
    assert_eq!(redirected.len(), 1);
    assert_eq!(
        redirected[0].authorization, None,
        "the token followed the redirect"
    );
    assert!(layer_cached(&cache, &image));
}

#[tokio::test]
async fn interrupted_manifest_is_fetched_again() {
    let (registry, image) = FaultyRegistry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path()).unwrap();
    registry.add_fault("manifest:small", Fault::DropAfter(40));

    let pulled = pull_into(
        &registry.reference("small"),
        &fast_options(&registry.address),
        &cache,
    )
    .await
    .expect("retry after an interrupted manifest");
    assert_eq!(pulled.manifest, image.manifest);
    let manifest_requests = registry
        .log()
        .iter()
        .filter(|l| l.path.ends_with("/manifests/small"))
        .count();
    assert_eq!(manifest_requests, 2);
    assert_cache_clean(&cache);
}
