//! `contracam eval ...` prints the stated JSON with the reference numbers.
mod common;

use assert_cmd::Command;
use serde_json::Value;

fn run_json(args: &[&str]) -> Value {
    let out = Command::cargo_bin("contracam")
        .unwrap()
        .args(args)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out)))
}

fn s(p: std::path::PathBuf) -> String {
    p.display().to_string()
}

#[test]
fn miou_json() {
    let r = common::reference_dir().join("metrics/masks");
    let v = run_json(&[
        "eval",
        "miou",
        "--pred",
        &s(r.join("pred")),
        "--gt",
        &s(r.join("gt")),
        "--json",
    ]);
    assert!((v["mIoU"].as_f64().unwrap() - 0.53798222941511).abs() < 1e-12);
    assert_eq!(v["n"], 25);
}

#[test]
fn maxboxacc_json_and_curves_file() {
    let r = common::reference_dir().join("metrics/wsol");
    let dir = tempfile::tempdir().unwrap();
    let curves = dir.path().join("curves.json");
    let v = run_json(&[
        "eval",
        "maxboxacc",
        "--metadata",
        &s(r.join("metadata/CUB/test")),
        "--scoremaps",
        &s(r.join("scoremaps")),
        "--curves",
        &s(curves.clone()),
        "--json",
    ]);
    assert_eq!(v["MaxBoxAccV2"].as_f64().unwrap(), 48.333333333333336);
    assert_eq!(
        (
            v["IoU30"].as_f64(),
            v["IoU50"].as_f64(),
            v["IoU70"].as_f64()
        ),
        (Some(77.5), Some(47.5), Some(20.0))
    );
    let got: Value = serde_json::from_str(&std::fs::read_to_string(&curves).unwrap()).unwrap();
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(r.join("curves.json")).unwrap()).unwrap();
    assert_eq!(got["curves"], want["curves"]["multi_contour_eval_True"]);
    let v = run_json(&[
        "eval",
        "maxboxacc",
        "--metadata",
        &s(r.join("metadata/CUB/test")),
        "--scoremaps",
        &s(r.join("scoremaps")),
        "--largest-contour",
        "--json",
    ]);
    assert_eq!(v["IoU50"].as_f64(), Some(42.5));
}

#[test]
fn coco_json_has_the_12_named_stats() {
    let r = common::reference_dir().join("metrics");
    let exp: Value =
        serde_json::from_str(&std::fs::read_to_string(r.join("expected.json")).unwrap()).unwrap();
    for (iou, f) in [("bbox", "coco/dt_bbox.json"), ("segm", "coco/dt_segm.json")] {
        let v = run_json(&[
            "eval",
            "coco",
            "--gt",
            &s(r.join("coco/gt.json")),
            "--dt",
            &s(r.join(f)),
            "--iou-type",
            iou,
            "--json",
        ]);
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 12);
        for (k, want) in exp["coco"][iou].as_object().unwrap() {
            assert!(
                (obj[k].as_f64().unwrap() - want.as_f64().unwrap()).abs() <= 1e-9,
                "{iou} {k}"
            );
        }
    }
}

#[test]
fn errors_name_the_file() {
    let r = common::reference_dir().join("metrics");
    let out = Command::cargo_bin("contracam")
        .unwrap()
        .args([
            "eval",
            "coco",
            "--gt",
            &s(r.join("coco/gt.json")),
            "--dt",
            "/nonexistent/dt.json",
        ])
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    let msg = String::from_utf8_lossy(&out);
    assert!(msg.contains("/nonexistent/dt.json"), "{msg}");
}

#[test]
fn linear_json_on_cached_features() {
    use contracam::eval::linear::FeatureSet;
    use tch::{Device, Kind, Tensor};
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(
            common::reference_dir().join("kernels/lineval/linprobe_refvectors.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mat = |v: &Value| {
        let rows: Vec<f64> = v
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect::<Vec<_>>()
            })
            .collect();
        let n = v.as_array().unwrap().len() as i64;
        Tensor::from_slice(&rows).view([n, -1]).to_kind(Kind::Float)
    };
    let lab = |v: &Value| {
        Tensor::from_slice(
            &v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect::<Vec<_>>(),
        )
    };
    let (xte, yte) = (mat(&v["Xte"]), lab(&v["yte"]));
    let mut extra = std::collections::BTreeMap::new();
    extra.insert(
        "mixed_same".to_string(),
        (xte.narrow(0, 0, 60), yte.narrow(0, 0, 60)),
    );
    extra.insert(
        "mixed_rand".to_string(),
        (xte.narrow(0, 60, 60), yte.narrow(0, 60, 60)),
    );
    let fs = FeatureSet {
        train: (mat(&v["Xtr"]), lab(&v["ytr"])),
        val: (xte.narrow(0, 0, 60), yte.narrow(0, 0, 60)),
        test: (xte.narrow(0, 60, 60), yte.narrow(0, 60, 60)),
        extra,
    };
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("feats.safetensors");
    fs.save(&f).unwrap();
    let back = FeatureSet::load(&f, Device::Cpu).unwrap();
    assert_eq!(back.extra.len(), 2);
    let out = run_json(&[
        "eval",
        "linear",
        "--features",
        &s(f),
        "--device",
        "cpu",
        "--json",
    ]);
    let test = out["test_top1"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&test));
    // test == extra mixed_rand (same rows), val == extra mixed_same, and BG-Gap is their difference.
    assert_eq!(out["extra_top1"]["mixed_rand"].as_f64().unwrap(), test);
    assert_eq!(
        out["extra_top1"]["mixed_same"].as_f64().unwrap(),
        out["val_top1"].as_f64().unwrap()
    );
    assert_eq!(
        out["BG-Gap"].as_f64().unwrap(),
        out["val_top1"].as_f64().unwrap() - test
    );
    assert_eq!(out["num_classes"], 4);
}
