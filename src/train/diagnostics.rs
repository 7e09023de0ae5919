//! What the training views contain, from the data pipeline alone (no network): the mean foreground
//! fraction of view 1 over every batch of every epoch. The source draws its crops and flips from the same
//! seeded streams as a training run with the same settings, so this is what that run saw. Object-aware
//! random crop exists to raise it; a retrain that ignores its boxes gives the plain-crop value exactly.
use tch::{Kind, Tensor};

use super::augment::Region;
use super::config::TrainConfig;
use super::error::TrainError;
use super::source::{BatchSource, InMemorySource};
use super::strategy::Shard;

/// `images` (N, 3, H, W) in [0, 1]; `foreground` (N, H, W) in [0, 1]; `boxes` as given to training.
pub fn view_foreground(
    images: &Tensor,
    foreground: &Tensor,
    boxes: Option<&[Vec<Region>]>,
    cfg: &TrainConfig,
    seed: u64,
) -> Result<f64, TrainError> {
    let mut source = InMemorySource::new(
        images.shallow_clone(),
        cfg.batch_size,
        &cfg.augment,
        seed,
        Shard::SINGLE,
    )?
    .with_masks(foreground.shallow_clone())?;
    if let Some(b) = boxes {
        source = source.with_boxes(b.to_vec())?;
    }
    let (mut sum, mut batches) = (0.0, 0usize);
    for epoch in 0..cfg.epochs {
        source.start_epoch(epoch)?;
        while let Some(batch) = source.next_batch()? {
            let masks = batch.masks.ok_or_else(|| {
                TrainError::config("masks", "none", "the source returned a batch without masks")
            })?;
            sum += masks.mean(Kind::Double).double_value(&[]);
            batches += 1;
        }
    }
    Ok(sum / batches.max(1) as f64)
}
