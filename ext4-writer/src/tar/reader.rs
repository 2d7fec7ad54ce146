//! A streaming tar reader that turns each archive member into an [`Entry`]
//! with its metadata decoded and its contents spooled.
//!
//! The `tar` crate decodes the fields of each 512-byte header. This reader
//! does the rest itself, because the crate's reader splits PAX records at
//! newlines (binary xattr values such as `security.capability` can contain
//! one), ignores PAX times and GNU sparse files in PAX form, and cannot be
//! asked to read its input to the end.

use std::io::{self, Read};
use std::ops::Range;

use tar::{GnuExtSparseHeader, Header};

use super::pax::Records;
use super::spool::{AppendError, Spool};
use super::TarError;
use crate::tree::{FileData, Metadata, Segment, Timestamp};

const BLOCK: u64 = 512;
/// Largest PAX or GNU long-name member accepted; real ones are a few KiB.
const MAX_EXTENSION_BYTES: u64 = 16 << 20;

/// What an archive member is, with its type-specific data.
///
/// NOTE: tar has no type for sockets, and GNU tar skips them when
/// archiving, so no entry is ever a socket. Unknown types are read as
/// regular files, as POSIX specifies.
#[derive(Clone, Debug)]
pub enum EntryKind {
    Regular(FileData),
    Directory,
    /// A symbolic link and its target, as stored in the archive.
    Symlink(Vec<u8>),
    /// A hard link to the earlier member whose path is given.
    HardLink(Vec<u8>),
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
}

/// One archive member: its path as stored (after PAX and GNU long names),
/// its kind and its metadata.
#[derive(Clone, Debug)]
pub struct Entry {
    pub path: Vec<u8>,
    pub kind: EntryKind,
    pub metadata: Metadata,
    /// Position of the member's first header in the archive, in bytes.
    pub offset: u64,
}

