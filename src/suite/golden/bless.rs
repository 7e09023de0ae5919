//! Blessing: a golden written from a results file, explicitly. Existing tolerances, reasons and the provenance
//! note are kept; a golden metric the results lack is kept and reported (or removed with an explicit drop);
//! the file is replaced atomically, so a failed bless leaves the old golden byte for byte.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{Golden, GoldenError, GoldenMetric, Provenance};
use crate::suite::regression::{RegressionRecord, RegressionTest, MIN_SEEDS};

#[derive(Debug, thiserror::Error)]
pub enum BlessError {
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    #[error("{0}")]
    Option(String),
    #[error(transparent)]
    Golden(#[from] GoldenError),
}

fn invalid(path: &Path, msg: impl Into<String>) -> BlessError {
    BlessError::Invalid {
        path: path.into(),
        msg: msg.into(),
    }
}

/// What the person blessing decides.
#[derive(Debug, Clone, Default)]
pub struct BlessOptions {
    /// Tolerance for metrics the golden does not have yet.
    pub default_tolerance: Option<f64>,
    /// Who blesses.
    pub by: String,
    /// Replaces the provenance note; None keeps the existing one.
    pub note: Option<String>,
    /// Golden metrics to remove.
    pub drop: Vec<String>,
}

/// What a bless did, for the person to read.
#[derive(Debug, Clone)]
pub struct BlessOutcome {
    pub golden: Golden,
    /// Metrics new to the golden (tolerance from `default_tolerance`).
    pub added: Vec<String>,
    /// Golden metrics absent from the results, kept with their old values.
    pub kept_missing: Vec<String>,
    pub dropped: Vec<String>,
}

/// Reads `results`, blesses them into `golden` (created or updated) and writes it atomically.
pub fn bless_file(
    results: &Path,
    golden: &Path,
    opts: &BlessOptions,
) -> Result<BlessOutcome, BlessError> {
    bless_into_file(results, golden, |bytes, old, now| {
        bless(bytes, results, old, golden, opts, now)
    })
}

/// Reads `results` and the golden at `golden` (if any), blesses with `f`, writes the new golden atomically.
fn bless_into_file(
    results: &Path,
    golden: &Path,
    f: impl FnOnce(&[u8], Option<&Golden>, &str) -> Result<BlessOutcome, BlessError>,
) -> Result<BlessOutcome, BlessError> {
    let bytes = std::fs::read(results).map_err(|e| invalid(results, e.to_string()))?;
    let old = if golden.exists() {
        Some(Golden::read(golden)?)
    } else {
        None
    };
    let out = f(&bytes, old.as_ref(), &super::super::now_utc())?;
    let text = toml::to_string_pretty(&out.golden)
        .map_err(|e| invalid(golden, format!("cannot serialise: {e}")))?;
    write_atomic(golden, text.as_bytes())?;
    Ok(out)
}

/// The results JSON, refused when it was made with a deliberate fault (such results are never blessed).
fn parse_results(bytes: &[u8], results: &Path) -> Result<serde_json::Value, BlessError> {
    let r: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| invalid(results, format!("not JSON: {e}")))?;
    if let Some(f) = r.get("fault").and_then(|f| f.as_str()) {
        return Err(invalid(
            results,
            format!("was made with the deliberate fault '{f}' (a test run); it cannot be blessed"),
        ));
    }
    Ok(r)
}

