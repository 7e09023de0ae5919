//! Training a fresh model on a split of a built dataset on one device (or as one rank of a data-parallel run
//! a launcher started, [`ProcessStrategy`]): the index-backed source (OA-Crop
//! boxes and masks as `opts` says) feeding the loop. What `train ssl --dataset` and the suite's `pretrain`
//! stage both run; the in-memory counterpart is [`super::train`]. [`fit_source`] is the part both share with
//! the scenes path of `train ssl`: a fresh or resumed trainer, its checkpoint policy, the fit.
use std::path::PathBuf;
use std::sync::Arc;

use super::config::MixKind;
use super::config::TrainConfig;
use super::distributed::ProcessStrategy;
use super::error::TrainError;
use super::fit::{CheckpointPolicy, TrainReport, Trainer};
use super::source::index::check_files;
use super::source::{BatchSource, IndexBatchSource, IndexSourceOptions};
use super::strategy::ExecutionStrategy;
use crate::data::loader::{MaskInput, Skipped, Source};
use crate::model::{ContrastiveModel, ModelConfig};
use crate::util::progress::Progress;

/// Where a run resumes from and where it saves its training state; both off by default.
#[derive(Debug, Clone, Default)]
pub struct Checkpointing {
    /// A state file written by an earlier run of the same configuration and seed.
    pub resume: Option<PathBuf>,
    pub policy: Option<CheckpointPolicy>,
}

/// A fresh trainer from `seed` (or the one saved in `ckpt.resume`, which also restores `source`'s
/// position) fitted over the rest of `source`, saving its state as `ckpt.policy` says.
pub fn fit_source<S: ExecutionStrategy>(
    model_cfg: &ModelConfig,
    cfg: &TrainConfig,
    seed: u64,
    strategy: S,
    source: &mut dyn BatchSource,
    ckpt: &Checkpointing,
    progress: &Progress,
) -> Result<(ContrastiveModel, TrainReport), TrainError> {
    let mut trainer = match &ckpt.resume {
        Some(p) => Trainer::resume(p, model_cfg, cfg, seed, strategy, source)?,
        None => Trainer::new(model_cfg, cfg, seed, strategy)?,
    };
    trainer.set_checkpoint(ckpt.policy.clone());
    let report = trainer.fit(source, progress)?;
    Ok((trainer.into_model(), report))
}

/// Trains from `seed` on `source` and returns the model, its report and the samples skipped under
/// `opts.skip_bad`. Every image (and mask file) is checked to exist before the first step unless
/// `opts.skip_bad`; batches are delivered to `opts.device`, where the model trains. BG-Mixup needs the
/// soft masks (`opts.masks` a folder).
pub fn train_on_index(
    model_cfg: &ModelConfig,
    cfg: &TrainConfig,
    source: Arc<dyn Source>,
    opts: IndexSourceOptions,
    seed: u64,
    ckpt: &Checkpointing,
    progress: &Progress,
) -> Result<(ContrastiveModel, TrainReport, Vec<Skipped>), TrainError> {
    model_cfg.validate()?;
    cfg.validate(model_cfg.method, Some(source.len()))?;
    if cfg.mix.kind == MixKind::BgMixup && !matches!(opts.masks, MaskInput::Folder(_)) {
        return Err(TrainError::Config {
            key: "train.mix.kind".into(),
            value: "bg-mixup".into(),
            msg: format!(
                "BG-Mixup on {} needs the soft masks of its images (the soft_masks/ of a `localize dataset \
                 --soft-masks` run)",
                source.name()
            ),
        });
    }
    if !opts.skip_bad {
        check_files(source.as_ref(), &opts.masks)?;
    }
    // One rank of a data-parallel run when launched by torchrun/srun; batches go to the rank's device.
    let strategy = ProcessStrategy::from_env(opts.device)?;
    let opts = IndexSourceOptions {
        device: strategy.device(),
        ..opts
    };
    let mut batches = IndexBatchSource::new(
        source,
        cfg.batch_size,
        &cfg.augment,
        seed,
        strategy.shard(),
        opts,
    )?;
    let (model, report) = fit_source(model_cfg, cfg, seed, strategy, &mut batches, ckpt, progress)?;
    let skipped = batches.skipped();
    Ok((model, report, skipped))
}
