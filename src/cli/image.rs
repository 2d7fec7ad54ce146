//! `banger image`: pull, import, list, inspect, remove and export images.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::{Context, Failure};
use crate::error::{Classify, ExitCode};
use crate::image::blob_cache::BlobCache;
use crate::image::build::{build_rootfs, BuildError, Headroom};
use crate::image::flatten::{FlattenError, Layer, LayerSource};
use crate::image::import::{import_path, import_reader, ImportedImage};
use crate::image::model::{Digest, ImageConfig, LayerBlob, RootFs};
use crate::image::platform::Platform as ImagePlatform;
use crate::image::progress::{Progress, ProgressMode};
use crate::image::reference::ImageReference;
use crate::image::registry::{pull, PullOptions};
use crate::image::{PullError, PulledImage};
use crate::store::config::{parse_registry, Platform};
use crate::store::images::{BuildFailure, ImageRecord, ImageStore, NewImage, Removal};

/// The `banger image` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image from a registry and build its ext4 root filesystem.
    Pull(PullArgs),

    /// Import a `docker save` archive, an OCI layout (directory or tar) or a
    /// root filesystem tar.
    Import(ImportArgs),

    /// List images: repository, tag, digest, size and creation time.
    #[command(visible_alias = "list")]
    Ls,

    /// Print an image's record and its config (entrypoint, cmd, env, user) as JSON.
    Inspect {
        /// Image reference or digest.
        #[arg(value_name = "REF")]
        reference: String,
    },

    /// Remove images.
    #[command(visible_alias = "remove")]
    Rm {
        /// Image references or digests.
        #[arg(value_name = "REF", required = true)]
        references: Vec<String>,
    },

    /// Delete cached blobs and built images that no tag refers to.
    Prune,

    /// Copy an image's ext4 root filesystem to a file.
    Export(ExportArgs),
}

/// Options of `banger image pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image reference; short names resolve as Docker does (`debian:bookworm`
    /// is `docker.io/library/debian:bookworm`).
    #[arg(value_name = "REF")]
    pub reference: String,

    /// Platform to select from a multi-platform image, as OS/ARCH[/VARIANT]
    /// [default: the `platform` setting, linux/amd64].
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<Platform>,

    /// Reach this registry (HOST[:PORT]) over plain HTTP; repeatable. Adds to
    /// the `insecure_registries` setting.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]", value_parser = parse_registry)]
    pub insecure_registries: Vec<String>,

    /// Print no progress, only errors.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Options of `banger image import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Archive or directory to import; `-` reads a tar from stdin.
    #[arg(value_name = "FILE|-")]
    pub source: PathBuf,

    /// Name and tag to give the image (NAME[:TAG]) [default: the name
    /// recorded in the archive, if any].
    #[arg(long, value_name = "NAME[:TAG]")]
    pub name: Option<String>,

    /// Image to take from an archive or OCI layout that contains several, by
    /// the tag recorded in it (`RepoTags` or the OCI ref name annotation).
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
}

/// Options of `banger image export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Image reference or digest.
    #[arg(value_name = "REF")]
    pub reference: String,

    /// File to write the ext4 image to; it is replaced if it exists.
    #[arg(short, long, value_name = "FILE.ext4")]
    pub output: PathBuf,
}

/// Runs one `banger image` subcommand.
pub fn run(command: ImageCommand, context: &Context) -> Result<(), Failure> {
    match command {
        ImageCommand::Pull(args) => run_pull(&args, context),
        ImageCommand::Import(args) => run_import(&args, context),
        ImageCommand::Ls => run_ls(context),
        ImageCommand::Inspect { reference } => run_inspect(&reference, context),
        ImageCommand::Rm { references } => run_rm(&references, context),
        ImageCommand::Prune => run_prune(context),
        ImageCommand::Export(args) => run_export(&args, context),
    }
}

fn open_cache(context: &Context) -> Result<BlobCache, Failure> {
    let root = context.config.paths.cache.join("oci");
    Ok(BlobCache::open(root).map_err(PullError::from)?)
}

fn open_store(context: &Context) -> Result<ImageStore, Failure> {
    Ok(ImageStore::open(&context.config.paths.data)?)
}

