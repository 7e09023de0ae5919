//! Downloader fault tests against a loopback server, through `contracam data … --manifest`.
mod data_common;

use data_common::*;

#[test]
fn cut_connection_resumes_without_refetching() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let body = noise(300_000, 1);
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "cut",
        None,
        vec![ff("blob.bin", body.clone())],
    );
    srv.put(
        "/cut/blob.bin",
        Served::file(body.clone()).with(Behavior::CutOnce(100_000)),
    );
    let data = tmp.path().join("data");

    // No retries: the process fails, but the 100000 bytes received are kept in .part.
    let err = run_err(&data_args("fetch", "cut", &m, &data, &["--retries", "0"]));
    assert!(
        err.contains("blob.bin") || err.contains("/cut/blob.bin"),
        "{err}"
    );
    let part = downloads(&data, "cut").join("blob.bin.part");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 100_000);
    assert!(
        !downloads(&data, "cut").join("blob.bin").exists(),
        "an incomplete file must never be in place"
    );
    let list = run_ok(&[
        "data",
        "list",
        "--manifest",
        m.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("cut ") && l.contains("partial")),
        "{list}"
    );

    // A new run resumes at byte 100000: the server sends only the rest.
    srv.clear_log();
    run_ok(&data_args("fetch", "cut", &m, &data, &[]));
    let log = srv.log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].range.as_deref(), Some("bytes=100000-"));
    assert_eq!(log[0].status, 206);
    assert_eq!(log[0].body_bytes_sent, 200_000);
    assert_eq!(
        std::fs::read(downloads(&data, "cut").join("blob.bin")).unwrap(),
        body
    );
    assert!(!part.exists());
    assert!(downloads(&data, "cut")
        .join("blob.bin.verified.json")
        .exists());
    let list = run_ok(&[
        "data",
        "list",
        "--manifest",
        m.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("cut ") && l.contains("verified")),
        "{list}"
    );

    // Within one run, a cut is retried and resumed too.
    srv.put(
        "/cut/blob.bin",
        Served::file(body.clone()).with(Behavior::CutOnce(50_000)),
    );
    let data2 = tmp.path().join("data2");
    srv.clear_log();
    run_ok(&data_args("fetch", "cut", &m, &data2, &[]));
    let log = srv.log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[1].range.as_deref(), Some("bytes=50000-"));
    assert_eq!(
        log.iter().map(|r| r.body_bytes_sent).sum::<usize>(),
        body.len(),
        "no byte fetched twice"
    );
    assert_eq!(
        std::fs::read(downloads(&data2, "cut").join("blob.bin")).unwrap(),
        body
    );

    // Fetching again does nothing (already verified).
    srv.clear_log();
    let out = run_ok(&data_args("fetch", "cut", &m, &data2, &[]));
    assert!(out.contains("already verified"), "{out}");
    assert!(srv.log().is_empty());
}

#[test]
fn complete_part_from_an_interrupted_run_is_verified_not_refetched() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let body = noise(70_000, 13);
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "done",
        None,
        vec![ff("a.bin", body.clone())],
    );
    let data = tmp.path().join("d");
    let dl = downloads(&data, "done");
    std::fs::create_dir_all(&dl).unwrap();
    // A previous run received every byte, then died before verifying and renaming.
    std::fs::write(dl.join("a.bin.part"), &body).unwrap();
    let meta = serde_json::json!({"url": srv.url("/done/a.bin"), "etag": Served::file(body.clone()).etag,
        "last_modified": "Wed, 21 Oct 2015 07:28:00 GMT", "total": body.len()});
    std::fs::write(dl.join("a.bin.part.json"), meta.to_string()).unwrap();
    run_ok(&data_args("fetch", "done", &m, &data, &[]));
    let log = srv.log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!((log[0].status, log[0].body_bytes_sent), (416, 0));
    assert_eq!(std::fs::read(dl.join("a.bin")).unwrap(), body);
}

#[test]
fn weak_etags_are_not_used_as_if_range_validators() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let body = noise(90_000, 14);
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "weak",
        None,
        vec![ff("w.bin", body.clone())],
    );
    let mut s = Served::file(body.clone()).with(Behavior::CutOnce(30_000));
    s.etag = Some("W/\"abc\"".into());
    srv.put("/weak/w.bin", s);
    let data = tmp.path().join("d");
    run_ok(&data_args("fetch", "weak", &m, &data, &[]));
    let log = srv.log();
    assert_eq!(log[1].range.as_deref(), Some("bytes=30000-"));
    assert_eq!(
        log[1].if_range.as_deref(),
        Some("Wed, 21 Oct 2015 07:28:00 GMT")
    );
    assert_eq!(
        std::fs::read(downloads(&data, "weak").join("w.bin")).unwrap(),
        body
    );
}

