//! COCO detection / instance-segmentation AP with the semantics of pycocotools 2.0.11 `COCOeval`
//! (`coco.py` loading and `loadRes`, `cocoeval.py` evaluate/accumulate/summarize, `maskApi.c`).
//!
//! Written from the reference behaviour (see `shared/spec/metrics.md` §3), not from its code. The
//! `hotcoco` crate was not used: its README states agreement "within 0.003", and the parity bar here is
//! 1e-9 on every summary number.
//!
//! Quirks reproduced on purpose (each changes numbers):
//! * area ranges are inclusive at both ends; GT `area` is the annotation's, even for bbox;
//! * a GT whose annotation id is 0 can never count as matched (pycocotools stores the matched id, and
//!   0 means "unmatched"); see [`CocoParams::gt_id_zero_is_unmatched`] for the fix;
//! * result ids are 1..n in file order; `loadRes` takes the bbox branch when the *first* result has a
//!   non-empty `bbox` (then area = w·h, even for segm) — detectron2 drops `bbox` from segm results;
//! * stable sorts everywhere (ties keep image order, then file order); maxDets applies per image ×
//!   category; recall thresholds from `linspace` (0.57 → 0.5700000000000001);
//! * summary means use numpy's pairwise summation, so even the last bits agree.
pub mod eval;

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

pub use eval::{evaluate, CocoEvalResult, CocoParams, IouType, STAT_NAMES};

use super::error::EvalError;
pub use crate::imgops::segmentation::{to_rle, RleCounts, Segmentation};

#[derive(Debug, Clone, Deserialize)]
pub struct Image {
    pub id: i64,
    #[serde(default)]
    pub width: u32,
    #[serde(default)]
    pub height: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Category {
    pub id: i64,
}

/// A ground-truth annotation (fields pycocotools reads).
#[derive(Debug, Clone, Deserialize)]
pub struct Annotation {
    pub id: i64,
    pub image_id: i64,
    pub category_id: i64,
    #[serde(default)]
    pub bbox: Option<Vec<f64>>,
    #[serde(default)]
    pub area: Option<f64>,
    #[serde(default)]
    pub iscrowd: Option<i64>,
    #[serde(default)]
    pub segmentation: Option<Segmentation>,
}

/// A standard COCO instances file.
#[derive(Debug, Clone, Deserialize)]
pub struct Dataset {
    pub images: Vec<Image>,
    #[serde(default)]
    pub categories: Vec<Category>,
    #[serde(default)]
    pub annotations: Vec<Annotation>,
}

/// One entry of a results file.
#[derive(Debug, Clone, Deserialize)]
pub struct RawResult {
    pub image_id: i64,
    pub category_id: i64,
    #[serde(default)]
    pub bbox: Option<Vec<f64>>,
    #[serde(default)]
    pub segmentation: Option<Segmentation>,
    pub score: f64,
    /// Only read by [`detections_as_loaded`].
    #[serde(default)]
    pub id: Option<i64>,
    #[serde(default)]
    pub area: Option<f64>,
}

/// An annotation ready for evaluation (GT or detection).
#[derive(Debug, Clone)]
pub struct Object {
    pub id: i64,
    pub image_id: i64,
    pub category_id: i64,
    pub bbox: [f64; 4],
    pub area: f64,
    pub iscrowd: bool,
    pub score: f64,
    pub segmentation: Option<Segmentation>,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, EvalError> {
    let bytes = std::fs::read(path).map_err(|e| EvalError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|err| EvalError::Json {
        path: path.to_path_buf(),
        err,
    })
}

/// Reads a COCO instances JSON.
pub fn load_dataset(path: &Path) -> Result<Dataset, EvalError> {
    read_json(path)
}

/// Reads a COCO results JSON (a list).
pub fn load_results(path: &Path) -> Result<Vec<RawResult>, EvalError> {
    read_json(path)
}

fn bbox4(b: &[f64], what: &str) -> Result<[f64; 4], String> {
    if b.len() != 4 {
        return Err(format!("{what}: bbox must have 4 numbers, has {}", b.len()));
    }
    Ok([b[0], b[1], b[2], b[3]])
}

/// Ground truth as `COCO(gt)`: objects in file order, `ignore` = `iscrowd`. `iou_type` decides which
/// fields are required (bbox: `bbox`; segm: `segmentation`); `area` is always required.
pub fn gt_objects(ds: &Dataset, iou_type: IouType, path: &Path) -> Result<Vec<Object>, EvalError> {
    ds.annotations
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let what = format!("annotations[{i}] (id {})", a.id);
            let area = a
                .area
                .ok_or_else(|| EvalError::format(path, format!("{what}: missing 'area'")))?;
            let bbox = match (&a.bbox, iou_type) {
                (Some(b), _) => bbox4(b, &what).map_err(|m| EvalError::format(path, m))?,
                (None, IouType::Bbox) => {
                    return Err(EvalError::format(path, format!("{what}: missing 'bbox'")))
                }
                (None, IouType::Segm) => [0.0; 4],
            };
            if iou_type == IouType::Segm && a.segmentation.is_none() {
                return Err(EvalError::format(
                    path,
                    format!("{what}: missing 'segmentation'"),
                ));
            }
            Ok(Object {
                id: a.id,
                image_id: a.image_id,
                category_id: a.category_id,
                bbox,
                area,
                iscrowd: a.iscrowd.unwrap_or(0) != 0,
                score: 0.0,
                segmentation: a.segmentation.clone(),
            })
        })
        .collect()
}

