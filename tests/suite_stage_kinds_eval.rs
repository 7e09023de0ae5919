//! The stage kinds `localize`, `eval-masks`, `eval-maxboxacc`, `ground-truth` and `import`, each run through
//! a `StageContext` built here (temporary directories) on synthetic scenes and on a small built split in the
//! real index layout: their outputs and metrics equal the standalone library computations on the same
//! inputs (bit for bit: the code paths are the same), bad parameters are refused naming the key, and a
//! missing input names the slot.
mod stage_kinds_common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use contracam::data::formats::box_file::format_box_line;
use contracam::data::index::{Sample, SplitIndex};
use contracam::data::loader::{IndexSource, ObjectBoxes, Source};
use contracam::data::synth::SynthConfig;
use contracam::eval::dataset::{maxboxacc_over_split, miou_over_split};
use contracam::eval::maxboxacc::{evaluate_wsol, MaxBoxAccConfig};
use contracam::localize::boxes::{extract_boxes, BoxOptions};
use contracam::localize::contrastive_cam::{contrastive_cam, CamConfig};
use contracam::localize::dataset::{
    localize_dataset, soft_mask_path, CamMethod, LocalizeModel, LocalizeOptions,
};
use contracam::localize::mask_clean::{clean_mask, CleanOptions};
use contracam::model::{
    Arch, Classifier, ClassifierConfig, ContrastiveModel, Method, ModelConfig, ResNetConfig, Stem,
};
use contracam::suite::dataset::{
    DatasetHandle, DatasetSpec, IndexDataset, SynthDataset, SynthForm,
};
use contracam::suite::pipeline::per_image_miou;
use contracam::suite::registry::Registry;
use contracam::suite::stage::*;
use contracam::suite::stages::ground_truth::grown_box;
use contracam::train::augment::eval_transform;
use contracam::util::progress::Mode;
use sha2::{Digest, Sha256};
use stage_kinds_common::inputs;
use tch::{Device, Kind, Tensor};

const SCENES: usize = 8;
const SCENE_SIDE: usize = 32;
const INPUT: i64 = 32;
const N_INDEX: usize = 6;

fn model_config() -> ModelConfig {
    ModelConfig {
        encoder: ResNetConfig {
            arch: Arch::Resnet18,
            width: 0.125,
            stem: Stem::Imagenet,
            zero_init_residual: false,
        },
        method: Method::Moco,
        proj_hidden: None,
        proj_dim: Some(16),
        pred_hidden: None,
        projector_form: Default::default(),
    }
}

/// A random tiny MoCo ResNet-18 saved as a checkpoint.
fn weights(dir: &Path) -> PathBuf {
    tch::manual_seed(11);
    let m = ContrastiveModel::new(&model_config(), Device::Cpu);
    let p = dir.join("tiny.safetensors");
    m.save(&p, &HashMap::new()).unwrap();
    p
}

fn synth_handle() -> Arc<DatasetHandle> {
    let spec = DatasetSpec::Synth(SynthDataset {
        form: SynthForm::Scenes,
        split: "test".into(),
        count: SCENES,
        seed: 3,
        synth: SynthConfig {
            image_size: SCENE_SIDE,
            crop_size: SCENE_SIDE,
            ..Default::default()
        },
    });
    Arc::new(DatasetHandle::resolve("scenes", spec, Path::new("/nonexistent")).unwrap())
}

/// A bright object on a textured background (JPEG) and its gray CUB-style mask (200 object, 30 not).
fn scene(w: u32, h: u32, k: u32) -> (Vec<u8>, image::GrayImage, [f64; 4]) {
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
    let mask = image::GrayImage::from_fn(w, h, |x, y| {
        image::Luma([if inside(x, y) { 200 } else { 30 }])
    });
    let b = [x0 as f64, y0 as f64, x1 as f64, y1 as f64];
    (out.into_inner(), mask, b)
}

