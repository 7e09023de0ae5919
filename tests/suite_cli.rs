//! `contracam suite` end to end through the binary on a tiny suite: seed overrides and goldens.
mod suite_common;

use std::path::Path;

use assert_cmd::Command;
use suite_common::{golden_text, results_metrics, tiny_suite};

fn contracam() -> Command {
    let mut c = Command::cargo_bin("contracam").unwrap();
    c.args(["--threads", "1", "--device", "cpu", "--quiet"])
        .env("RAYON_NUM_THREADS", "1")
        .env("OMP_NUM_THREADS", "1");
    c
}

fn run(dir: &Path, extra: &[&str]) -> std::process::Output {
    let suite = tiny_suite(dir);
    contracam()
        .arg("suite")
        .arg("run")
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

    // The global --seed is the same override.
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

    // The golden's own seed is checked (every stage cached) and passes.
    let out = run(dir.path(), &[]);
    let so = text(&out.stdout);
    assert!(out.status.success(), "{so}{}", text(&out.stderr));
    assert!(so.contains("PASSED") && !so.contains("NOT CHECKED"), "{so}");
}
