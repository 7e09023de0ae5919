//! `contracam data list|fetch|verify|instructions|register`: arguments and running (torch-free; `data synth`
//! and `data build` are in `cli/data.rs` of contracam-torch).
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use contracam_base::data::ops::{Data, DataOptions, FileReport};
use contracam_base::data::source::manifest::Registry;
use contracam_base::data::source::store;

use super::QuietArg;

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

/// The dataset commands that never touch a tensor. contracam-torch flattens them into its `data` group; the
/// display orders keep that group's listing as it was (synth 0 and build 4 are there).
#[derive(Debug, Subcommand)]
pub enum DataLiteCommand {
    /// Every known dataset: files, bytes, checksum kind, status (absent/partial/downloaded/verified/built) and builder.
    #[command(display_order = 1)]
    List {
        #[command(flatten)]
        args: DataArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Download and verify datasets (resumable; files without a published checksum need --register).
    #[command(display_order = 2)]
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
    #[command(display_order = 3)]
    Verify {
        #[command(flatten)]
        args: DataArgs,
        #[command(flatten)]
        quiet: QuietArg,
        /// Dataset names from the manifest (`data list` shows them).
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// How to get a dataset by hand (gated or generated data), its licence and files.
    #[command(display_order = 5)]
    Instructions {
        #[command(flatten)]
        args: DataArgs,
        /// Dataset name from the manifest (`data list` shows them).
        name: String,
    },
    /// Download (or hash, if already placed) the files that have no published checksum and record their hashes.
    #[command(display_order = 6)]
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

impl DataLiteCommand {
    /// `--quiet`, where the command takes it.
    pub fn quiet(&self) -> Option<&QuietArg> {
        match self {
            DataLiteCommand::List { .. } | DataLiteCommand::Instructions { .. } => None,
            DataLiteCommand::Fetch { quiet, .. }
            | DataLiteCommand::Verify { quiet, .. }
            | DataLiteCommand::Register { quiet, .. } => Some(quiet),
        }
    }
}

/// The registry (built-in manifests plus `--manifest`) and options `args` describe.
pub fn open(args: &DataArgs, quiet: bool) -> anyhow::Result<Data> {
    let registry = Registry::builtin()?.with_user_manifests(&args.manifests)?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(store::default_data_dir);
    store::check_data_dir(&data_dir)?;
    let mut o = DataOptions::new(data_dir);
    o.mirrors = args.mirrors.clone();
    o.offline = args.offline;
    o.jobs = args.jobs.max(1);
    o.include_optional = args.include_optional;
    o.quiet = quiet;
    o.download.retries = args.retries;
    o.download.retry_base = Duration::from_millis(args.retry_delay_ms);
    o.download.timeout = Duration::from_secs(args.timeout_s.max(1));
    o.limits.max_ratio = args.max_expand_ratio;
    Ok(Data::new(registry, o))
}

fn print_reports(r: &[FileReport]) {
    for f in r {
        println!(
            "{:<22} {:<40} {:>15} {} {}",
            f.dataset, f.file, f.size, f.sha256, f.action
        );
    }
}

pub fn run(cmd: DataLiteCommand, quiet: bool) -> anyhow::Result<ExitCode> {
    match cmd {
        DataLiteCommand::List { args, json } => {
            let d = open(&args, quiet)?;
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
        DataLiteCommand::Fetch {
            args,
            register,
            names,
            ..
        } => {
            let mut d = open(&args, quiet)?;
            d.opts.register = register;
            print_reports(&d.fetch(&names)?);
        }
        DataLiteCommand::Verify { args, names, .. } => {
            let d = open(&args, quiet)?;
            print_reports(&d.verify(&names)?);
        }
        DataLiteCommand::Instructions { args, name } => {
            let d = open(&args, quiet)?;
            print!("{}", d.instructions(&name)?);
        }
        DataLiteCommand::Register { args, names, .. } => {
            let d = open(&args, quiet)?;
            print_reports(&d.register(&names)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
