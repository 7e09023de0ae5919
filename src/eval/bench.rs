//! Speed benchmarks against the reference implementations, on generated data (deterministic seeds):
//! * COCO bbox and segm: about 5 000 images, 30 000 ground truths, 40 000 detections; contracam vs
//!   pycocotools and faster-coco-eval (load + evaluate + accumulate + summarize, best of `repeat`);
//! * MaxBoxAccV2: 224×224 score maps; contracam (one thread, and all threads) vs wsolevaluation's
//!   algorithm in numpy + cv2 (`compute_bboxes_from_scoremaps` + `calculate_multiple_iou`, 1000
//!   thresholds), per map. The two sides alternate round by round (same machine load) and both wall
//!   and CPU time (getrusage: contracam's worker thread, the whole Python process) are reported; the
//!   ratio uses CPU time, which other jobs on a shared machine disturb far less than wall time.
//!
//! The Python baselines run only when a Python interpreter with pycocotools / faster-coco-eval /
//! opencv-python-headless / numpy is given; their numbers are also compared with ours. Nothing here is a
//! test: timings are printed, never asserted.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use super::error::EvalError;
use super::maxboxacc::{self, MaxBoxAccConfig};
use crate::imgops::rle::Rle;

/// What to benchmark.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Work folder for the generated data (kept, so runs can be repeated).
    pub dir: PathBuf,
    pub coco: bool,
    pub maxboxacc: bool,
    /// Python with the baselines installed (none: contracam timings only).
    pub python: Option<PathBuf>,
    pub coco_images: usize,
    pub coco_gt: usize,
    pub coco_dt: usize,
    pub wsol_maps: usize,
    pub repeat: usize,
    pub seed: u64,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            dir: PathBuf::from("target/bench-metrics"),
            coco: true,
            maxboxacc: true,
            python: None,
            coco_images: 5000,
            coco_gt: 30000,
            coco_dt: 40000,
            wsol_maps: 200,
            repeat: 3,
            seed: 2021,
        }
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), EvalError> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).map_err(|e| EvalError::io(p, e))?;
    }
    std::fs::write(path, bytes).map_err(|e| EvalError::io(path, e))
}

/// An ellipse-like polygon inscribed in the box, with `n` vertices.
fn polygon_in_box(rng: &mut ChaCha8Rng, b: [f64; 4], n: usize) -> Vec<f64> {
    let (cx, cy, rx, ry) = (b[0] + b[2] / 2.0, b[1] + b[3] / 2.0, b[2] / 2.0, b[3] / 2.0);
    let mut v = Vec::with_capacity(2 * n);
    for i in 0..n {
        let a = i as f64 / n as f64 * std::f64::consts::TAU;
        let r = rng.random_range(0.8..1.0);
        v.push(((cx + r * rx * a.cos()) * 100.0).round() / 100.0);
        v.push(((cy + r * ry * a.sin()) * 100.0).round() / 100.0);
    }
    v
}

fn poly_bbox(p: &[f64]) -> [f64; 4] {
    let xs = p.iter().step_by(2);
    let ys = p.iter().skip(1).step_by(2);
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
        (a.min(x), b.max(x))
    });
    let (y0, y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &y| {
        (a.min(y), b.max(y))
    });
    [
        x0,
        y0,
        ((x1 - x0) * 100.0).round() / 100.0,
        ((y1 - y0) * 100.0).round() / 100.0,
    ]
}

