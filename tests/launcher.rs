//! The `contracam` launcher: it links no libtorch, runs the torch-free commands itself (also with no
//! contracam-torch beside it), and hands everything else to contracam-torch with the same arguments, output
//! and exit status.
use std::path::{Path, PathBuf};
use std::process::Output;

const LAUNCHER: &str = env!("CARGO_BIN_EXE_contracam");
const TORCH: &str = env!("CARGO_BIN_EXE_contracam-torch");

fn run(bin: &str, args: &[&str]) -> Output {
    std::process::Command::new(bin)
        .args(args)
        .env("CONTRACAM_LOG", "error")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"))
}

/// The shared libraries `bin` names in its dynamic section (`readelf -d`, binutils).
fn needed(bin: &str) -> Vec<String> {
    let out = std::process::Command::new("readelf")
        .args(["-d", bin])
        .output()
        .expect("readelf (binutils) must be installed: this test reads the NEEDED entries with it");
    assert!(out.status.success(), "readelf -d {bin} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split('[').nth(1)?.trim_end_matches(']').to_string()))
        .collect()
}

#[test]
fn launcher_needs_no_libtorch_and_the_torch_binary_does() {
    let is_torch = |lib: &String| lib.starts_with("libtorch") || lib.starts_with("libc10");
    let launcher = needed(LAUNCHER);
    assert!(
        launcher.iter().any(|l| l.starts_with("libc.so")),
        "readelf output not understood: {launcher:?}"
    );
    let torch_libs: Vec<_> = launcher.iter().filter(|l| is_torch(l)).collect();
    assert!(
        torch_libs.is_empty(),
        "{LAUNCHER} needs {torch_libs:?}: it must link only contracam-base"
    );
    // The same check sees libtorch where it is linked.
    assert!(
        needed(TORCH).iter().any(is_torch),
        "{TORCH}: {:?}",
        needed(TORCH)
    );
}

/// A one-image COCO problem whose single detection matches its single ground truth exactly.
fn tiny_coco(dir: &Path) -> (PathBuf, PathBuf) {
    let gt = dir.join("gt.json");
    let dt = dir.join("dt.json");
    std::fs::write(
        &gt,
        r#"{"images":[{"id":1,"width":100,"height":100}],
            "annotations":[{"id":1,"image_id":1,"category_id":1,"bbox":[10,10,40,40],"area":1600,"iscrowd":0}],
            "categories":[{"id":1,"name":"thing"}]}"#,
    )
    .unwrap();
    std::fs::write(
        &dt,
        r#"[{"image_id":1,"category_id":1,"bbox":[10,10,40,40],"score":0.9}]"#,
    )
    .unwrap();
    (gt, dt)
}

/// A copy of the launcher alone in a folder: no contracam-torch beside it.
fn lone_launcher(dir: &Path) -> String {
    let lone = dir.join("contracam");
    std::fs::copy(LAUNCHER, &lone).unwrap();
    lone.display().to_string()
}

#[test]
fn torch_free_commands_run_without_contracam_torch() {
    let tmp = tempfile::tempdir().unwrap();
    let lone = lone_launcher(tmp.path());
    let (gt, dt) = tiny_coco(tmp.path());
    let out = run(
        &lone,
        &[
            "eval",
            "coco",
            "--gt",
            &gt.display().to_string(),
            "--dt",
            &dt.display().to_string(),
            "--json",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // AP is the mean of 101 interpolated precisions, all 1 here; the float sum may round one ulp low.
    let ap = v["AP"].as_f64().unwrap();
    assert!((ap - 1.0).abs() < 1e-12, "{v}");
    // The same numbers as contracam-torch prints.
    let torch = run(
        TORCH,
        &[
            "eval",
            "coco",
            "--gt",
            &gt.display().to_string(),
            "--dt",
            &dt.display().to_string(),
            "--json",
        ],
    );
    assert_eq!(out.stdout, torch.stdout);

    let data_dir = tmp.path().join("data").display().to_string();
    let out = run(&lone, &["data", "list", "--data-dir", &data_dir]);
    assert!(out.status.success(), "{out:?}");
    let torch = run(TORCH, &["data", "list", "--data-dir", &data_dir]);
    assert_eq!(out.stdout, torch.stdout);
    assert!(String::from_utf8_lossy(&out.stdout).contains("cub200"));
}

#[test]
fn other_commands_without_contracam_torch_name_the_missing_path() {
    let tmp = tempfile::tempdir().unwrap();
    let lone = lone_launcher(tmp.path());
    for args in [&["--version"][..], &["env"], &["eval", "linear", "--help"]] {
        let out = run(&lone, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let missing = tmp.path().join("contracam-torch").display().to_string();
        assert!(
            err.contains(&missing) && err.contains("cargo build --release"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn help_of_the_torch_free_commands_is_the_same_from_both_binaries() {
    for cmd in [
        &["data", "list"][..],
        &["data", "fetch"],
        &["data", "verify"],
        &["data", "instructions"],
        &["data", "register"],
        &["eval", "coco"],
        &["eval", "miou"],
        &["eval", "maxboxacc"],
    ] {
        let args: Vec<&str> = cmd.iter().copied().chain(["--help"]).collect();
        let (a, b) = (run(LAUNCHER, &args), run(TORCH, &args));
        assert!(a.status.success() && b.status.success(), "{cmd:?}");
        assert_eq!(
            String::from_utf8_lossy(&a.stdout),
            String::from_utf8_lossy(&b.stdout),
            "{cmd:?}"
        );
    }
}

/// Whatever the launcher hands over comes back as contracam-torch's own output and exit status: top-level
/// --help and --version, unknown commands, options before the subcommand, parse errors of torch commands.
#[test]
fn handed_over_commands_answer_as_contracam_torch() {
    for args in [
        &["--version"][..],
        &["--help"],
        &[],
        &["no-such-command"],
        &["--threads", "2", "eval", "coco", "--gt", "g", "--dt", "d"],
        &["--quiet", "data", "list"],
        &["data", "synth", "--help"],
        &[
            "eval",
            "linear",
            "--features",
            "/nonexistent/features.safetensors",
        ],
        &["eval", "miou", "--dataset", "nonexistent", "--masks", "m"],
    ] {
        let (a, b) = (run(LAUNCHER, args), run(TORCH, args));
        assert_eq!(a.status.code(), b.status.code(), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&a.stdout),
            String::from_utf8_lossy(&b.stdout),
            "{args:?}"
        );
        assert_eq!(
            String::from_utf8_lossy(&a.stderr),
            String::from_utf8_lossy(&b.stderr),
            "{args:?}"
        );
    }
    // A torch-free command's parse error is the same too.
    let args = ["eval", "coco", "--gt", "g", "--dt", "d", "--device", "cpu"];
    let (a, b) = (run(LAUNCHER, &args), run(TORCH, &args));
    assert_eq!(a.status.code(), Some(2));
    assert_eq!(a.status.code(), b.status.code());
    assert_eq!(a.stderr, b.stderr);
}
