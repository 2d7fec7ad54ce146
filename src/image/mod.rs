//! Images: registry pulls, the verified blob cache, layer flattening and ext4 builds.
