//! Suite files: TOML read into typed structs with `deny_unknown_fields`. A suite may `include` a base file
//! (path relative to itself); tables merge key by key, the including file winning. Errors name the file
//! and the key path.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::synth::SynthConfig;
use crate::eval::linear::LinearEvalConfig;
use crate::localize::CamConfig;
use crate::model::ModelConfig;
use crate::train::TrainConfig;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteConfig {
    pub name: String,
    /// Bumped whenever a change makes old goldens meaningless.
    pub version: u32,
    #[serde(default)]
    pub description: String,
    pub seed: u64,
    /// Golden file, relative to the suite file.
    #[serde(default)]
    pub golden: Option<String>,
    pub data: SynthConfig,
    pub sizes: Sizes,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub localize: LocalizeConfig,
    #[serde(default)]
    pub retrain: RetrainConfig,
    #[serde(default)]
    pub eval: EvalConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sizes {
    pub train_scenes: usize,
    pub test_scenes: usize,
    pub crops_train: usize,
    pub crops_val: usize,
    pub crops_test: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalizeConfig {
    /// ContraCAM settings for the masks evaluated against ground truth.
    pub masks: CamConfig,
    /// ContraCAM settings for the boxes used by object-aware random crop.
    pub boxes: CamConfig,
    /// Images per ContraCAM batch (the negatives); the official code uses 256.
    pub batch_size: usize,
    /// A CAM pixel is foreground above this value (masks and boxes).
    pub threshold: f64,
    /// Boxes: components whose box covers more than this fraction of the image are kept.
    #[serde(default = "default_min_area")]
    pub min_area_frac: f64,
    /// Boxes: expansion per side, as a fraction of the box size.
    #[serde(default = "default_margin")]
    pub margin: f64,
}

fn default_min_area() -> f64 {
    0.01
}
fn default_margin() -> f64 {
    0.2
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrainConfig {
    /// Retrain from scratch with object-aware random crop from the ContraCAM boxes.
    pub oa_crop: bool,
}

impl Default for RetrainConfig {
    fn default() -> Self {
        Self { oa_crop: true }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Input side for evaluation (default: the training view size).
    #[serde(default)]
    pub input_size: Option<i64>,
    #[serde(default)]
    pub linear: LinearEvalConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read suite file {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}: invalid TOML: {msg}")]
    Toml { path: PathBuf, msg: String },
    #[error("{path}: key '{key}': {msg}")]
    Field {
        path: PathBuf,
        key: String,
        msg: String,
    },
    #[error("{path}: include cycle through {include}")]
    Cycle { path: PathBuf, include: PathBuf },
}

/// A resolved suite and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedSuite {
    pub config: SuiteConfig,
    pub path: PathBuf,
    /// The merged TOML, as resolved (recorded in results).
    pub resolved: toml::Table,
}

impl LoadedSuite {
    pub fn golden_path(&self) -> Option<PathBuf> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        self.config.golden.as_ref().map(|g| dir.join(g))
    }
}

pub fn load(path: &Path) -> Result<LoadedSuite, ConfigError> {
    let table = load_table(path, &mut Vec::new())?;
    let de = toml::Value::Table(table.clone());
    let config: SuiteConfig =
        serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Field {
            path: path.into(),
            key: e.path().to_string(),
            msg: e.inner().to_string(),
        })?;
    let v = |key: &str, msg: String| ConfigError::Field {
        path: path.into(),
        key: key.into(),
        msg,
    };
    // Checked before any work: the name becomes a directory under --runs-dir, and an empty set fails
    // only after training otherwise.
    if !is_safe_name(&config.name) {
        return Err(v(
            "name",
            format!(
                "{:?} {SAFE_NAME_RULE} (it names the suite's folder in the runs dir)",
                config.name
            ),
        ));
    }
    let s = &config.sizes;
    for (key, n) in [
        ("sizes.train_scenes", s.train_scenes),
        ("sizes.test_scenes", s.test_scenes),
        ("sizes.crops_train", s.crops_train),
        ("sizes.crops_val", s.crops_val),
        ("sizes.crops_test", s.crops_test),
    ] {
        if n == 0 {
            return Err(v(key, "must be at least 1".into()));
        }
    }
    config
        .data
        .validate()
        .map_err(|e| v("data", e.to_string()))?;
    // The synthetic sets are generated in memory before any stage runs: refuse sizes that cannot fit now,
    // not after minutes of generation. The error names the key that asks for the most.
    let d = &config.data;
    let crops = s
        .crops_train
        .saturating_add(s.crops_val)
        .saturating_add(s.crops_test);
    let parts = [
        ("sizes.train_scenes", d.train_tensor_bytes(s.train_scenes)),
        (
            "sizes.test_scenes",
            d.set_bytes(d.image_size, s.test_scenes),
        ),
        ("sizes.crops_*", d.set_bytes(d.crop_size, crops)),
    ];
    let needed = parts.iter().fold(0u64, |a, (_, b)| a.saturating_add(*b));
    let largest = parts
        .iter()
        .max_by_key(|(_, b)| *b)
        .map_or("sizes", |(k, _)| k);
    crate::util::memory::ensure_fits_with_hint(
        needed,
        &format!(
            "the synthetic data ({} training scenes, {} test scenes, {crops} crops)",
            s.train_scenes, s.test_scenes
        ),
        "; lower the [sizes] values",
    )
    .map_err(|e| v(largest, e.to_string()))?;
    if config.localize.batch_size < 2 {
        return Err(v(
            "localize.batch_size",
            "must be at least 2 (the other images are the negatives)".into(),
        ));
    }
    if !(0.0..1.0).contains(&config.localize.threshold) {
        return Err(v("localize.threshold", "must be in [0, 1)".into()));
    }
    Ok(LoadedSuite {
        config,
        path: path.into(),
        resolved: table,
    })
}

fn load_table(path: &Path, stack: &mut Vec<PathBuf>) -> Result<toml::Table, ConfigError> {
    let canon = path.canonicalize().map_err(|err| ConfigError::Io {
        path: path.into(),
        err,
    })?;
    if stack.contains(&canon) {
        return Err(ConfigError::Cycle {
            path: stack.last().cloned().unwrap_or_default(),
            include: path.into(),
        });
    }
    stack.push(canon);
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Io {
        path: path.into(),
        err,
    })?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Toml {
        path: path.into(),
        msg: e.to_string(),
    })?;
    let merged = match table.remove("include") {
        Some(toml::Value::String(inc)) => {
            let base_path = path.parent().unwrap_or(Path::new(".")).join(inc);
            let mut base = load_table(&base_path, stack)?;
            merge(&mut base, table);
            base
        }
        Some(other) => {
            return Err(ConfigError::Field {
                path: path.into(),
                key: "include".into(),
                msg: format!("expected a path string, got {}", other.type_str()),
            })
        }
        None => table,
    };
    stack.pop();
    Ok(merged)
}

/// Deep merge: tables merge recursively, any other value in `over` replaces the base's.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// What suite, stage, dataset and split names may contain: they become directory names in the runs dir.
pub const SAFE_NAME_RULE: &str =
    "must be 1–64 characters of a-z, A-Z, 0-9, '_' or '-', starting with a letter or digit";

/// Whether `s` is a safe name (see [`SAFE_NAME_RULE`]): no path separators, dots or empty names, so a
/// stage directory can never leave the runs dir.
pub fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
}
