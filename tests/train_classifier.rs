//! Supervised classifier training (`train::supervised`, the `train-classifier` stage kind, `train
//! classifier`) on the toy built split of `stage_kinds_common`: class 0 is a wide red bar, class 1 a tall
//! one, on a textured blue background, so the classes are separable by shape.
mod stage_kinds_common;

use std::path::Path;
use std::sync::Arc;

use assert_cmd::Command;
use contracam::data::loader::{IndexSource, Source};
use contracam::model::{Classifier, Stem};
use contracam::suite::stage::{Artefact, ArtefactKind, Input};
use contracam::train::supervised::{
    train_classifier, ClassifierReport, ClassifierRunOptions, ClassifierTrainConfig,
    ClassifierTrainer, LabelledIndexSource, CONFIG_META_KEY,
};
use contracam::util::progress::Progress;
use stage_kinds_common::{fixture, index_input, inputs, refused, run_kind};
use tch::Device;

const IMAGES: u32 = 32;

/// A tiny network on 32 px crops that keep most of the image (the bar's shape is the class), with the lr
/// of batch 256 scaled so that batch 8 steps at 0.1.
fn recipe() -> ClassifierTrainConfig {
    ClassifierTrainConfig {
        arch: contracam::model::Arch::Resnet18,
        width: 0.125,
        stem: Stem::Small,
        epochs: 8,
        batch: 8,
        base_lr: 3.2,
        image_size: 32,
        min_crop_scale: 0.6,
        ..Default::default()
    }
}

/// The same recipe as suite params.
const PARAMS: &str =
    "arch = \"resnet18\"\nwidth = 0.125\nstem = \"small\"\nepochs = 8\nbatch = 8\n\
                      base_lr = 3.2\nimage_size = 32\nmin_crop_scale = 0.6";

fn opts() -> ClassifierRunOptions {
    ClassifierRunOptions {
        workers: 2,
        device: Device::Cpu,
    }
}

#[test]
fn loss_falls_and_train_accuracy_rises_on_a_separable_split() {
    let _serial = serial();
    let f = fixture(&[("train", IMAGES, 0)], false);
    let source: Arc<dyn Source> = Arc::new(IndexSource::open(&f.data, "toy", "train").unwrap());
    let (_, r) = train_classifier(&recipe(), source, &opts(), 1, &Progress::hidden()).unwrap();
    eprintln!("{r:?}");
    assert_eq!(r.steps, 8 * (IMAGES as usize / 8));
    assert_eq!(r.epoch_loss.len(), 8);
    let (first, last) = (r.epoch_loss[0], *r.epoch_loss.last().unwrap());
    assert!(last < 0.7 * first, "loss {first} -> {last}");
    let acc = &r.epoch_accuracy;
    assert!(
        acc[6..].iter().sum::<f64>() > acc[..2].iter().sum::<f64>(),
        "accuracy per epoch {acc:?}"
    );
    // Chance is 50 %; the shapes are learnt.
    assert!(
        r.train_accuracy >= 80.0,
        "train accuracy {}",
        r.train_accuracy
    );
}

