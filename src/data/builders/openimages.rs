//! OpenImages30k (wsolevaluation): `{train,val,test}/<class folder>/` holding `<imgid>.jpg`, one
//! `<imgid>_m<class folder>_<8 hex>.png` per object instance and at most one `<imgid>_ignore.png`. wsolevaluation
//! unzips the image and annotation zips (and, for evaluation only, OpenImages30k_eval.zip) into one folder, so
//! the tree here is the union of the extracted zips; a file in several zips must have the same size in each.
//! Class folders are OpenImages MIDs without `/m/`; labels are the index in their sorted list (0..99).
//! Splits `train`/`val`/`test` and wsolevaluation's metadata in the mask form (`metadata/OpenImages/<split>`).
use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{find_dir, image_sizes, sorted_subdirs, BuildContext};
use crate::data::builders::wsol::{self, Localization, WsolItem};
use crate::data::error::{format_err, IoContext, Result};
use crate::data::index::{Sample, SplitIndex};

pub const IMAGES: &str = "OpenImages_images.zip";
pub const ANNOTATIONS: &str = "OpenImages_annotations.zip";
/// Optional: val/test images and masks again (wsolevaluation's evaluation-only download).
pub const EVAL: &str = "OpenImages30k_eval.zip";
pub const SPLITS: [&str; 3] = ["train", "val", "test"];

/// What a file in a class folder is, by its name.
#[derive(Debug, PartialEq)]
enum Kind {
    Image,
    InstanceMask,
    Ignore,
}

/// `(image id, kind)` of a file in class folder `class`, or `None` if the name follows none of the three
/// patterns. The class in a mask name must be the folder's own (class folders may contain `_`, e.g. `0bt_c3`).
fn classify(name: &str, class: &str) -> Option<(String, Kind)> {
    let id_ok = |id: &str| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric());
    if let Some(id) = name.strip_suffix(".jpg") {
        return id_ok(id).then(|| (id.to_string(), Kind::Image));
    }
    let stem = name.strip_suffix(".png")?;
    if let Some(id) = stem.strip_suffix("_ignore") {
        return id_ok(id).then(|| (id.to_string(), Kind::Ignore));
    }
    let (head, hex) = stem.rsplit_once('_')?;
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let id = head.strip_suffix(&format!("_m{class}"))?;
    id_ok(id).then(|| (id.to_string(), Kind::InstanceMask))
}

/// split → class folder → file name → where it is on disk.
type Tree = BTreeMap<String, BTreeMap<String, BTreeMap<String, PathBuf>>>;

