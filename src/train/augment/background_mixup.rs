//! BG-Mixup as the official `models/bg_mixup.py` (`BGMixupModule.generate_bg_mixed_img`): each image's
//! foreground is the bounding rectangle of its thresholded mask; with probability `aug_prob` the
//! rectangle is filled with the image's own background (the largest strip beside it, tiled), and the
//! image is then mixed, through its soft mask, with the background of a random partner in the batch or,
//! when the partner has none, with one from a queue of the last 50 backgrounds kept across calls.
//!
//! The official quirks are kept: no coin is drawn for an image whose rectangle is the whole image; the
//! rectangle is filled end-exclusive (its last row and column stay original); the right and bottom strips
//! start at the rectangle's last column/row; a degenerate rectangle leaves the image unchanged yet counts
//! as a background; backgrounds are pushed during the loop, so a later image can draw an earlier one of
//! the same batch.
use std::collections::VecDeque;

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

/// The official background queue length.
pub const QUEUE_LEN: usize = 50;

/// The random values one call draws, in the official order: the permutation once, then a coin per image
/// whose rectangle is not the whole image, then a queue index per image that falls back to the queue.
pub trait MixupDraws {
    /// A permutation of 0..n (`torch.randperm`).
    fn permutation(&mut self, n: usize) -> Vec<usize>;
    /// Uniform in [0, 1) (`random.random()`).
    fn coin(&mut self) -> f64;
    /// Uniform in 0..len, an index into the queue, 0 = oldest (`random.choice`).
    fn choice(&mut self, len: usize) -> usize;
}

impl MixupDraws for ChaCha8Rng {
    fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        p.shuffle(self);
        p
    }
    fn coin(&mut self) -> f64 {
        self.random::<f64>()
    }
    fn choice(&mut self, len: usize) -> usize {
        self.random_range(0..len)
    }
}

/// Inclusive foreground rectangle `[h_min, h_max, w_min, w_max]`.
pub type Rect = [i64; 4];

/// The strip a background is tiled from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strip {
    Top,
    Left,
    Right,
    Bottom,
}

/// What an output image was mixed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Unchanged.
    Original,
    /// The background of image `perm[i]` of the batch.
    Partner(usize),
    /// Queue entry at this index (0 = oldest) at the time of the draw.
    Queue(usize),
}

/// One call's result and bookkeeping.
pub struct BgMixOutput {
    /// (B, C, H, W) mixed images.
    pub mixed: Tensor,
    /// (B, C, H, W) background-only images (the image itself where it has no background).
    pub bg_only: Tensor,
    pub rects: Vec<Rect>,
    /// Whether each image got a background (`does_bg_exist`).
    pub flags: Vec<bool>,
    pub strips: Vec<Option<Strip>>,
    pub sources: Vec<Source>,
}

/// The official module: thresholds and the background queue, which persists across calls.
pub struct BackgroundMixup {
    pub cam_thres: f32,
    pub aug_prob: f64,
    queue: VecDeque<Tensor>,
}

impl BackgroundMixup {
    /// `cam_thres` 0.2 and `aug_prob` 0.4 (MoCo) or 0.3 (BYOL, paper) in the official runs.
    pub fn new(cam_thres: f32, aug_prob: f64) -> Self {
        Self {
            cam_thres,
            aug_prob,
            queue: VecDeque::new(),
        }
    }

    /// The queued backgrounds, oldest first.
    pub fn queue(&self) -> &VecDeque<Tensor> {
        &self.queue
    }

    /// Appends a (C, H, W) background, dropping the oldest beyond `QUEUE_LEN` (official `Queue.push`).
    pub fn push(&mut self, background: Tensor) {
        self.queue.push_back(background);
        while self.queue.len() > QUEUE_LEN {
            self.queue.pop_front();
        }
    }

    /// Mixes (B, C, H, W) images with backgrounds through their (B, H, W) soft masks.
    pub fn apply(
        &mut self,
        images: &Tensor,
        masks: &Tensor,
        draws: &mut dyn MixupDraws,
    ) -> BgMixOutput {
        let b = images.size()[0] as usize;
        let hard = masks.ge(self.cam_thres as f64).to_device(Device::Cpu);
        let perm = draws.permutation(b);
        let mut rects = Vec::with_capacity(b);
        let mut strips = Vec::with_capacity(b);
        let mut bg_only = Vec::with_capacity(b);
        for i in 0..b {
            let img = images.get(i as i64);
            let rect = foreground_rect(&hard.get(i as i64));
            let strip = self.background_strip(&img, rect, draws);
            bg_only.push(match strip {
                Some(s) => fill_with_background(&img, rect, s),
                None => img,
            });
            rects.push(rect);
            strips.push(strip);
        }
        let flags: Vec<bool> = strips.iter().map(Option::is_some).collect();
        let mut mixed = Vec::with_capacity(b);
        let mut sources = Vec::with_capacity(b);
        for i in 0..b {
            let img = images.get(i as i64);
            let m = masks.get(i as i64).unsqueeze(0);
            // The official `mask·img + (1 − mask)·bg`, broadcast over channels.
            let mix = |bg: &Tensor| -> Tensor { &m * &img + (1.0 - &m) * bg };
            let source = if !flags[i] {
                Source::Original
            } else if flags[perm[i]] {
                Source::Partner(perm[i])
            } else if self.queue.is_empty() {
                Source::Original
            } else {
                Source::Queue(draws.choice(self.queue.len()))
            };
            mixed.push(match source {
                Source::Original => img.shallow_clone(),
                Source::Partner(j) => mix(&bg_only[j]),
                Source::Queue(q) => mix(&self.queue[q]),
            });
            sources.push(source);
            if flags[i] {
                self.push(bg_only[i].shallow_clone());
            }
        }
        BgMixOutput {
            mixed: Tensor::stack(&mixed, 0),
            bg_only: Tensor::stack(&bg_only, 0),
            rects,
            flags,
            strips,
            sources,
        }
    }

