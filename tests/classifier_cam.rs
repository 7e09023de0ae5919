//! Classifier CAM and Grad-CAM against known answers computed at test time with the .venv torch by
//! `tests/fixtures/classifier_cam.py` (wsolevaluation's `ResNetCam` CAM, the official supervised Grad-CAM) on
//! a small torchvision-layout ResNet-50 classifier that goes through `model import` first.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use assert_cmd::Command;
use contracam::data::formats::safetensors::{read_tensors, write_tensors};
use contracam::localize::classifier_cam::{class_activation_map, grad_cam, wsol_scoremap};
use contracam::model::import::import_checkpoint;
use contracam::model::Classifier;
use tch::{Device, Kind, Tensor};

struct Fixture {
    dir: PathBuf,
    spec: serde_json::Value,
    weights: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = std::process::Command::new(root.join(".venv/bin/python"))
            .arg(root.join("tests/fixtures/classifier_cam.py"))
            .arg(&dir)
            .output()
            .expect("running .venv/bin/python (run `make setup`)");
        assert!(
            out.status.success(),
            "fixture script failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let spec =
            serde_json::from_str(&std::fs::read_to_string(dir.join("cams.json")).unwrap()).unwrap();
        let weights = dir.join("classifier.safetensors");
        import_checkpoint(&dir.join("classifier.pt"), &weights, None).unwrap();
        Fixture { dir, spec, weights }
    })
}

fn shape(key: &str) -> Vec<i64> {
    fixture().spec[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn f32_tensor(name: &str, shape: &[i64]) -> Tensor {
    let v: Vec<f32> = std::fs::read(fixture().dir.join(name))
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Tensor::from_slice(&v).reshape(shape)
}

fn labels() -> Tensor {
    let v: Vec<i64> = std::fs::read(fixture().dir.join("labels.i64"))
        .unwrap()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    Tensor::from_slice(&v)
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn cam_equals_wsolevaluation_resnetcam() {
    let f = fixture();
    let model = Classifier::load(&f.weights, Device::Cpu).unwrap();
    let images = f32_tensor("images.f32", &shape("images"));
    let want = f32_tensor("cam_raw.f32", &shape("cam_raw"));
    let got = class_activation_map(&model, &images, &labels(), 2).unwrap();
    assert_eq!(got.size(), want.size());
    // Same float32 operations as the reference; 1e-5 relative to the map's range covers summation order.
    let d = max_abs(&got, &want);
    let range = want.abs().max().double_value(&[]);
    println!("CAM max |Δ| = {d:.3e} (map range {range:.3e})");
    assert!(d <= 1e-5 * range.max(1e-6), "max |Δ| = {d:e}");
    // A different label gives a different map: the class weights are used.
    let other = class_activation_map(&model, &images, &(labels() + 1).remainder(5), 2).unwrap();
    assert!(max_abs(&other, &want) > 10.0 * d.max(1e-7));
}

#[test]
fn grad_cam_equals_the_official_supervised_gradcam() {
    let f = fixture();
    let model = Classifier::load(&f.weights, Device::Cpu).unwrap();
    let images = f32_tensor("images.f32", &shape("images"));
    let want = f32_tensor("gradcam_label.f32", &shape("gradcam"));
    let got = grad_cam(&model, &images, Some(&labels()), 2).unwrap();
    // atol 1e-4 as the ContraCAM parity vectors (maps in [0, 1], fp32 noise).
    let d = max_abs(&got, &want);
    println!("Grad-CAM (labels) max |Δ| = {d:.3e}");
    assert!(d <= 1e-4, "max |Δ| = {d:e}");
    let want = f32_tensor("gradcam_argmax.f32", &shape("gradcam"));
    let got = grad_cam(&model, &images, None, 2).unwrap();
    let d = max_abs(&got, &want);
    println!("Grad-CAM (arg-max) max |Δ| = {d:.3e}");
    assert!(d <= 1e-4, "max |Δ| = {d:e}");
}

#[test]
fn bad_labels_are_errors() {
    let f = fixture();
    let model = Classifier::load(&f.weights, Device::Cpu).unwrap();
    let images = f32_tensor("images.f32", &shape("images"));
    let e = class_activation_map(&model, &images, &Tensor::from_slice(&[0i64, 1]), 2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("shape (4,)"), "{e}");
    let e = grad_cam(
        &model,
        &images,
        Some(&Tensor::from_slice(&[0i64, 1, 2, 5])),
        2,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("0..5"), "{e}");
}

#[test]
fn scoremap_normalisation_as_wsolevaluation() {
    // Constant and NaN maps become zeros; otherwise min 0 and max 1.
    assert_eq!(wsol_scoremap(&[2.0; 4], 2, 2, 3, 3), vec![0.0; 9]);
    assert_eq!(
        wsol_scoremap(&[1.0, f64::NAN, 0.0, 2.0], 2, 2, 2, 2),
        vec![0.0; 4]
    );
    let m = wsol_scoremap(&[-1.0, 3.0, 0.5, 2.0], 2, 2, 5, 4);
    let (lo, hi) = m
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert_eq!((lo, hi), (0.0, 1.0));
}

#[test]
fn localize_cam_cli_classifier_modes() {
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let images = f32_tensor("images.f32", &shape("images"));
    let inputs = t.path().join("inputs.safetensors");
    write_tensors(
        &inputs,
        &[
            ("images".into(), images.shallow_clone()),
            ("labels".into(), labels()),
        ],
        &Default::default(),
    )
    .unwrap();
    let run = |mode: &str, out: &Path| {
        let o = Command::cargo_bin("contracam")
            .unwrap()
            .args(["localize", "cam", "--quiet", "--device", "cpu", "--weights"])
            .arg(&f.weights)
            .arg("--inputs")
            .arg(&inputs)
            .args([
                "--input-key",
                "images",
                "--labels-key",
                "labels",
                "--expand-res",
                "2",
            ])
            .args(["--classifier-cam", mode, "--out"])
            .arg(out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        read_tensors(out)
            .unwrap()
            .get("cam")
            .unwrap()
            .shallow_clone()
    };
    // CAM: wsolevaluation's score maps at the input size, from the reference raw CAM.
    let got = run("cam", &t.path().join("cam.safetensors"));
    let raw = f32_tensor("cam_raw.f32", &shape("cam_raw")).to_kind(Kind::Double);
    let (h, w) = (raw.size()[1] as usize, raw.size()[2] as usize);
    let mut want = vec![];
    for i in 0..raw.size()[0] {
        let m = Vec::<f64>::try_from(raw.get(i).reshape([-1])).unwrap();
        want.extend(wsol_scoremap(&m, w, h, 64, 64));
    }
    let want = Tensor::from_slice(&want)
        .view([4, 1, 64, 64])
        .to_kind(Kind::Float);
    let d = max_abs(&got, &want);
    println!("CLI CAM score maps max |Δ| = {d:.3e}");
    assert!(d <= 1e-4, "max |Δ| = {d:e}");
    let got = run("grad-cam", &t.path().join("gc.safetensors"));
    let want = f32_tensor("gradcam_label.f32", &shape("gradcam"));
    assert!(max_abs(&got, &want) <= 1e-4);
}
