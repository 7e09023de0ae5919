//! The `segmentation` field of a COCO annotation and its one checked conversion to an RLE, shared by the
//! COCO builder (`data`) and COCO segm AP (`eval`): annotation files are untrusted input, so a polygon far
//! outside its image or RLE counts that do not cover the mask are errors, never an unbounded allocation
//! or a loop that does not end.
use serde::Deserialize;

use super::rle::Rle;

/// A `segmentation` field: polygons, or an RLE with compressed (string) or uncompressed counts.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Segmentation {
    Polygons(Vec<Vec<f64>>),
    Rle { size: [u32; 2], counts: RleCounts },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RleCounts {
    Compressed(String),
    Uncompressed(Vec<u32>),
}

/// The most boundary points (5× upsampled, as `rleFrPoly` walks them) one polygon may have. Rasterising
/// costs memory and time in proportion: a polygon in an image of `h × w` has at most (vertices + 1) ×
/// 5 × (h + w) of them; a few coordinates of 1e9 would otherwise ask for tens of GiB.
const MAX_POLYGON_POINTS: u64 = 1 << 25;

/// The boundary points `rleFrPoly` would walk for `xy`, computed without walking them.
fn polygon_points(xy: &[f64]) -> u64 {
    // `rleFrPoly`'s `(int)(5 * v + 0.5)`; values past `int` become INT_MIN, as C on x86 gives.
    let up = |v: f64| {
        let s = 5.0 * v + 0.5;
        if s.is_nan() || s >= 2147483648.0 || s <= -2147483649.0 {
            i32::MIN as i64
        } else {
            s as i32 as i64
        }
    };
    let k = xy.len() / 2;
    (0..k)
        .map(|j| {
            let n = (j + 1) % k;
            let dx = up(xy[2 * n]).abs_diff(up(xy[2 * j]));
            let dy = up(xy[2 * n + 1]).abs_diff(up(xy[2 * j + 1]));
            dx.max(dy) + 1
        })
        .sum()
}

/// `COCO.annToRLE`: polygons → `frPyObjects` + `merge`; uncompressed RLE → `frPyObjects` (size from
/// the object); compressed RLE as is.
///
/// Refused where pycocotools would loop forever or allocate without bound: an RLE whose counts do not sum
/// to its `h × w` pixels (`rleIou` and `rleMerge` then never finish), polygons in an image of more than
/// 2^32 pixels (the counts are 32-bit, so the runs of such a mask do not add up) or with a boundary past
/// [`MAX_POLYGON_POINTS`].
pub fn to_rle(seg: &Segmentation, h: u32, w: u32) -> Result<Rle, String> {
    let rle = match seg {
        Segmentation::Polygons(polys) => {
            if polys.iter().any(|p| p.len() >= 2) && h as u64 * w as u64 > u32::MAX as u64 {
                return Err(format!(
                    "polygons in a {h}x{w} image: more pixels than 32-bit RLE counts hold"
                ));
            }
            let budget = MAX_POLYGON_POINTS.min(
                (polys.iter().map(|p| p.len() as u64 / 2 + 1).sum::<u64>())
                    * 5
                    * (h as u64 + w as u64 + 1024),
            );
            let points: u64 = polys.iter().map(|p| polygon_points(p)).sum();
            if points > budget {
                return Err(format!(
                    "polygons with {points} upsampled boundary points in a {h}x{w} image (at most \
                     {budget}; coordinates far outside the image?)"
                ));
            }
            Rle::from_polygons(polys, h, w)
        }
        Segmentation::Rle {
            size,
            counts: RleCounts::Uncompressed(c),
        } => Rle {
            h: size[0],
            w: size[1],
            counts: c.clone(),
        },
        Segmentation::Rle {
            size,
            counts: RleCounts::Compressed(s),
        } => Rle::from_compressed(s, size[0], size[1]).map_err(|e| e.to_string())?,
    };
    let total: u64 = rle.counts.iter().map(|&c| c as u64).sum();
    let pixels = rle.h as u64 * rle.w as u64;
    // An empty polygon list merges to an RLE with no counts and size 0x0; that sums up.
    if total != pixels {
        return Err(format!(
            "RLE counts sum to {total} pixels but its size {}x{} has {pixels}",
            rle.h, rle.w
        ));
    }
    Ok(rle)
}
