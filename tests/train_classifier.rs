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
    CONFIG_META_KEY,
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
