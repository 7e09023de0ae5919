//! The training state of a supervised run, to stop and resume it bit for bit, in the same file layout as
//! the self-supervised state (`train::checkpoint`): the classifier's variables (parameters and BatchNorm
//! buffers), the SGD momentum buffers and the exact loss/accuracy curves, with JSON metadata
//! (`contracam.classifier_state`) for the recipe, classes, seed, position, running counts and the
//! loader's position. The lr is a function of the epoch and the loader's batches of (seed, epoch,
//! sample), so no RNG stream needs saving. A state is resumed only by a run with the same recipe, classes
//! and seed; anything else is refused naming the first differing field.
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tch::{Device, Tensor};

use super::{ClassifierTrainConfig, ClassifierTrainer};
use crate::data::formats::safetensors::{read_tensors, write_tensors};
use crate::train::checkpoint::momentum::SgdSettings;
use crate::train::checkpoint::{
    err, f64_values, load_momentum, load_variables, momentum_tensors, read_meta, refuse_other_run,
    variables,
};
use crate::train::error::TrainError;
use crate::train::source::BatchSource;

/// The metadata key of the JSON below.
pub const CLASSIFIER_STATE_KEY: &str = "contracam.classifier_state";
const FORMAT: &str = "contracam-classifier-state/1";

#[derive(Serialize, Deserialize)]
struct StateMeta {
    format: String,
    recipe: Value,
    classes: usize,
    seed: u64,
    epoch: usize,
    step_in_epoch: usize,
    steps: usize,
    /// Correct predictions and images seen in the epoch in progress.
    correct: i64,
    seen: i64,
    /// Whether the file holds SGD momentum buffers (none before the first step).
    momentum: bool,
    source: Value,
}

impl ClassifierTrainer {
    fn sgd_settings(&self) -> SgdSettings {
        SgdSettings {
            lr: self.lr,
            momentum: self.cfg.momentum,
            weight_decay: self.cfg.weight_decay,
        }
    }

    /// Writes the whole training state to `path` (atomically: a temporary file renamed into place), with
    /// `source`'s position.
    pub fn save_state(&mut self, path: &Path, source: &dyn BatchSource) -> Result<(), TrainError> {
        let mut tensors = variables("model", &self.model.vs);
        let has_momentum = self.steps > 0 && self.cfg.momentum != 0.0;
        if has_momentum {
            let settings = self.sgd_settings();
            tensors.extend(momentum_tensors(&mut self.opt, &self.model.vs, &settings));
        }
        // The f64 running sum and curves, exactly: [loss_sum, epoch losses…, epoch accuracies…].
        let mut values = vec![self.loss_sum];
        values.extend(&self.epoch_loss);
        values.extend(&self.epoch_accuracy);
        tensors.push(("position/values".into(), Tensor::from_slice(&values)));
        let meta = StateMeta {
            format: FORMAT.into(),
            recipe: serde_json::to_value(&self.cfg).map_err(|e| err(path, e.to_string()))?,
            classes: self.num_classes,
            seed: self.seed,
            epoch: self.epoch,
            step_in_epoch: self.step_in_epoch,
            steps: self.steps,
            correct: self.correct,
            seen: self.seen,
            momentum: has_momentum,
            source: source.state(),
        };
        let json = serde_json::to_string(&meta).map_err(|e| err(path, e.to_string()))?;
        let metadata = BTreeMap::from([(CLASSIFIER_STATE_KEY.to_string(), json)]);
        Ok(write_tensors(path, &tensors, &metadata)?)
    }

    /// A trainer that continues the run saved in `path`: built as `ClassifierTrainer::new` would, then
    /// given the saved network, momentum buffers, curves and position; `source` is put back where it
    /// was. Refused when the file was written for another recipe, number of classes or seed.
    pub fn resume(
        path: &Path,
        cfg: &ClassifierTrainConfig,
        num_classes: usize,
        seed: u64,
        device: Device,
        source: &mut dyn BatchSource,
    ) -> Result<Self, TrainError> {
        let file = read_tensors(path)?;
        let meta: StateMeta = read_meta(
            path,
            &file,
            CLASSIFIER_STATE_KEY,
            FORMAT,
            "`train classifier --checkpoint-every` or ClassifierTrainer::save_state",
        )?;
        refuse_other_run(
            path,
            &[
                (
                    "recipe",
                    serde_json::to_value(cfg).unwrap_or(Value::Null),
                    meta.recipe.clone(),
                ),
                (
                    "classes",
                    Value::from(num_classes),
                    Value::from(meta.classes),
                ),
                ("seed", Value::from(seed), Value::from(meta.seed)),
            ],
        )?;
        let mut t = ClassifierTrainer::new(cfg, num_classes, seed, device)?;
        t.epoch = meta.epoch;
        t.step_in_epoch = meta.step_in_epoch;
        t.steps = meta.steps;
        t.correct = meta.correct;
        t.seen = meta.seen;
        // Mid-epoch the loop does not set the lr again before the next step.
        t.lr = t.cfg.lr_at(t.epoch);
        if meta.momentum {
            let settings = t.sgd_settings();
            load_momentum(path, &file, &mut t.opt, &t.model.vs, &settings)?;
        } else {
            t.opt.set_lr(t.lr);
        }
        load_variables(path, &file, "model", &t.model.vs)?;
        let values = f64_values(
            path,
            &file,
            "position/values",
            1 + 2 * t.epoch,
            &format!(
                "the loss sum, {0} epoch losses, {0} epoch accuracies",
                t.epoch
            ),
        )?;
        t.loss_sum = values[0];
        t.epoch_loss = values[1..1 + t.epoch].to_vec();
        t.epoch_accuracy = values[1 + t.epoch..].to_vec();
        source
            .restore(&meta.source)
            .map_err(|e| err(path, format!("data source: {e}")))?;
        Ok(t)
    }
}
