//! The part of the command line that both binaries compile: the arguments and the running of the commands
//! that never touch a tensor (`data list/fetch/verify/instructions/register`, `eval miou/maxboxacc/coco`),
//! the run-wide options they share, logging and error printing. The `contracam` launcher
//! (`src/bin/contracam.rs`) includes this folder with `#[path]` and links only `contracam_base`; the
//! `contracam-torch` binary includes it as `cli::lite`. One definition, so `--help` of these commands is
//! the same from either binary.
pub mod data;
pub mod eval;

/// `--seed`, on the commands that make random choices.
#[derive(Debug, Clone, clap::Args)]
pub struct SeedArg {
    /// Seed for every random choice; recorded in results.
    #[arg(long)]
    pub seed: Option<u64>,
}

/// `--threads`, on the commands that compute in parallel.
#[derive(Debug, Clone, clap::Args)]
pub struct ThreadsArg {
    /// Threads for libtorch and every Rust-side pool (default: the usable CPUs minus those other work
    /// keeps busy, from the affinity mask and the load; see README "Threads on a shared machine").
    #[arg(long, value_parser = contracam_base::util::threads::parse_threads)]
    pub threads: Option<usize>,
}

/// `--quiet`, on the commands that show progress or a summary line.
#[derive(Debug, Clone, clap::Args)]
pub struct QuietArg {
    /// Hide progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// The error and its causes joined by ": ", each cause once: a cause whose text the message already holds
/// (an error that also formats its source) is not repeated.
pub fn error_chain(e: &anyhow::Error) -> String {
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

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CONTRACAM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in CI logs or captured output.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
