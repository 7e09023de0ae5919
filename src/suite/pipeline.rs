//! The synthetic OA-Crop pipeline as cached stages: pretrain → evaluate (ContraCAM mask mIoU, linear probe)
//! → ContraCAM boxes → retrain with object-aware random crop → evaluate again.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::cache::{fingerprint, FingerprintInput, Published, StageCache};
use super::config::SuiteConfig;
use super::report::StageTiming;
use super::stage::{device_class, ArtefactKind, Precision, Slot, StageError, StageResult};
use super::SuiteError;
use crate::data::synth::{self, SynthSet};
use crate::eval::box_recall::box_recall;
use crate::eval::encode::encode;
use crate::eval::linear::linear_eval_observed;
use crate::eval::miou::mask_iou;
use crate::localize::boxes::{extract_boxes, BoxOptions};
use crate::localize::mask_clean::{clean_mask, CleanOptions};
use crate::localize::{contrastive_cam, CamConfig};
use crate::model::ContrastiveModel;
use crate::train::augment::eval_transform;
use crate::train::{train, TrainData, TrainReport};
use crate::util::progress::{Progress, Unit};

/// The data every stage draws from, generated in memory from the suite's seed.
pub struct SuiteData {
    pub train_scenes: SynthSet,
    pub test_scenes: SynthSet,
    pub crops: [SynthSet; 3],
}

impl SuiteData {
    pub fn generate(cfg: &SuiteConfig) -> Self {
        let (d, s, seed) = (&cfg.data, &cfg.sizes, cfg.seed);
        Self {
            train_scenes: synth::scenes(d, seed, "train", s.train_scenes),
            test_scenes: synth::scenes(d, seed, "test", s.test_scenes),
            crops: [
                synth::crops(d, seed, "train", s.crops_train),
                synth::crops(d, seed, "val", s.crops_val),
                synth::crops(d, seed, "test", s.crops_test),
            ],
        }
    }
}

pub struct Pipeline<'a> {
    pub cfg: &'a SuiteConfig,
    pub data: &'a SuiteData,
    pub cache: &'a StageCache,
    /// Stages (names as printed) to recompute even when a published one matches.
    pub refresh: std::collections::BTreeSet<String>,
    pub device: Device,
    pub progress: bool,
    pub fault: Option<Fault>,
    pub timings: Vec<StageTiming>,
    pub metrics: BTreeMap<String, f64>,
}

/// Evaluation metrics copied into the run (the validation accuracy stays in the stage's result).
const EVAL_RECORDED: &[(&str, &str)] = &[("cam_miou", "cam_miou"), ("linear_acc", "linear_acc")];

#[derive(Serialize, Deserialize)]
struct EvalMetrics {
    cam_miou: f64,
    linear_acc: f64,
    linear_val_acc: f64,
}

#[derive(Serialize, Deserialize)]
struct BoxesOut {
    boxes: Vec<Vec<[f64; 4]>>,
    recall50: f64,
    per_image: f64,
}

/// Deliberate bugs, so a test can show that a golden tells a broken pipeline from a working one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Retraining receives the ContraCAM boxes and trains without them (plain random resized crops).
    RetrainIgnoresBoxes,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::RetrainIgnoresBoxes => "retrain-ignores-boxes",
        }
    }
}

/// The fingerprints of the pipeline's stages, known before any stage runs: each covers the parameters the
/// stage reads (and nothing it does not), its inputs' fingerprints, the seed, the device class and the
/// precision policy, so a GPU run never reuses CPU stages and an `eval.input_size` change redoes the boxes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageFingerprints {
    pub pretrain: String,
    pub evaluate_vanilla: String,
    pub boxes: String,
    pub retrain: String,
    pub evaluate_oa_crop: String,
}

/// The pipeline computes in float32 throughout.
pub const PRECISION: Precision = Precision::Fp32;

/// Bump a kind's version when the same parameters and inputs would give different outputs.
// 2: the train stages report `view_foreground`, measured inside the training loop.
const KIND_VERSION: u32 = 2;

