//! banger turns OCI container images into bootable microVMs.
//!
//! The binary in `main.rs` is a thin wrapper around [`cli::run`]; every
//! concern has its own module.

pub mod cli;
pub mod daemon;
pub mod error;
pub mod host;
pub mod image;
pub mod kernel;
pub mod store;
pub mod vm;
pub mod vmm;
