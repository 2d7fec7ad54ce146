//! The kernel catalog: kernel bundles and what a VM needs to boot one.

pub mod boot;
pub mod bundle;
pub mod catalog;
pub mod deb;
pub mod error;
pub mod extract;
pub mod import;
pub mod initrd;
pub mod modinfo;
pub mod registry;
pub mod version;

pub use boot::{BootSpec, RootDisk};
pub use catalog::{Catalog, KernelEntry, KernelInfo, KernelUsers, NoVms};
pub use error::{Error, Result};
pub use import::ImportSource;
