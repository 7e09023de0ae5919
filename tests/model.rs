//! ResNet architecture and checkpoints: torchvision names and shapes, feature-map sizes with the
//! resolution trick, the official initialisation, and strict loading.
use std::collections::HashMap;

use contracam::data::formats::safetensors::{read_tensors, write_tensors};
use contracam::model::{Arch, ContrastiveModel, Method, ModelConfig, ResNetConfig, Stem};
use tch::{Device, Kind, Tensor};

fn config(arch: Arch, width: f64, stem: Stem) -> ModelConfig {
    ModelConfig {
        encoder: ResNetConfig {
            arch,
            width,
            stem,
            zero_init_residual: true,
        },
        method: Method::Moco,
        proj_hidden: None,
        proj_dim: None,
        pred_hidden: None,
        projector_form: Default::default(),
    }
}

/// torchvision's state dict (fc dropped) as name → (shape, dtype), from tests/data (generated with
/// torchvision 0.26.0; provenance on the first line of each file).
fn torchvision_keys(arch: &str) -> Vec<(String, Vec<i64>, String)> {
    let path = format!(
        "{}/tests/data/torchvision_{arch}_state_dict.tsv",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let shape: Vec<i64> = serde_json::from_str(f[1]).unwrap();
            (f[0].to_string(), shape, f[2].to_string())
        })
        .collect()
}

fn check_names(arch: Arch, file: &str) {
    let m = ContrastiveModel::new(&config(arch, 1.0, Stem::Imagenet), Device::Cpu);
    let vars = m.vs.variables();
    let expected = torchvision_keys(file);
    let encoder: Vec<&String> = vars.keys().filter(|k| k.starts_with("encoder.")).collect();
    assert_eq!(encoder.len(), expected.len(), "number of encoder tensors");
    for (name, shape, dtype) in expected {
        let t = vars
            .get(&format!("encoder.{name}"))
            .unwrap_or_else(|| panic!("missing encoder.{name}"));
        assert_eq!(t.size(), shape, "shape of {name}");
        let kind = if dtype == "int64" {
            Kind::Int64
        } else {
            Kind::Float
        };
        assert_eq!(t.kind(), kind, "dtype of {name}");
    }
}

#[test]
fn resnet18_matches_torchvision_state_dict() {
    check_names(Arch::Resnet18, "resnet18");
}

#[test]
fn resnet50_matches_torchvision_state_dict() {
    check_names(Arch::Resnet50, "resnet50");
}

#[test]
fn layer4_sizes_with_resolution_expansion() {
    tch::manual_seed(0);
    let x = Tensor::randn([2, 3, 224, 224], (Kind::Float, Device::Cpu));
    let r18 = ContrastiveModel::new(&config(Arch::Resnet18, 1.0, Stem::Imagenet), Device::Cpu);
    for (e, side) in [(1, 7), (2, 14), (4, 28)] {
        let a = tch::no_grad(|| r18.encoder.features(&x, false, e));
        assert_eq!(a.size(), vec![2, 512, side, side], "expand_res {e}");
    }
    let r50 = ContrastiveModel::new(&config(Arch::Resnet50, 0.25, Stem::Imagenet), Device::Cpu);
    let a = tch::no_grad(|| r50.encoder.features(&x, false, 2));
    assert_eq!(
        a.size(),
        vec![2, 512, 14, 14],
        "R50 at width 0.25 has 16·8·4 = 512 channels"
    );
    let small = ContrastiveModel::new(&config(Arch::Resnet18, 0.25, Stem::Small), Device::Cpu);
    let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    let a = tch::no_grad(|| small.encoder.features(&x, false, 1));
    assert_eq!(a.size(), vec![2, 128, 4, 4]);
    assert_eq!(small.project(&x, false).size(), vec![2, 128]);
}

#[test]
fn official_initialisation() {
    tch::manual_seed(1);
    let m = ContrastiveModel::new(&config(Arch::Resnet18, 1.0, Stem::Imagenet), Device::Cpu);
    let v = m.vs.variables();
    let max = |n: &str| v[n].abs().max().double_value(&[]);
    // Conv: U(±1/√fan_in); fan_in of layer1.0.conv1 = 64·3·3.
    let bound = 1.0 / (64.0f64 * 9.0).sqrt();
    assert!(
        max("encoder.layer1.0.conv1.weight") <= bound
            && max("encoder.layer1.0.conv1.weight") > 0.9 * bound
    );
    // BatchNorm weight 1 (torchvision), 0 for the residual branch's last BN (zero_init_residual).
    assert_eq!(v["encoder.bn1.weight"].min().double_value(&[]), 1.0);
    assert_eq!(max("encoder.layer3.1.bn2.weight"), 0.0);
    assert_eq!(max("encoder.layer3.1.bn1.bias"), 0.0);
    // Linear: U(±1/√fan_in) for weight and bias.
    let b = 1.0 / 512f64.sqrt();
    assert!(max("projector.3.bias") <= b && max("projector.3.bias") > 0.5 * b);
    assert!(
        v["projector.0.weight"].size() == vec![512, 512] && !v.contains_key("projector.0.bias")
    );
}

#[test]
fn byol_heads() {
    let mut cfg = config(Arch::Resnet18, 0.25, Stem::Small);
    cfg.method = Method::Byol;
    cfg.proj_hidden = Some(64);
    cfg.pred_hidden = Some(32);
    let m = ContrastiveModel::new(&cfg, Device::Cpu);
    let v = m.vs.variables();
    assert_eq!(v["projector.3.weight"].size(), vec![256, 64]);
    assert_eq!(v["predictor.0.weight"].size(), vec![32, 256]);
    assert_eq!(v["predictor.3.weight"].size(), vec![256, 32]);
}

#[test]
fn checkpoint_round_trip_and_strict_loading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    tch::manual_seed(3);
    let cfg = config(Arch::Resnet18, 0.25, Stem::Small);
    let m = ContrastiveModel::new(&cfg, Device::Cpu);
    m.save(&path, &HashMap::new()).unwrap();
    let back = ContrastiveModel::load(&path, Device::Cpu).unwrap();
    assert_eq!(back.config, cfg);
    let (a, b) = (m.vs.variables(), back.vs.variables());
    for (k, t) in &a {
        assert!(t.equal(&b[k]), "{k} differs after the round trip");
    }

    // Drop one tensor, add a stray one and change a shape: one error naming all three.
    let file = read_tensors(&path).unwrap();
    let mut tensors: Vec<(String, Tensor)> = file
        .tensors
        .iter()
        .filter(|(k, _)| k.as_str() != "encoder.layer2.0.bn1.running_var")
        .map(|(k, t)| {
            let t = if k == "projector.3.bias" {
                Tensor::zeros([7], (Kind::Float, Device::Cpu))
            } else {
                t.shallow_clone()
            };
            (k.clone(), t)
        })
        .collect();
    tensors.push((
        "encoder.fc.weight".into(),
        Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)),
    ));
    let bad = dir.path().join("bad.safetensors");
    write_tensors(&bad, &tensors, &file.metadata).unwrap();
    let err = ContrastiveModel::load(&bad, Device::Cpu)
        .unwrap_err()
        .to_string();
    for needle in [
        "encoder.layer2.0.bn1.running_var",
        "encoder.fc.weight",
        "projector.3.bias",
        "bad.safetensors",
    ] {
        assert!(err.contains(needle), "error should name {needle}: {err}");
    }
}

#[test]
fn corrupt_checkpoint_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.safetensors");
    std::fs::write(&path, b"not a safetensors file").unwrap();
    let err = ContrastiveModel::load(&path, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("junk.safetensors"), "{err}");
}
