//! `eval-shift`: a linear classifier on frozen features of IN-9 (`train`, selection on `val` when bound),
//! as the `linear-eval` kind fits it (same features, same L-BFGS sweep), then its top-1 accuracy (percent)
//! on each bound distribution-shifted set: ImageNet-9, ImageNet-Sketch-9, Stylized-ImageNet-9,
//! ImageNet-R-9 and ImageNet-C-9 (Tables 6 and 8).
//!
//! The classifier has 1 + the largest train/val label outputs (nine for IN-9, as the official
//! `nn.Linear(D, 9)`); a test label it cannot output counts as an error.
//!
//! ImageNet-C-9: `data build imagenet-c` writes one split per corruption and severity,
//! `<corruption>-<severity>`, in one dataset. The `imagenet_c_9` slot is bound to any split of that build
//! (it names the dataset); the stage reads the splits `params.imagenet_c` lists from the same build and
//! reports the accuracy of each, the mean over severities per corruption, and as `imagenet_c_9` the mean of
//! those per-corruption means (the ImageNet-C benchmark's averaging; the paper does not say which
//! corruptions and severities it averaged; the default is the 15 benchmark corruptions at severities 1-5).
//! The index of every split it reads is part of the stage's fingerprint ([`Stage::extra_splits`]), so
//! rebuilding any of them re-runs the stage. A synthetic set bound there is one set, not averaged.
//!
//! Unbound optional sets are skipped and their metric is not emitted; the report lists them as not bound.
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::linear_eval::{
    dataset_features, trained_view_size, Classifier, LinearEval, LinearEvalParams,
};
use crate::data::loader::{IndexSource, Source};
use crate::data::synth::BgVariant;
use crate::eval::encode::{split_features, synth_features};
use crate::eval::linear::{
    linear_eval_observed, LinearClassifier, LinearEvalConfig, LinearEvalResult, SweepPoint,
};
use crate::eval::EvalError;
use crate::model::ContrastiveModel;
use crate::suite::dataset::{DatasetHandle, DatasetSpec, SynthForm};
use crate::suite::stage::*;
use crate::util::progress::Unit as ProgressUnit;

pub struct EvalShift;

/// The ImageNet-C-9 splits averaged into `imagenet_c_9`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagenetCParams {
    /// Corruption names (the folder names of the release), each a split prefix.
    pub corruptions: Vec<String>,
    /// Severities 1..=5.
    pub severities: Vec<u32>,
}

/// The 15 benchmark corruptions of ImageNet-C (Hendrycks and Dietterich), in the release's family order.
pub const BENCHMARK_CORRUPTIONS: [&str; 15] = [
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
];

impl ImagenetCParams {
    /// The split names `<corruption>-<severity>`, corruption-major as they are read.
    pub fn splits(&self) -> Vec<String> {
        self.corruptions
            .iter()
            .flat_map(|c| self.severities.iter().map(move |s| format!("{c}-{s}")))
            .collect()
    }
}

