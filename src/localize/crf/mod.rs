//! Fully connected CRF with Gaussian edge potentials (Krähenbühl & Koltun 2011), following pydensecrf
//! ("densecrf v2", lucasb-eyer/pydensecrf and pydensecrf2) operation by operation: float32 everywhere, the
//! x86 lattice (see [`lattice`]), symmetric normalisation `1/sqrt(D + 1e-20)` computed in double, Potts
//! compatibility `-w·Q`, and mean-field `Q ← softmax(−U − Σ_k compat_k(K̃_k Q))` with glibc `expf`.
//! For ≤ 3 labels the results are bit-identical to pydensecrf2 on x86-64 (tested against
//! `kernels/crf`); for ≥ 4 labels Eigen vectorises the softmax, so the last bit may differ.
//!
//! Layouts: the public API takes numpy's layouts (unary and Q are (M, N) label-major, features (d, N),
//! images (H, W, 3) uint8). Internally everything is pixel-major (Eigen's column-major M×N).
//!
//! [`official_crf`] is the object-aware recipe (`utils/box_utils.py: apply_crf`) in one call; [`OfficialCrf`]
//! keeps the image-independent Gaussian kernel for reuse over a dataset.
use std::sync::{Arc, Mutex, OnceLock};

pub mod expf;
pub mod lattice;
pub mod numpy_log;

pub use lattice::{Lattice, LatticeOptions, LatticeScratch};
pub use numpy_log::{neg_log_eps, numpy_log_f32};

#[derive(Debug, thiserror::Error)]
pub enum CrfError {
    #[error("{what}: expected {expected} values, got {got}")]
    Shape {
        what: &'static str,
        expected: String,
        got: usize,
    },
    #[error("feature dimension must be in 1..={max}, got {d}")]
    FeatureDim { d: usize, max: usize },
    #[error(
        "features too large for the lattice: scaled coordinates must stay within ±32 000 \
         (a standard deviation such as sxy or srgb is far too small for the data)"
    )]
    FeatureRange,
    #[error("compatibility: {0}")]
    Compatibility(String),
    #[error("{what} must be positive and finite, got {value}")]
    Parameter { what: &'static str, value: f32 },
    #[error("image size {width}×{height} is empty")]
    EmptyImage { width: usize, height: usize },
}

/// Label compatibility μ(l, l′), as pydensecrf's `compat` argument.
#[derive(Debug, Clone, PartialEq)]
pub enum Compatibility {
    /// A number: `-w·Q` (Potts).
    Potts(f32),
    /// A 1-D array: `diag(v)·Q`.
    Diagonal(Vec<f32>),
    /// A 2-D (M×M, row-major) array, used symmetrised as `½(A + Aᵀ)·Q`.
    Matrix(Vec<f32>),
}

/// pydensecrf's `NormalizationType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Normalization {
    /// Raw lattice output (`NO_NORMALIZATION`).
    None,
    /// Input scaled by 1/(D+1e-20) (`NORMALIZE_BEFORE`).
    Before,
    /// Output scaled by 1/(D+1e-20) (`NORMALIZE_AFTER`).
    After,
    /// `D^{-1/2} K D^{-1/2}` (`NORMALIZE_SYMMETRIC`, the default).
    #[default]
    Symmetric,
}

/// A filter `K̃` over one feature space: the lattice and its normalisation, built once.
#[derive(Debug, Clone)]
pub struct DenseKernel {
    lattice: Lattice,
    norm: Vec<f32>,
    ntype: Normalization,
}

impl DenseKernel {
    /// `features` in pydensecrf's (d, N) row-major layout.
    pub fn new(
        features: &[f32],
        d: usize,
        ntype: Normalization,
        opts: LatticeOptions,
    ) -> Result<Self, CrfError> {
        if d == 0 || d > lattice::MAX_FEATURE_DIM {
            return Err(CrfError::FeatureDim {
                d,
                max: lattice::MAX_FEATURE_DIM,
            });
        }
        if !features.len().is_multiple_of(d) {
            return Err(CrfError::Shape {
                what: "features",
                expected: format!("a multiple of d = {d}"),
                got: features.len(),
            });
        }
        let n = features.len() / d;
        let mut pm = vec![0f32; features.len()];
        for k in 0..d {
            for i in 0..n {
                pm[i * d + k] = features[k * n + i];
            }
        }
        Self::from_pixel_major(&pm, d, ntype, opts)
    }

