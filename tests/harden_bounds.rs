//! Allocation bounds and degenerate geometry: inputs whose size or shape would make contracam allocate
//! without bound, divide by zero or panic are refused up front with exit status 2 and a one-line message
//! naming the file (and line) or flag and what to do; nothing is written and no input changes.
mod harden_support;

use std::path::{Path, PathBuf};

use contracam::data::formats::npy::npy_v1;
use harden_support::{bin, fails, snapshot, SUITE};

/// A wsolevaluation metadata folder and a score-map folder holding one map per id.
struct Wsol {
    dir: tempfile::TempDir,
}

impl Wsol {
    /// One image `a.jpg` of 10×10 with the GT box (1,1)-(5,5) and a 6×6 ramp score map.
    fn new() -> Self {
        let w = Wsol {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(w.meta()).unwrap();
        std::fs::create_dir_all(w.maps()).unwrap();
        w.write_meta("a.jpg\n", "a.jpg,10,10\n", "a.jpg,1,1,5,5\n");
        let ramp: Vec<f32> = (0..36).map(|i| i as f32 / 35.0).collect();
        write_npy(&w.maps().join("a.jpg.npy"), "(6, 6)", &ramp);
        w
    }
    fn meta(&self) -> PathBuf {
        self.dir.path().join("meta")
    }
    fn maps(&self) -> PathBuf {
        self.dir.path().join("maps")
    }
    fn write_meta(&self, ids: &str, sizes: &str, boxes: &str) {
        std::fs::write(self.meta().join("image_ids.txt"), ids).unwrap();
        std::fs::write(self.meta().join("image_sizes.txt"), sizes).unwrap();
        std::fs::write(self.meta().join("localization.txt"), boxes).unwrap();
    }
    /// Runs `eval maxboxacc` expecting a refusal with `needles`; checks nothing changed.
    fn refused(&self, extra: &[&str], needles: &[&str]) -> String {
        let before = snapshot(self.dir.path());
        let curves = self.dir.path().join("curves.json");
        let err = fails(
            bin()
                .args(["eval", "maxboxacc", "--metadata"])
                .arg(self.meta())
                .arg("--scoremaps")
                .arg(self.maps())
                .arg("--curves")
                .arg(&curves)
                .args(extra),
            needles,
        );
        assert!(!curves.exists(), "no curves on a refused run");
        assert_eq!(snapshot(self.dir.path()), before, "inputs unchanged");
        err
    }
}

/// A version-1 `.npy` with a `<f4` header for `shape` (a Python tuple literal) and `data` as payload.
fn write_npy(path: &Path, shape: &str, data: &[f32]) {
    let payload: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, npy_v1("<f4", shape, &payload)).unwrap();
}

#[test]
fn maxboxacc_fixture_is_valid() {
    // The fixture evaluates: each refusal below comes from the one thing changed.
    let w = Wsol::new();
    let out = bin()
        .args(["eval", "maxboxacc", "--json", "--metadata"])
        .arg(w.meta())
        .arg("--scoremaps")
        .arg(w.maps())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let acc = v["MaxBoxAccV2"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&acc), "{v}");
}

#[test]
fn maxboxacc_empty_score_maps() {
    for shape in ["(0, 0)", "(0, 5)", "(5, 0)"] {
        let w = Wsol::new();
        write_npy(&w.maps().join("a.jpg.npy"), shape, &[]);
        w.refused(&[], &["a.jpg.npy", "is empty", "at least one pixel"]);
    }
}

#[test]
fn maxboxacc_npy_shape_whose_byte_count_overflows() {
    // 2^32 × 2^32 × 4 bytes wraps to 0 in 64 bits: it must not match the empty payload.
    let w = Wsol::new();
    write_npy(&w.maps().join("a.jpg.npy"), "(4294967296, 4294967296)", &[]);
    w.refused(&[], &["a.jpg.npy", "overflows a byte count"]);
}

#[test]
fn maxboxacc_interval_too_fine() {
    let w = Wsol::new();
    // One range in one message, whatever the bad value (NaN and > 1 once had another wording).
    for v in ["1e-9", "NaN", "2", "0"] {
        w.refused(
            &["--interval", v],
            &["--interval", "must be in [0.0001, 1]", "256 distinct cuts"],
        );
    }
}

#[test]
fn maxboxacc_no_image_ids() {
    let w = Wsol::new();
    w.write_meta("", "a.jpg,10,10\n", "a.jpg,1,1,5,5\n");
    w.refused(&[], &["image_ids.txt", "no image ids"]);
}

#[test]
fn maxboxacc_zero_image_size() {
    let w = Wsol::new();
    w.write_meta("a.jpg\n", "a.jpg,0,0\n", "a.jpg,1,1,5,5\n");
    w.refused(&[], &["image_sizes.txt:1", "0x0 is empty", "at least 1"]);
}

#[test]
fn maxboxacc_inverted_gt_box() {
    let w = Wsol::new();
    w.write_meta("a.jpg\n", "a.jpg,10,10\n", "a.jpg,5,5,1,1\n");
    w.refused(
        &[],
        &["localization.txt:1", "inverted", "x0 ≤ x1 and y0 ≤ y1"],
    );
}

