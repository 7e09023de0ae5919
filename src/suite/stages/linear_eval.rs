//! `linear-eval`: the official linear evaluation (`inference.py::lineval`, `--clf_type lbfgs`) of a frozen
//! encoder: pooled features of the train, val and test datasets, a linear classifier fitted by L-BFGS over
//! the weight-decay sweep, the weight decay with the best val accuracy selected, its test accuracy reported.
//!
//! Features: synthetic sets are resized whole to the input side and normalised, as the smoke pipeline's
//! linear probe does (same library calls, so a graph suite reproduces its numbers); built splits go through
//! the loader with the official evaluation transform (Resize(256) + CenterCrop(224) at 224 px, else
//! Resize(s) + CenterCrop(s)).
//!
//! Metrics are in percent, as the paper prints them: 100 × the fractions the library returns (the smoke
//! pipeline's `linear_acc` is the fraction). Without a bound `val`, the sweep selects on the training
//! features (the report says so) and `val_accuracy` is not emitted.
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::data::formats::safetensors::SafetensorsReader;
use crate::data::loader::Source;
use crate::eval::encode::{split_features, synth_features};
use crate::eval::linear::{linear_eval_observed, LinearEvalConfig, LinearEvalResult};
use crate::eval::EvalError;
use crate::model::ContrastiveModel;
use crate::suite::dataset::{DatasetHandle, DatasetSpec};
use crate::suite::stage::*;
use crate::train::augment::MAX_OUTPUT_SIZE;
use crate::train::TrainConfig;
use crate::util::progress::Unit as ProgressUnit;

pub struct LinearEval;

/// The classifier of the protocol; the official code's other option (`--clf_type sgd`) is not ported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Classifier {
    #[default]
    Lbfgs,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinearEvalParams {
    pub classifier: Classifier,
    /// Input side of the encoder. Default: the training view size recorded in the checkpoint
    /// (`contracam.train`), else the official 224.
    pub image_size: Option<i64>,
    /// Images per encoder batch (default 256; features do not depend on it beyond float rounding).
    pub batch: Option<usize>,
    /// The L-BFGS sweep (defaults: the official `logspace(-6, 5, 45)`, max_iter 1000, warm start).
    pub linear: LinearEvalConfig,
}

const DEFAULT_BATCH: usize = 256;
const DEFAULT_IMAGE_SIZE: i64 = 224;

/// What `linear_eval.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinearEvalReport {
    /// Top-1 test accuracy of the selected classifier, percent.
    pub accuracy: f64,
    /// Top-1 accuracy on the split used for selection, percent.
    pub val_accuracy: f64,
    /// `val`, or `train` when no val dataset is bound.
    pub selected_on: String,
    pub image_size: i64,
    pub samples: Samples,
    /// The library's result: fractions in [0, 1] and the whole sweep.
    pub result: LinearEvalResult,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Samples {
    pub train: usize,
    pub val: usize,
    pub test: usize,
}

