//! View-1 mixing in the training loop (`train.mix`): BG-Mixup, Mixup and CutMix.
//!
//! - The whole official step of each variant (`mixcut/{moco,byol}_{mixup,cutmix,bgmix}` in
//!   `$CONTRACAM_REFERENCE/training/mixcut.safetensors`): the mix of view 1 with the recorded draws,
//!   then the loop's own step (EMA, forwards, mixed loss, backward), from the recorded initial weights,
//!   views and queue; loss, q/k or p/y, MoCo logits and gradients are compared with the reference.
//! - With mixing off (the default) the loop trains exactly what the colour-then-step composition did
//!   before mixing existed, and the serialised config has no `mix` key.
//! - Mixing is really in `fit`: it changes the trained weights, and BG-Mixup without masks is refused.
//!
//! Tolerances are the reference README's (§8), which hold against a 1-thread rerun and a float64 rerun
//! of the official code with ~5× margin.
mod common;
mod training_vectors;

use std::collections::VecDeque;

use contracam::model::{Arch, ContrastiveModel, Method, ModelConfig, ResNetConfig, Stem};
use contracam::train::augment::background_mixup::MixupDraws;
use contracam::train::augment::mixup_cutmix::MixCutDraws;
use contracam::train::augment::{color_blur_normalize, AugmentConfig};
use contracam::train::config::{MixConfig, MixKind};
use contracam::train::objective::MixWeighting;
use contracam::train::{
    train, BatchSource, InMemorySource, Shard, SingleDevice, TrainConfig, TrainData, Trainer,
};
use contracam::util::progress::Progress;
use contracam::util::rng::rng_for;
use tch::{Device, Kind, Tensor};
use training_vectors::*;

/// A trainer of `method` with the official hparams of the manifest, `mix`, and the recorded initial
/// weights (dgen / constants; the target an exact copy).
fn official_trainer(method: &str, mix: MixConfig, batch: usize) -> Trainer<SingleDevice> {
    let m = manifest();
    let hp = &m[format!("{method}_hparams")];
    let num = |k: &str| {
        hp[k]
            .as_f64()
            .unwrap_or_else(|| panic!("manifest {method}_hparams.{k}"))
    };
    let arch = match hp["arch"].as_str() {
        Some("resnet18") => Arch::Resnet18,
        Some("resnet50") => Arch::Resnet50,
        other => panic!("manifest {method}_hparams.arch {other:?}"),
    };
    assert_eq!(num("image_size"), 224.0, "only the 224 px stem is ported");
    let is_byol = method == "byol";
    let model = ModelConfig {
        encoder: ResNetConfig {
            arch,
            width: 1.0,
            stem: Stem::Imagenet,
            zero_init_residual: true,
        },
        method: if is_byol { Method::Byol } else { Method::Moco },
        proj_hidden: is_byol.then(|| num("hidden_dim") as i64),
        proj_dim: Some(num("proj_dim") as i64),
        pred_hidden: is_byol.then(|| num("hidden_dim") as i64),
        projector_form: Default::default(),
    };
    let mut cfg = TrainConfig {
        epochs: num("max_epochs") as usize,
        batch_size: batch,
        base_lr: num("base_lr") * num("global_batch_size") / batch as f64,
        final_lr: num("final_lr"),
        ema: Some(num("encoder_momentum")),
        mix,
        ..TrainConfig::default()
    };
    if !is_byol {
        cfg.queue_size = m["moco_hparams"]["num_negatives"].as_u64().unwrap() as usize;
        cfg.temperature = num("temperature");
    }
    let seed = m["config"]["seed"].as_u64().expect("manifest config.seed");
    let mut t = Trainer::new(&model, &cfg, seed, SingleDevice::new(Device::Cpu)).expect("trainer");
    let vars = t.online.vs.variables();
    tch::no_grad(|| {
        for e in m[format!("{method}_init_spec")].as_array().unwrap() {
            let name = e[0].as_str().unwrap();
            let bound = e[3].as_f64().unwrap() as f32;
            let mut var = vars[name].shallow_clone();
            let value = match e[1].as_str().unwrap() {
                "bn_weight_one" => var.ones_like(),
                "bn_weight_zero" | "bn_bias_zero" => var.zeros_like(),
                _ => Tensor::from_slice(&dgen(seed, name, var.numel(), bound))
                    .view(var.size().as_slice()),
            };
            var.copy_(&value);
        }
    });
    t.target.vs.copy(&t.online.vs).expect("target copy");
    t
}

