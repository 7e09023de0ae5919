//! ImageNet-1k validation in wsolevaluation's protocol: its ILSVRC `test` split (metadata `ILSVRC/test`), the
//! ILSVRC2012 validation images with the class labels and boxes wsolevaluation publishes in its repository.
//!
//! `ILSVRC2012_img_val.tar` is flat (`ILSVRC2012_val_%08d.JPEG`); wsolevaluation untars it into its image
//! root's `val/`, so its metadata names `val/<file>`. The four metadata files are read as upstream's
//! `data_loaders.py` reads them (comma-separated, one record per line, no trailing newline needed):
//! `image_ids.txt` (`path`; it sets the sample order), `class_labels.txt` (`path,label`, the sorted-wnid
//! class index 0..999), `image_sizes.txt` (`path,w,h`) and `localization.txt` (`path,x0,y0,x1,y1`, integer
//! pixels, one line per box, so an image with several objects has several lines). Every image must have a
//! label, a size equal to its JPEG header and at least one box inside `[0, w] × [0, h]`; anything else is an
//! error naming the file and line. The metadata is re-exported to `build/wsol/metadata/ILSVRC/test`.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{image_sizes, BuildContext};
use crate::data::builders::wsol::{self, Localization, WsolItem};
use crate::data::error::{format_err, IoContext, Result};
use crate::data::index::{Sample, SplitIndex};

pub const IMAGES: &str = "ILSVRC2012_img_val.tar";
/// wsolevaluation's name of the split (its README: ImageNet "val" is the WSOL `test` split).
pub const SPLIT: &str = "test";
/// The manifest's names of wsolevaluation's `metadata/ILSVRC/test/` files, in [`BoxMetadata`] order.
pub const METADATA: [&str; 4] = [
    "wsol-ILSVRC-test-image_ids.txt",
    "wsol-ILSVRC-test-class_labels.txt",
    "wsol-ILSVRC-test-image_sizes.txt",
    "wsol-ILSVRC-test-localization.txt",
];
/// ImageNet-1k: labels are the sorted-wnid class index.
pub const NUM_CLASSES: i64 = 1000;
/// The folder of wsolevaluation's image root that holds the flat tar.
const IMAGE_DIR: &str = "val";

/// The four metadata files of one box-annotated wsolevaluation split.
pub struct BoxMetadata<'a> {
    pub image_ids: &'a Path,
    pub class_labels: &'a Path,
    pub image_sizes: &'a Path,
    pub localization: &'a Path,
}

impl<'a> BoxMetadata<'a> {
    /// The four files in the order of [`METADATA`] (as [`metadata_files`] returns them).
    pub fn of(files: &'a [PathBuf; 4]) -> Self {
        BoxMetadata {
            image_ids: &files[0],
            class_labels: &files[1],
            image_sizes: &files[2],
            localization: &files[3],
        }
    }
}

/// The downloaded paths of a split's four wsolevaluation metadata files; a missing one is an error naming
/// it and the dataset's instructions.
pub fn metadata_files(ctx: &BuildContext, names: &[&str; 4]) -> Result<[PathBuf; 4]> {
    let files = names.map(|f| ctx.download(f));
    if let Some(f) = files.iter().find(|f| !f.is_file()) {
        return Err(ctx.err(format!(
            "{} is missing (see `contracam data instructions {}`)",
            f.display(),
            ctx.dataset
        )));
    }
    Ok(files)
}

/// Writes the split's wsolevaluation metadata to `wsol_dir` (re-exported from the records as read) and returns
/// its samples: each record with its image's path (`paths`, in record order), label, boxes and size.
pub fn export_and_index(
    ctx: &BuildContext,
    recs: &[BoxRecord],
    paths: &[PathBuf],
    wsol_dir: &Path,
) -> Result<Vec<Sample>> {
    let items: Vec<WsolItem> = recs
        .iter()
        .map(|r| WsolItem {
            path: r.path.clone(),
            label: r.label,
            width: r.width,
            height: r.height,
            boxes: r.boxes.clone(),
            ..Default::default()
        })
        .collect();
    wsol::export_split(wsol_dir, &items, Localization::Boxes)?;
    Ok(recs
        .iter()
        .zip(paths)
        .map(|(r, p)| Sample {
            path: ctx.rel(p),
            labels: vec![r.label],
            boxes: r.boxes.clone(),
            width: r.width,
            height: r.height,
            ..Default::default()
        })
        .collect())
}