    /// `generate_bg_only_img`'s decision: no background when the rectangle is the whole image (no coin)
    /// or when the coin exceeds `aug_prob`; else the largest strip (first on ties).
    fn background_strip(
        &self,
        img: &Tensor,
        [h_min, h_max, w_min, w_max]: Rect,
        draws: &mut dyn MixupDraws,
    ) -> Option<Strip> {
        let (h, w) = (img.size()[1], img.size()[2]);
        if h_max - h_min == h - 1 && w_max - w_min == w - 1 {
            return None;
        }
        if self.aug_prob < draws.coin() {
            return None;
        }
        let cand = [
            (h_min * w, Strip::Top),
            (w_min * h, Strip::Left),
            ((w - w_max - 1) * h, Strip::Right),
            ((h - h_max - 1) * w, Strip::Bottom),
        ];
        let mut best = cand[0];
        for c in &cand[1..] {
            if c.0 > best.0 {
                best = *c;
            }
        }
        // Not reachable with a rectangle inside the image that is not the whole of it.
        (best.0 > 0).then_some(best.1)
    }
}

/// The inclusive bounding rectangle of a (H, W) boolean mask; the whole image when it is empty.
pub fn foreground_rect(hard: &Tensor) -> Rect {
    let (h, w) = (hard.size()[0], hard.size()[1]);
    let any = |dim: i64| {
        Vec::<i64>::try_from(hard.any_dim(dim, false).to_kind(Kind::Int64)).unwrap_or_default()
    };
    let (rows, cols) = (any(1), any(0));
    let first = |v: &[i64]| v.iter().position(|&x| x != 0).map(|p| p as i64);
    let last = |v: &[i64]| v.iter().rposition(|&x| x != 0).map(|p| p as i64);
    match (first(&rows), last(&rows), first(&cols), last(&cols)) {
        (Some(h0), Some(h1), Some(w0), Some(w1)) => [h0, h1, w0, w1],
        _ => [0, h - 1, 0, w - 1],
    }
}

/// The image with `[h_min:h_max, w_min:w_max]` (end-exclusive) replaced by the strip tiled periodically
/// over the image: top rows [0, h_min), left columns [0, w_min), right columns [w_max, W), bottom rows
/// [h_max, H).
pub fn fill_with_background(
    img: &Tensor,
    [h_min, h_max, w_min, w_max]: Rect,
    strip: Strip,
) -> Tensor {
    let (h, w) = (img.size()[1], img.size()[2]);
    let idx = |n: i64, start: i64, len: i64| {
        let v: Vec<i64> = (0..n).map(|r| start + r % len).collect();
        Tensor::from_slice(&v).to_device(img.device())
    };
    let tiled = match strip {
        Strip::Top => img.index_select(1, &idx(h, 0, h_min)),
        Strip::Left => img.index_select(2, &idx(w, 0, w_min)),
        Strip::Right => img.index_select(2, &idx(w, w_max, w - w_max)),
        Strip::Bottom => img.index_select(1, &idx(h, h_max, h - h_max)),
    };
    let out = img.copy();
    let (dh, dw) = (h_max - h_min, w_max - w_min);
    if dh > 0 && dw > 0 {
        let region = |t: &Tensor| t.narrow(1, h_min, dh).narrow(2, w_min, dw);
        let mut dst = region(&out);
        tch::no_grad(|| dst.copy_(&region(&tiled)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::rng_for;

    fn batch(b: i64) -> (Tensor, Tensor) {
        let img =
            Tensor::arange(b * 3 * 8 * 10, (Kind::Float, Device::Cpu)).view([b, 3, 8, 10]) / 1000.0;
        // A 3×4 foreground block per image, away from the borders.
        let masks = Tensor::zeros([b, 8, 10], (Kind::Float, Device::Cpu));
        let _ = masks.narrow(1, 2, 3).narrow(2, 3, 4).fill_(0.9);
        (img, masks)
    }

    #[test]
    fn random_path_is_seeded_and_the_queue_stays_bounded() {
        let (img, masks) = batch(16);
        let run = || {
            let mut m = BackgroundMixup::new(0.2, 1.0);
            let mut rng = rng_for(5, "bgmix");
            let mut outs = Vec::new();
            for _ in 0..4 {
                outs.push(m.apply(&img, &masks, &mut rng).mixed);
                assert!(m.queue().len() <= QUEUE_LEN);
            }
            (outs, m.queue().len())
        };
        let (a, len) = run();
        let (b, _) = run();
        assert_eq!(len, QUEUE_LEN, "64 backgrounds pushed, 50 kept");
        for (x, y) in a.iter().zip(&b) {
            assert!(x.equal(y), "same seed, same mixes");
        }
        // aug_prob 1: every image has a background and is mixed outside its foreground.
        assert!(!a[0].equal(&img));
        let fg = |t: &Tensor| t.narrow(2, 2, 3).narrow(3, 3, 4).copy();
        assert!(
            !fg(&a[0]).equal(&fg(&img)),
            "soft mask 0.9 keeps 10% of the partner"
        );
    }

    #[test]
    fn whole_image_foreground_draws_nothing_and_passes_through() {
        let (img, _) = batch(4);
        let masks = Tensor::ones([4, 8, 10], (Kind::Float, Device::Cpu));
        let mut m = BackgroundMixup::new(0.2, 1.0);
        let out = m.apply(&img, &masks, &mut rng_for(1, "bgmix"));
        assert!(out.mixed.equal(&img));
        assert!(out.flags.iter().all(|f| !f));
        assert!(m.queue().is_empty());
    }
}
