//! Writes the synthetic dataset to a folder a person can look at: PNG images and masks, `index.json` with
//! every label and box, `index.html` showing them, and a `preview.png` montage. For the scene splits it
//! also writes what the other commands read, so they chain without glue: `scenes/<split>.safetensors`
//! (the tensors `localize cam` and `localize crf` read) and `index/scenes_<split>.jsonl` (a sample index, so
//! the folder is a dataset folder for `eval miou --dataset`, `eval maxboxacc --dataset` and
//! `localize dataset`). Sample `i` has id `i` there, the row of the tensors.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tch::Tensor;

use crate::data::formats::safetensors::write_tensors;
use crate::data::index::{Sample, SplitIndex};

use super::{self as synth, BgVariant, SynthConfig, SynthObject, SynthSet};

/// How many samples of each split to write.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSizes {
    pub train_scenes: usize,
    pub test_scenes: usize,
    pub crops_per_split: usize,
    pub bg_challenge_per_variant: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Config(#[from] synth::SynthError),
    #[error("cannot write {path}: {msg}")]
    Write { path: PathBuf, msg: String },
    #[error(transparent)]
    Memory(#[from] crate::util::memory::MemoryError),
}

#[derive(Serialize)]
struct Entry<'a> {
    image: String,
    mask: String,
    label: usize,
    background: Option<usize>,
    objects: &'a [SynthObject],
}

#[derive(Serialize)]
struct Index<'a> {
    generator: &'static str,
    version: &'static str,
    seed: u64,
    config: &'a SynthConfig,
    sizes: &'a ExportSizes,
    splits: Vec<(String, Vec<Entry<'a>>)>,
}

pub fn write_dir(
    cfg: &SynthConfig,
    seed: u64,
    sizes: &ExportSizes,
    out: &Path,
) -> Result<(), ExportError> {
    cfg.validate()?;
    // Every split is generated before anything is written: refuse sizes that cannot fit up front rather
    // than growing until the process is killed.
    let needed = cfg
        .set_bytes(
            cfg.image_size,
            sizes
                .train_scenes
                .saturating_add(sizes.test_scenes)
                .saturating_add(
                    sizes
                        .bg_challenge_per_variant
                        .saturating_mul(BgVariant::ALL.len()),
                ),
        )
        .saturating_add(cfg.set_bytes(cfg.crop_size, sizes.crops_per_split.saturating_mul(3)));
    crate::util::memory::ensure_fits_with_hint(
        needed,
        &format!(
            "the synthetic dataset ({} train + {} test scenes, {} crops per split, {} per background variant)",
            sizes.train_scenes, sizes.test_scenes, sizes.crops_per_split, sizes.bg_challenge_per_variant
        ),
        ", lower --train-scenes/--test-scenes/--crops/--bg-challenge",
    )?;
    let mut sets: Vec<(String, SynthSet)> = vec![
        (
            "scenes/train".into(),
            synth::scenes(cfg, seed, "train", sizes.train_scenes),
        ),
        (
            "scenes/test".into(),
            synth::scenes(cfg, seed, "test", sizes.test_scenes),
        ),
    ];
    for split in ["train", "val", "test"] {
        sets.push((
            format!("crops/{split}"),
            synth::crops(cfg, seed, split, sizes.crops_per_split),
        ));
    }
    for v in BgVariant::ALL {
        sets.push((
            format!("bg_challenge/{}", v.name()),
            synth::bg_challenge(cfg, seed, v, sizes.bg_challenge_per_variant),
        ));
    }
    let mut splits = Vec::new();
    for (name, set) in &sets {
        let dir = out.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| werr(&dir, e))?;
        let mut entries = Vec::new();
        for i in 0..set.len() {
            let image = format!("{name}/{i:05}.png");
            let mask = format!("{name}/{i:05}_mask.png");
            save_rgb(&out.join(&image), &set.images[i], set.size)?;
            // Instance ids scaled so a person can see them: 0 background, 255/k per instance.
            let k = set.objects[i].len().max(1) as u32;
            let vis: Vec<u8> = set.instance_masks[i]
                .iter()
                .map(|&v| ((v as u32 * 255) / k) as u8)
                .collect();
            save_gray(&out.join(&mask), &vis, set.size)?;
            entries.push(Entry {
                image,
                mask,
                label: set.labels[i],
                background: set.backgrounds[i],
                objects: &set.objects[i],
            });
        }
        splits.push((name.clone(), entries));
    }
    let index = Index {
        generator: "contracam synthetic scenes",
        version: crate::VERSION,
        seed,
        config: cfg,
        sizes,
        splits,
    };
    for (name, set) in &sets[..2] {
        let split = name.trim_start_matches("scenes/");
        write_tensors_of(&out.join(format!("{name}.safetensors")), set, seed)?;
        write_sample_index(out, name, &format!("scenes_{split}"), set, cfg, seed)?;
    }
    let json = serde_json::to_string_pretty(&index).expect("index serialises");
    write_file(&out.join("index.json"), json.as_bytes())?;
    write_file(&out.join("index.html"), html(&index, cfg).as_bytes())?;
    let preview = &sets[1].1;
    save_preview(&out.join("preview.png"), preview, 16)?;
    Ok(())
}

