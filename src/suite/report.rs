//! Results: a JSON file a CI can read and a table a person can read.
use std::collections::BTreeMap;

use serde::Serialize;

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
