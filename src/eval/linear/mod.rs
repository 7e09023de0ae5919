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
//! Runs in the float kind of the feature tensors (the official code: f32 on GPU). The L-BFGS state and
//! its two-loop recursion live in host memory ([`Lbfgs`]); the objective runs on the host, in plain Rust
//! on one thread, when the problem is small (N·D·K ≤ [`HOST_MAX_MACS`], e.g. the smoke suite's 1 024 ×
//! 128 features and 6 classes), and with libtorch on the features' device otherwise (COCO-Crop's
//! 118k × 512 × 80), see [`LinearBackend`]. A small problem is dominated by per-operation overhead:
//! libtorch spends more time dispatching, allocating and waking its thread pool than computing.
//! The warm-started sweep is not bit-reproducible across libraries; each w's optimum is (the objective
//! is strictly convex), which is what the reference vectors check.
//!
//! Cached features: see [`FeatureSet`] for the safetensors layout.
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

pub use super::error::EvalError;

mod lbfgs;
mod objective;
mod real;

pub use lbfgs::Lbfgs;
use objective::{DeviceObjective, HostObjective};
pub use real::Real;

/// Largest N·D·K (multiply-adds per product) that [`LinearBackend::Auto`] evaluates on the host.
pub const HOST_MAX_MACS: usize = 1 << 26;

impl std::str::FromStr for LinearBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "host" => Ok(Self::Host),
            "device" => Ok(Self::Device),
            _ => Err(format!("'{s}' is not a backend: auto, host or device")),
        }
    }
}

/// Where the objective is evaluated (the L-BFGS recursion always runs on the host).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinearBackend {
    /// The host for N·D·K ≤ [`HOST_MAX_MACS`], else the device.
    #[default]
    Auto,
    /// Plain Rust on one thread; the training features are copied to host memory.
    Host,
    /// libtorch on the features' device.
    Device,
}

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
    /// Where the objective runs; the optimum is the same either way.
    pub backend: LinearBackend,
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
            backend: LinearBackend::Auto,
        }
    }
}

/// One point of the sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    pub weight_decay: f64,
    /// Objective value at the end of the step; NaN when the step diverged (`null` in JSON).
    #[serde(with = "crate::util::float_json::nan_as_null")]
    pub objective: f64,
    pub train_accuracy: f64,
    pub val_accuracy: f64,
    /// L-BFGS iterations taken in this step.
    pub iterations: usize,
}

impl SweepPoint {
    /// One line for a progress log: `weight decay 1.00e-4: val 61.25 %, train 70.00 %, objective 0.123456,
    /// 12 L-BFGS iterations`.
    pub fn describe(&self) -> String {
        format!(
            "weight decay {:.2e}: val {:.2} %, train {:.2} %, objective {:.6}, {} L-BFGS iterations",
            self.weight_decay,
            100.0 * self.val_accuracy,
            100.0 * self.train_accuracy,
            self.objective,
            self.iterations
        )
    }
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

/// The objective of one training set, on the host or on the device.
enum Fitter<'a, T: Real> {
    Host(HostObjective<T>),
    Device(DeviceObjective<'a>),
}

impl<'a, T: Real> Fitter<'a, T> {
    /// `x` (N, D) of kind `T`, `y` int64 labels in `0..k`.
    fn new(
        x: &'a Tensor,
        y: &'a Tensor,
        k: i64,
        backend: LinearBackend,
    ) -> Result<Self, EvalError> {
        let (n, d) = (x.size()[0], x.size()[1]);
        let host = match backend {
            LinearBackend::Host => true,
            LinearBackend::Device => false,
            LinearBackend::Auto => (n as u128 * d as u128 * k as u128) <= HOST_MAX_MACS as u128,
        };
        Ok(if host {
            let xs = Vec::<T>::try_from(x.to_device(Device::Cpu).contiguous().view([-1]))
                .map_err(super::error::torch)?;
            let ys = Vec::<i64>::try_from(y.to_device(Device::Cpu).contiguous())
                .map_err(super::error::torch)?;
            Fitter::Host(HostObjective::new(
                xs,
                ys.into_iter().map(|v| v as usize).collect(),
                d as usize,
                k as usize,
            ))
        } else {
            Fitter::Device(DeviceObjective {
                x,
                y,
                onehot: y.onehot(k).to_kind(x.kind()),
                k,
                d,
            })
        })
    }