/// Replays the recorded draws of one step: the shared permutation, Beta draws, box centre, BG-Mixup
/// coins and queue choices, each checked to be used exactly as recorded.
#[derive(Default)]
struct Recorded {
    perm: Option<Vec<usize>>,
    lam_raw: Option<Vec<f32>>,
    centre: Option<(i64, i64)>,
    coins: VecDeque<f64>,
    choices: VecDeque<usize>,
}

impl MixupDraws for Recorded {
    fn permutation(&mut self, n: usize) -> Vec<usize> {
        MixCutDraws::permutation(self, n)
    }
    fn coin(&mut self) -> f64 {
        self.coins.pop_front().expect("more coins than recorded")
    }
    fn choice(&mut self, len: usize) -> usize {
        let c = self
            .choices
            .pop_front()
            .expect("more queue draws than recorded");
        assert!(c < len, "recorded choice {c} outside a queue of {len}");
        c
    }
}

impl MixCutDraws for Recorded {
    fn permutation(&mut self, n: usize) -> Vec<usize> {
        let p = self.perm.take().expect("permutation drawn twice");
        assert_eq!(p.len(), n, "recorded permutation length");
        p
    }
    fn beta(&mut self, _alpha: f64, n: usize) -> Vec<f32> {
        let l = self.lam_raw.take().expect("Beta drawn twice");
        assert_eq!(l.len(), n, "recorded Beta draws");
        l
    }
    fn centre(&mut self, rows: i64, cols: i64) -> (i64, i64) {
        let c = self.centre.take().expect("centre drawn twice");
        assert!(
            c.0 < rows && c.1 < cols,
            "centre {c:?} outside {rows}×{cols}"
        );
        c
    }
}

/// A parameter of the online network by its official name.
fn online(t: &Trainer<SingleDevice>, name: &str) -> Tensor {
    let m: &ContrastiveModel = &t.online;
    m.vs.variables()
        .get(name)
        .unwrap_or_else(|| panic!("no Rust tensor for official '{name}'"))
        .shallow_clone()
}

