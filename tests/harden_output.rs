//! No Rust internals in user-facing output: `env --json` prints plain strings, generated HTML has no
//! `Some(..)`, a text file given as a checkpoint says what it is not, and every cause is printed once.
mod harden_support;

use std::collections::BTreeMap;

use contracam::data::formats::safetensors::{Dtype, SafetensorsWriter};
use harden_support::{bin, fails};

#[test]
fn env_json_device_is_a_plain_string() {
    let out = bin()
        .args(["env", "--device", "cpu", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["device"], serde_json::json!("cpu"), "{v}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("\"Ok\"") && !text.contains("\"Err\""),
        "{text}"
    );
}

#[test]
fn env_json_unusable_device_is_null_with_the_reason() {
    let out = bin()
        .args(["env", "--device", "cuda:999", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["device"].is_null(), "{v}");
    assert!(
        v["device_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{v}"
    );
}

#[test]
fn synth_html_and_json_have_no_rust_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("synth");
    bin()
        .args([
            "data",
            "synth",
            "--quiet",
            "--train-scenes",
            "4",
            "--test-scenes",
            "4",
        ])
        .args(["--crops", "4", "--bg-challenge", "4", "--out"])
        .arg(&out)
        .assert()
        .success();
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    let json = std::fs::read_to_string(out.join("index.json")).unwrap();
    for (name, text) in [("index.html", &html), ("index.json", &json)] {
        for bad in ["Some(", "None", "Ok(", "Err("] {
            assert!(!text.contains(bad), "{name} holds {bad}");
        }
    }
    // Scenes have a background index; the only_fg challenge variant has none.
    assert!(
        html.contains(" · bg 0 ") || html.contains(" · bg 1 "),
        "numeric background"
    );
    assert!(
        html.contains(" · bg none "),
        "a missing background is written 'none'"
    );
}

#[test]
fn a_text_file_as_checkpoint_is_not_a_safetensors_file() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("weights.txt");
    std::fs::write(&weights, "these are my notes, not weights\n").unwrap();
    let inputs = dir.path().join("images.safetensors");
    let mut w = SafetensorsWriter::create(
        &inputs,
        &[("images", Dtype::U8, vec![2, 8, 8, 3])],
        &BTreeMap::new(),
    )
    .unwrap();
    w.write_bytes("images", 0, &[100u8; 2 * 8 * 8 * 3]).unwrap();
    w.finish().unwrap();
    let err = fails(
        bin()
            .args(["localize", "cam", "--weights"])
            .arg(&weights)
            .arg("--inputs")
            .arg(&inputs)
            .arg("--out")
            .arg(dir.path().join("cam.safetensors")),
        &["weights.txt", "not a safetensors file"],
    );
    assert!(!err.contains("HeaderTooLarge"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&weights).unwrap(),
        "these are my notes, not weights\n"
    );
}

#[test]
fn a_missing_file_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let cases: Vec<Vec<std::ffi::OsString>> = vec![
        vec![
            "train".into(),
            "ssl".into(),
            "--suite".into(),
            missing.clone().into(),
            "--out".into(),
            dir.path().join("m.st").into(),
        ],
        vec!["suite".into(), "run".into(), missing.clone().into()],
        vec![
            "eval".into(),
            "maxboxacc".into(),
            "--metadata".into(),
            missing.clone().into(),
            "--scoremaps".into(),
            missing.clone().into(),
        ],
        vec![
            "localize".into(),
            "boxes".into(),
            "--masks".into(),
            missing.clone().into(),
            "--out".into(),
            dir.path().join("b.json").into(),
        ],
    ];
    for args in cases {
        let err = fails(
            bin().args(&args),
            &["missing.toml", "No such file or directory"],
        );
        assert_eq!(
            err.matches("No such file or directory").count(),
            1,
            "{args:?}: cause printed more than once:\n{err}"
        );
    }
}

#[test]
fn libtorch_errors_carry_their_cause_once() {
    // The message formats the libtorch error; it is not also chained as a source.
    let train = contracam::train::TrainError::from(tch::TchError::Torch("boom".into()));
    // EvalError lives in the torch-free contracam-base, so libtorch errors enter it through `error::torch`.
    let eval = contracam::eval::error::torch(tch::TchError::Torch("boom".into()));
    for e in [anyhow::Error::from(train), anyhow::Error::from(eval)] {
        let shown = format!("{e:#}");
        assert_eq!(shown.matches("boom").count(), 1, "{shown}");
    }
}
