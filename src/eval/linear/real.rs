//! The two float kinds the linear evaluation runs in (the kind of the feature tensors), with the few
//! operations the host objective and L-BFGS need.
use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

pub trait Real:
    Copy
    + Debug
    + Default
    + PartialOrd
    + Send
    + Sync
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + tch::kind::Element
    + 'static
{
    fn of(v: f64) -> Self;
    fn f64(self) -> f64;
    fn zero() -> Self {
        Self::of(0.0)
    }
    /// `v` rounded to this kind: torch keeps such scalars as 0-d tensors of the parameters' dtype.
    fn round(v: f64) -> f64 {
        Self::of(v).f64()
    }
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    /// C ← α·A·B + β·C with element strides (rows, columns), as `matrixmultiply`.
    ///
    /// # Safety
    /// The pointers with their strides must address valid m×k, k×n and m×n matrices, C not aliasing A or B.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );
}

impl Real for f32 {
    fn of(v: f64) -> Self {
        v as f32
    }
    fn f64(self) -> f64 {
        self as f64
    }
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn ln(self) -> Self {
        f32::ln(self)
    }
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: forwarded from the caller's contract.
        unsafe { matrixmultiply::sgemm(m, k, n, 1.0, a, rsa, csa, b, rsb, csb, 0.0, c, rsc, csc) }
    }
}

impl Real for f64 {
    fn of(v: f64) -> Self {
        v
    }
    fn f64(self) -> f64 {
        self
    }
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn ln(self) -> Self {
        f64::ln(self)
    }
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: forwarded from the caller's contract.
        unsafe { matrixmultiply::dgemm(m, k, n, 1.0, a, rsa, csa, b, rsb, csb, 0.0, c, rsc, csc) }
    }
}

/// C (m×n, row-major) = A (m×k, row-major) · Bᵀ where B is n×k row-major.
pub fn matmul_a_bt<T: Real>(a: &[T], b: &[T], c: &mut [T], m: usize, k: usize, n: usize) {
    assert!(a.len() >= m * k && b.len() >= n * k && c.len() >= m * n);
    // SAFETY: the asserted lengths cover every element the strides address; c is a distinct slice.
    unsafe {
        T::gemm(
            m,
            k,
            n,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            1,
            k as isize,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

/// C (m×n, row-major) = Aᵀ · B where A is k×m row-major and B is k×n row-major.
pub fn matmul_at_b<T: Real>(a: &[T], b: &[T], c: &mut [T], m: usize, k: usize, n: usize) {
    assert!(a.len() >= k * m && b.len() >= k * n && c.len() >= m * n);
    // SAFETY: as above.
    unsafe {
        T::gemm(
            m,
            k,
            n,
            a.as_ptr(),
            1,
            m as isize,
            b.as_ptr(),
            n as isize,
            1,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}
