//! A c10d process group: every rank of one run, joined through a TCPStore.
use std::ffi::{c_int, CString};
use std::ptr::NonNull;
use std::time::Duration;

use tch::{Device, Tensor};

use super::ffi::{self, take_error, RawGroup, RawTensor};
use super::{DistError, Rendezvous};

/// The collective library: Gloo (CPU tensors; CUDA tensors staged through the host) or NCCL (CUDA tensors,
/// in builds with the `cuda` feature). A NCCL group keeps Gloo for its CPU tensors and its barrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Gloo,
    Nccl,
}

impl Backend {
    /// NCCL for a CUDA device when this build has it, else Gloo (as torch's default "cpu:gloo,cuda:nccl").
    pub fn for_device(device: Device) -> Self {
        if device.is_cuda() && nccl_available() {
            Backend::Nccl
        } else {
            Backend::Gloo
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }
}

/// Whether this build carries the NCCL backend (`--features cuda`).
pub fn nccl_available() -> bool {
    // SAFETY: a constant query.
    unsafe { ffi::c10d_has_nccl() != 0 }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Max,
    Min,
}

#[derive(Debug, Clone)]
pub struct GroupOptions {
    pub backend: Backend,
    /// How long rendezvous and each collective may wait for the other ranks.
    pub timeout: Duration,
    /// Network interface for Gloo (GLOO_SOCKET_IFNAME); by default the address the host name resolves to,
    /// or loopback when the store is on loopback.
    pub gloo_interface: Option<String>,
}

impl GroupOptions {
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            timeout: Duration::from_secs(300),
            gloo_interface: std::env::var("GLOO_SOCKET_IFNAME")
                .ok()
                .filter(|s| !s.is_empty()),
        }
    }
}

/// One rank's handle on the group. Collectives block until every rank has joined them, and must be
/// issued in the same order on every rank.
#[derive(Debug)]
pub struct ProcessGroup {
    raw: NonNull<RawGroup>,
    rank: usize,
    world_size: usize,
    backend: Backend,
}

