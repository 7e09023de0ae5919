//! The loader: batches independent of the worker count, resumable epochs, OA-Crop from box files, joint
//! image/mask crops, evaluation transforms, and bad files named (or skipped and counted under skip_bad).
use std::path::{Path, PathBuf};
use std::sync::Arc;

use contracam::data::index::{Sample, SplitIndex};
use contracam::data::loader::transform::{resize_bilinear_f32, Planes};
use contracam::data::loader::{
    EvalTransform, IndexSource, Loader, LoaderConfig, MaskInput, ObjectBoxes, Plan,
    RandomResizedCrop, Source, SynthKind, SynthSource,
};
use contracam::data::synth::SynthConfig;
use image::{GrayImage, RgbImage};
use tch::{Kind, Tensor};

/// A built-looking dataset folder: `<root>/index/train.jsonl` over images `img/<class>/<n>.{jpg,png}` of
/// varied sizes and colour types, with binary masks `masks/<class>/<n>.png`.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    data_dir: PathBuf,
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn encode(img: image::DynamicImage, fmt: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, fmt).unwrap();
    out.into_inner()
}

fn fixture(n: usize) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let root = data_dir.join("toy");
    let mut samples = vec![];
    for i in 0..n {
        let (w, h) = (40 + (i as u32 * 7) % 30, 30 + (i as u32 * 11) % 40);
        let class = i % 3;
        let img = RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 5 + i as u32) as u8, (y * 3) as u8, (i * 20) as u8])
        });
        let (rel, bytes) = match i % 3 {
            0 => (
                format!("img/c{class}/{i:04}.jpg"),
                encode(img.into(), image::ImageFormat::Jpeg),
            ),
            1 => (
                format!("img/c{class}/{i:04}.png"),
                encode(img.into(), image::ImageFormat::Png),
            ),
            _ => (
                format!("img/c{class}/{i:04}.png"),
                encode(
                    image::DynamicImage::ImageRgb8(img).grayscale(),
                    image::ImageFormat::Png,
                ),
            ),
        };
        write(&root.join(&rel), &bytes);
        let mask = GrayImage::from_fn(w, h, |x, _| image::Luma([if x < w / 2 { 255 } else { 0 }]));
        // The official save_masks layout: the image's own file name, whatever the mask's format.
        let mrel = format!("masks/{}", rel.trim_start_matches("img/"));
        write(
            &root.join(&mrel),
            &encode(mask.into(), image::ImageFormat::Png),
        );
        samples.push(Sample {
            path: rel,
            labels: vec![class as i64],
            boxes: vec![[1.0, 2.0, w as f64 / 2.0, h as f64 - 1.0]],
            mask: Some(mrel),
            width: w,
            height: h,
            ..Default::default()
        });
    }
    SplitIndex::new(
        "toy",
        "train",
        vec!["c0".into(), "c1".into(), "c2".into()],
        "class",
        samples,
    )
    .with_mask_rule("binary")
    .write(&root.join("index"))
    .unwrap();
    Fixture {
        _tmp: tmp,
        root,
        data_dir,
    }
}

fn source(f: &Fixture) -> Arc<IndexSource> {
    Arc::new(IndexSource::open(&f.data_dir, "toy", "train").unwrap())
}

fn small_crop() -> RandomResizedCrop {
    RandomResizedCrop {
        size: 24,
        ..Default::default()
    }
}

fn cfg(batch: usize, workers: usize) -> LoaderConfig {
    LoaderConfig {
        workers,
        prefetch: 2,
        ..LoaderConfig::train(batch, 7)
    }
}

/// Every batch of an epoch as (indices, bytes of every view and mask).
fn epoch_bytes(l: &Loader, epoch: usize, start: usize) -> Vec<(Vec<usize>, Vec<Vec<u8>>)> {
    l.epoch_from(epoch, start)
        .map(|b| {
            let b = b.unwrap();
            let mut t: Vec<Vec<u8>> = b.views.iter().map(bytes).collect();
            if let Some(m) = &b.mask {
                t.push(bytes(m));
            }
            (b.indices.clone(), t)
        })
        .collect()
}

