//! Datasets as random-access sources of samples: a split of a sample index written by `data build`, or the
//! synthetic scenes (generated per (seed, split, index), so on demand). A source knows each sample's
//! metadata without decoding it and decodes its image (and ground-truth mask) on request; it holds no pixels.
use std::path::{Path, PathBuf};

use image::{GrayImage, RgbImage};

use super::decode::decode_rgb;
use super::mask_rule::MaskRule;
use crate::data::error::{DataError, Result};
use crate::data::index::{Sample, SplitIndex};
use crate::data::source::store::DatasetDir;
use crate::data::synth::{self, BgVariant, SynthConfig, SynthItem};

/// What is known about a sample without decoding it.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleMeta {
    /// The id box files and mask folders use for it (see [`IdScheme`]).
    pub id: String,
    /// Indices into [`Source::classes`]; per box when the source's labels are per box.
    pub labels: Vec<i64>,
    /// Boxes normalised by the image size, `[x1, y1, x2, y2]`.
    pub boxes: Vec<[f64; 4]>,
    /// Width and height of the stored image.
    pub size: (u32, u32),
    /// Whether [`Source::mask`] returns a ground-truth mask for it.
    pub has_mask: bool,
}

/// A dataset split the loader can read by index. Implementations are cheap to share between threads.
pub trait Source: Send + Sync {
    /// `dataset:split`, for messages and reports.
    fn name(&self) -> String;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn classes(&self) -> &[String];
    fn meta(&self, i: usize) -> Result<SampleMeta>;
    /// The decoded image (`convert('RGB')`).
    fn image(&self, i: usize) -> Result<RgbImage>;
    /// The ground-truth foreground (255 = foreground) at the image's size, `None` where the sample has none.
    fn mask(&self, i: usize) -> Result<Option<GrayImage>>;
    /// Where sample `i` lives, for error messages: `(file, index file, line)`; `None` for generated samples.
    fn locate(&self, i: usize) -> Option<(PathBuf, PathBuf, usize)>;
}

/// How a sample's id is formed, as the official `get_image_ids` does per dataset class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdScheme {
    /// COCO: `str(image_id)`, the file stem read as an integer (`000000000139.jpg` → `139`).
    CocoImageId,
    /// ImageFolder: the path under the folder root, `<class>/<file>`.
    ImageFolder,
    /// The sample's path in the index (relative to the dataset folder).
    IndexPath,
}

impl IdScheme {
    /// COCO ids where every file stem is a decimal number and the numbers are unique (COCO's image files are
    /// the zero-padded image id), else ImageFolder ids where `<parent>/<file>` is unique, else index paths.
    pub fn detect(samples: &[Sample]) -> IdScheme {
        let unique = |scheme: IdScheme| {
            let mut seen = std::collections::HashSet::new();
            samples
                .iter()
                .all(|s| id_of(scheme, &s.path).is_some_and(|id| seen.insert(id)))
        };
        [IdScheme::CocoImageId, IdScheme::ImageFolder]
            .into_iter()
            .find(|&s| !samples.is_empty() && unique(s))
            .unwrap_or(IdScheme::IndexPath)
    }

    pub fn name(self) -> &'static str {
        match self {
            IdScheme::CocoImageId => "coco-image-id",
            IdScheme::ImageFolder => "image-folder",
            IdScheme::IndexPath => "index-path",
        }
    }
}

/// The id of a sample stored at `path` (relative to its dataset folder) under `scheme`.
pub fn id_of(scheme: IdScheme, path: &str) -> Option<String> {
    let p = Path::new(path);
    match scheme {
        IdScheme::CocoImageId => {
            let stem = p.file_stem()?.to_str()?;
            if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            stem.parse::<u64>().ok().map(|v| v.to_string())
        }
        IdScheme::ImageFolder => {
            let file = p.file_name()?.to_str()?;
            let class = p.parent()?.file_name()?.to_str()?;
            Some(format!("{class}/{file}"))
        }
        IdScheme::IndexPath => Some(path.to_string()),
    }
}

/// A split of a built dataset: `<data-dir>/<dataset>/index/<split>.jsonl`.
pub struct IndexSource {
    pub root: PathBuf,
    pub index_file: PathBuf,
    pub index: SplitIndex,
    pub ids: IdScheme,
    mask_rule: MaskRule,
}

