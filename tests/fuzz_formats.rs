//! Property tests of the file-format readers of untrusted bytes: MAT v5 (plain and miCOMPRESSED), `.npy`,
//! the safetensors header and reader, and the official box file. Arbitrary bytes, and mutations (bit flips,
//! edge-case words, truncations, insertions, splices) of valid inputs written here, never panic, hang or
//! allocate without bound; they parse or return an error, and what parses keeps the reader's invariants.
//! Crashes found here became the regression tests at the end of the file.
//!
//! Cases per property: `$CONTRACAM_FUZZ_CASES`, else the defaults below (about 20 s for the file in release
//! on one thread).
mod fuzz_support;

use std::io::Write as _;
use std::path::Path;

use contracam::data::formats::box_file::{
    format_box_line, parse_box_file, read_box_file_checked, BoxEntries,
};
use contracam::data::formats::{mat5, npy, safetensors};
use fuzz_support::{apply, bounded, bytes, config, mutations};
use proptest::prelude::*;

#[global_allocator]
static ALLOC: fuzz_support::CapAlloc = fuzz_support::CapAlloc;

// ---------------------------------------------------------------- MAT v5

fn mat_seed(compress: bool) -> Vec<u8> {
    mat5::write_row_vectors(
        &[("labels", &[77.0, 1.0, 102.0]), ("trnid", &[3.0, 1.0])],
        compress,
    )
}

/// A MAT file whose one miCOMPRESSED element holds `inner` (any bytes, deflated correctly), so the
/// element parser behind the zlib layer sees the mutations instead of a checksum failure.
fn mat_compressed(inner: &[u8]) -> Vec<u8> {
    let mut out = mat_seed(false)[..128].to_vec();
    let mut z = flate2::write::ZlibEncoder::new(vec![], flate2::Compression::fast());
    z.write_all(inner).unwrap();
    let zd = z.finish().unwrap();
    out.extend_from_slice(&15u32.to_le_bytes());
    out.extend_from_slice(&(zd.len() as u32).to_le_bytes());
    out.extend_from_slice(&zd);
    out
}

fn mat_parse(b: Vec<u8>) {
    bounded("mat5::parse", move || {
        let _ = mat5::parse(&b);
    })
}

#[test]
fn mat_seeds_parse() {
    for compress in [false, true] {
        let m = mat5::parse(&mat_seed(compress)).unwrap();
        assert_eq!(m["labels"].data, vec![77.0, 1.0, 102.0]);
    }
    // The matrix elements of the plain file, recompressed, read the same.
    let m = mat5::parse(&mat_compressed(&mat_seed(false)[128..])).unwrap();
    assert_eq!(m["trnid"].data, vec![3.0, 1.0]);
}

proptest! {
    #![proptest_config(config(1200))]

    #[test]
    fn mat_arbitrary_bytes(tail in bytes(512), big_endian in any::<bool>()) {
        // The 128-byte header with a valid endian marker, then anything.
        let mut b = mat_seed(false)[..128].to_vec();
        if big_endian {
            b[126..128].copy_from_slice(b"MI");
        }
        b.extend(tail);
        mat_parse(b);
    }

    #[test]
    fn mat_mutated_files(compress in any::<bool>(), ms in mutations(6), big_endian in any::<bool>()) {
        let mut b = mat_seed(compress);
        if big_endian {
            b[126..128].copy_from_slice(b"MI");
        }
        mat_parse(apply(&b, &ms));
    }

    #[test]
    fn mat_mutated_compressed_contents(ms in mutations(6)) {
        let inner = apply(&mat_seed(false)[128..], &ms);
        mat_parse(mat_compressed(&inner));
    }
}

// ---------------------------------------------------------------- .npy

fn npy_seeds() -> Vec<Vec<u8>> {
    let f8: Vec<u8> = [0.1f64, 0.2, 0.3, 0.4]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    // Version 2: a 4-byte header length.
    let h = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }\n";
    let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
    v2.extend((h.len() as u32).to_le_bytes());
    v2.extend(h);
    v2.extend([0u8; 8]);
    vec![
        npy::encode_npy_2d_f32(2, 3, &[0.0, 0.25, 1.0, 0.5, 0.125, 0.75]),
        npy::npy_v1("<f8", "(2, 2)", &f8),
        v2,
    ]
}

fn npy_check(b: Vec<u8>) {
    bounded("npy::parse_npy_2d", move || {
        if let Ok(a) = npy::parse_npy_2d(&b) {
            assert_eq!(a.data.len(), a.height * a.width, "shape and data disagree");
        }
    })
}

#[test]
fn npy_seeds_parse() {
    for s in npy_seeds() {
        npy::parse_npy_2d(&s).unwrap();
    }
}

