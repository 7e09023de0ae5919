//! Data layer, one way from bytes to samples:
//! - `source`: manifests, resumable verified downloads, checksums, safe extraction, locks and the on-disk store;
//! - `formats`: readers of the file formats datasets and checkpoints come in (pickle, MAT v5, `.npy`);
//! - `builders`: one per dataset, from extracted archives to sample indices (with the paper's splits);
//! - `index`: the sample index every builder writes and everything downstream reads;
//! - `loader`: datasets (an index split or the synthetic scenes) as sources, and the loader to batches;
//! - `synth`: the embedded default, procedurally generated scenes with known masks and boxes;
//! - `ops`: the operations behind `contracam data …`;
//! - `normalize`: ImageNet normalisation and the evaluation resize of image tensors.
//!
//! `source`, `error` and most of `ops` live in the torch-free `contracam_base` (so the `contracam` launcher
//! runs `data list/fetch/verify/...` without loading libtorch) and are re-exported here at the same paths.
pub mod builders;
pub use contracam_base::data::error;
pub mod formats;
pub mod index;
pub mod loader;
pub mod normalize;
pub mod ops;
pub use contracam_base::data::source;
pub mod synth;

pub use error::{DataError, Result};
