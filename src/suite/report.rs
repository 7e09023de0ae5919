//! Results: a JSON file a CI can read and a table a person can read.
use std::collections::BTreeMap;

use serde::Serialize;

use super::claims::ClaimCheck;
use super::golden::MetricCheck;
use super::regression::RegressionCheck;
use crate::util::EnvReport;

#[derive(Debug, Clone, Serialize)]
pub struct StageTiming {
    pub stage: String,
    pub fingerprint: String,
    pub cached: bool,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub suite: String,
    pub suite_version: u32,
    pub suite_file: String,
    pub seed: u64,
    /// Every seed of a multi-seed run, the run seed (`seed`, whose values are `metrics`) first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<u64>,
    pub git_hash: String,
    /// Uncommitted changes in the source tree at run time (None: unknown).
    #[serde(default)]
    pub git_dirty: Option<bool>,
    pub env: EnvReport,
    pub device: String,
    pub started_at: String,
    pub total_seconds: f64,
    pub config: toml::Table,
    pub stages: Vec<StageTiming>,
    /// The stages of the other seeds of a multi-seed run (`stages` are the run seed's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub seed_stages: BTreeMap<u64, Vec<StageTiming>>,
    pub metrics: BTreeMap<String, f64>,
    pub golden_file: Option<String>,
    pub checks: Vec<MetricCheck>,
    pub passed: bool,
    /// Set when the golden was not compared (its seed differs from the run's); says why.
    #[serde(default)]
    pub not_checked: Option<String>,
    /// Precision policy the stages computed with (part of every stage fingerprint).
    #[serde(default)]
    pub precision: Option<String>,
    /// The deliberate bug this run was made with (tests only; see `RunOptions::fault`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// Metrics of the run's other seeds (`--seeds`, the claims' seeds; the run seed's are `metrics`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub seed_metrics: BTreeMap<u64, BTreeMap<String, f64>>,
    /// The golden's claims, checked over their seeds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<ClaimCheck>,
    /// The golden's regression records, judged over the run's seeds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regression: Vec<RegressionCheck>,
    /// Paper cells a graph suite binds, beside the measured values (information, not pass/fail).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paper_cells: Vec<PaperCellCheck>,
    /// The graph suite's profile (`paper`: the file as written); None for the smoke form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// `suite run --set KEY=VALUE` overrides, applied after the profile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sets: Vec<String>,

    /// Training-loss curves of the run's training stages, by stage (for the plots).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub loss_curves: BTreeMap<String, super::stage::Curve>,
    /// Failures accepted with `--allow-fail ID --reason TEXT` (see `suite::bypass`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bypassed: Vec<super::bypass::BypassRecord>,
}

/// A paper cell bound by a graph suite's `[[bind]]`, with what the run measured. Information only: it does
/// not enter `passed` (the paper tolerances are provisional and a reduced profile is not meant to meet them).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct PaperCellCheck {
    pub table: u32,
    pub row: String,
    pub column: String,
    /// `<stage>.<metric>`.
    pub metric: String,
    /// None when the run did not emit the metric.
    pub value: Option<f64>,
    pub paper: f64,
    pub std: Option<f64>,
    pub tolerance: f64,
    /// Whether |value − paper| ≤ tolerance.
    pub within: Option<bool>,
    /// With several seeds `value` is their mean and this its sample std (n − 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_std: Option<f64>,
    /// How many seeds `value` is over.
    #[serde(default = "one")]
    pub seeds: usize,
}

fn one() -> usize {
    1
}

fn fmt(v: Option<f64>) -> String {
    match v {
        Some(v) => format!("{v:.4}"),
        None => "—".into(),
    }
}

