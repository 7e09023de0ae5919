//! Builders: turn extracted downloads (or a user-provided folder) into sample indices
//! ([`crate::data::index`]). Each one reads the real archive layout and annotation formats.
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::error::{DataError, Result};
use super::index::SplitIndex;
use crate::data::source::download::DownloadProgress;
use crate::data::source::manifest::Manifest;
use crate::data::source::store::DatasetDir;

pub mod bg_challenge;
pub mod cifar;
pub mod coco;
pub mod cub;
pub mod cubv2;
pub mod flowers;
pub mod food101;
pub mod imagenet9;
pub mod imagenet_val;
pub mod imagenetv2;
pub mod openimages;
pub mod pets;
pub mod split;
pub mod voc;
pub mod wsol;

pub struct BuildContext<'a> {
    pub dataset: &'a str,
    pub dir: &'a DatasetDir,
    pub manifest: &'a Manifest,
    pub source: Option<&'a Path>,
    pub progress: &'a DownloadProgress,
    pub include_optional: bool,
}

pub type BuildFn = fn(&BuildContext) -> Result<Vec<SplitIndex>>;

/// The builder a manifest names in `dataset.builder`.
pub fn by_name(name: &str) -> Option<BuildFn> {
    Some(match name {
        "coco" => coco::build,
        "cub" => cub::build,
        "flowers" => flowers::build,
        "bg-challenge" => bg_challenge::build,
        "imagenet9" => imagenet9::build_imagenet9,
        "imagenet-sketch" => imagenet9::build_sketch,
        "imagenet-r" => imagenet9::build_imagenet_r,
        "imagenet-c" => imagenet9::build_imagenet_c,
        "stylized-imagenet" => imagenet9::build_stylized,
        "cifar" => cifar::build,
        "food101" => food101::build,
        "pets" => pets::build,
        "voc" => voc::build,
        "wsol-cubv2" => cubv2::build,
        "wsol-openimages" => openimages::build,
        "imagenetv2" => imagenetv2::build,
        "imagenet-val" => imagenet_val::build,
        _ => return None,
    })
}

pub const ALL: &[&str] = &[
    "coco",
    "cub",
    "flowers",
    "bg-challenge",
    "imagenet9",
    "imagenet-sketch",
    "imagenet-r",
    "imagenet-c",
    "stylized-imagenet",
    "cifar",
    "food101",
    "pets",
    "voc",
    "wsol-cubv2",
    "wsol-openimages",
    "imagenetv2",
    "imagenet-val",
];

impl BuildContext<'_> {
    pub fn err(&self, msg: impl Into<String>) -> DataError {
        DataError::Build {
            dataset: self.dataset.into(),
            msg: msg.into(),
        }
    }

    /// The extraction directory of a manifest file.
    pub fn extracted(&self, file: &str) -> Result<PathBuf> {
        let p = self.dir.extracted(file);
        if !p.is_dir() {
            return Err(self.err(format!(
                "{} was not extracted (expected {})",
                file,
                p.display()
            )));
        }
        Ok(p)
    }

    pub fn download(&self, file: &str) -> PathBuf {
        self.dir.file(file)
    }

    pub fn has_file(&self, file: &str) -> bool {
        self.dir.file(file).is_file()
    }

    /// `path` relative to the dataset root, with `/` separators (the index's path convention).
    pub fn rel(&self, path: &Path) -> String {
        // Paths outside the dataset folder (user-provided --source) stay absolute.
        let Ok(r) = path.strip_prefix(&self.dir.root) else {
            return path.to_string_lossy().into_owned();
        };
        r.components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/")
    }

    pub fn source(&self) -> Result<&Path> {
        self.source.ok_or_else(|| {
            self.err(format!(
                "needs --source DIR (see `contracam data instructions {}`)",
                self.dataset
            ))
        })
    }
}

/// The directory called `name` at `root` or one level below (archives differ in their top folder).
pub fn find_dir(root: &Path, name: &str) -> Option<PathBuf> {
    let direct = root.join(name);
    if direct.is_dir() {
        return Some(direct);
    }
    let mut subdirs: Vec<PathBuf> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    subdirs.sort();
    subdirs
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_dir())
}

/// Width and height from the image header (no full decode).
pub fn image_size(path: &Path) -> Result<(u32, u32)> {
    image::image_dimensions(path).map_err(|e| DataError::Image {
        path: path.into(),
        msg: e.to_string(),
    })
}

/// Sizes of many images in parallel; a failure names the file.
pub fn image_sizes(paths: &[PathBuf]) -> Result<Vec<(u32, u32)>> {
    paths.par_iter().map(|p| image_size(p)).collect()
}

/// Sorted names of the sub-directories of `dir` (ImageFolder's class order: byte-wise sort).
pub fn sorted_subdirs(dir: &Path) -> Result<Vec<String>> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| DataError::Io {
            path: dir.into(),
            err: e,
        })?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    Ok(v)
}

/// Sorted image files (by extension, case-insensitive) directly inside `dir`, as ImageFolder lists them.
pub fn sorted_images(dir: &Path) -> Result<Vec<String>> {
    const EXT: &[&str] = &[
        "jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp",
    ];
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| DataError::Io {
            path: dir.into(),
            err: e,
        })?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.rsplit_once('.')
                .is_some_and(|(_, x)| EXT.contains(&x.to_ascii_lowercase().as_str()))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Samples of a class-folder split without boxes or masks, and its wsolevaluation metadata in `wsol_dir`
/// (image_ids, class_labels, image_sizes; no localization.txt: the boxes are not in the archive).
/// `wsol_paths[i]` is image i's path relative to wsolevaluation's image root.
pub fn labelled_split_with_wsol(
    ctx: &BuildContext,
    paths: &[PathBuf],
    wsol_paths: &[String],
    labels: &[i64],
    wsol_dir: &Path,
) -> Result<Vec<super::index::Sample>> {
    let sizes = image_sizes(paths)?;
    let items: Vec<wsol::WsolItem> = (0..paths.len())
        .map(|i| wsol::WsolItem {
            path: wsol_paths[i].clone(),
            label: labels[i],
            width: sizes[i].0,
            height: sizes[i].1,
            ..Default::default()
        })
        .collect();
    wsol::export_split(wsol_dir, &items, wsol::Localization::Absent)?;
    Ok((0..paths.len())
        .map(|i| super::index::Sample {
            path: ctx.rel(&paths[i]),
            labels: vec![labels[i]],
            width: sizes[i].0,
            height: sizes[i].1,
            ..Default::default()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use crate::data::source::manifest::Registry;

    #[test]
    fn every_builder_named_by_a_manifest_exists() {
        for m in Registry::builtin().unwrap().datasets.values() {
            if let Some(b) = &m.dataset.builder {
                assert!(super::by_name(b).is_some(), "{}: builder {b}", m.name());
            }
        }
    }
}
