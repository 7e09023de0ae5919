//! Synthetic scenes, the embedded default: a procedural, seeded dataset that needs no files.
//!
//! K object classes (a shape each; colour and texture shared by pairs of classes), B background textures, 1..k objects per
//! scene with class, box and instance mask. Two knobs create the biases the paper studies:
//! `background_bias` (probability that a scene's background is the one tied to its first object's class)
//! and `context_bias` (probability that each further object is the first one's partner class).
//! Every sample is generated from (seed, split, index) alone, so a split is the same whatever its size.
pub mod export;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::util::rng::rng_for;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynthConfig {
    /// Side of the square scenes, in pixels.
    pub image_size: usize,
    /// Object classes K (at most 10 distinct shapes).
    pub num_classes: usize,
    /// Background textures B.
    pub num_backgrounds: usize,
    pub min_objects: usize,
    pub max_objects: usize,
    /// P(background = the first object's class background); 1/B-equivalent when 0.
    pub background_bias: f64,
    /// P(each further object is the first object's partner class (c + K/2) mod K).
    pub context_bias: f64,
    /// Object side as a fraction of the image side: uniform in [min, max].
    pub object_scale: [f64; 2],
    /// Side of the single-object crops used for linear evaluation.
    pub crop_size: usize,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            image_size: 64,
            num_classes: 6,
            num_backgrounds: 6,
            min_objects: 1,
            max_objects: 2,
            background_bias: 0.8,
            context_bias: 0.5,
            object_scale: [0.3, 0.55],
            crop_size: 48,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("synthetic config: {field} {msg}")]
    Invalid { field: &'static str, msg: String },
}

impl SynthConfig {
    pub fn validate(&self) -> Result<(), SynthError> {
        let bad = |field, msg: &str| {
            Err(SynthError::Invalid {
                field,
                msg: msg.into(),
            })
        };
        if !(16..=1024).contains(&self.image_size) {
            return bad("image_size", "must be in 16..=1024");
        }
        if !(2..=SHAPES).contains(&self.num_classes) {
            return bad("num_classes", &format!("must be in 2..={SHAPES}"));
        }
        if self.num_backgrounds == 0 {
            return bad("num_backgrounds", "must be at least 1");
        }
        if self.min_objects == 0 || self.max_objects < self.min_objects || self.max_objects > 6 {
            return bad(
                "min_objects/max_objects",
                "need 1 ≤ min_objects ≤ max_objects ≤ 6",
            );
        }
        for (f, v) in [
            ("background_bias", self.background_bias),
            ("context_bias", self.context_bias),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(f, "must be a probability in [0, 1]");
            }
        }
        let [lo, hi] = self.object_scale;
        if !(0.05 <= lo && lo <= hi && hi <= 1.0) {
            return bad("object_scale", "needs 0.05 ≤ min ≤ max ≤ 1");
        }
        if !(8..=1024).contains(&self.crop_size) {
            return bad("crop_size", "must be in 8..=1024");
        }
        // A crop is an object's region cut from the image: a larger side would only upsample it.
        if self.crop_size > self.image_size {
            return bad(
                "crop_size",
                &format!(
                    "must be at most image_size = {} (crops are cut from the images)",
                    self.image_size
                ),
            );
        }
        Ok(())
    }

    /// Bytes held per generated item of side `side`: RGB image, instance mask and bookkeeping.
    fn item_bytes(side: usize) -> u64 {
        (side as u64).saturating_mul(side as u64).saturating_mul(4) + 128
    }

    /// Memory `scenes(.., n)` followed by [`SynthSet::images_tensor`] needs at its peak: the set, the
    /// concatenated bytes, the uint8 tensor and two float copies (conversion and scaling) per scene.
    pub fn train_tensor_bytes(&self, n: usize) -> u64 {
        let s2 = (self.image_size as u64).saturating_mul(self.image_size as u64);
        (n as u64).saturating_mul(Self::item_bytes(self.image_size) + s2.saturating_mul(30))
    }

    /// Memory held by `n` items of side `side` (a [`SynthSet`]).
    pub fn set_bytes(&self, side: usize, n: usize) -> u64 {
        (n as u64).saturating_mul(Self::item_bytes(side))
    }

    /// The background tied to class `c`.
    pub fn class_background(&self, c: usize) -> usize {
        c % self.num_backgrounds
    }

    /// The class that co-occurs with `c` under the context bias.
    pub fn partner(&self, c: usize) -> usize {
        (c + self.num_classes / 2) % self.num_classes
    }
}

