//! The colour augmentation of a data-parallel rank as a function of the global batch: every rank draws
//! the parameters of the whole global batch from the run's one stream (as a single process does) and
//! applies the rows of its shard. The stream then advances by the same draws on every rank and at every
//! world size, so rank 0's saved stream resumes a run at any world size, and N ranks × b see the pixels
//! one process × N·b sees. With one process this is exactly the single-device draw.
use std::ops::Range;

use rand_chacha::ChaCha8Rng;
use tch::Tensor;

use crate::train::augment::kornia::{
    apply_color_params, blur_kernel_size, sample_color_params, ColorParams, JitterParams,
};
use crate::train::augment::AugmentConfig;
use crate::train::strategy::Shard;

/// Colour jitter, grayscale, blur and normalisation of `local` (this rank's rows of the global batch)
/// with parameters drawn for the global batch.
pub(super) fn color_blur_normalize_shard(
    local: &Tensor,
    rng: &mut ChaCha8Rng,
    cfg: &AugmentConfig,
    shard: Shard,
) -> Tensor {
    let n = local.size()[0] as usize;
    let global = sample_color_params(n * shard.world, rng, cfg);
    let params = if shard.world == 1 {
        global
    } else {
        rows(&global, shard.rank * n..(shard.rank + 1) * n)
    };
    apply_color_params(local, &params, blur_kernel_size(cfg.output_size)).out
}

/// The parameters of images `r` of a batch. Per-image flags are sliced; the values drawn only for applied
/// images (jitter factors, blur σ) are counted through the flags before `r`.
fn rows(p: &ColorParams, r: Range<usize>) -> ColorParams {
    let applied = |flags: &[bool], r: &Range<usize>| -> Range<usize> {
        let before = flags[..r.start].iter().filter(|&&f| f).count();
        before..before + flags[r.clone()].iter().filter(|&&f| f).count()
    };
    let j = applied(&p.jitter.apply, &r);
    let b = applied(&p.blur, &r);
    ColorParams {
        jitter: JitterParams {
            apply: p.jitter.apply[r.clone()].to_vec(),
            brightness: p.jitter.brightness[j.clone()].to_vec(),
            contrast: p.jitter.contrast[j.clone()].to_vec(),
            saturation: p.jitter.saturation[j.clone()].to_vec(),
            hue: p.jitter.hue[j].to_vec(),
            order: p.jitter.order,
        },
        grayscale: p.grayscale[r.clone()].to_vec(),
        blur: p.blur[r].to_vec(),
        blur_sigma: p.blur_sigma[b].to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::rng_for;
    use tch::{Device, Kind};

    /// Two shards' augmented rows, stacked, equal the one-process augmentation of the global batch, and
    /// every rank's stream ends where the one-process stream does.
    #[test]
    fn two_shards_equal_the_global_batch() {
        let cfg = AugmentConfig {
            output_size: 16,
            ..Default::default()
        };
        tch::manual_seed(3);
        let x = Tensor::rand([8, 3, 16, 16], (Kind::Float, Device::Cpu));
        let mut one = rng_for(5, "t");
        let whole = color_blur_normalize_shard(&x, &mut one, &cfg, Shard::SINGLE);
        let mut parts = Vec::new();
        for rank in 0..2 {
            let mut rng = rng_for(5, "t");
            let shard = Shard { rank, world: 2 };
            parts.push(color_blur_normalize_shard(
                &x.narrow(0, 4 * rank as i64, 4),
                &mut rng,
                &cfg,
                shard,
            ));
            assert_eq!(
                rand::Rng::random::<u64>(&mut rng),
                rand::Rng::random::<u64>(&mut one.clone())
            );
        }
        let diff = (Tensor::cat(&parts, 0) - whole)
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-6, "shards differ from the global batch by {diff}");
    }
}
