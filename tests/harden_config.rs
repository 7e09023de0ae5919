//! Training and model configuration on hostile values: each is refused before any work with exit status 2,
//! a one-line message naming the suite file (or checkpoint), the key and its allowed range, no libtorch
//! dump or NaN result, no output written and the input left as it was.
mod harden_support;

use std::collections::BTreeMap;
use std::path::Path;

use contracam::data::formats::safetensors::{Dtype, SafetensorsWriter};
use harden_support::{bin, fails, snapshot, SUITE};

/// Writes the suite with `from` replaced by `to` (which must occur exactly once) and runs `train ssl` on
/// it; expects a clear error holding the suite path and every needle, no checkpoint, the suite unchanged.
fn refused(from: &str, to: &str, needles: &[&str]) {
    assert_eq!(SUITE.matches(from).count(), 1, "{from:?} must occur once");
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("suite.toml");
    std::fs::write(&suite, SUITE.replace(from, to)).unwrap();
    let before = snapshot(dir.path());
    let out = dir.path().join("model.safetensors");
    let err = fails(
        bin()
            .args(["train", "ssl", "--suite"])
            .arg(&suite)
            .arg("--out")
            .arg(&out),
        needles,
    );
    assert!(
        err.contains(&suite.display().to_string()),
        "names the suite:\n{err}"
    );
    assert!(!out.exists(), "no checkpoint on a refused config");
    assert_eq!(snapshot(dir.path()), before, "nothing written or changed");
}

#[test]
fn the_base_suite_trains() {
    // The fixture itself is valid: every refusal below comes from the one value changed.
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("suite.toml");
    std::fs::write(&suite, SUITE).unwrap();
    let out = dir.path().join("model.safetensors");
    bin()
        .args(["train", "ssl", "--quiet", "--suite"])
        .arg(&suite)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    assert!(out.exists());
}

#[test]
fn width_too_large() {
    refused(
        "width = 0.25",
        "width = 1e5",
        &["model.width = 100000", "must be in [1/128, 16]"],
    );
}

#[test]
fn width_negative() {
    refused(
        "width = 0.25",
        "width = -1",
        &["model.width = -1", "must be in [1/128, 16]"],
    );
}

#[test]
fn output_size_zero() {
    refused(
        "output_size = 32",
        "output_size = 0",
        &["train.augment.output_size = 0", "must be in 1..=896"],
    );
}

#[test]
fn queue_size_zero() {
    refused(
        "queue_size = 64",
        "queue_size = 0",
        &["train.queue_size = 0", "at least 1"],
    );
}

#[test]
fn momentum_negative() {
    refused(
        "momentum = 0.9",
        "momentum = -3",
        &["train.momentum = -3", "[0, 1)"],
    );
}

#[test]
fn epochs_zero() {
    refused(
        "epochs = 1",
        "epochs = 0",
        &["train.epochs = 0", "at least 1"],
    );
}

#[test]
fn temperature_zero() {
    refused(
        "temperature = 0.2",
        "temperature = 0",
        &["train.temperature = 0", "finite and > 0"],
    );
}

#[test]
fn batch_size_zero() {
    refused(
        "[train]\nepochs = 1\nbatch_size = 32",
        "[train]\nepochs = 1\nbatch_size = 0",
        &["train.batch_size = 0", "at least 2"],
    );
}

#[test]
fn batch_size_larger_than_the_data() {
    refused(
        "[train]\nepochs = 1\nbatch_size = 32",
        "[train]\nepochs = 1\nbatch_size = 1000",
        &[
            "train.batch_size = 1000",
            "larger than the 64 training images",
        ],
    );
}

#[test]
fn crop_larger_than_the_image() {
    refused(
        "crop_size = 48",
        "crop_size = 100",
        &["data", "crop_size", "at most image_size = 64"],
    );
}

#[test]
fn threads_zero() {
    let mut c = assert_cmd::Command::cargo_bin("contracam").unwrap();
    fails(
        c.args(["env", "--threads", "0"]),
        &["--threads", "'0' is not a thread count", "from 1 to"],
    );
}

/// A checkpoint holding only metadata: the config is validated before any tensor is looked at.
fn checkpoint_with_config(path: &Path, config: &str) {
    let meta = BTreeMap::from([("contracam.model".to_string(), config.to_string())]);
    SafetensorsWriter::create(path, &[], &meta)
        .unwrap()
        .finish()
        .unwrap();
}

#[test]
fn width_in_checkpoint_metadata() {
    let dir = tempfile::tempdir().unwrap();
    for (width, shown) in [("1e5", "100000"), ("-1", "-1")] {
        let ckpt = dir.path().join(format!("w{shown}.safetensors"));
        checkpoint_with_config(
            &ckpt,
            &format!(r#"{{"arch":"resnet18","width":{width},"stem":"small","method":"moco"}}"#),
        );
        let inputs = dir.path().join("images.safetensors");
        if !inputs.exists() {
            let shape = vec![2usize, 8, 8, 3];
            let mut w = SafetensorsWriter::create(
                &inputs,
                &[("images", Dtype::U8, shape)],
                &BTreeMap::new(),
            )
            .unwrap();
            w.write_bytes("images", 0, &[128u8; 2 * 8 * 8 * 3]).unwrap();
            w.finish().unwrap();
        }
        let out = dir.path().join("cam.safetensors");
        let before = snapshot(dir.path());
        let err = fails(
            bin()
                .args(["localize", "cam", "--weights"])
                .arg(&ckpt)
                .arg("--inputs")
                .arg(&inputs)
                .arg("--out")
                .arg(&out),
            &[
                "contracam.model",
                &format!("model.width = {shown}"),
                "must be in [1/128, 16]",
            ],
        );
        assert!(
            err.contains(&ckpt.display().to_string()),
            "names the file:\n{err}"
        );
        assert_eq!(snapshot(dir.path()), before);
    }
}
