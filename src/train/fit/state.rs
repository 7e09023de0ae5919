//! The training state of a run, to stop and resume it bit for bit: one safetensors file, written
//! atomically, holding the online and target networks (parameters and BatchNorm buffers), the SGD
//! momentum buffers, MoCo's queue, BG-Mixup's background queue and the loss curve so far, with JSON
//! metadata (`contracam.train_state`) for the configs, the seed, the position (epoch, step), the RNG
//! streams and the data source's own state. A state is resumed only by a run with the same model and
//! training config and seed; anything else is refused naming the first differing field.
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tch::Tensor;

use super::Trainer;
use crate::data::formats::safetensors::{read_tensors, write_tensors, TensorFile};
use crate::model::ModelConfig;
use crate::train::checkpoint::momentum::SgdSettings;
use crate::train::checkpoint::{
    err, f64_values, load_momentum, load_variables, momentum_tensors, read_meta, refuse_other_run,
    tensor, variables,
};
use crate::train::config::{MixConfig, TrainConfig};
use crate::train::error::TrainError;
use crate::train::rng_state::RngState;
use crate::train::source::BatchSource;
use crate::train::strategy::ExecutionStrategy;

/// The metadata key of the JSON below.
pub const STATE_KEY: &str = "contracam.train_state";
const FORMAT: &str = "contracam-train-state/1";

#[derive(Serialize, Deserialize)]
struct StateMeta {
    format: String,
    model: Value,
    train: Value,
    seed: u64,
    epoch: usize,
    step_in_epoch: usize,
    steps: usize,
    fg_steps: usize,
    /// Whether the file holds SGD momentum buffers (none before the first step).
    momentum: bool,
    moco_ptr: Option<i64>,
    bg_queue: usize,
    color_rng: RngState,
    mix_rng: RngState,
    source: Value,
}

/// A serialised training config with its `mix` table, `precision` and `channels_last`, which are left out
/// while default, so a difference is named down to the key (`train.mix.kind`) with both values.
fn with_mix(mut train: Value) -> Value {
    if let Value::Object(m) = &mut train {
        m.entry("mix")
            .or_insert_with(|| serde_json::to_value(MixConfig::default()).unwrap_or(Value::Null));
        m.entry("precision").or_insert_with(|| Value::from("fp32"));
        m.entry("channels_last").or_insert(Value::Bool(false));
    }
    train
}

impl<S: ExecutionStrategy> Trainer<S> {
    fn sgd_settings(&self) -> SgdSettings {
        SgdSettings {
            lr: self.lr,
            momentum: self.cfg.momentum,
            weight_decay: self.cfg.weight_decay,
        }
    }

    /// Writes the whole training state to `path` (atomically: a temporary file renamed into place), with
    /// `source`'s position. Only the checkpoint-writing process of a data-parallel run writes.
    pub fn save_state(&mut self, path: &Path, source: &dyn BatchSource) -> Result<(), TrainError> {
        if !self.strategy.is_checkpoint_writer() {
            return Ok(());
        }
        let mut tensors = variables("online", &self.online.vs);
        tensors.extend(variables("target", &self.target.vs));
        let has_momentum = self.steps > 0 && self.cfg.momentum != 0.0;
        if has_momentum {
            let settings = self.sgd_settings();
            tensors.extend(momentum_tensors(&mut self.opt, &self.online.vs, &settings));
        }
        let moco_ptr = match self.objective.as_moco_mut() {
            Some(m) => {
                tensors.push(("moco/queue".into(), m.queue.copy()));
                Some(m.ptr)
            }
            None => None,
        };
        let bg_queue = match &self.bg_mixup {
            Some(b) if !b.queue().is_empty() => {
                let q: Vec<Tensor> = b.queue().iter().map(Tensor::shallow_clone).collect();
                tensors.push(("bg_mixup/queue".into(), Tensor::stack(&q, 0)));
                q.len()
            }
            _ => 0,
        };
        // The f64 running sums and curves, exactly: [loss_sum, fg_sum, epoch losses…, step losses…].
        let mut values = vec![self.loss_sum, self.fg_sum];
        values.extend(&self.epoch_loss);
        values.extend(&self.step_loss);
        tensors.push(("position/values".into(), Tensor::from_slice(&values)));
        let meta = StateMeta {
            format: FORMAT.into(),
            model: serde_json::to_value(&self.model_cfg).map_err(|e| err(path, e.to_string()))?,
            train: serde_json::to_value(&self.cfg).map_err(|e| err(path, e.to_string()))?,
            seed: self.seed,
            epoch: self.epoch,
            step_in_epoch: self.step_in_epoch,
            steps: self.steps,
            fg_steps: self.fg_steps,
            momentum: has_momentum,
            moco_ptr,
            bg_queue,
            color_rng: RngState::capture(&self.color_rng),
            mix_rng: RngState::capture(&self.mix_rng),
            source: source.state(),
        };
        let json = serde_json::to_string(&meta).map_err(|e| err(path, e.to_string()))?;
        let metadata = BTreeMap::from([(STATE_KEY.to_string(), json)]);
        Ok(write_tensors(path, &tensors, &metadata)?)
    }

