//! localize layer.
pub mod boxes;
pub mod crf;
pub mod mask_clean;
pub mod postprocess;
pub mod tensor_stream;
