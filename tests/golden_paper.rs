//! The paper goldens under golden/paper: they load, hold every numeric cell of Tables 1–8, agree with the values
//! quoted elsewhere and with the paper's own printed relations, carry tolerances that follow the rule their `why`
//! states, and a broken file is refused with an error naming the file and key.
use std::path::{Path, PathBuf};

use contracam::suite::golden::paper::{PaperGoldenError, PaperGoldens, PaperTable, DIR};

fn goldens() -> PaperGoldens {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(DIR);
    match PaperGoldens::load_dir(&dir) {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    }
}

fn value(g: &PaperGoldens, table: u32, row: &str, column: &str) -> f64 {
    match g.cell(table, row, column) {
        Some(c) => c.value,
        None => panic!("table {table}: no cell row '{row}' column '{column}'"),
    }
}

/// Independent counts, from the printed shape of each table (rows × numeric columns), not from the files.
/// The bracketed gains/losses printed after some values (Tables 4–8) are derived from other cells and are
/// not counted; BG-Gap is a printed row of Table 7 and is.
const EXPECTED: [(u32, usize, usize); 8] = [
    // Table 1: 3 methods (ReDO, ContraCAM w/o negative signal removal, ContraCAM) × 4 datasets
    // (CUB, Flowers, COCO, ImageNet-9).
    (1, 12, 0),
    // Table 2: 2 training/inference rows × 3 datasets (CUB, Flowers, ImageNet-9).
    (2, 6, 0),
    // Table 3: 2 training/inference rows × 5 datasets (ImageNet, CUB, Flowers, VOC, OpenImages).
    (3, 10, 0),
    // Table 4: 2 models × 2 networks × 3 OA-Crop settings (-, CAM, GT) = 12 rows × 7 test datasets.
    (4, 84, 0),
    // Table 5: 2 tasks (detection, segmentation) × 2 models × 3 settings.
    (5, 12, 0),
    // Table 6: 2 models × 3 crops = 6 rows × 5 test sets.
    (6, 30, 0),
    // Table 7: 8 rows (7 Background Challenge sets + BG-Gap) × 2 models × 3 methods, each mean ± std.
    (7, 48, 48),
    // Table 8: 2 models × 4 augmentations = 8 rows × 4 test sets, each mean ± std.
    (8, 32, 32),
];

#[test]
fn every_cell_of_tables_1_to_8_is_there() {
    let g = goldens();
    let tables: Vec<u32> = g.tables.iter().map(|t| t.table).collect();
    assert_eq!(tables, (1..=8).collect::<Vec<_>>());
    for (n, values, stds) in EXPECTED {
        let t = g.table(n).expect("table present");
        let got_stds = t.cells.iter().filter(|c| c.std.is_some()).count();
        assert_eq!((t.cells.len(), got_stds), (values, stds), "table {n}");
    }
    assert_eq!(g.value_count(), 234);
    assert_eq!(g.std_count(), 80);
    // No cell claims a suite metric yet; the paper suites bind them.
    assert!(g.cells().all(|(_, c)| c.metric.is_none()));
}