impl Entry {
    /// Returns the path as text for error messages.
    pub fn display_path(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

/// Reads entries from a tar stream: ustar, GNU and PAX formats, GNU long
/// names and link names, PAX global headers, and GNU sparse files (old GNU
/// and PAX 0.0, 0.1 and 1.0).
pub struct Reader<R> {
    inner: Counted<R>,
    globals: Records,
    finished: bool,
}

/// Extension data gathered for the next real member.
#[derive(Default)]
struct Pending {
    pax: Records,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.pax.is_empty() && self.long_name.is_none() && self.long_link.is_none()
    }
}

impl<R: Read> Reader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner: Counted { inner, position: 0 },
            globals: Records::default(),
            finished: false,
        }
    }

    /// Bytes consumed from the input so far.
    pub fn position(&self) -> u64 {
        self.inner.position
    }

    /// Returns the input, positioned after the end-of-archive block (or wherever
    /// reading stopped), for example to read it to the end.
    pub fn into_inner(self) -> R {
        self.inner.inner
    }

    /// Reads the next member, copying a regular file's contents into `spool`.
    /// Returns `None` at the end-of-archive marker or at the end of input.
    ///
    /// # Errors
    /// [`TarError`] for a truncated or malformed archive, a read error of
    /// the input, or a write error of the spool.
    pub fn next_entry(&mut self, spool: &mut Spool) -> Result<Option<Entry>, TarError> {
        if self.finished {
            return Ok(None);
        }
        let mut pending = Pending::default();
        loop {
            let offset = self.position();
            let mut header = Header::new_old();
            if !self.read_header(header.as_mut_bytes(), offset)? {
                self.finished = true;
                if !pending.is_empty() {
                    return Err(TarError::Truncated {
                        path: "(extension header without a member)".into(),
                        offset,
                    });
                }
                return Ok(None);
            }
            verify_checksum(&header, offset)?;

            let typeflag = header.entry_type().as_byte();
            match typeflag {
                b'x' | b'X' => {
                    let data = self.read_extension(&header, offset)?;
                    let records = Records::parse(&data)
                        .map_err(|reason| TarError::InvalidHeader { offset, reason })?;
                    pending.pax.extend(&records);
                }
                b'g' => {
                    let data = self.read_extension(&header, offset)?;
                    let records = Records::parse(&data)
                        .map_err(|reason| TarError::InvalidHeader { offset, reason })?;
                    self.globals.extend(&records);
                }
                b'L' => {
                    let data = self.read_extension(&header, offset)?;
                    pending.long_name = Some(trim_nul(data));
                }
                b'K' => {
                    let data = self.read_extension(&header, offset)?;
                    pending.long_link = Some(trim_nul(data));
                }
                b'V' => {
                    // A volume label names the archive, not a member.
                    let size = header_size(&header, offset)?;
                    self.skip(size, "(volume label)", offset)?;
                }
                _ => return self.read_member(&header, pending, offset, spool).map(Some),
            }
        }
    }

    /// Decodes one real member whose header is `header`.
    fn read_member(
        &mut self,
        header: &Header,
        pending: Pending,
        offset: u64,
        spool: &mut Spool,
    ) -> Result<Entry, TarError> {
        let mut records = self.globals.clone();
        // Global records give defaults for owners, times and xattrs; a
        // global path, size or sparse map would describe no single member.
        records.retain(|key| {
            !matches!(key, b"path" | b"linkpath" | b"size") && !key.starts_with(b"GNU.sparse.")
        });
        records.extend(&pending.pax);

        let path = match (
            records.get("GNU.sparse.name"),
            &pending.long_name,
            records.get("path"),
        ) {
            (Some(name), _, _) => name.to_vec(),
            (None, Some(name), _) => name.clone(),
            (None, None, Some(name)) => name.to_vec(),
            (None, None, None) => header.path_bytes().into_owned(),
        };
        let display = String::from_utf8_lossy(&path).into_owned();
        let invalid = |reason: String| TarError::InvalidEntry {
            path: display.clone(),
            reason,
        };

        let link = match (&pending.long_link, records.get("linkpath")) {
            (Some(link), _) => Some(link.clone()),
            (None, Some(link)) => Some(link.to_vec()),
            (None, None) => header.link_name_bytes().map(|l| l.into_owned()),
        };
        let metadata = decode_metadata(header, &records).map_err(&invalid)?;
        let size = match records.number("size").map_err(&invalid)? {
            Some(size) => size,
            None => header_size(header, offset)?,
        };

        let typeflag = header.entry_type().as_byte();
        let link_target = || {
            link.clone()
                .filter(|l| !l.is_empty())
                .ok_or_else(|| invalid("the link has no target".into()))
        };
        let device = || -> Result<(u32, u32), TarError> {
            let major = header.device_major().map_err(|e| invalid(e.to_string()))?;
            let minor = header.device_minor().map_err(|e| invalid(e.to_string()))?;
            major
                .zip(minor)
                .ok_or_else(|| invalid("a device entry without device numbers".into()))
        };
        let mut data_left = size;
        let kind = match typeflag {
            b'1' => EntryKind::HardLink(link_target()?),
            b'2' => EntryKind::Symlink(link_target()?),
            b'3' => {
                let (major, minor) = device()?;
                EntryKind::CharDevice { major, minor }
            }
            b'4' => {
                let (major, minor) = device()?;
                EntryKind::BlockDevice { major, minor }
            }
            // 'D' is a GNU dumpdir: a directory whose data lists its names.
            b'5' | b'D' => EntryKind::Directory,
            b'6' => EntryKind::Fifo,
            b'M' | b'N' => {
                return Err(invalid(format!(
                    "GNU multi-volume entries (type '{}') are not supported; recreate the archive as a single volume",
                    char::from(typeflag)
                )))
            }
            b'S' => {
                let data = self.read_old_gnu_sparse(header, size, &display, offset, spool)?;
                data_left = 0;
                EntryKind::Regular(data)
            }
            // Old tars mark directories with a trailing slash on a regular
            // entry.
            b'0' | b'\0' if path.ends_with(b"/") => EntryKind::Directory,
            // POSIX reads unknown types as regular files.
            _ if is_pax_sparse(&records) => {
                let data = self.read_pax_sparse(&records, size, &display, offset, spool)?;
                data_left = 0;
                EntryKind::Regular(data)
            }
            _ => {
                let mut segments = Vec::new();
                self.append(spool, 0, size, &mut segments, &display, offset)?;
                data_left = 0;
                let data = FileData::from_segments(size, segments)
                    .map_err(|e| invalid(e.to_string()))?;
                EntryKind::Regular(data)
            }
        };
        self.skip(data_left, &display, offset)?;
        self.skip_padding(size, &display, offset)?;

        Ok(Entry {
            path,
            kind,
            metadata,
            offset,
        })
    }

    /// Reads an old GNU sparse member (type 'S'): the map in the header and
    /// its extension blocks, then the data regions, stored back to back.
    fn read_old_gnu_sparse(
        &mut self,
        header: &Header,
        stored: u64,
        path: &str,
        offset: u64,
        spool: &mut Spool,
    ) -> Result<FileData, TarError> {
        let invalid = |reason: String| TarError::InvalidEntry {
            path: path.into(),
            reason,
        };
        let gnu = header
            .as_gnu()
            .ok_or_else(|| invalid("a sparse entry (type 'S') without a GNU header".into()))?;
        let real_size = gnu.real_size().map_err(|e| invalid(e.to_string()))?;

        let mut map = Vec::new();
        for region in gnu.sparse.iter().filter(|r| !r.is_empty()) {
            map.push(sparse_region(region.offset(), region.length()).map_err(&invalid)?);
        }
        let mut extended = gnu.is_extended();
        while extended {
            let mut block = GnuExtSparseHeader::new();
            if !self.read_header(block.as_mut_bytes(), offset)? {
                return Err(TarError::Truncated {
                    path: path.into(),
                    offset,
                });
            }
            for region in block.sparse.iter().filter(|r| !r.is_empty()) {
                map.push(sparse_region(region.offset(), region.length()).map_err(&invalid)?);
            }
            extended = block.is_extended();
        }

        self.read_sparse_regions(&map, real_size, stored, path, offset, spool)
    }

    /// Reads a GNU sparse member in PAX form: format 0.0 (repeated
    /// `GNU.sparse.offset`/`numbytes`), 0.1 (`GNU.sparse.map`) or 1.0 (the
    /// map at the start of the data).
    fn read_pax_sparse(
        &mut self,
        records: &Records,
        stored: u64,
        path: &str,
        offset: u64,
        spool: &mut Spool,
    ) -> Result<FileData, TarError> {
        let invalid = |reason: String| TarError::InvalidEntry {
            path: path.into(),
            reason,
        };
        let real_size = match (
            records.number("GNU.sparse.realsize").map_err(&invalid)?,
            records.number("GNU.sparse.size").map_err(&invalid)?,
        ) {
            (Some(size), _) | (None, Some(size)) => size,
            (None, None) => {
                return Err(invalid(
                    "a GNU sparse entry without GNU.sparse.realsize or GNU.sparse.size".into(),
                ))
            }
        };

        if records.get("GNU.sparse.major") == Some(b"1") {
            let (map, map_bytes) = self.read_sparse_map_1_0(stored, path, offset)?;
            let data = stored - map_bytes;
            return self.read_sparse_regions(&map, real_size, data, path, offset, spool);
        }

        let mut numbers = Vec::new();
        if let Some(text) = records.get("GNU.sparse.map") {
            for field in text.split(|b| *b == b',').filter(|f| !f.is_empty()) {
                numbers.push(super::pax::parse_number("GNU.sparse.map", field).map_err(&invalid)?);
            }
        } else {
            let offsets = records.all("GNU.sparse.offset");
            let lengths = records.all("GNU.sparse.numbytes");
            for (start, len) in offsets.zip(lengths) {
                numbers
                    .push(super::pax::parse_number("GNU.sparse.offset", start).map_err(&invalid)?);
                numbers
                    .push(super::pax::parse_number("GNU.sparse.numbytes", len).map_err(&invalid)?);
            }
        }
        if numbers.len() % 2 != 0 {
            return Err(invalid(
                "the GNU sparse map has an odd number of fields".into(),
            ));
        }
        let map: Vec<(u64, u64)> = numbers.chunks(2).map(|pair| (pair[0], pair[1])).collect();
        self.read_sparse_regions(&map, real_size, stored, path, offset, spool)
    }

    /// Reads the decimal map that starts the data of a PAX 1.0 sparse
    /// member; returns it and the bytes it takes, padding included.
    fn read_sparse_map_1_0(
        &mut self,
        stored: u64,
        path: &str,
        offset: u64,
    ) -> Result<(Vec<(u64, u64)>, u64), TarError> {
        let mut consumed = 0u64;
        let count = self.read_map_number(&mut consumed, stored, path, offset)?;
        let mut map = Vec::new();
        for _ in 0..count {
            let start = self.read_map_number(&mut consumed, stored, path, offset)?;
            let len = self.read_map_number(&mut consumed, stored, path, offset)?;
            map.push((start, len));
        }
        let padded = consumed.div_ceil(BLOCK) * BLOCK;
        if padded > stored {
            return Err(TarError::InvalidEntry {
                path: path.into(),
                reason: format!("the sparse map takes {padded} bytes of {stored}"),
            });
        }
        self.skip(padded - consumed, path, offset)?;
        Ok((map, padded))
    }

    fn read_map_number(
        &mut self,
        consumed: &mut u64,
        stored: u64,
        path: &str,
        offset: u64,
    ) -> Result<u64, TarError> {
        let mut digits = Vec::new();
        loop {
            if *consumed >= stored || digits.len() > 20 {
                return Err(TarError::InvalidEntry {
                    path: path.into(),
                    reason: "the GNU sparse 1.0 map is not terminated".into(),
                });
            }
            let mut byte = [0u8];
            self.read_exact(&mut byte, path, offset)?;
            *consumed += 1;
            if byte[0] == b'\n' {
                break;
            }
            digits.push(byte[0]);
        }
        super::pax::parse_number("GNU.sparse map", &digits).map_err(|reason| {
            TarError::InvalidEntry {
                path: path.into(),
                reason,
            }
        })
    }

    /// Spools the data regions of a sparse file, stored back to back in the
    /// archive, and checks them against the file size and the stored size.
    fn read_sparse_regions(
        &mut self,
        map: &[(u64, u64)],
        real_size: u64,
        stored: u64,
        path: &str,
        offset: u64,
        spool: &mut Spool,
    ) -> Result<FileData, TarError> {
        let invalid = |reason: String| TarError::InvalidEntry {
            path: path.into(),
            reason,
        };
        let mut end_of_previous = 0u64;
        let mut total = 0u64;
        for &(start, len) in map {
            let end = start
                .checked_add(len)
                .ok_or_else(|| invalid("a sparse region overflows".into()))?;
            if start < end_of_previous || end > real_size {
                return Err(invalid(format!(
                    "sparse region {start}+{len} overlaps the previous one or ends past the file size {real_size}"
                )));
            }
            end_of_previous = end;
            total = total.saturating_add(len);
        }
        if total != stored {
            return Err(invalid(format!(
                "the sparse map lists {total} bytes of data but the entry stores {stored}"
            )));
        }

        let mut segments: Vec<Segment> = Vec::new();
        for &(start, len) in map {
            self.append(spool, start, len, &mut segments, path, offset)?;
        }
        FileData::from_segments(real_size, segments).map_err(|e| invalid(e.to_string()))
    }

    fn append(
        &mut self,
        spool: &mut Spool,
        file_offset: u64,
        len: u64,
        segments: &mut Vec<Segment>,
        path: &str,
        offset: u64,
    ) -> Result<(), TarError> {
        spool
            .append(&mut self.inner, file_offset, len, segments)
            .map_err(|err| match err {
                AppendError::Read(source) => read_error(source, path, offset),
                AppendError::Write(source) => TarError::Spool {
                    path: path.into(),
                    source,
                },
            })
    }

    /// Reads the data of an extension member (PAX, GNU long name) whole.
    fn read_extension(&mut self, header: &Header, offset: u64) -> Result<Vec<u8>, TarError> {
        let size = header_size(header, offset)?;
        if size > MAX_EXTENSION_BYTES {
            return Err(TarError::InvalidHeader {
                offset,
                reason: format!(
                    "extension header of {size} bytes is larger than the {MAX_EXTENSION_BYTES} bytes accepted"
                ),
            });
        }
        let mut data = vec![0u8; usize::try_from(size).unwrap_or(usize::MAX)];
        self.read_exact(&mut data, "(extension header)", offset)?;
        self.skip_padding(size, "(extension header)", offset)?;
        Ok(data)
    }

    /// Reads one 512-byte block; `false` at the end of input or at a zero
    /// block (the end-of-archive marker).
    fn read_header(&mut self, block: &mut [u8], offset: u64) -> Result<bool, TarError> {
        let mut filled = 0;
        while filled < block.len() {
            match self.inner.read(&mut block[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => {
                    return Err(TarError::Truncated {
                        path: "(header)".into(),
                        offset,
                    })
                }
                Ok(n) => filled += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(TarError::Read { offset, source }),
            }
        }
        Ok(block.iter().any(|b| *b != 0))
    }

    fn read_exact(&mut self, buf: &mut [u8], path: &str, offset: u64) -> Result<(), TarError> {
        self.inner
            .read_exact(buf)
            .map_err(|source| read_error(source, path, offset))
    }

    fn skip(&mut self, len: u64, path: &str, offset: u64) -> Result<(), TarError> {
        let copied = io::copy(&mut (&mut self.inner).take(len), &mut io::sink())
            .map_err(|source| read_error(source, path, offset))?;
        if copied < len {
            return Err(TarError::Truncated {
                path: path.into(),
                offset,
            });
        }
        Ok(())
    }

    fn skip_padding(&mut self, size: u64, path: &str, offset: u64) -> Result<(), TarError> {
        let padding = (BLOCK - size % BLOCK) % BLOCK;
        self.skip(padding, path, offset)
    }
}

