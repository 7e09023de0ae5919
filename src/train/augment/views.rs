//! The geometric part of the official two-view augmentation (torchvision, on the data side):
//! RandomResizedCrop (scale 0.08–1, ratio 3/4–4/3, bilinear) inside a region (the whole image, or the
//! object-aware box), then a horizontal flip; batched in libtorch with an affine sampling grid.
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

use super::AugmentConfig;
// The evaluation transform lives in the data layer (evaluation uses it too); re-exported for compatibility.
pub use crate::data::normalize::eval_transform;

/// A crop region in normalised image coordinates [x1, y1, x2, y2].
pub type Region = [f64; 4];

/// The whole image.
pub const FULL: Region = [0.0, 0.0, 1.0, 1.0];

/// torchvision `RandomResizedCrop.get_params` inside `region` (in pixels of a `w`×`h` image):
/// 10 attempts at a random area and log-uniform ratio, else a centre crop clamped to the ratio range.
pub fn sample_crop(
    rng: &mut ChaCha8Rng,
    region: Region,
    w: f64,
    h: f64,
    cfg: &AugmentConfig,
) -> Region {
    let (rx, ry) = (region[0] * w, region[1] * h);
    let (rw, rh) = (
        ((region[2] - region[0]) * w).max(1.0),
        ((region[3] - region[1]) * h).max(1.0),
    );
    let area = rw * rh;
    let (lr0, lr1) = (cfg.crop_ratio[0].ln(), cfg.crop_ratio[1].ln());
    for _ in 0..10 {
        let target = area * rng.random_range(cfg.crop_scale[0]..=cfg.crop_scale[1]);
        let ratio = rng.random_range(lr0..=lr1).exp();
        let cw = (target * ratio).sqrt().round();
        let ch = (target / ratio).sqrt().round();
        if cw > 0.0 && ch > 0.0 && cw <= rw && ch <= rh {
            let x = rng.random_range(0.0..=(rw - cw)).floor();
            let y = rng.random_range(0.0..=(rh - ch)).floor();
            return [
                (rx + x) / w,
                (ry + y) / h,
                (rx + x + cw) / w,
                (ry + y + ch) / h,
            ];
        }
    }
    let in_ratio = rw / rh;
    let (cw, ch) = if in_ratio < cfg.crop_ratio[0] {
        (rw, (rw / cfg.crop_ratio[0]).round())
    } else if in_ratio > cfg.crop_ratio[1] {
        ((rh * cfg.crop_ratio[1]).round(), rh)
    } else {
        (rw, rh)
    };
    let (x, y) = (((rw - cw) / 2.0).floor(), ((rh - ch) / 2.0).floor());
    [
        (rx + x) / w,
        (ry + y) / h,
        (rx + x + cw) / w,
        (ry + y + ch) / h,
    ]
}

/// Crops each image to its region and resizes to `size` (bilinear, align_corners=false), mirroring where
/// `flip` says so. `images` is (N, C, H, W); any number of channels (a mask can ride along as a fourth).
pub fn crop_resize(images: &Tensor, regions: &[Region], flip: &[bool], size: i64) -> Tensor {
    let n = images.size()[0];
    let c = images.size()[1];
    let dev = images.device();
    // affine_grid maps output [-1, 1] to input [-1, 1]: x_in = a·x_out + c.
    let mut theta = Vec::with_capacity(n as usize * 6);
    for (r, &f) in regions.iter().zip(flip) {
        let (sx, sy) = (r[2] - r[0], r[3] - r[1]);
        let (cx, cy) = (r[0] + r[2] - 1.0, r[1] + r[3] - 1.0);
        let a = if f { -sx } else { sx };
        theta.extend_from_slice(&[a as f32, 0.0, cx as f32, 0.0, sy as f32, cy as f32]);
    }
    let theta = Tensor::from_slice(&theta).reshape([n, 2, 3]).to_device(dev);
    let grid = Tensor::affine_grid_generator(&theta, [n, c, size, size], false);
    images.grid_sampler(&grid, 0, 1, false)
}

/// One geometric view per image: a random resized crop inside its region and a coin-flip mirror, drawn
/// image by image (crops first, then flips) from `rng`.
pub fn geometric_view(
    images: &Tensor,
    regions: &[Region],
    rng: &mut ChaCha8Rng,
    cfg: &AugmentConfig,
) -> Tensor {
    let (h, w) = (images.size()[2] as f64, images.size()[3] as f64);
    let crops: Vec<Region> = regions
        .iter()
        .map(|&r| sample_crop(rng, r, w, h, cfg))
        .collect();
    let flips: Vec<bool> = regions
        .iter()
        .map(|_| rng.random_bool(cfg.hflip_p))
        .collect();
    crop_resize(images, &crops, &flips, cfg.output_size)
}
