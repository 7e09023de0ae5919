//! Image files to pixels, as `PIL.Image.open(p).convert('RGB')` / `.convert('L')` see them.
//!
//! JPEG goes to zune-jpeg directly, in strict mode: a truncated or corrupt file is an error, as Pillow
//! raises "image file is truncated", where the lenient default (what the `image` crate uses) fills the rest
//! with gray. PNG goes through the `image` crate. Grayscale is replicated to three channels, palette images are expanded through their
//! palette, an alpha channel is dropped without compositing (all as Pillow's `convert('RGB')`), CMYK JPEGs
//! are converted by the decoder. `convert('L')` of a colour image uses Pillow's integer luma
//! `(19595 R + 38470 G + 7471 B + 0x8000) >> 16`, not the `image` crate's Rec. 709 weights.
//!
//! Known differences from Pillow, all on inputs the paper's datasets do not contain as far as we know:
//! 16-bit images are scaled to 8 bits (Pillow clips `I;16` values to 255), and the CMYK→RGB formula is the
//! decoder's, not Pillow's `cmyk2rgb`.
use image::{DynamicImage, GrayImage, RgbImage};

/// Decodes an encoded image (format sniffed from its bytes) to 8-bit RGB.
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage, String> {
    if is_jpeg(bytes) {
        return decode_jpeg_rgb(bytes);
    }
    Ok(to_rgb(decode(bytes)?))
}

fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// zune-jpeg in strict mode, converting to RGB (gray replicated, CMYK/YCCK by the decoder).
pub fn decode_jpeg_rgb(bytes: &[u8]) -> Result<RgbImage, String> {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    let opts = DecoderOptions::default()
        .set_strict_mode(true)
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(1 << 16)
        .set_max_height(1 << 16);
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), opts);
    let px = dec.decode().map_err(|e| format!("JPEG: {e:?}"))?;
    let info = dec.info().ok_or("JPEG: no header")?;
    let (w, h) = (info.width as u32, info.height as u32);
    if w == 0 || h == 0 {
        return Err("image has no pixels".into());
    }
    RgbImage::from_raw(w, h, px)
        .ok_or_else(|| format!("JPEG: decoder returned the wrong size for {w}x{h}"))
}

/// Decodes an encoded image to 8-bit luma as Pillow's `convert('L')`.
pub fn decode_luma(bytes: &[u8]) -> Result<GrayImage, String> {
    Ok(to_luma_pil(decode(bytes)?))
}

/// Decodes an encoded image as it is stored (for mask rules that read colours or palette indices).
pub fn decode(bytes: &[u8]) -> Result<DynamicImage, String> {
    if is_jpeg(bytes) {
        return decode_jpeg_rgb(bytes).map(DynamicImage::ImageRgb8);
    }
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    if reader.format().is_none() {
        return Err("not a JPEG or PNG file (unrecognised header)".into());
    }
    let img = reader.decode().map_err(|e| e.to_string())?;
    if img.width() == 0 || img.height() == 0 {
        return Err("image has no pixels".into());
    }
    Ok(img)
}

/// `convert('RGB')`.
pub fn to_rgb(img: DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(x) => x,
        other => other.to_rgb8(),
    }
}

/// `convert('L')`: a gray image as it is, a colour one through Pillow's integer luma.
pub fn to_luma_pil(img: DynamicImage) -> GrayImage {
    match img {
        DynamicImage::ImageLuma8(x) => x,
        DynamicImage::ImageLumaA8(x) => GrayImage::from_fn(x.width(), x.height(), |px, py| {
            image::Luma([x.get_pixel(px, py)[0]])
        }),
        other => {
            let rgb = to_rgb(other);
            let (w, h) = rgb.dimensions();
            let px = rgb.as_raw().chunks_exact(3).map(pil_luma).collect();
            GrayImage::from_raw(w, h, px).unwrap_or_else(|| GrayImage::new(w, h))
        }
    }
}

/// Pillow's `rgb2l`: `L24(rgb) >> 16` with `L24 = R·19595 + G·38470 + B·7471 + 0x8000`.
pub fn pil_luma(rgb: &[u8]) -> u8 {
    ((rgb[0] as u32 * 19595 + rgb[1] as u32 * 38470 + rgb[2] as u32 * 7471 + 0x8000) >> 16) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(img: DynamicImage, fmt: image::ImageFormat) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, fmt).unwrap();
        out.into_inner()
    }

    #[test]
    fn gray_palette_and_alpha_become_rgb_as_pillow() {
        let gray = GrayImage::from_fn(5, 3, |x, y| image::Luma([(x * 40 + y) as u8]));
        let rgb = decode_rgb(&encode(gray.clone().into(), image::ImageFormat::Png)).unwrap();
        assert_eq!(rgb.dimensions(), (5, 3));
        assert_eq!(rgb.get_pixel(2, 1).0, [81, 81, 81]);
        let rgba = image::RgbaImage::from_fn(4, 4, |x, _| image::Rgba([10 * x as u8, 7, 9, 0]));
        let rgb = decode_rgb(&encode(rgba.into(), image::ImageFormat::Png)).unwrap();
        assert_eq!(
            rgb.get_pixel(3, 0).0,
            [30, 7, 9],
            "alpha dropped, not composited"
        );
        // An indexed PNG with a 2-entry palette.
        let mut buf = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut buf, 2, 1);
            enc.set_color(png::ColorType::Indexed);
            enc.set_depth(png::BitDepth::Eight);
            enc.set_palette(vec![255u8, 0, 0, 0, 0, 255]);
            let mut w = enc.write_header().unwrap();
            w.write_image_data(&[1, 0]).unwrap();
        }
        let rgb = decode_rgb(&buf).unwrap();
        assert_eq!(rgb.as_raw(), &[0, 0, 255, 255, 0, 0]);
        let l = decode_luma(&buf).unwrap();
        assert_eq!(
            l.as_raw(),
            &[pil_luma(&[0, 0, 255]), pil_luma(&[255, 0, 0])]
        );
        assert_eq!(l.as_raw(), &[29, 76], "Pillow's L of pure blue and red");
    }

    #[test]
    fn garbage_and_truncated_files_are_errors() {
        assert!(decode_rgb(b"not an image").is_err());
        let jpg = encode(
            RgbImage::from_fn(32, 32, |x, y| image::Rgb([x as u8 * 8, y as u8 * 8, 0])).into(),
            image::ImageFormat::Jpeg,
        );
        let full = decode_rgb(&jpg).unwrap();
        // Same pixels as the `image` crate's decoder (both zune-jpeg), only stricter.
        assert_eq!(full, image::load_from_memory(&jpg).unwrap().to_rgb8());
        for cut in [jpg.len() / 3, jpg.len() / 2, jpg.len() - 40] {
            assert!(
                decode_rgb(&jpg[..cut]).is_err(),
                "JPEG cut at {cut} of {}",
                jpg.len()
            );
        }
        // A grayscale JPEG is replicated to three channels.
        let gray_jpg = encode(
            image::DynamicImage::ImageRgb8(full.clone()).grayscale(),
            image::ImageFormat::Jpeg,
        );
        let g = decode_rgb(&gray_jpg).unwrap();
        assert!(g.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
        assert_eq!(g, image::load_from_memory(&gray_jpg).unwrap().to_rgb8());
        let png = encode(full.into(), image::ImageFormat::Png);
        assert!(decode_rgb(&png[..png.len() - 20]).is_err());
    }
}
