//! The `pretrain` and `linear-eval` stage kinds, run through a `StageContext` built here:
//! - on the tiny smoke suite, they reproduce the hard-coded pipeline's `vanilla` / `oa_crop` training (same
//!   checkpoint bytes, same `final_loss` and `view_foreground`) and its linear probe (accuracy × 100);
//! - the same seed gives the same checkpoint bytes; boxes change the views;
//! - on a tiny built index split, training is deterministic, an official box file changes the weights, and
//!   linear evaluation equals the direct library computation (loader + encoder + L-BFGS sweep);
//! - bad parameters are refused naming the key;
//! - BG-Mixup (with bound soft masks on a built split, with the true foreground on synthetic scenes) and
//!   Mixup/CutMix train and change the weights; a `masks` input that does not fit the method is refused.
mod stage_kinds_common;
mod suite_common;

use std::path::Path;
use std::sync::Arc;

use contracam::data::formats::box_file::format_box_line;
use contracam::data::loader::{EvalTransform, IndexSource, Loader, LoaderConfig, Plan, Source};
use contracam::data::synth::SynthConfig;
use contracam::eval::encode::encode;
use contracam::eval::linear::{linear_eval, LinearEvalConfig};
use contracam::model::{Arch, ContrastiveModel, Method, Stem};
use contracam::suite::cache::StageCache;
use contracam::suite::dataset::{DatasetHandle, DatasetSpec, SynthDataset, SynthForm};
use contracam::suite::registry::Registry;
use contracam::suite::stage::{Artefact, ArtefactKind, Input, Unit};
use contracam::suite::{config, run_suite, RunOptions};
use stage_kinds_common::{index_input, inputs, refused, run_kind, tiny_model_file, Fixture};
use suite_common::{run_options, tiny_suite};
use tch::{Device, Tensor};

fn synth(name: &str, form: SynthForm, split: &str, count: usize, cfg: &SynthConfig) -> Input {
    let spec = DatasetSpec::Synth(SynthDataset {
        form,
        split: split.into(),
        count,
        seed: 0,
        synth: cfg.clone(),
    });
    Input::Dataset(Arc::new(
        DatasetHandle::resolve(name, spec, Path::new("/nonexistent")).unwrap(),
    ))
}

