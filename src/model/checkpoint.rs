//! Checkpoints: safetensors with torchvision-style names and the model config in the metadata.
//! Loading is strict: missing, unexpected or mis-shaped tensors are one error that lists them all.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use super::{Arch, ContrastiveModel, Method, ModelConfig, ProjectorForm, ResNetConfig, Stem};
use crate::data::formats::safetensors::{read_tensors, write_tensors, TensorFile};
use crate::data::DataError;

/// Metadata key holding the JSON model config.
pub const CONFIG_KEY: &str = "contracam.model";
pub const FORMAT_KEY: &str = "contracam.format";
pub const FORMAT: &str = "contracam-checkpoint-v1";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    File(#[from] DataError),
    #[error("{path}: checkpoint does not match the model:{details}")]
    Mismatch { path: PathBuf, details: String },
    #[error("{path}: metadata '{CONFIG_KEY}' is not a valid model config: {msg}")]
    BadConfig { path: PathBuf, msg: String },
    #[error("{path}: cannot infer the model from its tensors: {msg}")]
    Infer { path: PathBuf, msg: String },
    #[error("{path}: {msg}")]
    Import { path: PathBuf, msg: String },
    /// A model config value outside its domain; `key` as a suite writes it (`model.width`).
    #[error("{key} = {value}: {msg}")]
    InvalidConfig {
        key: String,
        value: String,
        msg: String,
    },
    /// A checkpoint whose metadata describes a model that cannot be built.
    #[error("{path}: metadata '{CONFIG_KEY}': {problem}")]
    InvalidCheckpointConfig { path: PathBuf, problem: String },
}

impl ContrastiveModel {
    /// Saves every parameter and buffer, with the config and any extra metadata.
    pub fn save(
        &self,
        path: &Path,
        extra: &HashMap<String, String>,
    ) -> Result<(), CheckpointError> {
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut meta: BTreeMap<String, String> = extra.clone().into_iter().collect();
        meta.insert(FORMAT_KEY.into(), FORMAT.into());
        meta.insert(
            CONFIG_KEY.into(),
            serde_json::to_string(&self.config).expect("config serialises"),
        );
        Ok(write_tensors(path, &vars, &meta)?)
    }

    /// Loads a checkpoint: the config comes from its metadata, or is inferred from tensor names and shapes
    /// (torchvision/official state dicts have no metadata).
    pub fn load(path: &Path, device: Device) -> Result<Self, CheckpointError> {
        let file = read_tensors(path)?;
        let config = match file.metadata.get(CONFIG_KEY) {
            Some(json) => {
                if is_supervised(json) {
                    return Err(CheckpointError::BadConfig {
                        path: path.into(),
                        msg: "this is a supervised classifier (method = \"supervised\", with `fc`), not a \
                              contrastive model; use it where a classifier is expected"
                            .into(),
                    });
                }
                serde_json::from_str(json).map_err(|e| CheckpointError::BadConfig {
                    path: path.into(),
                    msg: e.to_string(),
                })?
            }
            None => infer_config(&file)?,
        };
        config
            .validate()
            .map_err(|e| CheckpointError::InvalidCheckpointConfig {
                path: path.into(),
                problem: e.to_string(),
            })?;
        let mut model = ContrastiveModel::new(&config, device);
        model.load_strict(&file)?;
        Ok(model)
    }

    /// Copies every tensor of `file` into this model, or fails listing every mismatch.
    pub fn load_strict(&mut self, file: &TensorFile) -> Result<(), CheckpointError> {
        load_strict_into(&self.vs, file)
    }
}

/// Whether a config's JSON names the supervised method.
pub(crate) fn is_supervised(json: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| {
            v.get("method")
                .and_then(|m| m.as_str())
                .map(|m| m == "supervised")
        })
        .unwrap_or(false)
}

