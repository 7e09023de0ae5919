//! Regression goldens: the statistics (Welch's t and its degrees of freedom, the prediction-interval t,
//! p-values two- and one-sided) against closed forms of Student's t, verdicts for a shifted and an unshifted
//! run, and a graph suite run over seeds, blessed into regression records and judged against them.
//!
//! scipy is not in the .venv, so the references are Student's t CDFs in closed form, independent of the
//! incomplete beta function statrs uses: F₁(t) = 1/2 + atan(t)/π, F₂(t) = 1/2 + t/(2·sqrt(2 + t²)),
//! F₄(t) = 1/2 + (3/4)·s·(1 − s²/3) with s = t/sqrt(4 + t²).
use std::path::Path;

use contracam::suite::golden::bless::{bless_regression_file, RegressionBlessOptions};
use contracam::suite::golden::paper::PaperGoldens;
use contracam::suite::golden::{Golden, Verdict};
use contracam::suite::graph::{GraphContext, GraphSuite};
use contracam::suite::graph_run::{run_graph, GraphOptions};
use contracam::suite::registry::Registry;
use contracam::suite::regression::{
    check, p_value, prediction_t, summary, t_cdf, welch, RegressionRecord, RegressionTest,
};
use contracam::suite::report::{render, Format, Results};
use contracam::suite::stage::Direction;
use contracam::suite::RunOptions;

mod suite_common;

fn f1(t: f64) -> f64 {
    0.5 + t.atan() / std::f64::consts::PI
}

fn f2(t: f64) -> f64 {
    0.5 + t / (2.0 * (2.0 + t * t).sqrt())
}

/// Student's t CDF with 4 degrees of freedom: F₄(t) = 1/2 + (3/4)·s·(1 − s²/3), s = t / sqrt(4 + t²).
fn f4(t: f64) -> f64 {
    let s = t / (4.0 + t * t).sqrt();
    0.5 + 0.75 * s * (1.0 - s * s / 3.0)
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn the_t_cdf_matches_closed_forms_at_one_two_and_four_degrees_of_freedom() {
    for t in [-3.0, -0.7, 0.0, 0.4, 1.549_193_338_482_966_6, 2.598, 6.9] {
        assert!(close(t_cdf(t, 1.0), f1(t), 1e-9), "df 1, t {t}");
        assert!(close(t_cdf(t, 2.0), f2(t), 1e-9), "df 2, t {t}");
        assert!(
            close(t_cdf(t, 4.0), f4(t), 1e-9),
            "df 4, t {t}: {} vs {}",
            t_cdf(t, 4.0),
            f4(t)
        );
    }
    assert_eq!(t_cdf(f64::INFINITY, 3.0), 1.0);
    assert_eq!(t_cdf(f64::NEG_INFINITY, 3.0), 0.0);
}

#[test]
fn welch_and_the_prediction_interval_by_hand() {
    // Equal spreads and sizes: df = 2(n − 1) = 4 exactly; t = shift / sqrt(1/3 + 1/3).
    let rec = [1.0, 2.0, 3.0];
    let (t, df) = welch(&rec, &[1.5, 2.5, 3.5]).unwrap();
    assert!(
        close(t, 0.5 / (2.0f64 / 3.0).sqrt(), 1e-12) && close(df, 4.0, 1e-12),
        "{t} {df}"
    );
    // Unequal spreads: var 1 and 4, n 3 each: t = 2 / sqrt(5/3), df = (5/3)² / ((1/3)²/2 + (4/3)²/2) = 50/17.
    let (t, df) = welch(&rec, &[2.0, 4.0, 6.0]).unwrap();
    assert!(close(t, 2.0 / (5.0f64 / 3.0).sqrt(), 1e-12), "{t}");
    assert!(close(df, 50.0 / 17.0, 1e-12), "{df}");
    // One new value: t = (x − 2) / (1·sqrt(1 + 1/3)), df 2.
    let (t, df) = prediction_t(&rec, 5.0).unwrap();
    assert!(
        close(t, 3.0 / (4.0f64 / 3.0).sqrt(), 1e-12) && df == 2.0,
        "{t} {df}"
    );
    // Two-sided p at df 2: 2·(1 − F₂(|t|)) = 1 − |t|/sqrt(2 + t²) = 0.121 for x = 5.
    let p = p_value(RegressionTest::Reproduces, Direction::Neutral, t, df);
    assert!(close(p, 1.0 - t / (2.0 + t * t).sqrt(), 1e-9), "{p}");
    assert!(close(p, 0.121_6, 1e-4), "{p}");
    // One-sided: higher is better, a lower run is the worse side.
    let p = p_value(RegressionTest::NotWorse, Direction::HigherIsBetter, -t, df);
    assert!(close(p, f2(-t), 1e-9), "{p}");
    let p = p_value(RegressionTest::NotWorse, Direction::LowerIsBetter, -t, df);
    assert!(close(p, 1.0 - f2(-t), 1e-9), "{p}");
    // No spread anywhere: no t.
    assert!(welch(&[1.0, 1.0, 1.0], &[1.0, 1.0]).is_none());
    assert!(prediction_t(&[1.0, 1.0, 1.0], 2.0).is_none());
    let s = summary(&[0.5, 0.1, 0.2, 0.3, 0.9]);
    assert!(close(
        s.olympic_mean.unwrap(),
        (0.5 + 0.2 + 0.3) / 3.0,
        1e-15
    ));
}

fn record(test: RegressionTest, values: &[f64]) -> RegressionRecord {
    RegressionRecord::from_values(
        test,
        0.05,
        (0..values.len() as u64).collect(),
        values.to_vec(),
    )
}

fn run_of(values: &[f64]) -> Vec<(u64, Option<f64>)> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| (10 + i as u64, Some(*v)))
        .collect()
}