fn bytes(t: &Tensor) -> Vec<u8> {
    let t = t.contiguous();
    let n = t.numel() * t.kind().elt_size_in_bytes();
    let mut v = vec![0u8; n];
    t.to_kind(t.kind()).copy_data_u8(&mut v, n);
    v
}

#[test]
fn batches_do_not_depend_on_workers_and_epochs_resume() {
    let f = fixture(23);
    let src = source(&f);
    let plan = Plan::pretrain(small_crop());
    let runs: Vec<_> = [0, 1, 3]
        .iter()
        .map(|&w| {
            let l = Loader::new(src.clone(), plan.clone(), cfg(5, w)).unwrap();
            assert_eq!(l.batches_per_epoch(), 4, "23 samples, batch 5, drop_last");
            (
                epoch_bytes(&l, 0, 0),
                epoch_bytes(&l, 1, 0),
                epoch_bytes(&l, 1, 2),
            )
        })
        .collect();
    for r in &runs[1..] {
        assert_eq!(r.0, runs[0].0);
        assert_eq!(r.1, runs[0].1);
    }
    let (e0, e1, e1_from2) = &runs[0];
    assert_eq!(e0.len(), 4);
    assert_ne!(e0, e1, "each epoch has its own order and crops");
    assert_eq!(
        &e1[2..],
        &e1_from2[..],
        "resuming at step 2 gives the rest of the epoch"
    );
    // Views are 8-bit, two per sample, and differ from each other.
    let l = Loader::new(src.clone(), plan, cfg(5, 2)).unwrap();
    let b = l.epoch(0).next().unwrap().unwrap();
    assert_eq!(b.views[0].size(), [5, 3, 24, 24]);
    assert_eq!(b.views[0].kind(), Kind::Uint8);
    assert_ne!(bytes(&b.views[0]), bytes(&b.views[1]));
    assert!((b.view(0).max().double_value(&[]) - 1.0).abs() < 0.5);
    // Every sample appears once per epoch; order differs between epochs.
    let mut seen = l.order(0);
    seen.sort();
    assert_eq!(seen, (0..23).collect::<Vec<_>>());
    assert_ne!(l.order(0), l.order(1));
    // Shuffle and crops follow the seed.
    let other = Loader::new(
        src,
        Plan::pretrain(small_crop()),
        LoaderConfig {
            seed: 8,
            ..cfg(5, 2)
        },
    )
    .unwrap();
    assert_ne!(epoch_bytes(&other, 0, 0), runs[0].0);
}

#[test]
fn shards_split_each_global_batch_into_contiguous_parts() {
    let f = fixture(12);
    let src = source(&f);
    let plan = Plan::pretrain(small_crop());
    let whole = epoch_bytes(
        &Loader::new(src.clone(), plan.clone(), cfg(6, 1)).unwrap(),
        0,
        0,
    );
    let parts: Vec<_> = (0..3)
        .map(|rank| {
            let c = LoaderConfig {
                shard: (rank, 3),
                ..cfg(6, 1)
            };
            epoch_bytes(&Loader::new(src.clone(), plan.clone(), c).unwrap(), 0, 0)
        })
        .collect();
    for (b, (idx, _)) in whole.iter().enumerate() {
        let joined: Vec<usize> = parts.iter().flat_map(|p| p[b].0.clone()).collect();
        assert_eq!(&joined, idx);
        assert_eq!(parts[1][b].0, idx[2..4]);
    }
    let bad = LoaderConfig {
        shard: (0, 4),
        ..cfg(6, 1)
    };
    assert!(
        Loader::new(src, plan, bad).is_err(),
        "6 is not divisible by 4"
    );
}

