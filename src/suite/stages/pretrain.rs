//! `pretrain`: self-supervised training (MoCo v2 or BYOL) of a fresh model on a dataset, optionally with
//! object-aware random crop (OA-Crop) from a box file.
//!
//! - Synthetic scenes or crops are held in memory and trained through [`train::train`], as the smoke
//!   pipeline's train stages do (same data tensors, the scenes' true foreground riding with view 1, the
//!   run's seed): a suite that writes the smoke pipeline as a graph gets the same weights and losses.
//! - A built index split goes through the loader ([`train::train_on_index`]), with OA-Crop boxes from an
//!   official-format box file.
//!
//! BG-Mixup (`bg_mixup` table) mixes view 1 with backgrounds cut by the soft masks bound to `masks` (a
//! localize stage's CAM masks; a ground-truth stage's masks for BG-HardMix (GT)); on synthetic scenes
//! `mode = "hard"` uses their true foreground and needs no input, and `mode = "soft"` the bound soft masks
//! of a localize stage over the same scenes (`soft_masks/<i>.png`), as the paper's BG-Mixup. `mix` runs the Mixup/CutMix baselines.
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::data::formats::box_file::read_box_file_checked;
use crate::data::loader::{MaskInput, ObjectBoxes, Source, SynthKind, SynthSource};
use crate::data::synth::SynthSet;
use crate::model::{
    Arch, CheckpointError, ContrastiveModel, Method, ModelConfig, ResNetConfig, Stem,
};
use crate::suite::dataset::{DatasetSpec, SynthDataset, SynthForm};
use crate::suite::stage::*;
use crate::train::augment::object_aware_crop::validate_regions;
use crate::train::augment::{AugmentConfig, Region};
use crate::train::config::{MixConfig, MixKind};
use crate::train::{
    self, Checkpointing, IndexSourceOptions, TrainConfig, TrainData, TrainError, TrainReport,
};
use crate::util::progress::Unit as ProgressUnit;

pub struct Pretrain;

/// BG-Mixup settings (`models/bg_mixup.py`): `soft` mixes with the soft CAM masks (BG-Mixup), `hard` with
/// ground-truth masks (BG-HardMix(GT)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BgMixupParams {
    pub mode: BgMixupMode,
    /// Probability per image of mixing in another image's background (official `--aug_prob`, 0.4 for both
    /// methods; the paper uses 0.3 for BYOL).
    pub p_mix: f64,
    /// Masks at or above this are foreground when the background-only image is made (`--cam_thres`).
    pub cam_threshold: f64,
}

