//! Boxes from a cleaned mask (stand-in: bounding boxes of 8-connected components, as outer contours,
//! kept when w·h > min_area_frac of the image, expanded by `margin` per side, normalised xyxy).
//! The faithful `extract_boxes` (all RETR_TREE contours) replaces it.
use super::mask_clean::components;

#[derive(Debug, Clone)]
pub struct BoxOptions {
    pub min_area_frac: f64,
    pub margin: f64,
}

impl Default for BoxOptions {
    fn default() -> Self {
        Self {
            min_area_frac: 0.01,
            margin: 0.2,
        }
    }
}

pub fn extract_boxes(mask: &[u8], width: usize, height: usize, opts: &BoxOptions) -> Vec<[f64; 4]> {
    let fg: Vec<bool> = mask.iter().map(|&m| m != 0).collect();
    let (labels, areas) = components(&fg, width, height, true);
    let mut rects = vec![[usize::MAX, usize::MAX, 0, 0]; areas.len()];
    for (p, &l) in labels.iter().enumerate() {
        if l > 0 {
            let r = &mut rects[l as usize - 1];
            let (x, y) = (p % width, p / width);
            *r = [r[0].min(x), r[1].min(y), r[2].max(x + 1), r[3].max(y + 1)];
        }
    }
    let (w, h) = (width as f64, height as f64);
    rects
        .iter()
        .filter(|r| ((r[2] - r[0]) * (r[3] - r[1])) as f64 > opts.min_area_frac * w * h)
        .map(|r| {
            let [x1, y1, x2, y2] = r.map(|v| v as f64);
            let (mx, my) = ((x2 - x1) * opts.margin, (y2 - y1) * opts.margin);
            [
                (x1 - mx).max(0.0) / w,
                (y1 - my).max(0.0) / h,
                (x2 + mx).min(w) / w,
                (y2 + my).min(h) / h,
            ]
        })
        .collect()
}