fn read_error(source: io::Error, path: &str, offset: u64) -> TarError {
    if source.kind() == io::ErrorKind::UnexpectedEof {
        TarError::Truncated {
            path: path.into(),
            offset,
        }
    } else {
        TarError::Read { offset, source }
    }
}

/// Checks the header checksum: the sum of all bytes with the checksum
/// field read as spaces, unsigned as POSIX defines it or signed as some old
/// tars wrote it.
fn verify_checksum(header: &Header, offset: u64) -> Result<(), TarError> {
    let stored = header.cksum().map_err(|e| TarError::InvalidHeader {
        offset,
        reason: e.to_string(),
    })?;
    let bytes = header.as_bytes();
    let outside = bytes[..148].iter().chain(&bytes[156..]);
    let unsigned: u32 = outside.clone().map(|b| u32::from(*b)).sum::<u32>() + 8 * 32;
    let signed: i64 = outside.map(|b| i64::from(*b as i8)).sum::<i64>() + 8 * 32;
    if stored == unsigned || i64::from(stored) == signed {
        return Ok(());
    }
    Err(TarError::InvalidHeader {
        offset,
        reason: format!("header checksum {stored} does not match the computed {unsigned}; the archive is corrupt or not a tar archive"),
    })
}

fn header_size(header: &Header, offset: u64) -> Result<u64, TarError> {
    header.entry_size().map_err(|e| TarError::InvalidHeader {
        offset,
        reason: e.to_string(),
    })
}

