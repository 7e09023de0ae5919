//! Linear evaluation as the official `inference.py::lineval` (`--clf_type lbfgs`).
//!
//! A linear classifier (weight and bias initialised N(0, 0.01²)) is fitted full-batch on frozen
//! features by `torch.optim.LBFGS` semantics ported to tch ([`Lbfgs`]: lr 1, max_iter 1000, max_eval
//! 1250, history 100, no line search, tolerance_grad 1e-7, tolerance_change 1e-9). The objective for a
//! regularisation weight w is mean cross-entropy + Σ_{p ∈ {W, b}} ½·w·mean(p²). The sweep goes over
//! `torch.logspace(-6, 5, 45)` in increasing order with **one** `step()` per w, warm-starting both the
//! classifier and the L-BFGS state (history, direction, previous gradient). The classifier with the
//! best validation accuracy (strict `>`, so the earliest w wins ties) is kept and its test accuracy
//! reported.
//!
//! Runs on the device and in the float kind of the feature tensors (the official code: f32 on GPU).
//! The warm-started sweep is not bit-reproducible across libraries; each w's optimum is (the objective
//! is strictly convex), which is what the reference vectors check.
//!
//! Cached features: see [`FeatureSet`] for the safetensors layout.
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

pub use super::error::EvalError;

/// Settings of the official protocol (defaults) and a few documented extensions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinearEvalConfig {
    /// Regularisation weights, in sweep order (default `torch.logspace(-6, 5, 45)` in f32).
    pub weight_decays: Vec<f64>,
    /// `LBFGS(max_iter=...)`; `max_eval` is `max_iter * 5 / 4` as in torch.
    pub max_iter: usize,
    pub history_size: usize,
    pub lr: f64,
    pub tolerance_grad: f64,
    pub tolerance_change: f64,
    /// Carry classifier and L-BFGS state across the sweep (official). `false` restarts each w from the
    /// same initialisation with a fresh optimiser.
    pub warm_start: bool,
    /// Penalise the bias too (official). `false` gives sklearn's convention (intercept not penalised).
    pub penalize_bias: bool,
    /// Seed of the N(0, 0.01²) initialisation (drawn on the CPU, then moved to the device).
    pub seed: i64,
    /// Standard deviation of the initialisation.
    pub init_std: f64,
}

/// `torch.logspace(-6, 5, 45)` (float32): 10^(−6 + 0.25·i) rounded to f32.
pub fn official_weight_decays() -> Vec<f64> {
    (0..45)
        .map(|i| 10f64.powf(-6.0 + 0.25 * i as f64) as f32 as f64)
        .collect()
}

impl Default for LinearEvalConfig {
    fn default() -> Self {
        LinearEvalConfig {
            weight_decays: official_weight_decays(),
            max_iter: 1000,
            history_size: 100,
            lr: 1.0,
            tolerance_grad: 1e-7,
            tolerance_change: 1e-9,
            warm_start: true,
            penalize_bias: true,
            seed: 1234,
            init_std: 0.01,
        }
    }
}

/// One point of the sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    pub weight_decay: f64,
    /// Objective value at the end of the step.
    pub objective: f64,
    pub train_accuracy: f64,
    pub val_accuracy: f64,
    /// L-BFGS iterations taken in this step.
    pub iterations: usize,
}

/// Result of [`linear_eval`]. Accuracies are fractions in [0, 1] (the paper prints 100×).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinearEvalResult {
    pub test_accuracy: f64,
    pub val_accuracy: f64,
    pub best_weight_decay: f64,
    /// Index of the selected w in the sweep.
    pub best_index: usize,
    pub num_classes: i64,
    pub sweep: Vec<SweepPoint>,
    /// The selected classifier (not serialised).
    #[serde(skip)]
    pub classifier: Option<LinearClassifier>,
}

