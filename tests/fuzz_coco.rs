//! Property tests of the COCO readers and the evaluation behind them: ground-truth instances JSON
//! (`load_dataset`, `gt_objects`) and results JSON (`load_results`, `load_res`, `detections_as_loaded`),
//! evaluated with `evaluate_files` for bbox and segm. Arbitrary bytes, mutations of small valid files, and
//! generated annotations (polygons, compressed and uncompressed RLEs with drawn sizes and counts) never
//! panic, hang or allocate without bound; they evaluate or return an error naming the file.
//! Crashes found here became the regression tests at the end of the file.
//!
//! Cases per property: `$CONTRACAM_FUZZ_CASES`, else the defaults below (about 20 s for the file in release
//! on one thread).
mod fuzz_support;

use contracam::eval::coco::{self, IouType};
use contracam::imgops::rle::Rle;
use fuzz_support::{apply, bounded, bytes, config, mutations};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};

#[global_allocator]
static ALLOC: fuzz_support::CapAlloc = fuzz_support::CapAlloc;

/// A 3×4 compressed RLE with a 2-pixel object, as pycocotools writes it.
fn compressed_rle() -> String {
    Rle {
        h: 3,
        w: 4,
        counts: vec![4, 2, 6],
    }
    .to_compressed()
}

fn gt_seed() -> Value {
    json!({
        "images": [{"id": 1, "width": 4, "height": 3}, {"id": 2, "width": 20, "height": 10}],
        "categories": [{"id": 1}, {"id": 7}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1.0, 1.0, 2.0, 1.0], "area": 2.0,
             "iscrowd": 0, "segmentation": {"size": [3, 4], "counts": compressed_rle()}},
            {"id": 2, "image_id": 2, "category_id": 7, "bbox": [2.0, 2.0, 6.0, 5.0], "area": 30.0,
             "iscrowd": 0, "segmentation": [[2.0, 2.0, 8.0, 2.0, 8.0, 7.0, 2.0, 7.0]]},
            {"id": 3, "image_id": 2, "category_id": 7, "bbox": [0.0, 0.0, 20.0, 10.0], "area": 200.0,
             "iscrowd": 1, "segmentation": {"size": [10, 20], "counts": [0, 200]}},
        ]
    })
}

fn dt_seed() -> Value {
    json!([
        {"image_id": 1, "category_id": 1, "bbox": [1.0, 1.0, 2.0, 1.0], "score": 0.9,
         "segmentation": {"size": [3, 4], "counts": compressed_rle()}, "id": 1, "area": 2.0},
        {"image_id": 2, "category_id": 7, "bbox": [2.5, 2.0, 6.0, 4.0], "score": 0.8,
         "segmentation": [[2.5, 2.0, 8.5, 2.0, 8.5, 6.0, 2.5, 6.0]], "id": 2, "area": 24.0},
        {"image_id": 2, "category_id": 7, "bbox": [10.0, 1.0, 3.0, 3.0], "score": 0.3, "id": 3, "area": 9.0},
    ])
}

/// Writes both files and runs every reader and both evaluations on them; errors must name a file.
fn coco_check(gt: Vec<u8>, dt: Vec<u8>) {
    bounded("coco", move || {
        let dir = tempfile::tempdir().unwrap();
        let (gp, dp) = (dir.path().join("gt.json"), dir.path().join("dt.json"));
        std::fs::write(&gp, &gt).unwrap();
        std::fs::write(&dp, &dt).unwrap();
        let names_a_file = |e: &str| e.contains("gt.json") || e.contains("dt.json");
        if let (Ok(ds), Ok(res)) = (coco::load_dataset(&gp), coco::load_results(&dp)) {
            for t in [IouType::Bbox, IouType::Segm] {
                let _ = coco::gt_objects(&ds, t, &gp);
            }
            let _ = coco::load_res(&ds, &res, &dp);
            let _ = coco::detections_as_loaded(&res, &dp);
        }
        for t in [IouType::Bbox, IouType::Segm] {
            for drop in [false, true] {
                match coco::evaluate_files(&gp, &dp, t, drop) {
                    Ok(r) => {
                        assert!(r.stats.iter().all(|s| !s.is_nan()), "{:?}", r.stats);
                        EVALUATED.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        let e = e.to_string();
                        assert!(names_a_file(&e), "error does not name a file: {e}");
                    }
                }
            }
        }
    })
}

