//! Claims: the paper's qualitative statements as relations between metrics of one run (`oa_crop.linear_acc >
//! vanilla.linear_acc`), checked over several seeds with a one-sided paired t-test. A golden records, per
//! claim, the outcome measured on our data (`expect`), so a run that changes the outcome fails whichever way
//! it goes, and the report says plainly whether the paper's claim holds here.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

use super::golden::Verdict;

/// A claim as a golden stores it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    /// `<metric> > <metric>` or `<metric> < <metric>`.
    pub relation: String,
    /// Seeds the relation is tested over (at least 2; the paired test has n − 1 degrees of freedom).
    pub seeds: Vec<u64>,
    /// Significance level of the one-sided test.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// The outcome measured when the claim was recorded: whether the relation holds at `alpha`.
    pub expect: Outcome,
    /// Where the paper makes the claim.
    #[serde(default)]
    pub paper: String,
    /// The evidence behind `expect` (per-seed values, p-value, who measured it and on what).
    #[serde(default)]
    pub why: String,
}

fn default_alpha() -> f64 {
    0.05
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The relation holds: the mean paired difference is > 0 at the claim's significance level.
    Holds,
    /// The test does not show the relation at the claim's significance level.
    NotShown,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Holds => "holds",
            Outcome::NotShown => "not shown",
        }
    }
}

/// A parsed relation: `better` is claimed to exceed `worse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub better: String,
    pub worse: String,
}

impl Relation {
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        match parts.as_slice() {
            [a, ">", b] => Ok(Relation {
                better: a.to_string(),
                worse: b.to_string(),
            }),
            [a, "<", b] => Ok(Relation {
                better: b.to_string(),
                worse: a.to_string(),
            }),
            _ => Err(format!(
                "'{text}': expected '<metric> > <metric>' or '<metric> < <metric>', separated by spaces"
            )),
        }
    }

    pub fn metrics(&self) -> [&str; 2] {
        [&self.better, &self.worse]
    }
}

impl Claim {
    /// Checks what can be checked without running: the relation parses, names metrics the suite emits,
    /// has at least two distinct seeds and a significance level in (0, 1). Errors name the key.
    pub fn validate(&self, id: &str, known: &[String]) -> Result<Relation, String> {
        let key = |k: &str| format!("key 'claims.\"{id}\".{k}'");
        let rel =
            Relation::parse(&self.relation).map_err(|e| format!("{}: {e}", key("relation")))?;
        for m in rel.metrics() {
            if !known.iter().any(|k| k == m) {
                return Err(format!(
                    "{}: unknown metric '{m}'; the suite emits {}",
                    key("relation"),
                    known.join(", ")
                ));
            }
        }
        if rel.better == rel.worse {
            return Err(format!(
                "{}: compares a metric with itself",
                key("relation")
            ));
        }
        let mut seeds = self.seeds.clone();
        seeds.sort_unstable();
        seeds.dedup();
        if seeds.len() < 2 || seeds.len() != self.seeds.len() {
            return Err(format!(
                "{}: needs at least 2 distinct seeds (3 or more for a useful test), got {:?}",
                key("seeds"),
                self.seeds
            ));
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(format!("{}: {} is not in (0, 1)", key("alpha"), self.alpha));
        }
        Ok(rel)
    }
}

/// One-sided paired t-test of `mean(d) > 0` for the differences `d`: (mean, std (n − 1), t, p). With zero
/// spread the p-value is 0 for a positive mean and 1 otherwise.
pub fn paired_test(d: &[f64]) -> (f64, f64, f64, f64) {
    let n = d.len() as f64;
    let mean = d.iter().sum::<f64>() / n;
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let sd = var.sqrt();
    if sd == 0.0 {
        let p = if mean > 0.0 { 0.0 } else { 1.0 };
        let t = if mean > 0.0 {
            f64::INFINITY
        } else if mean < 0.0 {
            f64::NEG_INFINITY
        } else {
            0.0
        };
        return (mean, sd, t, p);
    }
    let t = mean / (sd / n.sqrt());
    let dist = StudentsT::new(0.0, 1.0, n - 1.0).expect("n ≥ 2 gives a valid distribution");
    (mean, sd, t, 1.0 - dist.cdf(t))
}

/// A claim checked over the run's seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimCheck {
    pub claim: String,
    pub relation: String,
    pub seeds: Vec<u64>,
    /// Per seed: (better, worse) metric values.
    pub values: Vec<(f64, f64)>,
    pub mean_diff: Option<f64>,
    pub p_value: Option<f64>,
    pub alpha: f64,
    pub outcome: Option<Outcome>,
    pub expect: Outcome,
    pub paper: String,
    /// Pass when the outcome is the recorded one; Missing when a seed lacks a metric.
    pub verdict: Verdict,
}

