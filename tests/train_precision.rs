//! bf16 mixed precision and channels_last (`train::precision`): the autocast guard really switches
//! autocast on and off again (also when a panic unwinds), channels_last keeps values and lays tensors out
//! NHWC, a few MoCo steps in bf16-mixed stay near fp32 with parameters, EMA target, gradients and queue in
//! float32, the pretrain stage records what it trained with, and precision where it is not implemented is
//! refused naming the key.
mod stage_kinds_common;
mod suite_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use contracam::data::formats::safetensors::read_tensors;
use contracam::model::{Arch, ContrastiveModel, Method, ModelConfig, ResNetConfig, Stem};
use contracam::suite::dataset::{DatasetHandle, DatasetSpec, SynthDataset, SynthForm};
use contracam::suite::stage::{Input, Precision as StagePrecision, StageContext};
use contracam::suite::{config, run_suite, RunOptions};
use contracam::train::precision::{
    autocast_enabled, autocast_kind, is_channels_last, to_channels_last, vars_to_channels_last,
    Autocast, Precision, StepPrecision,
};
use contracam::train::{SingleDevice, TrainConfig, TrainReport, Trainer};
use contracam::util::progress::Mode;
use stage_kinds_common::{inputs, run_kind};
use suite_common::{run_options, tiny_suite};
use tch::{Device, Kind, Tensor};

const CPU: Device = Device::Cpu;

fn conv(x: &Tensor, w: &Tensor) -> Tensor {
    x.conv2d(w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1)
}

fn randn(shape: &[i64], seed: i64) -> Tensor {
    let _rng = contracam::util::rng::torch_rng_lock();
    tch::manual_seed(seed);
    Tensor::randn(shape, (Kind::Float, CPU))
}

#[test]
fn autocast_guard_turns_bf16_on_and_restores_the_previous_state() {
    tch::set_num_threads(1);
    let x = randn(&[2, 3, 8, 8], 1);
    let w = randn(&[4, 3, 3, 3], 2);
    assert!(!autocast_enabled(CPU));
    let y32 = conv(&x, &w);
    assert_eq!(y32.kind(), Kind::Float);
    {
        let _g = Autocast::enter(CPU, Kind::BFloat16).unwrap();
        assert!(autocast_enabled(CPU));
        assert_eq!(autocast_kind(CPU), Some(Kind::BFloat16));
        // Autocast's lower-precision list: the convolution of float32 tensors comes out in bfloat16 ...
        let y = conv(&x, &w);
        assert_eq!(y.kind(), Kind::BFloat16);
        // ... equal to the float32 one up to bfloat16 rounding (8-bit mantissa: 2^-8 relative per input and
        // on the output; 27 products per output).
        let d = (y.to_kind(Kind::Float) - &y32)
            .abs()
            .max()
            .double_value(&[]);
        let scale = y32.abs().max().double_value(&[]);
        assert!(d > 0.0 && d < 0.03 * scale, "|Δ| {d} at scale {scale}");
    }
    assert!(!autocast_enabled(CPU));
    assert!(conv(&x, &w).equal(&y32), "float32 again, bit for bit");

    // Nested regions restore the outer dtype; the outer one restores "off".
    {
        let _outer = Autocast::enter(CPU, Kind::Half).unwrap();
        assert_eq!(autocast_kind(CPU), Some(Kind::Half));
        {
            let _inner = Autocast::enter(CPU, Kind::BFloat16).unwrap();
            assert_eq!(autocast_kind(CPU), Some(Kind::BFloat16));
        }
        assert!(autocast_enabled(CPU));
        assert_eq!(autocast_kind(CPU), Some(Kind::Half));
    }
    assert!(!autocast_enabled(CPU));
    assert_eq!(
        autocast_kind(CPU),
        Some(Kind::BFloat16),
        "libtorch's CPU default"
    );

    // A panic inside the region unwinds through the guard, which switches autocast off again.
    let r = std::panic::catch_unwind(|| {
        let _g = Autocast::enter(CPU, Kind::BFloat16).unwrap();
        assert!(autocast_enabled(CPU));
        panic!("inside the region");
    });
    assert!(r.is_err());
    assert!(!autocast_enabled(CPU));
    assert_eq!(conv(&x, &w).kind(), Kind::Float);

    // float32 is not a lower-precision autocast dtype.
    assert!(Autocast::enter(CPU, Kind::Float).is_err());
}

