//! End-to-end builder tests: a fixture archive in each dataset's real layout (real file names and annotation
//! formats, a few tiny images) is served on 127.0.0.1 and built through `data build --manifest`.
mod data_common;

use data_common::*;

#[test]
fn cub_images_masks_boxes_splits_and_wsol_export() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let imgs = [
        (
            1,
            "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg",
            1,
            1,
            (40, 30),
            "1 6.0 7.0 20.0 15.5",
        ),
        (
            2,
            "001.Black_footed_Albatross/Black_Footed_Albatross_0009_34.jpg",
            1,
            0,
            (32, 24),
            "2 1.0 2.0 3.0 4.0",
        ),
        (
            3,
            "002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg",
            2,
            1,
            (24, 40),
            "3 0.0 0.0 24.0 40.0",
        ),
        (
            4,
            "002.Laysan_Albatross/Laysan_Albatross_0003_1033.jpg",
            2,
            0,
            (16, 16),
            "4 2.5 3.5 10.0 11.0",
        ),
    ];
    let mut entries = vec![
        file(
            "CUB_200_2011/classes.txt",
            "1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n",
        ),
        file("CUB_200_2011/README", "readme"),
        file("attributes.txt", "1 has_bill_shape::curved\n"),
    ];
    let mut images_txt = String::new();
    let mut labels_txt = String::new();
    let mut split_txt = String::new();
    let mut boxes_txt = String::new();
    let mut seg = vec![];
    for (id, path, class, train, (w, h), bx) in imgs {
        images_txt += &format!("{id} {path}\n");
        labels_txt += &format!("{id} {class}\n");
        split_txt += &format!("{id} {train}\n");
        boxes_txt += &format!("{bx}\n");
        entries.push(file(
            &format!("CUB_200_2011/images/{path}"),
            jpeg(w, h, id as u8),
        ));
        seg.push(file(
            &format!("segmentations/{}", path.replace(".jpg", ".png")),
            png_gray(w, h, |x, _| if x > 3 { 255 } else { 0 }),
        ));
    }
    // A stray file that images.txt does not list (as reported for the real archive) must be ignored.
    entries.push(file(
        "CUB_200_2011/images/001.Black_footed_Albatross/Stray_rgb.jpg",
        jpeg(8, 8, 9),
    ));
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
    let train = read_index(&data, "cub200", "train");
    assert_eq!(
        train.header.classes,
        vec!["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    );
    assert_eq!(train.header.mask_rule.as_deref(), Some("gray-gt-127"));
    assert_eq!(train.samples.len(), 2);
    let s = &train.samples[0];
    assert_eq!(s.path, "extracted/CUB_200_2011.tgz/CUB_200_2011/images/001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg");
    assert_eq!((s.width, s.height), (40, 30));
    assert_eq!(s.labels, vec![0]);
    assert_eq!(s.boxes, vec![[6.0, 7.0, 26.0, 22.5]]);
    assert_eq!(s.mask.as_deref(), Some("extracted/segmentations.tgz/segmentations/001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.png"));
    assert!(data.join("cub200").join(s.mask.as_ref().unwrap()).is_file());
    assert_eq!(train.samples[1].labels, vec![1]);
    let test = read_index(&data, "cub200", "test");
    assert_eq!(
        test.samples.iter().map(|s| s.labels[0]).collect::<Vec<_>>(),
        vec![0, 1]
    );
    let redo: Vec<usize> = ["redo-train", "redo-val", "redo-test"]
        .iter()
        .map(|s| read_index(&data, "cub200", s).samples.len())
        .collect();
    assert_eq!(redo, vec![2, 1, 1]);
    assert!(read_index(&data, "cub200", "redo-test").samples[0]
        .path
        .ends_with("Black_Footed_Albatross_0009_34.jpg"));
    // wsolevaluation metadata: integer corners, no trailing newline.
    let wsol = data.join("cub200/build/wsol/metadata/CUB/train");
    let loc = std::fs::read_to_string(wsol.join("localization.txt")).unwrap();
    assert_eq!(loc, "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg,6,7,26,22\n002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg,0,0,24,40");
    let sizes = std::fs::read_to_string(wsol.join("image_sizes.txt")).unwrap();
    assert!(
        sizes.starts_with("001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg,40,30\n")
    );
    let labels = std::fs::read_to_string(wsol.join("class_labels.txt")).unwrap();
    assert!(labels.ends_with("Laysan_Albatross_0002_1027.jpg,1"));
    // The dataset is listed as built.
    let list = run_ok(&[
        "data",
        "list",
        "--manifest",
        m.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("cub200") && l.contains("built")),
        "{list}"
    );
}

#[test]
fn flowers_mat_files_setid_and_redo_masks() {
    use contracam::data::formats::mat5::write_row_vectors;
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut imgs = vec![];
    let mut segs = vec![];
    for i in 1..=6u32 {
        imgs.push(file(
            &format!("jpg/image_{i:05}.jpg"),
            jpeg(20 + i, 10 + i, i as u8),
        ));
        segs.push(file(
            &format!("segmim/segmim_{i:05}.jpg"),
            jpeg(20 + i, 10 + i, 254),
        ));
    }
    let labels = write_row_vectors(&[("labels", &[77.0, 77.0, 1.0, 102.0, 5.0, 1.0])], true);
    let setid = write_row_vectors(
        &[
            ("trnid", &[3.0, 1.0]),
            ("valid", &[2.0]),
            ("tstid", &[6.0, 4.0, 5.0]),
        ],
        false,
    );
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "flowers102",
        Some("flowers"),
        vec![
            ff("102flowers.tgz", tar_gz(&imgs)),
            ff("imagelabels.mat", labels),
            ff("setid.mat", setid),
            ff("102segmentations.tgz", tar(&segs)),
        ],
    );
    let data = tmp.path().join("d");
    build(&m, &data, "flowers102", &[]);
    let train = read_index(&data, "flowers102", "train");
    assert_eq!(train.header.classes.len(), 102);
    assert_eq!(
        train
            .samples
            .iter()
            .map(|s| (s.path.rsplit('/').next().unwrap().to_string(), s.labels[0]))
            .collect::<Vec<_>>(),
        vec![
            ("image_00003.jpg".to_string(), 0),
            ("image_00001.jpg".to_string(), 76)
        ]
    );
    assert_eq!((train.samples[0].width, train.samples[0].height), (23, 13));
    assert!(train.samples[0].mask.is_none());
    // ReDO convention: segmentation test = trnid, train = tstid.
    let seg_test = read_index(&data, "flowers102", "seg-test");
    assert_eq!(
        seg_test.header.mask_rule.as_deref(),
        Some("flowers-not-blue")
    );
    assert_eq!(seg_test.samples.len(), 2);
    assert!(seg_test.samples[0]
        .mask
        .as_deref()
        .unwrap()
        .ends_with("segmim/segmim_00003.jpg"));
    assert_eq!(
        read_index(&data, "flowers102", "seg-train").samples.len(),
        3
    );
    assert_eq!(
        read_index(&data, "flowers102", "test").samples[1].labels,
        vec![101]
    );
}

