//! Table 2 end to end at the `ci` profile on fixture data: CUB (ReDO splits), Flowers (ReDO segmentation
//! splits) and the Background Challenge (IN-9 ORIGINAL train, ORIGINAL val with ONLY-FG masks) fixture
//! archives in their real layouts are built with `data build`; `suite run` of the shipped
//! `suites/paper/table2.toml` with `--profile ci` must run every stage (train-classifier, pretrain, localize
//! with classifier-cam and contracam, eval-masks), give every bound cell an mIoU in [0, 1], and a rerun must
//! be fully cached with the same metrics. Every dataset of the table has a builder, so nothing is left out.
mod data_common;
mod paper_fixtures;

use std::path::Path;

use data_common::*;
use paper_fixtures::{build_cub, build_flowers, Cub, Flowers};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A `w`×`h` box mask drawn inside a margin of a quarter of each side.
fn inside(w: u32, h: u32, x: u32, y: u32) -> bool {
    (w / 4..w - w / 4).contains(&x) && (h / 4..h - h / 4).contains(&y)
}

/// The Background Challenge release (ORIGINAL val with its ONLY-FG images, black outside the object) and
/// IN-9 ORIGINAL train, one image per class in each. Neither archive has a published checksum, so the build
/// registers the hashes, as a user's first build does.
fn build_bg_challenge(srv: &Server, tmp: &Path, data: &Path) {
    const CLASSES: [&str; 9] = [
        "00_dog",
        "01_bird",
        "02_wheeled vehicle",
        "03_reptile",
        "04_carnivore",
        "05_insect",
        "06_musical instrument",
        "07_primate",
        "08_fish",
    ];
    let (w, h) = (28, 20);
    let (mut rel, mut orig) = (vec![], vec![]);
    for (ci, c) in CLASSES.iter().enumerate() {
        let seed = ci as u8 * 11 + 1;
        rel.push(file(
            &format!("bg_challenge/original/val/{c}/n0{ci}_0.JPEG"),
            jpeg(w, h, seed),
        ));
        // Every channel above 127 inside the box (the mask is resized, then thresholded at 0.5 per
        // channel), black outside; quality 100 keeps the flat fills flat.
        let fg = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb(if inside(w, h, x, y) {
                [200, 180, 160]
            } else {
                [0, 0, 0]
            })
        });
        let mut jpg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 100)
            .encode_image(&fg)
            .unwrap();
        rel.push(file(
            &format!("bg_challenge/only_fg/val/{c}/n0{ci}_0.JPEG"),
            jpg,
        ));
        rel.push(file(
            &format!("bg_challenge/mixed_rand/val/{c}/n0{ci}_0.JPEG"),
            jpeg(w, h, seed + 1),
        ));
        orig.push(file(
            &format!("original/train/{c}/n0{ci}_0.JPEG"),
            jpeg(w, h, seed + 2),
        ));
    }
    let unverified = |name: &str, body| FixtureFile {
        name: name.into(),
        body,
        checksum: false,
    };
    let m = serve_dataset(
        srv,
        tmp,
        "bg-challenge",
        Some("bg-challenge"),
        vec![
            unverified("backgrounds_challenge_data.tar.gz", tar_gz(&rel)),
            unverified("original.tar.gz", tar_gz(&orig)),
        ],
    );
    build(&m, data, "bg-challenge", &["--register"]);
}

fn results(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn table2_runs_end_to_end_at_the_ci_profile_on_fixture_data() {
    let started = std::time::Instant::now();
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    // CUB: ids 1-8 in split 0 (redo-train), 9-12 in split 2 (redo-test); masks inside a quarter margin.
    let cub = Cub {
        images: 12,
        train_upto: 8,
        bbox: "8.0 6.0 16.0 12.0",
        mask: (8..24, 6..18),
    };
    build_cub(&srv, tmp.path(), &data, &cub);
    // Flowers: seg-train is tstid (images 5-12), seg-test is trnid (images 1-4).
    let labels: Vec<f64> = (1..=13).map(|i| (1 + i % 2) as f64).collect();
    let tstid: Vec<f64> = (5..=12).map(f64::from).collect();
    let flowers = Flowers {
        labels: &labels,
        trnid: &[1.0, 2.0, 3.0, 4.0],
        valid: &[13.0],
        tstid: &tstid,
        flower: (7..23, 5..17),
    };
    build_flowers(&srv, tmp.path(), &data, &flowers);
    build_bg_challenge(&srv, tmp.path(), &data);
    let built = started.elapsed().as_secs_f64();
    let runs = tmp.path().join("runs");
    let suite = root().join("suites/paper/table2.toml");
    let run = |out: &Path| {
        contracam(&[
            "suite",
            "run",
            suite.to_str().unwrap(),
            "--profile",
            "ci",
            "--runs-dir",
            runs.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--threads",
            "1",
            "--quiet",
        ])
    };

    let first = tmp.path().join("r1.json");
    let o = run(&first);
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let r = results(&first);
    assert_eq!(r["profile"], "ci");
    let stages = r["stages"].as_array().unwrap();
    // 3 datasets × (train-classifier, pretrain, 2 localize, 2 eval-masks), none from a cache.
    assert_eq!(stages.len(), 18, "{stages:?}");
    assert!(stages.iter().all(|s| s["cached"] == false), "{stages:?}");
    let cfg = &r["config"];
    let kind_of = |s: &serde_json::Value| {
        let name = s["stage"].as_str().unwrap();
        cfg["stages"][name.trim_start_matches("stages.")]["kind"].clone()
    };
    let kind_count = |k: &str| stages.iter().filter(|s| kind_of(s) == k).count();
    for (k, n) in [
        ("train-classifier", 3),
        ("pretrain", 3),
        ("localize", 6),
        ("eval-masks", 6),
    ] {
        assert_eq!(kind_count(k), n, "{k}: {stages:?}");
    }
    let cells = r["paper_cells"].as_array().unwrap();
    assert_eq!(cells.len(), 6, "{cells:?}");
    for c in cells {
        let v = c["value"]
            .as_f64()
            .unwrap_or_else(|| panic!("no value: {c}"));
        assert!((0.0..=1.0).contains(&v), "mIoU out of [0, 1]: {c}");
        eprintln!("{} / {}: {v:.4}", c["row"], c["column"]);
    }
    // Both localization methods ran, each on every dataset.
    for d in ["cub", "flowers", "in9"] {
        assert_eq!(
            cfg["stages"][format!("cam_sup_{d}")]["params"]["method"],
            "classifier-cam",
            "{d}"
        );
        assert_eq!(
            cfg["stages"][format!("cam_{d}")]["params"]["method"],
            "contracam",
            "{d}"
        );
    }
    // The ci profile's limit holds on every split.
    for d in [
        "cub_train",
        "cub_test",
        "flowers_train",
        "flowers_test",
        "in9_train",
        "in9_test",
    ] {
        assert_eq!(cfg["datasets"][d]["limit"], 8, "{d}");
    }

    let second = tmp.path().join("r2.json");
    let o = run(&second);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r2 = results(&second);
    assert_eq!(r2["profile"], "ci");
    assert!(r2["stages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["cached"] == true));
    assert_eq!(r2["metrics"], r["metrics"]);
    assert_eq!(r2["paper_cells"], r["paper_cells"]);
    eprintln!(
        "table2 ci end to end: {:.1} s ({built:.1} s building the fixtures)",
        started.elapsed().as_secs_f64()
    );
}
