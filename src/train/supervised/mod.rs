//! Supervised training of a ResNet classifier on a built split: the classifier whose CAM Tables 2–3
//! compare with ContraCAM. No official script exists for it, so the recipe is an assumption: torchvision's
//! ImageNet reference recipe scaled to the batch. SGD (momentum 0.9, weight decay 1e-4 on every parameter),
//! lr 0.1·batch/256 with a per-epoch cosine to `final_lr` (0), one RandomResizedCrop(224, scale 0.08–1) +
//! flip view per image (the loader's PIL path), ImageNet normalisation, cross-entropy on the index's class
//! labels. After the last epoch the training set is classified once with the evaluation transform
//! (Resize + CenterCrop, BatchNorm in eval mode): that is `train_accuracy`.
//!
//! The output is a [`Classifier`] checkpoint (`method = "supervised"`, `encoder.*` and `fc.*`), what the
//! classifier CAM of `localize` reads.
pub mod source;
mod state;

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tch::nn::{Optimizer, OptimizerConfig, Sgd};
use tch::{Device, Kind, Tensor};

use super::augment::normalize;
use super::error::TrainError;
use super::fit::CheckpointPolicy;
use super::on_index::Checkpointing;
use super::precision::{vars_to_channels_last, Precision, StepPrecision};
use super::source::BatchSource;
use crate::data::loader::{EvalTransform, Loader, LoaderConfig, Plan, Source};
use crate::model::classifier::Supervised;
use crate::model::{Arch, Classifier, ClassifierConfig, ResNetConfig, Stem};
use crate::util::progress::Progress;
use crate::util::rng::{seed_torch, torch_rng_lock};

pub use source::LabelledIndexSource;
pub use state::CLASSIFIER_STATE_KEY;

/// The checkpoint metadata key of the recipe ([`ClassifierTrainConfig`] as JSON).
pub const CONFIG_META_KEY: &str = "contracam.train_classifier";

/// The recipe: model, schedule and augmentation. Every value defaults to torchvision's ImageNet reference
/// recipe (an assumption; see the module documentation). The suite's `train-classifier` params and the
/// flags of `train classifier` are these fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifierTrainConfig {
    pub arch: Arch,
    /// Channel multiplier on torchvision's widths (1: the standard network).
    pub width: f64,
    /// `small` for CPU-scale images (3×3 stem, no max-pool).
    pub stem: Stem,
    pub epochs: usize,
    /// Batch size.
    pub batch: usize,
    /// Learning rate at batch 256, scaled linearly with `batch`.
    pub base_lr: f64,
    /// Where the per-epoch cosine ends.
    pub final_lr: f64,
    pub momentum: f64,
    /// On every parameter (BatchNorm and biases included), as torchvision's default.
    pub weight_decay: f64,
    /// Side of the training crops; accuracy is measured at this size after Resize(256/224 of it at 224,
    /// else the same) + CenterCrop.
    pub image_size: u32,
    /// Smallest RandomResizedCrop area fraction.
    pub min_crop_scale: f64,
    /// Probability of the horizontal flip.
    pub hflip_p: f64,
    /// The forward pass and loss in bf16 autocast (`bf16-mixed`; parameters, gradients and SGD float32),
    /// or fp32. Left out of the serialised recipe while fp32, so fp32 recipes and fingerprints stay as
    /// they were.
    #[serde(skip_serializing_if = "Precision::is_fp32")]
    pub precision: Precision,
    /// The network and its input batches in the channels_last memory format (left out while false).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub channels_last: bool,
}

impl Default for ClassifierTrainConfig {
    fn default() -> Self {
        Self {
            arch: Arch::Resnet50,
            width: 1.0,
            stem: Stem::Imagenet,
            epochs: 90,
            batch: 256,
            base_lr: 0.1,
            final_lr: 0.0,
            momentum: 0.9,
            weight_decay: 1e-4,
            image_size: 224,
            min_crop_scale: 0.08,
            hflip_p: 0.5,
            precision: Precision::Fp32,
            channels_last: false,
        }
    }
}

impl ClassifierTrainConfig {
    /// The network for `num_classes` classes; torchvision's default keeps the residual BN weights at 1.
    pub fn model_config(&self, num_classes: i64) -> ClassifierConfig {
        ClassifierConfig {
            encoder: ResNetConfig {
                arch: self.arch,
                width: self.width,
                stem: self.stem,
                zero_init_residual: false,
            },
            method: Supervised::Supervised,
            num_classes,
        }
    }

