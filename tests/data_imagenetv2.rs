//! The `imagenetv2` builder (`data build imagenetv2`): ImageNetV2 threshold-0.7 as wsolevaluation's ILSVRC
//! `train-fullsup` split, from a fixture in the real layout (the tar's `<top>/<class>/<n>.jpeg` and
//! wsolevaluation's `metadata/ILSVRC/val/*.txt` naming `val2/<class>/<n>.jpeg`) served on 127.0.0.1; bad
//! metadata names file and line.
mod data_common;

use std::path::{Path, PathBuf};

use data_common::*;

const TAR: &str = "imagenetv2-threshold0.7.tar.gz";
const TOP: &str = "imagenetv2-threshold0.7";
/// The manifest's names of the four metadata files, in the order of [`metadata`].
const METADATA_FILES: [&str; 4] = [
    "wsol-ILSVRC-val-image_ids.txt",
    "wsol-ILSVRC-val-class_labels.txt",
    "wsol-ILSVRC-val-image_sizes.txt",
    "wsol-ILSVRC-val-localization.txt",
];

#[derive(Clone)]
struct Image {
    class: u32,
    file: &'static str,
    w: u32,
    h: u32,
    boxes: Vec<[u32; 4]>,
}

fn image(class: u32, file: &'static str, w: u32, h: u32, boxes: &[[u32; 4]]) -> Image {
    Image {
        class,
        file,
        w,
        h,
        boxes: boxes.to_vec(),
    }
}

/// Listed in wsolevaluation's order: byte-wise order of `val2/<class>/<file>` (0, 1, 10, 2, 999).
fn images() -> Vec<Image> {
    vec![
        image(0, "0.jpeg", 10, 5, &[[1, 1, 9, 4]]),
        image(0, "1.jpeg", 11, 6, &[[0, 0, 11, 6], [2, 1, 5, 3]]),
        image(1, "0.jpeg", 7, 9, &[[0, 2, 6, 8]]),
        image(10, "0.jpeg", 9, 7, &[[3, 3, 4, 4]]),
        image(
            2,
            "0.jpeg",
            8,
            8,
            &[[1, 1, 2, 2], [3, 3, 7, 7], [0, 0, 8, 8]],
        ),
        image(999, "3.jpeg", 6, 4, &[[0, 0, 5, 3]]),
    ]
}

fn wsol_id(im: &Image) -> String {
    format!("val2/{}/{}", im.class, im.file)
}

/// wsolevaluation's four files for `images` (comma-separated, one box per line, no trailing newline).
fn metadata(images: &[Image]) -> [String; 4] {
    let ids: Vec<String> = images.iter().map(wsol_id).collect();
    let labels: Vec<String> = images
        .iter()
        .map(|im| format!("{},{}", wsol_id(im), im.class))
        .collect();
    let sizes: Vec<String> = images
        .iter()
        .map(|im| format!("{},{},{}", wsol_id(im), im.w, im.h))
        .collect();
    let boxes: Vec<String> = images
        .iter()
        .flat_map(|im| {
            im.boxes
                .iter()
                .map(move |b| format!("{},{},{},{},{}", wsol_id(im), b[0], b[1], b[2], b[3]))
        })
        .collect();
    [
        ids.join("\n"),
        labels.join("\n"),
        sizes.join("\n"),
        boxes.join("\n"),
    ]
}

/// The tar with `images` under `top`, in an order that is not the metadata's.
fn tar_of(top: &str, images: &[Image]) -> Vec<u8> {
    let entries: Vec<Entry> = images
        .iter()
        .enumerate()
        .rev()
        .map(|(k, im)| {
            file(
                &format!("{top}/{}/{}", im.class, im.file),
                jpeg(im.w, im.h, k as u8 + 1),
            )
        })
        .collect();
    tar_gz(&entries)
}

