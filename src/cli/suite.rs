//! `contracam suite ...`
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use contracam::suite::cache::LockPolicy;
use contracam::suite::golden::bless::{bless_file, BlessOptions};
use contracam::suite::{config, plots, report, run_suite, RunOptions};

use super::{DeviceArg, GlobalArgs, QuietArg, SeedArg, ThreadsArg};

mod executor;

// Parsed once per process: the size of the largest variant (the run options) costs nothing, and boxing
// it would only add indirection to every match.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum SuiteCommand {
    /// Run a suite (reusing finished stages), compare every metric with its golden, print the table and
    /// write results JSON. Exits 1 when a metric is outside its tolerance or has no golden. A graph suite
    /// (with [stages]) runs its stage graph, once per seed (--seeds, the golden's claims): metrics are
    /// <stage>.<metric>, checked only against --golden (its metrics, claims and regression records);
    /// the paper cells its [[bind]] entries name are reported beside the values, not judged; a suite naming
    /// kinds not implemented yet is refused before any work.
    Run(RunArgs),
    /// Write a golden from a results JSON: an explicit act that records who, when and from what. Existing
    /// tolerances, reasons and the note are kept; new metrics need --default-tolerance; the golden must be
    /// for the results' suite and version; the file is replaced atomically. --regression writes regression
    /// records (per-seed values, mean, std) from a results JSON of 3 seeds or more instead.
    Bless(BlessArgs),
    /// Check a suite and its golden without running anything: the config, the golden's suite and version,
    /// its tolerances, and that it names only metrics the suite emits. Exits 2 with the file and key at fault.
    Validate(ValidateArgs),
    /// Render a results JSON as Markdown (for a person), JSON or JUnit XML (for CI).
    Report(ReportArgs),
    /// Show what `suite run` would do, without doing it: each stage in order with its fingerprint, whether
    /// it is cached or runs, and its last duration; then the seeds the golden's claims add. Takes no lock.
    /// For a graph suite, stages that cannot run yet are listed as blocked, with why (kind not implemented,
    /// dataset not built).
    Plan(PlanArgs),
    /// Compare two results JSONs metric by metric: both values, Δ = new − base, and a verdict (same, within
    /// tolerance, changed, missing on one side). Exits 1 when a metric changed beyond its tolerance (0
    /// without --tolerance-from) or is missing on one side.
    Compare(CompareArgs),
    /// List the suite files under a folder: each one's form (smoke or graph), its stages, the datasets it
    /// needs and whether each is built under --data-dir, and the stage kinds it still misses.
    Ls(LsArgs),
    /// Where each stage's latest Slurm job is (`suite run --executor slurm`; with several seeds, each
    /// seed's latest array task, job ID_INDEX): pending, running, done or failed, from the job's exit status
    /// file, squeue, else sacct; with its job id and log. Exits 1 when a stage's latest job failed.
    Status(executor::StatusArgs),
}

/// Where built datasets live, for graph suites (`[datasets.*] manifest = ...`).
#[derive(Debug, Clone, clap::Args)]
pub struct DataDirArg {
    /// Where built datasets live, for graph suites (default $CONTRACAM_DATA, else $XDG_CACHE_HOME/contracam,
    /// else ~/.cache/contracam).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl DataDirArg {
    fn resolve(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(contracam::data::source::store::default_data_dir)
    }
}

/// Which scale of a graph suite to run: a profile and `--set` overrides.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ProfileArg {
    /// Graph suites: apply this profile (`[profiles.<name>]` of the file, e.g. ci); default `paper`, the
    /// file as written. Recorded in the results, reports and goldens blessed from them.
    #[arg(long, value_name = "P")]
    pub profile: Option<String>,
    /// Graph suites: set one key of the suite after the profile to a TOML value, e.g.
    /// `--set stages.moco_imagenet.params.sha256=ab12…` or `--set stages.x.params.epochs=2` (repeatable;
    /// unquoted text that is no TOML value is a string). Recorded in the results.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

