//! Runs a validated graph suite: resolves its datasets, fingerprints every stage before any work (so a plan
//! predicts the same fingerprints), and runs the stages in graph order through the stage cache: a stage
//! whose fingerprint is published with intact outputs is reused, any other is built in a temporary directory
//! and published atomically. A stage's inputs are the datasets it names and the published output paths of
//! the stages it reads from; its metrics are collected as `<stage>.<metric>`.
//!
//! The fingerprint of a stage is [`cache::fingerprint`] of its kind and kind version, its canonical resolved
//! parameters, its inputs' fingerprints by slot (a dataset's own, or [`cache::artefact_fingerprint`] of the
//! producing stage and slot), the seed, the device class and the precision policy (the code version is
//! added by the cache).
//!
//! Seeds: the first (the run seed) is `--seed`/`--suite-seed` when given, else each stage runs at its first
//! seed (a stage's `seeds`, else the suite's, else 0) and the run seed is the first stage's. `--seeds N` adds
//! the N − 1 following seeds, and the golden's claims add theirs (unless `--no-claims`): the whole graph runs
//! once per seed, every stage at that seed, each seed's synthetic datasets without their own `seed`
//! generated at it, so each seed's stages have their own fingerprints and cache entries. The results keep
//! the run seed's `metrics` and add the other seeds' (`seed_metrics`); the golden's claims and regression
//! records are checked over all of them.
pub mod listing;
mod ranks;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tch::Device;

use super::cache::{self, CacheError, FingerprintInput, Published, StageCache};
use super::claims;
use super::dataset::{index_path, DatasetHandle, DatasetSpec, IndexDataset};
use super::golden::paper::{PaperGoldenError, PaperGoldens};
use super::golden::{self, Golden, GoldenError, Verdict};
use super::graph::{GraphStage, GraphSuite, InputRef};
use super::registry::Registry;
use super::regression::{self, RegressionTest};
use super::report::{PaperCellCheck, Results, StageTiming};
use super::stage::{
    device_class, Artefact, Direction, DynStage, Input, Precision, StageContext, StageError,
};
use super::{Fault, RunOptions};
use crate::util::progress::Mode;

/// The precision policy graph stages compute with (part of every fingerprint, recorded in the results).
pub const PRECISION: Precision = Precision::Fp32;