impl IndexSource {
    /// Opens `dataset:split` under `data_dir`; a dataset that is not built is an error saying what to run.
    pub fn open(data_dir: &Path, dataset: &str, split: &str) -> Result<IndexSource> {
        let dir = DatasetDir::new(data_dir, dataset);
        let index_file = dir.index_dir().join(format!("{split}.jsonl"));
        if !index_file.is_file() {
            let mut splits: Vec<String> = std::fs::read_dir(dir.index_dir())
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .filter_map(|e| {
                            e.file_name()
                                .to_str()
                                .and_then(|n| n.strip_suffix(".jsonl"))
                                .map(str::to_string)
                        })
                        .collect()
                })
                .unwrap_or_default();
            splits.sort();
            let msg = if splits.is_empty() {
                format!(
                    "dataset {dataset} is not built under {} (no {}); run `contracam data build {dataset} --data-dir {}`",
                    data_dir.display(),
                    index_file.display(),
                    data_dir.display()
                )
            } else {
                format!(
                    "dataset {dataset} has no split {split:?} ({} is missing); built splits: {}",
                    index_file.display(),
                    splits.join(", ")
                )
            };
            return Err(DataError::Loader(msg));
        }
        Self::from_index(dir.root, index_file.clone(), SplitIndex::read(&index_file)?)
    }

    /// A source over an index already read; `root` is the folder its relative paths start from.
    pub fn from_index(
        root: PathBuf,
        index_file: PathBuf,
        index: SplitIndex,
    ) -> Result<IndexSource> {
        let mask_rule = MaskRule::parse(index.header.mask_rule.as_deref()).map_err(|m| {
            crate::data::error::format_err(&index_file, format!("line 1 (header): {m}"))
        })?;
        let ids = IdScheme::detect(&index.samples);
        Ok(IndexSource {
            root,
            index_file,
            index,
            ids,
            mask_rule,
        })
    }

    /// Uses `scheme` for ids instead of the detected one.
    pub fn with_ids(mut self, scheme: IdScheme) -> Self {
        self.ids = scheme;
        self
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn bad(&self, i: usize, what: &'static str, file: PathBuf, msg: String) -> DataError {
        DataError::BadSample {
            what,
            file,
            index: self.index_file.clone(),
            line: i + 2,
            msg,
        }
    }

    fn read(&self, i: usize, what: &'static str, rel: &str) -> Result<(PathBuf, Vec<u8>)> {
        let file = self.path(rel);
        match std::fs::read(&file) {
            Ok(b) => Ok((file, b)),
            Err(e) => Err(self.bad(i, what, file, e.to_string())),
        }
    }

    fn sample(&self, i: usize) -> Result<&Sample> {
        self.index.samples.get(i).ok_or_else(|| {
            DataError::Loader(format!(
                "sample {i} is out of range for {} ({} samples)",
                self.name(),
                self.index.samples.len()
            ))
        })
    }
}

impl Source for IndexSource {
    fn name(&self) -> String {
        format!("{}:{}", self.index.header.dataset, self.index.header.split)
    }

    fn len(&self) -> usize {
        self.index.samples.len()
    }

    fn classes(&self) -> &[String] {
        &self.index.header.classes
    }

    fn meta(&self, i: usize) -> Result<SampleMeta> {
        let s = self.sample(i)?;
        let (w, h) = (s.width.max(1) as f64, s.height.max(1) as f64);
        Ok(SampleMeta {
            id: id_of(self.ids, &s.path).unwrap_or_else(|| s.path.clone()),
            labels: s.labels.clone(),
            boxes: s
                .boxes
                .iter()
                .map(|b| [b[0] / w, b[1] / h, b[2] / w, b[3] / h])
                .collect(),
            size: (s.width, s.height),
            has_mask: s.mask.is_some() || !s.instance_masks.is_empty(),
        })
    }

    fn image(&self, i: usize) -> Result<RgbImage> {
        let (file, bytes) = self.read(i, "image", &self.sample(i)?.path)?;
        decode_rgb(&bytes).map_err(|m| self.bad(i, "image", file, m))
    }

