//! Profiles and `--set` of graph suites: a profile merges its overrides key by key (kinds, then stages),
//! limits built splits and replaces seeds; the file as written is `paper`; unknown profiles, stages, datasets
//! and kinds are refused naming the file and the key; `--set` applies after the profile; a golden blessed
//! at one profile refuses another.
use std::path::Path;

use contracam::suite::dataset::DatasetSpec;
use contracam::suite::golden::paper::{PaperGoldens, DIR};
use contracam::suite::golden::{Golden, GoldenError};
use contracam::suite::graph::{GraphContext, GraphError, GraphSuite, Selection};
use contracam::suite::registry::Registry;

const SUITE: &str = r#"
name = "profiled"
version = 1
seeds = [0, 1, 2]
[datasets.coco_val]
manifest = "coco2017"
split = "val"
[stages.pre_a]
kind = "pretrain"
inputs = { data = "datasets.coco_val" }
params = { method = "moco", arch = "resnet50", epochs = 800, batch = 256 }
[stages.pre_b]
kind = "pretrain"
inputs = { data = "datasets.coco_val" }
params = { method = "byol", arch = "resnet50", epochs = 800, batch = 256 }
[stages.loc]
kind = "localize"
inputs = { model = "stages.pre_a.model", data = "datasets.coco_val" }
params = { method = "contracam", cam_iters = 10 }

[profiles.ci]
about = "tiny"
seeds = [0]
[profiles.ci.datasets.coco_val]
limit = 3
[profiles.ci.kinds.pretrain]
epochs = 1
batch = 8
[profiles.ci.stages.pre_b.params]
epochs = 2
[profiles.ci.stages.loc.params]
cam_iters = 2
input_size = 32
"#;

fn parse(text: &str, sel: &Selection) -> Result<GraphSuite, GraphError> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let paper = PaperGoldens::load_dir(&root.join(DIR)).unwrap_or_else(|e| panic!("{e}"));
    let registry = Registry::builtin();
    GraphSuite::parse_with(
        text,
        Path::new("suites/profiled.toml"),
        &GraphContext::with_builtin_manifests(&registry, &paper),
        sel,
    )
}

fn sel(profile: Option<&str>, sets: &[&str]) -> Selection {
    Selection {
        profile: profile.map(String::from),
        sets: sets.iter().map(|s| s.to_string()).collect(),
    }
}

fn limit(s: &GraphSuite) -> Option<usize> {
    match &s.datasets["coco_val"] {
        DatasetSpec::Index(i) => i.limit,
        DatasetSpec::Synth(_) => panic!("not an index dataset"),
    }
}

