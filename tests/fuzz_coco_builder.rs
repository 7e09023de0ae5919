//! The COCO builder's segmentation reader (`data::builders::coco::ann_to_rle`, the same checked conversion
//! as COCO segm AP's `to_rle`) on untrusted annotations: a polygon far outside its image, RLE counts that
//! do not cover the mask and absurd image sizes are errors naming the file and the annotation id, never an
//! unbounded allocation or a hang. A bounded property test draws polygons and RLEs of every shape.
//!
//! Cases per property: `$CONTRACAM_FUZZ_CASES`, else the default below (a few seconds in release).
mod data_common;
mod fuzz_support;

use contracam::data::builders::coco::{ann_to_rle, RleCounts, Segmentation, MAX_MASK_PIXELS};
use contracam::imgops::rle::Rle;
use data_common::*;
use fuzz_support::{bounded, config};
use proptest::prelude::*;

#[global_allocator]
static ALLOC: fuzz_support::CapAlloc = fuzz_support::CapAlloc;

/// `ann_to_rle` on its own thread, under the fuzz time and allocation bounds.
fn checked(seg: Segmentation, h: u32, w: u32) -> Result<Rle, String> {
    bounded("ann_to_rle", move || ann_to_rle(&seg, h, w))
}

#[test]
fn a_far_polygon_is_an_error_not_an_allocation() {
    // Rasterised as pycocotools does, this triangle walks ~1e10 boundary points (tens of GiB).
    let far = Segmentation::Polygons(vec![vec![0.0, 0.0, 1e9, 0.0, 1e9, 1e9]]);
    let e = checked(far, 30, 40).unwrap_err();
    assert!(e.contains("coordinates far outside the image"), "{e}");
    // NaN and values past `int` are refused too.
    let nan = Segmentation::Polygons(vec![vec![0.0, 0.0, f64::NAN, 5.0, 3.0, 1e300]]);
    assert!(checked(nan, 30, 40).is_err());
    // A polygon inside the image still rasterises.
    let ok = Segmentation::Polygons(vec![vec![2.0, 3.0, 22.0, 3.0, 22.0, 13.0, 2.0, 13.0]]);
    let r = checked(ok, 30, 40).unwrap();
    assert_eq!((r.h, r.w), (30, 40));
    assert_eq!(r.counts.iter().map(|&c| c as u64).sum::<u64>(), 1200);
}

#[test]
fn rle_counts_that_do_not_cover_the_mask_are_errors() {
    let short = Segmentation::Rle {
        counts: RleCounts::Uncompressed(vec![5, 3]),
        size: [30, 40],
    };
    let e = checked(short, 30, 40).unwrap_err();
    assert_eq!(e, "RLE counts sum to 8 pixels but its size 30x40 has 1200");
    let long = Segmentation::Rle {
        counts: RleCounts::Uncompressed(vec![u32::MAX, u32::MAX]),
        size: [30, 40],
    };
    assert!(checked(long, 30, 40)
        .unwrap_err()
        .contains("RLE counts sum to"));
    let compressed = Rle {
        h: 3,
        w: 4,
        counts: vec![4, 2],
    }
    .to_compressed();
    let c = Segmentation::Rle {
        counts: RleCounts::Compressed(compressed),
        size: [3, 4],
    };
    assert!(checked(c, 3, 4).unwrap_err().contains("sum to 6 pixels"));
    // A size that is not the image's.
    let other = Segmentation::Rle {
        counts: RleCounts::Uncompressed(vec![12]),
        size: [3, 4],
    };
    let e = checked(other, 30, 40).unwrap_err();
    assert!(e.contains("is not the image's [30, 40]"), "{e}");
    // An image too large for one mask is refused before anything is decoded.
    let e = checked(Segmentation::Polygons(vec![]), 1 << 15, 1 << 15).unwrap_err();
    assert!(e.contains(&MAX_MASK_PIXELS.to_string()), "{e}");
}

