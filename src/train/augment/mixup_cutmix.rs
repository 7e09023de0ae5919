//! The Mixup and CutMix baselines as the official `models/mixup.py` / `models/cutmix.py` (i-Mix style:
//! each image of view 1 is mixed with the image `perm[i]` of the same batch, and the loss then weighs the
//! positive of `i` and of `perm[i]` by `lam` and `1 − lam`).
//!
//! Mixup draws one `lam` per image; CutMix draws one `lam` per batch and pastes one box, the same for
//! every image. The official CutMix box quirks are kept: half sizes are `cut // 2` on both sides of the
//! centre (an odd cut loses a pixel), the box is clamped to the image, and the returned `lam` is
//! recomputed from the clamped box.
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

/// The random values Mixup and CutMix draw, in the official order: the permutation first, then the
/// Beta draw(s), then (CutMix) the box centre.
pub trait MixCutDraws {
    /// A permutation of 0..n (`torch.randperm`).
    fn permutation(&mut self, n: usize) -> Vec<usize>;
    /// `n` draws from Beta(alpha, alpha), as f32 (`Beta.sample`).
    fn beta(&mut self, alpha: f64, n: usize) -> Vec<f32>;
    /// The box centre: a row in 0..rows, then a column in 0..cols (two `random_` calls).
    fn centre(&mut self, rows: i64, cols: i64) -> (i64, i64);
}

impl MixCutDraws for ChaCha8Rng {
    fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        p.shuffle(self);
        p
    }
    fn beta(&mut self, alpha: f64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let (a, b) = (gamma(self, alpha), gamma(self, alpha));
                (a / (a + b)) as f32
            })
            .collect()
    }
    fn centre(&mut self, rows: i64, cols: i64) -> (i64, i64) {
        (self.random_range(0..rows), self.random_range(0..cols))
    }
}

