//! The per-sample CPU transforms of the official data path (torchvision 0.9.1 semantics, as pinned by the
//! official `requirements.txt`).
//!
//! - Pretraining (`data/transforms.py::PretrainTransform`): `RandomResizedCrop(224, scale=(0.08, 1))` +
//!   `RandomHorizontalFlip(0.5)` on the PIL image: an integer crop, then Pillow's antialiased bilinear resize
//!   ([`crate::imgops::resize::resize_bilinear_pil_rgb8`], bit-exact) to 224×224, 8-bit.
//! - BG-Mixup (`PretrainTransform(use_mask=True)`): the image and mask are `ToTensor`ed first, so both views
//!   take torchvision's tensor path: the same integer crop, then `F.interpolate(bilinear,
//!   align_corners=False)` without antialiasing, in float32 ([`resize_bilinear_f32`]).
//! - Evaluation: `Resize(256)` on the short side + `CenterCrop(224)` (linear evaluation,
//!   `FinetuneTransform(crop='center')`), or `Resize((224, 224))` (ContraCAM, `transform_orig`).
//! - OA-Crop (`COCOBox.__getitem__`): `img.crop(box)` with the box scaled by the image size; Pillow rounds
//!   the coordinates with Python's `round` (half to even).
use image::{GrayImage, RgbImage};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::imgops::resize::resize_bilinear_pil_rgb8;

/// `(top, left, height, width)` of an integer crop, as torchvision's `get_params` returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropRect {
    pub top: u32,
    pub left: u32,
    pub height: u32,
    pub width: u32,
}

/// `RandomResizedCrop` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomResizedCrop {
    pub size: u32,
    pub scale: [f64; 2],
    pub ratio: [f64; 2],
    /// `RandomHorizontalFlip` probability applied after the crop.
    pub hflip_p: f64,
}

impl Default for RandomResizedCrop {
    /// The official pretraining setting: 224 px, scale (0.08, 1) (the paper's change from 0.2), ratio
    /// (3/4, 4/3), flip 0.5.
    fn default() -> Self {
        RandomResizedCrop {
            size: 224,
            scale: [0.08, 1.0],
            ratio: [3.0 / 4.0, 4.0 / 3.0],
            hflip_p: 0.5,
        }
    }
}

impl RandomResizedCrop {
    pub fn validate(&self) -> Result<(), String> {
        let [s0, s1] = self.scale;
        let [r0, r1] = self.ratio;
        if self.size == 0 || self.size > 4096 {
            return Err(format!("crop size {} must be in 1..=4096", self.size));
        }
        if !(s0 > 0.0 && s0 <= s1 && s1 <= 1.0) {
            return Err(format!("crop scale [{s0}, {s1}] needs 0 < min <= max <= 1"));
        }
        if !(r0 > 0.0 && r0 <= r1 && r1.is_finite()) {
            return Err(format!("crop ratio [{r0}, {r1}] needs 0 < min <= max"));
        }
        if !(0.0..=1.0).contains(&self.hflip_p) {
            return Err(format!(
                "flip probability {} is not in [0, 1]",
                self.hflip_p
            ));
        }
        Ok(())
    }