fn artefact(kind: ArtefactKind, path: &Path, producer: &str) -> Input {
    Input::Artefact(Artefact {
        kind,
        path: path.into(),
        fingerprint: format!("fp-{producer}"),
        producer: producer.into(),
    })
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn pretrain_and_linear_eval_reproduce_the_smoke_pipeline() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let suite = config::load(&tiny_suite(dir.path())).unwrap();
    let cfg = &suite.config;
    let runs = dir.path().join("runs");
    let results = run_suite(
        &suite,
        &RunOptions {
            skip_golden: true,
            ..run_options(&runs)
        },
    )
    .unwrap();
    let cache = StageCache::read_only(&runs.join(&cfg.name));
    let stage_dir = |name: &str| {
        let s = results.stages.iter().find(|s| s.stage == name).unwrap();
        cache.stage_dir(name, &s.fingerprint)
    };

    // The suite's [model] and [train] as pretrain parameters (the augmentations are official but for the
    // view size, as in the suite).
    let (m, t) = (&cfg.model, &cfg.train);
    assert_eq!(
        t.augment,
        contracam::train::augment::AugmentConfig {
            output_size: t.augment.output_size,
            ..Default::default()
        }
    );
    let params = format!(
        "method = \"moco\"\narch = \"resnet18\"\nwidth = {}\nstem = \"small\"\nepochs = {}\nbatch = {}\n\
         base_lr = {}\nfinal_lr = {}\nmomentum = {}\nweight_decay = {}\nema = {}\nqueue_size = {}\n\
         temperature = {}\nimage_size = {}\nmin_crop_scale = {}\n",
        m.encoder.width,
        t.epochs,
        t.batch_size,
        t.base_lr,
        t.final_lr,
        t.momentum,
        t.weight_decay,
        t.ema.unwrap(),
        t.queue_size,
        t.temperature,
        t.augment.output_size,
        t.augment.crop_scale[0],
    );
    assert_eq!(m.method, Method::Moco);
    assert_eq!(m.encoder.stem, Stem::Small);
    // The pipeline generates its training scenes from the run's seed, split "train".
    let scenes = synth(
        "scenes",
        SynthForm::Scenes,
        "train",
        cfg.sizes.train_scenes,
        &cfg.data,
    );
    let out = dir.path().join("vanilla");
    let r = run_kind(
        "pretrain",
        &params,
        &inputs(vec![("data", scenes.clone())]),
        cfg.seed,
        &out,
    )
    .unwrap();
    assert_eq!(
        r.metrics["final_loss"],
        results.metrics["vanilla.final_loss"]
    );
    assert_eq!(
        r.metrics["view_foreground"],
        results.metrics["vanilla.view_foreground"]
    );
    assert_eq!(
        bytes(&out.join("model.safetensors")),
        bytes(&stage_dir("pretrain").join("model.safetensors")),
        "the stage's checkpoint differs from the pipeline's"
    );
    let curve = &r.curves["loss"];
    assert_eq!(curve.x, vec![1.0]);
    assert_eq!(curve.y, vec![r.metrics["final_loss"]]);
    ContrastiveModel::load(&out.join("model.safetensors"), Device::Cpu).unwrap();

    // OA-Crop on the pipeline's ContraCAM boxes (its boxes.json).
    let boxes = artefact(
        ArtefactKind::BoxFile,
        &stage_dir("boxes").join("boxes.json"),
        "boxes.boxes",
    );
    let out_oa = dir.path().join("oa_crop");
    let r_oa = run_kind(
        "pretrain",
        &format!("{params}oa_crop = true\n"),
        &inputs(vec![("data", scenes), ("boxes", boxes)]),
        cfg.seed,
        &out_oa,
    )
    .unwrap();
    assert_eq!(
        r_oa.metrics["final_loss"],
        results.metrics["oa_crop.final_loss"]
    );
    assert_eq!(
        r_oa.metrics["view_foreground"],
        results.metrics["oa_crop.view_foreground"]
    );
    assert_eq!(
        bytes(&out_oa.join("model.safetensors")),
        bytes(&stage_dir("retrain-oa-crop").join("model.safetensors"))
    );
    assert_ne!(
        r_oa.metrics["view_foreground"],
        r.metrics["view_foreground"]
    );

    // The linear probe of the pipeline's vanilla evaluation, on the same crops, with the same sweep.
    let l = &cfg.eval.linear;
    let lin_params = format!(
        "classifier = \"lbfgs\"\n[linear]\nweight_decays = {:?}\nmax_iter = {}\n",
        l.weight_decays, l.max_iter
    );
    assert_eq!(
        *l,
        LinearEvalConfig {
            weight_decays: l.weight_decays.clone(),
            max_iter: l.max_iter,
            ..Default::default()
        }
    );
    let crops = |split: &str, n: usize| synth(split, SynthForm::Crops, split, n, &cfg.data);
    let lin_inputs = inputs(vec![
        (
            "model",
            artefact(
                ArtefactKind::ModelCheckpoint,
                &stage_dir("pretrain").join("model.safetensors"),
                "pretrain.model",
            ),
        ),
        ("train", crops("train", cfg.sizes.crops_train)),
        ("val", crops("val", cfg.sizes.crops_val)),
        ("test", crops("test", cfg.sizes.crops_test)),
    ]);
    let out_lin = dir.path().join("lin");
    let r_lin = run_kind("linear-eval", &lin_params, &lin_inputs, cfg.seed, &out_lin).unwrap();
    // Percent: 100 × the pipeline's fraction.
    assert_eq!(
        r_lin.metrics["accuracy"],
        100.0 * results.metrics["vanilla.linear_acc"]
    );
    let eval: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(stage_dir("evaluate-vanilla").join("metrics.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        r_lin.metrics["val_accuracy"],
        100.0 * eval["linear_val_acc"].as_f64().unwrap()
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_lin.join("linear_eval.json")).unwrap())
            .unwrap();
    assert_eq!(report["selected_on"], "val");
    assert_eq!(
        report["image_size"].as_i64().unwrap(),
        t.augment.output_size,
        "the default input size is the training view size recorded in the checkpoint"
    );
    assert_eq!(
        report["result"]["sweep"].as_array().unwrap().len(),
        l.weight_decays.len()
    );
}

