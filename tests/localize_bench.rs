//! `contracam localize bench --quick` at a tiny size against the official ContraCAM run by
//! `scripts/bench_contracam_pytorch.py` with the project's .venv torch: the agreement check passes and the
//! JSON carries both sides' timings; a PyTorch side changed on purpose (CONTRACAM_BENCH_PERTURB: one
//! iteration fewer, or no negative-signal removal) is refused before any timing is reported.
use std::path::{Path, PathBuf};

use assert_cmd::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The smoke network at 32 px, batch 8, one libtorch thread, on the CPU: a few seconds a side.
fn bench(dir: &Path, perturb: Option<&str>) -> (std::process::Output, PathBuf) {
    let json = dir.join("bench.json");
    let mut cmd = Command::cargo_bin("contracam").unwrap();
    cmd.env("CONTRACAM_LOG", "error")
        .env_remove("CONTRACAM_BENCH_PERTURB")
        .args([
            "localize", "bench", "--quick", "--only", "smoke", "--batch", "8",
        ])
        .args(["--threads", "1", "--device", "cpu"])
        .arg("--python")
        .arg(root().join(".venv/bin/python"))
        .arg("--script")
        .arg(root().join("scripts/bench_contracam_pytorch.py"))
        .arg("--dir")
        .arg(dir)
        .arg("--json")
        .arg(&json);
    if let Some(p) = perturb {
        cmd.env("CONTRACAM_BENCH_PERTURB", p);
    }
    (cmd.output().unwrap(), json)
}

#[test]
fn both_sides_agree_and_are_timed() {
    let dir = tempfile::tempdir().unwrap();
    let (out, json) = bench(dir.path(), None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "localize bench failed:\n{stderr}");
    assert!(
        stderr.contains("CAMs agree"),
        "no agreement line:\n{stderr}"
    );
    // Our side is timed as the localize commands run: freed CPU memory kept for reuse (glibc).
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        assert!(
            stderr.contains("freed CPU memory reused here: true"),
            "the allocator setting is not in force:\n{stderr}"
        );
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["iters"], 10);
    assert_eq!(v["expand_res"], 2);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row["case"]["batch"], 8);
    assert!(row["pytorch_error"].is_null(), "{}", row["pytorch_error"]);
    for side in ["ours", "pytorch"] {
        let m = row[side].as_array().unwrap();
        assert_eq!(m.len(), 2, "{side}: one measurement per round");
        for r in m {
            assert_eq!(r["images"], 8, "{side}");
            assert!(r["wall_s"].as_f64().unwrap() > 0.0, "{side}");
            assert!(r["cpu_s"].as_f64().unwrap() > 0.0, "{side}");
        }
    }
    let d = row["agreement"]["max_abs_diff"].as_f64().unwrap();
    assert!(d <= 1e-4, "max |Δ| {d}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("ResNet-18 x0.25, 32 px, batch 8"), "{table}");
}

#[test]
fn a_different_pytorch_computation_is_refused() {
    for perturb in ["iters", "no-clamp"] {
        let dir = tempfile::tempdir().unwrap();
        let (out, json) = bench(dir.path(), Some(perturb));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{perturb}: a perturbed PyTorch side passed the agreement check:\n{stderr}"
        );
        assert!(
            stderr.contains("compute different CAMs"),
            "{perturb}: not refused by the agreement check:\n{stderr}"
        );
        assert!(!json.exists(), "{perturb}: a report was written");
    }
}
