//! Claims over seeds on the tiny suite: the seeds a golden's claims name are run (and cached like any stage),
//! each claim is tested with a paired test over them, its verdict follows the recorded outcome, and the
//! results and reports carry the claims. A claim naming an unknown metric is refused before any work.
mod suite_common;

use contracam::suite::cache::LockPolicy;
use contracam::suite::claims::Outcome;
use contracam::suite::golden::Verdict;
use contracam::suite::report::{self, Format};
use contracam::suite::{config, run_suite, RunOptions};
use suite_common::{golden_text, tiny_suite};
use tch::Device;

fn claim(id: &str, relation: &str, seeds: &[u64], expect: &str) -> String {
    format!(
        "[claims.{id}]\nrelation = \"{relation}\"\nseeds = {seeds:?}\nexpect = \"{expect}\"\npaper = \"test\"\nwhy = \"test\"\n"
    )
}

#[test]
fn claims_run_their_seeds_and_follow_the_recorded_outcome() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let suite = config::load(&tiny_suite(dir.path())).unwrap();
    let opts = |claims| RunOptions {
        runs_dir: dir.path().join("runs"),
        device: Device::Cpu,
        refresh: false,
        refresh_stages: Vec::new(),
        progress: false,
        golden: None,
        skip_golden: false,
        lock: LockPolicy::Refuse,
        fault: None,
        claims,
    };
    let golden = dir.path().join("tiny-golden.toml");
    // First the seed-0 values, for a golden whose metric checks pass.
    let first = run_suite(
        &suite,
        &RunOptions {
            skip_golden: true,
            ..opts(false)
        },
    )
    .unwrap();
    let base = golden_text(&first.metrics, 0, 1e-9);

    // ContraCAM vs the centre box, and the reverse relation: whatever this tiny run measures, the two
    // outcomes cannot both be "holds".
    let seeds = [0, 1, 2];
    let text = format!(
        "{base}{}{}",
        claim(
            "fwd",
            "vanilla.cam_miou > baseline.center_box_miou",
            &seeds,
            "holds"
        ),
        claim(
            "rev",
            "vanilla.cam_miou < baseline.center_box_miou",
            &seeds,
            "holds"
        ),
    );
    std::fs::write(&golden, &text).unwrap();
    let r = run_suite(&suite, &opts(true)).unwrap();
    assert_eq!(r.seed_metrics.keys().copied().collect::<Vec<_>>(), [1, 2]);
    assert_eq!(r.metrics, first.metrics, "seed 0 is the run's own seed");
    assert_eq!(r.claims.len(), 2);
    for c in &r.claims {
        assert_eq!(c.values.len(), 3);
        // Seed 0's pair is the run's own values (the better side first).
        let (cam, centre) = (
            first.metrics["vanilla.cam_miou"],
            first.metrics["baseline.center_box_miou"],
        );
        let want = if c.claim == "fwd" {
            (cam, centre)
        } else {
            (centre, cam)
        };
        assert_eq!(c.values[0], want);
        let p = c.p_value.expect("every seed has both metrics");
        assert!((0.0..=1.0).contains(&p), "{c:?}");
        let holds = c.outcome == Some(Outcome::Holds);
        assert_eq!(holds, p < c.alpha);
        assert_eq!(c.verdict == Verdict::Pass, holds, "{c:?}");
    }
    assert!(
        r.claims.iter().any(|c| c.verdict == Verdict::Fail),
        "a relation and its reverse both held: {:?}",
        r.claims
    );
    assert!(!r.passed, "a failed claim fails the run");

    // The same golden with each claim's measured outcome recorded: everything passes, and the extra seeds
    // come from the cache.
    let mut text = base.clone();
    for c in &r.claims {
        let (rel, expect) = (c.relation.as_str(), c.outcome.unwrap());
        let expect = if expect == Outcome::Holds {
            "holds"
        } else {
            "not-shown"
        };
        text.push_str(&claim(&c.claim, rel, &seeds, expect));
    }
    std::fs::write(&golden, &text).unwrap();
    let again = run_suite(&suite, &opts(true)).unwrap();
    assert!(again.passed, "{:?}", again.claims);
    assert!(again.stages.iter().all(|s| s.cached));
    assert_eq!(again.seed_metrics, r.seed_metrics);

    // Reports carry the claims.
    let json = serde_json::to_value(&again).unwrap();
    let md = report::render(&json, &dir.path().join("r.json"), Format::Markdown).unwrap();
    assert!(md.contains("## Claims") && md.contains("`fwd`"), "{md}");
    let junit = report::render(&json, &dir.path().join("r.json"), Format::Junit).unwrap();
    assert!(
        junit.contains("classname=\"suite.tiny.claims\" name=\"rev\""),
        "{junit}"
    );
    let table = report::claims_table(&again.claims);
    assert!(table.contains("fwd") && table.contains("PASS"), "{table}");

    // Without claims the run checks metrics only.
    let plain = run_suite(&suite, &opts(false)).unwrap();
    assert!(plain.claims.is_empty() && plain.seed_metrics.is_empty() && plain.passed);

    // A claim on a metric the suite does not emit is refused before any work, naming the key.
    std::fs::write(
        &golden,
        format!(
            "{base}{}",
            claim(
                "bad",
                "vanilla.nope > baseline.center_box_miou",
                &seeds,
                "holds"
            )
        ),
    )
    .unwrap();
    let err = run_suite(&suite, &opts(true)).unwrap_err().to_string();
    assert!(
        err.contains("tiny-golden.toml")
            && err.contains("claims.\"bad\".relation")
            && err.contains("vanilla.nope"),
        "{err}"
    );
}