/// `<data>/fx/index/test.jsonl` in the layout `data build` writes (CUB-like: class folders, gray masks,
/// pixel boxes), images of varied sizes; the last sample has no mask (an empty ground truth).
fn index_fixture(data: &Path) -> Arc<DatasetHandle> {
    let root = data.join("fx");
    let mut samples = vec![];
    for k in 0..N_INDEX as u32 {
        let class = if k < 3 { "001.A" } else { "002.B" };
        let (w, h) = (40 + (k % 3) * 6, 30 + (k % 2) * 8);
        let (jpg, mask, b) = scene(w, h, k);
        let path = format!("images/{class}/img_{k}.jpg");
        let mpath = format!("masks/{class}/img_{k}.png");
        for p in [&path, &mpath] {
            std::fs::create_dir_all(root.join(p).parent().unwrap()).unwrap();
        }
        std::fs::write(root.join(&path), jpg).unwrap();
        mask.save(root.join(&mpath)).unwrap();
        samples.push(Sample {
            path,
            labels: vec![i64::from(k >= 3)],
            boxes: vec![b, [1.0, 1.0, 4.0, 3.0]],
            mask: (k + 1 < N_INDEX as u32).then_some(mpath),
            width: w,
            height: h,
            ..Default::default()
        });
    }
    let index = SplitIndex::new(
        "fx",
        "test",
        vec!["001.A".into(), "002.B".into()],
        "class",
        samples,
    )
    .with_mask_rule("gray-gt-127");
    index.write(&root.join("index")).unwrap();
    let spec = DatasetSpec::Index(IndexDataset {
        name: "fx".into(),
        split: "test".into(),
        limit: None,
    });
    Arc::new(DatasetHandle::resolve("fx_test", spec, data).unwrap())
}

fn artefact(kind: ArtefactKind, path: &Path) -> Input {
    Input::Artefact(Artefact {
        kind,
        path: path.into(),
        fingerprint: "0".repeat(64),
        producer: "upstream.slot".into(),
    })
}

fn params(kind: &str, toml_text: &str) -> Result<ResolvedParams, String> {
    let r = Registry::builtin();
    let k = r.get(kind).and_then(|k| k.implemented()).unwrap();
    let v: toml::Value = toml::from_str(toml_text).unwrap();
    k.parse(v).map_err(|e| format!("{}: {}", e.key, e.msg))
}

/// Runs `kind` with `params` on `inputs` into the fresh folder `out`.
fn run(
    kind: &str,
    params_text: &str,
    inputs: &BTreeMap<String, Input>,
    data_dir: &Path,
    out: &Path,
) -> Result<StageResult, StageError> {
    let r = Registry::builtin();
    let k = r.get(kind).and_then(|k| k.implemented()).unwrap();
    let p = params(kind, params_text).unwrap();
    std::fs::create_dir_all(out).unwrap();
    let mut ctx = StageContext {
        stage: "t",
        out_dir: out,
        outputs: k.outputs(),
        inputs,
        seed: 0,
        device: Device::Cpu,
        precision: Precision::Fp32,
        data_dir,
        threads: 1,
        progress: Mode::Hidden,
        fault: None,
    };
    let res = k.run(&p, &mut ctx)?;
    for slot in k.outputs() {
        assert!(
            out.join(slot.file).exists(),
            "{kind}: output {} missing",
            slot.name
        );
    }
    let declared: Vec<&str> = k.metrics().iter().map(|m| m.name).collect();
    assert!(res.metrics.keys().all(|m| declared.contains(&m.as_str())));
    Ok(res)
}

const SYNTH_CAM: &str =
    "expand_res = 2\ncam_iters = 2\ncrf = false\ninput_size = 32\nbatch_size = 4";

