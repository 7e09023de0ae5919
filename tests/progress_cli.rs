//! Progress through the binary with stderr piped (as in CI logs): periodic plain lines with the step count,
//! rate and ETA, one line per weight decay of the linear evaluation, and nothing of it with `--quiet`.
//! `CONTRACAM_PROGRESS_INTERVAL_S=0` logs every update so the test never waits for the 10 s interval.
mod data_common;
mod suite_common;

use std::path::Path;

use assert_cmd::Command;
use suite_common::tiny_suite;

fn contracam(interval: &str) -> Command {
    let mut c = Command::cargo_bin("contracam").unwrap();
    c.env("RAYON_NUM_THREADS", "1")
        .env("OMP_NUM_THREADS", "1")
        .env("CONTRACAM_PROGRESS_INTERVAL_S", interval)
        .env_remove("CONTRACAM_PROGRESS");
    c
}

fn stderr_of(c: &mut Command) -> String {
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    err
}

/// The lines of `text` that start with `prefix` and carry a step count `k/total`, a rate and an ETA.
fn status_lines<'a>(text: &'a str, prefix: &str, unit: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.starts_with(prefix) && l.contains(&format!(" {unit}/s, ETA ")))
        .collect()
}

fn train_ssl(dir: &Path, interval: &str, quiet: bool) -> String {
    let suite = tiny_suite(dir);
    let mut c = contracam(interval);
    c.args([
        "train",
        "ssl",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--suite",
    ])
    .arg(&suite)
    .arg("--out")
    .arg(dir.join(format!("model-{quiet}.safetensors")));
    if quiet {
        c.arg("--quiet");
    }
    stderr_of(&mut c)
}

#[test]
fn train_ssl_logs_steps_with_rate_and_eta_off_a_terminal_and_nothing_when_quiet() {
    let dir = tempfile::tempdir().unwrap();
    // 64 scenes in batches of 32 for one epoch: 2 steps.
    let err = train_ssl(dir.path(), "0", false);
    let lines = status_lines(&err, "train: ", "steps");
    assert!(!lines.is_empty(), "no status lines in:\n{err}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("train: 1/2 steps (50.0%), ")
                || l.starts_with("train: 2/2 steps (100.0%), ")),
        "{err}"
    );
    assert!(
        lines.iter().all(|l| l.contains("[epoch 1/1 loss ")),
        "{err}"
    );
    let done: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("train: done, 2 steps in "))
        .collect();
    assert_eq!(done.len(), 1, "{err}");
    assert!(!err.contains('\u{1b}') && !err.contains('\r'), "{err:?}");

    // The default interval (10 s) is longer than this run: only the closing line.
    let err = train_ssl(dir.path(), "", false);
    assert!(status_lines(&err, "train: ", "steps").is_empty(), "{err}");
    assert!(err.contains("train: done, 2 steps in "), "{err}");

    let err = train_ssl(dir.path(), "0", true);
    assert!(
        !err.contains("steps/s") && !err.contains("train: "),
        "{err}"
    );
}

fn suite_run(dir: &Path, runs: &str, quiet: bool) -> String {
    let suite = tiny_suite(dir);
    let mut c = contracam("0");
    c.args([
        "suite",
        "run",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--no-golden",
    ])
    .arg(&suite)
    .arg("--runs-dir")
    .arg(dir.join(runs))
    .arg("--out")
    .arg(dir.join(format!("{runs}.json")));
    if quiet {
        c.arg("--quiet");
    }
    stderr_of(&mut c)
}

#[test]
fn suite_stages_and_the_linear_sweep_report_off_a_terminal_and_not_when_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let err = suite_run(dir.path(), "runs", false);
    // Both training stages, the CAMs of the evaluations and the boxes log their steps.
    assert!(status_lines(&err, "train: ", "steps").len() >= 2, "{err}");
    assert!(!status_lines(&err, "cam: ", "images").is_empty(), "{err}");
    assert!(!status_lines(&err, "boxes: ", "images").is_empty(), "{err}");
    // The tiny suite sweeps two weight decays, in both evaluations: one line per value with its val accuracy.
    for wd in ["1.00e-4", "1.00e-2"] {
        let n = err
            .lines()
            .filter(|l| {
                l.starts_with(&format!("linear eval: weight decay {wd}: val "))
                    && l.contains(" %, train ")
            })
            .count();
        assert_eq!(n, 2, "weight decay {wd}:\n{err}");
    }
    assert!(!err.contains('\u{1b}'), "{err:?}");

    let err = suite_run(dir.path(), "quiet-runs", true);
    for needle in ["steps/s", "images/s", "linear eval:", "ETA"] {
        assert!(!err.contains(needle), "{needle} in:\n{err}");
    }
}

#[test]
fn data_build_logs_downloads_and_its_steps_off_a_terminal_and_nothing_when_quiet() {
    use data_common::{coco_images, file, serve_coco, zip, Server};
    let ann = |first: u64| -> String {
        serde_json::json!({
            "images": [{"id": first, "file_name": format!("{first:012}.jpg"), "width": 40, "height": 30}],
            "annotations": [{"id": 1, "image_id": first, "category_id": 1, "bbox": [2.0, 3.0, 20.0, 10.0],
                "area": 150.0, "iscrowd": 0, "segmentation": [[2.0, 3.0, 22.0, 3.0, 22.0, 13.0, 2.0, 13.0]]}],
            "categories": [{"id": 1, "name": "person"}]
        })
        .to_string()
    };
    let anns = zip(&[
        file("annotations/instances_train2017.json", ann(9)),
        file("annotations/instances_val2017.json", ann(139)),
    ]);
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let m = serve_coco(
        &srv,
        tmp.path(),
        coco_images("train", &[9]),
        Some(coco_images("val", &[139])),
        anns,
    );
    let build = |data: &str, quiet: bool| {
        let mut c = contracam("0");
        c.args(["data", "build", "coco2017", "--threads", "1", "--manifest"])
            .arg(&m)
            .arg("--data-dir")
            .arg(tmp.path().join(data));
        if quiet {
            c.arg("--quiet");
        }
        stderr_of(&mut c)
    };
    let err = build("d", false);
    // Each download logs its bytes with rate and ETA, and the build its steps.
    for f in [
        "train2017.zip",
        "val2017.zip",
        "annotations_trainval2017.zip",
    ] {
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with(&format!("{f}: ")) && l.contains("/s, ETA "))
            .collect();
        assert!(!lines.is_empty(), "{f}:\n{err}");
        assert!(
            err.contains(&format!("build coco2017: extracting {f}")),
            "{err}"
        );
    }
    assert!(err.contains("build coco2017: indexing"), "{err}");
    assert!(err.contains("build coco2017: done, 4 steps in "), "{err}");
    assert!(!err.contains('\u{1b}'), "{err:?}");

    let err = build("q", true);
    for needle in ["/s", "ETA", "build coco2017:", "overall:"] {
        assert!(!err.contains(needle), "{needle} in:\n{err}");
    }
}
