//! Runs the README's "From the command line, step by step" walk-through exactly as written (the lines between
//! its two marker comments), in a temporary folder, and checks what each command wrote: the chain data synth
//! → train ssl → localize cam → crf → boxes → eval miou / maxboxacc needs no glue.
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use contracam::data::formats::npy::read_npy_2d;
use contracam::data::formats::safetensors::read_tensors;
use tch::Kind;

const BEGIN: &str = "<!-- walkthrough:begin -->";
const END: &str = "<!-- walkthrough:end -->";
/// Test scenes and their side, as the walk-through's `data synth` line asks.
const N: i64 = 16;
const S: i64 = 64;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `contracam …` lines between the README's markers, split into words (the lines hold no quoting).
fn walkthrough_commands() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme
        .find(BEGIN)
        .expect("README has the walk-through begin marker")
        + BEGIN.len();
    let len = readme[start..]
        .find(END)
        .expect("README has the walk-through end marker");
    let cmds: Vec<Vec<String>> = readme[start..start + len]
        .lines()
        .filter(|l| l.starts_with("contracam "))
        .map(|l| l.split_whitespace().skip(1).map(str::to_string).collect())
        .collect();
    assert!(
        readme[start..start + len]
            .lines()
            .all(|l| l.starts_with("contracam ") || l.starts_with("```") || l.trim().is_empty()),
        "every line of the walk-through is a contracam command (the test runs them all)"
    );
    cmds
}