    fn from_pixel_major(
        features: &[f32],
        d: usize,
        ntype: Normalization,
        opts: LatticeOptions,
    ) -> Result<Self, CrfError> {
        let lattice = Lattice::new(features, d, opts)?;
        let n = lattice.num_points();
        let mut norm = vec![0f32; n];
        lattice.compute(
            &mut norm,
            &vec![1f32; n],
            1,
            false,
            &mut LatticeScratch::default(),
        );
        match ntype {
            // pydensecrf computes N/ΣD here but never applies it.
            Normalization::None => {}
            Normalization::Symmetric => norm
                .iter_mut()
                .for_each(|v| *v = (1.0 / (*v as f64 + 1e-20).sqrt()) as f32),
            Normalization::Before | Normalization::After => norm
                .iter_mut()
                .for_each(|v| *v = (1.0 / (*v as f64 + 1e-20)) as f32),
        }
        Ok(Self {
            lattice,
            norm,
            ntype,
        })
    }

    pub fn lattice(&self) -> &Lattice {
        &self.lattice
    }

    /// The per-pixel normaliser (for Symmetric: `1/sqrt(D + 1e-20)`).
    pub fn norm(&self) -> &[f32] {
        &self.norm
    }

    /// `out = K̃·input` for pixel-major input with `m` values per pixel (`transpose` = `applyTranspose`).
    pub fn filter(
        &self,
        out: &mut [f32],
        input: &[f32],
        m: usize,
        transpose: bool,
        scratch: &mut KernelScratch,
    ) {
        let before = matches!(self.ntype, Normalization::Symmetric)
            || (self.ntype == Normalization::Before && !transpose)
            || (self.ntype == Normalization::After && transpose);
        let after = matches!(self.ntype, Normalization::Symmetric)
            || (self.ntype == Normalization::Before && transpose)
            || (self.ntype == Normalization::After && !transpose);
        let norm = Some(&self.norm[..]);
        self.lattice.compute_scaled(
            out,
            input,
            m,
            transpose,
            if before { norm } else { None },
            if after { norm } else { None },
            &mut scratch.lattice,
        );
    }
}

/// Reusable buffers for [`DenseKernel::filter`].
#[derive(Debug, Default)]
pub struct KernelScratch {
    lattice: LatticeScratch,
}

#[derive(Debug, Clone)]
struct Pairwise {
    kernel: Arc<DenseKernel>,
    compat: Compatibility,
    /// Symmetrised matrix for `Compatibility::Matrix`.
    matrix: Vec<f32>,
}

impl Pairwise {
    fn new(kernel: Arc<DenseKernel>, compat: Compatibility, m: usize) -> Result<Self, CrfError> {
        let matrix = match &compat {
            Compatibility::Potts(w) => {
                if !w.is_finite() {
                    return Err(CrfError::Compatibility(format!(
                        "Potts weight {w} is not finite"
                    )));
                }
                Vec::new()
            }
            Compatibility::Diagonal(v) => {
                if v.len() != m {
                    return Err(CrfError::Compatibility(format!(
                        "diagonal has {} entries for {m} labels",
                        v.len()
                    )));
                }
                Vec::new()
            }
            Compatibility::Matrix(a) => {
                if a.len() != m * m {
                    return Err(CrfError::Compatibility(format!(
                        "matrix has {} entries for {m}×{m} labels",
                        a.len()
                    )));
                }
                // 0.5*(m + m.transpose()) in float
                (0..m * m)
                    .map(|idx| 0.5f32 * (a[idx] + a[(idx % m) * m + idx / m]))
                    .collect()
            }
        };
        Ok(Self {
            kernel,
            compat,
            matrix,
        })
    }

