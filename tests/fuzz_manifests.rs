//! Property tests of the readers of dataset descriptions: download manifests (TOML, `Manifest::parse`)
//! and sample indices (JSON Lines, `SplitIndex::read`). Arbitrary text, mutations of the shipped manifests
//! and of a written index, and generated index headers never panic, hang or allocate without bound; they
//! parse or return an error naming the file, and what parses keeps the validated invariants.
//! Crashes found here became the regression tests at the end of the file.
//!
//! Cases per property: `$CONTRACAM_FUZZ_CASES`, else the defaults below (about 20 s for the file in release
//! on one thread).
mod fuzz_support;

use std::path::{Path, PathBuf};

use contracam::data::index::{Sample, SplitIndex};
use contracam::data::source::manifest::Manifest;
use fuzz_support::{apply, bounded, bytes, config, mutations};
use proptest::prelude::*;

#[global_allocator]
static ALLOC: fuzz_support::CapAlloc = fuzz_support::CapAlloc;

// ---------------------------------------------------------------- manifests

fn manifest_seeds() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    ["flowers102.toml", "coco2017.toml", "imagenet.toml"]
        .iter()
        .map(|n| std::fs::read_to_string(dir.join(n)).unwrap())
        .collect()
}

/// Parses `text`; an error names the origin, an accepted manifest has the validated names and hashes.
fn manifest_check(text: String) {
    bounded("Manifest::parse", move || {
        let origin = Path::new("manifests/fuzz.toml");
        match Manifest::parse(&text, origin) {
            Ok(m) => {
                let name = m.name();
                assert!(!name.is_empty());
                assert!(name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
                for f in &m.files {
                    assert!(
                        !f.name.is_empty() && !f.name.contains('/') && !f.name.starts_with('.')
                    );
                    if let Some(h) = &f.sha256 {
                        assert_eq!(h.len(), 64);
                    }
                    let _ = (f.checksum_kind(), f.should_extract());
                }
            }
            Err(e) => {
                let e = e.to_string();
                assert!(
                    e.contains("manifests/fuzz.toml"),
                    "error does not name the file: {e}"
                );
            }
        }
    })
}

#[test]
fn manifest_seeds_parse() {
    for s in manifest_seeds() {
        Manifest::parse(&s, Path::new("m.toml")).unwrap();
    }
}

/// TOML-ish tokens, so that mutations reach the typed layer and not only the tokenizer.
fn toml_token() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(vec![
            "[dataset]\n",
            "[[files]]\n",
            "name = ",
            "title = ",
            "urls = ",
            "size = ",
            "sha256 = ",
            "md5 = ",
            "extract = ",
            "optional = ",
            "gated = ",
            "builder = ",
            "generated = ",
            "\"x\"",
            "\"a.tgz\"",
            "\"../a\"",
            "\".a\"",
            "\"\"",
            "[\"https://h/a\"]",
            "[\"ftp://h\"]",
            "true",
            "-1",
            "18446744073709551616",
            "1e400",
            "[",
            "]",
            "{",
            "}",
            ",",
            "\n",
            "=",
            "'''",
            "\"\"\"",
            "\"\\u0000\"",
            "inf",
            "nan",
            "1979-05-27T07:32:00Z",
            "a.b.c = 1\n",
        ])
        .prop_map(str::to_string),
        "[a-z0-9 =\"\\[\\]\n.,_-]{0,12}",
    ]
}

proptest! {
    #![proptest_config(config(1500))]

    #[test]
    fn manifest_arbitrary_text(b in bytes(300)) {
        manifest_check(String::from_utf8_lossy(&b).into_owned());
    }

    #[test]
    fn manifest_token_sequences(tokens in proptest::collection::vec(toml_token(), 0..40)) {
        manifest_check(tokens.concat());
    }

    #[test]
    fn manifest_mutated_files(seed in 0usize..3, ms in mutations(6)) {
        let b = apply(manifest_seeds()[seed].as_bytes(), &ms);
        manifest_check(String::from_utf8_lossy(&b).into_owned());
    }

    #[test]
    fn manifest_deep_nesting(depth in 1usize..5000, table in any::<bool>()) {
        let text = if table {
            format!("[dataset]\nname = \"x\"\ntitle = \"t\"\nnotes = {}{}\n", "{a = ".repeat(depth), "}".repeat(depth))
        } else {
            format!("[dataset]\nname = \"x\"\ntitle = \"t\"\nnotes = {}{}\n", "[".repeat(depth), "]".repeat(depth))
        };
        manifest_check(text);
    }
}