/// Checks `claim` against per-seed metrics.
pub fn check(
    id: &str,
    claim: &Claim,
    rel: &Relation,
    per_seed: &BTreeMap<u64, BTreeMap<String, f64>>,
) -> ClaimCheck {
    let values: Option<Vec<(f64, f64)>> = claim
        .seeds
        .iter()
        .map(|s| {
            let m = per_seed.get(s)?;
            Some((*m.get(&rel.better)?, *m.get(&rel.worse)?))
        })
        .collect();
    let mut c = ClaimCheck {
        claim: id.into(),
        relation: claim.relation.clone(),
        seeds: claim.seeds.clone(),
        values: values.clone().unwrap_or_default(),
        mean_diff: None,
        p_value: None,
        alpha: claim.alpha,
        outcome: None,
        expect: claim.expect,
        paper: claim.paper.clone(),
        verdict: Verdict::Missing,
    };
    let Some(values) = values.filter(|v| v.iter().all(|(a, b)| a.is_finite() && b.is_finite()))
    else {
        return c;
    };
    let d: Vec<f64> = values.iter().map(|(a, b)| a - b).collect();
    let (mean, _, _, p) = paired_test(&d);
    let outcome = if p < claim.alpha {
        Outcome::Holds
    } else {
        Outcome::NotShown
    };
    c.mean_diff = Some(mean);
    c.p_value = Some(p);
    c.outcome = Some(outcome);
    c.verdict = if outcome == claim.expect {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    c
}

/// Every seed any claim needs, in order.
pub fn seeds(claims: &BTreeMap<String, Claim>) -> Vec<u64> {
    let mut s: Vec<u64> = claims.values().flat_map(|c| c.seeds.clone()).collect();
    s.sort_unstable();
    s.dedup();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations_parse_both_ways_and_bad_ones_name_the_key() {
        let r = Relation::parse("a.x > b.y").unwrap();
        assert_eq!((r.better.as_str(), r.worse.as_str()), ("a.x", "b.y"));
        let r = Relation::parse("a.x < b.y").unwrap();
        assert_eq!((r.better.as_str(), r.worse.as_str()), ("b.y", "a.x"));
        assert!(Relation::parse("a.x >= b.y").is_err());
        assert!(Relation::parse("a.x>b.y").is_err());
        let known = vec!["a.x".to_string(), "b.y".to_string()];
        let claim = |relation: &str, seeds: Vec<u64>, alpha| Claim {
            relation: relation.into(),
            seeds,
            alpha,
            expect: Outcome::Holds,
            paper: String::new(),
            why: String::new(),
        };
        assert!(claim("a.x > b.y", vec![0, 1, 2], 0.05)
            .validate("c", &known)
            .is_ok());
        let e = claim("a.x > c.z", vec![0, 1], 0.05)
            .validate("c", &known)
            .unwrap_err();
        assert!(
            e.contains("claims.\"c\".relation") && e.contains("c.z"),
            "{e}"
        );
        let e = claim("a.x > b.y", vec![0, 0], 0.05)
            .validate("c", &known)
            .unwrap_err();
        assert!(e.contains("seeds"), "{e}");
        let e = claim("a.x > b.y", vec![0, 1], 1.0)
            .validate("c", &known)
            .unwrap_err();
        assert!(e.contains("alpha"), "{e}");
        assert!(claim("a.x > a.x", vec![0, 1], 0.05)
            .validate("c", &known)
            .is_err());
    }

    /// With 2 degrees of freedom Student's t has the closed form F(t) = 1/2 + t / (2·sqrt(2 + t²)), an answer
    /// independent of the library's incomplete beta function.
    #[test]
    fn paired_test_matches_the_closed_form_at_two_degrees_of_freedom() {
        for (d, t_want) in [
            ([0.044, -0.066, -0.068], -0.810_712_117_996_762_5_f64),
            ([0.25, 0.2, 0.3], 8.660_254_037_844_387),
        ] {
            let (_, _, t, p) = paired_test(&d);
            let p_want = 0.5 - t_want / (2.0 * (2.0 + t_want * t_want).sqrt());
            assert!((t - t_want).abs() < 1e-9, "t {t} vs {t_want}");
            assert!((p - p_want).abs() < 1e-9, "p {p} vs {p_want}");
        }
        assert_eq!(paired_test(&[0.1, 0.1]).3, 0.0);
        assert_eq!(paired_test(&[0.0, 0.0]).3, 1.0);
    }

    #[test]
    fn a_claim_passes_when_its_outcome_is_the_recorded_one() {
        let claim = |expect| Claim {
            relation: "a > b".into(),
            seeds: vec![0, 1, 2],
            alpha: 0.05,
            expect,
            paper: String::new(),
            why: String::new(),
        };
        let rel = Relation::parse("a > b").unwrap();
        let per_seed = |diffs: [f64; 3]| -> BTreeMap<u64, BTreeMap<String, f64>> {
            diffs
                .iter()
                .enumerate()
                .map(|(s, d)| {
                    (
                        s as u64,
                        BTreeMap::from([("a".to_string(), 1.0 + d), ("b".to_string(), 1.0)]),
                    )
                })
                .collect()
        };
        let holds = per_seed([0.25, 0.2, 0.3]);
        let mixed = per_seed([0.044, -0.066, -0.068]);
        let c = check("c", &claim(Outcome::Holds), &rel, &holds);
        assert_eq!(
            (c.outcome, c.verdict),
            (Some(Outcome::Holds), Verdict::Pass)
        );
        let c = check("c", &claim(Outcome::Holds), &rel, &mixed);
        assert_eq!(
            (c.outcome, c.verdict),
            (Some(Outcome::NotShown), Verdict::Fail)
        );
        let c = check("c", &claim(Outcome::NotShown), &rel, &holds);
        assert_eq!(
            c.verdict,
            Verdict::Fail,
            "a claim that starts to hold is a change too"
        );
        let mut missing = holds.clone();
        missing.remove(&2);
        assert_eq!(
            check("c", &claim(Outcome::Holds), &rel, &missing).verdict,
            Verdict::Missing
        );
    }
}