/// What a graph run needs besides [`RunOptions`].
#[derive(Debug, Clone)]
pub struct GraphOptions {
    /// Where built datasets live (`<data-dir>/<name>/index/<split>.jsonl`).
    pub data_dir: PathBuf,
    /// Run every stage at this seed instead of its own first seed.
    pub seed: Option<u64>,
    /// Run the whole graph at this many consecutive seeds from the run seed (0 or 1: the run seed only).
    pub seeds: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum GraphRunError {
    #[error("{path}: cannot run: stage kinds not implemented yet: {}; nothing was run", missing_list(.missing))]
    MissingKinds {
        path: PathBuf,
        /// Kind → the stages that use it.
        missing: BTreeMap<String, Vec<String>>,
    },
    #[error("{path}: datasets.{dataset}: {msg}")]
    Dataset {
        path: PathBuf,
        dataset: String,
        msg: String,
    },
    #[error("{path}: stage '{stage}' (kind '{kind}') failed, nothing was published: {msg}")]
    Stage {
        path: PathBuf,
        stage: String,
        kind: String,
        msg: String,
    },
    #[error("{path}: stage '{stage}' (kind '{kind}'): published result lacks declared metric '{metric}'")]
    MissingMetric {
        path: PathBuf,
        stage: String,
        kind: String,
        metric: String,
    },
    #[error("--refresh-stage {name}: {path} has no stage of that name; its stages are {stages}")]
    UnknownStage {
        path: PathBuf,
        name: String,
        stages: String,
    },
    #[error(
        "{path}: key 'metrics.\"{metric}\"': not a metric of suite '{suite}'; it emits {known}"
    )]
    GoldenMetric {
        path: PathBuf,
        metric: String,
        suite: String,
        known: String,
    },
    #[error("{path}: no golden/paper directory above it or in the working directory (the paper cells its [[bind]] entries name)")]
    NoPaperGoldens { path: PathBuf },
    #[error("{path}: {msg}")]
    GoldenEntry { path: PathBuf, msg: String },
    #[error("--only {name}: {path} has no stage of that name; its stages are {stages}")]
    OnlyUnknown {
        path: PathBuf,
        name: String,
        stages: String,
    },
    #[error("--only {stage}: it reads from stage '{upstream}', which is not published under {dir} at its current fingerprint; run '{upstream}' first (or run without --only)")]
    UpstreamNotPublished {
        stage: String,
        upstream: String,
        dir: PathBuf,
    },
    #[error("{path}: started as rank {rank} of {world} (torchrun/srun variables): a data-parallel suite run runs one stage, give --only STAGE (as the Slurm executor's multi-task jobs do)")]
    LaunchedWithoutOnly {
        path: PathBuf,
        rank: usize,
        world: usize,
    },
    #[error(transparent)]
    Paper(#[from] PaperGoldenError),
    #[error(transparent)]
    Golden(#[from] GoldenError),
    #[error(transparent)]
    Cache(#[from] CacheError),
}

fn missing_list(m: &BTreeMap<String, Vec<String>>) -> String {
    m.iter()
        .map(|(k, st)| format!("'{k}' (stages {})", st.join(", ")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The implementation of a stage's kind in `registry`, if it has one.
pub fn stage_kind<'r>(registry: &'r Registry, st: &GraphStage) -> Option<&'r dyn DynStage> {
    registry.get(&st.kind).and_then(|k| k.implemented())
}

/// Kind → stages, for every stage whose kind `registry` does not implement.
pub fn missing_kinds(suite: &GraphSuite, registry: &Registry) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in &suite.order {
        let st = &suite.stages[name];
        // A kind validated as planned kept its params as written: it cannot run even if implemented now.
        if !st.implemented || stage_kind(registry, st).is_none() {
            m.entry(st.kind.clone()).or_default().push(name.clone());
        }
    }
    m
}

/// The seed a stage runs at.
pub fn stage_seed(st: &GraphStage, seed: Option<u64>) -> u64 {
    seed.or_else(|| st.seeds.first().copied()).unwrap_or(0)
}

/// Every metric id the suite emits, `<stage>.<metric>`, in stage order (planned kinds' declared metrics too).
pub fn metric_ids(suite: &GraphSuite, registry: &Registry) -> Vec<String> {
    suite
        .order
        .iter()
        .flat_map(|name| {
            let metrics = registry
                .get(&suite.stages[name].kind)
                .map(|k| k.metrics())
                .unwrap_or(&[]);
            metrics.iter().map(move |m| format!("{name}.{}", m.name))
        })
        .collect()
}

/// Fingerprints of every stage, computed before anything runs. `datasets` holds the fingerprints of the
/// datasets that resolved; a stage whose kind is not implemented, whose dataset is missing, or that reads
/// from such a stage has none. Splits a stage reads beside a bound one ([`DynStage::extra_splits`]) add
/// their index files (under `data_dir`) to that input's fingerprint.
pub fn fingerprints(
    suite: &GraphSuite,
    registry: &Registry,
    datasets: &BTreeMap<String, String>,
    data_dir: &Path,
    seed: Option<u64>,
    device: Device,
) -> BTreeMap<String, Option<String>> {
    fingerprints_with_fault(suite, registry, datasets, data_dir, seed, device, None)
}

/// Whether `fault` changes what stage `st` computes: ignoring the boxes breaks a pretrain stage that
/// has boxes bound (OA-Crop retraining), nothing else.
pub fn fault_affects(fault: Option<Fault>, st: &GraphStage) -> bool {
    match fault {
        Some(Fault::RetrainIgnoresBoxes) => {
            st.kind == "pretrain" && st.inputs.contains_key("boxes")
        }
        None => false,
    }
}

/// [`fingerprints`] of a run made with a deliberate `fault`: the stages it breaks (and so everything
/// downstream of them) never share a cache entry with a correct run.
pub fn fingerprints_with_fault(
    suite: &GraphSuite,
    registry: &Registry,
    datasets: &BTreeMap<String, String>,
    data_dir: &Path,
    seed: Option<u64>,
    device: Device,
    fault: Option<Fault>,
) -> BTreeMap<String, Option<String>> {
    let mut fps: BTreeMap<String, Option<String>> = BTreeMap::new();
    for name in &suite.order {
        let st = &suite.stages[name];
        let fp = (|| {
            let kind = stage_kind(registry, st).filter(|_| st.implemented)?;
            let mut inputs: BTreeMap<&str, String> = BTreeMap::new();
            for (slot, r) in &st.inputs {
                let fp = match r {
                    InputRef::Dataset(d) => with_extra_splits(
                        datasets.get(d)?,
                        suite.datasets.get(d)?,
                        &kind.extra_splits(&st.params, slot),
                        data_dir,
                    ),
                    InputRef::Stage { stage, output } => {
                        cache::artefact_fingerprint(fps.get(stage)?.as_deref()?, output)
                    }
                };
                inputs.insert(slot, fp);
            }
            let mut params = st.params.clone();
            if let (Some(f), true) = (fault, fault_affects(fault, st)) {
                params["fault"] = f.name().into();
            }
            Some(cache::fingerprint(&FingerprintInput {
                kind: &st.kind,
                kind_version: kind.version(),
                params: &params,
                inputs: inputs.iter().map(|(k, v)| (*k, v.as_str())).collect(),
                seed: stage_seed(st, seed),
                device_class: device_class(device),
                precision: PRECISION,
            }))
        })();
        fps.insert(name.clone(), fp);
    }
    fps
}

/// A dataset input's fingerprint extended by the index files of the `extra` splits of its build (a split
/// not built yet counts as absent, so building it changes the fingerprint too).
fn with_extra_splits(fp: &str, spec: &DatasetSpec, extra: &[String], data_dir: &Path) -> String {
    let DatasetSpec::Index(i) = spec else {
        return fp.to_string();
    };
    if extra.is_empty() {
        return fp.to_string();
    }
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"contracam-extra-splits-v1\0");
    h.update(fp.as_bytes());
    for split in extra {
        let path = index_path(
            data_dir,
            &IndexDataset {
                name: i.name.clone(),
                split: split.clone(),
                // Only the path is taken from it; the whole index file is hashed.
                limit: None,
            },
        );
        h.update(b"\0split\0");
        h.update(split.as_bytes());
        match std::fs::read(&path) {
            Ok(bytes) => {
                h.update(b"\0index\0");
                h.update(Sha256::digest(&bytes));
            }
            Err(_) => h.update(b"\0absent"),
        }
    }
    hex::encode(h.finalize())
}

/// The stages to recompute: all when `all`, else the named ones and every stage that reads from them,
/// directly or not. An unknown name is an error listing the suite's stages.
pub fn refresh_set(
    suite: &GraphSuite,
    all: bool,
    named: &[String],
) -> Result<BTreeSet<String>, GraphRunError> {
    if all {
        return Ok(suite.order.iter().cloned().collect());
    }
    for n in named {
        if !suite.stages.contains_key(n) {
            return Err(GraphRunError::UnknownStage {
                path: suite.path.clone(),
                name: n.clone(),
                stages: suite.order.join(", "),
            });
        }
    }
    let mut set = BTreeSet::new();
    // In graph order, so a stage's producers are decided before it.
    for name in &suite.order {
        let reads_refreshed = suite.stages[name].inputs.values().any(|r| match r {
            InputRef::Stage { stage, .. } => set.contains(stage),
            InputRef::Dataset(_) => false,
        });
        if reads_refreshed || named.contains(name) {
            set.insert(name.clone());
        }
    }
    Ok(set)
}

/// Resolves the datasets the stages read (declared but unused ones are not needed) for a run at
/// `run_seed` (see [`GraphSuite::datasets_at`]). A split that is not built is an error naming the dataset
/// and the `data build` command.
pub fn resolve_datasets(
    suite: &GraphSuite,
    data_dir: &Path,
    run_seed: u64,
) -> Result<BTreeMap<String, Arc<DatasetHandle>>, GraphRunError> {
    let used: BTreeSet<&str> = suite
        .stages
        .values()
        .flat_map(|s| s.inputs.values())
        .filter_map(|r| match r {
            InputRef::Dataset(d) => Some(d.as_str()),
            InputRef::Stage { .. } => None,
        })
        .collect();
    let specs = suite.datasets_at(run_seed);
    let mut out = BTreeMap::new();
    for id in used {
        let spec = specs[id].clone();
        let h = DatasetHandle::resolve(id, spec, data_dir).map_err(|e| GraphRunError::Dataset {
            path: suite.path.clone(),
            dataset: id.into(),
            msg: e.to_string(),
        })?;
        out.insert(id.to_string(), Arc::new(h));
    }
    Ok(out)
}

/// The direction of metric `<stage>.<metric>` as its stage kind declares it (None: not a metric of the suite).
pub fn metric_direction(suite: &GraphSuite, registry: &Registry, id: &str) -> Option<Direction> {
    let (stage, name) = id.split_once('.')?;
    let kind = registry.get(&suite.stages.get(stage)?.kind)?;
    kind.metrics()
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.direction)
}

