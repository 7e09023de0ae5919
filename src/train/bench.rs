//! Training speed side by side with PyTorch (`contracam train bench`): the MoCo v2 step (colour
//! augmentations on the device, momentum update, loss, backward, SGD) here and in
//! `scripts/bench_train_pytorch.py` (the same model, augmentations, batch, dtype and threads in plain
//! PyTorch), for the smoke configuration and ResNet-18 at 224 px, with pre-made views (loader excluded)
//! and with a loader decoding a generated JPEG fixture (loader included); in float32 by default, or with
//! both sides in bf16 autocast and/or the channels_last layout (`BenchOptions::precision`, `channels_last`).
//!
//! The machine may be shared, so the two sides alternate round by round (each sees the same load) and
//! both wall time and CPU time (getrusage of the whole process: libtorch's threads and the loader's
//! workers; for Python, its reaped DataLoader workers too) are reported. Nothing here is a test: timings
//! are printed, never asserted.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::augment::AugmentConfig;
use super::config::TrainConfig;
use super::error::TrainError;
use super::fit::Trainer;
use super::precision::Precision;
use super::source::{Batch, BatchSource, IndexBatchSource, IndexSourceOptions};
use super::strategy::{Shard, SingleDevice};
use crate::data::index::{Sample, SplitIndex};
use crate::data::loader::IndexSource;
use crate::model::{Arch, Method, ModelConfig, ResNetConfig, Stem};

/// One training configuration (MoCo v2, ResNet-18).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Case {
    pub name: &'static str,
    pub width: f64,
    pub stem: Stem,
    pub size: i64,
    pub batch: usize,
    pub queue: usize,
}

/// `suites/smoke.toml`'s training: width 0.25, small stem, 32 px, batch 128, queue 2048.
pub const SMOKE: Case = Case {
    name: "smoke (R18 x0.25, 32 px, batch 128)",
    width: 0.25,
    stem: Stem::Small,
    size: 32,
    batch: 128,
    queue: 2048,
};

/// The paper's network at its resolution: ResNet-18, 224 px, batch 32, the official queue of 65 536.
pub const R18_224: Case = Case {
    name: "ResNet-18, 224 px, batch 32",
    width: 1.0,
    stem: Stem::Imagenet,
    size: 224,
    batch: 32,
    queue: 65536,
};

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Python with torch (the project's `.venv`); none: our side only.
    pub python: Option<PathBuf>,
    pub script: PathBuf,
    /// Work folder (the JPEG fixture is generated here once).
    pub dir: PathBuf,
    pub cases: Vec<Case>,
    pub rounds: usize,
    /// Timed steps per measurement, after `warmup` untimed ones.
    pub steps: usize,
    pub warmup: usize,
    /// libtorch threads on both sides.
    pub threads: usize,
    /// Loader workers on both sides (threads here, processes in PyTorch's DataLoader).
    pub workers: usize,
    /// JPEGs (500x375) in the loader fixture.
    pub images: usize,
    /// Forward passes and loss in bf16 autocast on both sides (`torch.autocast` in PyTorch), or fp32.
    pub precision: Precision,
    /// Models and input views in the channels_last memory format on both sides.
    pub channels_last: bool,
}

/// One timed measurement.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Measure {
    pub images: usize,
    pub wall_s: f64,
    pub cpu_s: f64,
}

impl Measure {
    pub fn img_s(&self) -> f64 {
        self.images as f64 / self.wall_s
    }
    pub fn img_per_cpu_s(&self) -> f64 {
        self.images as f64 / self.cpu_s
    }
}

/// Every round of one case with or without the loader.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub case: Case,
    pub loader: bool,
    pub precision: Precision,
    pub channels_last: bool,
    pub ours: Vec<Measure>,
    pub pytorch: Vec<Measure>,
    /// Why the PyTorch side has no numbers, if it has none.
    pub pytorch_error: Option<String>,
}

/// Median of `v` (NaN when empty); shared with `localize::bench`.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

impl Row {
    /// (median img/s by wall, median img per CPU-second) of ours and PyTorch's.
    pub fn medians(&self) -> [f64; 4] {
        let m = |v: &[Measure], f: fn(&Measure) -> f64| median(v.iter().map(f).collect());
        [
            m(&self.ours, Measure::img_s),
            m(&self.ours, Measure::img_per_cpu_s),
            m(&self.pytorch, Measure::img_s),
            m(&self.pytorch, Measure::img_per_cpu_s),
        ]
    }
}

/// CPU time (user + system) of this process, every thread, in seconds.
pub fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return f64::NAN;
    }
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    s(ru.ru_utime) + s(ru.ru_stime)
}

fn model_config(c: &Case) -> ModelConfig {
    ModelConfig {
        encoder: ResNetConfig {
            arch: Arch::Resnet18,
            width: c.width,
            stem: c.stem,
            zero_init_residual: true,
        },
        method: Method::Moco,
        proj_hidden: None,
        proj_dim: None,
        pred_hidden: None,
        projector_form: Default::default(),
    }
}

