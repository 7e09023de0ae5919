//! One file per image, named by its row in the tensor (`<dir>/<row>.npy`, `<dir>/<row>.png`): the folders
//! `eval maxboxacc --scoremaps` and `eval miou --masks` read. Row `i` is sample id `i` of the sample index
//! `data synth` writes, so `localize cam`/`crf` outputs on its tensors evaluate against its ground truth.
use std::path::Path;

use anyhow::Context;
use contracam::data::formats::npy::encode_npy_2d_f32;
use contracam::data::formats::safetensors::{Dtype, SafetensorsReader};
use contracam::util::output::{refuse_inputs_inside, write_atomic};

/// Creates the output folder `dir` (flag `flag`) after refusing one that holds any of `inputs`.
pub fn prepare_dir(
    dir: &Path,
    flag: &str,
    inputs: &[(&str, &Path)],
    outputs: &[(&str, &Path)],
) -> anyhow::Result<()> {
    refuse_inputs_inside(dir, flag, inputs)?;
    // Another output inside (or as) the folder would fail only after the work ran.
    let lexical = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    for (out_flag, out) in outputs {
        if lexical(out).starts_with(lexical(dir)) {
            anyhow::bail!(
                "{out_flag} {} lies in the {flag} folder {}; give them separate paths",
                out.display(),
                dir.display()
            );
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {flag} {}", dir.display()))
}

/// Writes each (H, W) map of the float32 values `maps` (N maps, row-major) as `<dir>/<row>.npy`.
pub fn write_scoremaps(
    dir: &Path,
    maps: &[f32],
    n: usize,
    h: usize,
    w: usize,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        maps.len() == n * h * w,
        "{} values are not {n} maps of {h}×{w}",
        maps.len()
    );
    for (i, m) in maps.chunks_exact(h * w).enumerate() {
        let p = dir.join(format!("{i}.npy"));
        write_atomic(&p, &encode_npy_2d_f32(h, w, m))?;
    }
    Ok(())
}

/// Writes tensor `key` of the safetensors file `file` — float32 (N, 1, H, W) or (N, H, W) in [0, 1] — as
/// 8-bit grayscale PNGs `<dir>/<row>.png` (value × 255, rounded), `chunk` images at a time. Returns N.
pub fn write_mask_pngs(dir: &Path, file: &Path, key: &str, chunk: usize) -> anyhow::Result<usize> {
    let mut r = SafetensorsReader::open(file)?;
    let s = r.expect(
        key,
        &[Dtype::F32],
        |s| s.len() == 3 || (s.len() == 4 && s[1] == 1),
        "(N, 1, H, W) or (N, H, W)",
    )?;
    let (n, h, w) = (s[0], s[s.len() - 2], s[s.len() - 1]);
    let px = h * w;
    let chunk = chunk.max(1);
    let mut start = 0;
    while start < n {
        let k = chunk.min(n - start);
        let values = r.read_f32(key, start * px, k * px)?;
        for (j, m) in values.chunks_exact(px).enumerate() {
            let gray: Vec<u8> = m
                .iter()
                .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
                .collect();
            let p = dir.join(format!("{}.png", start + j));
            let mut bytes = Vec::new();
            image::ImageEncoder::write_image(
                image::codecs::png::PngEncoder::new(&mut bytes),
                &gray,
                w as u32,
                h as u32,
                image::ExtendedColorType::L8,
            )
            .with_context(|| format!("encoding {}", p.display()))?;
            write_atomic(&p, &bytes)?;
        }
        start += k;
    }
    Ok(n)
}
