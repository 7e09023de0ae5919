//! Mask cleaning as the official `utils/box_utils.py: clean_mask` (spec official-implementation.md §2).
//!
//! 1. `ToPILImage`: `uint8(trunc(float32(p)·255))`, so a pixel is foreground iff `p·255 ≥ 1` (≈ p ≥ 1/255).
//! 2. `cv2.connectedComponentsWithStats(connectivity=4)`; label 0 is every background pixel.
//! 3. multi: keep the labels whose area is `> min_obj_scale·H·W`, **then drop the first of them**, assumed
//!    to be label 0; single: keep the largest label ≥ 1 (first on ties).
//!
//! Quirk reproduced by default ([`CleanOptions::drop_first_surviving`]): when the background is not among
//! the surviving labels (it is empty or small, e.g. an all-foreground CRF), the first real component is
//! dropped instead, and an all-foreground mask comes back empty. Setting it to false always skips label 0
//! and keeps every large component.
use crate::imgops::components::{connected_components_with_stats, Connectivity};

/// How [`clean_mask`] binarises and filters.
#[derive(Debug, Clone, PartialEq)]
pub struct CleanOptions {
    /// Components must cover more than this fraction of H·W (multi mode).
    pub min_obj_scale: f64,
    /// Keep only the largest component.
    pub single: bool,
    /// The official `[1:]` on the surviving labels (true, the default) rather than skipping label 0.
    pub drop_first_surviving: bool,
    /// Component adjacency (official: 4).
    pub connectivity: Connectivity,
}

impl CleanOptions {
    /// `seg` mode: min_obj_scale 0.001, multi-instance.
    pub fn seg() -> Self {
        Self {
            min_obj_scale: 0.001,
            single: false,
            drop_first_surviving: true,
            connectivity: Connectivity::Four,
        }
    }

    /// `save_box` mode: min_obj_scale 0.01, multi-instance (COCO's intended setting).
    pub fn boxes() -> Self {
        Self {
            min_obj_scale: 0.01,
            ..Self::seg()
        }
    }

    /// `save_box` with `single_instance`: the largest component only.
    pub fn single() -> Self {
        Self {
            single: true,
            ..Self::boxes()
        }
    }

    /// With the label-0 quirk fixed.
    pub fn fixed(self) -> Self {
        Self {
            drop_first_surviving: false,
            ..self
        }
    }
}

impl Default for CleanOptions {
    fn default() -> Self {
        Self::seg()
    }
}

/// `ToPILImage` on a float mask: `uint8(trunc(p·255))` in float32 (values outside [0, 1] saturate).
pub fn to_uint8(prob: &[f32]) -> Vec<u8> {
    prob.iter().map(|&p| (p * 255.0) as u8).collect()
}

/// Cleans a soft mask (H·W values in [0, 1], row-major) into a {0, 1} mask.
///
/// # Panics
/// If `prob.len() != width * height`.
pub fn clean_mask(prob: &[f32], width: usize, height: usize, opts: &CleanOptions) -> Vec<u8> {
    assert_eq!(
        prob.len(),
        width * height,
        "clean_mask: mask has {} values, expected {width}×{height}",
        prob.len()
    );
    let cc = connected_components_with_stats(&to_uint8(prob), width, height, opts.connectivity);
    let mut keep = vec![false; cc.n_labels];
    if opts.single {
        // stats[1:, -1].argmax() + 1 if len(stats) > 1
        if cc.n_labels > 1 {
            let best = (1..cc.n_labels).fold(1, |b, l| {
                if cc.stats[l].area > cc.stats[b].area {
                    l
                } else {
                    b
                }
            });
            keep[best] = true;
        }
    } else {
        let min_obj_size = (height * width) as f64 * opts.min_obj_scale;
        let surviving = (0..cc.n_labels).filter(|&l| cc.stats[l].area as f64 > min_obj_size);
        if opts.drop_first_surviving {
            surviving.skip(1).for_each(|l| keep[l] = true);
        } else {
            surviving.filter(|&l| l != 0).for_each(|l| keep[l] = true);
        }
    }
    cc.labels.iter().map(|&l| keep[l as usize] as u8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_is_one_255th_after_truncation() {
        let p = [1.0 / 255.0, 0.0039, 0.5, 0.0];
        assert_eq!(to_uint8(&p), vec![1, 0, 127, 0]);
    }

    #[test]
    fn all_foreground_is_emptied_unless_fixed() {
        let p = vec![0.99f32; 100];
        assert!(clean_mask(&p, 10, 10, &CleanOptions::seg())
            .iter()
            .all(|&v| v == 0));
        assert!(clean_mask(&p, 10, 10, &CleanOptions::seg().fixed())
            .iter()
            .all(|&v| v == 1));
        assert!(clean_mask(&p, 10, 10, &CleanOptions::single())
            .iter()
            .all(|&v| v == 1));
    }

    #[test]
    fn small_components_are_removed_and_background_is_dropped() {
        // 20×20: a 5×5 block (25 px > 0.01·400 = 4) and a 2×2 block (4 px, not > 4).
        let (w, h) = (20, 20);
        let mut p = vec![0f32; w * h];
        for y in 2..7 {
            for x in 2..7 {
                p[y * w + x] = 1.0;
            }
        }
        for y in 15..17 {
            for x in 15..17 {
                p[y * w + x] = 1.0;
            }
        }
        let m = clean_mask(&p, w, h, &CleanOptions::boxes());
        assert_eq!(m.iter().map(|&v| v as usize).sum::<usize>(), 25);
        assert_eq!(m[3 * w + 3], 1);
        assert_eq!(m[15 * w + 15], 0);
    }
}
