//! `localize`: CAMs of a dataset → (CRF) → cleaned masks, boxes, soft masks and score maps.
//!
//! - A built split (`source = "index"`) goes through [`localize_dataset`], the library behind
//!   `contracam localize dataset`: ids as the official code writes them, masks `masks/<id>.png`, score maps
//!   `score_maps/<id>.npy` (wsolevaluation's layout), the official box file, and the BG-Mixup soft masks in
//!   the official `save_masks` layout (`soft_masks/<class>/<file>`).
//! - Synthetic scenes follow the smoke pipeline's CAM and box steps (`suite::pipeline`): the images in [0, 1]
//!   through `eval_transform` at `input_size`, CAMs in batches of `batch_size` (the negatives), upsampled
//!   to the scene size; without the CRF the mask is `cam > threshold` and the boxes come from
//!   `clean_mask` (1 %) + `extract_boxes` of that mask, as the smoke `boxes` stage. With the CRF, each scene
//!   is CRF'd with its CAM and cleaned as `localize dataset` does. Files are named by row (`<i>.png`,
//!   `<i>.npy`, box id `i`); soft masks are `soft_masks/<i>.png` (the CAM ×255, truncated). The CAM has no
//!   random choice, so the run's seed does not enter it.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::data::formats::box_file::format_box_line;
use crate::data::formats::npy::encode_npy_2d_f32;
use crate::data::loader::IndexSource;
use crate::data::synth::SynthSet;
use crate::localize::boxes::{extract_boxes, BoxOptions};
use crate::localize::classifier_cam::{class_activation_scoremaps, grad_cam};
use crate::localize::contrastive_cam::{contrastive_cam, CamConfig};
use crate::localize::crf::{OfficialCrf, OfficialCrfParams};
use crate::localize::dataset::{
    localize_dataset, soft_mask_pixels, CamMethod, LocalizeModel, LocalizeOptions,
};
use crate::localize::mask_clean::{clean_mask, CleanOptions};
use crate::model::{Classifier, ContrastiveModel};
use crate::suite::dataset::{index_path, DatasetHandle, DatasetSpec};
use crate::suite::stage::*;
use crate::train::augment::eval_transform;
use crate::util::output::write_atomic;
use crate::util::progress::Unit as ProgressUnit;

pub struct Localize;

/// Which map explains an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// ContraCAM of a contrastive model; the other images of the batch are the negatives.
    Contracam,
    /// A supervised classifier's CAM of the ground-truth class (wsolevaluation).
    ClassifierCam,
    /// A supervised classifier's Grad-CAM of the ground-truth class.
    GradCam,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalizeParams {
    pub method: Method,
    /// 1, 2 (stride 1 in layer4[0]) or 4 (also layer3[0]); official 2 for boxes and masks.
    pub expand_res: u32,
    /// ContraCAM iterations (official 10; 1 for the BG-Mixup masks). ContraCAM only.
    pub cam_iters: Option<u32>,
    /// The ReLU on the contrastive score (official on; off is Table 1's "w/o negative signal removal").
    /// ContraCAM only.
    pub negative_signal_removal: Option<bool>,
    /// The dense CRF before cleaning (official `--apply_crf` for boxes and masks; off for BG-Mixup masks).
    pub crf: bool,
    /// Side of the square CAM input (official `Resize((224, 224))`).
    pub input_size: u32,
    /// Images per CAM batch (official 256, unshuffled); ContraCAM's negatives, so it changes results.
    pub batch_size: usize,
    /// Boxes cover more than this fraction of the image (official `min_obj_scale` 0.01).
    pub min_area_frac: f64,
    /// Each box side grows by this fraction of the box (official `--box_margin` 0.2).
    pub margin: f64,
    /// Synthetic scenes without the CRF only: a CAM pixel is foreground above this (the smoke pipeline's
    /// `localize.threshold`, 0.5 when unset). Built datasets clean the CAM as the official code does.
    pub threshold: Option<f64>,
    /// Write the BG-Mixup soft masks (needs JPEG or PNG images); when off, `soft_masks` is an empty folder.
    pub soft_masks: bool,
    /// Built splits: also write `overlays.png` in the stage folder, CAM overlays with mask outlines of this
    /// many images per class (the first 8 classes), for a person to look at; 0 (default) writes none.
    pub overlays: usize,
}

impl Default for LocalizeParams {
    fn default() -> Self {
        Self {
            method: Method::Contracam,
            expand_res: 2,
            cam_iters: None,
            negative_signal_removal: None,
            crf: true,
            input_size: 224,
            batch_size: 256,
            min_area_frac: 0.01,
            margin: 0.2,
            threshold: None,
            soft_masks: true,
            overlays: 0,
        }
    }
}

