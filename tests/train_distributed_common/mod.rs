//! What the data-parallel CLI tests share: a 3-step version of the smoke suite, ranks started with the
//! variables torchrun sets (Gloo over 127.0.0.1), and the comparison of two written models.
#![allow(dead_code)]
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use contracam::data::formats::safetensors::read_tensors;
use tch::Kind;

/// The smoke suite's model (ResNet-18 width 0.25, small stem, 32 px views, MoCo v2) on 16 scenes in one
/// global batch of 16, 3 epochs: 3 steps, as the Trainer test of tests/distributed.rs.
pub fn suite(dir: &Path) -> PathBuf {
    suite_with(dir, "suite", "moco", "")
}

/// `suite` with the given method and `extra` TOML appended (e.g. a `[train.mix]` table), written to
/// `dir/<name>.toml`.
pub fn suite_with(dir: &Path, name: &str, method: &str, extra: &str) -> PathBuf {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/suites/smoke.toml"))
        .expect("suites/smoke.toml");
    let method_line = format!("method = \"{method}\"");
    let mut out = String::new();
    for line in text.lines() {
        let line = match line.split('=').next().map(str::trim) {
            Some("golden") => continue,
            Some("train_scenes") => "train_scenes = 16",
            Some("epochs") => "epochs = 3",
            Some("queue_size") => "queue_size = 64",
            Some("method") => &method_line,
            _ => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    // The first batch_size is [train]'s (the [localize] one follows it).
    let out = out.replacen("batch_size = 128", "batch_size = 16", 1);
    assert!(out.contains("batch_size = 16") && out.contains("epochs = 3"));
    assert!(
        out.contains(&method_line),
        "suites/smoke.toml names its method"
    );
    let out = out + extra;
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, out).unwrap();
    path
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local address").port()
}

pub fn command(suite: &Path, out: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_contracam"));
    cmd.args(["train", "ssl", "--quiet", "--threads", "1", "--suite"])
        .arg(suite)
        .arg("--out")
        .arg(out)
        .args(args)
        .env_remove("RANK")
        .env_remove("WORLD_SIZE")
        .env_remove("SLURM_PROCID")
        .env_remove("SLURM_STEP_NUM_TASKS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Starts `world` ranks of one run (the variables torchrun sets).
pub fn ranks(world: usize, suite: &Path, out: &Path, args: &[&str]) -> Vec<Child> {
    let port = free_port().to_string();
    (0..world)
        .map(|r| {
            command(suite, out, args)
                .env("RANK", r.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("LOCAL_RANK", r.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .spawn()
                .expect("spawn a rank")
        })
        .collect()
}

pub fn check(out: Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed with {}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn wait_all(children: Vec<Child>, what: &str) {
    for (i, c) in children.into_iter().enumerate() {
        check(
            c.wait_with_output().expect("wait"),
            &format!("{what} rank {i}"),
        );
    }
}

/// One process (no launcher variables).
pub fn single(suite: &Path, out: &Path, args: &[&str]) {
    check(
        command(suite, out, args).output().expect("run"),
        "one process",
    );
}

/// The largest |Δ| over the model's tensors (same names on both sides) and the loss curves.
pub fn max_diff(a: &Path, b: &Path) -> (f64, String) {
    let (a, b) = (read_tensors(a).unwrap(), read_tensors(b).unwrap());
    assert_eq!(
        a.tensors.keys().collect::<Vec<_>>(),
        b.tensors.keys().collect::<Vec<_>>()
    );
    let mut worst = (0.0, String::new());
    for (k, ta) in &a.tensors {
        let d = (ta.to_kind(Kind::Double) - b.tensors[k].to_kind(Kind::Double))
            .abs()
            .max()
            .double_value(&[]);
        if d > worst.0 {
            worst = (d, k.clone());
        }
    }
    let losses = |m: &BTreeMap<String, String>| -> Vec<f64> {
        let r: serde_json::Value =
            serde_json::from_str(&m["contracam.train_report"]).expect("a train report");
        serde_json::from_value(r["epoch_loss"].clone()).unwrap()
    };
    let (la, lb) = (losses(&a.metadata), losses(&b.metadata));
    assert_eq!(la.len(), 3, "three epochs");
    for (x, y) in la.iter().zip(&lb) {
        if (x - y).abs() > worst.0 {
            worst = ((x - y).abs(), "epoch_loss".into());
        }
    }
    worst
}

// The Trainer's data-parallel tolerance in tests/distributed.rs: float32 runs of 3 steps whose summation
// orders differ (measured there ≤ 3.6e-7).
pub const TOL: f64 = 1e-5;

pub fn assert_close(a: &Path, b: &Path, what: &str) {
    let (d, k) = max_diff(a, b);
    eprintln!("{what}: max |Δ| = {d:e} at {k}");
    assert!(d <= TOL, "{what}: max |Δ| = {d:e} at {k} > {TOL:e}");
}

pub fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