/// Reads the golden a graph run checks (`--golden FILE`, the usual golden format with metric ids
/// `<stage>.<metric>`): it must be for this suite and version and name only metrics the suite emits, in
/// its metrics, claims and regression records; a "not-worse" record needs a metric with a better side.
pub fn read_golden(
    suite: &GraphSuite,
    registry: &Registry,
    path: &Path,
) -> Result<Golden, GraphRunError> {
    let g = Golden::read(path)?;
    g.check_suite(path, &suite.name, suite.version)?;
    g.check_profile(path, &suite.profile)?;
    let known = metric_ids(suite, registry);
    for name in g.metrics.keys() {
        if !known.contains(name) {
            return Err(GraphRunError::GoldenMetric {
                path: path.into(),
                metric: name.clone(),
                suite: suite.name.clone(),
                known: known.join(", "),
            });
        }
    }
    let entry = |msg: String| GraphRunError::GoldenEntry {
        path: path.into(),
        msg,
    };
    for (id, c) in &g.claims {
        c.validate(id, &known).map_err(entry)?;
    }
    for (id, r) in &g.regression {
        let key = format!("key 'regression.\"{id}\"'");
        let Some(dir) = metric_direction(suite, registry, id) else {
            return Err(entry(format!(
                "{key}: not a metric of suite '{}'; it emits {}",
                suite.name,
                known.join(", ")
            )));
        };
        if r.test == RegressionTest::NotWorse && dir == Direction::Neutral {
            return Err(entry(format!(
                "{key}.test: \"not-worse\" needs a metric with a better side; {id} has none \
                 (use \"reproduces\")"
            )));
        }
    }
    Ok(g)
}

