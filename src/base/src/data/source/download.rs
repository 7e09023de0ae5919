//! Resumable, verified downloads.
//!
//! A file streams into `<file>.part` beside its target while sha256 (and md5 when only md5 is published) is
//! computed on the fly. An interrupted transfer resumes with an HTTP Range request, validated by the total size
//! and the ETag/Last-Modified recorded when it started (sent as `If-Range`); a server that ignores Range, or
//! whose validator changed, makes it start over from zero. Transient failures are retried with exponential
//! backoff (a server's `Retry-After`, capped, replaces the backoff); then the next source (mirror) is tried.
//! Redirects may never go from https to http. An HTML page where a file was expected (a portal, login or
//! quota page, often transient) is retried like a network error and then refused; a size that disagrees
//! with the manifest is refused. Free disk space is checked
//! before any byte is written. Only a file whose size and checksum match is renamed into place, followed by a
//! `.verified.json` marker; a file that fails its checksum is moved aside, never left in place.
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::hash::{hash_file, Digests, StreamHasher};
use super::manifest::ChecksumKind;
use super::store::{
    now_unix, read_json, write_json_atomic, DatasetDir, Expected, Registered, RegisteredFile,
    VerifiedMarker,
};
use crate::data::error::{DataError, IoContext, Result};
use crate::util::progress::{Mode, Progress, ProgressGroup, Unit};

pub const USER_AGENT: &str = concat!(
    "contracam/",
    env!("CARGO_PKG_VERSION"),
    " (dataset downloader)"
);

/// Download progress: one indicator per file and one overall; stacked bars on a terminal, plain log lines
/// (bytes, rate, ETA) otherwise, nothing when quiet.
#[derive(Clone)]
pub struct DownloadProgress {
    pub group: ProgressGroup,
    pub overall: Progress,
}

impl DownloadProgress {
    /// `total`: the bytes all files add up to (0 when unknown).
    pub fn new(quiet: bool, total: u64) -> Self {
        Self::with_mode(Mode::detect(quiet), total)
    }

    pub fn with_mode(mode: Mode, total: u64) -> Self {
        let group = ProgressGroup::with_mode(mode);
        let overall = group.add("overall", (total > 0).then_some(total), Unit::Bytes);
        DownloadProgress { group, overall }
    }

    pub fn hidden() -> Self {
        Self::with_mode(Mode::Hidden, 0)
    }

    /// An indicator for one file, above the overall one.
    pub fn file_bar(&self, name: &str, len: Option<u64>) -> Progress {
        self.group
            .insert_before(&self.overall, name, len, Unit::Bytes)
    }
}

/// Validators of a partial download, saved when the transfer starts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PartMeta {
    pub url: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub total: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Retries per source after the first attempt.
    pub retries: u32,
    /// First backoff delay; doubled after each failed attempt.
    pub retry_base: Duration,
    /// Read/connect timeout.
    pub timeout: Duration,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            retries: 4,
            retry_base: Duration::from_millis(1000),
            timeout: Duration::from_secs(60),
        }
    }
}

/// May a redirect go from `from` to `to`? Never from https down to http.
pub fn redirect_allowed(from: &reqwest::Url, to: &reqwest::Url) -> bool {
    !(from.scheme() == "https" && to.scheme() == "http")
}

#[derive(Debug)]
struct DowngradeRefused(String, String);
impl std::fmt::Display for DowngradeRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "refusing redirect from {} to {}: https must not be downgraded to http",
            self.0, self.1
        )
    }
}
impl std::error::Error for DowngradeRefused {}

pub fn http_client(opts: &DownloadOptions) -> Result<reqwest::blocking::Client> {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        let prev = attempt.previous().last().cloned();
        match prev {
            Some(p) if !redirect_allowed(&p, attempt.url()) => {
                let to = attempt.url().to_string();
                attempt.error(DowngradeRefused(p.to_string(), to))
            }
            _ if attempt.previous().len() > 10 => attempt.stop(),
            _ => attempt.follow(),
        }
    });
    reqwest::blocking::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(policy)
        .connect_timeout(opts.timeout)
        .timeout(opts.timeout)
        .build()
        .map_err(|e| DataError::Network {
            url: "(client)".into(),
            msg: e.to_string(),
        })
}

