//! The binary: errors that name what is wrong, `env`, `localize cam` parity through files, `data synth`,
//! and explicit golden blessing.
mod common;

use assert_cmd::Command;
use contracam::data::formats::safetensors::read_tensors;
use predicates::prelude::*;

fn bin() -> Command {
    let mut c = Command::cargo_bin("contracam").unwrap();
    c.env("CONTRACAM_LOG", "error");
    c
}

#[test]
fn unknown_flag_is_an_error() {
    bin()
        .args(["localize", "cam", "--bogus"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--bogus"));
    bin()
        .args(["env", "--device", "tpu"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("invalid device 'tpu'"));
}

#[test]
fn env_reports_libtorch_and_cuda() {
    let out = bin()
        .args(["env", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(v["libtorch"].as_str().unwrap().starts_with("2.11.0"), "{v}");
    assert!(v["cuda_available"].is_boolean());
    assert!(v["cpu_threads"].as_u64().unwrap() >= 1);
    bin()
        .args(["env"])
        .assert()
        .success()
        .stdout(predicate::str::contains("cuda available"));
}

#[test]
fn localize_cam_errors_name_the_file_and_tensor() {
    let r = common::reference_dir().join("contracam");
    let w = r.join("contracam_r18_weights.safetensors");
    let v = r.join("contracam_r18_vectors.safetensors");
    let out = tempfile::tempdir().unwrap();
    let o = out.path().join("cam.safetensors");
    bin()
        .args([
            "localize",
            "cam",
            "--weights",
            "/nonexistent/w.safetensors",
            "--inputs",
        ])
        .arg(&v)
        .args(["--input-key", "input_normalized", "--out"])
        .arg(&o)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("/nonexistent/w.safetensors"));
    bin()
        .args(["localize", "cam", "--weights"])
        .arg(&w)
        .arg("--inputs")
        .arg(&v)
        .args(["--input-key", "no_such_tensor", "--out"])
        .arg(&o)
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("no_such_tensor")
                .and(predicate::str::contains("input_normalized")),
        );
    // A tensor of the wrong shape/dtype.
    bin()
        .args(["localize", "cam", "--weights"])
        .arg(&w)
        .arg("--inputs")
        .arg(&v)
        .args(["--input-key", "a_cam_lowres", "--out"])
        .arg(&o)
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("a_cam_lowres").and(predicate::str::contains("(N, 3, H, W)")),
        );
    bin()
        .args(["localize", "cam", "--weights"])
        .arg(&w)
        .arg("--inputs")
        .arg(&v)
        .args([
            "--input-key",
            "input_normalized",
            "--expand-res",
            "3",
            "--out",
        ])
        .arg(&o)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--expand-res"));
    assert!(!o.exists(), "no output on error");
}

#[test]
fn localize_cam_cli_reproduces_setting_b() {
    let r = common::reference_dir().join("contracam");
    let v = r.join("contracam_r18_vectors.safetensors");
    let out = tempfile::tempdir().unwrap();
    let o = out.path().join("cam.safetensors");
    bin()
        .args(["localize", "cam", "--device", "cpu", "--weights"])
        .arg(r.join("contracam_r18_weights.safetensors"))
        .arg("--inputs")
        .arg(&v)
        .args([
            "--input-key",
            "input_normalized",
            "--expand-res",
            "2",
            "--iters",
            "1",
            "--out",
        ])
        .arg(&o)
        .assert()
        .success();
    let got = read_tensors(&o).unwrap();
    let cam = got.get("cam").unwrap();
    assert_eq!(cam.size(), vec![8, 1, 224, 224]);
    assert_eq!(cam.kind(), tch::Kind::Float);
    let want = read_tensors(&v).unwrap();
    let d = (cam - want.get("cam_b_er2_it1").unwrap())
        .abs()
        .max()
        .double_value(&[]);
    assert!(d <= 1e-4, "max |Δ| {d}");
}

#[test]
fn data_synth_writes_a_browsable_deterministic_dataset() {
    let d = tempfile::tempdir().unwrap();
    for sub in ["a", "b"] {
        bin()
            .args([
                "data",
                "synth",
                "--seed",
                "4",
                "--train-scenes",
                "6",
                "--test-scenes",
                "4",
                "--crops",
                "3",
                "--bg-challenge",
                "2",
                "--out",
            ])
            .arg(d.path().join(sub))
            .assert()
            .success();
    }
    let a = d.path().join("a");
    for f in [
        "index.json",
        "index.html",
        "preview.png",
        "scenes/train/00005.png",
        "scenes/test/00003_mask.png",
        "crops/val/00002.png",
        "bg_challenge/mixed_rand/00001.png",
    ] {
        assert!(a.join(f).is_file(), "missing {f}");
    }
    for f in [
        "index.json",
        "scenes/train/00000.png",
        "bg_challenge/only_bg/00000.png",
    ] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(d.path().join("b").join(f)).unwrap(),
            "{f} differs between runs"
        );
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["seed"], 4);
    let bad = d.path().join("bad.toml");
    std::fs::write(&bad, "num_clases = 3\n").unwrap();
    bin()
        .args(["data", "synth", "--config"])
        .arg(&bad)
        .arg("--out")
        .arg(d.path().join("c"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("num_clases").and(predicate::str::contains("bad.toml")));
}

#[test]
fn bless_is_explicit_and_needs_tolerances() {
    let d = tempfile::tempdir().unwrap();
    let results = d.path().join("results.json");
    std::fs::write(
        &results,
        r#"{"suite":"s","suite_version":2,"seed":5,"git_hash":"abc","device":"cpu",
            "env":{"os":"linux x86_64","cpu_threads":2,"libtorch":"2.11.0"},
            "metrics":{"a.miou":0.25,"b.acc":0.5}}"#,
    )
    .unwrap();
    let golden = d.path().join("g.toml");
    bin()
        .args(["suite", "bless", "--results"])
        .arg(&results)
        .arg("--golden")
        .arg(&golden)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--default-tolerance"));
    assert!(!golden.exists());
    bin()
        .args([
            "suite",
            "bless",
            "--by",
            "tester",
            "--default-tolerance",
            "0.05",
            "--results",
        ])
        .arg(&results)
        .arg("--golden")
        .arg(&golden)
        .assert()
        .success();
    let text = std::fs::read_to_string(&golden).unwrap();
    for needle in [
        "suite = \"s\"",
        "suite_version = 2",
        "blessed_by = \"tester\"",
        "commit = \"abc\"",
        "seed = 5",
        "[metrics.\"a.miou\"]",
        "tolerance = 0.05",
    ] {
        assert!(text.contains(needle), "golden lacks {needle}:\n{text}");
    }
}

#[test]
fn suite_run_without_golden_fails_before_work() {
    let d = tempfile::tempdir().unwrap();
    let suite = d.path().join("s.toml");
    let smoke = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("suites/smoke.toml");
    std::fs::write(
        &suite,
        format!(
            "include = \"{}\"\ngolden = \"missing-golden.toml\"\n",
            smoke.display()
        ),
    )
    .unwrap();
    bin()
        .args(["suite", "run", "--runs-dir"])
        .arg(d.path().join("runs"))
        .arg(&suite)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("missing-golden.toml"));
    assert!(!d.path().join("runs").exists());
}
