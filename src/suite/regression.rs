//! Regression goldens, MLPerf-RCP style: a metric's values over several seeds recorded once (per-seed
//! values, mean, sample std, the olympic mean from 5 seeds), and a later run judged against them by a
//! t-test at the record's α:
//! - `reproduces` (two-sided): the run's mean must not differ significantly from the recorded mean;
//! - `not-worse` (one-sided): the run must not be significantly worse, "worse" as the metric's direction
//!   in the registry says.
//!
//! With two or more new values the test is Welch's (unequal variances, Welch–Satterthwaite degrees of
//! freedom); with one it is the prediction-interval statistic t = (x − mean) / (s·sqrt(1 + 1/n)) with
//! n − 1 degrees of freedom. The tests use the plain mean and std of every recorded value; the olympic
//! mean (min and max dropped) is recorded beside them as the robust reference a person compares with.
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

use super::golden::Verdict;
use super::stage::Direction;

/// The fewest seeds a record holds.
pub const MIN_SEEDS: usize = 3;
/// From this many seeds a record carries the olympic mean.
pub const OLYMPIC_SEEDS: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegressionTest {
    /// Two-sided: the run reproduces the recorded distribution.
    Reproduces,
    /// One-sided: the run is not worse (for testing a model change).
    NotWorse,
}

impl RegressionTest {
    pub fn label(self) -> &'static str {
        match self {
            RegressionTest::Reproduces => "reproduces",
            RegressionTest::NotWorse => "not-worse",
        }
    }
}

/// `[regression."<metric>"]` of a golden.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegressionRecord {
    pub test: RegressionTest,
    /// Significance level of the test.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// The seeds the values were measured at, in the order of `values`.
    pub seeds: Vec<u64>,
    pub values: Vec<f64>,
    pub mean: f64,
    /// Sample standard deviation (n − 1).
    pub std: f64,
    /// Mean without the smallest and largest value (from 5 seeds on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub olympic_mean: Option<f64>,
    /// Who blessed the record, when, from which results file (sha256), commit and machine.
    pub blessed_by: String,
    pub blessed_at: String,
    pub commit: String,
    pub results_sha256: String,
    pub machine: String,
    /// Why the record is what it is (edited by hand; kept by later blessings).
    #[serde(default)]
    pub why: String,
}

fn default_alpha() -> f64 {
    0.05
}

/// Mean, sample std (n − 1; 0 for one value) and the olympic mean (from [`OLYMPIC_SEEDS`] values).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    pub std: f64,
    pub olympic_mean: Option<f64>,
}