impl Default for BgMixupParams {
    fn default() -> Self {
        Self {
            mode: BgMixupMode::Soft,
            p_mix: 0.4,
            cam_threshold: 0.2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BgMixupMode {
    Soft,
    Hard,
}

/// The Mixup / CutMix baselines (i-Mix style, on view 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixParams {
    pub mode: MixMode,
    /// λ ~ Beta(beta, beta) (official 1.0).
    #[serde(default = "one")]
    pub beta: f64,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MixMode {
    Mixup,
    Cutmix,
}

/// Parameters of a `pretrain` stage. Defaults are the official code's (`pretrain.py`, `models/moco.py`,
/// `models/byol.py`, `data/transforms.py`); the model and training keys map onto [`ModelConfig`] and
/// [`TrainConfig`] (see [`PretrainParams::model_config`], [`PretrainParams::train_config`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainParams {
    pub method: Method,
    pub arch: Arch,
    /// Channel multiplier on torchvision's widths (1: the standard network).
    pub width: f64,
    /// `small` for CPU-scale images (3×3 stem, no max-pool).
    pub stem: Stem,
    /// Projector hidden width (default: the feature dim for MoCo, 4096 for BYOL).
    pub proj_hidden: Option<i64>,
    /// Projector output (default 128 MoCo, 256 BYOL).
    pub proj_dim: Option<i64>,
    /// BYOL predictor hidden width (default 4096).
    pub pred_hidden: Option<i64>,
    pub epochs: usize,
    /// Global batch size.
    pub batch: usize,
    /// Learning rate at batch 256, scaled linearly with `batch`.
    pub base_lr: f64,
    pub final_lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// EMA of the momentum/target network (default 0.999 MoCo, 0.996 BYOL).
    pub ema: Option<f64>,
    /// MoCo queue length.
    pub queue_size: usize,
    /// MoCo temperature.
    pub temperature: f64,
    /// Side of the training views.
    pub image_size: i64,
    /// Smallest RandomResizedCrop area fraction (the paper's 0.08; torchvision's default is 0.2).
    pub min_crop_scale: f64,
    /// Object-aware random crop from the `boxes` input (which must then be bound).
    pub oa_crop: bool,
    /// BG-Mixup with the soft masks of the `masks` input (or, mode hard on synthetic scenes, their true foreground).
    pub bg_mixup: Option<BgMixupParams>,
    /// Mixup / CutMix baseline.
    pub mix: Option<MixParams>,
    /// `fp32` or `bf16-mixed` (bfloat16 autocast for the forward passes and loss; parameters, optimiser,
    /// EMA target, queue and checkpoint in float32). Unset: the run's precision policy (fp32).
    pub precision: Option<Precision>,
    /// Convolution weights and input views in the channels_last memory format.
    pub channels_last: bool,
}

impl Default for PretrainParams {
    fn default() -> Self {
        let t = TrainConfig::default();
        let a = AugmentConfig::default();
        Self {
            method: Method::Moco,
            arch: Arch::Resnet18,
            width: 1.0,
            stem: Stem::Imagenet,
            proj_hidden: None,
            proj_dim: None,
            pred_hidden: None,
            epochs: t.epochs,
            batch: t.batch_size,
            base_lr: t.base_lr,
            final_lr: t.final_lr,
            momentum: t.momentum,
            weight_decay: t.weight_decay,
            ema: t.ema,
            queue_size: t.queue_size,
            temperature: t.temperature,
            image_size: a.output_size,
            min_crop_scale: a.crop_scale[0],
            oa_crop: false,
            bg_mixup: None,
            mix: None,
            precision: None,
            channels_last: false,
        }
    }
}

impl PretrainParams {
    pub fn model_config(&self) -> ModelConfig {
        ModelConfig {
            encoder: ResNetConfig {
                arch: self.arch,
                width: self.width,
                stem: self.stem,
                zero_init_residual: true,
            },
            method: self.method,
            proj_hidden: self.proj_hidden,
            proj_dim: self.proj_dim,
            pred_hidden: self.pred_hidden,
            projector_form: Default::default(),
        }
    }

    /// The training recipe; augmentations other than the view size and the crop scale stay official.
    /// `precision` unset is fp32 here; [`Pretrain::run`] fills it from the run's policy.
    pub fn train_config(&self) -> TrainConfig {
        let mut augment = AugmentConfig {
            output_size: self.image_size,
            ..AugmentConfig::default()
        };
        augment.crop_scale[0] = self.min_crop_scale;
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch,
            base_lr: self.base_lr,
            final_lr: self.final_lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            ema: self.ema,
            queue_size: self.queue_size,
            temperature: self.temperature,
            augment,
            mix: self.mix_config(),
            precision: self.precision.unwrap_or_default(),
            channels_last: self.channels_last,
        }
    }

    /// View-1 mixing in the loop: BG-Mixup (soft CAM masks or, mode hard, ground-truth ones; the same
    /// mixing) or the Mixup/CutMix baselines; off when neither table is set.
    pub fn mix_config(&self) -> MixConfig {
        match (&self.bg_mixup, &self.mix) {
            (Some(b), _) => MixConfig {
                kind: MixKind::BgMixup,
                bg_mixup_prob: Some(b.p_mix),
                cam_thres: b.cam_threshold,
                ..MixConfig::default()
            },
            (None, Some(m)) => MixConfig {
                kind: match m.mode {
                    MixMode::Mixup => MixKind::Mixup,
                    MixMode::Cutmix => MixKind::Cutmix,
                },
                alpha: m.beta,
                ..MixConfig::default()
            },
            (None, None) => MixConfig::default(),
        }
    }
}

/// The parameter key of a config key as the training layer names it (`train.batch_size` → `batch`).
fn param_key(key: &str) -> String {
    match key {
        "train.batch_size" => "batch".into(),
        "train.augment.output_size" => "image_size".into(),
        "train.augment.crop_scale" => "min_crop_scale".into(),
        "train.mix.bg_mixup_prob" => "bg_mixup.p_mix".into(),
        "train.mix.cam_thres" => "bg_mixup.cam_threshold".into(),
        "train.mix.alpha" => "mix.beta".into(),
        k => k
            .strip_prefix("train.")
            .or_else(|| k.strip_prefix("model."))
            .unwrap_or(k)
            .into(),
    }
}

fn train_param_error(e: TrainError) -> ParamError {
    match e {
        TrainError::Config { key, value, msg }
        | TrainError::Model(CheckpointError::InvalidConfig { key, value, msg }) => {
            ParamError::new(param_key(&key), format!("{value}: {msg}"))
        }
        other => ParamError::new("", other.to_string()),
    }
}

impl Stage for Pretrain {
    type Params = PretrainParams;
    const KIND: &'static str = "pretrain";
    // 1: MoCo v2 / BYOL with OA-Crop; synthetic data as the smoke pipeline's train stages (its version 2).
    // 2: BG-Mixup and Mixup/CutMix train (the loop mixes view 1).
    const VERSION: u32 = 2;
    const ABOUT: &'static str =
        "self-supervised training (MoCo v2 / BYOL), optionally with OA-Crop boxes or BG-Mixup masks";
    const INPUTS: &'static [Slot] = &[
        Slot::required("data", ArtefactKind::Dataset),
        Slot::optional("boxes", ArtefactKind::BoxFile),
        Slot::optional("masks", ArtefactKind::SoftMasks),
    ];
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
            name: "view_foreground",
            unit: Unit::Fraction,
            direction: Direction::Neutral,
            about: "mean foreground fraction of view 1 over every step (synthetic data, whose masks are known); OA-Crop raises it",
        },
    ];
    // Only synthetic data carries masks to measure it; a built split (Table 2's CUB, say) has none.
    const OPTIONAL_METRICS: &'static [&'static str] = &["view_foreground"];

    fn validate(p: &PretrainParams) -> Result<(), ParamError> {
        p.model_config()
            .validate()
            .map_err(|e| train_param_error(TrainError::Model(e)))?;
        p.train_config()
            .validate(p.method, None)
            .map_err(train_param_error)?;
        if let Some(b) = &p.bg_mixup {
            if !(0.0..=1.0).contains(&b.p_mix) {
                return Err(ParamError::new(
                    "bg_mixup.p_mix",
                    "must be a probability in [0, 1]",
                ));
            }
            if !(0.0..=1.0).contains(&b.cam_threshold) {
                return Err(ParamError::new(
                    "bg_mixup.cam_threshold",
                    "must be in [0, 1] (masks are fractions of foreground)",
                ));
            }
        }
        if let Some(m) = &p.mix {
            if !(m.beta.is_finite() && m.beta > 0.0) {
                return Err(ParamError::new(
                    "mix.beta",
                    "must be finite and > 0 (Beta(beta, beta))",
                ));
            }
        }
        if p.bg_mixup.is_some() && p.mix.is_some() {
            return Err(ParamError::new(
                "mix",
                "BG-Mixup and Mixup/CutMix are separate methods; set one of bg_mixup and mix",
            ));
        }
        Ok(())
    }

    fn run(p: &PretrainParams, ctx: &mut StageContext) -> Result<StageResult, StageError> {
        let masks = ctx.optional_artefact("masks")?.map(|a| a.path.clone());
        match (&masks, &p.bg_mixup) {
            (Some(_), None) => {
                return Err(StageError::Input {
                    slot: "masks".into(),
                    msg: "is bound but bg_mixup is not set; set bg_mixup to mix backgrounds, or unbind masks".into(),
                })
            }
            (None, None) => {}
            (Some(_), Some(b)) => {
                // On synthetic scenes mode hard is their true foreground; soft takes the bound CAM masks.
                if b.mode == BgMixupMode::Hard
                    && matches!(ctx.dataset("data")?.spec, DatasetSpec::Synth(_))
                {
                    return Err(StageError::Input {
                        slot: "masks".into(),
                        msg: "is bound to synthetic scenes with bg_mixup mode = \"hard\", which mixes \
                              through their true foreground; unbind masks, or set mode = \"soft\" to mix \
                              through the bound soft CAM masks"
                            .into(),
                    });
                }
            }
            (None, Some(b)) => {
                // Synthetic scenes carry their true foreground with view 1: that is BG-HardMix (GT).
                let synth = matches!(ctx.dataset("data")?.spec, DatasetSpec::Synth(_));
                if !(synth && b.mode == BgMixupMode::Hard) {
                    return Err(StageError::Input {
                        slot: "masks".into(),
                        msg: if synth {
                            "is not bound: BG-Mixup (mode soft) mixes with the soft CAM masks of a localize stage; \
                             on synthetic scenes only mode = \"hard\" (their true foreground) needs none"
                                .into()
                        } else {
                            "is not bound, but bg_mixup needs the soft masks of the images (a localize or \
                             ground-truth stage's soft_masks)"
                                .into()
                        },
                    });
                }
            }
        }
        let boxes_in = ctx.optional_artefact("boxes")?;
        let boxes_from = boxes_in.map(|a| a.producer.clone());
        let boxes = boxes_in.map(|a| a.path.clone());
        match (&boxes, p.oa_crop) {
            (Some(_), false) => {
                return Err(StageError::Input {
                    slot: "boxes".into(),
                    msg: "is bound but oa_crop = false; set oa_crop = true to crop inside the boxes, or unbind boxes".into(),
                })
            }
            (None, true) => {
                return Err(StageError::Input {
                    slot: "boxes".into(),
                    msg: "is not bound, but oa_crop = true needs a box file".into(),
                })
            }
            _ => {}
        }
        // The deliberate test bug: the boxes are bound and checked, then not used (plain random crops).
        let boxes = boxes.filter(|_| ctx.fault != Some(crate::suite::Fault::RetrainIgnoresBoxes));
        let model_cfg = p.model_config();
        let mut train_cfg = p.train_config();
        // The `precision` param wins; unset, the run's policy applies (in the fingerprint either way).
        train_cfg.precision = p.precision.unwrap_or(ctx.precision);
        let data = ctx.dataset("data")?;
        let bar = ctx.progress("train", None, ProgressUnit::Items("steps"));
        let (model, report, data_meta) = match &data.spec {
            DatasetSpec::Synth(s) if s.form != SynthForm::BgChallenge => {
                let set = data.synth()?;
                let boxes = boxes
                    .map(|path| read_synth_boxes(&path, &data.name, s, &set))
                    .transpose()?;
                // Mode soft: the bound CAM masks ride with view 1 instead of the true foreground.
                let masks = match &masks {
                    Some(dir) => Some(read_synth_soft_masks(dir, &data.name, &set)?),
                    None => None,
                };
                let (model, report) = train_on_synth_with(
                    &model_cfg,
                    &train_cfg,
                    &set,
                    boxes.as_deref(),
                    masks.as_ref(),
                    ctx.seed,
                    ctx.device,
                    &bar,
                )?;
                (model, report, None)
            }
            DatasetSpec::Synth(_) => {
                return Err(StageError::Input {
                    slot: "data".into(),
                    msg: format!(
                        "{} is a synthetic bg-challenge set; pretrain needs scenes, crops or a built split",
                        data.name
                    ),
                })
            }
            DatasetSpec::Index(_) => {
                let source: Arc<dyn Source> =
                    Arc::new(super::localize::index_source(data)?);
                let object_boxes = boxes
                    .map(|path| ObjectBoxes::load(&path, source.as_ref()))
                    .transpose()?;
                let opts = IndexSourceOptions {
                    boxes: object_boxes,
                    masks: masks.map_or(MaskInput::None, MaskInput::Folder),
                    workers: ctx.threads,
                    prefetch: 0,
                    skip_bad: false,
                    device: ctx.device,
                };
                let (model, report, _) =
                    train::train_on_index(
                    &model_cfg,
                    &train_cfg,
                    source.clone(),
                    opts,
                    ctx.seed,
                    &Checkpointing::default(),
                    &bar,
                )?;
                let meta = serde_json::json!({
                    "dataset": source.name(),
                    "images": source.len(),
                    "boxes": boxes_from,
                });
                (model, report, Some(meta))
            }
        };
        bar.finish();
        let mut meta = checkpoint_metadata(ctx.seed, &train_cfg);
        if let Some(d) = data_meta {
            meta.insert("contracam.train_data".into(), d.to_string());
        }
        let model_path = ctx.output("model")?;
        model.save(&model_path, &meta)?;
        ctx.write_json("report", &report)?;
        // Read back what a cached run would read: an output that does not parse is never published.
        let report: TrainReport = read_json(&ctx.output("report")?)?;
        let mut result = StageResult::default()
            .metric("final_loss", *report.epoch_loss.last().unwrap_or(&f64::NAN))
            .curve(
                "loss",
                Curve {
                    x_label: "epoch".into(),
                    y_label: "mean training loss".into(),
                    x: (1..=report.epoch_loss.len()).map(|e| e as f64).collect(),
                    y: report.epoch_loss.clone(),
                },
            );
        if let Some(fg) = report.view_foreground {
            result = result.metric("view_foreground", fg);
        }
        Ok(result)
    }
}