impl ProfileArg {
    pub fn selection(&self) -> contracam::suite::graph::Selection {
        contracam::suite::graph::Selection {
            profile: self.profile.clone(),
            sets: self.sets.clone(),
        }
    }

    /// The smoke form has no profiles: refuse the flags rather than ignore them.
    fn refuse_on_smoke(&self, suite: &std::path::Path) -> anyhow::Result<()> {
        if self.profile.is_some() || !self.sets.is_empty() {
            anyhow::bail!(
                "{}: --profile and --set apply to graph suites (with [stages]); this is the smoke form",
                suite.display()
            );
        }
        Ok(())
    }
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Folder of suite files (searched recursively for *.toml).
    #[arg(default_value = "suites")]
    pub dir: PathBuf,
    /// Print the listing as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub data_dir: DataDirArg,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Suite file (TOML).
    pub suite: PathBuf,
    /// Where stage outputs are cached (one folder per suite).
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Plan with this golden (for its claims) instead of the suite's.
    #[arg(long)]
    pub golden: Option<PathBuf>,
    /// Plan a run without any golden (so without claims).
    #[arg(long, conflicts_with = "golden")]
    pub no_golden: bool,
    /// Plan a run that skips the golden's claims.
    #[arg(long)]
    pub no_claims: bool,
    /// Plan a run that recomputes every stage.
    #[arg(long)]
    pub refresh: bool,
    /// Plan a run that recomputes this stage and every stage depending on it (repeatable).
    #[arg(long, value_name = "STAGE")]
    pub refresh_stage: Vec<String>,
    /// Plan a run at this seed instead of the suite's.
    #[arg(long)]
    pub suite_seed: Option<u64>,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub profile: ProfileArg,
    #[command(flatten)]
    pub data_dir: DataDirArg,
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub seed: SeedArg,
}

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// Results JSON to compare against.
    pub base: PathBuf,
    /// Results JSON to judge.
    pub new: PathBuf,
    /// Allow each metric to move by its tolerance in this golden (metrics it lacks must be identical).
    #[arg(long, value_name = "GOLDEN")]
    pub tolerance_from: Option<PathBuf>,
    /// Print the comparison as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Suite file (TOML).
    pub suite: PathBuf,
    /// Check this golden instead of the suite's.
    #[arg(long)]
    pub golden: Option<PathBuf>,
    /// Graph suites: check this profile only (default: the file as written and every profile it defines).
    #[arg(long, value_name = "P")]
    pub profile: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ReportFormat {
    Md,
    Json,
    Junit,
}

