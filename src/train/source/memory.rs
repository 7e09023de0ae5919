//! The in-memory source: a tensor of images (the synthetic scenes), optional object-aware boxes and
//! foreground masks, batches in a seeded order per epoch and two geometric views per batch.
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::{Batch, BatchSource};
use crate::train::augment::object_aware_crop::choose_regions;
use crate::train::augment::{crop_resize, sample_crop, AugmentConfig, Region};
use crate::train::error::TrainError;
use crate::train::rng_state::RngState;
use crate::train::strategy::Shard;
use crate::util::rng::rng_for;

pub struct InMemorySource {
    /// (N, 3, H, W) float in [0, 1]; the views are computed on its device.
    images: Tensor,
    /// Per image, object-aware crop boxes (normalised xyxy); empty = the whole image.
    boxes: Option<Vec<Vec<Region>>>,
    /// (N, H, W) foreground masks in [0, 1], cropped with view 1.
    masks: Option<Tensor>,
    labels: Option<Tensor>,
    augment: AugmentConfig,
    batch_size: usize,
    seed: u64,
    shard: Shard,
    epoch: usize,
    order: Vec<usize>,
    next: usize,
    views_rng: ChaCha8Rng,
}

#[derive(Serialize, Deserialize)]
struct State {
    kind: String,
    num_images: usize,
    batch_size: usize,
    epoch: usize,
    next_batch: usize,
    views_rng: RngState,
}

const KIND: &str = "in-memory";

impl InMemorySource {
    /// `images` (N, 3, H, W) in [0, 1]; `batch_size` is the global batch. Boxes, masks and labels, when
    /// given, must have one entry per image.
    pub fn new(
        images: Tensor,
        batch_size: usize,
        augment: &AugmentConfig,
        seed: u64,
        shard: Shard,
    ) -> Result<Self, TrainError> {
        let size = images.size();
        if size.len() != 4 || size[1] != 3 || size[0] == 0 {
            return Err(TrainError::config(
                "training images",
                format!("{size:?}"),
                "expected a non-empty (N, 3, H, W) tensor",
            ));
        }
        if !batch_size.is_multiple_of(shard.world) {
            return Err(TrainError::config(
                "train.batch_size",
                batch_size,
                format!("must be a multiple of the {} processes", shard.world),
            ));
        }
        Ok(Self {
            images,
            boxes: None,
            masks: None,
            labels: None,
            augment: augment.clone(),
            batch_size,
            seed,
            shard,
            epoch: 0,
            order: Vec::new(),
            next: 0,
            views_rng: rng_for(seed, "train/views/0"),
        })
    }

    pub fn with_boxes(mut self, boxes: Vec<Vec<Region>>) -> Result<Self, TrainError> {
        let n = self.num_images();
        if boxes.len() != n {
            return Err(TrainError::config(
                "boxes",
                format!("{} lists", boxes.len()),
                format!("need one box list per training image ({n})"),
            ));
        }
        self.boxes = Some(boxes);
        Ok(self)
    }

    pub fn with_masks(mut self, masks: Tensor) -> Result<Self, TrainError> {
        let s = self.images.size();
        if masks.size() != [s[0], s[2], s[3]] {
            return Err(TrainError::config(
                "masks",
                format!("{:?}", masks.size()),
                format!(
                    "need one (H, W) = ({}, {}) mask per image ({})",
                    s[2], s[3], s[0]
                ),
            ));
        }
        self.masks = Some(masks.to_kind(Kind::Float).to_device(self.images.device()));
        Ok(self)
    }

    pub fn with_labels(mut self, labels: Tensor) -> Result<Self, TrainError> {
        if labels.size() != [self.images.size()[0]] {
            return Err(TrainError::config(
                "labels",
                format!("{:?}", labels.size()),
                "need one label per image",
            ));
        }
        self.labels = Some(labels.to_kind(Kind::Int64));
        Ok(self)
    }

    fn shuffle(&mut self, epoch: usize) {
        let n = self.num_images();
        self.order = (0..n).collect();
        self.order
            .shuffle(&mut rng_for(self.seed, &format!("train/order/{epoch}")));
    }

    /// One stream per epoch, the same on every rank (see `next_batch`).
    fn views_stream(&self, epoch: usize) -> ChaCha8Rng {
        rng_for(self.seed, &format!("train/views/{epoch}"))
    }
}

