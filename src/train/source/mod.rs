//! What the training loop consumes: batches of geometrically augmented views (crop, resize, flip already
//! applied, values in [0, 1]), with the foreground masks of view 1 for background mixing and labels for
//! supervised training. A source knows its epoch order (from the seed) and can report and restore its
//! position, so a checkpoint resumes mid-run exactly.
//!
//! `memory` holds the in-memory source of the synthetic scenes; `index` the loader-backed source of real
//! datasets (a split written by `data build`, with OA-Crop boxes and soft masks).
pub mod index;
pub mod memory;
pub(crate) mod position;

use tch::Tensor;

use super::error::TrainError;

pub use index::{IndexBatchSource, IndexSourceOptions};
pub use memory::InMemorySource;

/// One batch as the data side delivers it (on any device; the loop moves it).
pub struct Batch {
    /// `views[v]` is (B, 3, S, S) float in [0, 1]: two views for MoCo/BYOL, one for supervised training.
    pub views: Vec<Tensor>,
    /// Foreground masks of view 1, (B, S, S) in [0, 1], cropped jointly with it (BG-Mixup, BG-HardMix).
    pub masks: Option<Tensor>,
    /// Class labels (B,) int64 (supervised training).
    pub labels: Option<Tensor>,
}

pub trait BatchSource {
    /// Images in the training set (this process's shard included).
    fn num_images(&self) -> usize;
    /// Steps per epoch: whole global batches only (`drop_last`, as the official loaders).
    fn batches_per_epoch(&self) -> usize;
    /// Starts `epoch` at its first batch; the epoch's order comes from the seed.
    fn start_epoch(&mut self, epoch: usize) -> Result<(), TrainError>;
    /// The next batch of the current epoch, `None` after its last one.
    fn next_batch(&mut self) -> Result<Option<Batch>, TrainError>;
    /// Where the source is (epoch, position, RNG streams), to store in a checkpoint.
    fn state(&self) -> serde_json::Value;
    /// Puts the source back where `state` says, so the following batches equal those of an
    /// uninterrupted run.
    fn restore(&mut self, state: &serde_json::Value) -> Result<(), TrainError>;
}