    /// torchvision's `RandomResizedCrop.get_params` for a `width`×`height` image: ten tries at an area
    /// fraction ~ U(scale) and a log-uniform aspect ratio (both drawn in float32 as `torch.empty(1).uniform_`),
    /// sides rounded with Python's `round`, offsets `randint(0, side - crop + 1)`; else the centre crop
    /// clamped to the ratio range.
    pub fn params(&self, rng: &mut ChaCha8Rng, width: u32, height: u32) -> CropRect {
        let (wf, hf) = (width as f64, height as f64);
        let area = wf * hf;
        let (lr0, lr1) = ((self.ratio[0] as f32).ln(), (self.ratio[1] as f32).ln());
        for _ in 0..10 {
            let u = uniform_f32(rng, self.scale[0] as f32, self.scale[1] as f32);
            let target = area * u as f64;
            let aspect = uniform_f32(rng, lr0, lr1).exp() as f64;
            let w = (target * aspect).sqrt().round_ties_even();
            let h = (target / aspect).sqrt().round_ties_even();
            if 0.0 < w && w <= wf && 0.0 < h && h <= hf {
                let (w, h) = (w as u32, h as u32);
                let top = rng.random_range(0..=height - h);
                let left = rng.random_range(0..=width - w);
                return CropRect {
                    top,
                    left,
                    height: h,
                    width: w,
                };
            }
        }
        let in_ratio = wf / hf;
        let (lo, hi) = (
            self.ratio[0].min(self.ratio[1]),
            self.ratio[0].max(self.ratio[1]),
        );
        let (w, h) = if in_ratio < lo {
            (width, ((wf / lo).round_ties_even() as u32).clamp(1, height))
        } else if in_ratio > hi {
            (((hf * hi).round_ties_even() as u32).clamp(1, width), height)
        } else {
            (width, height)
        };
        CropRect {
            top: (height - h) / 2,
            left: (width - w) / 2,
            height: h,
            width: w,
        }
    }
}

