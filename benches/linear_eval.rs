//! Linear evaluation speed (the official L-BFGS protocol of `eval::linear`), both objective backends side by
//! side with their ratio, at two scales:
//!
//! - **smoke**: the smoke suite's problem size (1 024 × 128 training features, 6 classes, 256 val, 512 test),
//!   the whole official 45-point warm-started sweep, host objective against the libtorch objective, and the
//!   same number of L-BFGS iterations from one start on both (the like-for-like, per-iteration ratio);
//! - **coco-crop**: COCO-Crop's size (118 287 × 512 features, 80 classes). The whole sweep is hours on a CPU,
//!   so the bench times L-BFGS iterations (objective + gradient + two-loop recursion) on the libtorch backend
//!   and prints the per-iteration cost and what the official sweep's worst case (45 × max_iter iterations)
//!   would take at that rate;
//! - **coco-crop before/after** (not criterion: alternating rounds in one run): the same iterations at
//!   COCO-Crop's size with the L-BFGS of commit 87c178b (two-loop recursion in libtorch tensor operations,
//!   `linear_eval/lbfgs_87c178b.rs`) against today's [`fit_single`] (recursion on host vectors), both on the
//!   libtorch objective, same data, same θ0, same iteration count; wall and process CPU time per round, and
//!   the run fails unless both reach the same parameters and loss (tolerances at [`coco_before_after`]).
//!   `cargo bench --bench linear_eval -- before_after`; `CONTRACAM_BENCH_COCO_ITERS` (default 110, past the
//!   100-pair history so the recursion reaches its full length) and `CONTRACAM_BENCH_COCO_ROUNDS` (default 3, 1 with `--quick`).
//!
//! Features are seeded Gaussian clusters (one mean per class), not a trained model's: the cost of an
//! iteration does not depend on the values, only the number of iterations does.
//!
//! `cargo bench --bench linear_eval` (criterion); `-- --quick` for a shorter run. Threads: libtorch's default
//! (set `--threads`-like behaviour with `OMP_NUM_THREADS`); the host backend is one thread by design.
use std::sync::Mutex;
use std::time::{Duration, Instant};

use contracam::eval::linear::{
    device_objective, fit_single, linear_eval, LinearBackend, LinearEvalConfig,
};
use criterion::{criterion_group, Criterion};
use tch::{Device, Kind, Tensor};

#[path = "linear_eval/lbfgs_87c178b.rs"]
mod lbfgs_87c178b;

/// Mean seconds per iteration of each measured function, for the ratio printed at the end.
static MEANS: Mutex<Vec<(String, f64)>> = Mutex::new(Vec::new());

fn record(name: &str, total: Duration, iters: u64) {
    let mean = total.as_secs_f64() / iters.max(1) as f64;
    let mut m = MEANS.lock().unwrap();
    m.retain(|(n, _)| n != name);
    m.push((name.to_string(), mean));
}

fn mean_of(name: &str) -> Option<f64> {
    MEANS
        .lock()
        .unwrap()
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
}

/// `n` samples of `k` Gaussian clusters in `d` dimensions (unit noise, class means N(0, 1)), seeded.
fn clusters(n: i64, d: i64, k: i64, means: &Tensor, seed: i64) -> (Tensor, Tensor) {
    tch::manual_seed(seed);
    let y = Tensor::randint(k, [n], (Kind::Int64, Device::Cpu));
    let x = means.index_select(0, &y) + Tensor::randn([n, d], (Kind::Float, Device::Cpu));
    (x, y)
}