/// Free bytes for an unprivileged user on the file system holding `dir` (its nearest existing ancestor).
pub fn free_space(dir: &Path) -> Result<u64> {
    // The nearest existing ancestor; a relative path whose folders do not exist yet ends at "." (popping it
    // leaves "", which statvfs cannot stat).
    let mut p = dir.to_path_buf();
    while !p.exists() {
        if !p.pop() || p.as_os_str().is_empty() {
            p = PathBuf::from(".");
            break;
        }
    }
    let c =
        std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).map_err(|e| DataError::Io {
            path: p.clone(),
            err: std::io::Error::other(e),
        })?;
    // SAFETY: statvfs writes into the zeroed struct we own; c is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).at(p);
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

pub fn ensure_space(dir: &Path, needed: u64) -> Result<()> {
    let available = free_space(dir)?;
    // Keep a small reserve so a download never fills the disk to the last byte.
    let reserve = 64 << 20;
    if needed.saturating_add(reserve) > available {
        return Err(DataError::DiskSpace {
            path: dir.to_path_buf(),
            needed,
            available,
        });
    }
    Ok(())
}

/// Longest wait a `Retry-After` header can impose on one attempt.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// The wait a `Retry-After` value asks for: delay-seconds, or an HTTP date (RFC 9110) relative to `now`;
/// capped at [`MAX_RETRY_AFTER`]. `None` for a value that is neither.
pub fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = value.trim();
    let wait = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = parse_imf_fixdate(v)?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` (the HTTP date format servers send) as a time; `None` otherwise.
fn parse_imf_fixdate(v: &str) -> Option<std::time::SystemTime> {
    let rest = v.split_once(", ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    if f.len() != 5 || f[4] != "GMT" {
        return None;
    }
    let day: i64 = f[0].parse().ok()?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == f[1])? as i64 + 1;
    let year: i64 = f[2].parse().ok()?;
    let hms: Vec<i64> = f[3]
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if hms.len() != 3 || !(1..=31).contains(&day) || hms[0] > 23 || hms[1] > 59 || hms[2] > 60 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + hms[0] * 3600 + hms[1] * 60 + hms[2];
    let secs = u64::try_from(secs).ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Does this start look like an HTML document rather than a binary file?
pub fn looks_like_html(head: &[u8]) -> bool {
    let s: Vec<u8> = head
        .iter()
        .copied()
        .skip_while(|b| b.is_ascii_whitespace() || *b == 0xEF || *b == 0xBB || *b == 0xBF)
        .take(64)
        .map(|b| b.to_ascii_lowercase())
        .collect();
    [&b"<!doctype html"[..], b"<html", b"<head", b"<!--"]
        .iter()
        .any(|p| s.starts_with(p))
}

enum Failure {
    /// Try this source again after a backoff (network hiccup, 5xx, short body, an HTML page: portals and
    /// quota pages are often transient).
    Retry(DataError),
    /// As `Retry`, waiting what the server's `Retry-After` asked (capped at [`MAX_RETRY_AFTER`]).
    /// Boxed: it would make every `Result<_, Failure>` larger.
    RetryAfter(Box<(DataError, Duration)>),
    /// This source is wrong (404, HTML, size, downgrade, checksum): try the next one.
    NextSource(DataError),
    /// Stop everything (local disk full or unwritable).
    Fatal(DataError),
}

/// What to fetch: one manifest file.
pub struct FileJob<'a> {
    pub dataset: &'a str,
    pub name: &'a str,
    pub dir: &'a DatasetDir,
    pub expected: Expected,
    /// Sources in order (user mirrors first, then the manifest's urls).
    pub urls: Vec<String>,
    /// Record the computed hashes for a file with no published checksum.
    pub register: bool,
}

static REGISTER_LOCK: Mutex<()> = Mutex::new(());

/// Download one file (resuming a previous partial transfer) and verify it. Returns its digests.
pub fn download_file(
    client: &reqwest::blocking::Client,
    job: &FileJob,
    opts: &DownloadOptions,
    progress: &DownloadProgress,
) -> Result<Digests> {
    let downloads = job.dir.downloads();
    std::fs::create_dir_all(&downloads).at(&downloads)?;
    if job.expected.kind == ChecksumKind::None && !job.register {
        return Err(DataError::Unverified {
            dataset: job.dataset.into(),
            file: job.name.into(),
        });
    }
    if let Some(size) = job.expected.size {
        let have = std::fs::metadata(job.dir.part(job.name))
            .map(|m| m.len())
            .unwrap_or(0);
        ensure_space(&downloads, size.saturating_sub(have))?;
    }
    let bar = progress.file_bar(job.name, job.expected.size);
    let mut failures: Vec<String> = Vec::new();
    let mut last_err: Option<DataError> = None;
    // The only failure was running out of retries: report the attempt count too.
    let mut exhausted = false;
    for url in &job.urls {
        let mut delay = opts.retry_base;
        for attempt in 0..=opts.retries {
            match attempt_download(client, job, url, &bar, progress) {
                Ok(d) => match finish(job, url, d) {
                    Ok(d) => {
                        bar.finish();
                        return Ok(d);
                    }
                    Err(e) => {
                        failures.push(format!("  {url}: {e}"));
                        last_err = Some(e);
                        break;
                    }
                },
                Err(Failure::Fatal(e)) => {
                    bar.abandon();
                    return Err(e);
                }
                Err(Failure::NextSource(e)) => {
                    failures.push(format!("  {url}: {e}"));
                    last_err = Some(e);
                    break;
                }
                Err(failure @ (Failure::Retry(_) | Failure::RetryAfter(..))) => {
                    let (e, asked) = match failure {
                        Failure::RetryAfter(b) => (b.0, Some(b.1)),
                        Failure::Retry(e) => (e, None),
                        _ => unreachable!("matched above"),
                    };
                    tracing::warn!("{}: attempt {} failed: {e}", job.name, attempt + 1);
                    if attempt == opts.retries {
                        failures.push(format!(
                            "  {url}: {e} (after {} attempts)",
                            opts.retries + 1
                        ));
                        last_err = Some(e);
                        exhausted = true;
                    } else {
                        // The server's Retry-After replaces this attempt's backoff.
                        let wait = asked.unwrap_or(delay);
                        let why = if asked.is_some() {
                            " (the server's Retry-After)"
                        } else {
                            ""
                        };
                        tracing::warn!(
                            "{}: retry {} in {:.1} s{why}",
                            job.name,
                            attempt + 1,
                            wait.as_secs_f64()
                        );
                        bar.set_message(format!(
                            "retry {} in {:.1} s{why}",
                            attempt + 1,
                            wait.as_secs_f64()
                        ));
                        std::thread::sleep(wait);
                        delay = delay.saturating_mul(2);
                    }
                }
            }
        }
    }
    bar.abandon();
    match (failures.len(), last_err) {
        (1, Some(e)) if !exhausted => Err(e),
        _ => Err(DataError::AllSourcesFailed {
            file: job.name.into(),
            attempts: failures.join("\n"),
        }),
    }
}

fn header(resp: &reqwest::blocking::Response, name: reqwest::header::HeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.to_string())
}

/// `bytes START-END/TOTAL` → (START, TOTAL).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

fn network(url: &str, e: &reqwest::Error) -> DataError {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    DataError::Network {
        url: url.into(),
        msg,
    }
}

fn attempt_download(
    client: &reqwest::blocking::Client,
    job: &FileJob,
    url: &str,
    bar: &Progress,
    progress: &DownloadProgress,
) -> std::result::Result<Digests, Failure> {
    let part = job.dir.part(job.name);
    let meta_path = job.dir.part_meta(job.name);
    let fatal = Failure::Fatal;
    // Resume only a transfer from this same source whose validators we still have.
    let prev: Option<PartMeta> = read_json(&meta_path)
        .ok()
        .filter(|m: &PartMeta| m.url == url);
    let have = match (&prev, std::fs::metadata(&part)) {
        (Some(_), Ok(m)) => m.len(),
        _ => 0,
    };
    let mut req = client.get(url);
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        // If-Range needs a strong validator: a weak ETag (W/"...") is skipped in favour of Last-Modified.
        let strong = |p: &PartMeta| p.etag.clone().filter(|e| !e.starts_with("W/"));
        if let Some(v) = prev
            .as_ref()
            .and_then(|p| strong(p).or(p.last_modified.clone()))
        {
            req = req.header(reqwest::header::IF_RANGE, v);
        }
    }
    let mut resp = req.send().map_err(|e| {
        let is_downgrade = {
            let mut s: Option<&dyn std::error::Error> = Some(&e);
            let mut found = false;
            while let Some(x) = s {
                if x.downcast_ref::<DowngradeRefused>().is_some() {
                    found = true;
                }
                s = x.source();
            }
            found
        };
        if is_downgrade {
            Failure::NextSource(network(url, &e))
        } else {
            Failure::Retry(network(url, &e))
        }
    })?;
    let status = resp.status().as_u16();
    if status == 416 && have > 0 {
        // Nothing left to send: the previous run got every byte but stopped before verifying.
        drop(resp);
        if prev.as_ref().and_then(|p| p.total) == Some(have) {
            let mut hasher = StreamHasher::new(job.expected.md5.is_some() || job.register);
            let f = File::open(&part).at(&part).map_err(fatal)?;
            hasher.consume(f, &part, |n| bar.inc(n)).map_err(fatal)?;
            return Ok(hasher.finish());
        }
        remove_if_exists(&part).map_err(fatal)?;
        remove_if_exists(&meta_path).map_err(fatal)?;
        return Err(Failure::Retry(DataError::HttpStatus {
            url: url.into(),
            status,
        }));
    }
    if !(status == 200 || status == 206) {
        let err = DataError::HttpStatus {
            url: url.into(),
            status,
        };
        return Err(if status == 429 || status >= 500 {
            match header(&resp, reqwest::header::RETRY_AFTER)
                .and_then(|v| retry_after(&v, std::time::SystemTime::now()))
            {
                Some(wait) => Failure::RetryAfter(Box::new((err, wait))),
                None => Failure::Retry(err),
            }
        } else {
            Failure::NextSource(err)
        });
    }
    let etag = header(&resp, reqwest::header::ETAG);
    let last_modified = header(&resp, reqwest::header::LAST_MODIFIED);
    let html_type = header(&resp, reqwest::header::CONTENT_TYPE)
        .is_some_and(|t| t.to_ascii_lowercase().starts_with("text/html"))
        && !job.name.ends_with(".html");
    if html_type {
        return Err(Failure::Retry(DataError::HtmlInsteadOfFile {
            url: url.into(),
            file: job.name.into(),
            expected: job.dir.file(job.name),
        }));
    }
    // Decide where this body starts: append (valid 206) or from zero.
    let (start, total) = if status == 206 && have > 0 {
        let cr =
            header(&resp, reqwest::header::CONTENT_RANGE).and_then(|v| parse_content_range(&v));
        let p = prev.as_ref();
        let same_validator = match p {
            Some(p) if p.etag.is_some() => p.etag == etag,
            Some(p) if p.last_modified.is_some() => p.last_modified == last_modified,
            _ => true,
        };
        match cr {
            Some((s, t))
                if s == have
                    && same_validator
                    && (p.and_then(|p| p.total).is_none() || t == p.and_then(|p| p.total)) =>
            {
                (have, t)
            }
            _ => {
                // The file changed under us or the range is not what we asked for: start over.
                drop(resp);
                remove_if_exists(&part).map_err(fatal)?;
                remove_if_exists(&meta_path).map_err(fatal)?;
                return Err(Failure::Retry(DataError::Network {
                    url: url.into(),
                    msg: "the file changed on the server since the partial download (ETag/Last-Modified/size); restarting from zero".into(),
                }));
            }
        }
    } else if status == 206 {
        let cr =
            header(&resp, reqwest::header::CONTENT_RANGE).and_then(|v| parse_content_range(&v));
        (0, cr.and_then(|c| c.1))
    } else {
        // 200: a fresh transfer, or the server ignored Range / If-Range said the file changed.
        (0, resp.content_length())
    };
    if let (Some(exp), Some(t)) = (job.expected.size, total) {
        if exp != t {
            // A wrong size is most often an HTML page (login, quota, confirmation): say so when it is one.
            let mut head = Vec::with_capacity(1024);
            let _ = (&mut resp).take(1024).read_to_end(&mut head);
            if looks_like_html(&head) && !job.name.ends_with(".html") {
                return Err(Failure::Retry(DataError::HtmlInsteadOfFile {
                    url: url.into(),
                    file: job.name.into(),
                    expected: job.dir.file(job.name),
                }));
            }
            return Err(Failure::NextSource(DataError::SizeMismatch {
                file: job.name.into(),
                url: url.into(),
                expected: exp,
                actual: t,
                what: "the server announces".into(),
            }));
        }
    }
    if let Some(t) = total {
        ensure_space(&job.dir.downloads(), t.saturating_sub(start)).map_err(fatal)?;
    }
    let new_meta = PartMeta {
        url: url.into(),
        etag,
        last_modified,
        total,
    };
    write_json_atomic(&meta_path, &new_meta).map_err(fatal)?;

    let mut hasher = StreamHasher::new(job.expected.md5.is_some() || job.register);
    let mut file = if start > 0 {
        // Re-hash the bytes we keep, then append.
        let f = File::open(&part).at(&part).map_err(fatal)?;
        hasher
            .consume(f.take(start), &part, |_| {})
            .map_err(fatal)?;
        let mut f = OpenOptions::new()
            .write(true)
            .open(&part)
            .at(&part)
            .map_err(fatal)?;
        f.set_len(start).at(&part).map_err(fatal)?;
        f.seek(std::io::SeekFrom::End(0)).at(&part).map_err(fatal)?;
        f
    } else {
        File::create(&part).at(&part).map_err(fatal)?
    };
    bar.set_length(total.or(job.expected.size).unwrap_or(0));
    bar.set_position(start);
    bar.set_message("");
    let mut out = BufWriter::with_capacity(1 << 20, &mut file);
    let mut body = resp;
    let mut buf = vec![0u8; 1 << 20];
    let mut first = start == 0;
    let result = loop {
        match body.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                if first {
                    first = false;
                    if looks_like_html(&buf[..n]) && !job.name.ends_with(".html") {
                        drop(out);
                        let _ = std::fs::remove_file(&part);
                        let _ = std::fs::remove_file(&meta_path);
                        return Err(Failure::Retry(DataError::HtmlInsteadOfFile {
                            url: url.into(),
                            file: job.name.into(),
                            expected: job.dir.file(job.name),
                        }));
                    }
                }
                if let Err(e) = out.write_all(&buf[..n]) {
                    return Err(Failure::Fatal(DataError::Io {
                        path: part.clone(),
                        err: e,
                    }));
                }
                hasher.update(&buf[..n]);
                bar.inc(n as u64);
                progress.overall.inc(n as u64);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        }
    };
    // Keep every byte received, even when the connection broke.
    out.flush().at(&part).map_err(fatal)?;
    drop(out);
    if let Err(e) = result {
        return Err(Failure::Retry(DataError::Network {
            url: url.into(),
            msg: format!("connection broken: {e}"),
        }));
    }
    let got = hasher.bytes;
    if let Some(t) = total {
        if got != t {
            return Err(Failure::Retry(DataError::Network {
                url: url.into(),
                msg: format!("short body: got {got} of {t} bytes"),
            }));
        }
    }
    if let Some(exp) = job.expected.size {
        if got != exp {
            let e = move_aside(&part).map_err(fatal)?;
            let _ = std::fs::remove_file(&meta_path);
            return Err(Failure::NextSource(DataError::SizeMismatch {
                file: job.name.into(),
                url: url.into(),
                expected: exp,
                actual: got,
                what: format!("received (moved aside to {})", e.display()),
            }));
        }
    }
    file.sync_all().at(&part).map_err(fatal)?;
    Ok(hasher.finish())
}

fn remove_if_exists(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).at(p),
    }
}

/// Rename a bad file to `<name>.bad-<unix-time>` so it is neither used nor lost.
pub fn move_aside(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = name.strip_suffix(".part").unwrap_or(&name).to_string();
    let mut dst = path.with_file_name(format!("{base}.bad-{}", now_unix()));
    let mut i = 1;
    while dst.exists() {
        dst = path.with_file_name(format!("{base}.bad-{}-{i}", now_unix()));
        i += 1;
    }
    std::fs::rename(path, &dst).at(path)?;
    Ok(dst)
}

/// Check the finished `.part` against the expected checksum; on success rename it into place and write the
/// marker (and, when registering, record its hashes).
fn finish(job: &FileJob, url: &str, d: Digests) -> Result<Digests> {
    let part = job.dir.part(job.name);
    let _ = std::fs::remove_file(job.dir.part_meta(job.name));
    check_digests(job.name, &job.expected, &d, &part)?;
    let target = job.dir.file(job.name);
    std::fs::rename(&part, &target).at(&target)?;
    let checked_with = if job.expected.kind == ChecksumKind::None {
        "registered"
    } else {
        kind_str(job.expected.kind)
    };
    if job.expected.kind == ChecksumKind::None {
        let _g = REGISTER_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let path = job.dir.registered();
        let mut reg = Registered::load(&path)?;
        reg.files.insert(
            job.name.to_string(),
            RegisteredFile {
                size: d.size,
                sha256: d.sha256.clone(),
                md5: d.md5.clone().unwrap_or_default(),
                url: url.to_string(),
                registered_at_unix: now_unix(),
            },
        );
        reg.save(&path)?;
    }
    write_marker(job.dir, job.name, &d, checked_with, Some(url))?;
    Ok(d)
}

fn kind_str(k: ChecksumKind) -> &'static str {
    match k {
        ChecksumKind::Sha256 => "sha256",
        ChecksumKind::Md5 => "md5",
        ChecksumKind::Registered => "registered",
        ChecksumKind::None => "none",
    }
}

pub fn write_marker(
    dir: &DatasetDir,
    name: &str,
    d: &Digests,
    checked_with: &str,
    url: Option<&str>,
) -> Result<()> {
    // A re-verification knows no url: keep the one the download recorded.
    let url = url.map(|s| s.to_string()).or_else(|| {
        read_json::<VerifiedMarker>(&dir.verified_marker(name))
            .ok()
            .and_then(|m| m.url)
    });
    write_json_atomic(
        &dir.verified_marker(name),
        &VerifiedMarker {
            size: d.size,
            sha256: d.sha256.clone(),
            md5: d.md5.clone(),
            checked_with: checked_with.into(),
            url,
            verified_at_unix: now_unix(),
        },
    )
}

/// Compare digests with what is expected; on mismatch move `path` aside and say so.
pub fn check_digests(name: &str, exp: &Expected, d: &Digests, path: &Path) -> Result<()> {
    if let Some(size) = exp.size {
        if size != d.size {
            let moved_to = move_aside(path)?;
            return Err(DataError::ChecksumMismatch {
                file: name.into(),
                kind: "size",
                expected: size.to_string(),
                actual: format!("{} bytes", d.size),
                moved_to,
            });
        }
    }
    let (kind, expected, actual) = match (&exp.sha256, &exp.md5) {
        (Some(s), _) => ("sha256", s.clone(), d.sha256.clone()),
        (None, Some(m)) => ("md5", m.clone(), d.md5.clone().unwrap_or_default()),
        (None, None) => return Ok(()),
    };
    if expected != actual {
        let moved_to = move_aside(path)?;
        return Err(DataError::ChecksumMismatch {
            file: name.into(),
            kind,
            expected,
            actual,
            moved_to,
        });
    }
    Ok(())
}

/// Hash a file that is already in place (user-placed gated files, `data verify`) and check it.
pub fn verify_in_place(
    dir: &DatasetDir,
    name: &str,
    exp: &Expected,
    progress: &DownloadProgress,
) -> Result<Digests> {
    let path = dir.file(name);
    let len = std::fs::metadata(&path).at(&path)?.len();
    let bar = progress.file_bar(name, Some(len));
    bar.set_message("verifying");
    let d = hash_file(&path, exp.md5.is_some(), |n| bar.inc(n))?;
    bar.finish();
    if exp.kind == ChecksumKind::None {
        return Err(DataError::Unverified {
            dataset: dir_name(dir),
            file: name.into(),
        });
    }
    check_digests(name, exp, &d, &path).inspect_err(|_| {
        let _ = std::fs::remove_file(dir.verified_marker(name));
    })?;
    write_marker(dir, name, &d, kind_str(exp.kind), None)?;
    Ok(d)
}

fn dir_name(dir: &DatasetDir) -> String {
    dir.root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_of_a_relative_folder_that_does_not_exist_yet_is_that_of_the_working_folder() {
        let here = free_space(Path::new(".")).unwrap();
        let there = free_space(Path::new("no-such-folder/deeper")).unwrap();
        // Other processes write meanwhile: the same filesystem, not the same byte count.
        assert!(here > 0 && there > 0);
        assert!(here.abs_diff(there) < (1 << 30), "{here} vs {there}");
    }

    #[test]
    fn html_sniffing() {
        assert!(looks_like_html(b"\n  <!DOCTYPE html><html>"));
        assert!(looks_like_html(b"<HTML><head>"));
        assert!(!looks_like_html(&[0x1f, 0x8b, 8, 0]));
        assert!(!looks_like_html(b"PK\x03\x04"));
    }

    #[test]
    fn no_https_to_http_redirects() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(!redirect_allowed(&u("https://a/x"), &u("http://a/x")));
        assert!(redirect_allowed(&u("http://a/x"), &u("https://a/x")));
        assert!(redirect_allowed(&u("https://a/x"), &u("https://b/y")));
    }

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }
}
