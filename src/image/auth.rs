//! Registry credentials from the Docker client configuration (`auths`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

/// Docker Hub's key in `auths`, written by `docker login` without a server.
const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// A Docker configuration file that exists but cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("failed to read Docker config `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid Docker config `{path}`: {source}; fix the JSON or remove the file")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("invalid `auth` entry for `{registry}` in Docker config `{path}`: {reason}; run `docker login {registry}` again or remove the entry")]
    InvalidEntry {
        path: PathBuf,
        registry: String,
        reason: &'static str,
    },
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The Docker config path: `$DOCKER_CONFIG/config.json`, else
/// `$HOME/.docker/config.json`.
pub fn default_docker_config() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
}

/// Looks up the credentials for `registry` (as written in the reference,
/// such as `docker.io` or `127.0.0.1:5055`) in the Docker config at
/// `config_path`. A missing file or entry means anonymous access.
pub fn credentials_for(
    registry: &str,
    config_path: Option<&Path>,
) -> Result<RegistryAuth, CredentialsError> {
    let Some(path) = config_path else {
        return Ok(RegistryAuth::Anonymous);
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(RegistryAuth::Anonymous)
        }
        Err(source) => {
            return Err(CredentialsError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    let config: DockerConfig =
        serde_json::from_str(&text).map_err(|source| CredentialsError::Parse {
            path: path.to_owned(),
            source,
        })?;

    let Some((key, entry)) = config
        .auths
        .iter()
        .find(|(key, _)| auth_key_matches(key, registry))
    else {
        return Ok(RegistryAuth::Anonymous);
    };
    let invalid = |reason| CredentialsError::InvalidEntry {
        path: path.to_owned(),
        registry: key.clone(),
        reason,
    };

    if let Some(encoded) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| invalid("it is not base64"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| invalid("it is not UTF-8"))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| invalid("it does not decode to USER:PASSWORD"))?;
        return Ok(RegistryAuth::Basic(user.to_owned(), password.to_owned()));
    }
    match (&entry.username, &entry.password) {
        (Some(user), Some(password)) => Ok(RegistryAuth::Basic(user.clone(), password.clone())),
        _ => Ok(RegistryAuth::Anonymous),
    }
}

/// Whether an `auths` key names `registry`. Keys may carry a scheme and a
/// path (`https://ghcr.io/v1/`), and Docker Hub has its own historic key.
fn auth_key_matches(key: &str, registry: &str) -> bool {
    if registry == "docker.io" || registry == "index.docker.io" {
        return key == DOCKER_HUB_AUTH_KEY
            || host_of(key) == "docker.io"
            || host_of(key) == "index.docker.io";
    }
    host_of(key) == registry
}

fn host_of(key: &str) -> &str {
    let without_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    without_scheme.split('/').next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_config(json: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), json).unwrap();
        dir
    }

    fn basic(user: &str, password: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    }

    #[test]
    fn missing_file_is_anonymous() {
        let dir = tempfile::tempdir().unwrap();
        let auth = credentials_for("ghcr.io", Some(&dir.path().join("config.json"))).unwrap();
        assert_eq!(auth, RegistryAuth::Anonymous);
    }

    #[test]
    fn auth_entry_decodes_user_and_password() {
        let dir = write_config(&format!(
            r#"{{"auths":{{"127.0.0.1:5055":{{"auth":"{}"}}}}}}"#,
            basic("alice", "pa:ss")
        ));
        let auth =
            credentials_for("127.0.0.1:5055", Some(&dir.path().join("config.json"))).unwrap();
        assert_eq!(auth, RegistryAuth::Basic("alice".into(), "pa:ss".into()));
    }

    #[test]
    fn docker_hub_uses_its_v1_key() {
        let dir = write_config(&format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}}}}}}"#,
            basic("bob", "secret")
        ));
        let auth = credentials_for("docker.io", Some(&dir.path().join("config.json"))).unwrap();
        assert_eq!(auth, RegistryAuth::Basic("bob".into(), "secret".into()));
    }

    #[test]
    fn other_registry_stays_anonymous() {
        let dir = write_config(&format!(
            r#"{{"auths":{{"https://ghcr.io":{{"auth":"{}"}}}}}}"#,
            basic("bob", "secret")
        ));
        let path = dir.path().join("config.json");
        assert_eq!(
            credentials_for("quay.io", Some(&path)).unwrap(),
            RegistryAuth::Anonymous
        );
        assert_eq!(
            credentials_for("ghcr.io", Some(&path)).unwrap(),
            RegistryAuth::Basic("bob".into(), "secret".into())
        );
    }

    #[test]
    fn invalid_base64_is_an_error() {
        let dir = write_config(r#"{"auths":{"ghcr.io":{"auth":"%%%"}}}"#);
        let error = credentials_for("ghcr.io", Some(&dir.path().join("config.json"))).unwrap_err();
        assert!(error.to_string().contains("not base64"), "{error}");
    }

    #[test]
    fn invalid_json_is_an_error() {
        let dir = write_config("{");
        let error = credentials_for("ghcr.io", Some(&dir.path().join("config.json"))).unwrap_err();
        assert!(matches!(error, CredentialsError::Parse { .. }));
    }
}
