//! `eval-masks`: mask mIoU of a folder of predicted masks against a dataset's ground truth (Tables 1–2).
//!
//! - A built split: [`miou_over_split`], the protocol of `contracam eval miou --dataset` (the official
//!   `compute_mask_miou`: GT resized to the prediction's size in the official order for its mask rule, both
//!   binarised at > 0.5, empty-vs-empty = 1, the mean over images), predictions `<masks>/<id>.png`.
//! - Synthetic scenes: predictions `<masks>/<i>.png` at the scene size against the scenes' foreground
//!   (union of objects), per-image `mask_iou` and the mean summed in image order, as the smoke pipeline's
//!   `cam_miou`, so masks from `localize` on the same scenes give its number bit for bit.
//!
//! With `redo_iou = true` (built splits), also `redo_iou`: ReDO's own protocol (`train.py: evaluate`),
//! per image the larger of IoU(P, G) and IoU(not P, G) with P = value / 255 ≥ 0.5, averaged per batch of
//! `redo_batch` images in index order, then over batches, the last partial batch dropped (`drop_last`). Not
//! ReDO's: the ground truth is the mIoU's (resized to the prediction as the official code does, not ReDO's
//! NEAREST resize and centre crop), the order is the index's (ReDO's loader shuffles, which changes which
//! images the dropped batch holds), and an image whose prediction and ground truth are both empty scores 1
//! (ReDO's NaN would make the mean NaN). `suites/paper/table1.toml` binds the ReDO row to `miou` (the
//! official code's protocol); `redo_iou` is the variant to compare with the ReDO paper's own numbers.
use serde::{Deserialize, Serialize};

use crate::data::loader::{IndexSource, MaskRule, Source};
use crate::eval::dataset::{ground_truth_at, mask_path};

use crate::data::synth::SynthSet;
use crate::eval::dataset::miou_over_split;
use crate::eval::miou::mask_iou;
use crate::suite::dataset::DatasetSpec;
use crate::suite::stage::*;

pub struct EvalMasks;

/// The mIoU protocol is fixed by the dataset's mask rule; `redo_iou` adds ReDO's variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalMasksParams {
    /// Also report `redo_iou` (built splits only). Defaults are left out of the resolved params, so stages
    /// that do not set these keys keep their fingerprints.
    #[serde(skip_serializing_if = "is_false")]
    pub redo_iou: bool,
    /// ReDO's evaluation batch (its `--batchSize`, default 20); the last partial batch is dropped.
    #[serde(skip_serializing_if = "is_default_batch")]
    pub redo_batch: usize,
}

impl Default for EvalMasksParams {
    fn default() -> Self {
        Self {
            redo_iou: false,
            redo_batch: REDO_BATCH_DEFAULT,
        }
    }
}

/// Largest `redo_batch` accepted.
const REDO_BATCH_MAX: usize = 100_000;
const REDO_BATCH_DEFAULT: usize = 20;

fn is_false(b: &bool) -> bool {
    !b
}
fn is_default_batch(b: &usize) -> bool {
    *b == REDO_BATCH_DEFAULT
}

impl Stage for EvalMasks {
    type Params = EvalMasksParams;
    const KIND: &'static str = "eval-masks";
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "mask mIoU against the dataset's ground truth (Tables 1–2)";
    const INPUTS: &'static [Slot] = &[
        Slot::required("masks", ArtefactKind::MasksDir),
        Slot::required("data", ArtefactKind::Dataset),
    ];
    const OUTPUTS: &'static [Slot] = &[];
    const METRICS: &'static [MetricSpec] = &[
        MetricSpec {
            name: "miou",
            unit: Unit::Fraction,
            direction: Direction::HigherIsBetter,
            about: "mean over images of the foreground IoU",
        },
        MetricSpec {
            name: "redo_iou",
            unit: Unit::Fraction,
            direction: Direction::HigherIsBetter,
            about: "ReDO's IoU: max over the mask and its inverse, batch means, last partial batch dropped",
        },
    ];
    const OPTIONAL_METRICS: &'static [&'static str] = &["redo_iou"];

    fn validate(p: &EvalMasksParams) -> Result<(), ParamError> {
        if !(1..=REDO_BATCH_MAX).contains(&p.redo_batch) {
            return Err(ParamError::new(
                "redo_batch",
                format!("must be in 1..={REDO_BATCH_MAX}"),
            ));
        }
        Ok(())
    }

    fn run(p: &EvalMasksParams, ctx: &mut StageContext) -> Result<StageResult, StageError> {
        let masks = ctx.artefact("masks")?.path.clone();
        let data = ctx.dataset("data")?;
        let mut result = StageResult::default();
        let miou = match &data.spec {
            DatasetSpec::Synth(_) => {
                if p.redo_iou {
                    return Err(ParamError::new(
                        "redo_iou",
                        "applies to built splits only; remove it for synthetic scenes",
                    )
                    .into());
                }
                synth_miou(&*data.synth()?, &masks)?
            }
            DatasetSpec::Index(_) => {
                let source = super::localize::index_source(data)?;
                if p.redo_iou {
                    result = result.metric("redo_iou", redo_iou(&source, &masks, p.redo_batch)?);
                }
                miou_over_split(&source, &masks)?.miou
            }
        };
        Ok(result.metric("miou", miou))
    }
}