/// Values quoted in the official-implementation notes (its "reference numbers from the paper" table) and the
/// BG-Gap table of the metrics notes, compared with the transcription.
#[test]
fn spot_checks_against_independently_quoted_values() {
    let g = goldens();
    let t1 = [
        ("ContraCAM (ours)", [0.460, 0.776, 0.319, 0.427]),
        (
            "ContraCAM w/o negative signal removal",
            [0.287, 0.555, 0.242, 0.361],
        ),
        ("ReDO [47]", [0.426, 0.764, 0.286, 0.416]),
    ];
    for (row, vals) in t1 {
        for (col, v) in ["CUB", "Flowers", "COCO", "ImageNet-9"].iter().zip(vals) {
            assert_eq!(value(&g, 1, row, col), v, "table 1 {row} {col}");
        }
    }
    let t3 = [55.88, 64.07, 75.64, 59.40, 49.89];
    for (col, v) in ["ImageNet", "CUB", "Flowers", "VOC", "OpenImages"]
        .iter()
        .zip(t3)
    {
        assert_eq!(value(&g, 3, "MoCov2 / ContraCAM (ours)", col), v);
    }
    assert_eq!(value(&g, 4, "MoCov2 / ResNet-50 / -", "COCO-Crop"), 74.30);
    assert_eq!(value(&g, 4, "MoCov2 / ResNet-50 / CAM", "COCO-Crop"), 76.37);
    assert_eq!(value(&g, 4, "BYOL / ResNet-50 / -", "COCO-Crop"), 73.36);
    assert_eq!(value(&g, 4, "BYOL / ResNet-50 / CAM", "COCO-Crop"), 74.92);
    assert_eq!(value(&g, 5, "COCO Detection", "MoCov2 / Baseline"), 36.34);
    assert_eq!(
        value(&g, 5, "COCO Detection", "MoCov2 / OA-Crop (CAM)"),
        36.60
    );
    assert_eq!(value(&g, 7, "Mixed-Rand", "MoCov2 / Baseline"), 60.34);
    assert_eq!(value(&g, 7, "Mixed-Rand", "MoCov2 / BG-Mixup (CAM)"), 66.89);
    let gaps = [
        ("MoCov2 / Baseline", 20.64),
        ("MoCov2 / BG-Mixup (CAM)", 17.24),
        ("MoCov2 / BG-HardMix (GT)", 12.53),
        ("BYOL / Baseline", 21.27),
        ("BYOL / BG-Mixup (CAM)", 17.45),
        ("BYOL / BG-HardMix (GT)", 14.44),
    ];
    for (col, v) in gaps {
        assert_eq!(value(&g, 7, "BG-Gap", col), v);
    }
    let cell = g.cell(7, "BG-Gap", "MoCov2 / BG-Mixup (CAM)").unwrap();
    assert_eq!(cell.std, Some(0.31));
    assert!(cell.admits(17.24) && cell.admits(17.24 + cell.tolerance * 0.99));
    assert!(!cell.admits(17.24 + cell.tolerance * 1.01) && !cell.admits(f64::NAN));
}

/// BG-Gap is Mixed-Same − Mixed-Rand; the paper's means are of per-trial values, so the printed ones (each
/// rounded to 0.01) agree within 1.5 rounding steps.
#[test]
fn bg_gap_is_mixed_same_minus_mixed_rand() {
    let g = goldens();
    let t7 = g.table(7).unwrap();
    let mut n = 0;
    for c in &t7.cells {
        let Some(d) = &c.difference_of else { continue };
        let a = t7.cell(&d.minuend.row, &d.minuend.column).unwrap().value;
        let b = t7
            .cell(&d.subtrahend.row, &d.subtrahend.column)
            .unwrap()
            .value;
        assert_eq!(
            (c.row.as_str(), d.minuend.row.as_str()),
            ("BG-Gap", "Mixed-Same")
        );
        assert_eq!(d.subtrahend.row, "Mixed-Rand");
        assert!(
            (c.value - (a - b)).abs() <= 0.015,
            "{}: {} vs {a} - {b}",
            c.column,
            c.value
        );
        n += 1;
    }
    assert_eq!(n, 6);
}

/// Every bracketed gain/loss must equal value − baseline within rounding (both printed to 0.01, the delta from
/// unrounded means). This checks the transcription cell by cell; the only misses are two printed in the paper.
#[test]
fn printed_deltas_match_the_transcribed_values() {
    let g = goldens();
    let mut per_table = Vec::new();
    let mut misses = Vec::new();
    for t in &g.tables {
        let mut n = 0;
        for c in &t.cells {
            let Some(d) = &c.printed_delta else { continue };
            n += 1;
            let base = t.cell(&d.baseline.row, &d.baseline.column).unwrap();
            assert_eq!(
                base.printed_delta, None,
                "a baseline has no delta of its own"
            );
            if (c.value - base.value - d.value).abs() > 0.015 {
                misses.push((t.table, c.row.clone(), c.column.clone()));
            }
        }
        per_table.push(n);
    }
    // Table 4: 8 OA-Crop rows × 7; Table 5: 2 × 4 non-baseline columns; Table 6: 4 OA-Crop rows × 5;
    // Table 7: 8 rows × 4 non-baseline columns; Table 8: 6 non-baseline rows × 4.
    assert_eq!(per_table, [0, 0, 0, 56, 8, 20, 32, 24]);
    // Printed in the paper: 50.12 − 45.15 = 4.97 but "(+1.97)"; 46.07 − 45.15 = 0.92 but "(+1.39)".
    let known = [
        (8, "BYOL / +Mixup [41]", "ImageNet-Sketch-9"),
        (8, "BYOL / +CutMix [42]", "ImageNet-Sketch-9"),
    ];
    let known: Vec<_> = known
        .iter()
        .map(|(t, r, c)| (*t, r.to_string(), c.to_string()))
        .collect();
    assert_eq!(misses, known);
    for (t, r, c) in &known {
        let note = g.cell(*t, r, c).unwrap().note.as_deref().unwrap_or("");
        assert!(note.contains("disagrees"), "{r} {c} explains the mismatch");
    }
}

