//! ResNet-18/50 with torchvision's architecture and parameter names (`fc` removed), an optional width
//! multiplier and small-input stem, access to the layer4 map, and the official resolution-expansion trick.
use serde::{Deserialize, Serialize};
use tch::nn::Path;
use tch::Tensor;

use super::layers::{BatchNorm, Conv2d};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Resnet18,
    Resnet50,
}

impl Arch {
    fn blocks(self) -> [usize; 4] {
        match self {
            Arch::Resnet18 => [2, 2, 2, 2],
            Arch::Resnet50 => [3, 4, 6, 3],
        }
    }
    fn expansion(self) -> i64 {
        match self {
            Arch::Resnet18 => 1,
            Arch::Resnet50 => 4,
        }
    }
}

/// The stem: torchvision's 7×7/2 conv + 3×3/2 max-pool, or a 3×3/1 conv without pooling for small inputs
/// (CPU-scale runs at 32–96 px, where the ImageNet stem would leave a 2×2 layer4 map).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Stem {
    #[default]
    Imagenet,
    Small,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResNetConfig {
    pub arch: Arch,
    /// Channel multiplier on torchvision's widths (64, 128, 256, 512); 1.0 is the standard network.
    #[serde(default = "one")]
    pub width: f64,
    #[serde(default)]
    pub stem: Stem,
    /// Zero the last BN weight of each residual branch (torchvision `zero_init_residual`; the official code
    /// uses true).
    #[serde(default = "yes")]
    pub zero_init_residual: bool,
}

fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}

impl ResNetConfig {
    pub fn base_width(&self) -> i64 {
        ((64.0 * self.width).round() as i64).max(1)
    }
    /// Dimension of the pooled feature (512 for ResNet-18, 2048 for ResNet-50 at width 1).
    pub fn feat_dim(&self) -> i64 {
        self.base_width() * 8 * self.arch.expansion()
    }

    /// Checks the width before any allocation: finite, at least one channel, at most `MAX_WIDTH`.
    pub fn validate(&self) -> Result<(), super::CheckpointError> {
        if !(self.width.is_finite() && self.width * 64.0 >= 0.5 && self.width <= MAX_WIDTH) {
            return Err(super::CheckpointError::InvalidConfig {
                key: "model.width".into(),
                value: self.width.to_string(),
                msg: format!(
                    "must be in [1/128, {MAX_WIDTH}] (a multiplier of torchvision's 64..512 channels; \
                     1 is the standard network, {MAX_WIDTH} already has {}x its parameters)",
                    (MAX_WIDTH * MAX_WIDTH) as i64
                ),
            });
        }
        Ok(())
    }
}

/// Widest encoder accepted (1024..8192 channels per stage).
pub const MAX_WIDTH: f64 = 16.0;

#[derive(Debug)]
enum Block {
    Basic {
        conv1: Conv2d,
        bn1: BatchNorm,
        conv2: Conv2d,
        bn2: BatchNorm,
        down: Option<(Conv2d, BatchNorm)>,
    },
    Bottleneck {
        conv1: Conv2d,
        bn1: BatchNorm,
        conv2: Conv2d,
        bn2: BatchNorm,
        conv3: Conv2d,
        bn3: BatchNorm,
        down: Option<(Conv2d, BatchNorm)>,
    },
}

impl Block {
    /// `stride` is the block's stride after any resolution expansion (1 or the configured one).
    /// ReLU and the residual sum work in place on the fresh BatchNorm outputs, as torchvision's
    /// `inplace=True`: the same arithmetic (bit-identical results), but no new activation-sized tensor per
    /// op, whose allocation and page faults cost a ResNet-50 ContraCAM pass on CPU about an eighth of its
    /// time. Autograd allows it: BatchNorm's backward does not read its output. Each activation is freed as
    /// soon as the next one exists (reassignment, not shadowing, which would keep every one of them alive to
    /// the end of the block), as torchvision's `out = ...`: at ResNet-50 sizes a longer-lived one is freed
    /// memory the allocator cannot hand to the next op, which then faults in fresh pages.
    fn forward(&self, x: &Tensor, train: bool, stride: i64) -> Tensor {
        let shortcut = |down: &Option<(Conv2d, BatchNorm)>| match down {
            Some((c, b)) => conv_bn(c, b, x, stride, train),
            None => x.shallow_clone(),
        };
        match self {
            Block::Basic {
                conv1,
                bn1,
                conv2,
                bn2,
                down,
            } => {
                let mut y = conv_bn(conv1, bn1, x, stride, train).relu_();
                y = conv_bn(conv2, bn2, &y, conv2.stride, train);
                y += shortcut(down);
                y.relu_()
            }
            Block::Bottleneck {
                conv1,
                bn1,
                conv2,
                bn2,
                conv3,
                bn3,
                down,
            } => {
                let mut y = conv_bn(conv1, bn1, x, conv1.stride, train).relu_();
                y = conv_bn(conv2, bn2, &y, stride, train).relu_();
                y = conv_bn(conv3, bn3, &y, conv3.stride, train);
                y += shortcut(down);
                y.relu_()
            }
        }
    }
}

