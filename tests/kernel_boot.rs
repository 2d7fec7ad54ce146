//! Debian's real cloud kernel package: import it into the catalog and boot
//! it under QEMU (TCG) from a root filesystem written by ext4-writer, once
//! from NVMe on q35 and once from a virtio-mmio disk on the microvm machine
//! through the generated initrd.
//!
//! Needs tests/fixtures/fetch-kernel.sh to have run, qemu-system-x86_64,
//! and the static banger-guest, which the tests build.

mod kernel_support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use banger::kernel::boot::{check_static_executable, locate_guest_init, BootSpec};
use banger::kernel::modinfo::ModuleIndex;
use banger::kernel::{Catalog, Error, ImportSource, KernelEntry, RootDisk};
use ext4_writer::{FileData, Metadata, NodeKind, Options, Timestamp, Tree};

/// The line banger-guest prints on the root filesystem before powering off.
const READY_MARKER: &str = "BANGER-GUEST-READY";
/// Bound on one boot, unless BANGER_TEST_BOOT_TIMEOUT sets it in seconds.
/// The boots take 2 to 4 s on an idle host under TCG; the margin is for a
/// loaded CI machine.
fn boot_timeout() -> Duration {
    let secs = std::env::var("BANGER_TEST_BOOT_TIMEOUT")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(180);
    Duration::from_secs(secs)
}

struct Imported {
    _dir: tempfile::TempDir,
    catalog: Catalog,
    entry: KernelEntry,
}

/// Imports the Debian package once per test process.
fn imported() -> &'static Imported {
    static IMPORTED: OnceLock<Imported> = OnceLock::new();
    IMPORTED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::new(dir.path().join("kernels"));
        let deb = kernel_support::kernel_deb();
        let source = ImportSource::detect(&deb).unwrap();
        assert!(matches!(source, ImportSource::Package(_)), "{source:?}");
        let entry = catalog.import(&source, None).unwrap();
        Imported {
            _dir: dir,
            catalog,
            entry,
        }
    })
}

/// Returns the kernel release in a package file name such as
/// `linux-image-6.1.0-57-cloud-amd64_6.1.192-3_amd64.deb`.
fn version_from_package_name(deb: &Path) -> String {
    let name = deb.file_name().unwrap().to_string_lossy();
    let package = name.split('_').next().unwrap();
    package.strip_prefix("linux-image-").unwrap().to_string()
}

#[test]
fn debian_package_imports_with_modules() {
    let imported = imported();
    let expected = version_from_package_name(&kernel_support::kernel_deb());

    let listed: Vec<(String, String)> = imported
        .catalog
        .list()
        .unwrap()
        .into_iter()
        .map(|entry| (entry.name, entry.manifest.version))
        .collect();

    assert_eq!(listed, vec![(expected.clone(), expected.clone())]);
    let modules = imported.entry.modules_path().unwrap();
    assert!(modules.join("kernel/drivers/block/virtio_blk.ko").is_file());
    assert!(modules.join("modules.builtin").is_file());
    let info = imported.catalog.inspect(&expected).unwrap();
    assert_eq!(
        info.guest_modules.as_deref(),
        Some(format!("/lib/modules/{expected}").as_str())
    );
}

#[test]
fn debian_virtio_mmio_load_order() {
    let entry = &imported().entry;
    let index = ModuleIndex::scan(&entry.modules_path().unwrap(), &entry.manifest.version).unwrap();

    let order: Vec<String> = index
        .load_order(RootDisk::VirtioMmio.drivers())
        .unwrap()
        .into_iter()
        .map(|module| module.name)
        .collect();

    let position = |name: &str| {
        order
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("{name} missing from {order:?}"))
    };
    assert!(
        position("virtio_ring") < position("virtio_mmio"),
        "{order:?}"
    );
    assert!(position("virtio") < position("virtio_mmio"), "{order:?}");
    assert!(
        position("virtio_mmio") < position("virtio_blk"),
        "{order:?}"
    );
    assert!(index.is_builtin("nvme"));
    assert!(index.is_builtin("ext4"));
}

/// Writes a root filesystem with ext4-writer whose /init is the static
/// banger-guest, and the mount points it uses.
fn write_root_fs(dir: &Path) -> PathBuf {
    let metadata = |permissions| Metadata::new(permissions, 0, 0, Timestamp::new(0, 0));
    let mut tree = Tree::new(metadata(0o755));
    let root = tree.root();
    for name in [&b"dev"[..], b"proc", b"sys"] {
        tree.add(root, name, NodeKind::directory(), metadata(0o755))
            .unwrap();
    }
    let init = std::fs::read(kernel_support::guest_init()).unwrap();
    tree.add(
        root,
        b"init",
        NodeKind::Regular(FileData::from_bytes(init)),
        metadata(0o755),
    )
    .unwrap();

    let image = dir.join("root.ext4");
    let file = std::fs::File::create(&image).unwrap();
    ext4_writer::write_file(&tree, &Options::default(), &file).unwrap();
    image
}

/// Runs QEMU until it exits or [`boot_timeout`] passes, killing it then,
/// and returns the serial console output.
fn run_qemu(args: &[String]) -> String {
    let mut child = Command::new("qemu-system-x86_64")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to start qemu-system-x86_64 (package qemu-system-x86)");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut output = Vec::new();
        let _ = stdout.read_to_end(&mut output);
        String::from_utf8_lossy(&output).into_owned()
    });

    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > boot_timeout() {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = reader.join().unwrap();
    if let Some(path) = std::env::var_os("BANGER_TEST_CONSOLE_LOG") {
        let _ = std::fs::write(path, &output);
    }
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);

    let tail: String = output
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    match status {
        None => panic!(
            "QEMU timed out after {} s; console tail:\n{tail}\nstderr: {stderr}",
            boot_timeout().as_secs()
        ),
        Some(status) => assert!(
            status.success(),
            "QEMU exited with {status}; console tail:\n{tail}\nstderr: {stderr}"
        ),
    }
    eprintln!("boot took {:.1} s", start.elapsed().as_secs_f64());
    output
}

