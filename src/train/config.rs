//! Training hyper-parameters (the suite's `[train]` table) and their validation. Defaults are the official
//! code's (`models/moco.py`, `models/byol.py`, `pretrain.py`): SGD momentum 0.9, weight decay 1e-4 on all
//! parameters, lr 0.03·batch/256 with a per-epoch cosine schedule to 1e-3, 800 epochs, batch 256.
use serde::{Deserialize, Serialize};

use super::augment::AugmentConfig;
use super::error::TrainError;
use super::objective::mix_loss::MixWeighting;
use super::precision::Precision;
use crate::model::Method;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub epochs: usize,
    /// Global batch size (all devices together).
    pub batch_size: usize,
    /// Learning rate at batch 256 (official 0.03); scaled linearly with the batch size.
    pub base_lr: f64,
    pub final_lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// EMA coefficient of the momentum/target network; default 0.999 (MoCo) or 0.996 (BYOL).
    pub ema: Option<f64>,
    /// MoCo queue length (official 65 536).
    pub queue_size: usize,
    /// MoCo temperature (official 0.2).
    pub temperature: f64,
    pub augment: AugmentConfig,
    /// Mixing of view 1 after the colour transforms (BG-Mixup, Mixup, CutMix); off by default. Left out
    /// of the serialised config while off, so configs and their fingerprints stay as they were.
    #[serde(skip_serializing_if = "MixConfig::is_off")]
    pub mix: MixConfig,
    /// Forward passes and loss in bfloat16 autocast (`bf16-mixed`) or float32 (`fp32`, the official code);
    /// parameters, gradients, optimiser, EMA target and queue stay float32 either way (`precision`). Left
    /// out of the serialised config while fp32, so configs and their fingerprints stay as they were.
    #[serde(skip_serializing_if = "Precision::is_fp32")]
    pub precision: Precision,
    /// Convolution weights and input views in the channels_last (NHWC) memory format; same values, another
    /// layout (left out of the serialised config while false).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub channels_last: bool,
}

/// What view 1 is mixed with, as the official `*_bgmix`, `*_mixup` and `*_cutmix` models.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MixKind {
    #[default]
    None,
    /// Background mixup through the soft masks of view 1 (`models/bg_mixup.py`).
    BgMixup,
    /// Mixup with per-image weights, i-Mix style (`models/mixup.py`).
    Mixup,
    /// CutMix with one box per batch, i-Mix style (`models/cutmix.py`).
    Cutmix,
}

/// Which images the mixing draws of a data-parallel run cover.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MixScope {
    /// The global batch: each rank all-gathers view 1 (and its masks), mixes the whole batch with the
    /// draws one process would make (partners anywhere in the global batch, one background queue fed in
    /// global order) and keeps its rows. N ranks × b then train as one process × N·b, and every rank's
    /// queue and stream are rank 0's, so a state resumes exactly at any world size.
    #[default]
    Global,
    /// Each rank mixes its own shard, partners and background queue within it, every rank drawing from
    /// the run's one seed, as the official per-GPU modules under Lightning DDP (`seed_everything`).
    PerRank,
}

impl MixScope {
    fn is_global(&self) -> bool {
        *self == MixScope::Global
    }
}

/// The suite's `[train.mix]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MixConfig {
    pub kind: MixKind,
    /// BG-Mixup: probability that an image with a background is mixed (`aug_prob`); default 0.4 (MoCo)
    /// or 0.3 (BYOL), the paper's values.
    pub bg_mixup_prob: Option<f64>,
    /// BG-Mixup: mask threshold of the foreground rectangle (`cam_thres`, official 0.2).
    pub cam_thres: f64,
    /// Mixup/CutMix: the weights come from Beta(alpha, alpha) (official 1).
    pub alpha: f64,
    /// Mixup with MoCo: "official" multiplies mean-reduced cross-entropies by the per-image weights
    /// (`MoCoMixup`), "per-sample" weighs each image's own cross-entropy. CutMix has one weight per batch,
    /// where both agree; it always uses the per-sample form, as `MoCoCutMix`.
    pub weighting: MixWeighting,
    /// Under data-parallel training, whether the draws cover the global batch (default) or each rank's
    /// shard (the official per-GPU behaviour). The same with one process. Left out of the serialised
    /// config when global, so configs and fingerprints written before it stay as they were.
    #[serde(skip_serializing_if = "MixScope::is_global")]
    pub scope: MixScope,
}

impl Default for MixConfig {
    fn default() -> Self {
        Self {
            kind: MixKind::None,
            bg_mixup_prob: None,
            cam_thres: 0.2,
            alpha: 1.0,
            weighting: MixWeighting::Official,
            scope: MixScope::Global,
        }
    }
}

