//! Stage cache. A finished stage lives in `<runs-dir>/<suite>/<stage>-<fingerprint[..16]>/` with its declared
//! outputs, `result.json` (metrics and curves) and a `DONE` marker. A stage is built in a temporary sibling
//! (`.tmp-…`), its outputs and result are validated, the marker is written, and the directory is renamed
//! into place: a stage directory is either complete or absent, whatever moment a run is killed at, and a
//! failing stage publishes nothing. One whole run at a time holds the runs dir's lock (`flock`); the holder
//! removes the temporary directories a killed run left behind while no stage build lock is held. Every
//! build of a fingerprint also holds that fingerprint's build lock (`.lock-<stage>-<fp16>`, see
//! [`super::lock`], which works across the hosts of a shared filesystem), so two processes never build the
//! same stage at once: the second waits and reuses what the first published. `--only` jobs (Slurm jobs and
//! array tasks) take only build locks, one at a time, so they run side by side and never wait for a whole
//! run's lock while holding one: no deadlock.
//!
//! The fingerprint is the sha256 of the canonical JSON of: the stage kind and its version, the resolved
//! parameters, the inputs' fingerprints by slot, the seed, the device class, the precision policy, the
//! cache format and the contracam version with its git commit. Any change upstream or in the code
//! recomputes what depends on it.
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::stage::{ArtefactKind, Slot, StageError, StageResult};

/// Bump when the layout of stage directories changes meaning.
pub const FORMAT_VERSION: u32 = 2;
pub const DONE_FILE: &str = "DONE";
pub const RESULT_FILE: &str = "result.json";
const TMP_PREFIX: &str = ".tmp-";
const LOCK_FILE: &str = ".lock";
/// Build locks are `.lock-<stage>-<fp16>`.
const BUILD_LOCK_PREFIX: &str = ".lock-";

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("stage cache {path}: {msg}")]
    Io { path: PathBuf, msg: String },
    #[error("{path} is in use by another contracam run ({holder}); wait for it to finish or use another --runs-dir")]
    Busy { path: PathBuf, holder: String },
    #[error("stage '{stage}' produced invalid output, nothing was published: {msg}")]
    InvalidOutput { stage: String, msg: String },
    #[error("stage '{stage}' failed, nothing was published: {source}")]
    Stage {
        stage: String,
        #[source]
        source: Box<StageError>,
    },
}

fn io(path: &Path, e: impl std::fmt::Display) -> CacheError {
    CacheError::Io {
        path: path.into(),
        msg: e.to_string(),
    }
}

/// What makes a stage's fingerprint.
#[derive(Debug, Clone, Serialize)]
pub struct FingerprintInput<'a> {
    pub kind: &'a str,
    pub kind_version: u32,
    pub params: &'a serde_json::Value,
    /// Slot name → the bound input's fingerprint.
    pub inputs: BTreeMap<&'a str, &'a str>,
    pub seed: u64,
    pub device_class: &'a str,
    pub precision: super::stage::Precision,
}

/// sha256 (hex) of the canonical JSON of `f`, the cache format and the code version.
pub fn fingerprint(f: &FingerprintInput) -> String {
    fingerprint_with_code(f, crate::VERSION)
}

/// As [`fingerprint`] with an explicit code version (tests).
pub fn fingerprint_with_code(f: &FingerprintInput, code: &str) -> String {
    let v = serde_json::json!({
        "format": FORMAT_VERSION,
        "code": code,
        "stage": f,
    });
    // serde_json's maps are sorted by key (no preserve_order feature), so this text is canonical.
    hex::encode(Sha256::digest(v.to_string().as_bytes()))
}

/// The fingerprint of output `slot` of a stage with fingerprint `stage_fp`.
pub fn artefact_fingerprint(stage_fp: &str, slot: &str) -> String {
    hex::encode(Sha256::digest(format!("{stage_fp}/{slot}").as_bytes()))
}

/// The `DONE` marker: what was published, by whom, with the outputs' content hashes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DoneMarker {
    pub stage: String,
    pub kind: String,
    pub fingerprint: String,
    pub finished_at: String,
    pub seconds: f64,
    /// Output slot → sha256 of the file (directories: of their sorted file names and contents).
    pub outputs: BTreeMap<String, String>,
}

/// A stage directory that is published.
#[derive(Debug, Clone)]
pub struct Published {
    pub dir: PathBuf,
    pub result: StageResult,
    pub marker: DoneMarker,
}

