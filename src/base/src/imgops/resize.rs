//! Resizing with OpenCV and Pillow semantics.
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

/// Pillow's `Image.resize((dst_w, dst_h), Image.BILINEAR)` for an 8-bit RGB image (row-major,
/// `src_w * src_h * 3`), bit-exact (`libImaging/Resample.c`): a triangle filter widened by the scale when
/// shrinking (antialiasing), coefficients normalised in double and then rounded to 22-bit fixed point,
/// horizontal pass first into an 8-bit image holding only the rows the vertical pass reads, each pass
/// rounding with `+2^21` and clipping to 0..=255. torchvision's `TF.resized_crop` on a PIL image calls
/// this after `crop` (COCO-Crop). A pass is skipped when that axis keeps its size, as in Pillow.
pub fn resize_bilinear_pil_rgb8(
    src: &[u8],
    src_w: usize,
    src_h: usize,
    dst_w: usize,
    dst_h: usize,
) -> Vec<u8> {
    assert_eq!(
        src.len(),
        src_w * src_h * 3,
        "resize_bilinear_pil_rgb8: source length"
    );
    assert!(
        src_w > 0 && src_h > 0 && dst_w > 0 && dst_h > 0,
        "resize_bilinear_pil_rgb8: empty image"
    );
    let (kh, bh) = pil_coeffs(src_w, dst_w);
    let (kv, mut bv) = pil_coeffs(src_h, dst_h);
    let mut cur: std::borrow::Cow<[u8]> = src.into();
    let mut cur_w = src_w;
    if dst_w != src_w {
        // Only the rows the vertical pass will read.
        let first = bv[0].0;
        let last = bv[dst_h - 1].0 + bv[dst_h - 1].1;
        for b in bv.iter_mut() {
            b.0 -= first;
        }
        let rows = last - first;
        let ksize = kh.len() / dst_w;
        let mut tmp = vec![0u8; dst_w * rows * 3];
        // The sums are integers, so taking the three channels of a pixel together gives Pillow's bytes.
        for (y, out_row) in tmp.chunks_exact_mut(dst_w * 3).enumerate() {
            let row = &cur[(y + first) * src_w * 3..(y + first + 1) * src_w * 3];
            for ((&(xmin, xmax), k), out) in bh
                .iter()
                .zip(kh.chunks_exact(ksize))
                .zip(out_row.chunks_exact_mut(3))
            {
                let mut ss = [1i32 << (PIL_PRECISION_BITS - 1); 3];
                for (px, &kt) in row[xmin * 3..(xmin + xmax) * 3]
                    .chunks_exact(3)
                    .zip(&k[..xmax])
                {
                    for c in 0..3 {
                        ss[c] = ss[c].wrapping_add(px[c] as i32 * kt);
                    }
                }
                for c in 0..3 {
                    out[c] = pil_clip8(ss[c]);
                }
            }
        }
        cur = tmp.into();
        cur_w = dst_w;
    }
    // Without a horizontal pass the vertical one reads the source rows with unshifted bounds.
    if dst_h != src_h {
        let ksize = kv.len() / dst_h;
        let stride = cur_w * 3;
        let mut out = vec![0u8; stride * dst_h];
        // Row by row: one accumulator per byte of the output row, each source row added whole (the same
        // integer sums as Pillow's per-pixel loop, in an order the compiler vectorises).
        let mut acc = vec![0i32; stride];
        for ((&(ymin, ymax), k), out_row) in bv
            .iter()
            .zip(kv.chunks_exact(ksize))
            .zip(out.chunks_exact_mut(stride))
        {
            acc.fill(1 << (PIL_PRECISION_BITS - 1));
            for (t, &kt) in k[..ymax].iter().enumerate() {
                let row = &cur[(ymin + t) * stride..(ymin + t + 1) * stride];
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a = a.wrapping_add(v as i32 * kt);
                }
            }
            for (o, &a) in out_row.iter_mut().zip(&acc) {
                *o = pil_clip8(a);
            }
        }
        return out;
    }
    cur.into_owned()
}

/// `PRECISION_BITS` of Pillow's 8-bit resampling: 32 − 8 − 2.
const PIL_PRECISION_BITS: u32 = 22;

fn pil_clip8(ss: i32) -> u8 {
    (ss >> PIL_PRECISION_BITS).clamp(0, 255) as u8
}

/// `precompute_coeffs` + `normalize_coeffs_8bpc` for the bilinear filter over the whole input
/// (box = 0..in_size): per output index, (first input index, tap count), and `ksize` fixed-point
/// coefficients per output index.
fn pil_coeffs(in_size: usize, out_size: usize) -> (Vec<i32>, Vec<(usize, usize)>) {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 1.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut kk = vec![0i32; out_size * ksize];
    let mut bounds = Vec::with_capacity(out_size);
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C casts truncate toward zero; both values are ≥ −0.5 here, so clamping after the cast is the same.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(xmax) {
            let arg = (x as f64 + xmin as f64 - center + 0.5) * ss;
            *kx = if arg.abs() < 1.0 {
                1.0 - arg.abs()
            } else {
                0.0
            };
            ww += *kx;
        }
        if ww != 0.0 {
            k[..xmax].iter_mut().for_each(|kx| *kx /= ww);
        }
        for x in 0..ksize {
            let v = if x < xmax { k[x] } else { 0.0 };
            let f = v * (1u32 << PIL_PRECISION_BITS) as f64;
            kk[xx * ksize + x] = if v < 0.0 {
                (-0.5 + f) as i32
            } else {
                (0.5 + f) as i32
            };
        }
        bounds.push((xmin, xmax));
    }
    (kk, bounds)
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
