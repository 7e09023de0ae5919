//! CIFAR-10/100, python version: the pickled batches are decoded (safe pickle reader, no code execution) into
//! PNGs under `build/images/{train,test}/`. Splits: official train/test and pl_bolts' linear-eval carve-out
//! (`val_split=0.2`, seed 42: 40k/10k, pinned in `datasets/cifar10/splits/`).
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{find_dir, BuildContext};
use crate::data::builders::split;
use crate::data::error::{format_err, DataError, IoContext, Result};
use crate::data::formats::pickle;
use crate::data::index::{Sample, SplitIndex};

fn load(path: &Path) -> Result<pickle::Pickle> {
    let b = std::fs::read(path).at(path)?;
    pickle::parse(&b).map_err(|e| format_err(path, format!("pickle: {e}")))
}

/// (labels, raw N×3072 rows) of one batch.
fn batch(path: &Path, label_key: &str) -> Result<(Vec<i64>, Vec<u8>)> {
    let p = load(path)?;
    let v = p.root();
    let labels = v
        .get(label_key)
        .and_then(|l| l.as_int_list())
        .ok_or_else(|| format_err(path, format!("no `{label_key}` list")))?;
    let (shape, raw) = v
        .get("data")
        .and_then(|d| d.as_u8_array())
        .ok_or_else(|| format_err(path, "no uint8 `data` array"))?;
    if shape.len() != 2 || shape[1] != 3072 || shape[0] != labels.len() {
        return Err(format_err(
            path,
            format!(
                "data shape {shape:?} does not match {} labels × 3072",
                labels.len()
            ),
        ));
    }
    Ok((labels, raw))
}

pub fn build(ctx: &BuildContext) -> Result<Vec<SplitIndex>> {
    let file = ctx
        .manifest
        .files
        .first()
        .ok_or_else(|| ctx.err("manifest lists no archive"))?;
    let ex = ctx.extracted(&file.name)?;
    let (root, train_files, test_files, meta_file, meta_key, label_key) =
        if let Some(r) = find_dir(&ex, "cifar-10-batches-py") {
            let tr: Vec<String> = (1..=5).map(|i| format!("data_batch_{i}")).collect();
            (
                r,
                tr,
                vec!["test_batch".to_string()],
                "batches.meta",
                "label_names",
                "labels",
            )
        } else if let Some(r) = find_dir(&ex, "cifar-100-python") {
            (
                r,
                vec!["train".into()],
                vec!["test".into()],
                "meta",
                "fine_label_names",
                "fine_labels",
            )
        } else {
            return Err(ctx.err(format!(
                "{} has neither cifar-10-batches-py/ nor cifar-100-python/",
                file.name
            )));
        };
    let meta_path = root.join(meta_file);
    let classes = load(&meta_path)?
        .root()
        .get(meta_key)
        .and_then(|v| v.as_str_list())
        .ok_or_else(|| format_err(&meta_path, format!("no `{meta_key}` list")))?;
    let mut out = vec![];
    for (split, files) in [("train", &train_files), ("test", &test_files)] {
        let mut labels = vec![];
        let mut raw = vec![];
        for f in files.iter() {
            let (l, r) = batch(&root.join(f), label_key)?;
            labels.extend(l);
            raw.extend(r);
        }
        if let Some(bad) = labels
            .iter()
            .find(|&&l| l < 0 || l as usize >= classes.len())
        {
            return Err(ctx.err(format!(
                "{split}: label {bad} outside the {} classes",
                classes.len()
            )));
        }
        let dir = ctx.dir.build().join("images").join(split);
        std::fs::create_dir_all(&dir).at(&dir)?;
        let paths: Vec<PathBuf> = (0..labels.len())
            .map(|i| dir.join(format!("{i:05}.png")))
            .collect();
        paths
            .par_iter()
            .enumerate()
            .try_for_each(|(i, p)| -> Result<()> {
                let row = &raw[i * 3072..(i + 1) * 3072];
                // Rows are channel planes (R, G, B) of 32×32: CHW → HWC.
                let mut px = vec![0u8; 3072];
                for k in 0..1024 {
                    for c in 0..3 {
                        px[k * 3 + c] = row[c * 1024 + k];
                    }
                }
                let img = image::RgbImage::from_raw(32, 32, px)
                    .ok_or_else(|| format_err(p, "bad image size"))?;
                img.save(p).map_err(|e| DataError::Image {
                    path: p.clone(),
                    msg: e.to_string(),
                })
            })?;
        let samples: Vec<Sample> = paths
            .iter()
            .zip(&labels)
            .map(|(p, &l)| Sample {
                path: ctx.rel(p),
                labels: vec![l],
                width: 32,
                height: 32,
                ..Default::default()
            })
            .collect();
        if split == "train" {
            let n = samples.len();
            let val = (0.2 * n as f64) as usize;
            let [tr, va] = split::lineval_indices(
                ctx.dataset,
                &classes,
                &samples,
                val,
                Some((split::PINNED_CIFAR_VAL, 50000)),
                "pl_bolts VisionDataModule val_split=0.2: random_split(train, [n-int(0.2n), int(0.2n)], seed 42)",
            );
            out.push(tr);
            out.push(va);
        }
        out.push(
            SplitIndex::new(ctx.dataset, split, classes.clone(), "class", samples)
                .with_provenance(format!("{files:?}")),
        );
    }
    Ok(out)
}
