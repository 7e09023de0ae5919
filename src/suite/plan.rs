//! What a `suite run` would do, without doing it: each stage in order with its fingerprint, whether a
//! published directory will be reused or the stage runs, how long it took last time, and the seeds the
//! golden's claims add. Also the stage graph that `--refresh-stage` walks.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;
use tch::Device;

use super::cache::StageCache;
use super::config::{LoadedSuite, SuiteConfig};
use super::dataset::DatasetHandle;
use super::golden::Golden;
use super::graph::{GraphSuite, InputRef};
use super::graph_run::{self, GraphOptions};
use super::pipeline::{Fault, StageFingerprints, BOXES_OUT, EVAL_OUT, TRAIN_OUT};
use super::registry::Registry;
use super::stage::{device_class, Slot};
use super::{RunOptions, SuiteError};

/// One stage of the pipeline as [`super::pipeline::Pipeline::run`] names and fingerprints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStage {
    pub name: &'static str,
    pub fingerprint: String,
    /// The stages whose outputs it reads.
    pub depends_on: &'static [&'static str],
    pub outputs: &'static [Slot],
}

/// The pipeline's stages in the order it runs them (dependencies first). Mirrors `Pipeline::run`;
/// `tests/suite_plan.rs` checks the names and fingerprints against what a run records.
pub fn stages(cfg: &SuiteConfig, device: Device, fault: Option<Fault>) -> Vec<PlannedStage> {
    let f = StageFingerprints::new(cfg, device, fault);
    let s = |name, fingerprint: &String, depends_on, outputs| PlannedStage {
        name,
        fingerprint: fingerprint.clone(),
        depends_on,
        outputs,
    };
    let mut v = vec![
        s("pretrain", &f.pretrain, &[][..], TRAIN_OUT),
        s(
            "evaluate-vanilla",
            &f.evaluate_vanilla,
            &["pretrain"],
            EVAL_OUT,
        ),
    ];
    if cfg.retrain.oa_crop {
        v.push(s("boxes", &f.boxes, &["pretrain"], BOXES_OUT));
        v.push(s("retrain-oa-crop", &f.retrain, &["boxes"], TRAIN_OUT));
        v.push(s(
            "evaluate-oa-crop",
            &f.evaluate_oa_crop,
            &["retrain-oa-crop"],
            EVAL_OUT,
        ));
    }
    v
}

/// The stages to recompute: every stage when `all`, else the `named` ones and every stage that depends on
/// them, directly or not. A name that is not a stage of this pipeline is an error listing the stages.
pub fn refresh_set(
    stages: &[PlannedStage],
    all: bool,
    named: &[String],
) -> Result<BTreeSet<String>, SuiteError> {
    if all {
        return Ok(stages.iter().map(|s| s.name.to_string()).collect());
    }
    for n in named {
        if !stages.iter().any(|s| s.name == n) {
            let names: Vec<&str> = stages.iter().map(|s| s.name).collect();
            return Err(SuiteError::Other(format!(
                "--refresh-stage {n}: the suite has no stage of that name; its stages are {}",
                names.join(", ")
            )));
        }
    }
    let mut set = BTreeSet::new();
    // In run order, so a stage's dependencies are decided before it.
    for s in stages {
        if named.iter().any(|n| n == s.name) || s.depends_on.iter().any(|d| set.contains(*d)) {
            set.insert(s.name.to_string());
        }
    }
    Ok(set)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// A published directory with this fingerprint and intact outputs is reused.
    Cached,
    /// Nothing usable is published: the stage runs.
    Run,
    /// Published, but `--refresh`/`--refresh-stage` recomputes it.
    Refresh,
}

