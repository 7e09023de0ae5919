//! Progress for anything a person waits for: an indicatif bar when stderr is a terminal, plain periodic
//! log lines (stage, step, rate, ETA) when it is not (CI logs, `nohup`, pipes), nothing with `--quiet`.
//!
//! How to use it (every layer may; it only writes to stderr):
//! ```no_run
//! use contracam_base::util::progress::{Progress, Unit};
//! let quiet = false; // the CLI's --quiet
//! let p = Progress::new("crf", Some(5000), Unit::Items("images"), quiet);
//! for _ in 0..5000 {
//!     // ... one image ...
//!     p.inc(1); // cheap: an atomic add, plus a clock read at most every few ms
//! }
//! p.finish(); // clears the bar; in log mode prints one "done" line with the total time and rate
//! ```
//! - `Progress` is `Clone + Send + Sync`: hand clones to rayon closures or threads; they share one counter.
//! - Unknown totals (`None`) log the count and rate without an ETA; `set_length` fixes the total later.
//! - `Unit::Bytes` formats counts and rates as KiB/MiB/GiB; `set_message` adds a short status (e.g.
//!   "retry 2 in 4 s") to the bar and the next log line.
//! - Several bars at once (downloads): [`ProgressGroup`] stacks them on a terminal; in log mode each logs
//!   on its own.
//! - [`Progress::println`] prints a line that must always reach the log (one per point of a sweep, a
//!   retry) without tearing the bar; hidden indicators print nothing.
//! - Lower layers take a `&Progress` (or a [`Mode`] to make their own) and never look at the terminal.
//! - The mode comes from [`Mode::detect`]: `--quiet` → hidden, else `CONTRACAM_PROGRESS=bar|log|off` when set,
//!   else a bar on a terminal and log lines otherwise. Log lines come at most every
//!   `CONTRACAM_PROGRESS_INTERVAL_S` seconds (default 10; 0 logs every update, for tests).
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// An indicatif bar on stderr.
    Bar,
    /// A plain line on stderr at most every `interval`.
    Log { interval: Duration },
    /// Nothing.
    Hidden,
}

impl Mode {
    /// `--quiet` hides; else `CONTRACAM_PROGRESS` (`bar`, `log`, `off`) when set; else a bar on a terminal,
    /// log lines otherwise.
    pub fn detect(quiet: bool) -> Mode {
        if quiet {
            return Mode::Hidden;
        }
        let interval = std::env::var("CONTRACAM_PROGRESS_INTERVAL_S")
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(Duration::from_secs(10));
        match std::env::var("CONTRACAM_PROGRESS").as_deref() {
            Ok("off") => Mode::Hidden,
            Ok("log") => Mode::Log { interval },
            Ok("bar") => Mode::Bar,
            _ if std::io::stderr().is_terminal() => Mode::Bar,
            _ => Mode::Log { interval },
        }
    }
}

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Things, named in the plural ("images", "steps", "files").
    Items(&'static str),
    /// Bytes (printed as KiB/MiB/GiB).
    Bytes,
}

/// One progress indicator; see the module docs.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

struct Inner {
    stage: String,
    unit: Unit,
    mode: Mode,
    bar: Option<ProgressBar>,
    pos: AtomicU64,
    /// `u64::MAX`: unknown.
    len: AtomicU64,
    start: Instant,
    log: Mutex<LogState>,
}

struct LogState {
    last: Instant,
    message: String,
    finished: bool,
    /// Where log lines go; `None`: stderr.
    sink: Option<Box<dyn Write + Send>>,
}

impl LogState {
    fn emit(&mut self, line: &str) {
        match &mut self.sink {
            Some(w) => {
                let _ = writeln!(w, "{line}");
            }
            None => eprintln!("{line}"),
        }
    }
}

impl Progress {
    /// A progress indicator for `stage` (e.g. "crf", "epoch 3/10") over `total` units, shown as
    /// [`Mode::detect`] says.
    pub fn new(stage: &str, total: Option<u64>, unit: Unit, quiet: bool) -> Self {
        Self::with_mode(stage, total, unit, Mode::detect(quiet))
    }

    /// As [`Progress::new`] with an explicit mode.
    pub fn with_mode(stage: &str, total: Option<u64>, unit: Unit, mode: Mode) -> Self {
        let bar = (mode == Mode::Bar).then(|| new_bar(stage, total, unit));
        Self::from_parts(stage, total, unit, mode, bar)
    }

