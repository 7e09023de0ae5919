//! The Slurm executor of graph suites. Every stage that is not published at its fingerprint (the same
//! fingerprints as the local runner, from [`plan_graph`]) becomes one `sbatch` job that runs
//! `contracam suite run SUITE --only STAGE ...` with `--dependency=afterok:` on the jobs of the stages it
//! reads from and the stage's `[stages.X.resources]`. Jobs write their logs and exit status to
//! `<runs-dir>/<suite>/slurm/`; this process waits on `squeue` and those status files, then the caller runs
//! the suite locally, where every stage is cached.
//!
//! Several seeds (`--seeds N`, the golden's claims): the run's seed list (run seed first) is planned seed
//! by seed, and a stage whose fingerprint differs between seeds is ONE job array whose task `i` runs the
//! pass of seed `i` of that list (`--only STAGE --only-seed S`; the job script maps
//! `SLURM_ARRAY_TASK_ID` to the seed, fixed at submission). Only the tasks whose seed's stage is not
//! published are submitted (`--array=0,2` has gaps). A downstream array waits with
//! `aftercorr:` (task `i` after task `i`) on an upstream array that has every one of its task indices, else
//! with `afterok:` (all tasks); a stage with one fingerprint for all seeds is a plain job at the first seed
//! that needs it, and what reads from it waits with `afterok:`.
//!
//! The exit status comes from a file the job script writes, not from `sacct`: a cluster without accounting
//! storage (like the single-node one of `scripts/slurm-local.sh`) has no `sacct`. The scheduler sits behind
//! [`Scheduler`] so tests can drive the submit/wait logic with a fake one.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::suite::cache::StageCache;
use crate::suite::graph::{GraphSuite, InputRef, StageResources};
use crate::suite::graph_run::{self, GraphOptions, GraphRunError};
use crate::suite::plan::{plan_graph, Action};
use crate::suite::registry::Registry;
use crate::suite::{RunOptions, SuiteError};

#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error("cannot run '{program}': {msg}; is Slurm installed, on PATH, and SLURM_CONF set where needed?")]
    Spawn { program: String, msg: String },
    #[error("'{command}' failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("sbatch --parsable printed '{out}', not a job id")]
    JobId { out: String },
    #[error("{path}: {msg}")]
    Io { path: PathBuf, msg: String },
    #[error("{path}: stage '{stage}' cannot run: {why}; nothing was submitted")]
    Blocked {
        path: PathBuf,
        stage: String,
        why: String,
    },
    #[error("stage '{stage}'{}: Slurm job {job} failed ({why}); its log is {}", seed_note(*.seed), .log.display())]
    JobFailed {
        stage: String,
        seed: Option<u64>,
        job: String,
        why: String,
        log: PathBuf,
    },
    #[error("stage '{stage}'{}: Slurm job {job} completed but the stage is not published under {}; its log is {}", seed_note(*.seed), .dir.display(), .log.display())]
    NotPublished {
        stage: String,
        seed: Option<u64>,
        job: String,
        dir: PathBuf,
        log: PathBuf,
    },
    #[error(transparent)]
    Plan(#[from] Box<SuiteError>),
    #[error(transparent)]
    Graph(#[from] Box<GraphRunError>),
}

/// ` (seed S)` for a task of a several-seed run.
fn seed_note(seed: Option<u64>) -> String {
    seed.map(|s| format!(" (seed {s})")).unwrap_or_default()
}

fn io(path: &Path, e: std::io::Error) -> SlurmError {
    SlurmError::Io {
        path: path.into(),
        msg: e.to_string(),
    }
}

/// How jobs are submitted.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    /// `sbatch --partition`; the cluster's default partition when None.
    pub partition: Option<String>,
    /// How long to sleep between two looks at the queue.
    pub poll: Duration,
    /// The program and arguments every job runs; `--only STAGE` (and `--refresh-stage STAGE` for a stage
    /// being refreshed) are appended. They must give the same fingerprints as this process (same runs dir,
    /// data dir, seed and device).
    pub command: Vec<String>,
    /// The working directory of every job (`sbatch --chdir`).
    pub chdir: PathBuf,
}

/// One batch job as handed to the scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub name: String,
    /// The job script (written before submission).
    pub script: PathBuf,
    /// `sbatch --output`, with `%j` for the job id.
    pub log: PathBuf,
    pub chdir: PathBuf,
    pub partition: Option<String>,
    pub resources: StageResources,
    /// Job ids that must complete successfully first (all tasks of an array).
    pub after_ok: Vec<String>,
    /// Array job ids whose task `i` must complete successfully before task `i` of this array.
    pub after_corr: Vec<String>,
    /// `sbatch --array` (task indices, e.g. `0,2`); None for a plain job.
    pub array: Option<String>,
}

/// The three things the executor asks of a scheduler.
pub trait Scheduler {
    /// Submits `job`; returns its id.
    fn submit(&mut self, job: &Job) -> Result<String, SlurmError>;
    /// The state (PENDING, RUNNING, COMPLETED, FAILED, ...) of each of `ids` the scheduler still lists.
    fn states(&mut self, ids: &[String]) -> Result<BTreeMap<String, String>, SlurmError>;
    /// Cancels `ids` (some may have finished already).
    fn cancel(&mut self, ids: &[String]) -> Result<(), SlurmError>;
    /// The end state of jobs the queue no longer lists, from accounting (`sacct`); none on a cluster
    /// without accounting storage.
    fn accounting(&mut self, _ids: &[String]) -> Result<BTreeMap<String, String>, SlurmError> {
        Ok(BTreeMap::new())
    }
}

