//! The `detectron2-finetune` stage kind with a fake `train_net.py` (a Python script written here that checks
//! its arguments the way the official script would read them and writes a COCO results JSON for a small
//! COCO fixture): the stage exports the model, passes the official config, the export as `MODEL.WEIGHTS`
//! and an output folder inside the stage directory, and its AP equals `contracam eval coco` on the same
//! files. A missing detectron2 is an error that names the parameter, the environment variable and the
//! install command.
mod stage_kinds_common;

use std::path::{Path, PathBuf};

use contracam::suite::stage::{Artefact, ArtefactKind, Input};
use stage_kinds_common::{inputs, refused, run_kind, tiny_model_file};

/// A COCO val fixture: two images, two categories, polygons with areas; and detections with boxes and
/// polygons (as detectron2 writes them: both fields on every instance).
fn coco_fixture(dir: &Path) -> (PathBuf, PathBuf) {
    let gt = serde_json::json!({
        "images": [
            {"id": 1, "width": 64, "height": 48},
            {"id": 2, "width": 40, "height": 40}
        ],
        "categories": [{"id": 1}, {"id": 3}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 16], "area": 320.0, "iscrowd": 0,
             "segmentation": [[4, 4, 24, 4, 24, 20, 4, 20]]},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [30, 10, 30, 30], "area": 450.0, "iscrowd": 0,
             "segmentation": [[30, 10, 60, 10, 30, 40]]},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 40, 20], "area": 800.0, "iscrowd": 0,
             "segmentation": [[0, 0, 40, 0, 40, 20, 0, 20]]}
        ]
    });
    let dt = serde_json::json!([
        {"image_id": 1, "category_id": 1, "bbox": [5, 4, 20, 15], "score": 0.9,
         "segmentation": [[5, 4, 25, 4, 25, 19, 5, 19]]},
        {"image_id": 1, "category_id": 3, "bbox": [28, 12, 30, 28], "score": 0.8,
         "segmentation": [[28, 12, 58, 12, 28, 40]]},
        {"image_id": 1, "category_id": 1, "bbox": [40, 30, 10, 10], "score": 0.3,
         "segmentation": [[40, 30, 50, 30, 50, 40, 40, 40]]},
        {"image_id": 2, "category_id": 1, "bbox": [0, 2, 36, 18], "score": 0.7,
         "segmentation": [[0, 2, 36, 2, 36, 20, 0, 20]]},
        {"image_id": 2, "category_id": 3, "bbox": [10, 25, 10, 10], "score": 0.6,
         "segmentation": [[10, 25, 20, 25, 20, 35, 10, 35]]}
    ]);
    let (g, d) = (dir.join("instances_val2017.json"), dir.join("dt.json"));
    std::fs::write(&g, gt.to_string()).unwrap();
    std::fs::write(&d, dt.to_string()).unwrap();
    (g, d)
}

/// A stand-in for the official train_net.py: checks the command line as detectron2 reads it (a config
/// whose `_BASE_` chain resolves beside it, a pickle as MODEL.WEIGHTS, the solver overrides), records
/// it in OUTPUT_DIR/args.json and writes `results` as OUTPUT_DIR/inference/coco_instances_results.json.
fn fake_train_net(dir: &Path, results: &Path) -> PathBuf {
    let script = format!(
        r#"import json, os, shutil, sys
args = sys.argv[1:]
def fail(msg):
    print("fake train_net: " + msg, file=sys.stderr)
    sys.exit(3)
if args[0] != "--config-file" or args[2] != "--num-gpus":
    fail("expected --config-file CFG --num-gpus N first: %r" % args)
cfg, gpus = args[1], args[3]
seen, name = set(), cfg
while True:
    text = open(name).read()
    seen.add(os.path.basename(name))
    base = [l for l in text.splitlines() if l.startswith("_BASE_:")]
    if not base:
        break
    name = os.path.join(os.path.dirname(cfg), base[0].split(":", 1)[1].strip().strip('"'))
opts = dict(zip(args[4::2], args[5::2]))
with open(opts["MODEL.WEIGHTS"], "rb") as f:
    if f.read(1) != b"\x80":
        fail("MODEL.WEIGHTS is not a pickle")
out = opts["OUTPUT_DIR"]
os.makedirs(os.path.join(out, "inference"), exist_ok=True)
json.dump({{"argv": args, "configs": sorted(seen), "cwd": os.getcwd()}}, open(os.path.join(out, "args.json"), "w"))
shutil.copy({results:?}, os.path.join(out, "inference", "coco_instances_results.json"))
"#,
        results = results.display().to_string()
    );
    let p = dir.join("train_net.py");
    std::fs::write(&p, script).unwrap();
    p
}

fn model_input(path: &Path) -> Input {
    Input::Artefact(Artefact {
        kind: ArtefactKind::ModelCheckpoint,
        path: path.into(),
        fingerprint: "fp-model".into(),
        producer: "moco.model".into(),
    })
}

