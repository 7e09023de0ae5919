//! The loader over datasets built by `data build` from fixture archives in the real layouts (served over
//! loopback HTTP): COCO with the ground-truth box file for OA-Crop (GT), CUB with its segmentation masks.
mod data_common;

use std::sync::Arc;

use contracam::data::loader::{
    ground_truth_box_file, IndexSource, Loader, LoaderConfig, MaskInput, ObjectBoxes, Plan,
    RandomResizedCrop, Source,
};
use data_common::*;
use tch::Kind;

fn crop(size: u32) -> RandomResizedCrop {
    RandomResizedCrop {
        size,
        ..Default::default()
    }
}

#[test]
fn coco_fixture_with_ground_truth_boxes() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    // Image 9: one large annotation (kept) and one of 4 px (area below 1 %: no box); image 7: none.
    let ann = serde_json::json!({
        "images": [
            {"id": 9, "file_name": "000000000009.jpg", "width": 40, "height": 30},
            {"id": 7, "file_name": "000000000007.jpg", "width": 40, "height": 30}
        ],
        "annotations": [
            {"id": 1, "image_id": 9, "category_id": 18, "bbox": [2.0, 3.0, 20.0, 10.0], "area": 150.0, "iscrowd": 0,
             "segmentation": [[2.0, 3.0, 22.0, 3.0, 22.0, 13.0, 2.0, 13.0]]},
            {"id": 2, "image_id": 9, "category_id": 1, "bbox": [0.0, 0.0, 2.0, 2.0], "area": 4.0, "iscrowd": 0,
             "segmentation": [[0.0, 0.0, 2.0, 0.0, 2.0, 2.0]]}
        ],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}]
    })
    .to_string();
    let m = serve_coco(
        &srv,
        tmp.path(),
        coco_images("train", &[9, 7]),
        None,
        zip(&[file("annotations/instances_train2017.json", ann)]),
    );
    let data = tmp.path().join("d");
    build(&m, &data, "coco2017", &[]);
    let src = Arc::new(IndexSource::open(&data, "coco2017", "train").unwrap());
    assert_eq!(src.ids.name(), "coco-image-id");
    assert_eq!(src.meta(0).unwrap().id, "7", "samples sorted by image id");
    let gt = ground_truth_box_file(&data, "coco2017").unwrap();
    let boxes = ObjectBoxes::load(&gt, src.as_ref()).unwrap();
    assert_eq!(
        boxes.boxes(0),
        &[] as &[[f64; 4]],
        "image 7 has no annotation"
    );
    assert_eq!(boxes.boxes(1), &[[0.0, 0.033333, 0.65, 0.5]]);
    let l = Loader::new(
        src.clone(),
        Plan::pretrain(crop(16)).with_object_boxes(boxes),
        LoaderConfig {
            workers: 2,
            ..LoaderConfig::train(2, 3)
        },
    )
    .unwrap();
    let b = l.epoch(0).next().unwrap().unwrap();
    assert_eq!(b.views[0].size(), [2, 3, 16, 16]);
    assert_eq!(b.views[0].kind(), Kind::Uint8);
    // A missing dataset or split says what to run.
    let e = IndexSource::open(&data, "coco2017", "val")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no split \"val\"") && e.contains("train"), "{e}");
    let e = IndexSource::open(&data, "cub200", "train")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("contracam data build cub200"), "{e}");
    assert!(ground_truth_box_file(&data, "cub200").is_err());
}

#[test]
fn cub_fixture_masks_travel_with_view_one() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let imgs = [
        (1, "001.A/A_1.jpg", 1, 1, (40u32, 30u32)),
        (2, "001.A/A_2.jpg", 1, 1, (32, 24)),
        (3, "002.B/B_1.jpg", 2, 1, (24, 40)),
        (4, "002.B/B_2.jpg", 2, 0, (16, 16)),
    ];
    let mut entries = vec![file("CUB_200_2011/classes.txt", "1 001.A\n2 002.B\n")];
    let (mut images_txt, mut labels_txt, mut split_txt, mut boxes_txt) =
        (String::new(), String::new(), String::new(), String::new());
    let mut seg = vec![];
    for (id, path, class, train, (w, h)) in imgs {
        images_txt += &format!("{id} {path}\n");
        labels_txt += &format!("{id} {class}\n");
        split_txt += &format!("{id} {train}\n");
        boxes_txt += &format!("{id} 1.0 1.0 {} {}\n", w - 2, h - 2);
        entries.push(file(
            &format!("CUB_200_2011/images/{path}"),
            jpeg(w, h, id as u8),
        ));
        // Gray masks: 200 on the left half (foreground under gray-gt-127), 100 elsewhere (background).
        seg.push(file(
            &format!("segmentations/{}", path.replace(".jpg", ".png")),
            png_gray(w, h, |x, _| if x < w / 2 { 200 } else { 100 }),
        ));
    }
    entries.push(file("CUB_200_2011/images.txt", images_txt));
    entries.push(file("CUB_200_2011/image_class_labels.txt", labels_txt));
    entries.push(file("CUB_200_2011/train_test_split.txt", split_txt));
    entries.push(file("CUB_200_2011/bounding_boxes.txt", boxes_txt));
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "cub200",
        Some("cub"),
        vec![
            ff("CUB_200_2011.tgz", tar_gz(&entries)),
            ff("segmentations.tgz", tar_gz(&seg)),
            ff("redo_cub_split.txt", b"1 0\n2 2\n3 1\n4 0\n".to_vec()),
        ],
    );
    let data = tmp.path().join("d");
    build(&m, &data, "cub200", &[]);
    let src = Arc::new(IndexSource::open(&data, "cub200", "train").unwrap());
    assert_eq!(src.len(), 3);
    let mask = src.mask(0).unwrap().unwrap();
    assert_eq!(mask.get_pixel(0, 0).0, [255]);
    assert_eq!(mask.get_pixel(39, 0).0, [0]);
    let l = Loader::new(
        src,
        Plan::pretrain(crop(12)).with_masks(MaskInput::GroundTruth),
        LoaderConfig {
            workers: 1,
            ..LoaderConfig::train(3, 0)
        },
    )
    .unwrap();
    let b = l.epoch(0).next().unwrap().unwrap();
    let m = b.mask.unwrap();
    assert_eq!(m.size(), [3, 1, 12, 12]);
    let (lo, hi) = (m.min().double_value(&[]), m.max().double_value(&[]));
    assert!(
        (0.0..=1.0).contains(&lo) && hi <= 1.0 && hi > lo,
        "{lo}..{hi}"
    );
}
