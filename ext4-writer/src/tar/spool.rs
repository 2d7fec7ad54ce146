//! A temporary file that file contents are copied into while an archive is
//! read, so that the tree refers to them by offset and memory stays bounded
//! by the number of entries, not by the size of the contents.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::tree::{ReadAt, Segment};

/// Granularity of hole detection: a run of this many zero bytes, aligned in
/// the file, is not stored and reads back as a hole.
const ZERO_BLOCK: usize = 4096;
/// Bytes read from the archive per copy step.
const CHUNK: usize = 64 * ZERO_BLOCK;

/// An append-only temporary file holding file contents.
///
/// The file is unlinked at creation, so it disappears when the spool and
/// every [`Segment`] that refers to it are dropped.
pub struct Spool {
    file: Arc<File>,
    len: u64,
    buffer: Vec<u8>,
}

impl Spool {
    /// Creates a spool in the system's temporary directory (`TMPDIR`).
    pub fn new() -> io::Result<Self> {
        Ok(Self::from_file(tempfile::tempfile()?))
    }

    /// Creates a spool in `dir`, for example next to the image being built.
    pub fn new_in(dir: &Path) -> io::Result<Self> {
        Ok(Self::from_file(tempfile::tempfile_in(dir)?))
    }

    fn from_file(file: File) -> Self {
        Self {
            file: Arc::new(file),
            len: 0,
            buffer: vec![0; CHUNK],
        }
    }

    /// Bytes stored so far; zero blocks are not stored.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `len` bytes from `reader`, which belong at `file_offset` in a
    /// file, and appends the segments that hold them to `segments`.
    ///
    /// Blocks of 4096 zero bytes (aligned to the file offset) are skipped and
    /// left as holes.
    ///
    /// # Errors
    /// [`AppendError::Read`] when `reader` fails or ends before `len` bytes
    /// ([`io::ErrorKind::UnexpectedEof`]), [`AppendError::Write`] when the
    /// spool file cannot be written.
    pub fn append(
        &mut self,
        reader: &mut impl Read,
        file_offset: u64,
        len: u64,
        segments: &mut Vec<Segment>,
    ) -> Result<(), AppendError> {
        let source: Arc<dyn ReadAt> = self.file.clone();
        let end = file_offset.checked_add(len).ok_or_else(|| {
            AppendError::Read(io::Error::new(
                io::ErrorKind::InvalidData,
                "file offset plus length overflows",
            ))
        })?;
        let mut offset = file_offset;
        while offset < end {
            // Chunks end on zero-block boundaries of the file, so hole
            // detection sees whole blocks except at the edges of the run.
            let to_boundary = CHUNK as u64 - offset % ZERO_BLOCK as u64;
            let want = usize::try_from((end - offset).min(to_boundary)).unwrap_or(CHUNK);
            let chunk = &mut self.buffer[..want];
            reader.read_exact(chunk).map_err(AppendError::Read)?;

            // Bytes before the first block boundary of this chunk; the
            // remainder of a division by 4096 always fits in usize.
            let phase = usize::try_from(offset % ZERO_BLOCK as u64).unwrap_or(0);
            let mut block_end = (ZERO_BLOCK - phase).min(want);
            let mut position = 0;
            while position < want {
                let block = &chunk[position..block_end];
                if !block.iter().all(|b| *b == 0) {
                    let at = offset + position as u64;
                    let len = block.len() as u64;
                    self.file
                        .write_all_at(block, self.len)
                        .map_err(AppendError::Write)?;
                    push_segment(segments, &source, at, len, self.len);
                    self.len += len;
                }
                position = block_end;
                block_end = (block_end + ZERO_BLOCK).min(want);
            }
            offset += want as u64;
        }
        Ok(())
    }
}

/// Why [`Spool::append`] failed: reading the input or writing the spool.
#[derive(Debug)]
pub enum AppendError {
    Read(io::Error),
    Write(io::Error),
}

/// Appends a segment, or extends the last one when the new bytes follow it
/// both in the file and in the spool.
fn push_segment(
    segments: &mut Vec<Segment>,
    source: &Arc<dyn ReadAt>,
    file_offset: u64,
    len: u64,
    source_offset: u64,
) {
    if let Some(last) = segments.last_mut() {
        if last.file_offset + last.len == file_offset
            && last.source_offset + last.len == source_offset
            && Arc::ptr_eq(&last.source, source)
        {
            last.len += len;
            return;
        }
    }
    segments.push(Segment {
        file_offset,
        len,
        source: source.clone(),
        source_offset,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_back(segments: &[Segment], size: usize) -> Vec<u8> {
        let mut out = vec![0u8; size];
        for segment in segments {
            let start = usize::try_from(segment.file_offset).unwrap();
            let end = start + usize::try_from(segment.len).unwrap();
            segment
                .source
                .read_exact_at(&mut out[start..end], segment.source_offset)
                .unwrap();
        }
        out
    }

    #[test]
    fn spool_skips_zero_blocks() {
        let mut data = vec![0u8; 5 * ZERO_BLOCK + 100];
        data[10] = 1;
        data[3 * ZERO_BLOCK + 7] = 2;
        data[5 * ZERO_BLOCK + 99] = 3;
        let mut spool = Spool::new().unwrap();
        let mut segments = Vec::new();
        spool
            .append(&mut data.as_slice(), 0, data.len() as u64, &mut segments)
            .unwrap();
        assert_eq!(segments.len(), 3);
        assert_eq!(spool.len(), 2 * ZERO_BLOCK as u64 + 100);
        assert_eq!(read_back(&segments, data.len()), data);
    }

    #[test]
    fn spool_merges_adjacent_data() {
        let data: Vec<u8> = (0..CHUNK * 3)
            .map(|i| u8::try_from(i % 251).unwrap() | 1)
            .collect();
        let mut spool = Spool::new().unwrap();
        let mut segments = Vec::new();
        spool
            .append(&mut data.as_slice(), 100, data.len() as u64, &mut segments)
            .unwrap();
        assert_eq!(segments.len(), 1);
        let mut expected = vec![0u8; 100];
        expected.extend_from_slice(&data);
        assert_eq!(read_back(&segments, expected.len()), expected);
    }

    #[test]
    fn spool_short_reader_fails() {
        let mut spool = Spool::new().unwrap();
        let err = spool
            .append(&mut &b"abc"[..], 0, 10, &mut Vec::new())
            .unwrap_err();
        assert!(
            matches!(&err, AppendError::Read(e) if e.kind() == io::ErrorKind::UnexpectedEof),
            "{err:?}"
        );
    }
}
