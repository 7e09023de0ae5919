//! Where the processes of one data-parallel run meet: the variables `torchrun` sets (RANK, WORLD_SIZE,
//! LOCAL_RANK, MASTER_ADDR, MASTER_PORT) or, inside an `srun` step, Slurm's (SLURM_PROCID,
//! SLURM_STEP_NUM_TASKS, SLURM_LOCALID, the step's node list and job id), as PyTorch Lightning's
//! `SLURMEnvironment` reads them.
use super::DistError;

/// Rank 0 hosts the TCPStore at `master_addr:master_port`; the others connect to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous {
    pub master_addr: String,
    pub master_port: u16,
    pub rank: usize,
    pub world_size: usize,
    /// Index of this process on its node: the CUDA device it drives.
    pub local_rank: usize,
    /// Which launcher's variables these came from ("torchrun" or "slurm").
    pub launcher: &'static str,
}

impl Rendezvous {
    /// From this process's environment; `None` when no launcher set one up (a single-process run).
    pub fn from_env() -> Result<Option<Self>, DistError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// As [`Rendezvous::from_env`], reading variables through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, DistError> {
        let num = |k: &str| -> Result<Option<usize>, DistError> {
            var(k)
                .map(|v| {
                    v.trim().parse::<usize>().map_err(|_| {
                        DistError::Rendezvous(format!("{k}={v:?} is not a non-negative integer"))
                    })
                })
                .transpose()
        };
        let port = |k: &str, v: &str| -> Result<u16, DistError> {
            v.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| {
                    DistError::Rendezvous(format!("{k}={v:?} is not a TCP port (1-65535)"))
                })
        };
        let (rank, world, local, launcher) =
            if let (Some(rank), Some(world)) = (num("RANK")?, num("WORLD_SIZE")?) {
                (rank, world, num("LOCAL_RANK")?.unwrap_or(0), "torchrun")
            } else if let (Some(rank), Some(world)) =
                (num("SLURM_PROCID")?, num("SLURM_STEP_NUM_TASKS")?)
            {
                // SLURM_STEP_NUM_TASKS exists only inside an srun step: a batch script that runs contracam
                // directly is one process, whatever --ntasks the job asked for.
                (rank, world, num("SLURM_LOCALID")?.unwrap_or(0), "slurm")
            } else {
                return Ok(None);
            };
        if world == 0 || rank >= world {
            return Err(DistError::Rendezvous(format!(
                "rank {rank} is not below the world size {world} ({launcher} variables)"
            )));
        }
        let master_addr = match var("MASTER_ADDR") {
            Some(a) if !a.trim().is_empty() => a.trim().to_string(),
            _ if launcher == "slurm" => {
                let list = var("SLURM_STEP_NODELIST")
                    .or_else(|| var("SLURM_JOB_NODELIST"))
                    .ok_or_else(|| {
                        DistError::Rendezvous(
                            "inside an srun step but neither MASTER_ADDR nor SLURM_STEP_NODELIST is set"
                                .into(),
                        )
                    })?;
                first_host(&list).ok_or_else(|| {
                    DistError::Rendezvous(format!(
                        "cannot read a host name from the node list {list:?}"
                    ))
                })?
            }
            _ => {
                return Err(DistError::Rendezvous(
                    "RANK and WORLD_SIZE are set but MASTER_ADDR is not (torchrun sets all three)"
                        .into(),
                ))
            }
        };
        let master_port = match var("MASTER_PORT") {
            Some(p) => port("MASTER_PORT", &p)?,
            None if launcher == "slurm" => {
                let job = var("SLURM_JOB_ID").ok_or_else(|| {
                    DistError::Rendezvous(
                        "inside an srun step but neither MASTER_PORT nor SLURM_JOB_ID is set"
                            .into(),
                    )
                })?;
                slurm_port(&job).ok_or_else(|| {
                    DistError::Rendezvous(format!("SLURM_JOB_ID={job:?} is not a job number"))
                })?
            }
            None => {
                return Err(DistError::Rendezvous(
                    "RANK and WORLD_SIZE are set but MASTER_PORT is not (torchrun sets it)".into(),
                ))
            }
        };
        Ok(Some(Self {
            master_addr,
            master_port,
            rank,
            world_size: world,
            local_rank: local,
            launcher,
        }))
    }

    /// True when the store is on this machine's loopback, where Gloo should bind too.
    pub fn is_loopback(&self) -> bool {
        self.master_addr == "localhost"
            || self
                .master_addr
                .parse::<std::net::IpAddr>()
                .map(|a| a.is_loopback())
                .unwrap_or(false)
    }
}