pub fn summary(values: &[f64]) -> Summary {
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n as f64;
    let std = if n > 1 {
        (values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    let olympic_mean = (n >= OLYMPIC_SEEDS).then(|| {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        v[1..n - 1].iter().sum::<f64>() / (n - 2) as f64
    });
    Summary {
        n,
        mean,
        std,
        olympic_mean,
    }
}

/// Welch's t of `new` against `recorded` (positive when the new mean is larger) and its degrees of
/// freedom. Both need two values or more. None when both spreads are zero (no t exists).
pub fn welch(recorded: &[f64], new: &[f64]) -> Option<(f64, f64)> {
    let (a, b) = (summary(recorded), summary(new));
    let (va, vb) = (a.std.powi(2) / a.n as f64, b.std.powi(2) / b.n as f64);
    let se2 = va + vb;
    if se2 == 0.0 {
        return None;
    }
    let t = (b.mean - a.mean) / se2.sqrt();
    let df = se2.powi(2) / (va.powi(2) / (a.n - 1) as f64 + vb.powi(2) / (b.n - 1) as f64);
    Some((t, df))
}

/// The prediction-interval t of one new value `x` against `recorded` (n values): (x − mean) /
/// (s·sqrt(1 + 1/n)) with n − 1 degrees of freedom. None when the recorded spread is zero.
pub fn prediction_t(recorded: &[f64], x: f64) -> Option<(f64, f64)> {
    let s = summary(recorded);
    let se = s.std * (1.0 + 1.0 / s.n as f64).sqrt();
    (se > 0.0).then(|| ((x - s.mean) / se, (s.n - 1) as f64))
}

/// P(T ≤ t) for Student's t with `df` degrees of freedom.
pub fn t_cdf(t: f64, df: f64) -> f64 {
    if t == f64::INFINITY {
        return 1.0;
    }
    if t == f64::NEG_INFINITY {
        return 0.0;
    }
    StudentsT::new(0.0, 1.0, df)
        .map(|d| d.cdf(t))
        .unwrap_or(f64::NAN)
}

/// The p-value of `test` for statistic `t` (new − recorded) with `df` degrees of freedom: two-sided for
/// `reproduces`; for `not-worse` the probability of a result at least this far on the worse side.
pub fn p_value(test: RegressionTest, direction: Direction, t: f64, df: f64) -> f64 {
    match (test, direction) {
        (RegressionTest::NotWorse, Direction::HigherIsBetter) => t_cdf(t, df),
        (RegressionTest::NotWorse, Direction::LowerIsBetter) => 1.0 - t_cdf(t, df),
        // A metric without a better side can only be reproduced (refused when the golden is read).
        _ => (2.0 * (1.0 - t_cdf(t.abs(), df))).min(1.0),
    }
}

impl RegressionRecord {
    /// A record of `values` measured at `seeds`; the provenance fields are the caller's to fill.
    pub fn from_values(
        test: RegressionTest,
        alpha: f64,
        seeds: Vec<u64>,
        values: Vec<f64>,
    ) -> Self {
        let s = summary(&values);
        RegressionRecord {
            test,
            alpha,
            seeds,
            values,
            mean: s.mean,
            std: s.std,
            olympic_mean: s.olympic_mean,
            blessed_by: String::new(),
            blessed_at: String::new(),
            commit: String::new(),
            results_sha256: String::new(),
            machine: String::new(),
            why: String::new(),
        }
    }

    /// Checks a record as read: at least [`MIN_SEEDS`] distinct seeds, one finite value each, α in (0, 1),
    /// and mean, std and olympic mean that are those of the values (so no hand edit can make them
    /// disagree). Errors name the key.
    pub fn validate(&self, id: &str) -> Result<(), String> {
        let key = |k: &str| format!("key 'regression.\"{id}\".{k}'");
        let mut seeds = self.seeds.clone();
        seeds.sort_unstable();
        seeds.dedup();
        if seeds.len() != self.seeds.len() || seeds.len() < MIN_SEEDS {
            return Err(format!(
                "{}: needs at least {MIN_SEEDS} distinct seeds, got {:?}",
                key("seeds"),
                self.seeds
            ));
        }
        if self.values.len() != self.seeds.len() {
            return Err(format!(
                "{}: {} values for {} seeds",
                key("values"),
                self.values.len(),
                self.seeds.len()
            ));
        }
        if let Some(v) = self.values.iter().find(|v| !v.is_finite()) {
            return Err(format!("{}: {v} is not finite", key("values")));
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(format!("{}: {} is not in (0, 1)", key("alpha"), self.alpha));
        }
        let s = summary(&self.values);
        // The stored numbers went through TOML's shortest round-trip formatting: equal up to rounding.
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-300);
        for (k, stored, want) in [("mean", self.mean, s.mean), ("std", self.std, s.std)] {
            if !close(stored, want) {
                return Err(format!(
                    "{}: {stored} is not the {k} of the values ({want})",
                    key(k)
                ));
            }
        }
        match (self.olympic_mean, s.olympic_mean) {
            (Some(a), Some(b)) if close(a, b) => {}
            (None, None) => {}
            (stored, want) => {
                return Err(format!(
                    "{}: {stored:?} is not the olympic mean of the values ({want:?}; recorded from {OLYMPIC_SEEDS} seeds on)",
                    key("olympic_mean")
                ))
            }
        }
        Ok(())
    }
}

/// A regression record checked against a run's values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionCheck {
    pub metric: String,
    pub test: RegressionTest,
    pub alpha: f64,
    pub recorded_mean: f64,
    pub recorded_std: f64,
    pub recorded_n: usize,
    /// The run's seeds and values (None where the run did not emit the metric).
    pub seeds: Vec<u64>,
    pub values: Vec<Option<f64>>,
    pub mean: Option<f64>,
    pub std: Option<f64>,
    /// `welch` (two or more new values) or `prediction` (one).
    pub method: Option<String>,
    pub t: Option<f64>,
    pub df: Option<f64>,
    pub p_value: Option<f64>,
    /// Pass when p ≥ α; Missing when a seed lacks the metric; Fail on a non-finite value.
    pub verdict: Verdict,
}

