//! Where things live under the data directory, the completion markers, and per-dataset status.
//!
//! ```text
//! <data-dir>/<dataset>/downloads/<file>                complete and verified (only ever created by rename)
//! <data-dir>/<dataset>/downloads/<file>.part           bytes received so far
//! <data-dir>/<dataset>/downloads/<file>.part.json      resume validators (url, ETag, Last-Modified, total)
//! <data-dir>/<dataset>/downloads/<file>.verified.json  completion marker: size and hashes it was checked with
//! <data-dir>/<dataset>/downloads/<file>.bad-<unix-time> a file that failed its checksum, kept for inspection
//! <data-dir>/<dataset>/extracted/<file>/               archive contents (+ .contracam-extracted.json marker)
//! <data-dir>/<dataset>/build/                          derived files (masks, crops, decoded images)
//! <data-dir>/<dataset>/index/<split>.jsonl             sample indices (+ BUILT.json marker)
//! <data-dir>/<dataset>/registered.toml                 hashes recorded by `data register`
//! <data-dir>/<dataset>/downloads/<file>.lock           held while a process fetches or verifies <file>
//! <data-dir>/<dataset>/build.lock                      held while a process extracts and indexes the dataset
//! ```
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::manifest::{ChecksumKind, FileSpec, Manifest};
use crate::data::error::{format_err, DataError, IoContext, Result};

/// Default data dir: `$CONTRACAM_DATA`, else `$XDG_CACHE_HOME/contracam`, else `~/.cache/contracam`.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CONTRACAM_DATA").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("contracam");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("contracam")
}

/// Refuses a data directory that exists but is not a directory (a file given by mistake), before any
/// dataset path is derived from it; an absent one is fine (it is created when first written).
pub fn check_data_dir(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(format_err(
            dir,
            "the data directory is a file, not a directory: give a directory (created if absent) with \
             --data-dir or $CONTRACAM_DATA",
        )),
        _ => Ok(()),
    }
}

#[derive(Debug, Clone)]
pub struct DatasetDir {
    pub root: PathBuf,
}

impl DatasetDir {
    pub fn new(data_dir: &Path, name: &str) -> Self {
        DatasetDir {
            root: data_dir.join(name),
        }
    }
    pub fn downloads(&self) -> PathBuf {
        self.root.join("downloads")
    }
    pub fn file(&self, name: &str) -> PathBuf {
        self.downloads().join(name)
    }
    pub fn part(&self, name: &str) -> PathBuf {
        self.downloads().join(format!("{name}.part"))
    }
    pub fn part_meta(&self, name: &str) -> PathBuf {
        self.downloads().join(format!("{name}.part.json"))
    }
    pub fn verified_marker(&self, name: &str) -> PathBuf {
        self.downloads().join(format!("{name}.verified.json"))
    }
    pub fn extracted(&self, name: &str) -> PathBuf {
        self.root.join("extracted").join(name)
    }
    pub fn build(&self) -> PathBuf {
        self.root.join("build")
    }
    pub fn index_dir(&self) -> PathBuf {
        self.root.join("index")
    }
    pub fn built_marker(&self) -> PathBuf {
        self.index_dir().join("BUILT.json")
    }
    pub fn registered(&self) -> PathBuf {
        self.root.join("registered.toml")
    }
    pub fn file_lock(&self, name: &str) -> PathBuf {
        self.downloads().join(format!("{name}.lock"))
    }
    pub fn build_lock(&self) -> PathBuf {
        self.root.join("build.lock")
    }
}

/// Written beside a file once its size and checksum matched.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VerifiedMarker {
    pub size: u64,
    pub sha256: String,
    #[serde(default)]
    pub md5: Option<String>,
    /// What it was checked against: sha256, md5 or registered.
    pub checked_with: String,
    #[serde(default)]
    pub url: Option<String>,
    pub verified_at_unix: u64,
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| format_err(path, e.to_string()))?;
    write_atomic(path, text.as_bytes())
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).at(p)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).at(&tmp)?;
    std::fs::rename(&tmp, path).at(path)
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).at(path)?;
    serde_json::from_str(&text).map_err(|e| format_err(path, e.to_string()))
}

