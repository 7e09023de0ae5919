//! ContraCAM speed side by side with the official code (`contracam localize bench`): the iterative
//! contrastive CAM (expand 2, 10 iterations, negative-signal removal, the rest of the batch as negatives,
//! batch-mean fill) here and the official `utils/gradcam.py` run by `scripts/bench_contracam_pytorch.py`
//! in plain PyTorch (the project's `.venv`), on the same model file, the same images, the same batch and
//! the same threads.
//!
//! The model is a seeded, non-degenerate network (random BN affine parameters and running statistics set
//! from the bench images, as the reference vectors' recipe), written once as a contracam checkpoint that
//! both sides load. The images are synthetic scenes. Round 1 doubles as the agreement check: the CAMs of
//! the first batch from both sides must agree within [`CAM_TOLERANCE`] or nothing is reported (a benchmark
//! of two different computations is worthless).
//!
//! The machine may be shared, so the two sides alternate round by round (which goes first alternates too)
//! and both wall time and CPU time (getrusage of each process) are reported. Timings are printed, never
//! asserted.
//!
//! Our side runs as the `localize` commands run it, with freed CPU memory kept for reuse
//! ([`crate::util::cpu_memory`], set by the CLI; the header line says whether it is in force); the PyTorch side
//! runs with glibc's defaults, as the official code does.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::contrastive_cam::{contrastive_cam, CamConfig, CamError};
use crate::data::formats::safetensors::{read_tensors, write_tensors};
use crate::data::synth::{self, SynthConfig};
use crate::data::DataError;
use crate::model::{
    Arch, CheckpointError, ContrastiveModel, Method, ModelConfig, ResNetConfig, Stem,
};
use crate::train::bench::{median, process_cpu_seconds, Measure};

/// Max |Δ| allowed between the two sides' CAMs: the tolerance of the parity tests against the official
/// code's vectors (`tests/contracam_parity.rs`; fp32 noise there is ≤ 6.6e-6 after 10 iterations).
pub const CAM_TOLERANCE: f64 = 1e-4;

/// One model and image configuration (MoCo, the official projector).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Case {
    /// The `--only` value.
    pub key: &'static str,
    pub arch: Arch,
    pub width: f64,
    pub stem: Stem,
    pub size: i64,
    pub batch: usize,
}

impl Case {
    pub fn name(&self) -> String {
        let arch = match self.arch {
            Arch::Resnet18 => "ResNet-18",
            Arch::Resnet50 => "ResNet-50",
        };
        let width = if self.width == 1.0 {
            String::new()
        } else {
            format!(" x{}", self.width)
        };
        format!("{arch}{width}, {} px, batch {}", self.size, self.batch)
    }
}

/// `suites/smoke.toml`'s network (width 0.25, small stem) at its training resolution (32 px).
pub const SMOKE: Case = Case {
    key: "smoke",
    arch: Arch::Resnet18,
    width: 0.25,
    stem: Stem::Small,
    size: 32,
    batch: 64,
};

/// The official boxes' network (OA-Crop's `coco_cam-r18`) at 224 px.
pub const R18_224: Case = Case {
    key: "r18-224",
    arch: Arch::Resnet18,
    width: 1.0,
    stem: Stem::Imagenet,
    size: 224,
    batch: 32,
};

/// ResNet-50 (`coco_cam-r50`, Table 3's network) at 224 px; a smaller batch keeps a round short on a CPU.
pub const R50_224: Case = Case {
    key: "r50-224",
    arch: Arch::Resnet50,
    width: 1.0,
    stem: Stem::Imagenet,
    size: 224,
    batch: 16,
};

