//! ReDO's mask network (`_netEncM` of mickaelChen/ReDO, the `ReDO` module of the official
//! object-aware-contrastive code, `models/segmentation/redo/model.py`), loaded from its `.pth` state dict
//! through the pickle-free checkpoint reader and run as a plain function of its tensors.
//!
//! The network (defaults of both codes: 128-px input, 2 masks, `nRes` 3, `nf` 64, temperature 1):
//! a down-sampling stem (reflection pad 3, 7×7 conv to nf/4, two stride-2 3×3 convs to nf/2 and nf, each
//! followed by an affine InstanceNorm and a ReLU), `nRes` residual blocks (`IN(relu(IN(conv(x))) → conv)+x`
//! then IN and ReLU), a pyramid-pooling head (average pools of 32, 16, 10 and 5 at the 32×32 feature size,
//! a 1×1 conv to one channel each, bilinear upsampling back to 32×32), and an up-sampling head (two nearest
//! ×2 + 3×3 conv + IN + ReLU, reflection pad 3, 7×7 conv to one channel). The output is the sigmoid of that
//! channel: the foreground probability the official code takes as the mask (ReDO's own `_netEncM` also
//! returns `1 − p` as a second channel, which the official code drops).
//!
//! The checkpoint is ReDO's `<dataset>_netM_state.pth`: a dict whose `netEncM` entry is the state dict (and
//! `options`, an `argparse.Namespace`, read as an inert dict). Widths and the number of residual blocks are
//! read from the tensors; every expected tensor must be there with its shape, and nothing else may be,
//! except the running statistics an InstanceNorm without `track_running_stats` ignores (as PyTorch does).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use super::checkpoint::CheckpointError;
use super::import::raw_to_tensor;
use crate::data::formats::torch_checkpoint::TorchCheckpoint;

/// The only input side the network accepts: its pyramid pools and upsampling are sized for 128 px.
pub const REDO_INPUT_SIZE: i64 = 128;
/// ReDO's normalisation (`normalize='redo'`): mean 0.5, std 0.5 on [0, 1] pixels.
pub const REDO_MEAN: f64 = 0.5;
pub const REDO_STD: f64 = 0.5;
/// `nn.InstanceNorm2d`'s default eps.
const IN_EPS: f64 = 1e-5;

/// A loaded ReDO mask network.
#[derive(Debug)]
pub struct RedoMaskNet {
    /// Feature width (`nf`).
    pub nf: i64,
    /// Residual blocks (`nRes`).
    pub n_res: usize,
    tensors: BTreeMap<String, Tensor>,
}

