//! Pulls an image from a registry into the verified blob cache.
//!
//! `oci-client` performs the token handshake and provides the manifest
//! types. The manifest and blob requests themselves go through `reqwest`
//! here, because resuming with `Range`, honouring `Retry-After` and cutting
//! off an over-long body need the response status, headers and body stream,
//! which `oci-client`'s errors do not keep.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use futures_util::{StreamExt as _, TryStreamExt as _};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{
    OciDescriptor, OciImageIndex, OciImageManifest, IMAGE_MANIFEST_LIST_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::RegistryOperation;
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_RANGE, CONTENT_TYPE, RANGE, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode};
use tokio::sync::Mutex;
use tracing::{debug, warn};

use super::auth;
use super::blob_cache::{BlobCache, BlobSlot, CacheError};
use super::model::{Digest, ImageConfig, LayerBlob, PulledImage};
use super::platform::Platform;
use super::progress::Progress;
use super::pull_error::PullError;
use super::reference::ImageReference;

/// Largest manifest or index banger reads, as containerd limits it.
const MANIFEST_SIZE_LIMIT: u64 = 4 * 1024 * 1024;

/// Largest image config banger reads.
const CONFIG_SIZE_LIMIT: u64 = 16 * 1024 * 1024;

/// Header in which a registry states a manifest's digest.
const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";

/// Manifest media types banger sends in `Accept`, images before indexes.
const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    OCI_IMAGE_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

/// Settings of one pull.
#[derive(Clone, Debug)]
pub struct PullOptions {
    pub platform: Platform,
    /// Registries (`host` or `host:port`, as written in references) reached
    /// over plain HTTP; every other registry is reached over HTTPS only.
    pub insecure_registries: Vec<String>,
    /// Docker config with `auths`; `None` means anonymous access.
    pub docker_config: Option<PathBuf>,
    /// Layers downloaded at the same time.
    pub max_concurrent_downloads: usize,
    pub retry: RetryPolicy,
    pub connect_timeout: Duration,
    /// Maximum wait for the next bytes of a response, after which the
    /// connection counts as dropped.
    pub read_timeout: Duration,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            platform: Platform::default(),
            insecure_registries: Vec::new(),
            docker_config: auth::default_docker_config(),
            max_concurrent_downloads: 3,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// Retries of failed requests: connection errors, HTTP 429 and 5xx, and
/// interrupted blob bodies.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts per request, the first included. For a blob body this counts
    /// attempts in a row that received no new bytes.
    pub max_attempts: u32,
    /// Pause before the second attempt; it doubles for each later one.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Maximum `Retry-After` wait; a longer one is cut to this.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// Returns the pause a `Retry-After` header requests (seconds or an HTTP
    /// date), capped at `max_retry_after`.
    fn retry_after(&self, headers: &HeaderMap) -> Option<Duration> {
        let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
        let wait = match value.parse::<u64>() {
            Ok(seconds) => Duration::from_secs(seconds),
            Err(_) => httpdate::parse_http_date(value)
                .ok()?
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO),
        };
        Some(wait.min(self.max_retry_after))
    }
}

