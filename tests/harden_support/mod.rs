//! Shared by the `harden_*` tests: the binary with quiet logging, and the "clear error" assertion. (`--threads`
//! is an option of the computing commands only, so `bin()` cannot put it first; the default thread count
//! already leaves busy CPUs alone.)
#![allow(dead_code)]
use std::path::Path;

use assert_cmd::Command;

pub fn bin() -> Command {
    let mut c = Command::cargo_bin("contracam").unwrap();
    c.env("CONTRACAM_LOG", "error")
        .env("CONTRACAM_PROGRESS", "off")
        .env("RAYON_NUM_THREADS", "1")
        .env("OMP_NUM_THREADS", "1");
    c
}

/// Runs the command, expects exit status 2, no panic or libtorch dump, one line, and every needle in
/// stderr; returns stderr.
pub fn fails(cmd: &mut Command, needles: &[&str]) -> String {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "status; stderr:\n{err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE") && !err.contains("frame #"),
        "panic or libtorch dump:\n{err}"
    );
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}:\n{err}");
    }
    if !err.contains("try '--help'") {
        assert_eq!(err.trim_end().lines().count(), 1, "one line:\n{err}");
    }
    err
}

/// Every file under `dir` with its bytes, to show that a failing command changed nothing.
pub fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = walk(dir)
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

/// Every file under `dir`, recursively.
pub fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A small valid suite (64 scenes, one epoch): `train ssl` runs it in about a second.
pub const SUITE: &str = r#"
name = "harden"
version = 1
seed = 0

[data]
image_size = 64
num_classes = 6
num_backgrounds = 6
min_objects = 1
max_objects = 2
background_bias = 0.8
context_bias = 0.5
object_scale = [0.3, 0.55]
crop_size = 48

[sizes]
train_scenes = 64
test_scenes = 16
crops_train = 16
crops_val = 16
crops_test = 16

[model]
arch = "resnet18"
width = 0.25
stem = "small"
method = "moco"

[train]
epochs = 1
batch_size = 32
base_lr = 0.12
final_lr = 0.001
momentum = 0.9
weight_decay = 1e-4
ema = 0.99
queue_size = 64
temperature = 0.2

[train.augment]
output_size = 32

[localize]
batch_size = 32
threshold = 0.5
masks = { expand_res = 2, iters = 1, negative_removal = true }
boxes = { expand_res = 2, iters = 1, negative_removal = true }
"#;
