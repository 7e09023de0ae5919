//! Dataset-level post-processing: CRF (+ mask cleaning) and box extraction over safetensors files,
//! streamed in chunks of images (memory is O(chunk), not O(dataset)) and spread over all cores with rayon.
//! Results do not depend on the chunk size or the number of threads: every image is independent.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::boxes::{extract_boxes, extract_boxes_soft, BoxOptions};
use super::crf::{CrfError, OfficialCrf, OfficialCrfParams};
use super::mask_clean::{clean_mask, CleanOptions};
use crate::data::formats::safetensors::{Dtype, SafetensorsReader, SafetensorsWriter};
use crate::data::DataError;

#[derive(Debug, thiserror::Error)]
pub enum PostprocessError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{context}: {err}")]
    Crf { context: String, err: CrfError },
    #[error("{0}")]
    Mismatch(String),
    /// An input or option that cannot be processed; the message names the file or option.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Output(#[from] crate::util::output::OutputError),
    #[error(transparent)]
    Memory(#[from] crate::util::memory::MemoryError),
}

/// N, H and W of a (N, 1, H, W) or (N, H, W) tensor, refused when any is 0 (an empty file is a mistake,
/// and a header with H = W = 0 could otherwise announce 10¹⁵ images of no bytes).
fn nhw(t: &TensorRef, shape: &[usize]) -> Result<(usize, usize, usize), PostprocessError> {
    let (n, h, w) = (shape[0], shape[shape.len() - 2], shape[shape.len() - 1]);
    if n == 0 || h == 0 || w == 0 {
        return Err(PostprocessError::Invalid(format!(
            "{t} is empty: shape {shape:?} (N, H and W must be at least 1)"
        )));
    }
    Ok((n, h, w))
}

/// Refuses NaN, ±Inf and values outside [0, 1] in maps `first_image..` of `values` (`px` values each).
fn check_unit_range(
    t: &TensorRef,
    what: &str,
    values: &[f32],
    px: usize,
    first_image: usize,
) -> Result<(), PostprocessError> {
    if let Some(i) = values
        .iter()
        .position(|v| !(0.0..=1.0).contains(v) || v.is_nan())
    {
        let v = values[i];
        let why = if v.is_finite() {
            "outside [0, 1]"
        } else {
            "not finite"
        };
        return Err(PostprocessError::Invalid(format!(
            "{t}: image {} pixel {} holds {v}, {why}; {what} must be probabilities in [0, 1]",
            first_image + i / px,
            i % px
        )));
    }
    Ok(())
}

/// Refuses a zero `--chunk`, and a chunk whose buffers would not fit in memory.
fn check_chunk(chunk: usize, bytes_per_image: u64, what: &str) -> Result<(), PostprocessError> {
    if chunk == 0 {
        return Err(PostprocessError::Invalid(
            "chunk size (--chunk) must be at least 1".into(),
        ));
    }
    crate::util::memory::ensure_fits_with_hint(
        bytes_per_image.saturating_mul(chunk as u64),
        &format!("{what} in chunks of {chunk} images"),
        "; use a smaller --chunk",
    )?;
    Ok(())
}

/// A tensor inside a safetensors file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRef {
    pub path: PathBuf,
    pub key: String,
}

impl TensorRef {
    pub fn new(path: impl Into<PathBuf>, key: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            key: key.into(),
        }
    }
}

impl std::fmt::Display for TensorRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.path.display(), self.key)
    }
}

/// Options of [`crf_dataset`].
#[derive(Debug, Clone, PartialEq)]
pub struct CrfDatasetOptions {
    pub params: OfficialCrfParams,
    /// Also write `mask`, the cleaned {0, 1} mask.
    pub clean: Option<CleanOptions>,
    /// Images per chunk held in memory at once.
    pub chunk: usize,
}

impl Default for CrfDatasetOptions {
    fn default() -> Self {
        Self {
            params: OfficialCrfParams::default(),
            clean: None,
            chunk: 256,
        }
    }
}

/// What [`crf_dataset`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct CrfDatasetSummary {
    pub images: usize,
    pub width: usize,
    pub height: usize,
}

/// Output tensor names of [`crf_dataset`].
pub const CRF_KEY: &str = "crf";
pub const MASK_KEY: &str = "mask";