fn in9_tree(
    prefix: &str,
    variant_dirs: &[&str],
    per_class: usize,
    with_only_fg: bool,
) -> Vec<Entry> {
    let classes = [
        "00_dog",
        "01_bird",
        "02_wheeled vehicle",
        "03_reptile",
        "04_carnivore",
        "05_insect",
        "06_musical instrument",
        "07_primate",
        "08_fish",
    ];
    let mut e = vec![];
    for v in variant_dirs {
        for (ci, c) in classes.iter().enumerate() {
            for k in 0..per_class {
                e.push(file(
                    &format!("{prefix}/{v}/{c}/n0{ci}_{k}.JPEG"),
                    jpeg(12 + k as u32, 9, ci as u8),
                ));
            }
        }
    }
    if with_only_fg {
        for (ci, c) in classes.iter().enumerate() {
            for k in 0..per_class {
                e.push(file(
                    &format!("{prefix}/only_fg/val/{c}/n0{ci}_{k}.JPEG"),
                    jpeg(12 + k as u32, 9, 0),
                ));
            }
        }
    }
    e
}

#[test]
fn background_challenge_variants_masks_and_original_train() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut rel = in9_tree(
        "bg_challenge",
        &["original/val", "mixed_rand/val", "mixed_same/val"],
        2,
        true,
    );
    rel.push(file(
        "bg_challenge/fg_mask/val/00_dog/n00_0.npy",
        b"\x93NUMPY".to_vec(),
    ));
    let orig = in9_tree("original", &["train", "val"], 3, false);
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "bg-challenge",
        Some("bg-challenge"),
        vec![
            FixtureFile {
                name: "backgrounds_challenge_data.tar.gz".into(),
                body: tar_gz(&rel),
                checksum: false,
            },
            FixtureFile {
                name: "original.tar.gz".into(),
                body: tar_gz(&orig),
                checksum: false,
            },
        ],
    );
    let data = tmp.path().join("d");
    // No published checksum: a plain build refuses, `--register` records the hashes.
    let err = run_err(&[
        "data",
        "build",
        "--quiet",
        "bg-challenge",
        "--manifest",
        m.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(err.contains("no published checksum"), "{err}");
    build(&m, &data, "bg-challenge", &["--register"]);
    let t = read_index(&data, "bg-challenge", "test-original");
    assert_eq!(t.header.classes[2], "02_wheeled vehicle");
    assert_eq!(t.header.classes[6], "06_musical instrument");
    assert_eq!(t.samples.len(), 18);
    assert_eq!(t.header.mask_rule.as_deref(), Some("rgb-all-positive"));
    let s = &t.samples[4];
    assert_eq!(s.path, "extracted/backgrounds_challenge_data.tar.gz/bg_challenge/original/val/02_wheeled vehicle/n02_0.JPEG");
    assert_eq!(s.labels, vec![2]);
    assert_eq!(s.mask.as_deref(), Some("extracted/backgrounds_challenge_data.tar.gz/bg_challenge/only_fg/val/02_wheeled vehicle/n02_0.JPEG"));
    for v in ["mixed_rand", "mixed_same", "only_fg"] {
        let idx = read_index(&data, "bg-challenge", &format!("test-{v}"));
        assert_eq!(idx.samples.len(), 18, "{v}");
        assert!(idx.samples.iter().all(|s| s.mask.is_none()));
    }
    assert!(!data.join("bg-challenge/index/test-fg_mask.jsonl").exists());
    let train = read_index(&data, "bg-challenge", "train");
    assert_eq!(train.samples.len(), 27);
    let (lt, lv) = (
        read_index(&data, "bg-challenge", "lineval-train"),
        read_index(&data, "bg-challenge", "lineval-val"),
    );
    assert_eq!((lt.samples.len(), lv.samples.len()), (25, 2)); // int(0.95 * 27) = 25
                                                               // torch.randperm(27, generator=torch.Generator().manual_seed(42))[25:] picks these two.
    let expect = contracam::data::builders::split::torch_random_split(27, &[25, 2], 42);
    assert_eq!(lv.samples[0], train.samples[expect[1][0]]);
    assert!(data.join("bg-challenge/registered.toml").is_file());
}

#[test]
fn coco_unreadable_or_mis_sized_rle_names_the_annotation() {
    let case = |segmentation: serde_json::Value| -> String {
        let ann = serde_json::json!({
            "images": [{"id": 139, "file_name": "000000000139.jpg", "width": 40, "height": 30}],
            "annotations": [{"id": 77, "image_id": 139, "category_id": 1, "bbox": [1.0, 1.0, 20.0, 10.0],
                             "area": 200.0, "iscrowd": 1, "segmentation": segmentation}],
            "categories": [{"id": 1, "name": "person"}]
        })
        .to_string();
        build_err_serving(
            "coco",
            vec![
                ff(
                    "val2017.zip",
                    zip(&[file("val2017/000000000139.jpg", jpeg(40, 30, 1))]),
                ),
                ff(
                    "annotations_trainval2017.zip",
                    zip(&[file("annotations/instances_val2017.json", ann)]),
                ),
            ],
        )
    };
    // A compressed RLE string with a character outside pycocotools' alphabet.
    let err = case(serde_json::json!({"counts": "a b", "size": [30, 40]}));
    assert!(
        err.contains("instances_val2017.json")
            && err.contains("annotation 77 of image 139")
            && err.contains("invalid character"),
        "{err}"
    );
    // An RLE for another image size.
    let err = case(serde_json::json!({"counts": [0, 12], "size": [3, 4]}));
    assert!(
        err.contains("annotation 77 of image 139")
            && err.contains("[3, 4] is not the image's [30, 40]"),
        "{err}"
    );
}

#[test]
fn coco_labels_boxes_masks_crops_and_gt_boxes() {
    use contracam::imgops::rle::Rle;
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let rle = Rle::encode_row_major(
        &{
            let mut m = vec![0u8; 40 * 30];
            for y in 5..15 {
                for x in 10..30 {
                    m[y * 40 + x] = 1;
                }
            }
            m
        },
        30,
        40,
    );
    let ann = |split: &str| -> String {
        let first = if split == "train" { 9 } else { 139 };
        serde_json::json!({
            "info": {"year": 2017}, "licenses": [],
            "images": [
                {"id": first, "file_name": format!("{first:012}.jpg"), "width": 40, "height": 30, "license": 1},
                {"id": 7, "file_name": "000000000007.jpg", "width": 40, "height": 30},
                {"id": 8, "file_name": "000000000008.jpg", "width": 40, "height": 30}
            ],
            "annotations": [
                {"id": 1, "image_id": first, "category_id": 18, "bbox": [2.0, 3.0, 20.0, 10.0], "area": 150.0, "iscrowd": 0,
                 "segmentation": [[2.0, 3.0, 22.0, 3.0, 22.0, 13.0, 2.0, 13.0]]},
                {"id": 2, "image_id": first, "category_id": 1, "bbox": [0.0, 0.0, 2.0, 2.0], "area": 4.0, "iscrowd": 0,
                 "segmentation": [[0.0, 0.0, 2.0, 0.0, 2.0, 2.0]]},
                {"id": 3, "image_id": 7, "category_id": 1, "bbox": [10.0, 5.0, 20.0, 10.0], "area": 200.0, "iscrowd": 1,
                 "segmentation": {"counts": rle.to_compressed(), "size": [30, 40]}},
                {"id": 4, "image_id": first, "category_id": 1, "bbox": [30.0, 20.0, 8.0, 8.0], "area": 64.0, "iscrowd": 0,
                 "segmentation": {"counts": rle.counts.clone(), "size": [30, 40]}}
            ],
            "categories": [{"id": 18, "name": "dog", "supercategory": "animal"}, {"id": 1, "name": "person", "supercategory": "person"}]
        }).to_string()
    };
    let anns = zip(&[
        file("annotations/instances_train2017.json", ann("train")),
        file("annotations/instances_val2017.json", ann("val")),
        file("annotations/captions_val2017.json", "{}"),
    ]);
    let m = serve_coco(
        &srv,
        tmp.path(),
        coco_images("train", &[9, 7, 8]),
        Some(coco_images("val", &[139, 7, 8])),
        anns,
    );
    let data = tmp.path().join("d");
    build(&m, &data, "coco2017", &["--jobs", "3"]);
    let val = read_index(&data, "coco2017", "val");
    assert_eq!(
        val.header.classes,
        vec!["person", "dog"],
        "categories sorted by id"
    );
    assert_eq!(val.header.label_kind, "per-box");
    let ids: Vec<&str> = val
        .samples
        .iter()
        .map(|s| s.path.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec!["000000000007.jpg", "000000000008.jpg", "000000000139.jpg"]
    );
    let s139 = &val.samples[2];
    assert_eq!(s139.labels, vec![1, 0, 0]);
    assert_eq!(s139.boxes[0], [2.0, 3.0, 22.0, 13.0]);
    assert!(val.samples[1].labels.is_empty() && val.samples[1].boxes.is_empty());
    // Union mask of polygon + RLE instances (pycocotools semantics), and empty mask for no annotations.
    let mask = image::open(data.join("coco2017").join(s139.mask.as_ref().unwrap()))
        .unwrap()
        .to_luma8();
    let fg = mask.pixels().filter(|p| p.0[0] == 255).count();
    let expect = Rle::merge(
        &[
            Rle::from_polygons(&[vec![2.0, 3.0, 22.0, 3.0, 22.0, 13.0, 2.0, 13.0]], 30, 40),
            Rle::from_polygons(&[vec![0.0, 0.0, 2.0, 0.0, 2.0, 2.0]], 30, 40),
            rle.clone(),
        ],
        false,
    )
    .area();
    assert_eq!(fg, expect as usize);
    let m7 = image::open(
        data.join("coco2017")
            .join(val.samples[0].mask.as_ref().unwrap()),
    )
    .unwrap()
    .to_luma8();
    assert_eq!(
        m7.pixels().filter(|p| p.0[0] == 255).count(),
        200,
        "the crowd RLE is in the union"
    );
    let m8 = image::open(
        data.join("coco2017")
            .join(val.samples[1].mask.as_ref().unwrap()),
    )
    .unwrap()
    .to_luma8();
    assert!(m8.pixels().all(|p| p.0[0] == 0));
    // COCO-Crop: area >= 1 % of 1200 = 12 keeps anns 1, 3, 4 (not the 4-pixel one); ann index within the image.
    let crops = read_index(&data, "coco2017", "objects-val");
    assert_eq!(
        crops.header.classes,
        vec!["1", "18"],
        "category-id folders sorted as strings"
    );
    let names: Vec<&str> = crops.samples.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "build/objects/val/1/000000000007_0.jpg",
            "build/objects/val/1/000000000139_2.jpg",
            "build/objects/val/18/000000000139_0.jpg"
        ]
    );
    // Crop of ann 1: bbox 20x10 grown by 20 % → 28x14 (clipped at 0 on the left: x0 = max(0, 2-4) = 0 → 26 wide)
    // then the short side resized to 256.
    let c = &crops.samples[2];
    assert_eq!((c.width, c.height), ((256.0 * 26.0 / 14.0) as u32, 256));
    assert_eq!(crops.samples[2].labels, vec![1]);
    assert!(data.join("coco2017/build/objects/val/18").is_dir());
    // GT boxes (train): area > 1 %, margin 0.2, normalised, {:.6f}.
    let gt = std::fs::read_to_string(data.join("coco2017/build/boxes/coco_gt.txt")).unwrap();
    let first = gt.lines().next().unwrap();
    assert_eq!(
        first,
        "9 0.000000,0.033333,0.650000,0.500000 0.710000,0.613333,0.990000,0.986667"
    );
    assert_eq!(
        gt.lines().nth(1).unwrap(),
        "7 0.150000,0.100000,0.850000,0.566667"
    );
    assert_eq!(gt.lines().nth(2).unwrap(), "8");
    assert!(read_index(&data, "coco2017", "train").samples[0]
        .mask
        .is_none());
}