fn smoke(c: &mut Criterion) {
    let (d, k) = (128, 6);
    tch::manual_seed(7);
    let means = Tensor::randn([k, d], (Kind::Float, Device::Cpu)) * 0.3;
    let (tx, ty) = clusters(1024, d, k, &means, 1);
    let (vx, vy) = clusters(256, d, k, &means, 2);
    let (sx, sy) = clusters(512, d, k, &means, 3);
    let mut g = c.benchmark_group("linear_eval/smoke_sweep");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for backend in [LinearBackend::Host, LinearBackend::Device] {
        let name = format!("{backend:?}").to_lowercase();
        let cfg = LinearEvalConfig {
            backend,
            ..Default::default()
        };
        g.bench_function(&name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let r = linear_eval(&tx, &ty, &vx, &vy, &sx, &sy, &cfg).expect("linear eval");
                    std::hint::black_box(r.test_accuracy);
                }
                let t = start.elapsed();
                record(&format!("smoke/{name}"), t, iters);
                t
            })
        });
    }
    g.finish();

    // Like for like: the same number of L-BFGS iterations from the same start on both backends (no early stop),
    // so the ratio is per iteration, whatever path each sweep would take.
    let theta0 = Tensor::randn([k * d + k], (Kind::Float, Device::Cpu)) * 0.01;
    let mut g = c.benchmark_group("linear_eval/smoke_iterations");
    g.sample_size(10);
    for backend in [LinearBackend::Host, LinearBackend::Device] {
        let name = format!("{backend:?}").to_lowercase();
        let cfg = LinearEvalConfig {
            backend,
            max_iter: SMOKE_ITERS,
            tolerance_grad: 0.0,
            tolerance_change: 0.0,
            ..Default::default()
        };
        g.bench_function(format!("{name}_{SMOKE_ITERS}_iterations"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    std::hint::black_box(fit_single(&tx, &ty, k, 1e-2, &cfg, &theta0));
                }
                let t = start.elapsed();
                record(&format!("smoke_iter/{name}"), t, iters * SMOKE_ITERS as u64);
                t
            })
        });
    }
    g.finish();
}

/// L-BFGS iterations per measured call in the per-iteration comparison.
const SMOKE_ITERS: usize = 50;

const COCO_N: i64 = 118_287;
const COCO_D: i64 = 512;
const COCO_K: i64 = 80;
/// L-BFGS iterations per measured call at COCO-Crop scale.
const COCO_ITERS: usize = 3;

fn coco_crop(c: &mut Criterion) {
    tch::manual_seed(11);
    let means = Tensor::randn([COCO_K, COCO_D], (Kind::Float, Device::Cpu)) * 0.3;
    let (x, y) = clusters(COCO_N, COCO_D, COCO_K, &means, 12);
    let theta0 = Tensor::randn([COCO_K * COCO_D + COCO_K], (Kind::Float, Device::Cpu)) * 0.01;
    let cfg = LinearEvalConfig {
        backend: LinearBackend::Device,
        max_iter: COCO_ITERS,
        // Never stop early: every call runs COCO_ITERS iterations.
        tolerance_grad: 0.0,
        tolerance_change: 0.0,
        ..Default::default()
    };
    let mut g = c.benchmark_group("linear_eval/coco_crop_scale");
    g.sample_size(10).measurement_time(Duration::from_secs(30));
    g.bench_function(format!("device_{COCO_ITERS}_iterations"), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let (clf, loss) = fit_single(&x, &y, COCO_K, 1e-4, &cfg, &theta0);
                std::hint::black_box((clf, loss));
            }
            let t = start.elapsed();
            record("coco/device_per_iteration", t, iters * COCO_ITERS as u64);
            t
        })
    });
    g.finish();
}

fn summary() {
    println!(
        "\nlinear_eval summary (libtorch threads {}):",
        tch::get_num_threads()
    );
    if let (Some(h), Some(d)) = (mean_of("smoke/host"), mean_of("smoke/device")) {
        println!(
            "  smoke sweep (1024x128, 6 classes, 45 w): host {h:.3} s, libtorch {d:.3} s, ratio {:.2}x",
            d / h
        );
    }
    if let (Some(h), Some(d)) = (mean_of("smoke_iter/host"), mean_of("smoke_iter/device")) {
        println!(
            "  smoke size, per L-BFGS iteration: host {:.1} us, libtorch {:.1} us, ratio {:.2}x",
            h * 1e6,
            d * 1e6,
            d / h
        );
    }
    if let Some(it) = mean_of("coco/device_per_iteration") {
        let worst = it * 45.0 * 1000.0;
        println!(
            "  COCO-Crop scale (118287x512, 80 classes), libtorch objective: {:.3} s per L-BFGS iteration; \
             the official sweep's worst case (45 x 1000 iterations) {:.1} h",
            it,
            worst / 3600.0
        );
    }
}

criterion_group!(benches, smoke, coco_crop);

/// Process CPU time (user + system, every thread: libtorch's pool included), seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the zeroed struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return f64::NAN;
    }
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    s(ru.ru_utime) + s(ru.ru_stime)
}

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a count")),
        Err(_) => default,
    }
}

