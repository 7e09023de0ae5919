//! Output, progress and thread-count helpers shared by both sides.
pub mod float_json;
pub mod output;
pub mod progress;
pub mod threads;