/// Runs one walk-through command in `dir`; returns stdout.
fn run(dir: &Path, args: &[String]) -> String {
    let out = Command::cargo_bin("contracam")
        .unwrap()
        .current_dir(dir)
        .env("CONTRACAM_LOG", "error")
        .env("CONTRACAM_PROGRESS", "off")
        .env("RAYON_NUM_THREADS", "1")
        .env("OMP_NUM_THREADS", "1")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "contracam {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json_of(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn readme_walkthrough_chains_synth_cam_crf_boxes_and_eval() {
    let cmds = walkthrough_commands();
    let names: Vec<String> = cmds.iter().map(|c| c[..2].join(" ")).collect();
    assert_eq!(
        names,
        [
            "data synth",
            "train ssl",
            "localize cam",
            "localize crf",
            "localize boxes",
            "eval miou",
            "eval maxboxacc"
        ],
        "the walk-through's steps"
    );
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // The commands run from a checkout; the only checkout file they read is the walk-through suite.
    std::fs::create_dir(d.join("suites")).unwrap();
    std::fs::copy(
        repo().join("suites/walkthrough.toml"),
        d.join("suites/walkthrough.toml"),
    )
    .unwrap();
    let w = d.join("walk");
    let mut stdout = Vec::new();
    for c in &cmds {
        stdout.push(run(d, c));
    }

    // data synth: the tensors cam and crf read, and the index eval reads.
    let data = read_tensors(&w.join("data/scenes/test.safetensors")).unwrap();
    let images = data.get("images").unwrap();
    assert_eq!(
        (images.kind(), images.size()),
        (Kind::Uint8, vec![N, S, S, 3])
    );
    let masks = data.get("masks").unwrap();
    assert_eq!((masks.kind(), masks.size()), (Kind::Uint8, vec![N, S, S]));
    assert_eq!(data.get("labels").unwrap().size(), vec![N]);
    let boxes = data.get("boxes").unwrap();
    assert_eq!(boxes.size()[1], 5);
    assert!(
        (N..=2 * N).contains(&boxes.size()[0]),
        "1 or 2 objects per scene"
    );
    assert!(w.join("data/index/scenes_test.jsonl").is_file());
    assert!(w.join("model.safetensors").is_file());

    // localize cam: the CAM tensor and one score map per image.
    let cam = read_tensors(&w.join("cam.safetensors")).unwrap();
    let cam = cam.get("cam").unwrap();
    assert_eq!((cam.kind(), cam.size()), (Kind::Float, vec![N, 1, S, S]));
    for i in 0..N {
        let m = read_npy_2d(&w.join(format!("scoremaps/{i}.npy"))).unwrap();
        assert_eq!((m.height, m.width), (S as usize, S as usize));
    }

    // localize crf: CRF and cleaned masks, and one PNG per image.
    let crf = read_tensors(&w.join("crf.safetensors")).unwrap();
    for k in ["crf", "mask"] {
        assert_eq!(crf.get(k).unwrap().size(), vec![N, 1, S, S], "{k}");
    }
    for i in 0..N {
        let png = image::open(w.join(format!("masks/{i}.png"))).unwrap();
        assert_eq!(png.color(), image::ColorType::L8);
        assert_eq!((png.width(), png.height()), (S as u32, S as u32));
    }

    // localize boxes: a list of boxes per image, normalised xyxy.
    let b: Vec<Vec<[f64; 4]>> =
        serde_json::from_slice(&std::fs::read(w.join("boxes.json")).unwrap()).unwrap();
    assert_eq!(b.len(), N as usize);
    assert!(b
        .iter()
        .flatten()
        .all(|r| r.iter().all(|v| (0.0..=1.0).contains(v)) && r[0] < r[2] && r[1] < r[3]));

    // eval miou: finite, over every image, above predicting the whole image as foreground (whose IoU with
    // each ground truth is its foreground fraction).
    let miou = json_of(&stdout[5]);
    assert_eq!(miou["n"], N);
    let v = miou["mIoU"].as_f64().unwrap();
    let fg = masks
        .to_kind(Kind::Float)
        .mean_dim(&[1i64, 2][..], false, Kind::Float);
    let all_foreground = fg.mean(Kind::Float).double_value(&[]);
    assert!(v.is_finite() && (0.0..=1.0).contains(&v), "mIoU {v}");
    assert!(
        v > all_foreground,
        "mIoU {v} is not above the all-foreground baseline {all_foreground}"
    );

    // eval maxboxacc: finite percentages over every image, above boxing the whole image (whose IoU with a
    // ground-truth box inside it is that box's share of the image).
    let acc = json_of(&stdout[6]);
    assert_eq!(acc["n"], N);
    let v = acc["MaxBoxAccV2"].as_f64().unwrap();
    assert!(
        v.is_finite() && (0.0..=100.0).contains(&v),
        "MaxBoxAccV2 {v}"
    );
    let rows = Vec::<f32>::try_from(boxes.flatten(0, -1)).unwrap();
    let mut best = vec![0f64; N as usize];
    for r in rows.chunks_exact(5) {
        let share = f64::from((r[3] - r[1]) * (r[4] - r[2])) / (S * S) as f64;
        let b = &mut best[r[0] as usize];
        *b = b.max(share);
    }
    let whole_image = [0.3, 0.5, 0.7]
        .iter()
        .map(|&d| 100.0 * best.iter().filter(|&&s| s >= d).count() as f64 / N as f64)
        .sum::<f64>()
        / 3.0;
    assert!(
        v > whole_image,
        "MaxBoxAccV2 {v} is not above the whole-image box baseline {whole_image}"
    );
}

/// The per-image folders are outputs written file by file: one that holds an input is refused before any work.
#[test]
fn per_image_folders_that_hold_an_input_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let inputs = d.join("x.safetensors");
    std::fs::write(&inputs, b"not read").unwrap();
    for (args, flag) in [
        (
            vec![
                "localize",
                "crf",
                "--images",
                "x.safetensors",
                "--cams",
                "c.safetensors",
            ],
            "--masks-dir",
        ),
        (
            vec![
                "localize",
                "cam",
                "--weights",
                "w.safetensors",
                "--inputs",
                "x.safetensors",
            ],
            "--scoremaps",
        ),
    ] {
        let out = Command::cargo_bin("contracam")
            .unwrap()
            .current_dir(d)
            .env("CONTRACAM_LOG", "error")
            .args(&args)
            .args(["--out", "o.safetensors", flag, "."])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(flag) && err.contains("x.safetensors"), "{err}");
        assert!(!d.join("o.safetensors").exists());
    }
    assert_eq!(std::fs::read(&inputs).unwrap(), b"not read");
}
