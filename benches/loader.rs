//! The loader's speed: JPEG decoders side by side, the per-sample transforms, and batches per second of the
//! whole loader against what a ResNet-18 training step at 224 px, batch 32, consumes on this machine.
//!
//!   cargo bench --bench loader                    # 256 fixture JPEGs of 500x375 (COCO/CUB-like sizes)
//!   CONTRACAM_BENCH_IMAGES=512 CONTRACAM_BENCH_STEPS=6 cargo bench --bench loader
//!
//! Everything is measured in one run, alternating the two sides of each ratio, best of 3 (timings on a
//! shared machine are noisy; the load average is printed). The target is loader img/s >= 2x step img/s.
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use contracam::data::index::{Sample, SplitIndex};
use contracam::data::loader::decode::decode_jpeg_rgb;
use contracam::data::loader::{IndexSource, Loader, LoaderConfig, Plan, RandomResizedCrop, Source};
use contracam::model::{ContrastiveModel, Method, ModelConfig};
use rand::Rng;
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor};

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// A photo-like image: smooth gradients, a few shapes, mild noise (JPEG cost depends on content).
fn photo(w: u32, h: u32, seed: u64) -> image::RgbImage {
    let mut rng = contracam::util::rng::rng_for(seed, "bench/photo");
    let (cx, cy, r) = (
        rng.random_range(0..w) as f32,
        rng.random_range(0..h) as f32,
        rng.random_range(40..120) as f32,
    );
    let base: [f32; 3] = [rng.random(), rng.random(), rng.random()];
    image::RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let inside = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt() < r;
        let n = ((x.wrapping_mul(2654435761) ^ y.wrapping_mul(40503)) % 17) as f32;
        let c = |k: usize| {
            let v = if inside {
                1.0 - base[k]
            } else {
                base[k] * (0.5 + 0.5 * fx) + 0.3 * fy * (k as f32)
            };
            (v * 220.0 + n).clamp(0.0, 255.0) as u8
        };
        image::Rgb([c(0), c(1), c(2)])
    })
}

fn jpeg(img: &image::RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(img)
        .expect("encode");
    out
}

fn best_of<F: FnMut() -> f64>(n: usize, mut f: F) -> f64 {
    (0..n).map(|_| f()).fold(f64::INFINITY, f64::min)
}

fn per_image_ms(files: &[Vec<u8>], f: impl Fn(&[u8])) -> f64 {
    best_of(3, || {
        let t = Instant::now();
        for b in files {
            f(b);
        }
        t.elapsed().as_secs_f64() * 1e3 / files.len() as f64
    })
}

fn write_dataset(dir: &Path, n: usize) -> Vec<Vec<u8>> {
    let root = dir.join("bench");
    let mut samples = vec![];
    let mut files = vec![];
    for i in 0..n {
        let (w, h) = if i % 4 == 3 { (375, 500) } else { (500, 375) };
        let b = jpeg(&photo(w, h, i as u64), 90);
        let rel = format!("images/c{}/{i:05}.jpg", i % 10);
        let p = root.join(&rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &b).unwrap();
        files.push(b);
        samples.push(Sample {
            path: rel,
            labels: vec![(i % 10) as i64],
            width: w,
            height: h,
            ..Default::default()
        });
    }
    let classes = (0..10).map(|c| format!("c{c}")).collect();
    SplitIndex::new("bench", "train", classes, "class", samples)
        .write(&root.join("index"))
        .unwrap();
    files
}

