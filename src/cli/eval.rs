//! `contracam eval ...`: metrics with reference parity. Each command prints a human summary, or with
//! `--json` one JSON object of named numbers on stdout.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use contracam::data::source::store::default_data_dir;
use contracam::eval::{bench, coco, linear, maxboxacc, miou};
use contracam::localize::dataset::open_split;
use contracam::util::progress::{Progress, Unit};
use serde_json::json;

use super::{DeviceArg, GlobalArgs, QuietArg, SeedArg, ThreadsArg};

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
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
    /// Linear evaluation (official L-BFGS protocol) on cached features; see
    /// `contracam::eval::linear::FeatureSet` for the safetensors layout (`train.x`, `train.y`, `val.*`,
    /// `test.*`, optional `extra.<name>.*`). Extra sets named `mixed_same` and `mixed_rand` give BG-Gap.
    Linear {
        /// Cached features (safetensors).
        #[arg(long)]
        features: PathBuf,
        /// Restart every weight decay from the initialisation (default: the official warm start).
        #[arg(long)]
        no_warm_start: bool,
        /// Print the whole sweep too.
        #[arg(long)]
        sweep: bool,
        /// Where the objective runs: auto (the host for small problems, else the device), host (plain
        /// Rust, one thread) or device (libtorch). The optimum is the same.
        #[arg(long, default_value = "auto")]
        backend: linear::LinearBackend,
        /// Print the result as JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        device: DeviceArg,
        #[command(flatten)]
        seed: SeedArg,
        #[command(flatten)]
        threads: ThreadsArg,
        #[command(flatten)]
        quiet: QuietArg,
    },
    /// Timing against the reference implementations on generated data; prints time ratios.
    Bench(BenchArgs),
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Work folder for the generated data (reused when present).
    #[arg(long, default_value = "target/bench-metrics")]
    pub dir: PathBuf,
    /// Python interpreter with pycocotools, faster-coco-eval, opencv-python-headless and numpy
    /// (baselines are skipped without it).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Only the COCO benchmark.
    #[arg(long, conflicts_with = "only_maxboxacc")]
    pub only_coco: bool,
    /// Only the MaxBoxAccV2 benchmark.
    #[arg(long)]
    pub only_maxboxacc: bool,
    /// Images of the generated COCO benchmark problem.
    #[arg(long, default_value_t = 5000)]
    pub coco_images: usize,
    /// Ground-truth annotations of the COCO benchmark problem.
    #[arg(long, default_value_t = 30000)]
    pub coco_gt: usize,
    /// Detections of the COCO benchmark problem.
    #[arg(long, default_value_t = 40000)]
    pub coco_dt: usize,
    /// Score maps of the MaxBoxAccV2 benchmark problem.
    #[arg(long, default_value_t = 200)]
    pub wsol_maps: usize,
    /// Best of this many runs.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    #[command(flatten)]
    pub seed: SeedArg,
    #[command(flatten)]
    pub threads: ThreadsArg,
}

impl EvalCommand {
    /// The run-wide options this command was given.
    pub fn options(&self) -> GlobalArgs {
        match self {
            EvalCommand::Miou { threads, .. }
            | EvalCommand::Maxboxacc { threads, .. }
            | EvalCommand::Coco { threads, .. } => GlobalArgs::of(None, None, Some(threads), None),
            EvalCommand::Linear {
                device,
                seed,
                threads,
                quiet,
                ..
            } => GlobalArgs::of(Some(device), Some(seed), Some(threads), Some(quiet)),
            EvalCommand::Bench(a) => GlobalArgs::of(None, Some(&a.seed), Some(&a.threads), None),
        }
    }
}

pub fn run(cmd: EvalCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    match cmd {
        EvalCommand::Miou {
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
                (Some(ds), Some(masks), _, _) => {
                    let src = open_split(&ds, &data_dir.unwrap_or_else(default_data_dir))?;
                    contracam::eval::dataset::miou_over_split(&src, &masks)?
                }
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
        EvalCommand::Maxboxacc {
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
                contracam::util::output::refuse_output_in_input_dirs(p, "--curves", &dirs)?;
            }
            let cfg = maxboxacc::MaxBoxAccConfig {
                cam_curve_interval: interval,
                multi_contour_eval: !largest_contour,
                ..Default::default()
            };
            let r = match (dataset, metadata) {
                (Some(ds), _) => {
                    let src = open_split(&ds, &data_dir.unwrap_or_else(default_data_dir))?;
                    contracam::eval::dataset::maxboxacc_over_split(&src, &scoremaps, &cfg)?
                }
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
                contracam::util::output::write_atomic(&p, serde_json::to_string(&v)?.as_bytes())
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
        EvalCommand::Coco {
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
        EvalCommand::Linear {
            features,
            no_warm_start,
            sweep,
            backend,
            json,
            ..
        } => {
            let device = global.device.resolve()?;
            let fs = linear::FeatureSet::load(&features, device)?;
            let cfg = linear::LinearEvalConfig {
                warm_start: !no_warm_start,
                backend,
                seed: global.seed.map(|s| s as i64).unwrap_or(1234),
                ..Default::default()
            };
            let progress = Progress::new(
                "linear eval",
                Some(cfg.weight_decays.len() as u64),
                Unit::Items("weight decays"),
                global.quiet,
            );
            let r = linear::linear_eval_observed(
                &fs.train.0,
                &fs.train.1,
                &fs.val.0,
                &fs.val.1,
                &fs.test.0,
                &fs.test.1,
                &cfg,
                &mut |_, _, p| {
                    // One line per regularisation value, whatever the rate limit of status lines.
                    progress.println(&p.describe());
                    progress.inc(1);
                },
            )?;
            progress.finish();
            let clf = r
                .classifier
                .as_ref()
                .expect("linear_eval returns its classifier");
            let trial = contracam::eval::bgchallenge::BgTrial::score(clf, &fs.extra);
            let extra = &trial.accuracy;
            let mut v = json!({
                "test_top1": 100.0 * r.test_accuracy,
                "val_top1": 100.0 * r.val_accuracy,
                "best_weight_decay": r.best_weight_decay,
                "num_classes": r.num_classes,
                "extra_top1": extra,
                "BG-Gap": trial.bg_gap,
                "device": contracam::device::describe(device),
            });
            if sweep {
                v["sweep"] = serde_json::to_value(&r.sweep)?;
            }
            if json {
                println!("{v}");
            } else {
                println!(
                    "test top-1 {:.2}  (val {:.2}, weight decay {:.3e}, {} classes)",
                    100.0 * r.test_accuracy,
                    100.0 * r.val_accuracy,
                    r.best_weight_decay,
                    r.num_classes
                );
                for (n, a) in extra {
                    println!("  {n:<12} {a:.2}");
                }
                if let Some(g) = trial.bg_gap {
                    println!("  BG-Gap       {g:.2}");
                }
            }
        }
        EvalCommand::Bench(a) => {
            let cfg = bench::BenchConfig {
                dir: a.dir,
                coco: !a.only_maxboxacc,
                maxboxacc: !a.only_coco,
                python: a.python,
                coco_images: a.coco_images,
                coco_gt: a.coco_gt,
                coco_dt: a.coco_dt,
                wsol_maps: a.wsol_maps,
                repeat: a.repeat,
                seed: global.seed.unwrap_or(2021),
            };
            let report = bench::run(&cfg)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