#[test]
fn synth_with_ten_million_scenes_is_refused_before_generating() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("synth");
    fails(
        bin()
            // 1 GiB: deterministic whatever this machine has free.
            .env("CONTRACAM_MEMORY_LIMIT", (1u64 << 30).to_string())
            .args(["data", "synth", "--train-scenes", "10000000", "--out"])
            .arg(&out),
        &[
            "10000000 train",
            "needs about",
            "1.0 GiB is available",
            "lower --train-scenes",
        ],
    );
    assert!(!out.exists(), "nothing written");
}

/// The shared small suite with `train_scenes` scenes.
fn suite_text(train_scenes: usize) -> String {
    SUITE.replace(
        "train_scenes = 64",
        &format!("train_scenes = {train_scenes}"),
    )
}

#[test]
fn train_with_ten_million_scenes_is_refused_before_generating() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("suite.toml");
    std::fs::write(&suite, suite_text(10_000_000)).unwrap();
    let out = dir.path().join("model.safetensors");
    let before = snapshot(dir.path());
    fails(
        bin()
            .env("CONTRACAM_MEMORY_LIMIT", (1u64 << 30).to_string())
            .args(["train", "ssl", "--suite"])
            .arg(&suite)
            .arg("--out")
            .arg(&out),
        &[
            "10000000 training scenes",
            "needs about",
            "sizes.train_scenes",
            "suite.toml",
        ],
    );
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn suite_with_ten_million_scenes_is_refused_before_generating() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("suite.toml");
    std::fs::write(&suite, suite_text(10_000_000)).unwrap();
    let runs = dir.path().join("runs");
    let before = snapshot(dir.path());
    fails(
        bin()
            .env("CONTRACAM_MEMORY_LIMIT", (1u64 << 30).to_string())
            .args(["suite", "run"])
            .arg(&suite)
            .arg("--runs-dir")
            .arg(&runs),
        &[
            "10000000 training scenes",
            "needs about",
            "sizes",
            "suite.toml",
        ],
    );
    assert_eq!(snapshot(dir.path()), before);
    assert!(!runs.exists(), "nothing written under --runs-dir");
}

#[test]
fn training_box_files_with_bad_boxes() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("suite.toml");
    std::fs::write(&suite, suite_text(64)).unwrap();
    for (name, bad) in [
        ("inverted", "[0.8, 0.1, 0.2, 0.9]"),
        ("zero-area", "[0.3, 0.3, 0.3, 0.6]"),
        ("out-of-range", "[-0.5, 0.1, 1.5, 0.9]"),
    ] {
        // Image 5's second box is the bad one; every other image has a valid box.
        let lists: Vec<String> = (0..64)
            .map(|i| {
                if i == 5 {
                    format!("[[0.1, 0.1, 0.9, 0.9], {bad}]")
                } else {
                    "[[0.1, 0.1, 0.9, 0.9]]".to_string()
                }
            })
            .collect();
        let boxes = dir.path().join(format!("{name}.json"));
        std::fs::write(&boxes, format!("[{}]", lists.join(","))).unwrap();
        let out = dir.path().join("model.safetensors");
        let before = snapshot(dir.path());
        fails(
            bin()
                .args(["train", "ssl", "--suite"])
                .arg(&suite)
                .arg("--boxes")
                .arg(&boxes)
                .arg("--out")
                .arg(&out),
            &[
                &format!("--boxes {}", boxes.display()),
                "image 5, box 1",
                "0 ≤ x1 < x2 ≤ 1 and 0 ≤ y1 < y2 ≤ 1",
            ],
        );
        assert!(!out.exists(), "{name}: no checkpoint");
        assert_eq!(snapshot(dir.path()), before, "{name}");
    }
}

#[test]
fn data_dir_that_is_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    for cmd in [&["data", "list"][..], &["data", "verify", "voc2007"][..]] {
        fails(
            bin().args(cmd).arg("--data-dir").arg(&file),
            &["not-a-dir", "is a file, not a directory", "--data-dir"],
        );
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
    }
}

#[test]
fn maxboxacc_nan_score_map_is_scored_as_wsolevaluation_but_warned() {
    let w = Wsol::new();
    let mut ramp: Vec<f32> = (0..36).map(|i| i as f32 / 35.0).collect();
    ramp[7] = f32::NAN;
    write_npy(&w.maps().join("a.jpg.npy"), "(6, 6)", &ramp);
    let out = bin()
        .env("CONTRACAM_LOG", "warn")
        .args(["eval", "maxboxacc", "--json", "--metadata"])
        .arg(w.meta())
        .arg("--scoremaps")
        .arg(w.maps())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("1 of 1 score maps")
            && err.contains("NaN or infinite")
            && err.contains("a.jpg"),
        "{err}"
    );
    // The number is wsolevaluation's: an all-zero map gives the single box [0,0,0,0], which misses the GT.
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["MaxBoxAccV2"].as_f64(), Some(0.0), "{v}");
}
