//! `COCOeval.evaluate / accumulate / summarize` (pycocotools 2.0.11), parallel over image × category
//! pairs and categories; the arithmetic order of every reported number follows numpy.
use std::collections::HashMap;

use rayon::prelude::*;
use serde::Serialize;

use super::{to_rle, Dataset, Object};
use crate::imgops::rle::{bbox_iou, rle_iou, Rle};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum IouType {
    #[serde(rename = "bbox")]
    Bbox,
    #[serde(rename = "segm")]
    Segm,
}

impl std::str::FromStr for IouType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bbox" => Ok(IouType::Bbox),
            "segm" => Ok(IouType::Segm),
            _ => Err(format!("unknown iou type '{s}' (bbox or segm)")),
        }
    }
}

/// The 12 summary numbers, in `COCOeval.stats` order.
pub const STAT_NAMES: [&str; 12] = [
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
];

/// `Params(iouType)` (detection defaults).
#[derive(Debug, Clone)]
pub struct CocoParams {
    pub iou_type: IouType,
    pub iou_thrs: Vec<f64>,
    pub rec_thrs: Vec<f64>,
    pub max_dets: Vec<usize>,
    pub area_rng: Vec<[f64; 2]>,
    pub area_rng_lbl: Vec<String>,
    pub use_cats: bool,
    /// pycocotools stores a matched GT's *id* and treats id 0 as "unmatched", so a GT with annotation
    /// id 0 can never produce a true positive. `true` (default) reproduces that; `false` fixes it.
    pub gt_id_zero_is_unmatched: bool,
}

/// `np.linspace(start, stop, num)`: `i·step + start`, the last value set to `stop`.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let div = (num as f64) - 1.0;
    let step = (stop - start) / div;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if num > 1 {
        v[num - 1] = stop;
    }
    v
}

impl CocoParams {
    pub fn new(iou_type: IouType) -> Self {
        CocoParams {
            iou_type,
            iou_thrs: linspace(0.5, 0.95, ((0.95f64 - 0.5) / 0.05).round() as usize + 1),
            rec_thrs: linspace(0.0, 1.0, ((1.0f64 - 0.0) / 0.01).round() as usize + 1),
            max_dets: vec![1, 10, 100],
            area_rng: vec![[0.0, 1e10], [0.0, 1024.0], [1024.0, 9216.0], [9216.0, 1e10]],
            area_rng_lbl: ["all", "small", "medium", "large"]
                .map(String::from)
                .to_vec(),
            use_cats: true,
            gt_id_zero_is_unmatched: true,
        }
    }
}

/// Everything `accumulate` and `summarize` produce.
#[derive(Debug, Clone, Serialize)]
pub struct CocoEvalResult {
    /// The 12 `stats`, named as [`STAT_NAMES`].
    pub stats: [f64; 12],
    /// `precision[t][r][k][a][m]`, flattened in that (C) order.
    pub precision: Vec<f64>,
    /// `recall[t][k][a][m]`, flattened.
    pub recall: Vec<f64>,
    /// Dimensions (T, R, K, A, M).
    pub dims: [usize; 5],
    pub cat_ids: Vec<i64>,
    pub img_ids: Vec<i64>,
}

impl CocoEvalResult {
    pub fn precision_at(&self, t: usize, r: usize, k: usize, a: usize, m: usize) -> f64 {
        let [_, rr, kk, aa, mm] = self.dims;
        self.precision[(((t * rr + r) * kk + k) * aa + a) * mm + m]
    }
    pub fn recall_at(&self, t: usize, k: usize, a: usize, m: usize) -> f64 {
        let [_, _, kk, aa, mm] = self.dims;
        self.recall[((t * kk + k) * aa + a) * mm + m]
    }
    /// Named stats for JSON output.
    pub fn named_stats(&self) -> serde_json::Map<String, serde_json::Value> {
        STAT_NAMES
            .iter()
            .zip(self.stats)
            .map(|(n, v)| (n.to_string(), serde_json::json!(v)))
            .collect()
    }
}

