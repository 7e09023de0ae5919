//! `ground-truth`: a dataset's ground-truth boxes in the official box text format (OA-Crop (GT)) and its
//! foreground masks as soft masks (BG-HardMix (GT)).
//!
//! Boxes follow the official `COCOBox.get_gt_box`: objects covering more than `min_area_frac` of the image,
//! each side grown by `margin` × the box size, clipped to the image, normalised, 6 decimals.
//! - A built split: the `coco_gt.txt` that `data build` writes for COCO (from the annotations' segmentation
//!   areas, as the official file) when it covers every sample of the split; otherwise the index's boxes, with
//!   the box area standing in for the segmentation area the index does not keep (a box is never smaller
//!   than its object, so this may keep a few small objects the official file drops). Soft masks are each
//!   sample's foreground (its mask rule; 0/255) at the image's size in the official `save_masks` layout
//!   (`<class>/<file>`, the image's own format), as `localize` writes the CAM ones; a sample without a mask
//!   gets an empty one, and a split without any mask leaves the folder empty.
//! - Synthetic scenes: every object (area in pixels after occlusion) with ids `0..n`; soft masks
//!   `<i>.png`, the foreground 0/255 at the scene size.
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::formats::box_file::format_box_line;
use crate::data::loader::{ground_truth_box_file, IndexSource, ObjectBoxes, Source};
use crate::data::synth::SynthSet;
use crate::localize::dataset::{encode_soft_mask, soft_mask_path};
use crate::suite::dataset::{DatasetHandle, DatasetSpec};
use crate::suite::stage::*;
use crate::util::output::write_atomic;

pub struct GroundTruth;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroundTruthParams {
    /// Objects must cover more than this fraction of the image (official 0.01).
    pub min_area_frac: f64,
    /// Each box side grows by this fraction of the box (official 0.2).
    pub margin: f64,
}

impl Default for GroundTruthParams {
    fn default() -> Self {
        Self {
            min_area_frac: 0.01,
            margin: 0.2,
        }
    }
}

impl Stage for GroundTruth {
    type Params = GroundTruthParams;
    const KIND: &'static str = "ground-truth";
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "a dataset's ground-truth boxes (OA-Crop (GT), the official text format) and foreground masks as soft masks (BG-HardMix (GT))";
    const INPUTS: &'static [Slot] = &[Slot::required("data", ArtefactKind::Dataset)];
    const OUTPUTS: &'static [Slot] = &[
        Slot::file("boxes", ArtefactKind::BoxFile, "boxes.txt"),
        Slot::file("soft_masks", ArtefactKind::SoftMasks, "soft_masks"),
    ];
    const METRICS: &'static [MetricSpec] = &[MetricSpec {
        name: "boxes_per_image",
        unit: Unit::Count,
        direction: Direction::Neutral,
        about: "ground-truth boxes per image",
    }];

    fn validate(p: &GroundTruthParams) -> Result<(), ParamError> {
        if !(0.0..=1.0).contains(&p.min_area_frac) {
            return Err(ParamError::new("min_area_frac", "must be in [0, 1]"));
        }
        if !(p.margin.is_finite() && p.margin >= 0.0) {
            return Err(ParamError::new("margin", "must be a finite number ≥ 0"));
        }
        Ok(())
    }

    fn run(p: &GroundTruthParams, ctx: &mut StageContext) -> Result<StageResult, StageError> {
        let data = ctx.dataset("data")?;
        let (boxes, soft) = (ctx.output("boxes")?, ctx.output("soft_masks")?);
        std::fs::create_dir_all(&soft).map_err(|e| StageError::io(&soft, e))?;
        let lines = match &data.spec {
            DatasetSpec::Synth(_) => synth(p, &*data.synth()?, &soft)?,
            DatasetSpec::Index(_) => index(p, data, &soft)?,
        };
        let n = lines.len();
        let total: usize = lines.iter().map(|(_, b)| b.len()).sum();
        let text: String = lines
            .iter()
            .map(|(id, b)| format_box_line(id, b) + "\n")
            .collect();
        write_atomic(&boxes, text.as_bytes()).map_err(|e| StageError::io(&boxes, e))?;
        Ok(StageResult::default().metric("boxes_per_image", total as f64 / n.max(1) as f64))
    }
}