fn tiny_synth() -> SynthConfig {
    SynthConfig {
        image_size: 24,
        crop_size: 16,
        num_classes: 2,
        num_backgrounds: 2,
        ..Default::default()
    }
}

const TINY: &str =
    "width = 0.125\nstem = \"small\"\nproj_hidden = 16\nproj_dim = 8\nepochs = 1\nbatch = 4\n\
                    queue_size = 16\nema = 0.9\nbase_lr = 0.5\nimage_size = 16\n";

#[test]
fn pretrain_on_synth_is_deterministic_and_boxes_change_the_views() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_synth();
    let scenes = synth("scenes", SynthForm::Scenes, "train", 12, &cfg);
    let run = |name: &str, params: &str, inp: Vec<(&str, Input)>, seed: u64| {
        let out = dir.path().join(name);
        let r = run_kind("pretrain", params, &inputs(inp), seed, &out).unwrap();
        (r, bytes(&out.join("model.safetensors")))
    };
    let (a, wa) = run("a", TINY, vec![("data", scenes.clone())], 3);
    let (b, wb) = run("b", TINY, vec![("data", scenes.clone())], 3);
    let (_, wc) = run("c", TINY, vec![("data", scenes.clone())], 4);
    assert_eq!(wa, wb, "same seed, same checkpoint bytes");
    assert_eq!(a, b);
    assert_ne!(wa, wc, "another seed trains another model");

    // The scenes' ground-truth boxes, as JSON and in the official text format (ids are sample indices):
    // cropping inside them raises view 1's foreground.
    let Input::Dataset(h) = &scenes else {
        unreachable!()
    };
    let gt = h.synth().unwrap().boxes_normalized();
    let json = dir.path().join("boxes.json");
    std::fs::write(&json, serde_json::to_string(&gt).unwrap()).unwrap();
    let txt = dir.path().join("boxes.txt");
    let text: String = gt
        .iter()
        .enumerate()
        .map(|(i, b)| format_box_line(&i.to_string(), b) + "\n")
        .collect();
    std::fs::write(&txt, text).unwrap();
    let oa = format!("{TINY}oa_crop = true\n");
    for file in [&json, &txt] {
        let (r, w) = run(
            "oa",
            &oa,
            vec![
                ("data", scenes.clone()),
                ("boxes", artefact(ArtefactKind::BoxFile, file, "gt.boxes")),
            ],
            3,
        );
        assert_ne!(w, wa);
        assert!(
            r.metrics["view_foreground"] > a.metrics["view_foreground"] + 0.05,
            "{}: {} vs {} without boxes",
            file.display(),
            r.metrics["view_foreground"],
            a.metrics["view_foreground"]
        );
    }

    // Boxes without oa_crop, oa_crop without boxes: refused naming the slot.
    let out = dir.path().join("x");
    let with_boxes = inputs(vec![
        ("data", scenes.clone()),
        ("boxes", artefact(ArtefactKind::BoxFile, &json, "gt.boxes")),
    ]);
    let e = run_kind("pretrain", TINY, &with_boxes, 0, &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("'boxes'") && e.contains("oa_crop"), "{e}");
    let e = run_kind(
        "pretrain",
        &oa,
        &inputs(vec![("data", scenes.clone())]),
        0,
        &out,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("'boxes'") && e.contains("not bound"), "{e}");
    // A box list per image of another length names the file.
    std::fs::write(&json, serde_json::to_string(&gt[..3]).unwrap()).unwrap();
    let e = run_kind("pretrain", &oa, &with_boxes, 0, &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("boxes.json") && e.contains("3 box lists"), "{e}");
}

