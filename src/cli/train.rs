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
use contracam::model::{Arch, ContrastiveModel, Stem};
use contracam::suite::config::{self, SuiteConfig};
use contracam::train::augment::object_aware_crop::validate_regions;
use contracam::train::config::MixKind;
use contracam::train::distributed::{is_output_writer, ProcessStrategy};
use contracam::train::fit::CheckpointPolicy;
use contracam::train::objective::MixWeighting;
use contracam::train::supervised::{
    checkpoint_metadata, train_classifier_checkpointed, ClassifierRunOptions, ClassifierTrainConfig,
};
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
    /// Supervised training of a ResNet classifier (cross-entropy on the class labels of a built split), the
    /// model of the classifier CAM (`localize dataset --classifier-cam cam`). No official script
    /// exists: the defaults are torchvision's ImageNet recipe scaled to the batch, an assumption.
    Classifier(ClassifierArgs),
    /// Training speed side by side with PyTorch: the MoCo v2 step here and in
    /// scripts/bench_train_pytorch.py (same model, augmentations, batch, dtype, threads), for the smoke
    /// configuration and ResNet-18 at 224 px (batch 32), without and with the loader (a generated JPEG
    /// fixture). The sides alternate round by round; wall and CPU time are both reported.
    Bench(BenchArgs),
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Python with torch for the PyTorch side (default: .venv/bin/python when it exists; none: ours only).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// The PyTorch side.
    #[arg(long, default_value = "scripts/bench_train_pytorch.py")]
    pub script: PathBuf,
    /// Work folder (the JPEG fixture is generated here once).
    #[arg(long, default_value = "target/bench-train")]
    pub dir: PathBuf,
    /// Only these configurations.
    #[arg(long, value_parser = ["smoke", "r18-224"])]
    pub only: Option<String>,
    /// Rounds per configuration, each timing both sides (alternating which goes first).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub rounds: u64,
    /// Timed steps per measurement.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub steps: u64,
    /// Untimed steps before each measurement.
    #[arg(long, default_value_t = 1)]
    pub warmup: u64,
    /// Loader workers on both sides (default: --threads).
    #[arg(long)]
    pub workers: Option<usize>,
    /// JPEGs (500x375) in the loader fixture (at least the largest batch).
    #[arg(long, default_value_t = 128)]
    pub images: usize,
    /// 2 rounds of 2 steps: a quick look rather than a measurement.
    #[arg(long)]
    pub quick: bool,
    /// Also write the measurements (every round) as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Both sides' forward passes and loss in `fp32` or `bf16-mixed` (bfloat16 autocast here,
    /// torch.autocast in PyTorch; parameters, SGD, EMA and queue float32 on both).
    #[arg(long, default_value = "fp32", value_parser = ["fp32", "bf16-mixed"])]
    pub precision: String,
    /// Both sides' models and input views in the channels_last memory format.
    #[arg(long)]
    pub channels_last: bool,
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub threads: ThreadsArg,
}

