//! Food-101: `food-101/images/<class>/<id>.jpg`, classes in `meta/classes.txt` order (label order of the
//! paper's code), splits from `meta/train.json` / `meta/test.json` (`{class: ["class/id", …]}`), and the
//! linear-eval carve-out random_split(train, [68175, 7575], seed 42).
use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{find_dir, image_sizes, BuildContext};
use crate::data::builders::split;
use crate::data::error::{format_err, IoContext, Result};
use crate::data::index::{Sample, SplitIndex};

pub fn build(ctx: &BuildContext) -> Result<Vec<SplitIndex>> {
    let root = find_dir(&ctx.extracted("food-101.tar.gz")?, "food-101")
        .ok_or_else(|| ctx.err("no food-101/ folder"))?;
    let cls_path = root.join("meta/classes.txt");
    let classes: Vec<String> = std::fs::read_to_string(&cls_path)
        .at(&cls_path)?
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let mut out = vec![];
    for split in ["train", "test"] {
        let jp = root.join(format!("meta/{split}.json"));
        let text = std::fs::read_to_string(&jp).at(&jp)?;
        let map: BTreeMap<String, Vec<String>> =
            serde_json::from_str(&text).map_err(|e| format_err(&jp, e.to_string()))?;
        if let Some(unknown) = map.keys().find(|k| !classes.contains(k)) {
            return Err(format_err(
                &jp,
                format!("class `{unknown}` is not in meta/classes.txt"),
            ));
        }
        let mut paths: Vec<PathBuf> = vec![];
        let mut labels = vec![];
        for (label, c) in classes.iter().enumerate() {
            for rel in map.get(c).map(|v| v.as_slice()).unwrap_or(&[]) {
                paths.push(root.join("images").join(format!("{rel}.jpg")));
                labels.push(label as i64);
            }
        }
        let sizes = image_sizes(&paths)?;
        let samples: Vec<Sample> = paths
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
        if split == "train" {
            let n = samples.len();
            let val = n / 10; // 7575 of 75750
            let [tr, va] = split::lineval_indices(
                ctx.dataset,
                &classes,
                &samples,
                val,
                Some((split::PINNED_FOOD101_VAL, 75750)),
                "random_split(train, [68175, 7575] (n - n/10, n/10), seed 42)",
            );
            out.push(tr);
            out.push(va);
        }
        out.push(
            SplitIndex::new(ctx.dataset, split, classes.clone(), "class", samples)
                .with_provenance(format!("meta/{split}.json")),
        );
    }
    Ok(out)
}