#[test]
fn a_shifted_run_fails_and_an_unshifted_one_passes() {
    let rec = record(RegressionTest::Reproduces, &[0.61, 0.64, 0.60, 0.63, 0.62]);
    let same = check(
        "m",
        &rec,
        Direction::HigherIsBetter,
        &run_of(&[0.62, 0.615, 0.63]),
    );
    assert_eq!(same.verdict, Verdict::Pass, "{same:?}");
    assert_eq!(same.method.as_deref(), Some("welch"));
    // A shift of ten recorded standard deviations.
    let shift = 10.0 * rec.std;
    let up: Vec<f64> = [0.62, 0.615, 0.63].iter().map(|v| v + shift).collect();
    let c = check("m", &rec, Direction::HigherIsBetter, &run_of(&up));
    assert_eq!(c.verdict, Verdict::Fail, "{c:?}");
    assert!(c.p_value.unwrap() < 0.05 && c.t.unwrap() > 0.0);
    // Not-worse: better passes, worse fails, in the metric's direction.
    let nw = RegressionRecord {
        test: RegressionTest::NotWorse,
        ..rec.clone()
    };
    assert_eq!(
        check("m", &nw, Direction::HigherIsBetter, &run_of(&up)).verdict,
        Verdict::Pass
    );
    let down: Vec<f64> = [0.62, 0.615, 0.63].iter().map(|v| v - shift).collect();
    assert_eq!(
        check("m", &nw, Direction::HigherIsBetter, &run_of(&down)).verdict,
        Verdict::Fail
    );
    assert_eq!(
        check("m", &nw, Direction::LowerIsBetter, &run_of(&down)).verdict,
        Verdict::Pass
    );
    assert_eq!(
        check("m", &nw, Direction::LowerIsBetter, &run_of(&up)).verdict,
        Verdict::Fail
    );
    // One new value: the prediction interval.
    let one = check("m", &rec, Direction::HigherIsBetter, &run_of(&[0.625]));
    assert_eq!(
        (one.verdict, one.method.as_deref()),
        (Verdict::Pass, Some("prediction"))
    );
    assert_eq!(one.df, Some(4.0));
    let one = check(
        "m",
        &rec,
        Direction::HigherIsBetter,
        &run_of(&[0.625 + shift]),
    );
    assert_eq!(one.verdict, Verdict::Fail);
    // A seed without the metric is MISSING; a non-finite value fails.
    let c = check(
        "m",
        &rec,
        Direction::HigherIsBetter,
        &[(1, Some(0.6)), (2, None)],
    );
    assert_eq!(c.verdict, Verdict::Missing);
    let c = check("m", &rec, Direction::HigherIsBetter, &[(1, Some(f64::NAN))]);
    assert_eq!(c.verdict, Verdict::Fail);
    // Bitwise-reproducible values: equal passes, any difference fails.
    let flat = record(RegressionTest::Reproduces, &[0.5, 0.5, 0.5]);
    assert_eq!(
        check("m", &flat, Direction::HigherIsBetter, &run_of(&[0.5, 0.5])).verdict,
        Verdict::Pass
    );
    assert_eq!(
        check("m", &flat, Direction::HigherIsBetter, &run_of(&[0.5])).verdict,
        Verdict::Pass
    );
    assert_eq!(
        check("m", &flat, Direction::HigherIsBetter, &run_of(&[0.6, 0.6])).verdict,
        Verdict::Fail
    );
    assert_eq!(
        check("m", &flat, Direction::HigherIsBetter, &run_of(&[0.5000001])).verdict,
        Verdict::Fail
    );
    // Spread on the new side only: Welch with n − 1 = 1 degree of freedom, t = 1, two-sided p = 1/2.
    let c = check(
        "m",
        &flat,
        Direction::HigherIsBetter,
        &run_of(&[0.5, 0.5000001]),
    );
    assert_eq!((c.verdict, c.df), (Verdict::Pass, Some(1.0)));
    assert!(
        close(c.t.unwrap(), 1.0, 1e-6) && close(c.p_value.unwrap(), 0.5, 1e-6),
        "{c:?}"
    );
}

