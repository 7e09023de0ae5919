//! Export to clovaai/wsolevaluation's metadata layout (`metadata/<DATASET>/<split>/`), which its evaluation code
//! reads (`data_loaders.py`):
//! - `image_ids.txt`: one path per line;
//! - `class_labels.txt`: `path,label`;
//! - `image_sizes.txt`: `path,w,h`; empty (0 bytes) in the mask form, as upstream's OpenImages files are;
//! - `localization.txt`, in one of two forms (see [`Localization`]):
//!   - box form (ILSVRC, CUB): `path,x0,y0,x1,y1`, integer pixels, one line per box;
//!   - mask form (OpenImages): `path,mask,ignore`, one line per instance mask; only an image's first line
//!     names its ignore mask (or leaves the column empty), later lines end in an empty third column.
//!
//! Like the upstream files, the last line has no trailing newline. Every path is relative to wsolevaluation's
//! image root (mask paths to its `mask_root`); lines follow the order of the items, then of their boxes/masks.
use std::path::{Path, PathBuf};

use crate::data::error::{format_err, IoContext, Result};

/// How `localization.txt` is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Localization {
    /// `path,x0,y0,x1,y1` from [`WsolItem::boxes`] (ILSVRC, CUB).
    Boxes,
    /// `path,mask,ignore` from [`WsolItem::masks`] and [`WsolItem::ignore_mask`] (OpenImages); `image_sizes.txt`
    /// is written empty, as upstream's OpenImages metadata has it.
    Masks,
    /// The archive carries no localization (upstream keeps it in its own repository): `localization.txt` is not
    /// written, and a stale one from an earlier build is removed, so no one mistakes "none" for "no objects".
    Absent,
}

#[derive(Debug, Clone, Default)]
pub struct WsolItem {
    /// Path relative to wsolevaluation's image root (e.g. `001.Black_footed_Albatross/x.jpg` for CUB).
    pub path: String,
    pub label: i64,
    pub width: u32,
    pub height: u32,
    /// `[x0, y0, x1, y1]` in pixels (box form).
    pub boxes: Vec<[f64; 4]>,
    /// Instance mask paths relative to wsolevaluation's `mask_root`, one line each (mask form).
    pub masks: Vec<String>,
    /// The image's ignore mask, written on its first mask line only (mask form).
    pub ignore_mask: Option<String>,
}

fn write_lines(path: &Path, lines: &[String]) -> Result<()> {
    std::fs::write(path, lines.join("\n")).at(path)
}

/// A field that would break wsolevaluation's comma/line split.
fn check_field(file: &Path, field: &str) -> Result<()> {
    if field.contains([',', '\n', '\r']) {
        return Err(format_err(
            file,
            format!("`{field}` contains a comma or line break, which wsolevaluation's comma-separated metadata cannot hold; rename the file"),
        ));
    }
    Ok(())
}

