//! Kernel catalog: imports from image files, modules trees and bundle
//! tarballs, hostile bundles, removal and the default kernel.

mod kernel_support;

use std::fs;
use std::path::{Path, PathBuf};

use banger::kernel::{Catalog, Error, ImportSource, KernelUsers, NoVms};
use kernel_support::{dir_names, raw_tar, synthetic_bzimage, RawEntry};

const VERSION: &str = "6.1.0-test-amd64";

/// A test double for the VM store, which does not exist yet: it reports a
/// fixed list of VMs using every kernel.
struct FakeVms(Vec<String>);

impl KernelUsers for FakeVms {
    fn vms_using(&self, _name: &str) -> banger::kernel::Result<Vec<String>> {
        Ok(self.0.clone())
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    catalog: Catalog,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::new(dir.path().join("kernels"));
        Self { dir, catalog }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a synthetic kernel image for `version` and returns its path.
    fn kernel(&self, version: &str) -> PathBuf {
        let path = self.path(&format!("vmlinuz-{version}"));
        fs::write(&path, synthetic_bzimage(version)).unwrap();
        path
    }

    /// Writes a modules tree `root/lib/modules/<version>` with one module
    /// file and an absolute `build` symlink, and returns `root`.
    fn modules(&self, version: &str) -> PathBuf {
        let root = self.path(&format!("modules-root-{version}"));
        let dir = root.join("lib/modules").join(version);
        fs::create_dir_all(dir.join("kernel/drivers/block")).unwrap();
        fs::write(
            dir.join("kernel/drivers/block/virtio_blk.ko"),
            b"module bytes",
        )
        .unwrap();
        fs::write(dir.join("modules.builtin"), b"kernel/fs/ext4/ext4.ko\n").unwrap();
        std::os::unix::fs::symlink(
            format!("/usr/src/linux-headers-{version}"),
            dir.join("build"),
        )
        .unwrap();
        root
    }

    fn import_image(&self, version: &str, with_modules: bool) -> banger::kernel::KernelEntry {
        let source = ImportSource::Image {
            kernel: self.kernel(version),
            modules: with_modules.then(|| self.modules(version)),
            initrd: None,
        };
        self.catalog.import(&source, None).unwrap()
    }

    /// Asserts that the catalog holds only `names` and no staging leftovers.
    fn assert_entries(&self, names: &[&str]) {
        let found = dir_names(self.catalog.root());
        let expected: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let visible: Vec<String> = found.iter().filter(|n| *n != ".default").cloned().collect();
        assert_eq!(visible, expected, "catalog directory holds {found:?}");
    }
}

#[test]
fn import_image_with_modules_dir() {
    let fixture = Fixture::new();

    let entry = fixture.import_image(VERSION, true);

    assert_eq!(entry.name, VERSION);
    assert_eq!(entry.manifest.version, VERSION);
    assert!(entry.manifest.has_modules);
    let modules = entry.modules_path().unwrap();
    assert!(modules.join("kernel/drivers/block/virtio_blk.ko").is_file());
    assert_eq!(
        fs::read_link(modules.join("build")).unwrap(),
        PathBuf::from(format!("/usr/src/linux-headers-{VERSION}"))
    );
    let listed: Vec<String> = fixture
        .catalog
        .list()
        .unwrap()
        .into_iter()
        .map(|e| e.manifest.version)
        .collect();
    assert_eq!(listed, vec![VERSION.to_string()]);
}

#[test]
fn import_modules_version_dir_directly() {
    let fixture = Fixture::new();
    let root = fixture.modules(VERSION);
    let source = ImportSource::Image {
        kernel: fixture.kernel(VERSION),
        modules: Some(root.join("lib/modules").join(VERSION)),
        initrd: None,
    };

    let entry = fixture.catalog.import(&source, Some("direct")).unwrap();

    assert_eq!(entry.name, "direct");
    assert!(entry
        .modules_path()
        .unwrap()
        .join("modules.builtin")
        .is_file());
}

#[test]
fn import_modules_tarball() {
    let fixture = Fixture::new();
    let tarball = fixture.path("modules.tar");
    let module_path = format!("lib/modules/{VERSION}/kernel/a.ko");
    fs::write(&tarball, raw_tar(&[RawEntry::File(&module_path, b"ko")])).unwrap();
    let source = ImportSource::Image {
        kernel: fixture.kernel(VERSION),
        modules: Some(tarball),
        initrd: None,
    };

    let entry = fixture.catalog.import(&source, None).unwrap();

    assert_eq!(fs::read(entry.dir.join(&module_path)).unwrap(), b"ko");
}

#[test]
fn import_modules_version_mismatch() {
    let fixture = Fixture::new();
    let source = ImportSource::Image {
        kernel: fixture.kernel(VERSION),
        modules: Some(fixture.modules("6.2.0-other")),
        initrd: None,
    };

    let error = fixture.catalog.import(&source, None).unwrap_err();

    assert!(matches!(error, Error::VersionMismatch { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("6.2.0-other") && message.contains(VERSION),
        "{message}"
    );
    fixture.assert_entries(&[]);
}

#[test]
fn import_with_initrd() {
    let fixture = Fixture::new();
    let initrd = fixture.path("initrd.img");
    fs::write(&initrd, b"initrd bytes").unwrap();
    let source = ImportSource::Image {
        kernel: fixture.kernel(VERSION),
        modules: None,
        initrd: Some(initrd),
    };

    let entry = fixture.catalog.import(&source, None).unwrap();

    assert_eq!(
        fs::read(entry.initrd_path().unwrap()).unwrap(),
        b"initrd bytes"
    );
}

#[test]
fn import_rejects_non_kernel() {
    let fixture = Fixture::new();
    let text = fixture.path("notes.txt");
    fs::write(&text, b"just some text, not a kernel").unwrap();

    let error = ImportSource::detect(&text).unwrap_err();

    assert!(matches!(error, Error::UnknownSource { .. }), "{error}");
}

#[test]
fn import_name_taken_keeps_original() {
    let fixture = Fixture::new();
    let first = fixture.import_image(VERSION, true);
    let digest = first.manifest.content_sha256.clone();

    let source = ImportSource::Image {
        kernel: fixture.kernel(VERSION),
        modules: None,
        initrd: None,
    };
    let error = fixture.catalog.import(&source, None).unwrap_err();

    assert!(matches!(error, Error::Exists { .. }), "{error}");
    assert_eq!(
        fixture
            .catalog
            .get(VERSION)
            .unwrap()
            .manifest
            .content_sha256,
        digest
    );
    fixture.assert_entries(&[VERSION]);
}

#[test]
fn import_invalid_name_rejected() {
    let fixture = Fixture::new();
    let source = ImportSource::Image {
        kernel: fixture.kernel(VERSION),
        modules: None,
        initrd: None,
    };
    for name in ["../up", "a/b", ".hidden", ""] {
        let error = fixture.catalog.import(&source, Some(name)).unwrap_err();
        assert!(
            matches!(error, Error::InvalidName { .. }),
            "{name}: {error}"
        );
    }
    fixture.assert_entries(&[]);
}

#[test]
fn export_import_round_trip() {
    let fixture = Fixture::new();
    let entry = fixture.import_image(VERSION, true);
    let tarball = fixture.path("bundle.tar");
    fixture
        .catalog
        .export(VERSION, fs::File::create(&tarball).unwrap())
        .unwrap();

    let other = Catalog::new(fixture.path("other-kernels"));
    let source = ImportSource::detect(&tarball).unwrap();
    assert!(matches!(source, ImportSource::Bundle(_)));
    let imported = other.import(&source, None).unwrap();

    assert_eq!(imported.manifest, entry.manifest);
    let again = fixture.path("again.tar");
    other
        .export(VERSION, fs::File::create(&again).unwrap())
        .unwrap();
    assert_eq!(fs::read(&tarball).unwrap(), fs::read(&again).unwrap());
}

#[test]
fn export_gzip_bundle_imports() {
    let fixture = Fixture::new();
    fixture.import_image(VERSION, true);
    let tarball = fixture.path("bundle.tar.gz");
    let encoder = flate2::write::GzEncoder::new(
        fs::File::create(&tarball).unwrap(),
        flate2::Compression::fast(),
    );
    fixture.catalog.export(VERSION, encoder).unwrap();

    let other = Catalog::new(fixture.path("other-kernels"));
    let entry = other.import(&ImportSource::Bundle(tarball), None).unwrap();

    assert!(entry.modules_path().unwrap().join("build").is_symlink());
}

/// Returns the manifest and kernel entries of a valid bundle, to put in
/// front of a hostile entry.
fn bundle_head(fixture: &Fixture) -> (Vec<u8>, Vec<u8>) {
    fixture.import_image(VERSION, false);
    let manifest = fs::read(
        fixture
            .catalog
            .get(VERSION)
            .unwrap()
            .dir
            .join("bundle.json"),
    )
    .unwrap();
    fixture.catalog.remove(VERSION, false, &NoVms).unwrap();
    (manifest, synthetic_bzimage(VERSION))
}

/// Imports a bundle made of a valid head and `hostile`, and checks that it
/// fails with an unsafe-entry error naming `entry_name` and leaves nothing.
fn assert_hostile_rejected(hostile: &[RawEntry<'_>], entry_name: &str, outside: &Path) {
    let fixture = Fixture::new();
    let (manifest, kernel) = bundle_head(&fixture);
    let mut entries = vec![
        RawEntry::File("bundle.json", &manifest),
        RawEntry::File("vmlinuz", &kernel),
    ];
    entries.extend(hostile.iter().map(|e| match e {
        RawEntry::Dir(n) => RawEntry::Dir(n),
        RawEntry::File(n, d) => RawEntry::File(n, d),
        RawEntry::Symlink(n, t) => RawEntry::Symlink(n, t),
        RawEntry::HardLink(n, t) => RawEntry::HardLink(n, t),
    }));
    let tarball = fixture.path("hostile.tar");
    fs::write(&tarball, raw_tar(&entries)).unwrap();

    let error = fixture
        .catalog
        .import(&ImportSource::Bundle(tarball), None)
        .unwrap_err();

    assert!(matches!(error, Error::UnsafeEntry { .. }), "{error}");
    assert!(error.to_string().contains(entry_name), "{error}");
    fixture.assert_entries(&[]);
    assert_eq!(
        dir_names(outside),
        Vec::<String>::new(),
        "something was written outside"
    );
}

#[test]
fn hostile_parent_entry_rejected() {
    let outside = tempfile::tempdir().unwrap();
    assert_hostile_rejected(
        &[RawEntry::File("lib/../../escape", b"x")],
        "lib/../../escape",
        outside.path(),
    );
}

#[test]
fn hostile_absolute_entry_rejected() {
    let outside = tempfile::tempdir().unwrap();
    let name = format!("{}/absolute", outside.path().display());
    assert_hostile_rejected(&[RawEntry::File(&name, b"x")], &name, outside.path());
}

#[test]
fn hostile_relative_symlink_rejected() {
    let outside = tempfile::tempdir().unwrap();
    let link = format!("lib/modules/{VERSION}/escape");
    assert_hostile_rejected(
        &[RawEntry::Symlink(&link, "../../../../outside")],
        &link,
        outside.path(),
    );
}

#[test]
fn hostile_hard_link_rejected() {
    let outside = tempfile::tempdir().unwrap();
    let target = format!("{}/secret", outside.path().display());
    assert_hostile_rejected(
        &[RawEntry::HardLink("lib/stolen", &target)],
        "lib/stolen",
        outside.path(),
    );
    assert_hostile_rejected(
        &[RawEntry::HardLink("lib/stolen", "../secret")],
        "lib/stolen",
        outside.path(),
    );
}

#[test]
fn hostile_write_through_symlink_rejected() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().display().to_string();
    assert_hostile_rejected(
        &[
            RawEntry::Symlink("lib/jump", &target),
            RawEntry::File("lib/jump/planted", b"x"),
        ],
        "lib/jump/planted",
        outside.path(),
    );
}

#[test]
fn hostile_device_entry_rejected() {
    let fixture = Fixture::new();
    let (manifest, kernel) = bundle_head(&fixture);
    let mut bytes = raw_tar(&[
        RawEntry::File("bundle.json", &manifest),
        RawEntry::File("vmlinuz", &kernel),
    ]);
    // Replace the end-of-archive blocks with a character device entry.
    bytes.truncate(bytes.len() - 1024);
    let mut builder = tar::Builder::new(bytes);
    let mut header = tar::Header::new_ustar();
    header.set_path("lib/console").unwrap();
    header.set_entry_type(tar::EntryType::Char);
    header.set_mode(0o600);
    header.set_device_major(5).unwrap();
    header.set_device_minor(1).unwrap();
    header.set_size(0);
    header.set_cksum();
    builder.append(&header, &[][..]).unwrap();
    let tarball = fixture.path("device.tar");
    fs::write(&tarball, builder.into_inner().unwrap()).unwrap();

    let error = fixture
        .catalog
        .import(&ImportSource::Bundle(tarball), None)
        .unwrap_err();

    assert!(matches!(error, Error::UnsafeEntry { .. }), "{error}");
    fixture.assert_entries(&[]);
}

#[test]
fn truncated_bundle_rejected() {
    let fixture = Fixture::new();
    fixture.import_image(VERSION, true);
    let mut exported = Vec::new();
    fixture.catalog.export(VERSION, &mut exported).unwrap();
    fixture.catalog.remove(VERSION, false, &NoVms).unwrap();

    // Cut inside the kernel image's data.
    let mut archive = tar::Archive::new(&exported[..]);
    let kernel_data = archive
        .entries()
        .unwrap()
        .map(Result::unwrap)
        .find(|entry| entry.path().unwrap() == Path::new("vmlinuz"))
        .unwrap()
        .raw_file_position();
    let kernel_data = usize::try_from(kernel_data).unwrap();
    let mid_file = exported[..kernel_data + 100].to_vec();
    // Cut at the entry boundary before the kernel's header, as if the
    // archive ended there.
    let boundary = exported[..kernel_data - 512].to_vec();
    // A complete archive that lacks one module file, which only the
    // manifest's content digest reveals.
    let mut archive = tar::Archive::new(&exported[..]);
    let mut builder = tar::Builder::new(Vec::new());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().ends_with("virtio_blk.ko") {
            continue;
        }
        let header = entry.header().clone();
        builder.append(&header, &mut entry).unwrap();
    }
    let missing_entry = builder.into_inner().unwrap();

    let cases = [
        ("mid-file", mid_file, true),
        ("entry-boundary", boundary, false),
        ("missing-entry", missing_entry, false),
    ];
    for (case, bytes, is_read_error) in cases {
        let tarball = fixture.path(&format!("{case}.tar"));
        fs::write(&tarball, bytes).unwrap();

        let error = fixture
            .catalog
            .import(&ImportSource::Bundle(tarball), None)
            .unwrap_err();

        if is_read_error {
            assert!(matches!(error, Error::Archive { .. }), "{case}: {error}");
        } else {
            assert!(
                matches!(error, Error::InvalidBundle { .. }),
                "{case}: {error}"
            );
        }
        fixture.assert_entries(&[]);
    }
}

#[test]
fn truncated_gzip_bundle_rejected() {
    let fixture = Fixture::new();
    fixture.import_image(VERSION, true);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    fixture.catalog.export(VERSION, &mut encoder).unwrap();
    let compressed = encoder.finish().unwrap();
    fixture.catalog.remove(VERSION, false, &NoVms).unwrap();
    let tarball = fixture.path("cut.tar.gz");
    fs::write(&tarball, &compressed[..compressed.len() - 20]).unwrap();

    let error = fixture
        .catalog
        .import(&ImportSource::Bundle(tarball), None)
        .unwrap_err();

    assert!(matches!(error, Error::Archive { .. }), "{error}");
    fixture.assert_entries(&[]);
}

#[test]
fn bundle_with_absolute_modules_symlink_imports() {
    let fixture = Fixture::new();
    let (manifest_bytes, kernel) = bundle_head(&fixture);
    let mut manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let build = format!("lib/modules/{VERSION}/build");
    let module = format!("lib/modules/{VERSION}/kernel/a.ko");

    // The digest covers the modules tree, so compute it from a staged copy.
    let staged = fixture.path("staged");
    fs::create_dir_all(staged.join(format!("lib/modules/{VERSION}/kernel"))).unwrap();
    fs::write(staged.join("vmlinuz"), &kernel).unwrap();
    fs::write(staged.join(&module), b"ko").unwrap();
    std::os::unix::fs::symlink("/usr/src/linux-headers-test", staged.join(&build)).unwrap();
    manifest["has_modules"] = true.into();
    manifest["content_sha256"] = banger::kernel::bundle::content_digest(&staged)
        .unwrap()
        .into();
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let tarball = fixture.path("absolute-link.tar");
    fs::write(
        &tarball,
        raw_tar(&[
            RawEntry::File("bundle.json", &manifest_bytes),
            RawEntry::File("vmlinuz", &kernel),
            RawEntry::File(&module, b"ko"),
            RawEntry::Symlink(&build, "/usr/src/linux-headers-test"),
        ]),
    )
    .unwrap();

    let entry = fixture
        .catalog
        .import(&ImportSource::Bundle(tarball), None)
        .unwrap();

    assert_eq!(
        fs::read_link(entry.dir.join(&build)).unwrap(),
        PathBuf::from("/usr/src/linux-headers-test")
    );
}

#[test]
fn remove_in_use_needs_force() {
    let fixture = Fixture::new();
    fixture.import_image(VERSION, true);
    fixture.catalog.set_default(VERSION).unwrap();
    let users = FakeVms(vec!["web".to_string()]);

    let error = fixture.catalog.remove(VERSION, false, &users).unwrap_err();
    assert!(matches!(error, Error::InUse { .. }), "{error}");
    assert!(error.to_string().contains("web"), "{error}");
    fixture.assert_entries(&[VERSION]);

    fixture.catalog.remove(VERSION, true, &users).unwrap();
    fixture.assert_entries(&[]);
    assert_eq!(fixture.catalog.default_name().unwrap(), None);
}

#[test]
fn remove_missing_kernel_not_found() {
    let fixture = Fixture::new();
    let error = fixture.catalog.remove("nope", false, &NoVms).unwrap_err();
    assert!(matches!(error, Error::NotFound { .. }), "{error}");
}

#[test]
fn resolve_without_kernels_names_import() {
    let fixture = Fixture::new();

    let error = fixture.catalog.resolve(None).unwrap_err();

    assert!(matches!(error, Error::NoKernels), "{error}");
    assert!(
        error.to_string().contains("banger kernel import"),
        "{error}"
    );
}

#[test]
fn resolve_uses_default_or_only_kernel() {
    let fixture = Fixture::new();
    fixture.import_image(VERSION, false);
    assert_eq!(fixture.catalog.resolve(None).unwrap().name, VERSION);

    fixture.import_image("6.2.0-second", false);
    let error = fixture.catalog.resolve(None).unwrap_err();
    assert!(matches!(error, Error::NoDefault { count: 2 }), "{error}");

    fixture.catalog.set_default("6.2.0-second").unwrap();
    assert_eq!(fixture.catalog.resolve(None).unwrap().name, "6.2.0-second");
    assert!(fixture.catalog.inspect("6.2.0-second").unwrap().default);
    assert!(!fixture.catalog.inspect(VERSION).unwrap().default);
}

#[test]
fn set_default_unknown_rejected() {
    let fixture = Fixture::new();
    let error = fixture.catalog.set_default("missing").unwrap_err();
    assert!(matches!(error, Error::NotFound { .. }), "{error}");
}

#[test]
fn bundle_with_inner_links_imports() {
    let fixture = Fixture::new();
    let (manifest_bytes, kernel) = bundle_head(&fixture);
    let mut manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
    let module = format!("lib/modules/{VERSION}/kernel/a.ko");
    let hard_link = format!("lib/modules/{VERSION}/kernel/b.ko");
    let symlink = format!("lib/modules/{VERSION}/kernel/c.ko");

    // The digest lists a hard link as a second regular file.
    let staged = fixture.path("staged");
    fs::create_dir_all(staged.join(format!("lib/modules/{VERSION}/kernel"))).unwrap();
    fs::write(staged.join("vmlinuz"), &kernel).unwrap();
    fs::write(staged.join(&module), b"ko").unwrap();
    fs::write(staged.join(&hard_link), b"ko").unwrap();
    std::os::unix::fs::symlink("../kernel/a.ko", staged.join(&symlink)).unwrap();
    manifest["has_modules"] = true.into();
    manifest["content_sha256"] = banger::kernel::bundle::content_digest(&staged)
        .unwrap()
        .into();
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let tarball = fixture.path("inner-links.tar");
    fs::write(
        &tarball,
        raw_tar(&[
            RawEntry::File("bundle.json", &manifest_bytes),
            RawEntry::File("vmlinuz", &kernel),
            RawEntry::File(&module, b"ko"),
            RawEntry::HardLink(&hard_link, &module),
            RawEntry::Symlink(&symlink, "../kernel/a.ko"),
        ]),
    )
    .unwrap();

    let entry = fixture
        .catalog
        .import(&ImportSource::Bundle(tarball), None)
        .unwrap();

    use std::os::unix::fs::MetadataExt;
    let original = fs::metadata(entry.dir.join(&module)).unwrap();
    let linked = fs::metadata(entry.dir.join(&hard_link)).unwrap();
    assert_eq!(original.ino(), linked.ino());
    assert_eq!(
        fs::read_link(entry.dir.join(&symlink)).unwrap(),
        PathBuf::from("../kernel/a.ko")
    );
}

#[test]
fn import_modules_dir_through_symlink() {
    let fixture = Fixture::new();
    let root = fixture.modules(VERSION);
    let link = fixture.path("modules-link");
    std::os::unix::fs::symlink(root.join("lib/modules").join(VERSION), &link).unwrap();
    let source = ImportSource::Image {
        kernel: fixture.kernel(VERSION),
        modules: Some(link),
        initrd: None,
    };

    let entry = fixture.catalog.import(&source, None).unwrap();

    assert!(entry.modules_path().unwrap().is_dir());
    assert!(!entry.modules_path().unwrap().is_symlink());
}

#[test]
fn import_bundle_directory() {
    let fixture = Fixture::new();
    let entry = fixture.import_image(VERSION, true);

    // A catalog entry is itself a bundle directory.
    let other = Catalog::new(fixture.path("other-kernels"));
    let source = ImportSource::detect(&entry.dir).unwrap();
    assert!(matches!(source, ImportSource::BundleDir(_)), "{source:?}");
    let copied = other.import(&source, Some("copy")).unwrap();

    assert_eq!(copied.manifest, entry.manifest);
    assert!(copied.modules_path().unwrap().join("build").is_symlink());
}

#[test]
fn import_bundle_directory_extra_file_rejected() {
    let fixture = Fixture::new();
    let entry = fixture.import_image(VERSION, false);
    let copy = fixture.path("bundle-copy");
    fs::create_dir(&copy).unwrap();
    for name in ["bundle.json", "vmlinuz"] {
        fs::copy(entry.dir.join(name), copy.join(name)).unwrap();
    }
    fs::write(copy.join("notes.txt"), b"extra").unwrap();
    let other = Catalog::new(fixture.path("other-kernels"));

    let error = other
        .import(&ImportSource::detect(&copy).unwrap(), None)
        .unwrap_err();

    assert!(matches!(error, Error::InvalidBundle { .. }), "{error}");
    assert!(error.to_string().contains("notes.txt"), "{error}");
    assert_eq!(dir_names(other.root()), Vec::<String>::new());
}

#[test]
fn import_root_directory() {
    let fixture = Fixture::new();
    let root = fixture.modules(VERSION);
    fs::create_dir_all(root.join("boot")).unwrap();
    fs::write(
        root.join(format!("boot/vmlinuz-{VERSION}")),
        synthetic_bzimage(VERSION),
    )
    .unwrap();

    let source = ImportSource::detect(&root).unwrap();
    let entry = fixture.catalog.import(&source, None).unwrap();

    assert_eq!(entry.manifest.version, VERSION);
    assert!(entry
        .modules_path()
        .unwrap()
        .join("kernel/drivers/block/virtio_blk.ko")
        .is_file());
}

#[test]
fn import_removes_stale_work_dirs() {
    let fixture = Fixture::new();
    fs::create_dir_all(fixture.catalog.root()).unwrap();
    let stale = fixture.catalog.root().join(".import-stale");
    let fresh = fixture.catalog.root().join(".import-fresh");
    fs::create_dir_all(stale.join("lib")).unwrap();
    fs::create_dir_all(&fresh).unwrap();
    let two_days_ago =
        std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 24 * 60 * 60);
    fs::File::open(&stale)
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();

    fixture.import_image(VERSION, false);

    assert!(!stale.exists(), "a two-day-old import directory was kept");
    assert!(
        fresh.exists(),
        "a fresh import directory, maybe in use, was removed"
    );
}

/// Imports `fixture.modules(VERSION)` after `extra` adds links to it, and
/// returns the error.
fn import_modules_with(fixture: &Fixture, extra: impl FnOnce(&Path)) -> Error {
    let root = fixture.modules(VERSION);
    extra(&root);
    let source = ImportSource::Image {
        kernel: fixture.kernel(VERSION),
        modules: Some(root),
        initrd: None,
    };
    let error = fixture.catalog.import(&source, None).unwrap_err();
    fixture.assert_entries(&[]);
    error
}

#[test]
fn symlink_chain_escaping_through_inner_link_rejected() {
    let fixture = Fixture::new();
    let error = import_modules_with(&fixture, |root| {
        let dir = root.join("lib/modules").join(VERSION);
        // `a` points at the bundle root, which is allowed on its own; `b`
        // climbs out only when `a` is followed as the link it is.
        std::os::unix::fs::symlink("../../..", dir.join("a")).unwrap();
        std::os::unix::fs::symlink(
            format!("a/lib/modules/{VERSION}/a/../../../../../etc/passwd"),
            dir.join("b"),
        )
        .unwrap();
    });
    assert!(matches!(error, Error::UnsafeEntry { .. }), "{error}");
    assert!(error.to_string().contains("/b`"), "{error}");
}

#[test]
fn symlink_to_parent_of_root_link_rejected() {
    let fixture = Fixture::new();
    let error = import_modules_with(&fixture, |root| {
        let dir = root.join("lib/modules").join(VERSION);
        std::os::unix::fs::symlink("../../..", dir.join("a")).unwrap();
        std::os::unix::fs::symlink("a/..", dir.join("b")).unwrap();
    });
    assert!(matches!(error, Error::UnsafeEntry { .. }), "{error}");
    assert!(error.to_string().contains("a/.."), "{error}");
}

#[test]
fn symlink_through_absolute_link_rejected() {
    let fixture = Fixture::new();
    let error = import_modules_with(&fixture, |root| {
        let dir = root.join("lib/modules").join(VERSION);
        std::os::unix::fs::symlink("build/../etc", dir.join("via-build")).unwrap();
    });
    assert!(matches!(error, Error::UnsafeEntry { .. }), "{error}");
    assert!(error.to_string().contains("via-build"), "{error}");
}

#[test]
fn hostile_symlink_chain_in_tarball_rejected() {
    let outside = tempfile::tempdir().unwrap();
    // The link that escapes comes first, before the link it goes through.
    let b = format!("lib/modules/{VERSION}/b");
    let a = format!("lib/modules/{VERSION}/a");
    assert_hostile_rejected(
        &[
            RawEntry::Dir("lib/"),
            RawEntry::Dir("lib/modules/"),
            RawEntry::Symlink(&b, "a/.."),
            RawEntry::Symlink(&a, "../../.."),
        ],
        &b,
        outside.path(),
    );
}

/// Writes a directory standing for a host modules tree, outside any
/// bundle, and returns the root above its `lib`.
fn host_modules(fixture: &Fixture) -> PathBuf {
    let root = fixture.path("host");
    let dir = root.join("lib/modules").join(VERSION);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("modules.builtin"), b"kernel/fs/ext4/ext4.ko\n").unwrap();
    root
}