/// Writes `gt.json`, `dt_bbox.json`, `dt_segm.json` (compressed RLE, no bbox) under `dir`.
pub fn generate_coco(
    dir: &Path,
    n_images: usize,
    n_gt: usize,
    n_dt: usize,
    seed: u64,
) -> Result<(), EvalError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (w, h) = (640u32, 480u32);
    let images: Vec<Value> = (1..=n_images)
        .map(|i| json!({"id": i, "width": w, "height": h, "file_name": format!("{i:012}.jpg")}))
        .collect();
    let cat_ids: Vec<i64> = (1..=90)
        .filter(|c| ![12, 26, 29, 30, 45, 66, 68, 69, 71, 83].contains(c))
        .collect();
    let categories: Vec<Value> = cat_ids
        .iter()
        .map(|c| json!({"id": c, "name": format!("c{c}"), "supercategory": "s"}))
        .collect();
    let mut anns = Vec::with_capacity(n_gt);
    let mut gt_boxes = Vec::with_capacity(n_gt);
    for id in 1..=n_gt {
        let img = rng.random_range(1..=n_images) as i64;
        let cat = cat_ids[rng.random_range(0..cat_ids.len())];
        let bw = (4.0f64).powf(1.0) * (300.0f64 / 4.0).powf(rng.random::<f64>());
        let bh = (bw * rng.random_range(0.5..2.0)).min(h as f64 - 2.0);
        let x = rng.random_range(0.0..(w as f64 - bw).max(1.0));
        let y = rng.random_range(0.0..(h as f64 - bh).max(1.0));
        let poly = polygon_in_box(&mut rng, [x, y, bw, bh], 12);
        let area = Rle::from_polygon(&poly, h, w).area();
        let crowd = rng.random::<f64>() < 0.01;
        let bbox = poly_bbox(&poly);
        anns.push(json!({"id": id, "image_id": img, "category_id": cat, "segmentation": [poly], "area": area, "bbox": bbox, "iscrowd": crowd as i32}));
        gt_boxes.push((img, cat, bbox));
    }
    let gt = json!({"info": {}, "licenses": [], "images": images, "categories": categories, "annotations": anns});
    write(
        &dir.join("gt.json"),
        &serde_json::to_vec(&gt).map_err(|e| EvalError::invalid("bench gt", e.to_string()))?,
    )?;
    let mut dt_bbox = Vec::with_capacity(n_dt);
    let mut dt_segm = Vec::with_capacity(n_dt);
    for _ in 0..n_dt {
        let (img, cat, b) = if rng.random::<f64>() < 0.7 {
            let (img, cat, b) = gt_boxes[rng.random_range(0..gt_boxes.len())];
            let j = |v: f64, s: f64, r: &mut ChaCha8Rng| v + s * r.random_range(-0.12..0.12);
            let cat = if rng.random::<f64>() < 0.05 {
                cat_ids[rng.random_range(0..cat_ids.len())]
            } else {
                cat
            };
            let bb = [
                j(b[0], b[2], &mut rng).max(0.0),
                j(b[1], b[3], &mut rng).max(0.0),
                j(b[2], b[2], &mut rng).max(1.0),
                j(b[3], b[3], &mut rng).max(1.0),
            ];
            (img, cat, bb)
        } else {
            let bw = rng.random_range(4.0..250.0);
            let bh = rng.random_range(4.0..250.0);
            (
                rng.random_range(1..=n_images) as i64,
                cat_ids[rng.random_range(0..cat_ids.len())],
                [
                    rng.random_range(0.0..w as f64 - bw),
                    rng.random_range(0.0..h as f64 - bh),
                    bw,
                    bh,
                ],
            )
        };
        let b = b.map(|v| (v * 100.0).round() / 100.0);
        let score = (rng.random::<f64>() * 1000.0).round() / 1000.0;
        let poly = polygon_in_box(&mut rng, b, 12);
        let rle = Rle::from_polygon(&poly, h, w);
        let counts = rle.to_compressed();
        dt_bbox.push(json!({"image_id": img, "category_id": cat, "bbox": b, "score": score}));
        dt_segm.push(json!({"image_id": img, "category_id": cat, "segmentation": {"size": [h, w], "counts": counts}, "score": score}));
    }
    write(
        &dir.join("dt_bbox.json"),
        &serde_json::to_vec(&dt_bbox).map_err(|e| EvalError::invalid("bench dt", e.to_string()))?,
    )?;
    write(
        &dir.join("dt_segm.json"),
        &serde_json::to_vec(&dt_segm).map_err(|e| EvalError::invalid("bench dt", e.to_string()))?,
    )?;
    Ok(())
}