#[test]
fn cifar10_and_cifar100_pickles() {
    use contracam::data::formats::pickle::{write_dict, FixtureValue as V};
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ];
    let batch = |n: usize, seed: u8, first_label: i64| -> Vec<u8> {
        let data: Vec<u8> = (0..n * 3072)
            .map(|i| (i as u8).wrapping_mul(seed))
            .collect();
        let labels: Vec<i64> = (0..n as i64).map(|i| (first_label + i) % 10).collect();
        write_dict(&[
            ("batch_label", V::Str("training batch")),
            ("labels", V::Ints(&labels)),
            ("data", V::U8Array(&[n, 3072], &data)),
            ("filenames", V::Strs(&vec!["x.png"; n])),
        ])
    };
    let mut e = vec![];
    for i in 1..=5 {
        e.push(file(
            &format!("cifar-10-batches-py/data_batch_{i}"),
            batch(2, i as u8, i),
        ));
    }
    e.push(file("cifar-10-batches-py/test_batch", batch(3, 9, 0)));
    e.push(file(
        "cifar-10-batches-py/batches.meta",
        write_dict(&[
            ("label_names", V::Strs(&names)),
            ("num_vis", V::Ints(&[3072])),
        ]),
    ));
    e.push(file("cifar-10-batches-py/readme.html", "<html>"));
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "cifar10",
        Some("cifar"),
        vec![ff("cifar-10-python.tar.gz", tar_gz(&e))],
    );
    let data = tmp.path().join("d");
    build(&m, &data, "cifar10", &[]);
    let train = read_index(&data, "cifar10", "train");
    assert_eq!(train.header.classes, names);
    assert_eq!(train.samples.len(), 10);
    assert_eq!(
        train
            .samples
            .iter()
            .map(|s| s.labels[0])
            .collect::<Vec<_>>(),
        vec![1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
    );
    // Pixel (x=1, y=0) of image 0 of batch 1: R = byte 1, G = byte 1025, B = byte 2049 (times seed 1).
    let img = image::open(data.join("cifar10").join(&train.samples[0].path))
        .unwrap()
        .to_rgb8();
    assert_eq!(img.get_pixel(1, 0).0, [1, 1, 1]);
    let img2 = image::open(data.join("cifar10").join(&train.samples[2].path))
        .unwrap()
        .to_rgb8(); // batch 2, seed 2
    assert_eq!(
        img2.get_pixel(3, 0).0,
        [6, (1027u32 * 2 % 256) as u8, (2051u32 * 2 % 256) as u8]
    );
    assert_eq!(read_index(&data, "cifar10", "test").samples.len(), 3);
    assert_eq!(read_index(&data, "cifar10", "lineval-val").samples.len(), 2); // int(0.2 * 10)
    assert_eq!(
        read_index(&data, "cifar10", "lineval-train").samples.len(),
        8
    );

    let fine = ["apple", "aquarium_fish", "baby"];
    let c100 = |n: usize| -> Vec<u8> {
        let data: Vec<u8> = vec![7; n * 3072];
        let fl: Vec<i64> = (0..n as i64).map(|i| i % 3).collect();
        let cl: Vec<i64> = vec![0; n];
        write_dict(&[
            ("filenames", V::Strs(&vec!["a.png"; n])),
            ("fine_labels", V::Ints(&fl)),
            ("coarse_labels", V::Ints(&cl)),
            ("data", V::U8Array(&[n, 3072], &data)),
        ])
    };
    let e = vec![
        file("cifar-100-python/train", c100(5)),
        file("cifar-100-python/test", c100(2)),
        file(
            "cifar-100-python/meta",
            write_dict(&[
                ("fine_label_names", V::Strs(&fine)),
                ("coarse_label_names", V::Strs(&["fruit"])),
            ]),
        ),
    ];
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "cifar100",
        Some("cifar"),
        vec![ff("cifar-100-python.tar.gz", tar_gz(&e))],
    );
    build(&m, &data, "cifar100", &[]);
    let t = read_index(&data, "cifar100", "train");
    assert_eq!(t.header.classes, fine);
    assert_eq!(
        t.samples.iter().map(|s| s.labels[0]).collect::<Vec<_>>(),
        vec![0, 1, 2, 0, 1]
    );
}