#[test]
fn channels_last_keeps_values_and_lays_out_nhwc() {
    let x = randn(&[2, 3, 5, 7], 3);
    assert!(!is_channels_last(&x));
    let y = to_channels_last(&x).unwrap();
    assert!(is_channels_last(&y));
    assert!(!y.is_contiguous());
    // NHWC strides: C is the fastest dimension, then W, then H, then N.
    assert_eq!(y.stride(), vec![3 * 5 * 7, 1, 7 * 3, 3]);
    assert_eq!(y.size(), x.size());
    assert!(y.equal(&x));
    // Already channels_last: the same tensor back.
    assert_eq!(to_channels_last(&y).unwrap().stride(), y.stride());
    assert!(to_channels_last(&randn(&[3, 4], 1)).is_err());

    // A model's 4-d variables, in place: values unchanged, every conv weight NHWC, the rest untouched.
    let model = ContrastiveModel::new(&model_config(), CPU);
    let before: BTreeMap<String, Tensor> = model
        .vs
        .variables()
        .into_iter()
        .map(|(k, v)| (k, v.detach().copy()))
        .collect();
    let n = vars_to_channels_last(&model.vs).unwrap();
    assert_eq!(n, before.values().filter(|t| t.dim() == 4).count());
    assert!(n > 0);
    for (k, v) in model.vs.variables() {
        assert!(v.equal(&before[&k]), "{k} changed value");
        if v.dim() == 4 {
            assert!(is_channels_last(&v), "{k}: strides {:?}", v.stride());
        } else {
            assert!(v.is_contiguous(), "{k}");
        }
    }
    // Safetensors writes the logical (NCHW) order: the checkpoint loads back into a contiguous model equal.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    model.save(&p, &Default::default()).unwrap();
    let back = ContrastiveModel::load(&p, CPU).unwrap();
    for (k, v) in back.vs.variables() {
        assert!(v.equal(&before[&k]), "{k} after save/load");
    }
}

fn model_config() -> ModelConfig {
    ModelConfig {
        encoder: ResNetConfig {
            arch: Arch::Resnet18,
            width: 0.25,
            stem: Stem::Small,
            zero_init_residual: true,
        },
        method: Method::Moco,
        proj_hidden: None,
        proj_dim: None,
        pred_hidden: None,
        projector_form: Default::default(),
    }
}

struct Run {
    losses: Vec<f64>,
    /// Online and target variables after the steps, and the initial online ones.
    online: BTreeMap<String, Tensor>,
    target: BTreeMap<String, Tensor>,
    init: BTreeMap<String, Tensor>,
}

fn snapshot(vs: &tch::nn::VarStore) -> BTreeMap<String, Tensor> {
    vs.variables()
        .into_iter()
        .map(|(k, v)| (k, v.detach().copy()))
        .collect()
}

/// `steps` MoCo steps of a fresh width-1/4 ResNet-18 from `seed` on fixed normalised views (batch 16,
/// 32 px, queue 64); checks every float32 invariant of the mixed-precision step on the way.
fn moco_steps(seed: u64, precision: Precision, channels_last: bool, steps: usize) -> Run {
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 16,
        queue_size: 64,
        precision,
        channels_last,
        ..Default::default()
    };
    let mut t = Trainer::new(&model_config(), &cfg, seed, SingleDevice::new(CPU)).unwrap();
    let init = snapshot(&t.online.vs);
    let views = [
        randn(&[16, 3, 32, 32], 100 + seed as i64),
        randn(&[16, 3, 32, 32], 200 + seed as i64),
    ];
    let mut losses = vec![];
    for _ in 0..steps {
        losses.push(t.step_on_views(&views).unwrap());
        assert!(!autocast_enabled(CPU), "autocast left on after a step");
        for (k, v) in t.online.vs.variables() {
            if k.ends_with("num_batches_tracked") {
                continue;
            }
            assert_eq!(v.kind(), Kind::Float, "online {k}");
            if channels_last && v.dim() == 4 {
                assert!(is_channels_last(&v), "online {k} after the step");
            }
        }
        for v in t.online.vs.trainable_variables() {
            assert_eq!(v.grad().kind(), Kind::Float, "gradient");
        }
        for (k, v) in t.target.vs.variables() {
            if k.ends_with("num_batches_tracked") {
                continue;
            }
            assert_eq!(v.kind(), Kind::Float, "EMA target {k}");
        }
        let moco = t.objective_mut().as_moco_mut().unwrap();
        assert_eq!(moco.queue.kind(), Kind::Float, "queue");
    }
    Run {
        losses,
        online: snapshot(&t.online.vs),
        target: snapshot(&t.target.vs),
        init,
    }
}

