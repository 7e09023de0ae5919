//! `suite run --allow-fail ID --reason TEXT`: a failing golden check becomes BYPASSED with its reason in the
//! results and reports, and the run passes when nothing else failed; an unknown name and a missing reason
//! are refused. A one-stage graph suite (centre box on 8 synthetic scenes) with a golden that is wrong on
//! purpose.
use std::path::Path;
use std::process::Command;

const SUITE: &str = r#"name = "allow"
version = 1
[datasets.scenes]
synth = { form = "scenes", split = "test", count = 8, seed = 3, synth = { image_size = 32, crop_size = 24 } }
[stages.baseline]
kind = "center-box"
inputs = { data = "datasets.scenes" }
"#;

fn golden(value: f64) -> String {
    format!(
        "suite = \"allow\"\nsuite_version = 1\n[provenance]\nblessed_by = \"test\"\nblessed_at = \"2026-12-03T00:00:00Z\"\n\
         seed = 0\ncommit = \"x\"\nmachine = \"x\"\nresults_sha256 = \"x\"\nnote = \"written by the test\"\n\
         [metrics.\"baseline.miou\"]\nvalue = {value}\ntolerance = 1e-9\nwhy = \"test\"\n"
    )
}

fn run(dir: &Path, extra: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_contracam"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CONTRACAM_LOG", "error")
        .args(["suite", "run"])
        .arg(dir.join("allow.toml"))
        .arg("--runs-dir")
        .arg(dir.join("runs"))
        .arg("--out")
        .arg(dir.join("r.json"))
        .arg("--report")
        .arg(dir.join("r.md"))
        .arg("--junit")
        .arg(dir.join("r.xml"))
        .arg("--golden")
        .arg(dir.join("g.toml"))
        .args(["--threads", "1", "--quiet"])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn results(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("r.json")).unwrap()).unwrap()
}

#[test]
fn an_accepted_failure_is_bypassed_with_its_reason_and_anything_else_still_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("allow.toml"), SUITE).unwrap();
    // A golden the centre box cannot meet.
    std::fs::write(dir.path().join("g.toml"), golden(0.999)).unwrap();
    let (ok, _, err) = run(dir.path(), &[]);
    assert!(!ok, "{err}");
    assert_eq!(results(dir.path())["passed"], false);

    let (ok, out, err) = run(
        dir.path(),
        &[
            "--allow-fail",
            "baseline.miou",
            "--reason",
            "known: the test golden is wrong",
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("BYPASSED"), "{out}");
    let r = results(dir.path());
    assert_eq!(r["passed"], true);
    assert_eq!(r["checks"][0]["verdict"], "bypassed");
    assert_eq!(
        r["bypassed"][0],
        serde_json::json!({"id": "baseline.miou", "check": "metric", "was": "FAIL",
                           "reason": "known: the test golden is wrong"})
    );
    let md = std::fs::read_to_string(dir.path().join("r.md")).unwrap();
    assert!(
        md.contains("## Bypassed") && md.contains("known: the test golden is wrong"),
        "{md}"
    );
    let xml = std::fs::read_to_string(dir.path().join("r.xml")).unwrap();
    assert!(
        xml.contains("failures=\"0\"")
            && xml.contains("<skipped message=\"bypassed (--allow-fail, was FAIL)"),
        "{xml}"
    );

    // A check that passes anyway is recorded as such and nothing is bypassed.
    let value = r["metrics"]["baseline.miou"].as_f64().unwrap();
    std::fs::write(dir.path().join("g.toml"), golden(value)).unwrap();
    let (ok, _, err) = run(
        dir.path(),
        &[
            "--allow-fail",
            "baseline.miou",
            "--reason",
            "no longer needed",
        ],
    );
    assert!(ok, "{err}");
    let r = results(dir.path());
    assert_eq!(r["checks"][0]["verdict"], "pass");
    assert_eq!(r["bypassed"][0]["was"], "PASS");

    // Unknown names and a missing reason are refused.
    let (ok, _, err) = run(
        dir.path(),
        &["--allow-fail", "baseline.mIoU", "--reason", "typo"],
    );
    assert!(!ok);
    assert!(
        err.contains("--allow-fail baseline.mIoU") && err.contains("baseline.miou"),
        "{err}"
    );
    let (ok, _, err) = run(dir.path(), &["--allow-fail", "baseline.miou"]);
    assert!(!ok);
    assert!(err.contains("--reason"), "{err}");
}