impl Stage for LinearEval {
    type Params = LinearEvalParams;
    const KIND: &'static str = "linear-eval";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "linear classifier (L-BFGS, weight-decay sweep, val selection) on frozen features";
    const INPUTS: &'static [Slot] = &[
        Slot::required("model", ArtefactKind::ModelCheckpoint),
        Slot::required("train", ArtefactKind::Dataset),
        Slot::optional("val", ArtefactKind::Dataset),
        Slot::required("test", ArtefactKind::Dataset),
    ];
    const OUTPUTS: &'static [Slot] =
        &[Slot::file("report", ArtefactKind::Json, "linear_eval.json")];
    // Without a bound `val` the sweep selects on train and there is no validation accuracy.
    const OPTIONAL_METRICS: &'static [&'static str] = &["val_accuracy"];
    const METRICS: &'static [MetricSpec] = &[
        MetricSpec {
            name: "accuracy",
            unit: Unit::Percent,
            direction: Direction::HigherIsBetter,
            about: "top-1 test accuracy",
        },
        MetricSpec {
            name: "val_accuracy",
            unit: Unit::Percent,
            direction: Direction::HigherIsBetter,
            about: "top-1 accuracy on the validation split used for selection",
        },
    ];

    fn validate(p: &LinearEvalParams) -> Result<(), ParamError> {
        if let Some(s) = p.image_size {
            if !(1..=MAX_OUTPUT_SIZE).contains(&s) {
                return Err(ParamError::new(
                    "image_size",
                    format!("must be in 1..={MAX_OUTPUT_SIZE} pixels"),
                ));
            }
        }
        if p.batch == Some(0) {
            return Err(ParamError::new("batch", "must be at least 1"));
        }
        let l = &p.linear;
        if l.weight_decays.is_empty() {
            return Err(ParamError::new(
                "linear.weight_decays",
                "needs at least one value",
            ));
        }
        if let Some(w) = l
            .weight_decays
            .iter()
            .find(|w| !(w.is_finite() && **w >= 0.0))
        {
            return Err(ParamError::new(
                "linear.weight_decays",
                format!("{w} is not a finite value ≥ 0"),
            ));
        }
        if l.max_iter == 0 {
            return Err(ParamError::new("linear.max_iter", "must be at least 1"));
        }
        if l.history_size == 0 {
            return Err(ParamError::new("linear.history_size", "must be at least 1"));
        }
        for (k, v) in [
            ("linear.lr", l.lr),
            ("linear.tolerance_grad", l.tolerance_grad),
            ("linear.tolerance_change", l.tolerance_change),
            ("linear.init_std", l.init_std),
        ] {
            let ok = v.is_finite() && if k == "linear.lr" { v > 0.0 } else { v >= 0.0 };
            if !ok {
                return Err(ParamError::new(
                    k,
                    format!(
                        "{v}: must be finite and {}",
                        if k == "linear.lr" { "> 0" } else { "≥ 0" }
                    ),
                ));
            }
        }
        Ok(())
    }

    fn run(p: &LinearEvalParams, ctx: &mut StageContext) -> Result<StageResult, StageError> {
        let weights = ctx.artefact("model")?.path.clone();
        let size = match p.image_size {
            Some(s) => s,
            None => trained_view_size(&weights)?.unwrap_or(DEFAULT_IMAGE_SIZE),
        };
        let batch = p.batch.unwrap_or(DEFAULT_BATCH);
        let model = ContrastiveModel::load(&weights, ctx.device)?;
        let features = |slot: &str| -> Result<(Tensor, Tensor), StageError> {
            let data = ctx.dataset(slot)?;
            let bar = ctx.progress(
                &format!("{slot} features"),
                data.len().ok().map(|n| n as u64),
                ProgressUnit::Items("images"),
            );
            let f = dataset_features(&model, data, size, batch, ctx.threads, &bar);
            bar.finish();
            f.map_err(|e| match e {
                StageError::Failed(m) => StageError::Input {
                    slot: slot.into(),
                    msg: m,
                },
                e => e,
            })
        };
        let (train_x, train_y) = features("train")?;
        let val = match ctx.inputs.get("val") {
            Some(_) => Some(features("val")?),
            None => None,
        };
        let (test_x, test_y) = features("test")?;
        let (val_x, val_y, selected_on) = match &val {
            Some((x, y)) => (x, y, "val"),
            None => (&train_x, &train_y, "train"),
        };
        let sweep = ctx.progress(
            "linear eval",
            Some(p.linear.weight_decays.len() as u64),
            ProgressUnit::Items("weight decays"),
        );
        let result = linear_eval_observed(
            &train_x,
            &train_y,
            val_x,
            val_y,
            &test_x,
            &test_y,
            &p.linear,
            &mut |_, _, point| {
                sweep.println(&point.describe());
                sweep.inc(1);
            },
        )?;
        sweep.finish();
        let report = LinearEvalReport {
            accuracy: 100.0 * result.test_accuracy,
            val_accuracy: 100.0 * result.val_accuracy,
            selected_on: selected_on.into(),
            image_size: size,
            samples: Samples {
                train: train_y.size()[0] as usize,
                val: val.as_ref().map(|(_, y)| y.size()[0] as usize).unwrap_or(0),
                test: test_y.size()[0] as usize,
            },
            result,
        };
        ctx.write_json("report", &report)?;
        let back: LinearEvalReport = read_json(&ctx.output("report")?)?;
        let mut out = StageResult::default().metric("accuracy", back.accuracy);
        if val.is_some() {
            out = out.metric("val_accuracy", back.val_accuracy);
        }
        Ok(out)
    }
}

/// The training view size a checkpoint records (`contracam.train`, written by training), if any.
pub fn trained_view_size(weights: &Path) -> Result<Option<i64>, StageError> {
    let reader = SafetensorsReader::open(weights)?;
    let Some(json) = reader.metadata().get("contracam.train") else {
        return Ok(None);
    };
    let cfg: TrainConfig = serde_json::from_str(json).map_err(|e| {
        StageError::io(
            weights,
            format!("metadata 'contracam.train' is not a training config: {e}"),
        )
    })?;
    Ok(Some(cfg.augment.output_size))
}

/// Frozen-encoder features (N, D) on the CPU and labels (N,) of a dataset, in its order: a synthetic set
/// resized whole to `size` (the smoke pipeline's linear probe), a built split through the loader with the
/// official evaluation transform on `workers` threads (the library's [`synth_features`] and
/// [`split_features`]). `progress` counts images. A problem with the data itself (an empty split) is
/// `StageError::Failed`, which callers attribute to their input slot.
pub fn dataset_features(
    model: &ContrastiveModel,
    data: &DatasetHandle,
    size: i64,
    batch: usize,
    workers: usize,
    progress: &crate::util::progress::Progress,
) -> Result<(Tensor, Tensor), StageError> {
    match &data.spec {
        DatasetSpec::Synth(_) => {
            let set = data.synth()?;
            let f = synth_features(model, &set, size, batch);
            progress.inc(set.len() as u64);
            Ok(f)
        }
        DatasetSpec::Index(_) => {
            let source: Arc<dyn Source> = Arc::new(super::localize::index_source(data)?);
            split_features(model, source, size, batch, workers, progress).map_err(|e| match e {
                e @ EvalError::Invalid { .. } => StageError::Failed(e.to_string()),
                e => e.into(),
            })
        }
    }
}
