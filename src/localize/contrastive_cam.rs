//! ContraCAM exactly as the official `utils/gradcam.py` (spec §1): eval mode; the layer4 map A as a leaf;
//! the L2-normalised projector output; a contrastive score whose numerator sums exp(q_b·k_b) over the whole
//! batch and whose negatives are every other image of every masked batch so far (self-similarities zeroed,
//! not removed; no temperature); α = spatial mean of ∂Σscore/∂A; ReLU on α (negative-signal removal);
//! ReLU(Σ α·A); bicubic upsampling (align_corners=false); per-image min-max; iterative masking with the
//! batch-mean colour and a max-union of the per-iteration maps.
//!
//! The negatives are the other images of the same call: results depend on how a dataset is batched.
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::model::resnet::pool;
use crate::model::ContrastiveModel;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CamConfig {
    /// 1 (layer4 at /32), 2 (stride 1 in layer4[0]) or 4 (also layer3[0]).
    pub expand_res: u32,
    /// Number of iterations T (1 = plain ContraCAM; the official boxes use 10).
    pub iters: usize,
    /// Clamp α at 0 (the official default); false gives Table 1's "w/o negative signal removal".
    pub negative_removal: bool,
}

impl Default for CamConfig {
    fn default() -> Self {
        Self {
            expand_res: 1,
            iters: 1,
            negative_removal: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CamError {
    #[error("expand_res must be 1, 2 or 4, got {0}")]
    ExpandRes(u32),
    #[error("iters must be at least 1")]
    Iters,
    #[error(
        "images must be float32 (N, 3, H, W) ImageNet-normalised or uint8 (N, H, W, 3) RGB, with N, H, \
         W ≥ 1; got {kind:?} {shape:?}"
    )]
    Input { kind: Kind, shape: Vec<i64> },
    #[error("{0}")]
    Labels(String),
    #[error(
        "{count} input values are NaN or infinite (the first in image {first_image}); ContraCAM needs \
         finite images"
    )]
    NonFinite { count: i64, first_image: i64 },
    #[error(
        "a batch of {images} image(s) has no negatives: ContraCAM contrasts each image with the other \
         images of its batch{hint}"
    )]
    NoNegatives { images: usize, hint: String },
    #[error(transparent)]
    Torch(#[from] crate::util::torch_guard::TorchError),
}

/// What one iteration computed, for tests and inspection.
#[derive(Debug)]
pub struct IterationTrace {
    pub layer4: Tensor,
    pub projection: Tensor,
    pub score: Tensor,
    /// α before the clamp, (N, C).
    pub alpha_raw: Tensor,
    /// Σ α·A before the ReLU, (N, 1, h, w).
    pub cam_lowres_prerelu: Tensor,
    pub cam_lowres: Tensor,
    /// Bicubic upsampling, before min-max.
    pub cam_upsampled: Tensor,
    /// This iteration's normalised map, before the max-union.
    pub cam: Tensor,
}

#[derive(Debug)]
pub struct CamTrace {
    /// The final map (N, 1, H, W) in [0, 1].
    pub cam: Tensor,
    /// The batch-mean fill colour (1, 3, 1, 1).
    pub mask_color: Tensor,
    pub iterations: Vec<IterationTrace>,
}

/// Contrastive CAM of a batch of normalised images (N, 3, H, W) → (N, 1, H, W) in [0, 1].
pub fn contrastive_cam(
    model: &ContrastiveModel,
    images: &Tensor,
    cfg: &CamConfig,
) -> Result<Tensor, CamError> {
    Ok(run(model, images, cfg, false)?.cam)
}

/// As [`contrastive_cam`], keeping every intermediate.
pub fn contrastive_cam_traced(
    model: &ContrastiveModel,
    images: &Tensor,
    cfg: &CamConfig,
) -> Result<CamTrace, CamError> {
    run(model, images, cfg, true)
}

fn run(
    model: &ContrastiveModel,
    images: &Tensor,
    cfg: &CamConfig,
    record: bool,
) -> Result<CamTrace, CamError> {
    if ![1, 2, 4].contains(&cfg.expand_res) {
        return Err(CamError::ExpandRes(cfg.expand_res));
    }
    if cfg.iters == 0 {
        return Err(CamError::Iters);
    }
    check_images(images)?;
    if images.size()[0] < 2 {
        return Err(CamError::NoNegatives {
            images: 1,
            hint: String::new(),
        });
    }
    crate::util::torch_guard::catch_torch("contrastive CAM", || {
        run_checked(model, images, cfg, record)
    })?
}

