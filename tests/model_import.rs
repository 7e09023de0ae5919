//! `model import`: every released-checkpoint layout in both torch.save serializations, made at test time by
//! `tests/fixtures/torch_checkpoints.py` with the project's .venv torch; byte-identical tensors against the
//! mapping the script computes independently; malicious, truncated and corrupt files refused with nothing
//! written; an imported official-layout MoCo checkpoint drives `localize cam` to the official ContraCAM.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use assert_cmd::Command;
use contracam::data::formats::pickle::PickleError;
use contracam::data::formats::safetensors::{read_tensors, write_tensors};
use contracam::data::DataError;
use contracam::model::import::{import_checkpoint, ImportRecord, Layout, IMPORT_KEY};
use contracam::model::{Arch, Stem};
use contracam::model::{CheckpointError, Classifier, ContrastiveModel, Method, ProjectorForm};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

struct Fixtures {
    dir: PathBuf,
    expected: serde_json::Value,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
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
        let expected =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        Fixtures { dir, expected }
    })
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn dtype_name(d: safetensors::Dtype) -> &'static str {
    use safetensors::Dtype::*;
    match d {
        F32 => "float32",
        F16 => "float16",
        BF16 => "bfloat16",
        F64 => "float64",
        I64 => "int64",
        I32 => "int32",
        U8 => "uint8",
        BOOL => "bool",
        _ => "other",
    }
}

/// name → (dtype, shape, sha256 of the bytes).
type Digests = BTreeMap<String, (String, Vec<usize>, String)>;

/// The tensor digests and metadata of a safetensors file.
fn digests(path: &Path) -> (Digests, HashMap<String, String>) {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let map = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                (
                    dtype_name(v.dtype()).to_string(),
                    v.shape().to_vec(),
                    hex::encode(Sha256::digest(v.data())),
                ),
            )
        })
        .collect();
    (map, meta.metadata().clone().unwrap_or_default())
}

