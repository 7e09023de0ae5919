//! The graph runner: a small graph suite (a synthetic dataset, the built-in `center-box` kind and toy kinds
//! registered here, one of which reads another stage's published artefact) runs, is reused, refreshes a
//! stage and what depends on it, publishes nothing for a failing stage, refuses planned kinds, checks a
//! golden, survives kill -9, and `suite ls` lists suites.
mod suite_common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use contracam::suite::golden::paper::PaperGoldens;
use contracam::suite::graph::{GraphContext, GraphSuite};
use contracam::suite::graph_run::{run_graph, GraphOptions};
use contracam::suite::registry::{PlannedKind, Registry};
use contracam::suite::report::Results;
use contracam::suite::stage::*;
use contracam::suite::{RunOptions, SuiteError};
use serde::{Deserialize, Serialize};
use suite_common::run_options;

// ---- toy kinds ----------------------------------------------------------------------------------------

/// Writes `count(data) × factor` as `value.json`.
struct ToyCount;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CountParams {
    factor: f64,
}

const VALUE_OUT: &[Slot] = &[Slot::file("value", ArtefactKind::Json, "value.json")];
const VALUE_METRIC: &[MetricSpec] = &[MetricSpec {
    name: "value",
    unit: Unit::Other,
    direction: Direction::Neutral,
    about: "the number the stage wrote",
}];

impl Stage for ToyCount {
    type Params = CountParams;
    const KIND: &'static str = "toy-count";
    const VERSION: u32 = 1;
    const INPUTS: &'static [Slot] = &[Slot::required("data", ArtefactKind::Dataset)];
    const OUTPUTS: &'static [Slot] = VALUE_OUT;
    const METRICS: &'static [MetricSpec] = VALUE_METRIC;

    fn run(p: &CountParams, ctx: &mut StageContext) -> Result<StageResult, StageError> {
        let v = ctx.dataset("data")?.len()? as f64 * p.factor;
        ctx.write_json("value", &serde_json::json!({ "value": v }))?;
        Ok(StageResult::default().metric("value", v))
    }
}

/// Reads the `value` of the artefact bound to `a`, adds `offset`, writes it; can sleep or misbehave.
struct ToyAdd;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AddParams {
    offset: f64,
    /// Sleep after writing the output (so a kill lands inside the stage).
    sleep_ms: u64,
    /// "" (behave), "fail", "no-metric", "extra-metric".
    misbehave: String,
}

impl Stage for ToyAdd {
    type Params = AddParams;
    const KIND: &'static str = "toy-add";
    const VERSION: u32 = 1;
    const INPUTS: &'static [Slot] = &[Slot::required("a", ArtefactKind::Json)];
    const OUTPUTS: &'static [Slot] = VALUE_OUT;
    const METRICS: &'static [MetricSpec] = VALUE_METRIC;

    fn run(p: &AddParams, ctx: &mut StageContext) -> Result<StageResult, StageError> {
        let a = ctx.artefact("a")?;
        let v: serde_json::Value = read_json(&a.path)?;
        let x = v["value"].as_f64().ok_or_else(|| StageError::Input {
            slot: "a".into(),
            msg: "no value".into(),
        })? + p.offset;
        ctx.write_json(
            "value",
            &serde_json::json!({ "value": x, "from": a.producer, "input_fp": a.fingerprint }),
        )?;
        std::thread::sleep(Duration::from_millis(p.sleep_ms));
        match p.misbehave.as_str() {
            "fail" => Err(StageError::Failed("asked to fail".into())),
            "no-metric" => Ok(StageResult::default()),
            "extra-metric" => Ok(StageResult::default()
                .metric("value", x)
                .metric("bogus", 1.0)),
            _ => Ok(StageResult::default().metric("value", x)),
        }
    }
}

/// Emits `value`, and its optional metric `half` only when asked.
struct ToyOptional;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct OptionalParams {
    half: bool,
}

const OPTIONAL_METRICS: &[MetricSpec] = &[
    VALUE_METRIC[0],
    MetricSpec {
        name: "half",
        unit: Unit::Other,
        direction: Direction::Neutral,
        about: "half the value, when measured",
    },
];

