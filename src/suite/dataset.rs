//! Datasets a suite declares: generated synthetic scenes (`source = "synth"`, with the generator's parameters)
//! or a split of a built dataset (`source = "index"`, read from `<data-dir>/<name>/index/<split>.jsonl`).
//! A [`DatasetHandle`] is what a stage receives: the spec, a fingerprint, and the data on demand (generated
//! once per run and shared by every stage and seed).
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::index::SplitIndex;
use crate::data::synth::{self, BgVariant, SynthConfig, SynthSet};

/// Which synthetic set to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SynthForm {
    /// Multi-object scenes with instance masks and boxes.
    Scenes,
    /// Single-object crops (COCO-Crop style) labelled by the object's class, for linear evaluation.
    Crops,
    /// Background-Challenge variants of single objects (all six, the same objects in each).
    BgChallenge,
}

/// `source = "synth"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthDataset {
    pub form: SynthForm,
    /// Split name: samples are generated from (seed, split, index), so different names never overlap.
    pub split: String,
    /// Number of samples (per variant for the Background Challenge).
    pub count: usize,
    /// The data seed. A graph suite that leaves it out gets the run seed here (each seed of a run generates
    /// its own data); one that sets it fixes the data across seeds.
    #[serde(default)]
    pub seed: u64,
    /// Generator parameters; the suite's top-level `[synth]` table is merged under each dataset's.
    #[serde(default)]
    pub synth: SynthConfig,
}

/// `source = "index"`: a split written by `contracam data build`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexDataset {
    /// Dataset name (`datasets/<name>/`, built into `<data-dir>/<name>/`).
    pub name: String,
    pub split: String,
    /// Only the first `limit` samples of the split, in index order (reduced profiles): the fingerprint
    /// covers the header and those samples only, and every stage sees only them. Left out of the canonical
    /// spec when unset, so fingerprints of full splits are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "kebab-case")]
pub enum DatasetSpec {
    Synth(SynthDataset),
    Index(IndexDataset),
}

/// The largest synthetic set a suite may ask for (memory: 1024² px × 3 bytes × this would not fit).
pub const MAX_SYNTH_PIXELS: u64 = 4 << 30;

impl DatasetSpec {
    /// Domain checks; the error's key is relative to the dataset's table.
    pub fn validate(&self) -> Result<(), super::stage::ParamError> {
        use super::stage::ParamError;
        match self {
            DatasetSpec::Synth(s) => {
                s.synth
                    .validate()
                    .map_err(|e| ParamError::new("synth", e.to_string()))?;
                if s.count == 0 {
                    return Err(ParamError::new("count", "must be at least 1"));
                }
                let side = match s.form {
                    SynthForm::Crops => s.synth.crop_size,
                    _ => s.synth.image_size,
                } as u64;
                let variants = if s.form == SynthForm::BgChallenge {
                    BgVariant::ALL.len() as u64
                } else {
                    1
                };
                let bytes = (s.count as u64)
                    .saturating_mul(side * side * 4)
                    .saturating_mul(variants);
                if bytes > MAX_SYNTH_PIXELS {
                    return Err(ParamError::new(
                        "count",
                        format!(
                            "{} samples of {side}×{side} px need about {} MiB in memory (limit {} MiB)",
                            s.count,
                            bytes >> 20,
                            MAX_SYNTH_PIXELS >> 20
                        ),
                    ));
                }
                if !super::config::is_safe_name(&s.split) {
                    return Err(ParamError::new("split", super::config::SAFE_NAME_RULE));
                }
                Ok(())
            }
            DatasetSpec::Index(i) => {
                if !super::config::is_safe_name(&i.name) {
                    return Err(ParamError::new("name", super::config::SAFE_NAME_RULE));
                }
                if !super::config::is_safe_name(&i.split) {
                    return Err(ParamError::new("split", super::config::SAFE_NAME_RULE));
                }
                if i.limit == Some(0) {
                    return Err(ParamError::new("limit", "must be at least 1 where given"));
                }
                Ok(())
            }
        }
    }

    /// Number of samples when known without reading anything.
    pub fn declared_len(&self) -> Option<usize> {
        match self {
            DatasetSpec::Synth(s) => Some(s.count),
            DatasetSpec::Index(_) => None,
        }
    }
}

/// The bytes of an index file a fingerprint covers: all of them, or with `limit` the header line and the
/// first `limit` sample lines (so samples past the limit can change without invalidating a reduced run).
fn fingerprinted_index_bytes(bytes: &[u8], limit: Option<usize>) -> &[u8] {
    let Some(n) = limit else { return bytes };
    let mut lines = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            lines += 1;
            if lines == n + 1 {
                return &bytes[..=i];
            }
        }
    }
    bytes
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("dataset '{name}': {msg}")]
    Invalid { name: String, msg: String },
    #[error("dataset '{name}': {path} is not built; run `contracam data build {dataset}` (with --data-dir {data_dir})")]
    NotBuilt {
        name: String,
        dataset: String,
        path: PathBuf,
        data_dir: PathBuf,
    },
    #[error("dataset '{name}': {source}")]
    Data {
        name: String,
        #[source]
        source: Box<crate::data::DataError>,
    },
}

