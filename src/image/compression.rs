//! Layer compression: detected from the first bytes of the blob, checked
//! against the media type, and undone by a streaming decoder.

use std::fmt;
use std::io::{self, BufRead, Read};

/// gzip member header (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// zstd frame header (RFC 8878).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Compression format of a layer blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        })
    }
}

impl Compression {
    /// Detects the compression from the first bytes of a blob: gzip or zstd
    /// magic, otherwise none.
    pub fn detect(start: &[u8]) -> Self {
        if start.starts_with(&GZIP_MAGIC) {
            Compression::Gzip
        } else if start.starts_with(&ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// Maps an OCI or Docker layer media type to the compression it
    /// declares; returns `None` for a media type that is not a layer.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Some(Compression::Zstd)
            }
            // Docker's schema 1 and some tools label uncompressed layers so.
            "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            _ => None,
        }
    }
}

/// Wraps `reader` in the decoder its first bytes call for and returns the
/// compression found. A media type that declares another compression is
/// logged as a warning, because registries and tools mislabel layers and the
/// bytes cannot lie.
///
/// gzip streams of several members are read whole, as `gzip -d` does.
pub fn decompress<'a, R: BufRead + 'a>(
    mut reader: R,
    media_type: &str,
) -> io::Result<(Box<dyn Read + 'a>, Compression)> {
    let found = Compression::detect(reader.fill_buf()?);
    match Compression::from_media_type(media_type) {
        Some(declared) if declared != found => {
            tracing::warn!(media_type, %declared, %found, "layer compression differs from its media type; using what the bytes show");
        }
        // Layers of a `docker save` archive come without a media type.
        None if media_type.is_empty() => {}
        None => {
            tracing::warn!(media_type, %found, "unknown layer media type; using the compression the bytes show");
        }
        Some(_) => {}
    }
    let decoded: Box<dyn Read + 'a> = match found {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(reader)?),
    };
    Ok((decoded, found))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn round_trip(compressed: Vec<u8>, media_type: &str, expected: Compression) {
        let (mut reader, found) = decompress(compressed.as_slice(), media_type).unwrap();
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(found, expected);
        assert_eq!(out, b"layer bytes");
    }

    #[test]
    fn decompress_detects_from_bytes() {
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(b"layer ").unwrap();
        let mut two_members = gzip.finish().unwrap();
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(b"bytes").unwrap();
        two_members.extend(gzip.finish().unwrap());
        let zstd = zstd::encode_all(&b"layer bytes"[..], 1).unwrap();

        round_trip(
            two_members.clone(),
            "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Gzip,
        );
        // Mislabelled layers are read by what their bytes are.
        round_trip(
            two_members,
            "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip,
        );
        round_trip(
            zstd,
            "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd,
        );
        round_trip(
            b"layer bytes".to_vec(),
            "application/vnd.oci.image.layer.v1.tar",
            Compression::None,
        );
    }

    #[test]
    fn media_types_mapped() {
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(Compression::Zstd)
        );
        assert_eq!(Compression::from_media_type("application/json"), None);
    }
}
