//! Kernel module metadata and load order, without depmod.
//!
//! Distribution kernel packages ship no `modules.dep` because depmod writes
//! it at install time. So the load order comes from each module's own
//! `.modinfo` ELF section, a list of NUL-separated `key=value` strings. In it
//! `name=` is the module name and `depends=` lists the modules it needs,
//! separated by commas.
//! `modules.builtin` lists the modules compiled into the kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use object::read::elf::ElfFile64;
use object::{Endianness, Object, ObjectSection};

use super::error::{Error, Result};

/// The metadata of one module file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModInfo {
    /// The module name, with `_` where the file name may have `-`.
    pub name: String,
    /// Names of the modules that must be loaded first.
    pub depends: Vec<String>,
}

/// The module files of one modules tree (`lib/modules/<version>`), by name.
#[derive(Debug)]
pub struct ModuleIndex {
    version: String,
    /// Module name to the path of its file (`.ko`, `.ko.xz` or `.ko.zst`).
    files: BTreeMap<String, PathBuf>,
    /// Names of the modules built into the kernel.
    builtin: BTreeSet<String>,
}

/// A module file to put into an initrd, in load order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderedModule {
    pub name: String,
    pub path: PathBuf,
}

impl ModuleIndex {
    /// Indexes the modules tree `dir` of kernel `version` by walking it for
    /// module files. Symlinks are not followed.
    pub fn scan(dir: &Path, version: &str) -> Result<Self> {
        let mut files = BTreeMap::new();
        walk(dir, &mut files)?;
        let builtin = read_builtin(&dir.join("modules.builtin"))?;
        Ok(Self {
            version: version.to_string(),
            files,
            builtin,
        })
    }

    /// Returns the index of a kernel without a modules tree, in which nothing
    /// is loadable and nothing is known to be built in.
    pub fn empty(version: &str) -> Self {
        Self {
            version: version.to_string(),
            files: BTreeMap::new(),
            builtin: BTreeSet::new(),
        }
    }

    /// Returns whether the kernel has `name` compiled in.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize_name(name))
    }

    /// Returns the module files that load `requested` in order, each after the
    /// modules it depends on, leaving out built-in modules.
    ///
    /// # Errors
    /// [`Error::MissingModule`] when a module or a dependency is neither built
    /// in nor in the tree, and [`Error::InvalidModule`] for an unreadable
    /// module or a dependency cycle.
    pub fn load_order(&self, requested: &[&str]) -> Result<Vec<OrderedModule>> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        for name in requested {
            let mut visiting = Vec::new();
            self.visit(&normalize_name(name), &mut visiting, &mut done, &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        visiting: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        order: &mut Vec<OrderedModule>,
    ) -> Result<()> {
        if done.contains(name) || self.builtin.contains(name) {
            return Ok(());
        }
        let path = self.files.get(name).ok_or_else(|| Error::MissingModule {
            version: self.version.clone(),
            module: name.to_string(),
        })?;
        if visiting.iter().any(|v| v == name) {
            return Err(Error::InvalidModule {
                path: path.clone(),
                reason: format!("dependency cycle {} -> {name}", visiting.join(" -> ")),
            });
        }

        visiting.push(name.to_string());
        let info = read_modinfo(path)?;
        for dependency in &info.depends {
            self.visit(dependency, visiting, done, order)?;
        }
        visiting.pop();

        done.insert(name.to_string());
        order.push(OrderedModule {
            name: name.to_string(),
            path: path.clone(),
        });
        Ok(())
    }
}

fn walk(dir: &Path, files: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(Error::io("read directory", dir)(error)),
    };
    for entry in entries {
        let entry = entry.map_err(Error::io("read directory", dir))?;
        let file_type = entry.file_type().map_err(Error::io("read", entry.path()))?;
        let path = entry.path();
        if file_type.is_dir() {
            walk(&path, files)?;
        } else if file_type.is_file() {
            if let Some(name) = module_name_from_file(&path) {
                files.entry(name).or_insert(path);
            }
        }
    }
    Ok(())
}

/// Returns the module name of a path ending in `.ko`, `.ko.xz` or `.ko.zst`.
fn module_name_from_file(path: &Path) -> Option<String> {
    let file_name = path.file_name()?.to_str()?;
    let stem = file_name
        .strip_suffix(".ko")
        .or_else(|| file_name.strip_suffix(".ko.xz"))
        .or_else(|| file_name.strip_suffix(".ko.zst"))?;
    Some(normalize_name(stem))
}

/// Normalizes a module name to `_`, because the kernel treats `-` and `_`
/// in module names alike and reports `_`.
pub fn normalize_name(name: &str) -> String {
    name.replace('-', "_")
}

fn read_builtin(path: &Path) -> Result<BTreeSet<String>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(error) => return Err(Error::io("read", path)(error)),
    };
    Ok(text
        .lines()
        .filter_map(|line| module_name_from_file(Path::new(line.trim())))
        .collect())
}

/// Reads a module file's bytes, undoing xz or zstd compression.
pub fn read_module(path: &Path) -> Result<Vec<u8>> {
    let raw = fs::read(path).map_err(Error::io("read", path))?;
    let name = path.to_string_lossy();
    let mut data = Vec::new();
    if name.ends_with(".ko.xz") {
        xz2::read::XzDecoder::new(&raw[..])
            .read_to_end(&mut data)
            .map_err(Error::io("decompress", path))?;
    } else if name.ends_with(".ko.zst") {
        data = zstd::stream::decode_all(&raw[..]).map_err(Error::io("decompress", path))?;
    } else {
        data = raw;
    }
    Ok(data)
}

/// Reads the `.modinfo` section of the module file at `path`.
pub fn read_modinfo(path: &Path) -> Result<ModInfo> {
    let data = read_module(path)?;
    parse_modinfo(&data).map_err(|reason| Error::InvalidModule {
        path: path.to_path_buf(),
        reason,
    })
}

/// Parses the `.modinfo` section of an ELF module image.
pub fn parse_modinfo(data: &[u8]) -> std::result::Result<ModInfo, String> {
    let elf = ElfFile64::<Endianness>::parse(data)
        .map_err(|error| format!("not a 64-bit ELF module: {error}"))?;
    let section = elf
        .section_by_name(".modinfo")
        .ok_or("no .modinfo section")?;
    let bytes = section
        .data()
        .map_err(|error| format!("unreadable .modinfo section: {error}"))?;

    let mut name = None;
    let mut depends = Vec::new();
    for field in bytes.split(|&b| b == 0) {
        let field = String::from_utf8_lossy(field);
        if let Some(value) = field.strip_prefix("name=") {
            name = Some(normalize_name(value));
        } else if let Some(value) = field.strip_prefix("depends=") {
            depends.extend(
                value
                    .split(',')
                    .filter(|d| !d.is_empty())
                    .map(normalize_name),
            );
        }
    }

    let name = name.ok_or("the .modinfo section has no name= field")?;
    Ok(ModInfo { name, depends })
}
