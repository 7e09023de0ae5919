//! Pillow's bilinear resize, bit-exact: known answers from `tests/data/gen_pil_resize.py` (Pillow 10.4.0).
use base64::Engine;
use contracam::imgops::resize::resize_bilinear_pil_rgb8;

#[test]
fn bilinear_resize_matches_pillow_exactly() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/pil_resize.json"
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for c in cases {
        let g = |k: &str| c[k].as_u64().unwrap() as usize;
        let (w, h, nw, nh) = (g("w"), g("h"), g("nw"), g("nh"));
        let src = b64.decode(c["src"].as_str().unwrap()).unwrap();
        let want = b64.decode(c["dst"].as_str().unwrap()).unwrap();
        let got = resize_bilinear_pil_rgb8(&src, w, h, nw, nh);
        assert_eq!(got.len(), want.len(), "{w}x{h} -> {nw}x{nh}: length");
        let diff = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(
            diff,
            0,
            "{w}x{h} -> {nw}x{nh}: {diff} of {} bytes differ",
            want.len()
        );
    }
}
