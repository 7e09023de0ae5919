//! Paper goldens: every numeric cell of the paper's Tables 1–8, transcribed from the paper (never from a run) into
//! `golden/paper/table<N>.toml`, one file per table. A cell carries its printed row and column labels, the value
//! in the printed unit, the printed standard deviation where there is one, and a reproduction tolerance with the
//! reason for its size. Nothing here writes a golden; the files are only read and checked.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the paper goldens live, relative to the repository root.
pub const DIR: &str = "golden/paper";

/// The paper goldens of the repository holding `start` (a suite file or folder): `golden/paper` under the first
/// ancestor that has one, so a suite validates from any working directory.
pub fn find_dir(start: &Path) -> Option<PathBuf> {
    let abs = std::fs::canonicalize(start).unwrap_or_else(|_| start.to_path_buf());
    abs.ancestors().map(|a| a.join(DIR)).find(|d| d.is_dir())
}

/// Units as the paper prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// A ratio in [0, 1] (mask mIoU in Tables 1–2).
    Fraction,
    /// A percentage in [0, 100] (accuracy, MaxBoxAccV2, AP).
    Percent,
    /// A difference of two percentages (BG-Gap in Table 7).
    PercentagePoints,
}

impl Unit {
    /// The name used in the files.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Fraction => "fraction",
            Unit::Percent => "percent",
            Unit::PercentagePoints => "percentage_points",
        }
    }

    /// The values a cell in this unit can take.
    pub fn range(self) -> (f64, f64) {
        match self {
            Unit::Fraction => (0.0, 1.0),
            Unit::Percent => (0.0, 100.0),
            Unit::PercentagePoints => (-100.0, 100.0),
        }
    }
}

/// The direction a printed arrow marks (Table 7's ↑ and ↓).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Higher,
    Lower,
}

/// Another cell of the same table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellRef {
    pub row: String,
    pub column: String,
}

/// A gain or loss the paper prints in brackets after a value, relative to a baseline cell. Kept to check the
/// transcription (value − baseline should give it back); not counted as a cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrintedDelta {
    pub value: f64,
    pub baseline: CellRef,
}

/// A printed cell that is by definition the difference of two other cells (BG-Gap = Mixed-Same − Mixed-Rand).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Difference {
    pub minuend: CellRef,
    pub subtrahend: CellRef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaperCell {
    /// The printed row label; repeated labels are joined with their leading row columns by " / ".
    pub row: String,
    /// The printed column label; repeated labels are prefixed with their column group and " / ".
    pub column: String,
    pub value: f64,
    /// The printed standard deviation, where the paper prints one.
    pub std: Option<f64>,
    pub unit: Unit,
    /// Allowed |measured − value| for a reproduction.
    pub tolerance: f64,
    /// How the tolerance was chosen.
    pub why: String,
    /// The suite metric this cell is checked against, once a paper suite binds one.
    pub metric: Option<String>,
    pub better: Option<Better>,
    pub printed_delta: Option<PrintedDelta>,
    pub difference_of: Option<Difference>,
    pub note: Option<String>,
}