/// Shape, kind and finiteness of a batch of normalised images.
fn check_images(images: &Tensor) -> Result<(), CamError> {
    let shape = images.size();
    if shape.len() != 4
        || shape[1] != 3
        || shape.iter().any(|&d| d < 1)
        || images.kind() != Kind::Float
    {
        return Err(CamError::Input {
            kind: images.kind(),
            shape,
        });
    }
    let bad = images.isfinite().logical_not();
    let count = bad.sum(Kind::Int64).int64_value(&[]);
    if count > 0 {
        let first = bad
            .reshape([shape[0], -1])
            .any_dim(1, false)
            .to_kind(Kind::Int64)
            .argmax(0, false)
            .int64_value(&[]);
        return Err(CamError::NonFinite {
            count,
            first_image: first,
        });
    }
    Ok(())
}

/// The images ContraCAM takes, from a tensor read from a file: float32 (N, 3, H, W) already
/// ImageNet-normalised is used as it is; uint8 (N, H, W, 3) RGB is scaled to [0, 1] and normalised with the
/// ImageNet mean and standard deviation (torchvision's ToTensor + Normalize, as the official loaders).
pub fn cam_inputs(t: &Tensor) -> Result<Tensor, CamError> {
    let s = t.size();
    match t.kind() {
        Kind::Uint8 if s.len() == 4 && s[3] == 3 && s.iter().all(|&d| d >= 1) => {
            let x = t.permute([0, 3, 1, 2]).to_kind(Kind::Float) / 255.0;
            Ok(crate::train::augment::normalize(&x))
        }
        Kind::Float => {
            check_images(t)?;
            Ok(t.shallow_clone())
        }
        kind => Err(CamError::Input { kind, shape: s }),
    }
}

/// ContraCAM of `images` (N, 3, H, W) in consecutive batches of `batch_size`, as the official code runs
/// its unshuffled loader; each batch's negatives are its other images. Refuses, before any work, a batch
/// of one image (no negatives) — `batch_size` 1, or N mod `batch_size` = 1. `done` is called with the
/// number of images finished. The result is on the CPU.
pub fn contrastive_cam_batched(
    model: &ContrastiveModel,
    images: &Tensor,
    cfg: &CamConfig,
    batch_size: usize,
    done: &dyn Fn(usize),
) -> Result<Tensor, CamError> {
    check_images(images)?;
    let n = images.size()[0] as usize;
    let b = batch_size.max(1);
    if b == 1 || n == 1 {
        return Err(CamError::NoNegatives {
            images: 1,
            hint: format!(
                " ({n} image(s), batch size {b}); use at least 2 images per batch (official 256)"
            ),
        });
    }
    if n % b == 1 {
        return Err(CamError::NoNegatives {
            images: 1,
            hint: format!(
                ": {n} images in batches of {b} leave a last batch of 1; choose a batch size that does \
                 not leave one image over (e.g. {})",
                workable_batch_sizes(n, b)
            ),
        });
    }
    let mut outs = Vec::new();
    let mut finished = 0;
    for chunk in images.split(b as i64, 0) {
        let k = chunk.size()[0] as usize;
        outs.push(contrastive_cam(model, &chunk, cfg)?.to_device(tch::Device::Cpu));
        finished += k;
        done(finished);
    }
    Ok(Tensor::cat(&outs, 0))
}

/// The nearest batch sizes below and above `b` that leave no batch of one image out of `n`.
fn workable_batch_sizes(n: usize, b: usize) -> String {
    let ok = |v: usize| v >= 2 && n % v != 1;
    let below = (2..b).rev().find(|&v| ok(v));
    let above = (b + 1..=n.max(b + 1)).find(|&v| ok(v));
    let v: Vec<String> = below
        .into_iter()
        .chain(above)
        .map(|v| v.to_string())
        .collect();
    v.join(" or ")
}