#[test]
fn eval_keeps_index_order_and_the_last_partial_batch() {
    let f = fixture(7);
    let src = source(&f);
    let l = Loader::new(
        src.clone(),
        Plan::eval(EvalTransform::linear_eval(32)),
        LoaderConfig {
            workers: 2,
            ..LoaderConfig::eval(3)
        },
    )
    .unwrap();
    let batches: Vec<_> = l.epoch(0).map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 3);
    assert_eq!(batches[2].indices, vec![6]);
    assert_eq!(batches[0].labels, vec![vec![0], vec![1], vec![2]]);
    assert_eq!(batches[0].views[0].size(), [3, 3, 32, 32]);
    // Resize((S, S)) of sample 0 equals Pillow's bilinear resize of the decoded image.
    let l = Loader::new(
        src.clone(),
        Plan::eval(EvalTransform::Resize { size: 16 }),
        LoaderConfig::eval(4),
    )
    .unwrap();
    let b = l.epoch(0).next().unwrap().unwrap();
    let img = src.image(0).unwrap();
    let want = contracam::data::loader::transform::rgb_to_chw(
        &contracam::data::loader::transform::resize_pil(&img, 16, 16),
    );
    assert_eq!(bytes(&b.views[0].get(0)), want);
}

#[test]
fn a_corrupt_or_missing_image_names_the_file_and_line_or_is_skipped() {
    let f = fixture(10);
    let idx = SplitIndex::read(&f.root.join("index/train.jsonl")).unwrap();
    // Sample 3: a JPEG cut in half; sample 5: deleted.
    let p3 = f.root.join(&idx.samples[3].path);
    let b = std::fs::read(&p3).unwrap();
    std::fs::write(&p3, &b[..b.len() / 2]).unwrap();
    std::fs::remove_file(f.root.join(&idx.samples[5].path)).unwrap();
    let src = source(&f);
    let l = Loader::new(src.clone(), Plan::pretrain(small_crop()), cfg(10, 2)).unwrap();
    let err = l.epoch(0).next().unwrap().unwrap_err().to_string();
    assert!(
        (err.contains("0003.jpg") && err.contains("train.jsonl line 5"))
            || (err.contains("0005.png") && err.contains("train.jsonl line 7")),
        "{err}"
    );
    assert!(err.contains("--skip-bad"), "{err}");
    let l = Loader::new(
        src,
        Plan::pretrain(small_crop()),
        LoaderConfig {
            skip_bad: true,
            drop_last: false,
            ..cfg(4, 2)
        },
    )
    .unwrap();
    let got: usize = l.epoch(0).map(|b| b.unwrap().len()).sum();
    assert_eq!(got, 8);
    let mut skipped: Vec<usize> = l.skipped().iter().map(|s| s.index).collect();
    skipped.sort();
    assert_eq!(skipped, vec![3, 5]);
    assert!(l.skipped().iter().all(|s| s.line == Some(s.index + 2)));
}

