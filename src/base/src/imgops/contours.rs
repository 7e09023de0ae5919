//! Suzuki–Abe border following with the semantics of OpenCV
//! `findContours(img, RETR_TREE, CHAIN_APPROX_SIMPLE)`, plus `boundingRect` and `contourArea`.
//!
//! Ported from the behaviour of OpenCV's legacy scanner (`cvFindNextContour` / `icvFetchContourEx`):
//! * non-zero pixels are foreground, 8-connected; holes are 4-connected background; pixels outside the
//!   image are background (OpenCV pads the copy with a zero border);
//! * every border is returned: outer borders and hole borders (a hole border traces the foreground
//!   pixels around the hole);
//! * CHAIN_APPROX_SIMPLE: a point is kept where the chain direction changes;
//! * output order: OpenCV inserts each new contour as the *first* child of its parent and returns the
//!   tree in pre-order, so siblings come in reverse discovery (raster) order and children follow
//!   their parent.
//!
//! OpenCV stores border labels in 7 bits and disambiguates reused labels by bounding rectangles; here
//! labels are unbounded `i32`, which gives the same parent for every contour.

/// One border, as OpenCV returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contour {
    /// Vertices after CHAIN_APPROX_SIMPLE, as (x, y) = (column, row).
    pub points: Vec<(i32, i32)>,
    /// A hole border (OpenCV `CV_SEQ_FLAG_HOLE`; hierarchy parent is the enclosing outer border).
    pub is_hole: bool,
    /// Index of the parent contour in the returned list (OpenCV `hierarchy[i][3]`), `None` for top level.
    pub parent: Option<usize>,
}

/// OpenCV `Rect`: left/top inclusive, `w`/`h` in pixels (right/bottom end `x + w` is exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rect {
    pub x: i32,
    pub y: i32,
    pub w: i32,
    pub h: i32,
}

/// Chain-code deltas (x, y), y pointing down; OpenCV `icvCodeDeltas`.
const CODE_DELTAS: [(i32, i32); 8] = [
    (1, 0),
    (1, -1),
    (0, -1),
    (-1, -1),
    (-1, 0),
    (-1, 1),
    (0, 1),
    (1, 1),
];

struct Info {
    is_hole: bool,
    /// Index into `infos` of the parent; 0 is the frame (a virtual hole around the image).
    parent: usize,
    points: Vec<(i32, i32)>,
}

/// All borders of `mask` (row-major, `width * height`, non-zero = foreground) in OpenCV order.
pub fn find_contours(mask: &[u8], width: usize, height: usize) -> Vec<Contour> {
    assert_eq!(
        mask.len(),
        width * height,
        "find_contours: mask length is not width*height"
    );
    if width == 0 || height == 0 {
        return Vec::new();
    }
    // Padded label image: 0 background, 1 unvisited foreground, +L visited border pixel of contour L,
    // -L a border pixel on the "right bound" of contour L (OpenCV's `nbd | 0x80`).
    let pw = width + 2;
    let ph = height + 2;
    let mut img = vec![0i32; pw * ph];
    for y in 0..height {
        let src = &mask[y * width..(y + 1) * width];
        let dst = &mut img[(y + 1) * pw + 1..(y + 1) * pw + 1 + width];
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = (s != 0) as i32;
        }
    }
    let step = pw as isize;
    let deltas: [isize; 16] = {
        let d8 = [1, -step + 1, -step, -step - 1, -1, step - 1, step, step + 1];
        let mut d = [0isize; 16];
        d[..8].copy_from_slice(&d8);
        d[8..].copy_from_slice(&d8);
        d
    };

    // infos[0] is the frame; contour label L (>= 2) is infos[L - 1].
    let mut infos: Vec<Info> = vec![Info {
        is_hole: true,
        parent: 0,
        points: Vec::new(),
    }];
    for y in 1..=height {
        let row = y * pw;
        let mut prev = 0i32;
        let mut lnbd_x = 0usize;
        let mut x = 1usize;
        while x <= width {
            let p = img[row + x];
            if p != prev {
                let is_outer = prev == 0 && p == 1;
                let is_hole = !is_outer && p == 0 && prev >= 1;
                if is_outer || is_hole {
                    if is_hole && prev != 1 {
                        lnbd_x = x - 1;
                    }
                    // Parent per Suzuki–Abe: the border last met on this row (LNBD), or its parent when
                    // both are of the same kind.
                    let mut par = if lnbd_x == 0 {
                        0
                    } else {
                        (img[row + lnbd_x].unsigned_abs() as usize) - 1
                    };
                    if lnbd_x != 0 && infos[par].is_hole == is_hole {
                        par = infos[par].parent;
                    }
                    let start_x = x - is_hole as usize;
                    let label = (infos.len() + 1) as i32;
                    let points =
                        fetch_contour(&mut img, &deltas, pw, row + start_x, is_hole, label);
                    infos.push(Info {
                        is_hole,
                        parent: par,
                        points,
                    });
                    lnbd_x = start_x;
                    // Resume right after the start pixel, as OpenCV does (`prev = img[x]`).
                    prev = img[row + x];
                    x += 1;
                    continue;
                }
                prev = p;
                if p != 0 && p != 1 {
                    lnbd_x = x;
                }
            }
            x += 1;
        }
    }
    order_as_opencv(infos)
}