/// The paper goldens of the repository holding the suite (else of the working directory).
pub fn paper_goldens(suite: &GraphSuite) -> Result<PaperGoldens, GraphRunError> {
    let dir = golden::paper::find_dir(&suite.path)
        .or_else(|| golden::paper::find_dir(Path::new(".")))
        .ok_or_else(|| GraphRunError::NoPaperGoldens {
            path: suite.path.clone(),
        })?;
    Ok(PaperGoldens::load_dir(&dir)?)
}

/// Each `[[bind]]` cell beside what this run measured: with several seeds the mean over them (the paper's
/// Tables 7 and 8 print mean ± std over trials) and its sample std. Information only: the paper's
/// tolerances are provisional (no seed spread is printed for most cells) and reduced profiles are not
/// expected to meet them.
pub fn paper_cells(
    suite: &GraphSuite,
    paper: &PaperGoldens,
    per_seed: &BTreeMap<u64, BTreeMap<String, f64>>,
) -> Vec<PaperCellCheck> {
    suite
        .binds
        .iter()
        .filter_map(|b| {
            let cell = paper.cell(b.table, &b.row, &b.column)?;
            let metric = format!("{}.{}", b.stage, b.metric);
            let values: Option<Vec<f64>> =
                per_seed.values().map(|m| m.get(&metric).copied()).collect();
            let (value, run_std) = match values.as_deref() {
                None | Some([]) => (None, None),
                Some([v]) => (Some(*v), None),
                Some(vs) => {
                    let s = regression::summary(vs);
                    (Some(s.mean), Some(s.std))
                }
            };
            Some(PaperCellCheck {
                table: b.table,
                row: b.row.clone(),
                column: b.column.clone(),
                metric,
                value,
                paper: cell.value,
                std: cell.std,
                tolerance: cell.tolerance,
                within: value.map(|v| cell.admits(v)),
                run_std,
                seeds: per_seed.len(),
            })
        })
        .collect()
}

/// Runs `suite` with the stage kinds of `registry`. Everything that can be refused is refused before any
/// stage runs: kinds not implemented, an unknown `--refresh-stage`, a golden that does not fit, a dataset
/// that is not built, a runs dir held by another run (per `opts.lock`).
pub fn run_graph(
    suite: &GraphSuite,
    registry: &Registry,
    opts: &RunOptions,
    gopts: &GraphOptions,
) -> Result<Results, GraphRunError> {
    run_graph_stages(suite, registry, opts, gopts, None)
}

/// Runs stage `only` of `suite` and nothing else (one job of a scheduler, see [`super::executor`]): the
/// stages it reads from, directly or not, must already be published at their current fingerprints, else
/// [`GraphRunError::UpstreamNotPublished`] names the first one missing. The results hold its metrics only.
pub fn run_graph_only(
    suite: &GraphSuite,
    registry: &Registry,
    opts: &RunOptions,
    gopts: &GraphOptions,
    only: &str,
) -> Result<Results, GraphRunError> {
    run_graph_only_at(suite, registry, opts, gopts, only, None)
}

