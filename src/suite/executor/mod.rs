//! Where a graph suite's stages run besides this process: [`slurm`] submits one batch job per stage that
//! is not published yet, waits for them, and leaves the final local pass (every stage cached) to
//! [`super::graph_run::run_graph`]; [`status`] reports where each stage's latest job is (`suite status`).
pub mod slurm;
pub mod status;
