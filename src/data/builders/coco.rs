//! COCO 2017: per-image labels and boxes from the instances JSON (streamed: annotations are parsed one by
//! one from the file, train2017's polygons dropped as they pass), union masks for val2017 (polygons and RLE through
//! [`crate::imgops::rle`], as pycocotools' annToMask), COCO-Crop exactly as the official
//! `create_coco-objects.py`, and the GT box file for OA-Crop (GT) in the official text format.
use std::collections::{BTreeMap, BTreeSet};
use std::io::BufReader;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Deserialize;

use super::{find_dir, BuildContext};
use crate::data::builders::split;
use crate::data::error::{format_err, DataError, IoContext, Result};
use crate::data::index::{Sample, SplitIndex};
use crate::imgops::resize::resize_bilinear_pil_rgb8;
use crate::imgops::rle::Rle;

#[derive(Debug, Deserialize)]
pub struct CocoFile {
    pub images: Vec<CocoImage>,
    #[serde(default)]
    pub annotations: Vec<CocoAnn>,
    pub categories: Vec<CocoCategory>,
}

#[derive(Debug, Deserialize, Clone)]
pub struct CocoImage {
    pub id: u64,
    pub file_name: String,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Deserialize, Clone)]
pub struct CocoCategory {
    pub id: u64,
    pub name: String,
}

#[derive(Debug, Deserialize, Clone)]
pub struct CocoAnn {
    #[serde(default)]
    pub id: u64,
    pub image_id: u64,
    pub category_id: u64,
    pub bbox: [f64; 4],
    pub area: f64,
    #[serde(default)]
    pub iscrowd: u8,
    #[serde(default)]
    pub segmentation: Option<Segmentation>,
}

pub use crate::imgops::segmentation::{RleCounts, Segmentation};

/// Masks decoded per image are `h × w` bytes; more than this is not a COCO-like image but a corrupt or
/// hostile `images` entry (COCO's largest is 640×640).
pub const MAX_MASK_PIXELS: u64 = 1 << 28;

/// pycocotools `annToRLE` for an image of `h`×`w`, through the one checked conversion
/// [`crate::imgops::segmentation::to_rle`] (a polygon far outside the image or RLE counts that do not sum to
/// the mask's pixels are errors, not an unbounded allocation). An RLE whose `size` is not the image's is an
/// error too (pycocotools would decode a mask of the wrong shape).
pub fn ann_to_rle(seg: &Segmentation, h: u32, w: u32) -> std::result::Result<Rle, String> {
    if h as u64 * w as u64 > MAX_MASK_PIXELS {
        return Err(format!(
            "image of {h}x{w} pixels: more than {MAX_MASK_PIXELS} for one mask"
        ));
    }
    let rle = crate::imgops::segmentation::to_rle(seg, h, w)?;
    // An empty polygon list merges to an empty 0x0 RLE: an all-zero mask of the image's size.
    if let Segmentation::Polygons(_) = seg {
        return Ok(rle);
    }
    if (rle.h, rle.w) != (h, w) {
        return Err(format!(
            "RLE size [{}, {}] is not the image's [{h}, {w}]",
            rle.h, rle.w
        ));
    }
    Ok(rle)
}

/// Stream an instances JSON: `images` and `categories` are collected, each annotation is handed to `on_ann`
/// as it is parsed (the annotation array is never held as a whole, and unknown keys are skipped unparsed).
pub fn stream_instances(
    path: &Path,
    on_ann: impl FnMut(CocoAnn),
) -> Result<(Vec<CocoImage>, Vec<CocoCategory>)> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    struct Top<F>(F);
    struct Anns<'a, F>(&'a mut F);
    impl<'de, F: FnMut(CocoAnn)> Visitor<'de> for Anns<'_, F> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array of annotations")
        }
        fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> std::result::Result<(), S::Error> {
            while let Some(a) = seq.next_element::<CocoAnn>()? {
                (self.0)(a);
            }
            Ok(())
        }
    }
    impl<'de, F: FnMut(CocoAnn)> DeserializeSeed<'de> for Anns<'_, F> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }
    impl<'de, F: FnMut(CocoAnn)> Visitor<'de> for Top<F> {
        type Value = (Vec<CocoImage>, Vec<CocoCategory>);
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a COCO instances object")
        }
        fn visit_map<M: MapAccess<'de>>(
            mut self,
            mut map: M,
        ) -> std::result::Result<Self::Value, M::Error> {
            let (mut images, mut cats) = (None, None);
            while let Some(key) = map.next_key::<String>()? {
                match key.as_str() {
                    "images" => images = Some(map.next_value()?),
                    "categories" => cats = Some(map.next_value()?),
                    "annotations" => map.next_value_seed(Anns(&mut self.0))?,
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            let images = images.ok_or_else(|| serde::de::Error::missing_field("images"))?;
            let cats = cats.ok_or_else(|| serde::de::Error::missing_field("categories"))?;
            Ok((images, cats))
        }
    }
    let f = std::fs::File::open(path).at(path)?;
    let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(1 << 20, f));
    de.deserialize_map(Top(on_ann))
        .map_err(|e| format_err(path, e.to_string()))
}