/// Serves the tar and the metadata, runs `data build imagenetv2`; returns the data dir and stderr of a
/// failed build (empty on success).
fn build_fixture(tmp: &Path, tar_bytes: Vec<u8>, meta: &[String; 4]) -> (PathBuf, String) {
    let srv = Server::start();
    let mut files = vec![ff(TAR, tar_bytes)];
    for (name, text) in METADATA_FILES.iter().zip(meta) {
        files.push(ff(name, text.clone().into_bytes()));
    }
    let m = serve_dataset(&srv, tmp, "imagenetv2", Some("imagenetv2"), files);
    let data = tmp.join("d");
    let o = contracam(&data_args("build", "imagenetv2", &m, &data, &[]));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    (
        data,
        if o.status.success() {
            String::new()
        } else {
            err
        },
    )
}

#[test]
fn imagenetv2_labels_boxes_in_image_ids_order_and_wsol_ilsvrc_val_export() {
    let tmp = tempfile::tempdir().unwrap();
    let ims = images();
    let meta = metadata(&ims);
    let (data, err) = build_fixture(tmp.path(), tar_of(TOP, &ims), &meta);
    assert!(err.is_empty(), "{err}");

    let val = read_index(&data, "imagenetv2", "val");
    assert_eq!(val.header.classes.len(), 1000);
    assert_eq!(val.header.classes[10], "10");
    assert_eq!(val.header.label_kind, "class");
    assert_eq!(val.samples.len(), ims.len());
    for (s, im) in val.samples.iter().zip(&ims) {
        assert_eq!(
            s.path,
            format!("extracted/{TAR}/{TOP}/{}/{}", im.class, im.file)
        );
        assert!(data.join("imagenetv2").join(&s.path).is_file());
        // The label is the folder's integer, not its place in string order (10 before 2).
        assert_eq!(s.labels, vec![i64::from(im.class)]);
        assert_eq!((s.width, s.height), (im.w, im.h));
        let boxes: Vec<[f64; 4]> = im.boxes.iter().map(|b| b.map(f64::from)).collect();
        assert_eq!(s.boxes, boxes, "{}", wsol_id(im));
        assert!(s.mask.is_none());
    }
    assert_eq!(val.samples[4].boxes[2], [0.0, 0.0, 8.0, 8.0]);

    // The re-export is byte for byte wsolevaluation's input, localization.txt included.
    let wsol = data.join("imagenetv2/build/wsol/metadata/ILSVRC/val");
    for (name, text) in ["image_ids", "class_labels", "image_sizes", "localization"]
        .iter()
        .zip(&meta)
    {
        let got = std::fs::read_to_string(wsol.join(format!("{name}.txt"))).unwrap();
        assert_eq!(&got, text, "{name}.txt");
    }

    // TFDS and the ImageNetV2 loader name the top folder `imagenetv2-threshold0.7-format-val`; the metadata
    // still says `val2`.
    let tmp2 = tempfile::tempdir().unwrap();
    let (data2, err) = build_fixture(
        tmp2.path(),
        tar_of("imagenetv2-threshold0.7-format-val", &ims),
        &meta,
    );
    assert!(err.is_empty(), "{err}");
    let v2 = read_index(&data2, "imagenetv2", "val");
    assert_eq!(
        v2.samples[3].path,
        format!("extracted/{TAR}/imagenetv2-threshold0.7-format-val/10/0.jpeg")
    );
    assert_eq!(v2.samples[3].boxes, vec![[3.0, 3.0, 4.0, 4.0]]);
}