/// A minimal COCO 2017 download whose val annotations hold `bad` (an annotation of image 139).
fn build_with_val_annotation(bad: serde_json::Value) -> String {
    let ann = |split: &str, extra: Option<&serde_json::Value>| -> String {
        let first = if split == "train" { 9 } else { 139 };
        let mut anns = vec![serde_json::json!(
            {"id": 1, "image_id": first, "category_id": 1, "bbox": [2.0, 3.0, 20.0, 10.0], "area": 150.0,
             "iscrowd": 0, "segmentation": [[2.0, 3.0, 22.0, 3.0, 22.0, 13.0, 2.0, 13.0]]}
        )];
        anns.extend(extra.cloned());
        serde_json::json!({
            "images": [{"id": first, "file_name": format!("{first:012}.jpg"), "width": 40, "height": 30}],
            "annotations": anns,
            "categories": [{"id": 1, "name": "person"}]
        })
        .to_string()
    };
    let anns = zip(&[
        file("annotations/instances_train2017.json", ann("train", None)),
        file("annotations/instances_val2017.json", ann("val", Some(&bad))),
    ]);
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let m = serve_coco(
        &srv,
        tmp.path(),
        coco_images("train", &[9]),
        Some(coco_images("val", &[139])),
        anns,
    );
    build_err(&m, &tmp.path().join("d"), "coco2017")
}

#[test]
fn data_build_names_the_file_and_annotation_of_a_bad_segmentation() {
    let err = build_with_val_annotation(serde_json::json!(
        {"id": 42, "image_id": 139, "category_id": 1, "bbox": [0.0, 0.0, 1.0, 1.0], "area": 1.0,
         "iscrowd": 0, "segmentation": [[0.0, 0.0, 1e9, 0.0, 1e9, 1e9]]}
    ));
    assert!(
        err.contains("instances_val2017.json: annotation 42 of image 139")
            && err.contains("far outside the image"),
        "{err}"
    );
    let err = build_with_val_annotation(serde_json::json!(
        {"id": 43, "image_id": 139, "category_id": 1, "bbox": [0.0, 0.0, 1.0, 1.0], "area": 1.0,
         "iscrowd": 1, "segmentation": {"counts": [5, 3], "size": [30, 40]}}
    ));
    assert!(
        err.contains("instances_val2017.json: annotation 43 of image 139")
            && err.contains("RLE counts sum to 8 pixels"),
        "{err}"
    );
}

/// Coordinates from inside a small image to far past `int`, with NaN and infinities.
fn coordinate() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -2.0f64..70.0,
        1 => -1e12f64..1e12,
        1 => prop::sample::select(vec![f64::NAN, f64::INFINITY, -f64::INFINITY, 1e300, -1e300, 4e8]),
    ]
}

fn segmentation() -> impl Strategy<Value = Segmentation> {
    let size = || [0u32..70, 0u32..70];
    prop_oneof![
        prop::collection::vec(prop::collection::vec(coordinate(), 0..12), 0..3)
            .prop_map(Segmentation::Polygons),
        (
            prop::collection::vec(any::<u32>().prop_map(|c| c % 3000), 0..8),
            size()
        )
            .prop_map(|(c, size)| Segmentation::Rle {
                counts: RleCounts::Uncompressed(c),
                size,
            }),
        // The compressed alphabet is the characters 48..=111.
        ("[0-o]{0,16}", size()).prop_map(|(s, size)| Segmentation::Rle {
            counts: RleCounts::Compressed(s),
            size,
        }),
    ]
}

proptest! {
    #![proptest_config(config(600))]

    #[test]
    fn ann_to_rle_is_bounded_and_every_rle_it_returns_covers_its_mask(
        seg in segmentation(),
        h in 0u32..70,
        w in 0u32..70,
    ) {
        let is_rle = matches!(seg, Segmentation::Rle { .. });
        if let Ok(r) = checked(seg, h, w) {
            let sum: u64 = r.counts.iter().map(|&c| c as u64).sum();
            prop_assert_eq!(sum, r.h as u64 * r.w as u64);
            if is_rle {
                prop_assert_eq!((r.h, r.w), (h, w));
            }
        }
    }
}
