//! The self-supervised training loop of the official code (spec §4): MoCo v2 (queue, τ 0.2, one direction,
//! momentum encoder updated at the start of each step) or BYOL (symmetric cosine loss, EMA target);
//! SGD with momentum 0.9 and weight decay on all parameters; lr = base_lr·batch/256 with a per-epoch
//! cosine schedule to `final_lr`; drop_last; optional object-aware random crop from per-image boxes.
use indicatif::ProgressBar;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::nn::{Optimizer, OptimizerConfig, Sgd};
use tch::{Device, Kind, Tensor};

use super::augment::{two_views, AugmentConfig, Region};
use crate::model::{ContrastiveModel, Method, ModelConfig};
use crate::util::rng::{rng_for, seed_torch};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub epochs: usize,
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
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("training config: {0}")]
    Config(String),
    #[error("training diverged: loss is {loss} at epoch {epoch}, step {step}")]
    Diverged {
        loss: f64,
        epoch: usize,
        step: usize,
    },
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// What training needs: images (N, 3, H, W) in [0, 1], and for object-aware crop the boxes of each image
/// (normalised xyxy; an empty list means the whole image).
pub struct TrainData<'a> {
    pub images: &'a Tensor,
    pub boxes: Option<&'a [Vec<Region>]>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReport {
    pub epochs: usize,
    pub steps: usize,
    /// Mean loss of each epoch.
    pub epoch_loss: Vec<f64>,
    pub seed: u64,
    pub seconds: f64,
}

