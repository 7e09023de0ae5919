//! Stage cache: a stage's outputs live in `<runs>/<stage>-<fingerprint>/`, published atomically (built in a
//! temporary sibling, then renamed) with a `DONE` marker. The fingerprint is the sha256 of the canonical
//! JSON of the stage name, its parameters, its inputs' fingerprints, the cache format version and the
//! contracam version (with its git commit), so any change upstream, or in the code, re-runs everything
//! downstream, and an interrupted stage is simply redone.
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Bump when stage outputs change meaning.
pub const FORMAT_VERSION: u32 = 1;
const DONE: &str = "DONE";

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("stage cache {path}: {msg}")]
    Io { path: PathBuf, msg: String },
}

pub struct StageCache {
    pub root: PathBuf,
    /// Recompute even when a finished stage exists.
    pub refresh: bool,
}

pub fn fingerprint(stage: &str, params: &impl Serialize, inputs: &[&str]) -> String {
    let v = serde_json::json!({
        "stage": stage,
        "format": FORMAT_VERSION,
        "contracam": crate::VERSION,
        "params": serde_json::to_value(params).expect("stage params serialise"),
        "inputs": inputs,
    });
    // serde_json maps are sorted by key, so this is canonical.
    hex::encode(Sha256::digest(v.to_string().as_bytes()))
}

pub enum Outcome {
    Cached(PathBuf),
    Computed(PathBuf),
}

impl Outcome {
    pub fn dir(&self) -> &Path {
        match self {
            Outcome::Cached(d) | Outcome::Computed(d) => d,
        }
    }
    pub fn cached(&self) -> bool {
        matches!(self, Outcome::Cached(_))
    }
}

impl StageCache {
    pub fn stage_dir(&self, stage: &str, fp: &str) -> PathBuf {
        self.root.join(format!("{stage}-{}", &fp[..16]))
    }

    /// Returns the finished stage directory, running `build` into a fresh temporary directory first when
    /// there is none.
    pub fn get_or_run<E: From<CacheError>>(
        &self,
        stage: &str,
        fp: &str,
        build: impl FnOnce(&Path) -> Result<(), E>,
    ) -> Result<Outcome, E> {
        let dir = self.stage_dir(stage, fp);
        let ioerr = |p: &Path, e: std::io::Error| CacheError::Io {
            path: p.into(),
            msg: e.to_string(),
        };
        if dir.join(DONE).is_file() && !self.refresh {
            return Ok(Outcome::Cached(dir));
        }
        std::fs::create_dir_all(&self.root).map_err(|e| ioerr(&self.root, e))?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{stage}-{}.", &fp[..16]))
            .tempdir_in(&self.root)
            .map_err(|e| ioerr(&self.root, e))?;
        build(tmp.path())?;
        std::fs::write(tmp.path().join(DONE), fp).map_err(|e| ioerr(tmp.path(), e))?;
        if dir.exists() {
            // A stale or refreshed directory: replace it.
            std::fs::remove_dir_all(&dir).map_err(|e| ioerr(&dir, e))?;
        }
        let tmp_path = tmp.keep();
        std::fs::rename(&tmp_path, &dir).map_err(|e| ioerr(&dir, e))?;
        Ok(Outcome::Computed(dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_published_once_and_failed_build_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let cache = StageCache {
            root: root.path().into(),
            refresh: false,
        };
        let fp = fingerprint("s", &serde_json::json!({"a": 1}), &[]);
        let out = cache
            .get_or_run::<CacheError>("s", &fp, |d| {
                std::fs::write(d.join("x"), "1").unwrap();
                Ok(())
            })
            .unwrap();
        assert!(!out.cached());
        let again = cache
            .get_or_run::<CacheError>("s", &fp, |_| panic!("must not rerun"))
            .unwrap();
        assert!(again.cached());
        assert_eq!(std::fs::read_to_string(again.dir().join("x")).unwrap(), "1");
        let fp2 = fingerprint("s", &serde_json::json!({"a": 2}), &[]);
        assert_ne!(fp, fp2);
        let r = cache.get_or_run("s", &fp2, |_| {
            Err(CacheError::Io {
                path: "x".into(),
                msg: "boom".into(),
            })
        });
        assert!(r.is_err());
        assert!(!cache.stage_dir("s", &fp2).exists());
        let leftovers = std::fs::read_dir(root.path()).unwrap().count();
        assert_eq!(
            leftovers, 1,
            "the failed stage's temporary directory is removed"
        );
    }
}
