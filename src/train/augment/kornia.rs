//! The colour part of the official augmentation (`data/transforms.py::KorniaTransform` on Kornia 0.4.1,
//! on the device, per-sample parameters): colour jitter (p 0.8; brightness, contrast, saturation, hue in
//! one random order per batch call), grayscale (p 0.2), Gaussian blur (p 0.5, kernel `int(0.1·size)` made
//! odd, σ ~ U(0.1, 2)), ImageNet normalisation.
//!
//! Every op follows the official f32 arithmetic op for op, so the outputs match the recorded Kornia
//! vectors: brightness and contrast are the official torchvision-style overrides (multiplicative; blend
//! with the mean of 0.2989R + 0.587G + 0.114B), saturation and hue go through Kornia's HSV with the hue
//! in radians. The random path (`color_blur_normalize`) draws a `ColorParams` and applies it with
//! `apply_color_params`, which is also the seam that takes injected parameters.
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use super::AugmentConfig;

// Normalisation lives in the data layer (evaluation uses it too); re-exported for the training path.
pub use crate::data::normalize::{normalize, IMAGENET_MEAN, IMAGENET_STD};

/// Kornia's `pi` constant is a float32 tensor: every angle is computed with π rounded to f32.
const PI_F32: f64 = std::f32::consts::PI as f64;

/// Colour-jitter parameters of one batch call. The factors hold one entry per image the jitter applies
/// to, in batch order (as Kornia samples them); `order` indexes [brightness, contrast, saturation, hue].
#[derive(Debug, Clone, PartialEq)]
pub struct JitterParams {
    pub apply: Vec<bool>,
    pub brightness: Vec<f32>,
    pub contrast: Vec<f32>,
    pub saturation: Vec<f32>,
    /// Hue shift in turns, in [−0.5, 0.5]; Kornia applies `hue·2·π` radians.
    pub hue: Vec<f32>,
    pub order: [usize; 4],
}

/// Every random choice of one `KorniaTransform` call on a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct ColorParams {
    pub jitter: JitterParams,
    pub grayscale: Vec<bool>,
    pub blur: Vec<bool>,
    /// One σ per blurred image, in batch order.
    pub blur_sigma: Vec<f32>,
}

/// The batch after each step of the pipeline.
pub struct ColorStages {
    pub after_jitter: Tensor,
    pub after_grayscale: Tensor,
    pub after_blur: Tensor,
    pub out: Tensor,
}

/// The official blur kernel size for views of side `image_size`: `int(0.1·size)`, made odd.
pub fn blur_kernel_size(image_size: i64) -> i64 {
    let k = (0.1 * image_size as f64) as i64;
    if k % 2 == 0 {
        k + 1
    } else {
        k
    }
}

/// Draws the parameters of one call for `n` images: per image a jitter coin and its four factors, then
/// the op order, then grayscale coins, then per image a blur coin and its σ.
pub fn sample_color_params(n: usize, rng: &mut ChaCha8Rng, cfg: &AugmentConfig) -> ColorParams {
    let s = cfg.jitter_strength;
    let (bcs, hue) = (0.8 * s, 0.2 * s);
    let mut jitter = JitterParams {
        apply: Vec::with_capacity(n),
        brightness: Vec::new(),
        contrast: Vec::new(),
        saturation: Vec::new(),
        hue: Vec::new(),
        order: [0, 1, 2, 3],
    };
    for _ in 0..n {
        let on = rng.random_bool(cfg.jitter_p);
        jitter.apply.push(on);
        if on {
            jitter
                .brightness
                .push(rng.random_range(1.0 - bcs..=1.0 + bcs) as f32);
            jitter
                .contrast
                .push(rng.random_range(1.0 - bcs..=1.0 + bcs) as f32);
            jitter
                .saturation
                .push(rng.random_range(1.0 - bcs..=1.0 + bcs) as f32);
            jitter.hue.push(rng.random_range(-hue..=hue) as f32);
        }
    }
    jitter.order.shuffle(rng);
    let grayscale = (0..n).map(|_| rng.random_bool(cfg.grayscale_p)).collect();
    let mut blur = Vec::with_capacity(n);
    let mut blur_sigma = Vec::new();
    for _ in 0..n {
        let on = rng.random_bool(cfg.blur_p);
        blur.push(on);
        if on {
            blur_sigma.push(rng.random_range(cfg.blur_sigma[0]..=cfg.blur_sigma[1]) as f32);
        }
    }
    ColorParams {
        jitter,
        grayscale,
        blur,
        blur_sigma,
    }
}

