//! The paper's localization protocols over a split of a built dataset, with the ground truth read from its
//! sample index (masks and boxes) and predictions from the folders `localize dataset` writes.
//!
//! - [`miou_over_split`]: mask mIoU as `inference.py::seg` / `compute_mask_miou`. The ground truth is
//!   resized to the prediction's size with PIL's bilinear resize, as the official `T.Resize((224, 224))`,
//!   in the official order for its `mask_rule`: gray CUB masks (`gray-gt-127`) and IN-9 `only_fg` images
//!   (`rgb-all-positive`) are resized first and thresholded after (value / 255 > 0.5; every channel
//!   positive); every other rule gives a binary foreground (instance masks united) that is resized and
//!   binarised at value / 255 > 0.5. Predictions are binarised at value / 255 > 0.5; an image with both
//!   masks empty has IoU 1; the mean over images in
//!   numpy's summation order. A sample with no mask counts as an empty ground truth (COCO images without
//!   annotations), but a split in which no sample has a mask is refused.
//! - [`maxboxacc_over_split`]: MaxBoxAccV2 as wsolevaluation, with the metadata it would read
//!   (`image_ids`, `image_sizes`, `localization`) formed from the index: ids as the sample ids, sizes from
//!   the index, GT boxes truncated to integer pixels.
use std::collections::HashMap;
use std::path::Path;

use rayon::prelude::*;

use super::maxboxacc::{
    prepare_scoremap, resize_bbox, scoremap_path, scoremap_to_u8, Box4, BoxAccumulator,
    MaxBoxAccConfig, MaxBoxAccResult, WsolMetadata, RESIZE_LENGTH,
};
use super::miou::{pair_iou, MaskPair, MiouResult};
use super::EvalError;
use crate::data::formats::npy::read_npy_2d;
use crate::data::loader::decode::{decode, to_luma_pil, to_rgb};
use crate::data::loader::transform::resize_pil;
use crate::data::loader::{IndexSource, MaskRule, Source};

/// The predicted mask of sample `id` under `dir`: `<dir>/<id>.png` (the id keeps its own extension).
pub fn mask_path(dir: &Path, id: &str) -> std::path::PathBuf {
    dir.join(format!("{id}.png"))
}

/// Mask mIoU of the predicted masks in `masks_dir` (8-bit grayscale PNGs named `<id>.png`) against the
/// ground truth of `source`.
pub fn miou_over_split(source: &IndexSource, masks_dir: &Path) -> Result<MiouResult, EvalError> {
    let n = source.len();
    if n == 0 {
        return Err(EvalError::format(
            &source.index_file,
            "the split has no samples",
        ));
    }
    if !source
        .index
        .samples
        .iter()
        .any(|s| s.mask.is_some() || !s.instance_masks.is_empty())
    {
        return Err(EvalError::format(
            &source.index_file,
            "no sample of this split has a ground-truth mask; mask mIoU needs a split with masks",
        ));
    }
    let rule = MaskRule::parse(source.index.header.mask_rule.as_deref())
        .map_err(|m| EvalError::line(&source.index_file, 1, m))?;
    let per_image: Vec<MaskPair> = (0..n)
        .into_par_iter()
        .map(|i| {
            let id = source.meta(i)?.id;
            let pp = mask_path(masks_dir, &id);
            let pred = load_gray8(&pp)?;
            let (w, h) = pred.dimensions();
            let gt = ground_truth_at(source, rule, i, w, h)?;
            let (inter, union, iou) =
                pair_iou(pred.as_raw().iter().zip(&gt).map(|(&a, &b)| (fg(a), b)));
            Ok(MaskPair {
                name: id,
                iou,
                intersection: inter,
                union,
            })
        })
        .collect::<Result<_, EvalError>>()?;
    let ious: Vec<f64> = per_image.iter().map(|p| p.iou).collect();
    let miou = super::coco::eval::numpy_sum(&ious) / ious.len() as f64;
    Ok(MiouResult {
        miou,
        n: ious.len(),
        per_image,
    })
}

