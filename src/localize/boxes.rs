//! Box extraction as the official `utils/box_utils.py: extract_boxes/_extract_box`; the box-file text format
//! of `save_boxes/load_boxes` is [`crate::data::formats::box_file`], re-exported here.
//!
//! `_extract_box`: binarise at `mask > 0.5·max(mask)`, `cv2.findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)`,
//! `cv2.boundingRect` of every contour, keep `w·h > min_obj_scale·H·W`. `extract_boxes`: xywh → xyxy
//! (`x2 = x + w`), expand each side by `margin·w` / `margin·h`, clip to the image and divide by its size,
//! in float64 as Python does.
//!
//! Quirk reproduced by default ([`BoxOptions::include_holes`]): RETR_TREE also returns hole borders, so a
//! background hole larger than the minimum area becomes an "object" box. Setting it to false keeps outer
//! borders only (objects inside holes are still kept).
//! Unlike the official code, the image size comes from the mask (the official passes `image_size=224`).
use crate::imgops::contours::{bounding_rect, find_contours, Rect};

/// The box-file text format lives in the data layer (training reads it for OA-Crop); re-exported here
/// beside the extraction that produces the boxes.
pub use crate::data::formats::box_file::{
    format_box_line, parse_box_file, read_box_file, write_box_file, BoxEntries,
};

/// How [`extract_boxes`] filters and expands.
#[derive(Debug, Clone, PartialEq)]
pub struct BoxOptions {
    /// Boxes must cover more than this fraction of H·W (`min_obj_scale`, official 0.01).
    pub min_area_frac: f64,
    /// Each side grows by this fraction of the box width/height (`--box_margin`, official 0.2).
    pub margin: f64,
    /// Hole borders become boxes too (RETR_TREE, the official behaviour).
    pub include_holes: bool,
    /// Keep only the largest box (`largest_only`; parsed but unused by the official CLI).
    pub largest_only: bool,
}

impl Default for BoxOptions {
    fn default() -> Self {
        Self {
            min_area_frac: 0.01,
            margin: 0.2,
            include_holes: true,
            largest_only: false,
        }
    }
}

impl BoxOptions {
    /// Refuses a margin that is negative or not finite (it would invert or poison the boxes) and a
    /// minimum area outside [0, 1].
    pub fn validate(&self) -> Result<(), String> {
        if !(self.margin.is_finite() && self.margin >= 0.0) {
            return Err(format!(
                "box margin (--margin) must be a finite number ≥ 0, got {}",
                self.margin
            ));
        }
        if !(0.0..=1.0).contains(&self.min_area_frac) {
            return Err(format!(
                "minimum box area (--min-area) must be a fraction of the image in [0, 1], got {}",
                self.min_area_frac
            ));
        }
        Ok(())
    }

    /// With the hole-box quirk fixed.
    pub fn fixed(self) -> Self {
        Self {
            include_holes: false,
            ..self
        }
    }
}

/// `_extract_box` on a binarised mask (non-zero = foreground): OpenCV xywh pixel boxes in contour order.
///
/// # Panics
/// If `fg.len() != width * height`.
pub fn raw_boxes_binary(fg: &[u8], width: usize, height: usize, opts: &BoxOptions) -> Vec<Rect> {
    assert_eq!(
        fg.len(),
        width * height,
        "extract_boxes: mask has {} values, expected {width}×{height}",
        fg.len()
    );
    let min_obj_size = (height * width) as f64 * opts.min_area_frac;
    find_contours(fg, width, height)
        .into_iter()
        .filter(|c| opts.include_holes || !c.is_hole)
        .map(|c| bounding_rect(&c.points))
        .filter(|r| (r.w as f64) * (r.h as f64) > min_obj_size)
        .collect()
}

/// `_extract_box` on a uint8 mask: foreground is `mask > 0.5·max(mask)`.
pub fn raw_boxes(mask: &[u8], width: usize, height: usize, opts: &BoxOptions) -> Vec<Rect> {
    let thr = 0.5f32 * mask.iter().copied().max().unwrap_or(0) as f32;
    let fg: Vec<u8> = mask.iter().map(|&v| (v as f32 > thr) as u8).collect();
    raw_boxes_binary(&fg, width, height, opts)
}

