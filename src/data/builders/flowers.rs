//! Oxford Flowers-102: `jpg/image_%05d.jpg`, labels from `imagelabels.mat` (1..102), splits from `setid.mat`
//! (`trnid`, `valid`, `tstid`). Classification splits follow torchvision/TFDS (train = trnid). The
//! segmentation splits follow ReDO, swapped on purpose as in the paper's code: seg-train = tstid,
//! seg-val = valid, seg-test = trnid. Masks are `segmim/segmim_%05d.jpg`, foreground iff R≠0, G≠0, B≠254.
use std::path::PathBuf;

use super::{find_dir, image_sizes, BuildContext};
use crate::data::error::{format_err, Result};
use crate::data::formats::mat5;
use crate::data::index::{Sample, SplitIndex};

pub fn build(ctx: &BuildContext) -> Result<Vec<SplitIndex>> {
    let jpg = find_dir(&ctx.extracted("102flowers.tgz")?, "jpg")
        .ok_or_else(|| ctx.err("102flowers.tgz has no jpg/ folder"))?;
    let labels_path = ctx.download("imagelabels.mat");
    let setid_path = ctx.download("setid.mat");
    let labels = mat5::read(&labels_path)?;
    let labels = &labels
        .get("labels")
        .ok_or_else(|| format_err(&labels_path, "no `labels` variable"))?
        .data;
    let setid = mat5::read(&setid_path)?;
    let segmim = if ctx.has_file("102segmentations.tgz") {
        Some(
            find_dir(&ctx.extracted("102segmentations.tgz")?, "segmim")
                .ok_or_else(|| ctx.err("102segmentations.tgz has no segmim/ folder"))?,
        )
    } else {
        None
    };
    let classes: Vec<String> = (1..=102).map(|i| format!("{i:03}")).collect();
    let ids = |key: &str| -> Result<Vec<usize>> {
        let v = setid
            .get(key)
            .ok_or_else(|| format_err(&setid_path, format!("no `{key}` variable")))?;
        Ok(v.data.iter().map(|&x| x as usize).collect())
    };
    let make = |split: &str, ids: &[usize], with_masks: bool, prov: &str| -> Result<SplitIndex> {
        let paths: Vec<PathBuf> = ids
            .iter()
            .map(|i| jpg.join(format!("image_{i:05}.jpg")))
            .collect();
        let sizes = image_sizes(&paths)?;
        let mut samples = vec![];
        for (k, &id) in ids.iter().enumerate() {
            let l = *labels.get(id.wrapping_sub(1)).ok_or_else(|| {
                format_err(
                    &labels_path,
                    format!("image id {id} has no label ({} labels)", labels.len()),
                )
            })?;
            if !(1.0..=102.0).contains(&l) {
                return Err(format_err(
                    &labels_path,
                    format!("label {l} of image {id} is not in 1..102"),
                ));
            }
            let mask = match (&segmim, with_masks) {
                (Some(s), true) => {
                    let m = s.join(format!("segmim_{id:05}.jpg"));
                    if !m.is_file() {
                        return Err(ctx.err(format!("missing segmentation {}", m.display())));
                    }
                    Some(ctx.rel(&m))
                }
                _ => None,
            };
            samples.push(Sample {
                path: ctx.rel(&paths[k]),
                labels: vec![l as i64 - 1],
                boxes: vec![],
                mask,
                instance_masks: vec![],
                ignore_mask: None,
                width: sizes[k].0,
                height: sizes[k].1,
            });
        }
        let mut idx = SplitIndex::new(ctx.dataset, split, classes.clone(), "class", samples)
            .with_provenance(prov);
        if with_masks && segmim.is_some() {
            idx = idx.with_mask_rule("flowers-not-blue");
        }
        Ok(idx)
    };
    let (trn, val, tst) = (ids("trnid")?, ids("valid")?, ids("tstid")?);
    let mut out = vec![
        make("train", &trn, false, "setid.mat trnid")?,
        make("val", &val, false, "setid.mat valid")?,
        make("test", &tst, false, "setid.mat tstid")?,
    ];
    if segmim.is_some() {
        out.push(make(
            "seg-train",
            &tst,
            true,
            "ReDO convention: setid.mat tstid",
        )?);
        out.push(make(
            "seg-val",
            &val,
            true,
            "ReDO convention: setid.mat valid",
        )?);
        out.push(make(
            "seg-test",
            &trn,
            true,
            "ReDO convention: setid.mat trnid",
        )?);
    }
    Ok(out)
}
