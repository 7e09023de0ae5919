//! `contracam train ...`
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use contracam::data::loader::{MaskInput, ObjectBoxes, Source};
use contracam::data::synth;
use contracam::localize::dataset::open_split;
use contracam::model::ContrastiveModel;
use contracam::suite::config::{self, SuiteConfig};
use contracam::train::augment::object_aware_crop::validate_regions;
use contracam::train::config::MixKind;
use contracam::train::distributed::{is_output_writer, ProcessStrategy};
use contracam::train::fit::CheckpointPolicy;
use contracam::train::objective::MixWeighting;
use contracam::train::{
    fit_source, train_on_index, Checkpointing, ExecutionStrategy, InMemorySource,
    IndexSourceOptions, TrainReport,
};
use contracam::util::memory::ensure_fits_with_hint;
use contracam::util::output::{refuse_input_overwrite, refuse_output_in_input_dirs};
use contracam::util::progress::{Progress, Unit};

use super::{DeviceArg, GlobalArgs, QuietArg, SeedArg, ThreadsArg};

#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// Self-supervised training (the suite's `[model]` method: MoCo v2 or BYOL) on the suite's synthetic
    /// training scenes or on a built dataset (--dataset), optionally with object-aware random crop from a
    /// box file and soft masks riding with view 1. Started by torchrun or srun (RANK, WORLD_SIZE,
    /// MASTER_ADDR, MASTER_PORT; or an srun step of several tasks), each process is one rank of a
    /// data-parallel run (Gloo on CPU, NCCL on CUDA): [train] batch_size is the global batch, and only rank 0
    /// writes --out and the training state.
    Ssl(SslArgs),
}

