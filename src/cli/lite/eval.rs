//! `contracam eval miou|maxboxacc|coco`: arguments and running. The metrics are torch-free; only their
//! `--dataset` form reads a built dataset through the torch-side loader ([`SplitMetrics`]), so the launcher
//! hands that form to contracam-torch.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use contracam_base::data::source::store::default_data_dir;
use contracam_base::eval::maxboxacc::{MaxBoxAccConfig, MaxBoxAccResult};
use contracam_base::eval::miou::MiouResult;
use contracam_base::eval::{coco, maxboxacc, miou};
use serde_json::json;

use super::ThreadsArg;

/// The metric commands that never touch a tensor (but for `--dataset`, see [`SplitMetrics`]).
/// contracam-torch flattens them into its `eval` group, first, so that group's listing keeps its order.
#[derive(Debug, Subcommand)]
pub enum EvalLiteCommand {
    /// Mask mIoU (official protocol: > 0.5 on both masks, empty/empty = 1, mean over images) over two
    /// folders of 8-bit grayscale PNGs matched by file name (--pred, --gt), or over a split of a built
    /// dataset (--dataset, --masks: GT masks from its index, resized to the prediction with PIL bilinear).
    Miou {
        /// Predicted masks.
        #[arg(long, required_unless_present = "dataset", requires = "gt")]
        pred: Option<PathBuf>,
        /// Ground-truth masks (every *.png here must have a prediction).
        #[arg(long, requires = "pred")]
        gt: Option<PathBuf>,
        /// NAME[:SPLIT] or DIR[:SPLIT] of a built dataset (split default train): ground truth from its index.
        #[arg(long, conflicts_with_all = ["pred", "gt"], requires = "masks")]
        dataset: Option<String>,
        /// With --dataset: the predicted masks, `<id>.png` per sample (`localize dataset --out DIR` writes
        /// them to DIR/masks, `localize crf --masks-dir DIR` to DIR).
        #[arg(long, requires = "dataset")]
        masks: Option<PathBuf>,
        /// With --dataset: where built datasets live (default as `data build`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Also list per-image IoU, intersection and union (with --json).
        #[arg(long)]
        per_image: bool,
        /// Print the result as JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        threads: ThreadsArg,
    },
    /// MaxBoxAccV2 (or v1 with --largest-contour) as clovaai/wsolevaluation, in percent.
    Maxboxacc {
        /// wsolevaluation metadata folder (`metadata/<DATASET>/<split>` with image_ids.txt,
        /// image_sizes.txt, localization.txt).
        #[arg(long, required_unless_present = "dataset", conflicts_with = "dataset")]
        metadata: Option<PathBuf>,
        /// NAME[:SPLIT] or DIR[:SPLIT] of a built dataset instead of --metadata: ids, sizes and GT boxes from
        /// its index (boxes truncated to integer pixels).
        #[arg(long)]
        dataset: Option<String>,
        /// With --dataset: where built datasets live (default as `data build`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Folder of raw score maps `<image_id>.npy` (float32/64, any size; resized to 224 bicubic);
        /// `localize dataset --out DIR` writes them to DIR/scoremaps, `localize cam --scoremaps DIR` to DIR.
        #[arg(long, alias = "score-maps")]
        scoremaps: PathBuf,
        /// Largest contour only (`multi_contour_eval=False`, the v1 box rule).
        #[arg(long)]
        largest_contour: bool,
        /// CAM threshold step (`cam_curve_interval`).
        #[arg(long, default_value_t = 0.001)]
        interval: f64,
        /// Write the per-threshold curves (num_correct per IoU threshold) to this JSON file.
        #[arg(long)]
        curves: Option<PathBuf>,
        /// Print the result as JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        threads: ThreadsArg,
    },
    /// COCO AP/AR (pycocotools COCOeval semantics) for bbox or segm.
    Coco {
        /// Instances JSON (ground truth).
        #[arg(long)]
        gt: PathBuf,
        /// Results JSON (a list of detections).
        #[arg(long)]
        dt: PathBuf,
        /// What is matched: bbox (boxes) or segm (masks), as pycocotools' iouType.
        #[arg(long, default_value = "bbox")]
        iou_type: coco::IouType,
        /// Remove `bbox` from segm results before loading them, as detectron2's COCOEvaluator does
        /// (otherwise pycocotools' loadRes uses the box area for the area ranges).
        #[arg(long)]
        drop_segm_bbox: bool,
        /// Fix pycocotools' GT-annotation-id-0 bug (a GT with id 0 can never be a true positive).
        #[arg(long)]
        fix_gt_id_zero: bool,
        /// Print the result as JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        threads: ThreadsArg,
    },
}

impl EvalLiteCommand {
    /// `--threads` (every metric command takes it).
    pub fn threads(&self) -> &ThreadsArg {
        match self {
            EvalLiteCommand::Miou { threads, .. }
            | EvalLiteCommand::Maxboxacc { threads, .. }
            | EvalLiteCommand::Coco { threads, .. } => threads,
        }
    }
}

