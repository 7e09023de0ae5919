//! PNG plots of suite results: one training-loss curve per training stage and one value-vs-golden bar per
//! golden check, valid PNGs of the declared size whose pixels follow the numbers; the loss curves are found
//! beside the weights of the cached training stages; `suite report --plots` and `suite run --plots` write
//! them and the Markdown report links them; a results file without curves still reports, with a note.
mod suite_common;

use std::path::Path;

use assert_cmd::Command;
use contracam::suite::cache::{LockPolicy, StageCache};
use contracam::suite::plots::{self, PlotKind, GOLDEN_SIZE, LOSS_SIZE};
use contracam::suite::report::{ReportView, StageTiming};
use contracam::suite::stage::{Curve, StageResult};

/// A results file with two training stages' loss curves and four checks, two of them against a golden.
fn fixture() -> serde_json::Value {
    serde_json::json!({
        "suite": "smoke",
        "suite_version": 1,
        "seed": 0,
        "git_hash": "0123456789ab",
        "device": "cpu",
        "metrics": {"vanilla.cam_miou": 0.4478, "vanilla.linear_acc": 0.75, "oa_crop.cam_miou": 0.46},
        "golden_file": "golden/smoke.toml",
        "checks": [
            {"metric": "boxes.recall50", "value": null, "golden": 0.33, "tolerance": 0.04, "verdict": "missing"},
            {"metric": "oa_crop.cam_miou", "value": 0.46, "golden": null, "tolerance": null, "verdict": "no_golden"},
            {"metric": "vanilla.cam_miou", "value": 0.4478, "golden": 0.4478277171201203, "tolerance": 0.03, "verdict": "pass"},
            {"metric": "vanilla.linear_acc", "value": 0.75, "golden": 0.86328125, "tolerance": 0.08, "verdict": "fail"}
        ],
        "passed": false,
        "loss_curves": {
            "vanilla": {"x_label": "epoch", "y_label": "mean training loss", "x": [1.0, 2.0, 3.0], "y": [6.1, 5.4, 5.2]},
            "oa_crop": {"x_label": "epoch", "y_label": "mean training loss", "x": [1.0, 2.0, 3.0], "y": [6.0, 5.5, 5.1]}
        }
    })
}

fn view(v: &serde_json::Value) -> ReportView {
    ReportView::from_json(v, Path::new("r.json")).unwrap()
}

/// The PNG's dimensions, after checking the signature and decoding it whole.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (img.width(), img.height())
}

/// Pixels that are not white: the drawing is there.
fn inked(path: &Path) -> usize {
    let img = image::open(path).unwrap().to_rgb8();
    img.pixels().filter(|p| p.0 != [255, 255, 255]).count()
}

#[test]
fn one_png_per_training_stage_and_per_golden_check_of_the_declared_size() {
    let t = tempfile::tempdir().unwrap();
    let p = plots::write_plots(&view(&fixture()), t.path()).unwrap();
    assert!(p.notes.is_empty(), "{:?}", p.notes);
    let names: Vec<&str> = p.files.iter().map(|f| f.file.as_str()).collect();
    // Curves by stage name (sorted), then the checks that have a golden value, in results order.
    assert_eq!(
        names,
        [
            "loss-oa_crop.png",
            "loss-vanilla.png",
            "golden-boxes.recall50.png",
            "golden-vanilla.cam_miou.png",
            "golden-vanilla.linear_acc.png"
        ]
    );
    let mut on_disk: Vec<String> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    assert_eq!(on_disk.len(), 5, "{on_disk:?}");
    for f in &p.files {
        let path = t.path().join(&f.file);
        let want = match f.kind {
            PlotKind::Loss(_) => LOSS_SIZE,
            PlotKind::Golden(_) => GOLDEN_SIZE,
        };
        assert_eq!(png_size(&path), want, "{}", f.file);
        // Axes, text and bars cover a real part of the image (not a blank canvas).
        let n = inked(&path);
        assert!(n > 2_000, "{}: {n} inked pixels", f.file);
    }
}

#[test]
fn changing_a_value_changes_its_image_and_no_other() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut v = fixture();
    plots::write_plots(&view(&v), a.path()).unwrap();
    v["checks"][3]["value"] = serde_json::json!(0.85);
    v["loss_curves"]["vanilla"]["y"][1] = serde_json::json!(5.9);
    plots::write_plots(&view(&v), b.path()).unwrap();
    let read = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap();
    for (f, changed) in [
        ("golden-vanilla.linear_acc.png", true),
        ("loss-vanilla.png", true),
        ("golden-vanilla.cam_miou.png", false),
        ("loss-oa_crop.png", false),
    ] {
        assert_eq!(read(a.path(), f) != read(b.path(), f), changed, "{f}");
    }
    // Rendering is deterministic: the same numbers give the same bytes.
    let c = tempfile::tempdir().unwrap();
    plots::write_plots(&view(&v), c.path()).unwrap();
    assert_eq!(
        read(b.path(), "loss-vanilla.png"),
        read(c.path(), "loss-vanilla.png")
    );
}

#[test]
fn a_results_file_without_loss_curves_still_plots_its_goldens_with_a_note() {
    let t = tempfile::tempdir().unwrap();
    let mut v = fixture();
    v.as_object_mut().unwrap().remove("loss_curves");
    let p = plots::write_plots(&view(&v), t.path()).unwrap();
    assert!(p
        .files
        .iter()
        .all(|f| matches!(f.kind, PlotKind::Golden(_))));
    assert_eq!(p.files.len(), 3);
    assert_eq!(p.notes.len(), 1);
    assert!(
        p.notes[0].contains("No training-loss curves"),
        "{:?}",
        p.notes
    );
    let md = plots::markdown_section(&p, Path::new("plots"));
    assert!(md.contains("No training-loss curves"), "{md}");
    assert!(!md.contains("### Training loss"), "{md}");
    assert!(md.contains("](plots/golden-vanilla.cam_miou.png)"), "{md}");
}