/// Result of `evaluateImg` for one image × category × area range.
#[derive(Debug, Clone)]
struct EvalImg {
    /// Detection scores, sorted descending (stable), at most maxDets[-1].
    scores: Vec<f64>,
    /// `dtMatches != 0`, `[t * D + d]`.
    matched: Vec<bool>,
    /// `dtIgnore`, `[t * D + d]`.
    ignored: Vec<bool>,
    /// Number of GT with `gtIgnore == 0`.
    n_gt_valid: usize,
}

/// numpy's pairwise summation (`pairwise_sum_DOUBLE`), the order `np.mean` adds in.
pub fn numpy_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut r = 0.0;
        for &v in a {
            r += v;
        }
        r
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - (n % 8) {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            res += a[i];
            i += 1;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        numpy_sum(&a[..n2]) + numpy_sum(&a[n2..])
    }
}

/// Stable descending order by score (numpy `argsort(-scores, kind='mergesort')`; NaN last).
fn score_order(scores: impl Iterator<Item = f64>) -> Vec<usize> {
    let s: Vec<f64> = scores.collect();
    let mut idx: Vec<usize> = (0..s.len()).collect();
    idx.sort_by(|&a, &b| {
        let (x, y) = (-s[a], -s[b]);
        x.partial_cmp(&y)
            .unwrap_or_else(|| x.is_nan().cmp(&y.is_nan()))
    });
    idx
}

/// Geometry used for IoUs.
enum Geom {
    Boxes(Vec<[f64; 4]>),
    Masks(Vec<(Rle, [f64; 4])>),
}

fn geometry(
    objs: &[Object],
    p: &CocoParams,
    images: &HashMap<i64, (u32, u32)>,
) -> Result<Geom, String> {
    match p.iou_type {
        IouType::Bbox => Ok(Geom::Boxes(objs.iter().map(|o| o.bbox).collect())),
        IouType::Segm => objs
            .par_iter()
            .map(|o| {
                let (h, w) = images.get(&o.image_id).copied().unwrap_or((0, 0));
                let seg = o
                    .segmentation
                    .as_ref()
                    .ok_or_else(|| format!("annotation {} has no segmentation", o.id))?;
                let rle = to_rle(seg, h, w).map_err(|e| format!("annotation {}: {e}", o.id))?;
                let b = rle.to_bbox();
                Ok((rle, b))
            })
            .collect::<Result<Vec<_>, String>>()
            .map(Geom::Masks),
    }
}