impl StageFingerprints {
    pub fn new(cfg: &SuiteConfig, device: Device, fault: Option<Fault>) -> Self {
        let input = input_size(cfg);
        let fp = |kind: &str, params: &serde_json::Value, inputs: &[(&str, &str)]| {
            fingerprint(&FingerprintInput {
                kind,
                kind_version: KIND_VERSION,
                params,
                inputs: inputs.iter().copied().collect(),
                seed: cfg.seed,
                device_class: device_class(device),
                precision: PRECISION,
            })
        };
        // Training reads the training scenes (data + count), the model and the training recipe.
        let train_params = |oa_crop: bool| serde_json::json!({"data": cfg.data, "train_scenes": cfg.sizes.train_scenes, "model": cfg.model, "train": cfg.train, "oa_crop": oa_crop});
        // Evaluation reads the test scenes and the crops (data + sizes), the mask CAM settings, the threshold
        // and batch size, the input size and the linear-probe settings.
        let eval_params = serde_json::json!({"data": cfg.data, "sizes": cfg.sizes, "localize": cfg.localize, "linear": cfg.eval.linear, "input": input});
        // Boxes read the training scenes, the box CAM settings, threshold, batch size, box options and the
        // input size the CAMs are computed at.
        let box_params = serde_json::json!({"data": cfg.data, "train_scenes": cfg.sizes.train_scenes, "localize": cfg.localize, "input": input});
        let pretrain = fp("pretrain", &train_params(false), &[]);
        let evaluate_vanilla = fp("evaluate", &eval_params, &[("model", &pretrain)]);
        let boxes = fp("boxes", &box_params, &[("model", &pretrain)]);
        // A faulty retrain never shares a cache entry with a correct one.
        let mut retrain_params = train_params(true);
        if let Some(f) = fault {
            retrain_params["fault"] = f.name().into();
        }
        let retrain = fp("retrain", &retrain_params, &[("boxes", &boxes)]);
        let evaluate_oa_crop = fp("evaluate", &eval_params, &[("model", &retrain)]);
        StageFingerprints {
            pretrain,
            evaluate_vanilla,
            boxes,
            retrain,
            evaluate_oa_crop,
        }
    }
}

/// Every metric id the pipeline emits for `cfg`: what a golden may name.
pub fn metric_ids(cfg: &SuiteConfig) -> Vec<String> {
    let mut v = vec!["baseline.center_box_miou".to_string()];
    let mut stages = vec!["vanilla"];
    if cfg.retrain.oa_crop {
        v.push("boxes.recall50".into());
        v.push("boxes.per_image".into());
        stages.push("oa_crop");
    }
    for s in stages {
        for (_, m) in TRAIN_RECORDED.iter().chain(EVAL_RECORDED) {
            v.push(format!("{s}.{m}"));
        }
    }
    v.sort();
    v
}

/// Input side for evaluation and CAMs: `eval.input_size`, else the training view size.
pub fn input_size(cfg: &SuiteConfig) -> i64 {
    cfg.eval.input_size.unwrap_or(cfg.train.augment.output_size)
}

/// What each stage kind writes and reports: the cache checks these before it publishes a stage.
pub(super) const TRAIN_OUT: &[Slot] = &[
    Slot::file("model", ArtefactKind::ModelCheckpoint, "model.safetensors"),
    Slot::file("report", ArtefactKind::Json, "train_report.json"),
];
const TRAIN_METRICS: &[&str] = &["final_loss", "view_foreground"];
/// (stage metric, suite metric suffix) of a train stage.
const TRAIN_RECORDED: &[(&str, &str)] = &[
    ("final_loss", "final_loss"),
    ("view_foreground", "view_foreground"),
];
pub(super) const EVAL_OUT: &[Slot] = &[Slot::file("metrics", ArtefactKind::Json, "metrics.json")];
const EVAL_METRICS: &[&str] = &["cam_miou", "linear_acc", "linear_val_acc"];
pub(super) const BOXES_OUT: &[Slot] = &[Slot::file("boxes", ArtefactKind::BoxFile, "boxes.json")];
const BOXES_METRICS: &[&str] = &["recall50", "per_image"];

