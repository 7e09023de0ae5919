//! ImageNetV2 threshold-0.7: wsolevaluation's ILSVRC `train-fullsup` split (its metadata `ILSVRC/val`), 10 images
//! for each of the 1000 ImageNet classes in `<class index>/<n>.jpeg`, with the boxes wsolevaluation annotated.
//!
//! wsolevaluation renames the tar's top folder to `val2`, so its metadata names `val2/<class>/<n>.jpeg`; here
//! that path is the tar's `<top>/<class>/<n>.jpeg`. The four metadata files (`image_ids`, `class_labels`,
//! `image_sizes`, `localization`, from its repository, not the tar) are read and checked as the imagenet
//! builder reads ILSVRC `test` ([`read_box_metadata`]); the samples follow `image_ids.txt` (string order of
//! the class folders, as upstream lists them). The label is the integer folder name (ImageNet's class index,
//! the sorted-wnid order), and the metadata's label must equal it. Every listed image must be in the tar with
//! the listed size, every image of the tar must be listed, and every box must lie inside its image; anything
//! else is an error naming the file and line. The metadata is re-exported to `build/wsol/metadata/ILSVRC/val`.
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::imagenet_val::{
    export_and_index, metadata_files, read_box_metadata, BoxMetadata, BoxRecord,
};
use super::{image_sizes, sorted_images, sorted_subdirs, BuildContext};
use crate::data::error::{format_err, Result};
use crate::data::index::SplitIndex;

pub const FILE: &str = "imagenetv2-threshold0.7.tar.gz";

/// The manifest's names of wsolevaluation's `metadata/ILSVRC/val/` files, in [`BoxMetadata`] order.
pub const METADATA: [&str; 4] = [
    "wsol-ILSVRC-val-image_ids.txt",
    "wsol-ILSVRC-val-class_labels.txt",
    "wsol-ILSVRC-val-image_sizes.txt",
    "wsol-ILSVRC-val-localization.txt",
];

/// The tar's top folder. wsolevaluation's prepare script moves `imagenetv2-threshold0.7`; TFDS and the
/// ImageNetV2 loader read `imagenetv2-threshold0.7-format-val` from the same URLs. Either is accepted.
pub const TOP_DIRS: [&str; 2] = [
    "imagenetv2-threshold0.7",
    "imagenetv2-threshold0.7-format-val",
];

/// wsolevaluation's name of the tar's top folder inside its image root.
const WSOL_TOP: &str = "val2";

/// ImageNet has 1000 classes; class folders are named 0..999.
const NUM_CLASSES: u32 = 1000;

/// The class index a folder names: a plain decimal integer below 1000, written without leading zeros (so no
/// two folders can name the same class).
fn class_index(folder: &str) -> Option<u32> {
    let n: u32 = folder.parse().ok()?;
    (n < NUM_CLASSES && n.to_string() == folder).then_some(n)
}

/// The (class folder, file) a metadata path `val2/<class>/<file>` names.
fn split_wsol_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix(WSOL_TOP)?.strip_prefix('/')?;
    let (folder, file) = rest.split_once('/')?;
    (class_index(folder).is_some() && !file.is_empty() && !file.contains('/'))
        .then_some((folder, file))
}

/// The image of `top` each record names, checked against its label; errors name the metadata file and line.
fn image_paths(top: &Path, recs: &[BoxRecord], meta: &BoxMetadata) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::with_capacity(recs.len());
    for r in recs {
        let (folder, file) = split_wsol_path(&r.path).ok_or_else(|| {
            format_err(
                meta.image_ids,
                format!(
                    "line {}: `{}` is not `{WSOL_TOP}/<class index 0..{}>/<file>` (wsolevaluation's place for \
                     the ImageNetV2 tar)",
                    r.id_line,
                    r.path,
                    NUM_CLASSES - 1
                ),
            )
        })?;
        let folder_label = class_index(folder).map(i64::from);
        if folder_label != Some(r.label) {
            return Err(format_err(
                meta.class_labels,
                format!(
                    "line {}: label {} of `{}` is not its class folder {folder}",
                    r.label_line, r.label, r.path
                ),
            ));
        }
        let p = top.join(folder).join(file);
        if !p.is_file() {
            return Err(format_err(
                meta.image_ids,
                format!(
                    "line {}: image `{}` is not in {FILE} (expected at {}); is the tar complete?",
                    r.id_line,
                    r.path,
                    p.display()
                ),
            ));
        }
        paths.push(p);
    }
    Ok(paths)
}

