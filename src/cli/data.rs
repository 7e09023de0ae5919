//! `contracam data ...`
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use contracam::data::ops::{Data, DataOptions};
use contracam::data::source::manifest::Registry;
use contracam::data::synth::export::{write_dir, ExportSizes};
use contracam::data::synth::SynthConfig;

use super::{GlobalArgs, QuietArg, SeedArg, ThreadsArg};

/// Options shared by the dataset commands.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Data directory (default: $CONTRACAM_DATA, else $XDG_CACHE_HOME/contracam, else ~/.cache/contracam).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Extra manifest (same TOML format as manifests/*.toml): private mirrors, extra datasets. Repeatable;
    /// replaces a built-in dataset of the same name.
    #[arg(long = "manifest", value_name = "FILE")]
    pub manifests: Vec<PathBuf>,
    /// URL prefix tried before the manifest's URLs, as <prefix>/<dataset>/<file>. Repeatable.
    #[arg(long = "mirror", value_name = "URL_PREFIX")]
    pub mirrors: Vec<String>,
    /// Never touch the network; fail on anything not already downloaded.
    #[arg(long)]
    pub offline: bool,
    /// Files downloaded at once.
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Also fetch files marked optional (other IN-9 training variants, ImageNet train, ...).
    #[arg(long)]
    pub include_optional: bool,
    /// Retries per source after the first attempt.
    #[arg(long, default_value_t = 4)]
    pub retries: u32,
    /// First retry delay in milliseconds (doubles each retry).
    #[arg(long, default_value_t = 1000)]
    pub retry_delay_ms: u64,
    /// Network read/connect timeout in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout_s: u64,
    /// Refuse archives that expand to more than this many times their size.
    #[arg(long, default_value_t = 100)]
    pub max_expand_ratio: u64,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Write the built-in synthetic dataset as PNGs with index.json, index.html and preview.png; the scene
    /// splits also as `scenes/<split>.safetensors` (what `localize cam`/`crf` read) and
    /// `index/scenes_<split>.jsonl` (ground truth for `eval miou`/`maxboxacc --dataset DIR:scenes_<split>`).
    Synth(SynthArgs),
    /// Every known dataset: files, bytes, checksum kind, status (absent/partial/downloaded/verified/built) and builder.
    List {
        #[command(flatten)]
        args: DataArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Download and verify datasets (resumable; files without a published checksum need --register).
    Fetch {
        #[command(flatten)]
        args: DataArgs,
        #[command(flatten)]
        quiet: QuietArg,
        /// Download files that have no published checksum and record the hashes computed.
        #[arg(long)]
        register: bool,
        /// Dataset names from the manifest (`data list` shows them).
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Re-hash downloaded (or user-placed) files against their checksums.
    Verify {
        #[command(flatten)]
        args: DataArgs,
        #[command(flatten)]
        quiet: QuietArg,
        /// Dataset names from the manifest (`data list` shows them).
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Fetch, verify, extract and write the sample indices.
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
    /// How to get a dataset by hand (gated or generated data), its licence and files.
    Instructions {
        #[command(flatten)]
        args: DataArgs,
        /// Dataset name from the manifest (`data list` shows them).
        name: String,
    },
    /// Download (or hash, if already placed) the files that have no published checksum and record their hashes.
    Register {
        #[command(flatten)]
        args: DataArgs,
        #[command(flatten)]
        quiet: QuietArg,
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
            DataCommand::List { .. } | DataCommand::Instructions { .. } => GlobalArgs::default(),
            DataCommand::Fetch { quiet, .. }
            | DataCommand::Verify { quiet, .. }
            | DataCommand::Register { quiet, .. } => GlobalArgs::of(None, None, None, Some(quiet)),
            DataCommand::Build { quiet, threads, .. } => {
                GlobalArgs::of(None, None, Some(threads), Some(quiet))
            }
        }
    }
}

fn open(args: &DataArgs, global: &GlobalArgs) -> anyhow::Result<Data> {
    let registry = Registry::builtin()?.with_user_manifests(&args.manifests)?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(contracam::data::source::store::default_data_dir);
    contracam::data::source::store::check_data_dir(&data_dir)?;
    let mut o = DataOptions::new(data_dir);
    o.mirrors = args.mirrors.clone();
    o.offline = args.offline;
    o.jobs = args.jobs.max(1);
    o.include_optional = args.include_optional;
    o.quiet = global.quiet;
    o.download.retries = args.retries;
    o.download.retry_base = Duration::from_millis(args.retry_delay_ms);
    o.download.timeout = Duration::from_secs(args.timeout_s.max(1));
    o.limits.max_ratio = args.max_expand_ratio;
    Ok(Data::new(registry, o))
}

fn print_reports(r: &[contracam::data::ops::FileReport]) {
    for f in r {
        println!(
            "{:<22} {:<40} {:>15} {} {}",
            f.dataset, f.file, f.size, f.sha256, f.action
        );
    }
}

pub fn run(cmd: DataCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    if let DataCommand::Synth(a) = cmd {
        return synth(a, global);
    }
    match cmd {
        DataCommand::Synth(_) => unreachable!("handled above"),
        DataCommand::List { args, json } => {
            let d = open(&args, global)?;
            let rows = d.list();
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<20} {:>5} {:>16} {:<22} {:<10} {:<18} title",
                    "dataset", "files", "bytes", "checksums", "status", "builder"
                );
                for r in rows {
                    let bytes = if r.unknown_sizes > 0 {
                        format!("{}+{}?", r.bytes, r.unknown_sizes)
                    } else {
                        r.bytes.to_string()
                    };
                    let tag = if r.gated {
                        " [gated]"
                    } else if r.generated {
                        " [generated]"
                    } else {
                        ""
                    };
                    println!(
                        "{:<20} {:>5} {:>16} {:<22} {:<10} {:<18} {}{tag}",
                        r.dataset,
                        r.files,
                        bytes,
                        r.checksums,
                        r.status.to_string(),
                        r.builder.as_deref().unwrap_or("- (download only)"),
                        r.title
                    );
                }
                println!("(data dir: {})", d.opts.data_dir.display());
            }
        }
        DataCommand::Fetch {
            args,
            register,
            names,
            ..
        } => {
            let mut d = open(&args, global)?;
            d.opts.register = register;
            print_reports(&d.fetch(&names)?);
        }
        DataCommand::Verify { args, names, .. } => {
            let d = open(&args, global)?;
            print_reports(&d.verify(&names)?);
        }
        DataCommand::Build {
            args,
            source,
            register,
            names,
            ..
        } => {
            let mut d = open(&args, global)?;
            d.opts.source = source;
            d.opts.register = register;
            for p in d.build(&names)? {
                println!("{}", p.display());
            }
        }
        DataCommand::Instructions { args, name } => {
            let d = open(&args, global)?;
            print!("{}", d.instructions(&name)?);
        }
        DataCommand::Register { args, names, .. } => {
            let d = open(&args, global)?;
            print_reports(&d.register(&names)?);
        }
    }
    Ok(ExitCode::SUCCESS)
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
