//! The C interface of `shim/c10d_shim.cpp`. Every fallible call returns null or an error message that
//! [`take_error`] turns into a `String` (and frees).
use std::ffi::{c_char, c_int, CStr};

use tch::Tensor;

/// `ContracamGroup` (a c10d::ProcessGroup and its store).
#[repr(C)]
pub struct RawGroup {
    _private: [u8; 0],
}

/// `ContracamReducer` (a c10d::Reducer and its logger).
#[repr(C)]
pub struct RawReducer {
    _private: [u8; 0],
}

/// `at::Tensor`, as tch's `C_tensor` is on the C side.
pub type RawTensor = torch_sys::C_tensor;

extern "C" {
    pub fn c10d_free_string(s: *mut c_char);
    #[allow(clippy::too_many_arguments)]
    pub fn c10d_group_new(
        host: *const c_char,
        port: c_int,
        rank: c_int,
        world_size: c_int,
        timeout_ms: i64,
        gloo_interface: *const c_char,
        gloo_hostname: *const c_char,
        use_nccl: c_int,
        cuda_device: c_int,
        out: *mut *mut RawGroup,
    ) -> *mut c_char;
    pub fn c10d_group_free(g: *mut RawGroup);
    pub fn c10d_has_nccl() -> c_int;
    pub fn c10d_all_reduce(
        g: *mut RawGroup,
        tensors: *const *mut RawTensor,
        n: usize,
        op: c_int,
    ) -> *mut c_char;
    pub fn c10d_all_gather(
        g: *mut RawGroup,
        input: *const RawTensor,
        out: *mut *mut RawTensor,
    ) -> *mut c_char;
    pub fn c10d_broadcast(
        g: *mut RawGroup,
        tensors: *const *mut RawTensor,
        n: usize,
        root: c_int,
    ) -> *mut c_char;
    pub fn c10d_barrier(g: *mut RawGroup) -> *mut c_char;
    #[allow(clippy::too_many_arguments)]
    pub fn c10d_sync_batch_norm(
        g: *mut RawGroup,
        input: *const RawTensor,
        weight: *const RawTensor,
        bias: *const RawTensor,
        running_mean: *mut RawTensor,
        running_var: *mut RawTensor,
        momentum: f64,
        eps: f64,
        out: *mut *mut RawTensor,
    ) -> *mut c_char;
    pub fn c10d_reducer_new(
        g: *mut RawGroup,
        params: *const *mut RawTensor,
        n: usize,
        bucket_bytes: i64,
        first_bucket_bytes: i64,
        out: *mut *mut RawReducer,
    ) -> *mut c_char;
    pub fn c10d_reducer_free(r: *mut RawReducer);
    pub fn c10d_reducer_prepare_forward(r: *mut RawReducer) -> *mut c_char;
    pub fn c10d_reducer_prepare_backward(r: *mut RawReducer) -> *mut c_char;
}

/// `Err(message)` for a non-null error from the shim, freeing it.
pub fn take_error(err: *mut c_char) -> Result<(), String> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: the shim returns a NUL-terminated malloc'd string (or null, handled above).
    let msg = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: freed once, with the shim's own free.
    unsafe { c10d_free_string(err) };
    Err(msg)
}

/// The `at::Tensor*` behind each tch tensor, for calls that read or update them in place.
pub fn raw_tensors(tensors: &[&Tensor]) -> Vec<*mut RawTensor> {
    tensors
        .iter()
        .map(|t| t.as_ptr() as *mut RawTensor)
        .collect()
}

/// Takes ownership of a tensor the shim allocated with `new at::Tensor`.
///
/// # Safety
/// `ptr` must come from the shim's `out` parameter of a call that succeeded.
pub unsafe fn owned_tensor(ptr: *mut RawTensor) -> Tensor {
    // SAFETY: per the contract above, a fresh heap at::Tensor whose ownership passes to tch.
    unsafe { Tensor::from_ptr(ptr) }
}
