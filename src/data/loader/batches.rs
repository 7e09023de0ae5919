//! From a [`Source`] to batches: epoch order from the seed, per-sample transforms in worker threads, bounded
//! prefetch, collation into tensors (pinned and copied without blocking when the device is CUDA).
//!
//! Every random choice of a sample (OA-Crop box, crop rectangles, flips) comes from a generator seeded by
//! (seed, epoch, sample index), and batch b of an epoch always holds positions `b·B .. (b+1)·B` of the
//! epoch's permutation, so batches do not depend on the number of workers or on their timing, and an epoch
//! can be resumed at any step. At most `prefetch` batches are being built or waiting at any time, whatever
//! the dataset size; the source holds only the index (about 150 bytes per sample), never pixels.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use image::{GrayImage, RgbImage};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::dataset::Source;
use super::decode::decode_luma;
use super::object_crop::ObjectBoxes;
use super::transform::{
    crop_gray, crop_rgb, hflip_rgb, object_crop_rect, resize_bilinear_f32, resize_pil, rgb_to_chw,
    EvalTransform, Planes, RandomResizedCrop,
};
use crate::data::error::{DataError, Result};
use crate::util::rng::rng_for;

/// Where the mask that travels with view 1 comes from.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum MaskInput {
    #[default]
    None,
    /// The source's ground-truth foreground (BG-HardMix(GT); the synthetic scenes' object masks).
    GroundTruth,
    /// Soft masks in the official `save_masks` layout: for an image `.../<class>/<file>`, the grayscale
    /// file `<dir>/<class>/<file>` of the same size, read as value / 255 (or `<dir>/<id>[.<ext>]`, as
    /// `localize dataset --soft-masks` writes ids that are not `<class>/<file>`; see
    /// [`folder_mask_path`]). The official `IN9WithMask` pairs the two sorted ImageFolders by position;
    /// pairing by `<class>/<file>` is the same pairing whenever the folders hold the same files, and an
    /// error naming the file when they do not.
    Folder(PathBuf),
}

/// What each sample becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Views {
    /// Two independently augmented views (pretraining). Without a mask they take the PIL path and are 8-bit;
    /// with a mask both views take torchvision's tensor path (float32) and view 1 is cropped and flipped
    /// jointly with its mask.
    Pretrain(RandomResizedCrop),
    /// One RandomResizedCrop + flip view on the PIL path, 8-bit (supervised training). It draws what view 1
    /// of `Pretrain` draws, so it equals that view.
    Single(RandomResizedCrop),
    /// One deterministic view (evaluation), 8-bit.
    Eval(EvalTransform),
}

/// The per-sample work: views, optional mask, optional OA-Crop boxes (applied before everything else).
#[derive(Debug, Clone)]
pub struct Plan {
    pub views: Views,
    pub masks: MaskInput,
    pub object_boxes: Option<Arc<ObjectBoxes>>,
}

impl Plan {
    pub fn pretrain(crop: RandomResizedCrop) -> Plan {
        Plan {
            views: Views::Pretrain(crop),
            masks: MaskInput::None,
            object_boxes: None,
        }
    }

    pub fn eval(t: EvalTransform) -> Plan {
        Plan {
            views: Views::Eval(t),
            masks: MaskInput::None,
            object_boxes: None,
        }
    }

    pub fn with_masks(mut self, masks: MaskInput) -> Plan {
        self.masks = masks;
        self
    }

    pub fn with_object_boxes(mut self, boxes: ObjectBoxes) -> Plan {
        self.object_boxes = Some(Arc::new(boxes));
        self
    }

    /// One RandomResizedCrop + flip view per sample (supervised training).
    pub fn single(crop: RandomResizedCrop) -> Plan {
        Plan {
            views: Views::Single(crop),
            masks: MaskInput::None,
            object_boxes: None,
        }
    }

    /// Side of the square views.
    pub fn output_size(&self) -> u32 {
        match &self.views {
            Views::Pretrain(c) | Views::Single(c) => c.size,
            Views::Eval(t) => t.output_size(),
        }
    }

    pub fn num_views(&self) -> usize {
        match self.views {
            Views::Pretrain(_) => 2,
            Views::Single(_) | Views::Eval(_) => 1,
        }
    }