/// `compute_mask_miou`'s binarisation of a [0, 1] value stored as 8 bits: value / 255 > 0.5.
fn fg(v: u8) -> bool {
    v as f64 / 255.0 > 0.5
}

/// The ground-truth foreground of sample `i` at `w`×`h`, in the official order for `rule`. A sample
/// without mask files has an empty foreground.
pub fn ground_truth_at(
    source: &IndexSource,
    rule: MaskRule,
    i: usize,
    w: u32,
    h: u32,
) -> Result<Vec<bool>, EvalError> {
    let resized_then_thresholded = match rule {
        MaskRule::GrayGt127 | MaskRule::RgbAllPositive => true,
        MaskRule::Binary
        | MaskRule::FlowersNotBlue
        | MaskRule::PetsTrimap
        | MaskRule::VocPalette => false,
    };
    if !resized_then_thresholded {
        return Ok(match source.mask(i)? {
            Some(g) => resize_gray_pil(&g, w, h).into_iter().map(fg).collect(),
            None => vec![false; (w * h) as usize],
        });
    }
    let s = source.index.samples.get(i).ok_or_else(|| {
        EvalError::format(&source.index_file, format!("no sample {i} in the split"))
    })?;
    let mut out = vec![false; (w * h) as usize];
    // Several files (instance masks) are each resized and thresholded, then united.
    for rel in s.mask.iter().chain(&s.instance_masks) {
        let file = source.root.join(rel);
        let bad = |msg: String| {
            EvalError::line(
                &source.index_file,
                i + 2,
                format!("mask {}: {msg}", file.display()),
            )
        };
        let bytes = std::fs::read(&file).map_err(|e| bad(e.to_string()))?;
        let img = decode(&bytes).map_err(bad)?;
        let fgs: Vec<bool> = if rule == MaskRule::GrayGt127 {
            resize_gray_pil(&to_luma_pil(img), w, h)
                .into_iter()
                .map(fg)
                .collect()
        } else {
            // ToTensor's v / 255 > 0 is v ≥ 1 on every channel.
            resize_pil(&to_rgb(img), w, h)
                .as_raw()
                .chunks_exact(3)
                .map(|p| p.iter().all(|&c| c > 0))
                .collect()
        };
        for (o, f) in out.iter_mut().zip(fgs) {
            *o |= f;
        }
    }
    Ok(out)
}

fn load_gray8(path: &Path) -> Result<image::GrayImage, EvalError> {
    let img = image::open(path).map_err(|err| match err {
        image::ImageError::IoError(e) => EvalError::format(
            path,
            format!("{e}; every sample of the split needs a predicted mask (`localize dataset` writes them)"),
        ),
        err => EvalError::Image {
            path: path.to_path_buf(),
            err,
        },
    })?;
    match img {
        image::DynamicImage::ImageLuma8(g) => Ok(g),
        other => Err(EvalError::format(
            path,
            format!("expected an 8-bit grayscale PNG, got {:?}", other.color()),
        )),
    }
}

/// Pillow's bilinear resize of an 8-bit grayscale image (the same per-channel arithmetic as RGB).
fn resize_gray_pil(g: &image::GrayImage, w: u32, h: u32) -> Vec<u8> {
    if g.dimensions() == (w, h) {
        return g.as_raw().clone();
    }
    let rgb = image::RgbImage::from_fn(g.width(), g.height(), |x, y| {
        let v = g.get_pixel(x, y).0[0];
        image::Rgb([v, v, v])
    });
    resize_pil(&rgb, w, h)
        .as_raw()
        .chunks_exact(3)
        .map(|p| p[0])
        .collect()
}

/// The box `[x0, y0, x1, y1]` (inclusive pixel corners, as VOC's annotations) around every foreground pixel
/// of a mask, None when it has none.
fn foreground_box(m: &image::GrayImage) -> Option<[f64; 4]> {
    let mut b: Option<[u32; 4]> = None;
    for (x, y, p) in m.enumerate_pixels() {
        if p.0[0] != 0 {
            let c = b.get_or_insert([x, y, x, y]);
            *c = [c[0].min(x), c[1].min(y), c[2].max(x), c[3].max(y)];
        }
    }
    b.map(|c| c.map(f64::from))
}