    fn eval(&mut self, theta: &[T], grad: &mut [T], w: f64, penalize_bias: bool) -> f64 {
        match self {
            Fitter::Host(o) => o.eval(theta, grad, w, penalize_bias),
            Fitter::Device(o) => o.eval(theta, grad, w, penalize_bias),
        }
    }
}

impl<T: Real> Lbfgs<T> {
    /// The optimiser the protocol configures.
    pub fn from_config(cfg: &LinearEvalConfig) -> Self {
        Lbfgs::new(
            cfg.lr,
            cfg.max_iter,
            cfg.history_size,
            cfg.tolerance_grad,
            cfg.tolerance_change,
        )
    }
}

/// The classifier θ = [vec(W), b] describes, as tensors on `device`.
fn classifier<T: Real>(theta: &[T], k: i64, d: i64, device: Device) -> LinearClassifier {
    let kd = (k * d) as usize;
    LinearClassifier {
        weight: Tensor::from_slice(&theta[..kd])
            .view([k, d])
            .to_device(device),
        bias: Tensor::from_slice(&theta[kd..]).to_device(device),
    }
}

/// Minimises the objective for one w from `theta0` with a fresh optimiser until convergence (helper
/// for checking per-w optima). Returns (θ, loss).
///
/// # Panics
/// When `x` is not float32/float64 (N, D) or `y` not int64 (N) with labels in `0..num_classes` (use
/// [`linear_eval`] for checked inputs).
pub fn fit_single(
    x: &Tensor,
    y: &Tensor,
    num_classes: i64,
    w: f64,
    cfg: &LinearEvalConfig,
    theta0: &Tensor,
) -> (LinearClassifier, f64) {
    fn fit<T: Real>(
        x: &Tensor,
        y: &Tensor,
        k: i64,
        w: f64,
        cfg: &LinearEvalConfig,
        theta0: &Tensor,
    ) -> Result<(LinearClassifier, f64), EvalError> {
        let d = x.size()[1];
        let mut fitter = Fitter::<T>::new(x, y, k, cfg.backend)?;
        let mut theta = Vec::<T>::try_from(theta0.to_kind(T::KIND).to_device(Device::Cpu))
            .map_err(super::error::torch)?;
        let mut opt = Lbfgs::<T>::from_config(cfg);
        let w = T::round(w);
        let pb = cfg.penalize_bias;
        let (_, loss, _) = opt.step(&mut theta, &mut |t, g| fitter.eval(t, g, w, pb));
        Ok((classifier(&theta, k, d, x.device()), loss))
    }
    let r = match x.kind() {
        Kind::Double => fit::<f64>(x, y, num_classes, w, cfg, theta0),
        _ => fit::<f32>(&x.to_kind(Kind::Float), y, num_classes, w, cfg, theta0),
    };
    match r {
        Ok(v) => v,
        Err(e) => panic!("fit_single: {e}"),
    }
}

/// The libtorch objective for one w on `(x, y)` (labels in `0..k`) as a function of a θ tensor on `x`'s
/// device, returning (loss, ∇): the objective [`LinearBackend::Device`] runs. Exposed for
/// `benches/linear_eval.rs`, which drives it with an earlier version's tensor L-BFGS to time that against
/// [`fit_single`]; the protocol itself goes through [`fit_single`] and [`linear_eval`].
#[doc(hidden)]
pub fn device_objective<'a>(
    x: &'a Tensor,
    y: &'a Tensor,
    k: i64,
    w: f64,
    penalize_bias: bool,
) -> impl Fn(&Tensor) -> (f64, Tensor) + 'a {
    let obj = DeviceObjective {
        x,
        y,
        onehot: y.onehot(k).to_kind(x.kind()),
        k,
        d: x.size()[1],
    };
    move |theta| obj.eval_tensor(theta, w, penalize_bias)
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
    linear_eval_observed(
        train_x,
        train_y,
        val_x,
        val_y,
        test_x,
        test_y,
        cfg,
        &mut |_, _, _| {},
    )
}

/// [`linear_eval`] that reports each finished point of the sweep as (index, number of points, point),
/// for progress displays.
#[allow(clippy::too_many_arguments)]
pub fn linear_eval_observed(
    train_x: &Tensor,
    train_y: &Tensor,
    val_x: &Tensor,
    val_y: &Tensor,
    test_x: &Tensor,
    test_y: &Tensor,
    cfg: &LinearEvalConfig,
    observer: &mut dyn FnMut(usize, usize, &SweepPoint),
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
    let sets = Splits {
        train: (train_x, train_y),
        val: (&vx, &vy),
        k,
        dim,
    };
    let (sweep, best_index, clf) = match kind {
        Kind::Double => sweep::<f64>(&sets, cfg, observer)?,
        _ => sweep::<f32>(&sets, cfg, observer)?,
    };
    Ok(LinearEvalResult {
        test_accuracy: clf.accuracy(&tx, &ty),
        val_accuracy: sweep[best_index].val_accuracy,
        best_weight_decay: cfg.weight_decays[best_index],
        best_index,
        num_classes: k,
        sweep,
        classifier: Some(clf),
    })
}

/// Checked inputs of the sweep.
struct Splits<'a> {
    train: (&'a Tensor, &'a Tensor),
    val: (&'a Tensor, &'a Tensor),
    k: i64,
    dim: i64,
}

