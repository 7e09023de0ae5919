//! The training loop of the official code (`pretrain.py` with Lightning's automatic optimisation): per
//! epoch the cosine lr is set, then for each batch of the source: colour augmentations on the device, the
//! momentum update of the target (at the start of the step), the objective's loss, backward, the
//! strategy's gradient reduction, SGD (momentum 0.9, weight decay on all parameters). With `train.mix`,
//! view 1 is mixed after the colour augmentations (BG-Mixup, Mixup, CutMix; `mixing`). A run can be
//! checkpointed and resumed bit for bit (`state`).
mod mixing;
mod shard_draws;
mod state;

use std::path::PathBuf;

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::{Optimizer, OptimizerConfig, Sgd};
use tch::{Device, Kind, Tensor};

use super::augment::background_mixup::{BackgroundMixup, MixupDraws};
use super::augment::mixup_cutmix::MixCutDraws;
use super::augment::Region;
use super::config::{MixKind, TrainConfig};
use super::distributed::ProcessStrategy;
use super::error::TrainError;
use super::objective::{Byol, Moco, Networks, Objective, ViewMix};
use super::precision::{vars_to_channels_last, Precision, StepPrecision};
use super::source::{Batch, BatchSource, InMemorySource};
use super::strategy::ExecutionStrategy;
use crate::model::{ContrastiveModel, Method, ModelConfig};
use crate::util::progress::Progress;
use crate::util::rng::{rng_for, seed_torch};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReport {
    pub epochs: usize,
    pub steps: usize,
    /// Mean loss of each epoch.
    pub epoch_loss: Vec<f64>,
    pub seed: u64,
    pub seconds: f64,
    /// Mean foreground fraction of view 1 over every step, measured on the batches the loop trained on
    /// (present when the source carries foreground masks). Object-aware random crop exists to raise it; a
    /// run that drops its boxes anywhere between the suite and the crop shows the plain-crop value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view_foreground: Option<f64>,
    /// `train.precision` of the run (left out while fp32, so fp32 reports stay as they were).
    #[serde(default, skip_serializing_if = "Precision::is_fp32")]
    pub precision: Precision,
    /// `train.channels_last` of the run (left out while false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub channels_last: bool,
}

/// Where `fit` writes the training state: `path`, replaced atomically after every `every_epochs` epochs
/// and after the last one.
#[derive(Debug, Clone)]
pub struct CheckpointPolicy {
    pub path: PathBuf,
    pub every_epochs: usize,
}

/// A training run in progress: networks, optimiser, objective state, RNG streams and position.
pub struct Trainer<S: ExecutionStrategy> {
    pub model_cfg: ModelConfig,
    pub cfg: TrainConfig,
    pub seed: u64,
    pub online: ContrastiveModel,
    pub target: ContrastiveModel,
    objective: Box<dyn Objective>,
    opt: Optimizer,
    /// (target, online) parameter pairs of encoder and projector.
    ema_pairs: Vec<(Tensor, Tensor)>,
    /// The autocast region and input layout of each step (`train.precision`, `train.channels_last`).
    precision: StepPrecision,
    /// The optimiser's current learning rate (set per epoch).
    lr: f64,
    color_rng: ChaCha8Rng,
    /// Draws of the view-1 mixing (BG-Mixup coins and partners, Mixup/CutMix weights and boxes).
    mix_rng: ChaCha8Rng,
    /// BG-Mixup's module with its background queue, kept across steps and epochs.
    bg_mixup: Option<BackgroundMixup>,
    checkpoint: Option<CheckpointPolicy>,
    strategy: S,
    /// The epoch in progress and the steps done in it.
    epoch: usize,
    step_in_epoch: usize,
    steps: usize,
    epoch_loss: Vec<f64>,
    /// The loss of every step so far.
    step_loss: Vec<f64>,
    loss_sum: f64,
    /// Sum over steps of the batch's mean view-1 foreground, and the steps that had masks.
    fg_sum: f64,
    fg_steps: usize,
}

