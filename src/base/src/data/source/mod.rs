//! Acquisition: manifests, resumable verified downloads, checksums, safe extraction, locks and the store layout.
pub mod download;
pub mod extract;
pub mod hash;
pub mod lock;
pub mod manifest;
pub mod store;
