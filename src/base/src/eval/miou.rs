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

/// Intersection, union and IoU of two foreground masks given pixel by pixel as (prediction, ground truth);
/// both empty counts as IoU 1, as the official evaluation does.
pub fn pair_iou(pixels: impl Iterator<Item = (bool, bool)>) -> (u64, u64, f64) {
    let (mut inter, mut union) = (0u64, 0u64);
    for (a, b) in pixels {
        inter += (a && b) as u64;
        union += (a || b) as u64;
    }
    let iou = if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    };
    (inter, union, iou)
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

/// Per-image numbers of [`evaluate_mask_dirs`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MaskPair {
    pub name: String,
    pub iou: f64,
    pub intersection: u64,
    pub union: u64,
}

/// Result of [`evaluate_mask_dirs`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MiouResult {
    #[serde(rename = "mIoU")]
    pub miou: f64,
    pub n: usize,
    pub per_image: Vec<MaskPair>,
}

fn load_gray8(path: &std::path::Path) -> Result<image::GrayImage, super::EvalError> {
    let img = image::open(path).map_err(|err| super::EvalError::Image {
        path: path.to_path_buf(),
        err,
    })?;
    match img {
        image::DynamicImage::ImageLuma8(g) => Ok(g),
        other => Err(super::EvalError::format(
            path,
            format!("expected an 8-bit grayscale PNG, got {:?}", other.color()),
        )),
    }
}

/// Mask mIoU over two folders of 8-bit grayscale PNGs matched by file name (every `*.png` of `gt_dir`
/// must exist in `pred_dir`, same size). Foreground is `value / 255 > 0.5` (value ≥ 128) in both;
/// per-image IoU with empty/empty = 1; the mean in numpy's summation order (`np.mean`). Pairs are taken
/// in sorted file-name order.
pub fn evaluate_mask_dirs(
    pred_dir: &std::path::Path,
    gt_dir: &std::path::Path,
) -> Result<MiouResult, super::EvalError> {
    let rd = std::fs::read_dir(gt_dir).map_err(|e| super::EvalError::io(gt_dir, e))?;
    let mut names = Vec::new();
    for e in rd {
        let e = e.map_err(|e| super::EvalError::io(gt_dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.to_ascii_lowercase().ends_with(".png") {
            names.push(name);
        }
    }
    names.sort();
    if names.is_empty() {
        return Err(super::EvalError::format(gt_dir, "no .png masks"));
    }
    let mut per_image = Vec::with_capacity(names.len());
    for name in names {
        let (gp, pp) = (gt_dir.join(&name), pred_dir.join(&name));
        if !pp.is_file() {
            return Err(super::EvalError::format(
                &pp,
                "prediction missing for this ground-truth mask",
            ));
        }
        let (g, p) = (load_gray8(&gp)?, load_gray8(&pp)?);
        if g.dimensions() != p.dimensions() {
            return Err(super::EvalError::format(
                &pp,
                format!(
                    "size {:?} differs from ground truth {:?}",
                    p.dimensions(),
                    g.dimensions()
                ),
            ));
        }
        let fg = |v: u8| v as f64 / 255.0 > 0.5;
        let (inter, union, iou) = pair_iou(
            p.as_raw()
                .iter()
                .zip(g.as_raw())
                .map(|(&a, &b)| (fg(a), fg(b))),
        );
        per_image.push(MaskPair {
            name,
            iou,
            intersection: inter,
            union,
        });
    }
    let ious: Vec<f64> = per_image.iter().map(|p| p.iou).collect();
    let miou = super::coco::eval::numpy_sum(&ious) / ious.len() as f64;
    Ok(MiouResult {
        miou,
        n: ious.len(),
        per_image,
    })
}
