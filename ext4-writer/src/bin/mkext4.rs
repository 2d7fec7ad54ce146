//! `mkext4`: builds an ext4 image from a directory or a tar archive, like
//! `mke2fs -d`, with owners, modes, xattrs and hard links taken from the
//! source instead of from the user running it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{ArgGroup, Parser};
use ext4_writer::options::{BlockSize, Options, Reproducible, Sizing};
use ext4_writer::source::dir::tree_from_dir;
use ext4_writer::tar::{tree_from_tar, Spool};
use ext4_writer::{Metadata, Report, Timestamp, Tree};

/// Build an ext4 filesystem image from a directory or a tar archive.
///
/// Owners, permissions (setuid, setgid, sticky), times with nanoseconds,
/// xattrs, POSIX ACLs, file capabilities, device numbers and hard links come
/// from the source. No mkfs, mount or debugfs is used.
#[derive(Debug, Parser)]
#[command(name = "mkext4", version)]
#[command(group(ArgGroup::new("source").required(true).args(["from_dir", "from_tar"])))]
struct Cli {
    /// Image file to create or replace, or a block device to write in place
    /// (sized to the device unless --size is given). A file is replaced only
    /// when the build succeeds; a symlink is followed. Other file types are
    /// rejected.
    output: PathBuf,

    /// Directory whose contents become the root of the image; symlinks
    /// inside it are copied as symlinks, never followed.
    #[arg(long, value_name = "DIR")]
    from_dir: Option<PathBuf>,

    /// Plain (uncompressed) tar archive whose members become the image;
    /// `-` reads standard input. PAX xattrs, sparse files and hard links
    /// are kept.
    #[arg(long, value_name = "FILE")]
    from_tar: Option<PathBuf>,

    /// Fixed image size in bytes, with an optional K, M, G or T suffix
    /// (powers of 1024). Without it the size is the content plus metadata
    /// plus the headroom.
    #[arg(long, value_name = "BYTES", value_parser = parse_size, conflicts_with = "headroom")]
    size: Option<u64>,

    /// Free space added when sizing automatically, in percent of the
    /// content plus metadata.
    #[arg(long, value_name = "PERCENT", default_value_t = 10)]
    headroom: u32,

    /// Filesystem block size in bytes: 1024, 2048 or 4096.
    #[arg(long, value_name = "BYTES", default_value_t = 4096, value_parser = parse_block_size)]
    block_size: u32,

    /// Number of inodes. Without it, the number of nodes in the source plus
    /// the headroom, rounded up to whole block groups, or with --size one
    /// inode per 16 KiB of the image (at least one per node), as mke2fs.
    #[arg(long, value_name = "COUNT")]
    inodes: Option<u32>,

    /// Volume label, at most 16 bytes.
    #[arg(long, value_parser = parse_label)]
    label: Option<String>,

    /// Filesystem UUID as 32 hex digits, hyphens allowed
    /// (for example 0b6c4f5e-8d2a-4c1b-9f3e-7a5d2c1b0e9f). Without it the
    /// UUID is random, or derived from the seed with --reproducible.
    #[arg(long, value_parser = parse_uuid)]
    uuid: Option<[u8; 16]>,

    /// Leave out the internal journal (ext4's has_journal feature).
    #[arg(long)]
    no_journal: bool,

