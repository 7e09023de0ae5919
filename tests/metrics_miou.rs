//! Mask mIoU over PNG folders against `metrics/masks` (numpy + Pillow reference): mIoU within 1e-12 and
//! every per-image intersection / union exactly.
mod common;

use contracam::eval::miou::evaluate_mask_dirs;
use serde_json::Value;

#[test]
fn masks_match_reference() {
    let root = common::reference_dir().join("metrics");
    let exp: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("expected.json")).unwrap())
            .unwrap();
    let r = evaluate_mask_dirs(&root.join("masks/pred"), &root.join("masks/gt")).unwrap();
    let want = &exp["mask_miou"];
    assert_eq!(r.n, 25);
    let d = (r.miou - want["mIoU"].as_f64().unwrap()).abs();
    eprintln!("mIoU {} |diff| {d:e}", r.miou);
    assert!(d <= 1e-12, "mIoU {} vs {}", r.miou, want["mIoU"]);
    let ids: Vec<String> = std::fs::read_to_string(root.join("masks/ids.txt"))
        .unwrap()
        .lines()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        r.per_image
            .iter()
            .map(|p| p.name.trim_end_matches(".png").to_string())
            .collect::<Vec<_>>(),
        ids
    );
    for p in &r.per_image {
        let e = &want["per_image"][p.name.trim_end_matches(".png")];
        assert_eq!(
            p.intersection,
            e["intersection"].as_u64().unwrap(),
            "{}",
            p.name
        );
        assert_eq!(p.union, e["union"].as_u64().unwrap(), "{}", p.name);
        assert!(
            (p.iou - e["iou"].as_f64().unwrap()).abs() <= 1e-15,
            "{}",
            p.name
        );
    }
}

#[test]
fn missing_prediction_names_the_file() {
    let root = common::reference_dir().join("metrics/masks");
    let dir = tempfile::tempdir().unwrap();
    let e = evaluate_mask_dirs(dir.path(), &root.join("gt"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mask_000.png") && e.contains("prediction missing"),
        "{e}"
    );
}
