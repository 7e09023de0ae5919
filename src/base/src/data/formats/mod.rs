//! The torch-free file-format readers (the others live in `contracam::data::formats`).
pub mod npy;
pub mod pickle;