impl Default for ImagenetCParams {
    fn default() -> Self {
        ImagenetCParams {
            corruptions: BENCHMARK_CORRUPTIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            severities: vec![1, 2, 3, 4, 5],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalShiftParams {
    pub classifier: Classifier,
    /// Input side of the encoder. Default: the training view size recorded in the checkpoint, else 224.
    pub image_size: Option<i64>,
    /// Images per encoder batch (default 256).
    pub batch: Option<usize>,
    /// The L-BFGS sweep (defaults: the official `logspace(-6, 5, 45)`, max_iter 1000, warm start).
    pub linear: LinearEvalConfig,
    pub imagenet_c: ImagenetCParams,
}

impl EvalShiftParams {
    /// The classifier part, checked as `linear-eval` checks it.
    pub fn probe(&self) -> LinearEvalParams {
        LinearEvalParams {
            classifier: self.classifier,
            image_size: self.image_size,
            batch: self.batch,
            linear: self.linear.clone(),
        }
    }
}

/// The optional test slots, in report order.
pub const SHIFT_SETS: [&str; 5] = [
    "imagenet_9",
    "imagenet_sketch_9",
    "stylized_imagenet_9",
    "imagenet_r_9",
    "imagenet_c_9",
];

/// One test set of the report.
#[derive(Debug, Clone, Serialize)]
pub struct SetReport {
    /// Top-1 accuracy, percent; None when the slot is not bound.
    pub accuracy: Option<f64>,
    /// The suite dataset bound to the slot, or "not bound".
    pub dataset: String,
    pub samples: usize,
    /// ImageNet-C-9 only: accuracy per split `<corruption>-<severity>`, and the mean per corruption.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub splits: BTreeMap<String, f64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub corruptions: BTreeMap<String, f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What `shift.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct ShiftReport {
    pub sets: BTreeMap<String, SetReport>,
    pub probe: ProbeReport,
}

/// How the classifier was fitted and selected (shared with `eval-bg-challenge`).
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// `val`, or `train` when no val dataset is bound.
    pub selected_on: String,
    /// Top-1 accuracy (percent) on the selection split.
    pub val_accuracy: f64,
    pub best_weight_decay: f64,
    pub best_index: usize,
    pub num_classes: i64,
    pub image_size: i64,
    pub train_samples: usize,
    pub val_samples: usize,
    pub sweep: Vec<SweepPoint>,
}

/// The frozen encoder and how it sees images.
pub(super) struct Probe {
    pub model: ContrastiveModel,
    pub size: i64,
    pub batch: usize,
}

impl Probe {
    pub fn open(p: &LinearEvalParams, ctx: &StageContext) -> Result<Self, StageError> {
        let weights = ctx.artefact("model")?.path.clone();
        let size = match p.image_size {
            Some(s) => s,
            None => trained_view_size(&weights)?.unwrap_or(224),
        };
        Ok(Probe {
            model: ContrastiveModel::load(&weights, ctx.device)?,
            size,
            batch: p.batch.unwrap_or(256),
        })
    }

    /// Features of the dataset bound to `slot` (as `linear-eval` computes them); a problem with the data
    /// names the slot. A synthetic `bg-challenge` set gives its ORIGINAL variant.
    pub fn features(&self, ctx: &StageContext, slot: &str) -> Result<(Tensor, Tensor), StageError> {
        self.features_of_variant(ctx, slot, BgVariant::Original)
    }

    /// [`Probe::features`], taking `variant` of a synthetic `bg-challenge` set (a slot cannot name a
    /// variant of a synthetic dataset, so the stage picks it from the slot).
    pub fn features_of_variant(
        &self,
        ctx: &StageContext,
        slot: &str,
        variant: BgVariant,
    ) -> Result<(Tensor, Tensor), StageError> {
        let data = ctx.dataset(slot)?;
        let bar = ctx.progress(
            &format!("{slot} features"),
            data.len().ok().map(|n| n as u64),
            ProgressUnit::Items("images"),
        );
        let f = match &data.spec {
            DatasetSpec::Synth(s) if s.form == SynthForm::BgChallenge => {
                let all = data.bg_challenge()?;
                let (_, set) = all
                    .iter()
                    .find(|(v, _)| *v == variant)
                    .ok_or_else(|| StageError::Failed(format!("no {} variant", variant.name())))?;
                let f = synth_features(&self.model, set, self.size, self.batch);
                bar.inc(set.len() as u64);
                Ok(f)
            }
            _ => dataset_features(&self.model, data, self.size, self.batch, ctx.threads, &bar),
        };
        bar.finish();
        f.map_err(|e| in_slot(slot, e))
    }

    /// Fits the classifier on `train` and selects it on `val` (or `train` when unbound).
    pub fn fit(
        &self,
        ctx: &StageContext,
        cfg: &LinearEvalConfig,
    ) -> Result<(LinearClassifier, ProbeReport), StageError> {
        let (train_x, train_y) = self.features(ctx, "train")?;
        let val = match ctx.inputs.get("val") {
            Some(_) => Some(self.features(ctx, "val")?),
            None => None,
        };
        let (val_x, val_y, selected_on) = match &val {
            Some((x, y)) => (x, y, "val"),
            None => (&train_x, &train_y, "train"),
        };
        let (result, clf) = fit_classifier(ctx, &train_x, &train_y, val_x, val_y, cfg)?;
        let report = ProbeReport {
            selected_on: selected_on.into(),
            val_accuracy: 100.0 * result.val_accuracy,
            best_weight_decay: result.best_weight_decay,
            best_index: result.best_index,
            num_classes: result.num_classes,
            image_size: self.size,
            train_samples: train_y.size()[0] as usize,
            val_samples: val.as_ref().map_or(0, |(_, y)| y.size()[0] as usize),
            sweep: result.sweep,
        };
        Ok((clf, report))
    }
}

/// The official sweep with no test set of its own: the selected classifier scores the stage's test sets.
fn fit_classifier(
    ctx: &StageContext,
    train_x: &Tensor,
    train_y: &Tensor,
    val_x: &Tensor,
    val_y: &Tensor,
    cfg: &LinearEvalConfig,
) -> Result<(LinearEvalResult, LinearClassifier), StageError> {
    let no_x = Tensor::zeros([0, train_x.size()[1]], (train_x.kind(), train_x.device()));
    let no_y = Tensor::zeros([0], (Kind::Int64, train_y.device()));
    let sweep = ctx.progress(
        "linear eval",
        Some(cfg.weight_decays.len() as u64),
        ProgressUnit::Items("weight decays"),
    );
    let mut result = linear_eval_observed(
        train_x,
        train_y,
        val_x,
        val_y,
        &no_x,
        &no_y,
        cfg,
        &mut |_, _, point| {
            sweep.println(&point.describe());
            sweep.inc(1);
        },
    )?;
    sweep.finish();
    let clf = result
        .classifier
        .take()
        .ok_or_else(|| StageError::Failed("the linear sweep returned no classifier".into()))?;
    Ok((result, clf))
}

/// A failure of the data bound to `slot` (not of the stage) is reported as that input's.
pub(super) fn in_slot(slot: &str, e: StageError) -> StageError {
    match e {
        StageError::Failed(m) => StageError::Input {
            slot: slot.into(),
            msg: m,
        },
        StageError::Dataset(d) => StageError::Input {
            slot: slot.into(),
            msg: d.to_string(),
        },
        e => e,
    }
}

/// Top-1 accuracy in percent, as `linear-eval` reports it.
pub(super) fn percent(clf: &LinearClassifier, (x, y): &(Tensor, Tensor)) -> f64 {
    100.0 * clf.accuracy(x, y)
}

impl Stage for EvalShift {
    type Params = EvalShiftParams;
    const KIND: &'static str = "eval-shift";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "linear classifier on frozen IN-9 features, top-1 on the distribution-shifted -9 sets";
    const INPUTS: &'static [Slot] = &[
        Slot::required("model", ArtefactKind::ModelCheckpoint),
        Slot::required("train", ArtefactKind::Dataset),
        Slot::optional("val", ArtefactKind::Dataset),
        Slot::optional("imagenet_9", ArtefactKind::Dataset),
        Slot::optional("imagenet_sketch_9", ArtefactKind::Dataset),
        Slot::optional("stylized_imagenet_9", ArtefactKind::Dataset),
        Slot::optional("imagenet_r_9", ArtefactKind::Dataset),
        Slot::optional("imagenet_c_9", ArtefactKind::Dataset),
    ];
    const OUTPUTS: &'static [Slot] = &[Slot::file("report", ArtefactKind::Json, "shift.json")];
    // A set left unbound is not measured: its metric is absent (and `shift.json` says "not bound").
    const OPTIONAL_METRICS: &'static [&'static str] = &[
        "imagenet_9",
        "imagenet_sketch_9",
        "stylized_imagenet_9",
        "imagenet_r_9",
        "imagenet_c_9",
    ];
    const METRICS: &'static [MetricSpec] = &[
        pct("imagenet_9", "ImageNet-9 (original)"),
        pct("imagenet_sketch_9", "ImageNet-Sketch-9"),
        pct("stylized_imagenet_9", "Stylized-ImageNet-9"),
        pct("imagenet_r_9", "ImageNet-R-9"),
        pct("imagenet_c_9", "ImageNet-C-9 (mean over corruptions)"),
    ];

    fn validate(p: &EvalShiftParams) -> Result<(), ParamError> {
        LinearEval::validate(&p.probe())?;
        let c = &p.imagenet_c;
        if c.corruptions.is_empty() {
            return Err(ParamError::new(
                "imagenet_c.corruptions",
                "needs at least one corruption",
            ));
        }
        for (i, name) in c.corruptions.iter().enumerate() {
            if !crate::suite::config::is_safe_name(name) {
                return Err(ParamError::new(
                    "imagenet_c.corruptions",
                    format!("{name:?}: {}", crate::suite::config::SAFE_NAME_RULE),
                ));
            }
            if c.corruptions[..i].contains(name) {
                return Err(ParamError::new(
                    "imagenet_c.corruptions",
                    format!("{name:?} is listed twice"),
                ));
            }
        }
        if c.severities.is_empty() {
            return Err(ParamError::new(
                "imagenet_c.severities",
                "needs at least one severity",
            ));
        }
        for (i, s) in c.severities.iter().enumerate() {
            if !(1..=5).contains(s) {
                return Err(ParamError::new(
                    "imagenet_c.severities",
                    format!("{s}: ImageNet-C severities are 1 to 5"),
                ));
            }
            if c.severities[..i].contains(s) {
                return Err(ParamError::new(
                    "imagenet_c.severities",
                    format!("{s} is listed twice"),
                ));
            }
        }
        Ok(())
    }

    fn extra_splits(p: &EvalShiftParams, slot: &str) -> Vec<String> {
        if slot != "imagenet_c_9" {
            return Vec::new();
        }
        p.imagenet_c.splits()
    }

    fn run(p: &EvalShiftParams, ctx: &mut StageContext) -> Result<StageResult, StageError> {
        let probe = Probe::open(&p.probe(), ctx)?;
        let (clf, probe_report) = probe.fit(ctx, &p.linear)?;
        let mut sets = BTreeMap::new();
        let mut out = StageResult::default();
        for slot in SHIFT_SETS {
            let Some(data) = ctx
                .inputs
                .get(slot)
                .map(|_| ctx.dataset(slot))
                .transpose()?
            else {
                sets.insert(
                    slot.to_string(),
                    SetReport {
                        accuracy: None,
                        dataset: "not bound".into(),
                        samples: 0,
                        splits: BTreeMap::new(),
                        corruptions: BTreeMap::new(),
                        note: Some("no metric: the slot is not bound".into()),
                    },
                );
                continue;
            };
            let set = if slot == "imagenet_c_9" && matches!(data.spec, DatasetSpec::Index(_)) {
                imagenet_c(&probe, &clf, ctx, data, &p.imagenet_c).map_err(|e| in_slot(slot, e))?
            } else {
                let f = probe.features(ctx, slot)?;
                SetReport {
                    accuracy: Some(percent(&clf, &f)),
                    dataset: data.name.clone(),
                    samples: f.1.size()[0] as usize,
                    splits: BTreeMap::new(),
                    corruptions: BTreeMap::new(),
                    note: (slot == "imagenet_c_9")
                        .then(|| "a synthetic set: one set, not averaged over corruptions".into()),
                }
            };
            if let Some(a) = set.accuracy {
                out = out.metric(slot, a);
            }
            sets.insert(slot.to_string(), set);
        }
        ctx.write_json(
            "report",
            &ShiftReport {
                sets,
                probe: probe_report,
            },
        )?;
        Ok(out)
    }
}

