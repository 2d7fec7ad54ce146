//! The boot specification of a kernel bundle: the kernel, the modules tree
//! to expose in the guest, and an initrd when the kernel cannot reach the
//! root disk on its own.

use std::fs;
use std::path::{Path, PathBuf};

use object::elf::{EM_X86_64, ET_EXEC, PT_INTERP};
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::Endianness;

use super::catalog::KernelEntry;
use super::error::{Error, Result};
use super::initrd;
use super::modinfo::ModuleIndex;

/// Environment variable naming the guest init binary.
pub const GUEST_INIT_ENV: &str = "BANGER_GUEST_INIT";
/// File name of the guest init binary.
pub const GUEST_INIT_NAME: &str = "banger-guest";
/// Directories where packages install the guest init, searched after the
/// directory of the running banger executable.
pub const GUEST_INIT_DIRS: [&str; 2] = ["/usr/local/lib/banger", "/usr/lib/banger"];
/// The root file system type banger's images use.
pub const ROOT_FS_TYPE: &str = "ext4";

/// The device model of the VM's root disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootDisk {
    /// An NVMe controller on PCI (QEMU `-device nvme`).
    Nvme,
    /// A virtio block device on virtio-mmio (Firecracker, QEMU `microvm`
    /// with `-device virtio-blk-device`).
    VirtioMmio,
    /// A virtio block device on PCI (QEMU `-device virtio-blk-pci`).
    VirtioPci,
}

impl RootDisk {
    /// Returns the guest device node of the first disk of this model.
    pub fn device(self) -> &'static str {
        match self {
            RootDisk::Nvme => "/dev/nvme0n1",
            RootDisk::VirtioMmio | RootDisk::VirtioPci => "/dev/vda",
        }
    }

    /// Returns the modules the guest needs to see the disk, in request order.
    /// Their dependencies come from the modules themselves.
    pub fn drivers(self) -> &'static [&'static str] {
        match self {
            RootDisk::Nvme => &["nvme"],
            RootDisk::VirtioMmio => &["virtio_mmio", "virtio_blk"],
            RootDisk::VirtioPci => &["virtio_pci", "virtio_blk"],
        }
    }
}

/// Everything the VM side needs to boot a kernel from the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootSpec {
    /// Host path of the kernel image.
    pub kernel: PathBuf,
    /// The kernel release.
    pub version: String,
    /// Host path of the initrd to pass, if the boot needs one: the bundle's
    /// own, or one generated to load the root disk's driver.
    pub initrd: Option<PathBuf>,
    /// Host path of the modules tree, to expose in the guest at
    /// [`BootSpec::guest_modules_dir`].
    pub modules: Option<PathBuf>,
    /// Path of the modules tree in the guest: `/lib/modules/<version>`.
    pub guest_modules_dir: String,
    /// Kernel command line arguments that select the root filesystem; the
    /// VM side adds the console, `init=` and its own arguments.
    pub root_args: Vec<String>,
}

