//! COCO AP parity with pycocotools 2.0.11: every one of the 12 stats within 1e-9 (the reference sums in
//! float64; a different summation order could move the last bits, though numpy's pairwise order is
//! reproduced and the observed differences are 0 or a few ulp). Sources: `metrics/expected.json` (the
//! synthetic 30-image set, bbox / segm / segm-with-bbox-field), `kernels/coco_edge` (10 edge cases with
//! per-category precision and recall), `kernels/cocoapi` (the pycocoEvalDemo numbers), `kernels/d2_*`
//! (detectron2 mini), `kernels/fce` (faster_coco_eval test_basic), `kernels/tm_inputs_*` (torchmetrics).
mod common;

use std::path::Path;

use contracam::eval::coco::{
    evaluate, evaluate_files, gt_objects, load_res, CocoEvalResult, CocoParams, Dataset, IouType,
    RawResult, STAT_NAMES,
};
use serde_json::Value;

const TOL: f64 = 1e-9;

fn load(path: &Path) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

fn check_stats(what: &str, got: &[f64; 12], want: &[f64]) -> f64 {
    assert_eq!(want.len(), 12, "{what}");
    let mut maxd: f64 = 0.0;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        maxd = maxd.max(d);
        assert!(
            d <= TOL,
            "{what} {}: got {g}, pycocotools {w}",
            STAT_NAMES[i]
        );
    }
    eprintln!("{what}: max |diff| = {maxd:e}");
    maxd
}

fn stats_from_named(v: &Value) -> Vec<f64> {
    STAT_NAMES
        .iter()
        .map(|n| v[n].as_f64().unwrap_or_else(|| panic!("missing {n}")))
        .collect()
}

fn eval_values(gt: &Value, dt: &Value, iou: IouType) -> CocoEvalResult {
    let ds: Dataset = serde_json::from_value(gt.clone()).unwrap();
    let res: Vec<RawResult> = serde_json::from_value(dt.clone()).unwrap();
    let p = Path::new("<inline>");
    let gts = gt_objects(&ds, iou, p).unwrap();
    let dts = load_res(&ds, &res, p).unwrap();
    evaluate(&ds, &gts, &dts, &CocoParams::new(iou)).unwrap()
}

#[test]
fn synthetic_set_bbox_segm_and_bbox_field_variant() {
    let root = common::reference_dir().join("metrics");
    let exp = load(&root.join("expected.json"));
    let gt = root.join("coco/gt.json");
    let r = evaluate_files(&gt, &root.join("coco/dt_bbox.json"), IouType::Bbox, false).unwrap();
    check_stats(
        "metrics/coco bbox",
        &r.stats,
        &stats_from_named(&exp["coco"]["bbox"]),
    );
    let r = evaluate_files(&gt, &root.join("coco/dt_segm.json"), IouType::Segm, false).unwrap();
    check_stats(
        "metrics/coco segm",
        &r.stats,
        &stats_from_named(&exp["coco"]["segm"]),
    );

    // Combined list: each bbox result plus the segmentation of the matching segm result; loadRes then
    // takes its bbox branch (area = w*h), which changes APs/APm/APl. Dropping bbox (detectron2) gives
    // the plain segm numbers back.
    let mut combined = load(&root.join("coco/dt_bbox.json"));
    let segm = load(&root.join("coco/dt_segm.json"));
    for (c, s) in combined
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .zip(segm.as_array().unwrap())
    {
        c["segmentation"] = s["segmentation"].clone();
    }
    let gtv = load(&gt);
    let r = eval_values(&gtv, &combined, IouType::Segm);
    check_stats(
        "metrics/coco segm with bbox field",
        &r.stats,
        &stats_from_named(&exp["coco"]["extra_segm_with_bbox_field"]),
    );
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("combined.json");
    std::fs::write(&f, serde_json::to_vec(&combined).unwrap()).unwrap();
    let r = evaluate_files(&gt, &f, IouType::Segm, true).unwrap();
    check_stats(
        "metrics/coco segm, bbox dropped (detectron2)",
        &r.stats,
        &stats_from_named(&exp["coco"]["segm"]),
    );
}