    pub fn peak_lr(&self) -> f64 {
        self.base_lr * self.batch as f64 / 256.0
    }

    /// lr of epoch e: final + ½(peak − final)(1 + cos(π e / E)).
    pub fn lr_at(&self, epoch: usize) -> f64 {
        let t = epoch as f64 / self.epochs.max(1) as f64;
        self.final_lr
            + 0.5 * (self.peak_lr() - self.final_lr) * (1.0 + (std::f64::consts::PI * t).cos())
    }

    /// The loader's RandomResizedCrop.
    pub fn crop(&self) -> crate::data::loader::RandomResizedCrop {
        crate::data::loader::RandomResizedCrop {
            size: self.image_size,
            scale: [self.min_crop_scale, 1.0],
            hflip_p: self.hflip_p,
            ..Default::default()
        }
    }

    /// The transform `train_accuracy` is measured with.
    pub fn eval_transform(&self) -> EvalTransform {
        EvalTransform::linear_eval(self.image_size)
    }

    /// Checks every value before any work; the key is the field's name. `num_images` is the training set
    /// size when known.
    pub fn validate(&self, num_images: Option<usize>) -> Result<(), TrainError> {
        if self.epochs == 0 {
            return Err(TrainError::config("epochs", 0, "must be at least 1"));
        }
        if self.batch < 2 {
            return Err(TrainError::config(
                "batch",
                self.batch,
                "must be at least 2 (BatchNorm in train mode needs two samples)",
            ));
        }
        if let Some(n) = num_images {
            if self.batch > n {
                return Err(TrainError::config(
                    "batch",
                    self.batch,
                    format!("larger than the {n} training images (the last partial batch is dropped, so no step would run)"),
                ));
            }
        }
        if !(self.base_lr.is_finite() && self.base_lr > 0.0) {
            return Err(TrainError::config(
                "base_lr",
                self.base_lr,
                "must be finite and > 0",
            ));
        }
        if !(self.final_lr.is_finite() && (0.0..=self.base_lr).contains(&self.final_lr)) {
            return Err(TrainError::config(
                "final_lr",
                self.final_lr,
                "must be finite, ≥ 0 and ≤ base_lr",
            ));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(TrainError::config(
                "momentum",
                self.momentum,
                "must be in [0, 1)",
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(TrainError::config(
                "weight_decay",
                self.weight_decay,
                "must be finite and ≥ 0",
            ));
        }
        if !(0.0..=1.0).contains(&self.hflip_p) {
            return Err(TrainError::config(
                "hflip_p",
                self.hflip_p,
                "must be a probability in [0, 1]",
            ));
        }
        if !(self.min_crop_scale > 0.0 && self.min_crop_scale <= 1.0) {
            return Err(TrainError::config(
                "min_crop_scale",
                self.min_crop_scale,
                "must be in (0, 1] (a fraction of the image area)",
            ));
        }
        if self.image_size < 8 {
            return Err(TrainError::config(
                "image_size",
                self.image_size,
                "must be at least 8 pixels",
            ));
        }
        self.model_config(2)
            .encoder
            .validate()
            .map_err(|e| match e {
                crate::model::CheckpointError::InvalidConfig { value, msg, .. } => {
                    TrainError::Config {
                        key: "width".into(),
                        value,
                        msg,
                    }
                }
                e => e.into(),
            })
    }
}

/// What a supervised run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassifierReport {
    pub epochs: usize,
    pub steps: usize,
    /// Mean cross-entropy of each epoch.
    pub epoch_loss: Vec<f64>,
    /// Top-1 accuracy (%) of each epoch on the augmented training batches, as they were trained on.
    pub epoch_accuracy: Vec<f64>,
    /// Top-1 accuracy (%) on the training set after the last epoch, evaluation transform, eval mode.
    pub train_accuracy: f64,
    pub num_classes: usize,
    pub images: usize,
    pub seed: u64,
    pub seconds: f64,
}

/// A supervised run in progress: the classifier, its optimiser, the position and the curve so far. It can
/// be checkpointed and resumed bit for bit (`state`): the loader's batches are a function of (seed,
/// epoch, sample), so the position is all of the data side there is to save.
pub struct ClassifierTrainer {
    pub cfg: ClassifierTrainConfig,
    pub seed: u64,
    pub model: Classifier,
    num_classes: usize,
    opt: Optimizer,
    /// The autocast region and input layout of each step (`precision`, `channels_last`).
    precision: StepPrecision,
    /// The optimiser's current learning rate (set per epoch).
    lr: f64,
    checkpoint: Option<CheckpointPolicy>,
    /// The epoch in progress.
    epoch: usize,
    steps: usize,
    epoch_loss: Vec<f64>,
    epoch_accuracy: Vec<f64>,
    loss_sum: f64,
    correct: i64,
    seen: i64,
    step_in_epoch: usize,
}

impl ClassifierTrainer {
    /// A fresh classifier from `seed` (initialisation draws from libtorch's generator under the
    /// process-wide lock).
    pub fn new(
        cfg: &ClassifierTrainConfig,
        num_classes: usize,
        seed: u64,
        device: Device,
    ) -> Result<Self, TrainError> {
        cfg.validate(None)?;
        if num_classes < 2 {
            return Err(TrainError::config(
                "classes",
                num_classes,
                "a classifier needs at least two classes",
            ));
        }
        let precision =
            StepPrecision::new(cfg.precision, cfg.channels_last, device).map_err(|e| match e {
                // The recipe's keys are its field names.
                TrainError::Config { key, value, msg } => TrainError::Config {
                    key: key.trim_start_matches("train.").into(),
                    value,
                    msg,
                },
                e => e,
            })?;
        let model = {
            let _rng = torch_rng_lock();
            seed_torch(seed, "train-classifier/init");
            Classifier::new(&cfg.model_config(num_classes as i64), device)
        };
        if cfg.channels_last {
            // Before the optimiser takes its handles (the data is swapped in place either way).
            vars_to_channels_last(&model.vs)?;
        }
        let opt = Sgd {
            momentum: cfg.momentum,
            dampening: 0.0,
            wd: cfg.weight_decay,
            nesterov: false,
        }
        .build(&model.vs, cfg.lr_at(0))?;
        Ok(Self {
            cfg: cfg.clone(),
            seed,
            model,
            num_classes,
            opt,
            precision,
            lr: cfg.lr_at(0),
            checkpoint: None,
            epoch: 0,
            steps: 0,
            epoch_loss: vec![],
            epoch_accuracy: vec![],
            loss_sum: 0.0,
            correct: 0,
            seen: 0,
            step_in_epoch: 0,
        })
    }