#[test]
fn server_ignoring_range_restarts_from_zero() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let body = noise(200_000, 2);
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "norange",
        None,
        vec![ff("a.bin", body.clone())],
    );
    srv.put(
        "/norange/a.bin",
        Served::file(body.clone()).with(Behavior::CutOnce(80_000)),
    );
    let data = tmp.path().join("d");
    run_err(&data_args(
        "fetch",
        "norange",
        &m,
        &data,
        &["--retries", "0"],
    ));
    srv.put(
        "/norange/a.bin",
        Served::file(body.clone()).with(Behavior::IgnoreRange),
    );
    srv.clear_log();
    run_ok(&data_args("fetch", "norange", &m, &data, &[]));
    let log = srv.log();
    assert_eq!(
        log[0].range.as_deref(),
        Some("bytes=80000-"),
        "it asked for the rest"
    );
    assert_eq!(log[0].status, 200, "server ignored it");
    assert_eq!(
        std::fs::read(downloads(&data, "norange").join("a.bin")).unwrap(),
        body,
        "not appended twice"
    );
}

#[test]
fn changed_etag_restarts_from_zero() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let v1 = noise(150_000, 3);
    let v2 = noise(150_000, 4);
    // The manifest describes v2 (the server's file changed after our partial download of v1).
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "etag",
        None,
        vec![ff("x.bin", v2.clone())],
    );
    for (behavior, data) in [(Behavior::Normal, "d1"), (Behavior::IgnoreIfRange, "d2")] {
        let data = tmp.path().join(data);
        let mut s1 = Served::file(v1.clone()).with(Behavior::CutOnce(60_000));
        s1.etag = Some("\"v1\"".into());
        srv.put("/etag/x.bin", s1);
        run_err(&data_args("fetch", "etag", &m, &data, &["--retries", "0"]));
        let mut s2 = Served::file(v2.clone()).with(behavior.clone());
        s2.etag = Some("\"v2\"".into());
        srv.put("/etag/x.bin", s2);
        srv.clear_log();
        run_ok(&data_args("fetch", "etag", &m, &data, &[]));
        let log = srv.log();
        assert_eq!(
            log[0].if_range.as_deref(),
            Some("\"v1\""),
            "{behavior:?}: resume is conditional on the old ETag"
        );
        if behavior == Behavior::IgnoreIfRange {
            // The server sent 206 with a new ETag: the client noticed and started over.
            assert_eq!(log[0].status, 206);
            assert_eq!(log.len(), 2, "{log:?}");
            assert_eq!(log[1].range, None);
        } else {
            assert_eq!(log[0].status, 200);
        }
        assert_eq!(
            std::fs::read(downloads(&data, "etag").join("x.bin")).unwrap(),
            v2,
            "{behavior:?}"
        );
    }
}

#[test]
fn checksum_mismatch_is_named_and_moved_aside() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let body = noise(10_000, 5);
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "bad",
        None,
        vec![ff("f.tar", body.clone())],
    );
    let real = sha256(&body);
    let wrong = sha256(b"something else");
    let text = std::fs::read_to_string(&m).unwrap().replace(&real, &wrong);
    std::fs::write(&m, text).unwrap();
    let data = tmp.path().join("d");
    let err = run_err(&data_args("fetch", "bad", &m, &data, &[]));
    assert!(
        err.contains("f.tar") && err.contains(&wrong) && err.contains(&real),
        "{err}"
    );
    assert!(err.contains("moved aside"), "{err}");
    let dl = downloads(&data, "bad");
    assert!(
        !dl.join("f.tar").exists(),
        "the bad file must not be left in place"
    );
    let bad: Vec<_> = std::fs::read_dir(&dl)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("f.tar.bad-"))
        .collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(
        std::fs::read(bad[0].path()).unwrap(),
        body,
        "kept for inspection"
    );
}

