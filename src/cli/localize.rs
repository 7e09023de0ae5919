//! `contracam localize ...`
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use contracam::data::formats::safetensors::{read_tensors, write_tensors, SafetensorsReader};
use contracam::localize::boxes::{format_box_line, BoxOptions};
use contracam::localize::contrastive_cam::{cam_inputs, contrastive_cam_batched};
use contracam::localize::mask_clean::CleanOptions;
use contracam::localize::postprocess::{
    boxes_dataset, crf_dataset, CrfDatasetOptions, TensorRef, CRF_KEY, MASK_KEY,
};
use contracam::localize::CamConfig;
use contracam::model::{Classifier, ContrastiveModel};
use contracam::util::output::{refuse_input_overwrite, write_atomic};
use contracam::util::progress::{Progress, Unit};

use super::{per_image, DeviceArg, GlobalArgs, QuietArg, ThreadsArg};

#[derive(Debug, Subcommand)]
pub enum LocalizeCommand {
    /// Contrastive CAM of a batch of images, as the official code (negatives = the rest of each batch).
    Cam(CamArgs),
    /// Dense CRF with the official recipe (pydensecrf-exact) over CAMs; optionally cleans the masks.
    Crf(CrfArgs),
    /// Boxes from masks, as the official extract_boxes (contours, min area, margin, normalised xyxy).
    Boxes(BoxesArgs),
    /// A split of a built dataset → CAMs → CRF → masks (PNG), boxes (official box file) and `.npy` score
    /// maps; resumable (rerun the same command to continue a stopped run).
    Dataset(DatasetArgs),
    /// ContraCAM speed side by side with the official code: the iterative CAM (expand 2, 10 iterations)
    /// here and the official utils/gradcam.py in scripts/bench_contracam_pytorch.py (plain PyTorch), on the
    /// same model file, images, batch and threads, for the smoke network, ResNet-18 and ResNet-50 at 224 px.
    /// The first round checks that both sides' CAMs agree (max |Δ| ≤ 1e-4) and fails otherwise; the sides
    /// alternate round by round; wall and CPU time are both reported.
    Bench(LocalizeBenchArgs),
}

#[derive(Debug, Args)]
pub struct LocalizeBenchArgs {
    /// Python with torch for the PyTorch side (default: .venv/bin/python when it exists; none: ours only,
    /// no agreement check).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// The PyTorch side.
    #[arg(long, default_value = "scripts/bench_contracam_pytorch.py")]
    pub script: PathBuf,
    /// Work folder (model files, images, the PyTorch side's CAMs).
    #[arg(long, default_value = "target/bench-localize")]
    pub dir: PathBuf,
    /// Only this configuration.
    #[arg(long, value_parser = ["smoke", "r18-224", "r50-224"])]
    pub only: Option<String>,
    /// Rounds per configuration, each timing both sides (alternating which goes first).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub rounds: u64,
    /// Timed batches per measurement (after an untimed one-iteration CAM of the first batch).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub steps: u64,
    /// Images per batch, instead of each configuration's own (smoke 64, r18-224 32, r50-224 16); the rest of
    /// the batch are the negatives.
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..=4096))]
    pub batch: Option<u64>,
    /// 2 rounds of 1 batch: a quick look rather than a measurement.
    #[arg(long)]
    pub quick: bool,
    /// Also write the measurements (every round) and the agreement as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub threads: ThreadsArg,
}

/// `localize dataset --preset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PresetArg {
    /// Expand 1, one iteration, soft masks.
    BgMixup,
}