impl Stage for ToyOptional {
    type Params = OptionalParams;
    const KIND: &'static str = "toy-optional";
    const VERSION: u32 = 1;
    const INPUTS: &'static [Slot] = &[Slot::required("data", ArtefactKind::Dataset)];
    const OUTPUTS: &'static [Slot] = VALUE_OUT;
    const METRICS: &'static [MetricSpec] = OPTIONAL_METRICS;
    const OPTIONAL_METRICS: &'static [&'static str] = &["half"];

    fn run(p: &OptionalParams, ctx: &mut StageContext) -> Result<StageResult, StageError> {
        let v = ctx.dataset("data")?.len()? as f64;
        ctx.write_json("value", &serde_json::json!({ "value": v }))?;
        let r = StageResult::default().metric("value", v);
        Ok(if p.half { r.metric("half", v / 2.0) } else { r })
    }
}

/// Declares an optional metric it does not declare as a metric: the registry refuses it.
struct ToyBadOptional;

impl Stage for ToyBadOptional {
    type Params = OptionalParams;
    const KIND: &'static str = "toy-bad-optional";
    const VERSION: u32 = 1;
    const INPUTS: &'static [Slot] = &[];
    const OUTPUTS: &'static [Slot] = &[];
    const METRICS: &'static [MetricSpec] = VALUE_METRIC;
    const OPTIONAL_METRICS: &'static [&'static str] = &["nope"];

    fn run(_: &OptionalParams, _: &mut StageContext) -> Result<StageResult, StageError> {
        Ok(StageResult::default())
    }
}

const PLANNED_INPUTS: &[Slot] = &[Slot::required("a", ArtefactKind::Json)];

fn registry() -> Registry {
    let mut r = Registry::builtin();
    r.register::<ToyCount>().unwrap();
    r.register::<ToyAdd>().unwrap();
    r.register::<ToyOptional>().unwrap();
    r.plan(PlannedKind {
        kind: "toy-planned",
        issue: 0,
        about: "declared, not implemented",
        inputs: PLANNED_INPUTS,
        outputs: &[],
        metrics: VALUE_METRIC,
    })
    .unwrap();
    r
}

// ---- suites -------------------------------------------------------------------------------------------

/// baseline (center-box) and count read the dataset; plus reads count's value, plus2 reads plus's.
fn suite_text(plus_params: &str, extra: &str) -> String {
    format!(
        r#"name = "toy"
version = 1
[datasets.scenes]
synth = {{ form = "scenes", split = "test", count = 8 }}
[stages.baseline]
kind = "center-box"
inputs = {{ data = "datasets.scenes" }}
[stages.count]
kind = "toy-count"
inputs = {{ data = "datasets.scenes" }}
params = {{ factor = 2.0 }}
[stages.plus]
kind = "toy-add"
inputs = {{ a = "stages.count.value" }}
params = {{ {plus_params} }}
[stages.plus2]
kind = "toy-add"
inputs = {{ a = "stages.plus.value" }}
params = {{ offset = 10.0 }}
{extra}"#
    )
}

fn paper() -> PaperGoldens {
    PaperGoldens::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/paper")).unwrap()
}

fn load(dir: &Path, text: &str) -> GraphSuite {
    let path = dir.join("toy.toml");
    std::fs::write(&path, text).unwrap();
    let (r, p) = (registry(), paper());
    let ctx = GraphContext {
        registry: &r,
        paper: &p,
        manifests: None,
    };
    GraphSuite::load(&path, &ctx).unwrap()
}

fn gopts(dir: &Path) -> GraphOptions {
    GraphOptions {
        data_dir: dir.join("data"),
        seed: None,
    }
}

fn run(suite: &GraphSuite, opts: &RunOptions, dir: &Path) -> Result<Results, SuiteError> {
    Ok(run_graph(suite, &registry(), opts, &gopts(dir))?)
}

fn cached(r: &Results) -> BTreeMap<String, bool> {
    r.stages
        .iter()
        .map(|s| (s.stage.clone(), s.cached))
        .collect()
}

