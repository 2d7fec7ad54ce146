//! Pulls manifests from the real loopback registry that
//! tests/fixtures/registry.sh fills, with the `oci-client` crate.
//!
//! BANGER_FIXTURES (default /var/tmp/banger-fixtures) names the fixture
//! folder with the digests the registry was filled with, and
//! BANGER_TEST_REGISTRY (default 127.0.0.1:5055) names the registry.

use std::path::PathBuf;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{
    IMAGE_CONFIG_MEDIA_TYPE, IMAGE_DOCKER_CONFIG_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};

/// Fixture tags with the media type of their image config and their layer
/// count. The config media type distinguishes an OCI manifest from a Docker schema-2
/// one, because OCI manifests may omit their own `mediaType`.
const TAGS: &[(&str, &str, usize)] = &[
    ("minbase", IMAGE_CONFIG_MEDIA_TYPE, 1),
    ("bookworm-ssh", IMAGE_CONFIG_MEDIA_TYPE, 2),
    ("bookworm-banger", IMAGE_CONFIG_MEDIA_TYPE, 3),
    ("bookworm-banger-v2s2", IMAGE_DOCKER_CONFIG_MEDIA_TYPE, 3),
];

const ACCEPTED_MEDIA_TYPES: &[&str] = &[
    OCI_IMAGE_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
];

fn fixtures() -> PathBuf {
    let dir = std::env::var_os("BANGER_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/banger-fixtures"));
    assert!(
        dir.join("registry").is_dir(),
        "fixture folder {} has no registry/ digests; run `sudo bash tests/fixtures/build-images.sh` \
         then `sudo bash tests/fixtures/registry.sh start`, or set BANGER_FIXTURES",
        dir.display()
    );
    dir
}

/// The registry address, which must be on loopback because the test talks
/// plain HTTP to it.
fn registry() -> String {
    let address =
        std::env::var("BANGER_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5055".to_owned());
    let host = address
        .rsplit_once(':')
        .map_or(address.as_str(), |(host, _)| host);
    assert!(
        matches!(host, "127.0.0.1" | "localhost" | "[::1]"),
        "BANGER_TEST_REGISTRY={address} is not a loopback address; the test uses plain HTTP only on loopback"
    );
    address
}

fn client(registry: &str) -> Client {
    Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(vec![registry.to_owned()]),
        ..ClientConfig::default()
    })
}

fn expected_digest(tag: &str) -> String {
    let file = fixtures().join("registry").join(format!("{tag}.digest"));
    let digest = std::fs::read_to_string(&file).unwrap_or_else(|err| {
        panic!(
            "failed to read {}: {err}; run `sudo bash tests/fixtures/registry.sh start`",
            file.display()
        )
    });
    digest.trim().to_owned()
}

#[tokio::test]
async fn manifest_digests_match_fixtures() {
    let registry = registry();
    let client = client(&registry);

    for (tag, config_media_type, layer_count) in TAGS {
        let reference: Reference = format!("{registry}/debian:{tag}").parse().unwrap();
        let (manifest, digest) = client
            .pull_manifest_raw(&reference, &RegistryAuth::Anonymous, ACCEPTED_MEDIA_TYPES)
            .await
            .unwrap_or_else(|err| {
                panic!(
                    "failed to pull {reference}: {err}; is the registry running \
                     (`sudo bash tests/fixtures/registry.sh start`)?"
                )
            });

        let computed = format!("sha256:{}", hex::encode(Sha256::digest(&manifest)));
        assert_eq!(computed, expected_digest(tag), "{tag}: manifest sha256");
        assert_eq!(digest, computed, "{tag}: digest reported by oci-client");

        let json: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(json["schemaVersion"], 2, "{tag}: schema version");
        assert_eq!(
            json["config"]["mediaType"], *config_media_type,
            "{tag}: config media type"
        );
        let layers = json["layers"].as_array().map_or(0, Vec::len);
        assert_eq!(layers, *layer_count, "{tag}: layer count");
    }
}

#[tokio::test]
async fn manifest_by_digest_matches() {
    let registry = registry();
    let client = client(&registry);
    let digest = expected_digest("minbase");

    let reference: Reference = format!("{registry}/debian@{digest}").parse().unwrap();
    let (manifest, _) = client
        .pull_manifest_raw(&reference, &RegistryAuth::Anonymous, ACCEPTED_MEDIA_TYPES)
        .await
        .unwrap();
    let computed = format!("sha256:{}", hex::encode(Sha256::digest(&manifest)));
    assert_eq!(computed, digest);
}

#[tokio::test]
async fn unknown_tag_fails() {
    let registry = registry();
    let client = client(&registry);
    // The fixture folder must exist so that a missing registry is not
    // mistaken for the expected failure.
    expected_digest("minbase");

    let reference: Reference = format!("{registry}/debian:no-such-tag").parse().unwrap();
    let err = client
        .pull_manifest_raw(&reference, &RegistryAuth::Anonymous, ACCEPTED_MEDIA_TYPES)
        .await
        .expect_err("pulling an unknown tag must fail");
    let message = err.to_string();
    assert!(
        message.contains("MANIFEST_UNKNOWN") || message.contains("manifest unknown"),
        "unexpected error for an unknown tag: {message}"
    );
}
