//! ImageNet-9 (370 classes) and the "-9" shift sets. As the official code's `NineDataset` does (and as
//! checked against `in_to_in9.json`), an image is kept iff its class wnid is one of the 370 IN-9 classes, and
//! it gets that class's superclass label. The 370 classes are pinned in `datasets/imagenet9/in9_370_classes.tsv`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{image_sizes, sorted_images, sorted_subdirs, BuildContext};
use crate::data::error::Result;
use crate::data::index::{Sample, SplitIndex};

pub const IN9_370_TSV: &str = include_str!("../../../datasets/imagenet9/in9_370_classes.tsv");
pub const IMAGENET_R_9_TSV: &str =
    include_str!("../../../datasets/imagenet9/imagenet_r_9_classes.tsv");

/// The nine superclass names in label order.
pub const SUPERCLASSES: [&str; 9] = [
    "dog",
    "bird",
    "wheeled vehicle",
    "reptile",
    "carnivore",
    "insect",
    "musical instrument",
    "primate",
    "fish",
];

/// wnid → IN-9 label, from a pinned TSV (`imagenet_index, wnid, imagenet_name, in9_label, in9_name`).
pub fn wnid_to_in9(tsv: &str) -> BTreeMap<String, i64> {
    tsv.lines()
        .skip(1)
        .filter_map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            Some((c.get(1)?.to_string(), c.get(3)?.trim().parse().ok()?))
        })
        .collect()
}

fn superclasses() -> Vec<String> {
    SUPERCLASSES.iter().map(|s| s.to_string()).collect()
}

/// Images in `root/<wnid>/*`, sorted by (wnid, file). `keep` maps a wnid to its label; others are skipped.
fn wnid_folders(
    root: &Path,
    label_of: &dyn Fn(&str) -> Option<i64>,
) -> Result<(Vec<PathBuf>, Vec<i64>)> {
    let mut paths = vec![];
    let mut labels = vec![];
    for wnid in sorted_subdirs(root)? {
        let Some(l) = label_of(&wnid) else { continue };
        for f in sorted_images(&root.join(&wnid))? {
            paths.push(root.join(&wnid).join(f));
            labels.push(l);
        }
    }
    Ok((paths, labels))
}

fn index(
    ctx: &BuildContext,
    split: &str,
    classes: Vec<String>,
    kind: &str,
    paths: &[PathBuf],
    labels: &[i64],
    prov: String,
) -> Result<SplitIndex> {
    let sizes = image_sizes(paths)?;
    let samples = paths
        .iter()
        .enumerate()
        .map(|(i, p)| Sample {
            path: ctx.rel(p),
            labels: vec![labels[i]],
            width: sizes[i].0,
            height: sizes[i].1,
            ..Default::default()
        })
        .collect();
    Ok(SplitIndex::new(ctx.dataset, split, classes, kind, samples).with_provenance(prov))
}

/// The `-9` index of `root/<wnid>/*` (errors if no IN-9 class folder is there).
fn nine(ctx: &BuildContext, root: &Path, split: &str, prov: &str) -> Result<SplitIndex> {
    let map = wnid_to_in9(IN9_370_TSV);
    let (paths, labels) = wnid_folders(root, &|w| map.get(w).copied())?;
    if paths.is_empty() {
        return Err(ctx.err(format!(
            "{} has no images in any of the 370 IN-9 class folders (<wnid>/)",
            root.display()
        )));
    }
    index(
        ctx,
        split,
        superclasses(),
        "superclass",
        &paths,
        &labels,
        format!("{prov}; 370 IN-9 wnids (in_to_in9.json @46d224bb)"),
    )
}

/// All classes of `root/<wnid>/*`, labels = position in the sorted wnid list.
fn full(ctx: &BuildContext, root: &Path, split: &str, prov: &str) -> Result<SplitIndex> {
    let wnids: Vec<String> = sorted_subdirs(root)?
        .into_iter()
        .filter(|w| w.starts_with('n'))
        .collect();
    let pos: BTreeMap<&str, i64> = wnids
        .iter()
        .enumerate()
        .map(|(i, w)| (w.as_str(), i as i64))
        .collect();
    let (paths, labels) = wnid_folders(root, &|w| pos.get(w).copied())?;
    index(
        ctx,
        split,
        wnids.clone(),
        "class",
        &paths,
        &labels,
        prov.to_string(),
    )
}

