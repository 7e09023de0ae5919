//! Training on a split of a sample index through the loader (`train::source::index`): one epoch trains and
//! is the same for a seed whatever the number of loader workers; an official-format box file changes the
//! views and, with soft masks that agree with the boxes, raises view 1's foreground; bad box files and
//! missing files are errors naming the file and line; state → restore continues with the same batches;
//! `train ssl --dataset` writes the checkpoint with its metadata.
mod harden_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use contracam::data::formats::box_file::format_box_line;
use contracam::data::index::{Sample, SplitIndex};
use contracam::data::loader::{IndexSource, MaskInput, ObjectBoxes};
use contracam::model::{Arch, ContrastiveModel, Method, ModelConfig, ResNetConfig, Stem};
use contracam::train::source::index::check_files;
use contracam::train::{
    BatchSource, ExecutionStrategy, IndexBatchSource, IndexSourceOptions, SingleDevice,
    TrainConfig, TrainReport, Trainer,
};
use contracam::util::progress::Progress;
use harden_support::{bin, fails, SUITE};
use image::{GrayImage, RgbImage};
use tch::Device;

const N: usize = 16;

/// A dataset folder `<data>/toy` in the index format: `img/c<k>/s<i>.png` (ImageFolder ids `c<k>/s<i>.png`; numeric stems would read as COCO ids),
/// each a red object rectangle on a textured blue background; the soft masks of that object in the
/// `save_masks` layout (`soft/c<k>/s<i>.png`, 255 inside); and `boxes.txt`, the object's box per image.
struct Fixture {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    root: PathBuf,
    soft: PathBuf,
    boxes: PathBuf,
    box_text: String,
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn png(img: image::DynamicImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let root = data.join("toy");
    let soft = tmp.path().join("soft");
    let mut samples = vec![];
    let mut box_text = String::new();
    for i in 0..N as u32 {
        let (w, h) = (48 + (i % 4) * 6, 40 + (i % 3) * 8);
        let (x0, y0) = (3 + i % 7, 4 + i % 5);
        let (x1, y1) = (x0 + w / 3, y0 + h / 3);
        let inside = |x: u32, y: u32| (x0..x1).contains(&x) && (y0..y1).contains(&y);
        let img = RgbImage::from_fn(w, h, |x, y| {
            if inside(x, y) {
                image::Rgb([230, 30 + (i * 5) as u8, 20])
            } else {
                let t = ((x * 7 + y * 3 + i) % 40) as u8;
                image::Rgb([10 + t, 60 + t, 180 - t])
            }
        });
        let class = i % 2;
        let rel = format!("c{class}/s{i:02}.png");
        write(&root.join("img").join(&rel), &png(img.into()));
        let mask = GrayImage::from_fn(w, h, |x, y| {
            image::Luma([if inside(x, y) { 255 } else { 0 }])
        });
        write(&soft.join(&rel), &png(mask.into()));
        samples.push(Sample {
            path: format!("img/{rel}"),
            labels: vec![class as i64],
            width: w,
            height: h,
            ..Default::default()
        });
        let b = [
            x0 as f64 / w as f64,
            y0 as f64 / h as f64,
            x1 as f64 / w as f64,
            y1 as f64 / h as f64,
        ];
        box_text += &format_box_line(&rel, &[b]);
        box_text.push('\n');
    }
    SplitIndex::new(
        "toy",
        "train",
        vec!["c0".into(), "c1".into()],
        "class",
        samples,
    )
    .write(&root.join("index"))
    .unwrap();
    let boxes = tmp.path().join("boxes.txt");
    std::fs::write(&boxes, &box_text).unwrap();
    Fixture {
        _tmp: tmp,
        data,
        root,
        soft,
        boxes,
        box_text,
    }
}

fn source(f: &Fixture) -> Arc<IndexSource> {
    Arc::new(IndexSource::open(&f.data, "toy", "train").unwrap())
}

fn tiny() -> (ModelConfig, TrainConfig) {
    let model = ModelConfig {
        encoder: ResNetConfig {
            arch: Arch::Resnet18,
            width: 0.125,
            stem: Stem::Small,
            zero_init_residual: true,
        },
        method: Method::Moco,
        proj_hidden: Some(32),
        proj_dim: Some(16),
        pred_hidden: Some(32),
        projector_form: Default::default(),
    };
    let mut t = TrainConfig {
        epochs: 1,
        batch_size: 4,
        queue_size: 24,
        ema: Some(0.9),
        base_lr: 0.5,
        ..Default::default()
    };
    t.augment.output_size = 16;
    (model, t)
}

struct Inputs {
    boxes: bool,
    masks: bool,
    workers: usize,
}

fn batches(f: &Fixture, t: &TrainConfig, seed: u64, inp: &Inputs) -> IndexBatchSource {
    let src = source(f);
    let boxes = inp
        .boxes
        .then(|| ObjectBoxes::load(&f.boxes, src.as_ref()).unwrap());
    let masks = if inp.masks {
        MaskInput::Folder(f.soft.clone())
    } else {
        MaskInput::None
    };
    IndexBatchSource::new(
        src,
        t.batch_size,
        &t.augment,
        seed,
        SingleDevice::new(Device::Cpu).shard(),
        IndexSourceOptions {
            boxes,
            masks,
            workers: inp.workers,
            prefetch: 2,
            ..Default::default()
        },
    )
    .unwrap()
}

fn fit(f: &Fixture, seed: u64, inp: &Inputs) -> (ContrastiveModel, TrainReport) {
    tch::set_num_threads(1);
    let (m, t) = tiny();
    let mut src = batches(f, &t, seed, inp);
    let mut trainer = Trainer::new(&m, &t, seed, SingleDevice::new(Device::Cpu)).unwrap();
    let report = trainer.fit(&mut src, &Progress::hidden()).unwrap();
    (trainer.into_model(), report)
}

fn weights_equal(a: &ContrastiveModel, b: &ContrastiveModel) -> bool {
    let (va, vb) = (a.vs.variables(), b.vs.variables());
    va.iter().all(|(k, t)| t.equal(&vb[k]))
}

const PLAIN: Inputs = Inputs {
    boxes: false,
    masks: false,
    workers: 0,
};

#[test]
fn one_epoch_trains_the_same_whatever_the_workers() {
    let f = fixture();
    let (a, ra) = fit(&f, 5, &PLAIN);
    assert_eq!(ra.steps, N / 4);
    assert!(ra.epoch_loss.iter().all(|l| l.is_finite()), "{ra:?}");
    assert_eq!(ra.view_foreground, None, "no masks, nothing measured");
    let (b, rb) = fit(
        &f,
        5,
        &Inputs {
            workers: 3,
            ..PLAIN
        },
    );
    assert_eq!(ra.epoch_loss, rb.epoch_loss, "workers changed the losses");
    assert!(weights_equal(&a, &b), "workers changed the weights");
    let (c, _) = fit(&f, 6, &PLAIN);
    assert!(!weights_equal(&a, &c), "another seed, the same weights");
}

#[test]
fn a_box_file_changes_the_views_and_raises_the_foreground() {
    let f = fixture();
    let (_, t) = tiny();
    let first = |inp: &Inputs| {
        let mut s = batches(&f, &t, 5, inp);
        s.start_epoch(0).unwrap();
        s.next_batch().unwrap().unwrap()
    };
    let plain = first(&Inputs {
        masks: true,
        ..PLAIN
    });
    let oa = first(&Inputs {
        boxes: true,
        masks: true,
        ..PLAIN
    });
    assert_eq!(plain.views[0].size(), [4, 3, 16, 16]);
    assert_eq!(plain.masks.as_ref().unwrap().size(), [4, 16, 16]);
    for k in 0..2 {
        assert!(
            !plain.views[k].equal(&oa.views[k]),
            "view {k} ignores the boxes"
        );
    }
    // Crops inside the object's box see the object: red-dominant pixels everywhere in both views.
    for v in &oa.views {
        let red_minus_blue = (v.select(1, 0) - v.select(1, 2)).min().double_value(&[]);
        assert!(
            red_minus_blue > 0.3,
            "background inside an OA crop: {red_minus_blue}"
        );
    }
    let (m_plain, r_plain) = fit(
        &f,
        5,
        &Inputs {
            masks: true,
            ..PLAIN
        },
    );
    let (m_oa, r_oa) = fit(
        &f,
        5,
        &Inputs {
            boxes: true,
            masks: true,
            ..PLAIN
        },
    );
    assert!(!weights_equal(&m_plain, &m_oa));
    let (fg_plain, fg_oa) = (
        r_plain.view_foreground.unwrap(),
        r_oa.view_foreground.unwrap(),
    );
    // The object covers a ninth of each image; crops inside its box see it only.
    assert!((0.03..0.4).contains(&fg_plain), "plain crops: {fg_plain}");
    assert!(fg_oa > 0.95, "OA crops: {fg_oa}");
}

#[test]
fn bad_box_files_and_missing_files_name_the_file_and_line() {
    let f = fixture();
    let src = source(&f);
    let bad = |text: &str| {
        std::fs::write(&f.boxes, text).unwrap();
        ObjectBoxes::load(&f.boxes, src.as_ref())
            .unwrap_err()
            .to_string()
    };
    let e = bad(&format!("{}c9/zzzz.png 0.1,0.1,0.5,0.5\n", f.box_text));
    assert!(
        e.contains("boxes.txt: line 17: id \"c9/zzzz.png\" is no sample of toy:train"),
        "{e}"
    );
    let e = bad(&f
        .box_text
        .replace("c1/s03.png ", "c1/s03.png 0.5,0.5,0.4,0.9 "));
    assert!(e.contains("line 4") && e.contains("inverted"), "{e}");
    let e = bad(&f.box_text.replace("c1/s05.png", "c1/s05.jpg"));
    assert!(e.contains("line 6") && e.contains("c1/s05.jpg"), "{e}");
    std::fs::write(&f.boxes, &f.box_text).unwrap();

    // A missing mask or image is named with its index line before training starts...
    std::fs::remove_file(f.soft.join("c0/s06.png")).unwrap();
    let e = check_files(src.as_ref(), &MaskInput::Folder(f.soft.clone()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("soft/c0/s06.png") && e.contains("line 8") && e.contains("1 of the 16"),
        "{e}"
    );
    check_files(src.as_ref(), &MaskInput::None).unwrap();
    std::fs::remove_file(f.root.join("img/c1/s09.png")).unwrap();
    let e = check_files(src.as_ref(), &MaskInput::None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("img/c1/s09.png") && e.contains("train.jsonl line 11"),
        "{e}"
    );
    // ...and, unchecked, where the loader meets it.
    let (m, t) = tiny();
    let mut s = batches(
        &f,
        &t,
        5,
        &Inputs {
            workers: 2,
            ..PLAIN
        },
    );
    let mut trainer = Trainer::new(&m, &t, 5, SingleDevice::new(Device::Cpu)).unwrap();
    let e = trainer
        .fit(&mut s, &Progress::hidden())
        .expect_err("a missing image stops training")
        .to_string();
    assert!(e.contains("img/c1/s09.png") && e.contains("line 11"), "{e}");
}

#[test]
fn state_and_restore_continue_with_the_same_batches() {
    let f = fixture();
    let (_, t) = tiny();
    let inp = Inputs {
        boxes: true,
        masks: true,
        workers: 2,
    };
    let mut a = batches(&f, &t, 9, &inp);
    a.start_epoch(0).unwrap();
    a.next_batch().unwrap().unwrap();
    let state = a.state();
    let mut rest = vec![];
    while let Some(b) = a.next_batch().unwrap() {
        rest.push(b);
    }
    a.start_epoch(1).unwrap();
    while let Some(b) = a.next_batch().unwrap() {
        rest.push(b);
    }
    assert_eq!(rest.len(), 3 + 4);
    // Another process, another worker count: the rest of epoch 0, then epoch 1, batch for batch.
    let mut b = batches(&f, &t, 9, &Inputs { workers: 0, ..inp });
    b.restore(&state).unwrap();
    let mut again = vec![];
    while let Some(x) = b.next_batch().unwrap() {
        again.push(x);
    }
    b.start_epoch(1).unwrap();
    while let Some(x) = b.next_batch().unwrap() {
        again.push(x);
    }
    assert_eq!(again.len(), rest.len());
    for (k, (x, y)) in rest.iter().zip(&again).enumerate() {
        assert!(x.views[0].equal(&y.views[0]), "batch {k}: view 1 differs");
        assert!(x.views[1].equal(&y.views[1]), "batch {k}: view 2 differs");
        assert!(x.masks.as_ref().unwrap().equal(y.masks.as_ref().unwrap()));
    }
    // A state of another run is refused, naming what differs.
    let other = TrainConfig {
        batch_size: 8,
        ..t.clone()
    };
    let e = batches(&f, &other, 9, &inp)
        .restore(&state)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("batches of 4") && e.contains("batches of 8"),
        "{e}"
    );
    let e = batches(&f, &t, 9, &inp)
        .restore(&serde_json::json!({"kind": "in-memory"}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not an index source state"), "{e}");
}

/// The safetensors header's `__metadata__`.
fn metadata(path: &Path) -> serde_json::Map<String, serde_json::Value> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header["__metadata__"].as_object().unwrap().clone()
}

#[test]
fn train_ssl_on_a_dataset_writes_the_checkpoint_and_refuses_bad_input() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("suite.toml");
    let text = SUITE
        .replace("batch_size = 32\nbase_lr", "batch_size = 8\nbase_lr")
        .replace("output_size = 32", "output_size = 16");
    std::fs::write(&suite, text).unwrap();
    let spec = format!("{}:train", f.root.display());
    let out = dir.path().join("m.safetensors");
    let run = |extra: &[&std::ffi::OsStr]| {
        let mut c = bin();
        c.args([
            "train",
            "ssl",
            "--quiet",
            "--threads",
            "1",
            "--device",
            "cpu",
        ])
        .arg("--suite")
        .arg(&suite)
        .args(["--dataset", &spec, "--seed", "3"])
        .arg("--out")
        .arg(&out)
        .args(extra);
        c
    };
    run(&[
        "--boxes".as_ref(),
        f.boxes.as_os_str(),
        "--masks".as_ref(),
        f.soft.as_os_str(),
        "--workers".as_ref(),
        "2".as_ref(),
    ])
    .assert()
    .success();
    let meta = metadata(&out);
    assert_eq!(meta["contracam.seed"], "3");
    let report: TrainReport =
        serde_json::from_str(meta["contracam.train_report"].as_str().unwrap()).unwrap();
    assert_eq!(report.steps, N / 8);
    assert!(report.view_foreground.unwrap() > 0.95, "{report:?}");
    let data: serde_json::Value =
        serde_json::from_str(meta["contracam.train_data"].as_str().unwrap()).unwrap();
    assert_eq!(data["dataset"], "toy:train");
    assert_eq!(data["images"], N);
    assert_eq!(data["skipped"], serde_json::json!([]));
    // The same run with the default number of workers gives the same weights.
    let first = ContrastiveModel::load(&out, Device::Cpu).unwrap();
    run(&[
        "--boxes".as_ref(),
        f.boxes.as_os_str(),
        "--masks".as_ref(),
        f.soft.as_os_str(),
    ])
    .assert()
    .success();
    assert!(weights_equal(
        &first,
        &ContrastiveModel::load(&out, Device::Cpu).unwrap()
    ));
    std::fs::remove_file(&out).unwrap();

    // A box file for another dataset: refused before training, naming the file and line.
    let bad = dir.path().join("other.txt");
    std::fs::write(&bad, "139 0.1,0.1,0.5,0.5\n").unwrap();
    fails(
        &mut run(&["--boxes".as_ref(), bad.as_os_str()]),
        &["other.txt: line 1: id \"139\" is no sample of toy:train"],
    );
    // Masks without a dataset are a usage error.
    let out2 = bin()
        .args(["train", "ssl", "--suite"])
        .arg(&suite)
        .arg("--masks")
        .arg(&f.soft)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(out2.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out2.stderr).contains("--dataset"));
    // A missing image: named with its index line before any step.
    std::fs::remove_file(f.root.join("img/c0/s02.png")).unwrap();
    fails(&mut run(&[]), &["img/c0/s02.png", "train.jsonl line 4"]);
    assert!(!out.exists());
}

