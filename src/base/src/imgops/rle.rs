//! COCO run-length encoded masks with the arithmetic of pycocotools' `common/maskApi.c` (rleEncode,
//! rleDecode, rleMerge, rleArea, rleToBbox, rleFrPoly, rleFrBbox, rleToString, rleFrString, bbIou,
//! rleIou), so masks, areas, boxes, IoUs and the compressed strings are bit-identical to pycocotools'.
//! Shared by `data` (COCO masks for the builders) and `eval` (COCO segm AP); spec metrics.md §3.
//!
//! Masks are column-major (Fortran order) as in pycocotools: pixel (x, y) is at `x * h + y`. The
//! `*_row_major` helpers convert for image code. Counts are C `uint`: sums wrap as in C.

/// An RLE mask: `h`×`w`, column-major run lengths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rle {
    pub h: u32,
    pub w: u32,
    /// Alternating run lengths, starting with a run of zeros (possibly of length 0).
    pub counts: Vec<u32>,
}

/// Why a compressed COCO string could not be read (`rleFrString`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RleStringError {
    #[error("truncated RLE string")]
    Truncated,
    #[error("invalid character {0:?} in RLE string")]
    InvalidChar(char),
    #[error("RLE count too long")]
    CountTooLong,
}

/// C `(int)` of a double on x86-64 (`cvttsd2si`): truncation toward zero; NaN and out-of-range give
/// `i32::MIN` where Rust's `as` would saturate.
#[inline]
fn c_int(v: f64) -> i32 {
    if v.is_nan() || v >= 2147483648.0 || v <= -2147483649.0 {
        i32::MIN
    } else {
        v as i32
    }
}

impl Rle {
    /// `rleEncode` of a column-major mask (a new run starts wherever the byte value changes).
    pub fn encode(mask_col_major: &[u8], h: u32, w: u32) -> Rle {
        let a = (h as usize) * (w as usize);
        let mut counts = Vec::new();
        let mut p = 0u8;
        let mut c = 0u32;
        for &v in &mask_col_major[..a] {
            if v != p {
                counts.push(c);
                c = 0;
                p = v;
            }
            c += 1;
        }
        counts.push(c);
        Rle { h, w, counts }
    }

    /// Encode a row-major mask (any non-zero = foreground).
    pub fn encode_row_major(mask: &[u8], h: u32, w: u32) -> Rle {
        let (hu, wu) = (h as usize, w as usize);
        let mut col = vec![0u8; hu * wu];
        for y in 0..hu {
            for x in 0..wu {
                col[x * hu + y] = (mask[y * wu + x] != 0) as u8;
            }
        }
        Rle::encode(&col, h, w)
    }

    /// `rleDecode`: column-major 0/1 mask of exactly `h * w` pixels. Where pycocotools fails (counts
    /// overrunning `h * w`) the overrun is dropped; a short RLE is padded with background.
    pub fn decode(&self) -> Vec<u8> {
        let a = (self.h as usize) * (self.w as usize);
        let mut m = Vec::with_capacity(a);
        let mut v = 0u8;
        for &c in &self.counts {
            let take = (c as usize).min(a - m.len());
            m.extend(std::iter::repeat_n(v, take));
            v ^= 1;
        }
        m.resize(a, 0);
        m
    }

    /// Row-major 0/1 mask.
    pub fn decode_row_major(&self) -> Vec<u8> {
        let (hu, wu) = (self.h as usize, self.w as usize);
        let col = self.decode();
        let mut out = vec![0u8; hu * wu];
        for x in 0..wu {
            for y in 0..hu {
                out[y * wu + x] = col[x * hu + y];
            }
        }
        out
    }

    /// `rleArea`: number of foreground pixels, a C `uint` (pycocotools' `area` is `uint32`).
    pub fn area(&self) -> u32 {
        self.counts
            .iter()
            .skip(1)
            .step_by(2)
            .fold(0u32, |a, &c| a.wrapping_add(c))
    }

