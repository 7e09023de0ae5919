//! `detectron2-finetune` (Table 5): exports the model to detectron2's pickle layout
//! ([`export_detectron2`], the official `convert-pretrain-to-detectron2.py` mapping), fine-tunes Mask R-CNN
//! R50-C4 on COCO with an external detectron2 through the official `detection/train_net.py` (it registers
//! the `Res5ROIHeadsExtraNorm` head the official configs name), and scores the COCO results JSON that run
//! writes (`inference/coco_instances_results.json`) with our COCO AP against the COCO val2017 instances:
//! `bbox_ap` from the boxes, `segm_ap` from the masks with the boxes dropped, as detectron2's
//! `COCOEvaluator` does. Both in percent, as detectron2 prints them and the paper reports them.
//!
//! GPU-cluster work: the official schedule is 180k iterations of 8 images on 8 GPUs (about 1.5 days).
//! The configs are vendored under `assets/detectron2/configs` and written into the stage directory, so the
//! `_BASE_` chain resolves; detectron2's own output (checkpoints, `log.txt`, `inference/`) goes to
//! `detectron2/` inside the stage directory.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::data::builders::find_dir;
use crate::data::source::store::DatasetDir;
use crate::eval::coco::{evaluate_files_with, CocoEvalResult, FileEvalOptions, IouType};
use crate::model::export::export_detectron2;
use crate::suite::stage::*;

pub struct Detectron2Finetune;

/// The official configs (github:alinlab/object-aware-contrastive `detection/configs`), by file name.
const CONFIGS: &[(&str, &str)] = &[
    (
        "Base-RCNN-C4-BN.yaml",
        include_str!("../../../assets/detectron2/configs/Base-RCNN-C4-BN.yaml"),
    ),
    (
        "coco_R_50_C4_2x.yaml",
        include_str!("../../../assets/detectron2/configs/coco_R_50_C4_2x.yaml"),
    ),
    (
        "coco_R_50_C4_2x_moco.yaml",
        include_str!("../../../assets/detectron2/configs/coco_R_50_C4_2x_moco.yaml"),
    ),
];

/// The configs a stage may name (the base is only included by them).
const RUNNABLE: &[&str] = &["coco_R_50_C4_2x_moco.yaml", "coco_R_50_C4_2x.yaml"];

/// Where the official script is looked for when `train_net` is not set: `$DETECTRON2_HOME/train_net.py`.
pub const HOME_ENV: &str = "DETECTRON2_HOME";

/// What the stage's `train_net.py` run writes its COCO results to, inside its `OUTPUT_DIR`.
pub const RESULTS_FILE: &str = "inference/coco_instances_results.json";

const INSTALL: &str = "install detectron2 into that Python (`python -m pip install \
    'git+https://github.com/facebookresearch/detectron2.git'`, with a CUDA PyTorch first) and take \
    train_net.py from the official detection/ folder (github.com/alinlab/object-aware-contrastive)";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Detectron2FinetuneParams {
    /// One of the vendored official configs.
    pub config: String,
    /// `SOLVER.IMS_PER_BATCH` (over all GPUs).
    pub ims_per_batch: u32,
    /// `SOLVER.BASE_LR`.
    pub base_lr: f64,
    /// `SOLVER.MAX_ITER`.
    pub max_iter: u64,
    /// `SOLVER.STEPS`.
    pub steps: Vec<u64>,
    /// `--num-gpus` of train_net.py.
    pub num_gpus: u32,
    /// The official `detection/train_net.py` (default `$DETECTRON2_HOME/train_net.py`).
    pub train_net: Option<String>,
    /// The Python interpreter with detectron2 installed.
    pub python: String,
    /// COCO val2017 instances (default: `annotations/instances_val2017.json` of the `coco2017` dataset
    /// extracted by `contracam data build coco2017` under the data dir).
    pub annotations: Option<String>,
}

impl Default for Detectron2FinetuneParams {
    /// The official schedule (`coco_R_50_C4_2x_moco.yaml`, 8 GPUs).
    fn default() -> Self {
        Detectron2FinetuneParams {
            config: "coco_R_50_C4_2x_moco.yaml".into(),
            ims_per_batch: 8,
            base_lr: 0.02,
            max_iter: 180_000,
            steps: vec![120_000, 160_000],
            num_gpus: 8,
            train_net: None,
            python: "python3".into(),
            annotations: None,
        }
    }
}

/// What the stage records in `detectron2.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Detectron2Report {
    pub config: String,
    /// The train_net.py command line, program first.
    pub command: Vec<String>,
    pub results: String,
    pub annotations: String,
    /// pycocotools' 12 summary numbers (fractions) of the boxes and of the masks.
    pub bbox: serde_json::Map<String, serde_json::Value>,
    pub segm: serde_json::Map<String, serde_json::Value>,
    /// AP@[.5:.95] in percent.
    pub bbox_ap: f64,
    pub segm_ap: f64,
}

