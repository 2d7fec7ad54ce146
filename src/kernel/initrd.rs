//! Writes initramfs archives: the newc cpio format the kernel unpacks
//! (Documentation/driver-api/early-userspace/buffer-format.rst), and the
//! small initrd that loads the root disk's driver modules before switching
//! to the root filesystem.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use super::error::{Error, Result};
use super::modinfo::{self, OrderedModule};

/// Magic of the newc format without checksums.
const NEWC_MAGIC: &str = "070701";
/// The name of the entry that ends an archive.
const TRAILER: &str = "TRAILER!!!";

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// Path of the module list inside the generated initrd. The guest init reads
/// it to tell the initrd stage from the root filesystem stage.
pub const MODULE_LIST: &str = "etc/banger/initrd-modules";
/// Directory of the module files inside the generated initrd.
pub const MODULE_DIR: &str = "lib/banger/modules";

/// A newc cpio archive writer. Entries get inode numbers in order, owner
/// 0:0 and mtime 0, so the same input gives the same bytes.
pub struct CpioWriter<W: Write> {
    out: W,
    offset: u64,
    next_ino: u32,
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive written to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            offset: 0,
            next_ino: 1,
        }
    }

    /// Appends a directory; the kernel does not create missing parents, so
    /// parents must come first.
    pub fn append_dir(&mut self, path: &str, mode: u32) -> io::Result<()> {
        self.append(path, S_IFDIR | (mode & 0o7777), 2, (0, 0), &[])
    }

    /// Appends a regular file with the content `data`.
    pub fn append_file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.append(path, S_IFREG | (mode & 0o7777), 1, (0, 0), data)
    }

    /// Appends a symlink to `target`.
    pub fn append_symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.append(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// Appends a character device node with the device number `major:minor`.
    pub fn append_char_device(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> io::Result<()> {
        self.append(path, S_IFCHR | (mode & 0o7777), 1, (major, minor), &[])
    }

    /// Writes the trailer and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.next_ino = 0;
        self.append(TRAILER, 0, 1, (0, 0), &[])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn append(
        &mut self,
        path: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        let invalid = |reason: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cpio entry `{path}`: {reason}"),
            )
        };
        if path.is_empty() || path.starts_with('/') || path.contains('\0') {
            return Err(invalid(
                "the name must be relative, non-empty and without NUL",
            ));
        }
        let file_size =
            u32::try_from(data.len()).map_err(|_| invalid("newc limits entries to 4 GiB"))?;
        // The name size counts the terminating NUL.
        let name_size = u32::try_from(path.len() + 1).map_err(|_| invalid("name too long"))?;

        let ino = self.next_ino;
        self.next_ino += 1;
        let fields = [
            ino, mode, 0, 0, nlink, 0, file_size, 0, 0, rdev.0, rdev.1, name_size, 0,
        ];
        let mut header = String::with_capacity(110);
        header.push_str(NEWC_MAGIC);
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }

        self.write(header.as_bytes())?;
        self.write(path.as_bytes())?;
        self.write(&[0])?;
        self.pad()?;
        self.write(data)?;
        self.pad()
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Pads to the next multiple of 4 bytes, as newc requires after the name
    /// and after the data.
    fn pad(&mut self) -> io::Result<()> {
        let padding = (4 - (self.offset % 4)) % 4;
        let zeros = [0u8; 3];
        // padding is at most 3.
        self.write(&zeros[..usize::try_from(padding).unwrap_or(0)])
    }
}

/// Writes the initrd that loads `modules` in order and then mounts the root
/// filesystem and runs its init, with `guest_init` as `/init`.
///
/// The guest init reads [`MODULE_LIST`], one module file path per line, and
/// the root device, file system type and init path from the kernel command
/// line (`root=`, `rootfstype=`, `init=`).
pub fn write_initrd(out_path: &Path, guest_init: &Path, modules: &[OrderedModule]) -> Result<()> {
    let init = std::fs::read(guest_init).map_err(Error::io("read guest init", guest_init))?;
    let file = File::create(out_path).map_err(Error::io("create initrd", out_path))?;
    let mut cpio = CpioWriter::new(BufWriter::new(file));

    let dirs = [
        "dev",
        "proc",
        "sys",
        "newroot",
        "etc",
        "etc/banger",
        "lib",
        "lib/banger",
        MODULE_DIR,
    ];
    for dir in dirs {
        cpio.append_dir(dir, 0o755)
            .map_err(Error::io("write initrd", out_path))?;
    }

    // The kernel opens /dev/console for init's stdio before anything mounts
    // devtmpfs; 5:1 is the console's fixed device number.
    cpio.append_char_device("dev/console", 0o600, 5, 1)
        .map_err(Error::io("write initrd", out_path))?;
    cpio.append_file("init", 0o755, &init)
        .map_err(Error::io("write initrd", out_path))?;

    let mut list = String::new();
    for (index, module) in modules.iter().enumerate() {
        let data = modinfo::read_module(&module.path)?;
        let path = format!("{MODULE_DIR}/{index:02}-{}.ko", module.name);
        cpio.append_file(&path, 0o644, &data)
            .map_err(Error::io("write initrd", out_path))?;
        list.push('/');
        list.push_str(&path);
        list.push('\n');
    }
    cpio.append_file(MODULE_LIST, 0o644, list.as_bytes())
        .map_err(Error::io("write initrd", out_path))?;

    cpio.finish().map_err(Error::io("write initrd", out_path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_aligned() {
        let mut cpio = CpioWriter::new(Vec::new());
        cpio.append_dir("dev", 0o755).unwrap();
        cpio.append_file("init", 0o755, b"abcde").unwrap();
        cpio.append_symlink("sbin", "bin").unwrap();
        let bytes = cpio.finish().unwrap();

        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.starts_with(b"070701"));
        // Second header: 110 header bytes + "dev\0" = 114, padded to 116.
        assert_eq!(&bytes[116..122], b"070701");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("TRAILER!!!"));
    }

    #[test]
    fn cpio_round_trips_through_cpio_tool() {
        let dir = tempfile::tempdir().unwrap();
        let mut cpio = CpioWriter::new(Vec::new());
        cpio.append_dir("etc", 0o755).unwrap();
        cpio.append_file("etc/hello", 0o644, b"hello world\n")
            .unwrap();
        cpio.append_symlink("link", "etc/hello").unwrap();
        let bytes = cpio.finish().unwrap();

        let archive = dir.path().join("a.cpio");
        std::fs::write(&archive, &bytes).unwrap();
        let status = std::process::Command::new("cpio")
            .args(["-i", "--quiet", "--no-absolute-filenames", "-F"])
            .arg(&archive)
            .current_dir(dir.path())
            .status()
            .expect("the cpio tool (package cpio) is needed by this test");

        assert!(status.success());
        assert_eq!(
            std::fs::read(dir.path().join("etc/hello")).unwrap(),
            b"hello world\n"
        );
        assert_eq!(
            std::fs::read_link(dir.path().join("link")).unwrap(),
            Path::new("etc/hello")
        );
    }

    #[test]
    fn cpio_absolute_name_rejected() {
        let mut cpio = CpioWriter::new(Vec::new());
        assert!(cpio.append_file("/init", 0o755, b"").is_err());
    }
}