/// The metrics table: metric, value, golden, tolerance, verdict.
pub fn table(checks: &[MetricCheck]) -> String {
    let w = checks
        .iter()
        .map(|c| c.metric.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut s = format!(
        "{:<w$}  {:>9}  {:>9}  {:>9}  verdict\n",
        "metric", "value", "golden", "tolerance"
    );
    s.push_str(&format!("{}\n", "-".repeat(w + 42)));
    for c in checks {
        let verdict = c.verdict.label();
        s.push_str(&format!(
            "{:<w$}  {:>9}  {:>9}  {:>9}  {verdict}\n",
            c.metric,
            fmt(c.value),
            fmt(c.golden),
            c.tolerance
                .map(|t| format!("±{t:.4}"))
                .unwrap_or_else(|| "—".into())
        ));
    }
    s
}

/// The claims table: claim, relation, mean difference over seeds, one-sided p, outcome, recorded outcome,
/// verdict. Empty when no claim was checked.
pub fn claims_table(claims: &[ClaimCheck]) -> String {
    if claims.is_empty() {
        return String::new();
    }
    let w = claims
        .iter()
        .map(|c| c.claim.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let r = claims
        .iter()
        .map(|c| c.relation.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let mut s = format!(
        "{:<w$}  {:<r$}  {:>9}  {:>7}  {:<9}  {:<9}  verdict\n",
        "claim", "relation", "mean Δ", "p", "outcome", "recorded"
    );
    s.push_str(&format!("{}\n", "-".repeat(w + r + 58)));
    for c in claims {
        s.push_str(&format!(
            "{:<w$}  {:<r$}  {:>9}  {:>7}  {:<9}  {:<9}  {}\n",
            c.claim,
            c.relation,
            c.mean_diff
                .map(|d| format!("{d:+.4}"))
                .unwrap_or_else(|| "—".into()),
            c.p_value
                .map(|p| format!("{p:.3}"))
                .unwrap_or_else(|| "—".into()),
            c.outcome.map(|o| o.label()).unwrap_or("—"),
            c.expect.label(),
            c.verdict.label()
        ));
    }
    s
}

/// The regression table: metric, test, recorded mean ± std (n), this run's mean, t, df, p, α, verdict.
/// Empty when no record was checked.
pub fn regression_table(checks: &[RegressionCheck]) -> String {
    if checks.is_empty() {
        return String::new();
    }
    let w = checks
        .iter()
        .map(|c| c.metric.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut s = format!(
        "{:<w$}  {:<10}  {:>22}  {:>9}  {:>8}  {:>6}  {:>7}  {:>5}  verdict\n",
        "regression", "test", "recorded", "run mean", "t", "df", "p", "α"
    );
    s.push_str(&format!("{}\n", "-".repeat(w + 92)));
    for c in checks {
        s.push_str(&format!(
            "{:<w$}  {:<10}  {:>22}  {:>9}  {:>8}  {:>6}  {:>7}  {:>5}  {}\n",
            c.metric,
            c.test.label(),
            format!(
                "{:.4} ± {:.4} (n={})",
                c.recorded_mean, c.recorded_std, c.recorded_n
            ),
            fmt(c.mean),
            c.t.map(|t| format!("{t:+.3}"))
                .unwrap_or_else(|| "—".into()),
            c.df.map(|d| format!("{d:.1}"))
                .unwrap_or_else(|| "—".into()),
            c.p_value
                .map(|p| format!("{p:.3}"))
                .unwrap_or_else(|| "—".into()),
            c.alpha,
            c.verdict.label()
        ));
    }
    s
}

/// One metric over the seeds of a multi-seed run.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedRow {
    pub metric: String,
    /// (seed, value) in the run's seed order; a seed that lacks the metric is left out.
    pub values: Vec<(u64, f64)>,
    pub mean: f64,
    /// Sample std (n − 1).
    pub std: f64,
}

/// Per metric of the run seed: its values at every seed (the run seed first, then the others in order),
/// mean and sample std. Empty for a one-seed run.
pub fn seed_rows(
    seed: u64,
    metrics: &BTreeMap<String, f64>,
    seed_metrics: &BTreeMap<u64, BTreeMap<String, f64>>,
) -> Vec<SeedRow> {
    if seed_metrics.is_empty() {
        return Vec::new();
    }
    metrics
        .iter()
        .map(|(name, v)| {
            let mut values = vec![(seed, *v)];
            values.extend(
                seed_metrics
                    .iter()
                    .filter_map(|(s, m)| m.get(name).map(|x| (*s, *x))),
            );
            let xs: Vec<f64> = values.iter().map(|(_, x)| *x).collect();
            let sum = super::regression::summary(&xs);
            SeedRow {
                metric: name.clone(),
                values,
                mean: sum.mean,
                std: sum.std,
            }
        })
        .collect()
}

/// The seeds table: metric, mean ± std, the value at each seed. Empty for a one-seed run.
pub fn seeds_table(rows: &[SeedRow]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let w = rows
        .iter()
        .map(|r| r.metric.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut s = format!("{:<w$}  {:>20}  per seed\n", "metric", "mean ± std");
    s.push_str(&format!("{}\n", "-".repeat(w + 40)));
    for r in rows {
        let per: Vec<String> = r
            .values
            .iter()
            .map(|(seed, v)| format!("{seed}: {v:.4}"))
            .collect();
        s.push_str(&format!(
            "{:<w$}  {:>20}  {}\n",
            r.metric,
            format!("{:.4} ± {:.4}", r.mean, r.std),
            per.join(", ")
        ));
    }
    s
}

/// Whether the source tree the binary runs from has uncommitted changes to tracked files (None: not a git
/// checkout, or git is unavailable). Recorded beside the commit so a dirty run is never mistaken for it.
pub fn git_dirty() -> Option<bool> {
    let out = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(!out.stdout.is_empty())
}

/// The part of a results file the reports show, read back from its JSON (older files lack the newer fields).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ReportView {
    pub suite: String,
    pub suite_version: u32,
    pub seed: u64,
    pub git_hash: String,
    #[serde(default)]
    pub git_dirty: Option<bool>,
    #[serde(default)]
    pub env: serde_json::Value,
    pub device: String,
    #[serde(default)]
    pub precision: Option<String>,
    /// The deliberate bug this run was made with (tests only; see `RunOptions::fault`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    #[serde(default)]
    pub started_at: String,
    #[serde(default)]
    pub total_seconds: f64,
    #[serde(default)]
    pub golden_file: Option<String>,
    #[serde(default)]
    pub checks: Vec<MetricCheck>,
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    pub passed: bool,
    #[serde(default)]
    pub not_checked: Option<String>,
    #[serde(default)]
    pub claims: Vec<ClaimCheck>,
    #[serde(default)]
    pub regression: Vec<RegressionCheck>,
    #[serde(default)]
    pub seed_metrics: BTreeMap<u64, BTreeMap<String, f64>>,
    #[serde(default)]
    pub paper_cells: Vec<PaperCellCheck>,
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub sets: Vec<String>,

    /// Absent in results written before the curves were recorded: the plots then say so.
    #[serde(default)]
    pub loss_curves: BTreeMap<String, super::stage::Curve>,
    #[serde(default)]
    pub bypassed: Vec<super::bypass::BypassRecord>,
}

/// Report formats of `suite report` and `suite run --report/--junit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Json,
    Junit,
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {msg}")]
pub struct ReportError {
    pub path: std::path::PathBuf,
    pub msg: String,
}

impl ReportView {
    /// Reads the view from a results JSON value; `path` names it in errors.
    pub fn from_json(v: &serde_json::Value, path: &std::path::Path) -> Result<Self, ReportError> {
        serde_path_to_error::deserialize(v).map_err(|e| ReportError {
            path: path.into(),
            msg: format!(
                "not a suite results file: field '{}': {}",
                e.path(),
                e.inner()
            ),
        })
    }

    /// PASSED / FAILED / NOT CHECKED / COMPLETED (no golden).
    pub fn status(&self) -> &'static str {
        if self.not_checked.is_some() {
            "NOT CHECKED"
        } else if self.golden_file.is_none() {
            "COMPLETED (no golden)"
        } else if self.passed {
            "PASSED"
        } else {
            "FAILED"
        }
    }

    fn env_str(&self, k: &str) -> String {
        match self.env.get(k) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => "unknown".into(),
        }
    }

    fn commit(&self) -> String {
        match self.git_dirty {
            Some(true) => format!("{} (dirty: uncommitted changes)", self.git_hash),
            Some(false) => format!("{} (clean)", self.git_hash),
            None => format!("{} (dirty flag unknown)", self.git_hash),
        }
    }
}

fn delta(c: &MetricCheck) -> Option<f64> {
    Some(c.value? - c.golden?)
}

fn num(v: Option<f64>) -> String {
    match v {
        Some(v) => format!("{v:.6}"),
        None => "—".into(),
    }
}

/// The paper cells section: information, not pass/fail.
fn paper_cells_markdown(cells: &[PaperCellCheck]) -> String {
    let mut s = String::from(
        "\n## Paper cells (information, not pass/fail)\n\nThe cells the suite's `[[bind]]` entries name, beside \
         this run's value. They do not decide the verdict: the paper's tolerances are provisional and a reduced \
         profile is not meant to reach the paper's numbers.\n\n",
    );
    if cells.iter().any(|c| c.seeds > 1) {
        s.push_str(
            "With several seeds the value is the mean over them ± its sample std, as the paper's \
             Tables 7 and 8 print mean ± std over trials.\n\n",
        );
    }
    s.push_str("| table | row | column | metric | value | paper | tolerance | Δ | within |\n");
    s.push_str("|---:|---|---|---|---:|---:|---:|---:|---|\n");
    for c in cells {
        s.push_str(&format!(
            "| {} | {} | {} | `{}` | {}{} | {}{} | ±{} | {} | {} |\n",
            c.table,
            c.row,
            c.column,
            c.metric,
            num(c.value),
            c.run_std
                .map(|d| format!(" ± {d:.6} ({} seeds)", c.seeds))
                .unwrap_or_default(),
            c.paper,
            c.std.map(|d| format!(" ± {d}")).unwrap_or_default(),
            c.tolerance,
            c.value
                .map(|v| format!("{:+.6}", v - c.paper))
                .unwrap_or_else(|| "—".into()),
            match c.within {
                Some(true) => "yes",
                Some(false) => "no",
                None => "missing",
            }
        ));
    }
    s
}

/// The Markdown report: a verdict per metric and the environment, for a person.
pub fn markdown(r: &ReportView) -> String {
    let mut s = format!(
        "# Suite `{}` v{}: {}\n\n",
        r.suite,
        r.suite_version,
        r.status()
    );
    if let Some(why) = &r.not_checked {
        s.push_str(&format!("> **Not checked:** {why}\n\n"));
    }
    s.push_str("| metric | value | golden | tolerance | Δ | verdict |\n");
    s.push_str("|---|---:|---:|---:|---:|---|\n");
    let rows: Vec<MetricCheck> = if r.checks.is_empty() {
        // A run without a golden: the metrics alone.
        r.metrics
            .iter()
            .map(|(k, v)| MetricCheck {
                metric: k.clone(),
                value: Some(*v),
                golden: None,
                tolerance: None,
                verdict: super::golden::Verdict::NoGolden,
            })
            .collect()
    } else {
        r.checks.clone()
    };
    for c in &rows {
        s.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            c.metric,
            num(c.value),
            num(c.golden),
            c.tolerance
                .map(|t| format!("±{t:.6}"))
                .unwrap_or_else(|| "—".into()),
            delta(c)
                .map(|d| format!("{d:+.6}"))
                .unwrap_or_else(|| "—".into()),
            c.verdict.label()
        ));
    }
    if !r.bypassed.is_empty() {
        s.push_str("\n## Bypassed\n\nFailures accepted with `--allow-fail`; each counts as passing in this run.\n\n");
        s.push_str("| check | kind | verdict it replaced | reason |\n|---|---|---|---|\n");
        for b in &r.bypassed {
            s.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                b.id,
                b.check,
                b.was,
                b.reason.replace('|', "\\|")
            ));
        }
    }
    if !r.claims.is_empty() {
        s.push_str("\n## Claims\n\nOne-sided paired t-test over seeds of the first metric exceeding the second; *outcome* is \
                    what this run measured, *recorded* what the golden measured before.\n\n");
        s.push_str("| claim | relation | seeds | mean Δ | p | α | outcome | recorded | verdict | paper |\n");
        s.push_str("|---|---|---|---:|---:|---:|---|---|---|---|\n");
        for c in &r.claims {
            s.push_str(&format!(
                "| `{}` | `{}` | {:?} | {} | {} | {} | {} | {} | {} | {} |\n",
                c.claim,
                c.relation,
                c.seeds,
                c.mean_diff
                    .map(|d| format!("{d:+.6}"))
                    .unwrap_or_else(|| "—".into()),
                num(c.p_value),
                c.alpha,
                c.outcome.map(|o| o.label()).unwrap_or("—"),
                c.expect.label(),
                c.verdict.label(),
                c.paper
            ));
        }
    }
    let rows = seed_rows(r.seed, &r.metrics, &r.seed_metrics);
    if !rows.is_empty() {
        s.push_str(&format!(
            "\n## Seeds\n\nEvery metric over the run's {} seeds: mean ± sample std (n − 1) and the value at \
             each seed (the table above is seed {}).\n\n",
            rows[0].values.len(),
            r.seed
        ));
        s.push_str("| metric | mean ± std | per seed |\n|---|---:|---|\n");
        for row in &rows {
            let per: Vec<String> = row
                .values
                .iter()
                .map(|(seed, v)| format!("{seed}: {v:.6}"))
                .collect();
            s.push_str(&format!(
                "| `{}` | {:.6} ± {:.6} | {} |\n",
                row.metric,
                row.mean,
                row.std,
                per.join(", ")
            ));
        }
    }
    if !r.regression.is_empty() {
        s.push_str(
            "\n## Regression\n\nEach record's per-seed values against this run's: Welch's t-test with two or \
             more new values, the prediction-interval t (x − mean) / (s·sqrt(1 + 1/n)) with one; two-sided for \
             *reproduces*, one-sided in the metric's direction for *not-worse*. Pass when p ≥ α.\n\n",
        );
        s.push_str("| metric | test | recorded mean ± std (n) | run values | run mean | method | t | df | p | α | verdict |\n");
        s.push_str("|---|---|---:|---|---:|---|---:|---:|---:|---:|---|\n");
        for c in &r.regression {
            let vals: Vec<String> = c
                .seeds
                .iter()
                .zip(&c.values)
                .map(|(s, v)| format!("{s}: {}", num(*v)))
                .collect();
            s.push_str(&format!(
                "| `{}` | {} | {:.6} ± {:.6} ({}) | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                c.metric,
                c.test.label(),
                c.recorded_mean,
                c.recorded_std,
                c.recorded_n,
                vals.join(", "),
                num(c.mean),
                c.method.as_deref().unwrap_or("—"),
                c.t.map(|t| format!("{t:+.4}"))
                    .unwrap_or_else(|| "—".into()),
                c.df.map(|d| format!("{d:.2}"))
                    .unwrap_or_else(|| "—".into()),
                num(c.p_value),
                c.alpha,
                c.verdict.label()
            ));
        }
    }
    if !r.paper_cells.is_empty() {
        s.push_str(&paper_cells_markdown(&r.paper_cells));
    }
    s.push_str("\n## Environment\n\n| | |\n|---|---|\n");
    let rows = [
        (
            "CPU",
            format!(
                "{} ({} kernels, {} threads)",
                r.env_str("cpu_model"),
                r.env_str("cpu_isa"),
                r.env_str("cpu_threads")
            ),
        ),
        ("torch threads", r.env_str("torch_threads")),
        ("libtorch", r.env_str("libtorch")),
        ("contracam", r.env_str("contracam")),
        ("git commit", r.commit()),
        ("seed", r.seed.to_string()),
        ("device", r.device.clone()),
        (
            "precision",
            r.precision.clone().unwrap_or_else(|| "unknown".into()),
        ),
        ("OS", r.env_str("os")),
        (
            "golden",
            r.golden_file.clone().unwrap_or_else(|| "none".into()),
        ),
        ("started", r.started_at.clone()),
        ("wall time", format!("{:.1} s", r.total_seconds)),
    ];
    for (k, v) in rows {
        s.push_str(&format!("| {k} | {v} |\n"));
    }
    // Graph suites only (the smoke form has no profiles).
    if let Some(p) = &r.profile {
        s.push_str(&format!("| profile | {p} |\n"));
    }
    for set in &r.sets {
        s.push_str(&format!("| --set | `{set}` |\n"));
    }
    s
}

fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => o.push(c),
        }
    }
    o
}

/// JUnit XML for CI: one testcase per golden check; failures carry the numbers, unchecked metrics are skipped.
pub fn junit(r: &ReportView) -> String {
    use super::golden::Verdict;
    let failures = r
        .checks
        .iter()
        .filter(|c| {
            matches!(
                c.verdict,
                Verdict::Fail | Verdict::Missing | Verdict::NoGolden
            )
        })
        .count()
        + r.claims.iter().filter(|c| !c.verdict.ok()).count()
        + r.regression.iter().filter(|c| !c.verdict.ok()).count();
    let tests = r.checks.len() + r.claims.len() + r.regression.len();
    let skipped = r
        .checks
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::NoGoldenForSeed | Verdict::Bypassed))
        .count()
        + r.claims
            .iter()
            .filter(|c| c.verdict == Verdict::Bypassed)
            .count()
        + r.regression
            .iter()
            .filter(|c| c.verdict == Verdict::Bypassed)
            .count();
    let bypass = |id: &str| {
        let reason = r
            .bypassed
            .iter()
            .find(|b| b.id == id)
            .map(|b| format!("bypassed (--allow-fail, was {}): {}", b.was, b.reason))
            .unwrap_or_else(|| "bypassed".into());
        format!("<skipped message=\"{}\"/>", xml(&reason))
    };
    let name = xml(&format!("suite {} v{}", r.suite, r.suite_version));
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    s.push_str(&format!(
        "<testsuites name=\"contracam\" tests=\"{n}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{t:.3}\">\n",
        n = tests,
        t = r.total_seconds
    ));
    s.push_str(&format!(
        "  <testsuite name=\"{name}\" tests=\"{n}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{t:.3}\" timestamp=\"{ts}\">\n",
        n = tests,
        t = r.total_seconds,
        ts = xml(&r.started_at)
    ));
    s.push_str("    <properties>\n");
    for (k, v) in [
        ("seed", r.seed.to_string()),
        ("device", r.device.clone()),
        ("git_commit", r.commit()),
        ("cpu_model", r.env_str("cpu_model")),
        ("libtorch", r.env_str("libtorch")),
        (
            "golden",
            r.golden_file.clone().unwrap_or_else(|| "none".into()),
        ),
    ]
    .into_iter()
    .chain(r.profile.clone().map(|p| ("profile", p)))
    .chain(r.sets.iter().map(|x| ("set", x.clone())))
    {
        s.push_str(&format!(
            "      <property name=\"{k}\" value=\"{}\"/>\n",
            xml(&v)
        ));
    }
    s.push_str("    </properties>\n");
    let class = xml(&format!("suite.{}", r.suite));
    for c in &r.checks {
        let open = format!(
            "    <testcase classname=\"{class}\" name=\"{}\" time=\"0\"",
            xml(&c.metric)
        );
        let numbers = format!(
            "value={} golden={} tolerance={} delta={}",
            num(c.value),
            num(c.golden),
            num(c.tolerance),
            delta(c)
                .map(|d| format!("{d:+.6}"))
                .unwrap_or_else(|| "—".into())
        );
        let body = match c.verdict {
            Verdict::Pass => None,
            Verdict::Fail => Some(format!(
                "<failure type=\"outside_tolerance\" message=\"{}\">{}</failure>",
                xml(&format!(
                    "{}: |Δ| {} exceeds tolerance {}",
                    c.metric,
                    delta(c)
                        .map(|d| format!("{:.6}", d.abs()))
                        .unwrap_or_else(|| "NaN".into()),
                    num(c.tolerance)
                )),
                xml(&numbers)
            )),
            Verdict::Missing => Some(format!(
                "<failure type=\"missing\" message=\"{}\">{}</failure>",
                xml(&format!(
                    "{}: the golden expects it, the run did not produce it",
                    c.metric
                )),
                xml(&numbers)
            )),
            Verdict::NoGolden => Some(format!(
                "<failure type=\"no_golden\" message=\"{}\">{}</failure>",
                xml(&format!("{}: the golden has no entry for it", c.metric)),
                xml(&numbers)
            )),
            Verdict::NoGoldenForSeed => Some(format!(
                "<skipped message=\"{}\"/>",
                xml(r.not_checked.as_deref().unwrap_or("not checked"))
            )),
            Verdict::Bypassed => Some(bypass(&c.metric)),
        };
        match body {
            None => s.push_str(&format!("{open}/>\n")),
            Some(b) => s.push_str(&format!("{open}>\n      {b}\n    </testcase>\n")),
        }
    }
    let class = xml(&format!("suite.{}.claims", r.suite));
    for c in &r.claims {
        let open = format!(
            "    <testcase classname=\"{class}\" name=\"{}\" time=\"0\"",
            xml(&c.claim)
        );
        let numbers = format!(
            "relation '{}' seeds {:?} values {:?} mean_diff={} p={} alpha={} outcome={} recorded={}",
            c.relation,
            c.seeds,
            c.values,
            num(c.mean_diff),
            num(c.p_value),
            c.alpha,
            c.outcome.map(|o| o.label()).unwrap_or("none"),
            c.expect.label()
        );
        if c.verdict == Verdict::Bypassed {
            s.push_str(&format!(
                "{open}>\n      {}\n    </testcase>\n",
                bypass(&c.claim)
            ));
            continue;
        }
        let kind = match c.verdict {
            Verdict::Pass => None,
            Verdict::Missing => Some("missing"),
            _ => Some("claim_outcome_changed"),
        };
        match kind {
            None => s.push_str(&format!("{open}/>\n")),
            Some(k) => s.push_str(&format!(
                "{open}>\n      <failure type=\"{k}\" message=\"{}\">{}</failure>\n    </testcase>\n",
                xml(&format!(
                    "{}: {} (recorded: {})",
                    c.claim,
                    c.outcome.map(|o| o.label()).unwrap_or("a metric is missing at some seed"),
                    c.expect.label()
                )),
                xml(&numbers)
            )),
        }
    }
    let class = xml(&format!("suite.{}.regression", r.suite));
    for c in &r.regression {
        let open = format!(
            "    <testcase classname=\"{class}\" name=\"{}\" time=\"0\"",
            xml(&c.metric)
        );
        let numbers = format!(
            "test={} recorded_mean={} recorded_std={} recorded_n={} seeds {:?} values {:?} run_mean={} method={} t={} df={} p={} alpha={}",
            c.test.label(),
            num(Some(c.recorded_mean)),
            num(Some(c.recorded_std)),
            c.recorded_n,
            c.seeds,
            c.values,
            num(c.mean),
            c.method.as_deref().unwrap_or("none"),
            num(c.t),
            num(c.df),
            num(c.p_value),
            c.alpha
        );
        let (kind, msg) = match c.verdict {
            Verdict::Pass => {
                s.push_str(&format!("{open}/>\n"));
                continue;
            }
            Verdict::Bypassed => {
                s.push_str(&format!(
                    "{open}>\n      {}\n    </testcase>\n",
                    bypass(&c.metric)
                ));
                continue;
            }
            Verdict::Missing => ("missing", format!("{}: missing at some seed", c.metric)),
            _ => (
                "regression",
                format!(
                    "{}: {} test p = {} < α = {}",
                    c.metric,
                    c.test.label(),
                    num(c.p_value),
                    c.alpha
                ),
            ),
        };
        s.push_str(&format!(
            "{open}>\n      <failure type=\"{kind}\" message=\"{}\">{}</failure>\n    </testcase>\n",
            xml(&msg),
            xml(&numbers)
        ));
    }
    s.push_str("  </testsuite>\n</testsuites>\n");
    s
}

/// Renders a results JSON value in `format` (JSON: the file itself, pretty-printed).
pub fn render(
    results: &serde_json::Value,
    path: &std::path::Path,
    format: Format,
) -> Result<String, ReportError> {
    let view = ReportView::from_json(results, path)?;
    Ok(match format {
        Format::Markdown => markdown(&view),
        Format::Junit => junit(&view),
        Format::Json => {
            serde_json::to_string_pretty(results).map_err(|e| ReportError {
                path: path.into(),
                msg: e.to_string(),
            })? + "\n"
        }
    })
}
