//! The colour part of the official augmentation (Kornia, on the device, per-sample parameters): colour
//! jitter (p 0.8; brightness, contrast, saturation, hue in a random order per batch), grayscale (p 0.2),
//! Gaussian blur (p 0.5, kernel ≈ 10% of the side, σ ~ U(0.1, 2)), ImageNet normalisation.
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use super::AugmentConfig;

pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

/// Colour jitter, grayscale and blur on (N, 3, S, S) in [0, 1], then ImageNet normalisation.
pub fn color_blur_normalize(x: &Tensor, rng: &mut ChaCha8Rng, cfg: &AugmentConfig) -> Tensor {
    let n = x.size()[0] as usize;
    let dev = x.device();
    let s = cfg.jitter_strength;
    let (bcs, hue) = (0.8 * s, 0.2 * s);
    let mut fac = vec![[1.0f32, 1.0, 1.0, 0.0]; n];
    for f in fac.iter_mut() {
        if rng.random_bool(cfg.jitter_p) {
            *f = [
                rng.random_range(1.0 - bcs..=1.0 + bcs) as f32,
                rng.random_range(1.0 - bcs..=1.0 + bcs) as f32,
                rng.random_range(1.0 - bcs..=1.0 + bcs) as f32,
                rng.random_range(-hue..=hue) as f32,
            ];
        }
    }
    let column = |k: usize| {
        Tensor::from_slice(&fac.iter().map(|f| f[k]).collect::<Vec<_>>())
            .to_device(dev)
            .view([-1, 1, 1, 1])
    };
    let mut order = [0usize, 1, 2, 3];
    order.shuffle(rng);
    let mut y = x.shallow_clone();
    for op in order {
        y = match op {
            0 => (&y * column(0)).clamp(0.0, 1.0),
            1 => {
                let m = gray(&y).mean_dim([1i64, 2, 3].as_slice(), true, Kind::Float);
                blend(&y, &m, &column(1))
            }
            2 => blend(&y, &gray(&y), &column(2)),
            _ => shift_hue(&y, &column(3)),
        };
    }
    let g: Vec<f32> = (0..n)
        .map(|_| rng.random_bool(cfg.grayscale_p) as u8 as f32)
        .collect();
    let g = Tensor::from_slice(&g).to_device(dev).view([-1, 1, 1, 1]);
    y = &y * (1.0 - &g) + gray(&y).expand_as(&y) * &g;
    let sigmas: Vec<f64> = (0..n)
        .map(|_| {
            if rng.random_bool(cfg.blur_p) {
                rng.random_range(cfg.blur_sigma[0]..=cfg.blur_sigma[1])
            } else {
                0.0
            }
        })
        .collect();
    y = gaussian_blur(&y, &sigmas);
    normalize(&y)
}

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

fn gray(x: &Tensor) -> Tensor {
    let c = x.unbind(1);
    (&c[0] * 0.299 + &c[1] * 0.587 + &c[2] * 0.114).unsqueeze(1)
}

/// f·x + (1 − f)·other, clamped to [0, 1] (torchvision's `_blend`).
fn blend(x: &Tensor, other: &Tensor, f: &Tensor) -> Tensor {
    let keep: Tensor = x * f;
    let mixed: Tensor = other * (1.0 - f);
    (keep + mixed).clamp(0.0, 1.0)
}

/// Hue rotation; samples with a zero shift are left untouched (no HSV round-trip error).
fn shift_hue(x: &Tensor, shift: &Tensor) -> Tensor {
    let (h, s, v) = rgb_to_hsv(x);
    let h = (h + shift.squeeze_dim(1)).remainder(1.0);
    hsv_to_rgb(&h, &s, &v).where_self(&shift.ne(0.0), x)
}

/// RGB (N, 3, H, W) → hue, saturation, value (N, H, W) each, hue in [0, 1).
pub fn rgb_to_hsv(x: &Tensor) -> (Tensor, Tensor, Tensor) {
    let c = x.unbind(1);
    let (r, g, b) = (&c[0], &c[1], &c[2]);
    let maxc = x.amax([1i64].as_slice(), false);
    let minc = x.amin([1i64].as_slice(), false);
    let delta = &maxc - &minc;
    let zero = delta.eq(0.0);
    let d = delta.where_scalarother(&zero.logical_not(), 1.0);
    let (rc, gc, bc) = ((&maxc - r) / &d, (&maxc - g) / &d, (&maxc - b) / &d);
    let h = (&bc - &gc).where_self(
        &maxc.eq_tensor(r),
        &(((&rc - &bc) + 2.0).where_self(&maxc.eq_tensor(g), &((&gc - &rc) + 4.0))),
    );
    let h = (h / 6.0)
        .remainder(1.0)
        .where_scalarother(&zero.logical_not(), 0.0);
    let s = (&delta / maxc.clamp_min(1e-12)).where_scalarother(&maxc.gt(0.0), 0.0);
    (h, s, maxc)
}

pub fn hsv_to_rgb(h: &Tensor, s: &Tensor, v: &Tensor) -> Tensor {
    let h6 = h * 6.0;
    let i = h6.floor();
    let f = &h6 - &i;
    let i = i.remainder(6.0).to_kind(Kind::Int64);
    let p = v * (1.0 - s);
    let q = v * (1.0 - s * &f);
    let t = v * (1.0 - s * (1.0 - &f));
    let onehot = i
        .unsqueeze(1)
        .eq_tensor(&Tensor::arange(6, (Kind::Int64, h.device())).view([1, 6, 1, 1]))
        .to_kind(Kind::Float);
    let pick = |xs: [&Tensor; 6]| {
        (Tensor::stack(&xs, 1) * &onehot).sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
    };
    Tensor::stack(
        &[
            pick([v, &q, &p, &p, &t, v]),
            pick([&t, v, v, &q, &p, &p]),
            pick([&p, &p, &t, v, v, &q]),
        ],
        1,
    )
}

/// Separable Gaussian blur with a per-image σ (0 = identity), reflect padding, kernel ≈ 10% of the side.
pub fn gaussian_blur(x: &Tensor, sigmas: &[f64]) -> Tensor {
    let (n, c, hgt, _) = x.size4().expect("NCHW");
    let mut k = ((hgt as f64) * 0.1) as i64;
    if k % 2 == 0 {
        k += 1;
    }
    if k < 3 || sigmas.iter().all(|&s| s == 0.0) {
        return x.shallow_clone();
    }
    let half = k / 2;
    let mut w = Vec::with_capacity((n * k) as usize);
    for &s in sigmas {
        let row: Vec<f64> = (-half..=half)
            .map(|i| {
                if s == 0.0 {
                    (i == 0) as u8 as f64
                } else {
                    (-((i * i) as f64) / (2.0 * s * s)).exp()
                }
            })
            .collect();
        let sum: f64 = row.iter().sum();
        w.extend(row.iter().map(|v| (v / sum) as f32));
    }
    let w = Tensor::from_slice(&w)
        .to_device(x.device())
        .view([n, 1, k])
        .repeat([1, c, 1])
        .view([n * c, 1, k]);
    let y = x
        .reshape([1, n * c, hgt, -1])
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
    y.view([n, c, hgt, -1])
}