/// The golden blessed from results `bytes` (read from `results`) over the existing golden `old` at `golden`.
pub fn bless(
    bytes: &[u8],
    results: &Path,
    old: Option<&Golden>,
    golden: &Path,
    opts: &BlessOptions,
    now: &str,
) -> Result<BlessOutcome, BlessError> {
    if let Some(t) = opts.default_tolerance {
        if !(t.is_finite() && t >= 0.0) {
            return Err(BlessError::Option(format!(
                "--default-tolerance {t}: must be a finite number ≥ 0"
            )));
        }
    }
    if let Some(n) = &opts.note {
        if n.trim().is_empty() {
            return Err(BlessError::Option(
                "--note is empty; leave it out to keep the golden's note".into(),
            ));
        }
    }
    let r = parse_results(bytes, results)?;
    let field = |k: &str| {
        r.get(k).ok_or_else(|| {
            invalid(
                results,
                format!("no field '{k}' (is this a suite results file?)"),
            )
        })
    };
    let text = |k: &str| -> Result<String, BlessError> {
        field(k)?
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| invalid(results, format!("field '{k}' must be a string")))
    };
    let int = |k: &str| -> Result<u64, BlessError> {
        field(k)?.as_u64().ok_or_else(|| {
            invalid(
                results,
                format!("field '{k}' must be a non-negative integer"),
            )
        })
    };
    let suite = text("suite")?;
    let suite_version = u32::try_from(int("suite_version")?)
        .map_err(|_| invalid(results, "field 'suite_version' is too large"))?;
    if let Some(g) = old {
        if g.suite != suite || g.suite_version != suite_version {
            return Err(invalid(
                golden,
                format!(
                    "is for suite '{}' version {}, the results are for '{suite}' version {suite_version}; \
                     bless into a new golden file instead",
                    g.suite, g.suite_version
                ),
            ));
        }
    }
    let profile = r.get("profile").and_then(|v| v.as_str());
    if let Some(g) = old {
        let (have, got) = (
            g.provenance.profile.as_deref().unwrap_or("paper"),
            profile.unwrap_or("paper"),
        );
        if have != got {
            return Err(invalid(
                golden,
                format!(
                    "was blessed at profile '{have}', the results are of profile '{got}'; a golden holds one \
                     profile: bless into a golden file of its own for '{got}'"
                ),
            ));
        }
    }
    let metrics: BTreeMap<String, f64> = serde_json::from_value(field("metrics")?.clone())
        .map_err(|e| invalid(results, format!("field 'metrics': {e}")))?;
    let old_metrics = old.map(|g| g.metrics.clone()).unwrap_or_default();
    for d in &opts.drop {
        if !old_metrics.contains_key(d) {
            return Err(BlessError::Option(format!(
                "--drop {d}: the golden {} has no such metric",
                golden.display()
            )));
        }
    }
    let mut out = BTreeMap::new();
    let mut added = Vec::new();
    for (name, value) in &metrics {
        if opts.drop.contains(name) {
            continue;
        }
        if !value.is_finite() {
            return Err(invalid(
                results,
                format!("metric {name} is {value}; refusing to bless a non-finite value"),
            ));
        }
        let m = match old_metrics.get(name) {
            Some(p) => GoldenMetric {
                value: *value,
                ..p.clone()
            },
            None => {
                let tolerance = opts.default_tolerance.ok_or_else(|| {
                    BlessError::Option(format!(
                        "metric {name} has no tolerance in {}; pass --default-tolerance",
                        golden.display()
                    ))
                })?;
                added.push(name.clone());
                GoldenMetric {
                    value: *value,
                    tolerance,
                    why: String::new(),
                }
            }
        };
        out.insert(name.clone(), m);
    }
    // Never drop silently: a golden metric the run did not produce stays unless dropped by name.
    let mut kept_missing = Vec::new();
    for (name, m) in &old_metrics {
        if !metrics.contains_key(name) && !opts.drop.contains(name) {
            kept_missing.push(name.clone());
            out.insert(name.clone(), m.clone());
        }
    }
    let machine = machine(&r, results)?;
    let note = match (&opts.note, old) {
        (Some(n), _) => n.clone(),
        (None, Some(g)) => g.provenance.note.clone(),
        (None, None) => String::new(),
    };
    let golden = Golden {
        suite,
        suite_version,
        provenance: Provenance {
            blessed_by: opts.by.clone(),
            blessed_at: now.into(),
            seed: int("seed")?,
            commit: text("git_hash")?,
            machine,
            results_sha256: hex::encode(Sha256::digest(bytes)),
            note,
            profile: profile.map(String::from),
        },
        metrics: out,
        // Claims are measured over several seeds and recorded by hand with their evidence; a bless of one
        // run's values keeps them as they are.
        claims: old.map(|g| g.claims.clone()).unwrap_or_default(),
        regression: old.map(|g| g.regression.clone()).unwrap_or_default(),
    };
    Ok(BlessOutcome {
        golden,
        added,
        kept_missing,
        dropped: opts.drop.clone(),
    })
}

/// The machine line of the provenance, from a results JSON's `env` and `device`.
fn machine(r: &serde_json::Value, results: &Path) -> Result<String, BlessError> {
    let env = r
        .get("env")
        .ok_or_else(|| invalid(results, "no field 'env' (is this a suite results file?)"))?;
    let s = |k: &str| env.get(k).and_then(|v| v.as_str()).unwrap_or("?");
    Ok(format!(
        "{} · {} ({} kernels) · {} CPU threads · libtorch {} · device {}",
        s("os"),
        s("cpu_model"),
        s("cpu_isa"),
        env.get("cpu_threads").and_then(|v| v.as_u64()).unwrap_or(0),
        s("libtorch"),
        r.get("device").and_then(|v| v.as_str()).unwrap_or("?")
    ))
}

