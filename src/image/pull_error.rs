//! Errors of a registry pull, each naming the reference or digest involved.

use crate::error::{Classify, ExitCode};

use super::auth::CredentialsError;
use super::blob_cache::CacheError;
use super::model::Digest;
use super::platform::InvalidPlatform;
use super::reference::InvalidReference;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PullError {
    #[error(transparent)]
    InvalidReference(#[from] InvalidReference),

    #[error(transparent)]
    InvalidPlatform(#[from] InvalidPlatform),

    #[error(transparent)]
    Credentials(#[from] CredentialsError),

    #[error("image {reference} not found in registry {registry}; check the name and tag")]
    ManifestNotFound { reference: String, registry: String },

    #[error("manifest {digest} for platform {platform}, listed in the index of {reference}, not found in the registry; the image is incomplete there")]
    IndexEntryNotFound {
        reference: String,
        platform: String,
        digest: Digest,
    },

    #[error("blob {digest} of image {reference} not found in the registry; the image is incomplete there")]
    BlobNotFound { reference: String, digest: Digest },

    #[error("image {reference} has no manifest for platform {platform} ({}); choose one with --platform", describe_available(available))]
    PlatformNotFound {
        reference: String,
        platform: String,
        available: Vec<String>,
    },

    #[error("registry {registry} denied access to {reference}: {detail}; check the credentials in the Docker config (`docker login {registry}`)")]
    Unauthorized {
        reference: String,
        registry: String,
        detail: String,
    },

    #[error("registry request {url} for {reference} failed with HTTP {status} after {attempts} attempt(s): {message}")]
    RegistryStatus {
        reference: String,
        url: String,
        status: u16,
        attempts: u32,
        message: String,
    },

    #[error("failed to reach registry at {url} for {reference} after {attempts} attempt(s): {source}; check the address, and pass --insecure-registry for a plain-HTTP registry")]
    Connection {
        reference: String,
        url: String,
        attempts: u32,
        source: reqwest::Error,
    },

    #[error("download of blob {digest} of {reference} ended at {received} of {expected} bytes after {attempts} attempt(s); retry the pull")]
    Truncated {
        reference: String,
        digest: Digest,
        received: u64,
        expected: u64,
        attempts: u32,
    },

    #[error("registry sent more than the {expected} bytes the descriptor of blob {digest} of {reference} says; the registry is broken or tampered with")]
    BodyTooLong {
        reference: String,
        digest: Digest,
        expected: u64,
    },

    #[error("content of {kind} {expected} of {reference} has sha256 {actual}; the registry sent wrong bytes, so nothing was cached")]
    DigestMismatch {
        reference: String,
        kind: &'static str,
        expected: Digest,
        actual: Digest,
    },

    #[error("registry answered {reference} with a range response that does not start at byte {offset}: {content_range}")]
    BadRange {
        reference: String,
        offset: u64,
        content_range: String,
    },

    #[error("manifest of {reference} is larger than {limit} bytes; refusing to read it")]
    ManifestTooLarge { reference: String, limit: u64 },

    #[error("manifest of {reference} has unsupported media type `{media_type}`; banger pulls OCI and Docker schema-2 images")]
    UnsupportedMediaType {
        reference: String,
        media_type: String,
    },

    #[error("invalid {kind} {digest} of {reference}: {reason}")]
    InvalidDocument {
        reference: String,
        kind: &'static str,
        digest: Digest,
        reason: String,
    },

    #[error("failed to fetch a registry token for {reference}: {source}")]
    Token {
        reference: String,
        source: oci_client::errors::OciDistributionError,
    },

    #[error("invalid registry URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },

    #[error("failed to set up the HTTP client: {source}")]
    HttpClient { source: reqwest::Error },

    #[error(transparent)]
    Cache(#[from] CacheError),
}

impl Classify for PullError {
    fn exit_code(&self) -> ExitCode {
        match self {
            Self::InvalidReference(_) | Self::InvalidPlatform(_) | Self::Credentials(_) => {
                ExitCode::Usage
            }
            Self::ManifestNotFound { .. }
            | Self::IndexEntryNotFound { .. }
            | Self::BlobNotFound { .. }
            | Self::PlatformNotFound { .. } => ExitCode::NotFound,
            Self::Cache(_) => ExitCode::HostResource,
            Self::HttpClient { .. } => ExitCode::General,
            Self::Unauthorized { .. }
            | Self::RegistryStatus { .. }
            | Self::Connection { .. }
            | Self::Truncated { .. }
            | Self::BodyTooLong { .. }
            | Self::DigestMismatch { .. }
            | Self::BadRange { .. }
            | Self::ManifestTooLarge { .. }
            | Self::UnsupportedMediaType { .. }
            | Self::InvalidDocument { .. }
            | Self::Token { .. }
            | Self::InvalidUrl { .. } => ExitCode::Remote,
        }
    }
}

/// Lists the platforms of an index for an error message, or says that its
/// entries name none.
fn describe_available(available: &[String]) -> String {
    if available.is_empty() {
        "the index entries name no platform".to_owned()
    } else {
        format!("available: {}", available.join(", "))
    }
}
