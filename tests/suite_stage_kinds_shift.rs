//! The `eval-bg-challenge` and `eval-shift` stage kinds, run through a `StageContext` built here:
//! - on a tiny synthetic `bg-challenge` set (each test slot bound to it, the variant taken from the slot),
//!   every variant's accuracy equals the direct library computation (synthetic variant → encoder → the
//!   L-BFGS sweep selected on train → the classifier's top-1), and `bg_gap` = mixed_same − mixed_rand;
//! - on a tiny built index (a `test` split and `<corruption>-<severity>` splits), each bound shift set's
//!   accuracy equals the library's, ImageNet-C-9 is the mean over corruptions of the mean over severities,
//!   and an unbound set has no metric and is listed as not bound;
//! - bad parameters are refused naming the key; a missing required slot, or an ImageNet-C split the build
//!   lacks, is named.
//! - the stage's fingerprint covers every ImageNet-C split it reads, not only the bound one.
mod stage_kinds_common;

use std::path::Path;
use std::sync::Arc;

use contracam::data::loader::{EvalTransform, IndexSource, Loader, LoaderConfig, Plan, Source};
use contracam::data::synth::{bg_challenge, BgVariant, SynthConfig};
use contracam::eval::encode::encode;
use contracam::eval::linear::{linear_eval, LinearClassifier, LinearEvalConfig};
use contracam::model::ContrastiveModel;
use contracam::suite::dataset::{DatasetHandle, DatasetSpec, SynthDataset, SynthForm};
use contracam::suite::registry::Registry;
use contracam::suite::stage::{Artefact, ArtefactKind, Input};
use stage_kinds_common::{index_input, inputs, refused, run_kind, tiny_model_file, Fixture};
use tch::{Device, Kind, Tensor};

fn tiny_synth() -> SynthConfig {
    SynthConfig {
        image_size: 24,
        crop_size: 16,
        num_classes: 2,
        num_backgrounds: 2,
        ..Default::default()
    }
}

fn synth_bgc(name: &str, seed: u64, count: usize) -> Input {
    let spec = DatasetSpec::Synth(SynthDataset {
        form: SynthForm::BgChallenge,
        split: name.into(),
        count,
        seed,
        synth: tiny_synth(),
    });
    Input::Dataset(Arc::new(
        DatasetHandle::resolve(name, spec, Path::new("/nonexistent")).unwrap(),
    ))
}

fn model_input(p: &Path) -> Input {
    Input::Artefact(Artefact {
        kind: ArtefactKind::ModelCheckpoint,
        path: p.into(),
        fingerprint: "fp-m".into(),
        producer: "m.model".into(),
    })
}

const PARAMS: &str =
    "image_size = 16\nbatch = 5\nlinear = { weight_decays = [1e-5, 1e-3, 1e-1], max_iter = 60 }\n";

fn sweep_cfg() -> LinearEvalConfig {
    LinearEvalConfig {
        weight_decays: vec![1e-5, 1e-3, 1e-1],
        max_iter: 60,
        ..Default::default()
    }
}

/// The classifier the protocol selects, straight from the library (no test set of its own).
fn direct_classifier(train: &(Tensor, Tensor), val: &(Tensor, Tensor)) -> (LinearClassifier, f64) {
    let d = train.0.size()[1];
    let no_x = Tensor::zeros([0, d], (Kind::Float, Device::Cpu));
    let no_y = Tensor::zeros([0], (Kind::Int64, Device::Cpu));
    let r = linear_eval(
        &train.0,
        &train.1,
        &val.0,
        &val.1,
        &no_x,
        &no_y,
        &sweep_cfg(),
    )
    .unwrap();
    (r.classifier.unwrap(), r.best_weight_decay)
}

