//! numpy's float32 `log` on x86-64 (AVX2/AVX512F `simd_log_FLOAT`, `loops_exponent_log.dispatch.c.src`):
//! mantissa in [√½, √2), a 5/5 rational minimax approximation evaluated with fused multiply-adds, plus
//! e·ln2 (also fused). The official unary is `-np.log(p + 1e-20)` in float32, and this differs from a
//! correctly rounded logf in about a fifth of the inputs (by an ulp or two), so the CRF's inputs are only
//! bit-identical with this port.

// numpy's decimal constants (npy_simd_data.h), rounded to float32 by the compiler as in C.
#[allow(clippy::excessive_precision)]
const P: [f32; 6] = [
    0.0,
    9.999_999_999_999_998e-1,
    2.112_677_543_073_053,
    1.480_000_633_576_506_6,
    3.808_837_741_388_408e-1,
    2.589_979_117_907_922_7e-2,
];
#[allow(clippy::excessive_precision)]
const Q: [f32; 6] = [
    1.0,
    2.612_677_543_073_109,
    2.453_006_071_784_736_4,
    9.864_942_958_519_419e-1,
    1.546_476_374_983_906_7e-1,
    5.875_095_403_124_574e-3,
];

#[inline(always)]
fn log_kernel(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x < 0.0 {
        return -f32::NAN;
    }
    if x == 0.0 {
        return f32::NEG_INFINITY;
    }
    if x == f32::INFINITY {
        return x;
    }
    // getexp/getmant normalise subnormals; scale them into the normal range first (exact).
    let (xs, eadj) = if x < f32::MIN_POSITIVE {
        (x * 16_777_216.0, -24)
    } else {
        (x, 0)
    };
    let bits = xs.to_bits();
    let mut e = (((bits >> 23) & 0xff) as i32 - 126 + eadj) as f32;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000);
    if m <= std::f32::consts::FRAC_1_SQRT_2 {
        m = m + m;
        e -= 1.0;
    }
    let y = m - 1.0;
    let mut num = P[5].mul_add(y, P[4]);
    let mut den = Q[5].mul_add(y, Q[4]);
    for k in (0..4).rev() {
        num = num.mul_add(y, P[k]);
        den = den.mul_add(y, Q[k]);
    }
    e.mul_add(std::f32::consts::LN_2, num / den)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn neg_log_eps_fma(p: &[f32], eps: f32, out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(p) {
        *o = -log_kernel(v + eps);
    }
}

/// [`neg_log_eps_fma`] eight lanes at a time: the same operations lane-wise (the mantissa fold, the two
/// fused polynomials, the division and the fused e·ln2). Chunks holding a value that is not a positive
/// normal float go through the scalar kernel.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn neg_log_eps_avx2(p: &[f32], eps: f32, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut pc = p.chunks_exact(8);
    let mut oc = out.chunks_exact_mut(8);
    let ps = |v: f32| _mm256_set1_ps(v);
    for (pi, oi) in (&mut pc).zip(&mut oc) {
        // SAFETY: both chunks hold 8 floats.
        let x = _mm256_add_ps(unsafe { _mm256_loadu_ps(pi.as_ptr()) }, ps(eps));
        let bits = _mm256_castps_si256(x);
        // Positive normal and finite: 0x0080_0000 ≤ bits < 0x7f80_0000 (negative floats are negative i32).
        let low = _mm256_cmpgt_epi32(_mm256_set1_epi32(0x0080_0000), bits);
        let high = _mm256_cmpgt_epi32(bits, _mm256_set1_epi32(0x7f7f_ffff));
        if _mm256_movemask_epi8(_mm256_or_si256(low, high)) != 0 {
            for (o, &v) in oi.iter_mut().zip(pi) {
                *o = -log_kernel(v + eps);
            }
            continue;
        }
        let exp = _mm256_sub_epi32(
            _mm256_and_si256(_mm256_srli_epi32::<23>(bits), _mm256_set1_epi32(0xff)),
            _mm256_set1_epi32(126),
        );
        let mut e = _mm256_cvtepi32_ps(exp);
        let mut m = _mm256_castsi256_ps(_mm256_or_si256(
            _mm256_and_si256(bits, _mm256_set1_epi32(0x007f_ffff)),
            _mm256_set1_epi32(0x3f00_0000),
        ));
        let fold = _mm256_cmp_ps::<_CMP_LE_OQ>(m, ps(std::f32::consts::FRAC_1_SQRT_2));
        m = _mm256_blendv_ps(m, _mm256_add_ps(m, m), fold);
        e = _mm256_blendv_ps(e, _mm256_sub_ps(e, ps(1.0)), fold);
        let y = _mm256_sub_ps(m, ps(1.0));
        let mut num = _mm256_fmadd_ps(ps(P[5]), y, ps(P[4]));
        let mut den = _mm256_fmadd_ps(ps(Q[5]), y, ps(Q[4]));
        for k in (0..4).rev() {
            num = _mm256_fmadd_ps(num, y, ps(P[k]));
            den = _mm256_fmadd_ps(den, y, ps(Q[k]));
        }
        let r = _mm256_fmadd_ps(e, ps(std::f32::consts::LN_2), _mm256_div_ps(num, den));
        let neg = _mm256_xor_ps(r, ps(-0.0));
        // SAFETY: the chunk holds 8 floats.
        unsafe { _mm256_storeu_ps(oi.as_mut_ptr(), neg) };
    }
    for (o, &v) in oc.into_remainder().iter_mut().zip(pc.remainder()) {
        *o = -log_kernel(v + eps);
    }
}

