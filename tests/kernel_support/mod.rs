//! Fixtures shared by the kernel tests: the real Debian cloud kernel
//! package, the static guest init, and hand-built archives.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Default directory of tests/fixtures/fetch-kernel.sh.
const KERNEL_CACHE: &str = "/var/cache/banger-fixtures/kernel";

/// Returns the Debian cloud kernel package: `$BANGER_KERNEL_DEB`, or the
/// newest `linux-image-*-cloud-amd64_*.deb` in the fetch script's cache.
/// Panics, naming the script, when there is none.
pub fn kernel_deb() -> PathBuf {
    if let Some(path) = std::env::var_os("BANGER_KERNEL_DEB") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "BANGER_KERNEL_DEB={} is not a file; run tests/fixtures/fetch-kernel.sh",
            path.display()
        );
        return path;
    }
    let mut debs: Vec<PathBuf> = std::fs::read_dir(KERNEL_CACHE)
        .map(|dir| {
            dir.filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|path| {
                    let name = path.file_name().unwrap_or_default().to_string_lossy();
                    name.starts_with("linux-image-")
                        && name.contains("-cloud-amd64_")
                        && name.ends_with(".deb")
                })
                .collect()
        })
        .unwrap_or_default();
    debs.sort();
    debs.pop().unwrap_or_else(|| {
        panic!(
            "no Debian cloud kernel package in {KERNEL_CACHE} and BANGER_KERNEL_DEB is unset; run tests/fixtures/fetch-kernel.sh"
        )
    })
}

/// Builds the static guest init once per test process, in its own target
/// directory so that it does not wait on the lock of the running `cargo test`,
/// and returns its path.
pub fn guest_init() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
            let target_dir = workspace.join("target/guest-init");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "banger-guest",
                    "--target",
                    "x86_64-unknown-linux-gnu",
                ])
                .env("RUSTFLAGS", "-C target-feature=+crt-static")
                .env("CARGO_TARGET_DIR", &target_dir)
                .current_dir(workspace)
                .status()
                .expect("failed to run cargo to build banger-guest");
            assert!(status.success(), "building the static banger-guest failed");
            target_dir.join("x86_64-unknown-linux-gnu/debug/banger-guest")
        })
        .clone()
}

/// Builds a minimal x86 boot image carrying `version`, a test double for a
/// kernel image where only the setup header matters (version, format detection).
pub fn synthetic_bzimage(version: &str) -> Vec<u8> {
    let mut image = vec![0u8; 0x1000];
    image[0x1FE..0x200].copy_from_slice(&[0x55, 0xAA]);
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&0x020Fu16.to_le_bytes());
    image[0x20E..0x210].copy_from_slice(&0x0600u16.to_le_bytes());
    let text = format!("{version} (test@example) #1 SMP\0");
    image[0x800..0x800 + text.len()].copy_from_slice(text.as_bytes());
    image
}

/// An entry of a hand-built tar archive. Names are written into the header
/// as raw bytes, so hostile names (`../x`, `/x`) are possible.
pub enum RawEntry<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
}

/// Writes a ustar archive of `entries`, with no checks on the names.
pub fn raw_tar(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_ustar();
        let (name, kind, link, data): (&str, tar::EntryType, Option<&str>, &[u8]) = match entry {
            RawEntry::Dir(name) => (name, tar::EntryType::Directory, None, &[]),
            RawEntry::File(name, data) => (name, tar::EntryType::Regular, None, data),
            RawEntry::Symlink(name, target) => (name, tar::EntryType::Symlink, Some(target), &[]),
            RawEntry::HardLink(name, target) => (name, tar::EntryType::Link, Some(target), &[]),
        };
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_entry_type(kind);
        header.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        header.set_size(data.len() as u64);
        header.set_mtime(0);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// Lists every name in `dir`, hidden ones included, sorted.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}