#[test]
fn food101_and_pets() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut e = vec![
        file("food-101/meta/classes.txt", "apple_pie\nbaby_back_ribs\n"),
        file(
            "food-101/meta/train.json",
            r#"{"apple_pie": ["apple_pie/1005649", "apple_pie/1011328"], "baby_back_ribs": ["baby_back_ribs/1005293"]}"#,
        ),
        file(
            "food-101/meta/test.json",
            r#"{"apple_pie": ["apple_pie/101251"], "baby_back_ribs": []}"#,
        ),
        file("food-101/meta/train.txt", "apple_pie/1005649\n"),
    ];
    for (p, s) in [
        ("apple_pie/1005649", 1u8),
        ("apple_pie/1011328", 2),
        ("baby_back_ribs/1005293", 3),
        ("apple_pie/101251", 4),
    ] {
        e.push(file(
            &format!("food-101/images/{p}.jpg"),
            jpeg(10 + s as u32, 8, s),
        ));
    }
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "food101",
        Some("food101"),
        vec![ff("food-101.tar.gz", tar_gz(&e))],
    );
    let data = tmp.path().join("d");
    build(&m, &data, "food101", &[]);
    let tr = read_index(&data, "food101", "train");
    assert_eq!(tr.header.classes, vec!["apple_pie", "baby_back_ribs"]);
    assert_eq!(
        tr.samples.iter().map(|s| s.labels[0]).collect::<Vec<_>>(),
        vec![0, 0, 1]
    );
    assert_eq!((tr.samples[1].width, tr.samples[1].height), (12, 8));
    assert_eq!(read_index(&data, "food101", "test").samples.len(), 1);

    // Pets: images.tar.gz is (as TFDS warns) possibly a plain tar: serve one as plain tar.
    let names = [
        ("Abyssinian_1", 1, 1),
        ("Abyssinian_2", 1, 1),
        ("american_bulldog_10", 2, 2),
        ("american_bulldog_11", 2, 2),
    ];
    let mut imgs = vec![];
    let mut ann = vec![];
    for (i, (n, _, _)) in names.iter().enumerate() {
        imgs.push(file(
            &format!("images/{n}.jpg"),
            jpeg(14, 11 + i as u32, i as u8),
        ));
        ann.push(file(
            &format!("annotations/trimaps/{n}.png"),
            png_gray(14, 11 + i as u32, |_, _| 2),
        ));
    }
    imgs.push(file("images/Abyssinian_100.mat", "stray"));
    ann.push(file(
        "annotations/trainval.txt",
        "Abyssinian_1 1 1 1\namerican_bulldog_10 2 2 1\nAbyssinian_2 1 1 1\n",
    ));
    ann.push(file("annotations/test.txt", "american_bulldog_11 2 2 1\n"));
    ann.push(file("annotations/xmls/Abyssinian_1.xml", "<annotation><object><name>cat</name><bndbox><xmin>3</xmin><ymin>2</ymin><xmax>9</xmax><ymax>8</ymax></bndbox></object></annotation>"));
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "pets",
        Some("pets"),
        vec![
            ff("images.tar.gz", tar(&imgs)),
            ff("annotations.tar.gz", tar_gz(&ann)),
        ],
    );
    build(&m, &data, "pets", &[]);
    let tv = read_index(&data, "pets", "trainval");
    assert_eq!(
        tv.header.classes[..2],
        ["Abyssinian".to_string(), "american_bulldog".to_string()]
    );
    assert_eq!(
        tv.samples.iter().map(|s| s.labels[0]).collect::<Vec<_>>(),
        vec![0, 1, 0]
    );
    assert_eq!(tv.samples[0].boxes, vec![[3.0, 2.0, 9.0, 8.0]]);
    assert!(tv.samples[1].boxes.is_empty());
    assert_eq!(
        tv.samples[0].mask.as_deref(),
        Some("extracted/annotations.tar.gz/annotations/trimaps/Abyssinian_1.png")
    );
    assert_eq!(read_index(&data, "pets", "test").samples[0].labels, vec![1]);
    let lv = read_index(&data, "pets", "lineval-val");
    assert_eq!(lv.samples.len(), 1); // round(3 * 740 / 3680)
}

