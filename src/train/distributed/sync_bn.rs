//! SyncBatchNorm for the model's BatchNorm layers, as Lightning's `sync_batchnorm=True` in the official
//! multi-GPU runs: every train-mode BatchNorm (online and momentum networks, encoder and heads) normalises
//! with the statistics of the global batch.
use std::cell::RefCell;
use std::rc::Rc;

use tch::Tensor;

use super::{DistError, ProcessGroup};
use crate::model::layers::{BatchNorm, CrossProcessBatchNorm};

/// Installed for the training thread by [`super::DataParallel`]. The model's forward cannot return an
/// error, so a failed collective is kept here (the layer falls back to local statistics for that call)
/// and reported by [`SyncBatchNorm::take_error`], which the strategy checks before every backward.
#[derive(Debug)]
pub struct SyncBatchNorm {
    group: Rc<ProcessGroup>,
    error: RefCell<Option<DistError>>,
}

impl SyncBatchNorm {
    pub fn new(group: Rc<ProcessGroup>) -> Self {
        Self {
            group,
            error: RefCell::new(None),
        }
    }

    /// The first collective error since the last call, if any.
    pub fn take_error(&self) -> Option<DistError> {
        self.error.borrow_mut().take()
    }
}

impl CrossProcessBatchNorm for SyncBatchNorm {
    fn forward(&self, x: &Tensor, bn: &BatchNorm) -> Tensor {
        let synced = if self.error.borrow().is_some() {
            None
        } else {
            match self.group.sync_batch_norm(
                x,
                Some(&bn.weight),
                Some(&bn.bias),
                &bn.running_mean,
                &bn.running_var,
                BatchNorm::MOMENTUM,
                BatchNorm::EPS,
            ) {
                Ok(y) => Some(y),
                Err(e) => {
                    *self.error.borrow_mut() = Some(e);
                    None
                }
            }
        };
        synced.unwrap_or_else(|| {
            Tensor::batch_norm(
                x,
                Some(&bn.weight),
                Some(&bn.bias),
                Some(&bn.running_mean),
                Some(&bn.running_var),
                true,
                BatchNorm::MOMENTUM,
                BatchNorm::EPS,
                true,
            )
        })
    }
}
