//! glibc's `expf`, four lanes at a time, for the mean-field softmax.
//!
//! pydensecrf's two-label softmax calls `expf` once per pixel and iteration; glibc (≥ 2.27) computes it in
//! double precision from a 32-entry table and a cubic, and on a CPU with AVX2 and FMA its ifunc picks the
//! `__expf_fma` build, whose compiler fused five of the multiply-adds. [`expf4`] performs exactly those
//! operations (read off the disassembly of glibc 2.36's `__expf_fma`; the constants are glibc's
//! `__exp2f_data`), so each lane equals glibc's result bit for bit; lanes outside the table path
//! (|x| ≥ 88, infinities, NaN) are computed by the C library itself. [`expf_matches_libm`] checks the
//! equality against the libm this process uses, and the caller uses the vector path only where
//! glibc would pick `__expf_fma` (AVX2 and FMA present).

/// `__exp2f_data.tab`: 2^(i/32) with i << 47 subtracted from the bits.
#[cfg(target_arch = "x86_64")]
static TAB: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];
/// 32/ln 2.
#[cfg(target_arch = "x86_64")]
const INV_LN2_N: u64 = 0x40471547652b82fe;
/// `poly_scaled`: C0, C1, C2.
#[cfg(target_arch = "x86_64")]
const C: [u64; 3] = [0x3ebc6af84b912394, 0x3f2ebfce50fac4f3, 0x3f962e42ff0c52d6];
/// 1.5·2^52: adding it rounds to an integer (ties to even) in the low mantissa bits.
#[cfg(target_arch = "x86_64")]
const SHIFT: u64 = 0x4338000000000000;

/// True where glibc's `expf` takes its table path: `top12(|x|) < top12(88.0f)`.
#[inline(always)]
pub fn on_table_path(x: f32) -> bool {
    ((x.to_bits() >> 20) & 0x7ff) < 0x42b
}

/// `expf` of four floats whose |x| < 88 (see [`on_table_path`]), as glibc's `__expf_fma`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn expf4(x: std::arch::x86_64::__m128) -> std::arch::x86_64::__m128 {
    use std::arch::x86_64::*;
    let pd = |b: u64| _mm256_set1_pd(f64::from_bits(b));
    let xd = _mm256_cvtps_pd(x);
    let inv = pd(INV_LN2_N);
    let shift = pd(SHIFT);
    // kd = fma(InvLn2N, xd, SHIFT); ki = bits(kd); kd -= SHIFT; r = fma(InvLn2N, xd, -kd)
    let kds = _mm256_fmadd_pd(inv, xd, shift);
    let ki = _mm256_castpd_si256(kds);
    let kd = _mm256_sub_pd(kds, shift);
    let r = _mm256_fmsub_pd(inv, xd, kd);
    // s = asdouble(T[ki % 32] + (ki << 47))
    let idx = _mm256_and_si256(ki, _mm256_set1_epi64x(31));
    // SAFETY: indices are masked to 0..32, the table's length.
    let t = _mm256_i64gather_epi64::<8>(TAB.as_ptr() as *const i64, idx);
    let s = _mm256_castsi256_pd(_mm256_add_epi64(t, _mm256_slli_epi64::<47>(ki)));
    // z = fma(r, C0, C1); r2 = r·r; y = fma(r, C2, 1); y = fma(z, r2, y); y·s, rounded to float
    let z = _mm256_fmadd_pd(r, pd(C[0]), pd(C[1]));
    let r2 = _mm256_mul_pd(r, r);
    let y = _mm256_fmadd_pd(r, pd(C[2]), _mm256_set1_pd(1.0));
    let y = _mm256_fmadd_pd(z, r2, y);
    _mm256_cvtpd_ps(_mm256_mul_pd(y, s))
}

/// Whether the vector path reproduces the C library's `expf` here: AVX2 and FMA present (where glibc
/// picks `__expf_fma`) and a probe of awkward inputs agrees bit for bit. Checked once per process.
pub fn vector_path_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *OK.get_or_init(|| {
            let cpu = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            let ok = cpu && expf_matches_libm(probe_inputs());
            if cpu && !ok {
                // Another libm than glibc ≥ 2.27: stay exact with the scalar calls, only slower.
                tracing::warn!(
                    "the C library's expf differs from glibc's __expf_fma; CRF softmax runs scalar"
                );
            }
            ok
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A few thousand inputs across the table path, including the ties of the rounding to k/32.
#[cfg(target_arch = "x86_64")]
fn probe_inputs() -> impl Iterator<Item = f32> {
    let spread = (0..4096).map(|i| -87.99 + 88.0 * 2.0 * i as f32 / 4095.0);
    // Magnitudes from 2^-31 up to about 64, negative and positive.
    let near_zero = (0..512)
        .map(|i| f32::from_bits(0x3000_0000 + i * 0x9_0000))
        .flat_map(|x| [x, -x]);
    let ties = (-2816..2816).map(|k| k as f32 * std::f32::consts::LN_2 / 32.0);
    spread
        .chain(near_zero)
        .chain(ties)
        .filter(|&x| on_table_path(x))
}

/// Whether [`expf4`] equals `f32::exp` (the C library's `expf`) on every input given. Only meaningful
/// where AVX2 and FMA are present; false otherwise.
pub fn expf_matches_libm(inputs: impl Iterator<Item = f32>) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            return false;
        }
        let mut inputs = inputs.peekable();
        while inputs.peek().is_some() {
            let mut v = [0f32; 4];
            let mut n = 0;
            for (slot, x) in v.iter_mut().zip(inputs.by_ref()) {
                *slot = x;
                n += 1;
            }
            let mut out = [0f32; 4];
            // SAFETY: AVX2 and FMA were detected above; loads/stores are of local arrays.
            unsafe {
                use std::arch::x86_64::*;
                _mm_storeu_ps(out.as_mut_ptr(), expf4(_mm_loadu_ps(v.as_ptr())));
            }
            if v[..n]
                .iter()
                .zip(out)
                .any(|(&x, y)| x.exp().to_bits() != y.to_bits())
            {
                return false;
            }
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = inputs;
        false
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn vector_expf_equals_libm_on_a_dense_sweep() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            eprintln!("no AVX2+FMA: the vector path is not used on this CPU");
            return;
        }
        // Every 61st float of the table path (about 17 M inputs): any error in the constants or in the
        // order of the fused operations shows up as a last-bit difference somewhere.
        let lo = (-87.99f32).to_bits(); // negative floats: bits grow with magnitude
        let neg = (0x8000_0001u32..=lo).step_by(61).map(f32::from_bits);
        let pos = (1u32..=87.99f32.to_bits()).step_by(61).map(f32::from_bits);
        assert!(expf_matches_libm(neg.chain(pos).chain([0.0, -0.0])));
        assert!(vector_path_available());
    }

    #[test]
    fn table_path_bounds() {
        assert!(on_table_path(0.0) && on_table_path(-87.9) && on_table_path(87.9));
        assert!(
            !on_table_path(-88.0) && !on_table_path(f32::NEG_INFINITY) && !on_table_path(f32::NAN)
        );
    }
}