    /// `out = compat(K̃·Q)`.
    fn apply(&self, out: &mut [f32], q: &[f32], m: usize, scratch: &mut KernelScratch) {
        self.kernel.filter(out, q, m, false, scratch);
        match &self.compat {
            Compatibility::Potts(w) => {
                let nw = -*w;
                out.iter_mut().for_each(|v| *v *= nw);
            }
            Compatibility::Diagonal(d) => {
                for px in out.chunks_exact_mut(m) {
                    px.iter_mut().zip(d).for_each(|(v, &s)| *v *= s);
                }
            }
            Compatibility::Matrix(_) => {
                let mut col = vec![0f32; m];
                for px in out.chunks_exact_mut(m) {
                    col.copy_from_slice(px);
                    for (l, o) in px.iter_mut().enumerate() {
                        let row = &self.matrix[l * m..(l + 1) * m];
                        *o = row.iter().zip(&col).fold(0f32, |acc, (&a, &x)| acc + a * x);
                    }
                }
            }
        }
    }
}

/// A dense CRF over N variables and M labels (pydensecrf's `DenseCRF`).
#[derive(Debug, Clone)]
pub struct DenseCrf {
    n: usize,
    m: usize,
    /// Pixel-major −log-probabilities; zeros when unset.
    unary: Vec<f32>,
    pairwise: Vec<Pairwise>,
    lattice_opts: LatticeOptions,
}

impl DenseCrf {
    pub fn new(n_vars: usize, n_labels: usize) -> Self {
        Self {
            n: n_vars,
            m: n_labels,
            unary: vec![0.0; n_vars * n_labels],
            pairwise: Vec::new(),
            lattice_opts: LatticeOptions::default(),
        }
    }

    /// Lattice options for kernels added after this call.
    pub fn set_lattice_options(&mut self, opts: LatticeOptions) {
        self.lattice_opts = opts;
    }

    pub fn num_vars(&self) -> usize {
        self.n
    }

    pub fn num_labels(&self) -> usize {
        self.m
    }

    /// `setUnaryEnergy(U)`: U is (M, N) label-major, the energy −log p.
    pub fn set_unary_energy(&mut self, unary: &[f32]) -> Result<(), CrfError> {
        let (n, m) = (self.n, self.m);
        check_len("unary", unary.len(), n * m, format!("(M, N) = ({m}, {n})"))?;
        for l in 0..m {
            for i in 0..n {
                self.unary[i * m + l] = unary[l * n + i];
            }
        }
        Ok(())
    }

    /// As [`Self::set_unary_energy`], pixel-major (N, M).
    pub fn set_unary_energy_pixel_major(&mut self, unary: &[f32]) -> Result<(), CrfError> {
        check_len(
            "unary",
            unary.len(),
            self.n * self.m,
            format!("(N, M) = ({}, {})", self.n, self.m),
        )?;
        self.unary.copy_from_slice(unary);
        Ok(())
    }

    /// `addPairwiseEnergy(features, compat, DIAG_KERNEL, normalization)`: features (d, N) row-major.
    pub fn add_pairwise_energy(
        &mut self,
        features: &[f32],
        d: usize,
        compat: Compatibility,
        normalization: Normalization,
    ) -> Result<(), CrfError> {
        check_len(
            "features",
            features.len(),
            d * self.n,
            format!("(d, N) = ({d}, {})", self.n),
        )?;
        let kernel = DenseKernel::new(features, d, normalization, self.lattice_opts)?;
        self.add_pairwise_kernel(Arc::new(kernel), compat)
    }

    /// Adds a pairwise term with an already-built kernel (lets image-independent kernels be shared).
    pub fn add_pairwise_kernel(
        &mut self,
        kernel: Arc<DenseKernel>,
        compat: Compatibility,
    ) -> Result<(), CrfError> {
        check_len(
            "kernel",
            kernel.lattice().num_points(),
            self.n,
            format!("{} points", self.n),
        )?;
        self.pairwise.push(Pairwise::new(kernel, compat, self.m)?);
        Ok(())
    }