/// Tensor names of `scenes/<split>.safetensors`.
pub const IMAGES_KEY: &str = "images";
pub const MASKS_KEY: &str = "masks";
pub const LABELS_KEY: &str = "labels";
pub const BOXES_KEY: &str = "boxes";

/// `images` uint8 (N, H, W, 3) RGB, `masks` uint8 (N, H, W) foreground in {0, 1}, `labels` int64 (N,) and
/// `boxes` float32 (M, 5): one row `[image, x1, y1, x2, y2]` (pixels) per object.
fn write_tensors_of(path: &Path, set: &SynthSet, seed: u64) -> Result<(), ExportError> {
    let (n, s) = (set.len() as i64, set.size as i64);
    let images = Tensor::from_slice(&set.images.concat()).reshape([n, s, s, 3]);
    let fg: Vec<u8> = set
        .instance_masks
        .iter()
        .flat_map(|m| m.iter().map(|&v| (v != 0) as u8))
        .collect();
    let masks = Tensor::from_slice(&fg).reshape([n, s, s]);
    let rows: Vec<f32> = set
        .objects
        .iter()
        .enumerate()
        .flat_map(|(i, objs)| {
            objs.iter().flat_map(move |o| {
                std::iter::once(i as f32).chain(o.bbox.iter().map(|&v| v as f32))
            })
        })
        .collect();
    let boxes = Tensor::from_slice(&rows).reshape([-1, 5]);
    let meta = BTreeMap::from([
        (
            "contracam.generator".to_string(),
            "contracam data synth".to_string(),
        ),
        ("contracam.version".to_string(), crate::VERSION.to_string()),
        ("contracam.seed".to_string(), seed.to_string()),
        (
            "contracam.boxes".to_string(),
            "one row per object: [image, x1, y1, x2, y2] in pixels".to_string(),
        ),
    ]);
    let tensors = [
        (IMAGES_KEY.to_string(), images),
        (MASKS_KEY.to_string(), masks),
        (LABELS_KEY.to_string(), set.labels_tensor()),
        (BOXES_KEY.to_string(), boxes),
    ];
    write_tensors(path, &tensors, &meta).map_err(|e| werr(path, e))
}

/// `index/<split>.jsonl` over the PNGs of `name`: mask rule `binary` (the instance masks, 0 = background),
/// every object's box, the image-level label. Ids are the file stems read as numbers, the tensor rows.
fn write_sample_index(
    out: &Path,
    name: &str,
    split: &str,
    set: &SynthSet,
    cfg: &SynthConfig,
    seed: u64,
) -> Result<(), ExportError> {
    let size = set.size as u32;
    let samples = (0..set.len())
        .map(|i| Sample {
            path: format!("{name}/{i:05}.png"),
            labels: vec![set.labels[i] as i64],
            boxes: set.objects[i]
                .iter()
                .map(|o| o.bbox.map(f64::from))
                .collect(),
            mask: Some(format!("{name}/{i:05}_mask.png")),
            width: size,
            height: size,
            ..Default::default()
        })
        .collect();
    let classes = (0..cfg.num_classes).map(|c| c.to_string()).collect();
    let dir = out.join("index");
    SplitIndex::new("synth", split, classes, "class", samples)
        .with_mask_rule("binary")
        .with_provenance(format!("contracam data synth, seed {seed}"))
        .write(&dir)
        .map_err(|e| werr(&dir, e))?;
    Ok(())
}

