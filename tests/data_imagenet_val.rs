//! The `imagenet-val` builder (`data build imagenet`): ImageNet val in wsolevaluation's ILSVRC `test` split,
//! from a fixture in the real layout (flat val tar + wsolevaluation metadata); bad metadata names file and line.
mod data_common;
mod imagenet_val_fixture;

use std::path::Path;

use data_common::*;
use imagenet_val_fixture as fx;

/// sha256 of `index/test.jsonl` built from the fixture. The fixture is deterministic (fixed JPEG encoder input,
/// tar headers without times); a change here means the index format or the builder's output changed.
const PINNED_INDEX_SHA256: &str =
    "4f41926929d68719c7303506a1b4e7c3fd90420ee3aa66b5fd24e4b063f063b6";

fn build_fixture(
    tmp: &Path,
    tar_bytes: Vec<u8>,
    meta: &[String; 4],
) -> (std::path::PathBuf, String) {
    let srv = Server::start();
    let m = serve_dataset(
        &srv,
        tmp,
        "imagenet",
        Some("imagenet-val"),
        fx::files(tar_bytes, meta),
    );
    let data = tmp.join("d");
    let o = contracam(&data_args("build", "imagenet", &m, &data, &[]));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    if o.status.success() {
        (data, String::new())
    } else {
        (data, err)
    }
}

#[test]
fn imagenet_val_labels_multi_box_order_and_wsol_ilsvrc_test_export() {
    let tmp = tempfile::tempdir().unwrap();
    let images = fx::images();
    let meta = fx::metadata(&images);
    let (data, err) = build_fixture(tmp.path(), fx::val_tar(&images), &meta);
    assert!(err.is_empty(), "{err}");

    let test = read_index(&data, "imagenet", "test");
    assert_eq!(test.header.classes.len(), 1000);
    assert_eq!(test.header.classes[970], "970");
    assert_eq!(test.header.label_kind, "class");
    // The order of image_ids.txt (not the tar's 3, 1, 7, ...); image 7 is in no metadata and left out.
    assert_eq!(test.samples.len(), 6);
    for (s, im) in test.samples.iter().zip(&images) {
        assert_eq!(
            s.path,
            format!("extracted/ILSVRC2012_img_val.tar/{}", fx::image_name(im.id))
        );
        assert!(data.join("imagenet").join(&s.path).is_file());
        assert_eq!(s.labels, vec![im.label]);
        assert_eq!((s.width, s.height), (im.w, im.h));
        let boxes: Vec<[f64; 4]> = im.boxes.iter().map(|b| b.map(f64::from)).collect();
        assert_eq!(s.boxes, boxes);
        assert!(s.mask.is_none());
    }
    assert_eq!(test.samples[1].boxes.len(), 2);
    assert_eq!(test.samples[4].boxes.len(), 3);
    assert_eq!(
        test.samples[4].boxes[2],
        [31.0, 2.0, 43.0, 25.0],
        "the third box of image 5"
    );

    // The re-export is byte for byte wsolevaluation's input (order, integer boxes, no trailing newline).
    let wsol = data.join("imagenet/build/wsol/metadata/ILSVRC/test");
    for (name, text) in ["image_ids", "class_labels", "image_sizes", "localization"]
        .iter()
        .zip(&meta)
    {
        let got = std::fs::read_to_string(wsol.join(format!("{name}.txt"))).unwrap();
        assert_eq!(&got, text, "{name}.txt");
    }

    let index = std::fs::read(data.join("imagenet/index/test.jsonl")).unwrap();
    assert_eq!(sha256(&index), PINNED_INDEX_SHA256);
}

#[test]
fn imagenet_val_bad_metadata_names_file_and_line() {
    let images = fx::images();
    let good = fx::metadata(&images);
    let with = |k: usize, text: String| {
        let mut m = good.clone();
        m[k] = text;
        m
    };
    let loc_lines: Vec<&str> = good[3].lines().collect();
    let mut short = loc_lines.clone();
    short[2] = "val/ILSVRC2012_val_00000002.JPEG,18,10,35";
    let mut outside = loc_lines.clone();
    // Image 3 is 30×40: x1 = 31 lies outside.
    outside[3] = "val/ILSVRC2012_val_00000003.JPEG,5,8,31,36";
    /// Metadata, val tar, the file the error must name and what else it must say.
    type Case<'a> = ([String; 4], Vec<u8>, &'a str, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            with(3, short.join("\n")),
            fx::val_tar(&images),
            "wsol-ILSVRC-test-localization.txt",
            vec!["line 3", "expected `path,x0,y0,x1,y1`"],
        ),
        (
            with(3, outside.join("\n")),
            fx::val_tar(&images),
            "wsol-ILSVRC-test-localization.txt",
            vec!["line 4", "outside the image (30×40"],
        ),
        (
            with(1, good[1].replacen(",970", ",x", 1)),
            fx::val_tar(&images),
            "wsol-ILSVRC-test-class_labels.txt",
            vec!["line 2", "label `x` is not an integer"],
        ),
        // Image 8 is named by the metadata but is not in the tar.
        (
            {
                let mut more = fx::images();
                more.push(fx::Image {
                    id: 8,
                    w: 10,
                    h: 10,
                    label: 1,
                    boxes: vec![[1, 1, 5, 5]],
                });
                fx::metadata(&more)
            },
            fx::val_tar(&images),
            "wsol-ILSVRC-test-image_ids.txt",
            vec![
                "line 7",
                "ILSVRC2012_val_00000008.JPEG",
                "is not in ILSVRC2012_img_val.tar",
            ],
        ),
        // The metadata says 40×30 for image 1; the JPEG in the tar is 20×30.
        (
            good.clone(),
            {
                let mut other = fx::images();
                other[0].w = 20;
                fx::val_tar(&other)
            },
            "wsol-ILSVRC-test-image_sizes.txt",
            vec!["line 1", "40×30", "20×30"],
        ),
    ];
    for (meta, tar_bytes, file, wants) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let (data, err) = build_fixture(tmp.path(), tar_bytes, &meta);
        assert!(err.contains(file), "{file}: {err}");
        for w in wants {
            assert!(err.contains(w), "{w}: {err}");
        }
        assert!(!data.join("imagenet/index/test.jsonl").exists());
    }
}

