//! The index-backed source: a split written by `data build` (any [`Source`] of the data layer) through the
//! loader, so the loop trains on real images with the official pretraining transform: per image two
//! RandomResizedCrop + flip views (sizes from the `[train.augment]` table), optionally inside one box per
//! image from an official-format box file (OA-Crop), optionally with soft masks cropped jointly with view 1.
//!
//! Order and views come from (seed, epoch, sample index) inside the loader, so batches do not depend on the
//! number of workers, and the position (epoch, batch) is the whole resumable state. Memory is bounded by
//! the loader's prefetch (the index is held, never the pixels).
use std::sync::Arc;

use tch::Device;

use super::position::LoaderPosition;
use super::{Batch, BatchSource};
use crate::data::error::DataError;
use crate::data::loader::{
    folder_mask_path, Loader, LoaderConfig, MaskInput, ObjectBoxes, Plan, RandomResizedCrop,
    Skipped, Source,
};
use crate::train::augment::AugmentConfig;
use crate::train::error::TrainError;
use crate::train::strategy::Shard;

/// How the loader under an [`IndexBatchSource`] runs, and what travels with the views.
#[derive(Debug, Clone)]
pub struct IndexSourceOptions {
    /// OA-Crop boxes matched to the source's samples (`ObjectBoxes::load`).
    pub boxes: Option<ObjectBoxes>,
    /// Masks cropped with view 1 (soft masks from a folder, or the ground truth). With a mask both views
    /// take torchvision's float path instead of the 8-bit PIL path, as the official `IN9WithMask`.
    pub masks: MaskInput,
    /// Decode/transform threads; 0 builds each batch on the training thread.
    pub workers: usize,
    /// Batches being built or waiting, at most; 0 means twice the workers (at least 1).
    pub prefetch: usize,
    /// Skip unreadable images (counted, listed by [`IndexBatchSource::skipped`]) instead of failing.
    pub skip_bad: bool,
    /// Where batches are delivered (pinned memory and non-blocking copies on CUDA).
    pub device: Device,
}

impl Default for IndexSourceOptions {
    fn default() -> Self {
        Self {
            boxes: None,
            masks: MaskInput::None,
            workers: 0,
            prefetch: 0,
            skip_bad: false,
            device: Device::Cpu,
        }
    }
}

pub struct IndexBatchSource {
    loader: Loader,
    position: LoaderPosition,
}

const KIND: &str = "index";

/// The loader's RandomResizedCrop from the training augmentation table.
pub fn pretrain_crop(augment: &AugmentConfig) -> Result<RandomResizedCrop, TrainError> {
    augment.validate("train.augment")?;
    Ok(RandomResizedCrop {
        size: augment.output_size as u32,
        scale: augment.crop_scale,
        ratio: augment.crop_ratio,
        hflip_p: augment.hflip_p,
    })
}

/// Checks before training that every image of `source` (and, with a mask folder, every mask) is a file,
/// so a missing one stops the run now rather than hours in. The error names the first missing file, its
/// index line and how many are missing; decoding is still checked where each image is read.
pub fn check_files(source: &dyn Source, masks: &MaskInput) -> Result<(), TrainError> {
    let mut first: Option<(std::path::PathBuf, std::path::PathBuf, usize, &str)> = None;
    let mut missing = 0usize;
    for i in 0..source.len() {
        let Some((file, index, line)) = source.locate(i) else {
            continue;
        };
        let mask = match masks {
            MaskInput::Folder(dir) => Some(folder_mask_path(source, dir, i)?),
            _ => None,
        };
        let absent = if !file.is_file() {
            Some((file, "image"))
        } else {
            mask.filter(|m| !m.is_file()).map(|m| (m, "mask"))
        };
        if let Some((f, what)) = absent {
            missing += 1;
            first.get_or_insert((f, index, line, what));
        }
    }
    match first {
        None => Ok(()),
        Some((file, index, line, what)) => Err(TrainError::Data(DataError::BadSample {
            what,
            file,
            index,
            line,
            msg: format!(
                "no such file ({missing} of the {} samples of {} miss an image or mask file)",
                source.len(),
                source.name()
            ),
        })),
    }
}

impl IndexBatchSource {
    /// Batches of `source` for training: `batch_size` is the global batch (this process delivers its
    /// `shard`), whole batches only (`drop_last`), a new order per epoch from `seed`.
    pub fn new(
        source: Arc<dyn Source>,
        batch_size: usize,
        augment: &AugmentConfig,
        seed: u64,
        shard: Shard,
        opts: IndexSourceOptions,
    ) -> Result<Self, TrainError> {
        if opts.skip_bad && shard.world > 1 {
            return Err(TrainError::config(
                "--skip-bad",
                true,
                "not with data-parallel training: a skipped image would leave the ranks with unequal batches",
            ));
        }
        let mut plan = Plan::pretrain(pretrain_crop(augment)?).with_masks(opts.masks);
        if let Some(b) = opts.boxes {
            plan = plan.with_object_boxes(b);
        }
        let prefetch = if opts.prefetch == 0 {
            (2 * opts.workers).max(1)
        } else {
            opts.prefetch
        };
        let cfg = LoaderConfig {
            workers: opts.workers,
            prefetch,
            skip_bad: opts.skip_bad,
            device: opts.device,
            shard: (shard.rank, shard.world),
            ..LoaderConfig::train(batch_size, seed)
        };
        let position = LoaderPosition::new(KIND, source.name(), batch_size);
        let loader = Loader::new(source, plan, cfg)?;
        Ok(Self { loader, position })
    }

    /// Every sample skipped so far under `skip_bad` (file, index line, reason).
    pub fn skipped(&self) -> Vec<Skipped> {
        self.loader.skipped()
    }

    /// The loader underneath (plan, configuration, source).
    pub fn loader(&self) -> &Loader {
        &self.loader
    }
}

impl BatchSource for IndexBatchSource {
    fn num_images(&self) -> usize {
        self.loader.source().len()
    }

    fn batches_per_epoch(&self) -> usize {
        self.loader.batches_per_epoch()
    }

    fn start_epoch(&mut self, epoch: usize) -> Result<(), TrainError> {
        self.position.start_epoch(epoch);
        Ok(())
    }

    fn next_batch(&mut self) -> Result<Option<Batch>, TrainError> {
        let (epoch, step) = (self.position.epoch, self.position.next);
        let Some(b) = self.position.next_batch(&self.loader)? else {
            return Ok(None);
        };
        // BatchNorm in train mode and the contrastive losses need two samples; only skipped images can
        // leave fewer.
        if b.len() < 2 {
            return Err(TrainError::Batch {
                epoch,
                step,
                msg: format!(
                    "{} sample(s) left after skipping {} unreadable image(s); BatchNorm and the losses need two",
                    b.len(),
                    b.skipped.len()
                ),
            });
        }
        let masks = b.mask.as_ref().map(|m| m.squeeze_dim(1));
        Ok(Some(Batch {
            views: vec![b.view(0), b.view(1)],
            masks,
            labels: None,
        }))
    }

    fn state(&self) -> serde_json::Value {
        self.position.state(&self.loader)
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<(), TrainError> {
        self.position.restore(&self.loader, state)
    }
}
