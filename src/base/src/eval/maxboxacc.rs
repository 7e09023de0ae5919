//! MaxBoxAcc and MaxBoxAccV2 exactly as clovaai/wsolevaluation (`BoxEvaluator`, commit 96f4b88).
//!
//! Pipeline per image: the raw score map is resized to 224×224 with OpenCV bicubic
//! ([`crate::imgops::resize::resize_cubic_f64`]), min–max normalised (`normalize_scoremap`: NaN or a
//! constant map gives all zeros), and cast to `uint8(trunc(255·s))`. For each CAM threshold
//! `τ_i = i·Δ` the foreground is `img8 > int(τ_i·max(img8))`; boxes come from the bounding rectangles
//! of **all** `findContours(RETR_TREE)` borders (holes included) for V2, or of the largest
//! `contourArea` contour for v1, stored as `[x, y, min(x+w, W−1), min(y+h, H−1)]` (an exclusive end
//! used as inclusive, which wsolevaluation does). No contour gives the single box `[0,0,0,0]`. IoU
//! uses the +1 pixel convention; an image is correct at `τ_i` for δ when its best IoU over
//! (predicted, GT) pairs is ≥ δ/100. MaxBoxAcc(δ) = max over τ of 100·correct/N; V2 is the mean over
//! δ ∈ {30, 50, 70}.
//!
//! Speed: only 256 distinct integer cuts exist. For V2 the boxes of every cut are obtained from two
//! union–find sweeps over the pixels sorted by value (foreground 8-connected components grow as the cut
//! falls; 4-connected background components grow as it rises, and an enclosed one is a hole whose
//! border box is the hole box plus one pixel), because the RETR_TREE borders are exactly the outer
//! borders of the 8-connected foreground components and the borders of the enclosed 4-connected
//! background components. A new pixel is attached to its first neighbour group's component directly
//! (one find, a box test only when it extends the extent), the other groups are unions; the buffers
//! are kept per thread and never cleared (whether a pixel is already in follows from its value). The
//! literal contour path ([`cut_flags_contours`]) is kept for v1 and as the cross-check in the tests.
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use super::error::{read_to_string, EvalError};
use crate::data::formats::npy::read_npy_2d;
use crate::imgops::contours::{bounding_rect, contour_area, find_contours};
use crate::imgops::resize::resize_cubic_f64;

/// wsolevaluation's `_RESIZE_LENGTH`.
pub const RESIZE_LENGTH: usize = 224;

/// A box `[x0, y0, x1, y1]` with inclusive corners (wsolevaluation convention).
pub type Box4 = [i32; 4];

/// Settings of `BoxEvaluator` (defaults = `config.py`: interval 0.001, δ ∈ {30, 50, 70}, all contours).
#[derive(Debug, Clone, PartialEq)]
pub struct MaxBoxAccConfig {
    /// `cam_curve_interval` Δ: thresholds are `np.arange(0, 1, Δ)`.
    pub cam_curve_interval: f64,
    /// IoU thresholds δ in percent.
    pub iou_thresholds: Vec<u32>,
    /// `multi_contour_eval`: true for MaxBoxAccV2 (all contours), false for the largest contour (v1).
    pub multi_contour_eval: bool,
}

impl Default for MaxBoxAccConfig {
    fn default() -> Self {
        MaxBoxAccConfig {
            cam_curve_interval: 0.001,
            iou_thresholds: vec![30, 50, 70],
            multi_contour_eval: true,
        }
    }
}

/// Finest `cam_curve_interval` accepted (10 000 thresholds). The 8-bit score map has only 256 distinct
/// cuts, so a finer step changes nothing but the length of the curves, which are held per image.
pub const MIN_INTERVAL: f64 = 1e-4;

impl MaxBoxAccConfig {
    /// Checks the settings before any map is read; `what` names them in errors.
    pub fn validate(&self) -> Result<(), EvalError> {
        let bad = |msg: String| Err(EvalError::invalid("MaxBoxAcc settings", msg));
        let d = self.cam_curve_interval;
        if !(MIN_INTERVAL..=1.0).contains(&d) {
            return bad(format!(
                "cam_curve_interval (--interval) = {d} must be in [{MIN_INTERVAL}, 1]: the 8-bit maps have \
                 only 256 distinct cuts, so a finer step only lengthens the curves (wsolevaluation uses 0.001)"
            ));
        }
        if self.iou_thresholds.is_empty()
            || self.iou_thresholds.len() > 8
            || self.iou_thresholds.iter().any(|&t| t > 100)
        {
            return bad(format!(
                "iou_thresholds {:?} must be 1 to 8 percentages in 0..=100",
                self.iou_thresholds
            ));
        }
        Ok(())
    }
}

/// `np.arange(0, 1, interval)`: `ceil(1/Δ)` values `i·Δ` (numpy fills `start + i·step`).
pub fn cam_thresholds(interval: f64) -> Vec<f64> {
    assert!(
        interval > 0.0 && interval <= 1.0,
        "cam_curve_interval must be in (0, 1]"
    );
    let n = (1.0 / interval).ceil() as usize;
    (0..n).map(|i| i as f64 * interval).collect()
}

/// wsolevaluation `resize_bbox`: each coordinate times `new/old` in f64, truncated.
/// `image_size` and `resize_size` are (width, height).
pub fn resize_bbox(b: Box4, image_size: (u32, u32), resize_size: (u32, u32)) -> Box4 {
    let (w, h) = (image_size.0 as f64, image_size.1 as f64);
    let (nw, nh) = (resize_size.0 as f64, resize_size.1 as f64);
    [
        (b[0] as f64 * nw / w) as i32,
        (b[1] as f64 * nh / h) as i32,
        (b[2] as f64 * nw / w) as i32,
        (b[3] as f64 * nh / h) as i32,
    ]
}