/// Directory names under `root` that start with `prefix`.
fn dirs(root: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(root)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

// ---- tests --------------------------------------------------------------------------------------------

#[test]
fn runs_reuses_and_refreshes_exactly_the_stage_and_its_descendants() {
    let dir = tempfile::tempdir().unwrap();
    let suite = load(dir.path(), &suite_text("offset = 1.0", ""));
    assert_eq!(suite.order, ["baseline", "count", "plus", "plus2"]);
    let runs = dir.path().join("runs");
    let opts = run_options(&runs);

    let first = run(&suite, &opts, dir.path()).unwrap();
    assert_eq!(first.metrics["count.value"], 16.0);
    assert_eq!(first.metrics["plus.value"], 17.0);
    assert_eq!(first.metrics["plus2.value"], 27.0);
    let miou = first.metrics["baseline.miou"];
    assert!(miou > 0.0 && miou < 1.0, "{miou}");
    assert_eq!(first.metrics.len(), 4, "{:?}", first.metrics);
    assert!(cached(&first).values().all(|c| !c), "{:?}", cached(&first));
    assert!(!first.passed, "no golden: nothing passed");
    assert_eq!(first.precision.as_deref(), Some("fp32"));
    assert_eq!(first.seed, 0);

    // The artefact a stage read is the producer's published output, with the producer's fingerprint.
    let plus = first.stages.iter().find(|s| s.stage == "plus").unwrap();
    let count = first.stages.iter().find(|s| s.stage == "count").unwrap();
    let plus_dir = runs
        .join("toy")
        .join(format!("plus-{}", &plus.fingerprint[..16]));
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(plus_dir.join("value.json")).unwrap())
            .unwrap();
    assert_eq!(written["from"], "count.value");
    assert_eq!(
        written["input_fp"],
        contracam::suite::cache::artefact_fingerprint(&count.fingerprint, "value")
    );
    assert!(plus_dir.join("DONE").is_file());

    let second = run(&suite, &opts, dir.path()).unwrap();
    assert!(
        cached(&second).values().all(|c| *c),
        "{:?}",
        cached(&second)
    );
    assert_eq!(second.metrics, first.metrics);
    let fps =
        |r: &Results| -> Vec<String> { r.stages.iter().map(|s| s.fingerprint.clone()).collect() };
    assert_eq!(fps(&second), fps(&first));

    let refreshed = run(
        &suite,
        &RunOptions {
            refresh_stages: vec!["plus".into()],
            ..run_options(&runs)
        },
        dir.path(),
    )
    .unwrap();
    assert_eq!(
        cached(&refreshed),
        BTreeMap::from([
            ("baseline".into(), true),
            ("count".into(), true),
            ("plus".into(), false),
            ("plus2".into(), false),
        ])
    );
    assert_eq!(refreshed.metrics, first.metrics);

    let e = run(
        &suite,
        &RunOptions {
            refresh_stages: vec!["plu".into()],
            ..run_options(&runs)
        },
        dir.path(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("--refresh-stage plu") && e.contains("baseline, count, plus, plus2"),
        "{e}"
    );

    // A parameter change upstream changes the fingerprints downstream, not beside it.
    let changed = load(
        dir.path(),
        &suite_text("offset = 1.0", "").replace("factor = 2.0", "factor = 3.0"),
    );
    let third = run(&changed, &opts, dir.path()).unwrap();
    assert_eq!(
        cached(&third),
        BTreeMap::from([
            ("baseline".into(), true),
            ("count".into(), false),
            ("plus".into(), false),
            ("plus2".into(), false),
        ])
    );
    assert_eq!(third.metrics["plus2.value"], 24.0 + 11.0);

    // A seed override is a different run of every stage.
    let seeded = run_graph(
        &suite,
        &registry(),
        &opts,
        &GraphOptions {
            seed: Some(7),
            ..gopts(dir.path())
        },
    )
    .unwrap();
    assert_eq!(seeded.seed, 7);
    assert!(cached(&seeded).values().all(|c| !c));
}

#[test]
fn plan_predicts_the_run() {
    use contracam::suite::plan::{plan_graph, Action};
    let dir = tempfile::tempdir().unwrap();
    let suite = load(dir.path(), &suite_text("offset = 1.0", ""));
    let runs = dir.path().join("runs");
    let opts = run_options(&runs);
    let p = plan_graph(&suite, &registry(), &opts, &gopts(dir.path())).unwrap();
    assert!(p.stages.iter().all(|s| s.action == Some(Action::Run)));
    assert!(!runs.exists(), "a plan creates nothing");
    let r = run(&suite, &opts, dir.path()).unwrap();
    let p = plan_graph(&suite, &registry(), &opts, &gopts(dir.path())).unwrap();
    for (s, t) in p.stages.iter().zip(&r.stages) {
        assert_eq!(s.fingerprint.as_deref(), Some(t.fingerprint.as_str()));
        assert_eq!(s.action, Some(Action::Cached), "{}", s.stage);
    }
    let p = plan_graph(
        &suite,
        &registry(),
        &RunOptions {
            refresh_stages: vec!["count".into()],
            ..run_options(&runs)
        },
        &gopts(dir.path()),
    )
    .unwrap();
    let actions: Vec<_> = p.stages.iter().map(|s| s.action.unwrap()).collect();
    assert_eq!(
        actions,
        [
            Action::Cached,
            Action::Refresh,
            Action::Refresh,
            Action::Refresh
        ]
    );
    assert!(p.text().contains("3 stage(s) to run"), "{}", p.text());
}

#[test]
fn an_optional_metric_may_be_absent_and_a_required_one_may_not() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let text = |half: bool| {
        format!(
            "name = \"opt\"\nversion = 1\n[datasets.scenes]\nsynth = {{ form = \"scenes\", split = \"test\", count = 8 }}\n\
             [stages.o]\nkind = \"toy-optional\"\ninputs = {{ data = \"datasets.scenes\" }}\nparams = {{ half = {half} }}\n"
        )
    };
    let without = run(
        &load(dir.path(), &text(false)),
        &run_options(&runs),
        dir.path(),
    )
    .unwrap();
    assert_eq!(without.metrics.get("o.value"), Some(&8.0));
    assert!(
        !without.metrics.contains_key("o.half"),
        "{:?}",
        without.metrics
    );
    // Reused from the cache without it, too.
    let again = run(
        &load(dir.path(), &text(false)),
        &run_options(&runs),
        dir.path(),
    )
    .unwrap();
    assert!(again.stages.iter().all(|s| s.cached));
    let with = run(
        &load(dir.path(), &text(true)),
        &run_options(&runs),
        dir.path(),
    )
    .unwrap();
    assert_eq!(with.metrics.get("o.half"), Some(&4.0));
    // An optional metric must be a declared one.
    let e = Registry::default()
        .register::<ToyBadOptional>()
        .unwrap_err()
        .to_string();
    assert!(e.contains("optional metric 'nope' is not declared"), "{e}");
}