fn trim_nul(mut data: Vec<u8>) -> Vec<u8> {
    while data.last() == Some(&0) {
        data.pop();
    }
    data
}

fn is_pax_sparse(records: &Records) -> bool {
    ["GNU.sparse.major", "GNU.sparse.map", "GNU.sparse.offset"]
        .iter()
        .any(|key| records.get(key).is_some())
}

fn sparse_region(start: io::Result<u64>, len: io::Result<u64>) -> Result<(u64, u64), String> {
    let start = start.map_err(|e| format!("invalid sparse region offset: {e}"))?;
    let len = len.map_err(|e| format!("invalid sparse region length: {e}"))?;
    Ok((start, len))
}

/// Owner, permissions, times and xattrs from the header and the PAX
/// records, which override the header.
fn decode_metadata(header: &Header, records: &Records) -> Result<Metadata, String> {
    let mode = header.mode().map_err(|e| format!("invalid mode: {e}"))?;
    let raw = header.as_bytes();
    let uid = match records.number("uid")? {
        Some(uid) => i128::from(uid),
        None => numeric_field(&raw[UID_FIELD]).map_err(|e| format!("invalid uid: {e}"))?,
    };
    let gid = match records.number("gid")? {
        Some(gid) => i128::from(gid),
        None => numeric_field(&raw[GID_FIELD]).map_err(|e| format!("invalid gid: {e}"))?,
    };
    let uid = u32::try_from(uid).map_err(|_| format!("uid {uid} is outside 0 to 2^32-1"))?;
    let gid = u32::try_from(gid).map_err(|_| format!("gid {gid} is outside 0 to 2^32-1"))?;

    let header_time = |field: Range<usize>, name: &str| -> Result<i64, String> {
        let seconds = numeric_field(&raw[field]).map_err(|e| format!("invalid {name}: {e}"))?;
        i64::try_from(seconds).map_err(|_| format!("invalid {name}: {seconds} s is beyond 64 bits"))
    };
    let mtime = match records.time("mtime")? {
        Some(time) => time,
        None => Timestamp::new(header_time(MTIME_FIELD, "mtime")?, 0),
    };
    // GNU headers carry atime and ctime only with --incremental, and 0 means unset.
    let gnu_time = |field: Range<usize>, name: &str| -> Result<Option<Timestamp>, String> {
        if header.as_gnu().is_none() {
            return Ok(None);
        }
        let seconds = header_time(field, name)?;
        Ok((seconds != 0).then(|| Timestamp::new(seconds, 0)))
    };
    let atime = match records.time("atime")? {
        Some(time) => time,
        None => gnu_time(GNU_ATIME_FIELD, "atime")?.unwrap_or(mtime),
    };
    let ctime = match records.time("ctime")? {
        Some(time) => time,
        None => gnu_time(GNU_CTIME_FIELD, "ctime")?.unwrap_or(mtime),
    };

    Ok(Metadata {
        // Bits above 0o7777 hold the file type in some writers.
        permissions: u16::try_from(mode & 0o7777).unwrap_or(0),
        uid,
        gid,
        atime,
        mtime,
        ctime,
        crtime: mtime,
        xattrs: records.xattrs()?,
    })
}

