//! `contracam localize ...`
use std::process::ExitCode;

use clap::Subcommand;

use super::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum LocalizeCommand {}

pub fn run(cmd: LocalizeCommand, _global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    match cmd {}
}