/// `contracam eval coco --json` on the same files.
fn eval_coco(gt: &Path, dt: &Path, iou: &str, drop: bool) -> serde_json::Value {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_contracam"));
    c.args(["eval", "coco", "--json", "--iou-type", iou])
        .arg("--gt")
        .arg(gt)
        .arg("--dt")
        .arg(dt);
    if drop {
        c.arg("--drop-segm-bbox");
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn the_stage_passes_config_weights_and_output_and_scores_like_eval_coco() {
    let t = tempfile::tempdir().unwrap();
    let (gt, dt) = coco_fixture(t.path());
    let train_net = fake_train_net(t.path(), &dt);
    let model = tiny_model_file(t.path());
    let out = t.path().join("stage");
    let params = format!(
        "train_net = {:?}\nannotations = {:?}\nnum_gpus = 2\nims_per_batch = 4\nbase_lr = 0.01\nmax_iter = 900\nsteps = [600, 800]\n",
        train_net.display().to_string(),
        gt.display().to_string()
    );
    let r = run_kind(
        "detectron2-finetune",
        &params,
        &inputs(vec![("model", model_input(&model))]),
        0,
        &out,
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let args: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("detectron2/args.json")).unwrap())
            .unwrap();
    let argv: Vec<String> = serde_json::from_value(args["argv"].clone()).unwrap();
    let s = |p: PathBuf| p.display().to_string();
    assert_eq!(
        argv,
        [
            "--config-file".to_string(),
            s(out.join("configs/coco_R_50_C4_2x_moco.yaml")),
            "--num-gpus".into(),
            "2".into(),
            "MODEL.WEIGHTS".into(),
            s(out.join("model.pkl")),
            "OUTPUT_DIR".into(),
            s(out.join("detectron2")),
            "SOLVER.IMS_PER_BATCH".into(),
            "4".into(),
            "SOLVER.BASE_LR".into(),
            "0.01".into(),
            "SOLVER.MAX_ITER".into(),
            "900".into(),
            "SOLVER.STEPS".into(),
            "(600, 800)".into(),
        ]
    );
    // The official config and both of its bases were there for detectron2 to merge.
    assert_eq!(
        args["configs"],
        serde_json::json!([
            "Base-RCNN-C4-BN.yaml",
            "coco_R_50_C4_2x.yaml",
            "coco_R_50_C4_2x_moco.yaml"
        ])
    );
    let moco = std::fs::read_to_string(out.join("configs/coco_R_50_C4_2x_moco.yaml")).unwrap();
    assert!(moco.contains("STRIDE_IN_1X1: False") && moco.contains("FORMAT: \"RGB\""));

    // Our AP of the run's results equals `eval coco` on the same files, in percent.
    let bbox = eval_coco(&gt, &dt, "bbox", false);
    let segm = eval_coco(&gt, &dt, "segm", true);
    let (b, m) = (r.metrics["bbox_ap"], r.metrics["segm_ap"]);
    assert_eq!(b, bbox["AP"].as_f64().unwrap() * 100.0);
    assert_eq!(m, segm["AP"].as_f64().unwrap() * 100.0);
    // A fixture where the numbers mean something: good but imperfect detections, boxes ≠ masks.
    assert!(b > 10.0 && b < 100.0, "{b}");
    assert!(m > 10.0 && m < 100.0 && m != b, "{m} {b}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("detectron2.json")).unwrap())
            .unwrap();
    assert_eq!(report["bbox_ap"].as_f64().unwrap(), b);
    assert_eq!(report["segm"]["AP"], segm["AP"]);
}

#[test]
fn missing_detectron2_names_the_parameter_the_variable_and_the_install_command() {
    let t = tempfile::tempdir().unwrap();
    let (gt, _) = coco_fixture(t.path());
    let model = tiny_model_file(t.path());
    let ins = inputs(vec![("model", model_input(&model))]);
    // SAFETY: no other thread of this test binary reads the environment (run with --test-threads 1;
    // the other test sets `train_net` and never consults the variable).
    std::env::remove_var("DETECTRON2_HOME");
    let params = format!("annotations = {:?}\n", gt.display().to_string());
    let e = run_kind("detectron2-finetune", &params, &ins, 0, &t.path().join("a"))
        .unwrap_err()
        .to_string();
    for want in [
        "params.train_net",
        "DETECTRON2_HOME",
        "pip install",
        "detectron2",
    ] {
        assert!(e.contains(want), "{want}: {e}");
    }
    // A train_net.py whose Python has no detectron2 (the official script's first import fails).
    let script = t.path().join("train_net.py");
    std::fs::write(
        &script,
        "import sys\nprint(\"ModuleNotFoundError: No module named 'detectron2'\", file=sys.stderr)\nsys.exit(1)\n",
    )
    .unwrap();
    let params = format!(
        "annotations = {:?}\ntrain_net = {:?}\n",
        gt.display().to_string(),
        script.display().to_string()
    );
    let e = run_kind("detectron2-finetune", &params, &ins, 0, &t.path().join("b"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("has no detectron2") && e.contains("pip install"),
        "{e}"
    );
    // Missing annotations are named before anything runs.
    let params = format!(
        "annotations = {:?}\ntrain_net = {:?}\n",
        t.path().join("nope.json").display().to_string(),
        script.display().to_string()
    );
    let e = run_kind("detectron2-finetune", &params, &ins, 0, &t.path().join("c"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nope.json") && e.contains("data build coco2017"),
        "{e}"
    );
}

#[test]
fn bad_parameters_are_refused_by_key() {
    let (k, m) = refused("detectron2-finetune", "config = \"voc.yaml\"");
    assert_eq!(k, "config");
    assert!(m.contains("coco_R_50_C4_2x_moco.yaml"), "{m}");
    let (k, _) = refused("detectron2-finetune", "ims_per_batch = 6");
    assert_eq!(k, "ims_per_batch");
    let (k, _) = refused("detectron2-finetune", "steps = [200000]");
    assert_eq!(k, "steps");
    let (_, m) = refused("detectron2-finetune", "epochs = 3");
    assert!(m.contains("epochs"), "{m}");
}
