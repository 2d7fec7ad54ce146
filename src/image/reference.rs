//! Image references, normalized as Docker normalizes them.
//!
//! `debian:bookworm` is `docker.io/library/debian:bookworm`. A first component
//! with a `.` or a `:`, or equal to `localhost`, names a registry
//! (`localhost:5000/app`, `127.0.0.1:5055/debian`). No tag and no digest means
//! `:latest`. With a digest, the tag is kept for display and the digest decides
//! what is pulled.

use std::fmt;
use std::str::FromStr;

use oci_client::{ParseError, Reference};

use super::model::Digest;

/// A parsed, normalized image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageReference {
    inner: Reference,
    digest: Option<Digest>,
}

/// A string that is not a valid image reference.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference `{input}`: {reason}; expected [REGISTRY[:PORT]/]NAME[:TAG][@sha256:DIGEST], such as `debian:bookworm`")]
pub struct InvalidReference {
    pub input: String,
    pub reason: String,
}

impl ImageReference {
    /// Parses `input` and applies Docker's defaults for the registry, the
    /// `library/` namespace and the `latest` tag.
    pub fn parse(input: &str) -> Result<Self, InvalidReference> {
        let invalid = |reason: &str| InvalidReference {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        // The name part precedes any `@digest` and is checked before the
        // grammar because the grammar reports an uppercase letter only as an
        // invalid format.
        let name = input.split('@').next().unwrap_or_default();
        let path = name.split_once('/').map_or(name, |(first, rest)| {
            if is_registry_component(first) {
                rest
            } else {
                name
            }
        });
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid("repository names must be lowercase"));
        }

        let inner = Reference::from_str(input).map_err(|error| invalid(&describe(&error)))?;
        // The grammar takes any run of digits as a port, so `host:99999`
        // would otherwise fail only when the HTTP client builds the URL.
        if let Some((_, port)) = inner.registry().rsplit_once(':') {
            if !port.parse::<u16>().is_ok_and(|port| port > 0) {
                return Err(invalid(&format!(
                    "registry port `{port}` is not a number from 1 to 65535"
                )));
            }
        }
        let digest = match inner.digest() {
            Some(text) => Some(
                text.parse::<Digest>()
                    .map_err(|_| invalid("only sha256 digests are supported"))?,
            ),
            None => None,
        };
        Ok(Self { inner, digest })
    }

    /// Registry host as written in the reference (`docker.io`, `127.0.0.1:5055`).
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// Host that serves the registry API (`index.docker.io` for `docker.io`).
    pub fn api_host(&self) -> &str {
        self.inner.resolve_registry()
    }

    /// Repository path within the registry (`library/debian`).
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// Returns the tag or digest to request from the manifest endpoint, the
    /// digest when both are present.
    pub fn manifest_selector(&self) -> String {
        match (&self.digest, self.tag()) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.to_owned(),
            // The parser sets `latest` whenever neither is present.
            (None, None) => "latest".to_owned(),
        }
    }

    /// This reference with its tag dropped and `digest` pinned.
    pub fn with_digest(&self, digest: &Digest) -> Self {
        let inner = Reference::with_digest(
            self.registry().to_owned(),
            self.repository().to_owned(),
            digest.to_string(),
        );
        Self {
            inner,
            digest: Some(digest.clone()),
        }
    }

    /// Returns the reference in the form `oci-client` takes.
    pub fn as_oci(&self) -> &Reference {
        &self.inner
    }
}