#[test]
fn localize_and_evaluations_on_synthetic_scenes_equal_the_smoke_pipeline_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let w = weights(tmp.path());
    let h = synth_handle();
    let ins = inputs(vec![
        ("model", artefact(ArtefactKind::ModelCheckpoint, &w)),
        ("data", Input::Dataset(h.clone())),
    ]);
    let loc = tmp.path().join("loc");
    let res = run("localize", SYNTH_CAM, &ins, tmp.path(), &loc).unwrap();

    // The smoke pipeline's steps on the same scenes: CAMs per batch at the input size, upsampled.
    let set = h.synth().unwrap();
    let model = ContrastiveModel::load(&w, Device::Cpu).unwrap();
    let cfg = CamConfig {
        expand_res: 2,
        iters: 2,
        negative_removal: true,
    };
    let s = SCENE_SIDE as i64;
    let cams: Vec<Tensor> = set
        .images_tensor()
        .split(4, 0)
        .iter()
        .map(|c| {
            contrastive_cam(&model, &eval_transform(c, INPUT), &cfg)
                .unwrap()
                .upsample_bilinear2d([s, s], false, None, None)
        })
        .collect();
    let cams = Tensor::cat(&cams, 0);
    let pred = cams.gt(0.5).to_kind(Kind::Float);
    let want_miou = per_image_miou(&pred, &set.foreground_tensor()).unwrap();
    let flat = Vec::<f32>::try_from(pred.flatten(0, -1)).unwrap();
    let px = SCENE_SIDE * SCENE_SIDE;
    let boxes: Vec<Vec<[f64; 4]>> = flat
        .chunks(px)
        .map(|m| {
            let mask = clean_mask(m, SCENE_SIDE, SCENE_SIDE, &CleanOptions::boxes());
            extract_boxes(&mask, SCENE_SIDE, SCENE_SIDE, &BoxOptions::default())
        })
        .collect();
    let per_image = boxes.iter().map(|b| b.len()).sum::<usize>() as f64 / SCENES as f64;
    assert_eq!(res.metrics["boxes_per_image"], per_image);
    let text: String = boxes
        .iter()
        .enumerate()
        .map(|(i, b)| format_box_line(&i.to_string(), b) + "\n")
        .collect();
    assert_eq!(
        std::fs::read_to_string(loc.join("boxes.txt")).unwrap(),
        text
    );
    // Score maps are the upsampled CAMs themselves.
    let map3 = contracam::data::formats::npy::read_npy_2d(&loc.join("score_maps/3.npy")).unwrap();
    let cam3 = Vec::<f32>::try_from(cams.get(3).flatten(0, -1)).unwrap();
    assert_eq!(
        map3.data,
        cam3.iter().map(|&v| v as f64).collect::<Vec<_>>()
    );
    for i in 0..SCENES {
        assert!(loc.join(format!("soft_masks/{i}.png")).is_file());
    }

    let ev = inputs(vec![
        (
            "masks",
            artefact(ArtefactKind::MasksDir, &loc.join("masks")),
        ),
        ("data", Input::Dataset(h.clone())),
    ]);
    let m = run("eval-masks", "", &ev, tmp.path(), &tmp.path().join("ev")).unwrap();
    assert_eq!(m.metrics["miou"], want_miou, "bitwise the smoke cam_miou");
    assert!(want_miou > 0.0 && want_miou < 1.0);

    // MaxBoxAccV2 against evaluate_wsol over the same scenes written as wsolevaluation metadata files.
    let meta = tmp.path().join("meta");
    std::fs::create_dir_all(&meta).unwrap();
    let (mut ids, mut sizes, mut loc_txt) = (String::new(), String::new(), String::new());
    for (i, objs) in set.objects.iter().enumerate() {
        ids += &format!("{i}\n");
        sizes += &format!("{i},{SCENE_SIDE},{SCENE_SIDE}\n");
        for o in objs {
            let [a, b, c, d] = o.bbox;
            loc_txt += &format!("{i},{a},{b},{c},{d}\n");
        }
    }
    std::fs::write(meta.join("image_ids.txt"), ids).unwrap();
    std::fs::write(meta.join("image_sizes.txt"), sizes).unwrap();
    std::fs::write(meta.join("localization.txt"), loc_txt).unwrap();
    let want = evaluate_wsol(&meta, &loc.join("score_maps"), &MaxBoxAccConfig::default()).unwrap();
    let bx = inputs(vec![
        (
            "score_maps",
            artefact(ArtefactKind::ScoreMaps, &loc.join("score_maps")),
        ),
        ("data", Input::Dataset(h.clone())),
    ]);
    let r = run(
        "eval-maxboxacc",
        "iou_thresholds = [30, 50, 70]\ncam_curve_interval = 0.001",
        &bx,
        tmp.path(),
        &tmp.path().join("bx"),
    )
    .unwrap();
    assert_eq!(r.metrics["maxboxacc"], want.mean);

    // With the CRF the masks change (CRF'd, cleaned as `localize dataset`), and `threshold` is refused.
    let crf = run(
        "localize",
        &SYNTH_CAM.replace("crf = false", "crf = true"),
        &ins,
        tmp.path(),
        &tmp.path().join("crf"),
    )
    .unwrap();
    assert!(crf.metrics["boxes_per_image"].is_finite());
    assert_ne!(
        std::fs::read(tmp.path().join("crf/masks/0.png")).unwrap(),
        std::fs::read(loc.join("masks/0.png")).unwrap()
    );
}

