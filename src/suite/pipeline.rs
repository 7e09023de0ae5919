//! The synthetic OA-Crop pipeline as cached stages: pretrain → evaluate (ContraCAM mask mIoU, linear probe)
//! → ContraCAM boxes → retrain with object-aware random crop → evaluate again.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::config::SuiteConfig;
use super::legacy_cache::{fingerprint, Outcome, StageCache};
use super::report::StageTiming;
use super::SuiteError;
use crate::data::synth::{self, SynthSet};
use crate::eval::box_recall::box_recall;
use crate::eval::encode::encode;
use crate::eval::linear::linear_eval;
use crate::eval::miou::mask_iou;
use crate::localize::boxes::{extract_boxes, BoxOptions};
use crate::localize::mask_clean::{clean_mask, CleanOptions};
use crate::localize::{contrastive_cam, CamConfig};
use crate::model::ContrastiveModel;
use crate::train::augment::eval_transform;
use crate::train::diagnostics::view_foreground;
use crate::train::{train, TrainData, TrainReport};

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
    pub device: Device,
    pub progress: bool,
    pub timings: Vec<StageTiming>,
    pub metrics: BTreeMap<String, f64>,
}

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

impl Pipeline<'_> {
    pub fn run(&mut self) -> Result<(), SuiteError> {
        let cfg = self.cfg;
        let input = self.input_size();
        self.metrics.insert(
            "baseline.center_box_miou".into(),
            center_box_miou(&self.data.test_scenes),
        );

        let pre_params = serde_json::json!({"data": cfg.data, "train_scenes": cfg.sizes.train_scenes, "model": cfg.model, "train": cfg.train, "seed": cfg.seed, "oa_crop": false});
        let pre_fp = fingerprint("pretrain", &pre_params, &[]);
        let pre = self.stage("pretrain", &pre_fp, |dir, p| p.train_stage(dir, None))?;
        let report: TrainReport = read_json(&pre.dir().join("train_report.json"))?;
        self.metrics.insert(
            "vanilla.final_loss".into(),
            *report.epoch_loss.last().unwrap_or(&f64::NAN),
        );
        self.record_view_foreground("vanilla", None)?;

        let eval_params = serde_json::json!({"data": cfg.data, "sizes": cfg.sizes, "localize": cfg.localize, "eval": cfg.eval, "input": input});
        let ev_fp = fingerprint("evaluate", &eval_params, &[&pre_fp]);
        let ev = self.stage("evaluate-vanilla", &ev_fp, |dir, p| {
            p.eval_stage(dir, &pre.dir().join("model.safetensors"))
        })?;
        self.record_eval("vanilla", &ev)?;

        if !cfg.retrain.oa_crop {
            return Ok(());
        }
        let box_params = serde_json::json!({"data": cfg.data, "train_scenes": cfg.sizes.train_scenes, "localize": cfg.localize});
        let box_fp = fingerprint("boxes", &box_params, &[&pre_fp]);
        let bx = self.stage("boxes", &box_fp, |dir, p| {
            p.boxes_stage(dir, &pre.dir().join("model.safetensors"))
        })?;
        let boxes: BoxesOut = read_json(&bx.dir().join("boxes.json"))?;
        self.metrics.insert("boxes.recall50".into(), boxes.recall50);
        self.metrics
            .insert("boxes.per_image".into(), boxes.per_image);

        let re_params = serde_json::json!({"data": cfg.data, "train_scenes": cfg.sizes.train_scenes, "model": cfg.model, "train": cfg.train, "seed": cfg.seed, "oa_crop": true});
        let re_fp = fingerprint("retrain", &re_params, &[&box_fp]);
        let re = self.stage("retrain-oa-crop", &re_fp, |dir, p| {
            p.train_stage(dir, Some(&boxes.boxes))
        })?;
        let report: TrainReport = read_json(&re.dir().join("train_report.json"))?;
        self.metrics.insert(
            "oa_crop.final_loss".into(),
            *report.epoch_loss.last().unwrap_or(&f64::NAN),
        );
        self.record_view_foreground("oa_crop", Some(&boxes.boxes))?;

        let ev2_fp = fingerprint("evaluate", &eval_params, &[&re_fp]);
        let ev2 = self.stage("evaluate-oa-crop", &ev2_fp, |dir, p| {
            p.eval_stage(dir, &re.dir().join("model.safetensors"))
        })?;
        self.record_eval("oa_crop", &ev2)?;
        Ok(())
    }

    fn input_size(&self) -> i64 {
        self.cfg
            .eval
            .input_size
            .unwrap_or(self.cfg.train.augment.output_size)
    }

    fn stage(
        &mut self,
        name: &str,
        fp: &str,
        build: impl FnOnce(&Path, &Self) -> Result<(), SuiteError>,
    ) -> Result<Outcome, SuiteError> {
        let n = self.timings.len() + 1;
        let start = Instant::now();
        eprintln!("[stage {n}] {name} ({})", &fp[..12]);
        let this: &Self = self;
        let out = self.cache.get_or_run(name, fp, |dir| build(dir, this))?;
        let seconds = start.elapsed().as_secs_f64();
        eprintln!(
            "[stage {n}] {name}: {} in {seconds:.1} s",
            if out.cached() { "cached" } else { "done" }
        );
        self.timings.push(StageTiming {
            stage: name.into(),
            fingerprint: fp.into(),
            cached: out.cached(),
            seconds,
        });
        Ok(out)
    }

    fn record_eval(&mut self, prefix: &str, out: &Outcome) -> Result<(), SuiteError> {
        let m: EvalMetrics = read_json(&out.dir().join("metrics.json"))?;
        self.metrics
            .insert(format!("{prefix}.cam_miou"), m.cam_miou);
        self.metrics
            .insert(format!("{prefix}.linear_acc"), m.linear_acc);
        Ok(())
    }

    fn bar(&self, len: u64, what: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template(
                "  {prefix} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(what.to_string());
        bar
    }

    /// `<prefix>.view_foreground`: the foreground fraction of the training views (no training; a second pass
    /// over the same seeded crops). It tells whether retraining used its boxes: without them it equals the
    /// vanilla value exactly.
    fn record_view_foreground(
        &mut self,
        prefix: &str,
        boxes: Option<&[Vec<[f64; 4]>]>,
    ) -> Result<(), SuiteError> {
        let set = &self.data.train_scenes;
        let fg = set.foreground_tensor().squeeze_dim(1);
        let v = view_foreground(
            &set.images_tensor(),
            &fg,
            boxes,
            &self.cfg.train,
            self.cfg.seed,
        )?;
        self.metrics.insert(format!("{prefix}.view_foreground"), v);
        Ok(())
    }

    fn train_stage(&self, dir: &Path, boxes: Option<&[Vec<[f64; 4]>]>) -> Result<(), SuiteError> {
        let images = self.data.train_scenes.images_tensor();
        let bar = self.bar(0, "train");
        let data = TrainData {
            images: &images,
            boxes,
        };
        let (model, report) = train(
            &self.cfg.model,
            &self.cfg.train,
            &data,
            self.cfg.seed,
            self.device,
            &bar,
        )?;
        bar.finish_and_clear();
        let meta = std::collections::HashMap::from([
            ("contracam.seed".to_string(), self.cfg.seed.to_string()),
            (
                "contracam.train".to_string(),
                serde_json::to_string(&self.cfg.train).expect("serialises"),
            ),
        ]);
        model.save(&dir.join("model.safetensors"), &meta)?;
        write_json(&dir.join("train_report.json"), &report)
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
        let bar = self.bar(set.len() as u64, what);
        let mut outs = Vec::new();
        for chunk in images.split(b, 0) {
            let x = eval_transform(&chunk, self.input_size());
            let c = contrastive_cam(model, &x, cam)?;
            // Back to the scene resolution for comparison with ground truth.
            let c = c.upsample_bilinear2d([set.size as i64, set.size as i64], false, None, None);
            outs.push(c.to_device(Device::Cpu));
            bar.inc(chunk.size()[0] as u64);
        }
        bar.finish_and_clear();
        Ok(Tensor::cat(&outs, 0))
    }

    fn eval_stage(&self, dir: &Path, weights: &Path) -> Result<(), SuiteError> {
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
        let lin = linear_eval(
            &ftr,
            &tr.labels_tensor(),
            &fva,
            &va.labels_tensor(),
            &fte,
            &te.labels_tensor(),
            &self.cfg.eval.linear,
        )?;
        let m = EvalMetrics {
            cam_miou,
            linear_acc: lin.test_accuracy,
            linear_val_acc: lin.val_accuracy,
        };
        write_json(&dir.join("metrics.json"), &m)
    }

    fn boxes_stage(&self, dir: &Path, weights: &Path) -> Result<(), SuiteError> {
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
        )
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
