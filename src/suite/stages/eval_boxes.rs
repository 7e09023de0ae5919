//! `eval-boxes`: recall of a box file against the ground-truth object boxes of synthetic scenes: the
//! fraction of ground-truth boxes matched by some predicted box of the same scene with IoU ≥ 0.5
//! ([`box_recall`], the smoke pipeline's `boxes.recall50`). The smoke pipeline measures the boxes without
//! their margin; a graph suite gets those from a `localize` stage with `margin = 0`.
//!
//! The box file is the official text format `localize` writes, ids being the scenes' row numbers; every
//! scene needs exactly one line (an empty one for no boxes).
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::formats::box_file::read_box_file_checked;
use crate::eval::box_recall::box_recall;
use crate::suite::dataset::DatasetSpec;
use crate::suite::stage::*;

pub struct EvalBoxes;

/// No parameters: the IoU threshold is in the metric's name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalBoxesParams {}

/// A ground-truth box counts as found when a predicted box overlaps it with at least this IoU.
const IOU: f64 = 0.5;

impl Stage for EvalBoxes {
    type Params = EvalBoxesParams;
    const KIND: &'static str = "eval-boxes";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "recall of a box file against the ground-truth object boxes of synthetic scenes";
    const INPUTS: &'static [Slot] = &[
        Slot::required("boxes", ArtefactKind::BoxFile),
        Slot::required("data", ArtefactKind::Dataset),
    ];
    const OUTPUTS: &'static [Slot] = &[];
    const METRICS: &'static [MetricSpec] = &[MetricSpec {
        name: "recall50",
        unit: Unit::Fraction,
        direction: Direction::HigherIsBetter,
        about: "fraction of ground-truth boxes matched by a predicted box with IoU ≥ 0.5",
    }];

    fn run(_p: &EvalBoxesParams, ctx: &mut StageContext) -> Result<StageResult, StageError> {
        let path = ctx.artefact("boxes")?.path.clone();
        let data = ctx.dataset("data")?;
        if matches!(data.spec, DatasetSpec::Index(_)) {
            return Err(StageError::Input {
                slot: "data".into(),
                msg: format!(
                    "{} is a built split; eval-boxes reads the ground-truth boxes of synthetic scenes only",
                    data.name
                ),
            });
        }
        let set = data.synth()?;
        let pred = boxes_by_row(&path, set.len())?;
        let recall = box_recall(&pred, &set.boxes_normalized(), IOU);
        if recall.is_nan() {
            return Err(StageError::Input {
                slot: "data".into(),
                msg: format!("{} has no ground-truth boxes to recall", data.name),
            });
        }
        Ok(StageResult::default().metric("recall50", recall))
    }
}

/// The boxes of scenes `0..n` from a box file whose ids are the row numbers, each exactly once.
fn boxes_by_row(path: &Path, n: usize) -> Result<Vec<Vec<[f64; 4]>>, StageError> {
    let entries = read_box_file_checked(path)?;
    let mut out: Vec<Option<Vec<[f64; 4]>>> = vec![None; n];
    for (line, id, boxes) in entries {
        let row = id.parse::<usize>().ok().filter(|&r| r < n).ok_or_else(|| {
            StageError::io(
                path,
                format!("line {line}: id '{id}' is not a scene row number below {n}"),
            )
        })?;
        if out[row].replace(boxes).is_some() {
            return Err(StageError::io(
                path,
                format!("line {line}: scene {row} is listed twice"),
            ));
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(i, b)| {
            b.ok_or_else(|| {
                StageError::io(
                    path,
                    format!("no line for scene {i}; every scene needs one (an empty line `{i}` for no boxes)"),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_matched_by_id_and_gaps_or_repeats_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("boxes.txt");
        std::fs::write(&p, "1 0.000000,0.000000,0.500000,0.500000\n0\n").unwrap();
        let b = boxes_by_row(&p, 2).unwrap();
        assert_eq!(b, vec![vec![], vec![[0.0, 0.0, 0.5, 0.5]]]);
        let e = boxes_by_row(&p, 3).unwrap_err().to_string();
        assert!(e.contains("no line for scene 2"), "{e}");
        // The box-file reader refuses a repeated id; two spellings of one row are refused here.
        std::fs::write(&p, "0\n0\n").unwrap();
        let e = boxes_by_row(&p, 2).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        std::fs::write(&p, "0\n00\n").unwrap();
        let e = boxes_by_row(&p, 2).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("twice"), "{e}");
        std::fs::write(&p, "7\n").unwrap();
        let e = boxes_by_row(&p, 2).unwrap_err().to_string();
        assert!(e.contains("'7'"), "{e}");
    }
}
