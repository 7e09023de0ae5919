//! ReDO's mask network and the `redo-masks` stage against PyTorch: a small network of the official `ReDO`
//! module (the definition below, copied from object-aware-contrastive `models/segmentation/redo/model.py`,
//! which has ReDO's `_netEncM` parameter names) with random weights, saved by the project's .venv torch at
//! test time as ReDO saves `netM` (`{"netEncM": state_dict, "options": argparse.Namespace}`), in both
//! serializations, and run there on the same inputs.
//!
//! Tolerances: the logits go through 11 float32 convolutions and InstanceNorms whose summation order differs
//! between libtorch builds; their values are O(1), so a few 1e-6 of relative rounding per layer stays far
//! under 1e-4 absolute (measured here: 0, bit for bit, the .venv torch and tch sharing libtorch 2.11; the
//! test prints it). The probabilities (sigmoid, slope ≤ 1/4) then agree
//! to 2.5e-5, and a binary mask may differ only where PyTorch's probability is within that of 0.5.
#[path = "stage_kinds_common/mod.rs"]
mod common;

use std::path::Path;

use common::{fixture, index_input, inputs, refused, run_kind};
use contracam::data::loader::{EvalTransform, IndexSource, Loader, LoaderConfig, Plan, Source};
use contracam::model::redo::RedoMaskNet;
use contracam::model::CheckpointError;
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

const LOGIT_TOL: f64 = 1e-4;
const PROB_TOL: f64 = 2.5e-5;

/// `make OUT`: checkpoints `netM_zip.pth`, `netM_legacy.pth`, random inputs `x.bin` (3, 3, 128, 128) in
/// [-1, 1] and the network's `logits.bin` and `probs.bin` on them. `run CKPT IN N OUT`: the probabilities of
/// N uint8 images (N, 3, 128, 128) normalised with mean/std 0.5.
const SCRIPT: &str = r#"
import argparse, sys
import numpy as np
import torch
import torch.nn as nn