/// Pulls `reference` for `options.platform`: the manifest (through an index
/// when the registry has one), the config and every layer, into `cache`.
/// Blobs already cached with the right size are not downloaded again.
#[tracing::instrument(skip_all, fields(reference = %reference))]
pub async fn pull(
    reference: &ImageReference,
    options: &PullOptions,
    cache: &BlobCache,
    progress: &Progress,
) -> Result<PulledImage, PullError> {
    let session = Session::connect(reference, options).await?;

    let manifest = session.fetch_image_manifest().await?;
    cache.write_verified(&manifest.digest, &manifest.bytes)?;
    progress.message(&format!("{reference}: manifest {}", manifest.digest));

    let config_descriptor = session.blob_descriptor(&manifest.parsed.config, "config")?;
    let config = session
        .fetch_config(cache, &config_descriptor, progress)
        .await?;
    session.check_config_platform(&manifest, &config)?;

    let layers = manifest
        .parsed
        .layers
        .iter()
        .map(|layer| session.blob_descriptor(layer, "layer"))
        .collect::<Result<Vec<_>, _>>()?;
    if layers.len() != config.rootfs.diff_ids.len() {
        return Err(PullError::InvalidDocument {
            reference: reference.to_string(),
            kind: "image",
            digest: manifest.digest.clone(),
            reason: format!(
                "the manifest lists {} layers but the config has {} diff_ids",
                layers.len(),
                config.rootfs.diff_ids.len()
            ),
        });
    }

    let concurrency = options.max_concurrent_downloads.max(1);
    // The futures are built before the stream so that no closure is held
    // across an await, which would make the pull future lose `Send`.
    let downloads: Vec<_> = layers
        .iter()
        .map(|layer| session.fetch_blob(cache, &layer.digest, layer.size, progress))
        .collect();
    futures_util::stream::iter(downloads)
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;

    // The index entry is written last, so it never names an image whose
    // blobs are not all cached.
    cache.tag_manifest(
        &reference.to_string(),
        &manifest.media_type,
        &manifest.digest,
        manifest.bytes.len() as u64,
    )?;
    debug!(manifest = %manifest.digest, layers = layers.len(), "pull complete");

    Ok(PulledImage {
        reference: reference.clone(),
        manifest_digest: manifest.digest,
        manifest: manifest.bytes,
        config_digest: config_descriptor.digest,
        config,
        layers,
    })
}

/// An image manifest as fetched: raw bytes, their digest and the parse.
struct FetchedManifest {
    bytes: Vec<u8>,
    digest: Digest,
    media_type: String,
    parsed: OciImageManifest,
    /// Whether the manifest was chosen from an index by platform.
    from_index: bool,
}

/// Connection state for one repository of one registry.
struct Session<'a> {
    reference: &'a ImageReference,
    options: &'a PullOptions,
    oci: oci_client::Client,
    http: reqwest::Client,
    /// `SCHEME://HOST/v2/`, the API version check that starts the token handshake.
    api_url: String,
    /// `SCHEME://HOST/v2/REPOSITORY`.
    base_url: String,
    credentials: RegistryAuth,
    /// The current bearer token and a generation number that changes with
    /// every refresh, so that concurrent requests refresh it only once.
    token: Mutex<(u64, Option<String>)>,
}

