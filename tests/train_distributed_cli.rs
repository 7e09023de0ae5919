//! `contracam train ssl` launched as the ranks of a data-parallel run (the variables torchrun sets, Gloo
//! over 127.0.0.1): 2 processes × batch b write the model 1 process × batch 2b writes, within the
//! tolerance tests/distributed.rs uses for the Trainer; only rank 0 writes. A 2-rank run whose rank 1 is
//! killed (SIGKILL) after the first checkpoint fails on rank 0 instead of hanging, and `--resume` of rank
//! 0's training state with 1 process and with 2 finishes at the uninterrupted 2-rank run's weights.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use contracam::data::formats::safetensors::read_tensors;
use tch::Kind;

/// The smoke suite's model (ResNet-18 width 0.25, small stem, 32 px views, MoCo v2) on 16 scenes in one
/// global batch of 16, 3 epochs: 3 steps, as the Trainer test of tests/distributed.rs.
fn suite(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/suites/smoke.toml"))
        .expect("suites/smoke.toml");
    let mut out = String::new();
    for line in text.lines() {
        let line = match line.split('=').next().map(str::trim) {
            Some("golden") => continue,
            Some("train_scenes") => "train_scenes = 16",
            Some("epochs") => "epochs = 3",
            Some("queue_size") => "queue_size = 64",
            _ => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    // The first batch_size is [train]'s (the [localize] one follows it).
    let out = out.replacen("batch_size = 128", "batch_size = 16", 1);
    assert!(out.contains("batch_size = 16") && out.contains("epochs = 3"));
    let path = dir.join("suite.toml");
    std::fs::write(&path, out).unwrap();
    path
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local address").port()
}

fn command(suite: &Path, out: &Path, args: &[&str]) -> Command {
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
fn ranks(world: usize, suite: &Path, out: &Path, args: &[&str]) -> Vec<Child> {
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

fn check(out: Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed with {}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wait_all(children: Vec<Child>, what: &str) {
    for (i, c) in children.into_iter().enumerate() {
        check(
            c.wait_with_output().expect("wait"),
            &format!("{what} rank {i}"),
        );
    }
}

/// One process (no launcher variables).
fn single(suite: &Path, out: &Path, args: &[&str]) {
    check(
        command(suite, out, args).output().expect("run"),
        "one process",
    );
}

/// The largest |Δ| over the model's tensors (same names on both sides) and the loss curves.
fn max_diff(a: &Path, b: &Path) -> (f64, String) {
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
const TOL: f64 = 1e-5;

fn assert_close(a: &Path, b: &Path, what: &str) {
    let (d, k) = max_diff(a, b);
    eprintln!("{what}: max |Δ| = {d:e} at {k}");
    assert!(d <= TOL, "{what}: max |Δ| = {d:e} at {k} > {TOL:e}");
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn train_ssl_on_two_ranks_equals_one_process_and_only_rank_0_writes() {
    let dir = tempfile::tempdir().unwrap();
    let suite = suite(dir.path());
    let one = dir.path().join("one");
    let two = dir.path().join("two");
    std::fs::create_dir_all(&one).unwrap();
    std::fs::create_dir_all(&two).unwrap();
    single(&suite, &one.join("model.safetensors"), &[]);
    wait_all(
        ranks(2, &suite, &two.join("model.safetensors"), &[]),
        "2 ranks",
    );
    assert_eq!(files(&two), ["model.safetensors"]);
    assert_close(
        &two.join("model.safetensors"),
        &one.join("model.safetensors"),
        "2 ranks vs 1 process",
    );
}

#[test]
fn a_killed_rank_fails_its_peer_and_the_run_resumes_at_any_world_size() {
    let dir = tempfile::tempdir().unwrap();
    let suite = suite(dir.path());
    let full = dir.path().join("full.safetensors");
    wait_all(
        ranks(2, &suite, &full, &["--checkpoint-every", "1"]),
        "uninterrupted",
    );
    assert!(
        dir.path().join("full.state.safetensors").is_file(),
        "rank 0 wrote the training state"
    );

    // Kill rank 1 as soon as rank 0 has written the first epoch's state: epochs 2 and 3 still need it.
    let out = dir.path().join("cut.safetensors");
    let state = dir.path().join("cut.state.safetensors");
    let mut children = ranks(2, &suite, &out, &["--checkpoint-every", "1"]);
    let start = Instant::now();
    while !state.is_file() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no state after 300 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut rank1 = children.pop().unwrap();
    rank1.kill().expect("SIGKILL rank 1");
    rank1.wait().unwrap();
    let rank0 = children.pop().unwrap();
    let t = Instant::now();
    let res = rank0.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    eprintln!(
        "rank 0 ended {:.1} s after the kill: {}",
        t.elapsed().as_secs_f64(),
        stderr.trim()
    );
    assert!(
        !res.status.success(),
        "rank 0 finished without its peer:\n{stderr}"
    );
    assert!(
        stderr.contains("rank 0"),
        "the error names the rank: {stderr}"
    );
    assert!(!out.exists(), "no model from a failed run");

    // Rank 0's state resumes with one process and with two.
    let state_arg = state.to_str().unwrap();
    let one = dir.path().join("resumed1.safetensors");
    single(&suite, &one, &["--resume", state_arg]);
    let two = dir.path().join("resumed2.safetensors");
    wait_all(
        ranks(2, &suite, &two, &["--resume", state_arg]),
        "resume on 2 ranks",
    );
    assert_close(&one, &full, "resumed on 1 process vs uninterrupted 2 ranks");
    assert_close(&two, &full, "resumed on 2 ranks vs uninterrupted 2 ranks");
}
