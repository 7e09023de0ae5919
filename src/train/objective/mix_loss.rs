//! The losses of the Mixup/CutMix baselines (official `models/{moco,byol}_{mixup,cutmix}.py`), given
//! the outputs of a step whose view 1 was mixed with `lam` and `perm` (`augment::mixup_cutmix`).
//!
//! MoCo (i-Mix style): the candidates are every current key plus the queue, and image `i` has two
//! positives, key `i` with weight `lam_i` and key `perm[i]` with weight `1 − lam_i`. The official
//! `MoCoMixup` multiplies the per-image `lam` by mean-reduced cross-entropies, so the effective weights are
//! mean(lam) and mean(1 − lam); `MixWeighting::Official` keeps that, `PerSample` weighs each image by its
//! own `lam` (what `MoCoCutMix` does, where `lam` is one value for the batch and both forms agree).
use serde::{Deserialize, Serialize};
use tch::{Kind, Reduction, Tensor};

/// How MoCo's two cross-entropies are weighed by per-image `lam`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MixWeighting {
    /// `mean(lam·CE_mean(·, arange) + (1 − lam)·CE_mean(·, perm))`, as the official `MoCoMixup`.
    Official,
    /// `mean(lam·CE(·, arange) + (1 − lam)·CE(·, perm))` per image.
    PerSample,
}

/// (B, B + K) logits `q·[k; queue]ᵀ/τ`; `queue` is (K, D).
pub fn moco_mix_logits(q: &Tensor, k: &Tensor, queue: &Tensor, temperature: f64) -> Tensor {
    q.matmul(&Tensor::cat(&[k, queue], 0).tr()) / temperature
}

/// How view 1 of a step was mixed, for the loss: image `i` was mixed with image `perm[i]`, keeping the
/// share `lam` ((B,) per image for Mixup, a scalar for CutMix).
pub struct ViewMix {
    pub lam: Tensor,
    pub perm: Vec<usize>,
    pub weighting: MixWeighting,
}

fn perm_tensor(perm: &[usize], like: &Tensor) -> Tensor {
    let idx: Vec<i64> = perm.iter().map(|&i| i as i64).collect();
    Tensor::from_slice(&idx).to_device(like.device())
}

/// MoCo's mixed loss on `moco_mix_logits`; `lam` is (B,) or a scalar tensor.
pub fn moco_mix_loss(
    logits: &Tensor,
    lam: &Tensor,
    perm: &[usize],
    weighting: MixWeighting,
) -> Tensor {
    let b = logits.size()[0];
    let own = Tensor::arange(b, (Kind::Int64, logits.device()));
    let partner = perm_tensor(perm, logits);
    let reduction = match weighting {
        MixWeighting::Official => Reduction::Mean,
        MixWeighting::PerSample => Reduction::None,
    };
    let ce = |t: &Tensor| logits.cross_entropy_loss::<Tensor>(t, None, reduction, -100, 0.0);
    let lam = lam.to_kind(Kind::Float);
    let rest = lam.ones_like() - &lam;
    (&lam * ce(&own) + rest * ce(&partner)).mean(Kind::Float)
}

/// BYOL's mixed loss `−2(loss1 + loss2)` with
/// `loss1 = mean(lam·cos(p1, y2) + (1 − lam)·cos(p1, y2[perm]))` and
/// `loss2 = mean(lam·cos(p2, y1) + (1 − lam)·cos(p2[perm], y1))`, where view 1 (`p1`, `y1`) is the mixed
/// one; projections and predictions are unit vectors already.
pub fn byol_mix_loss(
    p1: &Tensor,
    p2: &Tensor,
    y1: &Tensor,
    y2: &Tensor,
    lam: &Tensor,
    perm: &[usize],
) -> Tensor {
    let idx = perm_tensor(perm, p1);
    let cos =
        |a: &Tensor, b: &Tensor| (a * b).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    let lam = lam.to_kind(Kind::Float);
    let rest = lam.ones_like() - &lam;
    let mix = |own: Tensor, other: Tensor| (&lam * own + &rest * other).mean(Kind::Float);
    let loss1 = mix(cos(p1, y2), cos(p1, &y2.index_select(0, &idx)));
    let loss2 = mix(cos(p2, y1), cos(&p2.index_select(0, &idx), y1));
    (loss1 + loss2) * -2.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn logits() -> Tensor {
        Tensor::arange(4 * 6, (Kind::Float, Device::Cpu))
            .view([4, 6])
            .sin()
            * 3.0
    }

    #[test]
    fn weightings_agree_for_one_lam_and_differ_for_varying_lam() {
        let perm = [2, 0, 3, 1];
        let one = Tensor::full([4], 0.7, (Kind::Float, Device::Cpu));
        let a = moco_mix_loss(&logits(), &one, &perm, MixWeighting::Official).double_value(&[]);
        let b = moco_mix_loss(&logits(), &one, &perm, MixWeighting::PerSample).double_value(&[]);
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        let varying = Tensor::from_slice(&[0.5f32, 0.9, 0.6, 1.0]);
        let a = moco_mix_loss(&logits(), &varying, &perm, MixWeighting::Official).double_value(&[]);
        let b =
            moco_mix_loss(&logits(), &varying, &perm, MixWeighting::PerSample).double_value(&[]);
        assert!((a - b).abs() > 1e-3, "{a} vs {b}");
    }

    #[test]
    fn lam_one_is_the_plain_loss() {
        let perm = [1, 0, 3, 2];
        let l = moco_mix_loss(
            &logits(),
            &Tensor::from(1.0f32),
            &perm,
            MixWeighting::Official,
        );
        let own = Tensor::arange(4, (Kind::Int64, Device::Cpu));
        let plain = logits().cross_entropy_for_logits(&own);
        assert!((l - plain).abs().double_value(&[]) < 1e-6);
    }
}