fn run_pull(args: &PullArgs, context: &Context) -> Result<(), Failure> {
    let reference = ImageReference::parse(&args.reference).map_err(PullError::from)?;
    let platform = args.platform.as_ref().unwrap_or(&context.config.platform);
    let mut insecure_registries = context.config.insecure_registries.clone();
    insecure_registries.extend(args.insecure_registries.iter().cloned());
    let options = PullOptions {
        platform: ImagePlatform {
            os: platform.os.clone(),
            architecture: platform.architecture.clone(),
            variant: platform.variant.clone(),
        },
        insecure_registries,
        ..PullOptions::default()
    };

    let cache = open_cache(context)?;
    let store = open_store(context)?;
    let _pull_guard = store.begin_pull()?;
    let _cache_guard = cache.lock_for_pull().map_err(PullError::from)?;
    let progress = Progress::new(ProgressMode::detect(args.quiet));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            Failure::new(
                ExitCode::General,
                format!("failed to start the async runtime: {error}"),
            )
        })?;
    let pulled = runtime.block_on(pull(&reference, &options, &cache, &progress))?;

    // A reference pinned by digest names that digest only, as in Docker: its
    // tag selects nothing and must not show up as a tag of the image.
    let stored_name = match reference.digest() {
        Some(digest) => reference.with_digest(digest).to_string(),
        None => reference.to_string(),
    };
    let record = store.install(
        &pulled,
        Some(&stored_name),
        &options.platform.to_string(),
        |rootfs| {
            progress.message(&format!("{reference}: building the ext4 root filesystem"));
            build_pulled(&pulled, &cache, rootfs)
        },
    )?;
    println!(
        "{reference} {} {}",
        record.manifest_digest,
        store.rootfs_path(&record.manifest_digest).display()
    );
    Ok(())
}

/// Flattens the layers of `pulled` from the cache and writes the ext4 root
/// filesystem to `rootfs`.
fn build_pulled(
    pulled: &PulledImage,
    cache: &BlobCache,
    rootfs: &Path,
) -> Result<(), BuildFailure> {
    let layers = Layer::from_pulled(pulled, cache).map_err(|error| BuildFailure {
        message: error.to_string(),
        code: error.exit_code(),
    })?;
    let identity = pulled.manifest_digest.to_string();
    build_rootfs(&layers, &identity, Headroom::default(), rootfs).map_err(|error| {
        let mut message = error.to_string();
        if matches!(
            error,
            BuildError::Flatten(FlattenError::Tar { .. } | FlattenError::DiffIdMismatch { .. })
        ) && error.exit_code() != ExitCode::HostResource
        {
            message.push_str(&evict_corrupt_layers(pulled, cache));
        }
        BuildFailure {
            message,
            code: error.exit_code(),
        }
    })?;
    Ok(())
}

/// Re-hashes the cached layer blobs of `pulled` after its layers failed to
/// flatten, and removes those whose bytes no longer match their digest: they
/// were verified when stored, so they changed on disk, and the next pull
/// fetches them again. Returns text for the error message naming what was
/// removed, or nothing when every blob is intact and the image itself is bad.
fn evict_corrupt_layers(pulled: &PulledImage, cache: &BlobCache) -> String {
    let mut notes = String::new();
    for layer in &pulled.layers {
        let path = cache.path(&layer.digest);
        match cache.verify(&layer.digest) {
            Ok(true) => {}
            Ok(false) => match cache.remove_blob(&layer.digest) {
                Ok(_) => notes.push_str(&format!(
                    "; cached blob {} (`{}`) is corrupt on disk and was removed from the cache, so pull the image again",
                    layer.digest,
                    path.display()
                )),
                Err(error) => notes.push_str(&format!(
                    "; cached blob {} (`{}`) is corrupt on disk but could not be removed ({error}); delete it and pull the image again",
                    layer.digest,
                    path.display()
                )),
            },
            Err(error) => notes.push_str(&format!(
                "; cached blob {} could not be checked: {error}",
                layer.digest
            )),
        }
    }
    notes
}