#[test]
fn absolute_modules_dir_symlink_rejected() {
    let fixture = Fixture::new();
    let host = host_modules(&fixture);
    let error = import_modules_with(&fixture, |root| {
        fs::remove_dir_all(root.join("lib/modules")).unwrap();
        std::os::unix::fs::symlink(host.join("lib/modules"), root.join("lib/modules")).unwrap();
    });
    assert!(matches!(error, Error::InvalidModules { .. }), "{error}");
    assert!(error.to_string().contains("lib/modules"), "{error}");
}

#[test]
fn absolute_lib_symlink_rejected() {
    let fixture = Fixture::new();
    let host = host_modules(&fixture);
    let error = import_modules_with(&fixture, |root| {
        fs::remove_dir_all(root.join("lib")).unwrap();
        std::os::unix::fs::symlink(host.join("lib"), root.join("lib")).unwrap();
    });
    assert!(matches!(error, Error::InvalidModules { .. }), "{error}");
    assert!(error.to_string().contains("`lib`"), "{error}");
}

#[test]
fn bundle_with_absolute_modules_dir_link_rejected() {
    let fixture = Fixture::new();
    let host = host_modules(&fixture);
    let (manifest, kernel) = bundle_head(&fixture);
    let target = host.join("lib/modules").display().to_string();
    let entries = vec![
        RawEntry::File("bundle.json", &manifest),
        RawEntry::File("vmlinuz", &kernel),
        RawEntry::Dir("lib/"),
        RawEntry::Symlink("lib/modules", &target),
    ];
    let tarball = fixture.path("linked.tar");
    fs::write(&tarball, raw_tar(&entries)).unwrap();

    let error = fixture
        .catalog
        .import(&ImportSource::Bundle(tarball), None)
        .unwrap_err();

    assert!(matches!(error, Error::InvalidModules { .. }), "{error}");
    fixture.assert_entries(&[]);
}

