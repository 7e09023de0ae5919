//! `train-classifier`: a supervised ResNet trained with cross-entropy on a built split's class labels
//! (Table 2's classifier CAM). No official script exists for it; the recipe is torchvision's ImageNet
//! reference scaled to the batch (SGD momentum 0.9, lr 0.1·batch/256, weight decay 1e-4, per-epoch cosine,
//! RandomResizedCrop + flip, accuracy with the evaluation transform), an assumption each of whose values is
//! a parameter ([`ClassifierTrainConfig`]). The model is what `localize`'s `classifier-cam` reads.
use std::sync::Arc;

use crate::data::loader::Source;
use crate::suite::dataset::DatasetSpec;
use crate::suite::stage::*;
use crate::train::supervised::{
    checkpoint_metadata, train_classifier, ClassifierReport, ClassifierRunOptions,
    ClassifierTrainConfig,
};
use crate::train::TrainError;
use crate::util::progress::Unit as ProgressUnit;

pub struct TrainClassifier;

fn param_error(e: TrainError) -> ParamError {
    match e {
        TrainError::Config { key, value, msg } => ParamError::new(key, format!("{value}: {msg}")),
        other => ParamError::new("", other.to_string()),
    }
}

impl Stage for TrainClassifier {
    type Params = ClassifierTrainConfig;
    const KIND: &'static str = "train-classifier";
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "supervised ResNet, cross-entropy on the split's labels (torchvision's recipe scaled to the batch: an assumption, no official script)";
    const INPUTS: &'static [Slot] = &[Slot::required("data", ArtefactKind::Dataset)];
    const OUTPUTS: &'static [Slot] = &[
        Slot::file("model", ArtefactKind::ModelCheckpoint, "model.safetensors"),
        Slot::file("report", ArtefactKind::Json, "train_report.json"),
    ];
    const METRICS: &'static [MetricSpec] = &[
        MetricSpec {
            name: "final_loss",
            unit: Unit::Loss,
            direction: Direction::LowerIsBetter,
            about: "mean training loss of the last epoch",
        },
        MetricSpec {
            name: "train_accuracy",
            unit: Unit::Percent,
            direction: Direction::HigherIsBetter,
            about: "top-1 accuracy on the training set after the last epoch (evaluation transform)",
        },
    ];

    fn validate(p: &ClassifierTrainConfig) -> Result<(), ParamError> {
        p.validate(None).map_err(param_error)
    }

    fn run(p: &ClassifierTrainConfig, ctx: &mut StageContext) -> Result<StageResult, StageError> {
        // The run's precision applies unless the params name one (as `pretrain` does).
        let mut recipe = p.clone();
        if recipe.precision == Precision::Fp32 {
            recipe.precision = ctx.precision;
        }
        let p = &recipe;
        let data = ctx.dataset("data")?;
        let DatasetSpec::Index(_) = &data.spec else {
            return Err(StageError::Input {
                slot: "data".into(),
                msg: format!(
                    "{} is synthetic; train-classifier trains on a built split (one class label per image)",
                    data.name
                ),
            });
        };
        // Through the dataset handle, so a profile's `limit` reaches the training as it does every stage.
        let source: Arc<dyn Source> = Arc::new(super::localize::index_source(data)?);
        let opts = ClassifierRunOptions {
            workers: ctx.threads,
            device: ctx.device,
        };
        let bar = ctx.progress("train", None, ProgressUnit::Items("steps"));
        let (model, report) =
            train_classifier(p, source.clone(), &opts, ctx.seed, &bar).map_err(|e| match e {
                e @ TrainError::Config { .. } => StageError::Input {
                    slot: "data".into(),
                    msg: e.to_string(),
                },
                e => e.into(),
            })?;
        bar.finish();
        model.save(
            &ctx.output("model")?,
            &checkpoint_metadata(p, ctx.seed, source.as_ref()),
        )?;
        ctx.write_json("report", &report)?;
        let report: ClassifierReport = read_json(&ctx.output("report")?)?;
        Ok(StageResult::default()
            .metric("final_loss", *report.epoch_loss.last().unwrap_or(&f64::NAN))
            .metric("train_accuracy", report.train_accuracy)
            .curve(
                "loss",
                Curve {
                    x_label: "epoch".into(),
                    y_label: "mean training loss".into(),
                    x: (1..=report.epoch_loss.len()).map(|e| e as f64).collect(),
                    y: report.epoch_loss.clone(),
                },
            ))
    }
}