    /// One SGD step on images (B, 3, S, S) in [0, 1] with labels (B,); returns the loss.
    pub fn step(&mut self, images: &Tensor, labels: &Tensor) -> Result<f64, TrainError> {
        let dev = self.model.device();
        let x = normalize(&images.to_device(dev));
        let x = match self.precision.inputs(std::slice::from_ref(&x))? {
            Some(mut laid_out) => laid_out.remove(0),
            None => x,
        };
        let y = labels.to_device(dev);
        let (logits, loss) = {
            // Forward pass and loss under autocast (bf16-mixed); backward and SGD after it. The log-softmax
            // is float32 whatever dtype the logits came in.
            let _autocast = self.precision.autocast()?;
            let logits = self.model.logits(&x, true);
            let loss = logits
                .f_log_softmax(-1, Kind::Float)?
                .f_nll_loss::<Tensor>(&y, None, tch::Reduction::Mean, -100)?;
            (logits, loss)
        };
        self.opt.zero_grad();
        loss.f_backward()?;
        self.opt.step();
        let l = loss.double_value(&[]);
        if !l.is_finite() {
            return Err(TrainError::Diverged {
                loss: l,
                epoch: self.epoch,
                step: self.step_in_epoch,
            });
        }
        let correct = tch::no_grad(|| {
            logits
                .argmax(-1, false)
                .eq_tensor(&y)
                .sum(Kind::Int64)
                .int64_value(&[])
        });
        self.loss_sum += l;
        self.correct += correct;
        self.seen += y.size()[0];
        self.step_in_epoch += 1;
        self.steps += 1;
        Ok(l)
    }

    /// Writes the training state as `policy` says while `fit` runs.
    pub fn set_checkpoint(&mut self, policy: Option<CheckpointPolicy>) {
        self.checkpoint = policy;
    }