/// `COCOeval(gt, dt, iouType)` with `p`: evaluate, accumulate, summarize.
/// `gts` and `dts` are in file order (GT as loaded; detections as [`super::load_res`] gives them).
pub fn evaluate(
    ds: &Dataset,
    gts: &[Object],
    dts: &[Object],
    p: &CocoParams,
) -> Result<CocoEvalResult, String> {
    // Params as `evaluate` normalises them.
    let mut img_ids: Vec<i64> = ds.images.iter().map(|i| i.id).collect();
    img_ids.sort_unstable();
    img_ids.dedup();
    let mut cat_ids: Vec<i64> = ds.categories.iter().map(|c| c.id).collect();
    cat_ids.sort_unstable();
    cat_ids.dedup();
    let mut max_dets = p.max_dets.clone();
    max_dets.sort_unstable();
    let eval_cats: Vec<i64> = if p.use_cats {
        cat_ids.clone()
    } else {
        vec![-1]
    };
    let img_index: HashMap<i64, usize> =
        img_ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let cat_index: HashMap<i64, usize> = eval_cats
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i))
        .collect();
    let images: HashMap<i64, (u32, u32)> = ds
        .images
        .iter()
        .map(|i| (i.id, (i.height, i.width)))
        .collect();
    let t_n = p.iou_thrs.len();
    let a_n = p.area_rng.len();
    let max_det = max_dets.last().copied().unwrap_or(0);

    // _prepare: group by (image, category), file order within a group.
    let key = |o: &Object| -> Option<(usize, usize)> {
        let i = *img_index.get(&o.image_id)?;
        let k = if p.use_cats {
            *cat_index.get(&o.category_id)?
        } else {
            0
        };
        Some((i, k))
    };
    let mut groups: HashMap<(usize, usize), (Vec<usize>, Vec<usize>)> = HashMap::new();
    for (j, g) in gts.iter().enumerate() {
        if let Some(k) = key(g) {
            groups.entry(k).or_default().0.push(j);
        }
    }
    for (j, d) in dts.iter().enumerate() {
        if let Some(k) = key(d) {
            groups.entry(k).or_default().1.push(j);
        }
    }
    let g_geom = geometry(gts, p, &images)?;
    let d_geom = geometry(dts, p, &images)?;
    let mut keys: Vec<(usize, usize)> = groups.keys().copied().collect();
    keys.sort_unstable();

    // computeIoU + evaluateImg for every area range, per (image, category) pair.
    let per_pair: Vec<((usize, usize), Vec<EvalImg>)> = keys
        .par_iter()
        .map(|&k| {
            let (gi, di) = &groups[&k];
            let mut dt: Vec<usize> = score_order(di.iter().map(|&j| dts[j].score))
                .into_iter()
                .map(|o| di[o])
                .collect();
            dt.truncate(max_det);
            let ious: Vec<f64> = if gi.is_empty() || dt.is_empty() {
                Vec::new()
            } else {
                let mut m = vec![0.0; dt.len() * gi.len()];
                for (d, &dj) in dt.iter().enumerate() {
                    for (g, &gj) in gi.iter().enumerate() {
                        let crowd = gts[gj].iscrowd;
                        m[d * gi.len() + g] = match (&d_geom, &g_geom) {
                            (Geom::Boxes(db), Geom::Boxes(gb)) => bbox_iou(&db[dj], &gb[gj], crowd),
                            (Geom::Masks(dm), Geom::Masks(gm)) => {
                                rle_iou(&dm[dj].0, &gm[gj].0, &dm[dj].1, &gm[gj].1, crowd)
                            }
                            _ => unreachable!("both sides use the same iou type"),
                        };
                    }
                }
                m
            };
            let imgs = p
                .area_rng
                .iter()
                .map(|rng| evaluate_img(gts, dts, gi, &dt, &ious, rng, p))
                .collect();
            (k, imgs)
        })
        .collect();

    // evalImgs laid out per (category, area): the images that have a result, in imgIds order.
    let k_n = eval_cats.len();
    let mut by_cat: Vec<Vec<Vec<&EvalImg>>> = vec![vec![Vec::new(); a_n]; k_n];
    for ((_, k), imgs) in &per_pair {
        for (a, e) in imgs.iter().enumerate() {
            by_cat[*k][a].push(e);
        }
    }
    // `per_pair` is sorted by (image, category), so each list is in image order.

    // accumulate
    let r_n = p.rec_thrs.len();
    let m_n = max_dets.len();
    let mut precision = vec![-1.0; t_n * r_n * k_n * a_n * m_n];
    let mut recall = vec![-1.0; t_n * k_n * a_n * m_n];
    // Per category: (t, a, m, precision over recall thresholds, recall) for every filled cell.
    type Cells = Vec<(usize, usize, usize, Vec<f64>, f64)>;
    let blocks: Vec<(usize, Cells)> = (0..k_n)
        .into_par_iter()
        .map(|k| {
            let mut out = Vec::new();
            for (a, e_list) in by_cat[k].iter().enumerate() {
                if e_list.is_empty() {
                    continue;
                }
                for (m, &md) in max_dets.iter().enumerate() {
                    let mut scores = Vec::new();
                    let mut src: Vec<(usize, usize)> = Vec::new();
                    for (ei, e) in e_list.iter().enumerate() {
                        let nd = e.scores.len().min(md);
                        scores.extend_from_slice(&e.scores[..nd]);
                        src.extend((0..nd).map(|d| (ei, d)));
                    }
                    let order = score_order(scores.iter().copied());
                    let npig: usize = e_list.iter().map(|e| e.n_gt_valid).sum();
                    if npig == 0 {
                        continue;
                    }
                    for t in 0..t_n {
                        let nd = order.len();
                        let mut rc = Vec::with_capacity(nd);
                        let mut pr = Vec::with_capacity(nd);
                        let (mut tp, mut fp) = (0.0f64, 0.0f64);
                        for &o in &order {
                            let (ei, d) = src[o];
                            let e = e_list[ei];
                            let dn = e.scores.len();
                            let (mt, ig) = (e.matched[t * dn + d], e.ignored[t * dn + d]);
                            if !ig {
                                if mt {
                                    tp += 1.0;
                                } else {
                                    fp += 1.0;
                                }
                            }
                            rc.push(tp / npig as f64);
                            pr.push(tp / (fp + tp + f64::EPSILON));
                        }
                        let rec = if nd > 0 { rc[nd - 1] } else { 0.0 };
                        for i in (1..nd).rev() {
                            if pr[i] > pr[i - 1] {
                                pr[i - 1] = pr[i];
                            }
                        }
                        let mut q = vec![0.0; r_n];
                        for (ri, &r) in p.rec_thrs.iter().enumerate() {
                            let pi = rc.partition_point(|&x| x < r);
                            if pi >= nd {
                                break;
                            }
                            q[ri] = pr[pi];
                        }
                        out.push((t, a, m, q, rec));
                    }
                }
            }
            (k, out)
        })
        .collect();
    for (k, out) in blocks {
        for (t, a, m, q, rec) in out {
            for (r, v) in q.into_iter().enumerate() {
                precision[(((t * r_n + r) * k_n + k) * a_n + a) * m_n + m] = v;
            }
            recall[((t * k_n + k) * a_n + a) * m_n + m] = rec;
        }
    }

    // summarize
    let dims = [t_n, r_n, k_n, a_n, m_n];
    let summarize = |ap: bool, iou: Option<f64>, area: &str, md: usize| -> f64 {
        let aind: Vec<usize> = p
            .area_rng_lbl
            .iter()
            .enumerate()
            .filter(|(_, l)| l.as_str() == area)
            .map(|(i, _)| i)
            .collect();
        let mind: Vec<usize> = max_dets
            .iter()
            .enumerate()
            .filter(|(_, &m)| m == md)
            .map(|(i, _)| i)
            .collect();
        let tind: Vec<usize> = match iou {
            Some(v) => p
                .iou_thrs
                .iter()
                .enumerate()
                .filter(|(_, &t)| t == v)
                .map(|(i, _)| i)
                .collect(),
            None => (0..t_n).collect(),
        };
        let mut vals = Vec::new();
        if ap {
            for &t in &tind {
                for r in 0..r_n {
                    for k in 0..k_n {
                        for &a in &aind {
                            for &m in &mind {
                                let v = precision[(((t * r_n + r) * k_n + k) * a_n + a) * m_n + m];
                                if v > -1.0 {
                                    vals.push(v);
                                }
                            }
                        }
                    }
                }
            }
        } else {
            for &t in &tind {
                for k in 0..k_n {
                    for &a in &aind {
                        for &m in &mind {
                            let v = recall[((t * k_n + k) * a_n + a) * m_n + m];
                            if v > -1.0 {
                                vals.push(v);
                            }
                        }
                    }
                }
            }
        }
        if vals.is_empty() {
            -1.0
        } else {
            numpy_sum(&vals) / vals.len() as f64
        }
    };
    let md = |i: usize| max_dets.get(i).copied().unwrap_or(usize::MAX);
    let stats = [
        summarize(true, None, "all", 100),
        summarize(true, Some(0.5), "all", md(2)),
        summarize(true, Some(0.75), "all", md(2)),
        summarize(true, None, "small", md(2)),
        summarize(true, None, "medium", md(2)),
        summarize(true, None, "large", md(2)),
        summarize(false, None, "all", md(0)),
        summarize(false, None, "all", md(1)),
        summarize(false, None, "all", md(2)),
        summarize(false, None, "small", md(2)),
        summarize(false, None, "medium", md(2)),
        summarize(false, None, "large", md(2)),
    ];
    Ok(CocoEvalResult {
        stats,
        precision,
        recall,
        dims,
        cat_ids: eval_cats,
        img_ids,
    })
}