/// `_extract_box` on a soft float mask: foreground is `mask > 0.5·max(mask)` in float32.
pub fn raw_boxes_soft(mask: &[f32], width: usize, height: usize, opts: &BoxOptions) -> Vec<Rect> {
    let thr = 0.5f32 * mask.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let fg: Vec<u8> = mask.iter().map(|&v| (v > thr) as u8).collect();
    raw_boxes_binary(&fg, width, height, opts)
}

/// `xywh_to_xyxy` + `expand_box`: normalised [x1, y1, x2, y2] in float64.
pub fn expand_box(r: &Rect, width: usize, height: usize, margin: f64) -> [f64; 4] {
    let (x1, y1, w, h) = (r.x as f64, r.y as f64, r.w as f64, r.h as f64);
    let (x2, y2) = (x1 + w, y1 + h);
    let (fw, fh) = (width as f64, height as f64);
    // Python's max(0, v) / min(W, v): the int bound when it wins, which is the same number.
    [
        (x1 - w * margin).max(0.0) / fw,
        (y1 - h * margin).max(0.0) / fh,
        (x2 + w * margin).min(fw) / fw,
        (y2 + h * margin).min(fh) / fh,
    ]
}

fn finish(mut rects: Vec<Rect>, width: usize, height: usize, opts: &BoxOptions) -> Vec<[f64; 4]> {
    if opts.largest_only && !rects.is_empty() {
        // np.argmax: the first maximum
        let best = (1..rects.len()).fold(0, |b, i| {
            if rects[i].w * rects[i].h > rects[b].w * rects[b].h {
                i
            } else {
                b
            }
        });
        rects = vec![rects[best]];
    }
    rects
        .iter()
        .map(|r| expand_box(r, width, height, opts.margin))
        .collect()
}

/// The official `extract_boxes` for one mask (row-major, H·W, uint8; a {0, 1} mask from `clean_mask`):
/// normalised xyxy boxes in OpenCV contour order.
pub fn extract_boxes(mask: &[u8], width: usize, height: usize, opts: &BoxOptions) -> Vec<[f64; 4]> {
    finish(raw_boxes(mask, width, height, opts), width, height, opts)
}

/// [`extract_boxes`] on a soft float mask.
pub fn extract_boxes_soft(
    mask: &[f32],
    width: usize,
    height: usize,
    opts: &BoxOptions,
) -> Vec<[f64; 4]> {
    finish(
        raw_boxes_soft(mask, width, height, opts),
        width,
        height,
        opts,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_and_clip_like_python() {
        let r = Rect {
            x: 0,
            y: 10,
            w: 50,
            h: 20,
        };
        let b = expand_box(&r, 100, 40, 0.2);
        assert_eq!(b, [0.0, 6.0 / 40.0, 60.0 / 100.0, 34.0 / 40.0]);
    }

    #[test]
    fn holes_become_boxes_unless_fixed() {
        // 10×10 ring with a 4×4 hole: hole border box is 6×6 > 1.
        let (w, h) = (10, 10);
        let mut m = vec![0u8; w * h];
        for y in 1..9 {
            for x in 1..9 {
                m[y * w + x] = !((3..7).contains(&x) && (3..7).contains(&y)) as u8;
            }
        }
        let opts = BoxOptions {
            min_area_frac: 0.01,
            margin: 0.0,
            ..Default::default()
        };
        assert_eq!(raw_boxes(&m, w, h, &opts).len(), 2);
        assert_eq!(
            raw_boxes(&m, w, h, &opts.clone().fixed()),
            vec![Rect {
                x: 1,
                y: 1,
                w: 8,
                h: 8
            }]
        );
        assert!(raw_boxes(&vec![0u8; w * h], w, h, &opts).is_empty());
    }
}