/// Soft masks of a COCO-style split (numeric ids) lie where `localize dataset --soft-masks` writes them,
/// `<dir>/<id>.<ext>`; the loader and the pre-flight check find them there.
#[test]
fn soft_masks_of_numeric_ids_are_found_by_id() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data/cocoish");
    let soft = tmp.path().join("soft_masks");
    let mut samples = vec![];
    for i in 0..4u32 {
        let rel = format!("train2017/{:012}.png", 100 + i);
        write(
            &root.join(&rel),
            &png(RgbImage::from_pixel(20, 16, image::Rgb([9, 9, 9])).into()),
        );
        // The left half is foreground.
        let m = GrayImage::from_fn(20, 16, |x, _| image::Luma([if x < 10 { 255 } else { 0 }]));
        write(&soft.join(format!("{}.png", 100 + i)), &png(m.into()));
        samples.push(Sample {
            path: rel,
            labels: vec![0],
            width: 20,
            height: 16,
            ..Default::default()
        });
    }
    SplitIndex::new("cocoish", "train", vec!["x".into()], "class", samples)
        .write(&root.join("index"))
        .unwrap();
    let src = Arc::new(IndexSource::open(&tmp.path().join("data"), "cocoish", "train").unwrap());
    assert_eq!(src.ids.name(), "coco-image-id");
    let masks = MaskInput::Folder(soft.clone());
    check_files(src.as_ref(), &masks).unwrap();
    let (_, t) = tiny();
    let mut s = IndexBatchSource::new(
        src.clone(),
        4,
        &t.augment,
        1,
        SingleDevice::new(Device::Cpu).shard(),
        IndexSourceOptions {
            masks: masks.clone(),
            ..Default::default()
        },
    )
    .unwrap();
    s.start_epoch(0).unwrap();
    let fg = s
        .next_batch()
        .unwrap()
        .unwrap()
        .masks
        .unwrap()
        .mean(tch::Kind::Double);
    let fg = fg.double_value(&[]);
    assert!(fg > 0.05 && fg < 0.95, "half-foreground masks read as {fg}");
    std::fs::remove_file(soft.join("102.png")).unwrap();
    let e = check_files(src.as_ref(), &masks).unwrap_err().to_string();
    assert!(e.contains("mask") && e.contains("line 4"), "{e}");
}