/// Judges the run's `(seed, value)` pairs against `record` of `metric`, whose direction is `direction`.
pub fn check(
    metric: &str,
    record: &RegressionRecord,
    direction: Direction,
    run: &[(u64, Option<f64>)],
) -> RegressionCheck {
    let mut c = RegressionCheck {
        metric: metric.into(),
        test: record.test,
        alpha: record.alpha,
        recorded_mean: record.mean,
        recorded_std: record.std,
        recorded_n: record.values.len(),
        seeds: run.iter().map(|(s, _)| *s).collect(),
        values: run.iter().map(|(_, v)| *v).collect(),
        mean: None,
        std: None,
        method: None,
        t: None,
        df: None,
        p_value: None,
        verdict: Verdict::Missing,
    };
    let Some(values) = run.iter().map(|(_, v)| *v).collect::<Option<Vec<f64>>>() else {
        return c;
    };
    if values.is_empty() {
        return c;
    }
    if values.iter().any(|v| !v.is_finite()) {
        c.verdict = Verdict::Fail;
        return c;
    }
    let s = summary(&values);
    c.mean = Some(s.mean);
    c.std = Some(s.std);
    let (method, stat) = if values.len() >= 2 {
        ("welch", welch(&record.values, &values))
    } else {
        ("prediction", prediction_t(&record.values, values[0]))
    };
    c.method = Some(method.into());
    // No spread on either side (a bitwise-reproducible machine): equal means reproduce, others do not.
    let (t, df) = stat.unwrap_or_else(|| {
        let d = s.mean - record.mean;
        let t = if d > 0.0 {
            f64::INFINITY
        } else if d < 0.0 {
            f64::NEG_INFINITY
        } else {
            0.0
        };
        (t, f64::NAN)
    });
    let p = if t == 0.0 && df.is_nan() {
        // t = 0 with no distribution: the means are equal, the least evidence of a change there is.
        1.0
    } else {
        p_value(record.test, direction, t, df)
    };
    c.t = Some(t);
    c.df = Some(df).filter(|d| d.is_finite());
    c.p_value = Some(p);
    c.verdict = if p >= record.alpha {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_drops_min_and_max_for_the_olympic_mean_from_five_values() {
        let s = summary(&[1.0, 2.0, 3.0]);
        assert_eq!((s.n, s.mean, s.std, s.olympic_mean), (3, 2.0, 1.0, None));
        let s = summary(&[10.0, 1.0, 2.0, 3.0, -50.0]);
        assert_eq!(s.olympic_mean, Some(2.0));
    }

    #[test]
    fn a_record_whose_summary_disagrees_with_its_values_is_refused() {
        let r = RegressionRecord::from_values(
            RegressionTest::Reproduces,
            0.05,
            vec![0, 1, 2],
            vec![1.0, 2.0, 3.0],
        );
        r.validate("m").unwrap();
        let bad = RegressionRecord {
            mean: 2.5,
            ..r.clone()
        };
        let e = bad.validate("m").unwrap_err();
        assert!(e.contains("regression.\"m\".mean"), "{e}");
        let bad = RegressionRecord {
            seeds: vec![0, 1],
            values: vec![1.0, 2.0],
            ..r.clone()
        };
        assert!(bad.validate("m").unwrap_err().contains("at least 3"));
        let bad = RegressionRecord {
            olympic_mean: Some(2.0),
            ..r.clone()
        };
        assert!(bad.validate("m").unwrap_err().contains("olympic_mean"));
        let bad = RegressionRecord { alpha: 0.0, ..r };
        assert!(bad.validate("m").unwrap_err().contains("alpha"));
    }
}
