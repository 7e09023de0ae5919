//! The smoke golden must tell a working OA-Crop pipeline from one whose retraining ignores its boxes.
//!
//! Such a retrain is the vanilla training run again (same seed, data and settings, `boxes = None`), so each
//! of its `oa_crop.*` metrics equals that run's `vanilla.*` value exactly. A run the golden accepts has every
//! `vanilla.*` value inside its band (value ± tolerance); the broken retrain is caught whatever those values
//! are when, for some metric, the vanilla band and the OA-Crop band do not overlap.
use std::collections::BTreeMap;
use std::path::Path;

use contracam::suite::golden::{compare, Golden, Verdict};

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