#[test]
fn nine_class_shift_sets() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    // n02085620 (Chihuahua, dog=0), n01443537 (goldfish, fish=8), n01440764 (tench, fish=8, not in ImageNet-R),
    // n04592741 (wing: not in IN-9), n02123045 (tabby cat: not in IN-9 either).
    let wnids = ["n01443537", "n02085620", "n02123045", "n04592741"];
    let mut r = vec![file("imagenet-r/README.txt", "readme")];
    let mut sk = vec![];
    for (i, w) in wnids.iter().enumerate() {
        r.push(file(
            &format!("imagenet-r/{w}/art_{i}.jpg"),
            jpeg(9, 7, i as u8),
        ));
        sk.push(file(
            &format!("sketch/{w}/sketch_{i}.JPEG"),
            jpeg(9, 7, i as u8),
        ));
    }
    sk.push(file("sketch/n01440764/a.JPEG", jpeg(5, 5, 1)));
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "imagenet-r",
        Some("imagenet-r"),
        vec![ff("imagenet-r.tar", tar(&r))],
    );
    let data = tmp.path().join("d");
    build(&m, &data, "imagenet-r", &[]);
    let full = read_index(&data, "imagenet-r", "test");
    assert_eq!(full.header.classes, wnids);
    let nine = read_index(&data, "imagenet-r", "test-9");
    assert_eq!(nine.header.classes.len(), 9);
    assert_eq!(
        nine.samples.iter().map(|s| s.labels[0]).collect::<Vec<_>>(),
        vec![8, 0]
    );
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "imagenet-sketch",
        Some("imagenet-sketch"),
        vec![ff("ImageNet-Sketch.zip", zip(&sk))],
    );
    build(&m, &data, "imagenet-sketch", &[]);
    let nine = read_index(&data, "imagenet-sketch", "test-9");
    assert_eq!(
        nine.samples.iter().map(|s| s.labels[0]).collect::<Vec<_>>(),
        vec![8, 8, 0]
    );
    // ImageNet-C: <corruption>/<severity>/<wnid>/ in each family tar.
    let mut blur = vec![];
    for c in ["defocus_blur", "zoom_blur"] {
        for s in 1..=2 {
            for w in ["n02085620", "n04592741"] {
                blur.push(file(
                    &format!("{c}/{s}/{w}/ILSVRC2012_val_00000001.JPEG"),
                    jpeg(8, 8, s as u8),
                ));
            }
        }
    }
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "imagenet-c",
        Some("imagenet-c"),
        vec![ff("blur.tar", tar(&blur))],
    );
    build(&m, &data, "imagenet-c", &[]);
    for split in [
        "defocus_blur-1",
        "defocus_blur-2",
        "zoom_blur-1",
        "zoom_blur-2",
    ] {
        let idx = read_index(&data, "imagenet-c", split);
        assert_eq!(idx.samples.len(), 1, "{split}");
        assert_eq!(idx.samples[0].labels, vec![0]);
    }
    // ImageNet-9 and Stylized-ImageNet-9 from user folders (--source).
    let src = tmp.path().join("imagenet");
    for (split, w, f) in [
        ("val", "n02085620", "ILSVRC2012_val_00000005.JPEG"),
        ("val", "n04592741", "x.JPEG"),
        ("train", "n01443537", "n01443537_1.JPEG"),
    ] {
        std::fs::create_dir_all(src.join(split).join(w)).unwrap();
        std::fs::write(src.join(split).join(w).join(f), jpeg(6, 6, 1)).unwrap();
    }
    let d = data.to_str().unwrap();
    run_ok(&[
        "data",
        "build",
        "--quiet",
        "imagenet9",
        "--data-dir",
        d,
        "--source",
        src.to_str().unwrap(),
    ]);
    let v = read_index(&data, "imagenet9", "val");
    assert_eq!(v.samples.len(), 1);
    assert_eq!(
        v.samples[0].path,
        src.join("val/n02085620/ILSVRC2012_val_00000005.JPEG")
            .to_string_lossy()
    );
    assert_eq!(
        read_index(&data, "imagenet9", "train").samples[0].labels,
        vec![8]
    );
    let sty = tmp.path().join("stylized");
    std::fs::create_dir_all(sty.join("val/n01443537")).unwrap();
    std::fs::write(
        sty.join("val/n01443537/ILSVRC2012_val_00000293.png"),
        png_rgb(224, 224, |_, _| [1, 2, 3]),
    )
    .unwrap();
    run_ok(&[
        "data",
        "build",
        "--quiet",
        "stylized-imagenet",
        "--data-dir",
        d,
        "--source",
        sty.to_str().unwrap(),
    ]);
    let s = read_index(&data, "stylized-imagenet", "val-9");
    assert_eq!((s.samples[0].width, s.samples[0].labels[0]), (224, 8));
    let err = run_err(&[
        "data",
        "build",
        "--quiet",
        "stylized-imagenet",
        "--data-dir",
        d,
    ]);
    assert!(err.contains("--source"), "{err}");
}

