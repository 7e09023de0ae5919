//! `contracam data ...`
use std::process::ExitCode;

use clap::Subcommand;

use super::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum DataCommand {}

pub fn run(cmd: DataCommand, _global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    match cmd {}
}
