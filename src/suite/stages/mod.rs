//! Stage kinds, one file per kind, each calling library functions of the lower layers. Register a new kind
//! in [`register_builtin`] (and remove its entry from [`planned`] if it was there).
use super::registry::{PlannedKind, Registry};
use super::stage::{ArtefactKind as A, Direction, MetricSpec, Slot, Unit};

pub mod center_box;
pub mod eval_boxes;
pub mod eval_masks;
pub mod eval_maxboxacc;
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
        PlannedKind {
            kind: "eval-bg-challenge",
            issue: 11,
            about: "Background Challenge: a linear classifier trained on ORIGINAL, tested on every variant (Table 7)",
            // One test slot per variant: the release has one split per variant (`test-<variant>`).
            inputs: &[
                Slot::required("model", A::ModelCheckpoint),
                Slot::required("train", A::Dataset),
                Slot::optional("val", A::Dataset),
                Slot::required("test_original", A::Dataset),
                Slot::required("test_only_bg_b", A::Dataset),
                Slot::required("test_only_bg_t", A::Dataset),
                Slot::required("test_only_fg", A::Dataset),
                Slot::required("test_mixed_same", A::Dataset),
                Slot::required("test_mixed_rand", A::Dataset),
                Slot::required("test_mixed_next", A::Dataset),
            ],
            outputs: &[Slot::file("report", A::Json, "bg_challenge.json")],
            metrics: &[
                pct("original", UP, "ORIGINAL"),
                pct("only_bg_b", DOWN, "ONLY-BG-B"),
                pct("only_bg_t", DOWN, "ONLY-BG-T"),
                pct("only_fg", UP, "ONLY-FG"),
                pct("mixed_same", UP, "MIXED-SAME"),
                pct("mixed_rand", UP, "MIXED-RAND"),
                pct("mixed_next", UP, "MIXED-NEXT"),
                pct("bg_gap", DOWN, "BG-Gap = MIXED-SAME − MIXED-RAND"),
            ],
        },
        PlannedKind {
            kind: "eval-shift",
            issue: 11,
            about: "a linear classifier trained on ImageNet-9, tested on the distribution-shifted sets (Tables 6, 8)",
            inputs: &[
                Slot::required("model", A::ModelCheckpoint),
                Slot::required("train", A::Dataset),
                Slot::optional("val", A::Dataset),
                Slot::optional("imagenet_9", A::Dataset),
                Slot::optional("imagenet_sketch_9", A::Dataset),
                Slot::optional("stylized_imagenet_9", A::Dataset),
                Slot::optional("imagenet_r_9", A::Dataset),
                Slot::optional("imagenet_c_9", A::Dataset),
            ],
            outputs: &[Slot::file("report", A::Json, "shift.json")],
            metrics: &[
                pct("imagenet_9", UP, "ImageNet-9 (original)"),
                pct("imagenet_sketch_9", UP, "ImageNet-Sketch-9"),
                pct("stylized_imagenet_9", UP, "Stylized-ImageNet-9"),
                pct("imagenet_r_9", UP, "ImageNet-R-9"),
                pct("imagenet_c_9", UP, "ImageNet-C-9 (mean over corruptions)"),
            ],
        },
        PlannedKind {
            kind: "detectron2-finetune",
            issue: 12,
            about: "exports to detectron2 and fine-tunes Mask R-CNN C4 on COCO with an external detectron2 (Table 5)",
            inputs: &[Slot::required("model", A::ModelCheckpoint)],
            outputs: &[Slot::file("report", A::Json, "detectron2.json")],
            metrics: &[
                pct("bbox_ap", UP, "COCO detection AP"),
                pct("segm_ap", UP, "COCO segmentation AP"),
            ],
        },
    ];