fn expected(name: &str) -> Digests {
    fixtures().expected[name]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (
                    v["dtype"].as_str().unwrap().to_string(),
                    v["shape"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_u64().unwrap() as usize)
                        .collect(),
                    v["sha256"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

fn check_layout(name: &str, layout: Layout) -> Vec<PathBuf> {
    let t = tmp().keep();
    let mut outs = vec![];
    for ser in ["zip", "legacy"] {
        let src = fixtures().dir.join(format!("{name}.{ser}.pt"));
        let out = t.join(format!("{name}.{ser}.safetensors"));
        let r = import_checkpoint(&src, &out, None)
            .unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        assert_eq!(r.record.source_format, layout);
        assert_eq!(r.record.serialization, ser);
        let (got, meta) = digests(&out);
        let want = expected(name);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{name} ({ser}): tensor names"
        );
        for (k, w) in &want {
            assert_eq!(
                &got[k], w,
                "{name} ({ser}): {k} (dtype, shape, sha256 of bytes)"
            );
        }
        let rec: ImportRecord = serde_json::from_str(&meta[IMPORT_KEY]).unwrap();
        assert_eq!(rec.source_format, layout);
        assert_eq!(rec.source_file, src.file_name().unwrap().to_str().unwrap());
        assert_eq!(r.kept, want.len());
        outs.push(out);
    }
    outs
}

#[test]
fn lightning_moco_r18_both_serializations() {
    for out in check_layout("lightning_moco_r18", Layout::Lightning) {
        let m = ContrastiveModel::load(&out, Device::Cpu).unwrap();
        assert_eq!(m.config.method, Method::Moco);
        assert_eq!(m.config.encoder.arch, Arch::Resnet18);
        assert_eq!(m.config.encoder.stem, Stem::Imagenet);
        assert_eq!(m.config.encoder.base_width(), 8);
        assert_eq!(m.config.projector_form, ProjectorForm::Bn);
        // BN batch counters stay int64 through the import and the strict load.
        let v = m.vs.variables();
        assert_eq!(v["encoder.bn1.num_batches_tracked"].kind(), Kind::Int64);
        // A classifier load of a contrastive model is refused, naming why.
        let e = Classifier::load(&out, Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("not a supervised classifier"), "{e}");
    }
}

#[test]
fn lightning_byol_r50_small_stem_bfloat16() {
    for out in check_layout("lightning_byol_r50_small", Layout::Lightning) {
        let (got, _) = digests(&out);
        assert_eq!(got["encoder.conv1.weight"].0, "bfloat16");
        assert_eq!(got["encoder.bn1.num_batches_tracked"].0, "int64");
        let m = ContrastiveModel::load(&out, Device::Cpu).unwrap();
        assert_eq!(m.config.method, Method::Byol);
        assert_eq!(m.config.encoder.arch, Arch::Resnet50);
        assert_eq!(m.config.encoder.stem, Stem::Small);
        assert_eq!(m.config.proj_hidden, Some(48));
        assert_eq!(m.config.pred_hidden, Some(48));
    }
}

#[test]
fn moco_v2_r50_mlp_head_with_biases() {
    for out in check_layout("moco_v2_r50", Layout::MocoV2) {
        let m = ContrastiveModel::load(&out, Device::Cpu).unwrap();
        assert_eq!(m.config.method, Method::Moco);
        assert_eq!(m.config.encoder.arch, Arch::Resnet50);
        assert_eq!(m.config.projector_form, ProjectorForm::MlpBias);
        assert_eq!(m.config.proj_dim, Some(128));
        let x = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
        let q = m.project(&x, false);
        let norms = q.norm_scalaropt_dim(2, [1], false);
        assert!((norms - 1.0).abs().max().double_value(&[]) < 1e-5);
    }
}

#[test]
fn torchvision_classifier_float16() {
    for out in check_layout("torchvision_r18", Layout::Torchvision) {
        let (_, meta) = digests(&out);
        let cfg: serde_json::Value = serde_json::from_str(&meta["contracam.model"]).unwrap();
        assert_eq!(cfg["method"], "supervised");
        assert_eq!(cfg["num_classes"], 10);
        let c = Classifier::load(&out, Device::Cpu).unwrap();
        assert_eq!(c.config.encoder.arch, Arch::Resnet18);
        let e = ContrastiveModel::load(&out, Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("supervised classifier"), "{e}");
    }
}

#[test]
fn explicit_format_must_match_the_file() {
    let t = tmp();
    let src = fixtures().dir.join("moco_v2_r50.zip.pt");
    let out = t.path().join("x.safetensors");
    let e = import_checkpoint(&src, &out, Some(Layout::Lightning))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("moco-v2 layout") && e.contains("moco_v2_r50.zip.pt"),
        "{e}"
    );
    assert!(!out.exists());
    import_checkpoint(&src, &out, Some(Layout::MocoV2)).unwrap();
}

#[test]
fn malicious_checkpoint_is_refused_before_anything_runs_or_is_written() {
    let t = tmp();
    for ser in ["zip", "legacy"] {
        let src = fixtures().dir.join(format!("malicious.{ser}.pt"));
        let out = t.path().join("evil.safetensors");
        let e = import_checkpoint(&src, &out, None).unwrap_err();
        match &e {
            CheckpointError::File(DataError::Pickle {
                path,
                error: PickleError::Refused { global, .. },
            }) => {
                assert_eq!(path, &src);
                assert_eq!(global.to_string(), "posix.system");
            }
            other => panic!("{ser}: {other}"),
        }
        let msg = e.to_string();
        assert!(
            msg.contains("posix.system") && msg.contains(&*src.to_string_lossy()),
            "{msg}"
        );
        assert!(!out.exists(), "{ser}: output written");
        assert!(!fixtures().dir.join("evil-ran").exists());
        // Through the CLI: a non-zero exit naming the file and the global, and no output.
        let o = Command::cargo_bin("contracam")
            .unwrap()
            .args(["model", "import"])
            .arg(&src)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("posix.system") && err.contains("malicious"),
            "{err}"
        );
        assert!(!out.exists());
    }
}

