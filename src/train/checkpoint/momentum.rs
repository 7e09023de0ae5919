//! SGD momentum buffers in and out of tch's optimiser, which exposes no state. Both directions go
//! through one libtorch SGD step whose arithmetic is exact:
//! - read: parameters and gradients −0, weight decay 0, momentum 1, lr −1: the buffer becomes
//!   `buf·1 + (−0) = buf` and the parameter `−0 + 1·buf = buf` (every bit, signed zeros included);
//! - write (a fresh optimiser, no buffers yet): gradients = the buffers, weight decay 0: the first step
//!   sets `buf = clone(grad)`.
//!
//! Parameters, gradients, weight decay, momentum and lr are put back afterwards, so the run continues
//! exactly as if nothing had happened.
use tch::nn::Optimizer;
use tch::{Kind, Tensor};

/// The optimiser's settings to put back after a probe.
pub(crate) struct SgdSettings {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
}

/// Gives every parameter a gradient tensor (a backward of their sum), so gradients can be overwritten.
fn define_grads(params: &[Tensor]) {
    if params.iter().all(|p| p.grad().defined()) {
        return;
    }
    let sums: Vec<Tensor> = params.iter().map(|p| p.sum(Kind::Float)).collect();
    Tensor::stack(&sums, 0).sum(Kind::Float).backward();
}

/// The momentum buffer of every parameter (each must have one: call after at least one step).
pub(crate) fn read(opt: &mut Optimizer, params: &[Tensor], put_back: &SgdSettings) -> Vec<Tensor> {
    define_grads(params);
    tch::no_grad(|| {
        let saved: Vec<(Tensor, Tensor)> =
            params.iter().map(|p| (p.copy(), p.grad().copy())).collect();
        for p in params {
            let _ = p.shallow_clone().fill_(-0.0);
            let _ = p.grad().fill_(-0.0);
        }
        opt.set_weight_decay(0.0);
        opt.set_momentum(1.0);
        opt.set_lr(-1.0);
        opt.step();
        let buffers: Vec<Tensor> = params.iter().map(Tensor::copy).collect();
        restore(opt, params, &saved, put_back);
        buffers
    })
}

/// Installs `buffers` as the momentum buffers of a fresh optimiser (one that has not stepped yet).
pub(crate) fn write(
    opt: &mut Optimizer,
    params: &[Tensor],
    buffers: &[Tensor],
    put_back: &SgdSettings,
) {
    define_grads(params);
    tch::no_grad(|| {
        let saved: Vec<(Tensor, Tensor)> =
            params.iter().map(|p| (p.copy(), p.grad().copy())).collect();
        for (p, b) in params.iter().zip(buffers) {
            p.grad().copy_(b);
        }
        opt.set_weight_decay(0.0);
        opt.set_momentum(put_back.momentum);
        opt.step();
        restore(opt, params, &saved, put_back);
    });
}

fn restore(opt: &mut Optimizer, params: &[Tensor], saved: &[(Tensor, Tensor)], s: &SgdSettings) {
    for (p, (value, grad)) in params.iter().zip(saved) {
        p.shallow_clone().copy_(value);
        p.grad().copy_(grad);
    }
    opt.set_weight_decay(s.weight_decay);
    opt.set_momentum(s.momentum);
    opt.set_lr(s.lr);
}
