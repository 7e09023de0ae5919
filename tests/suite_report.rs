//! Report formats, as snapshots of a synthetic results file (one metric per verdict) and through the CLI.
use std::path::Path;

use contracam::suite::report::{self, Format, ReportView};

/// A results file as `suite run` writes it, with made-up values: a pass, a failure, a metric missing from
/// the run and one missing from the golden.
fn fixture() -> serde_json::Value {
    serde_json::json!({
        "suite": "smoke",
        "suite_version": 1,
        "suite_file": "suites/smoke.toml",
        "seed": 0,
        "git_hash": "0123456789ab",
        "git_dirty": true,
        "env": {
            "contracam": "0.1.0 (0123456789ab)",
            "git_hash": "0123456789ab",
            "tch": "0.24.0",
            "libtorch": "2.11.0",
            "cuda_linked": false,
            "cuda_available": false,
            "cuda_devices": [],
            "cpu_threads": 2,
            "cpu_model": "Intel(R) Xeon(R) CPU @ 2.20GHz",
            "cpu_isa": "avx2",
            "torch_threads": 1,
            "os": "linux x86_64"
        },
        "device": "cpu",
        "precision": "fp32",
        "started_at": "2026-12-02T17:00:00Z",
        "total_seconds": 146.25,
        "config": {},
        "stages": [],
        "metrics": {
            "vanilla.cam_miou": 0.4478,
            "vanilla.linear_acc": 0.75,
            "oa_crop.cam_miou": 0.46
        },
        "golden_file": "golden/smoke.toml",
        "checks": [
            {"metric": "boxes.recall50", "value": null, "golden": 0.33, "tolerance": 0.04, "verdict": "missing"},
            {"metric": "oa_crop.cam_miou", "value": 0.46, "golden": null, "tolerance": null, "verdict": "no_golden"},
            {"metric": "vanilla.cam_miou", "value": 0.4478, "golden": 0.4478277171201203, "tolerance": 0.03, "verdict": "pass"},
            {"metric": "vanilla.linear_acc", "value": 0.75, "golden": 0.86328125, "tolerance": 0.08, "verdict": "fail"}
        ],
        "passed": false
    })
}

fn render(v: &serde_json::Value, f: Format) -> String {
    report::render(v, Path::new("r.json"), f).unwrap()
}

#[test]
fn markdown_report() {
    insta::assert_snapshot!(render(&fixture(), Format::Markdown));
}

#[test]
fn junit_report() {
    insta::assert_snapshot!(render(&fixture(), Format::Junit));
}

#[test]
fn reports_of_a_run_at_another_seed_say_not_checked() {
    let mut v = fixture();
    v["seed"] = 3.into();
    v["not_checked"] = "no golden for seed 3: golden/smoke.toml was blessed at seed 0".into();
    v["checks"] = serde_json::json!([
        {"metric": "vanilla.cam_miou", "value": 0.41, "golden": null, "tolerance": null, "verdict": "no_golden_for_seed"}
    ]);
    let md = render(&v, Format::Markdown);
    assert!(
        md.contains("NOT CHECKED") && md.contains("no golden for seed 3"),
        "{md}"
    );
    let j = render(&v, Format::Junit);
    assert!(
        j.contains("skipped=\"1\"") && j.contains("<skipped message=\"no golden for seed 3"),
        "{j}"
    );
    assert!(!j.contains("<failure"), "{j}");
}

#[test]
fn older_results_without_the_new_fields_still_render_and_bad_files_name_the_field() {
    let mut v = fixture();
    let o = v.as_object_mut().unwrap();
    o.remove("git_dirty");
    o.remove("precision");
    let md = render(&v, Format::Markdown);
    assert!(
        md.contains("dirty flag unknown") && md.contains("| precision | unknown |"),
        "{md}"
    );
    v.as_object_mut().unwrap().remove("suite");
    let e = report::render(&v, Path::new("r.json"), Format::Junit)
        .unwrap_err()
        .to_string();
    assert!(e.contains("r.json") && e.contains("suite"), "{e}");
    assert_eq!(
        ReportView::from_json(&fixture(), Path::new("r.json"))
            .unwrap()
            .status(),
        "FAILED"
    );
}

#[test]
fn the_cli_renders_each_format() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().join("r.json");
    std::fs::write(&r, serde_json::to_string(&fixture()).unwrap()).unwrap();
    for (flag, f) in [
        ("md", Format::Markdown),
        ("junit", Format::Junit),
        ("json", Format::Json),
    ] {
        let out = assert_cmd::Command::cargo_bin("contracam")
            .unwrap()
            .args(["suite", "report"])
            .arg(&r)
            .args(["--format", flag])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            render(&fixture(), f)
        );
    }
}