/// Byte ranges of numeric header fields (ustar, and GNU for atime and ctime).
const UID_FIELD: Range<usize> = 108..116;
const GID_FIELD: Range<usize> = 116..124;
const MTIME_FIELD: Range<usize> = 136..148;
const GNU_ATIME_FIELD: Range<usize> = 345..357;
const GNU_CTIME_FIELD: Range<usize> = 357..369;

/// Decodes a numeric header field: octal digits padded with spaces or NULs,
/// or GNU's base-256 form, which sets the top bit of the first byte and
/// stores a two's-complement number whose sign is the next bit.
fn numeric_field(field: &[u8]) -> Result<i128, String> {
    let Some((&first, rest)) = field.split_first() else {
        return Ok(0);
    };
    if first & 0x80 != 0 {
        let sign = if first & 0x40 != 0 { -0x40 } else { 0 };
        let mut value = i128::from(first & 0x3f) + sign;
        for &byte in rest {
            value = value
                .checked_mul(256)
                .and_then(|v| v.checked_add(i128::from(byte)))
                .ok_or_else(|| format!("base-256 value {} is too large", escape_bytes(field)))?;
        }
        return Ok(value);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if text.is_empty() {
        return Ok(0);
    }
    let digits = std::str::from_utf8(&text)
        .ok()
        .filter(|t| t.bytes().all(|b| (b'0'..=b'7').contains(&b)));
    digits
        .and_then(|t| i128::from_str_radix(t, 8).ok())
        .ok_or_else(|| format!("{} is not an octal number", escape_bytes(field)))
}

/// Renders archive bytes for a message, escaping everything but printable
/// ASCII so that a header cannot send control sequences to a terminal.
pub(crate) fn escape_bytes(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

/// A reader that counts the bytes read through it.
struct Counted<R> {
    inner: R,
    position: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.position += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_field_octal_and_base256() {
        assert_eq!(numeric_field(b"0000644\0"), Ok(0o644));
        assert_eq!(numeric_field(b"   17 \0\0"), Ok(0o17));
        assert_eq!(numeric_field(b"\0\0\0\0"), Ok(0));
        assert_eq!(numeric_field(&[0x80, 0, 0, 0, 0, 0, 1, 0]), Ok(256));
        assert_eq!(numeric_field(&[0xff; 12]), Ok(-1));
        let mut minus_1960 = [0xffu8; 12];
        minus_1960[8..].copy_from_slice(&(-315_619_200i32).to_be_bytes());
        assert_eq!(numeric_field(&minus_1960), Ok(-315_619_200));
    }

    #[test]
    fn numeric_field_garbage_escaped() {
        let err = numeric_field(b"\x1b[31m9\0").unwrap_err();
        assert!(err.contains("\\x1b[31m9"), "{err}");
        assert!(!err.contains('\x1b'), "{err}");
    }
}
