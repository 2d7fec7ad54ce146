//! `banger image import`: turns a `docker save` archive, an OCI image
//! layout (a directory or a tar of one) or a plain root-filesystem tar into
//! an image config and the list of layers to flatten.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::compression::Compression;
use super::flatten::{Layer, LayerSource};
use super::model::{Digest as ImageDigest, ImageConfig};
use crate::error::{Classify, ExitCode};

/// Largest JSON document (manifest, index, config) read into memory.
const MAX_JSON_BYTES: u64 = 16 << 20;
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// The kind of input an import found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportFormat {
    /// A `docker save` (or `skopeo copy docker-archive:`) tar.
    DockerArchive,
    /// An OCI image layout, as a directory or a tar.
    OciLayout,
    /// A plain root-filesystem tar, applied as the only layer.
    RootfsTar,
}

/// An imported image: its config and the layers to flatten, oldest first.
#[derive(Clone, Debug)]
pub struct ImportedImage {
    pub format: ImportFormat,
    /// The image config; `None` for a root-filesystem tar.
    pub config: Option<ImageConfig>,
    /// The image config JSON as stored in the archive.
    pub raw_config: Option<Vec<u8>>,
    /// Digest of the manifest (OCI layout) or of the config (docker archive,
    /// which stores no manifest), identifying the image; `None` for a
    /// root-filesystem tar.
    pub digest: Option<ImageDigest>,
    /// Tags the archive records (`RepoTags`, or the OCI ref name).
    pub tags: Vec<String>,
    pub layers: Vec<Layer>,
    /// A temporary copy of the input that the layers point into, kept as
    /// long as the image (standard input and compressed archives).
    keep_alive: Option<Arc<tempfile::TempPath>>,
}

/// Everything that can go wrong while importing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    #[error("failed to read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The input is an archive or layout with a missing or invalid part.
    #[error("invalid image archive {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },

    /// The archive contains several images and no tag picks one.
    #[error("{path} holds {count} images; choose one with --tag TAG (tags: {available})")]
    Ambiguous {
        path: PathBuf,
        count: usize,
        available: String,
    },

    /// No image in the archive has the requested tag.
    #[error("no image tagged {tag:?} in {path}; it holds: {available}")]
    TagNotFound {
        path: PathBuf,
        tag: String,
        available: String,
    },
}

impl Classify for ImportError {
    fn exit_code(&self) -> ExitCode {
        match self {
            ImportError::Io { .. } => ExitCode::General,
            ImportError::Invalid { .. } => ExitCode::Usage,
            ImportError::Ambiguous { .. } => ExitCode::Usage,
            ImportError::TagNotFound { .. } => ExitCode::NotFound,
        }
    }
}

/// Imports `path`: an OCI layout directory, or a file containing a docker
/// archive, an OCI layout tar or a root-filesystem tar (gzip or zstd
/// compressed or not). `tag` picks one image when the input contains several.
/// `scratch` is where a compressed archive is decompressed to.
///
/// # Errors
/// [`ImportError`] naming the input and the missing or invalid part.
pub fn import_path(
    path: &Path,
    tag: Option<&str>,
    scratch: &Path,
) -> Result<ImportedImage, ImportError> {
    let metadata = std::fs::metadata(path).map_err(|source| io_error(path, source))?;
    if metadata.is_dir() {
        return import_oci_layout(&DirStore::new(path), tag);
    }

    let mut file = File::open(path).map_err(|source| io_error(path, source))?;
    let mut magic = [0u8; 4];
    let read = read_up_to(&mut file, &mut magic).map_err(|source| io_error(path, source))?;
    match Compression::detect(&magic[..read]) {
        Compression::None => import_tar_file(path, tag, None),
        compression => {
            // Members of a compressed archive cannot be read at an offset,
            // so the archive is decompressed once into `scratch`.
            tracing::debug!(path = %path.display(), %compression, "decompressing the archive to a temporary file");
            let temporary = decompress_to(path, scratch)?;
            let decompressed = temporary.to_path_buf();
            import_tar_file(&decompressed, tag, Some(Arc::new(temporary)))
        }
    }
}