fn train_config(c: &Case, o: &BenchOptions) -> TrainConfig {
    TrainConfig {
        precision: o.precision,
        channels_last: o.channels_last,
        epochs: 1000,
        batch_size: c.batch,
        queue_size: c.queue,
        augment: AugmentConfig {
            output_size: c.size,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Our MoCo step on `case`: pre-made uint8 views, or batches from the loader over `fixture`.
fn ours(
    c: &Case,
    fixture: Option<&Path>,
    o: &BenchOptions,
    device: Device,
) -> Result<Measure, TrainError> {
    let cfg = train_config(c, o);
    let mut trainer = Trainer::new(&model_config(c), &cfg, 0, SingleDevice::new(device))?;
    let mut source = match fixture {
        Some(data) => {
            let s = Arc::new(IndexSource::open(data, "bench", "train")?);
            let mut b = IndexBatchSource::new(
                s,
                c.batch,
                &cfg.augment,
                0,
                Shard::SINGLE,
                IndexSourceOptions {
                    workers: o.workers,
                    device,
                    ..Default::default()
                },
            )?;
            b.start_epoch(0)?;
            Some(b)
        }
        None => None,
    };
    let fixed: Vec<Tensor> = {
        let _rng = crate::util::rng::torch_rng_lock();
        tch::manual_seed(1);
        (0..2)
            .map(|_| {
                Tensor::randint(
                    256,
                    [c.batch as i64, 3, c.size, c.size],
                    (Kind::Uint8, device),
                )
            })
            .collect()
    };
    let mut epoch = 0;
    let mut next = |source: &mut Option<IndexBatchSource>| -> Result<Batch, TrainError> {
        match source {
            None => Ok(Batch {
                views: fixed
                    .iter()
                    .map(|v| v.to_kind(Kind::Float) / 255.0)
                    .collect(),
                masks: None,
                labels: None,
            }),
            Some(s) => loop {
                if let Some(b) = s.next_batch()? {
                    return Ok(b);
                }
                epoch += 1;
                s.start_epoch(epoch)?;
            },
        }
    };
    for _ in 0..o.warmup {
        let b = next(&mut source)?;
        trainer.step(b)?;
    }
    let (t, cpu) = (Instant::now(), process_cpu_seconds());
    for _ in 0..o.steps {
        let b = next(&mut source)?;
        trainer.step(b)?;
    }
    Ok(Measure {
        images: o.steps * c.batch,
        wall_s: t.elapsed().as_secs_f64(),
        cpu_s: process_cpu_seconds() - cpu,
    })
}

fn pytorch(
    c: &Case,
    files: Option<&Path>,
    o: &BenchOptions,
    python: &Path,
    device: Device,
) -> Result<Measure, String> {
    let mut cmd = Command::new(python);
    cmd.arg(&o.script).args([
        "--width",
        &c.width.to_string(),
        "--size",
        &c.size.to_string(),
        "--batch",
        &c.batch.to_string(),
        "--queue",
        &c.queue.to_string(),
        "--steps",
        &o.steps.to_string(),
        "--warmup",
        &o.warmup.to_string(),
        "--threads",
        &o.threads.to_string(),
        "--workers",
        &o.workers.to_string(),
    ]);
    if c.stem == Stem::Small {
        cmd.arg("--small-stem");
    }
    cmd.args(["--precision", o.precision.name()]);
    if o.channels_last {
        cmd.arg("--channels-last");
    }
    if let Device::Cuda(i) = device {
        cmd.arg("--device").arg(format!("cuda:{i}"));
    }
    if let Some(f) = files {
        cmd.arg("--files").arg(f);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or_default();
        return Err(format!("{} failed: {last}", o.script.display()));
    }
    #[derive(serde::Deserialize)]
    struct Out {
        images: usize,
        wall_s: f64,
        cpu_s: f64,
    }
    let v: Out = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{}: unreadable output: {e}", o.script.display()))?;
    Ok(Measure {
        images: v.images,
        wall_s: v.wall_s,
        cpu_s: v.cpu_s,
    })
}

/// Writes `n` 500x375 JPEGs (smooth colour fields with noise, quality 90) as the split `bench:train`
/// under `dir/data`, and their paths, one a line, to `dir/files.txt`; returns (data dir, file list).
pub fn jpeg_fixture(dir: &Path, n: usize) -> Result<(PathBuf, PathBuf), TrainError> {
    let data = dir.join("data");
    let root = data.join("bench");
    let list = dir.join("files.txt");
    let io = |p: &Path, e: std::io::Error| {
        TrainError::Data(crate::data::error::DataError::Loader(format!(
            "{}: {e}",
            p.display()
        )))
    };
    let index = root.join("index/train.jsonl");
    if index.is_file() && list.is_file() {
        return Ok((data, list));
    }
    let img_dir = root.join("img");
    std::fs::create_dir_all(&img_dir).map_err(|e| io(&img_dir, e))?;
    let (w, h) = (500u32, 375u32);
    let mut rng = ChaCha8Rng::seed_from_u64(2021);
    let mut samples = vec![];
    let mut paths = String::new();
    for i in 0..n {
        let (a, b, c): (f32, f32, f32) = (rng.random(), rng.random(), rng.random());
        let noise: Vec<u8> = (0..w * h * 3).map(|_| rng.random_range(0..24u8)).collect();
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
            let k = ((y * w + x) * 3) as usize;
            image::Rgb([
                (200.0 * (a * u + (1.0 - a) * v)) as u8 + noise[k],
                (200.0 * (b * v + (1.0 - b) * (1.0 - u))) as u8 + noise[k + 1],
                (200.0 * c * (u * v)) as u8 + noise[k + 2],
            ])
        });
        let rel = format!("img/{i:04}.jpg");
        let file = root.join(&rel);
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
            .encode_image(&img)
            .map_err(|e| TrainError::config("bench fixture", rel.clone(), e.to_string()))?;
        std::fs::write(&file, bytes).map_err(|e| io(&file, e))?;
        paths += &format!("{}\n", file.display());
        samples.push(Sample {
            path: rel,
            labels: vec![0],
            width: w,
            height: h,
            ..Default::default()
        });
    }
    SplitIndex::new("bench", "train", vec!["any".into()], "class", samples)
        .write(&root.join("index"))?;
    std::fs::write(&list, paths).map_err(|e| io(&list, e))?;
    Ok((data, list))
}

/// Runs every case without and with the loader, alternating the two sides round by round; `log` gets a
/// line per measurement.
pub fn run(
    o: &BenchOptions,
    device: Device,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<Row>, TrainError> {
    let needed = o.cases.iter().map(|c| c.batch).max().unwrap_or(1);
    let (data, files) = jpeg_fixture(&o.dir, o.images.max(needed))?;
    let mut rows = vec![];
    for c in &o.cases {
        for loader in [false, true] {
            let mut row = Row {
                case: *c,
                loader,
                precision: o.precision,
                channels_last: o.channels_last,
                ours: vec![],
                pytorch: vec![],
                pytorch_error: None,
            };
            for round in 0..o.rounds {
                let python_first = round % 2 == 1;
                for side in 0..2 {
                    let python_now = (side == 0) == python_first;
                    let what = format!(
                        "{} / loader {} / round {}",
                        c.name,
                        if loader { "included" } else { "excluded" },
                        round + 1
                    );
                    if python_now {
                        let (Some(py), None) = (&o.python, &row.pytorch_error) else {
                            continue;
                        };
                        match pytorch(c, loader.then_some(files.as_path()), o, py, device) {
                            Ok(m) => {
                                log(&format!(
                                    "{what}: PyTorch {:.1} img/s, {:.1} img/CPU-s",
                                    m.img_s(),
                                    m.img_per_cpu_s()
                                ));
                                row.pytorch.push(m);
                            }
                            Err(e) => {
                                log(&format!("{what}: PyTorch side skipped: {e}"));
                                row.pytorch_error = Some(e);
                            }
                        }
                    } else {
                        let m = ours(c, loader.then_some(data.as_path()), o, device)?;
                        log(&format!(
                            "{what}: contracam {:.1} img/s, {:.1} img/CPU-s",
                            m.img_s(),
                            m.img_per_cpu_s()
                        ));
                        row.ours.push(m);
                    }
                }
            }
            rows.push(row);
        }
    }
    Ok(rows)
}

/// The rows as a Markdown table: medians over the rounds, and the ratios ours / PyTorch.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| configuration | loader | contracam img/s | PyTorch img/s | ratio (wall) | contracam img/CPU-s | PyTorch img/CPU-s | ratio (CPU) |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let [ow, oc, pw, pc] = r.medians();
        let f = |v: f64| {
            if v.is_finite() {
                format!("{v:.1}")
            } else {
                "n/a".into()
            }
        };
        let ratio = |a: f64, b: f64| {
            if (a / b).is_finite() {
                format!("{:.2}x", a / b)
            } else {
                "n/a".into()
            }
        };
        let mut name = r.case.name.to_string();
        if r.precision != Precision::Fp32 || r.channels_last {
            name = format!(
                "{name}, {}{}",
                r.precision,
                if r.channels_last {
                    ", channels_last"
                } else {
                    ""
                }
            );
        }
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            name,
            if r.loader { "included" } else { "excluded" },
            f(ow),
            f(pw),
            ratio(ow, pw),
            f(oc),
            f(pc),
            ratio(oc, pc)
        );
    }
    s
}