/// Hashes recorded by `data register` for files that have no published checksum.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registered {
    #[serde(default)]
    pub files: BTreeMap<String, RegisteredFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegisteredFile {
    pub size: u64,
    pub sha256: String,
    pub md5: String,
    pub url: String,
    pub registered_at_unix: u64,
}

impl Registered {
    pub fn load(path: &Path) -> Result<Registered> {
        match std::fs::read_to_string(path) {
            Ok(t) => toml::from_str(&t).map_err(|e| DataError::Manifest {
                path: path.into(),
                msg: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Registered::default()),
            Err(e) => Err(e).at(path),
        }
    }
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self).map_err(|e| format_err(path, e.to_string()))?;
        let header = "# Hashes recorded by `contracam data register` (trust on first use): these files have no\n\
                      # published checksum. Share this file to let others check they got the same bytes.\n";
        write_atomic(path, format!("{header}{text}").as_bytes())
    }
}

/// What a file is checked against: the manifest's sha256/md5, else a registered sha256.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub kind: ChecksumKind,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub md5: Option<String>,
}

pub fn expected_for(spec: &FileSpec, registered: &Registered) -> Expected {
    match spec.checksum_kind() {
        ChecksumKind::None => match registered.files.get(&spec.name) {
            Some(r) => Expected {
                kind: ChecksumKind::Registered,
                size: Some(r.size),
                sha256: Some(r.sha256.clone()),
                md5: None,
            },
            None => Expected {
                kind: ChecksumKind::None,
                size: spec.size,
                sha256: None,
                md5: None,
            },
        },
        kind => Expected {
            kind,
            size: spec.size,
            sha256: spec.sha256.clone(),
            md5: spec.md5.clone(),
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Absent,
    Partial,
    Downloaded,
    Verified,
    Built,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Absent => "absent",
            Status::Partial => "partial",
            Status::Downloaded => "downloaded",
            Status::Verified => "verified",
            Status::Built => "built",
        })
    }
}

/// One file's state, from the markers (cheap; `data verify` re-hashes).
pub fn file_status(dir: &DatasetDir, spec: &FileSpec, registered: &Registered) -> Status {
    let path = dir.file(&spec.name);
    let Ok(meta) = std::fs::metadata(&path) else {
        return if dir.part(&spec.name).exists() {
            Status::Partial
        } else {
            Status::Absent
        };
    };
    let marker: Option<VerifiedMarker> = read_json(&dir.verified_marker(&spec.name)).ok();
    let exp = expected_for(spec, registered);
    let ok = marker.is_some_and(|m| {
        m.size == meta.len()
            && exp.size.is_none_or(|s| s == m.size)
            && match exp.kind {
                ChecksumKind::Sha256 | ChecksumKind::Registered => {
                    exp.sha256.as_deref() == Some(m.sha256.as_str())
                }
                ChecksumKind::Md5 => exp.md5.is_some() && exp.md5 == m.md5,
                ChecksumKind::None => false,
            }
    });
    if ok {
        Status::Verified
    } else {
        Status::Downloaded
    }
}

/// The dataset's state: the least advanced of its required files, or built when the index marker is there.
pub fn dataset_status(data_dir: &Path, m: &Manifest, include_optional: bool) -> Status {
    let dir = DatasetDir::new(data_dir, m.name());
    let registered = Registered::load(&dir.registered()).unwrap_or_default();
    let files: Vec<&FileSpec> = m
        .files
        .iter()
        .filter(|f| include_optional || !f.optional)
        .collect();
    let states: Vec<Status> = files
        .iter()
        .map(|f| file_status(&dir, f, &registered))
        .collect();
    let built = dir.built_marker().exists();
    if states.is_empty() {
        return if built { Status::Built } else { Status::Absent };
    }
    let min = *states.iter().min().unwrap_or(&Status::Absent);
    let any_present = states.iter().any(|s| *s != Status::Absent);
    match min {
        Status::Verified if built => Status::Built,
        Status::Absent | Status::Partial if any_present => Status::Partial,
        s => s,
    }
}
