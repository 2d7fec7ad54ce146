//! The kernel catalog: kernel bundles and what a VM needs to boot one.