const fn pct(name: &'static str, about: &'static str) -> MetricSpec {
    MetricSpec {
        name,
        unit: Unit::Percent,
        direction: Direction::HigherIsBetter,
        about,
    }
}

/// ImageNet-C-9: every `<corruption>-<severity>` split of the build `data` belongs to, its accuracy, the
/// mean over severities per corruption and the mean of those.
fn imagenet_c(
    probe: &Probe,
    clf: &LinearClassifier,
    ctx: &StageContext,
    data: &DatasetHandle,
    c: &ImagenetCParams,
) -> Result<SetReport, StageError> {
    let DatasetSpec::Index(i) = &data.spec else {
        return Err(StageError::Failed(
            "ImageNet-C-9 needs a built dataset".into(),
        ));
    };
    let total = c.corruptions.len() * c.severities.len();
    let bar = ctx.progress(
        "imagenet_c_9 features",
        Some(total as u64),
        ProgressUnit::Items("splits"),
    );
    let hidden = crate::util::progress::Progress::with_mode(
        "",
        None,
        ProgressUnit::Items("images"),
        crate::util::progress::Mode::Hidden,
    );
    let (mut splits, mut corruptions, mut samples) = (BTreeMap::new(), BTreeMap::new(), 0);
    // Per-corruption means in the listed order, summed in that order.
    let mut means = Vec::with_capacity(c.corruptions.len());
    for name in &c.corruptions {
        let mut sum = 0.0;
        for s in &c.severities {
            let split = format!("{name}-{s}");
            let mut opened = IndexSource::open(&data.data_dir, &i.name, &split).map_err(|e| {
                StageError::Failed(format!(
                    "params imagenet_c lists split {split} of {}: {e}",
                    i.name
                ))
            })?;
            // The dataset's `limit` holds for every corrupted split, as for the split it names.
            if let Some(n) = i.limit {
                opened.index.samples.truncate(n);
                opened.index.header.count = opened.index.samples.len();
            }
            let source: Arc<dyn Source> = Arc::new(opened);
            let f = split_features(
                &probe.model,
                source,
                probe.size,
                probe.batch,
                ctx.threads,
                &hidden,
            )
            .map_err(|e| match e {
                e @ EvalError::Invalid { .. } => StageError::Failed(e.to_string()),
                e => e.into(),
            })?;
            let a = percent(clf, &f);
            samples += f.1.size()[0] as usize;
            sum += a;
            splits.insert(split, a);
            bar.inc(1);
        }
        let m = sum / c.severities.len() as f64;
        means.push(m);
        corruptions.insert(name.clone(), m);
    }
    bar.finish();
    let mean = means.iter().sum::<f64>() / means.len() as f64;
    Ok(SetReport {
        accuracy: Some(mean),
        dataset: data.name.clone(),
        samples,
        splits,
        corruptions,
        note: Some(format!(
            "mean over {} corruptions of the mean over severities {:?}, splits of {} (the bound split {} \
             only names the build)",
            c.corruptions.len(),
            c.severities,
            i.name,
            i.split
        )),
    })
}
