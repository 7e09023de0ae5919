//! Batches for supervised training: one RandomResizedCrop + flip view per image of a split and its class.
//! Order and crops come from (seed, epoch, sample) inside the loader, so batches do not depend on the
//! number of workers, and the position (epoch, batch) is the whole resumable state.
use std::sync::Arc;

use super::{ClassifierRunOptions, ClassifierTrainConfig};
use crate::data::loader::{Loader, LoaderConfig, Plan, Source};
use crate::train::error::TrainError;
use crate::train::source::position::LoaderPosition;
use crate::train::source::{Batch, BatchSource};

pub struct LabelledIndexSource {
    loader: Loader,
    position: LoaderPosition,
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
        let position = LoaderPosition::new(KIND, source.name(), cfg.batch);
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
        Ok(Self { loader, position })
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
        self.position.start_epoch(epoch);
        Ok(())
    }

    fn next_batch(&mut self) -> Result<Option<Batch>, TrainError> {
        let Some(b) = self.position.next_batch(&self.loader)? else {
            return Ok(None);
        };
        let labels = b.class_labels(self.loader.config().device)?;
        Ok(Some(Batch {
            views: vec![b.view(0)],
            masks: None,
            labels: Some(labels),
        }))
    }

    fn state(&self) -> serde_json::Value {
        self.position.state(&self.loader)
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<(), TrainError> {
        self.position.restore(&self.loader, state)
    }
}