/// Imports an archive read from `input` (standard input), copied first
/// into a temporary file in `scratch`.
///
/// # Errors
/// The errors of [`import_path`].
pub fn import_reader(
    mut input: impl Read,
    tag: Option<&str>,
    scratch: &Path,
) -> Result<ImportedImage, ImportError> {
    let mut temporary =
        tempfile::NamedTempFile::new_in(scratch).map_err(|source| io_error(scratch, source))?;
    io::copy(&mut input, &mut temporary).map_err(|source| io_error(Path::new("-"), source))?;
    let temporary = temporary.into_temp_path();
    let mut image = import_path(&temporary, tag, scratch)?;
    if image.keep_alive.is_none() {
        image.keep_alive = Some(Arc::new(temporary));
    }
    Ok(image)
}

/// Decompresses the archive at `path` into a temporary file in `scratch`.
fn decompress_to(path: &Path, scratch: &Path) -> Result<tempfile::TempPath, ImportError> {
    let file = File::open(path).map_err(|source| io_error(path, source))?;
    let (mut decoded, _) = super::compression::decompress(BufReader::new(file), "")
        .map_err(|source| io_error(path, source))?;
    let mut temporary =
        tempfile::NamedTempFile::new_in(scratch).map_err(|source| io_error(scratch, source))?;
    io::copy(&mut decoded, &mut temporary).map_err(|source| io_error(path, source))?;
    Ok(temporary.into_temp_path())
}

/// Imports an uncompressed tar file and tells the three formats apart by
/// their members. `manifest.json` makes a docker archive, and `oci-layout`
/// with `index.json` an OCI layout. Anything else is a root filesystem.
fn import_tar_file(
    path: &Path,
    tag: Option<&str>,
    temporary: Option<Arc<tempfile::TempPath>>,
) -> Result<ImportedImage, ImportError> {
    let store = TarStore::index(path)?;
    let mut image = if store.contains("manifest.json") {
        import_docker_archive(&store, tag)?
    } else if store.contains("oci-layout") && store.contains("index.json") {
        import_oci_layout(&store, tag)?
    } else {
        if let Some(tag) = tag {
            tracing::debug!(tag, "a root-filesystem tar has no tags to choose from");
        }
        ImportedImage {
            format: ImportFormat::RootfsTar,
            config: None,
            raw_config: None,
            digest: None,
            tags: Vec::new(),
            layers: vec![Layer {
                source: LayerSource::file(path),
                media_type: String::new(),
                diff_id: None,
            }],
            keep_alive: None,
        }
    };
    image.keep_alive = temporary;
    Ok(image)
}

/// Files of an archive or layout: read small ones, locate large ones.
trait Store {
    /// Returns the archive or directory, for messages.
    fn origin(&self) -> &Path;
    /// Locates the member at `path` (relative, `/`-separated), or returns `None`.
    fn locate(&self, path: &str) -> Option<LayerSource>;

    fn contains(&self, path: &str) -> bool {
        self.locate(path).is_some()
    }

    fn source(&self, path: &str) -> Result<LayerSource, ImportError> {
        self.locate(path)
            .ok_or_else(|| invalid(self.origin(), format!("{path} is missing")))
    }

    /// Reads the member at `path` whole, up to 16 MiB.
    fn read(&self, path: &str) -> Result<Vec<u8>, ImportError> {
        let source = self.source(path)?;
        let mut file = File::open(&source.path).map_err(|e| io_error(&source.path, e))?;
        file.seek(SeekFrom::Start(source.offset))
            .map_err(|e| io_error(&source.path, e))?;
        let limit = source.len.unwrap_or(u64::MAX).min(MAX_JSON_BYTES + 1);
        let mut data = Vec::new();
        file.take(limit)
            .read_to_end(&mut data)
            .map_err(|e| io_error(&source.path, e))?;
        if data.len() as u64 > MAX_JSON_BYTES {
            return Err(invalid(
                self.origin(),
                format!("{path} is larger than {MAX_JSON_BYTES} bytes"),
            ));
        }
        Ok(data)
    }

