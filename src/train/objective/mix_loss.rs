//! The losses of the Mixup/CutMix baselines (official `models/{moco,byol}_{mixup,cutmix}.py`), given
//! the outputs of a step whose view 1 was mixed with `lam` and `perm` (`augment::mixup_cutmix`).
//!
//! MoCo (i-Mix style): the candidates are every current key plus the queue, and image `i` has two
//! positives, key `i` with weight `lam_i` and key `perm[i]` with weight `1 − lam_i`. The official
//! `MoCoMixup` multiplies the per-image `lam` by mean-reduced cross-entropies, so the effective weights are
//! mean(lam) and mean(1 − lam); `MixWeighting::Official` keeps that, `PerSample` weighs each image by its
//! own `lam` (what `MoCoCutMix` does, where `lam` is one value for the batch and both forms agree).
use std::ops::Range;

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
    /// This process's rows of the batch `lam` and `perm` cover, when that is the global batch of a
    /// data-parallel run (mixing drawn for the global batch); `None` when this process holds the whole
    /// batch the mix was drawn for.
    pub rows: Option<Range<usize>>,
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
    moco_mix_loss_rows(logits, lam, perm, weighting, 0..perm.len())
}

/// MoCo's mixed loss of the queries `rows` of a global batch of `perm.len()` images whose keys are the
/// first `perm.len()` candidates of `logits` ((rows, B + K)). The mean over the ranks of their values
/// (and gradients) is the global batch's loss: per-sample weights take the rows' `lam`; the official
/// form multiplies the rows' mean cross-entropies by the mean of the global `lam`, which is linear in
/// them.
pub fn moco_mix_loss_rows(
    logits: &Tensor,
    lam: &Tensor,
    perm: &[usize],
    weighting: MixWeighting,
    rows: Range<usize>,
) -> Tensor {
    let dev = logits.device();
    let own = Tensor::arange_start(rows.start as i64, rows.end as i64, (Kind::Int64, dev));
    let partner = perm_tensor(&perm[rows.clone()], logits);
    let reduction = match weighting {
        MixWeighting::Official => Reduction::Mean,
        MixWeighting::PerSample => Reduction::None,
    };
    let ce = |t: &Tensor| logits.cross_entropy_loss::<Tensor>(t, None, reduction, -100, 0.0);
    let lam = lam.to_kind(Kind::Float);
    let lam = match weighting {
        MixWeighting::PerSample if lam.dim() == 1 => lam_rows(&lam, &rows),
        _ => lam,
    };
    let rest = lam.ones_like() - &lam;
    (&lam * ce(&own) + rest * ce(&partner)).mean(Kind::Float)
}

/// The rows of per-image weights (the whole tensor when they are the batch's).
fn lam_rows(lam: &Tensor, rows: &Range<usize>) -> Tensor {
    if rows.start == 0 && rows.end as i64 == lam.size()[0] {
        lam.shallow_clone()
    } else {
        lam.narrow(0, rows.start as i64, rows.len() as i64)
    }
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

/// `byol_mix_loss` for the rows `rows` of a global batch, given this process's predictions `p1`, `p2`
/// (rows) and the global batch's targets `y1`, `y2` (all-gathered; no gradient). The partner term of
/// `loss2` puts the gradient on `p2[perm[i]]`, which may be another rank's: it is summed by partner
/// instead (`Σ_i (1 − lam_i)·cos(p2[perm[i]], y1_i) = Σ_j (1 − lam_{inv j})·cos(p2_j, y1_{inv j})` with
/// `inv` the inverse permutation), so each rank differentiates only its own predictions. The mean over
/// the ranks equals `byol_mix_loss` of the global batch up to summation order.
pub fn byol_mix_loss_rows(
    p1: &Tensor,
    p2: &Tensor,
    y1: &Tensor,
    y2: &Tensor,
    lam: &Tensor,
    perm: &[usize],
    rows: Range<usize>,
) -> Tensor {
    let mut inv = vec![0usize; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    let own = perm_tensor(&rows.clone().collect::<Vec<_>>(), p1);
    let partner = perm_tensor(&perm[rows.clone()], p1);
    let partner_of = perm_tensor(&inv[rows.clone()], p1);
    let cos =
        |a: &Tensor, b: &Tensor| (a * b).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    let lam = lam.to_kind(Kind::Float);
    let rest = lam.ones_like() - &lam;
    let (lam_own, rest_own, rest_inv) = if lam.dim() == 1 {
        (
            lam.index_select(0, &own),
            rest.index_select(0, &own),
            rest.index_select(0, &partner_of),
        )
    } else {
        (
            lam.shallow_clone(),
            rest.shallow_clone(),
            rest.shallow_clone(),
        )
    };
    let loss1 = (&lam_own * cos(p1, &y2.index_select(0, &own))
        + &rest_own * cos(p1, &y2.index_select(0, &partner)))
    .mean(Kind::Float);
    let loss2 = (&lam_own * cos(p2, &y1.index_select(0, &own))
        + &rest_inv * cos(p2, &y1.index_select(0, &partner_of)))
    .mean(Kind::Float);
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

    /// Two halves of a batch, each with its rows of the global weights and partners, average to the
    /// whole batch's loss (MoCo both weightings, BYOL per-image and scalar weights).
    #[test]
    fn row_halves_average_to_the_whole_batch_loss() {
        let perm = [2, 0, 3, 1];
        let lam = Tensor::from_slice(&[0.5f32, 0.9, 0.6, 1.0]);
        let halves = |f: &dyn Fn(Range<usize>) -> f64| (f(0..2) + f(2..4)) / 2.0;
        for w in [MixWeighting::Official, MixWeighting::PerSample] {
            let whole = moco_mix_loss(&logits(), &lam, &perm, w).double_value(&[]);
            let split = halves(&|r: Range<usize>| {
                let rows = logits().narrow(0, r.start as i64, 2);
                moco_mix_loss_rows(&rows, &lam, &perm, w, r).double_value(&[])
            });
            assert!((whole - split).abs() < 1e-6, "{w:?}: {whole} vs {split}");
        }
        let unit = |seed: f64| {
            let t = (Tensor::arange(4 * 3, (Kind::Float, Device::Cpu)).view([4, 3]) + seed).sin();
            &t / t.norm_scalaropt_dim(2.0, [1i64].as_slice(), true)
        };
        let (p1, p2, y1, y2) = (unit(0.1), unit(1.3), unit(2.2), unit(3.7));
        for lam in [lam.shallow_clone(), Tensor::from(0.7f32)] {
            let whole = byol_mix_loss(&p1, &p2, &y1, &y2, &lam, &perm).double_value(&[]);
            let split = halves(&|r: Range<usize>| {
                let n = |t: &Tensor| t.narrow(0, r.start as i64, 2);
                byol_mix_loss_rows(&n(&p1), &n(&p2), &y1, &y2, &lam, &perm, r).double_value(&[])
            });
            assert!((whole - split).abs() < 1e-6, "BYOL: {whole} vs {split}");
        }
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