fn run_import(args: &ImportArgs, context: &Context) -> Result<(), Failure> {
    let name = match &args.name {
        Some(name) => Some(
            ImageReference::parse(name)
                .map_err(PullError::from)?
                .to_string(),
        ),
        None => None,
    };
    let store = open_store(context)?;
    let _import_guard = store.begin_pull()?;

    // Standard input and compressed archives are copied next to the store,
    // so that the spool and the copy share the filesystem the image lands on.
    let scratch = context.config.paths.data.join("images");
    let tag = args.tag.as_deref();
    let imported = if args.source.as_os_str() == "-" {
        import_reader(std::io::stdin().lock(), tag, &scratch)?
    } else {
        import_path(&args.source, tag, &scratch)?
    };
    let (new_image, layers) = describe_import(&imported)?;

    let reference = name.or_else(|| imported.tags.first().cloned());
    let platform = platform_of(&new_image.config);
    let record = store.install(new_image, reference.as_deref(), &platform, |rootfs| {
        let identity = rootfs_identity(&imported, &layers);
        build_rootfs(&layers, &identity, Headroom::default(), rootfs).map_err(|error| {
            BuildFailure {
                message: error.to_string(),
                code: error.exit_code(),
            }
        })?;
        Ok(())
    })?;
    println!(
        "{} {} {}",
        reference.as_deref().unwrap_or("<untagged>"),
        record.manifest_digest,
        store.rootfs_path(&record.manifest_digest).display()
    );
    Ok(())
}

/// Describes an imported image for the store, and returns its layers with
/// their diff_ids filled in. A root-filesystem tar has no config: it gets one
/// with the sha256 of the tar as its only diff_id, and the digest of that
/// config identifies the image.
fn describe_import(imported: &ImportedImage) -> Result<(NewImage, Vec<Layer>), Failure> {
    let mut layers = imported.layers.clone();
    let config = match &imported.config {
        Some(config) => config.clone(),
        None => {
            let mut diff_ids = Vec::with_capacity(layers.len());
            for layer in &mut layers {
                let diff_id = hash_layer_source(&layer.source)?;
                layer.diff_id = Some(diff_id.to_string());
                diff_ids.push(diff_id);
            }
            ImageConfig {
                architecture: std::env::consts::ARCH.replace("x86_64", "amd64"),
                os: "linux".to_owned(),
                rootfs: RootFs {
                    kind: "layers".to_owned(),
                    diff_ids,
                },
                ..ImageConfig::default()
            }
        }
    };
    let config_json = match &imported.raw_config {
        Some(raw) => raw.clone(),
        None => serde_json::to_vec(&config).map_err(|error| {
            Failure::new(
                ExitCode::General,
                format!("failed to encode the image config: {error}"),
            )
        })?,
    };
    let config_digest = Digest::of(&config_json);
    let digest = imported
        .digest
        .clone()
        .unwrap_or_else(|| config_digest.clone());
    // Imported layers never enter the blob cache, so they are recorded by
    // their uncompressed digests.
    let blobs = config
        .rootfs
        .diff_ids
        .iter()
        .zip(&layers)
        .map(|(diff_id, layer)| LayerBlob {
            digest: diff_id.clone(),
            media_type: if layer.media_type.is_empty() {
                "application/vnd.oci.image.layer.v1.tar".to_owned()
            } else {
                layer.media_type.clone()
            },
            size: layer.source.len.unwrap_or_else(|| {
                std::fs::metadata(&layer.source.path)
                    .map(|m| m.len().saturating_sub(layer.source.offset))
                    .unwrap_or(0)
            }),
        })
        .collect();
    let new_image = NewImage {
        digest,
        config_digest,
        config,
        layers: blobs,
    };
    Ok((new_image, layers))
}

/// Formats the platform of an image config as `os/arch[/variant]`.
fn platform_of(config: &ImageConfig) -> String {
    match &config.variant {
        Some(variant) => format!("{}/{}/{variant}", config.os, config.architecture),
        None => format!("{}/{}", config.os, config.architecture),
    }
}

