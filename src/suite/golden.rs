//! Goldens: expected metric values with tolerances and provenance. The runner only reads them; `bless`
//! writes one from a results file, explicitly, recording who, when and from what.
pub mod bless;
pub mod paper;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Golden {
    pub suite: String,
    pub suite_version: u32,
    pub provenance: Provenance,
    pub metrics: BTreeMap<String, GoldenMetric>,
    /// The paper's qualitative claims as relations checked over seeds, with the outcome measured here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, super::claims::Claim>,
    /// Per-metric records over several seeds, judged by a t-test (see [`super::regression`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub regression: BTreeMap<String, super::regression::RegressionRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    pub blessed_by: String,
    pub blessed_at: String,
    pub seed: u64,
    pub commit: String,
    pub machine: String,
    pub results_sha256: String,
    #[serde(default)]
    pub note: String,
    /// The graph suite profile of the blessed results (None: the smoke form, or a golden blessed before
    /// profiles, which was the file as written, `paper`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenMetric {
    pub value: f64,
    /// Allowed |value − golden|.
    pub tolerance: f64,
    /// Why the tolerance is that size.
    #[serde(default)]
    pub why: String,
}

#[derive(Debug, thiserror::Error)]
pub enum GoldenError {
    #[error("no golden file at {path}; run the suite, inspect its results, then bless them with `contracam suite bless`")]
    Missing { path: PathBuf },
    #[error("cannot read golden {path}: {msg}")]
    Read { path: PathBuf, msg: String },
    #[error("golden {path} was blessed from a run at profile '{found}'; this run is at profile '{want}' (run with --profile {found}, or check against a golden blessed at '{want}')")]
    WrongProfile {
        path: PathBuf,
        found: String,
        want: String,
    },
    #[error("golden {path} is for suite '{found}' version {found_version}, this suite is '{want}' version {want_version}")]
    WrongSuite {
        path: PathBuf,
        found: String,
        found_version: u32,
        want: String,
        want_version: u32,
    },
}

impl Golden {
    pub fn read(path: &Path) -> Result<Self, GoldenError> {
        if !path.exists() {
            return Err(GoldenError::Missing { path: path.into() });
        }
        let text = std::fs::read_to_string(path).map_err(|e| GoldenError::Read {
            path: path.into(),
            msg: e.to_string(),
        })?;
        let de = toml::Deserializer::parse(&text).map_err(|e| GoldenError::Read {
            path: path.into(),
            msg: e.to_string(),
        })?;
        let g: Golden = serde_path_to_error::deserialize(de).map_err(|e| GoldenError::Read {
            path: path.into(),
            msg: format!("key '{}': {}", e.path(), e.inner()),
        })?;
        // A NaN or negative tolerance can never pass; a non-finite value can never be met.
        for (name, m) in &g.metrics {
            let bad = |key: &str, msg: &str| GoldenError::Read {
                path: path.into(),
                msg: format!("key 'metrics.\"{name}\".{key}': {msg}"),
            };
            if !m.value.is_finite() {
                return Err(bad("value", "must be finite"));
            }
            if !(m.tolerance.is_finite() && m.tolerance >= 0.0) {
                return Err(bad("tolerance", "must be a finite number ≥ 0"));
            }
        }
        for (name, r) in &g.regression {
            r.validate(name).map_err(|msg| GoldenError::Read {
                path: path.into(),
                msg,
            })?;
        }
        Ok(g)
    }

    pub fn check_suite(&self, path: &Path, name: &str, version: u32) -> Result<(), GoldenError> {
        if self.suite != name || self.suite_version != version {
            return Err(GoldenError::WrongSuite {
                path: path.into(),
                found: self.suite.clone(),
                found_version: self.suite_version,
                want: name.into(),
                want_version: version,
            });
        }
        Ok(())
    }
}