#[test]
fn localize_and_evaluations_on_a_built_split_equal_localize_dataset_and_eval_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let h = index_fixture(&data);
    let w = weights(tmp.path());
    let ins = inputs(vec![
        ("model", artefact(ArtefactKind::ModelCheckpoint, &w)),
        ("data", Input::Dataset(h.clone())),
    ]);
    let loc = tmp.path().join("loc");
    let p = "method = \"contracam\"\nexpand_res = 2\ncam_iters = 2\ncrf = true\nnegative_signal_removal = true\ninput_size = 32";
    let res = run("localize", p, &ins, &data, &loc).unwrap();

    // `contracam localize dataset`'s library call with the same settings.
    let source = IndexSource::open(&data, "fx", "test").unwrap();
    let index_file = source.index_file.clone();
    let model =
        LocalizeModel::Contrastive(Box::new(ContrastiveModel::load(&w, Device::Cpu).unwrap()));
    let lib = tmp.path().join("lib");
    let opts = LocalizeOptions {
        method: CamMethod::Contrastive(CamConfig {
            expand_res: 2,
            iters: 2,
            negative_removal: true,
        }),
        image_size: 32,
        workers: 1,
        soft_masks: true,
        ..Default::default()
    };
    let summary = localize_dataset(
        Arc::new(source),
        &index_file,
        &model,
        &w,
        &lib,
        &opts,
        &|_| {},
    )
    .unwrap();
    assert_eq!(
        res.metrics["boxes_per_image"],
        summary.boxes as f64 / N_INDEX as f64
    );
    assert_eq!(
        std::fs::read(loc.join("boxes.txt")).unwrap(),
        std::fs::read(lib.join("boxes.txt")).unwrap()
    );
    let source = IndexSource::open(&data, "fx", "test").unwrap();
    for i in 0..N_INDEX {
        let id = source.meta(i).unwrap().id;
        for (a, b) in [
            (format!("masks/{id}.png"), format!("masks/{id}.png")),
            (
                format!("score_maps/{id}.npy"),
                format!("scoremaps/{id}.npy"),
            ),
            {
                let rel = soft_mask_path(&source, i, &id).unwrap();
                let rel = rel.to_string_lossy();
                (format!("soft_masks/{rel}"), format!("soft_masks/{rel}"))
            },
        ] {
            assert_eq!(
                std::fs::read(loc.join(&a)).unwrap(),
                std::fs::read(lib.join(&b)).unwrap(),
                "{a}"
            );
        }
    }
    // The box file drives the OA-Crop loader.
    ObjectBoxes::load(&loc.join("boxes.txt"), &source).unwrap();

    let ev = inputs(vec![
        (
            "masks",
            artefact(ArtefactKind::MasksDir, &loc.join("masks")),
        ),
        ("data", Input::Dataset(h.clone())),
    ]);
    let m = run("eval-masks", "", &ev, &data, &tmp.path().join("ev")).unwrap();
    assert_eq!(
        m.metrics["miou"],
        miou_over_split(&source, &lib.join("masks")).unwrap().miou
    );

    let bx = inputs(vec![
        (
            "score_maps",
            artefact(ArtefactKind::ScoreMaps, &loc.join("score_maps")),
        ),
        ("data", Input::Dataset(h.clone())),
    ]);
    let r = run("eval-maxboxacc", "", &bx, &data, &tmp.path().join("bx")).unwrap();
    let want =
        maxboxacc_over_split(&source, &lib.join("scoremaps"), &MaxBoxAccConfig::default()).unwrap();
    assert_eq!(r.metrics["maxboxacc"], want.mean);

    // Without the CRF the raw CAM is cleaned (the official path without --apply_crf): other masks.
    let nocrf = tmp.path().join("nocrf");
    run(
        "localize",
        &p.replace("crf = true", "crf = false"),
        &ins,
        &data,
        &nocrf,
    )
    .unwrap();
    let id0 = source.meta(0).unwrap().id;
    assert_ne!(
        std::fs::read(nocrf.join(format!("masks/{id0}.png"))).unwrap(),
        std::fs::read(loc.join(format!("masks/{id0}.png"))).unwrap()
    );
    // `threshold` is for synthetic scenes only.
    let e = run(
        "localize",
        &p.replace("crf = true", "crf = false\nthreshold = 0.3"),
        &ins,
        &data,
        &tmp.path().join("thr"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("threshold"), "{e}");
}

