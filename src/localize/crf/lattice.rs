//! Permutohedral lattice (Adams, Baek & Davis 2010) with the arithmetic of pydensecrf's x86 build
//! (`densecrf/src/permutohedral.cpp`, the `__SSE__` branch of `init`; spec metrics.md §4.5).
//!
//! Everything that decides the float results is kept: float32 throughout, round-half-to-even of
//! `E·(1/(d+1))`, the rank/wrap/barycentric order, splatting in pixel order, blurring axis 0..=d from the
//! old values, slicing over remainders 0..=d, the `α = 1/(1+2^-d)` constant, and the different slice
//! product order of the scalar (≤ 2 values) and SSE (> 2 values) filters. The hash table is ours: vertex
//! numbering does not change any sum.
//!
//! One pydensecrf detail that does change results is reproduced too: the SSE `init` handles pixels in blocks
//! of 4 and inserts the lattice vertices of the zero feature vector for the padding lanes when N is not a
//! multiple of 4. Those vertices receive no splat but take part in the blur, so they carry mass.
//!
//! Speed: the feature dimension is a const generic (loops unroll), keys are packed 16-bit coordinates
//! hashed in a small open-addressing table whose slots hold key and vertex index together.
// Index loops mirror the reference algorithm step by step (spec §4.5); iterator chains would hide that.
#![allow(clippy::needless_range_loop)]
use super::CrfError;

/// Largest feature dimension supported (keys are packed as 16-bit coordinates into 256 bits).
pub const MAX_FEATURE_DIM: usize = 16;

/// How the lattice is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatticeOptions {
    /// Insert the vertices of the zero feature for the SSE padding lanes (pydensecrf on x86; default true).
    /// false gives the textbook lattice, which differs only when N is not a multiple of 4.
    pub sse_block_padding: bool,
}

impl Default for LatticeOptions {
    fn default() -> Self {
        Self {
            sse_block_padding: true,
        }
    }
}

/// One (pixel, remainder) entry: lattice vertex + 1 (0 = the always-zero slot) and barycentric weight.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    offset: u32,
    weight: f32,
}

/// A lattice built from N feature vectors of dimension d.
#[derive(Debug, Clone)]
pub struct Lattice {
    d: usize,
    n: usize,
    /// Per pixel, d+1 entries (remainders 0..=d).
    entries: Vec<Entry>,
    /// Number of lattice vertices.
    m: usize,
    /// Per axis j = 0..=d and vertex i: the two blur neighbours (+1, 0 = missing), at `j*m + i`.
    neighbors: Vec<[u32; 2]>,
}

/// Reusable buffers for [`Lattice::compute`].
#[derive(Debug, Default)]
pub struct LatticeScratch {
    values: Vec<f32>,
    new_values: Vec<f32>,
}

/// A packed lattice key (pydensecrf stores coordinates as `short`).
trait Key: Copy + Eq + Default {
    /// Coordinates must lie in [−HALF, HALF).
    const HALF: i32 = 1 << 15;
    fn pack(coords: &[i16]) -> Self;
    fn coord(&self, i: usize) -> i16;
    fn hash(&self) -> u64;
    /// The blur neighbour along axis `j`: every coordinate − 1, except coordinate `j` (when j < d), which
    /// is + d. The build keeps every key ≥ 1 above the lowest and ≥ d below the highest coordinate, so no
    /// lane over- or underflows.
    fn blur_neighbor(&self, d: usize, j: usize) -> Self {
        let mut c = [0i16; MAX_FEATURE_DIM];
        for (i, ci) in c.iter_mut().enumerate().take(d) {
            *ci = if i == j {
                self.coord(i) + d as i16
            } else {
                self.coord(i) - 1
            };
        }
        Self::pack(&c[..d])
    }
    /// The key of the next remainder: every coordinate + 1, and coordinate `wrap` (if any) − (d+1).
    fn next_remainder(&self, d: usize, wrap: Option<usize>) -> Self {
        let mut c = [0i16; MAX_FEATURE_DIM];
        for (i, ci) in c.iter_mut().enumerate().take(d) {
            *ci = self.coord(i).wrapping_add(1);
        }
        if let Some(i) = wrap {
            c[i] = c[i].wrapping_sub(d as i16 + 1);
        }
        Self::pack(&c[..d])
    }
}

/// Five 12-bit lanes in a u64 (`coordinate + 2^11`): the bilateral lattice (d = 5) when every key fits,
/// which halves the hashing and comparing work of 16-bit lanes in a u128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Key12(u64);