/// One object of a scene. `bbox` is [x1, y1, x2, y2) in pixels of its visible region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthObject {
    pub class: usize,
    pub bbox: [u32; 4],
    pub area: u32,
}

/// A batch of generated images with their ground truth, stored row-major (H, W, 3) u8 per image.
#[derive(Debug, Clone)]
pub struct SynthSet {
    pub size: usize,
    pub images: Vec<Vec<u8>>,
    /// Per pixel: 0 background, i+1 the i-th object of `objects` (occlusion applied).
    pub instance_masks: Vec<Vec<u8>>,
    pub objects: Vec<Vec<SynthObject>>,
    /// Background texture index per image (None where there is no background, e.g. only_fg).
    pub backgrounds: Vec<Option<usize>>,
    /// Image-level label (the first object's class; for crops and the background challenge, the object's).
    pub labels: Vec<usize>,
}

/// The Background Challenge variants (Xiao et al. 2020) mirrored on synthetic scenes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BgVariant {
    /// Object on a background drawn as in training (with the background bias).
    Original,
    /// Object on black.
    OnlyFg,
    /// The background with the object region blacked out (only_bg_b).
    OnlyBg,
    /// Object on a background drawn for its own class (another image of the same class).
    MixedSame,
    /// Object on a background drawn for a random class.
    MixedRand,
    /// Object on a background drawn for the next class (c + 1) mod K.
    MixedNext,
}

impl BgVariant {
    pub const ALL: [BgVariant; 6] = [
        BgVariant::Original,
        BgVariant::OnlyFg,
        BgVariant::OnlyBg,
        BgVariant::MixedSame,
        BgVariant::MixedRand,
        BgVariant::MixedNext,
    ];
    pub fn name(self) -> &'static str {
        match self {
            BgVariant::Original => "original",
            BgVariant::OnlyFg => "only_fg",
            BgVariant::OnlyBg => "only_bg",
            BgVariant::MixedSame => "mixed_same",
            BgVariant::MixedRand => "mixed_rand",
            BgVariant::MixedNext => "mixed_next",
        }
    }
}

const SHAPES: usize = 10;

/// Multi-object scenes of `split` (any name; "train" and "test" by convention), indices `0..n`.
pub fn scenes(cfg: &SynthConfig, seed: u64, split: &str, n: usize) -> SynthSet {
    generate(cfg.image_size, n, |i| scene(cfg, seed, split, i))
}

/// Single-object crops (COCO-Crop style): each object of a scene cropped with a 20% margin and resized
/// to `crop_size`; label = object class. Returns exactly `n` crops.
pub fn crops(cfg: &SynthConfig, seed: u64, split: &str, n: usize) -> SynthSet {
    generate(cfg.crop_size, n, |i| crop(cfg, seed, split, i))
}

/// Background-Challenge-style single-object images for `variant`; index i shows the same object (class,
/// shape, pose) in every variant.
pub fn bg_challenge(cfg: &SynthConfig, seed: u64, variant: BgVariant, n: usize) -> SynthSet {
    generate(cfg.image_size, n, |i| {
        bg_challenge_item(cfg, seed, variant, i)
    })
}

/// One generated image: RGB (H, W, 3) u8 row-major, its instance mask (0 background, k+1 the k-th object),
/// the visible objects and the background texture.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthItem {
    pub image: Vec<u8>,
    pub instance_mask: Vec<u8>,
    pub objects: Vec<SynthObject>,
    pub background: Option<usize>,
}

impl SynthItem {
    /// Image-level label: the first object's class.
    pub fn label(&self) -> usize {
        self.objects.first().map(|o| o.class).unwrap_or(0)
    }
}

