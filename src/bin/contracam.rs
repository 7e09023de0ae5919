//! The `contracam` launcher. It links only `contracam_base`, so it starts without loading libtorch (about
//! 0.25 s of CPU for libtorch's shared objects and static initialisers), and runs the commands that never
//! touch a tensor in-process: `data list|fetch|verify|instructions|register`, `eval coco`, and `eval
//! miou|maxboxacc` without `--dataset`. Everything else (other commands, top-level `--help`/`--version`,
//! unknown commands, `--dataset`) it hands to `contracam-torch` beside it, by exec with the same arguments,
//! so the exit status and output are that binary's.
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[path = "../cli/lite/mod.rs"]
mod lite;

use lite::data::DataLiteCommand;
use lite::eval::EvalLiteCommand;

/// The commands run here, as contracam-torch names them (same parser definitions, same `--help`; the
/// fixed bin_name keeps usage lines the same whatever the executable's file name).
#[derive(Debug, Parser)]
#[command(name = "contracam", bin_name = "contracam")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(subcommand)]
    Data(DataLiteCommand),
    #[command(subcommand)]
    Eval(EvalLiteCommand),
}

/// The torch binary's file name, beside this one.
const TORCH_BIN: &str = "contracam-torch";

/// Whether `args` (argv without the program name) name a command this launcher runs. Only the first two
/// words decide: every option of these commands comes after them (there are no options before the
/// subcommand), so anything else is contracam-torch's to parse, answer or refuse.
fn runs_here(args: &[OsString]) -> bool {
    let word = |i: usize| args.get(i).and_then(|a| a.to_str());
    matches!(
        (word(0), word(1)),
        (
            Some("data"),
            Some("list" | "fetch" | "verify" | "instructions" | "register")
        ) | (Some("eval"), Some("miou" | "maxboxacc" | "coco"))
    )
}

/// Replaces this process by contracam-torch with the same arguments (argv[0] too, so clap's usage lines
/// name the command the user typed); returns only if that fails.
fn exec_torch(argv: &[OsString]) -> ExitCode {
    let torch = match torch_path() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut cmd = std::process::Command::new(&torch);
    cmd.args(&argv[1..]);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        if let Some(arg0) = argv.first() {
            cmd.arg0(arg0);
        }
        let e = cmd.exec();
        eprintln!("error: cannot run {}: {e}", torch.display());
        ExitCode::from(2)
    }
    #[cfg(not(unix))]
    {
        // No exec: run it and pass its exit status on.
        match cmd.status() {
            Ok(s) => ExitCode::from(s.code().map_or(2, |c| c as u8)),
            Err(e) => {
                eprintln!("error: cannot run {}: {e}", torch.display());
                ExitCode::from(2)
            }
        }
    }
}

/// `contracam-torch` in this executable's directory.
fn torch_path() -> Result<PathBuf, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find the contracam executable's own path: {e}"))?;
    let dir = exe.parent().unwrap_or(std::path::Path::new("."));
    let torch = dir.join(format!("{TORCH_BIN}{}", std::env::consts::EXE_SUFFIX));
    if torch.is_file() {
        Ok(torch)
    } else {
        Err(format!(
            "{} not found: this command needs libtorch, which the launcher {} does not load; build \
             both binaries (`cargo build --release`) or copy {TORCH_BIN} beside it",
            torch.display(),
            exe.display()
        ))
    }
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    if !runs_here(argv.get(1..).unwrap_or_default()) {
        return exec_torch(&argv);
    }
    let cli = Cli::parse_from(&argv);
    // `eval miou|maxboxacc --dataset` read a built dataset's split through the torch-side loader.
    if let Command::Eval(
        EvalLiteCommand::Miou {
            dataset: Some(_), ..
        }
        | EvalLiteCommand::Maxboxacc {
            dataset: Some(_), ..
        },
    ) = &cli.command
    {
        return exec_torch(&argv);
    }
    lite::init_logging();
    let (threads, quiet) = match &cli.command {
        Command::Data(c) => (None, c.quiet().is_some_and(|q| q.quiet)),
        Command::Eval(c) => (c.threads().threads, false),
    };
    let plan = contracam_base::util::threads::plan(threads);
    tracing::info!("threads: {plan}");
    if let Err(e) = contracam_base::util::threads::configure_rayon(plan.threads) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Data(c) => lite::data::run(c, quiet),
        Command::Eval(c) => lite::eval::run(c, None),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", lite::error_chain(&e));
            ExitCode::from(2)
        }
    }
}