    /// Mean-field inference; returns Q as (M, N) label-major, like pydensecrf's `inference`.
    pub fn inference(&self, n_iterations: usize) -> Vec<f32> {
        let q = self.inference_pixel_major(n_iterations);
        let (n, m) = (self.n, self.m);
        let mut out = vec![0f32; n * m];
        for i in 0..n {
            for l in 0..m {
                out[l * n + i] = q[i * m + l];
            }
        }
        out
    }

    /// Mean-field inference; Q pixel-major (N, M).
    pub fn inference_pixel_major(&self, n_iterations: usize) -> Vec<f32> {
        let m = self.m;
        let mut q = vec![0f32; self.n * m];
        let mut t: Vec<f32> = self.unary.iter().map(|&u| -u).collect();
        exp_and_normalize(&mut q, &t, m);
        let mut tmp2 = vec![0f32; self.n * m];
        let mut scratch = KernelScratch::default();
        for _ in 0..n_iterations {
            t.iter_mut().zip(&self.unary).for_each(|(t, &u)| *t = -u);
            for p in &self.pairwise {
                p.apply(&mut tmp2, &q, m, &mut scratch);
                t.iter_mut().zip(&tmp2).for_each(|(t, &v)| *t -= v);
            }
            exp_and_normalize(&mut q, &t, m);
        }
        q
    }

    /// `argmax(Q, axis=0)` after `n_iterations` (first maximum on ties, as Eigen's maxCoeff).
    pub fn map(&self, n_iterations: usize) -> Vec<usize> {
        let q = self.inference_pixel_major(n_iterations);
        q.chunks_exact(self.m)
            .map(|px| {
                px.iter()
                    .enumerate()
                    .fold(0, |best, (l, &v)| if v > px[best] { l } else { best })
            })
            .collect()
    }
}

/// `DenseCRF2D(W, H, M)`: width first; pixel index = row·W + col.
#[derive(Debug, Clone)]
pub struct DenseCrf2d {
    crf: DenseCrf,
    width: usize,
    height: usize,
}

impl DenseCrf2d {
    pub fn new(width: usize, height: usize, n_labels: usize) -> Self {
        Self {
            crf: DenseCrf::new(width * height, n_labels),
            width,
            height,
        }
    }

    pub fn crf(&self) -> &DenseCrf {
        &self.crf
    }

    pub fn crf_mut(&mut self) -> &mut DenseCrf {
        &mut self.crf
    }

    /// `addPairwiseGaussian(sxy=(sx, sy), compat)`: features (x/sx, y/sy), x = column.
    pub fn add_pairwise_gaussian(
        &mut self,
        sx: f32,
        sy: f32,
        compat: Compatibility,
        normalization: Normalization,
    ) -> Result<(), CrfError> {
        let kernel = gaussian_kernel(
            self.width,
            self.height,
            sx,
            sy,
            normalization,
            self.crf.lattice_opts,
        )?;
        self.crf.add_pairwise_kernel(Arc::new(kernel), compat)
    }

    /// `addPairwiseBilateral(sxy=(sx, sy), srgb=(sr, sg, sb), rgbim, compat)`; `rgb` is (H, W, 3) uint8.
    #[allow(clippy::too_many_arguments)]
    pub fn add_pairwise_bilateral(
        &mut self,
        sx: f32,
        sy: f32,
        srgb: [f32; 3],
        rgb: &[u8],
        compat: Compatibility,
        normalization: Normalization,
    ) -> Result<(), CrfError> {
        let kernel = bilateral_kernel(
            self.width,
            self.height,
            [sx, sy],
            srgb,
            rgb,
            normalization,
            self.crf.lattice_opts,
        )?;
        self.crf.add_pairwise_kernel(Arc::new(kernel), compat)
    }
}

fn check_len(
    what: &'static str,
    got: usize,
    expected: usize,
    desc: String,
) -> Result<(), CrfError> {
    if got != expected {
        return Err(CrfError::Shape {
            what,
            expected: format!("{expected} ({desc})"),
            got,
        });
    }
    Ok(())
}

