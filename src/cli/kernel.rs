//! `banger kernel`: the catalog of kernel bundles that VMs boot from.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde::Serialize;

use super::{Context, Failure};
use crate::error::ExitCode;
use crate::image::auth::default_docker_config;
use crate::image::blob_cache::BlobCache;
use crate::image::reference::ImageReference;
use crate::kernel::registry::{self, RegistryOptions};
use crate::kernel::{self, Catalog, ImportSource, KernelInfo, NoVms};
use crate::store::config::parse_registry;

/// The `banger kernel` subcommands.
#[derive(Debug, Subcommand)]
pub enum KernelCommand {
    /// Import a kernel image (bzImage or ELF vmlinux), a Debian or Ubuntu
    /// kernel package (.deb), a bundle tarball from `banger kernel export`,
    /// or a directory (a bundle, or a root with boot/vmlinuz-* and lib/modules).
    Import(ImportArgs),

    /// Pull a kernel bundle stored as an OCI artifact in a registry.
    Pull(PullArgs),

    /// Push a kernel bundle to a registry as an OCI artifact.
    Push(PushArgs),

    /// List kernels: name, version, whether it has modules and an initrd.
    #[command(visible_alias = "list")]
    Ls,

    /// Print a kernel's record as JSON: version, file paths and the guest
    /// path of its modules.
    Inspect {
        /// Kernel name.
        name: String,
    },

    /// Remove kernels from the catalog.
    #[command(visible_alias = "remove")]
    Rm {
        /// Kernel names.
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,

        /// Remove a kernel even while VMs are configured to boot it.
        #[arg(short, long)]
        force: bool,
    },

    /// Set the kernel that `vm run` uses without --kernel, or print it when
    /// NAME is omitted.
    Default {
        /// Kernel name.
        name: Option<String>,
    },

    /// Write a kernel bundle to a tarball that `banger kernel import` reads.
    Export {
        /// Kernel name.
        name: String,

        /// Tarball to write, or `-` for standard output; a file is replaced
        /// if it exists.
        #[arg(short, long, value_name = "FILE.tar")]
        output: PathBuf,
    },
}

/// Options of `banger kernel import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Kernel image, .deb package, bundle tarball or directory.
    #[arg(value_name = "FILE|DIR")]
    pub source: PathBuf,

    /// Modules tree for a bare kernel image: a directory, tar or .deb holding
    /// lib/modules/VERSION (its version must match the kernel's).
    #[arg(long, value_name = "DIR|TAR|DEB")]
    pub modules: Option<PathBuf>,

    /// Initial ramdisk to boot with a bare kernel image.
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,

    /// Catalog name [default: the kernel version read from the image].
    #[arg(long)]
    pub name: Option<String>,
}

/// Options of `banger kernel pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Registry reference of the kernel artifact.
    #[arg(value_name = "REF")]
    pub reference: String,

    /// Catalog name [default: the kernel version recorded in the bundle].
    #[arg(long)]
    pub name: Option<String>,

    /// Reach this registry (HOST[:PORT]) over plain HTTP; repeatable. Adds to
    /// the `insecure_registries` setting.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]", value_parser = parse_registry)]
    pub insecure_registries: Vec<String>,
}

/// Options of `banger kernel push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Kernel name in the catalog.
    pub name: String,

    /// Registry reference to push to.
    #[arg(value_name = "REF")]
    pub reference: String,

    /// Reach this registry (HOST[:PORT]) over plain HTTP; repeatable. Adds to
    /// the `insecure_registries` setting.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]", value_parser = parse_registry)]
    pub insecure_registries: Vec<String>,
}

/// Runs one `banger kernel` subcommand.
pub fn run(command: KernelCommand, context: &Context) -> Result<(), Failure> {
    let catalog = Catalog::from_paths(&context.config.paths)
        .with_configured_default(context.config.default_kernel.clone());
    match command {
        KernelCommand::Import(args) => run_import(&catalog, &args),
        KernelCommand::Pull(args) => run_pull(&catalog, &args, context),
        KernelCommand::Push(args) => run_push(&catalog, &args, context),
        KernelCommand::Ls => run_ls(&catalog, context),
        KernelCommand::Inspect { name } => run_inspect(&catalog, &name),
        KernelCommand::Rm { names, force } => run_rm(&catalog, &names, force),
        KernelCommand::Default { name } => run_default(&catalog, name.as_deref()),
        KernelCommand::Export { name, output } => run_export(&catalog, &name, &output),
    }
}

fn run_import(catalog: &Catalog, args: &ImportArgs) -> Result<(), Failure> {
    let source = if args.modules.is_some() || args.initrd.is_some() {
        // --modules and --initrd belong to a bare kernel image.
        match ImportSource::detect(&args.source)? {
            ImportSource::Image { kernel, .. } => ImportSource::Image {
                kernel,
                modules: args.modules.clone(),
                initrd: args.initrd.clone(),
            },
            _ => {
                return Err(Failure::new(
                    ExitCode::Usage,
                    format!(
                        "--modules and --initrd go with a kernel image, but `{}` is a package or bundle that carries its own",
                        args.source.display()
                    ),
                ))
            }
        }
    } else {
        ImportSource::detect(&args.source)?
    };

    let entry = catalog.import(&source, args.name.as_deref())?;
    println!(
        "{} {} {}",
        entry.name,
        entry.manifest.version,
        entry.dir.display()
    );
    Ok(())
}