#[test]
fn html_page_instead_of_archive_is_refused() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let body = noise(5_000, 6);
    let m = serve_dataset(&srv, tmp.path(), "html", None, vec![ff("data.zip", body)]);
    let page =
        b"<!DOCTYPE html><html><body>Google Drive can't scan this file for viruses</body></html>"
            .to_vec();
    // Announced as text/html.
    let mut s = Served::file(page.clone());
    s.content_type = "text/html; charset=utf-8".into();
    srv.put("/html/data.zip", s);
    let data = tmp.path().join("d");
    let err = run_err(&data_args("fetch", "html", &m, &data, &["--retries", "0"]));
    assert!(
        err.contains("HTML") && err.contains("/html/data.zip"),
        "{err}"
    );
    assert!(!downloads(&data, "html").join("data.zip").exists());
    // Served as octet-stream but the bytes are HTML: sniffed.
    srv.put("/html/data.zip", Served::file(page));
    let err = run_err(&data_args("fetch", "html", &m, &data, &["--retries", "0"]));
    assert!(err.contains("HTML"), "{err}");
    assert!(!downloads(&data, "html").join("data.zip").exists());
    assert!(!downloads(&data, "html").join("data.zip.part").exists());
}

#[test]
fn not_found_falls_back_to_the_next_mirror() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let body = noise(20_000, 7);
    let url_ok = srv.url("/mirror2/m.bin");
    let url_404 = srv.url("/gone/m.bin");
    srv.put("/mirror2/m.bin", Served::file(body.clone()));
    let toml = format!(
        "[dataset]\nname='mir'\ntitle='t'\n[[files]]\nname='m.bin'\nurls=['{url_404}', '{url_ok}']\nsize={}\nsha256='{}'\n",
        body.len(),
        sha256(&body)
    );
    let m = tmp.path().join("mir.toml");
    std::fs::write(&m, toml).unwrap();
    let data = tmp.path().join("d");
    run_ok(&data_args("fetch", "mir", &m, &data, &[]));
    let log = srv.log();
    assert_eq!((log[0].path.as_str(), log[0].status), ("/gone/m.bin", 404));
    assert_eq!(
        (log[1].path.as_str(), log[1].status),
        ("/mirror2/m.bin", 200)
    );
    assert_eq!(log.len(), 2, "a 404 is not retried: {log:?}");
    assert_eq!(
        std::fs::read(downloads(&data, "mir").join("m.bin")).unwrap(),
        body
    );

    // --mirror PREFIX is tried first, as PREFIX/<dataset>/<file>.
    srv.put("/private/mir/m.bin", Served::file(body.clone()));
    srv.clear_log();
    let data2 = tmp.path().join("d2");
    let prefix = srv.url("/private");
    run_ok(&data_args(
        "fetch",
        "mir",
        &m,
        &data2,
        &["--mirror", &prefix],
    ));
    assert_eq!(srv.log()[0].path, "/private/mir/m.bin");
    assert_eq!(srv.log().len(), 1);

    // All sources failing: every URL is named.
    let toml = format!("[dataset]\nname='none'\ntitle='t'\n[[files]]\nname='m.bin'\nurls=['{url_404}', '{}']\nsize=1\nsha256='{}'\n", srv.url("/also-gone"), sha256(b"x"));
    let m2 = tmp.path().join("none.toml");
    std::fs::write(&m2, toml).unwrap();
    let err = run_err(&data_args("fetch", "none", &m2, &data, &[]));
    assert!(
        err.contains("/gone/m.bin") && err.contains("/also-gone") && err.contains("404"),
        "{err}"
    );
}

#[test]
fn server_errors_are_retried() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let body = noise(1000, 8);
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "flaky",
        None,
        vec![ff("a.bin", body.clone())],
    );
    srv.put(
        "/flaky/a.bin",
        Served::file(body.clone()).with(Behavior::Status(503)),
    );
    let data = tmp.path().join("d");
    let err = run_err(&data_args("fetch", "flaky", &m, &data, &["--retries", "2"]));
    assert!(
        err.contains("503") && err.contains("after 3 attempts"),
        "{err}"
    );
    assert_eq!(srv.log().len(), 3);
}

#[test]
fn size_mismatch_is_refused() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let body = noise(4000, 9);
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "sz",
        None,
        vec![ff("a.bin", body.clone())],
    );
    let text = std::fs::read_to_string(&m)
        .unwrap()
        .replace("size = 4000", "size = 4001");
    std::fs::write(&m, text).unwrap();
    let data = tmp.path().join("d");
    let err = run_err(&data_args("fetch", "sz", &m, &data, &[]));
    assert!(
        err.contains("size mismatch") && err.contains("4001") && err.contains("4000"),
        "{err}"
    );
    assert!(!downloads(&data, "sz").join("a.bin").exists());
}