/// wsolevaluation `normalize_scoremap`: NaN anywhere or min == max gives zeros; else `(s−min)/max`.
pub fn normalize_scoremap(cam: &mut [f64]) {
    if cam.iter().any(|v| v.is_nan()) {
        cam.fill(0.0);
        return;
    }
    let min = cam.iter().copied().fold(f64::INFINITY, f64::min);
    let max = cam.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if min == max {
        cam.fill(0.0);
        return;
    }
    cam.iter_mut().for_each(|v| *v -= min);
    let max = cam.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    cam.iter_mut().for_each(|v| *v /= max);
}

/// `cv2.resize(cam, (224, 224), INTER_CUBIC)` then `normalize_scoremap`, as
/// `inference.CAMComputer.compute_and_evaluate_cams`.
pub fn prepare_scoremap(raw: &[f64], width: usize, height: usize) -> Vec<f64> {
    let mut cam = resize_cubic_f64(raw, width, height, RESIZE_LENGTH, RESIZE_LENGTH);
    normalize_scoremap(&mut cam);
    cam
}

/// `(scoremap * 255).astype(np.uint8)` for a map in [0, 1] (truncation).
pub fn scoremap_to_u8(cam: &[f64]) -> Vec<u8> {
    cam.iter().map(|&v| (v * 255.0) as u8).collect()
}

/// wsolevaluation `calculate_multiple_iou` for one pair (inclusive corners, +1 areas).
pub fn box_iou(a: Box4, b: Box4) -> f64 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0]) + 1).max(0) as i64;
    let ih = (a[3].min(b[3]) - a[1].max(b[1]) + 1).max(0) as i64;
    let inter = iw * ih;
    let area = |r: Box4| (r[2] - r[0] + 1) as i64 * (r[3] - r[1] + 1) as i64;
    let union = area(a) + area(b) - inter;
    if union <= 0 {
        0.0
    } else {
        inter as f64 / union as f64
    }
}

/// Per-δ verdict of one predicted box against an image's GT boxes, as a bit set over δ indices.
struct Judge<'a> {
    gt: &'a [Box4],
    gt_area: Vec<f64>,
    thresholds: Vec<f64>,
    /// Smallest threshold, reduced by a relative 1e-12 so the area bound below never rejects a box
    /// whose IoU could reach it.
    t_min: f64,
    /// Every box with `0 < area < small_below` is skipped against every GT (so scores no δ): the
    /// smallest `t_min·area(gt)`, or −∞ when the bound is off (δ = 0 or a GT of area ≤ 0).
    small_below: f64,
}

impl Judge<'_> {
    fn new<'a>(gt: &'a [Box4], iou_thresholds: &[u32]) -> Judge<'a> {
        assert!(iou_thresholds.len() <= 8, "at most 8 IoU thresholds");
        let thresholds: Vec<f64> = iou_thresholds.iter().map(|&d| d as f64 / 100.0).collect();
        let t_min = thresholds.iter().copied().fold(f64::INFINITY, f64::min) * (1.0 - 1e-12);
        let area = |r: &Box4| (r[2] - r[0] + 1) as f64 * (r[3] - r[1] + 1) as f64;
        let gt_area: Vec<f64> = gt.iter().map(area).collect();
        let small_below = if t_min > 0.0 && gt_area.iter().all(|&a| a > 0.0) {
            gt_area
                .iter()
                .map(|&a| t_min * a)
                .fold(f64::INFINITY, f64::min)
        } else {
            f64::NEG_INFINITY
        };
        Judge {
            gt,
            gt_area,
            thresholds,
            t_min,
            small_below,
        }
    }
    #[inline]
    fn bits(&self, b: Box4) -> u8 {
        // IoU <= min(area)/max(area): boxes far smaller or larger than every GT cannot pass any δ.
        let ab = (b[2] - b[0] + 1) as f64 * (b[3] - b[1] + 1) as f64;
        // ab < t_min·ag ≤ ag for every GT: the loop below would skip them all (no δ is 0 here).
        if ab > 0.0 && ab < self.small_below {
            return 0;
        }
        let mut best = f64::NEG_INFINITY;
        for (&g, &ag) in self.gt.iter().zip(&self.gt_area) {
            if self.t_min > 0.0 && ab > 0.0 && ag > 0.0 && ab.min(ag) < self.t_min * ab.max(ag) {
                continue;
            }
            best = best.max(box_iou(b, g));
        }
        let mut bits = 0u8;
        for (k, &t) in self.thresholds.iter().enumerate() {
            if best >= t {
                bits |= 1 << k;
            }
        }
        bits
    }
}

/// Converts extents of a border (inclusive min/max pixel) to wsolevaluation's box.
#[inline]
fn border_box(x0: i32, y0: i32, x1: i32, y1: i32, w: usize, h: usize) -> Box4 {
    [
        x0,
        y0,
        (x1 + 1).min(w as i32 - 1),
        (y1 + 1).min(h as i32 - 1),
    ]
}

