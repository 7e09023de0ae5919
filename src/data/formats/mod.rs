//! Readers (and fixture writers) of the file formats datasets come in, without executing anything.
pub mod box_file;
pub mod mat5;
pub mod npy;
pub mod pickle;
