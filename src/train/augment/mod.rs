//! Augmentations of the official training path:
//! - `views`: the geometric part (RandomResizedCrop + flip), done on the data side;
//! - `object_aware_crop`: OA-Crop's choice of one box per image, the same for both views;
//! - `kornia`: the colour part (jitter, grayscale, blur, normalise), done on the device per batch;
//! - `background_mixup`: BG-Mixup (the official `models/bg_mixup.py`), after the colour part;
//! - `mixup_cutmix`: the Mixup and CutMix baselines (i-Mix style), on view 1.
pub mod background_mixup;
pub mod kornia;
pub mod mixup_cutmix;
pub mod object_aware_crop;
pub mod views;

use serde::{Deserialize, Serialize};

pub use kornia::{
    apply_color_params, blur_kernel_size, color_blur_normalize, gaussian_blur, hsv_to_rgb,
    normalize, rgb_to_hsv, sample_color_params, ColorParams, ColorStages, JitterParams,
    IMAGENET_MEAN, IMAGENET_STD,
};
pub use views::{crop_resize, eval_transform, geometric_view, sample_crop, Region, FULL};

use super::config::{positive_finite, probability};
use super::error::TrainError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Side of the augmented views.
    pub output_size: i64,
    pub crop_scale: [f64; 2],
    pub crop_ratio: [f64; 2],
    pub hflip_p: f64,
    pub jitter_p: f64,
    /// The official `jitter_strength` s: brightness/contrast/saturation factors ~ U(1 − 0.8s, 1 + 0.8s),
    /// hue shift ~ U(−0.2s, 0.2s).
    pub jitter_strength: f64,
    pub grayscale_p: f64,
    pub blur_p: f64,
    pub blur_sigma: [f64; 2],
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            output_size: 224,
            crop_scale: [0.08, 1.0],
            crop_ratio: [3.0 / 4.0, 4.0 / 3.0],
            hflip_p: 0.5,
            jitter_p: 0.8,
            jitter_strength: 0.5,
            grayscale_p: 0.2,
            blur_p: 0.5,
            blur_sigma: [0.1, 2.0],
        }
    }
}

/// Largest view side accepted: 4× the official 224 px.
pub const MAX_OUTPUT_SIZE: i64 = 896;

impl AugmentConfig {
    /// Checks every value against its domain; `prefix` is the key path of this table (`train.augment`).
    pub fn validate(&self, prefix: &str) -> Result<(), TrainError> {
        let key = |k: &str| format!("{prefix}.{k}");
        if !(1..=MAX_OUTPUT_SIZE).contains(&self.output_size) {
            return Err(TrainError::config(
                &key("output_size"),
                self.output_size,
                format!("must be in 1..={MAX_OUTPUT_SIZE} pixels"),
            ));
        }
        let [lo, hi] = self.crop_scale;
        if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
            return Err(TrainError::config(
                &key("crop_scale"),
                format!("[{lo}, {hi}]"),
                "needs 0 < min ≤ max ≤ 1 (a fraction of the image area; a crop cannot be larger than the image)",
            ));
        }
        let [lo, hi] = self.crop_ratio;
        if !(lo > 0.0 && lo <= hi && hi.is_finite()) {
            return Err(TrainError::config(
                &key("crop_ratio"),
                format!("[{lo}, {hi}]"),
                "needs 0 < min ≤ max (aspect ratios)",
            ));
        }
        for (k, p) in [
            ("hflip_p", self.hflip_p),
            ("jitter_p", self.jitter_p),
            ("grayscale_p", self.grayscale_p),
            ("blur_p", self.blur_p),
        ] {
            probability(&key(k), p)?;
        }
        // Brightness/contrast/saturation factors are ≥ 1 − 0.8s and hue shifts are at most 0.2s turns.
        if !(0.0..=1.25).contains(&self.jitter_strength) {
            return Err(TrainError::config(
                &key("jitter_strength"),
                self.jitter_strength,
                "must be in [0, 1.25] (factors 1 ± 0.8·s stay ≥ 0)",
            ));
        }
        let [lo, hi] = self.blur_sigma;
        positive_finite(&key("blur_sigma"), lo)?;
        if !(hi.is_finite() && hi >= lo) {
            return Err(TrainError::config(
                &key("blur_sigma"),
                format!("[{lo}, {hi}]"),
                "needs 0 < min ≤ max",
            ));
        }
        Ok(())
    }
}
