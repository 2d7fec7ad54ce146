//! Virtual machines: records, lifecycle and the guest side.