/// Evaluations that ran to the end (the properties must reach the matching, not stop at parse errors).
static EVALUATED: AtomicUsize = AtomicUsize::new(0);

fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

#[test]
fn seeds_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let (gp, dp) = (dir.path().join("gt.json"), dir.path().join("dt.json"));
    std::fs::write(&gp, to_bytes(&gt_seed())).unwrap();
    std::fs::write(&dp, to_bytes(&dt_seed())).unwrap();
    for t in [IouType::Bbox, IouType::Segm] {
        let r = coco::evaluate_files(&gp, &dp, t, false).unwrap();
        assert!(r.stats[0] > 0.0, "{t:?}: {:?}", r.stats);
    }
}

fn coord() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => -2.0f64..25.0,
        1 => -1e4f64..1e4,
        1 => Just(1e9),
        1 => Just(-1e9),
        1 => Just(3e38),
        1 => Just(f64::MAX),
    ]
}

fn size() -> impl Strategy<Value = u32> {
    prop_oneof![6 => 0u32..25, 1 => Just(65536u32), 1 => Just(u32::MAX), 1 => any::<u32>()]
}

/// A `segmentation` value: polygons, uncompressed or compressed RLE, with drawn sizes and counts.
fn segmentation() -> impl Strategy<Value = Value> {
    let count = prop_oneof![6 => 0u32..30, 1 => any::<u32>()];
    prop_oneof![
        2 => proptest::collection::vec(proptest::collection::vec(coord(), 0..10), 0..3)
            .prop_map(|p| json!(p)),
        2 => (size(), size(), proptest::collection::vec(count, 0..8))
            .prop_map(|(h, w, c)| json!({"size": [h, w], "counts": c})),
        1 => (size(), size(), "[0-9:;<=>?@A-Za-o]{0,12}")
            .prop_map(|(h, w, s)| json!({"size": [h, w], "counts": s})),
        1 => (size(), size(), proptest::collection::vec(0u32..30, 0..8))
            .prop_map(|(h, w, c)| {
                let s = Rle { h, w, counts: c }.to_compressed();
                json!({"size": [h, w], "counts": s})
            }),
    ]
}

fn bbox() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => proptest::collection::vec(coord(), 4..=4).prop_map(|b| json!(b)),
        1 => proptest::collection::vec(coord(), 0..6).prop_map(|b| json!(b)),
    ]
}

/// A ground truth over images 1..=3 (drawn sizes) with drawn annotations, and drawn results.
fn generated() -> impl Strategy<Value = (Value, Value)> {
    let ann = (
        0i64..6,
        1i64..4,
        1i64..3,
        proptest::option::of(bbox()),
        proptest::option::of(0.0f64..500.0),
        0i64..2,
        proptest::option::of(segmentation()),
    )
        .prop_map(|(id, im, cat, b, area, crowd, seg)| {
            let mut a = json!({"id": id, "image_id": im, "category_id": cat, "iscrowd": crowd});
            if let Some(b) = b {
                a["bbox"] = b;
            }
            if let Some(x) = area {
                a["area"] = json!(x);
            }
            if let Some(s) = seg {
                a["segmentation"] = s;
            }
            a
        });
    let res = (
        1i64..5,
        1i64..3,
        proptest::option::of(bbox()),
        prop_oneof![Just(0.5f64), (0.0f64..1.0), Just(-1e300)],
        proptest::option::of(segmentation()),
    )
        .prop_map(|(im, cat, b, score, seg)| {
            let mut r =
                json!({"image_id": im, "category_id": cat, "score": score, "id": 1, "area": 1.0});
            if let Some(b) = b {
                r["bbox"] = b;
            }
            if let Some(s) = seg {
                r["segmentation"] = s;
            }
            r
        });
    (
        proptest::collection::vec((size(), size()), 3..=3),
        proptest::collection::vec(ann, 0..5),
        proptest::collection::vec(res, 0..5),
    )
        .prop_map(|(sizes, anns, res)| {
            let images: Vec<Value> = sizes
                .iter()
                .enumerate()
                .map(|(i, (h, w))| json!({"id": i + 1, "height": h, "width": w}))
                .collect();
            (
                json!({"images": images, "categories": [{"id": 1}, {"id": 2}], "annotations": anns}),
                json!(res),
            )
        })
}