fn sub(ctx: &BuildContext, base: &Path, name: &str) -> Result<PathBuf> {
    super::find_dir(base, name)
        .ok_or_else(|| ctx.err(format!("no {name}/ folder in {}", base.display())))
}

/// ImageNet-9 from the user's ImageNet in class folders: `--source DIR` with `train/<wnid>/` and/or `val/<wnid>/`.
pub fn build_imagenet9(ctx: &BuildContext) -> Result<Vec<SplitIndex>> {
    let src = ctx.source()?;
    let mut out = vec![];
    for split in ["train", "val"] {
        let d = src.join(split);
        if d.is_dir() {
            out.push(nine(ctx, &d, split, &format!("--source {}", d.display()))?);
        }
    }
    if out.is_empty() {
        return Err(ctx.err(format!(
            "{} has neither train/ nor val/ (class folders named by wnid)",
            src.display()
        )));
    }
    Ok(out)
}

/// ImageNet-Sketch: `sketch/<wnid>/*.JPEG` → `test` (all classes) and `test-9`.
pub fn build_sketch(ctx: &BuildContext) -> Result<Vec<SplitIndex>> {
    let root = sub(ctx, &ctx.extracted("ImageNet-Sketch.zip")?, "sketch")?;
    Ok(vec![
        full(ctx, &root, "test", "ImageNet-Sketch.zip sketch/")?,
        nine(ctx, &root, "test-9", "ImageNet-Sketch")?,
    ])
}

/// ImageNet-R: `imagenet-r/<wnid>/*.jpg` → `test` (200 classes) and `test-9` (99 classes).
pub fn build_imagenet_r(ctx: &BuildContext) -> Result<Vec<SplitIndex>> {
    let root = sub(ctx, &ctx.extracted("imagenet-r.tar")?, "imagenet-r")?;
    Ok(vec![
        full(ctx, &root, "test", "imagenet-r.tar imagenet-r/")?,
        nine(ctx, &root, "test-9", "ImageNet-R")?,
    ])
}

/// ImageNet-C: `<corruption>/<severity>/<wnid>/*.JPEG` in each family tar → `<corruption>-<severity>` (-9).
pub fn build_imagenet_c(ctx: &BuildContext) -> Result<Vec<SplitIndex>> {
    let mut out = vec![];
    for f in &ctx.manifest.files {
        if !ctx.has_file(&f.name) || (f.optional && !ctx.include_optional) {
            continue;
        }
        let ex = ctx.extracted(&f.name)?;
        for corruption in sorted_subdirs(&ex)? {
            for severity in sorted_subdirs(&ex.join(&corruption))? {
                let root = ex.join(&corruption).join(&severity);
                let prov = format!("{} {corruption}/{severity}", f.name);
                out.push(nine(
                    ctx,
                    &root,
                    &format!("{corruption}-{severity}"),
                    &prov,
                )?);
            }
        }
    }
    if out.is_empty() {
        return Err(ctx.err("no ImageNet-C family archive was extracted"));
    }
    Ok(out)
}

/// Stylized-ImageNet-9 from the user's generated folder: `--source DIR` with `val/<wnid>/*.png` (and train/).
pub fn build_stylized(ctx: &BuildContext) -> Result<Vec<SplitIndex>> {
    let mut out = build_imagenet9(ctx)?;
    for idx in &mut out {
        idx.header.split = format!("{}-9", idx.header.split);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_class_lists() {
        let m = wnid_to_in9(IN9_370_TSV);
        assert_eq!(m.len(), 370);
        let mut per = [0usize; 9];
        for l in m.values() {
            per[*l as usize] += 1;
        }
        assert_eq!(per, [116, 52, 42, 36, 35, 27, 26, 20, 16]);
        let r = wnid_to_in9(IMAGENET_R_9_TSV);
        assert_eq!(r.len(), 99);
        assert!(r.iter().all(|(w, l)| m.get(w) == Some(l)));
        assert_eq!(
            crate::data::source::hash::sha256_hex(IN9_370_TSV.as_bytes()),
            "50e93e9e4e568b8f59ff37a052140827219b8e2da5cf8a14e1a5db0d591e6ebc"
        );
    }
}
