//! Readers that turn something outside the crate into a [`Tree`](crate::Tree).

#[cfg(feature = "dir")]
pub mod dir;
