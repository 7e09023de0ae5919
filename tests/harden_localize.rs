//! `localize cam|crf|boxes` on hostile input: every case is a clear error naming the file, tensor or flag,
//! exits with status 2, never panics, never overwrites an input, and never allocates past a bound.
mod common;
mod harden_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use contracam::data::formats::safetensors::{read_tensors, Dtype, SafetensorsWriter};
use harden_support::fails;

fn bin() -> Command {
    let mut c = Command::cargo_bin("contracam").unwrap();
    c.env("CONTRACAM_LOG", "error")
        .env("CONTRACAM_PROGRESS", "off");
    c
}

/// Writes a safetensors file of (name, dtype, shape, little-endian bytes).
fn write(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let layout: Vec<(&str, Dtype, Vec<usize>)> = tensors
        .iter()
        .map(|(n, d, s, _)| (*n, *d, s.clone()))
        .collect();
    let mut w = SafetensorsWriter::create(path, &layout, &BTreeMap::new()).unwrap();
    for (n, _, _, b) in tensors {
        w.write_bytes(n, 0, b).unwrap();
    }
    w.finish().unwrap();
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// 4 images of 8×8: uint8 RGB, CAMs in [0, 1] and masks.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (n, h, w) = (4usize, 8usize, 8usize);
        let img: Vec<u8> = (0..n * h * w * 3).map(|i| (i * 7 % 251) as u8).collect();
        let cam: Vec<f32> = (0..n * h * w)
            .map(|i| (i % (h * w)) as f32 / (h * w) as f32)
            .collect();
        let mask: Vec<f32> = cam.iter().map(|&c| (c > 0.5) as u8 as f32).collect();
        write(
            &dir.path().join("images.safetensors"),
            &[("images", Dtype::U8, vec![n, h, w, 3], img)],
        );
        write(
            &dir.path().join("cams.safetensors"),
            &[("cam", Dtype::F32, vec![n, 1, h, w], f32s(&cam))],
        );
        write(
            &dir.path().join("masks.safetensors"),
            &[("mask", Dtype::F32, vec![n, 1, h, w], f32s(&mask))],
        );
        Fixture { dir }
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn crf(&self, images: &Path, cams: &Path, out: &Path) -> Command {
        let mut c = bin();
        c.args(["localize", "crf", "--images"])
            .arg(images)
            .arg("--cams")
            .arg(cams)
            .arg("--out")
            .arg(out);
        c
    }

    fn boxes(&self, masks: &Path, out: &Path) -> Command {
        let mut c = bin();
        c.args(["localize", "boxes", "--masks"])
            .arg(masks)
            .arg("--out")
            .arg(out);
        c
    }
}

fn unchanged(path: &Path, before: &[u8]) {
    assert_eq!(
        std::fs::read(path).unwrap(),
        before,
        "{} changed",
        path.display()
    );
}