/// Largest |θ_before − θ_after| allowed after the timed f32 iterations, relative to max |θ_after|, and the
/// largest relative loss difference. The two recursions round differently in f32 (torch's BLAS `dot`
/// against f64 sums rounded to f32), and on these separable clusters the loss falls to ~3e-6 where the
/// iterates are chaotic in that rounding: measured 6.1e-3 (θ) and 2.8e-4 (loss) after 110 iterations, 5.6e-7
/// and 2.5e-6 after 5. The bounds are ~3x the 110-iteration drift; [`F64_RTOL`] checks the recursions are
/// the same algorithm.
const COCO_THETA_RTOL: f64 = 2e-2;
const COCO_LOSS_RTOL: f64 = 1e-3;
/// The same comparison in f64 on a COCO-shaped problem with fewer samples ([`F64_N`]), where rounding is
/// ~1e-16 per operation: before and after must then agree to this relative bound (θ and loss).
const F64_RTOL: f64 = 1e-9;
const F64_N: i64 = 8192;

/// Runs `cfg.max_iter` iterations of one side from `theta0`: 0 = before (87c178b's tensor L-BFGS on
/// [`device_objective`]), 1 = after ([`fit_single`]). Returns (θ, loss).
fn run_side(
    side: usize,
    x: &Tensor,
    y: &Tensor,
    theta0: &Tensor,
    cfg: &LinearEvalConfig,
    w: f64,
) -> (Tensor, f64) {
    if side == 0 {
        let objective = device_objective(x, y, COCO_K, w, cfg.penalize_bias);
        let mut opt = lbfgs_87c178b::Lbfgs::new(cfg);
        // A copy: `to_kind` to the same kind aliases θ0, which `step` updates in place.
        let mut theta = theta0.to_kind(x.kind()).copy();
        let (_, loss, n) = opt.step(&mut theta, &objective);
        // torch also stops once max_eval = max_iter·5/4 evaluations are spent (below 4 iterations, earlier).
        let want = cfg.max_iter.min((cfg.max_iter * 5 / 4).saturating_sub(1));
        assert_eq!(n, want, "before: stopped after {n} of {want} iterations");
        (theta, loss)
    } else {
        let (clf, loss) = fit_single(x, y, COCO_K, w, cfg, theta0);
        (Tensor::cat(&[clf.weight.flatten(0, -1), clf.bias], 0), loss)
    }
}

/// (max |θb − θa| / max |θa|, |lb − la| / |la|).
fn disagreement(before: &(Tensor, f64), after: &(Tensor, f64)) -> (f64, f64) {
    let scale = after.0.abs().max().double_value(&[]);
    let dtheta = (&before.0 - &after.0).abs().max().double_value(&[]);
    (dtheta / scale, (before.1 - after.1).abs() / after.1.abs())
}

