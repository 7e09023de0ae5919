//! The Background Challenge: IN-9 ORIGINAL train (Dropbox `original.tar.gz`) and every test variant of the
//! release (`bg_challenge/<variant>/val/<class>/*`), with foreground masks for the original images taken from
//! `only_fg` (a pixel is foreground iff all three channels are > 0). Two class folders contain spaces
//! (`02_wheeled vehicle`, `06_musical instrument`); classes are the sorted folder names, which is label order.
use std::path::{Path, PathBuf};

use super::{find_dir, image_sizes, sorted_images, sorted_subdirs, BuildContext};
use crate::data::builders::split;
use crate::data::error::Result;
use crate::data::index::{Sample, SplitIndex};

pub const IN9_CLASS_DIRS: [&str; 9] = [
    "00_dog",
    "01_bird",
    "02_wheeled vehicle",
    "03_reptile",
    "04_carnivore",
    "05_insect",
    "06_musical instrument",
    "07_primate",
    "08_fish",
];

/// ImageFolder over `dir/<class>/<image>`, with the pinned IN-9 class folders (all nine must exist).
fn image_folder(ctx: &BuildContext, dir: &Path) -> Result<(Vec<PathBuf>, Vec<i64>)> {
    let found = sorted_subdirs(dir)?;
    if found != IN9_CLASS_DIRS {
        return Err(ctx.err(format!(
            "{}: class folders are {found:?}, expected the nine IN-9 folders {IN9_CLASS_DIRS:?}",
            dir.display()
        )));
    }
    let mut paths = vec![];
    let mut labels = vec![];
    for (label, class) in IN9_CLASS_DIRS.iter().enumerate() {
        for f in sorted_images(&dir.join(class))? {
            paths.push(dir.join(class).join(f));
            labels.push(label as i64);
        }
    }
    Ok((paths, labels))
}

fn samples(
    ctx: &BuildContext,
    paths: &[PathBuf],
    labels: &[i64],
    masks: Option<Vec<Option<String>>>,
) -> Result<Vec<Sample>> {
    let sizes = image_sizes(paths)?;
    Ok(paths
        .iter()
        .enumerate()
        .map(|(i, p)| Sample {
            path: ctx.rel(p),
            labels: vec![labels[i]],
            mask: masks.as_ref().and_then(|m| m[i].clone()),
            width: sizes[i].0,
            height: sizes[i].1,
            ..Default::default()
        })
        .collect())
}

fn classes() -> Vec<String> {
    IN9_CLASS_DIRS.iter().map(|s| s.to_string()).collect()
}

pub fn build(ctx: &BuildContext) -> Result<Vec<SplitIndex>> {
    let mut out = vec![];
    // Test variants from the release.
    let rel = ctx.extracted("backgrounds_challenge_data.tar.gz")?;
    let bg = find_dir(&rel, "bg_challenge")
        .ok_or_else(|| ctx.err("the release has no bg_challenge/ folder"))?;
    let variants: Vec<String> = sorted_subdirs(&bg)?
        .into_iter()
        .filter(|v| v != "fg_mask" && bg.join(v).join("val").is_dir())
        .collect();
    if !variants.iter().any(|v| v == "original") {
        return Err(ctx.err(format!("{} has no original/val", bg.display())));
    }
    let only_fg = bg.join("only_fg").join("val");
    for v in &variants {
        let dir = bg.join(v).join("val");
        let (paths, labels) = image_folder(ctx, &dir)?;
        let masks = if v == "original" && only_fg.is_dir() {
            let mut m = vec![];
            for p in &paths {
                let class = p.parent().and_then(|c| c.file_name()).unwrap_or_default();
                let fg = only_fg.join(class).join(p.file_name().unwrap_or_default());
                if !fg.is_file() {
                    return Err(ctx.err(format!(
                        "no only_fg mask for {} (expected {})",
                        p.display(),
                        fg.display()
                    )));
                }
                m.push(Some(ctx.rel(&fg)));
            }
            Some(m)
        } else {
            None
        };
        let has_masks = masks.is_some();
        let s = samples(ctx, &paths, &labels, masks)?;
        let mut idx = SplitIndex::new(
            ctx.dataset,
            &format!("test-{v}"),
            classes(),
            "superclass",
            s,
        )
        .with_provenance(format!("release bg_challenge/{v}/val"));
        if has_masks {
            idx = idx.with_mask_rule("rgb-all-positive");
        }
        out.push(idx);
    }
    // IN-9 ORIGINAL train (the paper's pretraining and linear-eval training set).
    if ctx.has_file("original.tar.gz") {
        let ex = ctx.extracted("original.tar.gz")?;
        let orig = find_dir(&ex, "original").unwrap_or(ex.clone());
        let train_dir = orig.join("train");
        if !train_dir.is_dir() {
            return Err(ctx.err(format!(
                "original.tar.gz has no original/train folder (looked in {})",
                orig.display()
            )));
        }
        let (paths, labels) = image_folder(ctx, &train_dir)?;
        let s = samples(ctx, &paths, &labels, None)?;
        let n = s.len();
        let lengths = split::in9_lengths(n);
        let (tr, va) = split::lineval_split(n, lengths, None);
        let prov = "random_split(original/train in ImageFolder order, [int(0.95n), rest], seed 42)";
        let take = |ix: &[usize]| ix.iter().map(|&i| s[i].clone()).collect::<Vec<_>>();
        out.push(
            SplitIndex::new(
                ctx.dataset,
                "lineval-train",
                classes(),
                "superclass",
                take(&tr),
            )
            .with_provenance(prov),
        );
        out.push(
            SplitIndex::new(
                ctx.dataset,
                "lineval-val",
                classes(),
                "superclass",
                take(&va),
            )
            .with_provenance(prov),
        );
        out.push(
            SplitIndex::new(ctx.dataset, "train", classes(), "superclass", s)
                .with_provenance("original.tar.gz original/train"),
        );
    }
    Ok(out)
}
