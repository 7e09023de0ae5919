//! The data layer's error type. Every variant names the file, field or URL involved and, where there is
//! one, what the user can do about it.
use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DataError {
    /// The cause is part of the message (not a `source`), so `{:#}` prints it once.
    #[error("I/O error on {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },

    #[error("{path} is not a safetensors file: {why}")]
    NotSafetensors { path: PathBuf, why: String },

    #[error("{path}: no tensor '{key}' (the file has: {available})")]
    MissingTensor {
        path: PathBuf,
        key: String,
        available: String,
    },

    #[error("{path}: tensor '{key}' is {found}, expected {expected}")]
    TensorLayout {
        path: PathBuf,
        key: String,
        found: String,
        expected: String,
    },

    #[error("manifest {path}: {msg}")]
    Manifest { path: PathBuf, msg: String },

    #[error("unknown dataset `{name}`; known: {known}")]
    UnknownDataset { name: String, known: String },

    #[error(
        "{dataset}/{file} has no published checksum (unverified); run `contracam data register {dataset}` \
         (or `data fetch --register`) to download it and record the sha256 it computes"
    )]
    Unverified { dataset: String, file: String },

    #[error("{dataset} is gated and cannot be downloaded automatically: {file} is missing at {expected}.\n{instructions}")]
    Gated {
        dataset: String,
        file: String,
        expected: PathBuf,
        instructions: String,
    },

    #[error("--offline: {file} is not downloaded (expected at {expected}); run without --offline or place the file there and run `contracam data verify {dataset}`")]
    Offline {
        dataset: String,
        file: String,
        expected: PathBuf,
    },

    #[error("checksum mismatch for {file}: expected {kind} {expected}, got {actual}; the bad file was moved aside to {moved_to}")]
    ChecksumMismatch {
        file: String,
        kind: &'static str,
        expected: String,
        actual: String,
        moved_to: PathBuf,
    },

    #[error("size mismatch for {file} from {url}: expected {expected} bytes, {what} {actual}")]
    SizeMismatch {
        file: String,
        url: String,
        expected: u64,
        actual: u64,
        what: String,
    },

    #[error("{url} returned an HTML page instead of {file} (a login, quota or confirmation page?); download it in a browser and place it at {expected}")]
    HtmlInsteadOfFile {
        url: String,
        file: String,
        expected: PathBuf,
    },

    #[error("HTTP {status} from {url}")]
    HttpStatus { url: String, status: u16 },

    #[error("network error for {url}: {msg}")]
    Network { url: String, msg: String },

    #[error("refusing redirect from {from} to {to}: https must not be downgraded to http")]
    Downgrade { from: String, to: String },

    #[error("not enough disk space in {path}: {needed} bytes needed, {available} available; free some space or use --data-dir")]
    DiskSpace {
        path: PathBuf,
        needed: u64,
        available: u64,
    },

    #[error("all sources failed for {file}:\n{attempts}")]
    AllSourcesFailed { file: String, attempts: String },

    #[error("unsafe archive {archive}: entry `{entry}` {why}; nothing was extracted")]
    UnsafeArchive {
        archive: PathBuf,
        entry: String,
        why: String,
    },

    #[error(
        "archive {archive} expands past the cap ({why}); refusing a possible decompression bomb"
    )]
    ArchiveBomb { archive: PathBuf, why: String },

    #[error("archive {archive}: {msg}")]
    Archive { archive: PathBuf, msg: String },

    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },

    #[error("{path}: {error}")]
    Pickle {
        path: PathBuf,
        error: crate::data::formats::pickle::PickleError,
    },

    #[error("building {dataset}: {msg}")]
    Build { dataset: String, msg: String },

    #[error("{count} problems:\n{list}")]
    Several { count: usize, list: String },

    #[error("image {path}: {msg}")]
    Image { path: PathBuf, msg: String },

    #[error("{what} {file} (sample of {index} line {line}): {msg}; replace or remove the file, or pass --skip-bad to skip unreadable samples (they are counted and reported)")]
    BadSample {
        what: &'static str,
        file: PathBuf,
        index: PathBuf,
        line: usize,
        msg: String,
    },

    #[error("loader: {0}")]
    Loader(String),
}

pub type Result<T> = std::result::Result<T, DataError>;

/// `map_err` helper: attach a path to an io::Error.
pub trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|err| DataError::Io {
            path: path.into(),
            err,
        })
    }
}

pub fn format_err(path: impl Into<PathBuf>, msg: impl Into<String>) -> DataError {
    DataError::Format {
        path: path.into(),
        msg: msg.into(),
    }
}