/// Gamma(shape, 1) by Marsaglia and Tsang; shapes below 1 use the `U^(1/shape)` boost.
fn gamma(rng: &mut ChaCha8Rng, shape: f64) -> f64 {
    if shape < 1.0 {
        let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        return gamma(rng, shape + 1.0) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        // Box–Muller standard normal; 1 − U keeps the logarithm finite.
        let (u1, u2): (f64, f64) = (rng.random(), rng.random());
        let z = (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let v = (1.0 + c * z).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u: f64 = 1.0 - rng.random::<f64>();
        if u.ln() < 0.5 * z * z + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// `max(lam, 1 − lam)` in f32: the official code always keeps the larger share for the image itself.
fn fold(lam: f32) -> f32 {
    lam.max(1.0 - lam)
}

fn perm_tensor(perm: &[usize], x: &Tensor) -> Tensor {
    let idx: Vec<i64> = perm.iter().map(|&i| i as i64).collect();
    Tensor::from_slice(&idx).to_device(x.device())
}

/// One Mixup call's result.
pub struct MixupOutput {
    /// (B, C, H, W) `lam·x + (1 − lam)·x[perm]`.
    pub mixed: Tensor,
    /// (B,) the folded weights of each image's own positive.
    pub lam: Tensor,
    pub perm: Vec<usize>,
}

/// Mixup on a (B, C, H, W) batch with per-image weights from Beta(alpha, alpha).
pub fn mixup(x: &Tensor, alpha: f64, draws: &mut dyn MixCutDraws) -> MixupOutput {
    let b = x.size()[0] as usize;
    let perm = draws.permutation(b);
    let lam: Vec<f32> = draws.beta(alpha, b).into_iter().map(fold).collect();
    let lam = Tensor::from_slice(&lam).to_device(x.device());
    let l = lam.view([-1, 1, 1, 1]).to_kind(x.kind());
    // Same op order as the official code, so the result is bit-identical in f32.
    let mixed = &l * x + (1.0 - &l) * x.index_select(0, &perm_tensor(&perm, x));
    MixupOutput { mixed, lam, perm }
}

/// A CutMix box, end-exclusive, in (row, column) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutBox {
    pub r0: i64,
    pub r1: i64,
    pub c0: i64,
    pub c1: i64,
}

/// The official `rand_bbox`: a box of about `(1 − lam)` of the area centred on `(cr, cc)`, clamped.
pub fn cutmix_box(rows: i64, cols: i64, lam: f32, cr: i64, cc: i64) -> CutBox {
    let rat = (1.0f32 - lam).sqrt();
    // `int(W * rat)` truncates the f32 product.
    let (cut_r, cut_c) = ((rows as f32 * rat) as i64, (cols as f32 * rat) as i64);
    CutBox {
        r0: (cr - cut_r / 2).clamp(0, rows),
        r1: (cr + cut_r / 2).clamp(0, rows),
        c0: (cc - cut_c / 2).clamp(0, cols),
        c1: (cc + cut_c / 2).clamp(0, cols),
    }
}

/// One CutMix call's result.
pub struct CutmixOutput {
    /// (B, C, H, W) `x` with the box pasted from `x[perm]`.
    pub mixed: Tensor,
    /// `1 − box area / image area` of the clamped box.
    pub lam: f32,
    pub cut: CutBox,
    pub perm: Vec<usize>,
}

/// CutMix on a (…, H, W) batch with one weight from Beta(alpha, alpha) and one box for the batch.
pub fn cutmix(x: &Tensor, alpha: f64, draws: &mut dyn MixCutDraws) -> CutmixOutput {
    let size = x.size();
    let (b, rows, cols) = (size[0] as usize, size[size.len() - 2], size[size.len() - 1]);
    let perm = draws.permutation(b);
    let lam0 = fold(draws.beta(alpha, 1)[0]);
    let (cr, cc) = draws.centre(rows, cols);
    let cut = cutmix_box(rows, cols, lam0, cr, cc);
    let mixed = x.copy();
    let (h, w) = (cut.r1 - cut.r0, cut.c1 - cut.c0);
    if h > 0 && w > 0 {
        let patch = x
            .index_select(0, &perm_tensor(&perm, x))
            .narrow(-2, cut.r0, h)
            .narrow(-1, cut.c0, w);
        mixed
            .narrow(-2, cut.r0, h)
            .narrow(-1, cut.c0, w)
            .copy_(&patch);
    }
    let lam = 1.0 - (h * w) as f32 / (rows * cols) as f32;
    CutmixOutput {
        mixed,
        lam,
        cut,
        perm,
    }
}

/// The (B,) weights of a CutMix call, for losses written for per-image weights.
pub fn cutmix_weights(out: &CutmixOutput) -> Tensor {
    Tensor::full(
        [out.perm.len() as i64],
        out.lam as f64,
        (Kind::Float, out.mixed.device()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn beta_draws_stay_in_the_unit_interval_with_mean_one_half() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for alpha in [0.2, 1.0, 4.0] {
            let d = rng.beta(alpha, 4000);
            assert!(d.iter().all(|v| (0.0..=1.0).contains(v)));
            let mean = d.iter().map(|&v| v as f64).sum::<f64>() / d.len() as f64;
            assert!((mean - 0.5).abs() < 0.03, "alpha {alpha}: mean {mean}");
        }
    }

    #[test]
    fn seeded_mixup_keeps_the_larger_share_and_cutmix_matches_its_box() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let x = Tensor::arange(4 * 2 * 6 * 9, (Kind::Float, tch::Device::Cpu)).view([4, 2, 6, 9]);
        let m = mixup(&x, 1.0, &mut rng);
        let lam = Vec::<f32>::try_from(&m.lam).unwrap();
        assert!(lam.iter().all(|&l| (0.5..=1.0).contains(&l)));
        let c = cutmix(&x, 1.0, &mut rng);
        let area = (c.cut.r1 - c.cut.r0) * (c.cut.c1 - c.cut.c0);
        let changed = x.ne_tensor(&c.mixed).sum(Kind::Int64).int64_value(&[]);
        let moved = c.perm.iter().enumerate().filter(|(i, p)| i != *p).count() as i64;
        assert_eq!(changed, area * 2 * moved);
        assert_eq!(c.lam, 1.0 - area as f32 / 54.0);
    }
}
