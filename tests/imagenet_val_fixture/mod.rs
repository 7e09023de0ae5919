//! An ImageNet validation fixture in the real layout for the `imagenet-val` builder: a flat tar of
//! `ILSVRC2012_val_%08d.JPEG` (in shuffled order, plus one image the metadata does not name) and wsolevaluation's
//! four `metadata/ILSVRC/test` files (comma-separated, no trailing newline), three classes, multi-box images.
#![allow(dead_code)]
use crate::data_common::*;

pub struct Image {
    pub id: u32,
    pub w: u32,
    pub h: u32,
    pub label: i64,
    /// `[x0, y0, x1, y1]`, integer pixels.
    pub boxes: Vec<[u32; 4]>,
}

pub fn image_name(id: u32) -> String {
    format!("ILSVRC2012_val_{id:08}.JPEG")
}

/// The six images the metadata names, in its order.
pub fn images() -> Vec<Image> {
    let im = |id, w, h, label, boxes: &[[u32; 4]]| Image {
        id,
        w,
        h,
        label,
        boxes: boxes.to_vec(),
    };
    vec![
        im(1, 40, 30, 65, &[[4, 3, 30, 24]]),
        im(2, 36, 28, 970, &[[2, 2, 20, 14], [18, 10, 35, 27]]),
        im(3, 30, 40, 230, &[[5, 8, 25, 36]]),
        // A box as large as the image is inside it.
        im(4, 32, 32, 65, &[[0, 0, 32, 32]]),
        im(
            5,
            44,
            26,
            970,
            &[[1, 1, 10, 10], [12, 4, 30, 20], [31, 2, 43, 25]],
        ),
        im(6, 28, 36, 230, &[[6, 6, 22, 30]]),
    ]
}

/// wsolevaluation's `image_ids.txt`, `class_labels.txt`, `image_sizes.txt`, `localization.txt` for `images`.
pub fn metadata(images: &[Image]) -> [String; 4] {
    let p = |id| format!("val/{}", image_name(id));
    let join = |v: Vec<String>| v.join("\n");
    [
        join(images.iter().map(|i| p(i.id)).collect()),
        join(
            images
                .iter()
                .map(|i| format!("{},{}", p(i.id), i.label))
                .collect(),
        ),
        join(
            images
                .iter()
                .map(|i| format!("{},{},{}", p(i.id), i.w, i.h))
                .collect(),
        ),
        join(
            images
                .iter()
                .flat_map(|i| {
                    i.boxes
                        .iter()
                        .map(move |b| format!("{},{},{},{},{}", p(i.id), b[0], b[1], b[2], b[3]))
                })
                .collect(),
        ),
    ]
}

/// The names the built-in manifest gives the four metadata files.
pub const METADATA_FILES: [&str; 4] = [
    "wsol-ILSVRC-test-image_ids.txt",
    "wsol-ILSVRC-test-class_labels.txt",
    "wsol-ILSVRC-test-image_sizes.txt",
    "wsol-ILSVRC-test-localization.txt",
];

/// The flat val tar: `images` plus image 7 (20×20, named by no metadata), in the order 3, 1, 7, 2, 6, 4, 5.
pub fn val_tar(images: &[Image]) -> Vec<u8> {
    let mut e = vec![];
    for id in [3, 1, 7, 2, 6, 4, 5] {
        let (w, h) = images
            .iter()
            .find(|i| i.id == id)
            .map_or((20, 20), |i| (i.w, i.h));
        e.push(file(&image_name(id), jpeg(w, h, id as u8)));
    }
    tar(&e)
}

/// The files of the `imagenet` dataset: the val tar and the four metadata files with these contents.
pub fn files(tar_bytes: Vec<u8>, meta: &[String; 4]) -> Vec<FixtureFile> {
    let mut out = vec![ff("ILSVRC2012_img_val.tar", tar_bytes)];
    for (name, text) in METADATA_FILES.iter().zip(meta) {
        out.push(ff(name, text.clone().into_bytes()));
    }
    out
}
