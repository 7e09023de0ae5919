//! Localization maps of a supervised classifier (Tables 2–3 compare them with ContraCAM), two ways:
//!
//! - [`class_activation_map`]: CAM as clovaai/wsolevaluation computes it, `wsol/resnet.py`
//!   `ResNetCam.forward(x, labels, return_cam=True)`: the layer4 map A with layer4 at stride 1 (its
//!   `_make_layer(block, 512, layers[3], stride=1)`; here `expand_res` 2, and 4 for its `large_feature_map`,
//!   which also sets layer3 to stride 1), then `(fc.weight[label] · A).mean(channels)` — no ReLU. Its
//!   `inference.py` then resizes each map to the image with `cv2.resize(..., INTER_CUBIC)` and min-max
//!   normalises it (`normalize_scoremap`: all-equal or NaN maps become zeros): [`wsol_scoremap`].
//! - [`grad_cam`]: Grad-CAM as the official object-aware-contrastive code runs it for a classifier,
//!   `utils/gradcam.py::GradCAM.get_supervised_cam`: score = the logit of the label (default: the arg-max
//!   class), α = spatial mean of ∂score/∂A clamped at 0, ReLU(Σ α·A), bicubic upsampling to the input
//!   (align_corners=false), per-image min-max with +1e-20 — the same `_compute_cam` as ContraCAM.
//!
//! wsolevaluation uses the ground-truth class as the label.
use tch::{Kind, Tensor};

use super::contrastive_cam::{min_max_per_image, CamError};
use crate::imgops::resize::resize_cubic_f64;
use crate::model::Classifier;

fn check_input(images: &Tensor, expand_res: u32) -> Result<(), CamError> {
    if ![1, 2, 4].contains(&expand_res) {
        return Err(CamError::ExpandRes(expand_res));
    }
    let shape = images.size();
    if shape.len() != 4 || shape[1] != 3 || shape[0] == 0 || images.kind() != Kind::Float {
        return Err(CamError::Input {
            kind: images.kind(),
            shape,
        });
    }
    Ok(())
}

/// Labels as an int64 (N,) tensor on `device`, checked against the batch size and class count.
fn check_labels(
    labels: &Tensor,
    n: i64,
    classes: i64,
    device: tch::Device,
) -> Result<Tensor, CamError> {
    let ok_kind = matches!(
        labels.kind(),
        Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8
    );
    if !ok_kind || labels.size() != [n] {
        return Err(CamError::Labels(format!(
            "labels must be an integer tensor of shape ({n},), got {:?} {:?}",
            labels.kind(),
            labels.size()
        )));
    }
    let labels = labels.to_kind(Kind::Int64).to_device(device);
    if n > 0 {
        let (lo, hi) = (labels.min().int64_value(&[]), labels.max().int64_value(&[]));
        if lo < 0 || hi >= classes {
            return Err(CamError::Labels(format!(
                "labels must lie in 0..{classes}, got {lo}..={hi}"
            )));
        }
    }
    Ok(labels)
}

/// wsolevaluation's CAM of `labels` (int, (N,)) for normalised images (N, 3, H, W): the raw (N, h, w) map
/// at the layer4 resolution.
pub fn class_activation_map(
    model: &Classifier,
    images: &Tensor,
    labels: &Tensor,
    expand_res: u32,
) -> Result<Tensor, CamError> {
    check_input(images, expand_res)?;
    let labels = check_labels(
        labels,
        images.size()[0],
        model.config.num_classes,
        model.device(),
    )?;
    Ok(tch::no_grad(|| {
        let a = model
            .encoder
            .features(&images.to_device(model.device()), false, expand_res);
        let (n, c) = (a.size()[0], a.size()[1]);
        let w = model.fc.weight.index_select(0, &labels).view([n, c, 1, 1]);
        (w * a).mean_dim([1i64].as_slice(), false, Kind::Float)
    }))
}

/// The score map wsolevaluation evaluates: one raw CAM (h, w) resized to (height, width) with OpenCV's
/// bicubic resize, then min-max normalised (zeros when the map is constant or has a NaN). Row-major.
pub fn wsol_scoremap(raw: &[f64], w: usize, h: usize, width: usize, height: usize) -> Vec<f64> {
    let mut cam = resize_cubic_f64(raw, w, h, width, height);
    if cam.iter().any(|v| v.is_nan()) {
        return vec![0.0; cam.len()];
    }
    let min = cam.iter().copied().fold(f64::INFINITY, f64::min);
    let max = cam.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if min == max {
        return vec![0.0; cam.len()];
    }
    cam.iter_mut().for_each(|v| *v -= min);
    let max = max - min;
    cam.iter_mut().for_each(|v| *v /= max);
    cam
}

/// [`class_activation_map`] followed by [`wsol_scoremap`] at the input size: (N, 1, H, W) float32 in [0, 1].
pub fn class_activation_scoremaps(
    model: &Classifier,
    images: &Tensor,
    labels: &Tensor,
    expand_res: u32,
) -> Result<Tensor, CamError> {
    let raw = class_activation_map(model, images, labels, expand_res)?
        .to_device(tch::Device::Cpu)
        .to_kind(Kind::Double)
        .contiguous();
    let (n, h, w) = (raw.size()[0], raw.size()[1], raw.size()[2]);
    let (height, width) = (images.size()[2], images.size()[3]);
    let flat = Vec::<f64>::try_from(raw.view([-1])).map_err(|e| CamError::Labels(e.to_string()))?;
    let per = (h * w) as usize;
    let maps: Vec<f64> = flat
        .chunks(per)
        .flat_map(|m| wsol_scoremap(m, w as usize, h as usize, width as usize, height as usize))
        .collect();
    Ok(Tensor::from_slice(&maps)
        .view([n, 1, height, width])
        .to_kind(Kind::Float))
}

/// Grad-CAM of a classifier, as the official `get_supervised_cam`: (N, 1, H, W) in [0, 1]. `labels` None
/// explains each image's arg-max class.
pub fn grad_cam(
    model: &Classifier,
    images: &Tensor,
    labels: Option<&Tensor>,
    expand_res: u32,
) -> Result<Tensor, CamError> {
    check_input(images, expand_res)?;
    let (n, h, w) = (images.size()[0], images.size()[2], images.size()[3]);
    let x = images.to_device(model.device());
    let a = tch::no_grad(|| model.encoder.features(&x, false, expand_res))
        .detach()
        .set_requires_grad(true);
    let logits = model.logits_of_features(&a);
    let labels = match labels {
        Some(l) => check_labels(l, n, model.config.num_classes, model.device())?,
        None => logits.argmax(1, false),
    };
    let score = logits.gather(1, &labels.view([n, 1]), false);
    let grad = Tensor::run_backward(&[&score.sum(Kind::Float)], &[&a], false, false).remove(0);
    Ok(tch::no_grad(|| {
        let alpha = grad
            .mean_dim([2i64, 3].as_slice(), true, Kind::Float)
            .clamp_min(0.0);
        let cam = (alpha * a.detach())
            .sum_dim_intlist([1i64].as_slice(), true, Kind::Float)
            .relu();
        min_max_per_image(&cam.upsample_bicubic2d([h, w], false, None, None))
    }))
}
