//! `torch.utils.data.random_split(ds, lengths, generator=torch.Generator().manual_seed(seed))`, reproduced
//! with libtorch's own `randperm` (same mt19937 and algorithm), so the paper's linear-eval validation splits
//! come out identical. Pinned copies for the canonical sizes live in `datasets/<name>/splits/` (generated with
//! PyTorch 2.11; see `datasets/README.md`) and are checked against this function in the tests.
use tch::{Device, Kind, Tensor};

/// The index lists of each part, in PyTorch's order.
///
/// Side effect: tch exposes no per-call generator, so this reseeds libtorch's default CPU generator
/// (`tch::manual_seed(seed)`); callers that rely on that generator's state must reseed afterwards.
pub fn torch_random_split(n: usize, lengths: &[usize], seed: i64) -> Vec<Vec<usize>> {
    assert_eq!(
        lengths.iter().sum::<usize>(),
        n,
        "random_split lengths must sum to the dataset size"
    );
    // randperm draws from the default CPU generator; seeding it is equivalent to a fresh seeded Generator.
    let _guard = crate::util::rng::torch_rng_lock();
    tch::manual_seed(seed);
    let perm = Tensor::randperm(n as i64, (Kind::Int64, Device::Cpu));
    let v: Vec<i64> = Vec::<i64>::try_from(&perm).unwrap_or_default();
    let mut out = vec![];
    let mut o = 0;
    for &l in lengths {
        out.push(v[o..o + l].iter().map(|&x| x as usize).collect());
        o += l;
    }
    out
}

/// `int(0.95 * n)` train and the rest val, as the paper's IN-9 linear eval does.
pub fn in9_lengths(n: usize) -> [usize; 2] {
    let train = (0.95 * n as f64) as usize;
    [train, n - train]
}

/// Parse a pinned index list (one integer per line).
pub fn parse_pinned(text: &str) -> Vec<usize> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

pub const PINNED_CIFAR_VAL: &str =
    include_str!("../../../datasets/cifar10/splits/val_indices_seed42.txt");
pub const PINNED_FOOD101_VAL: &str =
    include_str!("../../../datasets/food101/splits/val_indices_seed42.txt");
pub const PINNED_PETS_VAL: &str =
    include_str!("../../../datasets/pets/splits/val_indices_seed42.txt");
pub const PINNED_CUB_VAL: &str =
    include_str!("../../../datasets/cub200/splits/val_indices_seed42.txt");

/// Split `n` items into train/val with PyTorch's random_split; when a pinned list exists for this exact size,
/// check that libtorch reproduced it.
pub fn lineval_split(
    n: usize,
    lengths: [usize; 2],
    pinned: Option<(&str, usize)>,
) -> (Vec<usize>, Vec<usize>) {
    let mut parts = torch_random_split(n, &lengths, 42);
    let val = parts.pop().unwrap_or_default();
    let train = parts.pop().unwrap_or_default();
    if let Some((text, canonical_n)) = pinned {
        if canonical_n == n {
            assert_eq!(
                val,
                parse_pinned(text),
                "libtorch randperm disagrees with the pinned PyTorch split"
            );
        }
    }
    (train, val)
}

/// The official linear-eval train/val split of a training set (PyTorch `random_split`, seed 42, `val`
/// samples held out) as the `lineval-train` and `lineval-val` indices, with their provenance.
pub fn lineval_indices(
    dataset: &str,
    classes: &[String],
    samples: &[crate::data::index::Sample],
    val: usize,
    pinned: Option<(&str, usize)>,
    provenance: &str,
) -> [crate::data::index::SplitIndex; 2] {
    use crate::data::index::SplitIndex;
    let n = samples.len();
    let (tr, va) = lineval_split(n, [n - val, val], pinned);
    let index = |name: &str, ix: &[usize]| {
        let picked = ix.iter().map(|&i| samples[i].clone()).collect();
        SplitIndex::new(dataset, name, classes.to_vec(), "class", picked)
            .with_provenance(provenance)
    };
    [index("lineval-train", &tr), index("lineval-val", &va)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_pytorch_pinned_splits() {
        // Generated with torch 2.11.0: randperm(n, generator=Generator().manual_seed(42)), last `len` = val.
        for (text, n, val_len) in [
            (PINNED_CIFAR_VAL, 50000, 10000),
            (PINNED_FOOD101_VAL, 75750, 7575),
            (PINNED_PETS_VAL, 3680, 740),
            (PINNED_CUB_VAL, 5994, 1000),
        ] {
            let parts = torch_random_split(n, &[n - val_len, val_len], 42);
            assert_eq!(parts[1], parse_pinned(text), "n = {n}");
        }
        // torch.randperm(10, generator=torch.Generator().manual_seed(42)) = [2, 6, 1, 8, 4, 5, 0, 9, 3, 7]
        let p = torch_random_split(10, &[8, 2], 42);
        assert_eq!(p[0], vec![2, 6, 1, 8, 4, 5, 0, 9]);
        assert_eq!(p[1], vec![3, 7]);
    }
}