    /// Shown nowhere.
    pub fn hidden() -> Self {
        Self::with_mode("", None, Unit::Items("items"), Mode::Hidden)
    }

    /// Log lines at most every `interval`, written to `sink` instead of stderr (tests, a log file).
    pub fn to_writer(
        stage: &str,
        total: Option<u64>,
        unit: Unit,
        interval: Duration,
        sink: Box<dyn Write + Send>,
    ) -> Self {
        let p = Self::from_parts(stage, total, unit, Mode::Log { interval }, None);
        if let Ok(mut s) = p.inner.log.lock() {
            s.sink = Some(sink);
        }
        p
    }

    fn from_parts(
        stage: &str,
        total: Option<u64>,
        unit: Unit,
        mode: Mode,
        bar: Option<ProgressBar>,
    ) -> Self {
        let now = Instant::now();
        Progress {
            inner: Arc::new(Inner {
                stage: stage.to_string(),
                unit,
                mode,
                bar,
                pos: AtomicU64::new(0),
                len: AtomicU64::new(total.unwrap_or(u64::MAX)),
                start: now,
                log: Mutex::new(LogState {
                    last: now,
                    message: String::new(),
                    finished: false,
                    sink: None,
                }),
            }),
        }
    }

    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    /// Adds `n` to the position.
    pub fn inc(&self, n: u64) {
        let pos = self.inner.pos.fetch_add(n, Ordering::Relaxed) + n;
        self.updated(pos);
    }

    /// Sets the position (e.g. "images done so far").
    pub fn set_position(&self, pos: u64) {
        self.inner.pos.store(pos, Ordering::Relaxed);
        self.updated(pos);
    }

    pub fn position(&self) -> u64 {
        self.inner.pos.load(Ordering::Relaxed)
    }

    /// Sets (or fixes, once known) the total.
    pub fn set_length(&self, len: u64) {
        self.inner.len.store(len, Ordering::Relaxed);
        if let Some(b) = &self.inner.bar {
            b.set_length(len);
        }
    }

    /// A short status shown after the counts ("" clears it).
    pub fn set_message(&self, msg: impl Into<String>) {
        let msg = msg.into();
        if let Some(b) = &self.inner.bar {
            b.set_message(msg.clone());
        }
        if let Ok(mut s) = self.inner.log.lock() {
            s.message = msg;
        }
    }

    /// Clears the bar; in log mode prints the closing line (once).
    pub fn finish(&self) {
        if let Some(b) = &self.inner.bar {
            b.finish_and_clear();
        }
        if let Mode::Log { .. } = self.inner.mode {
            let mut s = match self.inner.log.lock() {
                Ok(s) => s,
                Err(p) => p.into_inner(),
            };
            if !s.finished {
                s.finished = true;
                let line = self.done_line();
                s.emit(&line);
            }
        }
    }

    /// Leaves the bar where it is (a failure); in log mode prints nothing more.
    pub fn abandon(&self) {
        if let Some(b) = &self.inner.bar {
            b.abandon();
        }
        if let Ok(mut s) = self.inner.log.lock() {
            s.finished = true;
        }
    }

    fn updated(&self, pos: u64) {
        if let Some(b) = &self.inner.bar {
            b.set_position(pos);
            return;
        }
        let Mode::Log { interval } = self.inner.mode else {
            return;
        };
        let Ok(mut s) = self.inner.log.try_lock() else {
            return; // another thread is printing a line right now
        };
        let now = Instant::now();
        if s.finished || now.duration_since(s.last) < interval {
            return;
        }
        s.last = now;
        let line = self.status_line(pos, &s.message);
        s.emit(&line);
    }

    /// A line that always reaches the log (e.g. one per point of a sweep): above the bar on a terminal,
    /// prefixed with the stage in log mode, nowhere when hidden. Does not count as a status line.
    pub fn println(&self, line: &str) {
        if let Some(b) = &self.inner.bar {
            b.println(format!("{}: {line}", self.inner.stage));
            return;
        }
        if let Mode::Log { .. } = self.inner.mode {
            let mut s = match self.inner.log.lock() {
                Ok(s) => s,
                Err(p) => p.into_inner(),
            };
            let line = format!("{}: {line}", self.inner.stage);
            s.emit(&line);
        }
    }

