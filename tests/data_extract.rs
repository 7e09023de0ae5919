//! Safe extraction: malicious archives are refused with nothing left behind; half-extracted trees are redone.
mod data_common;

use std::path::Path;

use contracam::data::source::extract::{extract, ExtractLimits, MARKER};
use data_common::*;

fn refused(bytes: &[u8], name: &str, expect: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join(name);
    std::fs::write(&archive, bytes).unwrap();
    let dest = tmp.path().join("out");
    let err = extract(&archive, &dest, &ExtractLimits::default())
        .unwrap_err()
        .to_string();
    for e in expect {
        assert!(err.contains(e), "{name}: `{e}` not in: {err}");
    }
    assert!(!dest.exists(), "{name}: nothing may be extracted");
    assert!(
        !tmp.path().join("out.extracting").exists(),
        "{name}: temporary tree removed"
    );
    assert!(!tmp.path().join("evil").exists() && !tmp.path().join("escaped").exists());
    assert!(archive.exists(), "the archive itself is kept");
}

#[test]
fn zip_slip_is_refused() {
    let z = zip(&[file("ok.txt", "fine"), file("../evil", "pwned")]);
    refused(&z, "slip.zip", &["slip.zip", "../evil", "`..`"]);
    let t = raw_tar_entry("a/../../evil", b'0', "", b"pwned");
    refused(&t, "slip.tar", &["slip.tar", "`..`"]);
}

#[test]
fn absolute_paths_are_refused() {
    let t = raw_tar_entry("/tmp/evil-abs", b'0', "", b"x");
    refused(&t, "abs.tar", &["/tmp/evil-abs", "absolute"]);
    refused(&gzip(&t), "abs.tar.gz", &["absolute"]);
    let z = zip(&[file("/etc/evil", "x")]);
    refused(&z, "abs.zip", &["absolute"]);
}

#[test]
fn symlink_escapes_are_refused() {
    let t = tar(&[
        Entry::Dir("d/".into()),
        Entry::Symlink("d/link".into(), "../../escaped".into()),
    ]);
    refused(&t, "sym.tar", &["d/link", "outside"]);
    let t = tar(&[Entry::Symlink("abs".into(), "/etc".into())]);
    refused(&t, "symabs.tar", &["outside"]);
    let z = zip(&[Entry::Symlink("l".into(), "../escaped".into())]);
    refused(&z, "sym.zip", &["outside"]);
    // Hard link to a path outside.
    let t = raw_tar_entry("hl", b'1', "../escaped", b"");
    refused(&t, "hard.tar", &["hard link", "`..`"]);
    // An in-tree link is fine, but nothing may be written through it.
    let t = tar(&[
        Entry::Dir("real/".into()),
        Entry::Symlink("alias".into(), "real".into()),
        file("alias/f.txt", "x"),
    ]);
    refused(&t, "through.tar", &["alias/f.txt", "symbolic link"]);
}

#[test]
fn device_files_are_refused() {
    refused(
        &raw_tar_entry("dev/sda", b'3', "", b""),
        "chr.tar",
        &["device"],
    );
    refused(
        &raw_tar_entry("dev/blk", b'4', "", b""),
        "blk.tar",
        &["device"],
    );
    refused(&raw_tar_entry("fifo", b'6', "", b""), "fifo.tar", &["FIFO"]);
}

#[test]
fn decompression_bombs_are_refused() {
    let zeros = vec![0u8; 40 << 20];
    // 40 MiB of zeros gzip to ~40 KiB: ratio ~1000 > 100 (and past the 16 MiB slack).
    let t = tar_gz(&[file("zeros.bin", zeros.clone())]);
    assert!(t.len() < 1 << 20);
    refused(
        &t,
        "bomb.tar.gz",
        &["bomb.tar.gz", "cap", "decompression bomb"],
    );
    let z = zip(&[file("zeros.bin", zeros)]);
    refused(&z, "bomb.zip", &["cap", "decompression bomb"]);
    // An absolute cap applies too.
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("small.tar");
    std::fs::write(&a, tar(&[file("x.bin", noise(100_000, 1))])).unwrap();
    let lim = ExtractLimits {
        max_bytes: 50_000,
        ..Default::default()
    };
    let err = extract(&a, &tmp.path().join("o"), &lim)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cap"), "{err}");
}

#[test]
fn format_is_sniffed_and_half_extracted_trees_are_redone() {
    let tmp = tempfile::tempdir().unwrap();
    // A ".tar.gz" that is really a plain tar (as TFDS warns for Pets/Flowers).
    let a = tmp.path().join("images.tar.gz");
    std::fs::write(
        &a,
        tar(&[file("images/a.jpg", "jpeg"), file("images/b.jpg", "jpeg2")]),
    )
    .unwrap();
    let dest = tmp.path().join("images.tar.gz.d");
    // Simulate an interrupted earlier run: files but no marker.
    std::fs::create_dir_all(dest.join("images")).unwrap();
    std::fs::write(dest.join("images/a.jpg"), "trunc").unwrap();
    std::fs::write(dest.join("stale.txt"), "old").unwrap();
    let m = extract(&a, &dest, &ExtractLimits::default()).unwrap();
    assert_eq!(m.format, "tar");
    assert_eq!((m.files, m.bytes), (2, 9));
    assert_eq!(
        std::fs::read_to_string(dest.join("images/a.jpg")).unwrap(),
        "jpeg"
    );
    assert!(
        !dest.join("stale.txt").exists(),
        "the half-extracted tree was replaced"
    );
    assert!(dest.join(MARKER).exists());
    // Second call: complete, nothing redone.
    std::fs::write(dest.join("images/extra"), "kept").unwrap();
    extract(&a, &dest, &ExtractLimits::default()).unwrap();
    assert!(dest.join("images/extra").exists());
    // Not an archive at all.
    let junk = tmp.path().join("junk.zip");
    std::fs::write(&junk, b"hello").unwrap();
    let err = extract(&junk, &tmp.path().join("j"), &ExtractLimits::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("junk.zip") && err.contains("magic"), "{err}");
}

#[test]
fn unsafe_archive_in_a_build_keeps_the_download() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let evil = zip(&[file("../evil", "x")]);
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "food101",
        Some("food101"),
        vec![ff("food-101.tar.gz", evil.clone())],
    );
    let data = tmp.path().join("d");
    let o = contracam(&[
        "data",
        "build",
        "--quiet",
        "food101",
        "--manifest",
        m.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unsafe archive") && err.contains("../evil"),
        "{err}"
    );
    let dl = data.join("food101/downloads/food-101.tar.gz");
    assert_eq!(
        std::fs::read(&dl).unwrap(),
        evil,
        "the verified download is not lost"
    );
    assert!(!Path::new(&data.join("food101/extracted/food-101.tar.gz")).exists());
    assert!(!tmp.path().join("evil").exists() && !data.join("food101/extracted/evil").exists());
}