fn html(index: &Index, cfg: &SynthConfig) -> String {
    let mut h = String::from("<!doctype html><meta charset=utf-8><title>contracam synthetic scenes</title>\n<style>body{font-family:sans-serif}figure{display:inline-block;margin:4px;position:relative}img{width:128px;image-rendering:pixelated}.b{position:absolute;border:1px solid #fff;outline:1px solid #000}figcaption{font-size:11px}</style>\n");
    h.push_str(&format!(
        "<h1>contracam synthetic scenes</h1><p>seed {} · config <code>{}</code></p>\n",
        index.seed,
        serde_json::to_string(cfg).unwrap_or_default()
    ));
    for (name, entries) in &index.splits {
        h.push_str(&format!("<h2>{name} ({} images)</h2>\n", entries.len()));
        for e in entries.iter().take(48) {
            h.push_str(&format!(
                "<figure><img src=\"{}\" title=\"mask: {}\">",
                e.image, e.mask
            ));
            let size = if name.starts_with("crops") {
                cfg.crop_size
            } else {
                cfg.image_size
            } as f64;
            for o in e.objects {
                let [x1, y1, x2, y2] = o.bbox.map(|v| v as f64 * 128.0 / size);
                h.push_str(&format!(
                    "<div class=b style=\"left:{x1}px;top:{y1}px;width:{}px;height:{}px\"></div>",
                    x2 - x1,
                    y2 - y1
                ));
            }
            let classes: Vec<String> = e.objects.iter().map(|o| o.class.to_string()).collect();
            h.push_str(&format!(
                "<figcaption>label {} · bg {} · objects [{}]</figcaption></figure>\n",
                e.label,
                e.background
                    .map_or_else(|| "none".to_string(), |b| b.to_string()),
                classes.join(",")
            ));
        }
    }
    h
}

fn werr(path: &Path, e: impl std::fmt::Display) -> ExportError {
    ExportError::Write {
        path: path.into(),
        msg: e.to_string(),
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    std::fs::write(path, bytes).map_err(|e| werr(path, e))
}

fn save_rgb(path: &Path, data: &[u8], s: usize) -> Result<(), ExportError> {
    image::save_buffer(
        path,
        data,
        s as u32,
        s as u32,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| werr(path, e))
}

fn save_gray(path: &Path, data: &[u8], s: usize) -> Result<(), ExportError> {
    image::save_buffer(path, data, s as u32, s as u32, image::ExtendedColorType::L8)
        .map_err(|e| werr(path, e))
}

/// A 4-wide montage of the first `n` images with their foreground masks below each row.
fn save_preview(path: &Path, set: &SynthSet, n: usize) -> Result<(), ExportError> {
    let n = n.min(set.len());
    let s = set.size;
    let cols = 4usize;
    let rows = n.div_ceil(cols);
    let (w, h) = (cols * s, rows * 2 * s);
    let mut buf = vec![0u8; w * h * 3];
    for i in 0..n {
        let (r, c) = (i / cols, i % cols);
        for y in 0..s {
            for x in 0..s {
                let src = 3 * (y * s + x);
                let dst = 3 * ((2 * r * s + y) * w + c * s + x);
                buf[dst..dst + 3].copy_from_slice(&set.images[i][src..src + 3]);
                let m = if set.instance_masks[i][y * s + x] != 0 {
                    255
                } else {
                    0
                };
                let dst = 3 * (((2 * r + 1) * s + y) * w + c * s + x);
                buf[dst..dst + 3].fill(m);
            }
        }
    }
    image::save_buffer(
        path,
        &buf,
        w as u32,
        h as u32,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| werr(path, e))
}
