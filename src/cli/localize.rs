//! `contracam localize ...`
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use contracam::localize::boxes::{format_box_line, BoxOptions};
use contracam::localize::mask_clean::CleanOptions;
use contracam::localize::postprocess::{boxes_dataset, crf_dataset, CrfDatasetOptions, TensorRef};
use contracam::localize::{contrastive_cam, CamConfig};
use contracam::model::{Classifier, ContrastiveModel};
use contracam::util::tensor_file::{self, TensorFile};
use tch::{Kind, Tensor};

use super::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum LocalizeCommand {
    /// Contrastive CAM of a batch of images, as the official code (negatives = the rest of each batch).
    Cam(CamArgs),
    /// Dense CRF with the official recipe (pydensecrf-exact) over CAMs; optionally cleans the masks.
    Crf(CrfArgs),
    /// Boxes from masks, as the official extract_boxes (contours, min area, margin, normalised xyxy).
    Boxes(BoxesArgs),
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
    /// safetensors file with the images, uint8 (N, H, W, 3) RGB.
    #[arg(long)]
    pub images: PathBuf,
    #[arg(long, default_value = "images")]
    pub images_key: String,
    /// safetensors file with the CAMs, float32 (N, 1, H, W) in [0, 1].
    #[arg(long)]
    pub cams: PathBuf,
    #[arg(long, default_value = "cams")]
    pub cams_key: String,
    /// Output safetensors: `crf` float32 (N, 1, H, W), and `mask` with --clean.
    #[arg(long)]
    pub out: PathBuf,
    /// Also clean the CRF output into a {0, 1} `mask`.
    #[arg(long, value_enum)]
    pub clean: Option<CleanMode>,
    /// Fix the official clean_mask quirk: skip label 0 instead of the first surviving component
    /// (all-foreground CRFs then give a full mask instead of an empty one).
    #[arg(long)]
    pub keep_first_component: bool,
    /// Mean-field iterations (official: 5).
    #[arg(long, default_value_t = 5)]
    pub iterations: usize,
    /// Images held in memory at once.
    #[arg(long, default_value_t = 256)]
    pub chunk: usize,
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
    /// safetensors file with masks, float32 or uint8, (N, 1, H, W) or (N, H, W).
    #[arg(long)]
    pub masks: PathBuf,
    #[arg(long, default_value = "mask")]
    pub masks_key: String,
    /// Each side grows by this fraction of the box size (official --box_margin 0.2).
    #[arg(long, default_value_t = 0.2)]
    pub margin: f64,
    /// Minimum box area as a fraction of the image (official 0.01).
    #[arg(long, default_value_t = 0.01)]
    pub min_area: f64,
    /// Fix the official quirk: boxes of outer borders only, no boxes of background holes.
    #[arg(long)]
    pub outer_only: bool,
    /// Keep only the largest box per image.
    #[arg(long)]
    pub largest_only: bool,
    #[arg(long, value_enum, default_value = "json")]
    pub format: BoxFormat,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1024)]
    pub chunk: usize,
}

pub fn run(cmd: LocalizeCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let pool = {
        let mut b = rayon::ThreadPoolBuilder::new();
        if let Some(t) = global.threads {
            b = b.num_threads(t);
        }
        b.build().context("building the thread pool")?
    };
    pool.install(|| match cmd {
        LocalizeCommand::Cam(a) => cam(a, global),
        LocalizeCommand::Crf(a) => run_crf(a, global),
        LocalizeCommand::Boxes(a) => run_boxes(a, global),
    })
}

fn progress_bar(n: u64, quiet: bool, what: &str) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(n);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} {bar:40} {pos}/{len} [{elapsed_precise} < {eta_precise}]",
    ) {
        pb.set_style(style);
    }
    pb.set_message(what.to_string());
    pb
}

fn count_images(path: &std::path::Path, key: &str) -> anyhow::Result<u64> {
    let r = contracam::localize::tensor_stream::SafetensorsReader::open(path)?;
    Ok(r.info(key)?.shape.first().copied().unwrap_or(0) as u64)
}

