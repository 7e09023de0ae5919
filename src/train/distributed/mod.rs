//! Data-parallel training on PyTorch's own distributed engine (c10d), through a small C++ shim compiled
//! against the headers of the libtorch that tch links (`shim/c10d_shim.cpp`): one process per device,
//! rendezvous through c10d's TCPStore with the variables `torchrun` or `srun` set, Gloo on CPU and NCCL on
//! CUDA, DDP's gradient Reducer (bucketed all-reduce overlapped with backward), SyncBatchNorm as the official
//! multi-GPU runs (Lightning's `sync_batchnorm=True`), and MoCo's key all-gather before enqueue.
//!
//! - [`ProcessGroup`]: `all_reduce`, `all_gather`, `broadcast`, `barrier` (and the SyncBN op);
//! - [`Rendezvous`]: who this process is, from the launcher's environment;
//! - [`GradientReducer`]: c10d::Reducer over a VarStore's trainable variables;
//! - [`SyncBatchNorm`]: the model's cross-process BatchNorm hook;
//! - [`DataParallel`]: the pieces together, as the training loop uses them;
//! - [`ProcessStrategy`]: data-parallel when launched as one rank of several, else one device.
mod ffi;
mod group;
mod launch;
mod reducer;
mod rendezvous;
mod strategy;
mod sync_bn;

use std::cell::OnceCell;
use std::rc::Rc;

use tch::nn::VarStore;
use tch::{Device, Tensor};

pub use group::{nccl_available, Backend, GroupOptions, ProcessGroup, ReduceOp};
pub use launch::{is_output_writer, launched_rank, ProcessStrategy};
pub use reducer::{GradientReducer, BUCKET_BYTES, FIRST_BUCKET_BYTES};
pub use rendezvous::{first_host, Rendezvous};
pub use sync_bn::SyncBatchNorm;

use crate::model::layers::{set_cross_process_batch_norm, CrossProcessBatchNorm};

#[derive(Debug, thiserror::Error)]
pub enum DistError {
    #[error("distributed rendezvous: {0}")]
    Rendezvous(String),
    #[error("distributed set-up: {0}")]
    Config(String),
    #[error("{op} failed on rank {rank}: {message}")]
    Collective {
        op: &'static str,
        rank: usize,
        message: String,
    },
}

/// One rank of a data-parallel run: the process group, the gradient reducer of the trained network and
/// SyncBatchNorm for this thread. Create it on the thread that trains (SyncBN is installed for that
/// thread, and removed again when this is dropped).
pub struct DataParallel {
    group: Rc<ProcessGroup>,
    device: Device,
    sync_bn: Rc<SyncBatchNorm>,
    reducer: OnceCell<GradientReducer>,
    previous_bn: Option<Rc<dyn CrossProcessBatchNorm>>,
}

impl std::fmt::Debug for DataParallel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataParallel")
            .field("group", &self.group)
            .field("device", &self.device)
            .field("reducer", &self.reducer)
            .finish()
    }
}

impl DataParallel {
    /// Joins the run a launcher set up in this process's environment; `None` when there is none.
    /// `device` picks the kind: on CUDA each rank drives `cuda:LOCAL_RANK` over NCCL (in builds with the
    /// `cuda` feature; Gloo otherwise), on CPU the ranks use Gloo.
    pub fn from_env(device: Device) -> Result<Option<Self>, DistError> {
        match Rendezvous::from_env()? {
            Some(rdv) => {
                let device = match device {
                    Device::Cuda(_) => Device::Cuda(rdv.local_rank),
                    d => d,
                };
                let opts = GroupOptions::new(Backend::for_device(device));
                Self::connect(&rdv, device, &opts).map(Some)
            }
            None => Ok(None),
        }
    }

    pub fn connect(
        rdv: &Rendezvous,
        device: Device,
        opts: &GroupOptions,
    ) -> Result<Self, DistError> {
        let group = Rc::new(ProcessGroup::connect(rdv, opts)?);
        let sync_bn = Rc::new(SyncBatchNorm::new(Rc::clone(&group)));
        let previous_bn = set_cross_process_batch_norm(Some(sync_bn.clone()));
        Ok(Self {
            group,
            device,
            sync_bn,
            reducer: OnceCell::new(),
            previous_bn,
        })
    }

    pub fn group(&self) -> &ProcessGroup {
        &self.group
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn rank(&self) -> usize {
        self.group.rank()
    }

    pub fn world_size(&self) -> usize {
        self.group.world_size()
    }

    /// Makes every rank start from rank 0's state (DDP's start-up broadcast of parameters and buffers) and
    /// sets up the gradient reducer over `trained`'s trainable variables. `others` (a momentum or target
    /// network) are broadcast too but not reduced.
    pub fn prepare(&self, trained: &VarStore, others: &[&VarStore]) -> Result<(), DistError> {
        for vs in std::iter::once(trained).chain(others.iter().copied()) {
            broadcast_state(&self.group, vs)?;
        }
        self.set_up_reducer(trained)
    }

    /// The gradient reducer over `trained`'s trainable variables (once; a second call is an error, as the
    /// reducer's hooks sit on the first network's parameters).
    pub fn set_up_reducer(&self, trained: &VarStore) -> Result<(), DistError> {
        if self.reducer.get().is_some() {
            return Err(DistError::Config(
                "a gradient reducer is already set up: data-parallel training trains one network"
                    .into(),
            ));
        }
        let reducer = GradientReducer::new(&self.group, trained)?;
        let _ = self.reducer.set(reducer);
        Ok(())
    }

    /// Whether the gradient reducer is set up (`prepare` ran).
    pub fn has_reducer(&self) -> bool {
        self.reducer.get().is_some()
    }

    /// Call after the step's forward passes, right before `backward`: reports a collective error from a
    /// SyncBN forward and arms the gradient reducer.
    pub fn before_backward(&self) -> Result<(), DistError> {
        if let Some(e) = self.sync_bn.take_error() {
            return Err(e);
        }
        match self.reducer.get() {
            Some(r) => r.prepare_backward(),
            None => Err(DistError::Config(
                "DataParallel::before_backward before prepare (no gradient reducer yet)".into(),
            )),
        }
    }

    /// MoCo's keys of the whole global batch, in rank order (the official `concat_all_gather` before
    /// `_dequeue_and_enqueue`), so every rank's queue receives the same keys.
    /// Every rank's rows, concatenated in rank order. Keys computed under bf16 autocast are gathered as
    /// float32, the dtype of MoCo's queue they go to (exact: every bfloat16 is a float32).
    pub fn gather_keys(&self, keys: &Tensor) -> Result<Tensor, DistError> {
        let keys = keys.detach();
        match keys.kind() {
            tch::Kind::BFloat16 | tch::Kind::Half => {
                self.group.all_gather(&keys.to_kind(tch::Kind::Float))
            }
            _ => self.group.all_gather(&keys),
        }
    }

    pub fn barrier(&self) -> Result<(), DistError> {
        self.group.barrier()
    }
}

impl Drop for DataParallel {
    fn drop(&mut self) {
        // Drop the reducer (and its hooks) before the group handle; then give the thread back its BatchNorm.
        drop(self.reducer.take());
        set_cross_process_batch_norm(self.previous_bn.take());
    }
}

/// Broadcasts every variable of `vs` (parameters and buffers, sorted by name) from rank 0.
pub fn broadcast_state(group: &ProcessGroup, vs: &VarStore) -> Result<(), DistError> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let tensors: Vec<&Tensor> = named.iter().map(|(_, t)| t).collect();
    tch::no_grad(|| group.broadcast(&tensors, 0))
}