impl BatchSource for InMemorySource {
    fn num_images(&self) -> usize {
        self.images.size()[0] as usize
    }

    fn batches_per_epoch(&self) -> usize {
        self.num_images() / self.batch_size
    }

    fn start_epoch(&mut self, epoch: usize) -> Result<(), TrainError> {
        self.epoch = epoch;
        self.shuffle(epoch);
        self.next = 0;
        self.views_rng = self.views_stream(epoch);
        Ok(())
    }

    fn next_batch(&mut self) -> Result<Option<Batch>, TrainError> {
        if self.order.is_empty() || self.next >= self.batches_per_epoch() {
            return Ok(None);
        }
        let global = &self.order[self.next * self.batch_size..(self.next + 1) * self.batch_size];
        let local = self.shard.local_range(self.batch_size);
        let idx = &global[local.clone()];
        self.next += 1;
        let dev = self.images.device();
        let idx_t =
            Tensor::from_slice(&idx.iter().map(|&i| i as i64).collect::<Vec<_>>()).to_device(dev);
        let images = self.images.index_select(0, &idx_t);
        let (h, w) = (images.size()[2] as f64, images.size()[3] as f64);
        // Boxes, crops and flips are drawn for the whole global batch on every rank, which then cuts its
        // own rows: the stream is the same on every rank and at every world size (so rank 0's state resumes
        // a run at any world size), and N ranks see the views one process sees.
        let regions = choose_regions(self.boxes.as_deref(), global, &mut self.views_rng);
        let rng = &mut self.views_rng;
        let cfg = &self.augment;
        let mut view = |input: &Tensor| {
            let crops: Vec<Region> = regions
                .iter()
                .map(|&r| sample_crop(rng, r, w, h, cfg))
                .collect();
            let flips: Vec<bool> = regions
                .iter()
                .map(|_| rand::Rng::random_bool(rng, cfg.hflip_p))
                .collect();
            crop_resize(
                input,
                &crops[local.clone()],
                &flips[local.clone()],
                cfg.output_size,
            )
        };
        // View 1 and its mask share one crop and flip, as the official joint 4-channel transform.
        let (v1, masks) = match &self.masks {
            Some(m) => {
                let joint = view(&Tensor::cat(
                    &[
                        images.shallow_clone(),
                        m.index_select(0, &idx_t).unsqueeze(1),
                    ],
                    1,
                ));
                (joint.narrow(1, 0, 3), Some(joint.select(1, 3)))
            }
            None => (view(&images), None),
        };
        let v2 = view(&images);
        let labels = self
            .labels
            .as_ref()
            .map(|l| l.index_select(0, &idx_t.to_device(l.device())));
        Ok(Some(Batch {
            views: vec![v1, v2],
            masks,
            labels,
        }))
    }

    fn state(&self) -> serde_json::Value {
        serde_json::to_value(State {
            kind: KIND.into(),
            num_images: self.num_images(),
            batch_size: self.batch_size,
            epoch: self.epoch,
            next_batch: self.next,
            views_rng: RngState::capture(&self.views_rng),
        })
        .unwrap_or(serde_json::Value::Null)
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<(), TrainError> {
        let bad = |msg: String| TrainError::config("data source state", "checkpoint", msg);
        let s: State = serde_json::from_value(state.clone())
            .map_err(|e| bad(format!("not an in-memory source state: {e}")))?;
        if s.kind != KIND {
            return Err(bad(format!(
                "written by a '{}' source, not '{KIND}'",
                s.kind
            )));
        }
        if s.num_images != self.num_images() || s.batch_size != self.batch_size {
            return Err(bad(format!(
                "written for {} images in batches of {}; this run has {} in batches of {}",
                s.num_images,
                s.batch_size,
                self.num_images(),
                self.batch_size
            )));
        }
        if s.next_batch > self.batches_per_epoch() {
            return Err(bad(format!(
                "batch position {} beyond the epoch",
                s.next_batch
            )));
        }
        self.epoch = s.epoch;
        self.shuffle(s.epoch);
        self.next = s.next_batch;
        self.views_rng = s.views_rng.restore().map_err(bad)?;
        Ok(())
    }
}