#[test]
fn bg_mixup_and_mix_train_and_a_mask_input_must_match_the_method() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let scenes = synth("scenes", SynthForm::Scenes, "train", 8, &tiny_synth());
    let run = |name: &str, params: &str, inp: Vec<(&str, Input)>| {
        let out = dir.path().join(name);
        run_kind("pretrain", params, &inputs(inp), 0, &out)
            .map(|r| (r, bytes(&out.join("model.safetensors"))))
    };
    let (_, plain) = run("plain", TINY, vec![("data", scenes.clone())]).unwrap();
    // Each mixing method trains, and changes the weights.
    for (name, extra) in [
        ("hard", "bg_mixup = { mode = \"hard\", p_mix = 1.0 }\n"),
        ("mixup", "mix = { mode = \"mixup\" }\n"),
        ("cutmix", "mix = { mode = \"cutmix\", beta = 1.0 }\n"),
    ] {
        let (r, w) = run(
            name,
            &format!("{TINY}{extra}"),
            vec![("data", scenes.clone())],
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(r.metrics["final_loss"].is_finite(), "{name}");
        assert_ne!(w, plain, "{name} trained the plain weights");
    }
    // BG-Mixup mode hard on synthetic scenes with soft masks bound, or soft without them: refused, naming
    // the slot.
    let masks = artefact(ArtefactKind::SoftMasks, dir.path(), "cam.soft_masks");
    let soft = format!("{TINY}bg_mixup = {{ mode = \"soft\" }}\n");
    let hard = format!("{TINY}bg_mixup = {{ mode = \"hard\" }}\n");
    for (params, inp) in [
        (
            &hard,
            vec![("data", scenes.clone()), ("masks", masks.clone())],
        ),
        (&soft, vec![("data", scenes.clone())]),
    ] {
        let e = run("x", params, inp).unwrap_err().to_string();
        assert!(e.contains("'masks'") && e.contains("hard"), "{e}");
    }
    // Masks without bg_mixup are refused.
    let e = run("y", TINY, vec![("data", scenes), ("masks", masks)])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'masks'") && e.contains("bg_mixup is not set"),
        "{e}"
    );
    assert!(!dir.path().join("x").join("model.safetensors").exists());
}

/// BG-Mixup mode soft on synthetic scenes mixes through the soft CAM masks a localize stage wrote for them
/// (`soft_masks/<i>.png`), as the paper's BG-Mixup, instead of their true foreground (mode hard): both
/// train, on different masks, so to different weights; the report's view-1 foreground is then the CAM
/// masks'. A missing or wrongly sized mask file is refused naming it.
#[test]
fn bg_mixup_on_synthetic_scenes_mixes_with_a_localize_stages_soft_masks() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let scenes = synth("scenes", SynthForm::Scenes, "train", 8, &tiny_synth());
    let model = tiny_model_file(dir.path());
    let loc = dir.path().join("loc");
    run_kind(
        "localize",
        "expand_res = 2\ncam_iters = 1\ncrf = false\ninput_size = 24\nbatch_size = 4",
        &inputs(vec![
            (
                "model",
                artefact(ArtefactKind::ModelCheckpoint, &model, "m.model"),
            ),
            ("data", scenes.clone()),
        ]),
        0,
        &loc,
    )
    .unwrap();
    let soft_dir = loc.join("soft_masks");
    assert!(
        soft_dir.join("7.png").is_file(),
        "the localize stage wrote soft masks"
    );
    let run = |name: &str, params: &str, inp: Vec<(&str, Input)>| {
        let out = dir.path().join(name);
        run_kind("pretrain", params, &inputs(inp), 0, &out)
            .map(|r| (r, bytes(&out.join("model.safetensors"))))
    };
    let masks = artefact(ArtefactKind::SoftMasks, &soft_dir, "loc.soft_masks");
    let soft = format!("{TINY}bg_mixup = {{ mode = \"soft\", p_mix = 1.0 }}\n");
    let hard = format!("{TINY}bg_mixup = {{ mode = \"hard\", p_mix = 1.0 }}\n");
    let (rs, ws) = run(
        "soft",
        &soft,
        vec![("data", scenes.clone()), ("masks", masks.clone())],
    )
    .unwrap();
    let (rh, wh) = run("hard", &hard, vec![("data", scenes.clone())]).unwrap();
    assert!(rs.metrics["final_loss"].is_finite());
    assert_ne!(ws, wh, "the CAM masks trained the true-foreground weights");
    assert_ne!(
        rs.metrics["view_foreground"], rh.metrics["view_foreground"],
        "view 1 carried the true foreground, not the CAM masks"
    );
    let (_, again) = run(
        "soft2",
        &soft,
        vec![("data", scenes.clone()), ("masks", masks.clone())],
    )
    .unwrap();
    assert_eq!(ws, again, "same masks, same seed, same weights");

    // A mask of the wrong size, then a missing one: refused naming the file.
    let copy = dir.path().join("masks_copy");
    std::fs::create_dir_all(&copy).unwrap();
    for i in 0..8 {
        std::fs::copy(
            soft_dir.join(format!("{i}.png")),
            copy.join(format!("{i}.png")),
        )
        .unwrap();
    }
    image::GrayImage::new(5, 5)
        .save(copy.join("2.png"))
        .unwrap();
    let bad = artefact(ArtefactKind::SoftMasks, &copy, "bad.soft_masks");
    let e = run(
        "bad",
        &soft,
        vec![("data", scenes.clone()), ("masks", bad.clone())],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("2.png") && e.contains("5x5"), "{e}");
    std::fs::remove_file(copy.join("2.png")).unwrap();
    let e = run("bad", &soft, vec![("data", scenes), ("masks", bad)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("2.png"), "{e}");
}

