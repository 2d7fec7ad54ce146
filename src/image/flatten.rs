//! Flattening: applies image layers, oldest first, to one in-memory tree,
//! with OCI whiteouts, and checks each layer against its `diff_id`. Nothing
//! is extracted onto the host filesystem.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

use ext4_writer::tar::{normalize_path, place_entry, resolve_dir, Reader, Spool, TarError};
use ext4_writer::{Metadata, NodeId, Timestamp, Tree};
use sha2::{Digest, Sha256};

use super::blob_cache::BlobCache;
use super::compression;
use super::model::PulledImage;
use super::whiteout::{self, Whiteout};
use crate::error::{Classify, ExitCode};

/// Read buffer between the blob file and the decompressor.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// Location of a layer's bytes: a whole blob file, or a byte range of a
/// file such as a layer inside a `docker save` archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerSource {
    pub path: PathBuf,
    pub offset: u64,
    /// Length of the range; `None` reads to the end of the file.
    pub len: Option<u64>,
}

impl LayerSource {
    /// Selects the whole file at `path`.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            offset: 0,
            len: None,
        }
    }
}

/// One layer to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub source: LayerSource,
    /// The descriptor's media type; the compression is detected from the
    /// bytes, and a disagreeing media type only logs a warning.
    pub media_type: String,
    /// `sha256:HEX` of the uncompressed tar, from the image config's
    /// `rootfs.diff_ids`; `None` skips the check (a plain rootfs import).
    pub diff_id: Option<String>,
}

impl Layer {
    /// Lists the layers of a pulled image, oldest first, as blob files in
    /// `cache` checked against the config's diff_ids.
    ///
    /// # Errors
    /// [`FlattenError::LayerCount`] when the manifest and the config list
    /// different numbers of layers.
    pub fn from_pulled(image: &PulledImage, cache: &BlobCache) -> Result<Vec<Layer>, FlattenError> {
        let diff_ids = &image.config.rootfs.diff_ids;
        if diff_ids.len() != image.layers.len() {
            return Err(FlattenError::LayerCount {
                layers: image.layers.len(),
                diff_ids: diff_ids.len(),
            });
        }
        let layers = image
            .layers
            .iter()
            .zip(diff_ids)
            .map(|(blob, diff_id)| Layer {
                source: LayerSource::file(cache.path(&blob.digest)),
                media_type: blob.media_type.clone(),
                diff_id: Some(diff_id.to_string()),
            })
            .collect();
        Ok(layers)
    }
}

/// Everything that can go wrong while flattening layers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlattenError {
    /// The layer's file could not be opened or read.
    #[error("failed to read {layer} from {path}: {source}")]
    Open {
        layer: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The layer is not a valid tar stream, or an entry cannot be applied.
    #[error("failed to apply {layer}: {source}")]
    Tar {
        layer: String,
        #[source]
        source: TarError,
    },

    /// A whiteout with nothing after `.wh.`.
    #[error("invalid whiteout {path:?} in {layer}: the name after '.wh.' is empty")]
    EmptyWhiteout { layer: String, path: String },

    /// The uncompressed layer is not the one the image config names.
    #[error("{layer} does not match the image config: its uncompressed sha256 is {actual} but the config's diff_id is {expected}; the blob is corrupt or belongs to another image, so delete it from the cache and pull again")]
    DiffIdMismatch {
        layer: String,
        expected: String,
        actual: String,
    },

    /// A diff_id that is not `sha256:` and 64 lowercase hex digits.
    #[error("invalid diff_id {diff_id:?} for {layer}: expected sha256: and 64 hex digits")]
    InvalidDiffId { layer: String, diff_id: String },

    /// The manifest and the config disagree on the number of layers.
    #[error("the image manifest lists {layers} layers but its config has {diff_ids} diff_ids; the image is invalid")]
    LayerCount { layers: usize, diff_ids: usize },
}

impl Classify for FlattenError {
    fn exit_code(&self) -> ExitCode {
        match self {
            // The spool is host disk space (a full disk, a quota), as are
            // the ext4 image and the cache.
            Self::Tar {
                source: TarError::Spool { .. },
                ..
            } => ExitCode::HostResource,
            // Every other cause is bad or corrupt image content, or an
            // unreadable blob, none of which has a more specific code.
            _ => ExitCode::General,
        }
    }
}

