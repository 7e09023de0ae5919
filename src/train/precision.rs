//! Mixed precision and memory format of training (`train.precision`, `train.channels_last`; `train ssl
//! --precision bf16-mixed --channels-last`). float32 and the contiguous layout stay the default, as the
//! official code; bf16-mixed is an option for speed, not part of the paper's recipe.
//!
//! bf16-mixed is PyTorch's `torch.autocast(device, dtype=torch.bfloat16)` around the forward passes and the
//! loss: convolutions and matmuls run in bfloat16, the ops autocast keeps in float32 stay there. Backward runs
//! after the region (in the dtypes the forward chose), and everything else is float32: the loss value, the
//! parameters and their gradients, the SGD step and its momentum, the EMA/momentum target, MoCo's queue and
//! every checkpoint. tch 0.24's `autocast` switches CUDA autocast only (and only when a GPU is present), with
//! no dtype, so [`Autocast`] goes through a small C++ shim (`precision/shim/`) to libtorch's
//! `at::autocast` API. channels_last (NHWC) is `model.to(memory_format=torch.channels_last)` for the 4-d
//! parameters and `contiguous(memory_format=...)` for the input views, through the same shim (tch has no
//! memory-format argument).
mod ffi;

use std::ffi::c_int;
use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, TchError, Tensor};

use super::error::TrainError;

/// The floating point of a training step's forward and backward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// float32 everywhere (the official code).
    #[default]
    Fp32,
    /// bfloat16 autocast for the forward passes and the loss; parameters, gradients, optimiser, EMA target
    /// and queue in float32.
    Bf16Mixed,
}