impl<S: ExecutionStrategy> Trainer<S> {
    /// Fresh networks from `seed` (initialisation and the MoCo queue draw from libtorch's generator, seeded
    /// from `seed` under the process-wide lock).
    pub fn new(
        model_cfg: &ModelConfig,
        cfg: &TrainConfig,
        seed: u64,
        strategy: S,
    ) -> Result<Self, TrainError> {
        model_cfg.validate()?;
        cfg.validate(model_cfg.method, None)?;
        let device = strategy.device();
        let precision = StepPrecision::new(cfg.precision, cfg.channels_last, device)?;
        let (mut online, mut target, objective) = {
            let _rng = crate::util::rng::torch_rng_lock();
            seed_torch(seed, "train/init");
            let online = ContrastiveModel::new(model_cfg, device);
            let mut target = ContrastiveModel::new(model_cfg, device);
            target.vs.copy(&online.vs)?;
            target.vs.freeze();
            let objective: Box<dyn Objective> = match model_cfg.method {
                Method::Moco => Box::new(Moco::new(
                    cfg.queue_size,
                    model_cfg.proj_dim(),
                    cfg.temperature,
                    device,
                )),
                Method::Byol => Box::new(Byol::default()),
            };
            (online, target, objective)
        };
        if cfg.channels_last {
            // Before the optimiser and EMA pairs take their handles (they would see it anyway: the data is
            // swapped in place), as `model.to(memory_format=torch.channels_last)` before DDP wraps it.
            vars_to_channels_last(&online.vs)?;
            vars_to_channels_last(&target.vs)?;
        }
        strategy.prepare_model(&mut online)?;
        strategy.prepare_model(&mut target)?;
        let ema_pairs = ema_pairs(&online, &target);
        let opt = Sgd {
            momentum: cfg.momentum,
            dampening: 0.0,
            wd: cfg.weight_decay,
            nesterov: false,
        }
        .build(&online.vs, cfg.lr_at(0))?;
        let bg_mixup = (cfg.mix.kind == MixKind::BgMixup).then(|| {
            BackgroundMixup::new(
                cfg.mix.cam_thres as f32,
                cfg.mix.bg_mixup_prob_for(model_cfg.method),
            )
        });
        Ok(Self {
            model_cfg: model_cfg.clone(),
            cfg: cfg.clone(),
            seed,
            online,
            target,
            objective,
            opt,
            ema_pairs,
            precision,
            lr: cfg.lr_at(0),
            color_rng: rng_for(seed, "train/color/0"),
            mix_rng: rng_for(seed, "train/mix/0"),
            bg_mixup,
            checkpoint: None,
            strategy,
            epoch: 0,
            step_in_epoch: 0,
            steps: 0,
            epoch_loss: Vec::new(),
            step_loss: Vec::new(),
            loss_sum: 0.0,
            fg_sum: 0.0,
            fg_steps: 0,
        })
    }

    pub fn strategy(&self) -> &S {
        &self.strategy
    }

    /// Writes the training state as `policy` says while `fit` runs.
    pub fn set_checkpoint(&mut self, policy: Option<CheckpointPolicy>) {
        self.checkpoint = policy;
    }

    /// Runs the remaining epochs over `source`.
    pub fn fit(
        &mut self,
        source: &mut dyn BatchSource,
        progress: &Progress,
    ) -> Result<TrainReport, TrainError> {
        self.fit_until(source, progress, usize::MAX)
    }

    /// Runs until the end of training or until `max_steps` steps (counted from the start of the run) are
    /// done, whichever comes first; the report covers the steps so far.
    pub fn fit_until(
        &mut self,
        source: &mut dyn BatchSource,
        progress: &Progress,
        max_steps: usize,
    ) -> Result<TrainReport, TrainError> {
        let start = std::time::Instant::now();
        self.cfg
            .validate(self.model_cfg.method, Some(source.num_images()))?;
        let per_epoch = source.batches_per_epoch();
        progress.set_length((self.cfg.epochs * per_epoch) as u64);
        progress.set_position(self.steps as u64);
        while self.epoch < self.cfg.epochs && self.steps < max_steps {
            let epoch = self.epoch;
            if self.step_in_epoch == 0 {
                source.start_epoch(epoch)?;
                self.lr = self.cfg.lr_at(epoch);
                self.opt.set_lr(self.lr);
                self.color_rng = rng_for(self.seed, &format!("train/color/{epoch}"));
                self.mix_rng = rng_for(self.seed, &format!("train/mix/{epoch}"));
                self.loss_sum = 0.0;
            }
            let mut epoch_done = false;
            while self.steps < max_steps {
                let Some(batch) = source.next_batch()? else {
                    epoch_done = true;
                    break;
                };
                let loss = self.step(batch)?;
                // The message first: a log line printed by `inc` then names this step's loss.
                progress.set_message(format!(
                    "epoch {}/{} loss {loss:.3}",
                    epoch + 1,
                    self.cfg.epochs
                ));
                progress.inc(1);
            }
            if !epoch_done {
                break;
            }
            self.epoch_loss
                .push(self.loss_sum / self.step_in_epoch.max(1) as f64);
            self.epoch += 1;
            self.step_in_epoch = 0;
            if let Some(policy) = self.checkpoint.clone() {
                if self.epoch.is_multiple_of(policy.every_epochs.max(1))
                    || self.epoch == self.cfg.epochs
                {
                    self.save_state(&policy.path, source)?;
                }
            }
        }
        Ok(TrainReport {
            epochs: self.cfg.epochs,
            steps: self.steps,
            epoch_loss: self.epoch_loss.clone(),
            seed: self.seed,
            seconds: start.elapsed().as_secs_f64(),
            view_foreground: self.view_foreground(),
            precision: self.cfg.precision,
            channels_last: self.cfg.channels_last,
        })
    }

