//! PNG plots of a suite's results: one training-loss curve per training stage and one bar chart per golden
//! check (the measured value beside the golden, with the tolerance band). Rendered in memory by plotters'
//! bitmap backend with the font under `assets/fonts` (pure Rust, no fontconfig), encoded by the `png` path
//! of the `image` crate, and linked from the Markdown report.
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use super::cache::StageCache;
use super::golden::{MetricCheck, Verdict};
use super::report::{ReportView, StageTiming};
use super::stage::Curve;
use crate::train::TrainReport;

/// Size of a training-loss plot in pixels.
pub const LOSS_SIZE: (u32, u32) = (800, 480);
/// Size of a metric-vs-golden plot in pixels.
pub const GOLDEN_SIZE: (u32, u32) = (640, 420);

/// Open Sans Regular (Apache 2.0, `assets/fonts/LICENSE-OpenSans.txt`) cut down to printable ASCII and the
/// few symbols the labels use (± Δ − ≤ ≥ · × µ – —), so the repository carries 9 KB instead of 200.
const FONT: &[u8] = include_bytes!("../../assets/fonts/OpenSans-Regular-subset.ttf");
const FAMILY: &str = "contracam-sans";

/// The file the training stages write beside their weights (the smoke pipeline's and the `pretrain`
/// kind's `report` slot), read when a stage's result carries no curve.
const TRAIN_REPORT: &str = "train_report.json";

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}: drawing failed: {msg}")]
    Draw { path: PathBuf, msg: String },
    #[error("{path}: PNG encoding failed: {msg}")]
    Encode { path: PathBuf, msg: String },
}

/// What one plot shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlotKind {
    /// The training loss of a stage (`<stage>` or `<stage>.<curve>`).
    Loss(String),
    /// A golden check of a metric.
    Golden(String),
}

/// One written PNG: its file name inside the plots directory and a caption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlotFile {
    pub file: String,
    pub kind: PlotKind,
    pub caption: String,
}

/// Everything `write_plots` wrote, and why something expected is not there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plots {
    pub dir: PathBuf,
    pub files: Vec<PlotFile>,
    pub notes: Vec<String>,
}

/// Loss curves of the stages of a run, by stage (`<stage>.<curve>` for a curve not named `loss`): the curves
/// a stage's result carries, else the epoch losses of the `train_report.json` beside its weights. Stages
/// without either (evaluation, localization) have none.
pub fn loss_curves(cache: &StageCache, stages: &[StageTiming]) -> BTreeMap<String, Curve> {
    let mut out = BTreeMap::new();
    for t in stages {
        let Some(p) = cache.lookup(&t.stage, &t.fingerprint) else {
            continue;
        };
        if !p.result.curves.is_empty() {
            for (name, c) in &p.result.curves {
                let key = if name == "loss" {
                    t.stage.clone()
                } else {
                    format!("{}.{name}", t.stage)
                };
                out.insert(key, c.clone());
            }
            continue;
        }
        let report = std::fs::read(p.dir.join(TRAIN_REPORT))
            .ok()
            .and_then(|b| serde_json::from_slice::<TrainReport>(&b).ok());
        if let Some(r) = report {
            out.insert(t.stage.clone(), epoch_loss_curve(&r.epoch_loss));
        }
    }
    out
}

/// The mean training loss per epoch as a curve (epochs from 1).
pub fn epoch_loss_curve(epoch_loss: &[f64]) -> Curve {
    Curve {
        x_label: "epoch".into(),
        y_label: "mean training loss".into(),
        x: (1..=epoch_loss.len()).map(|e| e as f64).collect(),
        y: epoch_loss.to_vec(),
    }
}

/// Writes one PNG per loss curve (`loss-<stage>.png`) and one per golden check with a golden value
/// (`golden-<metric>.png`) into `dir` (created). A results file without loss curves (written before they
/// were recorded, or a suite without a training stage) gets a note instead of a loss plot.
pub fn write_plots(view: &ReportView, dir: &Path) -> Result<Plots, PlotError> {
    std::fs::create_dir_all(dir).map_err(|err| PlotError::Io {
        path: dir.into(),
        err,
    })?;
    let mut plots = Plots {
        dir: dir.into(),
        ..Default::default()
    };
    if view.loss_curves.is_empty() {
        plots.notes.push(
            "No training-loss curves in this results file (no training stage, or written by a contracam \
             that did not record them): no loss plot."
                .into(),
        );
    }
    for (stage, curve) in &view.loss_curves {
        let file = format!("loss-{}.png", file_stem(stage));
        let path = dir.join(&file);
        if curve.y.iter().all(|v| !v.is_finite()) {
            plots
                .notes
                .push(format!("`{stage}`: no finite loss value, no plot."));
            continue;
        }
        write_png(&path, LOSS_SIZE, |root| draw_loss(root, stage, curve))?;
        plots.files.push(PlotFile {
            file,
            kind: PlotKind::Loss(stage.clone()),
            caption: format!("{stage}: {} per {}", curve.y_label, curve.x_label),
        });
    }
    for c in view.checks.iter().filter(|c| c.golden.is_some()) {
        let file = format!("golden-{}.png", file_stem(&c.metric));
        let path = dir.join(&file);
        write_png(&path, GOLDEN_SIZE, |root| draw_golden(root, c))?;
        plots.files.push(PlotFile {
            file,
            kind: PlotKind::Golden(c.metric.clone()),
            caption: format!("{}: value vs golden ({})", c.metric, c.verdict.label()),
        });
    }
    Ok(plots)
}