/// One image of a box-annotated split, with where its records were read (1-based lines).
#[derive(Debug, Clone, PartialEq)]
pub struct BoxRecord {
    pub path: String,
    pub label: i64,
    pub width: u32,
    pub height: u32,
    /// `[x0, y0, x1, y1]` in the order of `localization.txt`.
    pub boxes: Vec<[f64; 4]>,
    pub id_line: usize,
    pub label_line: usize,
    pub size_line: usize,
}

/// Non-empty lines of `path` with their 1-based numbers; a trailing newline (or `\r\n`) is accepted, an empty
/// line inside the file is not (upstream would read it as a record and fail).
fn lines(path: &Path) -> Result<Vec<(usize, String)>> {
    let text = std::fs::read_to_string(path).at(path)?;
    let mut out: Vec<(usize, String)> = text
        .split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l).to_string()))
        .collect();
    if out.last().is_some_and(|(_, l)| l.is_empty()) {
        out.pop();
    }
    if let Some((no, _)) = out.iter().find(|(_, l)| l.is_empty()) {
        return Err(format_err(path, format!("line {no}: empty line")));
    }
    Ok(out)
}

/// The comma-separated fields of a line, which must number `n`.
fn fields<'a>(path: &Path, no: usize, line: &'a str, n: usize, form: &str) -> Result<Vec<&'a str>> {
    let f: Vec<&str> = line.split(',').collect();
    if f.len() != n {
        return Err(format_err(
            path,
            format!("line {no}: expected `{form}` ({n} comma-separated fields), got `{line}`"),
        ));
    }
    Ok(f)
}

fn int(path: &Path, no: usize, s: &str, what: &str) -> Result<i64> {
    s.trim()
        .parse()
        .map_err(|_| format_err(path, format!("line {no}: {what} `{s}` is not an integer")))
}

/// Index of `id` among the image ids, or an error naming `path`'s line.
fn lookup(
    ids: &HashMap<&str, usize>,
    path: &Path,
    no: usize,
    id: &str,
    ids_file: &Path,
) -> Result<usize> {
    ids.get(id).copied().ok_or_else(|| {
        format_err(
            path,
            format!("line {no}: `{id}` is not listed in {}", ids_file.display()),
        )
    })
}