/// Max |a − b| over every variable, and the cosine between the two runs' parameter updates from `init`.
fn compare(a: &Run, b: &Run) -> (f64, f64, f64) {
    let mut max_diff = 0f64;
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (k, va) in &a.online {
        let vb = &b.online[k];
        if k.ends_with("num_batches_tracked") {
            continue;
        }
        max_diff = max_diff.max((va - vb).abs().max().double_value(&[]));
        if k.contains("running_") {
            continue;
        }
        let ua = (va - &a.init[k]).to_kind(Kind::Double);
        let ub = (vb - &b.init[k]).to_kind(Kind::Double);
        dot += (&ua * &ub).sum(Kind::Double).double_value(&[]);
        na += (&ua * &ua).sum(Kind::Double).double_value(&[]);
        nb += (&ub * &ub).sum(Kind::Double).double_value(&[]);
    }
    let mut target_diff = 0f64;
    for (k, va) in a
        .target
        .iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
    {
        target_diff = target_diff.max((va - &b.target[k]).abs().max().double_value(&[]));
    }
    (max_diff, dot / (na.sqrt() * nb.sqrt()), target_diff)
}

/// Tolerances of bf16-mixed + channels_last against fp32 after three MoCo steps, from measurement: seeds 0-7
/// gave max |loss Δ| 2.8e-3 … 1.05e-2 (seed 4), max |weight Δ| (parameters and BN running statistics)
/// 4.0e-4 … 1.4e-3, cosine between the two runs' parameter updates 0.982 … 0.998, max |target Δ| (EMA
/// target; its BN running statistics see the bf16 activations) 3.3e-4 … 4.3e-4. Each bound is about 3× the
/// worst seed: bfloat16 keeps 8 bits of mantissa (relative rounding 2^-9), so differences of 1e-3 relative
/// are its normal size, while a cast left out (or autocast on for backward or the optimiser) moves weights
/// by the update itself and the cosine far below 0.95.
const LOSS_TOL: f64 = 0.03;
const WEIGHT_TOL: f64 = 5e-3;
const UPDATE_COSINE_MIN: f64 = 0.95;
const TARGET_TOL: f64 = 1.5e-3;

#[test]
fn bf16_mixed_moco_steps_stay_near_fp32() {
    tch::set_num_threads(1);
    for seed in [0u64, 1, 2, 3, 4] {
        let fp32 = moco_steps(seed, Precision::Fp32, false, 3);
        let bf16 = moco_steps(seed, Precision::Bf16Mixed, true, 3);
        let loss_diff = fp32
            .losses
            .iter()
            .zip(&bf16.losses)
            .map(|(a, b)| (a - b).abs())
            .fold(0f64, f64::max);
        let (w, cos, target) = compare(&fp32, &bf16);
        eprintln!(
            "seed {seed}: losses {:?} vs {:?}; max |loss Δ| {loss_diff:.3e}, max |weight Δ| {w:.3e}, \
             update cosine {cos:.5}, max |target Δ| {target:.3e}",
            fp32.losses, bf16.losses
        );
        assert!(
            loss_diff > 0.0,
            "seed {seed}: bf16-mixed computed exactly as fp32"
        );
        assert!(
            loss_diff < LOSS_TOL,
            "seed {seed}: loss differs by {loss_diff}"
        );
        assert!(w < WEIGHT_TOL, "seed {seed}: weights differ by {w}");
        assert!(cos > UPDATE_COSINE_MIN, "seed {seed}: update cosine {cos}");
        assert!(
            target < TARGET_TOL,
            "seed {seed}: target differs by {target}"
        );
    }
    // channels_last alone is the same arithmetic in another layout, summed in another order: fp32 within
    // float32 noise (measured: losses 1e-6 apart, weights 3.1e-7, update cosine 1.0000000).
    let a = moco_steps(0, Precision::Fp32, false, 2);
    let b = moco_steps(0, Precision::Fp32, true, 2);
    let (w, cos, _) = compare(&a, &b);
    eprintln!(
        "fp32 channels_last: losses {:?} vs {:?}, max |weight Δ| {w:.3e}, cosine {cos:.7}",
        a.losses, b.losses
    );
    assert!((a.losses[1] - b.losses[1]).abs() < 1e-4);
    assert!(w < 1e-4 && cos > 0.9999, "{w} {cos}");
    // The default policy does nothing: two fp32 runs are bit for bit the same.
    let c = moco_steps(0, Precision::Fp32, false, 2);
    assert_eq!(a.losses, c.losses);
    for (k, v) in &a.online {
        assert!(v.equal(&c.online[k]), "{k}");
    }
}