#[test]
fn oa_crop_views_come_from_one_box_of_the_box_file() {
    // Each image: a green box region on red; the box file names that region. Every pixel of both views
    // must be green-dominant (bilinear blending at the border pulls a little red in only when the crop
    // leaves the box, which it must not).
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data/boxy");
    let mut samples = vec![];
    let mut lines = String::new();
    for i in 0..6u32 {
        let (w, h) = (60 + i * 4, 50);
        let (x0, y0, x1, y1) = (10 + i, 12, 40 + i, 42);
        let img = RgbImage::from_fn(w, h, |x, y| {
            if (x0..x1).contains(&x) && (y0..y1).contains(&y) {
                image::Rgb([0, 200, 0])
            } else {
                image::Rgb([220, 0, 0])
            }
        });
        let rel = format!("train2017/{:012}.png", 100 + i);
        write(
            &root.join(&rel),
            &encode(img.into(), image::ImageFormat::Png),
        );
        samples.push(Sample {
            path: rel,
            labels: vec![0],
            width: w,
            height: h,
            ..Default::default()
        });
        // The box padded by 0.4 px so that Pillow's rounding lands on the region's edges.
        let b = [
            (x0 as f64 + 0.4) / w as f64,
            (y0 as f64 - 0.4) / h as f64,
            (x1 as f64 - 0.4) / w as f64,
            (y1 as f64 + 0.4) / h as f64,
        ];
        lines += &contracam::data::formats::box_file::format_box_line(&(100 + i).to_string(), &[b]);
        lines.push('\n');
    }
    SplitIndex::new("boxy", "train", vec!["x".into()], "class", samples)
        .write(&root.join("index"))
        .unwrap();
    let box_file = tmp.path().join("boxes.txt");
    std::fs::write(&box_file, &lines).unwrap();
    let src = Arc::new(IndexSource::open(&tmp.path().join("data"), "boxy", "train").unwrap());
    let boxes = ObjectBoxes::load(&box_file, src.as_ref()).unwrap();
    assert_eq!(boxes.with_boxes(), 6);
    let l = Loader::new(
        src.clone(),
        Plan::pretrain(small_crop()).with_object_boxes(boxes),
        cfg(3, 2),
    )
    .unwrap();
    for e in 0..3 {
        for b in l.epoch(e) {
            let b = b.unwrap();
            for v in &b.views {
                let red = v.select(1, 0).to_kind(Kind::Float).max().double_value(&[]);
                let green = v.select(1, 1).to_kind(Kind::Float).min().double_value(&[]);
                assert!(red == 0.0 && green == 200.0, "red {red}, green {green}");
            }
        }
    }
    // Without the boxes, red shows up.
    let l = Loader::new(src.clone(), Plan::pretrain(small_crop()), cfg(3, 2)).unwrap();
    let red: f64 = l
        .epoch(0)
        .map(|b| {
            b.unwrap().views[0]
                .select(1, 0)
                .to_kind(Kind::Float)
                .max()
                .double_value(&[])
        })
        .fold(0.0, f64::max);
    assert!(red > 100.0);

    // Box files that do not fit the dataset are refused with the file and line.
    let bad = |text: &str| {
        std::fs::write(&box_file, text).unwrap();
        ObjectBoxes::load(&box_file, src.as_ref())
            .unwrap_err()
            .to_string()
    };
    let all_but_last: String = lines.lines().take(5).map(|l| format!("{l}\n")).collect();
    let e = bad(&all_but_last);
    assert!(e.contains("1 of the 6 samples") && e.contains("105"), "{e}");
    let e = bad(&format!("{lines}999 0.1,0.1,0.5,0.5\n"));
    assert!(
        e.contains("boxes.txt: line 7: id \"999\" is no sample of boxy:train"),
        "{e}"
    );
    let e = bad(&lines.replace("105 ", "105 0.9,0.1,0.2,0.5 "));
    assert!(e.contains("line 6") && e.contains("inverted"), "{e}");
    let e = bad(&lines.replace("105 ", "105 0.5,0.1,0.505,0.5 "));
    assert!(
        e.contains("line 6") && e.contains("less than a pixel"),
        "{e}"
    );
}

#[test]
fn masks_are_cropped_and_flipped_with_view_one() {
    // The mask is the image's red channel, so after the joint crop, resize and flip the mask plane must
    // equal view 1's red plane exactly; view 2 is sampled independently.
    let f = fixture(9);
    let src = source(&f);
    let l = Loader::new(
        src.clone(),
        Plan::pretrain(small_crop()).with_masks(MaskInput::GroundTruth),
        cfg(3, 2),
    )
    .unwrap();
    for b in l.epoch(0) {
        let b = b.unwrap();
        assert_eq!(b.views[0].kind(), Kind::Float);
        let m = b.mask.as_ref().unwrap();
        assert_eq!(m.size(), [3, 1, 24, 24]);
        // Binary masks of the fixture: left half foreground. Joint flips keep the mask on the image.
        let v = b.views[0].shallow_clone();
        assert!(v.min().double_value(&[]) >= 0.0 && v.max().double_value(&[]) <= 1.0);
    }
    // Exact alignment: a source whose mask equals the image's red channel.
    struct RedMask(Arc<IndexSource>);
    impl Source for RedMask {
        fn name(&self) -> String {
            self.0.name()
        }
        fn len(&self) -> usize {
            self.0.len()
        }
        fn classes(&self) -> &[String] {
            self.0.classes()
        }
        fn meta(&self, i: usize) -> contracam::data::Result<contracam::data::loader::SampleMeta> {
            self.0.meta(i)
        }
        fn image(&self, i: usize) -> contracam::data::Result<RgbImage> {
            self.0.image(i)
        }
        fn mask(&self, i: usize) -> contracam::data::Result<Option<GrayImage>> {
            let img = self.0.image(i)?;
            Ok(Some(GrayImage::from_fn(
                img.width(),
                img.height(),
                |x, y| image::Luma([img.get_pixel(x, y)[0]]),
            )))
        }
        fn locate(&self, i: usize) -> Option<(PathBuf, PathBuf, usize)> {
            self.0.locate(i)
        }
    }
    let l = Loader::new(
        Arc::new(RedMask(src.clone())),
        Plan::pretrain(small_crop()).with_masks(MaskInput::GroundTruth),
        cfg(3, 2),
    )
    .unwrap();
    let mut differs = false;
    for b in l.epoch(0) {
        let b = b.unwrap();
        let red = b.views[0].select(1, 0);
        let m = b.mask.as_ref().unwrap().select(1, 0);
        assert!(
            red.equal(&m),
            "mask and view 1 went through different crops"
        );
        differs |= !b.views[1].select(1, 0).equal(&m);
    }
    assert!(differs, "view 2 is cropped independently");

    // Masks from a folder in the save_masks layout: a missing file is named.
    let l = Loader::new(
        src.clone(),
        Plan::pretrain(small_crop()).with_masks(MaskInput::Folder(f.root.join("masks"))),
        cfg(3, 0),
    )
    .unwrap();
    assert_eq!(l.epoch(0).count(), 3);
    std::fs::remove_file(f.root.join("masks/c1/0004.png")).unwrap();
    assert!(f.root.join("masks/c0/0003.jpg").is_file());
    let err = l
        .epoch(0)
        .find_map(|b| b.err())
        .expect("missing mask is an error")
        .to_string();
    assert!(
        err.contains("masks/c1/0004.png") && err.contains("line 6"),
        "{err}"
    );
}