#[test]
fn imagenetv2_bad_metadata_or_tar_names_file_and_line() {
    let ims = images();
    let good = metadata(&ims);
    let with = |k: usize, text: String| {
        let mut m = good.clone();
        m[k] = text;
        m
    };
    let mut more = ims.clone();
    more.insert(5, image(5, "0.jpeg", 4, 4, &[[0, 0, 1, 1]]));
    let mut extra_in_tar = ims.clone();
    extra_in_tar.push(image(3, "1.jpeg", 4, 4, &[]));
    let mut wider = ims.clone();
    wider[0].w = 12;
    /// Metadata, tar, the file the error must name and what else it must say.
    type Case<'a> = ([String; 4], Vec<u8>, &'a str, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        // Image 999/3 is 6×4: x1 = 7 lies outside (its box is the last line, 9).
        (
            with(
                3,
                good[3].replace("val2/999/3.jpeg,0,0,5,3", "val2/999/3.jpeg,0,0,7,3"),
            ),
            tar_of(TOP, &ims),
            "wsol-ILSVRC-val-localization.txt",
            vec!["line 9", "outside the image (6×4"],
        ),
        (
            with(1, good[1].replace("val2/1/0.jpeg,1", "val2/1/0.jpeg,2")),
            tar_of(TOP, &ims),
            "wsol-ILSVRC-val-class_labels.txt",
            vec![
                "line 3",
                "label 2 of `val2/1/0.jpeg` is not its class folder 1",
            ],
        ),
        // Named by the metadata (line 6) but not in the tar.
        (
            metadata(&more),
            tar_of(TOP, &ims),
            "wsol-ILSVRC-val-image_ids.txt",
            vec![
                "line 6",
                "`val2/5/0.jpeg` is not in imagenetv2-threshold0.7.tar.gz",
            ],
        ),
        // In the tar but not named by the metadata.
        (
            good.clone(),
            tar_of(TOP, &extra_in_tar),
            "wsol-ILSVRC-val-image_ids.txt",
            vec!["3/1.jpeg", "not listed as `val2/3/1.jpeg`"],
        ),
        // The metadata says 10×5 for 0/0.jpeg; the JPEG in the tar is 12×5.
        (
            good.clone(),
            tar_of(TOP, &wider),
            "wsol-ILSVRC-val-image_sizes.txt",
            vec!["line 1", "10×5", "12×5"],
        ),
        // ILSVRC test's form of id, not ImageNetV2's.
        (
            good.clone()
                .map(|t| t.replacen("val2/0/0.jpeg", "val/0/0.jpeg", 1)),
            tar_of(TOP, &ims),
            "wsol-ILSVRC-val-image_ids.txt",
            vec![
                "line 1",
                "`val/0/0.jpeg` is not `val2/<class index 0..999>/<file>`",
            ],
        ),
    ];
    for (meta, tar_bytes, file, wants) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let (data, err) = build_fixture(tmp.path(), tar_bytes, &meta);
        assert!(err.contains(file), "{file}: {err}");
        for w in wants {
            assert!(err.contains(w), "{w}: {err}");
        }
        assert!(!data.join("imagenetv2/index/val.jsonl").exists());
    }
}

#[test]
fn imagenetv2_non_integer_class_folder_names_the_folder() {
    let ims = vec![image(0, "0.jpeg", 4, 4, &[[0, 0, 2, 2]])];
    let e = tar_gz(&[
        file(&format!("{TOP}/0/0.jpeg"), jpeg(4, 4, 1)),
        file(&format!("{TOP}/n01440764/0.jpeg"), jpeg(4, 4, 2)),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let (_, err) = build_fixture(tmp.path(), e, &metadata(&ims));
    assert!(
        err.contains("imagenetv2-threshold0.7/n01440764") && err.contains("not an integer"),
        "{err}"
    );
}

#[test]
fn builtin_imagenetv2_manifest_pins_the_val_metadata() {
    let reg = contracam::data::source::manifest::Registry::builtin().unwrap();
    let m = reg.get("imagenetv2").unwrap();
    assert_eq!(m.dataset.builder.as_deref(), Some("imagenetv2"));
    assert_eq!(
        contracam::data::builders::imagenetv2::METADATA,
        METADATA_FILES
    );
    for name in METADATA_FILES {
        let f = m.files.iter().find(|f| f.name == name).unwrap();
        assert!(
            !f.optional && f.sha256.is_some() && f.size.is_some(),
            "{name}"
        );
        let upstream = name.strip_prefix("wsol-ILSVRC-val-").unwrap();
        assert_eq!(
            f.urls,
            vec![format!(
                "https://raw.githubusercontent.com/clovaai/wsolevaluation/96f4b88679af41f005824661f47e6fe3628af2aa/metadata/ILSVRC/val/{upstream}"
            )]
        );
    }
    assert_eq!(m.files.len(), 5);
}
