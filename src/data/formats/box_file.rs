//! The official box-file text format (`utils/box_utils.py::save_boxes/load_boxes`): one line per image,
//! `<img_id> x1,y1,x2,y2 x1,y1,x2,y2 ...`, coordinates normalised to [0, 1] and written with `{:.6f}`; a line
//! with only the id means "no boxes" (OA-Crop then uses the whole image). COCO ids are `str(image_id)`,
//! ImageFolder ids the path under the folder root (`get_image_ids`).
//!
//! [`parse_box_file`] reads what `load_boxes` reads (`line.strip().split(" ")`, `float` per coordinate).
//! [`validate_box_entries`] adds the checks `load_boxes` leaves to a crash deep inside training: a box that is
//! not finite, inverted, of zero area or outside [0, 1], and an id given twice (the official dict keeps
//! the last line silently). Every error names the file and line.
use std::fmt::Write as _;
use std::path::Path;

use crate::data::error::{format_err, IoContext, Result};

/// A box file's content: image ids with their normalised xyxy boxes, in file order.
pub type BoxEntries = Vec<(String, Vec<[f64; 4]>)>;

/// One line of a box file: `<id> x1,y1,x2,y2 ...`, each coordinate with 6 decimals (`"{:.6f}"`).
pub fn format_box_line(id: &str, boxes: &[[f64; 4]]) -> String {
    let mut line = id.to_string();
    for b in boxes {
        let _ = write!(line, " {:.6},{:.6},{:.6},{:.6}", b[0], b[1], b[2], b[3]);
    }
    line
}

/// `save_boxes`: one line per image, in the given order.
pub fn write_box_file(path: &Path, entries: &[(String, Vec<[f64; 4]>)]) -> Result<()> {
    let mut text = String::new();
    for (id, boxes) in entries {
        text.push_str(&format_box_line(id, boxes));
        text.push('\n');
    }
    crate::util::output::write_atomic(path, text.as_bytes())
        .map_err(|e| format_err(path, e.to_string()))
}

/// Parses box-file text as `load_boxes` does (`line.strip().split(" ")`); `path` is only for messages.
/// Blank lines are skipped. Line numbers in errors are 1-based.
pub fn parse_box_file(text: &str, path: &Path) -> Result<BoxEntries> {
    Ok(parse_with_lines(text, path)?
        .into_iter()
        .map(|(_, id, b)| (id, b))
        .collect())
}

/// `load_boxes`: reads a box file.
pub fn read_box_file(path: &Path) -> Result<BoxEntries> {
    let text = std::fs::read_to_string(path).at(path)?;
    parse_box_file(&text, path)
}

/// A parsed line: its 1-based line number, the id and the boxes.
pub type NumberedEntry = (usize, String, Vec<[f64; 4]>);

/// [`read_box_file`] keeping line numbers, then [`validate_box_entries`]: for readers that must name the line
/// of a later problem (an id no sample has).
pub fn read_box_file_checked(path: &Path) -> Result<Vec<NumberedEntry>> {
    let text = std::fs::read_to_string(path).at(path)?;
    let entries = parse_with_lines(&text, path)?;
    validate_box_entries(&entries, path)?;
    Ok(entries)
}

fn parse_with_lines(text: &str, path: &Path) -> Result<Vec<NumberedEntry>> {
    let mut out = Vec::new();
    for (ln, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let err = |msg: String| format_err(path, format!("line {}: {msg}", ln + 1));
        let mut toks = line.split(' ');
        let id = toks.next().unwrap_or_default().to_string();
        let mut boxes = Vec::new();
        for tok in toks {
            let vals: Vec<f64> = tok
                .split(',')
                .map(|v| {
                    v.parse::<f64>()
                        .map_err(|e| err(format!("box {tok:?}: {e}")))
                })
                .collect::<Result<_>>()?;
            let b: [f64; 4] = vals.try_into().map_err(|v: Vec<f64>| {
                err(format!("box {tok:?} has {} values, expected 4", v.len()))
            })?;
            boxes.push(b);
        }
        out.push((ln + 1, id, boxes));
    }
    Ok(out)
}

/// Rejects boxes that are not finite, inverted (x2 < x1 or y2 < y1), of zero area or outside [0, 1], and ids
/// that appear on two lines.
pub fn validate_box_entries(entries: &[NumberedEntry], path: &Path) -> Result<()> {
    let mut seen: std::collections::HashMap<&str, usize> = Default::default();
    for (line, id, boxes) in entries {
        let err = |msg: String| format_err(path, format!("line {line}: {msg}"));
        if let Some(first) = seen.insert(id.as_str(), *line) {
            return Err(err(format!("id {id:?} already appeared on line {first}")));
        }
        for b in boxes {
            let shown = format_box_line("", std::slice::from_ref(b));
            let shown = shown.trim();
            if b.iter().any(|v| !v.is_finite()) {
                return Err(err(format!("box {shown} of {id:?} is not finite")));
            }
            if b.iter().any(|&v| !(0.0..=1.0).contains(&v)) {
                return Err(err(format!(
                    "box {shown} of {id:?} is outside [0, 1]; box files hold coordinates normalised by the image size"
                )));
            }
            if b[2] < b[0] || b[3] < b[1] {
                return Err(err(format!(
                    "box {shown} of {id:?} is inverted (expected x1,y1,x2,y2 with x1 <= x2 and y1 <= y2)"
                )));
            }
            if b[2] == b[0] || b[3] == b[1] {
                return Err(err(format!("box {shown} of {id:?} has zero area")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_file_round_trip() {
        let entries = [
            ("139".to_string(), vec![[0.0, 0.0078125, 0.5, 1.0]]),
            ("285".to_string(), vec![]),
        ];
        let text: String = entries
            .iter()
            .map(|(i, b)| format_box_line(i, b) + "\n")
            .collect();
        assert_eq!(text, "139 0.000000,0.007812,0.500000,1.000000\n285\n");
        let back = parse_box_file(&text, Path::new("mem")).unwrap();
        assert_eq!(back[0].1[0], [0.0, 0.007812, 0.5, 1.0]);
        assert!(back[1].1.is_empty());
        let e = parse_box_file("1 0.1,0.2,0.3\n", Path::new("mem"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mem: line 1: box \"0.1,0.2,0.3\" has 3 values"),
            "{e}"
        );
    }

    #[test]
    fn validation_names_the_line_and_the_problem() {
        let check = |text: &str| {
            let p = Path::new("b.txt");
            let e = parse_with_lines(text, p).unwrap();
            validate_box_entries(&e, p).map_err(|e| e.to_string())
        };
        assert!(check("1 0.1,0.1,0.5,0.5\n2\n").is_ok());
        let e = check("1 0.1,0.1,0.5,0.5\n\n2 0.5,0.1,0.4,0.5\n").unwrap_err();
        assert!(
            e.contains(
                "b.txt: line 3: box 0.500000,0.100000,0.400000,0.500000 of \"2\" is inverted"
            ),
            "{e}"
        );
        let e = check("7 0.1,0.1,0.1,0.5\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("zero area"), "{e}");
        let e = check("7 0.1,0.1,1.5,0.5\n").unwrap_err();
        assert!(e.contains("outside [0, 1]"), "{e}");
        let e = check("7 0.1,0.1,NaN,0.5\n").unwrap_err();
        assert!(e.contains("not finite"), "{e}");
        let e = check("7\n8\n7 0.1,0.1,0.2,0.5\n").unwrap_err();
        assert!(
            e.contains("line 3: id \"7\" already appeared on line 1"),
            "{e}"
        );
    }
}
