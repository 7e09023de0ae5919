//! Connected components with statistics, as OpenCV `connectedComponentsWithStats` (spec metrics.md §5).
//!
//! Non-zero pixels are foreground; label 0 is every zero pixel, as one label (even when there are none:
//! then its area is 0). Labels 1.. are numbered as OpenCV numbers them:
//! * 4-connectivity (SAUF): by each component's first pixel in raster order;
//! * 8-connectivity (Spaghetti/BBDT scan 2×2 blocks): by each component's first 2×2 block in block-raster
//!   order. All foreground pixels of one block are 8-connected, so the order is well defined. OpenCV's
//!   parallel variants label horizontal stripes in order and keep the smaller label on merges, which gives
//!   the same numbering.

/// Pixel adjacency for foreground components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Connectivity {
    /// Edge neighbours only (the object-aware `clean_mask`).
    Four,
    /// Edge and corner neighbours (OpenCV's default).
    #[default]
    Eight,
}

/// One row of OpenCV's `stats`: `[left, top, width, height, area]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComponentStats {
    pub left: i32,
    pub top: i32,
    pub width: i32,
    pub height: i32,
    pub area: i32,
}

/// The result of [`connected_components_with_stats`].
#[derive(Debug, Clone, PartialEq)]
pub struct Components {
    /// Number of labels, including the background label 0.
    pub n_labels: usize,
    /// Row-major label image (`i32`, as CV_32S).
    pub labels: Vec<i32>,
    /// Per label, OpenCV's statistics. For an absent background (every pixel foreground) the row is what
    /// OpenCV leaves: area 0, left/top `i32::MAX`, width/height 2 (its INT_MIN−INT_MAX+1, wrapped).
    pub stats: Vec<ComponentStats>,
    /// Per label, the centroid (x, y) in float64 (NaN for an empty label).
    pub centroids: Vec<(f64, f64)>,
}

/// Union-find with path halving; the root is the smallest provisional label.
fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let p = parent[parent[x as usize] as usize];
        parent[x as usize] = p;
        x = p;
    }
    x
}

fn union(parent: &mut [u32], a: u32, b: u32) -> u32 {
    let (ra, rb) = (find(parent, a), find(parent, b));
    let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
    parent[hi as usize] = lo;
    lo
}

