//! `suite status`: where each stage's latest Slurm job is (with several seeds: each stage's latest job or
//! array task per seed). The executor appends every job and array task it submits to
//! `<runs-dir>/<suite>/slurm/jobs.jsonl` (stage, seed, job id, log, status file); the state comes from the exit
//! status the job script wrote (done or failed), else from the queue (`squeue`: pending or running), else
//! from accounting (`sacct`, where the cluster keeps it), else the job left without a status (failed).
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::slurm::{Scheduler, SlurmError, Submitted};

/// The record of submitted jobs, one JSON object per line, oldest first.
pub const JOBS_FILE: &str = "jobs.jsonl";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    stage: String,
    /// Records of runs of one seed (and of older versions) have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    job: String,
    log: PathBuf,
    status_file: PathBuf,
}

/// Appends the last of `submitted` to `dir`'s record.
pub fn record(dir: &Path, submitted: &[Submitted]) -> Result<(), SlurmError> {
    let Some(s) = submitted.last() else {
        return Ok(());
    };
    let path = dir.join(JOBS_FILE);
    let line = serde_json::to_string(&Record {
        stage: s.stage.clone(),
        seed: s.seed,
        job: s.job.clone(),
        log: s.log.clone(),
        status_file: s.status_file.clone(),
    })
    .map_err(|e| io(&path, e.to_string()))?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| io(&path, e.to_string()))?;
    writeln!(f, "{line}").map_err(|e| io(&path, e.to_string()))
}

fn io(path: &Path, msg: String) -> SlurmError {
    SlurmError::Io {
        path: path.into(),
        msg,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Running,
    Done,
    Failed,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Done => "done",
            State::Failed => "failed",
        }
    }
}

/// One stage's latest job (or array task, per seed).
#[derive(Debug, Clone, Serialize)]
pub struct StageStatus {
    pub stage: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    pub state: State,
    pub job: String,
    /// What the state was read from: `exit status N`, the queue's or accounting's state.
    pub detail: String,
    pub log: PathBuf,
}

/// The scheduler's state names → ours; None for a state in which the job has ended.
fn queue_state(s: &str) -> Option<State> {
    match s {
        "PENDING" | "CONFIGURING" | "REQUEUED" | "RESIZING" | "SUSPENDED" => Some(State::Pending),
        "RUNNING" | "COMPLETING" | "STAGE_OUT" | "SIGNALING" => Some(State::Running),
        _ => None,
    }
}

