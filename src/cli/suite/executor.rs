//! `suite run --executor slurm` and `--only STAGE` for graph suites: argument parsing and the hand-off to
//! `contracam::suite::executor`; `run_graph_cmd` calls [`only`] and [`before_local_pass`].
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use contracam::suite::executor::slurm::{self, Sbatch, SlurmOptions};
use contracam::suite::graph::GraphSuite;
use contracam::suite::graph_run::{run_graph_only_at, GraphOptions};
use contracam::suite::registry::Registry;
use contracam::suite::RunOptions;
use contracam::train::distributed::launched_rank;

use super::RunArgs;
use crate::cli::GlobalArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Executor {
    // Plain comments: doc comments on the values would switch `--help` to its long layout.
    Local,
    Slurm,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ExecutorArgs {
    /// Where the stages of a graph suite run: local (this process) or slurm (one sbatch job per stage not yet
    /// cached, after the jobs of its inputs; with several seeds one job array per stage, task i at seed i;
    /// then a local pass over the cache for results and reports).
    #[arg(long, value_enum, default_value = "local")]
    pub executor: Executor,
    /// sbatch --partition for --executor slurm (default: the cluster's default partition).
    #[arg(long, value_name = "P")]
    pub slurm_partition: Option<String>,
    /// Seconds between two looks at squeue for --executor slurm.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub slurm_poll_s: u64,
    /// Run this one stage of a graph suite (what a Slurm job runs); the stages it reads from must be
    /// published already. Writes no results file.
    #[arg(long, value_name = "STAGE")]
    pub only: Option<String>,
    /// With --only: run the stage in the pass of this seed of the run (what a Slurm array task runs):
    /// every stage at this seed, as the local run of --seeds does for seeds after the run seed.
    #[arg(long, value_name = "SEED", requires = "only")]
    pub only_seed: Option<u64>,
}

impl ExecutorArgs {
    /// Refuses the graph-only options on a smoke suite.
    pub fn refuse_on_smoke(&self, suite: &Path) -> anyhow::Result<()> {
        if self.executor != Executor::Local || self.only.is_some() {
            anyhow::bail!(
                "{}: --executor slurm and --only work on graph suites (with [stages]) only",
                suite.display()
            );
        }
        Ok(())
    }
}

/// `--only STAGE [--only-seed S]`: runs that stage (in the pass of seed S) and prints its metrics.
pub fn only(
    suite: &GraphSuite,
    registry: &Registry,
    opts: &RunOptions,
    gopts: &GraphOptions,
    stage: &str,
    seed: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let results = run_graph_only_at(suite, registry, opts, gopts, stage, seed)?;
    for (k, v) in &results.metrics {
        println!("{k:<28} {v:.4}");
    }
    match launched_rank() {
        Some((rank, world)) if rank > 0 => {
            println!("stage {stage}: rank {rank} of {world} done (rank 0 publishes)")
        }
        _ => println!("stage {stage}: published"),
    }
    Ok(ExitCode::SUCCESS)
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("making {} absolute", p.display()))
}

/// The command each job runs: this binary with the options that decide fingerprints, paths made absolute.
fn job_command(
    a: &RunArgs,
    opts: &RunOptions,
    gopts: &GraphOptions,
    global: &GlobalArgs,
) -> anyhow::Result<Vec<String>> {
    let exe = std::env::current_exe().context("finding this program's path for the job scripts")?;
    let device = match opts.device {
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    };
    let mut cmd = vec![
        exe.display().to_string(),
        "suite".into(),
        "run".into(),
        absolute(&a.suite)?.display().to_string(),
        "--runs-dir".into(),
        absolute(&opts.runs_dir)?.display().to_string(),
        "--data-dir".into(),
        absolute(&gopts.data_dir)?.display().to_string(),
        // The resolved device, so a job on another node fingerprints as this process did.
        "--device".into(),
        device,
        "--quiet".into(),
    ];
    if let Some(s) = gopts.seed {
        cmd.extend(["--suite-seed".into(), s.to_string()]);
    }
    // The profile and overrides decide parameters, so fingerprints: every job applies the same.
    if let Some(p) = &a.profile.profile {
        cmd.extend(["--profile".into(), p.clone()]);
    }
    for set in &a.profile.sets {
        cmd.extend(["--set".into(), set.clone()]);
    }
    if let Some(t) = global.threads {
        cmd.extend(["--threads".into(), t.to_string()]);
    }
    Ok(cmd)
}

/// With `--executor slurm`: builds every stage not yet cached as Slurm jobs and returns the options of
/// the local pass that follows (no refresh: it reuses what the jobs built). With `local`: `opts` as given.
pub fn before_local_pass(
    a: &RunArgs,
    global: &GlobalArgs,
    suite: &GraphSuite,
    registry: &Registry,
    opts: RunOptions,
    gopts: &GraphOptions,
) -> anyhow::Result<RunOptions> {
    if a.executor.executor == Executor::Local {
        return Ok(opts);
    }
    let sopts = SlurmOptions {
        partition: a.executor.slurm_partition.clone(),
        poll: Duration::from_secs(a.executor.slurm_poll_s.max(1)),
        command: job_command(a, &opts, gopts, global)?,
        chdir: std::env::current_dir().context("reading the working directory")?,
    };
    let d = slurm::dispatch(suite, registry, &opts, gopts, &sopts, &mut Sbatch)?;
    // An array is one job; its tasks are counted apart when there are any.
    let tasks = if d.submitted.len() != d.jobs {
        format!(" ({} array task(s))", d.submitted.len())
    } else {
        String::new()
    };
    println!(
        "slurm: {} job(s){tasks} submitted, {} stage(s) cached",
        d.jobs,
        d.cached.len()
    );
    Ok(slurm::without_refresh(&opts))
}

/// `suite status SUITE`: the state of each stage's latest Slurm job.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Graph suite file (TOML) whose jobs `suite run --executor slurm` submitted.
    pub suite: PathBuf,
    /// The --runs-dir of those runs (the jobs are recorded in <runs-dir>/<suite>/slurm/jobs.jsonl).
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Prints each stage's latest job: state (pending, running, done, failed), job id, what the state was read
/// from, and its log. Exits 1 when a stage's latest job failed.
pub fn status_cmd(a: StatusArgs) -> anyhow::Result<ExitCode> {
    use contracam::suite::executor::status::{status, State};
    let suite = contracam::suite::graph::validate_file(&a.suite)?;
    let dir = a.runs_dir.join(&suite.name).join("slurm");
    let stages = status(&dir, &suite.order, &mut Sbatch)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&stages)?);
    } else if stages.is_empty() {
        println!(
            "no Slurm jobs recorded for suite '{}' under {}",
            suite.name,
            dir.display()
        );
    } else {
        for s in &stages {
            let stage = match s.seed {
                Some(seed) => format!("{} (seed {seed})", s.stage),
                None => s.stage.clone(),
            };
            println!(
                "{:<20} {:<8} job {:<8} {:<40} {}",
                stage,
                s.state.name(),
                s.job,
                s.detail,
                s.log.display()
            );
        }
    }
    Ok(if stages.iter().any(|s| s.state == State::Failed) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
