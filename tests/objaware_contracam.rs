//! Setting (c) of the ContraCAM reference set: `clean_mask` (seg, save_box multi, save_box single) and
//! `extract_boxes` (raw OpenCV xywh and normalised xyxy with margin 0.2), all of which must be identical
//! (contracam/README.md; issue 5). Masks are checked both from the stored official CRF output (isolates
//! the cleaning) and from this crate's CRF (the whole chain).
mod common;

use contracam::imgops::contours::Rect;
use contracam::localize::boxes::{extract_boxes, raw_boxes, BoxOptions};
use contracam::localize::crf::{OfficialCrf, OfficialCrfParams};
use contracam::localize::mask_clean::{clean_mask, CleanOptions};
use safetensors::SafeTensors;
use serde_json::Value;

const W: usize = 224;
const H: usize = 224;

fn tensor_f32(st: &SafeTensors, key: &str) -> Vec<f32> {
    let t = st
        .tensor(key)
        .unwrap_or_else(|e| panic!("tensor {key}: {e:?}"));
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn rects(v: &Value) -> Vec<Vec<Rect>> {
    v.as_array()
        .expect("images")
        .iter()
        .map(|img| {
            img.as_array()
                .expect("boxes")
                .iter()
                .map(|b| {
                    let b: Vec<i32> = b
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_i64().unwrap() as i32)
                        .collect();
                    Rect {
                        x: b[0],
                        y: b[1],
                        w: b[2],
                        h: b[3],
                    }
                })
                .collect()
        })
        .collect()
}

fn norm_boxes(v: &Value) -> Vec<Vec<[f64; 4]>> {
    v.as_array()
        .expect("images")
        .iter()
        .map(|img| {
            img.as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    let b: Vec<f64> = b
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().unwrap())
                        .collect();
                    [b[0], b[1], b[2], b[3]]
                })
                .collect()
        })
        .collect()
}

#[test]
fn setting_c_masks_and_boxes() {
    let dir = common::reference_dir().join("contracam");
    let path = dir.join("contracam_r18_vectors.safetensors");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st =
        SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
    let bpath = dir.join("contracam_r18_boxes.json");
    let boxes_ref: Value = serde_json::from_str(
        &std::fs::read_to_string(&bpath).unwrap_or_else(|e| panic!("{}: {e}", bpath.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", bpath.display()));

    let images = st
        .tensor("input_uint8")
        .expect("input_uint8")
        .data()
        .to_vec();
    let cam = tensor_f32(&st, "cam_c_er2_it10");
    let crf_ref = tensor_f32(&st, "c_crf_prob");
    let crf = OfficialCrf::new(W, H, OfficialCrfParams::default()).unwrap();
    let modes = [
        ("c_crf_clean_seg", CleanOptions::seg(), "from_seg_mask"),
        ("c_crf_clean_box", CleanOptions::boxes(), "save_box_multi"),
        (
            "c_crf_clean_single",
            CleanOptions::single(),
            "save_box_single",
        ),
    ];
    let n = W * H;
    let ours_crf: Vec<Vec<f32>> = (0..8)
        .map(|b| {
            crf.run(
                &images[b * n * 3..(b + 1) * n * 3],
                &cam[b * n..(b + 1) * n],
            )
            .unwrap()
        })
        .collect();
    for (key, opts, box_key) in &modes {
        let expected_masks = tensor_f32(&st, key);
        let raw_ref = rects(&boxes_ref[box_key]["raw_xywh_pixels"]);
        let norm_ref = norm_boxes(&boxes_ref[box_key]["xyxy_normalized_margin0.2"]);
        for b in 0..8 {
            let expected: Vec<u8> = expected_masks[b * n..(b + 1) * n]
                .iter()
                .map(|&v| v as u8)
                .collect();
            let from_ref = clean_mask(&crf_ref[b * n..(b + 1) * n], W, H, opts);
            assert_eq!(
                from_ref, expected,
                "{key}[{b}] from the official CRF output"
            );
            let mask = clean_mask(&ours_crf[b], W, H, opts);
            let flips = mask.iter().zip(&expected).filter(|(a, e)| a != e).count();
            assert_eq!(flips, 0, "{key}[{b}] from our CRF: {flips} pixels differ");
            let raw = raw_boxes(&mask, W, H, &BoxOptions::default());
            assert_eq!(raw, raw_ref[b], "{box_key} raw boxes of image {b}");
            let norm = extract_boxes(&mask, W, H, &BoxOptions::default());
            assert_eq!(norm, norm_ref[b], "{box_key} normalised boxes of image {b}");
        }
    }
}

#[test]
fn setting_c_quirks_and_their_fixes() {
    let dir = common::reference_dir().join("contracam");
    let path = dir.join("contracam_r18_vectors.safetensors");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st =
        SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
    let crf_ref = tensor_f32(&st, "c_crf_prob");
    let n = W * H;
    // chelsea (1), retina (5), hubble (7): all-foreground CRF → empty official masks, full masks when fixed.
    for b in [1, 5, 7] {
        let p = &crf_ref[b * n..(b + 1) * n];
        assert!(
            clean_mask(p, W, H, &CleanOptions::boxes())
                .iter()
                .all(|&v| v == 0),
            "image {b}"
        );
        let fixed = clean_mask(p, W, H, &CleanOptions::boxes().fixed());
        assert!(fixed.iter().all(|&v| v == 1), "image {b} fixed");
        assert_eq!(
            extract_boxes(&fixed, W, H, &BoxOptions::default()),
            vec![[0.0, 0.0, 1.0, 1.0]]
        );
    }
    // coffee (2): the hole (99,18,46,43) is an official box; gone with include_holes = false.
    let mask = clean_mask(&crf_ref[2 * n..3 * n], W, H, &CleanOptions::boxes());
    let hole = Rect {
        x: 99,
        y: 18,
        w: 46,
        h: 43,
    };
    assert!(raw_boxes(&mask, W, H, &BoxOptions::default()).contains(&hole));
    let fixed = raw_boxes(&mask, W, H, &BoxOptions::default().fixed());
    assert!(!fixed.contains(&hole));
    assert_eq!(fixed.len(), 2);
}
