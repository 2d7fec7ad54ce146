//! Sizing, inode counts and reproducible builds.

mod common;

use common::*;
use ext4_writer::{FileData, NodeKind, Options, Reproducible, Sizing, Tree};
use sha2::{Digest, Sha256};

fn tree_with_content(bytes: usize) -> Tree {
    let mut tree = empty_tree();
    let root = tree.root();
    let content: Vec<u8> = (0..bytes).map(|i| (i % 251).to_le_bytes()[0] | 1).collect();
    tree.add(
        root,
        b"data",
        NodeKind::Regular(FileData::from_bytes(content)),
        meta(0o644),
    )
    .unwrap();
    for index in 0..50u32 {
        tree.add(
            root,
            format!("f{index}").as_bytes(),
            NodeKind::Regular(FileData::from_bytes(vec![1u8; 5000])),
            meta(0o644),
        )
        .unwrap();
    }
    tree
}

#[test]
fn fixed_size_too_small_names_minimum() {
    let tree = tree_with_content(8 << 20);
    let minimum = ext4_writer::minimum_size(&tree, &Options::default()).unwrap();
    let options = Options {
        sizing: Sizing::Fixed { bytes: 4 << 20 },
        ..Options::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join("small.img")).unwrap();
    let error = ext4_writer::write_file(&tree, &options, &file).unwrap_err();
    match &error {
        ext4_writer::Error::DoesNotFit {
            required_bytes,
            available_bytes,
        } => {
            assert_eq!(*required_bytes, minimum);
            assert_eq!(*available_bytes, 4 << 20);
        }
        other => panic!("expected DoesNotFit, got {other}"),
    }
    assert!(error.to_string().contains(&minimum.to_string()), "{error}");
}

#[test]
fn minimum_size_fits() {
    let tree = tree_with_content(8 << 20);
    let minimum = ext4_writer::minimum_size(&tree, &Options::default()).unwrap();
    let options = Options {
        sizing: Sizing::Fixed { bytes: minimum },
        ..Options::default()
    };
    let image = write_checked(&tree, &options);
    assert_eq!(image.report.size_bytes, minimum);
    assert!(
        minimum < 16 << 20,
        "8 MiB of content and a 4 MiB journal need less than 16 MiB: {minimum}"
    );
}

#[test]
fn fixed_size_is_exact() {
    let tree = tree_with_content(100_000);
    let bytes = 300 << 20;
    let options = Options {
        sizing: Sizing::Fixed { bytes },
        ..Options::default()
    };
    let image = write_checked(&tree, &options);
    assert_eq!(image.report.size_bytes, bytes);
    assert_eq!(std::fs::metadata(&image.path).unwrap().len(), bytes);
    assert_eq!(
        image.report.inodes as u64,
        bytes / 16384,
        "mke2fs's inode ratio"
    );
}

#[test]
fn auto_size_has_headroom() {
    let tree = tree_with_content(20 << 20);
    let options = Options {
        sizing: Sizing::Auto {
            headroom_percent: 50,
            min_free_bytes: 0,
        },
        ..Options::default()
    };
    let image = write_checked(&tree, &options);
    let report = image.report;
    let used = report.blocks - report.free_blocks;
    assert!(report.free_blocks * 100 >= used * 50, "{report:?}");
    assert!(
        report.free_blocks * 100 <= used * 60,
        "not far above the headroom: {report:?}"
    );
    assert!(
        report.blocks % 32768 != 0,
        "the last group is partial: {report:?}"
    );
}

#[test]
fn inode_count_honoured() {
    let tree = tree_with_content(1000);
    let options = Options {
        inode_count: Some(5000),
        ..Options::default()
    };
    let image = write_checked(&tree, &options);
    assert!(image.report.inodes >= 5000, "{:?}", image.report);
    let too_few = Options {
        inode_count: Some(20),
        ..Options::default()
    };
    let error = ext4_writer::minimum_size(&tree, &too_few).unwrap_err();
    assert!(
        matches!(
            error,
            ext4_writer::Error::TooFewInodes { requested: 20, .. }
        ),
        "{error}"
    );
}