#[test]
fn ground_truth_boxes_and_masks_of_synthetic_and_built_data() {
    let tmp = tempfile::tempdir().unwrap();
    // Synthetic: every object over 1 % of the scene, grown by 0.2, normalised; masks the foreground.
    let h = synth_handle();
    let ins = inputs(vec![("data", Input::Dataset(h.clone()))]);
    let out = tmp.path().join("gs");
    let res = run("ground-truth", "", &ins, tmp.path(), &out).unwrap();
    let set = h.synth().unwrap();
    let s = SCENE_SIDE as f64;
    let mut text = String::new();
    let mut total = 0;
    for (i, objs) in set.objects.iter().enumerate() {
        let b: Vec<[f64; 4]> = objs
            .iter()
            .filter(|o| o.area as f64 > 0.01 * s * s)
            .map(|o| grown_box(o.bbox.map(|v| v as f64 / s), 0.2))
            .collect();
        total += b.len();
        text += &(format_box_line(&i.to_string(), &b) + "\n");
        let m = image::open(out.join(format!("soft_masks/{i}.png")))
            .unwrap()
            .into_luma8();
        let fg: Vec<u8> = set.instance_masks[i]
            .iter()
            .map(|&v| if v != 0 { 255 } else { 0 })
            .collect();
        assert_eq!(m.as_raw(), &fg);
    }
    assert_eq!(
        std::fs::read_to_string(out.join("boxes.txt")).unwrap(),
        text
    );
    assert_eq!(res.metrics["boxes_per_image"], total as f64 / SCENES as f64);
    assert!(total > 0);

    // Built split: the index boxes (box area > 1 %: the 3×2-px box of each image is dropped), grown by 0.2;
    // soft masks in the official save_masks layout at each image's size.
    let data = tmp.path().join("data");
    let h = index_fixture(&data);
    let ins = inputs(vec![("data", Input::Dataset(h.clone()))]);
    let out = tmp.path().join("gi");
    let res = run(
        "ground-truth",
        "margin = 0.2\nmin_area_frac = 0.01",
        &ins,
        &data,
        &out,
    )
    .unwrap();
    assert_eq!(res.metrics["boxes_per_image"], 1.0);
    let source = IndexSource::open(&data, "fx", "test").unwrap();
    let mut text = String::new();
    for i in 0..N_INDEX {
        let meta = source.meta(i).unwrap();
        text += &(format_box_line(&meta.id, &[grown_box(meta.boxes[0], 0.2)]) + "\n");
        let rel = soft_mask_path(&source, i, &meta.id).unwrap();
        let m = image::open(out.join("soft_masks").join(rel))
            .unwrap()
            .into_luma8();
        assert_eq!(m.dimensions(), meta.size);
        let fg = m.as_raw().iter().filter(|&&v| v > 127).count();
        if meta.has_mask {
            let want = source
                .mask(i)
                .unwrap()
                .unwrap()
                .as_raw()
                .iter()
                .filter(|&&v| v > 127)
                .count();
            // JPEG (the images' format, as the official masks) blurs the edges a little.
            assert!(fg.abs_diff(want) * 10 < want, "{fg} vs {want}");
        } else {
            assert_eq!(fg, 0, "a sample without a mask has an empty one");
        }
    }
    assert_eq!(
        std::fs::read_to_string(out.join("boxes.txt")).unwrap(),
        text
    );
    ObjectBoxes::load(&out.join("boxes.txt"), &source).unwrap();
}

