//! `banger kernel push` and `kernel pull` through a real docker-registry
//! that the test starts on its own loopback port with its own storage, so
//! the shared fixture registry is never written to.

mod kernel_support;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A docker-registry process, killed when dropped.
struct Registry {
    child: Child,
    address: String,
    _storage: tempfile::TempDir,
}

impl Registry {
    /// Starts Debian's docker-registry on a free 127.0.0.1 port with a new
    /// storage directory, and waits until `/v2/` returns 200.
    fn start() -> Self {
        let storage = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let config = storage.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n",
                storage.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("failed to start docker-registry (package docker-registry)");
        let registry = Self {
            child,
            address,
            _storage: storage,
        };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(mut stream) = TcpStream::connect(&self.address) {
                let request = format!("GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", self.address);
                let mut response = String::new();
                if stream.write_all(request.as_bytes()).is_ok()
                    && stream.read_to_string(&mut response).is_ok()
                    && response.starts_with("HTTP/1.0 200")
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "docker-registry on {} did not answer /v2/ within 20 s",
            self.address
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs banger with `args` and data, cache and runtime directories under `home`.
fn banger(home: &Path, args: &[&str]) -> Output {
    let empty = home.join("empty.toml");
    fs::write(&empty, "").unwrap();
    Command::new(env!("CARGO_BIN_EXE_banger"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("BANGER_CONFIG", &empty)
        .env("BANGER_DATA_DIR", home.join("data"))
        .env("BANGER_CACHE_DIR", home.join("cache"))
        .env("BANGER_RUNTIME_DIR", home.join("run"))
        .output()
        .unwrap()
}

fn assert_ok(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Exports the kernel `name` of the catalog under `home` and returns the tarball.
fn export(home: &Path, name: &str) -> PathBuf {
    let tarball = home.join(format!("{name}-export.tar"));
    assert_ok(&banger(
        home,
        &["kernel", "export", name, "-o", tarball.to_str().unwrap()],
    ));
    tarball
}

#[test]
fn push_pull_gives_identical_bundle() {
    let registry = Registry::start();
    let sender = tempfile::tempdir().unwrap();
    let receiver = tempfile::tempdir().unwrap();
    let deb = kernel_support::kernel_deb();
    let import = banger(
        sender.path(),
        &["kernel", "import", deb.to_str().unwrap(), "--name", "cloud"],
    );
    assert_ok(&import);
    let reference = format!("{}/kernels/cloud:v1", registry.address);

    let push = banger(
        sender.path(),
        &[
            "kernel",
            "push",
            "cloud",
            &reference,
            "--insecure-registry",
            &registry.address,
        ],
    );
    assert_ok(&push);
    let pull = banger(
        receiver.path(),
        &[
            "kernel",
            "pull",
            &reference,
            "--name",
            "cloud",
            "--insecure-registry",
            &registry.address,
        ],
    );
    assert_ok(&pull);

    let sent = fs::read(export(sender.path(), "cloud")).unwrap();
    let received = fs::read(export(receiver.path(), "cloud")).unwrap();
    assert!(
        sent == received,
        "the pulled bundle differs from the pushed one"
    );
    let blobs = receiver.path().join("cache/oci/blobs/sha256");
    let cached: Vec<u64> = fs::read_dir(&blobs)
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .collect();
    assert!(
        cached.contains(&(sent.len() as u64)),
        "the bundle blob is not in {}",
        blobs.display()
    );
}

/// Returns the fixture OCI layout, failing with the script to run when it is missing.
fn fixture_layout() -> PathBuf {
    let fixtures = std::env::var_os("BANGER_FIXTURES")
        .map_or_else(|| PathBuf::from("/var/tmp/banger-fixtures"), PathBuf::from);
    let layout = fixtures.join("oci");
    assert!(
        layout.join("index.json").is_file(),
        "no OCI layout in {}; run tests/fixtures/build-images.sh",
        layout.display()
    );
    layout
}

/// Asserts that a failed pull left no catalog entry behind.
fn assert_no_entries(home: &Path) {
    let names = kernel_support::dir_names(&home.join("data/kernels"));
    assert!(
        names.iter().all(|name| name.starts_with('.')),
        "catalog holds {names:?}"
    );
}

#[test]
fn pull_container_image_rejected() {
    let registry = Registry::start();
    let home = tempfile::tempdir().unwrap();
    let image = format!("{}/debian:minbase", registry.address);
    let status = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:minbase", fixture_layout().display()))
        .arg(format!("docker://{image}"))
        .status()
        .expect("failed to run skopeo (package skopeo)");
    assert!(status.success());

    let output = banger(
        home.path(),
        &[
            "kernel",
            "pull",
            &image,
            "--insecure-registry",
            &registry.address,
        ],
    );

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("is not a banger kernel bundle"), "{stderr}");
    assert_no_entries(home.path());
}

#[test]
fn pull_missing_tag_fails() {
    let registry = Registry::start();
    let home = tempfile::tempdir().unwrap();
    let missing = format!("{}/kernels/none:v1", registry.address);

    let output = banger(
        home.path(),
        &[
            "kernel",
            "pull",
            &missing,
            "--insecure-registry",
            &registry.address,
        ],
    );

    assert_eq!(
        output.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_no_entries(home.path());
}

#[test]
fn pull_waits_for_cache_prune_lock() {
    let registry = Registry::start();
    let sender = tempfile::tempdir().unwrap();
    let receiver = tempfile::tempdir().unwrap();
    let kernel = sender.path().join("vmlinuz-6.1.0-lock");
    fs::write(&kernel, kernel_support::synthetic_bzimage("6.1.0-lock")).unwrap();
    assert_ok(&banger(
        sender.path(),
        &["kernel", "import", kernel.to_str().unwrap()],
    ));
    let reference = format!("{}/kernels/lock:v1", registry.address);
    assert_ok(&banger(
        sender.path(),
        &[
            "kernel",
            "push",
            "6.1.0-lock",
            &reference,
            "--insecure-registry",
            &registry.address,
        ],
    ));
    let cache =
        banger::image::blob_cache::BlobCache::open(receiver.path().join("cache/oci")).unwrap();
    let prune_lock = cache
        .try_lock_for_prune()
        .unwrap()
        .expect("no pull runs yet");
    let empty = receiver.path().join("empty.toml");
    fs::write(&empty, "").unwrap();
    let mut pull = Command::new(env!("CARGO_BIN_EXE_banger"))
        .args(["kernel", "pull", &reference, "--insecure-registry"])
        .arg(&registry.address)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", receiver.path())
        .env("BANGER_CONFIG", &empty)
        .env("BANGER_DATA_DIR", receiver.path().join("data"))
        .env("BANGER_CACHE_DIR", receiver.path().join("cache"))
        .env("BANGER_RUNTIME_DIR", receiver.path().join("run"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    std::thread::sleep(Duration::from_millis(1500));
    let while_locked = pull.try_wait().unwrap();
    drop(prune_lock);
    let status = pull.wait().unwrap();

    assert!(
        while_locked.is_none(),
        "the pull ran while prune held the cache"
    );
    assert!(
        status.success(),
        "pull failed after prune released the cache"
    );
    assert!(receiver.path().join("data/kernels/6.1.0-lock").is_dir());
}

#[test]
fn pull_errors_name_reference() {
    let registry = Registry::start();
    let sender = tempfile::tempdir().unwrap();
    let receiver = tempfile::tempdir().unwrap();
    let version = "6.1.0-hostile";
    let kernel = sender.path().join(format!("vmlinuz-{version}"));
    fs::write(&kernel, kernel_support::synthetic_bzimage(version)).unwrap();
    assert_ok(&banger(
        sender.path(),
        &["kernel", "import", kernel.to_str().unwrap()],
    ));
    // Make the stored entry hostile, as a bundle from elsewhere could be:
    // `b` escapes through the link `a` to the bundle root.
    let modules = sender
        .path()
        .join("data/kernels")
        .join(version)
        .join("lib/modules")
        .join(version);
    fs::create_dir_all(&modules).unwrap();
    std::os::unix::fs::symlink("../../..", modules.join("a")).unwrap();
    std::os::unix::fs::symlink("a/..", modules.join("b")).unwrap();
    let reference = format!("{}/kernels/hostile:v1", registry.address);
    assert_ok(&banger(
        sender.path(),
        &[
            "kernel",
            "push",
            version,
            &reference,
            "--insecure-registry",
            &registry.address,
        ],
    ));

    let pull = banger(
        receiver.path(),
        &[
            "kernel",
            "pull",
            &reference,
            "--insecure-registry",
            &registry.address,
        ],
    );

    let message = String::from_utf8_lossy(&pull.stderr);
    assert!(!pull.status.success(), "the hostile bundle was pulled");
    assert!(message.contains("climbs out of the bundle"), "{message}");
    assert!(message.contains(&reference), "{message}");
    assert!(!message.contains("blobs/sha256"), "{message}");
    assert_no_entries(receiver.path());
}