impl Pipeline<'_> {
    pub fn run(&mut self) -> Result<(), SuiteError> {
        let cfg = self.cfg;
        refuse_train_precision(cfg)?;
        let fps = StageFingerprints::new(cfg, self.device, self.fault);
        self.metrics.insert(
            "baseline.center_box_miou".into(),
            center_box_miou(&self.data.test_scenes),
        );

        let pre = self.stage(
            "pretrain",
            &fps.pretrain,
            TRAIN_OUT,
            TRAIN_METRICS,
            |dir, p| p.train_stage(dir, None),
        )?;
        self.record("vanilla", &pre, TRAIN_RECORDED);

        let ev = self.stage(
            "evaluate-vanilla",
            &fps.evaluate_vanilla,
            EVAL_OUT,
            EVAL_METRICS,
            |dir, p| p.eval_stage(dir, &pre.dir.join("model.safetensors")),
        )?;
        self.record("vanilla", &ev, EVAL_RECORDED);

        if !cfg.retrain.oa_crop {
            return Ok(());
        }
        let bx = self.stage("boxes", &fps.boxes, BOXES_OUT, BOXES_METRICS, |dir, p| {
            p.boxes_stage(dir, &pre.dir.join("model.safetensors"))
        })?;
        self.record(
            "boxes",
            &bx,
            &[("recall50", "recall50"), ("per_image", "per_image")],
        );
        let boxes: BoxesOut = read_json(&bx.dir.join("boxes.json"))?;

        let re = self.stage(
            "retrain-oa-crop",
            &fps.retrain,
            TRAIN_OUT,
            TRAIN_METRICS,
            |dir, p| {
                let given = match p.fault {
                    Some(Fault::RetrainIgnoresBoxes) => None,
                    None => Some(boxes.boxes.as_slice()),
                };
                p.train_stage(dir, given)
            },
        )?;
        self.record("oa_crop", &re, TRAIN_RECORDED);

        let ev2 = self.stage(
            "evaluate-oa-crop",
            &fps.evaluate_oa_crop,
            EVAL_OUT,
            EVAL_METRICS,
            |dir, p| p.eval_stage(dir, &re.dir.join("model.safetensors")),
        )?;
        self.record("oa_crop", &ev2, EVAL_RECORDED);
        Ok(())
    }

    fn input_size(&self) -> i64 {
        input_size(self.cfg)
    }

    /// Reuses the published stage with fingerprint `fp` (its outputs intact), or builds it: the cache
    /// validates what `build` wrote and the metrics it returned before publishing anything.
    fn stage(
        &mut self,
        name: &str,
        fp: &str,
        outputs: &[Slot],
        metrics: &[&str],
        build: impl FnOnce(&Path, &Self) -> Result<StageResult, SuiteError>,
    ) -> Result<Published, SuiteError> {
        let n = self.timings.len() + 1;
        let start = Instant::now();
        eprintln!("[stage {n}] {name} ({})", &fp[..12]);
        let this: &Self = self;
        let cached = if self.refresh.contains(name) {
            None
        } else {
            self.cache.lookup_verified(name, fp, outputs)
        };
        let was_cached = cached.is_some();
        let out = match cached {
            Some(p) => p,
            None => self.cache.build(name, name, fp, outputs, metrics, |dir| {
                build(dir, this).map_err(|e| StageError::Failed(e.to_string()))
            })?,
        };
        let seconds = start.elapsed().as_secs_f64();
        eprintln!(
            "[stage {n}] {name}: {} in {seconds:.1} s",
            if was_cached { "cached" } else { "done" }
        );
        self.timings.push(StageTiming {
            stage: name.into(),
            fingerprint: fp.into(),
            cached: was_cached,
            seconds,
        });
        Ok(out)
    }

    /// Copies stage metrics into the run's as `<prefix>.<name>`.
    fn record(&mut self, prefix: &str, out: &Published, names: &[(&str, &str)]) {
        for (from, to) in names {
            let v = out.result.metrics.get(*from).copied().unwrap_or(f64::NAN);
            self.metrics.insert(format!("{prefix}.{to}"), v);
        }
    }

    /// Progress for part of a stage: a bar on a terminal, log lines with rate and ETA otherwise (the
    /// stages run for minutes), nothing when the run is quiet.
    fn bar(&self, len: Option<u64>, what: &str, unit: &'static str) -> Progress {
        Progress::new(what, len, Unit::Items(unit), !self.progress)
    }

    fn train_stage(
        &self,
        dir: &Path,
        boxes: Option<&[Vec<[f64; 4]>]>,
    ) -> Result<StageResult, SuiteError> {
        let images = self.data.train_scenes.images_tensor();
        // The true foreground rides with view 1: `view_foreground` is what the trained views contained.
        let foreground = self.data.train_scenes.foreground_tensor().squeeze_dim(1);
        let bar = self.bar(None, "train", "steps");
        let data = TrainData {
            images: &images,
            boxes,
            masks: Some(&foreground),
        };
        let (model, report) = train(
            &self.cfg.model,
            &self.cfg.train,
            &data,
            self.cfg.seed,
            self.device,
            &bar,
        )?;
        bar.finish();
        let meta = std::collections::HashMap::from([
            ("contracam.seed".to_string(), self.cfg.seed.to_string()),
            (
                "contracam.train".to_string(),
                serde_json::to_string(&self.cfg.train).expect("serialises"),
            ),
        ]);
        model.save(&dir.join("model.safetensors"), &meta)?;
        write_json(&dir.join("train_report.json"), &report)?;
        // Read back what a cached run would read: an output that does not parse is never published.
        let report: TrainReport = read_json(&dir.join("train_report.json"))?;
        let loss = *report.epoch_loss.last().unwrap_or(&f64::NAN);
        let fg = report.view_foreground.unwrap_or(f64::NAN);
        Ok(StageResult::default()
            .metric("final_loss", loss)
            .metric("view_foreground", fg))
    }

    /// CAMs of `set` in batches of the configured size (the negatives of each image).
    fn cams(
        &self,
        model: &ContrastiveModel,
        set: &SynthSet,
        cam: &CamConfig,
        what: &str,
    ) -> Result<Tensor, SuiteError> {
        let images = set.images_tensor();
        let b = self.cfg.localize.batch_size as i64;
        let bar = self.bar(Some(set.len() as u64), what, "images");
        let mut outs = Vec::new();
        for chunk in images.split(b, 0) {
            let x = eval_transform(&chunk, self.input_size());
            let c = contrastive_cam(model, &x, cam)?;
            // Back to the scene resolution for comparison with ground truth.
            let c = c.upsample_bilinear2d([set.size as i64, set.size as i64], false, None, None);
            outs.push(c.to_device(Device::Cpu));
            bar.inc(chunk.size()[0] as u64);
        }
        bar.finish();
        Ok(Tensor::cat(&outs, 0))
    }

    fn eval_stage(&self, dir: &Path, weights: &Path) -> Result<StageResult, SuiteError> {
        let model = ContrastiveModel::load(weights, self.device)?;
        let set = &self.data.test_scenes;
        let cams = self.cams(&model, set, &self.cfg.localize.masks, "cam")?;
        let thr = self.cfg.localize.threshold;
        let pred = cams.gt(thr).to_kind(Kind::Float);
        let gt = set.foreground_tensor();
        let cam_miou = per_image_miou(&pred, &gt)?;
        let [tr, va, te] = &self.data.crops;
        let size = self.input_size();
        let f = |s: &SynthSet| encode(&model, &s.images_tensor(), size, 256);
        let (ftr, fva, fte) = (f(tr), f(va), f(te));
        let sweep = self.bar(
            Some(self.cfg.eval.linear.weight_decays.len() as u64),
            "linear eval",
            "weight decays",
        );
        let lin = linear_eval_observed(
            &ftr,
            &tr.labels_tensor(),
            &fva,
            &va.labels_tensor(),
            &fte,
            &te.labels_tensor(),
            &self.cfg.eval.linear,
            &mut |_, _, p| {
                sweep.println(&p.describe());
                sweep.inc(1);
            },
        )?;
        sweep.finish();
        let m = EvalMetrics {
            cam_miou,
            linear_acc: lin.test_accuracy,
            linear_val_acc: lin.val_accuracy,
        };
        write_json(&dir.join("metrics.json"), &m)?;
        let m: EvalMetrics = read_json(&dir.join("metrics.json"))?;
        Ok(StageResult::default()
            .metric("cam_miou", m.cam_miou)
            .metric("linear_acc", m.linear_acc)
            .metric("linear_val_acc", m.linear_val_acc))
    }

    fn boxes_stage(&self, dir: &Path, weights: &Path) -> Result<StageResult, SuiteError> {
        let model = ContrastiveModel::load(weights, self.device)?;
        let set = &self.data.train_scenes;
        let loc = &self.cfg.localize;
        let cams = self.cams(&model, set, &loc.boxes, "boxes")?;
        let s = set.size;
        let flat: Vec<f32> =
            Vec::<f32>::try_from(cams.gt(loc.threshold).to_kind(Kind::Float).flatten(0, -1))
                .map_err(|e| SuiteError::Other(format!("CAM to host: {e}")))?;
        // The official save_box recipe: clean_mask (1 %) then extract_boxes (all RETR_TREE contours).
        let crop_opts = BoxOptions {
            min_area_frac: loc.min_area_frac,
            margin: loc.margin,
            ..BoxOptions::default()
        };
        let tight = BoxOptions {
            margin: 0.0,
            ..crop_opts.clone()
        };
        let (mut boxes, mut raw) = (Vec::new(), Vec::new());
        for img in flat.chunks(s * s) {
            let mask = clean_mask(img, s, s, &CleanOptions::boxes());
            boxes.push(extract_boxes(&mask, s, s, &crop_opts));
            raw.push(extract_boxes(&mask, s, s, &tight));
        }
        let recall50 = box_recall(&raw, &set.boxes_normalized(), 0.5);
        let per_image =
            boxes.iter().map(|b| b.len()).sum::<usize>() as f64 / boxes.len().max(1) as f64;
        write_json(
            &dir.join("boxes.json"),
            &BoxesOut {
                boxes,
                recall50,
                per_image,
            },
        )?;
        let b: BoxesOut = read_json(&dir.join("boxes.json"))?;
        Ok(StageResult::default()
            .metric("recall50", b.recall50)
            .metric("per_image", b.per_image))
    }
}