fn check_sigma(what: &'static str, v: f32) -> Result<(), CrfError> {
    if !(v.is_finite() && v > 0.0) {
        return Err(CrfError::Parameter { what, value: v });
    }
    Ok(())
}

/// The Gaussian (appearance-free) kernel of a W×H grid.
pub fn gaussian_kernel(
    width: usize,
    height: usize,
    sx: f32,
    sy: f32,
    normalization: Normalization,
    opts: LatticeOptions,
) -> Result<DenseKernel, CrfError> {
    check_sigma("sx", sx)?;
    check_sigma("sy", sy)?;
    if width == 0 || height == 0 {
        return Err(CrfError::EmptyImage { width, height });
    }
    let mut f = Vec::with_capacity(width * height * 2);
    for y in 0..height {
        for x in 0..width {
            // int / float in C++: the integer is converted to float first
            f.push(x as f32 / sx);
            f.push(y as f32 / sy);
        }
    }
    DenseKernel::from_pixel_major(&f, 2, normalization, opts)
}

/// The bilateral kernel: features (x/sx, y/sy, r/sr, g/sg, b/sb); `rgb` is (H, W, 3) uint8.
pub fn bilateral_kernel(
    width: usize,
    height: usize,
    sxy: [f32; 2],
    srgb: [f32; 3],
    rgb: &[u8],
    normalization: Normalization,
    opts: LatticeOptions,
) -> Result<DenseKernel, CrfError> {
    check_sigma("sx", sxy[0])?;
    check_sigma("sy", sxy[1])?;
    for s in srgb {
        check_sigma("srgb", s)?;
    }
    if width == 0 || height == 0 {
        return Err(CrfError::EmptyImage { width, height });
    }
    check_len(
        "rgb image",
        rgb.len(),
        width * height * 3,
        format!("(H, W, 3) = ({height}, {width}, 3)"),
    )?;
    let mut f = Vec::with_capacity(width * height * 5);
    for y in 0..height {
        for x in 0..width {
            let px = &rgb[(y * width + x) * 3..(y * width + x) * 3 + 3];
            f.extend_from_slice(&[
                x as f32 / sxy[0],
                y as f32 / sxy[1],
                px[0] as f32 / srgb[0],
                px[1] as f32 / srgb[1],
                px[2] as f32 / srgb[2],
            ]);
        }
    }
    DenseKernel::from_pixel_major(&f, 5, normalization, opts)
}

/// Eigen's `expAndNormalize` per pixel: subtract the max, `expf`, divide by the (sequential) sum.
fn exp_and_normalize(q: &mut [f32], t: &[f32], m: usize) {
    #[cfg(target_arch = "x86_64")]
    if m == 2 && expf::vector_path_available() {
        // SAFETY: the vector path checked for AVX2 and FMA.
        unsafe { exp_and_normalize2_avx2(q, t) };
        return;
    }
    if m == 2 {
        for (qo, ti) in q.chunks_exact_mut(2).zip(t.chunks_exact(2)) {
            exp_normalize_pair(qo, ti);
        }
        return;
    }
    for (qo, ti) in q.chunks_exact_mut(m).zip(t.chunks_exact(m)) {
        let mx = ti
            .iter()
            .copied()
            .fold(ti[0], |a, b| if b > a { b } else { a });
        let mut s = 0f32;
        for (o, &v) in qo.iter_mut().zip(ti) {
            *o = expf(v - mx);
            s += *o;
        }
        qo.iter_mut().for_each(|o| *o /= s);
    }
}