/// The smoke pipeline's train stage on a synthetic set: every image in memory, the true foreground riding
/// with view 1 (so the report measures what the views contained), boxes per image for OA-Crop.
pub fn train_on_synth(
    model_cfg: &ModelConfig,
    cfg: &TrainConfig,
    set: &SynthSet,
    boxes: Option<&[Vec<Region>]>,
    seed: u64,
    device: tch::Device,
    progress: &crate::util::progress::Progress,
) -> Result<(ContrastiveModel, TrainReport), TrainError> {
    train_on_synth_with(model_cfg, cfg, set, boxes, None, seed, device, progress)
}

/// [`train_on_synth`] with `masks` ((N, H, W) in [0, 1], e.g. the soft CAM masks of a localize stage)
/// riding with view 1 instead of the true foreground: BG-Mixup mixes through them, and the report's
/// `view_foreground` is then their mean over view 1.
#[allow(clippy::too_many_arguments)]
pub fn train_on_synth_with(
    model_cfg: &ModelConfig,
    cfg: &TrainConfig,
    set: &SynthSet,
    boxes: Option<&[Vec<Region>]>,
    masks: Option<&tch::Tensor>,
    seed: u64,
    device: tch::Device,
    progress: &crate::util::progress::Progress,
) -> Result<(ContrastiveModel, TrainReport), TrainError> {
    let images = set.images_tensor();
    let foreground = match masks {
        Some(m) => m.shallow_clone(),
        None => set.foreground_tensor().squeeze_dim(1),
    };
    let data = TrainData {
        images: &images,
        boxes,
        masks: Some(&foreground),
    };
    train::train(model_cfg, cfg, &data, seed, device, progress)
}

