//! PASCAL VOC (2007, 2012): `VOCdevkit/VOC20xx/{Annotations/<id>.xml, JPEGImages/<id>.jpg,
//! ImageSets/Main/<set>.txt, ImageSets/Segmentation/<set>.txt, SegmentationClass/<id>.png}`. One split per
//! image set: `<set>` (Main: per-box labels and boxes from the XML, image size from `<size>`) and
//! `seg-<set>` (Segmentation: class-palette masks; foreground = palette index not 0 (background) or 255 (void)).
use std::path::{Path, PathBuf};

use super::{find_dir, BuildContext};
use crate::data::error::{format_err, IoContext, Result};
use crate::data::index::{Sample, SplitIndex};

/// The 20 VOC classes in the usual (alphabetical) label order.
pub const VOC_CLASSES: [&str; 20] = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
];

fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let s = xml.find(&open)? + open.len();
    let e = xml[s..].find(&close)? + s;
    Some(xml[s..e].trim())
}

/// One annotation file: image width, height, and (class, `[xmin, ymin, xmax, ymax]`) per object.
pub type VocAnnotation = (u32, u32, Vec<(i64, [f64; 4])>);

pub fn parse_annotation(path: &Path) -> Result<VocAnnotation> {
    let xml = std::fs::read_to_string(path).at(path)?;
    let bad = |what: &str| format_err(path, format!("missing or bad {what}"));
    let size = tag(&xml, "size").ok_or_else(|| bad("<size>"))?;
    let w: u32 = tag(size, "width")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("<width>"))?;
    let h: u32 = tag(size, "height")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("<height>"))?;
    let mut objects = vec![];
    for chunk in xml.split("<object>").skip(1) {
        let name = tag(chunk, "name").ok_or_else(|| bad("<object><name>"))?;
        let class = VOC_CLASSES
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| format_err(path, format!("unknown class `{name}`")))?
            as i64;
        let b = tag(chunk, "bndbox").ok_or_else(|| bad("<bndbox>"))?;
        let mut v = [0f64; 4];
        for (i, k) in ["xmin", "ymin", "xmax", "ymax"].iter().enumerate() {
            v[i] = tag(b, k)
                .and_then(|x| x.parse().ok())
                .ok_or_else(|| bad(k))?;
        }
        objects.push((class, v));
    }
    Ok((w, h, objects))
}

fn ids(path: &Path) -> Result<Vec<String>> {
    Ok(std::fs::read_to_string(path)
        .at(path)?
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(|s| s.to_string()))
        .collect())
}

fn sets(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter_map(|n| n.strip_suffix(".txt").map(|s| s.to_string()))
                .filter(|n| !n.contains('_')) // per-class lists such as aeroplane_train.txt
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub fn build(ctx: &BuildContext) -> Result<Vec<SplitIndex>> {
    let classes: Vec<String> = VOC_CLASSES.iter().map(|s| s.to_string()).collect();
    let mut out = vec![];
    for f in ctx.manifest.files.iter().filter(|f| ctx.has_file(&f.name)) {
        let ex = ctx.extracted(&f.name)?;
        let devkit = find_dir(&ex, "VOCdevkit")
            .ok_or_else(|| ctx.err(format!("{} has no VOCdevkit/", f.name)))?;
        for year in super::sorted_subdirs(&devkit)? {
            let root = devkit.join(&year);
            let main = root.join("ImageSets/Main");
            for set in sets(&main) {
                let mut samples = vec![];
                for id in ids(&main.join(format!("{set}.txt")))? {
                    let (w, h, objs) =
                        parse_annotation(&root.join("Annotations").join(format!("{id}.xml")))?;
                    samples.push(Sample {
                        path: ctx.rel(&root.join("JPEGImages").join(format!("{id}.jpg"))),
                        labels: objs.iter().map(|o| o.0).collect(),
                        boxes: objs.iter().map(|o| o.1).collect(),
                        width: w,
                        height: h,
                        ..Default::default()
                    });
                }
                let name = format!("{}-{set}", year.to_lowercase());
                out.push(
                    SplitIndex::new(ctx.dataset, &name, classes.clone(), "per-box", samples)
                        .with_provenance(format!(
                            "{year}/ImageSets/Main/{set}.txt (1-based VOC pixel boxes)"
                        )),
                );
            }
            let segd = root.join("ImageSets/Segmentation");
            for set in sets(&segd) {
                let mut samples = vec![];
                for id in ids(&segd.join(format!("{set}.txt")))? {
                    let (w, h, objs) =
                        parse_annotation(&root.join("Annotations").join(format!("{id}.xml")))?;
                    let mask: PathBuf = root.join("SegmentationClass").join(format!("{id}.png"));
                    if !mask.is_file() {
                        return Err(ctx.err(format!("missing segmentation {}", mask.display())));
                    }
                    samples.push(Sample {
                        path: ctx.rel(&root.join("JPEGImages").join(format!("{id}.jpg"))),
                        labels: objs.iter().map(|o| o.0).collect(),
                        boxes: objs.iter().map(|o| o.1).collect(),
                        mask: Some(ctx.rel(&mask)),
                        width: w,
                        height: h,
                        ..Default::default()
                    });
                }
                let name = format!("{}-seg-{set}", year.to_lowercase());
                out.push(
                    SplitIndex::new(ctx.dataset, &name, classes.clone(), "per-box", samples)
                        .with_mask_rule("voc-palette")
                        .with_provenance(format!("{year}/ImageSets/Segmentation/{set}.txt")),
                );
            }
        }
    }
    if out.is_empty() {
        return Err(ctx.err("no VOCdevkit image sets found"));
    }
    Ok(out)
}