/// Read and cross-check a box-annotated split (ILSVRC, CUB form) with labels in `0..num_classes`.
pub fn read_box_metadata(m: &BoxMetadata, num_classes: i64) -> Result<Vec<BoxRecord>> {
    let mut recs: Vec<BoxRecord> = vec![];
    let mut index: HashMap<String, usize> = HashMap::new();
    for (no, id) in lines(m.image_ids)? {
        if id.contains(',') {
            return Err(format_err(
                m.image_ids,
                format!("line {no}: `{id}` contains a comma; expected one image path per line"),
            ));
        }
        if let Some(&k) = index.get(&id) {
            return Err(format_err(
                m.image_ids,
                format!(
                    "line {no}: `{id}` is listed twice (first on line {})",
                    recs[k].id_line
                ),
            ));
        }
        index.insert(id.clone(), recs.len());
        recs.push(BoxRecord {
            path: id,
            label: -1,
            width: 0,
            height: 0,
            boxes: vec![],
            id_line: no,
            label_line: 0,
            size_line: 0,
        });
    }
    if recs.is_empty() {
        return Err(format_err(m.image_ids, "no image ids"));
    }
    let ids: HashMap<&str, usize> = index.iter().map(|(k, v)| (k.as_str(), *v)).collect();

    let mut label_line = vec![0usize; recs.len()];
    for (no, line) in lines(m.class_labels)? {
        let f = fields(m.class_labels, no, &line, 2, "path,label")?;
        let k = lookup(&ids, m.class_labels, no, f[0], m.image_ids)?;
        if label_line[k] != 0 {
            return Err(format_err(
                m.class_labels,
                format!(
                    "line {no}: second label for `{}` (first on line {})",
                    f[0], label_line[k]
                ),
            ));
        }
        let label = int(m.class_labels, no, f[1], "label")?;
        if !(0..num_classes).contains(&label) {
            return Err(format_err(
                m.class_labels,
                format!("line {no}: label {label} is outside 0..{}", num_classes - 1),
            ));
        }
        label_line[k] = no;
        recs[k].label = label;
    }

    for (no, line) in lines(m.image_sizes)? {
        let f = fields(m.image_sizes, no, &line, 3, "path,width,height")?;
        let k = lookup(&ids, m.image_sizes, no, f[0], m.image_ids)?;
        if recs[k].size_line != 0 {
            return Err(format_err(
                m.image_sizes,
                format!(
                    "line {no}: second size for `{}` (first on line {})",
                    f[0], recs[k].size_line
                ),
            ));
        }
        let dim = |s: &str, what: &str| -> Result<u32> {
            let v = int(m.image_sizes, no, s, what)?;
            u32::try_from(v).ok().filter(|v| *v > 0).ok_or_else(|| {
                format_err(
                    m.image_sizes,
                    format!("line {no}: {what} {v} is not positive"),
                )
            })
        };
        recs[k].width = dim(f[1], "width")?;
        recs[k].height = dim(f[2], "height")?;
        recs[k].size_line = no;
    }

    for (k, r) in recs.iter_mut().enumerate() {
        r.label_line = label_line[k];
        if label_line[k] == 0 {
            return Err(format_err(
                m.class_labels,
                format!(
                    "no label for `{}` (line {} of {})",
                    r.path,
                    r.id_line,
                    m.image_ids.display()
                ),
            ));
        }
        if r.size_line == 0 {
            return Err(format_err(
                m.image_sizes,
                format!(
                    "no size for `{}` (line {} of {})",
                    r.path,
                    r.id_line,
                    m.image_ids.display()
                ),
            ));
        }
    }

    for (no, line) in lines(m.localization)? {
        let f = fields(m.localization, no, &line, 5, "path,x0,y0,x1,y1")?;
        let k = lookup(&ids, m.localization, no, f[0], m.image_ids)?;
        let mut b = [0i64; 4];
        for (j, name) in ["x0", "y0", "x1", "y1"].iter().enumerate() {
            b[j] = int(m.localization, no, f[j + 1], name)?;
        }
        let r = &mut recs[k];
        let (w, h) = (r.width as i64, r.height as i64);
        if b[0] > b[2] || b[1] > b[3] {
            return Err(format_err(
                m.localization,
                format!(
                    "line {no}: box {b:?} of `{}` has x0 > x1 or y0 > y1",
                    r.path
                ),
            ));
        }
        if b[0] < 0 || b[1] < 0 || b[2] > w || b[3] > h {
            return Err(format_err(
                m.localization,
                format!(
                    "line {no}: box {b:?} of `{}` lies outside the image ({w}×{h}, line {} of {})",
                    r.path,
                    r.size_line,
                    m.image_sizes.display()
                ),
            ));
        }
        r.boxes.push(b.map(|v| v as f64));
    }
    if let Some(r) = recs.iter().find(|r| r.boxes.is_empty()) {
        return Err(format_err(
            m.localization,
            format!(
                "no box for `{}` (line {} of {})",
                r.path,
                r.id_line,
                m.image_ids.display()
            ),
        ));
    }
    Ok(recs)
}