/// [`run_graph_only`] in the pass of seed `seed` (a seed of `--seeds`/the claims; what one Slurm array
/// task runs): the run seed's pass when `seed` is the run seed or None, else every stage at `seed` with
/// that seed's datasets, as the local runner's pass of that seed.
pub fn run_graph_only_at(
    suite: &GraphSuite,
    registry: &Registry,
    opts: &RunOptions,
    gopts: &GraphOptions,
    only: &str,
    seed: Option<u64>,
) -> Result<Results, GraphRunError> {
    if !suite.stages.contains_key(only) {
        return Err(GraphRunError::OnlyUnknown {
            path: suite.path.clone(),
            name: only.into(),
            stages: suite.order.join(", "),
        });
    }
    run_graph_stages(suite, registry, opts, gopts, Some((only, seed)))
}

/// The stages `stage` reads from, directly or not.
pub fn upstream_of(suite: &GraphSuite, stage: &str) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    let mut todo = vec![stage.to_string()];
    while let Some(s) = todo.pop() {
        for r in suite.stages[&s].inputs.values() {
            if let InputRef::Stage { stage: up, .. } = r {
                if set.insert(up.clone()) {
                    todo.push(up.clone());
                }
            }
        }
    }
    set
}

/// The run's seeds, the run seed first: `--seeds N` adds the N − 1 seeds after it, the claims theirs.
pub fn run_seeds(run_seed: u64, count: usize, golden: Option<&Golden>) -> Vec<u64> {
    let mut seeds: Vec<u64> = (0..count.max(1) as u64)
        .map(|i| run_seed.saturating_add(i))
        .collect();
    for s in golden.map(|g| claims::seeds(&g.claims)).unwrap_or_default() {
        if !seeds.contains(&s) {
            seeds.push(s);
        }
    }
    seeds
}

/// What one seed's pass over the graph produced.
struct SeedPass {
    timings: Vec<StageTiming>,
    metrics: BTreeMap<String, f64>,
}

