//! COCO run-length encoded masks, a line-by-line port of pycocotools' `maskApi.c` (rleEncode, rleDecode,
//! rleMerge, rleArea, rleToBbox, rleFrPoly, rleToString, rleFrString), so masks, areas, boxes and the
//! compressed strings are bit-identical to pycocotools'.
//!
//! Masks are column-major (Fortran order) as in pycocotools: pixel (x, y) is at `x * h + y`. The
//! `*_row_major` helpers convert for image code.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rle {
    pub h: u32,
    pub w: u32,
    /// Alternating run lengths, starting with a run of zeros (possibly of length 0).
    pub counts: Vec<u32>,
}

impl Rle {
    /// `rleEncode` of a column-major 0/1 mask.
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

    /// `rleDecode`: column-major 0/1 mask.
    pub fn decode(&self) -> Vec<u8> {
        let a = (self.h as usize) * (self.w as usize);
        let mut m = Vec::with_capacity(a);
        let mut v = 0u8;
        for &c in &self.counts {
            let take = (c as usize).min(a - m.len());
            m.extend(std::iter::repeat_n(v, take));
            v = 1 - v;
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

    /// `rleArea`.
    pub fn area(&self) -> u64 {
        self.counts
            .iter()
            .skip(1)
            .step_by(2)
            .map(|&c| c as u64)
            .sum()
    }

    /// `rleToBbox`: `[x, y, w, h]`.
    pub fn to_bbox(&self) -> [f64; 4] {
        let (h, w) = (self.h, self.w);
        let m = (self.counts.len() / 2) * 2;
        if m == 0 || h == 0 {
            return [0.0; 4];
        }
        let (mut xs, mut ys, mut xe, mut ye) = (w, h, 0u32, 0u32);
        let mut cc = 0u32;
        let mut xp = 0u32;
        for j in 0..m {
            cc = cc.wrapping_add(self.counts[j]);
            let t = cc.wrapping_sub((j % 2) as u32);
            let y = t % h;
            let x = (t - y) / h;
            if j % 2 == 0 {
                xp = x;
            } else if xp < x {
                ys = 0;
                ye = h - 1;
            }
            xs = xs.min(x);
            xe = xe.max(x);
            ys = ys.min(y);
            ye = ye.max(y);
        }
        [
            xs as f64,
            ys as f64,
            (xe - xs + 1) as f64,
            (ye - ys + 1) as f64,
        ]
    }

    /// `rleMerge`: union (or intersection) of masks of the same size.
    pub fn merge(rles: &[Rle], intersect: bool) -> Rle {
        let Some(first) = rles.first() else {
            return Rle {
                h: 0,
                w: 0,
                counts: vec![],
            };
        };
        if rles.len() == 1 {
            return first.clone();
        }
        let (h, w) = (first.h, first.w);
        let mut cnts: Vec<u32> = first.counts.clone();
        for b in &rles[1..] {
            if b.h != h || b.w != w {
                return Rle {
                    h: 0,
                    w: 0,
                    counts: vec![],
                };
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
                cc += c;
                ct = 0;
                ca -= c;
                if ca == 0 && ia < a.len() {
                    ca = a[ia];
                    ia += 1;
                    va = !va;
                }
                ct += ca;
                cb -= c;
                if cb == 0 && ib < b.counts.len() {
                    cb = b.counts[ib];
                    ib += 1;
                    vb = !vb;
                }
                ct += cb;
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

    /// `rleFrPoly`: rasterise one polygon `[x0, y0, x1, y1, ...]`.
    pub fn from_polygon(xy: &[f64], h: u32, w: u32) -> Rle {
        let k = xy.len() / 2;
        let scale = 5.0f64;
        let mut x: Vec<i32> = (0..k).map(|j| (scale * xy[2 * j] + 0.5) as i32).collect();
        let mut y: Vec<i32> = (0..k)
            .map(|j| (scale * xy[2 * j + 1] + 0.5) as i32)
            .collect();
        if k == 0 {
            return Rle {
                h,
                w,
                counts: vec![h * w],
            };
        }
        x.push(x[0]);
        y.push(y[0]);
        let mut u: Vec<i32> = Vec::new();
        let mut v: Vec<i32> = Vec::new();
        for j in 0..k {
            let (mut xs, mut xe, mut ys, mut ye) = (x[j], x[j + 1], y[j], y[j + 1]);
            let dx = (xe - xs).abs();
            let dy = (ys - ye).abs();
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
                    u.push(t + xs);
                    v.push((ys as f64 + s * t as f64 + 0.5) as i32);
                }
            } else {
                for d in 0..=dy {
                    let t = if flip { dy - d } else { d };
                    v.push(t + ys);
                    u.push((xs as f64 + s * t as f64 + 0.5) as i32);
                }
            }
        }
        // Points along the y-boundary, downsampled.
        let mut bx: Vec<i32> = Vec::new();
        let mut by: Vec<i32> = Vec::new();
        for j in 1..u.len() {
            if u[j] != u[j - 1] {
                let xd = if u[j] < u[j - 1] { u[j] } else { u[j] - 1 } as f64;
                let xd = (xd + 0.5) / scale - 0.5;
                if xd.floor() != xd || xd < 0.0 || xd > (w as f64 - 1.0) {
                    continue;
                }
                let yd = if v[j] < v[j - 1] { v[j] } else { v[j - 1] } as f64;
                let mut yd = (yd + 0.5) / scale - 0.5;
                if yd < 0.0 {
                    yd = 0.0;
                } else if yd > h as f64 {
                    yd = h as f64;
                }
                yd = yd.ceil();
                bx.push(xd as i32);
                by.push(yd as i32);
            }
        }
        let mut a: Vec<u32> = bx
            .iter()
            .zip(&by)
            .map(|(&xx, &yy)| (xx * h as i32 + yy) as u32)
            .collect();
        a.push(h * w);
        a.sort_unstable();
        let mut p = 0u32;
        for e in a.iter_mut() {
            let t = *e;
            *e -= p;
            p = t;
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
                    let last = b.len() - 1;
                    b[last] += a[j];
                    j += 1;
                }
            }
        }
        Rle { h, w, counts: b }
    }

    /// pycocotools' `annToRLE` for polygons: rasterise each, then merge (union).
    pub fn from_polygons(polys: &[Vec<f64>], h: u32, w: u32) -> Rle {
        let rles: Vec<Rle> = polys.iter().map(|p| Rle::from_polygon(p, h, w)).collect();
        Rle::merge(&rles, false)
    }

    /// `rleToString`: the compressed LEB128-like ASCII form used in COCO JSON.
    pub fn to_compressed(&self) -> String {
        let mut s = Vec::new();
        for i in 0..self.counts.len() {
            let mut x = self.counts[i] as i64;
            if i > 2 {
                x -= self.counts[i - 2] as i64;
            }
            let mut more = true;
            while more {
                let mut c = (x & 0x1f) as u8;
                x >>= 5;
                more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
                if more {
                    c |= 0x20;
                }
                s.push(c + 48);
            }
        }
        String::from_utf8(s).unwrap_or_default()
    }

    /// `rleFrString`. Returns None for malformed input.
    pub fn from_compressed(s: &str, h: u32, w: u32) -> Option<Rle> {
        let b = s.as_bytes();
        let mut counts: Vec<u32> = Vec::new();
        let mut p = 0;
        while p < b.len() {
            let mut x: i64 = 0;
            let mut k = 0;
            let mut more = true;
            while more {
                let c = (*b.get(p)? as i64) - 48;
                if !(0..64).contains(&c) || k > 12 {
                    return None;
                }
                x |= (c & 0x1f) << (5 * k);
                more = c & 0x20 != 0;
                p += 1;
                k += 1;
                if !more && (c & 0x10) != 0 {
                    x |= -1i64 << (5 * k);
                }
            }
            let m = counts.len();
            if m > 2 {
                x += counts[m - 2] as i64;
            }
            counts.push(u32::try_from(x).ok()?);
        }
        Some(Rle { h, w, counts })
    }
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
    fn merge_is_union() {
        let a = Rle::encode_row_major(&[1, 0, 0, 0], 2, 2);
        let b = Rle::encode_row_major(&[0, 0, 0, 1], 2, 2);
        let u = Rle::merge(&[a.clone(), b.clone()], false);
        assert_eq!(u.decode_row_major(), vec![1, 0, 0, 1]);
        assert_eq!(Rle::merge(&[a, b], true).area(), 0);
    }
}
