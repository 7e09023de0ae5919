//! localize layer.
pub mod crf;
pub mod boxes;
pub mod mask_clean;
pub mod postprocess;
pub mod tensor_stream;