#[test]
fn a_failing_stage_publishes_nothing_and_names_itself() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let root = runs.join("toy");
    for (how, want) in [
        ("fail", "asked to fail"),
        ("no-metric", "declared metric 'value' was not emitted"),
        ("extra-metric", "metric 'bogus' is not declared"),
    ] {
        let suite = load(
            dir.path(),
            &suite_text(&format!("offset = 1.0, misbehave = \"{how}\""), ""),
        );
        let e = run(&suite, &run_options(&runs), dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("toy.toml")
                && e.contains("stage 'plus' (kind 'toy-add')")
                && e.contains("nothing was published")
                && e.contains(want),
            "{how}: {e}"
        );
        assert!(
            dirs(&root, "plus-").is_empty(),
            "{how}: {:?}",
            dirs(&root, "plus")
        );
        assert!(dirs(&root, "plus2-").is_empty());
        assert!(
            dirs(&root, ".tmp-").is_empty(),
            "{:?}",
            dirs(&root, ".tmp-")
        );
        // The stages before it were published and are reused by the next attempt.
        assert_eq!(dirs(&root, "count-").len(), 1);
    }
    let ok = load(dir.path(), &suite_text("offset = 1.0", ""));
    let r = run(&ok, &run_options(&runs), dir.path()).unwrap();
    assert_eq!(
        cached(&r),
        BTreeMap::from([
            ("baseline".into(), true),
            ("count".into(), true),
            ("plus".into(), false),
            ("plus2".into(), false),
        ])
    );
}

#[test]
fn a_suite_with_planned_kinds_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let suite = load(
        dir.path(),
        &suite_text(
            "offset = 1.0",
            "[stages.later]\nkind = \"toy-planned\"\ninputs = { a = \"stages.plus.value\" }\n\
             [stages.later2]\nkind = \"toy-planned\"\ninputs = { a = \"stages.count.value\" }\n",
        ),
    );
    let runs = dir.path().join("runs");
    let e = run(&suite, &run_options(&runs), dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("toy.toml")
            && e.contains("not implemented")
            && e.contains("'toy-planned' (stages later2, later)"),
        "{e}"
    );
    assert!(!runs.exists(), "nothing may run: {:?}", dirs(&runs, ""));
}