#[test]
fn precision_is_refused_where_it_is_not_implemented() {
    let e = StepPrecision::new(Precision::Bf16Mixed, false, Device::Mps)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("train.precision") && e.contains("CPU and CUDA"),
        "{e}"
    );
    // Data-parallel runs take every policy (2 ranks x 8 in bf16 is compared with 1 x 16 in
    // tests/distributed.rs).
    assert!(StepPrecision::new(Precision::Bf16Mixed, true, CPU).is_ok());
    assert_eq!("bf16-mixed".parse::<Precision>(), Ok(Precision::Bf16Mixed));
    assert!("bf16"
        .parse::<Precision>()
        .unwrap_err()
        .contains("fp32, bf16-mixed"));

    // The smoke pipeline computes in fp32 only (its results say so): its [train] precision is refused.
    let dir = tempfile::tempdir().unwrap();
    let mut suite = config::load(&tiny_suite(dir.path())).unwrap();
    suite.config.train.precision = Precision::Bf16Mixed;
    let opts = RunOptions {
        skip_golden: true,
        ..run_options(&dir.path().join("runs"))
    };
    let e = run_suite(&suite, &opts).unwrap_err().to_string();
    assert!(
        e.contains("train.precision = \"bf16-mixed\"") && e.contains("--precision"),
        "{e}"
    );
    suite.config.train.precision = Precision::Fp32;
    suite.config.train.channels_last = true;
    let e = run_suite(&suite, &opts).unwrap_err().to_string();
    assert!(e.contains("train.channels_last"), "{e}");

    // The train-classifier stage takes a run at the bf16-mixed policy (tests/train_classifier.rs trains
    // one): without inputs it stops at the missing dataset, not at the precision.
    let r = contracam::suite::registry::Registry::builtin();
    let k = r
        .get("train-classifier")
        .and_then(|k| k.implemented())
        .unwrap();
    let params = k.parse(toml::Value::Table(toml::Table::new())).unwrap();
    let no_inputs = BTreeMap::new();
    let mut ctx = StageContext {
        stage: "classifier",
        out_dir: dir.path(),
        outputs: k.outputs(),
        inputs: &no_inputs,
        seed: 0,
        device: CPU,
        precision: StagePrecision::Bf16Mixed,
        data_dir: Path::new("/nonexistent"),
        threads: 1,
        progress: Mode::Hidden,
        fault: None,
    };
    let e = k.run(&params, &mut ctx).unwrap_err().to_string();
    assert!(e.contains("'data'") && !e.contains("float32 only"), "{e}");
}

#[test]
fn pretrain_stage_trains_in_bf16_and_records_it() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let scenes = Input::Dataset(Arc::new(
        DatasetHandle::resolve(
            "scenes",
            DatasetSpec::Synth(SynthDataset {
                form: SynthForm::Scenes,
                split: "train".into(),
                count: 32,
                seed: 0,
                synth: contracam::data::synth::SynthConfig {
                    image_size: 32,
                    crop_size: 24,
                    ..Default::default()
                },
            }),
            Path::new("/nonexistent"),
        )
        .unwrap(),
    ));
    let params = "method = \"moco\"\nwidth = 0.125\nstem = \"small\"\nepochs = 1\nbatch = 16\n\
                  queue_size = 32\nimage_size = 32\n";
    let run = |extra: &str, name: &str| {
        let out = dir.path().join(name);
        let r = run_kind(
            "pretrain",
            &format!("{params}{extra}"),
            &inputs(vec![("data", scenes.clone())]),
            0,
            &out,
        )
        .unwrap();
        (r, out)
    };
    let (r32, out32) = run("", "fp32");
    let (r16, out16) = run("precision = \"bf16-mixed\"\nchannels_last = true\n", "bf16");
    let f32_loss = r32.metrics["final_loss"];
    let bf16_loss = r16.metrics["final_loss"];
    assert!(
        (f32_loss - bf16_loss).abs() < 0.05,
        "{f32_loss} vs {bf16_loss}"
    );
    assert_ne!(f32_loss, bf16_loss, "bf16 really computed in bf16");

    let meta = |out: &Path| read_tensors(&out.join("model.safetensors")).unwrap();
    let m16 = meta(&out16);
    let train: serde_json::Value = serde_json::from_str(&m16.metadata["contracam.train"]).unwrap();
    assert_eq!(train["precision"], "bf16-mixed");
    assert_eq!(train["channels_last"], true);
    // The checkpoint is float32, as fp32 training writes it.
    assert!(m16.tensors.values().all(|t| t.kind() != Kind::BFloat16));
    let report: TrainReport =
        serde_json::from_str(&std::fs::read_to_string(out16.join("train_report.json")).unwrap())
            .unwrap();
    assert_eq!(report.precision, Precision::Bf16Mixed);
    assert!(report.channels_last);
    // fp32 leaves both out: its metadata and report are what they were before precision existed.
    let m32 = meta(&out32);
    assert!(!m32.metadata["contracam.train"].contains("precision"));
    assert!(!m32.metadata["contracam.train"].contains("channels_last"));
    let text = std::fs::read_to_string(out32.join("train_report.json")).unwrap();
    assert!(
        !text.contains("precision") && !text.contains("channels_last"),
        "{text}"
    );
}