/// `evaluateImg` for one area range. `gi` are GT indices in file order; `dt` detection indices sorted by
/// score and cut to maxDets[-1]; `ious[d * G + g]` in those orders.
fn evaluate_img(
    gts: &[Object],
    dts: &[Object],
    gi: &[usize],
    dt: &[usize],
    ious: &[f64],
    rng: &[f64; 2],
    p: &CocoParams,
) -> EvalImg {
    let t_n = p.iou_thrs.len();
    let outside = |area: f64| area < rng[0] || area > rng[1];
    let g_ignore: Vec<bool> = gi
        .iter()
        .map(|&j| gts[j].iscrowd || outside(gts[j].area))
        .collect();
    // Stable sort: non-ignored GT first.
    let mut gorder: Vec<usize> = (0..gi.len()).collect();
    gorder.sort_by_key(|&g| g_ignore[g]);
    let gn = gi.len();
    let dn = dt.len();
    let mut matched = vec![false; t_n * dn];
    let mut ignored = vec![false; t_n * dn];
    if !ious.is_empty() {
        let mut gt_taken = vec![false; gn];
        for (t, &thr) in p.iou_thrs.iter().enumerate() {
            gt_taken.iter_mut().for_each(|x| *x = false);
            for d in 0..dn {
                let mut best = thr.min(1.0 - 1e-10);
                let mut m: Option<usize> = None;
                for (pos, &g) in gorder.iter().enumerate() {
                    let _ = pos;
                    let crowd = gts[gi[g]].iscrowd;
                    if gt_taken[g] && !crowd {
                        continue;
                    }
                    if let Some(mg) = m {
                        if !g_ignore[mg] && g_ignore[g] {
                            break;
                        }
                    }
                    let v = ious[d * gn + g];
                    if v < best {
                        continue;
                    }
                    best = v;
                    m = Some(g);
                }
                if let Some(g) = m {
                    ignored[t * dn + d] = g_ignore[g];
                    let gid = gts[gi[g]].id;
                    matched[t * dn + d] = !(p.gt_id_zero_is_unmatched && gid == 0);
                    // gtm[m] = dt id (>= 1): the GT is taken.
                    gt_taken[g] = true;
                }
            }
        }
    }
    // Unmatched detections outside the area range are ignored (`dtm == 0`, so id-0 matches too).
    for d in 0..dn {
        if outside(dts[dt[d]].area) {
            for t in 0..t_n {
                if !matched[t * dn + d] {
                    ignored[t * dn + d] = true;
                }
            }
        }
    }
    EvalImg {
        scores: dt.iter().map(|&j| dts[j].score).collect(),
        matched,
        ignored,
        n_gt_valid: g_ignore.iter().filter(|&&x| !x).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_equal_numpy_linspace() {
        let p = CocoParams::new(IouType::Bbox);
        assert_eq!(
            p.iou_thrs,
            vec![
                0.5,
                0.55,
                0.6,
                0.65,
                0.7,
                0.75,
                0.8,
                0.85,
                0.8999999999999999,
                0.95
            ]
        );
        assert_eq!(p.rec_thrs.len(), 101);
        assert_eq!(p.rec_thrs[57], 0.5700000000000001);
        assert_eq!(p.rec_thrs[29], 0.29);
        assert_eq!(p.rec_thrs[100], 1.0);
    }

    #[test]
    fn pairwise_sum_matches_numpy_order() {
        // np.add.reduce(np.full(10, 0.1)) == 1.0 (pairwise), while a left fold gives 0.9999999999999999.
        let v = vec![0.1; 10];
        assert_eq!(numpy_sum(&v), 1.0);
        assert_eq!(v.iter().fold(0.0, |a, b| a + b), 0.9999999999999999);
    }
}
