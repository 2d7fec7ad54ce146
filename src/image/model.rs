//! Types a pull produces: content digests, the image config and the layer list.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::reference::ImageReference;

/// Length of a sha256 digest in lowercase hex characters.
const SHA256_HEX_LEN: usize = 64;

/// A `sha256:<hex>` content digest, the only algorithm banger accepts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    hex: String,
}

/// A string that is not a `sha256:` digest with 64 lowercase hex characters.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest `{input}`: expected `sha256:` followed by 64 lowercase hex characters")]
pub struct InvalidDigest {
    pub input: String,
}

impl Digest {
    /// Computes the digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_sha256(Sha256::digest(bytes).as_slice())
    }

    /// Builds a digest from a finished sha256 hash (32 bytes).
    pub fn from_sha256(hash: &[u8]) -> Self {
        Self {
            hex: hex::encode(hash),
        }
    }

    /// The 64 hex characters after `sha256:`, as used in blob file names.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl FromStr for Digest {
    type Err = InvalidDigest;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidDigest {
            input: input.to_owned(),
        };
        let hex = input.strip_prefix("sha256:").ok_or_else(invalid)?;

        let is_lower_hex = hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if hex.len() != SHA256_HEX_LEN || !is_lower_hex {
            return Err(invalid());
        }
        Ok(Self {
            hex: hex.to_owned(),
        })
    }
}

impl TryFrom<String> for Digest {
    type Error = InvalidDigest;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Digest> for String {
    fn from(digest: Digest) -> Self {
        digest.to_string()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

/// An image pulled into the blob cache: the manifest, the parsed config and
/// the layers, oldest first.
#[derive(Clone, Debug)]
pub struct PulledImage {
    /// The reference as the user gave it, normalized (`docker.io/library/debian:bookworm`).
    pub reference: ImageReference,
    /// Digest of the platform-specific image manifest (not of an index).
    pub manifest_digest: Digest,
    /// The image manifest exactly as the registry sent it; also stored in the cache.
    pub manifest: Vec<u8>,
    /// Digest of the config blob.
    pub config_digest: Digest,
    pub config: ImageConfig,
    /// Layer blobs in the order they are applied, oldest first.
    pub layers: Vec<LayerBlob>,
}

/// One layer of an image, stored in the blob cache under its digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerBlob {
    /// Digest of the compressed blob as stored in the registry.
    pub digest: Digest,
    /// Media type from the manifest, such as `application/vnd.oci.image.layer.v1.tar+gzip`.
    pub media_type: String,
    /// Size of the compressed blob in bytes.
    pub size: u64,
}

/// The OCI image config (also the Docker image config): the fields banger uses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Runtime defaults; absent in images built without any.
    #[serde(default)]
    pub config: ContainerConfig,
    pub rootfs: RootFs,
}

/// Runtime defaults of an image (`config` in the image config JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    #[serde(
        rename = "Entrypoint",
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub entrypoint: Vec<String>,
    #[serde(
        rename = "Cmd",
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cmd: Vec<String>,
    /// `NAME=value` entries.
    #[serde(
        rename = "Env",
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env: Vec<String>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub working_dir: String,
    /// `user`, `uid`, `user:group` or `uid:gid`; empty means root.
    #[serde(rename = "User", default, skip_serializing_if = "String::is_empty")]
    pub user: String,
}

/// The layer digests of the uncompressed layer tars (`rootfs` in the image config).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers` in valid images.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// sha256 of each uncompressed layer tar, oldest first.
    pub diff_ids: Vec<Digest>,
}

/// Docker writes `null` for an unset list; treat it as empty.
fn null_as_empty<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Option::<Vec<String>>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_parses_and_displays() {
        let text = format!("sha256:{}", "ab".repeat(32));
        let digest: Digest = text.parse().unwrap();
        assert_eq!(digest.hex(), "ab".repeat(32));
        assert_eq!(digest.to_string(), text);
    }

    #[test]
    fn digest_rejects_bad_forms() {
        for input in [
            "",
            "ab".repeat(32).as_str(),
            &format!("sha512:{}", "ab".repeat(32)),
            &format!("sha256:{}", "AB".repeat(32)),
            &format!("sha256:{}", "ab".repeat(31)),
            &format!("sha256:{}/", "ab".repeat(32)),
        ] {
            assert!(input.parse::<Digest>().is_err(), "{input:?} was accepted");
        }
    }

    #[test]
    fn digest_of_empty_input() {
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn config_reads_docker_nulls() {
        let json = r#"{"architecture":"amd64","os":"linux",
            "config":{"Entrypoint":null,"Cmd":["bash"],"Env":null},
            "rootfs":{"type":"layers","diff_ids":[]}}"#;
        let config: ImageConfig = serde_json::from_str(json).unwrap();
        assert!(config.config.entrypoint.is_empty());
        assert_eq!(config.config.cmd, ["bash"]);
    }
}