/// The cache of one suite's stages, held under the runs dir's lock (or read without it, see
/// [`StageCache::read_only`]).
#[derive(Debug)]
pub struct StageCache {
    pub root: PathBuf,
    _lock: Option<File>,
}

/// How to react to another run holding the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockPolicy {
    /// Print a message and wait for it.
    Wait,
    /// Refuse with [`CacheError::Busy`].
    Refuse,
}

impl StageCache {
    /// Opens (creating) `root`, takes its lock, and removes temporary directories left by killed runs.
    pub fn open(root: &Path, policy: LockPolicy) -> Result<Self, CacheError> {
        std::fs::create_dir_all(root).map_err(|e| io(root, e))?;
        let lock_path = root.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io(&lock_path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&lock_path)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "unknown process".into());
                if policy == LockPolicy::Refuse {
                    return Err(CacheError::Busy {
                        path: root.into(),
                        holder,
                    });
                }
                eprintln!(
                    "waiting for another contracam run using {} ({holder})",
                    root.display()
                );
                file.lock().map_err(|e| io(&lock_path, e))?;
            }
            Err(TryLockError::Error(e)) => return Err(io(&lock_path, e)),
        }
        // Who holds it, for the message a second run prints.
        let _ = file.set_len(0);
        let _ = write!(
            file,
            "pid {} since {}",
            std::process::id(),
            super::now_utc()
        );
        let cache = StageCache {
            root: root.into(),
            _lock: Some(file),
        };
        cache.clean_stale()?;
        Ok(cache)
    }

    /// `root` for a process that builds one stage (`--only`: a Slurm job or array task): created if
    /// missing, without the whole-run lock (its builds take their build locks) and without removing
    /// temporary directories (another builder's may be live).
    pub fn shared(root: &Path) -> Result<Self, CacheError> {
        std::fs::create_dir_all(root).map_err(|e| io(root, e))?;
        Ok(StageCache {
            root: root.into(),
            _lock: None,
        })
    }

    /// A view of `root` for looking only (`suite plan`): creates nothing, takes no lock and removes nothing.
    /// Lookups stay sound while a run holds the lock because a stage directory is published by one rename:
    /// it is complete or absent.
    pub fn read_only(root: &Path) -> Self {
        StageCache {
            root: root.into(),
            _lock: None,
        }
    }

    /// The marker of the most recently finished published directory of `stage`, whatever its fingerprint:
    /// how long the stage took last time, as a rough cost for a stage that has to run again.
    pub fn latest_marker(&self, stage: &str) -> Option<DoneMarker> {
        let prefix = format!("{stage}-");
        std::fs::read_dir(&self.root)
            .ok()?
            .flatten()
            .filter(|e| {
                // `<stage>-<16 hex>`: the exact length keeps `evaluate-` from matching `evaluate-vanilla-…`.
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix(&prefix)
                    .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            })
            .filter_map(|e| read_json::<DoneMarker>(&e.path().join(DONE_FILE)).ok())
            .filter(|m| m.stage == stage)
            .max_by(|a, b| a.finished_at.cmp(&b.finished_at))
    }

    /// Removes every temporary stage directory unless a build lock is held by a process that may still
    /// run (an `--only` job builds without the whole-run lock). The temporaries are listed before the
    /// locks are looked at: a builder creates its lock before its temporary, so a temporary listed here
    /// whose lock is absent afterwards was left by a dead builder (or has been published since).
    fn clean_stale(&self) -> Result<(), CacheError> {
        let temps: Vec<PathBuf> = std::fs::read_dir(&self.root)
            .map_err(|e| io(&self.root, e))?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(TMP_PREFIX))
            .map(|e| e.path())
            .collect();
        if temps.is_empty() {
            return Ok(());
        }
        let me = super::lock::Identity::this_host();
        let building = std::fs::read_dir(&self.root)
            .map_err(|e| io(&self.root, e))?
            .flatten()
            .filter(|e| is_build_lock(&e.file_name().to_string_lossy()))
            .any(|e| super::lock::held_by_live(&e.path(), &me));
        if building {
            return Ok(());
        }
        for p in temps {
            tracing::info!(dir = %p.display(), "removing a stale temporary stage directory");
            match std::fs::remove_dir_all(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&p, e)),
                _ => {}
            }
        }
        Ok(())
    }

    /// The build lock of `stage` at fingerprint `fp`.
    pub fn build_lock_path(&self, stage: &str, fp: &str) -> PathBuf {
        self.root.join(format!(
            "{BUILD_LOCK_PREFIX}{stage}-{}",
            &fp[..16.min(fp.len())]
        ))
    }

    /// [`build`](Self::build) under the fingerprint's build lock: waits while another process builds it,
    /// then (with `reuse`, i.e. not a refresh) returns what that process published instead of building
    /// again. Removes temporary directories of this fingerprint that a killed builder left. The flag is
    /// true when the stage was reused.
    #[allow(clippy::too_many_arguments)]
    pub fn build_locked(
        &self,
        stage: &str,
        kind: &str,
        fp: &str,
        outputs: &[Slot],
        metrics: &[&str],
        reuse: bool,
        build: impl FnOnce(&Path) -> Result<StageResult, StageError>,
    ) -> Result<(Published, bool), CacheError> {
        let lock_path = self.build_lock_path(stage, fp);
        let opts = super::lock::LockOptions::from_env().map_err(|e| io(&e.path, e.msg))?;
        let _lock =
            super::lock::BuildLock::acquire(&lock_path, &opts).map_err(|e| io(&e.path, e.msg))?;
        if reuse {
            if let Some(p) = self.lookup_verified(stage, fp, outputs) {
                return Ok((p, true));
            }
        }
        let short = &fp[..16.min(fp.len())];
        let mine = [
            format!("{TMP_PREFIX}{stage}-{short}-"),
            format!("{TMP_PREFIX}old-{stage}-{short}"),
        ];
        for e in std::fs::read_dir(&self.root)
            .map_err(|e| io(&self.root, e))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if mine.iter().any(|m| name.starts_with(m.as_str())) {
                let p = e.path();
                tracing::info!(dir = %p.display(), "removing a killed build's temporary directory");
                std::fs::remove_dir_all(&p).map_err(|e| io(&p, e))?;
            }
        }
        let p = self.build(stage, kind, fp, outputs, metrics, build)?;
        Ok((p, false))
    }

    pub fn stage_dir(&self, stage: &str, fp: &str) -> PathBuf {
        self.root
            .join(format!("{stage}-{}", &fp[..16.min(fp.len())]))
    }

    /// The published stage with this fingerprint, if its marker and result read back.
    pub fn lookup(&self, stage: &str, fp: &str) -> Option<Published> {
        let dir = self.stage_dir(stage, fp);
        let marker: DoneMarker = read_json(&dir.join(DONE_FILE)).ok()?;
        if marker.fingerprint != fp {
            return None;
        }
        let result: StageResult = read_json(&dir.join(RESULT_FILE)).ok()?;
        Some(Published {
            dir,
            result,
            marker,
        })
    }

    /// As [`lookup`](Self::lookup), and only when every declared output is still there with the content
    /// hash its marker recorded: a damaged stage directory is rebuilt, never reused.
    pub fn lookup_verified(&self, stage: &str, fp: &str, outputs: &[Slot]) -> Option<Published> {
        let p = self.lookup(stage, fp)?;
        if let Err(slot) = Self::verify(&p, outputs) {
            eprintln!(
                "{}: output '{slot}' is missing or changed since it was published; rebuilding the stage",
                p.dir.display(),
            );
            return None;
        }
        Some(p)
    }

    /// Checks that every declared output of a published stage is there with the content hash its marker
    /// recorded; the first slot that is not.
    pub fn verify<'s>(p: &Published, outputs: &'s [Slot]) -> Result<(), &'s str> {
        for slot in outputs {
            let ok = validate_output(&p.dir.join(slot.file), slot.kind)
                .ok()
                .is_some_and(|h| p.marker.outputs.get(slot.name) == Some(&h));
            if !ok {
                return Err(slot.name);
            }
        }
        Ok(())
    }

    /// Builds the stage into a fresh temporary directory with `build`, validates what it wrote against
    /// `outputs` and `metrics` (declared names; values finite), and publishes it atomically, replacing a
    /// previous directory of the same fingerprint (a refresh).
    pub fn build(
        &self,
        stage: &str,
        kind: &str,
        fp: &str,
        outputs: &[Slot],
        metrics: &[&str],
        build: impl FnOnce(&Path) -> Result<StageResult, StageError>,
    ) -> Result<Published, CacheError> {
        let start = std::time::Instant::now();
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{TMP_PREFIX}{stage}-{}-", &fp[..16.min(fp.len())]))
            .tempdir_in(&self.root)
            .map_err(|e| io(&self.root, e))?;
        let result = build(tmp.path()).map_err(|source| CacheError::Stage {
            stage: stage.into(),
            source: Box::new(source),
        })?;
        let invalid = |msg: String| CacheError::InvalidOutput {
            stage: stage.into(),
            msg,
        };
        for (name, v) in &result.metrics {
            if !metrics.contains(&name.as_str()) {
                return Err(invalid(format!(
                    "metric '{name}' is not declared by kind '{kind}'"
                )));
            }
            if !v.is_finite() {
                return Err(invalid(format!("metric '{name}' is {v}")));
            }
        }
        let mut hashes = BTreeMap::new();
        for slot in outputs {
            let p = tmp.path().join(slot.file);
            hashes.insert(
                slot.name.to_string(),
                validate_output(&p, slot.kind)
                    .map_err(|m| invalid(format!("output '{}': {m}", slot.name)))?,
            );
        }
        write_json_file(&tmp.path().join(RESULT_FILE), &result)?;
        let marker = DoneMarker {
            stage: stage.into(),
            kind: kind.into(),
            fingerprint: fp.into(),
            finished_at: super::now_utc(),
            seconds: start.elapsed().as_secs_f64(),
            outputs: hashes,
        };
        write_json_file(&tmp.path().join(DONE_FILE), &marker)?;
        let dir = self.stage_dir(stage, fp);
        if dir.exists() {
            // Out of the way in one rename, then deleted: a run killed while deleting leaves a temporary
            // directory (removed by the next run), never a half-deleted stage under its published name.
            let old = self.root.join(format!(
                "{TMP_PREFIX}old-{}",
                dir.file_name().unwrap_or_default().to_string_lossy()
            ));
            if old.exists() {
                std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
            }
            std::fs::rename(&dir, &old).map_err(|e| io(&dir, e))?;
            std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
        }
        let tmp_path = tmp.keep();
        std::fs::rename(&tmp_path, &dir).map_err(|e| io(&dir, e))?;
        Ok(Published {
            dir,
            result,
            marker,
        })
    }
}