impl ProcessGroup {
    /// Joins the group described by `rdv` (rank 0 starts the store and waits for the others).
    pub fn connect(rdv: &Rendezvous, opts: &GroupOptions) -> Result<Self, DistError> {
        if opts.backend == Backend::Nccl && !nccl_available() {
            return Err(DistError::Config(
                "the NCCL backend needs a build with --features cuda".into(),
            ));
        }
        let c = |s: &str, what: &str| {
            CString::new(s)
                .map_err(|_| DistError::Config(format!("{what} {s:?} contains a NUL byte")))
        };
        let host = c(&rdv.master_addr, "MASTER_ADDR")?;
        let iface = opts
            .gloo_interface
            .as_deref()
            .map(|s| c(s, "GLOO_SOCKET_IFNAME"))
            .transpose()?;
        let hostname = rdv.is_loopback().then(|| CString::from(c"127.0.0.1"));
        let mut out: *mut RawGroup = std::ptr::null_mut();
        // SAFETY: valid C strings (or null) and an out pointer the shim fills on success.
        let err = unsafe {
            ffi::c10d_group_new(
                host.as_ptr(),
                c_int::from(rdv.master_port),
                rdv.rank as c_int,
                rdv.world_size as c_int,
                opts.timeout.as_millis().min(i64::MAX as u128) as i64,
                iface.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
                hostname.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
                c_int::from(opts.backend == Backend::Nccl),
                rdv.local_rank as c_int,
                &mut out,
            )
        };
        take_error(err).map_err(|message| {
            DistError::Rendezvous(format!(
                "joining {}:{} as rank {} of {} ({}): {message}",
                rdv.master_addr,
                rdv.master_port,
                rdv.rank,
                rdv.world_size,
                opts.backend.name()
            ))
        })?;
        let raw = NonNull::new(out).ok_or_else(|| {
            DistError::Rendezvous("the c10d shim returned no process group".into())
        })?;
        Ok(Self {
            raw,
            rank: rdv.rank,
            world_size: rdv.world_size,
            backend: opts.backend,
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world_size
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub(super) fn raw(&self) -> *mut RawGroup {
        self.raw.as_ptr()
    }

    fn check(&self, op: &'static str, err: *mut std::ffi::c_char) -> Result<(), DistError> {
        take_error(err).map_err(|message| DistError::Collective {
            op,
            rank: self.rank,
            message,
        })
    }

    /// Reduces each tensor over all ranks, in place. The tensors travel as one buffer, so they must share
    /// dtype and device.
    pub fn all_reduce(&self, tensors: &[&Tensor], op: ReduceOp) -> Result<(), DistError> {
        let raw = ffi::raw_tensors(tensors);
        let op = match op {
            ReduceOp::Sum => 0,
            ReduceOp::Max => 1,
            ReduceOp::Min => 2,
        };
        // SAFETY: live tensors for the duration of the call.
        self.check("all_reduce", unsafe {
            ffi::c10d_all_reduce(self.raw(), raw.as_ptr(), raw.len(), op)
        })
    }

    /// Every rank's `tensor` concatenated along dimension 0, in rank order (shapes must agree).
    pub fn all_gather(&self, tensor: &Tensor) -> Result<Tensor, DistError> {
        let mut out: *mut RawTensor = std::ptr::null_mut();
        // SAFETY: a live tensor and an out pointer filled on success.
        self.check("all_gather", unsafe {
            ffi::c10d_all_gather(self.raw(), tensor.as_ptr(), &mut out)
        })?;
        // SAFETY: the shim allocated `out` for us.
        Ok(unsafe { ffi::owned_tensor(out) })
    }

    /// Copies rank `root`'s tensors into every rank's, in place.
    pub fn broadcast(&self, tensors: &[&Tensor], root: usize) -> Result<(), DistError> {
        if root >= self.world_size {
            return Err(DistError::Config(format!(
                "broadcast root {root} is not a rank of a group of {}",
                self.world_size
            )));
        }
        let raw = ffi::raw_tensors(tensors);
        // SAFETY: live tensors for the duration of the call.
        self.check("broadcast", unsafe {
            ffi::c10d_broadcast(self.raw(), raw.as_ptr(), raw.len(), root as c_int)
        })
    }

    /// Returns once every rank has called it.
    pub fn barrier(&self) -> Result<(), DistError> {
        // SAFETY: a live group.
        self.check("barrier", unsafe { ffi::c10d_barrier(self.raw()) })
    }

    /// Train-mode batch normalisation with statistics over every rank's batch (see
    /// [`super::SyncBatchNorm`]); updates the running statistics in place.
    #[allow(clippy::too_many_arguments)]
    pub fn sync_batch_norm(
        &self,
        x: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        running_mean: &Tensor,
        running_var: &Tensor,
        momentum: f64,
        eps: f64,
    ) -> Result<Tensor, DistError> {
        let opt = |t: Option<&Tensor>| t.map_or(std::ptr::null(), |t| t.as_ptr());
        let mut out: *mut RawTensor = std::ptr::null_mut();
        // SAFETY: live tensors (or null for absent weight/bias) and an out pointer filled on success.
        self.check("sync_batch_norm", unsafe {
            ffi::c10d_sync_batch_norm(
                self.raw(),
                x.as_ptr(),
                opt(weight),
                opt(bias),
                running_mean.as_ptr() as *mut RawTensor,
                running_var.as_ptr() as *mut RawTensor,
                momentum,
                eps,
                &mut out,
            )
        })?;
        // SAFETY: the shim allocated `out` for us.
        Ok(unsafe { ffi::owned_tensor(out) })
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: created by c10d_group_new, freed once. Reducers and autograd graphs keep their own
        // references to the c10d group, so they stay valid.
        unsafe { ffi::c10d_group_free(self.raw.as_ptr()) }
    }
}
