//! The part of contracam that does not link libtorch: dataset manifests, downloads, verification and locks
//! (`data::source`, `data::ops`), the pure-Rust metrics (`eval::coco`, `eval::maxboxacc`, `eval::miou`),
//! image ops, `.npy` and pickle readers, and the output/progress/thread helpers they share.
//!
//! The `contracam` launcher binary links only this crate, so the commands built on it start without
//! loading libtorch; the `contracam` library re-exports every module here at the same path.
pub mod data;
pub mod eval;
pub mod imgops;
pub mod util;
