//! `contracam train ...`
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use contracam::data::synth;
use contracam::suite::config;
use contracam::train::augment::object_aware_crop::validate_regions;
use contracam::train::{train, TrainData};
use contracam::util::memory::ensure_fits_with_hint;
use contracam::util::progress::{Progress, Unit};

use super::{DeviceArg, GlobalArgs, QuietArg, SeedArg, ThreadsArg};

#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// Self-supervised training (the suite's `[model]` method: MoCo v2 or BYOL) on the suite's synthetic
    /// training scenes, optionally with object-aware random crop from a box file.
    Ssl(SslArgs),
}

#[derive(Debug, clap::Args)]
pub struct SslArgs {
    /// Suite file whose [data], [sizes], [model] and [train] tables are used.
    #[arg(long)]
    pub suite: PathBuf,
    /// Object-aware random crop boxes: JSON list per training image of normalised [x1, y1, x2, y2].
    #[arg(long)]
    pub boxes: Option<PathBuf>,
    /// Checkpoint to write (safetensors; config and seed in its metadata).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub seed: SeedArg,
    #[command(flatten)]
    pub threads: ThreadsArg,
    #[command(flatten)]
    pub quiet: QuietArg,
}

impl TrainCommand {
    /// The run-wide options this command was given.
    pub fn options(&self) -> GlobalArgs {
        match self {
            TrainCommand::Ssl(a) => GlobalArgs::of(
                Some(&a.device),
                Some(&a.seed),
                Some(&a.threads),
                Some(&a.quiet),
            ),
        }
    }
}

pub fn run(cmd: TrainCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    match cmd {
        TrainCommand::Ssl(a) => {
            let suite = config::load(&a.suite)?;
            let cfg = &suite.config;
            let seed = global.seed.unwrap_or(cfg.seed);
            // Every value is checked before scenes are generated or a model is allocated; errors name the
            // suite file and the key.
            let in_suite = || format!("suite {}", a.suite.display());
            cfg.model.validate().with_context(in_suite)?;
            cfg.train
                .validate(cfg.model.method, Some(cfg.sizes.train_scenes))
                .with_context(in_suite)?;
            ensure_fits_with_hint(
                cfg.data.train_tensor_bytes(cfg.sizes.train_scenes),
                &format!(
                    "{} training scenes of {}x{} (sizes.train_scenes)",
                    cfg.sizes.train_scenes, cfg.data.image_size, cfg.data.image_size
                ),
                &format!(", lower sizes.train_scenes in {}", a.suite.display()),
            )?;
            let device = global.device.resolve()?;
            let scenes = synth::scenes(&cfg.data, seed, "train", cfg.sizes.train_scenes);
            let boxes: Option<Vec<Vec<[f64; 4]>>> = match &a.boxes {
                Some(p) => {
                    let text = std::fs::read_to_string(p)
                        .with_context(|| format!("reading --boxes {}", p.display()))?;
                    let b: Vec<Vec<[f64; 4]>> = serde_json::from_str(&text).with_context(|| {
                        format!(
                            "{}: expected a JSON list per image of [x1, y1, x2, y2]",
                            p.display()
                        )
                    })?;
                    anyhow::ensure!(
                        b.len() == scenes.len(),
                        "{}: {} box lists for {} training images",
                        p.display(),
                        b.len(),
                        scenes.len()
                    );
                    validate_regions(&b)
                        .map_err(|e| anyhow::anyhow!("--boxes {}: {e}", p.display()))?;
                    Some(b)
                }
                None => None,
            };
            let images = scenes.images_tensor();
            // The scenes' true foreground rides with view 1 so the report says what the views contained.
            let foreground = scenes.foreground_tensor().squeeze_dim(1);
            let bar = Progress::new("train", None, Unit::Items("steps"), global.quiet);
            let data = TrainData {
                images: &images,
                boxes: boxes.as_deref(),
                masks: Some(&foreground),
            };
            let (model, report) = train(&cfg.model, &cfg.train, &data, seed, device, &bar)?;
            bar.finish();
            let meta = HashMap::from([
                ("contracam.seed".to_string(), seed.to_string()),
                (
                    "contracam.train".to_string(),
                    serde_json::to_string(&cfg.train)?,
                ),
                (
                    "contracam.train_report".to_string(),
                    serde_json::to_string(&report)?,
                ),
            ]);
            model.save(&a.out, &meta)?;
            eprintln!(
                "wrote {} ({} steps, final loss {:.4}, view-1 foreground {:.4}, {:.1} s)",
                a.out.display(),
                report.steps,
                report.epoch_loss.last().copied().unwrap_or(f64::NAN),
                report.view_foreground.unwrap_or(f64::NAN),
                report.seconds
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
