//! The execution strategy a training command runs under: data-parallel when a launcher (`torchrun`,
//! `srun`) started this process as one rank of several, one device otherwise. `train ssl`, the in-memory
//! and index paths of the library and the suite's `pretrain` stage all pick it here, so a launched command
//! joins the run without a flag.
use tch::{Device, Tensor};

use super::{DataParallel, DistError, Rendezvous};
use crate::model::ContrastiveModel;
use crate::train::error::TrainError;
use crate::train::strategy::{ExecutionStrategy, Shard, SingleDevice};

/// Whether this process writes a run's outputs (weights, reports, published stages): rank 0 of a launched
/// run, or a process no launcher started. An environment that does not parse counts as rank 0; joining the
/// run reports that error.
pub fn is_output_writer() -> bool {
    launched_rank().is_none_or(|(rank, _)| rank == 0)
}

/// (rank, world size) when a launcher started this process as one of several.
pub fn launched_rank() -> Option<(usize, usize)> {
    match Rendezvous::from_env() {
        Ok(Some(r)) if r.world_size > 1 => Some((r.rank, r.world_size)),
        _ => None,
    }
}

#[derive(Debug)]
pub enum ProcessStrategy {
    Single(SingleDevice),
    Parallel(DataParallel),
}

impl ProcessStrategy {
    /// Joins the data-parallel run the environment describes (a world of one is a single-device run: an
    /// `srun` step of one task, or `torchrun --nproc-per-node 1`), else one process on `device`.
    pub fn from_env(device: Device) -> Result<Self, DistError> {
        match Rendezvous::from_env()? {
            Some(r) if r.world_size > 1 => match DataParallel::from_env(device)? {
                Some(dp) => Ok(Self::Parallel(dp)),
                None => Ok(Self::Single(SingleDevice::new(device))),
            },
            _ => Ok(Self::Single(SingleDevice::new(device))),
        }
    }

    /// Whether this process writes outputs (rank 0, or the only process).
    pub fn is_writer(&self) -> bool {
        self.is_checkpoint_writer()
    }

    fn inner(&self) -> &dyn ExecutionStrategy {
        match self {
            Self::Single(s) => s,
            Self::Parallel(p) => p,
        }
    }
}

impl ExecutionStrategy for ProcessStrategy {
    fn device(&self) -> Device {
        self.inner().device()
    }
    fn shard(&self) -> Shard {
        self.inner().shard()
    }
    fn prepare_model(&self, model: &mut ContrastiveModel) -> Result<(), TrainError> {
        self.inner().prepare_model(model)
    }
    fn before_backward(&self) -> Result<(), TrainError> {
        self.inner().before_backward()
    }
    fn reduce_gradients(&self, params: &[Tensor]) -> Result<(), TrainError> {
        self.inner().reduce_gradients(params)
    }
    fn gather_keys(&self, keys: &Tensor) -> Result<Tensor, TrainError> {
        self.inner().gather_keys(keys)
    }
    fn average(&self, values: &[f64]) -> Result<Vec<f64>, TrainError> {
        self.inner().average(values)
    }
    fn is_checkpoint_writer(&self) -> bool {
        self.inner().is_checkpoint_writer()
    }
    fn describe(&self) -> String {
        self.inner().describe()
    }
}