pub const CASES: [Case; 3] = [SMOKE, R18_224, R50_224];

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Cam(#[from] CamError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{path}: {msg}")]
    Io { path: PathBuf, msg: String },
    #[error(
        "{case}: the two sides compute different CAMs: max |Δ| = {max_abs:.3e} (image {image} of the first \
         batch) > tolerance {tolerance:e}; a benchmark of two different computations is worthless. Both \
         sides' CAMs are in {dir} (`cam`). Check that {script} is the official code path \
         (CONTRACAM_BENCH_PERTURB unset) and that both sides use the same libtorch"
    )]
    Disagree {
        case: String,
        max_abs: f64,
        image: i64,
        tolerance: f64,
        dir: String,
        script: String,
    },
    #[error("{case}: the PyTorch side's CAMs {path}: {msg}")]
    PytorchCams {
        case: String,
        path: PathBuf,
        msg: String,
    },
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Python with torch (the project's `.venv`); none: our side only, no agreement check.
    pub python: Option<PathBuf>,
    pub script: PathBuf,
    /// Work folder: model files, images and the PyTorch side's CAMs.
    pub dir: PathBuf,
    pub cases: Vec<Case>,
    pub rounds: usize,
    /// Timed batches per measurement, after one untimed one-iteration CAM of the first batch (the same
    /// shapes, so one-time costs — oneDNN primitives, allocator growth — stay out of the timing).
    pub steps: usize,
    /// libtorch threads on both sides.
    pub threads: usize,
    pub cam: CamConfig,
    /// Seed of the model and the images.
    pub seed: u64,
}

/// How far apart the two sides' CAMs of the first batch are.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Agreement {
    pub max_abs_diff: f64,
    pub mean_abs_diff: f64,
    /// Image of the first batch where the difference is largest.
    pub worst_image: i64,
    pub tolerance: f64,
}

/// Every round of one case.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub case: Case,
    pub name: String,
    pub ours: Vec<Measure>,
    pub pytorch: Vec<Measure>,
    /// Why the PyTorch side has no numbers, if it has none.
    pub pytorch_error: Option<String>,
    /// None when the PyTorch side did not run.
    pub agreement: Option<Agreement>,
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

