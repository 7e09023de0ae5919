//! Stage kinds, one file per kind, each calling library functions of the lower layers. Register a new kind
//! in [`register_builtin`] (and remove its entry from [`planned`] if it was there).
use super::registry::{PlannedKind, Registry};
use super::stage::{ArtefactKind as A, Direction, MetricSpec, Slot, Unit};

pub mod center_box;
pub mod detectron2_finetune;
pub mod eval_bg_challenge;
pub mod eval_boxes;
pub mod eval_masks;
pub mod eval_maxboxacc;
pub mod eval_shift;
pub mod ground_truth;
pub mod import;
pub mod linear_eval;
pub mod localize;
pub mod pretrain;

/// Registers every implemented kind.
pub fn register_builtin(r: &mut Registry) {
    // A failure here is a programming error in a declaration, caught by the registry's unit tests.
    let results = [
        r.register::<center_box::CenterBox>(),
        r.register::<pretrain::Pretrain>(),
        r.register::<linear_eval::LinearEval>(),
        r.register::<import::Import>(),
        r.register::<localize::Localize>(),
        r.register::<ground_truth::GroundTruth>(),
        r.register::<eval_masks::EvalMasks>(),
        r.register::<eval_maxboxacc::EvalMaxBoxAcc>(),
        r.register::<eval_boxes::EvalBoxes>(),
        r.register::<eval_bg_challenge::EvalBgChallenge>(),
        r.register::<eval_shift::EvalShift>(),
        r.register::<detectron2_finetune::Detectron2Finetune>(),
    ];
    for res in results {
        if let Err(e) = res {
            tracing::error!("{e}");
        }
    }
}

const fn pct(name: &'static str, direction: Direction, about: &'static str) -> MetricSpec {
    MetricSpec {
        name,
        unit: Unit::Percent,
        direction,
        about,
    }
}
const UP: Direction = Direction::HigherIsBetter;
const DOWN: Direction = Direction::LowerIsBetter;

/// Kinds the paper suites name that are not implemented yet, with the issue that brings them. Their
/// declarations are what the implementations must provide (names of slots and metrics), so suites written
/// against them keep validating.
pub fn planned() -> Vec<PlannedKind> {
    PLANNED.to_vec()
}

const PLANNED: &[PlannedKind] = &[
        PlannedKind {
            kind: "train-classifier",
            issue: 10,
            about: "supervised ResNet with the official cross-entropy recipe (Table 2)",
            inputs: &[Slot::required("data", A::Dataset)],
            outputs: &[Slot::file("model", A::ModelCheckpoint, "model.safetensors")],
            metrics: &[
                MetricSpec {
                    name: "final_loss",
                    unit: Unit::Loss,
                    direction: DOWN,
                    about: "mean training loss of the last epoch",
                },
                pct("train_accuracy", UP, "top-1 accuracy on the training set, last epoch"),
            ],
        },
        PlannedKind {
            kind: "redo-masks",
            issue: 11,
            about: "masks of the ReDO baseline (Table 1), the official `--model redo` path: 128 px input, mean/std 0.5, a ReDO mask network checkpoint",
            inputs: &[Slot::required("data", A::Dataset)],
            outputs: &[Slot::file("masks", A::MasksDir, "masks")],
            metrics: &[],
        },
    ];
