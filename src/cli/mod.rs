//! Command-line interface: parses arguments, sets up logging and the device, and calls the library.
//! Each subcommand group lives in its own file; none of them holds pipeline logic. `lite/` is the part the
//! `contracam` launcher compiles too (the torch-free commands).
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod data;
mod env;
mod eval;
mod lite;
mod localize;
mod model;
mod per_image;
mod suite;
mod train;

pub use lite::{error_chain, init_logging, QuietArg, SeedArg, ThreadsArg};

/// What the run-wide options resolve to; each command takes only the options it uses (below) and fills the
/// rest with their defaults, so `--device` on a command that runs no model is a parse error.
#[derive(Debug, Clone, Default)]
pub struct GlobalArgs {
    pub device: contracam::device::DeviceSpec,
    pub seed: Option<u64>,
    pub threads: Option<usize>,
    pub quiet: bool,
}

impl GlobalArgs {
    /// The options of one command, each `None` where the command does not take it.
    pub fn of(
        device: Option<&DeviceArg>,
        seed: Option<&SeedArg>,
        threads: Option<&ThreadsArg>,
        quiet: Option<&QuietArg>,
    ) -> GlobalArgs {
        GlobalArgs {
            device: device.map(|d| d.device).unwrap_or_default(),
            seed: seed.and_then(|s| s.seed),
            threads: threads.and_then(|t| t.threads),
            quiet: quiet.is_some_and(|q| q.quiet),
        }
    }
}

/// `--device`, on the commands that run a model.
#[derive(Debug, Clone, clap::Args)]
pub struct DeviceArg {
    /// Device: auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: contracam::device::DeviceSpec,
}

#[derive(Debug, Parser)]
#[command(name = "contracam", bin_name = "contracam", version = contracam::VERSION, about = "Reproducibility harness for Object-aware Contrastive Learning (ContraCAM, OA-Crop, BG-Mixup)")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Datasets: the synthetic scenes; downloads, verification, extraction and builders for the real ones.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Self-supervised training (MoCo v2, BYOL).
    #[command(subcommand)]
    Train(train::TrainCommand),
    /// Localization: contrastive CAM, masks and boxes.
    #[command(subcommand)]
    Localize(localize::LocalizeCommand),
    /// Metrics.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Checkpoints: import released PyTorch checkpoints; export to detectron2.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Declarative suites with goldens.
    #[command(subcommand)]
    Suite(suite::SuiteCommand),
    /// Print versions, libtorch build, CUDA devices and CPU threads.
    Env(env::EnvArgs),
}

impl Command {
    /// The run-wide options this command was given.
    fn options(&self) -> GlobalArgs {
        match self {
            Command::Data(c) => c.options(),
            Command::Train(c) => c.options(),
            Command::Localize(c) => c.options(),
            Command::Eval(c) => c.options(),
            Command::Model(c) => c.options(),
            Command::Suite(c) => c.options(),
            Command::Env(a) => GlobalArgs::of(Some(&a.device), None, Some(&a.threads), None),
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let global = cli.command.options();
    // Every command here spends its time in CPU tensor work or waits on it (util::cpu_memory).
    contracam::util::cpu_memory::reuse_freed_memory();
    let threads = contracam::util::threads::plan(global.threads);
    tracing::info!("threads: {threads}");
    if let Err(e) = contracam::util::threads::configure(threads.threads) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Data(c) => data::run(c, &global),
        Command::Train(c) => train::run(c, &global),
        Command::Localize(c) => localize::run(c, &global),
        Command::Eval(c) => eval::run(c, &global),
        Command::Model(c) => model::run(c, &global),
        Command::Suite(c) => suite::run(c, &global),
        Command::Env(a) => env::run(a, &global),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// `--device`, `--seed`, `--threads` and `--quiet` parse where they apply and reach the command; anywhere
    /// else (before the subcommand included) they are a parse error naming the argument.
    #[test]
    fn run_wide_options_only_where_they_apply() {
        use clap::Parser;
        let parse = |args: &[&str]| super::Cli::try_parse_from(args);
        let cli = parse(&[
            "contracam",
            "train",
            "ssl",
            "--suite",
            "s",
            "--out",
            "o",
            "--device",
            "cpu",
            "--seed",
            "5",
            "--threads",
            "3",
            "--quiet",
        ])
        .unwrap();
        let g = cli.command.options();
        assert_eq!(g.device, contracam::device::DeviceSpec::Cpu);
        assert_eq!((g.seed, g.threads, g.quiet), (Some(5), Some(3), true));
        let g = parse(&[
            "contracam",
            "eval",
            "miou",
            "--pred",
            "p",
            "--gt",
            "g",
            "--threads",
            "2",
        ])
        .unwrap()
        .command
        .options();
        assert_eq!((g.seed, g.threads, g.quiet), (None, Some(2), false));
        for bad in [
            &["contracam", "--quiet", "env"][..],
            &["contracam", "--device", "cpu", "localize", "crf"],
            &[
                "contracam",
                "data",
                "synth",
                "--out",
                "d",
                "--device",
                "cpu",
            ],
            &[
                "contracam",
                "eval",
                "coco",
                "--gt",
                "g",
                "--dt",
                "d",
                "--device",
                "cpu",
            ],
            &["contracam", "data", "list", "--threads", "2"],
            &[
                "contracam",
                "eval",
                "miou",
                "--pred",
                "p",
                "--gt",
                "g",
                "--quiet",
            ],
            &["contracam", "suite", "validate", "s", "--seed", "1"],
            &[
                "contracam",
                "localize",
                "crf",
                "--images",
                "i",
                "--cams",
                "c",
                "--out",
                "o",
                "--device",
                "cpu",
            ],
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("unexpected argument '--"),
                "{bad:?} should be refused naming the option: {e}"
            );
        }
    }

    /// Every flag and positional argument of every command says what it is for in `--help`.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "contracam", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:#?}");
    }
}