/// For every integer cut c in 0..=255: bit k set iff the image is correct for δ_k when the foreground is
/// `img8 > c`, computed literally with [`find_contours`] (one call per cut).
pub fn cut_flags_contours(
    img8: &[u8],
    w: usize,
    h: usize,
    gt: &[Box4],
    iou_thresholds: &[u32],
    multi: bool,
) -> [u8; 256] {
    let judge = Judge::new(gt, iou_thresholds);
    let zero_bits = judge.bits([0, 0, 0, 0]);
    let mut flags = [zero_bits; 256];
    let max8 = img8.iter().copied().max().unwrap_or(0);
    let mut mask = vec![0u8; img8.len()];
    for c in 0..max8 {
        for (m, &v) in mask.iter_mut().zip(img8) {
            *m = (v > c) as u8;
        }
        let contours = find_contours(&mask, w, h);
        let mut bits = 0u8;
        if multi {
            for ct in &contours {
                let r = bounding_rect(&ct.points);
                bits |= judge.bits(border_box(r.x, r.y, r.x + r.w - 1, r.y + r.h - 1, w, h));
            }
        } else {
            // Python `max(contours, key=cv2.contourArea)`: the first maximum in OpenCV order.
            let mut best: Option<(f64, usize)> = None;
            for (i, ct) in contours.iter().enumerate() {
                let a = contour_area(&ct.points);
                if best.is_none_or(|(ba, _)| a > ba) {
                    best = Some((a, i));
                }
            }
            let (_, i) = best.expect("max8 > c, so there is a contour");
            let r = bounding_rect(&contours[i].points);
            bits = judge.bits(border_box(r.x, r.y, r.x + r.w - 1, r.y + r.h - 1, w, h));
        }
        flags[c as usize] = bits;
    }
    flags
}

/// Change of 4·(Euler number) of the 8-connected foreground when a pixel is set, indexed by which of
/// its 8 neighbours are foreground (bit i = neighbour i in the order W, E, N, S, NW, NE, SW, SE).
/// Gray's bit quads: 4·E = #Q1 − #Q3 − 2·#QD over all 2×2 quads.
fn euler_delta_table() -> &'static [i64; 256] {
    static TABLE: std::sync::OnceLock<[i64; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        // quad pattern value (bits: tl, tr, bl, br) -> contribution
        const QUAD: [i64; 16] = [0, 1, 1, 0, 1, 0, -2, -1, 1, -2, 0, -1, 0, -1, -1, 0];
        let mut t = [0i64; 256];
        for (mask, e) in t.iter_mut().enumerate() {
            // 3x3 grid g[dy][dx], centre = the new pixel
            let bit = |i: usize| (mask >> i) & 1;
            let g = [
                [bit(4), bit(2), bit(5)],
                [bit(0), 0, bit(1)],
                [bit(6), bit(3), bit(7)],
            ];
            let quad = |g: &[[usize; 3]; 3], y: usize, x: usize| {
                g[y][x] | g[y][x + 1] << 1 | g[y + 1][x] << 2 | g[y + 1][x + 1] << 3
            };
            let mut after = g;
            after[1][1] = 1;
            for (y, x) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                *e += QUAD[quad(&after, y, x)] - QUAD[quad(&g, y, x)];
            }
        }
        t
    })
}

/// For each set of foreground neighbours (bits as in [`euler_delta_table`]), one neighbour per group of
/// them that touch each other: two foreground pixels that touch are already in one component, so only
/// these few need a union. Around the pixel, ring-consecutive neighbours touch, and so do the edge
/// neighbours W–N, N–E, E–S and S–W (diagonally).
fn neighbour_groups_table() -> &'static [u8; 256] {
    static TABLE: std::sync::OnceLock<[u8; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        // Ring order W, NW, N, NE, E, SE, S, SW as bit indices.
        const RING: [usize; 8] = [0, 4, 2, 5, 1, 7, 3, 6];
        const EDGE_PAIRS: [(usize, usize); 4] = [(0, 2), (2, 1), (1, 3), (3, 0)];
        let mut t = [0u8; 256];
        for (mask, out) in t.iter_mut().enumerate() {
            let on = |i: usize| (mask >> i) & 1 == 1;
            let mut group: [usize; 8] = std::array::from_fn(|i| i);
            fn root(g: &mut [usize; 8], mut i: usize) -> usize {
                while g[i] != i {
                    i = g[i];
                }
                i
            }
            let pairs = (0..8)
                .map(|k| (RING[k], RING[(k + 1) % 8]))
                .chain(EDGE_PAIRS);
            for (a, b) in pairs {
                if on(a) && on(b) {
                    let (ra, rb) = (root(&mut group, a), root(&mut group, b));
                    group[ra.max(rb)] = ra.min(rb);
                }
            }
            for i in 0..8 {
                if on(i) && root(&mut group, i) == i {
                    *out |= 1 << i;
                }
            }
        }
        t
    })
}

/// Buffers of [`cut_flags_sweep`], kept per thread between maps. Nothing is cleared: a call reads only
/// the union–find entries of pixels it has already added (which pixels those are follows from the
/// padded value grid), so no per-map fill of the ~25 bytes per pixel is needed.
#[derive(Default)]
struct SweepBuffers {
    /// Values on the padded grid; the ring is −1 (never foreground, always background).
    value: Vec<i16>,
    /// Padded index and (x, y) of every pixel, bucketed by value in raster order.
    order: Vec<[u32; 3]>,
    parent: Vec<u32>,
    /// Component size at roots (union by size keeps finds short).
    size: Vec<u32>,
    ext: Vec<[i32; 4]>,
    /// δ bits of a root's box.
    bits: Vec<u8>,
}

thread_local! {
    static SWEEP_BUFFERS: std::cell::RefCell<SweepBuffers> = std::cell::RefCell::new(SweepBuffers::default());
}

/// Number of live components scoring each δ, so "any component scores δ_k" is `counts[k] > 0`.
#[derive(Default)]
struct Tally([u32; 8]);