impl Golden {
    /// A golden judges runs of the profile it was blessed at only (values of a reduced profile say nothing
    /// about the paper's scale, nor the reverse). No recorded profile is `paper`.
    pub fn check_profile(&self, path: &Path, profile: &str) -> Result<(), GoldenError> {
        let found = self.provenance.profile.as_deref().unwrap_or("paper");
        if found != profile {
            return Err(GoldenError::WrongProfile {
                path: path.into(),
                found: found.into(),
                want: profile.into(),
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// The run produced the metric but the golden has no entry for it.
    NoGolden,
    /// The golden expects a metric the run did not produce.
    Missing,
    /// Not compared: the run's seed differs from the seed the golden was blessed at.
    NoGoldenForSeed,
    /// Failed or missing, and accepted by `suite run --allow-fail` with a reason (see `suite::bypass`).
    Bypassed,
}

impl Verdict {
    /// As printed in tables and reports.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::NoGolden => "NO GOLDEN",
            Verdict::Missing => "MISSING",
            Verdict::NoGoldenForSeed => "NOT CHECKED",
            Verdict::Bypassed => "BYPASSED",
        }
    }

    /// Whether the check lets the run pass: it passed, or its failure was accepted.
    pub fn ok(self) -> bool {
        matches!(self, Verdict::Pass | Verdict::Bypassed)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricCheck {
    pub metric: String,
    pub value: Option<f64>,
    pub golden: Option<f64>,
    pub tolerance: Option<f64>,
    pub verdict: Verdict,
}

/// The run's metrics marked as not checked: the golden was blessed at another seed, and values of one seed say
/// nothing about the tolerances of another.
pub fn not_checked(metrics: &BTreeMap<String, f64>) -> Vec<MetricCheck> {
    metrics
        .iter()
        .map(|(name, v)| MetricCheck {
            metric: name.clone(),
            value: Some(*v),
            golden: None,
            tolerance: None,
            verdict: Verdict::NoGoldenForSeed,
        })
        .collect()
}

/// Why a golden cannot judge a run at `seed`, or None when it can.
pub fn seed_mismatch(golden: &Golden, path: &Path, seed: u64) -> Option<String> {
    (golden.provenance.seed != seed).then(|| {
        format!(
            "no golden for seed {seed}: {} was blessed at seed {}; the metrics are reported but not checked",
            path.display(),
            golden.provenance.seed
        )
    })
}

/// Compares every metric with the golden; a metric on one side only is not a pass.
pub fn compare(metrics: &BTreeMap<String, f64>, golden: &Golden) -> Vec<MetricCheck> {
    let mut names: Vec<&String> = metrics.keys().chain(golden.metrics.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let value = metrics.get(name).copied();
            let g = golden.metrics.get(name);
            let verdict = match (value, g) {
                (Some(v), Some(g)) => {
                    if v.is_finite() && (v - g.value).abs() <= g.tolerance {
                        Verdict::Pass
                    } else {
                        Verdict::Fail
                    }
                }
                (Some(_), None) => Verdict::NoGolden,
                (None, _) => Verdict::Missing,
            };
            MetricCheck {
                metric: name.clone(),
                value,
                golden: g.map(|g| g.value),
                tolerance: g.map(|g| g.tolerance),
                verdict,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden() -> Golden {
        let mut metrics = BTreeMap::new();
        metrics.insert(
            "a".into(),
            GoldenMetric {
                value: 0.5,
                tolerance: 0.1,
                why: String::new(),
            },
        );
        metrics.insert(
            "b".into(),
            GoldenMetric {
                value: 1.0,
                tolerance: 0.0,
                why: String::new(),
            },
        );
        Golden {
            suite: "s".into(),
            suite_version: 1,
            provenance: Provenance {
                blessed_by: "t".into(),
                blessed_at: "now".into(),
                seed: 0,
                commit: "x".into(),
                machine: "m".into(),
                results_sha256: "0".into(),
                note: String::new(),
                profile: None,
            },
            metrics,
            claims: BTreeMap::new(),
            regression: BTreeMap::new(),
        }
    }

    #[test]
    fn verdicts() {
        let g = golden();
        let m = BTreeMap::from([("a".to_string(), 0.65), ("c".to_string(), 1.0)]);
        let v: Vec<(String, Verdict)> = compare(&m, &g)
            .into_iter()
            .map(|c| (c.metric, c.verdict))
            .collect();
        assert_eq!(
            v,
            vec![
                ("a".into(), Verdict::Fail),
                ("b".into(), Verdict::Missing),
                ("c".into(), Verdict::NoGolden)
            ]
        );
        let m = BTreeMap::from([("a".to_string(), 0.41), ("b".to_string(), 1.0)]);
        assert!(compare(&m, &g).iter().all(|c| c.verdict == Verdict::Pass));
        let m = BTreeMap::from([("a".to_string(), f64::NAN), ("b".to_string(), 1.0)]);
        assert_eq!(compare(&m, &g)[0].verdict, Verdict::Fail);
    }

    #[test]
    fn another_seed_is_not_checked() {
        let g = golden();
        let p = Path::new("g.toml");
        assert_eq!(seed_mismatch(&g, p, 0), None);
        let why = seed_mismatch(&g, p, 7).unwrap();
        assert!(
            why.contains("no golden for seed 7")
                && why.contains("g.toml")
                && why.contains("seed 0"),
            "{why}"
        );
        let m = BTreeMap::from([("a".to_string(), 0.5)]);
        let c = not_checked(&m);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].verdict, Verdict::NoGoldenForSeed);
        assert_eq!((c[0].value, c[0].golden), (Some(0.5), None));
    }
}