#[derive(Debug, clap::Args)]
pub struct SslArgs {
    /// Suite file whose [model] and [train] tables are used (and [data], [sizes] without --dataset).
    #[arg(long)]
    pub suite: PathBuf,
    /// Train on NAME[:SPLIT] of a dataset built under --data-dir, or DIR[:SPLIT] of a dataset folder
    /// holding `index/<split>.jsonl` (split default: train), instead of the suite's synthetic scenes.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Where built datasets live (default $CONTRACAM_DATA, else $XDG_CACHE_HOME/contracam, else
    /// ~/.cache/contracam).
    #[arg(long, requires = "dataset")]
    pub data_dir: Option<PathBuf>,
    /// Object-aware random crop boxes. With --dataset: a box file in the official format (`<id>
    /// x1,y1,x2,y2 ...` normalised, one line per image, as `localize dataset` writes boxes.txt). Without:
    /// a JSON list per synthetic training image of normalised [x1, y1, x2, y2].
    #[arg(long)]
    pub boxes: Option<PathBuf>,
    /// Soft masks in the `localize dataset --soft-masks` layout (DIR/<class>/<file>, or a run folder
    /// holding soft_masks/), cropped and flipped with view 1; the report measures view 1's foreground.
    #[arg(long, requires = "dataset")]
    pub masks: Option<PathBuf>,
    /// Loader threads decoding and cropping images (default: --threads).
    #[arg(long, requires = "dataset")]
    pub workers: Option<usize>,
    /// Skip images that cannot be read or decoded (listed in the checkpoint's metadata and counted)
    /// instead of stopping.
    #[arg(long, requires = "dataset")]
    pub skip_bad: bool,
    /// Background mixup on view 1 after the colour augmentations (official `*_bgmix`): needs the soft
    /// masks of view 1 (--masks with --dataset; the synthetic scenes carry their true foreground).
    #[arg(long, conflicts_with_all = ["mixup", "cutmix"])]
    pub bg_mixup: bool,
    /// BG-Mixup probability of mixing an image that has a background (official `aug_prob`; default 0.4
    /// for MoCo, 0.3 for BYOL).
    #[arg(long, requires = "bg_mixup", value_name = "P")]
    pub bg_mixup_prob: Option<f64>,
    /// Mixup baseline on view 1, i-Mix style (per-image weights from Beta(1, 1)).
    #[arg(long, conflicts_with = "cutmix")]
    pub mixup: bool,
    /// CutMix baseline on view 1, i-Mix style (one box per batch).
    #[arg(long)]
    pub cutmix: bool,
    /// How MoCo's Mixup loss weighs its two cross-entropies: `official` (the per-image weights multiply
    /// mean-reduced cross-entropies, as the official MoCoMixup) or `per-sample`.
    #[arg(long, requires = "mixup", value_parser = ["official", "per-sample"])]
    pub mixup_weighting: Option<String>,
    /// Write the training state (networks, optimiser, queues, RNG streams, position) every N epochs and
    /// after the last one, to --state; a run resumes from it with --resume.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_every: Option<u64>,
    /// Where --checkpoint-every writes the training state (default: --out with the extension
    /// `.state.safetensors`), replaced atomically each time.
    #[arg(long, requires = "checkpoint_every")]
    pub state: Option<PathBuf>,
    /// Continue the run saved in this training state; the suite's [model] and [train], the mixing flags
    /// and the seed must be those it was written with (a difference is refused, naming the field).
    #[arg(long, value_name = "FILE")]
    pub resume: Option<PathBuf>,
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
            let mut inputs: Vec<(&str, &std::path::Path)> = vec![("--suite", &a.suite)];
            if let Some(b) = &a.boxes {
                inputs.push(("--boxes", b));
            }
            if let Some(r) = &a.resume {
                inputs.push(("--resume", r));
            }
            refuse_input_overwrite(&a.out, "--out", &inputs)?;
            if a.checkpoint_every.is_some() {
                // The state may replace the file it resumed from, never an input or the model.
                let state = state_path(&a);
                anyhow::ensure!(
                    state != a.out,
                    "--state {} is also --out: the training state and the trained model need two files",
                    state.display()
                );
                let mut others: Vec<(&str, &std::path::Path)> = vec![("--out", &a.out)];
                others.extend(inputs.iter().filter(|(flag, _)| *flag != "--resume"));
                refuse_input_overwrite(&state, "--state", &others)?;
            }
            if let Some(m) = &a.masks {
                refuse_output_in_input_dirs(&a.out, "--out", &[("--masks", m)])?;
            }
            let suite = config::load(&a.suite)?;
            let mut cfg = suite.config.clone();
            apply_mix_flags(&a, &mut cfg);
            let cfg = &cfg;
            let seed = global.seed.unwrap_or(cfg.seed);
            // Every value is checked before data is read or a model is allocated; errors name the suite
            // file and the key.
            let in_suite = || format!("suite {}", a.suite.display());
            cfg.model.validate().with_context(in_suite)?;
            let bar = Progress::new("train", None, Unit::Items("steps"), global.quiet);
            let (model, report, data_meta) = match &a.dataset {
                Some(spec) => train_on_dataset(&a, spec, cfg, seed, global, &bar)?,
                None => train_on_scenes(&a, cfg, seed, global, &bar)?,
            };
            bar.finish();
            if !is_output_writer() {
                // A data-parallel rank other than 0 trained the same model; rank 0 writes it.
                return Ok(ExitCode::SUCCESS);
            }
            let mut meta = HashMap::from([
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
            if let Some(d) = data_meta {
                meta.insert("contracam.train_data".to_string(), d.to_string());
            }
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

type Trained = (ContrastiveModel, TrainReport, Option<serde_json::Value>);

/// The mixing flags override the suite's `[train.mix]` kind (and probability, weighting).
fn apply_mix_flags(a: &SslArgs, cfg: &mut SuiteConfig) {
    let mix = &mut cfg.train.mix;
    if a.bg_mixup {
        mix.kind = MixKind::BgMixup;
    } else if a.mixup {
        mix.kind = MixKind::Mixup;
    } else if a.cutmix {
        mix.kind = MixKind::Cutmix;
    }
    if a.bg_mixup_prob.is_some() {
        mix.bg_mixup_prob = a.bg_mixup_prob;
    }
    match a.mixup_weighting.as_deref() {
        Some("per-sample") => mix.weighting = MixWeighting::PerSample,
        Some(_) => mix.weighting = MixWeighting::Official,
        None => {}
    }
}

/// Where --checkpoint-every writes: --state, else --out with the extension `.state.safetensors`.
fn state_path(a: &SslArgs) -> PathBuf {
    a.state
        .clone()
        .unwrap_or_else(|| a.out.with_extension("state.safetensors"))
}

/// A fresh trainer, or the run saved in --resume (with `source` put back where it was), trained to the
/// end with the --checkpoint-every policy.
/// The resume file and checkpoint policy the flags ask for.
fn checkpointing(a: &SslArgs) -> Checkpointing {
    Checkpointing {
        resume: a.resume.clone(),
        policy: a.checkpoint_every.map(|n| CheckpointPolicy {
            path: state_path(a),
            every_epochs: n as usize,
        }),
    }
}

/// The suite's synthetic training scenes, held in memory, with their true foreground riding with view 1.
fn train_on_scenes(
    a: &SslArgs,
    cfg: &SuiteConfig,
    seed: u64,
    global: &GlobalArgs,
    bar: &Progress,
) -> anyhow::Result<Trained> {
    let in_suite = || format!("suite {}", a.suite.display());
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
                    "{}: expected a JSON list per image of [x1, y1, x2, y2] (a box file in the official \
                     text format goes with --dataset)",
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
            validate_regions(&b).map_err(|e| anyhow::anyhow!("--boxes {}: {e}", p.display()))?;
            Some(b)
        }
        None => None,
    };
    let images = scenes.images_tensor();
    // The scenes' true foreground rides with view 1: the report says what the views contained, and
    // BG-Mixup mixes through it.
    let foreground = scenes.foreground_tensor().squeeze_dim(1);
    // One rank of a data-parallel run when torchrun/srun launched this process (`train.batch_size` is then
    // the global batch), else one device.
    let strategy = ProcessStrategy::from_env(device)?;
    let mut source = InMemorySource::new(
        images,
        cfg.train.batch_size,
        &cfg.train.augment,
        seed,
        strategy.shard(),
    )?;
    if let Some(b) = boxes {
        source = source.with_boxes(b)?;
    }
    source = source.with_masks(foreground)?;
    let (model, report) = fit_source(
        &cfg.model,
        &cfg.train,
        seed,
        strategy,
        &mut source,
        &checkpointing(a),
        bar,
    )?;
    Ok((model, report, None))
}

/// A split of a built dataset through the loader: images decoded and cropped by worker threads, OA-Crop
/// boxes from an official box file, soft masks from a folder.
fn train_on_dataset(
    a: &SslArgs,
    spec: &str,
    cfg: &SuiteConfig,
    seed: u64,
    global: &GlobalArgs,
    bar: &Progress,
) -> anyhow::Result<Trained> {
    let data_dir = a
        .data_dir
        .clone()
        .unwrap_or_else(contracam::data::source::store::default_data_dir);
    let source: Arc<dyn Source> =
        Arc::new(open_split(spec, &data_dir).with_context(|| format!("--dataset {spec}"))?);
    cfg.train
        .validate(cfg.model.method, Some(source.len()))
        .with_context(|| format!("suite {} on {}", a.suite.display(), source.name()))?;
    let boxes = a
        .boxes
        .as_deref()
        .map(|p| ObjectBoxes::load(p, source.as_ref()).context("--boxes"))
        .transpose()?;
    let masks = match &a.masks {
        None => MaskInput::None,
        Some(d) => {
            // A `localize dataset` run folder holds the masks under soft_masks/.
            let inner = d.join("soft_masks");
            let dir = if inner.is_dir() { inner } else { d.clone() };
            anyhow::ensure!(
                dir.is_dir(),
                "--masks {}: no such folder (expected the soft_masks/ of a `localize dataset --soft-masks` run)",
                d.display()
            );
            MaskInput::Folder(dir)
        }
    };
    let device = global.device.resolve()?;
    let opts = IndexSourceOptions {
        boxes,
        masks: masks.clone(),
        workers: a.workers.unwrap_or_else(rayon::current_num_threads),
        prefetch: 0,
        skip_bad: a.skip_bad,
        device,
    };
    let (model, report, skipped) = train_on_index(
        &cfg.model,
        &cfg.train,
        source.clone(),
        opts,
        seed,
        &checkpointing(a),
        bar,
    )?;
    if !skipped.is_empty() {
        eprintln!(
            "skipped {} unreadable sample(s) (listed in the checkpoint's contracam.train_data)",
            skipped.len()
        );
    }
    let meta = serde_json::json!({
        "dataset": source.name(),
        "images": source.len(),
        "boxes": a.boxes,
        "masks": match &masks { MaskInput::Folder(d) => Some(d.clone()), _ => None },
        "skipped": skipped,
    });
    Ok((model, report, Some(meta)))
}
