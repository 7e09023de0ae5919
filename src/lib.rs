//! contracam: a reproducibility harness for "Object-aware Contrastive Learning for Debiased Scene
//! Representation" (Mo et al., NeurIPS 2021).
//!
//! Layers, data flowing one way (a lower layer never imports a higher one):
//! `data` → `model` → `train` → `localize` → `eval` → `suite`. `cli` is a thin shell on top.
pub mod data;
pub mod device;
pub mod eval;
pub use contracam_base::imgops;
pub mod localize;
pub mod model;
pub mod suite;
pub mod train;
pub mod util;

/// contracam's version and the git commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("CONTRACAM_GIT_HASH"),
    ")"
);