// ---- through the graph runner -------------------------------------------------------------------------

/// Centre boxes on scenes that follow the run seed, and on scenes with a fixed seed.
const SUITE: &str = r#"name = "reg"
version = 1
[datasets.scenes]
synth = { form = "scenes", split = "test", count = 8, synth = { image_size = 32, crop_size = 24 } }
[datasets.fixed]
synth = { form = "scenes", split = "test", count = 8, seed = 3, synth = { image_size = 32, crop_size = 24 } }
[stages.baseline]
kind = "center-box"
inputs = { data = "datasets.scenes" }
[stages.fixed]
kind = "center-box"
inputs = { data = "datasets.fixed" }
"#;

fn load(dir: &Path) -> GraphSuite {
    let path = dir.join("reg.toml");
    std::fs::write(&path, SUITE).unwrap();
    let r = Registry::builtin();
    let p = PaperGoldens::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/paper"))
        .unwrap();
    let ctx = GraphContext {
        registry: &r,
        paper: &p,
        manifests: None,
    };
    GraphSuite::load(&path, &ctx).unwrap()
}

fn run(suite: &GraphSuite, dir: &Path, golden: Option<&Path>, seeds: usize) -> Results {
    let opts = RunOptions {
        golden: golden.map(Path::to_path_buf),
        skip_golden: golden.is_none(),
        claims: true,
        ..suite_common::run_options(&dir.join("runs"))
    };
    let gopts = GraphOptions {
        data_dir: dir.join("data"),
        seed: None,
        seeds,
    };
    run_graph(suite, &Registry::builtin(), &opts, &gopts).unwrap()
}

