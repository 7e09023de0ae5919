//! A lock file that works on a shared filesystem (NFS included): the build lock of one stage fingerprint,
//! taken by every process that may build it (whole runs, `--only` jobs, the tasks of a Slurm array), on
//! any host that mounts the runs dir.
//!
//! Protocol. The holder writes who it is (host, boot id, pid, the pid's start time, a unique token) to a
//! private file beside the lock and `link()`s it to the lock's name: the link is atomic on NFS, as on a
//! local disk, and the lock appears with its whole content. A `link()` whose reply was lost may report an
//! error although it succeeded, so the private file's link count decides (2: we hold it). While held, a
//! heartbeat thread touches the lock's mtime every `stale_after / 5`. A waiter polls; it takes a lock over
//! (with a warning naming the file) when the holder is on this host (same host name and boot id) and its
//! process is gone, or when the lock's mtime has not moved for `stale_after` as the waiter's own clock
//! measures (holders on other hosts, and unreadable lock files), or is older than `2 × stale_after` by the
//! waiter's wall clock (a lock left long ago; tolerates clock skew up to `stale_after`). A takeover happens
//! under a short-lived `<lock>.break` file (created with O_EXCL) and only if the lock still has the content
//! judged stale, so two waiters never both remove a lock and one of them a fresh one. Release removes the
//! lock only while it still carries the holder's token.
//!
//! Assumptions: NFSv3 or later (atomic link and O_EXCL create), the mtime of a file set by the server
//! (clients compare it only with itself, except for the `2 × stale_after` rule), and a `stale_after`
//! longer than any pause of a live holder's heartbeat (default 300 s, `CONTRACAM_LOCK_STALE_S`).
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

/// The environment variable that sets [`LockOptions::stale_after`] in seconds.
pub const STALE_ENV: &str = "CONTRACAM_LOCK_STALE_S";
const DEFAULT_STALE: Duration = Duration::from_secs(300);
/// A `.break` file older than this by the wall clock belongs to a process killed within its few
/// milliseconds of use.
const BREAK_STALE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
#[error("lock {path}: {msg}")]
pub struct LockError {
    pub path: PathBuf,
    pub msg: String,
}

fn err(path: &Path, msg: impl std::fmt::Display) -> LockError {
    LockError {
        path: path.into(),
        msg: msg.to_string(),
    }
}

/// Who holds a lock: what the lock file says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub host: String,
    /// `/proc/sys/kernel/random/boot_id`: the same host name after a reboot is another machine's process.
    pub boot_id: String,
    pub pid: u32,
    /// The process's start time in clock ticks since boot (`/proc/<pid>/stat`): a reused pid is not the
    /// holder.
    pub proc_start: Option<u64>,
    pub started: String,
    /// Unique per acquisition: release removes only its own lock.
    pub token: String,
}

impl Holder {
    fn describe(&self) -> String {
        format!("host {} pid {} since {}", self.host, self.pid, self.started)
    }
}

/// This machine as a lock holder names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub host: String,
    pub boot_id: String,
}

impl Identity {
    /// The host name and boot id of this machine (empty strings where they cannot be read).
    pub fn this_host() -> Identity {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let mut host = read("/proc/sys/kernel/hostname");
        if host.is_empty() {
            host = std::env::var("HOSTNAME").unwrap_or_default();
        }
        Identity {
            host,
            boot_id: read("/proc/sys/kernel/random/boot_id"),
        }
    }
}

/// How long to wait between looks and when a lock counts as stale.
#[derive(Debug, Clone)]
pub struct LockOptions {
    /// A lock of another host whose mtime has not moved for this long is taken over.
    pub stale_after: Duration,
    pub poll: Duration,
    /// Who this process says it is (tests pretend to be another host).
    pub identity: Identity,
}

impl LockOptions {
    /// The defaults, with `stale_after` from `CONTRACAM_LOCK_STALE_S` when set.
    pub fn from_env() -> Result<LockOptions, LockError> {
        Ok(LockOptions {
            stale_after: stale_after(std::env::var(STALE_ENV).ok().as_deref())?,
            poll: Duration::from_millis(200),
            identity: Identity::this_host(),
        })
    }
}

