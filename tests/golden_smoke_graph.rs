//! `golden/smoke-graph.toml` must tell a working smoke graph from one whose OA-Crop retraining ignores its
//! boxes, as `golden/smoke.toml` does for the hard-coded pipeline (tests/golden_smoke.rs): the suite as
//! committed at the golden's seed (0) and thread count (2) passes its golden (point values and regression
//! records; the claims' extra seeds are `make run`'s), and the same run with the deliberate fault
//! `RetrainIgnoresBoxes` fails it on the OA-Crop stages only.
mod suite_common;

use std::path::Path;

use contracam::suite::golden::Verdict;
use contracam::suite::graph;
use contracam::suite::graph_run::{run_graph, GraphOptions};
use contracam::suite::registry::Registry;
use contracam::suite::report::Results;
use contracam::suite::{Fault, RunOptions};
use suite_common::run_options;

/// What did not pass: point checks and regression records.
fn failed(r: &Results) -> Vec<String> {
    let points = r
        .checks
        .iter()
        .filter(|c| c.verdict != Verdict::Pass)
        .map(|c| format!("{} = {:?} ({:?})", c.metric, c.value, c.verdict));
    let records = r
        .regression
        .iter()
        .filter(|c| c.verdict != Verdict::Pass)
        .map(|c| format!("{} (regression, {:?})", c.metric, c.verdict));
    points.chain(records).collect()
}

#[test]
fn smoke_graph_passes_its_golden_and_a_retrain_that_ignores_its_boxes_fails_it() {
    tch::set_num_threads(2);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let suite = graph::validate_file(&root.join("suites/smoke-graph.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let golden = suite.golden.clone().expect("smoke-graph names its golden");
    assert!(golden.ends_with("golden/smoke-graph.toml"), "{golden:?}");
    let dir = tempfile::tempdir().unwrap();
    let gopts = GraphOptions {
        data_dir: dir.path().join("data"),
        seed: None,
        seeds: 1,
    };
    let opts = |fault| RunOptions {
        fault,
        ..run_options(&dir.path().join("runs"))
    };

    let good = run_graph(&suite, &Registry::builtin(), &opts(None), &gopts).unwrap();
    assert!(
        good.passed,
        "the working smoke graph fails its golden: {:?}",
        failed(&good)
    );
    assert!(!good.checks.is_empty() && !good.regression.is_empty());

    let broken = run_graph(
        &suite,
        &Registry::builtin(),
        &opts(Some(Fault::RetrainIgnoresBoxes)),
        &gopts,
    )
    .unwrap();
    // Only the OA-Crop retraining and what reads it ran again.
    for s in &broken.stages {
        assert_eq!(s.cached, !s.stage.starts_with("oa_crop"), "{}", s.stage);
    }
    // Retraining without boxes is the vanilla training again, to the last bit.
    for m in ["final_loss", "view_foreground"] {
        assert_eq!(
            broken.metrics[&format!("oa_crop.{m}")],
            good.metrics[&format!("vanilla.{m}")],
            "{m}"
        );
    }
    assert!(
        !broken.passed,
        "the golden accepts a retrain that ignores its boxes"
    );
    let fails = failed(&broken);
    assert!(
        fails
            .iter()
            .any(|f| f.starts_with("oa_crop.view_foreground ")),
        "the OA-Crop view foreground did not fail: {fails:?}"
    );
    assert!(fails.iter().all(|f| f.starts_with("oa_crop")), "{fails:?}");
    assert_eq!(broken.fault.as_deref(), Some("retrain-ignores-boxes"));
}
