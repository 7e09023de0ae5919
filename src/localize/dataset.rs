//! `localize dataset`: a split of a built dataset → CAMs → CRF → cleaned masks and boxes, as the official
//! `inference.py` (`seg`, `save_box`) runs them, written per sample:
//!
//! ```text
//! <out>/run.json                 what the run is (dataset, index and weights hashes, options); checked on resume
//! <out>/masks/<id>.png           cleaned mask (clean_mask, seg mode: > 0.1 % components), 0/255, S×S
//! <out>/scoremaps/<id>.npy       the CAM, float32 (S, S) in [0, 1] (wsolevaluation's `<image_id>.npy` layout)
//! <out>/chunks/<NNNNNN>.boxes    the box-file lines of chunk N; <NNNNNN>.done marks the chunk complete
//! <out>/boxes.txt                the official box file (ids in index order, normalised xyxy, 6 decimals)
//! <out>/soft_masks/<class>/<file> with `soft_masks`: the CAM at the image's own size, 8-bit gray (BG-Mixup)
//! <out>/overlays.png            with `overlays`: a grid of CAM overlays and mask outlines to look at
//! <out>/DONE.json                the final marker
//! ```
//!
//! A chunk is one CAM batch: ContraCAM's negatives are the other images of the batch, so batches hold
//! consecutive index positions (unshuffled, as the official loaders) and a resumed run cuts them exactly as
//! an uninterrupted one; every file is written atomically and a chunk's marker only after its files, so a
//! killed run redoes at most the chunk it was in and ends byte-identical. Memory is bounded by the loader's
//! prefetch and one chunk of results, whatever the dataset size.
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::boxes::{extract_boxes, BoxOptions};
use super::classifier_cam::{class_activation_scoremaps, grad_cam};
use super::contrastive_cam::{cam_inputs, contrastive_cam, CamConfig, CamError};
use super::crf::{CrfError, OfficialCrf, OfficialCrfParams};
use super::mask_clean::{clean_mask, CleanOptions};
use crate::data::formats::box_file::format_box_line;
use crate::data::index::SplitIndex;
use crate::data::loader::{
    DatasetRef, EvalTransform, IndexSource, Loader, LoaderConfig, Plan, Source,
};
use crate::data::DataError;
use crate::model::{Classifier, ContrastiveModel};
use crate::util::output::{write_atomic, OutputError};

/// Format name in `run.json` and `DONE.json`.
pub const FORMAT: &str = "contracam-localize-dataset";
pub const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum LocalizeError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{context}: {err}")]
    Cam { context: String, err: CamError },
    #[error("{context}: {err}")]
    Crf { context: String, err: CrfError },
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    /// An option or input that cannot be processed; the message says which and what to do.
    #[error("{0}")]
    Invalid(String),
}

fn file_err(path: &Path, msg: impl std::fmt::Display) -> LocalizeError {
    LocalizeError::File {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

/// Which map explains each image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CamMethod {
    /// ContraCAM of a contrastive model (negatives: the rest of the batch).
    Contrastive(CamConfig),
    /// A supervised classifier's CAM of the ground-truth class, as wsolevaluation.
    ClassifierCam { expand_res: u32 },
    /// A supervised classifier's Grad-CAM of the ground-truth class (the official `get_supervised_cam`).
    GradCam { expand_res: u32 },
}

/// The network of a run, matching its [`CamMethod`].
pub enum LocalizeModel {
    Contrastive(Box<ContrastiveModel>),
    Classifier(Classifier),
}

/// Settings of [`localize_dataset`]; the defaults are the official boxes/segmentation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalizeOptions {
    pub method: CamMethod,
    /// Images per CAM batch (= per chunk); the official 256.
    pub batch_size: usize,
    /// Side of the square input (`T.Resize((224, 224))`, PIL bilinear).
    pub image_size: u32,
    pub crf: OfficialCrfParams,
    /// Run the CRF before cleaning (the official `--apply_crf`); without it the raw CAM is cleaned, whose
    /// effective threshold is 1/255 (the official `seg`/`save_box` without the flag).
    pub apply_crf: bool,
    /// Cleaning of the written masks (official `seg`: 0.1 %).
    pub mask_clean: CleanOptions,
    /// Cleaning before box extraction (official `save_box`: 1 %).
    pub box_clean: CleanOptions,
    pub boxes: BoxOptions,
    /// Decode/resize threads of the loader (0: on the calling thread).
    pub workers: usize,
    /// Also write each CAM, resized back to the image's size, as a BG-Mixup mask (official `save_masks`).
    pub soft_masks: bool,
    /// Process at most this many chunks in one call and return with `complete = false` (to split a run
    /// over several jobs); not part of the run's identity.
    pub max_chunks: Option<usize>,
    /// When the run completes, write `overlays.png`: CAM overlays with mask outlines of this many images per
    /// class ([`super::overlay`]); 0 writes none. A view of the outputs, not part of the run's identity.
    pub overlays: usize,
}