/// `CONTRACAM_LOCK_STALE_S` as a duration (the default when unset).
fn stale_after(var: Option<&str>) -> Result<Duration, LockError> {
    let Some(v) = var else {
        return Ok(DEFAULT_STALE);
    };
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            err(
                Path::new(STALE_ENV),
                format!("'{v}' is not a positive number of seconds"),
            )
        })
}

/// The start time of process `pid` in clock ticks since boot, if it runs.
fn proc_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22; the command name (field 2) may hold spaces and parentheses, so count after the last ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Whether process `pid` of this host still runs.
fn pid_alive(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 sends nothing; it only checks that the process exists.
    let r = unsafe { libc::kill(p, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether a holder on `me`'s host is gone: None when it is on another host (only its heartbeat tells).
fn dead_on_this_host(h: &Holder, me: &Identity) -> Option<bool> {
    if h.host != me.host {
        return None;
    }
    if h.boot_id != me.boot_id {
        return Some(true);
    }
    if !pid_alive(h.pid) {
        return Some(true);
    }
    Some(match (h.proc_start, proc_start(h.pid)) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    })
}

/// Whether the lock at `path` is held by a process that may still run: false when absent or when its
/// holder is a dead process of this host. (Another host's holder counts as live.)
pub fn held_by_live(path: &Path, me: &Identity) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    match serde_json::from_str::<Holder>(&text) {
        Ok(h) => dead_on_this_host(&h, me) != Some(true),
        Err(_) => true,
    }
}

/// A held lock; released (the file removed) on drop.
#[derive(Debug)]
pub struct BuildLock {
    path: PathBuf,
    token: String,
    /// The stale holder this acquisition took over, if any (for tests and logs).
    pub took_over: Option<String>,
    stop: Option<mpsc::Sender<()>>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

/// What a waiter has seen of the current lock file.
struct Seen {
    text: String,
    mtime: Option<SystemTime>,
    since: Instant,
}

impl BuildLock {
    /// Takes the lock at `path`, waiting while a live holder has it (printing once who it waits for) and
    /// taking over a stale one.
    pub fn acquire(path: &Path, opts: &LockOptions) -> Result<BuildLock, LockError> {
        let me = &opts.identity;
        let pid = std::process::id();
        // Nanoseconds and a counter: unique across the threads of one process too.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let nanos = format!("{nanos}-{n}");
        let token = format!("{}-{}-{pid}-{nanos}", me.host, me.boot_id);
        let holder = Holder {
            host: me.host.clone(),
            boot_id: me.boot_id.clone(),
            pid,
            proc_start: proc_start(pid),
            started: super::now_utc(),
            token: token.clone(),
        };
        let name = path
            .file_name()
            .ok_or_else(|| err(path, "no file name"))?
            .to_string_lossy()
            .into_owned();
        let private = path.with_file_name(format!("{name}.{}.{pid}.{nanos}", me.host));
        let mut seen: Option<Seen> = None;
        let mut waiting_said = false;
        let mut took_over = None;
        loop {
            if Self::try_link(path, &private, &holder)? {
                let mut lock = BuildLock {
                    path: path.into(),
                    token,
                    took_over,
                    stop: None,
                    heartbeat: None,
                };
                lock.start_heartbeat(opts.stale_after / 5);
                return Ok(lock);
            }
            let Ok(text) = std::fs::read_to_string(path) else {
                // Released between our link and our look: try again at once.
                continue;
            };
            let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            let parsed = serde_json::from_str::<Holder>(&text).ok();
            if seen
                .as_ref()
                .is_none_or(|s| s.text != text || s.mtime != mtime)
            {
                seen = Some(Seen {
                    text: text.clone(),
                    mtime,
                    since: Instant::now(),
                });
            }
            let s = seen.as_ref().map(|s| s.since.elapsed()).unwrap_or_default();
            let age = mtime.and_then(|m| SystemTime::now().duration_since(m).ok());
            let who = parsed
                .as_ref()
                .map(Holder::describe)
                .unwrap_or_else(|| "unreadable holder".into());
            let stale = match parsed.as_ref().and_then(|h| dead_on_this_host(h, me)) {
                Some(true) => Some(format!("{who}: that process is gone")),
                Some(false) => None,
                None if s >= opts.stale_after => {
                    Some(format!("{who}: no heartbeat for {:.0} s", s.as_secs_f64()))
                }
                None if age.is_some_and(|a| a >= opts.stale_after * 2) => Some(format!(
                    "{who}: last heartbeat {:.0} s ago",
                    age.unwrap_or_default().as_secs_f64()
                )),
                None => None,
            };
            match stale {
                Some(why) => {
                    if Self::break_stale(path, &text)? {
                        eprintln!(
                            "WARNING: taking over the stale lock {} ({why})",
                            path.display()
                        );
                        took_over = Some(why);
                        seen = None;
                    }
                }
                None => {
                    if !waiting_said {
                        eprintln!("waiting for {} (held by {who})", path.display());
                        waiting_said = true;
                    }
                    std::thread::sleep(opts.poll);
                }
            }
        }
    }

    /// One attempt: true when `private` is now linked at `path`.
    fn try_link(path: &Path, private: &Path, holder: &Holder) -> Result<bool, LockError> {
        let text = serde_json::to_string(holder).map_err(|e| err(path, e))?;
        let mut f = File::create(private).map_err(|e| err(private, e))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| err(private, e))?;
        drop(f);
        let linked = std::fs::hard_link(private, path);
        // The link count decides: an NFS link whose reply was lost reports an error yet succeeded.
        let nlink = std::fs::metadata(private).map(|m| m.nlink()).unwrap_or(0);
        let _ = std::fs::remove_file(private);
        match linked {
            Ok(()) => Ok(true),
            Err(_) if nlink == 2 => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(err(path, e)),
        }
    }

    /// Removes the lock at `path` if it still reads `judged` (the content found stale), under the
    /// `.break` file; false when another process holds the `.break` file or the lock changed.
    fn break_stale(path: &Path, judged: &str) -> Result<bool, LockError> {
        let brk = path.with_file_name(format!(
            "{}.break",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        match OpenOptions::new().write(true).create_new(true).open(&brk) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let old = std::fs::metadata(&brk)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| SystemTime::now().duration_since(m).ok())
                    .is_some_and(|a| a > BREAK_STALE);
                if old {
                    let _ = std::fs::remove_file(&brk);
                } else {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return Ok(false);
            }
            Err(e) => return Err(err(&brk, e)),
        }
        let same = std::fs::read_to_string(path).is_ok_and(|t| t == judged);
        let removed = same && std::fs::remove_file(path).is_ok();
        std::fs::remove_file(&brk).map_err(|e| err(&brk, e))?;
        Ok(removed)
    }

    fn start_heartbeat(&mut self, every: Duration) {
        let (tx, rx) = mpsc::channel::<()>();
        let path = self.path.clone();
        let every = every.max(Duration::from_millis(10));
        let handle = std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                // A failed touch only makes the lock look stale sooner to other hosts.
                if let Ok(f) = OpenOptions::new().write(true).open(&path) {
                    let _ = f.set_modified(SystemTime::now());
                }
            }
        });
        self.stop = Some(tx);
        self.heartbeat = Some(handle);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BuildLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        // Only our own lock: a waiter that judged us stale may hold it now.
        let ours = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| serde_json::from_str::<Holder>(&t).ok())
            .is_some_and(|h| h.token == self.token);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn opts(stale_ms: u64) -> LockOptions {
        LockOptions {
            stale_after: Duration::from_millis(stale_ms),
            poll: Duration::from_millis(10),
            identity: Identity::this_host(),
        }
    }

    #[test]
    fn threads_hold_the_lock_one_at_a_time_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".lock-s-0123");
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let count = dir.path().join("count");
        std::fs::write(&count, "0").unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (path, inside, most, count) =
                    (path.clone(), inside.clone(), most.clone(), count.clone());
                std::thread::spawn(move || {
                    for _ in 0..5 {
                        let _l = BuildLock::acquire(&path, &opts(60_000)).unwrap();
                        let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        // A read-modify-write that loses updates unless the lock excludes.
                        let v: u32 = std::fs::read_to_string(&count).unwrap().parse().unwrap();
                        std::thread::sleep(Duration::from_millis(2));
                        std::fs::write(&count, (v + 1).to_string()).unwrap();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);
        assert_eq!(std::fs::read_to_string(&count).unwrap(), "20");
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "count")
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    fn write_holder(path: &Path, h: &Holder) {
        std::fs::write(path, serde_json::to_string(h).unwrap()).unwrap();
    }

    #[test]
    fn a_dead_holder_on_this_host_is_taken_over_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".lock-s-0123");
        let me = Identity::this_host();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        write_holder(
            &path,
            &Holder {
                host: me.host.clone(),
                boot_id: me.boot_id.clone(),
                pid: dead,
                proc_start: Some(1),
                started: "then".into(),
                token: "old".into(),
            },
        );
        assert!(!held_by_live(&path, &me));
        let start = Instant::now();
        let l = BuildLock::acquire(&path, &opts(60_000)).unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
        let why = l.took_over.clone().unwrap();
        assert!(
            why.contains(&format!("pid {dead}")) && why.contains("gone"),
            "{why}"
        );
        assert!(held_by_live(&path, &me));
        drop(l);
        assert!(!path.exists());
    }

    #[test]
    fn another_hosts_lock_is_taken_over_only_once_its_heartbeat_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".lock-s-0123");
        // A live holder "on another host": its heartbeat (every 200 ms) keeps the lock for 2.5 times
        // stale_after. (1 s, not less: a heartbeat thread starved on a loaded machine must not look dead.)
        let elsewhere = LockOptions {
            identity: Identity {
                host: "elsewhere".into(),
                boot_id: "b".into(),
            },
            ..opts(1000)
        };
        let held = BuildLock::acquire(&path, &elsewhere).unwrap();
        let p = path.clone();
        let waiter = std::thread::spawn(move || BuildLock::acquire(&p, &opts(1000)).unwrap());
        std::thread::sleep(Duration::from_millis(2500));
        assert!(!waiter.is_finished(), "took a lock whose heartbeat runs");
        drop(held);
        let l = waiter.join().unwrap();
        assert!(l.took_over.is_none());
        drop(l);

        // A holder on another host that stopped (its heartbeat with it): taken over after stale_after.
        write_holder(
            &path,
            &Holder {
                host: "elsewhere".into(),
                boot_id: "b".into(),
                pid: 1,
                proc_start: None,
                started: "then".into(),
                token: "old".into(),
            },
        );
        let start = Instant::now();
        let l = BuildLock::acquire(&path, &opts(1000)).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(1000));
        let why = l.took_over.clone().unwrap();
        assert!(
            why.contains("host elsewhere") && why.contains("no heartbeat"),
            "{why}"
        );
    }

    #[test]
    fn the_stale_timeout_parses_or_names_the_variable() {
        assert_eq!(stale_after(None).unwrap(), DEFAULT_STALE);
        assert_eq!(
            stale_after(Some(" 2.5")).unwrap(),
            Duration::from_millis(2500)
        );
        for bad in ["0", "-1", "soon", "inf"] {
            let e = stale_after(Some(bad)).unwrap_err().to_string();
            assert!(e.contains(STALE_ENV) && e.contains(bad), "{e}");
        }
        // This process runs, with a start time where /proc has one.
        assert!(pid_alive(std::process::id()));
        if Path::new("/proc/self/stat").exists() {
            assert!(proc_start(std::process::id()).is_some());
        }
    }
}
