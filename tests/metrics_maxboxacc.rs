//! MaxBoxAcc / MaxBoxAccV2 parity with clovaai/wsolevaluation (reference outputs in
//! `shared/reference/metrics/expected.json`, `wsol/curves.json` and `kernels/wsol/maxboxacc_refvectors.json`).
//! Everything is compared exactly: the maxima are multiples of 100/N and the curves are integer counts.
mod common;

use contracam::eval::maxboxacc::{
    evaluate_wsol, scoremap_to_u8, Box4, BoxAccumulator, MaxBoxAccConfig,
};
use serde_json::Value;

fn load(path: &std::path::Path) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

fn counts(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn metrics_set_matches_expected_and_every_curve_value() {
    let root = common::reference_dir().join("metrics/wsol");
    let expected = load(&common::reference_dir().join("metrics/expected.json"));
    let curves = load(&root.join("curves.json"));
    for (multi, key, exp) in [
        (
            true,
            "multi_contour_eval_True",
            &expected["wsol"]["details"]["multi_contour_eval_True"],
        ),
        (
            false,
            "multi_contour_eval_False",
            &expected["wsol"]["details"]["multi_contour_eval_False"],
        ),
    ] {
        let cfg = MaxBoxAccConfig {
            multi_contour_eval: multi,
            ..Default::default()
        };
        let r = evaluate_wsol(
            &root.join("metadata/CUB/test"),
            &root.join("scoremaps"),
            &cfg,
        )
        .unwrap();
        assert_eq!(r.num_images, 40);
        for (k, d) in ["30", "50", "70"].iter().enumerate() {
            assert_eq!(
                r.num_correct[k],
                counts(&curves["curves"][key][d]),
                "{key} curve δ={d}"
            );
            assert_eq!(
                r.max_box_acc[k],
                exp["MaxBoxAcc_per_iou_threshold"][d].as_f64().unwrap(),
                "{key} δ={d}"
            );
            assert_eq!(
                r.best_threshold_index[k] as u64,
                exp["best_cam_threshold_index_per_iou_threshold"][d]
                    .as_u64()
                    .unwrap(),
                "{key} best index δ={d}"
            );
        }
        assert_eq!(
            r.mean,
            exp["MaxBoxAcc_mean_over_30_50_70"].as_f64().unwrap(),
            "{key} mean"
        );
    }
    assert_eq!(
        expected["wsol"]["MaxBoxAccV2"].as_f64().unwrap(),
        48.333333333333336
    );
}

#[test]
fn intermediate_8bit_maps_match_resize_and_normalisation() {
    // wsol/intermediate/resized224_uint8/<id>.png holds the reference's uint8(255·normalised map).
    use contracam::data::formats::npy::read_npy_2d;
    use contracam::eval::maxboxacc::{prepare_scoremap, read_wsol_metadata, scoremap_path};
    let root = common::reference_dir().join("metrics/wsol");
    let meta = read_wsol_metadata(&root.join("metadata/CUB/test")).unwrap();
    let mut differing = 0usize;
    for id in &meta.image_ids {
        let m = read_npy_2d(&scoremap_path(&root.join("scoremaps"), id)).unwrap();
        let img8 = scoremap_to_u8(&prepare_scoremap(&m.data, m.width, m.height));
        let png = root
            .join("intermediate/resized224_uint8")
            .join(format!("{id}.png"));
        let want = image::open(&png)
            .unwrap_or_else(|e| panic!("{}: {e}", png.display()))
            .into_luma8();
        assert_eq!((want.width(), want.height()), (224, 224));
        differing += img8
            .iter()
            .zip(want.as_raw())
            .filter(|(a, b)| a != b)
            .count();
    }
    assert_eq!(differing, 0, "8-bit pixels differing from the reference");
}

#[test]
fn kernel_refvectors_64px_maps() {
    // Maps already in the box grid (no resize); GT boxes in map pixels.
    let v = load(&common::reference_dir().join("kernels/wsol/maxboxacc_refvectors.json"));
    let maps = v["scoremaps"].as_array().unwrap();
    let gts = v["gt_boxes"].as_array().unwrap();
    let size = v["size"].as_u64().unwrap() as usize;
    for (multi, interval) in [(false, 0.01), (false, 0.001), (true, 0.01), (true, 0.001)] {
        let key = format!(
            "multi_contour={},interval={}",
            if multi { "True" } else { "False" },
            interval
        );
        let exp = &v[&key];
        let mut acc = BoxAccumulator::new(MaxBoxAccConfig {
            cam_curve_interval: interval,
            multi_contour_eval: multi,
            ..Default::default()
        });
        for (m, g) in maps.iter().zip(gts) {
            let cam: Vec<f64> = m
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
                .collect();
            assert_eq!(cam.len(), size * size);
            let gt: Vec<Box4> = g
                .as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    let b: Vec<i32> = b
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_i64().unwrap() as i32)
                        .collect();
                    [b[0], b[1], b[2], b[3]]
                })
                .collect();
            acc.accumulate_scoremap(&cam, size, size, &gt);
        }
        let r = acc.compute();
        let want: Vec<f64> = exp["per_iou_maxboxacc"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(r.max_box_acc, want, "{key}");
        assert_eq!(r.mean, exp["mean"].as_f64().unwrap(), "{key}");
        for (k, d) in ["30", "50", "70"].iter().enumerate() {
            let t = exp["first_best_threshold"][d].as_f64().unwrap();
            assert_eq!(
                r.best_threshold_index[k] as f64 * interval,
                t,
                "{key} first best τ δ={d}"
            );
            if let Some(c) = exp["boxacc_curves_pct"].get(d) {
                let c: Vec<f64> = c
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect();
                let got: Vec<f64> = r.num_correct[k]
                    .iter()
                    .map(|&n| n as f64 * 100.0 / r.num_images as f64)
                    .collect();
                assert_eq!(got, c, "{key} curve δ={d}");
            }
        }
    }
    assert_eq!(
        v["MaxBoxAcc_v1 (IoU50, largest contour, interval 0.01)"]
            .as_f64()
            .unwrap(),
        80.0
    );
}
