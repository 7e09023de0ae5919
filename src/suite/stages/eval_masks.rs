//! `eval-masks`: mask mIoU of a folder of predicted masks against a dataset's ground truth (Tables 1–2).
//!
//! - A built split: [`miou_over_split`], the protocol of `contracam eval miou --dataset` (the official
//!   `compute_mask_miou`: GT resized to the prediction's size in the official order for its mask rule, both
//!   binarised at > 0.5, empty-vs-empty = 1, the mean over images), predictions `<masks>/<id>.png`.
//! - Synthetic scenes: predictions `<masks>/<i>.png` at the scene size against the scenes' foreground
//!   (union of objects), per-image `mask_iou` and the mean summed in image order, as the smoke pipeline's
//!   `cam_miou`, so masks from `localize` on the same scenes give its number bit for bit.
use serde::{Deserialize, Serialize};

use crate::data::synth::SynthSet;
use crate::eval::dataset::miou_over_split;
use crate::eval::miou::mask_iou;
use crate::suite::dataset::DatasetSpec;
use crate::suite::stage::*;

pub struct EvalMasks;

/// No parameters: the protocol is fixed by the dataset's mask rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalMasksParams {}

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
    const METRICS: &'static [MetricSpec] = &[MetricSpec {
        name: "miou",
        unit: Unit::Fraction,
        direction: Direction::HigherIsBetter,
        about: "mean over images of the foreground IoU",
    }];

    fn run(_p: &EvalMasksParams, ctx: &mut StageContext) -> Result<StageResult, StageError> {
        let masks = ctx.artefact("masks")?.path.clone();
        let data = ctx.dataset("data")?;
        let miou = match &data.spec {
            DatasetSpec::Synth(_) => synth_miou(&*data.synth()?, &masks)?,
            DatasetSpec::Index(_) => {
                let source = super::localize::index_source(data)?;
                miou_over_split(&source, &masks)?.miou
            }
        };
        Ok(StageResult::default().metric("miou", miou))
    }
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