    /// A trainer that continues the run saved in `path`: built as `Trainer::new` would, then given the
    /// saved networks, optimiser state, queues, RNG streams and position; `source` is put back where it
    /// was. Refused when the file was written for another model or training config or seed.
    pub fn resume(
        path: &Path,
        model_cfg: &ModelConfig,
        cfg: &TrainConfig,
        seed: u64,
        strategy: S,
        source: &mut dyn BatchSource,
    ) -> Result<Self, TrainError> {
        let file = read_tensors(path)?;
        let meta: StateMeta = read_meta(
            path,
            &file,
            STATE_KEY,
            FORMAT,
            "`train ssl --checkpoint-every` or Trainer::save_state",
        )?;
        refuse_other_run(
            path,
            &[
                (
                    "model",
                    serde_json::to_value(model_cfg).unwrap_or(Value::Null),
                    meta.model.clone(),
                ),
                (
                    "train",
                    with_mix(serde_json::to_value(cfg).unwrap_or(Value::Null)),
                    with_mix(meta.train.clone()),
                ),
                ("seed", Value::from(seed), Value::from(meta.seed)),
            ],
        )?;
        let mut t = Trainer::new(model_cfg, cfg, seed, strategy)?;
        t.load_state(path, &file, meta, source)?;
        Ok(t)
    }

    fn load_state(
        &mut self,
        path: &Path,
        file: &TensorFile,
        meta: StateMeta,
        source: &mut dyn BatchSource,
    ) -> Result<(), TrainError> {
        let get = |key: &str| tensor(path, file, key);
        self.epoch = meta.epoch;
        self.step_in_epoch = meta.step_in_epoch;
        self.steps = meta.steps;
        self.fg_steps = meta.fg_steps;
        // Mid-epoch the loop does not set the lr again before the next step.
        self.lr = self.cfg.lr_at(self.epoch);
        if meta.momentum {
            let settings = self.sgd_settings();
            load_momentum(path, file, &mut self.opt, &self.online.vs, &settings)?;
        } else {
            self.opt.set_lr(self.lr);
        }
        load_variables(path, file, "online", &self.online.vs)?;
        load_variables(path, file, "target", &self.target.vs)?;
        match (self.objective.as_moco_mut(), meta.moco_ptr) {
            (Some(m), Some(ptr)) => {
                let q = get("moco/queue")?;
                if q.size() != m.queue.size() || !(0..q.size()[0]).contains(&ptr) {
                    return Err(err(
                        path,
                        format!(
                            "moco/queue {:?} with pointer {ptr} does not fit a queue of {:?}",
                            q.size(),
                            m.queue.size()
                        ),
                    ));
                }
                m.queue = q.to_device(m.queue.device());
                m.ptr = ptr;
            }
            (None, None) => {}
            _ => {
                return Err(err(
                    path,
                    "MoCo queue present for another objective, or missing",
                ))
            }
        }
        if let Some(b) = &mut self.bg_mixup {
            if meta.bg_queue > 0 {
                let q = get("bg_mixup/queue")?;
                if q.size()[0] as usize != meta.bg_queue {
                    return Err(err(
                        path,
                        format!(
                            "bg_mixup/queue holds {} entries, metadata says {}",
                            q.size()[0],
                            meta.bg_queue
                        ),
                    ));
                }
                let dev = self.strategy.device();
                for i in 0..meta.bg_queue {
                    b.push(q.get(i as i64).to_device(dev));
                }
            }
        }
        let values = f64_values(
            path,
            file,
            "position/values",
            2 + self.epoch + self.steps,
            &format!(
                "2 sums, {} epoch losses, {} step losses",
                self.epoch, self.steps
            ),
        )?;
        self.loss_sum = values[0];
        self.fg_sum = values[1];
        self.epoch_loss = values[2..2 + self.epoch].to_vec();
        self.step_loss = values[2 + self.epoch..].to_vec();
        self.color_rng = meta.color_rng.restore().map_err(|m| err(path, m))?;
        self.mix_rng = meta.mix_rng.restore().map_err(|m| err(path, m))?;
        source
            .restore(&meta.source)
            .map_err(|e| err(path, format!("data source: {e}")))?;
        Ok(())
    }
}
