//! Frozen-backbone features: the encoder's pooled output in eval mode, batched, without gradient; of an
//! image tensor, of a synthetic set, or of a built split through the loader.
use std::sync::Arc;

use tch::{Device, Tensor};

use super::EvalError;
use crate::data::loader::{EvalTransform, Loader, LoaderConfig, Plan, Source};
use crate::data::normalize::eval_transform;
use crate::data::synth::SynthSet;
use crate::model::ContrastiveModel;
use crate::util::progress::Progress;

/// Features (N, D) on the CPU of images (N, 3, H, W) in [0, 1], resized to `size` and normalised.
pub fn encode(model: &ContrastiveModel, images: &Tensor, size: i64, batch: i64) -> Tensor {
    let outs: Vec<Tensor> = tch::no_grad(|| {
        images
            .split(batch, 0)
            .iter()
            .map(|x| {
                model
                    .encoder
                    .forward(&eval_transform(&x.to_device(model.device()), size), false)
                    .to_device(Device::Cpu)
            })
            .collect()
    });
    Tensor::cat(&outs, 0)
}

/// Features (N, D) on the CPU and labels (N,) of a synthetic set, each image resized whole to `size` (the
/// smoke pipeline's linear probe).
pub fn synth_features(
    model: &ContrastiveModel,
    set: &SynthSet,
    size: i64,
    batch: usize,
) -> (Tensor, Tensor) {
    let x = encode(model, &set.images_tensor(), size, batch as i64);
    (x, set.labels_tensor())
}

/// Features (N, D) on the CPU and labels (N,) of a built split, in index order, through the loader with
/// the official evaluation transform (Resize(256) + CenterCrop(224) at 224 px, else Resize(s) +
/// CenterCrop(s)) on `workers` threads. `progress` counts images. An empty split is an error naming it.
pub fn split_features(
    model: &ContrastiveModel,
    source: Arc<dyn Source>,
    size: i64,
    batch: usize,
    workers: usize,
    progress: &Progress,
) -> Result<(Tensor, Tensor), EvalError> {
    if source.is_empty() {
        return Err(EvalError::invalid(source.name(), "has no samples"));
    }
    let cfg = LoaderConfig {
        workers,
        prefetch: 2 * workers.max(1),
        device: model.device(),
        ..LoaderConfig::eval(batch)
    };
    let loader = Loader::new(
        source,
        Plan::eval(EvalTransform::linear_eval(size as u32)),
        cfg,
    )?;
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for b in loader.epoch(0) {
        let b = b?;
        xs.push(encode(model, &b.view(0), size, batch as i64));
        ys.push(b.class_labels(Device::Cpu)?);
        progress.inc(b.len() as u64);
    }
    Ok((Tensor::cat(&xs, 0), Tensor::cat(&ys, 0)))
}