/// The whole file, keeping segmentations only when asked (train2017's polygons are not needed).
pub fn read_instances(path: &Path, keep_segmentation: bool) -> Result<CocoFile> {
    let mut annotations = vec![];
    let (images, categories) = stream_instances(path, |mut a| {
        if !keep_segmentation {
            a.segmentation = None;
        }
        annotations.push(a);
    })?;
    Ok(CocoFile {
        images,
        annotations,
        categories,
    })
}

/// The official crop box: bbox grown by 20 % of its own w/h on each side, clipped to the image, as integer
/// (top, left, height, width) for `TF.resized_crop`.
pub fn crop_box(b: [f64; 4], w: u32, h: u32) -> (u32, u32, u32, u32) {
    let (x, y, bw, bh) = (b[0], b[1], b[2], b[3]);
    let x0 = (x - 0.2 * bw).max(0.0);
    let y0 = (y - 0.2 * bh).max(0.0);
    let x1 = (x + 1.2 * bw).min(w as f64);
    let y1 = (y + 1.2 * bh).min(h as f64);
    let (top, left) = (y0 as u32, x0 as u32);
    let height = ((y1 - y0) as u32).max(1).min(h - top.min(h - 1));
    let width = ((x1 - x0) as u32).max(1).min(w - left.min(w - 1));
    (top, left, height, width)
}

/// torchvision `Resize(256)` on a (w, h) image: shorter side 256, the other `int(256 * long / short)`.
pub fn short_side_size(w: u32, h: u32, size: u32) -> (u32, u32) {
    if w <= h {
        (size, (size as f64 * h as f64 / w as f64) as u32)
    } else {
        ((size as f64 * w as f64 / h as f64) as u32, size)
    }
}

/// The GT box line of the official `coco_gt.txt`: annotations with area > 1 % of the image, grown by a 0.2
/// margin with clipping, normalised by the image size, `{:.6f}`.
pub fn gt_box_line(img: &CocoImage, anns: &[&CocoAnn]) -> String {
    let (w, h) = (img.width as f64, img.height as f64);
    let mut line = img.id.to_string();
    for a in anns.iter().filter(|a| a.area > 0.01 * w * h) {
        let [x, y, bw, bh] = a.bbox;
        let x0 = (x - 0.2 * bw).max(0.0) / w;
        let y0 = (y - 0.2 * bh).max(0.0) / h;
        let x1 = (x + 1.2 * bw).min(w) / w;
        let y1 = (y + 1.2 * bh).min(h) / h;
        line += &format!(" {x0:.6},{y0:.6},{x1:.6},{y1:.6}");
    }
    line
}

struct Split<'a> {
    name: &'a str,
    images_dir: PathBuf,
    coco: CocoFile,
}

fn write_png_mask(path: &Path, mask_row_major: Vec<u8>, w: u32, h: u32) -> Result<()> {
    let px: Vec<u8> = mask_row_major
        .into_iter()
        .map(|v| if v != 0 { 255 } else { 0 })
        .collect();
    let img = image::GrayImage::from_raw(w, h, px)
        .ok_or_else(|| format_err(path, "mask size mismatch"))?;
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).at(p)?;
    }
    img.save(path).map_err(|e| DataError::Image {
        path: path.into(),
        msg: e.to_string(),
    })
}