pub fn build(ctx: &BuildContext) -> Result<Vec<SplitIndex>> {
    let ex = ctx.extracted(FILE)?;
    let top_name = TOP_DIRS
        .iter()
        .find(|d| ex.join(d).is_dir())
        .ok_or_else(|| {
            ctx.err(format!(
                "{FILE}: no top folder {} in {}",
                TOP_DIRS.join(" or "),
                ex.display()
            ))
        })?;
    let top = ex.join(top_name);
    let files = metadata_files(ctx, &METADATA)?;
    let meta = BoxMetadata::of(&files);
    let recs = read_box_metadata(&meta, i64::from(NUM_CLASSES))?;
    let paths = image_paths(&top, &recs, &meta)?;

    // Every image of the tar must be listed: the split is wsolevaluation's, not whatever the folder holds.
    let listed: HashSet<&str> = recs.iter().map(|r| r.path.as_str()).collect();
    for folder in sorted_subdirs(&top)? {
        if class_index(&folder).is_none() {
            return Err(ctx.err(format!(
                "{FILE}: class folder {} is not an integer 0..{} (ImageNetV2 names its class folders by ImageNet \
                 class index); remove or rename it",
                top.join(&folder).display(),
                NUM_CLASSES - 1
            )));
        }
        for f in sorted_images(&top.join(&folder))? {
            if !listed.contains(format!("{WSOL_TOP}/{folder}/{f}").as_str()) {
                return Err(format_err(
                    meta.image_ids,
                    format!(
                        "{} is in {FILE} but not listed as `{WSOL_TOP}/{folder}/{f}`; the tar or the metadata is \
                         not the published one",
                        top.join(&folder).join(&f).display()
                    ),
                ));
            }
        }
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

    let samples = export_and_index(
        ctx,
        &recs,
        &paths,
        &ctx.dir.build().join("wsol/metadata/ILSVRC/val"),
    )?;
    let classes = (0..NUM_CLASSES).map(|i| i.to_string()).collect();
    Ok(vec![SplitIndex::new(ctx.dataset, "val", classes, "class", samples)
        .with_provenance(format!(
            "{FILE} {top_name}/ + wsolevaluation metadata/ILSVRC/val (train-fullsup; order of image_ids.txt; \
             label = integer class folder; boxes from localization.txt)"
        ))])
}

#[cfg(test)]
mod tests {
    use super::{class_index, split_wsol_path};

    #[test]
    fn class_folders_are_canonical_integers_below_1000() {
        assert_eq!(class_index("0"), Some(0));
        assert_eq!(class_index("999"), Some(999));
        assert_eq!(class_index("1000"), None);
        assert_eq!(class_index("007"), None);
        assert_eq!(class_index("+1"), None);
        assert_eq!(class_index("n01440764"), None);
    }

    #[test]
    fn wsol_paths_name_a_class_folder_and_a_file() {
        assert_eq!(split_wsol_path("val2/995/0.jpeg"), Some(("995", "0.jpeg")));
        assert_eq!(split_wsol_path("val2/0/9.jpeg"), Some(("0", "9.jpeg")));
        assert_eq!(split_wsol_path("val/0/9.jpeg"), None);
        assert_eq!(split_wsol_path("val2/01/9.jpeg"), None);
        assert_eq!(split_wsol_path("val2/0/"), None);
        assert_eq!(split_wsol_path("val2/0/a/b.jpeg"), None);
        assert_eq!(split_wsol_path("val2/0.jpeg"), None);
    }
}