impl Tally {
    #[inline]
    fn add(&mut self, bits: u8) {
        let mut b = bits;
        while b != 0 {
            self.0[b.trailing_zeros() as usize] += 1;
            b &= b - 1;
        }
    }
    #[inline]
    fn remove(&mut self, bits: u8) {
        let mut b = bits;
        while b != 0 {
            self.0[b.trailing_zeros() as usize] -= 1;
            b &= b - 1;
        }
    }
    fn any(&self) -> u8 {
        let mut out = 0u8;
        for (k, &c) in self.0.iter().enumerate() {
            if c > 0 {
                out |= 1 << k;
            }
        }
        out
    }
}

#[inline]
fn find(parent: &mut [u32], mut i: u32) -> u32 {
    while parent[i as usize] != i {
        let p = parent[i as usize];
        parent[i as usize] = parent[p as usize];
        i = p;
    }
    i
}

/// Same result as [`cut_flags_contours`] with `multi = true`, in O(pixels) for all cuts together.
pub fn cut_flags_sweep(
    img8: &[u8],
    w: usize,
    h: usize,
    gt: &[Box4],
    iou_thresholds: &[u32],
) -> [u8; 256] {
    SWEEP_BUFFERS.with(|b| sweep_with(&mut b.borrow_mut(), img8, w, h, gt, iou_thresholds))
}