fn run_checked(
    model: &ContrastiveModel,
    images: &Tensor,
    cfg: &CamConfig,
    record: bool,
) -> Result<CamTrace, CamError> {
    let shape = images.size();
    let (h, w) = (shape[2], shape[3]);
    let x0 = images.to_device(model.device()).detach();
    let mask_color = x0.mean_dim([0i64, 2, 3].as_slice(), true, Kind::Float);
    let mut image = x0.shallow_clone();
    let mut key: Option<Tensor> = None;
    let mut queues: Vec<Tensor> = Vec::new();
    let mut mask: Option<Tensor> = None;
    let mut iterations = Vec::new();
    for _ in 0..cfg.iters {
        let a = tch::no_grad(|| model.encoder.features(&image, false, cfg.expand_res))
            .detach()
            .set_requires_grad(true);
        let q = model.projector.forward(&pool(&a), false);
        let k = key.get_or_insert_with(|| q.detach()).shallow_clone();
        queues.push(q.detach());
        let score = contrastive_score(&q, &k, &queues);
        let grad = Tensor::run_backward(&[&score.sum(Kind::Float)], &[&a], false, false).remove(0);
        // `move`: the gradient, the layer4 map and the graph are freed with this iteration's CAM, before
        // the masked image and the next forward pass need memory.
        let (cam_t, trace) = tch::no_grad(move || {
            let alpha_raw = grad.mean_dim([2i64, 3].as_slice(), false, Kind::Float);
            drop(grad);
            let alpha = if cfg.negative_removal {
                alpha_raw.clamp_min(0.0)
            } else {
                alpha_raw.shallow_clone()
            };
            let a = a.detach();
            let prerelu = (alpha.unsqueeze(-1).unsqueeze(-1) * &a).sum_dim_intlist(
                [1i64].as_slice(),
                true,
                Kind::Float,
            );
            let lowres = prerelu.relu();
            let up = lowres.upsample_bicubic2d([h, w], false, None, None);
            let cam = min_max_per_image(&up);
            let trace = record.then(|| IterationTrace {
                layer4: a,
                projection: q.detach(),
                score: score.detach(),
                alpha_raw,
                cam_lowres_prerelu: prerelu,
                cam_lowres: lowres,
                cam_upsampled: up,
                cam: cam.shallow_clone(),
            });
            (cam, trace)
        });
        let m = match mask.take() {
            None => cam_t,
            Some(m) => m.maximum(&cam_t),
        };
        image = tch::no_grad(|| &x0 * (1.0 - &m) + &mask_color * &m);
        mask = Some(m);
        iterations.extend(trace);
    }
    Ok(CamTrace {
        cam: mask.ok_or(CamError::Iters)?,
        mask_color,
        iterations,
    })
}

/// score_i = log Σ_b exp(q_b·k_b) − log Σ_{l,j} exp(q_i·Q_l[j] · (1 − δ_ij)), with the very operations of
/// the official `_contrastive_score` (einsum products, exp-sum ratio, log): the same operations give the same
/// rounding, and over 10 masking iterations a difference of one ulp in the score grows to ~1e-4 in the CAMs
/// (a logsumexp form moved the smoke network's CAMs by up to 1.6e-4). The cosines are in [−1, 1] (no
/// temperature), so the exponentials cannot overflow.
pub fn contrastive_score(q: &Tensor, key: &Tensor, queues: &[Tensor]) -> Tensor {
    let b = q.size()[0];
    let off_diag = 1.0 - Tensor::eye(b, (q.kind(), q.device()));
    // (1, B): the positive term is summed over the whole batch (official).
    let pos = Tensor::einsum("nc,nc->n", &[q, key], None::<i64>).unsqueeze(0);
    let negs: Vec<Tensor> = queues
        .iter()
        .map(|ql| Tensor::einsum("nc,kc->nk", &[q, ql], None::<i64>) * &off_diag)
        .collect();
    let neg = Tensor::cat(&negs, 1);
    let one = [1i64];
    (pos.exp()
        .sum_dim_intlist(one.as_slice(), false, None::<Kind>)
        / neg
            .exp()
            .sum_dim_intlist(one.as_slice(), false, None::<Kind>))
    .log()
}

/// Per image: subtract the min, divide by (max + 1e-20), as the official code.
pub(crate) fn min_max_per_image(x: &Tensor) -> Tensor {
    let n = x.size()[0];
    let flat = x.reshape([n, -1]);
    let min = flat.amin([1i64].as_slice(), true);
    let shifted = &flat - min;
    let max = shifted.amax([1i64].as_slice(), true);
    (shifted / (max + 1e-20)).reshape(x.size())
}
