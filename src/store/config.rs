//! Settings from a TOML file and `BANGER_*` environment variables.
//!
//! Each setting comes from the first of: its environment variable, the config
//! file, the built-in default. The file is `--config FILE` (or
//! `BANGER_CONFIG`) when given. Otherwise it is `/etc/banger/config.toml` for
//! root (the daemon) and `$XDG_CONFIG_HOME/banger/config.toml` for other
//! users, and a missing default file leaves every setting at its default. An
//! environment variable set to the empty string counts as unset.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Classify, ExitCode};
use crate::store::paths::{self, Paths};

/// Config file read by root and the daemon when `--config` is not given.
pub const SYSTEM_CONFIG_FILE: &str = "/etc/banger/config.toml";

/// Environment variable naming the config file, like `--config`.
pub const CONFIG_ENV: &str = "BANGER_CONFIG";

/// Every setting: its key in the config file, its environment variable and
/// the TOML type it expects.
pub const SETTINGS: &[Setting] = &[
    Setting::new("cache_dir", "BANGER_CACHE_DIR", "an absolute path"),
    Setting::new("data_dir", "BANGER_DATA_DIR", "an absolute path"),
    Setting::new("runtime_dir", "BANGER_RUNTIME_DIR", "an absolute path"),
    Setting::new(
        "insecure_registries",
        "BANGER_INSECURE_REGISTRIES",
        "an array of HOST[:PORT] strings (in the environment: comma-separated)",
    ),
    Setting::new("platform", "BANGER_PLATFORM", "a string OS/ARCH[/VARIANT]"),
    Setting::new("default_kernel", "BANGER_DEFAULT_KERNEL", "a kernel name"),
    Setting::new(
        "log_level",
        "BANGER_LOG_LEVEL",
        "one of error, warn, info, debug, trace",
    ),
];

/// One configurable setting.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// Key in the config file.
    pub key: &'static str,
    /// Environment variable that overrides the key.
    pub env: &'static str,
    /// Description of a valid value, for error messages and help.
    pub expected: &'static str,
}

impl Setting {
    const fn new(key: &'static str, env: &'static str, expected: &'static str) -> Self {
        Self { key, env, expected }
    }
}

/// The resolved settings of one banger process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Cache, data and runtime roots, after `cache_dir`, `data_dir` and
    /// `runtime_dir` overrides.
    pub paths: Paths,
    /// Registries reached over plain HTTP, as `HOST[:PORT]`; no other
    /// registry is.
    pub insecure_registries: Vec<String>,
    /// Platform selected from multi-platform images.
    pub platform: Platform,
    /// Kernel used by `vm run` without `--kernel`; `None` leaves the choice
    /// to the kernel catalog's own default.
    pub default_kernel: Option<String>,
    /// Log level before `-v` raises it.
    pub log_level: LogLevel,
    /// The config file that was read, if any.
    pub file: Option<PathBuf>,
}

/// An OCI platform: `os/architecture[/variant]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Default for Platform {
    fn default() -> Self {
        Self {
            os: "linux".to_owned(),
            architecture: "amd64".to_owned(),
            variant: None,
        }
    }
}

impl FromStr for Platform {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.split('/').collect();
        let valid_part = |part: &&str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(valid_part) {
            return Err(format!(
                "invalid platform `{text}`: expected OS/ARCH or OS/ARCH/VARIANT, such as linux/amd64 or linux/arm64/v8"
            ));
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

/// Log verbosity, from least to most output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    #[default]
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// Returns the level `steps` places more verbose, stopping at `Trace`.
    pub fn raised_by(self, steps: u8) -> Self {
        const ORDER: [LogLevel; 5] = [
            LogLevel::Error,
            LogLevel::Warn,
            LogLevel::Info,
            LogLevel::Debug,
            LogLevel::Trace,
        ];
        let index = self as usize + usize::from(steps);
        ORDER[index.min(ORDER.len() - 1)]
    }

    /// Converts the level to a `tracing` level filter.
    pub fn to_filter(self) -> tracing::level_filters::LevelFilter {
        use tracing::level_filters::LevelFilter;
        match self {
            LogLevel::Error => LevelFilter::ERROR,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Trace => LevelFilter::TRACE,
        }
    }
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "error" => Ok(LogLevel::Error),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            "trace" => Ok(LogLevel::Trace),
            _ => Err(format!(
                "invalid log level `{text}`: expected one of error, warn, info, debug, trace"
            )),
        }
    }
}

