//! Metrics.
pub mod box_recall;
pub mod encode;
pub mod linear;
pub mod miou;