/// Mean over images of the foreground IoU (official protocol) of (N, 1, H, W) masks.
pub fn per_image_miou(pred: &Tensor, gt: &Tensor) -> Result<f64, SuiteError> {
    if pred.size() != gt.size() || pred.size().first().copied().unwrap_or(0) == 0 {
        return Err(SuiteError::Other(format!(
            "mIoU: prediction {:?} and ground truth {:?} must be the same non-empty (N, 1, H, W)",
            pred.size(),
            gt.size()
        )));
    }
    let host = |t: &Tensor| {
        Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1))
            .map_err(|e| SuiteError::Other(format!("mIoU: masks to host: {e}")))
    };
    let (p, g) = (host(pred)?, host(gt)?);
    let per = p.len() / pred.size()[0] as usize;
    let ious: Vec<f64> = p
        .chunks(per)
        .zip(g.chunks(per))
        .map(|(a, b)| mask_iou(a, b))
        .collect();
    Ok(ious.iter().sum::<f64>() / ious.len() as f64)
}

/// mIoU of a fixed centred box covering the middle half of each side: the no-learning baseline.
pub fn center_box_miou(set: &SynthSet) -> f64 {
    let s = set.size;
    let mut bx = vec![0f32; s * s];
    for y in s / 4..(3 * s).div_ceil(4) {
        for x in s / 4..(3 * s).div_ceil(4) {
            bx[y * s + x] = 1.0;
        }
    }
    let ious: Vec<f64> = set
        .instance_masks
        .iter()
        .map(|m| {
            mask_iou(
                &bx,
                &m.iter().map(|&v| (v != 0) as u8 as f32).collect::<Vec<_>>(),
            )
        })
        .collect();
    ious.iter().sum::<f64>() / ious.len().max(1) as f64
}