#[test]
fn the_file_as_written_is_paper_and_ci_overrides_key_by_key() {
    let paper = parse(SUITE, &Selection::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(paper.profile, "paper");
    assert_eq!(paper.profiles, ["paper", "ci"]);
    assert_eq!(paper.stages["pre_a"].params["epochs"], 800);
    assert_eq!(paper.stages["pre_a"].seeds, [0, 1, 2]);
    assert_eq!(limit(&paper), None);
    assert!(!paper.config.contains_key("profiles"));

    let ci = parse(SUITE, &sel(Some("ci"), &[])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ci.profile, "ci");
    // The kind's override reaches every pretrain stage; a stage's own override wins over the kind's.
    assert_eq!(ci.stages["pre_a"].params["epochs"], 1);
    assert_eq!(ci.stages["pre_b"].params["epochs"], 2);
    assert_eq!(ci.stages["pre_b"].params["batch"], 8);
    // Keys the profile does not name stay as written.
    assert_eq!(ci.stages["pre_b"].params["method"], "byol");
    assert_eq!(ci.stages["loc"].params["cam_iters"], 2);
    assert_eq!(ci.stages["loc"].params["input_size"], 32);
    assert_eq!(ci.stages["pre_a"].seeds, [0]);
    assert_eq!(limit(&ci), Some(3));
    assert_eq!(
        ci.config["datasets"]["coco_val"]["limit"].as_integer(),
        Some(3)
    );
}

#[test]
fn set_applies_after_the_profile_and_is_recorded() {
    let s = parse(
        SUITE,
        &sel(
            Some("ci"),
            &["stages.pre_a.params.epochs=5", "datasets.coco_val.limit=2"],
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.stages["pre_a"].params["epochs"], 5);
    assert_eq!(s.stages["pre_b"].params["epochs"], 2);
    assert_eq!(limit(&s), Some(2));
    assert_eq!(s.sets.len(), 2);
    // At paper too.
    let p = parse(SUITE, &sel(None, &["seeds=[4]"])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (p.profile.as_str(), &p.stages["loc"].seeds[..]),
        ("paper", &[4][..])
    );
}

fn refused(text: &str, sel: &Selection, key: &str, words: &[&str]) {
    let e = match parse(text, sel) {
        Ok(_) => panic!("accepted; expected a refusal at {key}"),
        Err(e) => e,
    };
    let msg = e.to_string();
    assert!(msg.starts_with("suites/profiled.toml: "), "{msg}");
    assert_eq!(e.key(), key, "{msg}");
    for w in words {
        assert!(msg.contains(w), "'{w}' not in: {msg}");
    }
}

#[test]
fn unknown_profiles_stages_datasets_kinds_and_keys_are_refused_by_name() {
    refused(
        SUITE,
        &sel(Some("smoke"), &[]),
        "profiles",
        &["no profile 'smoke'", "paper, ci"],
    );
    let with = |extra: &str| format!("{SUITE}\n{extra}");
    refused(
        &with("[profiles.ci.stages.nope.params]\nepochs = 1"),
        &sel(Some("ci"), &[]),
        "profiles.ci.stages.nope",
        &["no stage 'nope'", "pre_a"],
    );
    refused(
        &with("[profiles.ci.datasets.imagenet]\nlimit = 1"),
        &sel(Some("ci"), &[]),
        "profiles.ci.datasets.imagenet",
        &["no dataset 'imagenet'", "coco_val"],
    );
    refused(
        &with("[profiles.ci.kinds.linear-eval]\nbatch = 1"),
        &sel(Some("ci"), &[]),
        "profiles.ci.kinds.linear-eval",
        &["no stage", "localize, pretrain"],
    );
    // A key the kind does not take is refused as if written in the file, saying which profile put it there.
    refused(
        &with("[profiles.ci.kinds.localize]\niters = 1"),
        &sel(Some("ci"), &[]),
        "stages.loc.params.iters",
        &["unknown field", "profile 'ci'"],
    );
    refused(
        &with("[profiles.paper]\nseeds = [1]"),
        &Selection::default(),
        "profiles.paper",
        &["as written"],
    );
    refused(
        &with("[profiles.ci.oops]\nx = 1"),
        &Selection::default(),
        "profiles.ci.oops",
        &["unknown field"],
    );
    refused(
        SUITE,
        &sel(Some("ci"), &["stages.pre_c.params.epochs=1"]),
        "--set stages.pre_c.params.epochs=1",
        &["no stage 'pre_c'"],
    );
    refused(
        SUITE,
        &sel(None, &["stages.pre_a.params.epochs=many"]),
        "stages.pre_a.params.epochs",
        &["--set stages.pre_a.params.epochs=many"],
    );
    refused(
        SUITE,
        &sel(None, &["datasets.coco_val.limit=0"]),
        "datasets.coco_val.limit",
        &["at least 1"],
    );
}

#[test]
fn a_limit_on_a_synthetic_set_is_refused() {
    let text = r#"
name = "s"
version = 1
[datasets.scenes]
synth = { form = "scenes", split = "train", count = 4 }
limit = 2
[stages.c]
kind = "center-box"
inputs = { data = "datasets.scenes" }
"#;
    let e = parse(text, &Selection::default()).unwrap_err();
    assert_eq!(e.key(), "datasets.scenes.limit", "{e}");
    assert!(e.to_string().contains("synth.count"), "{e}");
}

#[test]
fn a_golden_judges_only_the_profile_it_was_blessed_at() {
    let dir = tempfile::tempdir().unwrap();
    let golden = |profile: &str| {
        let p = dir.path().join(format!("{profile}.toml"));
        let line = if profile == "none" {
            String::new()
        } else {
            format!("profile = \"{profile}\"\n")
        };
        std::fs::write(
            &p,
            format!(
                "suite = \"profiled\"\nsuite_version = 1\n[provenance]\nblessed_by = \"t\"\nblessed_at = \"now\"\n\
                 seed = 0\ncommit = \"c\"\nmachine = \"m\"\nresults_sha256 = \"0\"\n{line}[metrics]\n"
            ),
        )
        .unwrap();
        (Golden::read(&p).unwrap_or_else(|e| panic!("{e}")), p)
    };
    let (ci, p) = golden("ci");
    ci.check_profile(&p, "ci").unwrap();
    let e = ci.check_profile(&p, "paper").unwrap_err();
    assert!(matches!(e, GoldenError::WrongProfile { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains("profile 'ci'")
            && msg.contains("profile 'paper'")
            && msg.contains("--profile ci"),
        "{msg}"
    );
    // A golden from before profiles is the file as written.
    let (old, p) = golden("none");
    old.check_profile(&p, "paper").unwrap();
    assert!(old.check_profile(&p, "ci").is_err());
}

#[test]
fn the_cli_names_an_unknown_profile_and_validates_every_profile() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let suite = root.join("suites/paper/table3.toml");
    let run = |args: &[&str]| {
        assert_cmd::Command::cargo_bin("contracam")
            .unwrap()
            .current_dir(root)
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(&["suite", "validate", suite.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("profiles ok: paper, ci"),
        "{out}"
    );
    let o = run(&[
        "suite",
        "validate",
        suite.to_str().unwrap(),
        "--profile",
        "tiny",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("table3.toml")
            && err.contains("no profile 'tiny'")
            && err.contains("paper, ci"),
        "{err}"
    );
    let o = run(&[
        "suite",
        "plan",
        suite.to_str().unwrap(),
        "--profile",
        "ci",
        "--set",
        "stages.moco_imagenet.params.sha256=ab",
        "--data-dir",
        "/nonexistent",
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // The hash is refused by the kind's own check: --set goes through validation like the file.
    assert!(!o.status.success() && text.contains("sha256"), "{text}");
    let o = run(&[
        "suite",
        "plan",
        suite.to_str().unwrap(),
        "--profile",
        "ci",
        "--data-dir",
        "/nonexistent",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && out.contains("profile ci"), "{out}");
    // The smoke form has no profiles: the flag is refused, not ignored.
    let o = run(&["suite", "validate", "suites/smoke.toml", "--profile", "ci"]);
    assert!(!o.status.success());
}