impl BootSpec {
    /// Works out how to boot `entry` from a root disk of model `disk`.
    ///
    /// When the kernel has the disk driver and ext4 built in, or the bundle
    /// has its own initrd, no initrd is generated. Otherwise the generated
    /// initrd, with `guest_init` as its `/init`, is written into `work_dir`,
    /// a directory the caller owns (the VM's run directory).
    ///
    /// # Errors
    /// [`Error::MissingModule`] when a needed driver is neither built in nor
    /// in the modules tree, and I/O errors from writing the initrd.
    pub fn prepare(
        entry: &KernelEntry,
        disk: RootDisk,
        guest_init: &Path,
        work_dir: &Path,
    ) -> Result<BootSpec> {
        let version = entry.manifest.version.clone();
        let mut spec = BootSpec {
            kernel: entry.kernel_path(),
            version: version.clone(),
            initrd: entry.initrd_path(),
            modules: entry.modules_path(),
            guest_modules_dir: format!("/lib/modules/{version}"),
            root_args: vec![
                format!("root={}", disk.device()),
                format!("rootfstype={ROOT_FS_TYPE}"),
                "rw".to_string(),
            ],
        };
        if spec.initrd.is_some() {
            return Ok(spec);
        }

        // NOTE: without a modules tree there is no modules.builtin to check,
        // so the drivers are assumed built in and no initrd is generated.
        let Some(modules_dir) = &spec.modules else {
            return Ok(spec);
        };
        let modules_rel = Path::new(super::bundle::MODULES_DIR).join(&version);
        if let Err(link) = super::extract::real_dir(&entry.dir, &modules_rel) {
            return Err(Error::InvalidModules {
                path: entry.dir.join(&link),
                reason: "it is a symlink or a file; banger never follows a link out of a kernel bundle; remove the kernel and import it again".to_string(),
            });
        }
        let index = ModuleIndex::scan(modules_dir, &version)?;
        let mut requested: Vec<&str> = disk.drivers().to_vec();
        requested.push(ROOT_FS_TYPE);
        let order = index.load_order(&requested)?;
        if order.is_empty() {
            return Ok(spec);
        }

        check_static_executable(guest_init)?;
        let initrd_path = work_dir.join("initrd.cpio");
        initrd::write_initrd(&initrd_path, guest_init, &order)?;
        tracing::debug!(kernel = %entry.name, modules = ?order.iter().map(|m| &m.name).collect::<Vec<_>>(), "generated initrd");
        spec.initrd = Some(initrd_path);
        Ok(spec)
    }
}

/// Finds the static guest init binary: `configured` when given, else
/// `$BANGER_GUEST_INIT`, else the first static `banger-guest` next to the
/// running executable or in [`GUEST_INIT_DIRS`].
///
/// # Errors
/// [`Error::GuestInitNotFound`] listing every place searched.
pub fn locate_guest_init(configured: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = configured {
        return existing_file(path).ok_or_else(|| Error::GuestInitNotFound {
            searched: vec![path.to_path_buf()],
        });
    }
    if let Some(path) = std::env::var_os(GUEST_INIT_ENV) {
        let path = PathBuf::from(path);
        return existing_file(&path).ok_or(Error::GuestInitNotFound {
            searched: vec![path],
        });
    }

    let mut searched = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        searched.push(dir.join(GUEST_INIT_NAME));
    }
    searched.extend(
        GUEST_INIT_DIRS
            .iter()
            .map(|dir| Path::new(dir).join(GUEST_INIT_NAME)),
    );
    // A plain `cargo build` puts a dynamically linked banger-guest next to
    // banger, so a candidate counts only when it is static.
    searched
        .iter()
        .find_map(|path| existing_file(path).filter(|p| check_static_executable(p).is_ok()))
        .ok_or(Error::GuestInitNotFound { searched })
}

fn existing_file(path: &Path) -> Option<PathBuf> {
    fs::metadata(path)
        .ok()
        .filter(|meta| meta.is_file())
        .map(|_| path.to_path_buf())
}

/// Checks that `path` is an x86-64 ELF executable without an ELF interpreter,
/// so it runs as `/init` of an initrd that has no libc.
pub fn check_static_executable(path: &Path) -> Result<()> {
    let invalid = |reason: String| Error::InvalidGuestInit {
        path: path.to_path_buf(),
        reason,
    };
    let data = fs::read(path).map_err(Error::io("read guest init", path))?;
    let elf = ElfFile64::<Endianness>::parse(&data[..])
        .map_err(|error| invalid(format!("not a 64-bit ELF file: {error}")))?;
    let endian = elf.endian();
    let header = elf.elf_header();

    if header.e_machine(endian) != EM_X86_64 {
        return Err(invalid(format!(
            "machine {} is not x86-64",
            header.e_machine(endian)
        )));
    }
    // Static-pie executables are ET_DYN without PT_INTERP; both run as init.
    let kind = header.e_type(endian);
    if kind != ET_EXEC && kind != object::elf::ET_DYN {
        return Err(invalid(format!("ELF type {kind} is not an executable")));
    }
    let has_interpreter = elf
        .elf_program_headers()
        .iter()
        .any(|segment| segment.p_type(endian) == PT_INTERP);
    if has_interpreter {
        return Err(invalid(
            "it is dynamically linked (has PT_INTERP)".to_string(),
        ));
    }
    Ok(())
}