/// Failure to load the configuration. Every variant is a usage error (exit
/// code 2) because the user fixes it in the file or the variable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file named by `--config` or `BANGER_CONFIG` does not exist.
    #[error("config file `{}` not found; create it or drop --config and BANGER_CONFIG", file.display())]
    FileNotFound { file: PathBuf },

    /// The config file exists but could not be read.
    #[error("failed to read config file `{}`", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The file is not valid TOML.
    #[error("invalid TOML in config file `{}` at line {line}, column {column}: {message}", file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    /// A key that no setting has.
    #[error("unknown key `{key}` in config file `{}`; valid keys are {}", file.display(), valid_keys())]
    UnknownKey { key: String, file: PathBuf },

    /// A key whose value has the wrong TOML type.
    #[error("key `{key}` in config file `{}` must be {expected}, found {found}", file.display())]
    WrongType {
        key: String,
        file: PathBuf,
        expected: &'static str,
        found: &'static str,
    },

    /// A key whose value has the right type but is not valid.
    #[error("key `{key}` in config file `{}`: {reason}", file.display())]
    InvalidValue {
        key: String,
        file: PathBuf,
        reason: String,
    },

    /// An environment variable whose value is not valid.
    #[error("environment variable {variable}: {reason}")]
    InvalidEnv {
        variable: &'static str,
        reason: String,
    },
}

impl Classify for ConfigError {
    fn exit_code(&self) -> ExitCode {
        ExitCode::Usage
    }
}

fn valid_keys() -> String {
    SETTINGS
        .iter()
        .map(|s| s.key)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Settings as read from one source, before defaults fill the gaps.
#[derive(Debug, Default)]
struct Layer {
    cache_dir: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    runtime_dir: Option<PathBuf>,
    insecure_registries: Option<Vec<String>>,
    platform: Option<Platform>,
    default_kernel: Option<String>,
    log_level: Option<LogLevel>,
}

impl Layer {
    /// Fills every setting that `self` lacks from `lower`.
    fn over(self, lower: Layer) -> Layer {
        Layer {
            cache_dir: self.cache_dir.or(lower.cache_dir),
            data_dir: self.data_dir.or(lower.data_dir),
            runtime_dir: self.runtime_dir.or(lower.runtime_dir),
            insecure_registries: self.insecure_registries.or(lower.insecure_registries),
            platform: self.platform.or(lower.platform),
            default_kernel: self.default_kernel.or(lower.default_kernel),
            log_level: self.log_level.or(lower.log_level),
        }
    }
}

impl Config {
    /// Loads the configuration of the current process from `explicit_file`
    /// (the `--config` option), the process environment and the defaults.
    pub fn load(explicit_file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(explicit_file, paths::is_root(), &|name| {
            std::env::var_os(name)
        })
    }

    /// Loads the configuration with `lookup` as the environment, for root or
    /// another user.
    pub fn load_with(
        explicit_file: Option<&Path>,
        is_root: bool,
        lookup: &dyn Fn(&str) -> Option<OsString>,
    ) -> Result<Self, ConfigError> {
        let lookup_set = |name: &str| lookup(name).filter(|value| !value.is_empty());

        let explicit_file = explicit_file
            .map(Path::to_path_buf)
            .or_else(|| lookup_set(CONFIG_ENV).map(PathBuf::from));
        let (file, file_layer) = match explicit_file {
            Some(file) => {
                let layer = read_file(&file, true)?.unwrap_or_default();
                (Some(file), layer)
            }
            None => {
                let file = default_file(is_root, &lookup_set);
                match read_file(&file, false)? {
                    Some(layer) => (Some(file), layer),
                    None => (None, Layer::default()),
                }
            }
        };
        let settings = read_env(&lookup_set)?.over(file_layer);

        let defaults = Paths::resolve(is_root, &|name| lookup_set(name).map(PathBuf::from));
        Ok(Self {
            paths: Paths {
                cache: settings.cache_dir.unwrap_or(defaults.cache),
                data: settings.data_dir.unwrap_or(defaults.data),
                runtime: settings.runtime_dir.unwrap_or(defaults.runtime),
            },
            insecure_registries: settings.insecure_registries.unwrap_or_default(),
            platform: settings.platform.unwrap_or_default(),
            default_kernel: settings.default_kernel,
            log_level: settings.log_level.unwrap_or_default(),
            file,
        })
    }

    /// Tells whether `registry` (`HOST[:PORT]`) is reached over plain HTTP.
    pub fn is_insecure_registry(&self, registry: &str) -> bool {
        self.insecure_registries.iter().any(|r| r == registry)
    }
}

/// Picks the config file read when none is named: the system file for root,
/// the XDG one (default `~/.config/banger/config.toml`) for other users.
fn default_file(is_root: bool, lookup: &dyn Fn(&str) -> Option<OsString>) -> PathBuf {
    if is_root {
        return PathBuf::from(SYSTEM_CONFIG_FILE);
    }
    let config_home = lookup("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| {
            lookup("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/"))
                .join(".config")
        });
    config_home.join("banger").join("config.toml")
}