/// The model and images of one case, as files both sides read.
struct Prepared {
    model: PathBuf,
    images_file: PathBuf,
    images: Tensor,
    pytorch_cams: PathBuf,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> BenchError {
    BenchError::Io {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// `n` synthetic scenes of side `size`, ImageNet-normalised float32 (N, 3, H, W).
fn bench_images(size: i64, n: usize, seed: u64) -> Tensor {
    let cfg = SynthConfig {
        image_size: size as usize,
        crop_size: (size as usize).min(SynthConfig::default().crop_size),
        ..Default::default()
    };
    let x = synth::scenes(&cfg, seed, "bench", n).images_tensor();
    // Contiguous NCHW, as the file the PyTorch side reads: the scenes come channels-last (a permuted HWC
    // buffer), and a channels-last input takes other convolution kernels with other rounding.
    crate::train::augment::normalize(&x).contiguous()
}

/// A seeded ResNet + MoCo projector that is not degenerate: no zero-initialised residual BN, BN weights
/// ~ U(0.75, 1.25) and biases ~ N(0, 0.1), and running statistics equal to the batch statistics of
/// `images` (one train-mode pass; each running value r' = 0.9 r + 0.1 s is solved for s).
fn bench_model(c: &Case, images: &Tensor, seed: u64) -> ContrastiveModel {
    let config = ModelConfig {
        encoder: ResNetConfig {
            arch: c.arch,
            width: c.width,
            stem: c.stem,
            zero_init_residual: false,
        },
        method: Method::Moco,
        proj_hidden: None,
        proj_dim: None,
        pred_hidden: None,
        projector_form: Default::default(),
    };
    let _rng = crate::util::rng::torch_rng_lock();
    tch::manual_seed(seed as i64);
    let model = ContrastiveModel::new(&config, Device::Cpu);
    let vars = model.vs.variables();
    let mut bns: Vec<&str> = vars
        .keys()
        .filter_map(|k| k.strip_suffix(".running_mean"))
        .collect();
    bns.sort_unstable();
    tch::no_grad(|| {
        for p in &bns {
            let _ = vars[&format!("{p}.weight")]
                .shallow_clone()
                .uniform_(0.75, 1.25);
            let _ = vars[&format!("{p}.bias")].shallow_clone().normal_(0.0, 0.1);
        }
        let before: Vec<(Tensor, Tensor)> = bns
            .iter()
            .map(|p| {
                (
                    vars[&format!("{p}.running_mean")].copy(),
                    vars[&format!("{p}.running_var")].copy(),
                )
            })
            .collect();
        let _ = model.project(images, true);
        for (p, (mean0, var0)) in bns.iter().zip(before) {
            let mut mean = vars[&format!("{p}.running_mean")].shallow_clone();
            let mut var = vars[&format!("{p}.running_var")].shallow_clone();
            let batch_mean = (&mean - &mean0 * 0.9) / 0.1;
            let batch_var = ((&var - &var0 * 0.9) / 0.1).clamp_min(0.0);
            mean.copy_(&batch_mean);
            var.copy_(&batch_var);
        }
    });
    model
}

/// Writes the case's model and images under `dir` (each run anew: a second or two).
fn prepare(c: &Case, o: &BenchOptions) -> Result<Prepared, BenchError> {
    std::fs::create_dir_all(&o.dir).map_err(|e| io_err(&o.dir, e))?;
    let n = c.batch * o.steps;
    let images = bench_images(c.size, n, o.seed);
    let calibration = images.narrow(0, 0, (n as i64).min(64));
    let model = bench_model(c, &calibration, o.seed);
    let model_path = o.dir.join(format!("{}-model.safetensors", c.key));
    model.save(&model_path, &HashMap::new())?;
    let images_file = o.dir.join(format!("{}-images.safetensors", c.key));
    write_tensors(
        &images_file,
        &[("images".to_string(), images.shallow_clone())],
        &BTreeMap::new(),
    )?;
    Ok(Prepared {
        model: model_path,
        images_file,
        images,
        pytorch_cams: o.dir.join(format!("{}-pytorch-cams.safetensors", c.key)),
    })
}

/// Our side: the model loaded from the shared file, `steps` batches of ContraCAM timed after a warm-up;
/// each batch's CAMs brought to the CPU as `collect_outputs` does. Returns the first batch's CAMs too.
fn ours(
    c: &Case,
    p: &Prepared,
    o: &BenchOptions,
    device: Device,
) -> Result<(Measure, Tensor), BenchError> {
    let model = ContrastiveModel::load(&p.model, device)?;
    let batches = p.images.split(c.batch as i64, 0);
    let warm = CamConfig {
        iters: 1,
        ..o.cam.clone()
    };
    let _ = contrastive_cam(&model, &batches[0], &warm)?.to_device(Device::Cpu);
    let (t, cpu) = (Instant::now(), process_cpu_seconds());
    let mut first = None;
    for x in &batches {
        // to_device(Cpu) also waits for a CUDA device to finish.
        let cam = contrastive_cam(&model, x, &o.cam)?.to_device(Device::Cpu);
        first.get_or_insert(cam);
    }
    let m = Measure {
        images: batches.len() * c.batch,
        wall_s: t.elapsed().as_secs_f64(),
        cpu_s: process_cpu_seconds() - cpu,
    };
    Ok((m, first.expect("at least one batch")))
}

fn device_arg(d: Device) -> String {
    match d {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    }
}

/// The PyTorch side in its own process; with `cams`, it also writes the first batch's CAMs there.
fn pytorch(
    c: &Case,
    p: &Prepared,
    o: &BenchOptions,
    python: &Path,
    device: Device,
    cams: Option<&Path>,
) -> Result<Measure, String> {
    let mut cmd = Command::new(python);
    cmd.arg(&o.script)
        .arg("--weights")
        .arg(&p.model)
        .arg("--images")
        .arg(&p.images_file)
        .args([
            "--batch",
            &c.batch.to_string(),
            "--steps",
            &o.steps.to_string(),
            "--iters",
            &o.cam.iters.to_string(),
            "--expand-res",
            &o.cam.expand_res.to_string(),
            "--threads",
            &o.threads.to_string(),
            "--device",
            &device_arg(device),
        ]);
    if !o.cam.negative_removal {
        cmd.arg("--no-negative-removal");
    }
    if let Some(f) = cams {
        cmd.arg("--cams-out").arg(f);
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

/// Compares our first batch's CAMs with the PyTorch side's file; an error when they differ by more than
/// [`CAM_TOLERANCE`] anywhere.
fn check_agreement(
    c: &Case,
    ours: &Tensor,
    file: &Path,
    script: &Path,
) -> Result<Agreement, BenchError> {
    let bad = |msg: String| BenchError::PytorchCams {
        case: c.name(),
        path: file.to_path_buf(),
        msg,
    };
    let f = read_tensors(file)?;
    let theirs = f.get("cam")?;
    if theirs.size() != ours.size() || theirs.kind() != Kind::Float {
        return Err(bad(format!(
            "{:?} {:?}, ours {:?} {:?}",
            theirs.kind(),
            theirs.size(),
            ours.kind(),
            ours.size()
        )));
    }
    let n = ours.size()[0];
    let diff = (ours - theirs).abs().reshape([n, -1]);
    if diff.isnan().sum(Kind::Int64).int64_value(&[]) != 0 {
        return Err(bad("NaN in one side's CAMs".into()));
    }
    let per_image = diff.amax([1i64].as_slice(), false);
    let a = Agreement {
        max_abs_diff: per_image.max().double_value(&[]),
        mean_abs_diff: diff.mean(Kind::Double).double_value(&[]),
        worst_image: per_image.argmax(0, false).int64_value(&[]),
        tolerance: CAM_TOLERANCE,
    };
    if a.max_abs_diff > CAM_TOLERANCE {
        // Both sides' CAMs stay side by side for a look at where they differ.
        let mine = file.with_file_name(format!("{}-contracam-cams.safetensors", c.key));
        write_tensors(
            &mine,
            &[("cam".into(), ours.shallow_clone())],
            &BTreeMap::new(),
        )?;
        return Err(BenchError::Disagree {
            case: c.name(),
            max_abs: a.max_abs_diff,
            image: a.worst_image,
            tolerance: CAM_TOLERANCE,
            dir: file
                .parent()
                .unwrap_or(Path::new("."))
                .display()
                .to_string(),
            script: script.display().to_string(),
        });
    }
    Ok(a)
}

/// Runs every case, alternating the two sides round by round; `log` gets a line per measurement. Fails,
/// before any timing is reported for a case, when its two sides' CAMs disagree.
pub fn run(
    o: &BenchOptions,
    device: Device,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<Row>, BenchError> {
    let mut rows = vec![];
    for c in &o.cases {
        let p = prepare(c, o)?;
        let mut row = Row {
            case: *c,
            name: c.name(),
            ours: vec![],
            pytorch: vec![],
            pytorch_error: None,
            agreement: None,
        };
        let mut first_cams = None;
        for round in 0..o.rounds {
            let python_first = round % 2 == 1;
            for side in 0..2 {
                let python_now = (side == 0) == python_first;
                let what = format!("{} / round {}", row.name, round + 1);
                if python_now {
                    let (Some(py), None) = (&o.python, &row.pytorch_error) else {
                        continue;
                    };
                    let cams = (round == 0).then_some(p.pytorch_cams.as_path());
                    if let Some(f) = cams {
                        let _ = std::fs::remove_file(f);
                    }
                    match pytorch(c, &p, o, py, device, cams) {
                        Ok(m) => {
                            log(&format!(
                                "{what}: PyTorch {:.2} img/s, {:.2} img/CPU-s",
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
                    let (m, cams) = ours(c, &p, o, device)?;
                    log(&format!(
                        "{what}: contracam {:.2} img/s, {:.2} img/CPU-s",
                        m.img_s(),
                        m.img_per_cpu_s()
                    ));
                    row.ours.push(m);
                    first_cams.get_or_insert(cams);
                }
            }
            if round == 0 && !row.pytorch.is_empty() {
                let ours = first_cams.as_ref().expect("our side ran in round 1");
                let a = check_agreement(c, ours, &p.pytorch_cams, &o.script)?;
                log(&format!(
                    "{}: CAMs agree (max |Δ| {:.2e}, mean {:.2e}, tolerance {:.0e})",
                    row.name, a.max_abs_diff, a.mean_abs_diff, a.tolerance
                ));
                row.agreement = Some(a);
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The rows as a Markdown table: medians over the rounds, and the ratios ours / PyTorch.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| configuration | contracam img/s | PyTorch img/s | ratio (wall) | contracam img/CPU-s | PyTorch img/CPU-s | ratio (CPU) | CAM max abs diff |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let [ow, oc, pw, pc] = r.medians();
        let f = |v: f64| {
            if v.is_finite() {
                format!("{v:.2}")
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
        let agree = r
            .agreement
            .map(|a| format!("{:.1e}", a.max_abs_diff))
            .unwrap_or_else(|| "n/a".into());
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.name,
            f(ow),
            f(pw),
            ratio(ow, pw),
            f(oc),
            f(pc),
            ratio(oc, pc),
            agree
        );
    }
    s
}