fn sha256_of_image(tree: &Tree, options: &Options) -> String {
    let image = write_checked(tree, options);
    let bytes = std::fs::read(&image.path).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[test]
fn reproducible_builds_identical() {
    let tree = tree_with_content(1 << 20);
    let options = reproducible();
    let first = sha256_of_image(&tree, &options);
    let second = sha256_of_image(&tree, &options);
    assert_eq!(first, second);
    let other_seed = Options {
        reproducible: Some(Reproducible {
            seed: 43,
            timestamp: 1_700_000_000,
            clamp_mtime: false,
        }),
        ..Options::default()
    };
    assert_ne!(
        first,
        sha256_of_image(&tree, &other_seed),
        "the seed changes the UUID"
    );
}

#[test]
fn reproducible_timestamp_in_superblock() {
    let image = write_checked(&empty_tree(), &reproducible());
    let stats = debugfs(&image.path, "stats");
    assert!(
        stats.contains("Filesystem created:       Tue Nov 14 22:13:20 2023"),
        "{stats}"
    );
}

#[test]
fn write_to_seekable_buffer_matches_file() {
    let tree = tree_with_content(1 << 20);
    let options = reproducible();
    let mut buffer = std::io::Cursor::new(Vec::new());
    let report = ext4_writer::write(&tree, &options, &mut buffer).unwrap();
    let bytes = buffer.into_inner();
    assert_eq!(bytes.len() as u64, report.size_bytes);
    let from_file = write_checked(&tree, &options);
    assert_eq!(bytes, std::fs::read(&from_file.path).unwrap());
}

#[test]
fn fixed_size_zero_does_not_fit() {
    for block_size in [ext4_writer::BlockSize::B1024, ext4_writer::BlockSize::B4096] {
        for bytes in [0u64, 1, 4096, 20 * 1024] {
            let options = Options {
                block_size,
                sizing: Sizing::Fixed { bytes },
                ..Options::default()
            };
            let mut buffer = std::io::Cursor::new(Vec::new());
            let error = ext4_writer::write(&empty_tree(), &options, &mut buffer).unwrap_err();
            assert!(
                matches!(error, ext4_writer::Error::DoesNotFit { .. }),
                "{bytes} bytes: {error}"
            );
        }
    }
}

#[test]
fn auto_size_leaves_free_inodes() {
    let image = write_checked(&tree_with_content(1000), &Options::default());
    // The default 16 MiB of free space at 16 KiB per inode.
    assert!(image.report.free_inodes >= 1024, "{:?}", image.report);
}

#[test]
fn many_groups_with_one_kib_blocks() {
    // 256 groups of 8 MiB: the bitmaps and inode tables run past the
    // superblock copies of groups 1 and 3, which the allocator skips.
    let options = Options {
        block_size: ext4_writer::BlockSize::B1024,
        sizing: Sizing::Fixed { bytes: 2 << 30 },
        ..Options::default()
    };
    let image = write_checked(&tree_with_content(3 << 20), &options);
    assert_eq!(image.report.blocks, 2 << 20);
    assert!(debugfs(&image.path, "stats").contains("Inode count:              131072"));
}

#[test]
fn descriptor_table_of_several_blocks() {
    // 160 groups of 128 MiB need three blocks of 64-byte descriptors.
    let options = Options {
        sizing: Sizing::Fixed { bytes: 20 << 30 },
        ..Options::default()
    };
    let image = write_checked(&tree_with_content(1 << 20), &options);
    assert_eq!(image.report.size_bytes, 20 << 30);
    let stats = debugfs(&image.path, "stats");
    assert!(
        stats.contains("Group 159:"),
        "{}",
        &stats[..stats.len().min(500)]
    );
}

#[test]
fn large_journal_gets_extent_tree() {
    // From 2^25 blocks mke2fs picks a journal of 262144 blocks: eight
    // extents of 32768, more than the four that fit in the inode.
    let options = Options {
        sizing: Sizing::Fixed { bytes: 200 << 30 },
        ..Options::default()
    };
    let image = write_checked(&tree_with_content(1000), &options);
    let journal = debugfs(&image.path, "stat <8>");
    assert!(journal.contains("Size: 1073741824"), "{journal}");
    let extents = debugfs(&image.path, "ex <8>");
    assert!(
        extents.contains(" 1/ 1 "),
        "a leaf below the inode: {extents}"
    );
}

#[test]
fn too_large_advice_fits_cause() {
    let tree = empty_tree();
    let many_inodes = Options {
        inode_count: Some(u32::MAX),
        ..Options::default()
    };
    let huge_headroom = Options {
        sizing: Sizing::Auto {
            headroom_percent: u32::MAX,
            min_free_bytes: 0,
        },
        ..Options::default()
    };
    let huge_fixed = Options {
        sizing: Sizing::Fixed { bytes: 300 << 40 },
        ..Options::default()
    };

    for options in [many_inodes, huge_headroom] {
        let error = ext4_writer::minimum_size(&tree, &options)
            .and_then(|_| ext4_writer::write(&tree, &options, std::io::Cursor::new(Vec::new())))
            .unwrap_err();
        assert!(
            matches!(error, ext4_writer::Error::AutoSizeTooLarge { .. }),
            "{error}"
        );
        assert!(error
            .to_string()
            .contains("lower the inode count or the headroom"));
    }
    let error = ext4_writer::write(&tree, &huge_fixed, std::io::Cursor::new(Vec::new()))
        .unwrap_err()
        .to_string();
    assert!(error.contains("use a smaller size"), "{error}");
    assert!(!error.contains("larger block size"), "{error}");
}