    fn mask(&self, i: usize) -> Result<Option<GrayImage>> {
        let s = self.sample(i)?;
        let files: Vec<&String> = s.mask.iter().chain(&s.instance_masks).collect();
        let mut union: Option<GrayImage> = None;
        for rel in files {
            let (file, bytes) = self.read(i, "mask", rel)?;
            let m = self
                .mask_rule
                .foreground_of_file(&bytes)
                .map_err(|msg| self.bad(i, "mask", file.clone(), msg))?;
            union = Some(match union {
                None => m,
                Some(mut u) => {
                    if u.dimensions() != m.dimensions() {
                        return Err(self.bad(
                            i,
                            "mask",
                            file,
                            format!(
                                "is {:?}, the sample's other instance masks {:?}",
                                m.dimensions(),
                                u.dimensions()
                            ),
                        ));
                    }
                    for (a, b) in u.iter_mut().zip(m.iter()) {
                        *a = (*a).max(*b);
                    }
                    u
                }
            });
        }
        Ok(union)
    }

    fn locate(&self, i: usize) -> Option<(PathBuf, PathBuf, usize)> {
        let s = self.index.samples.get(i)?;
        Some((self.path(&s.path), self.index_file.clone(), i + 2))
    }
}

/// Which synthetic images a [`SynthSource`] serves.
#[derive(Debug, Clone, PartialEq)]
pub enum SynthKind {
    /// Multi-object scenes of a split (pretraining; ContraCAM).
    Scenes { split: String },
    /// Single-object crops of a split (linear evaluation).
    Crops { split: String },
    /// One Background-Challenge variant.
    BgChallenge(BgVariant),
}

/// The synthetic scenes, generated on demand from (seed, kind, index).
pub struct SynthSource {
    pub config: SynthConfig,
    pub seed: u64,
    pub kind: SynthKind,
    pub n: usize,
    classes: Vec<String>,
}

impl SynthSource {
    pub fn new(config: SynthConfig, seed: u64, kind: SynthKind, n: usize) -> Result<SynthSource> {
        config
            .validate()
            .map_err(|e| DataError::Loader(e.to_string()))?;
        let classes = (0..config.num_classes)
            .map(|c| format!("class{c}"))
            .collect();
        Ok(SynthSource {
            config,
            seed,
            kind,
            n,
            classes,
        })
    }

    /// Generates item `i`.
    pub fn item(&self, i: usize) -> SynthItem {
        match &self.kind {
            SynthKind::Scenes { split } => synth::scene(&self.config, self.seed, split, i),
            SynthKind::Crops { split } => synth::crop(&self.config, self.seed, split, i),
            SynthKind::BgChallenge(v) => synth::bg_challenge_item(&self.config, self.seed, *v, i),
        }
    }

    fn side(&self) -> u32 {
        match self.kind {
            SynthKind::Crops { .. } => self.config.crop_size as u32,
            _ => self.config.image_size as u32,
        }
    }

    fn check(&self, i: usize) -> Result<()> {
        if i >= self.n {
            return Err(DataError::Loader(format!(
                "sample {i} is out of range for {} ({} samples)",
                self.name(),
                self.n
            )));
        }
        Ok(())
    }
}

impl Source for SynthSource {
    fn name(&self) -> String {
        match &self.kind {
            SynthKind::Scenes { split } => format!("synth:{split}"),
            SynthKind::Crops { split } => format!("synth-crops:{split}"),
            SynthKind::BgChallenge(v) => format!("synth-bg:{}", v.name()),
        }
    }

    fn len(&self) -> usize {
        self.n
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }

    fn meta(&self, i: usize) -> Result<SampleMeta> {
        self.check(i)?;
        let it = self.item(i);
        let s = self.side() as f64;
        Ok(SampleMeta {
            id: i.to_string(),
            labels: vec![it.label() as i64],
            boxes: it
                .objects
                .iter()
                .map(|o| o.bbox.map(|v| v as f64 / s))
                .collect(),
            size: (self.side(), self.side()),
            has_mask: true,
        })
    }

    fn image(&self, i: usize) -> Result<RgbImage> {
        self.check(i)?;
        let s = self.side();
        RgbImage::from_raw(s, s, self.item(i).image)
            .ok_or_else(|| DataError::Loader(format!("synthetic image {i} has the wrong size")))
    }

