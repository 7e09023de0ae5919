//! How a ground-truth mask file becomes foreground: the sample index's `mask_rule` header field.
use image::{DynamicImage, GrayImage};

use super::decode::{decode, to_luma_pil, to_rgb};

/// The rules a builder can write into an index header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskRule {
    /// Value > 0 of the gray image (masks written by contracam, COCO union masks).
    Binary,
    /// CUB: `convert('L')`, ToTensor, `> 0.5`, i.e. value ≥ 128.
    GrayGt127,
    /// Flowers `segmim`: foreground iff R ≠ 0 and G ≠ 0 and B ≠ 254 (the background is pure blue).
    FlowersNotBlue,
    /// IN-9 `only_fg`: all three channels > 0 (the paper applies it after resizing to 224; here it is
    /// applied at the stored size).
    RgbAllPositive,
    /// Pets trimaps: value 1 (pet); 2 (background) and 3 (border) are not foreground.
    PetsTrimap,
    /// VOC `SegmentationClass`: palette index not 0 (background) and not 255 (void).
    VocPalette,
}

impl MaskRule {
    /// Parses the header string; `None` (no rule in the header) means `binary`.
    pub fn parse(rule: Option<&str>) -> Result<MaskRule, String> {
        Ok(match rule.unwrap_or("binary") {
            "binary" => MaskRule::Binary,
            "gray-gt-127" => MaskRule::GrayGt127,
            "flowers-not-blue" => MaskRule::FlowersNotBlue,
            "rgb-all-positive" => MaskRule::RgbAllPositive,
            "pets-trimap" => MaskRule::PetsTrimap,
            "voc-palette" => MaskRule::VocPalette,
            other => {
                return Err(format!(
                    "unknown mask_rule {other:?} (known: binary, gray-gt-127, flowers-not-blue, \
                     rgb-all-positive, pets-trimap, voc-palette)"
                ))
            }
        })
    }

    /// Foreground of an encoded mask file: 255 where the rule says foreground, else 0.
    pub fn foreground_of_file(self, bytes: &[u8]) -> Result<GrayImage, String> {
        if self == MaskRule::VocPalette {
            if let Some(idx) = png_palette_indices(bytes)? {
                return Ok(GrayImage::from_raw(
                    idx.0,
                    idx.1,
                    idx.2.into_iter().map(|v| fg(v != 0 && v != 255)).collect(),
                )
                .unwrap_or_else(|| GrayImage::new(idx.0, idx.1)));
            }
        }
        Ok(self.foreground(decode(bytes)?))
    }

    /// Foreground of a decoded mask: 255 where the rule says foreground, else 0. A VOC palette image must
    /// go through [`MaskRule::foreground_of_file`] (decoding expands the palette, losing the indices).
    pub fn foreground(self, img: DynamicImage) -> GrayImage {
        let (w, h) = (img.width(), img.height());
        let px: Vec<u8> = match self {
            MaskRule::Binary => gray_map(img, |v| v > 0),
            MaskRule::GrayGt127 => gray_map(img, |v| v >= 128),
            MaskRule::PetsTrimap => gray_map(img, |v| v == 1),
            // A gray image holds the indices already; colours are matched to the VOC colour map's
            // background (0, 0, 0) and void (224, 224, 192).
            MaskRule::VocPalette => match img {
                DynamicImage::ImageLuma8(g) => {
                    g.as_raw().iter().map(|&v| fg(v != 0 && v != 255)).collect()
                }
                other => to_rgb(other)
                    .as_raw()
                    .chunks_exact(3)
                    .map(|p| fg(p != [0, 0, 0] && p != [224, 224, 192]))
                    .collect(),
            },
            MaskRule::FlowersNotBlue => to_rgb(img)
                .as_raw()
                .chunks_exact(3)
                .map(|p| fg(p[0] != 0 && p[1] != 0 && p[2] != 254))
                .collect(),
            MaskRule::RgbAllPositive => to_rgb(img)
                .as_raw()
                .chunks_exact(3)
                .map(|p| fg(p[0] > 0 && p[1] > 0 && p[2] > 0))
                .collect(),
        };
        GrayImage::from_raw(w, h, px).unwrap_or_else(|| GrayImage::new(w, h))
    }
}

