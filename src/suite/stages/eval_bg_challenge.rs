//! `eval-bg-challenge`: the Background Challenge (Table 7). A linear classifier on frozen features of
//! ORIGINAL train (`train`, selection on `val` when bound), fitted as the `linear-eval` kind does, scores
//! each test variant (top-1, percent); `bg_gap` = MIXED-SAME − MIXED-RAND of the same classifier
//! ([`BgTrial`]). One run is one trial; the mean ± std over trials is the library's `summarize_trials`
//! over several seeds' results.
//!
//! Built data: each test slot is bound to the release split of its variant (`test-<variant>` of
//! `bg-challenge`). Synthetic data: a synthetic `bg-challenge` set holds every variant and a slot cannot
//! name one, so each test slot may be bound to such a set and the variant is taken from the slot's name
//! (`train`/`val` take ORIGINAL). The generator has no ONLY-BG-T (the object's region filled with tiled
//! background): `test_only_bg_t` takes its only-background variant, the one ONLY-BG-B takes, and the
//! report says so.
use std::collections::BTreeMap;

use serde::Serialize;

use super::eval_shift::{in_slot, Probe, ProbeReport};
use super::linear_eval::{LinearEval, LinearEvalParams};
use crate::data::synth::BgVariant;
use crate::eval::bgchallenge::BgTrial;
use crate::suite::dataset::{DatasetSpec, SynthForm};
use crate::suite::stage::*;

pub struct EvalBgChallenge;

/// Test slot, metric name, and the variant a synthetic `bg-challenge` set gives for it.
pub const VARIANT_SLOTS: [(&str, &str, BgVariant); 7] = [
    ("test_original", "original", BgVariant::Original),
    ("test_only_bg_b", "only_bg_b", BgVariant::OnlyBg),
    ("test_only_bg_t", "only_bg_t", BgVariant::OnlyBg),
    ("test_only_fg", "only_fg", BgVariant::OnlyFg),
    ("test_mixed_same", "mixed_same", BgVariant::MixedSame),
    ("test_mixed_rand", "mixed_rand", BgVariant::MixedRand),
    ("test_mixed_next", "mixed_next", BgVariant::MixedNext),
];

/// One variant of the report.
#[derive(Debug, Clone, Serialize)]
pub struct VariantReport {
    /// Top-1 accuracy, percent.
    pub accuracy: f64,
    pub slot: String,
    /// The suite dataset bound to the slot.
    pub dataset: String,
    pub samples: usize,
    /// For a synthetic set: the generator's variant used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synthetic_variant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What `bg_challenge.json` holds.
#[derive(Debug, Clone, Serialize)]
pub struct BgChallengeReport {
    pub variants: BTreeMap<String, VariantReport>,
    /// MIXED-SAME − MIXED-RAND, points.
    pub bg_gap: f64,
    pub probe: ProbeReport,
}

impl Stage for EvalBgChallenge {
    type Params = LinearEvalParams;
    const KIND: &'static str = "eval-bg-challenge";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "Background Challenge: linear classifier on frozen ORIGINAL features, top-1 per variant, BG-Gap";
    const INPUTS: &'static [Slot] = &[
        Slot::required("model", ArtefactKind::ModelCheckpoint),
        Slot::required("train", ArtefactKind::Dataset),
        Slot::optional("val", ArtefactKind::Dataset),
        Slot::required("test_original", ArtefactKind::Dataset),
        Slot::required("test_only_bg_b", ArtefactKind::Dataset),
        Slot::required("test_only_bg_t", ArtefactKind::Dataset),
        Slot::required("test_only_fg", ArtefactKind::Dataset),
        Slot::required("test_mixed_same", ArtefactKind::Dataset),
        Slot::required("test_mixed_rand", ArtefactKind::Dataset),
        Slot::required("test_mixed_next", ArtefactKind::Dataset),
    ];
    const OUTPUTS: &'static [Slot] = &[Slot::file(
        "report",
        ArtefactKind::Json,
        "bg_challenge.json",
    )];
    const METRICS: &'static [MetricSpec] = &[
        pct("original", Direction::HigherIsBetter, "ORIGINAL"),
        pct("only_bg_b", Direction::LowerIsBetter, "ONLY-BG-B"),
        pct("only_bg_t", Direction::LowerIsBetter, "ONLY-BG-T"),
        pct("only_fg", Direction::HigherIsBetter, "ONLY-FG"),
        pct("mixed_same", Direction::HigherIsBetter, "MIXED-SAME"),
        pct("mixed_rand", Direction::HigherIsBetter, "MIXED-RAND"),
        pct("mixed_next", Direction::HigherIsBetter, "MIXED-NEXT"),
        pct(
            "bg_gap",
            Direction::LowerIsBetter,
            "BG-Gap = MIXED-SAME − MIXED-RAND",
        ),
    ];

    fn validate(p: &LinearEvalParams) -> Result<(), ParamError> {
        LinearEval::validate(p)
    }

    fn run(p: &LinearEvalParams, ctx: &mut StageContext) -> Result<StageResult, StageError> {
        // Every slot is resolved before the (long) fit, so a missing one fails at once, naming it.
        for (slot, _, _) in VARIANT_SLOTS {
            ctx.dataset(slot)?;
        }
        let probe = Probe::open(p, ctx)?;
        let (clf, probe_report) = probe.fit(ctx, &p.linear)?;
        let mut sets = BTreeMap::new();
        let mut variants = BTreeMap::new();
        for (slot, name, variant) in VARIANT_SLOTS {
            let data = ctx.dataset(slot)?;
            let synthetic =
                matches!(&data.spec, DatasetSpec::Synth(s) if s.form == SynthForm::BgChallenge);
            let f = probe
                .features_of_variant(ctx, slot, variant)
                .map_err(|e| in_slot(slot, e))?;
            variants.insert(
                name.to_string(),
                VariantReport {
                    accuracy: 0.0,
                    slot: slot.into(),
                    dataset: data.name.clone(),
                    samples: f.1.size()[0] as usize,
                    synthetic_variant: synthetic.then(|| variant.name().to_string()),
                    note: (synthetic && slot == "test_only_bg_t").then(|| {
                        "the synthetic generator has no ONLY-BG-T; its only-background variant (object \
                         region blacked out, as ONLY-BG-B) stands in"
                            .to_string()
                    }),
                },
            );
            sets.insert(name.to_string(), f);
        }
        let trial = BgTrial::score(&clf, &sets);
        let bg_gap = trial.bg_gap.ok_or_else(|| {
            StageError::Failed("BG-Gap needs mixed_same and mixed_rand accuracies".into())
        })?;
        let mut out = StageResult::default();
        for (name, a) in &trial.accuracy {
            if let Some(v) = variants.get_mut(name) {
                v.accuracy = *a;
            }
            out = out.metric(name, *a);
        }
        ctx.write_json(
            "report",
            &BgChallengeReport {
                variants,
                bg_gap,
                probe: probe_report,
            },
        )?;
        Ok(out.metric("bg_gap", bg_gap))
    }
}

const fn pct(name: &'static str, direction: Direction, about: &'static str) -> MetricSpec {
    MetricSpec {
        name,
        unit: Unit::Percent,
        direction,
        about,
    }
}
