//! Resizing with OpenCV semantics.
//!
//! [`resize_cubic_f64`] is `cv2.resize(src_f64, (dw, dh), interpolation=cv2.INTER_CUBIC)`: Keys cubic
//! with A = -0.75, half-pixel centres `fx = (dx + 0.5) * src / dst - 0.5` rounded to `f32`, tap
//! coefficients computed in `f32` and applied to `f64` data, border replicate, horizontal pass first,
//! sums left to right (OpenCV `HResizeCubic` / `VResizeCubic`). No antialiasing when shrinking, and a
//! same-size resize is an exact copy. These details change 8-bit maps in wsolevaluation's pipeline.

/// OpenCV `interpolateCubic` (float arithmetic).
fn cubic_coeffs(x: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let c0 = ((A * (x + 1.0) - 5.0 * A) * (x + 1.0) + 8.0 * A) * (x + 1.0) - 4.0 * A;
    let c1 = ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let c2 = ((A + 2.0) * (1.0 - x) - (A + 3.0)) * (1.0 - x) * (1.0 - x) + 1.0;
    let c3 = 1.0 - c0 - c1 - c2;
    [c0, c1, c2, c3]
}

/// Per output index: the 4 clamped source indices and the f32 coefficients (widened to f64).
fn cubic_taps(src: usize, dst: usize) -> Vec<([usize; 4], [f64; 4])> {
    let scale = 1.0 / (dst as f64 / src as f64);
    (0..dst)
        .map(|d| {
            let fx = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let sx = fx.floor();
            let f = fx - sx;
            let sx = sx as i64;
            let c = cubic_coeffs(f);
            let idx = [0i64, 1, 2, 3].map(|k| (sx + k - 1).clamp(0, src as i64 - 1) as usize);
            (idx, c.map(|v| v as f64))
        })
        .collect()
}

/// `cv2.resize(src, (dst_w, dst_h), interpolation=cv2.INTER_CUBIC)` for a single-channel `f64` image
/// (row-major, `src_w * src_h`).
pub fn resize_cubic_f64(
    src: &[f64],
    src_w: usize,
    src_h: usize,
    dst_w: usize,
    dst_h: usize,
) -> Vec<f64> {
    assert_eq!(
        src.len(),
        src_w * src_h,
        "resize_cubic_f64: source length is not width*height"
    );
    if src_w == dst_w && src_h == dst_h {
        return src.to_vec();
    }
    let xt = cubic_taps(src_w, dst_w);
    let yt = cubic_taps(src_h, dst_h);
    // Horizontal pass on every source row that a destination row needs (all of them, in practice).
    let mut horiz = vec![0.0f64; src_h * dst_w];
    for y in 0..src_h {
        let s = &src[y * src_w..(y + 1) * src_w];
        let d = &mut horiz[y * dst_w..(y + 1) * dst_w];
        for (o, (i, c)) in d.iter_mut().zip(&xt) {
            *o = s[i[0]] * c[0] + s[i[1]] * c[1] + s[i[2]] * c[2] + s[i[3]] * c[3];
        }
    }
    let mut out = vec![0.0f64; dst_w * dst_h];
    for (y, (i, c)) in yt.iter().enumerate() {
        let rows = i.map(|r| &horiz[r * dst_w..(r + 1) * dst_w]);
        let d = &mut out[y * dst_w..(y + 1) * dst_w];
        for (x, o) in d.iter_mut().enumerate() {
            *o = rows[0][x] * c[0] + rows[1][x] * c[1] + rows[2][x] * c[2] + rows[3][x] * c[3];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coefficients_sum_to_one_and_interpolate() {
        for &x in &[0.0f32, 0.25, 0.5, 0.9] {
            let c = cubic_coeffs(x);
            assert!((c.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        assert_eq!(cubic_coeffs(0.0), [0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn same_size_is_copy_and_constant_stays_constant() {
        let src: Vec<f64> = (0..12).map(|v| v as f64 * 0.1).collect();
        assert_eq!(resize_cubic_f64(&src, 4, 3, 4, 3), src);
        let c = resize_cubic_f64(&[0.5; 49], 7, 7, 224, 224);
        assert!(c.iter().all(|&v| (v - 0.5).abs() < 1e-6));
    }

    #[test]
    fn upscale_2x_matches_opencv() {
        // cv2.resize(np.array([[0,1],[2,3]], np.float64), (4,4), interpolation=cv2.INTER_CUBIC) with
        // OpenCV 4.14 (opencv-python-headless 4.14.0.94).
        let out = resize_cubic_f64(&[0.0, 1.0, 2.0, 3.0], 2, 2, 4, 4);
        let want = [
            -0.31640625,
            0.015625,
            0.5625,
            0.89453125,
            0.34765625,
            0.6796875,
            1.2265625,
            1.55859375,
            1.44140625,
            1.7734375,
            2.3203125,
            2.65234375,
            2.10546875,
            2.4375,
            2.984375,
            3.31640625,
        ];
        assert_eq!(out, want);
    }
}
