//! `contracam suite ...`
use std::process::ExitCode;

use clap::Subcommand;

use super::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum SuiteCommand {}

pub fn run(cmd: SuiteCommand, _global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    match cmd {}
}