/// One official `training_step` of `{method}_{variant}` through `Trainer::step_with_draws`.
fn check_mixed_step(method: &str, variant: &str) {
    let v = Vectors::open("mixcut.safetensors");
    let steps = Vectors::open("train_steps.safetensors");
    let name = format!("{method}_{variant}");
    let views = [steps.get("views/step0/img1"), steps.get("views/step0/img2")];
    let batch = views[0].size()[0] as usize;
    let perm: Vec<usize> = v
        .i64s("mixcut/perm")
        .into_iter()
        .map(|i| i as usize)
        .collect();
    let mut draws = Recorded {
        perm: Some(perm),
        ..Default::default()
    };
    let kind = match variant {
        "mixup" => {
            draws.lam_raw = Some(v.f32s("mixcut/mixup_lam_raw"));
            MixKind::Mixup
        }
        "cutmix" => {
            draws.lam_raw = Some(v.f32s("mixcut/cutmix_lam_raw"));
            draws.centre = Some((v.i64s("mixcut/cutmix_cx")[0], v.i64s("mixcut/cutmix_cy")[0]));
            MixKind::Cutmix
        }
        "bgmix" => {
            draws.coins =
                Vec::<f64>::try_from(v.get("mixcut/bgmix_coins_drawn").to_kind(Kind::Double))
                    .unwrap()
                    .into();
            draws.choices = v
                .i64s("mixcut/bgmix_choice_idx")
                .into_iter()
                .map(|i| i as usize)
                .collect();
            MixKind::BgMixup
        }
        other => panic!("variant {other}"),
    };
    // The official defaults of these runs: cam_thres 0.2, aug_prob 0.4 for both methods (reference §6).
    let mix = MixConfig {
        kind,
        bg_mixup_prob: Some(0.4),
        weighting: MixWeighting::Official,
        ..Default::default()
    };
    let mut t = official_trainer(method, mix, batch);
    if method == "moco" {
        let moco = t.objective_mut().as_moco_mut().unwrap();
        moco.queue = steps.get("moco/queue_init").copy();
        moco.ptr = 0;
    }
    let masks = (variant == "bgmix").then(|| v.get("mixcut/bgmix_masks"));
    let loss = t
        .step_with_draws(&views, masks.as_ref(), &mut draws)
        .expect("step");
    assert!(
        draws.perm.is_none()
            && draws.lam_raw.is_none()
            && draws.centre.is_none()
            && draws.coins.is_empty()
            && draws.choices.is_empty(),
        "{name}: not every recorded draw was used"
    );
    let want = manifest()["mixcut_losses"][&name]
        .as_f64()
        .expect("manifest mixcut_losses entry");
    assert_close(
        &format!("{name} loss"),
        &Tensor::from(loss),
        &Tensor::from(want),
        ACT.0,
        ACT.1,
    );
    let mut compared = 0;
    for (out, got) in t.objective_mut().outputs() {
        let key = match *out {
            "logits" => format!("mixcut/{name}/ce0/logits"),
            o => format!("mixcut/{name}/{o}"),
        };
        assert_close(&format!("{name} {out}"), got, &v.get(&key), ACT.0, ACT.1);
        compared += 1;
    }
    assert!(compared >= 3, "{name}: {compared} outputs compared");
    let mut grads = 0;
    for key in v.0.tensors.keys() {
        if let Some(p) = key.strip_prefix(&format!("mixcut/{name}/grad/")) {
            assert_close(
                &format!("{name} grad {p}"),
                &online(&t, p).grad(),
                &v.get(key),
                GRAD.0,
                GRAD.1,
            );
            grads += 1;
        }
        if let Some(p) = key.strip_prefix(&format!("mixcut/{name}/fp/grad/")) {
            assert_fp(
                &format!("{name} grad {p}"),
                &online(&t, p).grad(),
                &v.get(key),
                GRAD.0,
                GRAD.1,
            );
            grads += 1;
        }
    }
    assert!(grads > 0, "{name}: no gradients recorded");
}

#[test]
fn moco_mixup_step_matches_the_official_code() {
    check_mixed_step("moco", "mixup");
}

#[test]
fn moco_cutmix_step_matches_the_official_code() {
    check_mixed_step("moco", "cutmix");
}

#[test]
fn moco_bgmix_step_matches_the_official_code() {
    check_mixed_step("moco", "bgmix");
}

#[test]
fn byol_mixup_step_matches_the_official_code() {
    check_mixed_step("byol", "mixup");
}

#[test]
fn byol_cutmix_step_matches_the_official_code() {
    check_mixed_step("byol", "cutmix");
}

#[test]
fn byol_bgmix_step_matches_the_official_code() {
    check_mixed_step("byol", "bgmix");
}

// The loop with small networks on random images.

fn tiny_model(method: Method) -> ModelConfig {
    ModelConfig {
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
    }
}

fn tiny_config(epochs: usize, kind: MixKind) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 4,
        queue_size: 16,
        augment: AugmentConfig {
            output_size: 16,
            ..Default::default()
        },
        mix: MixConfig {
            kind,
            bg_mixup_prob: (kind == MixKind::BgMixup).then_some(0.9),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn images_and_masks() -> (Tensor, Tensor) {
    let _rng = contracam::util::rng::torch_rng_lock();
    tch::manual_seed(5);
    let images = Tensor::rand([12, 3, 20, 20], (Kind::Float, Device::Cpu));
    let masks = Tensor::zeros([12, 20, 20], (Kind::Float, Device::Cpu));
    let _ = masks.narrow(1, 6, 8).narrow(2, 4, 9).fill_(0.8);
    (images, masks)
}

fn weights(m: &ContrastiveModel) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> =
        m.vs.variables()
            .into_iter()
            .map(|(n, t)| {
                let t = t.contiguous();
                let k = t.numel();
                let mut b = vec![0u8; k * t.kind().elt_size_in_bytes()];
                t.copy_data_u8(&mut b, k);
                (n, b)
            })
            .collect();
    out.sort();
    out
}