    /// `rleToBbox` as rewritten in pycocotools 2.0.x (ppwwyyxx/cocoapi): `[x, y, w, h]` over the
    /// foreground runs only, so zero-length runs (e.g. leading zeros) add nothing. A mask with no
    /// foreground but two or more counts gives C's wrapped `uint` widths, as pycocotools does.
    pub fn to_bbox(&self) -> [f64; 4] {
        let (h, w) = (self.h, self.w);
        let m = (self.counts.len() / 2) * 2;
        if m == 0 || h == 0 {
            return [0.0; 4];
        }
        let (mut xs, mut ys, mut xe, mut ye) = (w, h, 0u32, 0u32);
        let mut cc = 0u32;
        for (j, &c) in self.counts[..m].iter().enumerate() {
            let start = cc;
            cc = cc.wrapping_add(c);
            if j % 2 == 0 || c == 0 {
                continue;
            }
            let end = cc.wrapping_sub(1);
            let (x_start, y_start) = (start / h, start % h);
            let (x_end, y_end) = (end / h, end % h);
            xs = xs.min(x_start);
            xe = xe.max(x_end);
            if x_start < x_end {
                // The run crosses a column boundary.
                ys = 0;
                ye = h - 1;
            } else {
                ys = ys.min(y_start);
                ye = ye.max(y_end);
            }
        }
        // `xe-xs+1` is computed in C `uint`, then stored as a double.
        [
            xs as f64,
            ys as f64,
            xe.wrapping_sub(xs).wrapping_add(1) as f64,
            ye.wrapping_sub(ys).wrapping_add(1) as f64,
        ]
    }

    /// `rleMerge`: union (or intersection with `intersect`) of masks of the same size. One input is
    /// copied unchanged; none, or a size mismatch, gives the empty 0×0 RLE.
    pub fn merge(rles: &[Rle], intersect: bool) -> Rle {
        let empty = Rle {
            h: 0,
            w: 0,
            counts: Vec::new(),
        };
        match rles.len() {
            0 => return empty,
            1 => return rles[0].clone(),
            _ => {}
        }
        let (h, w) = (rles[0].h, rles[0].w);
        let mut cnts = rles[0].counts.clone();
        for b in &rles[1..] {
            if b.h != h || b.w != w {
                return empty;
            }
            let a = std::mem::take(&mut cnts);
            let (mut ca, mut cb) = (
                a.first().copied().unwrap_or(0),
                b.counts.first().copied().unwrap_or(0),
            );
            let (mut v, mut va, mut vb) = (false, false, false);
            let (mut ia, mut ib) = (1usize, 1usize);
            let mut cc = 0u32;
            let mut ct = 1u32;
            while ct > 0 {
                let c = ca.min(cb);
                cc = cc.wrapping_add(c);
                ct = 0;
                ca -= c;
                if ca == 0 && ia < a.len() {
                    ca = a[ia];
                    ia += 1;
                    va = !va;
                }
                ct = ct.wrapping_add(ca);
                cb -= c;
                if cb == 0 && ib < b.counts.len() {
                    cb = b.counts[ib];
                    ib += 1;
                    vb = !vb;
                }
                ct = ct.wrapping_add(cb);
                let vp = v;
                v = if intersect { va && vb } else { va || vb };
                if v != vp || ct == 0 {
                    cnts.push(cc);
                    cc = 0;
                }
            }
        }
        Rle { h, w, counts: cnts }
    }