fn sweep_with(
    buf: &mut SweepBuffers,
    img8: &[u8],
    w: usize,
    h: usize,
    gt: &[Box4],
    iou_thresholds: &[u32],
) -> [u8; 256] {
    assert_eq!(img8.len(), w * h);
    let judge = Judge::new(gt, iou_thresholds);
    let zero_bits = judge.bits([0, 0, 0, 0]);
    let pw = w + 2;
    let ph = h + 2;
    let n = pw * ph;
    assert!(
        n <= u32::MAX as usize,
        "cut_flags_sweep: a {w}x{h} map has too many pixels for u32 indices"
    );
    for v in [&mut buf.parent, &mut buf.size] {
        v.resize(n, 0);
    }
    buf.ext.resize(n, [0; 4]);
    buf.bits.resize(n, 0);
    buf.value.clear();
    buf.value.resize(n, -1);
    // Pixels bucketed by value (counting sort), in raster order within a value.
    let mut start = [0usize; 257];
    for &v in img8 {
        start[v as usize + 1] += 1;
    }
    for v in 0..256 {
        start[v + 1] += start[v];
    }
    let mut fill = start;
    buf.order.resize(img8.len(), [0; 3]);
    for y in 0..h {
        let row = &img8[y * w..(y + 1) * w];
        let vrow = &mut buf.value[(y + 1) * pw + 1..(y + 1) * pw + 1 + w];
        for (x, (&v, pv)) in row.iter().zip(vrow).enumerate() {
            *pv = v as i16;
            buf.order[fill[v as usize]] = [((y + 1) * pw + x + 1) as u32, x as u32, y as u32];
            fill[v as usize] += 1;
        }
    }
    let SweepBuffers {
        value,
        order,
        parent,
        size,
        ext,
        bits,
    } = buf;
    let value: &[i16] = value;

    // Foreground sweep: cut c from 254 down to 0 adds the pixels of value c + 1 (8-connected). A
    // neighbour is already in the foreground when its value is above c + 1, or equal to it and earlier
    // in raster order (W, N, NW, NE come before the pixel; E, S, SW, SE after it).
    let mut fg_bits = [0u8; 256];
    // Highest cut at which a hole exists (the background sweep can stop there).
    let mut last_hole_cut: Option<usize> = None;
    let mut fg_empty = [true; 256];
    {
        let mut tally = Tally::default();
        let nb: [isize; 8] = [
            -1,
            1,
            -(pw as isize),
            pw as isize,
            -(pw as isize) - 1,
            -(pw as isize) + 1,
            pw as isize - 1,
            pw as isize + 1,
        ];
        let mut any = false;
        // Holes are counted through the Euler number of the 8-connected foreground (Gray's bit quads:
        // 4·E = Q1 − Q3 − 2·QD, updated on the 4 quads a new pixel touches): holes = components − E.
        // The background sweep then stops at the highest cut that has a hole (often a low one).
        let euler = euler_delta_table();
        let groups = neighbour_groups_table();
        let (mut comps, mut euler4) = (0i64, 0i64);
        for c in (0..255usize).rev() {
            let level = (c + 1) as i16;
            for &[p, x, y] in &order[start[c + 1]..start[c + 2]] {
                any = true;
                let (x, y) = (x as i32, y as i32);
                let at = |d: isize| value[(p as isize + d) as usize];
                let mask = (at(nb[0]) >= level) as usize
                    | ((at(nb[1]) > level) as usize) << 1
                    | ((at(nb[2]) >= level) as usize) << 2
                    | ((at(nb[3]) > level) as usize) << 3
                    | ((at(nb[4]) >= level) as usize) << 4
                    | ((at(nb[5]) >= level) as usize) << 5
                    | ((at(nb[6]) > level) as usize) << 6
                    | ((at(nb[7]) > level) as usize) << 7;
                euler4 += euler[mask];
                let mut m = groups[mask];
                if m == 0 {
                    // A new component of one pixel.
                    parent[p as usize] = p;
                    size[p as usize] = 1;
                    comps += 1;
                    ext[p as usize] = [x, y, x, y];
                    let b = judge.bits(border_box(x, y, x, y, w, h));
                    bits[p as usize] = b;
                    tally.add(b);
                    continue;
                }
                // Joins the component of its first neighbour group; its box changes only when the pixel
                // lies outside the component's extent.
                let i = m.trailing_zeros() as usize;
                m &= m - 1;
                let mut ra = find(parent, (p as isize + nb[i]) as u32);
                parent[p as usize] = ra;
                size[ra as usize] += 1;
                let ea = ext[ra as usize];
                let e = [ea[0].min(x), ea[1].min(y), ea[2].max(x), ea[3].max(y)];
                if e != ea {
                    ext[ra as usize] = e;
                    tally.remove(bits[ra as usize]);
                    let nbits = judge.bits(border_box(e[0], e[1], e[2], e[3], w, h));
                    bits[ra as usize] = nbits;
                    tally.add(nbits);
                }
                while m != 0 {
                    let i = m.trailing_zeros() as usize;
                    m &= m - 1;
                    let q = (p as isize + nb[i]) as u32;
                    if parent[q as usize] == ra {
                        continue;
                    }
                    let rb = find(parent, q);
                    if ra == rb {
                        continue;
                    }
                    let (ea, eb) = (ext[ra as usize], ext[rb as usize]);
                    let e = [
                        ea[0].min(eb[0]),
                        ea[1].min(eb[1]),
                        ea[2].max(eb[2]),
                        ea[3].max(eb[3]),
                    ];
                    let (ba, bb) = (bits[ra as usize], bits[rb as usize]);
                    tally.remove(ba);
                    tally.remove(bb);
                    let (keep, gone) = if size[ra as usize] >= size[rb as usize] {
                        (ra, rb)
                    } else {
                        (rb, ra)
                    };
                    parent[gone as usize] = keep;
                    size[keep as usize] += size[gone as usize];
                    ext[keep as usize] = e;
                    let nbits = if e == ea {
                        ba
                    } else if e == eb {
                        bb
                    } else {
                        judge.bits(border_box(e[0], e[1], e[2], e[3], w, h))
                    };
                    bits[keep as usize] = nbits;
                    tally.add(nbits);
                    ra = keep;
                    comps -= 1;
                }
            }
            fg_empty[c] = !any;
            fg_bits[c] = tally.any();
            debug_assert_eq!(euler4 % 4, 0);
            if comps != euler4 / 4 && last_hole_cut.is_none() {
                last_hole_cut = Some(c);
            }
        }
    }

    // Background sweep: cut c from 0 up to 254 adds the pixels of value c (4-connected). The padding
    // ring is one component, rooted at index 0, outside the image; the other components are holes. A
    // neighbour is already background when its value is below c, or equal to it and earlier in raster
    // order (W, N).
    let mut hole_bits = [0u8; 256];
    if let Some(last) = last_hole_cut {
        let mut tally = Tally::default();
        const OUTSIDE: u32 = 0;
        for i in (0..pw).chain(n - pw..n) {
            parent[i] = OUTSIDE;
        }
        for y in 1..ph - 1 {
            parent[y * pw] = OUTSIDE;
            parent[y * pw + pw - 1] = OUTSIDE;
        }
        // Larger than any component, so the outside root stays a root.
        size[OUTSIDE as usize] = u32::MAX / 2;
        bits[OUTSIDE as usize] = 0;
        let nb: [isize; 4] = [-1, 1, -(pw as isize), pw as isize];
        for c in 0..=last {
            let level = c as i16;
            for &[p, x, y] in &order[start[c]..start[c + 1]] {
                let (x, y) = (x as i32, y as i32);
                let at = |d: isize| value[(p as isize + d) as usize];
                // W and N come earlier in raster order.
                let mask = (at(nb[0]) <= level) as u8
                    | ((at(nb[1]) < level) as u8) << 1
                    | ((at(nb[2]) <= level) as u8) << 2
                    | ((at(nb[3]) < level) as u8) << 3;
                if mask == 0 {
                    // A new component of one pixel.
                    parent[p as usize] = p;
                    size[p as usize] = 1;
                    ext[p as usize] = [x, y, x, y];
                    let b = judge.bits(border_box(x - 1, y - 1, x + 1, y + 1, w, h));
                    bits[p as usize] = b;
                    tally.add(b);
                    continue;
                }
                // Joins the component of its first background neighbour; a hole's box changes only when
                // the pixel lies outside the hole's extent.
                let mut m = mask;
                let i = m.trailing_zeros() as usize;
                m &= m - 1;
                let mut ra = find(parent, (p as isize + nb[i]) as u32);
                parent[p as usize] = ra;
                if ra != OUTSIDE {
                    size[ra as usize] += 1;
                    let ea = ext[ra as usize];
                    let e = [ea[0].min(x), ea[1].min(y), ea[2].max(x), ea[3].max(y)];
                    if e != ea {
                        ext[ra as usize] = e;
                        tally.remove(bits[ra as usize]);
                        let nbits =
                            judge.bits(border_box(e[0] - 1, e[1] - 1, e[2] + 1, e[3] + 1, w, h));
                        bits[ra as usize] = nbits;
                        tally.add(nbits);
                    }
                }
                while m != 0 {
                    let i = m.trailing_zeros() as usize;
                    m &= m - 1;
                    let q = (p as isize + nb[i]) as u32;
                    if parent[q as usize] == ra {
                        continue;
                    }
                    let rb = find(parent, q);
                    if ra == rb {
                        continue;
                    }
                    let (ba, bb) = (bits[ra as usize], bits[rb as usize]);
                    tally.remove(ba);
                    tally.remove(bb);
                    let (keep, gone) = if size[ra as usize] >= size[rb as usize] {
                        (ra, rb)
                    } else {
                        (rb, ra)
                    };
                    parent[gone as usize] = keep;
                    size[keep as usize] = size[keep as usize].saturating_add(size[gone as usize]);
                    ra = keep;
                    if keep == OUTSIDE {
                        bits[keep as usize] = 0;
                        continue;
                    }
                    let (ea, eb) = (ext[keep as usize], ext[gone as usize]);
                    let e = [
                        ea[0].min(eb[0]),
                        ea[1].min(eb[1]),
                        ea[2].max(eb[2]),
                        ea[3].max(eb[3]),
                    ];
                    ext[keep as usize] = e;
                    let nbits =
                        judge.bits(border_box(e[0] - 1, e[1] - 1, e[2] + 1, e[3] + 1, w, h));
                    bits[keep as usize] = nbits;
                    tally.add(nbits);
                }
            }
            hole_bits[c] = tally.any();
        }
    }

    let mut flags = [zero_bits; 256];
    for c in 0..255 {
        if !fg_empty[c] {
            flags[c] = fg_bits[c] | hole_bits[c];
        }
    }
    flags
}