/// Add one extracted zip's `{train,val,test}/<class>/<file>` to `tree`. Errors if it has none of the splits.
fn add_zip(ctx: &BuildContext, zip: &str, tree: &mut Tree) -> Result<()> {
    let ex = ctx.extracted(zip)?;
    let mut found = false;
    for split in SPLITS {
        let Some(split_dir) = find_dir(&ex, split) else {
            continue;
        };
        found = true;
        let classes = tree.entry(split.to_string()).or_default();
        for class in sorted_subdirs(&split_dir)? {
            let class_dir = split_dir.join(&class);
            let files = classes.entry(class.clone()).or_default();
            let mut entries: Vec<(String, PathBuf, bool)> = std::fs::read_dir(&class_dir)
                .at(&class_dir)?
                .map(|e| {
                    let e = e.at(&class_dir)?;
                    let is_file = e.file_type().at(e.path())?.is_file();
                    Ok((
                        e.file_name().to_string_lossy().into_owned(),
                        e.path(),
                        is_file,
                    ))
                })
                .collect::<Result<_>>()?;
            entries.sort();
            for (name, path, is_file) in entries {
                if !is_file {
                    return Err(format_err(
                        &path,
                        "not a regular file; an OpenImages30k class folder holds only images and mask PNGs",
                    ));
                }
                match files.get(&name) {
                    None => {
                        files.insert(name, path);
                    }
                    // The zips overlap (the eval zip repeats val/test): the same file must be the same size.
                    Some(first) => {
                        let a = std::fs::metadata(first).at(first)?.len();
                        let b = std::fs::metadata(&path).at(&path)?.len();
                        if a != b {
                            return Err(format_err(
                                &path,
                                format!(
                                    "{b} bytes, but the same file from another zip ({}) has {a}; re-fetch the zips",
                                    first.display()
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
    if !found {
        return Err(ctx.err(format!(
            "{zip} has none of {} at its top or one folder below ({})",
            SPLITS.map(|s| format!("{s}/")).join(" "),
            ex.display()
        )));
    }
    Ok(())
}

/// One image with its masks (file names in its class folder).
#[derive(Default)]
struct Image {
    jpg: Option<PathBuf>,
    masks: Vec<(String, PathBuf)>,
    ignore: Option<(String, PathBuf)>,
}

/// Group a class folder's files by image id; every name must follow one of the three patterns and every mask
/// must belong to an image in the same folder.
fn group(class: &str, files: &BTreeMap<String, PathBuf>) -> Result<BTreeMap<String, Image>> {
    let mut images: BTreeMap<String, Image> = BTreeMap::new();
    for (name, path) in files {
        let (id, kind) = classify(name, class).ok_or_else(|| {
            format_err(
                path,
                format!(
                    "not an OpenImages30k file name; expected `<imgid>.jpg`, `<imgid>_m{class}_<8 hex>.png` \
                     (the class in a mask name is its folder's) or `<imgid>_ignore.png`"
                ),
            )
        })?;
        let img = images.entry(id).or_default();
        match kind {
            Kind::Image => img.jpg = Some(path.clone()),
            // `files` is sorted by name, so masks stay sorted.
            Kind::InstanceMask => img.masks.push((name.clone(), path.clone())),
            Kind::Ignore => img.ignore = Some((name.clone(), path.clone())),
        }
    }
    for (id, img) in &images {
        if img.jpg.is_none() {
            let (_, orphan) = img
                .masks
                .first()
                .or(img.ignore.as_ref())
                .expect("grouped from a file");
            return Err(format_err(
                orphan,
                format!("mask of image `{id}`, but there is no {id}.jpg in its folder (in any of the zips)"),
            ));
        }
    }
    Ok(images)
}

pub fn build(ctx: &BuildContext) -> Result<Vec<SplitIndex>> {
    let mut tree = Tree::new();
    add_zip(ctx, IMAGES, &mut tree)?;
    add_zip(ctx, ANNOTATIONS, &mut tree)?;
    if ctx.include_optional && ctx.has_file(EVAL) {
        add_zip(ctx, EVAL, &mut tree)?;
    }
    if let Some(missing) = SPLITS.iter().find(|s| !tree.contains_key(**s)) {
        return Err(ctx.err(format!("no {missing}/ folder in {IMAGES} or {ANNOTATIONS}")));
    }
    // Labels index the sorted union of class folders over all splits.
    let mut classes: Vec<String> = tree.values().flat_map(|c| c.keys().cloned()).collect();
    classes.sort();
    classes.dedup();
    let label: BTreeMap<&str, i64> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as i64))
        .collect();

    let mut out = vec![];
    for split in SPLITS {
        // (class, image id, files), sorted by class folder then image id.
        let mut images = vec![];
        for (class, files) in &tree[split] {
            for (id, img) in group(class, files)? {
                images.push((class.as_str(), id, img));
            }
        }
        let paths: Vec<PathBuf> = images
            .iter()
            .map(|(_, _, img)| img.jpg.clone().expect("checked by group"))
            .collect();
        let sizes = image_sizes(&paths)?;
        let mut items = Vec::with_capacity(images.len());
        let mut samples = Vec::with_capacity(images.len());
        for (k, (class, id, img)) in images.iter().enumerate() {
            // wsolevaluation's paths: relative to the folder the zips are unzipped into.
            let in_root = |name: &str| format!("{split}/{class}/{name}");
            let (width, height) = sizes[k];
            items.push(WsolItem {
                path: in_root(&format!("{id}.jpg")),
                label: label[class],
                width,
                height,
                boxes: vec![],
                masks: img.masks.iter().map(|(n, _)| in_root(n)).collect(),
                ignore_mask: img.ignore.as_ref().map(|(n, _)| in_root(n)),
            });
            samples.push(Sample {
                path: ctx.rel(&paths[k]),
                labels: vec![label[class]],
                boxes: vec![],
                mask: None,
                instance_masks: img.masks.iter().map(|(_, p)| ctx.rel(p)).collect(),
                ignore_mask: img.ignore.as_ref().map(|(_, p)| ctx.rel(p)),
                width,
                height,
            });
        }
        // Mask form: image_sizes.txt is empty, as upstream's OpenImages metadata has it; the index keeps sizes.
        wsol::export_split(
            &ctx.dir.build().join("wsol/metadata/OpenImages").join(split),
            &items,
            Localization::Masks,
        )?;
        out.push(
            SplitIndex::new(ctx.dataset, split, classes.clone(), "class", samples)
                .with_mask_rule("binary")
                .with_provenance(format!(
                    "OpenImages30k {split}/ (wsolevaluation); labels = sorted class-folder index"
                )),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{classify, Kind};

    #[test]
    fn file_names() {
        let c = |n: &str| classify(n, "0bt_c3");
        assert_eq!(
            c("1cd9ac0169ec7df0.jpg"),
            Some(("1cd9ac0169ec7df0".into(), Kind::Image))
        );
        assert_eq!(
            c("1cd9ac0169ec7df0_m0bt_c3_6932e993.png"),
            Some(("1cd9ac0169ec7df0".into(), Kind::InstanceMask))
        );
        assert_eq!(
            c("1cd9ac0169ec7df0_ignore.png"),
            Some(("1cd9ac0169ec7df0".into(), Kind::Ignore))
        );
        // Another class's mask, a short hash, a missing `m`, a stray extension.
        assert_eq!(c("1cd9ac0169ec7df0_m0by6g_9f8621ff.png"), None);
        assert_eq!(c("1cd9ac0169ec7df0_m0bt_c3_6932e99.png"), None);
        assert_eq!(c("1cd9ac0169ec7df0_0bt_c3_6932e993.png"), None);
        assert_eq!(c("1cd9ac0169ec7df0.png"), None);
        assert_eq!(c("notes.txt"), None);
    }
}
