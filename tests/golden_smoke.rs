//! The smoke golden must tell a working OA-Crop pipeline from one whose retraining ignores its boxes.
//!
//! Such a retrain is the vanilla training run again (same seed, data and settings, `boxes = None`), so each
//! of its `oa_crop.*` metrics equals that run's `vanilla.*` value exactly. A run the golden accepts has every
//! `vanilla.*` value inside its band (value ± tolerance); the broken retrain is caught whatever those values
//! are when, for some metric, the vanilla band and the OA-Crop band do not overlap.
//!
//! `real_smoke_runs_pass_and_a_retrain_that_ignores_its_boxes_fails` shows the same on real runs: the smoke
//! suite as committed passes its golden, and the same suite with retraining made to drop its boxes fails it.
use std::collections::BTreeMap;
use std::path::Path;

use contracam::suite::cache::LockPolicy;
use contracam::suite::golden::bless::{bless, BlessOptions};
use contracam::suite::golden::{compare, Golden, Verdict};
use contracam::suite::{config, run_suite, Fault, RunOptions};
use tch::Device;

fn golden() -> Golden {
    Golden::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/smoke.toml"))
        .expect("golden/smoke.toml reads")
}

/// Metric suffixes that both a `vanilla.` and an `oa_crop.` entry of the golden carry.
fn paired(g: &Golden) -> Vec<String> {
    g.metrics
        .keys()
        .filter_map(|k| k.strip_prefix("vanilla."))
        .filter(|m| g.metrics.contains_key(&format!("oa_crop.{m}")))
        .map(str::to_string)
        .collect()
}

fn band(g: &Golden, name: &str) -> (f64, f64) {
    let m = &g.metrics[name];
    (m.value - m.tolerance, m.value + m.tolerance)
}

#[test]
fn smoke_golden_fails_a_retrain_that_ignores_its_boxes() {
    let g = golden();
    let pairs = paired(&g);
    assert!(
        !pairs.is_empty(),
        "the smoke golden has no vanilla/oa_crop pairs"
    );
    let separating: Vec<&String> = pairs
        .iter()
        .filter(|m| {
            let (vl, vh) = band(&g, &format!("vanilla.{m}"));
            let (ol, oh) = band(&g, &format!("oa_crop.{m}"));
            vh < ol || oh < vl
        })
        .collect();
    assert!(
        !separating.is_empty(),
        "no metric's OA-Crop band is disjoint from its vanilla band: a retrain that ignores its boxes \
         would pass golden/smoke.toml (pairs: {pairs:?})"
    );
    // The same through the checker the runner uses: results of a boxes-ignoring run at both ends and the
    // middle of each vanilla band pass every vanilla check and fail an OA-Crop one.
    for pos in [-1.0, 0.0, 1.0] {
        let mut results: BTreeMap<String, f64> = g
            .metrics
            .iter()
            .map(|(k, m)| (k.clone(), m.value))
            .collect();
        for m in &pairs {
            let v = &g.metrics[&format!("vanilla.{m}")];
            let value = v.value + pos * v.tolerance * (1.0 - 1e-9);
            results.insert(format!("vanilla.{m}"), value);
            results.insert(format!("oa_crop.{m}"), value);
        }
        let checks = compare(&results, &g);
        for c in checks.iter().filter(|c| c.metric.starts_with("vanilla.")) {
            assert_eq!(c.verdict, Verdict::Pass, "{c:?}");
        }
        let failed: Vec<&str> = checks
            .iter()
            .filter(|c| c.metric.starts_with("oa_crop.") && c.verdict == Verdict::Fail)
            .map(|c| c.metric.as_str())
            .collect();
        assert!(
            !failed.is_empty(),
            "band position {pos}: no oa_crop check failed"
        );
        for m in &separating {
            assert!(failed.contains(&format!("oa_crop.{m}").as_str()));
        }
    }
}

#[test]
fn smoke_golden_metrics_have_finite_values_and_reasons() {
    let g = golden();
    for (name, m) in &g.metrics {
        assert!(m.value.is_finite(), "{name}: value {}", m.value);
        assert!(
            m.tolerance.is_finite() && m.tolerance >= 0.0,
            "{name}: tolerance {}",
            m.tolerance
        );
        assert!(
            !m.why.trim().is_empty(),
            "{name}: tolerance without a reason"
        );
    }
}

/// The whole smoke suite at its golden's seed and thread count (2), then the same suite with the deliberate
/// fault: retraining receives the ContraCAM boxes and trains without them. The broken run reuses the first
/// run's pretraining, vanilla evaluation and boxes (its retraining stage has its own fingerprint).
#[test]
fn real_smoke_runs_pass_and_a_retrain_that_ignores_its_boxes_fails() {
    tch::set_num_threads(2);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let suite = config::load(&root.join("suites/smoke.toml")).expect("suites/smoke.toml loads");
    let dir = tempfile::tempdir().unwrap();
    let opts = |fault| RunOptions {
        runs_dir: dir.path().join("runs"),
        device: Device::Cpu,
        refresh: false,
        refresh_stages: Vec::new(),
        progress: false,
        golden: None,
        skip_golden: false,
        lock: LockPolicy::Refuse,
        fault,
        claims: false,
    };
    let failed = |r: &contracam::suite::report::Results| -> Vec<String> {
        r.checks
            .iter()
            .filter(|c| c.verdict != Verdict::Pass)
            .map(|c| format!("{} = {:?} ({:?})", c.metric, c.value, c.verdict))
            .collect()
    };

    let good = run_suite(&suite, &opts(None)).expect("the smoke suite runs");
    assert!(
        good.passed,
        "the working pipeline fails its golden: {:?}",
        failed(&good)
    );
    assert_eq!(good.fault, None);

    let broken =
        run_suite(&suite, &opts(Some(Fault::RetrainIgnoresBoxes))).expect("the broken suite runs");
    let cached: Vec<&str> = broken
        .stages
        .iter()
        .filter(|s| s.cached)
        .map(|s| s.stage.as_str())
        .collect();
    assert_eq!(cached, ["pretrain", "evaluate-vanilla", "boxes"]);
    // Retraining without boxes is the pretraining run again, to the last bit.
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
    assert!(fails.iter().all(|f| f.starts_with("oa_crop.")), "{fails:?}");

    // Such a run is recorded as what it is and can never become a golden.
    assert_eq!(broken.fault.as_deref(), Some("retrain-ignores-boxes"));
    let bytes = serde_json::to_vec(&broken).unwrap();
    let err = bless(
        &bytes,
        Path::new("results.json"),
        None,
        Path::new("golden.toml"),
        &BlessOptions {
            default_tolerance: Some(0.1),
            by: "test".into(),
            note: None,
            drop: vec![],
        },
        "2026-12-03T00:00:00Z",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("retrain-ignores-boxes") && err.contains("cannot be blessed"),
        "{err}"
    );
}
