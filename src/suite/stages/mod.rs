//! Stage kinds, one file per kind, each calling library functions of the lower layers. Register a new kind
//! in [`register_builtin`] (and remove its entry from [`planned`] if it was there).
use super::registry::{PlannedKind, Registry};

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
pub mod redo_masks;
pub mod train_classifier;

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
        r.register::<train_classifier::TrainClassifier>(),
        r.register::<redo_masks::RedoMasks>(),
        r.register::<detectron2_finetune::Detectron2Finetune>(),
    ];
    for res in results {
        if let Err(e) = res {
            tracing::error!("{e}");
        }
    }
}

/// Kinds the paper suites name that are not implemented yet, with the issue that brings them. Their
/// declarations are what the implementations must provide (names of slots and metrics), so suites written
/// against them keep validating.
pub fn planned() -> Vec<PlannedKind> {
    PLANNED.to_vec()
}

const PLANNED: &[PlannedKind] = &[];