/// With mixing off, `fit` trains the same bytes as the composition the loop had before mixing
/// existed: the epoch's colour stream on each view, then `step_on_views` (one epoch, so the lr is
/// epoch 0's in both), even when the source carries masks.
#[test]
fn default_config_trains_the_same_weights_as_the_plain_step() {
    for method in [Method::Moco, Method::Byol] {
        let cfg = tiny_config(1, MixKind::None);
        let (images, masks) = images_and_masks();
        let data = TrainData {
            images: &images,
            boxes: None,
            masks: Some(&masks),
        };
        let (model, report) = train(
            &tiny_model(method),
            &cfg,
            &data,
            3,
            Device::Cpu,
            &Progress::hidden(),
        )
        .unwrap();

        let mut t =
            Trainer::new(&tiny_model(method), &cfg, 3, SingleDevice::new(Device::Cpu)).unwrap();
        let mut src = InMemorySource::new(images, cfg.batch_size, &cfg.augment, 3, Shard::SINGLE)
            .unwrap()
            .with_masks(masks)
            .unwrap();
        src.start_epoch(0).unwrap();
        let mut color = rng_for(3, "train/color/0");
        let mut losses = Vec::new();
        while let Some(b) = src.next_batch().unwrap() {
            let views: Vec<Tensor> = b
                .views
                .iter()
                .map(|v| color_blur_normalize(v, &mut color, &cfg.augment))
                .collect();
            losses.push(t.step_on_views(&views).unwrap());
        }
        let mean = losses.iter().sum::<f64>() / losses.len() as f64;
        assert_eq!(report.epoch_loss, vec![mean], "{method:?}: loss");
        assert!(
            weights(&model) == weights(&t.into_model()),
            "{method:?}: default config trains other weights than the plain step"
        );
    }
}

#[test]
fn mixing_is_off_by_default_and_absent_from_the_serialised_config() {
    let json = serde_json::to_value(TrainConfig::default()).unwrap();
    assert!(json.get("mix").is_none(), "{json}");
    let on = TrainConfig {
        mix: MixConfig {
            kind: MixKind::BgMixup,
            ..Default::default()
        },
        ..Default::default()
    };
    let json = serde_json::to_value(&on).unwrap();
    assert_eq!(json["mix"]["kind"], "bg-mixup");
    let back: TrainConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back, on);
    assert_eq!(on.mix.bg_mixup_prob_for(Method::Moco), 0.4);
    assert_eq!(on.mix.bg_mixup_prob_for(Method::Byol), 0.3);
    let bad = TrainConfig {
        mix: MixConfig {
            bg_mixup_prob: Some(1.5),
            ..on.mix.clone()
        },
        ..Default::default()
    };
    let e = bad.validate(Method::Moco, None).unwrap_err().to_string();
    assert!(e.contains("train.mix.bg_mixup_prob"), "{e}");
}

/// Each kind of mixing changes what `fit` trains (it is in the loop), with finite losses.
#[test]
fn every_mix_kind_changes_the_trained_weights() {
    for method in [Method::Moco, Method::Byol] {
        let (images, masks) = images_and_masks();
        let data = TrainData {
            images: &images,
            boxes: None,
            masks: Some(&masks),
        };
        let run = |kind| {
            let (m, r) = train(
                &tiny_model(method),
                &tiny_config(1, kind),
                &data,
                3,
                Device::Cpu,
                &Progress::hidden(),
            )
            .unwrap();
            assert!(
                r.epoch_loss.iter().all(|l| l.is_finite()),
                "{kind:?}: {r:?}"
            );
            weights(&m)
        };
        let plain = run(MixKind::None);
        for kind in [MixKind::BgMixup, MixKind::Mixup, MixKind::Cutmix] {
            assert!(
                run(kind) != plain,
                "{method:?} {kind:?} trained the unmixed weights"
            );
        }
    }
}

#[test]
fn bg_mixup_without_masks_is_an_error_that_says_what_to_pass() {
    let (images, _) = images_and_masks();
    let data = TrainData {
        images: &images,
        boxes: None,
        masks: None,
    };
    let e = train(
        &tiny_model(Method::Moco),
        &tiny_config(1, MixKind::BgMixup),
        &data,
        3,
        Device::Cpu,
        &Progress::hidden(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("BG-Mixup") && e.contains("--masks"), "{e}");
}