/// The real scheduler: `sbatch`, `squeue` and `scancel` from PATH (they read `SLURM_CONF`).
#[derive(Debug, Default)]
pub struct Sbatch;

/// The `sbatch` arguments for `job` (before the script path).
pub fn sbatch_args(job: &Job) -> Vec<String> {
    let r = &job.resources;
    let mut args = vec![
        "--parsable".to_string(),
        format!("--job-name={}", job.name),
        format!("--output={}", job.log.display()),
        format!("--chdir={}", job.chdir.display()),
        "--nodes=1".into(),
        format!("--ntasks={}", r.ntasks()),
        format!("--cpus-per-task={}", r.cpus),
        format!("--mem={}M", r.mem_mb),
        format!("--time={}", r.time_min),
        // A job whose upstream failed can never start: let Slurm drop it instead of leaving it pending.
        "--kill-on-invalid-dep=yes".into(),
    ];
    if r.gpus > 0 {
        args.push(format!("--gres=gpu:{}", r.gpus));
    }
    if let Some(p) = &job.partition {
        args.push(format!("--partition={p}"));
    }
    if let Some(a) = &job.array {
        args.push(format!("--array={a}"));
    }
    // Comma: every listed dependency must hold.
    let mut deps = Vec::new();
    if !job.after_ok.is_empty() {
        deps.push(format!("afterok:{}", job.after_ok.join(":")));
    }
    if !job.after_corr.is_empty() {
        deps.push(format!("aftercorr:{}", job.after_corr.join(":")));
    }
    if !deps.is_empty() {
        args.push(format!("--dependency={}", deps.join(",")));
    }
    args
}

fn run_command(program: &str, args: &[String]) -> Result<String, SlurmError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| SlurmError::Spawn {
            program: program.into(),
            msg: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(SlurmError::Command {
            command: format!("{program} {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The job id in `sbatch --parsable` output (`ID` or `ID;CLUSTER`).
pub fn parse_job_id(out: &str) -> Result<String, SlurmError> {
    let id = out.trim().split(';').next().unwrap_or_default();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SlurmError::JobId {
            out: out.trim().into(),
        });
    }
    Ok(id.into())
}

/// `squeue -o '%i|%T'` lines → job id → state.
pub fn parse_squeue(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.trim().split_once('|'))
        .map(|(id, state)| (id.trim().to_string(), state.trim().to_string()))
        .collect()
}

impl Scheduler for Sbatch {
    fn submit(&mut self, job: &Job) -> Result<String, SlurmError> {
        let mut args = sbatch_args(job);
        args.push(job.script.display().to_string());
        parse_job_id(&run_command("sbatch", &args)?)
    }

    fn states(&mut self, ids: &[String]) -> Result<BTreeMap<String, String>, SlurmError> {
        // Not `-j IDS`: squeue fails on an id it has already forgotten. All states, so a job that has just
        // finished shows COMPLETED/FAILED rather than vanishing; -r: one line per array task (`ID_I`).
        let args = ["-h", "-r", "--me", "--states=all", "-o", "%i|%T"].map(String::from);
        let mut all = parse_squeue(&run_command("squeue", &args)?);
        all.retain(|id, _| ids.contains(id));
        Ok(all)
    }

    fn cancel(&mut self, ids: &[String]) -> Result<(), SlurmError> {
        if ids.is_empty() {
            return Ok(());
        }
        run_command("scancel", ids).map(|_| ())
    }

    fn accounting(&mut self, ids: &[String]) -> Result<BTreeMap<String, String>, SlurmError> {
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        // -X: the job itself, not its steps; -P: `ID|STATE`. Without accounting storage sacct fails,
        // which leaves the state to the exit status files.
        let args = ["-n", "-X", "-P", "-o", "JobID,State", "-j", &ids.join(",")].map(String::from);
        let mut all = parse_squeue(&run_command("sacct", &args)?);
        all.retain(|id, _| ids.contains(id));
        // sacct writes `CANCELLED by UID`: the first word is the state.
        for s in all.values_mut() {
            *s = s.split_whitespace().next().unwrap_or_default().to_string();
        }
        Ok(all)
    }
}

/// A stage to submit, in graph order.
#[derive(Debug, Clone)]
pub struct PlannedJob {
    pub stage: String,
    /// The stages it reads from directly (only those submitted in the same run become dependencies).
    pub reads: Vec<String>,
    pub resources: StageResources,
    /// Published but recomputed (`--refresh`/`--refresh-stage`): the job adds `--refresh-stage STAGE`.
    pub refresh: bool,
    /// Which seed(s) the job runs.
    pub seeds: SeedArg,
}

/// One task of a job array: the index of its seed in the run's seed list, and the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedTask {
    pub index: u32,
    pub seed: u64,
}

/// What a job passes as `--only-seed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeedArg {
    /// A run of one seed: nothing (the child runs the run seed's pass).
    Run,
    /// A plain job at this seed (a stage with one fingerprint for all seeds).
    Fixed(u64),
    /// A job array: task `index` runs at `seed`.
    Array(Vec<SeedTask>),
}

