//! What the stage-kind tests share. A built dataset `toy`: per split, PNG images of a red object (class 0: wide, class 1:
//! tall; class `k = i % 2`) on a textured blue background, in sizes that vary with the sample, a sample index
//! with the class labels, and `boxes.txt`, the object's box per `train` image in the official format.
//! Also a tiny MoCo checkpoint, the input map a `StageContext` takes, and running or parsing a kind.
#![allow(dead_code)]
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use contracam::data::formats::box_file::format_box_line;
use contracam::data::index::{Sample, SplitIndex};
use contracam::model::{Arch, ContrastiveModel, Method, ModelConfig, ResNetConfig, Stem};
use contracam::suite::dataset::{DatasetHandle, DatasetSpec, IndexDataset};
use contracam::suite::registry::Registry;
use contracam::suite::stage::{Input, Precision, StageContext, StageError, StageResult};
use contracam::util::progress::Mode;
use image::RgbImage;
use tch::Device;

pub struct Fixture {
    _tmp: tempfile::TempDir,
    pub data: PathBuf,
    pub boxes: PathBuf,
}

pub fn png(img: image::DynamicImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// `splits`: (name, images, first sample number). With `split_dirs`, a split's images live under
/// `img/<split>/` (ids `<split>/c<k>/s<i>.png`), else under `img/` (ids `c<k>/s<i>.png`).
pub fn fixture(splits: &[(&str, u32, u32)], split_dirs: bool) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let root = data.join("toy");
    let mut box_text = String::new();
    for &(split, n, offset) in splits {
        let mut samples = vec![];
        for j in 0..n {
            let i = j + offset;
            let class = j % 2;
            let (w, h) = (40 + (i % 4) * 6, 36 + (i % 3) * 8);
            let (x0, y0) = (3 + i % 7, 4 + i % 5);
            let (ow, oh) = if class == 0 {
                (w / 2, h / 5)
            } else {
                (w / 5, h / 2)
            };
            let inside = |x: u32, y: u32| (x0..x0 + ow).contains(&x) && (y0..y0 + oh).contains(&y);
            let img = RgbImage::from_fn(w, h, |x, y| {
                if inside(x, y) {
                    image::Rgb([230, 30 + (i * 5 % 100) as u8, 20])
                } else {
                    let t = ((x * 7 + y * 3 + i) % 40) as u8;
                    image::Rgb([10 + t, 60 + t, 180 - t])
                }
            });
            let rel = if split_dirs {
                format!("{split}/c{class}/s{i:03}.png")
            } else {
                format!("c{class}/s{i:03}.png")
            };
            let file = root.join("img").join(&rel);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, png(img.into())).unwrap();
            samples.push(Sample {
                path: format!("img/{rel}"),
                labels: vec![class as i64],
                width: w,
                height: h,
                ..Default::default()
            });
            if split == "train" {
                let b = [
                    x0 as f64 / w as f64,
                    y0 as f64 / h as f64,
                    (x0 + ow) as f64 / w as f64,
                    (y0 + oh) as f64 / h as f64,
                ];
                box_text += &format_box_line(&rel, &[b]);
                box_text.push('\n');
            }
        }
        SplitIndex::new(
            "toy",
            split,
            vec!["c0".into(), "c1".into()],
            "class",
            samples,
        )
        .write(&root.join("index"))
        .unwrap();
    }
    let boxes = tmp.path().join("boxes.txt");
    std::fs::write(&boxes, box_text).unwrap();
    Fixture {
        _tmp: tmp,
        data,
        boxes,
    }
}

/// The split `split` of `toy` as a stage input.
pub fn index_input(f: &Fixture, split: &str) -> Input {
    let spec = DatasetSpec::Index(IndexDataset {
        name: "toy".into(),
        split: split.into(),
        limit: None,
    });
    Input::Dataset(Arc::new(
        DatasetHandle::resolve(split, spec, &f.data).unwrap(),
    ))
}

/// A stage's inputs by slot.
pub fn inputs(list: Vec<(&str, Input)>) -> BTreeMap<String, Input> {
    list.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// A fresh MoCo ResNet-18 of width 1/8 (small stem, seed 11) saved as `<dir>/model.safetensors`.
pub fn tiny_model_file(dir: &Path) -> PathBuf {
    let cfg = ModelConfig {
        encoder: ResNetConfig {
            arch: Arch::Resnet18,
            width: 0.125,
            stem: Stem::Small,
            zero_init_residual: true,
        },
        method: Method::Moco,
        proj_hidden: Some(16),
        proj_dim: Some(8),
        pred_hidden: None,
        projector_form: Default::default(),
    };
    tch::manual_seed(11);
    let model = ContrastiveModel::new(&cfg, Device::Cpu);
    let p = dir.join("model.safetensors");
    model.save(&p, &Default::default()).unwrap();
    p
}

/// Runs `kind` with `params` (a TOML table, parsed strictly as a suite's) on `inputs` into `out`.
pub fn run_kind(
    kind: &str,
    params: &str,
    inputs: &BTreeMap<String, Input>,
    seed: u64,
    out: &Path,
) -> Result<StageResult, StageError> {
    let r = Registry::builtin();
    let k = r.get(kind).and_then(|k| k.implemented()).unwrap();
    let resolved = k.parse(toml::from_str(params).unwrap()).unwrap();
    std::fs::create_dir_all(out).unwrap();
    let mut ctx = StageContext {
        stage: kind,
        out_dir: out,
        outputs: k.outputs(),
        inputs,
        seed,
        device: Device::Cpu,
        precision: Precision::Fp32,
        data_dir: Path::new("/nonexistent"),
        threads: 1,
        progress: Mode::Hidden,
        fault: None,
    };
    k.run(&resolved, &mut ctx)
}

/// The parse error (key, message) of `params` for `kind`.
pub fn refused(kind: &str, params: &str) -> (String, String) {
    let r = Registry::builtin();
    let k = r.get(kind).and_then(|k| k.implemented()).unwrap();
    let e = k.parse(toml::from_str(params).unwrap()).unwrap_err();
    (e.key, e.msg)
}
