//! Frozen-backbone features: the encoder's pooled output in eval mode, batched, without gradient.
use tch::{Device, Tensor};

use crate::model::ContrastiveModel;
use crate::train::augment::eval_transform;

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