/// Writes a wsolevaluation metadata folder (`metadata/`) and CAM-like float32 score maps (`scoremaps/`)
/// at feature resolution (7, 14 or 28 px; evaluation resizes them to 224 with bicubic): Gaussian blobs
/// over the GT boxes, distractor blobs and low-amplitude noise. Images are 224×224.
pub fn generate_wsol(dir: &Path, n: usize, seed: u64) -> Result<(), EvalError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let s = 224usize;
    let (mut ids, mut sizes, mut locs, mut labels) =
        (String::new(), String::new(), String::new(), String::new());
    for i in 0..n {
        let id = format!("bench/img_{i:05}.jpg");
        ids.push_str(&format!("{id}\n"));
        sizes.push_str(&format!("{id},{s},{s}\n"));
        labels.push_str(&format!("{id},0\n"));
        let m = [7usize, 14, 28][rng.random_range(0..3)];
        let scale = m as f64 / s as f64;
        let mut blobs: Vec<(f64, f64, f64, f64, f64)> = Vec::new();
        for _ in 0..rng.random_range(1..4) {
            let (bw, bh): (i32, i32) = (rng.random_range(20..140), rng.random_range(20..140));
            let (x0, y0) = (
                rng.random_range(0..s as i32 - bw),
                rng.random_range(0..s as i32 - bh),
            );
            locs.push_str(&format!("{id},{x0},{y0},{},{}\n", x0 + bw - 1, y0 + bh - 1));
            let (cx, cy) = (
                (x0 as f64 + bw as f64 / 2.0) * scale,
                (y0 as f64 + bh as f64 / 2.0) * scale,
            );
            blobs.push((
                cx,
                cy,
                (bw as f64 / 3.0 * scale).max(0.4),
                (bh as f64 / 3.0 * scale).max(0.4),
                rng.random_range(0.5..1.0),
            ));
        }
        for _ in 0..rng.random_range(0..3) {
            blobs.push((
                rng.random_range(0.0..m as f64),
                rng.random_range(0.0..m as f64),
                rng.random_range(0.4..2.0),
                rng.random_range(0.4..2.0),
                rng.random_range(0.2..0.6),
            ));
        }
        let mut map = vec![0f32; m * m];
        for y in 0..m {
            for x in 0..m {
                let mut v = 0.02 * rng.random::<f64>();
                for &(cx, cy, sx, sy, a) in &blobs {
                    let (dx, dy) = ((x as f64 + 0.5 - cx) / sx, (y as f64 + 0.5 - cy) / sy);
                    v += a * (-0.5 * (dx * dx + dy * dy)).exp();
                }
                map[y * m + x] = v as f32;
            }
        }
        write(
            &maxboxacc::scoremap_path(&dir.join("scoremaps"), &id),
            &crate::data::formats::npy::encode_npy_2d_f32(m, m, &map),
        )?;
    }
    let md = dir.join("metadata");
    write(&md.join("image_ids.txt"), ids.as_bytes())?;
    write(&md.join("image_sizes.txt"), sizes.as_bytes())?;
    write(&md.join("localization.txt"), locs.as_bytes())?;
    write(&md.join("class_labels.txt"), labels.as_bytes())?;
    Ok(())
}

const PY_COCO: &str = r#"
import contextlib, io, json, sys, time
gt, dt, iou, repeat = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
out = {}
def timed(make):
    best, stats = None, None
    for _ in range(repeat):
        with contextlib.redirect_stdout(io.StringIO()):
            t = time.perf_counter(); stats = make(); t = time.perf_counter() - t
        best = t if best is None else min(best, t)
    return best, [float(s) for s in stats]
try:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    def run():
        G = COCO(gt); D = G.loadRes(dt); E = COCOeval(G, D, iou); E.evaluate(); E.accumulate(); E.summarize(); return E.stats
    out["pycocotools"] = timed(run)
except ImportError as e:
    out["pycocotools_error"] = str(e)
try:
    from faster_coco_eval import COCO as FC, COCOeval_faster
    def run():
        G = FC(gt); D = G.loadRes(dt); E = COCOeval_faster(G, D, iou); E.evaluate(); E.accumulate(); E.summarize(); return E.stats[:12]
    out["faster_coco_eval"] = timed(run)
except ImportError as e:
    out["faster_coco_eval_error"] = str(e)
print(json.dumps(out))
"#;

const PY_WSOL: &str = r#"
import json, os, sys, time
import numpy as np, cv2
# One thread, as contracam is timed: OpenCV's pool would otherwise add its threads' CPU time.
cv2.setNumThreads(1)
meta, maps, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
ids = [l.strip() for l in open(os.path.join(meta, "image_ids.txt")) if l.strip()]
boxes = {}
for l in open(os.path.join(meta, "localization.txt")):
    f = l.strip().split(",")
    boxes.setdefault(f[0], []).append([int(v) for v in f[1:]])
thr_list = list(np.arange(0, 1, 0.001)); iou_thr = [30, 50, 70]
def calculate_multiple_iou(a, b):
    a = np.asarray(a); b = np.asarray(b)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0]); y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2]); y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.maximum(0, x1 - x0 + 1) * np.maximum(0, y1 - y0 + 1)
    aa = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1); ab = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    return inter / (aa[:, None] + ab[None, :] - inter)
def boxes_from(scoremap):
    h, w = scoremap.shape
    img = np.expand_dims((scoremap * 255).astype(np.uint8), 2)
    out, nums = [], []
    for t in thr_list:
        _, th = cv2.threshold(img, int(t * np.max(img)), 255, cv2.THRESH_BINARY)
        cs = cv2.findContours(th, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
        if len(cs) == 0:
            out.append(np.asarray([[0, 0, 0, 0]])); nums.append(1); continue
        bs = []
        for c in cs:
            x, y, bw, bh = cv2.boundingRect(c); bs.append([x, y, min(x + bw, w - 1), min(y + bh, h - 1)])
        out.append(np.asarray(bs)); nums.append(len(cs))
    return out, nums
def normalize(cam):
    if np.isnan(cam).any() or cam.min() == cam.max(): return np.zeros_like(cam)
    cam = cam - cam.min(); return cam / cam.max()
cams = [np.load(os.path.join(maps, i + ".npy")).astype(np.float64) for i in ids]
best = None
for _ in range(repeat):
    num_correct = {d: np.zeros(len(thr_list)) for d in iou_thr}
    t, c = time.perf_counter(), time.process_time()
    for i, cam in zip(ids, cams):
        cam = normalize(cv2.resize(cam, (224, 224), interpolation=cv2.INTER_CUBIC))
        bl, nums = boxes_from(cam)
        iou = calculate_multiple_iou(np.concatenate(bl, 0), np.array(boxes[i]))
        idx, sl = 0, []
        for n in nums:
            sl.append(max(iou.max(1)[idx:idx + n])); idx += n
        for d in iou_thr:
            num_correct[d][np.where(np.asarray(sl) >= d / 100)[0]] += 1
    t, c = time.perf_counter() - t, time.process_time() - c
    best = (t, c) if best is None else (min(best[0], t), min(best[1], c))
accs = [float((num_correct[d] * 100. / len(ids)).max()) for d in iou_thr]
print(json.dumps({"seconds": best[0], "cpu_seconds": best[1], "per_map_ms": 1000 * best[0] / len(ids), "per_map_cpu_ms": 1000 * best[1] / len(ids), "MaxBoxAcc": accs, "MaxBoxAccV2": float(np.average(accs))}))
"#;

fn run_python(
    python: &Path,
    script: &str,
    args: &[String],
    dir: &Path,
    name: &str,
) -> Result<Value, EvalError> {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).map_err(|e| EvalError::io(&path, e))?;
    f.write_all(script.as_bytes())
        .map_err(|e| EvalError::io(&path, e))?;
    let out = Command::new(python)
        .arg(&path)
        .args(args)
        .output()
        .map_err(|e| EvalError::io(python, e))?;
    if !out.status.success() {
        return Err(EvalError::format(
            &path,
            format!("baseline failed: {}", String::from_utf8_lossy(&out.stderr)),
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|err| EvalError::Json { path, err })
}

/// CPU time (user + system) of the calling thread, in seconds.
fn thread_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return f64::NAN;
    }
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    s(ru.ru_utime) + s(ru.ru_stime)
}

