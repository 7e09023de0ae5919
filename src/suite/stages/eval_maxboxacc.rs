//! `eval-maxboxacc`: MaxBoxAccV2 of score maps (Table 3), the wsolevaluation protocol: each map resized to
//! 224 (cubic) and min-max normalised, boxes from every contour at each CAM threshold, the best threshold
//! per IoU δ, the mean over δ.
//!
//! - A built split: [`maxboxacc_over_split`] (`contracam eval maxboxacc --dataset`), maps `<dir>/<id>.npy`,
//!   the GT boxes and image sizes from the index.
//! - Synthetic scenes: maps `<dir>/<i>.npy` against the scenes' object boxes (pixel xyxy at the scene size).
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::data::synth::SynthSet;
use crate::eval::dataset::{maxboxacc_over_split, maxboxacc_with_metadata};
use crate::eval::maxboxacc::{Box4, MaxBoxAccConfig, WsolMetadata, MIN_INTERVAL};
use crate::suite::dataset::DatasetSpec;
use crate::suite::stage::*;

pub struct EvalMaxBoxAcc;

/// wsolevaluation's `config.py` defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalMaxBoxAccParams {
    /// IoU thresholds δ in percent.
    pub iou_thresholds: Vec<u32>,
    /// Step of the CAM thresholds `np.arange(0, 1, Δ)`.
    pub cam_curve_interval: f64,
    /// Boxes of every contour (MaxBoxAccV2); false: the largest contour only (MaxBoxAcc v1).
    pub multi_contour_eval: bool,
}

impl Default for EvalMaxBoxAccParams {
    fn default() -> Self {
        let d = MaxBoxAccConfig::default();
        Self {
            iou_thresholds: d.iou_thresholds,
            cam_curve_interval: d.cam_curve_interval,
            multi_contour_eval: d.multi_contour_eval,
        }
    }
}

impl EvalMaxBoxAccParams {
    pub fn config(&self) -> MaxBoxAccConfig {
        MaxBoxAccConfig {
            cam_curve_interval: self.cam_curve_interval,
            iou_thresholds: self.iou_thresholds.clone(),
            multi_contour_eval: self.multi_contour_eval,
        }
    }
}

impl Stage for EvalMaxBoxAcc {
    type Params = EvalMaxBoxAccParams;
    const KIND: &'static str = "eval-maxboxacc";
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "MaxBoxAccV2 of score maps on a wsolevaluation split (Table 3)";
    const INPUTS: &'static [Slot] = &[
        Slot::required("score_maps", ArtefactKind::ScoreMaps),
        Slot::required("data", ArtefactKind::Dataset),
    ];
    const OUTPUTS: &'static [Slot] = &[];
    const METRICS: &'static [MetricSpec] = &[MetricSpec {
        name: "maxboxacc",
        unit: Unit::Percent,
        direction: Direction::HigherIsBetter,
        about: "MaxBoxAccV2, mean over IoU thresholds 0.3/0.5/0.7",
    }];

    fn validate(p: &EvalMaxBoxAccParams) -> Result<(), ParamError> {
        let d = p.cam_curve_interval;
        if !(MIN_INTERVAL..=1.0).contains(&d) {
            return Err(ParamError::new(
                "cam_curve_interval",
                format!(
                    "must be in [{MIN_INTERVAL}, 1] (the 8-bit maps have 256 distinct cuts; wsolevaluation uses 0.001)"
                ),
            ));
        }
        let t = &p.iou_thresholds;
        if t.is_empty() || t.len() > 8 || t.iter().any(|&v| v > 100) {
            return Err(ParamError::new(
                "iou_thresholds",
                "must be 1 to 8 percentages in 0..=100",
            ));
        }
        Ok(())
    }

    fn run(p: &EvalMaxBoxAccParams, ctx: &mut StageContext) -> Result<StageResult, StageError> {
        let maps = ctx.artefact("score_maps")?.path.clone();
        let data = ctx.dataset("data")?;
        let cfg = p.config();
        let r = match &data.spec {
            DatasetSpec::Synth(_) => {
                maxboxacc_with_metadata(&synth_metadata(&*data.synth()?), &maps, &cfg)?
            }
            DatasetSpec::Index(_) => {
                let source = super::localize::index_source(data)?;
                maxboxacc_over_split(&source, &maps, &cfg)?
            }
        };
        Ok(StageResult::default().metric("maxboxacc", r.mean))
    }
}

/// wsolevaluation metadata of synthetic scenes: ids `0..n`, the scene size, every object's box.
pub fn synth_metadata(set: &SynthSet) -> WsolMetadata {
    let s = set.size as u32;
    let image_ids: Vec<String> = (0..set.len()).map(|i| i.to_string()).collect();
    let image_sizes = image_ids.iter().map(|id| (id.clone(), (s, s))).collect();
    let boxes: HashMap<String, Vec<Box4>> = image_ids
        .iter()
        .zip(&set.objects)
        .map(|(id, objs)| {
            (
                id.clone(),
                objs.iter().map(|o| o.bbox.map(|v| v as i32)).collect(),
            )
        })
        .collect();
    WsolMetadata {
        image_ids,
        image_sizes,
        boxes,
    }
}
