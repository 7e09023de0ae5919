//! Data: the synthetic scenes (embedded default); downloads, verification and builders for real datasets.
pub mod synth;
pub mod synth_export;