    fn mask(&self, i: usize) -> Result<Option<GrayImage>> {
        self.check(i)?;
        let s = self.side();
        let fg = self
            .item(i)
            .instance_mask
            .into_iter()
            .map(|v| if v != 0 { 255 } else { 0 })
            .collect();
        Ok(GrayImage::from_raw(s, s, fg))
    }

    fn locate(&self, _i: usize) -> Option<(PathBuf, PathBuf, usize)> {
        None
    }
}

/// A dataset named on the command line or in a suite: `synth[:SPLIT]` or `NAME[:SPLIT]` (split defaults to
/// `train`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetRef {
    Synth { split: String },
    Built { name: String, split: String },
}

impl std::str::FromStr for DatasetRef {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (name, split) = match s.split_once(':') {
            Some((n, sp)) => (n, sp),
            None => (s, "train"),
        };
        let ok = |x: &str| {
            !x.is_empty()
                && x.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        };
        if !ok(name) || !ok(split) || name.starts_with('.') || split.starts_with('.') {
            return Err(format!(
                "dataset {s:?}: expected synth[:SPLIT] or NAME[:SPLIT] with letters, digits, '-', '_' or '.'"
            ));
        }
        Ok(if name == "synth" {
            DatasetRef::Synth {
                split: split.into(),
            }
        } else {
            DatasetRef::Built {
                name: name.into(),
                split: split.into(),
            }
        })
    }
}

impl std::fmt::Display for DatasetRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatasetRef::Synth { split } => write!(f, "synth:{split}"),
            DatasetRef::Built { name, split } => write!(f, "{name}:{split}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(path: &str) -> Sample {
        Sample {
            path: path.into(),
            width: 4,
            height: 4,
            ..Default::default()
        }
    }

    #[test]
    fn ids_follow_the_official_get_image_ids() {
        let coco = [
            sample("extracted/train2017.zip/train2017/000000000139.jpg"),
            sample("extracted/train2017.zip/train2017/000000000009.jpg"),
        ];
        assert_eq!(IdScheme::detect(&coco), IdScheme::CocoImageId);
        assert_eq!(id_of(IdScheme::CocoImageId, &coco[0].path).unwrap(), "139");
        let folder = [
            sample("x/train/00_dog/a.JPEG"),
            sample("x/train/01_bird/a.JPEG"),
        ];
        assert_eq!(IdScheme::detect(&folder), IdScheme::ImageFolder);
        assert_eq!(
            id_of(IdScheme::ImageFolder, &folder[1].path).unwrap(),
            "01_bird/a.JPEG"
        );
        // ImageNetV2: numeric stems repeat across class folders, so they are not COCO ids.
        let v2 = [sample("val2/0/1.jpeg"), sample("val2/1/1.jpeg")];
        assert_eq!(IdScheme::detect(&v2), IdScheme::ImageFolder);
        let flat = [sample("a/x/i.jpg"), sample("b/x/i.jpg")];
        assert_eq!(IdScheme::detect(&flat), IdScheme::IndexPath);
    }

    #[test]
    fn dataset_refs_parse() {
        assert_eq!(
            "synth".parse::<DatasetRef>().unwrap(),
            DatasetRef::Synth {
                split: "train".into()
            }
        );
        assert_eq!(
            "coco2017:val".parse::<DatasetRef>().unwrap(),
            DatasetRef::Built {
                name: "coco2017".into(),
                split: "val".into()
            }
        );
        assert!("../x".parse::<DatasetRef>().is_err());
        assert!("a:".parse::<DatasetRef>().is_err());
    }

    #[test]
    fn synth_source_matches_the_batch_generator() {
        let cfg = SynthConfig::default();
        let src = SynthSource::new(
            cfg.clone(),
            3,
            SynthKind::Scenes {
                split: "train".into(),
            },
            5,
        )
        .unwrap();
        let set = synth::scenes(&cfg, 3, "train", 5);
        for i in 0..5 {
            assert_eq!(src.image(i).unwrap().into_raw(), set.images[i]);
            let m = src.meta(i).unwrap();
            assert_eq!(m.labels, vec![set.labels[i] as i64]);
            assert_eq!(m.boxes, set.boxes_normalized()[i]);
        }
        assert!(src.image(5).is_err());
    }
}
