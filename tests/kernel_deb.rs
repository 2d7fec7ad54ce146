//! Kernel packages built with `dpkg-deb` in each compression it supports,
//! in Debian's layout (`lib/modules`) and Ubuntu's merged-/usr layout
//! (`usr/lib/modules`), read without dpkg.

mod kernel_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use banger::kernel::{Catalog, Error, ImportSource};
use kernel_support::synthetic_bzimage;

const VERSION: &str = "6.8.0-31-generic";

/// Builds a binary package from `tree` with `dpkg-deb -Z<compression>`.
fn build_package(work: &Path, tree: &Path, compression: &str) -> PathBuf {
    fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    fs::write(
        tree.join("DEBIAN/control"),
        format!(
            "Package: linux-image-{VERSION}\nVersion: 1\nArchitecture: amd64\nMaintainer: banger tests <tests@example.invalid>\nDescription: test kernel package\n"
        ),
    )
    .unwrap();
    let deb = work.join(format!("kernel-{compression}.deb"));
    let output = Command::new("dpkg-deb")
        .args(["--root-owner-group", &format!("-Z{compression}"), "--build"])
        .arg(tree)
        .arg(&deb)
        .output()
        .expect("failed to run dpkg-deb (package dpkg)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    deb
}

/// Writes a package tree with a kernel image and a modules tree under `modules_prefix`.
fn kernel_tree(work: &Path, name: &str, modules_prefix: &str) -> PathBuf {
    let tree = work.join(name);
    fs::create_dir_all(tree.join("boot")).unwrap();
    fs::write(
        tree.join(format!("boot/vmlinuz-{VERSION}")),
        synthetic_bzimage(VERSION),
    )
    .unwrap();
    let modules = tree.join(modules_prefix).join(VERSION);
    fs::create_dir_all(modules.join("kernel/drivers/block")).unwrap();
    fs::write(
        modules.join("kernel/drivers/block/virtio_blk.ko"),
        b"module",
    )
    .unwrap();
    fs::create_dir_all(tree.join("usr/share/doc/linux")).unwrap();
    fs::write(tree.join("usr/share/doc/linux/changelog"), b"not extracted").unwrap();
    tree
}

#[test]
fn package_compressions_import() {
    let work = tempfile::tempdir().unwrap();
    let cases = [
        ("xz", "lib/modules"),
        ("zstd", "usr/lib/modules"),
        ("gzip", "lib/modules"),
        ("none", "usr/lib/modules"),
    ];
    for (compression, prefix) in cases {
        let tree = kernel_tree(work.path(), &format!("tree-{compression}"), prefix);
        let deb = build_package(work.path(), &tree, compression);
        let catalog = Catalog::new(work.path().join(format!("kernels-{compression}")));

        let source = ImportSource::detect(&deb).unwrap();
        let entry = catalog.import(&source, None).unwrap();

        assert_eq!(entry.manifest.version, VERSION, "{compression}");
        let module = entry
            .modules_path()
            .unwrap()
            .join("kernel/drivers/block/virtio_blk.ko");
        assert_eq!(fs::read(module).unwrap(), b"module", "{compression}");
        assert!(
            !entry.dir.join("usr").exists(),
            "{compression}: documentation was extracted"
        );
    }
}

#[test]
fn package_without_kernel_rejected() {
    let work = tempfile::tempdir().unwrap();
    let tree = kernel_tree(work.path(), "modules-only", "lib/modules");
    fs::remove_dir_all(tree.join("boot")).unwrap();
    let deb = build_package(work.path(), &tree, "xz");
    let catalog = Catalog::new(work.path().join("kernels"));

    let error = catalog
        .import(&ImportSource::Package(deb), None)
        .unwrap_err();

    assert!(matches!(error, Error::InvalidPackage { .. }), "{error}");
    assert!(error.to_string().contains("boot/vmlinuz"), "{error}");
    assert_eq!(
        kernel_support::dir_names(catalog.root()),
        Vec::<String>::new()
    );
}

#[test]
fn modules_package_with_bare_kernel() {
    let work = tempfile::tempdir().unwrap();
    let tree = kernel_tree(work.path(), "ubuntu-modules", "usr/lib/modules");
    let kernel = work.path().join("vmlinuz");
    fs::rename(tree.join(format!("boot/vmlinuz-{VERSION}")), &kernel).unwrap();
    let modules_deb = build_package(work.path(), &tree, "zstd");
    let catalog = Catalog::new(work.path().join("kernels"));
    let source = ImportSource::Image {
        kernel,
        modules: Some(modules_deb),
        initrd: None,
    };

    let entry = catalog.import(&source, None).unwrap();

    assert!(entry
        .modules_path()
        .unwrap()
        .join("kernel/drivers/block/virtio_blk.ko")
        .is_file());
}

#[test]
fn truncated_package_rejected() {
    let work = tempfile::tempdir().unwrap();
    let tree = kernel_tree(work.path(), "tree", "lib/modules");
    let deb = build_package(work.path(), &tree, "xz");
    let bytes = fs::read(&deb).unwrap();
    let cut = work.path().join("cut.deb");
    fs::write(&cut, &bytes[..bytes.len() - 64]).unwrap();
    let catalog = Catalog::new(work.path().join("kernels"));

    let error = catalog
        .import(&ImportSource::Package(cut), None)
        .unwrap_err();

    assert!(matches!(error, Error::Archive { .. }), "{error}");
    assert_eq!(
        kernel_support::dir_names(catalog.root()),
        Vec::<String>::new()
    );
}

#[test]
fn package_with_absolute_modules_link_rejected() {
    let work = tempfile::tempdir().unwrap();
    let host = kernel_tree(work.path(), "host", "lib/modules");
    let tree = kernel_tree(work.path(), "linked", "lib/modules");
    fs::remove_dir_all(tree.join("lib/modules")).unwrap();
    std::os::unix::fs::symlink(host.join("lib/modules"), tree.join("lib/modules")).unwrap();
    let deb = build_package(work.path(), &tree, "gzip");
    let catalog = Catalog::new(work.path().join("kernels"));

    let error = catalog
        .import(&ImportSource::Package(deb), None)
        .unwrap_err();

    assert!(matches!(error, Error::InvalidModules { .. }), "{error}");
    assert!(error.to_string().contains("lib/modules"), "{error}");
    assert_eq!(
        kernel_support::dir_names(catalog.root()),
        Vec::<String>::new()
    );
}