/// The status of the latest job of each stage (and seed) recorded under `dir`, in `order`, seeds ascending
/// (stages without a job are left out; recorded stages not in `order` follow). An empty list when nothing
/// was submitted.
pub fn status(
    dir: &Path,
    order: &[String],
    sched: &mut dyn Scheduler,
) -> Result<Vec<StageStatus>, SlurmError> {
    let path = dir.join(JOBS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(&path, e.to_string())),
    };
    let mut latest: BTreeMap<(String, Option<u64>), Record> = BTreeMap::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let r: Record =
            serde_json::from_str(line).map_err(|e| io(&path, format!("line {}: {e}", i + 1)))?;
        latest.insert((r.stage.clone(), r.seed), r);
    }
    let mut stages: Vec<&(String, Option<u64>)> = order
        .iter()
        .flat_map(|o| latest.keys().filter(move |(s, _)| s == o))
        .collect();
    stages.extend(latest.keys().filter(|(s, _)| !order.contains(s)));
    let ids: Vec<String> = stages.iter().map(|s| latest[*s].job.clone()).collect();
    let queue = sched.states(&ids)?;
    // Accounting only for what the queue no longer lists; a cluster without it gives none.
    let gone: Vec<String> = ids
        .iter()
        .filter(|i| !queue.contains_key(*i))
        .cloned()
        .collect();
    let accounting = if gone.is_empty() {
        BTreeMap::new()
    } else {
        sched.accounting(&gone).unwrap_or_default()
    };
    Ok(stages
        .into_iter()
        .map(|stage| {
            let r = &latest[stage];
            let rc = std::fs::read_to_string(&r.status_file).ok();
            let listed = queue.get(&r.job).or_else(|| accounting.get(&r.job));
            let (state, detail) = match (rc.as_deref().map(str::trim), listed) {
                (Some("0"), _) => (State::Done, "exit status 0".to_string()),
                (Some(rc), _) => (State::Failed, format!("exit status {rc}")),
                (None, Some(s)) => match queue_state(s) {
                    Some(st) => (st, s.clone()),
                    None => (State::Failed, format!("{s}, no exit status written")),
                },
                (None, None) => (
                    State::Failed,
                    "left the queue without an exit status".to_string(),
                ),
            };
            StageStatus {
                stage: stage.0.clone(),
                seed: stage.1,
                state,
                job: r.job.clone(),
                detail,
                log: r.log.clone(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::executor::slurm::Job;

    /// A queue that lists what it was told to, and accounting for the rest.
    struct Queue {
        listed: BTreeMap<String, String>,
        accounted: BTreeMap<String, String>,
    }

    impl Scheduler for Queue {
        fn submit(&mut self, _job: &Job) -> Result<String, SlurmError> {
            unreachable!("status submits nothing")
        }
        fn states(&mut self, ids: &[String]) -> Result<BTreeMap<String, String>, SlurmError> {
            Ok(ids
                .iter()
                .filter_map(|i| self.listed.get(i).map(|s| (i.clone(), s.clone())))
                .collect())
        }
        fn accounting(&mut self, ids: &[String]) -> Result<BTreeMap<String, String>, SlurmError> {
            Ok(ids
                .iter()
                .filter_map(|i| self.accounted.get(i).map(|s| (i.clone(), s.clone())))
                .collect())
        }
        fn cancel(&mut self, _ids: &[String]) -> Result<(), SlurmError> {
            unreachable!("status cancels nothing")
        }
    }

    fn sub(dir: &Path, stage: &str, job: &str) -> Submitted {
        Submitted {
            stage: stage.into(),
            seed: None,
            job: job.into(),
            log: dir.join(format!("{stage}-{job}.log")),
            status_file: dir.join(format!("{stage}-{job}.rc")),
        }
    }

    #[test]
    fn states_come_from_exit_status_queue_and_accounting() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let order: Vec<String> = ["a", "b", "c", "d", "e", "f"].map(String::from).to_vec();
        assert!(status(
            d,
            &order,
            &mut Queue {
                listed: BTreeMap::new(),
                accounted: BTreeMap::new()
            }
        )
        .unwrap()
        .is_empty());
        let mut all = Vec::new();
        // a ran twice: its latest job counts. f was never submitted.
        for (stage, job) in [
            ("a", "1"),
            ("b", "2"),
            ("c", "3"),
            ("d", "4"),
            ("e", "5"),
            ("a", "6"),
        ] {
            all.push(sub(d, stage, job));
            record(d, &all).unwrap();
        }
        std::fs::write(d.join("a-1.rc"), "1\n").unwrap();
        std::fs::write(d.join("a-6.rc"), "0\n").unwrap();
        std::fs::write(d.join("b-2.rc"), "2\n").unwrap();
        let mut q = Queue {
            listed: BTreeMap::from([
                ("3".to_string(), "RUNNING".to_string()),
                ("4".to_string(), "PENDING".to_string()),
            ]),
            accounted: BTreeMap::new(),
        };
        let s = status(d, &order, &mut q).unwrap();
        let got: Vec<(&str, State, &str)> = s
            .iter()
            .map(|x| (x.stage.as_str(), x.state, x.job.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("a", State::Done, "6"),
                ("b", State::Failed, "2"),
                ("c", State::Running, "3"),
                ("d", State::Pending, "4"),
                ("e", State::Failed, "5"),
            ]
        );
        assert_eq!(s[1].detail, "exit status 2");
        assert!(
            s[4].detail.contains("without an exit status"),
            "{}",
            s[4].detail
        );
        assert_eq!(s[2].log, d.join("c-3.log"));
        // Array tasks: one line per seed, the latest task of each.
        for (job, seed) in [("7_0", 0), ("7_1", 1), ("8_1", 1)] {
            all.push(Submitted {
                seed: Some(seed),
                ..sub(d, "f", job)
            });
            record(d, &all).unwrap();
        }
        std::fs::write(d.join("f-7_0.rc"), "0\n").unwrap();
        q.listed.insert("8_1".into(), "RUNNING".into());
        let s = status(d, &order, &mut q).unwrap();
        let f: Vec<(Option<u64>, State, &str)> = s
            .iter()
            .filter(|x| x.stage == "f")
            .map(|x| (x.seed, x.state, x.job.as_str()))
            .collect();
        assert_eq!(
            f,
            [
                (Some(0), State::Done, "7_0"),
                (Some(1), State::Running, "8_1")
            ]
        );
        assert!(s[..5].iter().all(|x| x.seed.is_none()));
        // Accounting names the end state of a job the queue forgot.
        q.accounted.insert("5".into(), "TIMEOUT".into());
        let s = status(d, &order, &mut q).unwrap();
        assert_eq!(s[4].state, State::Failed);
        assert!(s[4].detail.contains("TIMEOUT"), "{}", s[4].detail);
    }
}