    fn float_views(&self) -> bool {
        matches!(self.views, Views::Pretrain(_)) && self.masks != MaskInput::None
    }
}

/// How batches are formed and delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// A new permutation per epoch (training); the index order otherwise (evaluation).
    pub shuffle: bool,
    /// Leave out the last incomplete batch (training, as the official `drop_last=True`).
    pub drop_last: bool,
    pub seed: u64,
    /// Decode/transform threads; 0 builds each batch on the calling thread.
    pub workers: usize,
    /// Batches being built or waiting, at most.
    pub prefetch: usize,
    /// Skip samples whose image or mask cannot be read or decoded (counted and reported) instead of failing.
    pub skip_bad: bool,
    /// Where batches go; on CUDA through pinned memory with non-blocking copies.
    pub device: Device,
    /// Data-parallel part `(rank, world)`: each global batch of `batch_size` is cut into `world` equal,
    /// contiguous parts and this loader delivers part `rank` (`(0, 1)`: everything).
    pub shard: (usize, usize),
}

impl LoaderConfig {
    /// Training defaults: shuffled, `drop_last`, one worker per core (at least 1), prefetch twice that.
    pub fn train(batch_size: usize, seed: u64) -> LoaderConfig {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        LoaderConfig {
            batch_size,
            shuffle: true,
            drop_last: true,
            seed,
            workers,
            prefetch: 2 * workers,
            skip_bad: false,
            device: Device::Cpu,
            shard: (0, 1),
        }
    }

    /// Evaluation defaults: index order, every sample.
    pub fn eval(batch_size: usize) -> LoaderConfig {
        LoaderConfig {
            shuffle: false,
            drop_last: false,
            ..LoaderConfig::train(batch_size, 0)
        }
    }
}

/// A sample left out under `skip_bad`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub epoch: usize,
    pub index: usize,
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    pub reason: String,
}

/// One batch. Views are (B, 3, S, S): `Uint8` on the PIL path (÷ 255 is `ToTensor`), `Float` in [0, 1] on
/// the tensor path; [`Batch::view`] gives float either way.
#[derive(Debug)]
pub struct Batch {
    pub epoch: usize,
    /// Position of the batch in its epoch.
    pub step: usize,
    /// Source indices of the samples, in batch order.
    pub indices: Vec<usize>,
    pub labels: Vec<Vec<i64>>,
    pub views: Vec<Tensor>,
    /// (B, 1, S, S) float in [0, 1], aligned with view 1.
    pub mask: Option<Tensor>,
    /// Samples of this batch's positions that were skipped (`skip_bad`).
    pub skipped: Vec<Skipped>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// View `k` as float in [0, 1] on its device (`ToTensor` semantics for 8-bit views).
    pub fn view(&self, k: usize) -> Tensor {
        let v = &self.views[k];
        if v.kind() == Kind::Uint8 {
            v.to_kind(Kind::Float) / 255.0
        } else {
            v.shallow_clone()
        }
    }

    /// The first label of every sample as an int64 tensor (B,) on `device`; an error when a sample has none.
    pub fn class_labels(&self, device: Device) -> Result<Tensor> {
        let l: Vec<i64> = self
            .labels
            .iter()
            .zip(&self.indices)
            .map(|(l, i)| {
                l.first()
                    .copied()
                    .ok_or_else(|| DataError::Loader(format!("sample {i} has no label")))
            })
            .collect::<Result<_>>()?;
        Ok(Tensor::from_slice(&l).to_device(device))
    }
}

/// One sample after its transforms.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleViews {
    /// 8-bit CHW planes (PIL path) or float CHW planes (tensor path), one per view.
    pub views: Vec<Pixels>,
    pub mask: Option<Vec<f32>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Pixels {
    U8(Vec<u8>),
    F32(Vec<f32>),
}

/// Batches of a source under a plan.
pub struct Loader {
    inner: Arc<Inner>,
}

struct Inner {
    source: Arc<dyn Source>,
    plan: Plan,
    cfg: LoaderConfig,
    labels: Vec<Vec<i64>>,
    skipped: Mutex<Vec<Skipped>>,
}

