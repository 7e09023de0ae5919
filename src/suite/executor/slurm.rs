//! The Slurm executor of graph suites. Every stage that is not published at its fingerprint (the same
//! fingerprints as the local runner, from [`plan_graph`]) becomes one `sbatch` job that runs
//! `contracam suite run SUITE --only STAGE ...` with `--dependency=afterok:` on the jobs of the stages it
//! reads from and the stage's `[stages.X.resources]`. Jobs write their logs and exit status to
//! `<runs-dir>/<suite>/slurm/`; this process waits on `squeue` and those status files, then the caller runs
//! the suite locally, where every stage is cached.
//!
//! The exit status comes from a file the job script writes, not from `sacct`: a cluster without accounting
//! storage (like the single-node one of `scripts/slurm-local.sh`) has no `sacct`. The scheduler sits behind
//! [`Scheduler`] so tests can drive the submit/wait logic with a fake one.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::suite::graph::{GraphSuite, InputRef, StageResources};
use crate::suite::graph_run::GraphOptions;
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
    #[error("stage '{stage}': Slurm job {job} failed ({why}); its log is {}", .log.display())]
    JobFailed {
        stage: String,
        job: String,
        why: String,
        log: PathBuf,
    },
    #[error("stage '{stage}': Slurm job {job} completed but the stage is not published under {}; its log is {}", .dir.display(), .log.display())]
    NotPublished {
        stage: String,
        job: String,
        dir: PathBuf,
        log: PathBuf,
    },
    #[error(transparent)]
    Plan(#[from] Box<SuiteError>),
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
    /// Job ids that must complete successfully first.
    pub after_ok: Vec<String>,
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
    if !job.after_ok.is_empty() {
        args.push(format!("--dependency=afterok:{}", job.after_ok.join(":")));
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
        // finished shows COMPLETED/FAILED rather than vanishing.
        let args = ["-h", "--me", "--states=all", "-o", "%i|%T"].map(String::from);
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
}

/// A submitted job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub stage: String,
    pub job: String,
    /// The job's log file.
    pub log: PathBuf,
    /// Where the job script writes its exit status.
    pub status_file: PathBuf,
}

