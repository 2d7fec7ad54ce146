//! Positioned writes to the image, with contiguous writes gathered into
//! one buffer so that a run of small blocks costs one system call.

use std::io::{Seek, SeekFrom, Write};

use crate::error::Error;

/// Bytes gathered before a write reaches the output.
const BUFFER_BYTES: usize = 1 << 20;

pub(crate) struct Output<W: Write + Seek> {
    inner: W,
    buffer: Vec<u8>,
    /// Image offset of the first buffered byte.
    buffer_start: u64,
    /// Highest offset written so far.
    end: u64,
}

impl<W: Write + Seek> Output<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            buffer: Vec::with_capacity(BUFFER_BYTES),
            buffer_start: 0,
            end: 0,
        }
    }

    /// Writes `bytes` at image offset `offset`.
    pub fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<(), Error> {
        let buffer_end = self.buffer_start + self.buffer.len() as u64;
        let continues = offset == buffer_end && !self.buffer.is_empty();
        if !continues || self.buffer.len() + bytes.len() > BUFFER_BYTES {
            self.flush_buffer()?;
            self.buffer_start = offset;
        }
        if bytes.len() >= BUFFER_BYTES {
            self.write_through(offset, bytes)?;
        } else {
            self.buffer.extend_from_slice(bytes);
        }
        self.end = self.end.max(offset + bytes.len() as u64);
        Ok(())
    }

    /// Highest offset written so far.
    pub fn end(&self) -> u64 {
        self.end
    }

    fn write_through(&mut self, offset: u64, bytes: &[u8]) -> Result<(), Error> {
        self.inner
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.inner.write_all(bytes))
            .map_err(|source| Error::Io {
                context: format!(
                    "failed to write {} bytes of the image at offset {offset}",
                    bytes.len()
                ),
                source,
            })
    }

    fn flush_buffer(&mut self) -> Result<(), Error> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let buffer = std::mem::take(&mut self.buffer);
        let result = self.write_through(self.buffer_start, &buffer);
        self.buffer = buffer;
        self.buffer.clear();
        result
    }

    /// Writes out what is buffered and flushes the output.
    pub fn finish(mut self) -> Result<W, Error> {
        self.flush_buffer()?;
        self.inner.flush().map_err(|source| Error::Io {
            context: "failed to flush the image".to_string(),
            source,
        })?;
        Ok(self.inner)
    }
}