/// COCO-Crop scale, before (87c178b's tensor L-BFGS) against after ([`fit_single`]'s host L-BFGS), both on
/// the libtorch objective, alternating which goes first each round. Panics when the two disagree beyond
/// [`COCO_THETA_RTOL`] / [`COCO_LOSS_RTOL`].
fn coco_before_after() {
    let iters = env_usize("CONTRACAM_BENCH_COCO_ITERS", 110);
    // `--quick` (criterion's short run) times one round of each side.
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = env_usize("CONTRACAM_BENCH_COCO_ROUNDS", if quick { 1 } else { 3 });
    tch::manual_seed(11);
    let means = Tensor::randn([COCO_K, COCO_D], (Kind::Float, Device::Cpu)) * 0.3;
    let (x, y) = clusters(COCO_N, COCO_D, COCO_K, &means, 12);
    let theta0 = Tensor::randn([COCO_K * COCO_D + COCO_K], (Kind::Float, Device::Cpu)) * 0.01;
    let cfg = LinearEvalConfig {
        backend: LinearBackend::Device,
        max_iter: iters,
        tolerance_grad: 0.0,
        tolerance_change: 0.0,
        ..Default::default()
    };
    // The weight as f32, so both sides see the same value (fit_single rounds it to the features' kind).
    let w = 1e-4f32 as f64;
    println!(
        "\nlinear_eval/coco_crop_before_after: {COCO_N}x{COCO_D}, {COCO_K} classes, {iters} L-BFGS \
         iterations per side, {rounds} rounds, libtorch threads {}",
        tch::get_num_threads()
    );

    // Same algorithm: in f64 (first F64_N samples, same θ0) the two must agree to rounding.
    let x64 = x.narrow(0, 0, F64_N).to_kind(Kind::Double);
    let y64 = y.narrow(0, 0, F64_N);
    let t64 = theta0.to_kind(Kind::Double);
    let b64 = run_side(0, &x64, &y64, &t64, &cfg, w);
    let a64 = run_side(1, &x64, &y64, &t64, &cfg, w);
    let (dt64, dl64) = disagreement(&b64, &a64);
    println!(
        "  f64 check ({F64_N}x{COCO_D}, {iters} iterations): loss {:.10e} vs {:.10e}, relative |dθ| {dt64:.2e}, \
         relative loss {dl64:.2e} (allowed {F64_RTOL:e})",
        b64.1, a64.1
    );
    assert!(
        dt64 <= F64_RTOL && dl64 <= F64_RTOL,
        "before and after are not the same algorithm: in f64 relative |dθ| {dt64:.2e}, loss {dl64:.2e} \
         (allowed {F64_RTOL:e})"
    );

    // At full size the objective hides the recursion; with F64_N samples (same 41 040 parameters, full
    // history after 100 iterations) the recursion is a visible share of an iteration.
    let (xs, ys) = (x.narrow(0, 0, F64_N), y.narrow(0, 0, F64_N));
    let mut small = [(0.0f64, 0.0f64); 2];
    for round in 0..2 {
        for side in if round == 0 { [0, 1] } else { [1, 0] } {
            let (wall0, cpu0) = (Instant::now(), cpu_seconds());
            let _ = std::hint::black_box(run_side(side, &xs, &ys, &theta0, &cfg, w));
            small[side].0 += wall0.elapsed().as_secs_f64();
            small[side].1 += cpu_seconds() - cpu0;
        }
    }
    let ms = 1e3 / (2.0 * iters as f64);
    println!(
        "  {F64_N}x{COCO_D} (same parameter count), f32, {iters} iterations x 2 rounds, per iteration: before \
         {:.1} ms wall {:.1} ms CPU, after {:.1} ms wall {:.1} ms CPU; CPU ratio before/after {:.2}x",
        small[0].0 * ms,
        small[0].1 * ms,
        small[1].0 * ms,
        small[1].1 * ms,
        small[0].1 / small[1].1
    );

    let mut totals = [(0.0f64, 0.0f64); 2];
    let mut results: [Option<(Tensor, f64)>; 2] = [None, None];
    let names = [
        "before (87c178b, tensor recursion)",
        "after (host recursion)",
    ];
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let (wall0, cpu0) = (Instant::now(), cpu_seconds());
            let (theta, loss) = run_side(side, &x, &y, &theta0, &cfg, w);
            let (wall, cpu) = (wall0.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
            totals[side].0 += wall;
            totals[side].1 += cpu;
            println!(
                "  round {round} {}: {wall:.2} s wall, {cpu:.2} s CPU, {:.1} ms wall per iteration, loss {loss:.7e}",
                names[side],
                wall / iters as f64 * 1e3
            );
            match &results[side] {
                None => results[side] = Some((theta, loss)),
                Some((t, l)) => {
                    let diff = (t - &theta).abs().max().double_value(&[]);
                    println!(
                        "    same side as before: loss {:+.3e}, max |dθ| {diff:.3e}",
                        loss - l
                    );
                }
            }
        }
    }
    let (Some(before), Some(after)) = (&results[0], &results[1]) else {
        println!("  no rounds run");
        return;
    };
    let (dtheta, dloss) = disagreement(before, after);
    println!(
        "  f32 agreement: loss before {:.7e} after {:.7e} (relative {dloss:.2e}, allowed {COCO_LOSS_RTOL:e}); \
         relative max |θb − θa| {dtheta:.2e} (allowed {COCO_THETA_RTOL:e})",
        before.1, after.1
    );
    for (side, name) in names.iter().enumerate() {
        let per = rounds as f64 * iters as f64;
        let (wall, cpu) = (totals[side].0 / per, totals[side].1 / per);
        println!(
            "  {name}: {:.1} ms wall, {:.1} ms CPU per iteration; 45 x 1000 iterations: {:.2} h wall, {:.2} h CPU",
            wall * 1e3,
            cpu * 1e3,
            wall * 45_000.0 / 3600.0,
            cpu * 45_000.0 / 3600.0
        );
    }
    println!(
        "  ratio before/after: wall {:.3}x, CPU {:.3}x",
        totals[0].0 / totals[1].0,
        totals[0].1 / totals[1].1
    );
    assert!(
        dtheta <= COCO_THETA_RTOL && dloss <= COCO_LOSS_RTOL,
        "before and after disagree: relative max |dθ| {dtheta:.2e} (allowed {COCO_THETA_RTOL:e}), relative \
         loss {dloss:.2e} (allowed {COCO_LOSS_RTOL:e})"
    );
}

/// Whether the command line's filters (arguments that are not flags) select `name`; none selects all.
fn selected(name: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
    if selected("linear_eval/coco_crop_before_after") {
        coco_before_after();
    }
}