/// Reads and validates `file`; `Ok(None)` when it is missing and not `required`.
fn read_file(file: &Path, required: bool) -> Result<Option<Layer>, ConfigError> {
    let text = match fs::read_to_string(file) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound && !required => return Ok(None),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(ConfigError::FileNotFound {
                file: file.to_path_buf(),
            })
        }
        Err(source) => {
            return Err(ConfigError::Read {
                file: file.to_path_buf(),
                source,
            })
        }
    };
    parse_file(&text, file).map(Some)
}

/// Parses the text of a config file; `file` only names it in errors.
fn parse_file(text: &str, file: &Path) -> Result<Layer, ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|err| {
        let (line, column) = err
            .span()
            .map(|span| line_and_column(text, span.start))
            .unwrap_or((1, 1));
        ConfigError::Syntax {
            file: file.to_path_buf(),
            line,
            column,
            message: err.message().trim().to_owned(),
        }
    })?;

    let mut layer = Layer::default();
    for (key, value) in &table {
        let setting =
            SETTINGS
                .iter()
                .find(|s| s.key == key)
                .ok_or_else(|| ConfigError::UnknownKey {
                    key: key.clone(),
                    file: file.to_path_buf(),
                })?;
        let wrong_type = || ConfigError::WrongType {
            key: key.clone(),
            file: file.to_path_buf(),
            expected: setting.expected,
            found: value.type_str(),
        };
        let invalid = |reason: String| ConfigError::InvalidValue {
            key: key.clone(),
            file: file.to_path_buf(),
            reason,
        };

        if key == "insecure_registries" {
            let array = value.as_array().ok_or_else(wrong_type)?;
            let mut registries = Vec::with_capacity(array.len());
            for item in array {
                let text = item.as_str().ok_or_else(wrong_type)?;
                registries.push(parse_registry(text).map_err(invalid)?);
            }
            layer.insecure_registries = Some(registries);
            continue;
        }
        let text = value.as_str().ok_or_else(wrong_type)?;
        match key.as_str() {
            "cache_dir" => layer.cache_dir = Some(parse_dir(text.into()).map_err(invalid)?),
            "data_dir" => layer.data_dir = Some(parse_dir(text.into()).map_err(invalid)?),
            "runtime_dir" => layer.runtime_dir = Some(parse_dir(text.into()).map_err(invalid)?),
            "platform" => layer.platform = Some(text.parse().map_err(invalid)?),
            "default_kernel" => layer.default_kernel = Some(parse_kernel(text).map_err(invalid)?),
            "log_level" => layer.log_level = Some(text.parse().map_err(invalid)?),
            // Every key of SETTINGS has an arm above.
            _ => unreachable!("setting `{key}` has no parser"),
        }
    }
    Ok(layer)
}