impl Default for LocalizeOptions {
    fn default() -> Self {
        LocalizeOptions {
            method: CamMethod::Contrastive(CamConfig {
                expand_res: 2,
                iters: 10,
                negative_removal: true,
            }),
            batch_size: 256,
            image_size: 224,
            crf: OfficialCrfParams::default(),
            apply_crf: true,
            mask_clean: CleanOptions::seg(),
            box_clean: CleanOptions::boxes(),
            boxes: BoxOptions::default(),
            workers: 1,
            soft_masks: false,
            max_chunks: None,
            overlays: 0,
        }
    }
}

/// `run.json`: what identifies a run, so a resume never mixes outputs of different settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    pub format: String,
    pub version: u32,
    pub dataset: String,
    pub index_sha256: String,
    pub samples: usize,
    pub weights_sha256: String,
    pub method: CamMethod,
    /// Every other option, as Rust prints it (deterministic).
    pub options: String,
    /// Whether `soft_masks/` is written; absent in records from before the option (= false).
    #[serde(default)]
    pub soft_masks: bool,
    pub chunks: usize,
}

/// `DONE.json` and the result of [`localize_dataset`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalizeSummary {
    pub format: String,
    pub samples: usize,
    pub chunks: usize,
    pub boxes: usize,
    /// False when `max_chunks` stopped the run early; run again to continue.
    pub complete: bool,
    /// Chunks found done from an earlier run.
    #[serde(skip)]
    pub resumed_chunks: usize,
}

/// Marker of one finished chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ChunkMarker {
    chunk: usize,
    first: usize,
    count: usize,
}

/// Opens `SPEC` = `NAME[:SPLIT]` under `data_dir`, or `DIR[:SPLIT]` where DIR is a dataset folder
/// (`<data-dir>/<name>`, holding `index/<split>.jsonl`); the split defaults to `train`.
pub fn open_split(spec: &str, data_dir: &Path) -> Result<IndexSource, LocalizeError> {
    let (head, split) = match spec.rsplit_once(':') {
        Some((h, s)) if !s.contains('/') => (h, s),
        _ => (spec, "train"),
    };
    let as_dir = Path::new(head);
    if head.contains('/') || head.contains(std::path::MAIN_SEPARATOR) || as_dir.is_dir() {
        let index_file = as_dir.join("index").join(format!("{split}.jsonl"));
        if !index_file.is_file() {
            return Err(file_err(
                &index_file,
                format!(
                    "no such index: --dataset {spec} names the folder {} but it has no split {split:?} \
                     (expected a dataset folder written by `contracam data build`)",
                    as_dir.display()
                ),
            ));
        }
        let index = SplitIndex::read(&index_file)?;
        return Ok(IndexSource::from_index(
            as_dir.to_path_buf(),
            index_file,
            index,
        )?);
    }
    match spec.parse::<DatasetRef>().map_err(LocalizeError::Invalid)? {
        DatasetRef::Synth { .. } => Err(LocalizeError::Invalid(format!(
            "--dataset {spec}: the synthetic scenes have no sample index; name a dataset built by \
             `contracam data build` (NAME[:SPLIT] or a dataset folder)"
        ))),
        DatasetRef::Built { name, split } => Ok(IndexSource::open(data_dir, &name, &split)?),
    }
}

