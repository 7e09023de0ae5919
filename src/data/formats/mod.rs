//! Readers (and fixture writers) of the file formats datasets and checkpoints come in, without executing
//! anything.
pub mod mat5;
pub mod npy;
pub mod pickle;
pub mod torch_checkpoint;
