//! Images: registry pulls, the verified blob cache, layer flattening and ext4 builds.

pub mod auth;
pub mod blob_cache;
pub mod build;
pub mod compression;
pub mod flatten;
pub mod import;
pub mod model;
pub mod platform;
pub mod progress;
pub mod pull_error;
pub mod reference;
pub mod registry;
pub mod whiteout;

pub use blob_cache::BlobCache;
pub use model::{Digest, ImageConfig, LayerBlob, PulledImage};
pub use pull_error::PullError;
pub use reference::ImageReference;
pub use registry::{pull, PullOptions};