/// Colour jitter, grayscale and blur on (N, 3, S, S) in [0, 1], then ImageNet normalisation, with
/// parameters drawn from `rng`.
pub fn color_blur_normalize(x: &Tensor, rng: &mut ChaCha8Rng, cfg: &AugmentConfig) -> Tensor {
    let params = sample_color_params(x.size()[0] as usize, rng, cfg);
    apply_color_params(x, &params, blur_kernel_size(cfg.output_size)).out
}

/// The official pipeline with explicit parameters: ColorJitter → RandomGrayscale → GaussianBlur →
/// Normalize, each op on the images it applies to (the others pass through unchanged).
pub fn apply_color_params(x: &Tensor, p: &ColorParams, blur_kernel: i64) -> ColorStages {
    let after_jitter = color_jitter(x, &p.jitter);
    let after_grayscale = on_subset(&after_jitter, &p.grayscale, grayscale);
    let after_blur = on_subset(&after_grayscale, &p.blur, |t| {
        gaussian_blur(t, &p.blur_sigma, blur_kernel)
    });
    let out = normalize(&after_blur);
    ColorStages {
        after_jitter,
        after_grayscale,
        after_blur,
        out,
    }
}

/// The official `ColorJitter.apply_transform` on the images `p.apply` selects: the four ops in `p.order`.
pub fn color_jitter(x: &Tensor, p: &JitterParams) -> Tensor {
    on_subset(x, &p.apply, |t| {
        let col = |v: &[f32]| Tensor::from_slice(v).to_device(t.device());
        let mut y = t.shallow_clone();
        for &op in &p.order {
            y = match op {
                0 => adjust_brightness(&y, &col(&p.brightness)),
                1 => adjust_contrast(&y, &col(&p.contrast)),
                2 => adjust_saturation(&y, &col(&p.saturation)),
                _ => adjust_hue(&y, &col(&p.hue)),
            };
        }
        y
    })
}

/// Applies `f` to the images where `apply` is true and keeps the others.
fn on_subset(x: &Tensor, apply: &[bool], f: impl FnOnce(&Tensor) -> Tensor) -> Tensor {
    let idx: Vec<i64> = (0..apply.len() as i64)
        .filter(|&i| apply[i as usize])
        .collect();
    if idx.is_empty() {
        return x.shallow_clone();
    }
    if idx.len() == apply.len() {
        return f(x);
    }
    let idx = Tensor::from_slice(&idx).to_device(x.device());
    let y = f(&x.index_select(0, &idx));
    x.index_copy(0, &idx, &y)
}

/// (N,) factors as (N, 1, 1, 1).
fn per_image(f: &Tensor) -> Tensor {
    f.view([-1, 1, 1, 1])
}

/// The official override: `clamp(f·x + (1 − f)·0, 0, 1)`. The blend term is ±0 for finite images and
/// adding ±0 changes no value (at most the sign of a zero), so this is `clamp(f·x, 0, 1)`: the same
/// numbers for two passes over the batch instead of five.
pub fn adjust_brightness(x: &Tensor, f: &Tensor) -> Tensor {
    (per_image(f) * x).clamp_(0.0, 1.0)
}

/// The official override: blend with the per-image mean of 0.2989R + 0.587G + 0.114B, clamped.
pub fn adjust_contrast(x: &Tensor, f: &Tensor) -> Tensor {
    let f = per_image(f);
    let c = |i: i64| x.narrow(1, i, 1);
    let gray = c(0) * 0.2989 + c(1) * 0.587 + c(2) * 0.114;
    let m = gray.mean_dim([-2i64, -1].as_slice(), true, Kind::Float);
    let mut blend: Tensor = &f * x + (1.0 - &f) * m;
    blend.clamp_(0.0, 1.0)
}

/// Kornia: S ← clamp(S·f, 0, 1) in HSV.
pub fn adjust_saturation(x: &Tensor, f: &Tensor) -> Tensor {
    let hsv = rgb_to_hsv(x);
    // In place on the fresh HSV tensor: the same arithmetic as a new S plane concatenated with H and V,
    // without copying the batch once more.
    let _ = hsv.narrow(1, 1, 1).g_mul_(&per_image(f)).clamp_(0.0, 1.0);
    hsv_to_rgb(&hsv)
}

/// Kornia: H ← fmod(H + f·2·π, 2·π) in radians, `f` in turns (the sign of a negative sum is kept, as
/// `fmod` does; `hsv_to_rgb` wraps it).
pub fn adjust_hue(x: &Tensor, f: &Tensor) -> Tensor {
    let hsv = rgb_to_hsv(x);
    let shift = per_image(f) * 2.0 * PI_F32;
    // In place on the fresh HSV tensor, as in `adjust_saturation`.
    let _ = hsv.narrow(1, 0, 1).g_add_(&shift).fmod_(2.0 * PI_F32);
    hsv_to_rgb(&hsv)
}