    fn read_json<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T, ImportError> {
        let data = self.read(path)?;
        serde_json::from_slice(&data)
            .map_err(|e| invalid(self.origin(), format!("{path} is not valid: {e}")))
    }
}

/// An OCI layout directory.
struct DirStore {
    root: PathBuf,
}

impl DirStore {
    fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }
}

impl Store for DirStore {
    fn origin(&self) -> &Path {
        &self.root
    }

    fn locate(&self, path: &str) -> Option<LayerSource> {
        let relative = normalize_member(path)?;
        let full = self.root.join(relative);
        full.is_file().then(|| LayerSource::file(full))
    }
}

/// A tar archive whose regular members are indexed by path.
struct TarStore {
    archive: PathBuf,
    members: HashMap<String, (u64, u64)>,
    links: HashMap<String, String>,
}

impl TarStore {
    /// Indexes every member of the tar at `archive` without reading data.
    fn index(archive: &Path) -> Result<Self, ImportError> {
        let file = File::open(archive).map_err(|e| io_error(archive, e))?;
        let mut tar = tar::Archive::new(file);
        let mut members = HashMap::new();
        let mut links = HashMap::new();
        let entries = tar
            .entries_with_seek()
            .map_err(|e| invalid(archive, format!("not a tar archive: {e}")))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| invalid(archive, format!("not a valid tar archive: {e}")))?;
            let Some(name) = normalize_member(&String::from_utf8_lossy(&entry.path_bytes())) else {
                continue;
            };
            let kind = entry.header().entry_type();
            if kind.is_file() {
                members.insert(name, (entry.raw_file_position(), entry.size()));
            } else if kind.is_symlink() || kind.is_hard_link() {
                if let Some(target) = entry.link_name_bytes() {
                    let target = String::from_utf8_lossy(&target).into_owned();
                    // Symlink targets are relative to the link's directory,
                    // hard link targets to the archive root.
                    let base = if kind.is_symlink() {
                        name.rsplit_once('/').map_or("", |(dir, _)| dir)
                    } else {
                        ""
                    };
                    if let Some(resolved) = normalize_member(&format!("{base}/{target}")) {
                        links.insert(name, resolved);
                    }
                }
            }
        }
        Ok(Self {
            archive: archive.to_path_buf(),
            members,
            links,
        })
    }
}

impl Store for TarStore {
    fn origin(&self) -> &Path {
        &self.archive
    }

    fn locate(&self, path: &str) -> Option<LayerSource> {
        let mut name = normalize_member(path)?;
        // Old `docker save` archives link a repeated layer to its first copy.
        for _ in 0..8 {
            if let Some(&(offset, len)) = self.members.get(&name) {
                return Some(LayerSource {
                    path: self.archive.clone(),
                    offset,
                    len: Some(len),
                });
            }
            name = self.links.get(&name)?.clone();
        }
        None
    }
}

