//! Table 3 end to end at the `ci` profile on fixture data: ImageNet val (flat tar + wsolevaluation's ILSVRC test
//! metadata), CUB, Flowers, VOC and OpenImages fixture archives in their real layouts are built with `data
//! build`; the two checkpoints the suite imports (a torchvision ResNet-50 `.pth` and a facebookresearch MoCo v2
//! `.pth.tar`, random weights, narrow) are written by the project's `.venv` torch; their sha256 is given by
//! `--set`; `suite run --profile ci` on the shipped suite file must run every stage, give every bound cell a
//! value in range, and a rerun must be fully cached.
mod data_common;
mod imagenet_val_fixture;
mod paper_fixtures;

use std::path::Path;

use data_common::*;
use paper_fixtures::{build_cub, build_flowers, Cub, Flowers};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// ImageNet val as the gated files would be placed, served by a fixture manifest replacing the built-in one.
fn build_imagenet(srv: &Server, tmp: &Path, data: &Path) {
    use imagenet_val_fixture as fx;
    let images = fx::images();
    let m = serve_dataset(
        srv,
        tmp,
        "imagenet",
        Some("imagenet-val"),
        fx::files(fx::val_tar(&images), &fx::metadata(&images)),
    );
    build(&m, data, "imagenet", &[]);
}

fn build_voc(srv: &Server, tmp: &Path, data: &Path) {
    let r = "VOCdevkit/VOC2012";
    let ids = ["2007_000027", "2007_000032", "2007_000033", "2007_000039"];
    let mut e = vec![];
    for (k, id) in ids.iter().enumerate() {
        e.push(file(
            &format!("{r}/Annotations/{id}.xml"),
            format!(
                "<annotation><folder>VOC2012</folder><size><width>28</width><height>20</height><depth>3</depth></size>\
                 <segmented>1</segmented><object><name>{}</name><pose>Left</pose><truncated>0</truncated>\
                 <difficult>0</difficult><bndbox><xmin>5</xmin><ymin>4</ymin><xmax>20</xmax><ymax>15</ymax></bndbox>\
                 </object></annotation>",
                ["person", "aeroplane", "dog", "tvmonitor"][k]
            ),
        ));
        e.push(file(
            &format!("{r}/JPEGImages/{id}.jpg"),
            jpeg(28, 20, k as u8 + 1),
        ));
        e.push(file(
            &format!("{r}/SegmentationClass/{id}.png"),
            png_gray(28, 20, |x, y| {
                if (5..20).contains(&x) && (4..15).contains(&y) {
                    1
                } else {
                    0
                }
            }),
        ));
    }
    let list = ids.join("\n") + "\n";
    e.push(file(
        &format!("{r}/ImageSets/Main/train.txt"),
        "2007_000027\n",
    ));
    e.push(file(&format!("{r}/ImageSets/Main/val.txt"), list.clone()));
    e.push(file(
        &format!("{r}/ImageSets/Main/trainval.txt"),
        list.clone(),
    ));
    e.push(file(&format!("{r}/ImageSets/Segmentation/val.txt"), list));
    let m = serve_dataset(
        srv,
        tmp,
        "voc2012",
        Some("voc"),
        vec![ff("VOCtrainval_11-May-2012.tar", tar(&e))],
    );
    build(&m, data, "voc2012", &[]);
}

fn build_openimages(srv: &Server, tmp: &Path, data: &Path) {
    let (mut imgs, mut anns) = (vec![], vec![]);
    let items = [
        ("train", "01226z", "14984e5b51df041c"),
        ("val", "0bt_c3", "3a29f0b33894d4a6"),
        ("test", "01226z", "32fdab44f6e415f1"),
        ("test", "0bt_c3", "1cd9ac0169ec7df0"),
        ("test", "0by6g", "b4d953e7105da1d8"),
    ];
    for (k, (split, class, id)) in items.iter().enumerate() {
        imgs.push(file(
            &format!("{split}/{class}/{id}.jpg"),
            jpeg(26, 20, k as u8 + 3),
        ));
        if *split != "train" {
            anns.push(file(
                &format!("{split}/{class}/{id}_m{class}_9f8621ff.png"),
                png_gray(26, 20, |x, y| {
                    if (4..18).contains(&x) && (3..15).contains(&y) {
                        255
                    } else {
                        0
                    }
                }),
            ));
        }
    }
    let m = serve_dataset(
        srv,
        tmp,
        "wsol-openimages",
        Some("wsol-openimages"),
        vec![
            ff("OpenImages_images.zip", zip(&imgs)),
            ff("OpenImages_annotations.zip", zip(&anns)),
        ],
    );
    build(&m, data, "wsol-openimages", &[]);
}