/// Scene `i` of `split`, the same whatever the split's size: [`scenes`] is this for `0..n`.
pub fn scene(cfg: &SynthConfig, seed: u64, split: &str, i: usize) -> SynthItem {
    let mut rng = rng_for(seed, &format!("synth/scene/{split}/{i}"));
    render_scene(cfg, &mut rng).into()
}

/// Crop `i` of `split`: [`crops`] is this for `0..n`.
pub fn crop(cfg: &SynthConfig, seed: u64, split: &str, i: usize) -> SynthItem {
    let mut rng = rng_for(seed, &format!("synth/crop/{split}/{i}"));
    let (img, inst, objs, bg) = render_scene(cfg, &mut rng);
    let k = rng.random_range(0..objs.len());
    crop_object(cfg, &img, &inst, &objs, k, bg).into()
}

/// Item `i` of a Background-Challenge variant: [`bg_challenge`] is this for `0..n`.
pub fn bg_challenge_item(cfg: &SynthConfig, seed: u64, variant: BgVariant, i: usize) -> SynthItem {
    let s = cfg.image_size;
    let mut rng = rng_for(seed, &format!("synth/bgc/{i}"));
    let class = rng.random_range(0..cfg.num_classes);
    let obj = sample_object(cfg, &mut rng, class, true);
    let own_bg = draw_background_for(cfg, &mut rng, class);
    let rand_class = rng.random_range(0..cfg.num_classes);
    let rand_bg = draw_background_for(cfg, &mut rng, rand_class);
    let next_bg = draw_background_for(cfg, &mut rng, (class + 1) % cfg.num_classes);
    let same_bg = draw_background_for(cfg, &mut rng, class);
    let bg_seed: u64 = rng.random();
    let (bg, fg_on) = match variant {
        BgVariant::Original => (Some(own_bg), true),
        BgVariant::OnlyFg => (None, true),
        BgVariant::OnlyBg => (Some(own_bg), false),
        BgVariant::MixedSame => (Some(same_bg), true),
        BgVariant::MixedRand => (Some(rand_bg), true),
        BgVariant::MixedNext => (Some(next_bg), true),
    };
    // Mixed variants take the background from a different image: a different texture instance.
    let tex_seed = if matches!(variant, BgVariant::Original | BgVariant::OnlyBg) {
        bg_seed
    } else {
        bg_seed ^ 0x9e37_79b9_7f4a_7c15
    };
    let mut img = vec![0f32; s * s * 3];
    if let Some(b) = bg {
        paint_background(cfg, b, tex_seed, &mut img);
    }
    let mut inst = vec![0u8; s * s];
    paint_object(cfg, &obj, &mut img, &mut inst, 1);
    if !fg_on {
        for (p, m) in inst.iter().enumerate() {
            if *m != 0 {
                img[3 * p..3 * p + 3].fill(0.0);
            }
        }
    }
    let objects = visible_objects(&inst, s, &[obj.class]);
    (to_u8(&img), inst, objects, bg).into()
}

impl From<Item> for SynthItem {
    fn from((image, instance_mask, objects, background): Item) -> Self {
        SynthItem {
            image,
            instance_mask,
            objects,
            background,
        }
    }
}

fn generate(size: usize, n: usize, item: impl Fn(usize) -> SynthItem + Sync + Send) -> SynthSet {
    let items: Vec<SynthItem> = (0..n).into_par_iter().map(item).collect();
    collect(size, items)
}

impl SynthSet {
    pub fn len(&self) -> usize {
        self.images.len()
    }
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Images as float (N, 3, H, W) in [0, 1].
    pub fn images_tensor(&self) -> Tensor {
        let s = self.size as i64;
        let flat: Vec<u8> = self.images.concat();
        Tensor::from_slice(&flat)
            .reshape([self.len() as i64, s, s, 3])
            .permute([0, 3, 1, 2])
            .to_kind(Kind::Float)
            / 255.0
    }

