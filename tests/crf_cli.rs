//! `contracam localize crf` and `contracam localize boxes` on the setting-(c) reference inputs: the written
//! CRF must equal the official `c_crf_prob` (within 2e-3, issue 5; bit-identical in practice), the cleaned
//! mask `c_crf_clean_box`, and the boxes the official `save_box_multi` / `from_seg_mask` boxes.
mod common;

use assert_cmd::Command;
use safetensors::SafeTensors;
use serde_json::Value;

fn f32s(st: &SafeTensors, key: &str) -> Vec<f32> {
    let t = st
        .tensor(key)
        .unwrap_or_else(|e| panic!("tensor {key}: {e:?}"));
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn expected_boxes(key: &str) -> Value {
    let p = common::reference_dir().join("contracam/contracam_r18_boxes.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v[key]["xyxy_normalized_margin0.2"].clone()
}

#[test]
fn crf_then_boxes_on_setting_c() {
    let vectors = common::reference_dir().join("contracam/contracam_r18_vectors.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("crf.safetensors");
    Command::cargo_bin("contracam")
        .unwrap()
        .args(["localize", "crf", "--quiet", "--images"])
        .arg(&vectors)
        .args(["--images-key", "input_uint8", "--cams"])
        .arg(&vectors)
        .args([
            "--cams-key",
            "cam_c_er2_it10",
            "--clean",
            "box",
            "--chunk",
            "3",
            "--out",
        ])
        .arg(&out)
        .assert()
        .success();
    let ref_bytes = std::fs::read(&vectors).unwrap();
    let reference = SafeTensors::deserialize(&ref_bytes).unwrap();
    let out_bytes = std::fs::read(&out).unwrap();
    let ours = SafeTensors::deserialize(&out_bytes).unwrap();
    assert_eq!(ours.tensor("crf").unwrap().shape(), &[8, 1, 224, 224]);
    let (a, b) = (f32s(&ours, "crf"), f32s(&reference, "c_crf_prob"));
    let max = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    eprintln!("CLI crf: max |Δ| vs c_crf_prob = {max:e}");
    assert!(max <= 2e-3);
    assert_eq!(
        f32s(&ours, "mask"),
        f32s(&reference, "c_crf_clean_box"),
        "mask vs c_crf_clean_box"
    );

    let json = dir.path().join("boxes.json");
    Command::cargo_bin("contracam")
        .unwrap()
        .args(["localize", "boxes", "--quiet", "--masks"])
        .arg(&out)
        .args(["--masks-key", "mask", "--margin", "0.2", "--out"])
        .arg(&json)
        .assert()
        .success();
    let got: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(got, expected_boxes("save_box_multi"));

    // Straight from the official seg masks (float32 {0, 1}).
    Command::cargo_bin("contracam")
        .unwrap()
        .args(["localize", "boxes", "--quiet", "--masks"])
        .arg(&vectors)
        .args(["--masks-key", "c_crf_clean_seg", "--out"])
        .arg(&json)
        .assert()
        .success();
    let got: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(got, expected_boxes("from_seg_mask"));
}

#[test]
fn errors_name_the_file_and_key() {
    let vectors = common::reference_dir().join("contracam/contracam_r18_vectors.safetensors");
    let dir = tempfile::tempdir().unwrap();
    Command::cargo_bin("contracam")
        .unwrap()
        .args(["localize", "crf", "--quiet", "--images"])
        .arg(&vectors)
        .args(["--images-key", "no_such_tensor", "--cams"])
        .arg(&vectors)
        .args(["--cams-key", "cam_c_er2_it10", "--out"])
        .arg(dir.path().join("x.safetensors"))
        .assert()
        .failure()
        .stderr(predicates::str::contains("no tensor 'no_such_tensor'"))
        .stderr(predicates::str::contains(
            "contracam_r18_vectors.safetensors",
        ));
    Command::cargo_bin("contracam")
        .unwrap()
        .args(["localize", "boxes", "--quiet", "--masks"])
        .arg(&vectors)
        .args(["--masks-key", "input_normalized", "--out"])
        .arg(dir.path().join("b.json"))
        .assert()
        .failure()
        .stderr(predicates::str::contains("input_normalized"));
}