    /// Make a byte-identical image on every run with the same source and
    /// options: the UUID and directory hash seed derive from SEED (an
    /// unsigned 64-bit integer, default 0), and the superblock times are
    /// SOURCE_DATE_EPOCH (seconds since 1970, default 0). When that is
    /// set, later mtimes are lowered to it. Every inode takes its mtime as
    /// atime, ctime and crtime. Give the seed as --reproducible=SEED.
    #[arg(
        long,
        value_name = "SEED",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "0"
    )]
    reproducible: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("mkext4: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Reads the source, writes the image and returns a one-line summary.
fn run(cli: &Cli) -> Result<String, String> {
    check_output_name(cli)?;
    let options = build_options(cli)?;

    let tree = read_source(cli, &options)?;

    let report = match output_kind(&cli.output)? {
        OutputKind::Device(path) => write_device(cli, &tree, options.clone(), &path)?,
        OutputKind::File(path) => write_regular(&tree, &options, &path)?,
    };
    if options.journal && report.journal_blocks == 0 {
        eprintln!(
            "mkext4: warning: the image has no journal because it is below 2048 blocks, as with mke2fs; give a larger --size for one, or --no-journal to silence this"
        );
    }
    Ok(format!(
        "{}: {} bytes, {} blocks of {} bytes ({} free), {} inodes ({} free)",
        cli.output.display(),
        report.size_bytes,
        report.blocks,
        report.block_size,
        report.free_blocks,
        report.inodes,
        report.free_inodes
    ))
}

/// Rejects an output named like a seed after --reproducible, because
/// `--reproducible 5` reads `5` as the output and leaves the seed at 0.
fn check_output_name(cli: &Cli) -> Result<(), String> {
    let name = cli.output.as_os_str().as_encoded_bytes();
    if cli.reproducible.is_some() && !name.is_empty() && name.iter().all(u8::is_ascii_digit) {
        let name = cli.output.display();
        return Err(format!(
            "the output `{name}` looks like a seed; give the seed as --reproducible={name}, or name the image ./{name}"
        ));
    }
    Ok(())
}

/// Destination of the image, after following a symlink given as the output.
enum OutputKind {
    /// A regular file, or a path where none exists yet: the image is written
    /// to a temporary file beside it and renamed into place on success.
    File(PathBuf),
    /// A block device: written in place, never removed or truncated.
    Device(PathBuf),
}

/// Classifies the output path. A symlink is followed, as `mke2fs` and `cp`
/// do, so the image replaces its target and the symlink stays. Fifos,
/// character devices, sockets and directories are rejected.
fn output_kind(output: &Path) -> Result<OutputKind, String> {
    let metadata = match fs::metadata(output) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            if fs::symlink_metadata(output).is_ok() {
                return Err(format!(
                    "`{}` is a symlink to a missing path; give the image path itself",
                    output.display()
                ));
            }
            return Ok(OutputKind::File(output.to_path_buf()));
        }
        Err(err) => return Err(format!("failed to inspect `{}`: {err}", output.display())),
    };
    let resolved = if fs::symlink_metadata(output)
        .map(|link| link.file_type().is_symlink())
        .unwrap_or(false)
    {
        fs::canonicalize(output)
            .map_err(|err| format!("failed to resolve `{}`: {err}", output.display()))?
    } else {
        output.to_path_buf()
    };
    let kind = metadata.file_type();
    if kind.is_file() {
        Ok(OutputKind::File(resolved))
    } else if kind.is_block_device() {
        Ok(OutputKind::Device(resolved))
    } else {
        let description = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a fifo"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        Err(format!(
            "`{}` is {description}; mkext4 writes only to a regular file or a block device",
            output.display()
        ))
    }
}

/// Writes the image to a temporary file beside `path` and renames it into
/// place, so a failed build leaves an existing file as it was. A replaced
/// file keeps its permission bits, and a new one gets 0666 less the umask.
fn write_regular(tree: &Tree, options: &Options, path: &Path) -> Result<Report, String> {
    let mode = match fs::metadata(path) {
        Ok(existing) => existing.permissions().mode() & 0o7777,
        Err(_) => 0o666 & !current_umask(),
    };
    let dir = spool_dir(path);
    let temp = tempfile::Builder::new()
        .prefix(".mkext4-")
        .tempfile_in(&dir)
        .map_err(|err| {
            format!(
                "failed to create a temporary image in `{}`: {err}",
                dir.display()
            )
        })?;
    // Dropping `temp` on an error removes it, and only it.
    let report = ext4_writer::write_file(tree, options, temp.as_file()).map_err(|err| {
        format!(
            "failed to write `{}`: {}",
            path.display(),
            error_chain(&err)
        )
    })?;
    temp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|err| {
            format!(
                "failed to set the mode of the new `{}`: {err}",
                path.display()
            )
        })?;
    temp.persist(path).map_err(|err| {
        format!(
            "failed to rename the image to `{}`: {}",
            path.display(),
            err.error
        )
    })?;
    Ok(report)
}

