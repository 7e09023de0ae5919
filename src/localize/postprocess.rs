//! Dataset-level post-processing: CRF (+ mask cleaning) and box extraction over safetensors files,
//! streamed in chunks of images (memory is O(chunk), not O(dataset)) and spread over all cores with rayon.
//! Results do not depend on the chunk size or the number of threads: every image is independent.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::boxes::{extract_boxes, extract_boxes_soft, BoxOptions};
use super::crf::{CrfError, OfficialCrf, OfficialCrfParams};
use super::mask_clean::{clean_mask, CleanOptions};
use super::tensor_stream::{Dtype, SafetensorsReader, SafetensorsWriter, TensorStreamError};

#[derive(Debug, thiserror::Error)]
pub enum PostprocessError {
    #[error(transparent)]
    Stream(#[from] TensorStreamError),
    #[error("{context}: {source}")]
    Crf { context: String, source: CrfError },
    #[error("{0}")]
    Mismatch(String),
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
        Dtype::U8,
        |s| s.len() == 4 && s[3] == 3,
        "(N, H, W, 3)",
    )?;
    let mut cam_r = SafetensorsReader::open(&cams.path)?;
    let cshape = cam_r.expect(
        &cams.key,
        Dtype::F32,
        |s| s.len() == 3 || (s.len() == 4 && s[1] == 1),
        "(N, 1, H, W) or (N, H, W)",
    )?;
    let (n, h, w) = (ishape[0], ishape[1], ishape[2]);
    let (cn, ch, cw) = (
        cshape[0],
        cshape[cshape.len() - 2],
        cshape[cshape.len() - 1],
    );
    if (cn, ch, cw) != (n, h, w) {
        return Err(PostprocessError::Mismatch(format!(
            "{images} is {n} images of {h}×{w} but {cams} is {cn} maps of {ch}×{cw}"
        )));
    }
    let crf = OfficialCrf::new(w, h, opts.params).map_err(|source| PostprocessError::Crf {
        context: format!("{images}"),
        source,
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
        ("clean".to_string(), format!("{:?}", opts.clean)),
    ]);
    let mut writer = SafetensorsWriter::create(out, &tensors, &meta)?;
    let px = h * w;
    let chunk = opts.chunk.max(1);
    let mut done = 0;
    while done < n {
        let k = chunk.min(n - done);
        let imgs = img_r.read_u8(&images.key, done * px * 3, k * px * 3)?;
        let maps = cam_r.read_f32(&cams.key, done * px, k * px)?;
        let results: Vec<(Vec<f32>, Option<Vec<u8>>)> = (0..k)
            .into_par_iter()
            .map(|i| {
                let q = crf
                    .run(
                        &imgs[i * px * 3..(i + 1) * px * 3],
                        &maps[i * px..(i + 1) * px],
                    )
                    .map_err(|source| PostprocessError::Crf {
                        context: format!("{images} image {}", done + i),
                        source,
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
    let info = r.info(&masks.key)?.clone();
    let ok_shape = info.shape.len() == 3 || (info.shape.len() == 4 && info.shape[1] == 1);
    let dtype = match info.dtype.as_str() {
        "F32" if ok_shape => Dtype::F32,
        "U8" if ok_shape => Dtype::U8,
        _ => {
            return Err(TensorStreamError::Layout {
                path: masks.path.clone(),
                key: masks.key.clone(),
                dtype: info.dtype,
                shape: info.shape,
                expected: "F32 or U8 (N, 1, H, W) or (N, H, W)".into(),
            }
            .into())
        }
    };
    let s = &info.shape;
    let (n, h, w) = (s[0], s[s.len() - 2], s[s.len() - 1]);
    let px = h * w;
    let chunk = chunk.max(1);
    let mut all = Vec::with_capacity(n);
    let mut done = 0;
    while done < n {
        let k = chunk.min(n - done);
        let boxes: Vec<Vec<[f64; 4]>> = match dtype {
            Dtype::F32 => {
                let m = r.read_f32(&masks.key, done * px, k * px)?;
                m.par_chunks(px)
                    .map(|m| extract_boxes_soft(m, w, h, opts))
                    .collect()
            }
            Dtype::U8 => {
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