/// Reads every `BANGER_*` setting variable through `lookup`.
fn read_env(lookup: &dyn Fn(&str) -> Option<OsString>) -> Result<Layer, ConfigError> {
    let dir = |variable| env_setting(lookup, variable, &|v| parse_dir(PathBuf::from(v)));
    Ok(Layer {
        cache_dir: dir("BANGER_CACHE_DIR")?,
        data_dir: dir("BANGER_DATA_DIR")?,
        runtime_dir: dir("BANGER_RUNTIME_DIR")?,
        insecure_registries: env_setting(lookup, "BANGER_INSECURE_REGISTRIES", &|v| {
            v.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(parse_registry)
                .collect()
        })?,
        platform: env_setting(lookup, "BANGER_PLATFORM", &|v| v.parse())?,
        default_kernel: env_setting(lookup, "BANGER_DEFAULT_KERNEL", &parse_kernel)?,
        log_level: env_setting(lookup, "BANGER_LOG_LEVEL", &|v| v.parse())?,
    })
}

/// Parses environment variable `variable` with `parse`; `None` when unset.
fn env_setting<T>(
    lookup: &dyn Fn(&str) -> Option<OsString>,
    variable: &'static str,
    parse: &dyn Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    let Some(value) = lookup(variable) else {
        return Ok(None);
    };
    let value = value
        .into_string()
        .map_err(|value| ConfigError::InvalidEnv {
            variable,
            reason: format!("value {value:?} is not valid UTF-8"),
        })?;
    parse(&value)
        .map(Some)
        .map_err(|reason| ConfigError::InvalidEnv { variable, reason })
}

fn parse_dir(path: PathBuf) -> Result<PathBuf, String> {
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(format!(
            "path `{}` is relative; give an absolute path",
            path.display()
        ))
    }
}

/// Checks one insecure registry entry: a host with an optional port, no
/// scheme and no path, as it appears in image references.
pub fn parse_registry(text: &str) -> Result<String, String> {
    let invalid = |why: &str| {
        Err(format!(
            "invalid registry `{text}`: {why}; expected HOST[:PORT] such as 127.0.0.1:5000"
        ))
    };
    if text.is_empty() {
        return invalid("it is empty");
    }
    if text.contains("://") {
        return invalid("it has a URL scheme");
    }
    if text.contains('/') {
        return invalid("it has a path");
    }
    if text.chars().any(char::is_whitespace) {
        return invalid("it contains whitespace");
    }
    Ok(text.to_owned())
}

fn parse_kernel(text: &str) -> Result<String, String> {
    if text.is_empty() || text.contains('/') || text.chars().any(char::is_whitespace) {
        return Err(format!(
            "invalid kernel name `{text}`: a name is non-empty and has no `/` or whitespace"
        ));
    }
    Ok(text.to_owned())
}