impl From<ReportFormat> for report::Format {
    fn from(f: ReportFormat) -> Self {
        match f {
            ReportFormat::Md => report::Format::Markdown,
            ReportFormat::Json => report::Format::Json,
            ReportFormat::Junit => report::Format::Junit,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Results JSON written by `suite run`.
    pub results: PathBuf,
    /// md: metric, value, golden, tolerance, Δ, verdict and the environment; junit: one testcase per golden
    /// check, failures with the numbers; json: the results file itself.
    #[arg(long, value_enum, default_value = "md")]
    pub format: ReportFormat,
    /// Write here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write PNG plots into this folder (a training-loss curve per training stage, a value-vs-golden
    /// bar with the tolerance band per golden check); the Markdown report links them.
    #[arg(long, value_name = "DIR")]
    pub plots: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Suite file (TOML).
    pub suite: PathBuf,
    /// Where stage outputs are cached (one folder per suite).
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Results JSON path (default: <runs-dir>/<suite>/results.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Compare with this golden instead of the suite's.
    #[arg(long)]
    pub golden: Option<PathBuf>,
    /// Accept the failure of this golden check (a metric, a claim id or a regression record's metric):
    /// its verdict becomes BYPASSED and the run passes if nothing else failed. Needs --reason; recorded in
    /// the results and reports. Repeatable
    #[arg(long, value_name = "ID", requires = "reason")]
    pub allow_fail: Vec<String>,
    /// Why the --allow-fail checks are accepted (recorded with each).
    #[arg(long, value_name = "TEXT", requires = "allow_fail")]
    pub reason: Option<String>,
    /// Run without comparing to any golden (exit 0 when the pipeline completes); for a first blessing.
    #[arg(long, conflicts_with = "golden")]
    pub no_golden: bool,
    /// Recompute every stage even when cached.
    #[arg(long)]
    pub refresh: bool,
    /// Recompute this stage (a name as printed, e.g. boxes) and every stage that depends on it; reuse the
    /// others (repeatable).
    #[arg(long, value_name = "STAGE")]
    pub refresh_stage: Vec<String>,
    /// Also write a JUnit XML report here (one testcase per golden check).
    #[arg(long, value_name = "J.xml")]
    pub junit: Option<PathBuf>,
    /// Also write a Markdown report here (metrics with golden, tolerance, Δ and verdict; environment).
    #[arg(long, value_name = "R.md")]
    pub report: Option<PathBuf>,
    /// Also write PNG plots into this folder (a training-loss curve per training stage, a value-vs-golden
    /// bar with the tolerance band per golden check); --report links them.
    #[arg(long, value_name = "DIR")]
    pub plots: Option<PathBuf>,
    /// When another run holds this suite's folder in --runs-dir: exit with an error instead of waiting for it.
    #[arg(long)]
    pub no_wait: bool,
    /// Skip the golden's claims: the seeds they need besides the suite's are not run, and no claim is
    /// checked (by default they are: each extra seed is a whole pipeline run, cached like any other).
    #[arg(long)]
    pub no_claims: bool,
    /// Override the suite's seed. A golden blessed at another seed is then not checked: the metrics are
    /// reported as "not checked" and the run exits 0 (1 when --golden names that golden explicitly).
    #[arg(long)]
    pub suite_seed: Option<u64>,
    /// Graph suites: run the whole graph at N consecutive seeds from the run seed (each seed's stages cached
    /// under their own fingerprints, synthetic datasets without a `seed` generated at it); the results keep
    /// the run seed's metrics and add the others', reports show mean ± std over the seeds.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub seeds: u64,
    #[command(flatten)]
    pub profile: ProfileArg,
    #[command(flatten)]
    pub data_dir: DataDirArg,
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub seed: SeedArg,
    #[command(flatten)]
    pub threads: ThreadsArg,
    #[command(flatten)]
    pub quiet: QuietArg,
    #[command(flatten)]
    pub executor: executor::ExecutorArgs,
}

#[derive(Debug, clap::Args)]
pub struct BlessArgs {
    /// Results JSON written by `suite run`.
    #[arg(long)]
    pub results: PathBuf,
    /// Golden file to write (created or updated).
    #[arg(long)]
    pub golden: PathBuf,
    /// Tolerance for metrics the golden does not have yet.
    #[arg(long)]
    pub default_tolerance: Option<f64>,
    /// Who blesses (default: $USER).
    #[arg(long)]
    pub by: Option<String>,
    /// Free-text note recorded in the provenance (machine details, why re-blessed); replaces the golden's
    /// note. Without it the existing note is kept.
    #[arg(long)]
    pub note: Option<String>,
    /// Remove this metric from the golden (repeatable). A golden metric the results lack is otherwise kept
    /// with its old value and listed.
    #[arg(long, value_name = "METRIC")]
    pub drop: Vec<String>,
    /// Write regression records ([regression."<metric>"]: per-seed values, mean, std, olympic mean from 5
    /// seeds) from a results JSON of at least 3 seeds (`suite run --seeds 3`), instead of point values. The
    /// golden's metrics, claims and provenance are kept; each record carries its own provenance.
    #[arg(long, conflicts_with_all = ["default_tolerance", "drop", "note"])]
    pub regression: bool,
    /// With --regression: the test a later run must pass (two-sided reproduces, or one-sided not-worse in
    /// the metric's direction).
    #[arg(
        long,
        value_enum,
        default_value = "reproduces",
        requires = "regression"
    )]
    pub test: RegressionTestArg,
    /// With --regression: the test's significance level.
    #[arg(long, default_value_t = 0.05, requires = "regression")]
    pub alpha: f64,
    /// With --regression: record this metric only (repeatable; default every metric of the results).
    #[arg(long, value_name = "METRIC", requires = "regression")]
    pub metric: Vec<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RegressionTestArg {
    Reproduces,
    NotWorse,
}

impl SuiteCommand {
    /// The run-wide options this command was given.
    pub fn options(&self) -> GlobalArgs {
        match self {
            SuiteCommand::Run(a) => GlobalArgs::of(
                Some(&a.device),
                Some(&a.seed),
                Some(&a.threads),
                Some(&a.quiet),
            ),
            SuiteCommand::Plan(a) => GlobalArgs::of(Some(&a.device), Some(&a.seed), None, None),
            SuiteCommand::Bless(_)
            | SuiteCommand::Validate(_)
            | SuiteCommand::Report(_)
            | SuiteCommand::Compare(_)
            | SuiteCommand::Ls(_)
            | SuiteCommand::Status(_) => GlobalArgs::default(),
        }
    }
}

pub fn run(cmd: SuiteCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    match cmd {
        SuiteCommand::Run(a) => run_cmd(a, global),
        SuiteCommand::Bless(a) => bless(a),
        SuiteCommand::Report(a) => report_cmd(a),
        SuiteCommand::Validate(a) => validate_cmd(a),
        SuiteCommand::Plan(a) => plan_cmd(a, global),
        SuiteCommand::Compare(a) => compare_cmd(a),
        SuiteCommand::Ls(a) => ls_cmd(a),
        SuiteCommand::Status(a) => executor::status_cmd(a),
    }
}

/// Loads the suite with a seed override (`--suite-seed`, else `--seed`) applied.
fn load_suite(path: &std::path::Path, seed: Option<u64>) -> anyhow::Result<config::LoadedSuite> {
    let mut suite = config::load(path)?;
    if let Some(s) = seed {
        suite.config.seed = s;
        suite
            .resolved
            .insert("seed".into(), toml::Value::Integer(s as i64));
    }
    Ok(suite)
}

/// `--out`, `--report` and `--junit` may not be the suite file, the golden, or one another.
fn refuse_outputs_over_inputs(a: &RunArgs, golden: Option<PathBuf>) -> anyhow::Result<()> {
    let mut inputs: Vec<(&str, &std::path::Path)> = vec![("SUITE", &a.suite)];
    if let Some(g) = &golden {
        inputs.push(("the golden", g));
    }
    let outputs = [
        ("--out", a.out.as_deref()),
        ("--report", a.report.as_deref()),
        ("--junit", a.junit.as_deref()),
    ];
    for (i, (flag, out)) in outputs.iter().enumerate() {
        let Some(out) = out else { continue };
        let mut against = inputs.clone();
        against.extend(outputs[..i].iter().filter_map(|(f, o)| o.map(|o| (*f, o))));
        contracam::util::output::refuse_input_overwrite(out, flag, &against)?;
        for (f, o) in &outputs[..i] {
            if o.is_some_and(|o| o == *out) {
                anyhow::bail!(
                    "{flag} {} is also {f}; give each output its own path",
                    out.display()
                );
            }
        }
    }
    Ok(())
}

/// Whether the file at `path` is a graph suite (`[stages]`), read once for the dispatch.
fn is_graph(path: &std::path::Path) -> anyhow::Result<bool> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(contracam::suite::graph::is_graph_suite(&text))
}

/// The library's run options from the flags (`claims`: run and check the golden's claims).
fn run_options(a: &RunArgs, global: &GlobalArgs, device: tch::Device, claims: bool) -> RunOptions {
    RunOptions {
        runs_dir: a.runs_dir.clone(),
        device,
        refresh: a.refresh,
        refresh_stages: a.refresh_stage.clone(),
        progress: !global.quiet,
        golden: a.golden.clone(),
        skip_golden: a.no_golden,
        lock: if a.no_wait {
            LockPolicy::Refuse
        } else {
            LockPolicy::Wait
        },
        fault: None,
        claims,
    }
}

/// Writes the results JSON (`--out`, default `<runs-dir>/<suite>/results.json`) atomically, and the `--junit`
/// and `--report` renderings of it; returns the results path.
/// `--allow-fail ID --reason TEXT`: the named failures become BYPASSED (`suite::bypass`).
fn allow_fail(a: &RunArgs, results: &mut report::Results) -> anyhow::Result<()> {
    if a.allow_fail.is_empty() {
        return Ok(());
    }
    let bypass = contracam::suite::bypass::Bypass {
        ids: a.allow_fail.clone(),
        reason: a.reason.clone().unwrap_or_default(),
    };
    contracam::suite::bypass::apply(results, &bypass)
        .with_context(|| format!("{}", a.suite.display()))?;
    for b in &results.bypassed {
        eprintln!(
            "BYPASSED {} ({}, was {}): {}",
            b.id, b.check, b.was, b.reason
        );
    }
    Ok(())
}

fn write_results(a: &RunArgs, suite: &str, results: &report::Results) -> anyhow::Result<PathBuf> {
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| a.runs_dir.join(suite).join("results.json"));
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_value(results)?;
    write_atomic(&out, &serde_json::to_string_pretty(&json)?)?;
    let plots = match &a.plots {
        Some(dir) => Some(write_plots(&json, &out, dir)?),
        None => None,
    };
    for (path, format) in [
        (&a.junit, report::Format::Junit),
        (&a.report, report::Format::Markdown),
    ] {
        if let Some(p) = path {
            let mut text = report::render(&json, &out, format)?;
            if let (Some(pl), report::Format::Markdown) = (&plots, format) {
                text.push_str(&plots_section(pl, Some(p))?);
            }
            write_text(p, &text)?;
        }
    }
    Ok(out)
}

