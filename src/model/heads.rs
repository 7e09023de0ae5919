//! Projector and predictor heads. Two forms, with `nn.Sequential` indices as parameter names:
//! - the official code's (`models/base.py::load_projection`): Linear(in, hidden, no bias) → BatchNorm1d →
//!   ReLU → Linear(hidden, out) → L2-normalise, parameters `0`, `1`, `3`;
//! - facebookresearch MoCo v2's `--mlp` head (`moco/builder.py`: `fc = Sequential(Linear(d, d), ReLU(), fc)`,
//!   the query normalised in `forward`): Linear(in, hidden) → ReLU → Linear(hidden, out) → L2-normalise,
//!   both with biases and no BatchNorm, parameters `0`, `2`.
use serde::{Deserialize, Serialize};
use tch::nn::Path;
use tch::Tensor;

use super::layers::{l2_normalize, BatchNorm, Linear};

/// Which of the two head forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProjectorForm {
    /// Linear (no bias) → BN → ReLU → Linear: the official object-aware-contrastive code.
    #[default]
    Bn,
    /// Linear → ReLU → Linear, with biases: facebookresearch MoCo v2.
    MlpBias,
}

impl ProjectorForm {
    pub fn is_bn(&self) -> bool {
        *self == ProjectorForm::Bn
    }
}

#[derive(Debug)]
pub struct MlpHead {
    pub fc0: Linear,
    /// Present in the official form only.
    pub bn1: Option<BatchNorm>,
    /// `3` in the official form, `2` in MoCo v2's.
    pub fc_out: Linear,
}

impl MlpHead {
    pub fn new(p: &Path, input: i64, hidden: i64, output: i64) -> Self {
        Self::with_form(p, input, hidden, output, ProjectorForm::Bn)
    }

    pub fn with_form(p: &Path, input: i64, hidden: i64, output: i64, form: ProjectorForm) -> Self {
        match form {
            ProjectorForm::Bn => Self {
                fc0: Linear::new(p / 0, input, hidden, false),
                bn1: Some(BatchNorm::new(p / 1, hidden, false)),
                fc_out: Linear::new(p / 3, hidden, output, true),
            },
            ProjectorForm::MlpBias => Self {
                fc0: Linear::new(p / 0, input, hidden, true),
                bn1: None,
                fc_out: Linear::new(p / 2, hidden, output, true),
            },
        }
    }

    /// Unit-norm output (N, out).
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let h = self.fc0.forward(x);
        let h = match &self.bn1 {
            Some(bn) => bn.forward(&h, train),
            None => h,
        };
        l2_normalize(&self.fc_out.forward(&h.relu()))
    }
}
