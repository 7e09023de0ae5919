//! `contracam train ssl` launched as the ranks of a data-parallel run (the variables torchrun sets, Gloo
//! over 127.0.0.1): 2 processes × batch b write the model 1 process × batch 2b writes, within the
//! tolerance tests/distributed.rs uses for the Trainer; only rank 0 writes. A 2-rank run whose rank 1 is
//! killed (SIGKILL) after the first checkpoint fails on rank 0 instead of hanging, and `--resume` of rank
//! 0's training state with 1 process and with 2 finishes at the uninterrupted 2-rank run's weights.
mod train_distributed_common;

use std::time::{Duration, Instant};

use train_distributed_common::{assert_close, files, ranks, single, suite, wait_all};

#[test]
fn train_ssl_on_two_ranks_equals_one_process_and_only_rank_0_writes() {
    let dir = tempfile::tempdir().unwrap();
    let suite = suite(dir.path());
    let one = dir.path().join("one");
    let two = dir.path().join("two");
    std::fs::create_dir_all(&one).unwrap();
    std::fs::create_dir_all(&two).unwrap();
    single(&suite, &one.join("model.safetensors"), &[]);
    wait_all(
        ranks(2, &suite, &two.join("model.safetensors"), &[]),
        "2 ranks",
    );
    assert_eq!(files(&two), ["model.safetensors"]);
    assert_close(
        &two.join("model.safetensors"),
        &one.join("model.safetensors"),
        "2 ranks vs 1 process",
    );
}

#[test]
fn a_killed_rank_fails_its_peer_and_the_run_resumes_at_any_world_size() {
    let dir = tempfile::tempdir().unwrap();
    let suite = suite(dir.path());
    let full = dir.path().join("full.safetensors");
    wait_all(
        ranks(2, &suite, &full, &["--checkpoint-every", "1"]),
        "uninterrupted",
    );
    assert!(
        dir.path().join("full.state.safetensors").is_file(),
        "rank 0 wrote the training state"
    );

    // Kill rank 1 as soon as rank 0 has written the first epoch's state: epochs 2 and 3 still need it.
    let out = dir.path().join("cut.safetensors");
    let state = dir.path().join("cut.state.safetensors");
    let mut children = ranks(2, &suite, &out, &["--checkpoint-every", "1"]);
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
    let rank0 = children.pop().unwrap();
    let t = Instant::now();
    let res = rank0.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    eprintln!(
        "rank 0 ended {:.1} s after the kill: {}",
        t.elapsed().as_secs_f64(),
        stderr.trim()
    );
    assert!(
        !res.status.success(),
        "rank 0 finished without its peer:\n{stderr}"
    );
    assert!(
        stderr.contains("rank 0"),
        "the error names the rank: {stderr}"
    );
    assert!(!out.exists(), "no model from a failed run");

    // Rank 0's state resumes with one process and with two.
    let state_arg = state.to_str().unwrap();
    let one = dir.path().join("resumed1.safetensors");
    single(&suite, &one, &["--resume", state_arg]);
    let two = dir.path().join("resumed2.safetensors");
    wait_all(
        ranks(2, &suite, &two, &["--resume", state_arg]),
        "resume on 2 ranks",
    );
    assert_close(&one, &full, "resumed on 1 process vs uninterrupted 2 ranks");
    assert_close(&two, &full, "resumed on 2 ranks vs uninterrupted 2 ranks");
}