#[test]
fn an_unbuilt_dataset_or_a_held_runs_dir_is_refused_before_any_work() {
    use contracam::suite::cache::{LockPolicy, StageCache};
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let suite = load(
        dir.path(),
        &suite_text("offset = 1.0", "").replace(
            "synth = { form = \"scenes\", split = \"test\", count = 8 }",
            "manifest = \"cub200\"\nsplit = \"test\"",
        ),
    );
    let e = run(&suite, &run_options(&runs), dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("toy.toml: datasets.scenes")
            && e.contains("not built")
            && e.contains("contracam data build cub200"),
        "{e}"
    );
    assert!(!runs.exists());

    // Another run holds the suite's folder: --no-wait refuses, naming the holder.
    let suite = load(dir.path(), &suite_text("offset = 1.0", ""));
    let held = StageCache::open(&runs.join("toy"), LockPolicy::Refuse).unwrap();
    let e = run(&suite, &run_options(&runs), dir.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("in use by another contracam run"), "{e}");
    assert!(dirs(&runs.join("toy"), "count-").is_empty());
    drop(held);
    run(&suite, &run_options(&runs), dir.path()).unwrap();
}

fn golden(metrics: &BTreeMap<String, f64>, seed: u64) -> String {
    let mut t = format!(
        "suite = \"toy\"\nsuite_version = 1\n[provenance]\nblessed_by = \"test\"\nblessed_at = \"now\"\n\
         seed = {seed}\ncommit = \"x\"\nmachine = \"test\"\nresults_sha256 = \"0\"\n"
    );
    for (k, v) in metrics {
        t.push_str(&format!(
            "[metrics.\"{k}\"]\nvalue = {v:?}\ntolerance = 0.0\nwhy = \"exact on one machine\"\n"
        ));
    }
    t
}

#[test]
fn golden_passes_and_a_wrong_value_fails() {
    use contracam::suite::golden::Verdict;
    let dir = tempfile::tempdir().unwrap();
    let suite = load(dir.path(), &suite_text("offset = 1.0", ""));
    let runs = dir.path().join("runs");
    let first = run(&suite, &run_options(&runs), dir.path()).unwrap();
    let g = dir.path().join("golden.toml");
    std::fs::write(&g, golden(&first.metrics, 0)).unwrap();
    let with = |p: &Path| RunOptions {
        golden: Some(p.to_path_buf()),
        ..run_options(&runs)
    };
    let ok = run(&suite, &with(&g), dir.path()).unwrap();
    assert!(ok.passed, "{:?}", ok.checks);
    assert_eq!(ok.checks.len(), 4);
    assert_eq!(ok.golden_file.as_deref(), Some(g.to_str().unwrap()));

    let mut wrong = first.metrics.clone();
    wrong.insert("plus.value".into(), 18.0);
    std::fs::write(&g, golden(&wrong, 0)).unwrap();
    let bad = run(&suite, &with(&g), dir.path()).unwrap();
    assert!(!bad.passed);
    let failed: Vec<_> = bad
        .checks
        .iter()
        .filter(|c| c.verdict != Verdict::Pass)
        .map(|c| c.metric.as_str())
        .collect();
    assert_eq!(failed, ["plus.value"]);

    // A golden naming a metric the suite does not emit is refused before running.
    wrong.insert("plus.nope".into(), 1.0);
    std::fs::write(&g, golden(&wrong, 0)).unwrap();
    let e = run(&suite, &with(&g), dir.path()).unwrap_err().to_string();
    assert!(e.contains("plus.nope") && e.contains("golden.toml"), "{e}");
}