/// Applies `layers`, oldest first, to a new tree whose root is 0755 and
/// owned by root until a layer's `./` entry sets it. File contents go to
/// `spool`, which must outlive the tree.
///
/// # Errors
/// [`FlattenError`] naming the layer (its position and diff_id or path)
/// and, where one is at fault, the entry.
pub fn flatten(layers: &[Layer], spool: &mut Spool) -> Result<Tree, FlattenError> {
    flatten_with_diff_ids(layers, spool).map(|(tree, _)| tree)
}

/// Flattens like [`flatten`] and also returns each layer's computed
/// diff_id (`sha256:HEX` of the uncompressed tar), for layers that came
/// without one, such as an imported root-filesystem tar.
///
/// # Errors
/// The errors of [`flatten`].
pub fn flatten_with_diff_ids(
    layers: &[Layer],
    spool: &mut Spool,
) -> Result<(Tree, Vec<String>), FlattenError> {
    let mut tree = Tree::new(Metadata::new(0o755, 0, 0, Timestamp::default()));
    let mut diff_ids = Vec::with_capacity(layers.len());
    for (index, layer) in layers.iter().enumerate() {
        let name = layer_name(index, layers.len(), layer);
        let digest = apply_layer_file(&mut tree, layer, &name, spool)?;
        diff_ids.push(format!("sha256:{}", hex::encode(digest)));
    }
    Ok((tree, diff_ids))
}

/// Names a layer for messages by its position and diff_id, or its file.
fn layer_name(index: usize, count: usize, layer: &Layer) -> String {
    match &layer.diff_id {
        Some(diff_id) => format!("layer {} of {count} ({diff_id})", index + 1),
        None => format!(
            "layer {} of {count} ({})",
            index + 1,
            layer.source.path.display()
        ),
    }
}

/// Opens a layer's byte range, decompresses it, applies it and returns the
/// sha256 of the uncompressed tar.
fn apply_layer_file(
    tree: &mut Tree,
    layer: &Layer,
    name: &str,
    spool: &mut Spool,
) -> Result<[u8; 32], FlattenError> {
    let open_error = |source| FlattenError::Open {
        layer: name.into(),
        path: layer.source.path.clone(),
        source,
    };
    let expected = layer
        .diff_id
        .as_deref()
        .map(|diff_id| parse_diff_id(diff_id, name))
        .transpose()?;

    let mut file = File::open(&layer.source.path).map_err(open_error)?;
    file.seek(SeekFrom::Start(layer.source.offset))
        .map_err(open_error)?;
    let range: Box<dyn Read> = match layer.source.len {
        Some(len) => Box::new(file.take(len)),
        None => Box::new(file),
    };
    let buffered = BufReader::with_capacity(READ_BUFFER_BYTES, range);
    let (decoded, found) =
        compression::decompress(buffered, &layer.media_type).map_err(open_error)?;
    tracing::debug!(layer = name, compression = %found, "applying layer");

    let actual = apply_layer(tree, decoded, name, spool)?;
    if let Some(expected) = expected {
        if actual != expected {
            return Err(FlattenError::DiffIdMismatch {
                layer: name.into(),
                expected: format!("sha256:{}", hex::encode(expected)),
                actual: format!("sha256:{}", hex::encode(actual)),
            });
        }
    }
    Ok(actual)
}

fn parse_diff_id(diff_id: &str, layer: &str) -> Result<[u8; 32], FlattenError> {
    let invalid = || FlattenError::InvalidDiffId {
        layer: layer.into(),
        diff_id: diff_id.into(),
    };
    let hex_digits = diff_id.strip_prefix("sha256:").ok_or_else(invalid)?;
    if hex_digits.len() != 64 || hex_digits.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(invalid());
    }
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut digest).map_err(|_| invalid())?;
    Ok(digest)
}

