//! Oxford-IIIT Pets: `images/<Breed>_<n>.jpg`; `annotations/{trainval,test}.txt` lines
//! `<image> <class_id 1..37> <species> <breed_id>` (label = class_id − 1); trimaps as masks (1 = pet,
//! 2 = background, 3 = border); head boxes from `annotations/xmls/<image>.xml` (trainval only). Linear eval:
//! random_split(trainval, [2940, 740], seed 42).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{find_dir, image_sizes, BuildContext};
use crate::data::builders::split;
use crate::data::error::{format_err, IoContext, Result};
use crate::data::index::{Sample, SplitIndex};

fn tag(xml: &str, name: &str) -> Option<f64> {
    let open = format!("<{name}>");
    let s = xml.find(&open)? + open.len();
    let e = xml[s..].find('<')? + s;
    xml[s..e].trim().parse().ok()
}

fn head_box(path: &Path) -> Option<[f64; 4]> {
    let xml = std::fs::read_to_string(path).ok()?;
    let b = &xml[xml.find("<bndbox>")?..];
    Some([
        tag(b, "xmin")?,
        tag(b, "ymin")?,
        tag(b, "xmax")?,
        tag(b, "ymax")?,
    ])
}

pub fn build(ctx: &BuildContext) -> Result<Vec<SplitIndex>> {
    let images = find_dir(&ctx.extracted("images.tar.gz")?, "images")
        .ok_or_else(|| ctx.err("images.tar.gz has no images/"))?;
    let ann = find_dir(&ctx.extracted("annotations.tar.gz")?, "annotations")
        .ok_or_else(|| ctx.err("annotations.tar.gz has no annotations/"))?;
    let mut lists = vec![];
    let mut names: BTreeMap<i64, String> = BTreeMap::new();
    for split in ["trainval", "test"] {
        let p = ann.join(format!("{split}.txt"));
        let text = std::fs::read_to_string(&p).at(&p)?;
        let mut rows = vec![];
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let c: Vec<&str> = line.split_whitespace().collect();
            let class: i64 = c
                .get(1)
                .and_then(|x| x.parse().ok())
                .filter(|x| (1..=37).contains(x))
                .ok_or_else(|| {
                    format_err(
                        &p,
                        format!(
                            "line {}: expected `<image> <class_id 1..37> <species> <breed_id>`",
                            i + 1
                        ),
                    )
                })?;
            let img = c[0].to_string();
            let breed = img
                .rsplit_once('_')
                .map(|x| x.0.to_string())
                .unwrap_or_else(|| img.clone());
            names.entry(class).or_insert(breed);
            rows.push((img, class - 1));
        }
        lists.push((split, rows));
    }
    let classes: Vec<String> = (1..=37)
        .map(|c| {
            names
                .get(&c)
                .cloned()
                .unwrap_or_else(|| format!("class_{c}"))
        })
        .collect();
    let mut out = vec![];
    for (split, rows) in lists {
        let paths: Vec<PathBuf> = rows
            .iter()
            .map(|(n, _)| images.join(format!("{n}.jpg")))
            .collect();
        let sizes = image_sizes(&paths)?;
        let samples: Vec<Sample> = rows
            .iter()
            .enumerate()
            .map(|(i, (n, l))| {
                let trimap = ann.join("trimaps").join(format!("{n}.png"));
                Sample {
                    path: ctx.rel(&paths[i]),
                    labels: vec![*l],
                    boxes: head_box(&ann.join("xmls").join(format!("{n}.xml")))
                        .into_iter()
                        .collect(),
                    mask: trimap.is_file().then(|| ctx.rel(&trimap)),
                    instance_masks: vec![],
                    ignore_mask: None,
                    width: sizes[i].0,
                    height: sizes[i].1,
                }
            })
            .collect();
        if split == "trainval" {
            let n = samples.len();
            let val = if n == 3680 {
                740
            } else {
                (n as f64 * 740.0 / 3680.0).round() as usize
            };
            let [tr, va] = split::lineval_indices(
                ctx.dataset,
                &classes,
                &samples,
                val,
                Some((split::PINNED_PETS_VAL, 3680)),
                "random_split(trainval, [2940, 740], seed 42)",
            );
            out.push(tr.with_mask_rule("pets-trimap"));
            out.push(va.with_mask_rule("pets-trimap"));
        }
        out.push(
            SplitIndex::new(ctx.dataset, split, classes.clone(), "class", samples)
                .with_provenance(format!("annotations/{split}.txt"))
                .with_mask_rule("pets-trimap"),
        );
    }
    Ok(out)
}
