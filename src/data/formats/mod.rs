//! Readers (and fixture writers) of the file formats datasets, checkpoints and intermediate results come in,
//! without executing anything.
pub mod box_file;
pub mod mat5;
pub use contracam_base::data::formats::{npy, pickle};
pub mod safetensors;
pub mod torch_checkpoint;