pub fn build(ctx: &BuildContext) -> Result<Vec<SplitIndex>> {
    let ex = ctx.extracted(IMAGES)?;
    let files = metadata_files(ctx, &METADATA)?;
    let meta = BoxMetadata::of(&files);
    let recs = read_box_metadata(&meta, NUM_CLASSES)?;

    let mut paths = Vec::with_capacity(recs.len());
    for r in &recs {
        let name = r
            .path
            .strip_prefix("val/")
            .filter(|n| !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| {
                format_err(
                    meta.image_ids,
                    format!(
                        "line {}: `{}` is not `{IMAGE_DIR}/<file>` (wsolevaluation's place for the flat {IMAGES})",
                        r.id_line, r.path
                    ),
                )
            })?;
        let p = ex.join(name);
        if !p.is_file() {
            return Err(format_err(
                meta.image_ids,
                format!(
                    "line {}: image `{name}` is not in {IMAGES} (expected at {}); is the tar complete?",
                    r.id_line,
                    p.display()
                ),
            ));
        }
        paths.push(p);
    }
    let sizes = image_sizes(&paths)?;
    for (r, (w, h)) in recs.iter().zip(&sizes) {
        if (r.width, r.height) != (*w, *h) {
            return Err(format_err(
                meta.image_sizes,
                format!(
                    "line {}: `{}` is {}×{} here but the JPEG header says {w}×{h}; the image or the metadata is \
                     not the published one",
                    r.size_line, r.path, r.width, r.height
                ),
            ));
        }
    }
    // Dot files are the extraction's own markers, not tar entries.
    let unused = std::fs::read_dir(&ex)
        .at(&ex)?
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .count()
        .saturating_sub(recs.len());
    if unused > 0 {
        tracing::warn!("{IMAGES}: {unused} entries not named in the metadata were left out");
    }

    let samples = export_and_index(
        ctx,
        &recs,
        &paths,
        &ctx.dir.build().join("wsol/metadata/ILSVRC").join(SPLIT),
    )?;
    let classes = (0..NUM_CLASSES).map(|i| i.to_string()).collect();
    Ok(vec![SplitIndex::new(ctx.dataset, SPLIT, classes, "class", samples)
        .with_provenance(format!(
            "{IMAGES} + wsolevaluation metadata/ILSVRC/test (order of image_ids.txt; label = sorted-wnid class \
             index; boxes from localization.txt)"
        ))])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn read(dir: &Path, loc: &str) -> Result<Vec<BoxRecord>> {
        let ids = write(dir, "image_ids.txt", "val/a.JPEG\nval/b.JPEG");
        let labels = write(dir, "class_labels.txt", "val/a.JPEG,65\nval/b.JPEG,999\n");
        let sizes = write(
            dir,
            "image_sizes.txt",
            "val/a.JPEG,50,40\r\nval/b.JPEG,30,20",
        );
        let loc = write(dir, "localization.txt", loc);
        read_box_metadata(
            &BoxMetadata {
                image_ids: &ids,
                class_labels: &labels,
                image_sizes: &sizes,
                localization: &loc,
            },
            NUM_CLASSES,
        )
    }

    #[test]
    fn several_boxes_per_image_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let r = read(
            dir.path(),
            "val/b.JPEG,0,0,30,20\nval/a.JPEG,1,2,49,39\nval/b.JPEG,3,4,5,6",
        )
        .unwrap();
        assert_eq!(r[0].path, "val/a.JPEG");
        assert_eq!((r[0].label, r[0].width, r[0].height), (65, 50, 40));
        assert_eq!(r[0].boxes, vec![[1.0, 2.0, 49.0, 39.0]]);
        assert_eq!(r[1].label, 999);
        assert_eq!(
            r[1].boxes,
            vec![[0.0, 0.0, 30.0, 20.0], [3.0, 4.0, 5.0, 6.0]]
        );
        assert_eq!((r[1].id_line, r[1].size_line), (2, 2));
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "val/a.JPEG,1,2,3,4\nval/b.JPEG,1,2,3",
                "line 2: expected `path,x0,y0,x1,y1`",
            ),
            (
                "val/a.JPEG,1,2,3,4\nval/b.JPEG,1,2,31,4",
                "line 2: box [1, 2, 31, 4]",
            ),
            (
                "val/a.JPEG,1,2,3,4\nval/b.JPEG,-1,2,3,4",
                "outside the image (30×20",
            ),
            (
                "val/a.JPEG,5,2,3,4\nval/b.JPEG,1,2,3,4",
                "line 1: box [5, 2, 3, 4]",
            ),
            (
                "val/a.JPEG,1,2,3,x\nval/b.JPEG,1,2,3,4",
                "line 1: y1 `x` is not an integer",
            ),
            (
                "val/a.JPEG,1,2,3,4\nval/c.JPEG,1,2,3,4",
                "line 2: `val/c.JPEG` is not listed",
            ),
            ("val/a.JPEG,1,2,3,4", "no box for `val/b.JPEG` (line 2"),
            (
                "val/a.JPEG,1,2,3,4\n\nval/b.JPEG,1,2,3,4",
                "line 2: empty line",
            ),
        ];
        for (loc, want) in cases {
            let e = read(dir.path(), loc).unwrap_err().to_string();
            assert!(
                e.contains("localization.txt") && e.contains(want),
                "{want}: {e}"
            );
        }
        // A label outside 0..999 and a missing size.
        write(
            dir.path(),
            "class_labels.txt",
            "val/a.JPEG,65\nval/b.JPEG,1000",
        );
        let ids = dir.path().join("image_ids.txt");
        let m = BoxMetadata {
            image_ids: &ids,
            class_labels: &dir.path().join("class_labels.txt"),
            image_sizes: &dir.path().join("image_sizes.txt"),
            localization: &dir.path().join("localization.txt"),
        };
        let e = read_box_metadata(&m, NUM_CLASSES).unwrap_err().to_string();
        assert!(
            e.contains("class_labels.txt") && e.contains("line 2: label 1000"),
            "{e}"
        );
        write(
            dir.path(),
            "class_labels.txt",
            "val/a.JPEG,65\nval/b.JPEG,1",
        );
        write(dir.path(), "image_sizes.txt", "val/a.JPEG,50,40");
        let e = read_box_metadata(&m, NUM_CLASSES).unwrap_err().to_string();
        assert!(
            e.contains("image_sizes.txt") && e.contains("no size for `val/b.JPEG`"),
            "{e}"
        );
    }
}