/// The soft masks a localize stage wrote for the scenes of a synthetic set (`<dir>/<i>.png`, 8-bit, the
/// scene's size), as (N, H, W) in [0, 1] (value / 255, as the loader reads a mask folder). A missing,
/// unreadable or wrongly sized file is an error naming it.
fn read_synth_soft_masks(
    dir: &Path,
    name: &str,
    set: &SynthSet,
) -> Result<tch::Tensor, StageError> {
    let s = set.size as u32;
    let mut px: Vec<u8> = Vec::with_capacity(set.len() * (s * s) as usize);
    for i in 0..set.len() {
        let path = dir.join(format!("{i}.png"));
        let bytes = std::fs::read(&path).map_err(|e| {
            StageError::io(
                &path,
                format!(
                    "{e} (the soft mask of scene {i} of dataset '{name}': bind masks to the soft_masks \
                     of a localize stage over the same scenes)"
                ),
            )
        })?;
        let img = crate::data::loader::decode::decode_luma(&bytes)
            .map_err(|e| StageError::io(&path, e))?;
        if img.dimensions() != (s, s) {
            return Err(StageError::io(
                &path,
                format!(
                    "{}x{} pixels; the scenes of dataset '{name}' are {s}x{s}",
                    img.width(),
                    img.height()
                ),
            ));
        }
        px.extend_from_slice(img.as_raw());
    }
    let n = set.len() as i64;
    Ok(tch::Tensor::from_slice(&px)
        .view([n, s as i64, s as i64])
        .to_kind(tch::Kind::Float)
        / 255.0)
}