#[derive(Debug, clap::Args)]
pub struct ClassifierArgs {
    /// NAME[:SPLIT] of a dataset built under --data-dir, or DIR[:SPLIT] of a dataset folder holding
    /// `index/<split>.jsonl` (split default: train); one class label per image.
    #[arg(long)]
    pub dataset: String,
    /// Where built datasets live (default $CONTRACAM_DATA, else $XDG_CACHE_HOME/contracam, else
    /// ~/.cache/contracam).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Network [default: resnet50].
    #[arg(long, value_parser = ["resnet18", "resnet50"])]
    pub arch: Option<String>,
    /// Channel multiplier on torchvision's widths [default: 1].
    #[arg(long)]
    pub width: Option<f64>,
    /// `small` for CPU-scale images (3x3 stem, no max-pool) [default: imagenet].
    #[arg(long, value_parser = ["imagenet", "small"])]
    pub stem: Option<String>,
    /// [default: 90]
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Batch size [default: 256].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Learning rate at batch 256, scaled linearly with --batch [default: 0.1].
    #[arg(long)]
    pub base_lr: Option<f64>,
    /// Where the per-epoch cosine ends [default: 0].
    #[arg(long)]
    pub final_lr: Option<f64>,
    /// SGD momentum [default: 0.9].
    #[arg(long)]
    pub momentum: Option<f64>,
    /// On every parameter [default: 1e-4].
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Side of the RandomResizedCrop views [default: 224].
    #[arg(long)]
    pub image_size: Option<u32>,
    /// Smallest RandomResizedCrop area fraction [default: 0.08].
    #[arg(long)]
    pub min_crop_scale: Option<f64>,
    /// Horizontal flip probability [default: 0.5].
    #[arg(long)]
    pub hflip_p: Option<f64>,
    /// Floating point of the forward pass and the loss: `fp32` or `bf16-mixed`, bfloat16 autocast (CPU or
    /// CUDA); the parameters, gradients, SGD step and the checkpoint stay float32. Recorded in the recipe
    /// when not fp32.
    #[arg(long, default_value = "fp32", value_parser = ["fp32", "bf16-mixed"])]
    pub precision: String,
    /// Convolution weights and input batches in the channels_last (NHWC) memory format (the same values,
    /// another layout; recorded in the recipe when set).
    #[arg(long)]
    pub channels_last: bool,
    /// Loader threads decoding and cropping images (default: --threads); results do not depend on it.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Write the training state (network, SGD momentum, curves, loader position) every N epochs and
    /// after the last one, to --state; a run resumes from it with --resume.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_every: Option<u64>,
    /// Where --checkpoint-every writes the training state (default: --out with the extension
    /// `.state.safetensors`), replaced atomically each time.
    #[arg(long, requires = "checkpoint_every")]
    pub state: Option<PathBuf>,
    /// Continue the run saved in this training state; the recipe flags, the dataset and the seed must be
    /// those it was written with (a difference is refused, naming the field).
    #[arg(long, value_name = "FILE")]
    pub resume: Option<PathBuf>,
    /// Checkpoint to write (safetensors; recipe, seed and dataset in its metadata); the report (loss and
    /// accuracy per epoch, train accuracy) goes beside it with the extension `.report.json`.
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

impl ClassifierArgs {
    /// The recipe: the defaults with every given flag applied.
    fn recipe(&self) -> ClassifierTrainConfig {
        let d = ClassifierTrainConfig::default();
        ClassifierTrainConfig {
            arch: match self.arch.as_deref() {
                Some("resnet18") => Arch::Resnet18,
                Some(_) => Arch::Resnet50,
                None => d.arch,
            },
            width: self.width.unwrap_or(d.width),
            stem: match self.stem.as_deref() {
                Some("small") => Stem::Small,
                Some(_) => Stem::Imagenet,
                None => d.stem,
            },
            epochs: self.epochs.unwrap_or(d.epochs),
            batch: self.batch.unwrap_or(d.batch),
            base_lr: self.base_lr.unwrap_or(d.base_lr),
            final_lr: self.final_lr.unwrap_or(d.final_lr),
            momentum: self.momentum.unwrap_or(d.momentum),
            weight_decay: self.weight_decay.unwrap_or(d.weight_decay),
            image_size: self.image_size.unwrap_or(d.image_size),
            min_crop_scale: self.min_crop_scale.unwrap_or(d.min_crop_scale),
            hflip_p: self.hflip_p.unwrap_or(d.hflip_p),
            precision: self.precision.parse().unwrap_or(d.precision),
            channels_last: self.channels_last,
        }
    }
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
    /// Floating point of the forward passes and the loss (default: the suite's [train] precision, fp32
    /// unless set): `fp32`, as the official code, or `bf16-mixed`, bfloat16 autocast (CPU or CUDA); the
    /// parameters, gradients, SGD step, momentum/EMA target, MoCo's queue and the checkpoints stay float32.
    /// Recorded in the checkpoint's contracam.train metadata and report.
    #[arg(long, value_parser = ["fp32", "bf16-mixed"])]
    pub precision: Option<String>,
    /// Convolution weights and input views in the channels_last (NHWC) memory format (the same values,
    /// another layout; recorded as --precision is).
    #[arg(long)]
    pub channels_last: bool,
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
            TrainCommand::Bench(a) => GlobalArgs::of(Some(&a.device), None, Some(&a.threads), None),
            TrainCommand::Classifier(a) => GlobalArgs::of(
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
        TrainCommand::Classifier(a) => train_classifier_cmd(&a, global),
        TrainCommand::Bench(a) => bench_cmd(&a, global),
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
            apply_precision_flags(&a, &mut cfg);
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

/// --precision and --channels-last override the suite's `[train]` precision and channels_last.
fn apply_precision_flags(a: &SslArgs, cfg: &mut SuiteConfig) {
    if let Some(p) = a.precision.as_deref().and_then(|p| p.parse().ok()) {
        cfg.train.precision = p;
    }
    if a.channels_last {
        cfg.train.channels_last = true;
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

/// `train classifier`: the library's supervised run on a built split, its checkpoint and report.
fn train_classifier_cmd(a: &ClassifierArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let recipe = a.recipe();
    // Errors name the flag: the recipe's keys are the flags' names.
    recipe
        .validate(None)
        .map_err(|e| anyhow::anyhow!("--{}", flag_of(&e.to_string())))?;
    let report_path = a.out.with_extension("report.json");
    anyhow::ensure!(
        report_path != a.out,
        "--out {} ends in .report.json, where its report would go; name the checkpoint .safetensors",
        a.out.display()
    );
    let ckpt = classifier_checkpointing(a)?;
    let data_dir = a
        .data_dir
        .clone()
        .unwrap_or_else(contracam::data::source::store::default_data_dir);
    let source: Arc<dyn Source> = Arc::new(
        open_split(&a.dataset, &data_dir).with_context(|| format!("--dataset {}", a.dataset))?,
    );
    let seed = global.seed.unwrap_or(0);
    let opts = ClassifierRunOptions {
        workers: a.workers.unwrap_or_else(rayon::current_num_threads),
        device: global.device.resolve()?,
    };
    let bar = Progress::new("train", None, Unit::Items("steps"), global.quiet);
    let (model, report) =
        train_classifier_checkpointed(&recipe, source.clone(), &opts, seed, &ckpt, &bar)
            .with_context(|| format!("--dataset {}", a.dataset))?;
    bar.finish();
    model.save(&a.out, &checkpoint_metadata(&recipe, seed, source.as_ref()))?;
    std::fs::write(&report_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", report_path.display()))?;
    eprintln!(
        "wrote {} and {} ({} steps, final loss {:.4}, train accuracy {:.2}%, {:.1} s)",
        a.out.display(),
        report_path.display(),
        report.steps,
        report.epoch_loss.last().copied().unwrap_or(f64::NAN),
        report.train_accuracy,
        report.seconds
    );
    Ok(ExitCode::SUCCESS)
}

/// The resume file and checkpoint policy of `train classifier`'s flags; the state may replace the file
/// it resumed from, never the model or its report.
fn classifier_checkpointing(a: &ClassifierArgs) -> anyhow::Result<Checkpointing> {
    let report = a.out.with_extension("report.json");
    let mut inputs: Vec<(&str, &std::path::Path)> = vec![];
    if let Some(r) = &a.resume {
        inputs.push(("--resume", r));
    }
    refuse_input_overwrite(&a.out, "--out", &inputs)?;
    refuse_input_overwrite(&report, "--out's report", &inputs)?;
    let policy = match a.checkpoint_every {
        None => None,
        Some(n) => {
            let state = a
                .state
                .clone()
                .unwrap_or_else(|| a.out.with_extension("state.safetensors"));
            anyhow::ensure!(
                state != a.out && state != report,
                "--state {} is also --out or its report: the training state needs a file of its own",
                state.display()
            );
            Some(CheckpointPolicy {
                path: state,
                every_epochs: n as usize,
            })
        }
    };
    Ok(Checkpointing {
        resume: a.resume.clone(),
        policy,
    })
}

/// A recipe error (`key = value: why`) with its key written as the flag (`base_lr` → `base-lr`).
fn flag_of(msg: &str) -> String {
    match msg.split_once(' ') {
        Some((key, rest)) => format!("{} {rest}", key.replace('_', "-")),
        None => msg.to_string(),
    }
}

/// `train bench`: both sides, alternating, then the table.
fn bench_cmd(a: &BenchArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    use contracam::train::bench;
    let threads = rayon::current_num_threads();
    let python = a.python.clone().or_else(|| {
        let p = PathBuf::from(".venv/bin/python");
        p.is_file().then_some(p)
    });
    let cases = match a.only.as_deref() {
        Some("smoke") => vec![bench::SMOKE],
        Some(_) => vec![bench::R18_224],
        None => vec![bench::SMOKE, bench::R18_224],
    };
    let (rounds, steps) = if a.quick {
        (2, 2)
    } else {
        (a.rounds as usize, a.steps as usize)
    };
    let opts = bench::BenchOptions {
        python,
        script: a.script.clone(),
        dir: a.dir.clone(),
        cases,
        rounds,
        steps,
        warmup: a.warmup as usize,
        threads,
        workers: a.workers.unwrap_or(threads),
        images: a.images,
        precision: a
            .precision
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--precision: {e}"))?,
        channels_last: a.channels_last,
    };
    let device = global.device.resolve()?;
    eprintln!(
        "train bench: {threads} libtorch thread(s), {} loader worker(s), {rounds} round(s) of {steps} step(s), device {device:?}, {}{}",
        opts.workers,
        opts.precision,
        if opts.channels_last { ", channels_last" } else { "" }
    );
    let rows = bench::run(&opts, device, &mut |line| eprintln!("{line}"))?;
    print!("{}", bench::markdown(&rows));
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("writing --json {}", p.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