fn err(path: &Path, msg: impl Into<String>) -> CheckpointError {
    CheckpointError::Import {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

impl RedoMaskNet {
    /// Reads ReDO's `netM` checkpoint (its `netEncM` state dict; a bare state dict is accepted too).
    pub fn load(path: &Path, device: Device) -> Result<Self, CheckpointError> {
        let ckpt = TorchCheckpoint::open(path)?;
        let p = &ckpt.pickle;
        if p.dict(p.root).is_none() {
            return Err(err(path, "the checkpoint is not a dict"));
        }
        let sd = p.get(p.root, "netEncM").unwrap_or(p.root);
        let entries = p.dict(sd).ok_or_else(|| {
            err(
                path,
                "`netEncM` is not a dict (expected ReDO's `<dataset>_netM_state.pth`)",
            )
        })?;
        let mut tensors = BTreeMap::new();
        for (k, v) in entries {
            let key = p
                .str(*k)
                .ok_or_else(|| err(path, "a state-dict key is not a string"))?;
            if is_ignored_stat(key) {
                continue;
            }
            let raw = ckpt.tensor(*v, key).map_err(|e| {
                err(
                    path,
                    format!(
                        "{e} (top-level keys other than `netEncM` mean this is not a netM checkpoint)"
                    ),
                )
            })?;
            let t = raw_to_tensor(&raw)
                .map_err(|e| err(path, format!("{key}: {e}")))?
                .to_kind(Kind::Float)
                .to_device(device);
            tensors.insert(key.to_string(), t);
        }
        Self::from_tensors(path, tensors)
    }

    /// Checks the tensors against the network their widths describe.
    pub fn from_tensors(
        path: &Path,
        tensors: BTreeMap<String, Tensor>,
    ) -> Result<Self, CheckpointError> {
        let stem = tensors.get("cnn.0.mods.7.weight").ok_or_else(|| {
            err(
                path,
                format!(
                    "no `cnn.0.mods.7.weight`: not a ReDO mask network; first keys: {}",
                    tensors
                        .keys()
                        .take(6)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        let nf = stem.size()[0];
        if nf < 4 || nf % 4 != 0 {
            return Err(err(
                path,
                format!("feature width {nf} is not a positive multiple of 4"),
            ));
        }
        let n_res = (1..)
            .take_while(|i| tensors.contains_key(&format!("cnn.{i}.blocs.0.weight")))
            .count();
        let expected = expected_shapes(nf, n_res);
        let mut problems = Vec::new();
        for (name, shape) in &expected {
            match tensors.get(name) {
                None => problems.push(format!("missing {name}")),
                Some(t) if t.size() != *shape => problems.push(format!(
                    "{name} has shape {:?}, expected {shape:?}",
                    t.size()
                )),
                Some(_) => {}
            }
        }
        for name in tensors.keys() {
            if !expected.contains_key(name) {
                problems.push(format!("unexpected {name}"));
            }
        }
        if !problems.is_empty() {
            return Err(CheckpointError::Mismatch {
                path: PathBuf::from(path),
                details: format!(
                    " (ReDO mask network, nf {nf}, {n_res} residual blocks) {}",
                    problems.join("; ")
                ),
            });
        }
        Ok(Self { nf, n_res, tensors })
    }

    fn t(&self, name: &str) -> &Tensor {
        &self.tensors[name]
    }

    fn conv(&self, x: &Tensor, name: &str, stride: i64, pad: i64) -> Tensor {
        let bias = self.tensors.get(&format!("{name}.bias"));
        x.conv2d(
            self.t(&format!("{name}.weight")),
            bias,
            [stride],
            [pad],
            [1],
            1,
        )
    }

    fn norm(&self, x: &Tensor, name: &str) -> Tensor {
        Tensor::instance_norm(
            x,
            Some(self.t(&format!("{name}.weight"))),
            Some(self.t(&format!("{name}.bias"))),
            None::<&Tensor>,
            None::<&Tensor>,
            true,
            0.1,
            IN_EPS,
            false,
        )
    }

    /// The pre-sigmoid foreground score, (B, 1, 128, 128), of normalised inputs (B, 3, 128, 128).
    pub fn logits(&self, x: &Tensor) -> Tensor {
        let _guard = tch::no_grad_guard();
        // Stem.
        let mut f = x.reflection_pad2d([3, 3, 3, 3]);
        f = self.conv(&f, "cnn.0.mods.1", 1, 0);
        f = self.norm(&f, "cnn.0.mods.2").relu();
        f = self.conv(&f, "cnn.0.mods.4", 2, 1);
        f = self.norm(&f, "cnn.0.mods.5").relu();
        f = self.conv(&f, "cnn.0.mods.7", 2, 1);
        f = self.norm(&f, "cnn.0.mods.8").relu();
        for i in 1..=self.n_res {
            let b = format!("cnn.{i}");
            let mut h = self.conv(&f, &format!("{b}.blocs.0"), 1, 1);
            h = self.norm(&h, &format!("{b}.blocs.1")).relu();
            h = self.conv(&h, &format!("{b}.blocs.3"), 1, 1);
            f = self.norm(&(h + &f), &format!("{b}.activationF.0")).relu();
        }
        // Pyramid pooling at the feature size (input / 4).
        let side = REDO_INPUT_SIZE / 4;
        let mut parts = vec![f.shallow_clone()];
        for (k, pool) in [side, side / 2, side / 3, side / 6].into_iter().enumerate() {
            let p = f.avg_pool2d([pool, pool], [pool, pool], [0, 0], false, true, None);
            let p = self.conv(&p, &format!("psp.{k}.1"), 1, 0);
            parts.push(p.upsample_bilinear2d([side, side], false, None, None));
        }
        let mut m = Tensor::cat(&parts, 1);
        // Up-sampling head.
        let up = |t: &Tensor| {
            let s = t.size();
            t.upsample_nearest2d([s[2] * 2, s[3] * 2], Some(2.0), Some(2.0))
        };
        m = self.conv(&up(&m), "out.mods.1", 1, 1);
        m = self.norm(&m, "out.mods.2").relu();
        m = self.conv(&up(&m), "out.mods.5", 1, 1);
        m = self.norm(&m, "out.mods.6").relu();
        m = m.reflection_pad2d([3, 3, 3, 3]);
        self.conv(&m, "out.mods.9", 1, 0)
    }

    /// The foreground probability (the official `ReDO.forward`, temperature 1), (B, 1, 128, 128).
    pub fn masks(&self, x: &Tensor) -> Tensor {
        self.logits(x).sigmoid()
    }
}

/// `(x / 255 − 0.5) / 0.5` of uint8 (B, 3, H, W) pixels, as float: `ToTensor` then `normalize='redo'`.
pub fn redo_inputs(nchw: &Tensor) -> Tensor {
    (nchw.to_kind(Kind::Float) / 255.0 - REDO_MEAN) / REDO_STD
}

/// Buffers of an InstanceNorm that tracks no running statistics, which PyTorch's load drops.
fn is_ignored_stat(key: &str) -> bool {
    key.ends_with(".running_mean")
        || key.ends_with(".running_var")
        || key.ends_with(".num_batches_tracked")
}

/// Every tensor of the network with its shape.
fn expected_shapes(nf: i64, n_res: usize) -> BTreeMap<String, Vec<i64>> {
    let mut m = BTreeMap::new();
    let mut conv = |name: String, out: i64, inp: i64, k: i64, bias: bool| {
        m.insert(format!("{name}.weight"), vec![out, inp, k, k]);
        if bias {
            m.insert(format!("{name}.bias"), vec![out]);
        }
    };
    conv("cnn.0.mods.1".into(), nf / 4, 3, 7, false);
    conv("cnn.0.mods.4".into(), nf / 2, nf / 4, 3, false);
    conv("cnn.0.mods.7".into(), nf, nf / 2, 3, false);
    for i in 1..=n_res {
        conv(format!("cnn.{i}.blocs.0"), nf, nf, 3, false);
        conv(format!("cnn.{i}.blocs.3"), nf, nf, 3, true);
    }
    for k in 0..4 {
        conv(format!("psp.{k}.1"), 1, nf, 1, true);
    }
    let wide = nf + 4;
    conv("out.mods.1".into(), wide / 2, wide, 3, false);
    conv("out.mods.5".into(), wide / 4, wide / 2, 3, false);
    conv("out.mods.9".into(), 1, wide / 4, 7, true);
    let mut norm = |name: String, c: i64| {
        m.insert(format!("{name}.weight"), vec![c]);
        m.insert(format!("{name}.bias"), vec![c]);
    };
    norm("cnn.0.mods.2".into(), nf / 4);
    norm("cnn.0.mods.5".into(), nf / 2);
    norm("cnn.0.mods.8".into(), nf);
    for i in 1..=n_res {
        norm(format!("cnn.{i}.blocs.1"), nf);
        norm(format!("cnn.{i}.activationF.0"), nf);
    }
    norm("out.mods.2".into(), wide / 2);
    norm("out.mods.6".into(), wide / 4);
    m
}
