//! Downloads against a loopback server: a transient HTML page is retried, `Retry-After` is honoured
//! (capped), warnings carry no ANSI codes off a terminal, `data verify` keeps the marker's url, no lock
//! files stay behind, and `extract = true` without a builder is refused when the manifest is read.
mod data_common;
mod harden_support;

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use contracam::data::source::download::{retry_after, MAX_RETRY_AFTER};
use data_common::*;
use harden_support::walk;

/// Runs contracam with warnings logged (the retry messages), returning (success, stderr).
fn run_warn(a: &[&str]) -> (bool, String) {
    let out = assert_cmd::Command::cargo_bin("contracam")
        .unwrap()
        .args(a)
        .env("CONTRACAM_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_transient_html_page_from_the_only_source_is_retried() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let body = noise(5000, 3);
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "portal",
        None,
        vec![ff("a.bin", body.clone())],
    );
    srv.put(
        "/portal/a.bin",
        Served::file(body.clone()).with(Behavior::HtmlOnce),
    );
    let data = tmp.path().join("d");
    let (ok, err) = run_warn(&data_args(
        "fetch",
        "portal",
        &m,
        &data,
        &["--retries", "2"],
    ));
    assert!(ok, "{err}");
    assert!(
        err.contains("HTML") && err.contains("retry 1"),
        "the retry is reported:\n{err}"
    );
    assert_eq!(
        std::fs::read(downloads(&data, "portal").join("a.bin")).unwrap(),
        body
    );
    assert_eq!(srv.log().len(), 2, "one HTML answer, then the file");
}

#[test]
fn an_html_page_every_time_fails_after_the_retries() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let body = noise(5000, 4);
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "login",
        None,
        vec![ff("a.bin", body.clone())],
    );
    let mut s = Served::file(b"<!DOCTYPE html><html><body>Sign in</body></html>".to_vec());
    s.content_type = "text/html".into();
    srv.put("/login/a.bin", s);
    let data = tmp.path().join("d");
    let err = run_err(&data_args("fetch", "login", &m, &data, &["--retries", "1"]));
    assert!(
        err.contains("HTML") && err.contains("/login/a.bin") && err.contains("after 2 attempts"),
        "{err}"
    );
    assert_eq!(srv.log().len(), 2);
    let dl = downloads(&data, "login");
    assert!(!dl.join("a.bin").exists() && !dl.join("a.bin.part").exists());
}

#[test]
fn retry_after_is_honoured() {
    for status in [503u16, 429] {
        let srv = Server::start();
        let tmp = tempfile::tempdir().unwrap();
        let body = noise(3000, 5);
        let m = serve_dataset(
            &srv,
            tmp.path(),
            "busy",
            None,
            vec![ff("a.bin", body.clone())],
        );
        srv.put(
            "/busy/a.bin",
            Served::file(body.clone()).with(Behavior::StatusOnceRetryAfter(status, "1".into())),
        );
        let data = tmp.path().join("d");
        let (ok, err) = run_warn(&data_args("fetch", "busy", &m, &data, &["--retries", "1"]));
        assert!(ok, "{err}");
        // The 10 ms backoff is replaced by the server's 1 s.
        assert!(
            err.contains("retry 1 in 1.0 s (the server's Retry-After)"),
            "{status}:\n{err}"
        );
        assert_eq!(
            std::fs::read(downloads(&data, "busy").join("a.bin")).unwrap(),
            body
        );
    }
}

#[test]
fn retry_after_values_are_parsed_and_capped() {
    let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
    assert_eq!(retry_after("7", now), Some(Duration::from_secs(7)));
    assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
    assert_eq!(retry_after("99999999", now), Some(MAX_RETRY_AFTER));
    assert_eq!(
        retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
        Some(Duration::from_secs(30))
    );
    // A date in the past means now; a date far ahead is capped.
    assert_eq!(
        retry_after("Sat, 05 Nov 1994 08:49:37 GMT", now),
        Some(Duration::ZERO)
    );
    assert_eq!(
        retry_after("Thu, 01 Jan 2099 00:00:00 GMT", now),
        Some(MAX_RETRY_AFTER)
    );
    assert_eq!(retry_after("soon", now), None);
    assert_eq!(retry_after("-5", now), None);
}

#[test]
fn warnings_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let body = noise(1000, 6);
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "flaky",
        None,
        vec![ff("a.bin", body.clone())],
    );
    srv.put(
        "/flaky/a.bin",
        Served::file(body).with(Behavior::Status(503)),
    );
    let data = tmp.path().join("d");
    let (ok, err) = run_warn(&data_args("fetch", "flaky", &m, &data, &["--retries", "1"]));
    assert!(!ok);
    assert!(
        err.contains("attempt 1 failed"),
        "the warning is there:\n{err}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "ANSI escape in captured stderr:\n{err:?}"
    );
}

#[test]
fn verify_keeps_the_url_in_the_marker() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let body = noise(2000, 7);
    let m = serve_dataset(&srv, tmp.path(), "kept", None, vec![ff("a.bin", body)]);
    let data = tmp.path().join("d");
    run_ok(&data_args("fetch", "kept", &m, &data, &[]));
    let marker = downloads(&data, "kept").join("a.bin.verified.json");
    let url = |p: &Path| -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(p).unwrap()).unwrap()["url"]
            .clone()
    };
    let fetched = url(&marker);
    assert_eq!(fetched, serde_json::json!(srv.url("/kept/a.bin")));
    run_ok(&data_args("verify", "kept", &m, &data, &[]));
    assert_eq!(url(&marker), fetched, "verify rewrote the url");
}

#[test]
fn no_lock_files_stay_behind() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let body = noise(2000, 8);
    let m = serve_dataset(&srv, tmp.path(), "tidy", None, vec![ff("a.bin", body)]);
    let data = tmp.path().join("d");
    let dl = downloads(&data, "tidy");
    std::fs::create_dir_all(&dl).unwrap();
    // A zero-byte lock left by a process that was killed: used, then removed.
    std::fs::write(dl.join("a.bin.lock"), b"").unwrap();
    run_ok(&data_args("fetch", "tidy", &m, &data, &[]));
    run_ok(&data_args("verify", "tidy", &m, &data, &[]));
    let locks: Vec<_> = walk(&data)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "lock"))
        .collect();
    assert!(locks.is_empty(), "lock files left: {locks:?}");
    assert!(dl.join("a.bin").exists());
}

#[test]
fn extract_without_a_builder_is_refused_when_the_manifest_is_read() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let archive = tar(&[file("x.txt", "hello")]);
    let m = serve_dataset(&srv, tmp.path(), "bare", None, vec![ff("a.tar", archive)]);
    // The last [[files]] table gets `extract = true`.
    let mut text = std::fs::read_to_string(&m).unwrap();
    text.push_str("extract = true\n");
    std::fs::write(&m, &text).unwrap();
    let data = tmp.path().join("d");
    let out = contracam(&data_args("fetch", "bare", &m, &data, &[]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&m.display().to_string())
            && err.contains("files[0] (`a.tar`)")
            && err.contains("extract = true needs a dataset.builder")
            && err.contains("remove `extract`"),
        "{err}"
    );
    assert!(srv.log().is_empty(), "nothing fetched");
    assert!(!data.join("bare").exists());
    assert_eq!(
        std::fs::read_to_string(&m).unwrap(),
        text,
        "manifest unchanged"
    );
}
