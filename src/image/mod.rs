//! Images: registry pulls, the verified blob cache, layer flattening and ext4 builds.

pub mod build;
pub mod compression;
pub mod flatten;
pub mod import;
pub mod whiteout;
