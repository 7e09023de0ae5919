//! View 1's mixing in the loop, where the official `training_step`s do it: after the colour
//! augmentations and normalisation, before the momentum update and the forward passes. BG-Mixup only
//! replaces view 1 (the objective is unchanged); Mixup and CutMix also return the weights and partners
//! the mixed loss needs.
//!
//! Under data-parallel training the draws cover the global batch by default (`MixScope::Global`): a
//! partner (Mixup/CutMix permutation, BG-Mixup partner) may sit in another rank's shard, so every rank
//! all-gathers view 1 and its masks, mixes the global batch exactly as one process would (same stream,
//! same background queue, fed in global order) and keeps its own rows. Gathering the views was chosen
//! over permuting within shards with global-seeded draws because only it makes N ranks × b equal one
//! process × N·b (and leaves the queue the same on every rank, so rank 0's state resumes at any world
//! size); it costs one all-gather of view 1 per step and N× the mixing arithmetic, small beside the
//! forward passes. The losses then take their rows of the global weights and partners
//! (`ViewMix::rows`). `MixScope::PerRank` keeps the official per-GPU behaviour.
use tch::Tensor;

use crate::train::augment::background_mixup::{BackgroundMixup, MixupDraws};
use crate::train::augment::mixup_cutmix::{cutmix, mixup, MixCutDraws};
use crate::train::config::{MixConfig, MixKind, MixScope};
use crate::train::error::TrainError;
use crate::train::objective::{MixWeighting, ViewMix};
use crate::train::strategy::ExecutionStrategy;

/// `mix_view1` for this process's rows of the global batch, as `cfg.scope` says; `batch_error` turns a
/// message about the batch into the loop's error.
pub(super) fn mix_view1_in_run<D: MixupDraws + MixCutDraws>(
    cfg: &MixConfig,
    bg_mixup: &mut Option<BackgroundMixup>,
    views: &mut [Tensor],
    masks: Option<&Tensor>,
    draws: &mut D,
    strategy: &dyn ExecutionStrategy,
    batch_error: impl Fn(String) -> TrainError,
) -> Result<Option<ViewMix>, TrainError> {
    let shard = strategy.shard();
    if cfg.kind == MixKind::None || shard.world == 1 || cfg.scope == MixScope::PerRank {
        return mix_view1(cfg, bg_mixup, views, masks, draws).map_err(batch_error);
    }
    let b = views[0].size()[0];
    let mut global = [strategy.gather_rows(&views[0])?];
    let masks = masks.map(|m| strategy.gather_rows(m)).transpose()?;
    let mix = mix_view1(cfg, bg_mixup, &mut global, masks.as_ref(), draws).map_err(batch_error)?;
    let start = shard.rank as i64 * b;
    views[0] = global[0].narrow(0, start, b).contiguous();
    let rows = start as usize..(start + b) as usize;
    Ok(mix.map(|m| ViewMix {
        rows: Some(rows),
        ..m
    }))
}

/// Mixes `views[0]` in place as `cfg` says; `masks` are view 1's (B, H, W) soft masks. The error says
/// what the batch lacks.
pub(super) fn mix_view1<D: MixupDraws + MixCutDraws>(
    cfg: &MixConfig,
    bg_mixup: &mut Option<BackgroundMixup>,
    views: &mut [Tensor],
    masks: Option<&Tensor>,
    draws: &mut D,
) -> Result<Option<ViewMix>, String> {
    match cfg.kind {
        MixKind::None => Ok(None),
        MixKind::BgMixup => {
            let masks = masks.ok_or(
                "BG-Mixup needs the soft masks of view 1, and this batch has none (train ssl --masks DIR \
                 with --dataset; the synthetic scenes carry their own)",
            )?;
            let module = bg_mixup
                .as_mut()
                .ok_or("BG-Mixup is configured but its module was not built")?;
            views[0] = module.apply(&views[0], masks, draws).mixed;
            Ok(None)
        }
        MixKind::Mixup => {
            let m = mixup(&views[0], cfg.alpha, draws);
            views[0] = m.mixed;
            Ok(Some(ViewMix {
                lam: m.lam,
                perm: m.perm,
                weighting: cfg.weighting,
                rows: None,
            }))
        }
        MixKind::Cutmix => {
            let c = cutmix(&views[0], cfg.alpha, draws);
            let lam = Tensor::from(c.lam).to_device(c.mixed.device());
            views[0] = c.mixed;
            // One weight for the batch: the per-sample form is the official `MoCoCutMix` (reduction
            // 'none'), and for one weight it equals the mean-reduced form.
            Ok(Some(ViewMix {
                lam,
                perm: c.perm,
                weighting: MixWeighting::PerSample,
                rows: None,
            }))
        }
    }
}
