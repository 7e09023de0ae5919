//! Two results files side by side: per metric, both values, Δ = new − base and a verdict. Without
//! tolerances any difference is a change; with a golden's, a metric may move within its tolerance. A
//! metric on one side only is a failure too: a regression check must not pass by losing a number.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::golden::{Golden, GoldenError};

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("cannot read results {path}: {msg}")]
    Read { path: PathBuf, msg: String },
    #[error(transparent)]
    Golden(#[from] GoldenError),
}

/// What a comparison needs of a results file.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ResultsSummary {
    pub suite: String,
    pub suite_version: u32,
    pub seed: u64,
    /// A value JSON could not hold (NaN, ±∞ are written as null) reads as None.
    pub metrics: BTreeMap<String, Option<f64>>,
}

impl ResultsSummary {
    /// Reads the top-level `suite`, `suite_version`, `seed` and `metrics` of a results JSON.
    pub fn read(path: &Path) -> Result<Self, CompareError> {
        let err = |msg: String| CompareError::Read {
            path: path.into(),
            msg,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| {
            err(format!(
                "{e} (expected a results JSON written by `suite run`, with suite, suite_version, seed and metrics)"
            ))
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// The same bits (or both not a number).
    Same,
    /// Different, by no more than the tolerance.
    WithinTolerance,
    /// Different by more than the tolerance (0 without one), or a number on one side only.
    Changed,
    /// Only in the new results.
    MissingInBase,
    /// Only in the base results.
    MissingInNew,
}

impl Change {
    pub fn label(self) -> &'static str {
        match self {
            Change::Same => "same",
            Change::WithinTolerance => "within tolerance",
            Change::Changed => "CHANGED",
            Change::MissingInBase => "MISSING in base",
            Change::MissingInNew => "MISSING in new",
        }
    }

    /// Whether this verdict fails the comparison.
    pub fn fails(self) -> bool {
        !matches!(self, Change::Same | Change::WithinTolerance)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricDiff {
    pub metric: String,
    pub base: Option<f64>,
    pub new: Option<f64>,
    /// new − base, when both are numbers.
    pub delta: Option<f64>,
    /// The allowed |Δ| (0 when no golden was given or it has no entry for the metric).
    pub tolerance: f64,
    pub verdict: Change,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub base: String,
    pub new: String,
    pub base_suite: String,
    pub new_suite: String,
    pub base_seed: u64,
    pub new_seed: u64,
    /// The golden the tolerances come from.
    pub tolerance_from: Option<String>,
    pub metrics: Vec<MetricDiff>,
    pub passed: bool,
}

/// Where a metric is present in the file, and its value there (None: written as null, not a number).
type Side = Option<Option<f64>>;

fn verdict(base: Side, new: Side, tolerance: f64) -> (Option<f64>, Change) {
    match (base, new) {
        (None, _) => (None, Change::MissingInBase),
        (_, None) => (None, Change::MissingInNew),
        (Some(Some(b)), Some(Some(n))) => {
            let d = n - b;
            let v = if b.to_bits() == n.to_bits() {
                Change::Same
            } else if d.abs() <= tolerance {
                Change::WithinTolerance
            } else {
                Change::Changed
            };
            (Some(d), v)
        }
        (Some(None), Some(None)) => (None, Change::Same),
        _ => (None, Change::Changed),
    }
}

/// Compares every metric of either side, in name order. Tolerances come from `golden` where it has the
/// metric; elsewhere only identical values pass.
pub fn compare(
    base: &ResultsSummary,
    new: &ResultsSummary,
    golden: Option<&Golden>,
) -> Vec<MetricDiff> {
    let mut names: Vec<&String> = base.metrics.keys().chain(new.metrics.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let (b, n) = (
                base.metrics.get(name).copied(),
                new.metrics.get(name).copied(),
            );
            let tolerance = golden
                .and_then(|g| g.metrics.get(name))
                .map_or(0.0, |m| m.tolerance);
            let (delta, verdict) = verdict(b, n, tolerance);
            MetricDiff {
                metric: name.clone(),
                base: b.flatten(),
                new: n.flatten(),
                delta,
                tolerance,
                verdict,
            }
        })
        .collect()
}

/// Reads both results files (and the golden, when given) and compares them.
pub fn compare_files(
    base: &Path,
    new: &Path,
    tolerance_from: Option<&Path>,
) -> Result<Comparison, CompareError> {
    let (b, n) = (ResultsSummary::read(base)?, ResultsSummary::read(new)?);
    let golden = tolerance_from.map(Golden::read).transpose()?;
    let metrics = compare(&b, &n, golden.as_ref());
    Ok(Comparison {
        base: base.display().to_string(),
        new: new.display().to_string(),
        passed: metrics.iter().all(|m| !m.verdict.fails()),
        base_suite: format!("{} v{}", b.suite, b.suite_version),
        new_suite: format!("{} v{}", n.suite, n.suite_version),
        base_seed: b.seed,
        new_seed: n.seed,
        tolerance_from: tolerance_from.map(|p| p.display().to_string()),
        metrics,
    })
}

impl Comparison {
    /// The comparison as a person reads it: a header, one row per metric, and the verdict.
    pub fn text(&self) -> String {
        let num = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.6}"));
        let mut out = format!(
            "base {} ({}, seed {})\nnew  {} ({}, seed {})\n",
            self.base, self.base_suite, self.base_seed, self.new, self.new_suite, self.new_seed
        );
        if self.base_suite != self.new_suite {
            out.push_str("note: the two results are of different suites or versions\n");
        }
        out.push_str(&match &self.tolerance_from {
            Some(g) => format!("tolerances from {g} (0 for a metric it lacks)\n"),
            None => "tolerance 0: any difference is a change (--tolerance-from GOLDEN)\n".into(),
        });
        out.push_str(&format!(
            "{:<28} {:>12} {:>12} {:>12} {:>10}  verdict\n",
            "metric", "base", "new", "Δ", "tolerance"
        ));
        for m in &self.metrics {
            let delta = m.delta.map_or("—".to_string(), |d| format!("{d:+.6}"));
            out.push_str(&format!(
                "{:<28} {:>12} {:>12} {:>12} {:>10}  {}\n",
                m.metric,
                num(m.base),
                num(m.new),
                delta,
                format!("{:.4}", m.tolerance),
                m.verdict.label()
            ));
        }
        let failed = self.metrics.iter().filter(|m| m.verdict.fails()).count();
        out.push_str(&if self.passed {
            format!("SAME within tolerance: {} metrics\n", self.metrics.len())
        } else {
            format!(
                "DIFFERENT: {failed} of {} metrics changed beyond tolerance or missing\n",
                self.metrics.len()
            )
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(m: &[(&str, Option<f64>)]) -> ResultsSummary {
        ResultsSummary {
            suite: "s".into(),
            suite_version: 1,
            seed: 0,
            metrics: m.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn verdicts_cover_same_within_changed_and_missing() {
        let base = summary(&[
            ("a", Some(0.5)),
            ("b", Some(0.5)),
            ("c", Some(0.5)),
            ("d", Some(0.5)),
            ("nan", None),
            ("nan_one_side", Some(1.0)),
        ]);
        let new = summary(&[
            ("a", Some(0.5)),
            ("b", Some(0.55)),
            ("c", Some(0.7)),
            ("e", Some(1.0)),
            ("nan", None),
            ("nan_one_side", None),
        ]);
        let golden: Golden = toml::from_str(
            "suite = \"s\"\nsuite_version = 1\n[provenance]\nblessed_by = \"t\"\nblessed_at = \"t\"\nseed = 0\ncommit = \"x\"\nmachine = \"m\"\nresults_sha256 = \"0\"\n[metrics.b]\nvalue = 0.5\ntolerance = 0.1\n[metrics.c]\nvalue = 0.5\ntolerance = 0.1\n",
        )
        .unwrap();
        let v: Vec<(String, Change)> = compare(&base, &new, Some(&golden))
            .into_iter()
            .map(|m| (m.metric, m.verdict))
            .collect();
        let want = [
            ("a", Change::Same),
            ("b", Change::WithinTolerance),
            ("c", Change::Changed),
            ("d", Change::MissingInNew),
            ("e", Change::MissingInBase),
            ("nan", Change::Same),
            ("nan_one_side", Change::Changed),
        ];
        assert_eq!(v, want.map(|(k, c)| (k.to_string(), c)).to_vec());
        // Without a golden the small move is a change too.
        let b = compare(&base, &new, None);
        assert_eq!(b[1].verdict, Change::Changed);
        assert!((b[1].delta.unwrap() - 0.05).abs() < 1e-12);
    }
}