/// OpenCV `icvFetchContourEx` with CHAIN_APPROX_SIMPLE: follows one border from `start` (an index into
/// the padded image), labels it, and returns its vertices in image coordinates.
fn fetch_contour(
    img: &mut [i32],
    deltas: &[isize; 16],
    pw: usize,
    start: usize,
    is_hole: bool,
    nbd: i32,
) -> Vec<(i32, i32)> {
    let mut pts = Vec::new();
    let mut pt = ((start % pw) as i32 - 1, (start / pw) as i32 - 1);
    let i0 = start;
    let at = |i: usize, d: isize| (i as isize + d) as usize;
    let s_end0: usize = if is_hole { 0 } else { 4 };
    let mut s = s_end0;
    let mut i1;
    loop {
        s = (s + 7) & 7;
        i1 = at(i0, deltas[s]);
        if img[i1] != 0 || s == s_end0 {
            break;
        }
    }
    if s == s_end0 {
        // Isolated pixel (the neighbour in direction s_end is background by construction of the scan).
        img[i0] = -nbd;
        pts.push(pt);
        return pts;
    }
    let mut i3 = i0;
    let mut prev_s = s ^ 4;
    let mut i4;
    loop {
        let s_end = s;
        loop {
            s += 1;
            i4 = at(i3, deltas[s]);
            if img[i4] != 0 || s >= 15 {
                break;
            }
        }
        s &= 7;
        if s.wrapping_sub(1) < s_end {
            img[i3] = -nbd;
        } else if img[i3] == 1 {
            img[i3] = nbd;
        }
        if s != prev_s {
            pts.push(pt);
            prev_s = s;
        }
        pt.0 += CODE_DELTAS[s].0;
        pt.1 += CODE_DELTAS[s].1;
        if i4 == i0 && i3 == i1 {
            break;
        }
        i3 = i4;
        s = (s + 4) & 7;
    }
    pts
}

/// Pre-order traversal with children in reverse discovery order (OpenCV `cvInsertNodeIntoTree`
/// prepends, `cvTreeToNodeSeq` walks depth first).
fn order_as_opencv(infos: Vec<Info>) -> Vec<Contour> {
    let n = infos.len();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, info) in infos.iter().enumerate().skip(1) {
        children[info.parent].push(i);
    }
    let mut out_index = vec![usize::MAX; n];
    let mut order = Vec::with_capacity(n - 1);
    let mut stack: Vec<usize> = children[0].clone(); // popping from the end gives reverse discovery order
    while let Some(i) = stack.pop() {
        out_index[i] = order.len();
        order.push(i);
        stack.extend(children[i].iter().copied());
    }
    let mut infos: Vec<Option<Info>> = infos.into_iter().map(Some).collect();
    order
        .into_iter()
        .map(|i| {
            let info = infos[i].take().expect("each contour is visited once");
            Contour {
                points: info.points,
                is_hole: info.is_hole,
                parent: if info.parent == 0 {
                    None
                } else {
                    Some(out_index[info.parent])
                },
            }
        })
        .collect()
}