/// [`exp_and_normalize`] for two labels, two pixels per step, with the same float operations: the max
/// `t1 > t0 ? t1 : t0`, `expf(t − max)` (glibc's, see [`expf`]), `e0 + e1`, and the divisions. Pixel pairs
/// with an exponent off glibc's table path (|x| ≥ 88) go through the scalar code.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_and_normalize2_avx2(q: &mut [f32], t: &[f32]) {
    use std::arch::x86_64::*;
    let mut qc = q.chunks_exact_mut(4);
    let mut tc = t.chunks_exact(4);
    for (qo, ti) in (&mut qc).zip(&mut tc) {
        // SAFETY: both chunks hold 4 floats.
        let v = unsafe { _mm_loadu_ps(ti.as_ptr()) };
        let t0 = _mm_shuffle_ps::<0b10_10_00_00>(v, v);
        let t1 = _mm_shuffle_ps::<0b11_11_01_01>(v, v);
        let mx = _mm_blendv_ps(t0, t1, _mm_cmpgt_ps(t1, t0));
        let d = _mm_sub_ps(v, mx);
        // Off the table path: |x| ≥ 88 (bits of |x| ≥ those of 88.0), infinities and NaN.
        let abs = _mm_and_si128(_mm_castps_si128(d), _mm_set1_epi32(0x7fff_ffff));
        if _mm_movemask_epi8(_mm_cmpgt_epi32(abs, _mm_set1_epi32(0x42af_ffff))) != 0 {
            let mut dv = [0f32; 4];
            // SAFETY: a local array of 4 floats.
            unsafe { _mm_storeu_ps(dv.as_mut_ptr(), d) };
            let e: [f32; 4] = dv.map(expf);
            for p in 0..2 {
                let s = e[2 * p] + e[2 * p + 1];
                qo[2 * p] = e[2 * p] / s;
                qo[2 * p + 1] = e[2 * p + 1] / s;
            }
            continue;
        }
        // SAFETY: AVX2 and FMA are enabled for this function; every lane is on the table path.
        let e = unsafe { expf::expf4(d) };
        let s = _mm_add_ps(e, _mm_shuffle_ps::<0b10_11_00_01>(e, e));
        // SAFETY: the chunk holds 4 floats.
        unsafe { _mm_storeu_ps(qo.as_mut_ptr(), _mm_div_ps(e, s)) };
    }
    // An odd last pixel.
    for (qo, ti) in qc
        .into_remainder()
        .chunks_exact_mut(2)
        .zip(tc.remainder().chunks_exact(2))
    {
        exp_normalize_pair(qo, ti);
    }
}

/// One pixel of two labels: `max = t1 > t0 ? t1 : t0`, `e = expf(t − max)`, `q = e / (e0 + e1)`.
#[inline(always)]
fn exp_normalize_pair(qo: &mut [f32], ti: &[f32]) {
    let mx = if ti[1] > ti[0] { ti[1] } else { ti[0] };
    let e0 = expf(ti[0] - mx);
    let e1 = expf(ti[1] - mx);
    let s = e0 + e1;
    qo[0] = e0 / s;
    qo[1] = e1 / s;
}

/// expf (glibc's, as pydensecrf's scalar Eigen path); exp(0) = 1 exactly, so skip the call.
#[inline]
fn expf(x: f32) -> f32 {
    if x == 0.0 {
        1.0
    } else {
        x.exp()
    }
}

/// The object-aware `apply_crf` parameters (pydensecrf README defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OfficialCrfParams {
    pub gaussian_sxy: f32,
    pub gaussian_compat: f32,
    pub bilateral_sxy: f32,
    pub bilateral_srgb: f32,
    pub bilateral_compat: f32,
    pub iterations: usize,
    /// Added to p before the log: U = −log(p + eps).
    pub eps: f32,
}

impl Default for OfficialCrfParams {
    fn default() -> Self {
        Self {
            gaussian_sxy: 3.0,
            gaussian_compat: 3.0,
            bilateral_sxy: 80.0,
            bilateral_srgb: 13.0,
            bilateral_compat: 10.0,
            iterations: 5,
            eps: 1e-20,
        }
    }
}

/// The object-aware CRF for images of one size, with the image-independent Gaussian kernel built once.
/// Unlike the official code it passes (W, H) to the CRF, so non-square images work (the official
/// `DenseCRF2D(h, w, 2)` only works for squares, where both agree).
#[derive(Debug, Clone)]
pub struct OfficialCrf {
    width: usize,
    height: usize,
    params: OfficialCrfParams,
    gaussian: Arc<DenseKernel>,
}