struct TorchFixtures {
    dir: PathBuf,
}

/// The model_import tests' checkpoints, made with the project's .venv torch.
fn torch_fixtures() -> &'static TorchFixtures {
    static F: OnceLock<TorchFixtures> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = std::process::Command::new(root.join(".venv/bin/python"))
            .arg(root.join("tests/fixtures/torch_checkpoints.py"))
            .arg(&dir)
            .env("EVIL_MARKER", dir.join("evil-ran"))
            .output()
            .expect("running .venv/bin/python (run `make setup`)");
        assert!(
            out.status.success(),
            "fixture script failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        TorchFixtures { dir }
    })
}

fn sha256_hex(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

#[test]
fn import_declares_the_source_hash_and_writes_what_model_import_writes() {
    let fx = torch_fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // A relative source is taken from the data directory.
    let src = data.join("moco.ckpt");
    std::fs::copy(fx.dir.join("lightning_moco_r18.zip.pt"), &src).unwrap();
    let sha = sha256_hex(&src);
    let none = BTreeMap::new();

    let e = run(
        "import",
        "source = \"moco.ckpt\"",
        &none,
        &data,
        &tmp.path().join("a"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("sha256") && e.contains(&sha), "{e}");

    let p = format!(
        "source = \"moco.ckpt\"\nformat = \"lightning\"\narch = \"resnet18\"\nsha256 = \"{sha}\""
    );
    let out = tmp.path().join("b");
    let res = run("import", &p, &none, &data, &out).unwrap();
    assert!(res.metrics.is_empty());
    let want = tmp.path().join("want.safetensors");
    contracam::model::import::import_checkpoint(&src, &want, None).unwrap();
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        std::fs::read(&want).unwrap()
    );
    ContrastiveModel::load(&out.join("model.safetensors"), Device::Cpu).unwrap();

    // The declared hash is in the parameters, hence the fingerprint; a changed file is refused.
    std::fs::copy(fx.dir.join("lightning_moco_r18.legacy.pt"), &src).unwrap();
    let e = run("import", &p, &none, &data, &tmp.path().join("c"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("sha256") && e.contains(&sha256_hex(&src)), "{e}");
    // The architecture and format are checked against the file.
    std::fs::copy(fx.dir.join("lightning_moco_r18.zip.pt"), &src).unwrap();
    let e = run(
        "import",
        &p.replace("resnet18", "resnet50"),
        &none,
        &data,
        &tmp.path().join("d"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("parameter arch"), "{e}");
    let e = run(
        "import",
        &p.replace("\"lightning\"", "\"torchvision\""),
        &none,
        &data,
        &tmp.path().join("e"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("torchvision") && e.contains("lightning"), "{e}");
    let e = run(
        "import",
        &p.replace("moco.ckpt", "nothere.ckpt"),
        &none,
        &data,
        &tmp.path().join("f"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("parameter source") && e.contains("nothere.ckpt"),
        "{e}"
    );
}

#[test]
fn bad_parameters_are_refused_naming_the_key() {
    let cases: &[(&str, &str, &str)] = &[
        ("localize", "expand_res = 3", "expand_res"),
        ("localize", "cam_iters = 0", "cam_iters"),
        (
            "localize",
            "method = \"classifier-cam\"\ncam_iters = 10",
            "cam_iters",
        ),
        (
            "localize",
            "method = \"grad-cam\"\nnegative_signal_removal = false",
            "negative_signal_removal",
        ),
        ("localize", "batch_size = 1", "batch_size"),
        ("localize", "input_size = 8", "input_size"),
        ("localize", "margin = -0.1", "margin"),
        ("localize", "min_area_frac = 2.0", "min_area_frac"),
        ("localize", "threshold = 0.5", "threshold"),
        ("localize", "crf = false\nthreshold = 1.5", "threshold"),
        ("localize", "method = \"cam\"", "method"),
        ("localize", "iters = 10", "iters"),
        ("eval-masks", "threshold = 0.5", "threshold"),
        (
            "eval-maxboxacc",
            "cam_curve_interval = 0.0",
            "cam_curve_interval",
        ),
        ("eval-maxboxacc", "iou_thresholds = []", "iou_thresholds"),
        (
            "eval-maxboxacc",
            "iou_thresholds = [30, 150]",
            "iou_thresholds",
        ),
        ("ground-truth", "margin = -1.0", "margin"),
        ("ground-truth", "min_area_frac = -0.5", "min_area_frac"),
        ("import", "format = \"lightning\"", "source"),
        ("import", "source = \"a.pt\"\nsha256 = \"abc\"", "sha256"),
        ("import", "source = \"a.pt\"\nformat = \"onnx\"", "format"),
        ("import", "source = \"a.pt\"\narch = \"vgg\"", "arch"),
        (
            "import",
            "source = \"a.pt\"\ncheckpoint = \"x\"",
            "checkpoint",
        ),
    ];
    for (kind, text, key) in cases {
        let e = params(kind, text).unwrap_err();
        assert!(e.contains(key), "{kind} {text:?}: {e}");
    }
    // Every key the paper suites use parses, with the official defaults filled in.
    let p = params("localize", "").unwrap();
    assert_eq!(p["expand_res"], 2);
    assert_eq!(p["crf"], true);
    assert_eq!(p["batch_size"], 256);
    assert_eq!(p["input_size"], 224);
    let p = params("eval-maxboxacc", "").unwrap();
    assert_eq!(p["iou_thresholds"], serde_json::json!([30, 50, 70]));
    assert_eq!(p["cam_curve_interval"], 0.001);
}

#[test]
fn a_missing_input_names_the_slot() {
    let tmp = tempfile::tempdir().unwrap();
    let h = synth_handle();
    let cases: Vec<(&str, BTreeMap<String, Input>, &str)> = vec![
        (
            "localize",
            inputs(vec![("data", Input::Dataset(h.clone()))]),
            "input 'model'",
        ),
        (
            "eval-masks",
            inputs(vec![("data", Input::Dataset(h.clone()))]),
            "input 'masks'",
        ),
        (
            "eval-maxboxacc",
            inputs(vec![("data", Input::Dataset(h.clone()))]),
            "input 'score_maps'",
        ),
        (
            "eval-masks",
            inputs(vec![(
                "masks",
                artefact(ArtefactKind::MasksDir, tmp.path()),
            )]),
            "input 'data'",
        ),
        ("ground-truth", inputs(vec![]), "input 'data'"),
    ];
    for (i, (kind, ins, want)) in cases.into_iter().enumerate() {
        let e = run(
            kind,
            "",
            &ins,
            tmp.path(),
            &tmp.path().join(format!("o{i}")),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(want), "{kind}: {e}");
    }
    // A bound masks folder without the scenes' masks names the file it missed.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = run(
        "eval-masks",
        "",
        &inputs(vec![
            ("masks", artefact(ArtefactKind::MasksDir, &empty)),
            ("data", Input::Dataset(h)),
        ]),
        tmp.path(),
        &tmp.path().join("o9"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("0.png"), "{e}");
}

#[test]
fn classifier_cams_of_a_supervised_model_match_localize_dataset_and_need_fp32() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let h = index_fixture(&data);
    tch::manual_seed(5);
    let cfg = ClassifierConfig {
        encoder: model_config().encoder,
        method: Default::default(),
        num_classes: 2,
    };
    let w = tmp.path().join("clf.safetensors");
    Classifier::new(&cfg, Device::Cpu)
        .save(&w, &HashMap::new())
        .unwrap();
    let ins = inputs(vec![
        ("model", artefact(ArtefactKind::ModelCheckpoint, &w)),
        ("data", Input::Dataset(h.clone())),
    ]);
    let p =
        "method = \"classifier-cam\"\nexpand_res = 2\ncrf = true\ninput_size = 32\nbatch_size = 5";
    let loc = tmp.path().join("loc");
    let res = run("localize", p, &ins, &data, &loc).unwrap();
    let source = IndexSource::open(&data, "fx", "test").unwrap();
    let index_file = source.index_file.clone();
    let lib = tmp.path().join("lib");
    let opts = LocalizeOptions {
        method: CamMethod::ClassifierCam { expand_res: 2 },
        image_size: 32,
        batch_size: 5,
        workers: 1,
        soft_masks: true,
        ..Default::default()
    };
    let model = LocalizeModel::Classifier(Classifier::load(&w, Device::Cpu).unwrap());
    let summary = localize_dataset(
        Arc::new(source),
        &index_file,
        &model,
        &w,
        &lib,
        &opts,
        &|_| {},
    )
    .unwrap();
    assert_eq!(
        res.metrics["boxes_per_image"],
        summary.boxes as f64 / N_INDEX as f64
    );
    let source = IndexSource::open(&data, "fx", "test").unwrap();
    for i in 0..N_INDEX {
        let id = source.meta(i).unwrap().id;
        assert_eq!(
            std::fs::read(loc.join(format!("score_maps/{id}.npy"))).unwrap(),
            std::fs::read(lib.join(format!("scoremaps/{id}.npy"))).unwrap()
        );
    }
    // A contrastive checkpoint under a classifier method is refused when it is read, naming the file.
    let wrong = inputs(vec![
        (
            "model",
            artefact(ArtefactKind::ModelCheckpoint, &weights(tmp.path())),
        ),
        ("data", Input::Dataset(h.clone())),
    ]);
    let e = run("localize", p, &wrong, &data, &tmp.path().join("wrong"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("tiny.safetensors"), "{e}");

    // Only fp32: a bf16 run is refused rather than silently computed in fp32.
    let r = Registry::builtin();
    let k = r.get("localize").and_then(|k| k.implemented()).unwrap();
    let out = tmp.path().join("bf16");
    std::fs::create_dir_all(&out).unwrap();
    let mut ctx = StageContext {
        stage: "t",
        out_dir: &out,
        outputs: k.outputs(),
        inputs: &ins,
        seed: 0,
        device: Device::Cpu,
        precision: Precision::Bf16Mixed,
        data_dir: &data,
        threads: 1,
        progress: Mode::Hidden,
        fault: None,
    };
    let e = k
        .run(&params("localize", p).unwrap(), &mut ctx)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bf16-mixed"), "{e}");
}
