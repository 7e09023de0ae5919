//! Command-line interface: parses arguments, sets up logging and the device, and calls the library.
//! Each subcommand group lives in its own file; none of them holds pipeline logic.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod data;
mod env;
mod eval;
mod localize;
mod model;
mod suite;
mod train;

/// Global options shared by every subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalArgs {
    /// Device: auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, global = true, default_value = "auto")]
    pub device: contracam::device::DeviceSpec,
    /// Seed for every random choice; recorded in results.
    #[arg(long, global = true)]
    pub seed: Option<u64>,
    /// Threads for libtorch and every Rust-side pool (default: the usable CPUs minus those other work
    /// keeps busy, from the affinity mask and the load; see README "Threads on a shared machine").
    #[arg(long, global = true, value_parser = contracam::util::threads::parse_threads)]
    pub threads: Option<usize>,
    /// Hide progress bars.
    #[arg(long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Parser)]
#[command(name = "contracam", version = contracam::VERSION, about = "Reproducibility harness for Object-aware Contrastive Learning (ContraCAM, OA-Crop, BG-Mixup)")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
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

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let threads = contracam::util::threads::plan(cli.global.threads);
    tracing::info!("threads: {threads}");
    if let Err(e) = contracam::util::threads::configure(threads.threads) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Data(c) => data::run(c, &cli.global),
        Command::Train(c) => train::run(c, &cli.global),
        Command::Localize(c) => localize::run(c, &cli.global),
        Command::Eval(c) => eval::run(c, &cli.global),
        Command::Model(c) => model::run(c, &cli.global),
        Command::Suite(c) => suite::run(c, &cli.global),
        Command::Env(a) => env::run(a, &cli.global),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes joined by ": ", each cause once: a cause whose text the message already holds
/// (an error that also formats its source) is not repeated.
fn error_chain(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CONTRACAM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in CI logs or captured output.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

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
