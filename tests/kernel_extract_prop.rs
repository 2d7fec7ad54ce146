//! Property test of safe extraction: whatever entries an archive holds,
//! extraction writes nothing outside the staging directory, and every
//! relative symlink it creates resolves inside it.

mod kernel_support;

use std::fs;
use std::path::{Component, Path};

use banger::kernel::extract::{extract_tar, Mapping, Staging};
use kernel_support::{raw_tar, RawEntry};
use proptest::prelude::*;

/// Generates an entry name component: mostly a plain name, sometimes `..` or `.`.
fn name_component() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        8 => prop::sample::select(vec!["a", "b"]),
        1 => Just(".."),
        1 => Just("."),
    ]
}

/// Generates a link target component, `..` about as often as a plain name.
fn target_component() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        4 => Just(".."),
        3 => prop::sample::select(vec!["a", "b", "lib"]),
        1 => Just("."),
    ]
}

/// Joins one to three components, with a leading `/` one time in `absolute_in`.
fn path_of(
    component: impl Strategy<Value = &'static str>,
    absolute_in: u32,
) -> impl Strategy<Value = String> {
    (
        prop::bool::weighted(1.0 / f64::from(absolute_in)),
        prop::collection::vec(component, 1..3),
    )
        .prop_map(|(absolute, parts)| {
            let joined = parts.join("/");
            if absolute {
                format!("/{joined}")
            } else {
                joined
            }
        })
}

/// Generates a link target: an absolute path to a directory that exists
/// outside the staging directory (after rewriting), or a relative path.
fn link_target() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => prop::sample::select(vec!["/", "/a"]).prop_map(String::from),
        2 => path_of(target_component(), 1000),
    ]
}

#[derive(Clone, Debug)]
enum Kind {
    Dir,
    File,
    Symlink(String),
    HardLink(String),
}

fn entry() -> impl Strategy<Value = (String, Kind)> {
    let kind = prop_oneof![
        1 => Just(Kind::Dir),
        2 => Just(Kind::File),
        2 => link_target().prop_map(Kind::Symlink),
        1 => link_target().prop_map(Kind::HardLink),
    ];
    (path_of(name_component(), 8), kind)
}

/// Returns whether the relative symlink at `link` (relative to the root)
/// resolves lexically above the root.
fn escapes(link: &Path, target: &Path) -> bool {
    let mut depth = link.components().count() - 1;
    for component in target.components() {
        match component {
            Component::ParentDir if depth == 0 => return true,
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    false
}

/// Lists every path under `dir`, recursively and sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut paths = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for child in fs::read_dir(&current).unwrap() {
            let path = child.unwrap().path();
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                pending.push(path.clone());
            }
            paths.push(path.display().to_string());
        }
    }
    paths.sort();
    paths
}

fn check_tree(root: &Path, rel: &Path) {
    for child in fs::read_dir(root.join(rel)).unwrap() {
        let child = child.unwrap();
        let child_rel = rel.join(child.file_name());
        let meta = fs::symlink_metadata(child.path()).unwrap();
        if meta.is_dir() {
            check_tree(root, &child_rel);
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(child.path()).unwrap();
            assert!(
                target.is_absolute() || !escapes(&child_rel, &target),
                "symlink {} -> {} escapes",
                child_rel.display(),
                target.display()
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn extraction_stays_inside(entries in prop::collection::vec(entry(), 1..8)) {
        let work = tempfile::tempdir().unwrap();
        let stage = work.path().join("stage");
        let outside = work.path().join("outside");
        fs::create_dir(&stage).unwrap();
        // Existing directories outside give a symlink to them something to
        // write through.
        for dir in ["a", "b"] {
            fs::create_dir_all(outside.join(dir)).unwrap();
        }
        let before = listing(&outside);

        // Point absolute targets at the sibling directory, so that an escape
        // would land somewhere this test can see.
        let outside_text = outside.display().to_string();
        let rewrite = |p: &str| if p.starts_with('/') { format!("{outside_text}{p}") } else { p.to_string() };
        let owned: Vec<(String, Kind)> = entries
            .iter()
            .map(|(name, kind)| {
                let kind = match kind {
                    Kind::Symlink(t) => Kind::Symlink(rewrite(t)),
                    Kind::HardLink(t) => Kind::HardLink(rewrite(t)),
                    other => other.clone(),
                };
                (rewrite(name), kind)
            })
            .collect();
        let raw: Vec<RawEntry<'_>> = owned
            .iter()
            .map(|(name, kind)| match kind {
                Kind::Dir => RawEntry::Dir(name),
                Kind::File => RawEntry::File(name, b"data"),
                Kind::Symlink(target) => RawEntry::Symlink(name, target),
                Kind::HardLink(target) => RawEntry::HardLink(name, target),
            })
            .collect();
        let archive = raw_tar(&raw);

        let staging = Staging::new(&stage, Path::new("prop.tar"));
        // Hostile entries make extraction fail, so only its effects are checked.
        let _ = extract_tar(&archive[..], &staging, |rel| Ok(Mapping::To(rel.to_path_buf())));

        prop_assert_eq!(listing(&outside), before);
        check_tree(&stage, Path::new(""));
    }
}