/// BatchNorm of a convolution; the convolution's output is freed on return, before the caller lets go of
/// `x` (torchvision's order).
fn conv_bn(conv: &Conv2d, bn: &BatchNorm, x: &Tensor, stride: i64, train: bool) -> Tensor {
    bn.forward(&conv.forward_with_stride(x, stride), train)
}

#[derive(Debug)]
pub struct ResNet {
    pub config: ResNetConfig,
    conv1: Conv2d,
    bn1: BatchNorm,
    /// layers[i][j] is `layer{i+1}.{j}`; strides are 1, 2, 2, 2 for the first block of each layer.
    layers: Vec<Vec<Block>>,
}

impl ResNet {
    pub fn new(p: &Path, config: &ResNetConfig) -> Self {
        let w = config.base_width();
        let (conv1, pool) = match config.stem {
            Stem::Imagenet => (Conv2d::new(p / "conv1", 3, w, 7, 2, 3), true),
            Stem::Small => (Conv2d::new(p / "conv1", 3, w, 3, 1, 1), false),
        };
        let _ = pool;
        let bn1 = BatchNorm::new(p / "bn1", w, false);
        let exp = config.arch.expansion();
        let mut inplanes = w;
        let mut layers = Vec::new();
        for (li, &n) in config.arch.blocks().iter().enumerate() {
            let planes = w << li;
            let lp = p / format!("layer{}", li + 1);
            let mut blocks = Vec::new();
            for bi in 0..n {
                let bp = &lp / bi;
                let stride = if bi == 0 && li > 0 { 2 } else { 1 };
                let needs_down = bi == 0 && (stride != 1 || inplanes != planes * exp);
                let down = needs_down.then(|| {
                    let dp = &bp / "downsample";
                    (
                        Conv2d::new(&dp / 0, inplanes, planes * exp, 1, stride, 0),
                        BatchNorm::new(&dp / 1, planes * exp, false),
                    )
                });
                let zero = config.zero_init_residual;
                let block = match config.arch {
                    Arch::Resnet18 => Block::Basic {
                        conv1: Conv2d::new(&bp / "conv1", inplanes, planes, 3, stride, 1),
                        bn1: BatchNorm::new(&bp / "bn1", planes, false),
                        conv2: Conv2d::new(&bp / "conv2", planes, planes, 3, 1, 1),
                        bn2: BatchNorm::new(&bp / "bn2", planes, zero),
                        down,
                    },
                    Arch::Resnet50 => Block::Bottleneck {
                        conv1: Conv2d::new(&bp / "conv1", inplanes, planes, 1, 1, 0),
                        bn1: BatchNorm::new(&bp / "bn1", planes, false),
                        conv2: Conv2d::new(&bp / "conv2", planes, planes, 3, stride, 1),
                        bn2: BatchNorm::new(&bp / "bn2", planes, false),
                        conv3: Conv2d::new(&bp / "conv3", planes, planes * exp, 1, 1, 0),
                        bn3: BatchNorm::new(&bp / "bn3", planes * exp, zero),
                        down,
                    },
                };
                blocks.push(block);
                inplanes = planes * exp;
            }
            layers.push(blocks);
        }
        Self {
            config: config.clone(),
            conv1,
            bn1,
            layers,
        }
    }

    pub fn feat_dim(&self) -> i64 {
        self.config.feat_dim()
    }

    /// The layer4 activation before global pooling, (N, D, h, w).
    ///
    /// `expand_res` is the official resolution trick: 2 sets stride 1 in every conv of `layer4[0]`, 4 also in
    /// `layer3[0]` (dilation unchanged). Unlike the official code this does not mutate the network.
    pub fn features(&self, x: &Tensor, train: bool, expand_res: u32) -> Tensor {
        let mut y = self.bn1.forward(&self.conv1.forward(x), train).relu_();
        if self.config.stem == Stem::Imagenet {
            y = y.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        }
        for (li, blocks) in self.layers.iter().enumerate() {
            for (bi, block) in blocks.iter().enumerate() {
                let base = if bi == 0 && li > 0 { 2 } else { 1 };
                let expanded = (li == 3 && expand_res >= 2) || (li == 2 && expand_res >= 4);
                y = block.forward(&y, train, if expanded { 1 } else { base });
            }
        }
        y
    }

    /// Global-average-pooled features, (N, D): the encoder output of the official code (`fc = Identity`).
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        pool(&self.features(x, train, 1))
    }
}

/// Global average pooling of a (N, C, h, w) map to (N, C).
pub fn pool(a: &Tensor) -> Tensor {
    a.mean_dim([2i64, 3].as_slice(), false, a.kind())
}
