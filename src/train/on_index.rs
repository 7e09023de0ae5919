//! Training a fresh model on a split of a built dataset on one device: the index-backed source (OA-Crop
//! boxes and masks as `opts` says) feeding the loop. What `train ssl --dataset` and the suite's `pretrain`
//! stage both run; the in-memory counterpart is [`super::train`].
use std::sync::Arc;

use super::config::TrainConfig;
use super::error::TrainError;
use super::fit::{TrainReport, Trainer};
use super::source::index::check_files;
use super::source::{IndexBatchSource, IndexSourceOptions};
use super::strategy::{ExecutionStrategy, SingleDevice};
use crate::data::loader::{Skipped, Source};
use crate::model::{ContrastiveModel, ModelConfig};
use crate::util::progress::Progress;

/// Trains from `seed` on `source` and returns the model, its report and the samples skipped under
/// `opts.skip_bad`. Every image (and mask file) is checked to exist before the first step unless
/// `opts.skip_bad`; batches are delivered to `opts.device`, where the model trains.
pub fn train_on_index(
    model_cfg: &ModelConfig,
    cfg: &TrainConfig,
    source: Arc<dyn Source>,
    opts: IndexSourceOptions,
    seed: u64,
    progress: &Progress,
) -> Result<(ContrastiveModel, TrainReport, Vec<Skipped>), TrainError> {
    model_cfg.validate()?;
    cfg.validate(model_cfg.method, Some(source.len()))?;
    if !opts.skip_bad {
        check_files(source.as_ref(), &opts.masks)?;
    }
    let strategy = SingleDevice::new(opts.device);
    let mut batches = IndexBatchSource::new(
        source,
        cfg.batch_size,
        &cfg.augment,
        seed,
        strategy.shard(),
        opts,
    )?;
    let mut trainer = Trainer::new(model_cfg, cfg, seed, strategy)?;
    let report = trainer.fit(&mut batches, progress)?;
    let skipped = batches.skipped();
    Ok((trainer.into_model(), report, skipped))
}
