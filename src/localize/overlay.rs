//! A grid of CAM overlays for a person to look at: for a few images of each of the first classes of a split,
//! the input image (resized as the CAM input) blended half-and-half with the CAM in the jet colour map, and
//! the outline of the cleaned mask in white. Rows are classes (lowest label first, at most
//! [`MAX_OVERLAY_CLASSES`]), columns the first `per_class` images of the class in index order; samples
//! without a label form one row. Read from what `localize dataset` wrote (`scoremaps/<id>.npy`,
//! `masks/<id>.png`), so it is a view of the outputs, not a second computation.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};

use super::dataset::{output_path, LocalizeError};
use crate::data::formats::npy::read_npy_2d;
use crate::data::loader::transform::resize_pil;
use crate::data::loader::Source;
use crate::util::output::write_atomic;

/// Rows of the grid at most (the split may have a thousand classes).
pub const MAX_OVERLAY_CLASSES: usize = 8;
/// Pixels between tiles.
const GAP: u32 = 4;
/// Background between tiles.
const BACKGROUND: Rgb<u8> = Rgb([32, 32, 32]);
/// Mask outline colour.
const OUTLINE: Rgb<u8> = Rgb([255, 255, 255]);

/// The file name under the output folder.
pub const OVERLAYS_FILE: &str = "overlays.png";

fn file_err(path: &Path, msg: impl std::fmt::Display) -> LocalizeError {
    LocalizeError::File {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

/// Indices of the tiles, one row per class: the first `per_class` samples of each of the lowest-labelled
/// [`MAX_OVERLAY_CLASSES`] classes.
pub fn overlay_selection(
    source: &dyn Source,
    per_class: usize,
) -> Result<Vec<Vec<usize>>, LocalizeError> {
    let mut rows: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for i in 0..source.len() {
        let class = source.meta(i)?.labels.first().copied().unwrap_or(-1);
        let row = rows.entry(class).or_default();
        if row.len() < per_class {
            row.push(i);
        }
    }
    Ok(rows.into_values().take(MAX_OVERLAY_CLASSES).collect())
}

/// The grid's size for `rows` × `cols` tiles of `side` pixels.
pub fn grid_size(rows: usize, cols: usize, side: u32) -> (u32, u32) {
    let n = |k: usize| GAP + k as u32 * (side + GAP);
    (n(cols), n(rows))
}

/// Writes `<out>/overlays.png` from the run's score maps and masks at `side` (the CAM input size); returns
/// its path. `per_class` = 0 writes nothing.
pub fn write_overlays(
    source: &dyn Source,
    out: &Path,
    side: u32,
    per_class: usize,
) -> Result<Option<PathBuf>, LocalizeError> {
    if per_class == 0 || source.is_empty() {
        return Ok(None);
    }
    let rows = overlay_selection(source, per_class)?;
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let (w, h) = grid_size(rows.len(), cols, side);
    let mut grid = RgbImage::from_pixel(w, h, BACKGROUND);
    for (r, row) in rows.iter().enumerate() {
        for (c, &i) in row.iter().enumerate() {
            let tile = overlay_tile(source, out, i, side)?;
            let (x0, y0) = (GAP + c as u32 * (side + GAP), GAP + r as u32 * (side + GAP));
            image::imageops::replace(&mut grid, &tile, x0 as i64, y0 as i64);
        }
    }
    let path = out.join(OVERLAYS_FILE);
    let mut bytes = std::io::Cursor::new(Vec::new());
    grid.write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| file_err(&path, format!("encoding the overlay grid: {e}")))?;
    write_atomic(&path, bytes.get_ref())?;
    Ok(Some(path))
}

/// Sample `i`'s image blended with its CAM, with its mask's outline.
fn overlay_tile(
    source: &dyn Source,
    out: &Path,
    i: usize,
    side: u32,
) -> Result<RgbImage, LocalizeError> {
    let id = source.meta(i)?.id;
    let s = side as usize;
    let npy = output_path(&out.join("scoremaps"), &id, "npy")
        .ok_or_else(|| LocalizeError::Invalid(format!("id {id:?} is not a relative file name")))?;
    let cam = read_npy_2d(&npy)?;
    if (cam.height, cam.width) != (s, s) {
        return Err(file_err(
            &npy,
            format!("is {}×{}, the run's size is {s}×{s}", cam.height, cam.width),
        ));
    }
    let mpath = output_path(&out.join("masks"), &id, "png").expect("checked above");
    let mask = image::open(&mpath)
        .map_err(|e| file_err(&mpath, e))?
        .to_luma8();
    if mask.dimensions() != (side, side) {
        return Err(file_err(&mpath, format!("is not {s}×{s}")));
    }
    let img = resize_pil(&source.image(i)?, side, side);
    let fg = |x: i64, y: i64| {
        x >= 0
            && y >= 0
            && x < s as i64
            && y < s as i64
            && mask.get_pixel(x as u32, y as u32)[0] > 127
    };
    Ok(RgbImage::from_fn(side, side, |x, y| {
        let (xi, yi) = (x as i64, y as i64);
        if fg(xi, yi) && !(fg(xi - 1, yi) && fg(xi + 1, yi) && fg(xi, yi - 1) && fg(xi, yi + 1)) {
            return OUTLINE;
        }
        let heat = jet(cam.data[y as usize * s + x as usize]);
        let p = img.get_pixel(x, y);
        Rgb(std::array::from_fn(|k| {
            (p[k] as u16 + heat[k] as u16).div_ceil(2) as u8
        }))
    }))
}

/// The jet colour map (blue → cyan → yellow → red) of a value in [0, 1] (clamped; NaN as 0).
pub fn jet(v: f64) -> [u8; 3] {
    let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
    let ch = |centre: f64| ((1.5 - (4.0 * v - centre).abs()).clamp(0.0, 1.0) * 255.0).round() as u8;
    [ch(3.0), ch(2.0), ch(1.0)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jet_runs_from_blue_to_red() {
        assert_eq!(jet(0.0), [0, 0, 128]);
        assert_eq!(jet(1.0), [128, 0, 0]);
        assert_eq!(jet(0.5), [128, 255, 128]);
        assert_eq!(jet(f64::NAN), jet(0.0));
    }

    #[test]
    fn the_grid_leaves_a_gap_around_every_tile() {
        assert_eq!(grid_size(2, 3, 10), (4 + 3 * 14, 4 + 2 * 14));
    }
}