    /// Foreground (union of objects) masks as float (N, 1, H, W) in {0, 1}.
    pub fn foreground_tensor(&self) -> Tensor {
        let s = self.size as i64;
        let flat: Vec<u8> = self
            .instance_masks
            .iter()
            .flat_map(|m| m.iter().map(|&v| (v != 0) as u8))
            .collect();
        Tensor::from_slice(&flat)
            .reshape([self.len() as i64, 1, s, s])
            .to_kind(Kind::Float)
    }

    pub fn labels_tensor(&self) -> Tensor {
        Tensor::from_slice(&self.labels.iter().map(|&l| l as i64).collect::<Vec<_>>())
    }

    /// Normalised [x1, y1, x2, y2] boxes of every object, per image.
    pub fn boxes_normalized(&self) -> Vec<Vec<[f64; 4]>> {
        let s = self.size as f64;
        self.objects
            .iter()
            .map(|objs| objs.iter().map(|o| o.bbox.map(|v| v as f64 / s)).collect())
            .collect()
    }
}

type Item = (Vec<u8>, Vec<u8>, Vec<SynthObject>, Option<usize>);

fn collect(size: usize, items: Vec<SynthItem>) -> SynthSet {
    let mut set = SynthSet {
        size,
        images: vec![],
        instance_masks: vec![],
        objects: vec![],
        backgrounds: vec![],
        labels: vec![],
    };
    for it in items {
        set.labels.push(it.label());
        set.images.push(it.image);
        set.instance_masks.push(it.instance_mask);
        set.objects.push(it.objects);
        set.backgrounds.push(it.background);
    }
    set
}

/// A placed object before painting.
#[derive(Debug, Clone)]
struct Placed {
    class: usize,
    cx: f64,
    cy: f64,
    half: f64,
    angle: f64,
    hue_jitter: f64,
    pattern_phase: f64,
}

fn sample_object(cfg: &SynthConfig, rng: &mut ChaCha8Rng, class: usize, centered: bool) -> Placed {
    let s = cfg.image_size as f64;
    let [lo, hi] = cfg.object_scale;
    let (lo, hi) = if centered {
        ((lo + hi) / 2.0, hi * 1.1)
    } else {
        (lo, hi)
    };
    let half = rng.random_range(lo..=hi.min(1.0)) * s / 2.0;
    let margin = if centered { s * 0.3 } else { half * 0.7 };
    let cx = rng.random_range(margin..=(s - margin).max(margin));
    let cy = rng.random_range(margin..=(s - margin).max(margin));
    Placed {
        class,
        cx,
        cy,
        half,
        angle: rng.random_range(-0.35..0.35),
        hue_jitter: rng.random_range(-0.03..0.03),
        pattern_phase: rng.random_range(0.0..std::f64::consts::TAU),
    }
}

fn draw_background_for(cfg: &SynthConfig, rng: &mut ChaCha8Rng, class: usize) -> usize {
    if rng.random_bool(cfg.background_bias) {
        cfg.class_background(class)
    } else {
        rng.random_range(0..cfg.num_backgrounds)
    }
}

fn render_scene(cfg: &SynthConfig, rng: &mut ChaCha8Rng) -> Item {
    let s = cfg.image_size;
    let n = rng.random_range(cfg.min_objects..=cfg.max_objects);
    let first = rng.random_range(0..cfg.num_classes);
    let mut classes = vec![first];
    for _ in 1..n {
        let c = if rng.random_bool(cfg.context_bias) {
            cfg.partner(first)
        } else {
            rng.random_range(0..cfg.num_classes)
        };
        classes.push(c);
    }
    let bg = draw_background_for(cfg, rng, first);
    let bg_seed: u64 = rng.random();
    let mut img = vec![0f32; s * s * 3];
    paint_background(cfg, bg, bg_seed, &mut img);
    let mut inst = vec![0u8; s * s];
    let mut kept = Vec::new();
    for &c in &classes {
        // Re-place an object that would hide too much of an earlier one or be mostly hidden itself.
        for _attempt in 0..8 {
            let obj = sample_object(cfg, rng, c, false);
            let mut trial_img = img.clone();
            let mut trial = inst.clone();
            let id = kept.len() as u8 + 1;
            paint_object(cfg, &obj, &mut trial_img, &mut trial, id);
            let areas = instance_areas(&trial, kept.len() + 1);
            let before = instance_areas(&inst, kept.len());
            let ok = areas[kept.len()] >= 16
                && before
                    .iter()
                    .zip(&areas)
                    .all(|(b, a)| (*a as f64) >= 0.5 * (*b as f64));
            if ok {
                img = trial_img;
                inst = trial;
                kept.push(c);
                break;
            }
        }
    }
    let objects = visible_objects(&inst, s, &kept);
    (to_u8(&img), inst, objects, Some(bg))
}

