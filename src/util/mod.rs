//! Small helpers shared by every layer: the build/machine report, safetensors files with metadata, seeds.
pub mod env;
pub mod rng;
pub mod tensor_file;
pub mod threads;

pub use env::{env_report, EnvReport};
