//! Small helpers shared by every layer: the build/machine report, seeds, progress reporting, output-file
//! hygiene (no input overwritten, atomic writes), JSON for NaN floats and up-front memory checks.
pub mod cpu_memory;
pub mod env;
pub use contracam_base::util::{float_json, output, progress};
pub mod memory;
pub mod rng;
pub mod threads;
pub mod torch_guard;

pub use env::{env_report, EnvReport};
