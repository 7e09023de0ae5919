//! Datasets as sources of samples, and the loader from a source to batches.
//!
//! - [`dataset`]: the [`Source`] trait over a split of a sample index ([`IndexSource`]) or the synthetic scenes
//!   ([`SynthSource`]); sample ids as the official code forms them ([`IdScheme`]); `synth[:SPLIT]` /
//!   `NAME[:SPLIT]` dataset references ([`DatasetRef`]).
//! - [`decode`]: JPEG/PNG to RGB or luma as Pillow's `convert` does; [`mask_rule`]: ground-truth masks.
//! - [`transform`]: the official per-sample CPU transforms (RandomResizedCrop + flip, Resize + CenterCrop,
//!   Resize, OA-Crop's Pillow crop).
//! - [`object_crop`]: OA-Crop boxes from an official-format box file, matched to samples by id.
//! - [`batches`]: [`Loader`], epoch order from the seed, worker threads, bounded prefetch, pinned memory.
//!
//! ```no_run
//! use std::sync::Arc;
//! use contracam::data::loader::{IndexSource, Loader, LoaderConfig, Plan, RandomResizedCrop};
//! # fn main() -> contracam::data::Result<()> {
//! let source = Arc::new(IndexSource::open("/data".as_ref(), "coco2017", "train")?);
//! let loader = Loader::new(source, Plan::pretrain(RandomResizedCrop::default()), LoaderConfig::train(256, 0))?;
//! for batch in loader.epoch(0) {
//!     let batch = batch?;
//!     let (v1, v2) = (batch.view(0), batch.view(1)); // (256, 3, 224, 224) float in [0, 1]
//! #   let _ = (v1, v2);
//! }
//! # Ok(()) }
//! ```
pub mod batches;
pub mod dataset;
pub mod decode;
pub mod mask_rule;
pub mod object_crop;
pub mod transform;

pub use batches::{
    folder_mask_path, Batch, EpochBatches, Loader, LoaderConfig, MaskInput, Pixels, Plan,
    SampleViews, Skipped, Views,
};
pub use dataset::{
    id_of, DatasetRef, IdScheme, IndexSource, SampleMeta, Source, SynthKind, SynthSource,
};
pub use mask_rule::MaskRule;
pub use object_crop::{ground_truth_box_file, ObjectBoxes};
pub use transform::{EvalTransform, RandomResizedCrop};