/// Writes the image onto a block device, sized to the device unless --size
/// is smaller. Ranges the writer skips are zeroed first because a device,
/// unlike a new file, contains old data there.
fn write_device(
    cli: &Cli,
    tree: &Tree,
    mut options: Options,
    path: &Path,
) -> Result<Report, String> {
    let mut device = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|err| format!("failed to open the device `{}`: {err}", path.display()))?;
    let device_bytes = device
        .seek(SeekFrom::End(0))
        .map_err(|err| format!("failed to read the size of `{}`: {err}", path.display()))?;
    let bytes = match cli.size {
        Some(bytes) if bytes > device_bytes => {
            return Err(format!(
                "--size {bytes} is larger than the device `{}`, which holds {device_bytes} bytes",
                path.display()
            ))
        }
        Some(bytes) => bytes,
        None => device_bytes,
    };
    options.sizing = Sizing::Fixed { bytes };
    let block = u64::from(options.block_size.bytes());
    let image_bytes = bytes / block * block;
    zero_range(&device, image_bytes).map_err(|err| {
        format!(
            "failed to zero the first {image_bytes} bytes of `{}`: {err}",
            path.display()
        )
    })?;
    let report = ext4_writer::write(tree, &options, &device).map_err(|err| {
        format!(
            "failed to write `{}`: {}",
            path.display(),
            error_chain(&err)
        )
    })?;
    device
        .sync_all()
        .map_err(|err| format!("failed to flush `{}`: {err}", path.display()))?;
    Ok(report)
}

/// Zeroes the first `bytes` of a block device: with the kernel's zero-out
/// (fallocate ZERO_RANGE), or by writing zeros where that is unsupported.
fn zero_range(mut device: &File, bytes: u64) -> io::Result<()> {
    use rustix::fs::{fallocate, FallocateFlags};
    let flags = FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE;
    if fallocate(device, flags, 0, bytes).is_ok() {
        return Ok(());
    }
    let zeros = vec![0u8; 1 << 20];
    device.seek(SeekFrom::Start(0))?;
    let mut left = bytes;
    while left > 0 {
        let chunk = usize::try_from(left.min(zeros.len() as u64)).unwrap_or(zeros.len());
        io::Write::write_all(&mut device, &zeros[..chunk])?;
        left -= chunk as u64;
    }
    Ok(())
}

/// Returns the process umask, read by setting it and restoring it.
fn current_umask() -> u32 {
    use rustix::fs::Mode;
    let old = rustix::process::umask(Mode::from_bits_truncate(0o022));
    rustix::process::umask(old);
    old.bits()
}

fn build_options(cli: &Cli) -> Result<Options, String> {
    let defaults = Options::default();
    let sizing = match (cli.size, defaults.sizing) {
        (Some(bytes), _) => Sizing::Fixed { bytes },
        (None, Sizing::Auto { min_free_bytes, .. }) => Sizing::Auto {
            headroom_percent: cli.headroom,
            min_free_bytes,
        },
        (None, Sizing::Fixed { .. }) => Sizing::Auto {
            headroom_percent: cli.headroom,
            min_free_bytes: 0,
        },
    };
    let block_size = match cli.block_size {
        1024 => BlockSize::B1024,
        2048 => BlockSize::B2048,
        _ => BlockSize::B4096,
    };
    let reproducible = cli
        .reproducible
        .map(Reproducible::try_from_env)
        .transpose()?;
    Ok(Options {
        block_size,
        sizing,
        inode_count: cli.inodes,
        label: cli.label.clone(),
        uuid: cli.uuid,
        journal: !cli.no_journal,
        reproducible,
        ..defaults
    })
}