/// The official ContraCAM iterations for boxes and masks.
const DEFAULT_ITERS: u32 = 10;

impl LocalizeParams {
    fn cam_method(&self) -> CamMethod {
        match self.method {
            Method::Contracam => CamMethod::Contrastive(CamConfig {
                expand_res: self.expand_res,
                iters: self.cam_iters.unwrap_or(DEFAULT_ITERS) as usize,
                negative_removal: self.negative_signal_removal.unwrap_or(true),
            }),
            Method::ClassifierCam => CamMethod::ClassifierCam {
                expand_res: self.expand_res,
            },
            Method::GradCam => CamMethod::GradCam {
                expand_res: self.expand_res,
            },
        }
    }

    fn box_options(&self) -> BoxOptions {
        BoxOptions {
            min_area_frac: self.min_area_frac,
            margin: self.margin,
            ..BoxOptions::default()
        }
    }
}

impl Stage for Localize {
    type Params = LocalizeParams;
    const KIND: &'static str = "localize";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "ContraCAM or classifier CAM → CRF → masks, boxes, soft masks and score maps of a dataset";
    const INPUTS: &'static [Slot] = &[
        Slot::required("model", ArtefactKind::ModelCheckpoint),
        Slot::required("data", ArtefactKind::Dataset),
    ];
    const OUTPUTS: &'static [Slot] = &[
        Slot::file("masks", ArtefactKind::MasksDir, "masks"),
        Slot::file("boxes", ArtefactKind::BoxFile, "boxes.txt"),
        Slot::file("soft_masks", ArtefactKind::SoftMasks, "soft_masks"),
        Slot::file("score_maps", ArtefactKind::ScoreMaps, "score_maps"),
    ];
    const METRICS: &'static [MetricSpec] = &[MetricSpec {
        name: "boxes_per_image",
        unit: Unit::Count,
        direction: Direction::Neutral,
        about: "boxes per image after mask cleaning",
    }];

    fn validate(p: &LocalizeParams) -> Result<(), ParamError> {
        if ![1, 2, 4].contains(&p.expand_res) {
            return Err(ParamError::new("expand_res", "must be 1, 2 or 4"));
        }
        if p.method != Method::Contracam {
            for (key, set) in [
                ("cam_iters", p.cam_iters.is_some()),
                (
                    "negative_signal_removal",
                    p.negative_signal_removal.is_some(),
                ),
            ] {
                if set {
                    return Err(ParamError::new(
                        key,
                        "applies to method = \"contracam\" only; remove it",
                    ));
                }
            }
        }
        if p.cam_iters.is_some_and(|t| !(1..=1000).contains(&t)) {
            return Err(ParamError::new("cam_iters", "must be in 1..=1000"));
        }
        if !(16..=4096).contains(&p.input_size) {
            return Err(ParamError::new("input_size", "must be in 16..=4096"));
        }
        if p.batch_size == 0 || (p.method == Method::Contracam && p.batch_size == 1) {
            return Err(ParamError::new(
                "batch_size",
                "must be at least 1 (2 for ContraCAM, whose negatives are the other images of a batch)",
            ));
        }
        if !(0.0..=1.0).contains(&p.min_area_frac) {
            return Err(ParamError::new("min_area_frac", "must be in [0, 1]"));
        }
        if p.overlays > 64 {
            return Err(ParamError::new(
                "overlays",
                "must be in 0..=64 images per class",
            ));
        }
        if !(p.margin.is_finite() && p.margin >= 0.0) {
            return Err(ParamError::new("margin", "must be a finite number ≥ 0"));
        }
        if let Some(t) = p.threshold {
            if !(0.0..1.0).contains(&t) {
                return Err(ParamError::new("threshold", "must be in [0, 1)"));
            }
            if p.crf {
                return Err(ParamError::new(
                    "threshold",
                    "applies without the CRF only (crf = false); remove it",
                ));
            }
        }
        Ok(())
    }

    fn run(p: &LocalizeParams, ctx: &mut StageContext) -> Result<StageResult, StageError> {
        if ctx.precision != Precision::Fp32 {
            return Err(StageError::Failed(format!(
                "localize computes in fp32 only; precision {} is not supported",
                ctx.precision.name()
            )));
        }
        let ctx: &StageContext = ctx;
        let weights = ctx.artefact("model")?.path.clone();
        let data = ctx.dataset("data")?;
        let model = load_model(p, &weights, ctx.device)?;
        match &data.spec {
            DatasetSpec::Synth(_) => {
                if p.overlays > 0 {
                    return Err(ParamError::new(
                        "overlays",
                        "applies to built datasets only; remove it for synthetic scenes",
                    )
                    .into());
                }
                let set = data.synth()?;
                run_synth(p, ctx, &model, &set)
            }
            DatasetSpec::Index(_) => {
                if p.threshold.is_some() {
                    return Err(ParamError::new(
                        "threshold",
                        "applies to synthetic data only; a built dataset's CAM is cleaned as the official code \
                         does (remove it)",
                    )
                    .into());
                }
                run_index(p, ctx, &model, &weights, data)
            }
        }
    }
}

