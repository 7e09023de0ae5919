//! The smoke pipeline end to end at a tiny size: every stage runs, metrics are sane, a second run reuses
//! every stage and gives identical numbers, and goldens decide the verdict.
mod suite_common;

use contracam::suite::cache::LockPolicy;
use contracam::suite::golden::Verdict;
use contracam::suite::{config, run_suite, RunOptions};
use suite_common::tiny_suite;
use tch::Device;

#[test]
fn tiny_smoke_pipeline_runs_caches_and_checks_goldens() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let suite = config::load(&tiny_suite(dir.path())).unwrap();
    let opts = |refresh| RunOptions {
        runs_dir: dir.path().join("runs"),
        device: Device::Cpu,
        refresh,
        refresh_stages: Vec::new(),
        progress: false,
        golden: None,
        skip_golden: true,
        lock: LockPolicy::Refuse,
        fault: None,
        claims: false,
    };
    let first = run_suite(&suite, &opts(false)).unwrap();
    let names: Vec<&str> = first.metrics.keys().map(|s| s.as_str()).collect();
    for m in [
        "baseline.center_box_miou",
        "boxes.per_image",
        "boxes.recall50",
        "oa_crop.cam_miou",
        "oa_crop.final_loss",
        "oa_crop.linear_acc",
        "vanilla.cam_miou",
        "vanilla.final_loss",
        "vanilla.linear_acc",
    ] {
        assert!(names.contains(&m), "missing metric {m}: {names:?}");
    }
    for (k, v) in &first.metrics {
        assert!(v.is_finite(), "{k} = {v}");
        if k.ends_with("miou") || k.ends_with("acc") || k.ends_with("recall50") {
            assert!((0.0..=1.0).contains(v), "{k} = {v}");
        }
    }
    assert_eq!(first.stages.len(), 5);
    assert!(first.stages.iter().all(|s| !s.cached));

    // Resume: every stage is reused and the numbers are the same.
    let second = run_suite(&suite, &opts(false)).unwrap();
    assert!(second.stages.iter().all(|s| s.cached));
    assert_eq!(first.metrics, second.metrics);

    // Determinism: recomputing from scratch with the same seed gives the same numbers.
    let third = run_suite(&suite, &opts(true)).unwrap();
    assert!(third.stages.iter().all(|s| !s.cached));
    assert_eq!(first.metrics, third.metrics);

    // Without a golden file the run refuses before doing any work.
    let with_golden = RunOptions {
        skip_golden: false,
        ..opts(false)
    };
    let err = run_suite(&suite, &with_golden).unwrap_err().to_string();
    assert!(
        err.contains("tiny-golden.toml") && err.contains("bless"),
        "{err}"
    );

    // A golden with the run's values passes; one metric moved outside its tolerance fails.
    let mut text = String::from(
        "suite = \"tiny\"\nsuite_version = 1\n[provenance]\nblessed_by = \"test\"\nblessed_at = \"now\"\nseed = 0\ncommit = \"x\"\nmachine = \"test\"\nresults_sha256 = \"0\"\n",
    );
    for (k, v) in &first.metrics {
        text.push_str(&format!(
            "[metrics.\"{k}\"]\nvalue = {v:?}\ntolerance = 1e-9\n"
        ));
    }
    std::fs::write(dir.path().join("tiny-golden.toml"), &text).unwrap();
    let ok = run_suite(&suite, &with_golden).unwrap();
    assert!(ok.passed, "{:?}", ok.checks);
    let moved = text.replace(
        &format!("value = {:?}", first.metrics["vanilla.cam_miou"]),
        "value = 2.0",
    );
    std::fs::write(dir.path().join("tiny-golden.toml"), moved).unwrap();
    let bad = run_suite(&suite, &with_golden).unwrap();
    assert!(!bad.passed);
    let failing: Vec<_> = bad
        .checks
        .iter()
        .filter(|c| c.verdict != Verdict::Pass)
        .map(|c| c.metric.as_str())
        .collect();
    assert_eq!(failing, vec!["vanilla.cam_miou"]);
}

#[test]
fn suite_errors_name_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_suite(dir.path());
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "include = \"{}\"\n[train.augment]\noutput_sise = 3\n",
            base.display()
        ),
    )
    .unwrap();
    let err = config::load(&bad).unwrap_err().to_string();
    assert!(
        err.contains("bad.toml") && err.contains("train.augment") && err.contains("output_sise"),
        "{err}"
    );

    std::fs::write(
        &bad,
        format!(
            "include = \"{}\"\n[data]\nbackground_bias = 1.5\n",
            base.display()
        ),
    )
    .unwrap();
    let err = config::load(&bad).unwrap_err().to_string();
    assert!(err.contains("background_bias"), "{err}");

    let a = dir.path().join("a.toml");
    let b = dir.path().join("b.toml");
    std::fs::write(&a, "include = \"b.toml\"\n").unwrap();
    std::fs::write(&b, "include = \"a.toml\"\n").unwrap();
    let err = config::load(&a).unwrap_err().to_string();
    assert!(err.contains("cycle"), "{err}");

    let missing = config::load(&dir.path().join("nope.toml"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("nope.toml"), "{missing}");
}
