//! Checkpoint and resume of a training run: training k steps, saving the state, resuming it in a new
//! trainer over a new data source and finishing equals the run that never stopped, bit for bit (every
//! byte of the online and target networks, every step's loss, the epoch loss curve), for MoCo and BYOL,
//! with and without BG-Mixup, mid-epoch and at an epoch boundary. A state is refused by a run of another
//! config (naming the field) and a truncated file is an error naming it. The same over a built split
//! through the loader, in the library and as a `train ssl --dataset` process killed and resumed.
use std::path::Path;

use contracam::model::{Arch, Method, ModelConfig, ResNetConfig, Stem};
use contracam::train::augment::AugmentConfig;
use contracam::train::config::{MixConfig, MixKind};
use contracam::train::fit::CheckpointPolicy;
use contracam::train::{InMemorySource, Shard, SingleDevice, TrainConfig, TrainReport, Trainer};
use contracam::util::progress::Progress;
use tch::{Device, Kind, Tensor};

const N: i64 = 12;
const SIZE: i64 = 20;

fn model(method: Method) -> ModelConfig {
    ModelConfig {
        encoder: ResNetConfig {
            arch: Arch::Resnet18,
            width: 0.125,
            stem: Stem::Small,
            zero_init_residual: true,
        },
        method,
        proj_hidden: Some(32),
        proj_dim: Some(16),
        pred_hidden: Some(32),
        projector_form: Default::default(),
    }
}