/// The official GT box of a normalised `[x1, y1, x2, y2]`: each side grown by `margin` × the box size and
/// clipped to [0, 1] (`get_gt_box` in pixels, divided by the image size).
pub fn grown_box(b: [f64; 4], margin: f64) -> [f64; 4] {
    let (bw, bh) = (b[2] - b[0], b[3] - b[1]);
    [
        (b[0] - margin * bw).max(0.0),
        (b[1] - margin * bh).max(0.0),
        (b[2] + margin * bw).min(1.0),
        (b[3] + margin * bh).min(1.0),
    ]
}

type Lines = Vec<(String, Vec<[f64; 4]>)>;

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), StageError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| StageError::io(dir, e))?;
    }
    write_atomic(path, bytes).map_err(|e| StageError::io(path, e))
}

fn synth(p: &GroundTruthParams, set: &SynthSet, soft: &Path) -> Result<Lines, StageError> {
    let s = set.size;
    let min_area = p.min_area_frac * (s * s) as f64;
    let mut lines = Vec::with_capacity(set.len());
    for (i, objs) in set.objects.iter().enumerate() {
        let boxes = objs
            .iter()
            .filter(|o| o.area as f64 > min_area)
            .map(|o| grown_box(o.bbox.map(|v| v as f64 / s as f64), p.margin))
            .collect();
        lines.push((i.to_string(), boxes));
        let fg: Vec<u8> = set.instance_masks[i]
            .iter()
            .map(|&v| if v != 0 { 255 } else { 0 })
            .collect();
        write_file(
            &soft.join(format!("{i}.png")),
            &super::localize::gray_png(fg, s as u32, s as u32)?,
        )?;
    }
    Ok(lines)
}

fn index(p: &GroundTruthParams, data: &DatasetHandle, soft: &Path) -> Result<Lines, StageError> {
    let source = super::localize::index_source(data)?;
    let n = source.len();
    let built = match &data.spec {
        DatasetSpec::Index(i) => official_box_file(&data.data_dir, &i.name, &source),
        DatasetSpec::Synth(_) => None,
    };
    let mut lines = Vec::with_capacity(n);
    for i in 0..n {
        let meta = source.meta(i)?;
        let boxes = match &built {
            // The builder's file already holds the grown, filtered boxes.
            Some(b) => b.boxes(i).to_vec(),
            None => meta
                .boxes
                .iter()
                .filter(|b| (b[2] - b[0]) * (b[3] - b[1]) > p.min_area_frac)
                .map(|&b| grown_box(b, p.margin))
                .collect(),
        };
        lines.push((meta.id, boxes));
    }
    let any_mask = source
        .index
        .samples
        .iter()
        .any(|s| s.mask.is_some() || !s.instance_masks.is_empty());
    if any_mask {
        for i in 0..n {
            let meta = source.meta(i)?;
            let ((w, h), px) = match source.mask(i)? {
                Some(m) => (m.dimensions(), m.into_raw()),
                None => (meta.size, vec![0; (meta.size.0 * meta.size.1) as usize]),
            };
            let bytes = encode_soft_mask(&source, i, w, h, &px)
                .map_err(|e| StageError::Failed(e.to_string()))?;
            let rel = soft_mask_path(&source, i, &meta.id)
                .map_err(|e| StageError::Failed(e.to_string()))?;
            write_file(&soft.join(rel), &bytes)?;
        }
    } else {
        tracing::info!(
            "{}: no sample has a ground-truth mask; the soft_masks folder stays empty",
            data.name
        );
    }
    Ok(lines)
}

/// The builder's official GT box file of `dataset` when it has a line for every sample of `source`.
fn official_box_file(data_dir: &Path, dataset: &str, source: &IndexSource) -> Option<ObjectBoxes> {
    let path = ground_truth_box_file(data_dir, dataset).ok()?;
    match ObjectBoxes::load(&path, source) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::info!(
                "not using {}: {e}; boxes from the index instead",
                path.display()
            );
            None
        }
    }
}