#[test]
fn voc_image_sets_boxes_and_segmentation() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let xml = |w: u32, h: u32, objs: &[(&str, [u32; 4])]| -> String {
        let mut s = format!("<annotation><folder>VOC2012</folder><size><width>{w}</width><height>{h}</height><depth>3</depth></size><segmented>0</segmented>");
        for (n, b) in objs {
            s += &format!("<object><name>{n}</name><pose>Left</pose><truncated>0</truncated><difficult>0</difficult><bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox></object>", b[0], b[1], b[2], b[3]);
        }
        s + "</annotation>"
    };
    let r = "VOCdevkit/VOC2012";
    let e = vec![
        file(
            &format!("{r}/Annotations/2007_000027.xml"),
            xml(20, 15, &[("person", [2, 3, 10, 12])]),
        ),
        file(
            &format!("{r}/Annotations/2007_000032.xml"),
            xml(
                18,
                16,
                &[("aeroplane", [1, 1, 9, 8]), ("tvmonitor", [3, 4, 5, 6])],
            ),
        ),
        file(&format!("{r}/JPEGImages/2007_000027.jpg"), jpeg(20, 15, 1)),
        file(&format!("{r}/JPEGImages/2007_000032.jpg"), jpeg(18, 16, 2)),
        file(&format!("{r}/ImageSets/Main/train.txt"), "2007_000032\n"),
        file(&format!("{r}/ImageSets/Main/val.txt"), "2007_000027\n"),
        file(
            &format!("{r}/ImageSets/Main/trainval.txt"),
            "2007_000027\n2007_000032\n",
        ),
        file(
            &format!("{r}/ImageSets/Main/aeroplane_train.txt"),
            "2007_000032  1\n",
        ),
        file(
            &format!("{r}/ImageSets/Segmentation/val.txt"),
            "2007_000032\n",
        ),
        file(
            &format!("{r}/SegmentationClass/2007_000032.png"),
            png_gray(18, 16, |x, _| if x < 9 { 1 } else { 0 }),
        ),
    ];
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "voc2012",
        Some("voc"),
        vec![ff("VOCtrainval_11-May-2012.tar", tar(&e))],
    );
    let data = tmp.path().join("d");
    build(&m, &data, "voc2012", &[]);
    let tv = read_index(&data, "voc2012", "voc2012-trainval");
    assert_eq!(tv.header.classes.len(), 20);
    assert_eq!(tv.samples.len(), 2);
    assert_eq!(tv.samples[1].labels, vec![0, 19]);
    assert_eq!(
        tv.samples[1].boxes,
        vec![[1.0, 1.0, 9.0, 8.0], [3.0, 4.0, 5.0, 6.0]]
    );
    assert_eq!(
        (
            tv.samples[0].width,
            tv.samples[0].height,
            tv.samples[0].labels[0]
        ),
        (20, 15, 14)
    );
    assert_eq!(
        read_index(&data, "voc2012", "voc2012-train").samples.len(),
        1
    );
    let seg = read_index(&data, "voc2012", "voc2012-seg-val");
    assert_eq!(seg.header.mask_rule.as_deref(), Some("voc-palette"));
    assert!(seg.samples[0]
        .mask
        .as_deref()
        .unwrap()
        .ends_with("SegmentationClass/2007_000032.png"));
    assert!(!data
        .join("voc2012/index/voc2012-aeroplane_train.jsonl")
        .exists());
}

