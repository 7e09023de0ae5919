//! Import of released PyTorch checkpoints into contracam checkpoints (safetensors with the model config in
//! the metadata), through the data layer's pickle-free checkpoint reader. Three layouts:
//! - the official Lightning `.ckpt` (MoCo/BYOL, ResNet-18/50, 224-px or 32-px stem): `encoder.*`,
//!   `projector.*`, `predictor.*` kept; the momentum network `_encoder.*`/`_projector.*`, the MoCo `queue`
//!   and the training augmentation module's state `diff_transform.*` dropped;
//! - facebookresearch MoCo v2 `.pth.tar`: `module.encoder_q.<x>` → `encoder.<x>`, `module.encoder_q.fc.N.*`
//!   → `projector.N.*` (its head: biases, no BatchNorm), the key encoder `encoder_k` and the queue dropped;
//! - torchvision `.pth`: `<x>` → `encoder.<x>`, `fc.*` kept as the classifier (`method = "supervised"`).
//!
//! Tensors keep their bytes and dtypes. The result is checked against the model its config describes with
//! the same strict load that [`ContrastiveModel::load`] / [`Classifier::load`] do, before anything is
//! written; the file is written atomically.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::checkpoint::{infer_config, CheckpointError, CONFIG_KEY, FORMAT, FORMAT_KEY};
use super::classifier::infer_classifier_config;
use super::{Classifier, ClassifierConfig, ContrastiveModel, ModelConfig};
use crate::data::formats::pickle::Val;
use crate::data::formats::safetensors::{write_tensors, TensorFile};
use crate::data::formats::torch_checkpoint::{Dtype, RawTensor, TorchCheckpoint};

/// Metadata key of the import record ([`ImportRecord`] as JSON).
pub const IMPORT_KEY: &str = "contracam.import";

/// The checkpoint layouts `model import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// The official object-aware-contrastive Lightning checkpoint.
    Lightning,
    /// facebookresearch/moco's MoCo v2 checkpoint.
    MocoV2,
    /// A torchvision ResNet state dict.
    Torchvision,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Lightning => "lightning",
            Layout::MocoV2 => "moco-v2",
            Layout::Torchvision => "torchvision",
        }
    }
}

/// The config of what was imported.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ImportedConfig {
    Contrastive(ModelConfig),
    Classifier(ClassifierConfig),
}

/// Where an imported checkpoint came from, stored in its metadata under [`IMPORT_KEY`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportRecord {
    pub source_format: Layout,
    /// `zip` (torch ≥ 1.6) or `legacy`.
    pub serialization: String,
    pub source_file: String,
    pub source_sha256: String,
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportReport {
    pub out: PathBuf,
    pub record: ImportRecord,
    pub config: ImportedConfig,
    /// Tensors written.
    pub kept: usize,
    /// Tensors dropped, counted by what they were (e.g. `momentum encoder`).
    pub dropped: BTreeMap<&'static str, usize>,
}

/// Reads `src` (a layout of [`Layout`], or detected with `None`) and writes the contracam checkpoint `out`.
/// Nothing is written unless every step succeeds.
pub fn import_checkpoint(
    src: &Path,
    out: &Path,
    layout: Option<Layout>,
) -> Result<ImportReport, CheckpointError> {
    let ckpt = TorchCheckpoint::open(src)?;
    let err = |msg: String| CheckpointError::Import {
        path: src.into(),
        msg,
    };
    let (found, state_dict) = locate(&ckpt).map_err(&err)?;
    let layout = match layout {
        None => found,
        Some(l) if l == found => l,
        Some(l) => {
            return Err(err(format!(
                "--format {} was asked for, but the file has the {} layout",
                l.name(),
                found.name()
            )))
        }
    };
    let p = &ckpt.pickle;
    let entries = p
        .dict(state_dict)
        .ok_or_else(|| err("the state dict is not a dict".into()))?;
    let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut dropped: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut unknown = Vec::new();
    for (k, v) in entries {
        let key = p
            .str(*k)
            .ok_or_else(|| err("a state-dict key is not a string".into()))?;
        match rename(layout, key) {
            Mapped::Keep(name) => {
                let t =
                    to_tensor(&ckpt.tensor(*v, key)?).map_err(|e| err(format!("{key}: {e}")))?;
                if tensors.insert(name.clone(), t).is_some() {
                    return Err(err(format!("two tensors map to {name}")));
                }
            }
            Mapped::Drop(what) => *dropped.entry(what).or_default() += 1,
            Mapped::Unknown => unknown.push(key.to_string()),
            Mapped::Unsupported(why) => return Err(err(format!("{key}: {why}"))),
        }
    }
    if !unknown.is_empty() {
        return Err(err(format!(
            "{} tensors fit no part of the {} layout: {}",
            unknown.len(),
            layout.name(),
            unknown.join(", ")
        )));
    }
    let mut file = TensorFile {
        path: out.into(),
        tensors,
        metadata: BTreeMap::new(),
    };
    // The config comes from the tensors (names and shapes say arch, width, stem, head sizes and form), and
    // the strict load of a model built from it checks every name, shape and dtype class.
    let config = if layout == Layout::Torchvision {
        let cfg = infer_classifier_config(&file)?;
        Classifier::new(&cfg, Device::Cpu).load_strict(&file)?;
        ImportedConfig::Classifier(cfg)
    } else {
        let cfg = infer_config(&file)?;
        ContrastiveModel::new(&cfg, Device::Cpu).load_strict(&file)?;
        ImportedConfig::Contrastive(cfg)
    };
    let record = ImportRecord {
        source_format: layout,
        serialization: ckpt.serialization.name().into(),
        source_file: src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        source_sha256: crate::data::source::hash::hash_file(src, false, |_| {})?.sha256,
    };
    file.metadata = BTreeMap::from([
        (FORMAT_KEY.to_string(), FORMAT.to_string()),
        (
            CONFIG_KEY.to_string(),
            serde_json::to_string(&config).expect("config serialises"),
        ),
        (
            IMPORT_KEY.to_string(),
            serde_json::to_string(&record).expect("record serialises"),
        ),
    ]);
    let kept = file.tensors.len();
    let named: Vec<(String, Tensor)> = std::mem::take(&mut file.tensors).into_iter().collect();
    write_tensors(out, &named, &file.metadata)?;
    Ok(ImportReport {
        out: out.into(),
        record,
        config,
        kept,
        dropped,
    })
}