#[test]
fn paper_binds_are_reported_as_information() {
    let dir = tempfile::tempdir().unwrap();
    // A center-box mIoU bound to a Table 1 cell: reported beside the paper value, not judged.
    let suite = load(
        dir.path(),
        &suite_text(
            "offset = 1.0",
            "[[bind]]\ntable = 1\nrow = \"ReDO [47]\"\ncolumn = \"CUB\"\nmetric = \"stages.baseline.miou\"\n",
        ),
    );
    let r = run(&suite, &run_options(&dir.path().join("runs")), dir.path()).unwrap();
    assert_eq!(r.paper_cells.len(), 1);
    let c = &r.paper_cells[0];
    assert_eq!(c.metric, "baseline.miou");
    assert_eq!(c.value, Some(r.metrics["baseline.miou"]));
    assert_eq!(c.paper, 0.426);
    let json = serde_json::to_value(&r).unwrap();
    let md = contracam::suite::report::render(
        &json,
        Path::new("r.json"),
        contracam::suite::report::Format::Markdown,
    )
    .unwrap();
    assert!(
        md.contains("Paper cells (information, not pass/fail)") && md.contains("`baseline.miou`"),
        "{md}"
    );
}

// ---- kill -9 ------------------------------------------------------------------------------------------

const CHILD_ENV: &str = "CONTRACAM_TEST_GRAPH_CHILD";

/// The suite the kill test runs: plus and plus2 sleep after writing, so a kill lands inside them.
fn slow_suite() -> String {
    suite_text("offset = 1.0, sleep_ms = 400", "").replace(
        "params = { offset = 10.0 }",
        "params = { offset = 10.0, sleep_ms = 400 }",
    )
}

/// Not a test by itself: the kill test runs this in a child process (the toy kinds are not in the
/// contracam binary). Without the environment variable it does nothing.
#[test]
#[ignore]
fn child_graph_run() {
    let Some(dir) = std::env::var_os(CHILD_ENV).map(PathBuf::from) else {
        return;
    };
    let suite = load(&dir, &slow_suite());
    let runs = dir.join("runs");
    let r = run(&suite, &run_options(&runs), &dir).unwrap();
    let out = runs.join("toy/results.json");
    std::fs::write(&out, serde_json::to_string_pretty(&r).unwrap()).unwrap();
}

fn spawn_child(dir: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_graph_run",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, dir)
        .env("RAYON_NUM_THREADS", "1")
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn lines(child: &mut Child) -> Receiver<String> {
    let err = child.stderr.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    rx
}

fn results(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("runs/toy/results.json")).unwrap())
        .unwrap()
}