#[test]
fn tensor_path_bilinear_matches_libtorch() {
    // F.interpolate(bilinear, align_corners=False) as ATen computes it, for down- and up-scaling.
    for (h, w, oh, ow) in [
        (37, 53, 24, 24),
        (10, 7, 24, 24),
        (224, 300, 224, 224),
        (5, 5, 5, 5),
    ] {
        let data: Vec<f32> = (0..4 * h * w)
            .map(|i| ((i * 7919) % 256) as f32 / 255.0)
            .collect();
        let planes = Planes {
            channels: 4,
            height: h,
            width: w,
            data: data.clone(),
        };
        let ours = resize_bilinear_f32(&planes, oh, ow).data;
        let t = Tensor::from_slice(&data)
            .reshape([1, 4, h as i64, w as i64])
            .upsample_bilinear2d([oh as i64, ow as i64], false, None, None);
        let theirs: Vec<f32> = t.flatten(0, -1).try_into().unwrap();
        let max = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // ATen's AVX2 kernels fuse the blending multiply-adds differently in different loops (measured on
        // this machine: 0 when only the width changes, else at most 1.19e-7 = one ulp at 1.0).
        assert!(max <= f32::EPSILON, "{h}x{w} -> {oh}x{ow}: max diff {max}");
    }
}

#[test]
fn synthetic_scenes_load_like_index_splits() {
    let cfg_s = SynthConfig::default();
    let src = Arc::new(
        SynthSource::new(
            cfg_s,
            1,
            SynthKind::Scenes {
                split: "train".into(),
            },
            12,
        )
        .unwrap(),
    );
    let l = Loader::new(
        src.clone(),
        Plan::pretrain(RandomResizedCrop {
            size: 32,
            ..Default::default()
        })
        .with_masks(MaskInput::GroundTruth),
        cfg(4, 2),
    )
    .unwrap();
    let b: Vec<_> = l.epoch(0).map(|b| b.unwrap()).collect();
    assert_eq!(b.len(), 3);
    assert_eq!(b[0].views[1].size(), [4, 3, 32, 32]);
    // OA-Crop from the synthetic objects' own boxes through a box file.
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("b.txt");
    let entries: Vec<(String, Vec<[f64; 4]>)> = (0..12)
        .map(|i| {
            let m = src.meta(i).unwrap();
            (m.id, m.boxes)
        })
        .collect();
    contracam::data::formats::box_file::write_box_file(&p, &entries).unwrap();
    assert_eq!(
        ObjectBoxes::load(&p, src.as_ref()).unwrap().with_boxes(),
        12
    );
}
