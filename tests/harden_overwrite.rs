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
}

#[test]
fn train_ssl_out_is_not_the_suite_or_the_box_file() {
    let f = Fixture::new();
    std::fs::create_dir(f.p("sub")).unwrap();
    let before = snapshot(f.root());
    fails(
        bin()
            .args(["train", "ssl", "--suite"])
            .arg(f.p("s.toml"))
            .arg("--out")
            .arg(f.p("s.toml")),
        &["--out", "--suite", "same file"],
    );
    fails(
        bin()
            .args(["train", "ssl", "--suite"])
            .arg(f.p("s.toml"))
            .arg("--boxes")
            .arg(f.p("b.json"))
            .arg("--out")
            .arg(f.p("sub/../b.json")),
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
        (f.p("meta/image_ids.txt"), "--metadata"),
        (f.p("maps/a.jpg.npy"), "--scoremaps"),
        (f.p("sub/../maps/new.json"), "--scoremaps"),
    ] {
        fails(
            bin()
                .args(["eval", "maxboxacc", "--metadata"])
                .arg(f.p("meta"))
                .arg("--scoremaps")
                .arg(f.p("maps"))
                .arg("--curves")
                .arg(&curves),
            &["--curves", flag, "inputs"],
        );
    }
    assert_eq!(snapshot(f.root()), before);
}

#[test]
fn suite_run_outputs_are_not_the_suite_or_each_other() {
    let f = Fixture::new();
    let before = snapshot(f.root());
    for flag in ["--out", "--report", "--junit"] {
        fails(
            bin()
                .args(["suite", "run", "--no-golden"])
                .arg(f.p("s.toml"))
                .arg("--runs-dir")
                .arg(f.p("runs"))
                .arg(flag)
                .arg(f.p("s.toml")),
            &[flag, "SUITE", "same file"],
        );
    }
    fails(
        bin()
            .args(["suite", "run", "--no-golden"])
            .arg(f.p("s.toml"))
            .arg("--runs-dir")
            .arg(f.p("runs"))
            .arg("--report")
            .arg(f.p("r.out"))
            .arg("--junit")
            .arg(f.p("r.out")),
        &["--junit", "--report"],
    );
    assert_eq!(snapshot(f.root()), before, "nothing written, no runs dir");
}

#[test]
fn model_import_and_export_out_is_not_the_source() {
    let f = Fixture::new();
    let before = snapshot(f.root());
    for cmd in [["model", "export-detectron2"], ["model", "import"]] {
        fails(
            bin()
                .args(cmd)
                .arg(f.p("ck.safetensors"))
                .arg("--out")
                .arg(f.p("ck.safetensors")),
            &["--out", "SRC", "same file"],
        );
    }
    assert_eq!(snapshot(f.root()), before);
}

#[test]
fn cam_out_inside_its_scoremaps_folder_is_refused_before_anything_is_made() {
    let f = Fixture::new();
    let before = snapshot(f.root());
    for out in ["maps2", "maps2/cams.safetensors"] {
        fails(
            bin()
                .args(["localize", "cam", "--inputs"])
                .arg(f.p("ck.safetensors"))
                .arg("--weights")
                .arg(f.p("ck.safetensors"))
                .arg("--out")
                .arg(f.p(out))
                .arg("--scoremaps")
                .arg(f.p("maps2")),
            &["--out", "--scoremaps"],
        );
    }
    assert_eq!(snapshot(f.root()), before);
    assert!(!f.p("maps2").exists(), "the folder was made");
}
