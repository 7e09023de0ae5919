//! The CUB and Flowers fixture archives of the paper-table end-to-end tests (`suite_paper_table2`,
//! `suite_paper_table3`), in their real layouts, sized by each test.
use std::ops::Range;
use std::path::Path;

use super::data_common::*;

/// CUB-200-2011 with ReDO's split file: ids 1..=`images`, two classes alternating; ids up to `train_upto`
/// are in the official train split and ReDO's split 0 (redo-train), the rest test and split 2 (redo-test).
/// Every image is 32×24 with the same `bbox` (x, y, w, h) and a segmentation white on `mask` (x, y ranges).
pub struct Cub {
    pub images: u32,
    pub train_upto: u32,
    pub bbox: &'static str,
    pub mask: (Range<u32>, Range<u32>),
}

pub fn build_cub(srv: &Server, tmp: &Path, data: &Path, c: &Cub) {
    let classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross"];
    let mut entries = vec![file(
        "CUB_200_2011/classes.txt",
        "1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n",
    )];
    let (mut images, mut labels, mut split, mut boxes, mut redo, mut seg) = (
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        vec![],
    );
    for id in 1..=c.images {
        let k = (id % 2) as usize;
        let path = format!("{}/Bird_{id:04}.jpg", classes[k]);
        images += &format!("{id} {path}\n");
        labels += &format!("{id} {}\n", k + 1);
        split += &format!("{id} {}\n", (id <= c.train_upto) as u8);
        boxes += &format!("{id} {}\n", c.bbox);
        redo += &format!("{id} {}\n", if id <= c.train_upto { 0 } else { 2 });
        entries.push(file(
            &format!("CUB_200_2011/images/{path}"),
            jpeg(32, 24, id as u8),
        ));
        seg.push(file(
            &format!("segmentations/{}", path.replace(".jpg", ".png")),
            png_gray(32, 24, |x, y| {
                if c.mask.0.contains(&x) && c.mask.1.contains(&y) {
                    255
                } else {
                    0
                }
            }),
        ));
    }
    entries.push(file("CUB_200_2011/images.txt", images));
    entries.push(file("CUB_200_2011/image_class_labels.txt", labels));
    entries.push(file("CUB_200_2011/train_test_split.txt", split));
    entries.push(file("CUB_200_2011/bounding_boxes.txt", boxes));
    let m = serve_dataset(
        srv,
        tmp,
        "cub200",
        Some("cub"),
        vec![
            ff("CUB_200_2011.tgz", tar_gz(&entries)),
            ff("segmentations.tgz", tar_gz(&seg)),
            ff("redo_cub_split.txt", redo.into_bytes()),
        ],
    );
    build(&m, data, "cub200", &[]);
}

/// Flowers-102 with ReDO masks: one 30×22 image per entry of `labels`, the official `setid.mat` split
/// (ReDO's segmentation train split is `tstid`, its test split `trnid`), and a red flower on `flower`
/// (x, y ranges) over ReDO's blue (0, 0, 254) background.
pub struct Flowers<'a> {
    pub labels: &'a [f64],
    pub trnid: &'a [f64],
    pub valid: &'a [f64],
    pub tstid: &'a [f64],
    pub flower: (Range<u32>, Range<u32>),
}

pub fn build_flowers(srv: &Server, tmp: &Path, data: &Path, f: &Flowers) {
    use contracam::data::formats::mat5::write_row_vectors;
    let (mut imgs, mut segs) = (vec![], vec![]);
    for i in 1..=f.labels.len() as u32 {
        imgs.push(file(
            &format!("jpg/image_{i:05}.jpg"),
            jpeg(30, 22, i as u8),
        ));
        let seg = image::RgbImage::from_fn(30, 22, |x, y| {
            image::Rgb(if f.flower.0.contains(&x) && f.flower.1.contains(&y) {
                [200, 30, 30]
            } else {
                [0, 0, 254]
            })
        });
        let mut jpg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 100)
            .encode_image(&seg)
            .unwrap();
        segs.push(file(&format!("segmim/segmim_{i:05}.jpg"), jpg));
    }
    let labels = write_row_vectors(&[("labels", f.labels)], true);
    let setid = write_row_vectors(
        &[("trnid", f.trnid), ("valid", f.valid), ("tstid", f.tstid)],
        false,
    );
    let m = serve_dataset(
        srv,
        tmp,
        "flowers102",
        Some("flowers"),
        vec![
            ff("102flowers.tgz", tar_gz(&imgs)),
            ff("imagelabels.mat", labels),
            ff("setid.mat", setid),
            ff("102segmentations.tgz", tar(&segs)),
        ],
    );
    build(&m, data, "flowers102", &[]);
}
