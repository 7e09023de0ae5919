//! `contracam data ...`: `synth` and `build` here; the torch-free rest in `lite::data`.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use contracam::data::synth::export::{write_dir, ExportSizes};
use contracam::data::synth::SynthConfig;

use super::lite::{self, data::DataArgs, data::DataLiteCommand};
use super::{GlobalArgs, QuietArg, SeedArg, ThreadsArg};

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Write the built-in synthetic dataset as PNGs with index.json, index.html and preview.png; the scene
    /// splits also as `scenes/<split>.safetensors` (what `localize cam`/`crf` read) and
    /// `index/scenes_<split>.jsonl` (ground truth for `eval miou`/`maxboxacc --dataset DIR:scenes_<split>`).
    #[command(display_order = 0)]
    Synth(SynthArgs),
    // list, fetch, verify, instructions, register: torch-free, shared with the `contracam` launcher.
    #[command(flatten)]
    Lite(DataLiteCommand),
    /// Fetch, verify, extract and write the sample indices.
    #[command(display_order = 4)]
    Build {
        #[command(flatten)]
        args: DataArgs,
        #[command(flatten)]
        quiet: QuietArg,
        #[command(flatten)]
        threads: ThreadsArg,
        /// User-provided folder (ImageNet class folders for imagenet9, the Stylized-ImageNet output).
        #[arg(long)]
        source: Option<PathBuf>,
        /// Download files that have no published checksum and record the hashes computed.
        #[arg(long)]
        register: bool,
        /// Dataset names from the manifest (`data list` shows them).
        #[arg(required = true)]
        names: Vec<String>,
    },
}

impl DataCommand {
    /// The run-wide options this command was given.
    pub fn options(&self) -> GlobalArgs {
        match self {
            DataCommand::Synth(a) => {
                GlobalArgs::of(None, Some(&a.seed), Some(&a.threads), Some(&a.quiet))
            }
            DataCommand::Lite(c) => GlobalArgs::of(None, None, None, c.quiet()),
            DataCommand::Build { quiet, threads, .. } => {
                GlobalArgs::of(None, None, Some(threads), Some(quiet))
            }
        }
    }
}

pub fn run(cmd: DataCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    match cmd {
        DataCommand::Synth(a) => synth(a, global),
        DataCommand::Lite(c) => lite::data::run(c, global.quiet),
        DataCommand::Build {
            args,
            source,
            register,
            names,
            ..
        } => {
            let mut d = lite::data::open(&args, global.quiet)?;
            d.opts.source = source;
            d.opts.register = register;
            for p in contracam::data::ops::build(&d, &names)? {
                println!("{}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct SynthArgs {
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// A TOML file whose top-level keys are those of a suite's `[data]` table (no `[data]` header); defaults otherwise.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Multi-object training scenes to write.
    #[arg(long, default_value_t = 64)]
    pub train_scenes: usize,
    /// Multi-object test scenes to write (with ground-truth masks and boxes).
    #[arg(long, default_value_t = 64)]
    pub test_scenes: usize,
    /// Single-object crops per split (train, val, test) for linear evaluation.
    #[arg(long, default_value_t = 32)]
    pub crops: usize,
    /// Images per Background Challenge variant (ORIGINAL, ONLY-BG-B, MIXED-RAND, ...).
    #[arg(long, default_value_t = 32)]
    pub bg_challenge: usize,
    #[command(flatten)]
    pub seed: SeedArg,
    #[command(flatten)]
    pub threads: ThreadsArg,
    #[command(flatten)]
    pub quiet: QuietArg,
}

fn synth(a: SynthArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let cfg: SynthConfig = match &a.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text)
                .with_context(|| format!("{}: invalid synthetic-data config", p.display()))?
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