/// Copies every tensor of `file` into the variables of `vs`, or fails listing every mismatch (missing,
/// unexpected, shape, float-vs-integer dtype) at once.
pub(crate) fn load_strict_into(
    vs: &tch::nn::VarStore,
    file: &TensorFile,
) -> Result<(), CheckpointError> {
    let vars = vs.variables();
    let mut problems = Vec::new();
    let mut missing: Vec<&String> = vars
        .keys()
        .filter(|k| !file.tensors.contains_key(*k))
        .collect();
    missing.sort();
    let unexpected: Vec<&String> = file
        .tensors
        .keys()
        .filter(|k| !vars.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "\n  missing ({}): {}",
            missing.len(),
            join(&missing)
        ));
    }
    if !unexpected.is_empty() {
        problems.push(format!(
            "\n  unexpected ({}): {}",
            unexpected.len(),
            join(&unexpected)
        ));
    }
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        if let Some(src) = file.tensors.get(name) {
            let dst = &vars[name];
            if src.size() != dst.size() {
                problems.push(format!(
                    "\n  shape of {name}: checkpoint {:?}, model {:?}",
                    src.size(),
                    dst.size()
                ));
            } else if is_float(src.kind()) != is_float(dst.kind()) {
                problems.push(format!(
                    "\n  dtype of {name}: checkpoint {:?}, model {:?}",
                    src.kind(),
                    dst.kind()
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(CheckpointError::Mismatch {
            path: file.path.clone(),
            details: problems.concat(),
        });
    }
    tch::no_grad(|| {
        for (name, dst) in &vars {
            let mut dst = dst.shallow_clone();
            dst.copy_(
                &file.tensors[name]
                    .to_device(dst.device())
                    .to_kind(dst.kind()),
            );
        }
    });
    Ok(())
}

fn is_float(k: Kind) -> bool {
    matches!(k, Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16)
}

fn join(v: &[&String]) -> String {
    const MAX: usize = 20;
    let mut s = v
        .iter()
        .take(MAX)
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if v.len() > MAX {
        s.push_str(&format!(", … ({} more)", v.len() - MAX));
    }
    s
}

/// Reads arch, width and stem off the `encoder.*` tensors of a torchvision-style state dict.
pub fn infer_encoder(file: &TensorFile) -> Result<ResNetConfig, CheckpointError> {
    let conv1 = file
        .tensors
        .get("encoder.conv1.weight")
        .map(|t| t.size())
        .filter(|s| s.len() == 4)
        .ok_or_else(|| CheckpointError::Infer {
            path: file.path.clone(),
            msg: "no 4-d tensor 'encoder.conv1.weight'".into(),
        })?;
    let arch = if file.tensors.contains_key("encoder.layer1.0.conv3.weight") {
        Arch::Resnet50
    } else {
        Arch::Resnet18
    };
    let stem = if conv1.get(2) == Some(&7) {
        Stem::Imagenet
    } else {
        Stem::Small
    };
    // zero_init_residual only affects initialisation, not the architecture.
    Ok(ResNetConfig {
        arch,
        width: conv1[0] as f64 / 64.0,
        stem,
        zero_init_residual: true,
    })
}

/// Reads arch, width, stem and head sizes off a torchvision-style state dict.
pub fn infer_config(file: &TensorFile) -> Result<ModelConfig, CheckpointError> {
    let err = |msg: &str| CheckpointError::Infer {
        path: file.path.clone(),
        msg: msg.into(),
    };
    // Heads are 2-d (out, in) weights; anything else is left for the strict load to report.
    let shape = |n: &str| {
        file.tensors
            .get(n)
            .map(|t| t.size())
            .filter(|s| s.len() == 2)
    };
    let encoder = infer_encoder(file)?;
    if file.tensors.contains_key("fc.weight") && !file.tensors.contains_key("projector.0.weight") {
        return Err(err(
            "it has `fc` and no projector: a supervised classifier, not a contrastive model",
        ));
    }
    let p0 =
        shape("projector.0.weight").ok_or_else(|| err("no 2-d tensor 'projector.0.weight'"))?;
    // facebookresearch MoCo v2's head has its output layer at index 2 (no BatchNorm).
    let projector_form = if file.tensors.contains_key("projector.2.weight") {
        ProjectorForm::MlpBias
    } else {
        ProjectorForm::Bn
    };
    let out = match projector_form {
        ProjectorForm::Bn => "projector.3.weight",
        ProjectorForm::MlpBias => "projector.2.weight",
    };
    let p3 = shape(out).ok_or_else(|| err(&format!("no 2-d tensor '{out}'")))?;
    let pred = shape("predictor.0.weight");
    let method = if pred.is_some() {
        Method::Byol
    } else {
        Method::Moco
    };
    Ok(ModelConfig {
        encoder,
        method,
        proj_hidden: Some(p0[0]),
        proj_dim: Some(p3[0]),
        pred_hidden: pred.map(|p| p[0]),
        projector_form,
    })
}
