//! Errors of the eval layer; every variant names the file (and field or line) at fault.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
// Underlying errors are part of the message and not chained as `source`, so `{:#}` prints them once.
pub enum EvalError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}: invalid JSON: {err}")]
    Json {
        path: PathBuf,
        err: serde_json::Error,
    },
    #[error("{path}:{line}: {msg}")]
    Line {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    #[error("{what}: {msg}")]
    Invalid { what: String, msg: String },
    #[error("{path}: image decode failed: {err}")]
    Image {
        path: PathBuf,
        err: image::ImageError,
    },
    /// A libtorch error, as its message: this crate does not link libtorch, so the torch side converts its
    /// errors with `contracam::eval::error::torch` (the cause is in the message, printed once).
    #[error("torch: {0}")]
    Torch(String),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
}

impl EvalError {
    pub fn io(path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        EvalError::Io {
            path: path.into(),
            err,
        }
    }
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        EvalError::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn line(path: impl Into<PathBuf>, line: usize, msg: impl Into<String>) -> Self {
        EvalError::Line {
            path: path.into(),
            line,
            msg: msg.into(),
        }
    }
    pub fn invalid(what: impl Into<String>, msg: impl Into<String>) -> Self {
        EvalError::Invalid {
            what: what.into(),
            msg: msg.into(),
        }
    }
}

/// Reads a whole file, naming it in the error.
pub fn read_to_string(path: &std::path::Path) -> Result<String, EvalError> {
    std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))
}