/// Applies one uncompressed layer tar to `tree`, reads `layer` to its end
/// and returns the sha256 of all its bytes.
///
/// Whiteouts: `.wh.NAME` removes `NAME` at once. `.wh..wh..opq` hides every
/// child of its directory that this layer did not write, and this happens
/// after the last entry so that the marker's position does not matter.
/// Whiteout files themselves never enter the tree.
///
/// # Errors
/// [`FlattenError::Tar`] for a malformed tar or an entry that cannot be
/// placed, [`FlattenError::EmptyWhiteout`] for a `.wh.` entry.
pub fn apply_layer(
    tree: &mut Tree,
    layer: impl Read,
    name: &str,
    spool: &mut Spool,
) -> Result<[u8; 32], FlattenError> {
    let tar_error = |source| FlattenError::Tar {
        layer: name.into(),
        source,
    };
    let mut reader = Reader::new(HashingReader::new(layer));
    // Directory entries this layer wrote or passed through, which an opaque
    // marker keeps.
    let mut touched: HashSet<(NodeId, Vec<u8>)> = HashSet::new();
    let mut opaque_dirs: Vec<NodeId> = Vec::new();

    while let Some(entry) = reader.next_entry(spool).map_err(tar_error)? {
        let mut touch = |parent: NodeId, child: &[u8]| {
            touched.insert((parent, child.to_vec()));
        };
        let entry_path = entry.display_path();
        let components = normalize_path(&entry.path);
        let Some((last, parents)) = components.split_last() else {
            place_entry(tree, entry, &mut touch).map_err(tar_error)?;
            continue;
        };

        match whiteout::classify(last) {
            Whiteout::None => {
                place_entry(tree, entry, &mut touch).map_err(tar_error)?;
            }
            Whiteout::Remove(target) => {
                let target = target.to_vec();
                let dir =
                    resolve_dir(tree, parents, None, &mut touch, &entry_path).map_err(tar_error)?;
                if let Some(dir) = dir {
                    tree.unlink(dir, &target).map_err(|source| {
                        tar_error(TarError::Tree {
                            path: entry_path,
                            source,
                        })
                    })?;
                }
            }
            Whiteout::Opaque => {
                // The marker implies its directory exists in this layer.
                let implied = Metadata::new(0o755, 0, 0, entry.metadata.mtime);
                let dir = resolve_dir(tree, parents, Some(&implied), &mut touch, &entry_path)
                    .map_err(tar_error)?;
                opaque_dirs.extend(dir);
            }
            Whiteout::AufsMeta => {
                tracing::debug!(layer = name, path = %entry_path, "skipping AUFS metadata entry");
            }
            Whiteout::Empty => {
                return Err(FlattenError::EmptyWhiteout {
                    layer: name.into(),
                    path: entry_path,
                })
            }
        }
    }

    for dir in opaque_dirs {
        hide_lower_children(tree, dir, &touched);
    }

    // The tar ends at its end-of-archive blocks, but the diff_id covers
    // every byte of the uncompressed stream, padding included.
    let mut rest = reader.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|source| FlattenError::Tar {
        layer: name.into(),
        source: TarError::Read {
            offset: rest.bytes_read,
            source,
        },
    })?;
    Ok(rest.finish())
}

/// Removes every entry under `dir` that the current layer did not touch,
/// recursing into the directories it did touch: under an opaque directory
/// only this layer's entries remain.
fn hide_lower_children(tree: &mut Tree, dir: NodeId, touched: &HashSet<(NodeId, Vec<u8>)>) {
    let children: Vec<(Vec<u8>, NodeId)> = tree
        .entries(dir)
        .map(|(name, id)| (name.to_vec(), id))
        .collect();
    for (name, child) in children {
        if !touched.contains(&(dir, name.clone())) {
            // `Tree::unlink` fails only when `dir` is not a directory, and
            // `entries` listed this name in it.
            let _ = tree.unlink(dir, &name);
        } else if tree.node(child).kind.is_directory() {
            hide_lower_children(tree, child, touched);
        }
    }
}

/// A reader that hashes every byte read through it with sha256.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes_read: u64,
}

impl<R> HashingReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes_read: 0,
        }
    }

    fn finish(self) -> [u8; 32] {
        self.hasher.finalize().into()
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes_read += n as u64;
        Ok(n)
    }
}