/// OpenCV `boundingRect` of integer points: `w = max_x - min_x + 1`. Empty input gives a zero rect.
pub fn bounding_rect(points: &[(i32, i32)]) -> Rect {
    let Some(&(x0, y0)) = points.first() else {
        return Rect {
            x: 0,
            y: 0,
            w: 0,
            h: 0,
        };
    };
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (x0, x0, y0, y0);
    for &(x, y) in &points[1..] {
        xmin = xmin.min(x);
        xmax = xmax.max(x);
        ymin = ymin.min(y);
        ymax = ymax.max(y);
    }
    Rect {
        x: xmin,
        y: ymin,
        w: xmax - xmin + 1,
        h: ymax - ymin + 1,
    }
}

/// `boundingRect` of every contour of `mask`, in `findContours` order.
pub fn contour_bounding_rects(mask: &[u8], width: usize, height: usize) -> Vec<Rect> {
    find_contours(mask, width, height)
        .iter()
        .map(|c| bounding_rect(&c.points))
        .collect()
}

/// OpenCV `contourArea(points, oriented=false)`: shoelace area of the vertex polygon (pixel centres).
pub fn contour_area(points: &[(i32, i32)]) -> f64 {
    let n = points.len();
    if n < 3 {
        return 0.0;
    }
    let mut a = 0.0f64;
    let (mut px, mut py) = (points[n - 1].0 as f64, points[n - 1].1 as f64);
    for &(x, y) in points {
        let (x, y) = (x as f64, y as f64);
        a += px * y - py * x;
        px = x;
        py = y;
    }
    (a * 0.5).abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_from(rows: &[&str]) -> (Vec<u8>, usize, usize) {
        let h = rows.len();
        let w = rows[0].len();
        let m = rows
            .iter()
            .flat_map(|r| r.bytes().map(|b| (b == b'#') as u8))
            .collect();
        (m, w, h)
    }

    #[test]
    fn empty_mask_has_no_contour() {
        assert!(find_contours(&[0u8; 12], 4, 3).is_empty());
    }

    #[test]
    fn single_pixel_and_full_image() {
        let (m, w, h) = mask_from(&["....", ".#..", "...."]);
        let c = find_contours(&m, w, h);
        assert_eq!(
            c,
            vec![Contour {
                points: vec![(1, 1)],
                is_hole: false,
                parent: None
            }]
        );
        assert_eq!(
            bounding_rect(&c[0].points),
            Rect {
                x: 1,
                y: 1,
                w: 1,
                h: 1
            }
        );
        // All ones: pixels outside count as 0, so the contour is the image frame (OpenCV gives (0,0,W,H)).
        let c = find_contours(&[1u8; 20], 5, 4);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].points, vec![(0, 0), (0, 3), (4, 3), (4, 0)]);
        assert_eq!(
            bounding_rect(&c[0].points),
            Rect {
                x: 0,
                y: 0,
                w: 5,
                h: 4
            }
        );
    }

    #[test]
    fn rectangle_vertices_and_area() {
        // OpenCV: a solid 3x3 block gives the 4 corners (counter-clockwise from the top-left in image
        // coordinates: down first) and contourArea 4.
        let (m, w, h) = mask_from(&[".....", ".###.", ".###.", ".###.", "....."]);
        let c = find_contours(&m, w, h);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].points, vec![(1, 1), (1, 3), (3, 3), (3, 1)]);
        assert_eq!(contour_area(&c[0].points), 4.0);
        // A one-pixel-wide line has area 0.
        let (m, w, h) = mask_from(&["......", ".####.", "......"]);
        let c = find_contours(&m, w, h);
        assert_eq!(c[0].points, vec![(1, 1), (4, 1)]);
        assert_eq!(contour_area(&c[0].points), 0.0);
    }

    #[test]
    fn diagonal_pixels_are_one_8_connected_contour() {
        let (m, w, h) = mask_from(&["#..", ".#.", "..#"]);
        let c = find_contours(&m, w, h);
        assert_eq!(c.len(), 1);
        assert_eq!(
            bounding_rect(&c[0].points),
            Rect {
                x: 0,
                y: 0,
                w: 3,
                h: 3
            }
        );
    }

    #[test]
    fn ring_gives_outer_and_hole_with_hierarchy() {
        let (m, w, h) = mask_from(&[
            ".......", ".#####.", ".#...#.", ".#...#.", ".#####.", ".......",
        ]);
        let c = find_contours(&m, w, h);
        assert_eq!(c.len(), 2);
        assert!(!c[0].is_hole && c[0].parent.is_none());
        assert!(c[1].is_hole && c[1].parent == Some(0));
        assert_eq!(
            bounding_rect(&c[0].points),
            Rect {
                x: 1,
                y: 1,
                w: 5,
                h: 4
            }
        );
        // The hole border traces the foreground around the hole: hole extent plus one on each side.
        assert_eq!(
            bounding_rect(&c[1].points),
            Rect {
                x: 1,
                y: 1,
                w: 5,
                h: 4
            }
        );
        // A 4-connected hole with a diagonal-only gap is still a hole (holes are 4-connected).
        let (m, w, h) = mask_from(&["#####", "#...#", "#..##", "#.#.#", "#####"]);
        let c = find_contours(&m, w, h);
        assert_eq!(c.iter().filter(|c| c.is_hole).count(), 2);
    }

    #[test]
    fn order_is_reverse_discovery_and_children_follow_parent() {
        // Two blobs: the one found later in the raster scan comes first.
        let (m, w, h) = mask_from(&["##....", "##....", "....##", "....##"]);
        let r = contour_bounding_rects(&m, w, h);
        assert_eq!(
            r,
            vec![
                Rect {
                    x: 4,
                    y: 2,
                    w: 2,
                    h: 2
                },
                Rect {
                    x: 0,
                    y: 0,
                    w: 2,
                    h: 2
                }
            ]
        );
        // A ring with an island inside, and a separate blob to the right found first in row 0.
        let (m, w, h) = mask_from(&[
            ".......##",
            ".#####...",
            ".#...#...",
            ".#.#.#...",
            ".#...#...",
            ".#####...",
        ]);
        let c = find_contours(&m, w, h);
        let rects: Vec<Rect> = c.iter().map(|c| bounding_rect(&c.points)).collect();
        // Discovery: blob(row0), ring outer(row1), hole(row2), island(row3). Top level reversed:
        // ring first, then its subtree (hole, island), then the blob.
        assert_eq!(
            rects,
            vec![
                Rect {
                    x: 1,
                    y: 1,
                    w: 5,
                    h: 5
                },
                Rect {
                    x: 1,
                    y: 1,
                    w: 5,
                    h: 5
                },
                Rect {
                    x: 3,
                    y: 3,
                    w: 1,
                    h: 1
                },
                Rect {
                    x: 7,
                    y: 0,
                    w: 2,
                    h: 1
                },
            ]
        );
        assert_eq!(
            c.iter().map(|c| c.is_hole).collect::<Vec<_>>(),
            vec![false, true, false, false]
        );
        assert_eq!(
            c.iter().map(|c| c.parent).collect::<Vec<_>>(),
            vec![None, Some(0), Some(1), None]
        );
    }

    #[test]
    fn wsolevaluation_multimodal_boxes() {
        // Thresholded multimodal map of wsolevaluation's evaluation_test (5x4 map, tau = 0.2):
        // boxes [0,0,2,2] and friends come from boundingRect + min(x+w, W-1) clipping.
        let (m, w, h) = mask_from(&["##...", "##...", ".....", "####."]);
        let r = contour_bounding_rects(&m, w, h);
        assert_eq!(
            r,
            vec![
                Rect {
                    x: 0,
                    y: 3,
                    w: 4,
                    h: 1
                },
                Rect {
                    x: 0,
                    y: 0,
                    w: 2,
                    h: 2
                }
            ]
        );
    }
}