/// A dataset bound to a stage input.
#[derive(Debug)]
pub struct DatasetHandle {
    /// The name it has in the suite.
    pub name: String,
    pub spec: DatasetSpec,
    /// sha256 of the canonical spec (synth) or of the spec and the index file's bytes (index).
    pub fingerprint: String,
    pub data_dir: PathBuf,
    synth: OnceLock<Arc<SynthSet>>,
    bg: OnceLock<Arc<Vec<(BgVariant, SynthSet)>>>,
}

impl DatasetHandle {
    /// Resolves a spec: for an index dataset the index file must exist (its bytes are fingerprinted).
    pub fn resolve(name: &str, spec: DatasetSpec, data_dir: &Path) -> Result<Self, DatasetError> {
        let canon = serde_json::to_string(&spec).map_err(|e| DatasetError::Invalid {
            name: name.into(),
            msg: e.to_string(),
        })?;
        let mut h = Sha256::new();
        h.update(b"contracam-dataset-v1\0");
        h.update(canon.as_bytes());
        if let DatasetSpec::Index(i) = &spec {
            let path = index_path(data_dir, i);
            let bytes = std::fs::read(&path).map_err(|_| DatasetError::NotBuilt {
                name: name.into(),
                dataset: i.name.clone(),
                path: path.clone(),
                data_dir: data_dir.into(),
            })?;
            h.update(b"\0index\0");
            h.update(fingerprinted_index_bytes(&bytes, i.limit));
        }
        Ok(DatasetHandle {
            name: name.into(),
            spec,
            fingerprint: hex::encode(h.finalize()),
            data_dir: data_dir.into(),
            synth: OnceLock::new(),
            bg: OnceLock::new(),
        })
    }

    /// Whether the data behind the spec is there (always for synthetic data).
    pub fn is_built(spec: &DatasetSpec, data_dir: &Path) -> bool {
        match spec {
            DatasetSpec::Synth(_) => true,
            DatasetSpec::Index(i) => index_path(data_dir, i).is_file(),
        }
    }

    /// Number of samples (per variant for the Background Challenge).
    pub fn len(&self) -> Result<usize, DatasetError> {
        match &self.spec {
            DatasetSpec::Synth(s) => Ok(s.count),
            DatasetSpec::Index(_) => Ok(self.index()?.samples.len()),
        }
    }

    pub fn is_empty(&self) -> Result<bool, DatasetError> {
        self.len().map(|n| n == 0)
    }

    /// The synthetic scenes or crops (generated on first use, then shared).
    pub fn synth(&self) -> Result<Arc<SynthSet>, DatasetError> {
        let s = match &self.spec {
            DatasetSpec::Synth(s) if s.form != SynthForm::BgChallenge => s,
            _ => return Err(self.wrong("synthetic scenes or crops")),
        };
        Ok(self
            .synth
            .get_or_init(|| {
                Arc::new(match s.form {
                    SynthForm::Scenes => synth::scenes(&s.synth, s.seed, &s.split, s.count),
                    _ => synth::crops(&s.synth, s.seed, &s.split, s.count),
                })
            })
            .clone())
    }

    /// Every Background-Challenge variant of a synthetic `bg-challenge` dataset.
    pub fn bg_challenge(&self) -> Result<Arc<Vec<(BgVariant, SynthSet)>>, DatasetError> {
        let s = match &self.spec {
            DatasetSpec::Synth(s) if s.form == SynthForm::BgChallenge => s,
            _ => return Err(self.wrong("a synthetic bg-challenge set")),
        };
        Ok(self
            .bg
            .get_or_init(|| {
                Arc::new(
                    BgVariant::ALL
                        .iter()
                        .map(|&v| (v, synth::bg_challenge(&s.synth, s.seed, v, s.count)))
                        .collect(),
                )
            })
            .clone())
    }

    /// The synthetic generator's parameters, when synthetic.
    pub fn synth_config(&self) -> Option<&SynthConfig> {
        match &self.spec {
            DatasetSpec::Synth(s) => Some(&s.synth),
            DatasetSpec::Index(_) => None,
        }
    }

    /// The sample index of an index dataset (read on each call; loaders stream it).
    pub fn index(&self) -> Result<SplitIndex, DatasetError> {
        let i = match &self.spec {
            DatasetSpec::Index(i) => i,
            DatasetSpec::Synth(_) => return Err(self.wrong("a built dataset (source = \"index\")")),
        };
        let mut index = SplitIndex::read(&index_path(&self.data_dir, i)).map_err(|source| {
            DatasetError::Data {
                name: self.name.clone(),
                source: Box::new(source),
            }
        })?;
        if let Some(n) = i.limit {
            index.samples.truncate(n);
            index.header.count = index.samples.len();
        }
        Ok(index)
    }