    /// `rleFrPoly` for one polygon `[x0, y0, x1, y1, ...]`: 5× upsampled boundary, then y-boundary
    /// points. An odd trailing value is ignored, as pycocotools' `int(len(p)/2)`.
    pub fn from_polygon(xy: &[f64], h: u32, w: u32) -> Rle {
        let k = xy.len() / 2;
        let scale = 5.0f64;
        let mut x: Vec<i32> = (0..k).map(|j| c_int(scale * xy[2 * j] + 0.5)).collect();
        let mut y: Vec<i32> = (0..k).map(|j| c_int(scale * xy[2 * j + 1] + 0.5)).collect();
        if k == 0 {
            // C reads x[0] of an empty array but never uses it: the result is one background run.
            return Rle {
                h,
                w,
                counts: vec![h.wrapping_mul(w)],
            };
        }
        x.push(x[0]);
        y.push(y[0]);
        let mut u: Vec<i32> = Vec::new();
        let mut v: Vec<i32> = Vec::new();
        for j in 0..k {
            let (mut xs, mut xe, mut ys, mut ye) = (x[j], x[j + 1], y[j], y[j + 1]);
            let dx = (xe as i64 - xs as i64).unsigned_abs() as i64;
            let dy = (ys as i64 - ye as i64).unsigned_abs() as i64;
            let flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
            if flip {
                std::mem::swap(&mut xs, &mut xe);
                std::mem::swap(&mut ys, &mut ye);
            }
            let s = if dx >= dy {
                (ye - ys) as f64 / dx as f64
            } else {
                (xe - xs) as f64 / dy as f64
            };
            if dx >= dy {
                for d in 0..=dx {
                    let t = if flip { dx - d } else { d };
                    u.push((t + xs as i64) as i32);
                    v.push(c_int(ys as f64 + s * t as f64 + 0.5));
                }
            } else {
                for d in 0..=dy {
                    let t = if flip { dy - d } else { d };
                    v.push((t + ys as i64) as i32);
                    u.push(c_int(xs as f64 + s * t as f64 + 0.5));
                }
            }
        }
        // Points along the y-boundary, downsampled.
        let mut a: Vec<u32> = Vec::new();
        let (hf, wf) = (h as f64, w as f64);
        for j in 1..u.len() {
            if u[j] == u[j - 1] {
                continue;
            }
            let mut xd = if u[j] < u[j - 1] { u[j] } else { u[j] - 1 } as f64;
            xd = (xd + 0.5) / scale - 0.5;
            if xd.floor() != xd || xd < 0.0 || xd > wf - 1.0 {
                continue;
            }
            let mut yd = if v[j] < v[j - 1] { v[j] } else { v[j - 1] } as f64;
            yd = (yd + 0.5) / scale - 0.5;
            if yd < 0.0 {
                yd = 0.0;
            } else if yd > hf {
                yd = hf;
            }
            yd = yd.ceil();
            a.push(((xd as i32).wrapping_mul(h as i32).wrapping_add(yd as i32)) as u32);
        }
        a.push(h.wrapping_mul(w));
        a.sort_unstable();
        let mut prev = 0u32;
        for e in a.iter_mut() {
            let t = *e;
            *e = e.wrapping_sub(prev);
            prev = t;
        }
        let mut b: Vec<u32> = Vec::with_capacity(a.len());
        let mut j = 0;
        b.push(a[j]);
        j += 1;
        while j < a.len() {
            if a[j] > 0 {
                b.push(a[j]);
                j += 1;
            } else {
                j += 1;
                if j < a.len() {
                    *b.last_mut().expect("b is not empty") += a[j];
                    j += 1;
                }
            }
        }
        Rle { h, w, counts: b }
    }

    /// pycocotools' `annToRLE` for polygons: rasterise each (`frPyObjects`), then merge (union).
    pub fn from_polygons(polys: &[Vec<f64>], h: u32, w: u32) -> Rle {
        let rles: Vec<Rle> = polys.iter().map(|p| Rle::from_polygon(p, h, w)).collect();
        Rle::merge(&rles, false)
    }

    /// `rleFrBbox`: a box `[x, y, w, h]` rasterised as the polygon of its corners.
    pub fn from_bbox(bb: [f64; 4], h: u32, w: u32) -> Rle {
        let (xs, ys) = (bb[0], bb[1]);
        let (xe, ye) = (xs + bb[2], ys + bb[3]);
        Rle::from_polygon(&[xs, ys, xs, ye, xe, ye, xe, ys], h, w)
    }

    /// `rleToString`: the compressed LEB128-like ASCII form used in COCO JSON (6 bits a character,
    /// characters 48..=111; each count after the second is stored as the difference to the one two
    /// before).
    pub fn to_compressed(&self) -> String {
        let mut out = String::with_capacity(self.counts.len() * 2);
        for (i, &c) in self.counts.iter().enumerate() {
            let mut x = c as i64;
            if i > 2 {
                x -= self.counts[i - 2] as i64;
            }
            loop {
                let mut c = (x & 0x1f) as u8;
                x >>= 5;
                let more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
                if more {
                    c |= 0x20;
                }
                out.push(char::from(c + 48));
                if !more {
                    break;
                }
            }
        }
        out
    }

    /// `rleFrString`: decodes the compressed COCO string. Counts are cast to `uint` as in C; input C
    /// would read out of bounds on (a character outside 48..=111, a truncated or over-long count) is
    /// an error.
    pub fn from_compressed(s: &str, h: u32, w: u32) -> Result<Rle, RleStringError> {
        let s = s.as_bytes();
        let mut counts: Vec<u32> = Vec::with_capacity(s.len());
        let mut p = 0usize;
        while p < s.len() {
            let mut x: i64 = 0;
            let mut k = 0u32;
            loop {
                let &ch = s.get(p).ok_or(RleStringError::Truncated)?;
                let c = ch as i64 - 48;
                if !(0..64).contains(&c) {
                    return Err(RleStringError::InvalidChar(ch as char));
                }
                if k > 12 {
                    return Err(RleStringError::CountTooLong);
                }
                x |= (c & 0x1f) << (5 * k);
                p += 1;
                k += 1;
                if c & 0x20 == 0 {
                    // Sign extension; past 64 bits there is nothing left to extend.
                    if c & 0x10 != 0 && 5 * k < 64 {
                        x |= -1i64 << (5 * k);
                    }
                    break;
                }
            }
            if counts.len() > 2 {
                x += counts[counts.len() - 2] as i64;
            }
            counts.push(x as u32);
        }
        Ok(Rle { h, w, counts })
    }
}