/// The raw palette indices of an 8-bit indexed PNG (width, height, indices), or `None` for other files.
fn png_palette_indices(bytes: &[u8]) -> Result<Option<(u32, u32, Vec<u8>)>, String> {
    if !bytes.starts_with(b"\x89PNG") {
        return Ok(None);
    }
    let mut dec = png::Decoder::new(std::io::Cursor::new(bytes));
    dec.set_transformations(png::Transformations::IDENTITY);
    let mut reader = dec.read_info().map_err(|e| e.to_string())?;
    let info = reader.info();
    if info.color_type != png::ColorType::Indexed || info.bit_depth != png::BitDepth::Eight {
        return Ok(None);
    }
    let (w, h) = (info.width, info.height);
    let mut buf = vec![0u8; reader.output_buffer_size().ok_or("PNG too large")?];
    let frame = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    buf.truncate(frame.buffer_size());
    Ok(Some((w, h, buf)))
}

fn fg(b: bool) -> u8 {
    if b {
        255
    } else {
        0
    }
}

fn gray_map(img: DynamicImage, f: impl Fn(u8) -> bool) -> Vec<u8> {
    to_luma_pil(img)
        .into_raw()
        .into_iter()
        .map(|v| fg(f(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_pick_the_documented_pixels() {
        let g = |v: &[u8]| {
            DynamicImage::ImageLuma8(GrayImage::from_raw(v.len() as u32, 1, v.to_vec()).unwrap())
        };
        let rgb = |v: &[[u8; 3]]| {
            DynamicImage::ImageRgb8(
                image::RgbImage::from_raw(v.len() as u32, 1, v.concat()).unwrap(),
            )
        };
        let fgv = |r: MaskRule, img| r.foreground(img).into_raw();
        assert_eq!(fgv(MaskRule::Binary, g(&[0, 1, 255])), [0, 255, 255]);
        assert_eq!(fgv(MaskRule::GrayGt127, g(&[127, 128, 255])), [0, 255, 255]);
        assert_eq!(fgv(MaskRule::PetsTrimap, g(&[1, 2, 3])), [255, 0, 0]);
        assert_eq!(fgv(MaskRule::VocPalette, g(&[0, 5, 255])), [0, 255, 0]);
        assert_eq!(
            fgv(
                MaskRule::FlowersNotBlue,
                rgb(&[[0, 0, 254], [3, 4, 254], [3, 4, 5], [0, 9, 9]])
            ),
            [0, 0, 255, 0]
        );
        assert_eq!(
            fgv(MaskRule::RgbAllPositive, rgb(&[[1, 1, 1], [1, 0, 1]])),
            [255, 0]
        );
        // Indexed PNG: indices 0 (background), 3 (a class), 255 (void) whatever the palette colours.
        let mut buf = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut buf, 3, 1);
            enc.set_color(png::ColorType::Indexed);
            enc.set_depth(png::BitDepth::Eight);
            let mut pal = vec![7u8; 256 * 3];
            pal[0..3].copy_from_slice(&[9, 9, 9]);
            enc.set_palette(pal);
            let mut w = enc.write_header().unwrap();
            w.write_image_data(&[0, 3, 255]).unwrap();
        }
        assert_eq!(
            MaskRule::VocPalette
                .foreground_of_file(&buf)
                .unwrap()
                .into_raw(),
            [0, 255, 0]
        );
        assert_eq!(MaskRule::parse(None), Ok(MaskRule::Binary));
        assert!(MaskRule::parse(Some("blue"))
            .unwrap_err()
            .contains("unknown mask_rule"));
    }
}