fn read_report(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

const BG_SLOTS: [&str; 7] = [
    "test_original",
    "test_only_bg_b",
    "test_only_bg_t",
    "test_only_fg",
    "test_mixed_same",
    "test_mixed_rand",
    "test_mixed_next",
];

#[test]
fn bg_challenge_on_synth_equals_the_library_and_the_gap_is_same_minus_rand() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let weights = tiny_model_file(dir.path());
    let test = synth_bgc("bgc_test", 2, 12);
    let mut list = vec![
        ("model", model_input(&weights)),
        ("train", synth_bgc("bgc_train", 1, 20)),
    ];
    list.extend(BG_SLOTS.iter().map(|s| (*s, test.clone())));
    let out = dir.path().join("bgc");
    let r = run_kind("eval-bg-challenge", PARAMS, &inputs(list), 0, &out).unwrap();

    let model = ContrastiveModel::load(&weights, Device::Cpu).unwrap();
    let feats = |seed: u64, v: BgVariant, n: usize| {
        let set = bg_challenge(&tiny_synth(), seed, v, n);
        (
            encode(&model, &set.images_tensor(), 16, 5),
            set.labels_tensor(),
        )
    };
    let train = feats(1, BgVariant::Original, 20);
    // No val bound: the sweep selects on the training features.
    let (clf, wd) = direct_classifier(&train, &train);
    let want = |v: BgVariant| 100.0 * clf.accuracy(&feats(2, v, 12).0, &feats(2, v, 12).1);
    for (metric, v) in [
        ("original", BgVariant::Original),
        ("only_bg_b", BgVariant::OnlyBg),
        ("only_bg_t", BgVariant::OnlyBg),
        ("only_fg", BgVariant::OnlyFg),
        ("mixed_same", BgVariant::MixedSame),
        ("mixed_rand", BgVariant::MixedRand),
        ("mixed_next", BgVariant::MixedNext),
    ] {
        assert_eq!(r.metrics[metric], want(v), "{metric}");
    }
    assert_eq!(
        r.metrics["bg_gap"],
        r.metrics["mixed_same"] - r.metrics["mixed_rand"]
    );
    assert_eq!(r.metrics.len(), 8);
    // The variants are told apart (a classifier that scored every set alike would not test the mapping).
    let distinct: std::collections::BTreeSet<u64> =
        r.metrics.values().map(|v| v.to_bits()).collect();
    assert!(distinct.len() > 2, "{:?}", r.metrics);
    let rep = read_report(&out.join("bg_challenge.json"));
    assert_eq!(rep["bg_gap"].as_f64().unwrap(), r.metrics["bg_gap"]);
    assert_eq!(rep["probe"]["selected_on"], "train");
    assert_eq!(rep["probe"]["best_weight_decay"].as_f64().unwrap(), wd);
    assert_eq!(rep["variants"]["only_bg_t"]["synthetic_variant"], "only_bg");
    assert!(rep["variants"]["only_bg_t"]["note"]
        .as_str()
        .unwrap()
        .contains("ONLY-BG-T"));
    assert_eq!(rep["variants"]["mixed_rand"]["samples"], 12);

    // A missing required slot is named, before any features are computed.
    let mut list = vec![
        ("model", model_input(&weights)),
        ("train", synth_bgc("bgc_train", 1, 20)),
    ];
    list.extend(BG_SLOTS[..6].iter().map(|s| (*s, test.clone())));
    let e = run_kind(
        "eval-bg-challenge",
        PARAMS,
        &inputs(list),
        0,
        &dir.path().join("x"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("test_mixed_next") && e.contains("not bound"),
        "{e}"
    );
}

const SPLITS: [(&str, u32, u32); 6] = [
    ("train", 16, 0),
    ("test", 8, 100),
    ("fog-1", 6, 200),
    ("fog-2", 6, 300),
    ("snow-1", 6, 400),
    ("snow-2", 6, 500),
];

/// `toy` with the splits above, each in its own folder (`img/<split>/c<k>/s<i>.png`).
fn fixture() -> Fixture {
    stage_kinds_common::fixture(&SPLITS, true)
}

/// Features and labels of a split as the protocol computes them, straight from the library.
fn direct_features(model: &ContrastiveModel, f: &Fixture, split: &str) -> (Tensor, Tensor) {
    let source: Arc<dyn Source> = Arc::new(IndexSource::open(&f.data, "toy", split).unwrap());
    let loader = Loader::new(
        source,
        Plan::eval(EvalTransform::linear_eval(16)),
        LoaderConfig {
            workers: 0,
            ..LoaderConfig::eval(5)
        },
    )
    .unwrap();
    let (mut xs, mut ys) = (vec![], vec![]);
    for b in loader.epoch(0) {
        let b = b.unwrap();
        xs.push(encode(model, &b.view(0), 16, 5));
        ys.push(b.class_labels(Device::Cpu).unwrap());
    }
    (Tensor::cat(&xs, 0), Tensor::cat(&ys, 0))
}

#[test]
fn shift_sets_on_a_built_index_equal_the_library_and_unbound_sets_have_no_metric() {
    tch::set_num_threads(1);
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let weights = tiny_model_file(dir.path());
    let params = format!(
        "{PARAMS}imagenet_c = {{ corruptions = [\"fog\", \"snow\"], severities = [1, 2] }}\n"
    );
    let base = || {
        vec![
            ("model", model_input(&weights)),
            ("train", index_input(&f, "train")),
            ("val", index_input(&f, "test")),
            ("imagenet_9", index_input(&f, "test")),
            ("imagenet_r_9", index_input(&f, "snow-2")),
            // Any split of the build names it; the stage reads the splits params.imagenet_c lists.
            ("imagenet_c_9", index_input(&f, "fog-1")),
        ]
    };
    let out = dir.path().join("shift");
    let r = run_kind("eval-shift", &params, &inputs(base()), 0, &out).unwrap();

    let model = ContrastiveModel::load(&weights, Device::Cpu).unwrap();
    let feats = |s: &str| direct_features(&model, &f, s);
    let (clf, wd) = direct_classifier(&feats("train"), &feats("test"));
    let acc = |s: &str| {
        let (x, y) = feats(s);
        100.0 * clf.accuracy(&x, &y)
    };
    assert_eq!(r.metrics["imagenet_9"], acc("test"));
    assert_eq!(r.metrics["imagenet_r_9"], acc("snow-2"));
    let c = ((acc("fog-1") + acc("fog-2")) / 2.0 + (acc("snow-1") + acc("snow-2")) / 2.0) / 2.0;
    assert_eq!(r.metrics["imagenet_c_9"], c);
    assert_eq!(r.metrics.len(), 3, "{:?}", r.metrics);
    assert!(!r.metrics.contains_key("imagenet_sketch_9"));
    let rep = read_report(&out.join("shift.json"));
    assert_eq!(rep["probe"]["selected_on"], "val");
    assert_eq!(rep["probe"]["best_weight_decay"].as_f64().unwrap(), wd);
    assert_eq!(rep["probe"]["num_classes"], 2);
    for unbound in ["imagenet_sketch_9", "stylized_imagenet_9"] {
        assert_eq!(rep["sets"][unbound]["dataset"], "not bound", "{unbound}");
        assert!(rep["sets"][unbound]["accuracy"].is_null());
    }
    let cs = &rep["sets"]["imagenet_c_9"];
    assert_eq!(cs["samples"], 24);
    assert_eq!(cs["splits"]["fog-2"].as_f64().unwrap(), acc("fog-2"));
    assert_eq!(
        cs["corruptions"]["snow"].as_f64().unwrap(),
        (acc("snow-1") + acc("snow-2")) / 2.0
    );

    // A corruption the build lacks names the split and the slot.
    let e = run_kind(
        "eval-shift",
        &format!(
            "{PARAMS}imagenet_c = {{ corruptions = [\"fog\", \"rain\"], severities = [1] }}\n"
        ),
        &inputs(base()),
        0,
        &dir.path().join("y"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("imagenet_c_9") && e.contains("rain-1"), "{e}");

    // A missing required slot is named.
    let mut no_train = base();
    no_train.retain(|(k, _)| *k != "train");
    let e = run_kind(
        "eval-shift",
        PARAMS,
        &inputs(no_train),
        0,
        &dir.path().join("z"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("'train'") && e.contains("not bound"), "{e}");
}

#[test]
fn bad_parameters_are_refused_naming_the_key_and_the_paper_suites_parse() {
    for (kind, params, key) in [
        (
            "eval-shift",
            "imagenet_c = { severities = [6] }",
            "imagenet_c.severities",
        ),
        (
            "eval-shift",
            "imagenet_c = { severities = [] }",
            "imagenet_c.severities",
        ),
        (
            "eval-shift",
            "imagenet_c = { corruptions = [] }",
            "imagenet_c.corruptions",
        ),
        (
            "eval-shift",
            "imagenet_c = { corruptions = [\"fog\", \"fog\"] }",
            "imagenet_c.corruptions",
        ),
        (
            "eval-shift",
            "imagenet_c = { corruptions = [\"a/b\"] }",
            "imagenet_c.corruptions",
        ),
        ("eval-shift", "linear = { max_iter = 0 }", "linear.max_iter"),
        ("eval-shift", "batch = 0", "batch"),
        ("eval-shift", "classifier = \"sgd\"", "classifier"),
        ("eval-bg-challenge", "linear = { lr = 0.0 }", "linear.lr"),
        ("eval-bg-challenge", "image_size = 0", "image_size"),
        ("eval-bg-challenge", "classifier = \"sgd\"", "classifier"),
    ] {
        let (k, msg) = refused(kind, params);
        assert_eq!(k, key, "{kind} {params}: {msg}");
    }
    // Unknown keys, at the top and nested.
    let (_, msg) = refused("eval-shift", "imagenet_c = { level = 3 }");
    assert!(msg.contains("level"), "{msg}");
    let (_, msg) = refused("eval-bg-challenge", "trials = 3");
    assert!(msg.contains("trials"), "{msg}");

    // Every key the paper suites give these kinds parses.
    let r = Registry::builtin();
    for (kind, table) in [
        ("eval-shift", 6),
        ("eval-bg-challenge", 7),
        ("eval-shift", 8),
    ] {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("suites/paper/table{table}.toml"));
        let doc: toml::Value = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let k = r.get(kind).and_then(|k| k.implemented()).unwrap();
        let mut n = 0;
        for st in doc["stages"].as_table().unwrap().values() {
            if st["kind"].as_str() == Some(kind) {
                k.parse(st["params"].clone())
                    .unwrap_or_else(|e| panic!("table{table}: {} {}", e.key, e.msg));
                n += 1;
            }
        }
        assert!(n > 0, "table{table} has no {kind} stage");
    }
    // The declarations the suites bind: metric names and slots.
    let shift = r.get("eval-shift").unwrap();
    let names: Vec<_> = shift.metrics().iter().map(|m| m.name).collect();
    assert_eq!(
        names,
        [
            "imagenet_9",
            "imagenet_sketch_9",
            "stylized_imagenet_9",
            "imagenet_r_9",
            "imagenet_c_9"
        ]
    );
    let bgc = r.get("eval-bg-challenge").unwrap();
    let names: Vec<_> = bgc.metrics().iter().map(|m| m.name).collect();
    assert_eq!(
        names,
        [
            "original",
            "only_bg_b",
            "only_bg_t",
            "only_fg",
            "mixed_same",
            "mixed_rand",
            "mixed_next",
            "bg_gap"
        ]
    );
    assert!(bgc
        .inputs()
        .iter()
        .filter(|s| s.name.starts_with("test_"))
        .all(|s| !s.optional));
    assert!(shift
        .inputs()
        .iter()
        .filter(|s| !["model", "train"].contains(&s.name))
        .all(|s| s.optional));
}

/// The eval-shift stage's fingerprint in a suite binding `imagenet_c_9` to `fog-1` of the `toy` build.
fn shift_fingerprint(f: &Fixture, dir: &Path) -> String {
    use contracam::suite::golden::paper::PaperGoldens;
    use contracam::suite::graph::{GraphContext, GraphSuite};
    let text = "name = \"shiftfp\"\nversion = 1\n\
        [datasets.train]\nmanifest = \"toy\"\nsplit = \"train\"\n\
        [datasets.c9]\nmanifest = \"toy\"\nsplit = \"fog-1\"\n\
        [stages.weights]\nkind = \"import\"\n\
        params = { source = \"w.pth\", sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\" }\n\
        [stages.shift]\nkind = \"eval-shift\"\n\
        inputs = { model = \"stages.weights.model\", train = \"datasets.train\", imagenet_c_9 = \"datasets.c9\" }\n\
        params = { imagenet_c = { corruptions = [\"fog\", \"snow\"], severities = [1, 2] } }\n";
    let path = dir.join("shiftfp.toml");
    std::fs::write(&path, text).unwrap();
    let registry = Registry::builtin();
    let paper = PaperGoldens::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/paper"))
        .unwrap();
    let ctx = GraphContext {
        registry: &registry,
        paper: &paper,
        manifests: None,
    };
    let suite = GraphSuite::load(&path, &ctx).unwrap();
    let datasets = contracam::suite::graph_run::resolve_datasets(&suite, &f.data, 0).unwrap();
    let fps = datasets
        .iter()
        .map(|(k, h)| (k.clone(), h.fingerprint.clone()))
        .collect();
    let all = contracam::suite::graph_run::fingerprints(
        &suite,
        &registry,
        &fps,
        &f.data,
        None,
        Device::Cpu,
    );
    all["shift"].clone().expect("the stage has a fingerprint")
}

#[test]
fn rebuilding_any_imagenet_c_split_the_stage_reads_changes_its_fingerprint() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let before = shift_fingerprint(&f, dir.path());
    assert_eq!(before, shift_fingerprint(&f, dir.path()), "deterministic");
    // Rebuild snow-2 (not the bound split fog-1) with one sample fewer.
    let index = f.data.join("toy/index/snow-2.jsonl");
    let text = std::fs::read_to_string(&index).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.pop();
    std::fs::write(&index, lines.join("\n") + "\n").unwrap();
    let after = shift_fingerprint(&f, dir.path());
    assert_ne!(before, after, "snow-2 is read, so it is fingerprinted");
    // A split of the build the params do not list is not read and does not count.
    let other = f.data.join("toy/index/test.jsonl");
    let text = std::fs::read_to_string(&other).unwrap();
    std::fs::write(&other, text.replacen("100", "101", 1)).unwrap();
    assert_eq!(after, shift_fingerprint(&f, dir.path()));
}