/// Whether a file name in a suite's folder is a stage build lock (not the whole-run lock, nor the private
/// and `.break` files of the lock protocol).
fn is_build_lock(name: &str) -> bool {
    name.strip_prefix(BUILD_LOCK_PREFIX)
        .is_some_and(|rest| !rest.contains('.'))
}

/// Checks that an output exists with the right shape and hashes it.
fn validate_output(p: &Path, kind: ArtefactKind) -> Result<String, String> {
    let meta = std::fs::metadata(p).map_err(|_| format!("{} was not written", p.display()))?;
    let mut h = Sha256::new();
    if kind.is_dir() {
        if !meta.is_dir() {
            return Err(format!("{} must be a directory", p.display()));
        }
        let mut files: Vec<PathBuf> = walkdir::WalkDir::new(p)
            .sort_by_file_name()
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .map(|e| e.into_path())
            .collect();
        files.sort();
        for f in files {
            let rel = f.strip_prefix(p).unwrap_or(&f);
            h.update(rel.to_string_lossy().as_bytes());
            h.update([0]);
            hash_file(&f, &mut h)?;
        }
    } else {
        if !meta.is_file() {
            return Err(format!("{} must be a file", p.display()));
        }
        if meta.len() == 0 {
            return Err(format!("{} is empty", p.display()));
        }
        if kind == ArtefactKind::Json {
            let s = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            serde_json::from_str::<serde_json::Value>(&s)
                .map_err(|e| format!("{}: not JSON: {e}", p.display()))?;
        }
        hash_file(p, &mut h)?;
    }
    Ok(hex::encode(h.finalize()))
}

