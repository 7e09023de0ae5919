//! Mask cleaning (stand-in: binarise at ≥ 1/255 as the official uint8 conversion, keep 4-connected
//! components larger than `min_obj_scale` of the image). The faithful `clean_mask` replaces it.

#[derive(Debug, Clone)]
pub struct CleanOptions {
    pub min_obj_scale: f64,
    pub single: bool,
}

impl CleanOptions {
    pub fn seg() -> Self {
        Self {
            min_obj_scale: 0.001,
            single: false,
        }
    }
    pub fn boxes() -> Self {
        Self {
            min_obj_scale: 0.01,
            single: false,
        }
    }
}

/// 0/1 mask of the kept components.
pub fn clean_mask(prob: &[f32], width: usize, height: usize, opts: &CleanOptions) -> Vec<u8> {
    let fg: Vec<bool> = prob.iter().map(|&p| (p * 255.0) as u8 >= 1).collect();
    let (labels, areas) = components(&fg, width, height, false);
    let min = opts.min_obj_scale * (width * height) as f64;
    let keep: Vec<bool> = if opts.single {
        let best = areas
            .iter()
            .enumerate()
            .max_by_key(|(_, &a)| a)
            .map(|(i, _)| i);
        (0..areas.len()).map(|i| Some(i) == best).collect()
    } else {
        areas.iter().map(|&a| a as f64 > min).collect()
    };
    labels
        .iter()
        .map(|&l| (l > 0 && keep[l as usize - 1]) as u8)
        .collect()
}

/// Connected components of `fg` (4- or 8-connectivity): labels 1..=n per pixel (0 background), areas.
pub(crate) fn components(fg: &[bool], w: usize, h: usize, eight: bool) -> (Vec<u32>, Vec<usize>) {
    let mut labels = vec![0u32; w * h];
    let mut areas = Vec::new();
    let mut stack = Vec::new();
    for start in 0..w * h {
        if !fg[start] || labels[start] != 0 {
            continue;
        }
        let id = areas.len() as u32 + 1;
        labels[start] = id;
        stack.push(start);
        let mut area = 0;
        while let Some(p) = stack.pop() {
            area += 1;
            let (x, y) = ((p % w) as i64, (p / w) as i64);
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    if (dx == 0 && dy == 0) || (!eight && dx != 0 && dy != 0) {
                        continue;
                    }
                    let (nx, ny) = (x + dx, y + dy);
                    if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                        continue;
                    }
                    let q = ny as usize * w + nx as usize;
                    if fg[q] && labels[q] == 0 {
                        labels[q] = id;
                        stack.push(q);
                    }
                }
            }
        }
        areas.push(area);
    }
    (labels, areas)
}