/// `BoxEvaluator.accumulate` / `compute`: counts of correct images per δ and CAM threshold.
#[derive(Debug, Clone)]
pub struct BoxAccumulator {
    cfg: MaxBoxAccConfig,
    thresholds: Vec<f64>,
    /// `num_correct[k][i]` for δ_k and threshold index i.
    num_correct: Vec<Vec<u64>>,
    count: u64,
}

/// Final numbers of a MaxBoxAcc evaluation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MaxBoxAccResult {
    /// δ values in percent, in the order of the other per-δ fields.
    pub iou_thresholds: Vec<u32>,
    /// MaxBoxAcc(δ) in percent.
    pub max_box_acc: Vec<f64>,
    /// Mean over δ (MaxBoxAccV2 when `multi_contour_eval`).
    pub mean: f64,
    /// First arg-max CAM threshold index per δ.
    pub best_threshold_index: Vec<usize>,
    /// `num_correct[k][i]`: images correct at δ_k and CAM threshold i (wsolevaluation's curves).
    pub num_correct: Vec<Vec<u64>>,
    pub num_images: u64,
    pub multi_contour_eval: bool,
    pub cam_curve_interval: f64,
}

impl BoxAccumulator {
    pub fn new(cfg: MaxBoxAccConfig) -> Self {
        let thresholds = cam_thresholds(cfg.cam_curve_interval);
        let num_correct = vec![vec![0; thresholds.len()]; cfg.iou_thresholds.len()];
        BoxAccumulator {
            cfg,
            thresholds,
            num_correct,
            count: 0,
        }
    }

    /// Per-image verdicts for every CAM threshold (bit k = correct at δ_k) of an 8-bit map already at
    /// the evaluation resolution, GT boxes in the same pixel grid.
    pub fn image_verdicts(&self, img8: &[u8], w: usize, h: usize, gt: &[Box4]) -> Vec<u8> {
        let flags = if self.cfg.multi_contour_eval {
            cut_flags_sweep(img8, w, h, gt, &self.cfg.iou_thresholds)
        } else {
            cut_flags_contours(img8, w, h, gt, &self.cfg.iou_thresholds, false)
        };
        let max8 = img8.iter().copied().max().unwrap_or(0) as f64;
        self.thresholds
            .iter()
            .map(|&t| flags[((t * max8) as usize).min(255)])
            .collect()
    }

    /// Adds verdicts from [`Self::image_verdicts`].
    pub fn add_verdicts(&mut self, verdicts: &[u8]) {
        assert_eq!(verdicts.len(), self.thresholds.len());
        for (k, row) in self.num_correct.iter_mut().enumerate() {
            for (n, &v) in row.iter_mut().zip(verdicts) {
                *n += ((v >> k) & 1) as u64;
            }
        }
        self.count += 1;
    }

    /// Accumulates an 8-bit map (`uint8(255·s)`) at the evaluation resolution.
    pub fn accumulate_u8(&mut self, img8: &[u8], w: usize, h: usize, gt: &[Box4]) {
        let v = self.image_verdicts(img8, w, h, gt);
        self.add_verdicts(&v);
    }

    /// Accumulates a normalised score map in [0, 1] at the evaluation resolution.
    pub fn accumulate_scoremap(&mut self, cam: &[f64], w: usize, h: usize, gt: &[Box4]) {
        self.accumulate_u8(&scoremap_to_u8(cam), w, h, gt);
    }

    pub fn config(&self) -> &MaxBoxAccConfig {
        &self.cfg
    }

    /// `BoxEvaluator.compute`: `max_i num_correct·100/N` per δ, and their mean.
    pub fn compute(&self) -> MaxBoxAccResult {
        let n = self.count as f64;
        let mut max_box_acc = Vec::new();
        let mut best = Vec::new();
        for row in &self.num_correct {
            let (mut bi, mut bv) = (0usize, f64::NEG_INFINITY);
            for (i, &c) in row.iter().enumerate() {
                let acc = c as f64 * 100.0 / n;
                if acc > bv {
                    bv = acc;
                    bi = i;
                }
            }
            max_box_acc.push(bv);
            best.push(bi);
        }
        let mean = max_box_acc.iter().sum::<f64>() / max_box_acc.len() as f64;
        MaxBoxAccResult {
            iou_thresholds: self.cfg.iou_thresholds.clone(),
            max_box_acc,
            mean,
            best_threshold_index: best,
            num_correct: self.num_correct.clone(),
            num_images: self.count,
            multi_contour_eval: self.cfg.multi_contour_eval,
            cam_curve_interval: self.cfg.cam_curve_interval,
        }
    }
}

/// wsolevaluation metadata (`metadata/<DATASET>/<split>/`): ids in evaluation order, sizes, GT boxes.
#[derive(Debug, Clone)]
pub struct WsolMetadata {
    pub image_ids: Vec<String>,
    /// (width, height) of the original image, per id.
    pub image_sizes: std::collections::HashMap<String, (u32, u32)>,
    /// GT boxes in original-image pixels, per id, in file order.
    pub boxes: std::collections::HashMap<String, Vec<Box4>>,
}

