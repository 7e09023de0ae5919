//! Known-answer vectors for the COCO RLE port, computed with pycocotools 2.0.11 (numpy 2.x, Python 3.11):
//!
//! ```python
//! import numpy as np, pycocotools.mask as M
//! h, w = 23, 31
//! polys = [[2.3,1.7, 20.9,3.2, 25.5,18.8, 6.1,21.4, 1.0,12.0], [24.0,2.0, 29.5,2.5, 28.0,9.0]]
//! rles = M.frPyObjects(polys, h, w); m = M.merge(rles)
//! [r['counts'] for r in rles], m['counts'], M.area(m), M.toBbox(m)
//! r = M.frPyObjects({'counts': [5,3,10,2,400,7], 'size': [h, w]}, h, w)   # uncompressed RLE
//! mask = (np.random.RandomState(0).rand(7, 9) > 0.6).astype(np.uint8); M.encode(np.asfortranarray(mask))
//! M.decode(m).sum(), M.decode(m)[3]
//! ```
//! Exact equality is required: these are integer run lengths and ASCII strings, no tolerance applies.
use contracam::imgops::rle::Rle;

const H: u32 = 23;
const W: u32 = 31;

fn polys() -> Vec<Vec<f64>> {
    vec![
        vec![2.3, 1.7, 20.9, 3.2, 25.5, 18.8, 6.1, 21.4, 1.0, 12.0],
        vec![24.0, 2.0, 29.5, 2.5, 28.0, 9.0],
    ]
}

#[test]
fn polygons_match_pycocotools() {
    let p = polys();
    assert_eq!(
        Rle::from_polygon(&p[0], H, W).to_compressed(),
        "o05<8N1O2N2N1O0000000001O0O1000000000000O3N3M4L3M3MQ3"
    );
    assert_eq!(
        Rle::from_polygon(&p[1], H, W).to_compressed(),
        "Za01f02N1O2NO]1"
    );
    let m = Rle::from_polygons(&p, H, W);
    assert_eq!(
        m.to_compressed(),
        "o05<8N1O2N2N1O0000000001O0O1000000000000O3N3M4LFJ63JO7NI3=2NO]1"
    );
    assert_eq!(m.area(), 389);
    assert_eq!(m.to_bbox(), [1.0, 2.0, 28.0, 19.0]);
    let d = m.decode_row_major();
    assert_eq!(d.iter().map(|&v| v as u64).sum::<u64>(), 389);
    let row3: String = d[3 * W as usize..4 * W as usize]
        .iter()
        .map(|v| char::from(b'0' + v))
        .collect();
    assert_eq!(row3, "0011111111111111111110000111100");
}

#[test]
fn uncompressed_and_compressed_strings_match_pycocotools() {
    let r = Rle {
        h: H,
        w: W,
        counts: vec![5, 3, 10, 2, 400, 7],
    };
    assert_eq!(r.to_compressed(), "53:OV<5");
    assert_eq!(r.area(), 12);
    assert_eq!(r.to_bbox(), [0.0, 5.0, 19.0, 15.0]);
    assert_eq!(Rle::from_compressed("53:OV<5", H, W).unwrap(), r);
    let m = Rle::from_polygons(&polys(), H, W);
    assert_eq!(Rle::from_compressed(&m.to_compressed(), H, W).unwrap(), m);
    assert!(Rle::from_compressed("\u{7f}", H, W).is_err());
}

#[test]
fn encode_matches_pycocotools() {
    // np.random.RandomState(0).rand(7, 9) > 0.6, row-major.
    let bits = "011001011010010001111101010100010001111100101100000010001000001";
    let mask: Vec<u8> = bits.bytes().map(|b| b - b'0').collect();
    let r = Rle::encode_row_major(&mask, 7, 9);
    assert_eq!(
        r.to_compressed(),
        "241O0N10O0000010O020N020N070J0O010O1000O"
    );
    assert_eq!(r.decode_row_major(), mask);
}
