//! Target platforms (`linux/amd64`, `linux/arm64/v8`) and their selection
//! from an image index.

use std::fmt;
use std::str::FromStr;

use oci_client::manifest::ImageIndexEntry;

/// An `OS/ARCHITECTURE[/VARIANT]` platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

/// A string that is not `OS/ARCHITECTURE[/VARIANT]`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform `{input}`: expected OS/ARCHITECTURE[/VARIANT] in lowercase, such as `linux/amd64` or `linux/arm64/v8`")]
pub struct InvalidPlatform {
    pub input: String,
}

impl Default for Platform {
    /// `linux/amd64`, the platform banger's VMs run.
    fn default() -> Self {
        Self {
            os: "linux".to_owned(),
            architecture: "amd64".to_owned(),
            variant: None,
        }
    }
}

impl FromStr for Platform {
    type Err = InvalidPlatform;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidPlatform {
            input: input.to_owned(),
        };
        let parts: Vec<&str> = input.split('/').collect();

        let is_word = |part: &&str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(is_word) {
            return Err(invalid());
        }
        Ok(Self {
            os: parts[0].to_owned(),
            architecture: parts[1].to_owned(),
            variant: parts.get(2).map(|v| (*v).to_owned()),
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl Platform {
    /// Whether an index entry is for this platform. OS and architecture must
    /// be equal, and so must the variant: an entry with a variant matches only
    /// a request with the same variant, and a request with a variant matches
    /// only an entry with it.
    pub fn matches(&self, entry: &ImageIndexEntry) -> bool {
        let Some(platform) = &entry.platform else {
            return false;
        };
        platform.os.to_string() == self.os
            && platform.architecture.to_string() == self.architecture
            && platform.variant.as_deref().filter(|v| !v.is_empty()) == self.variant.as_deref()
    }

    /// Picks the entry for this platform from an index's manifests. The
    /// first match wins, as in containerd.
    pub fn select<'a>(&self, manifests: &'a [ImageIndexEntry]) -> Option<&'a ImageIndexEntry> {
        manifests.iter().find(|entry| self.matches(entry))
    }

    /// Lists the platforms an index offers, for an error message.
    pub fn list_available(manifests: &[ImageIndexEntry]) -> Vec<String> {
        manifests
            .iter()
            .filter_map(|entry| entry.platform.as_ref())
            .map(|p| {
                let mut text = format!("{}/{}", p.os, p.architecture);
                if let Some(variant) = p.variant.as_deref().filter(|v| !v.is_empty()) {
                    text.push('/');
                    text.push_str(variant);
                }
                text
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(os: &str, arch: &str, variant: Option<&str>, digest: &str) -> ImageIndexEntry {
        let json = serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": 1,
            "platform": {"os": os, "architecture": arch, "variant": variant},
        });
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn platform_parses_two_and_three_parts() {
        assert_eq!(
            "linux/amd64".parse::<Platform>().unwrap(),
            Platform::default()
        );
        let arm: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(arm.variant.as_deref(), Some("v8"));
        assert_eq!(arm.to_string(), "linux/arm64/v8");
    }

    #[test]
    fn platform_rejects_bad_forms() {
        for input in [
            "",
            "linux",
            "linux/",
            "/amd64",
            "linux/amd64/v8/x",
            "Linux/AMD64",
        ] {
            assert!(input.parse::<Platform>().is_err(), "{input:?} was accepted");
        }
    }

    #[test]
    fn select_matches_variant_exactly() {
        let manifests = [
            entry("linux", "arm", Some("v6"), "a"),
            entry("linux", "arm", Some("v7"), "b"),
            entry("linux", "amd64", None, "c"),
        ];
        let v7: Platform = "linux/arm/v7".parse().unwrap();
        assert_eq!(v7.select(&manifests).unwrap().digest, "b");
        let bare_arm: Platform = "linux/arm".parse().unwrap();
        assert!(bare_arm.select(&manifests).is_none());
        assert_eq!(Platform::default().select(&manifests).unwrap().digest, "c");
    }

    #[test]
    fn select_without_a_match() {
        let manifests = [entry("linux", "arm64", Some("v8"), "a")];
        assert!(Platform::default().select(&manifests).is_none());
        assert_eq!(Platform::list_available(&manifests), ["linux/arm64/v8"]);
    }
}