fn load_model(
    p: &LocalizeParams,
    weights: &Path,
    device: Device,
) -> Result<LocalizeModel, StageError> {
    Ok(match p.method {
        Method::Contracam => {
            LocalizeModel::Contrastive(Box::new(ContrastiveModel::load(weights, device)?))
        }
        Method::ClassifierCam | Method::GradCam => {
            LocalizeModel::Classifier(Classifier::load(weights, device)?)
        }
    })
}

/// The sample source of a built split.
pub(super) fn index_source(h: &DatasetHandle) -> Result<IndexSource, StageError> {
    let DatasetSpec::Index(i) = &h.spec else {
        return Err(StageError::Failed(format!(
            "dataset '{}' is synthetic, not a built split",
            h.name
        )));
    };
    let root = h.root().unwrap_or_default();
    Ok(IndexSource::from_index(
        root,
        index_path(&h.data_dir, i),
        h.index()?,
    )?)
}

fn run_index(
    p: &LocalizeParams,
    ctx: &StageContext,
    model: &LocalizeModel,
    weights: &Path,
    data: &DatasetHandle,
) -> Result<StageResult, StageError> {
    let source = index_source(data)?;
    let index_file = source.index_file.clone();
    let n = source.index.samples.len();
    let opts = LocalizeOptions {
        method: p.cam_method(),
        batch_size: p.batch_size,
        image_size: p.input_size,
        crf: OfficialCrfParams::default(),
        apply_crf: p.crf,
        boxes: p.box_options(),
        workers: ctx.threads,
        soft_masks: p.soft_masks,
        overlays: p.overlays,
        ..LocalizeOptions::default()
    };
    let out = ctx.out_dir.to_path_buf();
    let bar = ctx.progress("localize", Some(n as u64), ProgressUnit::Items("images"));
    let summary = localize_dataset(
        Arc::new(source),
        &index_file,
        model,
        weights,
        &out,
        &opts,
        &|done| bar.set_position(done as u64),
    )
    .map_err(|e| StageError::Failed(format!("localize {}: {e}", data.name)))?;
    bar.finish();
    // The library's folder names, renamed to the slots'; its per-chunk files are only for resuming.
    let rename = |from: &str, slot: &str| -> Result<(), StageError> {
        let (a, b) = (out.join(from), ctx.output(slot)?);
        std::fs::rename(&a, &b).map_err(|e| StageError::io(&a, e))
    };
    rename("scoremaps", "score_maps")?;
    let chunks = out.join("chunks");
    std::fs::remove_dir_all(&chunks).map_err(|e| StageError::io(&chunks, e))?;
    let soft = ctx.output("soft_masks")?;
    std::fs::create_dir_all(&soft).map_err(|e| StageError::io(&soft, e))?;
    Ok(StageResult::default().metric(
        "boxes_per_image",
        summary.boxes as f64 / summary.samples.max(1) as f64,
    ))
}

/// CAMs of `set` at `input_size` in batches of `batch_size`, upsampled to the scene size (the smoke
/// pipeline's `cams`), on the CPU as (N, 1, S, S); also the CAMs at the input size for the soft masks.
fn synth_cams(
    p: &LocalizeParams,
    ctx: &StageContext,
    model: &LocalizeModel,
    set: &SynthSet,
) -> Result<(Tensor, Tensor), StageError> {
    let images = set.images_tensor();
    let labels = set.labels_tensor();
    let s = set.size as i64;
    let bar = ctx.progress("cam", Some(set.len() as u64), ProgressUnit::Items("images"));
    let (mut outs, mut small) = (Vec::new(), Vec::new());
    let b = p.batch_size as i64;
    for (chunk, lab) in images.split(b, 0).iter().zip(labels.split(b, 0)) {
        let x = eval_transform(chunk, i64::from(p.input_size));
        let c = match (p.cam_method(), model) {
            (CamMethod::Contrastive(cfg), LocalizeModel::Contrastive(m)) => {
                contrastive_cam(m, &x, &cfg)?
            }
            (CamMethod::ClassifierCam { expand_res }, LocalizeModel::Classifier(m)) => {
                class_activation_scoremaps(m, &x, &lab, expand_res)?
            }
            (CamMethod::GradCam { expand_res }, LocalizeModel::Classifier(m)) => {
                grad_cam(m, &x, Some(&lab), expand_res)?
            }
            _ => unreachable!("load_model matches the method"),
        };
        let up = c.upsample_bilinear2d([s, s], false, None, None);
        outs.push(up.to_device(Device::Cpu));
        small.push(c.to_device(Device::Cpu));
        bar.inc(chunk.size()[0] as u64);
    }
    bar.finish();
    Ok((Tensor::cat(&outs, 0), Tensor::cat(&small, 0)))
}