/// The Markdown section that shows the plots; `link_dir` is the plots directory as seen from the report.
pub fn markdown_section(plots: &Plots, link_dir: &Path) -> String {
    let mut s = String::from("\n## Plots\n\n");
    for n in &plots.notes {
        s.push_str(&format!("> {n}\n\n"));
    }
    let link = |f: &PlotFile| {
        let p = link_dir.join(&f.file);
        // Markdown links use forward slashes and no spaces.
        let p = p.to_string_lossy().replace('\\', "/").replace(' ', "%20");
        format!("![{}]({p})\n\n", f.caption)
    };
    for (title, loss) in [
        ("Training loss", true),
        ("Metrics against the golden", false),
    ] {
        let files: Vec<&PlotFile> = plots
            .files
            .iter()
            .filter(|f| matches!(f.kind, PlotKind::Loss(_)) == loss)
            .collect();
        if files.is_empty() {
            continue;
        }
        s.push_str(&format!("### {title}\n\n"));
        for f in files {
            s.push_str(&link(f));
        }
    }
    s
}

/// `to` relative to the directory `from` (both made absolute against the current directory first), for
/// links from a report to its plots; `to` itself when no relative path exists (another drive).
pub fn relative_dir(from: &Path, to: &Path) -> PathBuf {
    let abs = |p: &Path| -> Option<PathBuf> {
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir().ok()?.join(p)
        };
        Some(p.canonicalize().unwrap_or(p))
    };
    let (Some(f), Some(t)) = (abs(from), abs(to)) else {
        return to.to_path_buf();
    };
    let fc: Vec<Component> = f.components().collect();
    let tc: Vec<Component> = t.components().collect();
    if fc.first() != tc.first() {
        return to.to_path_buf();
    }
    let common = fc.iter().zip(&tc).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..fc.len() {
        rel.push("..");
    }
    for c in &tc[common..] {
        rel.push(c.as_os_str());
    }
    if rel.as_os_str().is_empty() {
        rel.push(".");
    }
    rel
}

/// A metric or stage name as a file-name stem: letters, digits, `.`, `-`, `_`; anything else becomes `_`.
fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Also as plotters' default family, so no text drawn with the default style lacks a font. The bytes
        // are a committed file the plot tests render with; a bad file fails the drawing, not the process.
        for family in [FAMILY, "sans-serif"] {
            if plotters::style::register_font(family, FontStyle::Normal, FONT).is_err() {
                tracing::error!("assets/fonts/OpenSans-Regular-subset.ttf is not a valid font");
            }
        }
    });
}

type Root<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), String>;

/// Renders into an RGB buffer of `size` and writes it as PNG to `path`.
fn write_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&Root) -> DrawResult,
) -> Result<(), PlotError> {
    register_font();
    let mut buf = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
        draw(&root).map_err(|msg| PlotError::Draw {
            path: path.into(),
            msg,
        })?;
        root.present().map_err(|e| draw_err(path, e))?;
    }
    image::save_buffer_with_format(
        path,
        &buf,
        size.0,
        size.1,
        image::ColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .map_err(|e| PlotError::Encode {
        path: path.into(),
        msg: e.to_string(),
    })
}

fn draw_err(path: &Path, e: impl std::fmt::Display) -> PlotError {
    PlotError::Draw {
        path: path.into(),
        msg: e.to_string(),
    }
}

/// `[lo, hi]` padded by a fraction of the span (or of the magnitude when the span is zero).
fn padded(lo: f64, hi: f64, frac: f64) -> (f64, f64) {
    let span = hi - lo;
    let pad = if span > 0.0 {
        span * frac
    } else {
        (lo.abs() * frac).max(1e-6)
    };
    (lo - pad, hi + pad)
}

