//! localize layer.
pub mod crf;