#[test]
fn loss_curves_are_read_from_the_stage_result_or_the_train_report_beside_the_weights() {
    let t = tempfile::tempdir().unwrap();
    let cache = StageCache::open(t.path(), LockPolicy::Refuse).unwrap();
    let curve = Curve {
        x_label: "epoch".into(),
        y_label: "mean training loss".into(),
        x: vec![1.0, 2.0],
        y: vec![3.0, 2.5],
    };
    let fp = |c: char| c.to_string().repeat(64);
    // A graph `pretrain` stage: the curve is in its result.
    let c = curve.clone();
    cache
        .build("pre", "pretrain", &fp('a'), &[], &[], move |_| {
            Ok(StageResult::default().curve("loss", c))
        })
        .unwrap();
    // A smoke-pipeline train stage: only `train_report.json` beside the weights.
    cache
        .build("train", "train", &fp('b'), &[], &[], |dir| {
            std::fs::write(
                dir.join("train_report.json"),
                r#"{"epochs": 3, "steps": 6, "epoch_loss": [4.0, 3.5, 3.25], "seed": 0, "seconds": 1.0}"#,
            )
            .unwrap();
            Ok(StageResult::default())
        })
        .unwrap();
    // An evaluation stage: no curve.
    cache
        .build("eval", "eval", &fp('c'), &[], &[], |_| {
            Ok(StageResult::default())
        })
        .unwrap();
    let timing = |stage: &str, c: char| StageTiming {
        stage: stage.into(),
        fingerprint: fp(c),
        cached: false,
        seconds: 0.0,
    };
    let got = plots::loss_curves(
        &cache,
        &[
            timing("pre", 'a'),
            timing("train", 'b'),
            timing("eval", 'c'),
        ],
    );
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got["pre"], curve);
    assert_eq!(got["train"].x, [1.0, 2.0, 3.0]);
    assert_eq!(got["train"].y, [4.0, 3.5, 3.25]);
}

fn contracam() -> Command {
    let mut c = Command::cargo_bin("contracam").unwrap();
    c.env("RAYON_NUM_THREADS", "1").env("OMP_NUM_THREADS", "1");
    c
}

#[test]
fn suite_report_plots_links_them_from_the_markdown_and_old_files_get_a_note() {
    let t = tempfile::tempdir().unwrap();
    let results = t.path().join("r.json");
    std::fs::write(&results, fixture().to_string()).unwrap();
    let md = t.path().join("reports/r.md");
    let o = contracam()
        .args(["suite", "report"])
        .arg(&results)
        .arg("--out")
        .arg(&md)
        .arg("--plots")
        .arg(t.path().join("plots"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&md).unwrap();
    assert!(text.contains("## Plots"), "{text}");
    for f in [
        "loss-vanilla.png",
        "loss-oa_crop.png",
        "golden-vanilla.linear_acc.png",
    ] {
        // Relative to the report's folder, and the file is there.
        assert!(text.contains(&format!("](../plots/{f})")), "{f}\n{text}");
        assert!(t.path().join("plots").join(f).is_file(), "{f}");
    }
    // A results file written before the curves were recorded.
    let mut old = fixture();
    old.as_object_mut().unwrap().remove("loss_curves");
    std::fs::write(&results, old.to_string()).unwrap();
    let o = contracam()
        .args(["suite", "report"])
        .arg(&results)
        .arg("--plots")
        .arg(t.path().join("old-plots"))
        .current_dir(t.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("No training-loss curves"), "{text}");
    assert!(
        text.contains("](old-plots/golden-vanilla.cam_miou.png)"),
        "{text}"
    );
    assert!(!t.path().join("old-plots/loss-vanilla.png").exists());
}

#[test]
fn suite_run_plots_the_loss_of_each_training_stage() {
    let t = tempfile::tempdir().unwrap();
    let suite = suite_common::tiny_suite(t.path());
    let md = t.path().join("r.md");
    let o = contracam()
        .args([
            "suite",
            "run",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--quiet",
        ])
        .arg(&suite)
        .arg("--runs-dir")
        .arg(t.path().join("runs"))
        .args(["--no-golden", "--report"])
        .arg(&md)
        .arg("--plots")
        .arg(t.path().join("plots"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(t.path().join("runs/tiny/results.json")).unwrap(),
    )
    .unwrap();
    let curves = results["loss_curves"].as_object().unwrap();
    let mut stages: Vec<&str> = curves.keys().map(|k| k.as_str()).collect();
    stages.sort();
    // The smoke pipeline trains twice: the vanilla model and the OA-Crop retrain.
    assert_eq!(stages.len(), 2, "{stages:?}");
    let text = std::fs::read_to_string(&md).unwrap();
    for s in stages {
        let f = t.path().join(format!("plots/loss-{s}.png"));
        assert_eq!(png_size(&f), LOSS_SIZE);
        assert!(text.contains(&format!("](plots/loss-{s}.png)")), "{text}");
        // One point per epoch (the tiny suite trains one epoch).
        assert_eq!(curves[s]["y"].as_array().unwrap().len(), 1);
    }
}
