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
    /// The cause is in the message, so it is not also a `source` (printed once).
    #[error("torch: {0}")]
    Torch(tch::TchError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
}

impl EvalError {
    pub(crate) fn io(path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        EvalError::Io {
            path: path.into(),
            err,
        }
    }
    pub(crate) fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        EvalError::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub(crate) fn line(path: impl Into<PathBuf>, line: usize, msg: impl Into<String>) -> Self {
        EvalError::Line {
            path: path.into(),
            line,
            msg: msg.into(),
        }
    }
    pub(crate) fn invalid(what: impl Into<String>, msg: impl Into<String>) -> Self {
        EvalError::Invalid {
            what: what.into(),
            msg: msg.into(),
        }
    }
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read_to_string(path: &std::path::Path) -> Result<String, EvalError> {
    std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))
}

impl From<tch::TchError> for EvalError {
    fn from(e: tch::TchError) -> Self {
        Self::Torch(e)
    }
}