fn read_lines(path: &Path) -> Result<Vec<(usize, String)>, EvalError> {
    Ok(read_to_string(path)?
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r').to_string()))
        .filter(|(_, l)| !l.is_empty())
        .collect())
}

/// Reads `image_ids.txt`, `image_sizes.txt` and `localization.txt` (comma separated, no header).
pub fn read_wsol_metadata(dir: &Path) -> Result<WsolMetadata, EvalError> {
    let ids_path = dir.join("image_ids.txt");
    let image_ids: Vec<String> = read_lines(&ids_path)?.into_iter().map(|(_, l)| l).collect();
    let sizes_path = dir.join("image_sizes.txt");
    let mut image_sizes = std::collections::HashMap::new();
    for (n, l) in read_lines(&sizes_path)? {
        let f: Vec<&str> = l.split(',').collect();
        let parse = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| EvalError::line(&sizes_path, n, format!("bad size '{s}'")))
        };
        if f.len() != 3 {
            return Err(EvalError::line(
                &sizes_path,
                n,
                "expected <image_id>,<width>,<height>",
            ));
        }
        let (w, h) = (parse(f[1])?, parse(f[2])?);
        if w == 0 || h == 0 {
            return Err(EvalError::line(
                &sizes_path,
                n,
                format!("image size {w}x{h} is empty: width and height must be at least 1"),
            ));
        }
        image_sizes.insert(f[0].to_string(), (w, h));
    }
    let loc_path = dir.join("localization.txt");
    let mut boxes: std::collections::HashMap<String, Vec<Box4>> = std::collections::HashMap::new();
    for (n, l) in read_lines(&loc_path)? {
        let f: Vec<&str> = l.split(',').collect();
        if f.len() != 5 {
            return Err(EvalError::line(
                &loc_path,
                n,
                "expected <image_id>,<x0>,<y0>,<x1>,<y1>",
            ));
        }
        let mut b = [0i32; 4];
        for (k, s) in f[1..].iter().enumerate() {
            b[k] = s
                .trim()
                .parse()
                .map_err(|_| EvalError::line(&loc_path, n, format!("bad coordinate '{s}'")))?;
        }
        if b[2] < b[0] || b[3] < b[1] {
            return Err(EvalError::line(
                &loc_path,
                n,
                format!(
                    "box [{}, {}, {}, {}] is inverted: needs x0 ≤ x1 and y0 ≤ y1 (corners are inclusive pixels)",
                    b[0], b[1], b[2], b[3]
                ),
            ));
        }
        boxes.entry(f[0].to_string()).or_default().push(b);
    }
    if image_ids.is_empty() {
        return Err(EvalError::format(
            &ids_path,
            "no image ids: list one id per line (an accuracy over no images is undefined)",
        ));
    }
    for id in &image_ids {
        if !image_sizes.contains_key(id) {
            return Err(EvalError::format(
                &sizes_path,
                format!("no size for image id '{id}'"),
            ));
        }
        if !boxes.contains_key(id) {
            return Err(EvalError::format(
                &loc_path,
                format!("no box for image id '{id}'"),
            ));
        }
    }
    Ok(WsolMetadata {
        image_ids,
        image_sizes,
        boxes,
    })
}

/// Score-map path of an id: `<root>/<image_id>.npy` (the id keeps its `.jpg`, as `CamDataset`).
pub fn scoremap_path(root: &Path, image_id: &str) -> PathBuf {
    root.join(format!("{image_id}.npy"))
}

