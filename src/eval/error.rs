//! Errors of the eval layer: `EvalError` lives in the torch-free `contracam_base` (the metrics it reports
//! on do); libtorch errors enter it through [`torch`].
pub use contracam_base::eval::error::*;

/// A libtorch error as an [`EvalError`] (`EvalError` is defined where no `tch` type is known, so there is
/// no `From<tch::TchError>`; `.map_err(torch)` stands in for `?`).
pub fn torch(e: tch::TchError) -> EvalError {
    EvalError::Torch(e.to_string())
}
