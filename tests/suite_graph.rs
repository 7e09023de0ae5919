//! Graph suites: every paper suite under suites/paper validates, binds each cell of its table exactly once,
//! and reports the planned stage kinds it still needs by name; broken graphs are refused with an error that
//! names the file and the key path.
use std::path::{Path, PathBuf};

use contracam::suite::golden::paper::{PaperGoldens, DIR};
use contracam::suite::graph::{is_graph_suite, GraphContext, GraphError, GraphSuite, InputRef};
use contracam::suite::registry::Registry;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn paper() -> PaperGoldens {
    match PaperGoldens::load_dir(&root().join(DIR)) {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    }
}

fn load(path: &Path, registry: &Registry, paper: &PaperGoldens) -> Result<GraphSuite, GraphError> {
    GraphSuite::load(path, &GraphContext::with_builtin_manifests(registry, paper))
}

fn paper_suite(n: u32) -> PathBuf {
    root().join(format!("suites/paper/table{n}.toml"))
}

/// The planned kinds each table's suite needs, from the stages it declares (kept by hand so a kind that
/// disappears from a suite, or lands, shows here).
const MISSING: [(u32, &[&str]); 8] = [
    (1, &[]),
    (2, &[]),
    (3, &[]),
    (4, &[]),
    (5, &[]),
    (6, &[]),
    (7, &[]),
    (8, &[]),
];

#[test]
fn every_paper_suite_validates_and_binds_each_cell_of_its_table_once() {
    let registry = Registry::builtin();
    let paper = paper();
    let dir = root().join("suites/paper");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 8, "{files:?}");
    for (n, missing) in MISSING {
        let path = paper_suite(n);
        assert!(files.contains(&path), "{} missing", path.display());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(is_graph_suite(&text));
        let suite = load(&path, &registry, &paper).unwrap_or_else(|e| panic!("{e}"));
        let table = paper.table(n).unwrap();
        // Exactly once: duplicates are refused at load, so the counts and the empty remainder say it.
        assert!(
            suite.binds.iter().all(|b| b.table == n),
            "table{n}: binds another table"
        );
        assert_eq!(suite.binds.len(), table.cells.len(), "table{n}");
        let unbound: Vec<_> = suite
            .unbound_cells(&paper, n)
            .iter()
            .map(|c| format!("{} | {}", c.row, c.column))
            .collect();
        assert!(unbound.is_empty(), "table{n} unbound: {unbound:?}");
        assert_eq!(suite.missing_kinds(), missing, "table{n}");
        // The order puts every stage after the stages it reads.
        assert_eq!(suite.order.len(), suite.stages.len());
        for (i, name) in suite.order.iter().enumerate() {
            for r in suite.stages[name].inputs.values() {
                if let InputRef::Stage { stage, .. } = r {
                    let j = suite.order.iter().position(|s| s == stage).unwrap();
                    assert!(j < i, "table{n}: {name} before its input {stage}");
                }
            }
        }
        // The golden files name no metric yet; where they do, it must be the bind's.
        for b in &suite.binds {
            if let Some(m) = &table.cell(&b.row, &b.column).unwrap().metric {
                assert_eq!(m, &format!("{}.{}", b.stage, b.metric));
            }
        }
    }
}