/// numpy's float32 `np.log(x)`.
pub fn numpy_log_f32(x: f32) -> f32 {
    log_kernel(x)
}

/// `out[i] = -np.log(p[i] + eps)` in float32, with hardware FMA when the CPU has it (same results).
pub fn neg_log_eps(p: &[f32], eps: f32, out: &mut [f32]) {
    assert_eq!(p.len(), out.len(), "neg_log_eps lengths");
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        unsafe { neg_log_eps_avx2(p, eps, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports FMA (checked just above).
        unsafe { neg_log_eps_fma(p, eps, out) };
        return;
    }
    for (o, &v) in out.iter_mut().zip(p) {
        *o = -log_kernel(v + eps);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_values_and_accuracy() {
        assert_eq!(numpy_log_f32(1.0), 0.0);
        assert_eq!(numpy_log_f32(0.0), f32::NEG_INFINITY);
        assert!(numpy_log_f32(-1.0).is_nan());
        assert_eq!(numpy_log_f32(f32::INFINITY), f32::INFINITY);
        // Within numpy's documented 3.83 ulp of the correctly rounded value, including subnormals.
        for &x in &[1e-20f32, 1e-40, 0.3, 0.707, 0.7072, 2.5, 1e30] {
            let exact = (x as f64).ln();
            let ours = numpy_log_f32(x) as f64;
            let ulp = (exact.abs() as f32).to_bits();
            let ulp = (f32::from_bits(ulp + 1) - f32::from_bits(ulp)) as f64;
            assert!(
                (ours - exact).abs() <= 4.0 * ulp,
                "log({x}) = {ours}, exact {exact}"
            );
        }
        let mut out = [0f32; 2];
        neg_log_eps(&[0.5, 1.0], 1e-20, &mut out);
        assert_eq!(out, [-numpy_log_f32(0.5), 0.0]);
    }

    #[test]
    fn vector_path_equals_the_scalar_kernel() {
        // Every 97th float from 0 to 2 (both mantissa folds, every exponent there), plus specials mixed
        // into some chunks so those take the scalar route; 8-lane chunks and a ragged tail.
        let mut p: Vec<f32> = (0..=2.0f32.to_bits())
            .step_by(97)
            .map(f32::from_bits)
            .collect();
        p.extend([0.0, -0.0, f32::NAN, -1.0, f32::INFINITY, 1e-45, 3.0]);
        let mut out = vec![0f32; p.len()];
        neg_log_eps(&p, 1e-20, &mut out);
        for (&x, &y) in p.iter().zip(&out) {
            let want = -log_kernel(x + 1e-20);
            assert!(
                want.to_bits() == y.to_bits() || (want.is_nan() && y.is_nan()),
                "-log({x:e} + 1e-20): {y:e} vs scalar {want:e}"
            );
        }
    }
}