impl SeedArg {
    /// `--array` of a job array: its task indices.
    fn array_spec(&self) -> Option<String> {
        match self {
            SeedArg::Array(t) => Some(
                t.iter()
                    .map(|t| t.index.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            _ => None,
        }
    }

    fn seed(&self) -> Option<u64> {
        match self {
            SeedArg::Fixed(s) => Some(*s),
            _ => None,
        }
    }
}

/// A submitted job, or one task of a submitted array (`job` is then `ID_INDEX`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub stage: String,
    /// The seed it runs at (runs of several seeds only).
    pub seed: Option<u64>,
    pub job: String,
    /// The job's log file.
    pub log: PathBuf,
    /// Where the job script writes its exit status.
    pub status_file: PathBuf,
}

/// What a dispatch did.
#[derive(Debug, Clone, Default)]
pub struct Dispatch {
    /// Jobs (and array tasks) submitted, in graph order.
    pub submitted: Vec<Submitted>,
    /// How many `sbatch` calls that took (an array is one).
    pub jobs: usize,
    /// Stages already published at their fingerprints (no job); with several seeds, `stage (seed S)`,
    /// once per seed.
    pub cached: Vec<String>,
}

/// `'...'` for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The job script of `stage`: runs the command, then records its exit status in `status_prefix<JOBID>.rc`.
/// A job of `tasks` > 1 runs it as one `srun` step of that many tasks, each a rank of one data-parallel
/// run (the ranks meet through srun's variables, rank 0 publishes); `--kill-on-bad-exit` ends the step
/// when one rank fails, so the others do not wait for it.
///
/// With `seeds` [`SeedArg::Array`] the script first maps `SLURM_ARRAY_TASK_ID` to the task's seed (an
/// index it does not know fails with exit status 2), passes it as `--only-seed`, and writes the status to
/// `status_prefix<ARRAYID>_<INDEX>.rc`.
pub fn job_script(
    command: &[String],
    stage: &str,
    refresh: bool,
    status_prefix: &Path,
    tasks: u32,
    seeds: &SeedArg,
) -> String {
    let mut argv: Vec<String> = Vec::new();
    if tasks > 1 {
        argv.extend([
            "srun".to_string(),
            format!("--ntasks={tasks}"),
            "--kill-on-bad-exit=1".into(),
        ]);
    }
    argv.extend(command.iter().map(|a| sh_quote(a)));
    argv.push("--only".into());
    argv.push(sh_quote(stage));
    if refresh {
        argv.push("--refresh-stage".into());
        argv.push(sh_quote(stage));
    }
    let prefix = sh_quote(&status_prefix.display().to_string());
    let head = format!(
        "#!/bin/sh\n# contracam graph stage '{stage}' (written by suite run --executor slurm)\n"
    );
    match seeds {
        SeedArg::Run | SeedArg::Fixed(_) => {
            if let SeedArg::Fixed(s) = seeds {
                argv.push("--only-seed".into());
                argv.push(s.to_string());
            }
            format!(
                "{head}{}\nrc=$?\necho \"$rc\" > {prefix}\"$SLURM_JOB_ID\".rc\nexit \"$rc\"\n",
                argv.join(" "),
            )
        }
        SeedArg::Array(array) => {
            argv.push("--only-seed".into());
            argv.push("\"$seed\"".into());
            let cases: String = array
                .iter()
                .map(|t| format!("{}) seed={} ;;\n", t.index, t.seed))
                .collect();
            format!(
                "{head}# array task index = position of the seed in the run's seed list\nseed=\ncase \"$SLURM_ARRAY_TASK_ID\" in\n{cases}esac\nif [ -z \"$seed\" ]; then\n  echo \"array task '$SLURM_ARRAY_TASK_ID' is not one this script was written for\" >&2\n  rc=2\nelse\n  {}\n  rc=$?\nfi\necho \"$rc\" > {prefix}\"${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}\".rc\nexit \"$rc\"\n",
                argv.join(" "),
            )
        }
    }
}

/// Writes each job's script under `dir` and submits the jobs in order, each after the jobs of the stages
/// it reads from.
pub fn submit_jobs(
    jobs: &[PlannedJob],
    dir: &Path,
    suite_name: &str,
    sopts: &SlurmOptions,
    sched: &mut dyn Scheduler,
) -> Result<Vec<Submitted>, SlurmError> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    // Stage → its job id and, for an array, its task indices.
    let mut ids: BTreeMap<&str, (String, Option<BTreeSet<u32>>)> = BTreeMap::new();
    let mut out = Vec::new();
    for j in jobs {
        let script = dir.join(format!("{}.sh", j.stage));
        let status_prefix = dir.join(format!("{}-", j.stage));
        let text = job_script(
            &sopts.command,
            &j.stage,
            j.refresh,
            &status_prefix,
            j.resources.ntasks(),
            &j.seeds,
        );
        std::fs::write(&script, text).map_err(|e| io(&script, e))?;
        let mine: Option<BTreeSet<u32>> = match &j.seeds {
            SeedArg::Array(t) => Some(t.iter().map(|t| t.index).collect()),
            _ => None,
        };
        let (mut after_ok, mut after_corr) = (Vec::new(), Vec::new());
        for r in &j.reads {
            let Some((id, theirs)) = ids.get(r.as_str()) else {
                continue;
            };
            // Task i after task i only where the upstream array has a task i for each of ours.
            match (&mine, theirs) {
                (Some(m), Some(t)) if m.is_subset(t) => after_corr.push(id.clone()),
                _ => after_ok.push(id.clone()),
            }
        }
        let log_pattern = if mine.is_some() { "%A_%a" } else { "%j" };
        let job = Job {
            name: format!("contracam-{suite_name}-{}", j.stage),
            script,
            log: dir.join(format!("{}-{log_pattern}.log", j.stage)),
            chdir: sopts.chdir.clone(),
            partition: sopts.partition.clone(),
            resources: j.resources.clone(),
            after_ok,
            after_corr,
            array: j.seeds.array_spec(),
        };
        let id = sched.submit(&job)?;
        let deps: Vec<String> = job
            .after_ok
            .iter()
            .map(|d| format!("afterok {d}"))
            .chain(job.after_corr.iter().map(|d| format!("aftercorr {d}")))
            .collect();
        eprintln!(
            "[slurm] {}: job {id}{}{}",
            j.stage,
            job.array
                .as_ref()
                .map(|a| format!(" array {a}"))
                .unwrap_or_default(),
            if deps.is_empty() {
                String::new()
            } else {
                format!(" after {}", deps.join(", "))
            }
        );
        let unit = |job: String, seed: Option<u64>| Submitted {
            stage: j.stage.clone(),
            seed,
            log: dir.join(format!("{}-{job}.log", j.stage)),
            status_file: dir.join(format!("{}-{job}.rc", j.stage)),
            job,
        };
        match &j.seeds {
            SeedArg::Array(tasks) => {
                for t in tasks {
                    out.push(unit(format!("{id}_{}", t.index), Some(t.seed)));
                    super::status::record(dir, &out)?;
                }
            }
            other => {
                out.push(unit(id.clone(), other.seed()));
                // Recorded as each job is submitted, so `suite status` finds every job even if this
                // process dies.
                super::status::record(dir, &out)?;
            }
        }
        ids.insert(&j.stage, (id, mine));
    }
    Ok(out)
}

