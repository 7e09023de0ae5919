//! Results: a JSON file a CI can read and a table a person can read.
use std::collections::BTreeMap;

use serde::Serialize;

use super::claims::ClaimCheck;
use super::golden::MetricCheck;
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
    /// Metrics of the other seeds the claims needed (the run's own seed is `metrics`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub seed_metrics: BTreeMap<u64, BTreeMap<String, f64>>,
    /// The golden's claims, checked over their seeds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<ClaimCheck>,
    /// Paper cells a graph suite binds, beside the measured values (information, not pass/fail).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paper_cells: Vec<PaperCellCheck>,
    /// Training-loss curves of the run's training stages, by stage (for the plots).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub loss_curves: BTreeMap<String, super::stage::Curve>,
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
    pub paper_cells: Vec<PaperCellCheck>,
    /// Absent in results written before the curves were recorded: the plots then say so.
    #[serde(default)]
    pub loss_curves: BTreeMap<String, super::stage::Curve>,
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
    s.push_str("| table | row | column | metric | value | paper | tolerance | Δ | within |\n");
    s.push_str("|---:|---|---|---|---:|---:|---:|---:|---|\n");
    for c in cells {
        s.push_str(&format!(
            "| {} | {} | {} | `{}` | {} | {}{} | ±{} | {} | {} |\n",
            c.table,
            c.row,
            c.column,
            c.metric,
            num(c.value),
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
        + r.claims
            .iter()
            .filter(|c| c.verdict != Verdict::Pass)
            .count();
    let tests = r.checks.len() + r.claims.len();
    let skipped = r
        .checks
        .iter()
        .filter(|c| c.verdict == Verdict::NoGoldenForSeed)
        .count();
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
    ] {
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