/// mIoU and MaxBoxAcc over a split of a built dataset (`--dataset NAME[:SPLIT]`): ground truth from its
/// sample index, read through the torch-side loader.
pub trait SplitMetrics {
    fn miou(&self, dataset: &str, data_dir: &Path, masks: &Path) -> anyhow::Result<MiouResult>;
    fn maxboxacc(
        &self,
        dataset: &str,
        data_dir: &Path,
        scoremaps: &Path,
        cfg: &MaxBoxAccConfig,
    ) -> anyhow::Result<MaxBoxAccResult>;
}

fn over_split(splits: Option<&dyn SplitMetrics>) -> anyhow::Result<&dyn SplitMetrics> {
    splits.ok_or_else(|| {
        anyhow::anyhow!("--dataset needs contracam-torch (the launcher hands it over)")
    })
}

/// Runs one metric command; `splits` serves `--dataset` (None in the launcher, which never passes it one).
pub fn run(cmd: EvalLiteCommand, splits: Option<&dyn SplitMetrics>) -> anyhow::Result<ExitCode> {
    match cmd {
        EvalLiteCommand::Miou {
            pred,
            gt,
            dataset,
            masks,
            data_dir,
            per_image,
            json,
            ..
        } => {
            let r = match (dataset, masks, pred, gt) {
                (Some(ds), Some(masks), _, _) => over_split(splits)?.miou(
                    &ds,
                    &data_dir.unwrap_or_else(default_data_dir),
                    &masks,
                )?,
                (_, _, Some(pred), Some(gt)) => miou::evaluate_mask_dirs(&pred, &gt)?,
                _ => anyhow::bail!("give --pred and --gt, or --dataset and --masks"),
            };
            if json {
                let mut v = json!({"mIoU": r.miou, "n": r.n});
                if per_image {
                    v["per_image"] = serde_json::to_value(&r.per_image)?;
                }
                println!("{v}");
            } else {
                println!("mIoU {:.6} over {} images", r.miou, r.n);
            }
        }
        EvalLiteCommand::Maxboxacc {
            metadata,
            dataset,
            data_dir,
            scoremaps,
            largest_contour,
            interval,
            curves,
            json,
            ..
        } => {
            // The range of --interval (NaN included) is checked with the other settings, in one message.
            if let Some(p) = &curves {
                let mut dirs: Vec<(&str, &std::path::Path)> = vec![("--scoremaps", &scoremaps)];
                if let Some(m) = &metadata {
                    dirs.push(("--metadata", m));
                }
                contracam_base::util::output::refuse_output_in_input_dirs(p, "--curves", &dirs)?;
            }
            let cfg = maxboxacc::MaxBoxAccConfig {
                cam_curve_interval: interval,
                multi_contour_eval: !largest_contour,
                ..Default::default()
            };
            let r = match (dataset, metadata) {
                (Some(ds), _) => over_split(splits)?.maxboxacc(
                    &ds,
                    &data_dir.unwrap_or_else(default_data_dir),
                    &scoremaps,
                    &cfg,
                )?,
                (None, Some(m)) => maxboxacc::evaluate_wsol(&m, &scoremaps, &cfg)?,
                (None, None) => anyhow::bail!("give --metadata or --dataset"),
            };
            if let Some(p) = curves {
                let c: serde_json::Map<String, serde_json::Value> = r
                    .iou_thresholds
                    .iter()
                    .zip(&r.num_correct)
                    .map(|(d, n)| (d.to_string(), json!(n)))
                    .collect();
                let v = json!({
                    "description": "num_correct[iou_threshold][cam_threshold_index]; threshold i is np.arange(0,1,interval)[i]; accuracy = 100*num_correct/num_images",
                    "num_images": r.num_images, "cam_curve_interval": interval, "multi_contour_eval": !largest_contour, "curves": c,
                });
                contracam_base::util::output::write_atomic(
                    &p,
                    serde_json::to_string(&v)?.as_bytes(),
                )
                .with_context(|| format!("writing --curves {}", p.display()))?;
            }
            let mut v = json!({"MaxBoxAccV2": r.mean});
            for (d, a) in r.iou_thresholds.iter().zip(&r.max_box_acc) {
                v[format!("IoU{d}")] = json!(a);
            }
            v["n"] = json!(r.num_images);
            v["multi_contour_eval"] = json!(!largest_contour);
            if json {
                println!("{v}");
            } else {
                let what = if largest_contour {
                    "MaxBoxAcc (largest contour), mean over δ"
                } else {
                    "MaxBoxAccV2"
                };
                println!("{what} {:.4} over {} images", r.mean, r.num_images);
                for (d, a) in r.iou_thresholds.iter().zip(&r.max_box_acc) {
                    println!("  IoU{d} {a:.4}");
                }
            }
        }
        EvalLiteCommand::Coco {
            gt,
            dt,
            iou_type,
            drop_segm_bbox,
            fix_gt_id_zero,
            json,
            ..
        } => {
            let opts = coco::FileEvalOptions {
                iou_type,
                drop_segm_bbox,
                fix_gt_id_zero,
            };
            let r = coco::evaluate_files_with(&gt, &dt, &opts)?;
            if json {
                println!("{}", serde_json::Value::Object(r.named_stats()));
            } else {
                for (n, v) in coco::STAT_NAMES.iter().zip(r.stats) {
                    println!("{n:>6} {v:.4}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