/// Queue states in which a job may still run.
fn active(state: &str) -> bool {
    matches!(
        state,
        "PENDING"
            | "CONFIGURING"
            | "RUNNING"
            | "COMPLETING"
            | "SUSPENDED"
            | "REQUEUED"
            | "RESIZING"
            | "STAGE_OUT"
            | "SIGNALING"
    )
}

/// What became of a job: None while it may still run, else Ok or why it failed. The status file is read
/// after the queue state, and the job writes it before it ends, so a job gone from the queue has one
/// unless it was killed or cancelled.
fn outcome(state: Option<&str>, status: Option<&str>) -> Option<Result<(), String>> {
    match (status.map(str::trim), state) {
        (Some("0"), _) => Some(Ok(())),
        (Some(rc), _) => Some(Err(format!("exit status {rc}"))),
        (None, Some(s)) if active(s) => None,
        (None, Some(s)) => Some(Err(format!(
            "state {s}, no exit status written (killed, cancelled or over its time limit)"
        ))),
        (None, None) => Some(Err(
            "left the queue without writing an exit status (killed or cancelled)".into(),
        )),
    }
}

/// Waits until every job has ended. The first failure (in graph order) cancels the jobs still queued or
/// running and is returned naming the stage, the job and its log.
pub fn wait(
    submitted: &[Submitted],
    sched: &mut dyn Scheduler,
    poll: Duration,
) -> Result<(), SlurmError> {
    let mut open: Vec<&Submitted> = submitted.iter().collect();
    while !open.is_empty() {
        let ids: Vec<String> = open.iter().map(|s| s.job.clone()).collect();
        let states = sched.states(&ids)?;
        let mut still = Vec::new();
        for s in open {
            let status = std::fs::read_to_string(&s.status_file).ok();
            match outcome(states.get(&s.job).map(String::as_str), status.as_deref()) {
                None => still.push(s),
                Some(Ok(())) => eprintln!(
                    "[slurm] {}{}: job {} done",
                    s.stage,
                    seed_note(s.seed),
                    s.job
                ),
                Some(Err(why)) => {
                    let rest: Vec<String> = ids.iter().filter(|i| **i != s.job).cloned().collect();
                    if let Err(e) = sched.cancel(&rest) {
                        eprintln!("[slurm] cancelling jobs {}: {e}", rest.join(", "));
                    }
                    return Err(SlurmError::JobFailed {
                        stage: s.stage.clone(),
                        seed: s.seed,
                        job: s.job.clone(),
                        why,
                        log: s.log.clone(),
                    });
                }
            }
        }
        open = still;
        if !open.is_empty() {
            std::thread::sleep(poll);
        }
    }
    Ok(())
}

/// Where a suite's job scripts, logs and exit statuses go: `<runs-dir>/<suite>/slurm/`.
pub fn job_dir(opts: &RunOptions, suite: &GraphSuite) -> PathBuf {
    opts.runs_dir.join(&suite.name).join("slurm")
}

/// The run seed and the run's seeds (run seed first), as [`graph_run::run_graph`] computes them: `--seeds
/// N` and, unless `--no-claims`, the seeds the golden's claims add.
pub fn run_seeds(
    suite: &GraphSuite,
    registry: &Registry,
    opts: &RunOptions,
    gopts: &GraphOptions,
) -> Result<(u64, Vec<u64>), SlurmError> {
    let run_seed = suite
        .order
        .first()
        .map(|n| graph_run::stage_seed(&suite.stages[n], gopts.seed))
        .unwrap_or(0);
    let golden_path = opts
        .golden
        .clone()
        .or_else(|| suite.golden.clone())
        .filter(|_| !opts.skip_golden);
    let golden = match golden_path {
        Some(p) if opts.claims => {
            Some(graph_run::read_golden(suite, registry, &p).map_err(Box::new)?)
        }
        _ => None,
    };
    Ok((
        run_seed,
        graph_run::run_seeds(run_seed, gopts.seeds, golden.as_ref()),
    ))
}