impl Action {
    pub fn label(self) -> &'static str {
        match self {
            Action::Cached => "cached",
            Action::Run => "to run",
            Action::Refresh => "refresh",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StagePlan {
    pub stage: String,
    pub fingerprint: String,
    pub action: Action,
    /// How long the stage took when it was last published: with this fingerprint when there is one, else
    /// with another (a rough cost; see `same_fingerprint`).
    pub last_seconds: Option<f64>,
    /// Whether `last_seconds` is of this very fingerprint.
    pub same_fingerprint: bool,
}

/// An extra seed the golden's claims need: each is a whole pipeline run, cached like any other.
#[derive(Debug, Clone, Serialize)]
pub struct SeedPlan {
    pub seed: u64,
    pub stages: Vec<StagePlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub suite: String,
    pub suite_version: u32,
    pub seed: u64,
    pub device_class: String,
    /// `<runs-dir>/<suite>`.
    pub stage_dir: PathBuf,
    pub stages: Vec<StagePlan>,
    pub golden: Option<String>,
    /// Why the golden (and so the claims) could not be read: `suite run` would stop there.
    pub golden_problem: Option<String>,
    pub claim_seeds: Vec<SeedPlan>,
}

impl Plan {
    /// Every stage plan, the suite's seed first.
    fn all(&self) -> impl Iterator<Item = &StagePlan> {
        self.stages
            .iter()
            .chain(self.claim_seeds.iter().flat_map(|s| &s.stages))
    }

    /// Stages that will run, and the sum of their last known durations (None when none is known).
    pub fn to_run(&self) -> (usize, Option<f64>) {
        let run: Vec<&StagePlan> = self.all().filter(|s| s.action != Action::Cached).collect();
        let known: Vec<f64> = run.iter().filter_map(|s| s.last_seconds).collect();
        (run.len(), (!known.is_empty()).then(|| known.iter().sum()))
    }

    /// The plan as a person reads it.
    pub fn text(&self) -> String {
        let mut out = format!(
            "suite {} v{} (seed {}, device class {}), stages in {}\n",
            self.suite,
            self.suite_version,
            self.seed,
            self.device_class,
            self.stage_dir.display()
        );
        out.push_str(&stage_table(&self.stages));
        match (&self.golden, &self.golden_problem) {
            (_, Some(why)) => out.push_str(&format!("golden: {why}\n")),
            (Some(g), None) => out.push_str(&format!("golden: {g}\n")),
            (None, None) => out.push_str("golden: none\n"),
        }
        if self.claim_seeds.is_empty() {
            out.push_str("claims add no seeds\n");
        }
        for s in &self.claim_seeds {
            out.push_str(&format!("claims add seed {}:\n", s.seed));
            out.push_str(&stage_table(&s.stages));
        }
        let (n, secs) = self.to_run();
        out.push_str(&match secs {
            Some(t) => format!("{n} stage(s) to run; their last known durations sum to {t:.1} s\n"),
            None => format!("{n} stage(s) to run; no duration known\n"),
        });
        out
    }
}

fn stage_table(stages: &[StagePlan]) -> String {
    let mut out = format!(
        "  {:>2}  {:<18} {:<12}  {:<8} {}\n",
        "#", "stage", "fingerprint", "status", "last duration"
    );
    for (i, s) in stages.iter().enumerate() {
        let last = match (s.last_seconds, s.same_fingerprint) {
            (Some(t), true) => format!("{t:.1} s"),
            (Some(t), false) => format!("{t:.1} s (another fingerprint)"),
            (None, _) => "—".into(),
        };
        out.push_str(&format!(
            "  {:>2}  {:<18} {:<12}  {:<8} {last}\n",
            i + 1,
            s.stage,
            &s.fingerprint[..12.min(s.fingerprint.len())],
            s.action.label()
        ));
    }
    out
}

/// What `run_suite(suite, opts)` would do. Reads stage markers and hashes published outputs; writes
/// nothing, creates no folder and takes no lock (a run in progress neither blocks nor is disturbed).
pub fn plan(suite: &LoadedSuite, opts: &RunOptions) -> Result<Plan, SuiteError> {
    let cfg = &suite.config;
    let root = opts.runs_dir.join(&cfg.name);
    let cache = StageCache::read_only(&root);
    let planned = stages(cfg, opts.device, opts.fault);
    let refresh = refresh_set(&planned, opts.refresh, &opts.refresh_stages)?;
    let golden_path = if opts.skip_golden {
        None
    } else {
        opts.golden.clone().or_else(|| suite.golden_path())
    };
    let (golden, golden_problem) = match &golden_path {
        None => (None, None),
        Some(p) => match super::validate(suite, Some(p)).and_then(|_| Ok(Golden::read(p)?)) {
            Ok(g) => (Some(g), None),
            Err(e) => (
                None,
                Some(format!(
                    "{e} (`suite run` stops here; --no-golden runs without one)"
                )),
            ),
        },
    };
    let mut claim_seeds = Vec::new();
    if let Some(g) = golden.as_ref().filter(|_| opts.claims) {
        for seed in super::claims::seeds(&g.claims) {
            if seed == cfg.seed {
                continue;
            }
            let mut c = cfg.clone();
            c.seed = seed;
            let st = stages(&c, opts.device, opts.fault);
            claim_seeds.push(SeedPlan {
                seed,
                stages: stage_plans(&cache, &st, &refresh),
            });
        }
    }
    Ok(Plan {
        suite: cfg.name.clone(),
        suite_version: cfg.version,
        seed: cfg.seed,
        device_class: device_class(opts.device).into(),
        stage_dir: root,
        stages: stage_plans(&cache, &planned, &refresh),
        golden: golden_path.map(|p| display(&p)),
        golden_problem,
        claim_seeds,
    })
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

fn stage_plans(
    cache: &StageCache,
    stages: &[PlannedStage],
    refresh: &BTreeSet<String>,
) -> Vec<StagePlan> {
    stages
        .iter()
        .map(|s| {
            let published = cache
                .lookup(s.name, &s.fingerprint)
                .filter(|p| StageCache::verify(p, s.outputs).is_ok());
            let (action, last, same) = match published {
                Some(p) if refresh.contains(s.name) => {
                    (Action::Refresh, Some(p.marker.seconds), true)
                }
                Some(p) => (Action::Cached, Some(p.marker.seconds), true),
                None => (
                    Action::Run,
                    cache.latest_marker(s.name).map(|m| m.seconds),
                    false,
                ),
            };
            StagePlan {
                stage: s.name.into(),
                fingerprint: s.fingerprint.clone(),
                action,
                last_seconds: last,
                same_fingerprint: same,
            }
        })
        .collect()
}

/// One stage of a graph suite's plan.
#[derive(Debug, Clone, Serialize)]
pub struct GraphStagePlan {
    pub stage: String,
    pub kind: String,
    /// None when the stage cannot be fingerprinted (see `blocked`).
    pub fingerprint: Option<String>,
    /// None when the stage cannot run (see `blocked`).
    pub action: Option<Action>,
    /// Why the stage cannot run: its kind is not implemented, a dataset is not built, or it reads from a
    /// stage that cannot run.
    pub blocked: Option<String>,
    pub last_seconds: Option<f64>,
    pub same_fingerprint: bool,
}

/// A dataset a graph suite's stages read.
#[derive(Debug, Clone, Serialize)]
pub struct GraphDatasetPlan {
    pub id: String,
    /// None when it resolves; else why not (not built, unreadable index).
    pub problem: Option<String>,
}

/// What `suite run` of a graph suite would do.
#[derive(Debug, Clone, Serialize)]
pub struct GraphPlan {
    pub suite: String,
    pub suite_version: u32,
    pub device_class: String,
    /// `<runs-dir>/<suite>`.
    pub stage_dir: PathBuf,
    pub stages: Vec<GraphStagePlan>,
    pub datasets: Vec<GraphDatasetPlan>,
    /// Kinds not implemented yet, each with the stages that use it: `suite run` refuses while any is left.
    pub missing_kinds: Vec<(String, Vec<String>)>,
    pub golden: Option<String>,
    pub golden_problem: Option<String>,
    /// The profile planned (`paper`: the file as written) and the `--set` overrides after it.
    pub profile: String,
    pub sets: Vec<String>,
}

impl GraphPlan {
    /// The plan as a person reads it.
    pub fn text(&self) -> String {
        let mut out = format!(
            "suite {} v{} (graph, profile {}, device class {}), stages in {}\n",
            self.suite,
            self.suite_version,
            self.profile,
            self.device_class,
            self.stage_dir.display()
        );
        for set in &self.sets {
            out.push_str(&format!("--set {set}\n"));
        }
        let w = self
            .stages
            .iter()
            .map(|s| s.stage.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let k = self
            .stages
            .iter()
            .map(|s| s.kind.len())
            .max()
            .unwrap_or(4)
            .max(4);
        out.push_str(&format!(
            "  {:>2}  {:<w$}  {:<k$}  {:<12}  {:<8} {}\n",
            "#", "stage", "kind", "fingerprint", "status", "last duration"
        ));
        for (i, s) in self.stages.iter().enumerate() {
            let fp = s
                .fingerprint
                .as_deref()
                .map(|f| &f[..12.min(f.len())])
                .unwrap_or("—");
            let status = s.action.map(|a| a.label()).unwrap_or("blocked");
            let last = match (&s.blocked, s.last_seconds, s.same_fingerprint) {
                (Some(why), _, _) => why.clone(),
                (None, Some(t), true) => format!("{t:.1} s"),
                (None, Some(t), false) => format!("{t:.1} s (another fingerprint)"),
                (None, None, _) => "—".into(),
            };
            out.push_str(&format!(
                "  {:>2}  {:<w$}  {:<k$}  {fp:<12}  {status:<8} {last}\n",
                i + 1,
                s.stage,
                s.kind
            ));
        }
        for d in &self.datasets {
            if let Some(p) = &d.problem {
                out.push_str(&format!("dataset {}: {p}\n", d.id));
            }
        }
        if self.missing_kinds.is_empty() {
            out.push_str("missing kinds: none\n");
        } else {
            let m: Vec<String> = self
                .missing_kinds
                .iter()
                .map(|(k, st)| format!("{k} ({})", st.join(", ")))
                .collect();
            out.push_str(&format!(
                "missing kinds (not implemented yet; `suite run` refuses): {}\n",
                m.join(", ")
            ));
        }
        match (&self.golden, &self.golden_problem) {
            (_, Some(why)) => out.push_str(&format!("golden: {why}\n")),
            (Some(g), None) => out.push_str(&format!("golden: {g}\n")),
            (None, None) => out.push_str("golden: none (pass --golden FILE to check metrics)\n"),
        }
        let run: Vec<&GraphStagePlan> = self
            .stages
            .iter()
            .filter(|s| matches!(s.action, Some(Action::Run | Action::Refresh)))
            .collect();
        let known: Vec<f64> = run.iter().filter_map(|s| s.last_seconds).collect();
        let blocked = self.stages.iter().filter(|s| s.blocked.is_some()).count();
        out.push_str(&format!("{} stage(s) to run", run.len()));
        if !known.is_empty() {
            out.push_str(&format!(
                "; their last known durations sum to {:.1} s",
                known.iter().sum::<f64>()
            ));
        }
        if blocked > 0 {
            out.push_str(&format!("; {blocked} blocked"));
        }
        out.push('\n');
        out
    }
}

/// What `graph_run::run_graph(suite, registry, opts, gopts)` would do. Like [`plan`], reads stage markers and
/// writes nothing; a stage that cannot run is listed with the reason instead of failing the plan.
pub fn plan_graph(
    suite: &GraphSuite,
    registry: &Registry,
    opts: &RunOptions,
    gopts: &GraphOptions,
) -> Result<GraphPlan, SuiteError> {
    let root = opts.runs_dir.join(&suite.name);
    let cache = StageCache::read_only(&root);
    let refresh = graph_run::refresh_set(suite, opts.refresh, &opts.refresh_stages)?;
    let mut datasets = Vec::new();
    let mut dataset_fps = BTreeMap::new();
    // Synthetic datasets without their own seed are generated at the run seed.
    let run_seed = suite
        .order
        .first()
        .map(|n| graph_run::stage_seed(&suite.stages[n], gopts.seed))
        .unwrap_or(0);
    for (id, spec) in &suite.datasets_at(run_seed) {
        let used = suite.stages.values().any(|s| {
            s.inputs
                .values()
                .any(|r| *r == InputRef::Dataset(id.clone()))
        });
        if !used {
            continue;
        }
        match DatasetHandle::resolve(id, spec.clone(), &gopts.data_dir) {
            Ok(h) => {
                dataset_fps.insert(id.clone(), h.fingerprint);
                datasets.push(GraphDatasetPlan {
                    id: id.clone(),
                    problem: None,
                });
            }
            Err(e) => datasets.push(GraphDatasetPlan {
                id: id.clone(),
                problem: Some(e.to_string()),
            }),
        }
    }
    let fps = graph_run::fingerprints(
        suite,
        registry,
        &dataset_fps,
        &gopts.data_dir,
        gopts.seed,
        opts.device,
    );
    let mut stages: Vec<GraphStagePlan> = Vec::new();
    for name in &suite.order {
        let st = &suite.stages[name];
        let kind = graph_run::stage_kind(registry, st).filter(|_| st.implemented);
        let blocked = if kind.is_none() {
            Some(format!("kind '{}' is not implemented yet", st.kind))
        } else {
            st.inputs.values().find_map(|r| match r {
                InputRef::Dataset(d) if !dataset_fps.contains_key(d) => {
                    Some(format!("dataset '{d}' is not available"))
                }
                InputRef::Stage { stage, .. } if fps[stage].is_none() => {
                    Some(format!("reads from '{stage}', which cannot run"))
                }
                _ => None,
            })
        };
        let (action, last, same) = match (&fps[name], kind, &blocked) {
            (Some(fp), Some(k), None) => {
                let published = cache
                    .lookup(name, fp)
                    .filter(|p| StageCache::verify(p, k.outputs()).is_ok());
                match published {
                    Some(p) if refresh.contains(name) => {
                        (Some(Action::Refresh), Some(p.marker.seconds), true)
                    }
                    Some(p) => (Some(Action::Cached), Some(p.marker.seconds), true),
                    None => (
                        Some(Action::Run),
                        cache.latest_marker(name).map(|m| m.seconds),
                        false,
                    ),
                }
            }
            _ => (None, None, false),
        };
        stages.push(GraphStagePlan {
            stage: name.clone(),
            kind: st.kind.clone(),
            fingerprint: fps[name].clone(),
            action,
            blocked,
            last_seconds: last,
            same_fingerprint: same,
        });
    }
    let golden_path = opts.golden.clone().filter(|_| !opts.skip_golden);
    let golden_problem = golden_path.as_ref().and_then(|p| {
        graph_run::read_golden(suite, registry, p)
            .err()
            .map(|e| format!("{e} (`suite run` stops here)"))
    });
    Ok(GraphPlan {
        suite: suite.name.clone(),
        suite_version: suite.version,
        device_class: device_class(opts.device).into(),
        stage_dir: root,
        stages,
        datasets,
        missing_kinds: graph_run::missing_kinds(suite, registry)
            .into_iter()
            .collect(),
        golden: golden_path.map(|p| display(&p)),
        golden_problem,
        profile: suite.profile.clone(),
        sets: suite.sets.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smoke() -> SuiteConfig {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("suites/smoke.toml");
        super::super::config::load(&p).unwrap().config
    }

    fn names(set: &BTreeSet<String>) -> Vec<&str> {
        set.iter().map(String::as_str).collect()
    }

    #[test]
    fn refresh_takes_the_named_stages_and_everything_downstream() {
        let st = stages(&smoke(), Device::Cpu, None);
        let r = |n: &[&str]| {
            let n: Vec<String> = n.iter().map(|s| s.to_string()).collect();
            refresh_set(&st, false, &n).unwrap()
        };
        assert_eq!(
            names(&r(&["boxes"])),
            ["boxes", "evaluate-oa-crop", "retrain-oa-crop"]
        );
        assert_eq!(names(&r(&["evaluate-vanilla"])), ["evaluate-vanilla"]);
        assert_eq!(r(&["pretrain"]).len(), 5);
        assert_eq!(
            names(&r(&["evaluate-vanilla", "retrain-oa-crop"])),
            ["evaluate-oa-crop", "evaluate-vanilla", "retrain-oa-crop"]
        );
        assert!(r(&[]).is_empty());
        assert_eq!(refresh_set(&st, true, &[]).unwrap().len(), 5);
        let e = refresh_set(&st, false, &["box".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--refresh-stage box")
                && e.contains(
                    "pretrain, evaluate-vanilla, boxes, retrain-oa-crop, evaluate-oa-crop"
                ),
            "{e}"
        );
    }

    #[test]
    fn without_oa_crop_there_are_two_stages() {
        let mut cfg = smoke();
        cfg.retrain.oa_crop = false;
        let st = stages(&cfg, Device::Cpu, None);
        assert_eq!(
            st.iter().map(|s| s.name).collect::<Vec<_>>(),
            ["pretrain", "evaluate-vanilla"]
        );
        assert!(refresh_set(&st, false, &["boxes".into()]).is_err());
    }
}