/// What a dispatch did.
#[derive(Debug, Clone, Default)]
pub struct Dispatch {
    /// Jobs submitted, in graph order.
    pub submitted: Vec<Submitted>,
    /// Stages already published at their fingerprints (no job).
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
pub fn job_script(
    command: &[String],
    stage: &str,
    refresh: bool,
    status_prefix: &Path,
    tasks: u32,
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
    format!(
        "#!/bin/sh\n# contracam graph stage '{stage}' (written by suite run --executor slurm)\n{}\nrc=$?\necho \"$rc\" > {}\"$SLURM_JOB_ID\".rc\nexit \"$rc\"\n",
        argv.join(" "),
        sh_quote(&status_prefix.display().to_string()),
    )
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
    let mut ids: BTreeMap<&str, String> = BTreeMap::new();
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
        );
        std::fs::write(&script, text).map_err(|e| io(&script, e))?;
        let after_ok = j
            .reads
            .iter()
            .filter_map(|r| ids.get(r.as_str()).cloned())
            .collect();
        let job = Job {
            name: format!("contracam-{suite_name}-{}", j.stage),
            script,
            log: dir.join(format!("{}-%j.log", j.stage)),
            chdir: sopts.chdir.clone(),
            partition: sopts.partition.clone(),
            resources: j.resources.clone(),
            after_ok,
        };
        let id = sched.submit(&job)?;
        eprintln!(
            "[slurm] {}: job {id}{}",
            j.stage,
            if job.after_ok.is_empty() {
                String::new()
            } else {
                format!(" after {}", job.after_ok.join(", "))
            }
        );
        out.push(Submitted {
            stage: j.stage.clone(),
            log: dir.join(format!("{}-{id}.log", j.stage)),
            status_file: dir.join(format!("{}-{id}.rc", j.stage)),
            job: id.clone(),
        });
        ids.insert(&j.stage, id);
        // Recorded as each job is submitted, so `suite status` finds every job even if this process dies.
        super::status::record(dir, &out)?;
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
                Some(Ok(())) => eprintln!("[slurm] {}: job {} done", s.stage, s.job),
                Some(Err(why)) => {
                    let rest: Vec<String> = ids.iter().filter(|i| **i != s.job).cloned().collect();
                    if let Err(e) = sched.cancel(&rest) {
                        eprintln!("[slurm] cancelling jobs {}: {e}", rest.join(", "));
                    }
                    return Err(SlurmError::JobFailed {
                        stage: s.stage.clone(),
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

/// Submits every stage of `suite` that is not published (or is refreshed) as a job, waits for all of them,
/// and checks each one published its stage. The caller then runs the suite locally (without refresh) to
/// collect results from the cache. Takes no lock: the jobs take the runs dir's lock one at a time.
pub fn dispatch(
    suite: &GraphSuite,
    registry: &Registry,
    opts: &RunOptions,
    gopts: &GraphOptions,
    sopts: &SlurmOptions,
    sched: &mut dyn Scheduler,
) -> Result<Dispatch, SlurmError> {
    let plan = plan_graph(suite, registry, opts, gopts).map_err(Box::new)?;
    let mut jobs = Vec::new();
    let mut cached = Vec::new();
    for sp in &plan.stages {
        let st = &suite.stages[&sp.stage];
        let action = match (&sp.blocked, sp.action) {
            (Some(why), _) => Err(why.clone()),
            (None, Some(a)) => Ok(a),
            (None, None) => Err("no fingerprint".into()),
        };
        let action = action.map_err(|why| SlurmError::Blocked {
            path: suite.path.clone(),
            stage: sp.stage.clone(),
            why,
        })?;
        if action == Action::Cached {
            cached.push(sp.stage.clone());
            continue;
        }
        jobs.push(PlannedJob {
            stage: sp.stage.clone(),
            reads: st
                .inputs
                .values()
                .filter_map(|r| match r {
                    InputRef::Stage { stage, .. } => Some(stage.clone()),
                    InputRef::Dataset(_) => None,
                })
                .collect(),
            resources: st.resources.clone(),
            refresh: action == Action::Refresh,
        });
    }
    let dir = job_dir(opts, suite);
    let submitted = submit_jobs(&jobs, &dir, &suite.name, sopts, sched)?;
    eprintln!(
        "[slurm] {} job(s) submitted, {} stage(s) cached",
        submitted.len(),
        cached.len()
    );
    wait(&submitted, sched, sopts.poll)?;
    // A job that exited 0 without publishing would otherwise be built by the local pass, silently.
    let after = plan_graph(suite, registry, &without_refresh(opts), gopts).map_err(Box::new)?;
    for s in &submitted {
        let published = after
            .stages
            .iter()
            .any(|p| p.stage == s.stage && p.action == Some(Action::Cached));
        if !published {
            return Err(SlurmError::NotPublished {
                stage: s.stage.clone(),
                job: s.job.clone(),
                dir: opts.runs_dir.join(&suite.name),
                log: s.log.clone(),
            });
        }
    }
    Ok(Dispatch { submitted, cached })
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

    /// Runs a job as soon as its dependencies completed, with a scripted exit status per stage.
    struct Fake {
        next: u32,
        /// id → (stage, deps, status file prefix)
        jobs: BTreeMap<String, (String, Vec<String>, PathBuf)>,
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
    }

    impl Scheduler for Fake {
        fn submit(&mut self, job: &Job) -> Result<String, SlurmError> {
            self.next += 1;
            let id = self.next.to_string();
            let stage = job.name.rsplit('-').next().unwrap_or_default().to_string();
            let prefix = job.script.with_file_name(format!("{stage}-"));
            self.jobs
                .insert(id.clone(), (stage, job.after_ok.clone(), prefix));
            self.submitted.push(job.clone());
            Ok(id)
        }
        fn states(&mut self, ids: &[String]) -> Result<BTreeMap<String, String>, SlurmError> {
            // One job per look: the first whose dependencies completed runs to its end.
            let ready = self.jobs.iter().find(|(id, (_, deps, _))| {
                !self.done.contains_key(*id)
                    && !self.cancelled.contains(*id)
                    && deps
                        .iter()
                        .all(|d| self.done.get(d).is_some_and(|s| s == "COMPLETED"))
            });
            if let Some((id, (stage, _, prefix))) = ready {
                let failed = self.fail == Some(stage.as_str());
                let rc = if failed { "3" } else { "0" };
                std::fs::write(format!("{}{id}.rc", prefix.display()), rc).unwrap();
                let state = if failed { "FAILED" } else { "COMPLETED" };
                self.done.insert(id.clone(), state.into());
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
        let s = job_script(&["contracam".into()], "b", false, Path::new("/r/b-"), 2);
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
        };
        assert!(sbatch_args(&job).contains(&"--ntasks=3".to_string()));
    }
}
