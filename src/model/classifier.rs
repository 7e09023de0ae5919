//! A supervised ResNet classifier: the encoder plus torchvision's `fc` (Linear(d, classes) with bias), named
//! `encoder.*` and `fc.*`. This is what torchvision's supervised ResNet-50 imports as (Tables 2–3 compare it
//! with the contrastive models); its config says `method = "supervised"`.
use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Tensor};

use super::checkpoint::{
    infer_encoder, is_supervised, load_strict_into, CheckpointError, CONFIG_KEY, FORMAT, FORMAT_KEY,
};
use super::layers::Linear;
use super::resnet::pool;
use super::{ResNet, ResNetConfig};
use crate::data::formats::safetensors::{read_tensors, write_tensors, TensorFile};

/// The tag that marks a classifier config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Supervised {
    #[default]
    Supervised,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    #[serde(flatten)]
    pub encoder: ResNetConfig,
    pub method: Supervised,
    /// Outputs of `fc` (1000 for ImageNet).
    pub num_classes: i64,
}

#[derive(Debug)]
pub struct Classifier {
    pub config: ClassifierConfig,
    pub vs: VarStore,
    pub encoder: ResNet,
    pub fc: Linear,
}

impl Classifier {
    /// A freshly initialised classifier (the official code's initialisation, not torchvision's: only
    /// loaded weights are used so far).
    pub fn new(config: &ClassifierConfig, device: Device) -> Self {
        let vs = VarStore::new(device);
        let root = vs.root();
        let encoder = ResNet::new(&(&root / "encoder"), &config.encoder);
        let fc = Linear::new(&root / "fc", encoder.feat_dim(), config.num_classes, true);
        Self {
            config: config.clone(),
            vs,
            encoder,
            fc,
        }
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Logits (N, classes) of images (N, 3, H, W).
    pub fn logits(&self, x: &Tensor, train: bool) -> Tensor {
        self.fc.forward(&self.encoder.forward(x, train))
    }

    /// Logits of a layer4 map (N, D, h, w): global average pooling, then `fc`.
    pub fn logits_of_features(&self, a: &Tensor) -> Tensor {
        self.fc.forward(&pool(a))
    }

    pub fn save(
        &self,
        path: &Path,
        extra: &HashMap<String, String>,
    ) -> Result<(), CheckpointError> {
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut meta: std::collections::BTreeMap<String, String> =
            extra.clone().into_iter().collect();
        meta.insert(FORMAT_KEY.into(), FORMAT.into());
        meta.insert(
            CONFIG_KEY.into(),
            serde_json::to_string(&self.config).expect("config serialises"),
        );
        Ok(write_tensors(path, &vars, &meta)?)
    }

    /// Loads a classifier checkpoint strictly; the config comes from the metadata or, without one, from the
    /// tensors (`encoder.*` and `fc.weight`).
    pub fn load(path: &Path, device: Device) -> Result<Self, CheckpointError> {
        let file = read_tensors(path)?;
        let config = match file.metadata.get(CONFIG_KEY) {
            Some(json) if !is_supervised(json) => {
                return Err(CheckpointError::BadConfig {
                    path: path.into(),
                    msg: "this is a contrastive model (no `fc`), not a supervised classifier"
                        .into(),
                })
            }
            Some(json) => serde_json::from_str(json).map_err(|e| CheckpointError::BadConfig {
                path: path.into(),
                msg: e.to_string(),
            })?,
            None => infer_classifier_config(&file)?,
        };
        let mut model = Classifier::new(&config, device);
        model.load_strict(&file)?;
        Ok(model)
    }

    pub fn load_strict(&mut self, file: &TensorFile) -> Result<(), CheckpointError> {
        load_strict_into(&self.vs, file)
    }
}

/// Encoder and class count of a metadata-less classifier state dict.
pub fn infer_classifier_config(file: &TensorFile) -> Result<ClassifierConfig, CheckpointError> {
    let fc = file
        .tensors
        .get("fc.weight")
        .map(|t| t.size())
        .filter(|s| s.len() == 2)
        .ok_or_else(|| CheckpointError::Infer {
            path: file.path.clone(),
            msg: "no 2-d tensor 'fc.weight': not a classifier".into(),
        })?;
    Ok(ClassifierConfig {
        encoder: ResNetConfig {
            zero_init_residual: false,
            ..infer_encoder(file)?
        },
        method: Supervised::Supervised,
        num_classes: fc[0],
    })
}
