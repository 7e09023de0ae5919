//! `localize dataset` and `eval miou|maxboxacc --dataset` end to end on a CUB fixture built by `data build`
//! from archives in the real layout (served over loopback HTTP), with a randomly initialised tiny ResNet:
//! every output exists with the right shape, the box file reads back (and drives the OA-Crop loader), the
//! dataset-level metrics equal the tensor-level ones on the same data, a stopped run resumes to
//! byte-identical outputs, and a corrupt image is an error naming the file.
mod data_common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use contracam::data::formats::box_file::{read_box_file, read_box_file_checked};
use contracam::data::formats::npy::read_npy_2d;
use contracam::data::loader::transform::resize_pil;
use contracam::data::loader::{IndexSource, ObjectBoxes, Source};
use contracam::eval::maxboxacc::{evaluate_wsol, MaxBoxAccConfig};
use contracam::eval::miou::mean_iou;
use contracam::model::{
    Arch, Classifier, ClassifierConfig, ContrastiveModel, Method, ModelConfig, ResNetConfig, Stem,
};
use data_common::*;

/// Samples in the test split (ReDO and official splits are not needed here: `train_test_split` = 0).
const N_TEST: usize = 20;
const SIDE: &str = "32";

struct Fixture {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    weights: PathBuf,
    work: PathBuf,
}

/// An image with a bright object on a darker textured background, and its gray mask (200 = object, as
/// CUB's segmentations; the `gray-gt-127` rule makes it foreground).
fn scene(w: u32, h: u32, k: u32) -> (Vec<u8>, Vec<u8>) {
    let (x0, y0) = (w / 6 + k % 5, h / 5 + k % 3);
    let (x1, y1) = (x0 + w / 2, y0 + h / 2 + k % 4);
    let inside = move |x: u32, y: u32| x >= x0 && x < x1 && y >= y0 && y < y1;
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        if inside(x, y) {
            image::Rgb([220, 40 + (k * 9 % 60) as u8, 30])
        } else {
            let t = ((x * 7 + y * 3 + k) % 32) as u8;
            image::Rgb([20 + t, 90 + t, 60 + 2 * t])
        }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .unwrap();
    let mask = png_gray(w, h, |x, y| if inside(x, y) { 200 } else { 30 });
    (out.into_inner(), mask)
}

/// A CUB fixture of 24 images in 2 classes (20 test, 4 train) of varied sizes, built with `data build`,
/// and a random tiny ResNet-18 MoCo model saved as a checkpoint.
fn fixture() -> Fixture {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut entries = vec![file("CUB_200_2011/classes.txt", "1 001.A\n2 002.B\n")];
    let (mut images_txt, mut labels_txt, mut split_txt, mut boxes_txt, mut redo) = (
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    );
    let mut seg = vec![];
    for id in 1..=24u32 {
        let class = if id <= 12 { 1 } else { 2 };
        let dir = if class == 1 { "001.A" } else { "002.B" };
        let path = format!("{dir}/img_{id:02}.jpg");
        let (w, h) = (40 + (id % 4) * 6, 30 + (id % 3) * 8);
        let train = u32::from(id % 6 == 0);
        let (jpg, mask) = scene(w, h, id);
        images_txt += &format!("{id} {path}\n");
        labels_txt += &format!("{id} {class}\n");
        split_txt += &format!("{id} {train}\n");
        boxes_txt += &format!("{id} 3.0 2.5 {}.0 {}.0\n", w / 2, h / 2);
        redo += &format!("{id} {}\n", id % 3);
        entries.push(file(&format!("CUB_200_2011/images/{path}"), jpg));
        seg.push(file(
            &format!("segmentations/{}", path.replace(".jpg", ".png")),
            mask,
        ));
    }
    entries.push(file("CUB_200_2011/images.txt", images_txt));
    entries.push(file("CUB_200_2011/image_class_labels.txt", labels_txt));
    entries.push(file("CUB_200_2011/train_test_split.txt", split_txt));
    entries.push(file("CUB_200_2011/bounding_boxes.txt", boxes_txt));
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "cub200",
        Some("cub"),
        vec![
            ff("CUB_200_2011.tgz", tar_gz(&entries)),
            ff("segmentations.tgz", tar_gz(&seg)),
            ff("redo_cub_split.txt", redo.into_bytes()),
        ],
    );
    let data = tmp.path().join("d");
    build(&m, &data, "cub200", &[]);
    tch::manual_seed(7);
    let model = ContrastiveModel::new(&model_config(), tch::Device::Cpu);
    let weights = tmp.path().join("tiny.safetensors");
    model.save(&weights, &HashMap::new()).unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    Fixture {
        data,
        weights,
        work,
        _tmp: tmp,
    }
}