fn instance_areas(inst: &[u8], n: usize) -> Vec<u32> {
    let mut a = vec![0u32; n];
    for &v in inst {
        if v != 0 && (v as usize) <= n {
            a[v as usize - 1] += 1;
        }
    }
    a
}

fn visible_objects(inst: &[u8], s: usize, classes: &[usize]) -> Vec<SynthObject> {
    let mut objs: Vec<SynthObject> = classes
        .iter()
        .map(|&class| SynthObject {
            class,
            bbox: [u32::MAX, u32::MAX, 0, 0],
            area: 0,
        })
        .collect();
    for y in 0..s {
        for x in 0..s {
            let v = inst[y * s + x] as usize;
            if v != 0 {
                let o = &mut objs[v - 1];
                o.area += 1;
                o.bbox = [
                    o.bbox[0].min(x as u32),
                    o.bbox[1].min(y as u32),
                    o.bbox[2].max(x as u32 + 1),
                    o.bbox[3].max(y as u32 + 1),
                ];
            }
        }
    }
    objs.retain(|o| o.area > 0);
    objs
}

/// Inside test for shape `k` at normalised coordinates (u, v) ∈ [-1, 1]².
fn inside(k: usize, u: f64, v: f64) -> bool {
    let (au, av) = (u.abs(), v.abs());
    let r = (u * u + v * v).sqrt();
    match k % SHAPES {
        0 => r <= 1.0,                                                               // disc
        1 => au.max(av) <= 0.85,                                                     // square
        2 => (-0.9..=0.9).contains(&v) && au <= 0.5 * (v + 0.9),                     // triangle
        3 => au + av <= 1.0,                                                         // diamond
        4 => (au <= 0.32 && av <= 0.95) || (av <= 0.32 && au <= 0.95),               // cross
        5 => (0.55..=1.0).contains(&r),                                              // ring
        6 => av <= 0.87 && au * 0.87 + av * 0.5 <= 0.87,                             // hexagon
        7 => u * u + (v / 0.5) * (v / 0.5) <= 1.0,                                   // wide ellipse
        8 => (av <= 0.3 && au <= 0.95) || (au <= 0.3 && (-0.95..=0.3).contains(&v)), // T
        _ => r <= 1.0 && v >= -0.2,                                                  // half disc
    }
}

