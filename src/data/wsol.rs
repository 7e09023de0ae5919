//! Export to clovaai/wsolevaluation's metadata layout (`metadata/<DATASET>/<split>/`), which its MaxBoxAccV2
//! code reads: `image_ids.txt` (one path per line), `class_labels.txt` (`path,label`), `image_sizes.txt`
//! (`path,w,h`) and `localization.txt` (`path,x0,y0,x1,y1`, integer pixels, one line per box). Like the
//! upstream files, the last line has no trailing newline.
use std::path::{Path, PathBuf};

use super::error::{IoContext, Result};

pub struct WsolItem {
    /// Path relative to wsolevaluation's image root (e.g. `001.Black_footed_Albatross/x.jpg` for CUB).
    pub path: String,
    pub label: i64,
    pub width: u32,
    pub height: u32,
    /// `[x0, y0, x1, y1]` in pixels.
    pub boxes: Vec<[f64; 4]>,
}

fn write_lines(path: &Path, lines: &[String]) -> Result<()> {
    std::fs::write(path, lines.join("\n")).at(path)
}

/// Write the four metadata files for one split into `out_dir` (created). Returns the files written.
pub fn export_split(out_dir: &Path, items: &[WsolItem]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out_dir).at(out_dir)?;
    let ids: Vec<String> = items.iter().map(|i| i.path.clone()).collect();
    let labels: Vec<String> = items
        .iter()
        .map(|i| format!("{},{}", i.path, i.label))
        .collect();
    let sizes: Vec<String> = items
        .iter()
        .map(|i| format!("{},{},{}", i.path, i.width, i.height))
        .collect();
    let mut loc = vec![];
    for i in items {
        for b in &i.boxes {
            loc.push(format!(
                "{},{},{},{},{}",
                i.path, b[0] as i64, b[1] as i64, b[2] as i64, b[3] as i64
            ));
        }
    }
    let mut out = vec![];
    for (name, lines) in [
        ("image_ids.txt", ids),
        ("class_labels.txt", labels),
        ("image_sizes.txt", sizes),
        ("localization.txt", loc),
    ] {
        let p = out_dir.join(name);
        write_lines(&p, &lines)?;
        out.push(p);
    }
    Ok(out)
}