fn encoder() -> ResNetConfig {
    ResNetConfig {
        arch: Arch::Resnet18,
        width: 0.125,
        stem: Stem::Imagenet,
        zero_init_residual: false,
    }
}

fn model_config() -> ModelConfig {
    ModelConfig {
        encoder: encoder(),
        method: Method::Moco,
        proj_hidden: None,
        proj_dim: Some(16),
        pred_hidden: None,
        projector_form: Default::default(),
    }
}

impl Fixture {
    fn localize(&self, out: &Path, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "localize",
            "dataset",
            "--quiet",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--weights",
            self.weights.to_str().unwrap(),
            "--dataset",
            "cub200:test",
            "--data-dir",
            self.data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--image-size",
            SIDE,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !extra.contains(&"--batch-size") {
            args.extend(["--batch-size".into(), "6".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    fn run(&self, out: &Path, extra: &[&str]) {
        let args = self.localize(out, extra);
        run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }

    fn source(&self) -> IndexSource {
        IndexSource::open(&self.data, "cub200", "test").unwrap()
    }
}

/// Every file under `dir` with its bytes, by relative path.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            (
                e.path().strip_prefix(dir).unwrap().to_path_buf(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn json_of(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn outputs_box_file_and_metrics_match_the_tensor_level_functions() {
    let fx = fixture();
    let out = fx.work.join("out");
    // One iteration: with random weights ten iterations' max-union covers whole images, which the official
    // clean_mask then empties (its drop-the-first-component quirk); the resume test runs the defaults.
    fx.run(&out, &["--iters", "1"]);
    let src = fx.source();
    assert_eq!(src.len(), N_TEST);
    let ids: Vec<String> = (0..N_TEST).map(|i| src.meta(i).unwrap().id).collect();
    assert_eq!(
        ids[0], "001.A/img_01.jpg",
        "ImageFolder ids, as the official get_image_ids"
    );

    // (a) one mask and one score map per sample, S×S; 4 chunks of ≤ 6; the final marker.
    let files = tree(&out);
    let count = |dir: &str, ext: &str| {
        files
            .keys()
            .filter(|p| p.starts_with(dir) && p.to_string_lossy().ends_with(ext))
            .count()
    };
    assert_eq!(count("masks", ".jpg.png"), N_TEST);
    assert_eq!(count("scoremaps", ".jpg.npy"), N_TEST);
    assert_eq!(count("chunks", ".done"), 4);
    let done: serde_json::Value = serde_json::from_slice(&files[Path::new("DONE.json")]).unwrap();
    assert_eq!(done["samples"], N_TEST);
    assert_eq!(done["complete"], true);
    let mut any_fg = false;
    let mut any_varied_map = false;
    for id in &ids {
        let m = image::open(out.join("masks").join(format!("{id}.png")))
            .unwrap()
            .into_luma8();
        assert_eq!(m.dimensions(), (32, 32), "{id}");
        assert!(m.iter().all(|&v| v == 0 || v == 255), "{id}: mask is 0/255");
        any_fg |= m.contains(&255);
        let s = read_npy_2d(&out.join("scoremaps").join(format!("{id}.npy"))).unwrap();
        assert_eq!((s.height, s.width), (32, 32));
        assert!(s.data.iter().all(|v| (0.0..=1.0).contains(v)), "{id}");
        let (lo, hi) = s
            .data
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        any_varied_map |= hi - lo > 0.5;
    }
    assert!(any_fg, "the fixture gives non-empty masks");
    assert!(any_varied_map, "the fixture gives non-constant CAMs");

    // (b) the box file reads back with the official reader, ids in index order, boxes valid, and the
    // OA-Crop loader matches it to the samples.
    let boxes_txt = out.join("boxes.txt");
    let entries = read_box_file(&boxes_txt).unwrap();
    assert_eq!(entries.iter().map(|e| e.0.clone()).collect::<Vec<_>>(), ids);
    assert_eq!(read_box_file_checked(&boxes_txt).unwrap().len(), N_TEST);
    let n_boxes: usize = entries.iter().map(|e| e.1.len()).sum();
    assert_eq!(done["boxes"], n_boxes);
    assert!(n_boxes > 0, "some image has a box");
    let ob = ObjectBoxes::load(&boxes_txt, &src).unwrap();
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(ob.boxes(i), e.1.as_slice());
    }
    for line in std::fs::read_to_string(&boxes_txt).unwrap().lines() {
        for b in line.split(' ').skip(1) {
            assert!(
                b.split(',')
                    .all(|v| v.split_once('.').unwrap().1.len() == 6),
                "6 decimals: {line}"
            );
        }
    }

    // (c) mIoU over the dataset = the tensor-level mean_iou on GT masks resized with PIL bilinear.
    let data = fx.data.to_str().unwrap();
    let vm = json_of(&run_ok(&[
        "eval",
        "miou",
        "--threads",
        "1",
        "--dataset",
        "cub200:test",
        "--data-dir",
        data,
        "--masks",
        out.join("masks").to_str().unwrap(),
        "--json",
    ]));
    let mut pairs: Vec<(Vec<f32>, Vec<f32>)> = vec![];
    for (i, id) in ids.iter().enumerate() {
        let pred = image::open(out.join("masks").join(format!("{id}.png")))
            .unwrap()
            .into_luma8();
        // CUB's gray masks are resized first and thresholded after, as the official GT loader.
        let raw = image::open(src.root.join(src.index.samples[i].mask.as_ref().unwrap()))
            .unwrap()
            .into_luma8();
        let rgb = image::DynamicImage::ImageLuma8(raw).into_rgb8();
        let g = resize_pil(&rgb, 32, 32);
        let gt: Vec<f32> = g.pixels().map(|p| p.0[0] as f32 / 255.0).collect();
        assert!(gt.iter().any(|&x| x > 0.5), "{id}: GT has foreground");
        pairs.push((pred.iter().map(|&x| x as f32 / 255.0).collect(), gt));
    }
    let (m, n) = mean_iou(pairs.iter().map(|(p, g)| (p.as_slice(), g.as_slice())));
    assert_eq!(vm["n"], n);
    let got = vm["mIoU"].as_f64().unwrap();
    assert!((got - m).abs() < 1e-12, "{got} vs {m}");
    assert!(m > 0.0, "some overlap with the objects: {m}");

    // MaxBoxAccV2 over the dataset = evaluate_wsol on wsolevaluation metadata written from the index.
    let meta = fx.work.join("meta");
    std::fs::create_dir_all(&meta).unwrap();
    let (mut ids_txt, mut sizes_txt, mut loc_txt) = (String::new(), String::new(), String::new());
    for (i, s) in src.index.samples.iter().enumerate() {
        ids_txt += &format!("{}\n", ids[i]);
        sizes_txt += &format!("{},{},{}\n", ids[i], s.width, s.height);
        for b in &s.boxes {
            let t = |v: f64| v as i32;
            loc_txt += &format!(
                "{},{},{},{},{}\n",
                ids[i],
                t(b[0]),
                t(b[1]),
                t(b[2]),
                t(b[3])
            );
        }
    }
    std::fs::write(meta.join("image_ids.txt"), ids_txt).unwrap();
    std::fs::write(meta.join("image_sizes.txt"), sizes_txt).unwrap();
    std::fs::write(meta.join("localization.txt"), loc_txt).unwrap();
    let r = evaluate_wsol(&meta, &out.join("scoremaps"), &MaxBoxAccConfig::default()).unwrap();
    let v = json_of(&run_ok(&[
        "eval",
        "maxboxacc",
        "--threads",
        "1",
        "--dataset",
        "cub200:test",
        "--data-dir",
        data,
        "--score-maps",
        out.join("scoremaps").to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(v["n"], N_TEST);
    assert_eq!(v["MaxBoxAccV2"].as_f64().unwrap(), r.mean);
    for (d, a) in r.iou_thresholds.iter().zip(&r.max_box_acc) {
        assert_eq!(v[format!("IoU{d}")].as_f64().unwrap(), *a);
    }

    // A dataset folder path works as well as NAME, and a missing prediction names its file.
    let dir_spec = format!("{}:test", fx.data.join("cub200").display());
    let v2 = json_of(&run_ok(&[
        "eval",
        "miou",
        "--dataset",
        &dir_spec,
        "--masks",
        out.join("masks").to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(v2["mIoU"], vm["mIoU"]);
    std::fs::remove_file(out.join("masks").join(format!("{}.png", ids[3]))).unwrap();
    let e = run_err(&[
        "eval",
        "miou",
        "--dataset",
        &dir_spec,
        "--masks",
        out.join("masks").to_str().unwrap(),
    ]);
    assert!(e.contains("img_") && e.contains(".jpg.png"), "{e}");
}

#[test]
fn a_stopped_run_resumes_to_byte_identical_outputs() {
    let fx = fixture();
    let full = fx.work.join("full");
    fx.run(&full, &[]);
    let part = fx.work.join("part");
    fx.run(&part, &["--max-chunks", "1"]);
    assert!(!part.join("DONE.json").exists() && !part.join("boxes.txt").exists());
    assert!(part.join("chunks/000000.done").is_file());
    assert!(!part.join("chunks/000001.done").exists());
    fx.run(&part, &["--max-chunks", "1"]);
    assert!(part.join("chunks/000001.done").is_file());
    // A run killed inside chunk 1: its marker is gone and one of its files is half written.
    std::fs::remove_file(part.join("chunks/000001.done")).unwrap();
    let src = fx.source();
    let victim = part
        .join("masks")
        .join(format!("{}.png", src.meta(7).unwrap().id));
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    fx.run(&part, &[]);
    let (a, b) = (tree(&full), tree(&part));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "same files"
    );
    for (k, v) in &a {
        assert!(v == &b[k], "{} differs", k.display());
    }
    // Rerunning a complete run changes nothing; other settings in the same folder are refused.
    fx.run(&part, &[]);
    assert_eq!(tree(&part), a);
    let args = fx.localize(&part, &["--iters", "3"]);
    let e = run_err(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        e.contains("run.json") && e.contains("other settings"),
        "{e}"
    );
}

#[test]
fn a_corrupt_image_names_the_file_and_index_line_and_bad_batches_are_refused() {
    let fx = fixture();
    let src = fx.source();
    let (file, index, line) = src.locate(4).unwrap();
    std::fs::write(&file, b"not a jpeg at all").unwrap();
    let args = fx.localize(&fx.work.join("bad"), &[]);
    let e = run_err(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        e.contains(&file.display().to_string())
            && e.contains(&index.display().to_string())
            && e.contains(&format!("line {line}")),
        "{e}"
    );
    // 20 images in batches of 19 leave one image without negatives: refused before any work.
    let args = fx.localize(&fx.work.join("b19"), &["--batch-size", "19"]);
    let e = run_err(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(e.contains("batch of one image"), "{e}");
    assert!(!fx.work.join("b19").exists());
}

#[test]
fn a_supervised_classifier_localizes_its_ground_truth_class() {
    let fx = fixture();
    tch::manual_seed(3);
    let cfg = ClassifierConfig {
        encoder: encoder(),
        method: Default::default(),
        num_classes: 2,
    };
    let clf = Classifier::new(&cfg, tch::Device::Cpu);
    let w = fx.work.join("clf.safetensors");
    clf.save(&w, &HashMap::new()).unwrap();
    let out = fx.work.join("clf");
    // A last batch of one is fine for a classifier (no negatives needed).
    let mut args = fx.localize(&out, &["--classifier-cam", "cam", "--batch-size", "19"]);
    let i = args.iter().position(|a| a == "--weights").unwrap();
    args[i + 1] = w.to_str().unwrap().to_string();
    run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let entries = read_box_file(&out.join("boxes.txt")).unwrap();
    assert_eq!(entries.len(), N_TEST);
    let s = read_npy_2d(&out.join("scoremaps/002.B/img_23.jpg.npy")).unwrap();
    assert_eq!((s.height, s.width), (32, 32));
    // A contrastive checkpoint is not a classifier.
    let args = fx.localize(&fx.work.join("wrong"), &["--classifier-cam", "cam"]);
    let e = run_err(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(e.contains("--weights"), "{e}");
}

/// `--preset bg-mixup`: one soft mask per sample under `soft_masks/<class>/<file>`, decoding as 8-bit gray
/// at the sample's own size with graded values, byte-equal to the score map resized here independently (torch
/// bilinear, ×255, truncated) and stored as a quality-75 JPEG like the source; a stopped run resumes byte-identically and a
/// resume with another soft-mask setting or a conflicting preset is refused.
#[test]
fn bg_mixup_soft_masks_are_gray_at_each_samples_size_and_resume_byte_identically() {
    let fx = fixture();
    let full = fx.work.join("soft");
    fx.run(&full, &["--preset", "bg-mixup"]);
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(full.join("run.json")).unwrap()).unwrap();
    assert_eq!(record["soft_masks"], true);
    assert_eq!(record["method"]["contrastive"]["iters"], 1);
    assert_eq!(record["method"]["contrastive"]["expand_res"], 1);
    let src = fx.source();
    assert_eq!(tree(&full.join("soft_masks")).len(), src.len());
    for i in 0..src.len() {
        let meta = src.meta(i).unwrap();
        let (w, h) = meta.size;
        let img = image::open(full.join("soft_masks").join(&meta.id)).unwrap();
        assert_eq!(img.color(), image::ColorType::L8, "{}", meta.id);
        assert_eq!((img.width(), img.height()), (w, h), "{}", meta.id);
        let px = img.into_luma8().into_raw();
        let levels: std::collections::HashSet<u8> = px.iter().copied().collect();
        assert!(levels.len() > 2, "{}: {} levels", meta.id, levels.len());
        let map = read_npy_2d(&full.join("scoremaps").join(format!("{}.npy", meta.id))).unwrap();
        let data: Vec<f32> = map.data.iter().map(|&v| v as f32).collect();
        let want = (tch::Tensor::from_slice(&data)
            .view([1, 1, map.height as i64, map.width as i64])
            .upsample_bilinear2d([h as i64, w as i64], false, None, None)
            * 255.0)
            .to_kind(tch::Kind::Uint8)
            .view([-1]);
        let want = Vec::<u8>::try_from(want).unwrap();
        // The fixture's images are .jpg, so the mask is those values as a quality-75 JPEG.
        let mut jpeg = std::io::Cursor::new(Vec::new());
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 75)
            .encode_image(&image::GrayImage::from_raw(w, h, want).unwrap())
            .unwrap();
        let file = std::fs::read(full.join("soft_masks").join(&meta.id)).unwrap();
        assert!(file == jpeg.into_inner(), "{}: other values", meta.id);
    }

    let part = fx.work.join("soft_part");
    fx.run(&part, &["--preset", "bg-mixup", "--max-chunks", "1"]);
    assert_eq!(tree(&part.join("soft_masks")).len(), 6);
    assert!(!part.join("chunks/000001.done").exists());
    fx.run(&part, &["--preset", "bg-mixup"]);
    assert_eq!(tree(&part), tree(&full));

    // The same CAM settings without soft masks are another run.
    let args = fx.localize(&part, &["--expand-res", "1", "--iters", "1"]);
    let e = run_err(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(e.contains("other settings"), "{e}");
    let args = fx.localize(
        &fx.work.join("conflict"),
        &["--preset", "bg-mixup", "--iters", "3"],
    );
    let e = run_err(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(e.contains("--preset bg-mixup sets --iters 1"), "{e}");
}

#[test]
fn overlays_are_a_png_grid_of_the_expected_size_that_follows_the_cams() {
    use contracam::data::formats::npy::encode_npy_2d_f32;
    use contracam::localize::overlay::{grid_size, overlay_selection, write_overlays};
    let fx = fixture();
    let out = fx.work.join("overlays");
    fx.run(&out, &["--overlays", "2"]);
    let png = out.join("overlays.png");
    let bytes = std::fs::read(&png).unwrap();
    let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .unwrap()
        .to_rgb8();
    let source = fx.source();
    let rows = overlay_selection(&source, 2).unwrap();
    assert!(rows.len() >= 2, "the fixture has several classes: {rows:?}");
    let cols = rows.iter().map(Vec::len).max().unwrap();
    assert_eq!(img.dimensions(), grid_size(rows.len(), cols, 32));
    // Without the flag there is no grid.
    let plain = fx.work.join("plain");
    fx.run(&plain, &[]);
    assert!(!plain.join("overlays.png").exists());

    // Another CAM for the first tile changes the grid; the original CAM gives the same bytes back.
    let id = source.meta(rows[0][0]).unwrap().id;
    let npy = out.join(format!("scoremaps/{id}.npy"));
    let original = std::fs::read(&npy).unwrap();
    let cam = read_npy_2d(&npy).unwrap();
    let flipped: Vec<f32> = cam.data.iter().map(|&v| 1.0 - v as f32).collect();
    std::fs::write(&npy, encode_npy_2d_f32(32, 32, &flipped)).unwrap();
    write_overlays(&source, &out, 32, 2).unwrap();
    let changed = std::fs::read(&png).unwrap();
    assert_ne!(changed, bytes);
    std::fs::write(&npy, original).unwrap();
    write_overlays(&source, &out, 32, 2).unwrap();
    assert_eq!(std::fs::read(&png).unwrap(), bytes);
}
