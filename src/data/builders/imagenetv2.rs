//! ImageNetV2 threshold-0.7: wsolevaluation's ILSVRC `train-fullsup` split (its metadata `ILSVRC/val`), 10 images
//! for each of the 1000 ImageNet classes in `<class index>/<n>.jpeg`. The label is the integer folder name
//! (ImageNet's class index, i.e. the sorted-wnid order of `imagenet_class_index.json`), not the folder's place in
//! string order. wsolevaluation renames the tar's top folder to `val2`, so its paths are `val2/<class>/<n>.jpeg`,
//! listed in string order as upstream lists them. The boxes wsolevaluation annotated are in its repository
//! (`metadata/ILSVRC/val/localization.txt`), not in the tar, so the export has no `localization.txt`.
use std::path::PathBuf;

use super::{labelled_split_with_wsol, sorted_images, sorted_subdirs, BuildContext};
use crate::data::error::Result;
use crate::data::index::SplitIndex;

pub const FILE: &str = "imagenetv2-threshold0.7.tar.gz";

/// The tar's top folder. wsolevaluation's prepare script moves `imagenetv2-threshold0.7`; TFDS and the
/// ImageNetV2 loader read `imagenetv2-threshold0.7-format-val` from the same URLs. Either is accepted.
pub const TOP_DIRS: [&str; 2] = [
    "imagenetv2-threshold0.7",
    "imagenetv2-threshold0.7-format-val",
];

/// ImageNet has 1000 classes; class folders are named 0..999.
const NUM_CLASSES: u32 = 1000;

/// The class index a folder names: a plain decimal integer below 1000, written without leading zeros (so no
/// two folders can name the same class).
fn class_index(folder: &str) -> Option<u32> {
    let n: u32 = folder.parse().ok()?;
    (n < NUM_CLASSES && n.to_string() == folder).then_some(n)
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
    let mut paths: Vec<PathBuf> = vec![];
    let mut rel = vec![];
    let mut labels = vec![];
    // String order of the folder names: the order of wsolevaluation's metadata (0, 1, 10, 100, ...).
    for folder in sorted_subdirs(&top)? {
        let label = class_index(&folder).ok_or_else(|| {
            ctx.err(format!(
                "{FILE}: class folder {} is not an integer 0..{} (ImageNetV2 names its class folders by ImageNet \
                 class index); remove or rename it",
                top.join(&folder).display(),
                NUM_CLASSES - 1
            ))
        })?;
        for f in sorted_images(&top.join(&folder))? {
            paths.push(top.join(&folder).join(&f));
            rel.push(format!("val2/{folder}/{f}"));
            labels.push(label as i64);
        }
    }
    if paths.is_empty() {
        return Err(ctx.err(format!("{FILE}: no images under {}", top.display())));
    }
    let samples = labelled_split_with_wsol(
        ctx,
        &paths,
        &rel,
        &labels,
        &ctx.dir.build().join("wsol/metadata/ILSVRC/val"),
    )?;
    let classes = (0..NUM_CLASSES).map(|i| i.to_string()).collect();
    Ok(vec![SplitIndex::new(ctx.dataset, "val", classes, "class", samples)
        .with_provenance(format!(
            "{FILE} {top_name}/ (wsolevaluation train-fullsup, metadata ILSVRC/val); label = integer class folder"
        ))])
}

#[cfg(test)]
mod tests {
    use super::class_index;

    #[test]
    fn class_folders_are_canonical_integers_below_1000() {
        assert_eq!(class_index("0"), Some(0));
        assert_eq!(class_index("999"), Some(999));
        assert_eq!(class_index("1000"), None);
        assert_eq!(class_index("007"), None);
        assert_eq!(class_index("+1"), None);
        assert_eq!(class_index("n01440764"), None);
    }
}
