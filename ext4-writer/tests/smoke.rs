mod common;

use common::*;
use ext4_writer::{FileData, NodeKind, Options};

#[test]
fn empty_tree_is_clean() {
    let tree = empty_tree();
    let image = write_checked(&tree, &Options::default());
    let fs = image.view();
    let names: Vec<String> = fs
        .read_dir("/")
        .unwrap()
        .map(|entry| entry.unwrap().file_name().as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"lost+found".to_string()), "{names:?}");
}

#[test]
fn few_files_are_clean() {
    let mut tree = empty_tree();
    let root = tree.root();
    tree.add(
        root,
        b"hello",
        NodeKind::Regular(FileData::from_bytes(b"hello world\n".to_vec())),
        meta(0o644),
    )
    .unwrap();
    let image = write_checked(&tree, &Options::default());
    assert_eq!(image.view().read("/hello").unwrap(), b"hello world\n");
}