/// The relative file path of sample `id` under an output folder with `ext` appended (ids keep their own
/// extension, as wsolevaluation's `<image_id>.npy`). Ids that would leave the folder are refused.
pub fn output_path(root: &Path, id: &str, ext: &str) -> Option<PathBuf> {
    let rel = Path::new(id);
    if id.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(root.join(format!("{id}.{ext}")))
}

/// Where sample `i` is described, for messages.
fn where_is(source: &dyn Source, i: usize) -> String {
    match source.locate(i) {
        Some((file, index, line)) => {
            format!(
                "sample {} ({}, line {line})",
                file.display(),
                index.display()
            )
        }
        None => format!("sample {i} of {}", source.name()),
    }
}

/// Refuses a run whose last CAM batch would hold a single image (ContraCAM has no negative for it).
fn check_batches(n: usize, opts: &LocalizeOptions) -> Result<(), LocalizeError> {
    let b = opts.batch_size;
    if b == 0 {
        return Err(LocalizeError::Invalid(
            "--batch-size must be at least 1".into(),
        ));
    }
    if n == 0 {
        return Err(LocalizeError::Invalid("the split has no samples".into()));
    }
    if matches!(opts.method, CamMethod::Contrastive(_)) && (b == 1 || n % b == 1) {
        let ok = |v: usize| v >= 2 && n % v != 1;
        let near: Vec<String> = (2..b)
            .rev()
            .find(|&v| ok(v))
            .into_iter()
            .chain((b + 1..=n.max(b + 1)).find(|&v| ok(v)))
            .map(|v| v.to_string())
            .collect();
        return Err(LocalizeError::Invalid(format!(
            "{n} images in ContraCAM batches of {b} leave a batch of one image, which has no negatives; \
             choose a --batch-size that leaves no single image (e.g. {})",
            near.join(" or ")
        )));
    }
    Ok(())
}

fn sha256_of(path: &Path) -> Result<String, LocalizeError> {
    Ok(crate::data::source::hash::hash_file(path, false, |_| {})?.sha256)
}

fn chunk_stem(out: &Path, c: usize) -> PathBuf {
    out.join("chunks").join(format!("{c:06}"))
}

fn marker_path(out: &Path, c: usize) -> PathBuf {
    chunk_stem(out, c).with_extension("done")
}

fn boxes_path(out: &Path, c: usize) -> PathBuf {
    chunk_stem(out, c).with_extension("boxes")
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), LocalizeError> {
    let text = serde_json::to_string_pretty(v).map_err(|e| file_err(path, e))? + "\n";
    write_file(path, text.as_bytes())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), LocalizeError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    }
    Ok(write_atomic(path, bytes)?)
}

/// Whether chunk `c` finished in an earlier run with the expected extent.
fn chunk_done(out: &Path, c: usize, first: usize, count: usize) -> bool {
    std::fs::read(marker_path(out, c))
        .ok()
        .and_then(|b| serde_json::from_slice::<ChunkMarker>(&b).ok())
        .is_some_and(|m| {
            m == ChunkMarker {
                chunk: c,
                first,
                count,
            }
        })
}

/// Writes `run.json`, or checks that an earlier run in `out` had the same settings.
fn start_or_resume(out: &Path, record: &RunRecord) -> Result<(), LocalizeError> {
    let path = out.join("run.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let old: RunRecord = serde_json::from_slice(&bytes).map_err(|e| {
                file_err(
                    &path,
                    format!("not a `localize dataset` run record ({e}); choose another --out"),
                )
            })?;
            if &old != record {
                return Err(file_err(
                    &path,
                    "this output folder holds a run with other settings, dataset or weights; \
                     choose another --out or delete this folder to start over",
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if out.is_dir()
                && std::fs::read_dir(out)
                    .map_err(|e| file_err(out, e))?
                    .next()
                    .is_some()
            {
                return Err(file_err(
                    out,
                    "--out exists and is not empty (and holds no run.json); choose an empty or new folder",
                ));
            }
            write_json(&path, record)
        }
        Err(e) => Err(file_err(&path, e)),
    }
}

