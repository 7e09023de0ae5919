//! `contracam eval ...`: metrics with reference parity. Each command prints a human summary, or with
//! `--json` one JSON object of named numbers on stdout.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use contracam::eval::maxboxacc::{MaxBoxAccConfig, MaxBoxAccResult};
use contracam::eval::miou::MiouResult;
use contracam::eval::{bench, linear};
use contracam::localize::dataset::open_split;
use contracam::util::progress::{Progress, Unit};
use serde_json::json;

use super::lite::{self, eval::EvalLiteCommand};
use super::{DeviceArg, GlobalArgs, QuietArg, SeedArg, ThreadsArg};

/// `eval miou|maxboxacc --dataset`: the split's ground truth through the sample-index loader.
struct TorchSplits;

impl lite::eval::SplitMetrics for TorchSplits {
    fn miou(&self, dataset: &str, data_dir: &Path, masks: &Path) -> anyhow::Result<MiouResult> {
        let src = open_split(dataset, data_dir)?;
        Ok(contracam::eval::dataset::miou_over_split(&src, masks)?)
    }

    fn maxboxacc(
        &self,
        dataset: &str,
        data_dir: &Path,
        scoremaps: &Path,
        cfg: &MaxBoxAccConfig,
    ) -> anyhow::Result<MaxBoxAccResult> {
        let src = open_split(dataset, data_dir)?;
        Ok(contracam::eval::dataset::maxboxacc_over_split(
            &src, scoremaps, cfg,
        )?)
    }
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    // miou, maxboxacc, coco: torch-free, shared with the `contracam` launcher (listed first, as before).
    #[command(flatten)]
    Metric(EvalLiteCommand),
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
            EvalCommand::Metric(c) => GlobalArgs::of(None, None, Some(c.threads()), None),
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
        EvalCommand::Metric(c) => return lite::eval::run(c, Some(&TorchSplits)),
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
