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
