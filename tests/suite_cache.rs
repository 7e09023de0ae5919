//! The stage cache under the smoke pipeline: bad configs fail before any work, a failing stage publishes
//! nothing (and fails the same way on a rerun instead of reading a poisoned output), a damaged published
//! stage is rebuilt, and suite names cannot leave the runs dir.
mod suite_common;

use std::path::Path;

use contracam::suite::cache::LockPolicy;
use contracam::suite::{config, run_suite, RunOptions};
use suite_common::tiny_suite;
use tch::Device;

fn opts(runs: &Path) -> RunOptions {
    RunOptions {
        runs_dir: runs.into(),
        device: Device::Cpu,
        refresh: false,
        refresh_stages: Vec::new(),
        progress: false,
        golden: None,
        skip_golden: true,
        lock: LockPolicy::Refuse,
        fault: None,
        claims: false,
    }
}

/// Stage directories (published and temporary) under `<runs>/tiny`.
fn stage_dirs(runs: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(runs.join("tiny"))
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n != ".lock")
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn with_override(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    let base = tiny_suite(dir);
    let p = dir.join(name);
    std::fs::write(&p, format!("include = \"{}\"\n{body}", base.display())).unwrap();
    p
}

#[test]
fn empty_sets_are_refused_up_front_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for key in [
        "train_scenes",
        "test_scenes",
        "crops_train",
        "crops_val",
        "crops_test",
    ] {
        let p = with_override(dir.path(), "zero.toml", &format!("[sizes]\n{key} = 0\n"));
        let e = config::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("zero.toml")
                && e.contains(&format!("sizes.{key}"))
                && e.contains("at least 1"),
            "{e}"
        );
    }
}

#[test]
fn unsafe_suite_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "",
        ".",
        "..",
        "../../escape",
        "a/b",
        "a\\\\b",
        "/abs",
        ".hidden",
        "sp ace",
    ] {
        let p = with_override(dir.path(), "named.toml", &format!("name = \"{name}\"\n"));
        let e = config::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("named.toml") && e.contains("'name'"),
            "{name:?}: {e}"
        );
    }
    let p = with_override(dir.path(), "named.toml", "name = \"ok_name-2\"\n");
    assert_eq!(config::load(&p).unwrap().config.name, "ok_name-2");
}

#[test]
fn a_failing_stage_publishes_nothing_and_a_damaged_one_is_rebuilt() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let good = config::load(&tiny_suite(dir.path())).unwrap();

    // The issue-13 case, past the up-front check (library callers can build any config): an empty
    // validation set makes the evaluation's output unreadable. Nothing of that stage is published.
    let mut bad = good.clone();
    bad.config.sizes.crops_val = 0;
    for _ in 0..2 {
        let e = run_suite(&bad, &opts(&runs)).unwrap_err().to_string();
        assert!(
            e.contains("evaluate-vanilla") && e.contains("nothing was published"),
            "{e}"
        );
        let dirs = stage_dirs(&runs);
        assert_eq!(dirs.len(), 1, "only pretraining is published: {dirs:?}");
        assert!(dirs[0].starts_with("pretrain-"), "{dirs:?}");
    }

    let first = run_suite(&good, &opts(&runs)).unwrap();
    assert_eq!(
        first.stages.iter().map(|s| s.cached).collect::<Vec<_>>(),
        [true, false, false, false, false]
    );
    // A published output damaged by hand, a lost marker, and a killed run's temporary directory.
    let find = |prefix: &str| {
        runs.join("tiny").join(
            stage_dirs(&runs)
                .into_iter()
                .find(|d| d.starts_with(prefix))
                .unwrap(),
        )
    };
    std::fs::write(find("evaluate-vanilla-").join("metrics.json"), "{").unwrap();
    std::fs::remove_file(find("boxes-").join("DONE")).unwrap();
    std::fs::create_dir_all(runs.join("tiny/.tmp-retrain-oa-crop-0123-x")).unwrap();
    let second = run_suite(&good, &opts(&runs)).unwrap();
    let rebuilt: Vec<(&str, bool)> = second
        .stages
        .iter()
        .map(|s| (s.stage.as_str(), s.cached))
        .collect();
    assert_eq!(
        rebuilt,
        [
            ("pretrain", true),
            ("evaluate-vanilla", false),
            ("boxes", false),
            ("retrain-oa-crop", true),
            ("evaluate-oa-crop", true)
        ]
    );
    assert_eq!(first.metrics, second.metrics);
    assert!(
        stage_dirs(&runs).iter().all(|d| !d.starts_with(".tmp-")),
        "{:?}",
        stage_dirs(&runs)
    );
}