/// Labels the non-zero pixels of a row-major `width`×`height` image.
///
/// # Panics
/// If `mask.len() != width * height`.
pub fn connected_components_with_stats(
    mask: &[u8],
    width: usize,
    height: usize,
    connectivity: Connectivity,
) -> Components {
    assert_eq!(
        mask.len(),
        width * height,
        "connected_components: mask has {} pixels, expected {width}×{height}",
        mask.len()
    );
    let n = width * height;
    // Pass 1: provisional labels in raster order (0 = background).
    let mut prov = vec![0u32; n];
    let mut parent: Vec<u32> = vec![0];
    for y in 0..height {
        for x in 0..width {
            let i = y * width + x;
            if mask[i] == 0 {
                continue;
            }
            let mut label = 0u32;
            let mut join = |l: u32, parent: &mut Vec<u32>| {
                if l != 0 {
                    label = if label == 0 {
                        l
                    } else {
                        union(parent, label, l)
                    };
                }
            };
            if x > 0 {
                join(prov[i - 1], &mut parent);
            }
            if y > 0 {
                join(prov[i - width], &mut parent);
                if connectivity == Connectivity::Eight {
                    if x > 0 {
                        join(prov[i - width - 1], &mut parent);
                    }
                    if x + 1 < width {
                        join(prov[i - width + 1], &mut parent);
                    }
                }
            }
            if label == 0 {
                label = parent.len() as u32;
                parent.push(label);
            }
            prov[i] = label;
        }
    }
    // Each root's ordering key: first pixel (4-way) or first 2×2 block (8-way) in raster order.
    let n_prov = parent.len();
    let mut key = vec![usize::MAX; n_prov];
    let bw = width.div_ceil(2);
    for y in 0..height {
        for x in 0..width {
            let i = y * width + x;
            if prov[i] == 0 {
                continue;
            }
            let r = find(&mut parent, prov[i]) as usize;
            let k = match connectivity {
                Connectivity::Four => i,
                Connectivity::Eight => (y / 2) * bw + x / 2,
            };
            if k < key[r] {
                key[r] = k;
            }
        }
    }
    let mut roots: Vec<usize> = (1..n_prov).filter(|&r| parent[r] as usize == r).collect();
    roots.sort_by_key(|&r| key[r]);
    let mut final_label = vec![0i32; n_prov];
    for (idx, &r) in roots.iter().enumerate() {
        final_label[r] = idx as i32 + 1;
    }
    let n_labels = roots.len() + 1;
    let mut labels = vec![0i32; n];
    // left, top, right, bottom, area, sum x, sum y
    let mut acc = vec![(i32::MAX, i32::MAX, i32::MIN, i32::MIN, 0i32, 0f64, 0f64); n_labels];
    for y in 0..height {
        for x in 0..width {
            let i = y * width + x;
            let l = if prov[i] == 0 {
                0
            } else {
                final_label[find(&mut parent, prov[i]) as usize]
            };
            labels[i] = l;
            let a = &mut acc[l as usize];
            let (xi, yi) = (x as i32, y as i32);
            a.0 = a.0.min(xi);
            a.1 = a.1.min(yi);
            a.2 = a.2.max(xi);
            a.3 = a.3.max(yi);
            a.4 += 1;
            a.5 += x as f64;
            a.6 += y as f64;
        }
    }
    let stats = acc
        .iter()
        .map(|a| ComponentStats {
            left: a.0,
            top: a.1,
            width: a.2.wrapping_sub(a.0).wrapping_add(1),
            height: a.3.wrapping_sub(a.1).wrapping_add(1),
            area: a.4,
        })
        .collect();
    let centroids = acc
        .iter()
        .map(|a| (a.5 / a.4 as f64, a.6 / a.4 as f64))
        .collect();
    Components {
        n_labels,
        labels,
        stats,
        centroids,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(rows: &[&str]) -> (Vec<u8>, usize, usize) {
        let w = rows[0].len();
        let m = rows
            .iter()
            .flat_map(|r| r.bytes().map(|b| (b == b'#') as u8))
            .collect();
        (m, w, rows.len())
    }

    #[test]
    fn four_connectivity_splits_diagonals_and_orders_by_first_pixel() {
        let (m, w, h) = parse(&["#....#", ".#...#", "......", "..##.."]);
        let c = connected_components_with_stats(&m, w, h, Connectivity::Four);
        assert_eq!(c.n_labels, 5);
        // (0,0) → 1, (0,5) → 2, (1,1) → 3, (3,2) → 4
        assert_eq!(c.labels[0], 1);
        assert_eq!(c.labels[5], 2);
        assert_eq!(c.labels[w + 1], 3);
        assert_eq!(c.labels[3 * w + 2], 4);
        assert_eq!(
            c.stats[2],
            ComponentStats {
                left: 5,
                top: 0,
                width: 1,
                height: 2,
                area: 2
            }
        );
        assert_eq!(c.stats[0].area, 24 - 6);
        assert_eq!(c.centroids[4], (2.5, 3.0));
    }

    #[test]
    fn eight_connectivity_joins_diagonals_and_orders_by_block() {
        // A component starting at (r1, c1) comes before one at (r0, c5): 2×2 blocks (spec §5).
        let (m, w, h) = parse(&[".....#", ".#...#", "..#...", "......"]);
        let c = connected_components_with_stats(&m, w, h, Connectivity::Eight);
        assert_eq!(c.n_labels, 3);
        assert_eq!(c.labels[w + 1], 1);
        assert_eq!(c.labels[2 * w + 2], 1);
        assert_eq!(c.labels[5], 2);
        let c4 = connected_components_with_stats(&m, w, h, Connectivity::Four);
        assert_eq!(c4.labels[5], 1, "4-way is row-major");
        assert_eq!(c4.n_labels, 4);
    }

    #[test]
    fn u_shape_merges_and_all_foreground_keeps_an_empty_background() {
        let (m, w, h) = parse(&["#.#", "#.#", "###"]);
        let c = connected_components_with_stats(&m, w, h, Connectivity::Four);
        assert_eq!(c.n_labels, 2);
        assert!(c.labels.iter().zip(&m).all(|(&l, &v)| (l == 1) == (v == 1)));
        let full = vec![1u8; 6];
        let c = connected_components_with_stats(&full, 3, 2, Connectivity::Four);
        assert_eq!(c.n_labels, 2);
        assert_eq!(c.stats[0].area, 0);
        assert_eq!(
            c.stats[1],
            ComponentStats {
                left: 0,
                top: 0,
                width: 3,
                height: 2,
                area: 6
            }
        );
        assert!(c.centroids[0].0.is_nan());
    }
}