#[test]
fn kill_9_then_rerun_equals_an_uninterrupted_run() {
    let top = tempfile::tempdir().unwrap();
    let clean = top.path().join("clean");
    std::fs::create_dir_all(&clean).unwrap();
    let mut c = spawn_child(&clean);
    let rx = lines(&mut c);
    assert!(c.wait().unwrap().success());
    drop(rx);
    let reference = results(&clean);

    // (line to wait for, delay): 150 ms into plus's 400 ms sleep; just after count was published.
    let points = [("[stage 3] plus (", 150), ("[stage 2] count: done", 0)];
    for (i, (wait_for, delay)) in points.iter().enumerate() {
        let dir = top.path().join(format!("kill{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let root = dir.join("runs/toy");
        let mut child = spawn_child(&dir);
        let rx = lines(&mut child);
        let mut seen = Vec::new();
        while let Ok(l) = rx.recv_timeout(Duration::from_secs(120)) {
            let hit = l.starts_with(wait_for);
            seen.push(l);
            if hit {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(*delay));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            status.code().is_none(),
            "kill {i}: the run ended first: {seen:#?}"
        );
        assert!(!root.join("results.json").exists());
        if i == 0 {
            assert!(
                !dirs(&root, ".tmp-plus-").is_empty(),
                "kill {i} should land inside plus: {:?}",
                dirs(&root, "")
            );
        }
        let mut rerun = spawn_child(&dir);
        let rx = lines(&mut rerun);
        assert!(
            rerun.wait().unwrap().success(),
            "kill {i}: the rerun failed"
        );
        let err: Vec<String> = rx.try_iter().collect();
        let r = results(&dir);
        let cached: BTreeMap<String, bool> = r["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["stage"].as_str().unwrap().into(),
                    s["cached"].as_bool().unwrap(),
                )
            })
            .collect();
        // baseline and count were published before either kill; plus was not.
        assert!(cached["baseline"], "kill {i}: {err:#?}");
        assert!(cached["count"], "kill {i}");
        assert!(!cached["plus"], "kill {i}");
        assert!(
            dirs(&root, ".tmp-").is_empty(),
            "kill {i}: {:?}",
            dirs(&root, ".tmp-")
        );
        assert_eq!(
            r["metrics"].to_string(),
            reference["metrics"].to_string(),
            "kill {i}: metrics differ from an uninterrupted run"
        );
        let fps = |v: &serde_json::Value| -> Vec<String> {
            v["stages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["fingerprint"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(fps(&r), fps(&reference), "kill {i}");
    }
}

// ---- suite ls -----------------------------------------------------------------------------------------

fn contracam(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_contracam"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CONTRACAM_LOG", "error")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn suite_ls_lists_forms_stages_datasets_and_missing_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let suites = dir.path().join("suites");
    std::fs::create_dir_all(suites.join("sub")).unwrap();
    suite_common::tiny_suite(&suites);
    std::fs::write(
        suites.join("sub/g.toml"),
        r#"name = "g"
version = 1
[datasets.scenes]
synth = { form = "scenes", split = "test", count = 8 }
[datasets.cub]
manifest = "cub200"
split = "test"
[stages.a]
kind = "center-box"
inputs = { data = "datasets.scenes" }
[stages.b]
kind = "center-box"
inputs = { data = "datasets.cub" }
"#,
    )
    .unwrap();
    std::fs::write(suites.join("broken.toml"), "name = \n").unwrap();
    std::fs::write(suites.join("notes.txt"), "not a suite").unwrap();
    let data = dir.path().join("data");
    let ls = || {
        let (ok, out, err) = contracam(&[
            "suite",
            "ls",
            suites.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
        out
    };
    let out = ls();
    let pos = |s: &str| out.find(s).unwrap_or_else(|| panic!("no {s:?} in\n{out}"));
    assert!(pos("broken.toml  [invalid]") < pos("sub/g.toml  [graph]  g v1"));
    assert!(pos("sub/g.toml") < pos("tiny.toml  [smoke]  tiny v1"));
    assert!(!out.contains("notes.txt"));
    pos("stages (2): a, b");
    pos("stages (5): pretrain, evaluate-vanilla, boxes, retrain-oa-crop, evaluate-oa-crop");
    let cub = out
        .lines()
        .find(|l| l.trim_start().starts_with("cub "))
        .unwrap();
    assert!(
        cub.contains("cub200/test") && cub.ends_with("NOT BUILT"),
        "{cub}"
    );
    let scenes = out
        .lines()
        .find(|l| l.trim_start().starts_with("scenes "))
        .unwrap();
    assert!(
        scenes.ends_with("built") && !scenes.contains("NOT"),
        "{scenes}"
    );
    pos("missing kinds: none");

    // Built once its index exists.
    std::fs::create_dir_all(data.join("cub200/index")).unwrap();
    std::fs::write(data.join("cub200/index/test.jsonl"), "").unwrap();
    let out = ls();
    let cub = out
        .lines()
        .find(|l| l.trim_start().starts_with("cub "))
        .unwrap();
    assert!(!cub.contains("NOT BUILT"), "{cub}");

    // The repository's suites: every file is a smoke or graph suite, and the paper suites say what they miss.
    let (ok, out, err) = contracam(&["suite", "ls", "--data-dir", data.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(!out.contains("[invalid]"), "{out}");
    assert!(out.contains("suites/smoke.toml  [smoke]"), "{out}");
    for t in 1..=8 {
        assert!(
            out.contains(&format!("suites/paper/table{t}.toml  [graph]")),
            "{out}"
        );
    }
    assert!(out.contains("missing kinds: "), "{out}");
}

#[test]
fn suite_run_of_a_graph_suite_refuses_planned_kinds_by_name() {
    // The first paper suite that still names a planned kind (they land one by one).
    let Some((suite, kind)) = (1..=8).find_map(|t| {
        let path = format!("suites/paper/table{t}.toml");
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(&path)).ok()?;
        contracam::suite::stages::planned()
            .into_iter()
            .find(|k| text.contains(&format!("kind = \"{}\"", k.kind)))
            .map(|k| (path, k.kind))
    }) else {
        eprintln!("no paper suite names a planned kind any more: nothing to refuse");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let (ok, _, err) = contracam(&[
        "suite",
        "run",
        &suite,
        "--runs-dir",
        runs.to_str().unwrap(),
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{suite}: cannot run: stage kinds not implemented yet"
        )) && err.contains(&format!("'{kind}' (stages ")),
        "{err}"
    );
    assert!(!runs.exists());
}