/// wsolevaluation's metadata for a split: ids, (width, height) and GT boxes truncated to integer pixels.
/// A sample without boxes takes the box of its mask's foreground; one with neither is an error naming its
/// index line (wsolevaluation needs a box per image).
pub fn wsol_metadata_of(source: &IndexSource) -> Result<WsolMetadata, EvalError> {
    let mut image_ids = Vec::with_capacity(source.len());
    let mut image_sizes = HashMap::new();
    let mut boxes = HashMap::new();
    for (i, s) in source.index.samples.iter().enumerate() {
        let id = source.meta(i)?.id;
        let from_mask;
        let sample_boxes: &[[f64; 4]] = if s.boxes.is_empty() {
            // Flowers (ReDO) and OpenImages30k have masks, no boxes: the box of the whole foreground.
            from_mask = match source.mask(i)? {
                Some(m) => foreground_box(&m).map(|b| vec![b]).unwrap_or_default(),
                None => Vec::new(),
            };
            &from_mask
        } else {
            &s.boxes
        };
        if sample_boxes.is_empty() {
            return Err(EvalError::line(
                &source.index_file,
                i + 2,
                format!(
                    "sample {id:?} has no ground-truth box; MaxBoxAcc needs at least one per image"
                ),
            ));
        }
        let b: Vec<Box4> = sample_boxes
            .iter()
            .map(|b| [b[0] as i32, b[1] as i32, b[2] as i32, b[3] as i32])
            .collect();
        image_sizes.insert(id.clone(), (s.width, s.height));
        boxes.insert(id.clone(), b);
        image_ids.push(id);
    }
    Ok(WsolMetadata {
        image_ids,
        image_sizes,
        boxes,
    })
}

/// MaxBoxAcc(V2) of the score maps `<dir>/<id>.npy` against the GT boxes of `source`.
pub fn maxboxacc_over_split(
    source: &IndexSource,
    scoremap_dir: &Path,
    cfg: &MaxBoxAccConfig,
) -> Result<MaxBoxAccResult, EvalError> {
    let meta = wsol_metadata_of(source)?;
    if meta.image_ids.is_empty() {
        return Err(EvalError::format(
            &source.index_file,
            "the split has no samples",
        ));
    }
    maxboxacc_with_metadata(&meta, scoremap_dir, cfg)
}

/// MaxBoxAcc(V2) of the score maps `<dir>/<id>.npy` against metadata formed in memory (from an index, or
/// from synthetic scenes): each map resized to 224 and normalised, GT boxes resized from the image size.
pub fn maxboxacc_with_metadata(
    meta: &WsolMetadata,
    scoremap_dir: &Path,
    cfg: &MaxBoxAccConfig,
) -> Result<MaxBoxAccResult, EvalError> {
    let acc = BoxAccumulator::new(cfg.clone());
    let r = (RESIZE_LENGTH as u32, RESIZE_LENGTH as u32);
    let verdicts: Vec<Vec<u8>> = meta
        .image_ids
        .par_iter()
        .map(|id| {
            let map = read_npy_2d(&scoremap_path(scoremap_dir, id))?;
            let cam = prepare_scoremap(&map.data, map.width, map.height);
            let size = meta.image_sizes[id];
            let gt: Vec<Box4> = meta.boxes[id]
                .iter()
                .map(|&b| resize_bbox(b, size, r))
                .collect();
            Ok(acc.image_verdicts(&scoremap_to_u8(&cam), RESIZE_LENGTH, RESIZE_LENGTH, &gt))
        })
        .collect::<Result<_, EvalError>>()?;
    let mut acc = acc;
    for v in &verdicts {
        acc.add_verdicts(v);
    }
    Ok(acc.compute())
}