fn draw_loss(root: &Root, stage: &str, curve: &Curve) -> DrawResult {
    let pts: Vec<(f64, f64)> = curve
        .x
        .iter()
        .zip(&curve.y)
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(x, y)| (*x, *y))
        .collect();
    let (x0, x1) = pts
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        });
    let (y0, y1) = pts
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
    let (x0, x1) = if x1 > x0 {
        (x0, x1)
    } else {
        padded(x0, x1, 0.5)
    };
    let (y0, y1) = padded(y0, y1, 0.08);
    let mut chart = ChartBuilder::on(root)
        .caption(format!("{stage}: training loss"), (FAMILY, 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc(curve.x_label.as_str())
        .y_desc(curve.y_label.as_str())
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| e.to_string())?;
    let blue = RGBColor(31, 119, 180);
    chart
        .draw_series(LineSeries::new(pts.iter().copied(), blue.stroke_width(2)))
        .map_err(|e| e.to_string())?;
    if pts.len() <= 60 {
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, blue.filled())))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn draw_golden(root: &Root, c: &MetricCheck) -> DrawResult {
    let golden = c.golden.unwrap_or(f64::NAN);
    let tol = c.tolerance.filter(|t| t.is_finite()).unwrap_or(0.0);
    let value = c.value.filter(|v| v.is_finite());
    let mut lo = (golden - tol).min(value.unwrap_or(golden));
    let mut hi = (golden + tol).max(value.unwrap_or(golden));
    if !lo.is_finite() || !hi.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let (y0, y1) = padded(lo, hi, 0.35);
    let title = format!("{}: {}", c.metric, c.verdict.label());
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FAMILY, 22))
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..2f64, y0..y1)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(5)
        .x_label_formatter(&|x| {
            if (x - 0.5).abs() < 1e-9 {
                "value".into()
            } else if (x - 1.5).abs() < 1e-9 {
                "golden".into()
            } else {
                String::new()
            }
        })
        .label_style((FAMILY, 14))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| e.to_string())?;
    // The tolerance band across the chart, the golden as a line through it.
    let band = RGBColor(255, 200, 60);
    if tol > 0.0 && golden.is_finite() {
        chart
            .draw_series([Rectangle::new(
                [(0.0, golden - tol), (2.0, golden + tol)],
                band.mix(0.35).filled(),
            )])
            .map_err(|e| e.to_string())?
            .label(format!("golden ± {tol}"))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], band.filled()));
    }
    let verdict_colour = match c.verdict {
        Verdict::Pass => RGBColor(44, 160, 44),
        Verdict::Fail => RGBColor(214, 39, 40),
        _ => RGBColor(127, 127, 127),
    };
    let mut bars = Vec::new();
    if let Some(v) = value {
        bars.push(Rectangle::new(
            [(0.2, y0), (0.8, v)],
            verdict_colour.filled(),
        ));
    }
    if golden.is_finite() {
        bars.push(Rectangle::new(
            [(1.2, y0), (1.8, golden)],
            RGBColor(90, 90, 90).filled(),
        ));
        chart
            .draw_series(LineSeries::new(
                [(0.0, golden), (2.0, golden)],
                BLACK.stroke_width(1),
            ))
            .map_err(|e| e.to_string())?;
    }
    chart.draw_series(bars).map_err(|e| e.to_string())?;
    let label = match value {
        Some(v) => format!("{v:.6}"),
        None => "missing".into(),
    };
    // Labels just above their bars (a text's anchor is its top-left corner).
    let above = (y1 - y0) * 0.06;
    let at = value.map_or(y0 + above, |v| v + above);
    chart
        .draw_series([Text::new(label, (0.25, at), (FAMILY, 14).into_font())])
        .map_err(|e| e.to_string())?;
    chart
        .draw_series([Text::new(
            format!("{golden:.6}"),
            (1.25, golden + above),
            (FAMILY, 14).into_font(),
        )])
        .map_err(|e| e.to_string())?;
    if tol > 0.0 {
        chart
            .configure_series_labels()
            .position(plotters::chart::SeriesLabelPosition::UpperMiddle)
            .label_font((FAMILY, 14))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_dir_walks_up_and_down() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("reports");
        let b = t.path().join("out/plots");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        assert_eq!(relative_dir(&a, &b), PathBuf::from("../out/plots"));
        assert_eq!(relative_dir(t.path(), &b), PathBuf::from("out/plots"));
        assert_eq!(relative_dir(&b, &b), PathBuf::from("."));
    }

    #[test]
    fn file_stems_keep_safe_characters_only() {
        assert_eq!(file_stem("oa_crop.linear_acc"), "oa_crop.linear_acc");
        assert_eq!(file_stem("a/b c"), "a_b_c");
    }
}