#[derive(Debug, Args)]
pub struct DatasetArgs {
    /// Checkpoint: a contrastive model (ContraCAM), or a supervised classifier with --classifier-cam.
    #[arg(long)]
    pub weights: PathBuf,
    /// NAME[:SPLIT] of a dataset built under --data-dir, or DIR[:SPLIT] of a dataset folder holding
    /// `index/<split>.jsonl`; the split defaults to train.
    #[arg(long)]
    pub dataset: String,
    /// Where built datasets live (default $CONTRACAM_DATA, else $XDG_CACHE_HOME/contracam, else
    /// ~/.cache/contracam).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Output folder: masks/<id>.png, scoremaps/<id>.npy, boxes.txt, per-chunk markers, run.json, DONE.json
    /// (and soft_masks/ with --soft-masks). A folder holding a run with the same settings is resumed; other
    /// settings are refused.
    #[arg(long)]
    pub out: PathBuf,
    /// Official settings for a purpose: `bg-mixup` = --expand-res 1 --iters 1 --soft-masks (the masks
    /// BG-Mixup reads); explicit values that differ are refused.
    #[arg(long, value_enum)]
    pub preset: Option<PresetArg>,
    /// Resolution expansion: 1, 2 (stride 1 in layer4[0]) or 4 (also layer3[0]) [default: 2; 1 with
    /// --preset bg-mixup].
    #[arg(long, value_parser = parse_expand_res)]
    pub expand_res: Option<u32>,
    /// ContraCAM iterations, at least 1 (official boxes and masks: 10) [default: 10; 1 with --preset
    /// bg-mixup].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub iters: Option<u32>,
    /// Also write soft_masks/<class>/<file>: each CAM (not CRF'd, not binarised) resized back to the image's
    /// size (torch bilinear), ×255 truncated to 8-bit gray, in the image's own format (JPEG quality 75 or
    /// PNG), as the official save_masks writes BG-Mixup's masks.
    #[arg(long)]
    pub soft_masks: bool,
    /// Keep negative α (Table 1's "w/o negative signal removal").
    #[arg(long)]
    pub no_negative_removal: bool,
    /// Images per CAM batch and per resumable chunk (official 256, unshuffled: index order); the other images
    /// of a batch are ContraCAM's negatives, so this changes results. A last batch of one image is refused.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Side of the square CAM input (`Resize((S, S))`, PIL bilinear); the masks and score maps are S×S.
    #[arg(long, default_value_t = 224, value_parser = clap::value_parser!(u32).range(16..=4096))]
    pub image_size: u32,
    /// --weights is a supervised classifier: `cam` (wsolevaluation's CAM) or `grad-cam` of each sample's
    /// ground-truth class (its first label). --iters and --no-negative-removal do not apply.
    #[arg(long, value_enum)]
    pub classifier_cam: Option<ClassifierCamArg>,
    /// Fix the official clean_mask quirk (skip label 0 rather than the first surviving component).
    #[arg(long)]
    pub keep_first_component: bool,
    /// Keep only the largest component before box extraction (official `single_instance`).
    #[arg(long)]
    pub single_instance: bool,
    /// Stop after this many chunks (rerun to continue), to split a run over several jobs.
    #[arg(long)]
    pub max_chunks: Option<usize>,
    /// When the run completes, also write overlays.png: for N images of each of the first 8 classes, the
    /// image blended with its CAM (jet colours) and its mask's outline in white, one row per class.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=64))]
    pub overlays: u16,
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub threads: ThreadsArg,
    #[command(flatten)]
    pub quiet: QuietArg,
}

/// `clean_mask` presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CleanMode {
    /// seg: components > 0.1 % of the image.
    Seg,
    /// save_box: components > 1 % of the image.
    Box,
    /// save_box with single_instance: the largest component only.
    Single,
}

#[derive(Debug, Args)]
pub struct CrfArgs {
    /// safetensors file with the images, uint8 (N, H, W, 3) RGB (`data synth` writes them as `images` in
    /// `<split>.safetensors`).
    #[arg(long)]
    pub images: PathBuf,
    /// Name of the image tensor inside --images.
    #[arg(long, default_value = "images")]
    pub images_key: String,
    /// safetensors file with the CAMs, float32 (N, 1, H, W) or (N, H, W), values in [0, 1] (`localize cam`
    /// writes them as `cam`); NaN, infinite or out-of-range values are an error naming the image.
    #[arg(long)]
    pub cams: PathBuf,
    /// Name of the CAM tensor inside --cams.
    #[arg(long, default_value = "cam")]
    pub cams_key: String,
    /// Output safetensors: `crf` float32 (N, 1, H, W), and `mask` with --clean. Must not be an input file.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write each mask (`mask` with --clean, else `crf`) as an 8-bit grayscale PNG `DIR/<row>.png`
    /// (value × 255), what `eval miou --masks` and `--pred` read; row i is sample id i of the index `data
    /// synth` writes.
    #[arg(long, value_name = "DIR")]
    pub masks_dir: Option<PathBuf>,
    /// Also clean the CRF output into a {0, 1} `mask`.
    #[arg(long, value_enum)]
    pub clean: Option<CleanMode>,
    /// Fix the official clean_mask quirk: skip label 0 instead of the first surviving component
    /// (all-foreground CRFs then give a full mask instead of an empty one).
    #[arg(long)]
    pub keep_first_component: bool,
    /// Mean-field iterations (official: 5; 0 gives the unary's softmax).
    #[arg(long, default_value_t = 5)]
    pub iterations: usize,
    /// Images held in memory at once (at least 1; memory is checked before work starts).
    #[arg(long, default_value_t = 256)]
    pub chunk: usize,
    #[command(flatten)]
    pub threads: ThreadsArg,
    #[command(flatten)]
    pub quiet: QuietArg,
}