/// `bbIou` for one pair of `[x, y, w, h]` boxes (crowd: intersection over the detection's area).
#[inline]
pub fn bbox_iou(d: &[f64; 4], g: &[f64; 4], crowd: bool) -> f64 {
    let ga = g[2] * g[3];
    let da = d[2] * d[3];
    let w = (d[2] + d[0]).min(g[2] + g[0]) - d[0].max(g[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (d[3] + d[1]).min(g[3] + g[1]) - d[1].max(g[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let i = w * h;
    let u = if crowd { da } else { da + ga - i };
    i / u
}

/// `rleIou` for one pair, given their `rleToBbox` boxes. The C code computes the mask IoU only where
/// those boxes overlap; masks that overlap always have overlapping boxes, so only the size-mismatch
/// value (−1) needs them.
pub fn rle_iou(d: &Rle, g: &Rle, d_box: &[f64; 4], g_box: &[f64; 4], crowd: bool) -> f64 {
    if bbox_iou(d_box, g_box, crowd) <= 0.0 {
        return 0.0;
    }
    if d.h != g.h || d.w != g.w {
        return -1.0;
    }
    let (a, b) = (&d.counts, &g.counts);
    let (mut ca, mut cb) = (
        a.first().copied().unwrap_or(0),
        b.first().copied().unwrap_or(0),
    );
    let (mut va, mut vb) = (false, false);
    let (mut ka, mut kb) = (1usize, 1usize);
    let (mut i, mut u) = (0u32, 0u32);
    let mut ct = 1u32;
    while ct > 0 {
        let c = ca.min(cb);
        if va || vb {
            u = u.wrapping_add(c);
            if va && vb {
                i = i.wrapping_add(c);
            }
        }
        ct = 0;
        ca -= c;
        if ca == 0 && ka < a.len() {
            ca = a[ka];
            ka += 1;
            va = !va;
        }
        ct = ct.wrapping_add(ca);
        cb -= c;
        if cb == 0 && kb < b.len() {
            cb = b[kb];
            kb += 1;
            vb = !vb;
        }
        ct = ct.wrapping_add(cb);
    }
    if i == 0 {
        u = 1;
    } else if crowd {
        u = d.area();
    }
    i as f64 / u as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let (h, w) = (3u32, 4u32);
        #[rustfmt::skip]
        let row = [0,1,1,0,
                   0,1,1,0,
                   0,0,0,1u8];
        let r = Rle::encode_row_major(&row, h, w);
        // Column-major: col0 000, col1 110, col2 110, col3 001.
        assert_eq!(r.counts, vec![3, 2, 1, 2, 3, 1]);
        assert_eq!(r.decode_row_major(), row.to_vec());
        assert_eq!(r.area(), 5);
        assert_eq!(r.to_bbox(), [1.0, 0.0, 3.0, 3.0]);
        let s = r.to_compressed();
        assert_eq!(Rle::from_compressed(&s, h, w).unwrap(), r);
    }

    #[test]
    fn string_codec_round_trips() {
        for counts in [
            vec![0u32, 5, 3, 100000, 2, 7],
            vec![12],
            vec![3, 0, 0, 4, 1],
        ] {
            let r = Rle {
                h: 10,
                w: 10_100,
                counts,
            };
            let s = r.to_compressed();
            assert_eq!(Rle::from_compressed(&s, 10, 10_100).unwrap(), r);
        }
        assert_eq!(
            Rle::from_compressed("\u{1}", 1, 1),
            Err(RleStringError::InvalidChar('\u{1}'))
        );
        // '`' is 48 + 0x30: a continuation bit with nothing after it.
        assert_eq!(
            Rle::from_compressed("`", 1, 1),
            Err(RleStringError::Truncated)
        );
    }

    #[test]
    fn to_bbox_known_answers_of_pycocotools_tests() {
        // test_cases.py: toBbox of [[0,1],[1,1]] = [0,0,2,2]; a 10x10 mask with [2:4, 3:6] set =
        // [3,2,3,2].
        let m = [0u8, 1, 1, 1]; // column-major of [[0,1],[1,1]]
        assert_eq!(Rle::encode(&m, 2, 2).to_bbox(), [0.0, 0.0, 2.0, 2.0]);
        let mut d = vec![0u8; 100];
        for r in 2..4 {
            for c in 3..6 {
                d[c * 10 + r] = 1;
            }
        }
        let rle = Rle::encode(&d, 10, 10);
        assert_eq!(rle.to_bbox(), [3.0, 2.0, 3.0, 2.0]);
        assert_eq!(rle.area(), 6);
        assert_eq!(rle.decode(), d);
    }

    #[test]
    fn to_bbox_skips_zero_length_runs() {
        // pycocotools test_cases.py testZeroLeadingRLE: toBbox of an RLE with zero-length runs equals
        // toBbox of its re-encoding. Column-major 4x5: fg at pixels 0..3 and 9..11.
        let r = Rle {
            h: 4,
            w: 5,
            counts: vec![0, 0, 0, 3, 6, 2, 9],
        };
        let re = Rle::encode(&r.decode(), 4, 5);
        assert_eq!(re.counts, vec![0, 3, 6, 2, 9]);
        assert_eq!(r.to_bbox(), [0.0, 0.0, 3.0, 3.0]);
        assert_eq!(re.to_bbox(), r.to_bbox());
        // A zero-length run in the middle joins its neighbours.
        let r = Rle {
            h: 4,
            w: 5,
            counts: vec![5, 0, 0, 2, 0, 1, 12],
        };
        assert_eq!(r.to_bbox(), Rle::encode(&r.decode(), 4, 5).to_bbox());
        assert_eq!(r.to_bbox(), [1.0, 1.0, 1.0, 3.0]);
    }

    #[test]
    fn over_long_negative_count_does_not_overflow_the_shift() {
        // 12 continuation characters, then a last one with the sign bit: 13 groups, 65 bits.
        assert!(Rle::from_compressed("PPPPPPPPPPPP@", 1, 1).is_ok());
        assert_eq!(
            Rle::from_compressed("PPPPPPPPPPPPP@", 1, 1),
            Err(RleStringError::CountTooLong)
        );
    }

    #[test]
    fn merge_is_union() {
        let a = Rle::encode_row_major(&[1, 0, 0, 0], 2, 2);
        let b = Rle::encode_row_major(&[0, 0, 0, 1], 2, 2);
        let u = Rle::merge(&[a.clone(), b.clone()], false);
        assert_eq!(u.decode_row_major(), vec![1, 0, 0, 1]);
        assert_eq!(Rle::merge(&[a, b], true).area(), 0);
    }

    #[test]
    fn polygon_square_and_merge() {
        // pycocotools: frPyObjects([[1,1,1,4,4,4,4,1]], 6, 6) covers rows/cols 1..3 (area 9) — the
        // boundary rule takes pixels whose centres lie inside the 5x upsampled outline.
        let r = Rle::from_polygon(&[1.0, 1.0, 1.0, 4.0, 4.0, 4.0, 4.0, 1.0], 6, 6);
        assert_eq!(r.area(), 9);
        assert_eq!(r.to_bbox(), [1.0, 1.0, 3.0, 3.0]);
        let b = Rle::from_bbox([1.0, 1.0, 3.0, 3.0], 6, 6);
        assert_eq!(b, r);
        let other = Rle::from_bbox([3.0, 3.0, 2.0, 2.0], 6, 6);
        let u = Rle::merge(&[r.clone(), other.clone()], false);
        let i = Rle::merge(&[r.clone(), other.clone()], true);
        assert_eq!(u.area() + i.area(), r.area() + other.area());
        let (rb, ob) = (r.to_bbox(), other.to_bbox());
        assert!(
            (rle_iou(&r, &other, &rb, &ob, false) - i.area() as f64 / u.area() as f64).abs()
                < 1e-15
        );
        assert_eq!(
            rle_iou(&r, &other, &rb, &ob, true),
            i.area() as f64 / r.area() as f64
        );
    }

    #[test]
    fn bbox_iou_known_answers() {
        assert_eq!(
            bbox_iou(&[0.0, 0.0, 10.0, 10.0], &[5.0, 0.0, 10.0, 10.0], false),
            50.0 / 150.0
        );
        assert_eq!(
            bbox_iou(&[0.0, 0.0, 10.0, 10.0], &[10.0, 0.0, 10.0, 10.0], false),
            0.0
        );
        assert_eq!(
            bbox_iou(&[0.0, 0.0, 10.0, 10.0], &[5.0, 0.0, 100.0, 100.0], true),
            0.5
        );
    }
}