#[test]
fn import_rejects_path_like_versions() {
    for version in ["..", "../../x", "."] {
        let fixture = Fixture::new();
        let kernel_path = fixture.path("vmlinuz");
        fs::write(&kernel_path, synthetic_bzimage(version)).unwrap();
        let source = ImportSource::Image {
            kernel: kernel_path.clone(),
            modules: None,
            initrd: None,
        };

        let error = fixture.catalog.import(&source, Some("named")).unwrap_err();

        assert!(matches!(error, Error::InvalidVersion { .. }), "{error}");
        assert!(
            error.to_string().contains(&format!("`{version}`")),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .contains(&kernel_path.display().to_string()),
            "{error}"
        );
        fixture.assert_entries(&[]);
    }
}

#[test]
fn list_skips_entry_with_invalid_manifest() {
    let fixture = Fixture::new();
    fixture.import_image(VERSION, false);
    let broken = fixture.catalog.root().join("broken");
    fs::create_dir(&broken).unwrap();
    fs::write(
        broken.join("bundle.json"),
        br#"{"format": 1, "version": ".."}"#,
    )
    .unwrap();

    let names: Vec<String> = fixture
        .catalog
        .list()
        .unwrap()
        .into_iter()
        .map(|entry| entry.name)
        .collect();
    let error = fixture.catalog.get("broken").unwrap_err();

    assert_eq!(names, vec![VERSION.to_string()]);
    assert!(matches!(error, Error::InvalidManifest { .. }), "{error}");
    assert!(
        error.to_string().contains("`banger kernel rm broken`"),
        "{error}"
    );
}

