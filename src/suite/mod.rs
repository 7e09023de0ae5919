//! Suites: declarative pipelines with stage caching, goldens and reports.
pub mod bypass;
pub mod cache;
pub mod claims;
pub mod compare;
pub mod config;
pub mod dataset;
pub mod executor;
pub mod golden;
pub mod graph;
pub mod graph_run;
pub mod lock;
pub mod pipeline;
pub mod plan;
pub mod profile;

pub mod plots;
pub mod registry;
pub mod regression;
pub mod report;
pub mod stage;
pub mod stages;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use tch::Device;

use cache::{CacheError, LockPolicy, StageCache};
use config::{ConfigError, LoadedSuite};
use golden::{Golden, GoldenError, Verdict};
pub use pipeline::Fault;
use pipeline::{Pipeline, SuiteData};
use report::Results;

#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Golden(#[from] GoldenError),
    #[error(transparent)]
    Graph(#[from] graph_run::GraphRunError),
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
    #[error(transparent)]
    Cam(#[from] crate::localize::CamError),
    #[error(transparent)]
    Eval(#[from] crate::eval::linear::EvalError),
    #[error(transparent)]
    Checkpoint(#[from] crate::model::CheckpointError),
    #[error("{path}: {msg}")]
    Io { path: PathBuf, msg: String },
    #[error("{0}")]
    Other(String),
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stage outputs go to `<runs_dir>/<suite name>/`.
    pub runs_dir: PathBuf,
    pub device: Device,
    /// Recompute every stage.
    pub refresh: bool,
    /// Recompute these stages (names as printed, e.g. `boxes`) and every stage that depends on them; reuse
    /// the others. An unknown name is an error listing the suite's stages.
    pub refresh_stages: Vec<String>,
    pub progress: bool,
    /// Use this golden instead of the suite's.
    pub golden: Option<PathBuf>,
    /// Run without any golden (to produce results for a first blessing).
    pub skip_golden: bool,
    /// What to do when another run holds `<runs_dir>/<suite>`.
    pub lock: LockPolicy,
    /// A deliberate bug, for tests that prove a golden catches a broken pipeline (None in every real run;
    /// the CLI cannot set it). Recorded in the results, part of the affected stages' fingerprints, and a
    /// results file that carries one cannot be blessed.
    pub fault: Option<Fault>,
    /// Also run the seeds the golden's claims need and check the claims (each extra seed is a whole pipeline
    /// run, cached like any other).
    pub claims: bool,
}

/// What `suite validate` checked.
#[derive(Debug, Clone)]
pub struct Validated {
    pub metrics: Vec<String>,
    pub golden: Option<(PathBuf, usize)>,
}

/// Checks a loaded suite and its golden without running anything: the golden reads (finite values,
/// tolerances ≥ 0), is for this suite and version, and names only metrics the suite emits.
pub fn validate(
    suite: &LoadedSuite,
    golden: Option<&std::path::Path>,
) -> Result<Validated, SuiteError> {
    let metrics = pipeline::metric_ids(&suite.config);
    let path = golden.map(PathBuf::from).or_else(|| suite.golden_path());
    let golden = match path {
        None => None,
        Some(p) => {
            let g = Golden::read(&p)?;
            g.check_suite(&p, &suite.config.name, suite.config.version)?;
            for name in g.metrics.keys() {
                if !metrics.contains(name) {
                    return Err(SuiteError::Other(format!(
                        "{}: key 'metrics.\"{name}\"': unknown metric; suite '{}' emits {}",
                        p.display(),
                        suite.config.name,
                        metrics.join(", ")
                    )));
                }
            }
            for (id, c) in &g.claims {
                c.validate(id, &metrics)
                    .map_err(|e| SuiteError::Other(format!("{}: {e}", p.display())))?;
            }
            Some((p, g.metrics.len()))
        }
    };
    Ok(Validated { metrics, golden })
}

/// Runs every stage (reusing finished ones), compares with the golden, and returns the results.
/// The golden is read before any work, so a missing or mismatched golden fails fast.
pub fn run_suite(suite: &LoadedSuite, opts: &RunOptions) -> Result<Results, SuiteError> {
    let started_at = now_utc();
    let start = Instant::now();
    let cfg = &suite.config;
    // Checked before anything else, so a misspelt stage name costs nothing.
    let refresh = plan::refresh_set(
        &plan::stages(cfg, opts.device, opts.fault),
        opts.refresh,
        &opts.refresh_stages,
    )?;
    let golden_path = if opts.skip_golden {
        None
    } else {
        opts.golden.clone().or_else(|| suite.golden_path())
    };
    let golden = match &golden_path {
        Some(p) => {
            validate(suite, Some(p))?;
            Some(Golden::read(p)?)
        }
        None => None,
    };
    let not_checked = match (&golden, &golden_path) {
        (Some(g), Some(p)) => golden::seed_mismatch(g, p, cfg.seed),
        _ => None,
    };
    if let Some(why) = &not_checked {
        eprintln!("NOTE: {why}");
    }
    // The name was checked to be a plain directory name when the suite was loaded; the lock is taken before
    // any work so two runs never build the same stage at once.
    let cache = StageCache::open(&opts.runs_dir.join(&cfg.name), opts.lock)?;
    let (timings, metrics) = run_pipeline(cfg, &cache, opts, &refresh)?;
    let (seed_metrics, claim_checks) = match &golden {
        Some(g) if opts.claims && !g.claims.is_empty() => {
            run_claims(g, cfg, &metrics, &cache, opts, &refresh)?
        }
        _ => (BTreeMap::new(), Vec::new()),
    };
    let checks = match &golden {
        Some(_) if not_checked.is_some() => golden::not_checked(&metrics),
        Some(g) => golden::compare(&metrics, g),
        None => Vec::new(),
    };
    let passed = golden.is_some()
        && not_checked.is_none()
        && checks.iter().all(|c| c.verdict == Verdict::Pass)
        && claim_checks.iter().all(|c| c.verdict == Verdict::Pass);
    let env = crate::util::env_report();
    let loss_curves = plots::loss_curves(&cache, &timings);
    Ok(Results {
        suite: cfg.name.clone(),
        suite_version: cfg.version,
        suite_file: suite.path.display().to_string(),
        seed: cfg.seed,
        seeds: Vec::new(),
        git_hash: env.git_hash.clone(),
        git_dirty: report::git_dirty(),
        env,
        device: crate::device::describe(opts.device),
        started_at,
        total_seconds: start.elapsed().as_secs_f64(),
        config: suite.resolved.clone(),
        stages: timings,
        seed_stages: BTreeMap::new(),
        metrics,
        seed_metrics,
        claims: claim_checks,
        regression: Vec::new(),
        golden_file: golden_path.map(|p| p.display().to_string()),
        checks,
        passed,
        not_checked,
        precision: Some(pipeline::PRECISION.name().into()),
        fault: opts.fault.map(|f| f.name().to_string()),
        paper_cells: Vec::new(),
        profile: None,
        sets: Vec::new(),

        loss_curves,
        bypassed: Vec::new(),
    })
}

/// Generates the suite's data for `cfg.seed` and runs (or reuses) every stage: the stage timings and metrics.
fn run_pipeline(
    cfg: &config::SuiteConfig,
    cache: &StageCache,
    opts: &RunOptions,
    refresh: &std::collections::BTreeSet<String>,
) -> Result<(Vec<report::StageTiming>, BTreeMap<String, f64>), SuiteError> {
    eprintln!("generating synthetic data (seed {})", cfg.seed);
    let data = SuiteData::generate(cfg);
    let mut p = Pipeline {
        cfg,
        data: &data,
        cache,
        refresh: refresh.clone(),
        device: opts.device,
        progress: opts.progress,
        fault: opts.fault,
        timings: Vec::new(),
        metrics: BTreeMap::new(),
    };
    p.run()?;
    Ok((p.timings, p.metrics))
}

/// Runs the pipeline at every seed the golden's claims need (the run's own seed is reused) and checks each
/// claim over its seeds. Returns the other seeds' metrics and the claim checks.
#[allow(clippy::type_complexity)]
fn run_claims(
    g: &Golden,
    cfg: &config::SuiteConfig,
    main: &BTreeMap<String, f64>,
    cache: &StageCache,
    opts: &RunOptions,
    refresh: &std::collections::BTreeSet<String>,
) -> Result<
    (
        BTreeMap<u64, BTreeMap<String, f64>>,
        Vec<claims::ClaimCheck>,
    ),
    SuiteError,
> {
    let mut per_seed = BTreeMap::from([(cfg.seed, main.clone())]);
    for seed in claims::seeds(&g.claims) {
        if per_seed.contains_key(&seed) {
            continue;
        }
        eprintln!("claims: running the pipeline at seed {seed}");
        let mut c = cfg.clone();
        c.seed = seed;
        let (_, metrics) = run_pipeline(&c, cache, opts, refresh)?;
        per_seed.insert(seed, metrics);
    }
    let known = pipeline::metric_ids(cfg);
    let mut checks = Vec::new();
    for (id, claim) in &g.claims {
        let rel = claim.validate(id, &known).map_err(SuiteError::Other)?;
        checks.push(claims::check(id, claim, &rel, &per_seed));
    }
    per_seed.remove(&cfg.seed);
    Ok((per_seed, checks))
}

/// RFC 3339 UTC timestamp without a date-time dependency.
pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