/// Detections as `COCO.loadRes`: ids 1..n in list order; the bbox branch when the first result has a
/// non-empty `bbox` (area = w·h, a box polygon when there is no segmentation), else the segmentation
/// branch (area = RLE area, bbox = `toBbox`). Every image id must be in the ground truth.
pub fn load_res(
    gt: &Dataset,
    results: &[RawResult],
    path: &Path,
) -> Result<Vec<Object>, EvalError> {
    let images: HashMap<i64, &Image> = gt.images.iter().map(|im| (im.id, im)).collect();
    let bbox_branch = results
        .first()
        .is_some_and(|r| r.bbox.as_ref().is_some_and(|b| !b.is_empty()));
    results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let what = format!("results[{i}]");
            if !images.contains_key(&r.image_id) {
                return Err(EvalError::format(
                    path,
                    format!("{what}: image_id {} is not in the ground truth (Results do not correspond to current coco set)", r.image_id),
                ));
            }
            let (bbox, area, segmentation) = if bbox_branch {
                let b = r.bbox.as_ref().ok_or_else(|| EvalError::format(path, format!("{what}: missing 'bbox'")))?;
                let b = bbox4(b, &what).map_err(|m| EvalError::format(path, m))?;
                let seg = r.segmentation.clone().or_else(|| {
                    let (x1, x2, y1, y2) = (b[0], b[0] + b[2], b[1], b[1] + b[3]);
                    Some(Segmentation::Polygons(vec![vec![x1, y1, x1, y2, x2, y2, x2, y1]]))
                });
                (b, b[2] * b[3], seg)
            } else {
                let seg = r.segmentation.as_ref().ok_or_else(|| EvalError::format(path, format!("{what}: neither 'bbox' nor 'segmentation'")))?;
                let im = images[&r.image_id];
                let rle = to_rle(seg, im.height, im.width).map_err(|m| EvalError::format(path, format!("{what}: {m}")))?;
                let bbox = match &r.bbox {
                    Some(b) if b.len() == 4 => [b[0], b[1], b[2], b[3]],
                    _ => rle.to_bbox(),
                };
                (bbox, rle.area() as f64, Some(seg.clone()))
            };
            Ok(Object {
                id: i as i64 + 1,
                image_id: r.image_id,
                category_id: r.category_id,
                bbox,
                area,
                iscrowd: false,
                score: r.score,
                segmentation,
            })
        })
        .collect()
}

/// Detections taken as they are, like building a `COCO` object from a dataset whose `annotations` are
/// the results (ids, `area` and `bbox` kept; no `loadRes`). faster_coco_eval's `test_basic` numbers
/// come from this path; `loadRes` would overwrite `area` with w·h.
pub fn detections_as_loaded(results: &[RawResult], path: &Path) -> Result<Vec<Object>, EvalError> {
    results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let miss = |f: &str| EvalError::format(path, format!("results[{i}]: missing '{f}'"));
            let bbox = r.bbox.as_ref().ok_or_else(|| miss("bbox"))?;
            Ok(Object {
                id: r.id.ok_or_else(|| miss("id"))?,
                image_id: r.image_id,
                category_id: r.category_id,
                bbox: bbox4(bbox, &format!("results[{i}]"))
                    .map_err(|m| EvalError::format(path, m))?,
                area: r.area.ok_or_else(|| miss("area"))?,
                iscrowd: false,
                score: r.score,
                segmentation: r.segmentation.clone(),
            })
        })
        .collect()
}

/// How [`evaluate_files_with`] reads and scores a results file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileEvalOptions {
    /// What is matched: boxes or masks (pycocotools' `iouType`).
    pub iou_type: IouType,
    /// Remove `bbox` from segm results before loading them, as detectron2's `COCOEvaluator` does
    /// (otherwise `loadRes` takes the box area for the area ranges).
    pub drop_segm_bbox: bool,
    /// Let a GT annotation with id 0 match (pycocotools never matches it).
    pub fix_gt_id_zero: bool,
}

impl FileEvalOptions {
    /// pycocotools' defaults for `iou_type`: results as written, its id-0 behaviour kept.
    pub fn new(iou_type: IouType) -> Self {
        FileEvalOptions {
            iou_type,
            drop_segm_bbox: false,
            fix_gt_id_zero: false,
        }
    }
}

/// Evaluates files as `COCOeval(COCO(gt), COCO(gt).loadRes(dt), iou_type)`: reads the instances and the
/// results, drops segm boxes when asked, loads both as pycocotools does and runs evaluate/accumulate/
/// summarize. What `contracam eval coco` and the detectron2 stage score with.
pub fn evaluate_files_with(
    gt_path: &Path,
    dt_path: &Path,
    opts: &FileEvalOptions,
) -> Result<CocoEvalResult, EvalError> {
    let gt = load_dataset(gt_path)?;
    let mut results = load_results(dt_path)?;
    if opts.drop_segm_bbox && opts.iou_type == IouType::Segm {
        results.iter_mut().for_each(|r| r.bbox = None);
    }
    let gts = gt_objects(&gt, opts.iou_type, gt_path)?;
    let dts = load_res(&gt, &results, dt_path)?;
    let mut params = CocoParams::new(opts.iou_type);
    params.gt_id_zero_is_unmatched = !opts.fix_gt_id_zero;
    evaluate(&gt, &gts, &dts, &params).map_err(|m| EvalError::format(dt_path, m))
}

/// [`evaluate_files_with`] with pycocotools' id-0 behaviour; `drop_segm_bbox` as
/// [`FileEvalOptions::drop_segm_bbox`].
pub fn evaluate_files(
    gt_path: &Path,
    dt_path: &Path,
    iou_type: IouType,
    drop_segm_bbox: bool,
) -> Result<CocoEvalResult, EvalError> {
    evaluate_files_with(
        gt_path,
        dt_path,
        &FileEvalOptions {
            drop_segm_bbox,
            ..FileEvalOptions::new(iou_type)
        },
    )
}
