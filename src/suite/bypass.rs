//! Accepted failures: `suite run --allow-fail ID --reason TEXT`. A golden check that did not pass — a metric
//! (FAIL or MISSING), a claim (by its id) or a regression record (by its metric) — becomes BYPASSED, and the
//! run passes when nothing else failed. Every bypass is recorded in the results with its reason and the
//! verdict it replaced, so reports show what was accepted and why. A name that is no check of the run is an
//! error: a bypass must not outlive the check it was written for unnoticed.
use serde::{Deserialize, Serialize};

use super::golden::Verdict;
use super::report::Results;

/// What the person running the suite accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bypass {
    /// Metric ids, claim ids or regression-record metrics.
    pub ids: Vec<String>,
    pub reason: String,
}

/// One `--allow-fail` as applied, in the results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BypassRecord {
    pub id: String,
    /// `metric`, `claim` or `regression`.
    pub check: String,
    /// The verdict it replaced (`PASS` when the check passed anyway and nothing was bypassed).
    pub was: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BypassError {
    #[error("--allow-fail needs --reason TEXT (why this failure is accepted; it is recorded in the results)")]
    NoReason,
    #[error("--allow-fail {id}: no golden metric, claim or regression record of this run has that name; checks: {known}")]
    Unknown { id: String, known: String },
}

fn bypassable(v: Verdict) -> bool {
    matches!(v, Verdict::Fail | Verdict::Missing)
}

/// Applies `bypass` to `results` and recomputes `passed`: a golden was checked, at the run's seed, and every
/// check passed or was bypassed.
pub fn apply(results: &mut Results, bypass: &Bypass) -> Result<(), BypassError> {
    if bypass.reason.trim().is_empty() {
        return Err(BypassError::NoReason);
    }
    for id in &bypass.ids {
        let mut found: Option<(&str, Verdict)> = None;
        let mut flip = |check: &'static str, v: &mut Verdict| {
            found = Some((check, *v));
            if bypassable(*v) {
                *v = Verdict::Bypassed;
            }
        };
        for c in results.checks.iter_mut().filter(|c| &c.metric == id) {
            flip("metric", &mut c.verdict);
        }
        for c in results.claims.iter_mut().filter(|c| &c.claim == id) {
            flip("claim", &mut c.verdict);
        }
        for c in results.regression.iter_mut().filter(|c| &c.metric == id) {
            flip("regression", &mut c.verdict);
        }
        let Some((check, was)) = found else {
            let mut known: Vec<&str> = results.checks.iter().map(|c| c.metric.as_str()).collect();
            known.extend(results.claims.iter().map(|c| c.claim.as_str()));
            known.extend(results.regression.iter().map(|c| c.metric.as_str()));
            known.sort_unstable();
            known.dedup();
            return Err(BypassError::Unknown {
                id: id.clone(),
                known: if known.is_empty() {
                    "none (no golden was checked)".into()
                } else {
                    known.join(", ")
                },
            });
        };
        results.bypassed.push(BypassRecord {
            id: id.clone(),
            check: check.into(),
            was: was.label().into(),
            reason: bypass.reason.clone(),
        });
    }
    results.passed = results.golden_file.is_some()
        && results.not_checked.is_none()
        && results.checks.iter().all(|c| c.verdict.ok())
        && results.claims.iter().all(|c| c.verdict.ok())
        && results.regression.iter().all(|c| c.verdict.ok());
    Ok(())
}