fn hash_file(p: &Path, h: &mut Sha256) -> Result<(), String> {
    let mut f = File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
    std::io::copy(&mut f, h).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(())
}

fn read_json<T: for<'de> Deserialize<'de>>(p: &Path) -> Result<T, String> {
    let s = std::fs::read_to_string(p).map_err(|e| e.to_string())?;
    serde_json::from_str(&s).map_err(|e| e.to_string())
}

fn write_json_file(p: &Path, v: &impl Serialize) -> Result<(), CacheError> {
    let s = serde_json::to_string_pretty(v).map_err(|e| io(p, e))?;
    let mut f = File::create(p).map_err(|e| io(p, e))?;
    f.write_all(s.as_bytes()).map_err(|e| io(p, e))?;
    f.sync_all().map_err(|e| io(p, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::stage::Precision;

    fn fp(a: i64) -> String {
        let params = serde_json::json!({ "a": a });
        fingerprint(&FingerprintInput {
            kind: "k",
            kind_version: 1,
            params: &params,
            inputs: BTreeMap::new(),
            seed: 0,
            device_class: "cpu",
            precision: Precision::Fp32,
        })
    }

    const OUT: &[Slot] = &[Slot::file("x", ArtefactKind::Json, "x.json")];

    #[test]
    fn fingerprint_covers_every_part() {
        let params = serde_json::json!({ "a": 1 });
        let base = FingerprintInput {
            kind: "k",
            kind_version: 1,
            params: &params,
            inputs: BTreeMap::from([("data", "f0")]),
            seed: 0,
            device_class: "cpu",
            precision: Precision::Fp32,
        };
        let f0 = fingerprint(&base);
        let p2 = serde_json::json!({ "a": 2 });
        let variants = [
            FingerprintInput {
                kind: "j",
                ..base.clone()
            },
            FingerprintInput {
                kind_version: 2,
                ..base.clone()
            },
            FingerprintInput {
                params: &p2,
                ..base.clone()
            },
            FingerprintInput {
                inputs: BTreeMap::from([("data", "f1")]),
                ..base.clone()
            },
            FingerprintInput {
                seed: 1,
                ..base.clone()
            },
            FingerprintInput {
                device_class: "cuda",
                ..base.clone()
            },
            FingerprintInput {
                precision: Precision::Bf16Mixed,
                ..base.clone()
            },
        ];
        for v in &variants {
            assert_ne!(fingerprint(v), f0, "{v:?}");
        }
        assert_ne!(fingerprint_with_code(&base, "other"), f0);
        assert_eq!(fingerprint(&base.clone()), f0);
    }

    #[test]
    fn published_once_failed_or_invalid_builds_leave_nothing() {
        let root = tempfile::tempdir().unwrap();
        let cache = StageCache::open(root.path(), LockPolicy::Refuse).unwrap();
        let f = fp(1);
        let p = cache
            .build("s", "k", &f, OUT, &["m"], |d| {
                std::fs::write(d.join("x.json"), "{}").unwrap();
                Ok(StageResult::default().metric("m", 1.0))
            })
            .unwrap();
        let again = cache.lookup("s", &f).unwrap();
        assert_eq!(again.result, p.result);
        assert_eq!(again.marker.outputs.len(), 1);

        let g = fp(2);
        type Build = Box<dyn FnOnce(&Path) -> Result<StageResult, StageError>>;
        let fails: [Build; 4] = [
            Box::new(|_| Err(StageError::Failed("boom".into()))),
            // declared output missing
            Box::new(|_| Ok(StageResult::default())),
            // output present but not JSON
            Box::new(|d| {
                std::fs::write(d.join("x.json"), "{").unwrap();
                Ok(StageResult::default())
            }),
            // non-finite metric (the poisoned-cache case)
            Box::new(|d| {
                std::fs::write(d.join("x.json"), "{}").unwrap();
                Ok(StageResult::default().metric("m", f64::NAN))
            }),
        ];
        for b in fails {
            let e = cache.build("s", "k", &g, OUT, &["m"], b).unwrap_err();
            assert!(e.to_string().contains("nothing was published"), "{e}");
            assert!(cache.lookup("s", &g).is_none());
            assert!(!cache.stage_dir("s", &g).exists());
        }
        let names: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != LOCK_FILE)
            .collect();
        assert_eq!(
            names,
            vec![cache
                .stage_dir("s", &f)
                .file_name()
                .unwrap()
                .to_string_lossy()]
        );
    }

    #[test]
    fn a_refresh_replaces_in_place_and_the_read_only_view_touches_nothing() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("suite");
        let view = StageCache::read_only(&dir);
        assert!(view.lookup("s", &fp(1)).is_none() && view.latest_marker("s").is_none());
        assert!(!dir.exists(), "the read-only view created its folder");

        let cache = StageCache::open(&dir, LockPolicy::Refuse).unwrap();
        let write = |v: &'static str| {
            move |d: &Path| {
                std::fs::write(d.join("x.json"), v).unwrap();
                Ok(StageResult::default())
            }
        };
        let first = cache.build("s", "k", &fp(1), OUT, &[], write("1")).unwrap();
        // The same fingerprint again (a refresh): replaced, nothing left aside.
        let second = cache.build("s", "k", &fp(1), OUT, &[], write("2")).unwrap();
        assert_eq!(first.dir, second.dir);
        assert_eq!(
            std::fs::read_to_string(second.dir.join("x.json")).unwrap(),
            "2"
        );
        assert_ne!(first.marker.outputs, second.marker.outputs);
        // A view reads what the lock holder published, while it holds the lock.
        let seen = view.lookup("s", &fp(1)).unwrap();
        assert_eq!(seen.marker, second.marker);
        assert!(StageCache::verify(&seen, OUT).is_ok());
        std::fs::write(second.dir.join("x.json"), "3").unwrap();
        assert_eq!(StageCache::verify(&seen, OUT), Err("x"));
        // The latest marker of a stage at any fingerprint; another stage's name never matches.
        cache.build("s", "k", &fp(2), OUT, &[], write("4")).unwrap();
        // (Markers record whole seconds, so either may be the latest.)
        let latest = view.latest_marker("s").unwrap();
        assert!([fp(1), fp(2)].contains(&latest.fingerprint), "{latest:?}");
        assert!(view.latest_marker("t").is_none());
        cache
            .build("s-t", "k", &fp(3), OUT, &[], write("5"))
            .unwrap();
        assert_eq!(view.latest_marker("s").unwrap().stage, "s");
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(TMP_PREFIX))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn concurrent_builders_of_a_fingerprint_build_once_and_open_spares_a_live_builders_temps() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let root = tempfile::tempdir().unwrap();
        let cache = StageCache::shared(root.path()).unwrap();
        let f = fp(1);
        let builds = AtomicUsize::new(0);
        let reused: Vec<bool> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        cache
                            .build_locked("s", "k", &f, OUT, &["m"], true, |d| {
                                builds.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(std::time::Duration::from_millis(100));
                                std::fs::write(d.join("x.json"), "{}").unwrap();
                                Ok(StageResult::default().metric("m", 1.0))
                            })
                            .unwrap()
                            .1
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        assert_eq!(reused.iter().filter(|r| !**r).count(), 1, "{reused:?}");
        let names: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 1, "locks or temporaries left: {names:?}");

        // A whole run opening the folder leaves a live builder's temporary alone, and removes it once
        // no build lock is held.
        let lock = crate::suite::lock::BuildLock::acquire(
            &cache.build_lock_path("t", &fp(2)),
            &crate::suite::lock::LockOptions::from_env().unwrap(),
        )
        .unwrap();
        let tmp = root.path().join(".tmp-t-0123-abc");
        std::fs::create_dir_all(&tmp).unwrap();
        drop(StageCache::open(root.path(), LockPolicy::Refuse).unwrap());
        assert!(tmp.exists(), "removed a live builder's temporary");
        drop(lock);
        drop(StageCache::open(root.path(), LockPolicy::Refuse).unwrap());
        assert!(!tmp.exists());
        assert!(is_build_lock(".lock-t-0123") && !is_build_lock(".lock-t-0123.break"));
        assert!(!is_build_lock(".lock") && !is_build_lock(".lock-t-0123.host.1.2-0"));
    }

    #[test]
    fn a_second_opener_is_refused_or_waits_and_stale_temps_are_removed() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join(".tmp-s-0123-abc/sub")).unwrap();
        let first = StageCache::open(root.path(), LockPolicy::Refuse).unwrap();
        assert!(!root.path().join(".tmp-s-0123-abc").exists());
        let e = StageCache::open(root.path(), LockPolicy::Refuse).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("in use by another contracam run")
                && msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        let r = root.path().to_path_buf();
        let waiter = std::thread::spawn(move || StageCache::open(&r, LockPolicy::Wait).map(|_| ()));
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            !waiter.is_finished(),
            "the second run waits while the first holds the lock"
        );
        drop(first);
        waiter.join().unwrap().unwrap();
    }
}
