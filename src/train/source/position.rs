//! The position of a loader-backed source in its run (epoch, next batch) and the lazily opened epoch of
//! batches behind it: what the index sources of self-supervised and supervised training share. Order
//! and views come from (seed, epoch, sample) inside the loader, so the position is the whole resumable
//! state; `restore` refuses a state written for another source kind, dataset, size or batch.
use serde::{Deserialize, Serialize};

use crate::data::loader::{Batch as LoaderBatch, EpochBatches, Loader};
use crate::train::error::TrainError;

pub(crate) struct LoaderPosition {
    /// The kind recorded in and required of a state (`index`, `index-labelled`; messages say "an").
    kind: &'static str,
    name: String,
    batch_size: usize,
    pub(crate) epoch: usize,
    pub(crate) next: usize,
    /// The running epoch's batches; opened lazily so that `restore` costs nothing until the next batch.
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

impl LoaderPosition {
    pub(crate) fn new(kind: &'static str, name: String, batch_size: usize) -> Self {
        Self {
            kind,
            name,
            batch_size,
            epoch: 0,
            next: 0,
            batches: None,
        }
    }

    pub(crate) fn start_epoch(&mut self, epoch: usize) {
        self.epoch = epoch;
        self.next = 0;
        self.batches = None;
    }

    /// The loader's next batch of the current epoch, `None` after its last one.
    pub(crate) fn next_batch(
        &mut self,
        loader: &Loader,
    ) -> Result<Option<LoaderBatch>, TrainError> {
        if self.next >= loader.batches_per_epoch() {
            self.batches = None;
            return Ok(None);
        }
        let (epoch, next) = (self.epoch, self.next);
        let batches = self
            .batches
            .get_or_insert_with(|| loader.epoch_from(epoch, next));
        let Some(b) = batches.next() else {
            return Ok(None);
        };
        let b = b?;
        self.next += 1;
        Ok(Some(b))
    }

    pub(crate) fn state(&self, loader: &Loader) -> serde_json::Value {
        serde_json::to_value(State {
            kind: self.kind.into(),
            dataset: self.name.clone(),
            num_images: loader.source().len(),
            batch_size: self.batch_size,
            epoch: self.epoch,
            next_batch: self.next,
        })
        .unwrap_or(serde_json::Value::Null)
    }

    pub(crate) fn restore(
        &mut self,
        loader: &Loader,
        state: &serde_json::Value,
    ) -> Result<(), TrainError> {
        let bad = |msg: String| TrainError::config("data source state", "checkpoint", msg);
        let s: State = serde_json::from_value(state.clone())
            .map_err(|e| bad(format!("not an {} source state: {e}", self.kind)))?;
        if s.kind != self.kind {
            return Err(bad(format!(
                "written by a '{}' source, not '{}'",
                s.kind, self.kind
            )));
        }
        let images = loader.source().len();
        if s.dataset != self.name || s.num_images != images || s.batch_size != self.batch_size {
            return Err(bad(format!(
                "written for {} ({} images) in batches of {}; this run has {} ({} images) in batches of {}",
                s.dataset, s.num_images, s.batch_size, self.name, images, self.batch_size
            )));
        }
        if s.next_batch > loader.batches_per_epoch() {
            return Err(bad(format!(
                "batch position {} beyond the epoch's {}",
                s.next_batch,
                loader.batches_per_epoch()
            )));
        }
        self.epoch = s.epoch;
        self.next = s.next_batch;
        self.batches = None;
        Ok(())
    }
}
