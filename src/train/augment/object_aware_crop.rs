//! Object-aware random crop (OA-Crop): each step, one box per image chosen uniformly among its boxes
//! (`random.choice` in the official `data/datasets.py::COCOBox.__getitem__`); both views are then cropped
//! inside that box, before every other augmentation. An image without boxes uses the whole image.
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::views::{Region, FULL};

/// The crop region of each image of a batch: one of its boxes, or the whole image.
pub fn choose_regions(
    boxes: Option<&[Vec<Region>]>,
    indices: &[usize],
    rng: &mut ChaCha8Rng,
) -> Vec<Region> {
    indices
        .iter()
        .map(|&i| match boxes.map(|b| &b[i]) {
            Some(list) if !list.is_empty() => list[rng.random_range(0..list.len())],
            _ => FULL,
        })
        .collect()
}

/// Checks boxes read from a file before training: every box is finite normalised corners with
/// 0 ≤ x1 < x2 ≤ 1 and 0 ≤ y1 < y2 ≤ 1 (an inverted or zero-area box leaves no pixel to crop). The error
/// names the image and box (0-based) and the rule.
pub fn validate_regions(boxes: &[Vec<Region>]) -> Result<(), String> {
    for (i, list) in boxes.iter().enumerate() {
        for (j, &[x1, y1, x2, y2]) in list.iter().enumerate() {
            let ok = |lo: f64, hi: f64| {
                lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo < hi && hi <= 1.0
            };
            if !(ok(x1, x2) && ok(y1, y2)) {
                return Err(format!(
                    "image {i}, box {j}: [{x1}, {y1}, {x2}, {y2}] is not a box of normalised corners \
                     (needs 0 ≤ x1 < x2 ≤ 1 and 0 ≤ y1 < y2 ≤ 1; fix or drop it, or give an empty list \
                     for the whole image)"
                ));
            }
        }
    }
    Ok(())
}
