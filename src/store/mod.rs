//! On-disk state: paths, configuration and the records of images, kernels and VMs.
pub mod config;
pub mod images;
pub mod paths;