impl Loader {
    pub fn new(source: Arc<dyn Source>, plan: Plan, cfg: LoaderConfig) -> Result<Loader> {
        let n = source.len();
        if cfg.batch_size == 0 {
            return Err(DataError::Loader("batch size must be at least 1".into()));
        }
        let (rank, world) = cfg.shard;
        if world == 0 || rank >= world || !cfg.batch_size.is_multiple_of(world) {
            return Err(DataError::Loader(format!(
                "shard {rank} of {world}: needs rank < world and a batch size ({}) divisible by world",
                cfg.batch_size
            )));
        }
        if cfg.drop_last && cfg.batch_size > n {
            return Err(DataError::Loader(format!(
                "batch size {} is larger than {} ({n} samples), so drop_last leaves no batch",
                cfg.batch_size,
                source.name()
            )));
        }
        if let Views::Pretrain(c) | Views::Single(c) = &plan.views {
            c.validate().map_err(DataError::Loader)?;
        }
        if !matches!(plan.views, Views::Pretrain(_)) && plan.masks != MaskInput::None {
            return Err(DataError::Loader(
                "masks travel with pretraining views only; read evaluation masks with Source::mask"
                    .into(),
            ));
        }
        if let Some(b) = &plan.object_boxes {
            if b.len() != n {
                return Err(DataError::Loader(format!(
                    "box file {} was matched to {} samples, {} has {n}",
                    b.file.display(),
                    b.len(),
                    source.name()
                )));
            }
        }
        if let MaskInput::Folder(d) = &plan.masks {
            if !d.is_dir() {
                return Err(DataError::Loader(format!(
                    "mask folder {} does not exist",
                    d.display()
                )));
            }
        }
        let labels = (0..n)
            .map(|i| source.meta(i).map(|m| m.labels))
            .collect::<Result<_>>()?;
        Ok(Loader {
            inner: Arc::new(Inner {
                source,
                plan,
                cfg: LoaderConfig {
                    prefetch: cfg.prefetch.max(1),
                    ..cfg
                },
                labels,
                skipped: Mutex::new(vec![]),
            }),
        })
    }

    pub fn source(&self) -> &Arc<dyn Source> {
        &self.inner.source
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.inner.cfg
    }

    pub fn plan(&self) -> &Plan {
        &self.inner.plan
    }

    /// Batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.inner.source.len(), self.inner.cfg.batch_size);
        if self.inner.cfg.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The order in which epoch `epoch` visits the samples.
    pub fn order(&self, epoch: usize) -> Vec<usize> {
        self.inner.order(epoch)
    }

    /// The batches of `epoch` from the first.
    pub fn epoch(&self, epoch: usize) -> EpochBatches {
        self.epoch_from(epoch, 0)
    }

    /// The batches of `epoch` from position `start` (resuming a run stopped after `start` steps).
    pub fn epoch_from(&self, epoch: usize, start: usize) -> EpochBatches {
        EpochBatches::new(self.inner.clone(), epoch, start)
    }

    /// Every sample skipped so far (`skip_bad`), in the order they were met.
    pub fn skipped(&self) -> Vec<Skipped> {
        lock(&self.inner.skipped).clone()
    }

    /// Sample `index` as epoch `epoch` transforms it (what a batch holds at its position).
    pub fn sample(&self, epoch: usize, index: usize) -> Result<SampleViews> {
        self.inner.sample(epoch, index)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where sample `index`'s mask lies in a [`MaskInput::Folder`]: `<dir>/<class>/<file>` of its image (the
/// official `save_masks` layout, which `localize dataset --soft-masks` also writes for ImageFolder ids);
/// failing that, `<dir>/<id>` or `<dir>/<id>.<ext>` when that file exists (what `localize dataset` writes
/// for other ids, e.g. COCO's numeric ones). A mask in neither place is reported at the first.
pub fn folder_mask_path(
    source: &dyn Source,
    dir: &std::path::Path,
    index: usize,
) -> Result<PathBuf> {
    let file = source.locate(index).map(|l| l.0).unwrap_or_default();
    let primary = dir.join(
        super::dataset::id_of(
            super::dataset::IdScheme::ImageFolder,
            &file.to_string_lossy(),
        )
        .unwrap_or_default(),
    );
    if primary.is_file() {
        return Ok(primary);
    }
    let id = source.meta(index)?.id;
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    let own_ext = std::path::Path::new(&id)
        .extension()
        .and_then(|e| e.to_str())
        == Some(ext);
    let by_id = if own_ext || ext.is_empty() {
        dir.join(&id)
    } else {
        dir.join(format!("{id}.{ext}"))
    };
    Ok(if by_id.is_file() { by_id } else { primary })
}

impl Inner {
    fn order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.source.len()).collect();
        if self.cfg.shuffle {
            order.shuffle(&mut rng_for(
                self.cfg.seed,
                &format!("loader/order/{epoch}"),
            ));
        }
        order
    }