/// Output formats of `localize boxes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BoxFormat {
    /// A JSON list per image of [x1, y1, x2, y2].
    Json,
    /// The official box-file text (`<index> x1,y1,x2,y2 ...`, 6 decimals).
    Txt,
}

#[derive(Debug, Args)]
pub struct BoxesArgs {
    /// safetensors file with masks, float32 or uint8, (N, 1, H, W) or (N, H, W) (e.g. `localize crf
    /// --clean` output); foreground is > 0.5·max per image, as the official _extract_box.
    #[arg(long)]
    pub masks: PathBuf,
    /// Name of the mask tensor inside --masks.
    #[arg(long, default_value = "mask")]
    pub masks_key: String,
    /// Each side grows by this fraction of the box size (official --box_margin 0.2); finite and ≥ 0.
    #[arg(long, default_value_t = 0.2)]
    pub margin: f64,
    /// Minimum box area as a fraction of the image, in [0, 1] (official 0.01).
    #[arg(long, default_value_t = 0.01)]
    pub min_area: f64,
    /// Fix the official quirk: boxes of outer borders only, no boxes of background holes.
    #[arg(long)]
    pub outer_only: bool,
    /// Keep only the largest box per image.
    #[arg(long)]
    pub largest_only: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: BoxFormat,
    /// Output file (JSON or box-file text, see --format). Must not be the --masks file.
    #[arg(long)]
    pub out: PathBuf,
    /// Masks held in memory at once (at least 1).
    #[arg(long, default_value_t = 1024)]
    pub chunk: usize,
    #[command(flatten)]
    pub threads: ThreadsArg,
    #[command(flatten)]
    pub quiet: QuietArg,
}

impl LocalizeCommand {
    /// The run-wide options this command was given.
    pub fn options(&self) -> GlobalArgs {
        match self {
            LocalizeCommand::Cam(a) => {
                GlobalArgs::of(Some(&a.device), None, Some(&a.threads), Some(&a.quiet))
            }
            LocalizeCommand::Crf(a) => GlobalArgs::of(None, None, Some(&a.threads), Some(&a.quiet)),
            LocalizeCommand::Boxes(a) => {
                GlobalArgs::of(None, None, Some(&a.threads), Some(&a.quiet))
            }
            LocalizeCommand::Dataset(a) => {
                GlobalArgs::of(Some(&a.device), None, Some(&a.threads), Some(&a.quiet))
            }
            LocalizeCommand::Bench(a) => {
                GlobalArgs::of(Some(&a.device), None, Some(&a.threads), None)
            }
        }
    }
}

pub fn run(cmd: LocalizeCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    // rayon's global pool already has --threads workers (cli::main).
    match cmd {
        LocalizeCommand::Cam(a) => cam(a, global),
        LocalizeCommand::Crf(a) => run_crf(a, global),
        LocalizeCommand::Boxes(a) => run_boxes(a, global),
        LocalizeCommand::Dataset(a) => run_dataset(a, global),
        LocalizeCommand::Bench(a) => bench_cmd(&a, global),
    }
}