/// Lightning's default port for a Slurm job: 15000 + the last four digits of the job id, so concurrent
/// jobs on one node do not collide.
fn slurm_port(job_id: &str) -> Option<u16> {
    let digits: String = job_id
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    if digits.is_empty() {
        return None;
    }
    let tail = &digits[digits.len().saturating_sub(4)..];
    tail.parse::<u16>().ok().map(|n| 15000 + n)
}

/// The first host of a Slurm host list: `node[03-05,9]` → `node03`, `a1,b[2-3]` → `a1`,
/// `rack[1-2]-gpu[07-08]` → `rack1-gpu07`.
pub fn first_host(list: &str) -> Option<String> {
    let mut host = String::new();
    let mut chars = list.trim().chars();
    while let Some(c) = chars.next() {
        match c {
            ',' => break,
            '[' => {
                let mut inside = String::new();
                for d in chars.by_ref() {
                    if d == ']' {
                        break;
                    }
                    inside.push(d);
                }
                let first = inside.split(',').next()?.split('-').next()?.trim();
                if first.is_empty() || !first.chars().all(|d| d.is_ascii_digit()) {
                    return None;
                }
                host.push_str(first);
            }
            c => host.push(c),
        }
    }
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn rdv(vars: &[(&str, &str)]) -> Result<Option<Rendezvous>, DistError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Rendezvous::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn torchrun_variables() {
        let r = rdv(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "29500"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (r.rank, r.world_size, r.local_rank, r.master_port),
            (1, 4, 1, 29500)
        );
        assert_eq!(r.launcher, "torchrun");
        assert!(r.is_loopback());
    }

    #[test]
    fn srun_variables_with_derived_address_and_port() {
        let r = rdv(&[
            ("SLURM_PROCID", "3"),
            ("SLURM_STEP_NUM_TASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_STEP_NODELIST", "gpu[017-018,020]"),
            ("SLURM_JOB_ID", "1234567"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((r.rank, r.world_size, r.local_rank), (3, 8, 1));
        assert_eq!(r.master_addr, "gpu017");
        assert_eq!(r.master_port, 15000 + 4567);
        assert_eq!(r.launcher, "slurm");
        assert!(!r.is_loopback());
    }

    #[test]
    fn a_batch_script_without_srun_is_one_process() {
        let r = rdv(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_JOB_ID", "7"),
        ])
        .unwrap();
        assert!(r.is_none());
        assert!(rdv(&[]).unwrap().is_none());
    }

    #[test]
    fn bad_variables_are_named() {
        let e = rdv(&[("RANK", "x"), ("WORLD_SIZE", "2")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("RANK=\"x\""), "{e}");
        let e = rdv(&[
            ("RANK", "2"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "1"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("rank 2"), "{e}");
        let e = rdv(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("MASTER_ADDR"), "{e}");
        let e = rdv(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "0"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("MASTER_PORT"), "{e}");
    }

    #[test]
    fn first_host_of_slurm_lists() {
        assert_eq!(first_host("node1").as_deref(), Some("node1"));
        assert_eq!(first_host("node[03-05,9]").as_deref(), Some("node03"));
        assert_eq!(first_host("a1,b[2-3]").as_deref(), Some("a1"));
        assert_eq!(
            first_host("rack[1-2]-gpu[07-08]").as_deref(),
            Some("rack1-gpu07")
        );
        assert_eq!(first_host("").as_deref(), None);
        assert_eq!(first_host("n[x]").as_deref(), None);
    }
}