impl Key for Key12 {
    const HALF: i32 = 1 << 11;
    #[inline(always)]
    fn pack(coords: &[i16]) -> Self {
        let mut k = 0u64;
        for (i, &c) in coords.iter().enumerate() {
            k |= (((c as i32 + Self::HALF) as u64) & 0xfff) << (12 * i);
        }
        Key12(k)
    }
    #[inline(always)]
    fn coord(&self, i: usize) -> i16 {
        (((self.0 >> (12 * i)) & 0xfff) as i32 - Self::HALF) as i16
    }
    #[inline(always)]
    fn hash(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    #[inline(always)]
    fn blur_neighbor(&self, d: usize, j: usize) -> Self {
        // Biased lanes stay in 1..=4095−d (see the trait), so whole-word arithmetic never borrows.
        let ones = 0x0001_0010_0100_1001u64 & ((1u64 << (12 * d)) - 1);
        let k = self.0.wrapping_sub(ones);
        Key12(if j < d {
            k.wrapping_add(((d + 1) as u64) << (12 * j))
        } else {
            k
        })
    }
    #[inline(always)]
    fn next_remainder(&self, d: usize, wrap: Option<usize>) -> Self {
        let ones = 0x0001_0010_0100_1001u64 & ((1u64 << (12 * d)) - 1);
        let k = self.0.wrapping_add(ones);
        Key12(match wrap {
            Some(i) => k.wrapping_sub(((d + 1) as u64) << (12 * i)),
            None => k,
        })
    }
}

/// 16-bit lanes hold `coordinate + 2^15`, so adding 1 to every lane or subtracting d+1 from one lane
/// cannot carry into a neighbour for coordinates within ±(2^15 − d − 1).
const LANE_BIAS: i32 = 1 << 15;
const ONES_U128: u128 = 0x0001_0001_0001_0001_0001_0001_0001_0001;

impl Key for u128 {
    #[inline(always)]
    fn pack(coords: &[i16]) -> Self {
        let mut k = 0u128;
        for (i, &c) in coords.iter().enumerate() {
            k |= ((c as i32 + LANE_BIAS) as u16 as u128) << (16 * i);
        }
        k
    }
    #[inline(always)]
    fn coord(&self, i: usize) -> i16 {
        ((*self >> (16 * i)) as u16 as i32 - LANE_BIAS) as i16
    }
    #[inline(always)]
    fn blur_neighbor(&self, d: usize, j: usize) -> Self {
        let ones = ONES_U128 & ((1u128 << (16 * d)) - 1);
        let k = self.wrapping_sub(ones);
        if j < d {
            k.wrapping_add(((d + 1) as u128) << (16 * j))
        } else {
            k
        }
    }
    #[inline(always)]
    fn next_remainder(&self, d: usize, wrap: Option<usize>) -> Self {
        let ones = ONES_U128 & ((1u128 << (16 * d)) - 1);
        let k = self.wrapping_add(ones);
        match wrap {
            Some(i) => k.wrapping_sub(((d + 1) as u128) << (16 * i)),
            None => k,
        }
    }
    #[inline(always)]
    fn hash(&self) -> u64 {
        let lo = *self as u64;
        let hi = (*self >> 64) as u64;
        (lo ^ hi.wrapping_mul(0xD6E8_FEB8_6659_FD93)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

impl Key for [u64; 4] {
    fn pack(coords: &[i16]) -> Self {
        let mut k = [0u64; 4];
        for (i, &c) in coords.iter().enumerate() {
            k[i / 4] |= (c as u16 as u64) << (16 * (i % 4));
        }
        k
    }
    fn coord(&self, i: usize) -> i16 {
        (self[i / 4] >> (16 * (i % 4))) as u16 as i16
    }
    fn hash(&self) -> u64 {
        let mut h = self[0].wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for &w in &self[1..] {
            h = (h.rotate_left(29) ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
        h
    }
}

/// Open-addressing hash table from keys to vertex indices (in insertion order); Fibonacci hashing on
/// the high bits, linear probing, load ≤ 1/2. Key and index share a slot, so a probe touches one cache line.
struct VertexTable<K: Key> {
    slots: Vec<Slot<K>>,
    keys: Vec<K>,
    shift: u32,
}

#[derive(Clone, Copy)]
struct Slot<K> {
    key: K,
    /// Vertex index, or `EMPTY`.
    idx: u32,
}

impl<K: Key> VertexTable<K> {
    const EMPTY: u32 = u32::MAX;

    fn new() -> Self {
        let bits = 12;
        Self {
            slots: vec![Self::empty_slot(); 1 << bits],
            keys: Vec::new(),
            shift: 64 - bits,
        }
    }

    fn empty_slot() -> Slot<K> {
        Slot {
            key: K::default(),
            idx: Self::EMPTY,
        }
    }

    #[inline(always)]
    fn slot(&self, k: &K) -> usize {
        (k.hash() >> self.shift) as usize
    }

    #[cold]
    fn grow(&mut self) {
        let cap = self.slots.len() * 2;
        self.shift -= 1;
        self.slots = vec![Self::empty_slot(); cap];
        let mask = cap - 1;
        for (idx, k) in self.keys.iter().enumerate() {
            let mut h = (k.hash() >> self.shift) as usize;
            while self.slots[h].idx != Self::EMPTY {
                h = (h + 1) & mask;
            }
            self.slots[h] = Slot {
                key: *k,
                idx: idx as u32,
            };
        }
    }

    #[inline(always)]
    fn find_or_insert(&mut self, key: K) -> u32 {
        let mask = self.slots.len() - 1;
        let mut h = self.slot(&key);
        loop {
            // SAFETY: h is masked to the table size.
            let s = unsafe { *self.slots.get_unchecked(h) };
            if s.key == key && s.idx != Self::EMPTY {
                return s.idx;
            }
            if s.idx == Self::EMPTY {
                return self.insert_at(h, key);
            }
            h = (h + 1) & mask;
        }
    }

    /// Inserts `key` at the empty slot `h` found by the probe.
    #[inline(never)]
    fn insert_at(&mut self, h: usize, key: K) -> u32 {
        let idx = self.keys.len() as u32;
        self.keys.push(key);
        self.slots[h] = Slot { key, idx };
        if 2 * self.keys.len() > self.slots.len() {
            self.grow();
        }
        idx
    }

    #[inline(always)]
    fn find(&self, key: &K) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let mut h = self.slot(key);
        loop {
            let s = self.slots[h];
            if s.idx == Self::EMPTY {
                return None;
            }
            if s.key == *key {
                return Some(s.idx);
            }
            h = (h + 1) & mask;
        }
    }
}

/// Constants of the embedding for dimension D, in pydensecrf's precision.
struct Elevation<const D: usize> {
    scale: [f32; MAX_FEATURE_DIM],
    inv_dp1: f32,
    dp1: f32,
}

/// Where one feature vector lies: the remainder-0 point, the rank permutation and barycentric weights.
struct Embedding {
    rem0: [f32; MAX_FEATURE_DIM + 1],
    rank: [i32; MAX_FEATURE_DIM + 1],
    bary: [f32; MAX_FEATURE_DIM + 2],
}

impl<const D: usize> Elevation<D> {
    fn new() -> Self {
        // float inv_std_dev = sqrt(2.0/3.0)*(d+1); scale_i = float(1.0/sqrt((i+2)*(i+1)) * inv_std_dev)
        let inv_std_dev = ((2.0f64 / 3.0).sqrt() * (D + 1) as f64) as f32;
        let mut scale = [0f32; MAX_FEATURE_DIM];
        for (i, s) in scale.iter_mut().enumerate().take(D) {
            *s = (1.0 / (((i + 2) * (i + 1)) as f64).sqrt() * inv_std_dev as f64) as f32;
        }
        Self {
            scale,
            inv_dp1: 1.0f32 / (D + 1) as f32,
            dp1: (D + 1) as f32,
        }
    }

    /// Steps 2–6 of spec §4.5 for one feature vector `f` (length D), SSE semantics.
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    #[inline(always)]
    fn embed(&self, f: &[f32], e: &mut Embedding) {
        let mut elevated = [0f32; MAX_FEATURE_DIM + 1];
        let mut sm = 0f32;
        for j in (1..=D).rev() {
            let cf = f[j - 1] * self.scale[j - 1];
            elevated[j] = sm - (j as f32) * cf;
            sm += cf;
        }
        elevated[0] = sm;

        // Nearest remainder-0 point; _mm_round_ps / cvtps_epi32 round half to even.
        let mut sum = 0f32;
        for i in 0..=D {
            let v = round_half_even(self.inv_dp1 * elevated[i]);
            e.rem0[i] = v * self.dp1;
            sum += v;
        }

        let mut diff = [0f32; MAX_FEATURE_DIM + 1];
        for i in 0..=D {
            diff[i] = elevated[i] - e.rem0[i];
            e.rank[i] = 0;
        }
        for i in 0..D {
            for j in i + 1..=D {
                let c = (diff[i] < diff[j]) as i32;
                e.rank[i] += c;
                e.rank[j] += 1 - c;
            }
        }

        // Bring the point back onto the plane; sum is an integer-valued float.
        let sum = sum as i32;
        let dp1 = D as i32 + 1;
        for i in 0..=D {
            let r = e.rank[i] + sum;
            if r < 0 {
                e.rank[i] = r + dp1;
                e.rem0[i] += self.dp1;
            } else if r >= dp1 {
                e.rank[i] = r - dp1;
                e.rem0[i] -= self.dp1;
            } else {
                e.rank[i] = r;
            }
        }

        for i in 0..D + 2 {
            e.bary[i] = 0.0;
        }
        for i in 0..=D {
            let v = (elevated[i] - e.rem0[i]) * self.inv_dp1;
            let p = (D as i32 - e.rank[i]) as usize;
            e.bary[p] += v;
            e.bary[p + 1] -= v;
        }
        e.bary[0] += 1.0 + e.bary[D + 1];
    }
}

/// Four embeddings at once, as pydensecrf's SSE `init` computes them (lane-wise identical to
/// [`Elevation::embed`]; rounding by `cvtps_epi32` in the default round-to-nearest-even mode).
#[cfg(target_arch = "x86_64")]
struct Embedding4 {
    rem0: [[f32; 4]; MAX_FEATURE_DIM + 1],
    rank: [[f32; 4]; MAX_FEATURE_DIM + 1],
    /// Barycentric weight of remainder k, per lane (k = 0..=d).
    bary: [[f32; 4]; MAX_FEATURE_DIM + 1],
    /// `rem0` and `rank` as integers (they hold integer values, so the conversion is exact).
    rem0_i: [[i32; 4]; MAX_FEATURE_DIM + 1],
    rank_i: [[i32; 4]; MAX_FEATURE_DIM + 1],
}

#[cfg(target_arch = "x86_64")]
impl<const D: usize> Elevation<D> {
    /// `f[j]` holds feature j of the 4 pixels.
    #[inline(always)]
    fn embed4(&self, f: &[[f32; 4]; MAX_FEATURE_DIM], e: &mut Embedding4) {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of the x86-64 baseline; all loads/stores are of local arrays.
        unsafe {
            let zero = _mm_setzero_ps();
            let one = _mm_set1_ps(1.0);
            let inv = _mm_set1_ps(self.inv_dp1);
            let dp1 = _mm_set1_ps(self.dp1);
            let mut elevated = [zero; MAX_FEATURE_DIM + 1];
            let mut sm = zero;
            for j in (1..=D).rev() {
                let cf = _mm_mul_ps(
                    _mm_loadu_ps(f[j - 1].as_ptr()),
                    _mm_set1_ps(self.scale[j - 1]),
                );
                elevated[j] = _mm_sub_ps(sm, _mm_mul_ps(_mm_set1_ps(j as f32), cf));
                sm = _mm_add_ps(sm, cf);
            }
            elevated[0] = sm;
            let mut rem0 = [zero; MAX_FEATURE_DIM + 1];
            let mut sum = zero;
            for i in 0..=D {
                let v = _mm_cvtepi32_ps(_mm_cvtps_epi32(_mm_mul_ps(inv, elevated[i])));
                rem0[i] = _mm_mul_ps(v, dp1);
                sum = _mm_add_ps(sum, v);
            }
            let mut rank = [zero; MAX_FEATURE_DIM + 1];
            for i in 0..D {
                let di = _mm_sub_ps(elevated[i], rem0[i]);
                for j in i + 1..=D {
                    let dj = _mm_sub_ps(elevated[j], rem0[j]);
                    let c = _mm_and_ps(one, _mm_cmplt_ps(di, dj));
                    rank[i] = _mm_add_ps(rank[i], c);
                    rank[j] = _mm_add_ps(rank[j], _mm_sub_ps(one, c));
                }
            }
            for i in 0..=D {
                rank[i] = _mm_add_ps(rank[i], sum);
                let add = _mm_and_ps(dp1, _mm_cmplt_ps(rank[i], zero));
                let sub = _mm_and_ps(dp1, _mm_cmpge_ps(rank[i], dp1));
                rank[i] = _mm_add_ps(rank[i], _mm_sub_ps(add, sub));
                rem0[i] = _mm_add_ps(rem0[i], _mm_sub_ps(add, sub));
                _mm_storeu_ps(e.rem0[i].as_mut_ptr(), rem0[i]);
                _mm_storeu_ps(e.rank[i].as_mut_ptr(), rank[i]);
                _mm_storeu_si128(
                    e.rem0_i[i].as_mut_ptr() as *mut __m128i,
                    _mm_cvtps_epi32(rem0[i]),
                );
                _mm_storeu_si128(
                    e.rank_i[i].as_mut_ptr() as *mut __m128i,
                    _mm_cvtps_epi32(rank[i]),
                );
            }
            // pydensecrf scatters t_i = (E_i − rem0_i)/(d+1) into b[d − rank_i] (+) and b[d − rank_i + 1] (−),
            // then b[0] += 1 + b[d+1]. Ranks are a permutation of 0..=d, so b[k] gets exactly one + and one −
            // term (for 1 ≤ k ≤ d): (0 + x) − y and (0 − y) + x round alike, so gather by rank instead.
            let mut by_rank = [zero; MAX_FEATURE_DIM + 1];
            for i in 0..=D {
                let t = _mm_mul_ps(_mm_sub_ps(elevated[i], rem0[i]), inv);
                for (k, slot) in by_rank.iter_mut().enumerate().take(D + 1) {
                    let hit = _mm_cmpeq_ps(rank[i], _mm_set1_ps(k as f32));
                    *slot = _mm_or_ps(*slot, _mm_and_ps(hit, t));
                }
            }
            // b[0] = t(rank d) + (1 + (−t(rank 0))); b[k] = t(rank d−k) − t(rank d−k+1).
            let b0 = _mm_add_ps(by_rank[D], _mm_add_ps(one, _mm_sub_ps(zero, by_rank[0])));
            _mm_storeu_ps(e.bary[0].as_mut_ptr(), b0);
            for k in 1..=D {
                let bk = _mm_sub_ps(by_rank[D - k], by_rank[D - k + 1]);
                _mm_storeu_ps(e.bary[k].as_mut_ptr(), bk);
            }
        }
    }
}

/// Round half to even (SSE `cvtps_epi32` in round-to-nearest mode): `(v + 1.5·2^23) − 1.5·2^23` is exact
/// for |v| < 2^22 and avoids a libm call on baseline x86-64.
#[inline(always)]
fn round_half_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    if v.abs() < 4_194_304.0 {
        (v + MAGIC) - MAGIC
    } else {
        v.round_ties_even()
    }
}

/// Builds entries and neighbours for feature dimension D with key type K.
/// `None` when a key coordinate does not fit K's lanes (the caller retries with wider keys).
fn build<const D: usize, K: Key>(features: &[f32], opts: LatticeOptions) -> Option<Lattice> {
    let n = features.len() / D;
    let dp1 = D + 1;
    let elev = Elevation::<D>::new();
    let mut table = VertexTable::<K>::new();
    let mut entries = vec![Entry::default(); n * dp1];
    let mut emb = Embedding {
        rem0: [0.0; MAX_FEATURE_DIM + 1],
        rank: [0; MAX_FEATURE_DIM + 1],
        bary: [0.0; MAX_FEATURE_DIM + 2],
    };
    let mut offsets = [0u32; MAX_FEATURE_DIM + 1];
    let mut base_i = [0i32; MAX_FEATURE_DIM];
    let mut rank_i = [0i32; MAX_FEATURE_DIM];
    let mut coords = [0i16; MAX_FEATURE_DIM];
    let padded = if opts.sse_block_padding {
        n.div_ceil(4) * 4
    } else {
        n
    };
    #[cfg(target_arch = "x86_64")]
    let mut emb4 = Embedding4 {
        rem0: [[0.0; 4]; MAX_FEATURE_DIM + 1],
        rank: [[0.0; 4]; MAX_FEATURE_DIM + 1],
        bary: [[0.0; 4]; MAX_FEATURE_DIM + 1],
        rem0_i: [[0; 4]; MAX_FEATURE_DIM + 1],
        rank_i: [[0; 4]; MAX_FEATURE_DIM + 1],
    };
    #[cfg(target_arch = "x86_64")]
    let mut f4 = [[0f32; 4]; MAX_FEATURE_DIM];
    #[cfg(not(target_arch = "x86_64"))]
    let zero = [0f32; MAX_FEATURE_DIM];
    for k in 0..padded {
        // Fill `emb` for pixel k (padding lanes have the zero feature).
        #[cfg(target_arch = "x86_64")]
        {
            let lane = k % 4;
            if lane == 0 {
                for l in 0..4 {
                    for j in 0..D {
                        f4[j][l] = if k + l < n {
                            features[(k + l) * D + j]
                        } else {
                            0.0
                        };
                    }
                }
                elev.embed4(&f4, &mut emb4);
            }
            for i in 0..D {
                base_i[i] = emb4.rem0_i[i][lane];
                rank_i[i] = emb4.rank_i[i][lane];
            }
            for r in 0..=D {
                emb.bary[r] = emb4.bary[r][lane];
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let f = if k < n {
                &features[k * D..(k + 1) * D]
            } else {
                &zero[..D]
            };
            elev.embed(f, &mut emb);
            for i in 0..D {
                base_i[i] = emb.rem0[i] as i32;
                rank_i[i] = emb.rank[i];
            }
        }
        let mut inv_rank = [D; MAX_FEATURE_DIM + 1];
        let mut in_range = true;
        for i in 0..D {
            let base = base_i[i];
            // Keys of this simplex lie in [base − d − 1, base + d], their blur neighbours in
            // [base − d − 2, base + 2d]: all must fit the key's lanes.
            in_range &= base >= -K::HALF + D as i32 + 2 && base < K::HALF - 2 * D as i32;
            coords[i] = base as i16;
            inv_rank[rank_i[i] as usize] = i;
        }
        if !in_range {
            return None;
        }
        // key_0 = rem0 (ranks are ≤ d); key_r = key_{r-1} + 1, except the coordinate of rank d−r+1,
        // which wraps by −(d+1): the canonical simplex table applied incrementally. Every pixel looks its
        // vertices up: most probes hit the first slot, which is cheaper than mispredicting a "same simplex
        // as the previous pixel" test that fails for most pixels of a natural image.
        let mut key = K::pack(&coords[..D]);
        for r in 0..=D {
            if r > 0 {
                let i = inv_rank[D - r + 1];
                key = key.next_remainder(D, (i < D).then_some(i));
            }
            offsets[r] = table.find_or_insert(key) + 1;
        }
        if k < n {
            for r in 0..=D {
                entries[k * dp1 + r] = Entry {
                    offset: offsets[r],
                    weight: emb.bary[r],
                };
            }
        }
    }

    // Blur neighbours along axis j: n1 = key − 1 except coordinate j, which is key_j + d; n2 is the inverse
    // step, so n2(k) = i exactly when n1(i) = k and each n1 lookup fills both.
    let m = table.keys.len();
    let mut neighbors = vec![[0u32; 2]; dp1 * m];
    for j in 0..=D {
        for i in 0..m {
            let n1 = table.keys[i].blur_neighbor(D, j);
            if let Some(k) = table.find(&n1) {
                neighbors[j * m + i][0] = k + 1;
                neighbors[j * m + k as usize][1] = i as u32 + 1;
            }
        }
    }
    Some(Lattice {
        d: D,
        n,
        entries,
        m,
        neighbors,
    })
}

/// Calls `$f::<D, ...>` for the runtime dimension `$d` (1..=16).
macro_rules! dispatch_dim {
    ($d:expr, $f:ident, $($arg:expr),*) => {
        match $d {
            1 => $f::<1, u128>($($arg),*),
            2 => $f::<2, u128>($($arg),*),
            3 => $f::<3, u128>($($arg),*),
            4 => $f::<4, u128>($($arg),*),
            5 => $f::<5, u128>($($arg),*),
            6 => $f::<6, u128>($($arg),*),
            7 => $f::<7, u128>($($arg),*),
            8 => $f::<8, u128>($($arg),*),
            9 => $f::<9, [u64; 4]>($($arg),*),
            10 => $f::<10, [u64; 4]>($($arg),*),
            11 => $f::<11, [u64; 4]>($($arg),*),
            12 => $f::<12, [u64; 4]>($($arg),*),
            13 => $f::<13, [u64; 4]>($($arg),*),
            14 => $f::<14, [u64; 4]>($($arg),*),
            15 => $f::<15, [u64; 4]>($($arg),*),
            _ => $f::<16, [u64; 4]>($($arg),*),
        }
    };
}

impl Lattice {
    /// Builds the lattice. `features` is pixel-major: feature k of pixel i at `features[i*d + k]`.
    pub fn new(features: &[f32], d: usize, opts: LatticeOptions) -> Result<Self, CrfError> {
        if d == 0 || d > MAX_FEATURE_DIM {
            return Err(CrfError::FeatureDim {
                d,
                max: MAX_FEATURE_DIM,
            });
        }
        if !features.len().is_multiple_of(d) {
            return Err(CrfError::Shape {
                what: "features",
                expected: format!("a multiple of d = {d}"),
                got: features.len(),
            });
        }
        if d == 5 {
            if let Some(l) = build::<5, Key12>(features, opts) {
                return Ok(l);
            }
        }
        dispatch_dim!(d, build, features, opts).ok_or(CrfError::FeatureRange)
    }

    pub fn num_points(&self) -> usize {
        self.n
    }

    pub fn feature_dim(&self) -> usize {
        self.d
    }

    pub fn num_vertices(&self) -> usize {
        self.m
    }

    fn alpha(&self) -> f32 {
        1.0f32 / (1.0 + 2f32.powi(-(self.d as i32)))
    }

    /// Filters `input` (pixel-major, `vs` values per pixel) into `out`: splat, blur, slice.
    /// `reverse` blurs the axes in reverse order (the transpose). pydensecrf uses its scalar path for
    /// `vs <= 2` and its SSE path above; the two differ in the blur's precision and the slice's product order.
    pub fn compute(
        &self,
        out: &mut [f32],
        input: &[f32],
        vs: usize,
        reverse: bool,
        scratch: &mut LatticeScratch,
    ) {
        self.compute_scaled(out, input, vs, reverse, None, None, scratch)
    }

    /// [`Self::compute`] of `input·diag(pre)`, multiplied by `diag(post)` on the way out: the same float
    /// operations as scaling in separate passes, fused into the splat and the slice.
    #[allow(clippy::too_many_arguments)]
    pub fn compute_scaled(
        &self,
        out: &mut [f32],
        input: &[f32],
        vs: usize,
        reverse: bool,
        pre: Option<&[f32]>,
        post: Option<&[f32]>,
        scratch: &mut LatticeScratch,
    ) {
        assert_eq!(input.len(), self.n * vs, "lattice input length");
        assert_eq!(out.len(), self.n * vs, "lattice output length");
        for s in [pre, post].into_iter().flatten() {
            assert_eq!(s.len(), self.n, "lattice scale length");
        }
        macro_rules! scalar {
            ($vs:literal) => {
                match self.d {
                    2 => self.compute_scalar::<2, $vs>(out, input, reverse, pre, post, scratch),
                    5 => self.compute_scalar::<5, $vs>(out, input, reverse, pre, post, scratch),
                    _ => self.compute_scalar_dyn::<$vs>(out, input, reverse, pre, post, scratch),
                }
            };
        }
        match vs {
            1 => scalar!(1),
            2 => scalar!(2),
            _ => self.compute_sse(out, input, vs, reverse, pre, post, scratch),
        }
    }

    fn prepare(&self, len: usize, scratch: &mut LatticeScratch) {
        for buf in [&mut scratch.values, &mut scratch.new_values] {
            buf.clear();
            buf.resize(len, 0.0);
        }
    }

    fn axes(&self, reverse: bool) -> impl Iterator<Item = usize> {
        let d = self.d;
        (0..=d).map(move |j| if reverse { d - j } else { j })
    }

    /// `seqCompute` blur: `old + 0.5*(n1+n2)` with a double literal, so in double, rounded to float.
    fn blur_scalar<const VS: usize>(&self, reverse: bool, scratch: &mut LatticeScratch) {
        for j in self.axes(reverse) {
            let nb = &self.neighbors[j * self.m..(j + 1) * self.m];
            let (old, new) = (&scratch.values, &mut scratch.new_values);
            let old_v: &[[f32; VS]] = as_chunks(old);
            let new_v: &mut [[f32; VS]] = as_chunks_mut(new);
            for (i, &[a, b]) in nb.iter().enumerate() {
                debug_assert!((a as usize) < old_v.len() && (b as usize) < old_v.len());
                // SAFETY: neighbours are vertex indices + 1 ≤ m (or 0), and there are m + 1 slots.
                let (va, vb, vc) = unsafe {
                    (
                        *old_v.get_unchecked(a as usize),
                        *old_v.get_unchecked(b as usize),
                        old_v[i + 1],
                    )
                };
                let o = &mut new_v[i + 1];
                for k in 0..VS {
                    o[k] = (vc[k] as f64 + 0.5 * (va[k] + vb[k]) as f64) as f32;
                }
            }
            std::mem::swap(&mut scratch.values, &mut scratch.new_values);
        }
    }

    /// `seqCompute` with D fixed at compile time: splat `v += w*x`, slice `out += (w*v)*α`.
    fn compute_scalar<const D: usize, const VS: usize>(
        &self,
        out: &mut [f32],
        input: &[f32],
        reverse: bool,
        pre: Option<&[f32]>,
        post: Option<&[f32]>,
        scratch: &mut LatticeScratch,
    ) {
        let dp1 = D + 1;
        self.prepare((self.m + 1) * VS, scratch);
        #[cfg(target_arch = "x86_64")]
        if VS == 2 {
            // SAFETY: SSE2 is part of x86-64; offsets are ≤ m (see splat2).
            unsafe { splat2::<D>(&self.entries, input, pre, &mut scratch.values) };
            self.blur_scalar::<VS>(reverse, scratch);
            unsafe { slice2::<D>(&self.entries, &scratch.values, self.alpha(), post, out) };
            return;
        }
        {
            let values: &mut [[f32; VS]] = as_chunks_mut(&mut scratch.values);
            let inp: &[[f32; VS]] = as_chunks(input);
            for (i, (x, es)) in inp.iter().zip(self.entries.chunks_exact(dp1)).enumerate() {
                let mut x = *x;
                if let Some(p) = pre {
                    x.iter_mut().for_each(|v| *v *= p[i]);
                }
                for e in &es[..dp1] {
                    debug_assert!((e.offset as usize) < values.len());
                    // SAFETY: every offset is a vertex index + 1 ≤ m, and values holds m + 1 slots.
                    let slot = unsafe { values.get_unchecked_mut(e.offset as usize) };
                    for k in 0..VS {
                        slot[k] += e.weight * x[k];
                    }
                }
            }
        }
        self.blur_scalar::<VS>(reverse, scratch);
        let alpha = self.alpha();
        let values: &[[f32; VS]] = as_chunks(&scratch.values);
        let outv: &mut [[f32; VS]] = as_chunks_mut(out);
        for (i, (y, es)) in outv
            .iter_mut()
            .zip(self.entries.chunks_exact(dp1))
            .enumerate()
        {
            let mut acc = [0f32; VS];
            for e in &es[..dp1] {
                debug_assert!((e.offset as usize) < values.len());
                // SAFETY: as in the splat.
                let v = unsafe { *values.get_unchecked(e.offset as usize) };
                for k in 0..VS {
                    acc[k] += e.weight * v[k] * alpha;
                }
            }
            if let Some(p) = post {
                acc.iter_mut().for_each(|v| *v *= p[i]);
            }
            *y = acc;
        }
    }

    /// `seqCompute` for any d.
    fn compute_scalar_dyn<const VS: usize>(
        &self,
        out: &mut [f32],
        input: &[f32],
        reverse: bool,
        pre: Option<&[f32]>,
        post: Option<&[f32]>,
        scratch: &mut LatticeScratch,
    ) {
        let dp1 = self.d + 1;
        self.prepare((self.m + 1) * VS, scratch);
        {
            let values: &mut [[f32; VS]] = as_chunks_mut(&mut scratch.values);
            let inp: &[[f32; VS]] = as_chunks(input);
            for (i, (x, es)) in inp.iter().zip(self.entries.chunks_exact(dp1)).enumerate() {
                let mut x = *x;
                if let Some(p) = pre {
                    x.iter_mut().for_each(|v| *v *= p[i]);
                }
                for e in &es[..dp1] {
                    debug_assert!((e.offset as usize) < values.len());
                    // SAFETY: every offset is a vertex index + 1 ≤ m, and values holds m + 1 slots.
                    let slot = unsafe { values.get_unchecked_mut(e.offset as usize) };
                    for k in 0..VS {
                        slot[k] += e.weight * x[k];
                    }
                }
            }
        }
        self.blur_scalar::<VS>(reverse, scratch);
        let alpha = self.alpha();
        let values: &[[f32; VS]] = as_chunks(&scratch.values);
        let outv: &mut [[f32; VS]] = as_chunks_mut(out);
        for (i, (y, es)) in outv
            .iter_mut()
            .zip(self.entries.chunks_exact(dp1))
            .enumerate()
        {
            let mut acc = [0f32; VS];
            for e in &es[..dp1] {
                debug_assert!((e.offset as usize) < values.len());
                // SAFETY: as in the splat.
                let v = unsafe { *values.get_unchecked(e.offset as usize) };
                for k in 0..VS {
                    acc[k] += e.weight * v[k] * alpha;
                }
            }
            if let Some(p) = post {
                acc.iter_mut().for_each(|v| *v *= p[i]);
            }
            *y = acc;
        }
    }

    /// `sseCompute`: blur in float, slice `(w*α)*v`.
    #[allow(clippy::too_many_arguments)]
    fn compute_sse(
        &self,
        out: &mut [f32],
        input: &[f32],
        vs: usize,
        reverse: bool,
        pre: Option<&[f32]>,
        post: Option<&[f32]>,
        scratch: &mut LatticeScratch,
    ) {
        let dp1 = self.d + 1;
        self.prepare((self.m + 1) * vs, scratch);
        {
            let values = &mut scratch.values;
            let mut x = vec![0f32; vs];
            for (i, (xin, es)) in input
                .chunks_exact(vs)
                .zip(self.entries.chunks_exact(dp1))
                .enumerate()
            {
                x.copy_from_slice(xin);
                if let Some(p) = pre {
                    x.iter_mut().for_each(|v| *v *= p[i]);
                }
                for e in es {
                    let o = e.offset as usize * vs;
                    for (s, &xk) in values[o..o + vs].iter_mut().zip(&x) {
                        *s += e.weight * xk;
                    }
                }
            }
        }
        for j in self.axes(reverse) {
            let nb = &self.neighbors[j * self.m..(j + 1) * self.m];
            let (old, new) = (&scratch.values, &mut scratch.new_values);
            for (i, &[a, b]) in nb.iter().enumerate() {
                let (a, b, c) = (a as usize * vs, b as usize * vs, (i + 1) * vs);
                for k in 0..vs {
                    new[c + k] = old[c + k] + 0.5f32 * (old[a + k] + old[b + k]);
                }
            }
            std::mem::swap(&mut scratch.values, &mut scratch.new_values);
        }
        let alpha = self.alpha();
        let values = &scratch.values;
        for (i, (y, es)) in out
            .chunks_exact_mut(vs)
            .zip(self.entries.chunks_exact(dp1))
            .enumerate()
        {
            y.fill(0.0);
            for e in es {
                let wa = e.weight * alpha;
                let o = e.offset as usize * vs;
                for (acc, &vk) in y.iter_mut().zip(&values[o..o + vs]) {
                    *acc += wa * vk;
                }
            }
            if let Some(p) = post {
                y.iter_mut().for_each(|v| *v *= p[i]);
            }
        }
    }
}

/// Splat of 2 values per pixel with both channels in one SSE register: lane-wise `v += w·(x·pre)`,
/// the same float operations as the scalar loop.
#[cfg(target_arch = "x86_64")]
unsafe fn splat2<const D: usize>(
    entries: &[Entry],
    input: &[f32],
    pre: Option<&[f32]>,
    values: &mut [f32],
) {
    use std::arch::x86_64::*;
    let n = input.len() / 2;
    assert!(entries.len() >= n * (D + 1));
    let vp = values.as_mut_ptr() as *mut f64;
    let slots = values.len() / 2;
    for i in 0..n {
        let mut x = _mm_castpd_ps(_mm_load_sd(input.as_ptr().add(2 * i) as *const f64));
        if let Some(p) = pre {
            x = _mm_mul_ps(x, _mm_set1_ps(p[i]));
        }
        for e in entries.get_unchecked(i * (D + 1)..(i + 1) * (D + 1)) {
            let o = e.offset as usize;
            debug_assert!(o < slots);
            let _ = slots;
            // SAFETY: offsets are vertex indices + 1 ≤ m; values holds m + 1 pairs.
            let ptr = vp.add(o);
            let v = _mm_castpd_ps(_mm_load_sd(ptr));
            let v = _mm_add_ps(v, _mm_mul_ps(_mm_set1_ps(e.weight), x));
            _mm_store_sd(ptr, _mm_castps_pd(v));
        }
    }
}

/// Slice of 2 values per pixel: lane-wise `acc += (w·v)·α`, then `acc·post`.
#[cfg(target_arch = "x86_64")]
unsafe fn slice2<const D: usize>(
    entries: &[Entry],
    values: &[f32],
    alpha: f32,
    post: Option<&[f32]>,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let n = out.len() / 2;
    assert!(entries.len() >= n * (D + 1));
    let vp = values.as_ptr() as *const f64;
    let a = _mm_set1_ps(alpha);
    for i in 0..n {
        let mut acc = _mm_setzero_ps();
        for e in entries.get_unchecked(i * (D + 1)..(i + 1) * (D + 1)) {
            debug_assert!((e.offset as usize) < values.len() / 2);
            // SAFETY: as in splat2.
            let v = _mm_castpd_ps(_mm_load_sd(vp.add(e.offset as usize)));
            acc = _mm_add_ps(acc, _mm_mul_ps(_mm_mul_ps(_mm_set1_ps(e.weight), v), a));
        }
        if let Some(p) = post {
            acc = _mm_mul_ps(acc, _mm_set1_ps(p[i]));
        }
        _mm_store_sd(out.as_mut_ptr().add(2 * i) as *mut f64, _mm_castps_pd(acc));
    }
}

fn as_chunks<const VS: usize>(s: &[f32]) -> &[[f32; VS]] {
    let (chunks, rest) = s.as_chunks::<VS>();
    debug_assert!(rest.is_empty());
    chunks
}

fn as_chunks_mut<const VS: usize>(s: &mut [f32]) -> &mut [[f32; VS]] {
    let (chunks, rest) = s.as_chunks_mut::<VS>();
    debug_assert!(rest.is_empty());
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barycentric_weights_sum_to_one_and_vertices_are_shared() {
        // A 6×5 grid, sxy = 1.5: weights of each point sum to 1, and neighbouring points share vertices.
        let (w, h) = (6usize, 5usize);
        let f: Vec<f32> = (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| [x as f32 / 1.5, y as f32 / 1.5]))
            .collect();
        let lat = Lattice::new(&f, 2, LatticeOptions::default()).unwrap();
        for ws in lat.entries.chunks_exact(3) {
            let s: f32 = ws.iter().map(|e| e.weight).sum();
            assert!((s - 1.0).abs() < 1e-5, "weights {ws:?}");
        }
        assert!(lat.num_vertices() < w * h * 3);
        assert!(lat
            .entries
            .iter()
            .all(|e| e.offset >= 1 && (e.offset as usize) <= lat.num_vertices()));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sse_embedding_matches_the_scalar_one() {
        let elev = Elevation::<5>::new();
        let mut e = Embedding {
            rem0: [0.0; 17],
            rank: [0; 17],
            bary: [0.0; 18],
        };
        let mut e4 = Embedding4 {
            rem0: [[0.0; 4]; 17],
            rank: [[0.0; 4]; 17],
            bary: [[0.0; 4]; 17],
            rem0_i: [[0; 4]; 17],
            rank_i: [[0; 4]; 17],
        };
        let mut seed = 12345u64;
        for _ in 0..2000 {
            let mut f4 = [[0f32; 4]; MAX_FEATURE_DIM];
            for j in 0..5 {
                for l in 0..4 {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    f4[j][l] = ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 60.0;
                }
            }
            elev.embed4(&f4, &mut e4);
            for l in 0..4 {
                let f: Vec<f32> = (0..5).map(|j| f4[j][l]).collect();
                elev.embed(&f, &mut e);
                for i in 0..=5 {
                    assert_eq!(e.rem0[i], e4.rem0[i][l] + 0.0, "rem0");
                    assert_eq!(e.rank[i], e4.rank[i][l] as i32, "rank");
                    assert_eq!(e.rank[i], e4.rank_i[i][l], "integer rank");
                    assert_eq!(e.rem0[i] as i32, e4.rem0_i[i][l], "integer rem0");
                    assert_eq!(e.bary[i].to_bits(), e4.bary[i][l].to_bits(), "bary");
                }
            }
        }
    }

    fn filtered(l: &Lattice, n: usize) -> Vec<f32> {
        let input: Vec<f32> = (0..2 * n)
            .map(|i| ((i * 37) % 101) as f32 / 101.0)
            .collect();
        let mut out = vec![0f32; 2 * n];
        l.compute(&mut out, &input, 2, false, &mut LatticeScratch::default());
        out
    }

    #[test]
    fn narrow_keys_match_wide_keys_and_fall_back_when_they_do_not_fit() {
        let n = 403;
        let mut seed = 7u64;
        let mut feats = |scale: f32| -> Vec<f32> {
            (0..n * 5)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 40) as f32 / (1u64 << 24) as f32 * scale
                })
                .collect()
        };
        let f = feats(40.0);
        let narrow = build::<5, Key12>(&f, LatticeOptions::default()).expect("fits 12-bit lanes");
        let wide = build::<5, u128>(&f, LatticeOptions::default()).unwrap();
        assert_eq!(narrow.num_vertices(), wide.num_vertices());
        assert_eq!(filtered(&narrow, n), filtered(&wide, n));
        // Features up to 2000 (e.g. srgb = 0.1) overflow 12-bit lanes: Lattice::new uses 16-bit ones.
        let f = feats(2000.0);
        assert!(build::<5, Key12>(&f, LatticeOptions::default()).is_none());
        let l = Lattice::new(&f, 5, LatticeOptions::default()).unwrap();
        let wide = build::<5, u128>(&f, LatticeOptions::default()).unwrap();
        assert_eq!(filtered(&l, n), filtered(&wide, n));
    }

    #[test]
    fn features_beyond_16_bit_lattice_coordinates_are_refused() {
        let f = [0.0f32, 0.0, 1e6, 1e6];
        let e = Lattice::new(&f, 2, LatticeOptions::default()).unwrap_err();
        assert!(matches!(e, CrfError::FeatureRange), "{e}");
        assert!(e.to_string().contains("too large"), "{e}");
    }

    #[test]
    fn filter_of_constant_is_smooth_and_positive() {
        let (w, h) = (8usize, 8usize);
        let f: Vec<f32> = (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| [x as f32 / 2.0, y as f32 / 2.0]))
            .collect();
        let lat = Lattice::new(&f, 2, LatticeOptions::default()).unwrap();
        let ones = vec![1f32; w * h];
        let mut out = vec![0f32; w * h];
        lat.compute(&mut out, &ones, 1, false, &mut LatticeScratch::default());
        // Centre pixels see more mass than corners.
        assert!(out.iter().all(|&v| v > 0.0));
        assert!(out[3 * w + 3] > out[0]);
    }

    #[test]
    fn padding_adds_zero_feature_vertices_only_when_n_is_not_a_multiple_of_4() {
        let f: Vec<f32> = (0..5).flat_map(|i| [10.0 + i as f32, 7.0]).collect();
        let with = Lattice::new(
            &f,
            2,
            LatticeOptions {
                sse_block_padding: true,
            },
        )
        .unwrap();
        let without = Lattice::new(
            &f,
            2,
            LatticeOptions {
                sse_block_padding: false,
            },
        )
        .unwrap();
        assert!(with.num_vertices() > without.num_vertices());
        let f4 = &f[..8];
        let a = Lattice::new(
            f4,
            2,
            LatticeOptions {
                sse_block_padding: true,
            },
        )
        .unwrap();
        let b = Lattice::new(
            f4,
            2,
            LatticeOptions {
                sse_block_padding: false,
            },
        )
        .unwrap();
        assert_eq!(a.num_vertices(), b.num_vertices());
    }
}