/// Write the metadata files for one split into `out_dir` (created). Returns the files written.
pub fn export_split(
    out_dir: &Path,
    items: &[WsolItem],
    form: Localization,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out_dir).at(out_dir)?;
    let loc_path = out_dir.join("localization.txt");
    for i in items {
        check_field(&out_dir.join("image_ids.txt"), &i.path)?;
        for m in i.masks.iter().chain(&i.ignore_mask) {
            check_field(&loc_path, m)?;
        }
    }
    let ids: Vec<String> = items.iter().map(|i| i.path.clone()).collect();
    let labels: Vec<String> = items
        .iter()
        .map(|i| format!("{},{}", i.path, i.label))
        .collect();
    let sizes: Vec<String> = match form {
        Localization::Masks => vec![],
        _ => items
            .iter()
            .map(|i| format!("{},{},{}", i.path, i.width, i.height))
            .collect(),
    };
    let mut files = vec![
        ("image_ids.txt", ids),
        ("class_labels.txt", labels),
        ("image_sizes.txt", sizes),
    ];
    match form {
        Localization::Boxes => {
            let mut loc = vec![];
            for i in items {
                for b in &i.boxes {
                    loc.push(format!(
                        "{},{},{},{},{}",
                        i.path, b[0] as i64, b[1] as i64, b[2] as i64, b[3] as i64
                    ));
                }
            }
            files.push(("localization.txt", loc));
        }
        Localization::Masks => {
            let mut loc = vec![];
            for i in items {
                if i.masks.is_empty() && i.ignore_mask.is_some() {
                    return Err(format_err(
                        &loc_path,
                        format!(
                            "{} has an ignore mask but no instance mask; the mask form can only carry an ignore mask on an instance-mask line",
                            i.path
                        ),
                    ));
                }
                for (k, m) in i.masks.iter().enumerate() {
                    let ignore = match (&i.ignore_mask, k) {
                        (Some(ig), 0) => ig.as_str(),
                        _ => "",
                    };
                    loc.push(format!("{},{m},{ignore}", i.path));
                }
            }
            files.push(("localization.txt", loc));
        }
        Localization::Absent => {
            if loc_path.exists() {
                std::fs::remove_file(&loc_path).at(&loc_path)?;
            }
        }
    }
    let mut out = vec![];
    for (name, lines) in files {
        let p = out_dir.join(name);
        write_lines(&p, &lines)?;
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(path: &str, masks: &[&str], ignore: Option<&str>) -> WsolItem {
        WsolItem {
            path: path.into(),
            label: 3,
            width: 10,
            height: 20,
            boxes: vec![[1.0, 2.5, 7.9, 9.0]],
            masks: masks.iter().map(|m| m.to_string()).collect(),
            ignore_mask: ignore.map(str::to_string),
        }
    }

    fn read(dir: &Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(name)).unwrap()
    }

    #[test]
    fn box_form_truncates_to_integer_corners() {
        let dir = tempfile::tempdir().unwrap();
        let items = [item("a/x.jpg", &[], None), item("b/y.jpg", &[], None)];
        export_split(dir.path(), &items, Localization::Boxes).unwrap();
        assert_eq!(read(dir.path(), "image_ids.txt"), "a/x.jpg\nb/y.jpg");
        assert_eq!(read(dir.path(), "class_labels.txt"), "a/x.jpg,3\nb/y.jpg,3");
        assert_eq!(
            read(dir.path(), "image_sizes.txt"),
            "a/x.jpg,10,20\nb/y.jpg,10,20"
        );
        assert_eq!(
            read(dir.path(), "localization.txt"),
            "a/x.jpg,1,2,7,9\nb/y.jpg,1,2,7,9"
        );
    }

    #[test]
    fn mask_form_ignore_on_first_line_and_empty_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let items = [
            item(
                "val/c/a.jpg",
                &["val/c/a_mc_0.png", "val/c/a_mc_1.png"],
                Some("val/c/a_ignore.png"),
            ),
            item("val/c/b.jpg", &["val/c/b_mc_2.png"], None),
            item("val/c/n.jpg", &[], None),
        ];
        let files = export_split(dir.path(), &items, Localization::Masks).unwrap();
        assert_eq!(files.len(), 4);
        assert_eq!(read(dir.path(), "image_sizes.txt"), "");
        assert_eq!(
            read(dir.path(), "localization.txt"),
            "val/c/a.jpg,val/c/a_mc_0.png,val/c/a_ignore.png\nval/c/a.jpg,val/c/a_mc_1.png,\nval/c/b.jpg,val/c/b_mc_2.png,"
        );
        assert_eq!(
            read(dir.path(), "image_ids.txt"),
            "val/c/a.jpg\nval/c/b.jpg\nval/c/n.jpg"
        );
    }

    #[test]
    fn mask_form_refuses_an_ignore_mask_without_instances() {
        let dir = tempfile::tempdir().unwrap();
        let e = export_split(
            dir.path(),
            &[item("val/c/a.jpg", &[], Some("val/c/a_ignore.png"))],
            Localization::Masks,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("val/c/a.jpg") && e.contains("no instance mask"),
            "{e}"
        );
    }

    #[test]
    fn absent_form_writes_no_localization_and_removes_a_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("localization.txt"), "old").unwrap();
        let files = export_split(
            dir.path(),
            &[item("0/0.jpeg", &[], None)],
            Localization::Absent,
        )
        .unwrap();
        assert_eq!(files.len(), 3);
        assert!(!dir.path().join("localization.txt").exists());
        assert_eq!(read(dir.path(), "image_sizes.txt"), "0/0.jpeg,10,20");
    }

    #[test]
    fn comma_in_a_path_is_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let e = export_split(
            dir.path(),
            &[item("a,b.jpg", &[], None)],
            Localization::Boxes,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("a,b.jpg") && e.contains("comma"), "{e}");
    }
}