/// A fitted linear classifier `logits = x Wᵀ + b`.
#[derive(Debug)]
pub struct LinearClassifier {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Clone for LinearClassifier {
    fn clone(&self) -> Self {
        LinearClassifier {
            weight: self.weight.copy(),
            bias: self.bias.copy(),
        }
    }
}

impl LinearClassifier {
    pub fn logits(&self, x: &Tensor) -> Tensor {
        tch::no_grad(|| x.to_kind(self.weight.kind()).matmul(&self.weight.tr()) + &self.bias)
    }
    /// Top-1 accuracy (fraction) on features `x` with labels `y`.
    pub fn accuracy(&self, x: &Tensor, y: &Tensor) -> f64 {
        accuracy_of(&self.logits(x), y)
    }
}

/// Fraction of rows whose arg-max logit equals the label.
pub fn accuracy_of(logits: &Tensor, y: &Tensor) -> f64 {
    let n = y.size()[0];
    if n == 0 {
        return f64::NAN;
    }
    let correct = logits
        .argmax(1, false)
        .eq_tensor(&y.to_device(logits.device()))
        .to_kind(Kind::Int64)
        .sum(Kind::Int64)
        .int64_value(&[]);
    correct as f64 / n as f64
}

/// The regularised softmax-regression objective and its gradient with respect to θ = [vec(W), b].
struct Objective<'a> {
    x: &'a Tensor,
    onehot: Tensor,
    y: &'a Tensor,
    k: i64,
    d: i64,
    w: f64,
    penalize_bias: bool,
}