#[test]
fn bg_mixup_on_a_built_split_mixes_with_the_bound_soft_masks() {
    tch::set_num_threads(1);
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    // Soft masks in the official save_masks layout (<class>/<file>): the left half is foreground.
    let masks = dir.path().join("soft_masks");
    for class in ["c0", "c1"] {
        for e in std::fs::read_dir(f.data.join("toy/img").join(class)).unwrap() {
            let p = e.unwrap().path();
            let (w, h) = image::image_dimensions(&p).unwrap();
            let m = image::GrayImage::from_fn(w, h, |x, _| {
                image::Luma([if x < w / 2 { 255 } else { 0 }])
            });
            let to = masks.join(class).join(p.file_name().unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            m.save(&to).unwrap();
        }
    }
    let run = |name: &str, params: &str, inp: Vec<(&str, Input)>| {
        let out = dir.path().join(name);
        run_kind("pretrain", params, &inputs(inp), 5, &out)
            .map(|_| bytes(&out.join("model.safetensors")))
    };
    let plain = run("plain", TINY, vec![("data", index_input(&f, "train"))]).unwrap();
    let bg = format!("{TINY}bg_mixup = {{ mode = \"soft\", p_mix = 1.0 }}\n");
    let soft = artefact(ArtefactKind::SoftMasks, &masks, "cam.soft_masks");
    let a = run(
        "a",
        &bg,
        vec![("data", index_input(&f, "train")), ("masks", soft.clone())],
    )
    .unwrap();
    let b = run(
        "b",
        &bg,
        vec![("data", index_input(&f, "train")), ("masks", soft)],
    )
    .unwrap();
    assert_eq!(a, b, "BG-Mixup is seeded");
    assert_ne!(a, plain, "BG-Mixup changed the training");
    // Without the masks a built split cannot mix.
    let e = run("c", &bg, vec![("data", index_input(&f, "train"))])
        .unwrap_err()
        .to_string();
    assert!(e.contains("'masks'") && e.contains("soft masks"), "{e}");
}

#[test]
fn bad_parameters_are_refused_naming_the_key() {
    for (params, key) in [
        ("batch = 1", "batch"),
        ("epochs = 0", "epochs"),
        ("min_crop_scale = 0.0", "min_crop_scale"),
        ("min_crop_scale = 1.5", "min_crop_scale"),
        ("image_size = 0", "image_size"),
        ("width = 0.0", "width"),
        ("base_lr = -1.0", "base_lr"),
        ("momentum = 1.0", "momentum"),
        ("queue_size = 8\nbatch = 16", "queue_size"),
        ("bg_mixup = { p_mix = 1.5 }", "bg_mixup.p_mix"),
        (
            "bg_mixup = { cam_threshold = -0.1 }",
            "bg_mixup.cam_threshold",
        ),
        ("mix = { mode = \"mixup\", beta = 0.0 }", "mix.beta"),
    ] {
        let (k, msg) = refused("pretrain", params);
        assert_eq!(k, key, "{params}: {msg}");
    }
    // Types and names are checked by the parser, which names the key.
    let (k, msg) = refused("pretrain", "method = \"simclr\"");
    assert_eq!(k, "method", "{msg}");
    let (k, msg) = refused("pretrain", "bg_mixup = { mode = \"medium\" }");
    assert_eq!(k, "bg_mixup.mode", "{msg}");
    let (_, msg) = refused("pretrain", "epoch = 3");
    assert!(msg.contains("epoch"), "{msg}");
    for (params, key) in [
        ("image_size = 0", "image_size"),
        ("batch = 0", "batch"),
        ("linear = { max_iter = 0 }", "linear.max_iter"),
        ("linear = { weight_decays = [] }", "linear.weight_decays"),
        (
            "linear = { weight_decays = [-1.0] }",
            "linear.weight_decays",
        ),
        ("linear = { lr = 0.0 }", "linear.lr"),
    ] {
        let (k, msg) = refused("linear-eval", params);
        assert_eq!(k, key, "{params}: {msg}");
    }
    let (k, msg) = refused("linear-eval", "classifier = \"sgd\"");
    assert_eq!(k, "classifier", "{msg}");

    // The declarations: PLANNED's slots and metrics, linear-eval's in percent.
    let r = Registry::builtin();
    let lin = r.get("linear-eval").unwrap();
    assert!(lin.implemented().is_some());
    assert!(lin.metrics().iter().all(|m| m.unit == Unit::Percent));
    let pre = r.get("pretrain").unwrap();
    assert!(pre.implemented().is_some());
    let names: Vec<&str> = pre.metrics().iter().map(|m| m.name).collect();
    assert_eq!(names, ["final_loss", "view_foreground"]);
    let slots: Vec<&str> = pre.inputs().iter().map(|s| s.name).collect();
    assert_eq!(slots, ["data", "boxes", "masks"]);
}

/// `toy` with splits `train` (16 images) and `test` (8), ids `c<k>/s<i>.png`, and its `boxes.txt`.
fn fixture() -> Fixture {
    stage_kinds_common::fixture(&[("train", 16, 0), ("test", 8, 100)], false)
}

#[test]
fn pretrain_on_a_built_split_is_deterministic_and_uses_an_official_box_file() {
    tch::set_num_threads(1);
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, params: &str, inp: Vec<(&str, Input)>| {
        let out = dir.path().join(name);
        let r = run_kind("pretrain", params, &inputs(inp), 5, &out).unwrap();
        (r, out.join("model.safetensors"))
    };
    let (a, pa) = run("a", TINY, vec![("data", index_input(&f, "train"))]);
    let (b, pb) = run("b", TINY, vec![("data", index_input(&f, "train"))]);
    assert_eq!(bytes(&pa), bytes(&pb), "same seed, same checkpoint bytes");
    assert_eq!(a, b);
    assert!(a.metrics["final_loss"].is_finite());
    // The loader carries no masks here: no foreground to measure.
    assert!(!a.metrics.contains_key("view_foreground"));
    let boxes = artefact(ArtefactKind::BoxFile, &f.boxes, "gt.boxes");
    let (_, pc) = run(
        "c",
        &format!("{TINY}oa_crop = true\n"),
        vec![("data", index_input(&f, "train")), ("boxes", boxes)],
    );
    assert_ne!(bytes(&pa), bytes(&pc), "OA-Crop boxes change the views");
    let model = ContrastiveModel::load(&pc, Device::Cpu).unwrap();
    let meta = contracam::data::formats::safetensors::SafetensorsReader::open(&pc).unwrap();
    let data: serde_json::Value =
        serde_json::from_str(&meta.metadata()["contracam.train_data"]).unwrap();
    assert_eq!(data["images"], 16);
    assert_eq!(data["boxes"], "gt.boxes");
    assert_eq!(meta.metadata()["contracam.seed"], "5");
    assert_eq!(model.config.encoder.arch, Arch::Resnet18);
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("c").join("train_report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["steps"], 4);

    // A box file whose ids are not the split's is an error naming it.
    let bad = dir.path().join("bad.txt");
    std::fs::write(
        &bad,
        format_box_line("c0/nope.png", &[[0.1, 0.1, 0.5, 0.5]]) + "\n",
    )
    .unwrap();
    let e = run_kind(
        "pretrain",
        &format!("{TINY}oa_crop = true\n"),
        &inputs(vec![
            ("data", index_input(&f, "train")),
            ("boxes", artefact(ArtefactKind::BoxFile, &bad, "x.boxes")),
        ]),
        5,
        &dir.path().join("d"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("bad.txt") && e.contains("nope.png"), "{e}");
}

/// Features and labels of a split as the protocol computes them, straight from the library.
fn direct_features(
    model: &ContrastiveModel,
    f: &Fixture,
    split: &str,
    size: u32,
) -> (Tensor, Tensor) {
    let source: Arc<dyn Source> = Arc::new(IndexSource::open(&f.data, "toy", split).unwrap());
    let loader = Loader::new(
        source,
        Plan::eval(EvalTransform::linear_eval(size)),
        LoaderConfig {
            workers: 0,
            ..LoaderConfig::eval(5)
        },
    )
    .unwrap();
    let (mut xs, mut ys) = (vec![], vec![]);
    for b in loader.epoch(0) {
        let b = b.unwrap();
        xs.push(encode(model, &b.view(0), size as i64, 5));
        ys.push(b.class_labels(Device::Cpu).unwrap());
    }
    (Tensor::cat(&xs, 0), Tensor::cat(&ys, 0))
}

#[test]
fn linear_eval_on_built_splits_equals_the_direct_library_computation() {
    tch::set_num_threads(1);
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let weights = tiny_model_file(dir.path());
    let params = "image_size = 24\nbatch = 5\nlinear = { weight_decays = [1e-5, 1e-3, 1e-1], max_iter = 100 }\n";
    let model_in = artefact(ArtefactKind::ModelCheckpoint, &weights, "m.model");
    let with_val = inputs(vec![
        ("model", model_in.clone()),
        ("train", index_input(&f, "train")),
        ("val", index_input(&f, "test")),
        ("test", index_input(&f, "test")),
    ]);
    let r = run_kind("linear-eval", params, &with_val, 0, &dir.path().join("a")).unwrap();

    let model = ContrastiveModel::load(&weights, Device::Cpu).unwrap();
    let (trx, try_) = direct_features(&model, &f, "train", 24);
    let (tex, tey) = direct_features(&model, &f, "test", 24);
    assert_eq!(trx.size()[0], 16);
    let cfg = LinearEvalConfig {
        weight_decays: vec![1e-5, 1e-3, 1e-1],
        max_iter: 100,
        ..Default::default()
    };
    let want = linear_eval(&trx, &try_, &tex, &tey, &tex, &tey, &cfg).unwrap();
    assert_eq!(r.metrics["accuracy"], 100.0 * want.test_accuracy);
    assert_eq!(r.metrics["val_accuracy"], 100.0 * want.val_accuracy);
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("a").join("linear_eval.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["selected_on"], "val");
    assert_eq!(report["samples"]["train"], 16);
    assert_eq!(report["result"]["sweep"].as_array().unwrap().len(), 3);
    assert_eq!(
        report["result"]["best_weight_decay"].as_f64().unwrap(),
        want.best_weight_decay
    );

    // Without val the sweep selects on the training features, and no val accuracy is reported.
    let no_val = inputs(vec![
        ("model", model_in),
        ("train", index_input(&f, "train")),
        ("test", index_input(&f, "test")),
    ]);
    let r = run_kind("linear-eval", params, &no_val, 0, &dir.path().join("b")).unwrap();
    let want = linear_eval(&trx, &try_, &trx, &try_, &tex, &tey, &cfg).unwrap();
    assert_eq!(r.metrics["accuracy"], 100.0 * want.test_accuracy);
    assert!(!r.metrics.contains_key("val_accuracy"));
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("b").join("linear_eval.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["selected_on"], "train");
}