fn cli_train(data: &Path, out: &Path) -> std::process::Output {
    Command::cargo_bin("contracam")
        .unwrap()
        .env("CONTRACAM_LOG", "error")
        .args([
            "train",
            "classifier",
            "--dataset",
            "toy:train",
            "--data-dir",
        ])
        .arg(data)
        .args([
            "--arch",
            "resnet18",
            "--width",
            "0.125",
            "--stem",
            "small",
            "--epochs",
            "8",
            "--batch",
            "8",
            "--base-lr",
            "3.2",
            "--image-size",
            "32",
            "--min-crop-scale",
            "0.6",
            "--seed",
            "3",
            "--threads",
            "1",
            "--workers",
            "1",
            "--quiet",
            "--out",
        ])
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn the_stage_equals_the_cli_bitwise_and_its_checkpoint_drives_classifier_cam() {
    let _serial = serial();
    let f = fixture(&[("train", IMAGES, 0), ("test", 6, 100)], false);
    let tmp = tempfile::tempdir().unwrap();
    let stage_dir = tmp.path().join("stage");
    let ins = inputs(vec![("data", index_input(&f, "train"))]);
    let res = run_kind("train-classifier", PARAMS, &ins, 3, &stage_dir).unwrap();
    let stage_model = stage_dir.join("model.safetensors");
    let stage_report: ClassifierReport =
        serde_json::from_slice(&std::fs::read(stage_dir.join("train_report.json")).unwrap())
            .unwrap();
    assert_eq!(
        res.metrics["final_loss"],
        *stage_report.epoch_loss.last().unwrap()
    );
    assert_eq!(res.metrics["train_accuracy"], stage_report.train_accuracy);

    let cli_model = tmp.path().join("cli.safetensors");
    let out = cli_train(&f.data, &cli_model);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(&stage_model).unwrap(),
        std::fs::read(&cli_model).unwrap(),
        "the stage and the CLI wrote different checkpoints"
    );
    let cli_report: ClassifierReport =
        serde_json::from_slice(&std::fs::read(tmp.path().join("cli.report.json")).unwrap())
            .unwrap();
    assert_eq!(cli_report.epoch_loss, stage_report.epoch_loss);
    assert_eq!(cli_report.train_accuracy, stage_report.train_accuracy);

    // A classifier checkpoint: method "supervised", `encoder.*` and `fc.*` for the two classes, the recipe
    // in the metadata.
    let model = Classifier::load(&stage_model, Device::Cpu).unwrap();
    assert_eq!(model.config.num_classes, 2);
    let file = contracam::data::formats::safetensors::read_tensors(&stage_model).unwrap();
    assert_eq!(file.tensors["fc.weight"].size()[0], 2);
    assert!(file
        .tensors
        .keys()
        .all(|k| k.starts_with("encoder.") || k.starts_with("fc.")));
    let recorded: ClassifierTrainConfig =
        serde_json::from_str(&file.metadata[CONFIG_META_KEY]).unwrap();
    assert_eq!(recorded, recipe());

    // The localize stage's classifier CAM reads it unchanged.
    let loc_in = inputs(vec![
        (
            "model",
            Input::Artefact(Artefact {
                kind: ArtefactKind::ModelCheckpoint,
                path: stage_model.clone(),
                fingerprint: "0".repeat(64),
                producer: "sup.model".into(),
            }),
        ),
        ("data", index_input(&f, "test")),
    ]);
    let loc = tmp.path().join("loc");
    let r = run_kind(
        "localize",
        "method = \"classifier-cam\"\ncrf = false\ninput_size = 32\nbatch_size = 3",
        &loc_in,
        0,
        &loc,
    )
    .unwrap();
    assert!(r.metrics["boxes_per_image"] > 0.0, "{:?}", r.metrics);
    assert_eq!(files_under(&loc.join("score_maps")), 6);

    // And so does `localize dataset --classifier-cam`.
    let ld = tmp.path().join("ld");
    let out = Command::cargo_bin("contracam")
        .unwrap()
        .env("CONTRACAM_LOG", "error")
        .args([
            "localize",
            "dataset",
            "--classifier-cam",
            "cam",
            "--weights",
        ])
        .arg(&stage_model)
        .args(["--dataset", "toy:test", "--data-dir"])
        .arg(&f.data)
        .args([
            "--image-size",
            "32",
            "--batch-size",
            "3",
            "--threads",
            "1",
            "--quiet",
            "--out",
        ])
        .arg(&ld)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_parameters_and_flags_are_refused_naming_them() {
    let _serial = serial();
    for (params, key) in [
        ("epochs = 0", "epochs"),
        ("batch = 1", "batch"),
        ("base_lr = -1.0", "base_lr"),
        ("momentum = 1.0", "momentum"),
        ("min_crop_scale = 1.5", "min_crop_scale"),
        ("width = 0.0", "width"),
        ("hflip_p = 2.0", "hflip_p"),
    ] {
        let (k, msg) = refused("train-classifier", params);
        assert_eq!(k, key, "{params}: {msg}");
    }
    let (k, msg) = refused("train-classifier", "arch = \"resnet34\"");
    assert!(k == "arch" || msg.contains("arch"), "{k}: {msg}");
    let (k, msg) = refused("train-classifier", "epoch = 3");
    assert!(k.contains("epoch") || msg.contains("epoch"), "{k}: {msg}");

    // A batch larger than the split is the data's problem, named on the data slot.
    let f = fixture(&[("train", 6, 0)], false);
    let tmp = tempfile::tempdir().unwrap();
    let ins = inputs(vec![("data", index_input(&f, "train"))]);
    let e = run_kind("train-classifier", "batch = 8", &ins, 0, tmp.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("'data'") && e.contains("batch"), "{e}");

    let out = Command::cargo_bin("contracam")
        .unwrap()
        .args([
            "train",
            "classifier",
            "--dataset",
            "toy:train",
            "--base-lr",
            "0",
            "--data-dir",
        ])
        .arg(&f.data)
        .arg("--out")
        .arg(tmp.path().join("m.safetensors"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--base-lr"), "{err}");
}

/// The bytes of every variable of a classifier, by name.
fn weights(model: &Classifier) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = model
        .vs
        .variables()
        .into_iter()
        .map(|(n, t)| {
            let t = t.contiguous();
            let mut b = vec![0u8; t.numel() * t.kind().elt_size_in_bytes()];
            t.copy_data_u8(&mut b, t.numel());
            (n, b)
        })
        .collect();
    v.sort();
    v
}

/// Stopped after k steps (mid-epoch 1, its end, mid-epoch 2) over a loader with 2 workers, saved,
/// dropped, resumed over a fresh loader with none: the weights and curves of the run never stopped.
#[test]
fn a_library_run_stopped_anywhere_resumes_bit_for_bit() {
    let _serial = serial();
    let f = fixture(&[("train", IMAGES, 0)], false);
    let source: Arc<dyn Source> = Arc::new(IndexSource::open(&f.data, "toy", "train").unwrap());
    let cfg = ClassifierTrainConfig {
        epochs: 3,
        ..recipe()
    };
    let hidden = Progress::hidden();
    let batches = |workers: usize| {
        let o = ClassifierRunOptions {
            workers,
            device: Device::Cpu,
        };
        LabelledIndexSource::new(source.clone(), &cfg, 4, &o).unwrap()
    };
    let mut full = ClassifierTrainer::new(&cfg, 2, 4, Device::Cpu).unwrap();
    full.fit(&mut batches(2), &hidden).unwrap();
    assert_eq!(full.steps_done(), 12);
    let tmp = tempfile::tempdir().unwrap();
    for k in [2, 4, 6] {
        let path = tmp.path().join(format!("k{k}.safetensors"));
        let mut first = ClassifierTrainer::new(&cfg, 2, 4, Device::Cpu).unwrap();
        let mut src = batches(2);
        first.fit_until(&mut src, &hidden, k).unwrap();
        assert_eq!(first.steps_done(), k);
        first.save_state(&path, &src).unwrap();
        drop((first, src));
        let mut src = batches(0);
        let mut resumed =
            ClassifierTrainer::resume(&path, &cfg, 2, 4, Device::Cpu, &mut src).unwrap();
        resumed.fit(&mut src, &hidden).unwrap();
        assert_eq!(resumed.steps_done(), 12, "k = {k}");
        assert_eq!(resumed.epoch_loss(), full.epoch_loss(), "k = {k}");
        assert!(
            weights(&resumed.model) == weights(&full.model),
            "k = {k}: the resumed weights differ from the uninterrupted run's"
        );
    }
}

fn cli_cmd(data: &Path, out: &Path, extra: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_contracam"));
    c.env("CONTRACAM_LOG", "error")
        .env("CONTRACAM_PROGRESS", "off")
        .args([
            "train",
            "classifier",
            "--dataset",
            "toy:train",
            "--data-dir",
        ])
        .arg(data)
        .args([
            "--arch",
            "resnet18",
            "--width",
            "0.125",
            "--stem",
            "small",
            "--epochs",
            "12",
            "--batch",
            "8",
            "--image-size",
            "32",
            "--min-crop-scale",
            "0.6",
            "--threads",
            "1",
            "--workers",
            "2",
            "--quiet",
            "--checkpoint-every",
            "1",
        ])
        .args(extra)
        .arg("--out")
        .arg(out);
    c
}

fn report_of(model: &Path) -> ClassifierReport {
    serde_json::from_slice(&std::fs::read(model.with_extension("report.json")).unwrap()).unwrap()
}

/// `train classifier --checkpoint-every 1` killed (SIGKILL) once its first state is on disk, then run
/// again with `--resume`, writes the weights and report of the run that was never stopped; a resume
/// with another hyper-parameter or seed is refused naming it.
#[test]
fn train_classifier_killed_and_resumed_equals_never_stopping() {
    let _serial = serial();
    let f = fixture(&[("train", IMAGES, 0)], false);
    let dir = tempfile::tempdir().unwrap();
    let base = ["--base-lr", "3.2", "--seed", "5"];
    let full = dir.path().join("full.safetensors");
    let out = cli_cmd(&f.data, &full, &base).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let killed = dir.path().join("killed.safetensors");
    let state = killed.with_extension("state.safetensors");
    let mut child = cli_cmd(&f.data, &killed, &base).spawn().unwrap();
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

    // Another hyper-parameter, or another seed, is refused by name before any step.
    let saved = std::fs::read(&state).unwrap();
    for (extra, field) in [
        (["--base-lr", "1.6", "--seed", "5"], "recipe.base_lr"),
        (["--base-lr", "3.2", "--seed", "6"], "seed"),
    ] {
        let other = dir.path().join("other.safetensors");
        let out = cli_cmd(&f.data, &other, &extra)
            .arg("--resume")
            .arg(&state)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{field}: resumed");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("written for {field} = ")), "{err}");
        assert!(!other.exists());
        assert_eq!(
            std::fs::read(&state).unwrap(),
            saved,
            "a refused resume wrote the state"
        );
    }

    let out = cli_cmd(&f.data, &killed, &base)
        .arg("--resume")
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |p: &Path| {
        let file = contracam::data::formats::safetensors::read_tensors(p).unwrap();
        let mut v: Vec<(String, Vec<u8>)> = file
            .tensors
            .iter()
            .map(|(k, t)| {
                let t = t.contiguous();
                let mut b = vec![0u8; t.numel() * t.kind().elt_size_in_bytes()];
                t.copy_data_u8(&mut b, t.numel());
                (k.clone(), b)
            })
            .collect();
        v.sort();
        (v, file.metadata)
    };
    let ((a, meta_a), (b, meta_b)) = (read(&full), read(&killed));
    assert_eq!(a.len(), b.len());
    for ((na, wa), (nb, wb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(wa == wb, "{na} differs from the uninterrupted run");
    }
    assert_eq!(meta_a, meta_b);
    let (ra, rb) = (report_of(&full), report_of(&killed));
    assert_eq!(ra.epoch_loss.len(), 12);
    assert_eq!(
        (
            ra.steps,
            &ra.epoch_loss,
            &ra.epoch_accuracy,
            ra.train_accuracy
        ),
        (
            rb.steps,
            &rb.epoch_loss,
            &rb.epoch_accuracy,
            rb.train_accuracy
        )
    );
    assert_eq!(
        (ra.num_classes, ra.images, ra.seed),
        (rb.num_classes, rb.images, rb.seed)
    );
}

fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            if p.is_dir() {
                files_under(&p)
            } else {
                1
            }
        })
        .sum()
}

