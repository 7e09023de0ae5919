//! Batches for supervised training: one RandomResizedCrop + flip view per image of a split and its class.
//! Order and crops come from (seed, epoch, sample) inside the loader, so batches do not depend on the
//! number of workers, and the position (epoch, batch) is the whole resumable state.
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{ClassifierRunOptions, ClassifierTrainConfig};
use crate::data::loader::{EpochBatches, Loader, LoaderConfig, Plan, Source};
use crate::train::error::TrainError;
use crate::train::source::{Batch, BatchSource};

pub struct LabelledIndexSource {
    loader: Loader,
    name: String,
    batch_size: usize,
    epoch: usize,
    next: usize,
    batches: Option<EpochBatches>,
}

#[derive(Serialize, Deserialize)]
struct State {
    kind: String,
    dataset: String,
    num_images: usize,
    batch_size: usize,
    epoch: usize,
    next_batch: usize,
}

const KIND: &str = "index-labelled";

impl LabelledIndexSource {
    /// Whole batches of `cfg.batch` (`drop_last`), a new order per epoch from `seed`.
    pub fn new(
        source: Arc<dyn Source>,
        cfg: &ClassifierTrainConfig,
        seed: u64,
        opts: &ClassifierRunOptions,
    ) -> Result<Self, TrainError> {
        let name = source.name();
        let loader = Loader::new(
            source,
            Plan::single(cfg.crop()),
            LoaderConfig {
                workers: opts.workers,
                prefetch: (2 * opts.workers).max(1),
                device: opts.device,
                ..LoaderConfig::train(cfg.batch, seed)
            },
        )?;
        Ok(Self {
            loader,
            name,
            batch_size: cfg.batch,
            epoch: 0,
            next: 0,
            batches: None,
        })
    }
}

impl BatchSource for LabelledIndexSource {
    fn num_images(&self) -> usize {
        self.loader.source().len()
    }

    fn batches_per_epoch(&self) -> usize {
        self.loader.batches_per_epoch()
    }

    fn start_epoch(&mut self, epoch: usize) -> Result<(), TrainError> {
        self.epoch = epoch;
        self.next = 0;
        self.batches = None;
        Ok(())
    }

    fn next_batch(&mut self) -> Result<Option<Batch>, TrainError> {
        if self.next >= self.batches_per_epoch() {
            self.batches = None;
            return Ok(None);
        }
        let (epoch, next) = (self.epoch, self.next);
        let batches = self
            .batches
            .get_or_insert_with(|| self.loader.epoch_from(epoch, next));
        let Some(b) = batches.next() else {
            return Ok(None);
        };
        let b = b?;
        self.next += 1;
        let labels = b.class_labels(self.loader.config().device)?;
        Ok(Some(Batch {
            views: vec![b.view(0)],
            masks: None,
            labels: Some(labels),
        }))
    }

    fn state(&self) -> serde_json::Value {
        serde_json::to_value(State {
            kind: KIND.into(),
            dataset: self.name.clone(),
            num_images: self.num_images(),
            batch_size: self.batch_size,
            epoch: self.epoch,
            next_batch: self.next,
        })
        .unwrap_or(serde_json::Value::Null)
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<(), TrainError> {
        let bad = |msg: String| TrainError::config("data source state", "checkpoint", msg);
        let s: State = serde_json::from_value(state.clone())
            .map_err(|e| bad(format!("not a labelled index source state: {e}")))?;
        if s.kind != KIND
            || s.dataset != self.name
            || s.num_images != self.num_images()
            || s.batch_size != self.batch_size
        {
            return Err(bad(format!(
                "written by a '{}' source for {} ({} images) in batches of {}; this run has {} ({} images) in batches of {}",
                s.kind,
                s.dataset,
                s.num_images,
                s.batch_size,
                self.name,
                self.num_images(),
                self.batch_size
            )));
        }
        if s.next_batch > self.batches_per_epoch() {
            return Err(bad(format!(
                "batch position {} beyond the epoch's {}",
                s.next_batch,
                self.batches_per_epoch()
            )));
        }
        self.epoch = s.epoch;
        self.next = s.next_batch;
        self.batches = None;
        Ok(())
    }
}