/// 2 epochs of 3 steps (12 images, batch 4); BG-Mixup with a high probability so that every step mixes
/// and the background queue carries across steps and epochs.
fn config(bg_mixup: bool) -> TrainConfig {
    TrainConfig {
        epochs: 2,
        batch_size: 4,
        queue_size: 16,
        augment: AugmentConfig {
            output_size: 16,
            ..Default::default()
        },
        mix: MixConfig {
            kind: if bg_mixup {
                MixKind::BgMixup
            } else {
                MixKind::None
            },
            bg_mixup_prob: bg_mixup.then_some(0.9),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Images and soft masks (a blob per image whose position varies, values in [0, 1]).
fn data() -> (Tensor, Tensor) {
    let _rng = contracam::util::rng::torch_rng_lock();
    tch::manual_seed(5);
    let images = Tensor::rand([N, 3, SIZE, SIZE], (Kind::Float, Device::Cpu));
    let ramp = Tensor::arange(SIZE, (Kind::Float, Device::Cpu)) / SIZE as f64;
    let centre = Tensor::rand([N, 1, 1], (Kind::Float, Device::Cpu)) * 0.6 + 0.2;
    let d =
        (ramp.view([1, SIZE, 1]) - &centre).square() + (ramp.view([1, 1, SIZE]) - &centre).square();
    let masks = (d * -12.0 + 1.0).clamp(0.0, 1.0);
    (images, masks)
}

fn source(cfg: &TrainConfig) -> InMemorySource {
    let (images, masks) = data();
    InMemorySource::new(images, cfg.batch_size, &cfg.augment, 3, Shard::SINGLE)
        .unwrap()
        .with_masks(masks)
        .unwrap()
}

fn trainer(method: Method, cfg: &TrainConfig) -> Trainer<SingleDevice> {
    Trainer::new(&model(method), cfg, 3, SingleDevice::new(Device::Cpu)).unwrap()
}

fn bytes(t: &Tensor) -> Vec<u8> {
    let t = t.contiguous();
    let n = t.numel();
    let mut b = vec![0u8; n * t.kind().elt_size_in_bytes()];
    t.copy_data_u8(&mut b, n);
    b
}

/// What must be equal: every byte of both networks (by name), every step loss, the report's curve.
struct Outcome {
    weights: Vec<(String, Vec<u8>)>,
    step_losses: Vec<f64>,
    report: TrainReport,
}

fn outcome(t: Trainer<SingleDevice>, report: TrainReport) -> Outcome {
    let mut weights = Vec::new();
    for (prefix, vs) in [("online", &t.online.vs), ("target", &t.target.vs)] {
        for (n, v) in vs.variables() {
            weights.push((format!("{prefix}/{n}"), bytes(&v)));
        }
    }
    weights.sort();
    Outcome {
        weights,
        step_losses: t.step_losses().to_vec(),
        report,
    }
}

fn uninterrupted(method: Method, cfg: &TrainConfig) -> Outcome {
    let mut t = trainer(method, cfg);
    let report = t.fit(&mut source(cfg), &Progress::hidden()).unwrap();
    outcome(t, report)
}

/// Trains `k` steps, saves, drops everything, resumes from the file and finishes.
fn interrupted(method: Method, cfg: &TrainConfig, k: usize, path: &Path) -> Outcome {
    {
        let mut t = trainer(method, cfg);
        let mut src = source(cfg);
        t.fit_until(&mut src, &Progress::hidden(), k).unwrap();
        assert_eq!(t.steps_done(), k);
        t.save_state(path, &src).unwrap();
    }
    let mut src = source(cfg);
    let mut t = Trainer::resume(
        path,
        &model(method),
        cfg,
        3,
        SingleDevice::new(Device::Cpu),
        &mut src,
    )
    .unwrap();
    let report = t.fit(&mut src, &Progress::hidden()).unwrap();
    outcome(t, report)
}

fn assert_same(what: &str, a: &Outcome, b: &Outcome) {
    assert_eq!(a.weights.len(), b.weights.len(), "{what}: tensors");
    for ((na, wa), (nb, wb)) in a.weights.iter().zip(&b.weights) {
        assert_eq!(na, nb, "{what}");
        assert!(wa == wb, "{what}: {na} differs from the uninterrupted run");
    }
    assert_eq!(a.step_losses, b.step_losses, "{what}: step losses");
    assert_eq!(
        a.report.epoch_loss, b.report.epoch_loss,
        "{what}: epoch losses"
    );
    assert_eq!(a.report.steps, b.report.steps, "{what}: steps");
    assert_eq!(
        a.report.view_foreground.map(f64::to_bits),
        b.report.view_foreground.map(f64::to_bits),
        "{what}: view foreground"
    );
}

fn check(method: Method, bg_mixup: bool) {
    let cfg = config(bg_mixup);
    let full = uninterrupted(method, &cfg);
    assert_eq!(full.step_losses.len(), 6);
    let dir = tempfile::tempdir().unwrap();
    // Mid-epoch 1, the end of epoch 1 (its loss not yet in the curve), mid-epoch 2.
    for k in [1, 3, 4] {
        let path = dir.path().join(format!("state-{k}.safetensors"));
        let resumed = interrupted(method, &cfg, k, &path);
        assert_same(
            &format!("{method:?} bg_mixup={bg_mixup} stopped after {k}"),
            &full,
            &resumed,
        );
    }
}

#[test]
fn moco_resume_equals_an_uninterrupted_run() {
    let _serial = serial();
    check(Method::Moco, false);
}

#[test]
fn byol_resume_equals_an_uninterrupted_run() {
    let _serial = serial();
    check(Method::Byol, false);
}

#[test]
fn moco_with_bg_mixup_resume_equals_an_uninterrupted_run() {
    let _serial = serial();
    check(Method::Moco, true);
}

#[test]
fn byol_with_bg_mixup_resume_equals_an_uninterrupted_run() {
    let _serial = serial();
    check(Method::Byol, true);
}

/// The state `fit` writes by its checkpoint policy (after epoch 1 here) resumes to the same end.
#[test]
fn state_written_by_the_checkpoint_policy_resumes_the_run() {
    let _serial = serial();
    let cfg = config(true);
    let full = uninterrupted(Method::Moco, &cfg);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.state.safetensors");
    {
        let mut t = trainer(Method::Moco, &cfg);
        t.set_checkpoint(Some(CheckpointPolicy {
            path: path.clone(),
            every_epochs: 1,
        }));
        // Killed during epoch 2: the file holds the end of epoch 1.
        t.fit_until(&mut source(&cfg), &Progress::hidden(), 5)
            .unwrap();
    }
    assert!(path.is_file(), "no state written after epoch 1");
    let mut src = source(&cfg);
    let mut t = Trainer::resume(
        &path,
        &model(Method::Moco),
        &cfg,
        3,
        SingleDevice::new(Device::Cpu),
        &mut src,
    )
    .unwrap();
    assert_eq!(t.steps_done(), 3, "resumed at the end of epoch 1");
    let report = t.fit(&mut src, &Progress::hidden()).unwrap();
    assert_same("policy", &full, &outcome(t, report));
}

fn resume_error(path: &Path, model_cfg: &ModelConfig, cfg: &TrainConfig) -> String {
    let mut src = source(cfg);
    match Trainer::resume(
        path,
        model_cfg,
        cfg,
        3,
        SingleDevice::new(Device::Cpu),
        &mut src,
    ) {
        Ok(_) => panic!("resumed a state written for another run"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_state_of_another_config_or_a_truncated_file_is_refused() {
    let _serial = serial();
    let cfg = config(false);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.safetensors");
    {
        let mut t = trainer(Method::Moco, &cfg);
        let mut src = source(&cfg);
        t.fit_until(&mut src, &Progress::hidden(), 2).unwrap();
        t.save_state(&path, &src).unwrap();
    }
    let e = resume_error(&path, &model(Method::Byol), &cfg);
    assert!(
        e.contains("model.method") && e.contains(&path.display().to_string()),
        "{e}"
    );
    let mut other_arch = model(Method::Moco);
    other_arch.encoder.arch = Arch::Resnet50;
    let e = resume_error(&path, &other_arch, &cfg);
    assert!(e.contains("model.arch"), "{e}");
    let other_batch = TrainConfig {
        batch_size: 6,
        ..cfg.clone()
    };
    let e = resume_error(&path, &model(Method::Moco), &other_batch);
    assert!(e.contains("train.batch_size"), "{e}");
    let mut with_mix = cfg.clone();
    with_mix.mix.kind = MixKind::Mixup;
    let e = resume_error(&path, &model(Method::Moco), &with_mix);
    assert!(e.contains("train.mix.kind"), "{e}");

    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = resume_error(&cut, &model(Method::Moco), &cfg);
    assert!(e.contains("cut.safetensors"), "{e}");
}

// ---- the index-backed source (a built split through the loader) ----------------------------------------

mod stage_kinds_common;

use std::sync::Arc;

use contracam::data::loader::IndexSource;
use contracam::train::{BatchSource, IndexBatchSource, IndexSourceOptions};

/// The toy split of `stage_kinds_common` (12 PNGs of varying sizes): 3 batches of 4 per epoch.
fn index_batches(data: &Path, cfg: &TrainConfig, workers: usize) -> IndexBatchSource {
    let source = Arc::new(IndexSource::open(data, "toy", "train").unwrap());
    IndexBatchSource::new(
        source,
        cfg.batch_size,
        &cfg.augment,
        3,
        Shard::SINGLE,
        IndexSourceOptions {
            workers,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Stopped after k steps (mid-epoch 1, its end, mid-epoch 2) over a loader with 2 workers, resumed in a
/// new trainer over a new loader with none: the loader's state puts it back on the same batches, and the
/// run ends bit for bit where the uninterrupted one does.
#[test]
fn resume_over_a_built_split_equals_an_uninterrupted_run() {
    let _serial = serial();
    let f = stage_kinds_common::fixture(&[("train", 12, 0)], false);
    let cfg = config(false);
    for method in [Method::Moco, Method::Byol] {
        let mut t = trainer(method, &cfg);
        let mut src = index_batches(&f.data, &cfg, 2);
        assert_eq!(src.batches_per_epoch(), 3);
        let report = t.fit(&mut src, &Progress::hidden()).unwrap();
        let full = outcome(t, report);
        assert_eq!(full.step_losses.len(), 6);
        let dir = tempfile::tempdir().unwrap();
        for k in [1, 3, 4] {
            let path = dir.path().join(format!("state-{k}.safetensors"));
            {
                let mut t = trainer(method, &cfg);
                let mut src = index_batches(&f.data, &cfg, 2);
                t.fit_until(&mut src, &Progress::hidden(), k).unwrap();
                t.save_state(&path, &src).unwrap();
            }
            let mut src = index_batches(&f.data, &cfg, 0);
            let mut t = Trainer::resume(
                &path,
                &model(method),
                &cfg,
                3,
                SingleDevice::new(Device::Cpu),
                &mut src,
            )
            .unwrap();
            let report = t.fit(&mut src, &Progress::hidden()).unwrap();
            assert_same(
                &format!("{method:?} on toy:train stopped after {k}"),
                &full,
                &outcome(t, report),
            );
        }
    }
}

/// A MoCo suite of tiny networks: 10 epochs of 4 batches of 4 toy images at 16 px (its synthetic [data]
/// and [sizes] are required by the format, unused with --dataset).
const KILL_SUITE: &str = r#"
name = "resume"
version = 1
seed = 0

[data]
image_size = 64
num_classes = 6
num_backgrounds = 6
min_objects = 1
max_objects = 2
background_bias = 0.8
context_bias = 0.5
object_scale = [0.3, 0.55]
crop_size = 48

[sizes]
train_scenes = 64
test_scenes = 16
crops_train = 16
crops_val = 16
crops_test = 16

[model]
arch = "resnet18"
width = 0.25
stem = "small"
method = "moco"

[train]
epochs = 10
batch_size = 4
queue_size = 16

[train.augment]
output_size = 16

[localize]
batch_size = 32
threshold = 0.5
masks = { expand_res = 2, iters = 1, negative_removal = true }
boxes = { expand_res = 2, iters = 1, negative_removal = true }
"#;

/// The tensors of a checkpoint by name, as bytes.
fn tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let f = contracam::data::formats::safetensors::read_tensors(path).unwrap();
    let mut v: Vec<(String, Vec<u8>)> = f
        .tensors
        .iter()
        .map(|(k, t)| (k.clone(), bytes(t)))
        .collect();
    v.sort();
    v
}

fn epoch_losses(path: &Path) -> Vec<f64> {
    let f = contracam::data::formats::safetensors::read_tensors(path).unwrap();
    let report: TrainReport = serde_json::from_str(&f.metadata["contracam.train_report"]).unwrap();
    report.epoch_loss
}

/// `train ssl --dataset --checkpoint-every 1` killed (SIGKILL) once its first state is on disk, then run
/// again with `--resume`, writes the weights and loss curve of the run that was never stopped.
#[test]
fn train_ssl_on_a_dataset_killed_and_resumed_equals_never_stopping() {
    let _serial = serial();
    let f = stage_kinds_common::fixture(&[("train", 16, 0)], false);
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("suite.toml");
    std::fs::write(&suite, KILL_SUITE).unwrap();
    let cmd = |out: &Path| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_contracam"));
        c.env("CONTRACAM_LOG", "error")
            .env("CONTRACAM_PROGRESS", "off")
            .args([
                "train",
                "ssl",
                "--quiet",
                "--threads",
                "1",
                "--workers",
                "2",
            ])
            .arg("--suite")
            .arg(&suite)
            .args([
                "--dataset",
                "toy:train",
                "--seed",
                "5",
                "--checkpoint-every",
                "1",
            ])
            .arg("--data-dir")
            .arg(&f.data)
            .arg("--out")
            .arg(out);
        c
    };
    let full = dir.path().join("full.safetensors");
    let status = cmd(&full).status().unwrap();
    assert!(status.success());

    let killed = dir.path().join("killed.safetensors");
    let state = killed.with_extension("state.safetensors");
    let mut child = cmd(&killed).spawn().unwrap();
    let start = std::time::Instant::now();
    while !state.is_file() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first state was seen"
        );
        assert!(start.elapsed().as_secs() < 300, "no state after 300 s");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(running, "the run ended before it could be killed");
    assert!(!killed.exists(), "the killed run wrote its model");

    let mut resume = cmd(&killed);
    resume.arg("--resume").arg(&state);
    assert!(resume.status().unwrap().success());
    let (a, b) = (tensors(&full), tensors(&killed));
    assert_eq!(a.len(), b.len());
    for ((na, wa), (nb, wb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(wa == wb, "{na} differs from the uninterrupted run");
    }
    assert_eq!(epoch_losses(&full), epoch_losses(&killed));
    assert_eq!(epoch_losses(&full).len(), 10);
}

/// One test of this binary at a time, on one libtorch thread: its bitwise comparisons stay exact (two
/// concurrent OpenMP teams change reduction orders).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    guard
}