    /// The loss of every step so far, in order (restored with the rest on resume).
    pub fn step_losses(&self) -> &[f64] {
        &self.step_loss
    }

    /// Steps done so far.
    pub fn steps_done(&self) -> usize {
        self.steps
    }

    /// One optimisation step on a batch of geometric views; returns the loss.
    pub fn step(&mut self, batch: Batch) -> Result<f64, TrainError> {
        let dev = self.strategy.device();
        if batch.views.len() < 2 {
            return Err(TrainError::Batch {
                epoch: self.epoch,
                step: self.step_in_epoch,
                msg: format!("{} view(s); MoCo and BYOL need two", batch.views.len()),
            });
        }
        // Drawn for the global batch and applied to this rank's rows (`shard_draws`).
        let shard = self.strategy.shard();
        let mut views: Vec<Tensor> = batch
            .views
            .iter()
            .map(|v| {
                shard_draws::color_blur_normalize_shard(
                    &v.to_device(dev),
                    &mut self.color_rng,
                    &self.cfg.augment,
                    shard,
                )
            })
            .collect();
        let masks = batch.masks.as_ref().map(|m| m.to_device(dev));
        let (epoch, step) = (self.epoch, self.step_in_epoch);
        let mix = mixing::mix_view1_in_run(
            &self.cfg.mix,
            &mut self.bg_mixup,
            &mut views,
            masks.as_ref(),
            &mut self.mix_rng,
            &self.strategy,
            |msg| TrainError::Batch { epoch, step, msg },
        )?;
        let loss = self.step_mixed(&views, mix.as_ref())?;
        if let Some(m) = &batch.masks {
            let local = m.mean(Kind::Double).double_value(&[]);
            self.fg_sum += self.strategy.average(&[local])?[0];
            self.fg_steps += 1;
        }
        Ok(loss)
    }

    /// One step on views that are already augmented and normalised, with view 1 mixed as `train.mix`
    /// says, the random values coming from `draws` (the official loop's order: the mix, then the step).
    /// `masks` are view 1's soft masks (BG-Mixup).
    pub fn step_with_draws<D: MixupDraws + MixCutDraws>(
        &mut self,
        views: &[Tensor],
        masks: Option<&Tensor>,
        draws: &mut D,
    ) -> Result<f64, TrainError> {
        let mut views: Vec<Tensor> = views.iter().map(Tensor::shallow_clone).collect();
        let mix = mixing::mix_view1(&self.cfg.mix, &mut self.bg_mixup, &mut views, masks, draws)
            .map_err(|msg| self.batch_error(msg))?;
        self.step_mixed(&views, mix.as_ref())
    }

    fn batch_error(&self, msg: String) -> TrainError {
        TrainError::Batch {
            epoch: self.epoch,
            step: self.step_in_epoch,
            msg,
        }
    }

    /// Mean foreground fraction of view 1 over the steps so far whose batches carried masks.
    pub fn view_foreground(&self) -> Option<f64> {
        (self.fg_steps > 0).then(|| self.fg_sum / self.fg_steps as f64)
    }

    /// One optimisation step on views that are already augmented and normalised (the official
    /// `training_step` after `diff_transform`): the EMA of the target, the objective's loss, backward,
    /// gradient reduction, SGD at the current lr. Returns the loss; the gradients stay on the online
    /// parameters until the next step.
    pub fn step_on_views(&mut self, views: &[Tensor]) -> Result<f64, TrainError> {
        self.step_mixed(views, None)
    }