impl FromStr for ImageReference {
    type Err = InvalidReference;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        Self::parse(input)
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// Docker's rule for telling a registry host from the first path component.
fn is_registry_component(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

fn describe(error: &ParseError) -> String {
    match error {
        ParseError::DigestInvalidFormat => "the digest is not ALGORITHM:HEX".to_owned(),
        ParseError::DigestInvalidLength => "the digest has the wrong length".to_owned(),
        ParseError::DigestUnsupported => "only sha256 digests are supported".to_owned(),
        ParseError::NameContainsUppercase => "repository names must be lowercase".to_owned(),
        ParseError::NameEmpty => "the name is empty".to_owned(),
        ParseError::NameTooLong => "the repository name is longer than 255 characters".to_owned(),
        ParseError::ReferenceInvalidFormat => {
            "it contains characters or separators not allowed in a reference".to_owned()
        }
        ParseError::TagInvalidFormat => {
            "a tag is 1 to 128 of [A-Za-z0-9_.-], not starting with `.` or `-`".to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(input: &str) -> ImageReference {
        ImageReference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"))
    }

    #[test]
    fn short_name_gets_docker_hub_and_library() {
        let reference = parsed("debian:bookworm");
        assert_eq!(reference.registry(), "docker.io");
        assert_eq!(reference.api_host(), "index.docker.io");
        assert_eq!(reference.repository(), "library/debian");
        assert_eq!(reference.tag(), Some("bookworm"));
        assert_eq!(reference.to_string(), "docker.io/library/debian:bookworm");
    }

    #[test]
    fn missing_tag_means_latest() {
        let reference = parsed("debian");
        assert_eq!(reference.tag(), Some("latest"));
        assert_eq!(reference.manifest_selector(), "latest");
    }

    #[test]
    fn user_namespace_on_docker_hub() {
        let reference = parsed("grafana/grafana:11.0.0");
        assert_eq!(reference.registry(), "docker.io");
        assert_eq!(reference.repository(), "grafana/grafana");
    }

    #[test]
    fn registry_with_port() {
        let reference = parsed("127.0.0.1:5055/debian:minbase");
        assert_eq!(reference.registry(), "127.0.0.1:5055");
        assert_eq!(reference.api_host(), "127.0.0.1:5055");
        assert_eq!(reference.repository(), "debian");
        assert_eq!(reference.tag(), Some("minbase"));
    }

    #[test]
    fn localhost_is_a_registry() {
        assert_eq!(parsed("localhost/app").registry(), "localhost");
        assert_eq!(parsed("localhost:5000/a/b:1").registry(), "localhost:5000");
        assert_eq!(parsed("localhost:5000/a/b:1").repository(), "a/b");
    }

    #[test]
    fn digest_selects_the_manifest() {
        let hex = "ab".repeat(32);
        let reference = parsed(&format!("quay.io/org/app:v1@sha256:{hex}"));
        assert_eq!(reference.registry(), "quay.io");
        assert_eq!(reference.digest().unwrap().hex(), hex);
        assert_eq!(reference.manifest_selector(), format!("sha256:{hex}"));
    }

    #[test]
    fn invalid_references_are_rejected() {
        for input in [
            "",
            "Debian:bookworm",
            "debian:",
            "debian:-bad",
            "debian@sha256:abc",
            "debian@md5:0123",
            "debian bookworm",
            "/debian",
            "registry.example.com/",
            "127.0.0.1:99999/x:y",
            "localhost:65536/debian",
            "localhost:0/debian",
        ] {
            let error = ImageReference::parse(input).expect_err(input);
            assert!(error.to_string().contains("invalid image reference"));
        }
    }

    #[test]
    fn error_names_the_input_and_reason() {
        let error = ImageReference::parse("Debian:bookworm").unwrap_err();
        assert_eq!(error.input, "Debian:bookworm");
        assert!(error.reason.contains("lowercase"), "{}", error.reason);
    }

    #[test]
    fn uppercase_registry_host_is_allowed() {
        assert_eq!(
            parsed("Registry.Example.com/app").registry(),
            "Registry.Example.com"
        );
    }

    #[test]
    fn with_digest_pins_the_manifest() {
        let digest = Digest::of(b"manifest");
        let pinned = parsed("debian:bookworm").with_digest(&digest);
        assert_eq!(pinned.digest(), Some(&digest));
        assert_eq!(pinned.repository(), "library/debian");
    }
}
