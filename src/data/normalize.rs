//! ImageNet normalisation and the evaluation resize on image tensors: the input every frozen encoder sees,
//! shared by training (after the colour augmentation), localization and evaluation, so none of them imports
//! another for it.
use tch::Tensor;

pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

/// ImageNet normalisation of (N, 3, H, W) in [0, 1].
pub fn normalize(x: &Tensor) -> Tensor {
    let dev = x.device();
    let mean = Tensor::from_slice(&IMAGENET_MEAN.map(|v| v as f32))
        .to_device(dev)
        .view([1, 3, 1, 1]);
    let std = Tensor::from_slice(&IMAGENET_STD.map(|v| v as f32))
        .to_device(dev)
        .view([1, 3, 1, 1]);
    (x - mean) / std
}

/// Images in [0, 1] resized to `size` (bilinear) and normalised, for evaluation.
pub fn eval_transform(images: &Tensor, size: i64) -> Tensor {
    let x = if images.size()[2] == size && images.size()[3] == size {
        images.shallow_clone()
    } else {
        images.upsample_bilinear2d([size, size], false, None, None)
    };
    normalize(&x)
}
