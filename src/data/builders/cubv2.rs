//! CUBV2: wsolevaluation's CUB `train-fullsup` split (its metadata `CUB/val`), about 5 Flickr images per CUB
//! class, 1000 in all, as `<NNN.Class>/<flickr id>.jpg`. `prepare_cub.sh` untars CUBV2.tar straight into its
//! CUB image root, so the tar holds the class folders and nothing else is read from it. Labels are the sorted
//! class-folder index, checked to equal CUB's class id - 1 so they agree with `cub200`. wsolevaluation
//! publishes the CUBV2 boxes in its repository (`metadata/CUB/val/localization.txt`), not in the tar, so the
//! export has no `localization.txt`.
use std::path::{Path, PathBuf};

use super::{labelled_split_with_wsol, sorted_subdirs, BuildContext};
use crate::data::error::{IoContext, Result};
use crate::data::index::SplitIndex;

pub const FILE: &str = "CUBV2.tar";

/// The number of a CUB class folder `NNN.Name`.
fn class_number(folder: &str) -> Option<usize> {
    let (n, name) = folder.split_once('.')?;
    if n.len() != 3 || !n.bytes().all(|b| b.is_ascii_digit()) || name.is_empty() {
        return None;
    }
    n.parse().ok()
}

/// The folder holding the class folders: the extraction root, or its only sub-folder when the tar has a
/// top folder.
fn class_root(ctx: &BuildContext, ex: &Path) -> Result<PathBuf> {
    let dirs = sorted_subdirs(ex)?;
    if dirs.iter().any(|d| class_number(d).is_some()) {
        return Ok(ex.to_path_buf());
    }
    if let [only] = dirs.as_slice() {
        let inner = ex.join(only);
        if sorted_subdirs(&inner)?
            .iter()
            .any(|d| class_number(d).is_some())
        {
            return Ok(inner);
        }
    }
    Err(ctx.err(format!(
        "{FILE}: no CUB class folders (`NNN.Name/`) in {}; expected the layout wsolevaluation's prepare_cub.sh \
         untars into dataset/CUB",
        ex.display()
    )))
}

/// Sorted file names directly in `dir`, split into images and everything else.
fn files(dir: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let images = super::sorted_images(dir)?;
    let mut other: Vec<String> = std::fs::read_dir(dir)
        .at(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !images.contains(n))
        .collect();
    other.sort();
    Ok((images, other))
}

pub fn build(ctx: &BuildContext) -> Result<Vec<SplitIndex>> {
    let root = class_root(ctx, &ctx.extracted(FILE)?)?;
    let classes = sorted_subdirs(&root)?;
    let mut paths = vec![];
    let mut rel = vec![];
    let mut labels = vec![];
    let mut skipped = vec![];
    for (label, class) in classes.iter().enumerate() {
        let Some(n) = class_number(class) else {
            return Err(ctx.err(format!(
                "{FILE}: folder `{class}` in {} is not a CUB class folder `NNN.Name`",
                root.display()
            )));
        };
        // A missing class folder would shift every later label off CUB's class id - 1.
        if n != label + 1 {
            return Err(ctx.err(format!(
                "{FILE}: class folder `{class}` in {} sorts at 0-based position {label}, so its label would \
                 be {label} instead of CUB's {} (= {n:03} - 1); a class folder before it is missing or misnamed",
                root.display(),
                n as i64 - 1
            )));
        }
        let (images, other) = files(&root.join(class))?;
        skipped.extend(other.into_iter().map(|f| format!("{class}/{f}")));
        for f in images {
            paths.push(root.join(class).join(&f));
            rel.push(format!("{class}/{f}"));
            labels.push(label as i64);
        }
    }
    if paths.is_empty() {
        return Err(ctx.err(format!("{FILE}: no images under {}", root.display())));
    }
    if !skipped.is_empty() {
        tracing::warn!(
            "{FILE}: {} files that are not images were left out: {}",
            skipped.len(),
            skipped.join(", ")
        );
    }
    let samples = labelled_split_with_wsol(
        ctx,
        &paths,
        &rel,
        &labels,
        &ctx.dir.build().join("wsol/metadata/CUB/val"),
    )?;
    Ok(vec![SplitIndex::new(ctx.dataset, "val", classes, "class", samples)
        .with_provenance(
            "CUBV2.tar (wsolevaluation train-fullsup, metadata CUB/val); labels = sorted class-folder index",
        )])
}

#[cfg(test)]
mod tests {
    use super::class_number;

    #[test]
    fn class_folder_numbers() {
        assert_eq!(class_number("001.Black_footed_Albatross"), Some(1));
        assert_eq!(class_number("200.Common_Yellowthroat"), Some(200));
        assert_eq!(class_number("01.Short"), None);
        assert_eq!(class_number("001."), None);
        assert_eq!(class_number("images"), None);
    }
}
