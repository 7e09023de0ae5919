//! Data layer: the synthetic scenes (the embedded default) and their export; for real datasets, manifests,
//! resumable verified downloads, safe extraction, builders and the sample index.
pub mod builders;
pub mod download;
pub mod error;
pub mod extract;
pub mod hash;
pub mod index;
pub mod lock;
pub mod manifest;
pub mod mat5;
pub mod ops;
pub mod pickle;
pub mod split;
pub mod store;
pub mod synth;
pub mod synth_export;
pub mod wsol;

pub use error::{DataError, Result};