fn host_f32(t: &Tensor, what: &str) -> Result<Vec<f32>, StageError> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).contiguous().flatten(0, -1))
        .map_err(|e| StageError::Failed(format!("{what} to host: {e}")))
}

fn write_out(path: PathBuf, bytes: &[u8]) -> Result<(), StageError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| StageError::io(dir, e))?;
    }
    write_atomic(&path, bytes).map_err(|e| StageError::io(&path, e))
}

/// An 8-bit grayscale PNG.
pub(super) fn gray_png(px: Vec<u8>, w: u32, h: u32) -> Result<Vec<u8>, StageError> {
    let img = image::GrayImage::from_raw(w, h, px)
        .ok_or_else(|| StageError::Failed(format!("a {w}×{h} mask has the wrong size")))?;
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| StageError::Failed(format!("encoding a PNG: {e}")))?;
    Ok(bytes.into_inner())
}

fn run_synth(
    p: &LocalizeParams,
    ctx: &StageContext,
    model: &LocalizeModel,
    set: &SynthSet,
) -> Result<StageResult, StageError> {
    let s = set.size;
    let (cams, small) = synth_cams(p, ctx, model, set)?;
    let cam_px = host_f32(&cams, "CAM")?;
    // Without the CRF, the smoke pipeline's binarisation (on the tensor, as it does).
    let thresholded = if p.crf {
        None
    } else {
        let t = p.threshold.unwrap_or(0.5);
        Some(host_f32(&cams.gt(t).to_kind(Kind::Float), "mask")?)
    };
    let crf = if p.crf {
        Some(
            OfficialCrf::new(s, s, OfficialCrfParams::default())
                .map_err(|e| StageError::Failed(format!("CRF setup: {e}")))?,
        )
    } else {
        None
    };
    let (masks_dir, maps_dir, soft_dir) = (
        ctx.output("masks")?,
        ctx.output("score_maps")?,
        ctx.output("soft_masks")?,
    );
    for d in [&masks_dir, &maps_dir, &soft_dir] {
        std::fs::create_dir_all(d).map_err(|e| StageError::io(d, e))?;
    }
    let px = s * s;
    let box_opts = p.box_options();
    let mut lines = String::new();
    let mut total_boxes = 0usize;
    for i in 0..set.len() {
        let map = &cam_px[i * px..(i + 1) * px];
        let (mask, box_mask) = match (&thresholded, &crf) {
            (Some(bin), _) => {
                let m = &bin[i * px..(i + 1) * px];
                let mask: Vec<u8> = m.iter().map(|&v| (v > 0.5) as u8).collect();
                (mask, clean_mask(m, s, s, &CleanOptions::boxes()))
            }
            (None, Some(crf)) => {
                let q = crf
                    .run(&set.images[i], map)
                    .map_err(|e| StageError::Failed(format!("CRF of scene {i}: {e}")))?;
                (
                    clean_mask(&q, s, s, &CleanOptions::seg()),
                    clean_mask(&q, s, s, &CleanOptions::boxes()),
                )
            }
            (None, None) => unreachable!("one of the two is set"),
        };
        let boxes = extract_boxes(&box_mask, s, s, &box_opts);
        total_boxes += boxes.len();
        lines.push_str(&format_box_line(&i.to_string(), &boxes));
        lines.push('\n');
        let png: Vec<u8> = mask.iter().map(|&v| if v != 0 { 255 } else { 0 }).collect();
        write_out(
            masks_dir.join(format!("{i}.png")),
            &gray_png(png, s as u32, s as u32)?,
        )?;
        write_out(
            maps_dir.join(format!("{i}.npy")),
            &encode_npy_2d_f32(s, s, map),
        )?;
        if p.soft_masks {
            let soft = soft_mask_pixels(
                &small.get(i as i64),
                p.input_size as usize,
                s as u32,
                s as u32,
            )?;
            write_out(
                soft_dir.join(format!("{i}.png")),
                &gray_png(soft, s as u32, s as u32)?,
            )?;
        }
    }
    write_out(ctx.output("boxes")?, lines.as_bytes())?;
    Ok(StageResult::default().metric(
        "boxes_per_image",
        total_boxes as f64 / set.len().max(1) as f64,
    ))
}