impl Objective<'_> {
    fn split(&self, theta: &Tensor) -> (Tensor, Tensor) {
        (
            theta.narrow(0, 0, self.k * self.d).view([self.k, self.d]),
            theta.narrow(0, self.k * self.d, self.k),
        )
    }
    /// (loss, flat gradient).
    fn eval(&self, theta: &Tensor) -> (f64, Tensor) {
        tch::no_grad(|| {
            let (wm, b) = self.split(theta);
            let n = self.x.size()[0] as f64;
            let kind = theta.kind();
            let logp = (self.x.matmul(&wm.tr()) + &b).log_softmax(1, kind);
            let ce = -logp.gather(1, &self.y.unsqueeze(1), false).mean(kind);
            let g = (logp.exp() - &self.onehot) / n;
            let mut gw = g.tr().matmul(self.x);
            let mut gb = g.sum_dim_intlist(0, false, kind);
            let mut loss = ce + wm.square().mean(kind) * (0.5 * self.w);
            gw += &wm * (self.w / (self.k * self.d) as f64);
            if self.penalize_bias {
                loss += b.square().mean(kind) * (0.5 * self.w);
                gb += &b * (self.w / self.k as f64);
            }
            (
                loss.double_value(&[]),
                Tensor::cat(&[gw.flatten(0, -1), gb], 0),
            )
        })
    }
}

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

    /// Total function evaluations so far (torch `state['func_evals']`).
    pub fn func_evals(&self) -> usize {
        self.func_evals
    }

    /// One `optimizer.step(closure)`: updates `theta` in place; returns (loss at entry, final loss,
    /// iterations).
    fn step(
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

fn check_xy(x: &Tensor, y: &Tensor, what: &str) -> Result<i64, EvalError> {
    let xs = x.size();
    let ys = y.size();
    if xs.len() != 2 {
        return Err(EvalError::invalid(
            format!("{what} features"),
            format!("expected (N, D), got {xs:?}"),
        ));
    }
    if ys.len() != 1 || ys[0] != xs[0] {
        return Err(EvalError::invalid(
            format!("{what} labels"),
            format!("expected ({},), got {ys:?}", xs[0]),
        ));
    }
    if y.kind() != Kind::Int64 {
        return Err(EvalError::invalid(
            format!("{what} labels"),
            format!("expected int64, got {:?}", y.kind()),
        ));
    }
    if !matches!(x.kind(), Kind::Float | Kind::Double) {
        return Err(EvalError::invalid(
            format!("{what} features"),
            format!("expected float32/float64, got {:?}", x.kind()),
        ));
    }
    Ok(xs[1])
}

/// Minimises the objective for one w from `theta0` with a fresh optimiser until convergence (helper
/// for checking per-w optima). Returns (θ, loss).
pub fn fit_single(
    x: &Tensor,
    y: &Tensor,
    num_classes: i64,
    w: f64,
    cfg: &LinearEvalConfig,
    theta0: &Tensor,
) -> (LinearClassifier, f64) {
    let d = x.size()[1];
    let obj = Objective {
        x,
        onehot: y.onehot(num_classes).to_kind(x.kind()),
        y,
        k: num_classes,
        d,
        w,
        penalize_bias: cfg.penalize_bias,
    };
    let mut opt = Lbfgs::new(cfg);
    let mut theta = theta0.to_kind(x.kind()).to_device(x.device());
    let (_, loss, _) = opt.step(&mut theta, &|t| obj.eval(t));
    let (wm, b) = obj.split(&theta);
    (
        LinearClassifier {
            weight: wm.copy(),
            bias: b.copy(),
        },
        loss,
    )
}

/// The official linear-evaluation protocol. Features f32/f64 (N, D), labels int64 (N); every tensor is
/// moved to `train_x`'s device. The number of classes is 1 + the largest label in any split.
pub fn linear_eval(
    train_x: &Tensor,
    train_y: &Tensor,
    val_x: &Tensor,
    val_y: &Tensor,
    test_x: &Tensor,
    test_y: &Tensor,
    cfg: &LinearEvalConfig,
) -> Result<LinearEvalResult, EvalError> {
    let dim = check_xy(train_x, train_y, "train")?;
    for (x, y, w) in [(val_x, val_y, "val"), (test_x, test_y, "test")] {
        let dd = check_xy(x, y, w)?;
        if dd != dim {
            return Err(EvalError::invalid(
                format!("{w} features"),
                format!("dimension {dd} differs from train's {dim}"),
            ));
        }
    }
    if train_x.size()[0] == 0 {
        return Err(EvalError::invalid("train features", "no samples"));
    }
    if cfg.weight_decays.is_empty() {
        return Err(EvalError::invalid(
            "LinearEvalConfig.weight_decays",
            "empty sweep",
        ));
    }
    let dev = train_x.device();
    let kind = train_x.kind();
    let (vx, vy, tx, ty) = (
        val_x.to_device(dev).to_kind(kind),
        val_y.to_device(dev),
        test_x.to_device(dev).to_kind(kind),
        test_y.to_device(dev),
    );
    let min_label = [train_y, val_y, test_y]
        .iter()
        .filter(|t| t.numel() > 0)
        .map(|t| t.min().int64_value(&[]))
        .min()
        .unwrap_or(0);
    if min_label < 0 {
        return Err(EvalError::invalid(
            "labels",
            format!("negative label {min_label}"),
        ));
    }
    let k = 1 + [train_y, val_y, test_y]
        .iter()
        .filter(|t| t.numel() > 0)
        .map(|t| t.max().int64_value(&[]))
        .max()
        .unwrap_or(0);
    let init = || {
        let _rng = crate::util::rng::torch_rng_lock();
        tch::manual_seed(cfg.seed);
        let w = Tensor::randn([k, dim], (Kind::Double, Device::Cpu)) * cfg.init_std;
        let b = Tensor::randn([k], (Kind::Double, Device::Cpu)) * cfg.init_std;
        Tensor::cat(&[w.flatten(0, -1), b], 0)
            .to_kind(kind)
            .to_device(dev)
    };
    let theta0 = init();
    let mut theta = theta0.copy();
    let mut opt = Lbfgs::new(cfg);
    let onehot = train_y.onehot(k).to_kind(kind);
    let mut best: Option<(f64, usize, LinearClassifier)> = None;
    let mut sweep = Vec::new();
    for (i, &w) in cfg.weight_decays.iter().enumerate() {
        if !cfg.warm_start {
            theta = theta0.copy();
            opt = Lbfgs::new(cfg);
        }
        let obj = Objective {
            x: train_x,
            onehot: onehot.shallow_clone(),
            y: train_y,
            k,
            d: dim,
            w: round_to(kind, w),
            penalize_bias: cfg.penalize_bias,
        };
        let (_, loss, iters) = opt.step(&mut theta, &|t| obj.eval(t));
        let (wm, b) = obj.split(&theta);
        let clf = LinearClassifier {
            weight: wm.copy(),
            bias: b.copy(),
        };
        let val_acc = clf.accuracy(&vx, &vy);
        sweep.push(SweepPoint {
            weight_decay: w,
            objective: loss,
            train_accuracy: clf.accuracy(train_x, train_y),
            val_accuracy: val_acc,
            iterations: iters,
        });
        if best.as_ref().is_none_or(|(b, _, _)| val_acc > *b) {
            best = Some((val_acc, i, clf));
        }
    }
    let (val_accuracy, best_index, clf) = best.expect("non-empty sweep");
    Ok(LinearEvalResult {
        test_accuracy: clf.accuracy(&tx, &ty),
        val_accuracy,
        best_weight_decay: cfg.weight_decays[best_index],
        best_index,
        num_classes: k,
        sweep,
        classifier: Some(clf),
    })
}

/// Cached features in one safetensors file. Tensor names:
/// * `train.x`, `val.x`, `test.x`: float32 (or float64) features (N, D), not normalised;
/// * `train.y`, `val.y`, `test.y`: int64 labels (N);
/// * optionally more test sets `extra.<name>.x` / `extra.<name>.y` (e.g. the IN-9 variants
///   `extra.mixed_same.x`), each evaluated with the selected classifier.
#[derive(Debug)]
pub struct FeatureSet {
    pub train: (Tensor, Tensor),
    pub val: (Tensor, Tensor),
    pub test: (Tensor, Tensor),
    pub extra: BTreeMap<String, (Tensor, Tensor)>,
}

impl FeatureSet {
    pub fn load(path: &Path, device: Device) -> Result<Self, EvalError> {
        let named = Tensor::read_safetensors(path)
            .map_err(|e| EvalError::format(path, format!("cannot read safetensors: {e}")))?;
        let mut map: BTreeMap<String, Tensor> = named.into_iter().collect();
        fn take(
            map: &mut BTreeMap<String, Tensor>,
            name: &str,
            path: &Path,
            device: Device,
        ) -> Result<Tensor, EvalError> {
            map.remove(name)
                .map(|t| t.to_device(device))
                .ok_or_else(|| EvalError::format(path, format!("missing tensor '{name}'")))
        }
        let train = (
            take(&mut map, "train.x", path, device)?,
            take(&mut map, "train.y", path, device)?,
        );
        let val = (
            take(&mut map, "val.x", path, device)?,
            take(&mut map, "val.y", path, device)?,
        );
        let test = (
            take(&mut map, "test.x", path, device)?,
            take(&mut map, "test.y", path, device)?,
        );
        let names: Vec<String> = map
            .keys()
            .filter_map(|k| {
                k.strip_prefix("extra.")
                    .and_then(|r| r.strip_suffix(".x"))
                    .map(String::from)
            })
            .collect();
        let mut extra = BTreeMap::new();
        for n in names {
            let x = take(&mut map, &format!("extra.{n}.x"), path, device)?;
            let y = take(&mut map, &format!("extra.{n}.y"), path, device)?;
            extra.insert(n, (x, y));
        }
        if let Some(k) = map.keys().next() {
            return Err(EvalError::format(
                path,
                format!("unexpected tensor '{k}' (see FeatureSet docs for the layout)"),
            ));
        }
        Ok(FeatureSet {
            train,
            val,
            test,
            extra,
        })
    }

    pub fn save(&self, path: &Path) -> Result<(), EvalError> {
        let mut v: Vec<(String, Tensor)> = vec![
            ("train.x".into(), self.train.0.to_device(Device::Cpu)),
            ("train.y".into(), self.train.1.to_device(Device::Cpu)),
            ("val.x".into(), self.val.0.to_device(Device::Cpu)),
            ("val.y".into(), self.val.1.to_device(Device::Cpu)),
            ("test.x".into(), self.test.0.to_device(Device::Cpu)),
            ("test.y".into(), self.test.1.to_device(Device::Cpu)),
        ];
        for (n, (x, y)) in &self.extra {
            v.push((format!("extra.{n}.x"), x.to_device(Device::Cpu)));
            v.push((format!("extra.{n}.y"), y.to_device(Device::Cpu)));
        }
        Tensor::write_safetensors(&v, path)
            .map_err(|e| EvalError::format(path, format!("cannot write safetensors: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logspace_matches_torch() {
        let w = official_weight_decays();
        assert_eq!(w.len(), 45);
        assert_eq!(w[0], 1e-6f32 as f64);
        assert_eq!(w[24], 1.0);
        assert_eq!(w[44], 1e5);
    }

    #[test]
    fn analytic_gradient_matches_autograd() {
        tch::manual_seed(3);
        let x = Tensor::randn([20, 5], (Kind::Double, Device::Cpu));
        let y = Tensor::randint(3, [20], (Kind::Int64, Device::Cpu));
        let theta =
            (Tensor::randn([3 * 5 + 3], (Kind::Double, Device::Cpu)) * 0.3).set_requires_grad(true);
        let obj = Objective {
            x: &x,
            onehot: y.onehot(3).to_kind(Kind::Double),
            y: &y,
            k: 3,
            d: 5,
            w: 0.7,
            penalize_bias: true,
        };
        let (wm, b) = obj.split(&theta);
        let ce = -(x.matmul(&wm.tr()) + &b)
            .log_softmax(1, Kind::Double)
            .gather(1, &y.unsqueeze(1), false)
            .mean(Kind::Double);
        let loss =
            ce + wm.square().mean(Kind::Double) * 0.35 + b.square().mean(Kind::Double) * 0.35;
        loss.backward();
        let (l, g) = obj.eval(&theta.detach());
        assert!(
            (l - loss.double_value(&[])).abs() < 1e-12,
            "{l} vs {}",
            loss.double_value(&[])
        );
        let diff = (g - theta.grad()).abs().max().double_value(&[]);
        assert!(diff < 1e-12, "{diff}");
    }
}
