//! Projector and predictor heads of the official code (`models/base.py::load_projection`):
//! Linear(in, hidden, no bias) → BatchNorm1d → ReLU → Linear(hidden, out) → L2-normalise,
//! with `nn.Sequential` indices 0, 1, 3 as parameter names.
use tch::nn::Path;
use tch::Tensor;

use super::layers::{l2_normalize, BatchNorm, Linear};

#[derive(Debug)]
pub struct MlpHead {
    pub fc0: Linear,
    pub bn1: BatchNorm,
    pub fc3: Linear,
}

impl MlpHead {
    pub fn new(p: &Path, input: i64, hidden: i64, output: i64) -> Self {
        Self {
            fc0: Linear::new(p / 0, input, hidden, false),
            bn1: BatchNorm::new(p / 1, hidden, false),
            fc3: Linear::new(p / 3, hidden, output, true),
        }
    }

    /// Unit-norm output (N, out).
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        l2_normalize(
            &self
                .fc3
                .forward(&self.bn1.forward(&self.fc0.forward(x), train).relu()),
        )
    }
}
