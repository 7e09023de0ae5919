//! `--help` of `contracam` and of every subcommand, as insta snapshots, so a change to any help text shows up
//! in review. The commands are found by walking the "Commands:" lists of the help itself, so a new
//! subcommand gets a snapshot (and fails here until it is reviewed and accepted).
use assert_cmd::Command;

fn help(path: &[String]) -> String {
    let out = Command::cargo_bin("contracam")
        .unwrap()
        .env("CONTRACAM_LOG", "error")
        .args(path)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "contracam {path:?} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// Subcommand names listed under "Commands:" (clap's built-in `help` left out).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|n| n != "help")
        .collect()
}

#[test]
fn help_of_every_command() {
    let mut todo = vec![Vec::<String>::new()];
    let mut seen = 0;
    while let Some(path) = todo.pop() {
        let text = help(&path);
        for sub in subcommands(&text) {
            let mut p = path.clone();
            p.push(sub);
            todo.push(p);
        }
        let name = std::iter::once("contracam".to_string())
            .chain(path.iter().cloned())
            .collect::<Vec<_>>()
            .join("_");
        insta::assert_snapshot!(name, text);
        seen += 1;
    }
    // contracam, 7 groups and their subcommands: a walk that finds fewer has misread the help.
    assert!(seen >= 20, "only {seen} commands found");
}
