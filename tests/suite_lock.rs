//! Stage build locks across processes: a lock held by another process excludes this one until released,
//! a killed holder's lock is taken over at once with a warning naming it, and two concurrent `suite run`
//! of one suite (a whole run and an `--only` job, as a Slurm job beside a local run) build the stage they
//! share once: the second waits for the first's build lock and reuses what it published.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use contracam::suite::lock::{BuildLock, LockOptions};

const HOLD_ENV: &str = "CONTRACAM_TEST_BUILD_LOCK";

/// Not a test on its own: the tests run this binary again with `CONTRACAM_TEST_BUILD_LOCK=<path>` to hold
/// that lock from a second process until `<path>.release` appears.
#[test]
fn lock_holder_process() {
    let Ok(path) = std::env::var(HOLD_ENV) else {
        return;
    };
    let path = PathBuf::from(path);
    let _held = BuildLock::acquire(&path, &LockOptions::from_env().unwrap()).unwrap();
    println!("LOCK HELD");
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    let release = path.with_extension("release");
    while !release.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn holder(path: &Path) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lock_holder_process",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(HOLD_ENV, path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in out.by_ref() {
        if line.unwrap().contains("LOCK HELD") {
            // Keep reading: the harness prints its summary later, and a closed pipe would fail the child.
            std::thread::spawn(move || out.for_each(drop));
            return child;
        }
    }
    let status = child.wait().unwrap();
    panic!("the holder process ended ({status}) without taking the lock");
}

#[test]
fn another_process_excludes_until_it_releases_and_a_killed_one_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".lock-pre-0123456789abcdef");
    let opts = LockOptions::from_env().unwrap();

    let mut child = holder(&path);
    let (p, o) = (path.clone(), opts.clone());
    let waiter = std::thread::spawn(move || BuildLock::acquire(&p, &o).unwrap());
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        !waiter.is_finished(),
        "took the lock while another process held it"
    );
    std::fs::write(path.with_extension("release"), "").unwrap();
    let l = waiter.join().unwrap();
    assert!(l.took_over.is_none());
    assert!(child.wait().unwrap().success());
    drop(l);
    std::fs::remove_file(path.with_extension("release")).unwrap();

    // SIGKILL: the holder cannot remove its lock; its pid is gone, so the lock is taken over at once.
    let mut child = holder(&path);
    let pid = child.id();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(path.exists());
    let start = std::time::Instant::now();
    let l = BuildLock::acquire(&path, &opts).unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    let why = l.took_over.clone().unwrap();
    assert!(why.contains(&format!("pid {pid}")), "{why}");
}

const SUITE: &str = r#"name = "lock-toy"
version = 1
[datasets.train]
synth = { form = "scenes", split = "train", count = 12, synth = { image_size = 24, crop_size = 16, num_classes = 2, num_backgrounds = 2 } }
[datasets.test]
synth = { form = "scenes", split = "test", count = 6, synth = { image_size = 24, crop_size = 16, num_classes = 2, num_backgrounds = 2 } }
[stages.pre]
kind = "pretrain"
inputs = { data = "datasets.train" }
params = { width = 0.125, stem = "small", proj_hidden = 16, proj_dim = 8, epochs = 4, batch = 4, queue_size = 16, ema = 0.9, base_lr = 0.5, image_size = 16 }
[stages.centre]
kind = "center-box"
inputs = { data = "datasets.test" }
"#;

fn suite_run(suite: &Path, runs: &Path, data: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_contracam"));
    c.args(["suite", "run"])
        .arg(suite)
        .arg("--runs-dir")
        .arg(runs)
        .arg("--data-dir")
        .arg(data)
        .args(["--device", "cpu", "--threads", "1", "--no-golden"])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[test]
fn two_concurrent_runs_sharing_a_stage_build_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("lock-toy.toml");
    std::fs::write(&suite, SUITE).unwrap();
    let (runs, data) = (dir.path().join("runs"), dir.path().join("data"));
    let job = suite_run(&suite, &runs, &data, &["--only", "pre"])
        .spawn()
        .unwrap();
    let whole = suite_run(&suite, &runs, &data, &[]).spawn().unwrap();
    let (job, whole) = (
        job.wait_with_output().unwrap(),
        whole.wait_with_output().unwrap(),
    );
    let err = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let (ej, ew) = (err(&job), err(&whole));
    assert!(job.status.success(), "--only pre:\n{ej}");
    assert!(whole.status.success(), "whole run:\n{ew}");
    let built = |e: &str| e.lines().filter(|l| l.contains("] pre: done in")).count();
    let reused = |e: &str| e.lines().filter(|l| l.contains("] pre: cached in")).count();
    assert_eq!(
        built(&ej) + built(&ew),
        1,
        "pre built more than once:\n--only pre:\n{ej}\nwhole run:\n{ew}"
    );
    assert_eq!(reused(&ej) + reused(&ew), 1, "{ej}\n{ew}");
    let waited = ej.contains("waiting for") || ew.contains("waiting for");
    eprintln!("the second builder waited for the first's build lock: {waited}");
    // One published directory of pre; no lock or temporary left.
    let names: Vec<String> = std::fs::read_dir(runs.join("lock-toy"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.iter().filter(|n| n.starts_with("pre-")).count(),
        1,
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with(".lock-") || n.starts_with(".tmp-")),
        "{names:?}"
    );
}
