//! One thread count for the whole process: libtorch's intra-op pool (OpenMP) and rayon's global pool, which
//! runs the Rust-side loops (CRF, MaxBoxAcc, COCO, image decoding).
//!
//! The default leaves room on a shared machine: the CPUs this process may use (its affinity mask and
//! cgroup quota, as `std::thread::available_parallelism` reads them) minus the CPUs other work keeps busy,
//! and at least 1. Other work is the smaller of the 1-minute load average (rounded to whole CPUs) and the
//! threads runnable right now besides this one (`/proc/loadavg`'s fourth field): the average alone would
//! still count a command that finished a few seconds ago, the instant count alone a compiler that happens
//! to be waiting on its disk. On a quiet 2-core machine that is 2 threads; with one other busy process, 1.
//! A libtorch pool with more threads than free cores is far slower than one with fewer: its threads wait
//! for each other at every operation, and a preempted thread holds all of them up.
use std::fmt;

/// A thread count and why it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadPlan {
    pub threads: usize,
    pub reason: String,
}

impl fmt::Display for ThreadPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.threads, self.reason)
    }
}

/// Largest accepted `--threads`; more is a typo, not a machine.
pub const MAX_THREADS: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ThreadsError {
    #[error("'{0}' is not a thread count: give one from 1 to {MAX_THREADS}, or leave --threads out for the default (the CPUs other work leaves free)")]
    OutOfRange(String),
    #[error("cannot configure the rayon thread pool: {0}")]
    Rayon(String),
}

/// Parses a `--threads` value: 1 ..= [`MAX_THREADS`].
pub fn parse_threads(s: &str) -> Result<usize, ThreadsError> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(n),
        _ => Err(ThreadsError::OutOfRange(s.to_string())),
    }
}

/// CPUs this process may run on (affinity mask and cgroup CPU quota).
pub fn available_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// What `/proc/loadavg` says about other work: the 1-minute load average and the number of threads
/// runnable now, this one included.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    pub average_1min: f64,
    pub runnable_now: usize,
}

/// [`Load`] where the OS reports it.
pub fn current_load() -> Option<Load> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

/// Parses `/proc/loadavg` ("0.52 0.58 0.59 2/467 12345").
pub fn parse_loadavg(s: &str) -> Option<Load> {
    let mut f = s.split_whitespace();
    let average_1min: f64 = f.next()?.parse().ok()?;
    let runnable_now: usize = f.nth(2)?.split('/').next()?.parse().ok()?;
    (average_1min.is_finite() && average_1min >= 0.0).then_some(Load {
        average_1min,
        runnable_now,
    })
}

/// The default for `cpus` usable CPUs under `load` (see the module docs).
pub fn default_for(cpus: usize, load: Option<Load>) -> ThreadPlan {
    let cpus = cpus.max(1);
    match load {
        Some(l) => {
            let others = (l.average_1min.round() as usize).min(l.runnable_now.saturating_sub(1));
            let threads = cpus.saturating_sub(others).max(1);
            ThreadPlan {
                threads,
                reason: format!(
                    "default: {cpus} usable CPUs, load average {:.2}, {} other threads runnable",
                    l.average_1min,
                    l.runnable_now.saturating_sub(1)
                ),
            }
        }
        None => ThreadPlan {
            threads: cpus,
            reason: format!("default: {cpus} usable CPUs, load unknown"),
        },
    }
}

/// `--threads` when given, else [`default_for`] this machine now.
pub fn plan(requested: Option<usize>) -> ThreadPlan {
    match requested {
        Some(n) => ThreadPlan {
            threads: n,
            reason: "--threads".into(),
        },
        None => default_for(available_cpus(), current_load()),
    }
}

/// Builds rayon's global pool with `threads` workers. Call once, first thing in `main`: rayon's global pool
/// can only be built before its first use. (`contracam::util::threads::configure` also sets libtorch's.)
pub fn configure_rayon(threads: usize) -> Result<(), ThreadsError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| ThreadsError::Rayon(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_leaves_the_busy_cpus_free() {
        let load = |a: f64, r: usize| {
            Some(Load {
                average_1min: a,
                runnable_now: r,
            })
        };
        assert_eq!(default_for(2, load(0.1, 1)).threads, 2);
        // one other busy process, both in the average and now
        assert_eq!(default_for(2, load(1.0, 2)).threads, 1);
        assert_eq!(default_for(2, load(17.0, 19)).threads, 1);
        // a command that just finished is still in the average but no longer runnable
        assert_eq!(default_for(2, load(1.4, 1)).threads, 2);
        // a burst of short jobs runnable now but not on average
        assert_eq!(default_for(2, load(0.2, 6)).threads, 2);
        assert_eq!(default_for(16, load(3.4, 5)).threads, 13);
        assert_eq!(default_for(8, None).threads, 8);
        assert_eq!(default_for(0, load(0.0, 1)).threads, 1);
        assert_eq!(parse_loadavg("0.52 0.58 0.59 3/467 12345\n"), load(0.52, 3));
        assert_eq!(parse_loadavg("nan 0 0 1/2 3"), None);
        assert_eq!(parse_loadavg("garbage"), None);
    }

    #[test]
    fn threads_flag_is_bounded() {
        assert_eq!(parse_threads("3").unwrap(), 3);
        for bad in ["0", "-1", "x", "", "4097"] {
            let e = parse_threads(bad).unwrap_err().to_string();
            assert!(e.contains("--threads") && e.contains("from 1 to"), "{e}");
        }
    }
}