#[test]
fn edge_cases_stats_precision_and_recall() {
    let v = load(&common::reference_dir().join("kernels/coco_edge/coco_edge_cases.json"));
    let cases = v.as_object().unwrap();
    assert_eq!(cases.len(), 10);
    for (name, c) in cases {
        let r = eval_values(&c["input"]["gt"], &c["input"]["dt"], IouType::Bbox);
        let want = &c["pycocotools_2.0.11"];
        let ws: Vec<f64> = want["stats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        check_stats(name, &r.stats, &ws);
        // precision[T=0, :, k, area=all, maxDet=100] per category, and recall[:, k, all, 100].
        let pk = want["precision_T0_allarea_maxdet100_per_cat"]
            .as_array()
            .unwrap();
        assert_eq!(pk.len(), r.dims[2], "{name}: categories");
        for (k, row) in pk.iter().enumerate() {
            for (ri, x) in row.as_array().unwrap().iter().enumerate() {
                let g = r.precision_at(0, ri, k, 0, 2);
                assert!(
                    (g - x.as_f64().unwrap()).abs() <= TOL,
                    "{name}: precision[0,{ri},{k}] {g} vs {x}"
                );
            }
        }
        let rk = want["recall_allarea_maxdet100"].as_array().unwrap();
        assert_eq!(rk.len(), r.dims[0]);
        for (t, row) in rk.iter().enumerate() {
            for (k, x) in row.as_array().unwrap().iter().enumerate() {
                let g = r.recall_at(t, k, 0, 2);
                assert!(
                    (g - x.as_f64().unwrap()).abs() <= TOL,
                    "{name}: recall[{t},{k}] {g} vs {x}"
                );
            }
        }
    }
}

#[test]
fn gt_id_zero_fix_option() {
    let v = load(&common::reference_dir().join("kernels/coco_edge/coco_edge_cases.json"));
    let c = &v["gt_id_zero"]["input"];
    let ds: Dataset = serde_json::from_value(c["gt"].clone()).unwrap();
    let res: Vec<RawResult> = serde_json::from_value(c["dt"].clone()).unwrap();
    let p = Path::new("<inline>");
    let gts = gt_objects(&ds, IouType::Bbox, p).unwrap();
    let dts = load_res(&ds, &res, p).unwrap();
    let mut params = CocoParams::new(IouType::Bbox);
    assert_eq!(evaluate(&ds, &gts, &dts, &params).unwrap().stats[0], 0.0);
    params.gt_id_zero_is_unmatched = false;
    let fixed = evaluate(&ds, &gts, &dts, &params).unwrap().stats[0];
    let control = &v["gt_id_seven_control"]["pycocotools_2.0.11"]["stats"][0];
    assert_eq!(fixed, control.as_f64().unwrap());
}

#[test]
fn cocoapi_demo_numbers() {
    let k = common::reference_dir().join("kernels/cocoapi");
    let gt = k.join("instances_val2014_100.json");
    let bbox = [
        0.5045806987249628,
        0.6969727247299577,
        0.5729816669904824,
        0.5856257209410443,
        0.5193996948036719,
        0.5013978986347466,
        0.38681277964578054,
        0.5936795762842003,
        0.595352982877607,
        0.6398109626113442,
        0.5664205978994309,
        0.5642905982905982,
    ];
    let segm = [
        0.3195452758576433,
        0.5622883972521636,
        0.29892653412086784,
        0.3873740315997838,
        0.31018272403369485,
        0.3269339071005138,
        0.2682297225711534,
        0.41544868114906375,
        0.4168394992198818,
        0.4694498622754236,
        0.37675922666197265,
        0.3814715099715099,
    ];
    let r = evaluate_files(
        &gt,
        &k.join("instances_val2014_fakebbox100_results.json"),
        IouType::Bbox,
        false,
    )
    .unwrap();
    check_stats("cocoapi bbox", &r.stats, &bbox);
    let r = evaluate_files(
        &gt,
        &k.join("instances_val2014_fakesegm100_results.json"),
        IouType::Segm,
        false,
    )
    .unwrap();
    check_stats("cocoapi segm", &r.stats, &segm);
}

#[test]
fn detectron2_mini_fce_basic_and_torchmetrics() {
    let k = common::reference_dir().join("kernels");
    let (gt, dt) = (k.join("d2_gt.json"), k.join("d2_dt.json"));
    let r = evaluate_files(&gt, &dt, IouType::Bbox, false).unwrap();
    check_stats(
        "d2 bbox",
        &r.stats,
        &[
            0.7504950495049505,
            1.0,
            1.0,
            0.7,
            0.8,
            -1.0,
            0.4,
            0.75,
            0.75,
            0.7,
            0.8,
            -1.0,
        ],
    );
    // detectron2 drops the bbox of segm results before loadRes.
    let r = evaluate_files(&gt, &dt, IouType::Segm, true).unwrap();
    check_stats(
        "d2 segm",
        &r.stats,
        &[
            0.7252475247524752,
            1.0,
            1.0,
            0.8,
            0.7,
            -1.0,
            0.35,
            0.75,
            0.75,
            0.8,
            0.7,
            -1.0,
        ],
    );

    // faster_coco_eval test_basic: the stated numbers come from taking the detection file as annotations
    // (its own `area` kept). Through `loadRes` (area = w*h) pycocotools 2.0.11 and faster-coco-eval
    // 1.8.0 both give APm 0.7920792079207921 instead (run here); both paths are checked.
    let (fgt, fdt) = (k.join("fce/gt_dataset.json"), k.join("fce/dt_dataset.json"));
    let a = 0.6947194719471946;
    let ds = contracam::eval::coco::load_dataset(&fgt).unwrap();
    let res = contracam::eval::coco::load_results(&fdt).unwrap();
    let gts = gt_objects(&ds, IouType::Segm, &fgt).unwrap();
    let dts = contracam::eval::coco::detections_as_loaded(&res, &fdt).unwrap();
    let r = evaluate(&ds, &gts, &dts, &CocoParams::new(IouType::Segm)).unwrap();
    check_stats(
        "fce test_basic segm",
        &r.stats,
        &[
            a,
            a,
            a,
            -1.0,
            0.7367986798679867,
            0.0,
            0.6666666666666666,
            0.75,
            0.75,
            -1.0,
            0.7916666666666666,
            0.0,
        ],
    );
    let r = evaluate_files(&fgt, &fdt, IouType::Segm, false).unwrap();
    check_stats(
        "fce test_basic segm via loadRes",
        &r.stats,
        &[
            a,
            a,
            a,
            -1.0,
            0.7920792079207921,
            0.0,
            0.6666666666666666,
            0.75,
            0.75,
            -1.0,
            0.7916666666666666,
            0.0,
        ],
    );

    let r = evaluate_files(
        &k.join("tm_inputs_gt.json"),
        &k.join("tm_inputs_dt.json"),
        IouType::Bbox,
        false,
    )
    .unwrap();
    check_stats(
        "torchmetrics inputs bbox",
        &r.stats,
        &[
            0.636958038661009,
            0.8589658965896589,
            0.7606789250353607,
            0.6217350306459217,
            0.8,
            0.634983498349835,
            0.432,
            0.652,
            0.652,
            0.6733333333333332,
            0.8,
            0.6333333333333333,
        ],
    );
    // per-class AP {0: 0.72515, 1: 0.8, 2: 0.45446, 3: -1, 4: 0.65050, 49: 0.55469} (5 decimals)
    let want = [
        (0, 0.72515),
        (1, 0.8),
        (2, 0.45446),
        (3, -1.0),
        (4, 0.65050),
        (49, 0.55469),
    ];
    for (cat, ap) in want {
        let k = r.cat_ids.iter().position(|&c| c == cat).unwrap();
        let mut vals = Vec::new();
        for t in 0..r.dims[0] {
            for ri in 0..r.dims[1] {
                let v = r.precision_at(t, ri, k, 0, 2);
                if v > -1.0 {
                    vals.push(v);
                }
            }
        }
        let got = if vals.is_empty() {
            -1.0
        } else {
            vals.iter().sum::<f64>() / vals.len() as f64
        };
        assert!(
            (got - ap).abs() < 5e-6,
            "torchmetrics class {cat}: {got} vs {ap}"
        );
    }
}