/// Makes a member path relative and clean; returns `None` when it leaves
/// the archive root (`..` past the top) or names the root.
fn normalize_member(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[derive(Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    annotations: HashMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// Reads a `docker save` archive: `manifest.json` lists each image's
/// config file, tags and layer tars, oldest first.
fn import_docker_archive(
    store: &TarStore,
    tag: Option<&str>,
) -> Result<ImportedImage, ImportError> {
    let origin = store.origin();
    let entries: Vec<DockerManifestEntry> = store.read_json("manifest.json")?;
    let tags_of = |entry: &DockerManifestEntry| entry.repo_tags.clone().unwrap_or_default();
    let available = || {
        let all: Vec<String> = entries.iter().flat_map(tags_of).collect();
        if all.is_empty() {
            "no tags".to_string()
        } else {
            all.join(", ")
        }
    };
    let entry = match tag {
        Some(tag) => entries
            .iter()
            .find(|entry| {
                tags_of(entry)
                    .iter()
                    .any(|t| t == tag || t.ends_with(&format!("/{tag}")))
            })
            .ok_or_else(|| ImportError::TagNotFound {
                path: origin.to_path_buf(),
                tag: tag.into(),
                available: available(),
            })?,
        None if entries.len() == 1 => &entries[0],
        None => {
            return Err(ImportError::Ambiguous {
                path: origin.to_path_buf(),
                count: entries.len(),
                available: available(),
            })
        }
    };

    let raw_config = store.read(&entry.config)?;
    let config = parse_config(&raw_config, origin)?;
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != entry.layers.len() {
        return Err(invalid(
            origin,
            format!(
                "manifest.json lists {} layers but the config has {} diff_ids",
                entry.layers.len(),
                diff_ids.len()
            ),
        ));
    }
    let mut layers = Vec::new();
    for (path, diff_id) in entry.layers.iter().zip(diff_ids) {
        layers.push(Layer {
            source: store.source(path)?,
            media_type: String::new(),
            diff_id: Some(diff_id.to_string()),
        });
    }

    Ok(ImportedImage {
        format: ImportFormat::DockerArchive,
        digest: Some(ImageDigest::of(&raw_config)),
        config: Some(config),
        raw_config: Some(raw_config),
        tags: tags_of(entry),
        layers,
        keep_alive: None,
    })
}

/// Reads an OCI image layout: `index.json` names the manifests (picked by
/// the `org.opencontainers.image.ref.name` annotation, and by platform
/// linux/amd64 inside a nested index), each blob under `blobs/sha256/`.
fn import_oci_layout(
    store: &dyn StoreDyn,
    tag: Option<&str>,
) -> Result<ImportedImage, ImportError> {
    let origin = store.origin_dyn().to_path_buf();
    let layout = store.read_dyn("oci-layout")?;
    let layout: serde_json::Value = serde_json::from_slice(&layout)
        .map_err(|e| invalid(&origin, format!("oci-layout is not valid: {e}")))?;
    if layout.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
        return Err(invalid(
            &origin,
            "oci-layout does not declare imageLayoutVersion 1.0.0".into(),
        ));
    }
    let index: Index = parse_json(&store.read_dyn("index.json")?, "index.json", &origin)?;

    let ref_name = |d: &Descriptor| d.annotations.get(REF_NAME_ANNOTATION).cloned();
    let available = || {
        let names: Vec<String> = index.manifests.iter().filter_map(ref_name).collect();
        if names.is_empty() {
            "no tags".to_string()
        } else {
            names.join(", ")
        }
    };
    let chosen = match tag {
        Some(tag) => index
            .manifests
            .iter()
            .find(|d| ref_name(d).as_deref() == Some(tag))
            .ok_or_else(|| ImportError::TagNotFound {
                path: origin.clone(),
                tag: tag.into(),
                available: available(),
            })?,
        None if index.manifests.len() == 1 => &index.manifests[0],
        None => {
            return Err(ImportError::Ambiguous {
                path: origin.clone(),
                count: index.manifests.len(),
                available: available(),
            })
        }
    };
    let tags = ref_name(chosen).into_iter().collect();

    let mut descriptor_digest = chosen.digest.clone();
    let mut media_type = chosen.media_type.clone();
    let mut manifest_bytes = read_blob(store, &descriptor_digest, &origin)?;
    for _ in 0..4 {
        if media_type != OCI_INDEX && media_type != DOCKER_MANIFEST_LIST {
            break;
        }
        let nested: Index = parse_json(&manifest_bytes, &descriptor_digest, &origin)?;
        let platform = nested
            .manifests
            .iter()
            .find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
            })
            .ok_or_else(|| {
                invalid(
                    &origin,
                    format!("index {descriptor_digest} has no linux/amd64 manifest"),
                )
            })?;
        descriptor_digest = platform.digest.clone();
        media_type = platform.media_type.clone();
        manifest_bytes = read_blob(store, &descriptor_digest, &origin)?;
    }

    let manifest: Manifest = parse_json(&manifest_bytes, &descriptor_digest, &origin)?;
    let raw_config = read_blob(store, &manifest.config.digest, &origin)?;
    let config = parse_config(&raw_config, &origin)?;
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != manifest.layers.len() {
        return Err(invalid(
            &origin,
            format!(
                "manifest {descriptor_digest} lists {} layers but its config has {} diff_ids",
                manifest.layers.len(),
                diff_ids.len()
            ),
        ));
    }
    let mut layers = Vec::new();
    for (descriptor, diff_id) in manifest.layers.iter().zip(diff_ids) {
        layers.push(Layer {
            source: store.source_dyn(&blob_path(&descriptor.digest, &origin)?)?,
            media_type: descriptor.media_type.clone(),
            diff_id: Some(diff_id.to_string()),
        });
    }

    Ok(ImportedImage {
        format: ImportFormat::OciLayout,
        digest: Some(ImageDigest::of(&manifest_bytes)),
        config: Some(config),
        raw_config: Some(raw_config),
        tags,
        layers,
        keep_alive: None,
    })
}