/// `torch.empty(1).uniform_(lo, hi)` in float32: `lo + (hi − lo)·u` with u uniform in [0, 1).
fn uniform_f32(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> f32 {
    let u: f32 = rng.random();
    lo + (hi - lo) * u
}

/// The region of an 8-bit RGB image, copied.
pub fn crop_rgb(img: &RgbImage, r: CropRect) -> RgbImage {
    let (w, h) = img.dimensions();
    debug_assert!(r.left + r.width <= w && r.top + r.height <= h);
    let src = img.as_raw();
    let mut out = Vec::with_capacity((r.width * r.height * 3) as usize);
    for y in r.top..r.top + r.height {
        let start = ((y * w + r.left) * 3) as usize;
        out.extend_from_slice(&src[start..start + (r.width * 3) as usize]);
    }
    RgbImage::from_raw(r.width, r.height, out).unwrap_or_else(|| RgbImage::new(r.width, r.height))
}

/// The region of a gray image, copied.
pub fn crop_gray(img: &GrayImage, r: CropRect) -> GrayImage {
    let w = img.width();
    let src = img.as_raw();
    let mut out = Vec::with_capacity((r.width * r.height) as usize);
    for y in r.top..r.top + r.height {
        let start = (y * w + r.left) as usize;
        out.extend_from_slice(&src[start..start + r.width as usize]);
    }
    GrayImage::from_raw(r.width, r.height, out).unwrap_or_else(|| GrayImage::new(r.width, r.height))
}

/// Pillow's `img.resize((w, h), Image.BILINEAR)`.
pub fn resize_pil(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    if img.dimensions() == (w, h) {
        return img.clone();
    }
    let px = resize_bilinear_pil_rgb8(
        img.as_raw(),
        img.width() as usize,
        img.height() as usize,
        w as usize,
        h as usize,
    );
    RgbImage::from_raw(w, h, px).unwrap_or_else(|| RgbImage::new(w, h))
}

/// Mirrors an 8-bit RGB image left to right in place.
pub fn hflip_rgb(img: &mut RgbImage) {
    let w = img.width() as usize;
    for row in img.chunks_exact_mut(w * 3) {
        for x in 0..w / 2 {
            for c in 0..3 {
                row.swap(x * 3 + c, (w - 1 - x) * 3 + c);
            }
        }
    }
}

/// torchvision `Resize(size)` on a PIL image (0.9.1): the short side becomes `size`, the long one
/// `int(size · long / short)`; an image whose short side is already `size` is returned unchanged.
pub fn resize_short_side_pil(img: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    if (w <= h && w == size) || (h <= w && h == size) {
        return img.clone();
    }
    let (ow, oh) = if w < h {
        (size, (size as f64 * h as f64 / w as f64) as u32)
    } else {
        ((size as f64 * w as f64 / h as f64) as u32, size)
    };
    resize_pil(img, ow.max(1), oh.max(1))
}

/// torchvision `CenterCrop(size)` (0.9.1): offsets `int(round((side − size) / 2))` with Python's `round`; an
/// image smaller than the crop is first padded with zeros on both sides (`(size − side) // 2` before,
/// the rest after).
pub fn center_crop(img: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let padded;
    let img = if w < size || h < size {
        let (pw, ph) = (size.saturating_sub(w), size.saturating_sub(h));
        let (l, t) = (pw / 2, ph / 2);
        let (nw, nh) = (w + pw, h + ph);
        let mut out = RgbImage::new(nw, nh);
        for y in 0..h {
            for x in 0..w {
                out.put_pixel(x + l, y + t, *img.get_pixel(x, y));
            }
        }
        padded = out;
        &padded
    } else {
        img
    };
    let (w, h) = img.dimensions();
    let top = ((h - size) as f64 / 2.0).round_ties_even() as u32;
    let left = ((w - size) as f64 / 2.0).round_ties_even() as u32;
    crop_rgb(
        img,
        CropRect {
            top,
            left,
            height: size,
            width: size,
        },
    )
}

/// OA-Crop's `img.crop(upscale_box(box, img.size))`: the normalised box scaled by (W, H) and rounded as
/// Pillow's `crop` does (`int(round(v))`, half to even). `None` when the rounded box is empty or does not
/// lie inside the image (box files are validated to [0, 1], so that means a box thinner than a pixel).
pub fn object_crop_rect(bx: [f64; 4], width: u32, height: u32) -> Option<CropRect> {
    let (w, h) = (width as f64, height as f64);
    let r = |v: f64| v.round_ties_even();
    let (x0, y0, x1, y1) = (r(bx[0] * w), r(bx[1] * h), r(bx[2] * w), r(bx[3] * h));
    if !(0.0 <= x0 && x0 < x1 && x1 <= w && 0.0 <= y0 && y0 < y1 && y1 <= h) {
        return None;
    }
    Some(CropRect {
        top: y0 as u32,
        left: x0 as u32,
        height: (y1 - y0) as u32,
        width: (x1 - x0) as u32,
    })
}

/// A float32 image in planes (C, H, W), as `ToTensor` gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Planes {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl Planes {
    /// `ToTensor` of an RGB image, with the mask as a fourth plane when given (`torch.cat([img, mask])`):
    /// `value / 255` in float32.
    pub fn from_rgb(img: &RgbImage, mask: Option<&GrayImage>) -> Planes {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let c = 3 + mask.is_some() as usize;
        let mut data = vec![0f32; c * h * w];
        let plane = h * w;
        for (p, px) in img.as_raw().chunks_exact(3).enumerate() {
            for k in 0..3 {
                data[k * plane + p] = px[k] as f32 / 255.0;
            }
        }
        if let Some(m) = mask {
            for (p, &v) in m.as_raw().iter().enumerate().take(plane) {
                data[3 * plane + p] = v as f32 / 255.0;
            }
        }
        Planes {
            channels: c,
            height: h,
            width: w,
            data,
        }
    }

    pub fn crop(&self, r: CropRect) -> Planes {
        let (t, l, ch, cw) = (
            r.top as usize,
            r.left as usize,
            r.height as usize,
            r.width as usize,
        );
        let mut data = Vec::with_capacity(self.channels * ch * cw);
        for c in 0..self.channels {
            for y in t..t + ch {
                let start = (c * self.height + y) * self.width + l;
                data.extend_from_slice(&self.data[start..start + cw]);
            }
        }
        Planes {
            channels: self.channels,
            height: ch,
            width: cw,
            data,
        }
    }

    pub fn hflip(&mut self) {
        for row in self.data.chunks_exact_mut(self.width) {
            row.reverse();
        }
    }
}