/// A small tmpfs mounted on a directory this test created, unmounted on drop.
struct SmallTmpfs {
    dir: tempfile::TempDir,
}

impl SmallTmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs needs root and mount(8)");
        Self { dir }
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn full_catalog_disk_is_host_resource_error() {
    let fixture = Fixture::new();
    let tmpfs = SmallTmpfs::mount("256k");
    let catalog = Catalog::new(tmpfs.dir.path().join("kernels"));
    let module = vec![7u8; 1024 * 1024];
    let module_path = format!("lib/modules/{VERSION}/kernel/big.ko");
    let tarball = fixture.path("modules.tar");
    fs::write(
        &tarball,
        raw_tar(&[
            RawEntry::Dir("lib/"),
            RawEntry::Dir("lib/modules/"),
            RawEntry::File(&module_path, &module),
        ]),
    )
    .unwrap();
    let source = ImportSource::Image {
        kernel: fixture.kernel(VERSION),
        modules: Some(tarball),
        initrd: None,
    };

    let error = catalog.import(&source, None).unwrap_err();

    assert!(matches!(error, Error::Io { .. }), "{error}");
    assert_eq!(
        banger::error::Classify::exit_code(&error),
        banger::error::ExitCode::HostResource
    );
    assert!(
        error
            .to_string()
            .contains(&catalog.root().display().to_string()),
        "{error}"
    );
    assert!(!error.to_string().contains("modules.tar"), "{error}");
    assert_eq!(dir_names(catalog.root()), Vec::<String>::new());
}

