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
