//! CUB-200-2011: images, masks (segmentations.tgz), boxes, labels; the official train/test split, ReDO's
//! split (Tables 1-2), the linear-eval train/val carve-out, and the wsolevaluation metadata export.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{find_dir, image_sizes, BuildContext};
use crate::data::builders::split;
use crate::data::builders::wsol::{self, Localization, WsolItem};
use crate::data::error::{format_err, IoContext, Result};
use crate::data::index::{Sample, SplitIndex};

/// `<id> <rest>` lines → map id → rest.
fn id_table(path: &Path) -> Result<Vec<(u32, String)>> {
    let text = std::fs::read_to_string(path).at(path)?;
    let mut out = vec![];
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (id, rest) = line
            .split_once(' ')
            .ok_or_else(|| format_err(path, format!("line {}: expected `<id> <value>`", i + 1)))?;
        let id: u32 = id
            .parse()
            .map_err(|_| format_err(path, format!("line {}: bad id `{id}`", i + 1)))?;
        out.push((id, rest.trim().to_string()));
    }
    Ok(out)
}

pub fn build(ctx: &BuildContext) -> Result<Vec<SplitIndex>> {
    let ex = ctx.extracted("CUB_200_2011.tgz")?;
    let root = find_dir(&ex, "CUB_200_2011").unwrap_or(ex.clone());
    let images = id_table(&root.join("images.txt"))?;
    let labels: HashMap<u32, String> = id_table(&root.join("image_class_labels.txt"))?
        .into_iter()
        .collect();
    let split: HashMap<u32, String> = id_table(&root.join("train_test_split.txt"))?
        .into_iter()
        .collect();
    let boxes: HashMap<u32, String> = id_table(&root.join("bounding_boxes.txt"))?
        .into_iter()
        .collect();
    let classes_tbl = id_table(&root.join("classes.txt"))?;
    let classes: Vec<String> = classes_tbl.iter().map(|(_, n)| n.clone()).collect();
    let seg_root = if ctx.has_file("segmentations.tgz") {
        let sx = ctx.extracted("segmentations.tgz")?;
        Some(
            find_dir(&sx, "segmentations")
                .ok_or_else(|| ctx.err("segmentations.tgz has no segmentations/ folder"))?,
        )
    } else {
        None
    };

    let paths: Vec<PathBuf> = images
        .iter()
        .map(|(_, p)| root.join("images").join(p))
        .collect();
    let sizes = image_sizes(&paths)?;
    let mut samples = Vec::with_capacity(images.len());
    let mut is_train = Vec::with_capacity(images.len());
    for (k, (id, rel)) in images.iter().enumerate() {
        let bad = |what: &str| ctx.err(format!("image id {id} ({rel}) has no entry in {what}"));
        let class_id: i64 = labels
            .get(id)
            .ok_or_else(|| bad("image_class_labels.txt"))?
            .parse()
            .map_err(|_| ctx.err(format!("image id {id}: bad class id")))?;
        let b: Vec<f64> = boxes
            .get(id)
            .ok_or_else(|| bad("bounding_boxes.txt"))?
            .split_whitespace()
            .map(|v| v.parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| ctx.err(format!("image id {id}: bad bounding box")))?;
        if b.len() != 4 {
            return Err(ctx.err(format!("image id {id}: bounding box needs 4 numbers")));
        }
        let mask = match &seg_root {
            Some(s) => {
                let m = s.join(Path::new(rel).with_extension("png"));
                if !m.is_file() {
                    return Err(ctx.err(format!("missing segmentation {}", m.display())));
                }
                Some(ctx.rel(&m))
            }
            None => None,
        };
        let (w, h) = sizes[k];
        samples.push(Sample {
            path: ctx.rel(&paths[k]),
            labels: vec![class_id - 1],
            boxes: vec![[b[0], b[1], b[0] + b[2], b[1] + b[3]]],
            mask,
            instance_masks: vec![],
            ignore_mask: None,
            width: w,
            height: h,
        });
        is_train.push(split.get(id).ok_or_else(|| bad("train_test_split.txt"))? == "1");
    }
    let rule = if seg_root.is_some() {
        Some("gray-gt-127")
    } else {
        None
    };
    let mk = |name: &str, s: Vec<Sample>, prov: &str| {
        let mut idx =
            SplitIndex::new(ctx.dataset, name, classes.clone(), "class", s).with_provenance(prov);
        if let Some(r) = rule {
            idx = idx.with_mask_rule(r);
        }
        idx
    };
    let pick = |f: &dyn Fn(usize) -> bool| -> Vec<Sample> {
        samples
            .iter()
            .enumerate()
            .filter(|(i, _)| f(*i))
            .map(|(_, s)| s.clone())
            .collect()
    };
    let train = pick(&|i| is_train[i]);
    let test = pick(&|i| !is_train[i]);
    let mut out = vec![];

    // Linear eval: ImageFolder over train/<class>/<file>, i.e. sorted by (class folder, file name).
    let mut folder_order: Vec<Sample> = train.clone();
    folder_order.sort_by(|a, b| a.path.cmp(&b.path));
    let n = folder_order.len();
    if n > 1000 {
        let (tr, va) =
            split::lineval_split(n, [n - 1000, 1000], Some((split::PINNED_CUB_VAL, 5994)));
        let take = |ix: &[usize]| {
            ix.iter()
                .map(|&i| folder_order[i].clone())
                .collect::<Vec<_>>()
        };
        out.push(mk(
            "lineval-train",
            take(&tr),
            "random_split(train in ImageFolder order, [n-1000, 1000], seed 42)",
        ));
        out.push(mk(
            "lineval-val",
            take(&va),
            "random_split(train in ImageFolder order, [n-1000, 1000], seed 42)",
        ));
    }

    // ReDO split (Tables 1-2): `<image_id> <0 train|1 val|2 test>`, rows aligned with images.txt.
    let redo_path = ctx.download("redo_cub_split.txt");
    if redo_path.is_file() {
        let redo: HashMap<u32, String> = id_table(&redo_path)?.into_iter().collect();
        let mut parts: [Vec<Sample>; 3] = Default::default();
        for (k, (id, _)) in images.iter().enumerate() {
            let v = redo
                .get(id)
                .ok_or_else(|| ctx.err(format!("image id {id} is missing from the ReDO split")))?;
            let slot: usize = v.parse().ok().filter(|s| *s < 3).ok_or_else(|| {
                format_err(
                    &redo_path,
                    format!("image id {id}: split `{v}` is not 0, 1 or 2"),
                )
            })?;
            parts[slot].push(samples[k].clone());
        }
        let [a, b, c] = parts;
        out.push(mk("redo-train", a, "ReDO split data/splits/cub.txt (0)"));
        out.push(mk("redo-val", b, "ReDO split data/splits/cub.txt (1)"));
        out.push(mk("redo-test", c, "ReDO split data/splits/cub.txt (2)"));
    }

    // wsolevaluation metadata (paths relative to CUB_200_2011/images).
    for (name, set) in [("train", &train), ("test", &test)] {
        let items: Vec<WsolItem> = set
            .iter()
            .map(|s| WsolItem {
                path: s
                    .path
                    .split_once("/images/")
                    .map(|x| x.1.to_string())
                    .unwrap_or_else(|| s.path.clone()),
                label: s.labels[0],
                width: s.width,
                height: s.height,
                boxes: s.boxes.clone(),
                masks: vec![],
                ignore_mask: None,
            })
            .collect();
        wsol::export_split(
            &ctx.dir.build().join("wsol/metadata/CUB").join(name),
            &items,
            Localization::Boxes,
        )?;
    }

    out.push(mk("train", train, "train_test_split.txt (1)"));
    out.push(mk("test", test, "train_test_split.txt (0)"));
    Ok(out)
}