/// The layout and the state dict of a checkpoint, from its structure.
fn locate(ckpt: &TorchCheckpoint) -> Result<(Layout, Val), String> {
    let p = &ckpt.pickle;
    let root = p.root;
    let keys = |d: Val| -> Vec<String> {
        p.dict(d)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|(k, _)| p.str(*k).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    if p.dict(root).is_none() {
        return Err("the checkpoint is not a dict".into());
    }
    if let Some(sd) = p.get(root, "state_dict") {
        let ks = keys(sd);
        if ks.iter().any(|k| k.starts_with("encoder.")) {
            return Ok((Layout::Lightning, sd));
        }
        if ks
            .iter()
            .any(|k| k.starts_with("module.encoder_q.") || k.starts_with("encoder_q."))
        {
            return Ok((Layout::MocoV2, sd));
        }
        return Err(format!(
            "its `state_dict` has neither `encoder.*` (official Lightning) nor `module.encoder_q.*` \
             (MoCo v2) keys; first keys: {}",
            first(&ks)
        ));
    }
    let ks = keys(root);
    if ks.iter().any(|k| k == "conv1.weight") && ks.iter().any(|k| k == "fc.weight") {
        return Ok((Layout::Torchvision, root));
    }
    Err(format!(
        "no known layout: no `state_dict` entry and not a torchvision ResNet state dict (conv1.*, fc.*); \
         top-level keys: {}",
        first(&ks)
    ))
}

fn first(keys: &[String]) -> String {
    let mut s = keys.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
    if keys.len() > 8 {
        s.push_str(&format!(", … ({} in all)", keys.len()));
    }
    s
}

enum Mapped {
    Keep(String),
    Drop(&'static str),
    Unknown,
    Unsupported(&'static str),
}

/// The contracam name of a state-dict key, or why it is dropped.
fn rename(layout: Layout, key: &str) -> Mapped {
    match layout {
        Layout::Lightning => {
            if ["encoder.", "projector.", "predictor."]
                .iter()
                .any(|p| key.starts_with(p))
            {
                Mapped::Keep(key.to_string())
            } else if key.starts_with("_encoder.") || key.starts_with("_projector.") {
                Mapped::Drop("momentum/target network")
            } else if key == "queue" || key == "queue_ptr" {
                Mapped::Drop("MoCo queue")
            } else if key.starts_with("diff_transform.") {
                Mapped::Drop("training augmentation state")
            } else {
                Mapped::Unknown
            }
        }
        Layout::MocoV2 => {
            let k = key.strip_prefix("module.").unwrap_or(key);
            if let Some(rest) = k.strip_prefix("encoder_q.") {
                match rest.strip_prefix("fc.") {
                    Some(head) if head.starts_with(|c: char| c.is_ascii_digit()) => {
                        Mapped::Keep(format!("projector.{head}"))
                    }
                    // MoCo v1 (or v2 without --mlp): a single linear layer, no MLP head.
                    Some(_) => Mapped::Unsupported(
                        "a single-layer fc head (MoCo v1 or v2 without --mlp); only the MLP head is supported",
                    ),
                    None => Mapped::Keep(format!("encoder.{rest}")),
                }
            } else if k.starts_with("encoder_k.") {
                Mapped::Drop("momentum (key) encoder")
            } else if k == "queue" || k == "queue_ptr" {
                Mapped::Drop("MoCo queue")
            } else {
                Mapped::Unknown
            }
        }
        Layout::Torchvision => {
            if key.starts_with("fc.") {
                Mapped::Keep(key.to_string())
            } else {
                Mapped::Keep(format!("encoder.{key}"))
            }
        }
    }
}

/// A libtorch tensor with exactly the raw tensor's bytes (also ReDO's mask network, `model::redo`).
pub(crate) fn raw_to_tensor(t: &RawTensor) -> Result<Tensor, String> {
    to_tensor(t)
}

fn to_tensor(t: &RawTensor) -> Result<Tensor, String> {
    let kind = match t.dtype {
        Dtype::F64 => Kind::Double,
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::Bool => Kind::Bool,
    };
    let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
    Tensor::f_from_data_size(&t.data, &shape, kind).map_err(|e| e.to_string())
}
