//! The official objective for one regularisation weight w, mean cross-entropy + Σ_{p ∈ {W, b}} ½·w·mean(p²),
//! and its gradient with respect to θ = [vec(W), b], evaluated either on the host (plain Rust, one
//! thread, `matrixmultiply` for the two products) or with libtorch on the features' device.
//!
//! Both follow torch's order of operations in the parameters' dtype (`log_softmax` as max, Σexp, log;
//! the gradient `(softmax − onehot)/N`); sums over samples are accumulated in f64 and rounded.
use tch::Tensor;

use super::real::{matmul_a_bt, matmul_at_b, Real};

/// Training features and labels copied to host memory.
pub(super) struct HostObjective<T: Real> {
    x: Vec<T>,
    y: Vec<usize>,
    n: usize,
    d: usize,
    k: usize,
    /// n×k logits, then the gradient of the loss with respect to them.
    scratch: Vec<T>,
}

impl<T: Real> HostObjective<T> {
    /// `x` row-major n×d, labels in 0..k.
    pub(super) fn new(x: Vec<T>, y: Vec<usize>, d: usize, k: usize) -> Self {
        let n = y.len();
        debug_assert_eq!(x.len(), n * d);
        HostObjective {
            x,
            y,
            n,
            d,
            k,
            scratch: vec![T::zero(); n * k],
        }
    }

    /// Loss at θ; writes ∇ into `grad`.
    pub(super) fn eval(&mut self, theta: &[T], grad: &mut [T], w: f64, penalize_bias: bool) -> f64 {
        let (n, d, k) = (self.n, self.d, self.k);
        let (wm, b) = theta.split_at(k * d);
        let (gw, gb) = grad.split_at_mut(k * d);
        matmul_a_bt(&self.x, wm, &mut self.scratch, n, d, k);
        let n_t = T::of(n as f64);
        let mut ce = 0.0f64;
        for (row, &yi) in self.scratch.chunks_exact_mut(k).zip(&self.y) {
            row.iter_mut().zip(b).for_each(|(l, &bj)| *l += bj);
            let m = row
                .iter()
                .fold(T::of(f64::NEG_INFINITY), |a, &v| if v > a { v } else { a });
            let s: f64 = row.iter().map(|&v| (v - m).exp().f64()).sum();
            let lse = T::of(s).ln();
            for (j, l) in row.iter_mut().enumerate() {
                let logp = (*l - m) - lse;
                if j == yi {
                    ce -= logp.f64();
                    *l = (logp.exp() - T::of(1.0)) / n_t;
                } else {
                    *l = logp.exp() / n_t;
                }
            }
        }
        let ce = T::of(ce / n as f64);
        matmul_at_b(&self.scratch, &self.x, gw, k, n, d);
        gb.iter_mut().enumerate().for_each(|(j, g)| {
            *g = T::of(self.scratch[j..].iter().step_by(k).map(|v| v.f64()).sum());
        });
        let mean_sq =
            |p: &[T]| T::of(p.iter().map(|v| v.f64() * v.f64()).sum::<f64>() / p.len() as f64);
        let half_w = T::of(0.5 * w);
        let mut loss = ce + mean_sq(wm) * half_w;
        let cw = T::of(w / (k * d) as f64);
        gw.iter_mut().zip(wm).for_each(|(g, &p)| *g += p * cw);
        if penalize_bias {
            loss += mean_sq(b) * half_w;
            let cb = T::of(w / k as f64);
            gb.iter_mut().zip(b).for_each(|(g, &p)| *g += p * cb);
        }
        loss.f64()
    }
}

/// The same objective with libtorch, features kept on their device; θ and ∇ cross to the host per call.
pub(super) struct DeviceObjective<'a> {
    pub x: &'a Tensor,
    pub y: &'a Tensor,
    pub onehot: Tensor,
    pub k: i64,
    pub d: i64,
}

impl DeviceObjective<'_> {
    pub(super) fn eval_tensor(&self, theta: &Tensor, w: f64, penalize_bias: bool) -> (f64, Tensor) {
        tch::no_grad(|| {
            let wm = theta.narrow(0, 0, self.k * self.d).view([self.k, self.d]);
            let b = theta.narrow(0, self.k * self.d, self.k);
            let n = self.x.size()[0] as f64;
            let kind = theta.kind();
            let logp = (self.x.matmul(&wm.tr()) + &b).log_softmax(1, kind);
            let ce = -logp.gather(1, &self.y.unsqueeze(1), false).mean(kind);
            let g = (logp.exp() - &self.onehot) / n;
            let mut gw = g.tr().matmul(self.x);
            let mut gb = g.sum_dim_intlist(0, false, kind);
            let mut loss = ce + wm.square().mean(kind) * (0.5 * w);
            gw += &wm * (w / (self.k * self.d) as f64);
            if penalize_bias {
                loss += b.square().mean(kind) * (0.5 * w);
                gb += &b * (w / self.k as f64);
            }
            (
                loss.double_value(&[]),
                Tensor::cat(&[gw.flatten(0, -1), gb], 0),
            )
        })
    }

    pub(super) fn eval<T: Real>(
        &self,
        theta: &[T],
        grad: &mut [T],
        w: f64,
        penalize_bias: bool,
    ) -> f64 {
        let t = Tensor::from_slice(theta).to_device(self.x.device());
        let (loss, g) = self.eval_tensor(&t, w, penalize_bias);
        g.to_device(tch::Device::Cpu)
            .contiguous()
            .copy_data(grad, grad.len());
        loss
    }
}
