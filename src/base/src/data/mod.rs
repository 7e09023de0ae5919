//! The torch-free part of the data layer: manifests, downloads, checksums, extraction, locks, the data
//! directory, and the `.npy` and pickle readers.
pub mod error;
pub mod formats;
pub mod ops;
pub mod source;

pub use error::{DataError, Result};
