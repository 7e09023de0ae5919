//! The L-BFGS of commit 87c178b (`src/eval/linear.rs`, before the recursion moved to host vectors in
//! ab111b9 and its neighbours): the two-loop recursion in libtorch tensor operations on the parameters'
//! device. Copied for the before/after timing in `benches/linear_eval.rs`; the code of `step` is that
//! commit's, same operations in the same order. Only changes: the constructor takes the settings it reads
//! (the config type has gained fields since), and the unused `func_evals` accessor is left out.
use contracam::eval::linear::LinearEvalConfig;
use tch::{Kind, Tensor};

/// `torch.optim.LBFGS` without line search, state kept across `step` calls.
pub struct Lbfgs {
    pub lr: f64,
    pub max_iter: usize,
    pub max_eval: usize,
    pub tolerance_grad: f64,
    pub tolerance_change: f64,
    pub history_size: usize,
    n_iter: usize,
    func_evals: usize,
    d: Option<Tensor>,
    t: f64,
    old_dirs: Vec<Tensor>,
    old_stps: Vec<Tensor>,
    ro: Vec<f64>,
    h_diag: f64,
    prev_flat_grad: Option<Tensor>,
    prev_loss: f64,
}

/// Scalars that torch keeps as 0-d float tensors are rounded to the tensor's kind here.
fn round_to(kind: Kind, v: f64) -> f64 {
    if kind == Kind::Float {
        v as f32 as f64
    } else {
        v
    }
}

impl Lbfgs {
    pub fn new(cfg: &LinearEvalConfig) -> Self {
        Lbfgs {
            lr: cfg.lr,
            max_iter: cfg.max_iter,
            max_eval: cfg.max_iter * 5 / 4,
            tolerance_grad: cfg.tolerance_grad,
            tolerance_change: cfg.tolerance_change,
            history_size: cfg.history_size,
            n_iter: 0,
            func_evals: 0,
            d: None,
            t: 0.0,
            old_dirs: Vec::new(),
            old_stps: Vec::new(),
            ro: Vec::new(),
            h_diag: 1.0,
            prev_flat_grad: None,
            prev_loss: 0.0,
        }
    }

    /// One `optimizer.step(closure)`: updates `theta` in place; returns (loss at entry, final loss,
    /// iterations).
    pub fn step(
        &mut self,
        theta: &mut Tensor,
        f: &dyn Fn(&Tensor) -> (f64, Tensor),
    ) -> (f64, f64, usize) {
        let kind = theta.kind();
        let (orig_loss, mut flat_grad) = f(theta);
        let mut loss = orig_loss;
        let mut current_evals = 1;
        self.func_evals += 1;
        let absmax = |t: &Tensor| t.abs().max().double_value(&[]);
        let mut opt_cond = absmax(&flat_grad) <= self.tolerance_grad;
        if opt_cond {
            return (orig_loss, loss, 0);
        }
        let mut n_iter = 0;
        while n_iter < self.max_iter {
            n_iter += 1;
            self.n_iter += 1;
            let d = if self.n_iter == 1 {
                self.old_dirs.clear();
                self.old_stps.clear();
                self.ro.clear();
                self.h_diag = 1.0;
                -&flat_grad
            } else {
                let prev = self
                    .prev_flat_grad
                    .as_ref()
                    .expect("set after the first iteration");
                let y = &flat_grad - prev;
                let s = self.d.as_ref().expect("set after the first iteration") * self.t;
                let ys = y.dot(&s).double_value(&[]);
                if ys > 1e-10 {
                    if self.old_dirs.len() == self.history_size {
                        let _ = self.old_dirs.remove(0);
                        let _ = self.old_stps.remove(0);
                        let _ = self.ro.remove(0);
                    }
                    let yy = y.dot(&y).double_value(&[]);
                    self.old_dirs.push(y);
                    self.old_stps.push(s);
                    self.ro.push(round_to(kind, 1.0 / ys));
                    self.h_diag = round_to(kind, ys / yy);
                }
                let num_old = self.old_dirs.len();
                let mut al = vec![0.0f64; num_old];
                let mut q = -&flat_grad;
                for i in (0..num_old).rev() {
                    al[i] = round_to(
                        kind,
                        self.old_stps[i].dot(&q).double_value(&[]) * self.ro[i],
                    );
                    q -= &self.old_dirs[i] * al[i];
                }
                let mut r = &q * self.h_diag;
                #[allow(clippy::needless_range_loop)] // mirrors torch's loop over the history
                for i in 0..num_old {
                    let be_i = round_to(
                        kind,
                        self.old_dirs[i].dot(&r).double_value(&[]) * self.ro[i],
                    );
                    r += &self.old_stps[i] * round_to(kind, al[i] - be_i);
                }
                r
            };
            match &mut self.prev_flat_grad {
                Some(p) => {
                    p.copy_(&flat_grad);
                }
                None => self.prev_flat_grad = Some(flat_grad.copy()),
            }
            self.prev_loss = loss;
            self.t = if self.n_iter == 1 {
                let l1 = flat_grad.abs().sum(kind).double_value(&[]);
                let inv = round_to(kind, 1.0 / l1);
                round_to(kind, if 1.0 < inv { 1.0 } else { inv } * self.lr)
            } else {
                self.lr
            };
            let gtd = flat_grad.dot(&d).double_value(&[]);
            if gtd > -self.tolerance_change {
                self.d = Some(d);
                break;
            }
            let mut ls_func_evals = 0;
            tch::no_grad(|| {
                *theta += &d * self.t;
            });
            if n_iter != self.max_iter {
                let (l, g) = f(theta);
                loss = l;
                flat_grad = g;
                opt_cond = absmax(&flat_grad) <= self.tolerance_grad;
                ls_func_evals = 1;
            }
            current_evals += ls_func_evals;
            self.func_evals += ls_func_evals;
            let small_step = absmax(&(&d * self.t)) <= self.tolerance_change;
            self.d = Some(d);
            if n_iter == self.max_iter || current_evals >= self.max_eval || opt_cond || small_step {
                break;
            }
            if (loss - self.prev_loss).abs() < self.tolerance_change {
                break;
            }
        }
        (orig_loss, loss, n_iter)
    }
}