/// Table 2's ContraCAM row repeats Table 1's (same MoCov2 models, same protocol).
#[test]
fn table_2_contracam_row_repeats_table_1() {
    let g = goldens();
    for col in ["CUB", "Flowers", "ImageNet-9"] {
        assert_eq!(
            value(&g, 2, "MoCov2 / ContraCAM (ours)", col),
            value(&g, 1, "ContraCAM (ours)", col)
        );
    }
}

/// t quantiles at 0.975 (two-sided 95 %) for 12 and 16 degrees of freedom, as in standard t tables.
const T_975_12: f64 = 2.178812829667211;
const T_975_16: f64 = 2.119905299221239;

fn ceil_cents(x: f64) -> f64 {
    (x * 100.0 - 1e-9).ceil() / 100.0
}

fn rms(xs: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = xs.collect();
    (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt()
}

/// Pooled std of the cells of one test set: the RMS of their printed stds (equal trials per cell).
fn pooled(t: &PaperTable, same_set: impl Fn(&str, &str) -> bool) -> f64 {
    rms(t
        .cells
        .iter()
        .filter(|c| same_set(&c.row, &c.column))
        .map(|c| c.std.unwrap()))
}

/// Recomputes every tolerance from the rule its `why` states and checks the `why` names the number.
#[test]
fn tolerances_follow_their_stated_rule() {
    let g = goldens();
    let t7 = g.table(7).unwrap();
    let t8 = g.table(8).unwrap();
    let row_pool = |row: &str| pooled(t7, |r, _| r == row);
    let col_pool = |col: &str| pooled(t8, |_, c| c == col);
    let original = row_pool("Original");
    // Tables 1–3 and 5: the smallest difference the paper's text reads as a real effect in that metric.
    let miou = value(&g, 2, "MoCov2 / ContraCAM (ours)", "CUB")
        - value(&g, 2, "Supervised / Classifier CAM", "CUB");
    let maxbox = value(&g, 3, "MoCov2 / ContraCAM (ours)", "OpenImages")
        - value(&g, 3, "Supervised / Classifier CAM", "OpenImages");
    let ap = value(&g, 5, "COCO Detection", "MoCov2 / OA-Crop (CAM)")
        - value(&g, 5, "COCO Detection", "MoCov2 / Baseline");
    for (t, c) in g.cells() {
        let expected = match t.table {
            1 | 2 => miou,
            3 => maxbox,
            5 => ap,
            // One trial against one trial, σ borrowed from the 3-trial stds of Table 7's Original row or of
            // Table 8's column for the same shifted test set.
            4 => ceil_cents(T_975_12 * 2f64.sqrt() * original),
            6 if c.column == "ImageNet-9" => ceil_cents(T_975_12 * 2f64.sqrt() * original),
            6 => ceil_cents(T_975_16 * 2f64.sqrt() * col_pool(&c.column)),
            // A 3-seed mean against the paper's 3-seed mean, σ = max(cell std, pooled std of its test set).
            7 => ceil_cents(T_975_12 * (2f64 / 3.0).sqrt() * c.std.unwrap().max(row_pool(&c.row))),
            8 => {
                ceil_cents(T_975_16 * (2f64 / 3.0).sqrt() * c.std.unwrap().max(col_pool(&c.column)))
            }
            n => panic!("unexpected table {n}"),
        };
        assert!(
            (c.tolerance - expected).abs() < 1e-9,
            "table {} {} / {}: tolerance {} but the rule gives {expected}",
            t.table,
            c.row,
            c.column,
            c.tolerance
        );
        let shown = if t.table <= 2 {
            format!("{:.3}", c.tolerance)
        } else {
            format!("{:.2}", c.tolerance)
        };
        assert!(
            c.why.contains(&shown),
            "why of {} / {} names {shown}",
            c.row,
            c.column
        );
    }
}

// ---- broken files ----

const GOOD: &str = r#"
table = 9
caption = "c"
source = "s"
trials = 3

[[cell]]
row = "A"
column = "X"
value = 50.0
std = 1.0
unit = "percent"
tolerance = 2.0
why = "w"

[[cell]]
row = "B"
column = "X"
value = 52.0
unit = "percent"
tolerance = 2.0
why = "w"
printed_delta = { value = 2.0, baseline = { row = "A", column = "X" } }
"#;

fn load_one(text: &str, name: &str) -> (PathBuf, Result<PaperGoldens, PaperGoldenError>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::write(dir.path().join("README.md"), "not a table").unwrap();
    let got = PaperGoldens::load_dir(dir.path());
    (path, got)
}

fn error_of(text: &str) -> (String, String) {
    let (path, got) = load_one(text, "table9.toml");
    match got {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => (path.display().to_string(), e.to_string()),
    }
}

#[test]
fn a_good_file_loads_and_other_files_are_ignored() {
    let (_, got) = load_one(GOOD, "table9.toml");
    let g = got.unwrap();
    assert_eq!((g.value_count(), g.std_count()), (2, 1));
    assert_eq!(g.cell(9, "B", "X").unwrap().tolerance, 2.0);
}

#[test]
fn broken_files_name_the_file_and_key() {
    let cases = [
        (
            GOOD.replacen("why = \"w\"\n", "why = \"w\"\ncolour = 1\n", 1),
            "cell[0].colour",
            "unknown field",
        ),
        (
            GOOD.replacen("value = 50.0", "value = nan", 1),
            "cell[0].value",
            "NaN",
        ),
        (
            GOOD.replacen("tolerance = 2.0", "tolerance = -0.5", 1),
            "cell[0].tolerance",
            "-0.5",
        ),
        (
            GOOD.replacen("tolerance = 2.0", "tolerance = inf", 1),
            "cell[0].tolerance",
            "inf",
        ),
        (
            GOOD.replacen("std = 1.0", "std = -1.0", 1),
            "cell[0].std",
            "-1",
        ),
        (
            GOOD.replacen("why = \"w\"", "why = \" \"", 1),
            "cell[0].why",
            "tolerance",
        ),
        (
            GOOD.replacen("unit = \"percent\"", "unit = \"percentage\"", 1),
            "cell[0].unit",
            "percentage",
        ),
        (
            GOOD.replacen("value = 50.0", "value = 150.0", 1),
            "cell[0].value",
            "150",
        ),
        (
            GOOD.replacen("row = \"B\"", "row = \"A\"", 1),
            "cell[1]",
            "duplicate cell",
        ),
        (
            GOOD.replacen("table = 9", "table = 8", 1),
            "table",
            "does not match",
        ),
        (
            GOOD.replacen("trials = 3", "trails = 3", 1),
            "trails",
            "unknown field",
        ),
        (
            GOOD.replacen("baseline = { row = \"A\"", "baseline = { row = \"C\"", 1),
            "cell[1].printed_delta.baseline",
            "no cell",
        ),
    ];
    for (text, key, what) in cases {
        let (path, msg) = error_of(&text);
        assert!(msg.contains(&path), "names the file: {msg}");
        assert!(
            msg.contains(&format!("key '{key}")),
            "names key {key}: {msg}"
        );
        assert!(msg.contains(what), "says {what}: {msg}");
    }
}

#[test]
fn a_misnamed_file_or_an_empty_directory_is_refused() {
    let (path, got) = load_one(GOOD, "tableau.toml");
    let msg = got.unwrap_err().to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("does not match"),
        "{msg}"
    );
    let dir = tempfile::tempdir().unwrap();
    let msg = PaperGoldens::load_dir(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("no paper golden files"), "{msg}");
    let (path, got) = load_one("table = [", "table9.toml");
    let msg = got.unwrap_err().to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}
