//! `contracam data ...`
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use contracam::data::synth::SynthConfig;
use contracam::data::synth_export::{write_dir, ExportSizes};

use super::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Write the built-in synthetic dataset as PNGs with index.json, index.html and preview.png.
    Synth(SynthArgs),
}

#[derive(Debug, clap::Args)]
pub struct SynthArgs {
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// A TOML file with synthetic-data settings (the `[data]` table format of a suite); defaults otherwise.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    pub train_scenes: usize,
    #[arg(long, default_value_t = 64)]
    pub test_scenes: usize,
    #[arg(long, default_value_t = 32)]
    pub crops: usize,
    #[arg(long, default_value_t = 32)]
    pub bg_challenge: usize,
}

pub fn run(cmd: DataCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    match cmd {
        DataCommand::Synth(a) => {
            let cfg: SynthConfig = match &a.config {
                Some(p) => {
                    let text = std::fs::read_to_string(p)
                        .with_context(|| format!("reading {}", p.display()))?;
                    toml::from_str(&text).with_context(|| {
                        format!("{}: invalid synthetic-data config", p.display())
                    })?
                }
                None => SynthConfig::default(),
            };
            let seed = global.seed.unwrap_or(0);
            let sizes = ExportSizes {
                train_scenes: a.train_scenes,
                test_scenes: a.test_scenes,
                crops_per_split: a.crops,
                bg_challenge_per_variant: a.bg_challenge,
            };
            write_dir(&cfg, seed, &sizes, &a.out)?;
            if !global.quiet {
                eprintln!("wrote {} (open index.html; seed {seed})", a.out.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
