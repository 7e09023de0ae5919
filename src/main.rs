//! The `contracam-torch` binary: the whole command line, linked against libtorch. The `contracam` launcher
//! (`src/bin/contracam.rs`) runs the torch-free commands itself and execs this for everything else.
mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