#[test]
fn truncated_and_corrupt_files_are_errors_naming_them() {
    let t = tmp();
    for ser in ["zip", "legacy"] {
        let src = fixtures().dir.join(format!("lightning_moco_r18.{ser}.pt"));
        let bytes = std::fs::read(&src).unwrap();
        let out = t.path().join("out.safetensors");
        // An output from an earlier run stays as it was when an import fails.
        std::fs::write(&out, b"earlier").unwrap();
        for frac in [0.02, 0.3, 0.6, 0.95, 0.9999] {
            let cut = t.path().join(format!("cut-{ser}.pt"));
            std::fs::write(&cut, &bytes[..(bytes.len() as f64 * frac) as usize]).unwrap();
            let e = import_checkpoint(&cut, &out, None).unwrap_err().to_string();
            assert!(e.contains(&*cut.to_string_lossy()), "{ser} {frac}: {e}");
            assert_eq!(std::fs::read(&out).unwrap(), b"earlier", "{ser} {frac}");
        }
    }
    // A flipped byte inside a zip storage entry fails its CRC.
    let src = fixtures().dir.join("lightning_moco_r18.zip.pt");
    let mut bytes = std::fs::read(&src).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x55;
    let bad = t.path().join("corrupt.pt");
    std::fs::write(&bad, &bytes).unwrap();
    let out = t.path().join("c.safetensors");
    let e = import_checkpoint(&bad, &out, None).unwrap_err().to_string();
    assert!(e.contains("corrupt.pt"), "{e}");
    assert!(!out.exists());
    // Not a checkpoint at all.
    std::fs::write(&bad, b"hello").unwrap();
    let e = import_checkpoint(&bad, &out, None).unwrap_err().to_string();
    assert!(e.contains("not a PyTorch checkpoint"), "{e}");
}

fn f32s(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn imported_official_moco_drives_localize_cam_to_the_official_contracam() {
    let f = fixtures();
    let t = tmp();
    let weights = t.path().join("moco.safetensors");
    let o = Command::cargo_bin("contracam")
        .unwrap()
        .args(["model", "import", "--quiet", "--format", "lightning"])
        .arg(f.dir.join("lightning_moco_r18.legacy.pt"))
        .arg("--out")
        .arg(&weights)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let spec = &f.expected["_cam"];
    let shape: Vec<i64> = spec["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    let images = Tensor::from_slice(&f32s(&f.dir.join("cam_inputs.f32"))).reshape(&shape);
    let inputs = t.path().join("inputs.safetensors");
    write_tensors(&inputs, &[("images".into(), images)], &Default::default()).unwrap();
    let cams = t.path().join("cams.safetensors");
    let o = Command::cargo_bin("contracam")
        .unwrap()
        .args(["localize", "cam", "--quiet", "--device", "cpu", "--weights"])
        .arg(&weights)
        .arg("--inputs")
        .arg(&inputs)
        .args(["--input-key", "images", "--expand-res"])
        .arg(spec["expand_res"].to_string())
        .arg("--iters")
        .arg(spec["iters"].to_string())
        .arg("--out")
        .arg(&cams)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = read_tensors(&cams).unwrap();
    let got = got.get("cam").unwrap();
    let want = Tensor::from_slice(&f32s(&f.dir.join("cam_expected.f32"))).reshape(got.size());
    // atol 1e-4 as the ContraCAM parity vectors (fp32 noise between two libtorch call sequences).
    let d = (got - &want).abs().max().double_value(&[]);
    println!("max |Δ| vs official ContraCAM: {d:.3e}");
    assert!(d <= 1e-4, "max |Δ| = {d:e}");
    assert!(
        want.max().double_value(&[]) > 0.99,
        "degenerate reference CAM"
    );
}