/// The smoke pipeline computes in fp32 and the contiguous layout (its results say so); bf16-mixed and
/// channels_last are for `train ssl` and a graph suite's `pretrain` stage.
fn refuse_train_precision(cfg: &SuiteConfig) -> Result<(), SuiteError> {
    let t = &cfg.train;
    if t.precision.is_fp32() && !t.channels_last {
        return Ok(());
    }
    let (key, value) = if t.precision.is_fp32() {
        ("train.channels_last", "true".to_string())
    } else {
        ("train.precision", format!("\"{}\"", t.precision))
    };
    Err(SuiteError::Other(format!(
        "{key} = {value}: the smoke pipeline trains in fp32 and the contiguous layout only; remove it, or \
         train with `train ssl --precision bf16-mixed --channels-last` or a graph suite's pretrain stage \
         (params precision, channels_last)"
    )))
}

fn write_json(path: &Path, v: &impl Serialize) -> Result<(), SuiteError> {
    let s = serde_json::to_string_pretty(v).expect("serialises");
    std::fs::write(path, s).map_err(|e| SuiteError::Io {
        path: path.into(),
        msg: e.to_string(),
    })
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, SuiteError> {
    let s = std::fs::read_to_string(path).map_err(|e| SuiteError::Io {
        path: path.into(),
        msg: e.to_string(),
    })?;
    serde_json::from_str(&s).map_err(|e| SuiteError::Io {
        path: path.into(),
        msg: format!("invalid stage output: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smoke() -> SuiteConfig {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("suites/smoke.toml");
        super::super::config::load(&p).unwrap().config
    }

    #[test]
    fn device_class_is_in_every_fingerprint() {
        let cfg = smoke();
        let cpu = StageFingerprints::new(&cfg, Device::Cpu, None);
        let gpu = StageFingerprints::new(&cfg, Device::Cuda(0), None);
        let other_gpu = StageFingerprints::new(&cfg, Device::Cuda(1), None);
        for (c, g) in [
            (&cpu.pretrain, &gpu.pretrain),
            (&cpu.evaluate_vanilla, &gpu.evaluate_vanilla),
            (&cpu.boxes, &gpu.boxes),
            (&cpu.retrain, &gpu.retrain),
            (&cpu.evaluate_oa_crop, &gpu.evaluate_oa_crop),
        ] {
            assert_ne!(c, g);
        }
        // The class, not the ordinal: any GPU may reuse another GPU's stages.
        assert_eq!(gpu, other_gpu);
        assert_eq!(cpu, StageFingerprints::new(&cfg, Device::Cpu, None));
    }

    #[test]
    fn a_fault_changes_only_the_stages_it_breaks() {
        let cfg = smoke();
        let ok = StageFingerprints::new(&cfg, Device::Cpu, None);
        let bad = StageFingerprints::new(&cfg, Device::Cpu, Some(Fault::RetrainIgnoresBoxes));
        assert_eq!(
            (&ok.pretrain, &ok.evaluate_vanilla, &ok.boxes),
            (&bad.pretrain, &bad.evaluate_vanilla, &bad.boxes)
        );
        assert_ne!(ok.retrain, bad.retrain);
        assert_ne!(ok.evaluate_oa_crop, bad.evaluate_oa_crop);
    }

    #[test]
    fn each_stage_fingerprints_the_parameters_it_reads() {
        let base = smoke();
        let fp = |f: &dyn Fn(&mut SuiteConfig)| {
            let mut c = base.clone();
            f(&mut c);
            StageFingerprints::new(&c, Device::Cpu, None)
        };
        let b = fp(&|_| {});
        // The CAM input size: boxes and evaluation change, training does not.
        let input = fp(&|c| c.eval.input_size = Some(c.train.augment.output_size + 16));
        assert_eq!(input.pretrain, b.pretrain);
        assert_ne!(input.boxes, b.boxes);
        assert_ne!(input.evaluate_vanilla, b.evaluate_vanilla);
        assert_ne!(input.retrain, b.retrain, "retraining reads the boxes");
        // The default input size is the training view size: spelling it out changes nothing.
        let same = fp(&|c| c.eval.input_size = Some(c.train.augment.output_size));
        assert_eq!(same, b);
        // The linear probe only touches evaluation.
        let lin = fp(&|c| c.eval.linear.max_iter += 1);
        assert_eq!(
            (&lin.pretrain, &lin.boxes, &lin.retrain),
            (&b.pretrain, &b.boxes, &b.retrain)
        );
        assert_ne!(lin.evaluate_vanilla, b.evaluate_vanilla);
        assert_ne!(lin.evaluate_oa_crop, b.evaluate_oa_crop);
        // Box options.
        let margin = fp(&|c| c.localize.margin += 0.1);
        assert_eq!(margin.pretrain, b.pretrain);
        assert_ne!(margin.boxes, b.boxes);
        // The seed changes everything.
        let seed = fp(&|c| c.seed += 1);
        assert_ne!(seed.pretrain, b.pretrain);
        assert_ne!(seed.boxes, b.boxes);
        assert_ne!(seed.evaluate_vanilla, b.evaluate_vanilla);
        // Test-set size is read by evaluation only.
        let test = fp(&|c| c.sizes.test_scenes += 1);
        assert_eq!((&test.pretrain, &test.boxes), (&b.pretrain, &b.boxes));
        assert_ne!(test.evaluate_vanilla, b.evaluate_vanilla);
    }
}