/// Returns the seed of a reproducible build: the image digest when the source has
/// one, otherwise the diff_ids of its layers.
fn rootfs_identity(imported: &ImportedImage, layers: &[Layer]) -> String {
    match &imported.digest {
        Some(digest) => digest.to_string(),
        None => layers
            .iter()
            .filter_map(|layer| layer.diff_id.clone())
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// Hashes the bytes of an uncompressed layer source with sha256.
fn hash_layer_source(source: &LayerSource) -> Result<Digest, Failure> {
    use sha2::Digest as _;
    use std::io::{Read, Seek, SeekFrom};

    let failure = |error: std::io::Error| {
        Failure::new(
            ExitCode::General,
            format!("failed to read `{}`: {error}", source.path.display()),
        )
    };
    let mut file = std::fs::File::open(&source.path).map_err(failure)?;
    file.seek(SeekFrom::Start(source.offset)).map_err(failure)?;
    let mut reader: Box<dyn Read> = match source.len {
        Some(len) => Box::new(file.take(len)),
        None => Box::new(file),
    };
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = reader.read(&mut buffer).map_err(failure)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(Digest::from_sha256(&hasher.finalize()))
}

fn run_ls(context: &Context) -> Result<(), Failure> {
    let records = open_store(context)?.list()?;
    if context.json {
        print_json(&records)?;
        return Ok(());
    }

    let mut rows = vec![[
        "REPOSITORY".to_owned(),
        "TAG".to_owned(),
        "DIGEST".to_owned(),
        "SIZE".to_owned(),
        "CREATED".to_owned(),
    ]];
    for record in &records {
        let digest = record.manifest_digest.hex()[..12].to_owned();
        let size = format_size(record.rootfs_size);
        let created = record.created_text();
        for (repository, tag) in repository_and_tag(record) {
            rows.push([
                repository,
                tag,
                digest.clone(),
                size.clone(),
                created.clone(),
            ]);
        }
    }
    print_table(&rows);
    Ok(())
}

/// Splits each reference of `record` into repository and tag, with one
/// `<none>` row for an image without references.
fn repository_and_tag(record: &ImageRecord) -> Vec<(String, String)> {
    if record.references.is_empty() {
        return vec![("<none>".to_owned(), "<none>".to_owned())];
    }
    let mut rows: Vec<(String, String)> = Vec::new();
    for text in &record.references {
        let row = match ImageReference::parse(text) {
            // A digest-pinned reference has no tag to show.
            Ok(reference) if reference.digest().is_some() => (
                format!("{}/{}", reference.registry(), reference.repository()),
                "<none>".to_owned(),
            ),
            Ok(reference) => (
                format!("{}/{}", reference.registry(), reference.repository()),
                reference.tag().unwrap_or("<none>").to_owned(),
            ),
            Err(_) => (text.clone(), "<none>".to_owned()),
        };
        if !rows.contains(&row) {
            rows.push(row);
        }
    }
    rows
}

fn run_inspect(query: &str, context: &Context) -> Result<(), Failure> {
    let record = open_store(context)?.find(query)?;
    print_json(&record)
}

fn run_rm(queries: &[String], context: &Context) -> Result<(), Failure> {
    let store = open_store(context)?;
    let mut failures = Vec::new();
    for query in queries {
        match store.remove(query) {
            Ok(Removal::Untagged { reference }) => println!("untagged {reference}"),
            Ok(Removal::Deleted { digest }) => println!("deleted {digest}"),
            Err(error) => failures.push(Failure::from(error)),
        }
    }

    // Every failure is reported; the first one decides the exit code.
    let Some(first) = failures.first() else {
        return Ok(());
    };
    let messages: Vec<String> = failures.iter().map(ToString::to_string).collect();
    Err(Failure::new(first.exit_code(), messages.join("\nbanger: ")))
}

fn run_prune(context: &Context) -> Result<(), Failure> {
    let store = open_store(context)?;
    let cache = open_cache(context)?;
    let report = store.prune(&cache)?;
    if !report.leftovers_removed.is_empty() {
        println!(
            "removed {} leftover temporary and lock files",
            report.leftovers_removed.len()
        );
    }
    if !report.broken_removed.is_empty() {
        println!(
            "removed {} broken image directories",
            report.broken_removed.len()
        );
    }
    println!(
        "removed {} images and {} blobs, freed {}",
        report.images_removed.len(),
        report.blobs_removed.len(),
        format_size(report.bytes_freed)
    );
    Ok(())
}

fn run_export(args: &ExportArgs, context: &Context) -> Result<(), Failure> {
    let copied = open_store(context)?.export(&args.reference, &args.output)?;
    println!("{} ({})", args.output.display(), format_size(copied));
    Ok(())
}

fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|error| {
        Failure::new(ExitCode::General, format!("failed to format JSON: {error}"))
    })?;
    println!("{text}");
    Ok(())
}

fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

/// Formats a byte count with a binary unit, such as `63.2 MiB`.
fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_size_uses_binary_units() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(63 * 1024 * 1024), "63.0 MiB");
    }
}
