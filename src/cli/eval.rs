//! `contracam eval ...`
use std::process::ExitCode;

use clap::Subcommand;

use super::GlobalArgs;

#[derive(Debug, Subcommand)]
pub enum EvalCommand {}

pub fn run(cmd: EvalCommand, _global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    match cmd {}
}
