//! Conv, BatchNorm and Linear with torchvision parameter names and the official code's initialisation.
//! tch's own layers differ (BatchNorm weight ~ U(0,1), no `num_batches_tracked`), so these are written out.
use std::cell::RefCell;
use std::rc::Rc;

use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

/// A bias-free 2-D convolution (every ResNet conv), weight `[out, in, k, k]`.
#[derive(Debug)]
pub struct Conv2d {
    pub weight: Tensor,
    pub stride: i64,
    pub padding: i64,
}

impl Conv2d {
    /// PyTorch's default Conv2d init, which the official `reset_parameters` re-applies:
    /// kaiming_uniform(a=√5) = U(±1/√fan_in).
    pub fn new(p: Path, cin: i64, cout: i64, k: i64, stride: i64, padding: i64) -> Self {
        let bound = 1.0 / ((cin * k * k) as f64).sqrt();
        let weight = p.var(
            "weight",
            &[cout, cin, k, k],
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        );
        Self {
            weight,
            stride,
            padding,
        }
    }

    /// Forward with an optional stride override (the resolution-expansion trick sets stride 1).
    pub fn forward_with_stride(&self, x: &Tensor, stride: i64) -> Tensor {
        x.conv2d(
            &self.weight,
            None::<&Tensor>,
            [stride, stride],
            [self.padding, self.padding],
            [1, 1],
            1,
        )
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_with_stride(x, self.stride)
    }
}

/// BatchNorm (1-d or 2-d) with `weight, bias, running_mean, running_var, num_batches_tracked`,
/// eps 1e-5 and momentum 0.1 as torch.
#[derive(Debug)]
pub struct BatchNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub num_batches_tracked: Tensor,
}

/// Train-mode batch normalisation over a batch that is split across processes (SyncBN). The data-parallel
/// strategy of `train` installs one for the thread that runs training ([`set_cross_process_batch_norm`]);
/// without one, BatchNorm normalises with this process's batch alone.
pub trait CrossProcessBatchNorm {
    /// `bn`'s train-mode output for `x` with statistics over every process's batch; updates `bn`'s running
    /// statistics with the global mean and unbiased variance ([`BatchNorm::MOMENTUM`], [`BatchNorm::EPS`]).
    fn forward(&self, x: &Tensor, bn: &BatchNorm) -> Tensor;
}

thread_local! {
    static CROSS_PROCESS_BATCH_NORM: RefCell<Option<Rc<dyn CrossProcessBatchNorm>>> = const { RefCell::new(None) };
}

/// Installs (or with `None` removes) this thread's cross-process BatchNorm; returns the one it replaces.
pub fn set_cross_process_batch_norm(
    op: Option<Rc<dyn CrossProcessBatchNorm>>,
) -> Option<Rc<dyn CrossProcessBatchNorm>> {
    CROSS_PROCESS_BATCH_NORM.with(|c| c.replace(op))
}

impl BatchNorm {
    /// torch's BatchNorm defaults, which the official code keeps.
    pub const MOMENTUM: f64 = 0.1;
    pub const EPS: f64 = 1e-5;

    /// torchvision init: weight 1 (0 for a zero-init residual BN), bias 0.
    pub fn new(p: Path, c: i64, zero_weight: bool) -> Self {
        let weight = p.var(
            "weight",
            &[c],
            Init::Const(if zero_weight { 0.0 } else { 1.0 }),
        );
        let bias = p.var("bias", &[c], Init::Const(0.0));
        let running_mean = p.zeros_no_train("running_mean", &[c]);
        let running_var = p.ones_no_train("running_var", &[c]);
        let num_batches_tracked = p.add(
            "num_batches_tracked",
            Tensor::zeros([], (Kind::Int64, p.device())),
            false,
        );
        Self {
            weight,
            bias,
            running_mean,
            running_var,
            num_batches_tracked,
        }
    }

    /// Train mode uses batch statistics and updates the running ones; eval mode uses the running ones.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        if train {
            tch::no_grad(|| {
                let mut n = self.num_batches_tracked.shallow_clone();
                let _ = n.g_add_scalar_(1);
            });
            if let Some(op) = CROSS_PROCESS_BATCH_NORM.with(|c| c.borrow().clone()) {
                return op.forward(x, self);
            }
        }
        Tensor::batch_norm(
            x,
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            Self::MOMENTUM,
            Self::EPS,
            true,
        )
    }
}

/// Linear layer with the official init: weight and bias ~ U(±1/√fan_in).
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(p: Path, cin: i64, cout: i64, bias: bool) -> Self {
        let bound = 1.0 / (cin as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let weight = p.var("weight", &[cout, cin], init);
        let bias = bias.then(|| p.var("bias", &[cout], init));
        Self { weight, bias }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

/// `F.normalize(x, dim=1)`: x / max(‖x‖₂, 1e-12).
pub fn l2_normalize(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12)
}
