//! Outputs never overwrite inputs, beyond `localize` (tests/harden_localize.rs): each command below once
//! replaced its input and exited 0. Now each refuses before any work, naming both flags, and every input
//! keeps its bytes.
mod harden_support;

use std::path::{Path, PathBuf};

use harden_support::{bin, fails, snapshot, SUITE};

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let f = Fixture { dir };
        std::fs::write(f.p("s.toml"), SUITE).unwrap();
        std::fs::write(f.p("b.json"), "[]").unwrap();
        std::fs::write(f.p("ck.safetensors"), b"not read").unwrap();
        std::fs::create_dir_all(f.p("meta")).unwrap();
        std::fs::write(f.p("meta/image_ids.txt"), "a.jpg\n").unwrap();
        std::fs::create_dir_all(f.p("maps")).unwrap();
        std::fs::write(f.p("maps/a.jpg.npy"), b"not read").unwrap();
        f
    }
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn root(&self) -> &Path {
        self.dir.path()
    }
    /// Runs `contracam ARGS` (an argument `@name` is the fixture's path `name`) and expects a clear refusal
    /// naming every needle.
    fn refused(&self, args: &[&str], needles: &[&str]) {
        let args: Vec<std::ffi::OsString> = args
            .iter()
            .map(|a| match a.strip_prefix('@') {
                Some(name) => self.p(name).into_os_string(),
                None => a.into(),
            })
            .collect();
        fails(bin().args(args), needles);
    }
}

#[test]
fn train_ssl_out_is_not_the_suite_or_the_box_file() {
    let f = Fixture::new();
    std::fs::create_dir(f.p("sub")).unwrap();
    let before = snapshot(f.root());
    f.refused(
        &["train", "ssl", "--suite", "@s.toml", "--out", "@s.toml"],
        &["--out", "--suite", "same file"],
    );
    f.refused(
        &[
            "train",
            "ssl",
            "--suite",
            "@s.toml",
            "--boxes",
            "@b.json",
            "--out",
            "@sub/../b.json",
        ],
        &["--out", "--boxes", "same file"],
    );
    assert_eq!(snapshot(f.root()), before);
}

#[test]
fn maxboxacc_curves_stay_out_of_the_input_folders() {
    let f = Fixture::new();
    std::fs::create_dir(f.p("sub")).unwrap();
    let before = snapshot(f.root());
    for (curves, flag) in [
        ("@meta/image_ids.txt", "--metadata"),
        ("@maps/a.jpg.npy", "--scoremaps"),
        ("@sub/../maps/new.json", "--scoremaps"),
    ] {
        f.refused(
            &[
                "eval",
                "maxboxacc",
                "--metadata",
                "@meta",
                "--scoremaps",
                "@maps",
                "--curves",
                curves,
            ],
            &["--curves", flag, "inputs"],
        );
    }
    assert_eq!(snapshot(f.root()), before);
}

#[test]
fn suite_run_outputs_are_not_the_suite_or_each_other() {
    let f = Fixture::new();
    let before = snapshot(f.root());
    let run = [
        "suite",
        "run",
        "--no-golden",
        "@s.toml",
        "--runs-dir",
        "@runs",
    ];
    for flag in ["--out", "--report", "--junit"] {
        f.refused(
            &[&run[..], &[flag, "@s.toml"]].concat(),
            &[flag, "SUITE", "same file"],
        );
    }
    f.refused(
        &[&run[..], &["--report", "@r.out", "--junit", "@r.out"]].concat(),
        &["--junit", "--report"],
    );
    assert_eq!(snapshot(f.root()), before, "nothing written, no runs dir");
}

#[test]
fn model_import_and_export_out_is_not_the_source() {
    let f = Fixture::new();
    let before = snapshot(f.root());
    for cmd in ["export-detectron2", "import"] {
        f.refused(
            &["model", cmd, "@ck.safetensors", "--out", "@ck.safetensors"],
            &["--out", "SRC", "same file"],
        );
    }
    assert_eq!(snapshot(f.root()), before);
}

#[test]
fn cam_out_inside_its_scoremaps_folder_is_refused_before_anything_is_made() {
    let f = Fixture::new();
    let before = snapshot(f.root());
    for out in ["@maps2", "@maps2/cams.safetensors"] {
        f.refused(
            &[
                "localize",
                "cam",
                "--inputs",
                "@ck.safetensors",
                "--weights",
                "@ck.safetensors",
                "--out",
                out,
                "--scoremaps",
                "@maps2",
            ],
            &["--out", "--scoremaps"],
        );
    }
    assert_eq!(snapshot(f.root()), before);
    assert!(!f.p("maps2").exists(), "the folder was made");
}