/// One stage in the pass of one seed: its fingerprint and what a run would do, or why it cannot run.
type SeedStage = (String, Option<String>, Result<Action, String>);

/// Every stage in the pass of `seed`: the run seed's from [`plan_graph`]; another seed's with its own
/// datasets and every stage at that seed (the local runner's pass of that seed).
fn seed_stages(
    suite: &GraphSuite,
    registry: &Registry,
    opts: &RunOptions,
    gopts: &GraphOptions,
    seed: u64,
    run_seed: u64,
) -> Result<Vec<SeedStage>, SlurmError> {
    if seed == run_seed {
        let plan = plan_graph(suite, registry, opts, gopts).map_err(Box::new)?;
        return Ok(plan
            .stages
            .into_iter()
            .map(|sp| {
                let action = match (sp.blocked, sp.action) {
                    (Some(why), _) => Err(why),
                    (None, Some(a)) => Ok(a),
                    (None, None) => Err("no fingerprint".into()),
                };
                (sp.stage, sp.fingerprint, action)
            })
            .collect());
    }
    let datasets = match graph_run::resolve_datasets(suite, &gopts.data_dir, seed) {
        Ok(d) => d,
        Err(e) => {
            let why = e.to_string();
            return Ok(suite
                .order
                .iter()
                .map(|n| (n.clone(), None, Err(why.clone())))
                .collect());
        }
    };
    let dataset_fps = datasets
        .iter()
        .map(|(k, h)| (k.clone(), h.fingerprint.clone()))
        .collect();
    let fps = graph_run::fingerprints(
        suite,
        registry,
        &dataset_fps,
        &gopts.data_dir,
        Some(seed),
        opts.device,
    );
    let refresh =
        graph_run::refresh_set(suite, opts.refresh, &opts.refresh_stages).map_err(Box::new)?;
    let cache = StageCache::read_only(&opts.runs_dir.join(&suite.name));
    Ok(suite
        .order
        .iter()
        .map(|name| {
            let kind = graph_run::stage_kind(registry, &suite.stages[name]);
            let fp = fps.get(name).cloned().flatten();
            let action: Result<Action, String> = match (&fp, kind) {
                (Some(fp), Some(k)) => {
                    let published = cache
                        .lookup(name, fp)
                        .is_some_and(|p| StageCache::verify(&p, k.outputs()).is_ok());
                    Ok(match (published, refresh.contains(name)) {
                        (true, true) => Action::Refresh,
                        (true, false) => Action::Cached,
                        (false, _) => Action::Run,
                    })
                }
                _ => Err(
                    "no fingerprint (a dataset or a stage it reads from did not resolve)".into(),
                ),
            };
            (name.clone(), fp, action)
        })
        .collect())
}

/// Submits every stage of `suite` that is not published (or is refreshed) as a job, or with several
/// seeds as a job array with one task per seed that needs it, waits for all of them, and checks each one
/// published its stage. The caller then runs the suite locally (without refresh) to collect results from
/// the cache. Takes no lock: each job takes the build lock of the stage it builds.
pub fn dispatch(
    suite: &GraphSuite,
    registry: &Registry,
    opts: &RunOptions,
    gopts: &GraphOptions,
    sopts: &SlurmOptions,
    sched: &mut dyn Scheduler,
) -> Result<Dispatch, SlurmError> {
    let (run_seed, seeds) = run_seeds(suite, registry, opts, gopts)?;
    let several = seeds.len() > 1;
    let passes = seeds
        .iter()
        .map(|&s| seed_stages(suite, registry, opts, gopts, s, run_seed))
        .collect::<Result<Vec<_>, _>>()?;
    let mut jobs = Vec::new();
    let mut cached = Vec::new();
    for (si, name) in suite.order.iter().enumerate() {
        let st = &suite.stages[name];
        let mut tasks: Vec<SeedTask> = Vec::new();
        let mut to_build: BTreeSet<String> = BTreeSet::new();
        let mut fingerprints: BTreeSet<String> = BTreeSet::new();
        let mut refresh = false;
        for (i, pass) in passes.iter().enumerate() {
            let (_, fp, action) = &pass[si];
            let action = action.clone().map_err(|why| SlurmError::Blocked {
                path: suite.path.clone(),
                stage: name.clone(),
                why: if several {
                    format!("{why} (seed {})", seeds[i])
                } else {
                    why
                },
            })?;
            let fp = fp.clone().unwrap_or_default();
            fingerprints.insert(fp.clone());
            if action == Action::Cached {
                cached.push(if several {
                    format!("{name} (seed {})", seeds[i])
                } else {
                    name.clone()
                });
                continue;
            }
            // Two seeds at one fingerprint: one build serves both.
            if to_build.insert(fp) {
                refresh |= action == Action::Refresh;
                tasks.push(SeedTask {
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                    seed: seeds[i],
                });
            }
        }
        let Some(first) = tasks.first().copied() else {
            continue;
        };
        let seeds_arg = match (several, fingerprints.len() > 1) {
            (false, _) => SeedArg::Run,
            (true, false) => SeedArg::Fixed(first.seed),
            (true, true) => SeedArg::Array(tasks),
        };
        jobs.push(PlannedJob {
            stage: name.clone(),
            reads: st
                .inputs
                .values()
                .filter_map(|r| match r {
                    InputRef::Stage { stage, .. } => Some(stage.clone()),
                    InputRef::Dataset(_) => None,
                })
                .collect(),
            resources: st.resources.clone(),
            refresh,
            seeds: seeds_arg,
        });
    }
    let dir = job_dir(opts, suite);
    let submitted = submit_jobs(&jobs, &dir, &suite.name, sopts, sched)?;
    eprintln!(
        "[slurm] {} job(s) ({} task(s)) submitted, {} stage(s) cached",
        jobs.len(),
        submitted.len(),
        cached.len()
    );
    wait(&submitted, sched, sopts.poll)?;
    // A job that exited 0 without publishing would otherwise be built by the local pass, silently.
    let plain = without_refresh(opts);
    let mut after: BTreeMap<u64, Vec<SeedStage>> = BTreeMap::new();
    for s in &submitted {
        let seed = s.seed.unwrap_or(run_seed);
        if let std::collections::btree_map::Entry::Vacant(e) = after.entry(seed) {
            e.insert(seed_stages(suite, registry, &plain, gopts, seed, run_seed)?);
        }
        let published = after[&seed]
            .iter()
            .any(|(stage, _, a)| *stage == s.stage && matches!(a, Ok(Action::Cached)));
        if !published {
            return Err(SlurmError::NotPublished {
                stage: s.stage.clone(),
                seed: s.seed,
                job: s.job.clone(),
                dir: opts.runs_dir.join(&suite.name),
                log: s.log.clone(),
            });
        }
    }
    Ok(Dispatch {
        submitted,
        jobs: jobs.len(),
        cached,
    })
}