/// The checkpoint metadata the smoke pipeline writes: the run's seed and the training recipe (nothing
/// that varies between runs, so the same seed gives the same bytes).
pub fn checkpoint_metadata(seed: u64, cfg: &TrainConfig) -> HashMap<String, String> {
    HashMap::from([
        ("contracam.seed".to_string(), seed.to_string()),
        (
            "contracam.train".to_string(),
            serde_json::to_string(cfg).expect("a train config serialises"),
        ),
    ])
}

/// Boxes per image of a synthetic set from a box file: a JSON list per image of normalised
/// `[x1, y1, x2, y2]` (as `train ssl --boxes` reads), an object holding that list under `boxes` (the smoke
/// pipeline's `boxes.json`), or the official text format with the sample indices as ids.
fn read_synth_boxes(
    path: &Path,
    name: &str,
    spec: &SynthDataset,
    set: &SynthSet,
) -> Result<Vec<Vec<Region>>, StageError> {
    let text = std::fs::read_to_string(path).map_err(|e| StageError::io(path, e))?;
    let first = text.trim_start().chars().next();
    let boxes: Vec<Vec<Region>> = if matches!(first, Some('[') | Some('{')) {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Json {
            List(Vec<Vec<Region>>),
            Object { boxes: Vec<Vec<Region>> },
        }
        match serde_json::from_str::<Json>(&text) {
            Ok(Json::List(b)) | Ok(Json::Object { boxes: b }) => b,
            Err(e) => {
                return Err(StageError::io(
                    path,
                    format!("expected a JSON list per image of [x1, y1, x2, y2] (or an object with that list under \"boxes\"): {e}"),
                ))
            }
        }
    } else {
        let kind = match spec.form {
            SynthForm::Crops => SynthKind::Crops {
                split: spec.split.clone(),
            },
            _ => SynthKind::Scenes {
                split: spec.split.clone(),
            },
        };
        let source = SynthSource::new(spec.synth.clone(), spec.seed, kind, set.len())?;
        let entries = read_box_file_checked(path)?;
        let ob = ObjectBoxes::match_entries(path, entries, &source)?;
        (0..set.len()).map(|i| ob.boxes(i).to_vec()).collect()
    };
    if boxes.len() != set.len() {
        return Err(StageError::io(
            path,
            format!(
                "{} box lists for the {} images of dataset '{}'",
                boxes.len(),
                set.len(),
                name
            ),
        ));
    }
    validate_regions(&boxes).map_err(|e| StageError::io(path, e))?;
    Ok(boxes)
}