/// What a person blessing regression records decides (`suite bless --regression`).
#[derive(Debug, Clone)]
pub struct RegressionBlessOptions {
    pub by: String,
    pub test: RegressionTest,
    pub alpha: f64,
    /// The metrics to record (empty: every metric of the results).
    pub metrics: Vec<String>,
}

/// Reads a multi-seed `results`, writes regression records into `golden` (created or updated) atomically.
pub fn bless_regression_file(
    results: &Path,
    golden: &Path,
    opts: &RegressionBlessOptions,
) -> Result<BlessOutcome, BlessError> {
    bless_into_file(results, golden, |bytes, old, now| {
        bless_regression(bytes, results, old, golden, opts, now)
    })
}

/// Regression records from the per-seed values of results `bytes` (`metrics` at `seed`, `seed_metrics` at
/// the others), over the existing golden `old`. Each record carries its own provenance (who, when, commit,
/// machine, the results' sha256); its `why` survives a re-bless. The golden's point metrics, claims and
/// provenance are kept (a new golden takes its provenance from the results and has no point metrics). `added`
/// lists the metrics recorded for the first time.
pub fn bless_regression(
    bytes: &[u8],
    results: &Path,
    old: Option<&Golden>,
    golden: &Path,
    opts: &RegressionBlessOptions,
    now: &str,
) -> Result<BlessOutcome, BlessError> {
    if !(opts.alpha > 0.0 && opts.alpha < 1.0) {
        return Err(BlessError::Option(format!(
            "--alpha {}: must be in (0, 1)",
            opts.alpha
        )));
    }
    let r = parse_results(bytes, results)?;
    #[derive(serde::Deserialize)]
    struct View {
        suite: String,
        suite_version: u32,
        seed: u64,
        git_hash: String,
        metrics: BTreeMap<String, Option<f64>>,
        #[serde(default)]
        seed_metrics: BTreeMap<u64, BTreeMap<String, Option<f64>>>,
        #[serde(default)]
        profile: Option<String>,
    }
    let v: View = serde_json::from_value(r.clone())
        .map_err(|e| invalid(results, format!("not a suite results file: {e}")))?;
    if let Some(g) = old {
        if g.suite != v.suite || g.suite_version != v.suite_version {
            return Err(invalid(
                golden,
                format!(
                    "is for suite '{}' version {}, the results are for '{}' version {}; \
                     bless into a new golden file instead",
                    g.suite, g.suite_version, v.suite, v.suite_version
                ),
            ));
        }
    }
    let mut per_seed = v.seed_metrics;
    per_seed.insert(v.seed, v.metrics.clone());
    if per_seed.len() < MIN_SEEDS {
        return Err(invalid(
            results,
            format!(
                "holds {} seed(s) ({:?}); a regression record needs at least {MIN_SEEDS}: run with --seeds {MIN_SEEDS} or more",
                per_seed.len(),
                per_seed.keys().collect::<Vec<_>>()
            ),
        ));
    }
    let names: Vec<String> = if opts.metrics.is_empty() {
        v.metrics.keys().cloned().collect()
    } else {
        opts.metrics.clone()
    };
    let machine = machine(&r, results)?;
    let sha = hex::encode(Sha256::digest(bytes));
    let mut g = match old {
        Some(g) => g.clone(),
        None => Golden {
            suite: v.suite.clone(),
            suite_version: v.suite_version,
            provenance: Provenance {
                blessed_by: opts.by.clone(),
                blessed_at: now.into(),
                seed: v.seed,
                commit: v.git_hash.clone(),
                machine: machine.clone(),
                results_sha256: sha.clone(),
                note: String::new(),
                profile: v.profile.clone(),
            },
            metrics: BTreeMap::new(),
            claims: BTreeMap::new(),
            regression: BTreeMap::new(),
        },
    };
    let mut added = Vec::new();
    for name in &names {
        let mut seeds = Vec::new();
        let mut values = Vec::new();
        for (seed, m) in &per_seed {
            match m.get(name) {
                Some(Some(x)) if x.is_finite() => {
                    seeds.push(*seed);
                    values.push(*x);
                }
                Some(_) => {
                    return Err(invalid(
                        results,
                        format!("metric {name} is not finite at seed {seed}; refusing to bless it"),
                    ))
                }
                None => {
                    return Err(invalid(
                        results,
                        format!("metric {name} is missing at seed {seed}"),
                    ))
                }
            }
        }
        let mut rec = RegressionRecord::from_values(opts.test, opts.alpha, seeds, values);
        rec.blessed_by = opts.by.clone();
        rec.blessed_at = now.into();
        rec.commit = v.git_hash.clone();
        rec.results_sha256 = sha.clone();
        rec.machine = machine.clone();
        match g.regression.get(name) {
            Some(prev) => rec.why = prev.why.clone(),
            None => added.push(name.clone()),
        }
        g.regression.insert(name.clone(), rec);
    }
    Ok(BlessOutcome {
        golden: g,
        added,
        kept_missing: Vec::new(),
        dropped: Vec::new(),
    })
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BlessError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".golden-")
        .tempfile_in(dir)
        .map_err(|e| invalid(dir, e.to_string()))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| invalid(tmp.path(), e.to_string()))?;
    tmp.persist(path)
        .map_err(|e| invalid(path, e.error.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(suite: &str, version: u32, metrics: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "suite": suite, "suite_version": version, "seed": 0, "git_hash": "abc123",
            "device": "cpu",
            "env": {"os": "linux", "cpu_model": "Test CPU", "cpu_isa": "avx2", "cpu_threads": 2, "libtorch": "2.11.0"},
            "metrics": metrics,
        }))
        .unwrap()
    }

    fn old_golden() -> Golden {
        let m = |value, tolerance, why: &str| GoldenMetric {
            value,
            tolerance,
            why: why.into(),
        };
        Golden {
            suite: "s".into(),
            suite_version: 1,
            provenance: Provenance {
                blessed_by: "a".into(),
                blessed_at: "then".into(),
                seed: 0,
                commit: "old".into(),
                machine: "m".into(),
                results_sha256: "0".into(),
                note: "the original note".into(),
                profile: None,
            },
            metrics: BTreeMap::from([
                ("a".to_string(), m(1.0, 0.1, "why a")),
                ("b".to_string(), m(2.0, 0.2, "why b")),
            ]),
            claims: BTreeMap::new(),
            regression: BTreeMap::new(),
        }
    }

    fn opts() -> BlessOptions {
        BlessOptions {
            by: "tester".into(),
            ..BlessOptions::default()
        }
    }

    fn run(
        bytes: &[u8],
        old: Option<&Golden>,
        o: &BlessOptions,
    ) -> Result<BlessOutcome, BlessError> {
        bless(
            bytes,
            Path::new("r.json"),
            old,
            Path::new("g.toml"),
            o,
            "now",
        )
    }

    #[test]
    fn keeps_tolerances_reasons_and_note_and_records_provenance() {
        let bytes = results("s", 1, serde_json::json!({"a": 1.05, "b": 2.5}));
        let out = run(&bytes, Some(&old_golden()), &opts()).unwrap();
        let g = &out.golden;
        assert_eq!(g.metrics["a"].value, 1.05);
        assert_eq!(
            (g.metrics["a"].tolerance, g.metrics["a"].why.as_str()),
            (0.1, "why a")
        );
        assert_eq!(g.provenance.note, "the original note");
        assert_eq!(g.provenance.blessed_by, "tester");
        assert_eq!(g.provenance.commit, "abc123");
        assert_eq!(
            g.provenance.results_sha256,
            hex::encode(Sha256::digest(&bytes))
        );
        assert!(
            g.provenance.machine.contains("Test CPU"),
            "{}",
            g.provenance.machine
        );
        assert!(out.added.is_empty() && out.kept_missing.is_empty());
        let o = BlessOptions {
            note: Some("re-blessed after X".into()),
            ..opts()
        };
        let out = run(&bytes, Some(&old_golden()), &o).unwrap();
        assert_eq!(out.golden.provenance.note, "re-blessed after X");
        let o = BlessOptions {
            note: Some("  ".into()),
            ..opts()
        };
        let e = run(&bytes, Some(&old_golden()), &o)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--note is empty"), "{e}");
    }

    #[test]
    fn refuses_another_suite_or_version() {
        for (suite, version) in [("other", 1), ("s", 2)] {
            let bytes = results(suite, version, serde_json::json!({"a": 1.0, "b": 2.0}));
            let e = run(&bytes, Some(&old_golden()), &opts())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("g.toml")
                    && e.contains("suite 's' version 1")
                    && e.contains(&format!("'{suite}' version {version}")),
                "{e}"
            );
        }
        // A new golden takes whatever suite the results are for.
        let bytes = results("other", 3, serde_json::json!({"a": 1.0}));
        let o = BlessOptions {
            default_tolerance: Some(0.5),
            ..opts()
        };
        let g = run(&bytes, None, &o).unwrap().golden;
        assert_eq!((g.suite.as_str(), g.suite_version), ("other", 3));
        assert_eq!(g.provenance.note, "");
    }

    #[test]
    fn refuses_nan_or_negative_tolerances_and_non_finite_values() {
        let bytes = results("s", 1, serde_json::json!({"a": 1.0, "b": 2.0, "c": 3.0}));
        for t in [f64::NAN, -1.0, f64::INFINITY] {
            let o = BlessOptions {
                default_tolerance: Some(t),
                ..opts()
            };
            let e = run(&bytes, Some(&old_golden()), &o)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("--default-tolerance") && e.contains("finite number ≥ 0"),
                "{e}"
            );
        }
        let e = run(&bytes, Some(&old_golden()), &opts())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("metric c has no tolerance") && e.contains("--default-tolerance"),
            "{e}"
        );
        let o = BlessOptions {
            default_tolerance: Some(0.25),
            ..opts()
        };
        let out = run(&bytes, Some(&old_golden()), &o).unwrap();
        assert_eq!(out.added, ["c"]);
        assert_eq!(out.golden.metrics["c"].tolerance, 0.25);
        // JSON has no NaN: a non-finite metric arrives as null and is refused, naming the results file.
        let bytes = results("s", 1, serde_json::json!({"a": null, "b": 2.0}));
        let e = run(&bytes, Some(&old_golden()), &opts())
            .unwrap_err()
            .to_string();
        assert!(e.contains("r.json") && e.contains("metrics"), "{e}");
    }

    #[test]
    fn a_golden_metric_missing_from_the_results_is_kept_unless_dropped() {
        let bytes = results("s", 1, serde_json::json!({"a": 1.01}));
        let out = run(&bytes, Some(&old_golden()), &opts()).unwrap();
        assert_eq!(out.kept_missing, ["b"]);
        assert_eq!(out.golden.metrics["b"].value, 2.0);
        assert_eq!(out.golden.metrics["b"].why, "why b");
        let o = BlessOptions {
            drop: vec!["b".into()],
            ..opts()
        };
        let out = run(&bytes, Some(&old_golden()), &o).unwrap();
        assert!(out.kept_missing.is_empty());
        assert_eq!(out.dropped, ["b"]);
        assert_eq!(out.golden.metrics.keys().collect::<Vec<_>>(), ["a"]);
        let o = BlessOptions {
            drop: vec!["zz".into()],
            ..opts()
        };
        let e = run(&bytes, Some(&old_golden()), &o)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--drop zz") && e.contains("no such metric"),
            "{e}"
        );
    }

    #[test]
    fn the_file_is_replaced_atomically_and_a_failed_bless_leaves_it_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let golden = dir.path().join("g.toml");
        let text = toml::to_string_pretty(&old_golden()).unwrap();
        std::fs::write(&golden, &text).unwrap();
        let res = dir.path().join("r.json");
        std::fs::write(&res, results("other", 1, serde_json::json!({"a": 1.0}))).unwrap();
        assert!(bless_file(&res, &golden, &opts()).is_err());
        assert_eq!(std::fs::read_to_string(&golden).unwrap(), text);
        std::fs::write(
            &res,
            results("s", 1, serde_json::json!({"a": 1.5, "b": 2.5})),
        )
        .unwrap();
        bless_file(&res, &golden, &opts()).unwrap();
        let g = Golden::read(&golden).unwrap();
        assert_eq!(g.metrics["a"].value, 1.5);
        assert_eq!(g.provenance.note, "the original note");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    }

    #[test]
    fn a_golden_with_a_negative_or_nan_tolerance_does_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let golden = dir.path().join("g.toml");
        let text = toml::to_string_pretty(&old_golden()).unwrap();
        for bad in ["tolerance = -1.0", "tolerance = nan"] {
            let t = text.replacen("tolerance = 0.1", bad, 1);
            assert_ne!(t, text);
            std::fs::write(&golden, t).unwrap();
            let e = Golden::read(&golden).unwrap_err().to_string();
            assert!(
                e.contains("g.toml") && e.contains("metrics.\"a\".tolerance"),
                "{e}"
            );
        }
    }
}
