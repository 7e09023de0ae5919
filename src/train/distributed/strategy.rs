//! [`DataParallel`] as the training loop's execution strategy: one process per device, every rank's model
//! starting from rank 0's, SyncBatchNorm (installed for the thread when the group was joined), gradients
//! averaged over the ranks by DDP's Reducer while backward runs, MoCo's keys all-gathered before enqueue,
//! checkpoints written by rank 0.
use tch::{Device, Tensor};

use super::{broadcast_state, DataParallel, ReduceOp};
use crate::model::ContrastiveModel;
use crate::train::error::TrainError;
use crate::train::strategy::{ExecutionStrategy, Shard};

impl ExecutionStrategy for DataParallel {
    fn device(&self) -> Device {
        DataParallel::device(self)
    }

    fn shard(&self) -> Shard {
        Shard {
            rank: self.rank(),
            world: self.world_size(),
        }
    }

    /// Broadcasts the network's parameters and buffers from rank 0 (DDP's start-up broadcast); the first
    /// network with trainable parameters (the online one; the momentum/target network is frozen) gets the
    /// gradient reducer.
    fn prepare_model(&self, model: &mut ContrastiveModel) -> Result<(), TrainError> {
        broadcast_state(self.group(), &model.vs)?;
        if !self.has_reducer() && !model.vs.trainable_variables().is_empty() {
            self.set_up_reducer(&model.vs)?;
        }
        Ok(())
    }

    fn before_backward(&self) -> Result<(), TrainError> {
        Ok(DataParallel::before_backward(self)?)
    }

    /// Nothing left to do: the Reducer averaged every gradient during backward (it fails the step there,
    /// or in `before_backward`, when a collective fails).
    fn reduce_gradients(&self, _params: &[Tensor]) -> Result<(), TrainError> {
        Ok(())
    }

    fn gather_keys(&self, keys: &Tensor) -> Result<Tensor, TrainError> {
        Ok(DataParallel::gather_keys(self, keys)?)
    }

    /// One all-reduce of the values in float64 on the group's device, divided by the world size.
    fn average(&self, values: &[f64]) -> Result<Vec<f64>, TrainError> {
        let t = Tensor::from_slice(values).to_device(DataParallel::device(self));
        self.group().all_reduce(&[&t], ReduceOp::Sum)?;
        let mean = t.to_device(Device::Cpu) / self.world_size() as f64;
        Vec::<f64>::try_from(&mean).map_err(|e| {
            TrainError::from(super::DistError::Config(format!(
                "averaging {} value(s) over the ranks: {e}",
                values.len()
            )))
        })
    }

    fn describe(&self) -> String {
        format!(
            "data-parallel rank {} of {} ({}, {})",
            self.rank(),
            self.world_size(),
            self.group().backend().name(),
            crate::device::describe(DataParallel::device(self))
        )
    }
}