/// Full wsolevaluation run over a metadata folder and a folder of raw `.npy` score maps (any size;
/// each is resized to 224 and normalised). Images are processed in parallel; counts are exact sums.
pub fn evaluate_wsol(
    metadata_dir: &Path,
    scoremap_dir: &Path,
    cfg: &MaxBoxAccConfig,
) -> Result<MaxBoxAccResult, EvalError> {
    cfg.validate()?;
    let meta = read_wsol_metadata(metadata_dir)?;
    let acc = BoxAccumulator::new(cfg.clone());
    let r = (RESIZE_LENGTH as u32, RESIZE_LENGTH as u32);
    let verdicts: Vec<(Vec<u8>, bool)> = meta
        .image_ids
        .par_iter()
        .map(|id| {
            let path = scoremap_path(scoremap_dir, id);
            let map = read_npy_2d(&path)?;
            if map.width == 0 || map.height == 0 {
                return Err(EvalError::format(
                    &path,
                    format!(
                        "score map of shape ({}, {}) is empty: it must have at least one pixel",
                        map.height, map.width
                    ),
                ));
            }
            let nonfinite = map.data.iter().any(|v| !v.is_finite());
            let cam = prepare_scoremap(&map.data, map.width, map.height);
            let size = meta.image_sizes[id];
            let gt: Vec<Box4> = meta.boxes[id]
                .iter()
                .map(|&b| resize_bbox(b, size, r))
                .collect();
            Ok((
                acc.image_verdicts(&scoremap_to_u8(&cam), RESIZE_LENGTH, RESIZE_LENGTH, &gt),
                nonfinite,
            ))
        })
        .collect::<Result<_, EvalError>>()?;
    // Kept as wsolevaluation scores them (a map with NaN becomes all zeros), but never silently.
    let bad: Vec<&str> = meta
        .image_ids
        .iter()
        .zip(&verdicts)
        .filter(|(_, (_, nonfinite))| *nonfinite)
        .map(|(id, _)| id.as_str())
        .collect();
    if !bad.is_empty() {
        tracing::warn!(
            "{} of {} score maps in {} hold NaN or infinite values (first: {}); they are scored as \
             wsolevaluation does (normalize_scoremap turns a map with NaN into zeros, i.e. no box), which is \
             probably not what you want: fix the maps",
            bad.len(),
            meta.image_ids.len(),
            scoremap_dir.display(),
            bad.iter().take(5).copied().collect::<Vec<_>>().join(", ")
        );
    }
    let mut acc = acc;
    for (v, _) in &verdicts {
        acc.add_verdicts(v);
    }
    Ok(acc.compute())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers_from_wsolevaluation_tests() {
        assert_eq!(resize_bbox([1, 2, 4, 3], (10, 20), (35, 10)), [3, 1, 14, 1]);
        assert!((box_iou([1, 2, 5, 6], [3, 1, 4, 5]) - 8.0 / 27.0).abs() < 1e-15);
        assert_eq!(box_iou([0, 0, 0, 0], [0, 0, 0, 0]), 1.0);
    }

    #[test]
    fn thresholds_are_numpy_arange() {
        let t = cam_thresholds(0.001);
        assert_eq!(t.len(), 1000);
        assert_eq!(t[999], 999.0 * 0.001);
        assert_eq!(cam_thresholds(0.01).len(), 100);
        // the spec's check: floor(i*0.001*255) == i*255/1000 floored, for every i.
        for (i, &x) in t.iter().enumerate() {
            assert_eq!((x * 255.0) as usize, i * 255 / 1000);
        }
    }

    #[test]
    fn normalize_handles_constant_and_nan() {
        let mut a = vec![2.0, 2.0];
        normalize_scoremap(&mut a);
        assert_eq!(a, vec![0.0, 0.0]);
        let mut a = vec![1.0, f64::NAN, 3.0];
        normalize_scoremap(&mut a);
        assert_eq!(a, vec![0.0, 0.0, 0.0]);
        let mut a = vec![1.0, 2.0, 3.0];
        normalize_scoremap(&mut a);
        assert_eq!(a, vec![0.0, 0.5, 1.0]);
    }

    #[test]
    fn unimodal_and_multimodal_boxes_of_evaluation_test() {
        // wsolevaluation evaluation_test.py (compute_bboxes_from_scoremaps_{unimodal,multimodal}, τ =
        // np.arange(0, 1, 0.2), first box per τ). Each expected box is checked as a GT at δ = 100%.
        let unimodal = [
            [0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.4, 0.4, 0.4, 0.6],
            [0.0, 0.4, 1.0, 0.8, 0.6],
            [0.0, 0.4, 0.4, 0.4, 0.6],
        ];
        let multimodal = [
            [0.4, 0.0, 0.2, 0.2, 0.2],
            [0.4, 0.4, 0.0, 0.4, 0.0],
            [0.0, 0.0, 0.0, 0.4, 0.0],
            [1.0, 0.6, 0.8, 0.2, 0.2],
        ];
        let cases: [([[f64; 5]; 4], [Box4; 5]); 2] = [
            (
                unimodal,
                [
                    [1, 1, 4, 3],
                    [1, 1, 4, 3],
                    [2, 1, 4, 3],
                    [2, 2, 4, 3],
                    [2, 2, 3, 3],
                ],
            ),
            (
                multimodal,
                [
                    [0, 0, 4, 3],
                    [0, 0, 2, 2],
                    [0, 3, 3, 3],
                    [2, 3, 3, 3],
                    [0, 3, 1, 3],
                ],
            ),
        ];
        for (map, want) in cases {
            let img = scoremap_to_u8(&map.concat());
            for (i, b) in want.into_iter().enumerate() {
                let cut = (i as f64 * 0.2 * 255.0) as usize;
                let f = cut_flags_contours(&img, 5, 4, &[b], &[100], false);
                assert_eq!(f[cut], 1, "largest contour, τ index {i}");
                assert_eq!(
                    cut_flags_contours(&img, 5, 4, &[b], &[100], true)[cut],
                    1,
                    "all contours, τ index {i}"
                );
                assert_eq!(
                    cut_flags_sweep(&img, 5, 4, &[b], &[100])[cut],
                    1,
                    "sweep, τ index {i}"
                );
            }
        }
        // all-zero map: [0,0,0,0] at every τ
        let f = cut_flags_sweep(&[0u8; 9], 3, 3, &[[0, 0, 0, 0]], &[100]);
        assert!(f.iter().all(|&b| b == 1));
    }

    #[test]
    fn sweep_equals_literal_contours_on_random_maps() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for case in 0..60 {
            let (w, h) = (rng.random_range(1..30), rng.random_range(1..30));
            let levels = [2u8, 5, 16, 256u16 as u8][case % 4];
            let img: Vec<u8> = (0..w * h)
                .map(|_| {
                    if levels == 0 {
                        rng.random::<u8>()
                    } else {
                        rng.random_range(0..levels) * (255 / levels.max(2))
                    }
                })
                .collect();
            let gt: Vec<Box4> = (0..rng.random_range(1..4))
                .map(|_| {
                    let (x0, y0) = (rng.random_range(0..w as i32), rng.random_range(0..h as i32));
                    [
                        x0,
                        y0,
                        rng.random_range(x0..w as i32),
                        rng.random_range(y0..h as i32),
                    ]
                })
                .collect();
            let deltas = [10, 30, 50, 70, 90];
            assert_eq!(
                cut_flags_sweep(&img, w, h, &gt, &deltas),
                cut_flags_contours(&img, w, h, &gt, &deltas, true),
                "case {case}"
            );
        }
    }
}
