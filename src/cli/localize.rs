//! `contracam localize ...`
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use contracam::localize::{contrastive_cam, CamConfig};
use contracam::model::ContrastiveModel;
use contracam::util::tensor_file::{self, TensorFile};
use tch::{Kind, Tensor};

use super::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum LocalizeCommand {
    /// Contrastive CAM of a batch of images, as the official code (negatives = the rest of each batch).
    Cam(CamArgs),
}

#[derive(Debug, clap::Args)]
pub struct CamArgs {
    /// Model checkpoint (safetensors, torchvision-style names `encoder.*`, `projector.*`).
    #[arg(long)]
    pub weights: PathBuf,
    /// safetensors file holding the ImageNet-normalised images, float32 (N, 3, H, W).
    #[arg(long)]
    pub inputs: PathBuf,
    /// Name of the image tensor inside --inputs.
    #[arg(long)]
    pub input_key: String,
    /// Resolution expansion: 1, 2 (stride 1 in layer4[0]) or 4 (also layer3[0]).
    #[arg(long, default_value_t = 1)]
    pub expand_res: u32,
    /// Iterations of ContraCAM (the official boxes use 10).
    #[arg(long, default_value_t = 1)]
    pub iters: usize,
    /// Keep negative α (Table 1's "w/o negative signal removal").
    #[arg(long)]
    pub no_negative_removal: bool,
    /// Images per ContraCAM batch; the other images of a batch are the negatives, so this changes results
    /// (official: 256, unshuffled).
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Output safetensors file; tensor `cam` (N, 1, H, W) float32.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(cmd: LocalizeCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    match cmd {
        LocalizeCommand::Cam(a) => cam(a, global),
    }
}

fn cam(a: CamArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.batch_size > 0, "--batch-size must be at least 1");
    let device = global.device.resolve()?;
    let model = ContrastiveModel::load(&a.weights, device)
        .with_context(|| format!("loading --weights {}", a.weights.display()))?;
    let inputs = TensorFile::read(&a.inputs).context("reading --inputs")?;
    let x = inputs.get(&a.input_key).context("--input-key")?;
    let shape = x.size();
    anyhow::ensure!(
        shape.len() == 4 && shape[1] == 3 && x.kind() == Kind::Float,
        "{}: tensor '{}' must be float32 (N, 3, H, W) ImageNet-normalised images, got {:?} {:?}",
        a.inputs.display(),
        a.input_key,
        x.kind(),
        shape
    );
    let cfg = CamConfig {
        expand_res: a.expand_res,
        iters: a.iters,
        negative_removal: !a.no_negative_removal,
    };
    let mut outs = Vec::new();
    for chunk in x.split(a.batch_size as i64, 0) {
        outs.push(contrastive_cam(&model, &chunk, &cfg)?.to_device(tch::Device::Cpu));
    }
    let cam = Tensor::cat(&outs, 0);
    let meta = HashMap::from([
        (
            "contracam.cam_config".to_string(),
            serde_json::to_string(&cfg)?,
        ),
        ("contracam.batch_size".to_string(), a.batch_size.to_string()),
        (
            "contracam.weights".to_string(),
            a.weights.display().to_string(),
        ),
        (
            "contracam.version".to_string(),
            contracam::VERSION.to_string(),
        ),
    ]);
    tensor_file::write(&a.out, &[("cam".to_string(), cam)], &meta)?;
    if !global.quiet {
        eprintln!(
            "wrote {} (cam {:?})",
            a.out.display(),
            [shape[0], 1, shape[2], shape[3]]
        );
    }
    Ok(ExitCode::SUCCESS)
}