fn run_crf(a: CrfArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
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
    let pb = progress_bar(count_images(&a.images, &a.images_key)?, global.quiet, "crf");
    let t = std::time::Instant::now();
    let summary = crf_dataset(&images, &cams, &a.out, &opts, &|done| {
        pb.set_position(done as u64)
    })
    .with_context(|| format!("CRF of {images} with {cams}"))?;
    pb.finish_and_clear();
    eprintln!(
        "crf: {} images of {}×{} in {:.2} s → {}",
        summary.images,
        summary.width,
        summary.height,
        t.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn run_boxes(a: BoxesArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let opts = BoxOptions {
        min_area_frac: a.min_area,
        margin: a.margin,
        include_holes: !a.outer_only,
        largest_only: a.largest_only,
    };
    let masks = TensorRef::new(&a.masks, &a.masks_key);
    let pb = progress_bar(count_images(&a.masks, &a.masks_key)?, global.quiet, "boxes");
    let boxes = boxes_dataset(&masks, &opts, a.chunk, &|done| pb.set_position(done as u64))
        .with_context(|| format!("boxes of {masks}"))?;
    pb.finish_and_clear();
    let text = match a.format {
        BoxFormat::Json => serde_json::to_string(&boxes)? + "\n",
        BoxFormat::Txt => boxes
            .iter()
            .enumerate()
            .map(|(i, b)| format_box_line(&i.to_string(), b) + "\n")
            .collect(),
    };
    std::fs::write(&a.out, text).with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!(
        "boxes: {} images, {} boxes → {}",
        boxes.len(),
        boxes.iter().map(Vec::len).sum::<usize>(),
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct CamArgs {
    /// Model checkpoint (safetensors, torchvision-style names `encoder.*`, `projector.*`).
    #[arg(long)]
    pub weights: PathBuf,
    /// safetensors file holding the ImageNet-normalised images, float32 (N, 3, H, W).
    #[arg(long)]
    pub inputs: PathBuf,
    /// Name of the image tensor inside --inputs.
    #[arg(long)]
    pub input_key: String,
    /// Resolution expansion: 1, 2 (stride 1 in layer4[0]) or 4 (also layer3[0]).
    #[arg(long, default_value_t = 1)]
    pub expand_res: u32,
    /// Iterations of ContraCAM (the official boxes use 10).
    #[arg(long, default_value_t = 1)]
    pub iters: usize,
    /// Keep negative α (Table 1's "w/o negative signal removal").
    #[arg(long)]
    pub no_negative_removal: bool,
    /// Images per ContraCAM batch; the other images of a batch are the negatives, so this changes results
    /// (official: 256, unshuffled).
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Output safetensors file; tensor `cam` (N, 1, H, W) float32.
    #[arg(long)]
    pub out: PathBuf,
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
}

/// Classifier maps of `localize cam --classifier-cam`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClassifierCamArg {
    Cam,
    GradCam,
}

fn cam(a: CamArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.batch_size > 0, "--batch-size must be at least 1");
    if let Some(mode) = a.classifier_cam {
        return classifier_cam(a, mode, global);
    }
    let device = global.device.resolve()?;
    let model = ContrastiveModel::load(&a.weights, device)
        .with_context(|| format!("loading --weights {}", a.weights.display()))?;
    let inputs = TensorFile::read(&a.inputs).context("reading --inputs")?;
    let x = inputs.get(&a.input_key).context("--input-key")?;
    let shape = x.size();
    anyhow::ensure!(
        shape.len() == 4 && shape[1] == 3 && x.kind() == Kind::Float,
        "{}: tensor '{}' must be float32 (N, 3, H, W) ImageNet-normalised images, got {:?} {:?}",
        a.inputs.display(),
        a.input_key,
        x.kind(),
        shape
    );
    let cfg = CamConfig {
        expand_res: a.expand_res,
        iters: a.iters,
        negative_removal: !a.no_negative_removal,
    };
    let mut outs = Vec::new();
    for chunk in x.split(a.batch_size as i64, 0) {
        outs.push(contrastive_cam(&model, &chunk, &cfg)?.to_device(tch::Device::Cpu));
    }
    let cam = Tensor::cat(&outs, 0);
    let meta = HashMap::from([
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
    tensor_file::write(&a.out, &[("cam".to_string(), cam)], &meta)?;
    if !global.quiet {
        eprintln!(
            "wrote {} (cam {:?})",
            a.out.display(),
            [shape[0], 1, shape[2], shape[3]]
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
    let device = global.device.resolve()?;
    let model = Classifier::load(&a.weights, device)
        .with_context(|| format!("loading --weights {}", a.weights.display()))?;
    let inputs = TensorFile::read(&a.inputs).context("reading --inputs")?;
    let x = inputs.get(&a.input_key).context("--input-key")?;
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
    let cam = Tensor::cat(&outs, 0);
    let meta = HashMap::from([
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
    tensor_file::write(&a.out, &[("cam".to_string(), cam)], &meta)?;
    if !global.quiet {
        eprintln!("wrote {} ({mode:?} of {n} images)", a.out.display());
    }
    Ok(ExitCode::SUCCESS)
}