pub fn build(ctx: &BuildContext) -> Result<Vec<SplitIndex>> {
    let ann_root = find_dir(
        &ctx.extracted("annotations_trainval2017.zip")?,
        "annotations",
    )
    .ok_or_else(|| ctx.err("annotations_trainval2017.zip has no annotations/ folder"))?;
    let mut splits = vec![];
    for (name, zip) in [("train", "train2017.zip"), ("val", "val2017.zip")] {
        if !ctx.has_file(zip) {
            continue;
        }
        let folder = format!("{name}2017");
        let images_dir = find_dir(&ctx.extracted(zip)?, &folder)
            .ok_or_else(|| ctx.err(format!("{zip} has no {folder}/ folder")))?;
        let coco = read_instances(
            &ann_root.join(format!("instances_{folder}.json")),
            name == "val",
        )?;
        splits.push(Split {
            name,
            images_dir,
            coco,
        });
    }
    if splits.is_empty() {
        return Err(ctx.err("neither train2017.zip nor val2017.zip is present"));
    }
    let mut out = vec![];
    let mut crop_classes: BTreeSet<String> = BTreeSet::new();
    let mut crops: Vec<(String, Vec<(String, String)>)> = vec![];
    for sp in &splits {
        let mut cats = sp.coco.categories.clone();
        cats.sort_by_key(|c| c.id);
        let cat_pos: BTreeMap<u64, i64> = cats
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id, i as i64))
            .collect();
        let classes: Vec<String> = cats.iter().map(|c| c.name.clone()).collect();
        let mut by_image: BTreeMap<u64, Vec<&CocoAnn>> = BTreeMap::new();
        for a in &sp.coco.annotations {
            by_image.entry(a.image_id).or_default().push(a);
        }
        let mut images = sp.coco.images.clone();
        images.sort_by_key(|i| i.id);
        let with_masks = sp.name == "val";
        let mask_dir = ctx
            .dir
            .build()
            .join("masks")
            .join(format!("{}2017", sp.name));
        // Per-image samples (and val masks, in parallel).
        let samples: Vec<Sample> = images
            .par_iter()
            .map(|img| -> Result<Sample> {
                let anns = by_image.get(&img.id).map(|v| v.as_slice()).unwrap_or(&[]);
                let mut labels = vec![];
                let mut boxes = vec![];
                for a in anns {
                    let l = *cat_pos.get(&a.category_id).ok_or_else(|| {
                        ctx.err(format!(
                            "annotation of image {} has unknown category {}",
                            img.id, a.category_id
                        ))
                    })?;
                    labels.push(l);
                    let [x, y, w, h] = a.bbox;
                    boxes.push([x, y, x + w, y + h]);
                }
                let mask = if with_masks {
                    if img.height as u64 * img.width as u64 > MAX_MASK_PIXELS {
                        return Err(ctx.err(format!(
                            "instances_{}2017.json: image {} of {}x{} pixels: more than \
                             {MAX_MASK_PIXELS} for one mask",
                            sp.name, img.id, img.width, img.height
                        )));
                    }
                    let rles: Vec<Rle> = anns
                        .iter()
                        .filter_map(|a| a.segmentation.as_ref().map(|s| (a, s)))
                        .map(|(a, s)| {
                            ann_to_rle(s, img.height, img.width).map_err(|e| {
                                ctx.err(format!(
                                    "instances_{}2017.json: annotation {} of image {}: {e}",
                                    sp.name, a.id, img.id
                                ))
                            })
                        })
                        .collect::<Result<_>>()?;
                    let m = if rles.is_empty() {
                        vec![0u8; img.width as usize * img.height as usize]
                    } else {
                        Rle::merge(&rles, false).decode_row_major()
                    };
                    let p = mask_dir.join(format!("{:012}.png", img.id));
                    write_png_mask(&p, m, img.width, img.height)?;
                    Some(ctx.rel(&p))
                } else {
                    None
                };
                Ok(Sample {
                    path: ctx.rel(&sp.images_dir.join(&img.file_name)),
                    labels,
                    boxes,
                    mask,
                    instance_masks: vec![],
                    ignore_mask: None,
                    width: img.width,
                    height: img.height,
                })
            })
            .collect::<Result<_>>()?;
        let mut idx = SplitIndex::new(ctx.dataset, sp.name, classes, "per-box", samples)
            .with_provenance(format!(
                "instances_{}2017.json; labels index categories sorted by id",
                sp.name
            ));
        if with_masks {
            idx = idx.with_mask_rule("binary");
        }
        out.push(idx);

        // GT boxes for OA-Crop (GT): one line per image in JSON order.
        if sp.name == "train" {
            let lines: Vec<String> = sp
                .coco
                .images
                .iter()
                .map(|img| {
                    gt_box_line(
                        img,
                        by_image.get(&img.id).map(|v| v.as_slice()).unwrap_or(&[]),
                    )
                })
                .collect();
            let p = ctx.dir.build().join("boxes").join("coco_gt.txt");
            std::fs::create_dir_all(p.parent().unwrap_or(Path::new("."))).at(&p)?;
            std::fs::write(&p, lines.join("\n") + "\n").at(&p)?;
        }

        // COCO-Crop: every annotation with area >= 1 % of the image, in the image's annotation order.
        let obj_dir = ctx.dir.build().join("objects").join(sp.name);
        let jobs: Vec<(&CocoImage, usize, &CocoAnn)> =
            sp.coco
                .images
                .iter()
                .flat_map(|img| {
                    by_image.get(&img.id).into_iter().flat_map(move |anns| {
                        anns.iter().enumerate().map(move |(k, a)| (img, k, *a))
                    })
                })
                .filter(|(img, _, a)| a.area >= 0.01 * img.width as f64 * img.height as f64)
                .collect();
        let written: Vec<(String, String)> = jobs
            .par_iter()
            .map(|(img, k, a)| -> Result<(String, String)> {
                let src = sp.images_dir.join(&img.file_name);
                let cat = a.category_id.to_string();
                let dst = obj_dir.join(&cat).join(format!("{:012}_{k}.jpg", img.id));
                if !dst.is_file() {
                    let im = image::open(&src).map_err(|e| DataError::Image {
                        path: src.clone(),
                        msg: e.to_string(),
                    })?;
                    let (top, left, ch, cw) = crop_box(a.bbox, im.width(), im.height());
                    let crop = im.crop_imm(left, top, cw, ch).to_rgb8();
                    let (nw, nh) = short_side_size(cw, ch, 256);
                    // Pillow's bilinear resize, as torchvision's resized_crop on a PIL image.
                    let pixels = resize_bilinear_pil_rgb8(
                        crop.as_raw(),
                        cw as usize,
                        ch as usize,
                        nw as usize,
                        nh as usize,
                    );
                    let resized = image::RgbImage::from_raw(nw, nh, pixels)
                        .expect("resize returns nw*nh*3 bytes");
                    std::fs::create_dir_all(obj_dir.join(&cat)).at(&obj_dir)?;
                    let tmp = dst.with_extension("jpg.tmp");
                    let f = std::fs::File::create(&tmp).at(&tmp)?;
                    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(
                        std::io::BufWriter::new(f),
                        75,
                    );
                    enc.encode_image(&resized).map_err(|e| DataError::Image {
                        path: tmp.clone(),
                        msg: e.to_string(),
                    })?;
                    drop(enc);
                    std::fs::rename(&tmp, &dst).at(&dst)?;
                }
                Ok((cat, ctx.rel(&dst)))
            })
            .collect::<Result<_>>()?;
        crop_classes.extend(written.iter().map(|(c, _)| c.clone()));
        crops.push((sp.name.to_string(), written));
    }
    // ImageFolder classes: category-id folder names sorted as strings; empty val folders for train-only ones.
    let classes: Vec<String> = crop_classes.into_iter().collect();
    let pos: BTreeMap<&str, i64> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as i64))
        .collect();
    for (name, written) in crops {
        for c in &classes {
            let d = ctx.dir.build().join("objects").join(&name).join(c);
            std::fs::create_dir_all(&d).at(&d)?;
        }
        let mut items = written;
        items.sort_by(|a, b| (pos[a.0.as_str()], &a.1).cmp(&(pos[b.0.as_str()], &b.1)));
        let paths: Vec<PathBuf> = items.iter().map(|(_, p)| ctx.dir.root.join(p)).collect();
        let sizes = super::image_sizes(&paths)?;
        let samples: Vec<Sample> = items
            .iter()
            .zip(sizes)
            .map(|((c, p), (w, h))| Sample {
                path: p.clone(),
                labels: vec![pos[c.as_str()]],
                width: w,
                height: h,
                ..Default::default()
            })
            .collect();
        let prov = "create_coco-objects.py: area >= 1%, 20% margin, short side 256; classes = category ids sorted as strings";
        if name == "train" && samples.len() > 10_000 {
            let n = samples.len();
            let (tr, va) = split::lineval_split(n, [n - 10_000, 10_000], None);
            let take = |ix: &[usize]| ix.iter().map(|&i| samples[i].clone()).collect::<Vec<_>>();
            let p2 = "random_split(objects/train in ImageFolder order, [n-10000, 10000], seed 42)";
            out.push(
                SplitIndex::new(
                    ctx.dataset,
                    "objects-lineval-train",
                    classes.clone(),
                    "class",
                    take(&tr),
                )
                .with_provenance(p2),
            );
            out.push(
                SplitIndex::new(
                    ctx.dataset,
                    "objects-lineval-val",
                    classes.clone(),
                    "class",
                    take(&va),
                )
                .with_provenance(p2),
            );
        }
        out.push(
            SplitIndex::new(
                ctx.dataset,
                &format!("objects-{name}"),
                classes.clone(),
                "class",
                samples,
            )
            .with_provenance(prov),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_geometry() {
        // 100x50 box at (10,20) in a 640x480 image: margins 20/10, clipped at 0 on the left.
        assert_eq!(
            crop_box([10.0, 20.0, 100.0, 50.0], 640, 480),
            (10, 0, 70, 130)
        );
        assert_eq!(short_side_size(130, 70, 256), (475, 256));
        assert_eq!(short_side_size(70, 130, 256), (256, 475));
    }
}
