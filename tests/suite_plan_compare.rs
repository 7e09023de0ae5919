//! `suite plan`, `suite run --refresh-stage` and `suite compare` through the binary on the tiny suite: the
//! plan before and after a run (and that it matches what the run records), a refresh of one stage and its
//! dependants that reproduces the numbers, and comparisons of two seeds' results.
mod suite_common;

use std::path::Path;
use std::process::Output;

use assert_cmd::Command;
use suite_common::{golden_text, results_metrics, tiny_suite};

fn contracam(args: &[&str]) -> Output {
    Command::cargo_bin("contracam")
        .unwrap()
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        .env("OMP_NUM_THREADS", "1")
        .env("CONTRACAM_LOG", "error")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// `suite run` of the tiny suite on one CPU thread into `runs`, with `extra` arguments.
fn run(suite: &Path, runs: &Path, extra: &[&str]) -> Output {
    let mut a = vec![
        "suite",
        "run",
        s(suite),
        "--runs-dir",
        s(runs),
        "--threads",
        "1",
        "--device",
        "cpu",
        "--quiet",
    ];
    a.extend_from_slice(extra);
    contracam(&a)
}

/// `suite plan --json` of the tiny suite.
fn plan(suite: &Path, runs: &Path, extra: &[&str]) -> serde_json::Value {
    let mut a = vec![
        "suite",
        "plan",
        s(suite),
        "--runs-dir",
        s(runs),
        "--device",
        "cpu",
        "--json",
    ];
    a.extend_from_slice(extra);
    let out = contracam(&a);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// (stage, action) of every stage of a plan's stage list.
fn actions(stages: &serde_json::Value) -> Vec<(String, String)> {
    stages
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap().to_string(),
                s["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

const STAGES: [&str; 5] = [
    "pretrain",
    "evaluate-vanilla",
    "boxes",
    "retrain-oa-crop",
    "evaluate-oa-crop",
];

fn with(stages: &[&str], actions: &[&str]) -> Vec<(String, String)> {
    stages
        .iter()
        .zip(actions)
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn plan_refresh_stage_and_compare_on_the_tiny_suite() {
    let dir = tempfile::tempdir().unwrap();
    let suite = tiny_suite(dir.path());
    let runs = dir.path().join("runs");

    // Before any run: everything to run, no duration known, and nothing created (no lock, no folder).
    let p = plan(&suite, &runs, &["--no-golden"]);
    assert_eq!(actions(&p["stages"]), with(&STAGES, &["run"; 5]));
    assert!(p["stages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["last_seconds"].is_null()));
    assert!(!runs.exists(), "plan created {}", runs.display());
    // The text form says the same, and a missing golden is reported, not fatal.
    let out = contracam(&["suite", "plan", s(&suite), "--runs-dir", s(&runs)]);
    let so = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(so.matches(" to run ").count(), 5, "{so}");
    assert!(
        so.contains("tiny-golden.toml") && so.contains("--no-golden"),
        "{so}"
    );
    assert!(so.contains("5 stage(s) to run; no duration known"), "{so}");

    // An unknown stage name fails before any work, listing the stages (plan and run alike).
    for cmd in ["plan", "run"] {
        let out = contracam(&[
            "suite",
            cmd,
            s(&suite),
            "--runs-dir",
            s(&runs),
            "--no-golden",
            "--refresh-stage",
            "box",
        ]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(
            err.contains("--refresh-stage box") && err.contains(&STAGES.join(", ")),
            "{cmd}: {err}"
        );
    }
    assert!(!runs.exists());

    // A first run; then the plan says every stage is cached, with the run's fingerprints and durations.
    let r0 = dir.path().join("r0.json");
    let out = run(&suite, &runs, &["--no-golden", "--out", s(&r0)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let first = json(&r0);
    let p = plan(&suite, &runs, &["--no-golden"]);
    assert_eq!(actions(&p["stages"]), with(&STAGES, &["cached"; 5]));
    for (planned, ran) in p["stages"]
        .as_array()
        .unwrap()
        .iter()
        .zip(first["stages"].as_array().unwrap())
    {
        assert_eq!(planned["stage"], ran["stage"]);
        assert_eq!(planned["fingerprint"], ran["fingerprint"]);
        let t = planned["last_seconds"].as_f64().unwrap();
        assert!(
            t > 0.0 && t <= ran["seconds"].as_f64().unwrap() + 1e-9,
            "{planned}"
        );
        assert_eq!(planned["same_fingerprint"], true);
    }
    let p = plan(&suite, &runs, &["--no-golden", "--refresh-stage", "boxes"]);
    assert_eq!(
        actions(&p["stages"]),
        with(
            &STAGES,
            &["cached", "cached", "refresh", "refresh", "refresh"]
        )
    );

    // Refresh the boxes: they and what depends on them recompute, the rest is reused, and the numbers are
    // those of the uncached run, bit for bit.
    let r0b = dir.path().join("r0b.json");
    let out = run(
        &suite,
        &runs,
        &["--no-golden", "--out", s(&r0b), "--refresh-stage", "boxes"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let refreshed = json(&r0b);
    let cached: Vec<(&str, bool)> = refreshed["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["stage"].as_str().unwrap(), s["cached"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        cached,
        [
            ("pretrain", true),
            ("evaluate-vanilla", true),
            ("boxes", false),
            ("retrain-oa-crop", false),
            ("evaluate-oa-crop", false)
        ]
    );
    assert_eq!(
        refreshed["metrics"].to_string(),
        first["metrics"].to_string()
    );
    // Only evaluate-vanilla: nothing depends on it.
    let out = run(
        &suite,
        &runs,
        &["--no-golden", "--refresh-stage", "evaluate-vanilla"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let only = json(&runs.join("tiny/results.json"));
    let fresh: Vec<bool> = only["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| !s["cached"].as_bool().unwrap())
        .collect();
    assert_eq!(fresh, [false, true, false, false, false]);
    assert_eq!(only["metrics"].to_string(), first["metrics"].to_string());

    // Another seed, for the comparisons; the plan of a golden with claims over seeds 0–2 then shows seed 1
    // cached and seed 2 to run.
    let r1 = dir.path().join("r1.json");
    let out = run(
        &suite,
        &runs,
        &["--no-golden", "--suite-seed", "1", "--out", s(&r1)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m0 = results_metrics(&r0);
    let golden = dir.path().join("tiny-golden.toml");
    std::fs::write(
        &golden,
        format!(
            "{}[claims.cam]\nrelation = \"vanilla.cam_miou > baseline.center_box_miou\"\nseeds = [0, 1, 2]\nexpect = \"holds\"\n",
            golden_text(&m0, 0, 10.0)
        ),
    )
    .unwrap();
    let p = plan(&suite, &runs, &[]);
    assert_eq!(actions(&p["stages"]), with(&STAGES, &["cached"; 5]));
    let seeds = p["claim_seeds"].as_array().unwrap();
    assert_eq!(seeds.len(), 2, "{p}");
    assert_eq!(seeds[0]["seed"], 1);
    assert_eq!(actions(&seeds[0]["stages"]), with(&STAGES, &["cached"; 5]));
    assert_eq!(seeds[1]["seed"], 2);
    assert_eq!(actions(&seeds[1]["stages"]), with(&STAGES, &["run"; 5]));
    // Seed 2's stages have run before at seed 0 and 1: their durations are the rough cost.
    assert!(seeds[1]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["last_seconds"].as_f64().is_some() && s["same_fingerprint"] == false));
    let p = plan(&suite, &runs, &["--no-claims"]);
    assert!(p["claim_seeds"].as_array().unwrap().is_empty());

    let compare = |base: &Path, new: &Path, extra: &[&str]| {
        let mut a = vec!["suite", "compare", s(base), s(new)];
        a.extend_from_slice(extra);
        contracam(&a)
    };
    // Same numbers: exit 0, every metric "same".
    let out = compare(&r0, &r0b, &[]);
    let so = text(&out.stdout);
    assert!(out.status.success(), "{so}{}", text(&out.stderr));
    assert_eq!(so.matches("  same\n").count(), m0.len(), "{so}");
    // Two seeds: without tolerances every metric that moved is a change, exit 1.
    let m1 = results_metrics(&r1);
    let moved = m0.iter().filter(|(k, v)| m1[*k] != **v).count();
    assert!(moved > 0);
    let out = compare(&r0, &r1, &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(c["passed"], false);
    let rows = c["metrics"].as_array().unwrap();
    assert_eq!(rows.len(), m0.len());
    assert_eq!(
        rows.iter().filter(|r| r["verdict"] == "changed").count(),
        moved
    );
    for r in rows {
        let k = r["metric"].as_str().unwrap();
        assert_eq!(r["base"].as_f64().unwrap(), m0[k]);
        assert_eq!(r["new"].as_f64().unwrap(), m1[k]);
        assert_eq!(r["delta"].as_f64().unwrap(), m1[k] - m0[k]);
    }
    // With the golden's tolerances (10 each) the two seeds agree.
    let out = compare(&r0, &r1, &["--tolerance-from", s(&golden)]);
    let so = text(&out.stdout);
    assert!(out.status.success(), "{so}{}", text(&out.stderr));
    assert_eq!(so.matches("within tolerance\n").count(), moved, "{so}");
    // A tighter tolerance than the seed-to-seed spread fails again.
    let tight = dir.path().join("tight.toml");
    std::fs::write(&tight, golden_text(&m0, 0, 1e-12)).unwrap();
    let out = compare(&r0, &r1, &["--tolerance-from", s(&tight)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("CHANGED"));
    // A metric lost on one side fails even within tolerance, naming the side.
    let mut lost = json(&r1);
    lost["metrics"]
        .as_object_mut()
        .unwrap()
        .remove("boxes.recall50");
    let r1_lost = dir.path().join("r1-lost.json");
    std::fs::write(&r1_lost, lost.to_string()).unwrap();
    let out = compare(&r0, &r1_lost, &["--tolerance-from", s(&golden)]);
    let so = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{so}");
    assert!(
        so.lines()
            .any(|l| l.starts_with("boxes.recall50") && l.ends_with("MISSING in new")),
        "{so}"
    );
    let out = compare(&r1_lost, &r0, &[]);
    assert!(text(&out.stdout).contains("MISSING in base"));
    // A file that is not a results JSON is an error naming it.
    let out = compare(&r0, &golden, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("tiny-golden.toml"));
}
