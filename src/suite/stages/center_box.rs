//! `center-box`: the no-learning baseline of the smoke suite: a fixed centred box as the mask of every image.
use serde::{Deserialize, Serialize};

use crate::suite::stage::*;

pub struct CenterBox;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CenterBoxParams {
    /// Side of the box as a fraction of the image side (0.5: the middle half of each side).
    pub side: f64,
}

impl Default for CenterBoxParams {
    fn default() -> Self {
        Self { side: 0.5 }
    }
}

impl Stage for CenterBox {
    type Params = CenterBoxParams;
    const KIND: &'static str = "center-box";
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "mask mIoU of a fixed centred box (no-learning baseline)";
    const INPUTS: &'static [Slot] = &[Slot::required("data", ArtefactKind::Dataset)];
    const OUTPUTS: &'static [Slot] = &[];
    const METRICS: &'static [MetricSpec] = &[MetricSpec {
        name: "miou",
        unit: Unit::Fraction,
        direction: Direction::HigherIsBetter,
        about: "mean over images of the foreground IoU of the centre box",
    }];

    fn validate(p: &CenterBoxParams) -> Result<(), ParamError> {
        if !(p.side > 0.0 && p.side <= 1.0) {
            return Err(ParamError::new("side", "must be in (0, 1]"));
        }
        Ok(())
    }

    fn run(p: &CenterBoxParams, ctx: &mut StageContext) -> Result<StageResult, StageError> {
        let set = ctx.dataset("data")?.synth()?;
        Ok(StageResult::default().metric("miou", center_box_miou(&set, p.side)))
    }
}

/// mIoU of a centred square box covering `side` of each side against the scenes' foreground masks.
pub fn center_box_miou(set: &crate::data::synth::SynthSet, side: f64) -> f64 {
    let s = set.size;
    let lo = ((s as f64) * (1.0 - side) / 2.0).floor() as usize;
    let hi = (((s as f64) * (1.0 + side) / 2.0).ceil() as usize).min(s);
    let mut bx = vec![0f32; s * s];
    for y in lo..hi {
        for x in lo..hi {
            bx[y * s + x] = 1.0;
        }
    }
    let ious: Vec<f64> = set
        .instance_masks
        .iter()
        .map(|m| {
            let fg: Vec<f32> = m.iter().map(|&v| (v != 0) as u8 as f32).collect();
            crate::eval::miou::mask_iou(&bx, &fg)
        })
        .collect();
    ious.iter().sum::<f64>() / ious.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::dataset::{DatasetHandle, DatasetSpec, SynthDataset, SynthForm};
    use crate::suite::registry::Registry;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    #[test]
    fn runs_through_the_registry_and_parse_errors_name_the_key() {
        let r = Registry::builtin();
        let k = r.get("center-box").and_then(|k| k.implemented()).unwrap();
        let bad: toml::Value = toml::from_str("sidee = 0.5").unwrap();
        let e = k.parse(bad).unwrap_err();
        assert!(e.msg.contains("sidee"), "{e:?}");
        let bad: toml::Value = toml::from_str("side = 2.0").unwrap();
        assert_eq!(k.parse(bad).unwrap_err().key, "side");
        let params = k.parse(toml::Value::Table(Default::default())).unwrap();
        assert_eq!(params, serde_json::json!({ "side": 0.5 }));

        let spec = DatasetSpec::Synth(SynthDataset {
            form: SynthForm::Scenes,
            split: "test".into(),
            count: 8,
            seed: 0,
            synth: Default::default(),
        });
        let h =
            Arc::new(DatasetHandle::resolve("scenes", spec, std::path::Path::new(".")).unwrap());
        let inputs = BTreeMap::from([("data".to_string(), Input::Dataset(h.clone()))]);
        let dir = tempfile::tempdir().unwrap();
        let mut ctx = StageContext {
            stage: "baseline",
            out_dir: dir.path(),
            outputs: k.outputs(),
            inputs: &inputs,
            seed: 0,
            device: tch::Device::Cpu,
            precision: Precision::Fp32,
            data_dir: std::path::Path::new("."),
            threads: 1,
            progress: crate::util::progress::Mode::Hidden,
            fault: None,
        };
        let res = k.run(&params, &mut ctx).unwrap();
        let want = center_box_miou(&h.synth().unwrap(), 0.5);
        assert_eq!(res.metrics["miou"], want);
        assert!(want > 0.0 && want < 1.0);
    }
}