    /// `crf: 1200/5000 images (24.0%), 310.2 images/s, ETA 12 s`.
    fn status_line(&self, pos: u64, message: &str) -> String {
        let i = &self.inner;
        let elapsed = i.start.elapsed().as_secs_f64();
        let len = i.len.load(Ordering::Relaxed);
        let rate = if elapsed > 0.0 {
            pos as f64 / elapsed
        } else {
            0.0
        };
        let mut line = format!("{}: {}", i.stage, self.amount(pos));
        if len != u64::MAX {
            line += &format!("/{}", self.amount(len));
        }
        if let Unit::Items(name) = i.unit {
            line += &format!(" {name}");
        }
        if len != u64::MAX && len > 0 {
            line += &format!(" ({:.1}%)", 100.0 * pos as f64 / len as f64);
        }
        line += &format!(", {}", self.rate(rate));
        if len != u64::MAX && rate > 0.0 && pos <= len {
            line += &format!(", ETA {}", human_duration((len - pos) as f64 / rate));
        }
        if !message.is_empty() {
            line += &format!(" [{message}]");
        }
        line
    }

    fn done_line(&self) -> String {
        let i = &self.inner;
        let pos = i.pos.load(Ordering::Relaxed);
        let elapsed = i.start.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 {
            pos as f64 / elapsed
        } else {
            0.0
        };
        let mut line = format!("{}: done, {}", i.stage, self.amount(pos));
        if let Unit::Items(name) = i.unit {
            line += &format!(" {name}");
        }
        line + &format!(" in {} ({})", human_duration(elapsed), self.rate(rate))
    }

    fn amount(&self, n: u64) -> String {
        match self.inner.unit {
            Unit::Items(_) => n.to_string(),
            Unit::Bytes => human_bytes(n as f64),
        }
    }

    fn rate(&self, r: f64) -> String {
        match self.inner.unit {
            Unit::Items(name) => format!("{r:.1} {name}/s"),
            Unit::Bytes => format!("{}/s", human_bytes(r)),
        }
    }
}

/// Several indicators at once (e.g. one per download and an overall one): stacked bars on a terminal,
/// independent log lines otherwise.
#[derive(Clone)]
pub struct ProgressGroup {
    mode: Mode,
    multi: Option<MultiProgress>,
}

impl ProgressGroup {
    pub fn new(quiet: bool) -> Self {
        Self::with_mode(Mode::detect(quiet))
    }

    pub fn with_mode(mode: Mode) -> Self {
        let multi = (mode == Mode::Bar)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        ProgressGroup { mode, multi }
    }

    pub fn hidden() -> Self {
        Self::with_mode(Mode::Hidden)
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Adds an indicator at the bottom.
    pub fn add(&self, stage: &str, total: Option<u64>, unit: Unit) -> Progress {
        self.insert(stage, total, unit, None)
    }

    /// Adds an indicator just above `above` (e.g. a file's bar above the overall one).
    pub fn insert_before(
        &self,
        above: &Progress,
        stage: &str,
        total: Option<u64>,
        unit: Unit,
    ) -> Progress {
        self.insert(stage, total, unit, Some(above))
    }

    fn insert(
        &self,
        stage: &str,
        total: Option<u64>,
        unit: Unit,
        above: Option<&Progress>,
    ) -> Progress {
        let bar = self.multi.as_ref().map(|m| {
            let b = new_bar(stage, total, unit);
            match above.and_then(|a| a.inner.bar.as_ref()) {
                Some(a) => m.insert_before(a, b),
                None => m.add(b),
            }
        });
        Progress::from_parts(stage, total, unit, self.mode, bar)
    }

    /// Prints a line without tearing the bars (plain `eprintln!` otherwise). Hidden groups print nothing.
    pub fn println(&self, line: &str) {
        match (&self.multi, self.mode) {
            (Some(m), _) => {
                let _ = m.println(line);
            }
            (None, Mode::Hidden) => {}
            (None, _) => eprintln!("{line}"),
        }
    }
}

fn new_bar(stage: &str, total: Option<u64>, unit: Unit) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    let template = match unit {
        Unit::Items(_) => {
            "{prefix:>12} [{bar:30}] {human_pos}/{human_len} {per_sec} ETA {eta} {msg}"
        }
        Unit::Bytes => {
            "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}"
        }
    };
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(stage.chars().take(12).collect::<String>());
    bar
}