#[test]
fn not_enough_disk_is_refused_before_downloading() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let body = noise(4000, 10);
    let m = serve_dataset(&srv, tmp.path(), "huge", None, vec![ff("a.bin", body)]);
    // A published size larger than any disk: refused before a single request.
    let text = std::fs::read_to_string(&m)
        .unwrap()
        .replace("size = 4000", "size = 4000000000000000000");
    std::fs::write(&m, text).unwrap();
    let data = tmp.path().join("d");
    let err = run_err(&data_args("fetch", "huge", &m, &data, &[]));
    assert!(
        err.contains("not enough disk space") && err.contains("4000000000000000000"),
        "{err}"
    );
    assert!(srv.log().is_empty(), "no request may be made");
}

#[test]
fn offline_with_a_missing_file_names_it() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "off",
        None,
        vec![ff("a.bin", noise(100, 11))],
    );
    let data = tmp.path().join("d");
    let err = run_err(&data_args("fetch", "off", &m, &data, &["--offline"]));
    assert!(
        err.contains("--offline") && err.contains("a.bin") && err.contains("downloads"),
        "{err}"
    );
    assert!(srv.log().is_empty());
    // Once fetched, --offline works.
    run_ok(&data_args("fetch", "off", &m, &data, &[]));
    run_ok(&data_args("fetch", "off", &m, &data, &["--offline"]));
}

#[test]
fn gated_imagenet_gives_instructions_and_checks_placed_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    let d = data.to_str().unwrap();
    let err = run_err(&["data", "fetch", "--quiet", "imagenet", "--data-dir", d]);
    assert!(
        err.contains("gated")
            && err.contains("image-net.org")
            && err.contains("ILSVRC2012_img_val.tar"),
        "{err}"
    );
    let out = run_ok(&["data", "instructions", "imagenet", "--data-dir", d]);
    assert!(
        out.contains("c7e06a6c0baccf06d8dbeb6577d71efff84673a5dbdd50633ab44f8ea0456ae0"),
        "{out}"
    );
    assert!(out.contains("imagenet/downloads"), "{out}");
    // A wrong file placed by the user is refused and moved aside.
    let dl = data.join("imagenet").join("downloads");
    std::fs::create_dir_all(&dl).unwrap();
    std::fs::write(dl.join("ILSVRC2012_devkit_t12.tar.gz"), b"not the devkit").unwrap();
    // The devkit is optional (no builder reads it): `--include-optional` checks it too.
    let err = run_err(&[
        "data",
        "verify",
        "--quiet",
        "imagenet",
        "--include-optional",
        "--data-dir",
        d,
    ]);
    assert!(
        err.contains("ILSVRC2012_devkit_t12.tar.gz")
            && err.contains("fa75699e90414af021442c21a62c3abf"),
        "{err}"
    );
    assert!(!dl.join("ILSVRC2012_devkit_t12.tar.gz").exists());
}

#[test]
fn unverified_files_need_register_which_records_hashes() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let body = noise(30_000, 12);
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "tofu",
        None,
        vec![FixtureFile {
            name: "r.tar.gz".into(),
            body: body.clone(),
            checksum: false,
        }],
    );
    let data = tmp.path().join("d");
    let err = run_err(&data_args("fetch", "tofu", &m, &data, &[]));
    assert!(
        err.contains("no published checksum") && err.contains("data register tofu"),
        "{err}"
    );
    assert!(
        srv.log().is_empty(),
        "nothing downloaded without --register"
    );
    let out = run_ok(&data_args("register", "tofu", &m, &data, &[]));
    assert!(out.contains(&sha256(&body)), "{out}");
    let reg = std::fs::read_to_string(data.join("tofu").join("registered.toml")).unwrap();
    assert!(
        reg.contains(&sha256(&body)) && reg.contains("size = 30000"),
        "{reg}"
    );
    // Now it verifies against the recorded hash, and a changed file is caught.
    run_ok(&data_args("verify", "tofu", &m, &data, &[]));
    let list = run_ok(&[
        "data",
        "list",
        "--manifest",
        m.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let row = list.lines().find(|l| l.starts_with("tofu")).unwrap();
    assert!(row.contains("verified"), "{row}");
    std::fs::write(downloads(&data, "tofu").join("r.tar.gz"), b"tampered").unwrap();
    let err = run_err(&data_args("verify", "tofu", &m, &data, &[]));
    assert!(
        err.contains("r.tar.gz") && err.contains("mismatch"),
        "{err}"
    );
}

#[test]
fn several_files_at_once() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let files: Vec<FixtureFile> = (0..4)
        .map(|i| ff(&format!("part{i}.bin"), noise(50_000 + i, 20 + i as u64)))
        .collect();
    let bodies: Vec<Vec<u8>> = files.iter().map(|f| f.body.clone()).collect();
    let m = serve_dataset(&srv, tmp.path(), "multi", None, files);
    let data = tmp.path().join("d");
    run_ok(&data_args("fetch", "multi", &m, &data, &["--jobs", "4"]));
    for (i, b) in bodies.iter().enumerate() {
        assert_eq!(
            &std::fs::read(downloads(&data, "multi").join(format!("part{i}.bin"))).unwrap(),
            b
        );
    }
}

