//! Metrics.
pub mod miou;
