//! MoCo v2 as the official `models/moco.py`: q from view 1 through the online network, k from view 2
//! through the momentum network (train-mode BatchNorm, no gradient), logits [q·k, q·queue]/τ,
//! cross-entropy with label 0 (one direction), then the keys replace the oldest queue entries.
use tch::{Device, Kind, Tensor};

use super::mix_loss::{moco_mix_logits, moco_mix_loss, moco_mix_loss_rows, ViewMix};
use super::{Networks, Objective};
use crate::model::layers::l2_normalize;
use crate::train::error::TrainError;
use crate::train::strategy::ExecutionStrategy;

pub struct Moco {
    /// (K, d) unit keys.
    pub queue: Tensor,
    /// Row the next key goes to.
    pub ptr: i64,
    pub temperature: f64,
    /// `q`, `k` and `logits` of the last step, detached.
    pub last: Vec<(&'static str, Tensor)>,
}

impl Moco {
    /// A queue of `size` random unit vectors (drawn from libtorch's generator: seed it first).
    pub fn new(size: usize, dim: i64, temperature: f64, device: Device) -> Self {
        let keys = Tensor::randn([size as i64, dim], (Kind::Float, device));
        Self {
            queue: l2_normalize(&keys),
            ptr: 0,
            temperature,
            last: Vec::new(),
        }
    }

    /// Writes `keys` at the pointer (wrapping around the end) and advances it.
    pub fn enqueue(&mut self, keys: &Tensor) {
        let size = self.queue.size()[0];
        let b = keys.size()[0];
        let idx = (Tensor::arange(b, (Kind::Int64, keys.device())) + self.ptr).remainder(size);
        tch::no_grad(|| {
            // Keys computed under bf16 autocast are stored in the queue's float32.
            if keys.kind() == self.queue.kind() {
                let _ = self.queue.index_copy_(0, &idx, keys);
            } else {
                let _ = self
                    .queue
                    .index_copy_(0, &idx, &keys.to_kind(self.queue.kind()));
            }
        });
        self.ptr = (self.ptr + b) % size;
    }
}

impl Objective for Moco {
    fn loss(
        &mut self,
        nets: &Networks,
        views: &[Tensor],
        strategy: &dyn ExecutionStrategy,
    ) -> Result<Tensor, TrainError> {
        let q = nets.online.project(&views[0], true);
        // The momentum network runs in train mode (batch statistics), without gradient.
        let k = tch::no_grad(|| nets.target.project(&views[1], true));
        let pos = (&q * &k).sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
        // A copy, as MoCo's `queue.clone()`: the queue is updated in place before backward.
        let neg = q.matmul(&self.queue.copy().tr());
        let logits = Tensor::cat(&[pos, neg], 1) / self.temperature;
        let labels = Tensor::zeros([q.size()[0]], (Kind::Int64, q.device()));
        let loss = logits.cross_entropy_for_logits(&labels);
        let keys = strategy.gather_keys(&k)?;
        self.enqueue(&keys);
        self.last = vec![("q", q.detach()), ("k", k), ("logits", logits.detach())];
        Ok(loss)
    }

    /// i-Mix style (`MoCoMixup`, `MoCoCutMix`): the candidates of each query are all current keys and
    /// the queue, the positives are key `i` (weight `lam`) and key `perm[i]` (weight `1 − lam`). With a
    /// mix drawn for the global batch of a data-parallel run the current keys are the all-gathered ones.
    fn mixed_loss(
        &mut self,
        nets: &Networks,
        views: &[Tensor],
        mix: &ViewMix,
        strategy: &dyn ExecutionStrategy,
    ) -> Result<Tensor, TrainError> {
        let q = nets.online.project(&views[0], true);
        let k = tch::no_grad(|| nets.target.project(&views[1], true));
        let (logits, loss, keys) = match &mix.rows {
            None => {
                let logits = moco_mix_logits(&q, &k, &self.queue.copy(), self.temperature);
                let loss = moco_mix_loss(&logits, &mix.lam, &mix.perm, mix.weighting);
                (logits, loss, strategy.gather_keys(&k)?)
            }
            // Drawn for the global batch: every key of it is a candidate, as with one process.
            Some(rows) => {
                let keys = strategy.gather_keys(&k)?;
                let logits = moco_mix_logits(&q, &keys, &self.queue.copy(), self.temperature);
                let loss =
                    moco_mix_loss_rows(&logits, &mix.lam, &mix.perm, mix.weighting, rows.clone());
                (logits, loss, keys)
            }
        };
        self.enqueue(&keys);
        self.last = vec![("q", q.detach()), ("k", k), ("logits", logits.detach())];
        Ok(loss)
    }

    fn outputs(&self) -> &[(&'static str, Tensor)] {
        &self.last
    }

    fn as_moco_mut(&mut self) -> Option<&mut Moco> {
        Some(self)
    }
}