#[test]
fn crf_and_boxes_never_overwrite_an_input() {
    let f = Fixture::new();
    let (images, cams, masks) = (
        f.p("images.safetensors"),
        f.p("cams.safetensors"),
        f.p("masks.safetensors"),
    );
    let before: Vec<(PathBuf, Vec<u8>)> = [&images, &cams, &masks]
        .iter()
        .map(|p| (p.to_path_buf(), std::fs::read(p).unwrap()))
        .collect();
    std::fs::create_dir(f.p("sub")).unwrap();
    let link = f.p("link.safetensors");
    std::os::unix::fs::symlink(&cams, &link).unwrap();
    // The same files spelled directly, through `..`, and through a symlink.
    for (out, flag) in [
        (cams.clone(), "--cams"),
        (images.clone(), "--images"),
        (f.p("sub/../cams.safetensors"), "--cams"),
        (link.clone(), "--cams"),
    ] {
        fails(
            &mut f.crf(&images, &cams, &out),
            &["refusing to overwrite an input", flag],
        );
    }
    fails(
        &mut f.boxes(&masks, &masks),
        &["refusing to overwrite an input", "--masks"],
    );
    fails(
        &mut f.boxes(&masks, &f.p("sub/../masks.safetensors")),
        &["refusing to overwrite an input"],
    );
    for (p, b) in &before {
        unchanged(p, b);
    }
    // And the happy path writes where it is told, leaving no temporary files.
    let out = f.p("crf.safetensors");
    let st = f
        .crf(&images, &cams, &out)
        .args(["--clean", "box"])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let t = read_tensors(&out).unwrap();
    assert_eq!(t.get("crf").unwrap().size(), vec![4, 1, 8, 8]);
    let st = f.boxes(&out, &f.p("boxes.json")).output().unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let stray: Vec<_> = std::fs::read_dir(f.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[test]
fn empty_and_lying_shapes_are_errors_not_allocations() {
    let f = Fixture::new();
    let out = f.p("out.safetensors");
    // H = W = 0 with N = 10¹⁵: a valid header of zero bytes.
    let n = 1_000_000_000_000_000usize;
    write(
        &f.p("zero_images.safetensors"),
        &[("images", Dtype::U8, vec![n, 0, 0, 3], vec![])],
    );
    write(
        &f.p("zero_cams.safetensors"),
        &[("cam", Dtype::F32, vec![n, 1, 0, 0], vec![])],
    );
    fails(
        &mut f.crf(
            &f.p("zero_images.safetensors"),
            &f.p("zero_cams.safetensors"),
            &out,
        ),
        &["is empty", "zero_images.safetensors[images]"],
    );
    fails(
        f.boxes(&f.p("zero_cams.safetensors"), &f.p("b.json"))
            .args(["--masks-key", "cam"]),
        &["is empty"],
    );
    // A header whose byte count wraps to 0 in 64 bits.
    let header =
        r#"{"images":{"dtype":"U8","shape":[6148914691236517206,3,1,1],"data_offsets":[0,2]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0, 0]);
    std::fs::write(f.p("wrap.safetensors"), &bytes).unwrap();
    fails(
        &mut f.crf(&f.p("wrap.safetensors"), &f.p("cams.safetensors"), &out),
        &["wrap.safetensors is not a safetensors file", "overflows"],
    );
    // A text file.
    std::fs::write(f.p("notes.txt"), "hello, this is not a tensor file\n").unwrap();
    fails(
        &mut f.boxes(&f.p("notes.txt"), &f.p("b.json")),
        &["notes.txt is not a safetensors file"],
    );
    assert!(!out.exists());
}

#[test]
fn nan_and_out_of_range_values_are_errors_naming_the_image() {
    let f = Fixture::new();
    let (n, h, w) = (4usize, 8usize, 8usize);
    let out = f.p("out.safetensors");
    for (bad, why) in [
        (f32::NAN, "not finite"),
        (f32::INFINITY, "not finite"),
        (1.5, "outside [0, 1]"),
        (-0.1, "outside [0, 1]"),
    ] {
        let mut cam = vec![0.25f32; n * h * w];
        cam[2 * h * w + 5] = bad;
        write(
            &f.p("bad_cams.safetensors"),
            &[("cam", Dtype::F32, vec![n, 1, h, w], f32s(&cam))],
        );
        fails(
            &mut f.crf(
                &f.p("images.safetensors"),
                &f.p("bad_cams.safetensors"),
                &out,
            ),
            &["image 2 pixel 5", why],
        );
        assert!(!out.exists(), "no output after an error");
    }
    let mut mask = vec![0f32; n * h * w];
    mask[h * w + 3] = f32::NAN;
    write(
        &f.p("bad_masks.safetensors"),
        &[("mask", Dtype::F32, vec![n, 1, h, w], f32s(&mask))],
    );
    fails(
        &mut f.boxes(&f.p("bad_masks.safetensors"), &f.p("b.json")),
        &["image 1 pixel 3", "must be finite"],
    );
    assert!(!f.p("b.json").exists());
}

#[test]
fn bad_box_and_chunk_options_are_refused_before_work() {
    let f = Fixture::new();
    let masks = f.p("masks.safetensors");
    let out = f.p("b.json");
    for (flag, v, needle) in [
        ("--margin", "-0.5", "--margin"),
        ("--margin", "NaN", "--margin"),
        ("--margin", "inf", "--margin"),
        ("--min-area", "2", "--min-area"),
        ("--min-area", "-1", "--min-area"),
        ("--chunk", "0", "--chunk"),
    ] {
        fails(f.boxes(&masks, &out).arg(format!("{flag}={v}")), &[needle]);
    }
    fails(
        f.crf(
            &f.p("images.safetensors"),
            &f.p("cams.safetensors"),
            &f.p("o.st"),
        )
        .args(["--chunk", "0"]),
        &["--chunk"],
    );
    // A chunk that cannot fit in memory (an explicit, tiny limit stands in for a small machine).
    fails(
        f.crf(
            &f.p("images.safetensors"),
            &f.p("cams.safetensors"),
            &f.p("o.st"),
        )
        .env("CONTRACAM_MEMORY_LIMIT", "1000"),
        &["of memory", "use a smaller --chunk"],
    );
    assert!(!out.exists() && !f.p("o.st").exists());
}

#[test]
fn cam_refuses_batches_without_negatives_empty_images_and_nan() {
    let r = common::reference_dir().join("contracam");
    let weights = r.join("contracam_r18_weights.safetensors");
    let f = Fixture::new();
    let out = f.p("cam.safetensors");
    let cam = |inputs: &Path| {
        let mut c = bin();
        c.args(["localize", "cam", "--device", "cpu", "--weights"])
            .arg(&weights)
            .arg("--inputs")
            .arg(inputs)
            .arg("--out")
            .arg(&out);
        c
    };
    let images = f.p("images.safetensors");
    fails(
        cam(&images).args(["--batch-size", "1"]),
        &["no negatives", "batch size 1"],
    );
    // 4 images in batches of 3 leave a last batch of one.
    fails(
        cam(&images).args(["--batch-size", "3"]),
        &["leave a last batch of 1", "e.g. 2 or 4"],
    );
    write(
        &f.p("one.safetensors"),
        &[("images", Dtype::U8, vec![1, 8, 8, 3], vec![0; 192])],
    );
    fails(&mut cam(&f.p("one.safetensors")), &["no negatives"]);
    write(
        &f.p("zero.safetensors"),
        &[(
            "images",
            Dtype::U8,
            vec![1_000_000_000_000_000, 0, 0, 3],
            vec![],
        )],
    );
    fails(&mut cam(&f.p("zero.safetensors")), &["N, H, W ≥ 1"]);
    write(
        &f.p("zero_f.safetensors"),
        &[("images", Dtype::F32, vec![2, 3, 0, 0], vec![])],
    );
    fails(&mut cam(&f.p("zero_f.safetensors")), &["N, H, W ≥ 1"]);
    let mut x = vec![0f32; 2 * 3 * 8 * 8];
    x[3 * 64 + 7] = f32::NAN;
    write(
        &f.p("nan.safetensors"),
        &[("images", Dtype::F32, vec![2, 3, 8, 8], f32s(&x))],
    );
    fails(
        &mut cam(&f.p("nan.safetensors")),
        &["NaN or infinite", "first in image 1"],
    );
    // Output = an input, through a symlink too.
    let link = f.p("w.link");
    std::os::unix::fs::symlink(&weights, &link).unwrap();
    let w_before = std::fs::metadata(&weights).unwrap().len();
    fails(
        bin()
            .args(["localize", "cam", "--weights"])
            .arg(&weights)
            .arg("--inputs")
            .arg(&images)
            .arg("--out")
            .arg(&link),
        &["refusing to overwrite an input", "--weights"],
    );
    assert_eq!(std::fs::metadata(&weights).unwrap().len(), w_before);
    // A text file as the checkpoint.
    std::fs::write(f.p("w.txt"), "not weights at all\n").unwrap();
    fails(
        bin()
            .args(["localize", "cam", "--weights"])
            .arg(f.p("w.txt"))
            .arg("--inputs")
            .arg(&images)
            .arg("--out")
            .arg(&out),
        &["w.txt is not a safetensors file"],
    );
    fails(
        cam(&images).args(["--expand-res", "3"]),
        &["--expand-res", "must be 1, 2 or 4"],
    );
    fails(cam(&images).args(["--iters", "0"]), &["--iters"]);
    assert!(!out.exists());
}

#[test]
fn cam_takes_uint8_images_as_the_official_loader_normalises_them() {
    let r = common::reference_dir().join("contracam");
    let v = read_tensors(&r.join("contracam_r18_vectors.safetensors")).unwrap();
    let from_u8 =
        contracam::localize::contrastive_cam::cam_inputs(v.get("input_uint8").unwrap()).unwrap();
    let d = (from_u8 - v.get("input_normalized").unwrap())
        .abs()
        .max()
        .double_value(&[]);
    // ToTensor + Normalize in float32: a few ulps of values up to ~2.6.
    assert!(d <= 1e-5, "max |Δ| {d}");
}