/// Images per second the loader delivers (each image = two 224-px views), over `batches` batches.
fn loader_rate(src: &Arc<IndexSource>, workers: usize, batch: usize, batches: usize) -> f64 {
    let cfg = LoaderConfig {
        workers,
        prefetch: 2 * workers.max(1),
        ..LoaderConfig::train(batch, 0)
    };
    let l = Loader::new(
        src.clone(),
        Plan::pretrain(RandomResizedCrop::default()),
        cfg,
    )
    .unwrap();
    let t = Instant::now();
    let mut n = 0;
    for b in l.epoch(0).take(batches) {
        n += b.unwrap().len();
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// A MoCo v2 step (ResNet-18, 224 px): online projection of view 1 with gradient, momentum projection of
/// view 2 without, InfoNCE over the batch plus a 65,536-key queue, backward, SGD.
struct Step {
    online: ContrastiveModel,
    target: ContrastiveModel,
    opt: tch::nn::Optimizer,
    queue: Tensor,
}

impl Step {
    fn new() -> Step {
        let cfg: ModelConfig = serde_json::from_value(serde_json::json!({
            "arch": "resnet18", "method": "moco"
        }))
        .expect("model config");
        let online = ContrastiveModel::new(&cfg, Device::Cpu);
        let target = ContrastiveModel::new(&cfg, Device::Cpu);
        debug_assert_eq!(cfg.method, Method::Moco);
        let opt = tch::nn::Sgd {
            momentum: 0.9,
            dampening: 0.0,
            wd: 1e-4,
            nesterov: false,
        }
        .build(&online.vs, 0.03)
        .expect("optimizer");
        let queue = Tensor::randn([65536, 128], (Kind::Float, Device::Cpu));
        Step {
            online,
            target,
            opt,
            queue,
        }
    }

    fn run(&mut self, v1: &Tensor, v2: &Tensor) {
        let q = self.online.project(v1, true);
        let k = tch::no_grad(|| self.target.project(v2, true));
        let pos = (&q * &k).sum_dim_intlist([1i64].as_slice(), true, Kind::Float);
        let neg = q.matmul(&self.queue.tr());
        let logits = Tensor::cat(&[pos, neg], 1) / 0.2;
        let labels = Tensor::zeros([q.size()[0]], (Kind::Int64, Device::Cpu));
        let loss = logits.cross_entropy_for_logits(&labels);
        self.opt.zero_grad();
        loss.backward();
        self.opt.step();
    }
}

fn main() {
    let n_images = env_usize("CONTRACAM_BENCH_IMAGES", 256);
    let steps = env_usize("CONTRACAM_BENCH_STEPS", 4);
    let batch = 32;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "loader bench: {n_images} JPEGs (500x375 / 375x500, q90), batch {batch}, {cores} cores, \
         torch threads {}, load average {}",
        tch::get_num_threads(),
        load_avg()
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let files = write_dataset(tmp.path(), n_images);
    let some = &files[..files.len().min(64)];

    // Decoders, single thread.
    let image_ms = per_image_ms(some, |b| {
        let _ = image::load_from_memory(b).expect("decode").to_rgb8();
    });
    let zune_ms = per_image_ms(some, |b| {
        let _ = decode_jpeg_rgb(b).expect("decode");
    });
    let image_ms2 = per_image_ms(some, |b| {
        let _ = image::load_from_memory(b).expect("decode").to_rgb8();
    });
    println!(
        "decode 500x375: image crate (zune-jpeg, lenient) {:.2} ms | zune-jpeg direct (strict) {:.2} ms  [{:.2}x]",
        image_ms.min(image_ms2),
        zune_ms,
        image_ms.min(image_ms2) / zune_ms
    );

    // Transforms of one sample (decode included), single thread.
    let src = Arc::new(IndexSource::open(tmp.path(), "bench", "train").expect("index"));
    let one = Loader::new(
        src.clone(),
        Plan::pretrain(RandomResizedCrop::default()),
        LoaderConfig::train(batch, 0),
    )
    .unwrap();
    let sample_ms = best_of(3, || {
        let t = Instant::now();
        for i in 0..some.len() {
            one.sample(0, i).expect("sample");
        }
        t.elapsed().as_secs_f64() * 1e3 / some.len() as f64
    });
    let decode_only_ms = best_of(3, || {
        let t = Instant::now();
        for i in 0..some.len() {
            src.image(i).expect("image");
        }
        t.elapsed().as_secs_f64() * 1e3 / some.len() as f64
    });
    println!(
        "one sample, one thread: read+decode {decode_only_ms:.2} ms, + two RandomResizedCrop(224)+flip views \
         {sample_ms:.2} ms ({:.0} img/s per core)",
        1e3 / sample_ms
    );

    if steps == 0 {
        println!(
            "loader alone, 1 worker: {:.1} img/s",
            loader_rate(&src, 1, batch, (n_images / batch).max(1))
        );
        return;
    }
    // Loader alone vs the training step, alternated.
    let batches = (n_images / batch).max(1);
    let mut step = Step::new();
    let v = Tensor::rand([batch as i64, 3, 224, 224], (Kind::Float, Device::Cpu));
    step.run(&v, &v); // warm-up
    let mut loader1 = vec![];
    let mut loader_all = vec![];
    let mut step_rate = vec![];
    let mut fed_rate = vec![];
    for _ in 0..3 {
        loader1.push(loader_rate(&src, 1, batch, batches));
        loader_all.push(loader_rate(&src, cores, batch, batches));
        let t = Instant::now();
        for _ in 0..steps {
            step.run(&v, &v);
        }
        step_rate.push((steps * batch) as f64 / t.elapsed().as_secs_f64());
        // Step fed by the loader running beside it (both share the cores).
        let cfg = LoaderConfig {
            workers: cores,
            prefetch: 2 * cores,
            ..LoaderConfig::train(batch, 1)
        };
        let l = Loader::new(
            src.clone(),
            Plan::pretrain(RandomResizedCrop::default()),
            cfg,
        )
        .unwrap();
        let t = Instant::now();
        let mut n = 0;
        for b in l.epoch(0).take(steps) {
            let b = b.expect("batch");
            step.run(&b.view(0), &b.view(1));
            n += b.len();
        }
        fed_rate.push(n as f64 / t.elapsed().as_secs_f64());
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (l1, la, st, fed) = (
        med(&mut loader1),
        med(&mut loader_all),
        med(&mut step_rate),
        med(&mut fed_rate),
    );
    println!("loader alone, 1 worker:        {l1:8.1} img/s");
    println!("loader alone, {cores} workers:       {la:8.1} img/s");
    println!("MoCo step alone (R18, 224, b{batch}): {st:8.1} img/s");
    println!(
        "MoCo step fed by the loader:   {fed:8.1} img/s  ({:.0}% of the step alone)",
        100.0 * fed / st
    );
    println!(
        "ratio loader/step: {:.1}x with {cores} workers, {:.1}x with 1 (target >= 2x); load average {}",
        la / st,
        l1 / st,
        load_avg()
    );
}