#[test]
fn builtin_imagenet_manifest_names_the_builder_and_the_pinned_metadata() {
    let reg = contracam::data::source::manifest::Registry::builtin().unwrap();
    let m = reg.get("imagenet").unwrap();
    assert_eq!(m.dataset.builder.as_deref(), Some("imagenet-val"));
    assert!(m.dataset.gated);
    assert_eq!(
        contracam::data::builders::imagenet_val::METADATA,
        fx::METADATA_FILES
    );
    let tar = m
        .files
        .iter()
        .find(|f| f.name == "ILSVRC2012_img_val.tar")
        .unwrap();
    assert!(m.file_gated(tar));
    for name in fx::METADATA_FILES {
        let f = m.files.iter().find(|f| f.name == name).unwrap();
        assert!(
            !f.optional && f.sha256.is_some() && f.size.is_some(),
            "{name}"
        );
        // Public: `data build imagenet` downloads it once the val tar is placed.
        assert!(!m.file_gated(f), "{name}");
        let upstream = name.strip_prefix("wsol-ILSVRC-test-").unwrap();
        assert_eq!(
            f.urls,
            vec![format!(
                "https://raw.githubusercontent.com/clovaai/wsolevaluation/96f4b88679af41f005824661f47e6fe3628af2aa/metadata/ILSVRC/test/{upstream}"
            )]
        );
    }
    // Only the val tar and the metadata are needed to build; the devkit and train tar are optional.
    let required: Vec<&str> = m
        .files
        .iter()
        .filter(|f| !f.optional)
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(required.len(), 5, "{required:?}");
    assert!(required.contains(&"ILSVRC2012_img_val.tar"));
}

#[test]
fn public_files_of_a_gated_dataset_are_fetched_once_the_gated_file_is_placed() {
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let secret = b"placed by hand".to_vec();
    let public = b"public metadata".to_vec();
    srv.put("/g/meta.txt", Served::file(public.clone()));
    let m = tmp.path().join("g.toml");
    std::fs::write(
        &m,
        format!(
            "[dataset]\nname = \"g\"\ntitle = \"t\"\ngated = true\ninstructions = \"ask for access\"\n\n\
             [[files]]\nname = \"secret.bin\"\nsize = {}\nsha256 = \"{}\"\n\n\
             [[files]]\nname = \"meta.txt\"\nurls = [\"{}\"]\nsize = {}\nsha256 = \"{}\"\ngated = false\n",
            secret.len(),
            sha256(&secret),
            srv.url("/g/meta.txt"),
            public.len(),
            sha256(&public)
        ),
    )
    .unwrap();
    let data = tmp.path().join("d");
    // The gated file is not placed: it is named, and nothing is downloaded.
    let err = run_err(&data_args("fetch", "g", &m, &data, &[]));
    assert!(
        err.contains("gated") && err.contains("secret.bin") && !err.contains("meta.txt"),
        "{err}"
    );
    assert!(srv.log().is_empty());
    // Placed: the public file is downloaded beside it and both are verified.
    let dl = downloads(&data, "g");
    std::fs::create_dir_all(&dl).unwrap();
    std::fs::write(dl.join("secret.bin"), &secret).unwrap();
    run_ok(&data_args("fetch", "g", &m, &data, &[]));
    assert_eq!(std::fs::read(dl.join("meta.txt")).unwrap(), public);
    assert!(srv.log().iter().all(|r| r.path == "/g/meta.txt"));
    assert!(!srv.log().is_empty());

    // A public file must say where it is downloaded from.
    let e = contracam::data::source::manifest::Manifest::parse(
        "[dataset]\nname = \"g\"\ntitle = \"t\"\ngated = true\n[[files]]\nname = \"m.txt\"\ngated = false\n",
        Path::new("g.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("g.toml") && e.contains("m.txt") && e.contains("no urls"),
        "{e}"
    );
}