fn hsv(h: f64, s: f64, v: f64) -> [f64; 3] {
    let h = h.rem_euclid(1.0) * 6.0;
    let i = h.floor() as i32;
    let f = h - i as f64;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match i {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

fn paint_object(cfg: &SynthConfig, o: &Placed, img: &mut [f32], inst: &mut [u8], id: u8) {
    let s = cfg.image_size;
    // Classes c and c + ⌈K/2⌉ share colour and texture and differ only in shape, so recognising a class
    // takes more than a colour lookup.
    let groups = cfg.num_classes.div_ceil(2);
    let group = o.class % groups;
    let base = hsv(group as f64 / groups as f64 + o.hue_jitter, 0.85, 0.95);
    let (sin, cos) = o.angle.sin_cos();
    let x0 = (o.cx - o.half * 1.5).floor().max(0.0) as usize;
    let x1 = ((o.cx + o.half * 1.5).ceil() as usize).min(s);
    let y0 = (o.cy - o.half * 1.5).floor().max(0.0) as usize;
    let y1 = ((o.cy + o.half * 1.5).ceil() as usize).min(s);
    for y in y0..y1 {
        for x in x0..x1 {
            let (dx, dy) = (
                (x as f64 + 0.5 - o.cx) / o.half,
                (y as f64 + 0.5 - o.cy) / o.half,
            );
            let (u, v) = (cos * dx + sin * dy, -sin * dx + cos * dy);
            if !inside(o.class, u, v) {
                continue;
            }
            // Class texture: solid, stripes or dots, modulating brightness.
            let t = match group % 3 {
                0 => 1.0,
                1 => 0.8 + 0.2 * (u * 7.0 + o.pattern_phase).sin().signum(),
                _ => 0.8 + 0.2 * ((u * 6.0 + o.pattern_phase).sin() * (v * 6.0).sin()).signum(),
            };
            let p = y * s + x;
            for c in 0..3 {
                img[3 * p + c] = (base[c] * t) as f32;
            }
            inst[p] = id;
        }
    }
}

fn paint_background(cfg: &SynthConfig, b: usize, seed: u64, img: &mut [f32]) {
    let s = cfg.image_size;
    let mut rng = rng_for(seed, "synth/background");
    let hue = (b as f64 + 0.5) / cfg.num_backgrounds as f64;
    let c1 = hsv(hue, 0.45, 0.55);
    let c2 = hsv(hue + 0.08, 0.35, 0.3);
    let freq = rng.random_range(3.0..6.0) * std::f64::consts::TAU / s as f64;
    let phase = rng.random_range(0.0..std::f64::consts::TAU);
    let theta = rng.random_range(0.0..std::f64::consts::PI);
    let (dx, dy) = (theta.cos(), theta.sin());
    for y in 0..s {
        for x in 0..s {
            let (xf, yf) = (x as f64, y as f64);
            let m = match b % 4 {
                0 => 0.5 + 0.5 * ((xf * dx + yf * dy) * freq * 0.3 + phase).sin(), // smooth gradient
                1 => 0.5 + 0.5 * ((xf * dx + yf * dy) * freq + phase).sin().signum(), // stripes
                2 => 0.5 + 0.5 * ((xf * freq + phase).sin() * (yf * freq).sin()).signum(), // checker
                _ => {
                    0.5 + 0.25 * ((xf * freq * 0.7 + phase).sin() + (yf * freq * 1.3 - phase).cos())
                } // blobs
            };
            let noise = rng.random_range(-0.04..0.04);
            let p = y * s + x;
            for c in 0..3 {
                img[3 * p + c] = (c1[c] * m + c2[c] * (1.0 - m) + noise) as f32;
            }
        }
    }
}

fn to_u8(img: &[f32]) -> Vec<u8> {
    img.iter()
        .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect()
}

fn crop_object(
    cfg: &SynthConfig,
    img: &[u8],
    inst: &[u8],
    objs: &[SynthObject],
    k: usize,
    bg: Option<usize>,
) -> Item {
    let s = cfg.image_size;
    let o = &objs[k];
    let [x1, y1, x2, y2] = o.bbox.map(|v| v as f64);
    let (mw, mh) = ((x2 - x1) * 0.2, (y2 - y1) * 0.2);
    let (cx1, cy1) = ((x1 - mw).max(0.0), (y1 - mh).max(0.0));
    let (cx2, cy2) = ((x2 + mw).min(s as f64), (y2 + mh).min(s as f64));
    let out = cfg.crop_size;
    let mut crop = vec![0u8; out * out * 3];
    let mut cinst = vec![0u8; out * out];
    // Bilinear sampling of the expanded box (aspect ratio not kept), nearest for the mask.
    for y in 0..out {
        for x in 0..out {
            let sx = (cx1 + (x as f64 + 0.5) * (cx2 - cx1) / out as f64 - 0.5)
                .clamp(0.0, s as f64 - 1.0);
            let sy = (cy1 + (y as f64 + 0.5) * (cy2 - cy1) / out as f64 - 0.5)
                .clamp(0.0, s as f64 - 1.0);
            let (ix, iy) = (sx.floor() as usize, sy.floor() as usize);
            let (jx, jy) = ((ix + 1).min(s - 1), (iy + 1).min(s - 1));
            let (fx, fy) = (sx - ix as f64, sy - iy as f64);
            for c in 0..3 {
                let g = |xx: usize, yy: usize| img[3 * (yy * s + xx) + c] as f64;
                let v = g(ix, iy) * (1.0 - fx) * (1.0 - fy)
                    + g(jx, iy) * fx * (1.0 - fy)
                    + g(ix, jy) * (1.0 - fx) * fy
                    + g(jx, jy) * fx * fy;
                crop[3 * (y * out + x) + c] = v.round() as u8;
            }
            let m = inst[sy.round() as usize * s + sx.round() as usize];
            cinst[y * out + x] = (m as usize == k + 1) as u8;
        }
    }
    let objects = visible_objects(&cinst, out, &[o.class]);
    let objects = if objects.is_empty() {
        vec![SynthObject {
            class: o.class,
            bbox: [0, 0, out as u32, out as u32],
            area: 0,
        }]
    } else {
        objects
    };
    (crop, cinst, objects, bg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_and_prefix_stable() {
        let cfg = SynthConfig::default();
        let a = scenes(&cfg, 7, "train", 12);
        let b = scenes(&cfg, 7, "train", 20);
        assert_eq!(a.images, b.images[..12]);
        assert_eq!(a.objects, b.objects[..12]);
        let c = scenes(&cfg, 8, "train", 12);
        assert_ne!(a.images, c.images);
    }

    #[test]
    fn boxes_and_masks_agree() {
        let cfg = SynthConfig::default();
        let set = scenes(&cfg, 1, "test", 30);
        for (inst, objs) in set.instance_masks.iter().zip(&set.objects) {
            assert!(!objs.is_empty() && objs.len() <= cfg.max_objects);
            for (i, o) in objs.iter().enumerate() {
                let area = inst.iter().filter(|&&v| v as usize == i + 1).count() as u32;
                assert_eq!(area, o.area);
                assert!(o.bbox[0] < o.bbox[2] && o.bbox[1] < o.bbox[3]);
            }
        }
    }

    #[test]
    fn background_bias_controls_correlation() {
        let mut cfg = SynthConfig {
            background_bias: 1.0,
            ..Default::default()
        };
        let set = scenes(&cfg, 3, "train", 200);
        let tied = |set: &SynthSet, cfg: &SynthConfig| {
            set.backgrounds
                .iter()
                .zip(&set.labels)
                .filter(|(b, &l)| **b == Some(cfg.class_background(l)))
                .count()
        };
        assert_eq!(tied(&set, &cfg), 200);
        cfg.background_bias = 0.0;
        let set = scenes(&cfg, 3, "train", 600);
        let frac = tied(&set, &cfg) as f64 / 600.0;
        assert!((frac - 1.0 / 6.0).abs() < 0.06, "unbiased tie rate {frac}");
    }

    #[test]
    fn bg_challenge_variants_share_the_object() {
        let cfg = SynthConfig::default();
        let orig = bg_challenge(&cfg, 5, BgVariant::Original, 10);
        let fg = bg_challenge(&cfg, 5, BgVariant::OnlyFg, 10);
        let bg = bg_challenge(&cfg, 5, BgVariant::OnlyBg, 10);
        assert_eq!(orig.labels, fg.labels);
        assert_eq!(orig.instance_masks, fg.instance_masks);
        for i in 0..10 {
            let m = &orig.instance_masks[i];
            for (p, &mv) in m.iter().enumerate() {
                if mv != 0 {
                    assert_eq!(
                        &orig.images[i][3 * p..3 * p + 3],
                        &fg.images[i][3 * p..3 * p + 3]
                    );
                    assert_eq!(&bg.images[i][3 * p..3 * p + 3], &[0, 0, 0]);
                } else {
                    assert_eq!(&fg.images[i][3 * p..3 * p + 3], &[0, 0, 0]);
                }
            }
        }
    }

    #[test]
    fn invalid_config_names_the_field() {
        let cfg = SynthConfig {
            num_classes: 50,
            ..Default::default()
        };
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("num_classes"), "{e}");
    }
}
