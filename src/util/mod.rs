//! Small helpers shared by every layer: the build/machine report, seeds, progress reporting, output-file
//! hygiene (no input overwritten, atomic writes), JSON for NaN floats and up-front memory checks.
pub mod env;
pub mod float_json;
pub mod memory;
pub mod output;
pub mod progress;
pub mod rng;
pub mod threads;
pub mod torch_guard;

pub use env::{env_report, EnvReport};