/// One image's results.
struct Outcome {
    mask_png: Vec<u8>,
    npy: Vec<u8>,
    /// The encoded BG-Mixup mask, with `soft_masks`.
    soft_mask: Option<Vec<u8>>,
    boxes: Vec<[f64; 4]>,
}

/// Runs the whole pipeline over `source` into `out` (see the module docs), resuming a run that stopped.
/// `weights` is the checkpoint the model came from (hashed into `run.json`). `progress` is called with the
/// number of samples done.
pub fn localize_dataset(
    source: Arc<dyn Source>,
    index_file: &Path,
    model: &LocalizeModel,
    weights: &Path,
    out: &Path,
    opts: &LocalizeOptions,
    progress: &dyn Fn(usize),
) -> Result<LocalizeSummary, LocalizeError> {
    let n = source.len();
    check_batches(n, opts)?;
    match (&opts.method, model) {
        (CamMethod::Contrastive(_), LocalizeModel::Contrastive(_))
        | (
            CamMethod::ClassifierCam { .. } | CamMethod::GradCam { .. },
            LocalizeModel::Classifier(_),
        ) => {}
        _ => {
            return Err(LocalizeError::Invalid(format!(
                "{}: the CAM method does not fit this model (ContraCAM needs a contrastive model, \
                 --classifier-cam a supervised classifier)",
                weights.display()
            )))
        }
    }
    opts.boxes.validate().map_err(LocalizeError::Invalid)?;
    let s = opts.image_size as usize;
    let b = opts.batch_size;
    let chunks = n.div_ceil(b);
    // Ids become file names: check every one before any work.
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = source.meta(i)?.id;
        if output_path(out, &id, "png").is_none() {
            return Err(LocalizeError::Invalid(format!(
                "{}: id {id:?} cannot be a relative file name under --out",
                where_is(source.as_ref(), i)
            )));
        }
        ids.push(id);
    }
    let soft_paths = if opts.soft_masks {
        (0..n)
            .map(|i| soft_mask_path(source.as_ref(), i, &ids[i]))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        vec![]
    };
    let record = RunRecord {
        format: FORMAT.into(),
        version: VERSION,
        dataset: source.name(),
        index_sha256: sha256_of(index_file)?,
        samples: n,
        weights_sha256: sha256_of(weights)?,
        method: opts.method.clone(),
        soft_masks: opts.soft_masks,
        // ` apply_crf=false` only when off, so records of runs from before the option still resume.
        options: format!(
            "batch_size={} image_size={} crf={:?} mask_clean={:?} box_clean={:?} boxes={:?}{}",
            opts.batch_size,
            opts.image_size,
            opts.crf,
            opts.mask_clean,
            opts.box_clean,
            opts.boxes,
            if opts.apply_crf {
                ""
            } else {
                " apply_crf=false"
            }
        ),
        chunks,
    };
    std::fs::create_dir_all(out).map_err(|e| file_err(out, e))?;
    start_or_resume(out, &record)?;
    let extent = |c: usize| (c * b, b.min(n - c * b));
    let resumed = (0..chunks)
        .take_while(|&c| {
            let (first, count) = extent(c);
            chunk_done(out, c, first, count)
        })
        .count();
    progress((resumed * b).min(n));
    let crf = OfficialCrf::new(s, s, opts.crf).map_err(|err| LocalizeError::Crf {
        context: "CRF setup".into(),
        err,
    })?;
    let mut done_chunks = resumed;
    if resumed < chunks {
        let loader = Loader::new(
            source.clone(),
            Plan::eval(EvalTransform::Resize {
                size: opts.image_size,
            }),
            LoaderConfig {
                workers: opts.workers,
                prefetch: 2,
                ..LoaderConfig::eval(b)
            },
        )?;
        let limit = opts
            .max_chunks
            .map_or(chunks, |m| (resumed + m).min(chunks));
        for batch in loader.epoch_from(0, resumed) {
            if done_chunks >= limit {
                break;
            }
            let batch = batch?;
            let c = batch.step;
            let outcomes = process_batch(
                source.as_ref(),
                model,
                opts,
                &crf,
                &batch.views[0],
                &batch.indices,
                &batch.labels,
            )?;
            let mut lines = String::new();
            for (k, (&i, o)) in batch.indices.iter().zip(&outcomes).enumerate() {
                let id = &ids[i];
                let mask = output_path(&out.join("masks"), id, "png").expect("checked above");
                write_file(&mask, &o.mask_png)?;
                let npy = output_path(&out.join("scoremaps"), id, "npy").expect("checked above");
                write_file(&npy, &o.npy)?;
                if let Some(soft) = &o.soft_mask {
                    write_file(&out.join("soft_masks").join(&soft_paths[i]), soft)?;
                }
                lines.push_str(&format_box_line(id, &o.boxes));
                lines.push('\n');
                debug_assert_eq!(i, c * b + k);
            }
            write_file(&boxes_path(out, c), lines.as_bytes())?;
            let (first, count) = extent(c);
            write_json(
                &marker_path(out, c),
                &ChunkMarker {
                    chunk: c,
                    first,
                    count,
                },
            )?;
            done_chunks = c + 1;
            progress(first + count);
        }
    }
    let complete = done_chunks == chunks;
    let mut total_boxes = 0;
    if complete {
        let mut text = String::new();
        for c in 0..chunks {
            let p = boxes_path(out, c);
            let part = std::fs::read_to_string(&p).map_err(|e| file_err(&p, e))?;
            total_boxes += part
                .lines()
                .map(|l| l.split(' ').count().saturating_sub(1))
                .sum::<usize>();
            text.push_str(&part);
        }
        write_file(&out.join("boxes.txt"), text.as_bytes())?;
    }
    let summary = LocalizeSummary {
        format: FORMAT.into(),
        samples: n,
        chunks,
        boxes: total_boxes,
        complete,
        resumed_chunks: resumed,
    };
    if complete {
        super::overlay::write_overlays(source.as_ref(), out, opts.image_size, opts.overlays)?;
        write_json(&out.join("DONE.json"), &summary)?;
    }
    Ok(summary)
}