/// `F.interpolate(x, (out_h, out_w), mode='bilinear', align_corners=False)` on the CPU in float32, as
/// ATen's `upsample_bilinear2d` computes it: source index `scale·(i + 0.5) − 0.5` (one fused multiply-add,
/// as ATen's AVX2 build computes it) clamped at 0 with `scale = in / out` in float32, the upper neighbour
/// clamped to the last row/column, and `h0·(w0·a + w1·b) + h1·(w0·c + w1·d)` with the first product of
/// each sum fused. ATen fuses the blending differently in different vector loops, so results agree within
/// one float32 ulp at 1.0 (exactly when only the width changes); the tests measure it.
pub fn resize_bilinear_f32(src: &Planes, out_h: usize, out_w: usize) -> Planes {
    let taps = |inp: usize, out: usize| -> Vec<(usize, usize, f32, f32)> {
        let scale = inp as f32 / out as f32;
        (0..out)
            .map(|o| {
                let real = scale.mul_add(o as f32 + 0.5, -0.5).max(0.0);
                let i0 = (real.floor() as usize).min(inp - 1);
                let l1 = (real - i0 as f32).clamp(0.0, 1.0);
                let i1 = if i0 < inp - 1 { i0 + 1 } else { i0 };
                (i0, i1, 1.0 - l1, l1)
            })
            .collect()
    };
    let (xt, yt) = (taps(src.width, out_w), taps(src.height, out_h));
    let mut data = vec![0f32; src.channels * out_h * out_w];
    for c in 0..src.channels {
        let plane = &src.data[c * src.height * src.width..(c + 1) * src.height * src.width];
        let out = &mut data[c * out_h * out_w..(c + 1) * out_h * out_w];
        for (y, &(y0, y1, h0, h1)) in yt.iter().enumerate() {
            let r0 = &plane[y0 * src.width..(y0 + 1) * src.width];
            let r1 = &plane[y1 * src.width..(y1 + 1) * src.width];
            for (x, &(x0, x1, w0, w1)) in xt.iter().enumerate() {
                let top = r0[x0].mul_add(w0, r0[x1] * w1);
                let bottom = r1[x0].mul_add(w0, r1[x1] * w1);
                out[y * out_w + x] = top.mul_add(h0, bottom * h1);
            }
        }
    }
    Planes {
        channels: src.channels,
        height: out_h,
        width: out_w,
        data,
    }
}

/// An 8-bit RGB image as planes (C, H, W) of bytes, the layout batches are collated in.
pub fn rgb_to_chw(img: &RgbImage) -> Vec<u8> {
    let plane = (img.width() * img.height()) as usize;
    let mut out = vec![0u8; 3 * plane];
    for (p, px) in img.as_raw().chunks_exact(3).enumerate() {
        out[p] = px[0];
        out[plane + p] = px[1];
        out[2 * plane + p] = px[2];
    }
    out
}

/// A deterministic evaluation transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalTransform {
    /// `Resize(resize)` on the short side + `CenterCrop(crop)`: linear evaluation (256, 224).
    ResizeCenterCrop { resize: u32, crop: u32 },
    /// `Resize((size, size))`: ContraCAM's input.
    Resize { size: u32 },
}

impl EvalTransform {
    /// The official linear-evaluation transform for `image_size`: Resize(256)+CenterCrop(224) at 224, else
    /// Resize(s)+CenterCrop(s).
    pub fn linear_eval(image_size: u32) -> EvalTransform {
        let resize = if image_size == 224 { 256 } else { image_size };
        EvalTransform::ResizeCenterCrop {
            resize,
            crop: image_size,
        }
    }

    pub fn output_size(self) -> u32 {
        match self {
            EvalTransform::ResizeCenterCrop { crop, .. } => crop,
            EvalTransform::Resize { size } => size,
        }
    }