    fn sample_rng(&self, epoch: usize, index: usize) -> ChaCha8Rng {
        rng_for(self.cfg.seed, &format!("loader/sample/{epoch}/{index}"))
    }

    fn folder_mask(&self, dir: &std::path::Path, index: usize) -> Result<GrayImage> {
        let Some((_, index_file, line)) = self.source.locate(index) else {
            return Err(DataError::Loader(format!(
                "{} has no files, so masks cannot come from a folder",
                self.source.name()
            )));
        };
        let path = folder_mask_path(self.source.as_ref(), dir, index)?;
        let bad = |msg: String| DataError::BadSample {
            what: "mask",
            file: path.clone(),
            index: index_file.clone(),
            line,
            msg,
        };
        let bytes = std::fs::read(&path).map_err(|e| bad(e.to_string()))?;
        decode_luma(&bytes).map_err(bad)
    }

    fn sample(&self, epoch: usize, index: usize) -> Result<SampleViews> {
        let mut rng = self.sample_rng(epoch, index);
        let mut img = self.source.image(index)?;
        let mut mask = match &self.plan.masks {
            MaskInput::None => None,
            MaskInput::GroundTruth => Some(self.source.mask(index)?.ok_or_else(|| {
                DataError::Loader(format!(
                    "sample {index} of {} has no ground-truth mask",
                    self.source.name()
                ))
            })?),
            MaskInput::Folder(d) => Some(self.folder_mask(d, index)?),
        };
        if let Some(m) = &mask {
            if m.dimensions() != img.dimensions() {
                let file = self.source.locate(index).map(|l| l.0);
                return Err(DataError::Loader(format!(
                    "the mask of sample {index} ({}) is {:?}, its image {:?}",
                    file.map(|f| f.display().to_string()).unwrap_or_default(),
                    m.dimensions(),
                    img.dimensions()
                )));
            }
        }
        // OA-Crop: one box per image per step, the same for both views, before everything else.
        if let Some(boxes) = &self.plan.object_boxes {
            let b = boxes.boxes(index);
            if !b.is_empty() {
                let bx = b[rng.random_range(0..b.len())];
                let (w, h) = img.dimensions();
                let r = object_crop_rect(bx, w, h).ok_or_else(|| {
                    DataError::Loader(format!(
                        "{} line {}: box {bx:?} is empty on the {w}x{h} image of sample {index}",
                        boxes.file.display(),
                        boxes.line(index)
                    ))
                })?;
                img = crop_rgb(&img, r);
                mask = mask.map(|m| crop_gray(&m, r));
            }
        }
        match &self.plan.views {
            Views::Eval(t) => Ok(SampleViews {
                views: vec![Pixels::U8(rgb_to_chw(&t.apply(&img)))],
                mask: None,
            }),
            Views::Single(c) => Ok(SampleViews {
                views: vec![Pixels::U8(rgb_to_chw(&self.pil_view(c, &img, &mut rng)))],
                mask: None,
            }),
            Views::Pretrain(c) if !self.plan.float_views() => {
                let mut views = Vec::with_capacity(2);
                for _ in 0..2 {
                    views.push(Pixels::U8(rgb_to_chw(&self.pil_view(c, &img, &mut rng))));
                }
                Ok(SampleViews { views, mask: None })
            }
            Views::Pretrain(c) => {
                let s = c.size as usize;
                let tensor_view = |planes: &Planes, rng: &mut ChaCha8Rng| {
                    let r = c.params(rng, planes.width as u32, planes.height as u32);
                    let mut v = resize_bilinear_f32(&planes.crop(r), s, s);
                    if rng.random_bool(c.hflip_p) {
                        v.hflip();
                    }
                    v
                };
                let joint = tensor_view(&Planes::from_rgb(&img, mask.as_ref()), &mut rng);
                let second = tensor_view(&Planes::from_rgb(&img, None), &mut rng);
                let plane = s * s;
                let (v1, m1) = joint.data.split_at(3 * plane);
                Ok(SampleViews {
                    views: vec![Pixels::F32(v1.to_vec()), Pixels::F32(second.data)],
                    mask: Some(m1.to_vec()),
                })
            }
        }
    }

