//! Kernel bundles as OCI artifacts: `kernel push` uploads a bundle tarball
//! as the single layer of an artifact manifest, and `kernel pull` downloads
//! it through the verified blob cache and imports it.
//!
//! The artifact has its own media types, so that image tools do not mistake
//! it for a container image and banger does not import an image as a kernel.
//! The manifest's `artifactType` is [`ARTIFACT_TYPE`], its config is the
//! bundle's `bundle.json` ([`CONFIG_MEDIA_TYPE`]), and its one layer is the
//! tarball that `kernel export` writes ([`BUNDLE_MEDIA_TYPE`]).

use std::path::{Path, PathBuf};

use futures_util::StreamExt as _;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;

use super::catalog::{Catalog, KernelEntry};
use super::error::{Error, Result};
use super::import::ImportSource;
use crate::image::blob_cache::{BlobCache, BlobSlot};
use crate::image::model::Digest;
use crate::image::reference::ImageReference;

/// `artifactType` of a kernel bundle manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.banger.kernel.v1";
/// Media type of the config blob, the bundle's `bundle.json`.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.banger.kernel.config.v1+json";
/// Media type of the layer, an uncompressed bundle tarball.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.banger.kernel.bundle.v1.tar";

/// Settings of a push or pull.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Registries (`host` or `host:port`) reached over plain HTTP. Every
    /// other registry is reached over HTTPS only.
    pub insecure_registries: Vec<String>,
    /// Docker config with `auths`, or `None` for anonymous access.
    pub docker_config: Option<PathBuf>,
}

fn client_for(reference: &ImageReference, options: &RegistryOptions) -> oci_client::Client {
    let insecure = options
        .insecure_registries
        .iter()
        .any(|r| r == reference.registry() || r == reference.api_host());
    let protocol = if insecure {
        ClientProtocol::HttpsExcept(vec![reference.api_host().to_owned()])
    } else {
        ClientProtocol::Https
    };
    oci_client::Client::new(ClientConfig {
        protocol,
        ..ClientConfig::default()
    })
}

fn credentials(reference: &ImageReference, options: &RegistryOptions) -> Result<RegistryAuth> {
    crate::image::auth::credentials_for(reference.registry(), options.docker_config.as_deref())
        .map_err(|error| Error::Registry {
            reference: reference.to_string(),
            action: "read the registry credentials for",
            reason: error.to_string(),
        })
}

/// Pushes the kernel `name` to `reference` and returns the manifest URL
/// that the registry reports.
///
/// # Errors
/// [`Error::NotFound`] for an unknown kernel and [`Error::Registry`] when
/// the registry rejects the upload.
pub async fn push(
    catalog: &Catalog,
    name: &str,
    reference: &ImageReference,
    options: &RegistryOptions,
) -> Result<String> {
    let entry = catalog.get(name)?;
    let manifest_path = entry.dir.join(super::bundle::MANIFEST);
    let config_bytes = std::fs::read(&manifest_path).map_err(Error::io("read", &manifest_path))?;

    // NOTE: oci-client uploads from memory, so the whole tarball (about
    // 100 MiB for a distribution kernel with modules) is held in memory.
    let mut tarball = Vec::new();
    catalog.export(name, &mut tarball)?;

    let layer = ImageLayer::new(tarball, BUNDLE_MEDIA_TYPE.to_string(), None);
    let config = Config::new(config_bytes, CONFIG_MEDIA_TYPE.to_string(), None);
    let mut manifest = OciImageManifest::build(std::slice::from_ref(&layer), &config, None);
    manifest.artifact_type = Some(ARTIFACT_TYPE.to_string());

    let auth = credentials(reference, options)?;
    let client = client_for(reference, options);
    let response = client
        .push(reference.as_oci(), &[layer], config, &auth, Some(manifest))
        .await
        .map_err(|error| Error::Registry {
            reference: reference.to_string(),
            action: "push",
            reason: error.to_string(),
        })?;
    tracing::info!(kernel = %name, reference = %reference, manifest = %response.manifest_url, "pushed kernel");
    Ok(response.manifest_url)
}