fn read_source(cli: &Cli, options: &Options) -> Result<Tree, String> {
    if let Some(dir) = &cli.from_dir {
        return tree_from_dir(dir).map_err(|err| error_chain(&err));
    }
    let Some(tar) = &cli.from_tar else {
        return Err("no source given; use --from-dir DIR or --from-tar FILE".to_string());
    };

    // The spool stores file contents until the image is written. Beside the
    // output, it lands on a filesystem that has room for the image.
    let spool_dir = spool_dir(&cli.output);
    let mut spool = Spool::new_in(&spool_dir).map_err(|err| {
        format!(
            "failed to create a spool file in `{}`: {err}",
            spool_dir.display()
        )
    })?;
    let root = root_metadata(options);
    let result = if tar == Path::new("-") {
        let mut input = BufReader::new(io::stdin().lock());
        check_tar_start(&mut input, "standard input")?;
        tree_from_tar(input, root, &mut spool)
    } else {
        let file =
            File::open(tar).map_err(|err| format!("failed to open `{}`: {err}", tar.display()))?;
        let mut input = BufReader::with_capacity(1 << 20, file);
        check_tar_start(&mut input, &format!("`{}`", tar.display()))?;
        tree_from_tar(input, root, &mut spool)
    };
    result.map_err(|err| format!("failed to read `{}`: {}", tar.display(), error_chain(&err)))
}

/// Rejects an empty input and a compressed archive before reading it as tar.
/// `input` names the input in messages.
fn check_tar_start(reader: &mut impl BufRead, input: &str) -> Result<(), String> {
    let start = reader
        .fill_buf()
        .map_err(|err| format!("failed to read {input}: {err}"))?;
    if start.is_empty() {
        return Err(format!("no tar data in {input}; it is empty"));
    }
    let compression = [
        (&b"\x1f\x8b"[..], "gzip", "gzip -dc"),
        (b"\x28\xb5\x2f\xfd", "zstd", "zstd -dc"),
        (b"\xfd7zXZ\x00", "xz", "xz -dc"),
        (b"BZh", "bzip2", "bzip2 -dc"),
    ];
    for (magic, format, command) in compression {
        if start.starts_with(magic) {
            return Err(format!(
                "{input} is a {format}-compressed archive; decompress it first, for example with `{command} ARCHIVE | mkext4 IMAGE --from-tar -`"
            ));
        }
    }
    Ok(())
}

/// Metadata of the root until the archive's `./` member replaces it:
/// 0755, owned by root, timed at the reproducible timestamp or now.
fn root_metadata(options: &Options) -> Metadata {
    let seconds = match options.reproducible {
        Some(reproducible) => reproducible.timestamp,
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| {
                i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
            }),
    };
    Metadata::new(0o755, 0, 0, Timestamp::new(seconds, 0))
}

fn spool_dir(output: &Path) -> PathBuf {
    match output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Joins an error and its sources into one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Parses a byte count with an optional K, M, G or T suffix (powers of 1024).
fn parse_size(text: &str) -> Result<u64, String> {
    let invalid = || {
        format!("invalid size `{text}`: expected a number of bytes with an optional K, M, G or T suffix, such as 512M")
    };
    let (digits, shift) = match text.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&text[..text.len() - 1], 10),
        Some('M') => (&text[..text.len() - 1], 20),
        Some('G') => (&text[..text.len() - 1], 30),
        Some('T') => (&text[..text.len() - 1], 40),
        _ => (text, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let number: u64 = digits.parse().map_err(|_| invalid())?;
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("invalid size `{text}`: larger than 2^64 bytes"))
}

fn parse_block_size(text: &str) -> Result<u32, String> {
    match text {
        "1024" | "1K" | "1k" => Ok(1024),
        "2048" | "2K" | "2k" => Ok(2048),
        "4096" | "4K" | "4k" => Ok(4096),
        _ => Err(format!(
            "invalid block size `{text}`: use 1024, 2048 or 4096"
        )),
    }
}

fn parse_label(text: &str) -> Result<String, String> {
    if text.len() > 16 {
        return Err(format!(
            "invalid label `{text}`: it is {} bytes, and ext4 labels hold at most 16",
            text.len()
        ));
    }
    Ok(text.to_string())
}

