//! `redo-masks`: masks of the ReDO baseline (Table 1), the official `--model redo` path: each image of a
//! built split resized to 128×128 (`Resize((128, 128))`, PIL bilinear, as `localize`), normalised with mean
//! and std 0.5, through ReDO's mask network ([`RedoMaskNet`]); its sigmoid is the foreground probability.
//!
//! The probability becomes `masks/<id>.png` (0/255, 128×128, the layout `localize` writes, so `eval-masks`
//! reads it) by one of two rules:
//! - `clean-mask` (default): the official `seg` path, which runs `clean_mask` (0.1 % components) on the model
//!   output; its effective threshold is 1/255. The official command for the ReDO row is not published, so
//!   whether the CRF ran before is unknown; this stage does not run it.
//! - `half`: probability ≥ 0.5, ReDO's own evaluation (`train.py: evaluate`), for `eval-masks` with
//!   `redo_iou = true`.
//!
//! The checkpoint (`<dataset>_netM_state.pth`, from ReDO's published weights) is outside the stages: the
//! suite declares its sha256, which the fingerprint covers, and the run refuses another file, as `import`.
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

use super::import::{declared_source, validate_sha256};
use crate::data::loader::{EvalTransform, Loader, LoaderConfig, Plan, Source};
use crate::localize::dataset::output_path;
use crate::localize::mask_clean::{clean_mask, CleanOptions};
use crate::model::redo::{redo_inputs, RedoMaskNet, REDO_INPUT_SIZE};
use crate::suite::dataset::DatasetSpec;
use crate::suite::stage::*;
use crate::util::output::write_atomic;
use crate::util::progress::Unit as ProgressUnit;

pub struct RedoMasks;

/// How the foreground probability becomes a binary mask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Binarize {
    /// The official `seg` path: `clean_mask` of the probability (threshold 1/255, components > 0.1 %).
    #[default]
    CleanMask,
    /// ReDO's own evaluation: probability ≥ 0.5.
    Half,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedoMasksParams {
    /// Side of the square input; ReDO's network is built for 128 only.
    #[serde(default = "default_input_size")]
    pub input_size: u32,
    /// ReDO's mask-network checkpoint; a relative path is taken from the data directory (`--data-dir`).
    pub checkpoint: PathBuf,
    /// sha256 (hex) of the checkpoint: part of the fingerprint, checked before it is read.
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub binarize: Binarize,
    /// Images per forward pass; the network normalises each image alone, so it does not change results.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
}

fn default_input_size() -> u32 {
    REDO_INPUT_SIZE as u32
}
fn default_batch_size() -> usize {
    64
}

impl Stage for RedoMasks {
    type Params = RedoMasksParams;
    const KIND: &'static str = "redo-masks";
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "masks of the ReDO baseline (Table 1), the official `--model redo` path: 128 px input, mean/std 0.5, a ReDO mask network checkpoint";
    const INPUTS: &'static [Slot] = &[Slot::required("data", ArtefactKind::Dataset)];
    const OUTPUTS: &'static [Slot] = &[Slot::file("masks", ArtefactKind::MasksDir, "masks")];
    const METRICS: &'static [MetricSpec] = &[];

    fn validate(p: &RedoMasksParams) -> Result<(), ParamError> {
        if i64::from(p.input_size) != REDO_INPUT_SIZE {
            return Err(ParamError::new(
                "input_size",
                format!(
                    "must be {REDO_INPUT_SIZE}: ReDO's pyramid pooling is sized for {REDO_INPUT_SIZE}-px inputs"
                ),
            ));
        }
        if p.checkpoint.as_os_str().is_empty() {
            return Err(ParamError::new(
                "checkpoint",
                "must name ReDO's `<dataset>_netM_state.pth`",
            ));
        }
        if !(1..=4096).contains(&p.batch_size) {
            return Err(ParamError::new("batch_size", "must be in 1..=4096"));
        }
        validate_sha256(&p.sha256)
    }

    fn run(p: &RedoMasksParams, ctx: &mut StageContext) -> Result<StageResult, StageError> {
        if ctx.precision != Precision::Fp32 {
            return Err(StageError::Failed(format!(
                "redo-masks computes in fp32 only; precision {} is not supported",
                ctx.precision.name()
            )));
        }
        let ckpt = declared_source(&p.checkpoint, "checkpoint", &p.sha256, ctx.data_dir)?;
        let net = RedoMaskNet::load(&ckpt, ctx.device)?;
        let data = ctx.dataset("data")?;
        if let DatasetSpec::Synth(_) = data.spec {
            return Err(StageError::Failed(format!(
                "dataset '{}' is synthetic; redo-masks runs on a built split (`data build`)",
                data.name
            )));
        }
        let source: Arc<dyn Source> = Arc::new(super::localize::index_source(data)?);
        let masks_dir = ctx.output("masks")?;
        write_redo_masks(&net, source, &masks_dir, p, ctx)?;
        Ok(StageResult::default())
    }
}

/// Runs `net` over every sample of `source` and writes `<dir>/<id>.png`.
fn write_redo_masks(
    net: &RedoMaskNet,
    source: Arc<dyn Source>,
    dir: &std::path::Path,
    p: &RedoMasksParams,
    ctx: &StageContext,
) -> Result<(), StageError> {
    let n = source.len();
    let s = p.input_size as usize;
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = source.meta(i)?.id;
        let path = output_path(dir, &id, "png").ok_or_else(|| {
            StageError::Failed(format!(
                "sample {i} of {}: id {id:?} cannot be a relative file name",
                source.name()
            ))
        })?;
        ids.push(path);
    }
    let loader = Loader::new(
        source.clone(),
        Plan::eval(EvalTransform::Resize { size: p.input_size }),
        LoaderConfig {
            workers: ctx.threads,
            prefetch: 2,
            ..LoaderConfig::eval(p.batch_size)
        },
    )?;
    let bar = ctx.progress("redo", Some(n as u64), ProgressUnit::Items("images"));
    for batch in loader.epoch_from(0, 0) {
        let batch = batch?;
        let x = redo_inputs(&batch.views[0]).to_device(ctx.device);
        let prob = net
            .masks(&x)
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous();
        let px = Vec::<f32>::try_from(prob.view([-1]))
            .map_err(|e| StageError::Failed(format!("ReDO masks to host: {e}")))?;
        for (k, &i) in batch.indices.iter().enumerate() {
            let m = &px[k * s * s..(k + 1) * s * s];
            let mask = binarize(m, s, p.binarize);
            let png: Vec<u8> = mask.iter().map(|&v| if v != 0 { 255 } else { 0 }).collect();
            let path = &ids[i];
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| StageError::io(parent, e))?;
            }
            let bytes = super::localize::gray_png(png, s as u32, s as u32)?;
            write_atomic(path, &bytes).map_err(|e| StageError::io(path, e))?;
        }
        bar.inc(batch.indices.len() as u64);
    }
    bar.finish();
    Ok(())
}

/// The binary mask (0/1) of a `side`×`side` foreground probability.
pub fn binarize(prob: &[f32], side: usize, rule: Binarize) -> Vec<u8> {
    match rule {
        Binarize::CleanMask => clean_mask(prob, side, side, &CleanOptions::seg()),
        Binarize::Half => prob.iter().map(|&v| (v >= 0.5) as u8).collect(),
    }
}
