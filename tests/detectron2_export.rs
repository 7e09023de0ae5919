//! `model export-detectron2` against the official `detection/convert-pretrain-to-detectron2.py`: an
//! official-layout Lightning MoCo ResNet-50 checkpoint (made at test time with the .venv torch) is imported,
//! exported by contracam, converted by the official script, and both pickles are loaded with the .venv
//! Python + numpy as detectron2 loads them and compared array by array (`tests/fixtures/detectron2_export.py`).
use std::path::Path;

use assert_cmd::Command;

fn python() -> std::process::Command {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut c = std::process::Command::new(root.join(".venv/bin/python"));
    c.arg(root.join("tests/fixtures/detectron2_export.py"));
    c
}

#[test]
fn export_matches_the_official_converter() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let o = python().arg("make").arg(dir).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let weights = dir.join("m.safetensors");
    let ours = dir.join("ours.pkl");
    let bin = || Command::cargo_bin("contracam").unwrap();
    let o = bin()
        .args(["model", "import", "--quiet"])
        .arg(dir.join("lit.ckpt"))
        .arg("--out")
        .arg(&weights)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = bin()
        .args(["model", "export-detectron2"])
        .arg(&weights)
        .arg("--out")
        .arg(&ours)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = python()
        .arg("compare")
        .arg(dir)
        .arg(&ours)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&o.stdout);
    println!("{report}");
    assert!(
        o.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    // ResNet-50: 53 convs + 53 BNs × 5 entries.
    assert_eq!(r["tensors"], 53 + 53 * 5);
    // Our own reader accepts what we wrote (numpy globals are inert records there).
    let bytes = std::fs::read(&ours).unwrap();
    let p = contracam::data::formats::pickle::parse_with(
        &bytes,
        &contracam::data::formats::torch_checkpoint::TorchGlobals,
    )
    .unwrap();
    assert_eq!(p.str(p.get(p.root, "__author__").unwrap()), Some("MOCO"));
}

#[test]
fn export_of_a_file_without_an_encoder_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("x.safetensors");
    contracam::data::formats::safetensors::write_tensors(
        &src,
        &[(
            "fc.weight".into(),
            tch::Tensor::zeros([2, 2], tch::kind::FLOAT_CPU),
        )],
        &Default::default(),
    )
    .unwrap();
    let out = t.path().join("x.pkl");
    let e = contracam::model::export::export_detectron2(&src, &out)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no `encoder.*`") && e.contains("x.safetensors"),
        "{e}"
    );
    assert!(!out.exists());
}
