//! Mask mIoU as the official `box_utils.compute_mask_miou`: per-image foreground IoU with both masks
//! binarised at > 0.5; an image where both masks are empty counts as IoU 1; the mean over images.

/// Foreground IoU of one image. `pred` and `gt` are soft or hard masks of the same length.
pub fn mask_iou(pred: &[f32], gt: &[f32]) -> f64 {
    assert_eq!(
        pred.len(),
        gt.len(),
        "mask_iou: prediction and ground truth differ in size"
    );
    let (mut inter, mut union) = (0u64, 0u64);
    for (&p, &g) in pred.iter().zip(gt) {
        let (p, g) = (p > 0.5, g > 0.5);
        inter += (p && g) as u64;
        union += (p || g) as u64;
    }
    if union == 0 {
        1.0 // 0/0 is NaN in the official code, which then sets it to 1
    } else {
        inter as f64 / union as f64
    }
}

/// Mean of per-image IoUs.
pub fn mean_iou<'a, I>(pairs: I) -> (f64, usize)
where
    I: IntoIterator<Item = (&'a [f32], &'a [f32])>,
{
    let (mut sum, mut n) = (0.0, 0usize);
    for (p, g) in pairs {
        sum += mask_iou(p, g);
        n += 1;
    }
    (if n == 0 { f64::NAN } else { sum / n as f64 }, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_overlapping_masks() {
        let p = [1.0, 1.0, 0.0, 0.0];
        let g = [0.0, 1.0, 1.0, 0.0];
        assert!((mask_iou(&p, &g) - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn both_empty_counts_as_one_and_threshold_is_strict() {
        assert_eq!(mask_iou(&[0.5, 0.0], &[0.0, 0.5]), 1.0);
        assert_eq!(mask_iou(&[0.51, 0.0], &[0.0, 0.0]), 0.0);
        let (m, n) = mean_iou([
            (&[1.0f32, 0.0][..], &[1.0f32, 0.0][..]),
            (&[1.0, 0.0][..], &[0.0, 1.0][..]),
        ]);
        assert_eq!((m, n), (0.5, 2));
    }
}