impl OfficialCrf {
    pub fn new(width: usize, height: usize, params: OfficialCrfParams) -> Result<Self, CrfError> {
        let s = params.gaussian_sxy;
        let gaussian = cached_gaussian(width, height, s)?;
        Ok(Self {
            width,
            height,
            params,
            gaussian,
        })
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    /// The unary −log([cam, 1−cam] + eps) in float32 with numpy's log, pixel-major (label 0 = foreground).
    pub fn unary(&self, cam: &[f32]) -> Vec<f32> {
        let p: Vec<f32> = cam.iter().flat_map(|&c| [c, 1.0 - c]).collect();
        let mut u = vec![0f32; p.len()];
        neg_log_eps(&p, self.params.eps, &mut u);
        u
    }

    /// Soft foreground Q[0] (H·W values, row-major). `image_rgb` is (H, W, 3) uint8, `cam` (H, W) in [0, 1].
    pub fn run(&self, image_rgb: &[u8], cam: &[f32]) -> Result<Vec<f32>, CrfError> {
        let (w, h) = (self.width, self.height);
        check_len("cam", cam.len(), w * h, format!("(H, W) = ({h}, {w})"))?;
        let p = &self.params;
        let mut crf = DenseCrf::new(w * h, 2);
        crf.set_unary_energy_pixel_major(&self.unary(cam))?;
        crf.add_pairwise_kernel(
            self.gaussian.clone(),
            Compatibility::Potts(p.gaussian_compat),
        )?;
        let bilateral = bilateral_kernel(
            w,
            h,
            [p.bilateral_sxy; 2],
            [p.bilateral_srgb; 3],
            image_rgb,
            Normalization::Symmetric,
            LatticeOptions::default(),
        )?;
        crf.add_pairwise_kernel(
            Arc::new(bilateral),
            Compatibility::Potts(p.bilateral_compat),
        )?;
        let q = crf.inference_pixel_major(p.iterations);
        Ok(q.chunks_exact(2).map(|px| px[0]).collect())
    }
}

type GaussianCache = Mutex<Vec<((usize, usize, u32), Arc<DenseKernel>)>>;

/// Gaussian kernels depend only on the grid and σ: build each once per process.
fn cached_gaussian(width: usize, height: usize, sxy: f32) -> Result<Arc<DenseKernel>, CrfError> {
    static CACHE: OnceLock<GaussianCache> = OnceLock::new();
    let key = (width, height, sxy.to_bits());
    let cache = CACHE.get_or_init(|| Mutex::new(Vec::new()));
    if let Some((_, k)) = cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(k, _)| *k == key)
    {
        return Ok(k.clone());
    }
    let kernel = Arc::new(gaussian_kernel(
        width,
        height,
        sxy,
        sxy,
        Normalization::Symmetric,
        LatticeOptions::default(),
    )?);
    let mut guard = cache.lock().unwrap_or_else(|e| e.into_inner());
    if guard.len() >= 16 {
        guard.remove(0);
    }
    guard.push((key, kernel.clone()));
    Ok(kernel)
}

/// The official `apply_crf` for one image: (H, W, 3) uint8 RGB and a (H, W) CAM in [0, 1] → soft
/// foreground (H·W). Unary −log([cam, 1−cam] + 1e-20), Gaussian sxy=3 compat=3, bilateral sxy=80 srgb=13
/// compat=10, 5 mean-field iterations.
///
/// # Panics
/// If the buffer lengths do not match `width`×`height`; [`try_official_crf`] returns the error instead.
pub fn official_crf(image_rgb: &[u8], cam: &[f32], width: usize, height: usize) -> Vec<f32> {
    try_official_crf(image_rgb, cam, width, height).unwrap_or_else(|e| panic!("official_crf: {e}"))
}

/// [`official_crf`] with errors returned.
pub fn try_official_crf(
    image_rgb: &[u8],
    cam: &[f32],
    width: usize,
    height: usize,
) -> Result<Vec<f32>, CrfError> {
    OfficialCrf::new(width, height, OfficialCrfParams::default())?.run(image_rgb, cam)
}