/// The warm-started sweep over `cfg.weight_decays`; returns the points, the selected index and its
/// classifier.
fn sweep<T: Real>(
    s: &Splits,
    cfg: &LinearEvalConfig,
    observer: &mut dyn FnMut(usize, usize, &SweepPoint),
) -> Result<(Vec<SweepPoint>, usize, LinearClassifier), EvalError> {
    let (train_x, train_y) = s.train;
    let (k, dim) = (s.k, s.dim);
    let dev = train_x.device();
    let theta0 = {
        let _rng = crate::util::rng::torch_rng_lock();
        tch::manual_seed(cfg.seed);
        let w = Tensor::randn([k, dim], (Kind::Double, Device::Cpu)) * cfg.init_std;
        let b = Tensor::randn([k], (Kind::Double, Device::Cpu)) * cfg.init_std;
        Vec::<T>::try_from(Tensor::cat(&[w.flatten(0, -1), b], 0).to_kind(T::KIND))
            .map_err(super::error::torch)?
    };
    let mut fitter = Fitter::<T>::new(train_x, train_y, k, cfg.backend)?;
    let mut theta = theta0.clone();
    let mut opt = Lbfgs::<T>::from_config(cfg);
    let mut best: Option<(f64, usize, LinearClassifier)> = None;
    let mut sweep = Vec::new();
    let total = cfg.weight_decays.len();
    for (i, &w) in cfg.weight_decays.iter().enumerate() {
        if !cfg.warm_start {
            theta.copy_from_slice(&theta0);
            opt = Lbfgs::from_config(cfg);
        }
        let wr = T::round(w);
        let pb = cfg.penalize_bias;
        let (_, loss, iters) = opt.step(&mut theta, &mut |t, g| fitter.eval(t, g, wr, pb));
        let clf = classifier(&theta, k, dim, dev);
        let val_acc = clf.accuracy(s.val.0, s.val.1);
        let point = SweepPoint {
            weight_decay: w,
            objective: loss,
            train_accuracy: clf.accuracy(train_x, train_y),
            val_accuracy: val_acc,
            iterations: iters,
        };
        observer(i, total, &point);
        sweep.push(point);
        if best.as_ref().is_none_or(|(b, _, _)| val_acc > *b) {
            best = Some((val_acc, i, clf));
        }
    }
    let (_, best_index, clf) =
        best.ok_or_else(|| EvalError::invalid("LinearEvalConfig.weight_decays", "empty sweep"))?;
    Ok((sweep, best_index, clf))
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
        let mut map = crate::data::formats::safetensors::read_tensors(path)?.tensors;
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
        crate::data::formats::safetensors::write_tensors(path, &v, &BTreeMap::new())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A diverged step's NaN objective is written as `null`; the report must read back (the
    /// `linear-eval` stage re-reads what it wrote, and failed on such a sweep).
    #[test]
    fn a_sweep_point_with_a_nan_objective_reads_back() {
        let p = SweepPoint {
            weight_decay: 1.8e-4,
            objective: f64::NAN,
            train_accuracy: 0.5,
            val_accuracy: 0.25,
            iterations: 3,
        };
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains(r#""objective":null"#), "{json}");
        let back: SweepPoint = serde_json::from_str(&json).unwrap();
        assert!(back.objective.is_nan());
        assert_eq!((back.weight_decay, back.iterations), (1.8e-4, 3));
    }

    #[test]
    fn logspace_matches_torch() {
        let w = official_weight_decays();
        assert_eq!(w.len(), 45);
        assert_eq!(w[0], 1e-6f32 as f64);
        assert_eq!(w[24], 1.0);
        assert_eq!(w[44], 1e5);
    }

    #[test]
    fn gradients_match_autograd_on_host_and_device() {
        tch::manual_seed(3);
        let x = Tensor::randn([20, 5], (Kind::Double, Device::Cpu));
        let y = Tensor::randint(3, [20], (Kind::Int64, Device::Cpu));
        let theta =
            (Tensor::randn([3 * 5 + 3], (Kind::Double, Device::Cpu)) * 0.3).set_requires_grad(true);
        let wm = theta.narrow(0, 0, 15).view([3, 5]);
        let b = theta.narrow(0, 15, 3);
        let ce = -(x.matmul(&wm.tr()) + &b)
            .log_softmax(1, Kind::Double)
            .gather(1, &y.unsqueeze(1), false)
            .mean(Kind::Double);
        let loss =
            ce + wm.square().mean(Kind::Double) * 0.35 + b.square().mean(Kind::Double) * 0.35;
        loss.backward();
        let want_l = loss.double_value(&[]);
        let want_g = Vec::<f64>::try_from(theta.grad()).unwrap();
        let th = Vec::<f64>::try_from(theta.detach()).unwrap();
        for backend in [LinearBackend::Host, LinearBackend::Device] {
            let mut f = Fitter::<f64>::new(&x, &y, 3, backend).unwrap();
            let mut g = vec![0.0; th.len()];
            let l = f.eval(&th, &mut g, 0.7, true);
            assert!((l - want_l).abs() < 1e-12, "{backend:?}: {l} vs {want_l}");
            let diff = g
                .iter()
                .zip(&want_g)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(diff < 1e-12, "{backend:?}: {diff}");
        }
    }
}