/// `--plots DIR`: the PNGs of a results JSON value (`path` names it in errors).
fn write_plots(
    json: &serde_json::Value,
    path: &std::path::Path,
    dir: &std::path::Path,
) -> anyhow::Result<plots::Plots> {
    let view = report::ReportView::from_json(json, path)?;
    let p = plots::write_plots(&view, dir)?;
    eprintln!("{} plot(s) written to {}", p.files.len(), dir.display());
    for n in &p.notes {
        eprintln!("NOTE: {n}");
    }
    Ok(p)
}

/// The Markdown section linking the plots, relative to the report's folder (`report` None: standard
/// output, links relative to the current directory).
fn plots_section(p: &plots::Plots, report: Option<&std::path::Path>) -> anyhow::Result<String> {
    let from = report
        .and_then(|r| r.parent())
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    // The report's folder is made now (it is written next): the relative path compares real folders.
    std::fs::create_dir_all(from).with_context(|| format!("creating {}", from.display()))?;
    Ok(plots::markdown_section(
        p,
        &plots::relative_dir(from, &p.dir),
    ))
}

fn run_cmd(a: RunArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    if is_graph(&a.suite)? {
        return run_graph_cmd(a, global);
    }
    a.executor.refuse_on_smoke(&a.suite)?;
    a.profile.refuse_on_smoke(&a.suite)?;

    if a.seeds > 1 {
        anyhow::bail!(
            "{}: --seeds works on graph suites (with [stages]) only; the smoke suite runs the seeds its \
             golden's claims name (or one seed with --suite-seed)",
            a.suite.display()
        );
    }
    let suite = load_suite(&a.suite, a.suite_seed.or(global.seed))?;
    refuse_outputs_over_inputs(&a, a.golden.clone().or_else(|| suite.golden_path()))?;
    let device = global.device.resolve()?;
    let opts = run_options(&a, global, device, !a.no_claims);
    eprintln!(
        "suite {} v{} on {} (seed {})",
        suite.config.name,
        suite.config.version,
        contracam::device::describe(device),
        suite.config.seed
    );
    let mut results = run_suite(&suite, &opts)?;
    allow_fail(&a, &mut results)?;
    let out = write_results(&a, &suite.config.name, &results)?;
    let verdict = if a.no_golden {
        "COMPLETED (no golden checked)"
    } else if results.not_checked.is_some() {
        "NOT CHECKED"
    } else if results.passed {
        "PASSED"
    } else {
        "FAILED"
    };
    if !a.no_golden {
        println!("{}", contracam::suite::report::table(&results.checks));
        let claims = contracam::suite::report::claims_table(&results.claims);
        if !claims.is_empty() {
            println!("{claims}");
        }
    }
    println!(
        "suite {}: {verdict} in {:.1} s; results {}",
        results.suite,
        results.total_seconds,
        out.display()
    );
    if results.golden_file.is_none() && !a.no_golden {
        eprintln!("no golden: nothing was checked (set `golden` in the suite or pass --golden)");
    }
    if let Some(why) = &results.not_checked {
        eprintln!("{why}");
        // An explicitly named golden is a request to check: not being able to is a failure.
        return Ok(if a.golden.is_some() {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        });
    }
    if a.no_golden {
        for (k, v) in &results.metrics {
            println!("{k:<28} {v:.4}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    Ok(if results.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn bless(a: BlessArgs) -> anyhow::Result<ExitCode> {
    let by =
        a.by.clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "unknown".into());
    if a.regression {
        use contracam::suite::golden::bless::{bless_regression_file, RegressionBlessOptions};
        use contracam::suite::regression::RegressionTest;
        let opts = RegressionBlessOptions {
            by,
            test: match a.test {
                RegressionTestArg::Reproduces => RegressionTest::Reproduces,
                RegressionTestArg::NotWorse => RegressionTest::NotWorse,
            },
            alpha: a.alpha,
            metrics: a.metric.clone(),
        };
        let out = bless_regression_file(&a.results, &a.golden, &opts)?;
        for m in &out.added {
            eprintln!("added regression record {m}");
        }
        eprintln!(
            "blessed {} regression records into {}",
            out.golden.regression.len(),
            a.golden.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let opts = BlessOptions {
        default_tolerance: a.default_tolerance,
        by,
        note: a.note,
        drop: a.drop,
    };
    let out = bless_file(&a.results, &a.golden, &opts)?;
    for m in &out.kept_missing {
        eprintln!(
            "kept {m}: in the golden but not in the results (its old value stays; --drop {m} removes it)"
        );
    }
    for m in &out.dropped {
        eprintln!("dropped {m}");
    }
    for m in &out.added {
        eprintln!(
            "added {m} with tolerance {}",
            out.golden.metrics[m].tolerance
        );
    }
    eprintln!(
        "blessed {} metrics into {}",
        out.golden.metrics.len(),
        a.golden.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes through a temporary sibling and a rename: a run killed while writing leaves the previous file (or
/// none), never a truncated one.
fn write_atomic(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn write_text(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn report_cmd(a: ReportArgs) -> anyhow::Result<ExitCode> {
    let bytes =
        std::fs::read(&a.results).with_context(|| format!("reading {}", a.results.display()))?;
    let json: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not JSON", a.results.display()))?;
    let mut text = report::render(&json, &a.results, a.format.into())?;
    if let Some(dir) = &a.plots {
        let p = write_plots(&json, &a.results, dir)?;
        if matches!(a.format, ReportFormat::Md) {
            text.push_str(&plots_section(&p, a.out.as_deref())?);
        }
    }
    match &a.out {
        Some(p) => write_text(p, &text)?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn validate_cmd(a: ValidateArgs) -> anyhow::Result<ExitCode> {
    // A file with `[stages]` is a graph suite (suites/paper/*); the smoke form has none.
    let text = std::fs::read_to_string(&a.suite)
        .with_context(|| format!("reading {}", a.suite.display()))?;
    if contracam::suite::graph::is_graph_suite(&text) {
        return validate_graph(&a);
    }
    if a.profile.is_some() {
        anyhow::bail!(
            "{}: --profile applies to graph suites (with [stages]); this is the smoke form",
            a.suite.display()
        );
    }
    let suite = config::load(&a.suite)?;
    let v = contracam::suite::validate(&suite, a.golden.as_deref())?;
    let golden = match &v.golden {
        Some((p, n)) => format!("golden {} ({n} metrics) ok", p.display()),
        None => "no golden".into(),
    };
    println!(
        "suite {} v{} ok: {} metrics; {golden}",
        suite.config.name,
        suite.config.version,
        v.metrics.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn plan_cmd(a: PlanArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    if is_graph(&a.suite)? {
        return plan_graph_cmd(a, global);
    }
    a.profile.refuse_on_smoke(&a.suite)?;
    let suite = load_suite(&a.suite, a.suite_seed.or(global.seed))?;
    let opts = RunOptions {
        runs_dir: a.runs_dir,
        device: global.device.resolve()?,
        refresh: a.refresh,
        refresh_stages: a.refresh_stage,
        progress: false,
        golden: a.golden,
        skip_golden: a.no_golden,
        lock: LockPolicy::Refuse,
        fault: None,
        claims: !a.no_claims,
    };
    let plan = contracam::suite::plan::plan(&suite, &opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", plan.text());
    }
    Ok(ExitCode::SUCCESS)
}

fn compare_cmd(a: CompareArgs) -> anyhow::Result<ExitCode> {
    let c = contracam::suite::compare::compare_files(&a.base, &a.new, a.tolerance_from.as_deref())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        print!("{}", c.text());
    }
    Ok(if c.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn validate_graph(a: &ValidateArgs) -> anyhow::Result<ExitCode> {
    use contracam::suite::graph;
    // Every profile is applied and validated: a profile that breaks the suite is found before anyone runs it.
    let all = match &a.profile {
        Some(p) => vec![graph::validate_file_with(
            &a.suite,
            &graph::Selection::profile(p),
        )?],
        None => graph::validate_file_all_profiles(&a.suite)?,
    };
    let g = &all[0];
    println!(
        "suite {} v{} ok: {} datasets, {} stages, {} paper cells bound",
        g.name,
        g.version,
        g.datasets.len(),
        g.stages.len(),
        g.binds.len()
    );
    let checked: Vec<&str> = all.iter().map(|s| s.profile.as_str()).collect();
    println!(
        "profiles ok: {} (defined: {})",
        checked.join(", "),
        g.profiles.join(", ")
    );
    println!("order: {}", g.order.join(", "));
    // The golden a run checks (--golden, else the suite's own): suite, version, profile and every metric,
    // claim and regression record it names.
    match a.golden.clone().or_else(|| g.golden.clone()) {
        Some(p) => {
            let golden = contracam::suite::graph_run::read_golden(
                g,
                &contracam::suite::registry::Registry::builtin(),
                &p,
            )?;
            println!(
                "golden {} ok: {} metrics, {} claims, {} regression records",
                p.display(),
                golden.metrics.len(),
                golden.claims.len(),
                golden.regression.len()
            );
        }
        None => println!("golden: none"),
    }
    let missing = g.missing_kinds();
    if missing.is_empty() {
        println!("missing kinds: none");
    } else {
        println!(
            "missing kinds (not implemented yet): {}",
            missing.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `suite run` of a graph suite: the stages through the graph runner, then the same outputs as the smoke form.
fn run_graph_cmd(a: RunArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    use contracam::suite::graph_run::{run_graph, GraphOptions};
    let suite = contracam::suite::graph::validate_file_with(&a.suite, &a.profile.selection())?;
    refuse_outputs_over_inputs(&a, a.golden.clone().or_else(|| suite.golden.clone()))?;
    let device = global.device.resolve()?;
    let opts = run_options(&a, global, device, !a.no_claims);
    let gopts = GraphOptions {
        data_dir: a.data_dir.resolve(),
        seed: a.suite_seed.or(global.seed),
        seeds: usize::try_from(a.seeds).unwrap_or(1),
    };
    eprintln!(
        "suite {} v{} (graph, {} stages, profile {}) on {}",
        suite.name,
        suite.version,
        suite.stages.len(),
        suite.profile,
        contracam::device::describe(device)
    );
    let registry = contracam::suite::registry::Registry::builtin();
    if let Some(stage) = &a.executor.only {
        return executor::only(
            &suite,
            &registry,
            &opts,
            &gopts,
            stage,
            a.executor.only_seed,
        );
    }
    let opts = executor::before_local_pass(&a, global, &suite, &registry, opts, &gopts)?;
    let mut results = run_graph(&suite, &registry, &opts, &gopts)?;
    allow_fail(&a, &mut results)?;
    let out = write_results(&a, &suite.name, &results)?;
    if results.golden_file.is_some() {
        println!("{}", report::table(&results.checks));
        for t in [
            report::claims_table(&results.claims),
            report::regression_table(&results.regression),
        ] {
            if !t.is_empty() {
                println!("{t}");
            }
        }
    } else {
        for (k, v) in &results.metrics {
            println!("{k:<28} {v:.4}");
        }
    }
    let rows = report::seed_rows(results.seed, &results.metrics, &results.seed_metrics);
    if !rows.is_empty() {
        println!("{}", report::seeds_table(&rows));
    }
    if !results.paper_cells.is_empty() {
        println!("paper cells (information, not pass/fail):");
        for c in &results.paper_cells {
            let value = c
                .value
                .map(|v| format!("{v:.4}"))
                .unwrap_or_else(|| "—".into());
            let spread = c
                .run_std
                .map(|s| format!(" ± {s:.4} over {} seeds", c.seeds))
                .unwrap_or_default();
            println!(
                "  table {} {} / {}: {} = {value}{spread} vs paper {} (±{})",
                c.table, c.row, c.column, c.metric, c.paper, c.tolerance
            );
        }
    }
    let verdict = if results.golden_file.is_none() {
        "COMPLETED (no golden checked)"
    } else if results.not_checked.is_some() {
        "NOT CHECKED"
    } else if results.passed {
        "PASSED"
    } else {
        "FAILED"
    };
    println!(
        "suite {}: {verdict} in {:.1} s; results {}",
        results.suite,
        results.total_seconds,
        out.display()
    );
    if let Some(why) = &results.not_checked {
        eprintln!("{why}");
        return Ok(ExitCode::from(1));
    }
    Ok(if results.golden_file.is_none() || results.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn plan_graph_cmd(a: PlanArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    use contracam::suite::graph_run::GraphOptions;
    let suite = contracam::suite::graph::validate_file_with(&a.suite, &a.profile.selection())?;
    let opts = RunOptions {
        runs_dir: a.runs_dir,
        device: global.device.resolve()?,
        refresh: a.refresh,
        refresh_stages: a.refresh_stage,
        progress: false,
        golden: a.golden,
        skip_golden: a.no_golden,
        lock: LockPolicy::Refuse,
        fault: None,
        claims: false,
    };
    let gopts = GraphOptions {
        data_dir: a.data_dir.resolve(),
        seed: a.suite_seed.or(global.seed),
        seeds: 1,
    };
    let registry = contracam::suite::registry::Registry::builtin();
    let plan = contracam::suite::plan::plan_graph(&suite, &registry, &opts, &gopts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", plan.text());
    }
    Ok(ExitCode::SUCCESS)
}

fn ls_cmd(a: LsArgs) -> anyhow::Result<ExitCode> {
    use contracam::suite::graph_run::listing;
    let data_dir = a.data_dir.resolve();
    let items = listing::list(&a.dir, &data_dir)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&items)?);
    } else {
        print!("{}", listing::text(&items, &data_dir));
    }
    Ok(ExitCode::SUCCESS)
}
