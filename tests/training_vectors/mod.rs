//! The training reference vectors (`<reference>/training`) and the checks their README prescribes, shared
//! by the parity tests of the ops and steps and of the mixed steps.
#![allow(dead_code)]
use std::path::PathBuf;

use contracam::data::formats::safetensors::{read_tensors, TensorFile};
use tch::{Kind, Tensor};

pub fn training_dir() -> PathBuf {
    crate::common::reference_dir().join("training")
}

pub fn manifest() -> serde_json::Value {
    let path = training_dir().join("manifest.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&python_json(&text))
        .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// Python's `json.dump` writes non-finite floats as bare `NaN`/`Infinity`; JSON has no such tokens, so
/// they become `null` (only outside strings).
pub fn python_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_str, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_str {
            in_str = escaped || c != '"';
            escaped = !escaped && c == '\\';
        } else if c == '"' {
            in_str = true;
        } else {
            let token = ["-Infinity", "Infinity", "NaN"]
                .into_iter()
                .find(|t| rest.starts_with(t));
            if let Some(t) = token {
                out.push_str("null");
                rest = &rest[t.len()..];
                continue;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// One reference file, with lookups that name the missing key.
pub struct Vectors(pub TensorFile);

impl Vectors {
    pub fn open(name: &str) -> Self {
        let path = training_dir().join(name);
        Self(read_tensors(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())))
    }
    pub fn has(&self, key: &str) -> bool {
        self.0.tensors.contains_key(key)
    }
    pub fn get(&self, key: &str) -> Tensor {
        self.0
            .tensors
            .get(key)
            .unwrap_or_else(|| panic!("{} has no tensor '{key}'", self.0.path.display()))
            .shallow_clone()
    }
    pub fn f32s(&self, key: &str) -> Vec<f32> {
        Vec::<f32>::try_from(self.get(key).to_kind(Kind::Float).flatten(0, -1)).unwrap()
    }
    pub fn i64s(&self, key: &str) -> Vec<i64> {
        Vec::<i64>::try_from(self.get(key).to_kind(Kind::Int64).flatten(0, -1)).unwrap()
    }
    pub fn flags(&self, key: &str) -> Vec<bool> {
        self.i64s(key).into_iter().map(|v| v != 0).collect()
    }
}

/// Fails unless `|got − want| ≤ atol + rtol·|want|` everywhere; returns the largest absolute difference.
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, atol: f64, rtol: f64) -> f64 {
    assert_eq!(got.size(), want.size(), "{what}: shape");
    let (g, w) = (got.to_kind(Kind::Double), want.to_kind(Kind::Double));
    let diff = (&g - &w).abs();
    let excess = &diff - (w.abs() * rtol + atol);
    let worst = excess.max().double_value(&[]);
    let max_abs = diff.max().double_value(&[]);
    eprintln!("{what}: max |Δ| = {max_abs:.3e}");
    assert!(
        worst <= 0.0,
        "{what}: max |Δ| = {max_abs:e} exceeds atol {atol:e} + rtol {rtol:e}·|want|"
    );
    max_abs
}

/// The reference README's deterministic weight generator: splitmix64 over FNV-1a("<seed>/<name>"),
/// 24-bit uniforms in (−1, 1) scaled by the layer's f32 bound.
pub fn dgen(seed: u64, name: &str, numel: usize, bound: f32) -> Vec<f32> {
    let mut seed_p: u64 = 0xcbf29ce484222325;
    for b in format!("{seed}/{name}").bytes() {
        seed_p ^= b as u64;
        seed_p = seed_p.wrapping_mul(0x100000001b3);
    }
    (1..=numel as u64)
        .map(|i| {
            let mut z = seed_p.wrapping_add(i.wrapping_mul(0x9E3779B97F4A7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
            z ^= z >> 31;
            let k = (z >> 40) as i64;
            let u = (2 * k + 1 - (1 << 24)) as f32 * (1.0f32 / (1u32 << 24) as f32);
            u * bound
        })
        .collect()
}

/// `[Σx, Σ|x|, Σx², x[i_0..8]]` in f64 with i_j = ⌊j·(N−1)/7⌋, as the reference fingerprints.
pub fn fingerprint(t: &Tensor) -> Vec<f64> {
    let x = Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap();
    let n = x.len();
    let mut fp = vec![
        x.iter().sum(),
        x.iter().map(|v| v.abs()).sum(),
        x.iter().map(|v| v * v).sum(),
    ];
    fp.extend((0..8).map(|j| x[j * (n - 1) / 7]));
    fp
}

/// The reference README's fingerprint rule for a tensor of N elements under (atol, rtol).
pub fn assert_fp(what: &str, got: &Tensor, want: &Tensor, atol: f64, rtol: f64) {
    let g = fingerprint(got);
    let w = Vec::<f64>::try_from(want.to_kind(Kind::Double)).unwrap();
    let n = got.numel() as f64;
    let bounds = [
        1e-3 * w[1] + n * atol,
        1e-3 * w[1] + n * atol,
        1e-3 * w[2] + 2.0 * atol * (n * w[2]).sqrt() + n * atol * atol,
    ];
    for i in 0..11 {
        let bound = if i < 3 {
            bounds[i]
        } else {
            atol + rtol * w[i].abs()
        };
        assert!(
            (g[i] - w[i]).abs() <= bound,
            "{what}: fingerprint entry {i} = {} vs reference {} (allowed ±{bound:e})",
            g[i],
            w[i]
        );
    }
}

// Tolerances from the reference README §8, which hold against both a 1-thread libtorch rerun and a
// float64 rerun of the official code with ~5× margin. Observed values are printed by `assert_close`.
pub const ACT: (f64, f64) = (1e-5, 1e-4);
pub const GRAD: (f64, f64) = (1e-5, 1e-3);
pub const PARAM: (f64, f64) = (1e-6, 1e-5);