impl<'a> Session<'a> {
    async fn connect(
        reference: &'a ImageReference,
        options: &'a PullOptions,
    ) -> Result<Self, PullError> {
        let credentials =
            auth::credentials_for(reference.registry(), options.docker_config.as_deref())?;
        let insecure = options
            .insecure_registries
            .iter()
            .any(|r| r == reference.registry() || r == reference.api_host());
        let scheme = if insecure { "http" } else { "https" };
        let api_url = format!("{scheme}://{}/v2/", reference.api_host());
        let base_url = format!("{api_url}{}", reference.repository());

        let oci_protocol = if insecure {
            ClientProtocol::HttpsExcept(vec![reference.api_host().to_owned()])
        } else {
            ClientProtocol::Https
        };
        let oci = oci_client::Client::new(ClientConfig {
            protocol: oci_protocol,
            connect_timeout: Some(options.connect_timeout),
            read_timeout: Some(options.read_timeout),
            ..ClientConfig::default()
        });

        let insecure_hosts = options.insecure_registries.clone();
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                // A redirect to plain HTTP is allowed only to an insecure
                // registry. reqwest 0.13 drops Authorization itself when the
                // host, port or scheme changes.
                let url = attempt.url().clone();
                let host = url_host_port(&url);
                if url.scheme() != "https" && !insecure_hosts.contains(&host) {
                    attempt.error(format!("refusing redirect to plain-HTTP URL {url}"))
                } else if attempt.previous().len() >= 10 {
                    attempt.error("more than 10 redirects")
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .map_err(|source| PullError::HttpClient { source })?;

        let session = Self {
            reference,
            options,
            oci,
            http,
            api_url,
            base_url,
            credentials,
            token: Mutex::new((0, None)),
        };
        session.refresh_token(0).await?;
        Ok(session)
    }

    /// Fetches a new token unless another request already did since
    /// `seen_generation`.
    async fn refresh_token(&self, seen_generation: u64) -> Result<(), PullError> {
        let mut token = self.token.lock().await;
        if token.0 != seen_generation {
            return Ok(());
        }

        let mut attempt = 0;
        let fresh = loop {
            attempt += 1;
            debug!(
                registry = self.reference.api_host(),
                attempt, "requesting registry token"
            );
            match self
                .oci
                .auth(
                    self.reference.as_oci(),
                    &self.credentials,
                    RegistryOperation::Pull,
                )
                .await
            {
                Ok(fresh) => break fresh,
                Err(oci_client::errors::OciDistributionError::RequestError(source))
                    if attempt < self.options.retry.max_attempts && !is_tls_failure(&source) =>
                {
                    let pause = self.options.retry.backoff(attempt);
                    warn!(error = %source, attempt, ?pause, "token request failed; retrying");
                    tokio::time::sleep(pause).await;
                }
                Err(oci_client::errors::OciDistributionError::RequestError(source)) => {
                    return Err(PullError::Connection {
                        reference: self.reference.to_string(),
                        url: self.api_url.clone(),
                        attempts: attempt,
                        source,
                    })
                }
                Err(oci_client::errors::OciDistributionError::AuthenticationFailure(detail)) => {
                    return Err(PullError::Unauthorized {
                        reference: self.reference.to_string(),
                        registry: self.reference.registry().to_owned(),
                        detail,
                    })
                }
                Err(source) => {
                    return Err(PullError::Token {
                        reference: self.reference.to_string(),
                        source,
                    })
                }
            }
        };
        debug!(bearer = fresh.is_some(), "registry token ready");
        *token = (token.0 + 1, fresh);
        Ok(())
    }

    fn authorize(&self, request: RequestBuilder, token: Option<&str>) -> RequestBuilder {
        match (token, &self.credentials) {
            (Some(token), _) => request.bearer_auth(token),
            (None, RegistryAuth::Basic(user, password)) => request.basic_auth(user, Some(password)),
            (None, _) => request,
        }
    }

    /// Sends a GET, retrying connection errors, 429 and 5xx with backoff (or
    /// the server's `Retry-After`) and a 401 once after a token refresh.
    /// Returns the first response with any other status.
    async fn get(&self, url: &str, headers: HeaderMap) -> Result<Response, PullError> {
        let retry = &self.options.retry;
        let mut attempt = 0;
        let mut refreshed = false;
        loop {
            attempt += 1;
            let (generation, token) = self.token.lock().await.clone();
            let request = self.authorize(
                self.http.get(url).headers(headers.clone()),
                token.as_deref(),
            );
            debug!(url, attempt, range = ?headers.get(RANGE), "GET");

            let response = match request.send().await {
                Ok(response) => response,
                // A rejected redirect or a TLS failure (such as HTTPS to a
                // plain-HTTP registry) fails the same way on every attempt.
                Err(source)
                    if attempt < retry.max_attempts
                        && !source.is_redirect()
                        && !is_tls_failure(&source) =>
                {
                    let pause = retry.backoff(attempt);
                    warn!(url, error = %source, attempt, ?pause, "request failed; retrying");
                    tokio::time::sleep(pause).await;
                    continue;
                }
                Err(source) => {
                    return Err(PullError::Connection {
                        reference: self.reference.to_string(),
                        url: url.to_owned(),
                        attempts: attempt,
                        source,
                    })
                }
            };
            let status = response.status();
            debug!(url, status = status.as_u16(), "response");

            if status == StatusCode::UNAUTHORIZED && !refreshed {
                debug!(url, "token rejected; refreshing it");
                refreshed = true;
                attempt -= 1;
                self.refresh_token(generation).await?;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                let detail = format!("HTTP {status} for {url}: {}", body_text(response).await);
                return Err(PullError::Unauthorized {
                    reference: self.reference.to_string(),
                    registry: self.reference.registry().to_owned(),
                    detail,
                });
            }

            let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            if !retryable {
                return Ok(response);
            }
            if attempt >= retry.max_attempts {
                return Err(PullError::RegistryStatus {
                    reference: self.reference.to_string(),
                    url: url.to_owned(),
                    status: status.as_u16(),
                    attempts: attempt,
                    message: body_text(response).await,
                });
            }
            let pause = retry
                .retry_after(response.headers())
                .unwrap_or_else(|| retry.backoff(attempt));
            warn!(
                url,
                status = status.as_u16(),
                attempt,
                ?pause,
                "registry busy or failing; retrying"
            );
            tokio::time::sleep(pause).await;
        }
    }

    /// Fetches the manifest the reference names and, for an index, the
    /// manifest of the requested platform.
    async fn fetch_image_manifest(&self) -> Result<FetchedManifest, PullError> {
        let selector = self.reference.manifest_selector();
        let (bytes, media_type, digest) = self
            .fetch_manifest(&selector, self.reference.digest())
            .await?;

        if !is_index(&media_type) {
            return self.parse_image_manifest(bytes, media_type, digest, false);
        }

        let index: OciImageIndex =
            serde_json::from_slice(&bytes).map_err(|error| PullError::InvalidDocument {
                reference: self.reference.to_string(),
                kind: "index",
                digest: digest.clone(),
                reason: error.to_string(),
            })?;
        let platform = &self.options.platform;
        let Some(entry) = platform.select(&index.manifests) else {
            return Err(PullError::PlatformNotFound {
                reference: self.reference.to_string(),
                platform: platform.to_string(),
                available: Platform::list_available(&index.manifests),
            });
        };
        let entry_digest = self.parse_digest(&entry.digest, "index", &digest)?;
        debug!(index = %digest, manifest = %entry_digest, %platform, "platform selected from index");

        let fetched = self
            .fetch_manifest(&entry_digest.to_string(), Some(&entry_digest))
            .await;
        let (bytes, media_type, digest) = match fetched {
            Err(PullError::ManifestNotFound { .. }) => {
                return Err(PullError::IndexEntryNotFound {
                    reference: self.reference.to_string(),
                    platform: platform.to_string(),
                    digest: entry_digest,
                })
            }
            other => other?,
        };
        if u64::try_from(entry.size).ok() != Some(bytes.len() as u64) {
            return Err(PullError::InvalidDocument {
                reference: self.reference.to_string(),
                kind: "manifest",
                digest,
                reason: format!(
                    "it has {} bytes but the index says {}",
                    bytes.len(),
                    entry.size
                ),
            });
        }
        if is_index(&media_type) {
            return Err(PullError::UnsupportedMediaType {
                reference: self.reference.to_string(),
                media_type: format!("{media_type} (an index nested in an index)"),
            });
        }
        self.parse_image_manifest(bytes, media_type, digest, true)
    }

    /// GETs one manifest, reads at most [`MANIFEST_SIZE_LIMIT`] bytes and
    /// checks its digest against `expected` and the registry's digest header.
    async fn fetch_manifest(
        &self,
        selector: &str,
        expected: Option<&Digest>,
    ) -> Result<(Vec<u8>, String, Digest), PullError> {
        let url = format!("{}/manifests/{selector}", self.base_url);
        let mut headers = HeaderMap::new();
        // The constant media types form a valid header value.
        headers.insert(
            ACCEPT,
            MANIFEST_MEDIA_TYPES
                .join(", ")
                .parse()
                .expect("valid Accept"),
        );
        let retry = &self.options.retry;
        let mut attempt = 0;
        let (bytes, header_digest, content_type) = loop {
            attempt += 1;
            let response = self.get(&url, headers.clone()).await?;

            let status = response.status();
            if status == StatusCode::NOT_FOUND {
                return Err(PullError::ManifestNotFound {
                    reference: self.reference.to_string(),
                    registry: self.reference.registry().to_owned(),
                });
            }
            if !status.is_success() {
                return Err(self.status_error(&url, response).await);
            }
            let header_digest = response
                .headers()
                .get(DOCKER_CONTENT_DIGEST)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<Digest>().ok());
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned());

            // An interrupted body is fetched again whole: manifests are small.
            match self
                .read_small_body(response, MANIFEST_SIZE_LIMIT, &url)
                .await
            {
                Ok(bytes) => break (bytes, header_digest, content_type),
                Err(PullError::Connection { source, .. }) if attempt < retry.max_attempts => {
                    let pause = retry.backoff(attempt);
                    warn!(url, error = %source, attempt, ?pause, "manifest body interrupted; retrying");
                    tokio::time::sleep(pause).await;
                }
                Err(PullError::Connection {
                    reference,
                    url,
                    source,
                    ..
                }) => {
                    return Err(PullError::Connection {
                        reference,
                        url,
                        attempts: attempt,
                        source,
                    })
                }
                Err(error) => return Err(error),
            }
        };
        let digest = Digest::of(&bytes);
        for claimed in [expected, header_digest.as_ref()].into_iter().flatten() {
            if claimed != &digest {
                return Err(PullError::DigestMismatch {
                    reference: self.reference.to_string(),
                    kind: "manifest",
                    expected: claimed.clone(),
                    actual: digest,
                });
            }
        }