/// `1.5 GiB`, `12.0 MiB`, `512 B`.
pub fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} {}", UNITS[0])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `42 s`, `3 min 05 s`, `2 h 01 min`.
pub fn human_duration(s: f64) -> String {
    if !s.is_finite() {
        return "?".into();
    }
    let s = s.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_name_stage_count_rate_and_eta() {
        let p = Progress::with_mode(
            "crf",
            Some(10),
            Unit::Items("images"),
            Mode::Log {
                interval: Duration::ZERO,
            },
        );
        p.set_position(4);
        let line = p.status_line(4, "");
        assert!(line.starts_with("crf: 4/10 images (40.0%), "), "{line}");
        assert!(line.contains("images/s"), "{line}");
        assert!(line.contains("ETA"), "{line}");
        let b = Progress::with_mode("x.tar", None, Unit::Bytes, Mode::Hidden);
        let line = b.status_line(3 << 20, "retry 1");
        assert!(line.starts_with("x.tar: 3.0 MiB, "), "{line}");
        assert!(!line.contains("ETA"), "{line}");
        assert!(line.ends_with("[retry 1]"), "{line}");
        assert!(p.done_line().starts_with("crf: done, 4 images in "));
    }

    /// A sink the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn log_lines_are_rate_limited_plain_and_end_with_one_done_line() {
        // An interval no test reaches: no status line, only the closing one (printed once).
        let out = Shared::default();
        let p = Progress::to_writer(
            "train",
            Some(10),
            Unit::Items("steps"),
            Duration::from_secs(3600),
            Box::new(out.clone()),
        );
        (0..10).for_each(|_| p.inc(1));
        assert_eq!(out.text(), "");
        p.finish();
        p.finish();
        let text = out.text();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.starts_with("train: done, 10 steps in "), "{text}");
        assert!(text.contains("steps/s"), "{text}");

        // Interval zero: one line per update, each with count, rate and ETA, and no control codes.
        let out = Shared::default();
        let p = Progress::to_writer(
            "train",
            Some(4),
            Unit::Items("steps"),
            Duration::ZERO,
            Box::new(out.clone()),
        );
        p.set_message("epoch 1/2 loss 0.500");
        (0..3).for_each(|_| p.inc(1));
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        for (i, l) in lines.iter().enumerate() {
            assert!(l.starts_with(&format!("train: {}/4 steps (", i + 1)), "{l}");
            assert!(l.contains(" steps/s, ETA "), "{l}");
            assert!(l.ends_with("[epoch 1/2 loss 0.500]"), "{l}");
        }
        assert!(!text.contains('\u{1b}') && !text.contains('\r'), "{text:?}");
        // A line printed after `finish` or `abandon` never follows the closing line.
        p.abandon();
        p.inc(1);
        assert_eq!(out.text().lines().count(), 3);
    }

    #[test]
    fn println_always_reaches_the_log_and_hidden_prints_nothing() {
        let out = Shared::default();
        let p = Progress::to_writer(
            "linear eval",
            Some(2),
            Unit::Items("weight decays"),
            Duration::from_secs(3600),
            Box::new(out.clone()),
        );
        p.println("weight decay 1.00e-4: val 50.00 %");
        p.println("weight decay 1.00e-3: val 60.00 %");
        assert_eq!(
            out.text(),
            "linear eval: weight decay 1.00e-4: val 50.00 %\n\
             linear eval: weight decay 1.00e-3: val 60.00 %\n"
        );
        let h = Progress::hidden();
        h.println("nothing");
        h.inc(1);
        h.finish();
        assert_eq!(h.position(), 1);
    }

    #[test]
    fn clones_share_one_counter_across_threads() {
        let p = Progress::hidden();
        std::thread::scope(|s| {
            for _ in 0..4 {
                let p = p.clone();
                s.spawn(move || (0..100).for_each(|_| p.inc(1)));
            }
        });
        assert_eq!(p.position(), 400);
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_duration(42.4), "42 s");
        assert_eq!(human_duration(185.0), "3 min 05 s");
        assert_eq!(human_duration(7260.0), "2 h 01 min");
        assert_eq!(human_duration(f64::NAN), "?");
    }
}
