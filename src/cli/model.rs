//! `contracam model ...`
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use contracam::model::export::export_detectron2;
use contracam::model::import::{import_checkpoint, ImportedConfig, Layout};
use contracam::util::output::refuse_input_overwrite;

use super::{GlobalArgs, QuietArg};

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Convert a released PyTorch checkpoint (official Lightning .ckpt, facebookresearch MoCo v2 .pth.tar,
    /// torchvision .pth; zip or legacy serialization) into a contracam safetensors checkpoint, without
    /// Python and without running any pickle code.
    Import(ImportArgs),
    /// Write the encoder of a contracam checkpoint as a detectron2 weights pickle, exactly as the official
    /// `detection/convert-pretrain-to-detectron2.py` (stem./resN./convK.norm/shortcut names, numpy arrays,
    /// `__author__` "MOCO", `matching_heuristics` True), for Mask R-CNN fine-tuning (Table 5).
    ExportDetectron2(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// contracam checkpoint (safetensors with `encoder.*`).
    pub src: PathBuf,
    /// Output pickle for detectron2's MODEL.WEIGHTS.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub quiet: QuietArg,
}

/// Source layouts of `model import`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Detect the layout from the file's structure.
    Auto,
    /// Official object-aware-contrastive Lightning checkpoint (MoCo/BYOL).
    Lightning,
    /// facebookresearch/moco MoCo v2 checkpoint.
    MocoV2,
    /// torchvision ResNet state dict (supervised classifier with `fc`).
    Torchvision,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The PyTorch checkpoint to read.
    pub src: PathBuf,
    /// Output safetensors checkpoint (written atomically, only if the import succeeds).
    #[arg(long)]
    pub out: PathBuf,
    /// Checkpoint layout (auto: detected from the file's structure).
    #[arg(long, value_enum, default_value = "auto")]
    pub format: FormatArg,
    #[command(flatten)]
    pub quiet: QuietArg,
}

impl ModelCommand {
    /// The run-wide options this command was given.
    pub fn options(&self) -> GlobalArgs {
        match self {
            ModelCommand::Import(a) => GlobalArgs::of(None, None, None, Some(&a.quiet)),
            ModelCommand::ExportDetectron2(a) => GlobalArgs::of(None, None, None, Some(&a.quiet)),
        }
    }
}

pub fn run(cmd: ModelCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    match cmd {
        ModelCommand::Import(a) => import(a, global),
        ModelCommand::ExportDetectron2(a) => {
            refuse_input_overwrite(&a.out, "--out", &[("SRC", &a.src)])?;
            let r = export_detectron2(&a.src, &a.out)
                .with_context(|| format!("exporting {}", a.src.display()))?;
            if !global.quiet {
                eprintln!(
                    "wrote {} ({} encoder tensors, detectron2 names)",
                    r.out.display(),
                    r.renamed.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn import(a: ImportArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let layout = match a.format {
        FormatArg::Auto => None,
        FormatArg::Lightning => Some(Layout::Lightning),
        FormatArg::MocoV2 => Some(Layout::MocoV2),
        FormatArg::Torchvision => Some(Layout::Torchvision),
    };
    refuse_input_overwrite(&a.out, "--out", &[("SRC", &a.src)])?;
    let r = import_checkpoint(&a.src, &a.out, layout)
        .with_context(|| format!("importing {}", a.src.display()))?;
    if !global.quiet {
        let what = match &r.config {
            ImportedConfig::Contrastive(c) => format!(
                "{:?} {:?} stem {:?}, {:?} head",
                c.method, c.encoder.arch, c.encoder.stem, c.projector_form
            ),
            ImportedConfig::Classifier(c) => format!(
                "supervised {:?} stem {:?}, {} classes",
                c.encoder.arch, c.encoder.stem, c.num_classes
            ),
        };
        let dropped = r
            .dropped
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ");
        eprintln!(
            "imported {} ({}, {} serialization): {what}; {} tensors kept{} → {}",
            a.src.display(),
            r.record.source_format.name(),
            r.record.serialization,
            r.kept,
            if dropped.is_empty() {
                String::new()
            } else {
                format!(", dropped {dropped}")
            },
            r.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
