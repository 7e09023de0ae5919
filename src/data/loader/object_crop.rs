//! OA-Crop's boxes on real data: an official-format box file matched to the samples of a source by id.
//!
//! `COCOBox.__getitem__` looks every image up as `self.boxes[str(img_id)]`, so a training image without a
//! line is a `KeyError` there; here it is an error naming the box file and the id, before training starts.
//! Lines whose id is no sample of the source are errors too (a box file for another dataset or split), as
//! are boxes that round to an empty crop on their image (Pillow would return an empty image and
//! `RandomResizedCrop` then fails on it).
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::dataset::Source;
use super::transform::object_crop_rect;
use crate::data::error::{format_err, Result};
use crate::data::formats::box_file::{read_box_file_checked, NumberedEntry};

/// The ground-truth box file `data build` writes for a COCO dataset: `<data-dir>/<dataset>/build/boxes/
/// coco_gt.txt`, the official `COCOBox.get_gt_box` (annotations with segmentation area > 1 % of the image,
/// margin 0.2, clipped, normalised) over train2017 (the index keeps boxes, not areas, so the file is made
/// from the annotations at build time). An error saying what to run when it is not there.
pub fn ground_truth_box_file(data_dir: &Path, dataset: &str) -> Result<PathBuf> {
    let p = crate::data::source::store::DatasetDir::new(data_dir, dataset)
        .build()
        .join("boxes")
        .join("coco_gt.txt");
    if p.is_file() {
        Ok(p)
    } else {
        Err(crate::data::error::DataError::Loader(format!(
            "no ground-truth box file {} (written by `contracam data build {dataset}` for a COCO dataset with \
             train2017); pass a box file instead",
            p.display()
        )))
    }
}

/// Boxes per sample of a source, from one box file.
#[derive(Debug, Clone)]
pub struct ObjectBoxes {
    pub file: PathBuf,
    per_sample: Vec<Vec<[f64; 4]>>,
    lines: Vec<usize>,
}

impl ObjectBoxes {
    /// Reads and validates `path`, then matches its ids to `source`'s samples.
    pub fn load(path: &Path, source: &dyn Source) -> Result<ObjectBoxes> {
        let entries = read_box_file_checked(path)?;
        Self::match_entries(path, entries, source)
    }

    /// Matches parsed, validated entries (with their line numbers) to `source`.
    pub fn match_entries(
        path: &Path,
        entries: Vec<NumberedEntry>,
        source: &dyn Source,
    ) -> Result<ObjectBoxes> {
        let n = source.len();
        let mut metas = Vec::with_capacity(n);
        let mut by_id: HashMap<String, usize> = HashMap::with_capacity(n);
        for i in 0..n {
            let m = source.meta(i)?;
            by_id.insert(m.id.clone(), i);
            metas.push(m);
        }
        let mut per_sample: Vec<Option<(usize, Vec<[f64; 4]>)>> = vec![None; n];
        for (line, id, boxes) in entries {
            let Some(&i) = by_id.get(&id) else {
                let example = metas.first().map(|m| m.id.as_str()).unwrap_or("");
                return Err(format_err(
                    path,
                    format!(
                        "line {line}: id {id:?} is no sample of {} (its ids look like {example:?}); \
                         is the box file for another dataset or split?",
                        source.name()
                    ),
                ));
            };
            let (w, h) = metas[i].size;
            for b in &boxes {
                if object_crop_rect(*b, w, h).is_none() {
                    return Err(format_err(
                        path,
                        format!(
                            "line {line}: box {b:?} of {id:?} is less than a pixel wide or high on its \
                             {w}x{h} image after rounding"
                        ),
                    ));
                }
            }
            per_sample[i] = Some((line, boxes));
        }
        let missing: Vec<&str> = per_sample
            .iter()
            .zip(&metas)
            .filter(|(p, _)| p.is_none())
            .map(|(_, m)| m.id.as_str())
            .collect();
        if !missing.is_empty() {
            let shown: Vec<&str> = missing.iter().take(5).copied().collect();
            return Err(format_err(
                path,
                format!(
                    "{} of the {n} samples of {} have no line (e.g. {}); the official loader fails on them \
                     with a KeyError. Write a line with just the id for an image without boxes",
                    missing.len(),
                    source.name(),
                    shown.join(", ")
                ),
            ));
        }
        let (lines, per_sample) = per_sample.into_iter().flatten().unzip();
        Ok(ObjectBoxes {
            file: path.to_path_buf(),
            per_sample,
            lines,
        })
    }

    /// The boxes of sample `i` (normalised xyxy; empty = the whole image).
    pub fn boxes(&self, i: usize) -> &[[f64; 4]] {
        self.per_sample.get(i).map(|v| v.as_slice()).unwrap_or(&[])
    }

    /// The line of the box file that gave sample `i`'s boxes.
    pub fn line(&self, i: usize) -> usize {
        self.lines.get(i).copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.per_sample.len()
    }

    pub fn is_empty(&self) -> bool {
        self.per_sample.is_empty()
    }

    /// How many samples have at least one box.
    pub fn with_boxes(&self) -> usize {
        self.per_sample.iter().filter(|b| !b.is_empty()).count()
    }
}
