//! Models: ResNet encoders with torchvision names, MoCo/BYOL heads, a supervised classifier, strict safetensors
//! checkpoints, and the import of released PyTorch checkpoints.
pub mod checkpoint;
pub mod classifier;
pub mod export;
pub mod heads;
pub mod import;
pub mod layers;
pub mod redo;
pub mod resnet;

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Tensor};

pub use checkpoint::CheckpointError;
pub use classifier::{Classifier, ClassifierConfig};
pub use heads::ProjectorForm;
pub use resnet::{Arch, ResNet, ResNetConfig, Stem};

use heads::MlpHead;

/// Which self-supervised method the heads belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// MoCo v2 as the official code: projector d → d → 128 (with BN), no predictor.
    Moco,
    /// BYOL: projector d → 4096 → 256 and predictor 256 → 4096 → 256.
    Byol,
}

/// Encoder plus heads. Parameter names are `encoder.*`, `projector.*`, `predictor.*` as the official
/// Lightning state dict (minus the momentum network).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(flatten)]
    pub encoder: ResNetConfig,
    pub method: Method,
    /// Projector hidden width; default: the feature dim (MoCo) or 4096 (BYOL).
    #[serde(default)]
    pub proj_hidden: Option<i64>,
    /// Projector output; default 128 (MoCo) or 256 (BYOL).
    #[serde(default)]
    pub proj_dim: Option<i64>,
    /// Predictor hidden width (BYOL); default 4096.
    #[serde(default)]
    pub pred_hidden: Option<i64>,
    /// Head form: the official code's (with BN, the default) or facebookresearch MoCo v2's (biases, no BN).
    #[serde(default, skip_serializing_if = "ProjectorForm::is_bn")]
    pub projector_form: ProjectorForm,
}

impl ModelConfig {
    pub fn proj_hidden(&self) -> i64 {
        self.proj_hidden.unwrap_or(match self.method {
            Method::Moco => self.encoder.feat_dim(),
            Method::Byol => 4096,
        })
    }
    pub fn proj_dim(&self) -> i64 {
        self.proj_dim.unwrap_or(match self.method {
            Method::Moco => 128,
            Method::Byol => 256,
        })
    }
    pub fn pred_hidden(&self) -> i64 {
        self.pred_hidden.unwrap_or(4096)
    }

    /// Checks the config before anything is allocated; errors name the key as a suite writes it.
    pub fn validate(&self) -> Result<(), CheckpointError> {
        self.encoder.validate()?;
        for (key, v) in [
            ("model.proj_hidden", self.proj_hidden),
            ("model.proj_dim", self.proj_dim),
            ("model.pred_hidden", self.pred_hidden),
        ] {
            if let Some(v) = v {
                if !(1..=MAX_HEAD_WIDTH).contains(&v) {
                    return Err(CheckpointError::InvalidConfig {
                        key: key.into(),
                        value: v.to_string(),
                        msg: format!("must be in 1..={MAX_HEAD_WIDTH}"),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Widest projector/predictor layer accepted: 4× BYOL's 4096.
pub const MAX_HEAD_WIDTH: i64 = 16384;

/// The network that contrastive training optimises and ContraCAM explains.
#[derive(Debug)]
pub struct ContrastiveModel {
    pub config: ModelConfig,
    pub vs: VarStore,
    pub encoder: ResNet,
    pub projector: MlpHead,
    pub predictor: Option<MlpHead>,
}

impl ContrastiveModel {
    /// A freshly initialised model (initialisation draws from torch's global generator: seed it first).
    pub fn new(config: &ModelConfig, device: Device) -> Self {
        let vs = VarStore::new(device);
        let root = vs.root();
        let encoder = ResNet::new(&(&root / "encoder"), &config.encoder);
        let d = encoder.feat_dim();
        let projector = MlpHead::with_form(
            &(&root / "projector"),
            d,
            config.proj_hidden(),
            config.proj_dim(),
            config.projector_form,
        );
        let predictor = (config.method == Method::Byol).then(|| {
            MlpHead::new(
                &(&root / "predictor"),
                config.proj_dim(),
                config.pred_hidden(),
                config.proj_dim(),
            )
        });
        Self {
            config: config.clone(),
            vs,
            encoder,
            projector,
            predictor,
        }
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Unit-norm projection of pooled features.
    pub fn project(&self, x: &Tensor, train: bool) -> Tensor {
        self.projector
            .forward(&self.encoder.forward(x, train), train)
    }
}
