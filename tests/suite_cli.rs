//! `contracam suite` end to end through the binary on a tiny suite: seed overrides and goldens.
mod suite_common;

use std::path::Path;

use assert_cmd::Command;
use suite_common::{golden_text, results_metrics, tiny_suite};

/// `contracam suite run` on one thread and the CPU.
fn suite_run() -> Command {
    let mut c = Command::cargo_bin("contracam").unwrap();
    c.args([
        "suite",
        "run",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--quiet",
    ])
    .env("RAYON_NUM_THREADS", "1")
    .env("OMP_NUM_THREADS", "1");
    c
}

fn run(dir: &Path, extra: &[&str]) -> std::process::Output {
    let suite = tiny_suite(dir);
    suite_run()
        .arg(&suite)
        .arg("--runs-dir")
        .arg(dir.join("runs"))
        .args(extra)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_seed_override_is_not_checked_against_another_seeds_golden() {
    let dir = tempfile::tempdir().unwrap();
    let r0 = dir.path().join("r0.json");
    let out = run(dir.path(), &["--no-golden", "--out", r0.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m0 = results_metrics(&r0);
    let golden = dir.path().join("tiny-golden.toml");
    std::fs::write(&golden, golden_text(&m0, 0, 1e-9)).unwrap();

    // Seed 3 against the seed-0 golden: reported, not checked, exit 0.
    let r3 = dir.path().join("r3.json");
    let out = run(
        dir.path(),
        &["--suite-seed", "3", "--out", r3.to_str().unwrap()],
    );
    let (so, se) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{so}\n{se}");
    assert!(se.contains("no golden for seed 3"), "{se}");
    assert!(so.contains("NOT CHECKED") && !so.contains("PASS"), "{so}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&r3).unwrap()).unwrap();
    assert_eq!(r["seed"], 3);
    assert_eq!(r["passed"], false);
    assert!(r["not_checked"].as_str().unwrap().contains("seed 3"));
    let checks = r["checks"].as_array().unwrap();
    assert_eq!(checks.len(), m0.len());
    assert!(checks
        .iter()
        .all(|c| c["verdict"] == "no_golden_for_seed" && c["golden"].is_null()));
    assert_ne!(
        results_metrics(&r3),
        m0,
        "another seed trains another model"
    );

    // `suite run --seed` is the same override.
    let out = run(dir.path(), &["--seed", "3"]);
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("no golden for seed 3"));

    // Naming the golden explicitly asks for a check that cannot be made: exit 1.
    let out = run(
        dir.path(),
        &["--suite-seed", "3", "--golden", golden.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no golden for seed 3"));

    // The golden's own seed is checked (every stage cached) and passes; both reports are written.
    let (j, md) = (dir.path().join("out/j.xml"), dir.path().join("out/r.md"));
    let out = run(
        dir.path(),
        &[
            "--junit",
            j.to_str().unwrap(),
            "--report",
            md.to_str().unwrap(),
        ],
    );
    let so = text(&out.stdout);
    assert!(out.status.success(), "{so}{}", text(&out.stderr));
    assert!(so.contains("PASSED") && !so.contains("NOT CHECKED"), "{so}");
    let j = std::fs::read_to_string(j).unwrap();
    assert!(
        j.contains(&format!("tests=\"{}\" failures=\"0\"", m0.len())),
        "{j}"
    );
    assert_eq!(j.matches("<testcase ").count(), m0.len());
    let md = std::fs::read_to_string(md).unwrap();
    assert!(md.starts_with("# Suite `tiny` v1: PASSED"), "{md}");
    assert_eq!(md.matches("| PASS |").count(), m0.len());
}

/// Not a test on its own: the lock test runs this binary again with `CONTRACAM_TEST_HOLD_LOCK=<dir>` to
/// hold that suite folder's lock from a second process until `<dir>.release` appears.
#[test]
fn lock_holder_process() {
    let Ok(root) = std::env::var("CONTRACAM_TEST_HOLD_LOCK") else {
        return;
    };
    let root = std::path::PathBuf::from(root);
    let _held = contracam::suite::cache::StageCache::open(
        &root,
        contracam::suite::cache::LockPolicy::Refuse,
    )
    .unwrap();
    println!("LOCK HELD");
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    // Bounded, so a failed parent never leaves this process behind for long.
    for _ in 0..1200 {
        if root.with_extension("release").exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Waits (bounded) for a line containing `needle` on a child's pipe; returns the text read so far.
fn wait_for_line(pipe: impl std::io::Read + Send + 'static, needle: &'static str) -> String {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining after the caller stops listening: a closed pipe would fail the child's writes.
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = String::new();
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(120)) {
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(needle) {
            return seen;
        }
    }
    panic!("no line with {needle:?} in:\n{seen}");
}

#[test]
fn a_second_run_on_the_same_runs_dir_refuses_or_waits() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let suite = tiny_suite(dir.path());
    let runs = dir.path().join("runs");
    let root = runs.join("tiny");
    std::fs::create_dir_all(&root).unwrap();
    let mut holder = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lock_holder_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CONTRACAM_TEST_HOLD_LOCK", &root)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_line(holder.stdout.take().unwrap(), "LOCK HELD");

    // --no-wait: a clear error naming the folder and the holder, and nothing built.
    let out = suite_run()
        .arg(&suite)
        .arg("--runs-dir")
        .arg(&runs)
        .args(["--no-golden", "--no-wait"])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("in use by another contracam run")
            && err.contains(&format!("pid {}", holder.id()))
            && err.contains("runs/tiny"),
        "{err}"
    );
    let entries: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, [".lock"], "nothing was built");

    // The default waits, says so, and runs once the first run is done.
    let mut waiter = std::process::Command::new(env!("CARGO_BIN_EXE_contracam"))
        .args([
            "suite",
            "run",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--quiet",
        ])
        .arg(&suite)
        .arg("--runs-dir")
        .arg(&runs)
        .arg("--no-golden")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let seen = wait_for_line(
        waiter.stderr.take().unwrap(),
        "waiting for another contracam run",
    );
    assert!(!seen.contains("[stage 1]"), "{seen}");
    std::fs::write(root.with_extension("release"), "").unwrap();
    assert!(holder.wait().unwrap().success());
    assert!(waiter.wait().unwrap().success());
    assert!(runs.join("tiny/results.json").is_file());
}