/// Returns the ready line the guest printed, or fails with the console tail.
fn ready_line(output: &str) -> String {
    output
        .lines()
        .find(|line| line.contains(READY_MARKER))
        .map(|line| line.trim().to_string())
        .unwrap_or_else(|| {
            let tail: Vec<&str> = output.lines().rev().take(40).collect();
            panic!(
                "the guest never printed {READY_MARKER}; console tail:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
}

fn common_args(spec: &BootSpec, root_fs: &Path) -> Vec<String> {
    let mut append = vec!["console=ttyS0".to_string()];
    append.extend(spec.root_args.iter().cloned());
    append.extend(["init=/init", "panic=-1"].map(String::from));
    let mut args: Vec<String> = [
        "-accel",
        "tcg",
        "-m",
        "512",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-serial",
        "stdio",
        "-no-reboot",
    ]
    .map(String::from)
    .to_vec();
    args.extend(["-kernel".to_string(), spec.kernel.display().to_string()]);
    if let Some(initrd) = &spec.initrd {
        args.extend(["-initrd".to_string(), initrd.display().to_string()]);
    }
    args.extend(["-append".to_string(), append.join(" ")]);
    args.extend([
        "-drive".to_string(),
        format!("file={},if=none,id=d0,format=raw", root_fs.display()),
    ]);
    args
}

/// Returns the host CPU frequency in kHz from /proc/cpuinfo.
///
/// The microvm machine has no HPET or ACPI PM timer, so the guest kernel can
/// calibrate its TSC only against the PIT, and under TCG on a loaded host
/// that calibration fails and the boot hangs after "Marking TSC unstable".
/// TCG's guest TSC counts at the host TSC rate, so passing the host
/// frequency as `tsc_early_khz=` skips the calibration.
fn host_tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz = cpuinfo
        .lines()
        .find(|line| line.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim();
    // "2596.152" MHz is 2596152 kHz.
    let (whole, fraction) = mhz.split_once('.').unwrap_or((mhz, ""));
    let fraction = format!("{fraction:0<3}");
    let khz = whole.parse::<u64>().ok()? * 1000 + fraction[..3].parse::<u64>().ok()?;
    Some(khz)
}

#[test]
fn debian_kernel_boots_from_nvme() {
    let entry = &imported().entry;
    let work = tempfile::tempdir().unwrap();
    let root_fs = write_root_fs(work.path());

    let spec = BootSpec::prepare(
        entry,
        RootDisk::Nvme,
        &kernel_support::guest_init(),
        work.path(),
    )
    .unwrap();
    assert_eq!(
        spec.initrd, None,
        "NVMe and ext4 are built into the cloud kernel"
    );
    let mut args = vec!["-M".to_string(), "q35".to_string()];
    args.extend(common_args(&spec, &root_fs));
    args.extend(["-device", "nvme,drive=d0,serial=d0"].map(String::from));
    let append = args.iter().position(|a| a == "-append").unwrap() + 1;
    args[append].push_str(" edd=off");

    let output = run_qemu(&args);

    let line = ready_line(&output);
    assert!(line.contains("root=/dev/nvme0n1 (ext4)"), "{line}");
    assert!(
        line.contains(&format!("kernel={}", entry.manifest.version)),
        "{line}"
    );
}

#[test]
fn debian_kernel_boots_microvm_virtio_mmio() {
    let entry = &imported().entry;
    let work = tempfile::tempdir().unwrap();
    let root_fs = write_root_fs(work.path());

    let spec = BootSpec::prepare(
        entry,
        RootDisk::VirtioMmio,
        &kernel_support::guest_init(),
        work.path(),
    )
    .unwrap();
    assert!(
        spec.initrd.is_some(),
        "virtio-mmio and virtio-blk are modules in the cloud kernel"
    );
    let mut args = vec!["-M".to_string(), "microvm".to_string()];
    args.extend(common_args(&spec, &root_fs));
    args.extend(["-device", "virtio-blk-device,drive=d0"].map(String::from));
    if let Some(khz) = host_tsc_khz() {
        let append = args.iter().position(|a| a == "-append").unwrap() + 1;
        args[append].push_str(&format!(" tsc_early_khz={khz}"));
    }

    let output = run_qemu(&args);

    let line = ready_line(&output);
    assert!(line.contains("root=/dev/vda (ext4)"), "{line}");
    assert!(line.contains("virtio_blk"), "{line}");
    assert!(line.contains("virtio_mmio"), "{line}");
}

#[test]
fn guest_init_must_be_static() {
    let guest = kernel_support::guest_init();
    assert!(check_static_executable(&guest).is_ok());

    // /bin/true from Debian's coreutils is dynamically linked.
    let error = check_static_executable(Path::new("/bin/true")).unwrap_err();
    assert!(matches!(error, Error::InvalidGuestInit { .. }), "{error}");
    assert!(error.to_string().contains("dynamically linked"), "{error}");

    let missing = Path::new("/nonexistent/banger-guest");
    let error = locate_guest_init(Some(missing)).unwrap_err();
    assert!(matches!(error, Error::GuestInitNotFound { .. }), "{error}");
    assert!(
        error.to_string().contains("/nonexistent/banger-guest"),
        "{error}"
    );
    assert_eq!(locate_guest_init(Some(&guest)).unwrap(), guest);
}
