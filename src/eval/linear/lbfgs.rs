//! `torch.optim.LBFGS` without line search (`line_search_fn=None`), its state kept across `step` calls,
//! on host vectors. The official sweep runs one `step` per regularisation weight with the state carried
//! over, so the history and the last direction matter.
//!
//! torch keeps the scalars of the recursion (`ys`, `ro`, `H_diag`, `al`, `be`, `t`) as 0-d tensors of the
//! parameters' dtype; [`Real::round`] rounds them the same way, and vector updates run in that dtype.
//! Dot products are summed in f64 and then rounded, which is at least as accurate as torch's BLAS `dot`.
//!
//! One shortcut: once the loss is NaN (the iteration diverged: without a line search this happens at small
//! weight decays on un-normalised features), torch keeps iterating up to `max_iter` with NaN directions,
//! which can only leave NaN parameters. Here the parameters are set to NaN and the step ends at once, so
//! the same classifier comes out in a fraction of the time; only the reported iteration count differs.
use std::collections::VecDeque;

use super::real::Real;

/// `torch.optim.LBFGS` settings and state.
#[derive(Debug, Clone)]
pub struct Lbfgs<T: Real> {
    pub lr: f64,
    pub max_iter: usize,
    pub max_eval: usize,
    pub tolerance_grad: f64,
    pub tolerance_change: f64,
    pub history_size: usize,
    n_iter: usize,
    func_evals: usize,
    /// Last direction (empty before the first iteration).
    d: Vec<T>,
    t: f64,
    old_dirs: VecDeque<Vec<T>>,
    old_stps: VecDeque<Vec<T>>,
    ro: VecDeque<f64>,
    h_diag: f64,
    prev_flat_grad: Vec<T>,
    prev_loss: f64,
    /// Buffers for the next (y, s) pair.
    spare: Option<(Vec<T>, Vec<T>)>,
}

/// Σ a·b in f64.
fn dot<T: Real>(a: &[T], b: &[T]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x.f64() * y.f64()).sum()
}

/// max |a|, NaN when any element is (as torch's `abs().max()`; `f64::max` would skip it).
fn abs_max<T: Real>(a: impl Iterator<Item = T>) -> f64 {
    a.fold(0.0f64, |m, x| {
        let v = x.f64().abs();
        if v.is_nan() || m.is_nan() {
            f64::NAN
        } else {
            m.max(v)
        }
    })
}

/// y ← y + α·x in T.
fn axpy<T: Real>(alpha: T, x: &[T], y: &mut [T]) {
    y.iter_mut().zip(x).for_each(|(y, &x)| *y += alpha * x);
}

impl<T: Real> Lbfgs<T> {
    pub fn new(
        lr: f64,
        max_iter: usize,
        history_size: usize,
        tolerance_grad: f64,
        tolerance_change: f64,
    ) -> Self {
        Lbfgs {
            lr,
            max_iter,
            // torch: max_eval = max_iter * 5 // 4
            max_eval: max_iter * 5 / 4,
            tolerance_grad,
            tolerance_change,
            history_size,
            n_iter: 0,
            func_evals: 0,
            d: Vec::new(),
            t: 0.0,
            old_dirs: VecDeque::new(),
            old_stps: VecDeque::new(),
            ro: VecDeque::new(),
            h_diag: 1.0,
            prev_flat_grad: Vec::new(),
            prev_loss: 0.0,
            spare: None,
        }
    }

    /// Total function evaluations so far (torch `state['func_evals']`).
    pub fn func_evals(&self) -> usize {
        self.func_evals
    }

