//! The sample index: the one format every builder writes and everything downstream reads.
//!
//! One JSON Lines file per split, `<data-dir>/<dataset>/index/<split>.jsonl`: the first line is an
//! [`IndexHeader`], each further line one [`Sample`]. Paths are relative to `<data-dir>/<dataset>/`. Labels
//! index `header.classes`, which is sorted or taken from a pinned list, never from directory order. Boxes are
//! `[x0, y0, x1, y1]` in pixels of the original image; when `boxes` and `labels` have the same length, label i
//! belongs to box i (detection), otherwise `labels` are image-level. `mask` is a path whose pixels are read
//! with `header.mask_rule`; an image annotated by several instance masks (OpenImages30k) lists them in
//! `instance_masks` instead (foreground = their union) and may name an `ignore_mask`. Both fields are optional
//! and left out when empty, so files without them are unchanged (still version 1). Full description:
//! `datasets/README.md`.
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{format_err, IoContext, Result};

pub const FORMAT: &str = "contracam-sample-index";
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IndexHeader {
    pub format: String,
    pub version: u32,
    pub dataset: String,
    pub split: String,
    /// Class names; a label is an index into this list.
    pub classes: Vec<String>,
    /// `class` (one label per image), `superclass` (IN-9 labels), or `per-box`.
    pub label_kind: String,
    /// How mask pixels become foreground: `binary` (value > 0), `gray-gt-127`, `flowers-not-blue`
    /// (R≠0 and G≠0 and B≠254), `rgb-all-positive` (IN-9 only_fg), `pets-trimap` (1 = pet, 3 = border), `voc-palette` (index ∉ {0, 255}).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_rule: Option<String>,
    pub count: usize,
    /// How the split was made (pinned file, seed, source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    pub path: String,
    pub labels: Vec<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boxes: Vec<[f64; 4]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
    /// One file per object instance (OpenImages30k); the foreground is their union, each read with
    /// `header.mask_rule`. Used instead of `mask`, sorted by path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_masks: Vec<String>,
    /// Pixels left out of evaluation, read with `header.mask_rule` (OpenImages30k `<id>_ignore.png`;
    /// wsolevaluation ignores the part outside the foreground).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_mask: Option<String>,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SplitIndex {
    pub header: IndexHeader,
    pub samples: Vec<Sample>,
}

impl SplitIndex {
    pub fn new(
        dataset: &str,
        split: &str,
        classes: Vec<String>,
        label_kind: &str,
        samples: Vec<Sample>,
    ) -> Self {
        SplitIndex {
            header: IndexHeader {
                format: FORMAT.into(),
                version: VERSION,
                dataset: dataset.into(),
                split: split.into(),
                classes,
                label_kind: label_kind.into(),
                mask_rule: None,
                count: samples.len(),
                provenance: None,
            },
            samples,
        }
    }

    pub fn with_mask_rule(mut self, rule: &str) -> Self {
        self.header.mask_rule = Some(rule.into());
        self
    }

    pub fn with_provenance(mut self, p: impl Into<String>) -> Self {
        self.header.provenance = Some(p.into());
        self
    }

    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).at(dir)?;
        let path = dir.join(format!("{}.jsonl", self.header.split));
        let f = std::fs::File::create(&path).at(&path)?;
        let mut w = BufWriter::new(f);
        let mut header = self.header.clone();
        header.count = self.samples.len();
        let line = serde_json::to_string(&header).map_err(|e| format_err(&path, e.to_string()))?;
        writeln!(w, "{line}").at(&path)?;
        for s in &self.samples {
            let line = serde_json::to_string(s).map_err(|e| format_err(&path, e.to_string()))?;
            writeln!(w, "{line}").at(&path)?;
        }
        w.flush().at(&path)?;
        Ok(path)
    }

    pub fn read(path: &Path) -> Result<SplitIndex> {
        let f = std::fs::File::open(path).at(path)?;
        let mut lines = BufReader::new(f).lines();
        let first = lines
            .next()
            .ok_or_else(|| format_err(path, "empty index file"))?
            .at(path)?;
        let header: IndexHeader = serde_json::from_str(&first)
            .map_err(|e| format_err(path, format!("line 1 (header): {e}")))?;
        if header.format != FORMAT || header.version != VERSION {
            return Err(format_err(path, format!("not a {FORMAT} v{VERSION} file")));
        }
        // Not preallocated from `count`: it comes from the file, and a forged count must end as the count
        // mismatch below, not as an allocation of `count` samples.
        let mut samples = Vec::new();
        for (i, l) in lines.enumerate() {
            let l = l.at(path)?;
            let s: Sample = serde_json::from_str(&l)
                .map_err(|e| format_err(path, format!("line {}: {e}", i + 2)))?;
            samples.push(s);
        }
        if samples.len() != header.count {
            return Err(format_err(
                path,
                format!(
                    "header says {} samples, file has {}",
                    header.count,
                    samples.len()
                ),
            ));
        }
        Ok(SplitIndex { header, samples })
    }
}

/// Read every split of a built dataset: `<data-dir>/<dataset>/index/*.jsonl`, sorted by split name.
pub fn read_all(index_dir: &Path) -> Result<Vec<SplitIndex>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(index_dir)
        .at(index_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    paths.sort();
    paths.iter().map(|p| SplitIndex::read(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sample {
            path: "a b/c.jpg".into(),
            labels: vec![3],
            boxes: vec![[1.0, 2.0, 3.5, 4.0]],
            mask: Some("m.png".into()),
            width: 10,
            height: 20,
            ..Default::default()
        };
        let multi = Sample {
            path: "val/c/a.jpg".into(),
            labels: vec![0],
            instance_masks: vec!["val/c/a_mc_0.png".into(), "val/c/a_mc_1.png".into()],
            ignore_mask: Some("val/c/a_ignore.png".into()),
            width: 4,
            height: 3,
            ..Default::default()
        };
        let idx = SplitIndex::new("d", "train", vec!["x".into()], "class", vec![s, multi])
            .with_mask_rule("binary");
        let p = idx.write(dir.path()).unwrap();
        assert_eq!(SplitIndex::read(&p).unwrap(), idx);
        // Empty optional fields are left out, so single-mask files look as they did before the fields existed.
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(!lines[1].contains("instance_masks") && !lines[1].contains("ignore_mask"));
        assert!(lines[2].contains(r#""instance_masks":["val/c/a_mc_0.png","val/c/a_mc_1.png"],"ignore_mask":"val/c/a_ignore.png""#));
    }
}