#[test]
fn a_second_process_waits_for_the_one_fetching_the_same_file() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let body = noise(80_000, 31);
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "locked",
        None,
        vec![ff("a.bin", body.clone())],
    );
    let data = tmp.path().join("d");
    let dl = downloads(&data, "locked");
    std::fs::create_dir_all(&dl).unwrap();
    // Stand in for another contracam process: hold the file's lock as `data fetch` would.
    let held = std::fs::File::create(dl.join("a.bin.lock")).unwrap();
    held.lock().unwrap();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("contracam"))
        .args(data_args("fetch", "locked", &m, &data, &[]))
        .env("CONTRACAM_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "fetch did not wait for the lock"
    );
    assert!(
        srv.log().is_empty(),
        "fetched while locked: {:?}",
        srv.log()
    );
    assert!(!dl.join("a.bin").exists() && !dl.join("a.bin.part").exists());
    drop(held);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(dl.join("a.bin")).unwrap(), body);
    assert_eq!(srv.log().len(), 1);
}

#[test]
fn list_shows_every_dataset_with_real_checksums() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_ok(&["data", "list", "--data-dir", tmp.path().to_str().unwrap()]);
    for ds in [
        "coco2017",
        "cub200",
        "flowers102",
        "bg-challenge",
        "imagenet",
        "imagenet-sketch",
        "imagenet-r",
        "imagenet-c",
        "stylized-imagenet",
        "cifar10",
        "cifar100",
        "food101",
        "pets",
        "voc2012",
        "voc2007",
        "wsol-cubv2",
        "wsol-openimages",
        "imagenet-info",
        "imagenet9",
        "imagenetv2",
    ] {
        let row = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(ds))
            .unwrap_or_else(|| panic!("{ds} missing:\n{out}"));
        assert!(row.contains("absent"), "{row}");
    }
    let json = run_ok(&[
        "data",
        "list",
        "--json",
        "--data-dir",
        tmp.path().to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let coco = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["dataset"] == "coco2017")
        .unwrap();
    assert_eq!(coco["bytes"], 19336861798u64 + 815585330 + 252907541);
    assert_eq!(coco["checksums"], "sha256");
    let c = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["dataset"] == "imagenet-c")
        .unwrap();
    assert_eq!(c["checksums"], "md5-only");
    let bg = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["dataset"] == "bg-challenge")
        .unwrap();
    assert_eq!(bg["checksums"], "none+sha256");
    // The builder `data build` runs, or none for download-only datasets.
    let rows = v.as_array().unwrap();
    let builder = |ds: &str| rows.iter().find(|r| r["dataset"] == ds).unwrap()["builder"].clone();
    assert_eq!(builder("cub200"), "cub");
    for ds in ["wsol-cubv2", "wsol-openimages", "imagenetv2"] {
        assert_eq!(builder(ds), ds, "{ds}");
    }
    assert_eq!(builder("imagenet"), "imagenet-val");
    assert!(builder("imagenet-info").is_null());
    let text_row = |ds: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(ds))
            .unwrap()
            .to_string()
    };
    assert!(text_row("cub200").contains(" cub "));
    assert!(text_row("wsol-openimages").contains(" wsol-openimages "));
    assert!(text_row("imagenet-info").contains("- (download only)"));
}

#[test]
fn bad_user_manifest_names_file_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("typo.toml");
    std::fs::write(
        &m,
        "[dataset]\nname='x'\ntitle='t'\n[[files]]\nname='a'\nurl='http://x/a'\n",
    )
    .unwrap();
    let err = run_err(&["data", "list", "--manifest", m.to_str().unwrap()]);
    assert!(err.contains("typo.toml") && err.contains("`url`"), "{err}");
}