/// Parses 32 hex digits, with or without the hyphens of the 8-4-4-4-12 form.
fn parse_uuid(text: &str) -> Result<[u8; 16], String> {
    let invalid = || {
        format!("invalid UUID `{text}`: expected 32 hex digits such as 0b6c4f5e-8d2a-4c1b-9f3e-7a5d2c1b0e9f")
    };
    let hyphens: Vec<usize> = text.match_indices('-').map(|(index, _)| index).collect();
    if !hyphens.is_empty() && hyphens != [8, 13, 18, 23] {
        return Err(invalid());
    }
    let digits: Vec<u8> = text.bytes().filter(|&b| b != b'-').collect();
    // from_str_radix alone would accept a sign such as `+b`.
    if digits.len() != 32 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(invalid());
    }
    let mut uuid = [0u8; 16];
    for (byte, pair) in uuid.iter_mut().zip(digits.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).map_err(|_| invalid())?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| invalid())?;
    }
    Ok(uuid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parsed() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("3G"), Ok(3 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        for bad in ["", "G", "1.5G", "-1", "12X", "1 G", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn uuids_parsed() {
        let expected = [
            0x0b, 0x6c, 0x4f, 0x5e, 0x8d, 0x2a, 0x4c, 0x1b, 0x9f, 0x3e, 0x7a, 0x5d, 0x2c, 0x1b,
            0x0e, 0x9f,
        ];
        assert_eq!(
            parse_uuid("0b6c4f5e-8d2a-4c1b-9f3e-7a5d2c1b0e9f"),
            Ok(expected)
        );
        assert_eq!(parse_uuid("0B6C4F5E8D2A4C1B9F3E7A5D2C1B0E9F"), Ok(expected));
        for bad in [
            "",
            "0b6c4f5e-8d2a-4c1b-9f3e-7a5d2c1b0e9",
            "0b6c4f5e8-d2a-4c1b-9f3e-7a5d2c1b0e9f",
            "zz6c4f5e-8d2a-4c1b-9f3e-7a5d2c1b0e9f",
            "+b6c4f5e-8d2a-4c1b-9f3e-7a5d2c1b0e9f",
            "+b+c4f5e8d2a4c1b9f3e7a5d2c1b0e9f",
        ] {
            assert!(parse_uuid(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn labels_limited_to_16_bytes() {
        assert!(parse_label("sixteen-bytes-ok").is_ok());
        assert!(parse_label("seventeen-bytes-x").is_err());
    }

    #[test]
    fn block_sizes_limited() {
        assert_eq!(parse_block_size("2048"), Ok(2048));
        assert!(parse_block_size("8192").is_err());
        assert!(parse_block_size("512").is_err());
    }

    #[test]
    fn options_follow_flags() {
        let cli = Cli::parse_from([
            "mkext4",
            "out.ext4",
            "--from-dir",
            "src",
            "--headroom",
            "25",
            "--block-size",
            "1024",
            "--inodes",
            "5000",
            "--label",
            "root",
            "--no-journal",
            "--reproducible",
        ]);
        let options = build_options(&cli).unwrap();
        assert_eq!(options.block_size, BlockSize::B1024);
        assert!(matches!(
            options.sizing,
            Sizing::Auto {
                headroom_percent: 25,
                ..
            }
        ));
        assert_eq!(options.inode_count, Some(5000));
        assert_eq!(options.label.as_deref(), Some("root"));
        assert!(!options.journal);
        assert_eq!(options.reproducible.map(|r| r.seed), Some(0));

        let cli = Cli::parse_from([
            "mkext4",
            "o",
            "--from-tar",
            "-",
            "--size",
            "64M",
            "--reproducible=7",
        ]);
        let options = build_options(&cli).unwrap();
        assert_eq!(options.sizing, Sizing::Fixed { bytes: 64 << 20 });
        assert!(options.journal);
        assert_eq!(options.reproducible.map(|r| r.seed), Some(7));
    }

    #[test]
    fn source_required_and_exclusive() {
        assert!(Cli::try_parse_from(["mkext4", "o"]).is_err());
        assert!(
            Cli::try_parse_from(["mkext4", "o", "--from-dir", "a", "--from-tar", "b"]).is_err()
        );
        assert!(Cli::try_parse_from([
            "mkext4",
            "o",
            "--from-dir",
            "a",
            "--size",
            "1G",
            "--headroom",
            "5"
        ])
        .is_err());
    }
}