impl MixConfig {
    /// Whether this is the default (no mixing, default parameters).
    pub fn is_off(&self) -> bool {
        *self == Self::default()
    }

    pub fn bg_mixup_prob_for(&self, method: Method) -> f64 {
        self.bg_mixup_prob.unwrap_or(match method {
            Method::Moco => 0.4,
            Method::Byol => 0.3,
        })
    }

    fn validate(&self) -> Result<(), TrainError> {
        if let Some(p) = self.bg_mixup_prob {
            probability("train.mix.bg_mixup_prob", p)?;
        }
        probability("train.mix.cam_thres", self.cam_thres)?;
        positive_finite("train.mix.alpha", self.alpha)
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 800,
            batch_size: 256,
            base_lr: 0.03,
            final_lr: 1e-3,
            momentum: 0.9,
            weight_decay: 1e-4,
            ema: None,
            queue_size: 65536,
            temperature: 0.2,
            augment: AugmentConfig::default(),
            mix: MixConfig::default(),
            precision: Precision::Fp32,
            channels_last: false,
        }
    }
}

impl TrainConfig {
    pub fn ema_for(&self, method: Method) -> f64 {
        self.ema.unwrap_or(match method {
            Method::Moco => 0.999,
            Method::Byol => 0.996,
        })
    }

    pub fn peak_lr(&self) -> f64 {
        self.base_lr * self.batch_size as f64 / 256.0
    }

    /// lr of epoch e: final + ½(peak − final)(1 + cos(π e / E)).
    pub fn lr_at(&self, epoch: usize) -> f64 {
        let t = epoch as f64 / self.epochs.max(1) as f64;
        self.final_lr
            + 0.5 * (self.peak_lr() - self.final_lr) * (1.0 + (std::f64::consts::PI * t).cos())
    }

    /// Checks every value against its domain before any work starts; errors name the key as a suite
    /// writes it (`train.batch_size`). `num_images` is the training set size when known.
    pub fn validate(&self, method: Method, num_images: Option<usize>) -> Result<(), TrainError> {
        if self.epochs == 0 {
            return Err(TrainError::config("train.epochs", 0, "must be at least 1"));
        }
        if self.batch_size < 2 {
            return Err(TrainError::config(
                "train.batch_size",
                self.batch_size,
                "must be at least 2 (BatchNorm in train mode needs two samples, the losses need negatives)",
            ));
        }
        if let Some(n) = num_images {
            if self.batch_size > n {
                return Err(TrainError::config(
                    "train.batch_size",
                    self.batch_size,
                    format!("larger than the {n} training images (batches drop the last partial one, so no step would run)"),
                ));
            }
        }
        positive_finite("train.base_lr", self.base_lr)?;
        if !(self.final_lr.is_finite() && self.final_lr >= 0.0) {
            return Err(TrainError::config(
                "train.final_lr",
                self.final_lr,
                "must be finite and ≥ 0",
            ));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(TrainError::config(
                "train.momentum",
                self.momentum,
                "must be in [0, 1)",
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(TrainError::config(
                "train.weight_decay",
                self.weight_decay,
                "must be finite and ≥ 0",
            ));
        }
        if let Some(m) = self.ema {
            if !(0.0..=1.0).contains(&m) {
                return Err(TrainError::config("train.ema", m, "must be in [0, 1]"));
            }
        }
        if method == Method::Moco {
            if self.queue_size == 0 {
                return Err(TrainError::config(
                    "train.queue_size",
                    0,
                    "must be at least 1 (MoCo's negatives)",
                ));
            }
            if self.queue_size < self.batch_size {
                return Err(TrainError::config(
                    "train.queue_size",
                    self.queue_size,
                    format!(
                        "must be ≥ train.batch_size = {} (each step enqueues a whole batch of keys)",
                        self.batch_size
                    ),
                ));
            }
            positive_finite("train.temperature", self.temperature)?;
        }
        self.augment.validate("train.augment")?;
        self.mix.validate()
    }
}

pub(crate) fn positive_finite(key: &str, v: f64) -> Result<(), TrainError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(TrainError::config(key, v, "must be finite and > 0"))
    }
}

pub(crate) fn probability(key: &str, v: f64) -> Result<(), TrainError> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(TrainError::config(
            key,
            v,
            "must be a probability in [0, 1]",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_schedule_matches_the_official_formula() {
        let cfg = TrainConfig {
            epochs: 4,
            batch_size: 512,
            base_lr: 0.03,
            final_lr: 1e-3,
            ..Default::default()
        };
        assert!((cfg.lr_at(0) - 0.06).abs() < 1e-12);
        assert!((cfg.lr_at(2) - (1e-3 + 0.5 * (0.06 - 1e-3))).abs() < 1e-12);
        assert!(cfg.lr_at(3) > cfg.final_lr);
    }
}