    /// Runs the remaining epochs over `source`, whose batches carry one view and labels.
    pub fn fit(
        &mut self,
        source: &mut dyn BatchSource,
        progress: &Progress,
    ) -> Result<(), TrainError> {
        self.fit_until(source, progress, usize::MAX)
    }

    /// Runs until the end of training or until `max_steps` steps (counted from the start of the run) are
    /// done, whichever comes first.
    pub fn fit_until(
        &mut self,
        source: &mut dyn BatchSource,
        progress: &Progress,
        max_steps: usize,
    ) -> Result<(), TrainError> {
        let per_epoch = source.batches_per_epoch();
        progress.set_length((self.cfg.epochs * per_epoch) as u64);
        progress.set_position(self.steps as u64);
        while self.epoch < self.cfg.epochs && self.steps < max_steps {
            let epoch = self.epoch;
            if self.step_in_epoch == 0 {
                source.start_epoch(epoch)?;
                self.lr = self.cfg.lr_at(epoch);
                self.opt.set_lr(self.lr);
                (self.loss_sum, self.correct, self.seen) = (0.0, 0, 0);
            }
            let mut epoch_done = false;
            while self.steps < max_steps {
                let Some(batch) = source.next_batch()? else {
                    epoch_done = true;
                    break;
                };
                let labels = batch.labels.as_ref().ok_or_else(|| TrainError::Batch {
                    epoch,
                    step: self.step_in_epoch,
                    msg: "no labels; supervised training needs the class of every image".into(),
                })?;
                let loss = self.step(&batch.views[0], labels)?;
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
            self.epoch_accuracy
                .push(100.0 * self.correct as f64 / self.seen.max(1) as f64);
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
        Ok(())
    }

    /// Steps done so far.
    pub fn steps_done(&self) -> usize {
        self.steps
    }

    pub fn epoch_loss(&self) -> &[f64] {
        &self.epoch_loss
    }

    pub fn into_model(self) -> Classifier {
        self.model
    }
}

/// How the loader under a supervised run works (results never depend on it).
#[derive(Debug, Clone)]
pub struct ClassifierRunOptions {
    /// Decode/crop threads; 0 builds each batch on the training thread.
    pub workers: usize,
    /// Where the model trains and batches are delivered.
    pub device: Device,
}

/// The class of every sample of `source`: its one label (an image with none, or with several different
/// ones, is refused naming its index line).
pub fn single_labels(source: &dyn Source) -> Result<Vec<i64>, TrainError> {
    let classes = source.classes().len() as i64;
    (0..source.len())
        .map(|i| {
            let m = source.meta(i)?;
            let first = m.labels.first().copied();
            let where_ = || match source.locate(i) {
                Some((file, index, line)) => {
                    format!("{} line {line} ({})", index.display(), file.display())
                }
                None => format!("sample {i} of {}", source.name()),
            };
            match first {
                Some(l) if m.labels.iter().all(|&x| x == l) && (0..classes).contains(&l) => Ok(l),
                Some(_) if m.labels.iter().any(|&x| x != m.labels[0]) => Err(TrainError::config(
                    "data",
                    source.name(),
                    format!(
                        "{}: labels {:?}; supervised training takes one class per image",
                        where_(),
                        m.labels
                    ),
                )),
                Some(l) => Err(TrainError::config(
                    "data",
                    source.name(),
                    format!("{}: label {l} outside the {classes} classes", where_()),
                )),
                None => Err(TrainError::config(
                    "data",
                    source.name(),
                    format!(
                        "{}: no label; supervised training needs the class of every image",
                        where_()
                    ),
                )),
            }
        })
        .collect()
}

/// Trains a fresh classifier from `seed` on every image of `source` (one class each) and measures its
/// training accuracy. What the suite's `train-classifier` stage runs; [`train_classifier_checkpointed`]
/// with checkpoints and resume.
pub fn train_classifier(
    cfg: &ClassifierTrainConfig,
    source: Arc<dyn Source>,
    opts: &ClassifierRunOptions,
    seed: u64,
    progress: &Progress,
) -> Result<(Classifier, ClassifierReport), TrainError> {
    train_classifier_checkpointed(cfg, source, opts, seed, &Checkpointing::default(), progress)
}

/// [`train_classifier`] from the state in `ckpt.resume` when given (written by a run of the same recipe,
/// seed and data, which puts the loader back where it was), saving the state as `ckpt.policy` says. What
/// `train classifier` runs.
pub fn train_classifier_checkpointed(
    cfg: &ClassifierTrainConfig,
    source: Arc<dyn Source>,
    opts: &ClassifierRunOptions,
    seed: u64,
    ckpt: &Checkpointing,
    progress: &Progress,
) -> Result<(Classifier, ClassifierReport), TrainError> {
    let start = std::time::Instant::now();
    cfg.validate(Some(source.len()))?;
    single_labels(source.as_ref())?;
    super::source::index::check_files(source.as_ref(), &Default::default())?;
    let num_classes = source.classes().len();
    let mut batches = LabelledIndexSource::new(source.clone(), cfg, seed, opts)?;
    let mut trainer = match &ckpt.resume {
        Some(p) => ClassifierTrainer::resume(p, cfg, num_classes, seed, opts.device, &mut batches)?,
        None => ClassifierTrainer::new(cfg, num_classes, seed, opts.device)?,
    };
    trainer.set_checkpoint(ckpt.policy.clone());
    trainer.fit(&mut batches, progress)?;
    let accuracy = train_accuracy(&trainer.model, source.clone(), cfg, opts)?;
    let report = ClassifierReport {
        epochs: cfg.epochs,
        steps: trainer.steps,
        epoch_loss: trainer.epoch_loss.clone(),
        epoch_accuracy: trainer.epoch_accuracy.clone(),
        train_accuracy: accuracy,
        num_classes,
        images: source.len(),
        seed,
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok((trainer.into_model(), report))
}

/// Top-1 accuracy (%) of `model` on every image of `source` under the recipe's evaluation transform.
pub fn train_accuracy(
    model: &Classifier,
    source: Arc<dyn Source>,
    cfg: &ClassifierTrainConfig,
    opts: &ClassifierRunOptions,
) -> Result<f64, TrainError> {
    let loader = Loader::new(
        source,
        Plan::eval(cfg.eval_transform()),
        LoaderConfig {
            workers: opts.workers,
            prefetch: (2 * opts.workers).max(1),
            device: opts.device,
            ..LoaderConfig::eval(cfg.batch)
        },
    )?;
    let (mut correct, mut seen) = (0i64, 0i64);
    for b in loader.epoch(0) {
        let b = b?;
        let y = b.class_labels(opts.device)?;
        let x = normalize(&b.view(0));
        correct += tch::no_grad(|| {
            model
                .logits(&x, false)
                .argmax(-1, false)
                .eq_tensor(&y)
                .sum(Kind::Int64)
                .int64_value(&[])
        });
        seen += y.size()[0];
    }
    Ok(100.0 * correct as f64 / seen.max(1) as f64)
}

/// The checkpoint metadata of a supervised run: its seed, recipe and data (nothing that varies between
/// runs, so the same seed gives the same bytes).
pub fn checkpoint_metadata(
    cfg: &ClassifierTrainConfig,
    seed: u64,
    source: &dyn Source,
) -> HashMap<String, String> {
    HashMap::from([
        ("contracam.seed".to_string(), seed.to_string()),
        (
            CONFIG_META_KEY.to_string(),
            serde_json::to_string(cfg).expect("a classifier recipe serialises"),
        ),
        (
            "contracam.train_data".to_string(),
            serde_json::json!({ "dataset": source.name(), "images": source.len() }).to_string(),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_is_linear_in_the_batch_and_cosine_over_epochs() {
        let cfg = ClassifierTrainConfig {
            epochs: 4,
            batch: 512,
            ..Default::default()
        };
        assert!((cfg.lr_at(0) - 0.2).abs() < 1e-12);
        assert!((cfg.lr_at(2) - 0.1).abs() < 1e-12);
        assert!(cfg.lr_at(3) > 0.0 && cfg.lr_at(3) < 0.1);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (cfg, key) in [
            (
                ClassifierTrainConfig {
                    epochs: 0,
                    ..Default::default()
                },
                "epochs",
            ),
            (
                ClassifierTrainConfig {
                    batch: 1,
                    ..Default::default()
                },
                "batch",
            ),
            (
                ClassifierTrainConfig {
                    width: 0.0,
                    ..Default::default()
                },
                "width",
            ),
            (
                ClassifierTrainConfig {
                    min_crop_scale: 0.0,
                    ..Default::default()
                },
                "min_crop_scale",
            ),
        ] {
            match cfg.validate(None) {
                Err(TrainError::Config { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: {other:?}"),
            }
        }
    }
}
