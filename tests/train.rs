//! Training pieces: crop geometry, augmentation identities, MoCo/BYOL loops, object-aware crop, determinism.
use contracam::model::{Arch, Method, ModelConfig, ResNetConfig, Stem};
use contracam::train::augment::{self, AugmentConfig};
use contracam::train::{train, TrainConfig, TrainData};
use contracam::util::progress::Progress;
use contracam::util::rng::rng_for;
use tch::{Device, Kind, Tensor};

fn images(n: i64, s: i64) -> Tensor {
    // Tests run in parallel threads and libtorch's generator is process-global: draw under its lock.
    let _rng = contracam::util::rng::torch_rng_lock();
    tch::manual_seed(11);
    Tensor::rand([n, 3, s, s], (Kind::Float, Device::Cpu))
}

#[test]
fn random_resized_crop_stays_inside_its_region() {
    let cfg = AugmentConfig::default();
    let mut rng = rng_for(1, "t");
    let region = [0.25, 0.1, 0.75, 0.6];
    for _ in 0..2000 {
        let c = augment::sample_crop(&mut rng, region, 64.0, 64.0, &cfg);
        assert!(
            c[0] >= region[0] - 1e-9 && c[1] >= region[1] - 1e-9,
            "{c:?}"
        );
        assert!(
            c[2] <= region[2] + 1e-9 && c[3] <= region[3] + 1e-9,
            "{c:?}"
        );
        let area =
            (c[2] - c[0]) * (c[3] - c[1]) / ((region[2] - region[0]) * (region[3] - region[1]));
        assert!(area > 0.05 && area <= 1.0 + 1e-9, "area fraction {area}");
    }
}

#[test]
fn full_crop_is_identity_and_flip_mirrors() {
    let x = images(2, 16);
    let same = augment::crop_resize(&x, &[[0.0, 0.0, 1.0, 1.0]; 2], &[false, false], 16);
    assert!((&same - &x).abs().max().double_value(&[]) < 1e-5);
    let flipped = augment::crop_resize(&x, &[[0.0, 0.0, 1.0, 1.0]; 2], &[true, true], 16);
    assert!((&flipped - x.flip([3])).abs().max().double_value(&[]) < 1e-5);
    // The left half, upsampled 2x: column 0 of the output is near column 0 of the input.
    let half = augment::crop_resize(&x, &[[0.0, 0.0, 0.5, 1.0]; 2], &[false, false], 16);
    let d =
        (half.narrow(3, 4, 1) - x.narrow(3, 2, 1).upsample_nearest2d([16, 1], None, None)).abs();
    assert!(d.mean(Kind::Float).double_value(&[]) < 0.35);
}

#[test]
fn hsv_round_trip_and_no_op_augmentation() {
    let x = images(3, 8);
    let back = augment::hsv_to_rgb(&augment::rgb_to_hsv(&x));
    assert!((&back - &x).abs().max().double_value(&[]) < 1e-5);
    let cfg = AugmentConfig {
        jitter_p: 0.0,
        grayscale_p: 0.0,
        blur_p: 0.0,
        ..Default::default()
    };
    let y = augment::color_blur_normalize(&x, &mut rng_for(0, "t"), &cfg);
    assert!((y - augment::normalize(&x)).abs().max().double_value(&[]) < 1e-6);
    let gray = AugmentConfig {
        jitter_p: 0.0,
        grayscale_p: 1.0,
        blur_p: 0.0,
        ..Default::default()
    };
    let g = augment::color_blur_normalize(&x, &mut rng_for(0, "t"), &gray);
    let g = g * Tensor::from_slice(&augment::IMAGENET_STD.map(|v| v as f32)).view([1, 3, 1, 1])
        + Tensor::from_slice(&augment::IMAGENET_MEAN.map(|v| v as f32)).view([1, 3, 1, 1]);
    assert!(
        (g.select(1, 0) - g.select(1, 2))
            .abs()
            .max()
            .double_value(&[])
            < 1e-5,
        "grayscale has equal channels"
    );
}

fn tiny(method: Method) -> (ModelConfig, TrainConfig) {
    let model = ModelConfig {
        encoder: ResNetConfig {
            arch: Arch::Resnet18,
            width: 0.125,
            stem: Stem::Small,
            zero_init_residual: true,
        },
        method,
        proj_hidden: Some(32),
        proj_dim: Some(16),
        pred_hidden: Some(32),
        projector_form: Default::default(),
    };
    let mut t = TrainConfig {
        epochs: 2,
        batch_size: 8,
        queue_size: 24,
        ema: Some(0.9),
        base_lr: 0.5,
        ..Default::default()
    };
    t.augment.output_size = 16;
    (model, t)
}

fn weights_equal(
    a: &contracam::model::ContrastiveModel,
    b: &contracam::model::ContrastiveModel,
) -> bool {
    let (va, vb) = (a.vs.variables(), b.vs.variables());
    va.iter().all(|(k, t)| t.equal(&vb[k]))
}

