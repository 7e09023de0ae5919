//! localize layer.
pub mod crf;
pub mod boxes;
pub mod mask_clean;
