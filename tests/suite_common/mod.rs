//! Shared by the suite tests: a tiny version of the smoke suite (seconds on one thread) and goldens for it.
#![allow(dead_code)]
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use contracam::suite::cache::LockPolicy;
use contracam::suite::RunOptions;
use tch::Device;

/// Writes `tiny.toml` (the smoke suite at a tiny size, golden `tiny-golden.toml`) into `dir`.
pub fn tiny_suite(dir: &Path) -> PathBuf {
    let smoke = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("suites/smoke.toml");
    let path = dir.join("tiny.toml");
    std::fs::write(
        &path,
        format!(
            r#"include = "{}"
name = "tiny"
golden = "tiny-golden.toml"
[data]
image_size = 32
crop_size = 24
[sizes]
train_scenes = 64
test_scenes = 16
crops_train = 48
crops_val = 16
crops_test = 16
[model]
width = 0.125
[train]
epochs = 1
batch_size = 32
queue_size = 64
[train.augment]
output_size = 32
[localize]
batch_size = 16
[eval.linear]
weight_decays = [1e-4, 1e-2]
max_iter = 50
"#,
            smoke.display()
        ),
    )
    .unwrap();
    path
}

/// A golden for suite `tiny` v1 blessed at `seed` with these values and tolerance `tol` each.
pub fn golden_text(metrics: &BTreeMap<String, f64>, seed: u64, tol: f64) -> String {
    let mut text = format!(
        "suite = \"tiny\"\nsuite_version = 1\n[provenance]\nblessed_by = \"test\"\nblessed_at = \"now\"\nseed = {seed}\ncommit = \"x\"\nmachine = \"test\"\nresults_sha256 = \"0\"\nnote = \"the original note\"\n"
    );
    for (k, v) in metrics {
        text.push_str(&format!(
            "[metrics.\"{k}\"]\nvalue = {v:?}\ntolerance = {tol:?}\nwhy = \"why {k}\"\n"
        ));
    }
    text
}

/// The `metrics` object of a results JSON.
pub fn results_metrics(path: &Path) -> BTreeMap<String, f64> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    serde_json::from_value(v["metrics"].clone()).unwrap()
}

/// Options of a test run into `runs_dir`: CPU, no progress, the suite's golden, refuse a held lock, no fault,
/// no claims. Tests change what they exercise with `RunOptions { .., ..run_options(dir) }`.
pub fn run_options(runs_dir: &Path) -> RunOptions {
    RunOptions {
        runs_dir: runs_dir.into(),
        device: Device::Cpu,
        refresh: false,
        refresh_stages: Vec::new(),
        progress: false,
        golden: None,
        skip_golden: false,
        lock: LockPolicy::Refuse,
        fault: None,
        claims: false,
    }
}