#[test]
fn moco_and_byol_train_deterministically() {
    tch::set_num_threads(1);
    let x = images(16, 24);
    let bar = Progress::hidden();
    for method in [Method::Moco, Method::Byol] {
        let (m, t) = tiny(method);
        let data = TrainData {
            images: &x,
            boxes: None,
            masks: None,
        };
        let (a, ra) = train(&m, &t, &data, 5, Device::Cpu, &bar).unwrap();
        assert_eq!(ra.steps, 4);
        assert!(
            ra.epoch_loss.iter().all(|l| l.is_finite()),
            "{method:?}: {:?}",
            ra.epoch_loss
        );
        if method == Method::Byol {
            assert!(
                ra.epoch_loss.iter().all(|l| (-4.0..=4.0).contains(l)),
                "BYOL loss is −2·(cos + cos)"
            );
        }
        let (b, rb) = train(&m, &t, &data, 5, Device::Cpu, &bar).unwrap();
        assert_eq!(
            ra.epoch_loss, rb.epoch_loss,
            "{method:?}: same seed, same losses"
        );
        assert!(weights_equal(&a, &b), "{method:?}: same seed, same weights");
        let (c, _) = train(&m, &t, &data, 6, Device::Cpu, &bar).unwrap();
        assert!(
            !weights_equal(&a, &c),
            "{method:?}: another seed changes the weights"
        );
    }
}

#[test]
fn object_aware_crop_changes_training_and_bad_inputs_are_refused() {
    tch::set_num_threads(1);
    let x = images(16, 24);
    let bar = Progress::hidden();
    let (m, t) = tiny(Method::Moco);
    let plain = TrainData {
        images: &x,
        boxes: None,
        masks: None,
    };
    let boxes = vec![vec![[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]; 16];
    let oa = TrainData {
        images: &x,
        boxes: Some(&boxes),
        masks: None,
    };
    let (a, _) = train(&m, &t, &plain, 1, Device::Cpu, &bar).unwrap();
    let (b, _) = train(&m, &t, &oa, 1, Device::Cpu, &bar).unwrap();
    assert!(!weights_equal(&a, &b));
    // Empty box lists mean the whole image: identical to plain training.
    let empty = vec![vec![]; 16];
    let (c, _) = train(
        &m,
        &t,
        &TrainData {
            images: &x,
            boxes: Some(&empty),
            masks: None,
        },
        1,
        Device::Cpu,
        &bar,
    )
    .unwrap();
    assert!(weights_equal(&a, &c));
    let short = vec![vec![]; 3];
    let err = train(
        &m,
        &t,
        &TrainData {
            images: &x,
            boxes: Some(&short),
            masks: None,
        },
        1,
        Device::Cpu,
        &bar,
    )
    .err()
    .unwrap();
    assert!(
        err.to_string().contains("3 lists") && err.to_string().contains("per training image (16)"),
        "{err}"
    );
    let big = TrainConfig {
        batch_size: 64,
        ..t
    };
    let err = train(&m, &big, &plain, 1, Device::Cpu, &bar).err().unwrap();
    assert!(
        err.to_string().contains("train.batch_size = 64")
            && err.to_string().contains("16 training images"),
        "{err}"
    );
}

/// The report's view-1 foreground is measured on the batches the loop trains on: carrying the masks does
/// not change a single weight, and boxes that surround the foreground raise it.
#[test]
fn view_foreground_is_measured_in_the_loop_without_changing_training() {
    tch::set_num_threads(1);
    let x = images(16, 24);
    let bar = Progress::hidden();
    let (m, t) = tiny(Method::Moco);
    // Foreground: the top-left quarter of every image.
    let fg = Tensor::zeros([16, 24, 24], (Kind::Float, Device::Cpu));
    let _ = fg.narrow(1, 0, 12).narrow(2, 0, 12).fill_(1.0);
    let run = |boxes: Option<&[Vec<[f64; 4]>]>, masks: Option<&Tensor>| {
        train(
            &m,
            &t,
            &TrainData {
                images: &x,
                boxes,
                masks,
            },
            1,
            Device::Cpu,
            &bar,
        )
        .unwrap()
    };
    let (plain, r_plain) = run(None, None);
    let (observed, r_observed) = run(None, Some(&fg));
    assert!(weights_equal(&plain, &observed), "masks changed training");
    assert_eq!(r_plain.epoch_loss, r_observed.epoch_loss);
    assert_eq!(r_plain.view_foreground, None);
    let plain_fg = r_observed.view_foreground.expect("measured with masks");
    // Random crops of the whole image see about a quarter of foreground.
    assert!((0.1..0.45).contains(&plain_fg), "plain crops: {plain_fg}");
    let boxes = vec![vec![[0.0, 0.0, 0.5, 0.5]]; 16];
    let (_, r_oa) = run(Some(&boxes), Some(&fg));
    let oa_fg = r_oa.view_foreground.expect("measured with masks");
    // Crops inside the box see foreground only, up to bilinear blending at the box's border.
    assert!(
        oa_fg > 0.9 && oa_fg > plain_fg + 0.4,
        "crops inside the box: {oa_fg}, plain crops: {plain_fg}"
    );
    // Serialised reports keep the value; old reports without it still read.
    let back: contracam::train::TrainReport =
        serde_json::from_str(&serde_json::to_string(&r_oa).unwrap()).unwrap();
    assert_eq!(back.view_foreground, Some(oa_fg));
    let mut old = serde_json::to_value(&r_plain).unwrap();
    old.as_object_mut().unwrap().remove("view_foreground");
    let old: contracam::train::TrainReport = serde_json::from_value(old).unwrap();
    assert_eq!(old.view_foreground, None);
}
