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

/// A lattice built from N feature vectors of dimension d.
#[derive(Debug, Clone)]
pub struct Lattice {
    d: usize,
    n: usize,
    /// Per pixel and remainder r = 0..=d: vertex index + 1 (slot 0 is the always-zero "missing" vertex).
    offsets: Vec<u32>,
    /// Barycentric weight for the same (pixel, remainder).
    weights: Vec<f32>,
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

/// A packed lattice key: d coordinates of 16 bits each (pydensecrf stores them as `short`).
type Key = [u64; MAX_FEATURE_DIM / 4];

fn pack(coords: &[i16]) -> Key {
    let mut k = [0u64; MAX_FEATURE_DIM / 4];
    for (i, &c) in coords.iter().enumerate() {
        k[i / 4] |= (c as u16 as u64) << (16 * (i % 4));
    }
    k
}

#[inline]
fn hash_key(k: &Key) -> u64 {
    let mut h = k[0].wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for &w in &k[1..] {
        h = (h.rotate_left(29) ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    h ^ (h >> 31)
}

/// Open-addressing hash table from lattice keys to vertex indices (insertion order).
struct VertexTable {
    slots: Vec<u32>,
    keys: Vec<Key>,
    mask: usize,
}

impl VertexTable {
    const EMPTY: u32 = u32::MAX;

    fn with_capacity(n: usize) -> Self {
        let cap = (2 * n.max(8)).next_power_of_two();
        Self {
            slots: vec![Self::EMPTY; cap],
            keys: Vec::with_capacity(n),
            mask: cap - 1,
        }
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn grow(&mut self) {
        let cap = self.slots.len() * 2;
        self.slots = vec![Self::EMPTY; cap];
        self.mask = cap - 1;
        for (idx, k) in self.keys.iter().enumerate() {
            let mut h = hash_key(k) as usize & self.mask;
            while self.slots[h] != Self::EMPTY {
                h = (h + 1) & self.mask;
            }
            self.slots[h] = idx as u32;
        }
    }

    #[inline]
    fn find_or_insert(&mut self, key: Key) -> u32 {
        if 2 * (self.keys.len() + 1) > self.slots.len() {
            self.grow();
        }
        let mut h = hash_key(&key) as usize & self.mask;
        loop {
            let e = self.slots[h];
            if e == Self::EMPTY {
                let idx = self.keys.len() as u32;
                self.keys.push(key);
                self.slots[h] = idx;
                return idx;
            }
            if self.keys[e as usize] == key {
                return e;
            }
            h = (h + 1) & self.mask;
        }
    }

    #[inline]
    fn find(&self, key: &Key) -> Option<u32> {
        let mut h = hash_key(key) as usize & self.mask;
        loop {
            let e = self.slots[h];
            if e == Self::EMPTY {
                return None;
            }
            if self.keys[e as usize] == *key {
                return Some(e);
            }
            h = (h + 1) & self.mask;
        }
    }
}

/// The position of one feature vector in the lattice: enclosing simplex and barycentric weights.
struct Embedding {
    rem0: [f32; MAX_FEATURE_DIM + 1],
    rank: [i32; MAX_FEATURE_DIM + 1],
    bary: [f32; MAX_FEATURE_DIM + 2],
}

/// Constants of the embedding for dimension d, in pydensecrf's precision.
struct Elevation {
    d: usize,
    scale: [f32; MAX_FEATURE_DIM],
    inv_dp1: f32,
    dp1: f32,
}

impl Elevation {
    fn new(d: usize) -> Self {
        // float inv_std_dev = sqrt(2.0/3.0)*(d+1); scale_i = float(1.0/sqrt((i+2)*(i+1)) * inv_std_dev)
        let inv_std_dev = ((2.0f64 / 3.0).sqrt() * (d + 1) as f64) as f32;
        let mut scale = [0f32; MAX_FEATURE_DIM];
        for (i, s) in scale.iter_mut().enumerate().take(d) {
            *s = (1.0 / (((i + 2) * (i + 1)) as f64).sqrt() * inv_std_dev as f64) as f32;
        }
        Self {
            d,
            scale,
            inv_dp1: 1.0f32 / (d + 1) as f32,
            dp1: (d + 1) as f32,
        }
    }

    /// Steps 2–6 of spec §4.5 for one feature vector `f` (length d), SSE semantics.
    #[inline]
    fn embed(&self, f: &[f32], e: &mut Embedding) {
        let d = self.d;
        let mut elevated = [0f32; MAX_FEATURE_DIM + 1];
        let mut sm = 0f32;
        for j in (1..=d).rev() {
            let cf = f[j - 1] * self.scale[j - 1];
            elevated[j] = sm - (j as f32) * cf;
            sm += cf;
        }
        elevated[0] = sm;

        // Nearest remainder-0 point; _mm_round_ps / cvtps_epi32 round half to even.
        let mut sum = 0f32;
        for i in 0..=d {
            let v = (self.inv_dp1 * elevated[i]).round_ties_even();
            e.rem0[i] = v * self.dp1;
            sum += v;
        }

        e.rank[..=d].fill(0);
        for i in 0..d {
            let di = elevated[i] - e.rem0[i];
            for j in i + 1..=d {
                if di < elevated[j] - e.rem0[j] {
                    e.rank[i] += 1;
                } else {
                    e.rank[j] += 1;
                }
            }
        }

        // Bring the point back onto the plane; sum is an integer-valued float.
        let sum = sum as i32;
        let dp1 = d as i32 + 1;
        for i in 0..=d {
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

        e.bary[..d + 2].fill(0.0);
        for i in 0..=d {
            let v = (elevated[i] - e.rem0[i]) * self.inv_dp1;
            let p = (d as i32 - e.rank[i]) as usize;
            e.bary[p] += v;
            e.bary[p + 1] -= v;
        }
        e.bary[0] += 1.0 + e.bary[d + 1];
    }
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
        let n = features.len() / d;
        let dp1 = d + 1;
        let elev = Elevation::new(d);
        // canonical[r][c] = r if c <= d - r else r - (d+1)
        let canonical = |r: usize, c: usize| -> f32 {
            if c <= d - r {
                r as f32
            } else {
                r as f32 - dp1 as f32
            }
        };

        let mut table = VertexTable::with_capacity(n.max(1));
        let mut offsets = vec![0u32; n * dp1];
        let mut weights = vec![0f32; n * dp1];
        let mut emb = Embedding {
            rem0: [0.0; MAX_FEATURE_DIM + 1],
            rank: [0; MAX_FEATURE_DIM + 1],
            bary: [0.0; MAX_FEATURE_DIM + 2],
        };
        // Consecutive pixels often share a simplex: reuse its vertex indices.
        let mut prev_rem0 = [f32::NAN; MAX_FEATURE_DIM];
        let mut prev_rank = [-1i32; MAX_FEATURE_DIM];
        let mut prev_offsets = [0u32; MAX_FEATURE_DIM + 1];
        let mut coords = [0i16; MAX_FEATURE_DIM];
        let padded = if opts.sse_block_padding {
            n.div_ceil(4) * 4
        } else {
            n
        };
        let zero = [0f32; MAX_FEATURE_DIM];
        for k in 0..padded {
            let f = if k < n {
                &features[k * d..(k + 1) * d]
            } else {
                &zero[..d]
            };
            elev.embed(f, &mut emb);
            let same = emb.rem0[..d] == prev_rem0[..d] && emb.rank[..d] == prev_rank[..d];
            if !same {
                for r in 0..=d {
                    for i in 0..d {
                        // short(float(rem0) + canonical), as pydensecrf
                        coords[i] = (emb.rem0[i] + canonical(r, emb.rank[i] as usize)) as i16;
                    }
                    prev_offsets[r] = table.find_or_insert(pack(&coords[..d])) + 1;
                }
                prev_rem0[..d].copy_from_slice(&emb.rem0[..d]);
                prev_rank[..d].copy_from_slice(&emb.rank[..d]);
            }
            if k < n {
                offsets[k * dp1..(k + 1) * dp1].copy_from_slice(&prev_offsets[..dp1]);
                weights[k * dp1..(k + 1) * dp1].copy_from_slice(&emb.bary[..dp1]);
            }
        }

        let m = table.len();
        let mut neighbors = vec![[0u32; 2]; dp1 * m];
        let mut n1 = [0i16; MAX_FEATURE_DIM];
        let mut n2 = [0i16; MAX_FEATURE_DIM];
        for j in 0..=d {
            for i in 0..m {
                let key = &table.keys[i];
                for c in 0..d {
                    let kc = (key[c / 4] >> (16 * (c % 4))) as u16 as i16;
                    n1[c] = kc.wrapping_sub(1);
                    n2[c] = kc.wrapping_add(1);
                    if c == j {
                        n1[c] = kc.wrapping_add(d as i16);
                        n2[c] = kc.wrapping_sub(d as i16);
                    }
                }
                let a = table.find(&pack(&n1[..d])).map_or(0, |e| e + 1);
                let b = table.find(&pack(&n2[..d])).map_or(0, |e| e + 1);
                neighbors[j * m + i] = [a, b];
            }
        }
        Ok(Self {
            d,
            n,
            offsets,
            weights,
            m,
            neighbors,
        })
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
        assert_eq!(input.len(), self.n * vs, "lattice input length");
        assert_eq!(out.len(), self.n * vs, "lattice output length");
        match vs {
            1 => self.compute_scalar::<1>(out, input, reverse, scratch),
            2 => self.compute_scalar::<2>(out, input, reverse, scratch),
            _ => self.compute_sse(out, input, vs, reverse, scratch),
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

    /// `seqCompute`: blur in double (`old + 0.5*(n1+n2)` with a double literal), slice `(w*v)*α`.
    fn compute_scalar<const VS: usize>(
        &self,
        out: &mut [f32],
        input: &[f32],
        reverse: bool,
        scratch: &mut LatticeScratch,
    ) {
        let dp1 = self.d + 1;
        self.prepare((self.m + 1) * VS, scratch);
        {
            let values = &mut scratch.values;
            for ((x, offs), ws) in input
                .chunks_exact(VS)
                .zip(self.offsets.chunks_exact(dp1))
                .zip(self.weights.chunks_exact(dp1))
            {
                for (&o, &w) in offs.iter().zip(ws) {
                    let slot = &mut values[o as usize * VS..o as usize * VS + VS];
                    for k in 0..VS {
                        slot[k] += w * x[k];
                    }
                }
            }
        }
        for j in self.axes(reverse) {
            let nb = &self.neighbors[j * self.m..(j + 1) * self.m];
            let (old, new) = (&scratch.values, &mut scratch.new_values);
            for (i, &[a, b]) in nb.iter().enumerate() {
                let (a, b, c) = (a as usize * VS, b as usize * VS, (i + 1) * VS);
                for k in 0..VS {
                    let s = old[a + k] + old[b + k];
                    new[c + k] = (old[c + k] as f64 + 0.5 * s as f64) as f32;
                }
            }
            std::mem::swap(&mut scratch.values, &mut scratch.new_values);
        }
        let alpha = self.alpha();
        let values = &scratch.values;
        for ((y, offs), ws) in out
            .chunks_exact_mut(VS)
            .zip(self.offsets.chunks_exact(dp1))
            .zip(self.weights.chunks_exact(dp1))
        {
            let mut acc = [0f32; VS];
            for (&o, &w) in offs.iter().zip(ws) {
                let v = &values[o as usize * VS..o as usize * VS + VS];
                for k in 0..VS {
                    acc[k] += w * v[k] * alpha;
                }
            }
            y.copy_from_slice(&acc);
        }
    }

    /// `sseCompute`: blur in float, slice `(w*α)*v`.
    fn compute_sse(
        &self,
        out: &mut [f32],
        input: &[f32],
        vs: usize,
        reverse: bool,
        scratch: &mut LatticeScratch,
    ) {
        let dp1 = self.d + 1;
        self.prepare((self.m + 1) * vs, scratch);
        {
            let values = &mut scratch.values;
            for ((x, offs), ws) in input
                .chunks_exact(vs)
                .zip(self.offsets.chunks_exact(dp1))
                .zip(self.weights.chunks_exact(dp1))
            {
                for (&o, &w) in offs.iter().zip(ws) {
                    let slot = &mut values[o as usize * vs..o as usize * vs + vs];
                    for (s, &xk) in slot.iter_mut().zip(x) {
                        *s += w * xk;
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
        for ((y, offs), ws) in out
            .chunks_exact_mut(vs)
            .zip(self.offsets.chunks_exact(dp1))
            .zip(self.weights.chunks_exact(dp1))
        {
            y.fill(0.0);
            for (&o, &w) in offs.iter().zip(ws) {
                let wa = w * alpha;
                let v = &values[o as usize * vs..o as usize * vs + vs];
                for (acc, &vk) in y.iter_mut().zip(v) {
                    *acc += wa * vk;
                }
            }
        }
    }
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
        for ws in lat.weights.chunks_exact(3) {
            let s: f32 = ws.iter().sum();
            assert!((s - 1.0).abs() < 1e-5, "weights {ws:?}");
        }
        assert!(lat.num_vertices() < w * h * 3);
        assert!(lat
            .offsets
            .iter()
            .all(|&o| o >= 1 && (o as usize) <= lat.num_vertices()));
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