/// Object-safe access to a [`Store`], so one function reads layouts from
/// directories and tars.
trait StoreDyn {
    fn origin_dyn(&self) -> &Path;
    fn read_dyn(&self, path: &str) -> Result<Vec<u8>, ImportError>;
    fn source_dyn(&self, path: &str) -> Result<LayerSource, ImportError>;
}

impl<S: Store> StoreDyn for S {
    fn origin_dyn(&self) -> &Path {
        self.origin()
    }
    fn read_dyn(&self, path: &str) -> Result<Vec<u8>, ImportError> {
        self.read(path)
    }
    fn source_dyn(&self, path: &str) -> Result<LayerSource, ImportError> {
        self.source(path)
    }
}

/// Maps a valid digest to its layout path, `blobs/sha256/HEX`.
fn blob_path(digest: &str, origin: &Path) -> Result<String, ImportError> {
    let hex_digits = digest
        .strip_prefix("sha256:")
        .filter(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        })
        .ok_or_else(|| {
            invalid(
                origin,
                format!("invalid digest {digest:?}: expected sha256: and 64 lowercase hex digits"),
            )
        })?;
    Ok(format!("blobs/sha256/{hex_digits}"))
}

/// Reads a small blob and checks its sha256 against `digest`.
fn read_blob(store: &dyn StoreDyn, digest: &str, origin: &Path) -> Result<Vec<u8>, ImportError> {
    let data = store.read_dyn(&blob_path(digest, origin)?)?;
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
    if actual != digest {
        return Err(invalid(
            origin,
            format!("blob {digest} has the digest {actual}; the layout is corrupt"),
        ));
    }
    Ok(data)
}

fn parse_json<T: for<'de> Deserialize<'de>>(
    data: &[u8],
    what: &str,
    origin: &Path,
) -> Result<T, ImportError> {
    serde_json::from_slice(data).map_err(|e| invalid(origin, format!("{what} is not valid: {e}")))
}

fn parse_config(config: &[u8], origin: &Path) -> Result<ImageConfig, ImportError> {
    parse_json(config, "the image config", origin)
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn io_error(path: &Path, source: io::Error) -> ImportError {
    ImportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Builds an [`ImportError::Invalid`]. Reasons often quote bytes of the
/// input (tar header fields, member names), so control characters are
/// escaped to keep them from acting on the terminal, and a long reason is
/// cut short.
fn invalid(path: &Path, reason: String) -> ImportError {
    ImportError::Invalid {
        path: path.to_path_buf(),
        reason: printable(&reason),
    }
}

/// Maximum characters of an error reason kept by [`printable`].
const MAX_REASON_CHARS: usize = 300;

/// Escapes control characters in `text` as Rust does in string literals and
/// cuts it to [`MAX_REASON_CHARS`] characters.
fn printable(text: &str) -> String {
    let mut out = String::new();
    for (count, c) in text.chars().enumerate() {
        if count == MAX_REASON_CHARS {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