/// Trains a fresh model from `seed` and returns it with its loss curve.
pub fn train(
    model_cfg: &ModelConfig,
    cfg: &TrainConfig,
    data: &TrainData,
    seed: u64,
    device: Device,
    progress: &ProgressBar,
) -> Result<(ContrastiveModel, TrainReport), TrainError> {
    let n = data.images.size()[0] as usize;
    if cfg.batch_size < 2 || cfg.batch_size > n {
        return Err(TrainError::Config(format!(
            "batch_size {} must be in 2..={n} (the number of images)",
            cfg.batch_size
        )));
    }
    if let Some(b) = data.boxes {
        if b.len() != n {
            return Err(TrainError::Config(format!(
                "{} box lists for {n} images",
                b.len()
            )));
        }
    }
    let start = std::time::Instant::now();
    // Training draws from libtorch's global generator (init, queue): keep other draws out meanwhile.
    let _rng = crate::util::rng::torch_rng_lock();
    seed_torch(seed, "train/init");
    let online = ContrastiveModel::new(model_cfg, device);
    let mut target = ContrastiveModel::new(model_cfg, device);
    target.vs.copy(&online.vs)?;
    target.vs.freeze();
    let pairs = ema_pairs(&online, &target);
    let ema = cfg.ema_for(model_cfg.method);
    let mut opt: Optimizer = Sgd {
        momentum: cfg.momentum,
        dampening: 0.0,
        wd: cfg.weight_decay,
        nesterov: false,
    }
    .build(&online.vs, cfg.lr_at(0))?;
    let mut queue = (model_cfg.method == Method::Moco)
        .then(|| MocoQueue::new(cfg.queue_size, model_cfg.proj_dim(), device));
    let mut order_rng = rng_for(seed, "train/order");
    let mut aug_rng = rng_for(seed, "train/augment");
    let steps_per_epoch = n / cfg.batch_size;
    progress.set_length((cfg.epochs * steps_per_epoch) as u64);
    let mut epoch_loss = Vec::with_capacity(cfg.epochs);
    let mut step = 0;
    for epoch in 0..cfg.epochs {
        opt.set_lr(cfg.lr_at(epoch));
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut order_rng);
        let mut sum = 0.0;
        for b in 0..steps_per_epoch {
            let idx = &order[b * cfg.batch_size..(b + 1) * cfg.batch_size];
            let idx_t = Tensor::from_slice(&idx.iter().map(|&i| i as i64).collect::<Vec<_>>());
            let batch = data.images.index_select(0, &idx_t).to_device(device);
            let regions: Vec<Region> = idx
                .iter()
                .map(|&i| match data.boxes.map(|b| &b[i]) {
                    Some(boxes) if !boxes.is_empty() => boxes[aug_rng.random_range(0..boxes.len())],
                    _ => [0.0, 0.0, 1.0, 1.0],
                })
                .collect();
            let (v1, v2) = two_views(&batch, &regions, &mut aug_rng, &cfg.augment);
            ema_update(&pairs, ema); // at the start of the step, as the official code
            let loss = match &mut queue {
                Some(q) => q.loss_and_enqueue(&online, &target, &v1, &v2, cfg.temperature),
                None => byol_loss(&online, &target, &v1, &v2),
            };
            opt.zero_grad();
            loss.f_backward()?;
            opt.step();
            let l = loss.double_value(&[]);
            if !l.is_finite() {
                return Err(TrainError::Diverged {
                    loss: l,
                    epoch,
                    step: b,
                });
            }
            sum += l;
            step += 1;
            progress.inc(1);
            progress.set_message(format!("epoch {}/{} loss {l:.3}", epoch + 1, cfg.epochs));
        }
        epoch_loss.push(sum / steps_per_epoch.max(1) as f64);
    }
    let report = TrainReport {
        epochs: cfg.epochs,
        steps: step,
        epoch_loss,
        seed,
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok((online, report))
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

/// MoCo's key queue, initialised with random unit vectors.
struct MocoQueue {
    keys: Tensor,
    ptr: i64,
}

impl MocoQueue {
    fn new(size: usize, dim: i64, device: Device) -> Self {
        let keys = Tensor::randn([size as i64, dim], (Kind::Float, device));
        let keys = crate::model::layers::l2_normalize(&keys);
        Self { keys, ptr: 0 }
    }

    /// logits = [q·k, q·queue] / τ, cross-entropy with label 0; then enqueue k.
    fn loss_and_enqueue(
        &mut self,
        online: &ContrastiveModel,
        target: &ContrastiveModel,
        v1: &Tensor,
        v2: &Tensor,
        tau: f64,
    ) -> Tensor {
        let q = online.project(v1, true);
        // The momentum network runs in train mode (batch statistics), without gradient.
        let k = tch::no_grad(|| target.project(v2, true));
        let pos = (&q * &k).sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
        // A copy, as MoCo's `queue.clone().detach()`: the queue is updated in place before backward.
        let neg = q.matmul(&self.keys.copy().tr());
        let logits = Tensor::cat(&[pos, neg], 1) / tau;
        let labels = Tensor::zeros([q.size()[0]], (Kind::Int64, q.device()));
        let loss = logits.cross_entropy_for_logits(&labels);
        let size = self.keys.size()[0];
        let b = k.size()[0];
        let idx = (Tensor::arange(b, (Kind::Int64, k.device())) + self.ptr).remainder(size);
        tch::no_grad(|| {
            let _ = self.keys.index_copy_(0, &idx, &k);
        });
        self.ptr = (self.ptr + b) % size;
        loss
    }
}

/// −2·(mean cos(p1, y2) + mean cos(p2, y1)); projections and predictions are unit vectors already.
fn byol_loss(
    online: &ContrastiveModel,
    target: &ContrastiveModel,
    v1: &Tensor,
    v2: &Tensor,
) -> Tensor {
    let pred = online
        .predictor
        .as_ref()
        .expect("BYOL model has a predictor");
    let p1 = pred.forward(&online.project(v1, true), true);
    let p2 = pred.forward(&online.project(v2, true), true);
    let (y1, y2) = tch::no_grad(|| (target.project(v1, true), target.project(v2, true)));
    let cos = |a: &Tensor, b: &Tensor| {
        (a * b)
            .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
            .mean(Kind::Float)
    };
    (cos(&p1, &y2) + cos(&p2, &y1)) * -2.0
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
