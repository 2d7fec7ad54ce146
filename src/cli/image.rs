//! `banger image`: pull, import, list, inspect, remove and export images.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::{not_implemented, Context, Failure};
use crate::error::ExitCode;
use crate::image::blob_cache::BlobCache;
use crate::image::platform::Platform as ImagePlatform;
use crate::image::progress::{Progress, ProgressMode};
use crate::image::reference::ImageReference;
use crate::image::registry::{pull, PullOptions};
use crate::image::PullError;
use crate::store::config::{parse_registry, Platform};
use crate::store::images::{BuildFailure, ImageRecord, ImageStore, Removal};

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

    /// Platform to select when the archive holds several, as OS/ARCH[/VARIANT]
    /// [default: the `platform` setting, linux/amd64].
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<Platform>,
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
        ImageCommand::Import(_) => not_implemented("image import"),
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

    let cache_root = cache.root().to_owned();
    let record = store.install(
        &pulled,
        &reference.to_string(),
        &options.platform.to_string(),
        |rootfs| build_rootfs(rootfs, &cache_root),
    )?;
    println!(
        "{reference} {} {}",
        record.manifest_digest,
        store.rootfs_path(&record.manifest_digest).display()
    );
    Ok(())
}

/// Builds the ext4 root filesystem of a pulled image at `rootfs`.
// TODO: call the flatten and ext4 build step here once it exists; until
// then a pull stops after caching and verifying the blobs.
fn build_rootfs(_rootfs: &Path, cache_root: &Path) -> Result<(), BuildFailure> {
    Err(BuildFailure {
        message: format!(
            "building the ext4 root filesystem is not implemented yet; the verified blobs are cached in {}",
            cache_root.display()
        ),
        code: ExitCode::NotImplemented,
    })
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
    record
        .references
        .iter()
        .map(|text| match ImageReference::parse(text) {
            Ok(reference) => (
                format!("{}/{}", reference.registry(), reference.repository()),
                reference.tag().unwrap_or("<none>").to_owned(),
            ),
            Err(_) => (text.clone(), "<none>".to_owned()),
        })
        .collect()
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