    /// One `optimizer.step(closure)`. `f(θ, ∇)` returns the loss at θ and writes the gradient into ∇.
    /// Updates `theta` in place; returns (loss at entry, final loss, iterations).
    pub fn step(
        &mut self,
        theta: &mut [T],
        f: &mut dyn FnMut(&[T], &mut [T]) -> f64,
    ) -> (f64, f64, usize) {
        let p = theta.len();
        let mut flat_grad = vec![T::zero(); p];
        let orig_loss = f(theta, &mut flat_grad);
        let mut loss = orig_loss;
        let mut current_evals = 1;
        self.func_evals += 1;
        if loss.is_nan() {
            theta.fill(T::of(f64::NAN));
            return (orig_loss, loss, 0);
        }
        let mut opt_cond = abs_max(flat_grad.iter().copied()) <= self.tolerance_grad;
        if opt_cond {
            return (orig_loss, loss, 0);
        }
        if self.prev_flat_grad.len() != p {
            self.prev_flat_grad = vec![T::zero(); p];
        }
        let mut d = vec![T::zero(); p];
        let mut al: Vec<f64> = Vec::with_capacity(self.history_size);
        let mut n_iter = 0;
        while n_iter < self.max_iter {
            n_iter += 1;
            self.n_iter += 1;
            if self.n_iter == 1 {
                self.old_dirs.clear();
                self.old_stps.clear();
                self.ro.clear();
                self.h_diag = 1.0;
                d.iter_mut().zip(&flat_grad).for_each(|(d, &g)| *d = -g);
            } else {
                self.update_history(&flat_grad);
                // Two-loop recursion: d = −H·∇.
                let num_old = self.old_dirs.len();
                al.clear();
                al.resize(num_old, 0.0);
                let q = &mut d;
                q.iter_mut().zip(&flat_grad).for_each(|(q, &g)| *q = -g);
                for i in (0..num_old).rev() {
                    al[i] = T::round(T::round(dot(&self.old_stps[i], q)) * self.ro[i]);
                    axpy(T::of(-al[i]), &self.old_dirs[i], q);
                }
                let h = T::of(self.h_diag);
                q.iter_mut().for_each(|r| *r = *r * h);
                let r = q;
                let pairs = self.old_dirs.iter().zip(&self.old_stps).zip(&self.ro);
                for (((y, s), &ro), &al_i) in pairs.zip(&al) {
                    let be_i = T::round(T::round(dot(y, r)) * ro);
                    axpy(T::of(T::round(al_i - be_i)), s, r);
                }
            }
            self.prev_flat_grad.copy_from_slice(&flat_grad);
            self.prev_loss = loss;
            self.t = if self.n_iter == 1 {
                let l1 = T::round(flat_grad.iter().map(|g| g.f64().abs()).sum());
                let inv = T::round(1.0 / l1);
                T::round(if 1.0 < inv { 1.0 } else { inv } * self.lr)
            } else {
                self.lr
            };
            let gtd = T::round(dot(&flat_grad, &d));
            if gtd > -self.tolerance_change {
                self.set_direction(&d);
                break;
            }
            let mut ls_func_evals = 0;
            let t = T::of(self.t);
            axpy(t, &d, theta);
            if n_iter != self.max_iter {
                loss = f(theta, &mut flat_grad);
                if loss.is_nan() {
                    theta.fill(T::of(f64::NAN));
                    self.func_evals += 1;
                    self.set_direction(&d);
                    break;
                }
                opt_cond = abs_max(flat_grad.iter().copied()) <= self.tolerance_grad;
                ls_func_evals = 1;
            }
            current_evals += ls_func_evals;
            self.func_evals += ls_func_evals;
            let small_step = abs_max(d.iter().map(|&x| x * t)) <= self.tolerance_change;
            self.set_direction(&d);
            if n_iter == self.max_iter || current_evals >= self.max_eval || opt_cond || small_step {
                break;
            }
            if (loss - self.prev_loss).abs() < self.tolerance_change {
                break;
            }
        }
        (orig_loss, loss, n_iter)
    }

    fn set_direction(&mut self, d: &[T]) {
        self.d.clear();
        self.d.extend_from_slice(d);
    }

    /// torch: `y = g − g_prev`, `s = d·t`; the pair is kept when `y·s > 1e-10` (curvature condition),
    /// dropping the oldest one when the history is full.
    fn update_history(&mut self, flat_grad: &[T]) {
        let t = T::of(self.t);
        // Buffers of a dropped or rejected pair are reused: no allocation once the history is full.
        let (mut y, mut s) = self.spare.take().unwrap_or_default();
        y.clear();
        s.clear();
        y.extend(
            flat_grad
                .iter()
                .zip(&self.prev_flat_grad)
                .map(|(&g, &p)| g - p),
        );
        s.extend(self.d.iter().map(|&d| d * t));
        let ys = T::round(dot(&y, &s));
        if ys > 1e-10 {
            if self.old_dirs.len() == self.history_size {
                if let (Some(oy), Some(os)) = (self.old_dirs.pop_front(), self.old_stps.pop_front())
                {
                    self.spare = Some((oy, os));
                }
                self.ro.pop_front();
            }
            let yy = T::round(dot(&y, &y));
            self.old_dirs.push_back(y);
            self.old_stps.push_back(s);
            self.ro.push_back(T::round(1.0 / ys));
            self.h_diag = T::round(ys / yy);
        } else {
            self.spare = Some((y, s));
        }
    }
}