    /// One 8-bit RandomResizedCrop + flip view (the PIL path), drawing from `rng`.
    fn pil_view(&self, c: &RandomResizedCrop, img: &RgbImage, rng: &mut ChaCha8Rng) -> RgbImage {
        let r = c.params(rng, img.width(), img.height());
        let mut v = resize_pil(&crop_rgb(img, r), c.size, c.size);
        if rng.random_bool(c.hflip_p) {
            hflip_rgb(&mut v);
        }
        v
    }

    /// Builds batch `step` of `epoch` on the CPU.
    fn build(&self, epoch: usize, step: usize, order: &[usize]) -> Result<CpuBatch> {
        let b = self.cfg.batch_size;
        let global = &order[step * b..((step + 1) * b).min(order.len())];
        let (rank, world) = self.cfg.shard;
        let per = b / world;
        let positions =
            &global[(rank * per).min(global.len())..((rank + 1) * per).min(global.len())];
        let mut indices = Vec::with_capacity(positions.len());
        let mut samples = Vec::with_capacity(positions.len());
        let mut skipped = vec![];
        for &i in positions {
            match self.sample(epoch, i) {
                Ok(s) => {
                    indices.push(i);
                    samples.push(s);
                }
                Err(e @ DataError::BadSample { .. }) if self.cfg.skip_bad => {
                    let loc = self.source.locate(i);
                    let file = match &e {
                        DataError::BadSample { file, .. } => Some(file.clone()),
                        _ => None,
                    };
                    skipped.push(Skipped {
                        epoch,
                        index: i,
                        file,
                        line: loc.map(|l| l.2),
                        reason: e.to_string(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        let s = self.plan.output_size() as i64;
        let n = samples.len() as i64;
        let pin = self.cfg.device.is_cuda();
        let finish = |t: Tensor| {
            if pin {
                t.pin_memory(self.cfg.device)
            } else {
                t
            }
        };
        let mut views = vec![];
        for k in 0..self.plan.num_views() {
            let t = match samples.first().map(|x| &x.views[k]) {
                Some(Pixels::F32(_)) => {
                    let flat: Vec<f32> = samples
                        .iter()
                        .flat_map(|x| match &x.views[k] {
                            Pixels::F32(v) => v.as_slice(),
                            Pixels::U8(_) => &[],
                        })
                        .copied()
                        .collect();
                    Tensor::from_slice(&flat)
                }
                _ => {
                    let flat: Vec<u8> = samples
                        .iter()
                        .flat_map(|x| match &x.views[k] {
                            Pixels::U8(v) => v.as_slice(),
                            Pixels::F32(_) => &[],
                        })
                        .copied()
                        .collect();
                    Tensor::from_slice(&flat)
                }
            };
            views.push(finish(t.reshape([n, 3, s, s])));
        }
        let mask = if self.plan.float_views() {
            let flat: Vec<f32> = samples
                .iter()
                .flat_map(|x| x.mask.as_deref().unwrap_or(&[]))
                .copied()
                .collect();
            Some(finish(Tensor::from_slice(&flat).reshape([n, 1, s, s])))
        } else {
            None
        };
        if !skipped.is_empty() {
            lock(&self.skipped).extend(skipped.iter().cloned());
        }
        Ok(CpuBatch {
            epoch,
            step,
            labels: indices.iter().map(|&i| self.labels[i].clone()).collect(),
            indices,
            views,
            mask,
            skipped,
        })
    }
}

struct CpuBatch {
    epoch: usize,
    step: usize,
    indices: Vec<usize>,
    labels: Vec<Vec<i64>>,
    views: Vec<Tensor>,
    mask: Option<Tensor>,
    skipped: Vec<Skipped>,
}

impl CpuBatch {
    fn into_device(self, device: Device) -> Batch {
        // From pinned memory the copy is asynchronous; the caching host allocator keeps the pinned block
        // alive until the copy has run, so dropping it here is safe.
        let move_to = |t: Tensor| {
            if device.is_cuda() {
                t.to_device_(device, t.kind(), true, false)
            } else {
                t
            }
        };
        Batch {
            epoch: self.epoch,
            step: self.step,
            indices: self.indices,
            labels: self.labels,
            views: self.views.into_iter().map(move_to).collect(),
            mask: self.mask.map(move_to),
            skipped: self.skipped,
        }
    }
}

struct Queue {
    /// Next batch a worker may claim.
    next: usize,
    /// Next batch the consumer takes.
    taken: usize,
    ready: BTreeMap<usize, Result<CpuBatch>>,
    stop: bool,
}

struct Shared {
    q: Mutex<Queue>,
    cv: Condvar,
}

/// The batches of one epoch, in order. Dropping it stops its workers.
pub struct EpochBatches {
    inner: Arc<Inner>,
    epoch: usize,
    order: Arc<Vec<usize>>,
    end: usize,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    failed: bool,
}

impl EpochBatches {
    fn new(inner: Arc<Inner>, epoch: usize, start: usize) -> EpochBatches {
        let order = Arc::new(inner.order(epoch));
        let (n, b) = (order.len(), inner.cfg.batch_size);
        let end = if inner.cfg.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        };
        let start = start.min(end);
        let shared = Arc::new(Shared {
            q: Mutex::new(Queue {
                next: start,
                taken: start,
                ready: BTreeMap::new(),
                stop: false,
            }),
            cv: Condvar::new(),
        });
        let workers = (0..inner.cfg.workers)
            .map(|k| {
                let (inner, shared, order) = (inner.clone(), shared.clone(), order.clone());
                std::thread::Builder::new()
                    .name(format!("loader-{k}"))
                    .spawn(move || work(&inner, &shared, &order, epoch, end))
            })
            .filter_map(|h| h.ok())
            .collect();
        EpochBatches {
            inner,
            epoch,
            order,
            end,
            shared,
            workers,
            failed: false,
        }
    }

    /// Batches left in this epoch.
    pub fn remaining(&self) -> usize {
        self.end - lock(&self.shared.q).taken
    }
}

fn work(inner: &Inner, shared: &Shared, order: &[usize], epoch: usize, end: usize) {
    loop {
        let step = {
            let mut q = lock(&shared.q);
            loop {
                if q.stop || q.next >= end {
                    return;
                }
                if q.next < q.taken + inner.cfg.prefetch {
                    break;
                }
                q = shared.cv.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            q.next += 1;
            q.next - 1
        };
        // A panic in a transform must reach the consumer as an error, not leave it waiting.
        let batch = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            inner.build(epoch, step, order)
        }))
        .unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(DataError::Loader(format!(
                "worker panicked on batch {step} of epoch {epoch}: {msg}"
            )))
        });
        let mut q = lock(&shared.q);
        q.ready.insert(step, batch);
        shared.cv.notify_all();
    }
}

impl Iterator for EpochBatches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.failed {
            return None;
        }
        let step = lock(&self.shared.q).taken;
        if step >= self.end {
            return None;
        }
        let batch = if self.workers.is_empty() {
            lock(&self.shared.q).taken += 1;
            self.inner.build(self.epoch, step, &self.order)
        } else {
            let mut q = lock(&self.shared.q);
            loop {
                if let Some(b) = q.ready.remove(&step) {
                    q.taken += 1;
                    self.shared.cv.notify_all();
                    break b;
                }
                q = self.shared.cv.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        match batch {
            Ok(b) => Some(Ok(b.into_device(self.inner.cfg.device))),
            Err(e) => {
                self.failed = true;
                self.stop();
                Some(Err(e))
            }
        }
    }
}

impl EpochBatches {
    fn stop(&mut self) {
        lock(&self.shared.q).stop = true;
        self.shared.cv.notify_all();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for EpochBatches {
    fn drop(&mut self) {
        self.stop();
    }
}