    pub fn apply(self, img: &RgbImage) -> RgbImage {
        match self {
            EvalTransform::ResizeCenterCrop { resize, crop } => {
                center_crop(&resize_short_side_pil(img, resize), crop)
            }
            EvalTransform::Resize { size } => resize_pil(img, size, size),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::rng_for;

    #[test]
    fn crop_params_stay_inside_and_follow_the_scale_range() {
        let t = RandomResizedCrop::default();
        let mut rng = rng_for(0, "t");
        let mut fallback = 0;
        for k in 0..2000 {
            let (w, h) = (50 + (k % 37) * 13, 40 + (k % 23) * 17);
            let r = t.params(&mut rng, w, h);
            assert!(r.width > 0 && r.height > 0);
            assert!(
                r.left + r.width <= w && r.top + r.height <= h,
                "{r:?} in {w}x{h}"
            );
            let frac = (r.width * r.height) as f64 / (w * h) as f64;
            // Rounding the sides moves the area a little around the [0.08, 1] range.
            assert!(frac > 0.06 && frac <= 1.0, "{frac}");
            fallback += (r.width == w || r.height == h) as u32;
        }
        assert!(fallback < 400, "{fallback} crops touched both edges");
        // A 1-pixel-wide image can only give the fallback centre crop.
        let r = t.params(&mut rng, 1, 100);
        assert_eq!((r.width, r.height, r.left), (1, 1, 0));
        assert_eq!(r.top, 49);
    }

    #[test]
    fn center_crop_rounds_half_to_even_like_python() {
        // (257 − 224) / 2 = 16.5 → 16; (259 − 224) / 2 = 17.5 → 18.
        let img = RgbImage::from_fn(259, 257, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let c = center_crop(&img, 224);
        assert_eq!(c.get_pixel(0, 0).0, [18, 16, 0]);
        // Smaller than the crop: zero padding, image placed at ((224 − 100) // 2).
        let small = RgbImage::from_pixel(100, 224, image::Rgb([9, 9, 9]));
        let c = center_crop(&small, 224);
        assert_eq!(c.get_pixel(61, 0).0, [0, 0, 0]);
        assert_eq!(c.get_pixel(62, 0).0, [9, 9, 9]);
        assert_eq!(c.get_pixel(161, 0).0, [9, 9, 9]);
        assert_eq!(c.get_pixel(162, 0).0, [0, 0, 0]);
    }

    #[test]
    fn short_side_resize_sizes() {
        let img = RgbImage::new(500, 375);
        assert_eq!(resize_short_side_pil(&img, 256).dimensions(), (341, 256));
        let img = RgbImage::new(333, 500);
        assert_eq!(resize_short_side_pil(&img, 256).dimensions(), (256, 384));
        let img = RgbImage::new(256, 300);
        assert_eq!(resize_short_side_pil(&img, 256).dimensions(), (256, 300));
    }

    #[test]
    fn object_crop_rounds_like_pillow() {
        // 0.25·10 = 2.5 → 2, 0.35·10 = 3.5 → 4, 0.75·10 = 7.5 → 8.
        let r = object_crop_rect([0.25, 0.35, 0.75, 1.0], 10, 10).unwrap();
        assert_eq!(
            r,
            CropRect {
                top: 4,
                left: 2,
                height: 6,
                width: 6
            }
        );
        assert!(object_crop_rect([0.5, 0.0, 0.52, 1.0], 10, 10).is_none());
    }

    #[test]
    fn flips_mirror() {
        let mut img = RgbImage::from_fn(3, 1, |x, _| image::Rgb([x as u8, 0, 0]));
        hflip_rgb(&mut img);
        assert_eq!(img.as_raw(), &[2, 0, 0, 1, 0, 0, 0, 0, 0]);
        let mut p = Planes::from_rgb(
            &RgbImage::from_fn(3, 1, |x, _| image::Rgb([x as u8, 0, 0])),
            None,
        );
        p.hflip();
        assert_eq!(&p.data[..3], &[2.0 / 255.0, 1.0 / 255.0, 0.0]);
    }
}