impl Stage for Detectron2Finetune {
    type Params = Detectron2FinetuneParams;
    const KIND: &'static str = "detectron2-finetune";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "exports to detectron2 and fine-tunes Mask R-CNN C4 on COCO with an external detectron2 (Table 5)";
    const INPUTS: &'static [Slot] = &[Slot::required("model", ArtefactKind::ModelCheckpoint)];
    const OUTPUTS: &'static [Slot] = &[Slot::file("report", ArtefactKind::Json, "detectron2.json")];
    const METRICS: &'static [MetricSpec] = &[
        MetricSpec {
            name: "bbox_ap",
            unit: Unit::Percent,
            direction: Direction::HigherIsBetter,
            about: "COCO detection AP",
        },
        MetricSpec {
            name: "segm_ap",
            unit: Unit::Percent,
            direction: Direction::HigherIsBetter,
            about: "COCO segmentation AP",
        },
    ];

    fn validate(p: &Self::Params) -> Result<(), ParamError> {
        if !RUNNABLE.contains(&p.config.as_str()) {
            return Err(ParamError::new(
                "config",
                format!(
                    "'{}' is not a vendored config; one of {RUNNABLE:?}",
                    p.config
                ),
            ));
        }
        if p.ims_per_batch == 0 || p.num_gpus == 0 || !p.ims_per_batch.is_multiple_of(p.num_gpus) {
            return Err(ParamError::new(
                "ims_per_batch",
                format!(
                    "must be a positive multiple of num_gpus ({}), detectron2 splits it evenly",
                    p.num_gpus
                ),
            ));
        }
        if !(p.base_lr.is_finite() && p.base_lr > 0.0) {
            return Err(ParamError::new("base_lr", "must be positive"));
        }
        if p.max_iter == 0 {
            return Err(ParamError::new("max_iter", "must be positive"));
        }
        if p.steps.windows(2).any(|w| w[0] >= w[1]) || p.steps.iter().any(|&s| s >= p.max_iter) {
            return Err(ParamError::new(
                "steps",
                "must be increasing and below max_iter",
            ));
        }
        if p.python.is_empty() {
            return Err(ParamError::new("python", "must name an interpreter"));
        }
        Ok(())
    }

    fn run(p: &Self::Params, ctx: &mut StageContext) -> Result<StageResult, StageError> {
        // Everything that can be checked is checked before a run of a day and a half.
        let train_net = train_net_path(p)?;
        let annotations = annotations_path(p, ctx.data_dir)?;
        let model = ctx.artefact("model")?.path.clone();
        let weights = ctx.out_dir.join("model.pkl");
        export_detectron2(&model, &weights)?;
        let config = write_configs(ctx.out_dir, &p.config)?;
        let output = ctx.out_dir.join("detectron2");
        let args = train_net_args(p, &train_net, &config, &weights, &output);
        let log = ctx.out_dir.join("train_net.log");
        run_train_net(&p.python, &args, ctx.out_dir, &log)?;
        let results = output.join(RESULTS_FILE);
        if !results.is_file() {
            return Err(StageError::Failed(format!(
                "{} finished without writing {} (see {})",
                train_net.display(),
                results.display(),
                log.display()
            )));
        }
        let (bbox, segm) = score(&annotations, &results)?;
        let report = Detectron2Report {
            config: p.config.clone(),
            command: std::iter::once(p.python.clone()).chain(args).collect(),
            results: results.display().to_string(),
            annotations: annotations.display().to_string(),
            bbox_ap: bbox.stats[0] * 100.0,
            segm_ap: segm.stats[0] * 100.0,
            bbox: bbox.named_stats(),
            segm: segm.named_stats(),
        };
        ctx.write_json("report", &report)?;
        Ok(StageResult::default()
            .metric("bbox_ap", report.bbox_ap)
            .metric("segm_ap", report.segm_ap))
    }
}

/// COCO AP of a detectron2 results file: boxes as written, masks with the boxes dropped (detectron2's
/// `COCOEvaluator` pops `bbox` before `loadRes` for segm).
pub fn score(
    annotations: &Path,
    results: &Path,
) -> Result<(CocoEvalResult, CocoEvalResult), StageError> {
    let bbox = evaluate_files_with(annotations, results, &FileEvalOptions::new(IouType::Bbox))?;
    let segm = evaluate_files_with(
        annotations,
        results,
        &FileEvalOptions {
            drop_segm_bbox: true,
            ..FileEvalOptions::new(IouType::Segm)
        },
    )?;
    Ok((bbox, segm))
}

fn missing_detectron2(what: String) -> StageError {
    StageError::Failed(format!(
        "{what}. Set params.train_net (in the suite) to the official detection/train_net.py, or {HOME_ENV} \
         to the folder holding it; {INSTALL}"
    ))
}

fn train_net_path(p: &Detectron2FinetuneParams) -> Result<PathBuf, StageError> {
    let (path, from) = match (&p.train_net, std::env::var_os(HOME_ENV)) {
        (Some(t), _) => (PathBuf::from(t), "params.train_net".to_string()),
        (None, Some(home)) if !home.is_empty() => (
            PathBuf::from(home).join("train_net.py"),
            format!("${HOME_ENV}/train_net.py"),
        ),
        _ => {
            return Err(missing_detectron2(format!(
                "detectron2 is not configured: neither params.train_net nor {HOME_ENV} is set"
            )))
        }
    };
    if !path.is_file() {
        return Err(missing_detectron2(format!(
            "{from} = {} is not a file",
            path.display()
        )));
    }
    Ok(path)
}

