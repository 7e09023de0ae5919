//! `clean_mask` and `extract_boxes` against the official object-aware post-processing
//! (kernels/objaware/postproc_refvectors.json; kernels/crf for the CRF input of case B).
//! Masks and boxes must be identical (issue 5). Box order is OpenCV's contour order.
mod common;

use contracam::localize::boxes::{extract_boxes, extract_boxes_soft, BoxOptions};
use contracam::localize::crf::{OfficialCrf, OfficialCrfParams};
use contracam::localize::mask_clean::{clean_mask, CleanOptions};
use serde_json::Value;

fn load(rel: &str) -> Value {
    let path = common::reference_dir().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn flat(v: &Value) -> Vec<f64> {
    fn walk(v: &Value, out: &mut Vec<f64>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Number(n) => out.push(n.as_f64().expect("number")),
            _ => panic!("unexpected JSON value {v}"),
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out);
    out
}

fn boxes_of(v: &Value) -> Vec<[f64; 4]> {
    v.as_array()
        .expect("box list")
        .iter()
        .map(|b| flat(b).try_into().expect("4 coordinates"))
        .collect()
}

/// Case B of kernels/crf: the CRF output, then clean_mask / extract_boxes.
fn case_b() -> (Vec<f32>, Vec<f32>, usize, usize) {
    let r = load("kernels/crf/pydensecrf_refvectors.json");
    let b = &r["B_objectaware_applycrf_32x32"];
    let (w, h) = (
        b["W"].as_u64().unwrap() as usize,
        b["H"].as_u64().unwrap() as usize,
    );
    let cam: Vec<f32> = flat(&b["cam"]).into_iter().map(|x| x as f32).collect();
    let img: Vec<u8> = flat(&b["img_hwc"]).into_iter().map(|x| x as u8).collect();
    let crf = OfficialCrf::new(w, h, OfficialCrfParams::default())
        .unwrap()
        .run(&img, &cam)
        .unwrap();
    (crf, cam, w, h)
}

fn as_u8(v: &Value) -> Vec<u8> {
    flat(v).into_iter().map(|x| x as u8).collect()
}

#[test]
fn case_b_clean_masks() {
    let o = load("kernels/objaware/postproc_refvectors.json");
    let (crf, cam, w, h) = case_b();
    assert_eq!(
        clean_mask(&crf, w, h, &CleanOptions::seg()),
        as_u8(&o["B_clean_after_crf"]),
        "B_clean_after_crf"
    );
    assert_eq!(
        clean_mask(&cam, w, h, &CleanOptions::seg()),
        as_u8(&o["B_clean_no_crf"]),
        "B_clean_no_crf"
    );
    assert_eq!(
        clean_mask(&crf, w, h, &CleanOptions::single()),
        as_u8(&o["B_clean_after_crf_single_0.01"]),
        "B_clean_after_crf_single_0.01"
    );
}

#[test]
fn case_b_boxes() {
    let o = load("kernels/objaware/postproc_refvectors.json");
    let (crf, _, w, h) = case_b();
    let mask = clean_mask(&crf, w, h, &CleanOptions::seg());
    let boxes = extract_boxes(&mask, w, h, &BoxOptions::default());
    assert_eq!(boxes, boxes_of(&o["B_boxes_after_crf_margin0.2"]));
}

#[test]
fn synthetic_s_clean_and_boxes() {
    let o = load("kernels/objaware/postproc_refvectors.json");
    let s: Vec<f32> = flat(&o["S_input"]).into_iter().map(|x| x as f32).collect();
    let (w, h) = (40, 40);
    assert_eq!(s.len(), w * h);
    let clean = clean_mask(&s, w, h, &CleanOptions::seg());
    assert_eq!(clean, as_u8(&o["S_clean_default"]), "S_clean_default");
    for (key, margin) in [
        ("S_boxes_tree_min0.01_margin0", 0.0),
        ("S_boxes_tree_min0.01_margin0.2", 0.2),
    ] {
        let opts = BoxOptions {
            margin,
            ..Default::default()
        };
        let expected = boxes_of(&o[key]);
        assert_eq!(
            extract_boxes(&clean, w, h, &opts),
            expected,
            "{key} from the cleaned mask"
        );
        assert_eq!(
            extract_boxes_soft(&s, w, h, &opts),
            expected,
            "{key} from the soft input"
        );
    }
    // The fix drops the hole box (the third, 6×5 around the 4×3 hole).
    let fixed = extract_boxes(
        &clean,
        w,
        h,
        &BoxOptions {
            margin: 0.0,
            ..Default::default()
        }
        .fixed(),
    );
    assert_eq!(
        fixed,
        boxes_of(&o["S_boxes_tree_min0.01_margin0"])[..2].to_vec()
    );
}