/// `opts` without `--refresh`/`--refresh-stage`: the local pass after a dispatch reuses what the jobs built.
pub fn without_refresh(opts: &RunOptions) -> RunOptions {
    RunOptions {
        refresh: false,
        refresh_stages: Vec::new(),
        ..opts.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One job or array task of the fake queue.
    struct FakeTask {
        stage: String,
        /// The job id (of the array for a task).
        id: String,
        index: Option<u32>,
        after_ok: Vec<String>,
        after_corr: Vec<String>,
        prefix: PathBuf,
    }

    /// Runs a job or array task as soon as its dependencies completed, with a scripted exit status: `fail`
    /// names a stage (all its tasks fail) or `STAGE_INDEX` (that task fails).
    struct Fake {
        next: u32,
        /// `ID` or `ID_INDEX` → the task.
        jobs: BTreeMap<String, FakeTask>,
        fail: Option<&'static str>,
        done: BTreeMap<String, String>,
        cancelled: Vec<String>,
        submitted: Vec<Job>,
    }

    impl Fake {
        fn new(fail: Option<&'static str>) -> Fake {
            Fake {
                next: 100,
                jobs: BTreeMap::new(),
                fail,
                done: BTreeMap::new(),
                cancelled: Vec::new(),
                submitted: Vec::new(),
            }
        }

        fn completed(&self, id: &str) -> bool {
            self.done.get(id).is_some_and(|s| s == "COMPLETED")
        }

        fn ready(&self, t: &FakeTask) -> bool {
            t.after_ok.iter().all(|d| {
                self.jobs
                    .iter()
                    .filter(|(_, u)| u.id == *d)
                    .all(|(tid, _)| self.completed(tid))
            }) && t.after_corr.iter().all(|d| {
                let i = t.index.expect("aftercorr on a plain job");
                self.completed(&format!("{d}_{i}"))
            })
        }
    }

    impl Scheduler for Fake {
        fn submit(&mut self, job: &Job) -> Result<String, SlurmError> {
            self.next += 1;
            let id = self.next.to_string();
            let stage = job.name.rsplit('-').next().unwrap_or_default().to_string();
            let prefix = job.script.with_file_name(format!("{stage}-"));
            let indices: Vec<Option<u32>> = match &job.array {
                Some(spec) => spec.split(',').map(|i| Some(i.parse().unwrap())).collect(),
                None => vec![None],
            };
            for index in indices {
                let tid = index.map(|i| format!("{id}_{i}")).unwrap_or(id.clone());
                let task = FakeTask {
                    stage: stage.clone(),
                    id: id.clone(),
                    index,
                    after_ok: job.after_ok.clone(),
                    after_corr: job.after_corr.clone(),
                    prefix: prefix.clone(),
                };
                self.jobs.insert(tid, task);
            }
            self.submitted.push(job.clone());
            Ok(id)
        }
        fn states(&mut self, ids: &[String]) -> Result<BTreeMap<String, String>, SlurmError> {
            // One task per look: the first whose dependencies completed runs to its end.
            let ready = self.jobs.iter().find(|(tid, t)| {
                !self.done.contains_key(*tid) && !self.cancelled.contains(*tid) && self.ready(t)
            });
            if let Some((tid, t)) = ready {
                let tid = tid.clone();
                let failed = self.fail == Some(t.stage.as_str())
                    || t.index
                        .is_some_and(|i| self.fail == Some(format!("{}_{i}", t.stage).as_str()));
                let rc = if failed { "3" } else { "0" };
                std::fs::write(format!("{}{tid}.rc", t.prefix.display()), rc).unwrap();
                let state = if failed { "FAILED" } else { "COMPLETED" };
                self.done.insert(tid, state.into());
            }
            Ok(ids
                .iter()
                .map(|id| {
                    let s = self.done.get(id).cloned().unwrap_or("PENDING".into());
                    (id.clone(), s)
                })
                .collect())
        }
        fn cancel(&mut self, ids: &[String]) -> Result<(), SlurmError> {
            self.cancelled.extend(ids.iter().cloned());
            Ok(())
        }
    }

    fn planned(stage: &str, reads: &[&str]) -> PlannedJob {
        PlannedJob {
            stage: stage.into(),
            reads: reads.iter().map(|s| s.to_string()).collect(),
            resources: StageResources::default(),
            refresh: false,
            seeds: SeedArg::Run,
        }
    }

    fn arrayed(stage: &str, reads: &[&str], tasks: &[(u32, u64)]) -> PlannedJob {
        PlannedJob {
            seeds: SeedArg::Array(
                tasks
                    .iter()
                    .map(|&(index, seed)| SeedTask { index, seed })
                    .collect(),
            ),
            ..planned(stage, reads)
        }
    }

    fn sopts(dir: &Path) -> SlurmOptions {
        SlurmOptions {
            partition: Some("debug".into()),
            poll: Duration::from_millis(1),
            command: vec![
                "/bin/contracam".into(),
                "suite".into(),
                "run".into(),
                "s.toml".into(),
            ],
            chdir: dir.into(),
        }
    }

    fn chain() -> Vec<PlannedJob> {
        vec![
            planned("a", &[]),
            planned("b", &["a"]),
            planned("c", &["a", "b", "z"]),
        ]
    }

    #[test]
    fn jobs_depend_on_the_submitted_jobs_of_their_inputs_and_all_complete() {
        let tmp = tempfile::tempdir().unwrap();
        let mut fake = Fake::new(None);
        let sub = submit_jobs(&chain(), tmp.path(), "s", &sopts(tmp.path()), &mut fake).unwrap();
        let deps: Vec<Vec<String>> = fake.submitted.iter().map(|j| j.after_ok.clone()).collect();
        // 'z' is not submitted (cached): no dependency on it.
        assert_eq!(
            deps,
            vec![
                vec![],
                vec!["101".to_string()],
                vec!["101".into(), "102".into()]
            ]
        );
        assert_eq!(sub[2].log, tmp.path().join("c-103.log"));
        wait(&sub, &mut fake, Duration::from_millis(1)).unwrap();
        assert_eq!(fake.done.len(), 3);
        assert!(fake.cancelled.is_empty());
    }

    #[test]
    fn a_failed_job_names_stage_job_and_log_and_cancels_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let mut fake = Fake::new(Some("b"));
        let sub = submit_jobs(&chain(), tmp.path(), "s", &sopts(tmp.path()), &mut fake).unwrap();
        let err = wait(&sub, &mut fake, Duration::from_millis(1)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("stage 'b'"), "{msg}");
        assert!(msg.contains("job 102"), "{msg}");
        assert!(msg.contains("exit status 3"), "{msg}");
        assert!(
            msg.contains(&tmp.path().join("b-102.log").display().to_string()),
            "{msg}"
        );
        assert_eq!(fake.cancelled, vec!["103".to_string()]);
    }

    /// Seeds 5, 6, 7 at indices 0, 1, 2: `a` runs at all, `b` at all (task by task after `a`), `c` at
    /// seed 6 only (its seed-5 and seed-7 stages are published), `d` has one fingerprint for all seeds,
    /// `e` reads `c` at every seed (not all of which `c` has).
    fn seeded() -> Vec<PlannedJob> {
        vec![
            arrayed("a", &[], &[(0, 5), (1, 6), (2, 7)]),
            arrayed("b", &["a"], &[(0, 5), (1, 6), (2, 7)]),
            arrayed("c", &["b"], &[(1, 6)]),
            PlannedJob {
                seeds: SeedArg::Fixed(5),
                ..planned("d", &["a"])
            },
            arrayed("e", &["c", "d"], &[(0, 5), (1, 6), (2, 7)]),
        ]
    }

    #[test]
    fn seeds_are_array_tasks_that_wait_task_by_task_where_the_upstream_has_them() {
        let tmp = tempfile::tempdir().unwrap();
        let mut fake = Fake::new(None);
        let sub = submit_jobs(&seeded(), tmp.path(), "s", &sopts(tmp.path()), &mut fake).unwrap();
        let got: Vec<(Option<String>, Vec<String>, Vec<String>)> = fake
            .submitted
            .iter()
            .map(|j| (j.array.clone(), j.after_ok.clone(), j.after_corr.clone()))
            .collect();
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            got,
            vec![
                (Some("0,1,2".into()), v(&[]), v(&[])),
                (Some("0,1,2".into()), v(&[]), v(&["101"])),
                (Some("1".into()), v(&[]), v(&["102"])),
                (None, v(&["101"]), v(&[])),
                (Some("0,1,2".into()), v(&["103", "104"]), v(&[])),
            ]
        );
        assert_eq!(fake.submitted[0].log, tmp.path().join("a-%A_%a.log"));
        let a = sbatch_args(&fake.submitted[4]);
        assert!(a.contains(&"--array=0,1,2".to_string()), "{a:?}");
        assert!(
            a.contains(&"--dependency=afterok:103:104".to_string()),
            "{a:?}"
        );
        let b = sbatch_args(&fake.submitted[1]);
        assert!(
            b.contains(&"--dependency=aftercorr:101".to_string()),
            "{b:?}"
        );
        // One record per task, named ID_INDEX, with its seed.
        let tasks: Vec<(String, Option<u64>, String)> = sub
            .iter()
            .map(|s| (s.stage.clone(), s.seed, s.job.clone()))
            .collect();
        assert_eq!(tasks.len(), 3 + 3 + 1 + 1 + 3);
        assert_eq!(tasks[2], ("a".into(), Some(7), "101_2".into()));
        assert_eq!(tasks[6], ("c".into(), Some(6), "103_1".into()));
        assert_eq!(tasks[7], ("d".into(), Some(5), "104".into()));
        assert_eq!(sub[6].log, tmp.path().join("c-103_1.log"));
        assert_eq!(sub[6].status_file, tmp.path().join("c-103_1.rc"));
        let script = std::fs::read_to_string(tmp.path().join("b.sh")).unwrap();
        for want in [
            "0) seed=5 ;;\n1) seed=6 ;;\n2) seed=7 ;;\n",
            "--only 'b' --only-seed \"$seed\"",
            "'\"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\".rc",
        ] {
            assert!(script.contains(want), "{want} not in {script}");
        }
        let d = std::fs::read_to_string(tmp.path().join("d.sh")).unwrap();
        assert!(d.contains("--only 'd' --only-seed 5\n"), "{d}");
        wait(&sub, &mut fake, Duration::from_millis(1)).unwrap();
        assert_eq!(fake.done.len(), 11);
    }

    #[test]
    fn a_failed_array_task_names_stage_seed_task_and_log() {
        let tmp = tempfile::tempdir().unwrap();
        let mut fake = Fake::new(Some("b_1"));
        let sub = submit_jobs(&seeded(), tmp.path(), "s", &sopts(tmp.path()), &mut fake).unwrap();
        let msg = wait(&sub, &mut fake, Duration::from_millis(1))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("stage 'b' (seed 6): Slurm job 102_1 failed"),
            "{msg}"
        );
        assert!(
            msg.contains(&tmp.path().join("b-102_1.log").display().to_string()),
            "{msg}"
        );
        assert!(
            fake.cancelled.contains(&"103_1".to_string()),
            "{:?}",
            fake.cancelled
        );
    }

    #[test]
    fn a_job_gone_from_the_queue_without_status_failed() {
        assert_eq!(outcome(Some("RUNNING"), None), None);
        assert_eq!(outcome(None, Some("0\n")), Some(Ok(())));
        assert!(outcome(None, None).is_some_and(|r| r.is_err()));
        assert!(
            outcome(Some("TIMEOUT"), None).is_some_and(|r| r.is_err_and(|e| e.contains("TIMEOUT")))
        );
        assert!(outcome(Some("COMPLETED"), Some("1")).is_some_and(|r| r.is_err()));
    }

    #[test]
    fn sbatch_arguments_carry_resources_dependencies_and_partition() {
        let job = Job {
            name: "contracam-s-b".into(),
            script: "/r/b.sh".into(),
            log: "/r/b-%j.log".into(),
            chdir: "/w".into(),
            partition: Some("gpu".into()),
            resources: StageResources {
                gpus: 2,
                ..StageResources::default()
            },
            after_ok: vec!["7".into(), "9".into()],
            after_corr: Vec::new(),
            array: None,
        };
        let a = sbatch_args(&job);
        for want in [
            "--output=/r/b-%j.log",
            "--chdir=/w",
            "--cpus-per-task=1",
            "--mem=2048M",
            "--time=60",
            "--gres=gpu:2",
            "--partition=gpu",
            "--dependency=afterok:7:9",
            "--kill-on-invalid-dep=yes",
        ] {
            assert!(a.iter().any(|x| x == want), "{want} not in {a:?}");
        }
        assert_eq!(parse_job_id("42;cluster\n").unwrap(), "42");
        assert!(parse_job_id("sbatch: error").is_err());
        let q = parse_squeue("5|RUNNING\n6|COMPLETED\n");
        assert_eq!(q["6"], "COMPLETED");
    }

    #[test]
    fn the_script_quotes_arguments_and_writes_the_exit_status() {
        let s = job_script(
            &["/x y/contracam".into(), "it's".into()],
            "b",
            true,
            Path::new("/r/b-"),
            1,
            &SeedArg::Run,
        );
        assert!(
            s.contains("'/x y/contracam' 'it'\\''s' --only 'b' --refresh-stage 'b'"),
            "{s}"
        );
        assert!(
            s.contains("echo \"$rc\" > '/r/b-'\"$SLURM_JOB_ID\".rc"),
            "{s}"
        );
        assert!(!s.contains("srun"), "{s}");
        let s = job_script(
            &["contracam".into()],
            "b",
            false,
            Path::new("/r/b-"),
            2,
            &SeedArg::Run,
        );
        assert!(
            s.contains("\nsrun --ntasks=2 --kill-on-bad-exit=1 'contracam' --only 'b'\n"),
            "{s}"
        );
    }

    #[test]
    fn tasks_default_to_one_per_gpu() {
        let r = |gpus, tasks: Option<u32>| StageResources {
            gpus,
            tasks: tasks.and_then(std::num::NonZeroU32::new),
            ..StageResources::default()
        };
        assert_eq!(r(0, None).ntasks(), 1);
        assert_eq!(r(4, None).ntasks(), 4);
        assert_eq!(r(0, Some(2)).ntasks(), 2);
        let job = Job {
            name: "n".into(),
            script: "/s".into(),
            log: "/l".into(),
            chdir: "/".into(),
            partition: None,
            resources: r(0, Some(3)),
            after_ok: Vec::new(),
            after_corr: Vec::new(),
            array: None,
        };
        assert!(sbatch_args(&job).contains(&"--ntasks=3".to_string()));
    }
}
