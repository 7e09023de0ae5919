//! The C interface of `shim/precision_shim.cpp`. Fallible calls return null or an error message that
//! [`take_error`] turns into a `String` (and frees).
use std::ffi::{c_char, c_int, CStr};

/// `at::Tensor`, as tch's `C_tensor` is on the C side.
pub type RawTensor = torch_sys::C_tensor;

extern "C" {
    pub fn contracam_precision_free_string(s: *mut c_char);
    pub fn contracam_autocast_enter(
        device_type: c_int,
        dtype: c_int,
        prev_enabled: *mut c_int,
        prev_dtype: *mut c_int,
        prev_cache: *mut c_int,
    ) -> *mut c_char;
    pub fn contracam_autocast_exit(
        device_type: c_int,
        prev_enabled: c_int,
        prev_dtype: c_int,
        prev_cache: c_int,
    );
    pub fn contracam_autocast_enabled(device_type: c_int) -> c_int;
    pub fn contracam_autocast_dtype(device_type: c_int) -> c_int;
    pub fn contracam_to_memory_format(
        t: *const RawTensor,
        channels_last: c_int,
        out: *mut *mut RawTensor,
    ) -> *mut c_char;
    pub fn contracam_is_contiguous_in(t: *const RawTensor, channels_last: c_int) -> c_int;
    pub fn contracam_tensors_to_memory_format(
        tensors: *const *mut RawTensor,
        n: usize,
        channels_last: c_int,
    ) -> *mut c_char;
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
    unsafe { contracam_precision_free_string(err) };
    Err(msg)
}