impl PaperCell {
    /// Whether a measured value reproduces this cell within its tolerance.
    pub fn admits(&self, measured: f64) -> bool {
        measured.is_finite() && (measured - self.value).abs() <= self.tolerance
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaperTable {
    pub table: u32,
    pub caption: String,
    /// Where the numbers come from (paper, table, section, how they were transcribed).
    pub source: String,
    /// Trials behind each printed number, where the paper says.
    pub trials: Option<u32>,
    pub note: Option<String>,
    #[serde(rename = "cell")]
    pub cells: Vec<PaperCell>,
    /// The file this table was read from.
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum PaperGoldenError {
    #[error("cannot read {path}: {msg}")]
    Read { path: PathBuf, msg: String },
    #[error("{path}: {msg}")]
    Parse { path: PathBuf, msg: String },
    #[error("{path}: key '{key}': {msg}")]
    Invalid {
        path: PathBuf,
        key: String,
        msg: String,
    },
    #[error("no paper golden files (table<N>.toml) in {dir}")]
    Empty { dir: PathBuf },
}

impl PaperTable {
    /// Reads and validates one `table<N>.toml`.
    pub fn load(path: &Path) -> Result<Self, PaperGoldenError> {
        let text = std::fs::read_to_string(path).map_err(|e| PaperGoldenError::Read {
            path: path.into(),
            msg: e.to_string(),
        })?;
        let de = toml::Deserializer::parse(&text).map_err(|e| PaperGoldenError::Parse {
            path: path.into(),
            msg: e.to_string(),
        })?;
        let mut table: PaperTable =
            serde_path_to_error::deserialize(de).map_err(|e| PaperGoldenError::Invalid {
                path: path.into(),
                key: e.path().to_string(),
                msg: e.inner().to_string(),
            })?;
        table.path = path.into();
        table.validate()?;
        Ok(table)
    }

    pub fn cell(&self, row: &str, column: &str) -> Option<&PaperCell> {
        self.cells
            .iter()
            .find(|c| c.row == row && c.column == column)
    }

    fn invalid(&self, key: impl Into<String>, msg: impl Into<String>) -> PaperGoldenError {
        PaperGoldenError::Invalid {
            path: self.path.clone(),
            key: key.into(),
            msg: msg.into(),
        }
    }

    fn validate(&self) -> Result<(), PaperGoldenError> {
        let stem = self.path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if self.table == 0 || stem != format!("table{}", self.table) {
            return Err(self.invalid(
                "table",
                format!(
                    "table {} does not match the file name {stem}.toml; each table<N>.toml holds table = N (N >= 1)",
                    self.table
                ),
            ));
        }
        for (key, text) in [("caption", &self.caption), ("source", &self.source)] {
            if text.trim().is_empty() {
                return Err(self.invalid(key, "must not be empty"));
            }
        }
        if self.trials == Some(0) {
            return Err(self.invalid("trials", "must be at least 1 where given"));
        }
        if self.cells.is_empty() {
            return Err(self.invalid("cell", "a table needs at least one [[cell]]"));
        }
        let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
        for (i, cell) in self.cells.iter().enumerate() {
            if let Some(first) = seen.insert((&cell.row, &cell.column), i) {
                return Err(self.invalid(
                    format!("cell[{i}]"),
                    format!(
                        "duplicate cell (table {}, row '{}', column '{}'), first at cell[{first}]",
                        self.table, cell.row, cell.column
                    ),
                ));
            }
        }
        for (i, cell) in self.cells.iter().enumerate() {
            self.validate_cell(i, cell)?;
        }
        Ok(())
    }

    fn validate_cell(&self, i: usize, cell: &PaperCell) -> Result<(), PaperGoldenError> {
        let at = format!("(row '{}', column '{}')", cell.row, cell.column);
        let key = |field: &str| format!("cell[{i}].{field}");
        for (field, text) in [("row", &cell.row), ("column", &cell.column)] {
            if text.trim().is_empty() {
                return Err(self.invalid(key(field), "must not be empty"));
            }
        }
        let (lo, hi) = cell.unit.range();
        if !cell.value.is_finite() || cell.value < lo || cell.value > hi {
            return Err(self.invalid(
                key("value"),
                format!(
                    "{} is not a finite {} value in [{lo}, {hi}] {at}",
                    cell.value,
                    cell.unit.name()
                ),
            ));
        }
        if let Some(std) = cell.std {
            if !std.is_finite() || std < 0.0 {
                return Err(self.invalid(key("std"), format!("{std} must be finite and >= 0 {at}")));
            }
        }
        if !cell.tolerance.is_finite() || cell.tolerance <= 0.0 {
            return Err(self.invalid(
                key("tolerance"),
                format!("{} must be finite and > 0 {at}", cell.tolerance),
            ));
        }
        if cell.why.trim().is_empty() {
            return Err(self.invalid(key("why"), format!("say how the tolerance was chosen {at}")));
        }
        for (field, text) in [("metric", &cell.metric), ("note", &cell.note)] {
            if text.as_ref().is_some_and(|t| t.trim().is_empty()) {
                return Err(self.invalid(key(field), format!("empty where given {at}")));
            }
        }
        if let Some(delta) = &cell.printed_delta {
            if !delta.value.is_finite() {
                return Err(self.invalid(
                    key("printed_delta.value"),
                    format!("{} is not finite {at}", delta.value),
                ));
            }
            self.check_ref(&key("printed_delta.baseline"), &delta.baseline, cell)?;
        }
        if let Some(diff) = &cell.difference_of {
            self.check_ref(&key("difference_of.minuend"), &diff.minuend, cell)?;
            self.check_ref(&key("difference_of.subtrahend"), &diff.subtrahend, cell)?;
        }
        Ok(())
    }

    fn check_ref(&self, key: &str, r: &CellRef, from: &PaperCell) -> Result<(), PaperGoldenError> {
        if r.row == from.row && r.column == from.column {
            return Err(self.invalid(key, "refers to the cell itself"));
        }
        if self.cell(&r.row, &r.column).is_none() {
            return Err(self.invalid(
                key,
                format!(
                    "no cell with row '{}' and column '{}' in table {}",
                    r.row, r.column, self.table
                ),
            ));
        }
        Ok(())
    }
}

/// All paper tables of a directory, ordered by table number.
#[derive(Debug, Clone)]
pub struct PaperGoldens {
    pub tables: Vec<PaperTable>,
}

impl PaperGoldens {
    /// Reads every `*.toml` of `dir` (each must be a `table<N>.toml`); other files are left alone.
    pub fn load_dir(dir: &Path) -> Result<Self, PaperGoldenError> {
        let read_err = |e: std::io::Error| PaperGoldenError::Read {
            path: dir.into(),
            msg: e.to_string(),
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_err)? {
            let path = entry.map_err(read_err)?.path();
            if path.extension().is_some_and(|e| e == "toml") {
                paths.push(path);
            }
        }
        if paths.is_empty() {
            return Err(PaperGoldenError::Empty { dir: dir.into() });
        }
        let mut tables = paths
            .iter()
            .map(|p| PaperTable::load(p))
            .collect::<Result<Vec<_>, _>>()?;
        // File names are `table<N>.toml` and checked against `table`, so numbers are unique per directory.
        tables.sort_by_key(|t| t.table);
        Ok(Self { tables })
    }

    pub fn table(&self, table: u32) -> Option<&PaperTable> {
        self.tables.iter().find(|t| t.table == table)
    }

    pub fn cell(&self, table: u32, row: &str, column: &str) -> Option<&PaperCell> {
        self.table(table)?.cell(row, column)
    }

    /// Every cell, with the table it belongs to.
    pub fn cells(&self) -> impl Iterator<Item = (&PaperTable, &PaperCell)> {
        self.tables
            .iter()
            .flat_map(|t| t.cells.iter().map(move |c| (t, c)))
    }

    /// Printed values (one per cell).
    pub fn value_count(&self) -> usize {
        self.cells().count()
    }

    /// Printed standard deviations.
    pub fn std_count(&self) -> usize {
        self.cells().filter(|(_, c)| c.std.is_some()).count()
    }
}