/// Header field values, well-formed and not.
fn npy_header() -> impl Strategy<Value = (String, String, String)> {
    let descr = proptest::sample::select(vec![
        "'<f4'", "'<f8'", "'>f4'", "'<i4'", "'|u1'", "<f4", "'<f4", "",
    ]);
    let fortran = proptest::sample::select(vec!["False", "True", "0", ""]);
    let dim = prop_oneof![
        3 => (0u64..5).prop_map(|d| d.to_string()),
        1 => any::<u64>().prop_map(|d| d.to_string()),
        1 => Just("18446744073709551616".to_string()),
        1 => Just("-1".to_string()),
        1 => Just("2.5".to_string()),
        1 => "[ (),0-9]{0,6}",
    ];
    let shape = proptest::collection::vec(dim, 0..4).prop_map(|d| format!("({})", d.join(", ")));
    (descr, fortran, shape).prop_map(|(d, f, s)| (d.to_string(), f.to_string(), s))
}

proptest! {
    #![proptest_config(config(1200))]

    #[test]
    fn npy_arbitrary_bytes(tail in bytes(256), version in 0u8..5) {
        let mut b = b"\x93NUMPY".to_vec();
        b.extend([version, 0]);
        b.extend(tail);
        npy_check(b);
    }

    #[test]
    fn npy_mutated_files(seed in 0usize..3, ms in mutations(6)) {
        npy_check(apply(&npy_seeds()[seed], &ms));
    }

    #[test]
    fn npy_generated_headers((descr, fortran, shape) in npy_header(), payload in 0usize..64) {
        let h = format!("{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}\n");
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend((h.len() as u16).to_le_bytes());
        b.extend(h.as_bytes());
        b.extend(vec![0u8; payload]);
        npy_check(b);
    }
}

// ---------------------------------------------------------------- safetensors

/// A whole safetensors file from a JSON header and `data_len` data bytes.
fn st_file(header: &serde_json::Value, data_len: usize) -> Vec<u8> {
    let mut text = header.to_string();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut b = (text.len() as u64).to_le_bytes().to_vec();
    b.extend(text.as_bytes());
    b.extend((0..data_len).map(|i| i as u8));
    b
}

fn st_seed() -> Vec<u8> {
    st_file(
        &serde_json::json!({
            "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
            "m": {"dtype": "U8", "shape": [5], "data_offsets": [24, 29]},
            "e": {"dtype": "I64", "shape": [0, 4], "data_offsets": [29, 29]},
            "__metadata__": {"format": "pt"},
        }),
        29,
    )
}