fn read_text(p: std::path::PathBuf) -> String {
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn cubv2_class_folders_labels_and_wsol_cub_val_export() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    // CUBV2.tar holds class folders only (prepare_cub.sh untars it into dataset/CUB); Flickr-id file names.
    let tar_entries = vec![
        file(
            "001.Black_footed_Albatross/33844942958.jpg",
            jpeg(20, 16, 2),
        ),
        file(
            "001.Black_footed_Albatross/30107316117.jpg",
            jpeg(24, 18, 1),
        ),
        file("002.Laysan_Albatross/25513167677.jpg", jpeg(12, 30, 3)),
        file("003.Sooty_Albatross/30804529724.jpg", jpeg(31, 9, 4)),
        // Not an image: left out of the index and the metadata (with a warning).
        file("003.Sooty_Albatross/Thumbs.db", "x"),
    ];
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "wsol-cubv2",
        Some("wsol-cubv2"),
        vec![ff("CUBV2.tar", tar(&tar_entries))],
    );
    let data = tmp.path().join("d");
    build(&m, &data, "wsol-cubv2", &[]);
    let verify = run_ok(&[
        "data",
        "verify",
        "wsol-cubv2",
        "--manifest",
        m.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(
        verify.contains("CUBV2.tar") && verify.contains("verified"),
        "{verify}"
    );

    let val = read_index(&data, "wsol-cubv2", "val");
    assert_eq!(
        val.header.classes,
        vec![
            "001.Black_footed_Albatross",
            "002.Laysan_Albatross",
            "003.Sooty_Albatross"
        ]
    );
    assert_eq!(val.header.label_kind, "class");
    assert_eq!(val.samples.len(), 4);
    let s = &val.samples[0];
    assert_eq!(
        s.path,
        "extracted/CUBV2.tar/001.Black_footed_Albatross/30107316117.jpg"
    );
    assert_eq!((s.width, s.height), (24, 18));
    assert!(s.boxes.is_empty() && s.mask.is_none());
    assert!(data.join("wsol-cubv2").join(&s.path).is_file());
    assert_eq!(
        val.samples.iter().map(|s| s.labels[0]).collect::<Vec<_>>(),
        vec![0, 0, 1, 2]
    );

    // wsolevaluation's CUB/val: sorted paths relative to the CUB image root, no trailing newline.
    let wsol = data.join("wsol-cubv2/build/wsol/metadata/CUB/val");
    assert_eq!(
        read_text(wsol.join("image_ids.txt")),
        "001.Black_footed_Albatross/30107316117.jpg\n001.Black_footed_Albatross/33844942958.jpg\n\
         002.Laysan_Albatross/25513167677.jpg\n003.Sooty_Albatross/30804529724.jpg"
    );
    assert_eq!(
        read_text(wsol.join("class_labels.txt")),
        "001.Black_footed_Albatross/30107316117.jpg,0\n001.Black_footed_Albatross/33844942958.jpg,0\n\
         002.Laysan_Albatross/25513167677.jpg,1\n003.Sooty_Albatross/30804529724.jpg,2"
    );
    assert_eq!(
        read_text(wsol.join("image_sizes.txt")),
        "001.Black_footed_Albatross/30107316117.jpg,24,18\n001.Black_footed_Albatross/33844942958.jpg,20,16\n\
         002.Laysan_Albatross/25513167677.jpg,12,30\n003.Sooty_Albatross/30804529724.jpg,31,9"
    );
    // The boxes are in wsolevaluation's repository, not in the tar: no localization.txt is invented.
    assert!(!wsol.join("localization.txt").exists());

    let list = run_ok(&[
        "data",
        "list",
        "--manifest",
        m.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let row = list
        .lines()
        .find(|l| l.starts_with("wsol-cubv2"))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        row.contains("built") && row.contains(" wsol-cubv2 "),
        "{row}"
    );
}

#[test]
fn cubv2_missing_class_folder_names_the_folder() {
    // 002 is missing: 003 would get label 1 instead of CUB's 2.
    let e = vec![
        file("001.Black_footed_Albatross/30107316117.jpg", jpeg(8, 8, 1)),
        file("003.Sooty_Albatross/30804529724.jpg", jpeg(8, 8, 2)),
    ];
    let err = build_err_serving("wsol-cubv2", vec![ff("CUBV2.tar", tar(&e))]);
    assert!(
        err.contains("CUBV2.tar")
            && err.contains("`003.Sooty_Albatross`")
            && err.contains("missing"),
        "{err}"
    );
}

/// OpenImages30k fixture: (split, class folder, image id, instance-mask hashes, has ignore mask).
const OI: &[(&str, &str, &str, &[&str], bool)] = &[
    ("train", "01226z", "14984e5b51df041c", &[], false),
    ("train", "0bt_c3", "01491bf840ae9939", &[], false),
    (
        "val",
        "0bt_c3",
        "3a29f0b33894d4a6",
        &["d2422806", "3581e3ae"],
        true,
    ),
    ("val", "0bt_c3", "1cd9ac0169ec7df0", &["6932e993"], true),
    ("val", "0bt_c3", "3b3b9931325d65c9", &["d4e2e136"], false),
    ("val", "0by6g", "b4d953e7105da1d8", &["9f8621ff"], true),
    ("test", "01226z", "32fdab44f6e415f1", &["7dab3053"], true),
];

/// (images zip, annotations zip, eval zip) entries for [`OI`].
fn openimages_zips() -> (Vec<Entry>, Vec<Entry>, Vec<Entry>) {
    let (mut imgs, mut anns, mut eval) = (vec![], vec![], vec![]);
    for (k, (split, class, id, masks, ignore)) in OI.iter().enumerate() {
        let (w, h) = (10 + k as u32, 8 + k as u32);
        let jpg = jpeg(w, h, k as u8);
        imgs.push(file(&format!("{split}/{class}/{id}.jpg"), jpg.clone()));
        let mut a = vec![];
        for (j, hex) in masks.iter().enumerate() {
            a.push(file(
                &format!("{split}/{class}/{id}_m{class}_{hex}.png"),
                png_gray(w, h, |x, _| if x as usize % 3 == j { 255 } else { 0 }),
            ));
        }
        if *ignore {
            a.push(file(
                &format!("{split}/{class}/{id}_ignore.png"),
                png_gray(w, h, |_, y| if y < 2 { 255 } else { 0 }),
            ));
        }
        if *split != "train" {
            // The evaluation-only zip repeats val/test images and masks, byte for byte.
            eval.push(file(&format!("{split}/{class}/{id}.jpg"), jpg));
            for f in &a {
                let Entry::File(p, b) = f else { unreachable!() };
                eval.push(file(p, b.clone()));
            }
        }
        anns.extend(a);
    }
    (imgs, anns, eval)
}

#[test]
fn openimages_three_zips_instance_masks_and_mask_form_export() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let (imgs, anns, eval) = openimages_zips();
    let m = serve_dataset(
        &srv,
        tmp.path(),
        "wsol-openimages",
        Some("wsol-openimages"),
        vec![
            ff("OpenImages_images.zip", zip(&imgs)),
            ff("OpenImages_annotations.zip", zip(&anns)),
            ff("OpenImages30k_eval.zip", zip(&eval)),
        ],
    );
    let data = tmp.path().join("d");
    build(&m, &data, "wsol-openimages", &["--include-optional"]);
    assert!(data
        .join("wsol-openimages/extracted/OpenImages30k_eval.zip/val")
        .is_dir());

    let val = read_index(&data, "wsol-openimages", "val");
    assert_eq!(val.header.classes, vec!["01226z", "0bt_c3", "0by6g"]);
    assert_eq!(val.header.mask_rule.as_deref(), Some("binary"));
    // Sorted by class folder, then image id.
    assert_eq!(
        val.samples
            .iter()
            .map(|s| (s.path.rsplit('/').next().unwrap(), s.labels[0]))
            .collect::<Vec<_>>(),
        vec![
            ("1cd9ac0169ec7df0.jpg", 1),
            ("3a29f0b33894d4a6.jpg", 1),
            ("3b3b9931325d65c9.jpg", 1),
            ("b4d953e7105da1d8.jpg", 2)
        ]
    );
    let s = &val.samples[1];
    // Files found in several zips are taken from the first (images, annotations, eval).
    assert_eq!(
        s.path,
        "extracted/OpenImages_images.zip/val/0bt_c3/3a29f0b33894d4a6.jpg"
    );
    assert_eq!((s.width, s.height), (12, 10));
    assert!(s.mask.is_none());
    assert_eq!(
        s.instance_masks,
        vec![
            "extracted/OpenImages_annotations.zip/val/0bt_c3/3a29f0b33894d4a6_m0bt_c3_3581e3ae.png",
            "extracted/OpenImages_annotations.zip/val/0bt_c3/3a29f0b33894d4a6_m0bt_c3_d2422806.png"
        ]
    );
    assert_eq!(
        s.ignore_mask.as_deref(),
        Some("extracted/OpenImages_annotations.zip/val/0bt_c3/3a29f0b33894d4a6_ignore.png")
    );
    for p in s.instance_masks.iter().chain(&s.ignore_mask) {
        assert!(data.join("wsol-openimages").join(p).is_file(), "{p}");
    }
    assert!(val.samples[2].ignore_mask.is_none());
    let train = read_index(&data, "wsol-openimages", "train");
    assert_eq!(
        train
            .samples
            .iter()
            .map(|s| s.labels[0])
            .collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert!(train.samples.iter().all(|s| s.instance_masks.is_empty()));
    assert_eq!(
        read_index(&data, "wsol-openimages", "test").samples.len(),
        1
    );

    // Mask form: one line per instance mask, the ignore mask on an image's first line only, an empty third
    // column otherwise; image_sizes.txt empty (0 bytes); no trailing newline.
    let meta = data.join("wsol-openimages/build/wsol/metadata/OpenImages");
    assert_eq!(
        read_text(meta.join("val/localization.txt")),
        "val/0bt_c3/1cd9ac0169ec7df0.jpg,val/0bt_c3/1cd9ac0169ec7df0_m0bt_c3_6932e993.png,val/0bt_c3/1cd9ac0169ec7df0_ignore.png\n\
         val/0bt_c3/3a29f0b33894d4a6.jpg,val/0bt_c3/3a29f0b33894d4a6_m0bt_c3_3581e3ae.png,val/0bt_c3/3a29f0b33894d4a6_ignore.png\n\
         val/0bt_c3/3a29f0b33894d4a6.jpg,val/0bt_c3/3a29f0b33894d4a6_m0bt_c3_d2422806.png,\n\
         val/0bt_c3/3b3b9931325d65c9.jpg,val/0bt_c3/3b3b9931325d65c9_m0bt_c3_d4e2e136.png,\n\
         val/0by6g/b4d953e7105da1d8.jpg,val/0by6g/b4d953e7105da1d8_m0by6g_9f8621ff.png,val/0by6g/b4d953e7105da1d8_ignore.png"
    );
    assert_eq!(
        read_text(meta.join("val/image_ids.txt")),
        "val/0bt_c3/1cd9ac0169ec7df0.jpg\nval/0bt_c3/3a29f0b33894d4a6.jpg\nval/0bt_c3/3b3b9931325d65c9.jpg\n\
         val/0by6g/b4d953e7105da1d8.jpg"
    );
    assert_eq!(
        read_text(meta.join("val/class_labels.txt")),
        "val/0bt_c3/1cd9ac0169ec7df0.jpg,1\nval/0bt_c3/3a29f0b33894d4a6.jpg,1\nval/0bt_c3/3b3b9931325d65c9.jpg,1\n\
         val/0by6g/b4d953e7105da1d8.jpg,2"
    );
    assert_eq!(
        read_text(meta.join("test/localization.txt")),
        "test/01226z/32fdab44f6e415f1.jpg,test/01226z/32fdab44f6e415f1_m01226z_7dab3053.png,test/01226z/32fdab44f6e415f1_ignore.png"
    );
    assert_eq!(
        read_text(meta.join("train/class_labels.txt")),
        "train/01226z/14984e5b51df041c.jpg,0\ntrain/0bt_c3/01491bf840ae9939.jpg,1"
    );
    assert_eq!(read_text(meta.join("train/localization.txt")), "");
    for split in ["train", "val", "test"] {
        let sizes = meta.join(split).join("image_sizes.txt");
        assert_eq!(std::fs::metadata(&sizes).unwrap().len(), 0, "{split}");
    }
}

#[test]
fn openimages_malformed_mask_names_the_file() {
    let (imgs, mut anns, _) = openimages_zips();
    // The class in a mask name must be its folder's: this one says 0by6g inside 0bt_c3.
    let bad = "val/0bt_c3/1cd9ac0169ec7df0_m0by6g_6932e993.png";
    anns.push(file(bad, png_gray(4, 4, |_, _| 255)));
    let err = build_err_serving(
        "wsol-openimages",
        vec![
            ff("OpenImages_images.zip", zip(&imgs)),
            ff("OpenImages_annotations.zip", zip(&anns)),
        ],
    );
    assert!(
        err.contains(&format!("OpenImages_annotations.zip/{bad}"))
            && err.contains("not an OpenImages30k file name")
            && err.contains("<imgid>_m0bt_c3_<8 hex>.png"),
        "{err}"
    );

    // A mask whose image is in none of the zips.
    let (imgs, mut anns, _) = openimages_zips();
    let orphan = "test/01226z/ffffffffffffffff_m01226z_00000000.png";
    anns.push(file(orphan, png_gray(4, 4, |_, _| 255)));
    let err = build_err_serving(
        "wsol-openimages",
        vec![
            ff("OpenImages_images.zip", zip(&imgs)),
            ff("OpenImages_annotations.zip", zip(&anns)),
        ],
    );
    assert!(
        err.contains(orphan) && err.contains("no ffffffffffffffff.jpg"),
        "{err}"
    );
}