#[test]
fn a_graph_run_over_seeds_blesses_into_regression_records_and_is_judged_by_them() {
    let dir = tempfile::tempdir().unwrap();
    let suite = load(dir.path());
    let r = run(&suite, dir.path(), None, 4);
    assert_eq!(r.seeds, [0, 1, 2, 3]);
    let mut per_seed = r.seed_metrics.clone();
    per_seed.insert(r.seed, r.metrics.clone());
    let baseline: Vec<f64> = per_seed.values().map(|m| m["baseline.miou"]).collect();
    let fixed: Vec<f64> = per_seed.values().map(|m| m["fixed.miou"]).collect();
    // Data without a seed follows the run seed; data with one does not.
    assert!(baseline.windows(2).any(|w| w[0] != w[1]), "{baseline:?}");
    assert!(fixed.windows(2).all(|w| w[0] == w[1]), "{fixed:?}");
    // Reports: mean ± std over the seeds beside each seed's value.
    let json = serde_json::to_value(&r).unwrap();
    let md = render(&json, Path::new("r.json"), Format::Markdown).unwrap();
    let s = summary(&baseline);
    assert!(md.contains("## Seeds"), "{md}");
    assert!(
        md.contains(&format!("{:.6} ± {:.6}", s.mean, s.std)),
        "{md}"
    );

    let results = dir.path().join("r.json");
    std::fs::write(&results, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    let golden = dir.path().join("golden.toml");
    let opts = RegressionBlessOptions {
        by: "tester".into(),
        test: RegressionTest::Reproduces,
        alpha: 0.05,
        metrics: vec!["baseline.miou".into()],
    };
    let out = bless_regression_file(&results, &golden, &opts).unwrap();
    assert_eq!(out.added, ["baseline.miou"]);
    let g = Golden::read(&golden).unwrap();
    let rec = &g.regression["baseline.miou"];
    assert_eq!(rec.seeds, [0, 1, 2, 3]);
    assert_eq!(rec.values, baseline);
    assert_eq!((rec.mean, rec.std, rec.olympic_mean), (s.mean, s.std, None));
    assert_eq!(rec.blessed_by, "tester");
    assert!(!rec.commit.is_empty() && rec.results_sha256.len() == 64);
    // The run reproduces its own record, at one seed and at three.
    let point = |g: &mut Golden| {
        g.metrics.insert(
            "fixed.miou".into(),
            contracam::suite::golden::GoldenMetric {
                value: fixed[0],
                tolerance: 0.0,
                why: String::new(),
            },
        );
    };
    let mut g = Golden::read(&golden).unwrap();
    point(&mut g);
    std::fs::write(&golden, toml::to_string_pretty(&g).unwrap()).unwrap();
    for seeds in [1, 3] {
        let ok = run(&suite, dir.path(), Some(&golden), seeds);
        assert_eq!(ok.regression.len(), 1);
        assert_eq!(
            ok.regression[0].verdict,
            Verdict::Pass,
            "{:?}",
            ok.regression
        );
        assert!(ok.passed, "{:?} {:?}", ok.checks, ok.regression);
        // The metric judged by its record alone is not also a NO GOLDEN point check.
        assert_eq!(
            ok.checks
                .iter()
                .map(|c| c.metric.as_str())
                .collect::<Vec<_>>(),
            ["fixed.miou"]
        );
    }
    // A record ten standard deviations away fails.
    let mut shifted = g.clone();
    let moved: Vec<f64> = baseline
        .iter()
        .map(|v| v + 10.0 * s.std.max(1e-3))
        .collect();
    let mut rec =
        RegressionRecord::from_values(RegressionTest::Reproduces, 0.05, vec![0, 1, 2, 3], moved);
    rec.blessed_by = "tester".into();
    shifted.regression.insert("baseline.miou".into(), rec);
    std::fs::write(&golden, toml::to_string_pretty(&shifted).unwrap()).unwrap();
    let bad = run(&suite, dir.path(), Some(&golden), 3);
    assert_eq!(
        bad.regression[0].verdict,
        Verdict::Fail,
        "{:?}",
        bad.regression
    );
    assert!(!bad.passed);
    let json = serde_json::to_value(&bad).unwrap();
    let junit = render(&json, Path::new("r.json"), Format::Junit).unwrap();
    assert!(
        junit.contains("classname=\"suite.reg.regression\" name=\"baseline.miou\"")
            && junit.contains("failure type=\"regression\""),
        "{junit}"
    );
    let md = render(&json, Path::new("r.json"), Format::Markdown).unwrap();
    assert!(
        md.contains("## Regression") && md.contains("| `baseline.miou` | reproduces |"),
        "{md}"
    );

    // A one-seed results file cannot be blessed into a record.
    let one = run(&suite, dir.path(), None, 1);
    std::fs::write(&results, serde_json::to_vec(&one).unwrap()).unwrap();
    let e = bless_regression_file(&results, &dir.path().join("g2.toml"), &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least 3") && e.contains("--seeds"), "{e}");
    // A hand-edited mean that is not the values' is refused when the golden is read.
    let text = std::fs::read_to_string(&golden).unwrap();
    let tampered = text.replacen("mean = ", "mean = 1", 1);
    std::fs::write(&golden, tampered).unwrap();
    let e = Golden::read(&golden).unwrap_err().to_string();
    assert!(e.contains("regression.\"baseline.miou\".mean"), "{e}");
}
