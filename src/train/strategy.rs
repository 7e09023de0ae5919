//! Execution strategies: where and across how many processes a training step runs. The loop calls the
//! strategy at the few points where data-parallel training differs from one device, so a c10d strategy
//! (one process per device, Gloo/NCCL) plugs in without touching the loop body:
//! - `prepare_model`: after the networks are built (SyncBN conversion, parameter broadcast from rank 0);
//! - `before_backward`: after the forward passes (arming DDP's gradient reducer);
//! - `reduce_gradients`: after backward, before the optimizer step (gradient all-reduce, averaged);
//! - `gather_keys`: MoCo's keys before they are enqueued (the official `_dequeue_and_enqueue` all-gathers
//!   them, so every rank's queue holds the whole global batch);
//! - `gather_rows`: the same all-gather for view 1 and its masks when mixing draws cover the global batch;
//! - `shard`: which part of each global batch this process loads;
//! - `average`: the step's loss and foreground fraction over the global batch (each rank measured its shard);
//! - `is_checkpoint_writer`: only rank 0 writes checkpoints.
use tch::{Device, Tensor};

use super::error::TrainError;
use crate::model::ContrastiveModel;

/// This process's part of the data: rank `rank` of `world` processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub world: usize,
}

impl Shard {
    pub const SINGLE: Shard = Shard { rank: 0, world: 1 };

    /// The range of a global batch of `global` samples this rank takes (contiguous, equal parts).
    pub fn local_range(&self, global: usize) -> std::ops::Range<usize> {
        let per = global / self.world;
        self.rank * per..(self.rank + 1) * per
    }
}

pub trait ExecutionStrategy {
    /// The device this process computes on.
    fn device(&self) -> Device;
    fn shard(&self) -> Shard;
    /// Called once after the online and target networks are built or restored.
    fn prepare_model(&self, _model: &mut ContrastiveModel) -> Result<(), TrainError> {
        Ok(())
    }
    /// Called after the step's forward passes, right before backward (a data-parallel strategy arms its
    /// gradient reducer here, so the all-reduce overlaps backward).
    fn before_backward(&self) -> Result<(), TrainError> {
        Ok(())
    }
    /// Makes every rank's gradients the global-batch gradients.
    fn reduce_gradients(&self, _params: &[Tensor]) -> Result<(), TrainError> {
        Ok(())
    }
    /// MoCo keys of the global batch, in rank order.
    fn gather_keys(&self, keys: &Tensor) -> Result<Tensor, TrainError> {
        Ok(keys.shallow_clone())
    }
    /// Every rank's rows of a tensor without gradient, concatenated in rank order (the global batch's
    /// view 1 and masks for mixing, the target projections of BYOL's mixed loss): the same collective as
    /// `gather_keys`.
    fn gather_rows(&self, rows: &Tensor) -> Result<Tensor, TrainError> {
        self.gather_keys(rows)
    }
    /// The mean over the ranks of values each rank measured on its equal shard (the step's loss, the
    /// foreground fraction): the global batch's value, the same on every rank.
    fn average(&self, values: &[f64]) -> Result<Vec<f64>, TrainError> {
        Ok(values.to_vec())
    }
    fn is_checkpoint_writer(&self) -> bool {
        self.shard().rank == 0
    }
    /// A short description for logs and reports.
    fn describe(&self) -> String;
}

/// One process, one device: every hook is the identity.
#[derive(Debug, Clone, Copy)]
pub struct SingleDevice {
    pub device: Device,
}

impl SingleDevice {
    /// Selects `device`; on CUDA, lets cuDNN benchmark convolution algorithms as the official runs do
    /// (`cudnn.benchmark` on; the fastest kernel for each input shape, found once).
    pub fn new(device: Device) -> Self {
        if device.is_cuda() {
            tch::Cuda::cudnn_set_benchmark(true);
        }
        Self { device }
    }
}

impl ExecutionStrategy for SingleDevice {
    fn device(&self) -> Device {
        self.device
    }
    fn shard(&self) -> Shard {
        Shard::SINGLE
    }
    fn describe(&self) -> String {
        format!("single device ({})", crate::device::describe(self.device))
    }
}
