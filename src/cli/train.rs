//! `contracam train ...`
use std::process::ExitCode;

use clap::Subcommand;

use super::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum TrainCommand {}

pub fn run(cmd: TrainCommand, _global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    match cmd {}
}