// ---------------------------------------------------------------- sample indices

fn index_seed() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let samples = vec![
        Sample {
            path: "train/a b/c.jpg".into(),
            labels: vec![1],
            boxes: vec![[1.0, 2.0, 3.5, 4.0]],
            mask: Some("m/c.png".into()),
            width: 10,
            height: 20,
            ..Default::default()
        },
        Sample {
            path: "val/c/a.jpg".into(),
            labels: vec![0, 1],
            instance_masks: vec!["val/c/a_mc_0.png".into()],
            ignore_mask: Some("val/c/a_ignore.png".into()),
            width: 4,
            height: 3,
            ..Default::default()
        },
    ];
    let idx = SplitIndex::new("d", "train", vec!["x".into(), "y".into()], "class", samples)
        .with_mask_rule("binary")
        .with_provenance("fuzz seed");
    std::fs::read(idx.write(dir.path()).unwrap()).unwrap()
}

/// Reads `bytes` as an index file; an error names the file, an accepted index holds `count` samples.
fn index_check(bytes: Vec<u8>) {
    bounded("SplitIndex::read", move || {
        let dir = tempfile::tempdir().unwrap();
        let p: PathBuf = dir.path().join("split.jsonl");
        std::fs::write(&p, &bytes).unwrap();
        match SplitIndex::read(&p) {
            Ok(idx) => assert_eq!(idx.header.count, idx.samples.len()),
            Err(e) => {
                let e = e.to_string();
                assert!(
                    e.contains("split.jsonl"),
                    "error does not name the file: {e}"
                );
            }
        }
    })
}

#[test]
fn index_seed_reads() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.jsonl");
    std::fs::write(&p, index_seed()).unwrap();
    assert_eq!(SplitIndex::read(&p).unwrap().samples.len(), 2);
}

/// A header line with a drawn `count` (small, and the sizes no file could hold), then `n` sample lines.
fn index_with_count(count: u64, n: usize) -> Vec<u8> {
    let mut text = format!(
        "{{\"format\":\"contracam-sample-index\",\"version\":1,\"dataset\":\"d\",\"split\":\"s\",\
         \"classes\":[\"x\"],\"label_kind\":\"class\",\"count\":{count}}}\n"
    );
    for i in 0..n {
        text.push_str(&format!(
            "{{\"path\":\"{i}.jpg\",\"labels\":[0],\"width\":1,\"height\":1}}\n"
        ));
    }
    text.into_bytes()
}

proptest! {
    #![proptest_config(config(1500))]

    #[test]
    fn index_arbitrary_bytes(b in bytes(300)) {
        index_check(b);
    }

    #[test]
    fn index_mutated_files(ms in mutations(6)) {
        index_check(apply(&index_seed(), &ms));
    }

    #[test]
    fn index_header_counts(
        count in prop_oneof![0u64..6, any::<u64>(), Just(u64::MAX), Just(1 << 40), Just(1 << 24)],
        n in 0usize..6,
    ) {
        index_check(index_with_count(count, n));
    }
}

// ---------------------------------------------------------------- regressions

/// The header's `count` was preallocated (`Vec::with_capacity(count)`) before a sample line was read:
/// `index_header_counts` aborted the test binary with "memory allocation of 2550136832 bytes failed"
/// (larger counts are a capacity-overflow panic).
#[test]
fn forged_sample_count_is_an_error_not_an_allocation() {
    for count in [1u64 << 24, 1 << 40, u64::MAX] {
        bounded("forged count", move || {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("split.jsonl");
            std::fs::write(&p, index_with_count(count, 1)).unwrap();
            let e = SplitIndex::read(&p).unwrap_err().to_string();
            assert!(
                e.contains("split.jsonl")
                    && e.contains(&format!("header says {count} samples, file has 1")),
                "{e}"
            );
        });
    }
}