/// Runs the official CRF over every image: `images` uint8 (N, H, W, 3), `cams` float32 (N, 1, H, W) or
/// (N, H, W) in [0, 1]. Writes `out` with `crf` float32 (N, 1, H, W) and, with `opts.clean`, `mask` float32
/// (N, 1, H, W) in {0, 1}. `progress` is called with the number of images finished so far.
pub fn crf_dataset(
    images: &TensorRef,
    cams: &TensorRef,
    out: &Path,
    opts: &CrfDatasetOptions,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<CrfDatasetSummary, PostprocessError> {
    let mut img_r = SafetensorsReader::open(&images.path)?;
    let ishape = img_r.expect(
        &images.key,
        &[Dtype::U8],
        |s| s.len() == 4 && s[3] == 3,
        "(N, H, W, 3)",
    )?;
    let mut cam_r = SafetensorsReader::open(&cams.path)?;
    let cshape = cam_r.expect(
        &cams.key,
        &[Dtype::F32],
        |s| s.len() == 3 || (s.len() == 4 && s[1] == 1),
        "(N, 1, H, W) or (N, H, W)",
    )?;
    let (n, h, w) = nhw(images, &ishape[..3])?;
    let (cn, ch, cw) = nhw(cams, &cshape)?;
    if (cn, ch, cw) != (n, h, w) {
        return Err(PostprocessError::Mismatch(format!(
            "{images} is {n} images of {h}×{w} but {cams} is {cn} maps of {ch}×{cw}"
        )));
    }
    crate::util::output::refuse_input_overwrite(
        out,
        "output",
        &[("images", &images.path), ("CAMs", &cams.path)],
    )?;
    let px = h * w;
    // Chunk buffers (image, CAM, CRF, mask) plus the CRF's own working set per image.
    check_chunk(opts.chunk, px as u64 * 64, "the CRF")?;
    let crf = OfficialCrf::new(w, h, opts.params).map_err(|err| PostprocessError::Crf {
        context: format!("{images}"),
        err,
    })?;
    let mut tensors = vec![(CRF_KEY, Dtype::F32, vec![n, 1, h, w])];
    if opts.clean.is_some() {
        tensors.push((MASK_KEY, Dtype::F32, vec![n, 1, h, w]));
    }
    let meta = BTreeMap::from([
        ("contracam".to_string(), crate::VERSION.to_string()),
        ("images".to_string(), images.to_string()),
        ("cams".to_string(), cams.to_string()),
        ("crf_params".to_string(), format!("{:?}", opts.params)),
        (
            "clean".to_string(),
            match &opts.clean {
                Some(c) => format!("{c:?}"),
                None => "none".to_string(),
            },
        ),
    ]);
    let mut writer = SafetensorsWriter::create(out, &tensors, &meta)?;
    let chunk = opts.chunk;
    let mut done = 0;
    while done < n {
        let k = chunk.min(n - done);
        let imgs = img_r.read_u8(&images.key, done * px * 3, k * px * 3)?;
        let maps = cam_r.read_f32(&cams.key, done * px, k * px)?;
        check_unit_range(cams, "CAMs", &maps, px, done)?;
        let results: Vec<(Vec<f32>, Option<Vec<u8>>)> = (0..k)
            .into_par_iter()
            .map(|i| {
                let q = crf
                    .run(
                        &imgs[i * px * 3..(i + 1) * px * 3],
                        &maps[i * px..(i + 1) * px],
                    )
                    .map_err(|err| PostprocessError::Crf {
                        context: format!("{images} image {}", done + i),
                        err,
                    })?;
                let mask = opts.clean.as_ref().map(|c| clean_mask(&q, w, h, c));
                Ok((q, mask))
            })
            .collect::<Result<_, PostprocessError>>()?;
        let crf_out: Vec<f32> = results
            .iter()
            .flat_map(|(q, _)| q.iter().copied())
            .collect();
        writer.write_f32(CRF_KEY, done * px, &crf_out)?;
        if opts.clean.is_some() {
            let masks: Vec<f32> = results
                .iter()
                .flat_map(|(_, m)| m.iter().flatten().map(|&v| v as f32))
                .collect();
            writer.write_f32(MASK_KEY, done * px, &masks)?;
        }
        done += k;
        progress(done);
    }
    writer.finish()?;
    Ok(CrfDatasetSummary {
        images: n,
        width: w,
        height: h,
    })
}

/// Extracts boxes from every mask of `masks`: float32 or uint8, (N, 1, H, W) or (N, H, W). Float masks are
/// binarised at `> 0.5·max` as the official `_extract_box`; uint8 masks likewise on their values.
/// Returns, per image, normalised [x1, y1, x2, y2] boxes in OpenCV contour order.
pub fn boxes_dataset(
    masks: &TensorRef,
    opts: &BoxOptions,
    chunk: usize,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<Vec<[f64; 4]>>, PostprocessError> {
    let mut r = SafetensorsReader::open(&masks.path)?;
    let s = r.expect(
        &masks.key,
        &[Dtype::F32, Dtype::U8],
        |s| s.len() == 3 || (s.len() == 4 && s[1] == 1),
        "(N, 1, H, W) or (N, H, W)",
    )?;
    let dtype = r.info(&masks.key)?.dtype;
    let (n, h, w) = nhw(masks, &s)?;
    opts.validate().map_err(PostprocessError::Invalid)?;
    let px = h * w;
    check_chunk(chunk, px as u64 * 8, "box extraction")?;
    let mut all = Vec::with_capacity(n);
    let mut done = 0;
    while done < n {
        let k = chunk.min(n - done);
        let boxes: Vec<Vec<[f64; 4]>> = match dtype {
            Dtype::F32 => {
                let m = r.read_f32(&masks.key, done * px, k * px)?;
                if let Some(i) = m.iter().position(|v| !v.is_finite()) {
                    return Err(PostprocessError::Invalid(format!(
                        "{masks}: image {} pixel {} holds {}; masks must be finite",
                        done + i / px,
                        i % px,
                        m[i]
                    )));
                }
                m.par_chunks(px)
                    .map(|m| extract_boxes_soft(m, w, h, opts))
                    .collect()
            }
            _ => {
                let m = r.read_u8(&masks.key, done * px, k * px)?;
                m.par_chunks(px)
                    .map(|m| extract_boxes(m, w, h, opts))
                    .collect()
            }
        };
        all.extend(boxes);
        done += k;
        progress(done);
    }
    Ok(all)
}
