//! ContraCAM parity with the official code's known-answer vectors (shared/reference/contracam).
//! Tolerances from the vectors' README: CAMs and layer4 atol 1e-4 (observed fp32 noise ≤ 6.4e-6),
//! α rtol 1e-4 + atol 1e-9 (α is ~1e-4 in absolute terms), projections and scores atol 1e-5.
mod common;

use contracam::data::formats::safetensors::{read_tensors, TensorFile};
use contracam::localize::{contrastive_cam, contrastive_cam_traced, CamConfig};
use contracam::model::{Arch, ContrastiveModel, Method, Stem};
use tch::{Device, Tensor};

struct Fixture {
    model_path: std::path::PathBuf,
    vectors: TensorFile,
}

fn fixture() -> Fixture {
    tch::set_num_threads(2);
    let dir = common::reference_dir().join("contracam");
    Fixture {
        model_path: dir.join("contracam_r18_weights.safetensors"),
        vectors: read_tensors(&dir.join("contracam_r18_vectors.safetensors")).expect("vectors"),
    }
}

fn model(f: &Fixture) -> ContrastiveModel {
    ContrastiveModel::load(&f.model_path, Device::Cpu).expect("reference weights load strictly")
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shape mismatch");
    (a - b).abs().max().double_value(&[])
}

fn check(name: &str, got: &Tensor, want: &Tensor, atol: f64) -> f64 {
    let d = max_abs(got, want);
    println!("{name}: max |Δ| = {d:.3e} (atol {atol:.0e})");
    assert!(d <= atol, "{name}: max |Δ| = {d:e} > {atol:e}");
    d
}

/// |got − want| ≤ atol + rtol·|want| elementwise.
fn check_rel(name: &str, got: &Tensor, want: &Tensor, rtol: f64, atol: f64) {
    let excess = ((got - want).abs() - (want.abs() * rtol + atol))
        .max()
        .double_value(&[]);
    let d = max_abs(got, want);
    println!("{name}: max |Δ| = {d:.3e}");
    assert!(
        excess <= 0.0,
        "{name}: outside rtol {rtol:e} + atol {atol:e} (max |Δ| {d:e})"
    );
}

#[test]
fn reference_weights_infer_resnet18_moco() {
    let f = fixture();
    let m = model(&f);
    assert_eq!(m.config.encoder.arch, Arch::Resnet18);
    assert_eq!(m.config.encoder.stem, Stem::Imagenet);
    assert_eq!(m.config.method, Method::Moco);
    assert_eq!(
        m.vs.variables().len(),
        128,
        "the reference file holds 128 tensors"
    );
}

#[test]
fn setting_a_and_its_intermediates() {
    let f = fixture();
    let m = model(&f);
    let x = f.vectors.get("input_normalized").unwrap();
    let cfg = CamConfig {
        expand_res: 1,
        iters: 1,
        negative_removal: true,
    };
    let t = contrastive_cam_traced(&m, x, &cfg).unwrap();
    let it = &t.iterations[0];
    let v = |n: &str| f.vectors.get(n).unwrap();
    check("mask_color", &t.mask_color, v("mask_color"), 1e-6);
    check("a_layer4", &it.layer4, v("a_layer4"), 1e-4);
    check("a_projection", &it.projection, v("a_projection"), 1e-5);
    check("a_score", &it.score, v("a_score"), 1e-5);
    check_rel("a_alpha_raw", &it.alpha_raw, v("a_alpha_raw"), 1e-4, 1e-9);
    check(
        "a_cam_lowres_prerelu",
        &it.cam_lowres_prerelu,
        v("a_cam_lowres_prerelu"),
        1e-4,
    );
    check("a_cam_lowres", &it.cam_lowres, v("a_cam_lowres"), 1e-4);
    check(
        "a_cam_upsampled",
        &it.cam_upsampled,
        v("a_cam_upsampled"),
        1e-4,
    );
    check("cam_a_er1_it1", &t.cam, v("cam_a_er1_it1"), 1e-4);
}

#[test]
fn setting_b_expand_res_2() {
    let f = fixture();
    let m = model(&f);
    let x = f.vectors.get("input_normalized").unwrap();
    let cfg = CamConfig {
        expand_res: 2,
        iters: 1,
        negative_removal: true,
    };
    let t = contrastive_cam_traced(&m, x, &cfg).unwrap();
    let v = |n: &str| f.vectors.get(n).unwrap();
    check("b_layer4", &t.iterations[0].layer4, v("b_layer4"), 1e-4);
    check_rel(
        "b_alpha_raw",
        &t.iterations[0].alpha_raw,
        v("b_alpha_raw"),
        1e-4,
        1e-9,
    );
    check(
        "b_cam_lowres",
        &t.iterations[0].cam_lowres,
        v("b_cam_lowres"),
        1e-4,
    );
    check("cam_b_er2_it1", &t.cam, v("cam_b_er2_it1"), 1e-4);
}

#[test]
fn setting_c_ten_iterations() {
    let f = fixture();
    let m = model(&f);
    let x = f.vectors.get("input_normalized").unwrap();
    let cfg = CamConfig {
        expand_res: 2,
        iters: 10,
        negative_removal: true,
    };
    let t = contrastive_cam_traced(&m, x, &cfg).unwrap();
    let v = |n: &str| f.vectors.get(n).unwrap();
    let scores = Tensor::stack(
        &t.iterations
            .iter()
            .map(|i| i.score.shallow_clone())
            .collect::<Vec<_>>(),
        0,
    );
    check("c_scores", &scores, v("c_scores"), 1e-5);
    let alphas = Tensor::stack(
        &t.iterations
            .iter()
            .map(|i| i.alpha_raw.shallow_clone())
            .collect::<Vec<_>>(),
        0,
    );
    check_rel("c_alpha_raw", &alphas, v("c_alpha_raw"), 1e-4, 1e-9);
    let first_two = Tensor::stack(&[&t.iterations[0].cam, &t.iterations[1].cam], 0);
    check("c_iter_cams_0_1", &first_two, v("c_iter_cams_0_1"), 1e-4);
    check("cam_c_er2_it10", &t.cam, v("cam_c_er2_it10"), 1e-4);
}

#[test]
fn setting_d_without_negative_signal_removal() {
    let f = fixture();
    let m = model(&f);
    let x = f.vectors.get("input_normalized").unwrap();
    let cfg = CamConfig {
        expand_res: 1,
        iters: 1,
        negative_removal: false,
    };
    let t = contrastive_cam_traced(&m, x, &cfg).unwrap();
    check(
        "d_cam_lowres",
        &t.iterations[0].cam_lowres,
        f.vectors.get("d_cam_lowres").unwrap(),
        1e-4,
    );
    let cam = contrastive_cam(&m, x, &cfg).unwrap();
    check(
        "cam_d_er1_it1_noclamp",
        &cam,
        f.vectors.get("cam_d_er1_it1_noclamp").unwrap(),
        1e-4,
    );
}