/// The two released checkpoints' layouts, with random weights of a narrow ResNet-50 (1/16 width), written
/// under the names the suite's `source` params give; returns their sha256 (torchvision, MoCo v2).
fn checkpoints(data: &Path) -> (String, String) {
    let script = format!(
        r#"
import sys, torch
sys.path.insert(0, {fixtures:?})
import torch_checkpoints as tc
gen = torch.Generator().manual_seed(3)
m = tc.ResNet("resnet50", 0.0625, num_classes=1000)
tc.randomize(m, gen)
torch.save(m.state_dict(), {sup:?})
ckpt, _ = tc.moco_v2("resnet50", 0.0625, gen)
torch.save(ckpt, {moco:?})
"#,
        fixtures = root().join("tests/fixtures").display().to_string(),
        sup = data.join("resnet50-0676ba61.pth").display().to_string(),
        moco = data
            .join("moco_v2_800ep_pretrain.pth.tar")
            .display()
            .to_string(),
    );
    let out = std::process::Command::new(root().join(".venv/bin/python"))
        .args(["-c", &script])
        .output()
        .expect("running .venv/bin/python (run `make setup`)");
    assert!(
        out.status.success(),
        "checkpoint script failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = |name: &str| sha256(&std::fs::read(data.join(name)).unwrap());
    (
        hash("resnet50-0676ba61.pth"),
        hash("moco_v2_800ep_pretrain.pth.tar"),
    )
}

fn results(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn table3_runs_end_to_end_at_the_ci_profile_on_fixture_data() {
    let started = std::time::Instant::now();
    let srv = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    build_imagenet(&srv, tmp.path(), &data);
    // CUB: ids 1-2 train (ReDO split 0), the rest test (split 2).
    let cub = Cub {
        images: 6,
        train_upto: 2,
        bbox: "4.0 3.0 18.0 14.0",
        mask: (4..22, 3..17),
    };
    build_cub(&srv, tmp.path(), &data, &cub);
    // Flowers: ReDO's segmentation test split is trnid.
    let flowers = Flowers {
        labels: &[1.0, 2.0, 1.0, 2.0, 1.0, 2.0],
        trnid: &[1.0, 2.0, 3.0, 4.0],
        valid: &[5.0],
        tstid: &[6.0],
        flower: (6..24, 5..17),
    };
    build_flowers(&srv, tmp.path(), &data, &flowers);
    build_voc(&srv, tmp.path(), &data);
    build_openimages(&srv, tmp.path(), &data);
    let (sup, moco) = checkpoints(&data);
    let sets = [
        format!("stages.sup_imagenet.params.sha256={sup}"),
        format!("stages.moco_imagenet.params.sha256={moco}"),
    ];
    let runs = tmp.path().join("runs");
    let run = |suite: &Path, out: &Path| {
        let mut args: Vec<String> = [
            "suite",
            "run",
            suite.to_str().unwrap(),
            "--profile",
            "ci",
            "--runs-dir",
            runs.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--threads",
            "1",
            "--quiet",
        ]
        .map(String::from)
        .to_vec();
        for s in &sets {
            args.extend(["--set".to_string(), s.clone()]);
        }
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        contracam(&args)
    };

    let suite = root().join("suites/paper/table3.toml");
    let first = tmp.path().join("r1.json");
    let o = run(&suite, &first);
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let r = results(&first);
    assert_eq!(r["profile"], "ci");
    assert_eq!(r["sets"].as_array().unwrap().len(), 2);
    let stages = r["stages"].as_array().unwrap();
    // 2 imports + 5 datasets × (2 CAMs + 2 evaluations).
    assert_eq!(stages.len(), 22, "{stages:?}");
    assert!(stages.iter().all(|s| s["cached"] == false));
    let cells = r["paper_cells"].as_array().unwrap();
    assert_eq!(cells.len(), 10);
    assert!(cells.iter().any(|c| c["column"] == "ImageNet"), "{cells:?}");
    for c in cells {
        let v = c["value"]
            .as_f64()
            .unwrap_or_else(|| panic!("no value: {c}"));
        assert!((0.0..=100.0).contains(&v), "{c}");
    }
    // The limit holds: the ci profile reads 4 samples of each split at most.
    assert_eq!(r["config"]["datasets"]["cub"]["limit"], 4);
    assert_eq!(r["config"]["datasets"]["imagenet"]["limit"], 4);
    assert_eq!(r["config"]["datasets"]["imagenet"]["split"], "test");

    let second = tmp.path().join("r2.json");
    let o = run(&suite, &second);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r2 = results(&second);
    assert!(r2["stages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["cached"] == true));
    assert_eq!(r2["metrics"], r["metrics"]);
    eprintln!(
        "table3 ci end to end: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
