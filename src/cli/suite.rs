//! `contracam suite ...`
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use contracam::suite::cache::LockPolicy;
use contracam::suite::golden::{Golden, GoldenMetric, Provenance};
use contracam::suite::{config, now_utc, run_suite, RunOptions};
use sha2::{Digest, Sha256};

use super::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum SuiteCommand {
    /// Run a suite (reusing finished stages), compare every metric with its golden, print the table and
    /// write results JSON. Exits 1 when a metric is outside its tolerance or has no golden.
    Run(RunArgs),
    /// Write a golden from a results JSON: an explicit act that records who, when and from what. Existing
    /// tolerances and reasons are kept; new metrics need --default-tolerance.
    Bless(BlessArgs),
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
    /// Run without comparing to any golden (exit 0 when the pipeline completes); for a first blessing.
    #[arg(long, conflicts_with = "golden")]
    pub no_golden: bool,
    /// Recompute every stage even when cached.
    #[arg(long)]
    pub refresh: bool,
    /// When another run holds this suite's folder in --runs-dir: exit with an error instead of waiting for it.
    #[arg(long)]
    pub no_wait: bool,
    /// Override the suite's seed. A golden blessed at another seed is then not checked: the metrics are
    /// reported as "not checked" and the run exits 0 (1 when --golden names that golden explicitly).
    #[arg(long)]
    pub suite_seed: Option<u64>,
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
    /// Free-text note recorded in the provenance (machine details, why re-blessed).
    #[arg(long, default_value = "")]
    pub note: String,
}

pub fn run(cmd: SuiteCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    match cmd {
        SuiteCommand::Run(a) => run_cmd(a, global),
        SuiteCommand::Bless(a) => bless(a),
    }
}

fn run_cmd(a: RunArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let mut suite = config::load(&a.suite)?;
    if let Some(s) = a.suite_seed.or(global.seed) {
        suite.config.seed = s;
        suite
            .resolved
            .insert("seed".into(), toml::Value::Integer(s as i64));
    }
    let device = global.device.resolve()?;
    let opts = RunOptions {
        runs_dir: a.runs_dir.clone(),
        device,
        refresh: a.refresh,
        progress: !global.quiet && std::io::stderr().is_terminal(),
        golden: a.golden.clone(),
        skip_golden: a.no_golden,
        lock: if a.no_wait {
            LockPolicy::Refuse
        } else {
            LockPolicy::Wait
        },
    };
    eprintln!(
        "suite {} v{} on {} (seed {})",
        suite.config.name,
        suite.config.version,
        contracam::device::describe(device),
        suite.config.seed
    );
    let results = run_suite(&suite, &opts)?;
    let out = a
        .out
        .unwrap_or_else(|| a.runs_dir.join(&suite.config.name).join("results.json"));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("writing {}", out.display()))?;
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
    let bytes = std::fs::read(&a.results)
        .with_context(|| format!("reading --results {}", a.results.display()))?;
    let r: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not JSON", a.results.display()))?;
    let field = |k: &str| {
        r.get(k).with_context(|| {
            format!(
                "{}: no field '{k}' (is this a suite results file?)",
                a.results.display()
            )
        })
    };
    let metrics: BTreeMap<String, f64> = serde_json::from_value(field("metrics")?.clone())?;
    let old = if a.golden.exists() {
        Some(Golden::read(&a.golden)?)
    } else {
        None
    };
    let mut out = BTreeMap::new();
    for (name, value) in metrics {
        anyhow::ensure!(
            value.is_finite(),
            "metric {name} is {value}; refusing to bless a non-finite value"
        );
        let prev = old.as_ref().and_then(|g| g.metrics.get(&name));
        let tolerance = prev
            .map(|p| p.tolerance)
            .or(a.default_tolerance)
            .with_context(|| {
                format!(
                    "metric {name} has no tolerance in {}; pass --default-tolerance",
                    a.golden.display()
                )
            })?;
        let why = prev.map(|p| p.why.clone()).unwrap_or_default();
        out.insert(
            name,
            GoldenMetric {
                value,
                tolerance,
                why,
            },
        );
    }
    let text = |k: &str| -> anyhow::Result<String> {
        field(k)?
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("{}: field '{k}' must be a string", a.results.display()))
    };
    let int = |k: &str| -> anyhow::Result<u64> {
        field(k)?.as_u64().with_context(|| {
            format!(
                "{}: field '{k}' must be a non-negative integer",
                a.results.display()
            )
        })
    };
    let env = field("env")?;
    let machine = format!(
        "{} · {} ({} kernels) · {} CPU threads · libtorch {} · device {}",
        env.get("os").and_then(|v| v.as_str()).unwrap_or("?"),
        env.get("cpu_model").and_then(|v| v.as_str()).unwrap_or("?"),
        env.get("cpu_isa").and_then(|v| v.as_str()).unwrap_or("?"),
        env.get("cpu_threads").and_then(|v| v.as_u64()).unwrap_or(0),
        env.get("libtorch").and_then(|v| v.as_str()).unwrap_or("?"),
        r.get("device").and_then(|v| v.as_str()).unwrap_or("?")
    );
    let golden = Golden {
        suite: text("suite")?,
        suite_version: u32::try_from(int("suite_version")?)
            .context("suite_version is too large")?,
        provenance: Provenance {
            blessed_by: a
                .by
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "unknown".into()),
            blessed_at: now_utc(),
            seed: int("seed")?,
            commit: text("git_hash")?,
            machine,
            results_sha256: hex::encode(Sha256::digest(&bytes)),
            note: a.note,
        },
        metrics: out,
    };
    std::fs::write(&a.golden, toml::to_string_pretty(&golden)?)
        .with_context(|| format!("writing {}", a.golden.display()))?;
    eprintln!(
        "blessed {} metrics into {}",
        golden.metrics.len(),
        a.golden.display()
    );
    Ok(ExitCode::SUCCESS)
}
