//! The training layer's error type. Config errors name the key (`train.batch_size`, `model.width`), file
//! errors name the file; libtorch failures are caught at the boundary and carried as `Torch`.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A configuration value outside its domain; `key` is the path as written in a suite (`train.epochs`).
    #[error("{key} = {value}: {msg}")]
    Config {
        key: String,
        value: String,
        msg: String,
    },
    #[error("training diverged: loss is {loss} at epoch {epoch}, step {step}")]
    Diverged {
        loss: f64,
        epoch: usize,
        step: usize,
    },
    /// A batch that does not have the shape the loop needs (from a data source).
    #[error("batch {step} of epoch {epoch}: {msg}")]
    Batch {
        epoch: usize,
        step: usize,
        msg: String,
    },
    /// A training-state checkpoint that cannot be read or does not belong to this run.
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    #[error(transparent)]
    Model(#[from] crate::model::CheckpointError),
    #[error(transparent)]
    Data(#[from] crate::data::error::DataError),
    #[error(transparent)]
    Distributed(#[from] crate::train::distributed::DistError),
    /// The cause is in the message, so it is not also a `source` (printed once).
    #[error("libtorch: {0}")]
    Torch(tch::TchError),
}

impl TrainError {
    /// A config error for `key` holding `value`.
    pub fn config(key: &str, value: impl std::fmt::Display, msg: impl Into<String>) -> Self {
        Self::Config {
            key: key.into(),
            value: value.to_string(),
            msg: msg.into(),
        }
    }
}

impl From<tch::TchError> for TrainError {
    fn from(e: tch::TchError) -> Self {
        Self::Torch(e)
    }
}
