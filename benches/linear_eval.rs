//! Linear evaluation speed (the official L-BFGS protocol of `eval::linear`), both objective backends side by
//! side with their ratio, at two scales:
//!
//! - **smoke**: the smoke suite's problem size (1 024 × 128 training features, 6 classes, 256 val, 512 test),
//!   the whole official 45-point warm-started sweep, host objective against the libtorch objective, and the
//!   same number of L-BFGS iterations from one start on both (the like-for-like, per-iteration ratio);
//! - **coco-crop**: COCO-Crop's size (118 287 × 512 features, 80 classes). The whole sweep is hours on a CPU,
//!   so the bench times L-BFGS iterations (objective + gradient + two-loop recursion) on the libtorch backend
//!   and prints the per-iteration cost and what the official sweep's worst case (45 × max_iter iterations)
//!   would take at that rate.
//!
//! Features are seeded Gaussian clusters (one mean per class), not a trained model's: the cost of an
//! iteration does not depend on the values, only the number of iterations does.
//!
//! `cargo bench --bench linear_eval` (criterion); `-- --quick` for a shorter run. Threads: libtorch's default
//! (set `--threads`-like behaviour with `OMP_NUM_THREADS`); the host backend is one thread by design.
use std::sync::Mutex;
use std::time::{Duration, Instant};

use contracam::eval::linear::{fit_single, linear_eval, LinearBackend, LinearEvalConfig};
use criterion::{criterion_group, Criterion};
use tch::{Device, Kind, Tensor};

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

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