    /// `step_on_views`, with the mixed loss when view 1 was mixed with other images of the batch.
    fn step_mixed(&mut self, views: &[Tensor], mix: Option<&ViewMix>) -> Result<f64, TrainError> {
        if views.len() < 2 {
            return Err(TrainError::Batch {
                epoch: self.epoch,
                step: self.step_in_epoch,
                msg: format!("{} view(s); MoCo and BYOL need two", views.len()),
            });
        }
        ema_update(&self.ema_pairs, self.cfg.ema_for(self.model_cfg.method));
        let nets = Networks {
            online: &self.online,
            target: &self.target,
        };
        let laid_out = self.precision.inputs(views)?;
        let views = laid_out.as_deref().unwrap_or(views);
        let loss = {
            // Forward passes and loss under autocast (bf16-mixed); backward, reduction and SGD after it.
            let _autocast = self.precision.autocast()?;
            match mix {
                None => self.objective.loss(&nets, views, &self.strategy)?,
                Some(m) => self.objective.mixed_loss(&nets, views, m, &self.strategy)?,
            }
        };
        // The loss is float32 whatever autocast computed it in (cross-entropy already is).
        let loss = if loss.kind() == Kind::Float {
            loss
        } else {
            loss.to_kind(Kind::Float)
        };
        self.opt.zero_grad();
        self.strategy.before_backward()?;
        loss.f_backward()?;
        self.strategy
            .reduce_gradients(&self.online.vs.trainable_variables())?;
        self.opt.step();
        // The global batch's loss: each rank's is the mean over its equal shard.
        let l = self.strategy.average(&[loss.double_value(&[])])?[0];
        if !l.is_finite() {
            return Err(TrainError::Diverged {
                loss: l,
                epoch: self.epoch,
                step: self.step_in_epoch,
            });
        }
        self.loss_sum += l;
        self.step_loss.push(l);
        self.step_in_epoch += 1;
        self.steps += 1;
        Ok(l)
    }

    /// The objective and its state (MoCo's queue), e.g. to restore or inspect it.
    pub fn objective_mut(&mut self) -> &mut dyn Objective {
        self.objective.as_mut()
    }

    /// The trained online network.
    pub fn into_model(self) -> ContrastiveModel {
        self.online
    }
}

/// What training needs from the synthetic in-memory path: images (N, 3, H, W) in [0, 1], for
/// object-aware crop the boxes of each image (normalised xyxy; an empty list means the whole image), and
/// optionally the foreground masks (N, H, W) in [0, 1], cropped with view 1 so that the report measures
/// what the views contained (`TrainReport::view_foreground`).
pub struct TrainData<'a> {
    pub images: &'a Tensor,
    pub boxes: Option<&'a [Vec<Region>]>,
    pub masks: Option<&'a Tensor>,
}

/// Trains a fresh model from `seed` on in-memory images on one device (or as one rank of the data-parallel
/// run a launcher started: [`ProcessStrategy::from_env`]) and returns it with its loss curve.
pub fn train(
    model_cfg: &ModelConfig,
    cfg: &TrainConfig,
    data: &TrainData,
    seed: u64,
    device: Device,
    progress: &Progress,
) -> Result<(ContrastiveModel, TrainReport), TrainError> {
    model_cfg.validate()?;
    cfg.validate(model_cfg.method, Some(data.images.size()[0] as usize))?;
    let strategy = ProcessStrategy::from_env(device)?;
    let mut source = InMemorySource::new(
        data.images.shallow_clone(),
        cfg.batch_size,
        &cfg.augment,
        seed,
        strategy.shard(),
    )?;
    if let Some(b) = data.boxes {
        source = source.with_boxes(b.to_vec())?;
    }
    if let Some(m) = data.masks {
        source = source.with_masks(m.shallow_clone())?;
    }
    let mut trainer = Trainer::new(model_cfg, cfg, seed, strategy)?;
    let report = trainer.fit(&mut source, progress)?;
    Ok((trainer.into_model(), report))
}

/// (target, online) parameter pairs of encoder and projector; BN buffers are not averaged.
fn ema_pairs(online: &ContrastiveModel, target: &ContrastiveModel) -> Vec<(Tensor, Tensor)> {
    let on = online.vs.variables();
    let mut names: Vec<String> = target
        .vs
        .variables()
        .keys()
        .filter(|k| {
            !k.starts_with("predictor.")
                && !k.contains("running_")
                && !k.ends_with("num_batches_tracked")
        })
        .cloned()
        .collect();
    names.sort();
    let tv = target.vs.variables();
    names
        .into_iter()
        .map(|k| (tv[&k].shallow_clone(), on[&k].shallow_clone()))
        .collect()
}

fn ema_update(pairs: &[(Tensor, Tensor)], m: f64) {
    tch::no_grad(|| {
        for (t, o) in pairs {
            let _ = t.shallow_clone().lerp_(o, 1.0 - m);
        }
    });
}