/// The 1-minute load average (`/proc/loadavg`), recorded beside every timing; NaN where unavailable.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

fn best_of<T>(
    repeat: usize,
    mut f: impl FnMut() -> Result<T, EvalError>,
) -> Result<(f64, T), EvalError> {
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        let v = f()?;
        best = best.min(t.elapsed().as_secs_f64());
        last = Some(v);
    }
    Ok((best, last.expect("at least one run")))
}

/// Runs the selected benchmarks and returns a JSON report with times and ratios.
pub fn run(cfg: &BenchConfig) -> Result<Value, EvalError> {
    let mut report = json!({"threads": rayon::current_num_threads()});
    if cfg.coco {
        let dir = cfg.dir.join("coco");
        if !dir.join("dt_segm.json").is_file() {
            generate_coco(&dir, cfg.coco_images, cfg.coco_gt, cfg.coco_dt, cfg.seed)?;
        }
        let gt = dir.join("gt.json");
        let mut r = json!({"images": cfg.coco_images, "ground_truths": cfg.coco_gt, "detections": cfg.coco_dt});
        for (iou, file) in [
            (super::coco::IouType::Bbox, "dt_bbox.json"),
            (super::coco::IouType::Segm, "dt_segm.json"),
        ] {
            let dt = dir.join(file);
            let (secs, res) = best_of(cfg.repeat, || {
                super::coco::evaluate_files(&gt, &dt, iou, false)
            })?;
            let name = if iou == super::coco::IouType::Bbox {
                "bbox"
            } else {
                "segm"
            };
            let mut e = json!({"contracam_s": secs, "stats": res.stats});
            if let Some(py) = &cfg.python {
                let args = [
                    gt.display().to_string(),
                    dt.display().to_string(),
                    name.to_string(),
                    cfg.repeat.to_string(),
                ];
                let b = run_python(py, PY_COCO, &args, &dir, "bench_coco.py")?;
                for base in ["pycocotools", "faster_coco_eval"] {
                    if let Some(arr) = b.get(base).and_then(|v| v.as_array()) {
                        let t = arr[0].as_f64().unwrap_or(f64::NAN);
                        let stats: Vec<f64> = arr[1]
                            .as_array()
                            .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
                            .unwrap_or_default();
                        let maxd = stats
                            .iter()
                            .zip(res.stats)
                            .map(|(a, b)| (a - b).abs())
                            .fold(0.0, f64::max);
                        e[base] =
                            json!({"seconds": t, "speedup": t / secs, "max_abs_stat_diff": maxd});
                    } else if let Some(err) = b.get(format!("{base}_error")) {
                        e[base] = json!({"error": err});
                    }
                }
            }
            r[name] = e;
        }
        eprintln!("{}", json!({"coco": &r}));
        report["coco"] = r;
    }
    if cfg.maxboxacc {
        let dir = cfg.dir.join("wsol-cam");
        if !dir.join("metadata/localization.txt").is_file() {
            generate_wsol(&dir, cfg.wsol_maps, cfg.seed)?;
        }
        let (meta, maps) = (dir.join("metadata"), dir.join("scoremaps"));
        let mcfg = MaxBoxAccConfig::default();
        // Maps loaded once; time the per-map work (resize + normalise + all thresholds).
        let md = maxboxacc::read_wsol_metadata(&meta)?;
        let loaded: Vec<(crate::data::formats::npy::Array2, Vec<maxboxacc::Box4>)> = md
            .image_ids
            .iter()
            .map(|id| {
                Ok((
                    crate::data::formats::npy::read_npy_2d(&maxboxacc::scoremap_path(&maps, id))?,
                    md.boxes[id].clone(),
                ))
            })
            .collect::<Result<_, EvalError>>()?;
        let one = || -> Result<maxboxacc::MaxBoxAccResult, EvalError> {
            let mut acc = maxboxacc::BoxAccumulator::new(mcfg.clone());
            for (m, gt) in &loaded {
                let cam = maxboxacc::prepare_scoremap(&m.data, m.width, m.height);
                acc.accumulate_scoremap(
                    &cam,
                    maxboxacc::RESIZE_LENGTH,
                    maxboxacc::RESIZE_LENGTH,
                    gt,
                );
            }
            Ok(acc.compute())
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .map_err(|e| EvalError::invalid("rayon", e.to_string()))?;
        let n = loaded.len() as f64;
        let load_before = load_average();
        // Rounds alternate contracam and Python so both see the same load; best of `repeat` each.
        let (mut wall, mut cpu, mut py_wall, mut py_cpu) =
            (f64::INFINITY, f64::INFINITY, f64::INFINITY, f64::INFINITY);
        let mut res = None;
        let mut py_res = None;
        for _ in 0..cfg.repeat.max(1) {
            let (w, c, v) = pool.install(|| -> Result<_, EvalError> {
                let (t, c) = (Instant::now(), thread_cpu_seconds());
                let v = one()?;
                Ok((t.elapsed().as_secs_f64(), thread_cpu_seconds() - c, v))
            })?;
            (wall, cpu) = (wall.min(w), cpu.min(c));
            res = Some(v);
            if let Some(py) = &cfg.python {
                let b = run_python(
                    py,
                    PY_WSOL,
                    &[
                        meta.display().to_string(),
                        maps.display().to_string(),
                        "1".to_string(),
                    ],
                    &dir,
                    "bench_wsol.py",
                )?;
                py_wall = py_wall.min(b["per_map_ms"].as_f64().unwrap_or(f64::NAN));
                py_cpu = py_cpu.min(b["per_map_cpu_ms"].as_f64().unwrap_or(f64::NAN));
                py_res = Some(b);
            }
        }
        let res = res.expect("at least one round");
        let (all, _) = best_of(cfg.repeat, || maxboxacc::evaluate_wsol(&meta, &maps, &mcfg))?;
        let (ms, cpu_ms) = (1000.0 * wall / n, 1000.0 * cpu / n);
        let mut r = json!({
            "maps": loaded.len(),
            "contracam_per_map_ms_1_thread": ms,
            "contracam_per_map_cpu_ms_1_thread": cpu_ms,
            "contracam_per_map_ms_all_threads_incl_npy_load": 1000.0 * all / n,
            "MaxBoxAccV2": res.mean,
            "load_average_1min": [load_before, load_average()],
        });
        if let Some(b) = py_res {
            r["wsolevaluation_numpy_cv2_per_map_ms"] = json!(py_wall);
            r["wsolevaluation_numpy_cv2_per_map_cpu_ms"] = json!(py_cpu);
            r["speedup_1_thread"] = json!(py_wall / ms);
            r["speedup_1_thread_cpu"] = json!(py_cpu / cpu_ms);
            r["reference_MaxBoxAccV2"] = b["MaxBoxAccV2"].clone();
            r["same_result"] = json!(b["MaxBoxAccV2"].as_f64() == Some(res.mean));
        }
        report["maxboxacc"] = r;
    }
    Ok(report)
}