proptest! {
    #![proptest_config(config(1500))]

    #[test]
    fn coco_arbitrary_bytes(gt in bytes(200), dt in bytes(200), valid_gt in any::<bool>()) {
        let gt = if valid_gt { to_bytes(&gt_seed()) } else { gt };
        coco_check(gt, dt);
    }

    #[test]
    fn coco_mutated_files(gms in mutations(4), dms in mutations(4), which in 0u8..3) {
        let gt = to_bytes(&gt_seed());
        let dt = to_bytes(&dt_seed());
        let gt = if which != 1 { apply(&gt, &gms) } else { gt };
        let dt = if which != 0 { apply(&dt, &dms) } else { dt };
        coco_check(gt, dt);
    }

    #[test]
    fn coco_generated_annotations((gt, dt) in generated()) {
        coco_check(to_bytes(&gt), to_bytes(&dt));
    }
}

#[test]
fn generated_annotations_reach_evaluation() {
    EVALUATED.store(0, Ordering::Relaxed);
    coco_generated_annotations();
    let n = EVALUATED.load(Ordering::Relaxed);
    println!("{n} generated evaluations ran to the end");
    assert!(n > 100, "only {n} generated cases were evaluated");
}

// ---------------------------------------------------------------- regressions

fn eval_json(gt: &Value, dt: &Value, t: IouType) -> Result<Vec<f64>, String> {
    let dir = tempfile::tempdir().unwrap();
    let (gp, dp) = (dir.path().join("gt.json"), dir.path().join("dt.json"));
    std::fs::write(&gp, to_bytes(gt)).unwrap();
    std::fs::write(&dp, to_bytes(dt)).unwrap();
    coco::evaluate_files(&gp, &dp, t, false)
        .map(|r| r.stats.to_vec())
        .map_err(|e| e.to_string())
}

fn one_pair(gt_seg: Value, dt_seg: Value, h: u32, w: u32) -> (Value, Value) {
    (
        json!({"images": [{"id": 1, "height": h, "width": w}], "categories": [{"id": 1}],
               "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "area": 5.0, "iscrowd": 0,
                                "segmentation": gt_seg}]}),
        json!([{"image_id": 1, "category_id": 1, "score": 0.5, "segmentation": dt_seg}]),
    )
}

/// An uncompressed RLE whose counts sum to 5 of its 3×4 pixels, against an overlapping detection: `rle_iou`
/// (like pycocotools' `rleIou`) never finished, since one RLE runs out while the other has pixels left.
#[test]
fn rle_counts_not_covering_the_size_are_refused() {
    let (gt, dt) = one_pair(
        json!({"size": [3, 4], "counts": [0, 5]}),
        json!({"size": [3, 4], "counts": compressed_rle()}),
        3,
        4,
    );
    let e = bounded("short rle", move || {
        eval_json(&gt, &dt, IouType::Segm).unwrap_err()
    });
    assert!(
        e.contains("RLE counts sum to 5 pixels but its size 3x4 has 12"),
        "{e}"
    );
}

/// A polygon with a vertex at 1e9 was rasterised along its 5e9-point boundary (tens of GiB).
#[test]
fn far_polygons_are_refused_not_rasterised() {
    let (gt, dt) = one_pair(
        json!([[0.0, 0.0, 1e9, 0.0, 1e9, 1e9]]),
        json!([[0.0, 0.0, 5.0, 0.0, 5.0, 5.0]]),
        10,
        10,
    );
    let e = bounded("far polygon", move || {
        eval_json(&gt, &dt, IouType::Segm).unwrap_err()
    });
    assert!(
        e.contains("upsampled boundary points in a 10x10 image"),
        "{e}"
    );
}

/// Polygons in a 65536×65536 image: the 32-bit pixel count wraps, the per-polygon RLEs do not add up and
/// merging them never finished.
#[test]
fn polygons_in_an_image_past_32_bit_pixels_are_refused() {
    let (gt, dt) = one_pair(
        json!([
            [0.0, 0.0, 5.0, 0.0, 5.0, 5.0],
            [1.0, 1.0, 2.0, 1.0, 2.0, 2.0]
        ]),
        json!([[0.0, 0.0, 5.0, 0.0, 5.0, 5.0]]),
        65536,
        65536,
    );
    let e = bounded("huge image", move || {
        eval_json(&gt, &dt, IouType::Segm).unwrap_err()
    });
    assert!(e.contains("more pixels than 32-bit RLE counts hold"), "{e}");
}