impl Precision {
    pub const NAMES: [&'static str; 2] = ["fp32", "bf16-mixed"];

    /// As written in configs, flags and results.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16Mixed => "bf16-mixed",
        }
    }

    /// For `skip_serializing_if`: fp32 is left out of serialised configs, so theirs stay as they were.
    pub fn is_fp32(&self) -> bool {
        *self == Precision::Fp32
    }

    /// The dtype autocast computes in, if any.
    pub fn autocast_kind(self) -> Option<Kind> {
        match self {
            Precision::Fp32 => None,
            Precision::Bf16Mixed => Some(Kind::BFloat16),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "bf16-mixed" => Ok(Precision::Bf16Mixed),
            other => Err(format!(
                "unknown precision '{other}' (one of {})",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// c10::DeviceType codes of the devices autocast is used on here.
fn device_type(device: Device) -> Result<c_int, String> {
    match device {
        Device::Cpu => Ok(0),
        Device::Cuda(_) => Ok(1),
        other => Err(format!(
            "bf16-mixed autocast is implemented for CPU and CUDA, not {other:?}"
        )),
    }
}

/// c10::ScalarType codes (tch keeps its own mapping private).
fn scalar_type(kind: Kind) -> Option<c_int> {
    match kind {
        Kind::Half => Some(5),
        Kind::Float => Some(6),
        Kind::BFloat16 => Some(15),
        _ => None,
    }
}

fn kind_of(code: c_int) -> Option<Kind> {
    [Kind::Half, Kind::Float, Kind::BFloat16]
        .into_iter()
        .find(|k| scalar_type(*k) == Some(code))
}

fn torch_error(msg: String) -> TrainError {
    TrainError::Torch(TchError::Torch(msg))
}

/// An autocast region on this thread, as `with torch.autocast(device, dtype):`. Dropping it (also while a
/// panic unwinds) clears autocast's cast cache when the outermost region ends and restores the previous
/// state. Autocast state is thread-local, so the guard cannot move to another thread.
#[must_use = "autocast is on only while the guard lives"]
pub struct Autocast {
    device_type: c_int,
    prev: [c_int; 3],
    _same_thread: PhantomData<*const ()>,
}

impl Autocast {
    /// Switches autocast on for `device`'s type with `dtype` (BFloat16, or Half on CUDA).
    pub fn enter(device: Device, dtype: Kind) -> Result<Self, TrainError> {
        let dt = device_type(device).map_err(torch_error)?;
        let st = scalar_type(dtype)
            .filter(|_| matches!(dtype, Kind::BFloat16 | Kind::Half))
            .ok_or_else(|| {
                torch_error(format!(
                    "autocast to {dtype:?}: not a lower-precision float"
                ))
            })?;
        let mut prev = [0 as c_int; 3];
        // SAFETY: the shim writes the three ints it is given and nothing else.
        let err = unsafe {
            ffi::contracam_autocast_enter(dt, st, &mut prev[0], &mut prev[1], &mut prev[2])
        };
        ffi::take_error(err).map_err(torch_error)?;
        Ok(Self {
            device_type: dt,
            prev,
            _same_thread: PhantomData,
        })
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        let [enabled, dtype, cache] = self.prev;
        // SAFETY: plain values; the shim catches every C++ exception.
        unsafe { ffi::contracam_autocast_exit(self.device_type, enabled, dtype, cache) };
    }
}

/// Whether autocast is on for `device`'s type on this thread.
pub fn autocast_enabled(device: Device) -> bool {
    device_type(device)
        // SAFETY: reads thread-local state.
        .map(|dt| unsafe { ffi::contracam_autocast_enabled(dt) } == 1)
        .unwrap_or(false)
}

/// The dtype autocast casts to on `device`'s type on this thread (whether or not it is on).
pub fn autocast_kind(device: Device) -> Option<Kind> {
    let dt = device_type(device).ok()?;
    // SAFETY: reads thread-local state.
    kind_of(unsafe { ffi::contracam_autocast_dtype(dt) })
}

/// `t.contiguous(memory_format=torch.channels_last)` of a 4-d tensor: `t` itself when already so laid out,
/// else a copy (recorded by autograd like any op).
pub fn to_channels_last(t: &Tensor) -> Result<Tensor, TrainError> {
    if t.dim() != 4 {
        return Err(torch_error(format!(
            "channels_last needs a 4-d tensor, got shape {:?}",
            t.size()
        )));
    }
    let mut out: *mut ffi::RawTensor = std::ptr::null_mut();
    // SAFETY: `t` is a live tensor; on success `out` is a fresh heap at::Tensor whose ownership passes here.
    let err = unsafe { ffi::contracam_to_memory_format(t.as_ptr(), 1, &mut out) };
    ffi::take_error(err).map_err(torch_error)?;
    // SAFETY: see above.
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// `t.is_contiguous(memory_format=torch.channels_last)`.
pub fn is_channels_last(t: &Tensor) -> bool {
    // SAFETY: reads the tensor's strides.
    unsafe { ffi::contracam_is_contiguous_in(t.as_ptr(), 1) == 1 }
}

/// `module.to(memory_format=torch.channels_last)`: every 4-d variable of `vs` (convolution weights) gets
/// its data re-laid out in place, so the optimiser, the EMA pairs and the store all see the new layout; the
/// values do not change. Returns how many variables are 4-d.
pub fn vars_to_channels_last(vs: &tch::nn::VarStore) -> Result<usize, TrainError> {
    let vars = vs.variables();
    let ptrs: Vec<*mut ffi::RawTensor> = vars
        .values()
        .filter(|t| t.dim() == 4)
        .map(|t| t.as_ptr() as *mut ffi::RawTensor)
        .collect();
    // SAFETY: each pointer is a live at::Tensor held by `vars` for the duration of the call; the shim only
    // swaps the data behind them (Tensor::set_data).
    let err = unsafe { ffi::contracam_tensors_to_memory_format(ptrs.as_ptr(), ptrs.len(), 1) };
    ffi::take_error(err).map_err(torch_error)?;
    Ok(ptrs.len())
}

/// How a training step computes: the autocast region around its forward passes and the layout of its
/// inputs. The default (fp32, contiguous) does nothing at all, so fp32 training is bit for bit what it was
/// before this existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepPrecision {
    pub precision: Precision,
    pub channels_last: bool,
    pub device: Device,
}

impl StepPrecision {
    /// The policy `train.precision` and `train.channels_last` ask for on `device`, refused where it is not
    /// implemented (the error names the key; `train ssl`'s flags are `--precision`, `--channels-last`).
    /// Data-parallel runs take it too: parameters and gradients stay float32, so the gradient all-reduce is
    /// unchanged; SyncBatchNorm computes its statistics in float32 whatever the input's dtype, and MoCo's
    /// keys are gathered as float32 (the queue's dtype).
    pub fn new(
        precision: Precision,
        channels_last: bool,
        device: Device,
    ) -> Result<Self, TrainError> {
        if precision != Precision::Fp32 {
            device_type(device).map_err(|m| TrainError::config("train.precision", precision, m))?;
        }
        Ok(Self {
            precision,
            channels_last,
            device,
        })
    }

    /// Whether this is the default policy (nothing to do).
    pub fn is_default(&self) -> bool {
        self.precision == Precision::Fp32 && !self.channels_last
    }

    /// The autocast region a step's forward passes run in (none for fp32).
    pub fn autocast(&self) -> Result<Option<Autocast>, TrainError> {
        self.precision
            .autocast_kind()
            .map(|k| Autocast::enter(self.device, k))
            .transpose()
    }

    /// The step's input views in the policy's layout (channels_last copies, or `None`: use them as they are).
    pub fn inputs(&self, views: &[Tensor]) -> Result<Option<Vec<Tensor>>, TrainError> {
        if !self.channels_last {
            return Ok(None);
        }
        views
            .iter()
            .map(to_channels_last)
            .collect::<Result<_, _>>()
            .map(Some)
    }
}