/// 1-based line and column of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn environment(pairs: &[(&str, &str)]) -> HashMap<String, OsString> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect()
    }

    fn load(
        file: Option<&Path>,
        is_root: bool,
        env: &HashMap<String, OsString>,
    ) -> Result<Config, ConfigError> {
        Config::load_with(file, is_root, &|name| env.get(name).cloned())
    }

    fn write_config(dir: &Path, text: &str) -> PathBuf {
        let file = dir.join("config.toml");
        fs::write(&file, text).unwrap();
        file
    }

    #[test]
    fn defaults_without_file_or_env() {
        let env = environment(&[("HOME", "/nonexistent-home")]);
        let config = load(None, false, &env).unwrap();
        assert_eq!(config.file, None);
        assert_eq!(config.platform.to_string(), "linux/amd64");
        assert_eq!(config.log_level, LogLevel::Warn);
        assert!(config.insecure_registries.is_empty());
        assert_eq!(config.default_kernel, None);
        assert_eq!(
            config.paths.cache,
            PathBuf::from("/nonexistent-home/.cache/banger")
        );
    }

    #[test]
    fn user_file_found_through_xdg_config_home() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("banger")).unwrap();
        fs::write(
            dir.path().join("banger/config.toml"),
            "platform = \"linux/arm64/v8\"\n",
        )
        .unwrap();
        let env = environment(&[("XDG_CONFIG_HOME", dir.path().to_str().unwrap())]);
        let config = load(None, false, &env).unwrap();
        assert_eq!(config.file, Some(dir.path().join("banger/config.toml")));
        assert_eq!(config.platform.variant.as_deref(), Some("v8"));
    }

    #[test]
    fn every_setting_read_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_config(
            dir.path(),
            r#"
cache_dir = "/srv/cache"
data_dir = "/srv/data"
runtime_dir = "/srv/run"
insecure_registries = ["127.0.0.1:5055", "registry.local"]
platform = "linux/arm64"
default_kernel = "cloud-6.1"
log_level = "debug"
"#,
        );
        let config = load(Some(&file), true, &environment(&[])).unwrap();
        assert_eq!(config.paths.cache, PathBuf::from("/srv/cache"));
        assert_eq!(config.paths.data, PathBuf::from("/srv/data"));
        assert_eq!(config.paths.runtime, PathBuf::from("/srv/run"));
        assert_eq!(
            config.insecure_registries,
            vec!["127.0.0.1:5055".to_owned(), "registry.local".to_owned()]
        );
        assert!(config.is_insecure_registry("127.0.0.1:5055"));
        assert!(!config.is_insecure_registry("127.0.0.1:5056"));
        assert_eq!(config.platform.architecture, "arm64");
        assert_eq!(config.default_kernel.as_deref(), Some("cloud-6.1"));
        assert_eq!(config.log_level, LogLevel::Debug);
        assert_eq!(config.file, Some(file));
    }

    #[test]
    fn env_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_config(
            dir.path(),
            "cache_dir = \"/file/cache\"\ndata_dir = \"/file/data\"\nlog_level = \"info\"\n",
        );
        let env = environment(&[
            ("BANGER_CACHE_DIR", "/env/cache"),
            ("BANGER_INSECURE_REGISTRIES", "a:1, b:2,"),
            ("BANGER_LOG_LEVEL", ""),
        ]);
        let config = load(Some(&file), true, &env).unwrap();
        assert_eq!(config.paths.cache, PathBuf::from("/env/cache"));
        assert_eq!(config.paths.data, PathBuf::from("/file/data"));
        assert_eq!(config.paths.runtime, PathBuf::from("/run/banger"));
        assert_eq!(config.insecure_registries, vec!["a:1", "b:2"]);
        // An empty variable counts as unset, so the file's value stays.
        assert_eq!(config.log_level, LogLevel::Info);
    }

    #[test]
    fn config_env_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_config(dir.path(), "default_kernel = \"k\"\n");
        let env = environment(&[(CONFIG_ENV, file.to_str().unwrap())]);
        let config = load(None, true, &env).unwrap();
        assert_eq!(config.default_kernel.as_deref(), Some("k"));
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_config(dir.path(), "cache_dri = \"/x\"\n");
        let err = load(Some(&file), true, &environment(&[])).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, ConfigError::UnknownKey { .. }), "{message}");
        assert!(message.contains("`cache_dri`"), "{message}");
        assert!(message.contains(file.to_str().unwrap()), "{message}");
        assert!(message.contains("cache_dir"), "{message}");
        assert_eq!(err.exit_code(), ExitCode::Usage);
    }

    #[test]
    fn wrong_type_names_key_file_and_type() {
        let dir = tempfile::tempdir().unwrap();
        for (text, key, expected) in [
            ("platform = 5", "platform", "a string OS/ARCH[/VARIANT]"),
            (
                "insecure_registries = \"a:1\"",
                "insecure_registries",
                "an array",
            ),
            (
                "insecure_registries = [1]",
                "insecure_registries",
                "an array",
            ),
            ("cache_dir = true", "cache_dir", "an absolute path"),
        ] {
            let file = write_config(dir.path(), text);
            let err = load(Some(&file), true, &environment(&[])).unwrap_err();
            let message = err.to_string();
            assert!(matches!(err, ConfigError::WrongType { .. }), "{message}");
            assert!(message.contains(&format!("`{key}`")), "{message}");
            assert!(message.contains(file.to_str().unwrap()), "{message}");
            assert!(message.contains(expected), "{message}");
        }
    }

    #[test]
    fn invalid_values_rejected() {
        let dir = tempfile::tempdir().unwrap();
        for text in [
            "cache_dir = \"relative/dir\"",
            "platform = \"linux\"",
            "platform = \"linux//amd64\"",
            "log_level = \"loud\"",
            "insecure_registries = [\"http://127.0.0.1:5000\"]",
            "insecure_registries = [\"host/path\"]",
            "default_kernel = \"\"",
        ] {
            let file = write_config(dir.path(), text);
            let err = load(Some(&file), true, &environment(&[])).unwrap_err();
            assert!(
                matches!(err, ConfigError::InvalidValue { .. }),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let file = write_config(dir.path(), "platform = \"linux/amd64\"\nlog_level = \n");
        let err = load(Some(&file), true, &environment(&[])).unwrap_err();
        assert!(
            matches!(err, ConfigError::Syntax { line: 2, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn missing_explicit_file_rejected() {
        let err = load(
            Some(Path::new("/nonexistent/banger.toml")),
            true,
            &environment(&[]),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::FileNotFound { .. }), "{err}");
    }

    #[test]
    fn invalid_env_values_name_variable() {
        for (variable, value) in [
            ("BANGER_LOG_LEVEL", "loud"),
            ("BANGER_PLATFORM", "amd64"),
            ("BANGER_DATA_DIR", "data"),
            ("BANGER_INSECURE_REGISTRIES", "https://r.example"),
            ("BANGER_DEFAULT_KERNEL", "a b"),
        ] {
            let err = load(None, true, &environment(&[(variable, value)])).unwrap_err();
            let message = err.to_string();
            assert!(matches!(err, ConfigError::InvalidEnv { .. }), "{message}");
            assert!(message.contains(variable), "{message}");
            assert!(message.contains(value), "{message}");
        }
    }

    #[test]
    fn log_level_raised_by_verbose_steps() {
        assert_eq!(LogLevel::Warn.raised_by(0), LogLevel::Warn);
        assert_eq!(LogLevel::Warn.raised_by(1), LogLevel::Info);
        assert_eq!(LogLevel::Error.raised_by(2), LogLevel::Info);
        assert_eq!(LogLevel::Warn.raised_by(200), LogLevel::Trace);
    }

    #[test]
    fn every_setting_has_a_parser() {
        let dir = tempfile::tempdir().unwrap();
        for setting in SETTINGS {
            // A value of the wrong type reaches the per-key dispatch for
            // every key except insecure_registries, which checks arrays first.
            let file = write_config(dir.path(), &format!("{} = 1", setting.key));
            let err = load(Some(&file), true, &environment(&[])).unwrap_err();
            assert!(matches!(err, ConfigError::WrongType { .. }), "{err}");
        }
    }
}