        let media_type = media_type_of(&bytes).or(content_type).unwrap_or_default();
        debug!(%digest, media_type, size = bytes.len(), "manifest fetched");
        Ok((bytes, media_type, digest))
    }

    fn parse_image_manifest(
        &self,
        bytes: Vec<u8>,
        media_type: String,
        digest: Digest,
        from_index: bool,
    ) -> Result<FetchedManifest, PullError> {
        if media_type != OCI_IMAGE_MEDIA_TYPE && media_type != IMAGE_MANIFEST_MEDIA_TYPE {
            return Err(PullError::UnsupportedMediaType {
                reference: self.reference.to_string(),
                media_type,
            });
        }
        let parsed: OciImageManifest =
            serde_json::from_slice(&bytes).map_err(|error| PullError::InvalidDocument {
                reference: self.reference.to_string(),
                kind: "manifest",
                digest: digest.clone(),
                reason: error.to_string(),
            })?;
        Ok(FetchedManifest {
            bytes,
            digest,
            media_type,
            parsed,
            from_index,
        })
    }

    /// Reads a response body of at most `limit` bytes into memory.
    async fn read_small_body(
        &self,
        response: Response,
        limit: u64,
        url: &str,
    ) -> Result<Vec<u8>, PullError> {
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| PullError::Connection {
                reference: self.reference.to_string(),
                url: url.to_owned(),
                attempts: 1,
                source,
            })?;
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(PullError::ManifestTooLarge {
                    reference: self.reference.to_string(),
                    limit,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    async fn fetch_config(
        &self,
        cache: &BlobCache,
        descriptor: &LayerBlob,
        progress: &Progress,
    ) -> Result<ImageConfig, PullError> {
        if descriptor.size > CONFIG_SIZE_LIMIT {
            return Err(PullError::InvalidDocument {
                reference: self.reference.to_string(),
                kind: "config",
                digest: descriptor.digest.clone(),
                reason: format!(
                    "its size {} exceeds {CONFIG_SIZE_LIMIT} bytes",
                    descriptor.size
                ),
            });
        }
        self.fetch_blob(cache, &descriptor.digest, descriptor.size, progress)
            .await?;
        let bytes = cache.read_verified(&descriptor.digest, descriptor.size)?;
        serde_json::from_slice(&bytes).map_err(|error| PullError::InvalidDocument {
            reference: self.reference.to_string(),
            kind: "config",
            digest: descriptor.digest.clone(),
            reason: error.to_string(),
        })
    }

    /// An image reached without an index has one platform, given in its
    /// config; it must be the requested one.
    fn check_config_platform(
        &self,
        manifest: &FetchedManifest,
        config: &ImageConfig,
    ) -> Result<(), PullError> {
        if manifest.from_index {
            return Ok(());
        }
        let platform = &self.options.platform;
        let matches = config.os == platform.os
            && config.architecture == platform.architecture
            && (platform.variant.is_none() || config.variant == platform.variant);
        if matches {
            return Ok(());
        }
        let mut available = format!("{}/{}", config.os, config.architecture);
        if let Some(variant) = &config.variant {
            available.push('/');
            available.push_str(variant);
        }
        Err(PullError::PlatformNotFound {
            reference: self.reference.to_string(),
            platform: platform.to_string(),
            available: vec![available],
        })
    }

    /// Downloads one blob into the cache unless it is there, resuming an
    /// interrupted body with a `Range` request and verifying the whole blob
    /// at the end.
    async fn fetch_blob(
        &self,
        cache: &BlobCache,
        digest: &Digest,
        size: u64,
        progress: &Progress,
    ) -> Result<(), PullError> {
        let blob_progress = progress.blob(digest, size);
        if cache.has(digest, size)? {
            debug!(%digest, "blob cached");
            blob_progress.cached();
            return Ok(());
        }
        let mut writer = match cache.begin_write(digest, size).await? {
            BlobSlot::Cached => {
                debug!(%digest, "blob cached by a concurrent pull");
                blob_progress.cached();
                return Ok(());
            }
            BlobSlot::Writer(writer) => writer,
        };

        let url = format!("{}/blobs/{digest}", self.base_url);
        let retry = &self.options.retry;
        let mut attempts_without_progress = 0;
        // An attempt makes progress only when it reaches a byte beyond every
        // earlier attempt. A server that ignores `Range` restarts the body at
        // 0, so counting each attempt's own bytes would find progress forever.
        let mut furthest = writer.written();
        while writer.written() < size {
            let offset = writer.written();
            let mut headers = HeaderMap::new();
            if offset > 0 {
                // `bytes=N-` is ASCII, so it is a valid header value.
                headers.insert(
                    RANGE,
                    format!("bytes={offset}-").parse().expect("valid Range"),
                );
            }
            let response = self.get(&url, headers).await?;
            let status = response.status();

            if status == StatusCode::NOT_FOUND {
                blob_progress.failed();
                return Err(PullError::BlobNotFound {
                    reference: self.reference.to_string(),
                    digest: digest.clone(),
                });
            }
            if status == StatusCode::PARTIAL_CONTENT && offset > 0 {
                self.check_content_range(&response, offset)?;
            } else if status.is_success() {
                if offset > 0 {
                    debug!(%digest, offset, "server ignored the range; starting over");
                    writer.restart().map_err(PullError::Cache)?;
                }
                if response
                    .content_length()
                    .is_some_and(|length| length > size)
                {
                    blob_progress.failed();
                    return Err(PullError::BodyTooLong {
                        reference: self.reference.to_string(),
                        digest: digest.clone(),
                        expected: size,
                    });
                }
            } else {
                blob_progress.failed();
                return Err(self.status_error(&url, response).await);
            }

            blob_progress.started(writer.written());
            let mut body = response.bytes_stream();
            let mut interruption = None;
            while let Some(chunk) = body.next().await {
                let chunk = match chunk {
                    Ok(chunk) => chunk,
                    Err(error) => {
                        interruption = Some(error.to_string());
                        break;
                    }
                };
                match writer.write(&chunk) {
                    Ok(()) => blob_progress.advance(chunk.len() as u64),
                    Err(CacheError::TooLong { .. }) => {
                        blob_progress.failed();
                        return Err(PullError::BodyTooLong {
                            reference: self.reference.to_string(),
                            digest: digest.clone(),
                            expected: size,
                        });
                    }
                    Err(error) => return Err(error.into()),
                }
            }

            let received = writer.written();
            if received == size {
                break;
            }
            if received > furthest {
                furthest = received;
                attempts_without_progress = 0;
            }
            attempts_without_progress += 1;
            let reason =
                interruption.unwrap_or_else(|| format!("body ended at byte {received} of {size}"));
            if attempts_without_progress >= retry.max_attempts {
                blob_progress.failed();
                return Err(PullError::Truncated {
                    reference: self.reference.to_string(),
                    digest: digest.clone(),
                    received,
                    expected: size,
                    attempts: attempts_without_progress,
                });
            }
            let pause = retry.backoff(attempts_without_progress);
            warn!(%digest, received, size, reason, ?pause, "blob download interrupted; resuming");
            blob_progress.retrying(&reason);
            tokio::time::sleep(pause).await;
        }

        // Hashing is done; the fsync and rename block, so they leave the
        // async worker.
        let finished = tokio::task::spawn_blocking(move || writer.finish()).await;
        let result = match finished {
            Ok(result) => result,
            Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
        };
        match result {
            Ok(_) => {
                blob_progress.done();
                Ok(())
            }
            Err(CacheError::DigestMismatch { expected, actual }) => {
                blob_progress.failed();
                Err(PullError::DigestMismatch {
                    reference: self.reference.to_string(),
                    kind: "blob",
                    expected,
                    actual,
                })
            }
            Err(error) => {
                blob_progress.failed();
                Err(error.into())
            }
        }
    }

    fn check_content_range(&self, response: &Response, offset: u64) -> Result<(), PullError> {
        let content_range = response
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let start = content_range
            .strip_prefix("bytes ")
            .and_then(|r| r.split('-').next())
            .and_then(|s| s.trim().parse::<u64>().ok());
        if start == Some(offset) {
            Ok(())
        } else {
            Err(PullError::BadRange {
                reference: self.reference.to_string(),
                offset,
                content_range,
            })
        }
    }

    async fn status_error(&self, url: &str, response: Response) -> PullError {
        let status = response.status().as_u16();
        PullError::RegistryStatus {
            reference: self.reference.to_string(),
            url: url.to_owned(),
            status,
            attempts: 1,
            message: body_text(response).await,
        }
    }

    fn parse_digest(
        &self,
        text: &str,
        kind: &'static str,
        parent: &Digest,
    ) -> Result<Digest, PullError> {
        text.parse().map_err(|_| PullError::InvalidDocument {
            reference: self.reference.to_string(),
            kind,
            digest: parent.clone(),
            reason: format!("`{text}` is not a sha256 digest"),
        })
    }

    fn blob_descriptor(
        &self,
        descriptor: &OciDescriptor,
        kind: &'static str,
    ) -> Result<LayerBlob, PullError> {
        let digest: Digest = descriptor
            .digest
            .parse()
            .map_err(|_| PullError::InvalidDocument {
                reference: self.reference.to_string(),
                kind,
                digest: Digest::of(descriptor.digest.as_bytes()),
                reason: format!("`{}` is not a sha256 digest", descriptor.digest),
            })?;
        let size = u64::try_from(descriptor.size).map_err(|_| PullError::InvalidDocument {
            reference: self.reference.to_string(),
            kind,
            digest: digest.clone(),
            reason: format!("negative size {}", descriptor.size),
        })?;
        Ok(LayerBlob {
            digest,
            media_type: descriptor.media_type.clone(),
            size,
        })
    }
}

fn is_index(media_type: &str) -> bool {
    media_type == OCI_IMAGE_INDEX_MEDIA_TYPE || media_type == IMAGE_MANIFEST_LIST_MEDIA_TYPE
}

/// Reads the `mediaType` field of a manifest, which takes precedence over `Content-Type`.
fn media_type_of(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct MediaTypeOnly {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<MediaTypeOnly>(bytes)
        .ok()?
        .media_type
        .filter(|m| !m.is_empty())
}

/// Returns the first characters of an error body, for a message.
async fn body_text(response: Response) -> String {
    const MAX_CHARS: usize = 300;
    let text = response.text().await.unwrap_or_default();
    let trimmed: String = text.trim().chars().take(MAX_CHARS).collect();
    if trimmed.is_empty() {
        "(empty body)".to_owned()
    } else {
        trimmed
    }
}

fn url_host_port(url: &reqwest::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        _ => String::new(),
    }
}

/// Tells whether `error` or one of its causes is a TLS error, which a retry
/// would meet again: a plain-HTTP server, a bad certificate or a protocol
/// mismatch.
fn is_tls_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<rustls::Error>() {
            return true;
        }
        // `io::Error::source` skips the error it wraps, so step into it.
        let wrapped = error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        cause = wrapped.or_else(|| error.source());
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            ..RetryPolicy::default()
        };
        assert_eq!(policy.backoff(1), Duration::from_millis(100));
        assert_eq!(policy.backoff(2), Duration::from_millis(200));
        assert_eq!(policy.backoff(3), Duration::from_millis(350));
        assert_eq!(policy.backoff(40), Duration::from_millis(350));
    }

    #[test]
    fn retry_after_seconds_and_date() {
        let policy = RetryPolicy::default();
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(policy.retry_after(&headers), Some(Duration::from_secs(3)));

        headers.insert(RETRY_AFTER, HeaderValue::from_static("86400"));
        assert_eq!(policy.retry_after(&headers), Some(policy.max_retry_after));

        let past = httpdate::fmt_http_date(SystemTime::UNIX_EPOCH);
        headers.insert(RETRY_AFTER, past.parse().unwrap());
        assert_eq!(policy.retry_after(&headers), Some(Duration::ZERO));

        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(policy.retry_after(&headers), None);
    }

    #[test]
    fn media_type_from_manifest_body() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}"#;
        assert_eq!(
            media_type_of(body).as_deref(),
            Some(OCI_IMAGE_INDEX_MEDIA_TYPE)
        );
        assert_eq!(media_type_of(br#"{"schemaVersion":2}"#), None);
    }
}
