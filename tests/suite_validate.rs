//! `suite validate`: the shipped suite and golden pass; a golden naming an unknown metric is an error naming
//! the file and the key, before anything runs.
mod suite_common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use contracam::suite::{config, validate};
use suite_common::{golden_text, tiny_suite};

#[test]
fn the_smoke_suite_and_its_golden_validate() {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("suites/smoke.toml");
    let suite = config::load(&p).unwrap();
    let v = validate(&suite, None).unwrap();
    let (g, n) = v.golden.unwrap();
    assert!(g.ends_with("golden/smoke.toml"));
    assert_eq!(n, v.metrics.len());
    let out = assert_cmd::Command::cargo_bin("contracam")
        .unwrap()
        .args(["suite", "validate"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("suite smoke v1 ok"));
}

#[test]
fn an_unknown_golden_metric_names_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let suite = config::load(&tiny_suite(dir.path())).unwrap();
    let m = |names: &[&str]| -> BTreeMap<String, f64> {
        names.iter().map(|n| (n.to_string(), 0.5)).collect()
    };
    let golden = dir.path().join("tiny-golden.toml");
    std::fs::write(
        &golden,
        golden_text(&m(&["vanilla.cam_miou", "boxes.recall50"]), 0, 0.1),
    )
    .unwrap();
    assert_eq!(validate(&suite, None).unwrap().golden.unwrap().1, 2);
    std::fs::write(&golden, golden_text(&m(&["vanilla.cam_mIoU"]), 0, 0.1)).unwrap();
    let e = validate(&suite, None).unwrap_err().to_string();
    assert!(
        e.contains("tiny-golden.toml")
            && e.contains("metrics.\"vanilla.cam_mIoU\"")
            && e.contains("unknown metric")
            && e.contains("vanilla.cam_miou"),
        "{e}"
    );
    // Without OA-Crop retraining the oa_crop.* and boxes.* metrics do not exist.
    let mut no_oa = suite.clone();
    no_oa.config.retrain.oa_crop = false;
    std::fs::write(&golden, golden_text(&m(&["oa_crop.linear_acc"]), 0, 0.1)).unwrap();
    let e = validate(&no_oa, None).unwrap_err().to_string();
    assert!(e.contains("metrics.\"oa_crop.linear_acc\""), "{e}");
    assert!(validate(&suite, None).is_ok());
}