#[test]
fn image_errors_name_user_file() {
    let fixture = Fixture::new();
    let text = fixture.path("notes.txt");
    fs::write(&text, vec![b'x'; 4096]).unwrap();
    let source = ImportSource::Image {
        kernel: text.clone(),
        modules: None,
        initrd: None,
    };

    let error = fixture.catalog.import(&source, None).unwrap_err();

    assert!(matches!(error, Error::NotAKernelImage { .. }), "{error}");
    assert!(
        error.to_string().contains(&format!("`{}`", text.display())),
        "{error}"
    );
    assert!(!error.to_string().contains(".banger-"), "{error}");
}

#[test]
fn boot_rejects_modules_replaced_by_link() {
    let fixture = Fixture::new();
    let entry = fixture.import_image(VERSION, true);
    let host = host_modules(&fixture);
    let modules = entry.modules_path().unwrap();
    fs::remove_dir_all(&modules).unwrap();
    std::os::unix::fs::symlink(host.join("lib/modules").join(VERSION), &modules).unwrap();
    let work = tempfile::tempdir().unwrap();

    let error = banger::kernel::BootSpec::prepare(
        &entry,
        banger::kernel::RootDisk::VirtioMmio,
        &fixture.path("no-guest-init"),
        work.path(),
    )
    .unwrap_err();

    assert!(matches!(error, Error::InvalidModules { .. }), "{error}");
    assert!(error.to_string().contains(VERSION), "{error}");
}
