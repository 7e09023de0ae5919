//! View-1 mixing under data-parallel training (`train ssl` ranks started with the variables torchrun
//! sets, Gloo over 127.0.0.1). The mixing draws cover the global batch: each rank all-gathers view 1 and
//! its masks, mixes the global batch as one process does and keeps its rows, so 2 ranks × 8 equal one
//! process × 16 for BG-Mixup, CutMix and Mixup (MoCo and BYOL) within the data-parallel tolerance, and a
//! BG-Mixup run whose rank 1 is killed after the first checkpoint resumes from rank 0's state on one
//! process at the uninterrupted run's weights (the background queue is the same on every rank). With
//! `[train.mix] scope = "per-rank"` (the official per-GPU behaviour) the 2-rank run differs.
mod train_distributed_common;

use std::time::{Duration, Instant};

use train_distributed_common::{assert_close, max_diff, ranks, single, suite_with, wait_all, TOL};

/// One process and two ranks of `suite` with `flags`: the largest |Δ| of their models.
fn one_vs_two(dir: &std::path::Path, suite: &std::path::Path, tag: &str, flags: &[&str]) -> f64 {
    let one = dir.join(format!("{tag}-one.safetensors"));
    let two = dir.join(format!("{tag}-two.safetensors"));
    single(suite, &one, flags);
    wait_all(ranks(2, suite, &two, flags), tag);
    let (d, k) = max_diff(&two, &one);
    eprintln!("{tag}: 2 ranks x 8 vs 1 process x 16: max |Δ| = {d:e} at {k}");
    d
}

#[test]
fn mixing_on_two_ranks_equals_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let moco = suite_with(dir.path(), "moco", "moco", "");
    let byol = suite_with(dir.path(), "byol", "byol", "");
    for (suite, tag, flags) in [
        (
            &moco,
            "moco-bg-mixup",
            &["--bg-mixup", "--bg-mixup-prob", "0.8"][..],
        ),
        (&moco, "moco-cutmix", &["--cutmix"][..]),
        (&moco, "moco-mixup", &["--mixup"][..]),
        (&byol, "byol-mixup", &["--mixup"][..]),
    ] {
        let d = one_vs_two(dir.path(), suite, tag, flags);
        assert!(d <= TOL, "{tag}: max |Δ| = {d:e} > {TOL:e}");
    }
}

/// The official per-GPU scope draws partners and weights within each shard, so two ranks no longer train
/// as one process: the option is honoured.
#[test]
fn per_rank_scope_keeps_the_official_per_gpu_draws() {
    let dir = tempfile::tempdir().unwrap();
    let suite = suite_with(
        dir.path(),
        "per-rank",
        "moco",
        "\n[train.mix]\nscope = \"per-rank\"\n",
    );
    let d = one_vs_two(dir.path(), &suite, "per-rank-cutmix", &["--cutmix"]);
    assert!(
        d > 100.0 * TOL,
        "per-rank CutMix equals the global draws: {d:e}"
    );
}

#[test]
fn a_bg_mixup_run_killed_on_one_rank_resumes_on_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let suite = suite_with(dir.path(), "moco", "moco", "");
    let flags = [
        "--bg-mixup",
        "--bg-mixup-prob",
        "0.8",
        "--checkpoint-every",
        "1",
    ];
    let full = dir.path().join("full.safetensors");
    wait_all(ranks(2, &suite, &full, &flags), "uninterrupted");

    let out = dir.path().join("cut.safetensors");
    let state = dir.path().join("cut.state.safetensors");
    let mut children = ranks(2, &suite, &out, &flags);
    let start = Instant::now();
    while !state.is_file() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no state after 300 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut rank1 = children.pop().unwrap();
    rank1.kill().expect("SIGKILL rank 1");
    rank1.wait().unwrap();
    let res = children.pop().unwrap().wait_with_output().unwrap();
    assert!(!res.status.success(), "rank 0 finished without its peer");
    assert!(!out.exists(), "no model from a failed run");

    let mut resume = flags.to_vec();
    resume.extend(["--resume", state.to_str().unwrap()]);
    let one = dir.path().join("resumed1.safetensors");
    single(&suite, &one, &resume);
    assert_close(
        &one,
        &full,
        "BG-Mixup resumed on 1 process vs uninterrupted 2 ranks",
    );
}