/// `localize bench`: both sides, alternating, then the table.
fn bench_cmd(a: &LocalizeBenchArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    use contracam::localize::bench;
    let threads = rayon::current_num_threads();
    let python = a.python.clone().or_else(|| {
        let p = PathBuf::from(".venv/bin/python");
        p.is_file().then_some(p)
    });
    let mut cases: Vec<bench::Case> = bench::CASES
        .into_iter()
        .filter(|c| a.only.as_deref().is_none_or(|k| k == c.key))
        .collect();
    if let Some(b) = a.batch {
        cases.iter_mut().for_each(|c| c.batch = b as usize);
    }
    let (rounds, steps) = if a.quick {
        (2, 1)
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
        threads,
        cam: CamConfig {
            expand_res: 2,
            iters: 10,
            negative_removal: true,
        },
        seed: 0,
    };
    let device = global.device.resolve()?;
    let load = contracam::util::threads::current_load();
    eprintln!(
        "localize bench: ContraCAM expand 2 x 10 iterations, {threads} libtorch thread(s), {rounds} round(s) \
         of {steps} batch(es), device {device:?}, load average {}, freed CPU memory reused here: {}",
        load.map_or("unknown".into(), |l| format!("{:.2}", l.average_1min)),
        contracam::util::cpu_memory::reuse_freed_memory()
    );
    if opts.python.is_none() {
        eprintln!("localize bench: no .venv/bin/python and no --python: our side only, no agreement check");
    }
    let rows = bench::run(&opts, device, &mut |line| eprintln!("{line}"))?;
    print!("{}", bench::markdown(&rows));
    if let Some(p) = &a.json {
        let report = serde_json::json!({
            "threads": threads,
            "device": format!("{device:?}"),
            "expand_res": opts.cam.expand_res,
            "iters": opts.cam.iters,
            "rounds": rounds,
            "steps": steps,
            "load_average_1min_before": load.map(|l| l.average_1min),
            "load_average_1min_after": contracam::util::threads::current_load().map(|l| l.average_1min),
            "rows": rows,
        });
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing --json {}", p.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn run_dataset(a: DatasetArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    use contracam::localize::dataset::{
        localize_dataset, open_split, CamMethod, LocalizeModel, LocalizeOptions,
    };
    let data_dir = a
        .data_dir
        .clone()
        .unwrap_or_else(contracam::data::source::store::default_data_dir);
    let source = open_split(&a.dataset, &data_dir)?;
    let index_file = source.index_file.clone();
    let device = global.device.resolve()?;
    let (expand_res, iters) = match a.preset {
        None => (a.expand_res.unwrap_or(2), a.iters.unwrap_or(10)),
        Some(PresetArg::BgMixup) => {
            for (flag, v) in [("--expand-res", a.expand_res), ("--iters", a.iters)] {
                if v.is_some_and(|v| v != 1) {
                    anyhow::bail!("--preset bg-mixup sets {flag} 1; drop {flag} or the preset");
                }
            }
            (1, 1)
        }
    };
    let soft_masks = a.soft_masks || a.preset == Some(PresetArg::BgMixup);
    let method = match a.classifier_cam {
        None => CamMethod::Contrastive(CamConfig {
            expand_res,
            iters: iters as usize,
            negative_removal: !a.no_negative_removal,
        }),
        Some(ClassifierCamArg::Cam) => CamMethod::ClassifierCam { expand_res },
        Some(ClassifierCamArg::GradCam) => CamMethod::GradCam { expand_res },
    };
    let load_err = || format!("loading --weights {}", a.weights.display());
    let model = match method {
        CamMethod::Contrastive(_) => LocalizeModel::Contrastive(Box::new(
            ContrastiveModel::load(&a.weights, device).with_context(load_err)?,
        )),
        _ => {
            LocalizeModel::Classifier(Classifier::load(&a.weights, device).with_context(load_err)?)
        }
    };
    let mut opts = LocalizeOptions {
        method,
        batch_size: a.batch_size,
        image_size: a.image_size,
        workers: rayon::current_num_threads(),
        max_chunks: a.max_chunks,
        soft_masks,
        overlays: usize::from(a.overlays),
        ..Default::default()
    };
    if a.keep_first_component {
        opts.mask_clean = opts.mask_clean.fixed();
        opts.box_clean = opts.box_clean.fixed();
    }
    if a.single_instance {
        opts.box_clean.single = true;
    }
    let n = contracam::data::loader::Source::len(&source) as u64;
    let pb = Progress::new("localize", Some(n), Unit::Items("images"), global.quiet);
    let summary = localize_dataset(
        std::sync::Arc::new(source),
        &index_file,
        &model,
        &a.weights,
        &a.out,
        &opts,
        &|done| pb.set_position(done as u64),
    )
    .inspect_err(|_| pb.abandon())
    .with_context(|| format!("localize dataset {}", a.dataset))?;
    pb.finish();
    if !global.quiet {
        if summary.complete {
            eprintln!(
                "localize: {} images in {} chunks ({} resumed), {} boxes → {}",
                summary.samples,
                summary.chunks,
                summary.resumed_chunks,
                summary.boxes,
                a.out.display()
            );
        } else {
            eprintln!(
                "localize: stopped after --max-chunks; rerun the same command to continue ({})",
                a.out.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn count_images(path: &std::path::Path, key: &str) -> anyhow::Result<u64> {
    let r = SafetensorsReader::open(path)?;
    Ok(r.info(key)?.shape.first().copied().unwrap_or(0) as u64)
}

fn run_crf(a: CrfArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    refuse_input_overwrite(
        &a.out,
        "--out",
        &[("--images", &a.images), ("--cams", &a.cams)],
    )?;
    if let Some(d) = &a.masks_dir {
        per_image::prepare_dir(
            d,
            "--masks-dir",
            &[("--images", &a.images), ("--cams", &a.cams)],
            &[("--out", &a.out)],
        )?;
    }
    let clean = a.clean.map(|m| {
        let c = match m {
            CleanMode::Seg => CleanOptions::seg(),
            CleanMode::Box => CleanOptions::boxes(),
            CleanMode::Single => CleanOptions::single(),
        };
        if a.keep_first_component {
            c.fixed()
        } else {
            c
        }
    });
    let mut opts = CrfDatasetOptions {
        clean,
        chunk: a.chunk,
        ..Default::default()
    };
    opts.params.iterations = a.iterations;
    let images = TensorRef::new(&a.images, &a.images_key);
    let cams = TensorRef::new(&a.cams, &a.cams_key);
    let n = count_images(&a.images, &a.images_key)?;
    let pb = Progress::new("crf", Some(n), Unit::Items("images"), global.quiet);
    let t = std::time::Instant::now();
    let summary = crf_dataset(&images, &cams, &a.out, &opts, &|done| {
        pb.set_position(done as u64)
    })
    .inspect_err(|_| pb.abandon())
    .with_context(|| format!("CRF of {images} with {cams}"))?;
    pb.finish();
    if let Some(d) = &a.masks_dir {
        let key = if a.clean.is_some() { MASK_KEY } else { CRF_KEY };
        per_image::write_mask_pngs(d, &a.out, key, a.chunk)
            .with_context(|| format!("writing --masks-dir {}", d.display()))?;
    }
    if !global.quiet {
        eprintln!(
            "crf: {} images of {}×{} in {:.2} s → {}{}",
            summary.images,
            summary.width,
            summary.height,
            t.elapsed().as_secs_f64(),
            a.out.display(),
            a.masks_dir
                .as_ref()
                .map(|d| format!(" and {}/<row>.png", d.display()))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn run_boxes(a: BoxesArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    refuse_input_overwrite(&a.out, "--out", &[("--masks", &a.masks)])?;
    let opts = BoxOptions {
        min_area_frac: a.min_area,
        margin: a.margin,
        include_holes: !a.outer_only,
        largest_only: a.largest_only,
    };
    opts.validate().map_err(anyhow::Error::msg)?;
    let masks = TensorRef::new(&a.masks, &a.masks_key);
    let n = count_images(&a.masks, &a.masks_key)?;
    let pb = Progress::new("boxes", Some(n), Unit::Items("masks"), global.quiet);
    let boxes = boxes_dataset(&masks, &opts, a.chunk, &|done| pb.set_position(done as u64))
        .inspect_err(|_| pb.abandon())
        .with_context(|| format!("boxes of {masks}"))?;
    pb.finish();
    let text = match a.format {
        BoxFormat::Json => serde_json::to_string(&boxes)? + "\n",
        BoxFormat::Txt => boxes
            .iter()
            .enumerate()
            .map(|(i, b)| format_box_line(&i.to_string(), b) + "\n")
            .collect(),
    };
    write_atomic(&a.out, text.as_bytes())?;
    if !global.quiet {
        eprintln!(
            "boxes: {} images, {} boxes → {}",
            boxes.len(),
            boxes.iter().map(Vec::len).sum::<usize>(),
            a.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct CamArgs {
    /// Model checkpoint (safetensors, torchvision-style names `encoder.*`, `projector.*`).
    #[arg(long)]
    pub weights: PathBuf,
    /// safetensors file with the images: float32 (N, 3, H, W) already ImageNet-normalised, or uint8
    /// (N, H, W, 3) RGB, normalised here as torchvision's ToTensor + Normalize (what `data synth` writes).
    /// NaN or infinite values are an error.
    #[arg(long)]
    pub inputs: PathBuf,
    /// Name of the image tensor inside --inputs.
    #[arg(long, default_value = "images")]
    pub input_key: String,
    /// Resolution expansion: 1, 2 (stride 1 in layer4[0]) or 4 (also layer3[0]).
    #[arg(long, default_value_t = 1, value_parser = parse_expand_res)]
    pub expand_res: u32,
    /// Iterations of ContraCAM, at least 1 (the official boxes use 10).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub iters: u32,
    /// Keep negative α (Table 1's "w/o negative signal removal").
    #[arg(long)]
    pub no_negative_removal: bool,
    /// Images per ContraCAM batch, at least 2; the other images of a batch are the negatives, so this
    /// changes results (official: 256, unshuffled). A last batch of a single image is refused.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Output safetensors file; tensor `cam` (N, 1, H, W) float32 in [0, 1], what `localize crf --cams`
    /// reads. Must not be an input file.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write each CAM as `DIR/<row>.npy` (float32 H×W), the score maps `eval maxboxacc --scoremaps`
    /// reads; row i is sample id i of the index `data synth` writes.
    #[arg(long, value_name = "DIR")]
    pub scoremaps: Option<PathBuf>,
    /// --weights is a supervised classifier (e.g. an imported torchvision ResNet): compute its class map
    /// instead of ContraCAM. `cam`: wsolevaluation's CAM (fc weights × layer4, resized with OpenCV's bicubic
    /// and min-max normalised as its score maps; expand-res 2 is its stride-1 layer4); `grad-cam`: the official
    /// code's supervised Grad-CAM. --iters and --no-negative-removal do not apply.
    #[arg(long, value_enum)]
    pub classifier_cam: Option<ClassifierCamArg>,
    /// Integer (N,) tensor of class labels inside --inputs for --classifier-cam (wsolevaluation uses the
    /// ground truth); without it, each image's arg-max class.
    #[arg(long)]
    pub labels_key: Option<String>,
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub threads: ThreadsArg,
    #[command(flatten)]
    pub quiet: QuietArg,
}

/// Classifier maps of `localize cam --classifier-cam`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClassifierCamArg {
    Cam,
    GradCam,
}

fn parse_expand_res(s: &str) -> Result<u32, String> {
    match s.trim() {
        "1" => Ok(1),
        "2" => Ok(2),
        "4" => Ok(4),
        _ => Err(format!("must be 1, 2 or 4, got '{s}'")),
    }
}

fn cam(a: CamArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    refuse_input_overwrite(
        &a.out,
        "--out",
        &[("--inputs", &a.inputs), ("--weights", &a.weights)],
    )?;
    if let Some(d) = &a.scoremaps {
        per_image::prepare_dir(
            d,
            "--scoremaps",
            &[("--inputs", &a.inputs), ("--weights", &a.weights)],
            &[("--out", &a.out)],
        )?;
    }
    if let Some(mode) = a.classifier_cam {
        return classifier_cam(a, mode, global);
    }
    let device = global.device.resolve()?;
    let inputs = read_tensors(&a.inputs).context("reading --inputs")?;
    let x = cam_inputs(inputs.get(&a.input_key)?)
        .with_context(|| format!("{} tensor '{}'", a.inputs.display(), a.input_key))?;
    let shape = x.size();
    let model = ContrastiveModel::load(&a.weights, device)
        .with_context(|| format!("loading --weights {}", a.weights.display()))?;
    let cfg = CamConfig {
        expand_res: a.expand_res,
        iters: a.iters as usize,
        negative_removal: !a.no_negative_removal,
    };
    let pb = Progress::new(
        "cam",
        Some(shape[0] as u64),
        Unit::Items("images"),
        global.quiet,
    );
    let cam = contrastive_cam_batched(&model, &x, &cfg, a.batch_size, &|done| {
        pb.set_position(done as u64)
    })
    .inspect_err(|_| pb.abandon())
    .with_context(|| format!("contrastive CAM of {}", a.inputs.display()))?;
    pb.finish();
    let meta = BTreeMap::from([
        (
            "contracam.cam_config".to_string(),
            serde_json::to_string(&cfg)?,
        ),
        ("contracam.batch_size".to_string(), a.batch_size.to_string()),
        (
            "contracam.weights".to_string(),
            a.weights.display().to_string(),
        ),
        (
            "contracam.version".to_string(),
            contracam::VERSION.to_string(),
        ),
    ]);
    write_tensors(&a.out, &[("cam".to_string(), cam.shallow_clone())], &meta)?;
    write_scoremaps_of(&a, &cam)?;
    if !global.quiet {
        eprintln!(
            "wrote {} (cam [{}, 1, {}, {}])",
            a.out.display(),
            shape[0],
            shape[2],
            shape[3]
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn classifier_cam(
    a: CamArgs,
    mode: ClassifierCamArg,
    global: &GlobalArgs,
) -> anyhow::Result<ExitCode> {
    use contracam::localize::classifier_cam::{class_activation_scoremaps, grad_cam};
    anyhow::ensure!(a.batch_size > 0, "--batch-size must be at least 1");
    let device = global.device.resolve()?;
    let model = Classifier::load(&a.weights, device)
        .with_context(|| format!("loading --weights {}", a.weights.display()))?;
    let inputs = read_tensors(&a.inputs).context("reading --inputs")?;
    let x = cam_inputs(inputs.get(&a.input_key)?)
        .with_context(|| format!("{} tensor '{}'", a.inputs.display(), a.input_key))?;
    let labels = match &a.labels_key {
        Some(k) => Some(inputs.get(k).context("--labels-key")?.shallow_clone()),
        None => None,
    };
    let n = x.size().first().copied().unwrap_or(0);
    let mut outs = Vec::new();
    let mut start = 0;
    while start < n {
        let len = (a.batch_size as i64).min(n - start);
        let xb = x.narrow(0, start, len);
        let lb = match &labels {
            Some(l) if l.size().first() == Some(&n) => Some(l.narrow(0, start, len)),
            Some(l) => anyhow::bail!(
                "{}: labels '{}' have shape {:?}, the images {n} rows",
                a.inputs.display(),
                a.labels_key.as_deref().unwrap_or_default(),
                l.size()
            ),
            None => None,
        };
        let cam = match (mode, lb) {
            (ClassifierCamArg::GradCam, lb) => grad_cam(&model, &xb, lb.as_ref(), a.expand_res)?,
            (ClassifierCamArg::Cam, Some(lb)) => {
                class_activation_scoremaps(&model, &xb, &lb, a.expand_res)?
            }
            (ClassifierCamArg::Cam, None) => {
                let pred =
                    tch::no_grad(|| model.logits(&xb.to_device(device), false).argmax(1, false));
                class_activation_scoremaps(&model, &xb, &pred, a.expand_res)?
            }
        };
        outs.push(cam.to_device(tch::Device::Cpu));
        start += len;
    }
    anyhow::ensure!(!outs.is_empty(), "{}: no images", a.inputs.display());
    let cam = tch::Tensor::cat(&outs, 0);
    let meta = BTreeMap::from([
        ("contracam.classifier_cam".to_string(), format!("{mode:?}")),
        ("contracam.expand_res".to_string(), a.expand_res.to_string()),
        (
            "contracam.weights".to_string(),
            a.weights.display().to_string(),
        ),
        (
            "contracam.version".to_string(),
            contracam::VERSION.to_string(),
        ),
    ]);
    write_tensors(&a.out, &[("cam".to_string(), cam.shallow_clone())], &meta)?;
    write_scoremaps_of(&a, &cam)?;
    if !global.quiet {
        eprintln!("wrote {} ({mode:?} of {n} images)", a.out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `--scoremaps`: each (…, H, W) map of `cam` as `<dir>/<row>.npy`.
fn write_scoremaps_of(a: &CamArgs, cam: &tch::Tensor) -> anyhow::Result<()> {
    let Some(dir) = &a.scoremaps else {
        return Ok(());
    };
    let s = cam.size();
    anyhow::ensure!(s.len() >= 3, "CAM of shape {s:?} has no (H, W) maps");
    let (n, h, w) = (
        s[0] as usize,
        s[s.len() - 2] as usize,
        s[s.len() - 1] as usize,
    );
    let values = Vec::<f32>::try_from(
        cam.to_device(tch::Device::Cpu)
            .to_kind(tch::Kind::Float)
            .flatten(0, -1),
    )?;
    per_image::write_scoremaps(dir, &values, n, h, w)
        .with_context(|| format!("writing --scoremaps {}", dir.display()))
}
