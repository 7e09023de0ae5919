//! `eval miou --dataset` reads ground-truth masks in the official order for their `mask_rule`: gray CUB
//! masks and IN-9 `only_fg` images are resized (PIL bilinear) before they are thresholded, binary rules are
//! thresholded first. The fixture's striped masks give clearly different foregrounds under the two orders.
use std::path::Path;

use contracam::data::index::{Sample, SplitIndex};
use contracam::data::loader::transform::resize_pil;
use contracam::data::loader::IndexSource;
use contracam::eval::dataset::miou_over_split;

const W: u32 = 64;
const H: u32 = 48;
const S: u32 = 32;

/// Vertical stripes with a period of 3 pixels: `on` on one column, `off` on the next two.
fn stripes(on: [u8; 3], off: [u8; 3]) -> image::RgbImage {
    image::RgbImage::from_fn(W, H, |x, _| image::Rgb(if x % 3 == 0 { on } else { off }))
}

/// A one-sample split whose mask file is `mask` and whose header says `rule`; the predicted mask is
/// all foreground, so the IoU is the ground truth's foreground fraction at S×S. Returns that IoU.
fn miou_of(dir: &Path, rule: &str, mask: &image::DynamicImage) -> f64 {
    let root = dir.join(rule);
    std::fs::create_dir_all(root.join("images/c0")).unwrap();
    std::fs::create_dir_all(root.join("masks/c0")).unwrap();
    image::RgbImage::new(W, H)
        .save(root.join("images/c0/a.png"))
        .unwrap();
    mask.save(root.join("masks/c0/a.png")).unwrap();
    let sample = Sample {
        path: "images/c0/a.png".into(),
        labels: vec![0],
        mask: Some("masks/c0/a.png".into()),
        width: W,
        height: H,
        ..Default::default()
    };
    let index = SplitIndex::new("fx", "test", vec!["c0".into()], "class", vec![sample])
        .with_mask_rule(rule);
    let index_file = index.write(&root.join("index")).unwrap();
    let src = IndexSource::from_index(root.clone(), index_file, index).unwrap();
    let id = {
        use contracam::data::loader::Source;
        src.meta(0).unwrap().id
    };
    let pred = root.join("pred");
    let file = pred.join(format!("{id}.png"));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    image::GrayImage::from_pixel(S, S, image::Luma([255]))
        .save(&file)
        .unwrap();
    let r = miou_over_split(&src, &pred).unwrap();
    assert_eq!(r.n, 1);
    r.miou
}

/// Foreground fraction of `img` resized to S×S with PIL bilinear, then tested per pixel by `fg`.
fn resized_fraction(img: &image::RgbImage, fg: impl Fn(&[u8]) -> bool) -> f64 {
    let r = resize_pil(img, S, S);
    let n = r.as_raw().chunks_exact(3).filter(|p| fg(p)).count();
    n as f64 / (S * S) as f64
}

/// 0/255 per pixel of `img` by `fg` (the rule at the stored size), as RGB.
fn binarised(img: &image::RgbImage, fg: impl Fn(&[u8]) -> bool) -> image::RgbImage {
    image::RgbImage::from_fn(W, H, |x, y| {
        let v = if fg(&img.get_pixel(x, y).0) { 255 } else { 0 };
        image::Rgb([v, v, v])
    })
}

fn gt_half(p: &[u8]) -> bool {
    p[0] as f64 / 255.0 > 0.5
}

#[test]
fn gray_cub_masks_are_resized_before_the_threshold() {
    let tmp = tempfile::tempdir().unwrap();
    let img = stripes([255; 3], [120; 3]);
    let gray = image::DynamicImage::ImageRgb8(img.clone()).into_luma8();
    let got = miou_of(
        tmp.path(),
        "gray-gt-127",
        &image::DynamicImage::ImageLuma8(gray),
    );
    let resize_first = resized_fraction(&img, gt_half);
    let threshold_first = resized_fraction(&binarised(&img, |p| p[0] >= 128), gt_half);
    assert!(
        (resize_first - threshold_first).abs() > 0.5,
        "the fixture separates the orders: {resize_first} vs {threshold_first}"
    );
    assert_eq!(got, resize_first);
}

#[test]
fn imagenet9_only_fg_images_are_resized_before_the_all_channels_test() {
    let tmp = tempfile::tempdir().unwrap();
    let img = stripes([200, 90, 30], [0, 0, 0]);
    let got = miou_of(
        tmp.path(),
        "rgb-all-positive",
        &image::DynamicImage::ImageRgb8(img.clone()),
    );
    let all_pos = |p: &[u8]| p.iter().all(|&c| c > 0);
    let resize_first = resized_fraction(&img, all_pos);
    let threshold_first = resized_fraction(&binarised(&img, all_pos), gt_half);
    assert!(
        (resize_first - threshold_first).abs() > 0.5,
        "the fixture separates the orders: {resize_first} vs {threshold_first}"
    );
    assert_eq!(got, resize_first);
}

#[test]
fn binary_rules_still_threshold_at_the_stored_size() {
    let tmp = tempfile::tempdir().unwrap();
    // Under `binary` every value > 0 is foreground before resizing: 0/40 stripes become 0/255 stripes.
    let img = stripes([0; 3], [40; 3]);
    let gray = image::DynamicImage::ImageRgb8(img.clone()).into_luma8();
    let got = miou_of(tmp.path(), "binary", &image::DynamicImage::ImageLuma8(gray));
    let threshold_first = resized_fraction(&binarised(&img, |p| p[0] > 0), gt_half);
    let resize_first = resized_fraction(&img, gt_half);
    assert!(
        (resize_first - threshold_first).abs() > 0.5,
        "the fixture separates the orders: {resize_first} vs {threshold_first}"
    );
    assert_eq!(got, threshold_first);
}