fn annotations_path(p: &Detectron2FinetuneParams, data_dir: &Path) -> Result<PathBuf, StageError> {
    let path = match &p.annotations {
        Some(a) => PathBuf::from(a),
        None => {
            let extracted =
                DatasetDir::new(data_dir, "coco2017").extracted("annotations_trainval2017.zip");
            find_dir(&extracted, "annotations")
                .unwrap_or_else(|| extracted.join("annotations"))
                .join("instances_val2017.json")
        }
    };
    if !path.is_file() {
        return Err(StageError::Failed(format!(
            "COCO val2017 instances not found at {}: run `contracam data build coco2017` (with the data dir \
             of this run) or set params.annotations to an instances_val2017.json",
            path.display()
        )));
    }
    Ok(path)
}

/// Writes the vendored configs into `<dir>/configs` (the `_BASE_` chain is relative) and returns the path
/// of `name`.
fn write_configs(dir: &Path, name: &str) -> Result<PathBuf, StageError> {
    let cfg_dir = dir.join("configs");
    std::fs::create_dir_all(&cfg_dir).map_err(|e| StageError::io(&cfg_dir, e))?;
    for (file, text) in CONFIGS {
        let path = cfg_dir.join(file);
        std::fs::write(&path, text).map_err(|e| StageError::io(&path, e))?;
    }
    Ok(cfg_dir.join(name))
}

/// The arguments after the interpreter: the script, the config, the GPU count, then detectron2 config
/// overrides (`KEY VALUE` pairs read by yacs' `merge_from_list`).
pub fn train_net_args(
    p: &Detectron2FinetuneParams,
    train_net: &Path,
    config: &Path,
    weights: &Path,
    output: &Path,
) -> Vec<String> {
    let steps = match p.steps.as_slice() {
        [one] => format!("({one},)"),
        s => format!(
            "({})",
            s.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut args: Vec<String> = vec![
        train_net.display().to_string(),
        "--config-file".into(),
        config.display().to_string(),
        "--num-gpus".into(),
        p.num_gpus.to_string(),
    ];
    for (k, v) in [
        ("MODEL.WEIGHTS", weights.display().to_string()),
        ("OUTPUT_DIR", output.display().to_string()),
        ("SOLVER.IMS_PER_BATCH", p.ims_per_batch.to_string()),
        ("SOLVER.BASE_LR", p.base_lr.to_string()),
        ("SOLVER.MAX_ITER", p.max_iter.to_string()),
        ("SOLVER.STEPS", steps),
    ] {
        args.push(k.into());
        args.push(v);
    }
    args
}

/// Runs `python args…` in `cwd` with its output in `log`; a failure quotes the end of the log, and a
/// Python without detectron2 says how to install it.
fn run_train_net(python: &str, args: &[String], cwd: &Path, log: &Path) -> Result<(), StageError> {
    let out = std::fs::File::create(log).map_err(|e| StageError::io(log, e))?;
    let err = out.try_clone().map_err(|e| StageError::io(log, e))?;
    eprintln!(
        "detectron2: {python} {} (log: {})",
        args.join(" "),
        log.display()
    );
    let status = Command::new(python)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .map_err(|e| {
            missing_detectron2(format!(
                "params.python = '{python}' could not be started: {e}"
            ))
        })?;
    if status.success() {
        return Ok(());
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    if text.contains("No module named 'detectron2'") {
        return Err(missing_detectron2(format!(
            "'{python}' has no detectron2 (No module named 'detectron2', see {})",
            log.display()
        )));
    }
    let tail: Vec<&str> = text.lines().rev().take(20).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(StageError::Failed(format!(
        "train_net.py failed ({status}); the end of {}:\n{}",
        log.display(),
        tail.join("\n")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_a_python_tuple() {
        let mut p = Detectron2FinetuneParams::default();
        let a = train_net_args(
            &p,
            Path::new("t.py"),
            Path::new("c.yaml"),
            Path::new("w.pkl"),
            Path::new("o"),
        );
        assert_eq!(a.last().unwrap(), "(120000, 160000)");
        p.steps = vec![5];
        let a = train_net_args(
            &p,
            Path::new("t.py"),
            Path::new("c.yaml"),
            Path::new("w.pkl"),
            Path::new("o"),
        );
        assert_eq!(a.last().unwrap(), "(5,)");
    }

    #[test]
    fn every_runnable_config_and_its_bases_are_vendored() {
        for name in RUNNABLE {
            let mut n = name.to_string();
            loop {
                let text = CONFIGS
                    .iter()
                    .find(|(f, _)| *f == n)
                    .unwrap_or_else(|| panic!("{n} not vendored"))
                    .1;
                match text.lines().find_map(|l| l.strip_prefix("_BASE_: ")) {
                    Some(b) => n = b.trim_matches('"').to_string(),
                    None => break,
                }
            }
        }
    }
}