/// One test of this binary at a time, on one libtorch thread: its bitwise comparisons stay exact (two
/// concurrent OpenMP teams change reduction orders).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    guard
}

/// bf16-mixed with channels_last against fp32: 2 steps from the same seed and batches, over seeds 0–5.
/// The recipe of an fp32 run serialises as before (no precision key), the parameters stay float32, and
/// the two runs differ (the autocast region is active) by no more than the measured bounds.
#[test]
fn bf16_mixed_steps_stay_close_to_fp32() {
    use contracam::train::precision::Precision;
    let _serial = serial();
    let f = fixture(&[("train", IMAGES, 0)], false);
    let source: Arc<dyn Source> = Arc::new(IndexSource::open(&f.data, "toy", "train").unwrap());
    // A tenth of the toy recipe's lr: at lr 0.1 this 8-channel network turns float32 rounding alone
    // (channels_last vs contiguous) into update cosines of 0.74 within 4 steps, which would hide what
    // bf16 does.
    let fp32 = ClassifierTrainConfig {
        base_lr: 0.32,
        ..recipe()
    };
    let bf16 = ClassifierTrainConfig {
        precision: Precision::Bf16Mixed,
        channels_last: true,
        ..fp32.clone()
    };
    let json = |c: &ClassifierTrainConfig| serde_json::to_string(c).unwrap();
    assert!(!json(&fp32).contains("precision") && !json(&fp32).contains("channels_last"));
    assert!(json(&bf16).contains("\"precision\":\"bf16-mixed\""));
    let hidden = Progress::hidden();
    let run = |cfg: &ClassifierTrainConfig, seed: u64| {
        let o = ClassifierRunOptions {
            workers: 1,
            device: Device::Cpu,
        };
        let mut src = LabelledIndexSource::new(source.clone(), cfg, seed, &o).unwrap();
        let mut t = ClassifierTrainer::new(cfg, 2, seed, Device::Cpu).unwrap();
        let mut init: Vec<(String, tch::Tensor)> = t
            .model
            .vs
            .variables()
            .into_iter()
            .filter(|(_, v)| v.requires_grad())
            .map(|(n, v)| (n, v.detach().copy()))
            .collect();
        init.sort_by(|x, y| x.0.cmp(&y.0));
        t.fit_until(&mut src, &hidden, 2).unwrap();
        assert_eq!(t.steps_done(), 2);
        let mut after = t.model.vs.variables();
        for (n, v) in after
            .iter()
            .filter(|(n, _)| !n.ends_with("num_batches_tracked"))
        {
            assert_eq!(v.kind(), tch::Kind::Float, "{n} is not float32");
        }
        init.into_iter()
            .map(|(n, v0)| (v0, after.remove(&n).unwrap()))
            .collect::<Vec<_>>()
    };
    let (mut worst_w, mut worst_cos) = (0.0f64, 1.0f64);
    for seed in 0..6u64 {
        let a = run(&fp32, seed);
        let b = run(&bf16, seed);
        let (mut w, mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for ((a0, a1), (_, b1)) in a.iter().zip(&b) {
            let (ua, ub) = (
                (a1 - a0).to_kind(tch::Kind::Double),
                (b1 - a0).to_kind(tch::Kind::Double),
            );
            w = w.max((a1 - b1).abs().max().double_value(&[]));
            dot += (&ua * &ub).sum(tch::Kind::Double).double_value(&[]);
            na += (&ua * &ua).sum(tch::Kind::Double).double_value(&[]);
            nb += (&ub * &ub).sum(tch::Kind::Double).double_value(&[]);
        }
        let cos = dot / (na.sqrt() * nb.sqrt());
        eprintln!("seed {seed}: max |weight Δ| {w:.3e}, update cosine {cos:.5}");
        assert!(
            w > 0.0,
            "seed {seed}: bf16-mixed gave the fp32 weights exactly"
        );
        worst_w = worst_w.max(w);
        worst_cos = worst_cos.min(cos);
    }
    eprintln!("worst: weights {worst_w:.3e}, cosine {worst_cos:.5}");
    // Bounds. Measured over seeds 0–5: max |weight Δ| 6.0e-3…1.4e-2, update cosine 0.870…0.914 (bfloat16
    // keeps 8 significant bits, and BatchNorm's backward on 8 channels cancels much of each gradient);
    // fp32 with channels_last alone gives 1.1e-3 and 0.999 here (float32 rounding), so the bounds, 3× the
    // worst weight difference and 3× the worst 1 − cosine, separate a working autocast from a broken one
    // (a run that left it off would give exactly the fp32 weights, refused above).
    assert!(worst_w < 0.04, "max |weight Δ| {worst_w}");
    assert!(worst_cos > 0.6, "update cosine {worst_cos}");
}