fn run_graph_stages(
    suite: &GraphSuite,
    registry: &Registry,
    opts: &RunOptions,
    gopts: &GraphOptions,
    only_at: Option<(&str, Option<u64>)>,
) -> Result<Results, GraphRunError> {
    let only = only_at.map(|(o, _)| o);
    let started_at = super::now_utc();
    let start = Instant::now();
    let missing = missing_kinds(suite, registry);
    if !missing.is_empty() {
        return Err(GraphRunError::MissingKinds {
            path: suite.path.clone(),
            missing,
        });
    }
    let refresh = refresh_set(suite, opts.refresh, &opts.refresh_stages)?;
    let golden_path = opts
        .golden
        .clone()
        .or_else(|| suite.golden.clone())
        .filter(|_| !opts.skip_golden);
    let golden = match &golden_path {
        Some(p) => Some(read_golden(suite, registry, p)?),
        None => None,
    };
    let paper = if suite.binds.is_empty() {
        None
    } else {
        Some(paper_goldens(suite)?)
    };
    let run_seed = suite
        .order
        .first()
        .map(|n| stage_seed(&suite.stages[n], gopts.seed))
        .unwrap_or(0);
    // --only is one job of one seed: the extra seeds are the local pass's business (or other array tasks).
    let seeds = match only_at {
        Some((_, seed)) => vec![seed.unwrap_or(run_seed)],
        None => run_seeds(
            run_seed,
            gopts.seeds,
            golden.as_ref().filter(|_| opts.claims),
        ),
    };
    // Every seed's datasets resolve before any stage runs.
    let mut datasets = Vec::new();
    for &seed in &seeds {
        datasets.push(resolve_datasets(suite, &gopts.data_dir, seed)?);
    }
    let not_checked = match (&golden, &golden_path) {
        (Some(g), Some(p)) => golden::seed_mismatch(g, p, run_seed),
        _ => None,
    };
    if let Some(why) = &not_checked {
        eprintln!("NOTE: {why}");
    }
    let follower = ranks::follower(suite, only)?;
    let root = opts.runs_dir.join(&suite.name);
    let cache = match (&follower, only) {
        (Some(_), _) => StageCache::read_only(&root),
        // One stage: its build lock is enough, so the jobs and array tasks of a run build side by side.
        (None, Some(_)) => StageCache::shared(&root)?,
        (None, None) => StageCache::open(&root, opts.lock)?,
    };
    let build_cache = follower.as_ref().map(|f| StageCache::read_only(f.path()));
    let mode = if opts.progress {
        Mode::detect(false)
    } else {
        Mode::Hidden
    };
    let mut passes: Vec<SeedPass> = Vec::new();
    for (i, (&seed, datasets)) in seeds.iter().zip(&datasets).enumerate() {
        // The run seed keeps each stage's own seed unless overridden; the others run every stage at theirs.
        let over = if seed == run_seed {
            gopts.seed
        } else {
            Some(seed)
        };
        if seeds.len() > 1 {
            eprintln!("seed {seed} ({} of {})", i + 1, seeds.len());
        }
        let dataset_fps = datasets
            .iter()
            .map(|(k, h)| (k.clone(), h.fingerprint.clone()))
            .collect();
        let fps = fingerprints_with_fault(
            suite,
            registry,
            &dataset_fps,
            &gopts.data_dir,
            over,
            opts.device,
            opts.fault,
        );
        let runner = Runner {
            suite,
            registry,
            cache: &cache,
            store: build_cache.as_ref().unwrap_or(&cache),
            datasets,
            fps: &fps,
            device: opts.device,
            data_dir: &gopts.data_dir,
            seed: over,
            mode,
            fault: opts.fault,
        };
        passes.push(runner.pass(&refresh, only)?);
    }
    let per_seed: BTreeMap<u64, BTreeMap<String, f64>> = seeds
        .iter()
        .zip(&passes)
        .map(|(s, p)| (*s, p.metrics.clone()))
        .collect();
    let mut passes = passes.into_iter();
    let first = passes.next().unwrap_or(SeedPass {
        timings: Vec::new(),
        metrics: BTreeMap::new(),
    });
    let metrics = first.metrics;
    let seed_stages: BTreeMap<u64, Vec<StageTiming>> = seeds[1..]
        .iter()
        .copied()
        .zip(passes.map(|p| p.timings))
        .collect();
    let claim_checks = match &golden {
        Some(g) if opts.claims => check_claims(suite, registry, g, &per_seed)?,
        _ => Vec::new(),
    };
    let regression_checks = match &golden {
        Some(g) => g
            .regression
            .iter()
            .map(|(id, r)| {
                let dir = metric_direction(suite, registry, id).unwrap_or(Direction::Neutral);
                let values: Vec<(u64, Option<f64>)> = per_seed
                    .iter()
                    .map(|(s, m)| (*s, m.get(id).copied()))
                    .collect();
                regression::check(id, r, dir, &values)
            })
            .collect(),
        None => Vec::new(),
    };
    // A metric judged by a regression record alone needs no point golden.
    let point_metrics: BTreeMap<String, f64> = metrics
        .iter()
        .filter(|(k, _)| {
            golden
                .as_ref()
                .is_none_or(|g| g.metrics.contains_key(*k) || !g.regression.contains_key(*k))
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let checks = match &golden {
        Some(_) if not_checked.is_some() => golden::not_checked(&point_metrics),
        Some(g) => golden::compare(&point_metrics, g),
        None => Vec::new(),
    };
    let passed = golden.is_some()
        && not_checked.is_none()
        && checks.iter().all(|c| c.verdict == Verdict::Pass)
        && claim_checks.iter().all(|c| c.verdict == Verdict::Pass)
        && regression_checks.iter().all(|c| c.verdict == Verdict::Pass);
    let paper_cells = paper
        .map(|p| paper_cells(suite, &p, &per_seed))
        .unwrap_or_default();
    let mut seed_metrics = per_seed;
    seed_metrics.remove(&run_seed);
    // The suite as run: the profile and the --set overrides applied.
    let config = suite.config.clone();
    let env = crate::util::env_report();
    let loss_curves = super::plots::loss_curves(&cache, &first.timings);
    Ok(Results {
        suite: suite.name.clone(),
        suite_version: suite.version,
        suite_file: suite.path.display().to_string(),
        seed: run_seed,
        seeds: if seeds.len() > 1 { seeds } else { Vec::new() },
        git_hash: env.git_hash.clone(),
        git_dirty: super::report::git_dirty(),
        env,
        device: crate::device::describe(opts.device),
        started_at,
        total_seconds: start.elapsed().as_secs_f64(),
        config,
        stages: first.timings,
        seed_stages,
        metrics,
        seed_metrics,
        claims: claim_checks,
        regression: regression_checks,
        golden_file: golden_path.map(|p| p.display().to_string()),
        checks,
        passed,
        not_checked,
        precision: Some(PRECISION.name().into()),
        fault: opts.fault.map(|f| f.name().to_string()),
        paper_cells,
        profile: Some(suite.profile.clone()),
        sets: suite.sets.clone(),

        loss_curves,
        bypassed: Vec::new(),
    })
}

/// Checks every claim of `g` over the run's seeds (a claim seed the run lacks makes it MISSING).
pub fn check_claims(
    suite: &GraphSuite,
    registry: &Registry,
    g: &Golden,
    per_seed: &BTreeMap<u64, BTreeMap<String, f64>>,
) -> Result<Vec<claims::ClaimCheck>, GraphRunError> {
    let known = metric_ids(suite, registry);
    g.claims
        .iter()
        .map(|(id, claim)| {
            let rel = claim
                .validate(id, &known)
                .map_err(|msg| GraphRunError::GoldenEntry {
                    path: suite.path.clone(),
                    msg,
                })?;
            Ok(claims::check(id, claim, &rel, per_seed))
        })
        .collect()
}

/// What every stage of one run shares.
struct Runner<'a> {
    suite: &'a GraphSuite,
    registry: &'a Registry,
    cache: &'a StageCache,
    /// Where built stages are published: `cache`, or a data-parallel follower's private directory.
    store: &'a StageCache,
    datasets: &'a BTreeMap<String, Arc<DatasetHandle>>,
    fps: &'a BTreeMap<String, Option<String>>,
    device: Device,
    data_dir: &'a Path,
    seed: Option<u64>,
    mode: Mode,
    fault: Option<Fault>,
}

impl Runner<'_> {
    /// One pass over the graph in order (with `only`: that stage, its upstream looked up, never built).
    fn pass(
        &self,
        refresh: &BTreeSet<String>,
        only: Option<&str>,
    ) -> Result<SeedPass, GraphRunError> {
        let suite = self.suite;
        let mut published: BTreeMap<String, Published> = BTreeMap::new();
        let mut timings = Vec::new();
        let mut metrics = BTreeMap::new();
        let upstream = only.map(|o| upstream_of(suite, o));
        for (i, name) in suite.order.iter().enumerate() {
            if let (Some(o), Some(up)) = (only, &upstream) {
                if name != o {
                    if up.contains(name) {
                        published.insert(name.clone(), self.upstream(o, name)?);
                    }
                    continue;
                }
            }
            let (p, timing) = self.stage(i + 1, name, refresh.contains(name), &published)?;
            let kind = stage_kind(self.registry, &suite.stages[name]).map(|k| k.metrics());
            for m in kind.unwrap_or(&[]) {
                if let Some(v) = p.result.metrics.get(m.name) {
                    metrics.insert(format!("{name}.{}", m.name), *v);
                }
            }
            timings.push(timing);
            published.insert(name.clone(), p);
        }
        Ok(SeedPass { timings, metrics })
    }

    fn stage_error(&self, name: &str, kind: &str, msg: String) -> GraphRunError {
        GraphRunError::Stage {
            path: self.suite.path.clone(),
            stage: name.into(),
            kind: kind.into(),
            msg,
        }
    }

    /// Reuses or builds stage number `n`; prints `[stage N] name (fp)` as it starts and `[stage N] name:
    /// cached|done in S s` once it is published (the lines `tests/suite_kill.rs`-style tests wait for).
    fn stage(
        &self,
        n: usize,
        name: &str,
        refresh: bool,
        published: &BTreeMap<String, Published>,
    ) -> Result<(Published, StageTiming), GraphRunError> {
        let st = &self.suite.stages[name];
        let err = |msg: String| self.stage_error(name, &st.kind, msg);
        let kind =
            stage_kind(self.registry, st).ok_or_else(|| err("kind not implemented".into()))?;
        let fp = self.fps[name]
            .clone()
            .ok_or_else(|| err("no fingerprint (an input did not resolve)".into()))?;
        let start = Instant::now();
        eprintln!("[stage {n}] {name} ({})", &fp[..12]);
        let inputs = self.inputs(st, published)?;
        let cached = if refresh {
            None
        } else {
            self.cache.lookup_verified(name, &fp, kind.outputs())
        };
        let mut was_cached = cached.is_some();
        let out = match cached {
            Some(p) => {
                // A published result lacking a declared metric cannot come from this kind version.
                if let Some(m) = kind.metrics().iter().find(|m| {
                    !p.result.metrics.contains_key(m.name)
                        && !kind.optional_metrics().contains(&m.name)
                }) {
                    return Err(GraphRunError::MissingMetric {
                        path: self.suite.path.clone(),
                        stage: name.into(),
                        kind: st.kind.clone(),
                        metric: m.name.into(),
                    });
                }
                p
            }
            None => {
                let (p, reused) = self.build(name, st, kind, &fp, &inputs, !refresh)?;
                // Another process built it while this one waited for the build lock.
                was_cached = reused;
                p
            }
        };
        let seconds = start.elapsed().as_secs_f64();
        eprintln!(
            "[stage {n}] {name}: {} in {seconds:.1} s",
            if was_cached { "cached" } else { "done" }
        );
        Ok((
            out,
            StageTiming {
                stage: name.into(),
                fingerprint: fp,
                cached: was_cached,
                seconds,
            },
        ))
    }

    /// The published output of `name`, a stage `only` reads from (for `--only`).
    fn upstream(&self, only: &str, name: &str) -> Result<Published, GraphRunError> {
        let missing = || GraphRunError::UpstreamNotPublished {
            stage: only.into(),
            upstream: name.into(),
            dir: self.cache.root.clone(),
        };
        let kind = stage_kind(self.registry, &self.suite.stages[name]).ok_or_else(missing)?;
        let fp = self.fps[name].as_deref().ok_or_else(missing)?;
        self.cache
            .lookup_verified(name, fp, kind.outputs())
            .ok_or_else(missing)
    }

    /// Binds each input slot: a dataset handle, or the producing stage's published output.
    fn inputs(
        &self,
        st: &GraphStage,
        published: &BTreeMap<String, Published>,
    ) -> Result<BTreeMap<String, Input>, GraphRunError> {
        let mut inputs = BTreeMap::new();
        for (slot, r) in &st.inputs {
            let input = match r {
                InputRef::Dataset(d) => Input::Dataset(self.datasets[d].clone()),
                InputRef::Stage { stage, output } => {
                    let producer = &self.suite.stages[stage];
                    let p = &published[stage];
                    let out_slot = stage_kind(self.registry, producer)
                        .and_then(|k| k.outputs().iter().find(|o| o.name == output))
                        .ok_or_else(|| {
                            self.stage_error(
                                stage,
                                &producer.kind,
                                format!("has no output '{output}'"),
                            )
                        })?;
                    let producer_fp = self.fps[stage].as_deref().unwrap_or_default();
                    Input::Artefact(Artefact {
                        kind: out_slot.kind,
                        path: p.dir.join(out_slot.file),
                        fingerprint: cache::artefact_fingerprint(producer_fp, output),
                        producer: format!("{stage}.{output}"),
                    })
                }
            };
            inputs.insert(slot.clone(), input);
        }
        Ok(inputs)
    }

    /// Runs the kind into a temporary directory and publishes it, under the fingerprint's build lock
    /// (with `reuse`, what a concurrent builder published meanwhile is returned, flagged true); a declared
    /// metric it did not emit fails the stage before anything is published (one it did not declare is
    /// refused by the cache).
    fn build(
        &self,
        name: &str,
        st: &GraphStage,
        kind: &dyn DynStage,
        fp: &str,
        inputs: &BTreeMap<String, Input>,
        reuse: bool,
    ) -> Result<(Published, bool), GraphRunError> {
        let metric_names: Vec<&str> = kind.metrics().iter().map(|m| m.name).collect();
        let threads = usize::try_from(tch::get_num_threads()).unwrap_or(1);
        let seed = stage_seed(st, self.seed);
        let built = self.store.build_locked(
            name,
            &st.kind,
            fp,
            kind.outputs(),
            &metric_names,
            reuse,
            |dir| {
                let mut ctx = StageContext {
                    stage: name,
                    out_dir: dir,
                    outputs: kind.outputs(),
                    inputs,
                    seed,
                    device: self.device,
                    precision: PRECISION,
                    data_dir: self.data_dir,
                    threads,
                    progress: self.mode,
                    fault: self.fault.filter(|_| fault_affects(self.fault, st)),
                };
                let result = kind.run(&st.params, &mut ctx)?;
                if let Some(m) = metric_names.iter().find(|m| {
                    !result.metrics.contains_key(**m) && !kind.optional_metrics().contains(*m)
                }) {
                    return Err(StageError::Failed(format!(
                        "declared metric '{m}' was not emitted"
                    )));
                }
                Ok(result)
            },
        );
        built.map_err(|e| match e {
            CacheError::Stage { source, .. } => {
                self.stage_error(name, &st.kind, source.to_string())
            }
            CacheError::InvalidOutput { msg, .. } => {
                self.stage_error(name, &st.kind, format!("invalid output: {msg}"))
            }
            other => GraphRunError::Cache(other),
        })
    }
}