    /// `<data-dir>/<name>/` of an index dataset (sample paths are relative to it).
    pub fn root(&self) -> Option<PathBuf> {
        match &self.spec {
            DatasetSpec::Index(i) => Some(self.data_dir.join(&i.name)),
            DatasetSpec::Synth(_) => None,
        }
    }

    fn wrong(&self, want: &str) -> DatasetError {
        let have = match &self.spec {
            DatasetSpec::Synth(s) => format!("synthetic {:?}", s.form).to_lowercase(),
            DatasetSpec::Index(i) => format!("index {}:{}", i.name, i.split),
        };
        DatasetError::Invalid {
            name: self.name.clone(),
            msg: format!("is {have}; this stage needs {want}"),
        }
    }
}

/// `<data-dir>/<name>/index/<split>.jsonl`.
pub fn index_path(data_dir: &Path, i: &IndexDataset) -> PathBuf {
    data_dir
        .join(&i.name)
        .join("index")
        .join(format!("{}.jsonl", i.split))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synth_spec(count: usize) -> DatasetSpec {
        DatasetSpec::Synth(SynthDataset {
            form: SynthForm::Scenes,
            split: "train".into(),
            count,
            seed: 0,
            synth: SynthConfig {
                image_size: 16,
                // Crops are cut from the images, so they are no larger.
                crop_size: 16,
                ..Default::default()
            },
        })
    }

    #[test]
    fn synth_fingerprint_follows_the_spec_and_data_is_generated_once() {
        let d = Path::new("/nonexistent");
        let a = DatasetHandle::resolve("a", synth_spec(4), d).unwrap();
        let b = DatasetHandle::resolve("b", synth_spec(4), d).unwrap();
        let c = DatasetHandle::resolve("a", synth_spec(5), d).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint, "the suite name is not data");
        assert_ne!(a.fingerprint, c.fingerprint);
        let s1 = a.synth().unwrap();
        let s2 = a.synth().unwrap();
        assert!(Arc::ptr_eq(&s1, &s2));
        assert_eq!(s1.len(), 4);
        assert!(a.index().is_err() && a.bg_challenge().is_err());
    }

    #[test]
    fn unbuilt_index_names_the_file_and_the_command() {
        let spec = DatasetSpec::Index(IndexDataset {
            name: "cub".into(),
            split: "test".into(),
            limit: None,
        });
        let err = DatasetHandle::resolve("birds", spec, Path::new("/tmp/nodata"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/tmp/nodata/cub/index/test.jsonl")
                && err.contains("contracam data build cub"),
            "{err}"
        );
    }

    #[test]
    fn limit_keeps_the_first_samples_and_fingerprints_only_them() {
        let dir = tempfile::tempdir().unwrap();
        let sample = |i: usize| crate::data::index::Sample {
            path: format!("images/{i}.jpg"),
            labels: vec![0],
            width: 8,
            height: 8,
            ..Default::default()
        };
        let write = |n: usize| {
            let idx = SplitIndex::new(
                "toy",
                "test",
                vec!["a".into()],
                "class",
                (0..n).map(sample).collect(),
            );
            idx.write(&dir.path().join("toy/index")).unwrap();
        };
        let spec = |limit| {
            DatasetSpec::Index(IndexDataset {
                name: "toy".into(),
                split: "test".into(),
                limit,
            })
        };
        write(5);
        let full = DatasetHandle::resolve("d", spec(None), dir.path()).unwrap();
        let two = DatasetHandle::resolve("d", spec(Some(2)), dir.path()).unwrap();
        assert_eq!(full.len().unwrap(), 5);
        assert_eq!(two.len().unwrap(), 2);
        let idx = two.index().unwrap();
        assert_eq!(idx.header.count, 2);
        assert_eq!(idx.samples[1].path, "images/1.jpg", "index order");
        assert_ne!(full.fingerprint, two.fingerprint);
        // Samples past the limit are not part of the reduced dataset; the header (count) is.
        write(6);
        let two_b = DatasetHandle::resolve("d", spec(Some(2)), dir.path()).unwrap();
        let full_b = DatasetHandle::resolve("d", spec(None), dir.path()).unwrap();
        assert_ne!(full.fingerprint, full_b.fingerprint);
        assert_ne!(
            two.fingerprint, two_b.fingerprint,
            "the header's count changed"
        );
        assert_eq!(spec(Some(0)).validate().unwrap_err().key, "limit");
        // No limit: the canonical spec (and so every existing fingerprint) is as before.
        assert!(!serde_json::to_string(&spec(None))
            .unwrap()
            .contains("limit"));
    }

    #[test]
    fn oversized_synth_is_refused_before_generation() {
        let e = synth_spec(1 << 40).validate().unwrap_err();
        assert_eq!(e.key, "count");
        assert!(e.msg.contains("MiB"), "{e}");
    }
}