class _downConv(nn.Module):
    def __init__(self, nIn=3, nf=128):
        super().__init__()
        self.mods = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(nIn, nf // 4, 7, bias=False), nn.InstanceNorm2d(nf // 4, affine=True), nn.ReLU(),
            nn.Conv2d(nf // 4, nf // 2, 3, 2, 1, bias=False), nn.InstanceNorm2d(nf // 2, affine=True), nn.ReLU(),
            nn.Conv2d(nf // 2, nf, 3, 2, 1, bias=False), nn.InstanceNorm2d(nf, affine=True), nn.ReLU())
    def forward(self, x):
        return self.mods(x)

class _resBloc(nn.Module):
    def __init__(self, nf=128):
        super().__init__()
        self.blocs = nn.Sequential(nn.Conv2d(nf, nf, 3, 1, 1, bias=False), nn.InstanceNorm2d(nf, affine=True), nn.ReLU(),
                                   nn.Conv2d(nf, nf, 3, 1, 1, bias=True))
        self.activationF = nn.Sequential(nn.InstanceNorm2d(nf, affine=True), nn.ReLU())
    def forward(self, x):
        return self.activationF(self.blocs(x) + x)

class _upConv(nn.Module):
    def __init__(self, nOut=3, nf=128):
        super().__init__()
        self.mods = nn.Sequential(
            nn.Upsample(scale_factor=2, mode='nearest'), nn.Conv2d(nf, nf // 2, 3, 1, 1, bias=False), nn.InstanceNorm2d(nf // 2, affine=True), nn.ReLU(),
            nn.Upsample(scale_factor=2, mode='nearest'), nn.Conv2d(nf // 2, nf // 4, 3, 1, 1, bias=False), nn.InstanceNorm2d(nf // 4, affine=True), nn.ReLU(),
            nn.ReflectionPad2d(3), nn.Conv2d(nf // 4, nOut, 7, bias=True))
    def forward(self, x):
        return self.mods(x)

class ReDO(nn.Module):
    def __init__(self, sizex=128, nIn=3, nMasks=2, nRes=3, nf=64, temperature=1):
        super().__init__()
        sizex = sizex // 4
        self.cnn = nn.Sequential(*([_downConv(nIn, nf)] + [_resBloc(nf=nf) for i in range(nRes)]))
        self.psp = nn.ModuleList([nn.Sequential(nn.AvgPool2d(sizex), nn.Conv2d(nf, 1, 1), nn.Upsample(size=sizex, mode='bilinear')),
                                  nn.Sequential(nn.AvgPool2d(sizex // 2, sizex // 2), nn.Conv2d(nf, 1, 1), nn.Upsample(size=sizex, mode='bilinear')),
                                  nn.Sequential(nn.AvgPool2d(sizex // 3, sizex // 3), nn.Conv2d(nf, 1, 1), nn.Upsample(size=sizex, mode='bilinear')),
                                  nn.Sequential(nn.AvgPool2d(sizex // 6, sizex // 6), nn.Conv2d(nf, 1, 1), nn.Upsample(size=sizex, mode='bilinear'))])
        self.out = _upConv(1 if nMasks == 2 else nMasks, nf + 4)
        self.temperature = temperature
    def logits(self, x):
        f = self.cnn(x)
        return self.out(torch.cat([f] + [pnet(f) for pnet in self.psp], 1))
    def forward(self, x):
        return torch.sigmoid(self.logits(x) / self.temperature)

def net():
    torch.manual_seed(5)
    m = ReDO(nf=8, nRes=2)
    # Random affine InstanceNorm parameters, so that their names and order are exercised too.
    for mod in m.modules():
        if isinstance(mod, nn.InstanceNorm2d):
            nn.init.uniform_(mod.weight, 0.5, 1.5)
            nn.init.uniform_(mod.bias, -0.3, 0.3)
    return m.eval()

if sys.argv[1] == "make":
    out = sys.argv[2]
    m = net()
    state = {"netEncM": m.state_dict(), "options": argparse.Namespace(sizex=128, nfM=8, nResM=2, nMasks=2, temperature=1, dataset="cub")}
    torch.save(state, out + "/netM_zip.pth")
    torch.save(state, out + "/netM_legacy.pth", _use_new_zipfile_serialization=False)
    torch.manual_seed(6)
    x = torch.rand(3, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        l = m.logits(x)
        p = m(x)
    x.numpy().astype("<f4").tofile(out + "/x.bin")
    l.numpy().astype("<f4").tofile(out + "/logits.bin")
    p.numpy().astype("<f4").tofile(out + "/probs.bin")
else:
    _, _, ckpt, inp, n, out = sys.argv
    m = net()
    m.load_state_dict(torch.load(ckpt, weights_only=False)["netEncM"])
    u8 = np.fromfile(inp, dtype=np.uint8).reshape(int(n), 3, 128, 128)
    x = (torch.from_numpy(u8).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        m(x).numpy().astype("<f4").tofile(out)
"#;

fn python(args: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(root.join(".venv/bin/python"))
        .arg("-c")
        .arg(SCRIPT)
        .args(args)
        .output()
        .expect("running .venv/bin/python (run `make setup`)");
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn host(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).contiguous().view([-1])).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .fold(0.0, f64::max)
}

fn sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

fn make(dir: &Path) {
    python(&["make", dir.to_str().unwrap()]);
}

#[test]
fn the_mask_network_matches_pytorch_in_both_serializations() {
    let tmp = tempfile::tempdir().unwrap();
    make(tmp.path());
    let x = Tensor::from_slice(&read_f32(&tmp.path().join("x.bin"))).view([3, 3, 128, 128]);
    let want_logits = read_f32(&tmp.path().join("logits.bin"));
    let want_probs = read_f32(&tmp.path().join("probs.bin"));
    for file in ["netM_zip.pth", "netM_legacy.pth"] {
        let net = RedoMaskNet::load(&tmp.path().join(file), Device::Cpu).unwrap();
        assert_eq!(
            (net.nf, net.n_res),
            (8, 2),
            "{file}: widths from the tensors"
        );
        let logits = net.logits(&x);
        assert_eq!(logits.size(), [3, 1, 128, 128]);
        let dl = max_abs_diff(&host(&logits), &want_logits);
        let dp = max_abs_diff(&host(&net.masks(&x)), &want_probs);
        println!("{file}: max |Δlogit| {dl:.3e}, max |Δp| {dp:.3e}");
        assert!(dl <= LOGIT_TOL, "{file}: logits differ by {dl}");
        assert!(dp <= PROB_TOL, "{file}: probabilities differ by {dp}");
        // Not a constant map: the comparison above means something.
        let spread = want_logits.iter().cloned().fold(f32::MIN, f32::max)
            - want_logits.iter().cloned().fold(f32::MAX, f32::min);
        assert!(spread > 0.1, "logit spread {spread}");
    }
}

#[test]
fn a_checkpoint_that_is_not_a_redo_mask_network_is_refused_naming_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    make(tmp.path());
    // The same state dict with one tensor missing: a mismatch naming it.
    let script = format!(
        "import torch\ns = torch.load('{0}/netM_zip.pth', weights_only=False)\n\
         del s['netEncM']['psp.2.1.bias']\ntorch.save(s, '{0}/short.pth')\n\
         torch.save({{'netEncM': {{'conv1.weight': torch.zeros(1)}}}}, '{0}/other.pth')\n",
        tmp.path().display()
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(root.join(".venv/bin/python"))
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = RedoMaskNet::load(&tmp.path().join("short.pth"), Device::Cpu).unwrap_err();
    assert!(matches!(e, CheckpointError::Mismatch { .. }), "{e}");
    assert!(e.to_string().contains("missing psp.2.1.bias"), "{e}");
    let e = RedoMaskNet::load(&tmp.path().join("other.pth"), Device::Cpu).unwrap_err();
    assert!(e.to_string().contains("not a ReDO mask network"), "{e}");
    assert!(e.to_string().contains("other.pth"), "{e}");
}

/// The test split's images as the stage's loader gives them: uint8 (N, 3, 128, 128).
fn loader_images(source: IndexSource) -> (Vec<String>, Vec<u8>) {
    let n = source.len();
    let ids = (0..n).map(|i| source.meta(i).unwrap().id).collect();
    let loader = Loader::new(
        std::sync::Arc::new(source),
        Plan::eval(EvalTransform::Resize { size: 128 }),
        LoaderConfig::eval(n),
    )
    .unwrap();
    let batch = loader.epoch_from(0, 0).next().unwrap().unwrap();
    let px = Vec::<u8>::try_from(batch.views[0].contiguous().view([-1])).unwrap();
    (ids, px)
}

#[test]
fn the_stage_writes_the_masks_pytorch_computes_and_requires_the_checkpoint_hash() {
    let tmp = tempfile::tempdir().unwrap();
    make(tmp.path());
    let ckpt = tmp.path().join("netM_legacy.pth");
    let f = fixture(&[("test", 5, 0)], false);
    let data = index_input(&f, "test");
    let ins = inputs(vec![("data", data)]);
    let run =
        |params: &str, out: &str| run_kind("redo-masks", params, &ins, 0, &tmp.path().join(out));
    let base = format!(
        "input_size = 128\ncheckpoint = {:?}\n",
        ckpt.to_str().unwrap()
    );

    // Without the hash: stops and prints it; with another hash: refused.
    let e = run(&base, "nohash").unwrap_err().to_string();
    assert!(e.contains(&sha256(&ckpt)), "{e}");
    let wrong = format!("{base}sha256 = \"{}\"\n", "0".repeat(64));
    let e = run(&wrong, "wronghash").unwrap_err().to_string();
    assert!(e.contains("the file changed or is another one"), "{e}");
    assert!(!tmp.path().join("wronghash/masks").exists());

    // ReDO's threshold: compare with PyTorch's probabilities on the same resized pixels.
    let params = format!(
        "{base}sha256 = \"{}\"\nbinarize = \"half\"\nbatch_size = 2\n",
        sha256(&ckpt)
    );
    run(&params, "half").unwrap();
    let source = IndexSource::open(&f.data, "toy", "test").unwrap();
    let (ids, px) = loader_images(source);
    let input = tmp.path().join("u8.bin");
    std::fs::write(&input, &px).unwrap();
    let probs_file = tmp.path().join("stage_probs.bin");
    python(&[
        "run",
        ckpt.to_str().unwrap(),
        input.to_str().unwrap(),
        &ids.len().to_string(),
        probs_file.to_str().unwrap(),
    ]);
    let probs = read_f32(&probs_file);
    let mut fg = 0;
    for (k, id) in ids.iter().enumerate() {
        let path = tmp.path().join(format!("half/masks/{id}.png"));
        let img = image::open(&path).unwrap().to_luma8();
        assert_eq!(img.dimensions(), (128, 128), "{}", path.display());
        for (j, &v) in img.as_raw().iter().enumerate() {
            assert!(v == 0 || v == 255);
            let p = probs[k * 128 * 128 + j] as f64;
            if (p - 0.5).abs() > PROB_TOL {
                assert_eq!(v == 255, p >= 0.5, "{id} pixel {j}: p = {p}");
            }
            fg += (v == 255) as usize;
        }
    }
    assert!(
        fg > 0 && fg < ids.len() * 128 * 128,
        "masks neither empty nor full: {fg}"
    );

    // The official `seg` rule (clean_mask, threshold 1/255) gives other masks; the batch size changes nothing.
    let clean = format!("{base}sha256 = \"{}\"\nbatch_size = 3\n", sha256(&ckpt));
    run(&clean, "clean").unwrap();
    let one = format!("{base}sha256 = \"{}\"\nbatch_size = 1\n", sha256(&ckpt));
    run(&one, "clean1").unwrap();
    let read = |dir: &str, id: &str| {
        std::fs::read(tmp.path().join(format!("{dir}/masks/{id}.png"))).unwrap()
    };
    assert!(ids.iter().all(|id| read("clean", id) == read("clean1", id)));
    assert!(ids.iter().any(|id| read("clean", id) != read("half", id)));
}

#[test]
fn params_are_checked_when_the_suite_is_read() {
    let (key, msg) = refused("redo-masks", "input_size = 224\ncheckpoint = \"x.pth\"");
    assert_eq!(key, "input_size");
    assert!(msg.contains("128"), "{msg}");
    let (key, _) = refused("redo-masks", "checkpoint = \"x.pth\"\nsha256 = \"ABC\"");
    assert_eq!(key, "sha256");
}

/// `<data>/seg/index/test.jsonl`: `n` PNG images of 16×16 with gray masks (a block of rows `0..=k`, 200 =
/// object), rule `gray-gt-127`; the ids are `<k>` (numeric file stems read as COCO-style ids).
fn seg_fixture(data: &Path, n: u32) -> std::sync::Arc<contracam::suite::dataset::DatasetHandle> {
    use contracam::data::index::{Sample, SplitIndex};
    use contracam::suite::dataset::{DatasetHandle, DatasetSpec, IndexDataset};
    let root = data.join("seg");
    std::fs::create_dir_all(root.join("img")).unwrap();
    std::fs::create_dir_all(root.join("gt")).unwrap();
    let mut samples = vec![];
    for k in 0..n {
        image::RgbImage::from_pixel(16, 16, image::Rgb([9, 9, 9]))
            .save(root.join(format!("img/{k}.png")))
            .unwrap();
        image::GrayImage::from_fn(16, 16, |_, y| image::Luma([if y <= k { 200 } else { 30 }]))
            .save(root.join(format!("gt/{k}.png")))
            .unwrap();
        samples.push(Sample {
            path: format!("img/{k}.png"),
            labels: vec![0],
            mask: Some(format!("gt/{k}.png")),
            width: 16,
            height: 16,
            ..Default::default()
        });
    }
    SplitIndex::new("seg", "test", vec!["a".into()], "class", samples)
        .with_mask_rule("gray-gt-127")
        .write(&root.join("index"))
        .unwrap();
    let spec = DatasetSpec::Index(IndexDataset {
        name: "seg".into(),
        split: "test".into(),
        limit: None,
    });
    std::sync::Arc::new(DatasetHandle::resolve("seg_test", spec, data).unwrap())
}

#[test]
fn redo_iou_takes_the_better_of_mask_and_inverse_per_image_and_drops_the_last_partial_batch() {
    use contracam::suite::stage::{Artefact, ArtefactKind, Input};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let handle = seg_fixture(&data, 5);
    // Predictions: image k has rows 0..=k as foreground in the ground truth (16 (k + 1) pixels).
    // 0: the inverse of the GT (miou 0, redo 1); 1: the GT (1, 1); 2: rows 0..=1 (IoU 2/3; inverse 1/16 ...);
    // 3: empty (IoU 0; inverse: GT 64 px inside all 256 → 64/256); 4: the GT, in the dropped batch.
    let masks = tmp.path().join("masks");
    std::fs::create_dir_all(&masks).unwrap();
    let pred_rows = |k: u32, y: u32| match k {
        0 => y > 0,
        1 => y <= 1,
        2 => y <= 1,
        3 => false,
        _ => y <= 4,
    };
    for k in 0..5 {
        image::GrayImage::from_fn(16, 16, |_, y| {
            image::Luma([if pred_rows(k, y) { 255 } else { 0 }])
        })
        .save(masks.join(format!("{k}.png")))
        .unwrap();
    }
    let ins = inputs(vec![
        (
            "masks",
            Input::Artefact(Artefact {
                kind: ArtefactKind::MasksDir,
                path: masks.clone(),
                fingerprint: "fp".into(),
                producer: "test".into(),
            }),
        ),
        ("data", Input::Dataset(handle)),
    ]);
    // Per image (both binarisations agree on 0/255 masks): pred P, GT G = rows 0..=k of 16 px each.
    // 0: P = rows 1..15, G = row 0: IoU 0; inverse = row 0 = G: 1.           → 1
    // 1: P = G: 1.                                                            → 1
    // 2: P = rows 0..=1, G = rows 0..=2: 2/3; inverse rows 2..15 vs G: 1/14.  → 2/3
    // 3: P = ∅, G = rows 0..=3: 0; inverse = all: 4/16.                       → 1/4
    let want = ((1.0 + 1.0) / 2.0 + (2.0 / 3.0 + 0.25) / 2.0) / 2.0;
    let r = run_kind(
        "eval-masks",
        "redo_iou = true\nredo_batch = 2",
        &ins,
        0,
        &tmp.path().join("ev"),
    )
    .unwrap();
    assert!(
        (r.metrics["redo_iou"] - want).abs() < 1e-12,
        "{} vs {want}",
        r.metrics["redo_iou"]
    );
    // The official mIoU over all five: 0, 1, 2/3, 0, 1.
    let miou = (0.0 + 1.0 + 2.0 / 3.0 + 0.0 + 1.0) / 5.0;
    assert!(
        (r.metrics["miou"] - miou).abs() < 1e-12,
        "{}",
        r.metrics["miou"]
    );
    // Off by default: no redo_iou metric.
    let r = run_kind("eval-masks", "", &ins, 0, &tmp.path().join("ev0")).unwrap();
    assert!(!r.metrics.contains_key("redo_iou"));
    // A batch larger than the split leaves no full batch: refused, saying why.
    let e = run_kind(
        "eval-masks",
        "redo_iou = true\nredo_batch = 6",
        &ins,
        0,
        &tmp.path().join("ev6"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("no full batch"), "{e}");
}