/// Parses the header, checks the invariants a reader relies on, then opens the file and reads every
/// tensor, as bytes and as a tch tensor.
fn st_check(b: Vec<u8>) {
    bounded("safetensors", move || {
        if let Ok(h) = safetensors::parse_header(&b) {
            let data_len = b.len() as u64 - h.data_start;
            let mut at = 0;
            let mut ranges: Vec<_> = h.tensors.values().map(|t| (t.begin, t.end)).collect();
            ranges.sort();
            for (begin, end) in ranges {
                assert_eq!(begin, at, "tensors do not tile the data");
                at = end;
            }
            assert_eq!(at, data_len);
            for t in h.tensors.values() {
                assert_eq!(
                    safetensors::byte_size(&t.shape, t.dtype),
                    Some(t.byte_len())
                );
                let _ = t.numel();
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.safetensors");
        std::fs::write(&p, &b).unwrap();
        let parsed = safetensors::parse_header(&b);
        match safetensors::SafetensorsReader::open(&p) {
            Ok(mut r) => {
                assert_eq!(
                    Ok(r.header().clone()),
                    parsed,
                    "file and memory parse differ"
                );
                let infos: Vec<_> = r
                    .header()
                    .tensors
                    .iter()
                    .map(|(k, t)| (k.clone(), t.clone()))
                    .collect();
                for (k, t) in infos {
                    let mut buf = vec![0u8; t.byte_len() as usize];
                    r.read_bytes(&k, 0, &mut buf).unwrap();
                    assert!(r.read_bytes(&k, 1, &mut buf).is_err() || buf.is_empty());
                    let _ = r.read_tensor(&k);
                }
            }
            Err(_) => assert!(
                parsed.is_err(),
                "memory parse accepted what the file reader refused"
            ),
        }
    })
}

#[test]
fn safetensors_seed_parses() {
    let h = safetensors::parse_header(&st_seed()).unwrap();
    assert_eq!(h.tensors.len(), 3);
    assert_eq!(h.metadata["format"], "pt");
}

/// A header entry with a dtype, shape and offsets drawn from valid and edge values.
fn st_entry() -> impl Strategy<Value = serde_json::Value> {
    let dtype = proptest::sample::select(vec![
        "F32", "F16", "BF16", "F64", "U8", "I8", "I64", "U64", "BOOL", "f32", "",
    ]);
    let num = prop_oneof![
        4 => (0u64..8).prop_map(serde_json::Value::from),
        1 => any::<u64>().prop_map(serde_json::Value::from),
        1 => Just(serde_json::Value::from(u64::MAX)),
        1 => Just(serde_json::Value::from(-1)),
        1 => Just(serde_json::Value::from(1.5)),
        1 => Just(serde_json::Value::from("3")),
    ];
    (
        dtype,
        proptest::collection::vec(num.clone(), 0..4),
        proptest::collection::vec(num, 0..4),
        any::<bool>(),
    )
        .prop_map(|(d, shape, offs, extra)| {
            let mut e = serde_json::json!({"dtype": d, "shape": shape, "data_offsets": offs});
            if extra {
                e["extra"] = serde_json::Value::Null;
            }
            e
        })
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn safetensors_arbitrary_bytes(json in bytes(256), data in 0usize..64, lie in any::<bool>(), len in any::<u64>()) {
        let mut b = if lie { len } else { json.len() as u64 }.to_le_bytes().to_vec();
        b.extend(json);
        b.extend(vec![0u8; data]);
        st_check(b);
    }

    #[test]
    fn safetensors_mutated_files(ms in mutations(6)) {
        st_check(apply(&st_seed(), &ms));
    }

    #[test]
    fn safetensors_generated_headers(
        entries in proptest::collection::vec(("[a-c_]{1,3}", st_entry()), 0..4),
        data in 0usize..80,
    ) {
        let mut h = serde_json::Map::new();
        for (k, v) in entries {
            h.insert(k, v);
        }
        st_check(st_file(&serde_json::Value::Object(h), data));
    }
}

// ---------------------------------------------------------------- box file

const BOX_SEED: &str = "139 0.000000,0.007812,0.500000,1.000000 0.1,0.2,0.3,0.4\n285\n\n\
                        n01440764/a.JPEG 0.250000,0.250000,0.750000,0.750000\n";

/// Parses `text` plainly and through the checked reader; what the checked reader accepts keeps its
/// promises (finite, inside [0, 1], positive area, unique ids).
fn box_check(text: String) {
    bounded("box_file", move || {
        let plain: Option<BoxEntries> = parse_box_file(&text, Path::new("boxes.txt")).ok();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("boxes.txt");
        std::fs::write(&p, &text).unwrap();
        match read_box_file_checked(&p) {
            Ok(entries) => {
                let plain = plain.expect("the checked reader accepted what the plain one refused");
                assert_eq!(plain.len(), entries.len());
                let mut ids = std::collections::HashSet::new();
                for (_, id, boxes) in &entries {
                    assert!(ids.insert(id.clone()), "id {id:?} twice");
                    for b in boxes {
                        assert!(b.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)));
                        assert!(b[0] < b[2] && b[1] < b[3], "{}", format_box_line(id, &[*b]));
                    }
                }
            }
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains("boxes.txt"), "error does not name the file: {e}");
            }
        }
    })
}

#[test]
fn box_seed_parses() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("b.txt");
    std::fs::write(&p, BOX_SEED).unwrap();
    assert_eq!(read_box_file_checked(&p).unwrap().len(), 3);
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn box_arbitrary_text(t in "[0-9a-zA-Z ,.\n\t+-]{0,200}") {
        box_check(t);
    }

    #[test]
    fn box_arbitrary_bytes(b in bytes(200)) {
        box_check(String::from_utf8_lossy(&b).into_owned());
    }

    #[test]
    fn box_mutated_files(ms in mutations(6)) {
        let b = apply(BOX_SEED.as_bytes(), &ms);
        box_check(String::from_utf8_lossy(&b).into_owned());
    }
}

// ---------------------------------------------------------------- regressions

/// A miCOMPRESSED element of 65 MiB of zeros (65 KiB on disk) inflated without bound before the cap.
#[test]
fn mat_compressed_bomb_is_refused() {
    let b = mat_compressed(&vec![0u8; 65 << 20]);
    assert!(b.len() < 1 << 20);
    let e = mat5::parse(&b).unwrap_err();
    assert!(
        e.contains("inflates past 64 MiB") && e.contains("at byte 128"),
        "{e}"
    );
    // Through the file reader the message names the file.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bomb.mat");
    std::fs::write(&p, &b).unwrap();
    let e = mat5::read(&p).unwrap_err().to_string();
    assert!(e.contains("bomb.mat") && e.contains("inflates past"), "{e}");
}
