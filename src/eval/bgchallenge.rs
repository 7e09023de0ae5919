//! Background Challenge metrics (Xiao et al., MadryLab/backgrounds_challenge) as the paper's Table 7:
//! top-1 accuracy (percent) of the linear probe trained on IN-9 Original on each variant's `val`, and
//! BG-Gap = Acc(Mixed-Same) − Acc(Mixed-Rand) computed **per trial**, then averaged over trials.
use std::collections::BTreeMap;

use serde::Serialize;
use tch::Tensor;

use super::linear::LinearClassifier;

/// The IN-9 test variants (folder names under `bg_challenge/`).
pub const IN9_VARIANTS: [&str; 8] = [
    "original",
    "only_bg_b",
    "only_bg_t",
    "no_fg",
    "only_fg",
    "mixed_same",
    "mixed_rand",
    "mixed_next",
];

/// BG-Gap in points.
pub fn bg_gap(mixed_same: f64, mixed_rand: f64) -> f64 {
    mixed_same - mixed_rand
}

/// One trial: accuracy per test set (percent) and its BG-Gap when both mixed sets are present.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BgTrial {
    pub accuracy: BTreeMap<String, f64>,
    pub bg_gap: Option<f64>,
}

impl BgTrial {
    /// Scores one trial's classifier: top-1 accuracy in percent (100 × the library's fraction) on each
    /// named test set of features and labels, and the BG-Gap when `mixed_same` and `mixed_rand` are
    /// among them.
    pub fn score(clf: &LinearClassifier, sets: &BTreeMap<String, (Tensor, Tensor)>) -> Self {
        BgTrial::new(
            sets.iter()
                .map(|(name, (x, y))| (name.clone(), 100.0 * clf.accuracy(x, y)))
                .collect(),
        )
    }

    pub fn new(accuracy: BTreeMap<String, f64>) -> Self {
        let bg_gap = match (accuracy.get("mixed_same"), accuracy.get("mixed_rand")) {
            (Some(&s), Some(&r)) => Some(bg_gap(s, r)),
            _ => None,
        };
        BgTrial { accuracy, bg_gap }
    }
}

/// Mean and standard deviation over trials.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

/// `np.mean` / `np.std(ddof)` (the paper does not say which ddof; numpy's default is 0).
pub fn mean_std(v: &[f64], ddof: usize) -> MeanStd {
    let n = v.len();
    let mean = v.iter().sum::<f64>() / n as f64;
    let var = if n > ddof {
        v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - ddof) as f64
    } else {
        f64::NAN
    };
    MeanStd {
        mean,
        std: var.sqrt(),
        n,
    }
}

/// Per-set and BG-Gap summaries over trials; the gap is averaged from per-trial gaps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BgSummary {
    pub accuracy: BTreeMap<String, MeanStd>,
    pub bg_gap: Option<MeanStd>,
}

pub fn summarize_trials(trials: &[BgTrial], ddof: usize) -> BgSummary {
    let mut accuracy = BTreeMap::new();
    if let Some(first) = trials.first() {
        for name in first.accuracy.keys() {
            let v: Vec<f64> = trials
                .iter()
                .filter_map(|t| t.accuracy.get(name).copied())
                .collect();
            if v.len() == trials.len() {
                accuracy.insert(name.clone(), mean_std(&v, ddof));
            }
        }
    }
    let gaps: Vec<f64> = trials.iter().filter_map(|t| t.bg_gap).collect();
    let bg_gap = (!gaps.is_empty() && gaps.len() == trials.len()).then(|| mean_std(&gaps, ddof));
    BgSummary { accuracy, bg_gap }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table7_gaps_are_mixed_same_minus_mixed_rand() {
        // Paper Table 7 (MoCo baseline): 80.98 − 60.34 = 20.64; (MoCo BG-Mixup) 84.13 − 66.89 = 17.24.
        assert!((bg_gap(80.98, 60.34) - 20.64).abs() < 1e-9);
        assert!((bg_gap(84.13, 66.89) - 17.24).abs() < 1e-9);
    }

    #[test]
    fn gap_is_averaged_per_trial() {
        let t = |s: f64, r: f64| {
            BgTrial::new([("mixed_same".to_string(), s), ("mixed_rand".to_string(), r)].into())
        };
        let trials = [t(80.0, 60.0), t(82.0, 61.0), t(81.0, 59.5)];
        let s = summarize_trials(&trials, 0);
        let g = s.bg_gap.unwrap();
        assert!((g.mean - (20.0 + 21.0 + 21.5) / 3.0).abs() < 1e-12);
        assert!(
            (s.accuracy["mixed_same"].mean - s.accuracy["mixed_rand"].mean - g.mean).abs() < 1e-12
        );
        let sd = mean_std(&[1.0, 2.0, 3.0], 1);
        assert_eq!((sd.mean, sd.std), (2.0, 1.0));
        assert!(BgTrial::new([("original".to_string(), 90.0)].into())
            .bg_gap
            .is_none());
    }
}