/// ReDO's IoU of one image: the larger of IoU(P, G) and IoU(not P, G); both empty scores 1.
pub fn redo_image_iou(pred: &[bool], gt: &[bool]) -> f64 {
    let (mut inter, mut union, mut inter_inv, mut union_inv) = (0u64, 0u64, 0u64, 0u64);
    for (&p, &g) in pred.iter().zip(gt) {
        inter += (p && g) as u64;
        union += (p || g) as u64;
        inter_inv += (!p && g) as u64;
        union_inv += (!p || g) as u64;
    }
    let iou = |i: u64, u: u64| if u == 0 { 1.0 } else { i as f64 / u as f64 };
    iou(inter, union).max(iou(inter_inv, union_inv))
}

/// ReDO's protocol over a built split: batch means of [`redo_image_iou`] over full batches of `batch`
/// images in index order, then the mean of those.
pub fn redo_iou(
    source: &IndexSource,
    masks: &std::path::Path,
    batch: usize,
) -> Result<f64, StageError> {
    let n = source.len();
    let full = n / batch;
    if full == 0 {
        return Err(StageError::Failed(format!(
            "redo_iou: {n} images make no full batch of redo_batch = {batch} (ReDO drops the last partial batch)"
        )));
    }
    let rule = MaskRule::parse(source.index.header.mask_rule.as_deref())
        .map_err(|m| StageError::io(&source.index_file, m))?;
    let mut batch_means = Vec::with_capacity(full);
    for b in 0..full {
        let mut sum = 0.0;
        for i in b * batch..(b + 1) * batch {
            let id = source.meta(i)?.id;
            let path = mask_path(masks, &id);
            let img = image::open(&path)
                .map_err(|e| {
                    StageError::io(&path, format!("{e}; every sample needs a predicted mask"))
                })?
                .to_luma8();
            let (w, h) = img.dimensions();
            let gt = ground_truth_at(source, rule, i, w, h)?;
            let pred: Vec<bool> = img
                .as_raw()
                .iter()
                .map(|&v| v as f64 / 255.0 >= 0.5)
                .collect();
            sum += redo_image_iou(&pred, &gt);
        }
        batch_means.push(sum / batch as f64);
    }
    Ok(batch_means.iter().sum::<f64>() / full as f64)
}

/// mIoU of `<dir>/<i>.png` against the foreground of scene `i`.
pub fn synth_miou(set: &SynthSet, dir: &std::path::Path) -> Result<f64, StageError> {
    let s = set.size as u32;
    let mut ious = Vec::with_capacity(set.len());
    for (i, inst) in set.instance_masks.iter().enumerate() {
        let path = dir.join(format!("{i}.png"));
        let img = image::open(&path).map_err(|e| {
            StageError::io(
                &path,
                format!(
                    "{e}; every scene needs a predicted mask `<i>.png` (`localize` writes them)"
                ),
            )
        })?;
        let image::DynamicImage::ImageLuma8(g) = img else {
            return Err(StageError::io(&path, "expected an 8-bit grayscale PNG"));
        };
        if g.dimensions() != (s, s) {
            return Err(StageError::io(
                &path,
                format!("is {:?}, the scenes are {s}×{s}", g.dimensions()),
            ));
        }
        // value / 255 > 0.5, as the official binarisation of a stored mask.
        let pred: Vec<f32> = g
            .as_raw()
            .iter()
            .map(|&v| (v as f64 / 255.0 > 0.5) as u8 as f32)
            .collect();
        let fg: Vec<f32> = inst.iter().map(|&v| (v != 0) as u8 as f32).collect();
        ious.push(mask_iou(&pred, &fg));
    }
    if ious.is_empty() {
        return Err(StageError::Failed("the synthetic set has no scenes".into()));
    }
    Ok(ious.iter().sum::<f64>() / ious.len() as f64)
}
