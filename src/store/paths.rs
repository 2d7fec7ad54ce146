//! Where banger keeps its files, following the XDG base directory spec for
//! users and the FHS for root.

use std::env;
use std::path::{Path, PathBuf};

/// The three directory roots banger writes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// Re-creatable downloads: the OCI blob cache.
    pub cache: PathBuf,
    /// Built images, the kernel catalog and VM records.
    pub data: PathBuf,
    /// Sockets and PID files that do not outlive a reboot.
    pub runtime: PathBuf,
}

impl Paths {
    /// Paths for the current process: `/var/cache/banger`, `/var/lib/banger`
    /// and `/run/banger` for root; `$XDG_CACHE_HOME/banger`,
    /// `$XDG_DATA_HOME/banger` and `$XDG_RUNTIME_DIR/banger` (with the XDG
    /// defaults under `$HOME`) for anyone else.
    pub fn for_current_user() -> Self {
        let is_root = is_root();
        Self::resolve(is_root, &|name| env::var_os(name).map(PathBuf::from))
    }

    /// Resolves the paths from `lookup` (an environment) for root or a user.
    pub fn resolve(is_root: bool, lookup: &dyn Fn(&str) -> Option<PathBuf>) -> Self {
        if is_root {
            return Self {
                cache: PathBuf::from("/var/cache/banger"),
                data: PathBuf::from("/var/lib/banger"),
                runtime: PathBuf::from("/run/banger"),
            };
        }
        let home = lookup("HOME").unwrap_or_else(|| PathBuf::from("/"));
        let xdg = |name: &str, default: &Path| {
            lookup(name)
                .filter(|p| p.is_absolute())
                .unwrap_or_else(|| default.to_path_buf())
                .join("banger")
        };
        let runtime_default = env::temp_dir().join(format!("banger-{}", current_uid()));
        Self {
            cache: xdg("XDG_CACHE_HOME", &home.join(".cache")),
            data: xdg("XDG_DATA_HOME", &home.join(".local/share")),
            runtime: lookup("XDG_RUNTIME_DIR")
                .filter(|p| p.is_absolute())
                .map(|p| p.join("banger"))
                .unwrap_or(runtime_default),
        }
    }
}

fn current_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(0)
}

/// Whether the process runs as root (effective uid 0).
pub fn is_root() -> bool {
    current_uid() == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_uses_fhs_paths() {
        let paths = Paths::resolve(true, &|_| None);
        assert_eq!(paths.cache, PathBuf::from("/var/cache/banger"));
        assert_eq!(paths.data, PathBuf::from("/var/lib/banger"));
        assert_eq!(paths.runtime, PathBuf::from("/run/banger"));
    }

    #[test]
    fn user_uses_xdg_variables() {
        let env = |name: &str| match name {
            "HOME" => Some(PathBuf::from("/home/u")),
            "XDG_CACHE_HOME" => Some(PathBuf::from("/c")),
            "XDG_RUNTIME_DIR" => Some(PathBuf::from("/run/user/1000")),
            _ => None,
        };
        let paths = Paths::resolve(false, &env);
        assert_eq!(paths.cache, PathBuf::from("/c/banger"));
        assert_eq!(paths.data, PathBuf::from("/home/u/.local/share/banger"));
        assert_eq!(paths.runtime, PathBuf::from("/run/user/1000/banger"));
    }
}