/// Kornia 0.4.1 `rgb_to_hsv`: (N, 3, H, W) RGB → HSV with the hue in radians [0, 2π); s = δ/(v + 1e-31);
/// ties for the largest channel go to the first.
pub fn rgb_to_hsv(x: &Tensor) -> Tensor {
    let (maxc, max_idx) = x.max_dim(1, false);
    let minc = x.amin([1i64].as_slice(), false);
    let delta = &maxc - &minc;
    let s = &delta / (&maxc + 1e-31);
    let delta = delta.where_scalarother(&delta.ne(0.0), 1.0);
    let d = maxc.unsqueeze(1) - x;
    let (rc, gc, bc) = (d.select(1, 0), d.select(1, 1), d.select(1, 2));
    let h = Tensor::stack(
        &[
            &bc - &gc,
            &delta * 2.0 + &rc - &bc,
            &delta * 4.0 + &gc - &rc,
        ],
        1,
    );
    let h = h.gather(1, &max_idx.unsqueeze(1), false).squeeze_dim(1) / &delta;
    let h = (h / 6.0).remainder(1.0);
    let h = h * (2.0 * PI_F32);
    Tensor::stack(&[h, s, maxc], 1)
}

/// Kornia 0.4.1 `hsv_to_rgb`: the inverse of `rgb_to_hsv` (hue in radians, any sign).
pub fn hsv_to_rgb(hsv: &Tensor) -> Tensor {
    let h = hsv.select(1, 0) / (2.0 * PI_F32);
    let (s, v) = (hsv.select(1, 1), hsv.select(1, 2));
    let h6 = &h * 6.0;
    let hi = h6.floor().remainder(6.0);
    let f = h6.remainder(6.0) - &hi;
    let p = &v * (1.0 - &s);
    let q = &v * (1.0 - &f * &s);
    let t = &v * (1.0 - (1.0 - &f) * &s);
    let hi = hi.to_kind(Kind::Int64);
    let idx = Tensor::stack(&[&hi, &(&hi + 6), &(&hi + 12)], 1);
    let table = Tensor::stack(
        &[
            &v, &q, &p, &p, &t, &v, //
            &t, &v, &v, &q, &p, &p, //
            &p, &p, &t, &v, &v, &q,
        ],
        1,
    );
    table.gather(1, &idx, false)
}

/// Kornia `rgb_to_grayscale` (0.299R + 0.587G + 0.114B) copied to the three channels.
pub fn grayscale(x: &Tensor) -> Tensor {
    let c = |i: i64| x.narrow(1, i, 1);
    (c(0) * 0.299 + c(1) * 0.587 + c(2) * 0.114).expand_as(x)
}

/// The official blur kernels, one row per σ: exp(−0.5·(x/σ)²) normalised to sum 1, with
/// x = linspace(−k/2, k/2, k), all in f32. Returns (len σ, k).
pub fn gaussian_kernel1d(sigmas: &[f32], k: i64) -> Tensor {
    let half = (k / 2) as f64;
    let x = Tensor::linspace(-half, half, k, (Kind::Float, tch::Device::Cpu)).unsqueeze(0);
    let s = Tensor::from_slice(sigmas).unsqueeze(1);
    let pdf = ((x / s).pow_tensor_scalar(2) * -0.5).exp();
    let sum = pdf.sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
    pdf / sum
}

/// Gaussian blur of each image with its own σ (kernel `k`, reflect padding k/2). The official code
/// convolves with the dense k×k outer product; this applies the same 1-D kernel along rows then columns,
/// which differs from it by rounding only (≤ 1e-6 on [0, 1] images) at a fraction of the cost.
pub fn gaussian_blur(x: &Tensor, sigmas: &[f32], k: i64) -> Tensor {
    let (n, c, hgt, wid) = x.size4().expect("NCHW");
    if k < 2 {
        return x.shallow_clone();
    }
    let half = k / 2;
    let w = gaussian_kernel1d(sigmas, k)
        .to_device(x.device())
        .view([n, 1, k])
        .repeat([1, c, 1])
        .view([n * c, 1, k]);
    let y = x
        .reshape([1, n * c, hgt, wid])
        .reflection_pad2d([half, half, half, half]);
    let y = y.conv2d(
        &w.view([n * c, 1, 1, k]),
        None::<&Tensor>,
        [1, 1],
        [0, 0],
        [1, 1],
        n * c,
    );
    let y = y.conv2d(
        &w.view([n * c, 1, k, 1]),
        None::<&Tensor>,
        [1, 1],
        [0, 0],
        [1, 1],
        n * c,
    );
    y.view([n, c, hgt, wid])
}
