//! DDP's gradient reducer (c10d::Reducer) over a model's trainable parameters.
use std::ptr::NonNull;

use tch::nn::VarStore;
use tch::Tensor;

use super::ffi::{self, take_error, RawReducer};
use super::{DistError, ProcessGroup};

/// torch DDP's default bucket sizes: 25 MiB, and 1 MiB for the first bucket (the last layers' gradients,
/// which backward produces first) so communication starts early.
pub const BUCKET_BYTES: i64 = 25 * 1024 * 1024;
pub const FIRST_BUCKET_BYTES: i64 = 1024 * 1024;

/// Averages gradients over the ranks while backward runs: a hook on each parameter's gradient
/// accumulator copies the gradient (divided by the world size) into a flat bucket, and a full bucket is
/// all-reduced at once on the collective's own threads while backward goes on with earlier layers.
/// Backward returns with every parameter's `.grad` holding the global-batch mean gradient.
#[derive(Debug)]
pub struct GradientReducer {
    raw: NonNull<RawReducer>,
    rank: usize,
    /// Parameter names in reduction order (sorted, hence the same on every rank).
    names: Vec<String>,
}

impl GradientReducer {
    /// Over `vs`'s trainable variables, sorted by name. Fails (on every rank) when the ranks' parameter
    /// lists differ in count, shape or dtype.
    pub fn new(group: &ProcessGroup, vs: &VarStore) -> Result<Self, DistError> {
        let mut named: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let (names, params): (Vec<String>, Vec<Tensor>) = named.into_iter().unzip();
        let refs: Vec<&Tensor> = params.iter().collect();
        let raw_params = ffi::raw_tensors(&refs);
        let mut out: *mut RawReducer = std::ptr::null_mut();
        // SAFETY: live leaf tensors and an out pointer the shim fills on success; the reducer keeps its
        // own references to the tensors.
        let err = unsafe {
            ffi::c10d_reducer_new(
                group.raw(),
                raw_params.as_ptr(),
                raw_params.len(),
                BUCKET_BYTES,
                FIRST_BUCKET_BYTES,
                &mut out,
            )
        };
        let rank = group.rank();
        take_error(err).map_err(|message| DistError::Collective {
            op: "gradient reducer set-up",
            rank,
            message,
        })?;
        let raw = NonNull::new(out).ok_or_else(|| DistError::Collective {
            op: "gradient reducer set-up",
            rank,
            message: "the c10d shim returned no reducer".into(),
        })?;
        Ok(Self { raw, rank, names })
    }

    /// The parameters this reducer averages, in its order.
    pub fn parameter_names(&self) -> &[String] {
        &self.names
    }

    /// Arms the hooks for the next backward; call once per step after the forward passes and before
    /// `backward` (on the first call after the first backward it also rebuilds the buckets in the order
    /// gradients arrived, a collective).
    pub fn prepare_backward(&self) -> Result<(), DistError> {
        let step = |op: &'static str, err| {
            take_error(err).map_err(|message| DistError::Collective {
                op,
                rank: self.rank,
                message,
            })
        };
        // SAFETY: a live reducer.
        step("gradient reducer (forward)", unsafe {
            ffi::c10d_reducer_prepare_forward(self.raw.as_ptr())
        })?;
        // SAFETY: a live reducer.
        step("gradient reducer (backward)", unsafe {
            ffi::c10d_reducer_prepare_backward(self.raw.as_ptr())
        })
    }
}

impl Drop for GradientReducer {
    fn drop(&mut self) {
        // SAFETY: created by c10d_reducer_new, freed once; removes its hooks from the parameters.
        unsafe { ffi::c10d_reducer_free(self.raw.as_ptr()) }
    }
}