/// CAMs of one batch (uint8 (B, 3, S, S) views), then per image (on all cores) CRF, cleaning, boxes and
/// the encoded files.
fn process_batch(
    source: &dyn Source,
    model: &LocalizeModel,
    opts: &LocalizeOptions,
    crf: &OfficialCrf,
    view: &Tensor,
    indices: &[usize],
    labels: &[Vec<i64>],
) -> Result<Vec<Outcome>, LocalizeError> {
    let s = opts.image_size as usize;
    let first = indices.first().copied().unwrap_or(0);
    let context = || {
        format!(
            "CAM of samples {first}..{} of {}",
            first + indices.len(),
            source.name()
        )
    };
    let nhwc = view.permute([0, 2, 3, 1]).contiguous();
    let cam_err = |err| LocalizeError::Cam {
        context: context(),
        err,
    };
    let x = cam_inputs(&nhwc).map_err(cam_err)?;
    let label_tensor = || -> Result<Tensor, LocalizeError> {
        let l: Vec<i64> = labels
            .iter()
            .zip(indices)
            .map(|(l, &i)| {
                l.first().copied().ok_or_else(|| {
                    LocalizeError::Invalid(format!(
                        "{} has no label; the classifier CAM explains the ground-truth class",
                        where_is(source, i)
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Tensor::from_slice(&l))
    };
    let cam = match (&opts.method, model) {
        (CamMethod::Contrastive(cfg), LocalizeModel::Contrastive(m)) => {
            contrastive_cam(m, &x, cfg).map_err(cam_err)?
        }
        (CamMethod::ClassifierCam { expand_res }, LocalizeModel::Classifier(m)) => {
            class_activation_scoremaps(m, &x, &label_tensor()?, *expand_res).map_err(cam_err)?
        }
        (CamMethod::GradCam { expand_res }, LocalizeModel::Classifier(m)) => {
            grad_cam(m, &x, Some(&label_tensor()?), *expand_res).map_err(cam_err)?
        }
        _ => unreachable!("checked in localize_dataset"),
    };
    let cam = cam
        .to_device(tch::Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous();
    let cams = Vec::<f32>::try_from(cam.view([-1])).map_err(|e| {
        LocalizeError::Invalid(format!("{}: reading the CAMs back: {e}", context()))
    })?;
    let images = Vec::<u8>::try_from(nhwc.view([-1])).map_err(|e| {
        LocalizeError::Invalid(format!("{}: reading the images back: {e}", context()))
    })?;
    let px = s * s;
    // The resizes run on torch (its bilinear kernel is the reference); encoding runs on all cores below.
    let soft: Vec<Option<(u32, u32, Vec<u8>)>> = indices
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            if !opts.soft_masks {
                return Ok(None);
            }
            let (w, h) = source.meta(i)?.size;
            let px = soft_mask_pixels(&cam.get(k as i64), s, w, h).map_err(|e| {
                LocalizeError::Invalid(format!("{}: soft mask: {e}", where_is(source, i)))
            })?;
            Ok(Some((w, h, px)))
        })
        .collect::<Result<_, LocalizeError>>()?;
    indices
        .par_iter()
        .enumerate()
        .map(|(k, &i)| {
            let soft_mask = match &soft[k] {
                Some((w, h, px)) => Some(encode_soft_mask(source, i, *w, *h, px)?),
                None => None,
            };
            let map = &cams[k * px..(k + 1) * px];
            let crfed;
            let q: &[f32] = if opts.apply_crf {
                crfed = crf
                    .run(&images[k * px * 3..(k + 1) * px * 3], map)
                    .map_err(|err| LocalizeError::Crf {
                        context: where_is(source, i),
                        err,
                    })?;
                &crfed
            } else {
                map
            };
            let mask = clean_mask(q, s, s, &opts.mask_clean);
            let box_mask = clean_mask(q, s, s, &opts.box_clean);
            Ok(Outcome {
                mask_png: encode_mask_png(&mask, s)?,
                npy: crate::data::formats::npy::encode_npy_2d_f32(s, s, map),
                boxes: extract_boxes(&box_mask, s, s, &opts.boxes),
                soft_mask,
            })
        })
        .collect()
}

/// Where sample `i`'s BG-Mixup mask goes under `soft_masks/`: the official `save_masks` layout
/// `<class>/<file>` with the source's own file name and extension, which is the id of ImageFolder-style
/// datasets; ids without the file's extension (COCO's numeric ids) get it appended.
pub fn soft_mask_path(source: &dyn Source, i: usize, id: &str) -> Result<PathBuf, LocalizeError> {
    let file = source.locate(i).map(|(f, _, _)| f).ok_or_else(|| {
        LocalizeError::Invalid(format!(
            "{}: --soft-masks needs samples stored as files",
            where_is(source, i)
        ))
    })?;
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_string();
    if soft_mask_format(&ext).is_none() {
        return Err(LocalizeError::Invalid(format!(
            "{}: --soft-masks writes each mask in its image's own format, which must be JPEG or PNG \
             (extension {ext:?})",
            where_is(source, i)
        )));
    }
    let own_ext = Path::new(id).extension().and_then(|e| e.to_str()) == Some(ext.as_str());
    let rel = if own_ext {
        PathBuf::from(id)
    } else {
        PathBuf::from(format!("{id}.{ext}"))
    };
    Ok(rel)
}

fn soft_mask_format(ext: &str) -> Option<image::ImageFormat> {
    match ext.to_ascii_lowercase().as_str() {
        "jpg" | "jpeg" => Some(image::ImageFormat::Jpeg),
        "png" => Some(image::ImageFormat::Png),
        _ => None,
    }
}

/// The official `save_masks` values: the (S, S) CAM resized to (h, w) with torch's bilinear
/// (`T.Resize((h, w))` on the tensor, align_corners=False, no antialias), `* 255`, cast to uint8 (truncation).
/// Antialias only matters when shrinking; originals are larger than S in the official datasets.
/// `cam` holds the S×S map of one image.
pub fn soft_mask_pixels(
    cam: &Tensor,
    side: usize,
    w: u32,
    h: u32,
) -> Result<Vec<u8>, tch::TchError> {
    let s = side as i64;
    let up = cam
        .to_kind(Kind::Float)
        .f_view([1, 1, s, s])?
        .f_upsample_bilinear2d([i64::from(h), i64::from(w)], false, None, None)?;
    let px = (up * 255.0).to_kind(Kind::Uint8).contiguous().view([-1]);
    Vec::<u8>::try_from(px)
}

/// A soft mask in its image's format: JPEG at PIL's default quality 75 (lossy, as the official masks of
/// IN-9's `.JPEG` files), else PNG.
pub fn encode_soft_mask(
    source: &dyn Source,
    i: usize,
    w: u32,
    h: u32,
    px: &[u8],
) -> Result<Vec<u8>, LocalizeError> {
    let bad =
        |e: String| LocalizeError::Invalid(format!("{}: soft mask: {e}", where_is(source, i)));
    let ext = source
        .locate(i)
        .and_then(|(f, _, _)| f.extension().and_then(|e| e.to_str()).map(str::to_string))
        .unwrap_or_default();
    let img = image::GrayImage::from_raw(w, h, px.to_vec())
        .ok_or_else(|| bad("wrong number of pixels".into()))?;
    let mut bytes = std::io::Cursor::new(Vec::new());
    match soft_mask_format(&ext) {
        Some(image::ImageFormat::Jpeg) => {
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 75)
                .encode_image(&img)
                .map_err(|e| bad(format!("encoding JPEG: {e}")))?;
        }
        _ => img
            .write_to(&mut bytes, image::ImageFormat::Png)
            .map_err(|e| bad(format!("encoding PNG: {e}")))?,
    }
    Ok(bytes.into_inner())
}

/// A {0, 1} mask as an 8-bit grayscale PNG of 0/255.
fn encode_mask_png(mask: &[u8], side: usize) -> Result<Vec<u8>, LocalizeError> {
    let px: Vec<u8> = mask.iter().map(|&v| if v != 0 { 255 } else { 0 }).collect();
    let img = image::GrayImage::from_raw(side as u32, side as u32, px)
        .ok_or_else(|| LocalizeError::Invalid("mask has the wrong size".into()))?;
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| LocalizeError::Invalid(format!("encoding a mask PNG: {e}")))?;
    Ok(bytes.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_relative_file_names_only() {
        let root = Path::new("/o");
        assert_eq!(
            output_path(root, "001.A/a.jpg", "png").unwrap(),
            Path::new("/o/001.A/a.jpg.png")
        );
        assert_eq!(
            output_path(root, "139", "npy").unwrap(),
            Path::new("/o/139.npy")
        );
        for bad in ["", "../x", "/abs/x", "a/../../b"] {
            assert!(output_path(root, bad, "png").is_none(), "{bad}");
        }
    }

    #[test]
    fn a_last_batch_of_one_is_refused_with_workable_sizes() {
        let opts = LocalizeOptions {
            batch_size: 4,
            ..Default::default()
        };
        let e = check_batches(9, &opts).unwrap_err().to_string();
        assert!(
            e.contains("batch of one image") && e.contains("e.g. 3 or 5"),
            "{e}"
        );
        assert!(check_batches(10, &opts).is_ok());
        // A classifier needs no negatives.
        let sup = LocalizeOptions {
            method: CamMethod::GradCam { expand_res: 1 },
            ..opts
        };
        assert!(check_batches(9, &sup).is_ok());
    }
}
