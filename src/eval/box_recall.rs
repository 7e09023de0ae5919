//! Box recall: the fraction of ground-truth boxes matched by some predicted box with IoU ≥ a threshold.

/// IoU of two [x1, y1, x2, y2] boxes (continuous coordinates).
pub fn box_iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f64; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// Recall of `gt` boxes at IoU ≥ `thr` over all images.
pub fn box_recall(pred: &[Vec<[f64; 4]>], gt: &[Vec<[f64; 4]>], thr: f64) -> f64 {
    let (mut hit, mut total) = (0usize, 0usize);
    for (p, g) in pred.iter().zip(gt) {
        for gb in g {
            total += 1;
            hit += p.iter().any(|pb| box_iou(pb, gb) >= thr) as usize;
        }
    }
    if total == 0 {
        f64::NAN
    } else {
        hit as f64 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_and_recall() {
        assert!((box_iou(&[0.0, 0.0, 2.0, 2.0], &[1.0, 0.0, 3.0, 2.0]) - 1.0 / 3.0).abs() < 1e-12);
        let gt = vec![vec![[0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 3.0, 3.0]]];
        let pred = vec![vec![[0.0, 0.0, 1.0, 0.9]]];
        assert_eq!(box_recall(&pred, &gt, 0.5), 0.5);
    }
}
