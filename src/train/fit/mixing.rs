//! View 1's mixing in the loop, where the official `training_step`s do it: after the colour
//! augmentations and normalisation, before the momentum update and the forward passes. BG-Mixup only
//! replaces view 1 (the objective is unchanged); Mixup and CutMix also return the weights and partners
//! the mixed loss needs.
use tch::Tensor;

use crate::train::augment::background_mixup::{BackgroundMixup, MixupDraws};
use crate::train::augment::mixup_cutmix::{cutmix, mixup, MixCutDraws};
use crate::train::config::{MixConfig, MixKind};
use crate::train::objective::{MixWeighting, ViewMix};

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
            }))
        }
    }
}