/// Pulls the kernel bundle artifact at `reference` into `cache` and imports
/// it under `name`, or under its version when `name` is `None`.
///
/// # Errors
/// [`Error::NotAKernelArtifact`] when the manifest is not a kernel bundle,
/// [`Error::Registry`] when the registry fails, [`Error::Cache`] when the
/// blob does not match its digest, and the import errors of
/// [`Catalog::import`].
pub async fn pull(
    catalog: &Catalog,
    reference: &ImageReference,
    name: Option<&str>,
    cache: &BlobCache,
    options: &RegistryOptions,
) -> Result<KernelEntry> {
    let registry_error = |action: &'static str| {
        move |error: oci_client::errors::OciDistributionError| Error::Registry {
            reference: reference.to_string(),
            action,
            reason: error.to_string(),
        }
    };
    let auth = credentials(reference, options)?;
    let client = client_for(reference, options);
    // Held until the bundle is imported, so that `image prune` neither
    // deletes the blob nor its temporary file while this pull uses them.
    let _cache_lock = cache.lock_for_pull()?;

    let (manifest, manifest_digest) = client
        .pull_image_manifest(reference.as_oci(), &auth)
        .await
        .map_err(registry_error("fetch the manifest of"))?;
    let layer = check_artifact(reference, &manifest)?;
    let digest: Digest = layer
        .digest
        .parse()
        .map_err(|_| Error::NotAKernelArtifact {
            reference: reference.to_string(),
            reason: format!("its layer digest `{}` is not a sha256 digest", layer.digest),
        })?;
    let size = u64::try_from(layer.size).map_err(|_| Error::NotAKernelArtifact {
        reference: reference.to_string(),
        reason: format!("its layer size {} is negative", layer.size),
    })?;

    // The blob is published in the cache only after its size and sha256
    // match the descriptor.
    match cache.begin_write(&digest, size).await? {
        BlobSlot::Cached => {}
        BlobSlot::Writer(mut writer) => {
            let mut stream = client
                .pull_blob_stream(reference.as_oci(), &layer)
                .await
                .map_err(registry_error("download the bundle of"))?;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|error| Error::Registry {
                    reference: reference.to_string(),
                    action: "download the bundle of",
                    reason: error.to_string(),
                })?;
                writer.write(&chunk)?;
            }
            writer.finish()?;
        }
    }
    tracing::debug!(reference = %reference, manifest = %manifest_digest, bundle = %digest, "kernel bundle cached");

    let blob = cache.path(&digest);
    let source = ImportSource::Bundle(blob.clone());
    // Errors about the bundle name the reference, not the cached blob.
    catalog
        .import(&source, name)
        .map_err(|error| error.naming_input(&blob, Path::new(&reference.to_string())))
}

/// Checks that `manifest` describes a kernel bundle and returns its layer.
fn check_artifact(
    reference: &ImageReference,
    manifest: &OciImageManifest,
) -> Result<oci_client::manifest::OciDescriptor> {
    let not_kernel = |reason: String| Error::NotAKernelArtifact {
        reference: reference.to_string(),
        reason,
    };
    if manifest.config.media_type != CONFIG_MEDIA_TYPE {
        return Err(not_kernel(format!(
            "its config media type is `{}`, not `{CONFIG_MEDIA_TYPE}`",
            manifest.config.media_type
        )));
    }
    match manifest.layers.as_slice() {
        [layer] if layer.media_type == BUNDLE_MEDIA_TYPE => Ok(layer.clone()),
        [layer] => Err(not_kernel(format!(
            "its layer media type is `{}`, not `{BUNDLE_MEDIA_TYPE}`",
            layer.media_type
        ))),
        layers => Err(not_kernel(format!(
            "it has {} layers; a kernel bundle has exactly one",
            layers.len()
        ))),
    }
}
