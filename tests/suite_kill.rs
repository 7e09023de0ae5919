//! kill -9 at several moments of a `suite run`, then a rerun: finished stages are reused, temporary stage
//! folders and the dead run's lock do not get in the way, and the final metrics are those of an
//! uninterrupted run, bit for bit (one CPU thread).
mod suite_common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use suite_common::tiny_suite;

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// `contracam suite run` of the tiny suite on one CPU thread; `--no-wait`, so a lock left held by a killed
/// run would fail the rerun instead of hanging it.
fn spawn(suite: &Path, runs: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_contracam"))
        .args(["suite", "run"])
        .arg(suite)
        .arg("--runs-dir")
        .arg(runs)
        .args([
            "--threads",
            "1",
            "--device",
            "cpu",
            "--quiet",
            "--no-golden",
            "--no-wait",
        ])
        .env("RAYON_NUM_THREADS", "1")
        .env("OMP_NUM_THREADS", "1")
        .env("CONTRACAM_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The child's stderr, line by line (drained to the end, so the child never blocks on a full pipe).
fn lines(child: &mut Child) -> Receiver<String> {
    let err = child.stderr.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    rx
}

/// `[stage N] <name> (<fingerprint>)`, printed as stage N starts.
fn started(n: usize) -> impl Fn(&str) -> bool {
    let p = format!("[stage {n}] ");
    move |l: &str| l.starts_with(&p) && !l.contains("cached") && !l.contains("done")
}

/// `[stage N] <name>: done in …`, printed once stage N is published.
fn finished(n: usize) -> impl Fn(&str) -> bool {
    let p = format!("[stage {n}] ");
    move |l: &str| l.starts_with(&p) && l.contains("done")
}

fn tmp_dirs(root: &Path) -> Vec<String> {
    std::fs::read_dir(root)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".tmp-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Reads the child's remaining lines until its stderr closes (bounded).
fn drain(rx: &Receiver<String>, seen: &mut Vec<String>) {
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(60)) {
        seen.push(l);
    }
}

/// Stage names whose "done" or "cached" line was printed: each was published before the line.
fn published(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.starts_with("[stage ") && (l.contains(": done") || l.contains(": cached")))
        .filter_map(|l| {
            let rest = l.split_once("] ")?.1;
            Some(rest.split_once(':')?.0.to_string())
        })
        .collect()
}

/// When to kill: a line to wait for (None: start-up) and a delay after it.
type KillPoint = (&'static str, Option<Box<dyn Fn(&str) -> bool>>, u64);

#[test]
fn kill_9_then_rerun_reuses_finished_stages_and_gives_the_same_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let suite = tiny_suite(dir.path());

    // The reference: one uninterrupted run.
    let clean = dir.path().join("clean");
    let mut c = spawn(&suite, &clean);
    let rx = lines(&mut c);
    let ok = c.wait().unwrap().success();
    let mut out = Vec::new();
    drain(&rx, &mut out);
    assert!(ok, "{out:#?}");
    let reference = json(&clean.join("tiny/results.json"));
    let fps = |r: &serde_json::Value| -> Vec<String> {
        r["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["fingerprint"].as_str().unwrap().to_string())
            .collect()
    };

    // The tiny suite's stages take 0.1–1 s each: a kill as a stage starts, or shortly after, lands inside
    // it. Each point gets its own runs dir: killed once, then rerun to completion.
    let mut points: Vec<KillPoint> = vec![("during start-up", None, 300)];
    for n in 1..=5 {
        points.push(("as stage starts", Some(Box::new(started(n))), 0));
        points.push(("shortly into stage", Some(Box::new(started(n))), 60));
    }
    points.push((
        "just after stage 1 was published",
        Some(Box::new(finished(1))),
        0,
    ));
    let (mut inside_a_stage, mut killed) = (0, 0);
    for (i, (what, line, delay)) in points.iter().enumerate() {
        let runs = dir.path().join(format!("runs{i}"));
        let root = runs.join("tiny");
        let mut child = spawn(&suite, &runs);
        let rx = lines(&mut child);
        let mut seen = Vec::new();
        if let Some(hit) = line {
            while let Ok(l) = rx.recv_timeout(Duration::from_secs(300)) {
                let stop = hit(&l);
                seen.push(l);
                if stop {
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(*delay));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        drain(&rx, &mut seen);
        let what = format!("kill {i} ({what}, +{delay} ms)");
        if status.code().is_some() {
            // The run finished before the signal: nothing to learn from this point.
            eprintln!("{what}: the run ended first");
            continue;
        }
        killed += 1;
        if !tmp_dirs(&root).is_empty() {
            inside_a_stage += 1;
        }
        // A kill during the last stage can land after results.json was written, as the process exits:
        // remove it, so what is read below is the rerun's.
        let _ = std::fs::remove_file(root.join("results.json"));

        // The rerun: --no-wait, so the dead run's lock must be taken over, not waited for.
        let mut child = spawn(&suite, &runs);
        let rx = lines(&mut child);
        let ok = child.wait().unwrap().success();
        let mut err = Vec::new();
        drain(&rx, &mut err);
        assert!(ok, "{what}: the rerun failed:\n{err:#?}");
        let rerun = json(&root.join("results.json"));
        for stage in published(&seen) {
            let s = rerun["stages"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["stage"] == stage.as_str())
                .unwrap_or_else(|| panic!("{what}: no stage {stage} in the rerun"));
            assert_eq!(
                s["cached"], true,
                "{what}: {stage} was published but not reused\n{seen:#?}"
            );
        }
        assert!(tmp_dirs(&root).is_empty(), "{what}: {:?}", tmp_dirs(&root));
        assert_eq!(
            rerun["metrics"].to_string(),
            reference["metrics"].to_string(),
            "{what}: metrics after a kill and a rerun differ from an uninterrupted run"
        );
        assert_eq!(fps(&rerun), fps(&reference), "{what}");
    }
    eprintln!(
        "{killed} of {} kills landed, {inside_a_stage} inside a stage build",
        points.len()
    );
    assert!(
        killed >= points.len() / 2,
        "most runs ended before their kill: {killed}"
    );
    assert!(
        inside_a_stage >= 3,
        "only {inside_a_stage} kills landed inside a stage build"
    );
}