/// The `ci` profile of every paper suite validates and is the same experiment, reduced: the same stages,
/// graph and bound cells; every built split limited to a few samples; training 1-2 epochs at a small batch
/// and input; ContraCAM at most 2 iterations on small inputs.
#[test]
fn every_paper_suite_has_a_tiny_ci_profile_of_the_same_graph() {
    use contracam::suite::dataset::DatasetSpec;
    use contracam::suite::graph::Selection;
    let registry = Registry::builtin();
    let paper = paper();
    let ctx = GraphContext::with_builtin_manifests(&registry, &paper);
    for n in 1..=8 {
        let path = paper_suite(n);
        let full = GraphSuite::load(&path, &ctx).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(full.profile, "paper");
        assert!(
            full.profiles.contains(&"ci".to_string()),
            "table{n}: {:?}",
            full.profiles
        );
        let ci = GraphSuite::load_with(&path, &ctx, &Selection::profile("ci"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ci.profile, "ci");
        assert_eq!(ci.order, full.order, "table{n}: same graph");
        assert_eq!(ci.binds, full.binds, "table{n}: same cells");
        assert_eq!(ci.missing_kinds(), full.missing_kinds(), "table{n}");
        for (id, d) in &ci.datasets {
            if let DatasetSpec::Index(i) = d {
                assert!(
                    i.limit.is_some_and(|l| l <= 16),
                    "table{n}: datasets.{id} is not limited at ci: {:?}",
                    i.limit
                );
            }
        }
        for (id, st) in &ci.stages {
            let p = &st.params;
            let at_most = |key: &str, max: i64| {
                if let Some(v) = p.get(key).filter(|v| !v.is_null()) {
                    assert!(
                        v.as_i64().is_some_and(|v| v <= max),
                        "table{n}: stages.{id}.params.{key} = {v} at ci"
                    );
                }
            };
            match st.kind.as_str() {
                "pretrain" | "train-classifier" => {
                    at_most("epochs", 2);
                    at_most("batch", 16);
                    at_most("image_size", 64);
                    assert!(
                        p.get("epochs").is_some(),
                        "table{n}: {id} keeps the paper's epochs"
                    );
                }
                "localize" => {
                    at_most("input_size", 64);
                    at_most("cam_iters", 2);
                    at_most("batch_size", 8);
                    if p["method"] == "contracam" {
                        // Unset means the official 10.
                        assert!(!p["cam_iters"].is_null(), "table{n}: {id} at 10 iterations");
                    }
                }
                "linear-eval" | "eval-shift" => {
                    at_most("image_size", 64);
                    at_most("batch", 16);
                }
                "detectron2-finetune" => at_most("max_iter", 100),
                _ => {}
            }
            if st.kind == "eval-shift" {
                let c = &p["imagenet_c"];
                let splits = c["corruptions"].as_array().map_or(0, |a| a.len())
                    * c["severities"].as_array().map_or(0, |a| a.len());
                assert!(
                    splits <= 2,
                    "table{n}: {id} evaluates {splits} ImageNet-C splits at ci"
                );
            }
        }
        // The paper profile is untouched by the ci one.
        for st in full.stages.values().filter(|s| s.kind == "pretrain") {
            assert!(st.params["epochs"].as_i64().unwrap() >= 800, "table{n}");
        }
    }
}

#[test]
fn the_smoke_suite_is_not_a_graph_suite() {
    let text = std::fs::read_to_string(root().join("suites/smoke.toml")).unwrap();
    assert!(!is_graph_suite(&text));
}

const BASE: &str = r#"
name = "broken"
version = 1
[datasets.coco_val]
manifest = "coco2017"
split = "val"
[stages.pre]
kind = "pretrain"
inputs = { data = "datasets.coco_val" }
params = { method = "moco", epochs = 800 }
[stages.loc]
kind = "localize"
inputs = { model = "stages.pre.model", data = "datasets.coco_val" }
[stages.ev]
kind = "eval-masks"
inputs = { masks = "stages.loc.masks", data = "datasets.coco_val" }
[stages.centre]
kind = "center-box"
inputs = { data = "datasets.coco_val" }
params = { side = 0.5 }
[[bind]]
table = 1
row = "ContraCAM (ours)"
column = "COCO"
metric = "stages.ev.miou"
"#;

fn parse(text: &str) -> Result<GraphSuite, GraphError> {
    let registry = Registry::builtin();
    let paper = paper();
    GraphSuite::parse(
        text,
        Path::new("suites/broken.toml"),
        &GraphContext::with_builtin_manifests(&registry, &paper),
    )
}

/// Refused, with the file, the key path and every `words` in the message.
fn refused(text: &str, key: &str, words: &[&str]) {
    let e = match parse(text) {
        Ok(_) => panic!("accepted a suite that should fail at {key}"),
        Err(e) => e,
    };
    let msg = e.to_string();
    assert!(msg.starts_with("suites/broken.toml: "), "{msg}");
    assert_eq!(e.key(), key, "{msg}");
    for w in words {
        assert!(msg.contains(w), "'{w}' not in: {msg}");
    }
}

#[test]
fn the_base_graph_is_valid() {
    let s = parse(BASE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.order, ["centre", "pre", "loc", "ev"]);
    assert!(s.missing_kinds().is_empty(), "{:?}", s.missing_kinds());
    // The implemented kind's params are parsed and resolved; planned kinds keep theirs as written.
    assert_eq!(s.stages["centre"].params["side"], 0.5);
    assert!(s.stages["centre"].implemented);
    assert_eq!(s.stages["pre"].params["epochs"], 800);
    assert_eq!(s.stages["pre"].seeds, [0]);
}

#[test]
fn a_cycle_is_refused_and_named() {
    let text = BASE.replace(
        r#"inputs = { data = "datasets.coco_val" }
params = { method"#,
        r#"inputs = { data = "datasets.coco_val", boxes = "stages.loc.boxes" }
params = { method"#,
    );
    assert_ne!(text, BASE);
    refused(&text, "stages.pre.inputs", &["cycle", "pre → loc → pre"]);
}

#[test]
fn a_dangling_reference_is_refused() {
    refused(
        &BASE.replace("stages.pre.model", "stages.nope.model"),
        "stages.loc.inputs.model",
        &["'stages.nope.model'", "no declared stage 'nope'"],
    );
    refused(
        &BASE.replace("stages.pre.model", "stages.pre.weights"),
        "stages.loc.inputs.model",
        &["no output 'weights'"],
    );
    refused(
        &BASE.replace(
            r#"masks = "stages.loc.masks", data = "datasets.coco_val""#,
            r#"masks = "stages.loc.masks", data = "datasets.coco_test""#,
        ),
        "stages.ev.inputs.data",
        &["no declared dataset", "coco_val"],
    );
}

#[test]
fn an_input_of_the_wrong_artefact_kind_is_refused() {
    refused(
        &BASE.replace(
            r#"masks = "stages.loc.masks""#,
            r#"masks = "stages.loc.boxes""#,
        ),
        "stages.ev.inputs.masks",
        &["box-file", "masks-dir"],
    );
    refused(
        &BASE.replace(
            r#"masks = "stages.loc.masks""#,
            r#"masks = "datasets.coco_val""#,
        ),
        "stages.ev.inputs.masks",
        &["dataset", "masks-dir"],
    );
}

#[test]
fn unknown_kinds_slots_and_missing_inputs_are_refused() {
    refused(
        &BASE.replace(r#"kind = "pretrain""#, r#"kind = "pretrian""#),
        "stages.pre.kind",
        &["unknown stage kind 'pretrian'", "pretrain"],
    );
    refused(
        &BASE.replace(
            r#"inputs = { masks = "stages.loc.masks", data"#,
            r#"inputs = { mask = "stages.loc.masks", data"#,
        ),
        "stages.ev.inputs.mask",
        &["no input slot 'mask'", "masks"],
    );
    refused(
        &BASE.replace(
            r#"masks = "stages.loc.masks", data = "datasets.coco_val""#,
            r#"masks = "stages.loc.masks""#,
        ),
        "stages.ev.inputs",
        &["missing required input 'data'"],
    );
}

#[test]
fn unknown_metrics_and_missing_cells_are_refused() {
    refused(
        &BASE.replace("stages.ev.miou", "stages.ev.mIoU"),
        "bind[0].metric",
        &["no metric 'mIoU'", "miou"],
    );
    refused(
        &BASE.replace(r#"column = "COCO""#, r#"column = "COCO-2017""#),
        "bind[0]",
        &["table 1", "'ContraCAM (ours)'", "'COCO-2017'"],
    );
    refused(
        &BASE.replace("table = 1", "table = 9"),
        "bind[0].table",
        &["no paper table 9"],
    );
    let twice = format!(
        "{BASE}[[bind]]\ntable = 1\nrow = \"ContraCAM (ours)\"\ncolumn = \"COCO\"\nmetric = \"stages.centre.miou\"\n"
    );
    refused(&twice, "bind[1]", &["already bound by bind[0]"]);
}

#[test]
fn unknown_keys_and_bad_params_are_refused() {
    refused(
        &BASE.replace("params = { method", "parms = { method"),
        "stages.pre.parms",
        &["unknown field `parms`"],
    );
    refused(
        &format!("colour = 1\n{BASE}"),
        "colour",
        &["unknown field `colour`"],
    );
    // Implemented kinds read their params with the kind's typed parameters.
    refused(
        &BASE.replace("side = 0.5", "sides = 0.5"),
        "stages.centre.params.sides",
        &["unknown field `sides`"],
    );
    refused(
        &BASE.replace("side = 0.5", "side = 2.0"),
        "stages.centre.params.side",
        &["(0, 1]"],
    );
    refused(
        &BASE.replace(r#"manifest = "coco2017""#, r#"manifest = "coco2071""#),
        "datasets.coco_val.manifest",
        &["no dataset manifest named 'coco2071'"],
    );
    refused(
        &BASE.replace("split = \"val\"\n", ""),
        "datasets.coco_val.split",
        &["needs a split"],
    );
}

#[test]
fn a_file_that_cannot_be_read_names_itself() {
    let registry = Registry::builtin();
    let paper = paper();
    let missing = root().join("suites/paper/table0.toml");
    let e = load(&missing, &registry, &paper).unwrap_err().to_string();
    assert!(e.contains("table0.toml"), "{e}");
}

#[test]
fn suite_validate_dispatches_a_graph_suite_and_names_the_missing_kinds() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_contracam"))
        .args(["suite", "validate"])
        .arg(paper_suite(4))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("suite table4 v1 ok:") && stdout.contains("84 paper cells bound"),
        "{stdout}"
    );
    let order = stdout
        .lines()
        .find_map(|l| l.strip_prefix("order: "))
        .unwrap_or_else(|| panic!("no order line: {stdout}"));
    assert_eq!(order.split(", ").count(), 101, "{order}");
    assert!(
        order.starts_with("byol_r18, byol_r50, cam_byol_r18, "),
        "{order}"
    );
    assert!(stdout.contains("missing kinds: none"), "{stdout}");
    // A broken graph suite fails with the file and key; a --golden of another suite is refused.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, BASE.replace("stages.ev.miou", "stages.ev.mIoU")).unwrap();
    let validate = |cwd: &Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_contracam"))
            .current_dir(cwd)
            .args(["suite", "validate"])
            .arg(&broken)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // From the repository root its paper goldens are found; from elsewhere there are none.
    let stderr = validate(root());
    assert!(
        stderr.contains(&format!("{}: bind[0].metric: ", broken.display()))
            && stderr.contains("no metric 'mIoU'"),
        "{stderr}"
    );
    let stderr = validate(dir.path());
    assert!(stderr.contains("no golden/paper directory"), "{stderr}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_contracam"))
        .current_dir(root())
        .args(["suite", "validate", "--golden", "golden/smoke.toml"])
        .arg(paper_suite(1))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("golden/smoke.toml") && stderr.contains("table1"),
        "{stderr}"
    );
}

#[test]
fn every_planned_declaration_passes_the_registry_checks() {
    // `Registry::builtin` takes the plans as they are; `plan` checks slot, output and metric names.
    for p in contracam::suite::stages::planned() {
        let kind = p.kind;
        if let Err(e) = Registry::default().plan(p) {
            panic!("{kind}: {e}");
        }
    }
}

#[test]
fn synthetic_datasets_are_read_as_the_dataset_layer_does() {
    let synth = BASE.replace(
        "[datasets.coco_val]\nmanifest = \"coco2017\"\nsplit = \"val\"\n",
        "[datasets.coco_val]\nsynth = { form = \"scenes\", split = \"test\", count = 16 }\n",
    );
    assert_ne!(synth, BASE);
    let s = parse(&synth).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.datasets["coco_val"].declared_len(), Some(16));
    refused(
        &synth.replace("count = 16", "count = 0"),
        "datasets.coco_val.synth.count",
        &["at least 1"],
    );
    refused(
        &synth.replace("synth = {", "manifest = \"coco2017\"\nsynth = {"),
        "datasets.coco_val.synth",
        &["not both"],
    );
}