fn registry_options(extra_insecure: &[String], context: &Context) -> RegistryOptions {
    let mut insecure_registries = context.config.insecure_registries.clone();
    insecure_registries.extend(extra_insecure.iter().cloned());
    RegistryOptions {
        insecure_registries,
        docker_config: default_docker_config(),
    }
}

fn parse_reference(input: &str) -> Result<ImageReference, Failure> {
    ImageReference::parse(input).map_err(|error| Failure::new(ExitCode::Usage, error.to_string()))
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            Failure::new(
                ExitCode::General,
                format!("failed to start the async runtime: {error}"),
            )
        })
}

fn run_pull(catalog: &Catalog, args: &PullArgs, context: &Context) -> Result<(), Failure> {
    let reference = parse_reference(&args.reference)?;
    let options = registry_options(&args.insecure_registries, context);
    let cache =
        BlobCache::open(context.config.paths.cache.join("oci")).map_err(kernel::Error::from)?;

    let entry = runtime()?.block_on(registry::pull(
        catalog,
        &reference,
        args.name.as_deref(),
        &cache,
        &options,
    ))?;
    println!(
        "{} {} {}",
        entry.name,
        entry.manifest.version,
        entry.dir.display()
    );
    Ok(())
}

fn run_push(catalog: &Catalog, args: &PushArgs, context: &Context) -> Result<(), Failure> {
    let reference = parse_reference(&args.reference)?;
    let options = registry_options(&args.insecure_registries, context);

    let manifest_url =
        runtime()?.block_on(registry::push(catalog, &args.name, &reference, &options))?;
    println!("{reference} {manifest_url}");
    Ok(())
}

fn run_ls(catalog: &Catalog, context: &Context) -> Result<(), Failure> {
    let infos = catalog
        .list()?
        .iter()
        .map(|entry| catalog.inspect(&entry.name))
        .collect::<Result<Vec<KernelInfo>, _>>()?;
    if context.json {
        return print_json(&infos);
    }

    let mut rows =
        vec![["NAME", "VERSION", "FORMAT", "MODULES", "INITRD", "DEFAULT"].map(String::from)];
    for info in &infos {
        let yes_no = |flag: bool| if flag { "yes" } else { "no" }.to_string();
        rows.push([
            info.name.clone(),
            info.version.clone(),
            format!("{:?}", info.image_format).to_lowercase(),
            yes_no(info.modules.is_some()),
            yes_no(info.initrd.is_some()),
            if info.default {
                "*".to_string()
            } else {
                String::new()
            },
        ]);
    }
    print_table(&rows);
    Ok(())
}

fn run_inspect(catalog: &Catalog, name: &str) -> Result<(), Failure> {
    print_json(&catalog.inspect(name)?)
}

fn run_rm(catalog: &Catalog, names: &[String], force: bool) -> Result<(), Failure> {
    // NOTE: no VM records exist yet; the VM store will list each kernel's users here.
    let mut failures = Vec::new();
    for name in names {
        match catalog.remove(name, force, &NoVms) {
            Ok(()) => println!("{name}"),
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

fn run_default(catalog: &Catalog, name: Option<&str>) -> Result<(), Failure> {
    if let Some(name) = name {
        catalog.set_default(name)?;
        if let Some(configured) = catalog.configured_default().filter(|c| *c != name) {
            tracing::warn!(
                "stored `{name}` as the default kernel, but the default_kernel setting (BANGER_DEFAULT_KERNEL or the config file) names `{configured}` and overrides it; unset that setting for `{name}` to take effect"
            );
        }
        return Ok(());
    }
    // Without NAME, print the kernel `vm run` would boot.
    let entry = catalog.resolve(None)?;
    println!("{}", entry.name);
    Ok(())
}

fn run_export(catalog: &Catalog, name: &str, output: &Path) -> Result<(), Failure> {
    if output == Path::new("-") {
        return export_to_stdout(catalog, name);
    }
    let write_failure = |error: std::io::Error| {
        Failure::new(
            ExitCode::General,
            format!("failed to write `{}`: {error}", output.display()),
        )
    };
    // Write next to the output and rename, so a failed export leaves no
    // partial tarball under the requested name.
    let dir = match output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let temp = tempfile::NamedTempFile::new_in(dir).map_err(write_failure)?;
    let mut writer = BufWriter::new(temp.as_file());
    catalog.export(name, &mut writer)?;
    writer.flush().map_err(write_failure)?;
    drop(writer);
    temp.persist(output)
        .map_err(|error| write_failure(error.error))?;
    Ok(())
}

/// Writes the bundle tarball of `name` to standard output, unless that is
/// a terminal.
fn export_to_stdout(catalog: &Catalog, name: &str) -> Result<(), Failure> {
    let stdout = std::io::stdout();
    if stdout.is_terminal() {
        return Err(Failure::new(
            ExitCode::Usage,
            "cannot write a tarball to a terminal; redirect standard output or pass -o FILE.tar",
        ));
    }
    let mut writer = BufWriter::new(stdout.lock());
    catalog.export(name, &mut writer)?;
    writer.flush().map_err(|error| {
        Failure::new(
            ExitCode::General,
            format!("failed to write to standard output: {error}"),
        )
    })
}

fn print_json<T: Serialize>(value: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|error| {
        Failure::new(ExitCode::General, format!("failed to encode JSON: {error}"))
    })?;
    println!("{text}");
    Ok(())
}

/// Prints rows as columns separated by two spaces, the first row as header.
fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0usize; N];
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
